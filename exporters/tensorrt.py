"""ONNX -> serialised TensorRT engines, and a runtime that executes them (NVIDIA GPUs only).

Three steps, as in NVIDIA's samples:
1. build:      ``build_engine(onnx_path)`` parses the ONNX file with TensorRT's ONNX parser, sets an
               optimisation profile over the batch dimension (min 1, opt 1, max 8 by default) and
               FP16 precision (normalisation layers kept in FP32), and returns the serialised plan.
2. serialise:  ``export_tensorrt(checkpoint, outdir)`` writes ``encoder.engine`` / ``generator.engine``
               / ``regressor.engine`` beside the ONNX export, and records them in ``export.json``.
3. run:        ``TensorRTEngine(plan)`` deserialises a plan and runs it on CUDA tensors (device
               buffers are torch CUDA tensors, the stream is torch's current stream);
               ``TensorRTRunner`` is the ``tensorrt`` backend of ``engine.inference``.

Importing this module never needs tensorrt. Without an NVIDIA GPU (or without the tensorrt
package) building and loading raise ``TensorRTUnavailable`` with one sentence saying why.
Engines are specific to the GPU model and TensorRT version that built them.
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.atomic import write_bytes_atomic, write_text_atomic
from engine.inference import ENGINE_SUFFIX, MANIFEST, ROLE_FILES, InferenceError, ModelInfo, read_export

DEFAULT_BATCH = (1, 1, 8)  # min, opt, max of the optimisation profile
FP16_ATOL = 3e-2  # verification bound for FP16 engines on images in [-1, 1]


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot run here (no NVIDIA GPU, or the tensorrt package is missing)."""


def unavailable_reason() -> str | None:
    """None when TensorRT can run; else one sentence saying why not."""
    import importlib.util
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = torch.cuda.is_available()
    if not has_gpu and not has_trt:
        return ("TensorRT needs an NVIDIA GPU with CUDA and the tensorrt package "
                "(pip install 'slidergan[tensorrt]'), and this machine has neither.")
    if not has_gpu:
        return "TensorRT needs an NVIDIA GPU with CUDA, and none is visible on this machine."
    if not has_trt:
        return "TensorRT is not installed: pip install 'slidergan[tensorrt]' (needs an NVIDIA GPU)."
    return None


def require_tensorrt():
    reason = unavailable_reason()
    if reason:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt
    return trt


_LOGGER = None


def _logger(trt):
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


# =============================================================================================== 1. build

def build_engine(onnx_path, *, fp16: bool = True, batch: tuple[int, int, int] = DEFAULT_BATCH,
                 workspace_gib: float = 2.0) -> bytes:
    """Parse an ONNX file and build a serialised engine (plan) with one batch optimisation profile."""
    trt = require_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise InferenceError(f"TensorRT's ONNX parser rejects {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    if fp16:
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise InferenceError("this TensorRT has no FP16 builder flag (strongly typed networks only); "
                                 "build with fp16=False (--precision fp32)")
        config.set_flag(trt.BuilderFlag.FP16)
        # Instance normalisation reduces over 16k pixels: keep its arithmetic in FP32.
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.type == trt.LayerType.NORMALIZATION and hasattr(layer, "compute_precision"):
                layer.compute_precision = trt.float32
    profile = builder.create_optimization_profile()
    lo, opt, hi = batch
    for i in range(network.num_inputs):
        t = network.get_input(i)
        rest = tuple(t.shape)[1:]
        profile.set_shape(t.name, (lo, *rest), (opt, *rest), (hi, *rest))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise InferenceError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    return bytes(plan)


# =========================================================================================== 2. serialise

def export_tensorrt(checkpoint, outdir, *, fp16: bool = True, batch: tuple[int, int, int] = DEFAULT_BATCH,
                    images=None, verify: bool = True, log=print) -> dict:
    """Export ONNX (exporters.onnx) into OUTDIR, then build and write one engine per model."""
    require_tensorrt()  # fail before spending time on the ONNX export
    from .onnx import export_onnx
    from engine.checkpoint import load_checkpoint
    ck = load_checkpoint(checkpoint)
    manifest = export_onnx(ck, outdir, images=images, log=log)
    outdir = Path(outdir)
    trt = require_tensorrt()
    section = {"precision": "fp16" if fp16 else "fp32", "batch_profile": {"min": batch[0], "opt": batch[1],
               "max": batch[2]}, "tensorrt": trt.__version__, "gpu": torch.cuda.get_device_name(0),
               "weights": manifest["weights"], "engines": {}}
    for role, f in manifest["files"].items():
        t0 = time.time()
        plan = build_engine(outdir / f["file"], fp16=fp16, batch=batch)
        name = Path(f["file"]).stem + ENGINE_SUFFIX
        write_bytes_atomic(outdir / name, plan)
        section["engines"][role] = {"file": name, "bytes": len(plan), "sha256": hashlib.sha256(plan).hexdigest(),
                                    "build_seconds": round(time.time() - t0, 1)}
        log(f"built {name} ({len(plan) / 1e6:.1f} MB) in {time.time() - t0:.1f} s")
    manifest["tensorrt"] = section
    if verify:
        manifest["tensorrt"]["verification"] = verify_tensorrt(outdir, ck, images)
    write_text_atomic(outdir / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def verify_tensorrt(outdir, ck, images=None, atol: float = FP16_ATOL, seed: int = 0) -> dict:
    """Engines against the checkpoint's PyTorch modules (on the GPU), as for ONNX."""
    from engine.inference import load_models
    models = load_models(outdir, backend="tensorrt", device="cuda")
    G, D = ck.generator.eval().cuda(), ck.discriminator.eval().cuda()
    rng = np.random.default_rng(seed)
    s, n = ck.config.image_size, ck.config.n_params
    cases = {"random_b1": rng.uniform(-1, 1, (1, 3, s, s)), "random_b8": rng.uniform(-1, 1, (8, 3, s, s))}
    if images is not None:
        from .onnx import load_images
        cases["real"] = images if isinstance(images, np.ndarray) else load_images(images, s, limit=8)
    rec = {"tolerance": {"atol": atol, "rule": "max |TensorRT - torch| on images in [-1, 1]; regressor: "
                         "atol * max(1, max |torch output|)"}, "cases": {}, "passed": True}
    for case, img in cases.items():
        img = img.astype(np.float32)
        p = rng.uniform(-1, 1, (len(img), n)).astype(np.float32)
        with torch.no_grad():
            ti, tp = torch.from_numpy(img).cuda(), torch.from_numpy(p).cuda()
            ref_g, ref_r = G(ti, tp)[0].cpu().numpy(), D.regress(ti).cpu().numpy()
        dg = float(np.abs(models.generate(models.source(img), p) - ref_g).max())
        dr = float(np.abs(models.regress(img) - ref_r).max())
        br = atol * max(1.0, float(np.abs(ref_r).max()))
        rec["cases"][case] = {"batch": len(img), "generator": dg, "regressor": dr}
        rec["passed"] &= dg <= atol and dr <= br
    return rec


# ================================================================================================= 3. run

class TensorRTEngine:
    """One deserialised engine and its execution context; ``run`` takes and returns numpy arrays."""

    def __init__(self, plan: bytes, name: str = "engine"):
        trt = require_tensorrt()
        self.trt = trt
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise InferenceError(f"TensorRT cannot deserialise {name} (built by another TensorRT version "
                                 f"or for another GPU?); export it again on this machine")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [t for t in names if self.engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT]
        self.outputs = [t for t in names if self.engine.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {t: torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(t)))).dtype
                       for t in names}
        self.max_batch = self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0]

    def run(self, feed: dict, outputs: list[str] | None = None, as_numpy: bool = True) -> list:
        """feed: name -> numpy array or torch tensor (CUDA tensors are used in place)."""
        b = next(iter(feed.values())).shape[0]
        if b > self.max_batch:  # the optimisation profile's limit: run in chunks
            parts = [self.run({k: v[i:i + self.max_batch] for k, v in feed.items()}, outputs, as_numpy)
                     for i in range(0, b, self.max_batch)]
            cat = np.concatenate if as_numpy else torch.cat
            return [cat(x) for x in zip(*parts)]
        keep = []
        for name in self.inputs:
            t = torch.as_tensor(feed[name]).to("cuda", self.dtypes[name]).contiguous()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = {}
        for name in self.outputs:
            t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
            outs[name] = t
            self.context.set_tensor_address(name, t.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        res = [outs[n] for n in (outputs or self.outputs)]
        return [t.float().cpu().numpy() for t in res] if as_numpy else res


class TensorRTRunner:
    """The ``tensorrt`` backend of engine.inference: the engines of one export folder."""
    name = "tensorrt"

    def __init__(self, engines: dict[str, TensorRTEngine]):
        self.engines = engines

    @classmethod
    def from_export(cls, folder, info: ModelInfo | None = None, manifest: dict | None = None):
        require_tensorrt()
        folder = Path(folder)
        if info is None or manifest is None:
            info, _, manifest = read_export(folder)
        section = (manifest or {}).get("tensorrt")
        if not section:
            raise InferenceError(f"{folder} holds no TensorRT engines: run "
                                 f"'slidergan export CHECKPOINT --format tensorrt -o {folder}'")
        if section.get("weights") != info.weights:
            raise InferenceError(f"the TensorRT engines in {folder} were built from other weights than its "
                                 f"ONNX files; export again")
        engines = {}
        for role, e in section["engines"].items():
            path = folder / e["file"]
            if not path.is_file():
                raise InferenceError(f"{path} is missing; export again with --format tensorrt")
            plan = path.read_bytes()
            if hashlib.sha256(plan).hexdigest() != e["sha256"]:
                raise InferenceError(f"{path} is not the engine recorded in {MANIFEST} (changed or damaged)")
            engines[role] = TensorRTEngine(plan, str(path))
        if "generator" not in engines or "regressor" not in engines:
            raise InferenceError(f"{folder}: TensorRT engines for the generator and the regressor are needed")
        return cls(engines)

    def encode(self, image):
        if "encoder" not in self.engines:
            return ()
        return tuple(self.engines["encoder"].run({"image": image}, as_numpy=False))  # stay on the GPU

    def decode(self, image, feats, params):
        feed = {"image": image, "params": params, **{f"feat{i}": f for i, f in enumerate(feats)}}
        out, mask = self.engines["generator"].run(feed, ["image_gen", "mask"])
        return out, mask

    def regress(self, image):
        return self.engines["regressor"].run({"image": image})[0]


__all__ = ["TensorRTUnavailable", "unavailable_reason", "build_engine", "export_tensorrt", "TensorRTEngine",
           "TensorRTRunner", "ROLE_FILES"]
