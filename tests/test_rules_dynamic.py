"""Gradients whose parameters exist only at run time: axes, shapes, pads, repeats, block shapes fed
as graph inputs (as in models with dynamic shapes), and tensors whose rank is unknown when the
gradient is built. One table, one checker (float64 central differences, see rulecheck.py)."""

from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrad
from onnxgrad.checking import check_gradients, session
from rulecheck import Case, check_case, check_second_order, compare_with_reference, feeds_for, params, rand, \
    second_order_params

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
    Case("Col2Im/runtime-3d-block", "Col2Im",
         [("x", rand(1, 3 * 4, 8)), ("img", i64(3, 2, 3)), ("block", i64(2, 1, 2))], opset=18, dtypes=("float32",)),
    Case("Col2Im/symbolic-batch", "Col2Im", [("x", rand(2, 2 * 4, 6)), ("img", i64(3, 4)), ("block", i64(2, 2))],
         opset=18, constant=["img", "block"], symbolic_dims=["x"], dtypes=("float32",)),
]

CASES += [
    # Pad with run-time pads in every mode (the positions of x, padded the same way, say where dy goes)
    *[Case(f"Pad/runtime-pads-{mode}", "Pad", [("x", rand(3, 4)), ("p", i64(1, 2, 2, 1))], {"mode": mode}, opset=18)
      for mode in ("constant", "reflect", "edge")],
    Case("Pad/runtime-pads-wrap", "Pad", [("x", rand(3, 4)), ("p", i64(1, 2, 2, 1))], {"mode": "wrap"}, opset=19),
    # onnx.reference's Pad refuses negative pads (numpy.pad): onnxruntime alone evaluates these
    Case("Pad/runtime-negative-reflect", "Pad", [("x", rand(4, 5)), ("p", i64(-1, 2, 1, -2))], {"mode": "reflect"},
         opset=18, reference=False),
    Case("Pad/runtime-axes", "Pad", [("x", rand(2, 3, 4)), ("p", i64(1, 2, 0, 1)), ("v", None), ("a", i64(-1, 1))],
         {"mode": "edge"}, opset=18),
    Case("Pad/runtime-axes-constant", "Pad", [("x", rand(2, 3, 4)), ("p", i64(1, -1, 2, 1)), ("v", None),
                                              ("a", i64(0, 2))], opset=18, reference=False),
    # constant pads over symbolic sizes in the copying modes
    Case("Pad/symbolic-reflect", "Pad", [("x", rand(3, 4)), ("p", i64(1, 2, 2, 1))], {"mode": "reflect"},
         opset=18, constant=["p"], symbolic_dims=["x"]),
    # Tile and Slice with every parameter fed at run time
    Case("Tile/runtime-repeats", "Tile", [("x", rand(2, 3)), ("r", i64(3, 2))], opset=13),
    Case("Slice/runtime-all", "Slice", [("x", rand(4, 5)), ("s", i64(3, 1)), ("e", i64(0, 5)), ("a", i64(0, -1)),
                                        ("st", i64(-2, 2))], opset=13),
]

CASES += [
    # DFT (opset 20) with a run-time axis and dft_length: forward/inverse, real/complex, onesided, IRFFT
    *[Case(f"DFT/runtime-{name}", "DFT",
           [("x", rand(2, 5, 3, last)), ("len", None if length is None else np.array(length, np.int64)),
            ("axis", np.array(axis, np.int64))],
           attrs={k: v for k, v in (("inverse", inv), ("onesided", one)) if v}, opset=20, constant=constant)
      for name, last, length, axis, inv, one, constant in [
          ("complex-axis-2", 2, None, -2, 0, 0, []), ("real-onesided", 1, None, 1, 0, 1, []),
          ("inverse-padded", 2, 6, -3, 1, 0, []), ("real-onesided-truncated", 1, 4, 1, 0, 1, []),
          ("real-padded-runtime-length", 1, 8, 1, 0, 0, ["axis"])]],
    # opset 17 (axis an attribute) with a run-time dft_length
    Case("DFT/op17-runtime-length", "DFT", [("x", rand(2, 5, 1)), ("len", np.array(7, np.int64))],
         attrs={"onesided": 1}, opset=17),
    Case("DFT/op17-runtime-length-irfft", "DFT", [("x", rand(2, 4, 2)), ("len", np.array(6, np.int64))],
         attrs={"inverse": 1, "onesided": 1, "axis": 1}, opset=17),
    Case("DFT/runtime-irfft-odd", "DFT", [("x", rand(2, 3, 4, 2)), ("len", np.array(5, np.int64)),
                                          ("axis", np.array(1, np.int64))],
         attrs={"inverse": 1, "onesided": 1}, opset=20),
    Case("DFT/runtime-irfft-even-default-length", "DFT", [("x", rand(2, 4, 3, 2)), ("len", None),
                                                          ("axis", np.array(-3, np.int64))],
         attrs={"inverse": 1, "onesided": 1}, opset=20),
]

CASES += [
    # STFT with a run-time frame step (two-sided, see test_rules_spectral.py for why)
    Case("STFT/runtime-step-window", "STFT", [("s", rand(2, 10, 1)), ("step", np.array(2, np.int64)),
                                              ("w", rand(4, seed=1, low=0.5))], attrs={"onesided": 0}, opset=17),
    Case("STFT/runtime-step-complex", "STFT", [("s", rand(1, 9, 2)), ("step", np.array(3, np.int64)),
                                               ("w", rand(5, seed=2))], attrs={"onesided": 0}, opset=17),
    Case("STFT/runtime-frame-length", "STFT", [("s", rand(2, 7, 1)), ("step", np.array(2, np.int64)), ("w", None),
                                              ("len", np.array(3, np.int64))], attrs={"onesided": 0}, opset=17),
    Case("STFT/runtime-frame-length-complex", "STFT", [("s", rand(1, 8, 2)), ("step", np.array(1, np.int64)),
                                                      ("w", None), ("len", np.array(4, np.int64))],
         attrs={"onesided": 0}, opset=17, constant=["step"]),
    Case("STFT/runtime-step-frame-length", "STFT", [("s", rand(2, 7, 1)), ("step", np.array(1, np.int64)), ("w", None),
                                                    ("len", np.array(3, np.int64))], attrs={"onesided": 0}, opset=17,
         constant=["len"]),
]

# Col2Im with a run-time block shape is first-order only: its gradient is a Conv whose kernel shape
# exists only at run time, and the Conv rule needs that shape to build its own gradient.
SECOND_ORDER = [c for c in CASES if c.id in ("CumProd/runtime-axis1-ex1-rev0", "CenterCropPad/runtime-crop-pad",
                                             "Pad/runtime-pads-reflect", "Pad/runtime-axes-constant")]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case: Case, dtype: str) -> None:
    check_second_order(case, dtype)


# ---------------------------------------------------------------- ranks unknown when the gradient is built
# x (float) -> Squeeze(x, axes fed at run time) -> the op under test: onnx's shape inference
# leaves the squeezed tensor's rank unknown (as in TorchScript exports of attention layers).
# (id, op type, attributes, further inputs (name, value), which of them are constants)
RankCase = Tuple[str, str, Dict[str, Any], Sequence[Tuple[str, np.ndarray]], Sequence[str]]
RANK_CASES: List[RankCase] = [
    ("Gather/axis0-scalar", "Gather", {"axis": 0}, [("i", np.array(1, np.int64))], ()),
    ("Gather/axis1-matrix", "Gather", {"axis": 1}, [("i", np.array([[0, 2], [2, -1]], np.int64))], ()),
    ("Gather/axis-1", "Gather", {"axis": -1}, [("i", np.array([2, 2, 0], np.int64))], ()),
    ("ReduceSum/neg-axis-constant", "ReduceSum", {"keepdims": 0}, [("a", np.array([-1], np.int64))], ("a",)),
    ("ReduceSum/neg-axis-runtime", "ReduceSum", {"keepdims": 0}, [("a", np.array([-1], np.int64))], ()),
    ("ReduceMean/all", "ReduceMean", {"keepdims": 0}, [], ()),
    ("ReduceMax/axes-keepdims", "ReduceMax", {"keepdims": 1}, [("a", np.array([-2], np.int64))], ("a",)),
    ("Transpose/no-perm", "Transpose", {}, [], ()),
    ("Transpose/perm", "Transpose", {"perm": [1, 2, 0]}, [], ()),
    ("Unsqueeze/neg-axis", "Unsqueeze", {}, [("a", np.array([-1], np.int64))], ()),
    ("Flatten/axis2", "Flatten", {"axis": 2}, [], ()),
    ("Reshape/runtime", "Reshape", {}, [("s", np.array([4, -1], np.int64))], ()),
    ("Expand/runtime", "Expand", {}, [("s", np.array([2, 1, 3, 4], np.int64))], ()),
    ("Tile/repeats", "Tile", {}, [("r", np.array([1, 2, 1], np.int64))], ()),
    ("Pad/reflect", "Pad", {"mode": "reflect"}, [("p", np.array([0, 1, 1, 1, 0, 2], np.int64))], ()),
    ("Pad/reflect-constant-pads", "Pad", {"mode": "reflect"}, [("p", np.array([0, 1, 1, 1, 0, 2], np.int64))],
     ("p",)),
    ("Slice/runtime", "Slice", {}, [("s", np.array([1], np.int64)), ("e", np.array([3], np.int64)),
                                    ("a", np.array([-1], np.int64))], ()),
    ("CumProd/runtime-axis", "CumProd", {}, [("a", np.array(-1, np.int64))], ()),
    ("CumProd/constant-axis", "CumProd", {}, [("a", np.array(1, np.int64))], ("a",)),
    ("Compress/axis-1", "Compress", {"axis": -1}, [("c", np.array([1, 0, 1, 1], bool))], ()),
    ("Compress/axis0", "Compress", {"axis": 0}, [("c", np.array([0, 1], bool))], ()),
]


def _rank_unknown_model(op_type: str, attrs: Dict[str, Any], extra: Sequence[Tuple[str, np.ndarray]],
                        constants: Sequence[str]) -> tuple:
    """(model, feeds): x of shape (2, 1, 3, 4) squeezed on axis 1 by a run-time axes input, then
    ``op_type`` on it and the ``extra`` inputs (initializers when named in ``constants``)."""
    x = rand(2, 1, 3, 4)
    fed = [(n, v) for n, v in extra if n not in constants]
    feeds: Dict[str, np.ndarray] = {"x": x, "sq": np.array([1], np.int64), **dict(fed)}
    inputs = [helper.make_tensor_value_info("x", TensorProto.DOUBLE, x.shape),
              helper.make_tensor_value_info("sq", TensorProto.INT64, [1])]
    inputs += [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape) for n, v in fed]
    inits = [numpy_helper.from_array(v, n) for n, v in extra if n in constants]
    nodes = [helper.make_node("Squeeze", ["x", "sq"], ["t"]),
             helper.make_node(op_type, ["t", *(n for n, _ in extra)], ["y"], **attrs)]
    y = helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)
    model = helper.make_model(helper.make_graph(nodes, "rank_unknown", inputs, [y], inits),
                              opset_imports=[helper.make_opsetid("", 26 if op_type == "CumProd" else 18)])
    model.ir_version = 10
    (value,) = session(model).run(["y"], feeds)  # the full checker wants y's shape stated
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.DOUBLE, value.shape))
    return model, feeds


@pytest.mark.parametrize("case", RANK_CASES, ids=[c[0] for c in RANK_CASES])
def test_unknown_rank(case: RankCase) -> None:
    """The op's gradient is built while the rank of its input is unknown (checked: the model's
    own shape inference leaves it unknown), and agrees with float64 central differences."""
    _, op_type, attrs, extra, constants = case
    model, feeds = _rank_unknown_model(op_type, attrs, extra, constants)
    inferred = onnx.shape_inference.infer_shapes(model)
    t = next((vi for vi in inferred.graph.value_info if vi.name == "t"), None)
    assert t is None or not t.type.tensor_type.HasField("shape"), "the test needs t's rank unknown"
    report = check_gradients(model, ["x"], ["y"], feeds=feeds)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert report.ok, [(c.name, c.analytic, c.numeric) for c in report.checks if not c.ok]
    assert len(report.checks) == 1
    compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds))


def test_missing_rule_reported_before_consumer() -> None:
    """A custom op without a rule (nor a schema) feeding ReduceSum: the missing rule is the error,
    not the rank ReduceSum's gradient cannot learn from that op's output."""
    nodes = [helper.make_node("Foo", ["x"], ["c"], domain="my"),
             helper.make_node("ReduceSum", ["c"], ["y"], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my", 1)])
    with pytest.raises(onnxgrad.NoGradientError, match="my::Foo"):
        onnxgrad.gradients(model, "y", "x")


def test_rule_less_op_feeding_an_input_without_gradient_is_fine() -> None:
    """The same custom op feeding only an input the consumer's rule does not differentiate (the
    grid of GridSample) stops nothing: no gradient reaches it, so no rule is asked for."""
    nodes = [helper.make_node("Foo", ["x"], ["grid"], domain="my"),
             helper.make_node("GridSample", ["x", "grid"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 2, 2])],
                              value_info=[helper.make_tensor_value_info("grid", TensorProto.FLOAT, [1, 2, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("my", 1)])
    result = onnxgrad.gradients(model, "y", "x")
    assert result.names[0] is not None
