"""Rule cases written to kill mutants that survived ``tools/mutate.py`` (see docs/mutation.md).

Each case sets an attribute to a value the existing tables never gave it, where a rule that
ignored the attribute would compute another gradient:

* ReduceL1 / ReduceLogSum / ReduceSumSquare before opset 18 (axes an attribute) with
  ``keepdims=0`` on a middle axis: ignoring ``axes`` or ``keepdims`` restores dy's reduced axis at
  the wrong place (on a leading axis, broadcasting hid it);
* Unique with ``axis=1``: ignoring the axis gathers dy along the wrong axis (with ``axis=0``
  the flattened and the per-row paths coincide);
* ConvTranspose with ``output_shape`` that crops one row and column at the start: ignoring
  ``output_shape`` differentiates an uncropped output;
* Resize with ``sizes`` and ``keep_aspect_ratio_policy=not_larger``: ignoring the policy
  assumes the 3x3 size instead of the 2x3 output.
"""

import numpy as np
import pytest

from rulecheck import Case, check_case, params, rand

F32 = ("float32",)


def away(*shape: int, seed: int = 0) -> np.ndarray:
    """Values at least 0.2 away from 0 (|x| is smooth there)."""
    x = rand(*shape, seed=seed)
    return np.where(x >= 0, x + 0.2, x - 0.2)


CASES = [
    Case("ReduceL1/op13/middle-axis-k0", "ReduceL1", [("x", away(2, 3, 4))], {"axes": [1], "keepdims": 0}, opset=13),
    Case("ReduceLogSum/op13/middle-axis-k0", "ReduceLogSum", [("x", rand(2, 3, 4, low=0.5, high=2.0))],
         {"axes": [1], "keepdims": 0}, opset=13),
    Case("ReduceSumSquare/op13/middle-axis-k0", "ReduceSumSquare", [("x", rand(2, 3, 4))],
         {"axes": [1], "keepdims": 0}, opset=13),
    Case("Unique/axis1", "Unique", [("x", rand(2, 3, seed=7))], {"axis": 1}, opset=11, n_outputs=4,
         outputs_used=[0]),
    Case("ConvTranspose/output-shape-crop", "ConvTranspose", [("x", rand(1, 2, 3, 3)), ("w", rand(2, 3, 3, 3, seed=1))],
         {"strides": [2, 2], "output_shape": [6, 6]}, dtypes=F32),
    Case("Resize/op18/keep-aspect-not-larger", "Resize",
         [("x", rand(1, 1, 4, 6)), ("roi", None), ("scales", None), ("sizes", np.array([3, 3], np.int64))],
         {"mode": "linear", "axes": [2, 3], "keep_aspect_ratio_policy": "not_larger"}, opset=18, constant=["sizes"],
         dtypes=F32),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)
