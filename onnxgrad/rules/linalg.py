"""Linear algebra: MatMul (numpy semantics), Gemm and Det."""

from typing import List, Optional, Sequence

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from ..tensorinfo import Dim


def _mT(g: Emitter, x: str) -> str:
    """Swap the last two axes."""
    r = g.rank(x)
    return g.transpose(x, list(range(r - 2)) + [r - 1, r - 2])


def _product(g: Emitter, x: str, y: str, tx: bool = False, ty: bool = False) -> str:
    """x' @ y' with x' = x^T if tx (last two axes), y' likewise; one Gemm when both are matrices."""
    if g.rank(x) == 2 and g.rank(y) == 2:
        return g.gemm(x, y, trans_a=tx, trans_b=ty)
    return g.MatMul(_mT(g, x) if tx else x, _mT(g, y) if ty else y)


def _sum_to_operand(g: Emitter, grad: str, x: str, batch: Sequence[Dim]) -> str:
    """Sum ``grad`` (shaped ``batch + x's matrix dims``) over the batch dims ``x`` was broadcast along."""
    return g.sum_to_shape(grad, x, tuple(batch) + tuple(g.shape(x)[-2:]))  # type: ignore[index]


def _rows(g: Emitter, x: str) -> str:
    """x (..., k) as a matrix (prod(...), k)."""
    return g.Flatten(x, axis=g.rank(x) - 1)


@register_gradient("MatMul")
def matmul(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    a, b = op.inputs
    y = op.outputs[0]
    ra, rb = g.rank(a), g.rank(b)
    if ra == 1 and rb == 1:  # dot product, y is a scalar
        return [g.Mul(dy, b), g.Mul(dy, a)]
    # MatMul promotes a 1-D a to a row (1, k) and a 1-D b to a column (k, 1) and drops that axis
    # from y; differentiate the promoted product and drop the axis from the gradient again.
    a2 = a if ra > 1 else g.unsqueeze(a, [0])
    b2 = b if rb > 1 else g.unsqueeze(b, [1])
    ry = max(ra, rb, 2)
    g.rank(y)  # raises a clear error when y's rank is unknown: undoing broadcasting needs it
    y2 = list(g.shape(y))  # type: ignore[arg-type]
    dy2 = g.as_gradient_of(dy, y)
    if ra == 1:
        dy2 = g.unsqueeze(dy2, [ry - 2])
        y2.insert(ry - 2, 1)
    if rb == 1:
        dy2 = g.unsqueeze(dy2, [ry - 1])
        y2.append(1)
    batch = y2[:-2]

    da = _sum_to_operand(g, _product(g, dy2, b2, ty=True), a2, batch)
    if ra > 2 and rb <= 2:
        # b was broadcast over a's batch: contract the batch together with the rows in one 2-D
        # product instead of materializing a gradient per batch entry and summing them.
        db = _product(g, _rows(g, a2), _rows(g, dy2), tx=True)
    else:
        db = _sum_to_operand(g, _product(g, a2, dy2, tx=True), b2, batch)
    return [da if ra > 1 else g.squeeze(da, [0]), db if rb > 1 else g.squeeze(db, [1])]


@register_gradient("Gemm")
def gemm(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # Y = alpha A' B' + beta C, A' = A^T if transA, B' = B^T if transB
    a, b, c = op.inputs[0], op.inputs[1], op.input(2)
    alpha, beta = op.attr("alpha", 1.0), op.attr("beta", 1.0)
    ta, tb = bool(op.attr("transA", 0)), bool(op.attr("transB", 0))
    if ta:
        da = g.gemm(b, dy, alpha, trans_a=tb, trans_b=True)  # alpha B' dY^T
    else:
        da = g.gemm(dy, b, alpha, trans_b=not tb)  # alpha dY B'^T
    if tb:
        db = g.gemm(dy, a, alpha, trans_a=True, trans_b=ta)  # alpha dY^T A'
    else:
        db = g.gemm(a, dy, alpha, trans_a=not ta)  # alpha A'^T dY
    dc = None
    if c is not None:
        dc = g.sum_to(dy if beta == 1.0 else g.Mul(dy, g.const(beta, like=dy)), c, op.outputs[0])
    return [da, db, dc]


@register_gradient("Det", since=11)
def det(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # d det(X) / dX_ij is the cofactor (-1)^(i+j) det(minor_ij): exact even for singular X,
    # built from Det itself so it differentiates again.
    x = op.inputs[0]
    r = g.rank(x)
    n = g.dims_of(x)[-1]
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
