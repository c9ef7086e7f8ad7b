"""Composite emissions: what the emitter builds from several ops.

Undoing a broadcast (``sum_to``), scatter-add at every opset (``scatter_nd_add``,
``scatter_elements_add``, ``scatter_flat``), a constant ``pad`` whose value the old Pad kernel
refuses, a one-axis ``log_softmax``. Each is a function of the emitter ``g`` and is bound as its
method (:class:`onnxgrad.emitter.Emitter`), so rules write ``g.sum_to(grad, x, like)``; the
emitter itself keeps names, constants, types and the op table.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from .errors import GradientArgumentError
from .tensorinfo import Dim

if TYPE_CHECKING:
    from .emitter import Emitter


def scatter_flat(g: Emitter, data: str, positions: str, updates: str) -> str:
    """1-D ``data`` with ``updates`` written at ``positions`` ([K, 1] int64, no repeats):
    ScatterND from opset 11, before it Scatter-9 along the second axis of a [1, N] view."""
    if g.opset >= 11:
        return g.ScatterND(data, positions, updates)
    row = g.ints([1, -1])
    return g.Reshape(g.Scatter(g.Reshape(data, row), g.Reshape(positions, row),
                               g.Reshape(updates, row), axis=1), g.ints([-1]))


def pad(g: Emitter, x: str, pads: Union[str, Sequence[int]], value: float = 0.0) -> str:
    """Constant-pad ``x``; ``pads`` is ONNX's [begin..., end...] as ints or an int64 tensor.

    Before opset 11 an infinite ``value`` (max-pool's identity) becomes the dtype's extreme
    finite value, the same identity for max/min: OpenVINO refuses an infinite Pad-2 attribute
    as out of range (docs/runtime-bugs/openvino-pad-inf).
    """
    if isinstance(pads, str):
        return g.Pad(x, pads, g.const(value, like=x)) if value != 0.0 else g.Pad(x, pads)
    if g.opset < 11 and np.isinf(value):
        bf16 = g.dtype(x) == TensorProto.BFLOAT16  # numpy has no bfloat16: its largest finite value
        largest = 3.3895313892515355e38 if bf16 else float(np.finfo(helper.tensor_dtype_to_np_dtype(g.dtype(x))).max)
        value = largest if value > 0 else -largest
    return g.Pad(x, pads=list(pads), value=float(value))


def log_softmax(g: Emitter, x: str, axis: int) -> str:
    """LogSoftmax over ``axis`` alone at any opset (before opset 13 LogSoftmax normalizes over
    every axis from ``axis`` on: the axis is moved last there)."""
    rank = g.rank(x)
    axis %= rank
    if g.opset >= 13 or axis == rank - 1:
        return g.LogSoftmax(x, axis=axis)
    to_last = [a for a in range(rank) if a != axis] + [axis]
    back = list(np.argsort(to_last))
    return g.transpose(g.LogSoftmax(g.transpose(x, to_last), axis=rank - 1), back)


def _normalize_indices(g: Emitter, indices: str, dims: str) -> str:
    """Negative indices counted from the end: ``indices + dims`` where negative."""
    dims = g.cast_like(dims, indices)
    return g.Where(g.Less(indices, g.const(0, like=indices)), g.Add(indices, dims), indices)


def _widened(g: Emitter, x: str) -> str:
    """``x`` in float when it is float16/bfloat16: onnxruntime has no half-precision scatter-add."""
    if g.dtype(x) in (TensorProto.FLOAT16, TensorProto.BFLOAT16):
        return g.Cast(x, to=TensorProto.FLOAT)
    return x


def _one_hot(g: Emitter, indices: str, depth: str, axis: int, like: str) -> str:
    """OneHot in ``like``'s dtype: onnxruntime implements int64 indices and float values, not
    int32 indices or double/half values."""
    if g.dtype(indices) != TensorProto.INT64:
        indices = g.Cast(indices, to=TensorProto.INT64)
    onehot = g.op("OneHot", indices, depth, g.const([0, 1], dtype=TensorProto.FLOAT), axis=axis)
    return g.cast_like(onehot, like)  # type: ignore[arg-type]


def scatter_nd_add(g: Emitter, shape: str, indices: str, updates: str, nonnegative: bool = False) -> str:
    """``ScatterND(zeros(shape), indices, updates, reduction='add')`` at any opset.

    Repeated indices accumulate; negative ones count from the end, unless the caller knows there
    are none (``nonnegative``: MaxPool's ``Indices``), which saves three passes over the indices.
    Before opset 16 (no reduction attribute) the index tuples are linearized into rows and the
    updates of equal rows summed with a one-hot MatMul: over the distinct rows (``Unique``, then a
    plain ScatterND) from opset 11, memory (index tuples) x (distinct rows); over every
    addressable row before that, memory (index tuples) x (rows).
    """
    k = (g.shape(indices) or (None,))[-1]
    if not isinstance(k, int):
        raise GradientArgumentError(
            f"the last dimension of indices {indices!r} must be static to scatter into it")
    dims = g.Gather(shape, g.ints(range(k)), axis=0)
    idx = indices if nonnegative else _normalize_indices(g, indices, dims)
    if g.dtype(idx) != TensorProto.INT64:  # ScatterND and the row arithmetic want int64
        idx = g.Cast(idx, to=TensorProto.INT64)
    if g.opset >= 16:
        wide = _widened(g, updates)
        zeros = g.constant_of_shape(shape, 0.0, like=wide)
        return g.cast_like(g.op("ScatterND", zeros, idx, wide, reduction="add"), updates)  # type: ignore[arg-type]
    last = g.rank(indices) - 1
    rows = g.Gather(idx, g.scalar_int(0), axis=last)
    depth = g.Gather(dims, g.scalar_int(0), axis=0)
    for j in range(1, k):  # row-major: row = ((i0 * d1 + i1) * d2 + i2) ...
        d = g.Gather(dims, g.scalar_int(j), axis=0)
        rows = g.Add(g.Mul(rows, d), g.Gather(idx, g.scalar_int(j), axis=last))
        depth = g.Mul(depth, d)
    rows = g.Reshape(rows, g.ints([-1]))
    # updates are [index tuples..., addressed dims...]: Flatten keeps the rank inferable
    flat = g.Flatten(updates, axis=last)
    if g.opset < 11:
        summed = g.MatMul(g.Transpose(_one_hot(g, rows, depth, -1, like=updates), perm=[1, 0]), flat)
        return g.Reshape(summed, shape)
    distinct, _, which, _ = g.emit_outputs("Unique", 4, rows, sorted=1)
    onehot = _one_hot(g, which, g.Size(distinct), -1, like=updates)
    summed = g.MatMul(g.Transpose(onehot, perm=[1, 0]), flat)
    width = g.Slice(g.Shape(flat), g.ints([1]), g.ints([2]), g.ints([0]))
    zeros = g.constant_of_shape(g.Concat(g.Reshape(depth, g.ints([1])), width, axis=0), 0.0,
                                   like=updates)
    return g.Reshape(g.ScatterND(zeros, g.unsqueeze(distinct, [1]), summed), shape)


def scatter_elements_add(g: Emitter, shape: str, indices: str, updates: str, axis: int,
                         unique: bool = False) -> str:
    """``ScatterElements(zeros(shape), indices, updates, axis, reduction='add')`` at any opset.

    ``unique=True`` promises that no index repeats along ``axis`` (TopK, Slice), so plain
    ScatterElements serves from opset 11. Otherwise, before opset 16, the sum is
    ``ReduceSum(OneHot(indices) * updates)`` over the indices' axis, zero-padded to ``shape``
    where ``indices`` is smaller than it off the axis (which needs opset 11).
    """
    rank = g.rank(indices)
    axis = axis % rank
    if unique and g.opset >= 11:
        zeros = g.constant_of_shape(shape, 0.0, like=updates)
        return g.op("ScatterElements", zeros, indices, updates, axis=axis)  # type: ignore[return-value]
    if g.opset >= 16:
        wide = _widened(g, updates)
        zeros = g.constant_of_shape(shape, 0.0, like=wide)
        summed = g.op("ScatterElements", zeros, indices, wide, axis=axis, reduction="add")
        return g.cast_like(summed, updates)  # type: ignore[arg-type]
    depth = g.Gather(shape, g.scalar_int(axis), axis=0)
    idx = _normalize_indices(g, indices, depth)
    onehot = _one_hot(g, idx, depth, axis + 1, like=updates)
    summed = g.reduce_sum(g.Mul(onehot, g.unsqueeze(updates, [axis + 1])), [axis], keepdims=False)
    target, have = g.constant_value(shape), g.static_shape(indices)
    if target is not None and have is not None and all(
            int(t) == h for i, (t, h) in enumerate(zip(target, have)) if i != axis):
        return summed
    if g.opset < 11:
        raise GradientArgumentError("scatter-add into a larger tensor needs static shapes before opset 11")
    missing = g.Sub(shape, g.Shape(summed))
    return g.pad(summed, g.Concat(g.ints([0] * rank), missing, axis=0))


def sum_to(g: Emitter, grad: str, x: str, like: str) -> str:
    """Sum ``grad`` (shaped like ``like``, a broadcast result) back to the shape of ``x``.

    Static where the shapes decide it. With known ranks, the axes the shapes leave open (x's
    dim may be 1 at run time) are reduced by one ReduceSum whose axes input has a constant
    length: for each open axis, that axis if x's dim is 1 there, else one of the unit axes
    appended to the gradient for the purpose, then a Squeeze of the unit and leading axes: the
    cost of the former run-time axes (``NonZero``-computed), which OpenVINO refuses with a
    symbolic batch. Only unknown ranks still need those.
    """
    return g.sum_to_shape(grad, x, g.shape(like))


def sum_to_shape(g: Emitter, grad: str, x: str, ys: Optional[Tuple[Dim, ...]]) -> str:
    """:meth:`sum_to` for a ``grad`` of static shape ``ys`` (None: unknown)."""
    xs = g.shape(x)
    if xs is None or ys is None:
        return _sum_to_dynamic(g, grad, x)
    if xs == ys and all(d is not None for d in xs):
        return grad
    lead = len(ys) - len(xs)
    if lead < 0:
        raise GradientArgumentError(f"gradient of {x!r} has lower rank than the tensor itself")
    axes, open_axes = list(range(lead)), []
    for i, dx in enumerate(xs):
        dy = ys[lead + i]
        if dx == 1 and dy != 1:
            axes.append(lead + i)
        elif (dx == dy and dx is not None) or (isinstance(dx, int) and dx != 1) or dy == 1:
            continue  # same dim, or a dim that is never broadcast
        else:
            open_axes.append(i)
    if open_axes:
        return _sum_to_open(g, grad, x, axes, open_axes, len(ys))
    if not axes:
        return grad
    if len(axes) == lead:  # only the leading axes: dropping them leaves x's shape (a bias), no Reshape
        return g.reduce_sum(grad, axes, keepdims=False)
    red = g.reduce_sum(grad, axes, keepdims=True)
    if lead:
        static = g.static_shape(x)
        red = g.reshape(red, list(static) if static is not None else g.shape_of(x))
    return red


def _sum_to_open(g: Emitter, grad: str, x: str, axes: List[int], open_axes: List[int], rank: int) -> str:
    """sum_to with ``axes`` (of grad) always reduced and ``open_axes`` (of x) reduced where x's
    run-time dim is 1: one ReduceSum over a constant number of axes (see :meth:`sum_to`)."""
    _need_runtime_axes(g, x)
    lead, units = rank - len(g.shape(x) or ()), list(range(rank, rank + len(open_axes)))
    one = g.scalar_int(1)
    picks = [g.Where(g.Equal(g.Gather(g.shape_of(x), g.scalar_int(i), axis=0), one),
                        g.ints([lead + i]), g.ints([unit])) for i, unit in zip(open_axes, units)]
    chosen = picks[0] if len(picks) == 1 else g.Concat(*picks, axis=0)
    if axes:
        chosen = g.Concat(g.ints(axes), chosen, axis=0)
    summed = g.ReduceSum(g.unsqueeze(grad, units), chosen, keepdims=1)
    red = g.squeeze(summed, list(range(lead)) + units)  # static: those axes have size 1 either way
    if not g.restate_dims:
        return red
    # a no-op Slice to x's dims, for tract: its shape analysis cannot tell which axes the ReduceSum kept
    return g.Slice(red, g.ints([0] * len(open_axes)), g.dims(x, open_axes), g.ints(open_axes))


def _need_runtime_axes(g: Emitter, x: str) -> None:
    """Raise the clear error for a broadcast undone over run-time axes before opset 13."""
    if g.opset < 13:
        raise GradientArgumentError(
            f"undoing the broadcast of {x!r} depends on shapes known only at run time, which "
            "needs opset 13 or newer (ReduceSum with axes as an input); give the model's inputs "
            "static shapes or convert it to opset 13"
        )


def _sum_to_dynamic(g: Emitter, grad: str, x: str) -> str:
    """Reduce over the axes where the gradient's run-time dim differs from x's (x padded
    with leading 1s to the gradient's rank), then reshape to x's shape."""
    _need_runtime_axes(g, x)
    gshape = g.Shape(grad)
    xshape = g.shape_of(x)
    lead = g.Sub(g.Size(gshape), g.Size(xshape))
    ones = g.op("ConstantOfShape", g.Reshape(lead, g.ints([1])),
                   value=numpy_helper.from_array(np.array([1], np.int64), "value"))
    padded = g.Concat(ones, xshape, axis=0)
    axes = g.Reshape(g.NonZero(g.Not(g.Equal(padded, gshape))), g.ints([-1]))
    red = g.op("ReduceSum", grad, axes, keepdims=1, noop_with_empty_axes=1)
    return g.reshape(red, g.shape_of(x))  # type: ignore[arg-type]
