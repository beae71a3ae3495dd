"""Learned linear blendshape models on the MediaPipe face mesh, and fitting them to faces (SPEC section 1).

A face's 3D shape (the 468-point face mesh, rigidly aligned to the canonical template of
``engine.face``) is modelled as

    S(a, p) = s_mean + U_id a + U_exp p_exp + U_speech p_speech,      p = [p_exp (30), p_speech (10)]

``p = 0`` is the neutral face of the identity ``a``; [-1, 1] covers the training motion (|p_k| = 1 is
2.5 standard deviations of component k). Most facial motions are one-sided (a mouth opens from rest,
it hardly "un-opens"), so the negative half of such a component extrapolates beyond the data.

The file format
---------------
One model is one ``.npz`` file (read with ``allow_pickle=False``), the same format for the expression,
speech and identity models:

    format      "slidergan-blendshapes"        version   1
    kind        "expression" | "speech" | "identity"
    name        a short name ("default-expression")
    mean        float32 (P, 3)     the mean neutral shape at the model's points (canonical frame)
    components  float32 (K, P, 3)  normalised components: S = mean + sum_k p_k components[k]
    eigenvalues float64 (K,)       second moment of each unit-norm component's training coefficient
    names       str (K,)           component names ("jaw_open", "exp07", ...)
    points      int64 (P,)         indices into the 478-point face mesh
    scale       float              kappa: components[k] = kappa * sqrt(eigenvalues[k]) * unit_component[k]
    noise_var   float              per-coordinate variance the model leaves unexplained on its training
                                   data (landmark noise + unmodelled motion): the fit's noise level
    provenance  JSON str           how, when and from what it was built, with every option

The canonical frame is ``engine.face``'s template frame ("unit crop" coordinates: x, y in [0, 1] of
an aligned crop's side, forehead top at y = 0.13, chin at y = 0.83, z in the same unit), so a
distance times 128 is pixels in a 128 x 128 aligned crop.

How the models are learned (``build_models``)
---------------------------------------------
1. Face-mesh tracks of videos (``extract_track``: ``engine.video`` frames, ``engine.face`` mesh in
   static mode on every frame, as the face drivers read faces), each frame rigidly aligned to the
   template (3D similarity Procrustes on ``engine.face.STABLE_POINTS``: forehead, nose bridge, eye
   corners, temples, cheekbones).
2. A neutral per sequence (``estimate_neutral``): frames with the mouth closed and the eyes open
   (lip gap in the lowest 30 %, eye opening in the highest 70 % of that sequence), and of those the
   10 % nearest to their median; the neutral is their mean. **(choice)** No frame of an in-the-wild
   clip is labelled neutral, so "neutral" is "the sequence's calmest closed-mouth frames".
3. Difference vectors: every frame minus its sequence's neutral (468 points; the 10 iris points
   are left out, **(choice)** gaze is not an expression in the paper's models).
4. Speech model first: 10 components of the differences restricted to the mouth-and-jaw points
   (``mouth_jaw_points``: every mesh point below the base of the nose). Then the expression model:
   30 components of the whole-face differences after the part the speech components explain has
   been removed, and finally made orthogonal to the speech components. **(choice)** The paper's two
   models come from different data sets and overlap; here they are built so that they never compete
   for the same motion: ``p_speech`` alone drives mouth and jaw (a speech track needs nothing
   else), ``p_exp`` carries the rest of the face (brows, eyes, cheeks, and the mouth shapes speech
   does not cover). Fitting is then well posed, and fit -> instantiate -> fit returns the same p.
5. Components: sparse localized PCA (``slpca``, the paper's choice, after Neumann et al. 2013,
   "Sparse localized deformation components"): minimise ``1/2 ||D - W C||_F^2 + sum_k,i
   Lambda_k,i ||C_k,i||_2`` (an l1 norm over points of the l2 norm of each point's 3D displacement),
   with ``|W| <= 1``, alternating a box-constrained least-squares step on W and an ADMM step on C.
   Lambda_k,i grows with the geodesic distance (over the mesh) of point i from the component's
   centre, from 0 within ``dmin`` to ``lam`` beyond ``dmax``: components are sparse and local. Plain
   uncentred PCA of the differences is the option ``method="pca"``.
6. Normalisation: each unit-norm component's training coefficients (least squares on all 40
   components at once) have second moment ``eigenvalue``; the stored component is
   ``kappa * sqrt(eigenvalue) * unit_component``, so ``p_k = coefficient / (kappa sqrt(eigenvalue))``.
   **(choice)** kappa = 2.5 (default): |p| = 1 is 2.5 standard deviations of the training motion,
   about the 99th percentile of the training coefficients; the few stronger frames are clipped.
   Signs are chosen so that the component's named motion is positive (mouth opens, brows rise) and
   otherwise so that the training coefficients are mostly positive.
7. Identity: ``s_mean`` is the mean of the identity samples: every training sequence's neutral and
   every still portrait given, the stills with their expression removed (a MAP fit of the expression
   and speech components with the between-person spread of the neutrals as noise). ``U_id`` is a
   small PCA (8 components by default, from ~20 samples) of those samples *after projecting out
   the span of the 40 expression and speech components*, normalised by the square root of its
   eigenvalues, with a standard-normal prior in the fit. **(choice)** With so few people a learned
   identity basis cannot tell a person's own mouth width from a smile any better than the priors
   can (checked leaving one video out: the identity basis, whatever its size, did not bring
   single-image fits of an unseen person closer to that person's sequence fit). So the identity
   basis only takes what no expression can make (face, nose and jaw proportions), the split of a
   shape into identity and expression is unique, and fitting is well posed and idempotent. The
   price: a single image of an unseen person carries a per-person offset in p (mean |dp| ~0.3-0.4
   against the sequence fit of the same frames, whose frame-to-frame changes it follows with a
   per-component correlation ~0.98). Videos are fitted as sequences, where the time axis removes it.
8. Every component (expression and identity) has its infinitesimal similarity motion on the
   alignment's stable points removed (``remove_rigid``), so that re-aligning a model instance does
   not move it: fit(instantiate(p)) = p up to second-order terms, whatever the head pose.

Fitting (``FaceModel``)
-----------------------
``fit(landmarks)`` (one still image): align rigidly, then the MAP estimate

    min_{a, p}  ||x - s_mean - U_id a - U p||^2 / sigma^2 + ||a||^2 + kappa^2 ||p||^2,  -1 <= p <= 1

(Gaussian priors matching the training statistics: E p_k^2 = 1/kappa^2, identity coefficients unit
variance; sigma^2 = the models' ``noise_var`` plus the identity variation the small identity basis
leaves out), solved exactly with an active-set method for the bounds. The priors are weak against
the data (a few per cent shrinkage), so fit -> instantiate -> fit returns p within ~0.02. The residual (RMS distance
per point, in canonical units and in 128-crop pixels) is reported.

``fit_sequence(landmarks (T, 478, 3))`` (a video of one person): align every frame, estimate the
sequence's neutral exactly as the models were built (``estimate_neutral``): the time axis separates
what stays (identity) from what moves (expression). The identity coefficients are the fit of the
neutral; each frame's p is the bounded MAP fit of its difference from the neutral. A sequence's
training frames are so labelled exactly as the model saw them. ``fit_many(landmarks, neutral=shape)``
does the same frame by frame against a neutral already known (a live driver's, fitted once in its
calibration: ``streaming.drivers.FaceDriver.calibrate_on``).

``instantiate(p, identity)`` gives the (478, 3) canonical mesh (the 10 iris points follow their eye's
outline).
"""
from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

log = logging.getLogger(__name__)

FORMAT = "slidergan-blendshapes"
VERSION = 1
NUM_LANDMARKS = 478
NUM_MESH_POINTS = 468           # without the 10 iris points
KINDS = ("expression", "speech", "identity")
DEFAULT_KAPPA = 2.5
CANONICAL_TO_PX = 128.0         # canonical units -> pixels of a 128 x 128 aligned crop

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "blendshapes"
DEFAULT_FILES = {"expression": "expression.npz", "speech": "speech.npz", "identity": "identity.npz"}

__all__ = [
    "FORMAT", "VERSION", "BlendshapeError", "BlendshapeModel", "FaceModel", "FitResult", "SequenceFit",
    "MeshTrack", "extract_track", "rigid_align", "estimate_neutral", "pca", "slpca", "build_models",
    "mesh_triangles", "mesh_edges", "mouth_jaw_points", "load_default_face_model", "load_face_model",
    "explained_variance", "INNER_LIP_LOOP", "RIGHT_EYE_LOOP", "LEFT_EYE_LOOP",
]


class BlendshapeError(ValueError):
    """A blendshape model file that is missing, malformed, of another format or version, or a model
    set that does not fit together."""


# ------------------------------------------------------------------------------------ mesh facts
# Closed outlines (MediaPipe indices). "Left"/"right" are the subject's, as in MediaPipe.
INNER_LIP_LOOP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178,
                  88, 95)
OUTER_LIP_LOOP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181,
                  91, 146)
RIGHT_EYE_LOOP = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
LEFT_EYE_LOOP = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
RIGHT_IRIS = tuple(range(468, 473))   # centre 468 (subject's right eye)
LEFT_IRIS = tuple(range(473, 478))    # centre 473
RIGHT_BROW = (70, 63, 105, 66, 107, 46, 53, 52, 65, 55)
LEFT_BROW = (300, 293, 334, 296, 336, 276, 283, 282, 295, 285)
NOSE_BASE = 2        # subnasale
CHIN = 152


@functools.lru_cache(maxsize=1)
def mesh_edges() -> np.ndarray:
    """(E, 2) unique edges of MediaPipe's face-mesh tessellation (468 points)."""
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION
    e = sorted({tuple(sorted(map(int, x))) for x in FACEMESH_TESSELATION})
    return np.array(e, np.int64)


@functools.lru_cache(maxsize=1)
def mesh_triangles() -> np.ndarray:
    """(852, 3) triangles of the face mesh, derived from the tessellation's edges.

    Every 3-cycle of the edge graph is a candidate; a candidate all of whose edges are shared by
    three candidates is not a face (MediaPipe's edge list has two such spurious cycles, at the nose
    wings) and is dropped. All triangles are wound the same way on the frontal template (``_orient``:
    positive (x, y) cross product, y pointing down). The mouth and the eyes are holes."""
    import collections
    import itertools
    edges = mesh_edges()
    adj = collections.defaultdict(set)
    for a, b in edges:
        adj[a].add(b)
        adj[b].add(a)
    tris = set()
    for a, b in edges:
        for k in adj[a] & adj[b]:
            tris.add(tuple(sorted((int(a), int(b), int(k)))))
    count = collections.Counter()
    for t in tris:
        for e in itertools.combinations(t, 2):
            count[e] += 1
    tris = [t for t in tris if not all(count[e] > 2 for e in itertools.combinations(t, 2))]
    tri = np.array(sorted(tris), np.int64)
    return _orient(tri)


def _orient(tri: np.ndarray) -> np.ndarray:
    from .face import canonical_mesh
    v = canonical_mesh()[:, :2].astype(np.float64)
    a, b, c = v[tri[:, 0]], v[tri[:, 1]], v[tri[:, 2]]
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    tri = tri.copy()
    flip = cross < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


@functools.lru_cache(maxsize=1)
def mouth_jaw_points() -> np.ndarray:
    """Indices of the mouth-and-jaw region: every mesh point (of 468) below the base of the nose
    (template y greater than that of the subnasale, point 2, minus 1 % of the crop): lips, chin, jaw
    line, lower cheeks. The speech model covers these points."""
    from .face import canonical_mesh
    t = canonical_mesh()[:NUM_MESH_POINTS]
    return np.flatnonzero(t[:, 1] > t[NOSE_BASE, 1] - 0.01).astype(np.int64)


def _stable() -> tuple[int, ...]:
    from .face import STABLE_POINTS
    return tuple(STABLE_POINTS)


def geodesic_distances(shape: np.ndarray, points: np.ndarray | None = None) -> np.ndarray:
    """(P, P) shortest-path distances over the tessellation's edges, lengths from ``shape`` (468, 3),
    between ``points`` (default all 468); paths may leave the point set."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import shortest_path
    e = mesh_edges()
    w = np.linalg.norm(shape[e[:, 0]] - shape[e[:, 1]], axis=1)
    g = coo_matrix((w, (e[:, 0], e[:, 1])), shape=(NUM_MESH_POINTS, NUM_MESH_POINTS)).tocsr()
    idx = np.arange(NUM_MESH_POINTS) if points is None else np.asarray(points)
    d = shortest_path(g, directed=False, indices=idx)
    return d[:, idx]


# -------------------------------------------------------------------------------- rigid alignment
def rigid_align(landmarks: np.ndarray) -> tuple[np.ndarray, tuple[float, np.ndarray, np.ndarray]]:
    """3D similarity Procrustes of (478, 3) frame landmarks onto the canonical template on
    ``engine.face.STABLE_POINTS`` (the same fit as ``engine.face.align_mesh_3d``).

    Returns ``(aligned (478, 3) float64, (s, R, t))`` with ``aligned = s * landmarks @ R.T + t``."""
    from .face import STABLE_POINTS, canonical_mesh, umeyama
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (NUM_LANDMARKS, 3):
        raise ValueError(f"expected face-mesh landmarks of shape (478, 3), got {lm.shape}")
    if not np.all(np.isfinite(lm)):
        raise ValueError("face-mesh landmarks contain NaN or inf")
    idx = list(STABLE_POINTS)
    s, r, t = umeyama(lm[idx], canonical_mesh().astype(np.float64)[idx])
    return s * lm @ r.T + t, (float(s), r, t)


def align_many(landmarks: np.ndarray) -> np.ndarray:
    """``rigid_align`` of every (478, 3) set in a (T, 478, 3) array; rows with NaN stay NaN."""
    lm = np.asarray(landmarks, np.float64)
    out = np.full(lm.shape, np.nan)
    for i in range(len(lm)):
        if np.all(np.isfinite(lm[i])):
            out[i] = rigid_align(lm[i])[0]
    return out


# --------------------------------------------------------------------------------- neutral shape
def _lip_gap(x: np.ndarray) -> np.ndarray:
    """Inner-lip opening (mean distance of upper/lower inner-lip pairs), (T,)."""
    pairs = [(13, 14), (82, 87), (312, 317), (81, 178), (311, 402)]
    return np.mean([np.linalg.norm(x[:, a] - x[:, b], axis=-1) for a, b in pairs], axis=0)


def _eye_open(x: np.ndarray) -> np.ndarray:
    pairs = [(159, 145), (158, 153), (160, 144), (386, 374), (385, 380), (387, 373)]
    return np.mean([np.linalg.norm(x[:, a] - x[:, b], axis=-1) for a, b in pairs], axis=0)


def _brow_height(x: np.ndarray) -> np.ndarray:
    """Mean height of the brows above the eye corners' line, (T,)."""
    eyes = x[:, [33, 133, 362, 263], 1].mean(1)
    return eyes - x[:, list(RIGHT_BROW + LEFT_BROW), 1].mean(1)


def _mouth_width(x: np.ndarray) -> np.ndarray:
    return np.linalg.norm(x[:, 61] - x[:, 291], axis=-1)


def _cheek_depth(x: np.ndarray) -> np.ndarray:
    """How far the cheeks stand out towards the camera (puffed cheeks), relative to the nose bridge."""
    return x[:, [6, 168], 2].mean(1) - x[:, [205, 425, 50, 280], 2].mean(1)


def estimate_neutral(aligned: np.ndarray, mouth_quantile: float = 0.3, band: float = 0.25,
                     keep: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """A sequence's neutral shape from its aligned frames (T, 478|468, 3) (no NaN rows).

    Candidates are the sequence's relaxed frames: lip gap at most its ``mouth_quantile`` quantile
    (mouth closed), and eye opening, brow height, mouth width and cheek depth each within the
    central band of the sequence (between the ``band`` and ``1 - band`` quantiles: not blinking or
    staring, not frowning or raising the brows, not smiling or puckering, not puffing). Where no
    frame passes every test, the last tests are dropped one at a time. Of the candidates, the
    ``keep`` share of the sequence (at least one, at most half the candidates) nearest to the
    candidates' per-point median is kept. Returns (their mean shape, their frame indices)."""
    x = np.asarray(aligned, np.float64)
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"estimate_neutral needs (T, P, 3) aligned frames, got {x.shape}")
    if len(x) == 1:
        return x[0].copy(), np.array([0])
    gap = _lip_gap(x)
    ok = [gap <= np.quantile(gap, mouth_quantile)]
    for feat in (_eye_open(x), _brow_height(x), _mouth_width(x), _cheek_depth(x)):
        lo, hi = np.quantile(feat, [band, 1.0 - band])
        ok.append((feat >= lo) & (feat <= hi))
    cand = np.array([], np.int64)
    for n_tests in range(len(ok), 0, -1):
        cand = np.flatnonzero(np.logical_and.reduce(ok[:n_tests]))
        if len(cand):
            break
    if len(cand) == 0:
        cand = np.arange(len(x))
    med = np.median(x[cand, :NUM_MESH_POINTS], axis=0)
    d = np.sqrt(((x[cand, :NUM_MESH_POINTS] - med) ** 2).sum(-1).mean(-1))
    n = int(np.clip(round(keep * len(x)), 1, max(1, int(np.ceil(0.5 * len(cand))))))
    chosen = np.sort(cand[np.argsort(d)[:n]])
    return x[chosen].mean(0), chosen


# ---------------------------------------------------------------------------------- the model file
@dataclass
class BlendshapeModel:
    """One linear blendshape model (see the module docstring for the file format)."""
    kind: str
    mean: np.ndarray                 # (P, 3)
    components: np.ndarray           # (K, P, 3), normalised
    eigenvalues: np.ndarray          # (K,)
    names: list[str]
    points: np.ndarray               # (P,)
    scale: float = DEFAULT_KAPPA
    noise_var: float = 0.0
    name: str = ""
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.mean = np.asarray(self.mean, np.float32)
        self.components = np.asarray(self.components, np.float32)
        self.eigenvalues = np.asarray(self.eigenvalues, np.float64)
        self.points = np.asarray(self.points, np.int64)
        self.names = [str(n) for n in self.names]
        self.validate()

    # ---- checks
    def validate(self, where: str = "blendshape model") -> None:
        k = len(self.names)
        p = len(self.points)
        if self.kind not in KINDS:
            raise BlendshapeError(f"{where}: kind {self.kind!r} is not one of {KINDS}")
        if self.mean.shape != (p, 3):
            raise BlendshapeError(f"{where}: mean has shape {self.mean.shape}, expected ({p}, 3)")
        if self.components.shape != (k, p, 3):
            raise BlendshapeError(f"{where}: components have shape {self.components.shape}, "
                                  f"expected ({k}, {p}, 3) for {k} names and {p} points")
        if self.eigenvalues.shape != (k,):
            raise BlendshapeError(f"{where}: {self.eigenvalues.shape[0]} eigenvalues for {k} components")
        if len(set(self.names)) != k:
            raise BlendshapeError(f"{where}: component names are not unique")
        if p and (self.points.min() < 0 or self.points.max() >= NUM_LANDMARKS
                  or len(np.unique(self.points)) != p):
            raise BlendshapeError(f"{where}: point indices must be unique and within 0..477")
        for nm, a in (("mean", self.mean), ("components", self.components),
                      ("eigenvalues", self.eigenvalues)):
            if not np.all(np.isfinite(a)):
                raise BlendshapeError(f"{where}: {nm} holds NaN or inf")

    # ---- facts
    @property
    def n_components(self) -> int:
        return len(self.names)

    @property
    def n_points(self) -> int:
        return len(self.points)

    def matrix(self) -> np.ndarray:
        """(3P, K) float64: the components as columns (flattened point-major)."""
        return self.components.reshape(self.n_components, self.n_points * 3).T.astype(np.float64)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.mean, self.components, self.points):
            h.update(np.ascontiguousarray(a).tobytes())
        h.update("\n".join(self.names).encode())
        return h.hexdigest()[:12]

    # ---- use
    def displacement(self, p) -> np.ndarray:
        """sum_k p_k components[k], (P, 3) float32."""
        p = np.asarray(p, np.float32).reshape(-1)
        if p.shape[0] != self.n_components:
            raise ValueError(f"{self.kind} model takes {self.n_components} parameters, got {p.shape[0]}")
        return np.tensordot(p, self.components, axes=1)

    def instantiate(self, p) -> np.ndarray:
        """mean + displacement(p), (P, 3) float32 at this model's points."""
        return self.mean + self.displacement(p)

    def project(self, shape: np.ndarray) -> np.ndarray:
        """Least-squares parameters of a shape (P, 3) at this model's points (no prior, no clipping):
        the normalised form of SPEC section 1's ``p = U^T (S - s_mean)``."""
        d = (np.asarray(shape, np.float64) - self.mean).reshape(-1)
        return np.linalg.lstsq(self.matrix(), d, rcond=None)[0]

    # ---- file
    def save(self, path) -> Path:
        from .atomic import atomic_path
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            format=np.array(FORMAT), version=np.array(VERSION, np.int64), kind=np.array(self.kind),
            name=np.array(self.name), mean=self.mean.astype(np.float32),
            components=self.components.astype(np.float32), eigenvalues=self.eigenvalues.astype(np.float64),
            names=np.array(self.names, dtype=np.str_), points=self.points.astype(np.int64),
            scale=np.array(float(self.scale)), noise_var=np.array(float(self.noise_var)),
            provenance=np.array(json.dumps(self.provenance, sort_keys=True)))
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, **arrays)
        return path

    @classmethod
    def load(cls, path, kind: str | None = None) -> "BlendshapeModel":
        """Read a model file; ``kind`` checks what it holds. Errors name the file and the problem."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"blendshape model not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as z:
                files = set(z.files)
                if "format" not in files or str(z["format"]) != FORMAT:
                    got = str(z["format"]) if "format" in files else "none"
                    raise BlendshapeError(f"{path} is not a SliderGAN blendshape model (format {got!r}, "
                                          f"expected {FORMAT!r})")
                ver = int(z["version"]) if "version" in files else None
                if ver != VERSION:
                    raise BlendshapeError(f"{path} is blendshape format version {ver}; this build reads "
                                          f"version {VERSION} (rebuild it with `slidergan blendshapes build`)")
                need = {"kind", "mean", "components", "eigenvalues", "names", "points", "scale"}
                if need - files:
                    raise BlendshapeError(f"{path} lacks {sorted(need - files)}")
                m = cls(kind=str(z["kind"]), mean=z["mean"], components=z["components"],
                        eigenvalues=z["eigenvalues"], names=[str(s) for s in z["names"]],
                        points=z["points"], scale=float(z["scale"]),
                        noise_var=float(z["noise_var"]) if "noise_var" in files else 0.0,
                        name=str(z["name"]) if "name" in files else path.stem,
                        provenance=json.loads(str(z["provenance"])) if "provenance" in files else {})
        except BlendshapeError as e:
            if str(path) in str(e):
                raise
            raise BlendshapeError(f"{path}: {e}") from None
        except (OSError, ValueError, KeyError) as e:
            raise BlendshapeError(f"{path} is not a readable blendshape model (.npz): {e}") from None
        if kind is not None and m.kind != kind:
            raise BlendshapeError(f"{path} holds a {m.kind} model, expected a {kind} model")
        return m

    def summary(self) -> str:
        pv = self.provenance
        lines = [f"{self.name or '(unnamed)'}: {self.kind} model, {self.n_components} components on "
                 f"{self.n_points} points, kappa {self.scale:g}, format {FORMAT} v{VERSION}, "
                 f"fingerprint {self.fingerprint()}"]
        if pv:
            lines.append(f"  built {pv.get('created', '?')} by {pv.get('method', '?')} from "
                         f"{len(pv.get('inputs', []))} input(s); {pv.get('frames', '?')} frames")
            if pv.get("held_out"):
                lines.append(f"  held out: {', '.join(pv['held_out'])}")
            if pv.get("note"):
                lines.append(f"  note: {pv['note']}")
            if pv.get("command"):
                lines.append(f"  command: {pv['command']}")
        total = self.eigenvalues.sum()
        for i, (n, ev) in enumerate(zip(self.names, self.eigenvalues)):
            amp = float(np.sqrt((self.components[i] ** 2).sum(-1)).max()) * CANONICAL_TO_PX
            lines.append(f"  {i:2d} {n:<18s} share {ev / total:6.1%}   max point motion at p=1: "
                         f"{amp:5.2f} px (128 crop)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- learning
def pca(d: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Uncentred PCA of difference vectors (F, M): (k, M) unit components, (k,) eigenvalues
    (second moments of the coefficients). Uncentred, because the origin (the neutral) is p = 0."""
    d = np.asarray(d, np.float64)
    _, s, vt = np.linalg.svd(d, full_matrices=False)
    k = min(k, len(s))
    return vt[:k].copy(), (s[:k] ** 2) / len(d)


def slpca(d: np.ndarray, k: int, geodesic: np.ndarray, lam: float = 0.2, dmin: float = 0.06,
          dmax: float = 0.3, iterations: int = 15, admm_iterations: int = 10, seed: int = 0,
          progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse localized PCA (Neumann et al. 2013) of (F, 3P) difference vectors.

    Minimises ``1/2 ||D - W C||^2 + F * sum_{k,i} Lambda_{k,i} ||C_{k,i}||_2`` subject to
    ``|W| <= 1``, with ``D`` scaled to unit RMS per frame. ``Lambda_{k,i} = lam * clip((g(c_k, i) -
    dmin) / (dmax - dmin), 0, 1)``: ``g`` the geodesic distance (``geodesic`` (P, P), canonical units)
    from the component's centre ``c_k`` (its point of largest motion). Initialised greedily (each
    component the leading singular vector of the residual weighted by a local support around the
    point of largest residual energy), then ``iterations`` rounds of: W by exact box-constrained
    coordinate descent, C by ``admm_iterations`` ADMM steps with group soft-thresholding.

    Returns (k, 3P) unit components (not orthogonal) and (k,) eigenvalues (second moments of their
    least-squares coefficients), sorted by eigenvalue."""
    d = np.asarray(d, np.float64)
    f, m = d.shape
    p = m // 3
    unit = np.sqrt((d ** 2).sum(1).mean())
    x = d / unit
    rng = np.random.default_rng(seed)

    def support(center):
        return np.clip((dmax - geodesic[center]) / (dmax - dmin), 0.0, 1.0)

    def penalty(center):
        return lam * np.clip((geodesic[center] - dmin) / (dmax - dmin), 0.0, 1.0)

    # -- greedy initialisation
    r = x.copy()
    c = np.zeros((k, m))
    w = np.zeros((f, k))
    for j in range(k):
        energy = (r.reshape(f, p, 3) ** 2).sum((0, 2))
        center = int(np.argmax(energy))
        sw = np.repeat(support(center), 3)
        rw = r * sw
        v = rng.standard_normal(m)
        for _ in range(30):                      # power iteration for the leading singular pair
            u = rw @ v
            v = rw.T @ u
            v /= np.linalg.norm(v) + 1e-12
        u = rw @ v
        scale = np.abs(u).max() + 1e-12
        w[:, j] = u / scale
        c[j] = v * scale
        r -= np.outer(w[:, j], c[j])

    def w_step(w, c):
        g = c @ c.T
        xc = x @ c.T
        for _ in range(3):
            for j in range(k):
                if g[j, j] <= 1e-12:
                    w[:, j] = 0
                    continue
                rest = xc[:, j] - w @ g[:, j] + w[:, j] * g[j, j]
                w[:, j] = np.clip(rest / g[j, j], -1.0, 1.0)
        return w

    for it in range(iterations):
        w = w_step(w, c)
        centers = [int(np.argmax((c[j].reshape(p, 3) ** 2).sum(1))) for j in range(k)]
        lam_kp = np.stack([penalty(cj) for cj in centers]) * f          # (k, p)
        wtw = w.T @ w
        rho = max(float(np.trace(wtw)) / k, 1e-6)
        lhs = np.linalg.inv(wtw + rho * np.eye(k))
        wtx = w.T @ x
        z = c.copy()
        uu = np.zeros_like(c)
        for _ in range(admm_iterations):
            c = lhs @ (wtx + rho * (z - uu))
            v = (c + uu).reshape(k, p, 3)
            nrm = np.sqrt((v ** 2).sum(-1))
            shrink = np.maximum(0.0, 1.0 - (lam_kp / rho) / np.maximum(nrm, 1e-12))
            z = (v * shrink[..., None]).reshape(k, m)
            uu += c - z
        c = z
        if progress:
            progress(1)
    # unit components, least-squares coefficients, sort
    norms = np.linalg.norm(c, axis=1)
    keep = norms > 1e-9
    c = c[keep] / norms[keep, None]
    coef = np.linalg.lstsq(c.T, d.T, rcond=None)[0].T                    # (F, k)
    ev = (coef ** 2).mean(0)
    order = np.argsort(-ev)
    return c[order], ev[order]


def remove_rigid(components: np.ndarray, shape: np.ndarray) -> np.ndarray:
    """Components (K, 468 * 3) without their infinitesimal similarity motion on the alignment's
    stable points (``engine.face.STABLE_POINTS``): translation, rotation and scale about ``shape``
    (468, 3) fitted there by least squares and subtracted everywhere. Re-aligning a model instance
    then leaves it where it is, so fit(instantiate(p)) = p does not suffer from the alignment."""
    from .face import STABLE_POINTS
    c = np.asarray(components, np.float64).reshape(len(components), NUM_MESH_POINTS, 3)
    x = np.asarray(shape, np.float64)[:NUM_MESH_POINTS]
    x = x - x[list(STABLE_POINTS)].mean(0)
    g = np.zeros((7, NUM_MESH_POINTS, 3))
    for i in range(3):
        g[i, :, i] = 1.0                                   # translations
        axis = np.eye(3)[i]
        g[3 + i] = np.cross(axis, x)                       # rotations
    g[6] = x                                               # scale
    gs = g[:, list(STABLE_POINTS)].reshape(7, -1)
    coef = np.linalg.lstsq(gs.T, c[:, list(STABLE_POINTS)].reshape(len(c), -1).T, rcond=None)[0]  # (7, K)
    return (c - np.tensordot(coef.T, g, axes=1)).reshape(len(components), -1)


def explained_variance(diffs: np.ndarray, basis: np.ndarray) -> float:
    """Share of the second moment of difference vectors (F, M) that the span of ``basis`` (M, K)
    explains (least-squares projection, no bounds): 1 - ||D - proj D||^2 / ||D||^2."""
    d = np.asarray(diffs, np.float64)
    q, _ = np.linalg.qr(np.asarray(basis, np.float64))
    resid = d - (d @ q) @ q.T
    return float(1.0 - (resid ** 2).sum() / max((d ** 2).sum(), 1e-30))


# ------------------------------------------------------------------------------------- naming
def _features(d: np.ndarray) -> dict[str, float]:
    """Directional motion features of one component's displacement d (468, 3) (canonical frame:
    x to the subject's left, y down, z away from the camera), divided by its largest point motion.
    Names follow the direction of positive p; "left"/"right" are the subject's."""
    m = float(np.sqrt((d ** 2).sum(1)).max()) + 1e-12
    d = d / m
    y, x, z = d[:, 1], d[:, 0], d[:, 2]
    brow_r, brow_l = -y[list(RIGHT_BROW)].mean(), -y[list(LEFT_BROW)].mean()
    close_r = -((y[145] - y[159]) + (y[153] - y[158]) + (y[144] - y[160])) / 3
    close_l = -((y[374] - y[386]) + (y[380] - y[385]) + (y[373] - y[387])) / 3
    smile_r = -y[61] - 0.5 * x[61]
    smile_l = -y[291] + 0.5 * x[291]
    width = (x[291] - x[61]) / 2
    f = {
        "jaw_open": y[152] * 0.7 + (y[14] - y[13]) * 0.3,
        "lips_part": (y[14] - y[13]) - 0.5 * max(y[152], 0.0),
        "lips_press": -(y[14] - y[13]) - abs(y[152]),
        "smile": (smile_r + smile_l) / 2 - 0.5 * abs(smile_r - smile_l),
        "smile_right": smile_r - max(smile_l, 0.0),
        "smile_left": smile_l - max(smile_r, 0.0),
        "mouth_frown": (y[61] + y[291]) / 2 - 0.5 * abs(y[61] - y[291]),
        "mouth_stretch": width - 0.5 * abs(y[61] + y[291]) / 2,
        "pucker": -width - (z[0] + z[17]) / 2 * 0.5,
        "lips_forward": -(z[0] + z[17] + z[13] + z[14]) / 4,
        "mouth_left": (x[61] + x[291] + x[0] + x[17]) / 4 - 0.5 * abs(width),
        "mouth_right": -(x[61] + x[291] + x[0] + x[17]) / 4 - 0.5 * abs(width),
        "jaw_left": x[152] - 0.5 * abs(y[152]),
        "jaw_right": -x[152] - 0.5 * abs(y[152]),
        "upper_lip_raise": -y[0] - max(-y[17], 0.0),
        "lower_lip_down": y[17] - max(y[152], 0.0),
        "nose_down": (y[1] + y[4] + y[2]) / 3 - 0.5 * abs(y[13]),
        "nose_wrinkle": -(y[49] + y[279] + y[48] + y[278]) / 4 - 0.5 * abs(y[1]),
        "cheek_raise": -(y[205] + y[425] + y[50] + y[280]) / 4 - 0.5 * abs(y[61] + y[291]) / 2,
        "cheek_puff": -(z[205] + z[425] + z[50] + z[280]) / 4,
        "brow_raise": (brow_r + brow_l) / 2 - 0.5 * abs(brow_r - brow_l),
        "brow_raise_right": brow_r - max(brow_l, 0.0),
        "brow_raise_left": brow_l - max(brow_r, 0.0),
        "brow_lower": -(brow_r + brow_l) / 2 - 0.5 * abs(brow_r - brow_l),
        "eye_close": (close_r + close_l) / 2 - 0.5 * abs(close_r - close_l),
        "eye_close_right": close_r - max(close_l, 0.0),
        "eye_close_left": close_l - max(close_r, 0.0),
        "eye_wide": -(close_r + close_l) / 2 - 0.5 * abs(close_r - close_l),
    }
    return {k: float(v) for k, v in f.items()}


_FEATURE_POINTS = {
    "jaw": (152, 148, 377, 14, 17), "lips": (13, 14, 0, 17, 61, 291, 78, 308),
    "brow_r": RIGHT_BROW, "brow_l": LEFT_BROW, "brow": RIGHT_BROW + LEFT_BROW,
    "eye_r": RIGHT_EYE_LOOP, "eye_l": LEFT_EYE_LOOP, "eye": RIGHT_EYE_LOOP + LEFT_EYE_LOOP,
    "nose": (1, 4, 2, 49, 279, 48, 278), "cheek": (205, 425, 50, 280),
}
_FEATURE_REGION = {
    "jaw_open": "jaw", "lips_part": "lips", "lips_press": "lips", "smile": "lips", "smile_right": "lips",
    "smile_left": "lips", "mouth_frown": "lips", "mouth_stretch": "lips", "pucker": "lips",
    "lips_forward": "lips", "mouth_left": "lips", "mouth_right": "lips", "jaw_left": "jaw",
    "jaw_right": "jaw", "upper_lip_raise": "lips", "lower_lip_down": "lips", "nose_down": "nose",
    "nose_wrinkle": "nose", "cheek_raise": "cheek", "cheek_puff": "cheek", "brow_raise": "brow",
    "brow_raise_right": "brow_r", "brow_raise_left": "brow_l", "brow_lower": "brow",
    "eye_close": "eye", "eye_close_right": "eye_r", "eye_close_left": "eye_l", "eye_wide": "eye",
}


def _describe(d: np.ndarray, threshold: float = 0.4, near: float = 0.1) -> tuple[str | None, float]:
    """(best descriptive name or None, its score) for a displacement (468, 3): the feature with the
    largest score at least ``threshold`` whose key points lie within ``near`` (canonical units) of
    the component's point of largest motion (so a cheek component is not named after the eyelid
    it drags along)."""
    from .face import canonical_mesh
    tpl = canonical_mesh()
    centre = tpl[int(np.argmax((np.asarray(d) ** 2).sum(1)))]
    f = _features(d)
    ok = {k: v for k, v in f.items()
          if np.linalg.norm(tpl[list(_FEATURE_POINTS[_FEATURE_REGION[k]])] - centre, axis=1).min() <= near}
    if not ok:
        return None, 0.0
    name = max(ok, key=ok.get)
    return (name if ok[name] >= threshold else None), ok[name]


_AUTO_NAME = __import__("re").compile(r"^(exp|speech)\d+$")
_REGION_WORDS = {"jaw": "chin", "lips": "mouth", "brow_r": "brow", "brow_l": "brow", "brow": "brows",
                 "eye_r": "eyelids", "eye_l": "eyelids", "eye": "eyelids", "nose": "nose", "cheek": "cheek"}


def _moving(d: np.ndarray) -> tuple[np.ndarray, float]:
    """The points of a displacement (468, 3) that really move (up to 12, at least half the largest
    motion) and that largest motion."""
    mag = np.sqrt((d ** 2).sum(1))
    top = np.argsort(-mag)[:12]
    return top[mag[top] >= 0.5 * mag.max()], float(mag.max())


def motion_label(d: np.ndarray) -> str:
    """A readable description of a displacement (468, 3) (canonical frame: x to the subject's left, y
    down, z away from the camera): where it moves most, which way, which side ("left cheek up",
    "mouth forward", "chin right"). For components that no named motion dominates."""
    from .face import canonical_mesh
    tpl = canonical_mesh()
    d = np.asarray(d, np.float64)
    top, _ = _moving(d)
    centre = tpl[top].mean(0)
    region = min(_FEATURE_POINTS, key=lambda r: np.linalg.norm(tpl[list(_FEATURE_POINTS[r])] - centre, axis=1).min())
    mean = d[top].mean(0)
    axis = int(np.argmax(np.abs(mean)))
    way = {0: ("left", "right"), 1: ("down", "up"), 2: ("back", "forward")}[axis][0 if mean[axis] > 0 else 1]
    side = motion_side(d)
    if axis == 0 or side is None:  # a sideways motion names its own direction; the side would only confuse
        return f"{_REGION_WORDS[region]} {way}"
    return f"{side} {_REGION_WORDS[region]} {way}"


def motion_side(d: np.ndarray) -> str | None:
    """The side of the face whose points a displacement (468, 3) moves ("left": the subject's left,
    x > 0), when they are all on one side; else None."""
    from .face import canonical_mesh
    tpl = canonical_mesh()
    top, _ = _moving(d)
    xs = tpl[top, 0] - tpl[:, 0].mean()
    return "left" if xs.min() > 0 else "right" if xs.max() < 0 else None


SECOND_MOTION_RADIUS = 0.12   # canonical units (the eye corners are 0.38 apart): "elsewhere on the face"
SECOND_MOTION_SHARE = 0.3     # a second motion at least this share of the largest one is worth naming
SAME_MOTION_COS = 0.9         # two components whose motions are this alike make "the same motion"


def second_motion(d: np.ndarray) -> str | None:
    """``motion_label`` of what a displacement (468, 3) moves away from its main motion (beyond
    SECOND_MOTION_RADIUS), when that is at least SECOND_MOTION_SHARE of it; else None."""
    from .face import canonical_mesh
    tpl = canonical_mesh()[:NUM_MESH_POINTS]
    d = np.asarray(d, np.float64)
    top, peak = _moving(d)
    far = np.linalg.norm(tpl - tpl[top].mean(0), axis=1) > SECOND_MOTION_RADIUS
    rest = np.where(far[:, None], d, 0.0)
    if peak <= 0 or np.sqrt((rest ** 2).sum(1)).max() < SECOND_MOTION_SHARE * peak:
        return None
    return motion_label(rest)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64).reshape(-1), np.asarray(b, np.float64).reshape(-1)
    n = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b) / n if n > 0 else 1.0


def component_labels(names: list[str], displacements: np.ndarray) -> list[str]:
    """A readable label for every component: its name in words ("brow raise left") when it has one,
    else its motion (``motion_label``). Components whose labels would read the same are told apart by
    what else they move (``second_motion``: "eyelids left, brow left"); a name repeated with "_2" says
    which component it repeats when its motion is the same (cosine at least SAME_MOTION_COS), else
    adds the motion it makes ("lips part 2 (mouth forward)"); else by the side they move ("brow left
    (right side)": a sideways motion's label does not name it). Labels still alike get "(2)", "(3)".
    ``displacements``: (K, 468, 3), each component's motion for p = +1. Labels are for people (the
    page, reports); the names stay the model's identity (its fingerprint)."""
    first: list[str] = []
    for name, d in zip(names, displacements):
        base, _, rep = name.rpartition("_")
        if rep.isdigit() and base in names:
            b = base.replace("_", " ")
            if _cos(d, displacements[names.index(base)]) >= SAME_MOTION_COS:
                first.append(f"{b} ({rep}, the same motion as {b})")
            else:
                first.append(f"{b} {rep} ({motion_label(d)})")
        else:
            first.append(motion_label(d) if _AUTO_NAME.match(name) else name.replace("_", " "))
    out: list[str] = []
    for k, (label, d) in enumerate(zip(first, displacements)):
        if first.count(label) > 1 and _AUTO_NAME.match(names[k]):
            extra, side = second_motion(d), motion_side(d)
            if extra and extra != label:
                label = f"{label}, {extra}"
            elif side:            # the same motion on the two sides ("brow left" of either brow)
                label = f"{label} ({side} side)"
        base_label, n = label, 2
        while label in out:
            label = f"{base_label} ({n})"
            n += 1
        out.append(label)
    return out


def _name_components(unit: np.ndarray, coef: np.ndarray, points: np.ndarray, prefix: str,
                     used: set[str]) -> tuple[list[str], np.ndarray]:
    """Names and signs (+1/-1) for unit components (K, P, 3) on ``points`` with training
    coefficients (F, K). The sign makes the stronger tail of the training coefficients positive;
    then the component is named after its dominant motion in that direction ("jaw_open"), or
    ``prefix`` + index ("exp07") when no motion dominates. Repeated names get "_2", "_3"."""
    names, signs = [], np.ones(len(unit))
    for k in range(len(unit)):
        lo, hi = np.quantile(coef[:, k], [0.02, 0.98])
        sign = 1.0 if abs(hi) >= abs(lo) else -1.0
        full = np.zeros((NUM_MESH_POINTS, 3))
        full[points[points < NUM_MESH_POINTS]] = unit[k][points < NUM_MESH_POINTS] * sign
        desc, _ = _describe(full)
        if desc is None:
            desc = f"{prefix}{k:02d}"
        base, n = desc, 2
        while desc in used:
            desc = f"{base}_{n}"
            n += 1
        used.add(desc)
        names.append(desc)
        signs[k] = sign
    return names, signs


# ------------------------------------------------------------------------------------ mesh tracks
@dataclass
class MeshTrack:
    """Face-mesh landmarks of one video (or one still, T = 1) in frame coordinates.

    landmarks (T, 478, 3) float32, NaN rows where no face was found; t (T,) seconds; status per
    frame ("ok", "multiple_faces", "no_face")."""
    name: str
    landmarks: np.ndarray
    t: np.ndarray
    source: str = ""
    kind: str = "video"
    fps: float = 0.0
    status: list[str] = field(default_factory=list)

    @property
    def valid(self) -> np.ndarray:
        return np.all(np.isfinite(self.landmarks.reshape(len(self.landmarks), -1)), axis=1)


def extract_track(path, every: int = 1, max_frames: int | None = None, progress=None,
                  detector=None) -> MeshTrack:
    """Face mesh of every ``every``-th frame of a video (static mode: detection on every frame), or of
    a still image. The largest face is kept. ``progress``: a tqdm-like object (``update(n)``)."""
    from .face import FaceMeshDetector, load_image
    from .video import read_frames, video_info
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"input not found: {path}")
    if path.suffix.lower() in IMAGE_EXTS:
        img = load_image(path)
        det = detector or FaceMeshDetector(static=True, max_faces=4)
        try:
            faces = det.detect(img)
        finally:
            if detector is None:
                det.close()
        lm = faces[0][None] if faces else np.full((1, NUM_LANDMARKS, 3), np.nan, np.float32)
        st = ["no_face" if not faces else ("multiple_faces" if len(faces) > 1 else "ok")]
        if progress is not None:
            progress.update(1)
        return MeshTrack(path.stem, lm.astype(np.float32), np.zeros(1), str(path), "image", 0.0, st)
    info = video_info(path)
    det = detector or FaceMeshDetector(static=True, max_faces=2, locate=False)   # as FaceTracker reads faces
    lms, ts, st = [], [], []
    try:
        for i, (rgb, t) in enumerate(read_frames(path)):
            if max_frames is not None and len(lms) >= max_frames:
                break
            if i % every:
                continue
            faces = det.detect(rgb)
            lms.append(faces[0] if faces else np.full((NUM_LANDMARKS, 3), np.nan, np.float32))
            st.append("no_face" if not faces else ("multiple_faces" if len(faces) > 1 else "ok"))
            ts.append(t)
            if progress is not None:
                progress.update(1)
    finally:
        if detector is None:
            det.close()
    if not lms:
        raise ValueError(f"no frames read from {path}")
    return MeshTrack(path.stem, np.asarray(lms, np.float32), np.asarray(ts), str(path), "video",
                     info.fps / every, st)


IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_EXTS = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"}


# ------------------------------------------------------------------------------------- building
def _flat_cols(points: np.ndarray) -> np.ndarray:
    return (np.asarray(points)[:, None] * 3 + np.arange(3)).ravel()


def _map_solve(a: np.ndarray, x: np.ndarray, prec: np.ndarray, sigma2: float) -> np.ndarray:
    """MAP coefficients (no bounds) of rows of x (n, M) on columns of a (M, K) with prior precisions
    ``prec`` (K,) and noise variance ``sigma2``."""
    lhs = a.T @ a / sigma2 + np.diag(prec)
    return np.linalg.solve(lhs, a.T @ np.asarray(x, np.float64).T / sigma2).T


def build_models(tracks: Sequence[MeshTrack], stills: Sequence[MeshTrack] = (), *, method: str = "slpca",
                 speech_method: str = "pca", n_exp: int = 30, n_speech: int = 10, n_identity: int = 8, kappa: float = DEFAULT_KAPPA,
                 lam: float = 0.005, dmin: float = 0.1, dmax: float = 0.4, iterations: int = 15,
                 held_out: Sequence[MeshTrack] = (), name: str = "default", command: str = "", note: str = "",
                 min_frames: int = 10, progress: Callable[[str], None] | None = None,
                 step: Callable[[int], None] | None = None) -> tuple[dict[str, BlendshapeModel], dict]:
    """Learn the expression, speech and identity models from face-mesh tracks (see the module
    docstring). ``stills`` (one-frame tracks) add identity samples; ``held_out`` tracks are not
    learned from: the share of their motion the models explain goes into the provenance.
    ``progress(message)`` hears each stage, ``step(1)`` each SLPCA round (for progress bars).

    Returns ({"expression": ..., "speech": ..., "identity": ...}, report dict)."""
    import platform
    for m_ in (method, speech_method):
        if m_ not in ("slpca", "pca"):
            raise ValueError(f"method must be 'slpca' or 'pca', not {m_!r}")
    say = progress or (lambda s: log.info(s))
    seq_aligned, seq_names, neutrals, frames_used = [], [], [], {}
    for tr in tracks:
        x = align_many(tr.landmarks[tr.valid])
        if len(x) < min_frames:
            log.warning("%s: only %d frames with a face; used as an identity sample only", tr.name, len(x))
            if len(x):
                stills = list(stills) + [MeshTrack(tr.name, tr.landmarks[tr.valid][:1], np.zeros(1),
                                                   tr.source, "image")]
            continue
        seq_aligned.append(x[:, :NUM_MESH_POINTS])
        seq_names.append(tr.name)
        neutrals.append(estimate_neutral(x)[0][:NUM_MESH_POINTS])
        frames_used[tr.name] = int(len(x))
    if not seq_aligned:
        raise ValueError(f"no video with at least {min_frames} face frames among {len(tracks)} input(s)")
    diffs = np.concatenate([x - n for x, n in zip(seq_aligned, neutrals)]).reshape(-1, NUM_MESH_POINTS * 3)
    n_frames = len(diffs)
    k_exp = min(n_exp, n_frames - 1)
    k_sp = min(n_speech, n_frames - 1)
    ref_shape = np.mean(neutrals, axis=0)
    mj = mouth_jaw_points()
    mjc = _flat_cols(mj)
    opts = dict(lam=lam, dmin=dmin, dmax=dmax, iterations=iterations, progress=step)
    # -- speech: mouth and jaw points
    say(f"speech model: {speech_method}, {k_sp} components on {len(mj)} mouth-and-jaw points, {n_frames} frames")
    geo = geodesic_distances(ref_shape)
    if speech_method == "slpca":
        cs, _ = slpca(diffs[:, mjc], k_sp, geo[np.ix_(mj, mj)], **opts)
    else:
        cs, _ = pca(diffs[:, mjc], k_sp)
    us = np.zeros((len(cs), NUM_MESH_POINTS * 3))
    us[:, mjc] = cs
    if np.abs(us.reshape(len(us), NUM_MESH_POINTS, 3)[:, list(_stable())]).max() > 0:
        raise ValueError("the speech region must not hold alignment points")
    qs, _ = np.linalg.qr(us.T)
    # -- expression: what speech leaves, whole face, then orthogonal to speech
    say(f"expression model: {method}, {k_exp} components on {NUM_MESH_POINTS} points")
    resid = diffs - (diffs @ qs) @ qs.T
    if method == "slpca":
        ce, _ = slpca(resid, k_exp, geo, **opts)
    else:
        ce, _ = pca(resid, k_exp)
    ce = remove_rigid(ce, ref_shape)
    ce = ce - (ce @ qs) @ qs.T
    ce /= np.linalg.norm(ce, axis=1, keepdims=True)
    # -- joint coefficients, eigenvalues, signs, names, order
    basis = np.concatenate([ce, us]).T                                   # (M, Ke + Ks)
    coef = np.linalg.lstsq(basis, diffs.T, rcond=None)[0].T
    ev = (coef ** 2).mean(0)
    ke = len(ce)
    order_e = np.argsort(-ev[:ke])
    order_s = ke + np.argsort(-ev[ke:])
    used: set[str] = set()
    unit_e = ce[order_e - 0].reshape(-1, NUM_MESH_POINTS, 3)
    names_e, signs_e = _name_components(unit_e, coef[:, order_e], np.arange(NUM_MESH_POINTS), "exp", used)
    unit_s = us[order_s - ke].reshape(-1, NUM_MESH_POINTS, 3)[:, mj]
    names_s, signs_s = _name_components(unit_s, coef[:, order_s], mj, "speech", used)
    ev_e, ev_s = ev[order_e], ev[order_s]
    resid_all = diffs - coef @ basis.T
    noise_var = float((resid_all ** 2).mean())
    ev_train = float(1 - (resid_all ** 2).sum() / (diffs ** 2).sum())
    # -- identity samples: sequence neutrals + stills with their expression removed
    id_samples = [n for n in neutrals]
    id_names = list(seq_names)
    seq_mean = np.mean(neutrals, axis=0)
    sigma_id2 = float(np.var(np.stack(neutrals) - seq_mean, axis=0).mean()) if len(neutrals) > 1 else noise_var
    prec = np.concatenate([np.full(ke, kappa ** 2 / ev_e), np.full(len(ev_s), kappa ** 2 / ev_s)])
    unit_all = np.concatenate([unit_e.reshape(ke, -1), us[order_s - ke]]).T  # (M, K) unit columns
    still_report = {}
    for st in stills:
        ok = st.valid
        if not ok.any():
            still_report[st.name] = "no face"
            continue
        x = rigid_align(st.landmarks[np.flatnonzero(ok)[0]])[0][:NUM_MESH_POINTS]
        # MAP with priors on the raw (unit-component) coefficients: variance ev_k
        b = _map_solve(unit_all, (x - seq_mean).reshape(1, -1), 1.0 / np.concatenate([ev_e, ev_s]),
                       sigma_id2 + noise_var)[0]
        id_samples.append(x - (unit_all @ b).reshape(NUM_MESH_POINTS, 3))
        id_names.append(st.name)
        still_report[st.name] = "ok"
    id_stack = np.stack(id_samples).reshape(len(id_samples), -1)
    s_mean = id_stack.mean(0)
    # identity variation that no expression or speech component can produce
    q_all, _ = np.linalg.qr(unit_all)
    id_perp = (id_stack - s_mean) - ((id_stack - s_mean) @ q_all) @ q_all.T
    k_id = max(0, min(n_identity, len(id_samples) - 1))
    _, s_all, _ = np.linalg.svd(id_perp, full_matrices=False)
    id_left = float(((s_all[k_id:] ** 2).sum() / len(id_stack)) / id_stack.shape[1])
    if k_id:
        cid, ev_id = pca(id_perp, k_id)
        for _ in range(3):      # no rigid motion on the stable points, nothing expressions can do
            cid = remove_rigid(cid, ref_shape)
            cid = cid - (cid @ q_all) @ q_all.T
        cid /= np.linalg.norm(cid, axis=1, keepdims=True)
        ev_id = ((id_perp @ cid.T) ** 2).mean(0)
    else:
        cid, ev_id = np.zeros((0, id_stack.shape[1])), np.zeros(0)
    # identity signs: the sample with the largest |coefficient| positive
    cid_coef = id_perp @ cid.T
    for k in range(k_id):
        if cid_coef[np.argmax(np.abs(cid_coef[:, k])), k] < 0:
            cid[k] *= -1
    s_mean = s_mean.reshape(NUM_MESH_POINTS, 3)

    # -- held-out evaluation
    created = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    try:
        import mediapipe
        mp_version = mediapipe.__version__
    except Exception:  # pragma: no cover
        mp_version = "?"
    common = {
        "created": created, "method": method, "speech_method": speech_method, "command": command,
        "note": note,
        "options": {"n_exp": n_exp, "n_speech": n_speech, "n_identity": n_identity, "kappa": kappa,
                    "lam": lam, "dmin": dmin, "dmax": dmax, "iterations": iterations,
                    "min_frames": min_frames, "neutral": "estimate_neutral defaults"},
        "inputs": [_input_fact(t) for t in tracks], "stills": [_input_fact(t) for t in stills],
        "held_out": [t.source or t.name for t in held_out], "frames": n_frames,
        "frames_per_sequence": frames_used, "train_explained_variance": round(ev_train, 5),
        "software": {"mediapipe": mp_version, "numpy": np.__version__, "python": platform.python_version()},
        "canonical_frame": "engine.face template (unit crop coordinates)",
    }
    models = {
        "expression": BlendshapeModel(
            kind="expression", mean=s_mean, name=f"{name}-expression",
            components=(unit_e * signs_e[:, None, None]) * (kappa * np.sqrt(ev_e))[:, None, None],
            eigenvalues=ev_e, names=names_e, points=np.arange(NUM_MESH_POINTS), scale=kappa,
            noise_var=noise_var, provenance=dict(common, model="expression")),
        "speech": BlendshapeModel(
            kind="speech", mean=s_mean[mj], name=f"{name}-speech",
            components=(unit_s * signs_s[:, None, None]) * (kappa * np.sqrt(ev_s))[:, None, None],
            eigenvalues=ev_s, names=names_s, points=mj, scale=kappa, noise_var=noise_var,
            provenance=dict(common, model="speech", points="mouth_jaw_points(): below the nose base")),
        "identity": BlendshapeModel(
            kind="identity", mean=s_mean, name=f"{name}-identity",
            components=(cid.reshape(-1, NUM_MESH_POINTS, 3) * np.sqrt(ev_id)[:, None, None]),
            eigenvalues=ev_id, names=[f"id{k:02d}" for k in range(k_id)],
            points=np.arange(NUM_MESH_POINTS), scale=1.0, noise_var=id_left,
            provenance=dict(common, model="identity", identity_samples=id_names,
                            stills_status=still_report)),
    }
    report = {"frames": n_frames, "train_explained_variance": ev_train, "noise_var": noise_var,
              "identity_samples": len(id_samples), "identity_left_var": id_left}
    if held_out:
        fm = FaceModel(models["expression"], models["speech"], models["identity"])
        ho = {}
        for tr in held_out:
            ho[tr.name] = fm.evaluate_track(tr)
        report["held_out"] = ho
        for m in models.values():
            m.provenance["held_out_explained_variance"] = {
                k: {"projection": round(v["ev_projection"], 5), "fit_sequence": round(v["ev_fit"], 5)}
                for k, v in ho.items()}
    return models, report


def _input_fact(t: MeshTrack) -> dict:
    d = {"name": t.name, "source": t.source, "kind": t.kind, "frames": int(len(t.landmarks)),
         "frames_with_face": int(t.valid.sum())}
    if t.source and Path(t.source).is_file():
        d["bytes"] = Path(t.source).stat().st_size
        h = hashlib.sha256()
        with open(t.source, "rb") as f:
            h.update(f.read(1 << 20))
        d["sha256_first_mb"] = h.hexdigest()[:16]
    return d


# --------------------------------------------------------------------------------------- fitting
@dataclass
class FitResult:
    """One face fitted. p: (N,) in [-1, 1] ([p_exp, p_speech]); identity: (K_id,) normalised identity
    coefficients; residual: RMS distance per point between the aligned mesh and the model instance
    (canonical units; ``residual_px`` in 128-crop pixels); clipped: (N,) which p sat on a bound;
    aligned: the input mesh in the canonical frame (478, 3); transform: (s, R, t) with
    aligned = s * landmarks @ R.T + t."""
    p: np.ndarray
    identity: np.ndarray
    residual: float
    clipped: np.ndarray
    aligned: np.ndarray | None = None
    transform: tuple | None = None

    @property
    def residual_px(self) -> float:
        return self.residual * CANONICAL_TO_PX


@dataclass
class SequenceFit:
    """A sequence fitted. p: (T, N) (NaN rows where ``valid`` is False); identity: (K_id,);
    neutral: (478, 3) the sequence's neutral shape in the canonical frame; neutral_frames: the frame
    indices it came from; residual: (T,) RMS per point (canonical units), NaN where invalid."""
    p: np.ndarray
    identity: np.ndarray
    neutral: np.ndarray
    neutral_frames: np.ndarray
    residual: np.ndarray
    valid: np.ndarray
    clipped: np.ndarray
    aligned: np.ndarray | None = None

    @property
    def residual_px(self) -> np.ndarray:
        return self.residual * CANONICAL_TO_PX


def _bounded_map(a: np.ndarray, x: np.ndarray, prec: np.ndarray, sigma2: float, lo: np.ndarray,
                 hi: np.ndarray, max_iter: int = 50, h: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """min ||x - a q||^2 / sigma2 + sum prec q^2  subject to lo <= q <= hi (exact, active set).

    a (M, K), x (n, M); ``h``: ``_normal(a, prec, sigma2)`` when known. Returns q (n, K) and the (n, K)
    mask of coordinates on a bound."""
    h = _normal(a, prec, sigma2) if h is None else h
    g = np.asarray(x, np.float64) @ a / sigma2           # (n, K): minimise 1/2 q'Hq - g'q
    q = np.linalg.solve(h, g.T).T
    on = np.zeros(q.shape, bool)
    bad = np.flatnonzero(((q < lo - 1e-12) | (q > hi + 1e-12)).any(1))
    for i in bad:
        qi, act = _active_set(h, g[i], lo, hi, max_iter)
        q[i] = qi
        on[i] = act
    return q, on


def _normal(a: np.ndarray, prec: np.ndarray, sigma2: float) -> np.ndarray:
    """The (K, K) positive definite matrix of ``_bounded_map``'s problem."""
    return a.T @ a / sigma2 + np.diag(prec)


def _active_set(h, g, lo, hi, max_iter):
    k = len(g)
    fixed = np.zeros(k, bool)
    val = np.zeros(k)
    q = np.linalg.solve(h, g)
    for _ in range(max_iter):
        viol = (~fixed) & ((q < lo) | (q > hi))
        if viol.any():
            # fix the variables that left the box at their bound
            fixed |= viol
            val[viol] = np.where(q[viol] < lo[viol], lo[viol], hi[viol])
        else:
            # release bound variables whose gradient points inside
            grad = h @ q - g
            # (minimising 1/2 q'Hq - g'q: a variable at its lower bound may move up when the gradient
            # is negative there, one at its upper bound may move down when it is positive)
            release = fixed & (((val == lo) & (grad < -1e-12)) | ((val == hi) & (grad > 1e-12)))
            if not release.any():
                break
            j = np.flatnonzero(release)[np.argmax(np.abs(grad[release]))]
            fixed[j] = False
        free = ~fixed
        q = val.copy()
        if free.any():
            rhs = g[free] - h[np.ix_(free, fixed)] @ val[fixed]
            q[free] = np.linalg.solve(h[np.ix_(free, free)], rhs)
    q = np.clip(q, lo, hi)
    return q, fixed & ((q <= lo) | (q >= hi))


def _gap_rows(groups) -> np.ndarray:
    """(G, 468 * 3) rows over a flattened mesh, one per group of (upper, lower) point pairs: the mean vertical
    gap of its pairs, lower minus upper (signed: linear in the mesh, unlike a distance)."""
    rows = np.zeros((len(groups), NUM_MESH_POINTS * 3))
    for g, pairs in enumerate(groups):
        for up, lo in pairs:
            rows[g, 3 * lo + 1] += 1.0 / len(pairs)
            rows[g, 3 * up + 1] -= 1.0 / len(pairs)
    return rows


class FaceModel:
    """Expression, speech and identity models together: fit faces, instantiate parameters.

    ``id_reg`` scales the identity prior (larger: identity closer to the mean face)."""

    def __init__(self, expression: BlendshapeModel, speech: BlendshapeModel,
                 identity: BlendshapeModel | None = None, id_reg: float = 1.0):
        if expression.kind != "expression" or speech.kind != "speech":
            raise BlendshapeError(f"FaceModel needs an expression and a speech model, got "
                                  f"{expression.kind} and {speech.kind}")
        if identity is not None and identity.kind != "identity":
            raise BlendshapeError(f"the identity model is a {identity.kind} model")
        if not np.array_equal(expression.points, np.arange(NUM_MESH_POINTS)):
            raise BlendshapeError("the expression model must cover the 468 face-mesh points in order")
        if speech.points.max() >= NUM_MESH_POINTS:
            raise BlendshapeError("the speech model's points must be face-mesh points (< 468)")
        if not np.allclose(speech.mean, expression.mean[speech.points], atol=1e-5):
            raise BlendshapeError("the speech and expression models have different mean shapes "
                                  "(build them together)")
        self.expression, self.speech, self.identity = expression, speech, identity
        self.id_reg = float(id_reg)
        m = NUM_MESH_POINTS * 3
        self.mean = (identity.mean if identity is not None else expression.mean).astype(np.float64)
        ue = expression.matrix()
        us = np.zeros((m, speech.n_components))
        us[_flat_cols(speech.points)] = speech.matrix()
        self._u = np.concatenate([ue, us], axis=1)                        # (M, N)
        self._uid = identity.matrix() if identity is not None else np.zeros((m, 0))
        self._prec_p = np.concatenate([np.full(expression.n_components, expression.scale ** 2),
                                       np.full(speech.n_components, speech.scale ** 2)])
        self.sigma2 = max(float(expression.noise_var), 1e-12)
        self.sigma2_single = self.sigma2 + (float(identity.noise_var) if identity is not None else 0.0)
        # the fits' normal matrices, once (a third of a frame's fit otherwise)
        self._a_single = np.concatenate([self._uid, self._u], axis=1)
        self._prec_single = np.concatenate([np.full(self.n_identity, self.id_reg), self._prec_p])
        self._h_single = _normal(self._a_single, self._prec_single, self.sigma2_single)
        self._h_p = _normal(self._u, self._prec_p, self.sigma2)
        # the signed inner-lip gap and each eye's lid gap are linear in the mesh: their rows in x (flattened
        # (468, 3)) and in p
        from .geometry import LID_PAIRS, LIP_PAIRS
        half = len(LID_PAIRS) // 2
        rows = _gap_rows((LIP_PAIRS, LID_PAIRS[:half], LID_PAIRS[half:]))
        self._gap_row, self._lid_rows = rows[0], rows[1:]            # the lips; the right eye, the left
        self._gap_p, self._lid_p = self._gap_row @ self._u, self._lid_rows @ self._u
        self._lid_step = np.linalg.solve(self._lid_p @ self._lid_p.T, self._lid_p)   # scale_lids' least-norm step
        from .face import canonical_mesh
        tpl = canonical_mesh().astype(np.float64)
        self._iris_offset = {}
        for loop, iris in ((RIGHT_EYE_LOOP, RIGHT_IRIS), (LEFT_EYE_LOOP, LEFT_IRIS)):
            c = tpl[list(loop)].mean(0)
            w = np.linalg.norm(tpl[loop[0]] - tpl[loop[8]])
            self._iris_offset[iris] = ((tpl[list(iris)] - c) / w, loop)

    # ---- facts
    @property
    def n_exp(self) -> int:
        return self.expression.n_components

    @property
    def n_speech(self) -> int:
        return self.speech.n_components

    @property
    def n_params(self) -> int:
        return self.n_exp + self.n_speech

    @property
    def n_identity(self) -> int:
        return self._uid.shape[1]

    @property
    def param_names(self) -> list[str]:
        return list(self.expression.names) + list(self.speech.names)

    @property
    def param_labels(self) -> list[str]:
        """A readable label for every parameter (``component_labels``): what a slider is called."""
        d = np.stack([self.displacement(np.eye(self.n_params)[k]) for k in range(self.n_params)])
        return component_labels(self.param_names, d)

    def fingerprint(self) -> str:
        parts = [self.expression.fingerprint(), self.speech.fingerprint()]
        if self.identity is not None:
            parts.append(self.identity.fingerprint())
        return "-".join(parts)

    def describe(self) -> str:
        """Name + fingerprint, for dataset manifests and checkpoints."""
        return f"{self.expression.name.rsplit('-', 1)[0]} {self.fingerprint()}"

    # ---- shapes
    def _check_p(self, p) -> np.ndarray:
        p = np.asarray(p, np.float64).reshape(-1)
        if p.shape[0] != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters ({self.n_exp} expression + "
                             f"{self.n_speech} speech), got {p.shape[0]}")
        if not np.all(np.isfinite(p)):
            raise ValueError("parameters contain NaN or inf")
        return p

    def displacement(self, p) -> np.ndarray:
        """(468, 3) motion of the 40 parameters relative to the neutral."""
        return (self._u @ self._check_p(p)).reshape(NUM_MESH_POINTS, 3)

    def identity_shape(self, identity=None) -> np.ndarray:
        """(468, 3) neutral shape of identity coefficients (None: the mean face)."""
        s = self.mean.reshape(-1).copy()
        if identity is not None and self.n_identity:
            a = np.asarray(identity, np.float64).reshape(-1)
            if a.shape[0] != self.n_identity:
                raise ValueError(f"expected {self.n_identity} identity coefficients, got {a.shape[0]}")
            s += self._uid @ a
        return s.reshape(NUM_MESH_POINTS, 3)

    def lid_gaps(self, mesh: np.ndarray) -> np.ndarray:
        """(2,) the signed lid gaps (right eye, left eye) of a canonical mesh (468|478, 3): how open its eyes are."""
        return self._lid_rows @ np.asarray(mesh, np.float64)[:NUM_MESH_POINTS].reshape(-1)

    def lid_moves(self, dp) -> np.ndarray:
        """(2,) or (B, 2): how far a motion ``dp`` (N,) or (B, N) moves each eye's lid gap (negative: closing)."""
        return np.asarray(dp, np.float64) @ self._lid_p.T

    def scale_lids(self, dp, k) -> np.ndarray:
        """A motion ``dp`` (N,) or (B, N) changed as little as possible (least norm) so that each eye's lid
        gap moves ``k`` (2,) times as far; nothing else of the mesh moves differently beyond what that
        change of p brings with it."""
        dp = np.asarray(dp, np.float64)
        return self.with_lid_moves(dp, self.lid_moves(dp) * np.asarray(k, np.float64))

    def with_lid_moves(self, dp, moves) -> np.ndarray:
        """A motion ``dp`` (N,) or (B, N) changed as little as possible (least norm) so that its eyes' lid gaps
        move by ``moves`` (2,) or (B, 2) (``lid_moves``' units)."""
        dp = np.asarray(dp, np.float64)
        return dp + (np.asarray(moves, np.float64) - self.lid_moves(dp)) @ self._lid_step

    def instantiate(self, p, identity=None, neutral: np.ndarray | None = None) -> np.ndarray:
        """The (478, 3) canonical mesh for parameters p (N,), on the identity's neutral (or on a
        given ``neutral`` shape (468|478, 3), e.g. a SequenceFit's). Iris points follow their eye."""
        base = (self.identity_shape(identity) if neutral is None
                else np.asarray(neutral, np.float64)[:NUM_MESH_POINTS])
        return self.with_irises(base + self.displacement(p))

    def with_irises(self, mesh468: np.ndarray) -> np.ndarray:
        out = np.zeros((NUM_LANDMARKS, 3), np.float64)
        out[:NUM_MESH_POINTS] = mesh468
        for iris, (off, loop) in self._iris_offset.items():
            c = mesh468[list(loop)].mean(0)
            w = np.linalg.norm(mesh468[loop[0]] - mesh468[loop[8]])
            out[list(iris)] = c + off * w
        return out.astype(np.float32)

    # ---- fitting
    def _bounds(self, n_id: int):
        lo = np.concatenate([np.full(n_id, -np.inf), -np.ones(self.n_params)])
        hi = np.concatenate([np.full(n_id, np.inf), np.ones(self.n_params)])
        return lo, hi

    def fit(self, landmarks: np.ndarray, aligned: bool = False) -> FitResult:
        """Fit one face: (478, 3) frame landmarks (or canonical-frame ones with ``aligned=True``)."""
        return self.fit_many(np.asarray(landmarks)[None], aligned=aligned)[0]

    def fit_many(self, landmarks: np.ndarray, aligned: bool = False, neutral: np.ndarray | None = None
                 ) -> list[FitResult]:
        """``fit`` for each of (n, 478, 3) independent faces (stills), vectorised. With ``neutral`` (a
        person's canonical neutral shape (468|478, 3), ``estimate_neutral``): faces of that person,
        each p the fit of its difference from it, as ``fit_sequence`` does (identity not fitted again:
        no part of an opening mouth is taken for the shape of the face)."""
        lm = np.asarray(landmarks, np.float64)
        if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"expected (n, 478, 3) face-mesh landmarks, got {lm.shape}")
        al, tf = [], []
        for x in lm:
            if aligned:
                if not np.all(np.isfinite(x)):
                    raise ValueError("face-mesh landmarks contain NaN or inf")
                al.append(x)
                tf.append((1.0, np.eye(3), np.zeros(3)))
            else:
                a, t = rigid_align(x)
                al.append(a)
                tf.append(t)
        al = np.stack(al)
        if neutral is not None:
            q, on, rms = self._fit_to(al, neutral)
            return [FitResult(p=q[i].astype(np.float32), identity=np.zeros(0, np.float32), residual=float(rms[i]),
                              clipped=on[i], aligned=al[i].astype(np.float32), transform=tf[i])
                    for i in range(len(al))]
        x = (al[:, :NUM_MESH_POINTS] - self.mean).reshape(len(al), -1)
        a = self._a_single
        lo, hi = self._bounds(self.n_identity)
        q, on = _bounded_map(a, x, self._prec_single, self.sigma2_single, lo, hi, h=self._h_single)
        res = x - q @ a.T
        rms = np.sqrt((res.reshape(len(al), -1, 3) ** 2).sum(-1).mean(-1))
        return [FitResult(p=q[i, self.n_identity:].astype(np.float32), identity=q[i, :self.n_identity].astype(np.float32),
                          residual=float(rms[i]), clipped=on[i, self.n_identity:], aligned=al[i].astype(np.float32),
                          transform=tf[i]) for i in range(len(al))]

    def _fit_to(self, aligned: np.ndarray, neutral: np.ndarray):
        """p of aligned faces (n, 478|468, 3) of one person against its neutral shape: (q (n, N), on a
        bound (n, N), RMS residual per point (n,))."""
        neu = np.asarray(neutral, np.float64)[:NUM_MESH_POINTS]
        x = (np.asarray(aligned, np.float64)[:, :NUM_MESH_POINTS] - neu).reshape(len(aligned), -1)
        q, on = _bounded_map(self._u, x, self._prec_p, self.sigma2, -np.ones(self.n_params),
                             np.ones(self.n_params), h=self._h_p)
        # the residual of the model's own fit: how well the face reads against this neutral (a driver's
        # check that the same person is still there), not what the gap's step below adds
        res = x - q @ self._u.T
        # The lips' gap exactly: the prior shrinks what the fit explains of a mouth opening, and the gap is
        # what a viewer follows; the part the fit missed goes to p along the gap's gradient (mostly
        # lips_part, then smile and lips_part_2). (Tried: the step that costs the fit least, the constrained
        # MAP: it opens the gap with large opposite amounts of many components, and a render calibrated on
        # the same frames through two code paths came out 0.12 grey levels apart instead of 0.004.)
        g = self._gap_p
        q = np.clip(q + np.outer(x @ self._gap_row - q @ g, g / (g @ g)), -1.0, 1.0)
        on = np.abs(q) >= 1.0
        return q, on, np.sqrt((res.reshape(len(x), -1, 3) ** 2).sum(-1).mean(-1))

    def fit_sequence(self, landmarks: np.ndarray, aligned: bool = False, neutral: np.ndarray | None = None
                     ) -> SequenceFit:
        """Fit a sequence of one person: (T, 478, 3) landmarks, NaN rows for frames without a face.

        The sequence's neutral (``estimate_neutral``, or the given ``neutral`` (468|478, 3) canonical
        shape) carries the identity; each frame's p is the bounded MAP fit of its difference from it."""
        lm = np.asarray(landmarks, np.float64)
        if lm.ndim != 3 or lm.shape[1:] != (NUM_LANDMARKS, 3):
            raise ValueError(f"expected (T, 478, 3) face-mesh landmarks, got {lm.shape}")
        valid = np.all(np.isfinite(lm.reshape(len(lm), -1)), axis=1)
        if not valid.any():
            raise ValueError("no frame of the sequence has a face")
        al = np.full(lm.shape, np.nan)
        al[valid] = lm[valid] if aligned else align_many(lm[valid])
        vi = np.flatnonzero(valid)
        if neutral is None:
            neu, nidx = estimate_neutral(al[vi])
            nidx = vi[nidx]
        else:
            neu = np.asarray(neutral, np.float64)
            if neu.shape[0] == NUM_MESH_POINTS:
                neu = self.with_irises(neu)
            nidx = np.array([], np.int64)
        # identity coefficients: the neutral's fit with p = 0
        if self.n_identity:
            ident = _map_solve(self._uid, (neu[:NUM_MESH_POINTS] - self.mean).reshape(1, -1),
                               np.full(self.n_identity, self.id_reg), self.sigma2_single)[0]
        else:
            ident = np.zeros(0)
        q, on, r = self._fit_to(al[vi], neu)
        p = np.full((len(lm), self.n_params), np.nan, np.float32)
        p[vi] = q
        rms = np.full(len(lm), np.nan)
        rms[vi] = r
        clipped = np.zeros((len(lm), self.n_params), bool)
        clipped[vi] = on
        return SequenceFit(p=p, identity=ident.astype(np.float32), neutral=neu.astype(np.float32),
                           neutral_frames=nidx, residual=rms, valid=valid, clipped=clipped,
                           aligned=al.astype(np.float32))

    # ---- evaluation
    def evaluate_track(self, track: MeshTrack) -> dict:
        """Share of a track's motion (frames minus its neutral) that the model explains: by plain
        least-squares projection onto the 40 components and by ``fit_sequence`` (priors, bounds)."""
        sf = self.fit_sequence(track.landmarks)
        v = sf.valid
        d = (sf.aligned[v, :NUM_MESH_POINTS] - sf.neutral[:NUM_MESH_POINTS]).reshape(v.sum(), -1).astype(np.float64)
        ev_proj = explained_variance(d, self._u)
        r = d - sf.p[v].astype(np.float64) @ self._u.T
        ev_fit = float(1 - (r ** 2).sum() / max((d ** 2).sum(), 1e-30))
        return {"frames": int(v.sum()), "ev_projection": ev_proj, "ev_fit": ev_fit,
                "residual_px_median": float(np.median(sf.residual_px[v])),
                "clipped_share": float(sf.clipped[v].mean())}


# ------------------------------------------------------------------------------------ defaults
def load_face_model(directory=None, id_reg: float = 1.0) -> FaceModel:
    """The expression/speech/identity models of a folder (``expression.npz``, ``speech.npz``,
    ``identity.npz``; the identity file is optional)."""
    d = Path(directory) if directory is not None else ASSET_DIR
    if not d.is_dir():
        raise FileNotFoundError(f"blendshape model folder not found: {d}")
    exp = BlendshapeModel.load(d / DEFAULT_FILES["expression"], "expression")
    sp = BlendshapeModel.load(d / DEFAULT_FILES["speech"], "speech")
    idp = d / DEFAULT_FILES["identity"]
    ident = BlendshapeModel.load(idp, "identity") if idp.exists() else None
    return FaceModel(exp, sp, ident, id_reg=id_reg)


_default_model: FaceModel | None = None


def load_default_face_model() -> FaceModel:
    """The embedded default models (``engine/assets/blendshapes``), loaded once. The environment
    variable ``SLIDERGAN_BLENDSHAPES`` names another folder to use instead."""
    global _default_model
    if _default_model is None:
        _default_model = load_face_model(os.environ.get("SLIDERGAN_BLENDSHAPES") or None)
    return _default_model
