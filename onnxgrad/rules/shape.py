"""Shape and layout operators: each moves, copies or drops elements, so its gradient moves the
gradient back (reshape back, inverse permutation, split what was concatenated, sum what was
copied, zero-fill what was dropped).

Shapes come from static shapes when known and from ``Shape`` of the forward tensors otherwise,
so a symbolic batch dimension never blocks a gradient. Integer inputs (shapes, axes, pads,
repeats) get no gradient.
"""

from typing import List, Optional, Sequence, Union

import numpy as np

from ..errors import GradientArgumentError
from ..registry import register_gradient

INT64_MAX = np.iinfo(np.int64).max


def _shape_vector(g, parts: Sequence[Union[int, str]]) -> str:
    """A 1-D int64 shape from ints and 1-element int64 tensors."""
    if all(isinstance(p, (int, np.integer)) for p in parts):
        return g.ints([int(p) for p in parts])
    return g.Concat(*(g.ints([p]) if isinstance(p, (int, np.integer)) else p for p in parts), axis=0)


def _static_dim(g, x: str, axis: int) -> Optional[int]:
    s = g.shape(x)
    return s[axis] if s is not None and -len(s) <= axis < len(s) and isinstance(s[axis], int) else None


# ---------------------------------------------------------------- reshapes: y has x's elements in order
def _reshape_back(g, op, dy):
    return [g.reshape_like(dy, op.input(0)), None]


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    register_gradient(_op)(_reshape_back)


@register_gradient("Transpose")
def transpose(g, op, dy):
    perm = op.attr("perm") or list(reversed(range(g.rank(op.input(0)))))
    return [g.transpose(dy, list(np.argsort(perm)))]


@register_gradient("Expand", broadcast=True)
def expand(g, op, dy):
    return [dy, None]


# ---------------------------------------------------------------- concatenation and splitting
@register_gradient("Concat")
def concat(g, op, dy):
    xs = op.inputs
    if len(xs) == 1:
        return [dy]
    # any known rank normalizes the axis; without one, Shape/Gather/Slice take it negative too
    rank = next((len(s) for s in map(g.shape, xs + [op.output()]) if s is not None), None)
    axis = op.attr("axis") % rank if rank is not None else op.attr("axis")
    sizes = [_static_dim(g, x, axis) for x in xs]
    if all(s is not None for s in sizes):
        return g.split(dy, sizes, axis)
    if g.opset < 10:
        raise GradientArgumentError("the gradient of Concat along a symbolic dimension needs opset 10 or newer")
    grads, start = [], g.ints([0])
    for x in xs:
        end = g.Add(start, g.dims(x, [axis]))
        grads.append(g.Slice(dy, start, end, g.ints([axis])))
        start = end
    return grads


@register_gradient("Split")
def split(g, op, *dys):
    # outputs nobody used arrive as zeros from the engine
    return [g.Concat(*dys, axis=op.attr("axis", 0)), None]


# ---------------------------------------------------------------- Slice: zero-fill what was dropped
def _slice_params(g, op):
    """(starts, ends, axes, steps) as int lists, or None when any is known only at run time."""
    if op.opset < 10:
        starts, ends = op.attr("starts"), op.attr("ends")
        return starts, ends, op.attr("axes", list(range(len(starts)))), [1] * len(starts)
    values = [g.constant_value(op.input(i)) for i in range(1, 5)]
    if any(op.input(i) is not None and v is None for i, v in zip(range(1, 5), values)):
        return None
    starts, ends, axes, steps = ([int(v) for v in val.reshape(-1)] if val is not None else None for val in values)
    return starts, ends, axes or list(range(len(starts))), steps or [1] * len(starts)


@register_gradient("Slice")
def slice_(g, op, dy):
    x = op.input(0)
    rank = g.rank(x)
    params = _slice_params(g, op)
    if params is not None:
        starts, ends, axes, steps = params
        dims = [_static_dim(g, x, a % rank) for a in axes]
        if all(st == 1 for st in steps) and all(d is not None for d in dims):
            pads = [0] * (2 * rank)
            for a, s, e, d in zip(axes, starts, ends, dims):
                lo, hi, _ = slice(s, e).indices(d)
                pads[a % rank], pads[rank + a % rank] = lo, d - max(lo, hi)
            return [g.pad(dy, pads)] + [None] * 4
    # General case: slice the flat positions of x the same way, then scatter dy to them.
    static = g.static_shape(x)
    size = g.ints([int(np.prod(static))]) if static is not None else g.Reshape(g.Size(x), g.ints([1]))
    flat_dy = g.reshape(dy, [-1])
    if g.opset >= 11:
        positions = g.Reshape(g.Range(g.scalar_int(0), g.Size(x), g.scalar_int(1)), g.shape_of(x))
        picked = g.Slice(positions, *op.inputs[1:])
    elif params is not None and static is not None:
        starts, ends, axes, steps = params
        index = [slice(None)] * rank
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a % rank] = slice(s, e, st)
        picked = g.ints(np.arange(int(np.prod(static))).reshape(static)[tuple(index)].reshape(-1))
    else:
        raise GradientArgumentError("the gradient of Slice with run-time parameters or shapes needs opset 11 or newer")
    flat = g.scatter_elements_add(size, g.reshape(picked, [-1]), flat_dy, axis=0, unique=True)
    return [g.reshape(flat, g.shape_of(x))] + [None] * 4


# ---------------------------------------------------------------- Tile: sum the copies
@register_gradient("Tile")
def tile(g, op, dy):
    x, repeats = op.inputs[0], op.inputs[1]
    rank = g.rank(x)
    reps = g.constant_value(repeats)
    if reps is not None and all(int(r) == 1 for r in reps):
        return [dy, None]
    # view dy as [r0, d0, r1, d1, ...] and sum over the r axes
    shape = g.static_shape(x)
    if reps is not None and shape is not None:
        split = g.ints([v for r, d in zip(reps, shape) for v in (int(r), d)])
    else:
        split = g.Reshape(g.Concat(g.unsqueeze(repeats, [1]), g.unsqueeze(g.shape_of(x), [1]), axis=1),
                          g.ints([-1]))
    return [g.reduce_sum(g.Reshape(dy, split), list(range(0, 2 * rank, 2)), keepdims=False), None]


# ---------------------------------------------------------------- Pad
def _pad_params(g, op):
    """(mode, pads as [begin..., end...] over every axis or None when dynamic, constant value input)."""
    x = op.input(0)
    rank = g.rank(x)
    mode = op.attr("mode", "constant")
    if op.opset < 11:
        return mode, list(op.attr("pads")), None
    pads = g.constant_value(op.input(1))
    axes_name = op.input(3)
    axes = g.constant_value(axes_name) if axes_name else np.arange(rank)
    if pads is None or axes is None:
        return mode, None, op.input(2)
    full = [0] * (2 * rank)
    k = len(axes)
    for i, a in enumerate(int(a) % rank for a in axes):
        full[a], full[rank + a] = int(pads[i]), int(pads[k + i])
    return mode, full, op.input(2)


def _unpad_constant(g, dy, pads: List[int], rank: int) -> str:
    """Crop what Pad added, zero-fill what negative pads cropped away."""
    axes = [a for a in range(rank) if pads[a] > 0 or pads[rank + a] > 0]
    if axes:
        dy = g.slice(dy, [max(pads[a], 0) for a in axes],
                     [-pads[rank + a] if pads[rank + a] > 0 else INT64_MAX for a in axes], axes)
    restore = [max(-p, 0) for p in pads]
    return g.pad(dy, restore) if any(restore) else dy


def _unpad_dynamic(g, op, dy) -> str:
    """Constant mode with pads known only at run time (opset 11+)."""
    x, pads, axes = op.input(0), op.input(1), op.input(3)
    rank = g.rank(x)
    if axes is not None and g.constant_value(axes) is None:
        raise GradientArgumentError("the gradient of Pad needs its axes input to be a constant")
    axes_list = [int(a) % rank for a in g.constant_value(axes)] if axes is not None else list(range(rank))
    k = len(axes_list)
    zero = g.const(0, like=pads)
    added = g.Where(g.Less(pads, zero), zero, pads)
    cropped = g.Sub(added, pads)
    ends = g.Sub(g.dims(dy, axes_list), g.Slice(added, g.ints([k]), g.ints([2 * k]), g.ints([0])))
    kept = g.Slice(dy, g.Slice(added, g.ints([0]), g.ints([k]), g.ints([0])), ends, g.ints(axes_list))
    if axes is not None:
        return g.Pad(kept, cropped, None, axes)
    return g.Pad(kept, cropped)


def _border_grads(g, dy, axis: int, rank: int, b: int, e: int, n: int, mode: str) -> List[str]:
    """Contributions of the two padded borders of ``axis`` to the gradient of x (length n)."""

    def place(t: str, before: int, after: int) -> str:
        pads = [0] * (2 * rank)
        pads[axis], pads[rank + axis] = before, after
        return g.pad(t, pads)

    def take(indices: Sequence[int]) -> str:
        return g.Gather(dy, g.ints(indices), axis=axis)

    out = []
    if mode == "reflect":
        if max(b, e) > n - 1:
            raise GradientArgumentError(f"reflect padding of {max(b, e)} exceeds the axis length {n} minus 1")
        if b:  # y[j] = x[b - j] for j < b
            out.append(place(take(range(b - 1, -1, -1)), 1, n - 1 - b))
        if e:  # y[b + n - 1 + m] = x[n - 1 - m] for m = 1..e
            out.append(place(take(range(b + n - 1 + e, b + n - 1, -1)), n - 1 - e, 1))
    elif mode == "edge":
        if b:
            out.append(place(g.reduce_sum(take(range(b)), [axis]), 0, n - 1))
        if e:
            out.append(place(g.reduce_sum(take(range(b + n, b + n + e)), [axis]), n - 1, 0))
    elif mode == "wrap":
        if max(b, e) > n:
            raise GradientArgumentError(f"wrap padding of {max(b, e)} exceeds the axis length {n}")
        if b:  # y[j] = x[n - b + j] for j < b
            out.append(place(take(range(b)), n - b, 0))
        if e:
            out.append(place(take(range(b + n, b + n + e)), 0, n - e))
    else:
        raise GradientArgumentError(f"Pad mode {mode!r} has no gradient rule")
    return out


@register_gradient("Pad")
def pad(g, op, dy):
    x = op.input(0)
    rank = g.rank(x)
    mode, pads, value = _pad_params(g, op)
    if pads is None:
        if mode != "constant":
            raise GradientArgumentError(f"the gradient of Pad in {mode!r} mode needs constant pads")
        dx = _unpad_dynamic(g, op, dy)
    elif mode == "constant":
        dx = _unpad_constant(g, dy, pads, rank)
    else:
        if any(p < 0 for p in pads):
            raise GradientArgumentError(f"the gradient of Pad in {mode!r} mode needs non-negative pads")
        dx = dy
        for a in range(rank):
            b, e = pads[a], pads[rank + a]
            if not b and not e:
                continue
            n = _static_dim(g, x, a)
            if n is None:
                raise GradientArgumentError(f"the gradient of Pad in {mode!r} mode needs a static size on axis {a}")
            middle = g.slice(dx, [b], [b + n], [a])
            dx = g.Sum(middle, *_border_grads(g, dx, a, rank, b, e, n, mode))
    dvalue = None
    if value is not None and g.is_float(value):
        # the padded cells hold the value: their gradients, i.e. all of dy minus what reached x
        total = g.Sub(g.reduce_sum(dy, None, keepdims=False), g.reduce_sum(dx, None, keepdims=False))
        dvalue = g.reshape_like(total, value)
    return [dx, None, dvalue, None]


# ---------------------------------------------------------------- block rearrangements
@register_gradient("SpaceToDepth")
def space_to_depth(g, op, dy):
    # DepthToSpace with the same mode is the inverse permutation (SpaceToDepth has mode since opset 28)
    return [g.DepthToSpace(dy, blocksize=op.attr("blocksize"), mode=op.attr("mode", "DCR") if g.opset >= 11 else None)]


@register_gradient("DepthToSpace")
def depth_to_space(g, op, dy):
    x, b = op.input(0), op.attr("blocksize")
    moved = g.SpaceToDepth(dy, blocksize=b)  # the inverse of DCR: channels ordered (b1, b2, c)
    if op.attr("mode", "DCR") == "DCR":
        return [moved]
    # CRD orders x's channels (c, b1, b2): swap the two channel factors
    c = _static_dim(g, x, 1)
    groups = c // (b * b) if c is not None else g.Div(g.dims(x, [1]), g.ints([b * b]))
    split = g.Reshape(moved, _shape_vector(g, [0, b * b, groups, -1]))
    return [g.reshape_like(g.Transpose(split, perm=[0, 2, 1, 3]), x)]
