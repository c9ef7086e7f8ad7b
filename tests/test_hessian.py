"""Second derivatives: onnxgrad differentiates its own backward pass.

A small MLP, loss = sum(sigmoid(tanh(x W1 + b1) W2 + b2) * t + 0.5 * h * h), in float64:

* gradients of gradients: d/d[x, W1, b1] of the first gradient, checked entry by entry (the
  full Jacobian of the first gradient, i.e. Hessian blocks) against central differences of the
  first gradient;
* a Hessian-vector product gradients(sum(g * stop(v)), W1) with v a graph input, checked
  against (g(W1 + e v) - g(W1 - e v)) / 2e.
"""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxgrad
from onnxgrad.checking import check_gradients, session
from rulecheck import compare_with_reference, rand

D = TensorProto.DOUBLE
SHAPES = {"x": (3, 4), "W1": (4, 5), "b1": (5,), "W2": (5, 2), "b2": (2,), "t": (3, 2)}
FEEDS = {name: rand(*shape, seed=i) for i, (name, shape) in enumerate(SHAPES.items())}


def mlp(opset: int) -> onnx.ModelProto:
    axes = [helper.make_tensor("axes", TensorProto.INT64, [2], [0, 1])] if opset >= 13 else []
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["z1"]),
        helper.make_node("Add", ["z1", "b1"], ["a1"]),
        helper.make_node("Tanh", ["a1"], ["h"]),
        helper.make_node("MatMul", ["h", "W2"], ["z2"]),
        helper.make_node("Add", ["z2", "b2"], ["a2"]),
        helper.make_node("Sigmoid", ["a2"], ["o"]),
        helper.make_node("Mul", ["o", "t"], ["ot"]),
        helper.make_node("Mul", ["h", "h"], ["hh"]),
        helper.make_node("Mul", ["hh", "half"], ["hh2"]),
        helper.make_node("ReduceSum", ["ot", "axes"] if axes else ["ot"], ["s1"], keepdims=0),
        helper.make_node("ReduceSum", ["hh2", "axes"] if axes else ["hh2"], ["s2"], keepdims=0),
        helper.make_node("Sum", ["s1", "s2"], ["loss"]),
    ]
    graph = helper.make_graph(
        nodes, "mlp", [helper.make_tensor_value_info(n, D, s) for n, s in SHAPES.items()],
        [helper.make_tensor_value_info("loss", D, [])],
        [helper.make_tensor("half", D, [], [0.5])] + axes)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    onnx.checker.check_model(model, full_check=True)
    return model


def first_gradient(opset: int, wrt):
    result = onnxgrad.gradients(mlp(opset), "loss", wrt)
    assert all(result.names)
    return result


@pytest.mark.parametrize("opset", [9, 13, 18])
@pytest.mark.parametrize("first_wrt", ["x", "W1", "b1", "W2"])
def test_gradient_of_gradient(opset, first_wrt):
    first = first_gradient(opset, [first_wrt])
    # Every entry of d(first gradient)/d[x, W1, b1, W2] against central differences of it.
    report = check_gradients(first.model, ["x", "W1", "b1", "W2"], first.names, feeds=FEEDS)
    assert len(report.checks) == 4
    assert all(c.jacobian_ratio is not None for c in report.checks)
    assert report.ok, [c for c in report.checks if not c.ok]
    onnx.checker.check_model(report.gradient_model, full_check=True)
    u = {i.name: rand(*SHAPES[first_wrt], seed=9) for i in report.gradient_model.graph.input if i.name not in FEEDS}
    compare_with_reference(report.gradient_model, {**FEEDS, **u}, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("opset", [9, 13, 18])
def test_hessian_vector_product(opset):
    first = first_gradient(opset, ["W1"])
    (g_w1,) = first.names
    model = onnx.ModelProto()
    model.CopyFrom(first.model)
    model.graph.input.append(helper.make_tensor_value_info("v", D, SHAPES["W1"]))
    gv_nodes = [helper.make_node("Mul", [g_w1, "v"], ["gv"])]
    if opset >= 13:
        model.graph.initializer.append(helper.make_tensor("hvp_axes", TensorProto.INT64, [2], [0, 1]))
        gv_nodes.append(helper.make_node("ReduceSum", ["gv", "hvp_axes"], ["gv_sum"], keepdims=0))
    else:
        gv_nodes.append(helper.make_node("ReduceSum", ["gv"], ["gv_sum"], keepdims=0))
    model.graph.node.extend(gv_nodes)
    hvp_model, (hvp,) = onnxgrad.gradients(model, "gv_sum", "W1", stop_gradients=["v"])
    onnx.checker.check_model(hvp_model, full_check=True)

    v = rand(*SHAPES["W1"], seed=11)
    (analytic,) = session(hvp_model).run([hvp], {**FEEDS, "v": v})
    grad = session(first.model)
    e = 1e-5
    plus = grad.run([g_w1], {**FEEDS, "W1": FEEDS["W1"] + e * v})[0]
    minus = grad.run([g_w1], {**FEEDS, "W1": FEEDS["W1"] - e * v})[0]
    numeric = (plus - minus) / (2 * e)
    assert np.abs(analytic).max() > 1e-2  # the product is not trivially zero
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-9)
    compare_with_reference(hvp_model, {**FEEDS, "v": v}, rtol=1e-9, atol=1e-12)


def test_batched_matmul_gradient_of_gradient():
    # Batched and 1-D MatMul operands: the first gradient goes through Flatten, Transpose,
    # Unsqueeze and Squeeze, which the second differentiation must pass back through.
    shapes = {"x": (2, 3, 4), "W": (4, 5), "u": (5,)}
    feeds = {name: rand(*shape, seed=20 + i) for i, (name, shape) in enumerate(shapes.items())}
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["z"]),
        helper.make_node("Tanh", ["z"], ["h"]),
        helper.make_node("MatMul", ["h", "u"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["p"]),
        helper.make_node("ReduceSum", ["p", "axes"], ["loss"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes, "batched", [helper.make_tensor_value_info(n, D, s) for n, s in shapes.items()],
        [helper.make_tensor_value_info("loss", D, [])],
        [helper.make_tensor("axes", TensorProto.INT64, [2], [0, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 10)
    first = onnxgrad.gradients(model, "loss", ["x", "W", "u"])
    report = check_gradients(first.model, ["x", "W", "u"], first.names, feeds=feeds)
    assert len(report.checks) == 3 and all(c.jacobian_ratio is not None for c in report.checks)
    assert report.ok, [c for c in report.checks if not c.ok]
    onnx.checker.check_model(report.gradient_model, full_check=True)
