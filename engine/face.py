"""Face front-end: MediaPipe face mesh, alignment to a fixed template, crops, and paste-back.

Conventions
-----------
- Images are RGB ``uint8`` arrays of shape (H, W, 3).
- Landmarks are ``float32`` arrays of shape (478, 3): the MediaPipe face mesh with refined irises
  (points 468-477). In frame coordinates x, y are pixels and z is MediaPipe's relative depth scaled
  by the frame width (so it is in pixels too; smaller = nearer the camera).
- An alignment is a 2x3 similarity matrix ``M`` (rotation, uniform scale, translation) that maps
  frame pixels to crop pixels: ``crop_xy = M[:, :2] @ xy + M[:, 2]``. ``transform_points`` applies it to
  (N, 3) landmarks, scaling z by the same factor.

Template
--------
``engine/assets/face_template.npy`` holds one (478, 3) canonical face in *unit crop* coordinates
(x, y in [0, 1] of the crop side, z in the same unit). It was built by ``build_template`` from the
face mesh of the stills and of every 20th video frame in ``../shared/data`` (the command is at the
bottom of this file): generalised Procrustes in 3D on the stable points, frontalised (eye line
horizontal, symmetry plane vertical), made left-right symmetric, then placed so that the forehead
top (mesh point 10) sits at y = 0.13 and the chin (point 152) at y = 0.83, centred horizontally: the
whole face, the chin with the mouth open and some forehead fit the crop. A crop of any size S uses
the same template times S.

The 2D alignment is the least-squares similarity (Umeyama) from the x, y of ``STABLE_POINTS``
(forehead, nose bridge, eye corners, temples and cheekbones: points that expressions and speech
hardly move; no lips, jaw, eyelids or brows) to the template's x, y. ``align_mesh_3d`` does the same
in 3D (rotation, scale, translation) and is what the blendshape models use as the rigid alignment.

Streams
-------
``FaceTracker`` locks on to one face (the largest, or one picked) and follows it: the mesh (video
mode) runs on a square around the face only, placed from the last frame's landmarks, so the cost per
frame does not grow with the frame and distant faces are read at the mesh's resolution; when the face
is lost the full-range detector (``FaceLocator``) searches the frame again and re-acquires the same
face by position and size. The alignment (crop centre, log crop side, roll angle) is smoothed with a
One Euro filter, so crops jitter little. It never raises on a frame: each result has a ``status``
(``ok``, ``multiple_faces``, ``no_face``, ``too_small``, ``lost``). A face is "too small" when the
side of the frame region that becomes the crop is below ``min_face_px`` (default ``MIN_FACE_PX`` = 56
frame pixels, i.e. a face about 32 px wide cheek to cheek, forehead-to-chin ~39 px).

Small and distant faces
-----------------------
The mesh's own detector is short-range (faces within about 2 m of the camera, a good part of the
picture). ``FaceLocator`` runs MediaPipe's full-range detector (up to about 5 m) on a thumbnail of the
frame and, for frames longer than ``DETECT_TILE`` px where that finds nothing, on full-resolution
tiles; the mesh then runs on a square around each face (``FaceMeshDetector.detect_in``). Stills
(``detect_and_align``) do the same for faces the whole-picture mesh misses, so a full-body photo is a
portrait when its face is large enough.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .images import ImageReadError, load_image  # images enter through engine.images (re-exported)

log = logging.getLogger(__name__)

__all__ = [
    "NUM_LANDMARKS", "STABLE_POINTS", "FACE_OVAL", "FOREHEAD_TOP", "CHIN", "MIN_FACE_PX", "DEFAULT_SIZE",
    "FaceError", "NoFaceError", "FaceTooSmallError", "ImageReadError",
    "STATUS_OK", "STATUS_MULTIPLE", "STATUS_NO_FACE", "STATUS_TOO_SMALL", "STATUS_LOST",
    "FACE_WIDTH_SHARE", "MESH_INPUT", "AlignedFace", "FaceBox", "FaceLocator", "FaceMeshDetector", "FaceTracker",
    "describe_face_size",
    "load_image", "template_points", "canonical_mesh", "estimate_similarity", "alignment_matrix",
    "transform_points", "invert_matrix", "matrix_scale", "warp_to_crop", "align_face", "face_mask",
    "paste_back", "detect_landmarks", "detect_and_align", "align_mesh_3d", "umeyama",
    "alignment_jitter", "paste_back_error", "faces_in_file", "mirror_partners", "mirror_landmarks",
]

NUM_LANDMARKS = 478
DEFAULT_SIZE = 128
MIN_FACE_PX = 56          # crop region side, frame px: a face about 32 px wide (FACE_WIDTH_SHARE), box ~35 px
# Sizes: a face's "crop region" (AlignedFace.face_px) is the side of the frame square its aligned crop
# covers; the face itself, cheek to cheek (mesh points 234-454), is this share of it (the template's):
FACE_WIDTH_SHARE = 0.57
MESH_INPUT = 384          # the face mesh runs on a square around one face, scaled to this side (at 256, the
#                           face was shrunk below the frame's pixels before MediaPipe cut its own crop from it:
#                           held out, self-driven landmark error 1.461 px against 1.437, for the same CPU)
ROI_SCALE = 1.6           # that square's side / the face's crop region side
ROI_SHIFT, ROI_RESIZE = 0.06, 0.08   # the square follows when the face is off its centre by this share
#                                     of its side, or its size is off by this log ratio
BOX_TO_FOOTPRINT = 1.6    # full-range detector box width -> crop region side (1.58 measured on s5.jpg)
DETECT_TILE = 800         # frames longer than this are searched in tiles too when the thumbnail finds no face
TILE_EVERY_S = 0.5        # a tracker with nothing in view searches the tiles this often (the thumbnail every frame)
LOCATE_THUMBNAIL = 640    # the whole-frame search runs on a thumbnail this long (the detector sees 192 px)

STATUS_OK = "ok"
STATUS_MULTIPLE = "multiple_faces"   # a face was aligned: the largest (tracker: the locked one) of several
STATUS_NO_FACE = "no_face"
STATUS_TOO_SMALL = "too_small"
STATUS_LOST = "lost"                 # tracker: faces in view, but not the locked one (not followed)

# Points that expressions and speech hardly move (MediaPipe face-mesh indices).
STABLE_POINTS: tuple[int, ...] = (
    # forehead
    10, 151, 9, 8, 109, 338, 67, 297, 108, 337, 69, 299,
    # nose bridge and tip
    168, 6, 197, 195, 5, 4, 1,
    # eye corners
    33, 133, 362, 263,
    # temples and cheekbones
    127, 356, 234, 454, 93, 323, 116, 345, 117, 346, 123, 352, 143, 372, 139, 368, 71, 301, 21, 251,
)
# The face outline (the points of MediaPipe's FACEMESH_FACE_OVAL).
FACE_OVAL: tuple[int, ...] = (
    10, 21, 54, 58, 67, 93, 103, 109, 127, 132, 136, 148, 149, 150, 152, 162, 172, 176, 234, 251, 284,
    288, 297, 323, 332, 338, 356, 361, 365, 377, 378, 379, 389, 397, 400, 454)
FOREHEAD_TOP, CHIN = 10, 152
# Template placement in unit crop coordinates (see module docstring).
TEMPLATE_TOP_Y, TEMPLATE_CHIN_Y = 0.13, 0.83

_ASSET = Path(__file__).resolve().parent / "assets" / "face_template.npy"


# ----------------------------------------------------------------------------------------- errors
class FaceError(ValueError):
    """Base class of the face front-end's errors about inputs."""


class NoFaceError(FaceError):
    """No usable face in an image."""


class FaceTooSmallError(NoFaceError):
    """A face was found but it is below the minimum size."""


def describe_face_size(face_px: float) -> str:
    """A crop region side in words: "60 px crop region (a face about 34 px wide)"."""
    return f"{face_px:.0f} px crop region (a face about {face_px * FACE_WIDTH_SHARE:.0f} px wide)"


def _as_rgb(image) -> np.ndarray:
    if isinstance(image, (str, os.PathLike)):
        return load_image(image)
    image = np.asarray(image)
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise FaceError(f"expected an RGB image (H, W, 3), got shape {image.shape}")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.max() <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image)


# -------------------------------------------------------------------------------------- geometry
_template_cache: np.ndarray | None = None


def canonical_mesh() -> np.ndarray:
    """The (478, 3) template in unit crop coordinates (a copy). See the module docstring."""
    global _template_cache
    if _template_cache is None:
        if not _ASSET.exists():
            raise FileNotFoundError(f"face template asset missing: {_ASSET} (rebuild: python -m "
                                    "engine.face build-template)")
        t = np.load(_ASSET).astype(np.float32)
        if t.shape != (NUM_LANDMARKS, 3):
            raise ValueError(f"face template {_ASSET} has shape {t.shape}, expected (478, 3)")
        _template_cache = t
    return _template_cache.copy()


def template_points(size: int = DEFAULT_SIZE) -> np.ndarray:
    """The template in pixel coordinates of a ``size`` x ``size`` crop, (478, 3) float32."""
    return canonical_mesh() * np.float32(size)


_mirror_cache: np.ndarray | None = None


def mirror_partners() -> np.ndarray:
    """(478,) each mesh point's mirror partner across the face's midline (the template is symmetric in x about
    the crop's centre): a permutation, the nearest mirrored template points matched one to one."""
    global _mirror_cache
    if _mirror_cache is None:
        from scipy.optimize import linear_sum_assignment
        t = canonical_mesh().astype(np.float64)
        mirrored = t * np.array([-1.0, 1.0, 1.0]) + np.array([1.0, 0.0, 0.0])
        cost = ((mirrored[:, None] - t[None]) ** 2).sum(-1)
        _mirror_cache = linear_sum_assignment(cost)[1]
    return _mirror_cache.copy()


def mirror_landmarks(landmarks: np.ndarray, size: float) -> np.ndarray:
    """Face-mesh landmarks (..., 478, 3) in the pixels of a ``size`` wide crop, as the face mesh of the crop
    flipped left-right would read them: x mirrored, each point taking its partner's place."""
    lm = np.asarray(landmarks)[..., mirror_partners(), :].copy()
    lm[..., 0] = size - lm[..., 0]
    return lm


def umeyama(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None,
            with_scale: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity ``dst ~ s R src + t`` in any dimension (Umeyama 1991).

    Returns (s, R, t). A proper rotation (det R = +1)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum()
    mu_s = w @ src
    mu_d = w @ dst
    xs = src - mu_s
    xd = dst - mu_d
    cov = (xd * w[:, None]).T @ xs
    u, d, vt = np.linalg.svd(cov)
    sgn = np.ones(src.shape[1])
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sgn[-1] = -1
    r = u @ np.diag(sgn) @ vt
    var_s = (w * (xs ** 2).sum(1)).sum()
    s = float((d * sgn).sum() / var_s) if with_scale and var_s > 0 else 1.0
    t = mu_d - s * r @ mu_s
    return s, r, t


def estimate_similarity(src_xy: np.ndarray, dst_xy: np.ndarray,
                        weights: np.ndarray | None = None) -> np.ndarray:
    """2x3 least-squares similarity matrix mapping ``src_xy`` (N, 2) onto ``dst_xy`` (N, 2)."""
    s, r, t = umeyama(np.asarray(src_xy)[:, :2], np.asarray(dst_xy)[:, :2], weights)
    m = np.zeros((2, 3))
    m[:, :2] = s * r
    m[:, 2] = t
    return m


def alignment_matrix(landmarks: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """2x3 similarity from frame pixels to the ``size`` crop for frame-coordinate ``landmarks``."""
    lm = _check_landmarks(landmarks)
    idx = list(STABLE_POINTS)
    return estimate_similarity(lm[idx, :2], template_points(size)[idx, :2])


def matrix_scale(m: np.ndarray) -> float:
    """Uniform scale of a 2x3 similarity (crop pixels per frame pixel for an alignment)."""
    m = np.asarray(m, np.float64)
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


def invert_matrix(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine matrix."""
    m = np.asarray(m, np.float64)
    a_inv = np.linalg.inv(m[:, :2])
    out = np.zeros((2, 3))
    out[:, :2] = a_inv
    out[:, 2] = -a_inv @ m[:, 2]
    return out


def transform_points(points: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Apply a 2x3 similarity to (N, 2) or (N, 3) points; z (if any) is scaled by its scale."""
    p = np.asarray(points, np.float64)
    m = np.asarray(m, np.float64)
    out = p.copy()
    out[:, :2] = p[:, :2] @ m[:, :2].T + m[:, 2]
    if p.shape[1] > 2:
        out[:, 2:] = p[:, 2:] * matrix_scale(m)
    return out.astype(np.float32)


def align_mesh_3d(landmarks: np.ndarray, with_scale: bool = True) -> np.ndarray:
    """Rigid (similarity) 3D alignment of frame-coordinate landmarks onto the canonical template.

    Returns (478, 3) float32 in unit crop coordinates: head pose, position and size removed, only
    the shape (identity, expression, speech) left. Fitted on ``STABLE_POINTS``."""
    lm = _check_landmarks(landmarks).astype(np.float64)
    tpl = canonical_mesh().astype(np.float64)
    idx = list(STABLE_POINTS)
    s, r, t = umeyama(lm[idx], tpl[idx], with_scale=with_scale)
    return (s * lm @ r.T + t).astype(np.float32)


def _check_landmarks(landmarks) -> np.ndarray:
    lm = np.asarray(landmarks, np.float32)
    if lm.ndim != 2 or lm.shape[0] != NUM_LANDMARKS or lm.shape[1] not in (2, 3):
        raise ValueError(f"expected face-mesh landmarks of shape (478, 3), got {lm.shape}")
    return lm


def _footprint(m: np.ndarray, size: int) -> np.ndarray:
    """The four frame-coordinate corners of the crop's footprint."""
    inv = invert_matrix(m)
    c = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64) - 0.5
    return c @ inv[:, :2].T + inv[:, 2]


def _roi(m: np.ndarray, size: int, shape, margin: int = 2):
    pts = _footprint(m, size)
    h, w = shape[:2]
    x0 = int(max(0, np.floor(pts[:, 0].min()) - margin))
    y0 = int(max(0, np.floor(pts[:, 1].min()) - margin))
    x1 = int(min(w, np.ceil(pts[:, 0].max()) + margin + 1))
    y1 = int(min(h, np.ceil(pts[:, 1].max()) + margin + 1))
    return x0, y0, x1, y1


def warp_to_crop(image: np.ndarray, m: np.ndarray, size: int = DEFAULT_SIZE) -> np.ndarray:
    """Cut the ``size`` x ``size`` crop that ``m`` defines out of ``image``, antialiased.

    When the crop is smaller than the face in the frame, the face region is first shrunk with area
    averaging, so the crop does not alias; regions outside the frame repeat the border pixels."""
    import cv2
    image = _as_rgb(image)
    m = np.asarray(m, np.float64)
    x0, y0, x1, y1 = _roi(m, size, image.shape)
    if x1 - x0 < 2 or y1 - y0 < 2:
        # The crop lies (almost) entirely outside the frame.
        return cv2.warpAffine(image, m, (size, size), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
    roi = image[y0:y1, x0:x1]
    s = matrix_scale(m)
    # crop px = M (roi_px + offset)
    m_roi = m.copy()
    m_roi[:, 2] = m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2]
    if s < 0.7:
        w_new = max(2, int(round((x1 - x0) * s * 1.25)))
        h_new = max(2, int(round((y1 - y0) * s * 1.25)))
        small = cv2.resize(roi, (w_new, h_new), interpolation=cv2.INTER_AREA)
        fx = (x1 - x0) / w_new
        fy = (y1 - y0) / h_new
        # small px q -> roi px p = f (q + 0.5) - 0.5
        a = np.array([[fx, 0, 0.5 * fx - 0.5], [0, fy, 0.5 * fy - 0.5], [0, 0, 1]])
        m_roi = np.vstack([m_roi, [0, 0, 1]]) @ a
        m_roi = m_roi[:2]
        roi = small
    return cv2.warpAffine(roi, m_roi, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


# ------------------------------------------------------------------------------------ paste-back
_mask_cache: dict = {}


def face_mask(size: int = DEFAULT_SIZE, shape: str = "face", feather: float | None = None) -> np.ndarray:
    """Soft blending mask (size, size) float32 in [0, 1] in crop coordinates.

    ``shape="face"``: the template's face outline (with room for the chin to drop when the mouth
    opens, and up to the crop's top for the forehead); ``"rect"``: the whole crop. Either is eroded by
    ``feather`` pixels (default size / 16) and blurred with a Gaussian of sigma feather / 2, so it is
    0 at its outline and 1 well inside."""
    import cv2
    feather = size / 16.0 if feather is None else float(feather)
    key = (size, shape, round(feather, 3))
    if key in _mask_cache:
        return _mask_cache[key].copy()
    mask = np.zeros((size, size), np.uint8)
    if shape == "rect":
        mask[:] = 1
    elif shape == "face":
        pts = template_points(size)[list(FACE_OVAL), :2]
        drop = np.array([0, 0.08 * size], np.float32)   # chin with the mouth open
        up = pts.copy()
        up[:, 1] -= 0.06 * size                          # a little more forehead
        hull = cv2.convexHull(np.concatenate([pts, pts + drop, up]).astype(np.float32))
        cv2.fillConvexPoly(mask, np.round(hull).astype(np.int32), 1)
    else:
        raise ValueError(f"unknown mask shape {shape!r}: use 'face' or 'rect'")
    # Treat everything beyond the crop as outside the mask, then erode and blur.
    pad = int(np.ceil(feather)) + 2
    big = cv2.copyMakeBorder(mask, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    k = max(1, int(round(feather)))
    big = cv2.erode(big, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    out = big.astype(np.float32)
    sigma = max(feather / 2.0, 0.5)
    out = cv2.GaussianBlur(out, (0, 0), sigma)[pad:-pad, pad:-pad]
    out = np.clip(out, 0.0, 1.0).astype(np.float32)
    _mask_cache[key] = out
    return out.copy()


def paste_back(frame: np.ndarray, crop: np.ndarray, m: np.ndarray, mask: np.ndarray | str = "face",
               feather: float | None = None, keep_detail: bool = True) -> np.ndarray:
    """Put an (edited) crop back into ``frame`` through the inverse of the alignment ``m``.

    ``mask``: "face", "rect" (see ``face_mask``) or a (S, S) float array in crop coordinates
    (e.g. the generator's attention mask times a face mask). Returns a new uint8 frame; only the
    crop's footprint is touched, blended with the feathered mask, so there is no seam.

    ``keep_detail`` (default): the frame's own fine detail, which a small crop cannot hold, is kept
    wherever the crop's structure is unchanged. The original crop ``warp_to_crop(frame, m, S)`` is
    recomputed; where the edited crop differs from it (after removing slow colour/brightness shifts,
    i.e. a Gaussian of sigma S/10 of the difference) by less than 8 grey levels the frame's detail
    (frame minus the upsampled original crop) is added back in full, fading to none at 24 levels and
    above. So an unedited crop reproduces the frame exactly, a tint keeps the detail, and where the
    face really changes (a mouth opens) the crop's content replaces the old detail. Set it to False
    for plain resampling of the crop (then the crop need not come from this frame)."""
    import cv2
    frame = _as_rgb(frame)
    crop = _as_rgb(crop)
    size = crop.shape[0]
    if crop.shape[1] != size:
        raise ValueError(f"crop must be square, got {crop.shape}")
    m = np.asarray(m, np.float64)
    if isinstance(mask, str):
        mk = face_mask(size, mask, feather)
    else:
        mk = np.asarray(mask, np.float32)
        if mk.shape != (size, size):
            raise ValueError(f"mask shape {mk.shape} does not match the crop {crop.shape[:2]}")
    out = frame.copy()
    x0, y0, x1, y1 = _roi(m, size, frame.shape)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return out
    # frame px (roi + offset) -> crop px:  M_roi; warpAffine with WARP_INVERSE_MAP samples the crop.
    m_roi = m.copy()
    m_roi[:, 2] = m[:, :2] @ np.array([x0, y0], np.float64) + m[:, 2]
    dsize = (x1 - x0, y1 - y0)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP

    def up(img, border=cv2.BORDER_REPLICATE):
        return cv2.warpAffine(img, m_roi, dsize, flags=flags, borderMode=border)

    region = out[y0:y1, x0:x1].astype(np.float32)
    new = up(crop.astype(np.float32))
    if keep_detail:
        orig = warp_to_crop(frame, m, size).astype(np.float32)
        change = crop.astype(np.float32) - orig
        # Slow colour or brightness shifts are not structural changes: take them out first.
        change -= cv2.GaussianBlur(change, (0, 0), size / 10.0)
        diff = cv2.GaussianBlur(np.abs(change).max(axis=2), (0, 0), max(size / 128.0, 0.5))
        w_crop = np.clip((24.0 - diff) / 16.0, 0.0, 1.0).astype(np.float32)
        detail = region - up(orig)
        new = new + up(w_crop)[:, :, None] * detail
    wmask = cv2.warpAffine(mk, m_roi, dsize, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=0.0)[:, :, None]
    blended = wmask * new + (1.0 - wmask) * region
    out[y0:y1, x0:x1] = np.clip(np.round(blended), 0, 255).astype(np.uint8)
    return out


# ------------------------------------------------------------------------------------- detection
_quiet_done = False


def _quiet_logs() -> None:
    """Silence MediaPipe/TFLite/absl start-up chatter (best effort, before the first graph)."""
    global _quiet_done
    if _quiet_done:
        return
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        from absl import logging as absl_logging
        absl_logging.set_verbosity(absl_logging.ERROR)
    except Exception:  # pragma: no cover
        pass
    _quiet_done = True


@contextlib.contextmanager
def _stderr_silenced():
    """Redirect the process's fd 2 to /dev/null (the C++ graph logs there, bypassing Python).
    Only used around graph construction and the first frame; SLIDERGAN_DEBUG=1 keeps the logs."""
    if os.environ.get("SLIDERGAN_DEBUG"):
        yield
        return
    try:
        fd = os.dup(2)
    except OSError:  # pragma: no cover
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(fd, 2)
        os.close(fd)


def _face_area(lm: np.ndarray) -> float:
    xy = lm[:, :2]
    span = xy.max(0) - xy.min(0)
    return float(span[0] * span[1])


# Frames: an RGB array, or a decoded video frame that converts only the pixels asked for
# (``engine.video.DecodedFrame``, from ``read_frames(lazy=True)``).
def _frame_shape(frame) -> tuple[int, int]:
    if hasattr(frame, "region"):
        return int(frame.shape[0]), int(frame.shape[1])
    return frame.shape[0], frame.shape[1]


def _frame_region(frame, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    if hasattr(frame, "region"):
        return frame.region(x0, y0, x1, y1)
    return frame[y0:y1, x0:x1]


def _frame_thumbnail(frame, max_side: int) -> tuple[np.ndarray, float]:
    """The whole frame with its longer side at most ``max_side``, and its scale (thumbnail px / frame px)."""
    if hasattr(frame, "thumbnail"):
        return frame.thumbnail(max_side)
    import cv2
    h, w = frame.shape[:2]
    k = min(1.0, max_side / max(h, w))
    if k >= 1.0:
        return frame, 1.0
    tw, th = max(1, int(round(w * k))), max(1, int(round(h * k)))
    return cv2.resize(frame, (tw, th), interpolation=cv2.INTER_AREA), tw / w


def _area_factor(iw: int, ih: int, w: int, h: int) -> int:
    """The whole part of a shrink from iw x ih to w x h (1: none worth an area pass)."""
    f = int(min(iw / max(w, 1), ih / max(h, 1)))
    return f if f >= 2 else 1


def _resize_fast(img: np.ndarray, w: int, h: int) -> np.ndarray:
    """Resize for the mesh's input: bilinear, after an area shrink by the whole part of the factor when
    shrinking more than 2x. OpenCV's area resize costs 3x as much at a factor that is not exactly whole
    (a 512 px region to 170: 1.04 ms against 0.34 ms from 510 px): ``_square_patch`` trims its region to
    multiples of it (``_area_factor``)."""
    import cv2
    ih, iw = img.shape[:2]
    f = _area_factor(iw, ih, w, h)
    if f >= 2:
        img = cv2.resize(img, (max(1, iw // f), max(1, ih // f)), interpolation=cv2.INTER_AREA)
    if img.shape[:2] == (h, w):
        return img
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)


def _square_patch(frame, cx: float, cy: float, side: float, out: int):
    """The ``side`` x ``side`` frame square centred on (cx, cy), resized to ``out`` x ``out`` (black
    where it leaves the frame). Returns (patch, (ax, bx, ay, by)) with frame x = ax * patch x + bx,
    frame y = ay * patch y + by; None when the square misses the frame."""
    import cv2
    h, w = _frame_shape(frame)
    side_i = max(8, int(round(side)))
    x0, y0 = int(round(cx - side_i / 2)), int(round(cy - side_i / 2))
    ix0, iy0 = max(0, x0), max(0, y0)
    ix1, iy1 = min(w, x0 + side_i), min(h, y0 + side_i)
    if ix1 - ix0 < 4 or iy1 - iy0 < 4:
        return None
    k = out / side_i
    nw = max(1, min(out, int(round((ix1 - ix0) * k))))
    nh = max(1, min(out, int(round((iy1 - iy0) * k))))
    left = min(out - nw, max(0, int(round((ix0 - x0) * k))))
    top = min(out - nh, max(0, int(round((iy0 - y0) * k))))
    f = _area_factor(ix1 - ix0, iy1 - iy0, nw, nh)
    # whole multiples of the area shrink (up to f - 1 pixels less of the frame at the far edges): its fast path
    ix1, iy1 = ix0 + (ix1 - ix0) // f * f, iy0 + (iy1 - iy0) // f * f
    small = _resize_fast(_frame_region(frame, ix0, iy0, ix1, iy1), nw, nh)
    if (nw, nh) != (out, out):
        small = cv2.copyMakeBorder(small, top, out - top - nh, left, out - left - nw, cv2.BORDER_CONSTANT,
                                   value=(0, 0, 0))
    ax, ay = (ix1 - ix0) / nw, (iy1 - iy0) / nh
    return np.ascontiguousarray(small), (ax, ix0 - left * ax, ay, iy0 - top * ay)


@dataclass
class FaceBox:
    """A face found by the full-range detector, in frame pixels (x, y: top-left corner)."""
    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.x + self.w / 2, self.y + self.h / 2])

    @property
    def footprint(self) -> float:
        """The side of the crop region (``AlignedFace.face_px``) a face with this box has (estimated)."""
        return float(self.w) * BOX_TO_FOOTPRINT

    @property
    def area(self) -> float:
        return float(self.w * self.h)


def _iou(a: FaceBox, b: FaceBox) -> float:
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    inter = ix * iy
    return inter / max(a.area + b.area - inter, 1e-9)


class FaceLocator:
    """Where the faces are: MediaPipe's full-range face detector (``face_detection``, ``model_selection=1``:
    faces up to about 5 m from the camera), which the face mesh's own short-range detector is not.

    The detector sees 192 x 192 pixels, so ``locate`` searches a thumbnail of the whole frame and, when
    that finds nothing (or ``tiles=True``) in a frame longer than ``tile`` pixels, overlapping
    ``tile``-pixel squares of it at full resolution: a face 40 px wide is then 10 px or more to the
    detector (in a whole 1280 px frame it would be 6 px, below what it finds). Returns boxes in frame
    pixels, largest first. Not thread-safe (one locator per thread)."""

    def __init__(self, min_confidence: float = 0.5, tile: int = DETECT_TILE):
        _quiet_logs()
        with _stderr_silenced():
            import mediapipe as mp
            self._det = mp.solutions.face_detection.FaceDetection(
                model_selection=1, min_detection_confidence=min_confidence)
            self._det.process(np.zeros((64, 64, 3), np.uint8))
        self.tile = int(tile)
        self._lock = threading.Lock()

    def _run(self, rgb: np.ndarray, scale: float, ox: float, oy: float) -> list[FaceBox]:
        h, w = rgb.shape[:2]
        with self._lock:
            if self._det is None:
                raise RuntimeError("FaceLocator is closed")
            res = self._det.process(np.ascontiguousarray(rgb))
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            if not (b.width > 0 and b.height > 0):
                continue
            out.append(FaceBox(ox + b.xmin * w / scale, oy + b.ymin * h / scale, b.width * w / scale,
                               b.height * h / scale, float(d.score[0]) if d.score else 0.0))
        return out

    def locate(self, frame, tiles: bool | None = None) -> list[FaceBox]:
        h, w = _frame_shape(frame)
        thumb, k = _frame_thumbnail(frame, LOCATE_THUMBNAIL)
        boxes = self._run(thumb, k, 0.0, 0.0)
        if tiles is None:
            tiles = not boxes
        if tiles and max(h, w) > self.tile:
            t = self.tile
            step = int(t * 0.75)
            xs = list(range(0, max(1, w - t), step)) + [max(0, w - t)]
            ys = list(range(0, max(1, h - t), step)) + [max(0, h - t)]
            for y0 in sorted(set(ys)):
                for x0 in sorted(set(xs)):
                    tile = _frame_region(frame, x0, y0, min(w, x0 + t), min(h, y0 + t))
                    boxes += self._run(tile, 1.0, x0, y0)
        # one box per face: where boxes overlap (whole frame and tiles, neighbouring tiles) keep the surest
        boxes.sort(key=lambda b: b.score, reverse=True)
        kept: list[FaceBox] = []
        for b in boxes:
            if all(_iou(b, c) < 0.3 for c in kept):
                kept.append(b)
        kept.sort(key=lambda b: b.area, reverse=True)
        return kept

    def close(self) -> None:
        with self._lock:
            if self._det is not None:
                self._det.close()
                self._det = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_LANDMARK_FLOATS = np.r_[3:7, 8:12, 13:17]   # x, y, z in a landmark's 17 bytes on the wire


def _landmark_xyz(landmarks) -> np.ndarray:
    """(n, 3) float64 x, y, z of a mediapipe NormalizedLandmarkList, read from its wire format (each
    landmark: its tag and length, then x, y and z, each a tag and 4 bytes) where it has exactly that
    layout: 0.03 ms a face, against 0.2 for reading the 1434 fields one by one (the same numbers)."""
    buf = landmarks.SerializeToString()
    n = len(landmarks.landmark)
    if n and len(buf) == 17 * n:
        rec = np.frombuffer(buf, np.uint8).reshape(n, 17)
        if np.all(rec[:, :3] == (0x0A, 15, 0x0D)) and np.all(rec[:, [7, 12]] == (0x15, 0x1D)):
            return np.ascontiguousarray(rec[:, _LANDMARK_FLOATS]).view("<f4").astype(np.float64)
    return np.array([(p.x, p.y, p.z) for p in landmarks.landmark], np.float64).reshape(-1, 3)


class FaceMeshDetector:
    """MediaPipe face mesh (legacy ``mp.solutions.face_mesh``, refine_landmarks=True, 478 points).

    ``static=True`` runs face detection on every image (stills, video frames, the ``FaceTracker``'s
    squares); ``static=False`` is video mode (detection once, then the mesh placed from its last landmarks,
    which reads open mouths short). ``detect`` returns frame-coordinate landmarks of every face, the
    largest first. The mesh's own detector is short-range (faces within about 2 m, a good part of
    the frame); in static mode ``detect`` also asks a ``FaceLocator`` (full-range) for faces and runs
    the mesh on a square around each face the whole-frame mesh missed (``detect_in``), so small and
    distant faces (a full-body photo, a group) are found too. ``unmeshed`` then lists the located
    faces the mesh found no landmarks for (too small for it). Not thread-safe: one detector per
    thread (calls are serialised by a lock)."""

    def __init__(self, static: bool = True, max_faces: int = 4, min_detection_confidence: float = 0.5,
                 min_tracking_confidence: float = 0.5, locate: bool | None = None):
        _quiet_logs()
        with _stderr_silenced():
            import mediapipe as mp
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=static, max_num_faces=max_faces, refine_landmarks=True,
                min_detection_confidence=min_detection_confidence,
                min_tracking_confidence=min_tracking_confidence)
            # The graph's calculators start (and log) asynchronously; one blank frame while fd 2 is
            # silenced lets them finish starting. No face in it, so tracking state is unaffected.
            self._mesh.process(np.zeros((64, 64, 3), np.uint8))
        self.static = static
        self.max_faces = max_faces
        self.locate = static if locate is None else bool(locate)
        self._locator: FaceLocator | None = None
        self.unmeshed: list[FaceBox] = []
        self.last_patch = None          # (patch, (ax, bx, ay, by)) of the last detect_in
        self._lock = threading.Lock()
        self._first = True

    def _process(self, rgb: np.ndarray):
        with self._lock:
            if self._mesh is None:
                raise RuntimeError("FaceMeshDetector is closed")
            if self._first:
                with _stderr_silenced():
                    res = self._mesh.process(rgb)
                self._first = False
            else:
                res = self._mesh.process(rgb)
        return res

    @staticmethod
    def _landmarks(res, w: float, h: float, ax: float = 1.0, bx: float = 0.0, ay: float = 1.0,
                   by: float = 0.0) -> list[np.ndarray]:
        faces = []
        for f in res.multi_face_landmarks or []:
            a = (_landmark_xyz(f) * (w, h, w)).astype(np.float32)
            if a.shape == (NUM_LANDMARKS, 3) and np.all(np.isfinite(a)):
                a[:, 0] = a[:, 0] * ax + bx
                a[:, 1] = a[:, 1] * ay + by
                a[:, 2] *= (ax + ay) / 2
                faces.append(a)
        return faces

    def detect(self, image) -> list[np.ndarray]:
        rgb = _as_rgb(image)
        h, w = rgb.shape[:2]
        faces = self._landmarks(self._process(rgb), w, h)
        self.unmeshed = []
        if self.locate and self.static and len(faces) < self.max_faces:
            for box in self.locator.locate(rgb):
                if len(faces) >= self.max_faces:
                    break
                c = box.centre
                if any(f[:, 0].min() <= c[0] <= f[:, 0].max() and f[:, 1].min() <= c[1] <= f[:, 1].max()
                       for f in faces):
                    continue   # the whole-frame mesh has this one
                found = self.detect_in(rgb, c[0], c[1], box.footprint * ROI_SCALE)
                near = found and np.hypot(*(found[0][list(STABLE_POINTS), :2].mean(0) - c)) < 0.5 * box.footprint
                if near:
                    faces.append(found[0])
                else:
                    self.unmeshed.append(box)
        faces.sort(key=_face_area, reverse=True)
        return faces

    def detect_in(self, frame, cx: float, cy: float, side: float) -> list[np.ndarray]:
        """The mesh on the ``side`` x ``side`` square around (cx, cy) only, scaled to ``MESH_INPUT``
        pixels: frame-coordinate landmarks, the face nearest the square's centre first. ``frame``: an
        RGB array or an ``engine.video.DecodedFrame`` (then only the square is converted)."""
        got = _square_patch(frame, cx, cy, side, MESH_INPUT)
        if got is None:
            return []
        patch, (ax, bx, ay, by) = got
        self.last_patch = got
        faces = self._landmarks(self._process(patch), MESH_INPUT, MESH_INPUT, ax, bx, ay, by)
        faces.sort(key=lambda f: float(np.hypot(*(f[list(STABLE_POINTS), :2].mean(0) - (cx, cy)))))
        return faces

    def forget(self) -> None:
        """Video mode: drop the face being tracked (the next frame runs the mesh's own detection)."""
        if not self.static:
            self._process(np.zeros((MESH_INPUT, MESH_INPUT, 3), np.uint8))

    @property
    def locator(self) -> FaceLocator:
        if self._locator is None:
            self._locator = FaceLocator()
        return self._locator

    def close(self) -> None:
        with self._lock:
            if self._mesh is not None:
                self._mesh.close()
                self._mesh = None
            if self._locator is not None:
                self._locator.close()
                self._locator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):  # pragma: no cover
        try:
            self.close()
        except Exception:
            pass


_static_detector: FaceMeshDetector | None = None
_static_lock = threading.Lock()


def _shared_static_detector() -> FaceMeshDetector:
    global _static_detector
    with _static_lock:
        if _static_detector is None:
            _static_detector = FaceMeshDetector(static=True, max_faces=4)
        return _static_detector


def detect_landmarks(image) -> list[np.ndarray]:
    """Landmarks (478, 3) of every face in a still image (path or RGB array), largest first."""
    return _shared_static_detector().detect(_as_rgb(image))


# ------------------------------------------------------------------------------------- alignment
@dataclass
class AlignedFace:
    """One aligned face (or, from ``FaceTracker``, a frame's report with ``crop`` None when no face).

    crop: (S, S, 3) uint8 RGB, or None.          landmarks: (478, 3) frame coordinates, or None.
    crop_landmarks: (478, 3) crop coordinates.     matrix: 2x3 frame -> crop similarity.
    size: S.  n_faces: faces seen in the frame.  face_px: side of the crop's footprint in the frame.
    status: one of ok, multiple_faces, no_face, too_small.  message: a human-readable line.
    faces (``detect_and_align``): every face's landmarks in the picture, largest first."""
    crop: np.ndarray | None
    landmarks: np.ndarray | None
    crop_landmarks: np.ndarray | None
    matrix: np.ndarray | None
    size: int
    n_faces: int = 1
    face_px: float = 0.0
    status: str = STATUS_OK
    message: str = ""
    t: float | None = None
    raw_matrix: np.ndarray | None = field(default=None, repr=False)
    faces: list | None = field(default=None, repr=False)   # a still's every face mesh, largest first

    @property
    def ok(self) -> bool:
        """True when a face was aligned (status ok or multiple_faces)."""
        return self.matrix is not None and self.status in (STATUS_OK, STATUS_MULTIPLE)

    def paste_back(self, frame: np.ndarray, crop: np.ndarray, mask="face",
                   feather: float | None = None, keep_detail: bool = True) -> np.ndarray:
        """``paste_back(frame, crop, self.matrix, mask, feather, keep_detail)``."""
        if self.matrix is None:
            return _as_rgb(frame).copy()
        return paste_back(frame, crop, self.matrix, mask, feather, keep_detail)


def align_face(image, landmarks: np.ndarray, size: int = DEFAULT_SIZE,
               matrix: np.ndarray | None = None) -> AlignedFace:
    """Align and crop one face given its frame-coordinate landmarks (or a ready ``matrix``)."""
    rgb = _as_rgb(image)
    lm = _check_landmarks(landmarks)
    m = alignment_matrix(lm, size) if matrix is None else np.asarray(matrix, np.float64)
    crop = warp_to_crop(rgb, m, size)
    return AlignedFace(crop=crop, landmarks=lm, crop_landmarks=transform_points(lm, m), matrix=m,
                       size=size, face_px=size / matrix_scale(m))


def detect_and_align(image, size: int = DEFAULT_SIZE, min_face_px: float = MIN_FACE_PX,
                     detector: FaceMeshDetector | None = None, face: tuple[float, float] | None = None,
                     name: str | None = None) -> AlignedFace:
    """Detect the face in a still (path or RGB array) and return its aligned ``size`` crop.

    Faces anywhere in the picture count: a full-body or group photo works when the face is large
    enough (the static detector also searches with the full-range detector, ``FaceMeshDetector``).
    Several faces: the largest is aligned, or with ``face`` (an (x, y) pixel of the picture) the one
    there (``face_at``); ``status`` is ``multiple_faces``, ``n_faces`` says how many and the message
    where each is (logged as a warning without ``face``). No face -> NoFaceError; a face whose crop
    footprint is below ``min_face_px`` frame pixels (or one too small for the face mesh at all) ->
    FaceTooSmallError, saying the size found and the size needed (pass 0 to accept any size the mesh
    reads). Unreadable file -> FileNotFoundError / ImageReadError. ``name``: the picture's, in messages
    (default: its path)."""
    name = name or (str(image) if isinstance(image, (str, os.PathLike)) else "the image")
    rgb = _as_rgb(image)
    det = detector or _shared_static_detector()
    faces = det.detect(rgb)
    if not faces:
        small = list(getattr(det, "unmeshed", []) or [])
        if small:
            b = max(small, key=lambda x: x.area)
            raise FaceTooSmallError(
                f"the face in {name} is too small: about {b.w:.0f} px wide ({describe_face_size(b.footprint)}), "
                f"too small for the face mesh; at least {describe_face_size(min_face_px or MIN_FACE_PX)} "
                "is needed: use a closer or larger photo")
        raise NoFaceError(f"no face found in {name} ({rgb.shape[1]}x{rgb.shape[0]})")
    chosen = faces[0] if face is None else face_at(faces, face)
    res = align_face(rgb, chosen, size)
    res.n_faces, res.faces = len(faces), list(faces)
    if res.face_px < min_face_px:
        raise FaceTooSmallError(f"face in {name} is too small: {describe_face_size(res.face_px)}, "
                                f"minimum {describe_face_size(min_face_px)}")
    if len(faces) > 1:
        res.status = STATUS_MULTIPLE
        centres = " and ".join("{:.0f},{:.0f}".format(*(mesh_box(f)[:2] + mesh_box(f)[2:]) / 2) for f in faces)
        # said by the caller, who knows how to choose another (a command's flag; the page lists every face)
        res.message = (f"{len(faces)} faces in {name}, centred at {centres} (x,y); aligned "
                       + ("the largest" if face is None else "the one at {:g},{:g}".format(*face)))
    return res


def box_at(boxes, point: tuple[float, float]) -> int:
    """Index of the box at ``point`` (x, y) among ``boxes`` ((x0, y0, x1, y1) each): the nearest centre among
    those holding it, else among all (a face picked by a pixel of it: ``face_at``, ``FaceTracker.pick``)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    p = np.asarray(point, np.float64)[:2]
    inside = np.flatnonzero(np.all((b[:, :2] <= p) & (p <= b[:, 2:]), axis=1))
    pool = inside if len(inside) else np.arange(len(b))
    return int(pool[np.argmin(np.hypot(*((b[pool, :2] + b[pool, 2:]) / 2 - p).T))])


def mesh_box(landmarks: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) of a face mesh's landmarks (478, 3)."""
    return np.concatenate([landmarks[:, :2].min(0), landmarks[:, :2].max(0)])


def face_at(faces: list[np.ndarray], point: tuple[float, float]) -> np.ndarray:
    """Of several faces' landmarks (478, 3) in one picture, the one at ``point`` (``box_at`` of their meshes'
    boxes)."""
    return faces[box_at([mesh_box(f) for f in faces], point)]


# ---------------------------------------------------------------------------------------- tracker
def _matrix_to_params(m: np.ndarray, size: int) -> np.ndarray:
    """(crop centre x, y in frame px, log footprint side, roll angle) of an alignment."""
    inv = invert_matrix(m)
    c = inv[:, :2] @ np.array([(size - 1) / 2.0] * 2) + inv[:, 2]
    s = matrix_scale(m)
    ang = np.arctan2(m[1, 0], m[0, 0])
    return np.array([c[0], c[1], np.log(size / s), ang])


def _params_to_matrix(p: np.ndarray, size: int) -> np.ndarray:
    cx, cy, log_side, ang = p
    s = size / np.exp(log_side)
    r = s * np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    m = np.zeros((2, 3))
    m[:, :2] = r
    m[:, 2] = np.array([(size - 1) / 2.0] * 2) - r @ np.array([cx, cy])
    return m


class FaceTracker:
    """One face followed through a stream of frames, with a temporally smoothed alignment.

    Per frame, the face mesh runs on a square around the followed face only (``ROI_SCALE`` times its
    crop region, scaled to ``MESH_INPUT`` px), placed from the previous frame's landmarks: the cost
    does not grow with the frame, and faces far from the camera (small in an HD frame) are read at the
    mesh's resolution. When the face is lost, a ``FaceLocator`` (full-range detector; tiles for HD
    frames) finds the faces in the whole frame again. Frames: RGB arrays, or
    ``engine.video.DecodedFrame`` (``read_frames(lazy=True)``), of which only the face's square (and,
    when searching, a thumbnail) is converted to RGB.

    Several people: the tracker locks on to one face, the largest when it starts (or the one nearest
    a point given to ``pick``), and follows it, never another: if the locked face is lost while others
    are in view the status is ``lost`` (the message says how many faces are ignored); it is
    re-acquired by position and size (the candidate nearest its last place and of a similar size,
    the search widening with the time lost), not by being the largest. After ``relock_s`` seconds
    without it the tracker locks on to the face nearest where it was. ``n_faces`` counts the faces
    found at the last search (a search runs at least every ``recount_s`` seconds).

    ``process(frame, t)`` returns an ``AlignedFace`` for every frame and never raises on a frame's
    content: statuses ok, multiple_faces, no_face, too_small, lost. The alignment's crop centre, log
    side and roll are One Euro filtered in face-relative units (centre divided by the footprint side),
    so the settings do not depend on the face's size in the frame. Landmarks stay unsmoothed (they
    carry the expression); ``crop_landmarks`` are them under the smoothed matrix. After ``reset_after``
    seconds without a face the filter restarts. ``max_faces`` and ``static`` are accepted for
    compatibility (one face is followed; frames are a stream).

    ``smooth=False`` gives the per-frame alignment (the figure the tests compare against). ``lazy_crop``:
    each face's crop is cut when first read (``TrackedFace``), for a caller that reads few of them (a mesh
    driver); one that keeps results should read their crops, or they keep their frames."""

    def __init__(self, size: int = DEFAULT_SIZE, smooth: bool = True, min_cutoff: float = 1.0,
                 beta: float = 10.0, d_cutoff: float = 1.0, min_face_px: float = MIN_FACE_PX,
                 max_faces: int = 4, fps: float = 30.0, static: bool = False,
                 reset_after: float = 0.5, detector: FaceMeshDetector | None = None,
                 locator: FaceLocator | None = None, relock_s: float = 2.0, recount_s: float = 1.0,
                 pick: tuple[float, float] | None = None, lazy_crop: bool = False):
        from .smoothing import OneEuroFilter
        self.size = int(size)
        self.smooth = smooth
        self.lazy_crop = lazy_crop
        self.min_face_px = float(min_face_px)
        self.fps = float(fps)
        self.reset_after = float(reset_after)
        self.relock_s = float(relock_s)
        self.recount_s = float(recount_s)
        self._own_detector = detector is None
        # Static mode on the face's square (its own detector places the mesh every frame): in video mode
        # the mesh, placed from its previous landmarks, reads open mouths short of their lips (0.89-0.96 of
        # the static mesh's motion on held-out talking clips, its points on the teeth; static 0.96-1.02).
        # Two faces: a neighbour's may reach into the square, and of two the one nearest its centre is taken
        # (``detect_in``); with one a call, the detector's more confident face was taken, whoever's it was.
        self.detector = detector or FaceMeshDetector(static=True, max_faces=2, locate=False)
        self._own_locator = locator is None
        self._locator = locator
        self._filter = OneEuroFilter(min_cutoff=min_cutoff, beta=beta, d_cutoff=d_cutoff, freq=fps)
        self._last_t: float | None = None
        self._last_face_t: float | None = None
        self._ref_side: float | None = None
        self._roi: tuple[float, float, float] | None = None     # square the mesh runs on: cx, cy, side
        self._target: tuple[float, float, float, float] | None = None  # locked face: cx, cy, footprint, t
        self._pick: tuple[float, float] | None = None
        self._shape: tuple[int, int] | None = None
        self._n_seen = 0
        self._last_search_t: float | None = None
        self._last_tiles_t: float | None = None
        self.locked = False
        self.counts = {STATUS_OK: 0, STATUS_MULTIPLE: 0, STATUS_NO_FACE: 0, STATUS_TOO_SMALL: 0}
        if pick is not None:
            self.pick(*pick)

    @property
    def locator(self) -> FaceLocator:
        if self._locator is None:
            self._locator = FaceLocator()
        return self._locator

    def reset(self) -> None:
        self._filter.reset()
        self._ref_side = None
        self._last_face_t = None

    def pick(self, x: float, y: float, normalized: bool = False) -> None:
        """Follow the face at (or nearest to) frame point (x, y) from the next frame on, instead of the
        one locked now. ``normalized``: x, y are fractions of the frame's width and height."""
        x, y = float(x), float(y)
        if not (np.isfinite(x) and np.isfinite(y)):
            raise ValueError("pick needs a finite point")
        if normalized:
            if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                raise ValueError("a normalized point lies in 0..1")
            self._pick = (x, y, True)
        else:
            self._pick = (x, y, False)
        self._roi = None

    def unlock(self) -> None:
        """Forget the locked face: the next search locks on to the largest."""
        self._target = None
        self._roi = None
        self.locked = False

    def _choose(self, boxes: list[FaceBox], t: float, h: int, w: int) -> FaceBox | None:
        if self._pick is not None:
            px, py, norm = self._pick
            if norm:
                px, py = px * w, py * h
            self._pick = None
            self._target = None
            return boxes[box_at([(b.x, b.y, b.x + b.w, b.y + b.h) for b in boxes], (px, py))]
        if self._target is None:
            return boxes[0]   # the largest
        cx, cy, fp, t_seen = self._target
        lost_s = max(0.0, t - t_seen)
        dist = [float(np.hypot(*(b.centre - (cx, cy)))) / fp for b in boxes]
        if lost_s > self.relock_s:
            return boxes[int(np.argmin(dist))]
        gate = 1.0 + 3.0 * lost_s     # crop regions: how far the face may have moved since
        ok = [(d, b) for d, b in zip(dist, boxes) if d <= gate and 0.5 <= b.footprint / fp <= 2.0]
        return min(ok, key=lambda x: x[0])[1] if ok else None

    def _search(self, frame, t: float, h: int, w: int):
        """Find the faces in the whole frame and choose the one to follow: (box or None, n boxes)."""
        small = self._target is not None and self._target[2] / BOX_TO_FOOTPRINT < max(h, w) * 0.06
        # Tiles (several detector runs) at most every TILE_EVERY_S while nothing is in view, so an empty
        # HD scene does not cost them on every frame.
        may_tile = small or self._last_tiles_t is None or t - self._last_tiles_t >= TILE_EVERY_S \
            or t < self._last_tiles_t
        if may_tile:
            self._last_tiles_t = t
        boxes = self.locator.locate(frame, tiles=True if small else (None if may_tile else False))
        if not boxes:
            # A face so close that it fills the picture (cut off at the edges) can escape the full-range
            # detector; the mesh's own short-range detector, on the whole frame, finds it.
            self.detector.forget()
            for lm in self.detector.detect_in(frame, w / 2.0, h / 2.0, float(max(h, w))):
                m = alignment_matrix(lm, self.size)
                fp = self.size / matrix_scale(m)
                c = _matrix_to_params(m, self.size)[:2]
                bw = fp / BOX_TO_FOOTPRINT
                boxes.append(FaceBox(c[0] - bw / 2, c[1] - bw / 2, bw, bw, 1.0))
        self._last_search_t = t
        self._n_seen = len(boxes)
        if not boxes:
            return None, 0
        return self._choose(boxes, t, h, w), len(boxes)

    def process(self, frame, t: float | None = None) -> AlignedFace:
        if t is None:
            t = 0.0 if self._last_t is None else self._last_t + 1.0 / self.fps
        self._last_t = float(t)
        try:
            if not hasattr(frame, "region"):
                frame = _as_rgb(frame)
            h, w = _frame_shape(frame)
            if h < 8 or w < 8:
                return self._report(STATUS_NO_FACE, "no face (frame too small)", t, 0)
            return self._track(frame, float(t), h, w)
        except Exception as e:  # a broken frame must not end the stream
            return self._report(STATUS_NO_FACE, f"frame unusable: {e}", t, 0)

    def _track(self, frame, t: float, h: int, w: int) -> AlignedFace:
        if self._shape != (h, w):    # another stream (or camera): nothing carries over
            self._shape = (h, w)
            self.unlock()
        searched = False
        box = None
        for attempt in range(2):
            if self._roi is None:
                box, n = self._search(frame, t, h, w)
                searched = True
                if box is None:
                    if n and self._target is not None:
                        return self._report(STATUS_LOST, f"the locked face is lost: {n} other face"
                                            f"{'s' if n > 1 else ''} in view, not followed", t, n)
                    return self._report(STATUS_NO_FACE, "no face", t, 0)
                self._roi = (float(box.centre[0]), float(box.centre[1]), box.footprint * ROI_SCALE)
                self.detector.forget()
            found = self.detector.detect_in(frame, *self._roi)
            lm = found[0] if found else None
            if lm is not None:
                raw = alignment_matrix(lm, self.size)
                if not searched and self._target is not None:
                    # the mesh kept a face: is it still the locked one (no jump to a neighbour)?
                    c = _matrix_to_params(raw, self.size)[:2]
                    fp = self.size / matrix_scale(raw)
                    if (np.hypot(*(c - self._target[:2])) > 0.75 * self._target[2]
                            or not 0.6 <= fp / self._target[2] <= 1.6):
                        lm = None
            if lm is not None:
                break
            self._roi = None
            if searched:
                if box.footprint < self.min_face_px:
                    return self._report(STATUS_TOO_SMALL, f"face too small: about {box.w:.0f} px wide "
                                        f"({describe_face_size(box.footprint)}), minimum "
                                        f"{describe_face_size(self.min_face_px)}", t, self._n_seen)
                return self._report(STATUS_NO_FACE, "no face (a face was located but the mesh found no "
                                    "landmarks)", t, self._n_seen)
        face_px = self.size / matrix_scale(raw)
        centre = _matrix_to_params(raw, self.size)[:2]
        side = face_px * ROI_SCALE
        if searched or abs(np.log(side / self._roi[2])) > ROI_RESIZE or \
                np.hypot(centre[0] - self._roi[0], centre[1] - self._roi[1]) > ROI_SHIFT * self._roi[2]:
            # The square moves only when the face has moved away from its centre or changed size:
            # a still face is then read from the same pixels each frame, and the mesh does not jitter
            # with the square's resampling.
            self._roi = (float(centre[0]), float(centre[1]), side)
        if not searched and self.recount_s >= 0 and (self._last_search_t is None
                                                     or t - self._last_search_t >= self.recount_s):
            self._last_search_t = t
            self._n_seen = len(self.locator.locate(frame, tiles=False))
        n_faces = max(1, self._n_seen)
        if face_px < self.min_face_px:
            return self._report(STATUS_TOO_SMALL, f"face too small: {describe_face_size(face_px)}, "
                                f"minimum {describe_face_size(self.min_face_px)}", t, n_faces, lm)
        self._target = (float(centre[0]), float(centre[1]), float(face_px), t)
        self.locked = True
        if self._last_face_t is not None and t - self._last_face_t > self.reset_after:
            self.reset()
        self._last_face_t = float(t)
        m = raw
        if self.smooth:
            p = _matrix_to_params(raw, self.size)
            if self._ref_side is None:
                self._ref_side = float(np.exp(p[2]))
            q = p.copy()
            q[:2] /= self._ref_side
            if self._filter.value is not None:
                # keep the angle continuous across the +-pi wrap
                prev = self._filter.value[3]
                q[3] = prev + (q[3] - prev + np.pi) % (2 * np.pi) - np.pi
            q = self._filter(q, t)
            q[:2] *= self._ref_side
            m = _params_to_matrix(q, self.size)
        status = STATUS_MULTIPLE if n_faces > 1 else STATUS_OK
        msg = f"{n_faces} faces; following the locked one" if n_faces > 1 else ""
        self.counts[status] += 1
        fields = dict(landmarks=lm, crop_landmarks=transform_points(lm, m), matrix=m, size=self.size,
                      n_faces=n_faces, face_px=self.size / matrix_scale(m), status=status, message=msg, t=float(t),
                      raw_matrix=raw)
        cut = _Cut(self.detector.last_patch, frame, m, self.size)
        # cut now, a failure reading as no face (process), or when read
        return TrackedFace(cut, **fields) if self.lazy_crop else AlignedFace(crop=cut(), **fields)

    def _report(self, status, message, t, n_faces, lm=None) -> AlignedFace:
        self.counts[status] = self.counts.get(status, 0) + 1
        return AlignedFace(crop=None, landmarks=lm, crop_landmarks=None, matrix=None, size=self.size,
                           n_faces=n_faces, status=status, message=message, t=float(t))

    def close(self) -> None:
        if self._own_detector:
            self.detector.close()
        if self._own_locator and self._locator is not None:
            self._locator.close()
            self._locator = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


FILE_SAMPLES = 120   # faces_in_file (and render --neutral-at auto): at most this many frames of a video, spread
FILE_SECONDS = 30.0  # faces_in_file: over at most its first this many seconds (an hour-long file is not decoded whole)


def faces_in_file(path, size: int = DEFAULT_SIZE, samples: int = FILE_SAMPLES, stop=None) -> list:
    """Tracked faces (``FaceTracker.process`` results, one a frame read; ``.ok`` where a face was found) of a photo
    or a video: a photo's one face, or a video's faces over its first FILE_SECONDS (at most ``samples`` frames,
    spread).
    A file that is neither: ValueError naming both reasons. ``stop`` (a threading.Event): set, the frames read
    so far."""
    from .images import ImageReadError, load_image
    from .video import read_frames, video_info
    not_image = None
    try:
        frames, fps = [(load_image(path), 0.0)], 30.0
    except ImageReadError as e:
        not_image = e
    read = []
    try:
        if not_image is not None:
            info = video_info(path)
            n = min(info.frame_count, int(math.ceil(FILE_SECONDS * info.fps)))
            step = max(1, -(-n // max(1, int(samples))))
            frames = ((f, t) for i, (f, t) in enumerate(read_frames(path, end=FILE_SECONDS, lazy=True))
                      if i % step == 0)
            fps = info.fps / step
        with FaceTracker(size=size, fps=fps, max_faces=1) as tracker:
            for frame, t in frames:
                if stop is not None and stop.is_set():
                    break
                read.append(tracker.process(frame, t))
    except ValueError as not_video:
        if read:                  # a video broken part-way: the faces read so far
            return read
        if not_image is None:
            raise
        raise ValueError(f"{path} is neither an image ({not_image}) nor a video ({not_video})") from None
    return read


class _Cut:
    """How a tracked face's crop is cut: from the mesh's input square (``_crop_from_patch``) where it can be,
    else from the frame."""

    def __init__(self, patch, frame, m: np.ndarray, size: int):
        self.patch, self.frame, self.m, self.size = patch, frame, m, size

    def __call__(self) -> np.ndarray:
        h, w = _frame_shape(self.frame)
        crop = _crop_from_patch(self.patch, self.m, self.size, h, w)
        return _warp_frame_to_crop(self.frame, self.m, self.size) if crop is None else crop


class TrackedFace(AlignedFace):
    """A ``FaceTracker``'s face whose ``crop`` is cut on first use (then kept, and the frame let go; a frame
    array must not be written to before). A mesh driver reads the landmarks alone, and a crop only twice a
    second for its person check: a millisecond a frame saved (an area resize at a factor that is not whole,
    on a 512 px driver)."""

    def __init__(self, cut, **fields):
        self._cut = cut
        super().__init__(crop=None, **fields)

    @property
    def crop(self) -> np.ndarray | None:
        """The aligned crop; None where it cannot be cut (said once: a frame must not end a stream, as in
        ``FaceTracker.process``, so a reader treats the face as one without a crop)."""
        cut = self._cut
        if self._crop is None and cut is not None:
            try:
                self._crop = cut()
            except Exception as e:
                log.warning("the face's crop could not be cut from its frame (%s): read without it", e)
            self._cut = None
        return self._crop

    @crop.setter
    def crop(self, value) -> None:
        self._crop = value


def _crop_from_patch(last_patch, m: np.ndarray, size: int, h: int, w: int) -> np.ndarray | None:
    """The aligned crop cut from the mesh's input square instead of the frame, when that square is at
    least as detailed as the crop and holds its whole footprint inside the frame (else None): one
    resampling of the face per frame instead of two."""
    import cv2
    if last_patch is None:
        return None
    patch, (ax, bx, ay, by) = last_patch
    if 1.0 / max(ax, ay) < 0.95 * matrix_scale(m):
        return None
    foot = _footprint(m, size)
    if foot.min() < 0 or foot[:, 0].max() > w - 1 or foot[:, 1].max() > h - 1:
        return None
    # patch pixel centres -> frame pixel centres: f = a p + (b + a/2 - 1/2)
    p2f = np.array([[ax, 0, bx + 0.5 * ax - 0.5], [0, ay, by + 0.5 * ay - 0.5], [0, 0, 1]])
    pf = (foot - p2f[:2, 2]) / np.array([ax, ay])
    n = patch.shape[0]
    if pf.min() < 0 or pf.max() > n - 1:
        return None
    m_patch = (np.vstack([np.asarray(m, np.float64), [0, 0, 1]]) @ p2f)[:2]
    return cv2.warpAffine(patch, m_patch, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _warp_frame_to_crop(frame, m: np.ndarray, size: int) -> np.ndarray:
    """``warp_to_crop`` for an RGB array or a ``DecodedFrame`` (only the crop's footprint converted)."""
    if not hasattr(frame, "region"):
        return warp_to_crop(frame, m, size)
    x0, y0, x1, y1 = _roi(m, size, frame.shape)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return warp_to_crop(frame.rgb(), m, size)
    m_roi = np.asarray(m, np.float64).copy()
    m_roi[:, 2] = m_roi[:, :2] @ np.array([x0, y0], np.float64) + m_roi[:, 2]
    # the footprint is inside the region, so the region's edges never show (no border difference)
    return warp_to_crop(frame.region(x0, y0, x1, y1), m_roi, size)


# ----------------------------------------------------------------------------------- measurements
_EYE_CORNERS = (33, 133, 362, 263)


def alignment_jitter(matrices, size: int = DEFAULT_SIZE) -> dict:
    """How much a sequence of alignments moves the crop, in crop pixels.

    For consecutive matrices, ``d_t`` is the displacement of the template's four eye corners when the
    frame content under them in frame t-1 is mapped through frame t's alignment: the crop's motion
    relative to the frame. Returns ``motion`` (mean |d_t|, px/frame), ``motion_std`` (std of d_t's
    components) and ``shake`` (mean |d_t - d_(t-1)|: the frame-to-frame jitter with smooth motion
    removed). For a still scene every bit of motion is jitter."""
    ms = [np.asarray(m, np.float64) for m in matrices]
    if len(ms) < 3:
        raise ValueError("alignment_jitter needs at least 3 matrices")
    q = template_points(size)[list(_EYE_CORNERS), :2].astype(np.float64)
    d = []
    for a, b in zip(ms[:-1], ms[1:]):
        ia = invert_matrix(a)
        p = q @ ia[:, :2].T + ia[:, 2]
        d.append(p @ b[:, :2].T + b[:, 2] - q)
    d = np.asarray(d)
    acc = np.diff(d, axis=0)
    return {"motion": float(np.linalg.norm(d, axis=-1).mean()), "motion_std": float(d.std()),
            "shake": float(np.linalg.norm(acc, axis=-1).mean())}


def paste_back_error(frame: np.ndarray, aligned: AlignedFace, **kw) -> dict:
    """Error of pasting an unedited crop back: MAE and PSNR over the frame and over the crop's
    footprint (0-255 scale)."""
    import cv2
    frame = _as_rgb(frame)
    out = paste_back(frame, aligned.crop, aligned.matrix, **kw)
    d = out.astype(np.float64) - frame
    foot = cv2.warpAffine(np.ones((aligned.size, aligned.size), np.uint8), aligned.matrix,
                          (frame.shape[1], frame.shape[0]),
                          flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST) > 0

    def psnr(x):
        mse = float((x ** 2).mean()) if x.size else 0.0
        return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
    return {"mae": float(np.abs(d).mean()), "psnr": psnr(d),
            "mae_face": float(np.abs(d[foot]).mean()) if foot.any() else 0.0, "psnr_face": psnr(d[foot]),
            "max_abs": float(np.abs(d).max())}


# ------------------------------------------------------------------------------ template building
def build_template(shapes: list[np.ndarray], iterations: int = 10) -> np.ndarray:
    """Build the canonical template from frame-coordinate landmark sets (see module docstring)."""
    shapes = [np.asarray(s, np.float64) for s in shapes]
    idx = list(STABLE_POINTS)
    ref = shapes[0].copy()
    for _ in range(iterations):
        aligned = []
        for s in shapes:
            sc, r, t = umeyama(s[idx], ref[idx])
            aligned.append(sc * s @ r.T + t)
        mean = np.mean(aligned, axis=0)
        # normalise: centred on the stable points, unit RMS size
        mean -= mean[idx].mean(0)
        mean /= np.sqrt((mean[idx] ** 2).sum(1).mean())
        ref = mean
    # Frontalise: x from right to left eye (image left -> right), y from forehead to chin.
    ex = (ref[263] + ref[362]) / 2 - (ref[33] + ref[133]) / 2
    ex /= np.linalg.norm(ex)
    ey = ref[CHIN] - ref[FOREHEAD_TOP]
    ey -= ex * (ey @ ex)
    ey /= np.linalg.norm(ey)
    ez = np.cross(ex, ey)
    rot = np.stack([ex, ey, ez])
    ref = ref @ rot.T
    # Symmetrise: mirror x, find each point's mirror partner, average.
    mid = ref[[1, 4, 6, 168, 9, 10, 151, 152, 13, 14, 0, 17]][:, 0].mean()
    ref[:, 0] -= mid
    mir = ref * np.array([-1, 1, 1])
    d = ((ref[:, None, :] - mir[None, :, :]) ** 2).sum(-1)
    partner = d.argmin(1)
    ref = (ref + mir[partner]) / 2
    # Place in unit crop coordinates.
    k = (TEMPLATE_CHIN_Y - TEMPLATE_TOP_Y) / (ref[CHIN, 1] - ref[FOREHEAD_TOP, 1])
    ref *= k
    ref[:, 0] += 0.5
    ref[:, 1] += TEMPLATE_TOP_Y - ref[FOREHEAD_TOP, 1]
    ref[:, 2] -= ref[idx, 2].mean()
    return ref.astype(np.float32)


def _build_template_from_data(data_dir: Path, every: int = 20) -> np.ndarray:
    from .video import read_frames
    shapes = []
    with FaceMeshDetector(static=True, max_faces=1) as det:
        for p in sorted((data_dir / "portraits").glob("*.jpg")):
            shapes += det.detect(load_image(p))[:1]
        for v in sorted((data_dir / "driving").glob("*.mp4")):
            for i, (rgb, _) in enumerate(read_frames(v)):
                if i % every == 0:
                    shapes += det.detect(rgb)[:1]
    if not shapes:
        raise NoFaceError(f"no faces found under {data_dir}")
    log.info("template from %d faces", len(shapes))
    return build_template(shapes)


def _main(argv: list[str]) -> int:
    """python -m engine.face build-template [DATA_DIR]
       python -m engine.face jitter VIDEO [START END]     (raw vs smoothed tracker alignment)
       python -m engine.face pasteback IMAGE_OR_VIDEO... [--size S]"""
    import argparse
    ap = argparse.ArgumentParser(prog="python -m engine.face")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-template")
    b.add_argument("data", nargs="?", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    j = sub.add_parser("jitter")
    j.add_argument("video")
    j.add_argument("start", nargs="?", type=float, default=0.0)
    j.add_argument("end", nargs="?", type=float, default=None)
    j.add_argument("--size", type=int, default=DEFAULT_SIZE)
    p = sub.add_parser("pasteback")
    p.add_argument("inputs", nargs="+")
    p.add_argument("--size", type=int, default=DEFAULT_SIZE)
    p.add_argument("--mask", default="face")
    p.add_argument("--no-detail", action="store_true")
    a = ap.parse_args(argv)
    if a.cmd == "build-template":
        tpl = _build_template_from_data(Path(a.data))
        _ASSET.parent.mkdir(parents=True, exist_ok=True)
        np.save(_ASSET, tpl)
        print(f"wrote {_ASSET} from {a.data}")
    elif a.cmd == "jitter":
        from .video import read_frames
        raw, smooth, n = [], [], 0
        with FaceTracker(size=a.size) as tr:
            for rgb, t in read_frames(a.video, start=a.start, end=a.end):
                r = tr.process(rgb, t)
                n += 1
                if r.ok:
                    raw.append(r.raw_matrix)
                    smooth.append(r.matrix)
        print(f"{a.video} [{a.start}, {a.end}) {n} frames, {len(raw)} with a face, crop {a.size}:")
        for name, ms in (("unsmoothed", raw), ("smoothed", smooth)):
            j_ = alignment_jitter(ms, a.size)
            print(f"  {name:10s} motion {j_['motion']:.3f} px/frame  motion_std {j_['motion_std']:.3f}"
                  f"  shake {j_['shake']:.3f} px/frame")
    else:
        from .video import read_frames
        for path in a.inputs:
            if Path(path).suffix.lower() in (".mp4", ".mov", ".mkv", ".avi", ".webm"):
                img = next(read_frames(path))[0]
            else:
                img = load_image(path)
            r = detect_and_align(img, size=a.size, min_face_px=0)
            e = paste_back_error(img, r, mask=a.mask, keep_detail=not a.no_detail)
            print(f"{path}: size {a.size} mask {a.mask} keep_detail {not a.no_detail}: frame MAE "
                  f"{e['mae']:.3f} PSNR {e['psnr']:.1f} dB; footprint MAE {e['mae_face']:.3f} "
                  f"PSNR {e['psnr_face']:.1f} dB; max abs {e['max_abs']:.0f}")
    return 0


if __name__ == "__main__":
    import sys
    logging.basicConfig(level=logging.INFO)
    sys.exit(_main(sys.argv[1:]))
