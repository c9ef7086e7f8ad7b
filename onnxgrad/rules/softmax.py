"""Softmax family and the classification losses built on it.

Softmax, LogSoftmax and Hardmax changed meaning at opset 13: before it the input is viewed as a
2-D matrix split at ``axis`` (default 1), so the normalization runs over every axis from
``axis`` on; from 13 it runs over ``axis`` alone (default -1).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import numpy as np

from ..emitter import Emitter, Op
from ..registry import register_gradient

#: reads the axes a Softmax-family node normalizes over
AxesReader = Callable[[Emitter, Op], List[int]]
Rule = Callable[[Emitter, Op, str], List[Optional[str]]]


def _axis_alone(g: Emitter, op: Op) -> List[int]:
    """The normalized axes from opset 13: ``axis`` alone (default -1)."""
    return [op.attr("axis", -1) % g.rank(op.inputs[0])]


def _axis_onwards(g: Emitter, op: Op) -> List[int]:
    """The normalized axes before opset 13: every axis from ``axis`` on (default 1)."""
    rank = g.rank(op.inputs[0])
    return list(range(op.attr("axis", 1) % rank, rank))


def _softmax(axes_of: AxesReader) -> Rule:
    def rule(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
        y = op.outputs[0]
        return [g.Mul(y, g.Sub(dy, g.reduce_sum(g.Mul(dy, y), axes_of(g, op))))]

    return rule


def _log_softmax(axes_of: AxesReader) -> Rule:
    def rule(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
        return [g.Sub(dy, g.Mul(g.Exp(op.outputs[0]), g.reduce_sum(dy, axes_of(g, op))))]

    return rule


for _since, _until, _axes in ((1, 12, _axis_onwards), (13, None, _axis_alone)):
    register_gradient("Softmax", since=_since, until=_until)(_softmax(_axes))
    register_gradient("LogSoftmax", since=_since, until=_until)(_log_softmax(_axes))


@register_gradient("Hardmax")
def hardmax(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # Piecewise constant: the derivative is zero wherever it exists.
    return [g.zeros_like(op.inputs[0])]


def _class_mask(g: Emitter, op: Op, labels: str, like: str) -> str:
    """One-hot of ``labels`` along axis 1 of ``like`` (N, C, d...), zero at ignored labels.

    Built with Equal against a class index column instead of OneHot/Gather, because an
    ignore_index may lie outside [0, C) and must not be read as a class.
    """
    rank = g.rank(like)
    c_dim = (g.shape(like) or (None, None))[1]
    if isinstance(c_dim, int):
        classes = g.ints(np.arange(c_dim))
    else:
        classes = g.Range(g.scalar_int(0), g.Gather(g.shape_of(like), g.scalar_int(1)), g.scalar_int(1))
    column = g.reshape(g.cast_like(classes, labels), [1, -1] + [1] * (rank - 2))
    hit = g.Equal(g.unsqueeze(labels, [1]), column)
    ignore = op.attr("ignore_index")
    if ignore is not None:
        kept = g.Not(g.Equal(labels, g.const(np.asarray(ignore, dtype=np.int64), dtype=g.dtype(labels))))
        hit = g.And(hit, g.unsqueeze(kept, [1]))
    return g.Cast(hit, to=g.dtype(like))


def _nll_grads(g: Emitter, op: Op, log_prob: str, labels: str, weights: Optional[str], dloss: str
               ) -> Tuple[str, Optional[str]]:
    """Gradients of the negative log-likelihood loss w.r.t. ``log_prob`` and ``weights``.

    With W_i the weight of sample i's label (1 without weights, 0 when ignored) the loss is
    -sum_i W_i * log_prob[i, label_i] summed (sum), kept per sample (none) or divided by
    sum_i W_i (mean).
    """
    scores = op.inputs[0]  # a forward tensor shaped like log_prob, so its shape is known
    rank = g.rank(scores)
    not_class = [0] + list(range(2, rank))
    mask = _class_mask(g, op, labels, scores)
    weighted = mask if weights is None else g.Mul(mask, g.reshape(weights, [1, -1] + [1] * (rank - 2)))
    reduction = op.attr("reduction", "mean")
    loss = op.outputs[0]
    # per-sample coefficient of d loss / d (-W_i * log_prob[i, label_i]), shaped (N, 1, d...)
    if reduction == "none":
        coef = g.unsqueeze(dloss, [1])
    elif reduction == "sum":
        coef = dloss
    else:
        coef = g.Div(dloss, g.reduce_sum(weighted, None, keepdims=False))
    d_log_prob = g.Neg(g.Mul(weighted, coef))
    d_weights = None
    if weights is not None:
        # d loss / d w_c collects -log_prob of the samples labelled c; for mean, the division by
        # sum W_i adds -loss per such sample.
        picked = g.Neg(g.reduce_sum(g.Mul(mask, log_prob), [1]))
        if reduction == "mean":
            picked = g.Sub(picked, loss)
        d_weights = g.reduce_sum(g.Mul(g.Mul(mask, picked), coef), not_class, keepdims=False)
    return d_log_prob, d_weights


@register_gradient("NegativeLogLikelihoodLoss", inputs=(0, 2))
def nll_loss(g: Emitter, op: Op, dloss: str) -> List[Optional[str]]:
    log_prob, labels = op.inputs[0], op.inputs[1]
    d_log_prob, d_weights = _nll_grads(g, op, log_prob, labels, op.input(2), dloss)
    return [d_log_prob, None, d_weights]


@register_gradient("SoftmaxCrossEntropyLoss", inputs=(0, 2))
def softmax_cross_entropy_loss(g: Emitter, op: Op, dloss: str, d_log_prob_out: Optional[str] = None
                               ) -> List[Optional[str]]:
    scores, labels = op.inputs[0], op.inputs[1]
    log_prob = op.output(1) or g.log_softmax(scores, axis=1)
    d_log_prob, d_weights = _nll_grads(g, op, log_prob, labels, op.input(2), dloss)
    if d_log_prob_out is not None:
        d_log_prob = g.Add(d_log_prob, d_log_prob_out)
    # back through log_softmax over the class axis
    d_scores = g.Sub(d_log_prob, g.Mul(g.Exp(log_prob), g.reduce_sum(d_log_prob, [1])))
    return [d_scores, None, d_weights]
