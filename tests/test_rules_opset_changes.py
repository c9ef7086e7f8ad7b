"""Rule cases at the opsets where an op gained or changed an attribute.

A rule written before an attribute existed ignores it silently (SpaceToDepth's ``mode``, added at
opset 28, was ignored until this file existed). Each case below sets the new attribute to a value
that changes the forward result, so a rule that ignores it fails the float64 check.

``auto_pad`` SAME_UPPER and SAME_LOWER differ only when the total padding of an axis is odd (the
extra pad goes at the end for UPPER, at the start for LOWER): every SAME case here has an odd total
on at least one axis, else swapping the two would go unnoticed.
"""

import numpy as np
import pytest

from rulecheck import Case, check_case, params, rand

F32 = ("float32",)


def distinct(*shape: int, seed: int = 0) -> np.ndarray:
    """Values at least 0.05 apart in random order: no tied maximum in any window."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-2, 2, n)).reshape(shape)


def odd_total(size: int, kernel: int, stride: int, dilation: int = 1) -> bool:
    """Whether SAME padding of one axis has an odd total (so UPPER and LOWER differ)."""
    out = -(-size // stride)
    return ((out - 1) * stride + (kernel - 1) * dilation + 1 - size) % 2 == 1


def same(op: str, pad: str, x: np.ndarray, extra: list, dtypes: tuple = F32, **attrs) -> Case:
    kernel, strides = attrs["kernel_shape"], attrs.get("strides", [1] * len(attrs["kernel_shape"]))
    dil = attrs.get("dilations", [1] * len(kernel))
    assert any(odd_total(s, k, st, d) for s, k, st, d in zip(x.shape[2:], kernel, strides, dil)), "needs an odd total"
    return Case(f"{op}/{pad}-odd", op, [("x", x)] + extra, dict(attrs, auto_pad=pad), dtypes=dtypes)


CASES = [
    # SpaceToDepth gained mode (DCR default, CRD) at opset 28
    Case("SpaceToDepth/op28/DCR", "SpaceToDepth", [("x", rand(1, 2, 4, 6))], {"blocksize": 2, "mode": "DCR"},
         opset=28),
    Case("SpaceToDepth/op28/CRD", "SpaceToDepth", [("x", rand(2, 3, 4, 2))], {"blocksize": 2, "mode": "CRD"},
         opset=28),
    Case("SpaceToDepth/op28/default", "SpaceToDepth", [("x", rand(1, 2, 2, 2))], {"blocksize": 2}, opset=28),
    Case("DepthToSpace/op28/CRD", "DepthToSpace", [("x", rand(1, 8, 2, 3))], {"blocksize": 2, "mode": "CRD"},
         opset=28),
    # SAME_UPPER vs SAME_LOWER with an odd total padding
    *[same("Conv", p, rand(1, 2, 6, 5), [("w", rand(3, 2, 2, 3, seed=1))], kernel_shape=[2, 3])
      for p in ("SAME_UPPER", "SAME_LOWER")],
    *[same("ConvTranspose", p, rand(1, 2, 3, 4), [("w", rand(2, 3, 2, 3, seed=1))], kernel_shape=[2, 3],
           strides=[2, 1]) for p in ("SAME_UPPER", "SAME_LOWER")],
    *[same("MaxPool", p, distinct(1, 2, 6, 5), [], dtypes=("float32", "float64"), kernel_shape=[2, 2])
      for p in ("SAME_UPPER", "SAME_LOWER")],
    *[same("AveragePool", p, rand(1, 2, 6, 5), [], kernel_shape=[2, 2], strides=[1, 2])
      for p in ("SAME_UPPER", "SAME_LOWER")],
    *[same("LpPool", p, rand(1, 2, 5, 6, low=0.2, high=1.5), [], kernel_shape=[2, 3])
      for p in ("SAME_UPPER", "SAME_LOWER")],
    # AveragePool gained dilations at opset 19, LpPool ceil_mode and dilations at 18
    Case("AveragePool/op19/dilations", "AveragePool", [("x", rand(1, 2, 7, 7))],
         {"kernel_shape": [2, 2], "dilations": [2, 3]}, opset=19, dtypes=F32),
    Case("LpPool/op18/dilations-ceil", "LpPool", [("x", rand(1, 2, 7, 6, low=0.2, high=1.5))],
         {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 2], "ceil_mode": 1}, opset=18, dtypes=F32),
    # MaxPool gained ceil_mode and dilations at opset 10
    Case("MaxPool/op10/dilations-ceil", "MaxPool", [("x", distinct(1, 2, 7, 6))],
         {"kernel_shape": [2, 2], "dilations": [2, 1], "strides": [2, 2], "ceil_mode": 1}, opset=10),
    # Reshape gained allowzero at opset 14 (a 0 in the target shape is then a real 0, not "copy")
    Case("Reshape/op14/allowzero-copy", "Reshape", [("x", rand(2, 3, 4)), ("s", np.array([0, -1], np.int64))],
         {"allowzero": 0}, opset=14, constant=["s"]),
    # Split gained num_outputs at opset 18 (uneven: 5 into 2 + 2 + 1)
    Case("Split/op18/num_outputs", "Split", [("x", rand(5, 3))], {"num_outputs": 3, "axis": 0}, opset=18,
         n_outputs=3),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)
