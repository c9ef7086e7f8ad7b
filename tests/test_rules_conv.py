"""Numeric tests of Conv and ConvTranspose (onnxruntime's CPU kernels exist for float32 only)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrad.checking import check_gradients, session
from onnxgrad.emitter import Emitter
from onnxgrad.graph import GraphIndex
from onnxgrad.rules import conv as conv_rules
from rulecheck import Case, check_case, check_second_order, compare_with_reference, params, rand, second_order_params

F32 = ("float32",)


def conv(id, x, w, b=None, opset=18, symbolic_dims=(), **attrs):
    inputs = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    return Case(f"Conv/{id}", "Conv", inputs, attrs, opset=opset, dtypes=F32, symbolic_dims=symbolic_dims)


def convt(id, x, w, b=None, opset=18, **attrs):
    inputs = [("x", x), ("w", w)] + ([("b", b)] if b is not None else [])
    return Case(f"ConvTranspose/{id}", "ConvTranspose", inputs, attrs, opset=opset, dtypes=F32)


CASES = [
    conv("1d", rand(2, 3, 7), rand(4, 3, 3, seed=1), rand(4, seed=2)),
    conv("1d-stride-remainder", rand(1, 2, 8), rand(3, 2, 3, seed=1), strides=[3], pads=[1, 0]),
    conv("2d-bias", rand(2, 3, 5, 6), rand(4, 3, 3, 2, seed=1), rand(4, seed=2)),
    conv("2d-stride-pad", rand(1, 2, 7, 8), rand(3, 2, 3, 3, seed=1), strides=[2, 2], pads=[1, 0, 2, 1]),
    conv("2d-dilation", rand(1, 2, 7, 7), rand(2, 2, 2, 3, seed=1), dilations=[2, 1], strides=[1, 2]),
    conv("2d-group", rand(2, 4, 5, 5), rand(6, 2, 3, 3, seed=1), rand(6, seed=2), group=2, pads=[1, 1, 1, 1]),
    conv("2d-depthwise", rand(1, 3, 6, 6), rand(3, 1, 3, 3, seed=1), group=3, strides=[2, 2]),
    conv("2d-depthwise-batch", rand(2, 3, 6, 5), rand(3, 1, 3, 2, seed=1), rand(3, seed=2), group=3, strides=[2, 1],
         pads=[1, 0, 0, 1]),
    conv("2d-depthwise-multiplier", rand(2, 2, 5, 5), rand(4, 1, 2, 2, seed=1), group=2, dilations=[2, 2]),
    conv("2d-same-upper", rand(1, 2, 7, 6), rand(3, 2, 3, 4, seed=1), auto_pad="SAME_UPPER", strides=[2, 2]),
    conv("2d-same-lower", rand(1, 2, 7, 6), rand(3, 2, 3, 4, seed=1), auto_pad="SAME_LOWER", strides=[2, 1]),
    conv("2d-valid", rand(1, 2, 6, 7), rand(2, 2, 3, 3, seed=1), auto_pad="VALID", strides=[2, 3]),
    conv("2d-kernel-shape-attr", rand(1, 1, 5, 5), rand(2, 1, 3, 3, seed=1), kernel_shape=[3, 3]),
    conv("2d-symbolic-batch-group", rand(3, 4, 5, 5), rand(4, 2, 3, 3, seed=1), group=2, strides=[2, 2],
         symbolic_dims=["x"]),
    # weight gradient as one Gemm: 1x1 kernels, batch 1 and 2, unit and skipping strides
    conv("2d-1x1", rand(1, 4, 5, 6), rand(3, 4, 1, 1, seed=1), rand(3, seed=2)),
    conv("2d-1x1-batch", rand(2, 4, 5, 6), rand(3, 4, 1, 1, seed=1)),
    conv("2d-1x1-stride2", rand(2, 3, 7, 6), rand(4, 3, 1, 1, seed=1), strides=[2, 2]),
    conv("2d-1x1-stride2-opset9", rand(1, 3, 7, 6), rand(4, 3, 1, 1, seed=1), opset=9, strides=[2, 3]),
    # the last window ends 2 samples before x does: x's tail is cut before the taps
    conv("1d-stride-unread-tail", rand(2, 2, 9), rand(3, 2, 3, seed=1), strides=[3], pads=[0, 1]),
    # one Gemm per tap (32+ input channels, more positions than taps x channels)
    conv("2d-gemm-per-tap", rand(1, 32, 14, 13), rand(3, 32, 2, 2, seed=1), rand(3, seed=2), pads=[1, 0, 0, 1]),
    conv("2d-stride-dilation-batch", rand(2, 2, 9, 8), rand(3, 2, 3, 2, seed=1), strides=[2, 3], dilations=[2, 2],
         pads=[1, 2, 0, 1]),
    # groups: one grouped Conv at unit strides (pads up to the kernel extent), a split otherwise
    conv("2d-group-1x1-batch", rand(2, 6, 4, 5), rand(6, 2, 1, 1, seed=1), group=3),
    conv("2d-group-wide-pads", rand(1, 4, 5, 5), rand(4, 2, 2, 2, seed=1), group=2, pads=[2, 1, 1, 2]),
    conv("2d-group-stride-opset9", rand(1, 4, 6, 6), rand(4, 2, 3, 3, seed=1), opset=9, group=2, strides=[2, 2],
         pads=[1, 1, 1, 1]),
    conv("2d-depthwise-multiplier-pad", rand(2, 2, 5, 5), rand(4, 1, 3, 3, seed=1), group=2, pads=[1, 1, 1, 1]),
    conv("3d", rand(1, 2, 4, 5, 4), rand(2, 2, 2, 3, 2, seed=1), rand(2, seed=2),
         strides=[2, 1, 2], pads=[1, 0, 1, 0, 1, 1]),
    conv("3d-group-dilation", rand(1, 4, 5, 5, 5), rand(4, 2, 2, 2, 2, seed=1), group=2, dilations=[2, 1, 2]),
    conv("2d-opset9", rand(1, 2, 6, 6), rand(3, 2, 3, 3, seed=1), rand(3, seed=2), opset=9, strides=[2, 2],
         pads=[1, 1, 0, 0]),
    conv("2d-opset11-same", rand(1, 2, 5, 5), rand(2, 2, 2, 2, seed=1), opset=11, auto_pad="SAME_UPPER"),
    convt("1d", rand(2, 3, 4), rand(3, 2, 3, seed=1), rand(2, seed=2)),
    convt("2d-stride-pad", rand(1, 2, 3, 4), rand(2, 3, 3, 3, seed=1), rand(3, seed=2),
          strides=[2, 2], pads=[1, 0, 0, 1]),
    convt("2d-output-padding", rand(1, 2, 3, 3), rand(2, 2, 3, 3, seed=1), strides=[3, 2], output_padding=[2, 1],
          pads=[0, 1, 1, 0]),
    convt("2d-output-padding-beyond-pads", rand(1, 1, 3, 3), rand(1, 2, 2, 2, seed=1), strides=[3, 3],
          output_padding=[2, 1]),
    # onnx.reference runs a grouped ConvTranspose right only with one channel per group
    convt("2d-group-dilation", rand(1, 4, 3, 3), rand(4, 1, 2, 2, seed=1), group=4, dilations=[2, 1], strides=[1, 2]),
    convt("2d-depthwise", rand(2, 3, 3, 3), rand(3, 1, 3, 3, seed=1), group=3, strides=[2, 2]),
    convt("2d-output-shape-upper", rand(1, 2, 3, 3), rand(2, 2, 3, 3, seed=1), strides=[2, 2], output_shape=[6, 7],
          auto_pad="SAME_UPPER"),
    convt("2d-output-shape-lower", rand(1, 2, 3, 3), rand(2, 2, 3, 3, seed=1), strides=[2, 2], output_shape=[5, 8],
          auto_pad="SAME_LOWER"),
    convt("2d-same-upper", rand(1, 2, 3, 3), rand(2, 2, 2, 3, seed=1), strides=[2, 2], auto_pad="SAME_UPPER"),
    convt("2d-same-lower", rand(1, 2, 3, 3), rand(2, 2, 2, 3, seed=1), strides=[2, 2], auto_pad="SAME_LOWER"),
    # onnx.reference's grouped ConvTranspose is wrong unless depthwise (forward op, not the gradient)
    Case("ConvTranspose/2d-group", "ConvTranspose", [("x", rand(2, 4, 3, 3)), ("w", rand(4, 3, 2, 2, seed=1))],
         {"group": 2, "strides": [2, 1], "pads": [0, 1, 1, 0]}, dtypes=F32, reference=False),
    convt("3d", rand(1, 2, 2, 3, 2), rand(2, 2, 2, 2, 3, seed=1), rand(2, seed=2), strides=[2, 1, 2],
          pads=[0, 1, 1, 1, 0, 0]),
    convt("2d-opset9", rand(1, 2, 3, 3), rand(2, 2, 3, 3, seed=1), opset=9, strides=[2, 2], output_padding=[1, 1]),
]


@pytest.fixture(params=["im2col", "conv"])
def weight_grad_form(request, monkeypatch):
    """Both forms of the weight gradient on every case: im2col + Gemm (the test tensors are tiny, so
    the size threshold is lowered) and the one-Conv form used below that threshold."""
    monkeypatch.setattr(conv_rules, "_IM2COL_MIN_ELEMENTS", 0 if request.param == "im2col" else 2**62)
    monkeypatch.setattr(conv_rules, "_CONV_MAX_MACS", 2**62)
    return request.param


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype, weight_grad_form):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype, weight_grad_form):
    check_second_order(case, dtype)


@pytest.mark.parametrize("strides", [[2, 3], [1, 1]])
def test_symbolic_spatial_dims(strides):
    """Spatial dims unknown when the gradient is built: dx is cropped to Shape(x) at run time."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, "H", "W"])
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=strides, pads=[1, 0, 0, 1])
    w = numpy_helper.from_array(rand(3, 2, 3, 2, seed=1).astype(np.float32), "w")
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, "H2", "W2"])
    graph = helper.make_graph([node], "symbolic", [x], [out], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 10
    feeds = {"x": rand(2, 2, 8, 7).astype(np.float32)}
    report = check_gradients(model, ["x", "w"], ["y"], feeds=feeds)
    assert len(report.checks) == 2 and report.ok, report.checks
    onnx.checker.check_model(report.gradient_model, full_check=True)
    y = session(model).run(["y"], feeds)[0]
    seeds = {i.name: rand(*y.shape, seed=3).astype(np.float32) for i in report.gradient_model.graph.input
             if i.name not in feeds}
    compare_with_reference(report.gradient_model, {**feeds, **seeds})


SHAPE_RULE_CASES = [
    ("Conv", [1, 3, 7, 8], [4, 3, 3, 2], {"strides": [2, 3], "pads": [1, 0, 2, 1], "dilations": [1, 2]}),
    ("Conv", [2, 4, 9], [6, 2, 4], {"group": 2, "pads": [3, 0], "strides": [2]}),
    ("Conv", ["N", 3, 5, 5], [2, 3, 1, 1], {}),
    ("ConvTranspose", [1, 3, 4, 5], [3, 2, 3, 3], {"strides": [2, 2], "pads": [1, 0, 0, 1], "output_padding": [1, 0]}),
    ("ConvTranspose", [2, 4, 3], [4, 1, 2], {"group": 4, "dilations": [2], "strides": [3]}),
    ("ConvTranspose", [1, 2, 3, 3], [2, 5, 2, 2], {"output_shape": [7, 6], "strides": [2, 2]}),
]


@pytest.mark.parametrize("op_type,x_shape,w_shape,attrs", SHAPE_RULE_CASES)
def test_op_table_shapes_of_convolutions_agree_with_onnx(op_type, x_shape, w_shape, attrs):
    """The rules no longer record the shapes of the convolutions they emit: the op table's shape
    rules do, and must say what onnx's shape inference says."""
    node = helper.make_node(op_type, ["x", "w"], ["y"], **attrs)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * len(x_shape))],
                              [numpy_helper.from_array(np.zeros(w_shape, np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True).graph.output[0].type.tensor_type.shape
    expected = tuple(d.dim_value if d.HasField("dim_value") else d.dim_param for d in inferred.dim)
    g = Emitter(GraphIndex(model), "gradients")
    assert g.shape(g.op(op_type, "x", "w", **attrs)) == expected
