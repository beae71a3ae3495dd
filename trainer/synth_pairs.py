"""``slidergan synth-pairs``: the paper's "3D warped images" (section 4.1, SPEC section 5).

A real face is fitted (``engine.blendshapes``), its mesh is deformed to random target parameters,
and the image is warped piecewise-affinely along the mesh triangles from the fitted mesh to the
deformed one: a pair of one identity under two known expressions, with exact parameters.

    slidergan synth-pairs INPUTS... -o DATASET [--pairs-per-face 2] [--every 5] [--seed 0] [--targets DATASET...]

INPUTS are videos, images or folders of them (annotated on the fly exactly as ``slidergan
annotate`` does: videos fitted as sequences, images alone), or unpaired dataset folders written by
``slidergan annotate`` (their crops are re-meshed). Each source face gives ``--pairs-per-face``
rows of a paired dataset (``trainer.data``): image = the source crop, params = its fitted p,
target_image = the warped crop, target_params = p_trg, landmarks = the source crop's face mesh (from
which ``engine.geometry.target_landmarks`` gives the target's: ``train-head --mirror`` fits its mirror).

The warp is ``engine.geometry`` (shared with the geometry-guided generator): see its docstring.

Target parameters (``sample_targets``) **(choice)**: half of the targets are another face's
fitted parameters (a real expression: from the inputs themselves, or with ``--targets`` from annotated
datasets, e.g. talking videos' fits for stills whose own faces are all at rest), half are sparse random vectors:
1 to 5 components, each uniform in [-0.4, 1] (components are signed so that their training motion
is positive: the negative half of a one-sided motion such as a mouth opening is not a face), added
to a real expression with probability 0.5. All are clipped to [-1, 1].
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from engine.geometry import (  # noqa: F401  (the one geometry module; names kept for callers)
    LID_PAIRS, LIP_PAIRS, crossing, fill_mouth, motion_in_crop, target_landmarks, uncross, warp_mesh,
    warp_to_params)

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------- targets
def sample_targets(rng: np.random.Generator, n: int, n_params: int, bank: np.ndarray | None = None,
                   max_active: int = 5) -> np.ndarray:
    """n target parameter vectors (see the module docstring for the mixture)."""
    out = np.zeros((n, n_params))
    for i in range(n):
        real = bank[rng.integers(len(bank))] if bank is not None and len(bank) else np.zeros(n_params)
        if bank is not None and len(bank) and rng.random() < 0.5:
            out[i] = real
            continue
        base = real if rng.random() < 0.5 else np.zeros(n_params)
        k = int(rng.integers(1, max_active + 1))
        idx = rng.choice(n_params, size=k, replace=False)
        v = base.copy()
        v[idx] = rng.uniform(-0.4, 1.0, size=k)
        out[i] = v
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def draw_target(face_model, crop_landmarks, p_src, rng, bank=None, tries: int = 20,
                tolerance_px: float = 0.5) -> np.ndarray:
    """One ``sample_targets`` draw whose target mesh has no lid or lip crossing (``crossing`` below
    ``tolerance_px`` crop pixels); after ``tries`` draws the last one is used (``uncross`` then closes
    it in the warp)."""
    for _ in range(tries):
        p = sample_targets(rng, 1, face_model.n_params, bank)[0]
        if crossing(target_landmarks(face_model, crop_landmarks, p_src, p, False)) < tolerance_px:
            break
    return p


# ------------------------------------------------------------------------------------- sources
def _dataset_faces(path: Path, face_model, skips, progress=None, every: int = 1):
    """Faces of an unpaired dataset: crops re-meshed (upsampled x2 for the detector), refitted."""
    import cv2

    from engine.face import FaceMeshDetector

    from .annotate import SKIP_NO_FACE, Face
    from .data import open_dataset
    info = open_dataset(path)
    with FaceMeshDetector(static=True, max_faces=1) as det:
        for si in range(len(info.shards)):
            a = info.load_shard(si, ["images", "params", "seq"])
            for j in range(0, len(a["images"]), every):
                if progress is not None:
                    progress.update(1)
                crop = a["images"][j]
                s = crop.shape[0]
                big = cv2.resize(crop, (2 * s, 2 * s), interpolation=cv2.INTER_CUBIC)
                faces = det.detect(big)
                if not faces:
                    skips.add(SKIP_NO_FACE, f"{path.name} shard {si} row {j}")
                    continue
                lm = faces[0] / 2.0
                seq = (info.sequences[int(a["seq"][j])] if info.sequences else str(int(a["seq"][j])))
                f = face_model.fit(lm)
                yield Face(crop, lm, lm, f.p, str(seq), str(path), j, None, f.identity, f.residual_px)


def make_pairs(inputs, out, face_model=None, pairs_per_face: int = 2, size: int = 128, every: int = 5,
               max_frames: int | None = None, seed: int = 0, shard_size: int = 1000,
               overwrite: bool = False, show_progress: bool = True, min_face_px: float = 64.0,
               targets=(), jpeg_quality: int | None = None):
    """Write a paired dataset; returns (DatasetInfo, Skips, stats dict). ``targets``: annotated datasets
    whose fitted parameters are the real expressions drawn as targets (default: the inputs' own)."""
    import cv2
    from tqdm import tqdm

    from engine.blendshapes import load_default_face_model

    from .annotate import Skips, count_frames, iter_faces
    from .data import DatasetWriter, open_dataset
    fm = face_model or load_default_face_model()
    rng = np.random.default_rng(seed)
    skips = Skips()
    datasets = [Path(i) for i in inputs if (Path(i) / "manifest.json").exists()]
    media = [i for i in inputs if Path(i) not in datasets]
    total = count_frames(media, every, max_frames) if media else 0
    for d in datasets:
        total += -(-open_dataset(d).count // every)
    bank: list[np.ndarray] = [r for t in targets for r in open_dataset(t).all_params()]
    if targets and not bank:
        raise ValueError(f"--targets {' '.join(map(str, targets))}: no parameters in them")
    if bank and len(bank[0]) != fm.n_params:
        raise ValueError(f"--targets have {len(bank[0])} parameters, the blendshape model {fm.n_params}")
    meta = {"tool": "slidergan synth-pairs", "inputs": [str(i) for i in inputs], "pairs_per_face": pairs_per_face,
            "every": every, "seed": seed, "warp": "piecewise affine along the face mesh (trainer.synth_pairs)",
            "targets": "sample_targets: half real expressions of "
            + (f"{', '.join(map(str, targets))}" if targets else "the inputs") + ", half sparse random"}
    n = 0

    def faces(bar):
        if media:
            # faces at twice the crop size: the warp then has detail to spare, and is downsampled
            for f in iter_faces(media, fm, 2 * size, every, max_frames, min_face_px, "image", 6000, skips, bar):
                yield f, True
        for d in datasets:
            for f in _dataset_faces(d, fm, skips, bar, every):
                yield f, False
    with tqdm(total=total, desc="synth-pairs", unit="face", dynamic_ncols=True, disable=not show_progress) as bar:
        with DatasetWriter(out, image_size=size, param_names=fm.param_names, paired=True, jpeg_quality=jpeg_quality,
                           shard_size=shard_size, blendshapes=fm.describe(), meta=meta,
                           overwrite=overwrite, landmarks=True) as w:
            for f, big in faces(bar):
                p_src = np.clip(np.nan_to_num(f.p), -1, 1).astype(np.float32)
                if not targets:
                    bank.append(p_src)
                    if len(bank) > 5000:
                        bank.pop(int(rng.integers(len(bank))))
                src_img = cv2.resize(f.crop, (size, size), interpolation=cv2.INTER_AREA) if big else f.crop
                src_lm = np.asarray(f.crop_landmarks, np.float32) * np.float32(size / f.crop.shape[0])
                for _k in range(pairs_per_face):
                    p_trg = draw_target(fm, f.crop_landmarks, p_src, rng, np.asarray(bank))
                    warped = warp_to_params(fm, f.crop, f.crop_landmarks, p_src, p_trg,
                                            supersample=1 if big else 2)
                    if big:
                        warped = cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)
                    w.add(src_img, p_src, f.seq, target_image=warped, target_params=p_trg, landmarks=src_lm)
                    n += 1
            w.meta["skipped"] = skips.to_dict()
            w.meta["pairs"] = n
            if n == 0:
                raise ValueError(f"no usable face in the inputs:\n{skips.summary()}")
    return open_dataset(out), skips, {"pairs": n}


def add_arguments(p: argparse.ArgumentParser) -> None:
    from .annotate import add_jpeg_argument
    p.add_argument("inputs", nargs="+", help="videos, images, folders of them, or unpaired dataset folders")
    p.add_argument("-o", "--out", required=True, help="paired dataset folder to write")
    p.add_argument("--pairs-per-face", type=int, default=2, help="target expressions per source face")
    p.add_argument("--every", type=int, default=5, help="use every N-th video frame / dataset row")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    p.add_argument("--size", type=int, default=128, help="crop size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-face-px", type=float, default=64.0)
    p.add_argument("--blendshapes", default=None, help="blendshape model folder (default: the embedded one)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--targets", nargs="+", default=[], metavar="DATASET",
                   help="annotated datasets whose fitted expressions are drawn as targets (default: the inputs')")
    add_jpeg_argument(p)


def main(args) -> int:
    from engine.blendshapes import load_face_model
    fm = load_face_model(args.blendshapes) if args.blendshapes else None
    info, skips, stats = make_pairs(args.inputs, args.out, fm, args.pairs_per_face, args.size, args.every,
                                    args.max_frames, args.seed, args.shard_size, args.overwrite,
                                    min_face_px=args.min_face_px, targets=args.targets, jpeg_quality=args.jpeg_quality)
    print(f"wrote {info.count} pairs to {info.path} ({len(info.shards)} shard(s), {info.image_size} px)")
    print("skipped / noted:\n" + skips.summary())
    return 0
