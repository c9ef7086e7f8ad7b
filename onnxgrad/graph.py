"""Reading a model and indexing its main graph: producers, consumers, dtypes and shapes.

Nothing here knows an operator's meaning. Weights stored in external files are never loaded:
only their names, dtypes and shapes are needed to build a backward pass.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import onnx
from onnx import ModelProto, NodeProto, TensorProto

from .errors import GradientArgumentError, InvalidModelError, ModelReadError

ModelLike = Union[ModelProto, str, "os.PathLike[str]"]

#: Element types that carry gradients (TensorFlow's "backpropagatable" dtypes).
FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE}
)

#: A static dimension is an int, a symbolic one a str, an unknown one None.
Dim = Union[int, str, None]

MIN_OPSET = 9


def load_model(model: ModelLike) -> ModelProto:
    """Return a private copy of ``model`` (a ModelProto or a path), external data not loaded."""
    if isinstance(model, ModelProto):
        copy = ModelProto()
        copy.CopyFrom(model)
        return copy
    if not isinstance(model, (str, os.PathLike)):
        raise ModelReadError(
            f"model must be an onnx.ModelProto or a path to a .onnx file, not {type(model).__name__}"
        )
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelReadError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelReadError(f"model path is a directory, not a file: {path}")
    if os.path.getsize(path) == 0:
        raise ModelReadError(f"model file is empty: {path}")
    try:
        with open(path, "rb") as f:
            proto = ModelProto()
            proto.ParseFromString(f.read())
    except OSError as e:
        raise ModelReadError(f"cannot read model file {path}: {e.strerror or e}") from None
    except Exception as e:  # protobuf's DecodeError and friends
        raise ModelReadError(
            f"{path} is not an ONNX model (protobuf parse failed: {e}); "
            "check that the file is complete and really is a .onnx model"
        ) from None
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelReadError(
            f"{path} parsed as protobuf but holds no ONNX graph or opset; is it really a model?"
        )
    return proto


def default_opset(model: ModelProto) -> int:
    """The version of the default ('' / 'ai.onnx') domain the model imports."""
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise InvalidModelError("the model does not import the default ONNX domain ('')")


@dataclass(frozen=True)
class TensorInfo:
    """What is statically known about a tensor."""

    elem_type: int  # 0 when unknown
    shape: Optional[Tuple[Dim, ...]]  # None when even the rank is unknown

    @property
    def is_float(self) -> bool:
        return self.elem_type in FLOAT_TYPES


def _info_from_type(tp: onnx.TypeProto) -> TensorInfo:
    if not tp.HasField("tensor_type"):
        return TensorInfo(0, None)
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return TensorInfo(tt.elem_type, None)
    dims: List[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tt.elem_type, tuple(dims))


def subgraph_outer_names(node: NodeProto) -> List[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope, in order."""
    found: List[str] = []
    seen = set()
    stack = [
        (g, frozenset()) for a in node.attribute for g in ([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))
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

    def __init__(self, model: ModelProto):
        self.model = model
        self.graph = model.graph
        self.opset = default_opset(model)
        if self.opset < MIN_OPSET:
            raise InvalidModelError(
                f"the model uses opset {self.opset}; onnxgrad needs opset {MIN_OPSET} or newer "
                "(convert it with onnx.version_converter.convert_version(model, 13))"
            )
        self.nodes: List[NodeProto] = list(self.graph.node)
        self.initializers = {t.name for t in self.graph.initializer}
        self.graph_inputs = [i.name for i in self.graph.input]
        self.graph_outputs = [o.name for o in self.graph.output]
        self.producer: Dict[str, int] = {}
        self.node_inputs: List[List[str]] = []
        self.consumers: Dict[str, List[int]] = {}
        sources = set(self.graph_inputs) | self.initializers
        for idx, node in enumerate(self.nodes):
            for out in node.output:
                if not out:
                    continue
                if out in self.producer or out in sources:
                    raise InvalidModelError(
                        f"tensor name {out!r} is produced twice (node {node.name or idx!r}); "
                        "every tensor must have exactly one producer"
                    )
                self.producer[out] = idx
        for idx, node in enumerate(self.nodes):
            ins = list(node.input)
            if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
                ins += [n for n in subgraph_outer_names(node) if n not in ins]
            self.node_inputs.append(ins)
            for name in ins:
                if name:
                    self.consumers.setdefault(name, []).append(idx)
        self.info = self._infer_types(model)

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

    # -- types ----------------------------------------------------------------------------
    @staticmethod
    def _infer_types(model: ModelProto) -> Dict[str, TensorInfo]:
        stripped = ModelProto()
        stripped.CopyFrom(model)
        # Shape inference needs the dims and dtypes of float weights, never their bytes; integer
        # initializers stay (Reshape targets, axes) because inference reads their values.
        for t in stripped.graph.initializer:
            if t.data_type not in FLOAT_TYPES:
                continue
            t.ClearField("raw_data")
            t.ClearField("float_data")
            t.ClearField("double_data")
            t.ClearField("int32_data")
            t.ClearField("int64_data")
            t.ClearField("external_data")
            t.data_location = TensorProto.DEFAULT
        info: Dict[str, TensorInfo] = {}
        try:
            inferred = onnx.shape_inference.infer_shapes(stripped, check_type=False, strict_mode=False, data_prop=True)
        except Exception:
            inferred = stripped
        g = inferred.graph
        for vi in list(g.input) + list(g.value_info) + list(g.output):
            info[vi.name] = _info_from_type(vi.type)
        for t in model.graph.initializer:
            info[t.name] = TensorInfo(t.data_type, tuple(int(d) for d in t.dims))
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value":
                        info[node.output[0]] = TensorInfo(a.t.data_type, tuple(int(d) for d in a.t.dims))
        return info

    def tensor_info(self, name: str) -> TensorInfo:
        return self.info.get(name, TensorInfo(0, None))


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
