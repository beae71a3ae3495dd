"""ONNX -> serialised TensorRT engines (NVIDIA GPUs only).

Three steps, as in NVIDIA's samples:
1. build:      ``build_engine(onnx_path)`` parses the ONNX file with TensorRT's ONNX parser, sets an
               optimisation profile over the batch dimension (min 1, opt 1, max 8 by default) and
               FP16 precision (normalisation layers kept in FP32), and returns the serialised plan.
2. serialise:  ``export_tensorrt(checkpoint, outdir)`` writes ``encoder.engine`` / ``generator.engine``
               / ``regressor.engine`` beside the ONNX export, and records them in ``export.json``.
3. run:        not here: ``engine/tensorrt_runtime.py`` (``TensorRTEngine``, ``TensorRTRunner``, the
               ``tensorrt`` backend of ``engine.inference``) deserialises and runs the plans. Its names
               are re-exported here for convenience; the engine never imports this package.

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
from engine.inference import ENGINE_SUFFIX, MANIFEST, ROLE_FILES, InferenceError
# The runtime (deserialising and running engines) is the engine's tensorrt backend; re-exported here.
from engine.tensorrt_runtime import (TensorRTEngine, TensorRTRunner, TensorRTUnavailable, _logger,  # noqa: F401
                                     require_tensorrt, unavailable_reason)

DEFAULT_BATCH = (1, 1, 8)  # min, opt, max of the optimisation profile
FP16_ATOL = 3e-2  # verification bound for FP16 engines on images in [-1, 1]


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

    from .onnx import _frames
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
            frame = _frames(ck.config, img, rng)
            kw = {"frame": torch.from_numpy(frame).cuda()} if frame is not img else {}
            ref_g, ref_r = G(ti, tp, **kw)[0].cpu().numpy(), D.regress(ti).cpu().numpy()
        kw = {"frame": frame} if frame is not img else {}
        dg = float(np.abs(models.generate(models.source(img), p, **kw) - ref_g).max())
        dr = float(np.abs(models.regress(img) - ref_r).max())
        br = atol * max(1.0, float(np.abs(ref_r).max()))
        rec["cases"][case] = {"batch": len(img), "generator": dg, "regressor": dr}
        rec["passed"] &= dg <= atol and dr <= br
    return rec


__all__ = ["TensorRTUnavailable", "unavailable_reason", "build_engine", "export_tensorrt", "TensorRTEngine",
           "TensorRTRunner", "ROLE_FILES"]
