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
    # reduction mul (opset 16+) and max/min (18+), WITH repeated indices. max/min: the values are
    # distinct (no ties), and the output at a position is data or an update, either way.
    Case("ScatterElements/op16/mul-dup", "ScatterElements",
         [("x", rand(3, 3)), ("i", np.array([[1, 0, 2], [1, 2, 2]], np.int64)), ("u", rand(2, 3, seed=1))],
         {"reduction": "mul"}, opset=16),
    Case("ScatterND/op16/mul-dup-rows", "ScatterND",
         [("x", rand(3, 4)), ("i", np.array([[2], [0], [2]], np.int64)), ("u", rand(3, 4, seed=1))],
         {"reduction": "mul"}, opset=16),
    # zeros among the factors: one zero (its own gradient is the product of the others) and two
    # zeros at a position (every gradient there is 0)
    Case("ScatterND/op18/mul-dup-zeros", "ScatterND",
         [("x", np.array([[0.5, 0.0], [0.7, -1.2], [0.0, 0.9]])),
          ("i", np.array([[0, 1], [2, 0], [2, 0], [1, 1], [0, 0]], np.int64)),
          ("u", np.array([1.3, 0.8, -0.6, 0.0, 1.1]))], {"reduction": "mul"}, opset=18),
    Case("ScatterElements/op18/mul-axis-1-zeros", "ScatterElements",
         [("x", np.array([[0.4, 0.0, -0.9], [1.2, 0.6, -0.3]])), ("i", np.array([[1, -2], [0, 0]], np.int64)),
          ("u", np.array([[0.7, -1.1], [0.0, 0.8]]))], {"reduction": "mul", "axis": -1}, opset=18),
]
_SCATTER_MAX = [("x", np.array([[0.1, 0.9, -0.4], [0.5, -0.8, 0.3], [-0.2, 0.6, 0.75]])),
                ("i", np.array([[1, 0, 2], [1, 2, 2]], np.int64)),
                ("u", np.array([[0.35, 0.2, -0.5], [0.65, 0.4, 0.95]]))]
_SCATTER_ND_MAX = [("x", np.array([[0.1, 0.9, -0.4, 0.2], [0.5, -0.8, 0.3, -0.6], [-0.2, 0.6, 0.75, 0.0]])),
                   ("i", np.array([[2], [0], [2]], np.int64)),
                   ("u", np.array([[0.45, -0.7, 0.85, -0.35], [0.25, 0.95, -0.15, 0.55], [-0.1, 0.7, 0.15, 0.65]]))]
for _red in ("max", "min"):
    CASES += [
        Case(f"ScatterElements/op18/{_red}-dup", "ScatterElements", _SCATTER_MAX, {"reduction": _red}, opset=18),
        Case(f"ScatterElements/op18/{_red}-dup-axis-1", "ScatterElements",
             [_SCATTER_MAX[0], ("i", np.array([[2, 2], [0, -3], [1, -1]], np.int64)),
              ("u", np.array([[0.35, -0.5], [0.65, 0.4], [0.55, 0.95]]))], {"reduction": _red, "axis": -1},
             opset=18),
        Case(f"ScatterND/op18/{_red}-dup-rows", "ScatterND", _SCATTER_ND_MAX, {"reduction": _red}, opset=18),
        Case(f"ScatterND/op18/{_red}-dup-elements", "ScatterND",
             [_SCATTER_ND_MAX[0], ("i", np.array([[2, 1], [0, -1], [2, 1], [1, 0]], np.int64)),
              ("u", np.array([0.45, -0.7, 0.85, -0.35]))], {"reduction": _red}, opset=18),
    ]
CASES += [
    # Trilu: upper/lower with and without k
    Case("Trilu/upper", "Trilu", [("x", rand(3, 4))], opset=14),
    Case("Trilu/lower-k", "Trilu", [("x", rand(2, 3, 4)), ("k", np.array(1, np.int64))], {"upper": 0}, opset=14,
         constant=["k"]),
    Case("Trilu/upper-k-neg", "Trilu", [("x", rand(4, 3)), ("k", np.array(-1, np.int64))], opset=18),
    Case("Trilu/N", "Trilu", [("x", rand(2, 3, 3))], {"upper": 0}, opset=18, symbolic_dims=["x"]),
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

CASES += [
    # Scatter (deprecated ScatterElements of opsets 9-10, which onnx.reference does not implement)
    Case("Scatter/axis0", "Scatter", [("d", rand(3, 3)), ("i", np.array([[1, 0, 2], [0, 2, 1]], np.int64)),
                                      ("u", rand(2, 3, seed=1))], opset=10, reference=False),
    Case("Scatter/axis1", "Scatter", [("d", rand(2, 4)), ("i", np.array([[3, 1], [0, 2]], np.int64)),
                                      ("u", rand(2, 2, seed=1))], attrs={"axis": 1}, opset=9,
         reference=False),
    # TensorScatter (opset 24)
    Case("TensorScatter/linear", "TensorScatter", [("cache", rand(2, 5, 3)), ("upd", rand(2, 2, 3, seed=1)),
                                                   ("w", i64(1, 3))], opset=24),
    Case("TensorScatter/circular-axis1", "TensorScatter",
         [("cache", rand(2, 4, 3, 2)), ("upd", rand(2, 3, 3, 2, seed=1)), ("w", i64(2, 0))],
         attrs={"mode": "circular", "axis": 1}, opset=24),
    Case("TensorScatter/no-write-indices", "TensorScatter", [("cache", rand(2, 3, 4)), ("upd", rand(2, 1, 4, seed=2))],
         opset=24),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


# Scatter mul is exact at zeros to first order only (as ReduceProd): the product of the other
# factors is formed by selection there, so its own derivative misses the zero factors.
FIRST_ORDER_ONLY = {c.id for c in CASES if c.attrs.get("reduction") == "mul" and "zeros" in c.id}


@pytest.mark.parametrize("case,dtype", second_order_params([c for c in CASES if c.id not in FIRST_ORDER_ONLY]))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def test_scatter_max_ties_split_the_gradient_evenly():
    """ReduceMax's convention: the data element and an update equal to the output share dy."""
    from rulecheck import build

    import onnxgrad
    from onnxgrad.checking import session

    case = Case("ScatterND/max-tie", "ScatterND", [("x", np.array([0.5, 0.2])), ("i", np.array([[0], [0]], np.int64)),
                                                   ("u", np.array([0.5, 0.1]))], {"reduction": "max"}, opset=18)
    model, feeds, xs, ys = build(case, "float64")
    result = onnxgrad.gradients(model, ys, xs)
    d_x, d_u = session(result.model).run(result.names, feeds)
    np.testing.assert_array_equal(d_x, [0.5, 1.0])
    np.testing.assert_array_equal(d_u, [0.5, 0.0])
