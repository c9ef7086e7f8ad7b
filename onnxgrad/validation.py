"""Validation: what makes a model fit to differentiate, and its gradient model fit to hand out.

Every check is linear in the model's size and iterative (Kahn's algorithm for cycles), and
names what is wrong and what to do. The structural checks read the graph index
(:class:`onnxgrad.graph.GraphIndex`) as it is being built.
"""

from __future__ import annotations

from collections import deque
from itertools import chain
from typing import TYPE_CHECKING, Dict, List, Set, Tuple

import onnx
from onnx import ModelProto, TensorProto, helper

from .errors import InvalidModelError, first_line
from .inference import light_view, strict_inference
from .tensorinfo import numel

if TYPE_CHECKING:
    from .graph import GraphIndex


def check_initializer_size(t: TensorProto) -> None:
    """The element count of an in-file initializer must match its dims (a corrupt or edited file
    otherwise reaches shape inference, which trusts the dims, and the runtime, which does not)."""
    if t.data_location == TensorProto.EXTERNAL or t.data_type in _UNSIZED:
        return
    expected = numel(t.dims)
    if t.HasField("raw_data"):
        try:
            itemsize = helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        except (KeyError, ValueError, TypeError):
            raise InvalidModelError(
                f"initializer {t.name!r} has an unknown data type ({t.data_type}); the file is corrupt"
            ) from None
        held = len(t.raw_data) // itemsize if len(t.raw_data) % itemsize == 0 else -1
    else:
        field = _TYPED_FIELD.get(t.data_type)
        if field is None:
            return
        held = len(getattr(t, field))
    if held != expected:
        raise InvalidModelError(
            f"initializer {t.name!r} has dims {list(t.dims)} ({expected} elements) but holds "
            f"{'a different amount of' if held < 0 else held} values; the file is corrupt or was edited"
        )


#: Where each common element type keeps its values when not in raw_data.
_TYPED_FIELD: Dict[int, str] = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
                TensorProto.INT64: "int64_data", TensorProto.INT32: "int32_data"}
#: Types whose raw size is not a whole number of bytes per element (or not fixed at all).
_UNSIZED = frozenset({TensorProto.STRING, TensorProto.UNDEFINED}
                     | {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                        if hasattr(TensorProto, n)})


def check_sources(index: GraphIndex) -> None:
    """Names: valid text, none empty, none repeated; initializers hold what their dims say."""
    _check_text(index)
    for t in index.graph.initializer:
        check_initializer_size(t)
    for kind, names in (("graph input", index.graph_inputs),
                        ("initializer", [t.name for t in index.graph.initializer]),
                        ("graph output", index.graph_outputs)):
        seen = set()
        for n in names:
            if not n:
                raise InvalidModelError(f"a {kind} of the main graph has an empty name; every {kind} needs one")
            if n in seen:
                raise InvalidModelError(
                    f"{kind} name {n!r} appears twice in the main graph; tensor names must be unique"
                )
            seen.add(n)


def _check_text(index: GraphIndex) -> None:
    """protobuf hands a string field that is not valid UTF-8 back as bytes: refuse it here,
    before any name is compared, joined or printed."""
    g = index.graph
    strings = [o.domain for o in index.model.opset_import]
    strings += [v.name for v in chain(g.input, g.output, g.value_info, g.initializer)]
    for n, ins, outs in zip(index.nodes, index.node_inputs, index.node_outputs):
        strings += (n.name, n.op_type, n.domain)
        strings += ins
        strings += outs
        if n.attribute:
            strings += [a.name for a in n.attribute]
    try:
        "".join(strings)  # raises TypeError on any bytes, at C speed
        return
    except TypeError:
        pass
    bad = next((s for s in strings if type(s) is not str), None)
    if bad is not None:
        raise InvalidModelError(
            f"the model holds a name that is not valid UTF-8 text ({bad[:40]!r}); the file is corrupt"
        )


def check_structure(index: GraphIndex, sources: Set[str]) -> None:
    """Sparse initializers, unknown domains, dangling inputs, cycles (Kahn's algorithm), node order, outputs."""
    sparse = [s.values.name for s in index.model.graph.sparse_initializer]
    if sparse:
        raise InvalidModelError(
            f"the model stores initializer(s) {', '.join(repr(n) for n in sparse[:5])} as sparse tensors, which "
            "onnxgrad does not support; store them as dense initializers (onnx.numpy_helper.from_array)"
        )
    imported = {"" if o.domain == "ai.onnx" else o.domain for o in index.model.opset_import}
    for idx, node in enumerate(index.nodes):
        domain = "" if node.domain == "ai.onnx" else node.domain
        if domain not in imported:
            raise InvalidModelError(
                f"node {index.node_label(idx)!r} (op type {node.op_type}) is in domain {node.domain!r}, "
                "which the model does not import; add it to the model's opset_import"
            )
        for name in index.node_inputs[idx]:
            if name and name not in index.producer and name not in sources:
                raise InvalidModelError(
                    f"node {index.node_label(idx)!r} (op type {node.op_type}) reads tensor {name!r}, which "
                    "no node, graph input or initializer provides (dangling input); fix or re-export the model"
                )
    producer = index.producer
    if all(producer.get(name, -1) < idx for idx, ins in enumerate(index.node_inputs) for name in ins):
        # every read comes after its producer: no cycle, nodes in topological order
        _check_outputs(index, sources)
        return
    indegree = [0] * len(index.nodes)
    for idx, ins in enumerate(index.node_inputs):
        indegree[idx] = sum(1 for name in ins if name in index.producer)
    queue = deque(i for i, d in enumerate(indegree) if d == 0)
    done = 0
    while queue:
        i = queue.popleft()
        done += 1
        for out in index.node_outputs[i]:
            for c in index.consumers.get(out, ()) if out else ():
                indegree[c] -= 1
                if indegree[c] == 0:
                    queue.append(c)
    if done < len(index.nodes):
        raise InvalidModelError(
            f"the graph has a cycle through nodes {_cycle(index, indegree)}; ONNX graphs must be acyclic"
        )
    for idx, ins in enumerate(index.node_inputs):
        for name in ins:
            p = index.producer.get(name)
            if p is not None and p > idx:
                raise InvalidModelError(
                    f"node {index.node_label(idx)!r} reads {name!r} before node {index.node_label(p)!r} "
                    "produces it; ONNX requires nodes in topological order (re-export or sort the model)"
                )
    _check_outputs(index, sources)


def _check_outputs(index: GraphIndex, sources: Set[str]) -> None:
    """Every graph output has a producer."""
    for name in index.graph_outputs:
        if name not in index.producer and name not in sources:
            raise InvalidModelError(
                f"graph output {name!r} is produced by no node, graph input or initializer; "
                "fix or re-export the model"
            )


def _cycle(index: GraphIndex, indegree: List[int]) -> str:
    """Names of the nodes on one cycle among the nodes Kahn's algorithm could not order."""
    start = next(i for i, d in enumerate(indegree) if d > 0)
    position: Dict[int, int] = {}
    path: List[int] = []
    node = start
    while node not in position:
        position[node] = len(path)
        path.append(node)
        # an unordered node always has a producer that is unordered too
        node = next(p for p in (index.producer.get(n) for n in index.node_inputs[node])
                    if p is not None and indegree[p] > 0)
    loop = path[position[node]:][::-1]
    labels = [repr(index.node_label(i)) for i in loop[:6]] + (["..."] if len(loop) > 6 else [])
    return " -> ".join(labels + [repr(index.node_label(loop[0]))])


def check_onnx(model: ModelProto) -> Tuple[ModelProto, bytes, ModelProto]:
    """onnx's checker and strict shape inference (the checker's full_check) on the model, run on
    its :func:`~onnxgrad.inference.light_view`: (that view, its serialization, the inferred view)."""
    view = light_view(model)
    data = view.SerializeToString()  # once, for the checker and for inference
    try:
        onnx.checker.check_model(data)
    except Exception as e:  # onnx's ValidationError and errors surfaced from its C++ checker
        # A deprecated op version (GroupNormalization-18, which PyTorch still exports) is
        # refused by the checker but run by every runtime: strict inference below still
        # checks the model's types and shapes.
        if "is deprecated in domain_version" not in str(e):
            raise InvalidModelError(
                f"the model is not valid ONNX: {first_line(e)}; onnx.checker.check_model shows the details"
            ) from None
    # the checker's full_check: a model failing it can only give an invalid output
    inferred, error = strict_inference(view, data)
    if error:
        raise InvalidModelError(
            f"the model's types or shapes are inconsistent: {error}; "
            "onnx.checker.check_model(model, full_check=True) shows the details"
        )
    return view, data, inferred


def check_gradient_model(model: ModelProto) -> None:
    """Refuse to hand out a gradient model that fails ONNX's full check (its shape inference).

    onnx's checks of the input miss some inconsistencies a runtime would hit (a Conv weight with
    the wrong channel count, a label of the wrong rank): the backward pass, built from the same
    static shapes, then contradicts them. Better an error than a model nothing can load.
    """
    error = strict_inference(light_view(model), parse=False)[1]
    if error:
        raise InvalidModelError(
            f"the gradient model fails ONNX shape inference ({error}); the input's shapes are "
            "probably inconsistent in a way onnx's checker misses (does onnxruntime run the input?)"
        )
