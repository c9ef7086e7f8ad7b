"""tract: no SoftmaxCrossEntropyLoss (an ONNX forward op since opset 12)."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, report, save, tract  # noqa: E402

graph = helper.make_graph(
    [helper.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels"], ["loss"])],
    "sce", [helper.make_tensor_value_info("scores", TensorProto.FLOAT, [4, 5]),
            helper.make_tensor_value_info("labels", TensorProto.INT64, [4])],
    [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), HERE)
feeds = {"scores": np.random.default_rng(0).standard_normal((4, 5)).astype(np.float32),
         "labels": np.array([0, 4, 2, 1], np.int64)}
report(tract(path, feeds), onnxruntime(path, feeds))
