"""Numeric tests (one table, one checker) of rules/causal_conv.py: CausalConvWithState."""

import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


F32 = ("float32",)


CASES = [
    # CausalConvWithState (opset 27, float types without double): both outputs used, or only the convolution
    Case("CausalConvWithState/basic", "CausalConvWithState", [("x", rand(2, 3, 5)), ("w", rand(3, 1, 3, seed=1))],
         opset=27, dtypes=F32, n_outputs=2),
    Case("CausalConvWithState/bias-past-silu", "CausalConvWithState",
         [("x", rand(2, 3, 4)), ("w", rand(3, 1, 3, seed=1)), ("b", rand(3, seed=2)), ("past", rand(2, 3, 2, seed=3))],
         attrs={"activation": "silu"}, opset=27, dtypes=F32, n_outputs=2),
    Case("CausalConvWithState/output-only", "CausalConvWithState",
         [("x", rand(1, 2, 6)), ("w", rand(2, 1, 4, seed=1)), ("b", rand(2, seed=2))],
         attrs={"activation": "swish"}, opset=27, dtypes=F32, n_outputs=2, outputs_used=[0]),
    Case("CausalConvWithState/k1", "CausalConvWithState", [("x", rand(2, 2, 3)), ("w", rand(2, 1, 1, seed=1))],
         opset=27, dtypes=F32, n_outputs=2),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in CASES if c.id == "CausalConvWithState/bias-past-silu"]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
