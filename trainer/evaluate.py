"""``slidergan evaluate CHECKPOINT --data DIR -o REPORT_DIR``: the paper's measurements on our data.

Writes ``REPORT_DIR/README.md`` (Markdown tables, JPEG figures beside it) and ``metrics.json``:

- Same-video transfer (the paper's Table 3 protocol). A held-out video (default ``d19``, which no
  model is trained on) is aligned frame by frame. Source = one of its frames (by default the
  calmest sampled frame, the one with the smallest fitted ``||p||``); targets = the parameters of
  its other frames, both fitted (``p_fit``, the blendshape fit of the frame's face
  mesh) and regressed (``p_D``, the discriminator's head on the real frame). Each result
  ``G(I_src, p_t)`` is compared with the aligned real frame ``t`` by IED (``trainer/ied.py``:
  images in [0, 1], RGB dot product, divided by the pixel count, sigma = 1 px at 128 x 128 scaled
  with the crop size) and by the mean face-mesh landmark error (MediaPipe mesh detected on the
  result and on the real crop, mean distance over the 478 points, in crop pixels at 128 x 128
  scale). Baselines in the same table: the unchanged source frame, and the landmark warp of the
  source to the target parameters (the synthetic-pair warper). With ``--compare CK2`` a second
  checkpoint (e.g. SliderGAN-WGP beside -RaD) is measured on the same frames.
- Regression accuracy (Table 4): mean ``||p_fit - p_D|| / ||p_fit||`` over held-out frames, and
  mean ``||p_trg - p_D(G(I, p_trg))|| / ||p_trg||`` over generated images (held-out frames and
  portraits as sources, targets = other frames' fitted parameters).
- Identity: cosine similarity of dlib's face-recognition network (``engine/identity.py``) between
  source and result, for transfer and for slider sweeps at the ends of the range (+-1); the
  reference is the same network on real data: frames of one video (same person) and faces from
  different videos and portraits (different people).
- Figures: slider sweeps (-1..1 by 0.2) of the strongest components on several portraits with the
  3D preview above them (Fig. 1/6), interpolation between two expressions (Fig. 8),
  neutralisation p = 0 (Fig. 12), speech driven by a talking video's parameter track (Fig. 13).
- With ``--motion`` (or ``--motion-only``; off by default: a few minutes of CPU): motion following
  (mouth- and eye-opening correlation and amplitude ratio, driver vs result, the held-out clips
  driving their own first frame and the held-out portraits) and self-reenactment (IED, landmark
  error, identity against the real frames), rows copy / warp-only / each checkpoint; see
  ``trainer/motion.py``. JSON keys ``motion`` and ``self_reenactment``; a driver | result strip
  ``motion_<row>.jpg`` per row.

The models are used only through ``engine.inference`` (generator and regressor, any backend); faces
only through ``engine.face``; parameters only through ``engine.blendshapes`` (fitting, 3D preview)
and the warper of ``trainer.synth_pairs``.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .ied import ied

HELD_OUT_DEFAULT = "d19"
SWEEP_STEPS = np.round(np.arange(-1.0, 1.0001, 0.2), 1)


# ================================================================================ adapters (seams)

@dataclass
class Models:
    """One checkpoint's generator and regressor, as the evaluation uses them."""
    label: str
    path: str
    image_size: int
    param_names: list[str]
    n_exp: int
    n_speech: int
    runner: object  # engine.inference models
    blendshapes: str = ""
    info: dict = field(default_factory=dict)
    _meshes: dict = field(default_factory=dict, repr=False)   # crop -> its mesh, fit and MeshWarp (warp models)

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def generate(self, images: torch.Tensor, params: torch.Tensor, batch: int = 16, source=None) -> torch.Tensor:
        """(B, 3, S, S) in [-1, 1] and (B, N) -> (B, 3, S, S) in [-1, 1]; one image with B
        parameter vectors is that image under each of them. A geometry-guided model warps each
        image along its own face mesh to the parameters first: ``source`` = (crop landmarks, p) of a
        single image when known (its p from the same fit as the targets'), else found on the crop
        and fitted alone."""
        outs = []
        for i in range(0, len(params), batch):
            img = images if len(images) == 1 else images[i:i + batch]
            p = params[i:i + batch]
            kw = {"frame": self._frames(img, p, source)} if getattr(self.runner, "needs_frame", False) else {}
            out = self.runner.generate(img, p, **kw)
            outs.append(torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).float())
        return torch.cat(outs) if outs else images[:0]

    def _frames(self, images: torch.Tensor, params: torch.Tensor, source=None) -> np.ndarray:
        """The warp generator's frames (engine.geometry) for crops and target parameters: each crop's
        mesh is found (MediaPipe on the crop at twice its size) and fitted once, and cached; a crop
        without a face is not warped (its frame is itself)."""
        import cv2

        from engine.blendshapes import load_default_face_model
        from engine.face import FaceMeshDetector
        from engine.geometry import MeshWarp, target_landmarks
        cache = self._meshes
        fm = cache.setdefault("face model", load_default_face_model())
        crops = to_uint8(images)
        P = params.detach().cpu().numpy().astype(np.float64)
        frames = []
        for k in range(len(P)):
            crop = crops[0 if len(crops) == 1 else k]
            key = hash(crop.tobytes())
            if source is not None and len(crops) == 1:
                lm, p_src = np.asarray(source[0], np.float64), np.asarray(source[1], np.float64)
                key = (key, p_src.tobytes())
                if key not in cache:
                    cache[key] = (lm, p_src, MeshWarp(lm, crop.shape[0]))
            if key not in cache:
                with FaceMeshDetector(static=True, max_faces=1) as det:
                    s = crop.shape[0]
                    found = det.detect(cv2.resize(crop, (2 * s, 2 * s), interpolation=cv2.INTER_CUBIC))
                lm = found[0] / 2.0 if found else None
                cache[key] = None if lm is None else (lm, fm.fit(lm).p, MeshWarp(lm, crop.shape[0]))
            mesh = cache[key]
            if mesh is None:
                x = to_tensor(crop[None])[0].numpy()
                frames.append(np.concatenate([x, np.zeros((3,) + x.shape[1:], np.float32)]))
            else:
                lm, p_src, mw = mesh
                frames.append(mw.generator_frame(crop, target_landmarks(fm, lm, p_src, P[k])))
        return np.stack(frames).astype(np.float32)

    def regress(self, images: torch.Tensor, batch: int = 32) -> torch.Tensor:
        outs = []
        for i in range(0, len(images), batch):
            out = self.runner.regress(images[i:i + batch])
            outs.append(torch.as_tensor(np.asarray(out) if not torch.is_tensor(out) else out).float())
        return torch.cat(outs) if outs else images.new_zeros(0, self.n_params)


def load_models(path, backend: str = "auto", device: str = "cpu", label: str | None = None,
                precision: str = "fp32") -> Models:
    """A checkpoint (or exported model) through engine.inference (``precision`` "int8": an export's
    quantised copies)."""
    from engine import inference
    runner = inference.load_models(path, backend=backend, device=device, precision=precision)
    return _wrap_runner(runner, path, label)


def _wrap_runner(runner, path, label=None) -> Models:
    names = list(getattr(runner, "param_names"))
    n_exp = int(getattr(runner, "n_exp", 0) or sum(not n.startswith("speech") for n in names))
    meta = dict(getattr(runner, "meta", {}) or {})
    return Models(label=label or _label(path, meta), path=str(path),
                  image_size=int(getattr(runner, "image_size")), param_names=names, n_exp=n_exp,
                  n_speech=len(names) - n_exp, runner=runner,
                  blendshapes=str(getattr(runner, "blendshapes", "") or ""),
                  info={"backend": str(getattr(runner, "backend", "")),
                        "profile": str(getattr(runner, "profile", "") or ""),
                        "step": getattr(runner, "step", None), "meta": meta})


def _label(path, meta: dict) -> str:
    for key in ("gan", "adv", "adversarial", "loss"):
        v = meta.get(key) if isinstance(meta, dict) else None
        if isinstance(v, str) and v:
            nice = {"rad": "RaD", "wgp": "WGP", "wgan-gp": "WGP"}.get(v.lower())
            return f"SliderGAN-{nice}" if nice else v
    return Path(str(path).rstrip("/")).name


class FaceModel:
    """The 3D side (engine.blendshapes): fitting face meshes, the 3D preview, the landmark warper."""

    def __init__(self, models: Models, blendshapes_path=None):
        from engine import blendshapes as bs
        self.model = (bs.load_face_model(blendshapes_path) if blendshapes_path
                      else bs.load_default_face_model())
        if self.model.n_exp != models.n_exp or self.model.n_speech != models.n_speech:
            raise ValueError(f"the blendshape model has {self.model.n_exp} + {self.model.n_speech} "
                             f"parameters, {models.label} {models.n_exp} + {models.n_speech}")
        self.n_exp, self.n_speech = self.model.n_exp, self.model.n_speech
        self.describe = self.model.describe()
        self.matches_checkpoint = (not models.blendshapes) or models.blendshapes == self.describe \
            or self.model.fingerprint() in models.blendshapes
        self.last_fit = None

    def fit_sequence(self, crop_landmarks: list[np.ndarray]) -> np.ndarray:
        """(T, N) parameters of one person's frames (the sequence fit: its own neutral)."""
        self.last_fit = self.model.fit_sequence(np.stack(crop_landmarks).astype(np.float64))
        return np.nan_to_num(self.last_fit.p).astype(np.float32)

    def fit_alone(self, crop_landmarks: list[np.ndarray]) -> np.ndarray:
        """(T, N) parameters of each frame fitted alone, as a single photo is (no neutral of the person: the
        shape of their face that expressions can make is read as expression)."""
        fits = self.model.fit_many(np.stack(crop_landmarks).astype(np.float64))
        return np.stack([np.nan_to_num(f.p) for f in fits]).astype(np.float32)

    def preview(self, p: np.ndarray, size: int = 96) -> np.ndarray:
        from engine.preview import render_params
        return render_params(self.model, np.asarray(p, np.float32), size=size)

    def warp(self, crop: np.ndarray, crop_landmarks: np.ndarray, p_src: np.ndarray,
             p_trg: np.ndarray) -> np.ndarray:
        """The source crop warped along the mesh triangles from its own mesh to the mesh with the
        target parameters (the synthetic-pair warper), in crop coordinates."""
        from trainer import synth_pairs
        return synth_pairs.warp_to_params(self.model, crop, crop_landmarks, p_src, p_trg)

    def strongest(self, k: int) -> list[int]:
        """Indices (into p) of k components with the largest motion (eigenvalue): the k - 1
        strongest expression components and the strongest speech component."""
        e_exp = np.asarray(self.model.expression.eigenvalues, np.float64)
        e_sp = np.asarray(self.model.speech.eigenvalues, np.float64)
        n_sp = 1 if (k > 1 and self.n_speech) else 0
        exp = [int(i) for i in np.argsort(-e_exp)[: k - n_sp]]
        return exp + ([self.n_exp + int(np.argmax(e_sp))] if n_sp else [])


# ============================================================================ data on real faces

@dataclass
class Faces:
    """Aligned real faces: crops (T, S, S, 3) uint8, crop landmarks (T, 478, 3), where from."""
    crops: np.ndarray
    landmarks: np.ndarray
    names: list[str]
    times: list[float]


def _detect_align(rgb: np.ndarray, size: int):
    from engine import face
    faces = face.detect_landmarks(rgb)
    if not faces:
        return None
    a = face.align_face(rgb, faces[0], size)
    return a.crop, a.crop_landmarks


def video_faces(path, size: int, max_frames: int, start_frame: int = 0) -> Faces:
    """Up to ``max_frames`` evenly spaced frames of a video, aligned (frames without a face skipped)."""
    from engine.video import read_frames, video_info
    info = video_info(path)
    n = max(1, info.frame_count)
    want = set(np.unique(np.linspace(start_frame, n - 1, max(1, min(max_frames, n))).astype(int)).tolist())
    last = max(want)
    crops, lms, names, times = [], [], [], []
    for i, (rgb, t) in enumerate(read_frames(path)):
        if i > last:
            break
        if i not in want:
            continue
        r = _detect_align(rgb, size)
        if r is not None:
            crops.append(r[0])
            lms.append(r[1])
            names.append(f"{Path(path).stem}#{i}")
            times.append(t)
    if not crops:
        raise ValueError(f"no face found in any sampled frame of {path}")
    return Faces(np.stack(crops), np.stack(lms), names, times)


def image_faces(paths, size: int) -> Faces:
    from engine import face
    crops, lms, names = [], [], []
    for p in paths:
        try:
            rgb = face.load_image(p)
        except (OSError, ValueError):
            continue
        r = _detect_align(rgb, size)
        if r is not None:
            crops.append(r[0])
            lms.append(r[1])
            names.append(Path(p).stem)
    if not crops:
        return Faces(np.zeros((0, size, size, 3), np.uint8), np.zeros((0, 478, 3), np.float32), [], [])
    return Faces(np.stack(crops), np.stack(lms), names, [0.0] * len(crops))


def to_tensor(crops: np.ndarray) -> torch.Tensor:
    """(B, S, S, 3) uint8 -> (B, 3, S, S) float in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) in [-1, 1] -> (B, S, S, 3) uint8."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().byte()
    return x.permute(0, 2, 3, 1).cpu().numpy()


def resize_crops(crops: np.ndarray, size: int) -> np.ndarray:
    import cv2
    if crops.shape[1] == size:
        return crops
    interp = cv2.INTER_AREA if crops.shape[1] > size else cv2.INTER_CUBIC
    return np.stack([cv2.resize(c, (size, size), interpolation=interp) for c in crops])


# =================================================================================== measurements

class MeshOnCrops:
    """Face mesh on crops (results and real frames): (478, 2) in crop pixels, or None."""

    def __init__(self):
        from engine import face
        self._det = face.FaceMeshDetector(static=True, max_faces=1)

    def __call__(self, crop: np.ndarray) -> np.ndarray | None:
        import cv2
        found = self._det.detect(crop)
        if found:
            return np.asarray(found[0])[:, :2]
        # A face filling the whole crop can escape the detector: retry on a padded canvas.
        s = crop.shape[0]
        big = cv2.copyMakeBorder(cv2.resize(crop, (2 * s, 2 * s), interpolation=cv2.INTER_CUBIC),
                                 s // 2, s // 2, s // 2, s // 2, cv2.BORDER_REPLICATE)
        found = self._det.detect(big)
        if found:
            return (np.asarray(found[0])[:, :2] - s // 2) / 2
        return None

    def close(self):
        self._det.close()


def landmark_errors(mesh: MeshOnCrops, results: np.ndarray, reference_lms: list, scale: float):
    """Mean distance (crop px * scale) between the mesh on each result and the reference mesh."""
    errs = []
    for img, ref in zip(results, reference_lms):
        lm = mesh(img)
        if lm is None or ref is None:
            errs.append(float("nan"))
        else:
            errs.append(float(np.linalg.norm(lm - ref, axis=1).mean() * scale))
    return np.array(errs)


def summary(values) -> dict:
    v = np.asarray(values, np.float64)
    ok = v[np.isfinite(v)]
    if ok.size == 0:
        return {"mean": None, "median": None, "std": None, "n": 0, "failed": int(v.size)}
    return {"mean": float(ok.mean()), "median": float(np.median(ok)), "std": float(ok.std()),
            "n": int(ok.size), "failed": int(v.size - ok.size)}


MIN_PARAM_NORM = 0.1  # relative errors of near-neutral parameter vectors are not meaningful


def relative_error(p_ref: np.ndarray, p_est: np.ndarray, min_norm: float = 1e-6) -> np.ndarray:
    """Per row ``||p_ref - p_est|| / ||p_ref||`` (rows with ||p_ref|| < min_norm: NaN)."""
    num = np.linalg.norm(p_ref - p_est, axis=1)
    den = np.linalg.norm(p_ref, axis=1)
    out = np.full(len(p_ref), np.nan)
    ok = den >= min_norm
    out[ok] = num[ok] / den[ok]
    return out


def strongest_correlation(p_ref: np.ndarray, p_est: np.ndarray, k: int = 10) -> float:
    """The regression head's per-component figure: the mean correlation of ``p_est`` with ``p_ref`` over the
    ``k`` components that vary most in ``p_ref`` (``trainer.regressor.head_metrics``')."""
    from trainer.regressor import head_metrics
    return head_metrics(p_ref, p_est, k)["corr_strongest_mean"]


def regression_summary(p_ref: np.ndarray, p_est: np.ndarray, min_norm: float = MIN_PARAM_NORM) -> dict:
    """Table 4's figure: the mean of ``||p_ref - p_est|| / ||p_ref||`` over rows with ||p_ref|| >=
    min_norm (near-neutral rows excluded: their ratio explodes), plus the pooled ratio
    ``sum ||p_ref - p_est|| / sum ||p_ref||`` over all rows."""
    r = relative_error(p_ref, p_est, min_norm)
    s = summary(r)
    s["excluded_near_neutral"] = s.pop("failed")
    s["min_norm"] = min_norm
    den = float(np.linalg.norm(p_ref, axis=1).sum())
    s["pooled"] = float(np.linalg.norm(p_ref - p_est, axis=1).sum() / den) if den > 0 else None
    return s


class Identity:
    """dlib's face-recognition network on crops of one size: cosine similarity and dlib distance."""

    def __init__(self, crop_size: int, device: str = "cpu"):
        from engine.identity import load_dlib_embedder
        self.emb = load_dlib_embedder(crop_size=crop_size, device=device)
        self.device = device

    @torch.no_grad()
    def raw(self, crops_uint8: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(crops_uint8), 32):
            out.append(self.emb.raw(to_tensor(crops_uint8[i:i + 32]).to(self.device)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 128), np.float32)

    @staticmethod
    def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a = a / np.linalg.norm(a, axis=-1, keepdims=True)
        b = b / np.linalg.norm(b, axis=-1, keepdims=True)
        return (a * b).sum(-1)


def identity_reference(idn: Identity, groups: dict[str, np.ndarray]) -> dict:
    """Same-person (within a group) vs different-person (across groups) similarity on real faces."""
    embs, labels = [], []
    for name, crops in groups.items():
        if len(crops):
            embs.append(idn.raw(crops))
            labels += [name] * len(crops)
    if not embs:
        return {}
    e = np.concatenate(embs)
    labels = np.array(labels)
    n = len(e)
    iu = np.triu_indices(n, 1)
    en = e / np.linalg.norm(e, axis=1, keepdims=True)
    cos = (en @ en.T)[iu]
    dist = np.linalg.norm(e[:, None] - e[None], axis=-1)[iu]
    same = (labels[:, None] == labels[None])[iu]
    out = {"groups": {k: int((labels == k).sum()) for k in groups if (labels == k).any()},
           "same_person_cos": summary(cos[same]), "different_people_cos": summary(cos[~same]),
           "same_person_dlib_distance": summary(dist[same]),
           "different_people_dlib_distance": summary(dist[~same])}
    if same.any() and (~same).any():
        s, d = cos[same], cos[~same]
        out["auc_cos"] = float((s[:, None] > d[None]).mean() + 0.5 * (s[:, None] == d[None]).mean())
        out["same_below_0.6"] = float((dist[same] < 0.6).mean())
        out["different_above_0.6"] = float((dist[~same] > 0.6).mean())
    return out


# ========================================================================================= figures

def _label_img(img: np.ndarray, text: str, height: int = 16) -> np.ndarray:
    import cv2
    bar = np.full((height, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text[: max(1, img.shape[1] // 6)], (2, height - 4), cv2.FONT_HERSHEY_SIMPLEX,
                0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, img], 0)


def grid(rows: list[list[np.ndarray]], row_labels: list[str] | None = None,
         col_labels: list[str] | None = None, cell: int | None = None) -> np.ndarray:
    """Tile images (any sizes, resized to ``cell``: default the largest, at least 96) into a
    labelled grid."""
    import textwrap

    import cv2
    if cell is None:
        cell = max([96] + [im.shape[0] for r in rows for im in r if im is not None])

    def fit(im):
        if im is None:
            return np.full((cell, cell, 3), 255, np.uint8)
        if im.ndim == 2:
            im = np.repeat(im[..., None], 3, axis=2)
        return cv2.resize(im, (cell, cell), interpolation=cv2.INTER_AREA if im.shape[0] > cell
                          else cv2.INTER_CUBIC)
    ncol = max(len(r) for r in rows)
    lw = 110 if row_labels else 0
    out_rows = []
    if col_labels:
        head = np.full((16, lw + ncol * cell, 3), 255, np.uint8)
        for j, t in enumerate(col_labels):
            cv2.putText(head, str(t), (lw + j * cell + 4, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0),
                        1, cv2.LINE_AA)
        out_rows.append(head)
    for i, r in enumerate(rows):
        tiles = [fit(im) for im in r] + [fit(None)] * (ncol - len(r))
        line = np.concatenate(tiles, 1)
        if lw:
            lab = np.full((cell, lw, 3), 255, np.uint8)
            lines = [w for part in str(row_labels[i]).split("\n") for w in textwrap.wrap(part, 18) or [""]]
            for k, part in enumerate(lines[:max(1, cell // 16 - 1)]):
                cv2.putText(lab, part, (3, 16 + 16 * k), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1,
                            cv2.LINE_AA)
            line = np.concatenate([lab, line], 1)
        out_rows.append(line)
    return np.concatenate(out_rows, 0)


FIGURE_QUALITY = 90    # JPEG: a report's photographic strips at a fifth of their PNG size (reports travel with the repo)


def save_figure(path: Path, img: np.ndarray) -> str:
    """An RGB figure as ``path`` with the suffix .jpg (quality FIGURE_QUALITY); returns the file's name."""
    import cv2
    path = Path(path).with_suffix(".jpg")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, FIGURE_QUALITY]):
        raise OSError(f"cannot write {path}")
    return path.name


# ======================================================================================= protocol

@dataclass
class EvalOptions:
    data: Path
    out: Path
    held_out: str = HELD_OUT_DEFAULT
    frames: int = 40
    source_frame: int | str = "neutral"  # an index among the sampled frames, or the calmest
    portraits: list[str] = field(default_factory=list)
    n_portraits: int = 3
    components: int = 4
    speech_video: str | None = None
    identity_frames: int = 6
    device: str = "cpu"
    seed: int = 0
    # motion metrics (trainer/motion.py): off by default (minutes of CPU on the held-out clips)
    motion: bool = False
    motion_only: bool = False            # only the motion and self-reenactment tables
    motion_frames: int | None = 60       # sampled frames per driver clip (None: all)
    motion_every: int = 3                # every K-th driver frame
    motion_size: int = 256               # Animator output size the frames are measured at
    head_motion: bool = True             # the driver's head pose moves the portrait's head (render's default)
    source_mouth: str = "closed"         # the relative mode's starting mouth (engine.animator.Animator)
    expression_scale: float = 1.0        # the driver's motion times this (render --expression-scale)
    mouth_interior: str = "driver"       # the driver's mouth inside the portrait's (render --mouth-interior)
    motion_clips: list | None = None     # driver clips (paths under data, globs); None: the held-out ones
    motion_portraits: list | None = None  # cross-identity sources; None: the held-out portraits


def _other_videos(data: Path, held_out: str) -> list[Path]:
    return sorted(p for p in (data / "driving").glob("*.mp4") if p.stem != held_out)


def _portrait_paths(opts: EvalOptions) -> list[Path]:
    pdir = opts.data / "portraits"
    if opts.portraits:
        return [pdir / (n if Path(n).suffix else f"{n}.jpg") for n in opts.portraits]
    # the held-out portraits (trainer.holdout): the others are training identities
    from .holdout import HELD_OUT_PORTRAITS, held_out_files
    return held_out_files(opts.data, HELD_OUT_PORTRAITS)


def evaluate(models_list: list[Models], face_model_for, opts: EvalOptions, log=print) -> dict:
    """Run every measurement for each checkpoint in ``models_list`` (first = main) and write the
    report. ``face_model_for(models) -> FaceModel``. Returns the metrics dict (also in the JSON)."""
    t_start = time.time()
    _log = log

    def log(msg):  # noqa: F811 - the caller's log, with the elapsed time
        _log(f"{msg} ({time.time() - t_start:.0f} s)")
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    main = models_list[0]
    size = main.image_size
    for m in models_list[1:]:
        if m.image_size != size or m.n_params != main.n_params:
            raise ValueError(f"--compare: {m.label} has image size {m.image_size} and {m.n_params} "
                             f"parameters, {main.label} {size} and {main.n_params}")
    fm = face_model_for(main)
    if opts.motion_only:
        metrics = {"checkpoints": [{"label": m.label, "path": m.path, "image_size": m.image_size,
                                    "n_params": m.n_params, **m.info} for m in models_list]}
        metrics.update(motion_metrics(models_list, fm, opts, log))
        metrics["seconds"] = round(time.time() - t_start, 1)
        write_report(out, metrics, log)
        return metrics
    rng = np.random.default_rng(opts.seed)
    px_scale = 128.0 / size  # landmark errors reported at 128 x 128
    sigma = size / 128.0
    metrics: dict = {
        "checkpoints": [{"label": m.label, "path": m.path, "image_size": m.image_size,
                         "n_params": m.n_params, **m.info} for m in models_list],
        "protocol": {
            "held_out_video": opts.held_out, "frames": opts.frames, "source_frame": opts.source_frame,
            "ied": f"trainer/ied.py: images in [0,1], RGB dot product, sum over pixel pairs divided by "
                   f"H*W, Gaussian sigma {sigma:g} px at {size}x{size} (1 px at 128), kernel cut at 4 sigma",
            "landmark_error": "mean distance over the 478 face-mesh points, mesh detected on the result "
                              "and on the aligned real frame, in pixels of a 128 x 128 crop",
            "identity": "cosine similarity of L2-normalised dlib face-recognition descriptors "
                        "(engine/identity.py), crops mapped onto dlib's 150 x 150 chip",
        },
    }
    figures: dict[str, str] = {}

    # ---------------------------------------------------------------- held-out video and fitting
    video = opts.data / "driving" / f"{opts.held_out}.mp4"
    if not video.exists():
        raise FileNotFoundError(f"held-out video {video} not found")
    log(f"[evaluate] aligning {opts.frames} frames of {video.name}")
    held = video_faces(video, size, opts.frames)
    T = len(held.crops)
    if T < 3:
        raise ValueError(f"only {T} usable frames in {video}")
    p_fit = fm.fit_sequence(list(held.landmarks))  # (T, N)
    neutral_frames = np.asarray(fm.last_fit.neutral_frames)

    def from_neutral(p_est: np.ndarray) -> np.ndarray:
        """Readings as relative driving takes them: less the reading of the frames the sequence fit took
        for the clip's neutral (the labels are changes from that neutral)."""
        return p_est - p_est[neutral_frames].mean(0)

    # Table 4's reference without a network: the face mesh of each frame fitted alone. Its absolute error
    # is what one frame cannot tell (the person's own face shape from an expression); from the neutral,
    # what the mesh reads of the motion.
    p_alone = fm.fit_alone(list(held.landmarks))
    metrics["regression_mesh_alone"] = {"real": regression_summary(p_fit, p_alone),
                                        "real_from_neutral": regression_summary(p_fit, from_neutral(p_alone)),
                                        "corr_strongest": strongest_correlation(p_fit, p_alone)}
    if str(opts.source_frame) == "neutral":  # the sampled frame nearest the sequence's neutral
        src = int(np.argmin(np.linalg.norm(p_fit, axis=1)))
    else:
        src = min(max(int(opts.source_frame), 0), T - 1)
    tgt = np.array([t for t in range(T) if t != src])
    mesh = MeshOnCrops()
    real_lm = [mesh(c) for c in held.crops]  # detected on the real crops, like on results
    src_img = to_tensor(held.crops[src:src + 1])
    real = to_tensor(held.crops[tgt])
    metrics["protocol"].update({"frames_used": T, "source_name": held.names[src]})

    # ---------------------------------------------------------------- baselines
    rows: dict[str, dict] = {}
    src_rep = src_img.expand(len(tgt), -1, -1, -1)  # for the metrics; G gets the one image
    rows["Source frame (unchanged)"] = {
        "ied": summary(ied(src_rep, real, sigma=sigma).numpy()),
        "landmark_px": summary(landmark_errors(mesh, held.crops[[src] * len(tgt)],
                                               [real_lm[t] for t in tgt], px_scale))}
    warped = np.stack([fm.warp(held.crops[src], held.landmarks[src], p_fit[src], p_fit[t]) for t in tgt])
    rows["Landmark warp of the source"] = {
        "ied": summary(ied(to_tensor(warped), real, sigma=sigma).numpy()),
        "landmark_px": summary(landmark_errors(mesh, warped, [real_lm[t] for t in tgt], px_scale))}

    # ---------------------------------------------------------------- per checkpoint
    idn = Identity(size, opts.device)
    emb_src = idn.raw(held.crops[src:src + 1])
    per_model: dict[str, dict] = {}
    transfer_examples: dict[str, np.ndarray] = {}
    held_t = to_tensor(held.crops)
    portraits = image_faces(_portrait_paths(opts), size)
    # Table 4 on generated images: every held-out frame and portrait as a source, targets = fitted
    # parameters of (other) held-out frames; the same pairs for every checkpoint.
    gen_sources = np.concatenate([held.crops, portraits.crops]) if len(portraits.crops) else held.crops
    gen_targets = p_fit[rng.permutation(T)[np.arange(len(gen_sources)) % T]]
    for m in models_list:
        log(f"[evaluate] {m.label}: transfer, regression, identity")
        res: dict = {}
        p_D = m.regress(held_t).numpy()
        for kind, P in (("fitted", p_fit), ("regressed", p_D)):
            out_imgs = m.generate(src_img, torch.from_numpy(P[tgt]).float(), source=(held.landmarks[src], P[src]))
            u8 = to_uint8(out_imgs)
            if kind == "fitted":
                transfer_examples[m.label] = u8
            rows[f"{m.label}, targets {kind}"] = {
                "ied": summary(ied(out_imgs, real, sigma=sigma).numpy()),
                "landmark_px": summary(landmark_errors(mesh, u8, [real_lm[t] for t in tgt], px_scale)),
                "identity_cos": summary(Identity.cosine(idn.raw(u8), emb_src))}
        # Table 4: regression on real frames, then on generated images
        res["regression_real"] = regression_summary(p_fit, p_D)
        res["regression_real_from_neutral"] = regression_summary(p_fit, from_neutral(p_D))
        res["regression_corr_strongest"] = strongest_correlation(p_fit, p_D)
        srcs, p_trg = gen_sources, gen_targets
        gen = m.generate(to_tensor(srcs), torch.from_numpy(p_trg).float())
        res["regression_generated"] = regression_summary(p_trg, m.regress(gen).numpy())
        res["regression_real_per_part"] = {
            "expression": regression_summary(p_fit[:, :m.n_exp], p_D[:, :m.n_exp]),
            "speech": regression_summary(p_fit[:, m.n_exp:], p_D[:, m.n_exp:]) if m.n_speech else None}
        per_model[m.label] = res

    # ---------------------------------------------------------------- identity reference on real data
    log("[evaluate] identity reference on real faces")
    groups = {opts.held_out: held.crops[np.linspace(0, T - 1, min(T, opts.identity_frames)).astype(int)]}
    for v in _other_videos(opts.data, opts.held_out):
        try:
            groups[v.stem] = video_faces(v, size, opts.identity_frames).crops
        except ValueError:
            continue
    all_portraits = image_faces(sorted((opts.data / "portraits").glob("*.jpg")), size)
    for name, crop in zip(all_portraits.names, all_portraits.crops):
        groups[f"portrait {name}"] = crop[None]
    metrics["identity_reference"] = identity_reference(idn, groups)

    # ---------------------------------------------------------------- sweeps (figures + identity)
    log("[evaluate] slider sweeps and figures")
    comps = fm.strongest(opts.components)
    names = fm.model.param_labels if fm.matches_checkpoint else main.param_names   # the sliders' labels
    sweep_portraits = portraits.crops[: opts.n_portraits] if len(portraits.crops) else held.crops[:1]
    sweep_names = portraits.names[: opts.n_portraits] if len(portraits.crops) else [held.names[0]]
    for m in models_list:
        ends_cos = []
        for pi, (crop, pname) in enumerate(zip(sweep_portraits, sweep_names)):
            emb_p = idn.raw(crop[None])
            fig_rows, labels = [], []
            for c in comps:
                P = np.zeros((len(SWEEP_STEPS), m.n_params), np.float32)
                P[:, c] = SWEEP_STEPS
                outs = to_uint8(m.generate(to_tensor(crop[None]), torch.from_numpy(P)))
                ends_cos += list(Identity.cosine(idn.raw(outs[[0, -1]]), emb_p))
                if m is main:
                    fig_rows.append([fm.preview(p) for p in P])
                    labels.append(f"3D {names[c]}")
                    fig_rows.append(list(outs))
                    labels.append(f"{names[c]}\n{pname}")
            if m is main:
                figures[f"sweep_{pname}"] = save_figure(
                    out / f"sweep_{pname}.jpg",
                    grid(fig_rows, labels, [f"{s:+.1f}" for s in SWEEP_STEPS]))
        per_model[m.label]["identity_sweep_ends_cos"] = summary(ends_cos)

    # ---------------------------------------------------------------- transfer figure
    show = tgt[np.linspace(0, len(tgt) - 1, min(8, len(tgt))).astype(int)]
    idx = [int(np.where(tgt == t)[0][0]) for t in show]
    trows = [[held.crops[src]] * len(show), list(held.crops[show]), list(warped[idx])]
    tlabels = ["source", "real target", "landmark warp"]
    for m in models_list:
        trows.append(list(transfer_examples[m.label][idx]))
        tlabels.append(f"{m.label}\n(p_fit)")
    figures["transfer"] = save_figure(out / "transfer.jpg", grid(trows, tlabels, [held.names[t].split("#")[1] for t in show]))

    # ---------------------------------------------------------------- interpolation (Fig. 8)
    # p = (1 - a) p_src + a p_trg with p_src = D_p(source portrait), p_trg = D_p(target frame): from
    # the portrait's own expression to the target's, for the two most expressive held-out frames.
    held_p_D = main.regress(held_t).numpy()
    targets = np.argsort(-np.linalg.norm(p_fit, axis=1))[:2]
    alphas = np.round(np.linspace(0, 1, 6), 1)
    irows, ilabels = [], []
    for k, (crop, pname) in enumerate(zip(sweep_portraits[:2], sweep_names[:2])):
        t = targets[k % len(targets)]
        p_src = main.regress(to_tensor(crop[None])).numpy()[0]
        P = np.stack([(1 - a) * p_src + a * held_p_D[t] for a in alphas]).astype(np.float32)
        outs = to_uint8(main.generate(to_tensor(crop[None]), torch.from_numpy(P)))
        irows += [[crop] + list(outs) + [held.crops[t]], [None] + [fm.preview(p) for p in P] + [None]]
        ilabels += [f"{pname} -> {held.names[t]}", "3D preview"]
    figures["interpolation"] = save_figure(out / "interpolation.jpg", grid(
        irows, ilabels, ["source"] + [f"a={a:.1f}" for a in alphas] + ["target"]))
    base = sweep_portraits[0]

    # ---------------------------------------------------------------- neutralisation (Fig. 12)
    expressive = np.argsort(-np.linalg.norm(p_fit, axis=1))[:6]
    ins = held.crops[expressive]
    outs = to_uint8(main.generate(to_tensor(ins), torch.zeros(len(ins), main.n_params)))
    figures["neutralisation"] = save_figure(out / "neutralisation.jpg", grid(
        [list(ins), list(outs)], ["input", "p = 0"], [held.names[i].split("#")[1] for i in expressive]))
    neutral_p = main.regress(to_tensor(outs)).numpy()
    per_model[main.label]["neutralised_regressed_norm"] = summary(np.linalg.norm(neutral_p, axis=1))
    per_model[main.label]["input_fitted_norm"] = summary(np.linalg.norm(p_fit[expressive], axis=1))

    # ---------------------------------------------------------------- speech (Fig. 13)
    sv = opts.data / "driving" / f"{opts.speech_video or opts.held_out}.mp4"
    if sv.stem == opts.held_out:
        drive, p_drive = held, p_fit
    else:
        drive = video_faces(sv, size, opts.frames)
        p_drive = fm.fit_sequence(list(drive.landmarks))
    k = np.linspace(0, len(drive.crops) - 1, min(8, len(drive.crops))).astype(int)
    outs = to_uint8(main.generate(to_tensor(base[None]), torch.from_numpy(p_drive[k]).float()))
    figures["speech"] = save_figure(out / "speech.jpg", grid(
        [list(drive.crops[k]), list(outs)], [f"{sv.stem} frames", "driven portrait"],
        [f"{drive.times[i]:.2f}s" for i in k]))
    mesh.close()

    metrics["transfer"] = rows
    metrics["models"] = per_model
    metrics["figures"] = figures
    if opts.motion:
        metrics.update(motion_metrics(models_list, fm, opts, log))
    metrics["seconds"] = round(time.time() - t_start, 1)
    write_report(out, metrics, log)
    return metrics


def motion_options(opts: EvalOptions):
    from .motion import MotionOptions
    return MotionOptions(data=opts.data, every=opts.motion_every, max_frames=opts.motion_frames,
                         clips=opts.motion_clips, portraits=opts.motion_portraits,
                         output_size=opts.motion_size, head_motion=opts.head_motion, device=opts.device,
                         source_mouth=opts.source_mouth, expression_scale=opts.expression_scale,
                         mouth_interior=opts.mouth_interior)


def motion_metrics(models_list: list[Models], fm: FaceModel, opts: EvalOptions, log=print,
                   rows=None) -> dict:
    """The motion-following and self-reenactment tables (``trainer/motion.py``) for the checkpoints:
    rows (default) copy, warp-only (head p of the first checkpoint, mesh-fit p), and each checkpoint
    through the Animator with head p (the render path) and mesh-fit p; or the given ``rows``
    (``motion.MotionRow``). Returns {"motion", "self_reenactment"}."""
    from .motion import default_rows, run_motion
    log("[evaluate] motion following and self-reenactment on the held-out clips")
    if rows is None:
        rows = default_rows([(m.label, m.runner) for m in models_list], model_p_sources=("head", "mesh"))
    return run_motion(rows, models_list[0].runner, fm.model, motion_options(opts), out=opts.out, log=log)


# ========================================================================================== report

def fmt_summary(s, scale=1.0, digits=3):
    if not s or s.get("mean") is None:
        return "n/a"
    txt = f"{s['mean'] * scale:.{digits}f}"
    if s.get("failed"):
        txt += f" ({s['failed']} failed)"
    return txt


def fmt_regression(s):
    if not s or s.get("mean") is None:
        return "n/a"
    txt = f"{s['mean']:.3f} ({s['pooled']:.3f})" if s.get("pooled") is not None else f"{s['mean']:.3f}"
    return txt + (f" -{s['excluded_near_neutral']}" if s.get("excluded_near_neutral") else "")


def _fmt_corr(c) -> str:
    return "n/a" if c is None or not np.isfinite(c) else f"{c:.2f}"


def _finite_json(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite_json(v) for v in obj]
    if isinstance(obj, (np.floating, np.integer)):
        return _finite_json(obj.item())
    return obj


def write_report(out: Path, metrics: dict, log=print) -> None:
    metrics = _finite_json(metrics)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=False))
    L = ["# SliderGAN evaluation", ""]
    L.append("Checkpoints: " + "; ".join(f"**{c['label']}** (`{c['path']}`, {c['image_size']} px, "
                                         f"{c['n_params']} parameters)" for c in metrics["checkpoints"]))
    if "transfer" in metrics:
        L += _paper_sections(metrics)
    if metrics.get("motion") or metrics.get("self_reenactment"):
        from .motion import report_lines
        L += [""] + report_lines(metrics.get("motion"), metrics.get("self_reenactment"))
    L += [f"Made in {metrics.get('seconds', 0)} s by `slidergan evaluate`."]
    (out / "README.md").write_text("\n".join(L) + "\n")
    log(f"[evaluate] report: {out / 'README.md'}")


def _paper_sections(metrics: dict) -> list[str]:
    p = metrics["protocol"]
    L: list[str] = []
    L += ["", f"Held-out video `{p['held_out_video']}`: {p['frames_used']} aligned frames, source "
          f"`{p['source_name']}`, targets = the other frames.", "",
          "## Same-video transfer (paper Table 3 protocol)", "",
          f"- IED: {p['ied']}.", f"- Landmark error: {p['landmark_error']}.", f"- Identity: {p['identity']}.",
          "", "| Method | IED (x1e-2) | Landmark error (px @128) | Identity cos to source |",
          "|---|---|---|---|"]
    for name, r in metrics["transfer"].items():
        L.append(f"| {name} | {fmt_summary(r['ied'], 100)} | {fmt_summary(r['landmark_px'], 1, 2)} | "
                 f"{fmt_summary(r.get('identity_cos'))} |")
    L += ["", "Paper (rendered 4DFAB, its own normalisation): GANimation 1.04e-2, SliderGAN-WGP 7.93e-3, "
          "SliderGAN-RaD 6.84e-3.", "", f"![transfer]({metrics.get('figures', {}).get('transfer', 'transfer.jpg')})", "",
          "## Regression accuracy (paper Table 4)", "",
          "| Model | real frames: ‖p_fit − p_D‖ / ‖p_fit‖ | expression part | speech part | from the clip's neutral | "
          "10 strongest components: correlation | generated: ‖p_trg − p_D(G(I, p_trg))‖ / ‖p_trg‖ |",
          "|---|---|---|---|---|---|---|"]
    for name, r in metrics["models"].items():
        part = r.get("regression_real_per_part") or {}
        L.append(f"| {name} | {fmt_regression(r['regression_real'])} | {fmt_regression(part.get('expression'))} | "
                 f"{fmt_regression(part.get('speech'))} | {fmt_regression(r.get('regression_real_from_neutral'))} | "
                 f"{_fmt_corr(r.get('regression_corr_strongest'))} | {fmt_regression(r['regression_generated'])} |")
    alone = metrics.get("regression_mesh_alone")
    if alone:
        L.append(f"| no network: the face mesh of each frame fitted alone | {fmt_regression(alone['real'])} | | | "
                 f"{fmt_regression(alone['real_from_neutral'])} | {_fmt_corr(alone['corr_strongest'])} | |")
    L += ["| paper: SliderGAN | 0.131 | | | | | 0.258 |", "| paper: GANimation | 0.427 | | | | | 0.513 |", "",
          f"Means over rows with ‖p_ref‖ ≥ {MIN_PARAM_NORM} (near-neutral rows excluded, counted as `-k`: "
          "their ratio explodes); in brackets the pooled ratio Σ‖p_ref − p_est‖ / Σ‖p_ref‖ over all rows. "
          "p_fit is the sequence fit: each frame's change from the clip's own neutral shape. \"From the clip's "
          "neutral\": the readings less their mean over the frames the fit took for that neutral, as relative "
          "driving reads a face. The face mesh fitted frame by frame (the \"no network\" row) shows what one frame "
          "cannot tell: the person's face shape where expressions can make it is read as expression, so even "
          "exact landmarks miss the absolute figure; from the neutral they give the motion.", "",
          "## Identity (dlib face-recognition network)", ""]
    ref = metrics.get("identity_reference", {})
    if ref:
        L += ["| Pairs of real faces | cosine | dlib distance (same person < 0.6) |", "|---|---|---|",
              f"| same person (frames of one video) | {fmt_summary(ref['same_person_cos'])} | "
              f"{fmt_summary(ref['same_person_dlib_distance'])} |",
              f"| different people (videos, portraits) | {fmt_summary(ref['different_people_cos'])} | "
              f"{fmt_summary(ref['different_people_dlib_distance'])} |", ""]
        if "auc_cos" in ref:
            L += [f"Separation on real data: AUC {ref['auc_cos']:.4f}; same-person pairs below 0.6: "
                  f"{ref['same_below_0.6']:.1%}; different-people pairs above 0.6: {ref['different_above_0.6']:.1%}.", ""]
    L += ["| Model | transfer: cos(source, result), p_fit | sweeps at ±1: cos(portrait, result) |", "|---|---|---|"]
    for name, r in metrics["models"].items():
        tr = metrics["transfer"].get(f"{name}, targets fitted", {})
        L.append(f"| {name} | {fmt_summary(tr.get('identity_cos'))} | {fmt_summary(r.get('identity_sweep_ends_cos'))} |")
    L += ["", "## Figures", ""]
    figs = metrics.get("figures", {})
    for key, fname in figs.items():
        if key.startswith("sweep_"):
            L += [f"Slider sweeps on `{key[6:]}` (-1 to 1 by 0.2; 3D preview above each row, paper Fig. 1/6):", "",
                  f"![{key}]({fname})", ""]
    for key, title in (("interpolation", "Interpolation from a portrait's own expression to a held-out frame's, "
                                         "p = (1 - a) D_p(source) + a D_p(target) (Fig. 8)"),
                       ("neutralisation", "Neutralisation, p = 0 (Fig. 12)"),
                       ("speech", "Speech: a portrait driven by a talking video's parameters (Fig. 13)")):
        if key in figs:
            L += [f"{title}:", "", f"![{key}]({figs[key]})", ""]
    main = next(iter(metrics["models"].values()), {})
    if "neutralised_regressed_norm" in main:
        L += [f"Neutralisation check: ‖p_D‖ of the p = 0 results {fmt_summary(main['neutralised_regressed_norm'])} "
              f"vs ‖p_fit‖ of the inputs {fmt_summary(main['input_fitted_norm'])}.", ""]
    return L


# ============================================================================================= CLI

def add_arguments(p) -> None:
    p.add_argument("checkpoint", help="checkpoint folder (or exported model) to evaluate")
    p.add_argument("--data", required=True, help="data folder with driving/*.mp4 and portraits/*.jpg")
    p.add_argument("-o", "--out", required=True, help="report folder (README.md, metrics.json, PNGs)")
    p.add_argument("--compare", default=None, help="a second checkpoint measured side by side (e.g. WGP)")
    p.add_argument("--held-out", default=HELD_OUT_DEFAULT, help="held-out video name (default d19)")
    p.add_argument("--frames", type=int, default=40, help="frames of the held-out video (default 40)")
    p.add_argument("--source-frame", default="neutral",
                   help="index of the source among the sampled frames, or 'neutral' (default): the one "
                        "with the smallest fitted ||p||, the paper's neutral-source setting")
    p.add_argument("--portraits", nargs="*", default=[],
                   help="portrait names for the figures (default: the held-out ones, trainer/holdout.py)")
    p.add_argument("--n-portraits", type=int, default=3)
    p.add_argument("--components", type=int, default=4, help="strongest components swept")
    p.add_argument("--speech-video", default=None, help="talking video for Fig. 13 (default: held-out)")
    p.add_argument("--blendshapes", default=None, help="blendshape model (default: the checkpoint's)")
    p.add_argument("--backend", default="auto", help="inference backend (auto, torch, onnxruntime, ...)")
    from engine.animator import add_precision_argument
    add_precision_argument(p)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="where the models and the identity network run (default cpu; auto: a GPU if there is one)")
    p.add_argument("--seed", type=int, default=0)
    g = p.add_argument_group("motion metrics (trainer/motion.py; off by default: minutes of CPU)")
    g.add_argument("--motion", action="store_true",
                   help="add the motion-following and self-reenactment tables (held-out clips and portraits)")
    g.add_argument("--motion-only", action="store_true", help="only those tables (skip the paper's measurements)")
    g.add_argument("--motion-frames", type=int, default=60,
                   help="sampled frames per driver clip (default 60; 0: all)")
    g.add_argument("--motion-every", type=int, default=3, help="every K-th driver frame (default 3)")
    g.add_argument("--head-motion", action=argparse.BooleanOptionalAction, default=True,
                   help="the driver's head pose moves the portrait's head, as render's default --motion head "
                        "(default); --no-head-motion: expression and speech only")
    from engine.animator import add_source_mouth_argument
    from streaming.drivers import add_expression_scale_argument
    add_source_mouth_argument(g)
    add_expression_scale_argument(g)
    from engine.mouth import add_interior_argument
    add_interior_argument(g)
    g.add_argument("--motion-size", type=int, default=256, help="output size the frames are measured at (default 256)")
    g.add_argument("--motion-clips", nargs="*", default=None,
                   help="driver clips under --data (globs allowed; default: the held-out talking clips and W011's)")
    g.add_argument("--motion-portraits", nargs="*", default=None,
                   help="cross-identity source portraits under --data (default: the held-out portraits)")


def main(args) -> int:
    torch.manual_seed(args.seed)
    data = Path(args.data)
    if not (data / "driving").is_dir():
        raise FileNotFoundError(f"{data} has no driving/ folder of videos")
    from engine.inference import resolve_device
    args.device = resolve_device(args.device)
    models = [load_models(args.checkpoint, args.backend, args.device, precision=args.precision)]
    if args.compare:
        models.append(load_models(args.compare, args.backend, args.device, precision=args.precision))
        if models[1].label == models[0].label:
            models[1].label += " (compare)"
    opts = EvalOptions(data=data, out=Path(args.out), held_out=args.held_out, frames=args.frames,
                       source_frame=args.source_frame, portraits=list(args.portraits),
                       n_portraits=args.n_portraits, components=args.components,
                       speech_video=args.speech_video, device=args.device, seed=args.seed,
                       motion=args.motion or args.motion_only, motion_only=args.motion_only,
                       motion_frames=args.motion_frames or None, motion_every=args.motion_every,
                       motion_size=args.motion_size, motion_clips=args.motion_clips,
                       motion_portraits=args.motion_portraits, head_motion=args.head_motion,
                       source_mouth=args.source_mouth, expression_scale=args.expression_scale,
                       mouth_interior=args.mouth_interior)
    evaluate(models, lambda m: FaceModel(m, args.blendshapes), opts)
    return 0
