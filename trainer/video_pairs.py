"""``slidergan video-pairs``: real pairs from videos (SPEC section 8, "Real motion as supervision").

Two frames of one clip are a pair of one identity under two known expressions, and the target is
real: a mouth opened in frame j shows its real teeth and tongue, which no 3D warp can make.

    slidergan video-pairs INPUTS... -o DATASET [--data ../shared/data] [--every 2] [--pairs-per-frame 2]

- Pass 1: every ``--every``-th frame of a clip is meshed and aligned (``engine.face``), and the clip
  is fitted as one sequence (``engine.blendshapes``: one identity, a p per frame).
- Pass 2: the clip is read again; for a frame j, earlier frames i within ``--window`` seconds whose
  head pose matches give the pairs i -> j and j -> i. **Both frames are cropped with the source's
  similarity** (the SPEC's hint), so background and head stay put and only the expression differs.
- Pose match (the warp has no head motion yet): the crops' relative similarity within
  ``--max-shift`` of the crop (translation), 3 % in scale and 3 degrees in roll, and the 3D head
  rotations within ``--max-rotation`` degrees. Pairs whose parameters barely differ
  (||p_i - p_j|| < 0.25) teach nothing and are left out.
- Rows: image = frame i's crop, params = p_i, landmarks = frame i's mesh in crop pixels (what the
  geometry-guided generator warps along), target_image = frame j under frame i's similarity,
  target_params = p_j. Sequence ids are the clip names.

``--data DIR``: every clip of DIR's driving/, talking/ and expressions/ except the held-out
identities (``trainer.holdout``), which are never paired.
"""
from __future__ import annotations

import argparse
import logging
from collections import deque
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MIN_PARAM_CHANGE = 0.25


def _roll_scale_shift(m_src: np.ndarray, m_other: np.ndarray, size: int) -> tuple[float, float, float]:
    """How far another frame's similarity is from the source's, as (roll degrees, |log scale|,
    shift in crop sizes) of the map from the source crop to the other crop."""
    from engine.face import invert_matrix
    a = np.vstack([m_other, [0, 0, 1]]) @ np.vstack([invert_matrix(m_src), [0, 0, 1]])
    lin = a[:2, :2]
    scale = float(np.sqrt(abs(np.linalg.det(lin))))
    roll = float(np.degrees(np.arctan2(lin[1, 0], lin[0, 0])))
    centre = np.array([size / 2, size / 2])
    shift = float(np.linalg.norm(lin @ centre + a[:2, 2] - centre)) / size
    return abs(roll), abs(np.log(max(scale, 1e-9))), shift


def _rotation_deg(r1: np.ndarray, r2: np.ndarray) -> float:
    c = (np.trace(r1 @ r2.T) - 1) / 2
    return float(np.degrees(np.arccos(np.clip(c, -1, 1))))


def clip_faces(path, face_model, size: int, every: int, min_face_px: float, skips):
    """Pass 1: {frame index: (AlignedFace without crop image, p, head rotation)} of one clip."""
    from engine.blendshapes import rigid_align
    from engine.face import FaceMeshDetector, align_face
    from engine.video import read_frames
    from .annotate import SKIP_FIT, SKIP_NO_FACE, SKIP_TOO_SMALL
    found = {}
    with FaceMeshDetector(static=True, max_faces=1, locate=False) as det:   # as annotate reads videos
        for i, (rgb, _t) in enumerate(read_frames(path)):
            if i % every:
                continue
            faces = det.detect(rgb)
            if not faces:
                skips.add(SKIP_NO_FACE, f"{Path(path).name}#{i}")
                continue
            al = align_face(rgb, faces[0], size)
            if al.face_px < min_face_px:
                skips.add(SKIP_TOO_SMALL, f"{Path(path).name}#{i} ({al.face_px:.0f} px)")
                continue
            found[i] = al
    if not found:
        return {}
    idx = sorted(found)
    try:
        fit = face_model.fit_sequence(np.stack([found[i].landmarks for i in idx]).astype(np.float64))
    except ValueError as e:
        skips.add(SKIP_FIT, f"{Path(path).name}: {e}", len(idx))
        return {}
    return {i: (found[i], np.clip(np.nan_to_num(fit.p[k]), -1, 1).astype(np.float32),
                rigid_align(found[i].landmarks)[1][1]) for k, i in enumerate(idx)}


def clip_pairs(path, faces: dict, size: int, fps: float, rng: np.random.Generator, pairs_per_frame: int = 2,
               window_s: float = 2.0, max_shift: float = 0.015, max_rotation: float = 4.0):
    """Pass 2: yield (source AlignedFace, p_src, target crop, p_trg) for pose-matched frame pairs."""
    import cv2

    from engine.video import read_frames
    window = max(1, int(round(window_s * fps)))
    recent: deque = deque()                       # (frame index, rgb) of faces within the window
    for j, (rgb, _t) in enumerate(read_frames(path)):
        while recent and recent[0][0] < j - window:
            recent.popleft()
        if j not in faces:
            continue
        al_j, p_j, r_j = faces[j]
        ok = []
        for i, rgb_i in recent:
            al_i, p_i, r_i = faces[i]
            roll, lscale, shift = _roll_scale_shift(al_i.matrix, al_j.matrix, size)
            if (roll < 3.0 and lscale < 0.03 and shift < max_shift and _rotation_deg(r_i, r_j) < max_rotation
                    and np.linalg.norm(p_i - p_j) >= MIN_PARAM_CHANGE):
                ok.append((i, rgb_i))
        for k in rng.permutation(len(ok))[:pairs_per_frame]:
            i, rgb_i = ok[k]
            al_i, p_i, _ = faces[i]
            # both directions, each target under its source's similarity
            yield al_i, p_i, cv2.warpAffine(rgb, al_i.matrix, (size, size), flags=cv2.INTER_AREA
                                            if al_i.face_px > 2 * size else cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE), p_j
            yield al_j, p_j, cv2.warpAffine(rgb_i, al_j.matrix, (size, size), flags=cv2.INTER_LINEAR,
                                            borderMode=cv2.BORDER_REPLICATE), p_i
        recent.append((j, rgb))


def make_video_pairs(inputs, out, face_model=None, size: int = 128, every: int = 2, pairs_per_frame: int = 1,
                     window_s: float = 2.0, max_shift: float = 0.015, max_rotation: float = 4.0,
                     min_face_px: float = 64.0, seed: int = 0, shard_size: int = 1000, overwrite: bool = False,
                     show_progress: bool = True, jpeg_quality: int | None = None):
    """Write a paired dataset with landmarks; returns (DatasetInfo, Skips, stats)."""
    from tqdm import tqdm

    from engine.blendshapes import load_default_face_model
    from engine.video import video_info

    from .annotate import expand_inputs
    from .data import DatasetWriter, open_dataset
    fm = face_model or load_default_face_model()
    videos, _images, skips = expand_inputs(inputs)
    if not videos:
        raise ValueError("video-pairs needs videos (pairs come from two frames of one clip)")
    rng = np.random.default_rng(seed)
    meta = {"tool": "slidergan video-pairs", "inputs": [str(v) for v in videos], "every": every,
            "pairs_per_frame": pairs_per_frame, "window_s": window_s, "max_shift": max_shift,
            "max_rotation_deg": max_rotation, "seed": seed,
            "pairs": "frames i, j of one clip, both cropped with frame i's similarity (trainer.video_pairs)"}
    n, per_clip = 0, {}
    with DatasetWriter(out, image_size=size, param_names=fm.param_names, paired=True, landmarks=True,
                       shard_size=shard_size, blendshapes=fm.describe(), meta=meta, overwrite=overwrite,
                       jpeg_quality=jpeg_quality) as w:
        for path in tqdm(videos, desc="video-pairs", unit="clip", disable=not show_progress):
            try:
                fps = float(video_info(path).fps or 25.0)
                faces = clip_faces(path, fm, size, every, min_face_px, skips)
                k = 0
                for al, p, target, p_trg in clip_pairs(path, faces, size, fps, rng, pairs_per_frame, window_s,
                                                       max_shift, max_rotation):
                    w.add(al.crop, p, path.stem, target_image=target, target_params=p_trg,
                          landmarks=al.crop_landmarks)
                    k += 1
            except (OSError, ValueError) as e:
                from .annotate import SKIP_UNREADABLE
                skips.add(SKIP_UNREADABLE, f"{path.name}: {str(e)[:80]}")
                continue
            per_clip[path.stem] = k
            n += k
        w.meta["skipped"] = skips.to_dict()
        w.meta["pairs"] = n
        w.meta["pairs_per_clip"] = per_clip
        if n == 0:
            raise ValueError(f"no pose-matched pairs in the inputs:\n{skips.summary()}")
    return open_dataset(out), skips, {"pairs": n, "per_clip": per_clip}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .annotate import add_jpeg_argument
    p.add_argument("inputs", nargs="*", help="videos or folders of them")
    p.add_argument("-o", "--out", required=True, help="paired dataset folder to write")
    p.add_argument("--data", default=None, help="a shared data folder: every clip of driving/, talking/ and "
                   "expressions/ except the held-out identities (trainer.holdout)")
    p.add_argument("--every", type=int, default=2, help="use every N-th frame")
    p.add_argument("--pairs-per-frame", type=int, default=1, help="partners per frame (each gives two pairs)")
    p.add_argument("--window", type=float, default=2.0, help="partners at most this many seconds apart")
    p.add_argument("--max-shift", type=float, default=0.015, help="largest head shift, in crop sizes")
    p.add_argument("--max-rotation", type=float, default=4.0, help="largest 3D head rotation, degrees")
    p.add_argument("--size", type=int, default=128, help="crop size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-face-px", type=float, default=64.0)
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true")
    add_jpeg_argument(p)


def main(args) -> int:
    inputs = list(args.inputs)
    if args.data:
        from .holdout import training_clips
        inputs += [str(c) for c in training_clips(args.data)]
    if not inputs:
        raise ValueError("give videos, folders of them, or --data DIR")
    info, skips, stats = make_video_pairs(inputs, args.out, size=args.size, every=args.every,
                                          pairs_per_frame=args.pairs_per_frame, window_s=args.window,
                                          max_shift=args.max_shift, max_rotation=args.max_rotation,
                                          min_face_px=args.min_face_px, seed=args.seed,
                                          shard_size=args.shard_size, overwrite=args.overwrite,
                                          jpeg_quality=args.jpeg_quality)
    print(f"wrote {info.count} pairs from {len(stats['per_clip'])} clips to {info.path}")
    print("skipped / noted:\n" + skips.summary())
    return 0
