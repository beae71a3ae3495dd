"""``slidergan synth-pairs``: the paper's "3D warped images" (section 4.1, SPEC section 5).

A real face is fitted (``engine.blendshapes``), its mesh is deformed to random target parameters,
and the image is warped piecewise-affinely along the mesh triangles from the fitted mesh to the
deformed one: a pair of one identity under two known expressions, with exact parameters.

    slidergan synth-pairs INPUTS... -o DATASET [--pairs-per-face 2] [--every 5] [--seed 0]

INPUTS are videos, images or folders of them (annotated on the fly exactly as ``slidergan
annotate`` does: videos fitted as sequences, images alone), or unpaired dataset folders written by
``slidergan annotate`` (their crops are re-meshed). Each source face gives ``--pairs-per-face``
rows of a paired dataset (``trainer.data``): image = the source crop, params = its fitted p,
target_image = the warped crop, target_params = p_trg.

The warp (``warp_to_params``)
-----------------------------
- Source mesh: the face's own 468 landmarks in crop pixels. Target mesh: the same landmarks moved
  by the model's motion ``U (p_trg - p_src)``, taken from the canonical frame back into the crop by
  the inverse of the face's rigid alignment. So whatever the model does not explain (identity
  detail, fit residual) stays exactly as it was, and the target's parameters are p_trg.
- Triangles: the 852 mesh triangles; fans that close the mouth and the two eyes (around their
  centroids); and an outer band that keeps the warp continuous out to the crop border: a ring
  around the face oval (1.35 x its radius) that moves half as much as the oval, and fixed points
  beyond the crop border, Delaunay-triangulated. The displacement fades smoothly to zero, so nothing
  tears, whatever the jaw does.
- Drawing: every target triangle gets the affine map back to its source triangle; triangles are
  rasterised far-to-near (z) into a triangle-id buffer and the crop is resampled once (bilinear).
  The warp runs at twice the crop size and is downsampled (antialiasing) when ``supersample`` > 1.
- The mouth: where the target mouth is open wider than the source one, the new opening has no image
  content (the closed lips' line would be stretched over it). It is filled with a dark inner-mouth
  colour (the lips' mean colour darkened to ~30 %, darkest in the middle, with a faint lighter
  band of upper teeth where the opening is tall enough), blended with a soft mask in proportion to
  how much of the opening is new.

Target parameters (``sample_targets``) **(choice)**: half of the targets are another face's
fitted parameters (a real expression; from the inputs themselves), half are sparse random vectors:
1 to 5 components, each uniform in [-0.4, 1] (components are signed so that their training motion
is positive: the negative half of a one-sided motion such as a mouth opening is not a face), added
to a real expression with probability 0.5. All are clipped to [-1, 1].
"""
from __future__ import annotations

import argparse
import functools
import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

RING_SCALE = 1.35
RING_FOLLOW = 0.5


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


def _triangulation(src_xy: np.ndarray, dst_xy: np.ndarray, size: int):
    """All triangles of the warp: (vertices_src (V, 2), vertices_dst (V, 2), depth (V,), triangles
    (T, 3), layer (T,): 0 outer band, 1 holes, 2 face)."""
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
    m = 0.08 * size
    k = 9
    lin = np.linspace(-m, size + m, k)
    border = np.concatenate([np.stack([lin, np.full(k, -m)], 1), np.stack([lin, np.full(k, size + m)], 1),
                             np.stack([np.full(k - 2, -m), lin[1:-1]], 1),
                             np.stack([np.full(k - 2, size + m), lin[1:-1]], 1)])
    # ring points outside the border frame are pulled in (a face much larger than the crop)
    ring_src = np.clip(ring_src, -m * 0.9, size + m * 0.9)
    ring_dst = np.clip(ring_dst, -m * 0.9, size + m * 0.9)
    outer_src = np.concatenate([src[0][oval], ring_src, border])
    outer_dst = np.concatenate([dst[0][oval], ring_dst, border])
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
    d0, d1, d2 = vd[tri[t, 0]], vd[tri[t, 1]], vd[tri[t, 2]]
    den = (d1[:, 0] - d0[:, 0]) * (d2[:, 1] - d0[:, 1]) - (d2[:, 0] - d0[:, 0]) * (d1[:, 1] - d0[:, 1])
    den = np.where(np.abs(den) < 1e-9, 1e-9, den)
    w1 = ((p[:, 0] - d0[:, 0]) * (d2[:, 1] - d0[:, 1]) - (d2[:, 0] - d0[:, 0]) * (p[:, 1] - d0[:, 1])) / den
    w2 = ((d1[:, 0] - d0[:, 0]) * (p[:, 1] - d0[:, 1]) - (p[:, 0] - d0[:, 0]) * (d1[:, 1] - d0[:, 1])) / den
    w0 = 1 - w1 - w2
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
    import cv2
    from engine.blendshapes import INNER_LIP_LOOP, OUTER_LIP_LOOP
    loop = list(INNER_LIP_LOOP)
    a_src = _poly_area(np.asarray(src_landmarks)[loop, :2])
    a_dst = _poly_area(np.asarray(dst_landmarks)[loop, :2])
    if a_dst <= 1.0 or a_dst <= a_src * 1.05:
        return warped
    new = float(np.clip((a_dst - a_src) / a_dst, 0.0, 1.0))
    h, w = warped.shape[:2]
    ss = 4
    poly = np.round(np.asarray(dst_landmarks)[loop, :2] * ss * 16).astype(np.int32)
    mask = np.zeros((h * ss, w * ss), np.float32)
    cv2.fillPoly(mask, [poly], 1.0, lineType=cv2.LINE_AA, shift=4)
    mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA)
    mouth_w = np.linalg.norm(np.asarray(dst_landmarks)[78, :2] - np.asarray(dst_landmarks)[308, :2])
    mask = cv2.GaussianBlur(mask, (0, 0), max(0.6, 0.04 * mouth_w))
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
    up = np.asarray(dst_landmarks)[13, :2]
    lo = np.asarray(dst_landmarks)[14, :2]
    gap = np.linalg.norm(lo - up)
    if gap > 0.12 * mouth_w:
        yy, xx = np.mgrid[0:h, 0:w]
        # rows just below the upper inner-lip line
        upper = np.interp(xx, np.asarray(dst_landmarks)[[78, 82, 13, 312, 308], 0],
                          np.asarray(dst_landmarks)[[78, 82, 13, 312, 308], 1])
        band = np.clip(1.0 - (yy + 0.5 - upper) / max(0.22 * gap, 0.8), 0, 1) * (yy + 0.5 >= upper)
        teeth = np.array([205.0, 200, 190]) * 0.8
        fill = fill * (1 - 0.55 * band[..., None]) + teeth[None, None] * 0.55 * band[..., None]
    alpha = (mask * new)[..., None]
    out = warped.astype(np.float32) * (1 - alpha) + fill * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


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
               overwrite: bool = False, show_progress: bool = True, min_face_px: float = 64.0):
    """Write a paired dataset; returns (DatasetInfo, Skips, stats dict)."""
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
        from .data import open_dataset as _od
        total += -(-_od(d).count // every)
    bank: list[np.ndarray] = []
    meta = {"tool": "slidergan synth-pairs", "inputs": [str(i) for i in inputs], "pairs_per_face": pairs_per_face,
            "every": every, "seed": seed, "warp": "piecewise affine along the face mesh (trainer.synth_pairs)",
            "targets": "sample_targets: half real expressions of the inputs, half sparse random"}
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
        with DatasetWriter(out, image_size=size, param_names=fm.param_names, paired=True,
                           shard_size=shard_size, blendshapes=fm.describe(), meta=meta,
                           overwrite=overwrite) as w:
            for f, big in faces(bar):
                p_src = np.clip(np.nan_to_num(f.p), -1, 1).astype(np.float32)
                bank.append(p_src)
                if len(bank) > 5000:
                    bank.pop(int(rng.integers(len(bank))))
                src_img = cv2.resize(f.crop, (size, size), interpolation=cv2.INTER_AREA) if big else f.crop
                for _k in range(pairs_per_face):
                    p_trg = draw_target(fm, f.crop_landmarks, p_src, rng, np.asarray(bank))
                    warped = warp_to_params(fm, f.crop, f.crop_landmarks, p_src, p_trg,
                                            supersample=1 if big else 2)
                    if big:
                        warped = cv2.resize(warped, (size, size), interpolation=cv2.INTER_AREA)
                    w.add(src_img, p_src, f.seq, target_image=warped, target_params=p_trg)
                    n += 1
            w.meta["skipped"] = skips.to_dict()
            w.meta["pairs"] = n
            if n == 0:
                raise ValueError(f"no usable face in the inputs:\n{skips.summary()}")
    return open_dataset(out), skips, {"pairs": n}


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def main(args) -> int:
    from engine.blendshapes import load_face_model
    fm = load_face_model(args.blendshapes) if args.blendshapes else None
    info, skips, stats = make_pairs(args.inputs, args.out, fm, args.pairs_per_face, args.size, args.every,
                                    args.max_frames, args.seed, args.shard_size, args.overwrite,
                                    min_face_px=args.min_face_px)
    print(f"wrote {info.count} pairs to {info.path} ({len(info.shards)} shard(s), {info.image_size} px)")
    print("skipped / noted:\n" + skips.summary())
    return 0
