"""Gaze following: do the portrait's eyes look where the driver's look? (engine.pose's gaze numbers,
``engine.geometry.turn_eyes``.)

Drivers: the held-out talking clips (``trainer.holdout.HELD_OUT_TALKING``: their people look mostly into the
camera) and the clips of ``driving/`` whose eyes move most (``GAZE_DRIVERS``; training identities: the gaze
path has no learned part, the generator does not paint an eye that does not close, so what a driver's
identity could teach it does not enter). Sources: the held-out portraits (cross-identity). Each pair goes
through the product's path (``trainer.motion.drive_params``: FaceDriver, mesh p, head and gaze relative to
the driver's neutral, smoothed; the Animator with the default model), with the head held still (so that the
eyes' corners stay where the portrait has them) and the gaze as driven, and once with the gaze held at 0
too (what the engine did before it read the eyes).

Two readers of the eyes' sideways direction (degrees, ``engine.geometry.EYEBALL_RADIUS``):
- ``mediapipe``: ``engine.pose.measure(...).gaze`` of the static face mesh, on the driver's frames and the
  result's (the driver's own reading);
- ``pixels``: the darkness centroid along each eye between its corners (``iris_by_pixels``), on the driver's
  frames at their own face mesh and on the result's at the unmoved portrait's. MediaPipe reads a rendered
  iris's move at about half of what the pixels show (``turn_eyes`` by 20° on the portrait ``d30``: 19° by
  the pixels, 11-12° by MediaPipe), on the driving clips' real eyes at 0.7-0.95 of it (correlation
  0.95-0.99): the ``pixels`` figures are the ones that say what a viewer sees.
Figures per pair where the driver's gaze moves (its mediapipe series' std >= ``MOVES_DEG``): the correlation of
the result's series with the driver's and the amplitude ratio std(result) / std(driver).

    python scripts/gaze_eval.py --data ../shared/data --out reports/gaze
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

GAZE_DRIVERS = ("driving/d0.mp4", "driving/d10.mp4", "driving/d11.mp4", "driving/d14.mp4")
MOVES_DEG = 3.0


def iris_by_pixels(image: np.ndarray, lm: np.ndarray) -> float:
    """The eyes' sideways direction (degrees, > 0 towards the image's right) from the pixels: in a band along
    each eye's corner axis through its iris, the centroid of what is darker than the band's median, as an
    offset from the corners' midpoint in eye widths, through ``EYEBALL_RADIUS``; the mean of both eyes."""
    import cv2

    from engine.geometry import EYEBALL_RADIUS, EYES, _eye_frame
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lm = np.asarray(lm, np.float64)
    out = []
    for eye in EYES:
        a, e, n, width = _eye_frame(lm, eye)
        us = np.linspace(0.1, 0.9, 60) * width
        vs = np.linspace(-0.06, 0.06, 9) * width + (lm[eye[2], :2] - a) @ n
        u, v = np.meshgrid(us, vs)
        p = a + u[..., None] * e + v[..., None] * n
        g = cv2.remap(grey, p[..., 0].astype(np.float32), p[..., 1].astype(np.float32), cv2.INTER_LINEAR)
        dark = (255.0 - g).sum(0)
        dark = np.clip(dark - np.percentile(dark, 60), 0, None)
        if dark.sum() <= 0:
            continue
        out.append(float((dark * us).sum() / dark.sum() / width - 0.5))
    if not out:
        return float("nan")
    return float(np.degrees(np.arcsin(np.clip(np.mean(out) / EYEBALL_RADIUS, -1, 1))))


def read_gaze(frames, landmarks, pixels_at=None) -> np.ndarray:
    """(T, 2) [mediapipe, pixels] sideways gaze per frame (NaN: no face or eyes shut); ``landmarks`` the
    frames' face meshes (None: no face), ``pixels_at`` one mesh to read every frame's pixels at."""
    from engine.pose import measure
    out = np.full((len(frames), 2), np.nan)
    for k, (f, lm) in enumerate(zip(frames, landmarks)):
        if lm is not None:
            out[k, 0] = measure(lm).gaze[0]
        if lm is not None or pixels_at is not None:
            out[k, 1] = iris_by_pixels(f, lm if pixels_at is None else pixels_at)
    return out


def follow(d: np.ndarray, r: np.ndarray) -> dict:
    from trainer.motion import amplitude_ratio, pearson
    ok = np.isfinite(d) & np.isfinite(r)
    if ok.sum() < 5:
        return {"corr": None, "ratio": None}
    return {"corr": round(pearson(d[ok], r[ok]), 3), "ratio": round(amplitude_ratio(d[ok], r[ok]), 3)}


def eyes_strip(driver, results, lm_d, lm_rs, picks, cell: int = 160):
    """Rows of picked frames: the driver's eyes | each result's eyes (``trainer.motion.eye_crop``)."""
    import cv2

    from trainer.motion import eye_crop
    rows = []
    for k in picks:
        pairs = [(driver[k], lm_d[k])] + [(r[k], lm_r[k]) for r, lm_r in zip(results, lm_rs)]
        rows.append(np.concatenate([cv2.resize(eye_crop(img, lm), (cell, cell), interpolation=cv2.INTER_AREA)
                                    for img, lm in pairs], 1))
    return np.concatenate(rows, 0)


def main(argv=None) -> int:
    import cv2

    from engine.animator import Animator
    from engine.pose import N_HEAD
    from trainer.holdout import HELD_OUT_PORTRAITS, HELD_OUT_TALKING
    from trainer.motion import OpeningMeter, _portrait_sources, drive_params, load_clip, model_renderer, \
        prepare_source, raw_params
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="reports/gaze")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--max-frames", type=int, default=60)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    anim = Animator.from_checkpoint(args.checkpoint, backend="auto")
    fm = anim.face_model
    meter = OpeningMeter()
    portraits = _portrait_sources(Path(args.data), HELD_OUT_PORTRAITS)
    report = {"moves_deg": MOVES_DEG, "pairs": []}
    pictures = []
    for rel in HELD_OUT_TALKING + GAZE_DRIVERS:
        path = Path(args.data) / rel
        if not path.exists():
            continue
        clip = load_clip(path, anim.image_size, args.every, args.max_frames, meter)
        d = read_gaze(clip.frames, clip.landmarks)
        moves = float(np.nanstd(d[:, 0]))
        raw = raw_params(clip, "mesh", face_model=fm)
        for name, _p, rgb, lm in portraits:
            src = prepare_source(anim, rgb, name, "cross", lm)
            P, poses = drive_params(raw, clip.times, src.rest, clip.fps, clip.tracked_mouth, fm.n_exp,
                                    clip.tracked_heads, clip.tracked_crop_landmarks, fm, "mesh",
                                    lids=src.anim.source.lids)
            eyes = np.zeros_like(poses[clip.indices])
            eyes[:, N_HEAD:] = poses[clip.indices, N_HEAD:]
            P = P[clip.indices]
            unmoved = meter.landmarks(src.anim.animate(src.rest))
            results, lms = [], []
            pair = {"driver": rel, "training_identity": rel in GAZE_DRIVERS, "portrait": name,
                    "driver_gaze_std_deg": round(moves, 2),
                    "driven_gaze_std_deg": round(float(np.std(eyes[:, N_HEAD])), 2)}
            for row, q in (("gaze", eyes), ("no gaze", np.zeros_like(eyes))):
                frames = model_renderer(src, P, q)
                lm_r = [meter.landmarks(f) for f in frames]
                r = read_gaze(frames, lm_r, pixels_at=unmoved)
                results.append(frames)
                lms.append(lm_r)
                if moves >= MOVES_DEG:
                    pair[row] = {reader: follow(d[:, i], r[:, i]) for i, reader in enumerate(("mediapipe", "pixels"))}
            print(json.dumps(pair), flush=True)
            report["pairs"].append(pair)
            if moves >= MOVES_DEG and name == portraits[-1][0]:      # d30: a photo, its irises clear
                picks = [int(np.nanargmin(d[:, 0])), int(np.nanargmax(d[:, 0]))]
                pictures.append(eyes_strip(clip.frames, results, clip.landmarks, lms, picks))
    meter.close()
    report["mean"] = {}
    for group, training in (("held-out drivers", False), ("training drivers", True)):
        moving = [p for p in report["pairs"] if "gaze" in p and p["training_identity"] == training]
        if moving:
            report["mean"][group] = {
                row: {reader: {k: round(float(np.nanmean([np.nan if p[row][reader][k] is None else p[row][reader][k]
                                                          for p in moving])), 3) for k in ("corr", "ratio")}
                      for reader in ("mediapipe", "pixels")} for row in ("gaze", "no gaze")}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    print(json.dumps(report["mean"]))
    (out / "gaze.json").write_text(json.dumps(report, indent=2))
    if pictures:
        cv2.imwrite(str(out / "eyes.jpg"), cv2.cvtColor(np.concatenate(pictures, 0), cv2.COLOR_RGB2BGR),
                    [cv2.IMWRITE_JPEG_QUALITY, 88])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
