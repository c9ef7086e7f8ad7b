"""Numeric tests (one table, one checker) of rules/quantization.py: DequantizeLinear and
DynamicQuantizeLinear."""

import numpy as np
import pytest

from rulecheck import Case, check_case, params, rand


F32 = ("float32",)


CASES = [
    # quantization (float scales only); onnx.reference implements DequantizeLinear from opset 19
    Case("DequantizeLinear/per-tensor", "DequantizeLinear",
         [("x", np.array([[3, -7], [12, 0]], np.int8)), ("s", np.array(0.3)), ("zp", np.array(2, np.int8))],
         opset=10, dtypes=F32, reference=False),
    Case("DequantizeLinear/per-axis", "DequantizeLinear",
         [("x", np.array([[3, 7, 1], [250, 0, 9]], np.uint8)), ("s", rand(3, low=0.1)),
          ("zp", np.array([1, 2, 0], np.uint8))], attrs={"axis": -1}, opset=13, dtypes=F32, reference=False),
    Case("DequantizeLinear/per-axis-op21", "DequantizeLinear",
         [("x", np.array([[3, 7, 1], [250, 0, 9]], np.uint8)), ("s", rand(2, low=0.1)),
          ("zp", np.array([1, 2], np.uint8))], attrs={"axis": 0}, opset=21, dtypes=F32),
    Case("DequantizeLinear/no-zero-point", "DequantizeLinear",
         [("x", np.array([3, -7, 4], np.int8)), ("s", np.array(0.25))], opset=19, dtypes=F32),
    Case("DynamicQuantizeLinear", "DynamicQuantizeLinear", [("x", rand(3, 4, seed=2))], opset=11,
         n_outputs=3, dtypes=F32),
    Case("DynamicQuantizeLinear/all-positive", "DynamicQuantizeLinear", [("x", rand(5, low=0.2))], opset=11,
         n_outputs=3, dtypes=F32),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)
