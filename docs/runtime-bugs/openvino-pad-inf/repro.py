"""OpenVINO: Pad-2 (opset 9) with value=-inf is refused as out of range for f32."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, openvino, report, save  # noqa: E402

graph = helper.make_graph(
    [helper.make_node("Pad", ["x"], ["y"], pads=[0, 1, 0, 1], value=float("-inf"))],
    "pad_inf", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)], ir_version=8), HERE)
feeds = {"x": np.ones((2, 3), np.float32)}
report(openvino(path, feeds), onnxruntime(path, feeds))
