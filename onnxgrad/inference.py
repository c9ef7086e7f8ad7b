"""Types and shapes of a model's tensors: onnx's shape inference, kept cheap on large models.

Heavy initializers reach inference as typed graph inputs (:func:`light_view`), data propagation
runs only where it may add something at a bounded cost, and :func:`complete_shapes` fills what
onnx leaves unknown.
"""

from __future__ import annotations

from itertools import chain
from typing import Any, Dict, Iterable, Optional, Set, Tuple

import onnx
from onnx import ModelProto, TensorProto, helper
from onnx.onnx_cpp2py_export import shape_inference as _c_shape_inference

from .errors import first_line
from .shapes import complete_shapes
from .tensorinfo import FLOAT_TYPES, TensorInfo, info_from_type, numel


#: Initializers above this many elements reach shape inference as typed graph inputs, never as
#: data: inference only reads small values (shapes, axes, scales) and must not copy the weights.
HEAVY_ELEMENTS = 1024


def _copy_fields(src: Any, dst: Any, skip: str) -> None:
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


def light_view(model: ModelProto) -> ModelProto:
    """The model with heavy or external initializers turned into typed graph inputs (the model
    itself when it has none: copying a graph of many nodes costs more than inference saves)."""
    if not any(t.data_location == TensorProto.EXTERNAL
               or (t.data_type in FLOAT_TYPES and numel(t.dims) > HEAVY_ELEMENTS) for t in model.graph.initializer):
        return model
    view = ModelProto()
    _copy_fields(model, view, skip="graph")
    _copy_fields(model.graph, view.graph, skip="initializer")
    inputs = {i.name for i in model.graph.input}
    for t in model.graph.initializer:
        heavy = t.data_type in FLOAT_TYPES and numel(t.dims) > HEAVY_ELEMENTS
        if t.data_location == TensorProto.EXTERNAL or heavy:
            if t.name not in inputs:
                view.graph.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
        else:
            view.graph.initializer.append(t)
    return view


#: Data propagation (shape arithmetic through Shape/Gather/Concat...) keeps one entry per element
#: of every 1-D tensor it meets: it needs a few GB for a 1-D tensor of 10 million elements, while
#: a real shape tensor has at most a few dozen.
DATA_PROP_MAX_1D = 64
#: ... and 70-200 bytes per element of the 1-D initializers (biases, norm scales): a budget for all
#: of them together, so that a model with biases still gets static shapes
DATA_PROP_MAX_1D_INITIALIZED = 1 << 18


def _worth_data_propagation(inferred: ModelProto, known: Set[str], long_1d: bool,
                            outputs: Iterable[str]) -> bool:
    """Whether a second, data-propagating inference may add anything, at a bounded cost.

    ``known``, ``long_1d``: from :func:`summaries` of the inferred graph; ``outputs``: the names
    the graph's nodes produce."""
    initialized_1d = sum(t.dims[0] for t in inferred.graph.initializer if len(t.dims) == 1)
    if long_1d or initialized_1d > DATA_PROP_MAX_1D_INITIALIZED:
        return False
    return not known.issuperset(outputs)


def _type_summary(tp: onnx.TypeProto) -> Tuple[TensorInfo, bool, bool]:
    """A value's TensorInfo, whether its tensor shape is fully named (every dim a value or a
    symbol), and whether it is a 1-D tensor longer than DATA_PROP_MAX_1D."""
    dims = tp.tensor_type.shape.dim
    # onnx names the dims it could not infer unk__N: they are not known
    complete = tp.tensor_type.HasField("shape") and all(
        d.HasField("dim_value") or (d.dim_param and not d.dim_param.startswith("unk__")) for d in dims)
    return info_from_type(tp), complete, len(dims) == 1 and dims[0].dim_value > DATA_PROP_MAX_1D


def summaries(graph: onnx.GraphProto) -> Tuple[Dict[str, TensorInfo], Set[str], bool]:
    """TensorInfo of every typed value of ``graph`` (later entries win, as in inputs, value_info,
    outputs), the names with a fully named shape, and whether a 1-D tensor exceeds
    DATA_PROP_MAX_1D. Values share few distinct types: each is decoded once."""
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


def strict_inference(model: ModelProto, data: Optional[bytes] = None, parse: bool = True) -> Tuple[ModelProto, str]:
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
            return model, first_line(e)
    try:
        return infer(False), ""
    except Exception as e:
        return model, first_line(e)


def infer_types(model: ModelProto, inferred: ModelProto, data: bytes,
                producer: Dict[str, int]) -> Dict[str, TensorInfo]:
    """TensorInfo of every tensor of ``model``'s main graph.

    ``inferred``: the strict inference of ``data``, the serialized :func:`light_view` of ``model``;
    ``producer``: the names its nodes produce (what inference should know)."""
    info, known, long_1d = summaries(inferred.graph)
    if _worth_data_propagation(inferred, known, long_1d, producer):
        try:
            info = summaries(onnx.shape_inference.infer_shapes(data, strict_mode=False, data_prop=True).graph)[0]
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
        complete_shapes(model.graph.node, info)
    return info

