"""Where a driver's mouth motion is lost before any rendering: on each held-out talking clip, the
mouth opening (``engine.geometry.mouth_opening``) of the face mesh on each frame alone (static mode,
the motion tables' measure) against, one stage after another,

1. the tracker's mesh (``engine.face.FaceTracker``, what every face driver reads),
2. the blendshape fit of each frame alone, the source frame's mesh moved by the fitted p,
3. the relative driver (``trainer.motion.drive_params`` with ``--params mesh``: the driver's neutral
   mesh fitted once and every frame read against it, its neutral, smoothing, the closed rest) applied
   to a held-out portrait, its target mesh (``engine.geometry.target_landmarks``),

as the amplitude ratio (std stage / std static mesh) and the correlation, every 3rd frame.

    python scripts/amplitude_chain.py [--data ../shared/data] [--portrait d30]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--portrait", default="d30", help="a held-out portrait (portraits/NAME.jpg)")
    ap.add_argument("--frames", type=int, default=60, help="measured frames a clip (every 3rd)")
    args = ap.parse_args(argv)
    from engine.animator import Animator, load_models
    from engine.geometry import mouth_opening, target_landmarks
    from engine.images import load_image
    from trainer.holdout import HELD_OUT_TALKING
    from trainer.motion import (OpeningMeter, amplitude_ratio, drive_params, load_clip, pearson, prepare_source,
                                raw_params)
    data = Path(args.data)
    anim = Animator(load_models(None), output_size=256)
    fm = anim.face_model
    meter = OpeningMeter()
    image = load_image(data / "portraits" / f"{args.portrait}.jpg")
    src = prepare_source(anim, image, args.portrait, "cross", meter.landmarks(image))
    print(f"{'clip':24s} {'tracker mesh':>14s} {'fit alone':>14s} {'driven ' + args.portrait:>14s}   (amplitude / corr)")
    for rel in HELD_OUT_TALKING:
        clip = load_clip(data / rel, anim.image_size, every=3, max_frames=args.frames, meter=meter)
        static = clip.openings[:, 0]
        tracked = clip.tracked_mouth[clip.indices]
        raw = raw_params(clip, "mesh", face_model=fm)
        lm0 = clip.tracked[0].crop_landmarks
        fitted = np.array([mouth_opening(target_landmarks(fm, lm0, raw[0], p)) for p in raw[clip.indices]])
        P, _ = drive_params(raw, clip.times, src.rest, clip.fps, clip.tracked_mouth, fm.n_exp,
                            landmarks=clip.tracked_crop_landmarks, face_model=fm, params="mesh")
        driven = np.array([mouth_opening(target_landmarks(fm, src.crop_landmarks, src.params, p))
                           for p in P[clip.indices]])
        cells = [f"{amplitude_ratio(static, s):.2f} / {pearson(static, s):.2f}" for s in (tracked, fitted, driven)]
        print(f"{clip.name:24s} " + " ".join(f"{c:>14s}" for c in cells), flush=True)
    meter.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
