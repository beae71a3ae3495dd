"""The animator: one source portrait, prepared once, then any number of parameter vectors turned into
full-resolution frames.

    anim = Animator.from_checkpoint("engine/assets/default_model", backend="auto")
    info = anim.set_source("portrait.jpg")      # NoFaceError when the portrait has no usable face
    frame = anim.animate(p)                      # (512, 512, 3) uint8 RGB, p of shape (N,)

Once per source (``set_source``):
  1. detect the face mesh and align the face to the template (a crop of the model's image size);
  2. estimate the portrait's own parameters: the regression head D_p on the crop and, when a
     blendshape model is available, a fit of the model to the landmarks (``source_params`` is the fit
     when there is one, else the regression);
  3. run the generator's source encoder once (the "cached" generator keeps its source features);
  4. frame the output: a square region of the portrait around the face (or the whole portrait), resized
     to the output size; and precompute, for the part of the output the crop covers, the remap grid from
     output pixels to crop pixels, the feathered face mask, and the portrait's own fine detail there.

Per step (``animate``): generator decode on the cached features -> Eq. 4 composite on the crop ->
paste-back into the framed portrait with the precomputed grid (one ``cv2.remap`` of a 4-channel image)
-> uint8 frame. Where the generated crop equals the source crop the portrait's own detail is kept in
full (the same rule as ``engine.face.paste_back``), so the output is sharp wherever nothing moves.

Models come only through ``engine.inference`` (any backend: torch, onnxruntime, tensorrt).
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Animator", "SourceInfo", "PreparedSource", "DEFAULT_MODEL_DIR", "default_checkpoint", "NoFaceError",
           "to_model_input", "from_model_output"]

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "assets" / "default_model"
DEFAULT_OUTPUT_SIZE = 512
MAX_OUTPUT_SIZE = 4096          # a frame's long side (4K; a typo's 51200 would ask for tens of GB)
FULL_FRAMING_MAX_SIDE = 1920    # framing "full" without a size: the photo's own, shrunk to at most this
FRAMINGS = ("square", "full")
# (choice) The animator takes parameters up to this size, beyond the fit's [-1, 1]: a relative driver
# adds its motion to the portrait's own p, and a portrait whose own p is near a bound (a painted face
# fitted at jaw_open -1, an eyelid at +0.8) would lose that part of the driver's motion. The warp moves
# the mesh by all of it; a network, trained on [-1, 1], is given p clipped there. Held out, mesh p,
# 1.6 against 1: cross-identity eye corr 0.77 -> 0.81, mouth amplitude 0.53 -> 0.55 (README).
P_LIMIT = 1.6
SOURCE_MOUTHS = ("closed", "own")     # Animator.rest_params


def check_mouth(mouth: str, what: str = "source_mouth") -> str:
    """``mouth`` if it is one of SOURCE_MOUTHS, else a ValueError that names the choices."""
    if mouth not in SOURCE_MOUTHS:
        raise ValueError(f"{what} must be one of {', '.join(SOURCE_MOUTHS)}, not {mouth!r}")
    return mouth


def add_precision_argument(p) -> None:
    """The command-line choice of the models' precision (render, live, serve, evaluate)."""
    from .inference import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="int8: the quantised copies of an export folder made with 'slidergan export --int8' "
                        "(onnxruntime on a CPU: faster, not exact; the export's report gives the difference)")


def check_framing(framing: str, size) -> None:
    """A framing and an output size (None: the framing's default), said before any model loads."""
    if framing not in FRAMINGS:
        raise ValueError(f"framing must be one of {FRAMINGS}, not {framing!r}")
    if size is not None and not 16 <= int(size) <= MAX_OUTPUT_SIZE:
        raise ValueError(f"the output size must be 16 to {MAX_OUTPUT_SIZE} pixels, not {size}")


def add_framing_arguments(p) -> None:
    """``Animator``'s framing and output size on the command line (render, live)."""
    p.add_argument("--framing", choices=FRAMINGS, default="square",
                   help="'square' (default: a square around the face) or 'full' (the whole photo, its aspect "
                        "kept, the animated face pasted back into it)")
    p.add_argument("--size", type=int, default=None,
                   help="output size in pixels: the square's side (default 512), or with --framing full the "
                        "long side (default: the photo's own, at most 1920)")


def add_source_mouth_argument(p) -> None:
    """The command-line choice of ``Animator``'s ``source_mouth`` (render, live, serve, evaluate)."""
    p.add_argument("--source-mouth", choices=SOURCE_MOUTHS, default="closed",
                   help="the portrait's mouth that a relative driver starts from: 'closed' (default: a portrait "
                        "photographed with its mouth open closes it first, then opens it as the driver does; the "
                        "driver's calibrated neutral has its lips closed too) or 'own' (both as they are)")


def default_checkpoint() -> Path:
    """The embedded default model, or a clear error saying how to get one."""
    from .checkpoint import MODEL_FILE
    if (DEFAULT_MODEL_DIR / MODEL_FILE).exists() or (DEFAULT_MODEL_DIR / "export.json").exists():
        return DEFAULT_MODEL_DIR
    raise FileNotFoundError(
        f"no model given and the embedded default model is missing ({DEFAULT_MODEL_DIR}). Pass "
        "--checkpoint PATH (a checkpoint folder written by `slidergan train`, or an export folder of "
        "`slidergan export`), or train one, e.g. `slidergan train --config trainer/configs/realtime.toml` "
        "(README, 'Training').")


from .face import NoFaceError  # noqa: E402  (re-exported: callers catch it from here)


def to_model_input(crop_u8: np.ndarray) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (1, 3, S, S) float32 in [-1, 1]."""
    x = crop_u8.astype(np.float32) * (2.0 / 255.0) - 1.0
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def from_model_output(x: np.ndarray) -> np.ndarray:
    """(1, 3, S, S) or (3, S, S) in [-1, 1] -> (S, S, 3) float32 in [0, 255]."""
    x = np.asarray(x, np.float32)
    if x.ndim == 4:
        x = x[0]
    return np.clip((x.transpose(1, 2, 0) + 1.0) * 127.5, 0.0, 255.0)


@dataclass
class SourceInfo:
    """What ``set_source`` found and prepared."""
    width: int                       # the portrait's size
    height: int
    face_px: float                   # side of the crop's footprint in the portrait
    n_faces: int
    params: np.ndarray               # the portrait's own parameters (fit if available, else regressed)
    params_regressed: np.ndarray     # D_p(crop)
    params_fitted: np.ndarray | None  # blendshape fit of the landmarks, or None
    crop: np.ndarray                 # (S, S, 3) uint8 aligned crop
    base: np.ndarray                 # (H_out, W_out, 3) uint8 framed portrait (the output with no edit)
    framing: np.ndarray              # 2x3 portrait px -> output px
    matrix: np.ndarray               # 2x3 output px -> crop px
    pose: np.ndarray | None = None   # the portrait's head pose against a frontal face (engine.pose.absolute)
    closed_params: np.ndarray | None = None   # params with the mouth closed (engine.geometry.closed_mouth)
    lids: np.ndarray | None = None   # its eyes' lid gaps, canonical (FaceModel.lid_gaps): blinks scale to them
    landmarks: np.ndarray | None = None   # (478, 3) its face mesh in portrait px: another framing needs no new search
    faces: list | None = None        # every face's mesh found in the portrait (largest first), when searched
    message: str = ""
    prepare_ms: float = 0.0

    @property
    def output(self) -> list[int]:
        """[width, height] of the output frames."""
        return [int(self.base.shape[1]), int(self.base.shape[0])]

    def to_json(self) -> dict:
        return {"width": self.width, "height": self.height, "face_px": round(self.face_px, 1),
                "n_faces": self.n_faces, "params": [round(float(v), 4) for v in self.params],
                "fitted": self.params_fitted is not None, "message": self.message,
                "pose": None if self.pose is None else [round(float(v), 2) for v in self.pose],
                "output": self.output,
                "prepare_ms": round(self.prepare_ms, 1)}


@dataclass
class PreparedSource:
    info: SourceInfo
    x: np.ndarray                     # model input of the crop
    feats: object                     # engine.inference Source: the encoder's cached features
    roi: tuple[int, int, int, int]    # x0, y0, x1, y1 in the output
    map1: np.ndarray                  # remap grids (fixed point) output ROI -> crop
    map2: np.ndarray
    mask: np.ndarray                  # (h, w, 1) float32 feathered face mask in the ROI
    region: np.ndarray                # (h, w, 3) float32 base pixels in the ROI
    detail: np.ndarray                # (h, w, 3) float32 base - upsampled source crop
    crop_f: np.ndarray                # (S, S, 3) float32 source crop
    base_r: np.ndarray                # (h, w, 3) region - mask * detail
    md: np.ndarray                    # (h, w, 3) mask * detail
    mask3: np.ndarray                 # (h, w, 3) the mask on every channel
    warp: "WarpedSource | None" = None  # the geometry, when the portrait is warped (see WarpedSource)
    extra: dict = field(default_factory=dict)
    head_warp: "WarpedSource | None" = None   # the same with head motion's wider band, made on first use
    _head_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class WarpedSource:
    """Per-portrait geometry of the warp path: the fitted p, the prepared MeshWarp of the crop's mesh
    (``mesh.src``) and its flow carried to the output frame (``out``)."""
    p_src: np.ndarray                 # the fitted p of the portrait (the mesh the warp starts from)
    mesh: object                      # engine.geometry.MeshWarp
    out: object                       # engine.geometry.OutputWarp
    frame_to_crop: np.ndarray         # 2x3 portrait px -> crop px (head motion turns about the portrait's axes)
    head: object = None               # engine.pose.HeadPose of the crop's mesh (the warp with head motion's band)


def _prepare_warp(crop_landmarks: np.ndarray, frame_to_crop: np.ndarray, p_fit: np.ndarray, size: int,
                  m_out: np.ndarray, out_size, head: bool = False) -> WarpedSource:
    """The geometry of the warp path for one portrait (see WarpedSource); ``head``: with the wider
    band head motion needs."""
    from .geometry import MeshWarp, OutputWarp, compile_kernels
    from .pose import measure
    compile_kernels()          # here, not on the first frame
    mesh = MeshWarp(crop_landmarks, size, head=head)
    return WarpedSource(p_src=np.asarray(p_fit, np.float64), mesh=mesh, out=OutputWarp(mesh, m_out, out_size),
                        frame_to_crop=np.asarray(frame_to_crop, np.float64),
                        head=measure(crop_landmarks) if head else None)


def _square_framing(w: int, h: int, m_crop: np.ndarray, size: int, scale: float, out: int):
    """A square of side ``scale`` x the face footprint (at most the portrait's short side), centred on
    the face and kept inside the portrait; returns the 2x3 portrait -> output matrix and (W, H)."""
    from .face import invert_matrix, matrix_scale
    face_px = size / matrix_scale(m_crop)
    inv = invert_matrix(m_crop)
    cx, cy = inv[:, :2] @ np.array([size / 2.0, size * 0.48]) + inv[:, 2]
    side = float(min(w, h, max(face_px * scale, 16.0)))
    x0 = float(np.clip(cx - side / 2, 0, w - side))
    y0 = float(np.clip(cy - side / 2, 0, h - side))
    k = out / side
    f = np.array([[k, 0, -k * x0 + 0.5 * k - 0.5], [0, k, -k * y0 + 0.5 * k - 0.5]], np.float64)
    return f, (out, out)


def _lowpass(img: np.ndarray, sigma: float) -> np.ndarray:
    """A Gaussian blur of large sigma, computed at 1/8 resolution (same result to within a grey
    level for the slow shifts it is used for, 20x cheaper than the full-size blur)."""
    import cv2
    h, w = img.shape[:2]
    f = 8
    small = cv2.resize(img, (max(1, w // f), max(1, h // f)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), max(sigma / f, 0.5), borderType=cv2.BORDER_REFLECT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """2x3 affine a o b (apply b first)."""
    a3 = np.vstack([a, [0, 0, 1]])
    b3 = np.vstack([b, [0, 0, 1]])
    return (a3 @ b3)[:2]


class Animator:
    """One source portrait animated by parameter vectors. Thread-safe: ``animate`` may be called
    from worker threads while ``set_source`` replaces the source (the old one finishes first)."""

    def __init__(self, models, output_size: int | None = DEFAULT_OUTPUT_SIZE, framing: str = "square",
                 framing_scale: float = 1.9, mask: str = "face", blendshapes=None,
                 source_params: str = "auto", renderer: str = "model", source_mouth: str = "closed"):
        """``models``: an ``engine.inference`` model set (generator + regressor). ``framing``:
        "square" (a square around the face, ``output_size`` pixels; None: 512) or "full" (the whole
        portrait, its aspect kept, long side ``output_size``; None: the photo's own, at most 1920; both
        sides even, as video encoders need). ``blendshapes``: a blendshape model for fitting the portrait's own
        parameters (None: the default model when one exists; False: never fit).
        ``source_params``: "auto" (fit when possible), "fit" or "regress".
        ``renderer``: "model" (the generator; a geometry-guided one warps the portrait first) or
        "warp-only" (no network: the portrait warped along its mesh, with a drawn mouth interior and lids;
        the models only read parameters). ``source_mouth``: the mouth a relative driver starts from
        (``rest_params``): "closed" (a portrait photographed mid-word closes it first, as LivePortrait's
        lip normalisation does) or "own" (as photographed: an open mouth then never closes)."""
        self.source_mouth = source_mouth
        if renderer not in ("model", "warp-only"):
            raise ValueError(f"renderer must be 'model' or 'warp-only', not {renderer!r}")
        self.renderer = renderer
        check_framing(framing, output_size)
        if source_params not in ("auto", "fit", "regress"):
            raise ValueError(f"source_params must be auto, fit or regress, not {source_params!r}")
        self.models = models
        if output_size is None and framing == "square":
            output_size = DEFAULT_OUTPUT_SIZE
        self.output_size = None if output_size is None else int(output_size)
        self.framing = framing
        self.framing_scale = float(framing_scale)
        self.mask_shape = mask
        self.source_params_mode = source_params
        self._blendshapes_arg = blendshapes
        self._src: PreparedSource | None = None
        self._lock = threading.Lock()
        if (renderer == "warp-only" or getattr(models, "needs_frame", False)) and self.face_model is None:
            raise ValueError("the warp (a geometry-guided model, or renderer 'warp-only') needs the blendshape "
                             "model the model's parameters belong to, and none matches (see the log; pass "
                             "blendshapes=...)")

    # ------------------------------------------------------------------------------------ facts
    @property
    def image_size(self) -> int:
        return int(self.models.image_size)

    @property
    def n_params(self) -> int:
        return int(self.models.n_params)

    @property
    def param_names(self) -> list[str]:
        return list(self.models.param_names)

    @property
    def moves_head(self) -> bool:
        return moves_head(self.models, self.renderer)

    def require_head_motion(self) -> None:
        if not self.moves_head:
            raise ValueError("head motion needs the geometry-guided generator (or renderer 'warp-only'); this "
                             "model is an image-to-image generator: use motion 'expression'")

    @property
    def source(self) -> SourceInfo | None:
        src = self._src
        return None if src is None else src.info

    @property
    def source_params(self) -> np.ndarray:
        if self._src is None:
            raise RuntimeError("no source portrait: call set_source first")
        return self._src.info.params.copy()

    @property
    def source_mouth(self) -> str:
        return self._source_mouth

    @source_mouth.setter
    def source_mouth(self, mouth: str) -> None:
        self._source_mouth = check_mouth(mouth)

    @property
    def rest_params(self) -> np.ndarray:
        """What a relative driver adds its motion to: the portrait's own parameters, with its mouth
        closed (``source_mouth`` "closed": ``engine.geometry.closed_mouth``) or as photographed ("own")."""
        own = self.source_params          # (a clear error without a source)
        closed = self.source.closed_params
        return own if self.source_mouth == "own" or closed is None else closed.copy()

    def target_mesh(self, p) -> np.ndarray | None:
        """The face mesh (478, 3), in the source crop's pixels, that the warp moves the portrait's own to for
        parameters ``p``, before any head pose or eye turn: the motion the renderer is asked to draw. None where
        the portrait is not warped (the paper's generator)."""
        from .geometry import target_landmarks
        if self._src is None:
            raise RuntimeError("no source portrait: call set_source first")
        w = self._src.warp
        if w is None:
            return None
        return target_landmarks(self.face_model, w.mesh.src, w.p_src, np.asarray(p, np.float64).reshape(-1))

    @property
    def output_shape(self) -> tuple[int, int]:
        """(height, width) of the frames ``animate`` returns."""
        if self._src is None:
            side = self.output_size or DEFAULT_OUTPUT_SIZE
            return (side, side)
        return self._src.info.base.shape[:2]

    @classmethod
    def from_checkpoint(cls, checkpoint=None, backend: str = "auto", **kw) -> "Animator":
        """Load a model (a checkpoint folder or an exported model; None: the embedded default)."""
        return cls(load_models(checkpoint, backend), **kw)

    # ---------------------------------------------------------------------------------- source
    @property
    def face_model(self):
        """The blendshape model whose parameters the model's are (None when there is none)."""
        if self._blendshapes_arg is False:
            return None
        if not hasattr(self, "_face_model"):
            self._face_model = face_model_for(self.models, self._blendshapes_arg)
        return self._face_model

    def fit(self, landmarks: np.ndarray) -> np.ndarray:
        """The blendshape fit of face-mesh landmarks in frame coordinates: (478, 3) -> (N,) float32,
        or (B, 478, 3) -> (B, N) (a face driver's ``params="mesh"``)."""
        fm = self.face_model
        if fm is None:
            raise RuntimeError("no blendshape model for this model's parameters: cannot fit a face mesh")
        lm = np.asarray(landmarks, np.float64)
        if lm.ndim == 2:
            return np.clip(fm.fit(lm).p, -1, 1).astype(np.float32)
        return np.clip(np.stack([f.p for f in fm.fit_many(lm)]), -1, 1).astype(np.float32)

    def regress(self, crop_u8: np.ndarray) -> np.ndarray:
        """D_p of an aligned crop (S, S, 3) uint8 -> (N,) float32."""
        return np.asarray(self.models.regress(to_model_input(crop_u8)), np.float32).reshape(-1)

    def set_source(self, image, landmarks: np.ndarray | None = None, min_face_px: float = 48.0,
                   face: tuple[float, float] | None = None) -> SourceInfo:
        """Prepare a portrait (path or RGB uint8 array) and animate it from now on; ``face``: of several faces,
        the one at this (x, y) pixel (default: the largest). Raises NoFaceError (a ValueError) with a clear
        message when it holds no usable face."""
        prepared = self.prepare(image, landmarks, min_face_px, face=face)
        self.use(prepared)
        return prepared.info

    def use(self, prepared: "PreparedSource") -> None:
        """Animate an already prepared source (``prepare`` of an animator on the same models); a
        prepared source is read-only and may be shared by several animators."""
        with self._lock:
            self._src = prepared

    def prepare(self, image, landmarks: np.ndarray | None = None, min_face_px: float = 48.0,
                name: str | None = None, face: tuple[float, float] | None = None) -> "PreparedSource":
        """All per-source work for a portrait, without changing what this animator shows."""
        import cv2
        from . import pose as head_pose
        from .face import _as_rgb, align_face, detect_and_align, face_mask, invert_matrix
        t0 = time.perf_counter()
        if name is None:
            name = str(image) if isinstance(image, (str, os.PathLike)) else "the portrait"
        rgb = _as_rgb(image)
        h, w = rgb.shape[:2]
        size = self.image_size
        if landmarks is None:
            aligned = detect_and_align(rgb, size=size, min_face_px=min_face_px, face=face, name=name)
        else:
            aligned = align_face(rgb, landmarks, size)
        crop = aligned.crop
        x = to_model_input(crop)
        p_reg = np.asarray(self.models.regress(x), np.float32).reshape(-1)
        p_fit = None
        if self.source_params_mode != "regress":
            if self.face_model is not None:   # face_model_for checks it has the model's parameters
                try:
                    p_fit = self.fit(aligned.landmarks)
                except Exception as e:  # a fit failure must not lose the portrait
                    log.warning("blendshape fit of %s failed: %s", name, e)
            elif self.source_params_mode == "fit":
                raise RuntimeError("source_params='fit' but no blendshape model is available")
        params = np.clip(p_fit if p_fit is not None else p_reg, -1.0, 1.0).astype(np.float32)
        feats = self.models.source(x)      # the generator's per-source work, once

        # Output framing.
        if self.framing == "square":
            f, (ow, oh) = _square_framing(w, h, aligned.matrix, size, self.framing_scale, self.output_size)
        else:
            k = (self.output_size or min(max(w, h), FULL_FRAMING_MAX_SIDE)) / max(w, h)
            ow, oh = (max(2, n - n % 2) for n in (int(round(w * k)), int(round(h * k))))   # even: H.264
            kx, ky = ow / w, oh / h
            f = np.array([[kx, 0, 0.5 * kx - 0.5], [0, ky, 0.5 * ky - 0.5]], np.float64)
        finv = invert_matrix(f)
        src_rect = finv @ np.array([[0, 0, 1], [ow, oh, 1]], np.float64).T  # portrait region shown
        k_down = f[0, 0]
        if k_down < 1.0:
            # shrink with area averaging (no aliasing), then place exactly
            x0, y0 = max(0, int(np.floor(src_rect[0, 0]))), max(0, int(np.floor(src_rect[1, 0])))
            x1, y1 = min(w, int(np.ceil(src_rect[0, 1])) + 1), min(h, int(np.ceil(src_rect[1, 1])) + 1)
            sub = rgb[y0:y1, x0:x1]
            sw, sh = max(1, int(round((x1 - x0) * k_down))), max(1, int(round((y1 - y0) * k_down)))
            small = cv2.resize(sub, (sw, sh), interpolation=cv2.INTER_AREA)
            fx, fy = (x1 - x0) / sw, (y1 - y0) / sh
            # small px q -> portrait px p = f (q + 0.5) - 0.5 + offset
            a = np.array([[fx, 0, 0.5 * fx - 0.5 + x0], [0, fy, 0.5 * fy - 0.5 + y0]])
            base = cv2.warpAffine(small, _compose(f, a), (ow, oh), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
        else:
            base = cv2.warpAffine(rgb, f, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        m_out = _compose(aligned.matrix, finv)   # output px -> crop px

        # The output region the crop covers, and its remap grid.
        inv = invert_matrix(m_out)
        corners = np.array([[0, 0], [size, 0], [size, size], [0, size]], np.float64) - 0.5
        foot = corners @ inv[:, :2].T + inv[:, 2]
        rx0 = int(max(0, np.floor(foot[:, 0].min()) - 2))
        ry0 = int(max(0, np.floor(foot[:, 1].min()) - 2))
        rx1 = int(min(ow, np.ceil(foot[:, 0].max()) + 3))
        ry1 = int(min(oh, np.ceil(foot[:, 1].max()) + 3))
        if rx1 - rx0 < 2 or ry1 - ry0 < 2:
            raise NoFaceError(f"the face in {name} lies outside the output framing")
        xs, ys = np.meshgrid(np.arange(rx0, rx1, dtype=np.float64), np.arange(ry0, ry1, dtype=np.float64))
        mx = (m_out[0, 0] * xs + m_out[0, 1] * ys + m_out[0, 2]).astype(np.float32)
        my = (m_out[1, 0] * xs + m_out[1, 1] * ys + m_out[1, 2]).astype(np.float32)
        map1, map2 = cv2.convertMaps(mx, my, cv2.CV_16SC2)
        mk = face_mask(size, self.mask_shape)
        mask = cv2.remap(mk, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                         borderValue=0.0)
        # Only where the mask is not 0 does anything change: shrink the region to that.
        ys_nz, xs_nz = np.nonzero(mask > 1.0 / 512)
        if len(xs_nz) == 0:
            raise NoFaceError(f"the face in {name} lies outside the output framing")
        a0, a1 = int(xs_nz.min()), int(xs_nz.max()) + 1
        b0, b1 = int(ys_nz.min()), int(ys_nz.max()) + 1
        map1 = np.ascontiguousarray(map1[b0:b1, a0:a1])
        map2 = np.ascontiguousarray(map2[b0:b1, a0:a1])
        mask = np.ascontiguousarray(mask[b0:b1, a0:a1, None])
        rx0, ry0, rx1, ry1 = rx0 + a0, ry0 + b0, rx0 + a1, ry0 + b1
        region = base[ry0:ry1, rx0:rx1].astype(np.float32)
        crop_f = crop.astype(np.float32)
        up_src = cv2.remap(crop_f, map1, map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        detail = region - up_src
        # paste: out = region + mask * (up(gen) + up(keep) * detail - region)
        #            = (region - mask * detail) + mask * up(gen - crop) + (mask * detail) * up(keep)
        md = mask * detail
        warp = None
        if self.renderer == "warp-only" or getattr(self.models, "needs_frame", False):
            if p_fit is None:
                raise NoFaceError(f"the face mesh of {name} could not be fitted (the warp moves that mesh)"
                                  + ("; source_params='regress' does not fit it"
                                     if self.source_params_mode == "regress" else ""))
            warp = _prepare_warp(aligned.crop_landmarks, aligned.matrix, p_fit, size, m_out, (ow, oh))
        closed, lids = params, None
        if self.face_model is not None:
            from .blendshapes import rigid_align
            from .geometry import closed_mouth
            closed = closed_mouth(self.face_model, aligned.crop_landmarks, params)
            lids = self.face_model.lid_gaps(rigid_align(aligned.crop_landmarks)[0])
        info = SourceInfo(width=w, height=h, face_px=float(aligned.face_px), n_faces=int(aligned.n_faces),
                          params=params, params_regressed=p_reg, params_fitted=p_fit, crop=crop,
                          base=base, framing=f, matrix=m_out, message=aligned.message,
                          pose=np.nan_to_num(head_pose.absolute(head_pose.measure(aligned.landmarks))),
                          closed_params=closed,
                          lids=lids, landmarks=np.asarray(aligned.landmarks, np.float32), faces=aligned.faces,
                          prepare_ms=(time.perf_counter() - t0) * 1000)
        return PreparedSource(info=info, x=x, feats=feats, roi=(rx0, ry0, rx1, ry1), map1=map1,
                              map2=map2, mask=mask, region=region, detail=detail, crop_f=crop_f,
                              base_r=np.ascontiguousarray(region - md), md=np.ascontiguousarray(md),
                              mask3=np.ascontiguousarray(np.repeat(mask, 3, axis=2)), warp=warp)

    # ---------------------------------------------------------------------------------- per step
    def _checked(self, params, src) -> tuple[np.ndarray, PreparedSource]:
        src = src or self._src
        if src is None:
            raise RuntimeError("no source portrait: call set_source first")
        p = np.asarray(params, np.float32)
        if p.shape[-1] != self.n_params:
            raise ValueError(f"expected {self.n_params} parameters, got {p.shape[-1]}")
        return np.clip(np.nan_to_num(p.reshape(-1, self.n_params), nan=0.0), -P_LIMIT, P_LIMIT), src

    def generate_crop(self, params, src: PreparedSource | None = None) -> np.ndarray:
        """The generated crop for ``params``: (S, S, 3) float32 in [0, 255] (Eq. 4 on the crop)."""
        return self.generate_crops(params, src)[0]

    def generate_crops(self, params, src: PreparedSource | None = None, poses=None) -> list[np.ndarray]:
        """``generate_crop`` for a batch (B, N) in one model call (offline rendering)."""
        p, src = self._checked(params, src)
        poses = self._poses(poses, len(p), src)
        if src.warp is not None:
            return self._warp_layers(p, src, poses)[3]
        gen = np.asarray(self.models.generate(src.feats, np.clip(p, -1.0, 1.0)), np.float32)   # Eq. 4 on the crop
        return [from_model_output(g) for g in gen]

    def animate_batch(self, params, poses=None, mouths=None) -> list[np.ndarray]:
        """``animate`` for a batch of parameter vectors (B, N) (and head poses (B, 6), driver mouths (B,))."""
        p, src = self._checked(params, None)
        poses = self._poses(poses, len(p), src)
        if mouths is not None and len(mouths) != len(p):
            raise ValueError(f"got {len(p)} parameter vectors and {len(mouths)} driver mouths")
        if src.warp is not None:
            return self._animate_warped(p, src, poses, mouths)
        return [self.paste(g, src) for g in self.generate_crops(p, src)]

    def animate(self, params, pose=None, mouth=None) -> np.ndarray:
        """One output frame (H_out, W_out, 3) uint8 RGB for a parameter vector (N,) (in [-1, 1], or up to
        ``P_LIMIT`` from a relative driver); ``pose``: the head's pose (6,) in ``engine.pose`` units
        (degrees, inter-ocular distances, ln size), or None (expression only); ``mouth``: the driver frame's
        mouth (``engine.mouth.cut_mouth``) shown inside the opening, or None (the drawn interior). The
        geometry-guided path draws mouths; the pure image-to-image generators ignore them."""
        return self.animate_batch(params, None if pose is None else np.asarray(pose, np.float64)[None],
                                  None if mouth is None else [mouth])[0]

    def _poses(self, poses, n: int, src: PreparedSource):
        """Head poses and gazes (B, 8) (or the head's six alone), softly clamped to ``engine.pose.LIMITS``; None
        when there are none or all are zero (expression only: exactly the SliderGAN path)."""
        if poses is None:
            return None
        from .pose import N_POSE, as_pose, soft_clamp
        q = np.nan_to_num(as_pose(poses), nan=0.0).reshape(-1, N_POSE)
        if len(q) != n:
            raise ValueError(f"got {n} parameter vectors and {len(q)} head poses")
        if not np.any(q):
            return None
        self.require_head_motion()
        return soft_clamp(q)

    def _head_warp(self, src: PreparedSource) -> WarpedSource:
        """The warp with head motion's wider band, made on first use (then shared, like the source)."""
        with src._head_lock:
            if src.head_warp is None:
                w = src.warp
                src.head_warp = _prepare_warp(w.mesh.src, w.frame_to_crop, w.p_src, self.image_size,
                                              src.info.matrix, src.info.base.shape[1::-1], head=True)
            return src.head_warp

    def _warp_for(self, src: PreparedSource, poses: np.ndarray | None) -> WarpedSource:
        """The warp that carries these poses: the head's (wider band) where any head moves; the eyes alone
        turn inside the face."""
        from .pose import N_HEAD
        return self._head_warp(src) if poses is not None and np.any(poses[:, :N_HEAD]) else src.warp

    # ------------------------------------------------------------------------ the warp path
    def _warp_layers(self, p: np.ndarray, src: PreparedSource, poses: np.ndarray | None = None,
                     crops: bool = True):
        """For each p (and head pose): the target mesh (crop pixels) and its backward map, the generator's
        paint as a shading of the drawn warp ((S, S, 3) float32, added; None without the generator) and the
        crop-level result (None for the warp-only renderer unless ``crops``: the output frame draws its own).
        The generator paints an opening (mouth, eyes) only as far as the target changes it from the
        source's (``engine.geometry.attention_gate``), and in the colours of the warp under its paint
        (``engine.geometry.keep_colour``): so its paint, I_gen - drawn warp, is a change of brightness
        that the output frame adds to its own drawn warp, upsampled."""
        from .geometry import HeadMove, attention_gate, cavity, keep_colour, target_landmarks, turn_eyes
        from .pose import N_HEAD
        w = self._warp_for(src, poses)
        head = w is not src.warp
        crop = src.info.crop
        model = self.renderer == "model"
        dsts, maps, layers, gen = [], [], [None] * len(p), [None] * len(p)
        for i, q in enumerate(p):
            dst = target_landmarks(self.face_model, w.mesh.src, w.p_src, q)
            move = None
            if head:
                move = HeadMove(poses[i], w.head.centre, w.head.iod, w.frame_to_crop)
                dst = move(dst)
            maps.append(w.mesh.backward_map(dst, move))
            if poses is not None and np.any(poses[i, N_HEAD:]):
                dst = turn_eyes(maps[i], w.mesh.margin, w.mesh.src, dst, poses[i, N_HEAD:])
            dsts.append(dst)
            if model or crops:
                gen[i], layers[i] = w.mesh.drawn_warp(crop, dst, maps[i])
        shades = [None] * len(p)
        if model:
            frames = np.stack([w.mesh.generator_frame(crop, dst, bm, drawn)
                               for dst, bm, drawn in zip(dsts, maps, gen)])
            out = self.models.generate(src.feats, np.clip(p, -1.0, 1.0), frame=frames)
            for i, o in enumerate(np.asarray(out, np.float32)):
                # I_gen composites A*C over the drawn warp; its brightness kept, in the warp's colours, and in the
                # drawn mouth below the teeth shading only
                below_teeth = None if layers[i] is None else cavity(layers[i][1], dsts[i])
                g = keep_colour(from_model_output(o), gen[i], below_teeth)
                g -= gen[i]
                gate = attention_gate(w.mesh.src, dsts[i], frames[i, 3])
                if gate is not None:   # openings painted only where they change
                    g *= gate
                shades[i] = g
                gen[i] = gen[i] + g
        return dsts, maps, shades, gen

    def _animate_warped(self, p: np.ndarray, src: PreparedSource, poses: np.ndarray | None = None,
                        mouths=None) -> list[np.ndarray]:
        """Full resolution: the portrait's own pixels warped by the crop-level flow carried to the
        output frame, the mouth interior and lids drawn over it at the output's pixels, and the generator's
        paint (a shading at crop resolution) upsampled and added (Eq. 4 at the output's resolution); then
        the driver's own mouth interior, where given, inside the opening."""
        dsts, maps, shades, _ = self._warp_layers(p, src, poses, crops=False)
        w = self._warp_for(src, poses).out
        base, crop = src.info.base, src.info.crop
        x0, y0, x1, y1 = w.roi
        frames = []
        for i, (dst, bm, shade) in enumerate(zip(dsts, maps, shades)):
            region = w.warp(base, bm)
            w.draw(region, crop, dst)
            if shade is not None:
                w.add(region, shade)
            if mouths is not None and mouths[i] is not None:
                w.paste_mouth(region, crop, dst, mouths[i])
            out = base.copy()
            out[y0:y1, x0:x1] = region
            frames.append(out)
        return frames

    def paste(self, gen: np.ndarray, src: PreparedSource | None = None) -> np.ndarray:
        """Paste a generated crop (S, S, 3) float32 0-255 into the framed portrait."""
        import cv2
        src = src or self._src
        size = gen.shape[0]
        # Same rule as engine.face.paste_back: where the crop's structure is unchanged (slow colour
        # shifts removed) the portrait's own detail is kept; where it changes, the crop's content.
        delta = gen - src.crop_f
        change = delta - _lowpass(delta, size / 10.0)
        a = np.abs(change)
        diff = cv2.GaussianBlur(np.maximum(np.maximum(a[..., 0], a[..., 1]), a[..., 2]), (0, 0),
                                max(size / 128.0, 0.5))
        keep = np.clip((24.0 - diff) * (1.0 / 16.0), 0.0, 1.0)
        up = cv2.remap(delta, src.map1, src.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        k = cv2.remap(keep, src.map1, src.map2, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        blended = cv2.add(cv2.multiply(up, src.mask3), src.base_r)
        blended = cv2.add(blended, cv2.multiply(src.md, cv2.merge([k, k, k])))
        out = src.info.base.copy()
        x0, y0, x1, y1 = src.roi
        blended += 0.5
        np.clip(blended, 0.0, 255.0, out=blended)
        out[y0:y1, x0:x1] = blended.astype(np.uint8)
        return out


def moves_head(models, renderer: str = "model") -> bool:
    """Whether head poses apply: the geometry-guided path (the portrait's own mesh is warped)."""
    return renderer == "warp-only" or bool(getattr(models, "needs_frame", False))


# --------------------------------------------------------------------------------- model loading
def load_models(checkpoint=None, backend: str = "auto", threads: int | None = None, precision: str = "fp32"):
    """The generator + regressor model set of ``engine.inference`` for a checkpoint or export
    (None: the embedded default model). ``threads``: intra-op threads per model call (None: the
    backend's default, all physical cores; 1 suits pipelines that run stages side by side).
    ``precision``: "int8" runs the quantised copies of an export made with ``--int8``."""
    path = Path(checkpoint) if checkpoint is not None else default_checkpoint()
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    from . import inference
    return inference.load_models(path, backend=backend, threads=threads, precision=precision)


def face_model_for(models, blendshapes=None):
    """The blendshape FaceModel whose parameters the model's parameters are, or None.

    ``blendshapes``: a folder of blendshape models, a FaceModel, or None (the embedded default). A
    model whose checkpoint names another blendshape model gets None (its parameters mean other
    motions), with a log line; a checkpoint that names none (e.g. a test model) accepts any with
    the same parameter count."""
    try:
        from . import blendshapes as bs
    except ImportError:
        return None
    try:
        if blendshapes is None:
            fm = bs.load_default_face_model()
        elif isinstance(blendshapes, (str, os.PathLike)):
            fm = bs.load_face_model(blendshapes)
        else:
            fm = blendshapes
    except (FileNotFoundError, ValueError, OSError) as e:
        log.info("no blendshape model: %s", e)
        return None
    if fm.n_params != int(models.n_params) or fm.n_exp != int(getattr(models, "n_exp", fm.n_exp)):
        log.info("blendshape model has %d+%d parameters, the generator %d: not used", fm.n_exp,
                 fm.n_speech, models.n_params)
        return None
    want = str(getattr(models, "blendshapes", "") or "")
    if want and want != fm.describe() and fm.fingerprint() not in want:
        log.warning("the model was trained with blendshape model %r, not %r: its parameters mean other "
                    "motions, so the portrait is not fitted and presets are not made", want, fm.describe())
        return None
    return fm
