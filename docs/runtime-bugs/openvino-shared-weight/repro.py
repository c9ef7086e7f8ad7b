"""OpenVINO CPU: one constant W read as MatMul(x, W) and MatMul(x, Transpose(W)) gives z = x @ W."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, openvino, report, save  # noqa: E402

rng = np.random.default_rng(0)
w = rng.standard_normal((8, 8)).astype(np.float32)  # square, not symmetric
graph = helper.make_graph(
    [helper.make_node("MatMul", ["x", "W"], ["y"]),
     helper.make_node("Transpose", ["W"], ["Wt"], perm=[1, 0]),
     helper.make_node("MatMul", ["x", "Wt"], ["z"])],
    "shared_weight", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 8]),
     helper.make_tensor_value_info("z", TensorProto.FLOAT, [4, 8])],
    [numpy_helper.from_array(w, "W")])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), HERE)
feeds = {"x": rng.standard_normal((4, 8)).astype(np.float32)}
report(openvino(path, feeds), onnxruntime(path, feeds))
