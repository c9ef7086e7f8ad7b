"""Control flow: If, Loop and Scan (reverse mode through subgraphs).

Besides its inputs, a node with subgraphs reads enclosing-scope values inside them; its rule
returns their gradients after those of its inputs, in :func:`~onnxgrad.subgraph.outer_reads`
order.

* ``If``: an ``If`` on the same condition whose branches replay the forward branch and return
  the gradients of every float value either branch reads (zeros for those the taken branch does
  not read).
* ``Loop`` and ``Scan``: the forward node is replaced by a copy whose body also outputs, per
  iteration, its iteration number and loop-carried inputs (memory linear in the number of
  iterations; a carried sequence is kept as one history sequence of every iteration's elements),
  so the forward loop runs once; then a backward ``Loop``
  (:func:`~onnxgrad.subgraph.reverse_loop`) replays iteration ``N - 1 - j`` at its step j and
  carries the gradients back to the first iteration. The copy counts the iterations actually
  run, so dynamic trip counts and conditions that end a loop early are followed.

The rules are generators: each yields the nested backward pass of its subgraph for the engine to
run from its own stack (:func:`onnxgrad.engine.run`), so nesting depth costs no Python stack.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
from onnx import GraphProto, NodeProto, TensorProto, helper, numpy_helper

from ..emitter import Emitter, Op
from ..engine import Steps
from ..errors import GradientArgumentError
from ..functions import through_body
from ..graph import subgraph_outer_names
from ..tensorinfo import TensorInfo
from ..registry import register_gradient
from .sequence import sequence_gradient
from ..subgraph import (Body, Carried, History, Stepped, declared, outer_reads, reverse_loop, step_count, value_info,
                        zeros_like_value)


def _with_read_grads(op: Op, reads: Sequence[str], grads: List[Optional[str]], got: List[Optional[str]],
                     g: Emitter) -> List[Optional[str]]:
    """``grads`` (one per node input) followed by one per :func:`outer_reads` name; ``got[k]`` is
    the gradient of ``reads[k]``, added to the input slot when that value is also a node input."""
    extra = outer_reads(op.node)
    slots = grads + [None] * len(extra)
    for name, dx in zip(reads, got):
        if dx is None:
            continue
        k = op.inputs.index(name) if name in op.inputs else len(op.inputs) + extra.index(name)
        have = slots[k]
        slots[k] = dx if have is None else _added(g, have, dx)
    return slots


def _added(g: Emitter, a: str, b: str) -> str:
    """``a + b`` for gradients of any kind (those of a sequence add element by element)."""
    combine = g.combiners.get(a) or g.combiners.get(b)
    return combine(g, [a, b]) if combine is not None else g.Add(a, b)


def _of(g: Emitter, grads: Sequence[Optional[str]], xs: Sequence[str]) -> List[Optional[str]]:
    """``grads``, those of sequences among ``xs`` marked as such (the engine then adds them up
    element by element where several meet)."""
    return [sequence_gradient(g, d, x) if d is not None and g.info(x).sequence else d for d, x in zip(grads, xs)]


@register_gradient("If")
def if_grad(g: Emitter, op: Op, *dys: Optional[str]) -> Steps[List[Optional[str]]]:
    reads = subgraph_outer_names(op.node)
    xs = [x for x in reads if g.is_float(x)]
    if not xs:
        return [None] * (1 + len(outer_reads(op.node)))
    branches = {}
    for attr in ("then_branch", "else_branch"):
        branch: GraphProto = op.attr(attr)
        pairs = [(o.name, dy) for o, dy in zip(branch.output, dys) if dy is not None]
        seeds = [dy for _, dy in pairs]
        b = Body(g, branch, [], [], list(reads) + xs + seeds, attr)
        grads = yield b.steps([y for y, _ in pairs], seeds, xs)
        branches[attr] = b.graph([dx if dx is not None else zeros_like_value(b.g, x) for x, dx in zip(xs, grads)])
    outs = [g.fresh(f"{x.replace('/', '_')}_grad") for x in xs]
    g.typed_node("If", [op.inputs[0]], outs, g.fresh("If"), branches)
    return _with_read_grads(op, xs, [None], _of(g, outs, xs), g)


def _record(g: Emitter, op: Op, body: GraphProto, names: Sequence[Tuple[str, TensorInfo]],
            sequences: Sequence[Tuple[str, str, TensorInfo]] = ()) -> Tuple[List[str], List[str]]:
    """Put in place of the forward node ``op`` a copy whose body also outputs each of ``names``
    (body values) as a scan output: per iteration, stacked along a new axis 0 (a Loop's
    flattened, see :func:`~onnxgrad.subgraph.flat`). The copy computes the node's outputs as the
    node did, so the forward work is done once. Returns the stacked tensors, and for each of
    ``sequences`` (a Loop's carried sequences: body input, body output, type) the history of its
    values (:class:`~onnxgrad.subgraph.History`: its initial value, then each step's result) with
    the stacked lengths of those results.

    A Scan's ``scan_output_axes``/``scan_output_directions`` are extended (axis 0, forward)
    when the node sets them."""
    node = op.node
    loop = node.op_type == "Loop"
    copy = GraphProto()
    copy.CopyFrom(body)
    if loop and (names or sequences):
        minus_one = g.fresh("minus_one")
        copy.node.append(helper.make_node("Constant", [], [minus_one], name=minus_one,
                                          value=numpy_helper.from_array(np.array([-1], np.int64), "value")))
    histories: List[str] = []
    lengths: List[str] = []
    n_carried = len(node.input) - 2 if loop else 0
    for inp, out, info in sequences:  # each step appends its result's elements to the history
        past, grown = g.fresh(f"{_safe(inp)}_history"), g.fresh(f"{_safe(inp)}_history_out")
        copy.input.insert(2 + n_carried + len(histories), value_info(past, info))
        copy.output.insert(1 + n_carried + len(histories), value_info(grown, info))
        copy.node.extend(_append_elements(g, out, past, grown, info))
        length = g.fresh(f"{_safe(out)}_length")
        copy.node.append(helper.make_node("SequenceLength", [out], [length], name=length))
        histories.append(g.fresh(f"{_safe(inp)}_history"))
        lengths.append(length)
    stacks = []
    recorded = list(names) + [(n, TensorInfo(TensorProto.INT64, ())) for n in lengths]
    for name, info in recorded:
        kept = g.fresh(f"{_safe(name)}_step")
        if loop:
            copy.node.append(helper.make_node("Reshape", [name, minus_one], [kept], name=kept))
            info = TensorInfo(info.elem_type, (None,))
        else:
            copy.node.append(helper.make_node("Identity", [name], [kept], name=kept))
        copy.output.append(value_info(kept, info))
        stacks.append(g.fresh(f"{_safe(name)}_steps"))
    rec = NodeProto()
    rec.CopyFrom(node)
    carried_in = [i.name for i in body.input[2:]]
    rec.input.extend(node.input[2 + carried_in.index(inp)] for inp, _, _ in sequences)  # histories start there
    outs = list(node.output)
    rec.ClearField("output")
    rec.output.extend(outs[:n_carried] + histories + outs[n_carried:] + stacks)
    for a in rec.attribute:
        if a.name == "body":
            a.g.CopyFrom(copy)
        elif a.name in ("scan_output_axes", "scan_output_directions"):
            a.ints.extend([0] * len(recorded))
    g.replace_forward(op, rec)
    return stacks, histories


def _append_elements(g: Emitter, seq: str, past: str, grown: str, info: TensorInfo) -> List[NodeProto]:
    """Nodes of a loop body making ``grown``: sequence ``past`` with the elements of ``seq`` appended
    (a Loop over them)."""
    k, c, acc, out, count, true = (g.fresh(h) for h in ("k", "cond", "acc", "acc_out", "count", "true"))
    element = g.fresh("element")
    body = helper.make_graph(
        [helper.make_node("SequenceAt", [seq, k], [element], name=element),
         helper.make_node("SequenceInsert", [acc, element], [out], name=out)],
        g.fresh("append").replace("/", "_"),
        [value_info(k, TensorInfo(TensorProto.INT64, ())), value_info(c, TensorInfo(TensorProto.BOOL, ())),
         value_info(acc, info)],
        [value_info(c, TensorInfo(TensorProto.BOOL, ())), value_info(out, info)])
    return [helper.make_node("SequenceLength", [seq], [count], name=count),
            helper.make_node("Constant", [], [true], name=true,
                             value=numpy_helper.from_array(np.array(True), "value")),
            helper.make_node("Loop", [count, true, past], [grown], name=grown, body=body)]


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _tensor_inputs(body: GraphProto, names: Sequence[str], kind: str) -> None:
    for vi in body.input:
        if vi.name in names and (vi.type.HasField("sequence_type") or vi.type.HasField("optional_type")
                                 or vi.type.HasField("map_type")):
            raise GradientArgumentError(
                f"{kind} value {vi.name!r} is not a tensor: its values per iteration cannot be recorded "
                "for the gradient (only tensors can be stacked)")


@register_gradient("Loop")
def loop_grad(g: Emitter, op: Op, *dys: Optional[str]) -> Steps[List[Optional[str]]]:
    body = GraphProto()
    body.CopyFrom(op.attr("body"))  # the node's own is replaced by the recording copy
    n_carried = len(op.inputs) - 2
    body_in = [i.name for i in body.input]
    body_out = [o.name for o in body.output]
    v_in, v_out, scan_out = body_in[2:], body_out[1:1 + n_carried], body_out[1 + n_carried:]
    # A carried value keeps its shape when the body declares the initial value's static shape;
    # otherwise each iteration's shape is recorded too (records are flattened, see _record).
    # A carried sequence is recorded as the history of its values.
    recorded = GraphProto()
    recorded.CopyFrom(body)
    infos, shapes, shape_records, tensors, sequences = [], [], [], [], []
    for k, name in enumerate(v_in):
        start, inner = g.info(op.inputs[2 + k]), declared(body.input[2 + k])
        if start.sequence or (inner is not None and inner.sequence):
            sequences.append((name, v_out[k], TensorInfo(start.elem_type or inner.elem_type, None, True)))  # type: ignore[union-attr]
            continue
        tensors.append(k)
        fixed = inner is not None and inner.shape == start.shape and g.static_shape(op.inputs[2 + k]) is not None
        rank = start.shape if start.shape is not None else inner.shape if inner is not None else None
        dims = None if rank is None else tuple(
            d if fixed or (inner is not None and inner.shape is not None and start.shape is not None
                           and len(inner.shape) == len(rank) and d == inner.shape[i]) else None
            for i, d in enumerate(rank))
        infos.append(TensorInfo(start.elem_type or (inner.elem_type if inner else 0), dims))
        if fixed:
            shapes.append(g.shape_of(op.inputs[2 + k]))
        else:
            shape = g.fresh(f"{name.replace('/', '_')}_shape")
            recorded.node.append(helper.make_node("Shape", [name], [shape], name=shape))
            shape_records.append((shape, TensorInfo(TensorProto.INT64, (None if dims is None else len(dims),))))
            shapes.append("")
    _tensor_inputs(body, [v_in[k] for k in tensors], "loop-carried")
    stacks, histories = _record(g, op, recorded, [(body_in[0], TensorInfo(TensorProto.INT64, ()))]
                                + [(v_in[k], info) for k, info in zip(tensors, infos)] + shape_records, sequences)
    n_t = len(tensors)
    shape_stacks = iter(stacks[1 + n_t:1 + n_t + len(shape_records)])
    shapes = [s or next(shape_stacks) for s in shapes]
    steps = g.Size(stacks[0])  # the iterations actually run
    reads = subgraph_outer_names(op.node)
    wrt = [x for x in reads if g.is_float(x)]
    floats = [k for k in range(n_carried) if g.is_float(op.outputs[k])]
    records = []
    for (name, _, _), history, lengths in zip(sequences, histories, stacks[len(stacks) - len(sequences):]):
        k = v_in.index(name)
        # the history holds the initial value, then each step's result
        every = g.Concat(g.reshape(g.SequenceLength(op.inputs[2 + k]), [1]), g.reshape(lengths, [-1]), axis=0)
        records.append(History(name, history, g.CumSum(every, g.scalar_int(0), exclusive=1), every))
    res = yield from reverse_loop(
        g, body, steps,
        stepped=[Stepped(v_in[k], stack, shape=shape, info=info)
                 for k, stack, shape, info in zip(tensors, stacks[1:], shapes, infos)],
        histories=records, step_index=body_in[0], true_inputs=[body_in[1]],
        carried=[Carried(v_in[k], v_out[k], dys[k] or zeros_like_value(g, op.outputs[k])) for k in floats],
        seeded=[Stepped(y, dy) for y, dy in zip(scan_out, dys[n_carried:]) if dy is not None],
        reads=reads, wrt_reads=wrt)
    grads: List[Optional[str]] = [None] * len(op.inputs)
    for k, dv in zip(floats, _of(g, res.carried, [op.inputs[2 + k] for k in floats])):
        grads[2 + k] = dv
    return _with_read_grads(op, wrt, grads, _of(g, res.reads, wrt), g)


@register_gradient("Scan", since=9)
def scan_grad(g: Emitter, op: Op, *dys: Optional[str]) -> Steps[List[Optional[str]]]:
    body = GraphProto()
    body.CopyFrom(op.attr("body"))  # the node's own is replaced by the recording copy
    m = int(op.attr("num_scan_inputs"))
    n = len(op.inputs) - m
    k_out = len(op.outputs) - n
    in_axes = list(op.attr("scan_input_axes", [0] * m))
    in_dirs = list(op.attr("scan_input_directions", [0] * m))
    out_axes = list(op.attr("scan_output_axes", [0] * k_out))
    out_dirs = list(op.attr("scan_output_directions", [0] * k_out))
    body_in = [i.name for i in body.input]
    body_out = [o.name for o in body.output]
    s_in, x_in, s_out, y_out = body_in[:n], body_in[n:], body_out[:n], body_out[n:]
    scans = op.inputs[n:]
    in_axes = [a % g.rank(x) if a < 0 else a for a, x in zip(in_axes, scans)]
    out_axes = [a % g.rank(y) if a < 0 else a for a, y in zip(out_axes, op.outputs[n:])]
    _tensor_inputs(body, s_in, "scan state")
    steps = step_count(g, scans[0], in_axes[0])
    infos = []
    for k, name in enumerate(s_in):
        outer, inner = g.info(op.inputs[k]), declared(body.input[k])
        infos.append(outer if outer.shape is not None or inner is None else inner)
    stacks = _record(g, op, body, list(zip(s_in, infos)))[0] if n else []
    reads = subgraph_outer_names(op.node)
    wrt = [x for x in reads if g.is_float(x)]
    floats = [k for k in range(n) if g.is_float(op.outputs[k])]
    scanned = [Stepped(name, x, a, d == 1) for name, x, a, d in zip(x_in, scans, in_axes, in_dirs)]
    res = yield from reverse_loop(
        g, body, steps,
        stepped=[Stepped(name, stack) for name, stack in zip(s_in, stacks)] + scanned,
        carried=[Carried(s_in[k], s_out[k], dys[k]) for k in floats],  # type: ignore[arg-type]
        seeded=[Stepped(y, dy, a, d == 1) for y, dy, a, d in zip(y_out, dys[n:], out_axes, out_dirs)
                if dy is not None],
        wrt_stepped=[s for s, x in zip(scanned, scans) if g.is_float(x)],
        reads=reads, wrt_reads=wrt)
    grads: List[Optional[str]] = [None] * len(op.inputs)
    for k, ds in zip(floats, res.carried):
        grads[k] = ds
    for x, dx in zip([i for i, x in enumerate(scans) if g.is_float(x)], res.stepped):
        grads[n + x] = dx
    return _with_read_grads(op, wrt, grads, res.reads, g)


# LinearAttention's schema defines it as a recurrence (a Scan over time): its gradient is that of
# its function body, i.e. this module's Scan rule.
register_gradient("LinearAttention", since=27)(through_body)
