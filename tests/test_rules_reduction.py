"""Numeric tests of the reduction rules (one table, one checker), plus the tie convention."""

import numpy as np
import pytest
from onnx import TensorProto, helper

import onnxgrad
from onnxgrad.checking import session
from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params

# opset from which each op takes axes as an input instead of an attribute
INPUT_FORM = {"ReduceSum": 13}


def away(*shape, seed=0):
    """Values with |x| >= 0.3: away from the kinks of Abs/Sign."""
    x = rand(*shape, seed=seed)
    return np.sign(x) * (0.3 + np.abs(x))


def positive(*shape, seed=0):
    return rand(*shape, seed=seed, low=0.5, high=2.0)


def red(op, x, opset, axes=None, keepdims=None, noop=None, tag="", dynamic=False, **kw):
    """A ReduceXxx case in the attribute or input form its opset wants."""
    attrs = {}
    if keepdims is not None:
        attrs["keepdims"] = keepdims
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    inputs = [("x", x)]
    constant = ()
    if opset >= INPUT_FORM.get(op, 18):
        if axes is not None:
            inputs.append(("axes", np.asarray(axes, dtype=np.int64)))
            constant = () if dynamic else ("axes",)
    elif axes is not None:
        attrs["axes"] = list(axes)
    name = f"{op}/op{opset}/axes={axes}/k={keepdims}{'/noop' if noop else ''}{'/dyn' if dynamic else ''}{tag}"
    return Case(name, op, inputs, attrs, opset=opset, constant=constant, **kw)


X = rand(2, 3, 4)
CASES = [
    # ReduceSum: attribute form before 13, input form from 13
    red("ReduceSum", X, 11, axes=[1]),
    red("ReduceSum", X, 11, axes=[-1, 0], keepdims=0),
    red("ReduceSum", X, 11),
    red("ReduceSum", X, 13, axes=[-2], keepdims=0),
    red("ReduceSum", X, 13),
    red("ReduceSum", X, 13, axes=[], noop=1),
    red("ReduceSum", X, 13, axes=[], noop=0, keepdims=0),
    red("ReduceSum", X, 18, axes=[1], keepdims=0, symbolic_dims=["x"]),
    red("ReduceSum", X, 18, axes=[0], keepdims=0, symbolic_dims=["x"], tag="/batch"),
    # ReduceMean: attribute form before 18
    red("ReduceMean", X, 13, axes=[0, -1], keepdims=0),
    red("ReduceMean", X, 13),
    red("ReduceMean", X, 18, axes=[1]),
    red("ReduceMean", X, 18, axes=[0], keepdims=0, symbolic_dims=["x"]),
    red("ReduceMean", X, 18, axes=[], noop=1),
    # ReduceMax / ReduceMin (random data: no ties)
    red("ReduceMax", X, 13, axes=[1], keepdims=0),
    red("ReduceMax", X, 18, axes=[-1]),
    red("ReduceMax", X, 18, keepdims=0),
    red("ReduceMax", X, 18, axes=[0], keepdims=0, symbolic_dims=["x"]),
    red("ReduceMin", X, 11, axes=[0, 2]),
    red("ReduceMin", X, 18, axes=[2], keepdims=0),
    # ReduceProd, including slices with one and with two exact zeros
    red("ReduceProd", X, 13, axes=[1], keepdims=0),
    red("ReduceProd", X, 18, axes=[-1]),
    red("ReduceProd", np.array([[0.5, 0.0, 2.0, -1.5], [0.0, 1.2, 0.0, 0.7], [1.1, -0.9, 0.8, 1.3]]), 18,
        axes=[1], keepdims=0, tag="/zeros"),
    # (a slice whose gradient is exactly 0 beside nonzero ones: its O(step^2) central-difference
    # residue stays within the relative tolerance only next to a nonzero total, as in "/zeros")
    red("ReduceProd", np.array([[0.5, 0.0, 2.0], [1.1, 1.2, -0.7]]), 13, tag="/one-zero"),
    red("ReduceProd", X, 18, axes=[0], keepdims=0, symbolic_dims=["x"]),
    # the norms and log-sums
    red("ReduceSumSquare", X, 13, axes=[0], keepdims=0),
    red("ReduceSumSquare", X, 18, axes=[-1, 1]),
    red("ReduceL1", away(2, 3, 4), 13, axes=[2]),
    red("ReduceL1", away(2, 3, 4), 18, axes=[0, 1], keepdims=0),
    red("ReduceL2", X, 13, axes=[-1], keepdims=0),
    red("ReduceL2", X, 18),
    red("ReduceL2", X, 18, axes=[1], keepdims=0, symbolic_dims=["x"]),
    red("ReduceLogSum", positive(2, 3, 4), 13, axes=[1]),
    red("ReduceLogSum", positive(2, 3, 4), 18, axes=[0, -1], keepdims=0),
    red("ReduceLogSumExp", X, 13, axes=[0], keepdims=0),
    red("ReduceLogSumExp", X, 18, axes=[-1]),
    red("ReduceLogSumExp", X, 18, axes=[2], keepdims=0, symbolic_dims=["x"]),
    red("ReduceLogSumExp", X, 18, axes=[], noop=1),
    # no axes and noop_with_empty_axes: nothing is reduced, the elementwise part still applies
    red("ReduceMax", X, 18, noop=1, keepdims=0),
    red("ReduceProd", X, 18, axes=[], noop=1),
    red("ReduceSumSquare", X, 18, noop=1),
    red("ReduceL1", away(2, 3, 4), 18, axes=[], noop=1),
    red("ReduceL2", away(2, 3, 4), 18, noop=1),
    red("ReduceLogSum", positive(2, 3, 4), 18, axes=[], noop=1, keepdims=0),
    # axes known only at run time
    red("ReduceSum", X, 13, axes=[0, 2], dynamic=True),
    red("ReduceSum", X, 13, axes=[-1, 0], keepdims=0, dynamic=True),
    red("ReduceMean", X, 18, axes=[-1], dynamic=True),
    red("ReduceMean", X, 18, axes=[1, 2], keepdims=0, dynamic=True),
    red("ReduceMax", X, 18, axes=[-1, 0], keepdims=0, dynamic=True),
    red("ReduceL2", X, 18, axes=[1], keepdims=0, dynamic=True),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


# ReduceProd's rule is exact at zeros to first order only: the product of the others is formed as
# p / x away from zeros and by selection at them, so its own derivative misses the zero factors.
# Run-time axes without keepdims: dy is reshaped to a shape computed at run time, whose rank shape
# inference cannot see, so differentiating the backward pass again stops at the rank check.
FIRST_ORDER_ONLY = {c.id for c in CASES if c.op_type == "ReduceProd" and "zero" in c.id
                    or c.id.endswith("k=0/dyn")}


@pytest.mark.parametrize("case,dtype", second_order_params([c for c in CASES if c.id not in FIRST_ORDER_ONLY]))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


@pytest.mark.parametrize("op,opset", [("ReduceMax", 13), ("ReduceMin", 18)])
def test_ties_share_the_gradient(op, opset):
    x = np.array([[3.0, 1.0, 3.0, 3.0], [1.0, 1.0, 2.0, 2.0]], np.float32)
    if op == "ReduceMin":
        x = -x
    axes_input = opset >= 18
    node = helper.make_node(op, ["x", "axes"] if axes_input else ["x"], ["y"], keepdims=0,
                            **({} if axes_input else {"axes": [1]}))
    inits = [helper.make_tensor("axes", TensorProto.INT64, [1], [1])] if axes_input else []
    graph = helper.make_graph([node], "ties", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    res = onnxgrad.gradients(model, "y", "x", grad_ys=np.array([6.0, 4.0], np.float32))
    (dx,) = session(res.model).run([res.names[0]], {"x": x})
    np.testing.assert_allclose(dx, [[2, 0, 2, 2], [0, 0, 2, 2]])
