"""Numeric tests (one table, one checker) of the families split out of the former rules/misc.py
(linalg's Det, scans' CumProd, selection, indexing's Scatter/TensorScatter, sampling, causal_conv,
spectral, quantization) and of rules/sequence.py."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import onnxgrad
from onnxgrad.checking import check_gradients
from rulecheck import Case, check_case, params, rand

i64 = lambda *v: np.array(v, dtype=np.int64)  # noqa: E731
F32 = ("float32",)


def _with_zeros(*shape):
    x = rand(*shape, low=0.5, high=1.5) * np.sign(rand(*shape, seed=3))
    x.reshape(-1)[[1, 5]] = 0.0  # CumProd's gradient must not divide by x
    return x


def _pool_indices():
    # flat positions of a 2x2 max-pool (stride 2) result inside a 1x1x4x4 tensor: one per window
    return np.array([[[[5, 2], [8, 15]]]], dtype=np.int64)


CASES = [
    # Det: cofactors via Det of minors (also singular-safe)
    Case("Det/3x3", "Det", [("x", rand(3, 3) + 2 * np.eye(3))], opset=11, dtypes=F32),
    Case("Det/batch", "Det", [("x", rand(2, 4, 4, seed=1))], opset=22, dtypes=F32),
    Case("Det/2x2-batch2", "Det", [("x", rand(2, 3, 2, 2, seed=2))], dtypes=F32),
    Case("Det/1x1", "Det", [("x", rand(2, 1, 1, seed=4, low=0.5))], dtypes=F32),
    # CumProd (opset 26) with zeros in the input, every exclusive/reverse combination
    *[Case(f"CumProd/axis{ax}-ex{e}-rev{r}", "CumProd", [("x", _with_zeros(3, 4)), ("axis", np.array(ax, np.int64))],
           attrs={"exclusive": e, "reverse": r}, opset=26, constant=["axis"])
      for ax, e, r in [(1, 0, 0), (1, 1, 0), (0, 0, 1), (-1, 1, 1)]],
    Case("CumProd/3d-axis1", "CumProd", [("x", _with_zeros(2, 3, 2)), ("axis", np.array(1, np.int64))], opset=26,
         constant=["axis"]),
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
    # Scatter (deprecated ScatterElements of opsets 9-10, which onnx.reference does not implement)
    Case("Scatter/axis0", "Scatter", [("d", rand(3, 3)), ("i", np.array([[1, 0, 2], [0, 2, 1]], np.int64)),
                                      ("u", rand(2, 3, seed=1))], opset=10, reference=False),
    Case("Scatter/axis1", "Scatter", [("d", rand(2, 4)), ("i", np.array([[3, 1], [0, 2]], np.int64)),
                                      ("u", rand(2, 2, seed=1))], attrs={"axis": 1}, opset=9,
         reference=False),
    # TensorScatter (opset 24)
    Case("TensorScatter/linear", "TensorScatter", [("cache", rand(2, 5, 3)), ("upd", rand(2, 2, 3, seed=1)),
                                                   ("w", i64(1, 3))], opset=24),
    Case("TensorScatter/circular-axis1", "TensorScatter",
         [("cache", rand(2, 4, 3, 2)), ("upd", rand(2, 3, 3, 2, seed=1)), ("w", i64(2, 0))],
         attrs={"mode": "circular", "axis": 1}, opset=24),
    Case("TensorScatter/no-write-indices", "TensorScatter", [("cache", rand(2, 3, 4)), ("upd", rand(2, 1, 4, seed=2))],
         opset=24),
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
    # DFT: forward/inverse, real/complex, onesided, dft_length padding and truncation, both signatures
    *[Case(f"DFT/op{o}-{name}", "DFT",
           [("x", rand(2, 5, 3, last)), ("len", None if length is None else np.array(length, np.int64)),
            *([("axis", np.array(axis, np.int64))] if o >= 20 else [])],
           attrs={k: v for k, v in (("inverse", inv), ("onesided", one), ("axis", axis if o < 20 else None))
                  if v}, opset=o, constant=["len", "axis"])
      for o, name, last, length, axis, inv, one in [
          (17, "complex", 2, None, 1, 0, 0), (17, "real-onesided", 1, None, 1, 0, 1),
          (17, "inverse-axis2", 2, None, 2, 1, 0), (17, "real-padded", 1, 8, 1, 0, 0),
          (20, "complex-axis-2", 2, None, -2, 0, 0), (20, "real-onesided-truncated", 1, 4, 1, 0, 1),
          (20, "inverse-even", 2, 6, -3, 1, 0)]],
    # the onesided inverse (IRFFT) from a half spectrum, even and odd output lengths
    Case("DFT/op17-irfft-even", "DFT", [("x", rand(2, 4, 2))], attrs={"inverse": 1, "onesided": 1}, opset=17),
    Case("DFT/op20-irfft-odd", "DFT", [("x", rand(2, 3, 4, 2)), ("len", np.array(5, np.int64)),
                                       ("axis", np.array(1, np.int64))],
         attrs={"inverse": 1, "onesided": 1}, opset=20, constant=["len", "axis"]),
    # STFT: signal and window (bilinear), real or complex signal, overlapping frames. Two-sided only:
    # onnx 1.23's shape inference declares floor(n/2) + 2 onesided bins, one more than onnxruntime
    # returns (the onesided adjoint is shared with DFT, tested above, and in the corpus' test_stft).
    Case("STFT/window", "STFT", [("s", rand(2, 10, 1)), ("step", np.array(2, np.int64)),
                                 ("w", rand(4, seed=1, low=0.5))], attrs={"onesided": 0}, opset=17, constant=["step"]),
    Case("STFT/complex", "STFT", [("s", rand(1, 9, 2)), ("step", np.array(3, np.int64)), ("w", rand(5, seed=2))],
         attrs={"onesided": 0}, opset=17, constant=["step"]),
    Case("STFT/frame-length", "STFT", [("s", rand(2, 7, 1)), ("step", np.array(1, np.int64)), ("w", None),
                                       ("len", np.array(3, np.int64))], attrs={"onesided": 0}, opset=17,
         constant=["step", "len"]),
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
    # Optional
    Case("OptionalGetElement/tensor", "OptionalGetElement", [("x", rand(2, 3))], opset=18),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


def _model(nodes, x_shape, opset, out_shape=None):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def test_optional_round_trip():
    """Optional(x) -> OptionalGetElement: the gradient passes through the optional value."""
    m = _model([helper.make_node("Optional", ["x"], ["o"]), helper.make_node("OptionalGetElement", ["o"], ["t"]),
                helper.make_node("Mul", ["t", "t"], ["y"])], [2, 3], 18, [2, 3])
    report = check_gradients(m, ["x"], feeds={"x": rand(2, 3).astype(np.float32)})
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert report.ok and len(report.checks) == 1



SECOND_ORDER = [c for c in CASES if c.id in (
    "Det/3x3", "Det/batch", "CumProd/axis1-ex1-rev0", "CumProd/axis0-ex0-rev1", "Compress/axis0",
    "CenterCropPad/crop-pad", "MaxUnpool/2x2", "GridSample/linear-zeros-ac1-op20", "RoiAlign/op16-half_pixel",
    "AffineGrid/2d-float32", "Col2Im/basic", "CausalConvWithState/bias-past-silu", "TensorScatter/linear",
    "Unique/flat", "Scatter/axis0", "OneHot/last-axis", "DFT/op17-real-onesided", "STFT/window")]


@pytest.mark.parametrize("case", SECOND_ORDER, ids=str)
def test_second_order(case):
    """The backward graph differentiates again, w.r.t. x (Hessian-vector products) and w.r.t. the
    seed (which reaches every op the rule emitted, also for ops linear in x)."""
    from rulecheck import build

    model, feeds, xs, ys = build(case, "float32")
    seeds = [f"seed{i}" for i in range(len(ys))]
    first = onnxgrad.gradients(model, ys, xs, grad_ys=seeds)
    grads = [n for n in first.names if n is not None]
    rng = np.random.default_rng(0)
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in first.model.graph.input}
    feeds = {**feeds, **{s: rng.standard_normal(shapes[s]).astype(np.float32) for s in seeds}}
    report = check_gradients(first.model, xs + seeds, ys=grads, feeds=feeds)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert report.ok, [(c.name, c.analytic, c.numeric) for c in report.checks if not c.ok]
    assert len(report.checks) == len(xs) + len(seeds)
