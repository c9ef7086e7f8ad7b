"""Gradients through function bodies (onnxgrad/functions.py): model-local functions, as the dynamo
exporter (export_modules_as_functions) and onnxscript write them, and ONNX ops whose schema
defines a function body, differentiated through that body when they have no rule."""

from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rulecheck import Case, check_case, compare_with_reference, feeds_for, rand

import onnxgrad
from onnxgrad import registry
from onnxgrad.checking import check_gradients, session

D = TensorProto.DOUBLE
DOMAIN = "pkg.torch.nn.modules"


def node(op: str, ins: List[str], outs: List[str], **attrs):
    return helper.make_node(op, ins, outs, **attrs)


def linear_tanh(refs: bool) -> onnx.FunctionProto:
    """``LinearTanh(x, w, b; alpha=1.0) = tanh(z) + elu(-exp(z), alpha)`` with ``z = x @ w + b``,
    as a module exported as a function. With ``refs``, ``alpha`` references the caller's
    attribute (default 1.0); otherwise it is 1.5."""
    elu = node("Elu", ["m"], ["e"], **({} if refs else {"alpha": 1.5}))
    if refs:
        elu.attribute.append(onnx.AttributeProto(name="alpha", ref_attr_name="alpha", type=onnx.AttributeProto.FLOAT))
    nodes = [node("MatMul", ["x", "w"], ["xw"]), node("Add", ["xw", "b"], ["z"]), node("Tanh", ["z"], ["t"]),
             node("Exp", ["z"], ["ez"]), node("Neg", ["ez"], ["m"]), elu, node("Add", ["t", "e"], ["y"])]
    f = helper.make_function(DOMAIN, "LinearTanh", ["x", "w", "b"], ["y"], nodes, [helper.make_opsetid("", 18)])
    if refs:
        f.attribute_proto.append(helper.make_attribute("alpha", 1.0))
    return f


def block(refs: bool) -> onnx.FunctionProto:
    """``Block(x, w1, b1, w2) = LinearTanh(LinearTanh(x, w1, b1; alpha=2), w2, 0) + x * x``: a
    function calling another, with one input used twice."""
    nodes = [node("LinearTanh", ["x", "w1", "b1"], ["h"], domain=DOMAIN, **({"alpha": 2.0} if refs else {})),
             node("Constant", [], ["zero"], value=numpy_helper.from_array(np.zeros(3), "value")),
             node("LinearTanh", ["h", "w2", "zero"], ["o"], domain=DOMAIN),
             node("Mul", ["x", "x"], ["xx"]), node("Add", ["o", "xx"], ["y"])]
    return helper.make_function(DOMAIN, "Block", ["x", "w1", "b1", "w2"], ["y"], nodes,
                                [helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)])


def model_with_functions(refs: bool = True) -> onnx.ModelProto:
    nodes = [node("Block", ["x", "w1", "b1", "w2"], ["h"], domain=DOMAIN),
             node("LinearTanh", ["h", "w2", "b1"], ["y"], domain=DOMAIN, **({"alpha": 0.5} if refs else {})),
             node("Sin", ["x"], ["side"])]  # off the gradient path
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "exported", [vi("x", D, [2, 3]), vi("w1", D, [3, 3]), vi("b1", D, [3]),
                                                  vi("w2", D, [3, 3])], [vi("y", D, [2, 3]), vi("side", D, [2, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(DOMAIN, 1)],
                          functions=[linear_tanh(refs), block(refs)])
    m.ir_version = 9
    return m


def feeds() -> Dict[str, np.ndarray]:
    return {"x": rand(2, 3), "w1": rand(3, 3, seed=1), "b1": rand(3, seed=2), "w2": rand(3, 3, seed=3)}


@pytest.mark.parametrize("refs", [True, False])
def test_local_functions_numeric(refs: bool) -> None:
    """Nested local functions, attribute references with defaults and overrides, an input used twice."""
    model = model_with_functions(refs)
    xs = ["x", "w1", "b1", "w2"]
    report = check_gradients(model, xs, ["y"], feeds=feeds())
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert len(report.checks) == len(xs)
    bad = [c for c in report.checks if not c.ok]
    assert not bad, [(c.name, c.analytic, c.numeric, c.jacobian_ratio) for c in bad]
    if not refs:  # onnx.reference cannot run a local function whose body references attributes
        compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds()))


def test_local_functions_keep_the_forward_graph() -> None:
    """The forward part is left as it was (function calls are replayed in the backward part, not inlined)."""
    model = model_with_functions()
    res = onnxgrad.gradients(model, "y", ["x", "w2"])
    forward = [n.SerializeToString() for n in model.graph.node]
    assert [n.SerializeToString() for n in res.model.graph.node[:len(forward)]] == forward
    assert {f.name for f in res.model.functions} == {"LinearTanh", "Block"}
    assert all(n.domain in ("", "ai.onnx") for n in res.model.graph.node[len(forward):])


def test_stop_gradient_marker_inside_function_model() -> None:
    """onnxgrad.stop_gradient's marker (itself a local function) still stops backprop."""
    marked = onnxgrad.stop_gradient(model_with_functions(), ["h"])
    res = onnxgrad.gradients(marked, "y", ["x", "w1", "w2", "h"])
    assert res.names[0] is None and res.names[1] is None  # x and w1 reach y only through h, which is stopped
    assert res.names[2] is not None and res.names[3] is not None
    # the marker is an identity in the forward pass, so only the gradient at h itself is a plain derivative
    report = check_gradients(marked, ["h"], ["y"], feeds=feeds())
    assert report.ok, [(c.name, c.analytic, c.numeric) for c in report.checks]


def test_user_rule_wins_over_function_body() -> None:
    """A rule registered for a function op is used instead of its body."""
    calls = []

    @onnxgrad.register_gradient("LinearTanh", domain=DOMAIN)
    def _rule(g, op, dy):
        calls.append(op.name)
        return [None, None, None]

    try:
        res = onnxgrad.gradients(model_with_functions(), "y", ["w2"])
    finally:
        registry.unregister("LinearTanh", DOMAIN)
    assert calls and res.names == [None]


# ---------------------------------------------------------------- schema function bodies
# Ops with a hand rule whose schema also has a function body: with the rule removed they must
# differentiate through the body (as LinearAttention or SwiGLU, which have no rule, do).
SCHEMA_CASES = [
    Case("Elu", "Elu", [("x", rand(2, 3))], {"alpha": 0.7}, opset=18),
    Case("Celu", "Celu", [("x", rand(2, 3))], {"alpha": 2.0}, opset=12, dtypes=("float32",)),  # float only
    Case("Selu", "Selu", [("x", rand(2, 3))], opset=18),
    Case("Softplus", "Softplus", [("x", rand(2, 3))], opset=18),
    Case("Softsign", "Softsign", [("x", rand(2, 3))], opset=18),
    Case("HardSigmoid", "HardSigmoid", [("x", rand(2, 3))], {"alpha": 0.4}, opset=18),
    Case("LeakyRelu", "LeakyRelu", [("x", rand(2, 3))], {"alpha": 0.3}, opset=16),
    Case("PRelu", "PRelu", [("x", rand(2, 3)), ("slope", rand(3, seed=1))], opset=16),
    # the body's Softplus-22 has no float64 kernel in onnxruntime
    Case("Mish", "Mish", [("x", rand(2, 3))], opset=22, dtypes=("float32",)),
    # axes given: onnx 1.23's inference of the body with the default axes fails (full_check); float only:
    # the body's epsilon is a float constant
    Case("MeanVarianceNormalization", "MeanVarianceNormalization", [("x", rand(2, 3, 2, 2))], {"axes": [0, 2, 3]},
         opset=18, dtypes=("float32",)),
    # float only: the body computes in stash_type, float, while onnxruntime's float64 kernel computes in double
    Case("LayerNormalization", "LayerNormalization", [("x", rand(2, 4)), ("s", rand(4, seed=1)),
                                                      ("b", rand(4, seed=2))], {"axis": -1}, opset=18,
         dtypes=("float32",)),
    Case("ReduceLogSumExp", "ReduceLogSumExp", [("x", rand(2, 3)), ("axes", np.array([1], np.int64))],
         opset=18, constant=["axes"]),
    Case("ReduceL2", "ReduceL2", [("x", rand(2, 3, low=0.5))], {"keepdims": 0}, opset=18),
    Case("ReduceSumSquare", "ReduceSumSquare", [("x", rand(2, 3))], opset=18),
    Case("Gelu-tanh", "Gelu", [("x", rand(2, 3))], {"approximate": "tanh"}, opset=20),
    Case("Clip", "Clip", [("x", rand(2, 3)), ("lo", np.array(-0.5)), ("hi", np.array(0.6))], opset=13,
         wrt=["x"]),
    Case("SoftmaxCrossEntropyLoss", "SoftmaxCrossEntropyLoss",
         [("scores", rand(3, 4)), ("labels", np.array([0, 3, 1], np.int64))], opset=13),
]


def test_double_stash_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """float64 inputs with stash_type double (what the float64 judge makes of a float32
    LayerNormalization): the body computes in double throughout and its gradient is the rule's."""
    vi = helper.make_tensor_value_info
    graph = helper.make_graph([node("LayerNormalization", ["x", "s", "b"], ["y"], stash_type=TensorProto.DOUBLE)], "ln",
                              [vi("x", D, [2, 4]), vi("s", D, [4]), vi("b", D, [4])], [vi("y", D, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    feeds = {"x": rand(2, 4).astype(np.float64), "s": rand(4, seed=1).astype(np.float64),
             "b": rand(4, seed=2).astype(np.float64)}
    by_rule = onnxgrad.gradients(model, "y", ["x", "s", "b"])
    monkeypatch.setitem(registry._REGISTRY, ("", "LayerNormalization"), [])
    by_body = onnxgrad.gradients(model, "y", ["x", "s", "b"])
    casts = [a.i for n in by_body.model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert casts and set(casts) == {TensorProto.DOUBLE}
    runs = [session(r.model).run(r.names, feeds) for r in (by_rule, by_body)]
    for a, b in zip(*runs):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case,dtype", [pytest.param(c, d, id=f"{c.id}-{d}") for c in SCHEMA_CASES for d in c.dtypes])
def test_schema_function_body(case: Case, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(registry._REGISTRY, ("", case.op_type), [])
    check_case(case, dtype)


def test_schema_without_body_for_these_attributes(monkeypatch: pytest.MonkeyPatch) -> None:
    """onnx builds no LayerNormalization body for stash_type double; onnxgrad builds it from the
    float stash's only for float64 inputs (then only the stash is float there), so float32 inputs
    with a double stash get a clear error, not a silent None."""
    monkeypatch.setitem(registry._REGISTRY, ("", "LayerNormalization"), [])
    vi = helper.make_tensor_value_info
    F = TensorProto.FLOAT
    graph = helper.make_graph([node("LayerNormalization", ["x", "s", "b"], ["y"], stash_type=TensorProto.DOUBLE)], "ln",
                              [vi("x", F, [2, 4]), vi("s", F, [4]), vi("b", F, [4])], [vi("y", F, [2, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(LookupError, match="builds no function body"):
        onnxgrad.gradients(model, "y", "x")
