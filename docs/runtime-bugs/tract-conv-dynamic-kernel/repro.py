"""tract: Conv whose kernel input has a dynamic (symbolic) dim is refused."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, report, save, tract  # noqa: E402

graph = helper.make_graph(
    [helper.make_node("Conv", ["x", "w"], ["y"])],
    "conv_dynamic_weights", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "C", 6, 6]),
                             helper.make_tensor_value_info("w", TensorProto.FLOAT, [3, "C", 3, 3])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), HERE)
rng = np.random.default_rng(0)
feeds = {"x": rng.standard_normal((1, 2, 6, 6)).astype(np.float32),
         "w": rng.standard_normal((3, 2, 3, 3)).astype(np.float32)}
report(tract(path, feeds), onnxruntime(path, feeds))
