"""Checkpoints: a folder holding ``model.safetensors`` (G and D weights, the model config and the
parameter names in its metadata) and, for training, ``training.safetensors`` (optimizer states,
step, RNG states, training options). Written atomically; loading into another profile is a clear
error.

Integrity, checked on every load:
- ``model.safetensors`` records the sha256 of its tensors (names, dtypes, shapes and bytes) in its
  metadata (``sha256``); a file whose tensors no longer match is refused as corrupt. Files written
  before the checksum existed carry none and still load.
- every floating-point weight of G and D must be finite: NaN or inf anywhere is refused, naming the
  file and the first bad tensor (checked also where there is no checksum).
- the training state is never unpickled. Tensors (optimizer moments, RNG states) go into
  ``training.safetensors``; everything else (step, numbers, options, the structure of nested
  dicts, lists and tuples) into JSON in that file's metadata, with its own checksum. A ``training.pt``
  (the pickle of earlier versions) is never read: resuming from such a checkpoint is refused with a
  message saying so (``--init`` still takes its weights).
"""
from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors import SafetensorError

from .atomic import atomic_path
from .config import ModelConfig, ProfileMismatchError

if TYPE_CHECKING:       # torch is imported where weights are read or written: reading metadata needs none
    import torch

    from .models import Discriminator, Generator

FORMAT = "slidergan-checkpoint"
VERSION = 1
MODEL_FILE = "model.safetensors"
TRAINING_FILE = "training.safetensors"
TRAINING_FORMAT = "slidergan-training-state"
TRAINING_VERSION = 1
LEGACY_TRAINING_FILE = "training.pt"  # a pickle (versions before training.safetensors): never loaded


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


def tensors_sha256(tensors: dict[str, torch.Tensor], extra: bytes = b"") -> str:
    """sha256 over the tensors in name order: name, dtype, shape and raw bytes of each (then ``extra``).
    The same tensors give the same digest whatever file layout or metadata they are stored with."""
    import torch
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    h.update(extra)
    return h.hexdigest()


def save_checkpoint(path, config: ModelConfig, generator: Generator, discriminator: Discriminator, *,
                    param_names=None, blendshapes: str = "", step: int = 0, meta: dict | None = None,
                    training: dict | None = None, half: bool = False) -> Path:
    """Write the checkpoint folder atomically. ``half`` stores weights in float16 (shipping).

    ``training``: the state to resume from, nested dicts / lists / tuples of tensors, NumPy arrays,
    numbers, strings, bytes and None (stored without pickle, see the module docstring)."""
    from safetensors.torch import save_file
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
                "meta": json.dumps(meta or {}), "sha256": tensors_sha256(tensors)}
    train_tensors = train_md = None
    if training is not None:  # encoded before anything is written: an unstorable state leaves no trace
        train_tensors, train_md = encode_training_state(training)
    with atomic_path(path, is_dir=True) as tmp:
        save_file(tensors, str(tmp / MODEL_FILE), metadata=metadata)
        if training is not None:
            save_file(train_tensors, str(tmp / TRAINING_FILE), metadata=train_md)
    return path


def _model_file(path: Path) -> Path:
    return path / MODEL_FILE if path.is_dir() else path


def _raw_metadata(path) -> tuple[Path, dict]:
    path = Path(path)
    model_file = _model_file(path)
    if not model_file.exists():
        raise CheckpointError(f"no checkpoint at {path} (expected {model_file})")
    return model_file, _header(model_file, FORMAT, VERSION, "SliderGAN checkpoint", "checkpoint version")


def _header(file: Path, fmt: str, version: int, what: str, version_name: str) -> dict:
    """A safetensors file's metadata, checked to be of ``fmt`` at ``version``."""
    try:
        from safetensors import safe_open
        with safe_open(str(file), "numpy") as f:
            md = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file: {e}") from None
    if md.get("format") != fmt:
        raise CheckpointError(f"{file} is not a {what} (format {md.get('format')!r})")
    if str(md.get("version")) != str(version):
        raise CheckpointError(f"{file} has {version_name} {md.get('version')}, this build reads {version}")
    return md


def read_metadata(path) -> dict:
    """The metadata of a checkpoint's model file, with ``config`` parsed into a ModelConfig.
    ``sha256``: the checksum of its tensors recorded at save time ("" for files older than it)."""
    model_file, md = _raw_metadata(path)
    try:
        return {"config": ModelConfig.from_json(md["config"]), "param_names": json.loads(md["param_names"]),
                "blendshapes": md.get("blendshapes", ""), "step": int(md.get("step", 0)),
                "meta": json.loads(md.get("meta", "{}")), "sha256": md.get("sha256", "")}
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{model_file} has broken checkpoint metadata ({type(e).__name__}: {e})") from None


def _load_tensors(file: Path, device: str = "cpu") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    try:
        return load_file(str(file), device=device)
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{file} is not a readable safetensors file (corrupt or truncated?): {e}") from None


def _check_sha256(file: Path, tensors: dict, expected: str, extra: bytes = b"") -> None:
    if not expected:
        return
    actual = tensors_sha256(tensors, extra)
    if actual != expected:
        raise CheckpointError(f"{file} is corrupt: the sha256 of its tensors ({actual[:16]}...) is not the one "
                              f"recorded when it was written ({expected[:16]}...); restore it from a copy")


def check_finite(file, named_tensors) -> None:
    """CheckpointError naming ``file`` and the first tensor holding NaN or inf."""
    import torch
    for name, t in named_tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise CheckpointError(f"{file}: weights are not finite: tensor {name!r} holds {bad} NaN/inf value(s) "
                                  f"of {t.numel()} (first kind: {kind}); the file is damaged or its training "
                                  f"diverged")


def load_checkpoint(path, expect: ModelConfig | None = None, training: bool = False,
                    map_location: str = "cpu") -> Checkpoint:
    """Load a checkpoint folder. ``expect``: the profile the caller needs (mismatch is an error).

    The weights' checksum (when recorded) and finiteness are checked; ``training`` also reads the
    training state from ``training.safetensors`` (never a pickle)."""
    path = Path(path)
    md = read_metadata(path)
    cfg: ModelConfig = md["config"]
    if expect is not None:
        expect.check_same(cfg)
    model_file = _model_file(path)
    tensors = _load_tensors(model_file, map_location)
    _check_sha256(model_file, tensors, md["sha256"])
    from .models import Discriminator, build_generator
    G, D = build_generator(cfg), Discriminator(cfg)
    # G's tensors, then D's, in module order: "the first bad tensor" is the first in the network.
    order = [p + k for p, net in (("G.", G), ("D.", D)) for k in net.state_dict()]
    known = set(order)
    check_finite(model_file, [(k, tensors[k]) for k in order if k in tensors] +
                 [(k, v) for k, v in tensors.items() if k not in known])
    for prefix, net in (("G.", G), ("D.", D)):
        state = {k[len(prefix):]: v.float() if v.is_floating_point() else v
                 for k, v in tensors.items() if k.startswith(prefix)}
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise ProfileMismatchError(f"{model_file}: weights do not fit profile {cfg.name!r}: {e}") from None
    state = None
    if training:
        state = load_training_state(path)
    return Checkpoint(cfg, G, D, md["param_names"], md["blendshapes"], md["step"], md["meta"], state)


# ============================================================================ training state, no pickle
#
# A nested value becomes JSON; tensors and arrays are replaced by references into the safetensors
# file. Tagged JSON objects (keys starting with "__") stand for what JSON has no form of: tuples, dicts
# with non-string keys (optimizer states are keyed by parameter index), bytes, non-finite floats,
# NumPy scalars. A plain dict never has such keys (one that does is stored tagged), so decoding is exact.

def encode_training_state(state) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, safetensors metadata) for ``state``; CheckpointError for a value it cannot store."""
    import torch
    tensors: dict[str, torch.Tensor] = {}

    def enc(x, where: str):
        if isinstance(x, torch.Tensor):
            key = f"t{len(tensors):06d}"
            tensors[key] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": key}
        if isinstance(x, np.ndarray):
            if x.dtype.hasobject:
                raise CheckpointError(f"training state: {where} is an object array, which cannot be stored "
                                      f"without pickle")
            key = f"t{len(tensors):06d}"
            tensors[key] = torch.from_numpy(np.ascontiguousarray(x).copy())
            return {"__ndarray__": key, "dtype": x.dtype.str}
        if isinstance(x, np.generic):
            return {"__npscalar__": x.dtype.str, "value": enc(x.item(), where)}
        if x is None or isinstance(x, (bool, int, str)):
            return x
        if isinstance(x, float):
            return x if math.isfinite(x) else {"__float__": repr(x)}
        if isinstance(x, (bytes, bytearray)):
            return {"__bytes__": bytes(x).hex()}
        if isinstance(x, tuple):
            return {"__tuple__": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if isinstance(x, list):
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        if isinstance(x, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in x):
                return {k: enc(v, f"{where}.{k}") for k, v in x.items()}
            return {"__dict__": [[enc(k, f"{where} key"), enc(v, f"{where}[{k!r}]")] for k, v in x.items()]}
        raise CheckpointError(f"training state: {where} is a {type(x).__name__}, which cannot be stored without "
                              f"pickle (tensors, arrays, numbers, strings, bytes, lists, tuples and dicts only)")

    doc = json.dumps(enc(state, "state"), allow_nan=False, separators=(",", ":"))
    md = {"format": TRAINING_FORMAT, "version": str(TRAINING_VERSION), "state": doc,
          "sha256": tensors_sha256(tensors, doc.encode())}
    return tensors, md


def decode_training_state(doc: str, tensors: dict[str, torch.Tensor], where: str = "training state"):
    def dec(x):
        if isinstance(x, list):
            return [dec(v) for v in x]
        if not isinstance(x, dict):
            return x
        if "__tensor__" in x:
            return tensors[x["__tensor__"]]
        if "__ndarray__" in x:
            a = tensors[x["__ndarray__"]].numpy()
            return a.astype(np.dtype(x["dtype"]), copy=False).copy()
        if "__npscalar__" in x:
            return np.dtype(x["__npscalar__"]).type(dec(x["value"]))
        if "__float__" in x:
            return float(x["__float__"])
        if "__bytes__" in x:
            return bytes.fromhex(x["__bytes__"])
        if "__tuple__" in x:
            return tuple(dec(v) for v in x["__tuple__"])
        if "__dict__" in x:
            return {_hashable(dec(k)): dec(v) for k, v in x["__dict__"]}
        return {k: dec(v) for k, v in x.items()}

    try:
        return dec(json.loads(doc))
    except (KeyError, ValueError, TypeError) as e:
        raise CheckpointError(f"{where} is malformed ({type(e).__name__}: {e})") from None


def _hashable(k):
    return tuple(_hashable(v) for v in k) if isinstance(k, (list, tuple)) else k


def load_training_state(path) -> dict:
    """The training state of a checkpoint folder, from ``training.safetensors`` (no unpickling)."""
    path = Path(path)
    tfile = path / TRAINING_FILE
    if not tfile.exists():
        if (path / LEGACY_TRAINING_FILE).exists():
            raise CheckpointError(
                f"{path} holds its training state only as {LEGACY_TRAINING_FILE}, a pickle, which is never loaded "
                f"(unpickling a file can run any code); it cannot resume training: start a new run from its "
                f"weights with --init {path}")
        raise CheckpointError(f"{path} holds no training state ({TRAINING_FILE}); it cannot resume training")
    md = _header(tfile, TRAINING_FORMAT, TRAINING_VERSION, "SliderGAN training state", "training-state version")
    if "state" not in md:
        raise CheckpointError(f"{tfile} lacks its state record")
    tensors = _load_tensors(tfile, "cpu")
    _check_sha256(tfile, tensors, md.get("sha256", ""), md["state"].encode())
    return decode_training_state(md["state"], tensors, str(tfile))
