"""The README's quick-start figure: a held-out talking clip driving held-out portraits.

Top row: driver frames at quantiles of its mouth opening; one row per portrait below, rendered by
``slidergan render`` (the default model, its default settings) and cut at the same frames.

    python scripts/driven_figure.py --data ../shared/data -o reports/default/driven.jpg
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _frames(path: Path, size: int) -> list[np.ndarray]:
    import cv2

    from engine.video import read_frames
    return [cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA) for rgb, _ in read_frames(path)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--clip", default="talking/sadtalker_wda_aoc.mp4", help="held-out driver clip under --data")
    ap.add_argument("--portraits", nargs="+", default=["d30", "s9"], help="held-out portraits under --data/portraits")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--cell", type=int, default=256)
    ap.add_argument("--checkpoint", default=None, help="model folder (default: the embedded default model)")
    ap.add_argument("-o", "--out", default="reports/default/driven.jpg")
    args = ap.parse_args()

    import cv2

    from engine.atomic import write_bytes_atomic
    from engine.face import FaceMeshDetector
    from engine.geometry import mouth_opening
    from streaming.render import render
    from trainer.holdout import is_held_out
    data = Path(args.data)
    clip = data / args.clip
    portraits = [data / "portraits" / f"{n}.jpg" for n in args.portraits]
    for p in [clip, *portraits]:
        if not is_held_out(p, data):
            raise SystemExit(f"{p} is not held out of training (trainer/holdout.py): the figure shows held-out people")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in portraits:
            out = Path(tmp) / f"{p.stem}.mp4"
            render(p, clip, out, checkpoint=args.checkpoint, size=args.cell, max_seconds=args.seconds,
                   progress=False, no_audio=True)
            rows.append(_frames(out, args.cell))
    n = min(len(r) for r in rows)
    driver = _frames(clip, args.cell)[:n]
    det = FaceMeshDetector(static=True, max_faces=1)
    try:
        opening = np.array([mouth_opening(f[0]) if (f := det.detect(d)) else 0.0 for d in driver])
    finally:
        det.close()
    order = np.argsort(opening)
    picks = sorted({int(order[int(q * (n - 1))]) for q in (0.1, 0.5, 0.8, 1.0)})
    grid = np.concatenate([np.concatenate([r[i] for i in picks], 1) for r in [driver, *rows]], 0)
    out = Path(args.out)
    _, jpg = cv2.imencode(".jpg", grid[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    write_bytes_atomic(out, jpg.tobytes())
    print(f"wrote {out}: driver frames {picks} of {args.clip}; rows: driver, " + ", ".join(args.portraits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
