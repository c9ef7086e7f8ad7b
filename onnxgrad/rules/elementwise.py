"""Elementwise arithmetic and unary math.

Rules registered with ``ew`` return gradients shaped like the output; the engine undoes
broadcasting (``broadcast=True``). Exp, Sigmoid, Tanh, Sqrt and Reciprocal reuse the forward
output instead of recomputing it.

Max and Min split the gradient evenly between the arguments that attain the extremum. Of the
usual conventions (first argument wins as in TensorFlow, every winner gets all of it, even split
as in JAX) only the even split is symmetric in the arguments and keeps ``Max(x, x) = x``
differentiating to exactly 1.

Clip, Max, Min, Mod and the rounding functions are piecewise; at a kink the gradient follows the
piece named in each rule's comment.
"""

import functools
import math
from typing import Any, Callable, List, Optional

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient

ew = lambda op_type, **kw: register_gradient(op_type, broadcast=True, **kw)  # noqa: E731


def _masked(g: Emitter, cond: Optional[str], dy: str) -> str:
    """dy where ``cond`` holds, 0 elsewhere; dy itself when there is no condition (None)."""
    return dy if cond is None else g.where(cond, dy, g.const(0, like=dy))


def _both(g: Emitter, a: Optional[str], b: Optional[str]) -> Optional[str]:
    """a And b, where a None condition is always true."""
    return b if a is None else a if b is None else g.And(a, b)


# ------------------------------------------------------------------ arithmetic
@ew("Add")
def add(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [dy, dy]


@ew("Sub")
def sub(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [dy, g.Neg(dy)]


@ew("Mul")
def mul(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    a, b = op.inputs
    return [g.Mul(dy, b), g.Mul(dy, a)]


@ew("Div")
def div(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    a, b = op.inputs
    da = g.Div(dy, b)
    return [da, g.Neg(g.Mul(da, op.outputs[0]))]


@ew("Pow")
def pow_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    a, b = op.inputs
    y = op.outputs[0]
    # from opset 12 the exponent may be an integer or another float type than the base
    da = g.Mul(dy, g.Mul(g.cast_like(b, a), g.Pow(a, g.Sub(b, g.const(1, like=b)))))
    if not g.is_float(b):
        return [da, None]
    # d/db = y log(a), taken as 0 where a <= 0; log reads 1 there so no NaN reaches any
    # derivative, first or higher.
    positive = g.Greater(a, g.const(0, like=a))
    log_a = g.Log(g.where(positive, a, g.const(1, like=a)))
    return [da, g.cast_like(g.Mul(dy, g.Mul(y, log_a)), b)]


def _mod(g: Emitter, op: Op, dy: str, floor_mod: Callable[[str], str]) -> List[Optional[str]]:
    """y = a - b whole(a / b): whole truncates with fmod=1, else floors (``floor_mod``)."""
    a, b = op.inputs
    q = g.Div(a, b)
    whole = g.Mul(g.Sign(q), g.Floor(g.Abs(q))) if op.attr("fmod", 0) else floor_mod(q)
    return [dy, g.Neg(g.Mul(dy, whole))]


@ew("Mod", since=28)
def mod(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return _mod(g, op, dy, g.Floor)


@ew("Mod", since=10, until=27)
def mod_10(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    def refuse(q: str) -> str:
        raise GradientArgumentError(
            f"Mod node {op.name!r} has fmod=0 on float inputs, which ONNX allows only from opset 28; "
            "use fmod=1 or opset 28")

    return _mod(g, op, dy, refuse)


@ew("Sum")
def sum_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [dy] * len(op.inputs)


@ew("Mean")
def mean(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    share = g.Div(dy, g.const(len(op.inputs), like=dy))
    return [share] * len(op.inputs)


def _extremum(g: Emitter, op: Op, dy: str, beaten_by: Callable[[str, str], str]) -> List[Optional[str]]:
    """Split dy evenly among the inputs equal to the output (see the module docstring)."""
    if len(op.inputs) == 1:
        return [dy]
    y = op.outputs[0]
    # x <= y for Max (x >= y for Min), so "not beaten" means x == y; Equal lacks floats before opset 11.
    wins = [g.Cast(g.Not(beaten_by(x, y)), to=g.dtype(y)) for x in op.inputs]
    share = g.Div(dy, g.Sum(*wins))
    return [g.Mul(share, w) for w in wins]


@ew("Max")
def max_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return _extremum(g, op, dy, g.Less)


@ew("Min")
def min_(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return _extremum(g, op, dy, g.Greater)


@ew("Where", since=9)
def where(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    cond = op.inputs[0]
    zero = g.const(0, like=dy)
    return [None, g.where(cond, dy, zero), g.where(cond, zero, dy)]


# ------------------------------------------------------------------ identity and casts
@register_gradient("Neg")
def neg(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [g.Neg(dy)]


@register_gradient("Identity")
def identity(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    return [dy]


@register_gradient("Cast")
def cast(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    return [g.cast_like(dy, x) if g.is_float(x) else None]


@register_gradient("CastLike", since=15)
def cast_like(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    return [g.cast_like(dy, x) if g.is_float(x) else None, None]


# ------------------------------------------------------------------ clipping
@register_gradient("Clip", until=10)
def clip_attrs(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    above_lo = g.Greater(x, g.const(op.attr("min"), like=x)) if op.has_attr("min") else None
    below_hi = g.Less(x, g.const(op.attr("max"), like=x)) if op.has_attr("max") else None
    return [_masked(g, _both(g, above_lo, below_hi), dy)]


@ew("Clip", since=11)
def clip(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y = Min(Max(x, lo), hi). x gets dy where lo < x < hi, lo where x <= lo unless y == hi, hi
    # where y == hi: ties go to the bound, and with lo > hi every element is hi, as in the spec.
    x, lo, hi = op.inputs[0], op.input(1), op.input(2)
    above_lo = g.Greater(x, lo) if lo is not None else None
    below_hi = g.Less(op.outputs[0], hi) if hi is not None else None
    dx = _masked(g, _both(g, above_lo, below_hi), dy)
    dlo = _masked(g, _both(g, g.Not(above_lo), below_hi), dy) if lo is not None else None
    dhi = _masked(g, g.Not(below_hi), dy) if hi is not None else None
    return [dx, dlo, dhi]


# ------------------------------------------------------------------ unary math
#: ``fn(g, x, y, dy) -> dx`` for a one-input op (x the input, y the output)
UnaryRule = Callable[[Emitter, str, str, str], str]


def unary(op_type: str, **kw: Any) -> Callable[[UnaryRule], UnaryRule]:
    """Register ``fn(g, x, y, dy) -> dx`` (x the input, y the output) for a one-input op."""

    def decorate(fn: UnaryRule) -> UnaryRule:
        @functools.wraps(fn)
        def rule(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
            return [fn(g, op.inputs[0], op.outputs[0], dy)]

        register_gradient(op_type, **kw)(rule)
        return fn

    return decorate


@unary("Abs")
def abs_(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Sign(x))


@unary("Sqrt")
def sqrt(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Mul(g.const(2, like=y), y))


@unary("Reciprocal")
def reciprocal(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Neg(g.Mul(dy, g.Mul(y, y)))


@unary("Exp")
def exp(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, y)


@unary("Log")
def log(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, x)


@unary("Sin")
def sin(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Cos(x))


@unary("Cos")
def cos(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Neg(g.Mul(dy, g.Sin(x)))


@unary("Tan")
def tan(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Add(g.const(1, like=y), g.Mul(y, y)))


@unary("Tanh")
def tanh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Sub(g.const(1, like=y), g.Mul(y, y)))


@unary("Sigmoid")
def sigmoid(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Mul(y, g.Sub(g.const(1, like=y), y)))


@unary("Erf", since=9)
def erf(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Mul(g.const(2 / math.sqrt(math.pi), like=x), g.Exp(g.Neg(g.Mul(x, x)))))


@unary("Asin", since=7)
def asin(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Sqrt(g.Sub(g.const(1, like=x), g.Mul(x, x))))


@unary("Acos", since=7)
def acos(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Neg(g.Div(dy, g.Sqrt(g.Sub(g.const(1, like=x), g.Mul(x, x)))))


@unary("Atan", since=7)
def atan(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Add(g.const(1, like=x), g.Mul(x, x)))


@unary("Sinh", since=9)
def sinh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Cosh(x))


@unary("Cosh", since=9)
def cosh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Sinh(x))


@unary("Asinh", since=9)
def asinh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Sqrt(g.Add(g.Mul(x, x), g.const(1, like=x))))


@unary("Acosh", since=9)
def acosh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Sqrt(g.Sub(g.Mul(x, x), g.const(1, like=x))))


@unary("Atanh", since=9)
def atanh(g: Emitter, x: str, y: str, dy: str) -> str:
    return g.Div(dy, g.Sub(g.const(1, like=x), g.Mul(x, x)))


def piecewise_constant(g: Emitter, x: str, y: str, dy: str) -> str:
    # zeros, not None: TensorFlow's rules return zeros, so x stays connected to ys
    return g.zeros_like(x)


for _op, _since in [("Floor", 1), ("Ceil", 1), ("Round", 11), ("Sign", 9)]:
    unary(_op, since=_since)(piecewise_constant)
