"""Numeric tests (one table, one checker) of rules/scans.py: CumSum and CumProd."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def _with_zeros(*shape: int) -> np.ndarray:
    x = rand(*shape, low=0.5, high=1.5) * np.sign(rand(*shape, seed=3))
    x.reshape(-1)[[1, 5]] = 0.0  # CumProd's gradient must not divide by x
    return x


CASES = [
    # CumSum: axis is an input; exclusive and reverse
    Case("CumSum/op11", "CumSum", [("x", rand(3, 4)), ("a", np.array(1, np.int64))], opset=11),
    Case("CumSum/op14/exclusive", "CumSum", [("x", rand(3, 4)), ("a", np.array(0, np.int32))], {"exclusive": 1},
         opset=14, constant=["a"]),
    Case("CumSum/op14/reverse", "CumSum", [("x", rand(3, 4)), ("a", np.array(-1, np.int64))], {"reverse": 1},
         opset=14, constant=["a"]),
    Case("CumSum/op18/both-N", "CumSum", [("x", rand(3, 4)), ("a", np.array(0, np.int64))],
         {"reverse": 1, "exclusive": 1}, opset=18, constant=["a"], symbolic_dims=["x"]),
    # CumProd (opset 26) with zeros in the input, every exclusive/reverse combination
    *[Case(f"CumProd/axis{ax}-ex{e}-rev{r}", "CumProd", [("x", _with_zeros(3, 4)), ("axis", np.array(ax, np.int64))],
           attrs={"exclusive": e, "reverse": r}, opset=26, constant=["axis"])
      for ax, e, r in [(1, 0, 0), (1, 1, 0), (0, 0, 1), (-1, 1, 1)]],
    Case("CumProd/3d-axis1", "CumProd", [("x", _with_zeros(2, 3, 2)), ("axis", np.array(1, np.int64))], opset=26,
         constant=["axis"]),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in CASES if c.op_type == "CumSum" or c.id in (
    "CumProd/axis1-ex1-rev0", "CumProd/axis0-ex0-rev1")]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
