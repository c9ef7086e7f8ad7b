"""Pooling: MaxPool, AveragePool, LpPool and their Global forms.

A pooling window is separable: along spatial axis i, window o reads the k_i taps
``j * d_i + o * s_i - pad_i`` (j < k_i). Per axis, with static sizes, that is a constant 0/1 matrix
S_i [k_i*O_i, D_i] (row j*O_i + o has a 1 at the tap's position, none when the tap is padding).

* MaxPool: the taps are gathered (``Gather`` on the -inf padded input), compared with the output,
  the first matching tap of each window is kept (ties: one tap, like the runtime's argmax), and
  dy is routed to it by the transpose of the gather, ``MatMul`` with S_i per axis. Overlapping
  windows that share a maximum add up in that MatMul (the scatter-add with duplicates), at any
  opset and in any float type, with no Indices output needed.
* AveragePool: ``dx = (dy / count) x_i T_i`` with T_i[o, p] = sum_j S_i (the window's taps);
  counts follow count_include_pad.
* LpPool: ``dx = sign(x) |x|^(p-1) * ((dy * y^(1-p)) x_i T_i)``.
* Global pools: broadcasts; MaxRoiPool: bins rebuilt from the rois at run time, first maximum
  per bin, rois scattered back to their batch entry by a MatMul.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from .conv import Geometry, spatial, window_geometry


@dataclass
class _Plan:
    """Static pooling geometry: in/out sizes, padded sizes and tap positions per axis."""

    geo: Geometry
    in_sizes: List[int]
    out_sizes: List[int]

    @property
    def n(self) -> int:
        return self.geo.n

    def taps(self, i: int) -> np.ndarray:
        """[k_i, O_i] positions read by each window along axis i, in unpadded coordinates."""
        g = self.geo
        j = np.arange(g.kernel[i])[:, None]
        o = np.arange(self.out_sizes[i])[None, :]
        return j * g.dilations[i] + o * g.strides[i] - g.begin[i]

    def padded_size(self, i: int) -> int:
        """Length of axis i once padded: the pads, or further when ceil_mode reads past them."""
        begin = self.geo.begin[i]
        return max(begin + self.in_sizes[i] + self.geo.end[i], begin + int(self.taps(i).max()) + 1)

    def selection(self, i: int) -> np.ndarray:
        """S_i [k_i*O_i, D_i]: 1 where a tap reads a real (non-padding) position."""
        pos = self.taps(i).reshape(-1)
        return (pos[:, None] == np.arange(self.in_sizes[i])[None, :]).astype(np.float64)

    def window_sum(self, i: int) -> np.ndarray:
        """T_i [O_i, D_i]: how often window o reads position p."""
        k, o = self.geo.kernel[i], self.out_sizes[i]
        return self.selection(i).reshape(k, o, -1).sum(axis=0)


def _plan(g: Emitter, op: Op) -> _Plan:
    x, y = op.input(0), op.output(0)
    xs, ys = spatial(g, x), spatial(g, y)
    kernel = op.attr("kernel_shape")
    if xs is None or ys is None or not kernel:
        raise GradientArgumentError(
            f"{op.op_type} node {op.name!r}: the gradient needs static spatial shapes of its input and output")
    return _Plan(window_geometry(g, op, x, list(kernel)), xs, ys)


def contract_axis(g: Emitter, t: str, axis: int, rank: int, m: Optional[str], m_t: str) -> str:
    """Contract axis ``axis`` of ``t`` with the rows of the matrix ``m`` [A, B] (``m_t`` is its
    transpose; ``m`` is only read for the last axis): that axis, A long, becomes B long."""
    if axis == rank - 1:
        return g.MatMul(t, m)
    if axis == rank - 2:
        return g.MatMul(m_t, t)
    perm = list(range(rank))
    perm[axis], perm[rank - 2] = perm[rank - 2], perm[axis]
    return g.transpose(g.MatMul(m_t, g.transpose(t, perm)), perm)


def _along(g: Emitter, t: str, axis: int, rank: int, matrix: np.ndarray) -> str:
    """:func:`contract_axis` with a constant matrix."""
    m_t = g.const(matrix.T, like=t)
    m = g.const(matrix, like=t) if axis == rank - 1 else None
    return contract_axis(g, t, axis, rank, m, m_t)


def _scatter(g: Emitter, t: str, plan: _Plan, matrices: List[np.ndarray]) -> str:
    """Apply each axis' transposed tap matrix: window-space [N, C, A_i...] to input-space [N, C, D_i...]."""
    rank = 2 + plan.n
    for i, m in enumerate(matrices):
        t = _along(g, t, 2 + i, rank, m)
    return t


@register_gradient("MaxPool", inputs=(0,))
def maxpool_grad(g: Emitter, op: Op, dy: str, *unused_indices_grad) -> list:
    x, y = op.input(0), op.output(0)
    plan = _plan(g, op)
    n, geo = plan.n, plan.geo
    pads = [0, 0] + geo.begin + [0, 0] + [plan.padded_size(i) - geo.begin[i] - plan.in_sizes[i] for i in range(n)]
    taps = g.pad(x, pads, value=float("-inf")) if any(pads) else x
    for i in range(n):
        index = (plan.taps(i) + geo.begin[i]).reshape(-1)
        taps = g.Gather(taps, g.ints(index), axis=2 + i)
    # [N, C, k1, O1, k2, O2, ...]: each window's taps next to its position
    split = [0, 0] + [v for i in range(n) for v in (geo.kernel[i], plan.out_sizes[i])]
    per_window = [0, 0] + [v for i in range(n) for v in (1, plan.out_sizes[i])]
    # every tap is <= its window's max, so "not below" is equality (and Less has float kernels at opset 9)
    hit = g.cast_like(g.Not(g.Less(g.reshape(taps, split), g.reshape(y, per_window))), x)
    routed = g.Mul(_first_hit(g, hit, plan), g.reshape(dy, per_window))
    flat = g.reshape(routed, [0, 0] + [geo.kernel[i] * plan.out_sizes[i] for i in range(n)])
    dx = _scatter(g, flat, plan, [plan.selection(i) for i in range(n)])
    g.set_info(dx, g.dtype(x), g.shape(x))
    return [dx]


def _first_hit(g: Emitter, hit: str, plan: _Plan) -> str:
    """Keep, per window, only the first tap (row-major kernel order) equal to the maximum.

    ``hit`` is [N, C, k1, O1, ..., kn, On]; a tap survives when no earlier tap of its window hit:
    the count of earlier hits is one MatMul with a strictly upper-triangular ones matrix.
    """
    n = plan.n
    k = int(np.prod(plan.geo.kernel))
    if k == 1:
        return hit
    to_last = [0, 1] + [3 + 2 * i for i in range(n)] + [2 + 2 * i for i in range(n)]
    inverse = list(np.argsort(to_last))
    windows = g.reshape(g.transpose(hit, to_last), [0, 0] + plan.out_sizes + [k])
    earlier = g.MatMul(windows, g.const(np.triu(np.ones((k, k)), 1), like=hit))
    first = g.Mul(windows, g.cast_like(g.Less(earlier, g.const(0.5, like=hit)), hit))
    back = g.reshape(first, [0, 0] + plan.out_sizes + list(plan.geo.kernel))
    return g.transpose(back, inverse)


def _counts(plan: _Plan, include_pad: bool) -> np.ndarray:
    """Divisor of every output of an AveragePool, [O1, ..., On] (the product of per-axis counts)."""
    total = np.ones(())
    for i in range(plan.n):
        pos = plan.taps(i)
        lo = -plan.geo.begin[i] if include_pad else 0
        hi = plan.in_sizes[i] + (plan.geo.end[i] if include_pad else 0)
        c = ((pos >= lo) & (pos < hi)).sum(axis=0)
        total = np.multiply.outer(total, c)
    return total


@register_gradient("AveragePool", inputs=(0,))
def averagepool_grad(g: Emitter, op: Op, dy: str) -> list:
    x = op.input(0)
    plan = _plan(g, op)
    scaled = g.Mul(dy, g.const(1.0 / _counts(plan, bool(op.attr("count_include_pad", 0))), like=dy))
    dx = _scatter(g, scaled, plan, [plan.window_sum(i) for i in range(plan.n)])
    g.set_info(dx, g.dtype(x), g.shape(x))
    return [dx]


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
    x, y = op.input(0), op.output(0)
    p = int(op.attr("p", 2))
    plan = _plan(g, op)
    spread = _scatter(g, _lp_outer(g, dy, y, p), plan, [plan.window_sum(i) for i in range(plan.n)])
    return [g.Mul(spread, _lp_factor(g, x, p))]


def _broadcast_to(g: Emitter, t: str, x: str) -> str:
    return g.Expand(t, g.shape_of(x))


@register_gradient("GlobalAveragePool", inputs=(0,))
def globalaveragepool_grad(g: Emitter, op: Op, dy: str) -> list:
    x = op.input(0)
    xs = spatial(g, x)
    if xs is not None:
        scale = g.const(1.0 / int(np.prod(xs)), like=dy)
    else:
        # 1 / (H*W...) = Size(y) / Size(x), read at run time
        scale = g.Div(g.cast_like(g.Size(op.output(0)), dy), g.cast_like(g.Size(x), dy))
    return [_broadcast_to(g, g.Mul(dy, scale), x)]


@register_gradient("GlobalMaxPool", inputs=(0,))
def globalmaxpool_grad(g: Emitter, op: Op, dy: str) -> list:
    # Ties share the gradient equally (TensorFlow's reduce_max convention).
    x, y = op.input(0), op.output(0)
    hit = g.cast_like(g.Not(g.Less(x, y)), x)
    share = g.Div(dy, g.reduce_sum(hit, list(range(2, g.rank(x))), keepdims=True))
    return [g.Mul(hit, share)]


@register_gradient("GlobalLpPool", inputs=(0,))
def globallppool_grad(g: Emitter, op: Op, dy: str) -> list:
    x, y = op.input(0), op.output(0)
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
    x, rois, y = op.input(0), op.input(1), op.output(0)
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
    earlier = g.MatMul(windows, g.const(np.triu(np.ones((h * w, h * w)), 1), like=x))
    first = g.Mul(windows, g.cast_like(g.Less(earlier, g.const(0.5, like=x)), x))
    per_roi = g.reduce_sum(g.Mul(first, g.unsqueeze(dy, [4])), [2, 3], keepdims=False)  # [R, C, H*W]
    owner = g.cast_like(g.Equal(g.unsqueeze(batch, [1]), g.ints(range(n))), x)  # [R, N]
    dx = g.MatMul(g.Transpose(owner, perm=[1, 0]), g.reshape(per_roi, [0, -1]))
    return [g.reshape(dx, list(xs)), None]
