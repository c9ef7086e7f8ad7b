"""ONNX's node corpus with its parameters fed as graph inputs (known only at run time).

``tests/corpus.py`` turns every input that is not differentiated (shapes, axes, scales, roi,
sizes, pads, indices...) into an initializer, as real models often hold them. Models with dynamic
shapes compute them instead, and the corpus itself feeds them as inputs: no rule may need their
values when the gradient is built. Here each selected case is unfrozen (every initializer becomes
a graph input fed the same value) and:

* must build a gradient for each of its differentiable inputs, with no refusal for a missing rule
  or a parameter that is not a constant, that passes ``onnx.checker.check_model(full_check=True)``
  (where onnx's full check refuses the forward model itself, the gradient model must fail it with
  the same message);
* where its backward nodes differ from those built for the frozen case (the rule took another
  path: Resize, CenterCropPad, Col2Im, CumProd, the reductions, Slice, Tile, DFT: 112 cases with
  onnx 1.23) or the frozen case is refused, is judged in float64 as ``tests/test_corpus.py`` judges the frozen
  cases (central differences, the same seed). Where the backward nodes are the same, that judge
  of the frozen case covers it. None of the judged cases is in ``corpus.EXCEPTIONS`` but
  test_stft and test_stft_with_window, which pass here: their frozen form is refused because
  onnx's inference states 16 frequency bins where STFT returns 9, which it cannot state once
  frame_step and frame_length are inputs.

Cases that cannot build are listed in :data:`EXCEPTIONS` with the reason (reviewed; strict: a case
that builds fails the test until it leaves the table). The default run takes the first case of
Resize, Upsample, CenterCropPad, Col2Im and CumProd (whose rules read such values at build time
before); ``-m slow`` runs all 1141.
"""

from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import corpus
import onnxgrad
from onnxgrad.checking import check_gradients

#: Reviewed: corpus cases that cannot build a gradient when their parameters are graph inputs, each
#: with the reason. Empty: all 1141 selected cases build (onnx 1.23, onnxruntime 1.32).
EXCEPTIONS: Dict[str, str] = {}

ALL = corpus.entries()
FAST = {e.name for e in corpus.fast_subset(
    [e for e in ALL if e.op in ("Resize", "Upsample", "CenterCropPad", "Col2Im", "CumProd")])}


def unfrozen(entry: corpus.Entry) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray]]:
    """(model, feeds): ``entry`` with every initializer turned into a graph input fed its value."""
    model = entry.load()
    feeds = dict(entry.feeds)
    for t in model.graph.initializer:
        value = numpy_helper.to_array(t)
        model.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(value.shape)))
        feeds[t.name] = value
    del model.graph.initializer[:]
    return model, feeds


def float_outputs(model: onnx.ModelProto) -> List[str]:
    """The model's float graph outputs (the ys, as in tests/test_corpus.py's judge)."""
    return [o.name for o in model.graph.output
            if o.type.HasField("tensor_type") and o.type.tensor_type.elem_type in corpus.CHECKED_TYPES]


def full_check_error(model: onnx.ModelProto) -> str:
    """What ``onnx.checker.check_model(model, full_check=True)`` says against ``model`` ('' if nothing)."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        return str(e)
    return ""


def backward_nodes(grad: onnx.ModelProto, forward: onnx.ModelProto) -> List[bytes]:
    """The nodes ``gradients`` appended to ``forward``, serialized."""
    return [n.SerializeToString(deterministic=True) for n in grad.graph.node[len(forward.graph.node):]]


def frozen_backward(entry: corpus.Entry) -> Optional[List[bytes]]:
    """The backward nodes built for the frozen case, None when it is refused."""
    model = entry.load()
    try:
        return backward_nodes(onnxgrad.gradients(model, float_outputs(model), entry.xs).model, model)
    except onnxgrad.OnnxGradError:
        return None


def _param(e: corpus.Entry):
    marks: List[pytest.MarkDecorator] = [] if e.name in FAST else [pytest.mark.slow]
    if e.name in EXCEPTIONS:
        marks.append(pytest.mark.xfail(reason=EXCEPTIONS[e.name], strict=True))
    return pytest.param(e, id=e.name, marks=marks)


@pytest.mark.parametrize("entry", [_param(e) for e in ALL])
def test_with_parameters_as_inputs(entry: corpus.Entry) -> None:
    model, feeds = unfrozen(entry)
    assert not model.graph.initializer
    result = onnxgrad.gradients(model, float_outputs(model), entry.xs)
    assert len(result.names) == len(entry.xs) and all(n is not None for n in result.names)
    onnx.checker.check_model(result.model)
    # where onnx's full check refuses the forward model itself (test_mvn: MeanVarianceNormalization's
    # opset-13 function body), the gradient model must fail it the same way and no other
    assert full_check_error(result.model) == full_check_error(model)
    if backward_nodes(result.model, model) == frozen_backward(entry):
        return  # the frozen case's gradient, node for node: tests/test_corpus.py judges it
    report = check_gradients(model, entry.xs, feeds=feeds, seed=corpus.seed_of(entry.name))
    assert len(report.checks) == len(entry.xs)
    bad = [c for c in report.checks if not c.ok]
    assert not bad, "; ".join(f"{c.name} {c.verdict}: analytic {c.analytic:.6g} numeric {c.numeric:.6g} "
                              f"(err {c.error:.3g} > tol {c.tolerance:.3g}) {c.note}" for c in bad)
