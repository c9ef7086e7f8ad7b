"""The emitter's op table and the readers of the forward node: what rules rely on."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from onnxgrad.emitter import END, Emitter, Op
from onnxgrad.errors import GradientArgumentError, OpTableError
from onnxgrad.graph import GraphIndex
from onnxgrad.optable import MOVED_TO_INPUT, OPS


def _emitter(opset: int, dtype: int = TensorProto.FLOAT) -> Emitter:
    """An emitter over y = Relu(x), x of shape (2, 3, 4)."""
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", dtype, [2, 3, 4])],
                              [helper.make_tensor_value_info("y", dtype, [2, 3, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return Emitter(GraphIndex(model), "gradients")


def _ops(g: Emitter) -> list:
    return [n.op_type for n in g.nodes]


def test_an_op_missing_from_the_table_names_the_table():
    g = _emitter(18)
    with pytest.raises(OpTableError, match=r"op table \(onnxgrad/optable.py, OPS\) has no entry for 'NotAnOp'"):
        g.NotAnOp("x")
    assert OpTableError.exit_code == 7


def test_custom_domains_are_emitted_as_given():
    g = _emitter(18)
    out = g.op("Mystery", "x", domain="my.ops")
    assert g.nodes[-1].domain == "my.ops" and g.dtype(out) == TensorProto.FLOAT


def test_an_op_the_opset_lacks_is_refused_clearly():
    g = _emitter(9)
    assert not g.can_emit("Range") and g.can_emit("Mul")
    with pytest.raises(GradientArgumentError, match="Range, which opset 9 does not define"):
        g.Range(g.scalar_int(0), g.scalar_int(3), g.scalar_int(1))


@pytest.mark.parametrize("opset,expected", [(10, ["Less", "Not", "Less", "Not", "And"]), (11, ["Equal"])])
def test_float_equal_before_opset_11_is_written_without_equal(opset, expected):
    g = _emitter(opset)
    out = g.Equal("x", "y")
    assert _ops(g) == expected and g.dtype(out) == TensorProto.BOOL


def test_integer_equal_stays_equal_at_opset_9():
    g = _emitter(9)
    g.Equal(g.ints([1]), g.ints([2]))
    assert _ops(g)[-1] == "Equal"


@pytest.mark.parametrize("opset,as_input", [(17, False), (18, True)])
def test_reduce_axes_move_to_an_input_at_opset_18(opset, as_input):
    g = _emitter(opset)
    g.ReduceMax("x", axes=[1], keepdims=1)
    node = g.nodes[-1]
    assert (len(node.input) == 2) is as_input
    assert any(a.name == "axes" for a in node.attribute) is not as_input


@pytest.mark.parametrize("opset", [9, 13])
def test_unsqueeze_records_its_shape_in_both_forms(opset):
    g = _emitter(opset)
    assert g.shape(g.unsqueeze("x", [0, -1])) == (1, 2, 3, 4, 1)


@pytest.mark.parametrize("opset", [9, 11])
def test_slice_to_the_end_and_pad_in_both_forms(opset):
    g = _emitter(opset)
    g.slice("x", [1], [None], [2])
    sliced = g.nodes[-1]
    ends = (numpy_helper.to_array(g.nodes[-3].attribute[0].t).tolist() if opset >= 10
            else helper.get_attribute_value(next(a for a in sliced.attribute if a.name == "ends")))
    assert ends == [END]
    g.pad("x", [0, 0, 1, 0, 0, 1])
    assert g.nodes[-1].op_type == "Pad" and (len(g.nodes[-1].input) == 2) is (opset >= 11)


def test_slice_keeping_every_axis_whole_is_its_input():
    g = _emitter(13)
    assert g.slice("x", [0, 0], [3, None], [1, 2]) == "x" and g.slice("x", [0], [9], [-1], steps=[1]) == "x"
    assert not g.nodes
    assert g.slice("x", [0], [2], [1]) != "x" and g.slice("x", [0], [4], [2], steps=[2]) != "x"
    assert _ops(g).count("Slice") == 2


def test_slice_steps_before_opset_10_are_refused():
    with pytest.raises(GradientArgumentError, match="Slice with steps needs opset 10"):
        _emitter(9).slice("x", [0], [2], [0], steps=[2])


def test_where_on_bfloat16_before_opset_16_goes_through_float():
    g = _emitter(13, TensorProto.BFLOAT16)
    out = g.Where(g.Less("x", "y"), "x", "y")
    assert _ops(g)[-1] == "Cast" and "Where" in _ops(g) and g.dtype(out) == TensorProto.BFLOAT16


def test_gemm_gets_a_zero_c_before_opset_11():
    assert len(_emitter_gemm(9).input) == 3 and len(_emitter_gemm(11).input) == 2


def _emitter_gemm(opset: int) -> onnx.NodeProto:
    g = _emitter(opset)
    g.gemm(g.const(np.ones((2, 2))), g.const(np.ones((2, 2))))
    return g.nodes[-1]


def test_scoped_names_and_restores_the_scope():
    g = _emitter(18)
    with g.scoped("y_grad"):
        inner = g.Neg("x")
    outer = g.Neg("x")
    assert inner == "gradients/y_grad/Neg" and outer == "gradients/Neg"


def test_every_moved_argument_has_a_table_entry():
    assert set(MOVED_TO_INPUT) <= set(OPS)


@pytest.mark.parametrize("opset", [11, 13])
def test_op_reads_axes_whatever_the_form(opset):
    g = _emitter(opset)
    if opset >= 13:
        node = helper.make_node("Squeeze", ["x", g.ints([0])], ["s"])
    else:
        node = helper.make_node("Squeeze", ["x"], ["s"], axes=[0])
    op = Op(node, 0, opset, g.constant_value)
    assert op.axes() == [0] and not op.is_dynamic("axes")


def test_op_reads_slice_params_and_sees_dynamic_ones():
    g = _emitter(13)
    static = Op(helper.make_node("Slice", ["x", g.ints([1]), g.ints([3])], ["s"]), 0, 13, g.constant_value)
    assert static.slice_params() == ([1], [3], [0], [1])
    dynamic = Op(helper.make_node("Slice", ["x", "starts", g.ints([3])], ["s"]), 0, 13, g.constant_value)
    assert dynamic.slice_params() is None and dynamic.is_dynamic("starts")
    with pytest.raises(GradientArgumentError, match="computed at run time"):
        dynamic.arg("starts")


def test_op_reads_the_default_of_each_form():
    dft9 = Op(helper.make_node("DFT", ["x"], ["y"]), 0, 17)
    dft20 = Op(helper.make_node("DFT", ["x"], ["y"]), 0, 20)
    assert int(dft9.arg("axis")) == 1 and int(dft20.arg("axis")) == -2


@pytest.mark.parametrize("opset,inputs", [(10, ["x", "s"]), (11, ["x", "e", "s", ""]), (13, ["x", "", "s", ""])])
def test_resize_takes_the_inputs_of_its_opset(opset, inputs):
    """Written (X, roi, scales, sizes): (X, scales) at opset 10; roi and scales required (empty
    when not given) at 11 and 12; as written from 13."""
    g = _emitter(opset)
    scales = g.const(np.asarray([1, 1, 2], np.float32))
    g.Resize("x", None, scales, None, mode="nearest")
    node = g.nodes[-1]
    names = {"x": "x", scales: "s", "": ""}
    assert node.op_type == "Resize" and [names.get(i, "e") for i in node.input] == inputs
    if opset == 11:
        assert g.constant_value(node.input[1]).shape == (0,)
    with pytest.raises(GradientArgumentError, match="roi and sizes only from opset 11"):
        _emitter(10).Resize("x", None, None, g.ints([2, 3, 8]))


@pytest.mark.parametrize("opset", [9, 10])
def test_topk_k_is_an_attribute_before_opset_10(opset):
    g = _emitter(opset)
    g.op("TopK", "x", outputs=2, axis=1, k=2)
    node = g.nodes[-1]
    as_attribute = [helper.get_attribute_value(a) for a in node.attribute if a.name == "k"]
    assert (as_attribute == [2]) is (opset < 10) and (len(node.input) == 2) is (opset >= 10)
    if opset < 10:
        with pytest.raises(GradientArgumentError, match="TopK takes k as an input only from opset 10"):
            g.op("TopK", "x", g.ints([2]), outputs=2, axis=1)
