"""Gradients of real architectures: the onnx package's light zoo (see ``zoo.py``).

For each model: loss = sum(u * output) with fixed random u; onnxgrad differentiates it with
respect to every weight and bias at once (timed); the gradient model passes the full checker and
runs in onnxruntime. The check is directional: every weight W becomes W0 + t V (V random, scaled
like W), so d loss / dt = sum_W <dloss/dW, V>, and ``check_gradients`` compares onnxgrad's
d loss / dt with a central difference in t. The per-weight gradients of the first model are
contracted with V and must give the same number.

Step and tolerance (float32: onnxruntime has no float64 Conv). A ReLU network is piecewise
smooth: moving every weight by a relative 1e-3 flips some ReLUs and MaxPool winners, and the
central difference picks up an error growing with the step (SqueezeNet: +0.5 % at 3e-4, +2 % at
1e-3, +3 % at 3e-3 against an analytic value the small steps converge to), while float32
rounding grows as eps / step. ``STEP`` = 3e-4 ~ sqrt(eps_f32) balances the two; ``RTOL`` = 1e-2
(instead of float32's default 2e-3) covers the kink error at that step, still far below the error
of a wrong rule (a missing or mis-scaled term changes the result by O(1)).
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import pytest

import zoo
from onnxgrad import gradients
from onnxgrad.checking import check_gradients, session

STEP = 3e-4
RTOL = 1e-2
SLOW = {"bvlc_alexnet", "zfnet512", "densenet121", "inception_v2"}
RESULTS = {}


def _param(name):
    return pytest.param(name, marks=pytest.mark.slow) if name in SLOW else name


@pytest.mark.parametrize("name", [_param(n) for n in zoo.MODELS])
def test_light_model(name):
    model, feed, weights = zoo.load(name)
    model, loss = zoo.with_loss(model)

    start = time.perf_counter()
    result = gradients(model, loss, weights)
    seconds = time.perf_counter() - start
    assert all(n is not None for n in result.names)
    onnx.checker.check_model(result.model, full_check=True)
    grads = session(result.model).run(result.names, feed)

    directed, directions = zoo.along_direction(model, weights)
    report = check_gradients(directed, ["zoo/t"], [loss], feeds={**feed, "zoo/t": np.zeros((), np.float32)},
                             step=STEP, rtol=RTOL)
    (check,) = report.checks
    assert check.ok, f"{name}: analytic {check.analytic} numeric {check.numeric} tol {check.tolerance}"

    # the per-weight gradients, contracted with V, give onnxgrad's d loss / dt (u = 1)
    per_weight = sum(float(np.sum(g.astype(np.float64) * directions[w])) for w, g in zip(weights, grads))
    (dt,) = session(report.gradient_model).run(None, {**feed, "zoo/t": np.zeros((), np.float32),
                                                      "onnxgrad_check/u0": np.ones((), np.float32)})[-1:]
    np.testing.assert_allclose(per_weight, float(dt), rtol=1e-4)

    RESULTS[name] = dict(nodes=len(model.graph.node), weights=len(weights), seconds=seconds,
                         rel_error=check.relative_error, analytic=check.analytic, numeric=check.numeric)
    print(f"\n{name}: {RESULTS[name]}")
