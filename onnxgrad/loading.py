"""Reading a model: a private copy of a ModelProto or the parse of a ``.onnx`` file, with clear
errors for everything that is not an ONNX model. Weights stored in external files are never
loaded (only their locations are checked): a backward pass needs only their dtypes and shapes.
"""

from __future__ import annotations

import os
from typing import Union

from onnx import ModelProto

from .errors import ModelReadError
from .external_data import check_external_data

ModelLike = Union[ModelProto, str, "os.PathLike[str]"]


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
