"""Gradient models in other runtimes: onnx.reference, OpenVINO, tract and onnxruntime-web against onnxruntime.

Three parts:

* the emitter's portable default: undoing a broadcast over a symbolic dim uses constant axes
  (no ``NonZero``-computed ReduceSum axes, which OpenVINO refuses), proven numerically;
* the runtime profiles of :mod:`onnxgrad.targets`: ``tract``'s decomposition of
  SoftmaxCrossEntropyLoss computes the same loss and is differentiable (central differences),
  ``openvino``'s weight copies leave no constant weight shared by forward and backward readers;
* the models of ``tools/portability.py`` (shipped examples and PyTorch exports in the default
  suite, the light zoo in the slow one), static and symbolic batch, in every runtime: each must
  match onnxruntime to ``RTOL`` relative, except the runtime limitations listed in ``KNOWN``
  (each asserted to fail exactly as documented in docs/runtime-bugs/, so a fixed runtime shows).

A runtime whose Python package is not installed (``pip install '.[portability]'``), or
onnxruntime-web when Node does not find it (``npm install --prefix DIR onnxruntime-web``, then
``ONNXGRAD_NODE_MODULES=DIR/node_modules``; ``.ci/run`` does both), is skipped with that reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Tuple

import numpy as np
import onnx
import pytest
from rulecheck import Case, build, check_case, check_second_order, rand
from test_rules_softmax import LOSSES

from onnxgrad import gradients, targets
from onnxgrad.checking import check_gradients, session
from onnxgrad.errors import GradientArgumentError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import portability  # noqa: E402

# ---------------------------------------------------------------- the portable default forms
# sum_to over a symbolic dim: a's first dim is the symbol N, fed 1 (broadcast against b's 4:
# summed) and 4 (not summed)
DEFAULT_FORMS = [
    Case("sum_to/Add-N-vs-4-fed1", "Add", [("a", rand(1, 3)), ("b", rand(4, 3, seed=1))], symbolic_dims=["a"]),
    Case("sum_to/Add-N-vs-4-fed4", "Add", [("a", rand(4, 3)), ("b", rand(4, 3, seed=1))], symbolic_dims=["a"]),
    Case("sum_to/Mul-rank-lift-fed1", "Mul", [("a", rand(1, 1, 3)), ("b", rand(2, 5, 3, seed=1))],
         symbolic_dims=["a"]),
    # not a broadcast: a padded MaxPool before opset 11 (no infinite Pad value may appear)
    Case("pad/MaxPool-opset9-padded", "MaxPool", [("x", rand(1, 2, 5, 5))],
         {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]}, opset=9),
    Case("sum_to/Where-symbolic", "Where",
         [("c", np.array([[True], [False], [True]])), ("a", rand(3, 1)), ("b", rand(1, 4, seed=1))],
         symbolic_dims=["a"]),
]


@pytest.mark.parametrize("case", DEFAULT_FORMS, ids=str)
def test_default_forms(case: Case) -> None:
    """Numerically right in onnxruntime and onnx.reference, no run-time-computed axes, no infinite pad."""
    check_case(case, "float64")
    model, _, xs, ys = build(case, "float32")
    grad = gradients(model, ys, xs).model
    assert "NonZero" not in {n.op_type for n in grad.graph.node}
    pad_values = [a.f for n in grad.graph.node if n.op_type == "Pad" for a in n.attribute if a.name == "value"]
    assert all(np.isfinite(pad_values))


@pytest.mark.parametrize("case", [c for c in DEFAULT_FORMS if c.op_type in ("Add", "Mul")], ids=str)
def test_default_forms_second_order(case: Case) -> None:
    """The Where/Slice form is differentiable again (Hessians of symbolic-batch models)."""
    check_second_order(case, "float64")


@pytest.mark.parametrize("runtime,target", [("openvino", None), ("tract", "tract")])
def test_default_forms_in_runtimes(runtime: str, target: str) -> None:
    """OpenVINO runs the default forms with a symbolic dim (it refused NonZero axes and a -inf
    Pad-2); tract runs them with its profile (a no-op Slice restating the dims). tract assumes a
    symbolic dim is never a broadcast 1 (it folds ``N == 1`` to false), so the cases feeding
    N = 1 against a larger dim are not tract's (docs/portability.md)."""
    _require(runtime)
    run = portability.RUNNERS[runtime]
    for case in DEFAULT_FORMS:
        if runtime == "tract" and case.id.endswith("fed1"):
            continue
        model, feeds, xs, ys = build(case, "float32")
        grad = gradients(model, ys, xs, target=target)
        outputs = [n for n in grad.names if n]
        want = portability.run_onnxruntime(grad.model, feeds, outputs)
        if case.op_type == "MaxPool" and target is None:
            # MaxPool's gradient before opset 16 scatters to the pool's Indices; before opset 11 with
            # MaxUnpool by default, which neither runtime implements: their targets use Scatter-9
            with pytest.raises(Exception, match="MaxUnpool"):
                run(grad.model, feeds, outputs)
            continue
        assert portability.worst_relative(run(grad.model, feeds, outputs), want) <= portability.RTOL, case.id


# ---------------------------------------------------------------- the tract profile
SCE = [c for c in LOSSES if c.op_type == "SoftmaxCrossEntropyLoss"]


@pytest.mark.parametrize("case", SCE, ids=str)
def test_tract_decomposes_softmax_cross_entropy(case: Case) -> None:
    """Same outputs as the fused op, gradients right by central differences, no SCE left."""
    model, feeds, xs, ys = build(case, "float64")
    decomposed = onnx.ModelProto()
    decomposed.CopyFrom(model)
    assert targets.prepare_forward(decomposed, "tract")
    onnx.checker.check_model(decomposed, full_check=True)
    assert "SoftmaxCrossEntropyLoss" not in {n.op_type for n in decomposed.graph.node}
    names = [o.name for o in model.graph.output]
    for want, got in zip(session(model).run(names, feeds), session(decomposed).run(names, feeds), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)
    report = check_gradients(decomposed, xs, ys, feeds=feeds)
    assert report.checks and all(c.ok for c in report.checks), report.checks


def test_tract_profile_through_gradients() -> None:
    """``gradients(..., target="tract")`` equals the default gradients on a PyTorch export."""
    case = next(c for c in portability.torch_cases() if c.name == "torch_mlp_ce")
    plain = gradients(case.model, "loss", case.xs)
    tract = gradients(case.model, "loss", case.xs, target="tract")
    onnx.checker.check_model(tract.model, full_check=True)
    assert "SoftmaxCrossEntropyLoss" not in {n.op_type for n in tract.model.graph.node}
    want = session(plain.model).run(["loss", *plain.names], case.feed)
    got = session(tract.model).run(["loss", *tract.names], case.feed)
    assert portability.worst_relative(got, want) <= 1e-6


# ---------------------------------------------------------------- the openvino profile
def _weight_readers(model: onnx.ModelProto, n_forward: int) -> Tuple[set, set]:
    """Constant weights (initializers of rank >= 2 and forward values computed from initializers
    only, like exporters' ``Transpose(W)``) read by forward nodes, and those read by backward nodes."""
    weights = {t.name for t in model.graph.initializer if len(t.dims) >= 2}
    constant = {t.name for t in model.graph.initializer}
    for node in model.graph.node[:n_forward]:
        if node.op_type != "Constant" and node.input and all(i in constant for i in node.input):
            constant.update(node.output)
            weights.update(node.output)
    forward = {i for n in model.graph.node[:n_forward] for i in n.input if i in weights}
    backward = {i for n in model.graph.node[n_forward:] for i in n.input if i in weights}
    return forward, backward


@pytest.mark.parametrize("name", ["small_cnn", "transformer_block"])
def test_openvino_profile_separates_weights(name: str) -> None:
    """No constant weight is read by both forward and backward nodes; values unchanged."""
    case = next(c for c in portability.example_cases() if c.name == name)
    plain = gradients(case.model, case.y, case.xs)
    ov = gradients(case.model, case.y, case.xs, target="openvino")
    onnx.checker.check_model(ov.model, full_check=True)
    n_forward = len(case.model.graph.node)
    shared_before = set.intersection(*_weight_readers(plain.model, n_forward))
    forward, backward = _weight_readers(ov.model, n_forward)
    assert shared_before and not forward & backward
    outputs = [case.y, *[n for n in plain.names if n]]
    want = session(plain.model).run(outputs, case.feed)
    got = session(ov.model).run([case.y, *[n for n in ov.names if n]], case.feed)
    assert portability.worst_relative(got, want) == 0.0


def test_unknown_target_is_a_clear_error() -> None:
    case = portability.example_cases()[0]
    with pytest.raises(GradientArgumentError, match="unknown target 'bogus'.*openvino"):
        gradients(case.model, case.y, case.xs, target="bogus")


def test_cli_target(tmp_path) -> None:
    out = tmp_path / "mlp.grad.onnx"
    env = dict(os.environ, PYTHONPATH=ROOT)
    done = subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", os.path.join(ROOT, "tests", "data",
                           "torch", "mlp_ce.onnx"), "--xs", "@params", "--target", "tract", "-o", str(out)],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "SoftmaxCrossEntropyLoss" not in {n.op_type for n in onnx.load(str(out)).graph.node}
    bad = subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", str(out), "--xs", "@params",
                          "--target", "bogus"], env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "bogus" in bad.stderr


# ---------------------------------------------------------------- kink-aware comparison
def test_away_from_kinks_moves_exactly_the_near_elements() -> None:
    """ReLU inputs within the margin of 0 and max-pool windows whose positive winner leads by less
    than the margin are moved to twice the margin; nothing else moves; ties of zeros stay."""
    from onnx import TensorProto, helper

    x = np.array([[[[0.0, 1.0, 1.0, -2.0],
                    [3e-5, 1e-5, -4e-5, 0.5],
                    [2.0, -1.0, 0.25, 0.25],
                    [0.0, 0.0, 0.0, -0.5]]]], np.float32)
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]),
         helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         helper.make_node("ReduceSum", ["p"], ["loss"], keepdims=0)],
        "kinks", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    case = portability.Case("kinks", model, {"x": x}, "loss", [])
    moved, kinks = portability.away_from_kinks(case, margin=1e-4)
    tol = 1e-4 * 2.0  # the margin times max|x|
    relu_in, pool_in = portability.run_onnxruntime(portability._exposing(moved.model, ["kink/0/x", "kink/1/x"]),
                                                   moved.feed, ["kink/0/x", "kink/1/x"])
    # ReLU: the four zeros and the three values within 2e-4 of 0 move to +-4e-4, on their own side
    near = np.abs(x) < tol
    assert np.count_nonzero(near) == 7
    np.testing.assert_allclose(relu_in[near], np.where(x[near] >= 0, 2 * tol, -2 * tol), rtol=1e-6)
    assert np.array_equal(relu_in[~near], x[~near])
    # MaxPool: top-left window {4e-4, 1, 4e-4, 4e-4} is clear; top-right {1, 0, 0, 0.5} too; bottom-left
    # {2, 0, 0, 0} too; bottom-right {0.25, 0.25, 0, 0} is a tie: its first 0.25 is raised by 2 tol
    step = pool_in - np.maximum(relu_in, 0)
    assert np.count_nonzero(step) == 1 and step[0, 0, 2, 2] == pytest.approx(2 * tol, abs=1e-7)  # float32 at 0.25
    assert kinks.moved == 7 + 1 and kinks.examined == 2 * x.size


def test_away_from_kinks_ramps_a_flat_channel() -> None:
    """A channel tied in every window (a constant, like the light zoo's deep BatchNorm outputs) gets
    a ramp that leaves each 3x3 stride-1 window one winner leading by twice the margin."""
    from onnx import helper

    x = np.full((1, 1, 6, 6), 0.5, np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[1, 1])
    tol = np.float32(1e-4 * 0.5)
    moved = x + portability._maxpool_step(node, x, tol)
    windows = np.lib.stride_tricks.sliding_window_view(moved[0, 0], (3, 3)).reshape(16, 9)
    top = -np.sort(-windows, axis=1)[:, :2]
    assert np.all(top[:, 0] - top[:, 1] >= 2 * tol * (1 - 1e-3))
    assert portability._maxpool_step(node, moved, tol) is None


# ---------------------------------------------------------------- every runtime on real models
CONV = ["small_cnn", "torch_resnet_cnn"] + [f"zoo_{m}" for m in ("bvlc_alexnet", "zfnet512", "squeezenet", "resnet50",
                                                                 "densenet121", "inception_v1", "inception_v2",
                                                                 "shufflenet")]
#: (model, batch, runtime) -> (status, text the runtime's refusal contains), each explained in docs/portability.md
#: (runtime bugs in docs/runtime-bugs/). Every model is compared away from its kinks (portability.away_from_kinks).
KNOWN: Dict[Tuple[str, str, str], Tuple[str, str]] = {
    # the forward bakes the export's batch into a Reshape (onnxruntime refuses batch + 1 as well):
    # not batch-generic, so tract's symbolic shape analysis rightly refuses it with a symbolic batch
    **{(name, "symbolic", "tract"): ("forward fixes batch", "Failed analyse")
       for name in ("transformer_block", "torch_gpt_block", "zoo_bvlc_alexnet", "zoo_zfnet512", "zoo_resnet50",
                    "zoo_inception_v1", "zoo_inception_v2", "zoo_shufflenet")},
    # onnx.reference evaluates the zoo's opset-9 forward differently (BatchNormalization-9, LRN, Dropout: tests/zoo.py)
    **{(name, batch, "onnx.reference"): ("forward differs", "")
       for name in CONV[2:] for batch in ("static", "symbolic")},
    # DenseNet-121 away from kinks: float32 summation order in 3,136-term reductions (OpenVINO, tract: one
    # im2col Gemm; onnxruntime-web: a BatchNorm bias gradient's ReduceSum), measured against float64 in
    # docs/portability.md
    **{("zoo_densenet121", batch, runtime): ("differs", "")
       for batch in ("static", "symbolic") for runtime in ("openvino", "tract", "onnxruntime-web")},
}

FAST = ["linear_regression", "small_cnn", "transformer_block", "torch_mlp_ce"]


def _cases(names: List[str]) -> List[portability.Case]:
    every = portability.example_cases() + portability.torch_cases()
    found = [c for c in every if c.name in names]
    if any(n.startswith("zoo_") for n in names):
        found += portability.zoo_cases([n[len("zoo_"):] for n in names if n.startswith("zoo_")])
    found = [portability.away_from_kinks(c)[0] for c in found]
    return [v for c in found for v in (c, portability.symbolic_batch(c))]


def _check_runtimes(case: portability.Case) -> None:
    """``case`` (already away from its kinks) against onnxruntime in every runtime present, as ``KNOWN`` says."""
    grad = portability.gradient_model(case, "portable")
    batch = "symbolic" if case.symbolic else "static"
    present = [r for r in portability.RUNTIMES if portability.available(r)]
    results = {r: portability.compare(case, r, "portable", grad) for r in present}
    for runtime, (status, detail) in results.items():
        expected, text = KNOWN.get((case.name, batch, runtime), ("matches", ""))
        assert status == expected and text in detail, f"{case.name} {batch} {runtime}: {status} {detail}"


def _skip_if_runtimes_missing() -> None:
    """After the runtimes present were checked: a skip naming those that are not."""
    missing = sorted(r for r in portability.RUNTIMES if not portability.available(r))
    if missing:
        pytest.skip(f"runtimes not installed: {missing} (pip install '.[portability]'; onnxruntime-web: "
                    "npm install --prefix DIR onnxruntime-web, ONNXGRAD_NODE_MODULES=DIR/node_modules)")


@pytest.mark.parametrize("case", _cases(FAST), ids=lambda c: f"{c.name}-{'symbolic' if c.symbolic else 'static'}")
def test_runtimes_match(case: portability.Case) -> None:
    _check_runtimes(case)
    _skip_if_runtimes_missing()


SLOW = ["torch_resnet_cnn", "torch_gpt_block"] + CONV[2:]


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_runtimes_match_slow(name: str) -> None:
    for case in _cases([name]):  # both batches before any skip
        _check_runtimes(case)
    _skip_if_runtimes_missing()


def _require(runtime: str) -> None:
    if not portability.available(runtime):
        pytest.skip(f"{runtime} is not installed (pip install '.[portability]')")
