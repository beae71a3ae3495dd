"""Image Euclidean Distance (IED; Wang, Zhang and Feng, PAMI 2005), the paper's Eq. 15.

    IED(x, y) = sum_i sum_j g(P_i - P_j) (x_i - y_i) . (x_j - y_j)
    g(P)      = exp(-|P|^2 / (2 sigma^2)) / (2 pi sigma^2)

over all pairs of pixel positions P_i, P_j, with ``.`` the dot product over colour channels. The
Gaussian is separable, so the double sum is the difference image ``e = x - y`` blurred by a
separable Gaussian (1-D kernel ``exp(-t^2 / 2 sigma^2) / (sqrt(2 pi) sigma)`` along rows, then
columns; zero outside the image, because the double sum only runs over pixels of the image),
dotted with ``e``: O(pixels * kernel width) instead of O(pixels^2).

Normalisation (the paper leaves it unstated), ours:
  - images in [0, 1] (our [-1, 1] tensors are mapped by ``(x + 1) / 2``; ``value_range`` says which),
  - the channel dot product summed over RGB,
  - the double sum divided by the number of pixels H * W,
  - sigma = 1 pixel at 128 x 128 (``sigma`` is in pixels of the image given),
  - the kernel truncated at 4 sigma (relative error below 1e-3; ``truncate=None``: the full image).
With these, IED is a Gaussian-smoothed mean squared error: identical images give 0, and since the
Gaussian sums to 1, a constant colour offset ``c`` gives about ``|c|^2`` (less at the borders).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F


def gaussian_kernel_1d(sigma: float, radius: int, dtype=torch.float64, device=None) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    return torch.exp(-t ** 2 / (2 * sigma ** 2)) / (math.sqrt(2 * math.pi) * sigma)


def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    return x


def ied(x, y, sigma: float = 1.0, value_range: str = "[-1,1]", truncate: float | None = 4.0,
        reduction: str = "none") -> torch.Tensor:
    """IED between image batches x, y: (B, C, H, W) or (C, H, W) tensors (or numpy arrays).

    value_range: "[-1,1]" (our generator's range), "[0,1]", or "[0,255]" (uint8 images); all are
    mapped to [0, 1] first. Returns (B,) (or a scalar for unbatched input, or the mean with
    ``reduction="mean"``), computed in float64."""
    x, y = _as_tensor(x), _as_tensor(y)
    if x.shape != y.shape:
        raise ValueError(f"IED of images of different shapes {tuple(x.shape)} and {tuple(y.shape)}")
    unbatched = x.dim() == 3
    if unbatched:
        x, y = x[None], y[None]
    if x.dim() != 4:
        raise ValueError("IED expects (B, C, H, W) or (C, H, W) images")
    x, y = x.to(torch.float64), y.to(torch.float64)
    if value_range == "[-1,1]":
        e = (x - y) / 2
    elif value_range == "[0,1]":
        e = x - y
    elif value_range == "[0,255]":
        e = (x - y) / 255
    else:
        raise ValueError(f"value_range must be '[-1,1]', '[0,1]' or '[0,255]', not {value_range!r}")
    b, c, h, w = e.shape
    full = max(h, w) - 1
    radius = full if truncate is None else min(full, int(math.ceil(truncate * sigma)))
    k = gaussian_kernel_1d(sigma, radius, device=e.device)
    flat = e.reshape(b * c, 1, h, w)
    blurred = F.conv2d(flat, k.view(1, 1, 1, -1), padding=(0, radius))  # along rows (x)
    blurred = F.conv2d(blurred, k.view(1, 1, -1, 1), padding=(radius, 0))  # along columns (y)
    out = (blurred.reshape(b, c, h, w) * e).sum(dim=(1, 2, 3)) / (h * w)
    if reduction == "mean":
        return out.mean()
    if reduction != "none":
        raise ValueError("reduction must be 'none' or 'mean'")
    return out[0] if unbatched else out


def ied_direct(x, y, sigma: float = 1.0, value_range: str = "[-1,1]") -> float:
    """The O(pixels^2) double sum of Eq. 15 for one (C, H, W) image pair, same normalisation as
    ``ied`` with ``truncate=None``. Only for checking on small images."""
    x = _as_tensor(x).to(torch.float64)
    y = _as_tensor(y).to(torch.float64)
    scale = {"[-1,1]": 0.5, "[0,1]": 1.0, "[0,255]": 1 / 255}[value_range]
    c, h, w = x.shape
    e = ((x - y) * scale).reshape(c, h * w)  # (C, N)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    p = torch.stack([yy.reshape(-1), xx.reshape(-1)], 1)  # (N, 2)
    d2 = ((p[:, None] - p[None]) ** 2).sum(-1)
    g = torch.exp(-d2 / (2 * sigma ** 2)) / (2 * math.pi * sigma ** 2)
    return float(torch.einsum("ij,ci,cj->", g, e, e) / (h * w))
