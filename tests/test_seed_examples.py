"""The three examples of ``tf.gradients``' documentation, on the models in ``models/``.

Each prints exactly what the documentation prints: [1.0, 1.0] and [3.0, 1.0] for the partial
derivatives example, [None] and zeros [[0., 0.]] for the unconnected one, (3.0, 1.0) for the
Ws/bs cost. Values come from onnxruntime and onnx.reference alike.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import onnx
import pytest
from onnx.reference import ReferenceEvaluator

import onnxgrad
from onnxgrad.checking import session

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")


def model_path(name: str) -> str:
    return os.path.join(MODELS, name)


def evaluate(result: onnxgrad.GradientsResult, runtime: str) -> list:
    """The gradient values, None where ``names`` has None (as tf.gradients returns them)."""
    onnx.checker.check_model(result.model, full_check=True)
    wanted = [n for n in result.names if n is not None]
    if runtime == "onnxruntime":
        values = session(result.model).run(wanted, {}) if wanted else []
    else:
        values = ReferenceEvaluator(result.model).run(wanted, {}) if wanted else []
    by_name = dict(zip(wanted, values))
    return [None if n is None else by_name[n] for n in result.names]


RUNTIMES = ["onnxruntime", "onnx.reference"]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_partial_derivatives(runtime):
    partial = onnxgrad.gradients(model_path("partial_derivatives.onnx"), "y", ["a", "b"], stop_gradients=["a", "b"])
    total = onnxgrad.gradients(model_path("partial_derivatives.onnx"), "y", ["a", "b"])
    partial_values, total_values = evaluate(partial, runtime), evaluate(total, runtime)
    assert [v.dtype for v in partial_values + total_values] == [np.float32] * 4
    assert [v.shape for v in partial_values + total_values] == [()] * 4
    assert [float(v) for v in partial_values] == [1.0, 1.0]
    assert [float(v) for v in total_values] == [3.0, 1.0]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_unconnected_gradients(runtime):
    none = onnxgrad.gradients(model_path("unconnected.onnx"), ["b"], ["a"],
                              unconnected_gradients=onnxgrad.UnconnectedGradients.NONE)
    assert none.names == [None]
    assert [o.name for o in none.model.graph.output] == ["b"]
    assert evaluate(none, runtime) == [None]

    zero = onnxgrad.gradients(model_path("unconnected.onnx"), ["b"], ["a"],
                              unconnected_gradients=onnxgrad.UnconnectedGradients.ZERO)
    (z,) = evaluate(zero, runtime)
    assert z.dtype == np.float32 and z.shape == (1, 2)
    assert z.tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_cost_ws_bs(runtime):
    d_cost_d_w, d_cost_d_b = evaluate(onnxgrad.gradients(model_path("cost_ws_bs.onnx"), "cost", ["Ws", "bs"]), runtime)
    assert (float(d_cost_d_w), float(d_cost_d_b)) == (3.0, 1.0)
    assert d_cost_d_w.dtype == d_cost_d_b.dtype == np.float32


def test_committed_models_match_the_script():
    """``models/make_models.py`` regenerates the committed files byte for byte."""
    spec = importlib.util.spec_from_file_location("make_models", os.path.join(MODELS, "make_models.py"))
    make_models = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_models)
    for file_name, build in make_models.MODELS.items():
        with open(model_path(file_name), "rb") as f:
            committed = f.read()
        assert build().SerializeToString() == committed, f"{file_name} is stale: run python models/make_models.py"
        assert len(committed) < 100_000


def test_readme_examples_print_what_the_readme_shows(monkeypatch):
    """The README's ``>>>`` snippets (the seed examples) produce exactly the output it shows."""
    import doctest
    import re

    root = os.path.dirname(MODELS)
    monkeypatch.chdir(root)
    with open(os.path.join(root, "README.md"), encoding="utf-8") as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    text = "\n\n".join(b for b in blocks if b.lstrip().startswith(">>>"))
    test = doctest.DocTestParser().get_doctest(text, {}, "README.md", "README.md", 0)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    runner.run(test)
    assert len(test.examples) >= 12 and runner.failures == 0
