"""Numeric tests of the elementwise rules (one table, one checker)."""

import pytest

from rulecheck import Case, check_case, params, rand

CASES = [
    Case("Add/broadcast", "Add", [("a", rand(2, 3)), ("b", rand(3, seed=1))]),
    Case("Sub/broadcast-left", "Sub", [("a", rand(1, 3)), ("b", rand(4, 3, seed=1))]),
    Case("Mul/broadcast-both", "Mul", [("a", rand(4, 1)), ("b", rand(1, 3, seed=1))]),
    Case("Div", "Div", [("a", rand(2, 3)), ("b", rand(2, 3, seed=1, low=1, high=2))]),
    Case("Neg", "Neg", [("x", rand(5))]),
    Case("Identity", "Identity", [("x", rand(2, 2))]),
    Case("Tanh", "Tanh", [("x", rand(3, 4))]),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)
