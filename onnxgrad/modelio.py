"""Reading and writing model files: atomic output, external data handled by reference."""

from __future__ import annotations

import os
import tempfile

import onnx
from onnx import ModelProto

from .errors import OutputWriteError


def write_model(model: ModelProto, path: str) -> None:
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then a rename."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".onnxgrad-", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputWriteError(f"cannot write {path}: {e.strerror or e}") from None
