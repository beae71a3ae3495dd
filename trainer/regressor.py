"""``slidergan train-head``: the discriminator's regression head D_p trained to read faces it never saw.

The paper trains D_p with the GAN (L_exp on real images, SPEC section 4); in a short CPU schedule it
learned the training sequences rather than faces. This trains D (trunk + regression head) on the
regression alone: ``L = || D_p(aug(I)) - p ||^2`` over annotated crops (``slidergan annotate``: p is
the blendshape fit of each crop's face mesh), starting from a checkpoint's D (its critic is carried
along unchanged in the output, the generator untouched), with

- identity balance: each batch draws a share ``clip_share`` (default half) of its samples from the
  annotated videos, a video uniformly and then a frame of it, and the rest from the people of the
  stills, uniformly: so the long clips do not outvote the 150 people of the stills, nor the stills
  (one frame each, eyes open, mouth shut) the videos, where the lips and lids move. (Drawing every
  sequence uniformly gave the 287 single photos 86 % of each batch: the held-out eye-opening
  correlation fell from 0.53 to 0.2.)
- the augmentations a webcam brings: exposure and white balance, blur, sensor noise, JPEG, a small
  alignment jitter (shift, scale, roll) and a partial occlusion (a flat patch on the forehead, a cheek
  or a side of the face; never over the eyes or mouth, whose motion is the label);
- validation on held-out identities (``--val``): Table 4's relative error ``||p - D_p(I)|| / ||p||``,
  the correlation per component with the fit and the correlations of the mouth and eye openings the
  two make (on the blendshape model's mean face: what driving needs), TensorBoard logs, a progress
  bar, atomic checkpoints with the optimiser and RNG states (exact resume);
- the loss (choice, ``--loss``): ``mesh`` is the error of the mesh motion the parameters make,
  ``||U (D_p(I) - p)||^2`` (U: the blendshape model's components; normalised so that orthonormal
  equal components would give the plain loss). Components that move the same points (three of the
  speech components open the mouth) share the motion differently on different faces; the fit's split
  of it is not what the warp needs, the motion is. Eyelid motion is small in mesh units, so the
  default, ``mesh+p``, is the mean of that and the parameters' own error (``p``). Measured in the
  README ("Training the regression head alone").
- faces warped to known expressions (``--warped DATASET --warped-share S``, choice): the videos hold
  about 35 people, the stills about 150 but all at rest; ``slidergan synth-pairs`` warps the stills
  along their fitted meshes to the videos' fitted expressions (``--targets``), and a share ``S`` of
  each batch reads those (a warped photo uniformly, then one of its targets), labelled with the target
  parameters: many more faces with their mouths and eyes moving, at the cost of the warp's look.
- mirrored faces (``--mirror S``, choice): a share ``S`` of the faces is flipped left-right and labelled
  with the fit of its mirrored face mesh (``engine.face.mirror_landmarks``; annotated faces fitted as
  ``slidergan annotate`` fitted the originals, a video's frames together and a photo alone; a warped face's
  mesh is its source's moved to the target, ``engine.geometry.target_landmarks``, fitted alone). The
  blendshape components are not mirror images of each other (a left component's mirror is a mix of
  several), so the label is the fit of the mirrored mesh, not a swap of names. Every person becomes two,
  every lighting its mirror.
- a within-clip term (``--relative W``, choice): relative driving reads a frame against the driver's
  own neutral, so what counts is the change between two frames of one face; pairs of frames of one
  video add ``W x`` the loss of the difference of their readings against the difference of their fits
  (a reading off by a constant for a person costs nothing there).

    slidergan train-head --init engine/assets/default_model --data runs/data/faces-lm \\
        --val runs/data/val-lm --out runs/head --steps 1500
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class HeadConfig:
    init: str
    data: list[str] = field(default_factory=list)
    val: str | None = None
    out: str = "runs/head"
    steps: int = 2000
    batch_size: int = 32
    lr: float = 2e-4
    lr_decay: float = 0.0    # last fraction of the steps over which the lr falls linearly to 0
    checkpoint_every: int = 250
    keep_checkpoints: int = 3    # the newest ones; older are removed
    log_every: int = 50
    seed: int = 0
    augment: bool = True
    loss: str = "mesh+p"     # "p": the parameters' squared error; "mesh": the mesh motion's; "mesh+p": both
    clip_share: float = 0.5  # share of each batch from the annotated videos (the rest: the stills' people)
    relative: float = 0.0    # weight of the within-clip term (``clip_pairs``): what relative driving reads
    warped: list[str] = field(default_factory=list)   # paired datasets (synth-pairs): their targets are read
    warped_share: float = 0.0   # share of each batch from ``warped``
    mirror: float = 0.0      # share of the faces flipped left-right, labelled with their mirrored mesh's fit

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, not {self.loss!r}")
        if not 0.0 <= self.clip_share <= 1.0:
            raise ValueError(f"clip_share must be between 0 and 1, not {self.clip_share}")
        if not 0.0 <= self.warped_share <= 1.0:
            raise ValueError(f"warped_share must be between 0 and 1, not {self.warped_share}")
        if (self.warped_share > 0) != bool(self.warped):
            raise ValueError("warped datasets (--warped) and a share of the batch for them (--warped-share) "
                             "go together")
        if not 0.0 <= self.lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be between 0 and 1, not {self.lr_decay}")
        if not 0.0 <= self.mirror <= 1.0:
            raise ValueError(f"mirror must be between 0 and 1, not {self.mirror}")
        if self.relative < 0:
            raise ValueError(f"relative must be >= 0, not {self.relative}")


LOSSES = ("p", "mesh", "mesh+p")


def load_arrays(paths, target: bool = False, landmarks: bool = False):
    """Images (M, S, S, 3) uint8, params (M, N) float32 and a sequence id (M,) of every dataset, in memory;
    ``target``: the target images and parameters of paired datasets; ``landmarks``: the crops' face meshes
    (M, 478, 3) as a fourth array (datasets written by ``slidergan annotate``)."""
    from trainer.data import DatasetError, open_dataset
    images, params, seqs, marks, offset = [], [], [], [], 0
    ki, kp = ("target_images", "target_params") if target else ("images", "params")
    for p in paths:
        info = open_dataset(p)
        if target and not info.paired:
            raise DatasetError(f"{p} is not a paired dataset (slidergan synth-pairs writes one)")
        if landmarks and not info.landmarks:
            raise DatasetError(f"{p} has no face-mesh landmarks (slidergan annotate writes them)")
        for i in range(len(info.shard_counts)):
            a = info.load_shard(i, [ki, kp, "seq"] + (["landmarks"] if landmarks else []))
            images.append(a[ki])
            params.append(a[kp].astype(np.float32))
            seqs.append(a["seq"].astype(np.int64) + offset)
            if landmarks:
                marks.append(a["landmarks"])
        offset = int(max(s.max() for s in seqs)) + 1
    out = np.concatenate(images), np.concatenate(params), np.concatenate(seqs)
    return out + (np.concatenate(marks),) if landmarks else out


def mirrored_params(landmarks: np.ndarray, seqs: np.ndarray, size: int, face_model) -> np.ndarray:
    """(M, N) float32: the parameters of each crop flipped left-right, the fit of its mirrored face mesh
    (``landmarks`` (M, 478, 3) in crop pixels of side ``size``), done as ``slidergan annotate`` did the
    originals: the frames of a sequence fitted together, a lone photo alone."""
    from engine.face import mirror_landmarks
    mirrored = mirror_landmarks(np.asarray(landmarks, np.float64), size)
    out = np.empty((len(seqs), face_model.n_params), np.float32)
    for s in np.unique(seqs):
        i = np.flatnonzero(seqs == s)
        if len(i) > 1:
            out[i] = face_model.fit_sequence(mirrored[i]).p
        else:
            out[i] = face_model.fit(mirrored[i[0]]).p
    return np.nan_to_num(out)


def mirrored_targets(paths, face_model) -> np.ndarray:
    """(M, N) float32, the rows of ``load_arrays(paths, target=True)``: the parameters of each warped face
    flipped left-right, the fit of the mirror of its mesh (the source's mesh moved from its parameters to
    the target's, as ``slidergan synth-pairs`` warped it). NaN rows for a dataset written without the
    sources' meshes (synth-pairs before it stored them): its faces are not flipped."""
    from engine.face import mirror_landmarks
    from engine.geometry import target_landmarks
    from trainer.data import open_dataset
    out = []
    for p in paths:
        info = open_dataset(p)
        if not info.landmarks:
            log.warning("%s has no face meshes of its sources (an older synth-pairs): its faces are not mirrored", p)
            out.append(np.full((info.count, face_model.n_params), np.nan, np.float32))
            continue
        for i in range(len(info.shard_counts)):
            a = info.load_shard(i, ["params", "target_params", "landmarks"])
            meshes = [target_landmarks(face_model, lm, ps, pt)
                      for lm, ps, pt in zip(a["landmarks"], a["params"], a["target_params"])]
            fits = face_model.fit_many(mirror_landmarks(np.stack(meshes), info.image_size))
            out.append(np.stack([f.p for f in fits]).astype(np.float32))
    return np.concatenate(out)


# --------------------------------------------------------------------------------- augmentation
def augment(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A webcam's variations of aligned crops (B, S, S, 3) uint8 (see the module docstring)."""
    import cv2
    out = np.empty_like(images)
    s = images.shape[1]
    for i, img in enumerate(images):
        x = img
        # alignment jitter: the tracker's crop is never exactly the template's
        ang, k = rng.normal(0, 3.0), np.exp(rng.normal(0, 0.03))
        m = cv2.getRotationMatrix2D((s / 2, s / 2), ang, k)
        m[:, 2] += rng.normal(0, 0.02 * s, 2)
        x = cv2.warpAffine(x, m, (s, s), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        x = x.astype(np.float32)
        # exposure and white balance
        x = x * np.exp(rng.normal(0, 0.25)) * np.exp(rng.normal(0, 0.06, 3))[None, None]
        if rng.random() < 0.3:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.4, 1.3))
        if rng.random() < 0.5:
            x = x + rng.normal(0, rng.uniform(1, 8), x.shape)
        if rng.random() < 0.25:   # a flat patch: forehead, a cheek or a side; the eyes and mouth stay seen
            zones = [(0.15, 0.85, 0.0, 0.22), (0.0, 0.22, 0.45, 0.75), (0.78, 1.0, 0.45, 0.75)]
            x0, x1, y0, y1 = zones[rng.integers(len(zones))]
            a, b = int(x0 * s), int(x1 * s)
            c, d = int(y0 * s), int(y1 * s)
            x[c:d, a:b] = rng.uniform(20, 230, 3)
        x = np.clip(x, 0, 255).astype(np.uint8)
        if rng.random() < 0.4:
            ok, enc = cv2.imencode(".jpg", x, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(25, 90))])
            x = cv2.imdecode(enc, cv2.IMREAD_UNCHANGED)
        out[i] = x
    return out


def to_input(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


# ------------------------------------------------------------------------------------ measuring
def regress_all(D, images: np.ndarray, batch: int = 64) -> np.ndarray:
    D.eval()
    with torch.no_grad():
        out = [D.regress(to_input(images[i:i + batch])).numpy() for i in range(0, len(images), batch)]
    return np.concatenate(out)


def head_metrics(p_fit: np.ndarray, p_head: np.ndarray, k: int = 10, face_model=None, seqs=None) -> dict:
    """Table 4's relative error (trainer.evaluate.regression_summary) and the correlation with the fit of
    the ``k`` components that vary most in ``p_fit``; with a ``face_model``, also the correlations of the
    mouth and eye openings (``engine.geometry``) its mean face takes with either, and with ``seqs`` (the
    sequence of each row) the same within sequences (each one's mean removed first: what a relative
    driver reads, the change from the driver's own neutral) and the amplitude ratio there (std read / std
    fitted)."""
    from trainer.evaluate import regression_summary
    from trainer.motion import pearson          # 0 where a reading is constant: it follows nothing
    std = p_fit.std(0)
    strongest = [c for c in np.argsort(-std)[:k] if std[c] > 1e-6]          # components that vary
    corr = [pearson(p_fit[:, c], p_head[:, c]) for c in strongest]
    out = {"relative_error": regression_summary(p_fit, p_head)["mean"], "corr_strongest": corr,
           "corr_strongest_mean": float(np.mean(corr)), "strongest": [int(c) for c in strongest]}
    if face_model is not None:
        from engine.geometry import eye_opening, mouth_opening
        for name, opening in (("mouth", mouth_opening), ("eye", eye_opening)):
            a, b = [np.array([opening(face_model.instantiate(p)) for p in ps]) for ps in (p_fit, p_head)]
            out[f"{name}_corr"] = pearson(a, b)
            if seqs is not None:
                seqs = np.asarray(seqs)
                for s in np.unique(seqs):
                    a[seqs == s] -= a[seqs == s].mean()
                    b[seqs == s] -= b[seqs == s].mean()
                out[f"{name}_corr_within"] = pearson(a, b)
                out[f"{name}_amplitude_within"] = float(b.std() / max(a.std(), 1e-12))
    return out


MIN_CLIP_FRAMES = 8   # a sequence with this many annotated frames is a video; fewer, a still's person


def balanced_batch(clips: list, people: list, n: int, clip_share: float, rng: np.random.Generator,
                   warped: list = (), warped_share: float = 0.0) -> np.ndarray:
    """``n`` sample indices: each from the videos (``clips``: index arrays) with probability
    ``clip_share``, a video uniformly then a frame, else from a person of the stills (``people``)
    uniformly; all from one kind when the other is absent. With ``warped`` (a group per warped photo),
    a share ``warped_share`` of the batch is then replaced by those: a photo uniformly, then a target."""
    share = clip_share if clips and people else (1.0 if clips else 0.0)
    out = np.empty(n, np.int64)
    for i in range(n):
        kind = clips if rng.random() < share else people
        g = kind[rng.integers(len(kind))]
        out[i] = g[rng.integers(len(g))]
    if warped:
        for i in np.flatnonzero(rng.random(n) < warped_share):
            g = warped[rng.integers(len(warped))]
            out[i] = g[rng.integers(len(g))]
    return out


def clip_pairs(clips: list, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` pairs of sample indices, two frames of one video each (a video uniformly, then two frames)."""
    a, b = np.empty(n, np.int64), np.empty(n, np.int64)
    for i in range(n):
        g = clips[rng.integers(len(clips))]
        a[i], b[i] = g[rng.integers(len(g))], g[rng.integers(len(g))]
    return a, b


def mirror_batch(x: np.ndarray, y: np.ndarray, idx: np.ndarray, n: int, share: float, mirror_params: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A batch's crops x (B, S, S, 3) and labels y (B, N) of samples ``idx``, each flipped left-right with
    probability ``share`` and labelled ``mirror_params[idx]``; past the ``n`` single samples come pairs
    (``clip_pairs``: first halves, then second halves), flipped together so that their difference stays
    one face's motion; samples whose mirrored fit is NaN (no face mesh to mirror) are not flipped."""
    flip = rng.random(len(idx)) < share
    m = (len(idx) - n) // 2
    flip[n + m:] = flip[n:n + m]
    flip &= np.isfinite(mirror_params[idx]).all(1)
    x, y = x.copy(), y.copy()
    x[flip] = x[flip, :, ::-1]
    y[flip] = mirror_params[idx[flip]]
    return x, y


def mesh_loss(d: torch.Tensor, metric: torch.Tensor) -> torch.Tensor:
    """The mean squared mesh motion of parameter errors d (B, N), per parameter (``mesh_metric``)."""
    return torch.mean(((d @ metric) * d).sum(1)) / d.shape[1]


def regression_loss(d: torch.Tensor, loss: str, metric: torch.Tensor | None) -> torch.Tensor:
    """``--loss``'s error of parameter errors d (B, N)."""
    if loss == "p":
        return torch.mean(d ** 2)
    if loss == "mesh":
        return mesh_loss(d, metric)
    return 0.5 * (mesh_loss(d, metric) + torch.mean(d ** 2))


def mesh_metric(face_model, n_params: int) -> torch.Tensor:
    """(N, N) U^T U / (tr(U^T U) / N) of the blendshape model's components U: ``d^T M d`` is the mesh
    motion's squared norm of a parameter difference d, scaled to ||d||^2 for orthonormal components."""
    u = np.stack([face_model.displacement(np.eye(n_params)[k]).reshape(-1) for k in range(n_params)], 1)
    g = u.T @ u
    return torch.from_numpy(g / (np.trace(g) / n_params)).float()


# ------------------------------------------------------------------------------------- training
def train(cfg: HeadConfig, resume: bool = False, progress: bool = True) -> dict:
    from torch.utils.tensorboard import SummaryWriter

    from engine.checkpoint import load_checkpoint, save_checkpoint
    from trainer.train import find_latest_checkpoint, lr_scale, prune_checkpoints
    out = Path(cfg.out)
    ck_dir = out / "checkpoints"
    last = find_latest_checkpoint(out)
    if resume and last is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {ck_dir}")
    if not resume and last is not None:
        raise FileExistsError(f"{out} already has checkpoints: --resume to continue, or another --out")
    start = load_checkpoint(last if resume else cfg.init, training=resume)
    origin = (start.meta["head"]["started_from"] if resume else
              start.meta.get("discriminator_from") or {"path": cfg.init, "step": start.step})
    D = start.discriminator
    torch.manual_seed(cfg.seed)
    images, params, seqs, *marks = load_arrays(cfg.data, landmarks=cfg.mirror > 0)
    if params.shape[1] != start.config.n_params:
        raise ValueError(f"the data has {params.shape[1]} parameters, the model {start.config.n_params}")
    val = load_arrays([cfg.val]) if cfg.val else None
    face_model = _face_model(start.blendshapes, params.shape[1])
    if face_model is None and "mesh" in cfg.loss:
        raise ValueError("--loss mesh needs the blendshape model of the checkpoint's parameters")
    if face_model is None and cfg.mirror:
        raise ValueError("--mirror needs the blendshape model of the checkpoint's parameters (to fit mirrored meshes)")
    mirror_params = mirrored_params(marks[0], seqs, images.shape[1], face_model) if cfg.mirror else None
    metric = mesh_metric(face_model, params.shape[1]) if "mesh" in cfg.loss else None
    groups = [np.flatnonzero(seqs == s) for s in np.unique(seqs)]
    clips = [g for g in groups if len(g) >= MIN_CLIP_FRAMES]
    people = [g for g in groups if len(g) < MIN_CLIP_FRAMES]
    warped = []
    if cfg.warped:
        w_images, w_params, w_seqs = load_arrays(cfg.warped, target=True)
        if w_params.shape[1] != params.shape[1]:
            raise ValueError(f"--warped has {w_params.shape[1]} parameters, the data {params.shape[1]}")
        warped = [len(images) + np.flatnonzero(w_seqs == s) for s in np.unique(w_seqs)]
        images, params = np.concatenate([images, w_images]), np.concatenate([params, w_params])
        if cfg.mirror:
            mirror_params = np.concatenate([mirror_params, mirrored_targets(cfg.warped, face_model)])
    opt = torch.optim.Adam(D.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
    rng = np.random.default_rng(cfg.seed)
    step = 0
    if resume:
        st = start.training
        opt.load_state_dict(st["optimizer"])
        rng.bit_generator.state = json.loads(st["rng"])
        torch.set_rng_state(st["torch_rng"])
        step = int(start.step)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    tb = SummaryWriter(str(out / "tb"))
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, unit="step", desc="train-head")
    summary = {}
    t0 = time.perf_counter()
    while step < cfg.steps:
        D.train()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_scale(step, cfg.steps, cfg.lr_decay)
        idx = balanced_batch(clips, people, cfg.batch_size, cfg.clip_share, rng, warped, cfg.warped_share)
        n = len(idx)
        if cfg.relative and clips:
            a, b = clip_pairs(clips, cfg.batch_size // 2, rng)
            idx = np.concatenate([idx, a, b])
        x, y = images[idx], params[idx]
        if cfg.mirror:
            x, y = mirror_batch(x, y, idx, n, cfg.mirror, mirror_params, rng)
        if cfg.augment:
            x = augment(x, rng)
        err = D.regress(to_input(x)) - torch.from_numpy(y)
        loss = regression_loss(err[:n], cfg.loss, metric)
        if len(idx) > n:    # within a clip: the difference of two readings against the fits' difference
            m = (len(idx) - n) // 2
            loss = loss + cfg.relative * regression_loss(err[n:n + m] - err[n + m:], cfg.loss, metric)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.log_every == 0:
            tb.add_scalar("head/loss", loss.item(), step)
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            if val is not None:
                summary = head_metrics(val[1], regress_all(D, val[0]), face_model=face_model, seqs=val[2])
                tb.add_scalar("val/relative_error", summary["relative_error"], step)
                tb.add_scalar("val/corr_strongest_mean", summary["corr_strongest_mean"], step)
                for k in ("mouth_corr", "eye_corr", "mouth_corr_within", "eye_corr_within", "mouth_amplitude_within",
                          "eye_amplitude_within"):
                    if k in summary:
                        tb.add_scalar(f"val/{k}", summary[k], step)
                log.info("step %d: held-out relative error %.3f, corr %.3f, mouth corr %.3f (within clips %.3f), "
                         "eye corr %.3f (%.3f)", step, summary["relative_error"], summary["corr_strongest_mean"],
                         summary.get("mouth_corr", np.nan), summary.get("mouth_corr_within", np.nan),
                         summary.get("eye_corr", np.nan), summary.get("eye_corr_within", np.nan))
            state = {"optimizer": opt.state_dict(), "rng": json.dumps(rng.bit_generator.state),
                     "torch_rng": torch.get_rng_state()}
            # this D is the run's own now: the D it started from (a default's came from another run) is
            # named under "head", where an installer does not take it for this D's origin
            meta = {k: v for k, v in start.meta.items() if k != "discriminator_from"}
            meta["head"] = {"config": asdict(cfg), "val": summary, "seconds": round(time.perf_counter() - t0, 1),
                            "started_from": origin}
            written = ck_dir / f"step-{step:07d}"
            save_checkpoint(written, start.config, start.generator, D, param_names=start.param_names,
                            blendshapes=start.blendshapes, step=step, meta=meta, training=state)
            prune_checkpoints(written, cfg.keep_checkpoints)
    if bar is not None:
        bar.close()
    tb.close()
    return summary


def _face_model(blendshapes: str, n_params: int):
    """The blendshape model the checkpoint's parameters belong to (``engine.animator.face_model_for``'s
    rule: the embedded default, if the checkpoint names it or none), or None."""
    from types import SimpleNamespace

    from engine.animator import face_model_for
    return face_model_for(SimpleNamespace(blendshapes=blendshapes, n_params=n_params))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--init", required=True, help="checkpoint whose D to start from (its G is carried along)")
    p.add_argument("--data", nargs="+", required=True, help="annotated datasets (slidergan annotate)")
    p.add_argument("--val", default=None, help="an annotated dataset of held-out identities")
    p.add_argument("--out", default="runs/head")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--lr-decay", type=float, default=0.0, metavar="F",
                   help="the lr falls linearly to 0 over the last F of the steps (default 0: constant)")
    p.add_argument("--checkpoint-every", type=int, default=250)
    p.add_argument("--keep-checkpoints", type=int, default=3, metavar="K", help="keep the newest K checkpoints")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--clip-share", type=float, default=0.5,
                   help="share of each batch from the annotated videos; the rest from the stills' people")
    p.add_argument("--loss", choices=LOSSES, default="mesh+p",
                   help="p: the parameters' squared error; mesh: the error of the mesh motion they make; "
                        "mesh+p (default): the mean of the two")
    p.add_argument("--relative", type=float, default=0.0, metavar="W",
                   help="weight of a within-clip term: two frames of one video, the difference of their readings "
                        "against the difference of their fits (what relative driving reads); default 0")
    p.add_argument("--warped", nargs="+", default=[], metavar="DATASET",
                   help="paired datasets (slidergan synth-pairs): their warped faces and target parameters")
    p.add_argument("--warped-share", type=float, default=0.0, metavar="S",
                   help="share of each batch from --warped (default 0)")
    p.add_argument("--mirror", type=float, default=0.0, metavar="S",
                   help="share of the faces flipped left-right, labelled with the fit of their mirrored face mesh "
                        "(needs --data with landmarks: slidergan annotate's; default 0)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--quiet", action="store_true")


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = HeadConfig(init=args.init, data=list(args.data), val=args.val, out=args.out, steps=args.steps,
                     batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay, checkpoint_every=args.checkpoint_every,
                     keep_checkpoints=args.keep_checkpoints, seed=args.seed, augment=not args.no_augment,
                     loss=args.loss, clip_share=args.clip_share, relative=args.relative,
                     warped=list(args.warped), warped_share=args.warped_share, mirror=args.mirror)
    summary = train(cfg, resume=args.resume, progress=not args.quiet)
    print(json.dumps(summary))
    return 0
