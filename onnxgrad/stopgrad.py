"""``stop_gradient``: the counterpart of ``tf.stop_gradient`` for a built ONNX graph."""

from __future__ import annotations

from typing import Dict, List, Sequence, Union

from onnx import ModelProto, NodeProto, helper

from .arguments import check_names, parse_names
from .graph import GraphIndex
from .loading import ModelLike, load_model

#: Domain and op type of the marker :func:`stop_gradient` inserts (a model-local function).
MARKER_DOMAIN = "onnxgrad"
MARKER_OP = "StopGradient"


def stop_gradient(model: ModelLike, names: Union[str, Sequence[str]]) -> ModelProto:
    """Return a copy of ``model`` where backprop stops at each named tensor (``tf.stop_gradient``).

    Each named intermediate tensor ``t`` is re-produced by an ``onnxgrad.StopGradient`` node, a
    model-local function whose body is ``Identity``: the model computes exactly what it did (in
    onnxruntime, onnx.reference or any runtime that inlines local functions), while
    :func:`gradients` sees a non-differentiable op. Gradients with respect to ``t`` itself are
    still available. Graph inputs and initializers are already where backprop ends, so marking
    them changes nothing.
    """
    names_l = parse_names(names, "names")
    proto = load_model(model)
    index = GraphIndex(proto)
    check_names(index, names_l, "names")
    opset = index.opset
    if not any(f.domain == MARKER_DOMAIN and f.name == MARKER_OP for f in proto.functions):
        proto.functions.append(helper.make_function(
            MARKER_DOMAIN, MARKER_OP, ["x"], ["y"], [helper.make_node("Identity", ["x"], ["y"])],
            [helper.make_opsetid("", opset)]))
    if not any(i.domain == MARKER_DOMAIN for i in proto.opset_import):
        proto.opset_import.append(helper.make_opsetid(MARKER_DOMAIN, 1))
    taken = set(index.all_names())
    positions = {}
    for t in names_l:
        p = index.producer.get(t)
        if p is None or t in positions:
            continue  # graph input / initializer / already marked
        raw = f"{t}/before_stop_gradient"
        k = 1
        while raw in taken:
            raw = f"{t}/before_stop_gradient_{k}"
            k += 1
        taken.add(raw)
        node = proto.graph.node[p]
        node.output[list(node.output).index(t)] = raw
        positions[t] = (p, helper.make_node(MARKER_OP, [raw], [t], name=f"{t}/StopGradient", domain=MARKER_DOMAIN))
    # insert each marker right after its producer, keeping the node list topologically sorted
    new_nodes = []
    after: Dict[int, List[NodeProto]] = {p: [] for p, _ in positions.values()}
    for p, marker in positions.values():
        after[p].append(marker)
    for i, node in enumerate(proto.graph.node):
        new_nodes.append(node)
        new_nodes.extend(after.get(i, ()))
    del proto.graph.node[:]
    proto.graph.node.extend(new_nodes)
    return proto
