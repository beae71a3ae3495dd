"""Start-up: how long the commands take before (and around) their work, what they hold in memory, and
whether they load torch. Each command runs in a fresh process, with the ONNX graphs' cache empty ("cold":
the checkpoint and dlib's network are converted, which needs torch) and then filled ("warm": what every
later start is). serve is timed to its page answering, then stopped (SIGINT).

    python benchmarks/bench_startup.py [--runs 3] [--json out/bench_startup.json]

Commands (the embedded default model; portrait s0, driver d3, both from ../shared/data):
``edit`` one preset; ``render`` 2 s of the driver; ``render`` 2 s of a speech recording (the audio model);
``serve`` to its page.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from benchmarks.bench_stream import machine  # noqa: E402

# the command in this process's interpreter, saying at exit whether torch was imported
WRAPPER = ("import atexit, os, sys; atexit.register(lambda: os.write(2, ('\\nTORCH_IMPORTED=%s\\n' % "
           "('torch' in sys.modules)).encode())); from engine.cli import main; sys.exit(main(sys.argv[1:]))")


def commands(data: Path, out: Path, port: int) -> dict[str, list[str]]:
    speech = sorted((data / "audio").glob("*.wav"))
    if not (data / "portraits" / "s0.jpg").is_file() or not (data / "driving" / "d3.mp4").is_file() or not speech:
        raise SystemExit(f"the shared data (portraits/s0.jpg, driving/d3.mp4, audio/*.wav) is not under {data}: --data")
    speech = speech[0]
    return {
        "edit": ["edit", "--source", str(data / "portraits" / "s0.jpg"), "-o", str(out / "edit.png"),
                 "--preset", "happy"],
        "render video 2 s": ["render", "--source", str(data / "portraits" / "s0.jpg"), "--driver",
                             str(data / "driving" / "d3.mp4"), "-o", str(out / "video.mp4"), "--max-seconds", "2",
                             "--quiet"],
        "render speech 2 s": ["render", "--source", str(data / "portraits" / "s0.jpg"), "--driver", str(speech),
                              "-o", str(out / "speech.mp4"), "--max-seconds", "2", "--quiet"],
        "serve (to its page)": ["serve", "--port", str(port)],
    }


def run_once(args: list[str], env: dict, serve_url: str | None) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", WRAPPER, *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = None
    if serve_url is not None:
        while proc.poll() is None and time.perf_counter() - t0 < 120:
            try:
                with urllib.request.urlopen(serve_url, timeout=1) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - t0
                        break
            except OSError:
                time.sleep(0.05)
        time.sleep(3.0)             # what it warms after the page answers (the audio model) counts as loaded
        proc.send_signal(signal.SIGINT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    torch = "TORCH_IMPORTED=True" in err
    if serve_url is None and proc.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({proc.returncode}): {err[-2000:]}")
    return {"seconds": round(ready if serve_url is not None else wall, 3), "peak_rss_mb": round(usage.ru_maxrss / 1024),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "torch_imported": torch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(SHARED), help="the shared data folder")
    ap.add_argument("--runs", type=int, default=3, help="warm runs per command (median reported)")
    ap.add_argument("--port", type=int, default=8797)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        tmp = Path(tmp)
        for name, cmd in commands(Path(args.data), tmp, args.port).items():
            cache = tmp / f"cache-{len(results)}"
            env = {**os.environ, "SLIDERGAN_CACHE_DIR": str(cache)}
            url = f"http://127.0.0.1:{args.port}/" if cmd[0] == "serve" else None
            cold = run_once(cmd, env, url)
            warm = [run_once(cmd, env, url) for _ in range(args.runs)]
            med = {k: statistics.median(r[k] for r in warm) for k in ("seconds", "peak_rss_mb", "cpu_s")}
            results[name] = {"cold": cold, "warm": {**med, "torch_imported": any(r["torch_imported"] for r in warm),
                                                    "runs": warm}}
            print(f"{name:22s} cold {cold['seconds']:6.2f} s {cold['peak_rss_mb']:5d} MB torch {cold['torch_imported']!s:5s}"
                  f" | warm {med['seconds']:6.2f} s {med['peak_rss_mb']:5.0f} MB cpu {med['cpu_s']:5.2f} s "
                  f"torch {results[name]['warm']['torch_imported']}", flush=True)
    doc = {"machine": machine(), "runs": args.runs, "results": results}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(doc, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
