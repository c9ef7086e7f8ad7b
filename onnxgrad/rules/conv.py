"""Convolution: Conv and ConvTranspose.

Both are linear in each operand, so every gradient is again a convolution:

* Conv, input:   ``dx = ConvTranspose(dy, W)`` with the forward strides, dilations, pads and
  group; when the strides leave a remainder at the end of x, ``output_padding`` restores it
  (symbolic spatial dims: overshoot, then Slice to Shape(x)). At unit strides it is emitted as
  the equivalent Conv with a flipped kernel (see :func:`_transposed_conv`).
* ConvTranspose, input: ``dx = Conv(dy, W)`` (the exact adjoint, same geometry).
* weights (both): a correlation of the input with the output gradient, as im2col: the taps
  the kernel reads, stacked by unit-step Slices of a strided view, times the output gradient
  in one Gemm (a batched MatMul over groups). See :func:`weight_grad`. Tiny and depthwise
  problems use one Conv with dy as its kernel instead (fewer nodes; faster for depthwise).
* bias: the sum of dy over batch and spatial axes.

Besides Conv and ConvTranspose only layout ops (Reshape, Transpose, Slice, Pad, Gather, Split,
Concat, Flatten), Gemm/MatMul and ReduceSum are emitted, all differentiable, so second
derivatives work (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient

_BIG = 2**62  # "to the end" for Slice


@dataclass
class Geometry:
    """Per spatial axis: kernel, strides, dilations and the begin/end pads actually applied."""

    kernel: List[int]
    strides: List[int]
    dilations: List[int]
    begin: List[int]
    end: List[int]

    @property
    def n(self) -> int:
        return len(self.kernel)

    @property
    def extent(self) -> List[int]:
        """Span of one dilated window: (k - 1) * d + 1."""
        return [(k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations)]


def spatial(g: Emitter, name: str) -> Optional[List[int]]:
    """Static spatial dims (axes 2..) of ``name``, or None when any is unknown."""
    s = g.shape(name)
    if s is None or any(not isinstance(d, int) for d in s[2:]):
        return None
    return [d for d in s[2:] if isinstance(d, int)]


def kernel_of(g: Emitter, op: Op, w: Optional[str]) -> List[int]:
    """kernel_shape attribute, else the weight's static spatial dims."""
    k = op.attr("kernel_shape")
    if k:
        return list(k)
    ws = spatial(g, w) if w else None
    if ws is None:
        raise GradientArgumentError(
            f"{op.op_type} node {op.name!r}: the kernel shape is unknown (no kernel_shape attribute "
            "and the weight's shape is not static)")
    return ws


def same_pads(auto_pad: str, in_sizes: Sequence[int], out_sizes: Sequence[int], strides: Sequence[int],
              extent: Sequence[int]) -> tuple:
    """Begin/end pads of SAME_UPPER/SAME_LOWER: the total is split with the odd one at the end (UPPER)."""
    begin, end = [], []
    for i, o, s, e in zip(in_sizes, out_sizes, strides, extent):
        total = max(0, (o - 1) * s + e - i)
        small = total // 2
        b = small if auto_pad == "SAME_UPPER" else total - small
        begin.append(b)
        end.append(total - b)
    return begin, end


def window_geometry(g: Emitter, op: Op, x: str, kernel: List[int]) -> Geometry:
    """Geometry of a Conv or pooling node, pads resolved (auto_pad needs static spatial dims)."""
    n = len(kernel)
    strides = list(op.attr("strides") or [1] * n)
    dilations = list(op.attr("dilations") or [1] * n)
    auto_pad = op.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto_pad in ("NOTSET", ""):
        pads = list(op.attr("pads") or [0] * (2 * n))
        return Geometry(kernel, strides, dilations, pads[:n], pads[n:])
    if auto_pad == "VALID":
        return Geometry(kernel, strides, dilations, [0] * n, [0] * n)
    in_sizes = spatial(g, x)
    if in_sizes is None:
        raise GradientArgumentError(
            f"{op.op_type} node {op.name!r}: auto_pad={auto_pad} with symbolic spatial dims is not "
            "supported (the pads depend on the input size); give the input a static shape")
    out_sizes = [-(-i // s) for i, s in zip(in_sizes, strides)]
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    begin, end = same_pads(auto_pad, in_sizes, out_sizes, strides, extent)
    return Geometry(kernel, strides, dilations, begin, end)


def _spatial_axes(n: int) -> List[int]:
    return list(range(2, 2 + n))


def _crop_to(g: Emitter, t: str, like: str, n: int) -> str:
    """Slice the spatial axes of ``t`` down to the (runtime) spatial dims of ``like`` (a dynamic
    Slice: the op table refuses it before opset 10, where the sizes must be static)."""
    ends = g.Slice(g.shape_of(like), g.ints([2]), g.ints([2 + n]), g.ints([0]))
    return g.Slice(t, g.ints([0] * n), ends, g.ints(_spatial_axes(n)))


def input_grad_transposed(g: Emitter, dy: str, w: str, geo: Geometry, group: int, x: str, y: str) -> str:
    """dx of ``y = Conv(x, w)``: ConvTranspose of dy, output sized exactly like x."""
    n = geo.n
    xs, ys = spatial(g, x), spatial(g, y)
    if xs is not None and ys is not None:
        # What the stride skipped at the end of x comes back as output_padding (always < stride).
        extra = [d - ((o - 1) * s + e - b - p) for d, o, s, e, b, p in
                 zip(xs, ys, geo.strides, geo.extent, geo.begin, geo.end)]
        return _transposed_conv(g, dy, w, group, x, geo.extent, strides=geo.strides, dilations=geo.dilations,
                                pads=geo.begin + geo.end, output_padding=extra if any(extra) else None)
    # Symbolic sizes: overshoot (no end pad, maximal output_padding) and crop at run time.
    full = _transposed_conv(g, dy, w, group, x, geo.extent, strides=geo.strides, dilations=geo.dilations,
                               pads=geo.begin + [0] * n,
                               output_padding=[s - 1 for s in geo.strides] if any(s > 1 for s in geo.strides) else None)
    return _crop_to(g, full, x, n)


def _transposed_conv(g: Emitter, dy: str, w: str, group: int, x: str, extent: List[int], **attrs: Any) -> str:
    """ConvTranspose(dy, w, group) in the form that runs fastest and that every runtime evaluates right.

    At unit strides it is a Conv with the kernel transposed per group and flipped
    (:func:`_adjoint_kernel`, weight-sized work that runtimes fold when w is constant), padded by
    extent - 1 - pad: onnxruntime's Conv is several times faster than its ConvTranspose.
    Otherwise a ConvTranspose; onnx.reference's grouped ConvTranspose slices the weight by output
    instead of input channels, right only for depthwise weights (M == C, one channel per group),
    so other groupings are one ConvTranspose per group between a Split of dy and w and a Concat.
    """
    ws, xs = g.shape(w), g.shape(x)
    static = g.static_shape(w)
    flipped = [e - 1 - p for e, p in zip(extent + extent, attrs["pads"])]
    if static is not None and all(s == 1 for s in attrs["strides"]) and not attrs.get("output_padding") and \
            min(flipped) >= 0:
        return g.Conv(dy, _adjoint_kernel(g, w, list(static), group), group=group, dilations=attrs["dilations"],
                      pads=flipped)
    if group == 1 or (ws is not None and xs is not None and ws[1] == 1 and ws[0] == xs[1]):
        return g.ConvTranspose(dy, w, group=group, **attrs)
    if static is None:
        raise GradientArgumentError("the input gradient of a grouped Conv needs the weight's static shape")
    sizes = [static[0] // group] * group
    parts = [g.ConvTranspose(d, k, **attrs) for d, k in zip(g.split(dy, sizes, axis=1), g.split(w, sizes, axis=0))]
    return g.Concat(*parts, axis=1)


def _adjoint_kernel(g: Emitter, w: str, shape: List[int], group: int) -> str:
    """Kernel of the Conv equal to ConvTranspose(., w, group) at unit strides: w [M, C/g, k...]
    as [C, M/g, k...] (input and output channels swapped within each group), every spatial axis
    reversed (Gather with reversed indices: works at every opset)."""
    m, cg, kernel = shape[0], shape[1], shape[2:]
    n = len(kernel)
    grouped = g.reshape(w, [group, m // group, cg] + kernel)
    swapped = g.reshape(g.transpose(grouped, [0, 2, 1] + [3 + i for i in range(n)]), [group * cg, m // group] + kernel)
    for i, k in enumerate(kernel):
        if k > 1:
            swapped = g.Gather(swapped, g.ints(range(k - 1, -1, -1)), axis=2 + i)
    return swapped


def _channels_first(g: Emitter, t: str) -> str:
    """[N, C, S...] -> [C, N, S...]: a Reshape when N is 1 (no data moves), else a Transpose."""
    s = g.static_shape(t)
    if s is not None and s[0] == 1:
        return g.reshape(t, [s[1], 1] + list(s[2:]))
    return g.transpose(t, [1, 0] + _spatial_axes(len(g.shape(t) or ()) - 2))


def _taps_static(g: Emitter, inp: str, geo: Geometry, in_sizes: List[int], out_sizes: List[int]) -> List[str]:
    """The window taps of ``inp`` [A, N, P...] (channels first), each [A, 1, N, Q...], in row-major
    kernel order: the positions o*s + j*d the kernel reads (strides skip the rest), by unit-step
    Slices at unit strides and Gathers otherwise (both at every opset). Each axis is first padded
    (or cut) to what the windows reach."""
    n = geo.n
    starts_q, spans = [], []
    for i in range(n):
        offsets = [j * geo.dilations[i] for j in range(geo.kernel[i])]
        starts_q.append(offsets)
        spans.append((max(offsets) // geo.strides[i] + out_sizes[i]) * geo.strides[i])
    ends = [span - b - size for span, b, size in zip(spans, geo.begin, in_sizes)]
    if any(e < 0 for e in ends):  # the last window ends before the input: its tail is never read
        inp = g.slice(inp, [0] * n, [size + min(e, 0) for size, e in zip(in_sizes, ends)], _spatial_axes(n))
    if any(geo.begin) or any(e > 0 for e in ends):
        inp = g.pad(inp, [0, 0] + list(geo.begin) + [0, 0] + [max(e, 0) for e in ends])
    first = (g.shape(inp) or [0])[0]
    viewed = g.reshape(inp, [first if isinstance(first, int) else 0, 1, -1] + spans)  # [A, 1, N, P...]
    if all(st == 1 for st in geo.strides):
        taps = []
        for tap in np.ndindex(*geo.kernel):
            starts = [starts_q[i][j] for i, j in enumerate(tap)]
            stops = [b + size for b, size in zip(starts, out_sizes)]
            full = all(b == 0 and e == sp for b, e, sp in zip(starts, stops, spans))
            taps.append(viewed if full else g.slice(viewed, starts, stops, [3 + i for i in range(n)]))
        return taps
    # Strided: every tap picks positions off + s*o along each axis by a Gather. Gathering along
    # the last axis moves one element per index (slow), so that axis is picked on a transposed
    # copy, where it gathers whole rows, once per distinct offset of the last axis.
    last, rank = n - 1, 3 + n

    def picks(i: int, off: int) -> str:
        return g.ints(range(off, off + geo.strides[i] * out_sizes[i], geo.strides[i]))

    swap = list(range(rank - 2)) + [rank - 1, rank - 2]
    flipped = g.transpose(viewed, swap) if geo.strides[last] > 1 else viewed
    columns = {}
    for off in starts_q[last]:
        if geo.strides[last] > 1:
            columns[off] = g.transpose(g.Gather(flipped, picks(last, off), axis=rank - 2), swap)
        else:
            columns[off] = g.slice(viewed, [off], [off + out_sizes[last]], [rank - 1])
    taps = []
    for tap in np.ndindex(*geo.kernel):
        t = columns[starts_q[last][tap[last]]]
        for i in range(n - 1):
            t = g.Gather(t, picks(i, starts_q[i][tap[i]]), axis=3 + i)
        taps.append(t)
    return taps


def _taps_dynamic(g: Emitter, inp: str, dout: str, geo: Geometry, end_pads: Sequence[int]) -> List[str]:
    """:func:`_taps_static` for spatial sizes known only at run time: strided Slices (opset 10)
    whose ends follow the run-time output size Q: offset + (Q - 1) * s + 1 (the op table refuses
    them before opset 10, where the sizes must be static)."""
    n = geo.n
    padded = g.pad(inp, [0, 0] + list(geo.begin) + [0, 0] + list(end_pads)) if any(geo.begin) or any(end_pads) else inp
    viewed = g.unsqueeze(padded, [1])
    one = g.ints([1] * n)
    span = g.Add(g.Mul(g.Sub(g.dims(dout, _spatial_axes(n)), one), g.ints(geo.strides)), one)
    taps = []
    for tap in np.ndindex(*geo.kernel):
        offsets = [j * d for j, d in zip(tap, geo.dilations)]
        taps.append(g.Slice(viewed, g.ints(offsets), g.Add(span, g.ints(offsets)), g.ints([3 + i for i in range(n)]),
                            g.ints(geo.strides)))
    return taps


def weight_grad(g: Emitter, inp: str, dout: str, geo: Geometry, group: int, end_pads: Sequence[int],
                weight: str) -> str:
    """Correlation of ``inp`` [N, A, P...] with ``dout`` [N, B, Q...]: dW [B, A/group, k...] (``weight``'s shape).

    dW[b, a, j] = sum_n sum_q inp_padded[n, a, q*s + j*d] dout[n, b, q], as im2col: the taps of
    every window (only the positions the kernel reads; strides skip the rest) stacked into
    cols [A*k, N*Q], then one Gemm with dout [B, N*Q] (one batched MatMul over the groups), or
    one Gemm per tap when positions outnumber the rows of cols. Both operands keep N*Q as their
    last axis, so no large transpose is needed.
    """
    in_shape, out_shape = g.static_shape(inp), g.static_shape(dout)
    if in_shape is not None and out_shape is not None:
        elements = in_shape[1] * int(np.prod(geo.kernel)) * int(np.prod(out_shape)) // out_shape[1]
        # depthwise: one Conv of x with dy as the kernel, grouped per channel (ShuffleNet 7 % faster
        # than stacking taps for a batched matrix-vector MatMul; 20 % slower for other groupings)
        depthwise = group == in_shape[1] == out_shape[1]
        if depthwise or elements < _IM2COL_MIN_ELEMENTS and elements * out_shape[1] // group < _CONV_MAX_MACS:
            return _weight_grad_conv(g, inp, dout, geo, group, end_pads, list(in_shape), list(out_shape))
    in_sizes, out_sizes = spatial(g, inp), spatial(g, dout)
    inp_cf = _channels_first(g, inp)
    if in_sizes is not None and out_sizes is not None:
        taps = _taps_static(g, inp_cf, geo, in_sizes, out_sizes)
    else:
        taps = _taps_dynamic(g, inp_cf, dout, geo, end_pads)
    if group == 1:
        dout2 = g.Flatten(_channels_first(g, dout), axis=1)  # [B, N*Q]
        in_channels = (g.shape(inp) or (None, None))[1]
        positions = g.static_shape(dout)
        if len(taps) > 1 and positions is not None and isinstance(in_channels, int) and in_channels >= 32 and \
                int(np.prod(positions)) // positions[1] > in_channels * len(taps):
            # many positions, enough channels: one Gemm per tap is faster than copying all taps into
            # one operand (1.5x at 64 channels, 56x56; slower at 256 channels, 14x14, or 3 channels)
            per_tap = [g.unsqueeze(g.gemm(dout2, g.Flatten(t, axis=1), trans_b=True), [2]) for t in taps]
            return g.reshape(g.Concat(*per_tap, axis=2), [0, 0] + list(geo.kernel))
        cols = g.Flatten(g.Concat(*taps, axis=1) if len(taps) > 1 else taps[0], axis=2)  # [A*k, N*Q]
        return g.reshape(g.gemm(dout2, cols, trans_b=True), [0, -1] + list(geo.kernel))  # [B, A*k]
    cols = g.Flatten(g.Concat(*taps, axis=1) if len(taps) > 1 else taps[0], axis=2)  # [A*k, N*Q]
    shape = g.static_shape(weight)
    if shape is None:
        raise GradientArgumentError("the weight gradient of a grouped convolution needs the weight's static shape")
    b, a_per_group, k = shape[0], shape[1], int(np.prod(geo.kernel))
    # one Gemm per group on contiguous row blocks of dout [B, N*Q] and cols [A*k, N*Q]: both keep
    # N*Q last, so nothing is transposed (a batched MatMul needs one operand with N*Q first: that
    # Transpose of dy was 18 % of ShuffleNet's step)
    dout2 = g.Flatten(_channels_first(g, dout), axis=1)
    blocks = zip(g.split(dout2, [b // group] * group, axis=0), g.split(cols, [a_per_group * k] * group, axis=0))
    dw = g.Concat(*[g.gemm(d, c, trans_b=True) for d, c in blocks], axis=0)  # [B, A/group*k]
    return g.reshape(dw, list(shape))


#: Below this many im2col elements (A * k * N * Q) the weight gradient is one Conv instead: a few
#: nodes rather than one Slice per tap, whose per-node cost dominates on tiny tensors...
_IM2COL_MIN_ELEMENTS = 1 << 15
#: ...unless it has this many multiply-adds (A * k * N * Q * B / group) or more: onnxruntime runs
#: that Conv (a batch of A single-channel images, B kernels of dy's spatial size) 10-15x slower
#: than the Gemm (ResNet-50's 1x1 convs at 7x7: 15 ms against 1 ms).
_CONV_MAX_MACS = 1 << 20


def _weight_grad_conv(g: Emitter, inp: str, dout: str, geo: Geometry, group: int, end_pads: Sequence[int],
                      in_shape: List[int], out_shape: List[int]) -> str:
    """:func:`weight_grad` for small static shapes, as one Conv whose batch is the A input channels
    (per group), whose channels are the N batch entries and whose kernel is dout, with the forward
    dilations as strides and the forward strides as dilations; the result is cut to k taps."""
    n = geo.n
    perm = [1, 0] + _spatial_axes(n)
    if group == 1:
        inp_t, dout_t = g.transpose(inp, perm), g.transpose(dout, perm)
    else:  # channels per group move next to the batch
        (batch, a), (b, q) = in_shape[:2], (out_shape[1], out_shape[2:])
        after = [3 + i for i in range(n)]
        grouped = g.transpose(g.reshape(inp, [batch, group, a // group] + in_shape[2:]), [2, 1, 0] + after)
        inp_t = g.reshape(grouped, [a // group, group * batch] + in_shape[2:])
        per_group = g.transpose(g.reshape(dout, [batch, group, b // group] + q), [1, 2, 0] + after)
        dout_t = g.reshape(per_group, [b, batch] + q)
    corr = g.Conv(inp_t, dout_t, strides=geo.dilations, dilations=geo.strides, group=group,
                  pads=list(geo.begin) + list(end_pads))
    return g.slice(g.transpose(corr, perm), [0] * n, geo.kernel, _spatial_axes(n))


def _bias_grad(g: Emitter, dy: str, n: int) -> str:
    return g.reduce_sum(dy, [0] + _spatial_axes(n), keepdims=False)


@register_gradient("Conv", inputs=(0, 1, 2))
def conv_grad(g: Emitter, op: Op, dy: str) -> list:
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    group = op.attr("group", 1)
    geo = window_geometry(g, op, x, kernel_of(g, op, w))
    dx = input_grad_transposed(g, dy, w, geo, group, x, y)
    dw = weight_grad(g, x, dy, geo, group, geo.end, w)
    return [dx, dw, _bias_grad(g, dy, geo.n) if b else None]


def _convtranspose_geometry(g: Emitter, op: Op, x: str, w: str, y: str) -> tuple:
    """(geometry, end pads of the adjoint Conv) of ``y = ConvTranspose(x, w)``.

    y is the full transposed convolution (length (I-1)*s + extent) cropped by ``begin`` at the
    start and ending after L samples; the adjoint Conv pads dy by ``begin`` and by
    ``full - begin - L`` at the end (negative: dy's tail is never reached and is cut).
    """
    kernel = kernel_of(g, op, w)
    n = len(kernel)
    strides = list(op.attr("strides") or [1] * n)
    dilations = list(op.attr("dilations") or [1] * n)
    out_pad = list(op.attr("output_padding") or [0] * n)
    auto_pad = op.attr("auto_pad", "NOTSET") or "NOTSET"
    extent = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if not op.attr("output_shape") and auto_pad in ("NOTSET", "", "VALID"):
        pads = list(op.attr("pads") or [0] * (2 * n)) if auto_pad != "VALID" else [0] * (2 * n)
        geo = Geometry(kernel, strides, dilations, pads[:n], pads[n:])
        return geo, [e - p for e, p in zip(pads[n:], out_pad)]
    xs, ys = spatial(g, x), spatial(g, y)
    if xs is None or ys is None:
        raise GradientArgumentError(
            f"ConvTranspose node {op.name!r}: output_shape/auto_pad need static spatial shapes to be differentiated")
    full = [(i - 1) * s + e for i, s, e in zip(xs, strides, extent)]
    total = [f + p - size for f, p, size in zip(full, out_pad, ys)]
    # SAME_UPPER puts the odd pad at the end; SAME_LOWER and an explicit output_shape at the start.
    begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    geo = Geometry(kernel, strides, dilations, begin, [t - b for t, b in zip(total, begin)])
    return geo, [f - b - size for f, b, size in zip(full, begin, ys)]


@register_gradient("ConvTranspose", inputs=(0, 1, 2))
def convtranspose_grad(g: Emitter, op: Op, dy: str) -> list:
    x, w, b, y = op.inputs[0], op.inputs[1], op.input(2), op.outputs[0]
    group = op.attr("group", 1)
    geo, adj_end = _convtranspose_geometry(g, op, x, w, y)
    n = geo.n
    dy_used = dy
    if any(e < 0 for e in adj_end):
        dy_used = g.slice(dy, [0] * n, [e if e < 0 else _BIG for e in adj_end], _spatial_axes(n))
    end = [max(e, 0) for e in adj_end]
    dx = g.Conv(dy_used, w, strides=geo.strides, dilations=geo.dilations, group=group, pads=geo.begin + end)
    dw = weight_grad(g, dy, x, geo, group, end, w)
    return [dx, dw, _bias_grad(g, dy, n) if b else None]
