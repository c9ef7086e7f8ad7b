"""Backward passes inside nested graphs (If branches, Loop and Scan bodies, function bodies).

The gradient engine runs on a :class:`~onnxgrad.graph.GraphIndex`, which indexes a model's main
graph. A nested graph is differentiated by wrapping it into a small model of its own: the values
it reads from enclosing scopes (forward values of the enclosing graph, gradients the enclosing
backward pass computed, values a prologue defines) become typed graph inputs of that model (small
constants become initializers, which shape inference reads; values of unknown rank the outputs of
an opaque placeholder op, since a model's inputs need a rank). A
:class:`Body` indexes that model, gives it an emitter with its own naming scope, replays the
forward nodes (their values exist only inside the forward subgraph) and appends their backward
pass; :meth:`Body.graph` returns the result as a GraphProto for an If/Loop/Scan attribute.

:func:`reverse_loop` builds on it: reverse mode through the iterations of a loop whose every
step's inputs were recorded (tensors stacked, sequences listed in one history sequence), as a
``Loop`` that runs the steps backwards. Memory grows linearly with the number of iterations (the
recorded values). A nested backward pass is run by the engine (:meth:`Body.steps`, yielded by
the rule), not called: nesting depth costs no Python stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

from . import engine
from .emitter import Emitter
from .errors import GradientArgumentError
from .graph import GraphIndex, subgraph_outer_names
from .tensorinfo import TensorInfo, info_from_type

_GRAPH_KINDS = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
_PLACEHOLDER, _PLACEHOLDER_DOMAIN = "EnclosingValue", "onnxgrad.subgraph"
_SMALL = 64  # elements of an enclosing constant copied into a wrapped body for shape inference


def outer_reads(node: NodeProto) -> List[str]:
    """Enclosing-scope names the subgraphs of ``node`` read besides its inputs, in the order the
    engine appends them to the node's inputs (a rule returns their gradients after the inputs')."""
    ins = list(node.input)
    return [n for n in subgraph_outer_names(node) if n not in ins]


def _sum(g: Emitter, parts: List[str]) -> str:
    return g.Sum(*parts)


def value_info(name: str, info: TensorInfo) -> onnx.ValueInfoProto:
    """A tensor (or sequence) ValueInfoProto; unknown dims stay unnamed, an unknown rank leaves the
    shape out."""
    if not info.elem_type:
        raise GradientArgumentError(
            f"the element type of {name!r} is unknown; a nested graph reading it needs it (shape inference failed)")
    if info.sequence:
        return helper.make_tensor_sequence_value_info(name, info.elem_type, None)
    return helper.make_tensor_value_info(name, info.elem_type, list(info.shape) if info.shape is not None else None)


def without_axis(info: TensorInfo, axis: int) -> TensorInfo:
    """The type of one slice of a tensor along ``axis``."""
    if info.shape is None:
        return TensorInfo(info.elem_type, None)
    axis %= len(info.shape)
    return TensorInfo(info.elem_type, info.shape[:axis] + info.shape[axis + 1:])


class Body:
    """A nested graph under construction: forward nodes replayed, then their backward pass.

    Args:
        outer: the emitter of the enclosing graph.
        forward: the nodes (and initializers) to replay, e.g. a Loop body.
        inputs: the new graph's own inputs, with their types.
        defined: names the prologue (nodes emitted with :attr:`g` before :meth:`backprop`)
            defines, with their types: the forward graph's inputs, typically.
        reads: enclosing-scope values the new graph reads (typed from ``outer``).
        hint: the naming scope of the new graph's values, under ``outer``'s current scope.

    The emitter :attr:`g` writes the prologue, then :meth:`backprop` appends the backward pass;
    :meth:`graph` assembles prologue, forward and backward nodes, keeping only what the outputs
    need. With an empty ``forward`` it is the emitter of any new subgraph, e.g. a Loop body a
    rule writes itself (``h <- tanh(h @ w)``, ``w`` read from the enclosing graph)::

        b = Body(g, GraphProto(), [("i", TensorInfo(INT64, ())), ("c", TensorInfo(BOOL, ())),
                                   ("h", g.info(h0))], [], [w], "step")
        body = b.graph(["c", b.g.Tanh(b.g.MatMul("h", w))])
        g.add_node("Loop", [steps, "", h0], [g.fresh("h")], g.fresh("Loop"), {"body": body})
    """

    def __init__(self, outer: Emitter, forward: GraphProto, inputs: Sequence[Tuple[str, TensorInfo]],
                 defined: Sequence[Tuple[str, TensorInfo]], reads: Iterable[str], hint: str) -> None:
        self.outer = outer
        self.forward = forward
        self.inputs = list(inputs)
        self.defined = list(defined)
        declared = {name for name, _ in self.inputs} | {name for name, _ in defined}
        sources = self.inputs + list(defined)
        for name in dict.fromkeys(reads):
            if name and name not in declared:
                declared.add(name)
                sources.append((name, outer.info(name)))
        # A model's graph inputs need a rank (ONNX's checker): a value of unknown rank comes from a
        # placeholder op instead, which indexing sees as an opaque source of that element type.
        # Small constants of the enclosing graph (axes, shapes) go in as values, which shape
        # inference reads.
        known = {n: outer.constant_value(n) for n, _ in sources if n not in {m for m, _ in self.inputs}}
        constants = [numpy_helper.from_array(np.asarray(v), n) for n, v in known.items()
                     if v is not None and np.size(v) <= _SMALL]
        taken = {t.name for t in constants}
        ranked = [(n, i) for n, i in sources if i.shape is not None and n not in taken]
        unranked = [(n, i) for n, i in sources if i.shape is None and n not in taken]
        placeholders = [helper.make_node(_PLACEHOLDER, [], [n], domain=_PLACEHOLDER_DOMAIN) for n, _ in unranked]
        outer_model = outer.index.model
        wrapped = helper.make_model(
            helper.make_graph(placeholders + list(forward.node), f"{forward.name or 'body'}_replay",
                              [value_info(n, i) for n, i in ranked], [], list(forward.initializer) + constants,
                              value_info=[value_info(n, i) for n, i in unranked] + list(forward.value_info)
                              + [o for o in forward.output if o.type.tensor_type.elem_type and o.name not in declared]),
            opset_imports=list(outer_model.opset_import) + [helper.make_opsetid(_PLACEHOLDER_DOMAIN, 1)],
            functions=list(outer_model.functions))
        wrapped.ir_version = outer_model.ir_version
        prefix = outer.fresh(hint)
        self.g = Emitter(GraphIndex(wrapped), prefix)
        # the forward nodes as indexed: a rule may put a recording node in place of one
        self._forward_nodes = self.g.index.nodes[len(placeholders):]
        # the only enclosing names the new ones could repeat are those under its (fresh) prefix
        self.g.reserve(n for n in outer.names_in_use() if n.startswith(prefix))
        self._split: Optional[int] = None

    def backprop(self, ys: Sequence[str], seeds: Sequence[str], xs: Sequence[str]) -> List[Optional[str]]:
        """Gradients of the replayed ``ys`` seeded with ``seeds``, for each of ``xs``."""
        return engine.run(self.steps(ys, seeds, xs))

    def steps(self, ys: Sequence[str], seeds: Sequence[str], xs: Sequence[str]) -> "engine.Steps[List[Optional[str]]]":
        """:meth:`backprop` as the steps a rule yields (``grads = yield body.steps(...)``): the
        engine runs them from its own stack, however deeply subgraphs nest."""
        self._split = len(self.g.nodes)
        for y, seed in zip(ys, seeds):  # a y nothing typed (a custom op's output) has its gradient's type
            if not self.g.info(y).elem_type:
                self.g.set_info(y, self.g.dtype(seed))
        return engine.backprop_steps(self.g, list(ys), list(xs), list(seeds), set(), _sum)

    def graph(self, outputs: Sequence[str], inputs: Optional[Sequence[Tuple[str, TensorInfo]]] = None) -> GraphProto:
        """The new graph, with ``inputs`` (default: those given at construction) and one output
        per name of ``outputs`` (copied by Identity nodes so that each output is a distinct value
        the graph itself produces)."""
        g = self.g
        split = len(g.nodes) if self._split is None else self._split
        g.scope = g.prefix
        out_names = []
        for name in outputs:
            if g.info(name).sequence:  # the op table copies a sequence at every opset
                out_names.append(g.Identity(name))
                continue
            out = g.fresh("out")
            g.add_node("Identity", [name], [out], out, {})
            out_names.append(out)
        nodes = g.nodes[:split] + self._forward_nodes + g.nodes[split:]
        kept = _needed(nodes, out_names)
        needed_inits = {n for node in kept for n in node.input} | set(outputs)
        produced = {n for node in kept for n in node.output}
        graph = helper.make_graph(
            kept, g.prefix.replace("/", "_"),
            [value_info(n, i) for n, i in (self.inputs if inputs is None else inputs)],
            [value_info(o, g.info(name)) for o, name in zip(out_names, outputs)],
            [t for t in self.forward.initializer if t.name in needed_inits],
            # what the prologue defines keeps its type where onnx cannot infer it (a Reshape to an
            # enclosing-scope shape): a later differentiation of this graph needs the ranks
            value_info=[value_info(n, i) for n, i in self.defined if n in produced])
        self.outer.reserve(g.names_in_use())
        return graph


    def inline(self) -> None:
        """Append the replayed forward nodes and the backward pass to the enclosing emitter's graph
        instead (a function body needs no subgraph of its own)."""
        for node in self._forward_nodes + self.g.nodes:
            self.outer.add_proto(node)
        self.outer.reserve(self.g.names_in_use())

    def inline_gradients(self, grads: Dict[str, Optional[str]], inputs: Sequence[str]) -> List[Optional[str]]:
        """:meth:`inline`, then one gradient per entry of ``inputs`` (a rule's result) from
        ``grads`` (x -> its gradient, as :meth:`backprop` gave them), known in the enclosing emitter
        with the type and shape they have here; an input passed twice has its whole gradient at its
        first position, None after."""
        self.inline()
        result = [grads.pop(x, None) for x in inputs]
        self.outer.adopt(self.g, [dx for dx in result if dx is not None])
        return result


def _needed(nodes: Sequence[NodeProto], outputs: Iterable[str]) -> List[NodeProto]:
    """The nodes ``outputs`` depend on, in their order (one backward sweep)."""
    needed = set(outputs)
    kept = []
    for node in reversed(nodes):
        if needed.isdisjoint(node.output):
            continue
        kept.append(node)
        needed.update(node.input)
        if any(a.type in _GRAPH_KINDS for a in node.attribute):
            needed.update(subgraph_outer_names(node))
    return kept[::-1]


@dataclass(frozen=True)
class Stepped:
    """A value of one loop step that is slice ``t`` of an enclosing-scope tensor ``outer`` along
    ``axis``: ``t = i`` at step ``i``, or ``t = N - 1 - i`` when ``reverse``."""

    name: str
    outer: str
    axis: int = 0
    reverse: bool = False
    #: for records flattened to 1-D (see :func:`flat`): the slice's shape, an enclosing tensor holding
    #: one shape for every step (1-D) or one per step (2-D, indexed like the records)
    shape: Optional[str] = None
    #: the slice's type, when ``outer`` holds flattened records
    info: Optional[TensorInfo] = None


@dataclass(frozen=True)
class Carried:
    """A loop-carried value: body ``output`` of step ``i`` is body ``input`` of step ``i + 1``;
    ``final_grad`` is the gradient of the loop's final value (the last step's output)."""

    input: str
    output: str
    final_grad: str


@dataclass(frozen=True)
class History:
    """A sequence-valued input of every loop step, recorded as one enclosing sequence: step ``i``'s
    value is the ``lengths[i]`` elements of ``outer`` from ``offsets[i]`` on (both 1-D int64
    enclosing tensors). A sequence cannot be stacked like a tensor; its elements can be listed."""

    name: str
    outer: str
    offsets: str
    lengths: str


@dataclass
class LoopGradients:
    """What :func:`reverse_loop` returns: the gradients of the carried values' initial values,
    of the stepped inputs (stacked like their ``outer`` tensors) and of the enclosing-scope reads
    (None where no gradient flows)."""

    carried: List[str]
    stepped: List[Optional[str]]
    reads: List[Optional[str]]


def reverse_loop(g: Emitter, body: GraphProto, steps: str, *, stepped: Sequence[Stepped] = (),
                 histories: Sequence[History] = (), step_index: Optional[str] = None,
                 true_inputs: Sequence[str] = (), carried: Sequence[Carried] = (), seeded: Sequence[Stepped] = (),
                 wrt_stepped: Sequence[Stepped] = (), reads: Sequence[str] = (),
                 wrt_reads: Sequence[str] = ()) -> "engine.Steps[LoopGradients]":
    """Reverse mode through ``steps`` (a scalar int64 tensor, N) iterations of ``body`` (as steps:
    ``yield from reverse_loop(...)`` in a rule).

    Emits one ``Loop`` whose iteration j replays step ``i = N - 1 - j`` of ``body`` and
    backpropagates through it:

    * ``stepped``: body inputs whose step-i value is recorded in an enclosing tensor;
      ``histories``: sequence-valued body inputs recorded in an enclosing sequence;
      ``step_index``: the body input holding i (Loop's iteration number); ``true_inputs``:
      body inputs true at every step that runs (Loop's condition);
    * ``carried``: float loop-carried values (tensors or sequences); their gradient runs from the
      last step back to the first and ends as the gradient of the initial value;
    * ``seeded``: float body outputs whose gradient at step i is a slice of an enclosing tensor
      (the gradient of a Loop/Scan scan output);
    * ``wrt_stepped``: stepped inputs (entries of ``stepped``) to stack gradients for (Scan
      inputs), returned laid out like their ``outer`` tensors;
    * ``reads``: enclosing-scope values the body reads; the gradients of ``wrt_reads`` (floats
      among them) are summed over the steps.
    """
    one = g.scalar_int(1)
    last = g.Sub(steps, one)
    stepped_infos = [(s.name, s.info or without_axis(g.info(s.outer), s.axis)) for s in stepped]
    stepped_infos += [(h.name, g.info(h.outer)) for h in histories]
    body_inputs = {i.name: i for i in body.input}
    defined = stepped_infos + [(n, TensorInfo(TensorProto.BOOL, ())) for n in true_inputs if n]
    if step_index:
        defined.append((step_index, TensorInfo(TensorProto.INT64, ())))
    carried_infos = [(c.input, dict(stepped_infos).get(c.input) or declared(body_inputs.get(c.input))
                      or g.info(c.final_grad)) for c in carried]
    read_infos = [g.info(x) for x in wrt_reads]
    j, cond = g.fresh("j"), g.fresh("cond")
    dvs = [g.fresh(f"{_safe(c.input)}_grad") for c in carried]
    accs = [g.fresh(f"{_safe(x)}_grad_sum") for x in wrt_reads]
    formal = [(j, TensorInfo(TensorProto.INT64, ())), (cond, TensorInfo(TensorProto.BOOL, ()))]
    formal += [(dv, info) for dv, (_, info) in zip(dvs, carried_infos)]
    formal += [(acc, info) for acc, info in zip(accs, read_infos)]
    seeded_outer = [s.outer for s in seeded]
    b = Body(g, body, formal, defined,
             list(reads) + [last] + [s.outer for s in stepped] + seeded_outer + [s.shape for s in stepped if s.shape]
             + [n for h in histories for n in (h.outer, h.offsets, h.lengths)],
             "loop_body")
    inner = b.g
    # prologue: step i and the values of step i
    i = inner.Sub(last, j)
    for s in stepped:
        if s.shape:
            t = j if s.reverse else i
            record = inner.Gather(s.outer, t, axis=s.axis)
            shape = s.shape if inner.rank(s.shape) == 1 else inner.Gather(s.shape, t, axis=0)
            inner.add_node("Reshape", [record, shape], [s.name], inner.fresh("Reshape"), {})
        else:
            inner.add_node("Gather", [s.outer, j if s.reverse else i], [s.name], inner.fresh("Gather"),
                           {"axis": s.axis})
    for h in histories:
        _elements(inner, h.outer, inner.Gather(h.offsets, i, axis=0), inner.Gather(h.lengths, i, axis=0), h.name)
    if step_index:
        inner.add_node("Identity", [i], [step_index], inner.fresh("Identity"), {})
    for n in true_inputs:
        if n:
            inner.add_node("Constant", [], [n], inner.fresh("Constant"),
                           {"value": numpy_helper.from_array(np.array(True), "value")})
    seeds = [inner.Gather(s.outer, j if s.reverse else i, axis=s.axis) for s in seeded]
    ys = [c.output for c in carried] + [s.name for s in seeded]
    xs = [c.input for c in carried] + [s.name for s in wrt_stepped] + list(wrt_reads)
    grads = yield b.steps(ys, dvs + seeds, xs)
    n_c, n_s = len(carried), len(wrt_stepped)
    carried_out = [d if d is not None else zeros_like_value(inner, c.input) for c, d in zip(carried, grads[:n_c])]
    stepped_grads = grads[n_c:n_c + n_s]
    read_grads = grads[n_c + n_s:]
    live = [k for k, d in enumerate(read_grads) if d is not None]
    acc_out = [_accumulate(inner, accs[k], read_grads[k]) for k in live]
    stacked = [flat(inner, d) for d in stepped_grads if d is not None]
    need_order = any(s.reverse is False for s, d in zip(wrt_stepped, stepped_grads) if d is not None)
    true = inner.const(np.array(True), dtype=TensorProto.BOOL)
    graph = b.graph([true] + carried_out + acc_out + stacked + ([flat(inner, i)] if need_order else []),
                    inputs=formal[:2 + n_c] + [formal[2 + n_c + k] for k in live])

    # the Loop itself, in the enclosing graph
    outs = [g.fresh(f"{_safe(c.input)}_grad") for c in carried] + [g.fresh(f"{_safe(wrt_reads[k])}_grad")
                                                                     for k in live]
    outs += [g.fresh(f"{_safe(s.name)}_grads") for s, d in zip(wrt_stepped, stepped_grads) if d is not None]
    order = g.fresh("steps_reversed") if need_order else None
    zeros = [zeros_like_value(g, wrt_reads[k]) for k in live]
    # the condition is given although always true: onnx.reference runs no iteration without it
    go = g.const(np.array(True), dtype=TensorProto.BOOL)
    g.typed_node("Loop", [steps, go, *[c.final_grad for c in carried], *zeros], outs + ([order] if order else []),
                 g.fresh("Loop"), {"body": graph})
    if order:
        order = g.reshape(order, [-1])
    it = iter(outs[n_c + len(live):])
    stepped_out: List[Optional[str]] = []
    for s, d in zip(wrt_stepped, stepped_grads):
        if d is None:
            stepped_out.append(None)
            continue
        stack = next(it)
        if not s.reverse:  # stacked at j = N - 1 - t: put slice t at t
            stack = g.Gather(stack, order, axis=0)
        stepped_out.append(_unflatten(g, stack, s.axis, s.outer))
    read_out: List[Optional[str]] = [None] * len(wrt_reads)
    for o, k in zip(outs[n_c:], live):
        read_out[k] = o
    return LoopGradients(outs[:n_c], stepped_out, read_out)


def _accumulate(g: Emitter, total: str, part: Optional[str]) -> str:
    """``total + part``, as the kind of gradient ``part`` is adds up (a sequence's element-wise)."""
    assert part is not None
    if part in g.combiners:
        return g.combiners[part](g, [total, part])
    return g.Add(total, part)


def _elements(g: Emitter, seq: str, start: str, count: str, out: str) -> None:
    """Emit ``out``: the sequence of the ``count`` elements of sequence ``seq`` from ``start`` on
    (scalar int64 tensors), by a Loop over them."""
    info = g.info(seq)
    k, c, acc = g.fresh("k"), g.fresh("cond"), g.fresh("elements")
    b = Body(g, GraphProto(), [(k, TensorInfo(TensorProto.INT64, ())), (c, TensorInfo(TensorProto.BOOL, ())),
                               (acc, info)], [], [seq, start], "elements")
    body = b.graph([c, b.g.SequenceInsert(acc, b.g.SequenceAt(seq, b.g.Add(start, k)))])
    empty = g.SequenceEmpty(dtype=info.elem_type)
    g.typed_node("Loop", [count, g.const(np.array(True), dtype=TensorProto.BOOL), empty], [out], g.fresh("Loop"),
                 {"body": body})


def zeros_like_value(g: Emitter, x: str) -> str:
    """Zeros shaped like ``x``: a tensor, or a sequence of zero tensors shaped like its elements."""
    if not g.info(x).sequence:
        return g.zeros_like(x)
    from .rules.sequence import zeros_like_sequence  # the sequence rules build on this module

    return zeros_like_sequence(g, x)


def flat(g: Emitter, x: str) -> str:
    """``x`` as a 1-D tensor, for a Loop scan output: onnx.reference stacks Loop scan outputs with
    ``np.vstack``, which adds the new axis only for 1-D elements (others are concatenated)."""
    return g.reshape(x, [-1])


def _unflatten(g: Emitter, x: str, axis: int, like: str) -> str:
    """``x`` (one flattened slice per step, in step order) laid out like ``like``, whose steps run
    along ``axis``."""
    info = g.info(like)
    if info.shape is None:
        raise GradientArgumentError(f"the rank of the scanned tensor {like!r} is unknown; its gradient needs it")
    rank = len(info.shape)
    front = [axis] + [a for a in range(rank) if a != axis]
    out = g.transpose(g.reshape(x, g.dims(like, front)), list(range(1, axis + 1)) + [0] + list(range(axis + 1, rank)))
    return g.as_gradient_of(out, like)


def declared(vi: Optional[onnx.ValueInfoProto]) -> Optional[TensorInfo]:
    """The tensor type a graph input or output declares, or None when it declares none."""
    if vi is None or not vi.type.tensor_type.elem_type:
        return None
    return info_from_type(vi.type)


def _safe(name: str) -> str:
    return name.replace("/", "_") or "t"


def step_count(g: Emitter, x: str, axis: int) -> str:
    """The length of ``x`` along ``axis`` as a scalar int64 tensor."""
    s = g.shape(x)
    if s is not None and isinstance(s[axis], int):
        return g.scalar_int(s[axis])  # type: ignore[arg-type]
    return g.Gather(g.shape_of(x), g.scalar_int(axis), axis=0)
