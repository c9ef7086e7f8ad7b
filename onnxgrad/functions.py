"""Differentiating through function bodies: model-local functions and ONNX schema functions.

A node without a gradient rule is differentiated through its function body when it has one: a
model-local function (``model.functions``: the dynamo exporter's modules exported as functions,
onnxscript) or an ONNX operator whose schema defines the op as a function of other ops (SwiGLU,
LinearAttention, and every op onnx expands). The body is instantiated for the node (its formal
inputs bound to the node's inputs, attributes referenced by the body resolved, internal values
renamed), replayed in the backward part of the graph and differentiated by the engine, so the
forward graph stays as it was. A registered rule always wins over the body (the
``onnxgrad.StopGradient`` marker is registered as non-differentiable).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

import onnx
from onnx import FunctionProto, GraphProto, NodeProto, TensorProto, helper

from . import registry
from .emitter import Emitter, Op
from .errors import GradientArgumentError, InvalidModelError, NoGradientError
from .graph import GraphIndex

if TYPE_CHECKING:
    from .engine import Steps


def body_rule(index: GraphIndex, node: NodeProto) -> Optional[registry.GradientRule]:
    """A rule differentiating ``node`` through its function body, or None when it has none."""
    if _local_function(index.model, node) is None and _schema(node, index.opset) is None:
        return None
    return registry.GradientRule(node.op_type, node.domain, registry.RULE, through_body)


def _local_function(model: onnx.ModelProto, node: NodeProto) -> Optional[FunctionProto]:
    for f in model.functions:
        if f.name == node.op_type and f.domain == node.domain and f.overload == node.overload:
            return f
    return None


def _schema(node: NodeProto, opset: int) -> Any:
    """The schema of a default-domain ``node`` if it defines a function body, else None (typed Any:
    onnx's stubs lack OpSchema's function accessors)."""
    if node.domain not in ("", "ai.onnx"):
        return None
    try:
        schema: Any = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        return None
    return schema if schema.has_function or schema.has_context_dependent_function else None


def _function(g: Emitter, node: NodeProto) -> FunctionProto:
    """The body of ``node``: its model-local function, else its schema's function at the model's opset."""
    local = _local_function(g.index.model, node)
    if local is not None:
        return local
    schema = _schema(node, g.opset)
    assert schema is not None  # body_rule chose this rule because there is one
    body = FunctionProto()
    if schema.has_function:
        versions = [v for v in schema.function_opset_versions if v <= g.opset]
        body.ParseFromString(schema.get_function_with_opset_version(max(versions)) if versions else
                             schema.function_body.SerializeToString())
        return body
    versions = [v for v in schema.context_dependent_function_opset_versions if v <= g.opset]
    if versions:  # else the body stays empty: through_body reports it
        types = [helper.make_tensor_type_proto(g.dtype(i), g.shape(i)).SerializeToString() if i else
                 onnx.TypeProto().SerializeToString() for i in node.input]
        body.ParseFromString(schema.get_context_dependent_function_with_opset_version(
            max(versions), node.SerializeToString(), types))
        if not body.output and _double_stash(g, node):
            _double_stash_body(schema, max(versions), node, types, body)
    return body


def _double_stash(g: Emitter, node: NodeProto) -> bool:
    """A node of float64 inputs asking for a float64 stash: onnx builds no body for stash_type
    double (LayerNormalization), though the float stash's body computes the same once its casts
    to the stash type cast to double."""
    stash = next((a.i for a in node.attribute if a.name == "stash_type"), None)
    floats = [i for i in node.input if i and g.is_float(i)]
    return stash == TensorProto.DOUBLE and bool(floats) and all(g.dtype(i) == TensorProto.DOUBLE for i in floats)


def _double_stash_body(schema: Any, version: int, node: NodeProto, types: List[bytes], body: FunctionProto) -> None:
    """Fill ``body`` with the body for stash_type float, its casts to float made casts to double:
    with every float input double, only the stash is float in that body."""
    as_float = NodeProto()
    as_float.CopyFrom(node)
    for a in as_float.attribute:
        if a.name == "stash_type":
            a.i = TensorProto.FLOAT
    body.ParseFromString(schema.get_context_dependent_function_with_opset_version(
        version, as_float.SerializeToString(), types))
    for n in body.node:
        for a in n.attribute:
            if n.op_type == "Cast" and a.name == "to" and a.i == TensorProto.FLOAT:
                a.i = TensorProto.DOUBLE


def instantiate(g: Emitter, node: NodeProto, body: FunctionProto) -> Tuple[List[NodeProto], List[str]]:
    """``body``'s nodes for ``node``: formal inputs bound to the node's inputs, attribute
    references resolved, every internal value renamed by ``g``, and calls of model-local functions
    without a rule expanded the same way (depth first, so the nodes stay in topological order).
    Returns (nodes, output names)."""
    first, outs = _bind(g, node, body, _schema_defaults(node, g.opset))
    nodes: List[NodeProto] = []
    stack = [iter(first)]
    while stack:
        n = next(stack[-1], None)
        if n is None:
            stack.pop()
            continue
        f = _local_function(g.index.model, n)
        if f is None or registry.lookup(n.op_type, n.domain, 1) is not None:
            nodes.append(n)
            continue
        inner, inner_outs = _bind(g, n, f, {})
        # the call's outputs keep their (already instantiated) names for the nodes that read them
        inner += [helper.make_node("Identity", [i], [o], name=g.fresh("Identity"))
                  for i, o in zip(inner_outs, n.output) if o]
        stack.append(iter(inner))
    return nodes, outs


def _schema_defaults(node: NodeProto, opset: int) -> Dict[str, onnx.AttributeProto]:
    """The default attribute values of ``node``'s schema (a schema function's body references them)."""
    schema = _schema(node, opset)
    if schema is None:
        return {}
    return {name: a.default_value for name, a in schema.attributes.items() if a.default_value.type}


def _bind(g: Emitter, node: NodeProto, body: FunctionProto,
          defaults: Dict[str, onnx.AttributeProto]) -> Tuple[List[NodeProto], List[str]]:
    """One level of :func:`instantiate`: ``body``'s own nodes for ``node``."""
    rename: Dict[str, str] = {f: a for f, a in zip(body.input, node.input)}
    rename.update({f: "" for f in body.input[len(node.input):]})  # omitted optional inputs
    given = dict(defaults)
    given.update({a.name: a for a in body.attribute_proto})
    given.update({a.name: a for a in node.attribute})
    nodes: List[NodeProto] = []
    for n in body.node:
        copy = NodeProto()
        copy.CopyFrom(n)
        copy.input[:] = [rename.get(i, i) for i in n.input]
        for k, o in enumerate(n.output):
            if o:
                rename[o] = copy.output[k] = g.fresh(o)
        copy.name = g.fresh(n.op_type)
        _resolve_attributes(copy, given)
        _rename_subgraph_reads(copy, rename)
        nodes.append(copy)
    return nodes, [rename.get(o, o) for o in body.output]


def _resolve_attributes(node: NodeProto, given: Dict[str, onnx.AttributeProto]) -> None:
    """Replace attributes that reference the function's (``ref_attr_name``) by the node's values;
    those the node leaves unset and the function gives no default for are dropped."""
    kept = []
    for a in node.attribute:
        if a.ref_attr_name:
            value = given.get(a.ref_attr_name)
            if value is None:
                continue
            resolved = onnx.AttributeProto()
            resolved.CopyFrom(value)
            resolved.name = a.name
            a = resolved
        kept.append(a)
    del node.attribute[:]
    node.attribute.extend(kept)


def _rename_subgraph_reads(node: NodeProto, rename: Dict[str, str]) -> None:
    """Values of the function a subgraph of ``node`` reads take their instantiated names."""
    graphs: List[GraphProto] = [a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH]
    graphs += [s for a in node.attribute if a.type == onnx.AttributeProto.GRAPHS for s in a.graphs]
    while graphs:
        graph = graphs.pop()
        for n in graph.node:
            n.input[:] = [rename.get(i, i) for i in n.input]
            graphs.extend(a.g for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
            graphs.extend(s for a in n.attribute if a.type == onnx.AttributeProto.GRAPHS for s in a.graphs)
        for o in graph.output:
            o.name = rename.get(o.name, o.name)


def through_body(g: Emitter, op: Op, *dys: Optional[str]) -> "Steps[List[Optional[str]]]":
    """The gradient rule of an op without one: replay its function body and backpropagate through it."""
    from .subgraph import Body  # subgraph.py builds on the engine, which imports this module lazily

    node = op.node
    body = _function(g, node)
    if not body.output:
        raise NoGradientError(
            f"No gradient defined for operation '{node.name or node.output[0]}' (op type: {node.op_type}, opset "
            f"{g.opset}), and onnx builds no function body for its attributes and input types; register a rule "
            f"with @onnxgrad.register_gradient({node.op_type!r})")
    nodes, outs = instantiate(g, node, body)
    forward = helper.make_graph(nodes, f"{node.op_type}_body", [], [])
    pairs = [(y, dy) for y, dy in zip(outs, dys) if dy is not None]
    xs = [x for x in dict.fromkeys(op.inputs) if x and g.is_float(x)]
    try:
        b = Body(g, forward, [], [], list(op.inputs) + [dy for _, dy in pairs], f"{node.op_type}_body")
        grads = dict(zip(xs, (yield b.steps([y for y, _ in pairs], [dy for _, dy in pairs], xs))))
    except (InvalidModelError, GradientArgumentError) as e:
        raise NoGradientError(
            f"No gradient defined for operation '{node.name or node.output[0]}' (op type: {node.op_type}, opset "
            f"{g.opset}), and differentiating its function body failed: {e}; register a rule with "
            f"@onnxgrad.register_gradient({node.op_type!r})") from None
    return b.inline_gradients(grads, op.inputs)
