"""The one inference interface for the SliderGAN generator and parameter regressor.

    models = load_models(path, backend="auto")       # a checkpoint folder or an export folder
    src = models.source(portrait)                     # (1, 3, S, S) in [-1, 1]: encoder run once
    frame = models.generate(src, p)                   # (B, N) -> (B, 3, S, S): per-frame part only
    p_hat = models.regress(images)                    # (B, 3, S, S) -> (B, N), D_p(I)

Images are float32, NCHW, RGB, in [-1, 1], at the model's image size; parameters are (B, N) float32
(a single (N,) vector is accepted). Outputs are of the kind of the input: numpy in, numpy out; torch
in, torch out (on the input's device). ``generate`` also accepts plain images (then every call runs the
encoder too); a one-image source is broadcast over a batch of parameter vectors.

Backends:
- ``torch``: the checkpoint's modules, eager (CPU, or CUDA when present and asked for).
- ``onnxruntime``: the exported ONNX files (an export folder), or a checkpoint converted at load time
  (the graphs kept in a cache folder: ``engine.onnx_graph.checkpoint_graphs``). CPU provider with
  intra-op threads = physical cores, sequential execution; the CUDA provider when it is installed and
  ``device`` allows it.
- ``tensorrt``: serialised engines of an export folder made with ``--format tensorrt`` (NVIDIA GPU).
``backend="auto"`` picks tensorrt where engines and a GPU are there, else onnxruntime, else torch.

Every file carries its model config, parameter names and image size; loading with ``expect`` (a
ModelConfig), ``n_params`` or ``image_size`` that do not match is a clear error, as are files of one
export mixed with another's.

The modules exported and run here are exact re-expressions of the trained networks (see
``engine.torch_backend.FrameGenerator``): same weights, same function up to float rounding, fewer operations.
torch is imported only by the ``torch`` backend and to convert a checkpoint whose graphs are not cached yet.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ModelConfig, ProfileMismatchError

BACKENDS = ("torch", "onnxruntime", "tensorrt")

# Export folder layout (written by exporters/onnx.py and exporters/tensorrt.py, read here; the engine
# never imports exporters: ONNX graphs are built by engine/onnx_graph.py, TensorRT plans run by
# engine/tensorrt_runtime.py).
EXPORT_FORMAT = "slidergan-onnx"
EXPORT_VERSION = 1
MANIFEST = "export.json"
ROLE_FILES = {"encoder": "encoder.onnx", "generator": "generator.onnx", "regressor": "regressor.onnx"}
PRECISIONS = ("fp32", "int8")  # int8: optional quantised copies (``slidergan export --int8``), CPU only


def role_file(role: str, precision: str = "fp32") -> str:
    """encoder.onnx / generator.onnx / regressor.onnx, or their int8 copies generator.int8.onnx ..."""
    return ROLE_FILES[role] if precision == "fp32" else ROLE_FILES[role].replace(".onnx", f".{precision}.onnx")
ENGINE_SUFFIX = ".engine"
NORMALIZATION = {"layout": "NCHW", "channels": "RGB", "range": [-1.0, 1.0], "dtype": "float32"}
META_PREFIX = "slidergan."


class InferenceError(ValueError):
    """A model file is absent, unreadable, or not what the caller asked for."""


def file_sha256(path) -> str:
    """The sha256 of a file's bytes, read in 1 MB pieces."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_tensor(a) -> bool:
    """Whether ``a`` is a torch tensor; torch is not imported for it (no tensor exists before torch is). Arrays
    are answered first: while another thread imports torch, ``sys.modules`` holds it half made."""
    if isinstance(a, np.ndarray):
        return False
    is_tensor = getattr(sys.modules.get("torch"), "is_tensor", None)
    return is_tensor is not None and bool(is_tensor(a))


def cuda_available() -> bool:
    """torch's CUDA, asked only where an NVIDIA driver could be there: a Linux machine without one (no
    /dev/nvidiactl, no /proc/driver/nvidia, no WSL /dev/dxg) has no CUDA, and torch stays unimported."""
    if "torch" not in sys.modules and sys.platform.startswith("linux") and not any(
            os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")):
        return False
    import torch
    return torch.cuda.is_available()


def check_cuda(device) -> None:
    """A torch device (``cuda``, ``cuda:N``, ``cpu``...) usable here: a GPU asked of a torch that has none (a
    CPU-only build, no NVIDIA driver) is a clear InferenceError, not torch's assertion deep in a ``.to()``."""
    if str(device).startswith("cuda") and not cuda_available():
        import torch
        raise InferenceError(f"device {str(device)!r}: torch {torch.__version__} sees no CUDA GPU (a CPU-only build "
                             "of torch, or no NVIDIA driver); use the CPU ('cpu', or 'auto')")


def physical_cores() -> int:
    """Physical cores available to this process (hyper-threads do not help convolutions)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return max(1, (os.cpu_count() or 2) // 2)
    cores, cpu = set(), None
    try:
        with open("/proc/cpuinfo") as f:
            phys = "0"
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "processor":
                    cpu = int(val)
                elif key == "physical id":
                    phys = val
                elif key == "core id" and cpu in allowed:
                    cores.add((phys, val))
    except OSError:
        pass
    return max(1, min(len(cores) or len(allowed), len(allowed)))


# ======================================================================== metadata of exported files

@dataclass
class ModelInfo:
    """What a checkpoint or exported file says about itself."""
    config: ModelConfig
    param_names: list[str]
    blendshapes: str = ""
    step: int = 0
    meta: dict = field(default_factory=dict)
    weights: str = ""  # weights_digest of the checkpoint it came from

    def check(self, expect: ModelConfig | None = None, n_params: int | None = None,
              image_size: int | None = None, what: str = "model") -> None:
        if expect is not None:
            expect.check_same(self.config, what)
        if n_params is not None and n_params != self.config.n_params:
            raise ProfileMismatchError(f"the {what} takes {self.config.n_params} parameters, "
                                       f"not the {n_params} expected")
        if image_size is not None and image_size != self.config.image_size:
            raise ProfileMismatchError(f"the {what} works on {self.config.image_size} x {self.config.image_size} "
                                       f"images, not {image_size} x {image_size} as expected")


def read_onnx_metadata(path) -> dict[str, str]:
    """The slidergan.* metadata_props of an ONNX file (without loading its weights into a session)."""
    import onnx
    path = Path(path)
    if not path.is_file():
        raise InferenceError(f"no ONNX model at {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # onnx raises DecodeError, ValueError, ... on garbage
        raise InferenceError(f"{path} is not a readable ONNX model ({type(e).__name__}: {e})") from None
    return {p.key[len(META_PREFIX):]: p.value for p in model.metadata_props if p.key.startswith(META_PREFIX)}


def info_from_onnx_metadata(md: dict[str, str], source: str) -> ModelInfo:
    if md.get("format") != EXPORT_FORMAT:
        raise InferenceError(f"{source} is not a SliderGAN export (metadata format {md.get('format')!r})")
    if int(md.get("version", 0)) != EXPORT_VERSION:
        raise InferenceError(f"{source} has export version {md.get('version')}, this build reads {EXPORT_VERSION}")
    try:
        return ModelInfo(ModelConfig.from_json(md["config"]), json.loads(md["param_names"]),
                         md.get("blendshapes", ""), int(md.get("step", 0)), json.loads(md.get("meta", "{}")),
                         md.get("weights", ""))
    except (KeyError, ValueError, TypeError) as e:
        raise InferenceError(f"{source} has broken SliderGAN metadata: {e}") from None


def read_export(folder, precision: str = "fp32") -> tuple[ModelInfo, dict[str, Path], dict]:
    """Validate an export folder: its ONNX files exist, describe one model, and agree with each other.

    Returns (info, role -> ONNX path, manifest dict ({} when export.json is absent))."""
    folder = Path(folder)
    if precision not in PRECISIONS:
        raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if not folder.is_dir():
        raise InferenceError(f"no export folder at {folder}")
    manifest = {}
    if (folder / MANIFEST).is_file():
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except (OSError, ValueError) as e:
            raise InferenceError(f"{folder / MANIFEST} is not readable JSON: {e}") from None
    files = {role: folder / role_file(role, precision) for role in ROLE_FILES
             if (folder / role_file(role, precision)).exists()}
    if "generator" not in files or "regressor" not in files:
        missing = [role_file(r, precision) for r in ("generator", "regressor") if r not in files]
        if precision != "fp32" and (folder / ROLE_FILES["generator"]).exists():
            raise InferenceError(f"{folder} has no {precision} models ({', '.join(missing)} missing): "
                                 f"export with --{precision}")
        raise InferenceError(f"{folder} is not a SliderGAN export: {', '.join(missing)} missing")
    info, first = None, None
    for role, path in files.items():
        md = read_onnx_metadata(path)
        this = info_from_onnx_metadata(md, str(path))
        if md.get("role") != role:
            raise InferenceError(f"{path} holds the {md.get('role')!r} model, not the {role!r}")
        if md.get("precision", "fp32") != precision:
            raise InferenceError(f"{path} holds a {md.get('precision')} model, not {precision}")
        if info is None:
            info, first = this, path
        elif (this.config, this.param_names, this.weights) != (info.config, info.param_names, info.weights):
            raise InferenceError(f"{path} and {first} come from different models or exports "
                                 f"(profile {this.config.name!r} vs {info.config.name!r}, weights "
                                 f"{this.weights} vs {info.weights}); export the checkpoint again")
    if info.config.has_encoder and "encoder" not in files:
        raise InferenceError(f"{folder} lacks {role_file('encoder', precision)}, which the {info.config.name!r} "
                             f"profile's generator needs")
    for role, path in files.items():  # last: the checks above say more about a wrong file than "corrupt"
        _check_recorded_sha256(path, role, precision, manifest, folder)
    return info, files, manifest


def _check_recorded_sha256(path: Path, role: str, precision: str, manifest: dict, folder: Path) -> None:
    """An export's file must be the one export.json recorded (when it records a sha256: exports made
    before the checksum existed, or folders without export.json, are not checked)."""
    if precision == "fp32":
        expected = ((manifest.get("files") or {}).get(role) or {}).get("sha256")
    else:
        expected = ((manifest.get(precision) or {}).get("sha256") or {}).get(role)
    if not expected:
        return
    actual = file_sha256(path)
    if actual != expected:
        raise InferenceError(f"{path} is corrupt: its sha256 ({actual[:16]}...) is not the one recorded in "
                             f"{folder / MANIFEST} ({expected[:16]}...); export the checkpoint again")


def is_export_folder(path) -> bool:
    p = Path(path)
    return p.is_dir() and (p / ROLE_FILES["generator"]).exists()


# ================================================================================= backends (runners)

def ort_session_options(threads: int | None = None, opt_level: str = "all", spin: bool = True):
    """Session options tuned for batch-1 latency on a small CPU."""
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or physical_cores())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = {
        "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[opt_level]
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    # Workers spin inside a run (the generator is 1 ms faster than without) but stop at its end: the
    # frame's own work follows every run, and workers still spinning then took a core from OpenCV
    # (the output warp 1.26 -> 0.73 ms, the whole frame 10.8 -> 9.7 ms on 2 cores).
    so.add_session_config_entry("session.force_spinning_stop", "1")
    so.log_severity_level = 3
    return so


def ort_providers(device: str) -> list[str]:
    import onnxruntime as ort
    have = ort.get_available_providers()
    if device in ("cuda", "auto") and "CUDAExecutionProvider" in have:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        raise InferenceError("onnxruntime has no CUDA provider here (pip install onnxruntime-gpu); "
                             "use device='cpu'")
    return ["CPUExecutionProvider"]


class _OrtRunner:
    name = "onnxruntime"

    def __init__(self, models: dict[str, Any], device: str, threads: int | None, opt_level: str = "all",
                 spin: bool = True):
        """models: role -> ONNX file path or serialised bytes."""
        import onnxruntime as ort
        so = ort_session_options(threads, opt_level, spin)
        self.providers = ort_providers(device)
        self.sessions = {}
        for role, m in models.items():
            src = m if isinstance(m, (bytes, bytearray)) else str(m)
            try:
                self.sessions[role] = ort.InferenceSession(src, so, providers=self.providers)
            except Exception as e:  # onnxruntime's own exception types
                where = "in-memory model" if isinstance(m, (bytes, bytearray)) else str(m)
                raise InferenceError(f"onnxruntime cannot load the {role} ({where}): {e}") from None
        self.inputs = {r: [i.name for i in s.get_inputs()] for r, s in self.sessions.items()}

    def encode(self, image):
        if "encoder" not in self.sessions:
            return ()
        return tuple(self.sessions["encoder"].run(None, {"image": image}))

    def decode(self, image, feats, params):
        feed = {"image": image, "params": params}
        feed.update({f"feat{i}": f for i, f in enumerate(feats)})
        out, mask = self.sessions["generator"].run(["image_gen", "mask"], feed)
        return out, mask

    def regress(self, image):
        return self.sessions["regressor"].run(None, {"image": image})[0]


# ====================================================================================== the interface

@dataclass
class Source:
    """A portrait prepared for animation: the image and the encoder's features, computed once."""
    image: np.ndarray  # (B, 3, S, S) float32
    feats: tuple  # backend-native: numpy arrays (onnxruntime) or torch tensors on the device
    like: Any = None  # a torch tensor when the caller works in torch (outputs follow its device)

    @property
    def batch(self) -> int:
        return self.image.shape[0]


class Models:
    """Generator and regressor of one model through one backend (see the module docstring)."""

    def __init__(self, runner, info: ModelInfo, path: str, device: str):
        self.runner = runner
        self.info = info
        self.config = info.config
        self.backend = runner.name
        self.precision = getattr(runner, "precision", "fp32")
        self.device = device
        self.path = path

    # -- what the model is
    profile = property(lambda self: self.config.name)
    image_size = property(lambda self: self.config.image_size)
    n_params = property(lambda self: self.config.n_params)
    n_exp = property(lambda self: self.config.n_exp)
    n_speech = property(lambda self: self.config.n_speech)
    param_names = property(lambda self: list(self.info.param_names))
    blendshapes = property(lambda self: self.info.blendshapes)
    step = property(lambda self: self.info.step)
    meta = property(lambda self: dict(self.info.meta))

    def __repr__(self):
        return (f"Models(profile={self.profile!r}, backend={self.backend!r}, precision={self.precision!r}, "
                f"device={self.device!r}, "
                f"n_params={self.n_params}, image_size={self.image_size}, path={self.path!r})")

    # -- input checks and conversions
    def _images(self, images, what="images", channels: int = 3) -> np.ndarray:
        a = images.detach().cpu().numpy() if _is_tensor(images) else np.asarray(images)
        if a.ndim == 3:
            a = a[None]
        s = self.image_size
        if a.ndim != 4 or a.shape[1:] != (channels, s, s):
            raise InferenceError(f"{what} must be (B, {channels}, {s}, {s}) float (NCHW, RGB in [-1, 1] "
                                 f"first), got shape {tuple(a.shape)}")
        return np.ascontiguousarray(a, dtype=np.float32)

    def _params(self, params) -> np.ndarray:
        a = params.detach().cpu().numpy() if _is_tensor(params) else np.asarray(params)
        if a.ndim == 1:
            a = a[None]
        if a.ndim != 2 or a.shape[1] != self.n_params:
            raise InferenceError(f"parameters must be (B, {self.n_params}) for profile {self.profile!r}, "
                                 f"got shape {tuple(a.shape)}")
        return np.ascontiguousarray(a, dtype=np.float32)

    @staticmethod
    def _out(a: np.ndarray, like):
        if _is_tensor(like):
            import torch
            return torch.from_numpy(np.ascontiguousarray(a)).to(like.device)
        return a

    # -- the three operations
    def source(self, image) -> Source:
        """Run the source encoder once; pass the result to ``generate`` for every frame."""
        img = self._images(image, "the source image")
        return Source(img, tuple(self.runner.encode(img)), image if _is_tensor(image) else None)

    @property
    def needs_frame(self) -> bool:
        """Whether ``generate`` needs the warped frame (the geometry-guided "warp" generator)."""
        return self.config.generator == "warp"

    def generate(self, source, params, return_mask: bool = False, frame=None):
        """I_gen = G(I_src, p) for a Source (cached features) or plain images, (B, N) parameters.
        The "warp" generator also takes ``frame`` (B, 6, S, S): the source warped to p with its region
        mask and flow (engine.geometry.MeshWarp.generator_frame); I_gen composites over the warp."""
        src = source if isinstance(source, Source) else self.source(source)
        p = self._params(params)
        b = p.shape[0]
        image, feats = src.image, src.feats
        if self.needs_frame:
            if frame is None:
                raise InferenceError(f"profile {self.profile!r} is geometry-guided: generate needs the "
                                     "warped frame (engine.geometry.MeshWarp.generator_frame)")
            image = self._images(frame, "the warped frame", self.config.frame_channels)
            if image.shape[0] != b:
                raise InferenceError(f"{image.shape[0]} warped frames for {b} parameter vectors")
        if src.batch != b:
            if src.batch != 1:
                raise InferenceError(f"{src.batch} source images for {b} parameter vectors: give one "
                                     f"source, or as many as parameter vectors")
            if not self.needs_frame:
                image = np.repeat(image, b, axis=0)
            feats = tuple(f.expand(b, *f.shape[1:]) if _is_tensor(f) else np.repeat(f, b, axis=0)
                          for f in feats)
        out, mask = self.runner.decode(image, feats, p)
        like = src.like if src.like is not None else (params if _is_tensor(params) else None)
        if return_mask:
            return self._out(out, like), self._out(mask, like)
        return self._out(out, like)

    def regress(self, images):
        """D_p(I): the parameters the regressor reads from images."""
        return self._out(self.runner.regress(self._images(images)), images)


def resolve_device(device: str) -> str:
    """"cpu" or "cuda" for ``device`` "auto" | "cpu" | "cuda" ("auto": a GPU where torch has one). What needs the
    GPU checks it there (``check_cuda``; onnxruntime's own CUDA provider, ``ort_providers``)."""
    if device not in ("auto", "cpu", "cuda"):
        raise InferenceError(f"device must be 'auto', 'cpu' or 'cuda', not {device!r}")
    if device == "auto":
        return "cuda" if cuda_available() else "cpu"
    return device


def _have(module: str) -> bool:
    import importlib.util
    return importlib.util.find_spec(module) is not None


def load_models(path, backend: str = "auto", device: str = "auto", *, expect: ModelConfig | None = None,
                n_params: int | None = None, image_size: int | None = None, threads: int | None = None,
                fused: bool | None = None, opt_level: str = "all", precision: str = "fp32") -> Models:
    """Load a checkpoint folder (engine/checkpoint.py) or an export folder (``slidergan export``).

    backend: "auto" | "torch" | "onnxruntime" | "tensorrt". device: "auto" | "cpu" | "cuda".
    expect / n_params / image_size: what the caller needs; a model made otherwise is an error.
    threads: intra-op threads (default: physical cores). fused: torch backend only, run the exact
    fused modules that are exported (default False: the trained modules as they are).
    precision: "fp32", or "int8" for the quantised copies of an export made with ``--int8``
    (onnxruntime on CPU; faster, not exact: export.json records the difference to fp32).
    """
    if precision not in PRECISIONS:
        raise InferenceError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    path = Path(path)
    if backend not in ("auto",) + BACKENDS:
        raise InferenceError(f"unknown backend {backend!r}; choose auto, {', '.join(BACKENDS)}")
    dev = resolve_device(device)
    if not path.exists():
        raise InferenceError(f"no checkpoint or export at {path}")
    export = is_export_folder(path)

    if precision != "fp32" and (not export or backend not in ("auto", "onnxruntime")):
        raise InferenceError(f"{precision} models exist only in an export folder made with --{precision}, "
                             f"run by onnxruntime")
    if backend == "auto":
        if export:
            if dev == "cuda" and precision == "fp32" and _has_engines(path) and _tensorrt_usable():
                backend = "tensorrt"
            elif _have("onnxruntime"):
                backend = "onnxruntime"
            else:
                raise InferenceError(f"{path} is an ONNX export and onnxruntime is not installed")
        else:
            backend = "onnxruntime" if _have("onnxruntime") and dev == "cpu" else "torch"

    if export:
        info, files, manifest = read_export(path, precision)
        info.check(expect, n_params, image_size, what=f"export {path}")
        if backend == "torch":
            raise InferenceError(f"{path} is an ONNX export; the torch backend needs the checkpoint folder")
        if backend == "onnxruntime":
            runner = _OrtRunner(files, dev, threads, opt_level)
            runner.precision = precision
        else:
            from .tensorrt_runtime import TensorRTRunner
            runner = TensorRTRunner.from_export(path, info, manifest)
            dev = "cuda"
        return Models(runner, info, str(path), dev)

    from .checkpoint import load_checkpoint, read_metadata
    md = read_metadata(path)
    info = ModelInfo(md["config"], md["param_names"], md["blendshapes"], md["step"], md["meta"])
    info.check(expect, n_params, image_size, what=f"checkpoint {path}")
    if backend == "torch":
        from .torch_backend import TorchRunner, weights_digest
        ck = load_checkpoint(path)
        info.weights = weights_digest(ck.generator, ck.discriminator)
        runner = TorchRunner(ck.generator, ck.discriminator, dev, threads, bool(fused))
    elif backend == "onnxruntime":
        from .onnx_graph import checkpoint_graphs
        runner = _OrtRunner(checkpoint_graphs(path, info), dev, threads, opt_level)
    else:
        raise InferenceError(f"the tensorrt backend loads an export folder made by "
                             f"'slidergan export {path} --format tensorrt -o OUTDIR'; {path} is a checkpoint")
    return Models(runner, info, str(path), dev)


def _has_engines(path: Path) -> bool:
    return any(path.glob("*" + ENGINE_SUFFIX))


def _tensorrt_usable() -> bool:
    return _have("tensorrt") and cuda_available()
