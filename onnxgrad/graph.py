"""The graph index: a model's main graph as producers, consumers, dtypes and shapes.

Nothing here knows an operator's meaning. Building the index validates the graph
(:mod:`onnxgrad.validation`) and infers its tensors' types (:mod:`onnxgrad.inference`).
"""

from __future__ import annotations

from typing import Dict, FrozenSet, Iterable, List, Tuple

import onnx
from onnx import ModelProto, NodeProto

from . import validation
from .errors import InvalidModelError
from .inference import infer_types
from .tensorinfo import FLOAT_TYPES, UNKNOWN, TensorInfo

__all__ = ["FLOAT_TYPES", "MIN_OPSET", "GraphIndex", "default_opset", "subgraph_outer_names"]

MIN_OPSET = 9


def default_opset(model: ModelProto) -> int:
    """The version of the default ('' / 'ai.onnx') domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise InvalidModelError("the model does not import the default ONNX domain ('')")


def subgraph_outer_names(node: NodeProto) -> List[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope, in order."""
    found: List[str] = []
    seen = set()
    stack: List[Tuple[onnx.GraphProto, FrozenSet[str]]] = [
        (g, frozenset()) for a in node.attribute
        for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))
    ]
    while stack:
        graph, outer_defined = stack.pop()
        local = set(outer_defined)
        local.update(i.name for i in graph.input)
        local.update(i.name for i in graph.initializer)
        for n in graph.node:
            for name in n.input:
                if name and name not in local and name not in seen:
                    seen.add(name)
                    found.append(name)
            for a in n.attribute:
                subs = [a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs)
                stack.extend((s, frozenset(local)) for s in subs)
            local.update(n.output)
    return found


class GraphIndex:
    """Producer/consumer index of a model's main graph plus inferred tensor types.

    Sources (graph inputs, initializers) have no producer node. Node ``i`` is ``nodes[i]``.
    Names a node's subgraphs read from the main graph count as extra inputs of that node, so a
    gradient flowing into an If/Loop/Scan body is seen (and reported as unsupported).
    """

    def __init__(self, model: ModelProto) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        if self.opset < MIN_OPSET:
            raise InvalidModelError(
                f"the model uses opset {self.opset}; onnxgrad needs opset {MIN_OPSET} or newer "
                "(convert it with onnx.version_converter.convert_version(model, 13))"
            )
        self.nodes: List[NodeProto] = list(self.graph.node)
        # each field of each node read once: protobuf field access is the cost of large graphs
        self.node_outputs: List[List[str]] = [list(n.output) for n in self.nodes]
        self.node_inputs: List[List[str]] = [list(n.input) for n in self.nodes]
        self.initializers = {t.name for t in self.graph.initializer}
        self.graph_inputs = [i.name for i in self.graph.input]
        self.graph_outputs = [o.name for o in self.graph.output]
        self.producer: Dict[str, int] = {}
        self.consumers: Dict[str, List[int]] = {}
        validation.check_sources(self)
        sources = set(self.graph_inputs) | self.initializers
        for idx, node in enumerate(self.nodes):
            for out in self.node_outputs[idx]:
                if not out:
                    continue
                if out in self.producer or out in sources:
                    raise InvalidModelError(
                        f"tensor name {out!r} is produced twice (node {node.name or idx!r}); "
                        "every tensor must have exactly one producer"
                    )
                self.producer[out] = idx
        graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        consumers = self.consumers
        for idx, node in enumerate(self.nodes):
            ins = self.node_inputs[idx]
            if node.attribute and any(a.type in graph_kinds for a in node.attribute):
                ins += [n for n in subgraph_outer_names(node) if n not in ins]
            for name in ins:
                if name:
                    if name in consumers:
                        consumers[name].append(idx)
                    else:
                        consumers[name] = [idx]
        validation.check_structure(self, sources)
        _, data, inferred = validation.check_onnx(model)
        self.info = infer_types(model, inferred, data, self.producer)

    # -- names ----------------------------------------------------------------------------
    def exists(self, name: str) -> bool:
        return name in self.producer or name in self.initializers or name in self.graph_inputs

    def all_names(self) -> Iterable[str]:
        yield from self.graph_inputs
        yield from self.initializers
        yield from self.producer

    def node_label(self, idx: int) -> str:
        node = self.nodes[idx]
        return node.name or f"#{idx} ({node.op_type} -> {', '.join(node.output)})"

    def tensor_info(self, name: str) -> TensorInfo:
        """What is known about a tensor of the main graph."""
        return self.info.get(name, UNKNOWN)
