"""The torch side of inference: the trained networks re-expressed as the modules that are exported and
benchmarked (exact: same weights, same function up to float rounding, fewer operations), the ``torch``
backend's runner, and the digest that ties exported graphs to a checkpoint's weights.

Kept apart from ``engine.inference`` so that running an export, or a checkpoint whose ONNX graphs are
cached, never imports torch (about a second and 190 MB at every start).
"""
from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn
from torch.nn import functional as F


class FusedHeads(nn.Module):
    """The colour and mask heads as one convolution of 4 outputs (3 colour + 1 mask).

    Same weights, same result: two convolutions over the same input with 3 and 1 output channels
    waste most of a vectorised kernel (outputs are padded to 8 lanes); one of 4 does half the work.
    """

    def __init__(self, heads: nn.Module):
        super().__init__()
        c, m = heads.color, heads.mask
        self.conv = nn.Conv2d(c.in_channels, 4, c.kernel_size, 1, c.padding)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([c.weight, m.weight]))
            self.conv.bias.copy_(torch.cat([c.bias, m.bias]))

    def forward(self, h):
        o = self.conv(h)
        return torch.tanh(o[:, :3]), torch.sigmoid(o[:, 3:])


class TiledParamsStem(nn.Module):
    """The paper generator's first convolution over [image, p tiled as N channels], without tiling.

    conv(tile(p), W_p) at pixel x = sum over kernel taps k inside the image of W_p[:, :, k] . p, so it
    equals (p W_p) M, with M[k, x] = 1 where tap k of pixel x falls inside the image (zero padding):
    an (N x 49C) and a (49 x HW) product instead of an N-channel 7x7 convolution at full resolution
    (4.1 of the paper generator's 23.6 GFLOP). Exact up to float rounding.
    """

    def __init__(self, conv: nn.Conv2d, n_img: int, image_size: int):
        super().__init__()
        w = conv.weight.detach()
        k, pad = conv.kernel_size[0], conv.padding[0]
        assert conv.kernel_size == (k, k) and conv.stride == (1, 1) and conv.padding == (pad, pad)
        self.c, self.k, self.pad, self.size = w.shape[0], k, pad, image_size
        self.register_buffer("w_img", w[:, :n_img].clone())
        self.register_buffer("bias_img", conv.bias.detach().clone() if conv.bias is not None
                             else torch.zeros(w.shape[0]))
        n_params = w.shape[1] - n_img
        # (N, taps * C): column t * C + c holds W[c, n_img + n, ky, kx] for tap t = ky * k + kx.
        self.register_buffer("w_p", w[:, n_img:].permute(1, 2, 3, 0).reshape(n_params, k * k * self.c).clone())
        pos = torch.arange(image_size)
        inside = [((pos + t - pad >= 0) & (pos + t - pad < image_size)).float() for t in range(k)]
        taps = torch.stack([(inside[ky][:, None] * inside[kx][None, :]).reshape(-1)
                            for ky in range(k) for kx in range(k)])  # (taps, H*W)
        self.register_buffer("taps", taps)

    def forward(self, image, params):
        b = image.shape[0]
        per_tap = (params @ self.w_p).reshape(b, self.k * self.k, self.c).transpose(1, 2)  # (B, C, taps)
        bias = (per_tap @ self.taps).reshape(b, self.c, self.size, self.size)
        h = F.conv2d(image, self.w_img, self.bias_img, padding=self.pad)
        return h + bias


class EncoderModule(nn.Module):
    """Source encoder of the "cached" generator: image -> feature maps (run once per portrait)."""

    def __init__(self, G: nn.Module):
        super().__init__()
        self.g = G

    def forward(self, image):
        return tuple(self.g.encode(image))


class FrameGenerator(nn.Module):
    """Per-frame generator: (image, params, *cached feats) -> (I_gen, A), Eq. 4 inside.

    With ``fused`` (default) the colour and mask heads run as one convolution and, for the paper's
    generator, the tiled-parameter input channels are folded into a parameter-dependent bias map
    (``TiledParamsStem``). Both are exact; the parity tests check them against the plain modules.
    """

    def __init__(self, G: nn.Module, fused: bool = True):
        super().__init__()
        self.kind = G.cfg.generator
        self.fused_ops: list[str] = []
        g = copy.deepcopy(G) if fused else G
        self.stem = None
        if fused:
            g.heads = FusedHeads(g.heads)
            self.fused_ops.append("heads: colour and mask convolutions as one")
            if self.kind == "resnet" and _is_conv_norm_act(g.body[0]):
                self.stem = TiledParamsStem(g.body[0][0], 3, G.cfg.image_size)
                self.stem_rest = nn.Sequential(*list(g.body[0])[1:])
                self.body_rest = nn.Sequential(*list(g.body)[1:])
                self.fused_ops.append("stem: tiled parameter channels folded into a bias map")
        self.g = g

    def forward(self, image, params, *feats):
        if self.stem is not None:
            h = self.body_rest(self.stem_rest(self.stem(image, params)))
            color, mask = self.g.heads(h)
        else:
            color, mask = self.g.decode(image, tuple(feats), params)
        rgb = image[:, :3]  # the "warp" generator's frame also carries the region mask and the flow
        return mask * color + (1.0 - mask) * rgb, mask


def _is_conv_norm_act(m) -> bool:
    return (isinstance(m, nn.Sequential) and len(m) >= 1 and isinstance(m[0], nn.Conv2d)
            and m[0].stride == (1, 1) and m[0].kernel_size[0] == m[0].kernel_size[1])


class RegressorModule(nn.Module):
    """D_p: the discriminator trunk and regression head (no critic)."""

    def __init__(self, D: nn.Module):
        super().__init__()
        self.d = D

    def forward(self, image):
        return self.d.regress(image)


def inference_modules(generator: nn.Module, discriminator: nn.Module, fused: bool = True) -> dict:
    """role -> eval-mode module, the units that are exported and benchmarked."""
    mods = {"generator": FrameGenerator(generator, fused=fused).eval(),
            "regressor": RegressorModule(discriminator).eval()}
    if generator.cfg.has_encoder:
        mods = {"encoder": EncoderModule(generator).eval(), **mods}
    return mods


def weights_digest(*nets: nn.Module) -> str:
    """sha256 of the networks' tensors (names and float32 bytes): ties exported files to one checkpoint."""
    h = hashlib.sha256()
    for net in nets:
        for k, v in sorted(net.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().float().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class TorchRunner:
    name = "torch"

    def __init__(self, generator, discriminator, device: str, threads: int | None, fused: bool = False):
        from .inference import check_cuda
        check_cuda(device)
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device)
        mods = inference_modules(generator, discriminator, fused=fused)
        self.mods = {k: m.to(self.device) for k, m in mods.items()}

    def _t(self, a):
        return torch.as_tensor(a).to(self.device, torch.float32)

    @torch.inference_mode()
    def encode(self, image):
        """Features stay torch tensors on the backend's device (no round trip per frame)."""
        if "encoder" not in self.mods:
            return ()
        return tuple(self.mods["encoder"](self._t(image)))

    @torch.inference_mode()
    def decode(self, image, feats, params):
        out, mask = self.mods["generator"](self._t(image), self._t(params), *(self._t(f) for f in feats))
        return out.cpu().numpy(), mask.cpu().numpy()

    @torch.inference_mode()
    def regress(self, image):
        return self.mods["regressor"](self._t(image)).cpu().numpy()
