"""DeformConv's gradients w.r.t. X, W, offset, B and mask (bilinear sampling derivatives), checked
against float64 central differences through the one table checker (tests/rulecheck.py)."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def _offsets(n: int, channels: int, oh: int, ow: int, seed: int) -> np.ndarray:
    # shifts of up to 1.5 pixels, some landing outside the image; never on an integer position,
    # where bilinear sampling has a kink
    return np.round(rand(n, channels, oh, ow, seed=seed, low=-1.5, high=1.5), 1) + 0.05


CASES = [
    Case("DeformConv/basic", "DeformConv",
         [("x", rand(1, 1, 3, 3)), ("w", rand(1, 1, 2, 2, seed=1)), ("offset", _offsets(1, 8, 2, 2, 2))],
         opset=19),
    Case("DeformConv/pads-bias-mask", "DeformConv",
         [("x", rand(2, 2, 4, 3)), ("w", rand(3, 2, 2, 2, seed=1)), ("offset", _offsets(2, 8, 5, 4, 3)),
          ("b", rand(3, seed=4)), ("mask", rand(2, 4, 5, 4, seed=5, low=0.2, high=1.0))],
         {"pads": [1, 1, 1, 1]}, opset=19),
    Case("DeformConv/strides-dilations", "DeformConv",
         [("x", rand(1, 2, 5, 5)), ("w", rand(2, 2, 2, 2, seed=1)), ("offset", _offsets(1, 8, 2, 4, 6))],
         {"strides": [2, 1], "dilations": [2, 1], "pads": [0, 0, 0, 0]}, opset=19),
    Case("DeformConv/groups-offset-groups", "DeformConv",
         [("x", rand(1, 4, 3, 4)), ("w", rand(2, 2, 2, 1, seed=1)), ("offset", _offsets(1, 2 * 2 * 2, 2, 4, 7)),
          ("b", rand(2, seed=2)), ("mask", rand(1, 2 * 2, 2, 4, seed=8, low=0.2, high=1.0))],
         {"group": 2, "offset_group": 2}, opset=22),
    Case("DeformConv/kernel-shape-attr-symbolic-batch", "DeformConv",
         [("x", rand(2, 1, 3, 3)), ("w", rand(2, 1, 2, 2, seed=1)), ("offset", _offsets(2, 8, 2, 2, 9))],
         {"kernel_shape": [2, 2]}, opset=19, symbolic_dims=["x", "offset"]),
]

SECOND_ORDER = [c for c in CASES if c.id == "DeformConv/basic"]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case: Case, dtype: str) -> None:
    check_second_order(case, dtype)
