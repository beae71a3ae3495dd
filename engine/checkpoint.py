"""Checkpoints: a folder holding ``model.safetensors`` (G and D weights, the model config and the
parameter names in its metadata) and, for training, ``training.pt`` (optimizer states, step, RNG
states, training options). Written atomically; loading into another profile is a clear error.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .config import ModelConfig, ProfileMismatchError
from .models import Discriminator, Generator, build_generator

FORMAT = "slidergan-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training.pt"


class CheckpointError(ValueError):
    pass


@dataclass
class Checkpoint:
    config: ModelConfig
    generator: Generator
    discriminator: Discriminator
    param_names: list[str]
    blendshapes: str = ""  # identity (name + hash) of the blendshape model the parameters belong to
    step: int = 0
    meta: dict = field(default_factory=dict)
    training: dict | None = None  # optimizer states etc., only when asked for and present


def default_param_names(cfg: ModelConfig) -> list[str]:
    return [f"exp{i:02d}" for i in range(cfg.n_exp)] + [f"speech{i:02d}" for i in range(cfg.n_speech)]


def save_checkpoint(path, config: ModelConfig, generator: Generator, discriminator: Discriminator, *,
                    param_names=None, blendshapes: str = "", step: int = 0, meta: dict | None = None,
                    training: dict | None = None, half: bool = False) -> Path:
    """Write the checkpoint folder atomically. ``half`` stores weights in float16 (shipping)."""
    path = Path(path)
    names = list(param_names or default_param_names(config))
    if len(names) != config.n_params:
        raise CheckpointError(f"{len(names)} parameter names for a model of {config.n_params} parameters")
    tensors = {}
    for prefix, net in (("G.", generator), ("D.", discriminator)):
        for k, v in net.state_dict().items():
            v = v.detach().cpu().contiguous()
            tensors[prefix + k] = v.half() if half and v.is_floating_point() else v
    metadata = {"format": FORMAT, "version": str(VERSION), "config": config.to_json(),
                "param_names": json.dumps(names), "blendshapes": blendshapes, "step": str(step),
                "meta": json.dumps(meta or {})}
    with atomic_path(path, is_dir=True) as tmp:
        save_file(tensors, str(tmp / MODEL_FILE), metadata=metadata)
        if training is not None:
            torch.save(training, tmp / TRAINING_FILE)
    return path


def read_metadata(path) -> dict:
    """The metadata of a checkpoint's model file, with ``config`` parsed into a ModelConfig."""
    path = Path(path)
    model_file = path / MODEL_FILE if path.is_dir() else path
    if not model_file.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected {model_file})")
    try:
        from safetensors import safe_open
        with safe_open(str(model_file), "pt") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{model_file} is not a readable safetensors file: {e}") from None
    if md.get("format") != FORMAT:
        raise CheckpointError(f"{model_file} is not a SliderGAN checkpoint (format {md.get('format')!r})")
    if int(md.get("version", 0)) != VERSION:
        raise CheckpointError(f"{model_file} has checkpoint version {md.get('version')}, this build reads {VERSION}")
    return {"config": ModelConfig.from_json(md["config"]), "param_names": json.loads(md["param_names"]),
            "blendshapes": md.get("blendshapes", ""), "step": int(md.get("step", 0)),
            "meta": json.loads(md.get("meta", "{}"))}


def load_checkpoint(path, expect: ModelConfig | None = None, training: bool = False,
                    map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint folder. ``expect``: the profile the caller needs (mismatch is an error)."""
    path = Path(path)
    md = read_metadata(path)
    cfg: ModelConfig = md["config"]
    if expect is not None:
        expect.check_same(cfg)
    model_file = path / MODEL_FILE if path.is_dir() else path
    tensors = load_file(str(model_file), device=map_location)
    G, D = build_generator(cfg), Discriminator(cfg)
    for prefix, net in (("G.", G), ("D.", D)):
        state = {k[len(prefix):]: v.float() if v.is_floating_point() else v
                 for k, v in tensors.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ProfileMismatchError(f"{model_file}: weights do not fit profile {cfg.name!r}: {e}") from None
    state = None
    if training:
        tfile = path / TRAINING_FILE
        if not tfile.exists():
            raise CheckpointError(f"{path} holds no training state ({TRAINING_FILE}); it cannot resume training")
        state = torch.load(tfile, map_location=map_location, weights_only=False)
    return Checkpoint(cfg, G, D, md["param_names"], md["blendshapes"], md["step"], md["meta"], state)
