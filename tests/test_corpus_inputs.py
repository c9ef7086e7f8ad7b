"""ONNX's node corpus with its parameters fed as graph inputs (known only at run time).

``tests/corpus.py`` turns every input that is not differentiated (shapes, axes, scales, roi,
sizes, pads, indices...) into an initializer, as real models often hold them. Models with dynamic
shapes compute them instead, and the corpus itself feeds them as inputs: no rule may need their
values when the gradient is built. Here each selected case is unfrozen (every initializer becomes
a graph input fed the same value) and must build a gradient for each of its differentiable inputs
that passes ``onnx.checker.check_model(full_check=True)`` (or, where onnx's full check refuses the
forward model itself, fails it with the same message): no refusal for a missing rule or a
parameter that is not a constant. Cases that cannot are listed in :data:`EXCEPTIONS` with the
reason (reviewed; strict: a case that builds must leave the table).

The ops whose rules read such values when the gradient is built until this was lifted (Resize,
Upsample, CenterCropPad, Col2Im, CumProd) are also judged numerically, as ``tests/test_corpus.py``
judges the frozen forms (float64 central differences, the same seeds; the same kinks are expected
where ``corpus.EXCEPTIONS`` lists them).

The default run takes the first case of each judged op; ``-m slow`` runs every case.
"""

from typing import Dict, List, Tuple

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

#: The ops whose gradients read parameter values at build time before they were computed at run time.
JUDGED = ("Resize", "Upsample", "CenterCropPad", "Col2Im", "CumProd")

ALL = corpus.entries()
FAST = {e.name for e in corpus.fast_subset([e for e in ALL if e.op in JUDGED])}


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


def _param(e: corpus.Entry):
    marks: List[pytest.MarkDecorator] = [] if e.name in FAST else [pytest.mark.slow]
    if e.name in EXCEPTIONS:
        marks.append(pytest.mark.xfail(reason=EXCEPTIONS[e.name], strict=True))
    return pytest.param(e, id=e.name, marks=marks)


@pytest.mark.parametrize("entry", [_param(e) for e in ALL])
def test_builds_with_parameters_as_inputs(entry: corpus.Entry) -> None:
    model, _ = unfrozen(entry)
    assert not model.graph.initializer
    result = onnxgrad.gradients(model, float_outputs(model), entry.xs)
    assert len(result.names) == len(entry.xs) and all(n is not None for n in result.names)
    onnx.checker.check_model(result.model)
    # where onnx's full check refuses the forward model itself (test_mvn: MeanVarianceNormalization's
    # opset-13 function body), the gradient model must fail it the same way and no other
    assert full_check_error(result.model) == full_check_error(model)


def _judged(e: corpus.Entry):
    marks: List[pytest.MarkDecorator] = [] if e.name in FAST else [pytest.mark.slow]
    if e.name in corpus.EXCEPTIONS:
        marks.append(pytest.mark.xfail(reason=corpus.EXCEPTIONS[e.name], strict=True))
    return pytest.param(e, id=e.name, marks=marks)


@pytest.mark.parametrize("entry", [_judged(e) for e in ALL if e.op in JUDGED])
def test_judged_with_parameters_as_inputs(entry: corpus.Entry) -> None:
    model, feeds = unfrozen(entry)
    report = check_gradients(model, entry.xs, feeds=feeds, seed=corpus.seed_of(entry.name))
    assert len(report.checks) == len(entry.xs)
    bad = [c for c in report.checks if not c.ok]
    assert not bad, "; ".join(f"{c.name} {c.verdict}: analytic {c.analytic:.6g} numeric {c.numeric:.6g} "
                              f"(err {c.error:.3g} > tol {c.tolerance:.3g}) {c.note}" for c in bad)
