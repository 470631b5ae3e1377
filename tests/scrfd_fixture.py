"""A stand-in SCRFD model for tests (insightface's detector pack cannot be downloaded on CI machines)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def tiny_scrfd(path: Path) -> Path:
    """An ONNX graph with SCRFD's nine outputs: bright pixels score high, fixed box and five points.

    score = sigmoid(8 * (mean of the normalised pixels in the anchor's cell) - 4), box = 2 strides
    around the anchor, points at fixed offsets: enough to drive insightface's SCRFD decoding.
    """
    import onnx
    from onnx import TensorProto, helper

    nodes, inits, outs = [], [], {"score": [], "bbox": [], "kps": []}
    kps = np.array([[-1, -1], [1, -1], [0, 0], [-0.7, 1], [0.7, 1]], np.float32).reshape(1, 10)
    inits += [
        helper.make_tensor("a", TensorProto.FLOAT, [], [8.0]),
        helper.make_tensor("b", TensorProto.FLOAT, [], [-4.0]),
        helper.make_tensor("shp", TensorProto.INT64, [2], [-1, 1]),
        helper.make_tensor("z4", TensorProto.FLOAT, [1, 4], [0.0] * 4),
        helper.make_tensor("c4", TensorProto.FLOAT, [1, 4], [2.0] * 4),
        helper.make_tensor("z10", TensorProto.FLOAT, [1, 10], [0.0] * 10),
        helper.make_tensor("c10", TensorProto.FLOAT, [1, 10], kps.ravel().tolist()),
    ]
    for s in (8, 16, 32):
        n = lambda x: f"{x}{s}"  # noqa: E731
        nodes += [
            helper.make_node("AveragePool", ["input.1"], [n("p")], kernel_shape=[s, s], strides=[s, s]),
            helper.make_node("ReduceMean", [n("p")], [n("m")], axes=[1], keepdims=1),
            helper.make_node("Concat", [n("m"), n("m")], [n("m2")], axis=1),
            helper.make_node("Transpose", [n("m2")], [n("t")], perm=[0, 2, 3, 1]),
            helper.make_node("Reshape", [n("t"), "shp"], [n("col")]),
            helper.make_node("Mul", [n("col"), "a"], [n("ax")]),
            helper.make_node("Add", [n("ax"), "b"], [n("lin")]),
            helper.make_node("Sigmoid", [n("lin")], [n("score")]),
            helper.make_node("MatMul", [n("col"), "z4"], [n("zb")]),
            helper.make_node("Add", [n("zb"), "c4"], [n("bbox")]),
            helper.make_node("MatMul", [n("col"), "z10"], [n("zk")]),
            helper.make_node("Add", [n("zk"), "c10"], [n("kps")]),
        ]
        for k, w in (("score", 1), ("bbox", 4), ("kps", 10)):
            outs[k].append(helper.make_tensor_value_info(n(k), TensorProto.FLOAT, ["N", w]))
    graph = helper.make_graph(
        nodes,
        "tiny_scrfd",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, "H", "W"])],
        outs["score"] + outs["bbox"] + outs["kps"],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
