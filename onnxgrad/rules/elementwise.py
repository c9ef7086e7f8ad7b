"""Elementwise arithmetic and unary math. Broadcasting is undone by the engine (broadcast=True)."""

from ..registry import register_gradient

ew = lambda op_type, **kw: register_gradient(op_type, broadcast=True, **kw)  # noqa: E731


@ew("Add")
def add(g, op, dy):
    return [dy, dy]


@ew("Sub")
def sub(g, op, dy):
    return [dy, g.Neg(dy)]


@ew("Mul")
def mul(g, op, dy):
    a, b = op.inputs
    return [g.Mul(dy, b), g.Mul(dy, a)]


@ew("Div")
def div(g, op, dy):
    a, b = op.inputs
    da = g.Div(dy, b)
    return [da, g.Neg(g.Mul(da, op.output()))]


@register_gradient("Neg")
def neg(g, op, dy):
    return [g.Neg(dy)]


@register_gradient("Identity")
def identity(g, op, dy):
    return [dy]


@register_gradient("Tanh")
def tanh(g, op, dy):
    y = op.output()
    return [g.Mul(dy, g.Sub(g.const(1, like=y), g.Mul(y, y)))]
