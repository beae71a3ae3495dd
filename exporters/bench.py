"""``slidergan bench``: speed of the generator and the regressor per backend and profile.

    slidergan bench [--profiles realtime paper] [--backends torch onnxruntime] [--json OUT]

For each profile: a random-weight checkpoint (speed does not depend on the weights) or the given
``--checkpoint``, exported once to ONNX (and TensorRT when asked and possible). Each (profile,
backend) is measured in its own process through ``engine.inference`` (what the engine really runs),
so thread pools and memory of one backend do not disturb the next:

- encoder: once per source portrait ("cached" generators), median ms at batch 1;
- generator: per frame after source caching (the whole generator for the paper's), median and p95 ms
  at batch 1, frames/s at batch 8;
- regressor (D trunk + regression head): median and p95 ms at batch 1, images/s at batch 8;
- geometry ("warp" generators): a frame of the per-frame warp beside the network at 512 px output,
  framed as the product frames a portrait (the warp-only renderer of engine.animator: target mesh,
  backward map, drawn mouth, the flow carried to the output, the warp and blend there);
  "geometry+head" the same with a head pose (engine.pose: the mesh turned, the wider band);
- engine ("warp" generators): a whole frame of engine.animator at 512 px output (geometry, the
  generator's input and the generator, its layer upsampled and blended), "engine+head" with a head pose;
- peak memory: the process's peak RSS while loading and running, minus its RSS before loading;
- FLOPs per frame (torch.utils.flop_counter on the trained modules: convolutions and matrix products,
  2 per multiply-add), the machine-limit time FLOPs / ``--peak-gflops`` (default 157: 2 cores x
  2.45 GHz x 2 AVX2 FMA units x 8 float32 lanes x 2), and the ratio of eager torch to each backend.

Backends: ``torch`` (eager, the trained modules), ``torch-fused`` (eager, the exact fused modules that
are exported), ``onnxruntime`` (CPU), ``onnxruntime-int8`` (the opt-in int8 copies; their difference to
fp32 is reported beside the table), ``tensorrt`` (NVIDIA GPU). The table is printed; ``--json``
writes everything atomically, with the machine, library versions and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEAK_GFLOPS = 157.0
DEFAULT_PROFILES = ("realtime-small", "realtime", "paper")
DEFAULT_BACKENDS = ("torch", "onnxruntime")
ALL_BACKENDS = ("torch", "torch-fused", "onnxruntime", "onnxruntime-int8", "tensorrt")


# ============================================================================================== measuring

def _rss_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_mb() -> float:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_calls(fn, min_iters: int = 20, min_seconds: float = 2.0, max_iters: int = 300,
               warmup: int = 3) -> list[float]:
    """Milliseconds of each call of fn after warm-up, for at least min_iters calls and min_seconds."""
    for _ in range(warmup):
        fn()
    times, start = [], time.perf_counter()
    while len(times) < max_iters and (len(times) < min_iters or time.perf_counter() - start < min_seconds):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def _stats(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"median_ms": float(np.median(a)), "p95_ms": float(np.percentile(a, 95)), "n": int(a.size)}


def measure(path: str, backend: str, threads: int | None, quick: bool = False) -> dict:
    """Load one model set through engine.inference and time its parts (runs in a child process)."""
    from engine.inference import load_models, physical_cores
    threads = threads or physical_cores()
    rss0 = _rss_mb()
    exact_peak = _reset_peak()
    t0 = time.perf_counter()
    kw = {"fused": True} if backend == "torch-fused" else {"precision": "int8"} if backend.endswith("-int8") else {}
    models = load_models(path, backend=backend.split("-")[0], threads=threads, **kw)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    s, n = models.image_size, models.n_params
    img1 = rng.uniform(-1, 1, (1, 3, s, s)).astype(np.float32)
    img8 = rng.uniform(-1, 1, (8, 3, s, s)).astype(np.float32)
    p1 = rng.uniform(-1, 1, (1, n)).astype(np.float32)
    p8 = rng.uniform(-1, 1, (8, n)).astype(np.float32)
    c = models.config.frame_channels        # the "warp" generator's per-frame input: the warped frame
    f1 = {"frame": rng.uniform(-1, 1, (1, c, s, s)).astype(np.float32)} if models.needs_frame else {}
    f8 = {"frame": rng.uniform(-1, 1, (8, c, s, s)).astype(np.float32)} if models.needs_frame else {}
    it = dict(min_iters=5, min_seconds=0.3, warmup=1) if quick else {}
    src = models.source(img1)
    res = {"backend": backend, "threads": threads, "load_s": round(load_s, 3)}
    if models.config.has_encoder:
        res["encoder"] = _stats(time_calls(lambda: models.source(img1), **it))
    res["generator"] = _stats(time_calls(lambda: models.generate(src, p1, **f1), **it))
    res["regressor"] = _stats(time_calls(lambda: models.regress(img1), **it))
    it8 = dict(min_iters=3, min_seconds=0.3, warmup=1) if quick else dict(min_iters=5, min_seconds=2.0, warmup=1)
    g8 = _stats(time_calls(lambda: models.generate(src, p8, **f8), **it8))
    r8 = _stats(time_calls(lambda: models.regress(img8), **it8))
    res["generator"]["batch8_fps"] = 8e3 / g8["median_ms"]
    res["regressor"]["batch8_fps"] = 8e3 / r8["median_ms"]
    if models.needs_frame:
        res["geometry"] = _stats(time_calls(_engine_frame(models, renderer="warp-only"), **it))
        res["geometry+head"] = _stats(time_calls(_engine_frame(models, head=True, renderer="warp-only"), **it))
        res["engine"] = _stats(time_calls(_engine_frame(models), **it))
        res["engine+head"] = _stats(time_calls(_engine_frame(models, head=True), **it))
    res["peak_rss_mb"] = _peak_mb() - rss0
    res["peak_rss_exact"] = exact_peak
    res["provider"] = getattr(models.runner, "providers", [backend])[0]
    return res


def _engine_frame(models, out: int = 512, head: bool = False, renderer: str = "model"):
    """One whole frame of ``engine.animator`` at ``out`` px, framed as the product frames a portrait, p
    changing every frame as when driven: with ``renderer`` "model" the geometry, the generator and its
    layer blended at full resolution; "warp-only" the same without the network (the geometry: target
    mesh, backward map, drawn mouth, the flow carried to the output, the warp and blend there). A
    synthetic portrait: the blendshape model's mean mesh on a patterned 720 px photo."""
    from engine.animator import Animator
    from engine.blendshapes import load_default_face_model
    fm = load_default_face_model()
    side = 720
    lm = fm.instantiate(np.zeros(fm.n_params)).astype(np.float64) * 400 + (160, 160, 0)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
    photo = np.stack([128 + 60 * np.sin(xx / 9), 128 + 60 * np.cos(yy / 7), 128 + 40 * np.sin((xx + yy) / 13)], -1)
    anim = Animator(models, output_size=out, renderer=renderer)
    anim.set_source(np.clip(photo, 0, 255).astype(np.uint8), landmarks=lm)
    base, names = anim.source.params.copy(), anim.param_names
    pose = np.array([10.0, 5.0, 5.0, 0.1, 0.05, 0.05]) if head else None
    t = [0]

    def frame():
        t[0] += 1
        p = base.copy()
        for name in ("jaw_open", "lips_part"):
            if name in names:
                p[names.index(name)] = 0.5 + 0.5 * np.sin(t[0] / 4.0)
        anim.animate(p, pose=pose)
    return frame


# ================================================================================================ FLOPs

def count_flops(cfg) -> dict:
    """FLOPs per frame (batch 1) of the trained modules, and of the fused modules that are exported."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from engine.torch_backend import FrameGenerator
    from engine.models import Discriminator, build_generator
    G, D = build_generator(cfg).eval(), Discriminator(cfg).eval()
    x = torch.zeros(1, 3, cfg.image_size, cfg.image_size)
    p = torch.zeros(1, cfg.n_params)

    def flops(fn):
        with torch.no_grad(), FlopCounterMode(display=False) as fc:
            fn()
        return int(fc.get_total_flops())

    feats = G.encode(x)
    frame = torch.zeros(1, cfg.frame_channels, cfg.image_size, cfg.image_size)
    fused = FrameGenerator(G, fused=True).eval()
    out = {"generator": flops(lambda: G.decode(frame, feats, p)),
           "generator_exported": flops(lambda: fused(frame, p, *feats)),
           "regressor": flops(lambda: D.regress(x))}
    if cfg.has_encoder:
        out["encoder"] = flops(lambda: G.encode(x))
    return out


# ============================================================================================== the run

def machine() -> dict:
    info = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version()}
    try:
        flags = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and "cpu" not in info.get("model", ""):
                    info["model"] = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = line
                    break
        info["simd"] = " ".join(x for x in ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "f16c")
                                if f" {x}" in flags)
    except OSError:
        pass
    from engine.inference import physical_cores
    info["physical_cores"] = physical_cores()
    import onnxruntime
    import torch
    info["torch"] = torch.__version__
    info["onnxruntime"] = onnxruntime.__version__
    return info


def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def prepare(profile: str, checkpoint: str | None, workdir: Path, backends, log, images=None) -> dict:
    """A checkpoint (random weights unless given) and the exports the backends need."""
    import torch
    from engine.checkpoint import read_metadata, save_checkpoint
    from engine.config import get_profile
    from engine.models import Discriminator, build_generator
    if checkpoint:
        cfg = read_metadata(checkpoint)["config"]
        if cfg.name != profile:
            raise ValueError(f"--checkpoint is of profile {cfg.name!r}, not {profile!r}")
        ck = Path(checkpoint)
    else:
        cfg = get_profile(profile)
        torch.manual_seed(0)
        ck = save_checkpoint(workdir / f"{profile}-ck", cfg, build_generator(cfg), Discriminator(cfg))
    paths = {"torch": ck, "torch-fused": ck}
    int8 = None
    if "tensorrt" in backends:
        from .tensorrt import export_tensorrt, unavailable_reason
        if unavailable_reason() is None:
            export_tensorrt(ck, workdir / f"{profile}-trt", verify=False, log=log)
            paths["tensorrt"] = workdir / f"{profile}-trt"
    if any(b.startswith("onnxruntime") for b in backends):
        from .onnx import export_onnx
        out = workdir / f"{profile}-onnx"
        want8 = "onnxruntime-int8" in backends
        m = export_onnx(ck, out, verify=False, int8=want8, images=images, log=lambda *a, **k: None)
        int8 = m.get("int8")
        paths["onnxruntime"] = out
        if want8:
            paths["onnxruntime-int8"] = out
    return {"config": cfg, "paths": paths, "int8": int8}


def run_child(path: Path, backend: str, threads: int | None, quick: bool) -> dict:
    spec = json.dumps({"path": str(path), "backend": backend, "threads": threads, "quick": quick})
    env = dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "exporters.bench", "--child", spec], capture_output=True,
                          text=True, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode or not lines:
        err = (proc.stderr.strip().splitlines() or ["failed"])[-1]
        return {"backend": backend, "error": err}
    return json.loads(lines[-1])


def bench(profiles=None, backends=DEFAULT_BACKENDS, checkpoint: str | None = None,
          threads: int | None = None, peak_gflops: float = PEAK_GFLOPS, quick: bool = False,
          images=None, log=print) -> dict:
    """``profiles``: None for the checkpoint's own (with ``checkpoint``), else ``DEFAULT_PROFILES``."""
    from engine.config import get_profile
    if profiles is None:
        if checkpoint:
            from engine.checkpoint import read_metadata
            profiles = [read_metadata(checkpoint)["config"].name]
        else:
            profiles = DEFAULT_PROFILES
    for p in profiles:
        get_profile(p)
    for b in backends:
        if b not in ALL_BACKENDS:
            raise ValueError(f"unknown backend {b!r}; choose from {', '.join(ALL_BACKENDS)}")
    if checkpoint and len(profiles) != 1:
        raise ValueError("--checkpoint benchmarks one profile: give it with --profiles NAME")
    report = {"machine": machine(), "load_before": _load(), "peak_gflops": peak_gflops,
              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "profiles": {}}
    with tempfile.TemporaryDirectory(prefix="slidergan-bench-") as tmp:
        for profile in profiles:
            prep = prepare(profile, checkpoint, Path(tmp), backends, log, images)
            cfg = prep["config"]
            flops = count_flops(cfg)
            entry = {"config": cfg.to_dict(), "flops": flops,
                     "limit_ms": {k: v / peak_gflops / 1e6 for k, v in flops.items()}, "backends": {}}
            if prep["int8"]:
                entry["int8_quality"] = prep["int8"]
            for b in backends:
                if b not in prep["paths"]:
                    from .tensorrt import unavailable_reason
                    entry["backends"][b] = {"backend": b, "error": unavailable_reason() or "not available"}
                    log(f"{profile:<9} {b:<12} skipped: {entry['backends'][b]['error']}")
                    continue
                log(f"{profile:<9} {b:<12} measuring ...", end="\r" if sys.stdout.isatty() else "\n")
                entry["backends"][b] = run_child(prep["paths"][b], b, threads, quick)
            _ratios(entry)
            report["profiles"][profile] = entry
    report["load_after"] = _load()
    return report


def _ratios(entry: dict) -> None:
    ref = entry["backends"].get("torch")
    for b, r in entry["backends"].items():
        if "error" in r:
            continue
        for part in ("encoder", "generator", "regressor"):
            if part not in r:
                continue
            lim = entry["limit_ms"].get(part)
            if lim:
                r[part]["x_limit"] = r[part]["median_ms"] / lim
            if ref and "error" not in ref and part in ref:
                r[part]["speedup_vs_torch"] = ref[part]["median_ms"] / r[part]["median_ms"]


def format_table(report: dict) -> str:
    m = report["machine"]
    head = (f"machine: {m.get('model', m['cpu'])}, {m['physical_cores']} physical cores ({m.get('simd', '')}); "
            f"torch {m['torch']}, onnxruntime {m['onnxruntime']}; load average {report['load_before']} -> "
            f"{report.get('load_after')}; limit = FLOPs / {report['peak_gflops']:g} GFLOP/s")
    cols = ("profile", "backend", "part", "GFLOP", "median ms", "p95 ms", "b8 /s", "vs torch", "x limit", "peak MB")
    rows, notes = [], []
    for profile, e in report["profiles"].items():
        for b, r in e["backends"].items():
            if "error" in r:
                notes.append(f"{profile} {b}: not measured: {r['error']}")
                continue
            for part in ("geometry", "geometry+head", "engine", "engine+head", "encoder", "generator", "regressor"):
                if part not in r:
                    continue
                x = r[part]
                rows.append((profile, b, part + (" (once)" if part == "encoder" else ""),
                             f"{e['flops'][part] / 1e9:.3f}" if part in e["flops"] else "-", f"{x['median_ms']:.2f}", f"{x['p95_ms']:.2f}",
                             f"{x['batch8_fps']:.1f}" if "batch8_fps" in x else "",
                             f"{x['speedup_vs_torch']:.2f}x" if "speedup_vs_torch" in x else "",
                             f"{x['x_limit']:.2f}" if "x_limit" in x else "",
                             f"{r['peak_rss_mb']:.0f}" if part == "generator" else ""))
    widths = [max(len(str(c)), *(len(str(row[i])) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda row: "  ".join(str(v).ljust(w) if i < 3 else str(v).rjust(w)  # noqa: E731
                                 for i, (v, w) in enumerate(zip(row, widths)))
    for profile, e in report["profiles"].items():
        q = e.get("int8_quality")
        if q:
            notes.append(f"{profile} int8 vs fp32 ({q['calibration']}): generator max abs "
                         f"{q['generator']['max_abs_diff']:.3f}, PSNR >= {q['generator']['psnr_db_min']:.1f} dB; "
                         f"regressor relative error {q['regressor']['relative_error_max']:.3f}")
    out = [head, line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows] + notes
    return "\n".join(out)


# ================================================================================================= CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profiles", nargs="+", help=f"model profiles (default: the --checkpoint's, else "
                   f"{' '.join(DEFAULT_PROFILES)})")
    p.add_argument("--backends", nargs="+", default=list(DEFAULT_BACKENDS),
                   help=f"from {', '.join(ALL_BACKENDS)} (default: %(default)s)")
    p.add_argument("--checkpoint", help="a trained checkpoint (one profile) instead of random weights")
    p.add_argument("--threads", type=int, help="intra-op threads (default: physical cores)")
    p.add_argument("--peak-gflops", type=float, default=PEAK_GFLOPS, help="fp32 machine limit (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="few iterations (smoke test, not for figures)")
    p.add_argument("--images", help="real images to calibrate the int8 models (onnxruntime-int8)")
    p.add_argument("--json", help="write the full report here (atomically)")


def main(args) -> int:
    report = bench(args.profiles, args.backends, args.checkpoint, args.threads, args.peak_gflops, args.quick,
                   args.images)
    print(format_table(report))
    if args.json:
        from engine.atomic import write_text_atomic
        write_text_atomic(args.json, json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def _child_main(spec: str) -> int:
    s = json.loads(spec)
    res = measure(s["path"], s["backend"], s.get("threads"), s.get("quick", False))
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2]))
    ap = argparse.ArgumentParser(prog="python -m exporters.bench")
    add_arguments(ap)
    sys.exit(main(ap.parse_args()))
