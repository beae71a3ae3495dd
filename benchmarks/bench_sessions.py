"""Memory and threads of ``slidergan serve`` over many webcam sessions in a row.

``slidergan serve`` runs in its own process on loopback (``--ice loopback``); this process opens N
webcam sessions one after the other with a real aiortc client (a 640 x 480, 30 fps driving video:
``d3.mp4`` from the shared data, else synthetic cartoon faces), waits until each has sent back
``--frames`` animated frames with the face tracked, closes it and waits until the server has freed
it. The server's resident memory (VmRSS) and thread count (from /proc) are taken at baseline (server
up, no session yet), after the first session (the warm-up: codecs, pools, caches are made then) and
after each later one.

Done when RSS after the last session is within 100 MB of RSS after the first, and the thread count
after the last is the count after the first (the server's pools are made once; a session adds no
thread that outlives it).

    python benchmarks/bench_sessions.py [--sessions 50] [--frames 30] [--checkpoint DIR]
        [--backend onnxruntime] [--json out/bench_sessions.json]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_stream import driving_frames, machine, make_checkpoint, portrait_path  # noqa: E402
from streaming.client import serve_process  # noqa: E402


def proc_status(pid: int) -> dict:
    """VmRSS (MB) and Threads of a process, from /proc/PID/status."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_mb"] = round(int(line.split()[1]) / 1024.0, 1)
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    return out


def live_sessions(url: str) -> int:
    with urllib.request.urlopen(url + "api/sessions", timeout=10) as r:
        return len(json.loads(r.read())["sessions"])


async def one_session(url: str, frames, n_frames: int, timeout: float) -> dict:
    from streaming.client import StreamClient
    t0 = time.monotonic()
    async with StreamClient(url, frames=frames, fps=30, mode="relative", decode=False, audio=True) as c:
        await c.wait_frames(n_frames, timeout=timeout)
        st = await c.request({"type": "status"}, "stats")
    # the server frees the session (peer connection, tasks, face tracker) after the client leaves
    deadline = time.monotonic() + 30
    while live_sessions(url):
        if time.monotonic() > deadline:
            raise RuntimeError("the server kept a closed session for 30 s")
        await asyncio.sleep(0.1)
    return {"seconds": round(time.monotonic() - t0, 2), "frames_in": st["frames_in"],
            "frames_out": st["frames_out"], "face": st.get("face")}


async def run(url: str, pid: int, frames, args) -> dict:
    await asyncio.sleep(1.0)
    baseline = proc_status(pid)
    per = []
    for i in range(args.sessions):
        s = await one_session(url, frames, args.frames, args.timeout)
        await asyncio.sleep(args.settle)
        s.update(proc_status(pid))
        s["session"] = i + 1
        per.append(s)
        print(f"session {i + 1:3d}: {s['seconds']:5.1f} s, {s['frames_out']:4d} frames out, face {s['face']}, "
              f"rss {s['rss_mb']:7.1f} MB, threads {s['threads']}", flush=True)
    first, last = per[0], per[-1]
    return {"baseline": baseline, "after_first": {"rss_mb": first["rss_mb"], "threads": first["threads"]},
            "after_last": {"rss_mb": last["rss_mb"], "threads": last["threads"]},
            "rss_growth_first_to_last_mb": round(last["rss_mb"] - first["rss_mb"], 1),
            "rss_growth_per_session_mb": round((last["rss_mb"] - first["rss_mb"]) / max(1, len(per) - 1), 2),
            "threads_back_to_after_first": last["threads"] <= first["threads"],
            "faces_tracked": sum(s["face"] in ("ok", "multiple_faces") for s in per), "sessions": per}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--frames", type=int, default=30, help="animated frames each session receives")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--profile", default="realtime-small", help="profile of the random checkpoint (no --checkpoint)")
    ap.add_argument("--backend", default="onnxruntime")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--video", default=None)
    ap.add_argument("--portrait", default=None)
    ap.add_argument("--timeout", type=float, default=60.0, help="seconds a session may take for its frames")
    ap.add_argument("--settle", type=float, default=0.5, help="seconds after a session closes before measuring")
    ap.add_argument("--json", default=str(ROOT / "out" / "bench_sessions.json"))
    args = ap.parse_args()
    out: dict = {"machine": machine(), "avx512": "avx512f" in Path("/proc/cpuinfo").read_text(),
                 "backend": args.backend, "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                 "load_avg_1min_before": round(os.getloadavg()[0], 2),
                 "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX")}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        ckpt = make_checkpoint(args, tmp)
        portrait = portrait_path(args, tmp)
        out.update({"checkpoint": str(ckpt), "portrait": str(portrait), "size": args.size,
                    "frames_per_session": args.frames})
        with serve_process(["--checkpoint", str(ckpt), "--backend", args.backend, "--portraits", str(portrait),
                            "--size", str(args.size), "--max-sessions", "1"], tmp / "server.log",
                           timeout=120) as (url, proc):
            from streaming.server import configure_ice
            configure_ice("loopback")
            frames = driving_frames(args, 60)
            out.update(asyncio.run(run(url, proc.pid, frames, args)))
    out["load_avg_1min_after"] = round(os.getloadavg()[0], 2)
    ok_rss = out["after_last"]["rss_mb"] - out["after_first"]["rss_mb"] <= 100.0
    ok_threads = out["threads_back_to_after_first"]
    out["done"] = bool(ok_rss and ok_threads)
    b, f, la = out["baseline"], out["after_first"], out["after_last"]
    print(f"server RSS: baseline {b['rss_mb']} MB, after the first session {f['rss_mb']} MB, after the last "
          f"({args.sessions}) {la['rss_mb']} MB: {out['rss_growth_first_to_last_mb']:+.1f} MB "
          f"({out['rss_growth_per_session_mb']:+.2f} MB a session); threads: baseline {b['threads']}, after "
          f"the first {f['threads']}, after the last {la['threads']}; faces tracked in "
          f"{out['faces_tracked']}/{args.sessions} sessions; {'DONE' if out['done'] else 'NOT DONE'}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=2))
    print(f"written: {args.json}")
    return 0 if out["done"] else 1


if __name__ == "__main__":
    sys.exit(main())
