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
- Two ways to draw the same warp:
  ``warp_mesh`` (the pair maker; exact): every target triangle gets the affine map back to its source
  triangle; triangles are rasterised far-to-near (z) into a triangle-id buffer and the crop is
  resampled once (bilinear), at twice the crop size and downsampled when ``supersample`` > 1.
  ``MeshWarp`` (every frame; the generator's geometry): once per portrait every pixel of a grid
  covering the crop and the band gets its source triangle's barycentric weights, a sparse matrix W
  (pixels x vertices). Per frame the vertex displacements D give the forward field d = W D (one
  sparse product), inverted by fixed-point steps x_src = x - d(x_src) (each a remap of d) in the band,
  where the motion is gentle; on the face, where lips and lids part and such steps would not
  converge, the target triangles are rasterised exactly (vectorised, no per-triangle loop). The
  motion is zero at the grid's edge. ``output_map`` carries the crop-level flow to the output frame,
  so the portrait is warped at its own resolution, not as an upscaled crop.
- The mouth: where the target mouth is open wider than the source one, the new opening has no image
  content (the closed lips' line would be stretched over it). It is filled with a dark inner-mouth
  colour (the lips' mean colour darkened to ~30 %, darkest in the middle, with a faint lighter
  band of upper teeth where the opening is tall enough), blended with a soft mask in proportion to
  how much of the opening is new.
"""
from __future__ import annotations

import functools

import numpy as np

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
    from engine.blendshapes import rigid_align
    _, (s, r, _t) = rigid_align(np.asarray(crop_landmarks, np.float64))
    d = face_model.displacement(dp).astype(np.float64)          # canonical frame
    return d @ r / s                                             # aligned = s * x @ R.T + t


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
    big = (w * ss, h * ss)
    # triangle ids in the target, drawn: band, holes, then face triangles far to near
    zdst = np.zeros(len(vd))
    zdst[:468] = dst[:468, 2]
    zdst[468:471] = [dst[list(l), 2].mean() for l in _hole_loops()]
    depth = zdst[tri].mean(1)
    order = np.lexsort((-depth, layer))
    ids = np.full((big[1], big[0]), -1.0, np.float32)
    pts_all = np.round(vd * ss * 16).astype(np.int32)
    for t in order:
        cv2.fillConvexPoly(ids, pts_all[tri[t]], float(t), lineType=cv2.LINE_8, shift=4)
    yy, xx = np.nonzero(ids >= 0)
    t = ids[yy, xx].astype(np.int64)
    p = np.stack([(xx + 0.5) / ss - 0.5, (yy + 0.5) / ss - 0.5], 1)
    w0, w1, w2 = _barycentric(vd, tri[t], p).T
    s0, s1, s2 = vs[tri[t, 0]], vs[tri[t, 1]], vs[tri[t, 2]]
    sp = w0[:, None] * s0 + w1[:, None] * s1 + w2[:, None] * s2
    # pixels no triangle covered (outside the border frame: cannot happen) keep identity mapping
    gx, gy = np.meshgrid((np.arange(big[0]) + 0.5) / ss - 0.5, (np.arange(big[1]) + 0.5) / ss - 0.5)
    map_x, map_y = gx.astype(np.float32), gy.astype(np.float32)
    map_x[yy, xx] = sp[:, 0]
    map_y[yy, xx] = sp[:, 1]
    out = cv2.remap(img, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if ss > 1:
        out = cv2.resize(out, (w, h), interpolation=cv2.INTER_AREA)
    return out


def _hole_loops():
    from engine.blendshapes import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP
    return (INNER_LIP_LOOP, RIGHT_EYE_LOOP, LEFT_EYE_LOOP)


def _poly_area(xy):
    x, y = xy[:, 0], xy[:, 1]
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


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


def mouth_layer(source: np.ndarray, src_landmarks: np.ndarray, dst_landmarks: np.ndarray):
    """The inner-mouth colour and its opacity (fill (h, w, 3) float32 0-255, alpha (h, w, 1)) for
    the part of the target's mouth opening that the source did not have; None when there is none.
    In Eq. 4's terms a hand-made C and A: the warp-only renderer uses it in the generator's place."""
    import cv2
    from .blendshapes import INNER_LIP_LOOP, OUTER_LIP_LOOP
    loop = list(INNER_LIP_LOOP)
    a_src = _poly_area(np.asarray(src_landmarks)[loop, :2])
    a_dst = _poly_area(np.asarray(dst_landmarks)[loop, :2])
    if a_dst <= 1.0 or a_dst <= a_src * 1.05:
        return None
    new = float(np.clip((a_dst - a_src) / a_dst, 0.0, 1.0))
    h, w = source.shape[:2]
    dst = np.asarray(dst_landmarks, np.float64)
    mouth_w = np.linalg.norm(dst[78, :2] - dst[308, :2])
    sigma = max(0.6, 0.04 * mouth_w)
    # everything below happens in a window round the opening (the blur's reach included): the rest of
    # the layer is 0 (this runs every frame of the warp path)
    pad = int(np.ceil(4 * sigma)) + 2
    lo_xy = np.floor(dst[loop, :2].min(0)).astype(int) - pad
    hi_xy = np.ceil(dst[loop, :2].max(0)).astype(int) + pad + 1
    x0, y0 = max(0, lo_xy[0]), max(0, lo_xy[1])
    x1, y1 = min(w, hi_xy[0]), min(h, hi_xy[1])
    fill_full = np.zeros((h, w, 3), np.float32)
    alpha_full = np.zeros((h, w, 1), np.float32)
    if x1 <= x0 or y1 <= y0:
        return fill_full, alpha_full
    ww, wh = x1 - x0, y1 - y0
    off = np.array([x0, y0], np.float64)
    ss = 4
    poly = np.round((dst[loop, :2] - off) * ss * 16).astype(np.int32)
    mask = np.zeros((wh * ss, ww * ss), np.float32)
    cv2.fillPoly(mask, [poly], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.resize(mask, (ww, wh), interpolation=cv2.INTER_AREA)
    mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    # inner-mouth colour from the source lips
    lips = np.zeros((h, w), np.uint8)
    cv2.fillPoly(lips, [np.round(np.asarray(src_landmarks)[list(OUTER_LIP_LOOP), :2]).astype(np.int32)], 1)
    cv2.fillPoly(lips, [np.round(np.asarray(src_landmarks)[loop, :2]).astype(np.int32)], 0)
    lip_col = source[lips > 0].reshape(-1, 3).mean(0) if lips.any() else np.array([150.0, 80, 80])
    dark = lip_col * 0.3
    # darkest in the middle of the opening: distance to the opening's outline
    d = cv2.distanceTransform((mask > 0.5).astype(np.uint8), cv2.DIST_L2, 3)
    shade = 1.0 - 0.5 * np.clip(d / max(d.max(), 1e-6), 0, 1)
    fill = dark[None, None] * shade[..., None]
    # a faint band of upper teeth under the upper lip where the opening is tall enough
    gap = np.linalg.norm(dst[14, :2] - dst[13, :2])
    if gap > 0.12 * mouth_w:
        yy, xx = np.mgrid[y0:y1, x0:x1]
        # rows just below the upper inner-lip line
        upper = np.interp(xx, dst[[78, 82, 13, 312, 308], 0], dst[[78, 82, 13, 312, 308], 1])
        band = np.clip(1.0 - (yy + 0.5 - upper) / max(0.22 * gap, 0.8), 0, 1) * (yy + 0.5 >= upper)
        teeth = np.array([205.0, 200, 190]) * 0.8
        fill = fill * (1 - 0.55 * band[..., None]) + teeth[None, None] * 0.55 * band[..., None]
    fill_full[y0:y1, x0:x1] = fill
    alpha_full[y0:y1, x0:x1, 0] = mask * new
    return fill_full, alpha_full


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
    backward map in about a millisecond (see the module docstring).

    ``src_landmarks``: (478|468, 3) the portrait's mesh in crop pixels; ``size``: the crop size S.
    The grid covers the crop and the band's margin around it (G = S + 2 * margin pixels a side, out
    to the fixed border points), so the motion is exactly zero at the grid's edge: a frame warped
    through it has no seam."""

    def __init__(self, src_landmarks: np.ndarray, size: int, iterations: int = 5, head: bool = False):
        from scipy import sparse
        self.size = int(size)
        self.head = bool(head)
        self.margin = int(np.ceil(band_margin(self.head) * self.size)) + 1   # edge rows at or beyond the border
        self.iterations = int(iterations)
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
        # Source triangles far to near into an id buffer (once), then barycentric weights per pixel.
        z = np.zeros(len(vs))
        z[:468] = self.src[:468, 2]
        z[468:471] = [self.src[loop, 2].mean() for loop in self._holes]
        order = np.lexsort((-z[tri].mean(1), layer))
        # face and hole triangles (drawn exactly every frame), in drawing order
        self._inner = tri[order[layer[order] > 0]]
        self._inner_src = vs[self._inner].astype(np.float32)
        g, mg = self.grid_size, self.margin
        # The forward field that the band's fixed-point steps invert: the band's triangles, and inside
        # the oval a smooth fill from the oval's own motion (not the face's: where a turning cheek
        # passes over the oval, steps into the face would not converge and the band would show a
        # strip of the face; the face is drawn exactly on top anyway).
        from scipy.spatial import Delaunay
        oval = np.array(_oval_loop())
        fill = oval[Delaunay(xy[oval]).simplices]
        ordered = np.concatenate([fill, tri[layer == 0]])
        pixels, t, w1, w2 = _raster(((vs + mg)[ordered]).astype(np.float32), g)
        w = np.stack([1 - w1 - w2, w1, w2], 1)
        self.weights = sparse.csr_matrix((w.reshape(-1), (np.repeat(pixels, 3), ordered[t].reshape(-1))),
                                         shape=(g * g, len(vs)), dtype=np.float32)
        c = np.arange(g, dtype=np.float32) - mg
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
        import cv2
        g, mg = self.grid_size, self.margin
        d = self.vertex_displacement(dst_landmarks, head_move)
        # The outer band (gentle gradients): the forward field inverted by fixed-point steps.
        field = np.ascontiguousarray((self.weights @ d.astype(np.float32)).reshape(g, g, 2))
        x = self.grid - field
        for _ in range(self.iterations - 1):
            x = self.grid - cv2.remap(field, x + mg, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                      borderValue=0)
        # The face and its openings (lips and lids move apart: steep gradients where fixed-point steps
        # would not converge): exact, every target triangle's pixels mapped back by their barycentrics.
        pix, src = self._rasterise(self.vertices + d + mg)
        x.reshape(-1, 2)[pix] = src
        return x

    def _rasterise(self, vd: np.ndarray):
        """Grid pixels covered by the target face and hole triangles (``vd`` in grid coordinates;
        flat indices) and the source crop points they show. Triangles are in warp_mesh's drawing
        order (holes under the face, far under near; the source's depth, which an expression hardly
        reorders)."""
        pixels, t, w1, w2 = _raster(vd[self._inner].astype(np.float32), self.grid_size)
        v = self._inner_src[t]                                          # (P, 3, 2) source corners
        return pixels, v[:, 0] + w1[:, None] * (v[:, 1] - v[:, 0]) + w2[:, None] * (v[:, 2] - v[:, 0])

    def region_mask(self, dst_landmarks: np.ndarray) -> np.ndarray:
        """(S, S) float32: the target's mouth opening (MOUTH_VALUE) and eye openings (EYE_VALUE),
        where the warp has no content of its own: a channel of the generator's input."""
        import cv2
        from .blendshapes import INNER_LIP_LOOP, LEFT_EYE_LOOP, RIGHT_EYE_LOOP
        lm = np.asarray(dst_landmarks)[:, :2]
        mask = np.zeros((self.size, self.size), np.float32)
        eyes = [np.round(lm[list(loop)] * 16).astype(np.int32) for loop in (RIGHT_EYE_LOOP, LEFT_EYE_LOOP)]
        cv2.fillPoly(mask, eyes, EYE_VALUE, lineType=cv2.LINE_AA, shift=4)
        cv2.fillPoly(mask, [np.round(lm[list(INNER_LIP_LOOP)] * 16).astype(np.int32)], MOUTH_VALUE,
                     lineType=cv2.LINE_AA, shift=4)
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
        flow = (self.crop_part(backward) - self.crop_part(self.grid)) * (FLOW_SCALE / self.size)
        return np.ascontiguousarray(np.concatenate(
            [self.region_mask(dst_landmarks)[None], flow.transpose(2, 0, 1)], 0), dtype=np.float32)

    def mouth(self, crop: np.ndarray, dst_landmarks: np.ndarray):
        """The drawn mouth interior where the target opens the mouth wider than the source (see
        ``mouth_layer``) as a layer over the warp: (premultiplied colour A*C (S, S, 3) 0-255, A
        (S, S, 1)), or None."""
        layer = mouth_layer(crop, self.src, dst_landmarks)
        return None if layer is None else (layer[0] * layer[1], layer[1])

    def drawn_warp(self, crop: np.ndarray, dst_landmarks: np.ndarray, backward: np.ndarray | None = None):
        """The warp-only renderer at crop resolution: the crop warped to the target mesh with the drawn
        mouth interior over it, (S, S, 3) float32 0-255; and the mouth layer (or None)."""
        warped = self.warp_crop(crop, dst_landmarks, backward).astype(np.float32)
        layer = self.mouth(crop, dst_landmarks)
        return (warped if layer is None else warped * (1 - layer[1]) + layer[0]), layer

    def generator_frame(self, crop: np.ndarray, dst_landmarks: np.ndarray, backward: np.ndarray | None = None,
                        drawn: np.ndarray | None = None) -> np.ndarray:
        """The warp generator's per-frame input (6, S, S) float32: the warp-only render (``drawn_warp``,
        or ``drawn`` when already made) in [-1, 1], then ``frame_extra``. G starts from what the
        geometry alone makes."""
        bm = self.backward_map(dst_landmarks) if backward is None else backward
        if drawn is None:
            drawn = self.drawn_warp(crop, dst_landmarks, bm)[0]
        rgb = drawn * (2.0 / 255.0) - 1.0
        return np.concatenate([rgb.transpose(2, 0, 1), self.frame_extra(dst_landmarks, bm)], 0)


def warp_batch(face_model, landmarks: np.ndarray, p_src: np.ndarray, p_trg: np.ndarray, images: np.ndarray):
    """The geometry of B faces moved from p_src to p_trg, for training the warp generator on
    tensors. ``images`` (B, S, S, 3) uint8: the crops (the drawn mouth takes its colour from their
    lips). Returns maps (B, S, S, 2) float32, the source crop pixel each target pixel shows; extra
    (B, 3, S, S) float32, ``MeshWarp.frame_extra``; mouth (B, S, S, 4) float32, the drawn mouth layer
    (premultiplied colour 0-255 and its opacity; zeros where none); dst (B, 478, 3), the target meshes."""
    maps, extra, mouth, dsts = [], [], [], []
    size = images.shape[1]
    for lm, a, b, img in zip(np.asarray(landmarks, np.float64), np.asarray(p_src), np.asarray(p_trg), images):
        mw = MeshWarp(lm, size)
        dst = target_landmarks(face_model, lm, a, b)
        bm = mw.backward_map(dst)
        maps.append(mw.crop_part(bm))
        extra.append(mw.frame_extra(dst, bm))
        layer = mw.mouth(img, dst)
        mouth.append(np.zeros((size, size, 4), np.float32) if layer is None else np.concatenate(layer, -1))
        dsts.append(dst)
    return np.stack(maps).astype(np.float32), np.stack(extra), np.stack(mouth), np.stack(dsts)


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


def output_map(warp: MeshWarp, backward: np.ndarray, crop_x: np.ndarray, crop_y: np.ndarray,
               out_to_crop: np.ndarray, out_grid: np.ndarray) -> np.ndarray:
    """Carry a grid-level backward map (``MeshWarp.backward_map``) to output pixels: for output pixels
    at ``out_grid`` (h, w, 2) with crop coordinates ``crop_x``/``crop_y`` (h, w) float32, the output
    pixel each shows (h, w, 2). ``out_to_crop``: the 2x3 output -> crop matrix (its linear part
    converts the flow). Beyond the grid the motion is zero."""
    import cv2
    mg = np.float32(warp.margin)
    lin_inv = np.linalg.inv(np.asarray(out_to_crop, np.float64)[:, :2]).astype(np.float32)
    # the flow in output pixels, converted at the grid's resolution (linear: it commutes with the
    # bilinear upsampling, and the grid has fewer pixels than the output region)
    flow = (backward - warp.grid).reshape(-1, 2) @ lin_inv.T
    up = cv2.remap(flow.reshape(backward.shape), crop_x + mg, crop_y + mg, cv2.INTER_LINEAR,
                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return cv2.add(out_grid, up)


def _raster(c: np.ndarray, s: int):
    """Rasterise triangles ``c`` (T, 3, 2) float32 (grid pixel coordinates, pixel centres at integers)
    on an s x s grid, vectorised over (triangle, pixel of its bounding box) pairs; where triangles
    overlap the later one wins (pass them in drawing order). Returns (flat pixel indices, triangle
    index, w1, w2): the barycentric weights of corners 1 and 2 (corner 0 has 1 - w1 - w2)."""
    lo = np.clip(np.ceil(c.min(1)), 0, s).astype(np.int32)              # pixel centres inside the bbox
    hi = np.clip(np.floor(c.max(1)) + 1, 0, s).astype(np.int32)
    wh = np.maximum(hi - lo, 0)
    n = wh[:, 0] * wh[:, 1]
    e1, e2 = c[:, 1] - c[:, 0], c[:, 2] - c[:, 0]
    den = e1[:, 0] * e2[:, 1] - e2[:, 0] * e1[:, 1]
    den = np.where(np.abs(den) < 1e-9, np.float32(1e-9), den)
    a1, b1 = e2[:, 1] / den, -e2[:, 0] / den                             # w1, w2 as affine functions
    a2, b2 = -e1[:, 1] / den, e1[:, 0] / den
    t = np.repeat(np.arange(len(c), dtype=np.int32), n)
    k = np.arange(len(t), dtype=np.int32) - np.repeat((np.cumsum(n) - n).astype(np.int32), n)
    py, px = np.divmod(k, wh[t, 0])
    px += lo[t, 0]
    py += lo[t, 1]
    dx, dy = px - c[t, 0, 0], py - c[t, 0, 1]
    w1 = a1[t] * dx + b1[t] * dy
    w2 = a2[t] * dx + b2[t] * dy
    inside = (w1 >= -1e-5) & (w2 >= -1e-5) & (w1 + w2 <= 1 + 1e-5)
    t, w1, w2, pix = t[inside], w1[inside], w2[inside], py[inside] * s + px[inside]
    winner = np.full(s * s, -1, np.int64)
    winner[pix] = np.arange(len(pix))                                   # repeated index: the last wins
    pixels = np.nonzero(winner >= 0)[0]
    j = winner[pixels]
    return pixels, t[j], w1[j], w2[j]


def _barycentric(v: np.ndarray, tri: np.ndarray, p: np.ndarray) -> np.ndarray:
    """(P, 3) barycentric weights of points p (P, 2) in triangles tri (P, 3) of vertices v."""
    d0, d1, d2 = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    den = (d1[:, 0] - d0[:, 0]) * (d2[:, 1] - d0[:, 1]) - (d2[:, 0] - d0[:, 0]) * (d1[:, 1] - d0[:, 1])
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)
    w1 = ((p[:, 0] - d0[:, 0]) * (d2[:, 1] - d0[:, 1]) - (d2[:, 0] - d0[:, 0]) * (p[:, 1] - d0[:, 1])) / den
    w2 = ((d1[:, 0] - d0[:, 0]) * (p[:, 1] - d0[:, 1]) - (p[:, 0] - d0[:, 0]) * (d1[:, 1] - d0[:, 1])) / den
    return np.stack([1 - w1 - w2, w1, w2], 1)
