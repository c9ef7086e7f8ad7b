"""Not a bug: how far float32 runtimes are from float64 on one long, same-sign Gemm (DenseNet-121's)."""

import os
import sys

import numpy as np
from onnx import TensorProto, helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
from _common import onnxruntime, openvino, save, tract  # noqa: E402

# dW = dY [B, N*Q] @ cols [A, N*Q]^T: a 1x1 convolution's weight gradient over 56x56 positions, as
# onnxgrad's im2col emits it; non-negative operands (ReLU outputs, a gradient of one sign), so no
# cancellation: the error is the accumulation of 3136 float32 products alone
graph = helper.make_graph(
    [helper.make_node("Gemm", ["a", "b"], ["y"], transB=1)],
    "long_gemm", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [128, 3136]),
                  helper.make_tensor_value_info("b", TensorProto.FLOAT, [128, 3136])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, [128, 128])])
path = save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), HERE)
rng = np.random.default_rng(0)
feeds = {"a": rng.random((128, 3136), dtype=np.float32), "b": rng.random((128, 3136), dtype=np.float32)}
exact = feeds["a"].astype(np.float64) @ feeds["b"].astype(np.float64).T
for name, got in (("onnxruntime", onnxruntime(path, feeds)), ("openvino", openvino(path, feeds)),
                  ("tract", tract(path, feeds))):
    if isinstance(got, str):
        print(f"{name}: refused: {got.strip()}")
        continue
    err = float(np.max(np.abs(got[0] - exact)) / np.max(np.abs(exact)))
    print(f"{name}: max |float32 runtime - float64| / max |float64| = {err:.1e}")
