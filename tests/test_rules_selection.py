"""Numeric tests (one table, one checker) of rules/selection.py: Compress, CenterCropPad, MaxUnpool,
ReverseSequence, Unique, OneHot, Range."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


F32 = ("float32",)


def i64(*v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


def _pool_indices() -> np.ndarray:
    # flat positions of a 2x2 max-pool (stride 2) result inside a 1x1x4x4 tensor: one per window
    return np.array([[[[5, 2], [8, 15]]]], dtype=np.int64)


CASES = [
    # Compress
    Case("Compress/axis0", "Compress", [("x", rand(4, 3)), ("c", np.array([1, 0, 1, 1], bool))],
         attrs={"axis": 0}, opset=11),
    Case("Compress/axis-1-short-condition", "Compress", [("x", rand(2, 4)), ("c", np.array([0, 1, 1], bool))],
         attrs={"axis": -1}, opset=18),
    Case("Compress/flat", "Compress", [("x", rand(2, 3)), ("c", np.array([1, 0, 0, 1, 1], bool))], opset=11),
    # CenterCropPad: crop one axis, pad another, odd differences
    Case("CenterCropPad/crop-pad", "CenterCropPad", [("x", rand(5, 3)), ("shape", i64(2, 6))], opset=18,
         constant=["shape"]),
    Case("CenterCropPad/axes", "CenterCropPad", [("x", rand(2, 6, 3)), ("shape", i64(5, 4))],
         attrs={"axes": [-2, 2]}, opset=18, constant=["shape"]),
    # MaxUnpool
    Case("MaxUnpool/2x2", "MaxUnpool", [("x", rand(1, 1, 2, 2)), ("i", _pool_indices())],
         attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11, dtypes=F32),
    Case("MaxUnpool/output-shape", "MaxUnpool",
         [("x", rand(1, 1, 2, 2)), ("i", _pool_indices()), ("shape", i64(1, 1, 5, 5))],
         attrs={"kernel_shape": [2, 2], "strides": [2, 2]}, opset=22, constant=["shape"], dtypes=F32,
         reference=False),  # onnx.reference addresses the inferred 4x4 shape, onnxruntime the 5x5 output
    # ReverseSequence
    Case("ReverseSequence/time0", "ReverseSequence", [("x", rand(4, 3, 2)), ("lens", i64(4, 1, 2))],
         attrs={"batch_axis": 1, "time_axis": 0}, opset=10),
    Case("ReverseSequence/batch0", "ReverseSequence", [("x", rand(2, 4)), ("lens", i64(3, 4))],
         attrs={"batch_axis": 0, "time_axis": 1}, opset=18),
    # Unique (distinct values: differentiable)
    Case("Unique/flat", "Unique", [("x", rand(2, 3))], opset=11, n_outputs=4),
    Case("Unique/axis0-unsorted", "Unique", [("x", rand(3, 2, seed=5))], attrs={"axis": 0, "sorted": 0},
         opset=11, n_outputs=4),
    Case("Unique/only-y-output", "Unique", [("x", rand(5))], attrs={"axis": 0}, opset=11),
    # OneHot: the values pair
    Case("OneHot/last-axis", "OneHot", [("i", i64(0, 2, -1, 1)), ("depth", np.array(3, np.int64)), ("v", rand(2))],
         opset=11, constant=["depth"], dtypes=F32),
    Case("OneHot/axis0", "OneHot", [("i", np.array([[1, 0], [2, 2]], np.int64)), ("depth", np.array(4, np.int64)),
                                    ("v", rand(2, seed=1))], attrs={"axis": 0}, opset=9, constant=["depth"],
         dtypes=F32),
    # Range: start and delta (the count stays fixed near these values)
    Case("Range", "Range", [("start", np.array(0.5)), ("limit", np.array(3.7)), ("delta", np.array(0.6))],
         opset=11),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in CASES if c.id in (
    "Compress/axis0", "CenterCropPad/crop-pad", "MaxUnpool/2x2", "Unique/flat", "OneHot/last-axis")]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
