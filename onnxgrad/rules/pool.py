"""Pooling: MaxPool, AveragePool, LpPool and their Global forms.

* MaxPool: dy goes to the position of each window's maximum, which the pool itself reports: the
  forward's ``Indices`` output, or the same MaxPool recomputed with it (flat positions in x, the
  first maximum of each window as the runtime picks it). dy is scatter-added there: one
  ``ScatterND(reduction="add")`` into the flattened x where the opset has it (16). Otherwise the
  windows fall into residue classes (every m-th window per axis, m = ceil(extent / stride))
  whose windows do not overlap; each class scatters into its own copy of every (n, c) plane, so
  one plain scatter (``MaxUnpool``, which the op table writes as a ScatterND or Scatter-9 where
  runtimes want one) never writes a position twice, and the copies are summed; non-overlapping
  pools are one class.
* AveragePool: ``dx = ConvTranspose(dy / count, ones)``, the depthwise transposed convolution
  with a ones kernel (the exact adjoint of a window sum); counts follow count_include_pad and
  are a product of per-axis vectors.
* LpPool: ``dx = sign(x) |x|^(p-1) * ConvTranspose(dy * y^(1-p), ones)``.
* Global pools: broadcasts; MaxRoiPool: bins rebuilt from the rois at run time, first maximum
  per bin (ArgMax), rois scattered back to their batch entry by a MatMul.

No backward constant grows with the image beyond a vector per axis.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..optable import has_attribute
from ..registry import register_gradient
from .conv import Geometry, input_grad_transposed, spatial, window_geometry

def _pool_geometry(g: Emitter, op: Op) -> Tuple[Geometry, List[int], List[int]]:
    """(window geometry, static input spatial sizes, static output spatial sizes) of a pool node."""
    x, y = op.inputs[0], op.outputs[0]
    xs, ys = spatial(g, x), spatial(g, y)
    kernel = op.attr("kernel_shape")
    if xs is None or ys is None or not kernel:
        raise GradientArgumentError(
            f"{op.op_type} node {op.name!r}: the gradient needs static spatial shapes of its input and output")
    return window_geometry(g, op, x, list(kernel)), xs, ys


def _indices(g: Emitter, op: Op, geo: Geometry) -> str:
    """Flat position in x of each window's maximum (row-major, as ``storage_order=0`` reports it)."""
    x = op.inputs[0]
    # onnxruntime pools at most 3 spatial axes: the extra axis below is for 1-D and 2-D pools only
    unit = all(s == 1 for s in geo.strides) and all(d == 1 for d in geo.dilations) and geo.n < 3
    if op.output(1) and op.attr("storage_order", 0) == 0 and not unit:
        return op.outputs[1]
    attrs = {k: op.attr(k) for k in ("kernel_shape", "strides", "dilations", "ceil_mode") if op.has_attr(k)}
    attrs["pads"] = list(geo.begin) + list(geo.end)
    if not unit:
        indices = g.op("MaxPool", x, outputs=2, **attrs)[1]
    else:
        # onnx.reference reports wrong Indices at unit strides and dilations (its generic pooling
        # path); a trailing unit axis pooled with stride 2 changes neither windows nor positions
        rank = g.rank(x)
        attrs.update(kernel_shape=list(geo.kernel) + [1], strides=[1] * geo.n + [2],
                     pads=list(geo.begin) + [0] + list(geo.end) + [0])
        attrs.pop("dilations", None)
        indices = g.squeeze(g.op("MaxPool", g.unsqueeze(x, [rank]), outputs=2, **attrs)[1], [rank])
    return indices


@register_gradient("MaxPool", inputs=(0,))
def maxpool_grad(g: Emitter, op: Op, dy: str, *unused_indices_grad: str) -> list:
    x = op.inputs[0]
    geo, in_sizes, out_sizes = _pool_geometry(g, op)
    indices = _indices(g, op, geo)
    if has_attribute(g, "ScatterND", "reduction"):
        size = g.reshape(g.Size(x), [1])
        flat = g.scatter_nd_add(size, g.reshape(indices, [-1, 1]), g.reshape(dy, [-1]), nonnegative=True)
        return [g.reshape(flat, g.shape_of(x))]
    # windows m apart along an axis (m * stride >= extent) never share a position
    every = [-(-e // s) for e, s in zip(geo.extent, geo.strides)]
    classes = int(np.prod(every))
    # the kernel at unit strides that sizes MaxUnpool's output (the op table's form for runtimes
    # without MaxUnpool reads output_shape instead)
    if classes == 1:
        return [g.MaxUnpool(dy, indices, g.shape_of(x), kernel_shape=[n - s + 1 for n, s in zip(in_sizes, out_sizes)],
                            strides=[1] * len(out_sizes))]
    # Overlapping windows: each residue class of windows (every m-th per axis) gets its own copy
    # of each (n, c) plane, so one scatter never writes a position twice; the copies are summed.
    # Positions move from p = nc * HW + q to nc * K * HW + k * HW + q = p + (p div HW)(K - 1)HW +
    # k HW for window class k (K classes): dy [N, C, 1, O] scatters into [N, C, 1, K * HW].
    # (One scatter and one reduction instead of splitting dy and the indices by class with
    # Gathers, one scatter per class and a Sum: 1.5-2 % faster on SqueezeNet and Inception v1,
    # and 11 nodes instead of 21 after the recomputed pool for a 3x3 stride-2 pool.)
    plane, n = int(np.prod(in_sizes)), len(out_sizes)
    shifted = g.Add(indices, g.Mul(g.Div(indices, g.scalar_int(plane)), g.scalar_int((classes - 1) * plane)))
    weight = classes
    for axis, (m, o) in enumerate(zip(every, out_sizes)):  # k HW, one vector per axis broadcast over the rest
        weight //= m
        if m > 1:
            shifted = g.Add(shifted, g.const((np.arange(o, dtype=np.int64) % m * weight * plane)
                                             .reshape([o] + [1] * (n - axis - 1)), dtype=TensorProto.INT64))
    rows = [0, 0, 1, -1]
    spread_size = classes * plane
    spread = g.MaxUnpool(g.reshape(dy, rows), g.reshape(shifted, rows),
                         g.Concat(g.dims(dy, [0, 1]), g.ints([1, spread_size]), axis=0),
                         kernel_shape=[1, spread_size - int(np.prod(out_sizes)) + 1], strides=[1, 1])
    summed = g.reduce_sum(g.reshape(spread, [0, 0, classes, plane]), [2], keepdims=False)
    return [g.reshape(summed, g.shape_of(x))]


def _counts(geo: Geometry, in_sizes: List[int], out_sizes: List[int], include_pad: bool) -> List[np.ndarray]:
    """Per axis, how many taps of each window an AveragePool divides by: [O_i] each (the
    divisor of a window is their product)."""
    counts = []
    for i in range(geo.n):
        taps = np.arange(geo.kernel[i])[:, None] * geo.dilations[i] + np.arange(out_sizes[i])[None, :] * \
            geo.strides[i] - geo.begin[i]
        lo = -geo.begin[i] if include_pad else 0
        hi = in_sizes[i] + (geo.end[i] if include_pad else 0)
        counts.append(((taps >= lo) & (taps < hi)).sum(axis=0))
    return counts


def _spread(g: Emitter, t: str, x: str, y: str, geo: Geometry, in_sizes: List[int], out_sizes: List[int]) -> str:
    """The adjoint of the window sum: each window's value added to every position it reads.

    A depthwise ConvTranspose with a ones kernel; its end pad is where the last window ends
    (ceil_mode may read past the pads, floor mode may leave x's tail unread)."""
    channels = (g.shape(x) or (None, None))[1]
    if not isinstance(channels, int):
        raise GradientArgumentError(f"the gradient of a pool over {x!r} needs its static channel count")
    reach = [(o - 1) * s + e - b for o, s, e, b in zip(out_sizes, geo.strides, geo.extent, geo.begin)]
    end = [max(r - i, 0) for r, i in zip(reach, in_sizes)]
    ones = g.constant_of_shape(g.ints([channels, 1] + list(geo.kernel)), 1.0, like=t)  # computed: C*k, not stored
    read = Geometry(geo.kernel, geo.strides, geo.dilations, geo.begin, end)
    return input_grad_transposed(g, t, ones, read, channels, x, y)


@register_gradient("AveragePool", inputs=(0,))
def averagepool_grad(g: Emitter, op: Op, dy: str) -> list:
    x, y = op.inputs[0], op.outputs[0]
    geo, in_sizes, out_sizes = _pool_geometry(g, op)
    scale = g.const(1.0, like=dy)
    for i, c in enumerate(_counts(geo, in_sizes, out_sizes, bool(op.attr("count_include_pad", 0)))):
        if c.min() == c.max():
            scale = g.Mul(scale, g.const(1.0 / c[0], like=dy))
        else:  # borders excluded from the count: a vector along this axis
            scale = g.Mul(scale, g.const((1.0 / c).reshape([-1] + [1] * (geo.n - 1 - i)), like=dy))
    return [_spread(g, g.Mul(dy, scale), x, y, geo, in_sizes, out_sizes)]


def _lp_factor(g: Emitter, x: str, p: int) -> str:
    """d|x|^p / dx divided by p: sign(x) |x|^(p-1)."""
    if p == 1:
        return g.Sign(x)
    if p == 2:
        return x
    return g.Mul(g.Sign(x), g.Pow(g.Abs(x), g.const(p - 1, like=x)))


def _lp_outer(g: Emitter, dy: str, y: str, p: int) -> str:
    """dy * y^(1-p), the derivative of the p-th root."""
    if p == 1:
        return dy
    if p == 2:
        return g.Div(dy, y)
    return g.Mul(dy, g.Pow(y, g.const(1 - p, like=y)))


@register_gradient("LpPool", inputs=(0,))
def lppool_grad(g: Emitter, op: Op, dy: str) -> list:
    x, y = op.inputs[0], op.outputs[0]
    p = int(op.attr("p", 2))
    geo, in_sizes, out_sizes = _pool_geometry(g, op)
    spread = _spread(g, _lp_outer(g, dy, y, p), x, y, geo, in_sizes, out_sizes)
    return [g.Mul(spread, _lp_factor(g, x, p))]


def _broadcast_to(g: Emitter, t: str, x: str) -> str:
    return g.Expand(t, g.shape_of(x))


@register_gradient("GlobalAveragePool", inputs=(0,))
def globalaveragepool_grad(g: Emitter, op: Op, dy: str) -> list:
    x = op.inputs[0]
    xs = spatial(g, x)
    if xs is not None:
        scale = g.const(1.0 / int(np.prod(xs)), like=dy)
    else:
        # 1 / (H*W...) = Size(y) / Size(x), read at run time
        scale = g.Div(g.cast_like(g.Size(op.outputs[0]), dy), g.cast_like(g.Size(x), dy))
    return [_broadcast_to(g, g.Mul(dy, scale), x)]


@register_gradient("GlobalMaxPool", inputs=(0,))
def globalmaxpool_grad(g: Emitter, op: Op, dy: str) -> list:
    # Ties share the gradient equally (TensorFlow's reduce_max convention).
    x, y = op.inputs[0], op.outputs[0]
    hit = g.cast_like(g.Not(g.Less(x, y)), x)
    share = g.Div(dy, g.reduce_sum(hit, list(range(2, g.rank(x))), keepdims=True))
    return [g.Mul(hit, share)]


@register_gradient("GlobalLpPool", inputs=(0,))
def globallppool_grad(g: Emitter, op: Op, dy: str) -> list:
    x, y = op.inputs[0], op.outputs[0]
    p = int(op.attr("p", 2))
    return [g.Mul(_lp_outer(g, dy, y, p), _lp_factor(g, x, p))]


def _same(g: Emitter, a: str, b: str) -> str:
    """a == b for floats at any opset (Equal has float kernels only from opset 11)."""
    return g.And(g.Not(g.Less(a, b)), g.Not(g.Less(b, a)))


def _bins(g: Emitter, start: str, end: str, pooled: int, size: int, like: str) -> str:
    """[R, pooled, size] bool: which positions each bin of each roi covers (onnxruntime's rule:
    bin p spans floor(p * b) .. ceil((p + 1) * b) from the roi start, b = roi length / pooled,
    clipped to the input)."""
    length = g.Max(g.Add(g.Sub(end, start), g.const(1, like=like)), g.const(1, like=like))
    width = g.Div(length, g.const(float(pooled), like=like))
    p = g.const(np.arange(pooled, dtype=np.float64)[None, :], like=like)
    lo = g.Add(g.Floor(g.Mul(p, width)), start)
    hi = g.Add(g.Ceil(g.Mul(g.Add(p, g.const(1, like=like)), width)), start)
    zero, top = g.const(0, like=like), g.const(float(size), like=like)
    lo, hi = g.Min(g.Max(lo, zero), top), g.Min(g.Max(hi, zero), top)
    pos = g.const(np.arange(size, dtype=np.float64), like=like)
    return g.And(g.Not(g.Less(pos, g.unsqueeze(lo, [2]))), g.Less(pos, g.unsqueeze(hi, [2])))


@register_gradient("MaxRoiPool", inputs=(0,))
def maxroipool_grad(g: Emitter, op: Op, dy: str) -> list:
    """dy goes to the first maximum of each roi bin, bins recomputed from the rois at run time.

    Roi corners are rounded as floor(v * spatial_scale + 0.5) (onnxruntime's std::round for
    non-negative coordinates). Overlapping rois and bins add up in the final sums.
    """
    x, rois, y = op.inputs[0], op.inputs[1], op.outputs[0]
    xs = g.static_shape(x)
    if xs is None:
        raise GradientArgumentError(f"MaxRoiPool node {op.name!r}: the gradient needs the input's static shape")
    n, c, h, w = xs
    ph, pw = op.attr("pooled_shape")
    scale = op.attr("spatial_scale", 1.0)
    corners = g.Floor(g.Add(g.Mul(g.slice(rois, [1], [5], [1]), g.const(scale, like=x)), g.const(0.5, like=x)))
    start_w, start_h, end_w, end_h = g.split(corners, [1, 1, 1, 1], axis=1)
    rows = _bins(g, start_h, end_h, ph, h, x)  # [R, PH, H]
    cols = _bins(g, start_w, end_w, pw, w, x)  # [R, PW, W]
    region = g.And(g.unsqueeze(rows, [2, 4]), g.unsqueeze(cols, [1, 3]))  # [R, PH, PW, H, W]
    batch = g.reshape(g.Cast(g.slice(rois, [0], [1], [1]), to=7), [-1])  # int64 [R]
    planes = g.unsqueeze(g.Gather(x, batch, axis=0), [2, 3])  # [R, C, 1, 1, H, W]
    hit = g.And(_same(g, planes, g.unsqueeze(y, [4, 5])), g.unsqueeze(region, [1]))
    windows = g.reshape(g.cast_like(hit, x), [0, 0, 0, 0, h * w])
    # the first hit of each bin (ArgMax reports the first maximum), none where the bin is empty
    first = g.cast_like(g.emit("OneHot", g.ArgMax(windows, axis=-1, keepdims=0),
                               g.const(h * w, dtype=TensorProto.INT64), g.const([0, 1], dtype=TensorProto.FLOAT),
                               axis=-1), x)
    first = g.Mul(first, g.reduce("ReduceMax", windows, [-1]))
    per_roi = g.reduce_sum(g.Mul(first, g.unsqueeze(dy, [4])), [2, 3], keepdims=False)  # [R, C, H*W]
    owner = g.cast_like(g.Equal(g.unsqueeze(batch, [1]), g.ints(range(n))), x)  # [R, N]
    dx = g.MatMul(g.Transpose(owner, perm=[1, 0]), g.reshape(per_roi, [0, -1]))
    return [g.reshape(dx, list(xs)), None]
