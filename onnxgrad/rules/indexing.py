"""Indexing: gathers, scatters (ScatterElements, ScatterND, the deprecated Scatter, TensorScatter),
Trilu, TopK.

A gather's gradient is a scatter-add of dy to the gathered positions (repeated indices
accumulate), written with :meth:`Emitter.scatter_nd_add` / :meth:`Emitter.scatter_elements_add`,
which fall back to OneHot sums before opset 16. A scatter's gradient is the reverse: the
updates get a gather of dy, the data gets dy with the overwritten positions zeroed (or all of dy
for ``reduction='add'``). With ``reduction='none'`` and repeated indices the forward result is
unspecified by ONNX; every repeat then receives the gradient of the position it targets.
``reduction='max'/'min'`` send the gradient to the data element and the updates equal to the
output at their position, split evenly among ties (the ReduceMax convention); ``'mul'`` follows
the product rule, exact at zeros as ReduceProd is (its second derivative only without zeros).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import numpy as np
from onnx import TensorProto

from ..emitter import END, Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


@register_gradient("Gather")
def gather(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    data, idx = op.inputs
    if g.shape(data) is None or g.shape(idx) is None:
        return [_gather_unknown_rank(g, data, idx, op.attr("axis", 0), dy), None]
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


def _gather_unknown_rank(g: Emitter, data: str, idx: str, axis: int, dy: str) -> str:
    """Gather's gradient when the rank of data or of the indices is unknown: data viewed as
    (before, n, after) around the axis and dy as (before, indices, after), all from run-time
    shapes, so only rank-3 tensors are transposed."""
    shape = g.shape_of(data)
    one = g.ints([1])

    def product(dims: str) -> str:  # a leading 1 keeps the product of no dims defined
        return g.ReduceProd(g.Concat(one, dims, axis=0), axes=[0], keepdims=1)

    before = product(g.Slice(shape, g.ints([0]), g.ints([axis]))) if axis != 0 else one
    after = product(g.Slice(shape, g.ints([axis + 1]), g.ints([END]))) if axis != -1 else one
    n = g.Gather(shape, g.ints([axis]), axis=0)
    dy_rows = g.Transpose(g.Reshape(dy, g.Concat(before, g.ints([-1]), after, axis=0)), perm=[1, 0, 2])
    rows = g.scatter_nd_add(g.Concat(n, before, after, axis=0), g.Reshape(idx, g.ints([-1, 1])), dy_rows)
    return g.Reshape(g.Transpose(rows, perm=[1, 0, 2]), shape)


@register_gradient("GatherElements")
def gather_elements(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    data, idx = op.inputs
    return [g.scatter_elements_add(g.shape_of(data), idx, dy, op.attr("axis", 0)), None]


@register_gradient("GatherND")
def gather_nd(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    data, idx = op.inputs
    b = op.attr("batch_dims", 0)
    if b:
        idx = _with_batch_coordinates(g, idx, b)
    return [g.scatter_nd_add(g.shape_of(data), idx, dy), None]


def _with_batch_coordinates(g: Emitter, idx: str, b: int) -> str:
    """Prefix each index tuple with its batch position, turning batch_dims=b into batch_dims=0."""
    rank = g.rank(idx)
    shape = g.dims_of(idx)
    lead = shape[:-1]
    static = [d for d in lead if isinstance(d, int)]
    if len(static) == len(lead):
        coords = g.const(np.moveaxis(np.indices(static)[:b], 0, -1), dtype=TensorProto.INT64)
    else:
        target = g.Concat(g.dims(idx, list(range(rank - 1))), g.ints([1]), axis=0)
        parts = []
        for j in range(b):
            n = g.Gather(g.shape_of(idx), g.scalar_int(j), axis=0)
            ramp = g.Range(g.scalar_int(0), n, g.scalar_int(1))
            ramp = g.reshape(ramp, [-1 if i == j else 1 for i in range(rank)])
            parts.append(g.Expand(ramp, target))
        # b coordinates per index tuple: the last dim stated for the scatter, which needs it static
        coords = g.reshape(parts[0] if b == 1 else g.Concat(*parts, axis=-1), [0] * (rank - 1) + [b])
    return g.Concat(coords, idx, axis=-1)


class _Scatter:
    """One ScatterElements/ScatterND node's indexing: ``gather(t)`` reads a data-shaped ``t`` at
    each update's position, ``combine(base, u, reduction)`` is the op itself on other tensors,
    ``add(u)`` sums update-shaped ``u`` into a zero data-shaped tensor (repeats accumulate)."""

    def __init__(self, g: Emitter, op: Op) -> None:
        self.g, self.data, self.idx, self.updates = g, *op.inputs
        self.op_type = op.op_type
        self.elements = op.op_type == "ScatterElements"
        # onnx.reference mishandles a negative axis
        self.axis: int = op.attr("axis", 0) % g.rank(self.idx) if self.elements else 0

    def gather(self, t: str) -> str:
        if self.elements:
            return self.g.GatherElements(t, self.idx, axis=self.axis)
        return self.g.GatherND(t, self.idx)

    def combine(self, base: str, u: str, reduction: str = "none") -> str:
        attrs: Dict[str, Any] = {"axis": self.axis} if self.elements else {}
        if reduction != "none":
            attrs["reduction"] = reduction
        return self.g.emit(self.op_type, base, self.idx, u, **attrs)

    def add(self, u: str) -> str:
        if self.elements:
            return self.g.scatter_elements_add(self.g.shape_of(self.data), self.idx, u, self.axis)
        return self.g.scatter_nd_add(self.g.shape_of(self.data), self.idx, u)


def _scatter(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    s = _Scatter(g, op)
    reduction = op.attr("reduction", "none")
    if reduction == "none":
        return [s.combine(dy, g.zeros_like(s.updates)), None, s.gather(dy)]
    if reduction == "add":
        return [dy, None, s.gather(dy)]
    if reduction == "mul":
        return _scatter_mul(g, s, dy)
    return _scatter_extremum(g, s, op.outputs[0], dy)


def _scatter_extremum(g: Emitter, s: _Scatter, y: str, dy: str) -> List[Optional[str]]:
    """max/min: y at a position is the extremum of data and the updates sent there; the
    gradient goes to those equal to it, split evenly among ties (as for ReduceMax)."""
    data_wins = g.cast_like(g.Equal(s.data, y), s.data)
    update_wins = g.cast_like(g.Equal(s.updates, s.gather(y)), s.updates)
    share = g.Div(dy, g.Add(data_wins, s.add(update_wins)))  # at least one of them equals y
    return [g.Mul(share, data_wins), None, g.Mul(s.gather(share), update_wins)]


def _scatter_mul(g: Emitter, s: _Scatter, dy: str) -> List[Optional[str]]:
    """mul: y = data * (product of the updates sent there). Each factor's gradient is dy times
    the product of the other factors at its position, computed without dividing by zero as for
    ReduceProd: the product of the nonzero factors, divided by the factor itself when it is
    nonzero, and kept only where the zeros among the other factors number zero."""
    data, updates = s.data, s.updates
    zero, one = g.const(0, like=data), g.const(1, like=data)
    data_zero, update_zero = g.Equal(data, zero), g.Equal(updates, zero)
    data_nz, updates_nz = g.Where(data_zero, one, data), g.Where(update_zero, one, updates)
    dy_p = g.Mul(dy, s.combine(data_nz, updates_nz, "mul"))  # dy * product of the nonzero factors
    zeros = g.Add(g.cast_like(data_zero, data), s.add(g.cast_like(update_zero, updates)))
    d_data = g.Where(g.Equal(zeros, g.cast_like(data_zero, data)), g.Div(dy_p, data_nz), zero)
    d_updates = g.Where(g.Equal(s.gather(zeros), g.cast_like(update_zero, updates)),
                        g.Div(s.gather(dy_p), updates_nz), zero)
    return [d_data, None, d_updates]


@register_gradient("ScatterElements")
def scatter_elements(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return _scatter(g, op, dy)


@register_gradient("ScatterND")
def scatter_nd(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return _scatter(g, op, dy)


@register_gradient("Trilu")
def trilu(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [g.Trilu(dy, op.input(1), upper=op.attr("upper", 1)), None]


@register_gradient("TopK")
def topk(g: Emitter, op: Op, dvalues: str, dindices: Optional[str] = None) -> List[Optional[str]]:
    x = op.inputs[0]
    return [g.scatter_elements_add(g.shape_of(x), op.outputs[1], dvalues, op.attr("axis", -1), unique=True), None]


def _scatter_positions(g: Emitter, updates: str, indices: str, axis: int, data_dims: Sequence[int]) -> str:
    """Flat positions in data of each update element (axis coordinate taken from indices)."""
    upd_dims = g.static_dims(updates, "Scatter")
    strides = np.cumprod((list(data_dims[1:]) + [1])[::-1])[::-1]
    grid = np.indices(upd_dims)
    base = sum(grid[d] * strides[d] for d in range(len(upd_dims)) if d != axis)
    idx = g.Cast(indices, to=TensorProto.INT64)
    return g.Add(g.Mul(idx, g.scalar_int(int(strides[axis]))), g.ints(base.astype(np.int64)))


@register_gradient("Scatter", since=9, until=10, inputs=[0, 2])
def scatter(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # The deprecated ScatterElements of opsets 9-10, which also lack GatherElements: the update
    # gradient reads dy at flat positions instead.
    data, indices, updates = op.inputs
    axis = op.attr("axis", 0) % g.rank(data)
    d_data = g.Scatter(dy, indices, g.zeros_like(updates), axis=axis)
    positions = _scatter_positions(g, updates, indices, axis, g.static_dims(data, "Scatter"))
    return [d_data, None, g.Gather(g.reshape(dy, [-1]), positions, axis=0)]


@register_gradient("TensorScatter", inputs=[0, 1])
def tensor_scatter(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    cache, update, write = op.inputs[0], op.inputs[1], op.input(2)
    mode, axis = op.attr("mode", "linear"), op.attr("axis", -2)
    dims = g.static_dims(update, "TensorScatter")
    r = len(dims)
    a = axis % r
    d_cache = g.TensorScatter(dy, g.zeros_like(update), write, mode=mode, axis=axis)
    steps = g.ints(np.arange(dims[a]).reshape([dims[a] if d == a else 1 for d in range(r)]))
    if write is not None:
        steps = g.Add(g.reshape(write, [-1] + [1] * (r - 1)), steps)
    if mode == "circular":
        length = g.dims_of(cache)[a]
        if not isinstance(length, int):
            raise GradientArgumentError(f"the gradient of circular TensorScatter needs the static length of {cache!r}")
        steps = g.Mod(steps, g.ints([length]))
    positions = g.Expand(steps, g.ints(dims))
    return [d_cache, g.GatherElements(dy, positions, axis=a), None]
