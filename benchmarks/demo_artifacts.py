"""Make the demo artifacts: a screenshot of the browser page while a driving video (as the fake
webcam of a headless Chromium) animates a portrait, and a short side-by-side clip made with
``render``.

    python benchmarks/demo_artifacts.py [--checkpoint DIR] [--portrait IMG] [--video MP4] [--out out/demo]

Defaults: the embedded default model, ../shared/data/portraits/s0.jpg and
../shared/data/driving/d3.mp4. Writes OUT/page.png, OUT/page-preset.png, OUT/clip.mp4 (and
OUT/track.npz + its audio when the blendshape model can extract a track: the page then offers it).
Needs Chromium (/usr/bin/chromium) and playwright for the screenshot.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared" / "data"

from streaming.client import chromium_context, serve_process  # noqa: E402  (after the path insert)


def y4m_from_video(video: Path, out: Path, seconds: float = 10.0) -> Path:
    import cv2
    import numpy as np

    from engine.video import read_frames
    from tests.streamkit import write_y4m
    frames = []
    for rgb, t in read_frames(video, end=seconds):
        h, w = rgb.shape[:2]
        k = 480 / h
        small = cv2.resize(rgb, (int(round(w * k)), 480), interpolation=cv2.INTER_AREA)[:, :640]
        canvas = np.zeros((480, 640, 3), np.uint8)
        x0 = (640 - small.shape[1]) // 2
        canvas[:, x0:x0 + small.shape[1]] = small
        frames.append(canvas)
    return write_y4m(out, frames, 30)


def screenshot(args, out: Path, track: Path | None) -> None:
    from playwright.sync_api import sync_playwright
    tmp = Path(tempfile.mkdtemp())
    cam = y4m_from_video(Path(args.video), tmp / "cam.y4m")
    cmd = ["--portraits", args.portrait]
    if args.portraits_dir:
        cmd += [f"--portraits={p}" for p in sorted(Path(args.portraits_dir).iterdir())
                if p.suffix.lower() in (".jpg", ".jpeg", ".png") and p.resolve() != Path(args.portrait).resolve()]
    if args.checkpoint:
        cmd += ["--checkpoint", args.checkpoint]
    if track is not None:
        cmd += ["--tracks", str(track)]
    with serve_process(cmd, tmp / "serve.log") as (url, _), sync_playwright() as pw:
        ctx = chromium_context(pw, tmp / "profile", cam, viewport=(1360, 900))
        page = ctx.new_page()
        page.goto(url)
        page.wait_for_function("document.querySelectorAll('#portraits img').length > 0", timeout=30000)
        page.click("#start")
        page.wait_for_function("document.getElementById('out').videoWidth > 0", timeout=60000)
        time.sleep(args.wait)
        page.screenshot(path=str(out / "page.png"))
        names = page.evaluate("Array.from(document.querySelectorAll('#presets button')).map(b => b.textContent)")
        if "happy" in names:
            page.click("#presets button:text-is('happy')")
            time.sleep(2.0)
            page.screenshot(path=str(out / "page-preset.png"))
        ctx.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--portrait", default=str(SHARED / "portraits" / "s0.jpg"))
    ap.add_argument("--portraits-dir", default=str(SHARED / "portraits") if (SHARED / "portraits").is_dir() else None)
    ap.add_argument("--video", default=str(SHARED / "driving" / "d3.mp4"))
    ap.add_argument("--out", default=str(ROOT / "out" / "demo"))
    ap.add_argument("--seconds", type=float, default=6.0, help="length of the clip")
    ap.add_argument("--wait", type=float, default=6.0, help="seconds of streaming before the screenshot")
    ap.add_argument("--no-screenshot", action="store_true")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from streaming.render import render
    res = render(args.portrait, args.video, out / "clip.mp4", checkpoint=args.checkpoint,
                 side_by_side=True, max_seconds=args.seconds)
    print(res.summary())
    track = None
    try:
        from engine.tracks import extract_track
        track = extract_track(args.video, out / "track.npz")
        track = out / "track.npz"
        print(f"wrote {track}")
    except Exception as e:  # no blendshape model, no audio...: the page works without a track
        print(f"no track ({e})")
        track = None
    if not args.no_screenshot:
        screenshot(args, out, track)
        print(f"wrote {out / 'page.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
