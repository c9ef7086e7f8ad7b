"""Numeric tests of MatMul, Gemm and Det (one table, one checker), plus symbolic batch dimensions."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxgrad.checking import check_gradients
from rulecheck import (Case, check_case, check_second_order, compare_with_reference, params, rand,
                       second_order_params)

CASES = [
    Case("MatMul/2d", "MatMul", [("a", rand(3, 4)), ("b", rand(4, 5, seed=1))]),
    Case("MatMul/2d-opset9", "MatMul", [("a", rand(3, 4)), ("b", rand(4, 2, seed=1))], opset=9),
    Case("MatMul/vec-mat", "MatMul", [("a", rand(4)), ("b", rand(4, 5, seed=1))]),
    Case("MatMul/mat-vec", "MatMul", [("a", rand(3, 4)), ("b", rand(4, seed=1))]),
    Case("MatMul/vec-vec", "MatMul", [("a", rand(4)), ("b", rand(4, seed=1))], opset=13),
    Case("MatMul/batch-mat", "MatMul", [("a", rand(2, 3, 4)), ("b", rand(4, 5, seed=1))]),
    Case("MatMul/batch4-mat-opset9", "MatMul", [("a", rand(2, 2, 3, 4)), ("b", rand(4, 2, seed=1))], opset=9),
    Case("MatMul/mat-batch", "MatMul", [("a", rand(3, 4)), ("b", rand(2, 4, 5, seed=1))]),
    Case("MatMul/batch-batch", "MatMul", [("a", rand(2, 3, 4)), ("b", rand(2, 4, 5, seed=1))]),
    Case("MatMul/broadcast-batch", "MatMul", [("a", rand(2, 1, 3, 4)), ("b", rand(3, 4, 2, seed=1))]),
    Case("MatMul/broadcast-rank", "MatMul", [("a", rand(3, 2, 4)), ("b", rand(2, 3, 4, 2, seed=1))], opset=13),
    Case("MatMul/vec-batch", "MatMul", [("a", rand(4)), ("b", rand(2, 4, 3, seed=1))]),
    Case("MatMul/batch-vec", "MatMul", [("a", rand(2, 3, 4)), ("b", rand(4, seed=1))]),
    Case("MatMul/batch-vec-opset9", "MatMul", [("a", rand(2, 3, 4)), ("b", rand(4, seed=1))], opset=9),
]

M, K, N = 3, 4, 2
for ta in (0, 1):
    for tb in (0, 1):
        a = rand(*((K, M) if ta else (M, K)))
        b = rand(*((N, K) if tb else (K, N)), seed=1)
        trans = {"transA": ta, "transB": tb}
        CASES += [
            Case(f"Gemm/tA{ta}tB{tb}", "Gemm", [("a", a), ("b", b), ("c", rand(M, N, seed=2))], attrs=trans),
            Case(f"Gemm/tA{ta}tB{tb}-alpha-beta-opset9", "Gemm", [("a", a), ("b", b), ("c", rand(N, seed=2))],
                 attrs={**trans, "alpha": 0.7, "beta": -1.3}, opset=9),
            Case(f"Gemm/tA{ta}tB{tb}-no-c-opset11", "Gemm", [("a", a), ("b", b)], attrs={**trans, "alpha": 2.0},
                 opset=11),
        ]
A, B = rand(M, K), rand(K, N, seed=1)
CASES += [
    Case("Gemm/c-row", "Gemm", [("a", A), ("b", B), ("c", rand(1, N, seed=2))], opset=13),
    Case("Gemm/c-column", "Gemm", [("a", A), ("b", B), ("c", rand(M, 1, seed=2))], attrs={"beta": 0.5}),
    Case("Gemm/c-scalar", "Gemm", [("a", A), ("b", B), ("c", rand(seed=2))], attrs={"beta": 2.0}, opset=11),
    Case("Gemm/c-scalar-opset9", "Gemm", [("a", A), ("b", B), ("c", rand(1, seed=2))], opset=9),
    Case("Gemm/beta0", "Gemm", [("a", A), ("b", B), ("c", rand(M, N, seed=2))], attrs={"beta": 0.0}),
]

# Det: cofactors via Det of minors (also singular-safe); onnxruntime runs Det in float32 only
F32 = ("float32",)
CASES += [
    Case("Det/3x3", "Det", [("x", rand(3, 3) + 2 * np.eye(3))], opset=11, dtypes=F32),
    Case("Det/batch", "Det", [("x", rand(2, 4, 4, seed=1))], opset=22, dtypes=F32),
    Case("Det/2x2-batch2", "Det", [("x", rand(2, 3, 2, 2, seed=2))], dtypes=F32),
    Case("Det/1x1", "Det", [("x", rand(2, 1, 1, seed=4, low=0.5))], dtypes=F32),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def _symbolic_model(a_shape, b_shape, opset):
    a = helper.make_tensor_value_info("a", TensorProto.DOUBLE, a_shape)
    b = helper.make_tensor_value_info("b", TensorProto.DOUBLE, b_shape)
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = min(model.ir_version, 10)
    inferred = onnx.shape_inference.infer_shapes(model)
    model.graph.output[0].CopyFrom(inferred.graph.output[0])
    return model


@pytest.mark.parametrize("a_shape,b_shape,feed_shapes,opset", [
    (["batch", 3, 4], [4, 5], [(2, 3, 4), (4, 5)], 13),                  # flattened weight gradient
    (["batch", 3, 4], [4, 5], [(3, 3, 4), (4, 5)], 9),
    ([3, 4], ["batch", 4, 5], [(3, 4), (2, 4, 5)], 13),                  # summed over the batch
    ([1, 3, 4], ["batch", 4, 2], [(1, 3, 4), (3, 4, 2)], 13),            # 1 broadcast to "batch"
    (["batch", 3, 4], ["batch", 4, 2], [(2, 3, 4), (2, 4, 2)], 13),
    (["batch", "rows", 4], [4], [(2, 3, 4), (4,)], 13),
    ([4], ["batch", 4, 3], [(4,), (2, 4, 3)], 13),
])
def test_matmul_symbolic_batch(a_shape, b_shape, feed_shapes, opset):
    model = _symbolic_model(a_shape, b_shape, opset)
    feeds = {"a": rand(*feed_shapes[0]), "b": rand(*feed_shapes[1], seed=1)}
    report = check_gradients(model, ["a", "b"], ["y"], feeds=feeds)
    assert report.ok and len(report.checks) == 2, report.checks
    onnx.checker.check_model(report.gradient_model, full_check=True)
    u = {i.name: rand(*np.shape(feeds["a"] @ feeds["b"]), seed=3) for i in report.gradient_model.graph.input
         if i.name not in feeds}
    compare_with_reference(report.gradient_model, {**feeds, **u})


def test_gemm_gradients_before_opset_11_skip_their_stand_in_c():
    """Gemm needs a C before opset 11: the gradient's Gemms get a scalar zero with beta=0, which
    runtimes skip, rather than beta=1, which onnxruntime adds over the whole result."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [3, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])
    c = helper.make_tensor("c", TensorProto.FLOAT, [1], [0.5])
    graph = helper.make_graph([helper.make_node("Gemm", ["a", "b", "c"], ["y"])], "g", [a, b], [y], [c])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 9)])
    model.ir_version = 7
    report = check_gradients(model, ["a", "b"], ["y"], feeds={"a": rand(3, 4).astype(np.float32),
                                                           "b": rand(4, 2, seed=1).astype(np.float32)})
    assert report.ok, report.checks
    backward = [n for n in report.gradient_model.graph.node[1:] if n.op_type == "Gemm"]
    assert len(backward) == 2
    assert all(len(n.input) == 3 and helper.get_attribute_value(next(x for x in n.attribute if x.name == "beta")) == 0
               for n in backward)
