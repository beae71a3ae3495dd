"""A checkpoint's inference modules as ONNX graphs, in memory, with SliderGAN's metadata.

Used both by ``engine.inference`` (the onnxruntime backend converts a checkpoint at load time, the
graphs cached on disk: ``checkpoint_graphs``) and by ``exporters.onnx`` (``slidergan export``, which
writes these graphs to files, verifies and quantises them). It lives in ``engine`` so that the engine never imports ``exporters``: the
dependency runs one way, exporters -> engine.

Each role (``encoder`` for cached generators, ``generator``, ``regressor``) becomes one
onnx.ModelProto with a dynamic batch dimension on every input and output (opset ``OPSET``), and
``metadata_props`` under ``slidergan.``: format/version, role, the full ModelConfig JSON, profile,
generator kind, parameter names and count, image size, normalisation, blendshape-model identity,
training step, checkpoint meta, the digest of the checkpoint's weights, its inputs and outputs, the
exporter and the exact rewrites.

Exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)`` by default (see
``exporters/onnx.py`` for why); ``exporter="dynamo"`` where onnxscript is installed.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_path
from .inference import EXPORT_FORMAT, EXPORT_VERSION, META_PREFIX, NORMALIZATION, ModelInfo, file_sha256

if TYPE_CHECKING:
    from .checkpoint import Checkpoint

OPSET = 20


class ExportError(RuntimeError):
    """torch.onnx could not convert a module, or onnx.checker rejects the result."""


def _example_inputs(role: str, mods: dict, cfg, batch: int = 1, seed: int = 0):
    import torch
    g = torch.Generator().manual_seed(seed)
    s = cfg.image_size
    image = torch.rand(batch, 3, s, s, generator=g) * 2 - 1
    if role in ("encoder", "regressor"):
        return (image,)
    params = torch.rand(batch, cfg.n_params, generator=g) * 2 - 1
    feats = ()
    if "encoder" in mods:
        with torch.no_grad():
            feats = mods["encoder"](image)
    frame = torch.rand(batch, cfg.frame_channels, s, s, generator=g) * 2 - 1 if cfg.frame_channels != 3 else image
    return (frame, params) + tuple(feats)


def io_names(role: str, n_feats: int) -> tuple[list[str], list[str]]:
    feats = [f"feat{i}" for i in range(n_feats)]
    if role == "encoder":
        return ["image"], feats
    if role == "generator":
        return ["image", "params"] + feats, ["image_gen", "mask"]
    return ["image"], ["params"]


IO_DOC = {
    "encoder": "image (B,3,S,S) float32 RGB in [-1,1] -> feat0..featK: source features for generator",
    "generator": "image (B,3,S,S) float32 RGB in [-1,1] (profile 'warp': (B,6,S,S), the source warped to p, "
                 "region mask and flow: engine.geometry), params (B,N) float32 in [-1,1][, feat0..featK "
                 "from encoder] -> image_gen (B,3,S,S) in [-1,1] (Eq. 4: A*C + (1-A)*image[:, :3]), mask A (B,1,S,S)",
    "regressor": "image (B,3,S,S) float32 RGB in [-1,1] -> params (B,N): D_p(I), the regression head of D",
}


def _n_feats(mods) -> int:
    if "encoder" not in mods:
        return 0
    return len(_example_inputs("generator", mods, mods["generator"].g.cfg)) - 2


def _quiet_export(fn):
    """torch.onnx warns about its own deprecation and about eval-mode instance norm: not our news."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        levels = {n: logging.getLogger(n).level for n in ("torch.onnx", "torch.export", "torch._dynamo",
                                                           "onnxscript")}
        for n in levels:
            logging.getLogger(n).setLevel(logging.ERROR)
        try:
            return fn()
        finally:
            for n, lv in levels.items():
                logging.getLogger(n).setLevel(lv)


def export_module(module, role: str, args: tuple, n_feats: int, opset: int = OPSET,
                  exporter: str = "torchscript"):
    """One module to an onnx.ModelProto with a dynamic batch dimension on every input and output."""
    import onnx
    import torch
    inputs, outputs = io_names(role, n_feats)
    module = module.eval()
    if exporter == "torchscript":
        buf = io.BytesIO()
        axes = {n: {0: "batch"} for n in inputs + outputs}
        _quiet_export(lambda: torch.onnx.export(
            module, args, buf, dynamo=False, opset_version=opset, input_names=inputs,
            output_names=outputs, dynamic_axes=axes, do_constant_folding=True))
        return onnx.load_from_string(buf.getvalue())
    if exporter == "dynamo":
        try:
            import onnxscript  # noqa: F401
        except ImportError:
            raise ExportError("the dynamo exporter needs onnxscript (pip install onnxscript); "
                              "use exporter='torchscript'") from None
        batch = torch.export.Dim("batch", min=1, max=4096)
        shapes = ({0: batch}, {0: batch}, tuple({0: batch} for _ in args[2:])) if role == "generator" \
            else ({0: batch},)
        prog = _quiet_export(lambda: torch.onnx.export(
            module, args, dynamo=True, opset_version=opset, input_names=inputs, output_names=outputs,
            dynamic_shapes=shapes, optimize=True, verbose=False))
        return prog.model_proto
    raise ExportError(f"unknown exporter {exporter!r} (torchscript or dynamo)")


def _set_metadata(model, role: str, info: ModelInfo, extra: dict) -> None:
    cfg = info.config
    md = {
        "format": EXPORT_FORMAT, "version": str(EXPORT_VERSION), "role": role,
        "config": cfg.to_json(), "profile": cfg.name, "generator": cfg.generator,
        "param_names": json.dumps(info.param_names), "n_params": str(cfg.n_params),
        "n_exp": str(cfg.n_exp), "n_speech": str(cfg.n_speech),
        "image_size": str(cfg.image_size), "normalization": json.dumps(NORMALIZATION),
        "blendshapes": info.blendshapes, "step": str(info.step), "meta": json.dumps(info.meta),
        "weights": info.weights, "io": IO_DOC[role], "precision": "fp32",
        **{k: str(v) for k, v in extra.items()},
    }
    del model.metadata_props[:]
    for k, v in md.items():
        p = model.metadata_props.add()
        p.key, p.value = META_PREFIX + k, v
    model.producer_name = "slidergan"
    model.doc_string = f"SliderGAN {role} ({cfg.name} profile): {IO_DOC[role]}"


def build_onnx_models(ck: Checkpoint, info: ModelInfo, opset: int = OPSET, exporter: str = "torchscript",
                      check: bool = True) -> tuple[dict, dict]:
    """role -> onnx.ModelProto (metadata set, checked), and role -> torch module (for verification)."""
    import onnx
    import torch

    from .torch_backend import inference_modules
    mods = inference_modules(ck.generator.eval(), ck.discriminator.eval(), fused=True)
    n_feats = _n_feats(mods)
    fused = mods["generator"].fused_ops
    protos = {}
    for role, mod in mods.items():
        args = _example_inputs(role, mods, info.config)
        try:
            proto = export_module(mod, role, args, n_feats, opset, exporter)
        except ExportError:
            raise
        except Exception as e:
            raise ExportError(f"torch.onnx could not export the {role} ({exporter} exporter): {e}") from e
        _set_metadata(proto, role, info, {"exporter": f"torch.onnx {exporter} (torch {torch.__version__})",
                                          "opset": opset,
                                          "rewrites": json.dumps(fused if role == "generator" else [])})
        if check:
            try:
                onnx.checker.check_model(proto, full_check=True)
            except Exception as e:
                raise ExportError(f"onnx.checker rejects the exported {role}: {e}") from None
        protos[role] = proto
    return protos, mods


def export_to_bytes(ck: Checkpoint, info: ModelInfo | None = None, exporter: str = "torchscript") -> dict:
    """role -> serialised ONNX, for loading a checkpoint into onnxruntime without writing files."""
    info = info or checkpoint_info(ck)
    protos, _ = build_onnx_models(ck, info, exporter=exporter, check=False)
    return {role: p.SerializeToString() for role, p in protos.items()}


# --------------------------------------------------------------------------- the graphs' cache
# Building the graphs costs about a second at every start (torch.onnx's first export in a process), and
# loading the checkpoint into torch to build them another (importing torch alone takes a second and 190 MB), so
# the bytes are kept on disk, keyed by everything that makes them: a checkpoint's model file (its weights and
# metadata, byte for byte), the source of the modules that define the graphs, torch's version and the opset.
# A checkpoint whose graphs are cached loads without torch. Best effort: a cache that cannot be read or written
# is rebuilt or skipped, never an error.
CACHE_ENV = "SLIDERGAN_CACHE_DIR"        # a folder, or "off"
CACHE_KEEP = 8                          # graphs of this many models are kept (about 14 MB for the realtime one)
CHECKPOINT_SOURCES = ("config.py", "models.py", "inference.py", "torch_backend.py", "onnx_graph.py")
log = logging.getLogger(__name__)


def cache_dir() -> Path | None:
    """$SLIDERGAN_CACHE_DIR, else $XDG_CACHE_HOME/slidergan, else ~/.cache/slidergan; None when "off"."""
    env = os.environ.get(CACHE_ENV)
    if env is not None:
        return None if env.strip().lower() in ("", "off", "0", "none") else Path(env)
    try:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    except RuntimeError:                # no home folder: no cache
        return None
    return Path(base) / "slidergan"


def _torch_version() -> str:
    """torch's version from its package metadata (importing torch for it would cost what the cache saves)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("torch")
    except PackageNotFoundError:
        return "none"


def cached_graphs(key: tuple[str, ...], sources: tuple[str, ...], build, about=None) -> tuple[dict, dict]:
    """role -> serialised ONNX, and ``about`` (what the entry records beside the graphs): from the cache entry
    for ``key`` (strings that decide the graphs' bytes) and the engine modules ``sources`` that define them,
    else ``build()``, kept in the cache for the next time. ``about``: a dict, or a callable giving one once
    ``build()`` has run."""
    def built():
        models = build()
        return models, dict((about() if callable(about) else about) or {})
    root = cache_dir()
    if root is None:
        return built()
    h = hashlib.sha256()
    for part in (*key, _torch_version(), str(OPSET), str(EXPORT_VERSION)):
        h.update(part.encode() + b"\0")
    for name in sources:
        h.update((Path(__file__).parent / name).read_bytes())
    entry = root / "onnx" / h.hexdigest()[:32]
    hit = _read_cached(entry)
    if hit is not None:
        return hit
    models, info = built()
    try:
        with atomic_path(entry, is_dir=True) as tmp:
            for role, data in models.items():
                (tmp / f"{role}.onnx").write_bytes(data)
            manifest = {**info, "sha256": {r: hashlib.sha256(d).hexdigest() for r, d in models.items()}}
            (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        _prune(root / "onnx", keep=entry)
    except OSError as e:
        log.info("ONNX graphs not cached in %s: %s", entry, e)
    return models, info


def checkpoint_graphs(path, info: ModelInfo) -> dict:
    """role -> serialised ONNX of the checkpoint folder ``path`` (``export_to_bytes``), through the cache,
    keyed by its model file's bytes: on a hit neither torch nor the weights are loaded (the file is the one
    that was checked and converted before). Sets ``info.weights``, the digest of its weights."""
    from .checkpoint import MODEL_FILE, load_checkpoint

    def build():
        from .torch_backend import weights_digest
        ck = load_checkpoint(path)
        info.weights = weights_digest(ck.generator, ck.discriminator)
        return export_to_bytes(ck, info)
    models, about = cached_graphs(("checkpoint", file_sha256(Path(path) / MODEL_FILE)), CHECKPOINT_SOURCES, build,
                                  lambda: {"profile": info.config.name, "step": info.step, "weights": info.weights})
    info.weights = str(about.get("weights", ""))
    return models


def _read_cached(entry: Path) -> tuple[dict, dict] | None:
    try:
        manifest = json.loads((entry / "manifest.json").read_text())
        models = {role: (entry / f"{role}.onnx").read_bytes() for role in manifest["sha256"]}
        if any(hashlib.sha256(d).hexdigest() != manifest["sha256"][r] for r, d in models.items()):
            log.warning("the cached ONNX graphs in %s are damaged; building them again", entry)
            return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    try:
        os.utime(entry / "manifest.json")          # recently used: kept by _prune
    except OSError:                                # a read-only cache still serves
        pass
    return models, {k: v for k, v in manifest.items() if k != "sha256"}


def _prune(folder: Path, keep: Path) -> None:
    """Keep the CACHE_KEEP most recently used entries."""
    def used(p: Path) -> float:
        try:
            return (p / "manifest.json").stat().st_mtime
        except OSError:
            return 0.0
    entries = sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), key=used,
                     reverse=True)
    for p in entries[CACHE_KEEP:]:
        if p != keep:
            shutil.rmtree(p, ignore_errors=True)


def checkpoint_info(ck: Checkpoint) -> ModelInfo:
    from .torch_backend import weights_digest
    return ModelInfo(ck.config, list(ck.param_names), ck.blendshapes, ck.step, dict(ck.meta),
                     weights_digest(ck.generator, ck.discriminator))
