"""Quantization: DequantizeLinear (linear in its float scale) and DynamicQuantizeLinear (its scale)."""

from __future__ import annotations

from typing import Callable, List, Optional

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


@register_gradient("DequantizeLinear", since=10, inputs=[1])
def dequantize_linear(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y = (x - zero_point) * scale: linear in the float scale (x and zero_point are integers)
    x, scale, zero_point = op.inputs[0], op.inputs[1], op.input(2)
    if op.attr("block_size", 0):
        raise GradientArgumentError("the gradient of blocked DequantizeLinear (block_size) is not supported")
    r = g.rank(x)
    axis = op.attr("axis", 1) % max(r, 1)
    per_tensor = g.rank(scale) == 0 or (g.shape(scale) == (1,) and g.dims_of(x)[axis] != 1)
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
def dynamic_quantize_linear(g: Emitter, op: Op, _dy: Optional[str], d_scale: str,
                            _d_zero_point: Optional[str]) -> List[Optional[str]]:
    # y_scale = (max(0, max x) - min(0, min x)) / 255: the gradient reaches the extreme elements
    # (split evenly between ties) when they lie beyond 0. y and y_zero_point are integers.
    x = op.inputs[0]
    zero, one = g.const(0, like=x), g.const(1, like=x)

    def extreme(reduce_op: str, beyond: Callable[[str, str], str]) -> str:
        top = g.reduce(reduce_op, x, None, keepdims=True)
        hit = g.cast_like(g.And(g.Equal(x, top), beyond(top, zero)), x)
        return g.Div(hit, g.Max(g.reduce_sum(hit, None, keepdims=True), one))

    per_unit = g.Div(d_scale, g.const(255.0, like=x))
    return [g.Mul(per_unit, g.Sub(extreme("ReduceMax", g.Greater), extreme("ReduceMin", g.Less)))]
