"""A small face-embedder ONNX file in the ArcFace layout, made by the tests (no downloads)."""
from pathlib import Path

import numpy as np


def make_arcface_like_onnx(path, dim: int = 8, size: int = 112, normalise_in_graph: bool = False,
                           extra_op: str | None = None, seed: int = 0) -> Path:
    """(N, 3, size, size) -> (N, dim): Conv-BN-PReLU, a residual Conv, max pool, global average
    pool, Flatten, Gemm; optionally insightface-style Sub/Mul pixel normalisation at the start."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(seed)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr, np.float32), name)

    c = 6
    inits = [
        init("w1", rng.normal(0, 0.3, (c, 3, 3, 3))), init("b1", rng.normal(0, 0.1, c)),
        init("bn_s", rng.uniform(0.5, 1.5, c)), init("bn_b", rng.normal(0, 0.1, c)),
        init("bn_m", rng.normal(0, 0.1, c)), init("bn_v", rng.uniform(0.5, 1.5, c)),
        init("slope", rng.uniform(0.1, 0.3, (c, 1, 1))),
        init("w2", rng.normal(0, 0.2, (c, c, 3, 3))),
        init("fc_w", rng.normal(0, 0.5, (dim, c))), init("fc_b", rng.normal(0, 0.1, dim)),
    ]
    nodes = []
    x = "data"
    if normalise_in_graph:
        inits += [init("mean", [127.5]), init("scale", [1 / 127.5])]
        nodes += [helper.make_node("Sub", [x, "mean"], ["sub"]), helper.make_node("Mul", ["sub", "scale"], ["norm"])]
        x = "norm"
    nodes += [
        helper.make_node("Conv", [x, "w1", "b1"], ["c1"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["bn"], epsilon=1e-5),
        helper.make_node("PRelu", ["bn", "slope"], ["act"]),
        helper.make_node("Conv", ["act", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["act", "c2"], ["res"]),
        helper.make_node("MaxPool", ["res"], ["mp"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["mp"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["fc1"], transB=1),
    ]
    if extra_op:
        nodes.append(helper.make_node(extra_op, ["fc1"], ["fc2"]))
    out = "fc2" if extra_op else "fc1"
    graph = helper.make_graph(
        nodes, "tiny_arcface", [helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    onnx.save(model, str(path))
    return path
