"""Scans: CumSum and CumProd (running sums and products along an axis)."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


@register_gradient("CumSum")
def cumsum(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # each x_j reaches every y_i that sums it: the same sum taken in the other direction
    return [g.CumSum(dy, op.input(1), exclusive=op.attr("exclusive", 0), reverse=1 - op.attr("reverse", 0)), None]


@register_gradient("CumProd", inputs=[0])
def cumprod(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y_k is multilinear in x, so dy_k/dx_i is y_k recomputed with x_i := 1, wherever y_k's
    # product contains x_i. One CumProd over n copies of x (copy i has x_i := 1) gives every
    # such partial product without dividing by x, so zeros in x are exact.
    x = op.inputs[0]
    r = g.rank(x)
    a = int(np.asarray(op.constant_input(1, "axis")).reshape(-1)[0]) % r
    n = g.dims_of(x)[a]
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
