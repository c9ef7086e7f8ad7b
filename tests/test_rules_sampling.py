"""Numeric tests (one table, one checker) of rules/sampling.py: GridSample, RoiAlign, AffineGrid,
Col2Im (DeformConv: tests/test_rules_deformconv.py)."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


F32 = ("float32",)


def i64(*v: int) -> np.ndarray:
    return np.asarray(v, dtype=np.int64)


CASES = [
    # GridSample w.r.t. X, every mode and padding mode. onnxruntime has no float64 kernel before
    # opset 20; onnx.reference knows only the opset-20 mode names and disagrees with onnxruntime's
    # forward bicubic/cubic results, so those cases skip the reference comparison.
    *[Case(f"GridSample/{mode}-{pad}-ac{ac}-op{o}", "GridSample",
           [("x", rand(2, 2, 3, 4)), ("grid", rand(2, 2, 3, 2, seed=9, low=-1.2, high=1.2))],
           attrs={"mode": mode, "padding_mode": pad, "align_corners": ac}, opset=o, wrt=["x"],
           dtypes=F32 if o < 20 else ("float32", "float64"), reference=ref)
      for mode, pad, ac, o, ref in [("bilinear", "zeros", 0, 16, False), ("nearest", "border", 1, 16, True),
                                    ("bicubic", "reflection", 0, 16, False), ("linear", "zeros", 1, 20, True),
                                    ("linear", "reflection", 0, 22, True), ("cubic", "border", 0, 22, False)]],
    Case("GridSample/3d", "GridSample", [("x", rand(1, 2, 2, 3, 2)), ("grid", rand(1, 2, 2, 2, 3, seed=4))],
         opset=22, wrt=["x"]),
    # RoiAlign (avg) w.r.t. X; rois of two batch entries, one entry shared by two rois.
    # onnx.reference applies half_pixel at opset 10, where onnxruntime (and the spec) use output_half_pixel.
    *[Case(f"RoiAlign/op{o}-{extra.get('coordinate_transformation_mode', 'default')}", "RoiAlign",
           [("x", rand(2, 2, 5, 6)),
            ("rois", np.array([[0.5, 0.7, 3.2, 4.1], [1.1, 0.3, 4.6, 3.9], [0.2, 1.5, 5.5, 3.3]])),
            ("b", i64(1, 0, 1))],
           attrs={"output_height": 2, "output_width": 3, "sampling_ratio": 2, "spatial_scale": 0.9, **extra},
           opset=o, wrt=["x"], reference=o > 10)
      for o, extra in [(10, {}), (16, {"coordinate_transformation_mode": "output_half_pixel"}),
                       (16, {"coordinate_transformation_mode": "half_pixel"})]],
    # AffineGrid w.r.t. theta (the schema's tag says otherwise; the output is linear in theta).
    # onnx.reference computes AffineGrid in float32 whatever the input type: float64 skips it.
    *[Case(f"AffineGrid/2d-{d}", "AffineGrid", [("theta", rand(2, 2, 3)), ("size", i64(2, 1, 3, 4))], opset=20,
           constant=["size"], dtypes=(d,), reference=d == "float32") for d in ("float32", "float64")],
    Case("AffineGrid/3d-align", "AffineGrid", [("theta", rand(1, 3, 4)), ("size", i64(1, 2, 2, 3, 2))],
         attrs={"align_corners": 1}, opset=20, constant=["size"], dtypes=F32),
    # Col2Im (onnxruntime: float32 only)
    Case("Col2Im/basic", "Col2Im", [("x", rand(1, 2 * 4, 6)), ("img", i64(3, 4)), ("block", i64(2, 2))],
         opset=18, constant=["img", "block"], dtypes=F32),
    Case("Col2Im/pads-strides-dilations", "Col2Im",
         [("x", rand(2, 8, 8)), ("img", i64(5, 4)), ("block", i64(2, 2))],
         attrs={"pads": [1, 0, 0, 1], "strides": [2, 1], "dilations": [2, 1]}, opset=18, constant=["img", "block"],
         dtypes=F32),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in CASES if c.id in (
    "GridSample/linear-zeros-ac1-op20", "RoiAlign/op16-half_pixel", "AffineGrid/2d-float32", "Col2Im/basic")]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
