"""Writing model files: atomic output, external data handled by reference.

A model whose weights live in external files is differentiated without reading them: the
gradient model references the same files under the same relative locations. Where those files
end up depends on the output folder:

- beside the input (the command line's default): the references resolve as they are;
- in another folder, given ``source`` (the input model's path): each external file is copied
  into the output folder under its relative location. A relative reference back (``../``) would
  be refused by onnxruntime, and a hard link by onnx (a possible "hardlink attack"), so a copy is
  the one form every consumer accepts. An existing different file of that name is never
  overwritten;
- in another folder without ``source``: the files must already be there, else the write fails.

Models without external data stay in one file.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import tempfile
from typing import List, Optional

from onnx import ModelProto

from .errors import OutputWriteError
from .graph import check_external_data, external_files

#: protobuf cannot serialize a message of 2 GB or more.
PROTOBUF_LIMIT = 2**31 - 1


def write_model(model: ModelProto, path: str, source: Optional[str] = None) -> None:
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    ``source`` is the path of the model file ``model`` was derived from; it locates external data
    when the output goes to another folder, and is never overwritten. On any failure nothing is
    left behind: no output, no temporary file, no copy made of external data.
    """
    out = os.path.abspath(path)
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}; create it or choose another output path")
    if os.path.isdir(out):
        raise OutputWriteError(f"cannot write {path}: it is a directory; give a file name such as model.grad.onnx")
    if source is not None and os.path.exists(out) and os.path.samefile(source, out):
        raise OutputWriteError(f"refusing to overwrite the input model {path}; choose another output path")
    size = model.ByteSize()
    if size > PROTOBUF_LIMIT:
        raise OutputWriteError(
            f"cannot write {path}: the model is {size / 2**30:.1f} GiB, over protobuf's 2 GiB limit; "
            "store its weights as external data (onnx.save_model(..., save_as_external_data=True)) and retry"
        )
    source_folder = os.path.dirname(os.path.abspath(source)) if source is not None else None
    check_external_data(model, source_folder, "the gradient model")
    copied = _place_external_data(model, folder, source_folder, path)
    tmp = None
    done = False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".onnxgrad-", suffix=".onnx.tmp", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a model is an ordinary file
        os.replace(tmp, out)
        done = True
    except OSError as e:
        raise OutputWriteError(
            f"cannot write {path}: {e.strerror or e}; check the folder's permissions and free space"
        ) from None
    finally:  # also on KeyboardInterrupt: an interrupted run leaves nothing behind
        if not done:
            for p in ([tmp] if tmp is not None else []) + copied:
                _remove_quietly(p)


def _place_external_data(model: ModelProto, folder: str, source_folder: Optional[str], path: str) -> List[str]:
    """Make every external file the model references reachable from ``folder``; return new paths."""
    created: List[str] = []
    same = source_folder is None or os.path.realpath(source_folder) == os.path.realpath(folder)
    try:
        for loc in external_files(model):
            dst = os.path.join(folder, loc)
            if same:
                if not os.path.isfile(dst):
                    raise OutputWriteError(
                        f"cannot write {path}: its external data file {loc!r} is not in {folder}; write "
                        "the output beside the input model, or copy the file there first"
                    )
                continue
            src = os.path.join(source_folder, loc)  # type: ignore[arg-type]
            if not os.path.isfile(src):
                raise OutputWriteError(f"cannot write {path}: external data file {src} of the input model is missing")
            if os.path.lexists(dst):
                if os.path.isfile(dst) and filecmp.cmp(src, dst, shallow=False):
                    continue  # already there, e.g. from an earlier run
                raise OutputWriteError(
                    f"cannot write {path}: {dst} already exists and is not the input's external data "
                    f"file {loc!r}; remove it or write the output elsewhere"
                )
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            created.append(dst)
            shutil.copyfile(src, dst)
    except OSError as e:
        for p in created:
            _remove_quietly(p)
        raise OutputWriteError(f"cannot place external data for {path}: {e.strerror or e}") from None
    except OutputWriteError:
        for p in created:
            _remove_quietly(p)
        raise
    return created


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(p: str) -> None:
    try:
        os.unlink(p)
    except OSError:
        pass
