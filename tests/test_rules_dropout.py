"""Numeric tests (one table, one checker) of rules/dropout.py, also in training mode."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxgrad
from onnxgrad.checking import session
from onnxgrad.errors import GradientArgumentError
from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params

DROPOUT = [
    Case("Dropout/9-ratio-attr", "Dropout", [("x", rand(2, 3))], {"ratio": 0.3}, opset=9),
    Case("Dropout/10-ratio-attr", "Dropout", [("x", rand(2, 3))], {"ratio": 0.3}, opset=10),
    Case("Dropout/12-no-inputs", "Dropout", [("x", rand(3, 4))], opset=12),
    Case("Dropout/13-ratio-only", "Dropout", [("x", rand(3, 4)), ("ratio", np.array(0.4, np.float32))],
         opset=13, n_outputs=2, wrt=["x"], constant=["ratio"]),
    Case("Dropout/13-training-false-const", "Dropout",
         [("x", rand(2, 3)), ("ratio", np.array(0.4, np.float32)), ("training_mode", np.array(False))],
         opset=13, wrt=["x"], constant=["training_mode"]),
    # training_mode fed at run time (false here): the gradient selects the identity at run time
    Case("Dropout/13-training-false-fed", "Dropout",
         [("x", rand(2, 3)), ("ratio", np.array(0.4, np.float32)), ("training_mode", np.array(False))],
         opset=13, n_outputs=2, wrt=["x"]),
    # ratio 0 in training: the mask keeps everything, so the gradient is checkable numerically
    Case("Dropout/22-training-ratio0", "Dropout",
         [("x", rand(2, 3)), ("ratio", np.array(0.0)), ("training_mode", np.array(True))],
         opset=22, n_outputs=2, wrt=["x"], constant=["training_mode"]),
]


@pytest.mark.parametrize("case,dtype", params(DROPOUT))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in DROPOUT if c.id == "Dropout/22-training-ratio0"]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def _training_dropout(opset, with_mask=True, training_input=False):
    outs = ["y", "mask"] if with_mask else ["y"]
    node = helper.make_node("Dropout", ["x", "ratio", "training_mode"], outs, seed=5)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 50]),
              helper.make_tensor_value_info("ratio", TensorProto.FLOAT, [])]
    inits = [onnx.numpy_helper.from_array(np.array(0.3, np.float32), "ratio")]
    if training_input:
        inputs.append(helper.make_tensor_value_info("training_mode", TensorProto.BOOL, []))
    else:
        inits.append(onnx.numpy_helper.from_array(np.array(True), "training_mode"))
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 50])]
    if with_mask:
        outputs.append(helper.make_tensor_value_info("mask", TensorProto.BOOL, [4, 50]))
    graph = helper.make_graph([node], "dropout", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    return model


@pytest.mark.parametrize("opset,training_input", [(12, False), (13, False), (22, True)])
def test_dropout_training_uses_the_forward_mask(opset, training_input):
    """The mask is drawn anew at every run, so central differences cannot check training mode.
    Given the mask the op is linear: y = x * mask / (1 - ratio), and so must be the gradient, with
    the very mask of the same run."""
    model = _training_dropout(opset, training_input=training_input)
    result = onnxgrad.gradients(model, "y", "x", grad_ys="u")
    onnx.checker.check_model(result.model, full_check=True)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.5, 1.5, (4, 50)).astype(np.float32)
    u = rng.standard_normal((4, 50)).astype(np.float32)
    feeds = {"x": x, "u": u}
    if training_input:
        feeds["training_mode"] = np.array(True)
    y, mask, dx = session(result.model).run(["y", "mask", result.names[0]], feeds)
    assert 0 < mask.sum() < mask.size  # some dropped, some kept
    np.testing.assert_allclose(y, x * mask / 0.7, rtol=1e-6)
    np.testing.assert_allclose(dx, u * mask / 0.7, rtol=1e-6)


def test_dropout_training_without_mask_output_is_a_clear_error():
    with pytest.raises(GradientArgumentError, match="mask output"):
        onnxgrad.gradients(_training_dropout(13, with_mask=False), "y", "x")
