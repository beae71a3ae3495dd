"""Training SliderGAN (SPEC sections 4 and 5): ``slidergan train --config FILE [overrides]``.

One iteration (StarGAN's solver, shortened) takes one batch (I_org, p_org[, I_trg, p_trg]):

    D step (every iteration): L_D = l_adv L_adv,D + l_gp L_gp + l_exp L_exp,D on I_org and G(I_org, p_trg)
    G step (every n_critic-th): L_G = l_adv L_adv,G + l_exp L_exp,G + l_rec L_rec + l_id L_id + l_att L_att
                                      (+ l_gen L_gen on paired batches)

Two phases: ``paired`` (synthetic pairs: p_trg and I_trg come with the sample) for ``paired_epochs``,
then ``unpaired`` (real images; p_trg drawn from other samples' parameters, ``ParamBank``) for
``unpaired_epochs``. An epoch is one pass over the phase's data by all ranks together. With
``paired_share`` S > 0 the unpaired phase gives a share S of its G-step cycles paired batches (with L_gen).

Outputs under ``out``: ``checkpoints/step-NNNNNNN`` (engine.checkpoint folders, atomic, with optimizer
and RNG states for exact resume), ``tb/`` (TensorBoard scalars: every loss term, learning rates,
validation figures), ``samples/step-NNNNNNN.png`` (slider sweeps -1..1 on validation images),
``train_config.json`` and, at the end, ``summary.json``.

Multi-process: ``torchrun --nproc_per_node K -m engine.cli train ...`` (gloo on CPU, NCCL on GPU).
**(choice)** Gradients are averaged with one explicit all-reduce per network and step rather than by
wrapping the networks in ``DistributedDataParallel``: a step runs G and D several times before one
backward and the gradient penalty differentiates through D's input gradient, patterns DDP's
reducer handles poorly; the result is the same synchronous data-parallel SGD.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import random
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from engine.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from engine.config import ModelConfig, ProfileMismatchError, get_profile
from engine.inference import check_cuda
from engine.models import Discriminator, build_generator
from engine.torch_backend import weights_digest

from . import losses as Lx
from .data import (DatasetError, ParamBank, ShardStream, images_to_tensor, make_loader, open_dataset,
                   paint_like, tensor_to_images)
from .losses import LossWeights

log = logging.getLogger("slidergan.train")

CKPT_RE = re.compile(r"^step-(\d+)$")


@dataclass
class TrainConfig:
    profile: str = "tiny"
    # Data: dataset folders (trainer/data.py). paired: phase 1; unpaired: phase 2; targets: datasets whose
    # parameters serve as unpaired targets p_trg (default: the unpaired datasets); val: sample grids and
    # validation figures (default: the first unpaired, else paired, dataset).
    paired: list[str] = field(default_factory=list)
    unpaired: list[str] = field(default_factory=list)
    targets: list[str] = field(default_factory=list)
    val: str | None = None
    val_pairs: str | None = None  # paired validation dataset (held-out pairs): logs val/edit_ratio
    init: str | None = None  # start from this checkpoint's weights (fine-tuning: fresh optimisers, step 0)
    # Distillation: G learns to paint what this checkpoint's generator paints on the same warped frames
    # (L1 on I_gen and A); D is the teacher's, fixed, and no GAN term is trained (a narrower profile for speed).
    teacher: str | None = None
    out: str = "runs/train"
    batch_size: int = 16
    lr: float = 1e-4  # generator learning rate
    lr_d: float | None = None  # discriminator learning rate (default: lr)
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = 5  # D steps per G step (StarGAN and GANimation: 5)
    gan: str = "rad"  # "rad": SliderGAN-RaD (Eq. 5 + gradient penalty); "wgp": SliderGAN-WGP
    no_id: bool = False  # ablation: drop L_id
    no_gen: bool = False  # ablation: drop L_gen
    identity: str | None = None  # identity embedder F: PATH.onnx, "dlib", or none (L_id off)
    weights: LossWeights = field(default_factory=LossWeights)
    paired_epochs: float = 20.0
    unpaired_epochs: float = 40.0
    paired_steps: int | None = None  # overrides paired_epochs
    unpaired_steps: int | None = None  # overrides unpaired_epochs
    # (choice) Share of the unpaired phase's G-step cycles that take paired batches instead (with L_gen).
    # 0 is the paper's schedule; with it, the unpaired phase undid what L_gen had taught G (README,
    # Training: on real faces the weak regression head gives L_exp little pull towards p).
    paired_share: float = 0.0
    # Share of every batch's rows given a painting's look (trainer.data.paint_like; a pair's two images
    # alike): the real pairs are all video frames. Tried at the CPU fine-tune's scale: no gain (README).
    paint_share: float = 0.0
    lr_decay: float = 0.0  # last fraction of all steps over which both lrs decay linearly to 0
    checkpoint_every: int = 2000
    keep_checkpoints: int = 3
    sample_every: int = 1000
    log_every: int = 50
    val_count: int = 256  # validation samples for the regression / reconstruction figures
    sample_images: int = 4  # rows of the sample grid: validation images ...
    sample_params: list[int] = field(default_factory=lambda: [0, 1, 3])  # ... times swept parameters
    seed: int = 0
    workers: int = 2  # DataLoader workers per rank
    # Processes that make the warp generator's per-sample geometry (GeometryPool): 0 in the trainer's own; -1 (auto)
    # none on the CPU, whose cores train the network, and on a GPU the CPU's cores but one (at most 16) per rank
    geometry_workers: int = -1
    shuffle_buffer: int = 2048
    device: str = "auto"  # auto, cpu, cuda, cuda:N
    progress: bool = True

    def __post_init__(self):
        if isinstance(self.weights, dict):
            self.weights = LossWeights.from_dict(self.weights)
        for k in ("paired", "unpaired", "targets"):
            v = getattr(self, k)
            setattr(self, k, [str(v)] if isinstance(v, (str, os.PathLike)) else [str(x) for x in (v or [])])
        self.betas = tuple(float(b) for b in self.betas)
        self.sample_params = [int(i) for i in self.sample_params]
        if self.gan not in ("rad", "wgp"):
            raise ValueError(f"gan must be 'rad' or 'wgp', not {self.gan!r}")
        if self.n_critic < 1 or self.batch_size < 1:
            raise ValueError("n_critic and batch_size must be at least 1")
        if len(self.betas) != 2:
            raise ValueError("betas takes two numbers")
        for k in ("paired_share", "paint_share"):
            if not 0.0 <= float(getattr(self, k)) <= 1.0:
                raise ValueError(f"{k} must be between 0 and 1, not {getattr(self, k)}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown training options {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    @classmethod
    def load(cls, path) -> "TrainConfig":
        """A TOML (.toml) or JSON (.json) file of TrainConfig fields; ``[weights]`` a table."""
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"training config {path} does not exist")
        text = path.read_text()
        if path.suffix.lower() == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                try:
                    import tomli as tomllib
                except ImportError:
                    raise ValueError(f"{path}: reading TOML needs Python 3.11 or 'pip install tomli'; "
                                     "or give the options as JSON") from None
            try:
                d = tomllib.loads(text)
            except tomllib.TOMLDecodeError as e:
                raise ValueError(f"{path}: {e}") from None
        else:
            try:
                d = json.loads(text)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from None
        # Relative dataset and output paths are relative to the working directory, as on the command line.
        return cls.from_dict(d)

    def override(self, key: str, value) -> None:
        """Set ``key`` (``weights.att`` for a loss weight) to ``value`` (a JSON literal or a string)."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                pass
        if key.startswith("weights."):
            name = key.split(".", 1)[1]
            if name not in {f.name for f in dataclasses.fields(LossWeights)}:
                raise ValueError(f"unknown loss weight {name!r}")
            setattr(self.weights, name, float(value))
            return
        if key not in {f.name for f in dataclasses.fields(self)}:
            raise ValueError(f"unknown training option {key!r}")
        setattr(self, key, value)
        self.__post_init__()


# --------------------------------------------------------------------------------------- helpers

def _dist():
    d = torch.distributed
    return d if d.is_available() and d.is_initialized() else None


def average_gradients(module: nn.Module) -> None:
    """All-reduce (mean) the gradients of ``module`` across ranks, one flat buffer."""
    d = _dist()
    if d is None or d.get_world_size() == 1:
        return
    params = [p for p in module.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    d.all_reduce(flat)
    flat /= d.get_world_size()
    i = 0
    for p in params:
        n = p.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def broadcast_parameters(module: nn.Module) -> None:
    d = _dist()
    if d is None:
        return
    for t in list(module.parameters()) + list(module.buffers()):
        d.broadcast(t.data, 0)


def training_device(name: str, rank: int = 0, world: int = 1) -> torch.device:
    """The device a run trains on, made current: ``auto`` (a CUDA GPU where torch has one, else the CPU),
    ``cpu``, ``cuda`` (under torchrun each rank the GPU of its LOCAL_RANK) or ``cuda:N``. A GPU asked for
    where torch sees none, or one the machine does not have, is a clear error before any work.
    (torch.cuda.set_device takes an index: a bare ``cuda`` device made it raise on every GPU machine.)"""
    name = str(name or "auto").strip().lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {name!r}")
    if device.type == "cpu":
        return device
    check_cuda(name)
    count = torch.cuda.device_count()
    if device.index is not None:
        index = device.index
    elif world > 1:
        index = int(os.environ.get("LOCAL_RANK", rank)) % count
    else:
        index = torch.cuda.current_device()
    if not 0 <= index < count:
        raise ValueError(f"device {name!r}: this machine has {count} CUDA GPU(s) (cuda:0 to cuda:{count - 1})")
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _rng_state(gen: torch.Generator) -> dict:
    st = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
          "trainer": gen.get_state()}
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict, gen: torch.Generator) -> None:
    torch.set_rng_state(st["torch"])
    np.random.set_state(st["numpy"])
    random.setstate(st["python"])
    gen.set_state(st["trainer"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def _checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """(step, folder) of the step-N checkpoints in ``folder``, oldest step first."""
    if not folder.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in folder.iterdir() if (m := CKPT_RE.match(p.name)) and p.is_dir())


def find_latest_checkpoint(out) -> Path | None:
    found = _checkpoints(Path(out) / "checkpoints")
    return found[-1][1] if found else None


def prune_checkpoints(written, keep: int) -> None:
    """After the step-N checkpoint ``written``: remove all but the newest ``keep`` (at least one) of those up to
    its step beside it (a long run that kept every one filled its disk: the head trainer's test alone wrote 75,
    410 MB). Later steps, left by a run this one resumed before the end of, stay until this run overwrites them."""
    import shutil
    written = Path(written)
    step = int(CKPT_RE.match(written.name).group(1))
    upto = [p for s, p in _checkpoints(written.parent) if s <= step]
    for old in upto[:-max(1, int(keep))]:
        shutil.rmtree(old, ignore_errors=True)


class GeometryPool:
    """The warp generator's per-sample geometry (``engine.geometry.warp_batch``, about 3 ms a sample a warp on one
    core: on a GPU the step's bound) made by worker processes, the batch's rows split among them and their arrays
    written into a memory-mapped file (in /dev/shm where there is one); each row is the same computation as in the
    trainer's process, so a run is the same with any number of workers."""

    def __init__(self, workers: int):
        import concurrent.futures
        import multiprocessing
        import tempfile
        self.workers = int(workers)
        # spawned, not forked: a fork of a process that runs torch's threads can hang in the child
        self.pool = concurrent.futures.ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
        shm = Path("/dev/shm")
        fd, name = tempfile.mkstemp(prefix="slidergan-geometry-", dir=shm if shm.is_dir() else None)
        os.close(fd)
        self.path, self.shape = Path(name), None

    def warp(self, face_model, landmarks, p_src, p_trg, images) -> tuple:
        """``warp_batch``'s result for the embedded blendshape model (the one the trainer checked its data against;
        ``face_model`` is that one)."""
        from engine.geometry import warp_arrays, warp_rows
        b, size = len(landmarks), images.shape[1]
        arrays = warp_arrays(self.path, b, size, create=self.shape != (b, size))
        self.shape = (b, size)
        parts = np.array_split(np.arange(b), min(self.workers, b))
        tasks = [(str(self.path), b, int(k[0]), landmarks[k], p_src[k], p_trg[k], images[k]) for k in parts if len(k)]
        dst = np.concatenate(list(self.pool.map(warp_rows, tasks)))
        return (*(np.array(a) for a in arrays), dst)

    def close(self) -> None:
        self.pool.shutdown(cancel_futures=True)
        self.path.unlink(missing_ok=True)


def warp_frame(images: torch.Tensor, maps: np.ndarray, extra: np.ndarray, drawn: np.ndarray) -> torch.Tensor:
    """The warp generator's input on tensors (engine.geometry.MeshWarp.generator_frame): ``images``
    (B, 3, S, S) resampled at ``maps`` (B, S, S, 2) crop pixels (as cv2.remap does at inference:
    bilinear, edge replicated; differentiable in the images, so the cycle's second warp carries
    gradients into G's first result), the drawn layer ``drawn`` (B, S, S, 4: mouth and lids) over it, then
    ``extra``."""
    s = images.shape[-1]
    grid = torch.from_numpy(maps).to(images) * (2.0 / (s - 1)) - 1.0
    rgb = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=True)
    m = torch.from_numpy(drawn).to(images).permute(0, 3, 1, 2)
    a = m[:, 3:]
    rgb = rgb * (1 - a) + m[:, :3] / 127.5 - a          # premultiplied colour from 0-255 to [-1, 1]
    return torch.cat([rgb, torch.from_numpy(extra).to(images)], 1)


class Conditioned:
    """G as the losses and the validation figures call it, ``G(x, p)`` -> (I_gen, C, A). For the
    geometry-guided generator the images x come with their meshes (``landmarks``, crop pixels) and
    parameters ``p_src``: each is warped along its mesh to p first (engine.geometry). One row of
    landmarks serves a batch of one image repeated. ``dst`` keeps the last call's target meshes."""

    def __init__(self, G, face_model=None, landmarks=None, p_src=None, warp=None):
        self.G, self.face_model, self.warp = G, face_model, warp     # warp: GeometryPool.warp, or None (here)
        self.landmarks = None if landmarks is None else np.asarray(landmarks, np.float64)
        self.p_src = None if p_src is None else np.asarray(p_src.cpu() if torch.is_tensor(p_src) else p_src)
        self.dst = None
        self._last = None   # (x, p, inputs): a step's D and G passes warp the same batch to the same p once

    def __call__(self, x: torch.Tensor, p: torch.Tensor):
        return self.G(x, p, **self.inputs(x, p))

    def inputs(self, x: torch.Tensor, p: torch.Tensor) -> dict:
        """G's inputs beside (x, p): for the warp kind, x warped along its meshes to p (``frame``)."""
        if self.face_model is None:
            return {}
        if self._last is not None and self._last[0] is x and self._last[1] is p:
            return self._last[2]
        from engine.geometry import warp_batch
        warp = self.warp or warp_batch
        b = p.shape[0]
        lm, ps = self.landmarks, self.p_src
        if len(lm) != b:
            lm, ps = np.repeat(lm[:1], b, 0), np.repeat(ps[:1], b, 0)
        crops = tensor_to_images(x.detach())
        if len(crops) != b:
            crops = np.repeat(crops[:1], b, 0)
        maps, extra, drawn, self.dst = warp(self.face_model, lm, ps, p.detach().cpu().numpy(), crops)
        out = {"frame": warp_frame(x, maps, extra, drawn)}
        self._last = (x, p, out)
        return out

    def rows(self, sl: slice) -> "Conditioned":
        if self.face_model is None:
            return self
        return Conditioned(self.G, self.face_model, self.landmarks[sl], self.p_src[sl], self.warp)


@torch.no_grad()
def regression_figures(G, D, images: torch.Tensor, params: torch.Tensor, mean_params: torch.Tensor,
                       batch: int = 64) -> dict:
    """Validation figures: D_p's mean squared error against the mean predictor's (the training set's
    mean), Table 4's relative error (``trainer.evaluate.regression_summary``: near-neutral rows left out,
    whose ratio explodes; NaN when every row is one), and the L1 reconstruction error of G(I, p_org) against I."""
    from .evaluate import regression_summary
    preds, rec = [], []
    for i in range(0, images.shape[0], batch):
        x, p = images[i:i + batch], params[i:i + batch]
        preds.append(D.regress(x))
        y = (G.rows(slice(i, i + batch)) if isinstance(G, Conditioned) else G)(x, p)[0]
        rec.append((y - x).abs().flatten(1).mean(1))
    pred, rec_t = torch.cat(preds), torch.cat(rec)
    base = ((mean_params.to(params) - params) ** 2).mean(1)
    rel = regression_summary(params.cpu().numpy().astype(np.float64), pred.cpu().numpy().astype(np.float64))["mean"]
    return {"regression_mse": float(((pred - params) ** 2).mean()), "mean_predictor_mse": float(base.mean()),
            "regression_rel_error": float("nan") if rel is None else rel, "recon_l1": float(rec_t.mean())}


@torch.no_grad()
def follows_params(G, D, images: torch.Tensor, params: torch.Tensor, which=None, seed: int = 0) -> dict:
    """Does G show the parameters it is given? Random targets q (uniform in [-1, 1] on ``which``, the
    rest as fitted); D_p's squared error to q on G(I, q) against on the unchanged I. ``ratio`` < 1:
    G moves the images towards q as D reads them; about 1: G ignores q."""
    idx = torch.arange(params.shape[1]) if which is None else torch.as_tensor(which)
    q = params.clone()
    g = torch.Generator().manual_seed(seed)
    q[:, idx] = (torch.rand(q.shape[0], len(idx), generator=g) * 2 - 1).to(q)
    moved = float((D.regress(G(images, q)[0])[:, idx] - q[:, idx]).pow(2).mean())
    unchanged = float((D.regress(images)[:, idx] - q[:, idx]).pow(2).mean())
    return {"mse_generated": moved, "mse_unchanged": unchanged, "ratio": moved / max(unchanged, 1e-12)}


@torch.no_grad()
def edit_ratio(G, I_org: torch.Tensor, p_trg: torch.Tensor, I_trg: torch.Tensor, tau: float = 0.1) -> float:
    """Does G make the edit of a known pair? L1 error of G(I_org, p_trg) against I_trg in the region
    where the pair differs, over the error of copying I_org there: 1 copies, 0 makes the edit exactly.
    Needs no regression head, so it also judges G before D_p has learned anything (and cannot be
    fooled like it). tau 0.1 (about 13 grey levels), above L_gen's 0.05: only clearly changed pixels
    count, not the resampling noise of a 3D warp."""
    M = Lx.changed_region(I_org, I_trg, tau)
    return float(((G(I_org, p_trg)[0] - I_trg).abs() * M).sum() / ((I_org - I_trg).abs() * M).sum().clamp_min(1e-12))


@torch.no_grad()
def per_parameter_mse(D, images: torch.Tensor, params: torch.Tensor, mean_params: torch.Tensor,
                      batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(D_p's mean squared error, the mean predictor's) for each parameter, shape (N,) each."""
    pred = torch.cat([D.regress(images[i:i + batch]) for i in range(0, images.shape[0], batch)])
    return (((pred - params) ** 2).mean(0).cpu().numpy(),
            ((mean_params.to(params) - params) ** 2).mean(0).cpu().numpy())


@torch.no_grad()
def sample_grid(G, images: torch.Tensor, param_idx: list[int], n_params: int,
                values=tuple(np.round(np.arange(-1, 1.0001, 0.2), 1))) -> np.ndarray:
    """Slider sweeps (SPEC section 6): for each image and parameter, the input, then G(I, v e_k) for
    v = -1, -0.8, ..., 1 (the other parameters 0). Returns an RGB uint8 grid."""
    rows = []
    for i, x in enumerate(images):
        g = G.rows(slice(i, i + 1)) if isinstance(G, Conditioned) else G
        for k in param_idx:
            if k >= n_params:
                continue
            p = torch.zeros(len(values), n_params, device=images.device)
            p[:, k] = torch.tensor(values, dtype=p.dtype)
            y = g(x[None].expand(len(values), -1, -1, -1), p)[0]
            tiles = tensor_to_images(torch.cat([x[None], y]))
            rows.append(np.concatenate(list(tiles), axis=1))
    return np.concatenate(rows, axis=0) if rows else np.zeros((1, 1, 3), np.uint8)


# --------------------------------------------------------------------------------------- trainer


def lr_scale(step: int, total_steps: int, decay: float) -> float:
    """The learning rate's factor at ``step``: 1, then down linearly to 0 over the last ``decay`` of the steps."""
    if decay <= 0:
        return 1.0
    start = total_steps * (1 - decay)
    return 1.0 if step < start else max(0.0, 1 - (step - start) / max(1.0, total_steps - start))


class Trainer:
    """Builds everything from a TrainConfig; ``run()`` trains to the end. ``identity`` overrides
    ``cfg.identity`` with a ready module (tests). ``keep_history``: keep every step's losses."""

    def __init__(self, cfg: TrainConfig, identity: nn.Module | None = None, resume: str | bool | None = None,
                 keep_history: bool = False):
        self.cfg = cfg
        self.keep_history = keep_history
        self.history: list[dict] = []
        d = _dist()
        self.rank, self.world = (d.get_rank(), d.get_world_size()) if d else (0, 1)
        self.device = self._device()
        self.mcfg: ModelConfig = get_profile(cfg.profile)
        self.out = Path(cfg.out)
        self._open_data()
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed)
        random.seed(cfg.seed)
        self.gen = torch.Generator().manual_seed(cfg.seed * 1000 + self.rank)  # targets, gp alphas
        self.G = build_generator(self.mcfg).to(self.device)
        self.D = Discriminator(self.mcfg).to(self.device)
        if cfg.init and not resume:
            ck = load_checkpoint(cfg.init, expect=self.mcfg, map_location="cpu")
            self.G.load_state_dict(ck.generator.state_dict())
            self.D.load_state_dict(ck.discriminator.state_dict())
            if self.rank == 0:
                log.info("starting from the weights of %s", cfg.init)
        self.T = self._teacher(copy_critic=not resume) if cfg.teacher else None
        broadcast_parameters(self.G)
        broadcast_parameters(self.D)
        lr_d = cfg.lr if cfg.lr_d is None else cfg.lr_d
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=lr_d, betas=cfg.betas)
        self.base_lrs = (cfg.lr, lr_d)
        self.F = None
        if not cfg.no_id:
            if identity is not None:
                self.F = identity.to(self.device)
            else:
                from .identity import load_identity
                self.F = load_identity(cfg.identity, self.mcfg.image_size, self.device)
        elif self.rank == 0:
            log.info("L_id dropped (no_id ablation)")
        self.step = 0
        if resume:
            path = find_latest_checkpoint(self.out) if resume is True else Path(resume)
            if path is None:
                raise CheckpointError(f"--resume: no checkpoint under {self.out / 'checkpoints'}")
            self._load(path)
        self.tb = None

    # -- set-up
    def _teacher(self, copy_critic: bool) -> nn.Module:
        """The teacher's generator, fixed; its D (critic and regression head) becomes this run's, which
        needs the same D network and parameters: only the generator may differ."""
        ck = load_checkpoint(self.cfg.teacher, map_location="cpu")
        t, m = ck.config.to_dict(), self.mcfg.to_dict()
        diff = [k for k in t if k != "name" and not k.startswith("g_") and t[k] != m[k]]
        if diff:
            raise ProfileMismatchError(
                f"teacher {self.cfg.teacher} (profile {ck.config.name!r}) cannot teach profile {self.mcfg.name!r}: "
                f"they differ in {', '.join(diff)} (only the generator's widths may differ)")
        if (ck.blendshapes or "") != (self.blendshapes or ""):   # its p would mean other motions than the data's
            raise DatasetError(f"teacher {self.cfg.teacher} was made for blendshape model {ck.blendshapes!r}, "
                               f"the data is labelled with {self.blendshapes!r}")
        if copy_critic:
            self.D.load_state_dict(ck.discriminator.state_dict())
        if self.rank == 0:
            log.info("distilling %s (profile %s) into profile %s", self.cfg.teacher, ck.config.name, self.mcfg.name)
        return ck.generator.to(self.device).eval().requires_grad_(False)

    def _device(self) -> torch.device:
        device = training_device(self.cfg.device, self.rank, self.world)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input sizes
        return device

    def _open_data(self) -> None:
        cfg, n = self.cfg, self.mcfg.n_params
        self.paired_infos = [open_dataset(p, n, cfg.profile) for p in cfg.paired]
        self.unpaired_infos = [open_dataset(p, n, cfg.profile) for p in cfg.unpaired]
        for i in self.paired_infos:
            if not i.paired:
                raise DatasetError(f"{i.path} is listed as paired but holds no target images (paired: false)")
        for i in self.paired_infos + self.unpaired_infos:
            i.check_labels()  # fail now, naming shard and row, not hours into the run
        per_step = cfg.batch_size * self.world
        paired_count = sum(i.count for i in self.paired_infos)
        unpaired_count = sum(i.count for i in self.unpaired_infos)
        self.paired_steps = cfg.paired_steps if cfg.paired_steps is not None else (
            round(cfg.paired_epochs * math.ceil(paired_count / per_step)) if paired_count else 0)
        self.unpaired_steps = cfg.unpaired_steps if cfg.unpaired_steps is not None else (
            round(cfg.unpaired_epochs * math.ceil(unpaired_count / per_step)) if unpaired_count else 0)
        if self.paired_steps and not self.paired_infos:
            raise DatasetError("the paired phase has steps but no paired dataset (give paired = [...])")
        if self.unpaired_steps and not self.unpaired_infos:
            raise DatasetError("the unpaired phase has steps but no unpaired dataset (give unpaired = [...], "
                               "or unpaired_steps = 0)")
        if self.unpaired_steps and cfg.paired_share > 0 and not self.paired_infos:
            raise DatasetError("paired_share > 0 mixes paired batches into the unpaired phase, but no paired "
                               "dataset is given (give paired = [...])")
        self.total_steps = self.paired_steps + self.unpaired_steps
        if self.total_steps <= 0:
            raise DatasetError("nothing to train: no data or zero steps in both phases")
        self.bank = None
        if self.unpaired_steps:
            targets = [open_dataset(p, n, cfg.profile) for p in cfg.targets] or self.unpaired_infos
            self.bank = ParamBank.from_datasets(targets)
        val_path = cfg.val or (cfg.unpaired[0] if cfg.unpaired else cfg.paired[0])
        val = open_dataset(val_path, n, cfg.profile)
        b = self._first_rows(val)
        self.val_images, self.val_params = b["image"].to(self.device), b["params"]
        self.val_landmarks = b.get("landmarks")
        self.val_pairs = None
        if cfg.val_pairs:
            vp = open_dataset(cfg.val_pairs, n, cfg.profile)
            if not vp.paired:
                raise DatasetError(f"val_pairs: {vp.path} holds no target images (paired: false)")
            b = self._first_rows(vp)
            self.val_pairs = {k: b[k].to(self.device) for k in ("image", "params", "target_params", "target_image")}
            self.val_pairs["landmarks"] = b.get("landmarks")
        names = (self.paired_infos + self.unpaired_infos)[0].param_names
        self.param_names = list(names)
        self.blendshapes = (self.paired_infos + self.unpaired_infos)[0].blendshapes
        train_params = np.concatenate([i.all_params() for i in (self.unpaired_infos or self.paired_infos)])
        self.mean_params = torch.from_numpy(train_params.mean(0))
        self.face_model = None
        self._geometry: GeometryPool | None = None        # made on first use (geometry_workers)
        if self.mcfg.generator == "warp":
            self.face_model = self._warp_face_model([*self.paired_infos, *self.unpaired_infos, val]
                                                    + ([vp] if cfg.val_pairs else []))

    def _warp_face_model(self, infos):
        """The geometry-guided generator warps every sample along its mesh: each dataset must carry
        landmarks, and p must be the embedded blendshape model's parameters."""
        from engine.blendshapes import load_default_face_model
        fm = load_default_face_model()
        for info in infos:
            if not info.landmarks:
                raise DatasetError(f"{info.path} has no landmarks: profile {self.mcfg.name!r} warps every sample along "
                                   "its mesh (make the dataset again with slidergan annotate or video-pairs)")
            if info.blendshapes and info.blendshapes != fm.describe():
                raise DatasetError(f"{info.path} was labelled with blendshape model {info.blendshapes!r}, not the "
                                   f"embedded {fm.describe()!r} that the warp moves the mesh with")
        return fm

    def conditioned(self, landmarks, p_src) -> Conditioned:
        """G as ``G(x, p)`` for images with these meshes and parameters (see Conditioned)."""
        if self.face_model is None:
            return Conditioned(self.G)
        lm = landmarks.cpu().numpy() if torch.is_tensor(landmarks) else landmarks
        return Conditioned(self.G, self.face_model, lm, p_src, self._geometry_pool())

    def _geometry_pool(self):
        """GeometryPool.warp for the warp generator's geometry (``geometry_workers``), or None: in this process."""
        n = int(self.cfg.geometry_workers)
        if n < 0:
            n = 0 if self.device.type == "cpu" else min(16, max(0, (os.cpu_count() or 1) // max(1, self.world) - 1))
        if n == 0:
            return None
        if self._geometry is None:
            self._geometry = GeometryPool(n)
        return self._geometry.warp

    def _first_rows(self, info) -> dict[str, torch.Tensor]:
        """The first ``val_count`` samples of a dataset, as one batch (validation)."""
        vs = ShardStream(info, min(self.cfg.val_count, info.count), self.mcfg.image_size, shuffle=False,
                         repeat=False, rank=0, world_size=1)
        return next(iter(vs))

    def _stream(self, phase: str, start_batch: int):
        infos = self.paired_infos if phase == "paired" else self.unpaired_infos
        st = ShardStream(infos, self.cfg.batch_size, self.mcfg.image_size, shuffle=True,
                         shuffle_buffer=self.cfg.shuffle_buffer, seed=self.cfg.seed + (0 if phase == "paired" else 1),
                         repeat=True, drop_last=True, rank=self.rank, world_size=self.world,
                         start_batch=start_batch)
        return iter(make_loader(st, self.cfg.workers, pin_memory=self.device.type == "cuda"))

    # -- checkpoints
    def training_state(self, rng_states: list) -> dict:
        return {"step": self.step, "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "rng": rng_states, "train_config": self.cfg.to_dict(), "world_size": self.world,
                "workers": self.cfg.workers}

    def save(self) -> Path | None:
        """Collective: every rank calls it (their RNG states are gathered); rank 0 writes."""
        rng = [_rng_state(self.gen)]
        d = _dist()
        if d is not None and self.world > 1:
            rng = [None] * self.world
            d.all_gather_object(rng, _rng_state(self.gen))
        if self.rank != 0:
            return None
        path = self.out / "checkpoints" / f"step-{self.step:07d}"
        save_checkpoint(path, self.mcfg, self.G, self.D, param_names=self.param_names,
                        blendshapes=self.blendshapes, step=self.step,
                        meta={"gan": self.cfg.gan, "train_config": self.cfg.to_dict()},
                        training=self.training_state(rng))
        prune_checkpoints(path, self.cfg.keep_checkpoints)
        return path

    def _load(self, path: Path) -> None:
        ck = load_checkpoint(path, expect=self.mcfg, training=True, map_location="cpu")
        self.G.load_state_dict(ck.generator.state_dict())
        self.D.load_state_dict(ck.discriminator.state_dict())
        st = ck.training
        self.opt_G.load_state_dict(st["opt_G"])
        self.opt_D.load_state_dict(st["opt_D"])
        self.step = int(st["step"])
        if st.get("world_size", 1) != self.world or st.get("workers") != self.cfg.workers:
            log.warning("resuming with %d rank(s) x %d worker(s), the checkpoint was made with %s x %s: "
                        "the data order will differ from an uninterrupted run",
                        self.world, self.cfg.workers, st.get("world_size"), st.get("workers"))
        if self.world == st.get("world_size", 1):
            _set_rng_state(st["rng"][self.rank], self.gen)
        if self.rank == 0:
            log.info("resumed from %s at step %d", path, self.step)

    # -- one iteration
    def _lr(self) -> None:
        if self.cfg.lr_decay <= 0:
            return
        k = lr_scale(self.step, self.total_steps, self.cfg.lr_decay)
        for opt, base in ((self.opt_G, self.base_lrs[0]), (self.opt_D, self.base_lrs[1])):
            for g in opt.param_groups:
                g["lr"] = base * k

    def _paint(self, batch: dict) -> dict:
        """``paint_share`` of the batch's rows given a painting's look (trainer.data.paint_like), drawn
        from the run's generator (an exact resume paints the same rows alike)."""
        rows = torch.nonzero(torch.rand(batch["image"].shape[0], generator=self.gen) < self.cfg.paint_share)[:, 0]
        if len(rows) == 0:
            return batch
        seed = int(torch.randint(2**31 - 1, (1,), generator=self.gen))
        keys = [k for k in ("image", "target_image") if k in batch]
        painted = paint_like([tensor_to_images(batch[k][rows]) for k in keys], np.random.default_rng(seed))
        batch = dict(batch)
        for k, images in zip(keys, painted):
            batch[k] = batch[k].clone()
            batch[k][rows] = images_to_tensor(images)
        return batch

    def train_step(self, batch: dict, phase: str) -> dict[str, float]:
        cfg, w = self.cfg, self.cfg.weights
        dev = self.device
        if cfg.paint_share > 0:
            batch = self._paint(batch)
        I_org = batch["image"].to(dev, non_blocking=True)
        p_org = batch["params"].to(dev, non_blocking=True)
        if phase == "paired":
            p_trg = batch["target_params"].to(dev, non_blocking=True)
            I_trg = batch["target_image"].to(dev, non_blocking=True)
        else:
            p_trg = self.bank.sample(I_org.shape[0], self.gen).to(dev)
            I_trg = None
        out: dict[str, float] = {}
        G_fwd = self.conditioned(batch.get("landmarks"), p_org)
        if self.T is not None:
            return self._distill_step(G_fwd, I_org, p_trg)

        # ---- D step
        self.D.requires_grad_(True)
        with torch.no_grad():
            I_fake = G_fwd(I_org, p_trg)[0]
        C_real, p_real = self.D(I_org)
        C_fake, _ = self.D(I_fake)
        d_terms = {"adv": Lx.adversarial_D(cfg.gan, C_real, C_fake), "exp": Lx.L_exp_D(p_real, p_org)}
        alpha = torch.rand(I_org.shape[0], 1, 1, 1, generator=self.gen).to(dev)
        d_terms["gp"] = Lx.gradient_penalty(lambda z: self.D(z)[0], I_org, I_fake, alpha=alpha)
        L_D = Lx.total_D(d_terms, w)
        self.opt_D.zero_grad(set_to_none=True)
        L_D.backward()
        average_gradients(self.D)
        self.opt_D.step()
        out.update({f"D/{k}": float(v.detach()) for k, v in d_terms.items()})
        out["D/total"] = float(L_D.detach())

        # ---- G step
        if (self.step + 1) % cfg.n_critic == 0:
            self.D.requires_grad_(False)
            I_gen, _, A_fwd = G_fwd(I_org, p_trg)
            C_fake, p_gen = self.D(I_gen)
            with torch.no_grad():
                C_real = self.D(I_org)[0] if cfg.gan == "rad" else None
            # the cycle: I_gen back to p_org (a warp kind's I_gen warps back along the target mesh)
            I_rec, _, A_bwd = self.conditioned(G_fwd.dst, p_trg)(I_gen, p_org)
            g_terms = {"adv": Lx.adversarial_G(cfg.gan, C_real, C_fake), "exp": Lx.L_exp_G(p_gen, p_trg),
                       "rec": Lx.L_rec(I_org, I_rec), "att": Lx.L_att(A_fwd, A_bwd)}
            if self.F is not None:
                with torch.no_grad():
                    f_org = self.F(I_org)
                g_terms["id"] = Lx.L_id(self.F(I_gen), f_org)
            if I_trg is not None and not cfg.no_gen:
                g_terms["gen"] = Lx.L_gen(I_trg, I_gen, I_org)
            L_G = Lx.total_G(g_terms, w)
            self.opt_G.zero_grad(set_to_none=True)
            L_G.backward()
            average_gradients(self.G)
            self.opt_G.step()
            self.D.requires_grad_(True)
            out.update({f"G/{k}": float(v.detach()) for k, v in g_terms.items()})
            out["G/total"] = float(L_G.detach())
        return out

    def _distill_step(self, G_fwd: "Conditioned", I_org: torch.Tensor, p_trg: torch.Tensor) -> dict[str, float]:
        """Distillation: on the same warped frame, G's I_gen and A made the teacher's (L1 each)."""
        kw = G_fwd.inputs(I_org, p_trg)
        with torch.no_grad():
            I_t, _, A_t = self.T(I_org, p_trg, **kw)
        I_gen, _, A = self.G(I_org, p_trg, **kw)
        terms = {"distill": F.l1_loss(I_gen, I_t), "distill_att": F.l1_loss(A, A_t)}
        L_G = terms["distill"] + terms["distill_att"]
        self.opt_G.zero_grad(set_to_none=True)
        L_G.backward()
        average_gradients(self.G)
        self.opt_G.step()
        out = {f"G/{k}": float(v.detach()) for k, v in terms.items()}
        out["G/total"] = float(L_G.detach())
        return out

    # -- the loop
    def _cycle_is_paired(self, c: int) -> bool:
        """In the unpaired phase, whether G-step cycle ``c`` (iterations c*n_critic .. c*n_critic+n_critic-1,
        the last one with the G step) takes paired batches: paired_share of the cycles, evenly spread.
        Whole cycles, so that the paired batches always reach a G step and L_gen."""
        s = self.cfg.paired_share
        return math.floor((c + 1) * s) > math.floor(c * s)

    def phase_at(self, step: int) -> str:
        """Which kind of batch iteration ``step`` takes: "paired" or "unpaired"."""
        if step < self.paired_steps or self._cycle_is_paired(step // self.cfg.n_critic):
            return "paired"
        return "unpaired"

    def batches_before(self, step: int) -> dict[str, int]:
        """How many batches of each kind the iterations before ``step`` took (where a resume starts)."""
        n, P = self.cfg.n_critic, self.paired_steps
        count = {"paired": min(step, P), "unpaired": 0}
        for c in range(P // n, -(-step // n)):  # the cycles that overlap [P, step)
            lo, hi = max(c * n, P), min((c + 1) * n, step)
            if hi > lo:
                count["paired" if self._cycle_is_paired(c) else "unpaired"] += hi - lo
        return count

    def run(self, max_steps: int | None = None) -> dict:
        """Train until the end of the schedule (or ``max_steps`` steps in all); returns a summary."""
        try:
            return self._run(max_steps)
        finally:
            if self._geometry is not None:
                self._geometry.close()
                self._geometry = None

    def _run(self, max_steps: int | None) -> dict:
        cfg = self.cfg
        end = self.total_steps if max_steps is None else min(self.total_steps, max_steps)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
            from torch.utils.tensorboard import SummaryWriter
            self.tb = SummaryWriter(str(self.out / "tb"), purge_step=self.step if self.step else None)
            log.info("training %s: %d paired + %d unpaired steps, batch %d x %d rank(s), gan %s, on %s",
                     cfg.profile, self.paired_steps, self.unpaired_steps, cfg.batch_size, self.world,
                     cfg.gan, self.device)
            if self.step == 0:
                self._validate()
        bar = None
        if cfg.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=end, initial=self.step, desc="train", unit="step", dynamic_ncols=True)
        its: dict = {}  # one stream per kind of batch, opened where the run (or the resume) needs it
        acc: dict[str, list[float]] = {}
        t0 = time.time()
        while self.step < end:
            phase = self.phase_at(self.step)
            if phase not in its:
                its[phase] = self._stream(phase, self.batches_before(self.step)[phase])
            self._lr()
            batch = next(its[phase])
            losses = self.train_step(batch, phase)
            bad = [k for k, v in losses.items() if not math.isfinite(v)]
            if bad:
                raise RuntimeError(f"step {self.step}: non-finite losses {bad}; lower the learning rate?")
            self.step += 1
            if self.keep_history:
                self.history.append({"step": self.step, **losses})
            for k, v in losses.items():
                acc.setdefault(k, []).append(v)
            if self.rank == 0:
                if bar is not None:
                    bar.update(1)
                    if "G/total" in losses:
                        bar.set_postfix(phase=phase, D=f"{losses.get('D/total', np.nan):.3g}",
                                        G=f"{losses['G/total']:.3g}")
                if self.step % cfg.log_every == 0 or self.step == end:
                    for k, v in acc.items():
                        self.tb.add_scalar(k, float(np.mean(v)), self.step)
                    self.tb.add_scalar("lr/G", self.opt_G.param_groups[0]["lr"], self.step)
                    self.tb.add_scalar("lr/D", self.opt_D.param_groups[0]["lr"], self.step)
                    self.tb.add_scalar("phase/paired", float(self.step <= self.paired_steps), self.step)
                    rate = cfg.log_every / max(1e-9, time.time() - t0)
                    self.tb.add_scalar("speed/steps_per_s", rate, self.step)
                    if bar is None:  # a log line stands in for the progress bar
                        log.info("step %d/%d (%s) D %.3g G %.3g, %.2f steps/s", self.step, end, phase,
                                 np.mean(acc.get("D/total", [np.nan])), np.mean(acc.get("G/total", [np.nan])), rate)
                    acc, t0 = {}, time.time()
                if self.step % cfg.sample_every == 0 or self.step == end:
                    self._validate()
            if self.step % cfg.checkpoint_every == 0 or self.step == end:
                self.save()
        if bar is not None:
            bar.close()
        summary = self._summary()
        if self.tb is not None:
            self.tb.close()
        return summary

    def _validate(self) -> dict:
        self.G.eval()
        G_val = self.conditioned(self.val_landmarks, self.val_params)
        figs = regression_figures(G_val, self.D, self.val_images, self.val_params.to(self.device),
                                  self.mean_params)
        # The sign of life of a SliderGAN, < 1 once G shows the parameters it is given, as D_p reads it
        # (G can learn to fool a weak D_p: edit_ratio below is the ground truth where pairs are given).
        figs["follow_ratio"] = follows_params(G_val.rows(slice(0, 64)), self.D, self.val_images[:64],
                                              self.val_params[:64].to(self.device))["ratio"]
        if self.val_pairs is not None:
            vp = self.val_pairs
            figs["edit_ratio"] = edit_ratio(self.conditioned(vp["landmarks"], vp["params"]), vp["image"],
                                            vp["target_params"], vp["target_image"])
        if self.T is not None:   # the training loss on held-out faces, towards other faces' p
            q = self.val_params.roll(1, 0).to(self.device)
            kw = G_val.inputs(self.val_images, q)
            with torch.no_grad():
                I_t = self.T(self.val_images, q, **kw)[0]
                figs["distill"] = float(F.l1_loss(self.G(self.val_images, q, **kw)[0], I_t))
                if kw:   # what painting nothing would score: the warped frame as it is
                    figs["distill_warp"] = float(F.l1_loss(kw["frame"][:, :3], I_t))
        for k, v in figs.items():
            self.tb.add_scalar(f"val/{k}", v, self.step)
        # Images spread over the validation set (consecutive samples often share an identity).
        n = min(self.cfg.sample_images, self.val_images.shape[0])
        pick = np.linspace(0, self.val_images.shape[0] - 1, n).round().astype(int).tolist()
        grid = sample_grid(G_val.rows(pick), self.val_images[pick],
                           self.cfg.sample_params, self.mcfg.n_params)
        import cv2
        from engine.atomic import atomic_path
        path = self.out / "samples" / f"step-{self.step:07d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, png = cv2.imencode(".png", grid[..., ::-1])
        with atomic_path(path) as tmp:
            tmp.write_bytes(png.tobytes())
        self.G.train()
        self.last_val = figs
        return figs

    def _summary(self) -> dict:
        digest = weights_digest(self.G, self.D)
        digests = [digest]
        d = _dist()
        if d is not None and self.world > 1:
            gathered = [None] * self.world
            d.all_gather_object(gathered, digest)
            digests = gathered
        summary = {"step": self.step, "ranks": self.world, "weights_digest": digests,
                   "ranks_agree": len(set(digests)) == 1, "val": getattr(self, "last_val", None)}
        if self.rank == 0:
            (self.out / "summary.json").write_text(json.dumps(summary, indent=1))
            if not summary["ranks_agree"]:
                raise RuntimeError(f"ranks disagree on the weights: {digests}")
        return summary


# --------------------------------------------------------------------------------------- CLI

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML or JSON file of training options (trainer/configs/*.toml)")
    p.add_argument("--profile", help="model profile: tiny, tiny-resnet, realtime, paper")
    p.add_argument("--paired", nargs="+", metavar="DIR", help="paired (synthetic pair) datasets: phase 1")
    p.add_argument("--unpaired", nargs="+", metavar="DIR", help="unpaired datasets: phase 2")
    p.add_argument("--targets", nargs="+", metavar="DIR", help="datasets whose parameters are unpaired targets")
    p.add_argument("--val", metavar="DIR", help="validation dataset (sample grids, figures)")
    p.add_argument("--val-pairs", metavar="DIR", help="held-out paired dataset: logs val/edit_ratio")
    p.add_argument("--init", metavar="CHECKPOINT", help="start from these weights (fine-tuning; step 0)")
    p.add_argument("--teacher", metavar="CHECKPOINT",
                   help="distil this checkpoint's generator into the profile's (its D kept, no GAN)")
    p.add_argument("-o", "--out", help="output folder (checkpoints, tb, samples)")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--lr-d", type=float)
    p.add_argument("--n-critic", type=int)
    p.add_argument("--gan", choices=["rad", "wgp"], help="SliderGAN-RaD (default) or SliderGAN-WGP")
    p.add_argument("--identity", help="identity embedder for L_id: PATH.onnx (ArcFace layout), dlib, or none")
    p.add_argument("--no-id", action="store_true", default=None, help="ablation: drop L_id")
    p.add_argument("--no-gen", action="store_true", default=None, help="ablation: drop L_gen")
    p.add_argument("--paired-epochs", type=float)
    p.add_argument("--unpaired-epochs", type=float)
    p.add_argument("--paired-steps", type=int)
    p.add_argument("--unpaired-steps", type=int)
    p.add_argument("--paired-share", type=float, metavar="S",
                   help="share of the unpaired phase's G-step cycles that take paired batches (L_gen); default 0")
    p.add_argument("--paint-share", type=float, metavar="S",
                   help="share of each batch's images given a painting's look (pairs alike); default 0")
    p.add_argument("--workers", type=int, help="DataLoader workers per rank")
    p.add_argument("--device")
    p.add_argument("--seed", type=int)
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option, e.g. --set weights.att=0.5 --set sample_every=200")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or from the newest checkpoint under --out")


def config_from_args(args) -> TrainConfig:
    cfg = TrainConfig.load(args.config) if args.config else TrainConfig()
    for name in ("profile", "paired", "unpaired", "targets", "val", "val_pairs", "init", "teacher", "out",
                 "batch_size", "lr", "lr_d", "n_critic", "gan", "identity", "no_id", "no_gen", "paired_epochs",
                 "unpaired_epochs", "paired_steps", "unpaired_steps", "paired_share", "paint_share", "workers",
                 "device", "seed", "progress"):
        v = getattr(args, name, None)
        if v is not None:
            setattr(cfg, name, v)
    for kv in args.set:
        if "=" not in kv:
            raise ValueError(f"--set takes KEY=VALUE, not {kv!r}")
        k, v = kv.split("=", 1)
        cfg.override(k.strip(), v.strip())
    cfg.__post_init__()
    return cfg


def init_distributed() -> bool:
    """Join the process group torchrun describes (WORLD_SIZE > 1); False when single-process."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    torch.distributed.init_process_group(backend)
    return True


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    started = init_distributed()
    if _dist() is not None and _dist().get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        cfg = config_from_args(args)
        trainer = Trainer(cfg, resume=args.resume)
        summary = trainer.run()
        if trainer.rank == 0:
            print(json.dumps({k: summary[k] for k in ("step", "ranks", "ranks_agree", "val")}))
        if started:  # no rank tears the group down while another still uses it (gloo aborts then)
            torch.distributed.barrier()
    finally:
        if started:
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":  # python -m trainer.train ... (torchrun -m trainer.train also works)
    ap = argparse.ArgumentParser(prog="slidergan train")
    add_arguments(ap)
    sys.exit(main(ap.parse_args()))
