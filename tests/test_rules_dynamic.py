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

CASES += [
    # CenterCropPad with a run-time shape: crop, pad, both, axes given (negative too), symbolic dims
    Case("CenterCropPad/runtime-crop-pad", "CenterCropPad", [("x", rand(5, 3)), ("shape", i64(2, 6))], opset=18),
    Case("CenterCropPad/runtime-axes", "CenterCropPad", [("x", rand(2, 6, 3)), ("shape", i64(5, 4))],
         attrs={"axes": [-2, 2]}, opset=18),
    Case("CenterCropPad/runtime-hwc", "CenterCropPad", [("x", rand(4, 5, 2)), ("shape", i64(3, 7))],
         attrs={"axes": [0, 1]}, opset=21),
    Case("CenterCropPad/symbolic-constant-shape", "CenterCropPad", [("x", rand(5, 3)), ("shape", i64(2, 6))],
         opset=18, constant=["shape"], symbolic_dims=["x"]),
    # Col2Im with run-time block_shape and image_shape (onnxruntime: float32 only)
    Case("Col2Im/runtime-block", "Col2Im", [("x", rand(1, 2 * 4, 6)), ("img", i64(3, 4)), ("block", i64(2, 2))],
         opset=18, dtypes=("float32",)),
    Case("Col2Im/runtime-pads-strides-dilations", "Col2Im",
         [("x", rand(2, 8, 8)), ("img", i64(5, 4)), ("block", i64(2, 2))],
         attrs={"pads": [1, 0, 0, 1], "strides": [2, 1], "dilations": [2, 1]}, opset=18, dtypes=("float32",)),
    Case("Col2Im/runtime-3d-block", "Col2Im", [("x", rand(1, 3 * 4, 8)), ("img", i64(3, 2, 3)), ("block", i64(2, 1, 2))],
         opset=18, dtypes=("float32",)),
    Case("Col2Im/symbolic-batch", "Col2Im", [("x", rand(2, 2 * 4, 6)), ("img", i64(3, 4)), ("block", i64(2, 2))],
         opset=18, constant=["img", "block"], symbolic_dims=["x"], dtypes=("float32",)),
]

# Col2Im with a run-time block shape is first-order only: its gradient is a Conv whose kernel shape
# exists only at run time, and the Conv rule needs that shape to build its own gradient.
SECOND_ORDER = [c for c in CASES if c.id in ("CumProd/runtime-axis1-ex1-rev0", "CenterCropPad/runtime-crop-pad")]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case: Case, dtype: str) -> None:
    check_second_order(case, dtype)
