"""Shapes onnx cannot infer, and models onnx's checker refuses but runtimes run."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrad.checking import check_gradients
from onnxgrad.shapes import broadcast_shapes


@pytest.mark.parametrize("shapes,expected", [
    ([(2, 3), (3,)], (2, 3)),
    ([(1, 3), (4, 1)], (4, 3)),
    ([("N", 1), (1, 5)], ("N", 5)),
    ([("N", 3), ("M", 3)], (None, 3)),
    ([(1,), ()], (1,)),
])
def test_broadcast_shapes(shapes, expected):
    assert broadcast_shapes(shapes) == expected


def _runtime_axes_model(opset: int) -> onnx.ModelProto:
    """x / sqrt(mean(x^2 over axes computed by Range) + w): onnx infers no rank after ReduceMean."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Size", ["shape"], ["rank"]),
        helper.make_node("Range", ["one", "rank", "one"], ["axes"]),
        helper.make_node("Mul", ["x", "x"], ["sq"]),
        helper.make_node("ReduceMean", ["sq", "axes"], ["ms"]),
        helper.make_node("Add", ["ms", "w"], ["msw"]),
        helper.make_node("Sqrt", ["msw"], ["rms"]),
        helper.make_node("Div", ["x", "rms"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3, 4, 2]),
         helper.make_tensor_value_info("w", TensorProto.DOUBLE, [1])],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3, 4, 2])],
        [numpy_helper.from_array(np.array(1, np.int64), "one")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_rank_lost_by_onnx_inference_is_recovered():
    model = _runtime_axes_model(18)
    inferred = onnx.shape_inference.infer_shapes(model)
    ms = [vi for vi in inferred.graph.value_info if vi.name == "ms"]
    assert not ms or not ms[0].type.tensor_type.HasField("shape"), "onnx now infers this; pick a harder case"
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 4, 2)), "w": np.array([0.5])}
    report = check_gradients(model, ["x", "w"], ["y"], feeds=feeds)
    assert report.ok, report.checks
    onnx.checker.check_model(report.gradient_model, full_check=True)


def test_deprecated_op_version_is_accepted():
    """GroupNormalization-18 is deprecated (the checker refuses it) but PyTorch exports it and
    onnxruntime runs it: onnxgrad differentiates it."""
    node = helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], num_groups=2, epsilon=1e-3)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4, 3]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(onnx.checker.ValidationError, match="deprecated"):
        onnx.checker.check_model(model)
    report = check_gradients(model, ["x", "s", "b"])
    assert report.ok, report.checks

