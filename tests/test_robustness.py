"""Bad input of every kind, through the Python API and the command line.

Each row of ``BAD_INPUTS`` is a broken model or a bad argument. The API must raise the documented
:class:`onnxgrad.errors.OnnxGradError` subclass; ``onnxgrad differentiate`` must print exactly one
``onnxgrad: error:`` line naming what is wrong, exit with that class's code (usage 2, unreadable
model 3, invalid model 4, no gradient rule 5, I/O 6), print no traceback and leave no file.
Also: atomic writes (a failure at any point leaves nothing) and byte-identical output across
processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxgrad
from onnxgrad import errors, modelio
from onnxgrad.cli import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT = TensorProto.FLOAT
X = helper.make_tensor_value_info("x", FLOAT, [2, 3])
Y = helper.make_tensor_value_info("y", FLOAT, [2, 3])


def _w(name: str = "W") -> TensorProto:
    return numpy_helper.from_array(np.arange(3, dtype=np.float32) + 1, name)


def model(nodes, inits=None, inputs=None, outputs=None, opset: int = 17, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs or [X], outputs or [Y], inits if inits is not None else [_w()])
    imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def good() -> onnx.ModelProto:
    """y = tanh(x * W)."""
    return model([helper.make_node("Mul", ["x", "W"], ["a"], name="mul"),
                  helper.make_node("Tanh", ["a"], ["y"], name="tanh")])


def _external_w(location: str) -> TensorProto:
    t = TensorProto(name="W", data_type=FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    return t


def _write(path, data) -> str:
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.SerializeToString())
    return str(path)



def _conv_channels(with_if: bool) -> Callable[[str], str]:
    """A Conv weight of 2 input channels on a 3-channel x: onnx's checker and strict inference of
    the input miss it, the gradient model contradicts it (validation.check_gradient_model). The
    If variant reaches the Conv through a subgraph's rule."""
    def make(folder: str) -> str:
        nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3], name="conv")]
        if with_if:
            branch = helper.make_graph([helper.make_node("Identity", ["c"], ["b"])], "branch", [],
                                       [helper.make_tensor_value_info("b", FLOAT, [1, 4, 3, 3])])
            nodes += [helper.make_node("If", ["flag"], ["y"], then_branch=branch, else_branch=branch, name="if")]
            extra = [numpy_helper.from_array(np.array(True), "flag")]
        else:
            nodes += [helper.make_node("Identity", ["c"], ["y"], name="id")]
            extra = []
        bad = model(nodes, inits=[numpy_helper.from_array(np.ones((4, 2, 3, 3), np.float32), "W")] + extra,
                    inputs=[helper.make_tensor_value_info("x", FLOAT, [1, 3, 5, 5])],
                    outputs=[helper.make_tensor_value_info("y", FLOAT, [1, 4, 3, 3])])
        return _write(os.path.join(folder, "m.onnx"), bad)
    return make


# Each maker gets the test's folder and returns the model path (the file may not exist).
@dataclass
class Bad:
    id: str
    make: Callable[[str], str]
    error: type[errors.OnnxGradError]
    fragments: list[str]
    xs: str = "W"
    ys: str = "y"
    extra: list[str] = field(default_factory=list)  # additional CLI options
    api_kwargs: dict = field(default_factory=dict)
    cli_code: int | None = None  # when click rejects the argument itself (usage, exit 2)


def _symlink_out(folder: str) -> str:
    outside = os.path.join(os.path.dirname(folder), f"{os.path.basename(folder)}-outside.bin")
    np.arange(3, dtype=np.float32).tofile(outside)
    os.symlink(outside, os.path.join(folder, "w.bin"))
    return _write(os.path.join(folder, "m.onnx"), model([helper.make_node("Mul", ["x", "W"], ["y"])],
                                                       inits=[_external_w("w.bin")]))


def _random_bytes(folder: str) -> str:
    return _write(os.path.join(folder, "m.onnx"), np.random.default_rng(0).bytes(4096))


def _sparse_3gb(folder: str) -> str:
    path = os.path.join(folder, "m.onnx")
    with open(path, "wb") as f:
        f.truncate(3 * 2**30)  # sparse: costs no disk and is never read
    return path


def _truncated(folder: str) -> str:
    data = good().SerializeToString()
    return _write(os.path.join(folder, "m.onnx"), data[: len(data) * 2 // 3])


def _m(proto_fn) -> Callable[[str], str]:
    return lambda folder: _write(os.path.join(folder, "m.onnx"), proto_fn())


BAD_INPUTS = [
    Bad("conv channels onnx misses", _conv_channels(False), errors.InvalidModelError,
        ["fails ONNX shape inference", "gradients/"]),
    Bad("conv channels onnx misses, with an If", _conv_channels(True), errors.InvalidModelError,
        ["fails ONNX shape inference", "gradients/"]),
    # unreadable model: exit 3
    Bad("missing file", lambda f: os.path.join(f, "missing.onnx"), errors.ModelReadError,
        ["model file not found", "missing.onnx"]),
    Bad("empty file", lambda f: _write(os.path.join(f, "m.onnx"), b""), errors.ModelReadError,
        ["model file is empty", "m.onnx"]),
    Bad("directory", lambda f: f, errors.ModelReadError, ["is a directory"], cli_code=2),
    Bad("a device", lambda f: "/dev/zero", errors.ModelReadError, ["/dev/zero", "not a regular file"]),
    Bad("past 2 GB", _sparse_3gb, errors.ModelReadError, ["m.onnx", "2 GB"]),
    Bad("random bytes", _random_bytes, errors.ModelReadError, ["m.onnx", "not an ONNX model"]),
    Bad("truncated protobuf", _truncated, errors.ModelReadError, ["m.onnx", "not an ONNX model"]),
    # a TensorProto's wire format does not even parse as a ModelProto; a GraphProto's does
    Bad("a TensorProto", _m(lambda: _w()), errors.ModelReadError, ["m.onnx", "not an ONNX model"]),
    Bad("a GraphProto", _m(lambda: good().graph), errors.ModelReadError, ["holds no ONNX graph"]),
    # invalid model: exit 4
    Bad("cycle", _m(lambda: model([helper.make_node("Add", ["x", "c"], ["a"], name="add"),
                                   helper.make_node("Tanh", ["a"], ["c"], name="tanh"),
                                   helper.make_node("Mul", ["a", "W"], ["y"], name="mul")])),
        errors.InvalidModelError, ["cycle", "'add'", "'tanh'"]),
    Bad("self loop", _m(lambda: model([helper.make_node("Add", ["x", "y"], ["y"], name="loop")])),
        errors.InvalidModelError, ["cycle", "'loop'"]),
    Bad("dangling input", _m(lambda: model([helper.make_node("Mul", ["x", "ghost"], ["y"], name="mul")])),
        errors.InvalidModelError, ["dangling", "'ghost'", "'mul'"]),
    Bad("duplicate tensor name", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["y"], name="a"),
                                                   helper.make_node("Tanh", ["x"], ["y"], name="b")])),
        errors.InvalidModelError, ["'y'", "produced twice"]),
    Bad("output shadows an input", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["x"]),
                                                     helper.make_node("Tanh", ["x"], ["y"])])),
        errors.InvalidModelError, ["'x'", "produced twice"]),
    Bad("duplicate initializer", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["y"])], inits=[_w(), _w()])),
        errors.InvalidModelError, ["initializer name 'W'", "twice"]),
    Bad("unsorted nodes", _m(lambda: model([helper.make_node("Tanh", ["a"], ["y"], name="tanh"),
                                            helper.make_node("Mul", ["x", "W"], ["a"], name="mul")])),
        errors.InvalidModelError, ["topological order", "'a'"]),
    Bad("graph output nobody produces", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["a"])])),
        errors.InvalidModelError, ["graph output 'y'"]),
    Bad("domain not imported", _m(lambda: model([helper.make_node("Foo", ["x", "W"], ["y"], name="foo",
                                                                  domain="com.example")])),
        errors.InvalidModelError, ["'com.example'", "opset_import"]),
    Bad("type mismatch", _m(lambda: model([helper.make_node("Add", ["x", "k"], ["y"])],
                                          inits=[_w(), numpy_helper.from_array(np.ones(3, np.int64), "k")])),
        errors.InvalidModelError, ["inconsistent"]),
    Bad("opset 8", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["y"])], opset=8)),
        errors.InvalidModelError, ["opset 8"]),
    Bad("external data ../", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["y"])],
                                              inits=[_external_w("../w.bin")])),
        errors.InvalidModelError, ["'W'", "outside the model's folder", "../w.bin"]),
    Bad("external data absolute", _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["y"])],
                                                   inits=[_external_w("/etc/hostname")])),
        errors.InvalidModelError, ["'W'", "absolute path", "/etc/hostname"]),
    Bad("external data symlink out", _symlink_out, errors.InvalidModelError, ["'W'", "symlink", "w.bin"]),
    # no gradient rule: exit 5
    Bad("custom domain op on the path",
        _m(lambda: model([helper.make_node("Mul", ["x", "W"], ["a"]),
                          helper.make_node("Foo", ["a"], ["b"], name="foo", domain="com.example"),
                          helper.make_node("Tanh", ["b"], ["y"])], domains=["com.example"])),
        errors.NoGradientError, ["'foo'", "com.example::Foo", "stop_gradients"]),
    # usage: exit 2
    Bad("unknown x", _m(good), errors.GradientArgumentError, ["xs", "'Wx'", "'W'"], xs="Wx"),
    Bad("unknown y", _m(good), errors.GradientArgumentError, ["ys", "'why'"], ys="why"),
    Bad("unknown stop gradient", _m(good), errors.GradientArgumentError, ["stop_gradients", "'nope'"],
        extra=["--stop-gradients", "nope"], api_kwargs={"stop_gradients": ["nope"]}),
]


def _cli(args: list[str]):
    runner = CliRunner(mix_stderr=False) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames else CliRunner()  # type: ignore[call-arg]
    return runner.invoke(cli, args, catch_exceptions=False)


def _assert_one_line(stderr: str, code: int, exit_code: int, fragments: list[str]) -> None:
    assert exit_code == code, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("onnxgrad: error: ") and "Traceback" not in stderr, stderr
    for f in fragments:
        assert f in lines[0], (f, lines[0])


def _listing(folder) -> list[str]:
    return sorted(os.listdir(folder))


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_api(bad: Bad, tmp_path):
    path = bad.make(str(tmp_path))
    with pytest.raises(bad.error) as info:
        onnxgrad.gradients(path, bad.ys, bad.xs, **bad.api_kwargs)
    message = str(info.value)
    assert "\n" not in message
    for f in bad.fragments:
        assert f in message, (f, message)
    assert isinstance(info.value, errors.OnnxGradError)


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=[b.id for b in BAD_INPUTS])
def test_bad_input_cli(bad: Bad, tmp_path):
    path = bad.make(str(tmp_path))
    out = tmp_path / "out" / "g.onnx"
    out.parent.mkdir()
    before = _listing(tmp_path)
    r = _cli(["differentiate", path, "--xs", bad.xs, "--ys", bad.ys, "-o", str(out)] + bad.extra)
    _assert_one_line(r.stderr, bad.cli_code or bad.error.exit_code, r.exit_code,
                     bad.fragments if bad.cli_code is None else [])
    assert r.stdout == ""
    assert _listing(tmp_path) == before and _listing(out.parent) == []


def test_exit_codes_are_distinct_per_class():
    codes = {cls: cls.exit_code for cls in (errors.GradientArgumentError, errors.ModelReadError,
                                            errors.InvalidModelError, errors.NoGradientError,
                                            errors.OutputWriteError)}
    assert sorted(codes.values()) == [2, 3, 4, 5, 6]


def test_bad_option_values(tmp_path):
    path = _write(tmp_path / "m.onnx", good())
    with pytest.raises(errors.GradientArgumentError, match="aggregation_method specified 7"):
        onnxgrad.gradients(path, "y", "W", aggregation_method=7)
    with pytest.raises(errors.GradientArgumentError, match="unconnected_gradients: 'nonsense'"):
        onnxgrad.gradients(path, "y", "W", unconnected_gradients="nonsense")
    with pytest.raises(errors.GradientArgumentError, match="Passed 2 grad_ys for 1 ys"):
        onnxgrad.gradients(path, "y", "W", grad_ys=[None, None])
    for opt in (["--aggregation-method", "bogus"], ["--unconnected-gradients", "maybe"], ["--frobnicate"]):
        r = _cli(["differentiate", path, "--xs", "W", "-o", str(tmp_path / "g.onnx")] + opt)
        _assert_one_line(r.stderr, 2, r.exit_code, [opt[-1]])
    assert _listing(tmp_path) == ["m.onnx"]


def test_output_folder_missing_or_unwritable(tmp_path):
    path = _write(tmp_path / "m.onnx", good())
    r = _cli(["differentiate", path, "--xs", "W", "-o", str(tmp_path / "nowhere" / "g.onnx")])
    _assert_one_line(r.stderr, 6, r.exit_code, ["output folder does not exist", "nowhere"])
    # /proc accepts no new files, even for root (chmod does not stop root)
    r = _cli(["differentiate", path, "--xs", "W", "-o", "/proc/onnxgrad-g.onnx"])
    _assert_one_line(r.stderr, 6, r.exit_code, ["/proc/onnxgrad-g.onnx"])
    (tmp_path / "adir.onnx").mkdir()
    r = _cli(["differentiate", path, "--xs", "W", "-o", str(tmp_path / "adir.onnx")])
    _assert_one_line(r.stderr, 2, r.exit_code, ["adir.onnx", "is a directory"])  # click rejects it: usage
    assert _listing(tmp_path) == ["adir.onnx", "m.onnx"] and _listing(tmp_path / "adir.onnx") == []
    with pytest.raises(errors.OutputWriteError, match="output folder does not exist"):
        modelio.write_model(good(), str(tmp_path / "nowhere" / "g.onnx"))
    with pytest.raises(errors.OutputWriteError, match="is a directory"):
        modelio.write_model(good(), str(tmp_path / "adir.onnx"))


def test_input_is_never_overwritten(tmp_path):
    path = _write(tmp_path / "m.onnx", good())
    with open(path, "rb") as f:
        before = f.read()
    with pytest.raises(errors.OutputWriteError, match="refusing to overwrite the input"):
        modelio.write_model(onnxgrad.gradients(path, "y", "W").model, path, source=path)
    r = _cli(["differentiate", path, "--xs", "W", "-o", path])
    assert r.exit_code != 0 and len(r.stderr.strip().splitlines()) == 1
    with open(path, "rb") as f:
        assert f.read() == before
    assert _listing(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("bad", [b for b in BAD_INPUTS if b.id in
                                 ("truncated protobuf", "cycle", "custom domain op on the path", "unknown x")],
                         ids=lambda b: b.id)
def test_bad_input_real_process(bad: Bad, tmp_path):
    """``python -m onnxgrad`` in a subprocess: real exit code, one stderr line, no traceback."""
    path = bad.make(str(tmp_path))
    before = _listing(tmp_path)
    r = subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", path, "--xs", bad.xs, "--ys", bad.ys,
                        "-o", str(tmp_path / "g.onnx")], capture_output=True, text=True, timeout=120, cwd=ROOT,
                       check=False)
    _assert_one_line(r.stderr, bad.error.exit_code, r.returncode, bad.fragments)
    assert r.stdout == "" and _listing(tmp_path) == before


# ----------------------------------------------------------------------------------- atomic output
def _fail(exc: BaseException):
    def raiser(*args, **kwargs):
        raise exc
    return raiser


# (how the file is created, whether an output exists already, the os function that fails): every
# call on each write path. O_TMPFILE links a new output into place, and renames only over an old one.
_WRITE_STEPS = ([("tmpfile", False, w) for w in ("write", "fsync", "link")]
                + [("tmpfile", True, w) for w in ("write", "fsync", "link", "replace")]
                + [("fallback", p, w) for p in (False, True) for w in ("write", "fsync", "chmod", "replace")])


@pytest.mark.parametrize("mode,previous,where", _WRITE_STEPS,
                         ids=[f"{m}-{'replacing' if p else 'new'}-{w}" for m, p, w in _WRITE_STEPS])
@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()],
                         ids=["oserror", "interrupt"])
def test_failure_mid_write_leaves_nothing(mode, previous, where, exc, tmp_path, monkeypatch):
    """O_TMPFILE + linkat (Linux) or a hidden temporary file (elsewhere): a failure at any step
    leaves the folder as it was, an earlier output included."""
    result = onnxgrad.gradients(good(), "y", "W")
    out = tmp_path / "g.onnx"
    if previous:
        out.write_bytes(b"previous")
    if mode == "fallback":
        monkeypatch.delattr(modelio.os, "O_TMPFILE", raising=False)
    monkeypatch.setattr(modelio.os, where, _fail(exc))
    expected = errors.OutputWriteError if isinstance(exc, OSError) else KeyboardInterrupt
    with pytest.raises(expected):
        modelio.write_model(result.model, str(out))
    monkeypatch.undo()
    assert _listing(tmp_path) == (["g.onnx"] if previous else [])
    if previous:
        assert out.read_bytes() == b"previous"


def test_written_model_is_an_ordinary_file(tmp_path):
    out = tmp_path / "g.onnx"
    modelio.write_model(onnxgrad.gradients(good(), "y", "W").model, str(out))
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(out).st_mode & 0o777 == 0o666 & ~mask
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)


# ------------------------------------------------------------------------------- determinism
_MODELS = [os.path.join(ROOT, "tests", "data", "torch", f"{m}.onnx") for m in ("mlp_ce", "resnet_cnn", "gpt_block")]


def test_byte_identical_across_processes(tmp_path):
    """Two processes with different hash seeds write the same bytes for the same input."""
    outputs = []
    for seed in ("1", "2"):
        folder = tmp_path / f"run{seed}"
        folder.mkdir()
        script = ("import sys, onnxgrad; from onnxgrad.modelio import write_model\n"
                  "for i, m in enumerate(sys.argv[2:]):\n"
                  "    r = onnxgrad.gradients(m, 'loss', [t.name for t in"
                  " onnxgrad.loading.load_model(m).graph.initializer if t.data_type == 1])\n"
                  "    write_model(r.model, f'{sys.argv[1]}/{i}.onnx')\n")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, "-c", script, str(folder)] + _MODELS, check=True, env=env, cwd=ROOT,
                       timeout=300)
        cli_out = folder / "cli.onnx"
        subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", _MODELS[0], "--xs", "@params",
                        "--ys", "loss", "-o", str(cli_out)], check=True, env=env, cwd=ROOT, timeout=300,
                       capture_output=True)
        outputs.append([(folder / n).read_bytes() for n in sorted(os.listdir(folder))])
    assert len(outputs[0]) == len(_MODELS) + 1
    assert outputs[0] == outputs[1]


# ------------------------------------------------------------------------ output targets
def _char_device(folder) -> str:
    """A private twin of /dev/null (same device numbers): what `-o /dev/null` meets, without
    risking the machine's own /dev/null if the guard ever regressed."""
    import stat

    path = os.path.join(folder, "null")
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs CAP_MKNOD")
    return path


@pytest.mark.parametrize("kind", ["device", "fifo", "symlink to device", "symlink to fifo"])
def test_non_regular_output_targets_are_refused(kind, tmp_path):
    """`-o /dev/null` as root used to rename the model over the device node."""
    import stat

    src = _write(tmp_path / "m.onnx", good())
    special = _char_device(str(tmp_path)) if "device" in kind else str(tmp_path / "fifo")
    if "fifo" in kind:
        os.mkfifo(special)
    target = special
    if kind.startswith("symlink"):
        target = str(tmp_path / "link.onnx")
        os.symlink(special, target)
    before = _listing(tmp_path)
    r = _cli(["differentiate", src, "--xs", "W", "-o", target])
    _assert_one_line(r.stderr, 6, r.exit_code, ["not a regular file", "refusing to replace it"])
    mode = os.lstat(special).st_mode
    assert (stat.S_ISCHR(mode) if "device" in kind else stat.S_ISFIFO(mode))
    assert _listing(tmp_path) == before
    with pytest.raises(errors.OutputWriteError, match="not a regular file"):
        modelio.save(good(), target)
    r = _cli(["ops", "--markdown", target])
    _assert_one_line(r.stderr, 6, r.exit_code, ["not a regular file"])
    if "fifo" in kind:  # reading a FIFO as a seed would block forever
        os.rename(special, f"{special}.npy")
        r = _cli(["differentiate", src, "--xs", "W", "--grad-ys", f"y={special}.npy", "-o", str(tmp_path / "g.onnx")])
        _assert_one_line(r.stderr, 2, r.exit_code, ["not a regular file"])
        os.rename(f"{special}.npy", special)


def test_real_dev_null_and_dev_full_are_refused_before_any_work():
    for device in ("/dev/null", "/dev/full"):
        if os.path.exists(device):
            with pytest.raises(errors.OutputWriteError, match="not a regular file"):
                modelio.output_path(device)


def test_symlink_to_a_file_is_written_through(tmp_path):
    src = _write(tmp_path / "m.onnx", good())
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "g.onnx"
    real.write_bytes(b"old")
    link = tmp_path / "g.onnx"
    os.symlink(real, link)
    r = _cli(["differentiate", src, "--xs", "W", "-o", str(link)])
    assert r.exit_code == 0, r.stderr
    assert os.path.islink(link) and os.readlink(link) == str(real)
    assert [o.name for o in onnx.load(str(real)).graph.output] == ["y", "gradients/W_grad"]
    assert _listing(tmp_path / "real") == ["g.onnx"]
    os.remove(real)
    r = _cli(["differentiate", src, "--xs", "W", "-o", str(link)])
    _assert_one_line(r.stderr, 6, r.exit_code, ["symlink to a missing file"])


# ------------------------------------------------------------------------------ signals
_SIGNAL_SCRIPT = """
import os, signal, sys
mode, sig, nth = sys.argv[1], getattr(signal, sys.argv[2]), int(sys.argv[3])
if mode == "fallback":
    del os.O_TMPFILE
real_fsync, calls = os.fsync, []


def fsync(fd):  # the signal arrives in the middle of the write, after the data reached the disk
    real_fsync(fd)
    calls.append(fd)
    if len(calls) == nth:
        os.kill(os.getpid(), sig)


os.fsync = fsync
from onnxgrad.cli import main
main(sys.argv[4:])
"""


def _signalled_run(mode: str, sig: str, nth: int, args: list[str]):
    return subprocess.run([sys.executable, "-c", _SIGNAL_SCRIPT, mode, sig, str(nth)] + args,
                          capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


@pytest.mark.parametrize("mode", ["tmpfile", "fallback"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP"])
def test_sigterm_and_sighup_mid_write_leave_nothing(mode, sig, tmp_path):
    import signal

    src = _write(tmp_path / "m.onnx", good())
    r = _signalled_run(mode, sig, 1, ["differentiate", src, "--xs", "W"])
    assert r.returncode == 128 + getattr(signal, sig), (r.returncode, r.stderr)
    assert r.stderr.strip().splitlines() == [f"onnxgrad: terminated by {sig}"]
    assert _listing(tmp_path) == ["m.onnx"]


@pytest.mark.parametrize("mode", ["tmpfile", "fallback"])
def test_sigterm_while_copying_external_weights_leaves_nothing(mode, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = str(tmp_path / "in" / "m.onnx")
    onnx.save_model(good(), src, save_as_external_data=True, location="w.bin", size_threshold=0)
    for nth in (1, 2):  # during the weights' copy, then during the model once the copy is in place
        r = _signalled_run(mode, "SIGTERM", nth, ["differentiate", src, "--xs", "W", "-o",
                                                  str(tmp_path / "out" / "g.onnx")])
        assert r.returncode == 143, r.stderr
        assert _listing(tmp_path / "out") == [] and _listing(tmp_path / "in") == ["m.onnx", "w.bin"]


def test_sigkill_mid_write_leaves_nothing_with_o_tmpfile(tmp_path):
    """O_TMPFILE: the file has no name until it is complete, so even SIGKILL leaves nothing."""
    src = _write(tmp_path / "m.onnx", good())
    r = _signalled_run("tmpfile", "SIGKILL", 1, ["differentiate", src, "--xs", "W"])
    assert r.returncode == -9
    assert _listing(tmp_path) == ["m.onnx"]


# ------------------------------------------------------------------------ hostile names
_HOSTILE = {
    "x": "x\x1b]0;pwned\x07",  # retitles the terminal
    "W": "W\x1b]52;c;ZWNobyBoaQ==\x07",  # OSC 52: writes the clipboard
    "y": "y\nall good",  # forges an output line
    "a": "a\u202eevil",  # right-to-left override
}


def _hostile_model() -> onnx.ModelProto:
    x, w, y, a = (_HOSTILE[k] for k in "xWya")
    graph = helper.make_graph(
        [helper.make_node("Mul", [x, w], [a]), helper.make_node("Tanh", [a], [y])], "g",
        [helper.make_tensor_value_info(x, FLOAT, [3])], [helper.make_tensor_value_info(y, FLOAT, [3])],
        [numpy_helper.from_array(np.arange(3, dtype=np.float32) + 1, w)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _assert_inert(text: str) -> None:
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text, repr(text)


def test_names_are_escaped_in_tables_and_errors(tmp_path):
    src = _write(tmp_path / "hostile.onnx", _hostile_model())
    x, w = _HOSTILE["x"], _HOSTILE["W"]
    r = _cli(["differentiate", src, "--xs", f"{w},{_HOSTILE['a']}", "--ys", _HOSTILE["y"]])
    assert r.exit_code == 0, r.stderr
    _assert_inert(r.stdout)
    lines = r.stdout.splitlines()
    assert len(lines) == 5  # header, rule, two xs, summary: no forged line
    assert lines[2].startswith("W\\x1b]52;c;ZWNobyBoaQ==\\x07  ") and lines[3].startswith("a\\u202eevil  ")
    r = _cli(["check", src, "--xs", x, "--ys", _HOSTILE["y"]])
    assert r.exit_code == 0, r.stdout + r.stderr
    _assert_inert(r.stdout)
    assert len(r.stdout.splitlines()) == 4 and "x\\x1b]0;pwned\\x07" in r.stdout
    r = _cli(["differentiate", src, "--xs", "nope\x1b[2J", "--ys", _HOSTILE["y"]])
    _assert_one_line(r.stderr, 2, r.exit_code, ["nope\\x1b[2J"])
    _assert_inert(r.stderr)
    hostile_path = tmp_path / "m\x1b[31m.onnx"
    r = _cli(["differentiate", str(hostile_path), "--xs", "W"])
    _assert_one_line(r.stderr, 3, r.exit_code, ["m\\x1b[31m.onnx"])
    _assert_inert(r.stderr)


# ------------------------------------------------------------------------ exit codes per fault class
def test_external_data_fault_in_the_input_is_a_read_error_not_an_output_error(tmp_path):
    """A missing weights file used to surface at write time as exit 6, prefix doubled."""
    src = str(tmp_path / "m.onnx")
    onnx.save_model(good(), src, save_as_external_data=True, location="w.bin", size_threshold=0)
    os.remove(tmp_path / "w.bin")
    r = _cli(["differentiate", src, "--xs", "W", "-o", str(tmp_path / "g.onnx")])
    _assert_one_line(r.stderr, 3, r.exit_code, ["cannot read the external weights of tensor 'W'", "w.bin"])
    assert r.stderr.count("cannot") == 1 and "write" not in r.stderr
    assert _listing(tmp_path) == ["m.onnx"]


def test_internal_error_exit_code_differs_from_a_failed_check():
    from onnxgrad import cli as cli_module

    assert cli_module.EXIT_INTERNAL == 7
    codes = {cls.exit_code for cls in (errors.GradientArgumentError, errors.ModelReadError, errors.InvalidModelError,
                                       errors.NoGradientError, errors.OutputWriteError)}
    assert 1 not in codes and cli_module.EXIT_INTERNAL not in codes
