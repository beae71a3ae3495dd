"""Render speed against the driver's frame size: the same driving clip at 512 px, in a 1280x720
frame and in a 720x1080 (phone, portrait) frame, rendered one after another in one run.

The face is the same size in all three (the clip is not scaled): the wider frames are the clip
with its sides (or top and bottom) filled by a blurred, stretched copy of itself (the "blur fill" of
phone videos), so the decoder has real picture to decode but there is no second face. All three are
encoded the same way (H.264, x264 preset veryfast, crf 20, with the clip's audio). Each is rendered
with ``streaming.render.render`` as ``slidergan render`` does (the embedded default model, output
512 px, onnxruntime at 1 intra-op thread, the three-stage pipeline), ``--rounds`` times in turn;
reported: x real time (video seconds / wall seconds; best and median of the rounds), CPU seconds
per stage, and the 1-minute load average before and after, as the CPU is shared. First, the drive
stage alone (decode + face tracking, as render runs it) per driver: CPU ms per frame, which other
load on the machine disturbs much less than wall time.

    python benchmarks/bench_render_sizes.py [--video ../shared/data/driving/d3.mp4] [--seconds 10]
        [--rounds 2] [--portrait ../shared/data/portraits/s0.jpg] [--json out/bench_render_sizes.json]

Targets (issue 16; 2-core CPU): >= 2x real time at 1280x720, >= 3x at 512 px.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from benchmarks.bench_stream import machine  # noqa: E402  (after the path insert)

TARGETS = {"native": 3.0, "1280x720": 2.0}   # "native": the clip's own size (d3: 512 px)


def blur_fill(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    """``frame`` unscaled in the middle of a ``w`` x ``h`` frame whose rest is a blurred stretched copy."""
    import cv2
    fh, fw = frame.shape[:2]
    back = cv2.resize(frame, (max(w, fw), max(h, fh)), interpolation=cv2.INTER_LINEAR)
    back = cv2.GaussianBlur(back, (0, 0), 24)[:h, :w]
    out = np.ascontiguousarray(back)
    x0, y0 = (w - fw) // 2, (h - fh) // 2
    xs, ys = max(0, -x0), max(0, -y0)
    out[max(0, y0):max(0, y0) + min(fh, h), max(0, x0):max(0, x0) + min(fw, w)] = \
        frame[ys:ys + min(fh, h), xs:xs + min(fw, w)]
    return out


def make_drivers(video: Path, seconds: float, tmp: Path) -> dict[str, Path]:
    """The clip's first ``seconds`` at its own size and blur-filled to 1280x720 and 720x1080."""
    import av

    from engine.video import read_frames, video_info
    info = video_info(video)
    frames = [f for f, _ in read_frames(video, end=seconds)]
    pcm = None
    if info.has_audio:
        from streaming.media import load_audio
        pcm = load_audio(video, 48000, 2, duration=len(frames) / info.fps)
    sizes = {"native": (info.width, info.height), "1280x720": (1280, 720), "720x1080": (720, 1080)}
    out = {}
    for name, (w, h) in sizes.items():
        path = tmp / f"driver_{name}.mp4"
        rate = Fraction(info.fps).limit_denominator(1001)
        with av.open(str(path), "w") as c:
            vs = c.add_stream("libx264", rate=rate)
            vs.width, vs.height, vs.pix_fmt = w, h, "yuv420p"
            vs.codec_context.options = {"crf": "20", "preset": "veryfast"}
            for i, f in enumerate(frames):
                img = f if (w, h) == (info.width, info.height) else blur_fill(f, w, h)
                vf = av.VideoFrame.from_ndarray(img, format="rgb24")
                vf.pts, vf.time_base = i, 1 / rate
                for p in vs.encode(vf):
                    c.mux(p)
            for p in vs.encode(None):
                c.mux(p)
        if pcm is not None:
            path = _with_audio(path, pcm, tmp / f"driver_{name}_a.mp4", rate)
        out[name] = path
    return out


def _with_audio(video: Path, pcm: np.ndarray, out: Path, rate) -> Path:
    """Remux ``video`` with ``pcm`` (int16 (n, 2), 48 kHz) as AAC (the streams' packets copied)."""
    import av
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        vout = dst.add_stream_from_template(vin)
        aout = dst.add_stream("aac", rate=48000)
        aout.layout = "stereo"
        for pkt in src.demux(vin):
            if pkt.dts is None:
                continue
            pkt.stream = vout
            dst.mux(pkt)
        for s in range(0, len(pcm), 1024):
            af = av.AudioFrame.from_ndarray(np.ascontiguousarray(pcm[s:s + 1024]).reshape(1, -1), format="s16",
                                            layout="stereo")
            af.sample_rate, af.pts, af.time_base = 48000, s, Fraction(1, 48000)
            for p in aout.encode(af):
                dst.mux(p)
        for p in aout.encode(None):
            dst.mux(p)
    return out


def drive_cost(path: Path, size: int = 128) -> dict:
    """The drive stage alone, as render runs it: decode, convert (only what the tracker asks for) and
    track the face. CPU time of the whole process (MediaPipe's and the decoder's threads included)
    per frame: a figure the machine's other load disturbs much less than wall time."""
    import inspect

    from engine.face import FaceTracker
    from engine.video import read_frames
    lazy = "lazy" in inspect.signature(read_frames).parameters    # (older trees: whole RGB frames)
    # as render tracks: crops cut only when read (older trees: every frame's)
    crops = {"lazy_crop": True} if "lazy_crop" in inspect.signature(FaceTracker).parameters else {}
    with FaceTracker(size=size, max_faces=1, **crops) as tr:
        tr.process(np.zeros((64, 64, 3), np.uint8), 0.0)              # graphs started
        kw = {"lazy": True} if lazy else {}
        n, ok = 0, 0
        c0, w0 = time.process_time(), time.perf_counter()
        for frame, t in read_frames(path, **kw):
            ok += tr.process(frame, t).ok
            n += 1
        cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"frames": n, "faces": ok, "cpu_ms_per_frame": round(cpu / n * 1000, 2),
            "wall_ms_per_frame": round(wall / n * 1000, 2), "lazy_frames": lazy}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", default=str(SHARED / "driving" / "d3.mp4"))
    ap.add_argument("--portrait", default=str(SHARED / "portraits" / "s0.jpg"))
    ap.add_argument("--checkpoint", default=None, help="model folder (default: the embedded default model)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--size", type=int, default=512, help="output size (default 512, as render)")
    ap.add_argument("--drive-only", action="store_true", help="measure the drive stage only (no renders)")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_render_sizes.json"))
    args = ap.parse_args()
    from engine.animator import load_models
    from engine.video import video_info
    from streaming.render import render
    out: dict = {"machine": machine(), "backend": args.backend, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "video": args.video, "portrait": args.portrait, "seconds": args.seconds, "size": args.size,
                 "nice": os.nice(0), "targets_x_real_time": TARGETS, "load_avg_1min_before": os.getloadavg()[0]}
    models = load_models(args.checkpoint, backend=args.backend, threads=1)   # as `slidergan render`
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        drivers = make_drivers(Path(args.video), args.seconds, tmp)
        # one render first, untimed: model and MediaPipe graphs warm, files in the page cache
        if not args.drive_only:
            render(args.portrait, next(iter(drivers.values())), tmp / "warm.mp4", models=models, size=args.size,
                   max_seconds=1.0, progress=False)
        drive: dict[str, list] = {}
        for r in range(args.rounds):
            for name, path in drivers.items():
                d = drive_cost(path)
                drive.setdefault(name, []).append(d)
                print(f"round {r} drive stage {name:>9}: {d['cpu_ms_per_frame']} ms CPU / frame "
                      f"({d['wall_ms_per_frame']} ms wall), {d['faces']}/{d['frames']} faces", flush=True)
        out["drive_stage"] = {k: {"cpu_ms_per_frame_min": min(x["cpu_ms_per_frame"] for x in v),
                                  "runs": v} for k, v in drive.items()}
        for r in range(0 if args.drive_only else args.rounds):
            for name, path in drivers.items():
                load0 = os.getloadavg()[0]
                res = render(args.portrait, path, tmp / f"out_{name}.mp4", models=models, size=args.size,
                             progress=False)
                cpu = res.cpu["process"]     # the render's own, as its wall time (the portrait's preparation left out)
                info = video_info(path)
                row = {"round": r, "driver": f"{info.width}x{info.height}", "frames": res.frames,
                       "seconds_of_video": round(res.duration, 2), "wall_s": round(res.seconds, 2),
                       "x_real_time": round(res.speed, 2), "cpu_cores_used": round(cpu / res.seconds, 2),
                       "cpu_s_per_stage": res.cpu, "faces_missing": res.faces_missing,
                       "load_avg_1min_at_start": round(load0, 2), "load_avg_1min_at_end": round(os.getloadavg()[0], 2)}
                runs.setdefault(name, []).append(row)
                print(f"round {r} driver {row['driver']:>9}: {res.frames} frames ({row['seconds_of_video']} s) in "
                      f"{row['wall_s']} s = {row['x_real_time']}x real time, {row['cpu_cores_used']} cores, "
                      f"stage CPU s {res.cpu}, faces missing {res.faces_missing}; load "
                      f"{row['load_avg_1min_at_start']}->{row['load_avg_1min_at_end']}", flush=True)
    summary = {}
    for name, rows in runs.items():
        xs = [r["x_real_time"] for r in rows]
        target = TARGETS.get(name)
        summary[name] = {"driver": rows[0]["driver"], "x_real_time_best": max(xs),
                         "x_real_time_median": round(statistics.median(xs), 2), "target": target}
        print(f"{rows[0]['driver']:>9}: best {max(xs)}x, median {statistics.median(xs):.2f}x real time"
              + (f" (target {target}x)" if target else ""))
    out.update({"runs": runs, "summary": summary, "load_avg_1min_after": os.getloadavg()[0]})
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    tmp_json = Path(args.json).with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(out, indent=2))
    os.replace(tmp_json, args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
