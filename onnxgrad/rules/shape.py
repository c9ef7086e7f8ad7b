"""Shape and layout operators: each moves, copies or drops elements, so its gradient moves the
gradient back (reshape back, inverse permutation, split what was concatenated, sum what was
copied, zero-fill what was dropped).

Shapes come from static shapes when known and from ``Shape`` of the forward tensors otherwise,
so a symbolic batch dimension never blocks a gradient. Integer inputs (shapes, axes, pads,
repeats) get no gradient.
"""

from typing import List, Optional, Sequence, Tuple, Union, cast

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


def _shape_vector(g: Emitter, parts: Sequence[Union[int, str]]) -> str:
    """A 1-D int64 shape from ints and 1-element int64 tensors."""
    if all(isinstance(p, (int, np.integer)) for p in parts):
        return g.ints([int(p) for p in parts])
    return g.Concat(*(g.ints([p]) if isinstance(p, (int, np.integer)) else p for p in parts), axis=0)


def _static_dim(g: Emitter, x: str, axis: int) -> Optional[int]:
    s = g.shape(x)
    d = s[axis] if s is not None and -len(s) <= axis < len(s) else None
    return d if isinstance(d, int) else None


# ---------------------------------------------------------------- reshapes: y has x's elements in order
def _reshape_back(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [g.reshape_like(dy, op.inputs[0]), None]


for _op in ("Reshape", "Flatten", "Squeeze", "Unsqueeze"):
    register_gradient(_op)(_reshape_back)


@register_gradient("Transpose")
def transpose(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    perm = op.attr("perm")
    if not perm:
        shape = g.shape(op.inputs[0])
        if shape is None:  # reversing the axes is its own inverse, whatever the rank
            return [g.Transpose(dy)]
        perm = list(reversed(range(len(shape))))
    return [g.transpose(dy, list(np.argsort(perm)))]


@register_gradient("Expand", broadcast=True)
def expand(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [dy, None]


# ---------------------------------------------------------------- concatenation and splitting
@register_gradient("Concat")
def concat(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    xs = op.inputs
    if len(xs) == 1:
        return [dy]
    # any known rank normalizes the axis; without one, Shape/Gather/Slice take it negative too
    rank = next((len(s) for s in map(g.shape, xs + [op.outputs[0]]) if s is not None), None)
    axis = op.attr("axis") % rank if rank is not None else op.attr("axis")
    sizes = [_static_dim(g, x, axis) for x in xs]
    static = [s for s in sizes if s is not None]
    if len(static) == len(sizes):
        return [*g.split(dy, static, axis)]
    grads: List[Optional[str]] = []
    start = g.ints([0])
    for x in xs:
        end = g.Add(start, g.dims(x, [axis]))
        grads.append(g.Slice(dy, start, end, g.ints([axis])))
        start = end
    return grads


@register_gradient("Split")
def split(g: Emitter, op: Op, *dys: Optional[str]) -> List[Optional[str]]:
    # outputs nobody used arrive as zeros from the engine
    return [g.Concat(*dys, axis=op.attr("axis", 0)), None]


# ---------------------------------------------------------------- Slice: zero-fill what was dropped
@register_gradient("Slice")
def slice_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    params = op.slice_params()
    shape = g.shape(x)
    if params is not None and shape is not None:
        rank = len(shape)
        starts, ends, axes, steps = params
        maybe = [_static_dim(g, x, a % rank) for a in axes]
        dims = [d for d in maybe if d is not None]
        if all(st == 1 for st in steps) and len(dims) == len(maybe):
            pads = [0] * (2 * rank)
            for a, s, e, d in zip(axes, starts, ends, dims):
                lo, hi, _ = slice(s, e).indices(d)
                pads[a % rank], pads[rank + a % rank] = lo, d - max(lo, hi)
            return [g.pad(dy, pads)] + [None] * 4
    # General case: slice the flat positions of x the same way, then scatter dy to them.
    static = g.static_shape(x)
    size = g.ints([int(np.prod(static))]) if static is not None else g.Reshape(g.Size(x), g.ints([1]))
    flat_dy = g.reshape(dy, [-1])
    if g.can_emit("Range"):  # positions computed at run time serve any parameters and shapes
        positions = g.Reshape(g.Range(g.scalar_int(0), g.Size(x), g.scalar_int(1)), g.shape_of(x))
        picked = g.Slice(positions, *op.inputs[1:])
    elif params is not None and static is not None:
        starts, ends, axes, steps = params
        index = [slice(None)] * len(static)
        for a, s, e, st in zip(axes, starts, ends, steps):
            index[a % rank] = slice(s, e, st)
        picked = g.ints(np.arange(int(np.prod(static))).reshape(static)[tuple(index)].reshape(-1))
    else:
        raise GradientArgumentError("the gradient of Slice with run-time parameters or shapes needs opset 11 (Range)")
    flat = g.scatter_elements_add(size, g.reshape(picked, [-1]), flat_dy, axis=0, unique=True)
    return [g.reshape(flat, g.shape_of(x))] + [None] * 4


# ---------------------------------------------------------------- Tile: sum the copies
@register_gradient("Tile")
def tile(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x, repeats = op.inputs[0], op.inputs[1]
    rank = _rank(g, x, repeats, 1)
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
def _rank(g: Emitter, x: str, parameter: Optional[str], per_axis: int) -> int:
    """The rank of ``x``, or when unknown, the length of its ``per_axis`` values per axis
    ``parameter`` (Tile's repeats, Pad's pads) divided by ``per_axis``."""
    shape = g.shape(x)
    if shape is not None:
        return len(shape)
    length = (g.shape(parameter) or (None,))[0] if parameter else None
    if not isinstance(length, int):
        g.rank(x)  # the error names x
    return int(length) // per_axis  # type: ignore[arg-type]


def _pad_params(g: Emitter, op: Op) -> Tuple[str, Optional[List[int]], Optional[str]]:
    """(mode, pads as [begin..., end...] over every axis or None when dynamic, constant value input)."""
    x = op.inputs[0]
    mode = op.attr("mode", "constant")
    value = op.arg_input("value")  # a tensor (from opset 11) has a gradient, an attribute not
    axes_name = op.input(3)
    if op.is_dynamic("pads") or (axes_name and g.constant_value(axes_name) is None):
        return mode, None, value
    rank = _rank(g, x, None if axes_name else op.arg_input("pads"), 2)  # pads over every axis tell the rank
    given = g.constant_value(axes_name)
    axes = [int(a) for a in given] if given is not None else list(range(rank))
    pads = op.ints("pads") or []  # a required argument
    full = [0] * (2 * rank)
    k = len(axes)
    for i, a in enumerate(a % rank for a in axes):
        full[a], full[rank + a] = int(pads[i]), int(pads[k + i])
    return mode, full, value


def _unpad_constant(g: Emitter, dy: str, pads: List[int], rank: int) -> str:
    """Crop what Pad added, zero-fill what negative pads cropped away."""
    axes = [a for a in range(rank) if pads[a] > 0 or pads[rank + a] > 0]
    if axes:
        dy = g.slice(dy, [max(pads[a], 0) for a in axes],
                     [-pads[rank + a] if pads[rank + a] > 0 else None for a in axes], axes)
    restore = [max(-p, 0) for p in pads]
    return g.pad(dy, restore) if any(restore) else dy


def _unpad_dynamic(g: Emitter, op: Op, dy: str) -> str:
    """Constant mode with pads known only at run time (opset 11+)."""
    x, pads, axes = op.inputs[0], op.input(1), op.input(3)
    axes_value = g.constant_value(axes)
    if axes is not None and axes_value is None:
        return _unpad_by_positions(g, op, dy)
    rank = g.rank(x) if axes is not None else _rank(g, x, pads, 2)
    axes_list = [int(a) % rank for a in axes_value] if axes_value is not None else list(range(rank))
    k = len(axes_list)
    zero = g.const(0, like=pads)
    added = g.Where(g.Less(pads, zero), zero, pads)
    cropped = g.Sub(added, pads)
    ends = g.Sub(g.dims(dy, axes_list), g.Slice(added, g.ints([k]), g.ints([2 * k]), g.ints([0])))
    kept = g.Slice(dy, g.Slice(added, g.ints([0]), g.ints([k]), g.ints([0])), ends, g.ints(axes_list))
    if axes is not None:
        return g.Pad(kept, cropped, None, axes)
    return g.Pad(kept, cropped)


def _border_grads(g: Emitter, dy: str, axis: int, rank: int, b: int, e: int, n: int, mode: str) -> List[str]:
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


def _unpad_by_positions(g: Emitter, op: Op, dy: str, pads: Optional[List[int]] = None) -> str:
    """Pad's gradient for any mode, pads, axes and shapes known only at run time: the same Pad
    applied to the flat positions of x says which element of x each cell of y copies (-1 for a
    constant cell), and dy is summed into those positions. ``pads``: over every axis, when static."""
    x = op.inputs[0]
    positions = g.Reshape(g.Range(g.scalar_int(0), g.Size(x), g.scalar_int(1)), g.shape_of(x))
    mode = op.attr("mode", "constant")
    if pads is not None:
        source = g.Pad(positions, pads=pads, value=-1.0, mode=mode)
    else:
        filler = g.const(np.array(-1, np.int64), dtype=TensorProto.INT64) if mode == "constant" else None
        source = g.Pad(positions, op.inputs[1], filler, op.input(3), mode=mode)
    if mode == "constant":  # constant cells copy nothing: they add zero to position 0
        padded = g.Less(source, g.scalar_int(0))
        source = g.Where(padded, g.scalar_int(0), source)
        dy = g.Where(padded, g.zeros_like(dy), dy)
    source, flat_dy = g.reshape(source, [-1]), g.reshape(dy, [-1])
    size = g.Reshape(g.Size(x), g.ints([1]))
    return g.reshape(g.scatter_elements_add(size, source, flat_dy, axis=0), g.shape_of(x))


@register_gradient("Pad")
def pad(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    mode, pads, value = _pad_params(g, op)
    if pads is None:
        dx = _unpad_dynamic(g, op, dy) if mode == "constant" else _unpad_by_positions(g, op, dy)
    elif mode == "constant":
        dx = _unpad_constant(g, dy, pads, len(pads) // 2)
    else:
        rank = len(pads) // 2
        padded = [a for a in range(rank) if pads[a] or pads[rank + a]]
        sizes = [_static_dim(g, x, a) for a in padded]
        if any(p < 0 for p in pads) or None in sizes:  # crops, or sizes known only at run time
            return [_unpad_by_positions(g, op, dy, pads), None, None, None]
        dx = dy
        for a, n in zip(padded, cast(List[int], sizes)):
            b, e = pads[a], pads[rank + a]
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
def space_to_depth(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # DepthToSpace with the same mode is the inverse permutation (SpaceToDepth has mode since opset 28)
    return [g.DepthToSpace(dy, blocksize=op.attr("blocksize"), mode=op.attr("mode", "DCR"))]


@register_gradient("DepthToSpace")
def depth_to_space(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x, b = op.inputs[0], op.attr("blocksize")
    moved = g.SpaceToDepth(dy, blocksize=b)  # the inverse of DCR: channels ordered (b1, b2, c)
    if op.attr("mode", "DCR") == "DCR":
        return [moved]
    # CRD orders x's channels (c, b1, b2): swap the two channel factors
    c = _static_dim(g, x, 1)
    groups = c // (b * b) if c is not None else g.Div(g.dims(x, [1]), g.ints([b * b]))
    split = g.Reshape(moved, _shape_vector(g, [0, b * b, groups, -1]))
    return [g.reshape_like(g.Transpose(split, perm=[0, 2, 1, 3]), x)]
