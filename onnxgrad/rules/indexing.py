"""Indexing: gathers, scatters, Trilu, CumSum, TopK.

A gather's gradient is a scatter-add of dy to the gathered positions (repeated indices
accumulate), written with :meth:`Emitter.scatter_nd_add` / :meth:`Emitter.scatter_elements_add`,
which fall back to OneHot sums before opset 16. A scatter's gradient is the reverse: the
updates get a gather of dy, the data gets dy with the overwritten positions zeroed (or all of dy
for ``reduction='add'``). With ``reduction='none'`` and repeated indices the forward result is
unspecified by ONNX; every repeat then receives the gradient of the position it targets.
"""

import numpy as np
from onnx import TensorProto

from ..errors import GradientArgumentError
from ..registry import register_gradient


@register_gradient("Gather")
def gather(g, op, dy):
    data, idx = op.inputs
    rank = g.rank(data)
    axis = op.attr("axis", 0) % rank
    if g.rank(idx) == 0:  # a scalar index dropped the axis: restore it as a 1-element index
        idx, dy = g.reshape(idx, [1]), g.unsqueeze(dy, [axis])
    q = g.rank(idx)
    # scatter dy, laid out as idx-dims + the other dims of data, into rows of data's axis
    front = [axis] + [i for i in range(rank) if i != axis]
    dy_rows = g.transpose(dy, list(range(axis, axis + q)) + list(range(axis)) + list(range(axis + q, rank - 1 + q)))
    rows = g.scatter_nd_add(g.dims(data, front), g.unsqueeze(idx, [q]), dy_rows)
    return [g.transpose(rows, list(np.argsort(front))), None]


@register_gradient("GatherElements")
def gather_elements(g, op, dy):
    data, idx = op.inputs
    return [g.scatter_elements_add(g.shape_of(data), idx, dy, op.attr("axis", 0)), None]


@register_gradient("GatherND")
def gather_nd(g, op, dy):
    data, idx = op.inputs
    b = op.attr("batch_dims", 0)
    if b:
        idx = _with_batch_coordinates(g, idx, b)
    return [g.scatter_nd_add(g.shape_of(data), idx, dy), None]


def _with_batch_coordinates(g, idx: str, b: int) -> str:
    """Prefix each index tuple with its batch position, turning batch_dims=b into batch_dims=0."""
    rank = g.rank(idx)
    shape = g.shape(idx)
    lead = shape[:-1]
    if all(isinstance(d, int) for d in lead):
        coords = g.const(np.moveaxis(np.indices(lead)[:b], 0, -1), dtype=TensorProto.INT64)
    else:
        target = g.Concat(g.dims(idx, list(range(rank - 1))), g.ints([1]), axis=0)
        parts = []
        for j in range(b):
            n = g.Gather(g.shape_of(idx), g.scalar_int(j), axis=0)
            ramp = g.Range(g.scalar_int(0), n, g.scalar_int(1))
            ramp = g.reshape(ramp, [-1 if i == j else 1 for i in range(rank)])
            parts.append(g.Expand(ramp, target))
        coords = parts[0] if b == 1 else g.Concat(*parts, axis=-1)
    full = g.Concat(coords, idx, axis=-1)
    k = shape[-1]
    g.set_info(full, TensorProto.INT64, (*lead, b + k if isinstance(k, int) else None))
    return full


def _scatter_reduction(op) -> str:
    reduction = op.attr("reduction", "none")
    if reduction not in ("none", "add"):
        raise GradientArgumentError(
            f"{op.op_type} with reduction={reduction!r} has no gradient rule "
            "(only reduction 'none' and 'add' are differentiable here)")
    return reduction


@register_gradient("ScatterElements")
def scatter_elements(g, op, dy):
    _, idx, updates = op.inputs
    axis = op.attr("axis", 0) % g.rank(idx)  # onnx.reference mishandles a negative axis
    d_updates = g.GatherElements(dy, idx, axis=axis)
    if _scatter_reduction(op) == "add":
        return [dy, None, d_updates]
    return [g.ScatterElements(dy, idx, g.zeros_like(updates), axis=axis), None, d_updates]


@register_gradient("ScatterND")
def scatter_nd(g, op, dy):
    _, idx, updates = op.inputs
    d_updates = g.GatherND(dy, idx)
    if _scatter_reduction(op) == "add":
        return [dy, None, d_updates]
    return [g.ScatterND(dy, idx, g.zeros_like(updates)), None, d_updates]


@register_gradient("Trilu")
def trilu(g, op, dy):
    return [g.Trilu(dy, op.input(1), upper=op.attr("upper", 1)), None]


@register_gradient("CumSum")
def cumsum(g, op, dy):
    # each x_j reaches every y_i that sums it: the same sum taken in the other direction
    return [g.CumSum(dy, op.input(1), exclusive=op.attr("exclusive", 0), reverse=1 - op.attr("reverse", 0)), None]


@register_gradient("TopK")
def topk(g, op, dvalues, dindices=None):
    x = op.input(0)
    return [g.scatter_elements_add(g.shape_of(x), op.output(1), dvalues, op.attr("axis", -1), unique=True), None]
