"""Arguments of :func:`onnxgrad.gradients`, parsed and checked as ``tf.gradients`` does.

Each function turns one argument into what the engine uses, or raises the error TensorFlow
raises for it (``ValueError`` with TensorFlow's message where it has one).
"""

from __future__ import annotations

import difflib
import enum
from typing import TYPE_CHECKING, Any, Callable, List, Sequence, Union

import numpy as np

from .errors import GradientArgumentError

if TYPE_CHECKING:
    from .emitter import Emitter
    from .graph import GraphIndex

GradY = Union[None, str, float, int, np.ndarray]
#: sums a tensor's gradient contributions, emitting with the given emitter
Aggregator = Callable[["Emitter", List[str]], str]


class UnconnectedGradients(str, enum.Enum):
    """What :func:`gradients` returns for an x that no y depends on (``tf.UnconnectedGradients``)."""

    NONE = "none"
    ZERO = "zero"


class AggregationMethod(enum.IntEnum):
    """How several gradient contributions to one tensor are summed (``tf.AggregationMethod``)."""

    ADD_N = 0
    DEFAULT = 0
    EXPERIMENTAL_TREE = 1
    EXPERIMENTAL_ACCUMULATE_N = 2


def parse_names(value: Union[str, Sequence[str], None], what: str) -> List[str]:
    """Wrap a single name into a list, as tf.gradients does; reject other types clearly."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise GradientArgumentError(f"{what} must be a tensor name or a list of names, got {value!r}") from None
    for n in names:
        if not isinstance(n, str):
            raise GradientArgumentError(f"{what} must contain tensor names (str), got {n!r}")
    return names


def check_names(index: GraphIndex, names: Sequence[str], what: str) -> None:
    """Every name must be a tensor of the main graph; suggest near names for one that is not."""
    unknown = [n for n in names if not index.exists(n)]
    if not unknown:
        return
    n = unknown[0]
    near = difflib.get_close_matches(n, list(index.all_names()), n=3, cutoff=0.5)
    # without a near match, name the graph's interface so the user sees what exists
    known = list(dict.fromkeys(index.graph_inputs + sorted(index.initializers) + index.graph_outputs))
    shown = ", ".join(repr(k) for k in known[:8]) + (", ..." if len(known) > 8 else "")
    hint = f"; did you mean {', '.join(repr(c) for c in near)}?" if near else \
        (f"; its inputs, initializers and outputs are {shown}" if known else "")
    raise GradientArgumentError(f"{what}: no tensor named {n!r} in the model's main graph{hint}")


def parse_unconnected(value: Union[str, UnconnectedGradients]) -> UnconnectedGradients:
    """The enum for ``unconnected_gradients`` given as the enum or its string value."""
    try:
        return UnconnectedGradients(value.value if isinstance(value, UnconnectedGradients) else value)
    except (ValueError, AttributeError, TypeError):
        raise GradientArgumentError(
            f"Unknown value for unconnected_gradients: {value!r}; accepted values are 'none' and 'zero'"
        ) from None


def _sum_n(g: Emitter, parts: List[str]) -> str:
    """ADD_N: one n-ary Sum."""
    return g.Sum(*parts)


def _add_chain(g: Emitter, parts: List[str]) -> str:
    """EXPERIMENTAL_TREE / ACCUMULATE_N: a chain of Add."""
    total = parts[0]
    for p in parts[1:]:
        total = g.Add(total, p)
    return total


def aggregator(method: Any) -> Aggregator:
    """How to sum contributions for ``aggregation_method`` (None = ADD_N)."""
    if method is None:
        return _sum_n
    if isinstance(method, bool) or not isinstance(method, (int, np.integer)):
        raise GradientArgumentError(
            f"Invalid aggregation_method specified {method!r}. Accepted values are [0, 1, 2]"
        )
    if int(method) == AggregationMethod.ADD_N:
        return _sum_n
    if int(method) in (AggregationMethod.EXPERIMENTAL_TREE, AggregationMethod.EXPERIMENTAL_ACCUMULATE_N):
        return _add_chain
    raise GradientArgumentError(f"Invalid aggregation_method specified {method}. Accepted values are [0, 1, 2]")


def parse_grad_ys(grad_ys: Any, n: int) -> List[GradY]:
    """``grad_ys`` as one entry per y (a single value wrapped), checking the count."""
    if grad_ys is None:
        return [None] * n
    single = isinstance(grad_ys, (str, np.ndarray, float, int))
    if single and not (isinstance(grad_ys, np.ndarray) and grad_ys.dtype == object):
        grad_ys = [grad_ys]
    grad_ys = list(grad_ys)
    if len(grad_ys) != n:
        raise GradientArgumentError(f"Passed {len(grad_ys)} grad_ys for {n} ys")
    return grad_ys


def unique_prefix(index: GraphIndex, name: str) -> str:
    """``name``, or ``name_1``, ``name_2``... when the model already uses it as a name or scope."""
    if not isinstance(name, str) or not name:
        raise GradientArgumentError(f"name must be a non-empty string, got {name!r}")
    used = set(index.all_names()) | {n.name for n in index.nodes if n.name}
    taken = lambda p: any(u == p or u.startswith(p + "/") for u in used)  # noqa: E731
    if not taken(name):
        return name
    i = 1
    while taken(f"{name}_{i}"):
        i += 1
    return f"{name}_{i}"
