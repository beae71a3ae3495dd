"""``slidergan annotate INPUTS... -o DATASET``: videos and image folders to a labelled dataset.

Every face becomes one sample of the dataset format of ``trainer.data``: its aligned crop
(``engine.face``: template alignment, default 128 x 128), its parameters p = [p_exp, p_speech] from
fitting the blendshape models (``engine.blendshapes``; no human labels), and a sequence/identity id.

- A video is one person's sequence: its frames are fitted together (``FaceModel.fit_sequence``: the
  sequence's own neutral carries the identity, so p measures expression and speech only). Its id is
  the video's name. Very long videos are fitted in segments of ``--segment`` frames (memory).
- Images: each image is its own identity and is fitted alone (``FaceModel.fit``), unless
  ``--group-images folder``: then every folder of images is one person, fitted as a sequence.
- Skipped, and counted in the summary with examples: frames or images without a face, faces below
  ``--min-face-px``, files that cannot be read. Several faces: the largest is used (counted too).

Progress is a tqdm bar over frames; the summary is printed at the end and kept in the dataset
manifest's ``meta``.
"""
from __future__ import annotations

import argparse
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}

SKIP_NO_FACE = "no face"
SKIP_TOO_SMALL = "face too small"
SKIP_UNREADABLE = "unreadable file"
SKIP_FIT = "fit failed"
NOTE_MULTIPLE = "several faces (largest used)"


@dataclass
class Skips:
    """What was skipped (or noted) and why, with a few examples each."""
    counts: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=lambda: defaultdict(list))

    def add(self, reason: str, where: str, n: int = 1) -> None:
        self.counts[reason] += n
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(where)

    def summary(self) -> str:
        if not self.counts:
            return "nothing skipped"
        lines = []
        for reason, n in self.counts.most_common():
            ex = ", ".join(self.examples[reason][:3])
            lines.append(f"  {reason}: {n}  (e.g. {ex})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {k: {"count": int(v), "examples": list(self.examples[k])} for k, v in self.counts.items()}


@dataclass
class Face:
    """One annotated face. crop (S, S, 3) uint8; crop_landmarks (478, 3) in crop pixels; p (N,);
    seq: sequence/identity name; source: file; index: frame index (0 for images); neutral: the
    sequence's neutral (478, 3, canonical frame) or None for a lone image; fit_residual_px."""
    crop: np.ndarray
    crop_landmarks: np.ndarray
    landmarks: np.ndarray
    p: np.ndarray
    seq: str
    source: str
    index: int
    neutral: np.ndarray | None = None
    identity: np.ndarray | None = None
    fit_residual_px: float = 0.0


def expand_inputs(inputs) -> tuple[list[Path], list[Path], Skips]:
    """Videos and images named or found (recursively) in folders; missing paths are an error."""
    videos, images = [], []
    skips = Skips()
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise FileNotFoundError(f"input not found: {p}")
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
        found = 0
        for q in files:
            ext = q.suffix.lower()
            if ext in VIDEO_EXTS:
                videos.append(q)
                found += 1
            elif ext in IMAGE_EXTS:
                images.append(q)
                found += 1
            elif not p.is_dir():
                skips.add(SKIP_UNREADABLE, f"{q.name} (not a video or image type)")
        if p.is_dir() and not found:
            log.warning("no videos or images in folder %s", p)
    return videos, images, skips


def _seq_name(path: Path, roots) -> str:
    for r in roots:
        r = Path(r)
        if r.is_dir():
            try:
                return str(path.relative_to(r).with_suffix("")).replace(os.sep, "/")
            except ValueError:
                pass
    return path.stem


def iter_faces(inputs, face_model, size: int = 128, every: int = 1, max_frames: int | None = None,
               min_face_px: float = 64.0, group_images: str = "image", segment: int = 6000,
               skips: Skips | None = None, progress=None) -> Iterator[Face]:
    """Annotated faces of videos and images (see the module docstring). Never raises on a frame or
    a file it cannot use: those go into ``skips``. ``progress``: a tqdm-like bar (``update``)."""
    from engine.face import FaceMeshDetector, ImageReadError, align_face, load_image
    from engine.video import VideoError, read_frames
    skips = skips if skips is not None else Skips()
    videos, images, sk = expand_inputs(inputs)
    for k, v in sk.counts.items():
        for e in sk.examples[k]:
            skips.add(k, e)
        skips.counts[k] += v - len(sk.examples[k])

    def face_of(rgb, faces, where):
        if not faces:
            skips.add(SKIP_NO_FACE, where)
            return None
        al = align_face(rgb, faces[0], size)
        if al.face_px * 1.0 < min_face_px:
            skips.add(SKIP_TOO_SMALL, f"{where} ({al.face_px:.0f} px)")
            return None
        if len(faces) > 1:
            skips.add(NOTE_MULTIPLE, where)
        return al

    # ---- videos: one sequence each (segments for very long ones)
    for path in videos:
        name = _seq_name(path, inputs)
        buf: list = []

        def flush(buf):
            if not buf:
                return
            lms = np.stack([b[1].landmarks for b in buf]).astype(np.float64)
            try:
                sf = face_model.fit_sequence(lms)
            except ValueError as e:
                skips.add(SKIP_FIT, f"{path.name}: {e}", len(buf))
                return
            for j, (i, al) in enumerate(buf):
                yield Face(al.crop, al.crop_landmarks, al.landmarks, sf.p[j], name, str(path), i,
                           sf.neutral, sf.identity, float(sf.residual_px[j]))
        try:
            # static mode on every frame, as the face drivers read faces (engine.face.FaceTracker: video mode
            # reads open mouths short), so that labels mean what a driver's p means
            with FaceMeshDetector(static=True, max_faces=4, locate=False) as det:
                for i, (rgb, _t) in enumerate(read_frames(path)):
                    if max_frames is not None and i >= max_frames * every:
                        break
                    if i % every:
                        continue
                    if progress is not None:
                        progress.update(1)
                    al = face_of(rgb, det.detect(rgb), f"{path.name}#{i}")
                    if al is not None:
                        buf.append((i, al))
                    if len(buf) >= segment:
                        yield from flush(buf)
                        buf = []
        except (VideoError, OSError) as e:
            skips.add(SKIP_UNREADABLE, f"{path.name}: {e}")
        yield from flush(buf)

    # ---- images
    if not images:
        return
    groups: dict[str, list[Path]] = defaultdict(list)
    for path in images:
        key = str(path.parent) if group_images == "folder" else str(path)
        groups[key].append(path)
    with FaceMeshDetector(static=True, max_faces=4) as det:
        for key, paths in groups.items():
            got = []
            for path in paths:
                if progress is not None:
                    progress.update(1)
                try:
                    rgb = load_image(path)
                except (ImageReadError, OSError, ValueError) as e:
                    skips.add(SKIP_UNREADABLE, f"{path.name}: {str(e)[:80]}")
                    continue
                al = face_of(rgb, det.detect(rgb), path.name)
                if al is not None:
                    got.append((path, al))
            if not got:
                continue
            if group_images == "folder" and len(got) > 1:
                name = _seq_name(Path(key), inputs) if Path(key) not in map(Path, inputs) else Path(key).name
                sf = face_model.fit_sequence(np.stack([a.landmarks for _, a in got]).astype(np.float64))
                for j, (path, al) in enumerate(got):
                    yield Face(al.crop, al.crop_landmarks, al.landmarks, sf.p[j], name, str(path), 0,
                               sf.neutral, sf.identity, float(sf.residual_px[j]))
            else:
                fits = face_model.fit_many(np.stack([a.landmarks for _, a in got]).astype(np.float64))
                for (path, al), f in zip(got, fits):
                    name = _seq_name(path, inputs)
                    yield Face(al.crop, al.crop_landmarks, al.landmarks, f.p, name, str(path), 0, None,
                               f.identity, f.residual_px)


def count_frames(inputs, every: int = 1, max_frames: int | None = None) -> int:
    """Frames + images the inputs hold (for the progress bar); unreadable videos count 0."""
    from engine.video import video_info
    videos, images, _ = expand_inputs(inputs)
    n = len(images)
    for v in videos:
        try:
            k = -(-video_info(v).frame_count // every)
        except Exception:
            k = 0
        n += min(k, max_frames) if max_frames else k
    return n


def annotate(inputs, out, face_model=None, size: int = 128, every: int = 1, max_frames: int | None = None,
             min_face_px: float = 64.0, group_images: str = "image", shard_size: int = 1000,
             compress: bool = False, overwrite: bool = False, segment: int = 6000, show_progress: bool = True,
             jpeg_quality: int | None = None):
    """Write the dataset; returns (DatasetInfo, Skips)."""
    from tqdm import tqdm

    from engine.blendshapes import load_default_face_model

    from .data import DatasetWriter, open_dataset
    fm = face_model or load_default_face_model()
    skips = Skips()
    total = count_frames(inputs, every, max_frames)
    meta = {"tool": "slidergan annotate", "inputs": [str(i) for i in inputs], "image_size": size,
            "every": every, "min_face_px": min_face_px, "group_images": group_images,
            "alignment": "engine.face template", "fit": "videos: fit_sequence; images: "
            + ("fit_sequence per folder" if group_images == "folder" else "fit (single image)")}
    n = 0
    with tqdm(total=total, desc="annotate", unit="frame", dynamic_ncols=True, disable=not show_progress) as bar:
        with DatasetWriter(out, image_size=size, param_names=fm.param_names, shard_size=shard_size,
                           compress=compress, blendshapes=fm.describe(), meta=meta,
                           overwrite=overwrite, landmarks=True, jpeg_quality=jpeg_quality) as w:
            for face in iter_faces(inputs, fm, size, every, max_frames, min_face_px, group_images,
                                   segment, skips, bar):
                w.add(face.crop, np.nan_to_num(face.p), face.seq, landmarks=face.crop_landmarks)
                n += 1
                if n % 50 == 0:
                    bar.set_postfix_str(f"{n} faces")
            w.meta["skipped"] = skips.to_dict()
            w.meta["faces"] = n
            if n == 0:
                raise ValueError(f"no usable face in {len(list(inputs))} input(s):\n{skips.summary()}")
    return open_dataset(out), skips


def add_jpeg_argument(p) -> None:
    """The dataset makers' ``--jpeg-quality``: their images stored JPEG-coded (``trainer.data``)."""
    p.add_argument("--jpeg-quality", type=int, default=None, metavar="Q",
                   help="store the images JPEG-coded at this quality (1-100; 95: face crops 7 times smaller, 1.4 "
                        "grey levels off) instead of raw")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="videos, images, or folders of them (searched recursively)")
    p.add_argument("-o", "--out", required=True, help="dataset folder to write")
    p.add_argument("--size", type=int, default=128, help="crop size (default 128)")
    p.add_argument("--every", type=int, default=1, help="use every N-th video frame")
    p.add_argument("--max-frames", type=int, default=None, help="at most this many frames per video")
    p.add_argument("--min-face-px", type=float, default=64.0,
                   help="skip faces whose crop footprint is smaller (frame pixels)")
    p.add_argument("--group-images", choices=["image", "folder"], default="image",
                   help="identity of images: each image alone, or one person per folder (fitted together)")
    p.add_argument("--blendshapes", default=None, help="blendshape model folder (default: the embedded one)")
    p.add_argument("--shard-size", type=int, default=1000)
    p.add_argument("--segment", type=int, default=6000, help="fit long videos in segments of this many frames")
    p.add_argument("--compress", action="store_true", help="compressed shards")
    add_jpeg_argument(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset folder")


def main(args) -> int:
    from engine.blendshapes import load_face_model
    fm = load_face_model(args.blendshapes) if args.blendshapes else None
    info, skips = annotate(args.inputs, args.out, fm, args.size, args.every, args.max_frames,
                           args.min_face_px, args.group_images, args.shard_size, args.compress,
                           args.overwrite, args.segment, jpeg_quality=args.jpeg_quality)
    seqs = len(info.sequences or [])
    print(f"wrote {info.count} faces of {seqs} sequence(s)/identities to {info.path} "
          f"({len(info.shards)} shard(s), {info.image_size} px, {info.n_params} parameters)")
    print("skipped / noted:\n" + skips.summary())
    return 0
