"""Einsum: the gradient of each operand is another Einsum of dy with the other operands."""

from __future__ import annotations

import string
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient

Term = List[Tuple[str, int]]  # (letter, axis of the operand) per subscript position


def _parse_einsum(g: Emitter, op: Op) -> Tuple[List[Term], str, List[str], List[List[int]], List[str]]:
    """The equation with every ellipsis spelled out as letters, and broadcast dims removed.

    Returns (terms, output letters, operand tensors to use, squeezed axes per operand, spare
    letters). An operand dim of size 1 that broadcasts against a larger one in an ellipsis does
    not depend on its letter; that dim is squeezed away and its letter dropped from the term.
    """
    equation = op.attr("equation").replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    spare = [c for c in string.ascii_letters if c not in equation]
    raw_terms = lhs.split(",")
    ranks = [g.rank(x) for x in op.inputs]
    n_ell = max([r - len(t.replace("...", "")) for t, r in zip(raw_terms, ranks) if "..." in t] or [0])
    ell = spare[:n_ell]
    spare = spare[n_ell:]

    terms: List[Term] = []
    for t, r in zip(raw_terms, ranks):
        before, has_ell, after = t.partition("...")
        own = r - len(before) - len(after) if has_ell else 0
        letters = list(before) + ell[n_ell - own:] + list(after)
        terms.append([(c, axis) for axis, c in enumerate(letters)])

    if arrow:
        out = rhs.replace("...", "".join(ell))
    else:
        counts: Dict[str, int] = {}
        for t in raw_terms:
            for c in t.replace("...", ""):
                counts[c] = counts.get(c, 0) + 1
        out = ("".join(ell) if "..." in lhs else "") + "".join(sorted(c for c, k in counts.items() if k == 1))

    shapes = [g.shape(x) or () for x in op.inputs]  # ranks are known: g.rank checked them
    sizes: Dict[str, set] = {}
    for shape, term in zip(shapes, terms):
        for c, axis in term:
            sizes.setdefault(c, set()).add(shape[axis])
    operands, squeezed = [], []
    for x, shape, term in zip(op.inputs, shapes, terms):
        varying = [axis for c, axis in term if c in ell and len(sizes[c]) > 1]
        if any(not isinstance(shape[axis], int) for axis in varying):
            raise GradientArgumentError(
                f"Einsum node '{op.name or op.outputs[0]}': an ellipsis dim of {x!r} is symbolic and may "
                "broadcast; give the model's inputs static shapes in the ellipsis dims"
            )
        drop = [axis for axis in varying if shape[axis] == 1]
        term[:] = [(c, axis) for c, axis in term if axis not in drop]
        operands.append(g.squeeze(x, drop))
        squeezed.append(drop)
    return terms, out, operands, squeezed, spare


@register_gradient("Einsum")
def einsum(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """d x_k = einsum(dy, the other operands -> x_k's subscripts).

    Letters of x_k found neither in the output nor in another operand were summed over x_k alone:
    a ones operand over them broadcasts the gradient back. A letter repeated in x_k (a diagonal)
    gets a fresh letter at each repeat, tied to the first by an identity matrix operand, so the
    gradient lands on the diagonal only.
    """
    terms, out, operands, squeezed, spare = _parse_einsum(g, op)
    grads: List[Optional[str]] = []
    for k, x in enumerate(op.inputs):
        if not g.is_float(x):
            grads.append(None)
            continue
        others = [(operands[j], terms[j]) for j in range(len(terms)) if j != k]
        available = set(out).union(*({c for c, _ in t} for _, t in others))
        inputs: List[Tuple[str, str]] = [(dy, out)] + [(t_x, "".join(c for c, _ in t)) for t_x, t in others]
        seen: Dict[str, int] = {}
        target = ""
        fresh = iter(spare)
        for c, axis in terms[k]:
            if c not in seen:
                seen[c] = axis
                target += c
                continue
            twin = next(fresh)
            target += twin
            inputs.append((_eye(g, x, axis), c + twin))
        summed_alone = [c for c in seen if c not in available]
        if summed_alone:
            ones = g.constant_of_shape(g.dims(x, [seen[c] for c in summed_alone]), 1.0, like=x)
            inputs.append((ones, "".join(summed_alone)))
        equation = ",".join(t for _, t in inputs) + "->" + target
        grad = g.Einsum(*(t_x for t_x, _ in inputs), equation=equation)
        grads.append(g.unsqueeze(grad, squeezed[k]))
    return grads


def _eye(g: Emitter, x: str, axis: int) -> str:
    """Identity matrix of x's dim ``axis``, in x's dtype."""
    shape = g.shape(x)
    n = shape[axis] if shape is not None else None
    if isinstance(n, int):
        return g.const(np.eye(n), like=x)
    d = g.dims(x, [axis])
    return g.EyeLike(g.constant_of_shape(g.Concat(d, d, axis=0), 0.0, like=x))
