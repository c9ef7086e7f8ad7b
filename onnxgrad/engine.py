"""TensorFlow's gradient algorithm on an ONNX graph. Knows no operator by name.

1. Reached ops: a forward walk from the producers of xs through float tensors only.
2. Between ops: a backward walk from the producers of ys, kept where reached; each op's pending
   count is the number of its output edges into between ops.
3. Ops run in reverse topological order as their pending counts reach zero; gradients arriving
   at a tensor are aggregated, missing float output gradients are zero-filled and the op's rule
   gives its inputs their gradients. Stop ops (producers of xs fed by no between op, and
   producers of stop_gradients) accumulate but never call their rule.

Every walk is an explicit queue, so time and memory are linear in the graph size. A rule that
differentiates a subgraph (If, Loop, Scan) is a generator: it yields the nested backward pass it
needs (:func:`backprop_steps` on the subgraph's emitter) and receives its result; :func:`run`
drives every level from one explicit stack, so the Python stack does not grow with the nesting
depth of subgraphs.
"""

from __future__ import annotations

from collections import deque
from types import GeneratorType
from typing import Any, Callable, Deque, Dict, Generator, List, Optional, Sequence, Set, TypeVar

from .emitter import Emitter, Op
from .errors import GradientArgumentError, NoGradientError
from .graph import GraphIndex
from . import registry

T = TypeVar("T")
#: A computation that may ask for nested backward passes: it yields each one (itself such a
#: computation) and is sent its result.
Steps = Generator[Any, Any, T]


def run(steps: "Steps[T]") -> T:
    """The result of ``steps``, running every nested backward pass it asks for (and those they
    ask for) from one explicit stack."""
    stack: List[Steps[Any]] = [steps]
    value: Any = None
    error: Optional[BaseException] = None
    while True:
        try:
            request = stack[-1].send(value) if error is None else stack[-1].throw(error)
        except StopIteration as done:
            stack.pop()
            if not stack:
                return done.value
            value, error = done.value, None
            continue
        except Exception as e:  # raised where the nested pass was asked for, as a call would
            stack.pop()
            if not stack:
                raise
            value, error = None, e
            continue
        stack.append(request)
        value, error = None, None


# A source tensor (graph input or initializer) acts as a producer op of its own with no inputs.
# Op ids: 0..N-1 are real nodes, N.. are sources.


class _Ops:
    """Uniform view of real nodes and source pseudo-ops."""

    def __init__(self, index: GraphIndex) -> None:
        self.index = index
        n = len(index.nodes)
        self.n_nodes = n
        self.source_id: Dict[str, int] = {}
        self.source_name: List[str] = []
        for name in list(index.graph_inputs) + sorted(index.initializers):
            if name not in self.source_id:
                self.source_id[name] = n + len(self.source_name)
                self.source_name.append(name)
        # one look-up per call: a source never shares a name with a node output (GraphIndex checks)
        self._producer = dict(self.source_id)
        self._producer.update(index.producer)
        self.producer: Callable[[str], Optional[int]] = self._producer.get

    def inputs(self, op: int) -> List[str]:
        return self.index.node_inputs[op] if op < self.n_nodes else []

    def outputs(self, op: int) -> List[str]:
        return self.index.node_outputs[op] if op < self.n_nodes else [self.source_name[op - self.n_nodes]]


def backprop(
    g: Emitter,
    ys: Sequence[str],
    xs: Sequence[str],
    grad_ys: Sequence[str],
    stop_tensors: Set[str],
    aggregate: Callable[[Emitter, List[str]], str],
) -> List[Optional[str]]:
    """Append the backward pass to ``g``; return the aggregated gradient name for each x."""
    return run(backprop_steps(g, ys, xs, grad_ys, stop_tensors, aggregate))


def backprop_steps(
    g: Emitter,
    ys: Sequence[str],
    xs: Sequence[str],
    grad_ys: Sequence[str],
    stop_tensors: Set[str],
    aggregate: Callable[[Emitter, List[str]], str],
) -> "Steps[List[Optional[str]]]":
    """:func:`backprop` as steps (see :func:`run`): what a rule yields for a nested backward pass."""
    index = g.index
    ops = _Ops(index)
    is_float = g.is_float

    known_float: Set[str] = set()  # a float type stays float: each tensor's is looked up once

    def may_be_float(t: str) -> bool:
        # A tensor of unknown type (say, the output of a custom-domain op that shape inference
        # cannot see through) may carry a gradient: follow it, so that a missing rule is reported
        # instead of a silent None.
        if t in known_float:
            return True
        if is_float(t):
            known_float.add(t)
            return True
        return not g.info(t).elem_type

    # 1. forward reachability from xs' producers, through float tensors only
    # (op ids are dense: flags in a bytearray and counts in a list, not sets and dicts of ints)
    n_ops = ops.n_nodes + len(ops.source_name)
    from_ops = [ops.producer(x) for x in xs]
    reached = bytearray(n_ops)
    queue = deque(p for p in from_ops if p is not None)
    while queue:
        op = queue.popleft()
        if reached[op]:
            continue
        reached[op] = 1
        for out in ops.outputs(op):
            if out and may_be_float(out):
                queue.extend(index.consumers.get(out, ()))

    # 2. between ops and pending counts
    between = bytearray(n_ops)
    queue = deque(p for p in (ops.producer(y) for y in ys) if p is not None)
    while queue:
        op = queue.popleft()
        if reached[op] and not between[op]:
            between[op] = 1
            for t in ops.inputs(op):
                p = ops.producer(t) if t else None
                if p is not None:
                    queue.append(p)
    pending = [0] * n_ops
    for op in range(ops.n_nodes):  # a source has no inputs
        if between[op]:
            for t in ops.inputs(op):
                p = ops.producer(t) if t else None
                if p is not None and between[p]:
                    pending[p] += 1

    # stop ops
    stop_ops: Set[int] = set()
    for p in from_ops:
        if p is None:
            continue
        if not any(t and (q := ops.producer(t)) is not None and between[q] for t in ops.inputs(p)):
            stop_ops.add(p)
    for t in stop_tensors:
        p = ops.producer(t)
        if p is not None:
            stop_ops.add(p)

    # 3. seeds and the reverse walk
    grads: Dict[str, List[str]] = {}
    for y, gy in zip(ys, grad_ys):
        if is_float(y):
            grads.setdefault(y, []).append(gy)

    def aggregated(t: str) -> Optional[str]:
        contributions = grads.get(t)
        if not contributions:
            return None
        if len(contributions) > 1:
            with g.scoped(f"{_safe(t)}_grad"):
                # a gradient that is not a tensor (a sequence's) is added as its kind says; the
                # first contribution may be a seed, which says nothing
                combine = next((g.combiners[c] for c in contributions if c in g.combiners), aggregate)
                grads[t] = [combine(g, contributions)]
        # rules downstream (MatMul, Gemm...) need the rank: a gradient has its tensor's shape
        return g.as_gradient_of(grads[t][0], t)

    xs_set = set(xs)
    entries: Dict[int, registry.GradientRule] = {}  # each node's rule, looked up once

    def entry_of(op: int) -> registry.GradientRule:
        entry = entries.get(op)
        if entry is None:
            entry = entries[op] = _rule_entry(index, op)
        return entry

    def wanted(t: str) -> bool:
        """Whether a gradient for ``t`` is used: t is an x, or its producer will call its rule.

        A producer without a rule raises LookupError here, as soon as it is about to receive a
        gradient: its output's shape (needed to undo broadcasting) is often unknown too.
        """
        p = ops.producer(t)
        if p is None or p >= ops.n_nodes or not between[p] or p in stop_ops:
            return t in xs_set
        return entry_of(p).status == registry.RULE or t in xs_set

    ready: Deque[int] = deque()
    seen_to: Set[int] = set()
    for y in ys:
        p = ops.producer(y)
        if p is not None and between[p] and pending[p] == 0 and p not in seen_to:
            seen_to.add(p)
            ready.append(p)

    while ready:
        op = ready.popleft()
        outs = ops.outputs(op)
        out_grads = [aggregated(o) if o else None for o in outs]
        in_names = ops.inputs(op)
        in_grads: Sequence[Optional[str]] = ()
        if op < ops.n_nodes and op not in stop_ops and any(dg is not None for dg in out_grads):
            # an input's producer without a rule is the real blocker: report it before this rule
            # fails on what that producer leaves unknown (its output's rank, say)
            entry = entry_of(op)
            if entry.status != registry.NON_DIFFERENTIABLE:
                for k, t in enumerate(in_names):
                    if t and may_be_float(t) and (entry.inputs is None or k in entry.inputs):
                        wanted(t)
                node = index.nodes[op]
                # the rule is called here rather than through a generator of its own: two generator
                # frames per node were a measurable share of the walk's constant cost
                with g.scoped(f"{_safe(node.name or node.output[0])}_grad"):
                    forward = Op(node, op, index.opset, g.constant_value)
                    given = _call_rule(g, forward, entry, out_grads)
                    if isinstance(given, GeneratorType):  # a rule with nested backward passes (see run)
                        given = yield from given
                    in_grads = _checked(g, index, forward, entry, given, wanted)
        for t, dg in zip(in_names, in_grads):
            if t and dg is not None and may_be_float(t):
                grads.setdefault(t, []).append(dg)
        for t in in_names:
            p = ops.producer(t) if t else None
            if p is not None and between[p]:
                pending[p] -= 1
                if pending[p] == 0:
                    ready.append(p)

    return [aggregated(x) for x in xs]


def _safe(name: str) -> str:
    return name.replace("/", "_") or "t"


def _rule_entry(index: GraphIndex, op_id: int) -> registry.GradientRule:
    """The registry entry of node ``op_id``; LookupError when it has no rule (TensorFlow's message)."""
    node = index.nodes[op_id]
    entry = registry.lookup(node.op_type, node.domain, index.opset if node.domain in ("", "ai.onnx") else 1)
    if entry is not None and entry.status != registry.UNSUPPORTED:
        return entry
    from .functions import body_rule  # functions.py builds on this module

    through_body = body_rule(index, node)  # a local or schema function: differentiated through its body
    if through_body is not None:
        return through_body
    where = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
    why = f" ({entry.reason})" if entry is not None and entry.reason else ""
    raise NoGradientError(
        f"No gradient defined for operation '{index.node_label(op_id)}' (op type: {where}, opset {index.opset}){why}. "
        f"Pass its output to stop_gradients to treat it as a constant, or register a rule with "
        f"@onnxgrad.register_gradient({node.op_type!r}"
        + (f", domain={node.domain!r}" if node.domain not in ("", "ai.onnx") else "")
        + ")."
    )


def _call_rule(g: Emitter, op: Op, entry: registry.GradientRule,
               out_grads: List[Optional[str]]) -> Any:
    """Call ``entry``'s rule on ``op``, zero-filling float outputs without a gradient: what it
    returns (the gradients, or a generator of nested backward passes giving them, see :func:`run`)."""
    # (a sequence's zeros take a Loop over its elements: left to the rule, which knows whether it needs them)
    dys = [dg if dg is not None or not (o and g.is_float(o)) or g.info(o).sequence else g.zeros_like(o)
           for o, dg in zip(op.outputs, out_grads)]
    return entry.fn(g, op, *dys)  # type: ignore[misc]


def _checked(g: Emitter, index: GraphIndex, op: Op, entry: registry.GradientRule, given: Sequence[Optional[str]],
             wanted: Callable[[str], bool]) -> Sequence[Optional[str]]:
    """The gradients ``entry``'s rule gave for ``op``'s inputs: their count checked, broadcasting
    undone when the rule asks for it."""
    node = op.node
    result = list(given)
    # a node with subgraphs also gives a gradient to each enclosing-scope value they read (after its inputs)
    n_in = len(index.node_inputs[op.index])
    # A rule may be written for the full signature: trailing entries for omitted optional
    # inputs must then be None.
    if len(result) < n_in or any(r is not None for r in result[n_in:]):
        where = f"{node.domain}::{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
        label = index.node_label(op.index)
        raise GradientArgumentError(
            f"the gradient rule for {where} returned {len(result)} gradients for node '{label}', "
            f"which has {n_in} inputs"
        )
    result = result[:n_in]
    if entry.broadcast:
        y = op.outputs[0]
        # an input nobody needs a gradient for may have an unknown shape (a stop op's output)
        result = [g.sum_to(r, x, y) if r is not None and wanted(x) else None for r, x in zip(result, op.inputs)]
    return result
