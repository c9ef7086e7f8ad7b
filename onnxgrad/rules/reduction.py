"""Reductions: ReduceSum, ReduceMean, ReduceMax/Min, ReduceProd and the norms.

Every rule has the form ``dx = f(x, y) * dy`` broadcast back over the reduced axes, so the shared
work is :class:`_Reduced`: it reads the axes (attribute before opset 13 for ReduceSum and 18 for
the others, an input after; omitted = all axes; empty with ``noop_with_empty_axes=1`` = no axes,
where ReduceSumSquare still squares, ReduceL1 takes |x| and so on, as onnxruntime and
onnx.reference compute it) and restores the reduced axes of ``y``-shaped tensors when
``keepdims=0``.

Conventions: ReduceMax/ReduceMin split the gradient evenly among tied extrema (as TensorFlow
and JAX do). ReduceProd's gradient is exact at zeros: with one zero in a slice only that element
gets the product of the others, with two or more every element gets 0 (its second derivative is
exact only for slices without zeros). ReduceL2 at an all-zero slice gives x / 0 = NaN; ReduceL1
uses Sign(0) = 0.
"""

from typing import Callable, List, Optional

import numpy as np

from ..emitter import Emitter, Op
from ..registry import register_gradient

#: ``fn(g, r, x, y_kept, dy_kept) -> dx``: a reduction's gradient in the keepdims form
ReductionRule = Callable[[Emitter, "_Reduced", str, str, str], str]


class _Reduced:
    """The reduced axes of one ReduceXxx node, static when known."""

    def __init__(self, g: Emitter, op: Op) -> None:
        self.g, self.x = g, op.inputs[0]
        self.keepdims = bool(op.attr("keepdims", 1))
        self.noop = int(op.attr("noop_with_empty_axes", 0))
        # the axes input when its value is only known at run time
        self.dynamic: Optional[str] = op.arg_input("axes") if op.is_dynamic("axes") else None
        self.axes: Optional[List[int]] = None
        # the axes as written (None: every axis) when x's rank is unknown: ONNX reads negative
        # axes itself, and y's shape restores the reduced axes at run time
        self.given: Optional[List[int]] = None
        if self.dynamic is None:
            axes = op.axes()
            if not axes:  # absent or empty: every axis, or none with noop_with_empty_axes
                axes = [] if self.noop else None
            shape = g.shape(self.x)
            if shape is None:
                self.given = axes
            else:
                rank = len(shape)
                self.axes = sorted(a % rank for a in (range(rank) if axes is None else axes))

    def keep(self, t: str) -> str:
        """A y-shaped tensor with the reduced axes restored as size 1 (keepdims form)."""
        if self.keepdims:
            return t
        if self.axes is not None:
            return self.g.unsqueeze(t, self.axes)
        return self.g.Reshape(t, self.g.Shape(self.sum(self.x)))

    def reduce(self, op_type: str, t: str) -> str:
        """``op_type`` over the same axes, keepdims=1."""
        if self.axes is not None:
            return self.g.reduce(op_type, t, self.axes, keepdims=True)
        if self.dynamic is None:
            return self.g.reduce(op_type, t, self.given, keepdims=True)
        return self.g.emit(op_type, t, self.dynamic, keepdims=1, noop_with_empty_axes=self.noop)

    def sum(self, t: str) -> str:
        """ReduceSum over the same axes, keepdims=1."""
        return self.reduce("ReduceSum", t)

    def count(self) -> str:
        """How many elements each output element reduces, as a scalar of x's dtype."""
        g = self.g
        s = g.shape(self.x)
        if self.axes is not None and s is not None:
            reduced = [s[a] for a in self.axes]
            sizes = [d for d in reduced if isinstance(d, int)]
            if len(sizes) == len(reduced):
                return g.const(int(np.prod(sizes)), like=self.x)
        return g.cast_like(g.Div(g.Size(self.x), g.Size(self.sum(self.x))), self.x)

    def expand(self, t: str) -> str:
        """A keepdims-shaped tensor broadcast to x's shape."""
        if self.axes == [] or (self.axes is None and self.dynamic is None and self.given == []):  # nothing reduced
            return t
        return self.g.Expand(t, self.g.shape_of(self.x))


def reduction(op_type: str) -> Callable[[ReductionRule], ReductionRule]:
    """Register ``fn(g, r, x, y_kept, dy_kept) -> dx`` as the rule of ``op_type``."""

    def decorate(fn: ReductionRule) -> ReductionRule:
        @register_gradient(op_type)
        def rule(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
            r = _Reduced(g, op)
            return [fn(g, r, op.inputs[0], r.keep(op.outputs[0]), r.keep(dy)), None]

        return fn

    return decorate


@reduction("ReduceSum")
def reduce_sum(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return r.expand(dy)


@reduction("ReduceMean")
def reduce_mean(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return r.expand(g.Div(dy, r.count()))


def _extremum(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    # ties share the gradient equally
    mask = g.cast_like(g.Equal(x, y), x)
    return g.Mul(g.Div(dy, r.sum(mask)), mask)


reduction("ReduceMax")(_extremum)
reduction("ReduceMin")(_extremum)


@reduction("ReduceProd")
def reduce_prod(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    # d(prod)/dx_i = product of the others = p / x_i when no zero; p = product of the nonzeros.
    # It is nonzero only where the zeros of the slice other than x_i number zero, i.e. where
    # (zeros in the slice) == (1 if x_i is zero else 0).
    zero = g.const(0, like=x)
    is_zero = g.Equal(x, zero)
    x_nz = g.Where(is_zero, g.const(1, like=x), x)
    p = r.reduce("ReduceProd", x_nz)
    zeros_here = g.cast_like(is_zero, x)
    factor = g.Where(g.Equal(r.sum(zeros_here), zeros_here), g.Div(p, x_nz), zero)
    return g.Mul(dy, factor)


@reduction("ReduceSumSquare")
def reduce_sum_square(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Mul(g.const(2, like=x), x))


@reduction("ReduceL1")
def reduce_l1(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Sign(x))


@reduction("ReduceL2")
def reduce_l2(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Div(x, y))


@reduction("ReduceLogSum")
def reduce_log_sum(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return r.expand(g.Div(dy, g.Exp(y)))


@reduction("ReduceLogSumExp")
def reduce_log_sum_exp(g: Emitter, r: _Reduced, x: str, y: str, dy: str) -> str:
    return g.Mul(dy, g.Exp(g.Sub(x, y)))
