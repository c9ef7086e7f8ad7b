"""Numeric tests of the indexing rules (one table, one checker).

Gathers are tested WITH repeated indices below and from opset 16 (where the scatter-add is a
ScatterND/ScatterElements with reduction='add'), so both formulations of the scatter-add run.
"""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def i64(*v):
    return np.asarray(v, dtype=np.int64)


IDX_DUP = np.array([[0, 2], [-1, 0], [2, 2]], dtype=np.int64)  # repeats and a negative index
CASES = []
for _opset in (9, 13, 18):
    CASES += [
        Case(f"Gather/op{_opset}/axis0-dup", "Gather", [("x", rand(3, 4)), ("i", IDX_DUP)], opset=_opset),
        Case(f"Gather/op{_opset}/axis1-dup", "Gather", [("x", rand(2, 3, 4)), ("i", i64(2, 0, 2, -3))],
             {"axis": 1}, opset=_opset),
        Case(f"Gather/op{_opset}/axis-1-2d", "Gather", [("x", rand(2, 3)), ("i", IDX_DUP)], {"axis": -1},
             opset=_opset),
        Case(f"Gather/op{_opset}/scalar", "Gather", [("x", rand(2, 3, 4)), ("i", np.array(-2, np.int64))],
             {"axis": 2}, opset=_opset),
    ]
CASES += [
    Case("Gather/op13/N", "Gather", [("x", rand(2, 3, 4)), ("i", i64(1, 1, 0))], {"axis": 2}, opset=13,
         symbolic_dims=["x"]),
    Case("Gather/op18/N-axis0", "Gather", [("x", rand(3, 4)), ("i", i64(1, 1, 0, -1))], opset=18,
         symbolic_dims=["x"]),
    Case("Gather/op13/int32", "Gather", [("x", rand(3, 2)), ("i", np.array([2, 2, 0], np.int32))], opset=13),
    Case("Gather/op18/int32", "Gather", [("x", rand(3, 2)), ("i", np.array([2, -1, 0], np.int32))], opset=18),
]
for _opset in (11, 13, 18):
    CASES += [
        Case(f"GatherElements/op{_opset}/axis0-dup", "GatherElements",
             [("x", rand(3, 2)), ("i", np.array([[0, 2], [0, -1], [1, 2], [0, 2]], np.int64))], opset=_opset),
        Case(f"GatherElements/op{_opset}/axis-1-smaller", "GatherElements",
             [("x", rand(3, 4)), ("i", np.array([[3, 3, 0], [1, -1, 1]], np.int64))], {"axis": -1}, opset=_opset,
             # onnx.reference's GatherElements rejects indices smaller than data off the axis,
             # which the spec and onnxruntime allow
             reference=False),
        Case(f"GatherND/op{_opset}/dup", "GatherND",
             [("x", rand(3, 4, 2)), ("i", np.array([[[0, 1], [2, 3]], [[0, 1], [-1, 0]]], np.int64))],
             opset=_opset),
        Case(f"GatherND/op{_opset}/slices", "GatherND", [("x", rand(3, 4)), ("i", np.array([[1], [1], [0]], np.int64))],
             opset=_opset),
    ]
for _opset in (12, 13, 18):
    CASES += [
        Case(f"GatherND/op{_opset}/batch1", "GatherND",
             [("x", rand(2, 3, 4)), ("i", np.array([[[1], [1]], [[2], [0]]], np.int64))], {"batch_dims": 1},
             opset=_opset),
        Case(f"GatherND/op{_opset}/batch2", "GatherND",
             [("x", rand(2, 3, 4)), ("i", np.array([[[3], [3], [0]], [[1], [2], [2]]], np.int64))],
             {"batch_dims": 2}, opset=_opset),
    ]
CASES += [
    Case("GatherElements/op13/int32", "GatherElements",
         [("x", rand(3, 2)), ("i", np.array([[0, 2], [0, -1]], np.int32))], opset=13),
    Case("GatherElements/op18/N", "GatherElements", [("x", rand(3, 2)), ("i", np.array([[1, 1], [0, 1], [2, 2]]))],
         opset=18, symbolic_dims=["x", "i"]),
    Case("GatherND/op18/N-batch1", "GatherND",
         [("x", rand(2, 3, 4)), ("i", np.array([[[1, 0], [1, 0]], [[2, 3], [0, 1]]], np.int64))],
         {"batch_dims": 1}, opset=18, symbolic_dims=["x", "i"]),
    Case("GatherND/op13/N-batch1", "GatherND",
         [("x", rand(2, 3, 4)), ("i", np.array([[[1, 0], [1, 0]], [[2, 3], [0, 1]]], np.int64))],
         {"batch_dims": 1}, opset=13, symbolic_dims=["x", "i"]),
]
# scatters: no repeated indices with reduction none (the forward result would be unspecified)
SCATTER_IDX = np.array([[1, 0, 2], [0, 2, 1]], np.int64)
for _opset, _red in ((11, None), (13, None), (16, "add"), (18, "none"), (18, "add")):
    _attrs = {"reduction": _red} if _red else {}
    CASES += [
        Case(f"ScatterElements/op{_opset}/{_red}", "ScatterElements",
             [("x", rand(3, 3)), ("i", SCATTER_IDX), ("u", rand(2, 3, seed=1))], _attrs, opset=_opset),
        Case(f"ScatterElements/op{_opset}/{_red}/axis-1", "ScatterElements",
             [("x", rand(2, 4)), ("i", np.array([[3, -4], [0, 2]], np.int64)), ("u", rand(2, 2, seed=1))],
             {**_attrs, "axis": -1}, opset=_opset),
        Case(f"ScatterND/op{_opset}/{_red}", "ScatterND",
             [("x", rand(3, 4)), ("i", np.array([[2, 1], [0, 3], [2, 0]], np.int64)), ("u", rand(3, seed=1))],
             _attrs, opset=_opset),
        Case(f"ScatterND/op{_opset}/{_red}/rows", "ScatterND",
             [("x", rand(3, 4)), ("i", np.array([[2], [0]], np.int64)), ("u", rand(2, 4, seed=1))],
             _attrs, opset=_opset),
    ]
CASES += [
    Case("ScatterElements/op18/add-dup", "ScatterElements",
         [("x", rand(3, 2)), ("i", np.array([[1, 1], [1, 1]], np.int64)), ("u", rand(2, 2, seed=1))],
         {"reduction": "add"}, opset=18),
    Case("ScatterND/op18/add-dup", "ScatterND",
         [("x", rand(3, 2)), ("i", np.array([[1], [1]], np.int64)), ("u", rand(2, 2, seed=1))],
         {"reduction": "add"}, opset=18),
    # Trilu: upper/lower with and without k
    Case("Trilu/upper", "Trilu", [("x", rand(3, 4))], opset=14),
    Case("Trilu/lower-k", "Trilu", [("x", rand(2, 3, 4)), ("k", np.array(1, np.int64))], {"upper": 0}, opset=14,
         constant=["k"]),
    Case("Trilu/upper-k-neg", "Trilu", [("x", rand(4, 3)), ("k", np.array(-1, np.int64))], opset=18),
    Case("Trilu/N", "Trilu", [("x", rand(2, 3, 3))], {"upper": 0}, opset=18, symbolic_dims=["x"]),
    # CumSum: axis is an input; exclusive and reverse
    Case("CumSum/op11", "CumSum", [("x", rand(3, 4)), ("a", np.array(1, np.int64))], opset=11),
    Case("CumSum/op14/exclusive", "CumSum", [("x", rand(3, 4)), ("a", np.array(0, np.int32))], {"exclusive": 1},
         opset=14, constant=["a"]),
    Case("CumSum/op14/reverse", "CumSum", [("x", rand(3, 4)), ("a", np.array(-1, np.int64))], {"reverse": 1},
         opset=14, constant=["a"]),
    Case("CumSum/op18/both-N", "CumSum", [("x", rand(3, 4)), ("a", np.array(0, np.int64))],
         {"reverse": 1, "exclusive": 1}, opset=18, constant=["a"], symbolic_dims=["x"]),
    # TopK: k an attribute at opset 9, an input from 10; largest/sorted from 11
    Case("TopK/op9", "TopK", [("x", rand(3, 5))], {"k": 2}, opset=9, n_outputs=2),
    Case("TopK/op10/axis0", "TopK", [("x", rand(4, 3)), ("k", i64(3))], {"axis": 0}, opset=10, n_outputs=2,
         constant=["k"]),
    Case("TopK/op11/smallest", "TopK", [("x", rand(3, 5)), ("k", i64(2))], {"largest": 0}, opset=11, n_outputs=2,
         constant=["k"]),
    # sorted=0 leaves the order unspecified: onnx.reference and onnxruntime return different orders
    Case("TopK/op13/unsorted", "TopK", [("x", rand(2, 3, 4)), ("k", i64(3))], {"axis": 1, "sorted": 0}, opset=13,
         n_outputs=2, constant=["k"], reference=False),
    Case("TopK/op18/N", "TopK", [("x", rand(3, 5)), ("k", i64(2))], opset=18, n_outputs=2, constant=["k"],
         symbolic_dims=["x"]),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def test_unsupported_scatter_reduction_says_so():
    from rulecheck import build

    import onnxgrad

    case = Case("ScatterND/mul", "ScatterND", [("x", rand(3, 2)), ("i", np.array([[1]], np.int64)),
                                               ("u", rand(1, 2, seed=1))], {"reduction": "mul"}, opset=18)
    model, _, xs, ys = build(case, "float32")
    with pytest.raises(onnxgrad.errors.GradientArgumentError, match="reduction='mul'"):
        onnxgrad.gradients(model, ys, xs)
