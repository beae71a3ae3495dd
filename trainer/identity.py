"""The identity embedder F of L_id (SPEC section 4), pluggable.

``load_identity(spec, crop_size)`` gives a frozen ``nn.Module`` mapping aligned crops (B, 3, S, S) in
[-1, 1] to embeddings (B, D), differentiable with respect to its input, or None:

- ``PATH.onnx``: any face-recognition network in the common ArcFace layout: one input (N, 3, 112, 112),
  RGB, normalised ``(pixel - 127.5) / 127.5`` (or raw 0..255 pixels when the graph starts with its own
  ``Sub``/``Mul`` normalisation, as insightface decides), one embedding output. The ONNX graph is turned
  into a torch module by ``OnnxGraphModule`` below, the initialisers frozen as buffers.
  **(choice)** A small in-package converter rather than onnx2torch/onnx2pytorch: both require
  torchvision, and on PyPI torchvision pins a CUDA torch build that would replace the CPU one (several
  GB). The converter covers the operators of ArcFace-style ResNets/MobileFaceNets (Conv, BatchNorm,
  PRelu, Add, Gemm, Flatten, pooling, ...) and names any operator it lacks. If onnx2torch happens to be
  installed it is tried for such a graph.
  Crops are mapped onto ArcFace's 112 x 112 template (insightface's five reference points: eye centres,
  nose tip, mouth corners) with one fixed similarity transform computed from our crop template
  (engine/face.py); without that template, the crop is resized.
- ``dlib``: dlib's face-recognition ResNet via ``engine.identity.load_dlib_embedder()`` (imported lazily).
- ``None`` / ``""`` / ``"none"``: no embedder; the trainer logs once that L_id is off.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

ARCFACE_SIZE = 112
# insightface's arcface_dst: image-left eye centre, image-right eye centre, nose tip, mouth corners.
ARCFACE_POINTS = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                           [41.5493, 92.3655], [70.7299, 92.2041]])
# The same five points from the MediaPipe face mesh: eye centres from their corners, nose tip, corners.
MESH_EYE_L, MESH_EYE_R, MESH_NOSE, MESH_MOUTH_L, MESH_MOUTH_R = (33, 133), (362, 263), 1, 61, 291


class IdentityError(ValueError):
    pass


# ------------------------------------------------------------------------------- ONNX -> torch

def _attrs(node) -> dict:
    from onnx import helper
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _pads(pads, n):
    """ONNX pads (x1_begin, x2_begin, ..., x1_end, x2_end) -> F.pad order (last dim first)."""
    if not pads:
        return None
    begin, end = pads[:n], pads[n:]
    out = []
    for b, e in zip(reversed(begin), reversed(end)):
        out += [b, e]
    return out


class OnnxGraphModule(nn.Module):
    """Runs an ONNX graph with torch operations (inference graphs of CNN embedders)."""

    def __init__(self, model):
        super().__init__()
        from onnx import numpy_helper
        g = model.graph
        self.nodes = [(n.op_type, list(n.input), list(n.output), _attrs(n)) for n in g.node]
        unsupported = sorted({op for op, *_ in self.nodes} - set(self._OPS))
        if unsupported:
            raise IdentityError(f"ONNX operators not supported by the built-in converter: {unsupported}")
        self._names: dict[str, str] = {}
        for i, init in enumerate(g.initializer):
            arr = numpy_helper.to_array(init)
            key = f"w{i}"
            self._names[init.name] = key
            self.register_buffer(key, torch.from_numpy(np.array(arr)), persistent=True)
        for op, _, outs, at in self.nodes:  # Constant nodes become buffers too
            if op == "Constant":
                key = f"c{len(self._names)}"
                self._names[outs[0]] = key
                self.register_buffer(key, torch.from_numpy(np.array(numpy_helper.to_array(at["value"]))))
        inits = {i.name for i in g.initializer}
        self.inputs = [i.name for i in g.input if i.name not in inits]
        self.outputs = [o.name for o in g.output]

    def forward(self, *xs):
        env = {name: getattr(self, key) for name, key in self._names.items()}
        env.update(zip(self.inputs, xs))
        env[""] = None
        for op, ins, outs, at in self.nodes:
            if op == "Constant":
                continue
            args = [env.get(i) for i in ins]
            res = self._OPS[op](self, args, at)
            if not isinstance(res, tuple):
                res = (res,)
            for name, r in zip(outs, res):
                env[name] = r
        out = [env[o] for o in self.outputs]
        return out[0] if len(out) == 1 else tuple(out)

    # --- operators: f(self, args, attrs)
    def _conv(self, a, at):
        x, w = a[0], a[1]
        b = a[2] if len(a) > 2 else None
        n = w.dim() - 2
        strides = at.get("strides", [1] * n)
        dil = at.get("dilations", [1] * n)
        groups = at.get("group", 1)
        ap = at.get("auto_pad", b"NOTSET")
        ap = ap.decode() if isinstance(ap, bytes) else ap
        if ap in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for d in range(n):
                size, k, s = x.shape[2 + d], w.shape[2 + d], strides[d]
                out = -(-size // s)
                total = max(0, (out - 1) * s + (k - 1) * dil[d] + 1 - size)
                pads.append((total // 2, total - total // 2) if ap == "SAME_UPPER" else (total - total // 2, total // 2))
            p = []
            for b_, e_ in reversed(pads):
                p += [b_, e_]
            x = F.pad(x, p)
            padding = 0
        else:
            pads = at.get("pads", [0] * 2 * n)
            if pads[:n] == pads[n:]:
                padding = list(pads[:n])
            else:
                x, padding = F.pad(x, _pads(pads, n)), 0
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[n]
        return conv(x, w, b, strides, padding, dil, groups)

    def _bn(self, a, at):
        x, scale, bias, mean, var = a[:5]
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, at.get("epsilon", 1e-5))

    def _prelu(self, a, at):
        x, s = a
        if s.numel() == 1:
            return torch.where(x >= 0, x, x * s.reshape(()))
        s = s.reshape(-1)
        shape = [1, -1] + [1] * (x.dim() - 2)
        return torch.where(x >= 0, x, x * s.reshape(shape))

    def _gemm(self, a, at):
        A, B = a[0], a[1]
        C = a[2] if len(a) > 2 else None
        if at.get("transA", 0):
            A = A.t()
        if at.get("transB", 0):
            B = B.t()
        y = at.get("alpha", 1.0) * (A @ B)
        if C is not None:
            y = y + at.get("beta", 1.0) * C
        return y

    def _flatten(self, a, at):
        x = a[0]
        axis = at.get("axis", 1)
        axis = axis if axis >= 0 else x.dim() + axis
        return x.reshape(int(np.prod(x.shape[:axis])) if axis else 1, -1)

    def _reshape(self, a, at):
        x, shape = a
        shape = [int(s) for s in shape.tolist()]
        if not at.get("allowzero", 0):
            shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
        return x.reshape(shape)

    def _pool(self, a, at, kind):
        x = a[0]
        n = x.dim() - 2
        k = at["kernel_shape"]
        s = at.get("strides", [1] * n)
        pads = at.get("pads", [0] * 2 * n)
        ceil = bool(at.get("ceil_mode", 0))
        if pads[:n] != pads[n:]:
            raise IdentityError("asymmetric pooling pads are not supported")
        if kind == "max":
            return F.max_pool2d(x, k, s, list(pads[:n]), ceil_mode=ceil)
        return F.avg_pool2d(x, k, s, list(pads[:n]), ceil_mode=ceil,
                            count_include_pad=bool(at.get("count_include_pad", 0)))

    def _reduce_mean(self, a, at):
        x = a[0]
        axes = at.get("axes")
        if axes is None and len(a) > 1 and a[1] is not None:
            axes = [int(v) for v in a[1].tolist()]
        axes = list(range(x.dim())) if axes is None else axes
        return x.mean(dim=axes, keepdim=bool(at.get("keepdims", 1)))

    def _squeeze(self, a, at, un=False):
        x = a[0]
        axes = at.get("axes")
        if axes is None and len(a) > 1 and a[1] is not None:
            axes = [int(v) for v in a[1].tolist()]
        if un:
            for ax in sorted(axes):
                x = x.unsqueeze(ax)
            return x
        if axes is None:
            return x.squeeze()
        for ax in sorted([ax % x.dim() for ax in axes], reverse=True):
            x = x.squeeze(ax)
        return x

    def _lpnorm(self, a, at):
        return F.normalize(a[0], p=at.get("p", 2), dim=at.get("axis", -1))

    def _gather(self, a, at):
        x, idx = a
        return torch.index_select(x, at.get("axis", 0), idx.reshape(-1).long()).reshape(
            *x.shape[:at.get("axis", 0)], *idx.shape, *x.shape[at.get("axis", 0) + 1:])

    _OPS = {
        "Conv": _conv,
        "BatchNormalization": _bn,
        "PRelu": _prelu,
        "Relu": lambda self, a, at: F.relu(a[0]),
        "LeakyRelu": lambda self, a, at: F.leaky_relu(a[0], at.get("alpha", 0.01)),
        "Sigmoid": lambda self, a, at: torch.sigmoid(a[0]),
        "Tanh": lambda self, a, at: torch.tanh(a[0]),
        "Add": lambda self, a, at: a[0] + a[1],
        "Sub": lambda self, a, at: a[0] - a[1],
        "Mul": lambda self, a, at: a[0] * a[1],
        "Div": lambda self, a, at: a[0] / a[1],
        "Sqrt": lambda self, a, at: torch.sqrt(a[0]),
        "Gemm": _gemm,
        "MatMul": lambda self, a, at: a[0] @ a[1],
        "Flatten": _flatten,
        "Reshape": _reshape,
        "Transpose": lambda self, a, at: a[0].permute(*at["perm"]) if "perm" in at else a[0].permute(
            *reversed(range(a[0].dim()))),
        "Concat": lambda self, a, at: torch.cat(a, dim=at["axis"]),
        "GlobalAveragePool": lambda self, a, at: a[0].mean(dim=tuple(range(2, a[0].dim())), keepdim=True),
        "AveragePool": lambda self, a, at: self._pool(a, at, "avg"),
        "MaxPool": lambda self, a, at: self._pool(a, at, "max"),
        "ReduceMean": _reduce_mean,
        "Squeeze": lambda self, a, at: self._squeeze(a, at),
        "Unsqueeze": lambda self, a, at: self._squeeze(a, at, un=True),
        "Identity": lambda self, a, at: a[0],
        "Dropout": lambda self, a, at: a[0],
        "Constant": lambda self, a, at: None,
        "Shape": lambda self, a, at: torch.tensor(a[0].shape, dtype=torch.int64),
        "Gather": _gather,
        "LpNormalization": _lpnorm,
    }


def _load_onnx(path):
    import onnx
    path = Path(path)
    if not path.exists():
        raise IdentityError(f"identity model {path} does not exist")
    try:
        return onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError and friends
        raise IdentityError(f"{path} is not a readable ONNX model: {e}") from None


def onnx_to_torch(path, model=None) -> nn.Module:
    """An ONNX file as a torch module (built-in converter; onnx2torch as a fallback if installed)."""
    model = model if model is not None else _load_onnx(path)
    try:
        return OnnxGraphModule(model)
    except IdentityError as e:
        try:
            from onnx2torch import convert
        except ImportError:
            raise IdentityError(f"{path}: {e}") from None
        log.info("%s: %s; converting with onnx2torch", path, e)
        return convert(model)


def _input_shape(path, m) -> list:
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    if len(ins) != 1:
        raise IdentityError(f"{path}: an identity model needs exactly one input, this one has {len(ins)}")
    dims = ins[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else None for d in dims]


def _starts_with_normalisation(m) -> bool:
    """insightface's rule: a graph whose first nodes are Sub/Mul normalises pixels itself."""
    ops = [n.op_type for n in m.graph.node[:8]]
    return "Sub" in ops[:3] or "Mul" in ops[:3]


def crop_to_arcface_theta(crop_size: int) -> torch.Tensor | None:
    """``F.affine_grid`` matrix (align_corners=False) mapping ArcFace's 112 template onto our crop,
    from the crop template of engine/face.py; None when that template is not available."""
    try:
        from engine.face import template_points
        from engine.identity import similarity_transform
    except ImportError:
        return None
    pts = np.asarray(template_points(crop_size), np.float64)
    five = np.stack([pts[list(MESH_EYE_L), :2].mean(0), pts[list(MESH_EYE_R), :2].mean(0),
                     pts[MESH_NOSE, :2], pts[MESH_MOUTH_L, :2], pts[MESH_MOUTH_R, :2]])
    m = similarity_transform(ARCFACE_POINTS, five)  # 112 px -> crop px

    def to_px(size):
        return np.array([[size / 2, 0, size / 2 - 0.5], [0, size / 2, size / 2 - 0.5], [0, 0, 1]])
    theta = np.linalg.inv(to_px(crop_size)) @ np.vstack([m, [0, 0, 1]]) @ to_px(ARCFACE_SIZE)
    return torch.tensor(theta[:2], dtype=torch.float32)


class OnnxIdentityEmbedder(nn.Module):
    """Frozen ArcFace-layout embedder: crops in [-1, 1] -> L2-normalised embeddings."""

    def __init__(self, net: nn.Module, crop_size: int = 128, raw_pixels: bool = False,
                 theta: torch.Tensor | None = None):
        super().__init__()
        self.net = net
        self.raw_pixels = raw_pixels
        self.register_buffer("theta", theta if theta is not None else torch.zeros(0), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):  # always frozen
        return super().train(False)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        size = (ARCFACE_SIZE, ARCFACE_SIZE)
        if self.theta.numel() == 0:
            y = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        else:
            grid = F.affine_grid(self.theta.to(x.dtype).expand(x.shape[0], 2, 3), [x.shape[0], 3, *size],
                                 align_corners=False)
            y = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        return (y + 1) * 127.5 if self.raw_pixels else y

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.net(self.to_input(x))
        if isinstance(e, (tuple, list)):
            e = e[0]
        return F.normalize(e.flatten(1).float(), dim=1)


def load_onnx_embedder(path, crop_size: int = 128, align: bool = True) -> OnnxIdentityEmbedder:
    path = Path(path)
    model = _load_onnx(path)
    shape = _input_shape(path, model)
    if len(shape) != 4 or shape[1] not in (3, None) or any(s not in (ARCFACE_SIZE, None) for s in shape[2:]):
        raise IdentityError(f"{path}: expected the ArcFace input layout (N, 3, {ARCFACE_SIZE}, {ARCFACE_SIZE}), "
                            f"the model takes {shape}")
    net = onnx_to_torch(path, model)
    theta = crop_to_arcface_theta(crop_size) if align else None
    emb = OnnxIdentityEmbedder(net, crop_size, _starts_with_normalisation(model), theta)
    with torch.no_grad():
        try:
            out = emb(torch.zeros(1, 3, crop_size, crop_size))
        except Exception as e:
            raise IdentityError(f"{path}: the converted model does not run: {e}") from None
    log.info("identity embedder F: %s (%d-d embeddings)", path, out.shape[1])
    return emb


def load_identity(spec: str | None, crop_size: int = 128, device=None) -> nn.Module | None:
    """The identity embedder named by ``spec`` (an .onnx path, "dlib", or None/"none" for no L_id)."""
    if spec is None or str(spec).strip().lower() in ("", "none", "off"):
        log.warning("no identity embedder given (--identity PATH.onnx or dlib): L_id is OFF for this run")
        return None
    if str(spec).lower() == "dlib":
        from engine.identity import load_dlib_embedder
        emb = load_dlib_embedder(crop_size=crop_size)
        log.info("identity embedder F: dlib face-recognition ResNet")
    else:
        if not str(spec).lower().endswith(".onnx"):
            raise IdentityError(f"--identity takes an .onnx file, 'dlib' or 'none', not {spec!r}")
        emb = load_onnx_embedder(spec, crop_size)
    return emb.to(device) if device is not None else emb
