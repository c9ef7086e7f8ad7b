"""Write the small example models shipped in ``models/``.

Run from the repository root: ``python models/make_models.py``. The output is deterministic, so
re-running it leaves the committed files byte-identical.

* ``partial_derivatives.onnx``: the ``stop_gradients`` example of ``tf.gradients``' documentation
  (a = 0, b = 2a, y = a + b).
* ``unconnected.onnx``: the ``unconnected_gradients`` example (a = ones[1, 2], b = ones[3, 1];
  y = b does not depend on a).
* ``cost_ws_bs.onnx``: the Ws/bs cost example (Ws = 0, bs = 2 Ws, cost = Ws + bs).
* ``linear_regression.onnx``: pred = x @ w + b with weights as initializers, a batch dimension
  ``N`` and a mean-squared-error ``loss`` output; the README quick start differentiates it.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
OPSET = 17
IR_VERSION = 8  # the oldest IR with model-local functions (used by onnxgrad.stop_gradient)
FLOAT = TensorProto.FLOAT


def _const(name: str, value) -> onnx.NodeProto:
    arr = np.asarray(value, dtype=np.float32)
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(arr, name))


def _model(nodes, name, inputs, outputs, initializers=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="onnxgrad-models", ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model


def partial_derivatives() -> onnx.ModelProto:
    """a = 0; b = 2a; y = a + b. d y / d [a, b] is [3, 1], or [1, 1] with stop_gradients=[a, b]."""
    nodes = [
        _const("a", 0.0),
        _const("two", 2.0),
        helper.make_node("Mul", ["two", "a"], ["b"], name="b"),
        helper.make_node("Add", ["a", "b"], ["y"], name="y"),
    ]
    return _model(nodes, "partial_derivatives", [], [helper.make_tensor_value_info("y", FLOAT, [])])


def unconnected() -> onnx.ModelProto:
    """a = ones[1, 2]; b = ones[3, 1]. d b / d a is None, or zeros[1, 2] with unconnected "zero"."""
    nodes = [_const("a", np.ones([1, 2])), _const("b", np.ones([3, 1]))]
    return _model(nodes, "unconnected", [], [helper.make_tensor_value_info("b", FLOAT, [3, 1])])


def cost_ws_bs() -> onnx.ModelProto:
    """Ws = 0; bs = 2 Ws; cost = Ws + bs. d cost / d [Ws, bs] is (3, 1)."""
    nodes = [
        _const("Ws", 0.0),
        _const("two", 2.0),
        helper.make_node("Mul", ["two", "Ws"], ["bs"], name="bs"),
        helper.make_node("Add", ["Ws", "bs"], ["cost"], name="cost"),
    ]
    return _model(nodes, "cost_ws_bs", [], [helper.make_tensor_value_info("cost", FLOAT, [])])


def linear_regression() -> onnx.ModelProto:
    """loss = mean((x @ w + b - target)^2) with x [N, 3], w [3, 1], b [1] and target [N, 1]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((3, 1)).astype(np.float32), "w")
    b = numpy_helper.from_array(np.zeros(1, np.float32), "b")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["xw"], name="xw"),
        helper.make_node("Add", ["xw", "b"], ["pred"], name="pred"),
        helper.make_node("Sub", ["pred", "target"], ["err"], name="err"),
        helper.make_node("Mul", ["err", "err"], ["sq_err"], name="sq_err"),
        helper.make_node("ReduceMean", ["sq_err"], ["loss"], name="loss", keepdims=0),
    ]
    inputs = [helper.make_tensor_value_info("x", FLOAT, ["N", 3]),
              helper.make_tensor_value_info("target", FLOAT, ["N", 1])]
    outputs = [helper.make_tensor_value_info("loss", FLOAT, [])]
    return _model(nodes, "linear_regression", inputs, outputs, [w, b])


MODELS = {
    "partial_derivatives.onnx": partial_derivatives,
    "unconnected.onnx": unconnected,
    "cost_ws_bs.onnx": cost_ws_bs,
    "linear_regression.onnx": linear_regression,
}


def main(folder: str = HERE) -> None:
    for file_name, build in MODELS.items():
        path = os.path.join(folder, file_name)
        with open(path, "wb") as f:
            f.write(build().SerializeToString())
        print(f"wrote {path} ({os.path.getsize(path)} bytes)")


if __name__ == "__main__":
    main()
