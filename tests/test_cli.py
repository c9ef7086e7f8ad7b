"""The ``onnxgrad`` command line: every command, option and error path.

Most tests run the click command in-process (CliRunner); a few run ``python -m onnxgrad`` in a
subprocess to see the real exit codes and streams.
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

import onnxgrad
from onnxgrad import cli as cli_module
from onnxgrad.checking import session
from onnxgrad.cli import cli
from onnxgrad.registry import unregister

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
FLOAT = TensorProto.FLOAT


def _runner() -> CliRunner:
    # click < 8.2 mixes stderr into stdout unless told not to
    if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters:
        return CliRunner(mix_stderr=False)  # type: ignore[call-arg]
    return CliRunner()


def run(*args: str):
    return _runner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def models(tmp_path):
    """A private copy of the shipped example models."""
    for f in os.listdir(MODELS):
        if f.endswith(".onnx"):
            shutil.copy(os.path.join(MODELS, f), tmp_path / f)
    return tmp_path


def _save(model: onnx.ModelProto, path) -> str:
    onnx.save(model, str(path))
    return str(path)


def elementwise_model(path) -> str:
    """u = w * x + b (x [N, 3] input, w [3] and b [3] initializers), v = u * u; outputs u, v and int k."""
    nodes = [
        helper.make_node("Mul", ["w", "x"], ["wx"]),
        helper.make_node("Add", ["wx", "b"], ["u"]),
        helper.make_node("Mul", ["u", "u"], ["v"]),
        helper.make_node("Shape", ["x"], ["k"]),
    ]
    inits = [numpy_helper.from_array(np.array([1.0, 2.0, 3.0], np.float32), "w"),
             numpy_helper.from_array(np.array([0.5, -0.5, 1.0], np.float32), "b"),
             numpy_helper.from_array(np.array([7], np.int64), "steps")]
    graph = helper.make_graph(nodes, "ew", [helper.make_tensor_value_info("x", FLOAT, ["N", 3])],
                              [helper.make_tensor_value_info("u", FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("v", FLOAT, ["N", 3]),
                               helper.make_tensor_value_info("k", TensorProto.INT64, [2])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def custom_op_model(path, function: bool = True) -> str:
    """y = my.ops::Cube(x), runnable thanks to a model-local function (x * x * x); without it, Cube
    has no body to differentiate through."""
    fn = helper.make_function("my.ops", "Cube", ["x"], ["y"],
                               [helper.make_node("Mul", ["x", "x"], ["x2"]),
                                helper.make_node("Mul", ["x2", "x"], ["y"])],
                              [helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("Cube", ["x"], ["y"], domain="my.ops", name="cube_node")], "custom",
                              [helper.make_tensor_value_info("x", FLOAT, [2, 3])],
                              [helper.make_tensor_value_info("y", FLOAT, [2, 3])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)],
                              functions=[fn] if function else [], ir_version=8)
    return _save(model, path)


def _outputs(path) -> list:
    return [o.name for o in onnx.load(str(path)).graph.output]


def _assert_one_line_error(result, code: int, *fragments: str) -> None:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("onnxgrad: error: "), lines[0]
    assert "Traceback" not in result.stderr
    for f in fragments:
        assert f in lines[0], lines[0]


def _listing(folder) -> list:
    return sorted(os.listdir(folder))


# ------------------------------------------------------------------------------ differentiate
def test_differentiate_default_output_and_table(models):
    src = models / "partial_derivatives.onnx"
    before = src.read_bytes()
    r = run("differentiate", str(src), "--xs", "a,b")
    assert r.exit_code == 0, r.stderr
    out = models / "partial_derivatives.grad.onnx"
    assert out.exists() and src.read_bytes() == before
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["x", "gradient", "output", "dtype", "shape"]
    assert lines[2].split() == ["a", "gradients/a_grad", "float", "[]"]
    assert lines[3].split() == ["b", "gradients/b_grad", "float", "[]"]
    assert lines[-1].startswith(f"wrote {out} (") and "nodes added" in lines[-1] and " s)" in lines[-1]
    assert _outputs(out) == ["y", "gradients/a_grad", "gradients/b_grad"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    assert [float(v) for v in session(model).run(["gradients/a_grad", "gradients/b_grad"], {})] == [3.0, 1.0]


def test_differentiate_explicit_output_and_stop_gradients(models):
    out = models / "sub" / "pd.onnx"
    out.parent.mkdir()
    r = run("differentiate", str(models / "partial_derivatives.onnx"), "--xs", "a", "--xs", "b",
            "--stop-gradients", "a,b", "-o", str(out))
    assert r.exit_code == 0, r.stderr
    model = onnx.load(str(out))
    assert [float(v) for v in session(model).run(["gradients/a_grad", "gradients/b_grad"], {})] == [1.0, 1.0]


def test_params_and_inputs_groups(tmp_path):
    src = elementwise_model(tmp_path / "ew.onnx")
    r = run("differentiate", src, "--xs", "@params", "--ys", "v")
    assert r.exit_code == 0, r.stderr
    # @params = float initializers only (not the int64 'steps'), in initializer order
    assert _outputs(tmp_path / "ew.grad.onnx") == ["u", "v", "k", "gradients/w_grad", "gradients/b_grad"]
    assert "[3]" in r.stdout
    r = run("differentiate", src, "--xs", "@inputs,w", "--ys", "v", "-o", str(tmp_path / "in.onnx"))
    assert r.exit_code == 0, r.stderr
    assert _outputs(tmp_path / "in.onnx")[3:] == ["gradients/x_grad", "gradients/w_grad"]
    assert "[N, 3]" in r.stdout


def test_ys_default_is_every_float_output(tmp_path):
    src = elementwise_model(tmp_path / "ew.onnx")
    assert run("differentiate", src, "--xs", "b").exit_code == 0
    assert run("differentiate", src, "--xs", "b", "--ys", "u,v", "-o", str(tmp_path / "explicit.onnx")).exit_code == 0
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    default = session(onnx.load(str(tmp_path / "ew.grad.onnx"))).run(["gradients/b_grad"], {"x": x})[0]
    explicit = session(onnx.load(str(tmp_path / "explicit.onnx"))).run(["gradients/b_grad"], {"x": x})[0]
    u = x * np.array([1, 2, 3], np.float32) + np.array([0.5, -0.5, 1.0], np.float32)
    np.testing.assert_allclose(default, explicit)
    np.testing.assert_allclose(default, np.sum(1 + 2 * u, axis=0), rtol=1e-5)


@pytest.mark.parametrize("spec,expected", [
    ("v=2.5", lambda u, seed: 2.5 * np.sum(2 * u, axis=0)),
    ("v=@seed", lambda u, seed: np.sum(2 * u * seed, axis=0)),
    ("v=@u", lambda u, seed: np.sum(2 * u * u, axis=0)),
    ("v=FILE", lambda u, seed: np.sum(2 * u * np.arange(12, dtype=np.float32).reshape(4, 3), axis=0)),
])
def test_grad_ys_forms(tmp_path, spec, expected):
    src = elementwise_model(tmp_path / "ew.onnx")
    if spec == "v=FILE":
        np.save(tmp_path / "seed.npy", np.arange(12, dtype=np.float32).reshape(4, 3))
        spec = f"v={tmp_path / 'seed.npy'}"
    r = run("differentiate", src, "--xs", "b", "--ys", "v", "--grad-ys", spec)
    assert r.exit_code == 0, r.stderr
    model = onnx.load(str(tmp_path / "ew.grad.onnx"))
    onnx.checker.check_model(model, full_check=True)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3)).astype(np.float32)
    feeds = {"x": x}
    seed = rng.standard_normal((4, 3)).astype(np.float32)
    if "@seed" in spec:
        assert "seed" in [i.name for i in model.graph.input]
        feeds["seed"] = seed
    got = session(model).run(["gradients/b_grad"], feeds)[0]
    u = x * np.array([1, 2, 3], np.float32) + np.array([0.5, -0.5, 1.0], np.float32)
    np.testing.assert_allclose(got, expected(u, seed), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec,fragment", [
    ("v", "expected Y=NUMBER"),
    ("v=", "expected Y=NUMBER"),
    ("w=1", "not one of the ys"),
    ("v=abc", "not a number"),
    ("v=@", "must follow '@'"),
    ("v=missing.npy", "cannot read"),
])
def test_grad_ys_errors(tmp_path, spec, fragment):
    src = elementwise_model(tmp_path / "ew.onnx")
    before = _listing(tmp_path)
    r = run("differentiate", src, "--xs", "b", "--ys", "v", "--grad-ys", spec)
    _assert_one_line_error(r, 2, "--grad-ys", fragment)
    assert _listing(tmp_path) == before


def test_grad_ys_given_twice(tmp_path):
    src = elementwise_model(tmp_path / "ew.onnx")
    _assert_one_line_error(run("differentiate", src, "--xs", "b", "--ys", "v", "--grad-ys", "v=1,v=2"), 2, "twice")


def test_grad_ys_bool_file_is_type_error(tmp_path):
    src = elementwise_model(tmp_path / "ew.onnx")
    np.save(tmp_path / "mask.npy", np.ones((2, 3), bool))
    r = run("differentiate", src, "--xs", "b", "--ys", "v", "--grad-ys", f"v={tmp_path / 'mask.npy'}")
    _assert_one_line_error(r, 2, "dtype bool")


def test_unconnected_none_and_zero(models):
    src = str(models / "unconnected.onnx")
    r = run("differentiate", src, "--xs", "a")
    assert r.exit_code == 0 and "(unconnected: None)" in r.stdout
    assert _outputs(models / "unconnected.grad.onnx") == ["b"]
    r = run("differentiate", src, "--xs", "a", "--unconnected-gradients", "zero")
    assert r.exit_code == 0
    model = onnx.load(str(models / "unconnected.grad.onnx"))
    (z,) = session(model).run(["gradients/a_grad"], {})
    assert z.dtype == np.float32 and z.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("method,op_type", [("add_n", "Sum"), ("tree", "Add"), ("accumulate_n", "Add")])
def test_aggregation_methods(models, method, op_type):
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "--aggregation-method", method)
    assert r.exit_code == 0, r.stderr
    model = onnx.load(str(models / "cost_ws_bs.grad.onnx"))
    new = [n.op_type for n in model.graph.node[4:]]
    assert op_type in new and ({"Sum", "Add"} - {op_type}).isdisjoint(new)
    assert float(session(model).run(["gradients/Ws_grad"], {})[0]) == 3.0


def test_name_and_gate_gradients(models):
    src = str(models / "cost_ws_bs.onnx")
    r = run("differentiate", src, "--xs", "Ws,bs", "--name", "backward", "-o", str(models / "a.onnx"))
    assert r.exit_code == 0
    assert _outputs(models / "a.onnx") == ["cost", "backward/Ws_grad", "backward/bs_grad"]
    r = run("differentiate", src, "--xs", "Ws,bs", "--name", "backward", "--gate-gradients",
            "-o", str(models / "b.onnx"))
    assert r.exit_code == 0
    assert (models / "a.onnx").read_bytes() == (models / "b.onnx").read_bytes()


def test_repeated_x_and_xs_order(models):
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "bs,Ws,bs")
    assert r.exit_code == 0
    assert _outputs(models / "cost_ws_bs.grad.onnx") == ["cost", "gradients/bs_grad", "gradients/Ws_grad"]
    rows = [line.split()[:2] for line in r.stdout.splitlines()[2:5]]
    assert rows == [["bs", "gradients/bs_grad"], ["Ws", "gradients/Ws_grad"], ["bs", "gradients/bs_grad"]]


def test_quick_start_command(models):
    r = run("differentiate", str(models / "linear_regression.onnx"), "--xs", "@params")
    assert r.exit_code == 0, r.stderr
    model = onnx.load(str(models / "linear_regression.grad.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["loss", "gradients/w_grad", "gradients/b_grad"]
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal((5, 1)).astype(np.float32)
    w = numpy_helper.to_array(model.graph.initializer[0])
    dw, db = session(model).run(["gradients/w_grad", "gradients/b_grad"], {"x": x, "target": t})
    err = x @ w - t
    np.testing.assert_allclose(dw, 2 * x.T @ err / 5, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(db, [2 * err.mean()], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ error paths
def test_missing_model_file(tmp_path):
    _assert_one_line_error(run("differentiate", str(tmp_path / "nope.onnx"), "--xs", "a"), 3, "not found")
    assert _listing(tmp_path) == []


def test_not_an_onnx_file(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00\xffthis is not protobuf\xff" * 10)
    _assert_one_line_error(run("differentiate", str(tmp_path / "junk.onnx"), "--xs", "a"), 3, "junk.onnx")
    assert _listing(tmp_path) == ["junk.onnx"]


def test_unknown_xs_name_suggests(models):
    before = _listing(models)
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Wz")
    _assert_one_line_error(r, 2, "'Wz'", "did you mean 'Ws'")
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "--ys", "zzz")
    _assert_one_line_error(r, 2, "'zzz'", "'cost'")
    assert _listing(models) == before


@pytest.mark.parametrize("xs,fragment", [("@weights", "unknown group"), (",", "--xs is empty")])
def test_bad_xs_groups(models, xs, fragment):
    _assert_one_line_error(run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", xs), 2, fragment)


def test_params_without_initializers(models):
    _assert_one_line_error(run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "@params"), 2,
                           "no trainable parameter")
    _assert_one_line_error(run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "@inputs"), 2,
                           "no float graph input")


def test_no_float_output(tmp_path):
    graph = helper.make_graph([helper.make_node("Shape", ["x"], ["s"])], "g",
                              [helper.make_tensor_value_info("x", FLOAT, [2])],
                              [helper.make_tensor_value_info("s", TensorProto.INT64, [1])])
    src = _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8),
                tmp_path / "m.onnx")
    _assert_one_line_error(run("differentiate", src, "--xs", "x"), 2, "no float graph output")


@pytest.mark.parametrize("args,fragment", [
    (["--aggregation-method", "fast"], "'--aggregation-method'"),
    (["--unconnected-gradients", "nonsense"], "'--unconnected-gradients'"),
    (["--bogus"], "--bogus"),
])
def test_bad_option_values_are_usage_errors(models, args, fragment):
    before = _listing(models)
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", *args)
    _assert_one_line_error(r, 2, fragment, "--help")
    assert _listing(models) == before


def test_missing_required_option_and_unknown_command(models):
    _assert_one_line_error(run("differentiate", str(models / "cost_ws_bs.onnx")), 2, "--xs")
    _assert_one_line_error(run("integrate"), 2, "integrate")
    _assert_one_line_error(run("--bogus"), 2, "--bogus")


def test_output_folder_missing(models):
    before = _listing(models)
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "-o", str(models / "no" / "out.onnx"))
    _assert_one_line_error(r, 6, "output folder does not exist")
    assert _listing(models) == before


def test_output_is_a_directory(models):
    (models / "d.onnx").mkdir()
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "-o", str(models / "d.onnx"))
    assert r.exit_code != 0 and "Traceback" not in r.stderr


@pytest.mark.parametrize("spelling", ["same", "dotted", "symlink"])
def test_never_overwrites_the_input(models, spelling):
    src = models / "cost_ws_bs.onnx"
    before = src.read_bytes()
    out = {"same": str(src), "dotted": str(models / "." / "cost_ws_bs.onnx"),
           "symlink": str(models / "link.onnx")}[spelling]
    if spelling == "symlink":
        os.symlink(src, out)
    listing = _listing(models)
    _assert_one_line_error(run("differentiate", str(src), "--xs", "Ws", "-o", out), 6, "refusing to overwrite")
    assert src.read_bytes() == before and _listing(models) == listing


def test_no_gradient_is_exit_5_naming_node_and_op(tmp_path):
    src = custom_op_model(tmp_path / "custom.onnx", function=False)
    r = run("differentiate", src, "--xs", "x")
    _assert_one_line_error(r, 5, "'cube_node'", "my.ops::Cube", "register_gradient")
    assert _listing(tmp_path) == ["custom.onnx"]


def test_internal_error_is_one_line_and_debug_shows_traceback(models, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(cli_module, "gradients", boom)
    before = _listing(models)
    r = run("differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws")
    assert r.exit_code == 7  # a bug, distinct from a failed check (1)
    assert r.stderr.strip().splitlines() == [
        "onnxgrad: internal error: RuntimeError: boom second line (rerun with --debug)"]
    assert _listing(models) == before
    for args in (["--debug", "differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws"],
                 ["differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "--debug"]):
        r = run(*args)
        assert r.exit_code == 7 and "Traceback" in r.stderr and "RuntimeError: boom" in r.stderr


def test_debug_shows_traceback_for_onnxgrad_errors(models):
    r = run("--debug", "differentiate", str(models / "nope.onnx"), "--xs", "a")
    assert r.exit_code == 3 and "Traceback" in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("onnxgrad: error: model file not found")


# ------------------------------------------------------------------------------ check
def test_check_passes(models):
    r = run("check", str(models / "cost_ws_bs.onnx"), "--xs", "Ws,bs", "--seed", "3")
    assert r.exit_code == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["x", "shape", "analytic", "numeric", "error", "tolerance", "jacobian", "ratio",
                                "result"]
    assert [line.split()[0] for line in lines[2:4]] == ["Ws", "bs"]
    assert all(line.split()[-1] == "PASS" for line in lines[2:4])
    assert lines[-1].startswith("2 passed, 0 failed")


def test_check_params_on_quick_start_model(models):
    r = run("check", str(models / "linear_regression.onnx"), "--xs", "@params", "--ys", "loss")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert "w  " in r.stdout and "b  " in r.stdout and "FAIL" not in r.stdout


@pytest.fixture
def wrong_cube_rule():
    @onnxgrad.register_gradient("Cube", domain="my.ops")
    def cube_grad(g, op, dy):
        x = op.input(0)
        return [g.Mul(dy, g.Mul(x, x))]  # wrong on purpose: the factor 3 is missing

    yield
    unregister("Cube", "my.ops")


def test_check_fails_on_a_wrong_rule(tmp_path, wrong_cube_rule):
    src = custom_op_model(tmp_path / "custom.onnx")
    r = run("check", src, "--xs", "x")
    assert r.exit_code == 1
    assert r.stdout.splitlines()[2].split()[-1] == "FAIL"
    assert r.stdout.splitlines()[-1].startswith("0 passed, 1 failed")


def test_check_error_paths(models):
    _assert_one_line_error(run("check", str(models / "nope.onnx"), "--xs", "a"), 3, "not found")
    _assert_one_line_error(run("check", str(models / "cost_ws_bs.onnx"), "--xs", "Wz"), 2, "did you mean 'Ws'")
    _assert_one_line_error(run("check", str(models / "cost_ws_bs.onnx"), "--xs", "Ws", "--seed", "x"), 2, "--seed")


# ------------------------------------------------------------------------------ ops
def test_ops_plain_table():
    r = run("ops")
    assert r.exit_code == 0
    rows = {line.split()[0]: line for line in r.stdout.splitlines() if line.strip()}
    assert "Add" in rows and "rule" in rows["Add"]
    assert "Shape" in rows and "non-differentiable" in rows["Shape"]


def test_ops_markdown(tmp_path):
    out = tmp_path / "operators.md"
    r = run("ops", "--markdown", str(out))
    assert r.exit_code == 0 and out.exists()
    text = out.read_text()
    assert "| Add " in text or "| `Add`" in text
    assert text.endswith("\n")
    r = run("ops", "--markdown", "-")
    assert r.exit_code == 0 and r.stdout.strip() == text.strip()
    _assert_one_line_error(run("ops", "--markdown", str(tmp_path / "no" / "ops.md")), 6, "output folder does not exist")


# ------------------------------------------------------------------------------ help, version, processes
@pytest.mark.parametrize("command", [[], ["differentiate"], ["check"], ["ops"]])
def test_help_has_an_example(command):
    r = run(*command, "--help")
    assert r.exit_code == 0
    assert "Example" in r.stdout and "onnxgrad " in r.stdout


def test_version():
    r = run("--version")
    assert r.exit_code == 0 and onnxgrad.__version__ in r.stdout


def test_python_dash_m_real_process(models):
    cmd = [sys.executable, "-m", "onnxgrad"]
    ok = subprocess.run(cmd + ["differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws,bs"],
                        capture_output=True, text=True, timeout=120, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "gradients/Ws_grad" in ok.stdout and ok.stderr == ""
    bad = subprocess.run(cmd + ["differentiate", str(models / "missing.onnx"), "--xs", "a"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 3 and bad.stdout == ""
    assert len(bad.stderr.splitlines()) == 1
    assert bad.stderr.startswith(f"onnxgrad: error: model file not found: {models / 'missing.onnx'}")
    usage = subprocess.run(cmd + ["differentiate"], capture_output=True, text=True, timeout=120, check=False)
    assert usage.returncode == 2 and len(usage.stderr.splitlines()) == 1


@pytest.mark.skipif(shutil.which("onnxgrad") is None, reason="console script not installed (pip install .)")
def test_console_script(models):
    r = subprocess.run(["onnxgrad", "differentiate", str(models / "cost_ws_bs.onnx"), "--xs", "Ws"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert (models / "cost_ws_bs.grad.onnx").exists()


def test_external_data_weights_are_referenced(tmp_path):
    """Weights in an external file: the gradient model (beside the input or elsewhere) still runs."""
    import onnxruntime as ort

    model = onnx.load(elementwise_model(tmp_path / "tmp.onnx"))
    src = tmp_path / "ext.onnx"
    onnx.save_model(model, str(src), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    other = tmp_path / "elsewhere"
    other.mkdir()
    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    for out in (tmp_path / "ext.grad.onnx", other / "ext.grad.onnx"):
        r = run("differentiate", str(src), "--xs", "@params", "--ys", "u", "-o", str(out))
        assert r.exit_code == 0, r.stderr
        written = onnx.load(str(out), load_external_data=False)
        assert {t.data_location for t in written.graph.initializer} == {TensorProto.EXTERNAL}
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        dw, db = sess.run(["gradients/w_grad", "gradients/b_grad"], {"x": x})
        np.testing.assert_allclose(dw, x.sum(axis=0), rtol=1e-6)
        np.testing.assert_allclose(db, [2.0, 2.0, 2.0])


def test_check_reads_external_weights_from_any_directory(tmp_path, monkeypatch):
    src = tmp_path / "lr.onnx"
    onnx.save_model(onnx.load(os.path.join(MODELS, "linear_regression.onnx")), str(src), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="lr.data", size_threshold=0)
    monkeypatch.chdir(tmp_path.parent)
    r = run("check", str(src), "--xs", "@params")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1].startswith("2 passed, 0 failed")
    os.remove(tmp_path / "lr.data")
    _assert_one_line_error(run("check", str(src), "--xs", "@params"), 3, "external weights", "lr.data")


# ------------------------------------------------------------------------------ bare command
def test_bare_onnxgrad_shows_the_help():
    r = run()
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout.startswith("Usage: ") and "differentiate" in r.stdout and "Exit codes" in r.stdout
    p = subprocess.run([sys.executable, "-m", "onnxgrad"], capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout.startswith("Usage: onnxgrad [OPTIONS] COMMAND") and p.stdout.count("\n") > 10


# ------------------------------------------------------------------------------ @params and --exclude
def params_model(path) -> str:
    """Every kind of float tensor @params must sort: weights in initializers, Constant and
    ConstantOfShape; BatchNorm statistics, Resize scales, a one-element literal, an unused tensor."""
    def f32(*a: float) -> np.ndarray:
        return np.asarray(a, np.float32)

    inits = [numpy_helper.from_array(np.full((2, 1, 1, 1), 0.3, np.float32), "conv.w"),
             numpy_helper.from_array(f32(1.0, 2.0), "bn.scale"), numpy_helper.from_array(f32(0.1, 0.2), "bn.bias"),
             numpy_helper.from_array(f32(0.0, 0.5), "bn.mean"), numpy_helper.from_array(f32(1.0, 2.0), "bn.var"),
             numpy_helper.from_array(f32(1.0, 1.0, 2.0, 2.0), "scales"),
             numpy_helper.from_array(f32(7.0, 7.0), "unused"),
             numpy_helper.from_array(np.array([2, 2, 1, 1], np.int64), "shape")]
    nodes = [
        helper.make_node("ConstantOfShape", ["shape"], ["zoo.w"],
                         value=numpy_helper.from_array(f32(0.02), "value")),
        helper.make_node("Constant", [], ["const.b"], value=numpy_helper.from_array(f32(0.5, -0.5), "value")),
        helper.make_node("Constant", [], ["half"], value=numpy_helper.from_array(np.array(0.5, np.float32), "value")),
        helper.make_node("Conv", ["x", "conv.w"], ["c"]),
        helper.make_node("BatchNormalization", ["c", "bn.scale", "bn.bias", "bn.mean", "bn.var"], ["bn"]),
        helper.make_node("Conv", ["bn", "zoo.w"], ["c2"]),
        helper.make_node("Resize", ["c2", "", "scales"], ["r"], mode="nearest"),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[0, 2, 3], keepdims=0),
        helper.make_node("Add", ["m", "const.b"], ["mb"]),
        helper.make_node("Mul", ["mb", "half"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "params", [helper.make_tensor_value_info("x", FLOAT, [1, 1, 3, 3])],
                              [helper.make_tensor_value_info("y", FLOAT, [2])], inits)
    return _save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


def test_params_are_the_trainable_weights(tmp_path):
    src = params_model(tmp_path / "p.onnx")
    assert onnxgrad.parameters(src) == ["conv.w", "bn.scale", "bn.bias", "zoo.w", "const.b"]
    assert onnxgrad.parameters(src, exclude="bn.*") == ["conv.w", "zoo.w", "const.b"]
    assert onnxgrad.parameters(onnx.load(src), exclude=["*.w", "const?b"]) == ["bn.scale", "bn.bias"]
    assert onnxgrad.data_inputs(src) == ["x"]
    r = run("differentiate", src, "--xs", "@params", "--exclude", "conv.*", "--exclude", "*.bias")
    assert r.exit_code == 0, r.stderr
    assert _outputs(tmp_path / "p.grad.onnx")[1:] == ["gradients/bn.scale_grad", "gradients/zoo.w_grad",
                                                      "gradients/const.b_grad"]
    _assert_one_line_error(run("differentiate", src, "--xs", "@params", "--exclude", "*"), 2, "--exclude * leaves no x")


def test_check_uses_the_same_params(tmp_path):
    src = params_model(tmp_path / "p.onnx")
    r = run("check", src, "--xs", "@params")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert [line.split()[0] for line in r.stdout.splitlines()[2:-1]] == ["conv.w", "bn.scale", "bn.bias", "zoo.w",
                                                                          "const.b"]


@pytest.mark.parametrize("name", ["bvlc_alexnet", "zfnet512"])
def test_params_on_the_light_zoo(name, tmp_path):
    """Weights made by ConstantOfShape: AlexNet used to error, ZFNet to add 0 nodes and exit 0."""
    light = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", f"light_{name}.onnx")
    src = shutil.copy(light, tmp_path / "m.onnx")
    r = run("differentiate", str(src), "--xs", "@params", "--json")
    assert r.exit_code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert len(doc["result"]["xs"]) == 16 and doc["result"]["nodes_added"] > 50
    assert all(g["output"] for g in doc["result"]["gradients"])
    names = " ".join(g["x"] for g in doc["result"]["gradients"])
    assert "conv1_w_0" in names and "fc8_b_0" in names


# ------------------------------------------------------------------------------ grad_ys seeds
def test_number_seed_stays_a_scalar(tmp_path):
    """`--grad-ys y=2.5` on a [512, 512] y used to embed a dense 1 MiB constant."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "w"], ["y"])], "big",
                              [helper.make_tensor_value_info("x", FLOAT, [512, 512])],
                              [helper.make_tensor_value_info("y", FLOAT, [512, 512])],
                              [numpy_helper.from_array(np.array(3.0, np.float32), "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    src = _save(model, tmp_path / "b.onnx")
    r = run("differentiate", src, "--xs", "w,x", "--grad-ys", "y=2.5")
    assert r.exit_code == 0, r.stderr
    out = tmp_path / "b.grad.onnx"
    assert os.path.getsize(out) < 4096
    model = onnx.load(str(out))
    onnx.checker.check_model(model, full_check=True)
    x = np.random.default_rng(0).standard_normal((512, 512)).astype(np.float32)
    gw, gx = session(model).run(["gradients/w_grad", "gradients/x_grad"], {"x": x})
    np.testing.assert_allclose(gw, 2.5 * x.sum(), rtol=1e-4)
    np.testing.assert_allclose(gx, np.full((512, 512), 7.5, np.float32))


@pytest.mark.parametrize("spec", ["v=nan", "v=inf", "v=-inf", "v=NaN", "v=FILE"])
def test_non_finite_seeds_are_refused(tmp_path, spec):
    src = elementwise_model(tmp_path / "ew.onnx")
    if spec == "v=FILE":
        np.save(tmp_path / "s.npy", np.array([[1.0, np.nan, 2.0]], np.float32))
        spec = f"v={tmp_path / 's.npy'}"
    before = _listing(tmp_path)
    _assert_one_line_error(run("differentiate", src, "--xs", "b", "--ys", "v", "--grad-ys", spec), 2,
                           "NaN or infinity")
    assert _listing(tmp_path) == before
    with pytest.raises(onnxgrad.GradientArgumentError, match="NaN or infinity"):
        onnxgrad.gradients(src, "v", "b", grad_ys=float("inf"))


# ------------------------------------------------------------------------------ --json, -v, -q, progress
def test_json_for_differentiate(models):
    src = str(models / "linear_regression.onnx")
    r = run("differentiate", src, "--xs", "@params", "--json")
    assert r.exit_code == 0 and r.stderr == ""
    doc = json.loads(r.stdout)
    assert doc["ok"] is True and doc["exit_code"] == 0 and doc["command"] == "differentiate" and doc["error"] is None
    assert doc["onnxgrad"] == onnxgrad.__version__
    res = doc["result"]
    assert res["output"] == str(models / "linear_regression.grad.onnx") and res["ys"] == ["loss"]
    assert res["gradients"] == [{"x": "w", "output": "gradients/w_grad", "dtype": "float", "shape": [3, 1]},
                                {"x": "b", "output": "gradients/b_grad", "dtype": "float", "shape": [1]}]
    assert res["nodes_added"] > 0 and res["external_data"] is None
    assert set(doc["timings"]) == {"reading the model", "checking the model and inferring shapes",
                                   "building the backward pass", "writing the output"}
    r = run("differentiate", src, "--xs", "nope", "--json")
    assert r.exit_code == 2
    doc = json.loads(r.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 2 and doc["result"] is None
    assert doc["error"]["type"] == "GradientArgumentError" and "'nope'" in doc["error"]["message"]
    assert r.stderr.startswith("onnxgrad: error: ")


def test_json_for_ops():
    r = run("ops", "--json")
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    ops = {o["op_type"]: o for o in doc["result"]["operators"]}
    assert ops["Add"]["status"] == "rule" and ops["Shape"]["status"] == "non-differentiable"
    assert set(ops["Add"]) == {"op_type", "opsets", "differentiable_inputs", "status", "reason"}
    assert sum(doc["result"]["counts"].values()) == len(ops)
    _assert_one_line_error(run("ops", "--json", "--markdown", "-"), 2, "exclude each other")


def test_verbose_and_quiet(models):
    src = str(models / "cost_ws_bs.onnx")
    r = run("differentiate", src, "--xs", "Ws", "-v")
    assert r.exit_code == 0
    phases = [line.split(":")[1].strip() for line in r.stderr.splitlines()]
    assert phases == ["reading the model", "checking the model and inferring shapes", "building the backward pass",
                      "writing the output", "total"]
    assert r.stderr.splitlines()[-1].endswith(" MiB") and "peak memory" in r.stderr
    r = run("differentiate", src, "--xs", "Ws", "-q")
    assert r.exit_code == 0 and r.stdout == "" and r.stderr == ""
    r = run("ops", "--quiet")
    assert r.exit_code == 0 and r.stdout == ""


def _on_a_terminal(args) -> str:
    """Run ``python -m onnxgrad ARGS`` with stderr on a pseudo-terminal; return what it showed."""
    import pty

    master, slave = pty.openpty()
    try:
        p = subprocess.Popen([sys.executable, "-m", "onnxgrad", *args], stdout=subprocess.DEVNULL, stderr=slave)
        os.close(slave)
        shown = b""
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the child closed its end
                break
            if not chunk:
                break
            shown += chunk
        assert p.wait(timeout=120) == 0
    finally:
        os.close(master)
    return shown.decode()


def test_progress_on_a_terminal_only(models):
    src = str(models / "cost_ws_bs.onnx")
    shown = _on_a_terminal(["differentiate", src, "--xs", "Ws"])
    for phase in ("reading the model", "building the backward pass", "writing the output"):
        assert f"\r\x1b[Konnxgrad: {phase}... " in shown
    assert shown.endswith("\r\x1b[K")  # the status line is erased at the end
    assert _on_a_terminal(["differentiate", src, "--xs", "Ws", "--quiet"]) == ""
    p = subprocess.run([sys.executable, "-m", "onnxgrad", "differentiate", src, "--xs", "Ws"],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stderr == ""  # not a terminal: no progress


# ------------------------------------------------------------------------------ help and README
def test_ops_help_matches_its_columns():
    from onnxgrad.coverage import render

    header = render(markdown=False).splitlines()[0].split("  ")
    columns = [c.strip() for c in header if c.strip()]
    text = " ".join(run("ops", "--help").stdout.split())
    assert "op type, opsets, differentiable inputs, status (rule, non-differentiable, unsupported) and reason" in text
    assert columns == ["op type", "opsets", "differentiable inputs", "status", "reason"]


ROOT = os.path.dirname(MODELS)


def _readme_section(title: str) -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end if end >= 0 else len(text)]


def test_readme_python_api_example_runs(tmp_path, monkeypatch):
    """The first code block of the README's Python API section runs as written on a shipped model."""
    section = _readme_section("Python API")
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    for name in os.listdir(MODELS):
        if name.endswith(".onnx"):
            shutil.copy(os.path.join(MODELS, name), tmp_path / name)
    (tmp_path / "models").mkdir()
    for name in os.listdir(tmp_path):
        if name.endswith(".onnx"):
            shutil.move(str(tmp_path / name), tmp_path / "models" / name)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    assert "new_model" in namespace and namespace["names"]


def test_gradient_outputs_are_ignored_by_git(tmp_path):
    """The repository's .gitignore keeps gradient models out of commits (checked in a fresh
    repository holding it, so the test also runs where the sources are not a git checkout, as in CI)."""
    git = shutil.which("git")
    assert git is not None, "git is needed to check .gitignore"
    subprocess.run([git, "init", "-q", str(tmp_path)], check=True, timeout=60)
    shutil.copy(os.path.join(ROOT, ".gitignore"), tmp_path / ".gitignore")
    paths = ["models/linear_regression.grad.onnx", "sub/x.grad.onnx"]
    r = subprocess.run([git, "check-ignore", *paths], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                       check=False)
    assert r.stdout.split() == paths
