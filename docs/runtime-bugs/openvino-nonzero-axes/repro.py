"""OpenVINO: ReduceSum whose axes are computed (NonZero of a shape comparison) with a symbolic dim."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, openvino, report, save  # noqa: E402


def const(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, np.int64)))


graph = helper.make_graph(
    [helper.make_node("Shape", ["x"], ["shape"]), const("target", [1, 3]),
     helper.make_node("Equal", ["shape", "target"], ["same"]), helper.make_node("Not", ["same"], ["differ"]),
     helper.make_node("NonZero", ["differ"], ["nonzero"]), const("flat", [-1]),
     helper.make_node("Reshape", ["nonzero", "flat"], ["axes"]),
     helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
    "nonzero_axes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["A", 3])])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), HERE)
feeds = {"x": np.arange(12, dtype=np.float32).reshape(4, 3)}
report(openvino(path, feeds), onnxruntime(path, feeds))
