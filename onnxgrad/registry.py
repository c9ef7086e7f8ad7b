"""The gradient rule registry: which rule differentiates which (domain, op_type, opset).

A rule is a function ``rule(g, op, *dys) -> sequence`` returning one gradient (a tensor name or
None) per input of the node. ``g`` is the :class:`onnxgrad.emitter.Emitter` that writes backward
nodes, ``op`` the :class:`onnxgrad.emitter.Op` being differentiated and ``dys`` the gradients
arriving at each of its outputs (zeros already filled in for float outputs nobody used;
None for integer outputs). Example::

    @onnxgrad.register_gradient("Tanh")
    def tanh_grad(g, op, dy):
        y = op.output(0)
        return [g.Mul(dy, g.Sub(g.const(1, like=y), g.Mul(y, y)))]

Rules registered with ``broadcast=True`` return gradients shaped like the op's first output; the
engine sums each back to its input's shape (undoing numpy-style broadcasting in one place).

A rule that differentiates a subgraph is a generator: it yields the nested backward pass it needs
and is sent its result (:func:`onnxgrad.engine.run`), returning its list at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Generator, List, Optional, Sequence, Tuple, TypeVar, Union

from .errors import GradientArgumentError

RuleFn = Callable[..., Union[Sequence[Optional[str]], Generator[Any, Any, Sequence[Optional[str]]]]]
F = TypeVar("F", bound=RuleFn)

RULE = "rule"
NON_DIFFERENTIABLE = "non-differentiable"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class GradientRule:
    """One registry entry. ``fn`` is None unless ``status`` is ``"rule"``."""

    op_type: str
    domain: str
    status: str
    fn: Optional[RuleFn] = None
    since: int = 1
    until: Optional[int] = None  # inclusive upper opset bound, None = open
    inputs: Optional[Tuple[int, ...]] = None  # indices of differentiable inputs, None = every float input
    broadcast: bool = False
    reason: str = ""
    builtin: bool = field(default=True, compare=False)

    def covers(self, opset: int) -> bool:
        return self.since <= opset and (self.until is None or opset <= self.until)

    @property
    def opset_range(self) -> str:
        return f"{self.since}+" if self.until is None else f"{self.since}-{self.until}"


_REGISTRY: Dict[Tuple[str, str], List[GradientRule]] = {}
_LOADING_BUILTINS = [False]


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def _add(entry: GradientRule, override: bool) -> None:
    key = (entry.domain, entry.op_type)
    entries = _REGISTRY.setdefault(key, [])
    clash = [e for e in entries if e.since <= (entry.until or 10**9) and entry.since <= (e.until or 10**9)]
    if clash and not override:
        where = f"{entry.domain}::{entry.op_type}" if entry.domain else entry.op_type
        raise GradientArgumentError(
            f"a gradient for {where} (opsets {clash[0].opset_range}) is already registered; "
            "pass override=True to replace it"
        )
    for e in clash:
        entries.remove(e)
    entries.append(entry)
    entries.sort(key=lambda e: e.since)


def register_gradient(
    op_type: str,
    domain: str = "",
    *,
    since: int = 1,
    until: Optional[int] = None,
    inputs: Optional[Sequence[int]] = None,
    broadcast: bool = False,
    override: bool = False,
) -> Callable[[F], F]:
    """Decorator registering ``fn`` as the gradient of ``op_type`` in ``domain``.

    Args:
        op_type: the ONNX operator type, e.g. ``"Tanh"``.
        domain: its domain; ``""`` is the default ONNX domain.
        since, until: the opset versions (inclusive) the rule is valid for.
        inputs: indices of the inputs the rule differentiates (documentation and the coverage
            table); None means every float input.
        broadcast: the rule returns gradients shaped like output 0, to be summed back to each
            input's shape by the engine.
        override: replace an existing rule instead of raising ``ValueError``.

    The rule is called as ``fn(g, op, *dys)`` and returns one gradient name (or None) per input;
    see the module docstring for an example.
    """

    def decorate(fn: F) -> F:
        _add(
            GradientRule(
                op_type,
                _norm_domain(domain),
                RULE,
                fn,
                since,
                until,
                tuple(inputs) if inputs is not None else None,
                broadcast,
                builtin=_LOADING_BUILTINS[0],
            ),
            override,
        )
        return fn

    return decorate


def no_gradient(op_type: str, domain: str = "", *, reason: str = "", override: bool = False) -> None:
    """Declare ``op_type`` non-differentiable (TensorFlow's ``tf.no_gradient``).

    Gradients stop at such an op silently: its inputs receive nothing and no error is raised.
    """
    _add(GradientRule(op_type, _norm_domain(domain), NON_DIFFERENTIABLE, reason=reason,
                      builtin=_LOADING_BUILTINS[0]), override)


def not_supported(op_type: str, reason: str, domain: str = "") -> None:
    """Record that ``op_type`` is differentiable in principle but has no rule yet (and why)."""
    _add(GradientRule(op_type, _norm_domain(domain), UNSUPPORTED, reason=reason,
                      builtin=_LOADING_BUILTINS[0]), False)


def lookup(op_type: str, domain: str, opset: int) -> Optional[GradientRule]:
    """The entry covering ``opset``, or None."""
    for e in _REGISTRY.get((_norm_domain(domain), op_type), ()):
        if e.covers(opset):
            return e
    return None


def entries() -> List[GradientRule]:
    """Every registry entry, sorted by domain, op type and opset."""
    return sorted((e for es in _REGISTRY.values() for e in es), key=lambda e: (e.domain, e.op_type, e.since))


def unregister(op_type: str, domain: str = "") -> None:
    """Remove user-registered entries for ``op_type`` (built-in rules stay)."""
    key = (_norm_domain(domain), op_type)
    kept = [e for e in _REGISTRY.get(key, []) if e.builtin]
    if kept:
        _REGISTRY[key] = kept
    else:
        _REGISTRY.pop(key, None)


class _BuiltinLoading:
    """Context manager marking registrations made by onnxgrad's own rule modules."""

    def __enter__(self) -> None:
        _LOADING_BUILTINS[0] = True

    def __exit__(self, *exc: object) -> None:
        _LOADING_BUILTINS[0] = False


loading_builtins = _BuiltinLoading
