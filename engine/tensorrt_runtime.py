"""The TensorRT backend of ``engine.inference``: deserialise engines and run them (NVIDIA GPUs only).

``TensorRTEngine(plan)`` deserialises a plan and runs it on CUDA tensors (device buffers are torch
CUDA tensors, the stream is torch's current stream); ``TensorRTRunner`` holds the engines of one
export folder (``slidergan export --format tensorrt``, written by ``exporters/tensorrt.py``, which
builds the plans and imports this module; the engine never imports ``exporters``).

Importing this module never needs tensorrt. Without an NVIDIA GPU (or without the tensorrt
package) loading raises ``TensorRTUnavailable`` with one sentence saying why. Engines are specific
to the GPU model and TensorRT version that built them.
"""
from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import torch

from .inference import MANIFEST, InferenceError, ModelInfo, read_export


class TensorRTUnavailable(RuntimeError):
    """TensorRT cannot run here (no NVIDIA GPU, or the tensorrt package is missing)."""


def unavailable_reason() -> str | None:
    """None when TensorRT can run; else one sentence saying why not."""
    import importlib.util
    has_trt = importlib.util.find_spec("tensorrt") is not None
    has_gpu = torch.cuda.is_available()
    if not has_gpu and not has_trt:
        return ("TensorRT needs an NVIDIA GPU with CUDA and the tensorrt package "
                "(pip install 'slidergan[tensorrt]'), and this machine has neither.")
    if not has_gpu:
        return "TensorRT needs an NVIDIA GPU with CUDA, and none is visible on this machine."
    if not has_trt:
        return "TensorRT is not installed: pip install 'slidergan[tensorrt]' (needs an NVIDIA GPU)."
    return None


def require_tensorrt():
    reason = unavailable_reason()
    if reason:
        raise TensorRTUnavailable(reason)
    import tensorrt as trt
    return trt


_LOGGER = None


def _logger(trt):
    global _LOGGER
    if _LOGGER is None:
        _LOGGER = trt.Logger(trt.Logger.WARNING)
    return _LOGGER


class TensorRTEngine:
    """One deserialised engine and its execution context; ``run`` takes and returns numpy arrays."""

    def __init__(self, plan: bytes, name: str = "engine"):
        trt = require_tensorrt()
        self.trt = trt
        self.runtime = trt.Runtime(_logger(trt))
        self.engine = self.runtime.deserialize_cuda_engine(plan)
        if self.engine is None:
            raise InferenceError(f"TensorRT cannot deserialise {name} (built by another TensorRT version "
                                 f"or for another GPU?); export it again on this machine")
        self.context = self.engine.create_execution_context()
        self._lock = threading.Lock()     # one context runs one inference at a time (render's workers, sessions)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [t for t in names if self.engine.get_tensor_mode(t) == trt.TensorIOMode.INPUT]
        self.outputs = [t for t in names if self.engine.get_tensor_mode(t) == trt.TensorIOMode.OUTPUT]
        self.dtypes = {t: torch.from_numpy(np.zeros(0, trt.nptype(self.engine.get_tensor_dtype(t)))).dtype
                       for t in names}
        self.max_batch = self.engine.get_tensor_profile_shape(self.inputs[0], 0)[2][0]

    def run(self, feed: dict, outputs: list[str] | None = None, as_numpy: bool = True) -> list:
        """feed: name -> numpy array or torch tensor (CUDA tensors are used in place)."""
        b = next(iter(feed.values())).shape[0]
        if b > self.max_batch:  # the optimisation profile's limit: run in chunks
            parts = [self.run({k: v[i:i + self.max_batch] for k, v in feed.items()}, outputs, as_numpy)
                     for i in range(0, b, self.max_batch)]
            cat = np.concatenate if as_numpy else torch.cat
            return [cat(x) for x in zip(*parts)]
        keep = [torch.as_tensor(feed[name]).to("cuda", self.dtypes[name]).contiguous() for name in self.inputs]
        with self._lock:
            for name, t in zip(self.inputs, keep):
                self.context.set_input_shape(name, tuple(t.shape))
                self.context.set_tensor_address(name, t.data_ptr())
            outs = {}
            for name in self.outputs:
                t = torch.empty(tuple(self.context.get_tensor_shape(name)), dtype=self.dtypes[name], device="cuda")
                outs[name] = t
                self.context.set_tensor_address(name, t.data_ptr())
            stream = torch.cuda.current_stream()
            if not self.context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("TensorRT execution failed")
            stream.synchronize()
        res = [outs[n] for n in (outputs or self.outputs)]
        return [t.float().cpu().numpy() for t in res] if as_numpy else res


class TensorRTRunner:
    """The ``tensorrt`` backend of engine.inference: the engines of one export folder."""
    name = "tensorrt"

    def __init__(self, engines: dict[str, TensorRTEngine]):
        self.engines = engines

    @classmethod
    def from_export(cls, folder, info: ModelInfo | None = None, manifest: dict | None = None):
        require_tensorrt()
        folder = Path(folder)
        if info is None or manifest is None:
            info, _, manifest = read_export(folder)
        section = (manifest or {}).get("tensorrt")
        if not section:
            raise InferenceError(f"{folder} holds no TensorRT engines: run "
                                 f"'slidergan export CHECKPOINT --format tensorrt -o {folder}'")
        if section.get("weights") != info.weights:
            raise InferenceError(f"the TensorRT engines in {folder} were built from other weights than its "
                                 f"ONNX files; export again")
        engines = {}
        for role, e in section["engines"].items():
            path = folder / e["file"]
            if not path.is_file():
                raise InferenceError(f"{path} is missing; export again with --format tensorrt")
            plan = path.read_bytes()
            if hashlib.sha256(plan).hexdigest() != e["sha256"]:
                raise InferenceError(f"{path} is not the engine recorded in {MANIFEST} (changed or damaged)")
            engines[role] = TensorRTEngine(plan, str(path))
        if "generator" not in engines or "regressor" not in engines:
            raise InferenceError(f"{folder}: TensorRT engines for the generator and the regressor are needed")
        return cls(engines)

    def encode(self, image):
        if "encoder" not in self.engines:
            return ()
        return tuple(self.engines["encoder"].run({"image": image}, as_numpy=False))  # stay on the GPU

    def decode(self, image, feats, params):
        feed = {"image": image, "params": params, **{f"feat{i}": f for i, f in enumerate(feats)}}
        out, mask = self.engines["generator"].run(feed, ["image_gen", "mask"])
        return out, mask

    def regress(self, image):
        return self.engines["regressor"].run({"image": image})[0]
