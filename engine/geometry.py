"""Face geometry shared by the geometry-guided generator and the pair maker (``trainer.synth_pairs``):
the face mesh moved by blendshape parameters, and the image warped along it.

Geometry
--------
- Source mesh: the face's own 468 landmarks in crop pixels. Target mesh: the same landmarks moved
  by the model's motion ``U (p_trg - p_src)``, taken from the canonical frame back into the crop by
  the inverse of the face's rigid alignment. So whatever the model does not explain (identity
  detail, fit residual) stays exactly as it was, and the target's parameters are p_trg.
- Triangles: the 852 mesh triangles; fans that close the mouth and the two eyes (around their
  centroids); and an outer band that keeps the warp continuous out to the crop border: a ring
  around the face oval (1.35 x its radius) that moves half as much as the oval, and fixed points
  beyond the crop border, Delaunay-triangulated. The displacement fades smoothly to zero, so nothing
  tears, whatever the jaw does.
- Drawing a warp: the target triangles are rasterised (band, holes, then the face far to near) and
  every covered pixel gets the source point it shows, by its barycentrics in its triangle (one
  compiled scan of each triangle's box, ``_raster``); the image is then resampled once (bilinear).
  ``warp_mesh`` (the pair maker) does it at the crop's pixels, supersampled when ``supersample`` > 1,
  pulling the band back if a band triangle would fold. ``MeshWarp`` (every frame: the generator's
  geometry) prepares the portrait's triangles once and draws a backward map over a grid covering the
  crop and the band, whose motion is zero at the grid's edge. ``OutputWarp`` carries that map's flow
  to the output frame, so the portrait is warped at its own resolution, not as an upscaled crop.
- The mouth: where the target mouth is open wider than the source one, the new opening has no image
  content (the closed lips' line would be stretched over it). It is filled with a dark inner-mouth
  colour (the lips' mean colour darkened to ~30 %, darkest in the middle), a band of upper teeth where
  the opening is tall enough and the tongue's tip low in a wide one, blended with a soft mask in
  proportion to how much of the opening is new (``mouth_patch``).
- The lids: where the target closes an eye, its opening shows the source's eyeball moved only with the eye's
  corners, which the lids cover (``eyeball_values``; the fan had squeezed it into the slit); from a fifth of
  its area gone the opening, and the lid come down over where the eye and its lashes were (``_lid_was``), are
  painted over with the skin round the eye and a lash line along the upper lid (``lid_patches``), opaque
  from seven tenths. Mouth and lids make one drawn layer
  (``MeshWarp.drawn_layer``): the warp-only renderer's C and A, and what the generator starts from. The
  output frame draws them again at its own pixels (``OutputWarp.draw``), sharp where the crop's would be
  a blur. Points are pixel coordinates with pixel centres at integers (the warp's maps), at any scale.
"""
from __future__ import annotations

import functools
import logging

import numpy as np

log = logging.getLogger(__name__)

RING_SCALE = 1.35
RING_FOLLOW = 0.5
BAND_MARGIN = 0.08   # fixed border points lie this far (x crop size) outside the crop
# With head motion (engine.pose) the head is carried out to a second ring round the oval (hair, ears),
# and the band that fades the motion out reaches further.
HEAD_RING_SCALE = 1.75
HEAD_BAND_MARGIN = 0.45


def band_margin(head: bool) -> float:
    return HEAD_BAND_MARGIN if head else BAND_MARGIN


# ------------------------------------------------------------------------------------ geometry
@functools.lru_cache(maxsize=1)
def _oval_loop() -> tuple[int, ...]:
    """MediaPipe's face-oval points as one ordered closed loop."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL
    adj: dict[int, list[int]] = {}
    for a, b in FACEMESH_FACE_OVAL:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    start = 10
    loop, prev, cur = [start], None, start
    while True:
        nxt = [n for n in adj[cur] if n != prev]
        if not nxt or nxt[0] == start:
            break
        prev, cur = cur, nxt[0]
        loop.append(cur)
    return tuple(loop)


def motion_in_crop(face_model, crop_landmarks: np.ndarray, dp: np.ndarray) -> np.ndarray:
    """The model's motion ``U dp`` (468, 3) expressed in the crop's coordinates of a face with
    ``crop_landmarks`` (478, 3): canonical displacement through the inverse rigid alignment."""
    s, r = _rigid_scale_rotation(np.ascontiguousarray(crop_landmarks, np.float64).tobytes())
    d = face_model.displacement(dp).astype(np.float64)          # canonical frame
    return d @ r / s                                             # aligned = s * x @ R.T + t


@functools.lru_cache(maxsize=16)
def _rigid_scale_rotation(landmarks: bytes):
    """``rigid_align``'s scale and rotation of a face, by its landmarks' bytes: a portrait's are the
    same every frame (an SVD saved per frame)."""
    from engine.blendshapes import rigid_align
    _, (s, r, _t) = rigid_align(np.frombuffer(landmarks, np.float64).reshape(-1, 3))
    return s, r


# upper / lower point pairs of the eyelids and the inner lips (MediaPipe indices), for crossing tests
LID_PAIRS = ((246, 7), (161, 163), (160, 144), (159, 145), (158, 153), (157, 154), (173, 155),
             (466, 249), (388, 390), (387, 373), (386, 374), (385, 380), (384, 381), (398, 382))
LIP_PAIRS = ((191, 95), (80, 88), (81, 178), (82, 87), (13, 14), (312, 317), (311, 402), (310, 318),
             (415, 324))


EYE_CORNERS = (33, 263)          # outer eye corners: the inter-ocular distance


def inter_ocular(lm: np.ndarray) -> float:
    lm = np.asarray(lm, np.float64)
    return float(np.linalg.norm(lm[EYE_CORNERS[0], :2] - lm[EYE_CORNERS[1], :2]))


def _pair_mean(lm: np.ndarray, pairs) -> float:
    lm = np.asarray(lm, np.float64)
    p = np.asarray(pairs)
    return float(np.linalg.norm(lm[p[:, 0], :2] - lm[p[:, 1], :2], axis=1).mean())


def mouth_opening(lm: np.ndarray) -> float:
    """Mean inner-lip upper/lower distance over the inter-ocular distance (478 or 468 points)."""
    return _pair_mean(lm, LIP_PAIRS) / max(inter_ocular(lm), 1e-9)


def eye_opening(lm: np.ndarray) -> float:
    """Mean upper/lower eyelid distance of both eyes over the inter-ocular distance."""
    return _pair_mean(lm, LID_PAIRS) / max(inter_ocular(lm), 1e-9)


def lip_gap(lm: np.ndarray) -> float:
    """Mean vertical distance lower minus upper inner lip over the inter-ocular distance, in an upright
    face (0: the lips meet; signed, and linear in the model's motion, unlike ``mouth_opening``)."""
    lm = np.asarray(lm, np.float64)
    p = np.asarray(LIP_PAIRS)
    return float((lm[p[:, 1], 1] - lm[p[:, 0], 1]).mean()) / max(inter_ocular(lm), 1e-9)


# ---------------------------------------------------------------------------------------------- gaze
# Each eye as (its corner on the image's left, its corner on the image's right, its iris centre, its loop) in a
# frontal face: the subject's right eye, then the left.
EYES = ((33, 133, 468, "RIGHT_EYE_LOOP"), (362, 263, 473, "LEFT_EYE_LOOP"))
# **(choice)** The eyeball's radius in eye widths (corner to corner): about 12 mm against a 30 mm eye. An iris
# centre d eye widths from the corners' midpoint is the eye turned by asin(d / EYEBALL_RADIUS).
EYEBALL_RADIUS = 0.4
# An eye whose lids are closer than this (mean lid distance over the eye's width) shows too little iris to
# read its direction: open eyes read 0.18-0.35 on the shared clips' face meshes, the narrowest blink 0.11.
EYE_SHUT = 0.12


def _eye_frame(lm: np.ndarray, eye) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """An eye's frame: its left corner (2,), the unit axis to its right corner, the axis' normal (image
    down when the face is upright) and the eye's width (pixels)."""
    a, b = lm[eye[0], :2], lm[eye[1], :2]
    width = float(np.linalg.norm(b - a))
    e = (b - a) / max(width, 1e-9)
    return a, e, np.array([-e[1], e[0]]), width


def iris_offsets(landmarks: np.ndarray) -> np.ndarray:
    """(2, 2) each eye's iris centre from its corners' midpoint, along the corners' axis (image right) and
    across it (down), in eye widths (478-point landmarks, refined irises)."""
    lm = np.asarray(landmarks, np.float64)
    out = np.zeros((2, 2))
    for k, eye in enumerate(EYES):
        a, e, n, width = _eye_frame(lm, eye)
        d = lm[eye[2], :2] - (a + 0.5 * width * e)
        out[k] = (d @ e / max(width, 1e-9), d @ n / max(width, 1e-9))
    return out


def gaze_angles(landmarks: np.ndarray) -> np.ndarray:
    """(2,) the eyes' direction in the head, degrees: (yaw > 0 towards the image's right, pitch > 0 down),
    the mean of the eyes open wider than EYE_SHUT (``iris_offsets`` through EYEBALL_RADIUS); NaN when both
    are shut (a blink: the iris is not there to read)."""
    lm = np.asarray(landmarks, np.float64)
    d = np.clip(iris_offsets(lm) / EYEBALL_RADIUS, -1.0, 1.0)
    open_ = eye_openness(lm) >= EYE_SHUT
    if not open_.any():
        return np.full(2, np.nan)
    return np.degrees(np.arcsin(d[open_])).mean(0)


def eye_openness(landmarks: np.ndarray) -> np.ndarray:
    """(2,) each eye's mean lid distance over its width (``EYES``' order)."""
    lm = np.asarray(landmarks, np.float64)
    half = len(LID_PAIRS) // 2           # the right eye's pairs, then the left's
    gaps = (_pair_mean(lm, LID_PAIRS[:half]), _pair_mean(lm, LID_PAIRS[half:]))
    return np.array([gap / max(_eye_frame(lm, eye)[3], 1e-9) for gap, eye in zip(gaps, EYES)])


def _eye_bounds(lm: np.ndarray, loop, a: np.ndarray, e: np.ndarray, n: np.ndarray):
    """An eye opening's upper and lower lid as (u, v) chains (eye-frame pixels) sorted by u."""
    uv = np.stack([(lm[list(loop), :2] - a) @ e, (lm[list(loop), :2] - a) @ n], 1)
    half = len(loop) // 2           # the loops run corner, upper lid, other corner, lower lid
    upper, lower = uv[:half + 1], np.concatenate([uv[half:], uv[:1]])
    return upper[np.argsort(upper[:, 0])], lower[np.argsort(lower[:, 0])]


def turn_eyes(backward: np.ndarray, margin: int, src_landmarks: np.ndarray, dst_landmarks: np.ndarray,
              gaze) -> np.ndarray:
    """Turn the target's eyes by ``gaze`` (2,) degrees (yaw, pitch: ``gaze_angles``' units) beyond the
    portrait's own direction: in each target eye opening the eyeball slides under the lids, the iris moved
    whole and the white between it and the corners stretched or squeezed (a piecewise-linear map along the
    eye), what would come from under a lid taken from the lid's edge. ``backward``: a ``MeshWarp`` backward
    map (grid pixels; crop coordinates + ``margin``), changed in place inside the openings. Returns the
    target landmarks with the irises moved."""
    import cv2
    from . import blendshapes
    src = np.asarray(src_landmarks, np.float64)
    dst = np.asarray(dst_landmarks, np.float64).copy()
    gaze = np.asarray(gaze, np.float64)
    if src.shape[0] < 478 or not np.any(gaze):
        return dst
    own = np.clip(iris_offsets(src) / EYEBALL_RADIUS, -1.0, 1.0)
    turned = np.sin(np.clip(np.arcsin(own) + np.radians(gaze), -np.pi / 2, np.pi / 2))
    shift = (turned - own) * EYEBALL_RADIUS                   # (2 eyes, 2) eye widths
    g = backward.shape[0]
    for k, eye in enumerate(EYES):
        loop = getattr(blendshapes, eye[3])
        a, e, n, width = _eye_frame(dst, eye)
        if width < 2.0:
            continue
        iris = dst[eye[2], :2] - a
        c = float(iris @ e)
        r = min(0.8 * float(np.linalg.norm(dst[eye[2] + 1, :2] - dst[eye[2], :2])), 0.3 * width)
        # the iris' new centre, kept where the squeezed white beside it stays a tenth of the eye wide
        lo, hi = 0.1 * width + r, 0.9 * width - r
        s = float(np.clip(c + shift[k, 0] * width, lo, hi) - c) if hi > lo else 0.0
        t = shift[k, 1] * width
        upper, lower = _eye_bounds(dst, loop, a, e, n)
        pts = dst[list(loop), :2] + margin
        x0, y0 = np.floor(pts.min(0)).astype(int) - 1
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 2
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, g), min(y1, g)
        if x1 - x0 < 2 or y1 - y0 < 2:
            continue
        # a hard edge (not antialiased): the turned eyeball stays inside the opening, nothing round it moves
        mask = np.zeros((y1 - y0, x1 - x0), np.float32)
        cv2.fillPoly(mask, [np.round((pts - (x0, y0)) * 16).astype(np.int32)], 1.0, lineType=cv2.LINE_8, shift=4)
        xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float64) - margin, np.arange(y0, y1, dtype=np.float64) - margin)
        rel = np.stack([xs - a[0], ys - a[1]], -1)
        u, v = rel @ e, rel @ n
        # target u -> the u it shows: corners fixed, the iris' band [c - r, c + r] moved whole by s
        knots_t = [0.0, c + s - r, c + s + r, width]
        us = np.interp(u, knots_t, [0.0, c - r, c + r, width])
        whole = np.interp(u, knots_t, [0.0, 1.0, 1.0, 0.0])
        vs = v - t * whole
        top, bottom = np.interp(us, upper[:, 0], upper[:, 1]), np.interp(us, lower[:, 0], lower[:, 1])
        vs = np.clip(vs, top + 0.5, np.maximum(bottom - 0.5, top + 0.5))
        p = a + us[..., None] * e + vs[..., None] * n + margin
        shown = cv2.remap(backward, p[..., 0].astype(np.float32), p[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
        box = backward[y0:y1, x0:x1]
        box += mask[..., None] * (shown - box)
        dst[eye[2]:eye[2] + 5, :2] += s * e + t * n
    return dst


CLOSED_GAP = 0.02    # lip_gap below which a mouth counts as closed (closed lips read 0.000-0.015)


def closed_mouth(face_model, crop_landmarks: np.ndarray, p) -> np.ndarray:
    """``p`` with the face's mouth closed (LivePortrait's lip normalisation): where the inner lips of
    ``crop_landmarks`` are apart (``lip_gap`` above CLOSED_GAP), the least change of p (least squares,
    within [-1, 1]) that makes them meet: each component changes in proportion to how much it parts
    the lips (mostly lips_part; a smile, which parts them a little, a little). (Tried: the change that
    moves the rest of the mesh least, which combines many components at their bounds, and weights
    by how specific a component's motion is to the lips, which drives a small duplicate component
    to its bound.)
    A relative driver adds its motion to this p: a portrait photographed mid-word then opens its mouth
    as far as the driver does, from closed, instead of further than any driver."""
    p = np.asarray(p, np.float64).reshape(-1).copy()
    lm = np.asarray(crop_landmarks, np.float64)
    gap = lip_gap(lm)
    if gap <= CLOSED_GAP:
        return p.astype(np.float32)
    # the gap is linear in p: its gradient, one component at a time
    grad = np.array([lip_gap(lm[:468] + motion_in_crop(face_model, lm, e)) for e in np.eye(len(p))])
    grad -= lip_gap(lm[:468])
    p0, free = p.copy(), np.ones(len(p), bool)
    for _ in range(4):         # components that reach a bound stay there; the others close the rest
        left = gap + float(grad @ (p - p0))
        g = np.where(free, grad, 0.0)
        if left <= 1e-6 or g @ g < 1e-12:
            break
        p -= left * g / (g @ g)
        hit = np.abs(p) > 1.0
        p = np.clip(p, -1.0, 1.0)
        free &= ~hit
        if not hit.any():
            break
    return p.astype(np.float32)


def crossing(landmarks: np.ndarray) -> float:
    """How far (pixels) an upper eyelid or the upper inner lip passes below its lower partner in an
    upright crop (0 when nothing crosses): a target mesh with crossings is not a face."""
    lm = np.asarray(landmarks)
    pairs = np.array(LID_PAIRS + LIP_PAIRS)
    return float(np.maximum(lm[pairs[:, 0], 1] - lm[pairs[:, 1], 1], 0).max())


def uncross(landmarks: np.ndarray) -> np.ndarray:
    """Landmarks with crossed lid/lip pairs met at their middle (a closed eye or mouth)."""
    lm = np.array(landmarks, np.float64)
    for a, b in LID_PAIRS + LIP_PAIRS:
        if lm[a, 1] > lm[b, 1]:
            mid = 0.5 * (lm[a, 1] + lm[b, 1])
            lm[a, 1] = lm[b, 1] = mid
    return lm


def target_landmarks(face_model, crop_landmarks: np.ndarray, p_src, p_trg, fix_crossing: bool = True
                     ) -> np.ndarray:
    """(478, 3) crop landmarks of the face moved from p_src to p_trg (irises follow their eyes).
    Lids or lips that the linear model would push through each other are met at their middle
    (``uncross``; ``sample_targets`` + ``crossing`` avoid such targets in the first place)."""
    lm = np.asarray(crop_landmarks, np.float64)
    dp = np.asarray(p_trg, np.float64) - np.asarray(p_src, np.float64)
    out = lm.copy()
    out[:468] += motion_in_crop(face_model, lm, dp)
    from engine.blendshapes import LEFT_EYE_LOOP, LEFT_IRIS, RIGHT_EYE_LOOP, RIGHT_IRIS
    if lm.shape[0] == 478:
        for loop, iris in ((RIGHT_EYE_LOOP, RIGHT_IRIS), (LEFT_EYE_LOOP, LEFT_IRIS)):
            shift = (out[list(loop)] - lm[list(loop)]).mean(0)
            out[list(iris)] += shift
    return uncross(out) if fix_crossing else out


def _triangulation(src_xy: np.ndarray, dst_xy: np.ndarray, size: int, head: bool = False):
    """All triangles of the warp: (vertices_src (V, 2), vertices_dst (V, 2), triangles (T, 3), layer
    (T,): 0 outer band, 1 holes, 2 face). Vertices: the 468 mesh points, the 3 hole centres, the ring
    round the oval, with ``head`` the head ring (``HEAD_RING_SCALE``), then the border points (at
    ``band_margin(head)`` outside the crop). The dst of the rings and the border is src (callers
    the ring's dst follows the oval by RING_FOLLOW, the head ring's and the border's stay)."""
    from scipy.spatial import Delaunay

    from engine.blendshapes import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP, mesh_triangles
    src = [np.asarray(src_xy, np.float64)[:468]]
    dst = [np.asarray(dst_xy, np.float64)[:468]]
    tris = [mesh_triangles()]
    layers = [np.full(len(tris[0]), 2)]
    n = 468
    # holes: fans around their centroids
    for loop in (INNER_LIP_LOOP, RIGHT_EYE_LOOP, LEFT_EYE_LOOP):
        loop = list(loop)
        src.append(src[0][loop].mean(0, keepdims=True))
        dst.append(dst[0][loop].mean(0, keepdims=True))
        fan = np.array([[loop[i], loop[(i + 1) % len(loop)], n] for i in range(len(loop))])
        tris.append(fan)
        layers.append(np.full(len(fan), 1))
        n += 1
    # outer band: ring around the oval, and fixed points outside the crop
    oval = list(_oval_loop())
    c_src = src[0][oval].mean(0)
    ring_src = c_src + RING_SCALE * (src[0][oval] - c_src)
    ring_dst = ring_src + RING_FOLLOW * (dst[0][oval] - src[0][oval])
    m = band_margin(head) * size
    if head:
        head_ring = c_src + HEAD_RING_SCALE * (src[0][oval] - c_src)
        ring_src = np.concatenate([ring_src, head_ring])
        ring_dst = np.concatenate([ring_dst, head_ring])
    k = 13 if head else 9
    lin = np.linspace(-m, size + m, k)
    border = np.concatenate([np.stack([lin, np.full(k, -m)], 1), np.stack([lin, np.full(k, size + m)], 1),
                             np.stack([np.full(k - 2, -m), lin[1:-1]], 1),
                             np.stack([np.full(k - 2, size + m), lin[1:-1]], 1)])
    # ring points outside the border frame are pulled in (a face much larger than the crop)
    ring_src = np.clip(ring_src, -m * 0.9, size + m * 0.9)
    ring_dst = np.clip(ring_dst, -m * 0.9, size + m * 0.9)
    outer_src = np.concatenate([src[0][oval], ring_src, border])
    idx = np.concatenate([np.array(oval), n + np.arange(len(ring_src) + len(border))])
    src += [ring_src, border]
    dst += [ring_dst, border]
    dl = Delaunay(outer_src)
    simp = dl.simplices
    # drop triangles inside the face oval (the mesh covers those)
    import cv2
    poly = src[0][oval].astype(np.float32)
    cen = outer_src[simp].mean(1).astype(np.float32)
    inside = np.array([cv2.pointPolygonTest(poly, (float(x), float(y)), False) > 0 for x, y in cen])
    simp = simp[~inside]
    tris.append(idx[simp])
    layers.append(np.zeros(len(simp), int))
    vs, vd = np.concatenate(src), np.concatenate(dst)
    tri = np.concatenate(tris)
    return vs, vd, tri, np.concatenate(layers)


def _signed_area(v, tri):
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    return 0.5 * ((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))


EYEBALL_RAMP = 0.15   # an eye's area lost over which its opening turns from squeezed to covered (eyeball_values)


def eyeball_values(values: np.ndarray, tri: np.ndarray, verts_dst: np.ndarray, src: np.ndarray, dst: np.ndarray):
    """The source points (``values`` (T, 3, 2), of triangles ``tri`` (T, 3) whose target vertices are
    ``verts_dst``) of a closing eye's fan (``_triangulation``'s hole centres 469, 470) made rigid: the eyeball
    moves with the eye's corners (the similarity that takes the target's corners to the source's) and the lids
    cover it, instead of the fan squeezing it into the slit (iris and white still in it: a blink read as a
    squint). From fan to rigid over EYEBALL_RAMP of the eye's area lost; an eye opening wider keeps the fan (its
    opening shows more than the source had). ``src``, ``dst``: the meshes (468+, 2+). Returns ``values``, a
    copy where an eye closes."""
    out = values
    for centre, loop, (a, b) in zip((469, 470), _hole_loops()[1:], GATE_CORNERS[1:]):
        loop = list(loop)
        lost = 1.0 - _poly_area(dst[loop, :2]) / max(_poly_area(src[loop, :2]), 1e-9)
        w = min(max(lost / EYEBALL_RAMP, 0.0), 1.0)
        if w <= 0.0:
            continue
        if out is values:
            out = values.copy()
        rows = np.flatnonzero((tri == centre).any(1))
        ts, td = complex(*src[a, :2]), complex(*dst[a, :2])
        scale = complex(*(src[b, :2] - src[a, :2])) / (complex(*(dst[b, :2] - dst[a, :2])) or 1.0)
        z = (verts_dst[tri[rows]] @ np.array([1.0, 1j])) - td
        rigid = ts + scale * z
        out[rows] = (1.0 - w) * out[rows] + w * np.stack([rigid.real, rigid.imag], -1)
    return out


def warp_mesh(image: np.ndarray, src_landmarks: np.ndarray, dst_landmarks: np.ndarray,
              supersample: int = 2) -> np.ndarray:
    """Warp ``image`` (S, S, 3) uint8 piecewise-affinely so that the face mesh at ``src_landmarks``
    (468|478, 3, image pixels) lands on ``dst_landmarks``; smooth, tear-free outside the face."""
    import cv2
    img = np.ascontiguousarray(image)
    h, w = img.shape[:2]
    size = max(h, w)
    src = np.asarray(src_landmarks, np.float64)
    dst = np.asarray(dst_landmarks, np.float64)
    vs, vd, tri, layer = _triangulation(src[:, :2], dst[:, :2], size)
    # the outer band must not fold: pull the ring back towards rest if a band triangle flips
    outer = layer == 0
    a_src = _signed_area(vs, tri[outer])
    for _ in range(4):
        a_dst = _signed_area(vd, tri[outer])
        if np.all(np.sign(a_dst) == np.sign(a_src)) or not np.any(outer):
            break
        ring = np.arange(471, 471 + len(_oval_loop()))      # after the mesh and the 3 hole centres
        vd[ring] = vs[ring] + 0.5 * (vd[ring] - vs[ring])
    ss = max(1, int(supersample))
    n = max(w, h) * ss
    # target triangles drawn band, holes, then face far to near; each pixel (centre (i + 0.5) / ss - 0.5
    # in crop pixels) gets the source point it shows. Pixels no triangle covers (beyond the border
    # points: none in the crop) keep their own.
    zdst = np.zeros(len(vd))
    zdst[:468] = dst[:468, 2]
    zdst[468:471] = [dst[list(loop), 2].mean() for loop in _hole_loops()]
    order = np.lexsort((-zdst[tri].mean(1), layer))
    c = (np.arange(n, dtype=np.float32) + 0.5) / ss - 0.5
    gx, gy = np.meshgrid(c, c)
    maps = np.ascontiguousarray(np.stack([gx, gy], -1))
    values = eyeball_values(vs[tri[order]], tri[order], vd, src, dst)
    _raster((vd[tri[order]] + 0.5) * ss - 0.5, n, values, maps.reshape(-1, 2))
    out = cv2.remap(img, maps[:h * ss, :w * ss], None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if ss > 1:
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
    return out


def _hole_loops():
    from engine.blendshapes import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP
    return (INNER_LIP_LOOP, RIGHT_EYE_LOOP, LEFT_EYE_LOOP)


def _poly_area(xy):
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(x[1:] @ y[:-1] - y[1:] @ x[:-1] + x[0] * y[-1] - y[0] * x[-1])


def fill_mouth(warped: np.ndarray, source: np.ndarray, src_landmarks: np.ndarray,
               dst_landmarks: np.ndarray) -> np.ndarray:
    """Darken the part of the target's mouth opening that the source did not have (see the module
    docstring). Returns a new image."""
    layer = mouth_layer(source, src_landmarks, dst_landmarks)
    if layer is None:
        return warped
    fill, alpha = layer
    out = warped.astype(np.float32) * (1 - alpha) + fill * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def lip_colour(source: np.ndarray, src_landmarks: np.ndarray) -> np.ndarray:
    """The mean colour (3,) of the lips (between the outer and inner lip outlines) of ``source``."""
    import cv2
    from .blendshapes import INNER_LIP_LOOP, OUTER_LIP_LOOP
    h, w = source.shape[:2]
    outer = np.round(np.asarray(src_landmarks)[list(OUTER_LIP_LOOP), :2]).astype(np.int32)
    inner = np.round(np.asarray(src_landmarks)[list(INNER_LIP_LOOP), :2]).astype(np.int32)
    x0, y0 = np.clip(outer.min(0), 0, (w, h))                     # in the window round the lips
    x1, y1 = np.clip(outer.max(0) + 1, 0, (w, h))
    lips = np.zeros((max(y1 - y0, 1), max(x1 - x0, 1)), np.uint8)
    cv2.fillPoly(lips, [outer - (x0, y0)], 1)
    cv2.fillPoly(lips, [inner - (x0, y0)], 0)
    if x1 > x0 and y1 > y0 and lips.any():
        return np.array(cv2.mean(np.ascontiguousarray(source[y0:y1, x0:x1]), lips)[:3])
    return np.array([150.0, 80, 80])


GATE_AREA = 0.05    # change of an opening's area (/ its width^2) at which the generator paints it fully


# BT.601 luma weights: the brightness the generator's paint keeps (keep_colour)
LUMA = np.array([0.299, 0.587, 0.114], np.float32)
_LUMA_3 = np.tile(LUMA, (3, 1))


def keep_colour(painted: np.ndarray, under: np.ndarray, cavity: np.ndarray | None = None) -> np.ndarray:
    """The generator's paint (S, S, 3) float32 0-255 with its brightness and the colour of what it paints
    over (``under``: the warped portrait with its drawn mouth and lids, the generator's input), pixel by pixel:
    ``under + (Y(painted) - Y(under))``. The network shades (eyelids, the mouth's depth, teeth against the
    cavity) but does not recolour: the short CPU schedule's paint turned brown irises green or blue and
    painted yellow-green-red blobs in opening mouths, magenta ones on a painting.
    ``cavity`` (S, S, 1) 0-1 (``cavity``: the drawn mouth interior below its teeth): there the paint may
    darken what is drawn, not lighten it. The same schedule filled every opening mouth with a pale grey
    fog (its average of teeth and a dark cavity) that looked like a gum shield, and read as closed lips
    on a moustached portrait."""
    import cv2
    shift = cv2.transform(cv2.subtract(painted, under), _LUMA_3)     # each channel: the luma shift
    if cavity is not None:
        shift -= np.maximum(shift, 0.0) * cavity
    out = cv2.add(under, shift)
    return np.clip(out, 0.0, 255.0, out=out)


def _lip_line(dst: np.ndarray, xs: np.ndarray, lower: int) -> np.ndarray:
    """The inner lip's outline (upper: ``lower`` 0; lower: 1) from corner (78) to corner (308), y at ``xs``."""
    pts = dst[[78, *np.asarray(LIP_PAIRS)[:, lower], 308], :2]
    o = np.argsort(pts[:, 0])
    return np.interp(xs, pts[o, 0], pts[o, 1])


def _teeth_band(dst: np.ndarray, yy: np.ndarray, upper: np.ndarray) -> np.ndarray | None:
    """The drawn upper teeth's cover, 0-1 (before TEETH_OPACITY), at rows ``yy`` (n, 1) under the upper inner
    lip's line ``upper`` (m,): full from the lip to the last TEETH_EDGE of the band, TEETH_HEIGHT x the lip gap
    tall and at most TEETH_MAX x the mouth's width; None where the mouth opens too little to show teeth (TEETH_FROM)."""
    gap, width = np.linalg.norm(dst[14, :2] - dst[13, :2]), np.linalg.norm(dst[78, :2] - dst[308, :2])
    if gap <= TEETH_FROM * width:
        return None
    height = min(TEETH_HEIGHT * gap, TEETH_MAX * width)
    t = (yy - upper) * np.float32(1.0 / max(height, 0.8))     # 0 at the lip, 1 at the teeth's edge
    # the band's top edge by each pixel's coverage below the lip line: a hard step there was a
    # staircase of crop pixels at the output's resolution
    below = np.clip(yy + np.float32(0.5) - upper, 0, 1)
    return _smooth((1.0 - t) * np.float32(1.0 / TEETH_EDGE)) * below


def cavity(alpha: np.ndarray, dst_landmarks: np.ndarray) -> np.ndarray:
    """Where in the drawn mouth interior (opacity ``alpha`` (S, S, 1), the drawn layer's) the generator's
    paint may only darken (``keep_colour``'s ``cavity``), (S, S, 1) float32: all of the opening but its drawn
    upper teeth (``_teeth_band``), column by column under the target's upper inner lip (an upright crop). On the
    teeth it may lighten. (The whole cavity dark, tried before teeth were drawn, left none.) The lightening
    reached the upper 0.4-0.65 of the opening until 2026-12-05, below the drawn teeth' edge: at a wide
    opening the network filled it with the grey fog ``keep_colour`` describes (docs/default-model-history.md,
    "The paint lightens only the drawn teeth")."""
    out = np.zeros_like(alpha, dtype=np.float32)
    dst = np.asarray(dst_landmarks, np.float64)
    # only the drawn mouth's window (the per-frame path; the layer may hold drawn lids too)
    (x0, y0, x1, y1), _ = _mouth_window(dst, *alpha.shape[:2])
    sub = alpha[y0:y1, x0:x1]
    rows, cols = np.flatnonzero(sub.any(axis=(1, 2))) + y0, np.flatnonzero(sub.any(axis=(0, 2))) + x0
    if rows.size == 0:
        return out
    win = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    yy = np.arange(rows[0], rows[-1] + 1, dtype=np.float32)[:, None]
    teeth = _teeth_band(dst, yy, _lip_line(dst, np.arange(cols[0], cols[-1] + 1), 0).astype(np.float32))
    out[win] = alpha[win] if teeth is None else alpha[win] * (1.0 - teeth)[..., None]
    return out


GATE_CORNERS = ((78, 308), (33, 133), (362, 263))   # the corners of _hole_loops' mouth and eyes: their widths


def attention_gate(src_landmarks: np.ndarray, dst_landmarks: np.ndarray, region: np.ndarray) -> np.ndarray | None:
    """(S, S, 1) float32 factor on the warp generator's attention, per opening it may paint (the mouth,
    each eye; ``WarpGenerator.openings``): 0 in the opening's zone where the target's opening is as the
    source's, rising to 1 once its area has changed by GATE_AREA x its width squared (the mouth: grown;
    an eye: shrunk); 1 elsewhere; None where it would be 1 everywhere. Where an opening is as
    the portrait's own the warp moves the portrait's own lips, mouth and eyes and nothing is missing;
    a generator trained briefly on photographs painted pale blobs into a painting's small mouth
    openings and tinted still irises (green on the photo d30, purple on the painting s5).
    ``region``: ``MeshWarp.region_mask`` of the target."""
    import cv2
    src, dst = np.asarray(src_landmarks, np.float64), np.asarray(dst_landmarks, np.float64)
    s = region.shape[-1]
    r = max(1, s // 24)      # as WarpGenerator.openings, whose feathered mask reaches 2 r beyond the region
    factor = None
    # the mouth counts only opening (closing lips are the warp's to make), an eye only closing (the lid
    # covers the eye; an eye opening wider shows more of the portrait's own, stretched by the warp: the
    # network had painted its iris lighter, or another colour)
    for loop, (a, b), sign in zip(_hole_loops(), GATE_CORNERS, (1.0, -1.0, -1.0)):
        loop = list(loop)
        change = sign * (_poly_area(dst[loop, :2]) - _poly_area(src[loop, :2]))
        gate = min(max(change / (GATE_AREA * float(np.sum((dst[a, :2] - dst[b, :2]) ** 2)) + 1e-9), 0.0), 1.0)
        if gate >= 1.0:
            continue
        # the opening's zone: all of the feathered mask's reach round the target's loop
        (x0, y0), (x1, y1) = dst[loop, :2].min(0) - 2 * r, dst[loop, :2].max(0) + 2 * r
        part = np.zeros((s, s), np.uint8)
        box = (slice(max(int(y0), 0), max(int(np.ceil(y1)) + 1, 0)),
               slice(max(int(x0), 0), max(int(np.ceil(x1)) + 1, 0)))
        part[box] = region[box] > 0.05
        zone = cv2.dilate(part, np.ones((4 * r + 1, 4 * r + 1), np.uint8)).astype(np.float32)
        f = 1.0 - zone * np.float32(1.0 - gate)
        factor = f if factor is None else np.minimum(factor, f)
    return None if factor is None else factor[..., None]


# The drawn upper teeth: from a lip gap of TEETH_FROM x the mouth's width, a band TEETH_HEIGHT x the gap
# tall up to TEETH_MAX x the mouth's width (incisors' crowns show about a fifth of the mouth's width; uncapped, a
# wide-open mouth had a slab of teeth a third of its height), TEETH_OPACITY from the lip, fading over the last
# TEETH_EDGE of its height, and darker by TEETH_CORNER (x the square of the distance from the middle) towards the
# corners. A fainter band from taller gaps only (0.55, from 0.12) left the opening a dark slot: with these the mouth
# on training portraits moved 0.83 -> 0.94 of the driver's (the face mesh reads a mouth with teeth as open), and the
# generator is given a mouth to shade. (A band fading all the way down was a grey smear at 512 px.) The tongue's
# tip: from a lip gap of TONGUE_FROM x the mouth's width, fully TONGUE_RAMP later, below TONGUE_TOP of the opening's
# depth, the lips' colour x TONGUE_SHADE (darker at its back); with it and the teeth's edge, training portraits'
# mouths moved 0.98 -> 1.02 of the driver's.
TEETH_FROM, TEETH_HEIGHT, TEETH_MAX, TEETH_OPACITY = 0.06, 0.35, 0.18, 0.85
TEETH_EDGE, TEETH_CORNER = 0.4, 0.5
TEETH_COLOUR = np.array([195.0, 190, 180], np.float32)
SKIN_HUE = np.array([190.0, 145, 120])     # skin in daylight (a photo's): teeth_colour's neutral cast
TONGUE_FROM, TONGUE_RAMP, TONGUE_TOP, TONGUE_SHADE = 0.15, 0.15, 0.55, 0.7


# A picture's mean chroma ((max - min channel) / brightness) from which its teeth take their full colour. Black and
# white photos measure 0 (44 of the 293 portraits and stills of ../shared/data), colour ones 0.076 and up.
COLOUR_CHROMA = 0.06


def colourfulness(image: np.ndarray) -> float:
    """How much colour a picture (h, w, 3) has, 0 (black and white) to 1 (a colour photo's, COLOUR_CHROMA)."""
    x = np.asarray(image)
    r, g, b = x[..., 0], x[..., 1], x[..., 2]      # channel by channel: NumPy's reductions over an axis of 3 are slow
    spread = (np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).astype(np.float32)
    chroma = spread / ((r.astype(np.float32) + g + b) / np.float32(3.0) + np.float32(8.0))
    return float(min(1.0, chroma.mean() / COLOUR_CHROMA))


def teeth_colour(skins, colour: float = 1.0) -> np.ndarray:
    """TEETH_COLOUR in the portrait's colour cast, (3,) float32: tinted by the square root of how the hue of
    its skin (``lid_colours``, both eyes') departs from SKIN_HUE, at TEETH_COLOUR's brightness, with as much
    colour as the picture has (``colour``: ``colourfulness``). White teeth had looked blue in a varnished
    painting's yellow; in a black and white photo, whose grey skin reads as a blue cast, they were blue."""
    skin = np.maximum(np.mean(np.asarray(skins, np.float64), 0), 1.0)
    cast = np.sqrt((skin / skin.mean()) / (SKIN_HUE / SKIN_HUE.mean()))
    teeth = TEETH_COLOUR * cast
    teeth = teeth * (TEETH_COLOUR @ LUMA) / (teeth @ LUMA)
    grey = teeth @ LUMA
    return np.clip(grey + float(colour) * (teeth - grey), 0, 255).astype(np.float32)


def _fixed_point(xy: np.ndarray, ss: int) -> np.ndarray:
    """Points (pixel coordinates, pixel centres at integers, as the warp's maps) as OpenCV's drawing wants
    them on a canvas ``ss`` times finer (shift 4): a fine pixel's centre is at (i + 0.5) / ss - 0.5."""
    return np.round((xy * ss + (ss - 1) / 2.0) * 16).astype(np.int32)


def _aa_canvas(shape, draw) -> np.ndarray:
    """A float32 0-1 canvas of ``shape`` drawn by ``draw(canvas, 255)`` on 8 bits: OpenCV antialiases
    (LINE_AA) only there; on a float canvas its lines and polygons come out with hard, stepped edges."""
    canvas = np.zeros(shape, np.uint8)
    draw(canvas, 255)
    return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


def _smooth(x):
    """Smoothstep of x clipped to 0-1."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _mouth_window(dst: np.ndarray, h: int, w: int):
    """The drawn mouth's window in an (h, w) crop for target landmarks ``dst``: ((x0, y0, x1, y1), the blur's
    sigma); the layer is 0 outside it."""
    from .blendshapes import INNER_LIP_LOOP
    sigma = max(0.6, 0.04 * float(np.linalg.norm(dst[78, :2] - dst[308, :2])))
    pad = int(np.ceil(4 * sigma)) + 2
    opening = dst[list(INNER_LIP_LOOP), :2]
    x0, y0 = np.maximum(np.floor(opening.min(0)).astype(int) - pad, 0)
    x1, y1 = np.minimum(np.ceil(opening.max(0)).astype(int) + pad + 1, (w, h))
    return (int(x0), int(y0), int(x1), int(y1)), sigma


def mouth_layer(source: np.ndarray, src_landmarks: np.ndarray, dst_landmarks: np.ndarray,
                lips: np.ndarray | None = None, teeth: np.ndarray | None = None):
    """The inner-mouth colour and its opacity (fill (h, w, 3) float32 0-255, alpha (h, w, 1)) for
    the part of the target's mouth opening that the source did not have; None when there is none.
    In Eq. 4's terms a hand-made C and A: the warp-only renderer uses it in the generator's place.
    ``lips``, ``teeth``: ``lip_colour`` and ``teeth_colour`` of the source, when already known."""
    lips = lip_colour(source, src_landmarks) if lips is None else lips
    teeth = teeth_colour(lid_colours(source, src_landmarks), colourfulness(source)) if teeth is None else teeth
    patch = mouth_patch(src_landmarks, dst_landmarks, lips, source.shape[:2], teeth=teeth)
    if patch is None:
        return None
    h, w = source.shape[:2]
    fill, alpha = np.zeros((h, w, 3), np.float32), np.zeros((h, w, 1), np.float32)
    if patch is not _EMPTY:
        (x0, y0, x1, y1), fill[y0:y1, x0:x1], alpha[y0:y1, x0:x1] = patch
    return fill, alpha


_EMPTY = ()     # mouth_patch: the mouth opens, but its window lies outside the image


def mouth_patch(src_landmarks: np.ndarray, dst_landmarks: np.ndarray, lips: np.ndarray, shape, ss: int = 4,
                teeth: np.ndarray = TEETH_COLOUR):
    """``mouth_layer`` in the window round the opening (the rest of the layer is 0; this runs every frame):
    ((x0, y0, x1, y1), fill (y1 - y0, x1 - x0, 3), alpha (.., 1)), ``_EMPTY`` where the window lies outside an
    image of ``shape`` (h, w), or None where the mouth opens no wider than the source's. ``lips``: ``lip_colour``
    of the source; ``ss``: the supersampling of the opening's outline (4 at a crop's pixels; fewer where the
    mouth is drawn larger, at the output's resolution); ``teeth``: their colour (``teeth_colour``)."""
    import cv2
    from .blendshapes import INNER_LIP_LOOP
    loop = list(INNER_LIP_LOOP)
    a_src = _poly_area(np.asarray(src_landmarks)[loop, :2])
    a_dst = _poly_area(np.asarray(dst_landmarks)[loop, :2])
    if a_dst <= 1.0 or a_dst <= a_src * 1.05:
        return None
    new = min(max((a_dst - a_src) / a_dst, 0.0), 1.0)
    h, w = shape
    dst = np.asarray(dst_landmarks, np.float64)
    (x0, y0, x1, y1), sigma = _mouth_window(dst, h, w)
    opening = dst[loop, :2]
    if x1 <= x0 or y1 <= y0:
        return _EMPTY
    ww, wh = x1 - x0, y1 - y0
    poly = _fixed_point(opening - (x0, y0), ss)
    mask = _aa_canvas((wh * ss, ww * ss), lambda c, v: cv2.fillPoly(c, [poly], v, cv2.LINE_AA, 4))
    if ss > 1:
        mask = cv2.resize(mask, (ww, wh), interpolation=cv2.INTER_AREA)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # inner-mouth colour: the source lips' darkened, darkest in the middle of the opening (distance
    # to the opening's outline)
    dark = np.asarray(lips, np.float32) * 0.3
    d = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    shade = 1.0 - 0.5 * np.minimum(d * np.float32(1.0 / max(float(d.max()), 1e-6)), 1.0)
    fill = shade[..., None] * dark
    # a band of upper teeth under the upper lip where the opening is tall enough, and the tongue's tip
    # low in a wide one
    gap, width = np.linalg.norm(dst[14, :2] - dst[13, :2]), np.linalg.norm(dst[78, :2] - dst[308, :2])
    if gap > TEETH_FROM * width:
        yy = np.arange(y0, y1, dtype=np.float32)[:, None]
        xs = np.arange(x0, x1)
        upper = _lip_line(dst, xs, 0).astype(np.float32)       # rows just below the upper inner lip
        across = np.float32((xs - 0.5 * (dst[78, 0] + dst[308, 0])) / max(0.5 * width, 1.0))   # -1 .. 1
        tongue = np.float32(min(max((gap / width - TONGUE_FROM) / TONGUE_RAMP, 0.0), 1.0))
        if tongue > 0:
            lower = _lip_line(dst, xs, 1).astype(np.float32)
            depth = (yy - upper) / np.maximum(lower - upper, 1.0)      # 0 at the upper lip, 1 at the lower
            front = np.clip((depth - TONGUE_TOP) * np.float32(1.0 / (1.0 - TONGUE_TOP)), 0, 1)[..., None]
            cover = (_smooth((depth - TONGUE_TOP) * np.float32(5.0)) * _smooth((0.8 - np.abs(across)) * np.float32(3.0))
                     * tongue)[..., None]
            colour = np.asarray(lips, np.float32) * (np.float32(TONGUE_SHADE) * (0.6 + 0.4 * front))
            fill -= fill * cover
            fill += colour * cover
        band = (_teeth_band(dst, yy, upper) * np.float32(TEETH_OPACITY))[..., None]
        shaded = np.asarray(teeth, np.float32) * np.clip(1.0 - TEETH_CORNER * across * across, 0.3, 1.0)[None, :, None]
        fill -= fill * band
        fill += shaded * band
    return (x0, y0, x1, y1), fill, (mask * np.float32(new))[..., None]


# The drawn lids: where the target closes an eye by more than LID_FROM of its area, the eye's opening (and
# LID_MARGIN x its width round it) is painted with the skin round the portrait's eye, opaque (LID_OPACITY)
# from LID_FULL, with a lash line along the target's upper lid. The warp alone (then squeezing the eyeball into the
# closing slit; ``eyeball_values`` now keeps it) made a blink of the driver's a squint with the iris in it, and the
# face mesh read blinks on training portraits at 0.48 of the driver's (correlation 0.90).
LID_FROM, LID_FULL, LID_OPACITY, LID_MARGIN = 0.2, 0.7, 0.95, 0.08
LASH_WIDTH, LASH_OPACITY, LASH_DARK = 0.05, 0.8, 0.35
# The lid that comes down over a closing eye covers where the source's eye was and its lashes above it, LASH_BAND
# x the eye's width (``_lid_was``), in the skin round the eye between the LID_SKIN percentiles of its brightness
# (``lid_colours``: a closed lid is lit as the skin round it, not in the shade of the lashes and the socket).
LASH_BAND, LID_SKIN = 0.1, (40, 70)


def _eyes():
    """(loop, upper lid) of the right eye, then the left: an eye's loop runs from its outer corner along the
    upper lid to the inner corner (its first 9 points), then back along the lower lid."""
    from .blendshapes import LEFT_EYE_LOOP, RIGHT_EYE_LOOP
    return [(list(loop), list(loop[:9])) for loop in (RIGHT_EYE_LOOP, LEFT_EYE_LOOP)]


def lid_colours(source: np.ndarray, src_landmarks: np.ndarray, brightness=(20, 50)) -> list[np.ndarray]:
    """Per eye (the right, then the left) the colour (3,) of the skin round it: of the ring from 0.07 to 0.25
    of the eye's width outside its opening (lids above and below, clear of the lashes), the mean of the
    pixels between these percentiles of brightness (by default the 20th and 50th: the skin in the brow's
    shade, the teeth's colour cast; the brightest skin round an eye is the brow bone's; the drawn lids take
    LID_SKIN's)."""
    import cv2
    src = np.asarray(src_landmarks, np.float64)
    h, w = source.shape[:2]
    out = []
    for loop, upper in _eyes():
        eye = src[loop, :2]
        width = float(np.linalg.norm(src[upper[0], :2] - src[upper[-1], :2]))
        pad = int(np.ceil(0.25 * width)) + 1
        (x0, y0) = np.maximum(np.floor(eye.min(0)).astype(int) - pad, 0)
        (x1, y1) = np.minimum(np.ceil(eye.max(0)).astype(int) + pad + 1, (w, h))
        colour = np.array([150.0, 120, 110])
        if x1 > x0 and y1 > y0:
            hole = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(hole, [np.round(eye - (x0, y0)).astype(np.int32)], 1)

            def grown(r):
                k = 2 * max(int(round(r * width)), 1) + 1
                return cv2.dilate(hole, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
            px = source[y0:y1, x0:x1][(grown(0.25) > 0) & (grown(0.07) == 0)].reshape(-1, 3).astype(np.float64)
            if len(px):
                y = px @ LUMA.astype(np.float64)
                lo, hi = np.percentile(y, brightness)
                colour = px[(y >= lo) & (y <= hi)].mean(0) if np.any((y >= lo) & (y <= hi)) else px.mean(0)
        out.append(colour)
    return out


def lid_layer(source: np.ndarray, src_landmarks: np.ndarray, dst_landmarks: np.ndarray, skins=None):
    """The drawn lids (see LID_FROM) as (fill (h, w, 3) float32 0-255, alpha (h, w, 1)), or None where
    no eye closes by LID_FROM. ``skins``: ``lid_colours`` of the source, when already known."""
    h, w = source.shape[:2]
    skins = skins if skins is not None else (lambda: lid_colours(source, src_landmarks, LID_SKIN))
    patches = lid_patches(src_landmarks, dst_landmarks, skins, (h, w))
    if patches is None:
        return None
    fill, alpha = np.zeros((h, w, 3), np.float32), np.zeros((h, w, 1), np.float32)
    for (x0, y0, x1, y1), colour, a in patches:
        box = (slice(y0, y1), slice(x0, x1))
        fill[box] = np.where(a > alpha[box], colour, fill[box])
        alpha[box] = np.maximum(alpha[box], a)
    return fill, alpha


def _lid_was(src: np.ndarray, dst: np.ndarray, loop, upper, width: float) -> np.ndarray:
    """(9, 2) where an eye's upper lid was: the source's carried with the eye's corners (as ``eyeball_values``
    carries the eyeball), raised by LASH_BAND x ``width`` (the target eye's) away from its lower lid. Between it
    and the target's upper lid lies the lid that came down: the warp stretches the source's lid over it, lashes
    and all, and a closing eye showed streaks of lashes down its lid."""
    ts, td = complex(*src[upper[0], :2]), complex(*dst[upper[0], :2])
    axis = complex(*(dst[upper[-1], :2] - dst[upper[0], :2]))
    turn = axis / (complex(*(src[upper[-1], :2] - src[upper[0], :2])) or 1.0)
    z = td + turn * (src[upper, :2] @ np.array([1.0, 1j]) - ts)
    lower = [i for i in loop if i not in upper]
    away = turn * complex(*(src[upper, :2].mean(0) - src[lower, :2].mean(0)))   # the source's lids, turned
    normal = axis * 1j / (abs(axis) or 1.0)
    if (normal.conjugate() * away).real < 0:
        normal = -normal
    z = z + LASH_BAND * width * normal
    return np.stack([z.real, z.imag], -1)


def lid_patches(src_landmarks: np.ndarray, dst_landmarks: np.ndarray, skins, shape, ss: int = 4):
    """``lid_layer`` per closing eye, in the window round it: [((x0, y0, x1, y1), fill, alpha)], or None where
    no eye closes by LID_FROM. ``skins``: ``lid_colours`` of the source (or a function that makes them, called
    only when an eye closes); ``shape`` (h, w) of the image; ``ss``: as ``mouth_patch``'s."""
    import cv2
    src, dst = np.asarray(src_landmarks, np.float64), np.asarray(dst_landmarks, np.float64)
    h, w = shape
    out = None
    for i, (loop, upper) in enumerate(_eyes()):
        a_src = _poly_area(src[loop, :2])
        closed = 1.0 - _poly_area(dst[loop, :2]) / max(a_src, 1e-6)
        k = min(max((closed - LID_FROM) / (LID_FULL - LID_FROM), 0.0), 1.0)
        if k <= 0.0:
            continue
        if out is None:
            skins = skins() if callable(skins) else skins
            out = []
        eye = dst[loop, :2]
        width = float(np.linalg.norm(dst[upper[0], :2] - dst[upper[-1], :2]))
        sheet = np.concatenate([dst[upper, :2], _lid_was(src, dst, loop, upper, width)[::-1]])
        pad = int(np.ceil(LID_MARGIN * width + 3 * max(0.6, 0.04 * width))) + 2
        both = np.concatenate([eye, sheet])
        (x0, y0) = np.maximum(np.floor(both.min(0)).astype(int) - pad, 0)
        (x1, y1) = np.minimum(np.ceil(both.max(0)).astype(int) + pad + 1, (w, h))
        if x1 <= x0 or y1 <= y0:
            continue
        fine = ((y1 - y0) * ss, (x1 - x0) * ss)                     # drawn ss x finer, then averaged down

        def window(c, v):
            for poly in (eye, sheet):
                cv2.fillPoly(c, [_fixed_point(poly - (x0, y0), ss)], v, cv2.LINE_AA, 4)
        win = _aa_canvas(fine, window)
        win = cv2.dilate(win, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * int(LID_MARGIN * width * ss) + 1,) * 2))
        lash = _aa_canvas(fine, lambda c, v: cv2.polylines(c, [_fixed_point(dst[upper, :2] - (x0, y0), ss)], False, v,
                                                           max(1, int(round(LASH_WIDTH * width * ss))), cv2.LINE_AA, 4))
        if ss > 1:
            win = cv2.resize(win, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
            lash = cv2.resize(lash, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
        win = cv2.GaussianBlur(win, (0, 0), max(0.6, 0.04 * width))
        lash = lash[..., None] * np.float32(LASH_OPACITY)
        skin = np.asarray(skins[i], np.float32)
        colour = skin * (1.0 - lash) + skin * np.float32(LASH_DARK) * lash
        out.append(((int(x0), int(y0), int(x1), int(y1)), colour, np.float32(k * LID_OPACITY) * win[..., None]))
    return out


def warp_to_params(face_model, crop: np.ndarray, crop_landmarks: np.ndarray, p_src, p_trg,
                   supersample: int = 2, mouth: bool = True) -> np.ndarray:
    """The crop warped along the mesh triangles from its own mesh (``crop_landmarks`` (478, 3), crop
    pixels, fitted parameters ``p_src``) to the mesh with the target parameters ``p_trg``."""
    crop = np.asarray(crop)
    dst = target_landmarks(face_model, crop_landmarks, p_src, p_trg)
    out = warp_mesh(crop, crop_landmarks, dst, supersample)
    if mouth:
        out = fill_mouth(out, crop, crop_landmarks, dst)
    return out




# ------------------------------------------------------------------------- the per-frame warp
MOUTH_VALUE, EYE_VALUE = 1.0, 0.5   # region_mask: where the warp cannot make the content


class MeshWarp:
    """The warp of one portrait's crop, prepared once; then per frame a target mesh gives the
    backward map in a fifth of a millisecond (see the module docstring).

    ``src_landmarks``: (478|468, 3) the portrait's mesh in crop pixels; ``size``: the crop size S.
    The grid covers the crop and the band's margin around it (G = S + 2 * margin pixels a side, out
    to the fixed border points), so the motion is exactly zero at the grid's edge: a frame warped
    through it has no seam."""

    def __init__(self, src_landmarks: np.ndarray, size: int, head: bool = False):
        self.size = int(size)
        self.head = bool(head)
        self.margin = int(np.ceil(band_margin(self.head) * self.size)) + 1   # edge rows at or beyond the border
        self.src = np.asarray(src_landmarks, np.float64)
        xy = self.src[:, :2]
        vs, _vd, tri, layer = _triangulation(xy, xy, self.size, self.head)
        self.vertices = vs
        self.n_vertices = len(vs)
        n_oval = len(_oval_loop())
        self._ring = np.arange(471, 471 + n_oval)
        self._oval = np.array(_oval_loop())
        if self.head:
            # the rings as 3D points at the oval's depth, and how much of the head's motion each
            # carries: all of it above the oval's middle, less towards the neck (it turns less)
            self._head_ring = np.arange(471 + n_oval, 471 + 2 * n_oval)
            rings = np.concatenate([self._ring, self._head_ring])
            z = np.tile(self.src[self._oval, 2], 2)
            self._ring_points = np.concatenate([vs[rings], z[:, None]], 1)
            oval = self.src[self._oval, :2]
            below = np.clip((vs[rings, 1] - oval[:, 1].mean()) / max(np.ptp(oval[:, 1]), 1e-6) * 2, 0, None)
            share = np.where(np.arange(len(rings)) < n_oval, 1.0 - 0.4 * below, 1.0 - 0.8 * below)
            self._ring_share = np.clip(share, 0.2, 1.0)[:, None]
        self._holes = [np.array(loop) for loop in _hole_loops()]
        self._colours = None                       # (crop, its lips' colour, its lids', its teeth's): the drawn layer's
        # All triangles in warp_mesh's drawing order: the band, the holes, then the face far to near
        # (the source's depth, which an expression hardly reorders).
        z = np.zeros(len(vs))
        z[:468] = self.src[:468, 2]
        z[468:471] = [self.src[loop, 2].mean() for loop in self._holes]
        self._tris = tri[np.lexsort((-z[tri].mean(1), layer))]
        self._tris_src = vs[self._tris].astype(np.float32)
        c = np.arange(self.grid_size, dtype=np.float32) - self.margin
        gx, gy = np.meshgrid(c, c)
        self.grid = np.ascontiguousarray(np.stack([gx, gy], -1))     # crop coordinates of grid pixels

    @property
    def grid_size(self) -> int:
        return self.size + 2 * self.margin

    def crop_part(self, a: np.ndarray) -> np.ndarray:
        """The S x S crop part of a grid-sized array."""
        mg = self.margin
        return a[mg:mg + self.size, mg:mg + self.size]

    def vertex_displacement(self, dst_landmarks: np.ndarray, head_move=None) -> np.ndarray:
        """(V, 2) displacement of every warp vertex: the mesh's own, the hole centres' mean, the ring
        following the oval by RING_FOLLOW (kept inside the border frame), the border fixed.
        ``head_move``: the head's motion (``HeadMove``; the warp must have been made with ``head``),
        whose share the rings carry on top (``dst_landmarks`` already has it)."""
        dst = np.asarray(dst_landmarks, np.float64)[:468, :2]
        d = np.zeros((self.n_vertices, 2))
        d[:468] = dst - self.src[:468, :2]
        for k, loop in enumerate(self._holes):
            d[468 + k] = d[loop].mean(0)
        m = band_margin(self.head) * self.size
        ring = self.vertices[self._ring]
        if head_move is None:
            d[self._ring] = np.clip(ring + RING_FOLLOW * d[self._oval], -m * 0.9, self.size + m * 0.9) - ring
            return d
        if not self.head:
            raise ValueError("head motion needs a MeshWarp made with head=True (its band is wider)")
        carried = (head_move(self._ring_points)[:, :2] - self._ring_points[:, :2]) * self._ring_share
        # the oval's own expression motion (what the head's motion leaves of its displacement)
        expression = dst[self._oval] - head_move(self.src[self._oval])[:, :2]
        n = len(self._ring)
        rings = np.concatenate([self._ring, self._head_ring])
        moved = self.vertices[rings] + carried
        moved[:n] += RING_FOLLOW * expression
        d[rings] = np.clip(moved, -m * 0.9, self.size + m * 0.9) - self.vertices[rings]
        return d

    def backward_map(self, dst_landmarks: np.ndarray, head_move=None) -> np.ndarray:
        """(G, G, 2) float32: for every grid pixel of the target, the source crop coordinates it shows.
        ``head_move``: see ``vertex_displacement``."""
        d = self.vertex_displacement(dst_landmarks, head_move)
        x = self.grid.copy()                           # beyond the border points nothing moves
        vd = self.vertices + d
        values = eyeball_values(self._tris_src, self._tris, vd, self.src, np.asarray(dst_landmarks, np.float64))
        _raster((vd + self.margin)[self._tris], self.grid_size, values.astype(np.float32, copy=False), x.reshape(-1, 2))
        return x

    def region_mask(self, dst_landmarks: np.ndarray) -> np.ndarray:
        """(S, S) float32: the target's mouth opening (MOUTH_VALUE) and eye openings (EYE_VALUE),
        where the warp has no content of its own: a channel of the generator's input."""
        import cv2
        from .blendshapes import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP
        lm = np.asarray(dst_landmarks)[:, :2]
        mask = np.zeros((self.size, self.size), np.float32)
        eyes = [np.round(lm[list(loop)] * 16).astype(np.int32) for loop in (RIGHT_EYE_LOOP, LEFT_EYE_LOOP)]
        # hard edges, as the generator was trained with (OpenCV does not antialias a float canvas)
        cv2.fillPoly(mask, eyes, EYE_VALUE, lineType=cv2.LINE_8, shift=4)
        cv2.fillPoly(mask, [np.round(lm[list(INNER_LIP_LOOP)] * 16).astype(np.int32)], MOUTH_VALUE,
                     lineType=cv2.LINE_8, shift=4)
        return mask

    def warp_crop(self, crop: np.ndarray, dst_landmarks: np.ndarray, backward: np.ndarray | None = None
                  ) -> np.ndarray:
        """The crop warped to the target mesh (crop resolution: the generator's input)."""
        import cv2
        bm = self.backward_map(dst_landmarks) if backward is None else backward
        return cv2.remap(crop, np.ascontiguousarray(self.crop_part(bm)), None, cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def frame_extra(self, dst_landmarks: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """The generator frame's channels beyond the warped RGB, (3, S, S) float32: the region mask
        and the flow (target -> source, crop pixels) x FLOW_SCALE / S."""
        out = np.empty((3, self.size, self.size), np.float32)
        self._frame_extra(dst_landmarks, backward, out)
        return out

    def _frame_extra(self, dst_landmarks: np.ndarray, backward: np.ndarray, out: np.ndarray) -> None:
        import cv2
        out[0] = self.region_mask(dst_landmarks)
        flow = cv2.subtract(self.crop_part(backward), self.crop_part(self.grid))
        for c, plane in enumerate(cv2.split(flow)):
            np.multiply(plane, FLOW_SCALE / self.size, out=out[1 + c])

    def drawn_layer(self, crop: np.ndarray, dst_landmarks: np.ndarray):
        """What the warp cannot make, drawn: the mouth interior where the target opens the mouth wider
        than the source (``mouth_layer``) and the lids where it closes an eye (``lid_layer``), as one layer
        over the warp: (premultiplied colour A*C (S, S, 3) 0-255, A (S, S, 1)), or None."""
        patches = self.drawn_patches(crop, dst_landmarks)
        if patches is None:
            return None
        ac, a = np.zeros((self.size, self.size, 3), np.float32), np.zeros((self.size, self.size, 1), np.float32)
        for (x0, y0, x1, y1), pac, pa in patches:          # the lids over the mouth, where they meet
            box = (slice(y0, y1), slice(x0, x1))
            ac[box] = pac + (1.0 - pa) * ac[box]
            a[box] = pa + (1.0 - pa) * a[box]
        return ac, a

    def drawn_patches(self, crop: np.ndarray, dst_landmarks: np.ndarray, to: np.ndarray | None = None,
                      shape=None, ss: int = 4):
        """``drawn_layer`` as windows, [((x0, y0, x1, y1), A*C, A)] (the mouth, then the lids), or None. ``to``:
        the 2x3 matrix from crop coordinates to those of an image of ``shape`` (h, w) to draw on (the output
        region: the drawn layer at the output's resolution, ``ss`` as ``mouth_patch``'s); the crop itself
        when None. The colours are the crop's (lips, the skin round the eyes, the teeth in its colour cast)."""
        if self._colours is None or self._colours[0] is not crop:   # the portrait's: the same every frame
            self._colours = (crop, lip_colour(crop, self.src), lid_colours(crop, self.src, LID_SKIN),
                             teeth_colour(lid_colours(crop, self.src), colourfulness(crop)))
        src, dst = self.src, np.asarray(dst_landmarks, np.float64)
        if to is None:
            shape = (self.size, self.size)
        else:
            src, dst = src[:, :2] @ to[:, :2].T + to[:, 2], dst[:, :2] @ to[:, :2].T + to[:, 2]
        mouth = mouth_patch(src, dst, self._colours[1], shape, ss, self._colours[3])
        lids = lid_patches(src, dst, self._colours[2], shape, ss)
        if mouth is None and lids is None:
            return None
        return [(box, fill * a, a) for box, fill, a in ([] if not mouth else [mouth]) + (lids or [])]

    def drawn_warp(self, crop: np.ndarray, dst_landmarks: np.ndarray, backward: np.ndarray | None = None):
        """The warp-only renderer at crop resolution: the crop warped to the target mesh with the drawn
        mouth interior and lids over it, (S, S, 3) float32 0-255; and the drawn layer (or None)."""
        warped = self.warp_crop(crop, dst_landmarks, backward).astype(np.float32)
        layer = self.drawn_layer(crop, dst_landmarks)
        if layer is not None:
            warped -= warped * layer[1]
            warped += layer[0]
        return warped, layer

    def generator_frame(self, crop: np.ndarray, dst_landmarks: np.ndarray, backward: np.ndarray | None = None,
                        drawn: np.ndarray | None = None) -> np.ndarray:
        """The warp generator's per-frame input (6, S, S) float32: the warp-only render (``drawn_warp``,
        or ``drawn`` when already made) in [-1, 1], then ``frame_extra``. G starts from what the
        geometry alone makes."""
        import cv2
        bm = self.backward_map(dst_landmarks) if backward is None else backward
        if drawn is None:
            drawn = self.drawn_warp(crop, dst_landmarks, bm)[0]
        out = np.empty((6, self.size, self.size), np.float32)
        for c, plane in enumerate(cv2.split(np.asarray(drawn, np.float32))):
            np.multiply(plane, 2.0 / 255.0, out=out[c])
            out[c] -= 1.0
        self._frame_extra(dst_landmarks, bm, out[3:])
        return out


def warp_batch(face_model, landmarks: np.ndarray, p_src: np.ndarray, p_trg: np.ndarray, images: np.ndarray):
    """The geometry of B faces moved from p_src to p_trg, for training the warp generator on
    tensors. ``images`` (B, S, S, 3) uint8: the crops (the drawn mouth and lids take their colours from
    them). Returns maps (B, S, S, 2) float32, the source crop pixel each target pixel shows; extra
    (B, 3, S, S) float32, ``MeshWarp.frame_extra``; drawn (B, S, S, 4) float32, the drawn layer
    (premultiplied colour 0-255 and its opacity; zeros where none); dst (B, 478, 3), the target meshes."""
    maps, extra, drawn, dsts = [], [], [], []
    size = images.shape[1]
    for lm, a, b, img in zip(np.asarray(landmarks, np.float64), np.asarray(p_src), np.asarray(p_trg), images):
        mw = MeshWarp(lm, size)
        dst = target_landmarks(face_model, lm, a, b)
        bm = mw.backward_map(dst)
        maps.append(mw.crop_part(bm))
        extra.append(mw.frame_extra(dst, bm))
        layer = mw.drawn_layer(img, dst)
        drawn.append(np.zeros((size, size, 4), np.float32) if layer is None else np.concatenate(layer, -1))
        dsts.append(dst)
    return np.stack(maps).astype(np.float32), np.stack(extra), np.stack(drawn), np.stack(dsts)


def warp_rows(task) -> np.ndarray:
    """One worker process's share of a training batch (``trainer.train.GeometryPool``): ``task`` = (file, batch,
    first row, landmarks, p_src, p_trg, images); ``warp_batch`` of those rows with the embedded blendshape model,
    its maps, extra and drawn layer written into their rows of the batch's arrays in ``file`` (``warp_arrays``: a
    memory-mapped file, so that megabytes of arrays do not travel through a pipe); returns the target meshes."""
    from .blendshapes import load_default_face_model
    path, b, k, *rows = task
    maps, extra, drawn, dst = warp_batch(load_default_face_model(), *rows)
    out = warp_arrays(path, b, rows[3].shape[1])
    for a, part in zip(out, (maps, extra, drawn)):
        a[k:k + len(part)] = part
    for a in out:
        a.flush()
    return dst


def warp_arrays(path, b: int, size: int, create: bool = False) -> list[np.ndarray]:
    """``warp_batch``'s maps (b, S, S, 2), extra (b, 3, S, S) and drawn layer (b, S, S, 4), float32, one after the
    other in the memory-mapped ``path`` (made with ``create``)."""
    shapes = [(b, size, size, 2), (b, 3, size, size), (b, size, size, 4)]
    total = sum(int(np.prod(sh)) for sh in shapes) * 4
    if create:
        with open(path, "wb") as f:
            f.truncate(total)
    out, offset = [], 0
    for sh in shapes:
        out.append(np.memmap(path, np.float32, "r+", offset=offset, shape=sh))
        offset += int(np.prod(sh)) * 4
    return out


FLOW_SCALE = 4.0    # generator_frame's flow channels: about -1..1 for the largest face motions


class HeadMove:
    """The head's rigid motion in a portrait's crop: ``engine.pose.apply_pose`` with the head's
    centre and inter-ocular distance (crop pixels) and the portrait's frame -> crop matrix."""

    def __init__(self, pose: np.ndarray, centre: np.ndarray, iod: float, frame_to_crop: np.ndarray | None = None):
        self.pose = np.asarray(pose, np.float64)
        self.centre = np.asarray(centre, np.float64)
        self.iod = float(iod)
        self.frame_to_crop = frame_to_crop

    def __call__(self, points: np.ndarray) -> np.ndarray:
        from .pose import apply_pose
        return apply_pose(points, self.pose, self.centre, self.iod, self.frame_to_crop)


class OutputWarp:
    """A MeshWarp's crop-level flow carried to an output frame, so the portrait is warped at its own
    resolution (prepared once per portrait). The output region it covers, ``roi`` (x0, y0, x1, y1),
    is the footprint of the warp's grid (crop plus band margin; beyond it the motion is zero);
    ``crop_x``/``crop_y`` (h, w) float32 are the crop coordinates of its pixels (the layers over the
    warp are upsampled through them). ``out_to_crop``: the 2x3 output -> crop matrix."""

    def __init__(self, mesh: MeshWarp, out_to_crop: np.ndarray, out_size: tuple[int, int]):
        m = np.asarray(out_to_crop, np.float64)
        inv = np.linalg.inv(np.vstack([m, [0, 0, 1]]))[:2]
        e0, e1 = -mesh.margin - 0.5, mesh.size + mesh.margin - 0.5
        foot = np.array([[e0, e0], [e1, e0], [e1, e1], [e0, e1]]) @ inv[:, :2].T + inv[:, 2]
        ow, oh = out_size
        x0, y0 = int(max(0, np.floor(foot[:, 0].min()))), int(max(0, np.floor(foot[:, 1].min())))
        x1, y1 = int(min(ow, np.ceil(foot[:, 0].max()) + 1)), int(min(oh, np.ceil(foot[:, 1].max()) + 1))
        self.mesh, self.roi = mesh, (x0, y0, x1, y1)
        w, h = max(x1 - x0, 0), max(y1 - y0, 0)
        xs, ys = np.meshgrid(np.arange(x0, x1, dtype=np.float32), np.arange(y0, y1, dtype=np.float32))
        self.crop_x = (m[0, 0] * xs + m[0, 1] * ys + m[0, 2]).astype(np.float32)
        self.crop_y = (m[1, 0] * xs + m[1, 1] * ys + m[1, 2]).astype(np.float32)
        # The flow is sampled from the grid at every f-th output pixel and upsampled by a plain resize
        # (a quarter of a per-pixel remap's cost at f = 2): f output pixels are half to one crop pixel,
        # the grid's own spacing (against every output pixel, the maps differ by 0.01 px on average,
        # 0.17 px at the 99th percentile, at the 2.3 output pixels per crop pixel of a 512 px frame).
        # One sample more on each side, so that the resize interpolates the region's edge pixels
        # instead of repeating the samples inside them.
        per_crop_px = 1.0 / np.sqrt(abs(np.linalg.det(m[:, :2])))
        self.f = f = int(np.clip(np.ceil(per_crop_px / 2 - 1e-6), 1, 4))
        ox = x0 + f * np.arange(-1, -(-w // f) + 1) + (f - 1) / 2.0
        oy = y0 + f * np.arange(-1, -(-h // f) + 1) + (f - 1) / 2.0
        ox, oy = np.meshgrid(ox, oy)
        self._coarse_out = np.ascontiguousarray(np.stack([ox, oy], -1), np.float32)
        import cv2
        self._coarse_maps = cv2.convertMaps((m[0, 0] * ox + m[0, 1] * oy + m[0, 2] + mesh.margin).astype(np.float32),
                                            (m[1, 0] * ox + m[1, 1] * oy + m[1, 2] + mesh.margin).astype(np.float32),
                                            cv2.CV_16SC2)              # grid coordinates, fixed point
        self._to_out = np.hstack([inv[:, :2], np.zeros((2, 1))]).astype(np.float32)   # flow vectors: crop -> output
        self._crop_to_roi = inv - np.array([[0, 0, x0], [0, 0, y0]])
        # the drawn layer's supersampling at the output's pixels: none from two output pixels a crop pixel
        # (its edges are blurred over several of them, its lash line antialiased)
        self._drawn_ss = int(np.clip(np.ceil(2.0 / per_crop_px - 1e-6), 1, 4))
        self._mouth_colours = None

    def maps(self, backward: np.ndarray):
        """For the output region: the output pixel each pixel shows, as OpenCV's fixed-point maps (what
        remap makes of float maps anyway, 1/32 px, but a third cheaper), from a grid-level backward map
        (``MeshWarp.backward_map``)."""
        import cv2
        mesh, f = self.mesh, self.f
        flow = cv2.transform(backward - mesh.grid, self._to_out)
        coarse = cv2.add(self._coarse_out, cv2.remap(flow, *self._coarse_maps, cv2.INTER_LINEAR,
                                                     borderMode=cv2.BORDER_CONSTANT, borderValue=0))
        if f > 1:
            coarse = cv2.resize(coarse, (coarse.shape[1] * f, coarse.shape[0] * f), interpolation=cv2.INTER_LINEAR)
        h, w = self.crop_x.shape
        return cv2.convertMaps(coarse[f:f + h, f:f + w], None, cv2.CV_16SC2)

    def warp(self, image: np.ndarray, backward: np.ndarray) -> np.ndarray:
        """The output region of ``image`` (the output frame) warped by ``backward``."""
        import cv2
        return cv2.remap(image, *self.maps(backward), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def draw(self, region: np.ndarray, crop: np.ndarray, dst_landmarks: np.ndarray) -> None:
        """The drawn mouth interior and lids (``MeshWarp.drawn_patches``) for target landmarks (crop pixels)
        over ``region`` (the output region, uint8), drawn at the output's pixels, in place: sharp teeth
        and lid edges, where the crop's layer upsampled was a 128 px blur."""
        patches = self.mesh.drawn_patches(crop, dst_landmarks, self._crop_to_roi, region.shape[:2], self._drawn_ss)
        for (x0, y0, x1, y1), ac, a in patches or ():
            _blend_kernel()(region[y0:y1, x0:x1], np.concatenate([ac, a], -1))

    def paste_mouth(self, region: np.ndarray, crop: np.ndarray, dst_landmarks: np.ndarray, mouth) -> bool:
        """The driver's mouth interior (an ``engine.mouth.DriverMouth``) drawn into the target's opening over
        ``region`` (the output region, uint8), at the output's pixels, in place; in the colours of the skin round
        the portrait's mouth in ``crop``. False where nothing was drawn."""
        from .mouth import paste_mouth, skin_colour
        if self._mouth_colours is None or self._mouth_colours[0] is not crop:   # the portrait's: every frame the same
            self._mouth_colours = (crop, skin_colour(crop, self.mesh.src), colourfulness(crop))
        _, skin, colour = self._mouth_colours
        if skin is None:
            return False
        to = self._crop_to_roi
        src = self.mesh.src[:, :2] @ to[:, :2].T + to[:, 2]
        dst = np.asarray(dst_landmarks, np.float64)[:, :2] @ to[:, :2].T + to[:, 2]
        return paste_mouth(region, mouth, src, dst, skin, colour, self._drawn_ss)

    def add(self, region: np.ndarray, change: np.ndarray) -> None:
        """Add a crop-level change (S, S, 3) float32 (the generator's paint: a change of brightness over the
        drawn warp) to ``region`` (the output region, uint8) at its resolution, in place: upsampled, only over
        the box it touches (the generator's paint is confined to the mouth and eyes)."""
        import cv2
        # |change| summed over the channels (cv2: a NumPy max over them costs 0.6 ms)
        touched = cv2.transform(cv2.absdiff(change, 0), np.ones((1, 3), np.float32)) > 0.75
        rows, cols = np.flatnonzero(touched.any(1)), np.flatnonzero(touched.any(0))
        if not len(rows):
            return
        corners = np.array([[cols[0] - 1, rows[0] - 1], [cols[-1] + 1, rows[0] - 1],
                            [cols[0] - 1, rows[-1] + 1], [cols[-1] + 1, rows[-1] + 1]], np.float64)
        o = corners @ self._crop_to_roi[:, :2].T + self._crop_to_roi[:, 2]
        h, w = region.shape[:2]
        x0, y0 = max(0, int(np.floor(o[:, 0].min())) - 1), max(0, int(np.floor(o[:, 1].min())) - 1)
        x1, y1 = min(w, int(np.ceil(o[:, 0].max())) + 2), min(h, int(np.ceil(o[:, 1].max())) + 2)
        if x1 <= x0 or y1 <= y0:
            return
        box = slice(y0, y1), slice(x0, x1)
        layer = np.concatenate([change, np.zeros_like(change[..., :1])], -1, dtype=np.float32)   # attention 0
        up = cv2.remap(layer, self.crop_x[box], self.crop_y[box],
                       cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        _blend_kernel()(region[box], up)


def _raster(c: np.ndarray, s: int, values: np.ndarray, out: np.ndarray) -> None:
    """Rasterise triangles ``c`` (T, 3, 2) (grid pixel coordinates, pixel centres at integers) on an
    s x s grid: every pixel a triangle covers gets the triangle's corner ``values`` (T, 3, 2; the
    source points) interpolated into ``out`` (s * s, 2) float32; where triangles overlap the later
    one wins (pass them in drawing order)."""
    _raster_kernel()(np.ascontiguousarray(c, np.float32), s, np.ascontiguousarray(values, np.float32), out)


def compile_kernels() -> None:
    """Load (or compile) the warp's kernels now, on inputs of the frame path's types, so that the first
    frame does not wait for them (about half a second from the disk cache, seconds to compile)."""
    t = np.zeros((1, 3, 2), np.float32)
    _raster(t, 2, t, np.zeros((4, 2), np.float32))
    region = np.zeros((3, 3, 3), np.uint8)
    _blend_kernel()(region[1:, 1:], np.zeros((2, 2, 4), np.float32))   # a view, as OutputWarp.draw's


def _compiled(fn):
    """``fn`` compiled by numba (no GIL held), its machine code cached on disk (next to this file, else
    in the user's cache folder) so later runs skip the second of compiling; where no cache folder is
    writable (a read-only install, no home), compiled anew each run instead of failing."""
    import numba
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as e:           # numba: "cannot cache function ...: no locator available ..."
        log.info("numba cannot cache %s (%s): compiling it each run", fn.__qualname__, e)
        return numba.njit(nogil=True)(fn)


@functools.lru_cache(maxsize=1)
def _blend_kernel():
    """``OutputWarp.draw``'s and ``add``'s per-pixel step, compiled (one pass instead of NumPy's six):
    region = round(A*C + (1 - A) region), clipped to 0-255."""
    def kernel(region, up):
        for y in range(region.shape[0]):
            for x in range(region.shape[1]):
                keep = 1.0 - up[y, x, 3]
                for c in range(3):
                    v = up[y, x, c] + keep * region[y, x, c] + 0.5
                    region[y, x, c] = min(max(v, 0.0), 255.0)
    return _compiled(kernel)


@functools.lru_cache(maxsize=1)
def _raster_kernel():
    """The rasteriser's loop, compiled (``_compiled``): each row of a triangle's bounding box, over the
    run of pixels inside it. Vectorised NumPy over (triangle, pixel) pairs took 1.3 ms a frame at a
    128 px crop for the face alone; compiled, the face and the band take 0.1 ms."""
    def kernel(c, s, values, out):
        eps = 1e-5
        for t in range(c.shape[0]):
            x0, y0 = c[t, 0, 0], c[t, 0, 1]
            e1x, e1y = c[t, 1, 0] - x0, c[t, 1, 1] - y0
            e2x, e2y = c[t, 2, 0] - x0, c[t, 2, 1] - y0
            den = e1x * e2y - e2x * e1y
            if abs(den) < 1e-9:
                continue                                          # a degenerate triangle covers nothing
            a1, b1 = e2y / den, -e2x / den                      # barycentrics w1, w2 as affine functions
            a2, b2 = -e1y / den, e1x / den
            ly = max(int(np.ceil(min(y0, c[t, 1, 1], c[t, 2, 1]))), 0)   # pixel rows inside the bbox
            hy = min(int(np.floor(max(y0, c[t, 1, 1], c[t, 2, 1]))) + 1, s)
            lo_x = max(int(np.ceil(min(x0, c[t, 1, 0], c[t, 2, 0]))), 0)
            hi_x = min(int(np.floor(max(x0, c[t, 1, 0], c[t, 2, 0]))) + 1, s)
            for py in range(ly, hy):
                dy = py - y0
                # on this row each of w1 >= 0, w2 >= 0, w1 + w2 <= 1 holds on one side of a point:
                # the pixels inside are one run [lo, hi)
                lo, hi = float(lo_x), float(hi_x)
                for a, b, bound, sign in ((a1, b1, -eps, 1.0), (a2, b2, -eps, 1.0),
                                          (a1 + a2, b1 + b2, 1.0 + eps, -1.0)):
                    # sign * (a * dx + b * dy) >= sign * bound
                    sa = sign * a
                    rest = sign * (bound - b * dy)
                    if sa > 0:
                        lo = max(lo, np.ceil(x0 + rest / sa))
                    elif sa < 0:
                        hi = min(hi, np.floor(x0 + rest / sa) + 1)
                    elif rest > 0:
                        hi = lo
                # the values are affine in px along the row too
                r0 = values[t, 0, 0] + (b1 * dy) * (values[t, 1, 0] - values[t, 0, 0]) \
                    + (b2 * dy) * (values[t, 2, 0] - values[t, 0, 0])
                r1 = values[t, 0, 1] + (b1 * dy) * (values[t, 1, 1] - values[t, 0, 1]) \
                    + (b2 * dy) * (values[t, 2, 1] - values[t, 0, 1])
                g0 = a1 * (values[t, 1, 0] - values[t, 0, 0]) + a2 * (values[t, 2, 0] - values[t, 0, 0])
                g1 = a1 * (values[t, 1, 1] - values[t, 0, 1]) + a2 * (values[t, 2, 1] - values[t, 0, 1])
                for px in range(int(lo), int(hi)):
                    dx = px - x0
                    out[py * s + px, 0] = r0 + g0 * dx
                    out[py * s + px, 1] = r1 + g1 * dx
    return _compiled(kernel)
