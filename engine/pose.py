"""Head pose and gaze: the third parameter group beside ``exp`` and ``speech``, read from the face mesh and
applied to the portrait's mesh (the geometry-guided generator carries the head along with it), with the
eyes' direction in the head (as FLAME's pose holds the eyeballs' beside the head's).

Eight numbers, in the units a person reads (a track stores them so):

    yaw    degrees, > 0: the face turns towards the image's right (the nose tip moves right)
    pitch  degrees, > 0: the chin goes down (a nod)
    roll   degrees, > 0: the head tilts clockwise in the image
    x, y   the head's move in the frame, in inter-ocular distances (eye corner to eye corner), x right,
           y down
    scale  ln of the head's size ratio (0.1: 10.5 % larger, nearer the camera)
    gaze_yaw, gaze_pitch
           degrees, the eyes turned in the head: > 0 towards the image's right, > 0 down (the mean of
           both eyes' iris centres against their corners, ``engine.geometry.gaze_angles``; on the portrait
           the eyeballs slide under the lids, ``engine.geometry.turn_eyes``)

The rotation is Rz(roll) Rx(pitch) Ry(-yaw) in camera axes (x right, y down, z away from the
camera, MediaPipe's): yaw first, then pitch, then roll.

Measuring (``measure``): the similarity that fits the face mesh's stable points (forehead, nose
bridge, eye corners, temples: ``engine.face.STABLE_POINTS``) onto the frontal canonical mesh gives the
head's orientation O, its centre (the stable points' centroid) and its size. A driver's pose is taken
relative to its own neutral (``relative``): the rotation O O_n^T, the centre's move over the neutral's
inter-ocular distance, the size ratio, the gaze's change. Absolute pose is relative to a frontal face
looking straight ahead. A track or caller with the six head numbers only is read with the gaze unmoved
(``as_pose``).

Limits (``LIMITS``): beyond them the warp stops being credible (a turned head shows what the photo
never saw; the band that carries the head stretches the background). The driver's pose is clamped
smoothly to them (``soft_clamp``: unchanged up to 80 % of a limit, then bending towards it). On sliders
a pose value is in units of its limit (-1 ... 1), like the other groups' parameters (``to_unit``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["POSE_NAMES", "POSE_UNITS", "LIMITS", "N_POSE", "N_HEAD", "as_pose", "HeadPose", "measure", "relative",
           "absolute", "mean_pose", "rotation", "euler", "soft_clamp", "to_unit", "from_unit", "apply_pose",
           "pose_labels", "POSE_PRESETS", "GAZE_READ_OPEN"]

POSE_NAMES = ("yaw", "pitch", "roll", "x", "y", "scale", "gaze_yaw", "gaze_pitch")
POSE_UNITS = ("°", "°", "°", "IOD", "IOD", "ln", "°", "°")
N_POSE = len(POSE_NAMES)
N_HEAD = 6                 # the head's own numbers, before the gaze's
# what the warp carries credibly: ±20° yaw, ±15° pitch, ±20° roll, ±0.3 inter-ocular distances, ±15 % size;
# the eyes ±30° sideways (``turn_eyes`` keeps a tenth of the eye's white beside the iris beyond), ±15° up and
# down (the lids hide more beyond)
LIMITS = np.array([20.0, 15.0, 20.0, 0.3, 0.3, 0.14, 30.0, 15.0], np.float64)
SOFT_KNEE = 0.8            # soft_clamp leaves values below this share of a limit unchanged
DEPTH_GAIN = 1.25          # apply_pose: the face mesh's depth while it turns (see there)
EYE_CORNERS = (33, 263)


# Head presets (the page's preset buttons): poses at about three quarters of the limits.
POSE_PRESETS = {
    "look left": [-15.0, 0, 0, 0, 0, 0, 0, 0], "look right": [15.0, 0, 0, 0, 0, 0, 0, 0],
    "look up": [0, -11.0, 0, 0, 0, 0, 0, 0], "look down": [0, 11.0, 0, 0, 0, 0, 0, 0],
    "tilt left": [0, 0, -15.0, 0, 0, 0, 0, 0], "tilt right": [0, 0, 15.0, 0, 0, 0, 0, 0],
    "glance left": [0, 0, 0, 0, 0, 0, -18.0, 0], "glance right": [0, 0, 0, 0, 0, 0, 18.0, 0],
}


def pose_labels() -> list[str]:
    """Readable labels of the pose group (page sliders, reports)."""
    return ["head turn (yaw, ° right)", "head nod (pitch, ° down)", "head tilt (roll, ° clockwise)",
            "head move right (eye distances)", "head move down (eye distances)", "head nearer (ln size)",
            "eyes turn (gaze, ° right)", "eyes down (gaze, ° down)"]


def as_pose(pose) -> np.ndarray:
    """Poses (..., 6 or 8) as (..., 8) float64: the head's six numbers alone mean the gaze unmoved."""
    q = np.asarray(pose, np.float64)
    if q.shape[-1] == N_HEAD:
        q = np.concatenate([q, np.zeros(q.shape[:-1] + (N_POSE - N_HEAD,))], -1)
    if q.shape[-1] != N_POSE:
        raise ValueError(f"a pose has {N_HEAD} numbers ({', '.join(POSE_NAMES[:N_HEAD])}) or {N_POSE} (and "
                         f"{', '.join(POSE_NAMES[N_HEAD:])}), not {q.shape[-1]}")
    return q


@dataclass
class HeadPose:
    """One face's head pose in its frame: orientation O (3x3, frontal -> camera), centre (3,) pixels,
    inter-ocular distance (pixels) and size (1/s of the fit onto the canonical mesh); and its gaze (2,),
    degrees (``engine.geometry.gaze_angles``; zeros without the irises, NaN while both eyes are shut)."""
    orientation: np.ndarray
    centre: np.ndarray
    iod: float
    size: float
    gaze: np.ndarray = field(default_factory=lambda: np.zeros(2))
    eyes_open: float = float("nan")     # the eyes' mean openness (engine.geometry.eye_openness; NaN: unknown)


def measure(landmarks: np.ndarray) -> HeadPose:
    """The head pose of (478|468, 3) face-mesh landmarks (pixels, MediaPipe's z)."""
    from .face import STABLE_POINTS, canonical_mesh, umeyama
    lm = np.asarray(landmarks, np.float64)
    if lm.ndim != 2 or lm.shape[0] < 468 or lm.shape[1] != 3:
        raise ValueError(f"expected face-mesh landmarks of shape (478, 3), got {lm.shape}")
    if not np.all(np.isfinite(lm[:468])):
        raise ValueError("face-mesh landmarks contain NaN or inf")
    idx = list(STABLE_POINTS)
    s, r, t = umeyama(lm[idx], canonical_mesh().astype(np.float64)[idx])   # canonical ~ s R x + t
    iod = float(np.linalg.norm(lm[EYE_CORNERS[0], :2] - lm[EYE_CORNERS[1], :2]))
    from .geometry import eye_openness, gaze_angles
    gaze = np.zeros(2)
    if lm.shape[0] >= 478 and np.all(np.isfinite(lm[468:478])):
        gaze = gaze_angles(s * lm @ r.T + t)     # in the head's frame: a turned head is not a glance
    return HeadPose(orientation=r.T, centre=lm[idx].mean(0), iod=iod, size=1.0 / s, gaze=gaze,
                    eyes_open=float(eye_openness(lm).mean()))


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rz(roll) Rx(pitch) Ry(-yaw), angles in degrees (see the module docstring)."""
    q, p, r = np.radians([-yaw, pitch, roll])
    ry = np.array([[np.cos(q), 0, np.sin(q)], [0, 1, 0], [-np.sin(q), 0, np.cos(q)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ rx @ ry


def euler(m: np.ndarray) -> np.ndarray:
    """(yaw, pitch, roll) degrees of a rotation ``rotation(yaw, pitch, roll)``."""
    m = np.asarray(m, np.float64)
    pitch = np.arcsin(np.clip(m[2, 1], -1.0, 1.0))
    yaw = -np.arctan2(-m[2, 0], m[2, 2])
    roll = np.arctan2(-m[0, 1], m[1, 1])
    return np.degrees([yaw, pitch, roll])


# A head turned away by more than EYE_TURN[0] degrees of yaw shows its far eye foreshortened, and the face mesh
# reads that eye's lids unreliably: on 48 training clips one eye read closed (under 0.4 of the clip's median) while
# the other read open (over 0.8) in 40 frames against 347 blinks, at a mean yaw of 12-45 degrees where the clips
# turned; a portrait then winked where its driver blinked. The far eye's lids follow the near eye's, wholly from
# EYE_TURN[1] (``link_far_eye``: face drivers, extracted tracks); a frontal face's wink is its own.
EYE_TURN = (10.0, 30.0)


def yaw_of(pose: HeadPose | None) -> float | None:
    """The yaw (degrees) of a head pose against a frontal face; None for None."""
    return None if pose is None else float(euler(pose.orientation)[0])


def link_far_eye(face_model, motion: np.ndarray, yaw) -> np.ndarray:
    """Blendshape parameters ``motion`` (N,) or (B, N) with the lids of the eye turned away from the camera moved
    as the near eye's, by how far the head is turned: ``yaw`` degrees (scalar or (B,); None: unknown, unchanged)
    (``EYE_TURN``)."""
    if face_model is None or yaw is None:
        return motion
    m = np.atleast_2d(np.asarray(motion, np.float64))
    yaw = np.broadcast_to(np.asarray(yaw, np.float64), (len(m),))
    w = np.clip((np.abs(yaw) - EYE_TURN[0]) / (EYE_TURN[1] - EYE_TURN[0]), 0.0, 1.0)
    if not np.any(w > 0):
        return motion
    moves, rows = face_model.lid_moves(m), np.arange(len(m))
    far = (yaw >= 0).astype(int)        # turned to negative yaw, the right eye (lid_moves' first) is the far one
    moves[rows, far] += w * (moves[rows, 1 - far] - moves[rows, far])
    out = face_model.with_lid_moves(m, moves)
    return out.reshape(np.shape(motion)).astype(np.asarray(motion).dtype)


# Both eyes shutting at once are one blink, but the face mesh reads the two eyes of a blink unevenly where the lids
# blur or the face looks down: in held-out frames with both eyes visibly shut it read one eye at 0.6-0.7 of its open
# gap and the other at 0.16-0.22, and through the blink's frames the blendshape fit's lids went 0.25 / 0.68, 0.23 /
# 0.79, 0.13 / 0.61 shut: the portrait winked (``tpsmm_driving``). A blink is where both eyes read at least
# BLINK_BOTH shut in one frame; from there until both are open again (under BLINK_OPEN shut, at most BLINK_MAX_S)
# the two eyes' lids move alike, by the mean of their moves (``BlinkPairing``: face drivers, extracted tracks). A
# wink never shuts the open eye that far, and stays a wink.
BLINK_BOTH, BLINK_OPEN, BLINK_MAX_S = 0.5, 0.15, 0.6


class BlinkPairing:
    """Makes a blink read unevenly even (``BLINK_BOTH``), frame by frame in time order: ``pair(motion, t)`` takes
    one frame's blendshape motion (N,) from the driver's neutral and its time; ``gaps`` (2,) the driver's neutral
    lid gaps (``FaceModel.lid_gaps``; None: nothing changes), against which each eye's share shut is measured."""

    def __init__(self, face_model, gaps):
        g = None if gaps is None else np.asarray(gaps, np.float64)
        ok = face_model is not None and g is not None and g.shape == (2,) and np.all(g > 1e-9)
        self.face_model, self.gaps = (face_model, g) if ok else (None, None)
        self.since: float | None = None            # when the blink under way began

    def pair(self, motion: np.ndarray, t: float) -> np.ndarray:
        if self.face_model is None or not np.all(np.isfinite(motion)):
            return motion
        moves = self.face_model.lid_moves(np.asarray(motion, np.float64))      # (2,), negative: closing
        shut = -moves / self.gaps
        if shut.min() >= BLINK_BOTH:
            self.since = t if self.since is None else self.since
        elif self.since is not None and (shut.max() < BLINK_OPEN or t - self.since > BLINK_MAX_S):
            self.since = None
        if self.since is None:
            return motion
        even = np.full(2, np.maximum(moves, -self.gaps).mean())     # as link_far_eye, in the lids' own units
        return self.face_model.with_lid_moves(np.asarray(motion, np.float64), even).astype(np.asarray(motion).dtype)


# The gaze of a frame whose eyes are less open than this share of its neutral's is not read (NaN): a closing lid
# covers the iris, whose mesh points then drop with it (a blink read as a look down).
GAZE_READ_OPEN = 0.7


def relative(pose: HeadPose, neutral: HeadPose) -> np.ndarray:
    """(8,) the pose of a frame relative to the driver's neutral (module docstring's units; the gaze NaN where
    the eyes are closing, GAZE_READ_OPEN)."""
    angles = euler(pose.orientation @ neutral.orientation.T)
    move = (pose.centre[:2] - neutral.centre[:2]) / max(neutral.iod, 1e-6)
    gaze = pose.gaze - neutral.gaze
    if pose.eyes_open < GAZE_READ_OPEN * neutral.eyes_open:
        gaze = np.full(2, np.nan)
    return np.concatenate([angles, move, [np.log(max(pose.size, 1e-9) / max(neutral.size, 1e-9))], gaze])


def absolute(pose: HeadPose) -> np.ndarray:
    """(8,) the rotation relative to a frontal face, the gaze relative to straight ahead; no move, no size
    change."""
    return np.concatenate([euler(pose.orientation), [0.0, 0.0, 0.0], pose.gaze])


def mean_pose(poses: list[HeadPose]) -> HeadPose:
    """A neutral from several frames: the rotation nearest the mean of theirs, the median rest."""
    o = np.mean([p.orientation for p in poses], axis=0)
    u, _s, vt = np.linalg.svd(o)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    gazes = np.array([p.gaze for p in poses])
    seen = np.all(np.isfinite(gazes), axis=1)           # frames mid-blink have none
    return HeadPose(orientation=r, centre=np.median([p.centre for p in poses], axis=0),
                    iod=float(np.median([p.iod for p in poses])), size=float(np.median([p.size for p in poses])),
                    gaze=np.median(gazes[seen], axis=0) if seen.any() else np.zeros(2),
                    eyes_open=float(np.nanmedian([p.eyes_open for p in poses])) if poses else float("nan"))


def soft_clamp(pose: np.ndarray) -> np.ndarray:
    """Each value unchanged up to SOFT_KNEE x its limit, then bent smoothly (C1) towards the limit."""
    u = as_pose(pose) / LIMITS
    a = np.abs(u)
    k = SOFT_KNEE
    bent = k + (1 - k) * np.tanh((a - k) / (1 - k))
    return np.sign(u) * np.where(a <= k, a, bent) * LIMITS


def to_unit(pose: np.ndarray) -> np.ndarray:
    """Physical pose -> slider units (its limit = 1), clamped smoothly."""
    return (soft_clamp(pose) / LIMITS).astype(np.float32)


def from_unit(u: np.ndarray) -> np.ndarray:
    """Slider units -> physical pose (values beyond ±1 are clamped)."""
    return np.clip(as_pose(u), -1.0, 1.0) * LIMITS


def apply_pose(points: np.ndarray, pose: np.ndarray, centre: np.ndarray, iod: float,
               frame_to_crop: np.ndarray | None = None, depth_gain: float = DEPTH_GAIN) -> np.ndarray:
    """Move 3D points (P, 3) (crop pixels) of a head whose centre is ``centre`` (3,) and inter-ocular
    distance ``iod`` (crop pixels) by ``pose`` (6 numbers, or 8: the gaze is not the head's) physical units: rotated
    about the centre, scaled about it, moved. ``frame_to_crop``: the 2x3 frame -> crop matrix when the crop is the portrait
    turned upright (its in-plane rotation is undone, so that yaw turns the head about the frame's
    vertical axis as the driver's did). ``depth_gain``: the mesh's depth is stretched by this while
    it turns (MediaPipe's depth is flatter than a head's: on the held-out portraits, at 1 a turn of
    12° yaw reads back as 10-11° and a nod of 10° pitch as 5-8.5°; at 1.25, 12-14° and 7-10°)."""
    pose = np.asarray(pose, np.float64)
    r = rotation(*pose[:3])
    move = np.array([pose[3], pose[4]]) * iod
    if frame_to_crop is not None:
        lin = np.asarray(frame_to_crop, np.float64)[:, :2]
        k = np.sqrt(abs(np.linalg.det(lin)))
        rz = np.eye(3)
        rz[:2, :2] = lin / k                     # frame -> crop rotation (a similarity's)
        r = rz @ r @ rz.T
        move = rz[:2, :2] @ move
    c = np.asarray(centre, np.float64)
    x = np.asarray(points, np.float64) - c
    stretch = np.array([1.0, 1.0, depth_gain])
    out = np.exp(pose[5]) * ((x * stretch) @ r.T) / stretch + c
    out[:, :2] += move
    return out
