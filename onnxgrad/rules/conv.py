"""Convolution: Conv and ConvTranspose.

Both are linear in each operand, so every gradient is again a convolution:

* Conv, input:   ``dx = ConvTranspose(dy, W)`` with the forward strides, dilations, pads and
  group; when the strides leave a remainder at the end of x, ``output_padding`` restores it
  (symbolic spatial dims: overshoot, then Slice to Shape(x)). Groups other than depthwise are
  one ConvTranspose per group (see :func:`_grouped_transposed`).
* ConvTranspose, input: ``dx = Conv(dy, W)`` (the exact adjoint, same geometry).
* weights (both): a correlation of the input with the output gradient, computed as one Conv
  whose "batch" is the input channels and whose "channels" are the batch (strides and
  dilations swap roles); groups become Conv groups. See :func:`weight_grad`.
* bias: the sum of dy over batch and spatial axes.

Besides Conv and ConvTranspose only layout ops (Reshape, Transpose, Slice, Split, Concat) and
ReduceSum are emitted, all differentiable, so second derivatives work (tested).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

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
    return [int(d) for d in s[2:]]


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
    """Slice the spatial axes of ``t`` down to the (runtime) spatial dims of ``like``."""
    if g.opset < 10:
        raise GradientArgumentError("this gradient needs static spatial shapes below opset 10 (dynamic Slice)")
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
        dx = _grouped_transposed(g, dy, w, group, x, strides=geo.strides, dilations=geo.dilations,
                                 pads=geo.begin + geo.end, output_padding=extra if any(extra) else None)
        g.set_info(dx, g.dtype(x), g.shape(x))
        return dx
    # Symbolic sizes: overshoot (no end pad, maximal output_padding) and crop at run time.
    full = _grouped_transposed(g, dy, w, group, x, strides=geo.strides, dilations=geo.dilations,
                               pads=geo.begin + [0] * n,
                               output_padding=[s - 1 for s in geo.strides] if any(s > 1 for s in geo.strides) else None)
    return _crop_to(g, full, x, n)


def _grouped_transposed(g: Emitter, dy: str, w: str, group: int, x: str, **attrs) -> str:
    """ConvTranspose(dy, w, group) that onnx.reference evaluates correctly.

    onnx.reference's grouped ConvTranspose slices the weight by output instead of input channels
    and writes one output channel per group: right only for depthwise weights (M == C, one
    channel per group). Any other grouping is emitted as one ConvTranspose per group between a
    Split of dy and w and a Concat (the same arithmetic as the grouped op).
    """
    ws, xs = g.shape(w), g.shape(x)
    m = ws[0] if ws else None
    if group == 1 or (ws is not None and xs is not None and ws[1] == 1 and m == xs[1]):
        return g.ConvTranspose(dy, w, group=group, **attrs)
    if not isinstance(m, int):
        raise GradientArgumentError("the input gradient of a grouped Conv needs the weight's static output-channel dim")
    sizes = [m // group] * group
    parts = [g.ConvTranspose(d, k, **attrs) for d, k in zip(g.split(dy, sizes, axis=1), g.split(w, sizes, axis=0))]
    return g.Concat(*parts, axis=1)


def weight_grad(g: Emitter, inp: str, dout: str, geo: Geometry, group: int, end_pads: Sequence[int],
                out_channels: Optional[int]) -> str:
    """Correlation of ``inp`` [N, A, P...] with ``dout`` [N, B, Q...]: dW [B, A/group, k...].

    dW[b, a, j] = sum_n sum_o inp_padded[n, a, o*s + j*d] dout[n, b, o]: a Conv whose batch is
    the A input channels (per group), whose channels are the N batch entries, whose kernel is
    dout, with the forward dilations as strides and the forward strides as dilations. The result
    holds at least k taps per axis and is cut to k.
    """
    n = geo.n
    perm = [1, 0] + _spatial_axes(n)
    if group == 1:
        inp_t = g.transpose(inp, perm)
        dout_t = g.transpose(dout, perm)
    else:
        # channels per group move next to the batch (one -1 per Reshape; spatial dims copied)
        if not isinstance(out_channels, int):
            raise GradientArgumentError("the weight gradient of a grouped convolution needs static output channels")
        spatial_t = [i + 1 for i in _spatial_axes(n)]
        grouped = g.reshape(inp, _keep_spatial(g, [0, group, -1], inp, n))
        inp_t = g.reshape(g.transpose(grouped, [2, 1, 0] + spatial_t), _keep_spatial(g, [0, -1], inp, n))
        gd = g.reshape(dout, _keep_spatial(g, [0, group, out_channels // group], dout, n))
        dout_t = g.reshape(g.transpose(gd, [1, 2, 0] + spatial_t), _keep_spatial(g, [out_channels, -1], dout, n))
    corr = g.Conv(inp_t, dout_t, strides=geo.dilations, dilations=geo.strides, group=group,
                  pads=list(geo.begin) + list(end_pads))
    dw = g.transpose(corr, perm)
    return g.slice(dw, [0] * n, geo.kernel, _spatial_axes(n))


def _keep_spatial(g: Emitter, lead: List[int], t: str, n: int):
    """Reshape target ``lead`` + the spatial dims of ``t``: a list when static, else a tensor."""
    dims = spatial(g, t)
    if dims is not None:
        return lead + dims
    return g.Concat(g.ints(lead), g.dims(t, _spatial_axes(n)), axis=0)


def _dim0(g: Emitter, w: str) -> Optional[int]:
    s = g.shape(w)
    return s[0] if s and isinstance(s[0], int) else None


def _bias_grad(g: Emitter, dy: str, n: int) -> str:
    return g.reduce_sum(dy, [0] + _spatial_axes(n), keepdims=False)


@register_gradient("Conv", inputs=(0, 1, 2))
def conv_grad(g: Emitter, op: Op, dy: str) -> list:
    x, w, b, y = op.input(0), op.input(1), op.input(2), op.output(0)
    group = op.attr("group", 1)
    geo = window_geometry(g, op, x, kernel_of(g, op, w))
    dx = input_grad_transposed(g, dy, w, geo, group, x, y)
    dw = weight_grad(g, x, dy, geo, group, geo.end, _dim0(g, w))
    g.set_info(dw, g.dtype(w), g.shape(w))
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
    total = [f + p - l for f, p, l in zip(full, out_pad, ys)]
    # SAME_UPPER puts the odd pad at the end; SAME_LOWER and an explicit output_shape at the start.
    begin = [t // 2 if auto_pad == "SAME_UPPER" else t - t // 2 for t in total]
    geo = Geometry(kernel, strides, dilations, begin, [t - b for t, b in zip(total, begin)])
    return geo, [f - b - l for f, b, l in zip(full, begin, ys)]


@register_gradient("ConvTranspose", inputs=(0, 1, 2))
def convtranspose_grad(g: Emitter, op: Op, dy: str) -> list:
    x, w, b, y = op.input(0), op.input(1), op.input(2), op.output(0)
    group = op.attr("group", 1)
    geo, adj_end = _convtranspose_geometry(g, op, x, w, y)
    n = geo.n
    dy_used = dy
    if any(e < 0 for e in adj_end):
        dy_used = g.slice(dy, [0] * n, [e if e < 0 else _BIG for e in adj_end], _spatial_axes(n))
    end = [max(e, 0) for e in adj_end]
    dx = g.Conv(dy_used, w, strides=geo.strides, dilations=geo.dilations, group=group, pads=geo.begin + end)
    g.set_info(dx, g.dtype(x), g.shape(x))
    dw = weight_grad(g, dy, x, geo, group, end, _dim0(g, w))
    g.set_info(dw, g.dtype(w), g.shape(w))
    return [dx, dw, _bias_grad(g, dy, n) if b else None]
