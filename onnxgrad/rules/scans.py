"""Scans: CumSum and CumProd (running sums and products along an axis)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..registry import register_gradient


@register_gradient("CumSum")
def cumsum(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # each x_j reaches every y_i that sums it: the same sum taken in the other direction
    return [g.CumSum(dy, op.input(1), exclusive=op.attr("exclusive", 0), reverse=1 - op.attr("reverse", 0)), None]


@register_gradient("CumProd", inputs=[0])
def cumprod(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y_k is multilinear in x, so dy_k/dx_i is y_k recomputed with x_i := 1, wherever y_k's
    # product contains x_i. One CumProd over n copies of x (copy i has x_i := 1) gives every
    # such partial product without dividing by x, so zeros in x are exact.
    x = op.inputs[0]
    shape, axis = g.shape(x), g.constant_value(op.inputs[1])
    n = shape[int(axis.reshape(-1)[0]) % len(shape)] if axis is not None and shape is not None else None
    if not isinstance(n, int):
        return [_cumprod_dynamic(g, op, dy), None]
    r = len(shape)  # type: ignore[arg-type]
    a = int(axis.reshape(-1)[0]) % r  # type: ignore[union-attr]
    exclusive, reverse = op.attr("exclusive", 0), op.attr("reverse", 0)
    trailing = (1,) * (r - a - 1)
    eye = np.eye(n).reshape((n, n) + trailing)
    copies = g.Add(g.Mul(g.unsqueeze(x, [a]), g.const(1 - eye, like=x)), g.const(eye, like=x))
    partial = g.op("CumProd", copies, g.scalar_int(a + 1), exclusive=exclusive or None, reverse=reverse or None)
    i, k = np.arange(n)[:, None], np.arange(n)[None, :]
    contains = (i >= k if reverse else i <= k) & (i != k if exclusive else True)
    weighted = g.Mul(g.Mul(partial, g.unsqueeze(dy, [a])), g.const(contains.reshape((n, n) + trailing), like=x))
    return [g.reduce_sum(weighted, [a + 1], keepdims=False), None]


def _column(g: Emitter, x: str) -> str:
    """The shape (-1, 1, ..., 1) with one 1 per axis of x (at run time when x's rank is unknown)."""
    shape = g.shape(x)
    if shape is not None:
        return g.ints([-1] + [1] * len(shape))
    minus_one = g.ints([-1])
    return g.Concat(minus_one, g.constant_of_shape(g.Shape(g.shape_of(x)), 1, like=minus_one), axis=0)


def _cumprod_dynamic(g: Emitter, op: Op, dy: str) -> str:
    """The same partial products when the axis or its length is known only at run time.

    The copies stack along a new leading axis 0 (copy i sets x_i := 1), so x's axis keeps its
    run-time number, shifted by one when it counts from the front. Positions along the axis are
    a CumSum of ones over it; ``eye[i, ..., j, ...] = (j == i)`` compares them with the copy
    number, and summing ``eye * (per-copy gradient)`` over the copies puts copy i's sum at x_i.
    """
    x, axis = op.inputs[0], op.inputs[1]
    exclusive, reverse = op.attr("exclusive", 0), op.attr("reverse", 0)
    axis = g.Reshape(g.cast(axis, TensorProto.INT64), g.ints([]))  # CumSum and CumProd take a scalar
    shifted = g.Where(g.Less(axis, g.scalar_int(0)), axis, g.Add(axis, g.scalar_int(1)))  # the axis in the copies
    ones = g.ones_like(x)
    position = g.unsqueeze(g.CumSum(ones, axis, exclusive=1), [0])  # j at x[..., j, ...]
    n = g.Gather(g.shape_of(x), axis, axis=0)
    copy = g.Reshape(g.cast_like(g.Range(g.scalar_int(0), n, g.scalar_int(1)), x), _column(g, x))  # i
    eye = g.Equal(position, copy)
    copies = g.Where(eye, g.unsqueeze(ones, [0]), g.unsqueeze(x, [0]))
    partial = g.op("CumProd", copies, shifted, exclusive=exclusive or None, reverse=reverse or None)
    contains = g.LessOrEqual(position, copy) if reverse else g.GreaterOrEqual(position, copy)
    if exclusive:
        contains = g.And(contains, g.Not(eye))
    # zero where y_k does not contain x_i: a product of ones there, not a zero of its own
    weighted = g.Where(contains, g.Mul(partial, g.unsqueeze(dy, [0])), g.zeros_like(g.unsqueeze(x, [0])))
    per_copy = g.ReduceSum(weighted, g.unsqueeze(shifted, [0]), keepdims=1)
    return g.reduce_sum(g.Where(eye, per_copy, g.zeros_like(per_copy)), [0], keepdims=False)
