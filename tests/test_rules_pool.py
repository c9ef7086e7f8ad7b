"""Numeric tests of the pooling rules.

onnxruntime has float64 CPU kernels for MaxPool, GlobalMaxPool and GlobalAveragePool only; the
other pools are tested in float32. MaxPool inputs are distinct values (a shuffled ramp) so no
window has a tied maximum; overlapping windows (stride < kernel) make one input the maximum of
several windows, which exercises the scatter-add with duplicates.
"""

import numpy as np
import pytest
from onnx import TensorProto, helper

from onnxgrad.emitter import Emitter
from onnxgrad.graph import GraphIndex
from onnxgrad.optable import has_attribute
from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params

F32 = ("float32",)


def distinct(*shape, seed=0):
    """Values far apart (>= 0.05) in random order: no ties, no kinks within the check's step."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(np.linspace(-2, 2, n)).reshape(shape)


def peaked(*shape, seed=0):
    """A big value in the middle of every plane: the max of every window that covers it."""
    x = distinct(*shape, seed=seed) * 0.1
    centre = (slice(None), slice(None)) + tuple(s // 2 for s in shape[2:])
    x[centre] = 5.0 + np.arange(shape[0] * shape[1]).reshape(shape[:2])
    return x


def pool(op, id, x, opset=18, dtypes=("float32", "float64"), reference=True, symbolic_dims=(), **attrs):
    return Case(f"{op}/{id}", op, [("x", x)], attrs, opset=opset, dtypes=dtypes, reference=reference,
                symbolic_dims=symbolic_dims)


CASES = [
    pool("MaxPool", "1d", distinct(2, 3, 9), kernel_shape=[3], strides=[2]),
    pool("MaxPool", "2d-overlap", distinct(2, 2, 6, 7), kernel_shape=[3, 3], strides=[1, 1]),
    pool("MaxPool", "2d-shared-max", peaked(1, 2, 7, 7), kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
    pool("MaxPool", "2d-stride-pad", distinct(1, 2, 7, 8), kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]),
    pool("MaxPool", "2d-ceil", distinct(1, 2, 6, 7), kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    pool("MaxPool", "2d-dilation", distinct(1, 2, 7, 7), kernel_shape=[2, 2], dilations=[2, 3], strides=[1, 2]),
    pool("MaxPool", "2d-same-upper", distinct(1, 2, 7, 6), kernel_shape=[3, 2], strides=[2, 2], auto_pad="SAME_UPPER"),
    pool("MaxPool", "2d-same-lower", distinct(1, 2, 8, 6), kernel_shape=[2, 3], strides=[2, 1], auto_pad="SAME_LOWER"),
    pool("MaxPool", "2d-valid", distinct(1, 1, 7, 7), kernel_shape=[3, 3], strides=[2, 2], auto_pad="VALID"),
    pool("MaxPool", "2d-storage-order", distinct(1, 2, 5, 5), kernel_shape=[2, 2], storage_order=1),
    Case("MaxPool/2d-indices-output", "MaxPool", [("x", distinct(1, 2, 5, 6))],
         dict(kernel_shape=[3, 3], strides=[1, 2], pads=[1, 1, 1, 1]), n_outputs=2),
    pool("MaxPool", "2d-symbolic-batch", distinct(3, 2, 5, 5), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
         symbolic_dims=["x"]),
    pool("MaxPool", "3d", distinct(1, 2, 4, 5, 4), kernel_shape=[2, 3, 2], strides=[1, 2, 2], pads=[0, 1, 0, 0, 1, 1]),
    pool("MaxPool", "2d-opset9", distinct(1, 2, 6, 6), opset=9, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 0, 0]),
    pool("MaxPool", "2d-opset11", distinct(1, 2, 6, 6), opset=11, kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    # before opset 16: windows split into classes that never overlap (9 classes at unit strides)
    # onnx.reference's forward MaxPool is wrong at unit strides with pads (shape, index error)
    pool("MaxPool", "2d-opset13-unit-stride", peaked(1, 2, 6, 5), opset=13, kernel_shape=[3, 2], pads=[1, 0, 1, 1],
         reference=False),
    pool("MaxPool", "2d-opset13-unit-stride-no-pads", peaked(1, 2, 6, 5), opset=13, kernel_shape=[3, 2]),
    pool("MaxPool", "2d-opset10-disjoint", distinct(2, 2, 6, 7), opset=10, kernel_shape=[2, 3], strides=[2, 3]),
    pool("MaxPool", "2d-opset10-dilation-ceil", distinct(1, 2, 8, 7), opset=10, kernel_shape=[2, 2], strides=[2, 1],
         dilations=[2, 2], ceil_mode=1),
    pool("MaxPool", "1d-opset9-unit-stride", distinct(2, 3, 8), opset=9, kernel_shape=[3]),
    pool("MaxPool", "2d-symbolic-batch-opset11", distinct(3, 2, 5, 5), opset=11, kernel_shape=[3, 3], strides=[2, 2],
         symbolic_dims=["x"]),
    pool("MaxPool", "2d-symbolic-batch-opset9", distinct(3, 2, 5, 5), opset=9, kernel_shape=[3, 3], strides=[2, 2],
         symbolic_dims=["x"]),
    pool("MaxPool", "1d-unit-stride", distinct(2, 3, 8), kernel_shape=[2], pads=[1, 1], reference=False),
    Case("MaxPool/2d-indices-output-storage-order", "MaxPool", [("x", distinct(1, 2, 5, 6))],
         {"kernel_shape": [3, 3], "strides": [2, 2], "storage_order": 1}, n_outputs=2),
    pool("AveragePool", "1d", rand(2, 3, 9), dtypes=F32, kernel_shape=[3], strides=[2]),
    pool("AveragePool", "2d-overlap", rand(2, 2, 6, 7), dtypes=F32, kernel_shape=[3, 2], strides=[1, 1]),
    pool("AveragePool", "2d-pads-exclude", rand(1, 2, 6, 6), dtypes=F32, kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 0]),
    pool("AveragePool", "2d-pads-include", rand(1, 2, 6, 6), dtypes=F32, kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 0], count_include_pad=1),
    pool("AveragePool", "2d-ceil-exclude", rand(1, 2, 6, 7), dtypes=F32, kernel_shape=[3, 3], strides=[2, 2],
         ceil_mode=1),
    pool("AveragePool", "2d-ceil-include", rand(1, 2, 6, 7), dtypes=F32, kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
    pool("AveragePool", "2d-same-upper", rand(1, 2, 7, 6), dtypes=F32, kernel_shape=[3, 2], strides=[2, 2],
         auto_pad="SAME_UPPER"),
    pool("AveragePool", "2d-dilation", rand(1, 2, 7, 7), dtypes=F32, opset=19, kernel_shape=[2, 2],
         dilations=[2, 2], pads=[1, 1, 1, 1]),
    pool("AveragePool", "2d-symbolic-batch", rand(3, 2, 5, 5), dtypes=F32, kernel_shape=[2, 2],
         symbolic_dims=["x"]),
    pool("AveragePool", "2d-ceil-past-pads", rand(1, 2, 7, 7), dtypes=F32, kernel_shape=[3, 3], strides=[3, 3],
         pads=[1, 0, 0, 1], ceil_mode=1),
    pool("AveragePool", "2d-unread-tail-opset11", rand(2, 3, 8, 9), dtypes=F32, opset=11, kernel_shape=[2, 3],
         strides=[3, 4]),
    pool("AveragePool", "3d", rand(1, 2, 4, 5, 4), dtypes=F32, kernel_shape=[2, 3, 2], strides=[2, 1, 2]),
    pool("AveragePool", "2d-opset9", rand(1, 2, 6, 6), dtypes=F32, opset=9, kernel_shape=[3, 3], strides=[2, 2],
         pads=[1, 1, 1, 1], count_include_pad=1),
    pool("LpPool", "2d-p2", rand(1, 2, 6, 6, low=0.2, high=1.5), dtypes=F32, kernel_shape=[3, 3], strides=[2, 1],
         pads=[1, 0, 0, 1]),
    pool("LpPool", "2d-p1", rand(1, 2, 5, 5, low=0.2, high=1.5), dtypes=F32, kernel_shape=[2, 2], p=1),
    pool("LpPool", "2d-p3", rand(1, 2, 5, 6, low=-1.5, high=-0.2), dtypes=F32, kernel_shape=[2, 3], strides=[1, 2],
         p=3),
    pool("LpPool", "2d-opset18-dilation-ceil", rand(1, 2, 7, 6, low=0.2, high=1.5), dtypes=F32, kernel_shape=[2, 2],
         strides=[2, 2], dilations=[2, 1], ceil_mode=1),
    pool("LpPool", "1d-opset11", rand(2, 2, 7, low=0.2, high=1.5), dtypes=F32, opset=11, kernel_shape=[3], strides=[2]),
    pool("GlobalAveragePool", "2d", rand(2, 3, 4, 5), dtypes=F32),
    pool("GlobalAveragePool", "2d-symbolic-batch", rand(3, 2, 2, 3), dtypes=F32, symbolic_dims=["x"]),
    pool("GlobalAveragePool", "3d-opset9", rand(1, 2, 3, 2, 4), dtypes=F32, opset=9),
    pool("GlobalMaxPool", "2d", distinct(2, 3, 4, 5), dtypes=F32),
    pool("GlobalMaxPool", "2d-opset9", distinct(2, 2, 3, 4), dtypes=F32, opset=9),
    # onnx.reference has no GlobalLpPool kernel
    pool("GlobalLpPool", "2d-p2", rand(2, 3, 3, 4, low=0.2, high=1.5), dtypes=F32, reference=False),
    pool("GlobalLpPool", "2d-p3", rand(1, 2, 3, 3, low=-1.5, high=-0.2), dtypes=F32, p=3, reference=False),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def rois(*boxes):
    return np.asarray(boxes, np.float64)


# onnxruntime runs MaxRoiPool in float32 only and onnx.reference has no kernel for it. Roi corners
# avoid .5 after scaling (rounding conventions differ there); rois overlap, so one input is the
# maximum of bins of several rois.
ROI_CASES = [
    Case("MaxRoiPool/overlapping", "MaxRoiPool",
         [("x", distinct(2, 2, 6, 7)), ("rois", rois([0, 0, 0, 4, 5], [1, 1, 2, 6, 5], [0, 2, 1, 6, 4]))],
         dict(pooled_shape=[2, 3]), dtypes=F32, wrt=["x"], constant=["rois"], reference=False),
    Case("MaxRoiPool/scaled-clipped", "MaxRoiPool",
         [("x", distinct(1, 3, 5, 5, seed=1)), ("rois", rois([0, 0.2, 1.1, 12.2, 7.9], [0, 4.1, 3.9, 8.2, 9.8]))],
         dict(pooled_shape=[3, 2], spatial_scale=0.5), dtypes=F32, wrt=["x"], constant=["rois"], reference=False),
]


@pytest.mark.parametrize("case,dtype", params(ROI_CASES))
def test_maxroipool(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(ROI_CASES))
def test_maxroipool_second_order(case, dtype):
    check_second_order(case, dtype)


def _unpool_emitter(opset, dtype):
    """An emitter over a MaxPool whose Indices it reads, at ``opset``."""
    node = helper.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2], strides=[2, 2])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", dtype, [1, 2, 4, 4])],
                              [helper.make_tensor_value_info("y", dtype, [1, 2, 2, 2]),
                               helper.make_tensor_value_info("i", TensorProto.INT64, [1, 2, 2, 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7
    return Emitter(GraphIndex(model), "gradients")


@pytest.mark.parametrize("opset,scatter9,dtype,expected", [
    (9, False, TensorProto.FLOAT, ["MaxUnpool"]),
    (9, False, TensorProto.DOUBLE, ["Cast", "MaxUnpool", "Cast", "Cast", "Sub", "Cast", "MaxUnpool", "Cast", "Cast",
                                    "Sub", "Cast", "MaxUnpool", "Cast", "Sum"]),
    (9, True, TensorProto.FLOAT, ["ConstantOfShape", "Reshape", "Reshape", "Reshape", "Reshape", "Reshape", "Reshape",
                                  "Scatter", "Reshape", "Reshape"]),
    (11, False, TensorProto.FLOAT, ["ConstantOfShape", "Reshape", "Reshape", "Reshape", "ScatterND", "Reshape"]),
])
def test_maxpool_scatter_form_is_the_op_tables(opset, scatter9, dtype, expected):
    """The MaxPool rule writes MaxUnpool; the op table picks the form the opset and the target's
    runtimes run (a scatter from opset 11 or for OpenVINO/tract, double through three floats for
    onnxruntime's float-only kernel), and types a recomputed pool's Indices as int64."""
    g = _unpool_emitter(opset, dtype)
    y, indices = g.op("MaxPool", "x", outputs=2, kernel_shape=[2, 2], strides=[2, 2])
    assert g.dtype(indices) == TensorProto.INT64 and g.dtype(y) == dtype
    g.scatter9 = scatter9
    before = len(g.nodes)
    g.MaxUnpool("y", "i", g.shape_of("x"), kernel_shape=[3, 3], strides=[1, 1])
    assert [n.op_type for n in g.nodes[before:] if n.op_type != "Constant"] == expected


def test_scatter_add_is_asked_of_the_schema():
    assert not has_attribute(_unpool_emitter(15, TensorProto.FLOAT), "ScatterND", "reduction")
    assert has_attribute(_unpool_emitter(16, TensorProto.FLOAT), "ScatterND", "reduction")
    assert not has_attribute(_unpool_emitter(9, TensorProto.FLOAT), "ScatterND", "reduction")  # no ScatterND at all


def test_maxpool_indices_scatter_without_wrapping_negative_ones():
    """From opset 16 the gradient scatters dy at the recomputed pool's Indices as they are: they are
    never negative, so no Less/Add/Where pass over them (2.5 ms of segnet512's 70 ms step)."""
    import onnxgrad

    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 4, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    ops = [n.op_type for n in onnxgrad.gradients(model, ["y"], ["x"]).model.graph.node[1:]]
    assert "ScatterND" in ops and not {"Less", "Where"} & set(ops), ops
