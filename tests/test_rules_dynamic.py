"""Gradients whose parameters exist only at run time: axes, shapes, pads, repeats, block shapes fed
as graph inputs (as in models with dynamic shapes), and tensors whose rank is unknown when the
gradient is built. One table, one checker (float64 central differences, see rulecheck.py)."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params

i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731


def _with_zeros(*shape: int) -> np.ndarray:
    x = rand(*shape, low=0.5, high=1.5) * np.sign(rand(*shape, seed=3))
    x.reshape(-1)[[1, 5]] = 0.0  # CumProd's gradient must not divide by x
    return x


CASES = [
    # CumProd with a run-time axis: every exclusive/reverse combination, negative axes, 3-D
    *[Case(f"CumProd/runtime-axis{ax}-ex{e}-rev{r}", "CumProd",
           [("x", _with_zeros(3, 4)), ("axis", np.array(ax, np.int64))],
           attrs={"exclusive": e, "reverse": r}, opset=26)
      for ax, e, r in [(1, 0, 0), (1, 1, 0), (0, 0, 1), (-1, 1, 1), (-2, 0, 0)]],
    Case("CumProd/runtime-axis-3d", "CumProd", [("x", _with_zeros(2, 3, 2)), ("axis", np.array(1, np.int32))],
         opset=26),
    # a constant axis over a symbolic length takes the run-time path too
    Case("CumProd/symbolic-length", "CumProd", [("x", _with_zeros(3, 4)), ("axis", np.array(0, np.int64))],
         opset=26, constant=["axis"], symbolic_dims=["x"]),
]

SECOND_ORDER = [c for c in CASES if c.id in ("CumProd/runtime-axis1-ex1-rev0",)]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case: Case, dtype: str) -> None:
    check_second_order(case, dtype)
