"""Models whose weights live in external files.

onnxgrad never reads external weights: it needs only their names, dtypes and shapes. The
gradient model references the same files; beside the input (the command line's default) the
references resolve as they are, elsewhere :func:`onnxgrad.modelio.write_model` copies
the files into the output folder when told the source. Locations that leave the model's
folder are refused. A model with more than 2 GB of external weights (a sparse file, so the test
stays cheap) goes through the command line with a peak memory far below the weights' size.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrad
from onnxgrad import errors
from onnxgrad.checking import session
from onnxgrad.modelio import write_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLOAT = TensorProto.FLOAT


def mlp() -> onnx.ModelProto:
    """loss = sum(tanh(x @ W1 + b1) @ W2) with weights big enough to be stored externally."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.3, n)
             for n, s in (("W1", (8, 32)), ("b1", (32,)), ("W2", (32, 4)))]
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h0"]), helper.make_node("Add", ["h0", "b1"], ["h1"]),
             helper.make_node("Tanh", ["h1"], ["h"]), helper.make_node("MatMul", ["h", "W2"], ["o"]),
             helper.make_node("ReduceSum", ["o"], ["loss"], keepdims=0)]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("loss", FLOAT, [])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def save_external(model: onnx.ModelProto, folder, location: str = "weights.bin") -> str:
    path = os.path.join(folder, "mlp.onnx")
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True, location=location,
                    size_threshold=0)
    return path


def _locations(model: onnx.ModelProto) -> set:
    return {e.value for t in model.graph.initializer for e in t.external_data if e.key == "location"}


def _run_gradients(path: str, names) -> list:
    feeds = {"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)}
    return session_from_file(path).run(names, feeds)


def session_from_file(path: str):
    import onnxruntime as ort

    return ort.InferenceSession(path, providers=["CPUExecutionProvider"])


def _expected():
    result = onnxgrad.gradients(mlp(), "loss", ["W1", "b1", "W2"])
    feeds = {"x": np.linspace(-1, 1, 16, dtype=np.float32).reshape(2, 8)}
    return session(result.model).run(result.names, feeds)


def test_weights_are_never_read_and_the_output_runs_beside_the_input(tmp_path):
    src = save_external(mlp(), tmp_path)
    weights = tmp_path / "weights.bin"
    data = weights.read_bytes()
    # differentiation needs no byte of the weights: garbage of the right size gives the same model
    weights.write_bytes(b"\xff" * len(data))
    out = tmp_path / "mlp.grad.onnx"
    r = subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", src, "--xs", "W1,b1,W2", "--ys", "loss"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert r.returncode == 0, r.stderr
    assert out.exists()
    weights.write_bytes(data)
    grad = onnx.load(str(out), load_external_data=False)
    assert _locations(grad) == {"weights.bin"}
    assert all(t.data_location == TensorProto.EXTERNAL and not t.raw_data for t in grad.graph.initializer)
    onnx.checker.check_model(str(out), full_check=True)
    names = [o.name for o in grad.graph.output[1:]]
    for got, want in zip(_run_gradients(str(out), names), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_output_in_another_folder_copies_the_weights(tmp_path):
    (tmp_path / "in" / "data").mkdir(parents=True)  # onnx.save does not create it
    src = save_external(mlp(), tmp_path / "in", location="data/weights.bin")
    other = tmp_path / "out"
    other.mkdir()
    result = onnxgrad.gradients(src, "loss", ["W1", "b1", "W2"])
    write_model(result.model, str(other / "g.onnx"), source=src)
    copied = other / "data" / "weights.bin"
    assert copied.read_bytes() == (tmp_path / "in" / "data" / "weights.bin").read_bytes()
    onnx.checker.check_model(str(other / "g.onnx"), full_check=True)
    for got, want in zip(_run_gradients(str(other / "g.onnx"), result.names), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # writing again finds the same file in place and leaves it
    write_model(result.model, str(other / "g.onnx"), source=src)
    assert sorted(os.listdir(other)) == ["data", "g.onnx"]


def test_output_elsewhere_without_its_weights_is_refused(tmp_path):
    (tmp_path / "in").mkdir()
    src = save_external(mlp(), tmp_path / "in")
    other = tmp_path / "out"
    other.mkdir()
    result = onnxgrad.gradients(src, "loss", "W1")
    with pytest.raises(errors.OutputWriteError, match="'weights.bin' is not in") as info:
        write_model(result.model, str(other / "g.onnx"))
    assert str(info.value).count("cannot write") == 1  # OutputWriteError is an OSError: never wrapped twice
    (other / "weights.bin").write_bytes(b"someone else's file")
    with pytest.raises(errors.OutputWriteError, match="already exists and is not the input's external data"):
        write_model(result.model, str(other / "g.onnx"), source=src)
    assert sorted(os.listdir(other)) == ["weights.bin"]
    assert (other / "weights.bin").read_bytes() == b"someone else's file"


def test_failed_write_removes_the_copies_it_made(tmp_path, monkeypatch):
    (tmp_path / "in").mkdir()
    src = save_external(mlp(), tmp_path / "in")
    other = tmp_path / "out"
    other.mkdir()
    result = onnxgrad.gradients(src, "loss", "W1")

    calls = []
    real_fsync = os.fsync

    def no_space_for_the_model(fd):  # the weights' copy is synced first, the model second
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr("onnxgrad.modelio.os.fsync", no_space_for_the_model)
    with pytest.raises(errors.OutputWriteError, match="No space left"):
        write_model(result.model, str(other / "g.onnx"), source=src)
    monkeypatch.undo()
    assert len(calls) == 2
    assert os.listdir(other) == []


def _external_model(location: str) -> onnx.ModelProto:
    t = TensorProto(name="W", data_type=FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value=location)
    graph = helper.make_graph([helper.make_node("Mul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", FLOAT, [3])],
                              [helper.make_tensor_value_info("y", FLOAT, [3])], [t])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("location", ["../w.bin", "sub/../../w.bin", "/etc/hostname", "..\\w.bin", "C:\\w.bin", ""])
def test_locations_outside_the_folder_are_refused(location, tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(_external_model(location).SerializeToString())
    with pytest.raises(errors.InvalidModelError, match="external data of tensor 'W'"):
        onnxgrad.gradients(str(path), "y", "W")
    with pytest.raises(errors.InvalidModelError, match="external data of tensor 'W'"):
        onnxgrad.gradients(_external_model(location), "y", "W")  # a ModelProto: checked by text


def test_symlinks_are_followed_only_inside_the_folder(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "real.bin").write_bytes(np.ones(3, np.float32).tobytes())
    os.symlink("real.bin", tmp_path / "m" / "inside.bin")
    os.symlink(tmp_path / "secret.bin", tmp_path / "m" / "outside.bin")
    for loc, ok in (("inside.bin", True), ("outside.bin", False)):
        path = tmp_path / "m" / f"{loc}.onnx"
        path.write_bytes(_external_model(loc).SerializeToString())
        if ok:
            assert onnxgrad.gradients(str(path), "y", "W").names[0] is not None
        else:
            with pytest.raises(errors.InvalidModelError, match="symlink"):
                onnxgrad.gradients(str(path), "y", "W")


def test_external_constant_attribute_is_checked_too(tmp_path):
    t = TensorProto(name="c", data_type=FLOAT, dims=[3], data_location=TensorProto.EXTERNAL)
    t.external_data.add(key="location", value="../c.bin")
    model = _external_model("w.bin")
    model.graph.node.insert(0, helper.make_node("Constant", [], ["c"], value=t))
    with pytest.raises(errors.InvalidModelError, match="tensor 'c'"):
        onnxgrad.gradients(model, "y", "W")


def test_small_models_stay_in_one_file(tmp_path):
    out = tmp_path / "g.onnx"
    write_model(onnxgrad.gradients(mlp(), "loss", "W1").model, str(out))
    assert os.listdir(tmp_path) == ["g.onnx"]
    assert not _locations(onnx.load(str(out)))


# ------------------------------------------------------------------------- past protobuf's 2 GB
_MEASURE = """
import resource, subprocess, sys
r = subprocess.run(sys.argv[1:], capture_output=True, text=True, check=False)
sys.stdout.write(r.stdout)
sys.stderr.write(r.stderr)
print("PEAK_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r.returncode)
"""


def test_model_past_2gb_of_external_weights(tmp_path):
    """2.4 GB of weights in a sparse file: the CLI differentiates it with little memory."""
    n = 200_000_000  # 800 MB of float32 per weight, three weights
    inits = []
    for i in range(3):
        t = TensorProto(name=f"W{i}", data_type=FLOAT, dims=[n], data_location=TensorProto.EXTERNAL)
        for k, v in (("location", "big.bin"), ("offset", str(i * 4 * n)), ("length", str(4 * n))):
            t.external_data.add(key=k, value=v)
        inits.append(t)
    nodes = [helper.make_node("Mul", ["x", f"W{i}"], [f"m{i}"]) for i in range(3)]
    nodes += [helper.make_node("Sum", ["m0", "m1", "m2"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", FLOAT, [n])],
                              [helper.make_tensor_value_info("y", FLOAT, [n])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    src = tmp_path / "big.onnx"
    src.write_bytes(model.SerializeToString())
    weights_size = 3 * 4 * n
    with open(tmp_path / "big.bin", "wb") as f:
        f.truncate(weights_size)  # sparse: no disk blocks, and nothing to read
    assert weights_size > 2**31

    r = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "onnxgrad", "differentiate", str(src),
                        "--xs", "W0,W1,W2", "--ys", "y"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                       check=False)
    assert r.returncode == 0, r.stderr
    peak = int(r.stdout.rsplit("PEAK_KB", 1)[1]) * 1024
    print(f"peak RSS {peak / 2**20:.0f} MiB for {weights_size / 2**30:.2f} GiB of external weights")
    assert peak < weights_size / 8

    out = tmp_path / "big.grad.onnx"
    grad = onnx.load(str(out), load_external_data=False)
    assert _locations(grad) == {"big.bin"}
    assert [o.name for o in grad.graph.output][1:] == ["gradients/W0_grad", "gradients/W1_grad", "gradients/W2_grad"]
    onnx.checker.check_model(str(out), full_check=True)
    assert os.path.getsize(out) < 2**20


# ------------------------------------------------------------------------- metadata validation
def _cli(args):
    import inspect

    from click.testing import CliRunner

    from onnxgrad.cli import cli

    runner = CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters \
        else CliRunner()
    return runner.invoke(cli, args, catch_exceptions=False)


def _with_entries(folder, entries, data_size: int = 12) -> str:
    """m.onnx whose W ([3] float32, 12 bytes) has the given external_data entries; w.bin holds data_size bytes."""
    model = _external_model("w.bin")
    t = model.graph.initializer[0]
    del t.external_data[:]
    for k, v in entries:
        t.external_data.add(key=k, value=v)
    (folder / "w.bin").write_bytes(np.arange(data_size // 4, dtype=np.float32).tobytes() + b"\0" * (data_size % 4))
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    return str(path)


@pytest.mark.parametrize("entries,size,fragment", [
    ([("location", "w.bin"), ("location", "../../etc/passwd")], 12, "'location' twice"),
    ([("location", "w.bin"), ("offset", "0"), ("offset", "4")], 16, "'offset' twice"),
    ([("location", "w.bin"), ("offset", "8")], 12, "reads bytes 8-20 of 'w.bin', which has only 12 bytes"),
    ([("location", "w.bin"), ("offset", "100"), ("length", "12")], 12, "reads bytes 100-112"),
    ([("location", "w.bin"), ("length", "8")], 12, "declares length 8 bytes, but its dims [3] of float take 12"),
    ([("location", "w.bin"), ("length", "24")], 24, "declares length 24 bytes"),
    ([("location", "w.bin")], 16, "runs from byte 0 to the end of 'w.bin' (16 bytes)"),
    ([("location", "w.bin"), ("offset", "-4")], 12, "offset '-4'"),
    ([("location", "w.bin"), ("length", "1e3")], 12, "length '1e3'"),
], ids=["duplicate location", "duplicate offset", "offset past the end", "range past the end", "length too short",
        "length too long", "file longer than the tensor", "negative offset", "length not an integer"])
def test_bad_external_metadata_is_refused_without_reading(entries, size, fragment, tmp_path):
    """differentiate used to accept these (and write an equally broken model) while check refused."""
    src = _with_entries(tmp_path, entries, size)
    with pytest.raises(errors.InvalidModelError, match="external data of tensor 'W'") as info:
        onnxgrad.gradients(src, "y", "W")
    assert fragment in str(info.value)
    for command in ("differentiate", "check"):
        r = _cli([command, src, "--xs", "W"])
        assert r.exit_code == 4, (command, r.stdout, r.stderr)
        assert fragment in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "w.bin"]


def test_good_external_metadata_with_offset_and_length(tmp_path):
    src = _with_entries(tmp_path, [("location", "w.bin"), ("offset", "4"), ("length", "12")], 16)
    result = onnxgrad.gradients(src, "y", "W")
    out = tmp_path / "g.onnx"
    write_model(result.model, str(out), source=src)
    (gw,) = session_from_file(str(out)).run(["gradients/W_grad"], {"x": np.array([1.0, 2.0, 3.0], np.float32)})
    np.testing.assert_allclose(gw, [1.0, 2.0, 3.0])  # d(sum x * W)/dW = x, whatever W holds


@pytest.mark.parametrize("mode,kept", [(0o600, 0o600), (0o640, 0o640), (0o444, 0o444), (0o4755, 0o755)])
def test_copied_weights_keep_their_permission_bits(mode, kept, tmp_path):
    """A 600 file used to become 644; a set-user-ID bit is never copied (a root-owned setuid copy)."""
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    src = save_external(mlp(), tmp_path / "in")
    os.chmod(tmp_path / "in" / "weights.bin", mode)
    r = _cli(["differentiate", src, "--xs", "W1", "-o", str(tmp_path / "out" / "g.onnx")])
    assert r.exit_code == 0, r.stderr
    assert os.stat(tmp_path / "out" / "weights.bin").st_mode & 0o7777 == kept


# ------------------------------------------------------------------------- saving as external data
def test_save_with_external_data_keeps_the_callers_model(tmp_path):
    result = onnxgrad.gradients(mlp(), "loss", ["W1", "b1", "W2"])
    before = result.model.SerializeToString()
    out = tmp_path / "g.onnx"
    assert onnxgrad.save(result.model, str(out), external_data=True) == "g.onnx.data"
    assert result.model.SerializeToString() == before
    assert sorted(os.listdir(tmp_path)) == ["g.onnx", "g.onnx.data"]
    written = onnx.load(str(out), load_external_data=False)
    moved = [t.name for t in written.graph.initializer if t.data_location == TensorProto.EXTERNAL]
    assert moved == ["W1"]  # 1 KiB; b1 (128 bytes) and W2 (512 bytes) stay under the threshold
    onnx.checker.check_model(str(out), full_check=True)
    for got, want in zip(_run_gradients(str(out), result.names), _expected()):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    onnxgrad.save(result.model, str(tmp_path / "h.onnx"), external_data="h.bin")
    assert _locations(onnx.load(str(tmp_path / "h.onnx"), load_external_data=False)) == {"h.bin"}
    for bad in ("../h.bin", "/tmp/h.bin", "sub/h.bin", ""):
        with pytest.raises(errors.OutputWriteError, match="external data file"):
            onnxgrad.save(result.model, str(tmp_path / "i.onnx"), external_data=bad)
    assert sorted(os.listdir(tmp_path)) == ["g.onnx", "g.onnx.data", "h.bin", "h.onnx"]


def test_external_data_file_only_when_something_is_large(tmp_path):
    small = _external_model("w.bin")
    small.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.ones(3, np.float32), "W"))
    assert onnxgrad.save(onnxgrad.gradients(small, "y", "W").model, str(tmp_path / "g.onnx"),
                         external_data=True) is None
    assert os.listdir(tmp_path) == ["g.onnx"]


def test_external_data_name_must_not_be_the_inputs_weights(tmp_path):
    src = save_external(mlp(), tmp_path, location="weights.bin")
    result = onnxgrad.gradients(src, "loss", "W1")
    with pytest.raises(errors.OutputWriteError, match="already holds the input's external weights"):
        write_model(result.model, str(tmp_path / "g.onnx"), source=src, external_data="weights.bin")


def _big_seed_model(folder) -> str:
    """y = x * W with y [64, 64]: a .npy seed for y becomes a 16 KiB constant of the gradient model."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", FLOAT, [64, 64])],
                              [helper.make_tensor_value_info("y", FLOAT, [64, 64])],
                              [numpy_helper.from_array(np.full((64, 64), 0.5, np.float32), "W")])
    path = os.path.join(folder, "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_output_above_the_protobuf_limit_needs_external_data(tmp_path, monkeypatch):
    """The 2 GiB limit, scaled down: over it, --external-data writes what a plain save refuses."""
    from onnxgrad import modelio

    src = _big_seed_model(str(tmp_path))
    seed = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    np.save(tmp_path / "seed.npy", seed)
    monkeypatch.setattr(modelio, "PROTOBUF_LIMIT", 8 * 1024)
    args = ["differentiate", src, "--xs", "W", "--grad-ys", f"y={tmp_path / 'seed.npy'}",
            "-o", str(tmp_path / "g.onnx")]
    r = _cli(args)
    assert r.exit_code == 6 and "over protobuf's 2 GiB limit" in r.stderr and "--external-data" in r.stderr
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "seed.npy"]
    r = _cli(args + ["--external-data", "--json"])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["result"]["external_data"] == "g.onnx.data"
    assert sorted(os.listdir(tmp_path)) == ["g.onnx", "g.onnx.data", "m.onnx", "seed.npy"]
    assert os.path.getsize(tmp_path / "g.onnx") < 8 * 1024
    x = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    (gw,) = session_from_file(str(tmp_path / "g.onnx")).run(["gradients/W_grad"], {"x": x})
    np.testing.assert_allclose(gw, seed * x, rtol=1e-6)
