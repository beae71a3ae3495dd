"""``slidergan train-audio``: train the audio model (``engine/audio.py``) on the shared talking clips.

    python -m trainer.audio_labels ../shared/data -o runs/audio-labels      # labels (resumable)
    slidergan train-audio --config trainer/configs/audio-cpu.toml           # -> runs/audio
    slidergan train-audio --config trainer/configs/audio-cpu.toml --resume  # continue exactly

Labels: each clip's speech parameters fitted from its video frames (``trainer.audio_labels``); input:
its soundtrack. The held-out identities (``trainer.holdout``) are never trained on; they are the
validation set. Every 10 ms feature frame k is paired with the label at ``(k + 1) * 10 ms - lookahead``
(``engine.audio``), linearly interpolated between video frames.

Augmentation, each drawn per training window (the choices are recorded in the config):
- **speed** 0.9-1.1: the waveform resampled (pitch moves with it: plain speed perturbation, as in
  Kaldi's), the label times scaled with it;
- **reverberation**: a synthetic room, white noise under an exponential decay (RT60 0.15-0.6 s) after
  a unit direct path; no measured room responses are available here, so this is a stand-in for one;
- **noise**: a random stretch of another file of ``../shared/data/audio`` mixed in at 5-30 dB SNR
  (the dreamtalk noisy-speech files: cafeteria, meeting and office noise with speech; the other
  speech there acts as babble);
- **gain** -30 to +6 dB (clipped to [-1, 1]);
- **silence**: a stretch of the window replaced by silence or faint noise, its labels set to the
  neutral (p = 0, the clip's calm closed mouth): silence closes the mouth.

Loss: mean squared error on the 10 speech parameters, lips_part and jaw_open weighted x3, plus
``corr_weight`` x (1 - Pearson correlation) of those two over each window (the correlation term keeps
the prediction from shrinking towards the mean, which plain regression of an uncertain target does).

A run's folder: ``checkpoints/step-N`` (``audio.safetensors`` + ``training.safetensors``: optimizer,
step, RNG states; written atomically; ``--resume`` continues exactly), ``tb/`` (TensorBoard: loss
terms, lr, held-out correlation and amplitude) and ``summary.json``. The model is the last step's
(the held-out figures are watched, not used to pick a step).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import random
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from engine.audio import (FRAME_RATE, HOP, SAMPLE_RATE, AudioConfig, build_audio_net, log_mel, read_audio,
                          save_audio_model)
from trainer.train import find_latest_checkpoint, prune_checkpoints

log = logging.getLogger(__name__)
KEY_PARAMS = ("lips_part", "jaw_open")


@dataclass
class AudioTrainConfig:
    labels: str = "runs/audio-labels"
    data: str = "../shared/data"
    noise: list = field(default_factory=lambda: ["audio/dreamtalk_noisy_*.wav", "audio/sadtalker_*.wav",
                                                 "audio/hallo_*.wav", "audio/musetalk_*.wav"])
    out: str = "runs/audio"
    steps: int = 1500
    batch_size: int = 16
    window_s: float = 2.0
    lr: float = 2e-3
    weight_decay: float = 1e-4
    key_weight: float = 3.0
    corr_weight: float = 0.5
    channels: int = 96
    lookahead_frames: int = 6
    dropout: float = 0.0
    bottleneck: int = 0
    spec_masks: int = 0            # SpecAugment: this many time and this many frequency masks per window
    label_smooth_frames: int = 0   # training targets averaged over +-this many 10 ms frames (evaluation: raw)
    align_lags: bool = False       # each training clip's labels moved to one lag of sound behind lips:
    align_lag_s: float | None = None   # this one (s), or None: the training clips' median
    p_speed: float = 0.5
    p_reverb: float = 0.3
    p_noise: float = 0.5
    p_silence: float = 0.2
    snr_db: list = field(default_factory=lambda: [5.0, 30.0])
    gain_db: list = field(default_factory=lambda: [-30.0, 6.0])
    checkpoint_every: int = 250
    keep_checkpoints: int = 2
    val_every: int = 250
    log_every: int = 25
    threads: int = 2
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_toml(cls, path) -> "AudioTrainConfig":
        d = tomllib.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        bad = sorted(set(d) - known)
        if bad:
            raise ValueError(f"{path}: unknown option(s) {bad}; known: {sorted(known)}")
        return cls(**d)


# -------------------------------------------------------------------------------------------- data
@dataclass
class Clip:
    name: str
    wave: np.ndarray          # mono float32, 16 kHz; sample 0 = audio time 0
    times: np.ndarray         # label times on the audio clock (s)
    speech: np.ndarray        # (T, 10) labels
    held_out: bool


def load_clips(labels: str | Path) -> tuple[list[Clip], list[str]]:
    """The labelled clips of ``trainer.audio_labels`` (its manifest) and the speech parameter names."""
    from engine.tracks import load_track
    labels = Path(labels)
    mf = labels / "manifest.json"
    if not mf.exists():
        raise FileNotFoundError(f"no labels at {labels} (run: python -m trainer.audio_labels ../shared/data -o "
                                f"{labels})")
    clips, names = [], None
    for e in json.loads(mf.read_text())["clips"]:
        tr = load_track(labels / e["track"], check_audio=False)
        wave = read_audio(labels / e["audio"])
        names = names or list(tr.speech_names)
        clips.append(Clip(e["name"], wave, tr.times + tr.audio_offset, tr.speech.copy(),
                          bool(e["held_out"])))
    return clips, names


def frame_labels(clip: Clip, n_frames: int, start_s: float, lookahead_frames: int, speed: float = 1.0):
    """Labels of feature frames 0..n-1 of a window starting at ``start_s`` of the clip's audio,
    played at ``speed``: frame k predicts audio time ``start + ((k + 1) / 100 - lookahead) * speed``."""
    t = start_s + ((np.arange(n_frames) + 1) / FRAME_RATE - lookahead_frames / FRAME_RATE) * speed
    y = np.stack([np.interp(t, clip.times, clip.speech[:, i]) for i in range(clip.speech.shape[1])], 1)
    valid = (t >= clip.times[0]) & (t <= clip.times[-1])
    return y.astype(np.float32), valid


def _resample(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (linear interpolation; the band above 8 kHz / factor is small
    in speech)."""
    n = int(len(x) / factor)
    return np.interp(np.arange(n) * factor, np.arange(len(x)), x).astype(np.float32)


def synthetic_reverb(rng: np.random.Generator, rt60: float) -> np.ndarray:
    """A synthetic room impulse response: a unit direct path, then white noise under an exponential
    decay reaching -60 dB at ``rt60`` s, scaled to a direct-to-reverberant ratio of 0-10 dB."""
    n = int(rt60 * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.91 * t / rt60)
    tail[: int(0.002 * SAMPLE_RATE)] = 0.0
    drr_db = rng.uniform(0, 10)
    tail *= 10 ** (-drr_db / 20) / max(np.sqrt(np.sum(tail ** 2)), 1e-9)
    tail[0] = 1.0
    return tail.astype(np.float32)


class Sampler:
    """Random augmented training windows: (mel (B, T, 64), labels (B, T, 10), mask (B, T))."""

    def __init__(self, cfg: AudioTrainConfig, clips: list[Clip], noise: list[np.ndarray], rng: np.random.Generator):
        self.cfg, self.clips, self.noise, self.rng = cfg, clips, noise, rng
        w = np.array([len(c.wave) for c in clips], np.float64)
        self.weights = w / w.sum()

    def window(self):
        cfg, rng = self.cfg, self.rng
        n_frames = int(cfg.window_s * FRAME_RATE)
        n = n_frames * HOP
        clip = self.clips[rng.choice(len(self.clips), p=self.weights)]
        speed = float(rng.uniform(0.9, 1.1)) if rng.random() < cfg.p_speed else 1.0
        span = int(math.ceil(n * speed)) + 2
        lo = max(0, int(clip.times[0] * SAMPLE_RATE) - HOP * 10)
        hi = max(lo + 1, min(len(clip.wave), int(clip.times[-1] * SAMPLE_RATE)) - span)
        s0 = int(rng.integers(lo, hi))
        x = clip.wave[s0:s0 + span]
        x = np.pad(x, (0, max(0, span - len(x))))
        if speed != 1.0:
            x = _resample(x, speed)
        x = x[:n]
        x = np.pad(x, (0, n - len(x)))
        y, valid = frame_labels(clip, n_frames, s0 / SAMPLE_RATE, cfg.lookahead_frames, speed)
        if rng.random() < cfg.p_reverb:
            ir = synthetic_reverb(rng, float(rng.uniform(0.15, 0.6)))
            m = 1 << (n + len(ir) - 2).bit_length()       # FFT convolution (8x faster than direct here)
            x = np.fft.irfft(np.fft.rfft(x, m) * np.fft.rfft(ir, m), m)[:n].astype(np.float32)
        if rng.random() < cfg.p_silence:
            a = int(rng.integers(0, n_frames - 20))
            b = int(min(n_frames, a + rng.integers(30, 150)))
            x[a * HOP:b * HOP] = 0.0
            # the mouth closes over the silence once the look-ahead has seen it
            y[a + cfg.lookahead_frames:b] = 0.0
        if self.noise and rng.random() < cfg.p_noise:
            src = self.noise[int(rng.integers(len(self.noise)))]
            k = int(rng.integers(0, max(1, len(src) - n)))
            nz = np.resize(src[k:k + n], n)
            ps, pn = float(np.mean(x ** 2)) + 1e-10, float(np.mean(nz ** 2)) + 1e-10
            snr = rng.uniform(*cfg.snr_db)
            x = x + nz * np.sqrt(ps / pn / 10 ** (snr / 10))
        if rng.random() < cfg.p_silence * 0.5:   # faint background in the silences too
            x = x + rng.standard_normal(n).astype(np.float32) * 10 ** (rng.uniform(-80, -50) / 20)
        peak = float(np.max(np.abs(x))) + 1e-9
        gain = 10 ** (rng.uniform(*cfg.gain_db) / 20) * min(1.0, 0.5 / peak)
        x = np.clip(x * gain, -1, 1).astype(np.float32)
        mel = log_mel(x)
        for _ in range(cfg.spec_masks):
            # SpecAugment (Park et al. 2019), masks filled with the window's mean (not silence: a masked
            # stretch must not teach that silence goes with an open mouth)
            t0, f0 = int(rng.integers(0, n_frames)), int(rng.integers(0, mel.shape[1]))
            mel[t0:t0 + int(rng.integers(1, 12))] = mel.mean(0)
            mel[:, f0:f0 + int(rng.integers(1, 10))] = mel[:, f0:f0 + 10].mean()
        if cfg.label_smooth_frames:
            k = 2 * cfg.label_smooth_frames + 1
            yp = np.pad(y, ((cfg.label_smooth_frames,) * 2, (0, 0)), mode="edge")
            y = np.stack([np.convolve(yp[:, i], np.ones(k) / k, mode="valid") for i in range(y.shape[1])], 1)
        return mel, y.astype(np.float32), valid

    def batch(self):
        items = [self.window() for _ in range(self.cfg.batch_size)]
        return tuple(torch.from_numpy(np.stack(a)) for a in zip(*items))


def load_noise(cfg: AudioTrainConfig) -> list[np.ndarray]:
    """Noise and babble: the first 30 s of each file matching ``cfg.noise`` under ``cfg.data``."""
    data = Path(cfg.data)
    files = sorted({p for pat in cfg.noise for p in data.glob(pat)})
    return [read_audio(p, max_seconds=30) for p in files]


def align_lags(clips: list[Clip], names: list[str], ref: float | None = None) -> dict:
    """Move each clip's labels so that its sound comes ``ref`` s later than its lips (None: the clips'
    median; ``trainer.audio_labels.av_lag``; only clips whose lag is clear): the sources were recorded
    or encoded with different offsets (-0.23 to +0.23 s among the training clips), which, left in,
    teach the model a timing smeared over 0.4 s. Returns the shifts (s) by clip name. (Tried both ways
    on the shipped config: no better on the held-out clips; README, "Audio-driven lips".)"""
    from trainer.audio_labels import av_lag, clear_lag
    li = names.index("lips_part")
    lags = {c.name: av_lag(c.wave, c.times, c.speech[:, li]) for c in clips}
    clear = [lag for lag, corr in lags.values() if clear_lag(lag, corr)]
    if not clear:
        return {}
    ref = float(np.median(clear)) if ref is None else float(ref)
    shifts = {}
    for c in clips:
        if clear_lag(*lags[c.name]):
            shifts[c.name] = round(lags[c.name][0] - ref, 3)
            c.times = c.times + shifts[c.name]
    log.info("labels re-timed to a lag of %.3f s: %s", ref, shifts)
    return shifts


# ------------------------------------------------------------------------------------------- losses
def pearson(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-row correlation of a and b (B, T) over the masked frames."""
    m = mask.float()
    n = m.sum(1).clamp_min(1)
    am = a - (a * m).sum(1, keepdim=True) / n[:, None]
    bm = b - (b * m).sum(1, keepdim=True) / n[:, None]
    cov = (am * bm * m).sum(1)
    return cov / ((am ** 2 * m).sum(1).sqrt() * (bm ** 2 * m).sum(1).sqrt() + 1e-6)


def loss_terms(pred, y, mask, key_idx, cfg: AudioTrainConfig) -> dict:
    w = torch.ones(y.shape[-1])
    w[key_idx] = cfg.key_weight
    m = mask.float()[..., None]
    mse = (((pred - y) ** 2) * w * m).sum() / (m.sum() * w.sum() / len(w)).clamp_min(1) / len(w)
    # the correlation term only where a window has motion to correlate with
    corr = []
    for i in key_idx:
        c = pearson(pred[..., i], y[..., i], mask)
        moving = (y[..., i] * mask).std(1) > 0.03
        if moving.any():
            corr.append((1 - c[moving]).mean())
    corr_l = torch.stack(corr).mean() if corr else torch.zeros(())
    return {"mse": mse, "corr": corr_l, "total": mse + cfg.corr_weight * corr_l}


# ------------------------------------------------------------------------------------------ evaluation
def _corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN where either side does not vary."""
    a, b = a - a.mean(), b - b.mean()
    den = float(np.sqrt((a ** 2).sum() * (b ** 2).sum()))
    return float((a * b).sum() / den) if den > 1e-12 else float("nan")


def evaluate_clips(net, clips: list[Clip], names: list[str]) -> dict:
    """Per held-out clip and pooled: correlation and amplitude ratio (std predicted / std fitted) of
    each key parameter at the video frames, the prediction made by streaming the clip's audio."""
    from engine.audio import predict_samples
    out: dict = {"clips": {}}
    pooled = {k: ([], []) for k in KEY_PARAMS}
    net.eval()
    for c in clips:
        t, p = predict_samples(c.wave, net)
        row = {}
        for k in KEY_PARAMS:
            i = names.index(k)
            inside = (c.times >= t[0]) & (c.times <= t[-1])
            fit = c.speech[inside, i]
            pred = np.interp(c.times[inside], t, p[:, i])
            row[k] = {"corr": _corr(pred, fit), "amplitude": float(pred.std() / max(fit.std(), 1e-9))}
            pooled[k][0].append(pred - pred.mean())
            pooled[k][1].append(fit - fit.mean())
        out["clips"][c.name] = row
    for k, (a, b) in pooled.items():
        a, b = np.concatenate(a), np.concatenate(b)
        out[k] = {"corr": _corr(a, b), "amplitude": float(a.std() / max(b.std(), 1e-9)),
                  "corr_mean_over_clips": float(np.mean([r[k]["corr"] for r in out["clips"].values()])),
                  "amplitude_mean_over_clips": float(np.mean([r[k]["amplitude"] for r in out["clips"].values()]))}
    net.train()
    return out


# ------------------------------------------------------------------------------------------- training
def save_training_checkpoint(folder: Path, net, opt, sched, step: int, rng: np.random.Generator, cfg, meta):
    from safetensors.torch import save_file

    from engine.atomic import atomic_path
    from engine.checkpoint import TRAINING_FILE, encode_training_state
    state = {"step": step, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": {"numpy_gen": json.dumps(rng.bit_generator.state), "torch": torch.get_rng_state(),
                     "python": json.dumps(random.getstate()[1]), "python_version": random.getstate()[0],
                     "python_gauss": random.getstate()[2]},
             "train_config": cfg.to_dict()}
    tensors, md = encode_training_state(state)
    with atomic_path(folder, is_dir=True) as tmp:
        save_audio_model(tmp / "audio.safetensors", net, meta={**meta, "step": step})
        save_file(tensors, str(tmp / TRAINING_FILE), metadata=md)


def train(cfg: AudioTrainConfig, resume=None, progress: bool = True) -> dict:
    from engine.blendshapes import load_default_face_model
    from engine.checkpoint import load_training_state
    from engine.audio import load_audio_model
    torch.set_num_threads(max(1, int(cfg.threads)))
    out = Path(cfg.out)
    clips, names = load_clips(cfg.labels)
    train_clips = [c for c in clips if not c.held_out]
    val_clips = [c for c in clips if c.held_out]
    if not train_clips:
        raise ValueError(f"no training clips in {cfg.labels} (all held out?)")
    noise = load_noise(cfg)
    face = load_default_face_model()
    acfg = AudioConfig(channels=cfg.channels, lookahead_frames=cfg.lookahead_frames, dropout=cfg.dropout,
                       bottleneck=cfg.bottleneck,
                       out_names=list(names),
                       blendshapes=face.describe() if hasattr(face, "describe") else "")
    if isinstance(acfg.blendshapes, dict):
        acfg.blendshapes = json.dumps(acfg.blendshapes, sort_keys=True, default=str)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = build_audio_net(acfg)
    # feature normalisation from the training audio (fixed: causal, no per-utterance statistics)
    mel = np.concatenate([log_mel(c.wave) for c in train_clips])
    net.mel_mean.copy_(torch.from_numpy(mel.mean(0)))
    net.mel_std.copy_(torch.from_numpy(mel.std(0) + 1e-3))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(cfg.steps, 1), pct_start=0.1)
    step = 0
    if resume:
        path = find_latest_checkpoint(out) if resume is True else Path(resume)
        if path is None:
            from engine.checkpoint import CheckpointError
            raise CheckpointError(f"--resume: no checkpoint under {out / 'checkpoints'}")
        loaded = load_audio_model(path / "audio.safetensors")
        net.load_state_dict(loaded.state_dict())
        st = load_training_state(path)
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        step = int(st["step"])
        rng.bit_generator.state = json.loads(st["rng"]["numpy_gen"])
        torch.set_rng_state(st["rng"]["torch"])
        random.setstate((st["rng"]["python_version"], tuple(json.loads(st["rng"]["python"])),
                         st["rng"]["python_gauss"]))
        log.info("resumed from %s at step %d", path, step)
    shifts = align_lags(train_clips, names, cfg.align_lag_s) if cfg.align_lags else {}
    sampler = Sampler(cfg, train_clips, noise, rng)
    key_idx = [names.index(k) for k in KEY_PARAMS]
    meta = {"train_clips": [c.name for c in train_clips], "held_out_clips": [c.name for c in val_clips],
            "noise_files": len(noise), "train_config": cfg.to_dict(), "label_shifts_s": shifts,
            "features": "log-mel 64 bands, 25 ms Hann window, 10 ms hop, own NumPy implementation"}
    from torch.utils.tensorboard import SummaryWriter
    tb = SummaryWriter(str(out / "tb"), purge_step=step if step else None)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=step, desc="train-audio", unit="step", dynamic_ncols=True)
    net.train()
    t0 = time.time()
    last_val = None
    while step < cfg.steps:
        mel_b, y_b, m_b = sampler.batch()
        pred = net(mel_b)
        terms = loss_terms(pred, y_b, m_b, key_idx, cfg)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{terms['total'].item():.4f}")
        if step % cfg.log_every == 0:
            for k, v in terms.items():
                tb.add_scalar(f"loss/{k}", v.item(), step)
            tb.add_scalar("lr", sched.get_last_lr()[0], step)
        if val_clips and (step % cfg.val_every == 0 or step == cfg.steps):
            last_val = evaluate_clips(net, val_clips, names)
            for k in KEY_PARAMS:
                tb.add_scalar(f"val/{k}_corr", last_val[k]["corr"], step)
                tb.add_scalar(f"val/{k}_amplitude", last_val[k]["amplitude"], step)
            log.info("step %d: val lips corr %.3f amp %.3f", step, last_val["lips_part"]["corr"],
                     last_val["lips_part"]["amplitude"])
        if step % cfg.checkpoint_every == 0 or step == cfg.steps:
            written = out / "checkpoints" / f"step-{step:07d}"
            save_training_checkpoint(written, net, opt, sched, step, rng, cfg, meta)
            prune_checkpoints(written, cfg.keep_checkpoints)
    if bar is not None:
        bar.close()
    tb.close()
    summary = {"steps": step, "seconds_this_run": round(time.time() - t0, 1), "validation": last_val,
               "checkpoint": str(find_latest_checkpoint(out))}
    from engine.atomic import write_text_atomic
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="TOML file of AudioTrainConfig options")
    p.add_argument("--labels", default=None, help="labels folder (python -m trainer.audio_labels)")
    p.add_argument("-o", "--out", default=None, help="run folder (default runs/audio)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other option of the config (JSON value)")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CHECKPOINT",
                   help="resume from CHECKPOINT, or from the newest checkpoint under --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args) -> AudioTrainConfig:
    cfg = AudioTrainConfig.from_toml(args.config) if args.config else AudioTrainConfig()
    for k in ("labels", "out", "steps", "batch_size", "lr", "threads", "seed"):
        v = getattr(args, k)
        if v is not None:
            setattr(cfg, k, v)
    known = {f.name for f in fields(cfg)}
    for kv in args.set:
        if "=" not in kv:
            raise ValueError(f"--set takes KEY=VALUE, not {kv!r}")
        k, v = kv.split("=", 1)
        if k not in known:
            raise ValueError(f"--set: unknown option {k!r}; known: {sorted(known)}")
        try:
            setattr(cfg, k, json.loads(v))
        except json.JSONDecodeError:
            setattr(cfg, k, v)
    return cfg


def main(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    s = train(config_from_args(args), resume=args.resume, progress=not args.quiet)
    v = s["validation"]
    if v:
        print("held out: " + ", ".join(f"{k} corr {v[k]['corr']:.3f} amplitude {v[k]['amplitude']:.2f}"
                                       for k in KEY_PARAMS))
    print(f"checkpoint: {s['checkpoint']}")
    return 0
