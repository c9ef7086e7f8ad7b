"""Reading a model and indexing its main graph: producers, consumers, dtypes and shapes.

Nothing here knows an operator's meaning. Weights stored in external files are never loaded:
only their names, dtypes and shapes are needed to build a backward pass.
"""

from __future__ import annotations

import os
import re
from collections import deque
from itertools import chain
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper
from onnx.onnx_cpp2py_export import shape_inference as _c_shape_inference

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
    """Return a private copy of ``model`` (a ModelProto or a path), external data not loaded.

    External-data locations are checked without opening them: each must be a relative path that
    stays inside the model's folder (symlinks are resolved when the model comes from a file).
    """
    if isinstance(model, ModelProto):
        copy = ModelProto()
        copy.CopyFrom(model)
        check_external_data(copy, None, "the model")
        return copy
    if not isinstance(model, (str, os.PathLike)):
        raise ModelReadError(
            f"model must be an onnx.ModelProto or a path to a .onnx file, not {type(model).__name__}"
        )
    path = os.fspath(model)
    if not os.path.exists(path):
        raise ModelReadError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise ModelReadError(f"model path is a directory, not a file: {path}; give the .onnx file inside it")
    if not os.path.isfile(path):  # a FIFO or a device such as /dev/zero would never end
        raise ModelReadError(f"model path is not a regular file: {path}; give a .onnx file")
    if os.path.getsize(path) > 2**31 - 1:
        raise ModelReadError(
            f"{path} is larger than protobuf's 2 GB limit, so it cannot be an ONNX model file; a model "
            "this large keeps its weights in external data files (onnx.save_model(..., save_as_external_data=True))"
        )
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelReadError(f"cannot read model file {path}: {e.strerror or e}; check its permissions") from None
    if not data:
        raise ModelReadError(f"model file is empty: {path}; re-export or re-download it")
    proto = ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception as e:  # protobuf's DecodeError and friends
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelReadError(
            f"{path} is not an ONNX model (protobuf parse failed: {why}); "
            "check that the file is complete and really is a .onnx model"
        ) from None
    del data
    if not proto.HasField("graph") or not proto.opset_import:
        raise ModelReadError(
            f"{path} parsed as protobuf but holds no ONNX graph or opset (another kind of protobuf, "
            "e.g. a lone tensor or graph?); give a model saved with onnx.save"
        )
    check_external_data(proto, os.path.dirname(os.path.abspath(path)), path)
    return proto


def _all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model: initializers, sparse ones, Constant and attribute values,
    in the main graph, every subgraph and every local function (one iterative pass)."""
    A = onnx.AttributeProto
    node_lists: List[Iterable[NodeProto]] = [f.node for f in model.functions]
    graphs: List[onnx.GraphProto] = [model.graph]
    while graphs or node_lists:
        if graphs:
            graph = graphs.pop()
            yield from graph.initializer
            for s in graph.sparse_initializer:
                yield s.values
                yield s.indices
            node_lists.append(graph.node)
        for n in node_lists.pop() if node_lists else ():
            for a in n.attribute:
                kind = a.type
                if kind == A.TENSOR:
                    yield a.t
                elif kind == A.TENSORS:
                    yield from a.tensors
                elif kind == A.GRAPH:
                    graphs.append(a.g)
                elif kind == A.GRAPHS:
                    graphs.extend(a.graphs)
                elif kind == A.SPARSE_TENSOR:
                    yield a.sparse_tensor.values
                    yield a.sparse_tensor.indices
                elif kind == A.SPARSE_TENSORS:
                    for st in a.sparse_tensors:
                        yield st.values
                        yield st.indices


def external_files(model: ModelProto) -> List[str]:
    """The distinct external-data locations the model references, in first-use order."""
    seen: Dict[str, None] = {}
    for t in _all_tensors(model):
        if t.data_location == TensorProto.EXTERNAL:
            for e in t.external_data:
                if e.key == "location":
                    seen.setdefault(e.value, None)
    return list(seen)


def check_external_data(model: ModelProto, folder: Optional[str], what: str) -> None:
    """Refuse external-data locations that are missing, absolute, or lead out of ``folder``.

    Nothing is opened: a hostile model must not make onnxgrad (or a runtime later) read files
    outside its own folder. ``folder`` None (a ModelProto in memory) checks the text only.
    """
    real_folder = os.path.realpath(folder) if folder is not None else None
    for t in _all_tensors(model):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), "")
        bad = ""
        if not isinstance(loc, str):
            bad = "has a location that is not UTF-8 text"
        elif not loc:
            bad = "has no 'location'"
        elif "\0" in loc:
            bad = f"has a location with a NUL byte ({loc!r})"
        elif os.path.isabs(loc) or loc.startswith(("/", "\\")) or (len(loc) > 1 and loc[1] == ":"):
            bad = f"points to an absolute path ({loc!r})"
        elif ".." in re.split(r"[\\/]", loc):
            bad = f"points outside the model's folder ({loc!r})"
        elif real_folder is not None:
            target = os.path.realpath(os.path.join(real_folder, loc))
            if os.path.commonpath([real_folder, target]) != real_folder:
                bad = f"resolves outside the model's folder through a symlink ({loc!r} -> {target})"
        if bad:
            raise InvalidModelError(
                f"{what}: external data of tensor {t.name!r} {bad}; refusing to read it. "
                "External weights must be files inside the model's folder"
            )


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


#: What is known about a tensor nothing is known about.
UNKNOWN = TensorInfo(0, None)


def _info_from_type(tp: onnx.TypeProto) -> TensorInfo:
    # An optional's gradient is its element's (rules/sequence.py). A sequence of floats keeps
    # its element type so the engine follows it and an op consuming it raises (no rule)
    # instead of silently cutting the gradient.
    if tp.HasField("optional_type"):
        return _info_from_type(tp.optional_type.elem_type)
    if tp.HasField("sequence_type"):
        return TensorInfo(_info_from_type(tp.sequence_type.elem_type).elem_type, None)
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


def _type_summary(tp: onnx.TypeProto) -> Tuple[TensorInfo, bool, bool]:
    """A value's TensorInfo, whether its tensor shape is fully named (every dim a value or a
    symbol), and whether it is a 1-D tensor longer than _DATA_PROP_MAX_1D."""
    dims = tp.tensor_type.shape.dim
    # onnx names the dims it could not infer unk__N: they are not known
    complete = tp.tensor_type.HasField("shape") and all(
        d.HasField("dim_value") or (d.dim_param and not d.dim_param.startswith("unk__")) for d in dims)
    return _info_from_type(tp), complete, len(dims) == 1 and dims[0].dim_value > _DATA_PROP_MAX_1D


def _summaries(graph: onnx.GraphProto) -> Tuple[Dict[str, TensorInfo], "set[str]", bool]:
    """TensorInfo of every typed value of ``graph`` (later entries win, as in inputs, value_info,
    outputs), the names with a fully named shape, and whether a 1-D tensor exceeds
    _DATA_PROP_MAX_1D. Values share few distinct types: each is decoded once."""
    cache: Dict[bytes, Tuple[TensorInfo, bool, bool]] = {}
    info: Dict[str, TensorInfo] = {}
    known = set()
    long_1d = False
    for vi in chain(graph.input, graph.value_info, graph.output):
        tp = vi.type
        key = tp.SerializeToString()
        summary = cache.get(key)
        if summary is None:
            summary = cache[key] = _type_summary(tp)
        name = vi.name
        info[name] = summary[0]
        if summary[1]:
            known.add(name)
        long_1d = long_1d or summary[2]
    return info, known, long_1d


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


#: Initializers above this many elements reach shape inference as typed graph inputs, never as
#: data: inference only reads small values (shapes, axes, scales) and must not copy the weights.
_HEAVY_ELEMENTS = 1024


def _first_line(e: Exception) -> str:
    text = " ".join(str(e).split("\n", 1)[0].split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _copy_fields(src, dst, skip: str) -> None:
    """Copy every set field of message ``src`` into ``dst`` except ``skip`` (no deep copy of it)."""
    for fd, value in src.ListFields():
        if fd.name == skip:
            continue
        if fd.is_repeated:
            getattr(dst, fd.name).extend(value)
        elif fd.type == fd.TYPE_MESSAGE:
            getattr(dst, fd.name).CopyFrom(value)
        else:
            setattr(dst, fd.name, value)


def _light_view(model: ModelProto) -> ModelProto:
    """The model with heavy or external initializers turned into typed graph inputs (the model
    itself when it has none: copying a graph of many nodes costs more than inference saves)."""
    if not any(t.data_location == TensorProto.EXTERNAL
               or (t.data_type in FLOAT_TYPES and _numel(t.dims) > _HEAVY_ELEMENTS) for t in model.graph.initializer):
        return model
    view = ModelProto()
    _copy_fields(model, view, skip="graph")
    _copy_fields(model.graph, view.graph, skip="initializer")
    inputs = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        heavy = t.data_type in FLOAT_TYPES and _numel(t.dims) > _HEAVY_ELEMENTS
        if t.data_location == TensorProto.EXTERNAL or heavy:
            if t.name not in inputs:
                view.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            view.graph.initializer.append(t)
    return view


#: Data propagation (shape arithmetic through Shape/Gather/Concat...) keeps one entry per element
#: of every 1-D tensor it meets: it needs a few GB for a 1-D tensor of 10 million elements, while
#: a real shape tensor has at most a few dozen.
_DATA_PROP_MAX_1D = 64
#: ... and 70-200 bytes per element of the 1-D initializers (biases, norm scales): budget for all of them
_DATA_PROP_MAX_1D_INITIALIZED = 1 << 18


def _worth_data_propagation(inferred: ModelProto, known: "set[str]", long_1d: bool,
                            outputs: Iterable[str]) -> bool:
    """Whether a second, data-propagating inference may add anything, at a bounded cost.

    ``known``, ``long_1d``: from :func:`_summaries` of the inferred graph; ``outputs``: the names
    the graph's nodes produce."""
    if long_1d or sum(t.dims[0] for t in inferred.graph.initializer if len(t.dims) == 1) > _DATA_PROP_MAX_1D_INITIALIZED:
        return False
    return not known.issuperset(outputs)


def _check_initializer_size(t: TensorProto) -> None:
    """The element count of an in-file initializer must match its dims (a corrupt or edited file
    otherwise reaches shape inference, which trusts the dims, and the runtime, which does not)."""
    if t.data_location == TensorProto.EXTERNAL or t.data_type in _UNSIZED:
        return
    expected = _numel(t.dims)
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
_TYPED_FIELD = {TensorProto.FLOAT: "float_data", TensorProto.DOUBLE: "double_data",
                TensorProto.INT64: "int64_data", TensorProto.INT32: "int32_data"}
#: Types whose raw size is not a whole number of bytes per element (or not fixed at all).
_UNSIZED = frozenset({TensorProto.STRING, TensorProto.UNDEFINED}
                     | {getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1", "INT2", "UINT2")
                        if hasattr(TensorProto, n)})


def _numel(dims: Iterable[int]) -> int:
    n = 1
    for d in dims:
        n *= d
    return n


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
        # each field of each node read once: protobuf field access is the cost of large graphs
        self.node_outputs: List[List[str]] = [list(n.output) for n in self.nodes]
        self.node_inputs: List[List[str]] = [list(n.input) for n in self.nodes]
        self.initializers = {t.name for t in self.graph.initializer}
        self.graph_inputs = [i.name for i in self.graph.input]
        self.graph_outputs = [o.name for o in self.graph.output]
        self.producer: Dict[str, int] = {}
        self.consumers: Dict[str, List[int]] = {}
        self._check_sources()
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
        self._check_structure(sources)
        self.info = self._infer_types(model, self.producer)

    # -- validation (linear time, no recursion) --------------------------------------------
    def _check_sources(self) -> None:
        self._check_text()
        for t in self.graph.initializer:
            _check_initializer_size(t)
        for kind, names in (("graph input", self.graph_inputs),
                            ("initializer", [t.name for t in self.graph.initializer]),
                            ("graph output", self.graph_outputs)):
            seen = set()
            for n in names:
                if not n:
                    raise InvalidModelError(f"a {kind} of the main graph has an empty name; every {kind} needs one")
                if n in seen:
                    raise InvalidModelError(
                        f"{kind} name {n!r} appears twice in the main graph; tensor names must be unique"
                    )
                seen.add(n)

    def _check_text(self) -> None:
        """protobuf hands a string field that is not valid UTF-8 back as bytes: refuse it here,
        before any name is compared, joined or printed."""
        g = self.graph
        strings = [o.domain for o in self.model.opset_import]
        strings += [v.name for v in chain(g.input, g.output, g.value_info, g.initializer)]
        for n, ins, outs in zip(self.nodes, self.node_inputs, self.node_outputs):
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

    def _check_structure(self, sources: "set[str]") -> None:
        """Unknown domains, dangling inputs, cycles (Kahn's algorithm), node order, outputs."""
        imported = {"" if o.domain == "ai.onnx" else o.domain for o in self.model.opset_import}
        for idx, node in enumerate(self.nodes):
            domain = "" if node.domain == "ai.onnx" else node.domain
            if domain not in imported:
                raise InvalidModelError(
                    f"node {self.node_label(idx)!r} (op type {node.op_type}) is in domain {node.domain!r}, "
                    "which the model does not import; add it to the model's opset_import"
                )
            for name in self.node_inputs[idx]:
                if name and name not in self.producer and name not in sources:
                    raise InvalidModelError(
                        f"node {self.node_label(idx)!r} (op type {node.op_type}) reads tensor {name!r}, which "
                        "no node, graph input or initializer provides (dangling input); fix or re-export the model"
                    )
        producer = self.producer
        if all(producer.get(name, -1) < idx for idx, ins in enumerate(self.node_inputs) for name in ins):
            # every read comes after its producer: no cycle, nodes in topological order
            self._check_outputs(sources)
            return
        indegree = [0] * len(self.nodes)
        for idx, ins in enumerate(self.node_inputs):
            indegree[idx] = sum(1 for name in ins if name in self.producer)
        queue = deque(i for i, d in enumerate(indegree) if d == 0)
        done = 0
        while queue:
            i = queue.popleft()
            done += 1
            for out in self.node_outputs[i]:
                for c in self.consumers.get(out, ()) if out else ():
                    indegree[c] -= 1
                    if indegree[c] == 0:
                        queue.append(c)
        if done < len(self.nodes):
            raise InvalidModelError(
                f"the graph has a cycle through nodes {self._cycle(indegree)}; ONNX graphs must be acyclic"
            )
        for idx, ins in enumerate(self.node_inputs):
            for name in ins:
                p = self.producer.get(name)
                if p is not None and p > idx:
                    raise InvalidModelError(
                        f"node {self.node_label(idx)!r} reads {name!r} before node {self.node_label(p)!r} "
                        "produces it; ONNX requires nodes in topological order (re-export or sort the model)"
                    )
        self._check_outputs(sources)

    def _check_outputs(self, sources: "set[str]") -> None:
        for name in self.graph_outputs:
            if name not in self.producer and name not in sources:
                raise InvalidModelError(
                    f"graph output {name!r} is produced by no node, graph input or initializer; "
                    "fix or re-export the model"
                )

    def _cycle(self, indegree: List[int]) -> str:
        """Names of the nodes on one cycle among the nodes Kahn's algorithm could not order."""
        start = next(i for i, d in enumerate(indegree) if d > 0)
        position: Dict[int, int] = {}
        path: List[int] = []
        node = start
        while node not in position:
            position[node] = len(path)
            path.append(node)
            # an unordered node always has a producer that is unordered too
            node = next(p for p in (self.producer.get(n) for n in self.node_inputs[node])
                        if p is not None and indegree[p] > 0)
        loop = path[position[node]:][::-1]
        labels = [repr(self.node_label(i)) for i in loop[:6]] + (["..."] if len(loop) > 6 else [])
        return " -> ".join(labels + [repr(self.node_label(loop[0]))])

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
    def _infer_types(model: ModelProto, producer: Dict[str, int]) -> Dict[str, TensorInfo]:
        view = _light_view(model)
        data = view.SerializeToString()  # once, for the checker and for inference
        try:
            onnx.checker.check_model(data)
        except Exception as e:  # onnx's ValidationError and errors surfaced from its C++ checker
            # A deprecated op version (GroupNormalization-18, which PyTorch still exports) is
            # refused by the checker but run by every runtime: strict inference below still
            # checks the model's types and shapes.
            if "is deprecated in domain_version" not in str(e):
                raise InvalidModelError(
                    f"the model is not valid ONNX: {_first_line(e)}; onnx.checker.check_model shows the details"
                ) from None
        # the checker's full_check: a model failing it can only give an invalid output
        inferred, error = _strict_inference(view, data)
        if error:
            raise InvalidModelError(
                f"the model's types or shapes are inconsistent: {error}; "
                "onnx.checker.check_model(model, full_check=True) shows the details"
            )
        info, known, long_1d = _summaries(inferred.graph)
        if _worth_data_propagation(inferred, known, long_1d, producer):
            try:
                info = _summaries(onnx.shape_inference.infer_shapes(data, strict_mode=False, data_prop=True).graph)[0]
            except Exception:
                pass  # the plain inference above stands
        shared: Dict[Tuple[int, Tuple[int, ...]], TensorInfo] = {}  # weights repeat few (dtype, dims)
        for t in model.graph.initializer:
            key = (t.data_type, tuple(t.dims))
            found = shared.get(key)
            info[t.name] = found if found is not None else shared.setdefault(key, TensorInfo(*key))
        for node in model.graph.node:
            if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                for a in node.attribute:
                    if a.name == "value":
                        info[node.output[0]] = TensorInfo(a.t.data_type, tuple(a.t.dims))
        # only what onnx left unknown needs completing (in most graphs, nothing)
        if any(i is None or i.shape is None or not i.elem_type for i in map(info.get, producer)):
            from .shapes import complete_shapes  # shapes.py builds on this module's types

            complete_shapes(model.graph.node, info)
        return info

    def tensor_info(self, name: str) -> TensorInfo:
        return self.info.get(name, UNKNOWN)


def check_gradient_model(model: ModelProto) -> None:
    """Refuse to hand out a gradient model that fails ONNX's full check (its shape inference).

    onnx's checks of the input miss some inconsistencies a runtime would hit (a Conv weight with
    the wrong channel count, a label of the wrong rank): the backward pass, built from the same
    static shapes, then contradicts itself. Better an error than a model nothing can load.
    """
    error = _strict_inference(_light_view(model), parse=False)[1]
    if error:
        raise InvalidModelError(
            f"the gradient model fails ONNX shape inference ({error}); the input's shapes are "
            "probably inconsistent in a way onnx's checker misses (does onnxruntime run the input?)"
        )


def _strict_inference(model: ModelProto, data: Optional[bytes] = None, parse: bool = True) -> Tuple[ModelProto, str]:
    """Strict shape inference: the inferred model, and the first error ('' when none counts).

    ``data``: ``model`` already serialized. ``parse=False`` only checks: the model itself is
    returned, sparing the parse of the inferred copy.

    onnx reports a failure inside the body of a function op as a nested "Inference error(s)".
    Some of ONNX's own bodies fail that way (MeanVarianceNormalization's default axes, onnx
    1.23) although runtimes run the op natively: such errors are not held against the model, and
    plain inference supplies the types.
    """
    if data is None:
        data = model.SerializeToString()

    def infer(strict: bool) -> ModelProto:
        inferred = _c_shape_inference.infer_shapes(data, strict, strict, False)
        return onnx.load_from_string(inferred) if parse else model

    try:
        return infer(True), ""
    except Exception as e:
        text = str(e)
        body = text.split("Inference error(s):", 1)[1] if "Inference error(s):" in text else text
        entries = [line.strip() for line in body.strip().split("\n") if line.strip()]
        if not (entries and all(x.startswith("(op_type:") and "Inference error(s):" in x for x in entries)):
            return model, _first_line(e)
    try:
        return infer(False), ""
    except Exception as e:
        return model, _first_line(e)


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
