"""External data: checking where a model's out-of-file weights live, without reading them.

A tensor stored as external data names a file (``location``) relative to the model's folder and,
optionally, a byte range in it (``offset``, ``length``). onnxgrad never loads those bytes: it
needs only names, dtypes and shapes. It does check the metadata, so that a hostile or corrupt
model is refused here instead of producing a gradient model no runtime can load:

- the location must be relative, stay inside the model's folder (also through symlinks) and be
  given once (onnx reads the last ``location`` entry, other tools the first);
- ``offset`` and ``length`` must be non-negative integers, each given at most once;
- the byte count must agree with the declared dims and dtype;
- with the model's folder known, the file must exist, be a regular file, and hold the whole
  range (a ``stat``, no read).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Iterator
from typing import NoReturn

import onnx
from onnx import ModelProto, NodeProto, TensorProto, helper

from .errors import InvalidModelError, ModelReadError

#: The keys of ``TensorProto.external_data`` that ONNX defines.
KNOWN_KEYS = ("location", "offset", "length", "checksum", "basepath")

#: Element types stored as two per byte (packed 4-bit types, where this onnx has them).
_HALF_BYTE = frozenset(getattr(TensorProto, n) for n in ("INT4", "UINT4", "FLOAT4E2M1") if hasattr(TensorProto, n))


def all_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """Every TensorProto of the model: initializers, sparse ones, Constant and attribute values,
    in the main graph, every subgraph and every local function (one iterative pass)."""
    A = onnx.AttributeProto
    node_lists: list[Iterable[NodeProto]] = [f.node for f in model.functions]
    graphs: list[onnx.GraphProto] = [model.graph]
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


def external_tensors(model: ModelProto) -> Iterator[TensorProto]:
    """The tensors of the model whose data lives in an external file."""
    return (t for t in all_tensors(model) if t.data_location == TensorProto.EXTERNAL)


def location(t: TensorProto) -> str:
    """A tensor's external-data ``location`` ('' when absent)."""
    return next((e.value for e in t.external_data if e.key == "location"), "")


def external_files(model: ModelProto, tensors: Iterable[TensorProto] | None = None) -> list[str]:
    """The distinct external-data locations the model references, in first-use order.

    ``tensors``: the model's external tensors, when the caller has them (from
    :func:`check_external_data`): finding them walks every node."""
    seen: dict[str, None] = {}
    for t in external_tensors(model) if tensors is None else tensors:
        for e in t.external_data:
            if e.key == "location":
                seen.setdefault(e.value, None)
    return list(seen)


def expected_bytes(t: TensorProto) -> int | None:
    """How many bytes ``t``'s dims and dtype take, or None for types without a fixed size."""
    numel = 1
    for d in t.dims:
        numel *= d
    if t.data_type in _HALF_BYTE:
        return (numel + 1) // 2
    if t.data_type in (TensorProto.STRING, TensorProto.UNDEFINED):
        return None
    try:
        return numel * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
    except (KeyError, ValueError, TypeError):
        return None  # an unknown dtype: the checker reports it


def check_external_data(model: ModelProto, folder: str | None, what: str) -> list[TensorProto]:
    """Refuse external-data metadata that is malformed, contradictory or leads out of ``folder``;
    return the model's external tensors, all checked.

    Nothing is opened or read: a hostile model must not make onnxgrad (or a runtime later) read
    files outside its own folder, and a corrupt one must not yield a gradient model that cannot
    be loaded. ``folder`` None (a ModelProto in memory) checks the metadata only; otherwise each
    file must also exist and hold the declared range (one ``stat`` per file).

    Raises:
        InvalidModelError: bad or contradictory metadata.
        ModelReadError: a referenced file is missing or not a regular file.
    """
    real_folder = os.path.realpath(folder) if folder is not None else None
    sizes: dict[str, int] = {}
    tensors = list(external_tensors(model))
    for t in tensors:
        loc, offset, length = _metadata(t, what)
        _check_location(t, loc, real_folder, what)
        need = expected_bytes(t)
        if length is not None and need is not None and length != need:
            _refuse(what, t, f"declares length {length} bytes, but its dims {list(t.dims)} of "
                             f"{_dtype_name(t.data_type)} take {need} bytes")
        if real_folder is None:
            continue
        if loc not in sizes:
            sizes[loc] = _file_size(os.path.join(real_folder, loc), t, what)
        size = sizes[loc]
        start = offset or 0
        span = length if length is not None else need
        if start > size or (span is not None and start + span > size):
            end = "" if span is None else f"-{start + span}"
            _refuse(what, t, f"reads bytes {start}{end} of {loc!r}, which has only {size} bytes "
                             "(a truncated or mismatched weights file)")
        if length is None and need is not None and size - start != need:
            # without 'length' the tensor runs to the end of the file
            _refuse(what, t, f"runs from byte {start} to the end of {loc!r} ({size - start} bytes), but its dims "
                             f"{list(t.dims)} of {_dtype_name(t.data_type)} take {need} bytes")
    return tensors


def _metadata(t: TensorProto, what: str) -> tuple[str, int | None, int | None]:
    """(location, offset, length) of ``t``, each key given at most once, numbers well-formed."""
    seen: dict[str, str] = {}
    for e in t.external_data:
        key = e.key
        if key in seen:
            _refuse(what, t, f"has the key {key!r} twice in its external data ({seen[key]!r} and {e.value!r}); "
                             "readers disagree about which one counts")
        seen[key] = e.value
    loc = seen.get("location", "")
    numbers: list[int | None] = []
    for key in ("offset", "length"):
        text = seen.get(key)
        if text is None:
            numbers.append(None)
        elif isinstance(text, str) and text.isascii() and text.isdigit():
            numbers.append(int(text))
        else:
            _refuse(what, t, f"has {key} {text!r} in its external data; it must be a non-negative integer")
    return loc, numbers[0], numbers[1]


def _check_location(t: TensorProto, loc: str, real_folder: str | None, what: str) -> None:
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


def _file_size(path: str, t: TensorProto, what: str) -> int:
    try:
        st = os.stat(path)
    except OSError as e:
        raise ModelReadError(
            f"{what}: cannot read the external weights of tensor {t.name!r}: {path} ({e.strerror or e}); "
            "keep the weights file beside the model"
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise ModelReadError(f"{what}: the external data of tensor {t.name!r} is not a regular file: {path}")
    return st.st_size


def _dtype_name(dtype: int) -> str:
    try:
        return TensorProto.DataType.Name(dtype).lower()
    except ValueError:
        return f"dtype {dtype}"


def _refuse(what: str, t: TensorProto, why: str) -> NoReturn:
    raise InvalidModelError(f"{what}: external data of tensor {t.name!r} {why}; the model is corrupt or was edited")
