"""``onnxgrad.gradients`` reproduces tf.gradients' behaviour (README.md), one test per point.

Models are built here with onnx.helper; gradient values come from onnxruntime (and
onnx.reference where the point is that any runtime runs the result).
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import onnxgrad
from onnxgrad import AggregationMethod, UnconnectedGradients
from onnxgrad.checking import check_gradients, session
from onnxgrad.registry import unregister

FLOAT, DOUBLE, INT64 = TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.INT64


def make(nodes, inputs, outputs, inits=(), opset=17, ir_version=8, functions=(), domains=()) -> onnx.ModelProto:
    """A model from nodes; ``inputs``/``outputs`` are (name, elem_type, shape) triples."""
    graph = helper.make_graph(
        nodes, "test", [helper.make_tensor_value_info(*i) for i in inputs],
        [helper.make_tensor_value_info(*o) for o in outputs], list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    model = helper.make_model(graph, opset_imports=opsets, functions=list(functions), ir_version=ir_version)
    onnx.checker.check_model(model, full_check=True)
    return model


def const(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(value, dtype), name))


def init(name: str, value, dtype=np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def node(op_type: str, inputs: Sequence[str], output: str, **attrs) -> onnx.NodeProto:
    return helper.make_node(op_type, list(inputs), [output], name=output, **attrs)


def values(result: onnxgrad.GradientsResult, feeds: Optional[Dict[str, np.ndarray]] = None,
           runtime: str = "onnxruntime") -> List[Optional[np.ndarray]]:
    """Gradient values aligned with ``result.names`` (None stays None); the model is fully checked."""
    onnx.checker.check_model(result.model, full_check=True)
    feeds = feeds or {}
    wanted = [n for n in result.names if n is not None]
    if not wanted:
        return [None] * len(result.names)
    run = session(result.model).run if runtime == "onnxruntime" else ReferenceEvaluator(result.model).run
    got = dict(zip(wanted, run(wanted, feeds)))
    return [None if n is None else got[n] for n in result.names]


def scalar(x: np.ndarray) -> float:
    return float(np.asarray(x).reshape(()))


def new_nodes(result: onnxgrad.GradientsResult, original: onnx.ModelProto) -> List[onnx.NodeProto]:
    return list(result.model.graph.node)[len(original.graph.node):]


# ---------------------------------------------------------------------------------- models
def square_chain() -> onnx.ModelProto:
    """y = x^2, y2 = y^4 (as (y*y)*(y*y)), x a scalar input."""
    return make([node("Mul", ["x", "x"], "y"), node("Mul", ["y", "y"], "y_sq"), node("Mul", ["y_sq", "y_sq"], "y2")],
                [("x", FLOAT, [])], [("y", FLOAT, []), ("y2", FLOAT, [])])


def linear_chain() -> onnx.ModelProto:
    """y = 2x, z = 3y."""
    return make([const("two", 2.0), const("three", 3.0), node("Mul", ["two", "x"], "y"),
                 node("Mul", ["three", "y"], "z")],
                [("x", FLOAT, [])], [("z", FLOAT, [])])


def docs_example() -> onnx.ModelProto:
    """tf.gradients' stop_gradients example: a = 0, b = 2a, y = a + b."""
    return make([const("a", 0.0), const("two", 2.0), node("Mul", ["two", "a"], "b"), node("Add", ["a", "b"], "y")],
                [], [("y", FLOAT, [])])


def scaled() -> onnx.ModelProto:
    """y = x * c (c = [1, 2, 3]), y2 = -x; x is [2, 3] float; k is an int64 initializer."""
    return make([node("Mul", ["x", "c"], "y"), node("Neg", ["x"], "y2")],
                [("x", FLOAT, [2, 3])], [("y", FLOAT, [2, 3]), ("y2", FLOAT, [2, 3])],
                [init("c", [1.0, 2.0, 3.0]), init("k", np.ones((2, 3)), np.int64)])


X23 = np.array([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]], np.float32)
C = np.array([1.0, 2.0, 3.0], np.float32)


# ---------------------------------------------------------------------------------- the algorithm
def test_single_names_are_wrapped():
    m = scaled()
    a = onnxgrad.gradients(m, "y", "x", grad_ys=2.0, stop_gradients="c")
    b = onnxgrad.gradients(m, ["y"], ["x"], grad_ys=[2.0], stop_gradients=["c"])
    assert a.names == b.names == ["gradients/x_grad"]
    assert a.model.SerializeToString() == b.model.SerializeToString()
    np.testing.assert_array_equal(values(a, {"x": X23})[0], np.broadcast_to(2 * C, (2, 3)))


def test_result_is_a_named_tuple():
    res = onnxgrad.gradients(scaled(), "y", "x")
    model, names = res
    assert isinstance(res, onnxgrad.GradientsResult) and model is res.model and names is res.names


def test_y_feeding_another_y_accumulates():
    res = onnxgrad.gradients(square_chain(), ["y", "y2"], "x")
    assert scalar(values(res, {"x": np.array(3.0, np.float32)})[0]) == 17502.0


def test_intermediate_xs_get_total_derivatives():
    res = onnxgrad.gradients(linear_chain(), "z", ["x", "y"])
    assert [scalar(v) for v in values(res, {"x": np.array(1.5, np.float32)})] == [6.0, 3.0]


def test_stop_gradients_docs_example():
    partial = onnxgrad.gradients(docs_example(), "y", ["a", "b"], stop_gradients=["a", "b"])
    total = onnxgrad.gradients(docs_example(), "y", ["a", "b"])
    assert [scalar(v) for v in values(partial)] == [1.0, 1.0]
    assert [scalar(v) for v in values(total)] == [3.0, 1.0]


def cubic() -> onnx.ModelProto:
    """h = x * x; z = h * x + x."""
    return make([node("Mul", ["x", "x"], "h"), node("Mul", ["h", "x"], "hx"), node("Add", ["hx", "x"], "z")],
                [("x", FLOAT, [])], [("z", FLOAT, [])])


def test_stop_gradients_on_an_intermediate():
    x = {"x": np.array(2.0, np.float32)}
    assert scalar(values(onnxgrad.gradients(cubic(), "z", "x"), x)[0]) == 13.0  # 3x^2 + 1
    stopped = onnxgrad.gradients(cubic(), "z", ["x", "h"], stop_gradients="h")
    dx, dh = values(stopped, x)
    assert (scalar(dx), scalar(dh)) == (5.0, 2.0)  # h held constant: h + 1; dz/dh = x still returned


def unconnected_model() -> onnx.ModelProto:
    return make([node("Tanh", ["x1"], "y")], [("x1", DOUBLE, [2, 3]), ("x2", DOUBLE, ["N", 4])],
                [("y", DOUBLE, [2, 3])])


@pytest.mark.parametrize("option", [UnconnectedGradients.NONE, "none"])
def test_unconnected_none(option):
    res = onnxgrad.gradients(unconnected_model(), "y", ["x1", "x2"], unconnected_gradients=option)
    assert res.names == ["gradients/x1_grad", None]
    assert [o.name for o in res.model.graph.output] == ["y", "gradients/x1_grad"]


@pytest.mark.parametrize("option", [UnconnectedGradients.ZERO, "zero"])
def test_unconnected_zero_has_shape_and_dtype_of_x(option):
    res = onnxgrad.gradients(unconnected_model(), "y", ["x1", "x2"], unconnected_gradients=option)
    assert res.names == ["gradients/x1_grad", "gradients/x2_grad"]
    x1 = np.full((2, 3), 0.5)
    for batch in (1, 5):
        for runtime in ("onnxruntime", "onnx.reference"):
            d1, d2 = values(res, {"x1": x1, "x2": np.ones((batch, 4))}, runtime)
            np.testing.assert_allclose(d1, 1 - np.tanh(x1) ** 2)
            assert d2.dtype == np.float64 and d2.shape == (batch, 4) and not d2.any()


def test_nothing_reached_at_all():
    res = onnxgrad.gradients(unconnected_model(), "y", "x2")
    assert res.names == [None]
    assert [o.name for o in res.model.graph.output] == ["y"]


# ---------------------------------------------------------------------------------- grad_ys
@pytest.mark.parametrize("grad_ys,expected", [
    (None, np.broadcast_to(C, (2, 3))),
    ([None], np.broadcast_to(C, (2, 3))),
    (2.0, np.broadcast_to(2 * C, (2, 3))),
    ([3], np.broadcast_to(3 * C, (2, 3))),
    (np.arange(6.0).reshape(2, 3), np.arange(6.0).reshape(2, 3) * C),
    ([np.array([1.0, -1.0, 0.5])], np.broadcast_to(np.array([1.0, -1.0, 0.5]) * C, (2, 3))),
    (["x"], X23 * C),  # an existing tensor
], ids=["None", "None-entry", "number", "int", "array", "broadcast-array", "existing-tensor"])
def test_grad_ys_forms(grad_ys, expected):
    res = onnxgrad.gradients(scaled(), "y", "x", grad_ys=grad_ys)
    (dx,) = values(res, {"x": X23})
    assert dx.dtype == np.float32
    np.testing.assert_allclose(dx, expected, rtol=1e-6)


def test_grad_ys_new_input_fed_at_run_time():
    res = onnxgrad.gradients(scaled(), ["y", "y2"], "x", grad_ys=["seed", None])
    seed_input = [i for i in res.model.graph.input if i.name == "seed"]
    assert len(seed_input) == 1
    tt = seed_input[0].type.tensor_type
    assert tt.elem_type == FLOAT and [d.dim_value for d in tt.shape.dim] == [2, 3]
    seed = np.arange(6, dtype=np.float32).reshape(2, 3)
    for runtime in ("onnxruntime", "onnx.reference"):
        (dx,) = values(res, {"x": X23, "seed": seed}, runtime)
        np.testing.assert_allclose(dx, seed * C - 1)


def test_grad_ys_list_with_none_entries():
    res = onnxgrad.gradients(scaled(), ["y", "y2"], "x", grad_ys=[None, 2.0])
    np.testing.assert_allclose(values(res, {"x": X23})[0], np.broadcast_to(C - 2, (2, 3)))


def test_grad_ys_length_mismatch():
    with pytest.raises(ValueError, match=r"^Passed 3 grad_ys for 2 ys$"):
        onnxgrad.gradients(scaled(), ["y", "y2"], "x", grad_ys=[None, None, None])


@pytest.mark.parametrize("grad_y", [np.array(["a", "b", "c"]), True, np.ones((2, 3), bool), "k"],
                         ids=["string-array", "bool", "bool-array", "int-tensor"])
def test_grad_ys_bad_dtype_is_type_error(grad_y):
    with pytest.raises(TypeError, match="grad_ys"):
        onnxgrad.gradients(scaled(), "y", "x", grad_ys=[grad_y])


def test_grad_ys_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        onnxgrad.gradients(scaled(), "y", "x", grad_ys=[np.ones((4, 4))])


# ---------------------------------------------------------------------------------- argument errors
def test_bad_unconnected_value():
    with pytest.raises(ValueError, match=r"Unknown value for unconnected_gradients: 'nonsense'"):
        onnxgrad.gradients(scaled(), "y", "x", unconnected_gradients="nonsense")


@pytest.mark.parametrize("method", [7, -1, "add_n", 1.0, True])
def test_bad_aggregation_method(method):
    with pytest.raises(ValueError, match=r"Invalid aggregation_method specified .*Accepted values are \[0, 1, 2\]"):
        onnxgrad.gradients(scaled(), "y", "x", aggregation_method=method)


def test_aggregation_method_seven_message():
    with pytest.raises(ValueError, match=r"^Invalid aggregation_method specified 7\. Accepted values are \[0, 1, 2\]$"):
        onnxgrad.gradients(scaled(), "y", "x", aggregation_method=7)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(ys="yy", xs="x"), "did you mean 'y'"),
    (dict(ys="y", xs="xx"), "did you mean 'x'"),
    (dict(ys="y", xs="x", stop_gradients=["cc"]), "did you mean 'c'"),
    (dict(ys="y", xs="nothing_like_it"), "'nothing_like_it'"),
    (dict(ys=[], xs="x"), "ys is empty"),
    (dict(ys="y", xs=[1]), "tensor names"),
    (dict(ys="y", xs="x", name=""), "name must be"),
])
def test_argument_errors_are_value_errors(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        onnxgrad.gradients(scaled(), **kwargs)


def test_unknown_name_lists_the_interface_when_nothing_is_close():
    with pytest.raises(ValueError) as info:
        onnxgrad.gradients(scaled(), "y", "qqqq")
    assert "'x'" in str(info.value) and "'y2'" in str(info.value)


def test_model_that_is_not_a_model():
    with pytest.raises(ValueError, match="ModelProto or a path"):
        onnxgrad.gradients(42, "y", "x")
    with pytest.raises(ValueError, match="not found"):
        onnxgrad.gradients("/nonexistent/model.onnx", "y", "x")


def mystery_model() -> onnx.ModelProto:
    """h = my.ops::Mystery(x) (no gradient rule), y = h * x."""
    return make([helper.make_node("Mystery", ["x"], ["h"], name="mystery_node", domain="my.ops"),
                 node("Mul", ["h", "x"], "y")],
                [("x", FLOAT, [3])], [("y", FLOAT, [3])], domains=["my.ops"])


def test_op_without_rule_is_lookup_error_naming_node_and_op():
    with pytest.raises(LookupError,
                       match=r"No gradient defined for operation 'mystery_node' \(op type: my\.ops::Mystery"):
        onnxgrad.gradients(mystery_model(), "y", "x")
    assert issubclass(onnxgrad.NoGradientError, LookupError)


def test_stop_gradients_avoids_the_lookup_error():
    res = onnxgrad.gradients(mystery_model(), "y", "x", stop_gradients="h")
    assert res.names == ["gradients/x_grad"]


# ---------------------------------------------------------------------------------- duplicates
def test_repeated_y_counts_twice():
    once = values(onnxgrad.gradients(scaled(), "y", "x"), {"x": X23})[0]
    twice = values(onnxgrad.gradients(scaled(), ["y", "y"], "x"), {"x": X23})[0]
    np.testing.assert_array_equal(twice, 2 * once)


def test_repeated_x_returns_the_same_gradient():
    res = onnxgrad.gradients(scaled(), "y", ["x", "c", "x"])
    assert res.names[0] == res.names[2] and res.names[0] != res.names[1]
    assert [o.name for o in res.model.graph.output] == ["y", "y2", "gradients/x_grad", "gradients/c_grad"]


def test_gradient_of_x_with_respect_to_itself():
    (ones,) = values(onnxgrad.gradients(scaled(), "x", "x"), {"x": X23})
    np.testing.assert_array_equal(ones, np.ones((2, 3), np.float32))
    seed = np.arange(6, dtype=np.float32).reshape(2, 3)
    (same,) = values(onnxgrad.gradients(scaled(), "x", "x", grad_ys=[seed]), {"x": X23})
    np.testing.assert_array_equal(same, seed)



def affine() -> onnx.ModelProto:
    """y = x @ w + b, s = Sum(y * y), with w [3, 2] and b [2] initializers."""
    return make([node("MatMul", ["x", "w"], "m"), node("Add", ["m", "b"], "y"), node("Mul", ["y", "y"], "yy"),
                 node("ReduceSum", ["yy"], "s", keepdims=0)],
                [("x", FLOAT, [2, 3])], [("s", FLOAT, [])],
                [init("w", [[1.0, -2.0], [0.5, 1.0], [-1.0, 0.25]]), init("b", [0.5, -1.5])])


def test_gradients_are_produced_under_their_output_names():
    # each gradient nobody else reads comes straight from its node (no Identity copy, as
    # tf.gradients returns the tensors themselves); a bias's gradient is one ReduceSum over the
    # broadcast axes, without a Reshape back
    m = affine()
    res = onnxgrad.gradients(m, "s", ["w", "b"])
    added = new_nodes(res, m)
    assert not [n for n in added if n.op_type in ("Identity", "Reshape")], [n.op_type for n in added]
    producers = {o: n.op_type for n in added for o in n.output}
    assert producers[res.names[1]] == "ReduceSum"
    y = X23 @ numpy_helper.to_array(m.graph.initializer[0]) + numpy_helper.to_array(m.graph.initializer[1])
    dw, db = values(res, {"x": X23})
    np.testing.assert_allclose(dw, X23.T @ (2 * y), rtol=1e-6)
    np.testing.assert_allclose(db, (2 * y).sum(axis=0), rtol=1e-6)


def test_a_gradient_other_nodes_read_is_copied():
    # y's gradient is also m's (Add passes it on unchanged) and the MatMul's rule reads it for
    # x's: it keeps its name and both y and m get an Identity of it; x's is nobody's input
    m = affine()
    res = onnxgrad.gradients(m, "s", ["y", "m", "x"])
    added = new_nodes(res, m)
    copies = [n for n in added if n.op_type == "Identity"]
    assert len(copies) == 2 and len({n.input[0] for n in copies}) == 1
    y = X23 @ numpy_helper.to_array(m.graph.initializer[0]) + numpy_helper.to_array(m.graph.initializer[1])
    dy, dm, dx = values(res, {"x": X23})
    np.testing.assert_allclose(dy, 2 * y, rtol=1e-6)
    np.testing.assert_array_equal(dm, dy)
    np.testing.assert_allclose(dx, 2 * y @ numpy_helper.to_array(m.graph.initializer[0]).T, rtol=1e-6)


def test_a_gradient_two_xs_share_is_renamed_once():
    # s = Sum(a + b): a's and b's gradients are one tensor; a's output is that tensor renamed,
    # b's an Identity of the new name
    m = make([node("Add", ["a", "b"], "t"), node("ReduceSum", ["t"], "s", keepdims=0)],
             [("a", FLOAT, [2, 3]), ("b", FLOAT, [2, 3])], [("s", FLOAT, [])])
    res = onnxgrad.gradients(m, "s", ["a", "b"])
    copies = [n for n in new_nodes(res, m) if n.op_type == "Identity"]
    assert [(list(n.input), list(n.output)) for n in copies] == [([res.names[0]], [res.names[1]])]
    da, db = values(res, {"a": X23, "b": X23})
    np.testing.assert_array_equal(da, np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(db, da)


# ---------------------------------------------------------------------------------- aggregation
def fan_out() -> onnx.ModelProto:
    """x reaches s through three edges: s = x * x + (-x)."""
    return make([node("Mul", ["x", "x"], "xx"), node("Neg", ["x"], "nx"), node("Add", ["xx", "nx"], "s")],
                [("x", FLOAT, [4])], [("s", FLOAT, [4])])


@pytest.mark.parametrize("method", [None, AggregationMethod.ADD_N, AggregationMethod.DEFAULT, 0])
def test_add_n_is_one_sum(method):
    m = fan_out()
    res = onnxgrad.gradients(m, "s", "x", aggregation_method=method)
    added = new_nodes(res, m)
    sums = [n for n in added if n.op_type == "Sum"]
    assert len(sums) == 1 and len(sums[0].input) == 3
    assert not [n for n in added if n.op_type == "Add"]


@pytest.mark.parametrize("method", [AggregationMethod.EXPERIMENTAL_TREE, AggregationMethod.EXPERIMENTAL_ACCUMULATE_N,
                                    1, 2])
def test_tree_and_accumulate_n_are_a_chain_of_add(method):
    m = fan_out()
    res = onnxgrad.gradients(m, "s", "x", aggregation_method=method)
    added = new_nodes(res, m)
    adds = [n for n in added if n.op_type == "Add"]
    assert not [n for n in added if n.op_type == "Sum"]
    assert len(adds) == 2 and adds[0].output[0] in adds[1].input  # a chain, not two independent sums


def test_aggregation_methods_agree():
    x = {"x": np.array([0.5, -1.0, 2.0, 3.0], np.float32)}
    got = [values(onnxgrad.gradients(fan_out(), "s", "x", aggregation_method=k), x)[0] for k in (0, 1, 2)]
    for g in got:
        np.testing.assert_array_equal(g, 2 * x["x"] - 1)


def test_single_contribution_is_not_aggregated():
    m = scaled()
    res = onnxgrad.gradients(m, "y", "x")
    assert not [n for n in new_nodes(res, m) if n.op_type in ("Sum", "Add")]


# ---------------------------------------------------------------------------------- names
def test_name_prefixes_every_new_node_and_tensor():
    m = fan_out()
    res = onnxgrad.gradients(m, "s", "x", name="backward")
    assert res.names == ["backward/x_grad"]
    for n in new_nodes(res, m):
        assert n.name.startswith("backward/"), n.name
        assert all(o.startswith("backward/") for o in n.output), n.output


def test_name_is_uniquified_when_taken():
    m = make([node("Mul", ["x", "x"], "gradients/already"), node("Neg", ["gradients/already"], "y")],
             [("x", FLOAT, [2])], [("y", FLOAT, [2])])
    res = onnxgrad.gradients(m, "y", "x")
    assert res.names == ["gradients_1/x_grad"]
    assert all(n.name.startswith("gradients_1/") for n in new_nodes(res, m))
    again = onnxgrad.gradients(res.model, "y", "x")  # differentiate the result: the prefix moves on
    assert again.names == ["gradients_2/x_grad"]
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(values(again, {"x": x})[0], -2 * x)


def test_gate_gradients_changes_nothing():
    a = onnxgrad.gradients(fan_out(), "s", "x", gate_gradients=True)
    b = onnxgrad.gradients(fan_out(), "s", "x")
    assert a.model.SerializeToString() == b.model.SerializeToString()


def test_callers_model_is_not_mutated():
    m = fan_out()
    before = m.SerializeToString()
    onnxgrad.gradients(m, "s", "x", grad_ys="seed")
    onnxgrad.stop_gradient(m, "xx")
    assert m.SerializeToString() == before


def test_deterministic_output():
    for m, ys, xs in ((fan_out(), "s", "x"), (square_chain(), ["y", "y2"], "x"), (mlp(13), "loss", MLP_PARAMS)):
        a = onnxgrad.gradients(m, ys, xs).model.SerializeToString()
        b = onnxgrad.gradients(m, ys, xs).model.SerializeToString()
        assert a == b


# ---------------------------------------------------------------------------------- integer tensors
def int_round_trip() -> onnx.ModelProto:
    """kf = float(int(x)); y = kf * x; z = kf + 1."""
    return make([node("Cast", ["x"], "k", to=INT64), node("Cast", ["k"], "kf", to=FLOAT),
                 node("Mul", ["kf", "x"], "y"), const("one", 1.0), node("Add", ["kf", "one"], "z")],
                [("x", FLOAT, [3])], [("y", FLOAT, [3]), ("z", FLOAT, [3])])


def test_integer_tensors_are_constants():
    x = {"x": np.array([1.7, 2.2, -3.6], np.float32)}
    (dx,) = values(onnxgrad.gradients(int_round_trip(), "y", "x"), x)
    np.testing.assert_array_equal(dx, [1.0, 2.0, -3.0])  # d(kf * x)/dx = kf: nothing flows through int k
    assert onnxgrad.gradients(int_round_trip(), "z", "x").names == [None]
    (zero,) = values(onnxgrad.gradients(int_round_trip(), "z", "x", unconnected_gradients="zero"), x)
    np.testing.assert_array_equal(zero, [0.0, 0.0, 0.0])


def test_integer_y_gets_no_gradient():
    assert onnxgrad.gradients(int_round_trip(), "k", "x").names == [None]


# ---------------------------------------------------------------------------------- stop_gradient()
def marked_chain() -> onnx.ModelProto:
    """h = tanh(x); k = h * x; z = k * x."""
    return make([node("Tanh", ["x"], "h"), node("Mul", ["h", "x"], "k"), node("Mul", ["k", "x"], "z")],
                [("x", FLOAT, [2, 3])], [("z", FLOAT, [2, 3])])


def test_stop_gradient_marker_runs_unchanged():
    m = marked_chain()
    marked = onnxgrad.stop_gradient(m, "h")
    onnx.checker.check_model(marked, full_check=True)
    assert [n.op_type for n in marked.graph.node] == ["Tanh", "StopGradient", "Mul", "Mul"]
    plain = session(m).run(["z"], {"x": X23})[0]
    np.testing.assert_array_equal(session(marked).run(["z"], {"x": X23})[0], plain)
    np.testing.assert_allclose(ReferenceEvaluator(marked).run(["z"], {"x": X23})[0], plain, rtol=1e-6)


def test_stop_gradient_marker_stops_backprop():
    marked = onnxgrad.stop_gradient(marked_chain(), "h")
    x = X23.astype(np.float64)
    h = np.tanh(x)
    res = onnxgrad.gradients(marked, "z", ["x", "h"])
    for runtime in ("onnxruntime", "onnx.reference"):
        dx, dh = values(res, {"x": X23}, runtime)
        np.testing.assert_allclose(dx, 2 * x * h, rtol=1e-5)  # h held constant
        np.testing.assert_allclose(dh, x * x, rtol=1e-5)  # d/dh itself is still available
    unmarked = values(onnxgrad.gradients(marked_chain(), "z", "x"), {"x": X23})[0]
    np.testing.assert_allclose(unmarked, 2 * x * h + x * x * (1 - h * h), rtol=1e-5)


def test_stop_gradient_marker_with_stop_gradients_whichever_first():
    marked = onnxgrad.stop_gradient(marked_chain(), "h")
    x = X23.astype(np.float64)
    (dx,) = values(onnxgrad.gradients(marked, "z", "x", stop_gradients="k"), {"x": X23})
    np.testing.assert_allclose(dx, x * np.tanh(x), rtol=1e-5)  # k (nearer z) stops first
    (dx,) = values(onnxgrad.gradients(marked_chain(), "z", "x", stop_gradients="h"), {"x": X23})
    np.testing.assert_allclose(dx, 2 * x * np.tanh(x), rtol=1e-5)  # stop_gradients alone, at h
    marked_k = onnxgrad.stop_gradient(marked_chain(), "k")
    (dx,) = values(onnxgrad.gradients(marked_k, "z", "x", stop_gradients="h"), {"x": X23})
    np.testing.assert_allclose(dx, x * np.tanh(x), rtol=1e-5)  # the marker at k (nearer z) stops first


def test_stop_gradient_marks_are_idempotent_and_inputs_are_ignored():
    once = onnxgrad.stop_gradient(marked_chain(), ["h", "x"])
    twice = onnxgrad.stop_gradient(once, "k")
    assert [n.op_type for n in twice.graph.node] == ["Tanh", "StopGradient", "Mul", "StopGradient", "Mul"]
    assert len(twice.functions) == 1
    onnx.checker.check_model(twice, full_check=True)
    (dx,) = values(onnxgrad.gradients(twice, "z", "x"), {"x": X23})
    np.testing.assert_allclose(dx, X23 * np.tanh(X23), rtol=1e-5)


def test_stop_gradient_on_an_old_ir_version_model():
    m = marked_chain()
    m.ir_version = 7
    marked = onnxgrad.stop_gradient(m, "h")
    onnx.checker.check_model(marked, full_check=True)
    np.testing.assert_array_equal(session(marked).run(["z"], {"x": X23})[0], session(m).run(["z"], {"x": X23})[0])


def test_stop_gradient_unknown_name():
    with pytest.raises(ValueError, match="did you mean 'h'"):
        onnxgrad.stop_gradient(marked_chain(), "hh")


# ---------------------------------------------------------------------------------- register_gradient
def cube_model() -> onnx.ModelProto:
    """y = my.ops::Cube(x) with a model-local function (x * x * x) so runtimes can run it."""
    fn = helper.make_function("my.ops", "Cube", ["x"], ["y"],
                              [helper.make_node("Mul", ["x", "x"], ["x2"]),
                               helper.make_node("Mul", ["x2", "x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    return make([helper.make_node("Cube", ["x"], ["y"], name="cube", domain="my.ops")],
                [("x", FLOAT, [2, 3])], [("y", FLOAT, [2, 3])], functions=[fn], domains=["my.ops"])


@pytest.fixture
def clean_cube():
    yield
    unregister("Cube", "my.ops")


def test_register_gradient_for_a_custom_op(clean_cube):
    @onnxgrad.register_gradient("Cube", domain="my.ops")
    def cube_grad(g, op, dy):
        x = op.input(0)
        return [g.Mul(dy, g.Mul(g.const(3.0, like=x), g.Mul(x, x)))]

    res = onnxgrad.gradients(cube_model(), "y", "x")
    for runtime in ("onnxruntime", "onnx.reference"):
        np.testing.assert_allclose(values(res, {"x": X23}, runtime)[0], 3 * X23 * X23, rtol=1e-6)
    assert check_gradients(cube_model(), ["x"], ["y"], feeds={"x": X23}).ok


def test_duplicate_registration_is_an_error_unless_override(clean_cube):
    onnxgrad.register_gradient("Cube", domain="my.ops")(lambda g, op, dy: [dy])
    with pytest.raises(ValueError, match="already registered"):
        onnxgrad.register_gradient("Cube", domain="my.ops")(lambda g, op, dy: [g.Neg(dy)])
    with pytest.raises(ValueError, match="already registered"):
        onnxgrad.no_gradient("Cube", domain="my.ops")
    onnxgrad.register_gradient("Cube", domain="my.ops", override=True)(lambda g, op, dy: [g.Neg(dy)])
    np.testing.assert_array_equal(values(onnxgrad.gradients(cube_model(), "y", "x"), {"x": X23})[0], -np.ones((2, 3)))


def test_builtin_rules_cannot_be_replaced_by_accident():
    with pytest.raises(ValueError, match="already registered"):
        onnxgrad.register_gradient("Mul")(lambda g, op, dy: [dy, dy])


def test_no_gradient_stops_silently(clean_cube):
    onnxgrad.no_gradient("Cube", domain="my.ops")
    assert onnxgrad.gradients(cube_model(), "y", "x").names == [None]
    (zero,) = values(onnxgrad.gradients(cube_model(), "y", "x", unconnected_gradients="zero"), {"x": X23})
    np.testing.assert_array_equal(zero, np.zeros((2, 3)))


def test_rule_returning_the_wrong_number_of_gradients(clean_cube):
    onnxgrad.register_gradient("Cube", domain="my.ops")(lambda g, op, dy: [])
    with pytest.raises(ValueError, match="returned 0 gradients"):
        onnxgrad.gradients(cube_model(), "y", "x")


# ---------------------------------------------------------------------------------- real models
MLP_PARAMS = ["w1", "b1", "w2", "b2"]


def mlp(opset: int, batch="N") -> onnx.ModelProto:
    """loss = mean((tanh(x @ w1 + b1) @ w2 + b2 - target)^2); x [batch, 4], 5 hidden units, 2 outputs."""
    rng = np.random.default_rng(opset)
    inits = [init("w1", rng.standard_normal((4, 5)) * 0.5), init("b1", rng.standard_normal(5) * 0.1),
             init("w2", rng.standard_normal((5, 2)) * 0.5), init("b2", rng.standard_normal(2) * 0.1)]
    nodes = [node("MatMul", ["x", "w1"], "xw1"), node("Add", ["xw1", "b1"], "pre"), node("Tanh", ["pre"], "h"),
             node("MatMul", ["h", "w2"], "hw2"), node("Add", ["hw2", "b2"], "out"),
             node("Sub", ["out", "target"], "err"),
             node("Mul", ["err", "err"], "sq"), node("ReduceMean", ["sq"], "loss", keepdims=0)]
    return make(nodes, [("x", FLOAT, [batch, 4]), ("target", FLOAT, [batch, 2])],
                [("out", FLOAT, [batch, 2]), ("loss", FLOAT, [])], inits, opset=opset)


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_mlp_at_several_opsets(opset):
    m = mlp(opset, batch=3)
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((3, 4)).astype(np.float32),
             "target": rng.standard_normal((3, 2)).astype(np.float32)}
    report = check_gradients(m, MLP_PARAMS + ["x"], ["loss"], feeds=feeds)
    bad = [(c.name, c.analytic, c.numeric, c.jacobian_ratio) for c in report.checks if not c.ok]
    assert not bad and len(report.checks) == 5
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert {o.domain for o in report.gradient_model.opset_import} == {""}
    assert all(n.domain in ("", "ai.onnx") for n in report.gradient_model.graph.node)
    res = onnxgrad.gradients(m, "loss", MLP_PARAMS)
    ort_values, ref_values = values(res, feeds), values(res, feeds, "onnx.reference")
    for a, b in zip(ort_values, ref_values):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_symbolic_batch_dimension():
    m = mlp(13)
    res = onnxgrad.gradients(m, ["loss", "out"], MLP_PARAMS + ["x"], grad_ys=[None, 0.5])
    assert all(n.domain in ("", "ai.onnx") for n in res.model.graph.node)
    grad_out = {o.name: o for o in res.model.graph.output}[res.names[-1]]
    assert grad_out.type.tensor_type.shape.dim[0].dim_param == "N"
    for batch in (1, 5):
        rng = np.random.default_rng(batch)
        feeds = {"x": rng.standard_normal((batch, 4)).astype(np.float32),
                 "target": rng.standard_normal((batch, 2)).astype(np.float32)}
        ort_values = values(res, feeds)
        assert ort_values[-1].shape == (batch, 4)
        for a, b in zip(ort_values, values(res, feeds, "onnx.reference")):
            np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        report = check_gradients(m, MLP_PARAMS + ["x"], ["loss", "out"], feeds=feeds)
        assert report.ok, [(c.name, c.analytic, c.numeric) for c in report.checks if not c.ok]


def test_gradients_of_gradients():
    """The backward pass is differentiable again: d/dx of d(x^3)/dx = 6x."""
    m = make([node("Mul", ["x", "x"], "x2"), node("Mul", ["x2", "x"], "y")], [("x", DOUBLE, [3])], [("y", DOUBLE, [3])])
    first = onnxgrad.gradients(m, "y", "x")
    second = onnxgrad.gradients(first.model, first.names[0], "x")
    x = np.array([0.5, -1.0, 2.0])
    np.testing.assert_allclose(values(second, {"x": x})[0], 6 * x)
    assert second.names[0].startswith("gradients_1/")


def test_complex_y_without_grad_ys_is_a_type_error():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["y"])], "g",
        [helper.make_tensor_value_info("c", TensorProto.COMPLEX64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.COMPLEX64, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(TypeError, match="complex"):
        onnxgrad.gradients(model, "y", "c")


def test_sparse_initializer_is_named_not_called_dangling():
    """A sparse initializer is a valid model onnxgrad cannot take: said as such, not as a dangling input."""
    values = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [2.0])
    indices = onnx.helper.make_tensor("w_idx", onnx.TensorProto.INT64, [1], [0])
    sparse = onnx.helper.make_sparse_tensor(values, indices, [3])
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Mul", ["x", "w"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [3])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [3])], sparse_initializer=[sparse])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with pytest.raises(onnxgrad.errors.InvalidModelError, match="'w' as sparse tensors"):
        onnxgrad.gradients(model, "y", "x")
