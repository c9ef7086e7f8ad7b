"""Selection and placement: Compress, CenterCropPad, MaxUnpool, ReverseSequence, Unique, OneHot,
Range. Each picks or places elements, so its gradient places or picks dy back."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..emitter import Emitter, Op
from ..registry import register_gradient


@register_gradient("Compress", inputs=[0])
def compress(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x, condition = op.inputs[0], op.input(1)
    picked = g.Transpose(g.NonZero(condition), perm=[1, 0])  # (k, 1) positions kept
    axis = op.attr("axis")
    if axis is None:
        flat_shape = g.Reshape(g.Size(x), g.ints([1]))
        flat = g.ScatterND(g.constant_of_shape(flat_shape, 0.0, like=x), picked, dy)
        return [g.reshape(flat, g.shape_of(x)), None]
    if g.shape(x) is None:  # Compress the positions of x the same way: where each kept element came from
        positions = g.Reshape(g.Range(g.scalar_int(0), g.Size(x), g.scalar_int(1)), g.shape_of(x))
        kept = g.reshape(g.Compress(positions, condition, axis=axis), [-1])
        flat = g.scatter_elements_add(g.Reshape(g.Size(x), g.ints([1])), kept, g.reshape(dy, [-1]), axis=0,
                                      unique=True)
        return [g.reshape(flat, g.shape_of(x)), None]
    r = g.rank(x)
    a = axis % r
    perm = [a] + [d for d in range(r) if d != a]
    zeros = g.constant_of_shape(g.Gather(g.shape_of(x), g.ints(perm), axis=0), 0.0, like=x)
    placed = g.ScatterND(zeros, picked, g.transpose(dy, perm))
    return [g.transpose(placed, list(np.argsort(perm))), None]


@register_gradient("CenterCropPad", inputs=[0])
def center_crop_pad(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    dims, wanted = g.static_shape(x), g.constant_value(op.inputs[1])
    if dims is None or wanted is None:
        # cropping and padding about the centre are each other's adjoints with the same offsets:
        # centre dy back to x's extents on the same axes
        axes = op.attr("axes")
        extents = g.shape_of(x) if axes is None else g.Gather(g.shape_of(x), g.ints(axes), axis=0)
        return [g.CenterCropPad(dy, extents, axes=axes), None]
    r = len(dims)
    target = [int(t) for t in wanted]
    axes = [a % r for a in op.attr("axes", list(range(r)))]
    crop = [0] * (2 * r)  # dy padded back to x where the op cropped
    starts, ends = [], []  # dy sliced back to x where the op padded
    for a, t in zip(axes, target):
        d = dims[a]
        if t < d:
            crop[a], crop[r + a] = (d - t) // 2, d - t - (d - t) // 2
        elif t > d:
            starts.append((t - d) // 2)
            ends.append((t - d) // 2 + d)
    padded_axes = [a for a, t in zip(axes, target) if t > dims[a]]
    dx = g.slice(dy, starts, ends, padded_axes) if padded_axes else dy
    return [g.pad(dx, crop) if any(crop) else dx, None]


@register_gradient("MaxUnpool", inputs=[0])
def max_unpool(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # Y is zeros with X written at the flat positions I of Y, as onnxruntime (and PyTorch) do it.
    # onnx.reference instead addresses the shape inferred from the pooling attributes and places
    # that block at Y's origin; the two agree unless an explicit output_shape differs from it.
    return [g.Gather(g.reshape(dy, [-1]), op.input(1), axis=0), None, None]


@register_gradient("ReverseSequence", inputs=[0])
def reverse_sequence(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # reversing each sequence's prefix is its own inverse and its own transpose
    return [g.ReverseSequence(dy, op.input(1), batch_axis=op.attr("batch_axis", 1),
                              time_axis=op.attr("time_axis", 0)), None]


@register_gradient("Unique", inputs=[0])
def unique(g: Emitter, op: Op, dy: str, *_int_outputs: Optional[str]) -> List[Optional[str]]:
    # Where x has no repeated value (slice), Y is a permutation of x and dx = dY[inverse].
    # With repeats Y is not differentiable (a perturbation changes Y's shape).
    x = op.inputs[0]
    axis = op.attr("axis")
    inverse = op.output(2)
    if inverse is None:
        inverse = g.op("Unique", x, outputs=4, axis=axis, sorted=op.attr("sorted", 1))[2]
    if axis is None:
        return [g.reshape(g.Gather(dy, inverse, axis=0), g.shape_of(x))]
    return [g.Gather(dy, inverse, axis=axis)]


@register_gradient("OneHot", inputs=[2])
def one_hot(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y = off + (on - off) * mask: d off = sum(dy * (1 - mask)), d on = sum(dy * mask)
    values = op.input(2)
    mask = g.op("OneHot", op.inputs[0], op.input(1), g.const([0, 1], like=values), axis=op.attr("axis", -1))
    on = g.reduce_sum(g.Mul(dy, mask), None, keepdims=False)
    off = g.Sub(g.reduce_sum(dy, None, keepdims=False), on)
    return [None, None, g.Concat(g.unsqueeze(off, [0]), g.unsqueeze(on, [0]), axis=0)]


@register_gradient("Range", inputs=[0, 2])
def range_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y_i = start + i * delta; the element count is piecewise constant in limit (zero gradient)
    start = op.inputs[0]
    i = g.cast_like(g.Range(g.scalar_int(0), g.Size(dy), g.scalar_int(1)), start)
    return [g.reduce_sum(dy, None, keepdims=False), None,
            g.reduce_sum(g.Mul(dy, i), None, keepdims=False)]
