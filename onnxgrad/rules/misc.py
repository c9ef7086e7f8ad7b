"""Rules for the default-domain operators outside the big families: linear algebra (Det),
scans (CumProd), selection and placement (Compress, CenterCropPad, MaxUnpool, ReverseSequence,
Unique, OneHot, Range, Scatter, TensorScatter), sampling (GridSample, RoiAlign, AffineGrid,
Col2Im), CausalConvWithState, spectral transforms (DFT, STFT) and quantization
(DequantizeLinear, DynamicQuantizeLinear).

Several ops here are linear in their data input but defined by intricate index arithmetic
(GridSample's padding modes and align_corners, RoiAlign's sampling grid). Their adjoint is
written with the op itself: applied to an identity basis, the op returns its own weight matrix W,
and the gradient is W^T dy. That is exact for every mode the op supports, at the cost of memory
proportional to (input positions) x (output positions) per image.
"""

from __future__ import annotations

import numpy as np
from onnx import TensorProto

from ..errors import GradientArgumentError
from ..registry import not_supported, register_gradient


def _static_dims(g, x: str, what: str):
    shape = g.static_shape(x)
    if shape is None:
        raise GradientArgumentError(f"the gradient of {what} needs the static shape of {x!r}")
    return shape


def _const_input(g, op, i: int, what: str) -> np.ndarray:
    value = g.constant_value(op.input(i))
    if value is None:
        raise GradientArgumentError(
            f"the gradient of {op.op_type} needs its {what} (input {i}, {op.input(i)!r}) to be a constant")
    return value


def _basis(g, x: str, batch: str, n_positions: int, spatial) -> str:
    """Identity images: channel q of every batch entry is 1 at spatial position q, 0 elsewhere."""
    eye = g.EyeLike(g.constant_of_shape(g.ints([n_positions, n_positions]), 0.0, like=x))
    eye = g.reshape(eye, [1, n_positions, *spatial])
    return g.Expand(eye, g.Concat(batch, g.ints([n_positions, *spatial]), axis=0))


# ------------------------------------------------------------------------------- linear algebra
@register_gradient("Det", since=11)
def det(g, op, dy):
    # d det(X) / dX_ij is the cofactor (-1)^(i+j) det(minor_ij): exact even for singular X,
    # built from Det itself so it differentiates again.
    x = op.input(0)
    r = g.rank(x)
    n = g.shape(x)[-1]
    if not isinstance(n, int):
        raise GradientArgumentError(f"the gradient of Det needs the static matrix size of {x!r}")
    dy = g.unsqueeze(dy, [r - 2, r - 1])
    if n == 1:
        return [dy]
    keep = g.ints(np.array([[j for j in range(n) if j != i] for i in range(n)]))
    minors = g.Gather(g.Gather(x, keep, axis=r - 2), keep, axis=r)  # (..., i, n-1, j, n-1)
    minors = g.transpose(minors, list(range(r - 2)) + [r - 2, r, r - 1, r + 1])
    sign = g.const((-1.0) ** np.add.outer(np.arange(n), np.arange(n)), like=x)
    return [g.Mul(dy, g.Mul(g.Det(minors), sign))]


# ------------------------------------------------------------------------------- scans
@register_gradient("CumProd", inputs=[0])
def cumprod(g, op, dy):
    # y_k is multilinear in x, so dy_k/dx_i is y_k recomputed with x_i := 1, wherever y_k's
    # product contains x_i. One CumProd over n copies of x (copy i has x_i := 1) gives every
    # such partial product without dividing by x, so zeros in x are exact.
    x = op.input(0)
    r = g.rank(x)
    a = int(np.asarray(_const_input(g, op, 1, "axis")).reshape(-1)[0]) % r
    n = g.shape(x)[a]
    if not isinstance(n, int):
        raise GradientArgumentError(f"the gradient of CumProd needs the static length of axis {a} of {x!r}")
    exclusive, reverse = op.attr("exclusive", 0), op.attr("reverse", 0)
    trailing = (1,) * (r - a - 1)
    eye = np.eye(n).reshape((n, n) + trailing)
    copies = g.Add(g.Mul(g.unsqueeze(x, [a]), g.const(1 - eye, like=x)), g.const(eye, like=x))
    partial = g.op("CumProd", copies, g.scalar_int(a + 1), exclusive=exclusive or None, reverse=reverse or None)
    i, k = np.arange(n)[:, None], np.arange(n)[None, :]
    contains = (i >= k if reverse else i <= k) & (i != k if exclusive else True)
    weighted = g.Mul(g.Mul(partial, g.unsqueeze(dy, [a])), g.const(contains.reshape((n, n) + trailing), like=x))
    return [g.reduce_sum(weighted, [a + 1], keepdims=False), None]


# ------------------------------------------------------------------------------- selection and placement
@register_gradient("Compress", inputs=[0])
def compress(g, op, dy):
    x, condition = op.input(0), op.input(1)
    picked = g.Transpose(g.NonZero(condition), perm=[1, 0])  # (k, 1) positions kept
    axis = op.attr("axis")
    if axis is None:
        flat_shape = g.Reshape(g.Size(x), g.ints([1]))
        flat = g.ScatterND(g.constant_of_shape(flat_shape, 0.0, like=x), picked, dy)
        return [g.reshape(flat, g.shape_of(x)), None]
    r = g.rank(x)
    a = axis % r
    perm = [a] + [d for d in range(r) if d != a]
    zeros = g.constant_of_shape(g.Gather(g.shape_of(x), g.ints(perm), axis=0), 0.0, like=x)
    placed = g.ScatterND(zeros, picked, g.transpose(dy, perm))
    return [g.transpose(placed, list(np.argsort(perm))), None]


@register_gradient("CenterCropPad", inputs=[0])
def center_crop_pad(g, op, dy):
    x = op.input(0)
    dims = _static_dims(g, x, "CenterCropPad")
    r = len(dims)
    target = [int(t) for t in _const_input(g, op, 1, "shape")]
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
def max_unpool(g, op, dy):
    # Y is zeros with X written at the flat positions I of Y, as onnxruntime (and PyTorch) do it.
    # onnx.reference instead addresses the shape inferred from the pooling attributes and places
    # that block at Y's origin; the two agree unless an explicit output_shape differs from it.
    return [g.Gather(g.reshape(dy, [-1]), op.input(1), axis=0), None, None]


@register_gradient("ReverseSequence", inputs=[0])
def reverse_sequence(g, op, dy):
    # reversing each sequence's prefix is its own inverse and its own transpose
    return [g.ReverseSequence(dy, op.input(1), batch_axis=op.attr("batch_axis", 1),
                              time_axis=op.attr("time_axis", 0)), None]


@register_gradient("Unique", inputs=[0])
def unique(g, op, dy, *_int_outputs):
    # Where x has no repeated value (slice), Y is a permutation of x and dx = dY[inverse].
    # With repeats Y is not differentiable (a perturbation changes Y's shape).
    x = op.input(0)
    axis = op.attr("axis")
    inverse = op.output(2)
    if inverse is None:
        inverse = g.op("Unique", x, outputs=4, axis=axis, sorted=op.attr("sorted", 1))[2]
    if axis is None:
        return [g.reshape(g.Gather(dy, inverse, axis=0), g.shape_of(x))]
    return [g.Gather(dy, inverse, axis=axis)]


@register_gradient("OneHot", inputs=[2])
def one_hot(g, op, dy):
    # y = off + (on - off) * mask: d off = sum(dy * (1 - mask)), d on = sum(dy * mask)
    values = op.input(2)
    mask = g.op("OneHot", op.input(0), op.input(1), g.const([0, 1], like=values), axis=op.attr("axis", -1))
    on = g.reduce_sum(g.Mul(dy, mask), None, keepdims=False)
    off = g.Sub(g.reduce_sum(dy, None, keepdims=False), on)
    return [None, None, g.Concat(g.unsqueeze(off, [0]), g.unsqueeze(on, [0]), axis=0)]


@register_gradient("Range", inputs=[0, 2])
def range_(g, op, dy):
    # y_i = start + i * delta; the element count is piecewise constant in limit (zero gradient)
    start = op.input(0)
    i = g.cast_like(g.Range(g.scalar_int(0), g.Size(dy), g.scalar_int(1)), start)
    return [g.reduce_sum(dy, None, keepdims=False), None,
            g.reduce_sum(g.Mul(dy, i), None, keepdims=False)]


def _scatter_positions(g, updates: str, indices: str, axis: int, data_dims) -> str:
    """Flat positions in data of each update element (axis coordinate taken from indices)."""
    upd_dims = _static_dims(g, updates, "Scatter")
    strides = np.cumprod((list(data_dims[1:]) + [1])[::-1])[::-1]
    grid = np.indices(upd_dims)
    base = sum(grid[d] * strides[d] for d in range(len(upd_dims)) if d != axis)
    idx = g.Cast(indices, to=TensorProto.INT64)
    return g.Add(g.Mul(idx, g.scalar_int(int(strides[axis]))), g.ints(base.astype(np.int64)))


@register_gradient("Scatter", since=9, until=10, inputs=[0, 2])
def scatter(g, op, dy):
    # The deprecated ScatterElements of opsets 9-10, which also lack GatherElements: the update
    # gradient reads dy at flat positions instead.
    data, indices, updates = op.inputs
    axis = op.attr("axis", 0) % g.rank(data)
    d_data = g.Scatter(dy, indices, g.zeros_like(updates), axis=axis)
    positions = _scatter_positions(g, updates, indices, axis, _static_dims(g, data, "Scatter"))
    return [d_data, None, g.Gather(g.reshape(dy, [-1]), positions, axis=0)]


@register_gradient("TensorScatter", inputs=[0, 1])
def tensor_scatter(g, op, dy):
    cache, update, write = op.input(0), op.input(1), op.input(2)
    mode, axis = op.attr("mode", "linear"), op.attr("axis", -2)
    dims = _static_dims(g, update, "TensorScatter")
    r = len(dims)
    a = axis % r
    d_cache = g.TensorScatter(dy, g.zeros_like(update), write, mode=mode, axis=axis)
    steps = g.ints(np.arange(dims[a]).reshape([dims[a] if d == a else 1 for d in range(r)]))
    if write is not None:
        steps = g.Add(g.reshape(write, [-1] + [1] * (r - 1)), steps)
    if mode == "circular":
        steps = g.Mod(steps, g.ints([g.shape(cache)[a]]))
    positions = g.Expand(steps, g.ints(dims))
    return [d_cache, g.GatherElements(dy, positions, axis=a), None]


# ------------------------------------------------------------------------------- sampling
@register_gradient("GridSample", since=16, inputs=[0])
def grid_sample(g, op, dy):
    # Linear in X for a fixed grid. The grid's own gradient is not computed (the schema tags it
    # non-differentiable; it is piecewise smooth for bilinear/bicubic modes).
    x, grid = op.input(0), op.input(1)
    shape = _static_dims(g, x, "GridSample")
    y_shape = _static_dims(g, dy, "GridSample")
    q, p = int(np.prod(shape[2:])), int(np.prod(y_shape[2:]))
    basis = _basis(g, x, g.dims(x, [0]), q, shape[2:])
    weights = g.reshape(g.GridSample(basis, grid, **{k: op.attr(k) for k in ("align_corners", "mode", "padding_mode")}),
                        [0, q, p])
    dx = g.MatMul(g.reshape(dy, [0, shape[1], p]), g.Transpose(weights, perm=[0, 2, 1]))
    return [g.reshape(dx, list(shape)), None]


@register_gradient("RoiAlign", since=10, inputs=[0])
def roi_align(g, op, dy):
    # mode "avg" is linear in X; each roi's weights come from RoiAlign on one identity image,
    # then roi contributions are summed into their batch entries with a one-hot matrix.
    if op.attr("mode", "avg") != "avg":
        raise GradientArgumentError("the gradient of RoiAlign is implemented for mode='avg' only")
    x, rois, batch_indices = op.inputs[:3]
    shape = _static_dims(g, x, "RoiAlign")
    y_shape = _static_dims(g, dy, "RoiAlign")
    n, c = shape[0], shape[1]
    q, p = int(np.prod(shape[2:])), int(np.prod(y_shape[2:]))
    basis = _basis(g, x, g.ints([1]), q, shape[2:])
    attrs = {k: op.attr(k) for k in ("coordinate_transformation_mode", "output_height", "output_width",
                                     "sampling_ratio", "spatial_scale")}
    weights = g.reshape(g.RoiAlign(basis, rois, g.Mul(batch_indices, g.const(0, like=batch_indices)), **attrs),
                        [0, q, p])
    per_roi = g.MatMul(g.reshape(dy, [0, c, p]), g.Transpose(weights, perm=[0, 2, 1]))  # (R, C, Q)
    owner = g.cast_like(g.Equal(g.unsqueeze(batch_indices, [0]), g.const(np.arange(n).reshape(n, 1),
                                                                           like=batch_indices)), x)  # (N, R)
    dx = g.MatMul(owner, g.reshape(per_roi, [-1, c * q]))
    return [g.reshape(dx, list(shape)), None, None]


@register_gradient("AffineGrid", inputs=[0])
def affine_grid(g, op, dy):
    # grid[n, p, :] = theta[n] @ [coords_p, 1]: dtheta = dy^T [coords, 1], with the coordinates
    # from AffineGrid itself applied to the identity transform (they do not depend on theta).
    theta, size = op.input(0), op.input(1)
    nd = g.shape(theta)[1]
    if not isinstance(nd, int):
        raise GradientArgumentError(f"the gradient of AffineGrid needs the static shape of {theta!r}")
    identity = g.const(np.eye(nd, nd + 1)[None], like=theta)
    one_size = g.Concat(g.ints([1]), g.Slice(size, g.ints([1]), g.ints([nd + 2])), axis=0)
    coords = g.reshape(g.AffineGrid(identity, one_size, align_corners=op.attr("align_corners", 0)), [1, -1, nd])
    flat = g.reshape(dy, [0, -1, nd])  # (N, P, nd)
    d_linear = g.MatMul(g.Transpose(flat, perm=[0, 2, 1]), coords)
    d_shift = g.Transpose(g.reduce_sum(flat, [1], keepdims=True), perm=[0, 2, 1])
    return [g.Concat(d_linear, d_shift, axis=2), None]


@register_gradient("Col2Im", inputs=[0])
def col2im(g, op, dy):
    # Col2Im sums blocks into an image; its adjoint extracts the blocks again (im2col), which is a
    # grouped Conv whose kernels pick one block offset each.
    x = op.input(0)
    block = [int(b) for b in _const_input(g, op, 2, "block_shape")]
    k = int(np.prod(block))
    c = _static_dims(g, x, "Col2Im")[1] // k
    kernels = np.tile(np.eye(k).reshape(k, 1, *block), (c, 1) + (1,) * len(block))
    nd = len(block)
    cols = g.Conv(dy, g.const(kernels, like=x), group=c, kernel_shape=block,
                  dilations=op.attr("dilations", [1] * nd), pads=op.attr("pads", [0] * 2 * nd),
                  strides=op.attr("strides", [1] * nd))
    return [g.reshape(cols, [0, c * k, -1]), None, None]


@register_gradient("CausalConvWithState", inputs=[0, 1, 2, 3])
def causal_conv_with_state(g, op, dy, d_present):
    # z[n,c,t] = sum_k w[c,k] p[n,c,t+k] + b[c] over p = concat(past_state, input); output =
    # act(z), present_state = the last k-1 positions of p. past_state is differentiable like the
    # input it is concatenated with (the schema tags it otherwise, as carried state).
    x, w, b, past = (op.input(i) for i in range(4))
    c, _, k = _static_dims(g, w, "CausalConvWithState")
    length = _static_dims(g, x, "CausalConvWithState")[2]
    if past is None and k > 1:
        past = g.constant_of_shape(g.Concat(g.dims(x, [0, 1]), g.ints([k - 1]), axis=0), 0.0, like=x)
        given_past = False
    else:
        given_past = past is not None
    p = g.Concat(past, x, axis=2) if k > 1 else x
    dz = dy
    if op.attr("activation", "none") in ("silu", "swish"):
        z = g.Conv(p, w, *([b] if b else []), group=c)
        s = g.Sigmoid(z)
        one = g.const(1, like=x)
        dz = g.Mul(dy, g.Mul(s, g.Add(one, g.Mul(z, g.Sub(one, s)))))
    flipped = g.Gather(w, g.ints(list(range(k - 1, -1, -1))), axis=2)
    dp = g.Conv(g.pad(dz, [0, 0, k - 1, 0, 0, k - 1]), flipped, group=c) if k > 1 else g.Mul(dz, g.reshape(w, [c, 1]))
    if k > 1 and d_present not in g.zeros:
        dp = g.Add(dp, g.pad(d_present, [0, 0, length, 0, 0, 0]))
    windows = g.Gather(p, g.ints(np.add.outer(np.arange(length), np.arange(k))), axis=2)  # (N, C, L, k)
    dw = g.reshape(g.reduce_sum(g.Mul(g.unsqueeze(dz, [3]), windows), [0, 2], keepdims=False), [c, 1, k])
    db = g.reduce_sum(dz, [0, 2], keepdims=False) if b else None
    dx = g.slice(dp, [k - 1], [k - 1 + length], [2]) if k > 1 else dp
    d_past = None
    if given_past:
        d_past = g.slice(dp, [0], [k - 1], [2]) if k > 1 else g.zeros_like(past)
    return [dx, dw, db, d_past]


# ------------------------------------------------------------------------------- spectral
def _dft_adjoint(g, dy: str, a: int, r: int, n: int, inverse: int, onesided: int, real: bool, like: str) -> str:
    """Adjoint of a length-n DFT along axis ``a`` (of rank-r tensors whose last dim is re/im).

    The DFT matrix F is complex-linear; the adjoint of x -> F x is F^H = n * IDFT (and of the
    inverse transform, DFT / n). A onesided output dropped rows of F (zero-pad dy back to n) and a
    real input keeps the real part.
    """
    if onesided:
        dy = g.pad(dy, [0] * r + [n - (n // 2 + 1) if d == a else 0 for d in range(r)])
    back = g.DFT(dy, axis=a, inverse=1 - inverse)
    back = g.Mul(back, g.const(1.0 / n if inverse else float(n), like=like))
    return g.slice(back, [0], [1], [r - 1]) if real else back


@register_gradient("DFT", since=17, inputs=[0])
def dft(g, op, dy):
    x = op.input(0)
    shape = _static_dims(g, x, "DFT")
    r = len(shape)
    if op.is_dynamic("axis"):
        raise GradientArgumentError("the gradient of DFT needs its axis input to be a constant")
    a = int(op.arg("axis").reshape(-1)[0]) % r  # type: ignore[union-attr]
    inverse, onesided = op.attr("inverse", 0), op.attr("onesided", 0)
    if inverse and onesided:
        return [_irfft_adjoint(g, op, dy, x, shape, a), None, None]
    n = int(np.asarray(_const_input(g, op, 1, "dft_length")).reshape(-1)[0]) if op.input(1) else shape[a]
    back = _dft_adjoint(g, dy, a, r, n, inverse, onesided, shape[-1] == 1, like=x)
    length = shape[a]  # undo dft_length's zero-padding or truncation of x
    if n > length:
        back = g.slice(back, [0], [length], [a])
    elif n < length:
        back = g.pad(back, [0] * r + [length - n if d == a else 0 for d in range(r)])
    return [back, None, None]


def _irfft_adjoint(g, op, dy: str, x: str, shape, a: int) -> str:
    # y = Re(IDFT(X extended by conjugate symmetry)). The adjoint of Re(IDFT) is DFT(dy) / n; the
    # extension copies bin j (conjugated) to n - j, so bins 1..n-m receive their mirror's share:
    # twice the onesided DFT of the real dy.
    r, m = len(shape), shape[a]
    n = int(np.asarray(_const_input(g, op, 1, "dft_length")).reshape(-1)[0]) if op.input(1) else 2 * (m - 1)
    if n // 2 + 1 != m:
        raise GradientArgumentError(f"the gradient of the inverse onesided DFT needs {n // 2 + 1} input bins, not {m}")
    half = g.DFT(dy, axis=a, onesided=1)
    weights = np.where((np.arange(m) >= 1) & (np.arange(m) <= n - m), 2.0, 1.0) / n
    return g.Mul(half, g.const(weights.reshape([m] + [1] * (r - 1 - a)), like=x))


@register_gradient("STFT", since=17, inputs=[0, 2])
def stft(g, op, dy):
    # y[b, f] = DFT(signal[b, f*step : f*step + n] * window): frames are gathered, windowed and
    # transformed; the adjoint transforms back, and overlap-adds the frames into the signal.
    signal, window = op.input(0), op.input(2)
    batch, length, parts = _static_dims(g, signal, "STFT")
    step = int(np.asarray(_const_input(g, op, 1, "frame_step")).reshape(-1)[0])
    if window is not None:
        n = _static_dims(g, window, "STFT")[0]
    else:
        n = int(np.asarray(_const_input(g, op, 3, "frame_length")).reshape(-1)[0])
    count = (length - n) // step + 1
    positions = np.add.outer(np.arange(count) * step, np.arange(n))  # (frames, n)
    frames = g.Gather(signal, g.ints(positions), axis=1)  # (B, F, n, parts)
    d_windowed = _dft_adjoint(g, dy, 2, 4, n, 0, op.attr("onesided", 1), parts == 1, like=signal)
    d_window = None
    if window is not None:
        d_window = g.reduce_sum(g.Mul(d_windowed, frames), [0, 1, 3], keepdims=False)
        d_windowed = g.Mul(d_windowed, g.reshape(window, [1, 1, n, 1]))
    per_position = g.transpose(d_windowed, [1, 2, 0, 3])  # (F, n, B, parts)
    summed = g.scatter_nd_add(g.ints([length, batch, parts]), g.ints(positions[..., None]), per_position)
    return [g.transpose(summed, [1, 0, 2]), None, d_window, None]


# ------------------------------------------------------------------------------- quantization
@register_gradient("DequantizeLinear", since=10, inputs=[1])
def dequantize_linear(g, op, dy):
    # y = (x - zero_point) * scale: linear in the float scale (x and zero_point are integers)
    x, scale, zero_point = op.input(0), op.input(1), op.input(2)
    if op.attr("block_size", 0):
        raise GradientArgumentError("the gradient of blocked DequantizeLinear (block_size) is not supported")
    r = g.rank(x)
    axis = op.attr("axis", 1) % max(r, 1)
    per_tensor = g.rank(scale) == 0 or (g.shape(scale) == (1,) and g.shape(x)[axis] != 1)
    centered = g.Cast(x, to=g.dtype(dy))
    if zero_point is not None:
        zp = g.Cast(zero_point, to=g.dtype(dy))
        centered = g.Sub(centered, zp if per_tensor else g.reshape(zp, [-1] + [1] * (r - 1 - axis)))
    product = g.Mul(dy, centered)
    if per_tensor:
        d = g.reduce_sum(product, None, keepdims=False)
        d = g.reshape(d, [1]) if g.rank(scale) else d
    else:
        d = g.reduce_sum(product, [a for a in range(r) if a != axis], keepdims=False)
    return [None, g.cast_like(d, scale), None]


@register_gradient("DynamicQuantizeLinear", inputs=[0])
def dynamic_quantize_linear(g, op, _dy, d_scale, _d_zero_point):
    # y_scale = (max(0, max x) - min(0, min x)) / 255: the gradient reaches the extreme elements
    # (split evenly between ties) when they lie beyond 0. y and y_zero_point are integers.
    x = op.input(0)
    zero, one = g.const(0, like=x), g.const(1, like=x)

    def extreme(reduce_op: str, beyond) -> str:
        top = g.reduce(reduce_op, x, None, keepdims=True)
        hit = g.cast_like(g.And(g.Equal(x, top), beyond(top, zero)), x)
        return g.Div(hit, g.Max(g.reduce_sum(hit, None, keepdims=True), one))

    per_unit = g.Div(d_scale, g.const(255.0, like=x))
    return [g.Mul(per_unit, g.Sub(extreme("ReduceMax", g.Greater), extreme("ReduceMin", g.Less)))]


not_supported("DeformConv", "no rule yet (the offset and mask gradients need bilinear sampling derivatives)")
not_supported("LinearAttention", "its definition is a recurrence (a Scan over time): a later issue, with control flow")
not_supported("SwiGLU", "opset 28, which onnxruntime 1.32 cannot run, so no rule could be verified numerically")
