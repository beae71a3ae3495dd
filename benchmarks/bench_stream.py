"""Streaming and offline-render benchmark.

1. WebRTC: ``slidergan serve`` runs in its own process; a real aiortc client (this process) sends a
   640 x 480, 30 fps driving video over loopback and receives the animated 512 x 512 stream. Reported:
   sustained received fps over the measurement window, and the server's own figures: p50/p95 latency
   from a driver frame received (decoded) to its animated frame handed to the encoder, render time,
   frames dropped as stale.
2. Offline: ``render`` of a 10 s, 30 fps driving video to H.264 + AAC, as x real time.

Targets (issue 5; realtime profile, onnxruntime, 2-core CPU): >= 25 fps sustained, p95 <= 80 ms;
render >= 2x real time. The machine's load (1-minute load average, before and during) is recorded:
on a shared machine the figures are only as good as the CPU left to them.

    python benchmarks/bench_stream.py [--checkpoint DIR] [--backend onnxruntime] [--seconds 20]
        [--video ../shared/data/driving/d3.mp4] [--portrait ../shared/data/portraits/s0.jpg]
        [--json out/bench_stream.json]

Without --checkpoint: the embedded default model if present, else a random-weight --profile
checkpoint (speed does not depend on the weights). Without shared data: synthetic faces.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from streaming.client import serve_process  # noqa: E402  (after the path insert)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform()}


def make_checkpoint(args, tmp: Path) -> Path:
    if args.checkpoint:
        return Path(args.checkpoint)
    from engine.animator import DEFAULT_MODEL_DIR
    if (DEFAULT_MODEL_DIR / "model.safetensors").exists():
        return DEFAULT_MODEL_DIR
    import torch

    from engine.checkpoint import save_checkpoint
    from engine.config import get_profile
    from engine.models import Discriminator, build_generator
    cfg = get_profile(args.profile)
    torch.manual_seed(0)
    return save_checkpoint(tmp / f"random-{cfg.name}", cfg, build_generator(cfg), Discriminator(cfg))


def driving_frames(args, n: int) -> list[np.ndarray]:
    """640 x 480 frames: the driving video scaled to 480 high and centred, or synthetic faces."""
    import cv2
    video = Path(args.video) if args.video else SHARED / "driving" / "d3.mp4"
    frames = []
    if video.exists():
        from engine.video import read_frames
        for rgb, _ in read_frames(video, max_frames=n):
            h, w = rgb.shape[:2]
            k = 480 / h
            small = cv2.resize(rgb, (int(round(w * k)), 480), interpolation=cv2.INTER_AREA)[:, :640]
            canvas = np.zeros((480, 640, 3), np.uint8)
            x0 = (640 - small.shape[1]) // 2
            canvas[:, x0:x0 + small.shape[1]] = small
            frames.append(canvas)
    else:
        from tests.streamkit import synth_driving_frames
        frames = synth_driving_frames(min(n, 60))
    return frames


def portrait_path(args, tmp: Path) -> Path:
    p = Path(args.portrait) if args.portrait else SHARED / "portraits" / "s0.jpg"
    if p.exists():
        return p
    import cv2

    from tests.streamkit import synth_portrait
    out = tmp / "portrait.png"
    cv2.imwrite(str(out), synth_portrait(0, 512)[:, :, ::-1])
    return out


async def stream_bench(url: str, frames, seconds: float, warmup: float, server_pid: int, motion=None,
                       framing=None) -> dict:
    from streaming.client import StreamClient
    async with StreamClient(url, frames=frames, fps=30, mode="relative", decode=False, motion=motion,
                            framing=framing) as c:
        await c.wait_frames(5, timeout=60)
        await asyncio.sleep(warmup)
        n0, t0 = len(c.frame_times), time.monotonic()
        cpu0 = _cpu_seconds(server_pid)
        cpu_self0 = time.process_time()
        load0 = os.getloadavg()[0]
        await asyncio.sleep(seconds)
        n1, t1 = len(c.frame_times), time.monotonic()
        cpu1 = _cpu_seconds(server_pid)
        cpu_self1 = time.process_time()
        st = await c.request({"type": "status"}, "stats")
        sent = c.source.sent
    return {
        "received_fps": round((n1 - n0) / (t1 - t0), 2), "window_s": round(t1 - t0, 1),
        "server_fps": st["fps"], "latency_p50_ms": st["latency_ms"], "latency_p95_ms": st["latency_p95_ms"],
        "render_ms_median": st["render_ms"], "face_tracking_ms": st.get("track_ms"),
        "frames_in": st["frames_in"], "frames_used": st["frames_used"], "frames_dropped": st["frames_dropped"],
        "frames_superseded": st.get("frames_superseded"),
        "frames_sent_by_client": sent, "face": st.get("face"),
        "server_cpu_cores": round((cpu1 - cpu0) / (t1 - t0), 2),
        "client_cpu_cores": round((cpu_self1 - cpu_self0) / (t1 - t0), 2),
        "load_avg_1min_at_start": round(load0, 2), "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "latency_window": "the server's last 300 frames",
    }


def render_bench(ckpt: Path, backend: str, portrait: Path, tmp: Path, args) -> dict:
    from engine.animator import load_models
    from streaming.render import render
    video = Path(args.video) if args.video else SHARED / "driving" / "d3.mp4"
    if not video.exists():
        from tests.streamkit import synth_driving_frames, tone, write_video
        video = write_video(tmp / "drive.mp4", synth_driving_frames(300, w=512, h=512, face=400), 30,
                            audio=tone(10.0))
    models = load_models(ckpt, backend=backend, threads=1)  # as `slidergan render` (--threads 1)
    load0 = os.getloadavg()[0]
    res = render(portrait, video, tmp / "render.mp4", models=models, max_seconds=10.0, progress=False)
    # the render's own CPU over its own wall time (both leave out the portrait's preparation)
    return {"video": str(video), "frames": res.frames, "seconds_of_video": round(res.duration, 2),
            "wall_s": round(res.seconds, 2), "x_real_time": round(res.speed, 2), "cpu_s": res.cpu["process"],
            "cpu_cores_used": round(res.cpu["process"] / res.seconds, 2),
            "load_avg_1min_at_start": round(load0, 2), "load_avg_1min_at_end": round(os.getloadavg()[0], 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--profile", default="realtime-small", help="profile of the random checkpoint (no --checkpoint)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--video", default=None)
    ap.add_argument("--portrait", default=None)
    ap.add_argument("--seconds", type=float, default=15.0, help="measurement window of the stream")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--skip-stream", action="store_true")
    ap.add_argument("--motion", choices=["expression", "head"], default=None,
                    help="what the webcam moves (default: the server's, head motion where the model can)")
    from engine.animator import FRAMINGS
    ap.add_argument("--framing", choices=FRAMINGS, default=None,
                    help="what the stream shows: the square round the face (the server's default) or the whole photo")
    ap.add_argument("--skip-render", action="store_true")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_stream.json"))
    args = ap.parse_args()
    out: dict = {"machine": machine(), "backend": args.backend, "load_avg_1min_before": os.getloadavg()[0],
                 "time": time.strftime("%Y-%m-%d %H:%M:%S")}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ckpt = make_checkpoint(args, tmp)
        portrait = portrait_path(args, tmp)
        out["checkpoint"] = str(ckpt)
        out["portrait"] = str(portrait)
        if not args.skip_stream:
            with serve_process(["--checkpoint", str(ckpt), "--backend", args.backend, "--portraits",
                                str(portrait), "--max-sessions", "1"], tmp / "server.log") as (url, proc):
                from streaming.server import configure_ice
                configure_ice("loopback")
                frames = driving_frames(args, 300)
                out["stream"] = asyncio.run(stream_bench(url.rstrip("/"), frames, args.seconds, args.warmup, proc.pid,
                                                         args.motion, args.framing))
                out["stream"]["motion"] = args.motion or "server default"
                out["stream"]["framing"] = args.framing or "square"
                out["stream"]["targets"] = {"fps": 30, "latency_p95_ms": 60}   # issue 12
            s = out["stream"]
            print(f"stream: {s['received_fps']} fps received (server {s['server_fps']}), latency p50 "
                  f"{s['latency_p50_ms']} ms, p95 {s['latency_p95_ms']} ms, render {s['render_ms_median']} ms, "
                  f"dropped {s['frames_dropped']}/{s['frames_in']}; server {s['server_cpu_cores']} cores, "
                  f"client {s['client_cpu_cores']} cores; load {s['load_avg_1min_at_start']}"
                  f"->{s['load_avg_1min_at_end']}", flush=True)
        if not args.skip_render:
            r = render_bench(ckpt, args.backend, portrait, tmp, args)
            r["target_x_real_time"] = 3.0          # issue 12
            out["render"] = r
            print(f"render: {r['frames']} frames ({r['seconds_of_video']} s) in {r['wall_s']} s = "
                  f"{r['x_real_time']}x real time, {r['cpu_cores_used']} cores; load "
                  f"{r['load_avg_1min_at_start']}->{r['load_avg_1min_at_end']}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
