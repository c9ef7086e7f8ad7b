"""Numeric tests of the sequence and optional gradients in onnxgrad/rules/sequence.py.

Sequence ops consume or produce sequences, so each case is a small model from tensors to
tensors, checked like every rule: central differences in onnxruntime (float32 and float64), the
full ONNX check, and onnx.reference agreeing with onnxruntime on the gradient model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from rulecheck import DTYPES, Case, check_case, compare_with_reference, feeds_for, params, rand

import onnxgrad
from onnxgrad.checking import check_gradients, session

node = helper.make_node


@dataclass
class SeqCase:
    """A model from float inputs ``inputs`` (name -> value) to float outputs ``ys`` through ``nodes``;
    ``ints`` are int64 initializers (positions, split sizes)."""

    id: str
    nodes: List[onnx.NodeProto]
    inputs: Dict[str, np.ndarray]
    ys: List[str]
    ints: Dict[str, np.ndarray] = field(default_factory=dict)
    opset: int = 18
    # False only where onnx.reference evaluates the forward model wrongly; say why at the case
    reference: bool = True

    def build(self, dtype: str) -> tuple:
        elem = DTYPES[dtype]
        np_t = helper.tensor_dtype_to_np_dtype(elem)
        feeds = {k: v.astype(np_t) for k, v in self.inputs.items()}
        graph = helper.make_graph(
            self.nodes, self.id.replace("/", "_"),
            [helper.make_tensor_value_info(k, elem, v.shape) for k, v in feeds.items()],
            [helper.make_tensor_value_info(y, elem, None) for y in self.ys],
            [numpy_helper.from_array(v, k) for k, v in self.ints.items()])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)])
        model.ir_version = 10
        # outputs typed with the shapes onnxruntime computes (inference loses them through sequences)
        values = session(model).run(self.ys, feeds)
        del model.graph.output[:]
        model.graph.output.extend(helper.make_tensor_value_info(y, elem, v.shape) for y, v in zip(self.ys, values))
        return model, feeds

    def __str__(self) -> str:
        return self.id


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


def scalar(v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


CASES = [
    # the dynamo exporter's split: SplitToSequence + SequenceAt at constant positions, each used
    SeqCase("split/two-parts-both-used", [
        node("SplitToSequence", ["x", "split"], ["s"], axis=1),
        node("SequenceAt", ["s", "p0"], ["a"]), node("SequenceAt", ["s", "p1"], ["b"]),
        node("Mul", ["a", "a"], ["y0"]), node("Tanh", ["b"], ["y1"])],
        {"x": rand(3, 5)}, ["y0", "y1"], {"split": i64(2, 3), "p0": scalar(0), "p1": scalar(1)}),
    # chunk: equal parts, one of them used (zeros for the others), negative position
    SeqCase("chunk/scalar-split-last-used", [
        node("SplitToSequence", ["x", "split"], ["s"], axis=0),
        node("SequenceAt", ["s", "p"], ["a"]), node("Mul", ["a", "w"], ["y"])],
        {"x": rand(5, 2), "w": rand(1, 2, seed=1)}, ["y"], {"split": scalar(2), "p": scalar(-1)}),
    SeqCase("unbind/keepdims0-three-used", [
        node("SplitToSequence", ["x"], ["s"], axis=-1, keepdims=0),
        node("SequenceAt", ["s", "p0"], ["a"]), node("SequenceAt", ["s", "p2"], ["b"]),
        node("SequenceAt", ["s", "p0"], ["c"]),
        node("Mul", ["a", "b"], ["ab"]), node("Add", ["ab", "c"], ["y"])],
        {"x": rand(2, 3)}, ["y"], {"p0": scalar(0), "p2": scalar(2)}),
    SeqCase("split/opset11-one-used", [
        node("SplitToSequence", ["x", "split"], ["s"], axis=1),
        node("SequenceAt", ["s", "p"], ["y"])],
        {"x": rand(2, 4)}, ["y"], {"split": i64(1, 3), "p": scalar(1)}, opset=11),
    SeqCase("split/opset11-two-used", [
        node("SplitToSequence", ["x", "split"], ["s"], axis=1),
        node("SequenceAt", ["s", "p0"], ["a"]), node("SequenceAt", ["s", "p1"], ["b"]),
        node("Mul", ["a", "b"], ["y"])], {"x": rand(2, 4)}, ["y"],
        {"split": i64(2, 2), "p0": scalar(0), "p1": scalar(-1)}, opset=11),
    SeqCase("construct-at/opset11-three-consumers", [
        node("SequenceConstruct", ["a", "b"], ["s"]),
        node("SequenceAt", ["s", "p0"], ["e0"]), node("SequenceAt", ["s", "p1"], ["e1"]),
        node("SequenceAt", ["s", "p0"], ["e2"]),
        node("Sin", ["e0"], ["y0"]), node("Tanh", ["e1"], ["y1"]), node("Exp", ["e2"], ["y2"])],
        {"a": rand(2, 2), "b": rand(3, seed=1)}, ["y0", "y1", "y2"], {"p0": scalar(0), "p1": scalar(1)},
        opset=11),
    # SequenceConstruct -> ConcatFromSequence with elements of different sizes along the axis
    SeqCase("construct-concat/axis1", [
        node("SequenceConstruct", ["a", "b", "a"], ["s"]),
        node("ConcatFromSequence", ["s"], ["c"], axis=1), node("Sin", ["c"], ["y"])],
        {"a": rand(2, 1), "b": rand(2, 3, seed=1)}, ["y"], opset=11),
    SeqCase("construct-concat/new-axis-negative", [
        node("SequenceConstruct", ["a", "b"], ["s"]),
        node("ConcatFromSequence", ["s"], ["c"], axis=-1, new_axis=1), node("Sin", ["c"], ["y"])],
        {"a": rand(2, 3), "b": rand(2, 3, seed=1)}, ["y"]),
    SeqCase("construct-at/element-gradients", [
        node("SequenceConstruct", ["a", "b"], ["s"]),
        node("SequenceAt", ["s", "p"], ["y"])],
        {"a": rand(2, 2), "b": rand(3, seed=1)}, ["y"], {"p": scalar(1)}),
    # SequenceInsert at a position, from the back, at the end
    *[SeqCase(f"insert/{name}", [
        node("SequenceConstruct", ["a", "b"], ["s"]),
        node("SequenceInsert", ["s", "t"] + pos, ["s2"]),
        node("ConcatFromSequence", ["s2"], ["c"], axis=0), node("Mul", ["c", "w"], ["y"])],
        {"a": rand(1, 2), "b": rand(2, 2, seed=1), "t": rand(3, 2, seed=2), "w": rand(6, 2, seed=3)}, ["y"],
        {"p": scalar(p)} if pos else {},
        # onnx.reference inserts at the front when the position equals the length (the end)
        reference=name != "position2-end")
      for name, pos, p in [("position1", ["p"], 1), ("position-minus1", ["p"], -1), ("position2-end", ["p"], 2),
                           ("end", [], 0)]],
    # SequenceErase at a position, from the back, the last
    *[SeqCase(f"erase/{name}", [
        node("SequenceConstruct", ["a", "b", "t"], ["s"]),
        node("SequenceErase", ["s"] + pos, ["s2"]),
        node("ConcatFromSequence", ["s2"], ["c"], axis=0), node("Mul", ["c", "c"], ["y"])],
        {"a": rand(1, 2), "b": rand(2, 2, seed=1), "t": rand(3, 2, seed=2)}, ["y"],
        {"p": scalar(p)} if pos else {})
      for name, pos, p in [("position0", ["p"], 0), ("position-minus2", ["p"], -2), ("position2-last", ["p"], 2),
                           ("position-minus1", ["p"], -1), ("last", [], 0)]],
    # a sequence of unknown provenance (zeros through a Loop), used twice (gradients added by a Loop)
    SeqCase("insert-at/generic-zeros-and-two-consumers", [
        node("SequenceConstruct", ["a"], ["s"]),
        node("SequenceInsert", ["s", "b"], ["s2"]),
        node("SequenceAt", ["s2", "p"], ["e"]), node("Mul", ["e", "e"], ["y0"]),
        node("ConcatFromSequence", ["s2"], ["c"], axis=0), node("Sin", ["c"], ["y1"])],
        {"a": rand(2, 2), "b": rand(1, 2, seed=1)}, ["y0", "y1"], {"p": scalar(1)}),
]


@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sequence(case: SeqCase, dtype: str) -> None:
    model, feeds = case.build(dtype)
    report = check_gradients(model, list(case.inputs), case.ys, feeds=feeds)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    bad = [(c.name, c.analytic, c.numeric, c.jacobian_ratio) for c in report.checks if not c.ok]
    assert not bad, bad
    assert len(report.checks) == len(case.inputs)
    if case.reference:
        compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds))


def test_sequence_of_unknown_make_before_opset_13_says_why() -> None:
    """Zeros for the other elements of a sequence no split or construct made need a Loop carrying
    a sequence: a clear error before opset 13."""
    model, _ = SeqCase("insert-at/opset12", [
        node("SequenceConstruct", ["a"], ["s"]), node("SequenceInsert", ["s", "b"], ["s2"]),
        node("SequenceAt", ["s2", "p"], ["y"])], {"a": rand(2, 2), "b": rand(1, 2, seed=1)}, ["y"],
        {"p": scalar(1)}, opset=12).build("float32")
    with pytest.raises(onnxgrad.GradientArgumentError, match="opset 13"):
        onnxgrad.gradients(model, "y", ["a", "b"])


# Optional around a tensor: the gradient passes through the optional value
OPTIONAL = [Case("OptionalGetElement/tensor", "OptionalGetElement", [("x", rand(2, 3))], opset=18)]


@pytest.mark.parametrize("case,dtype", params(OPTIONAL))
def test_rule(case: Case, dtype: str) -> None:
    check_case(case, dtype)


def test_optional_round_trip() -> None:
    """Optional(x) -> OptionalGetElement: the gradient passes through the optional value."""
    nodes = [node("Optional", ["x"], ["o"]), node("OptionalGetElement", ["o"], ["t"]), node("Mul", ["t", "t"], ["y"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 10
    report = check_gradients(m, ["x"], feeds={"x": rand(2, 3).astype(np.float32)})
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert report.ok and len(report.checks) == 1
