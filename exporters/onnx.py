"""Export a SliderGAN checkpoint to ONNX, with its metadata, and verify it against PyTorch.

Files written to OUTDIR (one model each, dynamic batch dimension, opset ``OPSET``):
- ``encoder.onnx`` ("cached" and "warp" generators): image -> feat0..featK, the source features.
- ``generator.onnx``: image, params[, feat0..featK] -> image_gen, mask (Eq. 4 inside the graph).
- ``regressor.onnx``: image -> params, the discriminator trunk and regression head (no critic).
- ``audio.onnx`` (when the checkpoint folder has the audio model, ``audio.safetensors``): log-mel
  frames (1, T, 64) -> speech parameters (1, T, 10), dynamic batch and time; verified the same way.
- ``export.json``: the manifest (files with their sha256, roles, config, parameter names) and the
  verification record. Loading checks each file against its recorded sha256 (engine.inference.read_export).

Every ONNX file carries ``metadata_props`` under ``slidergan.``: format/version, role, the full
ModelConfig JSON, profile, generator kind, parameter names and count, image size, normalisation
(NCHW, RGB, float32, [-1, 1]), blendshape-model identity, training step, checkpoint meta, the
digest of the checkpoint's weights, its inputs and outputs, the exporter and the exact rewrites.

Exporter: the TorchScript-based ``torch.onnx.export(dynamo=False)`` by default. Both exporters give
the same graphs after onnxruntime's optimisation (checked; same speed, same parity), but this one
converts a paper-sized model in under a second against several seconds, needs no extra package
(the dynamo exporter needs ``onnxscript``), and supports opset 20, which TensorRT 10 and onnxruntime
both read. ``exporter="dynamo"`` is available where onnxscript is installed.

Verification: onnxruntime (CPU) against the PyTorch modules on random inputs (uniform noise and
smooth random images, random parameters in [-1, 1], batch 1 and 3) and on real images when given.
Pass: max |ONNX - torch| <= ``ATOL`` (1e-4) on images in [-1, 1]; for the regressor's unbounded
outputs the bound is 1e-4 * max(1, max |torch output|).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_path
from engine.checkpoint import Checkpoint, load_checkpoint
from engine.inference import (ENGINE_SUFFIX, EXPORT_FORMAT, EXPORT_VERSION, MANIFEST, META_PREFIX, NORMALIZATION,
                              ROLE_FILES, role_file, ort_session_options)
# The graphs themselves are built in engine (the onnxruntime backend converts checkpoints in memory
# too); this module writes them to files, verifies and quantises them.
from engine.onnx_graph import (IO_DOC, OPSET, ExportError, build_onnx_models, checkpoint_info,  # noqa: F401
                               export_module, export_to_bytes, io_names, _n_feats)

ATOL = 1e-4


# ============================================================================================ verification

def load_images(folder, size: int, limit: int = 8) -> np.ndarray:
    """Real images for verification: centre square crop, resized, RGB NCHW float32 in [-1, 1]."""
    from PIL import Image
    folder = Path(folder)
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))[:limit]
    if not paths:
        raise ExportError(f"no images (.jpg/.png/.webp) in {folder}")
    out = []
    for p in paths:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        m = min(w, h)
        im = im.crop(((w - m) // 2, (h - m) // 2, (w - m) // 2 + m, (h - m) // 2 + m)).resize(
            (size, size), Image.Resampling.LANCZOS)
        out.append(np.asarray(im, np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return np.stack(out)


def _smooth_images(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Image-like inputs: low-frequency random fields (bilinear-upsampled 8x8 noise)."""
    low = torch.from_numpy(rng.uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32))
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear",
                                           align_corners=False).numpy()


def _bound(role: str, ref: np.ndarray, atol: float) -> float:
    return atol * max(1.0, float(np.abs(ref).max())) if role == "regressor" else atol


def _frames(cfg, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The generator's per-frame input for test images: the images themselves, or for the "warp"
    generator the images with a random region mask and a small random flow as the extra channels."""
    if cfg.frame_channels == 3:
        return images
    b, _, s, _ = images.shape
    extra = [rng.uniform(0, 1, (b, 1, s, s)), rng.uniform(-0.3, 0.3, (b, cfg.frame_channels - 4, s, s))]
    return np.ascontiguousarray(np.concatenate([images, *extra], 1), dtype=np.float32)


def verify_models(models: dict, ck: Checkpoint, real_images: np.ndarray | None = None,
                  atol: float = ATOL, seed: int = 0, threads: int | None = None) -> dict:
    """Run the exported models in onnxruntime and the checkpoint's own (unfused) PyTorch modules on
    the same inputs; record max abs differences. models: role -> path or serialised bytes.

    The ONNX generator is fed the ONNX encoder's features, as inference does, and compared with
    ``G(I, p)`` end to end. Returns a JSON-ready record with ``passed``."""
    import onnxruntime as ort
    cfg = ck.config
    G, D = ck.generator.eval(), ck.discriminator.eval()
    so = ort_session_options(threads)
    sessions = {r: ort.InferenceSession(m if isinstance(m, (bytes, bytearray)) else str(m), so,
                                        providers=["CPUExecutionProvider"]) for r, m in models.items()}
    rng = np.random.default_rng(seed)
    s, n = cfg.image_size, cfg.n_params
    cases = {"random_b1": rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32),
             "random_b3": rng.uniform(-1, 1, (3, 3, s, s)).astype(np.float32),
             "smooth_b2": _smooth_images(2, s, rng)}
    if real_images is not None and len(real_images):
        cases["real"] = np.ascontiguousarray(real_images, dtype=np.float32)
    record = {"tolerance": {"atol": atol, "rule": "max |onnxruntime - torch| <= atol on images in [-1, 1]; "
                            "regressor: <= atol * max(1, max |torch output|)"},
              "reference": "the checkpoint's PyTorch modules, eager, unfused: G.encode, G(I, p), D.regress",
              "provider": "CPUExecutionProvider", "cases": {}, "passed": True}
    worst = {}
    for case, images in cases.items():
        b = images.shape[0]
        params = rng.uniform(-1, 1, (b, n)).astype(np.float32)
        timg, tpar = torch.from_numpy(images), torch.from_numpy(params)
        frame = _frames(cfg, images, rng)
        with torch.no_grad():
            out, _, mask = G(timg, tpar, frame=torch.from_numpy(frame)) if frame is not images else G(timg, tpar)
            refs = {"generator": [out, mask], "regressor": [D.regress(timg)]}
            if "encoder" in sessions:
                refs["encoder"] = list(G.encode(timg))
        feats = tuple(sessions["encoder"].run(None, {"image": images})) if "encoder" in sessions else ()
        outs = {"generator": sessions["generator"].run(["image_gen", "mask"], {
                    "image": frame, "params": params, **{f"feat{i}": f for i, f in enumerate(feats)}}),
                "regressor": sessions["regressor"].run(None, {"image": images})}
        if "encoder" in sessions:
            outs["encoder"] = list(feats)
        res = {}
        for role in ("encoder", "generator", "regressor"):
            if role not in outs:
                continue
            d = max(float(np.abs(o - r.numpy()).max()) for o, r in zip(outs[role], refs[role]))
            bound = _bound(role, refs[role][0].numpy(), atol)
            res[role] = {"max_abs_diff": d, "bound": bound, "ok": d <= bound}
            worst[role] = max(worst.get(role, 0.0), d)
            record["passed"] &= d <= bound
        record["cases"][case] = {"batch": b, **res}
    record["max_abs_diff"] = worst
    return record


# ============================================================================================ int8 (opt-in)

INT8_NOTE = ("static QDQ int8 (onnxruntime.quantization): convolutions only, per-channel 7-bit weights "
             "(reduce_range: AVX2 without VNNI multiplies u8 x s8 pairs into saturating int16), uint8 "
             "activations calibrated at the 99.999th percentile; the first and last convolution of each "
             "model, instance norms, residual sums and heads' activations stay fp32")


def _calib_reader(feeds):
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    return Reader()


def _psnr(a: np.ndarray, b: np.ndarray, peak_to_peak: float = 2.0) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak_to_peak ** 2 / mse)


def _int8_one(src: Path, pre: Path, dst: Path, calib_feeds: list) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
    quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
    convs = [nd.name for nd in onnx.load(str(pre)).graph.node if nd.op_type in ("Conv", "ConvTranspose")]
    quantize_static(str(pre), str(dst), _calib_reader(calib_feeds), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "ConvTranspose"],
                    nodes_to_exclude=[convs[0], convs[-1]] if len(convs) > 2 else [],
                    calibrate_method=CalibrationMethod.Percentile, extra_options={"CalibPercentile": 99.999})


def quantize_int8(folder: Path, cfg, images: np.ndarray | None = None, seed: int = 0, log=print) -> dict:
    """Write <role>.int8.onnx beside the fp32 files of an export folder; return the quality record.

    Calibration: the given real images (all but the last two, which are held out) or, without them,
    smooth random images; random parameters in [-1, 1]. Quality: the int8 chain (encoder, generator)
    against the fp32 one on held-out inputs: max abs diff and PSNR of I_gen (range [-1, 1], peak to
    peak 2); the regressor's max abs diff and relative error ||p_int8 - p_fp32|| / ||p_fp32||."""
    import onnx
    import onnxruntime as ort
    rng = np.random.default_rng(seed)
    s, n = cfg.image_size, cfg.n_params
    if images is not None and len(images) >= 4:
        calib_img, held = images[:-2], images[-2:]
        source = f"{len(images) - 2} real images"
    else:
        calib_img, held = _smooth_images(16, s, rng), _smooth_images(2, s, rng)
        source = "16 smooth random images (give --images for a calibration on real faces)"
    held = np.concatenate([held, _smooth_images(2, s, rng)]).astype(np.float32)
    so = ort_session_options()
    fp32 = {r: ort.InferenceSession(str(folder / role_file(r)), so, providers=["CPUExecutionProvider"])
            for r in ROLE_FILES if (folder / role_file(r)).exists()}

    def feeds(role, imgs, r):
        out = []
        for i in range(len(imgs)):
            x = imgs[i:i + 1].astype(np.float32)
            f = {"image": x}
            if role == "generator":
                f["image"] = _frames(cfg, x, r)
                f["params"] = r.uniform(-1, 1, (1, n)).astype(np.float32)
                if "encoder" in fp32:
                    f.update({f"feat{j}": a for j, a in enumerate(fp32["encoder"].run(None, {"image": x}))})
            out.append(f)
        return out

    for role in fp32:
        src, pre, dst = folder / role_file(role), folder / f".{role}.pre.onnx", folder / role_file(role, "int8")
        t0 = time.time()
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # the calibrator prints its progress
                _int8_one(src, pre, dst, feeds(role, calib_img, np.random.default_rng(1)))
        finally:
            pre.unlink(missing_ok=True)
            for junk in folder.glob("*augmented_model*"):
                junk.unlink()
        q = onnx.load(str(dst))

        del q.metadata_props[:]
        for prop in onnx.load(str(src), load_external_data=False).metadata_props:
            q.metadata_props.add(key=prop.key, value="int8" if prop.key == META_PREFIX + "precision" else prop.value)
        q.metadata_props.add(key=META_PREFIX + "quantization", value=INT8_NOTE)
        onnx.save(q, str(dst))
        log(f"quantised {dst.name} in {time.time() - t0:.1f} s")
    q8 = {r: ort.InferenceSession(str(folder / role_file(r, "int8")), so, providers=["CPUExecutionProvider"])
          for r in fp32}
    rec = {"method": INT8_NOTE, "calibration": source, "held_out": len(held), "generator": {}, "regressor": {}}
    diffs, psnrs, rd, rel = [], [], [], []
    for i, f32 in enumerate(feeds("generator", held, np.random.default_rng(2))):
        ref = fp32["generator"].run(["image_gen"], f32)[0]
        x = held[i:i + 1].astype(np.float32)
        f8 = {"image": f32["image"], "params": f32["params"]}
        if "encoder" in q8:
            f8.update({f"feat{j}": a for j, a in enumerate(q8["encoder"].run(None, {"image": x}))})
        out = q8["generator"].run(["image_gen"], f8)[0]
        diffs.append(float(np.abs(out - ref).max()))
        psnrs.append(_psnr(out, ref))
        pr, p8 = fp32["regressor"].run(None, {"image": x})[0], q8["regressor"].run(None, {"image": x})[0]
        rd.append(float(np.abs(p8 - pr).max()))
        rel.append(float(np.linalg.norm(p8 - pr) / max(np.linalg.norm(pr), 1e-12)))
    rec["generator"] = {"max_abs_diff": max(diffs), "psnr_db_min": min(psnrs), "psnr_db_mean": float(np.mean(psnrs))}
    rec["regressor"] = {"max_abs_diff": max(rd), "relative_error_max": max(rel)}
    return rec


# ================================================================================================= export

def export_onnx(checkpoint, outdir, *, opset: int = OPSET, exporter: str = "torchscript",
                images=None, verify: bool = True, atol: float = ATOL, int8: bool = False, log=print) -> dict:
    """Export a checkpoint folder (or a loaded Checkpoint) to OUTDIR; returns the manifest."""
    import onnx
    t0 = time.time()
    ck = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    info = checkpoint_info(ck)
    cfg = info.config
    protos, mods = build_onnx_models(ck, info, opset, exporter)
    outdir = Path(outdir)
    check_outdir(outdir)
    files = {}
    manifest = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "profile": cfg.name, "config": cfg.to_dict(),
        "param_names": info.param_names, "n_params": cfg.n_params, "image_size": cfg.image_size,
        "normalization": NORMALIZATION, "blendshapes": info.blendshapes, "step": info.step,
        "weights": info.weights, "source": str(checkpoint) if not isinstance(checkpoint, Checkpoint) else "",
        "opset": opset, "exporter": exporter, "torch": torch.__version__, "onnx": onnx.__version__,
        "rewrites": mods["generator"].fused_ops, "files": {}}
    with atomic_path(outdir, is_dir=True) as tmp:
        for role, proto in protos.items():
            data = proto.SerializeToString()
            (tmp / ROLE_FILES[role]).write_bytes(data)
            files[role] = tmp / ROLE_FILES[role]
            ins, outs = io_names(role, _n_feats(mods))
            manifest["files"][role] = {"file": ROLE_FILES[role], "bytes": len(data), "inputs": ins,
                                       "outputs": outs, "sha256": hashlib.sha256(data).hexdigest()}
        real = None
        if images is not None:
            real = images if isinstance(images, np.ndarray) else load_images(images, cfg.image_size, limit=32)
        if verify:
            rec = verify_models(files, ck, real[:8] if real is not None else None, atol)
            manifest["verification"] = rec
            if not rec["passed"]:
                bad = {r: d for r, d in rec["max_abs_diff"].items()}
                raise ExportError(f"onnxruntime output differs from PyTorch beyond {atol}: max abs diff {bad}")
        audio_src = None if isinstance(checkpoint, Checkpoint) else Path(checkpoint) / "audio.safetensors"
        if audio_src is not None and audio_src.exists():
            manifest["audio"] = export_audio(audio_src, tmp / "audio.onnx", opset=opset, verify=verify, atol=atol)
        if int8:
            manifest["int8"] = quantize_int8(tmp, cfg, real, log=log)
            manifest["int8"]["files"] = {r: role_file(r, "int8") for r in protos}
            manifest["int8"]["sha256"] = {r: hashlib.sha256((tmp / role_file(r, "int8")).read_bytes()).hexdigest()
                                          for r in protos}
        manifest["seconds"] = round(time.time() - t0, 2)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def export_audio(src, out_file, *, opset: int = OPSET, verify: bool = True, atol: float = ATOL) -> dict:
    """The audio model (``engine.audio``, a file or a model folder) to ONNX at ``out_file``, its config
    in the metadata (``slidergan.audio_config``); verified against PyTorch in onnxruntime on random
    and speech-like log-mel inputs of several lengths (max abs diff <= ``atol`` x max(1, max |out|))."""
    import onnx
    import onnxruntime as ort

    from engine.audio import audio_onnx_bytes, load_audio_model, log_mel
    net = load_audio_model(src)
    out_file = Path(out_file)
    data = audio_onnx_bytes(net, opset)
    onnx.checker.check_model(onnx.load_from_string(data))
    out_file.write_bytes(data)
    rec = {"file": out_file.name, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
           "n_out": net.cfg.n_out, "lookahead_s": net.cfg.lookahead_s}
    if verify:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        t = np.arange(48000) / 16000
        voice = (np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0) * 0.3).astype(np.float32)
        cases = [rng.normal(-5, 4, (1, n, net.cfg.n_mels)).astype(np.float32) for n in (1, 37, 400)]
        cases.append(log_mel(voice)[None])
        diffs = []
        for x in cases:
            with torch.no_grad():
                ref = net(torch.from_numpy(x)).numpy()
            got = sess.run(None, {"mel": x})[0]
            diffs.append((float(np.abs(got - ref).max()), atol * max(1.0, float(np.abs(ref).max()))))
        rec["verification"] = {"max_abs_diff": max(d for d, _ in diffs), "passed": all(d <= b for d, b in diffs),
                               "cases": len(cases), "atol": atol}
        if not rec["verification"]["passed"]:
            raise ExportError(f"the audio model in onnxruntime differs from PyTorch beyond {atol}: {diffs}")
    return rec


def check_outdir(outdir: Path) -> None:
    """OUTDIR is replaced whole: refuse a folder that holds anything but a previous export."""
    if not outdir.exists():
        return
    if not outdir.is_dir():
        raise ExportError(f"{outdir} exists and is not a folder")
    ours = set(ROLE_FILES.values()) | {role_file(r, "int8") for r in ROLE_FILES} | {MANIFEST, "audio.onnx"}
    other = [p.name for p in outdir.iterdir() if p.name not in ours and not p.name.endswith(ENGINE_SUFFIX)]
    if other:
        raise ExportError(f"{outdir} holds other files ({', '.join(sorted(other)[:3])}...); an export "
                          f"replaces its folder whole, so give a new or a previous export's folder")


def format_report(manifest: dict) -> str:
    lines = [f"exported profile {manifest['profile']!r} ({manifest['config']['generator']} generator, "
             f"{manifest['n_params']} parameters, {manifest['image_size']} px) with opset {manifest['opset']}, "
             f"{manifest['exporter']} exporter, in {manifest.get('seconds', 0)} s"]
    for role, f in manifest["files"].items():
        lines.append(f"  {f['file']:<16} {f['bytes'] / 1e6:7.2f} MB  {', '.join(f['inputs'])} -> "
                     f"{', '.join(f['outputs'])}")
    if manifest.get("rewrites"):
        lines.append("  exact rewrites: " + "; ".join(manifest["rewrites"]))
    v = manifest.get("verification")
    if v:
        lines.append(f"verification, onnxruntime vs PyTorch ({v['tolerance']['rule']}, atol {v['tolerance']['atol']:g}):")
        for case, res in v["cases"].items():
            parts = [f"{r} {res[r]['max_abs_diff']:.2e}" for r in ("encoder", "generator", "regressor") if r in res]
            lines.append(f"  {case:<10} batch {res['batch']}: max abs diff " + ", ".join(parts))
        lines.append("  PASSED" if v["passed"] else "  FAILED")
    a = manifest.get("audio")
    if a:
        v = a.get("verification")
        lines.append(f"  {a['file']:<16} {a['bytes'] / 1e6:7.2f} MB  mel (1, T, 64) -> speech (1, T, {a['n_out']})"
                     + (f"; onnxruntime vs PyTorch max abs diff {v['max_abs_diff']:.2e} "
                        f"({'PASSED' if v['passed'] else 'FAILED'})" if v else ""))
    q = manifest.get("int8")
    if q:
        lines.append(f"int8 copies ({', '.join(q['files'].values())}), calibrated on {q['calibration']}; "
                     f"difference to fp32 on {q['held_out']} held-out inputs: generator max abs "
                     f"{q['generator']['max_abs_diff']:.3f}, PSNR >= {q['generator']['psnr_db_min']:.1f} dB; "
                     f"regressor max abs {q['regressor']['max_abs_diff']:.2e}, relative "
                     f"{q['regressor']['relative_error_max']:.3f}")
    return "\n".join(lines)
