"""Gradients of ONNX's backend test corpus against central differences in onnxruntime.

For each selected case (see ``tests/corpus.py``): differentiate sum(u * outputs), random u, with
respect to every differentiable float input, at the case's own inputs, and compare with a
central difference along a random direction (plus the full Jacobian for small cases), with the
per-dtype tolerances of :mod:`onnxgrad.checking` (a failing x is checked again at a tenth of the
step, see below). Ops the registry records as unsupported must
raise ``LookupError`` naming the op. Cases in ``corpus.EXCEPTIONS`` are expected to fail (strict:
a passing exception must leave the table).

By default a deterministic subset runs (one case per op); ``-m slow`` runs the whole corpus.
"""

import pytest
from onnx import helper

import corpus
from onnxgrad import registry
from onnxgrad.checking import STEP, check_gradients
from onnxgrad.errors import NoGradientError

ALL = corpus.entries()
FAST = {e.name for e in corpus.fast_subset(ALL)}


def _param(e: corpus.Entry):
    marks = [] if e.name in FAST else [pytest.mark.slow]
    if e.name in corpus.EXCEPTIONS:
        marks.append(pytest.mark.xfail(reason=corpus.EXCEPTIONS[e.name], strict=True))
    return pytest.param(e, id=e.name, marks=marks)


def _unsupported(model) -> list:
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    found = []
    for n in model.graph.node:
        entry = registry.lookup(n.op_type, n.domain, opset)
        if entry is not None and entry.status == registry.UNSUPPORTED:
            found.append(n.op_type)
    return found


@pytest.mark.parametrize("entry", [_param(e) for e in ALL])
def test_corpus_case(entry: corpus.Entry):
    model = entry.load()
    unsupported = _unsupported(model)
    if unsupported:
        with pytest.raises(NoGradientError, match=unsupported[0]):
            check_gradients(model, entry.xs, feeds=entry.feeds, seed=corpus.seed_of(entry.name))
        return
    seed = corpus.seed_of(entry.name)
    report = check_gradients(model, entry.xs, feeds=entry.feeds, seed=seed, jacobian_limit=1024)
    assert len(report.checks) == len(entry.xs)
    bad = [c for c in report.checks if not c.ok]
    if bad:
        # The default step may be too coarse where the function curves sharply (a variance near
        # 0 under a square root): retry a tenth of it, whose rounding noise the tolerance scales
        # with. A wrong rule is off by O(1) at every step and fails both.
        step = STEP[_elem_type(entry.feeds[bad[0].name])] / 10
        retry = check_gradients(model, [c.name for c in bad], feeds=entry.feeds, seed=seed, jacobian_limit=1024,
                                step=step)
        bad = [c for c in retry.checks if not c.ok]
    assert not bad, "; ".join(
        f"{c.name}{list(c.shape)}: analytic {c.analytic:.6g} numeric {c.numeric:.6g} "
        f"(err {c.error:.3g} > tol {c.tolerance:.3g}, jacobian ratio {c.jacobian_ratio})" for c in bad)


def _elem_type(value) -> int:
    return helper.np_dtype_to_tensor_dtype(value.dtype)
