"""Parameter tracks: per-frame blendshape parameters over time (LRW-style speech tracks).

One file format, a NumPy ``.npz`` (no pickles) holding:

    format            "slidergan-track"
    version           1
    fps               nominal frame rate (float)
    times             (T,) float64 seconds, strictly increasing (frame timestamps)
    speech            (T, Ns) float32 speech parameters p_speech (usually Ns = 10)
    speech_names      (Ns,) component names
    expression        (T, Ne) float32 expression parameters p_exp; absent when the track has none
    expression_names  (Ne,) component names (absent with expression)
    n_expression      width of p_exp that ``at`` fills with zeros when expression is absent
    pose              (T, 8) float32 head pose and gaze (``engine.pose``: yaw, pitch, roll in degrees, x, y in
                      inter-ocular distances, ln size, gaze yaw and pitch in degrees), relative to the clip's
                      mean pose; optional (a track of six columns, written before the gaze, reads with the
                      gaze unmoved)
                      (older tracks and speech-only tracks have none)
    lids              (2,) float32 the lid gaps (right eye, left eye) of the driver's neutral face (canonical,
                      ``FaceModel.lid_gaps``): its blinks are retargeted to a portrait's eyes by their ratio
                      (``streaming.drivers.lids_ratio``); optional (older tracks: not retargeted)
    audio             path of the audio file, relative to the track's folder ("" for none)
    audio_offset      audio time (s) of track time 0
    meta              JSON object: source video, model, fit residuals, frames without a face...

The parameter vector of a frame is ``p = [p_exp, p_speech]`` (SPEC section 1), so
``track.at(t)`` returns ``n_expression + n_speech`` values, linearly interpolated in time (held at
the ends): a track at any fps drives a stream at any other fps. ``resample(fps)`` makes a regular
track at another rate.

``load_track`` and ``ParamTrack(...)`` validate: wrong widths (names, or a model's widths given to
``check_widths``), NaN/inf, non-monotonic timestamps, an fps outside 1..240, timestamps spanning
more than 24 h, a missing audio file -> ``TrackError`` (a ValueError) with a message that says what
and where.

``extract_track`` (the ``slidergan track extract`` command) fits every frame of a video with the
default blendshape models and copies the video's audio next to the track.
"""
from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .pose import N_HEAD, N_POSE, POSE_NAMES, as_pose

log = logging.getLogger(__name__)

__all__ = ["TrackError", "ParamTrack", "load_track", "save_track", "extract_track", "FORMAT",
           "VERSION"]

FORMAT = "slidergan-track"
VERSION = 1
DEFAULT_N_EXPRESSION = 30

# What a track may be (checked on construction and on load, before anything is sized from it):
MIN_FPS, MAX_FPS = 1.0, 240.0      # its frame rate (nominal, or from its timestamps when it has none)
MAX_SECONDS = 24 * 3600.0          # the span of its timestamps
MAX_FRAMES = int(MAX_SECONDS * MAX_FPS)


class TrackError(ValueError):
    """A parameter track that is malformed or does not fit what it is used with."""


def _names(names, n: int, prefix: str) -> list[str]:
    if names is None:
        return [f"{prefix}{i:02d}" for i in range(n)]
    return [str(x) for x in names]


@dataclass
class ParamTrack:
    """Per-frame parameters over time. See the module docstring for the fields."""
    times: np.ndarray
    speech: np.ndarray
    expression: np.ndarray | None = None
    fps: float | None = None
    speech_names: list[str] | None = None
    expression_names: list[str] | None = None
    n_expression: int | None = None
    audio: str | None = None
    audio_offset: float = 0.0
    meta: dict = field(default_factory=dict)
    path: Path | None = None       # where it was loaded from / saved to (resolves ``audio``)
    pose: np.ndarray | None = None
    lids: np.ndarray | None = None

    def __post_init__(self):
        self.times = np.asarray(self.times, dtype=np.float64)
        self.speech = np.asarray(self.speech, dtype=np.float32)
        if self.expression is not None:
            self.expression = np.asarray(self.expression, dtype=np.float32)
        if self.pose is not None:
            self.pose = np.asarray(self.pose, dtype=np.float32)
            if self.pose.ndim == 2 and self.pose.shape[1] == N_HEAD:
                self.pose = as_pose(self.pose).astype(np.float32)
        if self.lids is not None:
            self.lids = np.asarray(self.lids, dtype=np.float32)
        if self.speech.ndim == 2:
            self.speech_names = _names(self.speech_names, self.speech.shape[1], "speech_")
        if self.expression is not None and self.expression.ndim == 2:
            self.expression_names = _names(self.expression_names, self.expression.shape[1], "exp_")
        if self.n_expression is None:
            self.n_expression = (self.expression.shape[1] if self.expression is not None
                                 and self.expression.ndim == 2 else DEFAULT_N_EXPRESSION)
        if self.fps is None and self.times.ndim == 1 and len(self.times) > 1:
            self.fps = float((len(self.times) - 1) / (self.times[-1] - self.times[0])) \
                if self.times[-1] > self.times[0] else None
        self.audio = self.audio or None
        self.validate(check_audio=False)

    # ------------------------------------------------------------------------------ validation
    def _where(self) -> str:
        return f"track {self.path}" if self.path is not None else "track"

    def validate(self, check_audio: bool = True) -> None:
        """Raise TrackError when the track is malformed (see the module docstring)."""
        w = self._where()
        if self.times.ndim != 1 or len(self.times) == 0:
            raise TrackError(f"{w}: times must be a non-empty 1-D array, got shape {self.times.shape}")
        n = len(self.times)
        if self.speech.ndim != 2 or self.speech.shape[0] != n:
            raise TrackError(f"{w}: speech must have shape ({n}, n_speech) to match {n} timestamps, "
                             f"got {self.speech.shape}")
        if len(self.speech_names) != self.speech.shape[1]:
            raise TrackError(f"{w}: speech has width {self.speech.shape[1]} but "
                             f"{len(self.speech_names)} names")
        if self.expression is not None:
            if self.expression.ndim != 2 or self.expression.shape[0] != n:
                raise TrackError(f"{w}: expression must have shape ({n}, n_expression) to match {n} "
                                 f"timestamps, got {self.expression.shape}")
            if len(self.expression_names) != self.expression.shape[1]:
                raise TrackError(f"{w}: expression has width {self.expression.shape[1]} but "
                                 f"{len(self.expression_names)} names")
            if self.n_expression != self.expression.shape[1]:
                raise TrackError(f"{w}: n_expression {self.n_expression} differs from the expression "
                                 f"width {self.expression.shape[1]}")
        if self.n_expression < 0:
            raise TrackError(f"{w}: n_expression must be >= 0")
        if self.pose is not None and self.pose.shape != (n, N_POSE):
            raise TrackError(f"{w}: pose must have shape ({n}, {N_POSE}) ({', '.join(POSE_NAMES)}) to "
                             f"match {n} timestamps, got {self.pose.shape}")
        if self.lids is not None and (self.lids.shape != (2,) or np.any(self.lids <= 0)):
            raise TrackError(f"{w}: lids must be the driver's two positive lid gaps (right eye, left eye), got "
                             f"{self.lids.tolist() if self.lids.size <= 4 else self.lids.shape}")
        for name, arr in (("times", self.times), ("speech", self.speech),
                          ("expression", self.expression), ("pose", self.pose), ("lids", self.lids)):
            if arr is None:
                continue
            bad = ~np.isfinite(arr)
            if bad.any():
                idx = np.argwhere(bad)[0]
                frame = int(idx[0])
                kind = "NaN" if np.isnan(arr[tuple(idx)]) else "inf"
                col = f", column {int(idx[1])}" if arr.ndim == 2 else ""
                raise TrackError(f"{w}: {name} contains {kind} ({int(bad.sum())} values; first at "
                                 f"frame {frame}{col})")
        if n > 1:
            dt = np.diff(self.times)
            if np.any(dt <= 0):
                i = int(np.argmax(dt <= 0))
                raise TrackError(f"{w}: timestamps must increase strictly; frame {i + 1} at "
                                 f"{self.times[i + 1]:.6f} s follows {self.times[i]:.6f} s")
        if self.fps is not None and not (np.isfinite(self.fps) and self.fps > 0):
            raise TrackError(f"{w}: fps must be a positive number, got {self.fps}")
        if self.fps is not None and not MIN_FPS <= self.fps <= MAX_FPS:
            raise TrackError(f"{w}: fps {self.fps:g} is outside {MIN_FPS:g}..{MAX_FPS:g}, the frame rates a track "
                             f"may have")
        span = float(self.times[-1] - self.times[0])
        if span > MAX_SECONDS:
            raise TrackError(f"{w}: its timestamps span {span:.6g} s; a track may span at most {MAX_SECONDS:.0f} s "
                             f"({MAX_SECONDS / 3600:g} h)")
        if n > MAX_FRAMES:
            raise TrackError(f"{w}: {n} frames; a track may have at most {MAX_FRAMES}")
        if not np.isfinite(self.audio_offset):
            raise TrackError(f"{w}: audio_offset must be finite")
        if check_audio and self.audio:
            p = self.audio_path
            if p is None or not p.is_file():
                raise TrackError(f"{w}: audio file not found: {p if p is not None else self.audio} "
                                 "(moved or deleted? it is stored relative to the track)")

    def check_widths(self, n_speech: int | None = None, n_expression: int | None = None) -> None:
        """Raise TrackError when the track's widths differ from a model's."""
        w = self._where()
        if n_speech is not None and self.n_speech != n_speech:
            raise TrackError(f"{w}: has {self.n_speech} speech parameters, the model expects "
                             f"{n_speech}")
        if n_expression is not None and self.expression is not None and self.n_expression != n_expression:
            raise TrackError(f"{w}: has {self.n_expression} expression parameters, the model expects "
                             f"{n_expression}")
        if n_expression is not None and self.expression is None:
            self.n_expression = int(n_expression)

    # -------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return len(self.times)

    @property
    def n_speech(self) -> int:
        return int(self.speech.shape[1])

    @property
    def n_params(self) -> int:
        return int(self.n_expression) + self.n_speech

    @property
    def start(self) -> float:
        return float(self.times[0])

    @property
    def end(self) -> float:
        return float(self.times[-1])

    @property
    def duration(self) -> float:
        """Seconds from the first frame to the end of the last (one frame period after it)."""
        period = 1.0 / self.fps if self.fps else 0.0
        return float(self.times[-1] - self.times[0] + period)

    @property
    def audio_path(self) -> Path | None:
        if not self.audio:
            return None
        p = Path(self.audio)
        if not p.is_absolute() and self.path is not None:
            p = Path(self.path).parent / p
        return p

    @property
    def params(self) -> np.ndarray:
        """(T, n_expression + n_speech) float32: ``[p_exp, p_speech]`` per frame."""
        exp = (self.expression if self.expression is not None
               else np.zeros((len(self), self.n_expression), np.float32))
        return np.concatenate([exp, self.speech], axis=1)

    @property
    def names(self) -> list[str]:
        exp = self.expression_names or [f"exp_{i:02d}" for i in range(self.n_expression)]
        return list(exp) + list(self.speech_names)

    def at(self, t: float) -> np.ndarray:
        """``p = [p_exp, p_speech]`` at time ``t`` seconds (float32), linearly interpolated between
        frames and held at the first/last frame outside the track."""
        return self.at_times(np.array([t], np.float64))[0]

    def at_times(self, ts) -> np.ndarray:
        """``at`` for many times at once: (len(ts), n_params)."""
        return _interpolate(self.times, self.params, ts)

    def pose_at_times(self, ts) -> np.ndarray | None:
        """The head pose and gaze (len(ts), 8) at times ``ts``, interpolated like ``at``; None without one."""
        if self.pose is None:
            return None
        return _interpolate(self.times, self.pose, ts)

    def speech_at(self, t: float) -> np.ndarray:
        return self.at(t)[self.n_expression:]

    def expression_at(self, t: float) -> np.ndarray:
        return self.at(t)[:self.n_expression]

    def resample(self, fps: float, start: float | None = None, end: float | None = None) -> "ParamTrack":
        """A regular track at ``fps`` over [start, end] (default: this track's span), by ``at``."""
        if not fps or fps <= 0:
            raise TrackError(f"resample: fps must be positive, got {fps}")
        if not MIN_FPS <= fps <= MAX_FPS:
            raise TrackError(f"resample: fps {fps:g} is outside {MIN_FPS:g}..{MAX_FPS:g}")
        start = self.start if start is None else float(start)
        end = self.end if end is None else float(end)
        if not (np.isfinite(start) and np.isfinite(end) and 0 <= end - start <= MAX_SECONDS):
            raise TrackError(f"resample: the span {start:g} .. {end:g} s must be finite, ordered and at most "
                             f"{MAX_SECONDS:.0f} s")
        n = int(np.floor((end - start) * fps + 1e-6)) + 1
        ts = start + np.arange(max(n, 1)) / fps
        p = self.at_times(ts)
        ne = self.n_expression
        return ParamTrack(times=ts, speech=p[:, ne:], expression=p[:, :ne] if self.expression is not None
                          else None, fps=float(fps), speech_names=list(self.speech_names),
                          expression_names=list(self.expression_names) if self.expression_names
                          else None, n_expression=ne, audio=self.audio, audio_offset=self.audio_offset,
                          meta={**self.meta, "resampled_from_fps": self.fps}, path=self.path,
                          pose=self.pose_at_times(ts), lids=self.lids)

    # ---------------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike) -> Path:
        return save_track(self, path)


def _interpolate(times: np.ndarray, values: np.ndarray, ts) -> np.ndarray:
    """Rows of ``values`` at times ``ts``, linear between frames, held outside them (float32)."""
    ts = np.asarray(ts, np.float64).reshape(-1)
    if not np.all(np.isfinite(ts)):
        raise TrackError("at(): time must be finite")
    p = np.asarray(values, np.float64)
    if len(times) == 1:
        return np.repeat(p, len(ts), axis=0).astype(np.float32)
    i = np.clip(np.searchsorted(times, ts, side="right") - 1, 0, len(times) - 2)
    t0 = times[i]
    t1 = times[i + 1]
    a = np.clip((ts - t0) / (t1 - t0), 0.0, 1.0)[:, None]
    return ((1 - a) * p[i] + a * p[i + 1]).astype(np.float32)


def save_track(track: ParamTrack, path: str | os.PathLike) -> Path:
    """Write ``track`` to ``path`` (atomically). ``track.audio`` is stored relative to the track's
    folder when it lies inside it, else absolute."""
    from .atomic import atomic_path
    path = Path(path)
    track.validate(check_audio=False)
    audio = ""
    if track.audio:
        ap = track.audio_path
        try:
            audio = os.path.relpath(Path(ap).resolve(), path.resolve().parent)
            if audio.startswith(".."):
                audio = str(Path(ap).resolve())
        except ValueError:
            audio = str(Path(ap).resolve())
    arrays = {
        "format": np.array(FORMAT), "version": np.array(VERSION, np.int64),
        "fps": np.array(float(track.fps) if track.fps else 0.0),
        "times": track.times, "speech": track.speech,
        "speech_names": np.array(track.speech_names, dtype=str),
        "n_expression": np.array(int(track.n_expression), np.int64),
        "audio": np.array(audio), "audio_offset": np.array(float(track.audio_offset)),
        "meta": np.array(json.dumps(track.meta, default=str)),
    }
    if track.expression is not None:
        arrays["expression"] = track.expression
        arrays["expression_names"] = np.array(track.expression_names, dtype=str)
    if track.pose is not None:
        arrays["pose"] = track.pose
    if track.lids is not None:
        arrays["lids"] = track.lids
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    track.path = path
    track.audio = audio or None
    return path


def load_track(path: str | os.PathLike, check_audio: bool = True) -> ParamTrack:
    """Read and validate a track file. A missing audio file is an error unless ``check_audio=False``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"track not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
        data = {k: z[k] for k in z.files}
    except Exception as e:
        raise TrackError(f"cannot read track {path}: not a slidergan track file ({type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''})") from None
    fmt = str(data.get("format", ""))
    if fmt != FORMAT:
        raise TrackError(f"{path} is not a slidergan track (format {fmt!r})")
    version = int(data.get("version", -1))
    if version != VERSION:
        raise TrackError(f"track {path} has format version {version}; this slidergan reads version "
                         f"{VERSION}")
    for key in ("times", "speech"):
        if key not in data:
            raise TrackError(f"track {path} lacks the {key!r} array")
    try:
        meta = json.loads(str(data.get("meta", "{}")))
    except json.JSONDecodeError:
        raise TrackError(f"track {path}: meta is not valid JSON") from None
    fps = float(data.get("fps", 0.0)) or None
    exp = data.get("expression")
    try:
        track = ParamTrack(
            times=data["times"], speech=data["speech"], expression=exp, fps=fps,
            speech_names=[str(x) for x in data["speech_names"]] if "speech_names" in data else None,
            expression_names=[str(x) for x in data["expression_names"]]
            if "expression_names" in data else None,
            n_expression=int(data["n_expression"]) if "n_expression" in data and exp is None else None,
            audio=str(data.get("audio", "")) or None,
            audio_offset=float(data.get("audio_offset", 0.0)), meta=meta, path=path, pose=data.get("pose"),
            lids=data.get("lids"))
    except TrackError as e:
        msg = str(e)
        raise TrackError(msg.replace("track:", f"track {path}:", 1)) from None
    track.validate(check_audio=check_audio)
    return track


# --------------------------------------------------------------------------------------- extract
def _clip_pose(landmarks: np.ndarray, found: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 8) head pose and gaze of every frame with a face relative to the clip's mean pose (0 elsewhere; the
    gaze NaN where the eyes are shut), and (T,) each frame's yaw against a frontal face (0 elsewhere)."""
    from .pose import mean_pose, measure, relative, yaw_of
    poses = {i: measure(landmarks[i]) for i in np.flatnonzero(found)}
    neutral = mean_pose(list(poses.values()))
    out, yaw = np.zeros((len(landmarks), N_POSE), np.float64), np.zeros(len(landmarks))
    for i, hp in poses.items():
        out[i], yaw[i] = relative(hp, neutral), yaw_of(hp)
    return out, yaw


def _fill(values: np.ndarray, bad: np.ndarray, t: np.ndarray) -> None:
    """Rows ``bad`` (bool (T,)) of ``values`` (T, C) interpolated in place over ``t`` from the others (0: none)."""
    if not bad.any():
        return
    good = np.flatnonzero(~bad)
    for c in range(values.shape[1]):
        values[bad, c] = np.interp(t[bad], t[good], values[good, c]) if len(good) else 0.0


def extract_track(video: str | os.PathLike, out: str | os.PathLike, audio: str | None = "m4a",
                  start: float = 0.0, end: float | None = None, model=None,
                  smooth: bool = False, progress: bool = True, neutral_from: str | os.PathLike | None = None
                  ) -> ParamTrack:
    """Fit every frame of ``video`` and write a track to ``out``; copy the audio next to it.

    ``audio``: "m4a" (the AAC stream copied as is), "wav" (16-bit PCM) or None (no audio). The audio
    file is ``<out without suffix>.<audio>``. The face mesh of every frame comes from
    ``engine.face.FaceTracker``; the parameters from ``model.fit_sequence`` (default:
    ``engine.blendshapes.load_default_face_model()``: the sequence's neutral carries the identity,
    each frame's ``p = [p_exp, p_speech]`` is a bounded fit in [-1, 1], read from the neutral with its
    lips closed, meta["neutral_lips_closed_by"]). Frames without a usable face
    get parameters interpolated in time from their neighbours (listed in
    meta["frames_without_face"]). ``smooth`` runs a One Euro filter over the parameters
    (``engine.smoothing.PARAM_SMOOTHING``; the head's pose without its lag, ``engine.smoothing.Lookahead``).
    ``neutral_from``: a photo or video of the same face at rest, whose neutral shape (``estimate_neutral`` of its
    faces) is p = 0 instead of the video's own calmest frames: a video that holds an expression from its first
    frame to its last keeps it in the track (render's ``--neutral-from``)."""
    from .face import FaceTracker
    from .video import extract_audio, read_frames, video_info

    video = Path(video)
    out = Path(out)
    if audio not in (None, "m4a", "wav"):
        raise ValueError(f"audio must be 'm4a', 'wav' or None, not {audio!r}")
    info = video_info(video)
    if model is None:
        from .blendshapes import load_default_face_model
        model = load_default_face_model()
    neutral, rest_crops, crops = None, [], []
    if neutral_from is not None:
        from .blendshapes import align_many, estimate_neutral
        from .face import faces_in_file
        try:
            rest = [r for r in faces_in_file(neutral_from) if r.ok]
        except ValueError as e:
            raise TrackError(f"--neutral-from: {e}") from None
        if not rest:
            raise TrackError(f"--neutral-from: no face in {neutral_from}")
        neutral = estimate_neutral(align_many(np.stack([r.landmarks for r in rest])))[0]
        rest_crops = [r.crop for r in rest[::max(1, len(rest) // 5)]][:5]   # whose face it is (below)

    times, lms, statuses = [], [], {}
    span_end = info.duration if end is None else min(end, info.duration)
    total = max(0, int(round((span_end - start) * info.fps)))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="frame", desc=f"track {video.name}", leave=False)
    nan = np.full((478, 3), np.nan, np.float32)
    with FaceTracker(fps=info.fps) as tr:
        for frame, t in read_frames(video, start=start, end=end, lazy=True):   # only the face converted
            r = tr.process(frame, t)
            times.append(t)
            statuses[r.status] = statuses.get(r.status, 0) + 1
            lms.append(r.landmarks if r.ok else nan)
            if rest_crops and r.ok and len(crops) < 30:
                crops.append(r.crop)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    if not times:
        raise TrackError(f"no frames in {video} between {start} s and {end} s")
    lms = np.stack(lms)
    found = np.all(np.isfinite(lms.reshape(len(lms), -1)), axis=1)
    if not found.any():
        raise TrackError(f"no usable face in any frame of {video} ({statuses})")
    if rest_crops:      # another person's face at rest would read every frame as a grimace
        from .person import SAME_PERSON_DISTANCE, crops_distance
        far = crops_distance(rest_crops, crops[::6], rest[0].size)
        if far is not None and far > SAME_PERSON_DISTANCE:
            raise TrackError(f"--neutral-from {neutral_from} shows someone else than {video} (face-recognition "
                             f"distance {far:.2f}; the same person's faces are within {SAME_PERSON_DISTANCE})")
    fit = model.fit_sequence(lms) if neutral is None else model.fit_sequence(lms, neutral=neutral)
    p = np.array(fit.p, np.float64)
    # p = 0 is the clip's neutral face; where its lips are apart (a clip that talks through its calmest
    # frames), p is read from that face with its lips closed, as a face driver's neutral is
    # (streaming.drivers.neutral_of): its mouth's motion then reaches a portrait whole, from closed lips,
    # instead of every closing shutting the portrait's mouth further than closed
    closed = np.zeros(p.shape[1])
    if hasattr(model, "lid_gaps"):      # a FaceModel (closed_mouth moves its mesh)
        from .geometry import closed_mouth
        closed = closed_mouth(model, fit.neutral, closed).astype(np.float64)
    p -= closed
    pose, yaw = _clip_pose(lms, found)
    if hasattr(model, "lid_gaps"):      # a turned head's far eye blinks with its near one, a blink's two eyes
        from .pose import BlinkPairing, link_far_eye     # shut alike, as a face driver's
        p = link_far_eye(model, p, yaw)
        blinks = BlinkPairing(model, model.lid_gaps(fit.neutral))
        p = np.stack([blinks.pair(row, float(t)) for row, t in zip(p, times)])
    valid = found & np.asarray(fit.valid, bool) & np.all(np.isfinite(p), axis=1)
    t_arr = np.asarray(times, np.float64)
    missing = np.flatnonzero(~valid)
    _fill(pose[:, N_HEAD:], np.isnan(pose[:, N_HEAD]), t_arr)      # a blink: the gaze from the frames beside it
    _fill(p, ~valid, t_arr)
    _fill(pose, ~valid, t_arr)
    n_exp = int(model.n_exp)
    if smooth:
        from .pose import LIMITS
        from .smoothing import Lookahead, group_columns, group_filter
        widths = {"exp": n_exp, "speech": p.shape[1] - n_exp, "pose": N_HEAD, "gaze": N_POSE - N_HEAD}
        f = group_filter(widths, info.fps)
        ahead, both = Lookahead(f, columns=group_columns(widths)), []   # offline: the head without lag
        for x, t in zip(np.concatenate([p, pose / LIMITS], axis=1), t_arr):
            both += ahead.push(t, f(x, t), x)
        both = np.stack([v for v, _ in both + ahead.finish()])
        p = np.clip(both[:, :p.shape[1]], -1.0, 1.0)
        pose = both[:, p.shape[1]:] * LIMITS
    names = [str(x) for x in model.param_names]

    audio_file = None
    if audio and info.has_audio:
        audio_file = out.with_suffix(f".{audio}")
        if audio_file == out:
            raise ValueError(f"the track and its audio would share a name: {out}")
        extract_audio(video, audio_file)
    elif audio and not info.has_audio:
        log.warning("%s has no audio track; the parameter track has no audio", video)

    res = np.asarray(getattr(fit, "residual_px", np.full(len(p), np.nan)), np.float64)[valid]
    meta = {"source": str(video), "source_fps": info.fps, "start": start, "end": end,
            "frames": len(times), "frames_without_face": [int(i) for i in missing],
            "statuses": statuses, "smoothed": bool(smooth),
            "neutral_lips_closed_by": [round(float(v), 4) for v in closed],
            "model": model.describe() if hasattr(model, "describe") else type(model).__name__}
    if len(res) and np.isfinite(res).any():
        meta["fit_residual_px_mean"] = float(np.nanmean(res))
        meta["fit_residual_px_max"] = float(np.nanmax(res))
    t0 = float(times[0])
    # The audio file starts with the audio stream's first sample, which need not be at the first video
    # frame (e.g. a clip whose video starts 0.84 s into the container): track time 0 is audio time
    # t0 - audio_delay.
    audio_t0 = t0 - float(getattr(info, "audio_delay", 0.0)) if audio_file else t0
    track = ParamTrack(times=t_arr - t0, speech=p[:, n_exp:], expression=p[:, :n_exp], fps=info.fps,
                       speech_names=names[n_exp:], expression_names=names[:n_exp],
                       audio=str(audio_file) if audio_file else None, audio_offset=audio_t0, meta=meta,
                       pose=pose, lids=model.lid_gaps(fit.neutral) if hasattr(model, "lid_gaps") else None)
    save_track(track, out)
    track.validate(check_audio=True)
    return track
