"""The judge itself: it must catch what the old checker let through, and pass correct rules.

Each wrong gradient below is one issue 10 names: the MaxPool SAME_UPPER/SAME_LOWER swap (a
mutant of ``conv.same_pads``), a float16 rule 3x wrong, an output near -FLT_MAX beside the
checked one, a x1.05 mutant; plus kinks (reported as KINK), the float64 cast, and large
Jacobians (sampled, never skipped).
"""

from __future__ import annotations

from typing import Iterator, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrad import registry
from onnxgrad.checking import FAIL, KINK, check_gradients, no_float64_op, session, to_float64
from onnxgrad.rules import conv as conv_rules


def single(op: str, shape: List[int], elem: int = TensorProto.FLOAT, opset: int = 18, **attrs) -> onnx.ModelProto:
    """A one-node model x -> y (output shape inferred)."""
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], op.lower(), [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    inferred = onnx.shape_inference.infer_shapes(model)
    del model.graph.output[:]
    model.graph.output.extend(inferred.graph.output)
    return model


@pytest.fixture
def patched_rule() -> Iterator:
    """Replace a registered rule for one test (restored afterwards)."""
    saved = []

    def patch(op: str, fn) -> None:
        entry = registry.lookup(op, "", 18)
        saved.append((entry, entry.fn))
        object.__setattr__(entry, "fn", fn)  # entries are frozen: a test swaps the rule in place

    yield patch
    for entry, fn in saved:
        object.__setattr__(entry, "fn", fn)


def scaled(fn, factor: float):
    """The rule ``fn`` with its first gradient multiplied by ``factor``."""

    def rule(g, op, dy, *rest):
        grads = fn(g, op, dy, *rest)
        first = grads[0]
        return [g.Mul(first, g.const(factor, like=first)), *grads[1:]]

    return rule


def distinct(*shape: int) -> np.ndarray:
    n = int(np.prod(shape))
    return np.random.default_rng(0).permutation(np.linspace(-2, 2, n)).reshape(shape).astype(np.float32)


# ------------------------------------------------------------------------------ correct rules pass
@pytest.mark.parametrize("op", ["Tanh", "Sigmoid", "Exp", "Softplus"])
def test_correct_rules_pass(op: str) -> None:
    report = check_gradients(single(op, [3, 4]), ["x"], ["y"])
    assert report.ok, report.checks
    c = report.checks[0]
    assert c.error <= 1e-5 * abs(c.analytic) + 1e-9, "float64 differences agree to far better than 1e-5"
    assert c.jacobian_ratio is not None and c.jacobian_ratio <= 1 and not c.jacobian_sampled


def test_maxpool_same_upper_lower_swap_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    """SAME_UPPER and SAME_LOWER swapped in ``conv.same_pads``: an odd total padding exposes it."""
    model = single("MaxPool", [1, 2, 6, 5], kernel_shape=[2, 2], auto_pad="SAME_UPPER")
    feeds = {"x": distinct(1, 2, 6, 5)}
    assert check_gradients(model, ["x"], ["y"], feeds=feeds).ok
    real = conv_rules.same_pads

    def swapped(auto_pad: str, *args):
        return real("SAME_LOWER" if auto_pad == "SAME_UPPER" else "SAME_UPPER", *args)

    monkeypatch.setattr(conv_rules, "same_pads", swapped)
    report = check_gradients(model, ["x"], ["y"], feeds=feeds)
    assert report.checks[0].verdict == FAIL


def test_three_times_wrong_float16_rule_fails(patched_rule) -> None:
    """A float16 model is judged in float64: a rule 3x wrong cannot hide in float16 round-off."""
    model = single("Tanh", [3, 4], elem=TensorProto.FLOAT16)
    assert check_gradients(model, ["x"], ["y"]).ok
    patched_rule("Tanh", scaled(registry.lookup("Tanh", "", 18).fn, 3.0))
    report = check_gradients(model, ["x"], ["y"])
    c = report.checks[0]
    assert c.verdict == FAIL
    assert c.tolerance < 1e-3 * abs(c.numeric), "the tolerance is float64's, not float16's"


def test_float16_only_error_is_caught() -> None:
    """The model's own-dtype gradient must match the float64 one: a rule wrong only in float16
    (here: a gradient model edited by hand) fails through ``native_ratio``."""
    model = single("Tanh", [3, 4], elem=TensorProto.FLOAT16)
    from onnxgrad import gradients

    grad = gradients(model, ["y"], ["x"]).model
    out = grad.graph.output[-1].name
    for node in grad.graph.node:
        for k, name in enumerate(node.output):
            if name == out:
                node.output[k] = out + "/raw"
    scale = numpy_helper.from_array(np.array(3.0, np.float16), "three")
    grad.graph.initializer.append(scale)
    grad.graph.node.append(helper.make_node("Mul", [out + "/raw", "three"], [out]))
    report = check_gradients(model, ["x"], ["y"], grad_model=grad)
    assert report.checks[0].verdict == FAIL


def test_flt_max_output_does_not_widen_the_tolerance(patched_rule) -> None:
    """An output near -FLT_MAX that x does not move (a mask) adds no noise allowance: a 1.05x
    mutant still fails beside it."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    mask = numpy_helper.from_array(np.full((2, 3), -3.4e38, np.float32), "mask")
    zero = numpy_helper.from_array(np.zeros((2, 3), np.float32), "zero")
    nodes = [helper.make_node("Tanh", ["x"], ["y"]),
             helper.make_node("Mul", ["x", "zero"], ["x0"]),
             helper.make_node("Add", ["x0", "mask"], ["masked"])]
    graph = helper.make_graph(nodes, "mask", [x], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3]),
                                                    helper.make_tensor_value_info("masked", TensorProto.FLOAT, [2, 3])],
                              [mask, zero])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    good = check_gradients(model, ["x"], ["y", "masked"])
    assert good.ok and good.checks[0].tolerance < 1e-3
    patched_rule("Tanh", scaled(registry.lookup("Tanh", "", 18).fn, 1.05))
    assert check_gradients(model, ["x"], ["y", "masked"]).checks[0].verdict == FAIL


@pytest.mark.parametrize("op", ["Tanh", "Sigmoid", "Softplus", "Exp", "Sin"])
def test_five_percent_mutant_fails(patched_rule, op: str) -> None:
    patched_rule(op, scaled(registry.lookup(op, "", 18).fn, 1.05))
    report = check_gradients(single(op, [3, 4]), ["x"], ["y"])
    assert report.checks[0].verdict == FAIL


# ------------------------------------------------------------------------------ kinks and ties
def test_relu_at_zero_is_a_kink() -> None:
    feeds = {"x": np.array([[0.0, 1.0, -1.0], [0.5, -0.5, 2.0]], np.float32)}
    report = check_gradients(single("Relu", [2, 3]), ["x"], ["y"], feeds=feeds)
    c = report.checks[0]
    assert c.verdict == KINK and not c.ok and "kink" in c.note
    assert c.left is not None and c.right is not None and c.left != c.right


def test_tied_maxpool_window_is_a_kink() -> None:
    x = np.ones((1, 1, 4, 4), np.float32)
    report = check_gradients(single("MaxPool", [1, 1, 4, 4], kernel_shape=[2, 2], strides=[2, 2]), ["x"], ["y"],
                             feeds={"x": x})
    assert report.checks[0].verdict == KINK


def test_wrong_rule_away_from_the_kink_fails(patched_rule) -> None:
    """Relu's kink excuses nothing elsewhere: a sign-flipped rule fails at inputs away from 0."""
    patched_rule("Relu", scaled(registry.lookup("Relu", "", 18).fn, -1.0))
    feeds = {"x": np.array([[0.3, 1.0, -1.0], [0.5, -0.5, 2.0]], np.float32)}
    assert check_gradients(single("Relu", [2, 3]), ["x"], ["y"], feeds=feeds).checks[0].verdict == FAIL


# ------------------------------------------------------------------------------ Jacobian and cast
def test_large_jacobian_is_sampled_not_skipped(patched_rule) -> None:
    model = single("Softmax", [8, 40], axis=1)
    report = check_gradients(model, ["x"], ["y"])
    c = report.checks[0]
    assert c.ok and c.jacobian_sampled and c.jacobian_ratio is not None


def test_float64_cast() -> None:
    model = single("Cast", [2, 3], elem=TensorProto.FLOAT16, to=TensorProto.FLOAT16)
    cast = to_float64(model)
    assert cast.graph.input[0].type.tensor_type.elem_type == TensorProto.DOUBLE
    assert cast.graph.node[0].attribute[0].i == TensorProto.DOUBLE
    assert no_float64_op(model) is None
    assert no_float64_op(single("Celu", [2, 3], opset=18)) == "Celu"


@pytest.mark.parametrize("elem", [TensorProto.BFLOAT16, TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE])
def test_every_float_dtype(elem: int) -> None:
    report = check_gradients(single("Sigmoid", [2, 3], elem=elem), ["x"], ["y"])
    assert report.ok, report.checks
    assert report.float64_model is not None
    assert all(i.type.tensor_type.elem_type == TensorProto.DOUBLE for i in report.float64_model.graph.input)


def test_stop_gradients_are_held_in_the_differences() -> None:
    """y = t * x with t = 2x held constant: d y / d x = t (not 4x), d y / d t = x; the finite
    differences hold t too, so both agree."""
    nodes = [helper.make_node("Add", ["x", "x"], ["t"]), helper.make_node("Mul", ["t", "x"], ["y"])]
    graph = helper.make_graph(nodes, "stop", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    report = check_gradients(model, ["x", "t"], ["y"], stop_gradients=["t"])
    assert report.ok, report.checks



@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_opset11_softmax_default_axis_in_the_reference_evaluator(op: str) -> None:
    """Before opset 13 Softmax's default axis is 1 (a 4-D [1, 5, 1, 1] is normalized over its 5
    classes, as SqueezeNet's last layer is); onnx.reference passes the newest default, -1, which
    made the float64 forward of the light zoo's SqueezeNet a constant. float64: onnxruntime has
    the kernel, so onnx.reference is forced here (no float64 Conv takes it there in a network)."""
    model = single(op, [1, 5, 1, 1], elem=TensorProto.DOUBLE, opset=11)
    from onnx.reference import ReferenceEvaluator

    from onnxgrad.checking import reference_kernels

    x = np.random.default_rng(0).standard_normal((1, 5, 1, 1))
    (y,) = ReferenceEvaluator(model, new_ops=reference_kernels(11)).run(None, {"x": x})
    (expected,) = session(model).run(None, {"x": x})
    np.testing.assert_allclose(y, expected, rtol=1e-12)


# ------------------------------------------------------------------------------ round-off of tiny entries
def _cancelled(scale: float) -> onnx.ModelProto:
    """y = (1 + scale * x) - 1 in float64: y rounds in ulps of 1 (2.2e-16), not of its value."""
    one = numpy_helper.from_array(np.ones(3), "one")
    k = numpy_helper.from_array(np.full(3, scale), "k")
    nodes = [helper.make_node("Mul", ["x", "k"], ["t"]), helper.make_node("Add", ["t", "one"], ["u"]),
             helper.make_node("Sub", ["u", "one"], ["y"])]
    graph = helper.make_graph(nodes, "cancel", [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [3])], [one, k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    return model


def test_saturated_entries_below_the_step_resolution_pass(patched_rule) -> None:
    """tanh(14) = 1 - 1.4e-12 with slope 2.8e-12: a step of 1e-5 moves it by 2.8e-17, less than an
    ulp of 1, so its Jacobian entry's difference quotient is 0. That entry has the round-off of
    any output near 1 (it depends on x: a step of 1e-2 moves it), not a zero tolerance. Where
    every entry is that small (an RNN whose tanh saturates: corpus test_simple_rnn_bidirectional)
    nothing else hides it; a 5% mutant still fails wherever the entries are resolved."""
    saturated = {"x": np.array([[14.0, -14.5, 15.0], [13.5, -16.0, 14.2]])}
    model = single("Tanh", [2, 3], elem=TensorProto.DOUBLE)  # float64: the judge alone, no own-dtype run
    report = check_gradients(model, ["x"], ["y"], feeds=saturated)
    assert report.ok, report.checks
    patched_rule("Tanh", scaled(registry.lookup("Tanh", "", 18).fn, 1.05))
    mixed = {"x": np.array([[14.0, 0.3, -0.7], [1.2, -14.5, 0.05]])}
    assert check_gradients(model, ["x"], ["y"], feeds=mixed).checks[0].verdict == FAIL


def test_cancelled_output_round_off_is_measured() -> None:
    """y = (1 + 1e-7 x) - 1 at x ~ 300: y ~ 3e-5, but its differences are multiples of 2.2e-16,
    20% of the 1e-12 a step moves it. The judge measures that round-off (9 points along the step)
    instead of assuming ulps of y (4e-21), so the right gradient passes and a 2x wrong one (a
    given gradient model) still fails: the allowance is the measured round-off, ~1e-11, not the
    error."""
    model = _cancelled(1e-7)
    feeds = {"x": np.array([310.0, -250.0, 400.0])}
    assert check_gradients(model, ["x"], ["y"], feeds=feeds).ok
    from onnxgrad import gradients

    grad = gradients(model, ["y"], ["x"]).model
    out = grad.graph.output[-1].name
    for node in grad.graph.node:
        node.output[:] = [o + "/raw" if o == out else o for o in node.output]
    grad.graph.initializer.append(numpy_helper.from_array(np.array(2.0), "two"))
    grad.graph.node.append(helper.make_node("Mul", [out + "/raw", "two"], [out]))
    assert check_gradients(model, ["x"], ["y"], feeds=feeds, grad_model=grad).checks[0].verdict == FAIL

# ------------------------------------------------------------------------------ the check command
def _ir3_model(path: str, elem: int = TensorProto.FLOAT, opset: int = 9, ir_version: int = 3) -> str:
    """IR version 3 (opset 9) by default: the weight is an initializer listed among the graph
    inputs."""
    np_t = helper.tensor_dtype_to_np_dtype(elem)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((3, 2)).astype(np_t), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Tanh", ["h"], ["y"])]
    graph = helper.make_graph(nodes, "ir3", [helper.make_tensor_value_info("x", elem, [4, 3]),
                                             helper.make_tensor_value_info("W", elem, [3, 2])],
                              [helper.make_tensor_value_info("y", elem, [4, 2])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = ir_version
    onnx.save(model, path)
    return path


def _cli(*args: str):
    from click.testing import CliRunner

    from onnxgrad.cli import cli

    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("elem,opset,ir", [(TensorProto.FLOAT, 9, 3), (TensorProto.FLOAT16, 9, 3),
                                           (TensorProto.BFLOAT16, 13, 7)])  # MatMul has bfloat16 from 13
def test_check_command_ir3_initializer_inputs(tmp_path, elem: int, opset: int, ir: int) -> None:
    path = _ir3_model(str(tmp_path / "ir3.onnx"), elem, opset, ir)
    r = _cli("check", path, "--xs", "W,x")
    assert r.exit_code == 0, r.output
    assert [line.split()[-1] for line in r.output.splitlines()[2:4]] == ["PASS", "PASS"]


def test_check_command_grad_model_feeds_and_options(tmp_path) -> None:
    path = _ir3_model(str(tmp_path / "ir3.onnx"))
    grad = str(tmp_path / "ir3.grad.onnx")
    assert _cli("differentiate", path, "--xs", "W", "-o", grad).exit_code == 0
    feeds = str(tmp_path / "feeds.npz")
    np.savez(feeds, x=np.linspace(-1, 1, 12, dtype=np.float32).reshape(4, 3))
    r = _cli("check", path, "--xs", "W", "--grad-model", grad, "--feeds", feeds, "--rtol", "1e-5", "--step", "1e-5")
    assert r.exit_code == 0, r.output
    assert "PASS" in r.output
    r = _cli("check", path, "--xs", "W", "--stop-gradients", "h", "--grad-ys", "y=2.0")
    assert r.exit_code == 0, r.output and "0 failed" in r.output


def test_check_command_fail_and_crash_exit_codes(tmp_path, patched_rule, monkeypatch) -> None:
    path = _ir3_model(str(tmp_path / "ir3.onnx"))
    patched_rule("Tanh", scaled(registry.lookup("Tanh", "", 9).fn, 1.05))
    r = _cli("check", path, "--xs", "W")
    assert r.exit_code == 1 and "FAIL" in r.output

    def crash(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("onnxgrad.checking.judge", crash)
    r = _cli("check", path, "--xs", "W")
    assert r.exit_code == 7 and "internal error" in r.output
