"""Writing model files: atomic output, external data handled by reference, nothing left behind.

A model whose weights live in external files is differentiated without reading them: the
gradient model references the same files under the same relative locations. Where those files
end up depends on the output folder:

- beside the input (the command line's default): the references resolve as they are;
- in another folder, given ``source`` (the input model's path): each external file is copied
  into the output folder under its relative location, with the source's permission bits. A
  relative reference back (``../``) would be refused by onnxruntime, and a hard link by onnx (a
  possible "hardlink attack"), so a copy is the one form every consumer accepts. An existing
  different file of that name is never overwritten;
- in another folder without ``source``: the files must already be there, else the write fails.

Models without external data stay in one file, unless ``external_data`` asks to store the
model's own large tensors (the new constants of a gradient model, say) in a file beside it, which
is how a model above protobuf's 2 GB limit is written.

Every file is first written under no name at all (Linux ``O_TMPFILE``) and linked into place only
when complete, so an interrupted run leaves nothing, even after ``SIGKILL`` (an existing output is
replaced by linking under a hidden name and renaming: only a ``SIGKILL`` in that instant leaves
the hidden link). Where ``O_TMPFILE``
is missing, a hidden temporary file is used and removed on any error or exception (the command
line turns ``SIGTERM`` and ``SIGHUP`` into one). An existing output is replaced atomically;
an existing path that is not a regular file (``/dev/null``, a FIFO) is refused, and a symlink to
a regular file is written through (the file it points to is replaced, the link stays).
"""

from __future__ import annotations

import errno
import filecmp
import os
import shutil
import stat
import tempfile

from onnx import ModelProto, TensorProto
from typing_extensions import Self

from .errors import OutputWriteError
from .external_data import check_external_data, external_files

#: protobuf cannot serialize a message of 2 GB or more.
PROTOBUF_LIMIT = 2**31 - 1

#: Tensors at least this large (bytes) go to the external data file when one is asked for
#: (onnx's own default threshold).
EXTERNAL_THRESHOLD = 1024


def save(model: ModelProto, path: str, external_data: bool | str = False, source: str | None = None) -> str | None:
    """Write ``model`` to ``path`` atomically, the way ``onnxgrad differentiate`` does.

    Args:
        model: the model to write (not modified).
        path: the output file. An existing regular file is replaced atomically; a symlink to one
            is written through; any other existing kind of file (a device, a FIFO) is refused.
        external_data: False keeps the model's in-file tensors in the file (it must stay below
            protobuf's 2 GB). True, or a file name (placed in the output's folder), stores every
            in-file tensor of at least 1 KiB (initializers and Constant values of the main graph)
            in that file (default ``<output file name>.data``), so models above 2 GB can be
            written. Tensors already stored externally stay where they are.
        source: the path of the model file ``model`` was derived from. It locates existing
            external data when the output goes to another folder, and is never overwritten.

    Returns:
        The name of the external data file written beside the output, or None (nothing was large
        enough to move, or ``external_data`` is False).

    On any failure nothing is left behind: no output, no temporary file, no copy of external data.

    Raises:
        OutputWriteError: the output cannot be written (folder missing, not a regular file,
            the input itself, over 2 GB, no permission, disk full).
        InvalidModelError, ModelReadError: the model's external data references are unsafe,
            contradictory or missing.
    """
    return _save(model, path, external_data, source, keep_model=True)


def write_model(model: ModelProto, path: str, source: str | None = None,
                external_data: bool | str = False) -> str | None:
    """:func:`save` for a model the caller hands over: large tensors moved to ``external_data``
    are not restored in ``model`` afterwards (the command line's private copy, which may be
    close to the machine's memory, is never copied)."""
    return _save(model, path, external_data, source, keep_model=False)


def output_path(path: str, source: str | None = None) -> str:
    """The file a write to ``path`` replaces: ``path`` itself, or the regular file a symlink at
    ``path`` points to. Refuses what must not be replaced or cannot be written.

    Called before the work starts (the command line does), so a bad ``-o`` fails fast.
    """
    out = os.path.abspath(path)
    if os.path.islink(out):
        real = os.path.realpath(out)
        if not os.path.exists(real):
            raise OutputWriteError(f"cannot write {path}: it is a symlink to a missing file ({real})")
        out = real
    folder = os.path.dirname(out)
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}; create it or choose another output path")
    if os.path.isdir(out):
        raise OutputWriteError(f"cannot write {path}: it is a directory; give a file name such as model.grad.onnx")
    if os.path.exists(out) and not os.path.isfile(out):
        raise OutputWriteError(
            f"cannot write {path}: it exists and is not a regular file (a device, FIFO or socket); "
            "refusing to replace it, choose a file name"
        )
    if source is not None and os.path.exists(out) and os.path.exists(source) and os.path.samefile(source, out):
        raise OutputWriteError(f"refusing to overwrite the input model {path}; choose another output path")
    return out


def write_file(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` with the same guarantees as :func:`save` (atomic, nothing left
    behind on failure, only a regular file replaced)."""
    out = output_path(path)
    try:
        with _NewFile(os.path.dirname(out), path) as f:
            f.write(data)
            f.commit(out, replace=True)
    except OSError as e:
        raise OutputWriteError(f"cannot write {path}: {e.strerror or e}") from None


def _save(model: ModelProto, path: str, external_data: bool | str, source: str | None,
          keep_model: bool) -> str | None:
    out = output_path(path, source)
    folder = os.path.dirname(out)
    source_folder = os.path.dirname(os.path.abspath(source)) if source is not None else None
    external = check_external_data(model, source_folder, "the gradient model")  # one walk over every node
    data_location = _data_location(external_data, out, model, external)
    created: list[str] = []
    moved = 0
    originals: list[tuple[TensorProto, TensorProto]] = []
    data_file: _NewFile | None = None
    try:
        created += _place_external_data(model, external, folder, source_folder, path)
        if data_location is not None:
            data_file = _NewFile(folder, path)
            moved, originals = _externalize(model, data_file, data_location, keep=keep_model)
        size = model.ByteSize()
        if size > PROTOBUF_LIMIT:
            hint = ("store its large tensors as external data (--external-data on the command line, "
                    "external_data=True in onnxgrad.save)" if data_location is None else
                    "even with its large tensors stored externally")
            raise OutputWriteError(
                f"cannot write {path}: the model is {size / 2**30:.1f} GiB, over protobuf's 2 GiB limit; {hint}")
        if not moved:
            data_location = None  # nothing reached the threshold: no empty file beside the output
        if data_file is not None and data_location is not None:
            data_file.commit(os.path.join(folder, data_location), replace=True)
            created.append(os.path.join(folder, data_location))
        with _NewFile(folder, path) as f:
            f.write(model.SerializeToString())
            f.commit(out, replace=True)
        created = []
    except OutputWriteError:  # an OSError too: already worded
        raise
    except OSError as e:
        raise OutputWriteError(
            f"cannot write {path}: {e.strerror or e}; check the folder's permissions and free space"
        ) from None
    finally:  # also on KeyboardInterrupt or a signal turned into an exception
        if data_file is not None:
            data_file.close()
        for p in created:
            _remove_quietly(p)
        for t, original in originals:
            t.CopyFrom(original)
    return data_location


def _data_location(external_data: bool | str, out: str, model: ModelProto,
                   external: list[TensorProto]) -> str | None:
    """The relative file name for the model's own large tensors, or None to keep them in-file."""
    if external_data is False or external_data is None:
        return None
    name = f"{os.path.basename(out)}.data" if external_data is True else str(external_data)
    if not name or "/" in name or "\\" in name or name in (".", "..") or "\0" in name:
        raise OutputWriteError(f"external data file {name!r} must be a plain file name (it goes beside the output)")
    if name in external_files(model, external):
        raise OutputWriteError(
            f"external data file {name!r} already holds the input's external weights; choose another name"
        )
    if os.path.isdir(os.path.join(os.path.dirname(out), name)):
        raise OutputWriteError(f"external data file {name!r} is a directory in the output folder")
    return name


def _externalize(model: ModelProto, f: _NewFile, location: str,
                 keep: bool) -> tuple[int, list[tuple[TensorProto, TensorProto]]]:
    """Move the raw data of every large in-file tensor of the main graph into ``f``: how many
    tensors moved and, with ``keep``, (tensor, copy of its original) pairs to restore them."""
    graph = model.graph
    tensors = list(graph.initializer) + [a.t for n in graph.node if n.op_type == "Constant"
                                         for a in n.attribute if a.name == "value" and a.HasField("t")]
    originals: list[tuple[TensorProto, TensorProto]] = []
    moved = 0
    offset = 0
    for t in tensors:
        if t.data_location == TensorProto.EXTERNAL or len(t.raw_data) < EXTERNAL_THRESHOLD:
            continue
        if keep:
            original = TensorProto()
            original.CopyFrom(t)
            originals.append((t, original))
        raw = t.raw_data
        f.write(raw)
        moved += 1
        t.ClearField("raw_data")
        t.data_location = TensorProto.EXTERNAL
        for k, v in (("location", location), ("offset", str(offset)), ("length", str(len(raw)))):
            t.external_data.add(key=k, value=v)
        offset += len(raw)
    return moved, originals


class _NewFile:
    """A file written under no name (``O_TMPFILE``) and linked into place once complete.

    Without ``O_TMPFILE`` (not Linux, or a filesystem without it) a hidden temporary file in the
    same folder stands in; :meth:`close` removes it unless it was committed.
    """

    def __init__(self, folder: str, path: str) -> None:
        self.folder = folder
        self.path = path
        self.tmp: str | None = None  # the fallback's temporary name
        self.fd = -1
        self.dir_fd = -1
        flag = getattr(os, "O_TMPFILE", 0)
        if flag and os.path.isdir("/proc/self/fd"):
            try:
                self.fd = os.open(folder, flag | os.O_WRONLY | os.O_CLOEXEC, 0o666)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL, errno.ENOENT):
                    raise
        try:
            if self.fd >= 0:
                # a link relative to a folder fd makes os.link call linkat(..., AT_SYMLINK_FOLLOW),
                # which links the open file the /proc entry stands for (plain link() would not)
                self.dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            else:
                self.fd, self.tmp = tempfile.mkstemp(prefix=".onnxgrad-", suffix=".tmp", dir=folder)
                os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp makes the file private; a model is an ordinary file
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view):]

    def copy_from(self, src: str) -> None:
        """Fill the file with ``src``'s bytes and permission bits."""
        with open(src, "rb") as f:
            shutil.copyfileobj(f, _FdWriter(self), 1 << 20)
        # the permission bits only: a set-user-ID bit copied by root would hand out root's rights
        mode = stat.S_IMODE(os.stat(src).st_mode) & 0o777
        if hasattr(os, "fchmod"):
            os.fchmod(self.fd, mode)
        else:  # Windows before Python 3.13, where there is no O_TMPFILE either: the file has a name
            os.chmod(self.tmp, mode)  # type: ignore[arg-type]

    def commit(self, target: str, replace: bool) -> None:
        """Make the complete file appear at ``target``; ``replace=False`` raises FileExistsError
        if ``target`` exists (checked by the link itself, so no race can overwrite a file)."""
        os.fsync(self.fd)
        if self.tmp is None:
            proc = f"/proc/self/fd/{self.fd}"
            try:
                os.link(proc, os.path.basename(target), dst_dir_fd=self.dir_fd, follow_symlinks=True)
                return
            except FileExistsError:
                if not replace:
                    raise
            # the target exists: link under a hidden name, then rename over it (atomic)
            hidden = f".onnxgrad-{os.getpid()}-{self.fd}.tmp"
            _remove_quietly(os.path.join(self.folder, hidden))
            os.link(proc, hidden, dst_dir_fd=self.dir_fd, follow_symlinks=True)
            self.tmp = os.path.join(self.folder, hidden)
        if replace:
            os.replace(self.tmp, target)
        else:
            os.link(self.tmp, target)
            os.unlink(self.tmp)
        self.tmp = None

    def close(self) -> None:
        for fd in (self.fd, self.dir_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.dir_fd = -1
        if self.tmp is not None:
            _remove_quietly(self.tmp)
            self.tmp = None


class _FdWriter:
    """The ``write`` method shutil.copyfileobj needs, on a :class:`_NewFile`."""

    def __init__(self, f: _NewFile) -> None:
        self.f = f

    def write(self, data: bytes) -> int:
        self.f.write(data)
        return len(data)


def _place_external_data(model: ModelProto, external: list[TensorProto], folder: str, source_folder: str | None,
                         path: str) -> list[str]:
    """Make every external file the model references (``external``: its external tensors)
    reachable from ``folder``; return new paths.

    On failure the copies made so far are removed before the error propagates.
    """
    created: list[str] = []
    same = source_folder is None or os.path.realpath(source_folder) == os.path.realpath(folder)
    try:
        for loc in external_files(model, external):
            dst = os.path.join(folder, loc)
            if same:
                if not os.path.isfile(dst):
                    raise OutputWriteError(
                        f"cannot write {path}: its external data file {loc!r} is not in {folder}; write "
                        "the output beside the input model, or copy the file there first"
                    )
                continue
            src = os.path.join(source_folder, loc)  # type: ignore[arg-type]
            if os.path.lexists(dst):
                if os.path.isfile(dst) and filecmp.cmp(src, dst, shallow=False):
                    continue  # already there, e.g. from an earlier run
                raise OutputWriteError(
                    f"cannot write {path}: {dst} already exists and is not the input's external data "
                    f"file {loc!r}; remove it or write the output elsewhere"
                )
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            with _NewFile(os.path.dirname(dst), path) as f:
                f.copy_from(src)
                f.commit(dst, replace=False)
            created.append(dst)
    except BaseException:
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
