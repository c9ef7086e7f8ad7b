"""Numeric tests of the elementwise rules (one table, one checker)."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import onnxgrad
from onnxgrad.checking import check_gradients, session
from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def away(*shape, seed=0, margin=0.2):
    """Values in [-1, -margin] u [margin, 1]: away from the kink at 0."""
    mag = rand(*shape, seed=seed, low=margin, high=1.0)
    sign = np.where(rand(*shape, seed=seed + 100) < 0, -1.0, 1.0)
    return mag * sign


def fractional(*shape, seed=0):
    """Values k + f with f in [0.15, 0.35] u [0.65, 0.85]: away from integers and halves."""
    k = np.floor(rand(*shape, seed=seed, low=-3, high=3))
    f = rand(*shape, seed=seed + 1, low=0.15, high=0.35) + np.where(rand(*shape, seed=seed + 2) < 0, 0.0, 0.5)
    return k + f


def mod_pair(*shape, seed=0):
    """(a, b) with a / b = n + f, f in [0.2, 0.8]: away from fmod's jumps, signs mixed."""
    b = away(*shape, seed=seed, margin=0.5) * 1.5
    n = np.floor(rand(*shape, seed=seed + 3, low=-3, high=3))
    return b * (n + rand(*shape, seed=seed + 4, low=0.2, high=0.8)), b


# Clip data: no element within 0.05 of the bounds -0.5 and 0.4.
CLIP_X = np.array([[-0.9, -0.6, -0.3, 0.0], [0.2, 0.33, 0.5, 0.8], [-0.42, 0.47, -0.7, 0.1]])
LO, HI = np.array(-0.5), np.array(0.4)

# Max/Min data: any two inputs differ by more than 0.1 everywhere; every input wins somewhere.
MM_A, MM_B, MM_C = rand(2, 3, seed=17), rand(3, seed=27), rand(2, 1, seed=37)

# onnxruntime has no float64 kernel for these forward ops (Clip only from opset 12).
F32 = ("float32",)

MOD_A, MOD_B = mod_pair(2, 3, seed=5)
MOD_BB = mod_pair(3, seed=6)[1]

CASES = [
    # arithmetic, broadcasting both ways, across opsets where the signatures changed
    Case("Add/broadcast", "Add", [("a", rand(2, 3)), ("b", rand(3, seed=1))]),
    Case("Add/opset9", "Add", [("a", rand(2, 1, 3)), ("b", rand(4, 1, seed=1))], opset=9),
    Case("Add/opset14-scalar", "Add", [("a", rand(2, 3)), ("b", rand(seed=1))], opset=14),
    Case("Sub/broadcast-left", "Sub", [("a", rand(1, 3)), ("b", rand(4, 3, seed=1))]),
    Case("Sub/opset9", "Sub", [("a", rand(2, 3)), ("b", rand(2, 3, seed=1))], opset=9),
    Case("Mul/broadcast-both", "Mul", [("a", rand(4, 1)), ("b", rand(1, 3, seed=1))]),
    Case("Mul/opset13", "Mul", [("a", rand(2, 3, 4)), ("b", rand(3, 1, seed=1))], opset=13),
    Case("Div", "Div", [("a", rand(2, 3)), ("b", rand(2, 3, seed=1, low=1, high=2))]),
    Case("Div/broadcast-opset9", "Div", [("a", rand(3)), ("b", away(2, 3, seed=1, margin=0.5))], opset=9),
    Case("Neg", "Neg", [("x", rand(5))]),
    Case("Pow/both", "Pow", [("a", rand(2, 3, low=0.5, high=1.5)), ("b", rand(2, 3, seed=1, low=-2, high=2))]),
    Case("Pow/broadcast-exponent", "Pow", [("a", rand(2, 3, low=0.5, high=1.5)), ("b", rand(3, seed=1))]),
    Case("Pow/opset9", "Pow", [("a", rand(4, low=0.5, high=2)), ("b", rand(seed=2, low=1, high=3))], opset=9),
    Case("Pow/opset12-int-exponent", "Pow", [("a", away(2, 3)), ("b", np.array([1, 2, 3], np.int64))], opset=12),
    Case("Pow/opset15-int32-exponent", "Pow", [("a", away(3)), ("b", np.array(3, np.int32))], opset=15),
    Case("Sum/one", "Sum", [("a", rand(2, 3))]),
    Case("Sum/three-broadcast", "Sum", [("a", rand(2, 3)), ("b", rand(3, seed=1)), ("c", rand(2, 1, seed=2))]),
    Case("Sum/opset9", "Sum", [("a", rand(2, 3)), ("b", rand(1, 3, seed=1))], opset=9),
    Case("Mean/three-broadcast", "Mean", [("a", rand(2, 3)), ("b", rand(3, seed=1)), ("c", rand(2, 1, seed=2))],
         dtypes=F32),
    Case("Mean/opset9", "Mean", [("a", rand(4)), ("b", rand(4, seed=1))], opset=9, dtypes=F32),
    Case("Max/one", "Max", [("a", rand(2, 3))]),
    Case("Max/three-broadcast", "Max", [("a", MM_A), ("b", MM_B), ("c", MM_C)]),
    Case("Max/opset9", "Max", [("a", MM_A), ("b", MM_B)], opset=9),
    Case("Min/three-broadcast", "Min", [("a", MM_A), ("b", MM_B), ("c", MM_C)]),
    Case("Min/opset12", "Min", [("a", MM_A), ("c", MM_C)], opset=12),
    Case("Where/broadcast", "Where",
         [("c", np.array([[True, False, True]])), ("x", rand(2, 1)), ("y", rand(2, 3, seed=1))]),
    Case("Where/opset9", "Where", [("c", np.array([True, False, False, True])), ("x", rand(4)), ("y", rand(seed=1))],
         opset=9),
    Case("Mod/fmod", "Mod", [("a", MOD_A), ("b", MOD_B)], attrs={"fmod": 1}, opset=10),
    Case("Mod/fmod-broadcast", "Mod", [("a", MOD_A), ("b", MOD_BB)], attrs={"fmod": 1}, opset=13),
    # fmod=0 (floor) is defined for floats from opset 28
    Case("Mod/floor-opset28", "Mod", [("a", MOD_A), ("b", MOD_BB)], opset=28),
    # identity and casts
    Case("Identity", "Identity", [("x", rand(2, 2))]),
    Case("Cast/to-double", "Cast", [("x", rand(2, 3))], attrs={"to": TensorProto.DOUBLE}),
    Case("Cast/to-double-opset21", "Cast", [("x", rand(2, 3))], attrs={"to": TensorProto.DOUBLE}, opset=21),
    # float32 only: a float64 x cast down to float is too coarse for float64 finite differences
    Case("Cast/to-float-opset9", "Cast", [("x", rand(2, 3))], attrs={"to": TensorProto.FLOAT}, opset=9,
         dtypes=("float32",)),
    Case("CastLike/to-double", "CastLike", [("x", rand(2, 3)), ("t", np.zeros(1, np.float64))], opset=15),
    Case("CastLike/to-float", "CastLike", [("x", rand(2, 3)), ("t", np.zeros(1, np.float32))], opset=19),
    # Clip: attributes before 11, optional inputs from 11
    Case("Clip/attrs-opset9", "Clip", [("x", CLIP_X)], attrs={"min": -0.5, "max": 0.4}, opset=9, dtypes=F32),
    Case("Clip/attr-min-only-opset9", "Clip", [("x", CLIP_X)], attrs={"min": -0.5}, opset=9, dtypes=F32),
    Case("Clip/attr-max-only-opset9", "Clip", [("x", CLIP_X)], attrs={"max": 0.4}, opset=9, dtypes=F32),
    Case("Clip/inputs", "Clip", [("x", CLIP_X), ("lo", LO), ("hi", HI)], opset=11, dtypes=F32),
    Case("Clip/inputs-opset13", "Clip", [("x", CLIP_X), ("lo", LO), ("hi", HI)], opset=13),
    Case("Clip/min-only", "Clip", [("x", CLIP_X), ("lo", LO)], opset=12),
    Case("Clip/max-only", "Clip", [("x", CLIP_X), ("lo", None), ("hi", HI)], opset=12),
    Case("Clip/none", "Clip", [("x", CLIP_X)], opset=11, dtypes=F32),
    Case("Clip/min-above-max", "Clip", [("x", CLIP_X), ("lo", HI), ("hi", LO)], opset=13),
    # unary math
    Case("Abs", "Abs", [("x", away(3, 4))]),
    Case("Sqrt", "Sqrt", [("x", rand(3, 4, low=0.3, high=2))]),
    Case("Reciprocal", "Reciprocal", [("x", away(3, 4, margin=0.4))]),
    Case("Exp", "Exp", [("x", rand(3, 4))]),
    Case("Log", "Log", [("x", rand(3, 4, low=0.3, high=2))]),
    Case("Sin", "Sin", [("x", rand(3, 4, low=-3, high=3))]),
    Case("Sin/opset22", "Sin", [("x", rand(3, 4, low=-3, high=3))], opset=22),
    Case("Cos", "Cos", [("x", rand(3, 4, low=-3, high=3))]),
    Case("Tan", "Tan", [("x", rand(3, 4))], dtypes=F32),
    Case("Tanh", "Tanh", [("x", rand(3, 4))]),
    Case("Tanh/opset9", "Tanh", [("x", rand(3))], opset=9),
    Case("Sigmoid", "Sigmoid", [("x", rand(3, 4, low=-3, high=3))]),
    Case("Erf", "Erf", [("x", rand(3, 4, low=-2, high=2))], dtypes=F32),
    Case("Erf/opset9", "Erf", [("x", rand(5))], opset=9, dtypes=F32),
    Case("Asin", "Asin", [("x", rand(3, 4, low=-0.9, high=0.9))], dtypes=F32),
    Case("Acos", "Acos", [("x", rand(3, 4, low=-0.9, high=0.9))], dtypes=F32),
    Case("Atan", "Atan", [("x", rand(3, 4, low=-3, high=3))], dtypes=F32),
    Case("Sinh", "Sinh", [("x", rand(3, 4, low=-2, high=2))], dtypes=F32),
    Case("Cosh", "Cosh", [("x", rand(3, 4, low=-2, high=2))], dtypes=F32),
    Case("Asinh", "Asinh", [("x", rand(3, 4, low=-3, high=3))], dtypes=F32),
    Case("Acosh", "Acosh", [("x", rand(3, 4, low=1.2, high=3))], dtypes=F32),
    Case("Atanh", "Atanh", [("x", rand(3, 4, low=-0.9, high=0.9))], dtypes=F32),
    Case("Acosh/opset22", "Acosh", [("x", rand(3, 4, low=1.2, high=3))], opset=22, dtypes=F32),
    # piecewise constant: zero gradient
    Case("Floor", "Floor", [("x", fractional(3, 4))]),
    Case("Ceil", "Ceil", [("x", fractional(3, 4))]),
    Case("Round", "Round", [("x", fractional(3, 4))], opset=11),
    Case("Round/opset22", "Round", [("x", fractional(3, 4))], opset=22),
    Case("Sign", "Sign", [("x", away(3, 4))], opset=9),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def _model(nodes, inputs, outputs, opset):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    return model


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_tie_splits_evenly(op_type):
    t = helper.make_tensor_value_info
    model = _model([helper.make_node(op_type, ["a", "b"], ["y"])],
                   [t("a", TensorProto.DOUBLE, [3]), t("b", TensorProto.DOUBLE, [3])],
                   [t("y", TensorProto.DOUBLE, [3])], 13)
    model, names = onnxgrad.gradients(model, "y", ["a", "b"])
    # a tie, then a wins, then b wins (for Max; the other way round for Min)
    da, db = session(model).run(names, {"a": np.array([1.0, 2.0, 3.0]), "b": np.array([1.0, 0.0, 5.0])})
    a_wins = [1.0, 0.0] if op_type == "Max" else [0.0, 1.0]
    np.testing.assert_array_equal(da, [0.5] + a_wins)
    np.testing.assert_array_equal(db, [0.5] + a_wins[::-1])


@pytest.mark.parametrize("op_type", ["Max", "Min"])
def test_tie_of_a_tensor_with_itself(op_type):
    # Max(x, x, x) = x: the even split gives 1/3 + 1/3 + 1/3 = 1, the true derivative, so even
    # central differences agree.
    t = helper.make_tensor_value_info
    model = _model([helper.make_node(op_type, ["x", "x", "x"], ["y"])], [t("x", TensorProto.DOUBLE, [2, 3])],
                   [t("y", TensorProto.DOUBLE, [2, 3])], 13)
    report = check_gradients(model, ["x"], ["y"])
    assert report.ok and len(report.checks) == 1, report.checks
    model, (name,) = onnxgrad.gradients(model, "y", "x")
    (dx,) = session(model).run([name], {"x": rand(2, 3)})
    np.testing.assert_allclose(dx, np.ones((2, 3)), rtol=1e-12)


def test_mod_fmod0_float_before_opset28_is_rejected():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    model = _model([helper.make_node("Mod", ["a", "a"], ["y"], fmod=0)], [a], [y], 27)
    with pytest.raises(ValueError, match="opset 28"):
        onnxgrad.gradients(model, "y", "a")


def test_cast_from_integer_has_no_gradient():
    # x is an integer: nothing flows back, x is unconnected.
    x = helper.make_tensor_value_info("x", TensorProto.INT64, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    model = _model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)], [x], [y], 13)
    assert onnxgrad.gradients(model, "y", "x").names == [None]
