"""Runtime profiles: workarounds that cost something, applied only when a runtime needs them.

onnxgrad's default output is already portable wherever that costs nothing measurable (see
``docs/portability.md``). A profile, chosen with ``gradients(..., target="openvino")`` or
``onnxgrad differentiate --target openvino``, adds what a particular runtime needs on top:

* ``openvino``: every constant weight (an initializer or ``Constant`` output of rank >= 2 that is
  not also a graph input) read by both forward and backward nodes gets a separate copy for the
  backward nodes. OpenVINO's CPU plugin otherwise shares the packed form of the weight between,
  e.g., a forward ``MatMul(x, W)`` and a backward ``MatMul(dy, Transpose(W))`` and computes the
  second with the first's layout (``docs/runtime-bugs/openvino-shared-weight``). Costs one more
  copy of those weights in the file and in memory.
* ``tract``: forward ops tract cannot run are decomposed before differentiation into ops it runs
  (``SoftmaxCrossEntropyLoss`` into ``LogSoftmax``, ``GatherElements``, ``Where``, ``ReduceSum``...),
  with the same output names and values, and each broadcast undone over a symbolic dim is
  followed by a no-op ``Slice`` to x's dims, which tract's shape analysis needs. Costs a few
  more nodes (and a copy per such Slice).
* ``portable``: the ``openvino`` and ``tract`` workarounds together.

The forward values a profile produces are those of the original model; only node counts and
sizes change. Both profiles work on the main graph: a weight read inside the body of a backward
``If``/``Loop``/``Scan`` keeps the shared name, and a ``SoftmaxCrossEntropyLoss`` inside a
subgraph or a model-local function is left fused.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Set

import numpy as np
from onnx import AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, helper, numpy_helper

from .errors import GradientArgumentError

#: profile name -> one line on what it does (``onnxgrad differentiate --help`` shows these)
TARGETS: Dict[str, str] = {
    "openvino": "a separate copy of each constant weight that backward ops read (OpenVINO's shared packed weights); "
                "Scatter-9 instead of MaxUnpool before opset 11",
    "tract": "forward ops tract lacks (SoftmaxCrossEntropyLoss) decomposed; dims restated for its shape analysis; "
             "Scatter-9 instead of MaxUnpool before opset 11",
    "portable": "the openvino and tract workarounds together (one model for every runtime measured)",
}


def check_target(target: Optional[str]) -> Optional[str]:
    """``target`` if it names a profile (or is None), else a GradientArgumentError listing them."""
    if target is None or target in TARGETS:
        return target
    raise GradientArgumentError(f"unknown target {target!r}; choose one of: {', '.join(sorted(TARGETS))}")


def prepare_forward(model: ModelProto, target: Optional[str]) -> bool:
    """Rewrite ``model``'s main graph in place for ``target`` before differentiation.

    Returns True when nodes changed (the caller's index of the graph is then stale).
    """
    if target not in ("tract", "portable"):
        return False
    return _decompose(model, {"SoftmaxCrossEntropyLoss": _softmax_cross_entropy})


def restates_dims(target: Optional[str]) -> bool:
    """Whether the emitter states x's dims after undoing a broadcast over a symbolic dim (a no-op
    Slice tract's shape analysis needs: it cannot tell which axes a run-time ReduceSum kept)."""
    return target in ("tract", "portable")


def scatters_before_11(target: Optional[str]) -> bool:
    """Whether scatters before opset 11 are Scatter-9 (which OpenVINO and tract run) rather than
    MaxUnpool (which they lack; onnx.reference lacks Scatter-9 instead)."""
    return target in ("openvino", "tract", "portable")


def finish(model: ModelProto, n_forward: int, target: Optional[str]) -> None:
    """Adjust the gradient model in place for ``target``; nodes before ``n_forward`` are forward."""
    if target in ("openvino", "portable"):
        _separate_backward_weights(model.graph, n_forward)


# ---------------------------------------------------------------- openvino
def _separate_backward_weights(graph: GraphProto, n_forward: int) -> None:
    """Point backward readers of each constant weight the forward also reads at a copy of it.

    A weight computed from constants (``Transpose(W)`` as exporters write ``Linear``) is a
    constant to OpenVINO too, so its producers are copied along with the initializers they read.
    """
    fed = {i.name for i in graph.input}  # an initializer that is also an input can be overridden: not constant
    initializers = {t.name: t for t in graph.initializer if t.name not in fed}
    producer: Dict[str, NodeProto] = {}  # constant values computed by forward nodes
    for node in graph.node[:n_forward]:
        computed = node.op_type == "Constant" or (
            node.input and all(not i or i in initializers or i in producer for i in node.input)
            and not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for a in node.attribute))
        if computed and node.domain in ("", "ai.onnx"):
            producer.update((o, node) for o in node.output if o)

    def is_weight(name: str) -> bool:
        if name in producer:
            node = producer[name]
            return node.op_type != "Constant" or len(node.attribute[0].t.dims) >= 2
        return name in initializers and len(initializers[name].dims) >= 2

    forward_reads = {i for node in graph.node[:n_forward] for i in node.input if is_weight(i)}
    taken = _names(graph)
    copies: Dict[str, str] = {}
    made: List[NodeProto] = []
    for node in graph.node[n_forward:]:
        for k, name in enumerate(node.input):
            if name in forward_reads:
                node.input[k] = _copy_cone(name, graph, initializers, producer, copies, made, taken)
    for i, node in enumerate(made):  # producers first, ahead of every backward node
        graph.node.insert(n_forward + i, node)


def _copy_cone(name: str, graph: GraphProto, initializers: Dict[str, TensorProto], producer: Dict[str, NodeProto],
               copies: Dict[str, str], made: List[NodeProto], taken: Set[str]) -> str:
    """The name of a copy of constant value ``name``, copying its producers (post-order, no recursion)."""
    stack = [name]
    while stack:
        top = stack[-1]
        if top in copies:
            stack.pop()
            continue
        if top in initializers:
            tensor = TensorProto()
            tensor.CopyFrom(initializers[top])
            tensor.name = copies[top] = _fresh(f"{top}/backward_copy", taken)
            graph.initializer.append(tensor)
            stack.pop()
            continue
        node = producer[top]
        missing = [i for i in node.input if i and i not in copies]
        if missing:
            stack.extend(missing)
            continue
        clone = NodeProto()
        clone.CopyFrom(node)
        clone.name = _fresh(f"{node.name or node.output[0]}/backward_copy", taken)
        for k, i in enumerate(node.input):
            if i:
                clone.input[k] = copies[i]
        for k, o in enumerate(node.output):
            if o:
                clone.output[k] = copies[o] = _fresh(f"{o}/backward_copy", taken)
        made.append(clone)
        stack.pop()
    return copies[name]


# ---------------------------------------------------------------- tract
Decomposition = Callable[["_Builder", NodeProto], None]


def _decompose(model: ModelProto, table: Dict[str, Decomposition]) -> bool:
    """Replace each main-graph node whose op type is in ``table`` by the nodes its entry builds."""
    graph = model.graph
    if not any(n.op_type in table and n.domain in ("", "ai.onnx") for n in graph.node):
        return False
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    b = _Builder(opset, _names(graph), _elem_types(model))
    for node in graph.node:
        entry = table.get(node.op_type) if node.domain in ("", "ai.onnx") else None
        if entry is None:
            b.nodes.append(node)
        else:
            entry(b, node)
    del graph.node[:]
    graph.node.extend(b.nodes)
    return True


class _Builder:
    """Appends nodes with fresh names in the forms the model's opset wants."""

    def __init__(self, opset: int, taken: Set[str], types: Dict[str, int]) -> None:
        self.opset, self.taken, self.types = opset, taken, types
        self.nodes: List[NodeProto] = []
        self.hint = "decomposed"

    def op(self, op_type: str, *inputs: str, out: Optional[str] = None, **attrs: Any) -> str:
        """One node; its output is ``out`` or a fresh name under the current hint."""
        name = out or _fresh(f"{self.hint}/{op_type}", self.taken)
        self.nodes.append(helper.make_node(op_type, list(inputs), [name], name=name, **attrs))
        return name

    def const(self, value: np.ndarray) -> str:
        return self.op("Constant", value=numpy_helper.from_array(value, "value"))

    def unsqueeze(self, x: str, axis: int, out: Optional[str] = None) -> str:
        if self.opset >= 13:
            return self.op("Unsqueeze", x, self.const(np.array([axis], np.int64)), out=out)
        return self.op("Unsqueeze", x, out=out, axes=[axis])

    def squeeze(self, x: str, axis: int, out: Optional[str] = None) -> str:
        if self.opset >= 13:
            return self.op("Squeeze", x, self.const(np.array([axis], np.int64)), out=out)
        return self.op("Squeeze", x, out=out, axes=[axis])

    def total(self, x: str, out: Optional[str] = None) -> str:
        """Sum of every element (a scalar)."""
        return self.op("ReduceSum", x, out=out, keepdims=0)


def _softmax_cross_entropy(b: _Builder, node: NodeProto) -> None:
    """SoftmaxCrossEntropyLoss(scores [N, C, ...], labels [N, ...], weights [C]?) by its definition:
    loss_i = -w[label_i] * log_softmax(scores)_i[label_i], w = 0 where label_i == ignore_index,
    reduced by none / sum / mean (mean divides by the sum of the w of the labels)."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    reduction = attrs.get("reduction", b"mean")
    reduction = reduction.decode() if isinstance(reduction, bytes) else reduction
    ignore = attrs.get("ignore_index")
    scores, labels = node.input[0], node.input[1]
    weights = node.input[2] if len(node.input) > 2 and node.input[2] else None
    b.hint = node.name or node.output[0]
    label_np = helper.tensor_dtype_to_np_dtype(b.types.get(labels, TensorProto.INT64))

    log_prob_out = node.output[1] if len(node.output) > 1 and node.output[1] else None
    if b.opset >= 13:
        log_prob = b.op("LogSoftmax", scores, axis=1, out=log_prob_out)
    else:  # LogSoftmax-11 flattens every dim from axis on: classes alone need the reduction form
        log_prob = b.op("Sub", scores, b.op("ReduceLogSumExp", scores, axes=[1], keepdims=1), out=log_prob_out)
    w: Optional[str] = None
    if ignore is not None:
        ignored = b.op("Equal", labels, b.const(np.array(ignore, label_np)))
        labels = b.op("Where", ignored, b.const(np.array(0, label_np)), labels)
        kept = b.op("Not", ignored)
        w = b.op("Cast", kept, to=b.types.get(scores, TensorProto.FLOAT))
    if weights is not None:
        per_label = b.op("Gather", weights, labels)
        w = per_label if w is None else b.op("Mul", per_label, w)
    picked = b.squeeze(b.op("GatherElements", log_prob, b.unsqueeze(labels, 1), axis=1), 1)
    loss = b.op("Neg", picked)
    if w is not None:
        loss = b.op("Mul", loss, w)
    out = node.output[0]
    if reduction == "none":
        b.op("Identity", loss, out=out)
    elif reduction == "sum":
        b.total(loss, out=out)
    elif w is None:
        b.op("ReduceMean", loss, out=out, keepdims=0)
    else:
        b.op("Div", b.total(loss), b.total(w), out=out)


# ---------------------------------------------------------------- names and types
def _names(graph: GraphProto) -> Set[str]:
    taken = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {o.name for o in graph.output}
    for node in graph.node:
        taken.update(node.input)
        taken.update(node.output)
        taken.add(node.name)
    return taken


def _fresh(hint: str, taken: Set[str]) -> str:
    name, k = hint, 0
    while name in taken:
        k += 1
        name = f"{hint}_{k}"
    taken.add(name)
    return name


def _elem_types(model: ModelProto) -> Dict[str, int]:
    """Element types of the main graph's values, from shape inference (no error if it cannot)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except Exception:  # noqa: BLE001 - types are a hint here; the default is used without them
        inferred = model.graph
    values = list(inferred.input) + list(inferred.value_info) + list(inferred.output)
    types = {v.name: v.type.tensor_type.elem_type for v in values if v.type.HasField("tensor_type")}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types
