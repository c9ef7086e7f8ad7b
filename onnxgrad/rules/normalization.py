"""Normalization layers.

Each rule recomputes the statistics it needs from the forward input with primitive ops, so the
backward graph is differentiable again (LayerNormalization reads its saved Mean/InvStdDev when
it has them in x's own type). For xhat = (x - mean) * inv over ``axes`` (inv =
1/sqrt(var + eps)) the input gradient is the textbook

    dx = inv * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


def _mean(g: Emitter, x: str, axes: Sequence[int]) -> str:
    return g.reduce("ReduceMean", x, axes, keepdims=True)


def _standardize(g: Emitter, x: str, axes: Sequence[int], eps: float) -> Tuple[str, str, str]:
    """(x - mean, inv, xhat) over ``axes``, keepdims, with inv = 1/sqrt(biased var + eps)."""
    xc = g.Sub(x, _mean(g, x, axes))
    inv = g.Reciprocal(g.Sqrt(g.Add(_mean(g, g.Mul(xc, xc), axes), g.const(eps, like=x))))
    return xc, inv, g.Mul(xc, inv)


def _standardized_grad(g: Emitter, dxhat: str, xhat: str, inv: str, axes: Sequence[int]) -> str:
    centered = g.Sub(g.Sub(dxhat, _mean(g, dxhat, axes)), g.Mul(xhat, _mean(g, g.Mul(dxhat, xhat), axes)))
    return g.Mul(inv, centered)


def _count(g: Emitter, x: str, axes: Sequence[int]) -> str:
    """Number of elements of ``x`` each reduction over ``axes`` sees, as a scalar of x's dtype."""
    shape = g.shape(x)
    dims = [shape[a] for a in axes] if shape is not None else [None]
    sizes = [d for d in dims if isinstance(d, int)]
    if len(sizes) == len(dims):
        return g.const(float(np.prod(sizes)), like=x)
    return g.cast_like(g.reduce("ReduceProd", g.dims(x, axes), [0], keepdims=False), x)


def _per_channel(g: Emitter, p: str, x: str) -> str:
    """A (C,) parameter viewed as (1, C, 1, ...) against x (N, C, ...)."""
    return g.reshape(p, [1, -1] + [1] * (g.rank(x) - 2))


def _norm_axes(g: Emitter, x: str, first: int) -> List[int]:
    rank = g.rank(x)
    return list(range(first % rank, rank))


# ---------------------------------------------------------------------------- BatchNormalization
@register_gradient("BatchNormalization", since=14, inputs=(0, 1, 2, 3, 4))
def batch_normalization(g: Emitter, op: Op, dy: str, d_running_mean: Optional[str] = None,
                        d_running_var: Optional[str] = None) -> List[Optional[str]]:
    """With ``training_mode`` the batch statistics, else the running ones (see below)."""
    if op.attr("training_mode", 0):
        return _batch_norm_training(g, op, dy, d_running_mean, d_running_var)
    return batch_normalization_inference(g, op, dy)


@register_gradient("BatchNormalization", until=13, inputs=(0, 1, 2, 3, 4))
def batch_normalization_inference(g: Emitter, op: Op, dy: str, *unused_training_outputs: Optional[str]
                                  ) -> List[Optional[str]]:
    """Y normalized with the running statistics. Before opset 14 the extra outputs are the
    deprecated training statistics, which runtimes do not compute in inference; only Y is
    differentiated there."""
    x, scale, bias, mean, var = op.inputs[:5]
    eps = op.attr("epsilon", 1e-5)
    if op.has_attr("spatial") and op.attr("spatial") == 0:
        raise GradientArgumentError("BatchNormalization with spatial=0 (opset 7-8) is not supported")
    axes = [0] + list(range(2, g.rank(x)))
    inv = g.Reciprocal(g.Sqrt(g.Add(var, g.const(eps, like=var))))
    xc = g.Sub(x, _per_channel(g, mean, x))
    d_xhat_sum = g.reduce_sum(g.Mul(dy, xc), axes, keepdims=False)  # sum(dy * (x - mean)) per channel
    d_bias = g.reduce_sum(dy, axes, keepdims=False)
    scale_inv = g.Mul(scale, inv)
    d_x = g.Mul(dy, _per_channel(g, scale_inv, x))
    d_scale = g.Mul(d_xhat_sum, inv)
    d_mean = g.Neg(g.Mul(d_bias, scale_inv))
    # d inv / d var = -inv^3 / 2
    d_var = g.Mul(g.Mul(d_xhat_sum, scale), g.Mul(g.const(-0.5, like=var), g.Mul(inv, g.Mul(inv, inv))))
    return [d_x, d_scale, d_bias, d_mean, d_var]


def _batch_norm_training(g: Emitter, op: Op, dy: str, d_rm: Optional[str], d_rv: Optional[str]
                         ) -> List[Optional[str]]:
    """Y normalizes with the batch statistics; running_* = input * momentum + batch * (1 - momentum)."""
    x, scale = op.inputs[0], op.inputs[1]
    axes = [0] + list(range(2, g.rank(x)))
    xc, inv, xhat = _standardize(g, x, axes, op.attr("epsilon", 1e-5))
    d_x = _standardized_grad(g, g.Mul(dy, _per_channel(g, scale, x)), xhat, inv, axes)
    d_scale = g.reduce_sum(g.Mul(dy, xhat), axes, keepdims=False)
    d_bias = g.reduce_sum(dy, axes, keepdims=False)
    momentum = op.attr("momentum", 0.9)
    d_mean = d_var = None
    # the batch mean moves by dx / n, the batch (biased) variance by 2 (x - mean) dx / n
    through_stats = []
    if g.carries(d_rm):
        through_stats.append(_per_channel(g, d_rm, x))
        d_mean = g.Mul(d_rm, g.const(momentum, like=d_rm))
    if g.carries(d_rv):
        through_stats.append(g.Mul(g.Mul(_per_channel(g, d_rv, x), g.const(2.0, like=x)), xc))
        d_var = g.Mul(d_rv, g.const(momentum, like=d_rv))
    if through_stats:
        weight = g.Div(g.const(1.0 - momentum, like=x), _count(g, x, axes))
        d_x = g.Add(d_x, g.Mul(g.Sum(*through_stats), weight))
    return [d_x, d_scale, d_bias, d_mean, d_var]


# ---------------------------------------------------------------------------- Instance / Layer / Group
@register_gradient("InstanceNormalization")
def instance_normalization(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x, scale, _ = op.inputs
    axes = _norm_axes(g, x, 2)
    _, inv, xhat = _standardize(g, x, axes, op.attr("epsilon", 1e-5))
    d_x = _standardized_grad(g, g.Mul(dy, _per_channel(g, scale, x)), xhat, inv, axes)
    not_channel = [0] + axes
    d_scale = g.reduce_sum(g.Mul(dy, xhat), not_channel, keepdims=False)
    return [d_x, d_scale, g.reduce_sum(dy, not_channel, keepdims=False)]


def _layer_statistics(g: Emitter, op: Op, axes: List[int]) -> Tuple[str, str]:
    """(inv, xhat) of a LayerNormalization node: from its Mean/InvStdDev outputs when it has both
    and stashes them in x's own type (float32 x, the default stash_type), which saves two
    reductions and five elementwise passes; otherwise recomputed from x with primitive ops (a
    float64 x's statistics are stashed in float32 at best)."""
    x = op.inputs[0]
    mean, inv = op.output(1), op.output(2)
    if mean and inv and g.dtype(x) == op.attr("stash_type", TensorProto.FLOAT):
        return inv, g.Mul(g.Sub(x, mean), inv)
    _, inv, xhat = _standardize(g, x, axes, op.attr("epsilon", 1e-5))
    return inv, xhat


@register_gradient("LayerNormalization")
def layer_normalization(g: Emitter, op: Op, dy: str, d_mean: Optional[str] = None,
                        d_inv_std: Optional[str] = None) -> List[Optional[str]]:
    x, scale = op.inputs[0], op.inputs[1]
    bias = op.input(2)
    axes = _norm_axes(g, x, op.attr("axis", -1))
    inv, xhat = _layer_statistics(g, op, axes)
    d_x = _standardized_grad(g, g.Mul(dy, scale), xhat, inv, axes)
    # Mean moves by dx / n, InvStdDev by -inv^3 (x - mean) dx / n; both may be stashed in float32
    through_stats = []
    if g.carries(d_mean):
        through_stats.append(g.cast_like(d_mean, x))
    if g.carries(d_inv_std):
        through_stats.append(g.Neg(g.Mul(g.cast_like(d_inv_std, x), g.Mul(g.Mul(inv, inv), xhat))))
    if through_stats:
        d_x = g.Add(d_x, g.Div(g.Sum(*through_stats), _count(g, x, axes)))
    d_scale = g.sum_to(g.Mul(dy, xhat), scale, x)
    d_bias = g.sum_to(dy, bias, x) if bias else None
    return [d_x, d_scale, d_bias]


def _group_stats(g: Emitter, op: Op) -> Tuple[List[int], str, str]:
    """Statistics per (sample, group of C/G channels): the grouped shape, 1 / std and x-hat, grouped."""
    grouped = [0, op.attr("num_groups"), -1]
    _, inv, xhat_g = _standardize(g, g.reshape(op.inputs[0], grouped), [2], op.attr("epsilon", 1e-5))
    return grouped, inv, xhat_g


@register_gradient("GroupNormalization", since=21)
def group_normalization(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """Scale and bias per channel."""
    x, scale, bias = op.inputs
    grouped, inv, xhat_g = _group_stats(g, op)
    xhat = g.reshape(xhat_g, g.shape_of(x))
    d_xhat_g = g.reshape(g.Mul(dy, _per_channel(g, scale, x)), grouped)
    not_channel = [0] + list(range(2, g.rank(x)))
    d_scale = g.reduce_sum(g.Mul(dy, xhat), not_channel, keepdims=False)
    d_bias = g.reduce_sum(dy, not_channel, keepdims=False)
    d_x = g.reshape(_standardized_grad(g, d_xhat_g, xhat_g, inv, [2]), g.shape_of(x))
    return [d_x, d_scale, d_bias]


@register_gradient("GroupNormalization", until=20)
def group_normalization_18(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """Scale and bias per group (the deprecated GroupNormalization-18)."""
    x, scale, bias = op.inputs
    grouped, inv, xhat_g = _group_stats(g, op)
    dy_g = g.reshape(dy, grouped)
    d_xhat_g = g.Mul(dy_g, g.reshape(scale, [1, -1, 1]))
    d_scale = g.reduce_sum(g.Mul(dy_g, xhat_g), [0, 2], keepdims=False)
    d_bias = g.reduce_sum(dy_g, [0, 2], keepdims=False)
    d_x = g.reshape(_standardized_grad(g, d_xhat_g, xhat_g, inv, [2]), g.shape_of(x))
    return [d_x, d_scale, d_bias]


@register_gradient("RMSNormalization")
def rms_normalization(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """y = x * r * scale with r = 1/sqrt(mean(x^2) + eps) over the axes from ``axis`` on."""
    x, scale = op.inputs
    axes = _norm_axes(g, x, op.attr("axis", -1))
    r = g.Reciprocal(g.Sqrt(g.Add(_mean(g, g.Mul(x, x), axes), g.const(op.attr("epsilon", 1e-5), like=x))))
    xhat = g.Mul(x, r)
    d_xhat = g.Mul(dy, scale)
    d_x = g.Mul(r, g.Sub(d_xhat, g.Mul(xhat, _mean(g, g.Mul(d_xhat, xhat), axes))))
    return [d_x, g.sum_to(g.Mul(dy, xhat), scale, x)]


@register_gradient("MeanVarianceNormalization")
def mean_variance_normalization(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """y = (x - mean) / (std + 1e-9), std the biased standard deviation over ``axes``."""
    x = op.inputs[0]
    rank = g.rank(x)
    axes = [a % rank for a in op.attr("axes", [0, 2, 3])]
    xc = g.Sub(x, _mean(g, x, axes))
    std = g.Sqrt(_mean(g, g.Mul(xc, xc), axes))
    q = g.Reciprocal(g.Add(std, g.const(1e-9, like=x)))
    # d std / dx = (x - mean) / (n std)
    centered = g.Sub(dy, _mean(g, dy, axes))
    spread = g.Mul(g.Div(g.Mul(q, q), std), g.Mul(xc, _mean(g, g.Mul(dy, xc), axes)))
    return [g.Sub(g.Mul(q, centered), spread)]


@register_gradient("LpNormalization")
def lp_normalization(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """y = x / |x|_p along ``axis``; dx = (dy - d|x|_p/dx * sum(dy * y)) / |x|_p."""
    x = op.inputs[0]
    y = op.outputs[0]
    axes = [op.attr("axis", -1) % g.rank(x)]
    p = op.attr("p", 2)
    if p == 2:
        norm = g.Sqrt(g.reduce_sum(g.Mul(x, x), axes))
        direction = y
    elif p == 1:
        norm = g.reduce_sum(g.Abs(x), axes)
        direction = g.Sign(x)
    else:
        raise GradientArgumentError(f"LpNormalization with p={p}: ONNX defines only p=1 and p=2")
    return [g.Div(g.Sub(dy, g.Mul(direction, g.reduce_sum(g.Mul(dy, y), axes))), norm)]


# ---------------------------------------------------------------------------- LRN
def _channel_window_sum(g: Emitter, t: str, rank: int, before: int, after: int) -> str:
    """out[:, c] = sum of t[:, c - before .. c + after] (zeros beyond the edges)."""
    width = before + after
    if width == 0:
        return t
    pads = [0] * (2 * rank)
    pads[1], pads[rank + 1] = before, after
    padded = g.pad(t, pads)
    parts = [g.slice(padded, [k], [k - width if k < width else None], [1]) for k in range(width + 1)]
    return g.Sum(*parts)


@register_gradient("LRN")
def lrn(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """y = x * d^-beta, d = bias + alpha/size * (window sum of x^2 across channels)."""
    x = op.inputs[0]
    rank = g.rank(x)
    size = op.attr("size")
    alpha, beta, bias = op.attr("alpha", 1e-4), op.attr("beta", 0.75), op.attr("bias", 1.0)
    before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
    d = g.Add(g.const(bias, like=x),
              g.Mul(g.const(alpha / size, like=x), _channel_window_sum(g, g.Mul(x, x), rank, before, after)))
    d_pow = g.Pow(d, g.const(-beta, like=x))
    # x_i enters d_j for j in [i - after, i + before]: the transposed window
    through_d = g.Mul(g.Mul(dy, x), g.Div(d_pow, d))
    spread = _channel_window_sum(g, through_d, rank, after, before)
    return [g.Sub(g.Mul(dy, d_pow), g.Mul(g.Mul(g.const(2 * alpha * beta / size, like=x), x), spread))]
