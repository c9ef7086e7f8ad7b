"""onnxgrad against torch.autograd on the committed PyTorch exports (``tests/data/torch/README.md``).

Each model's scalar ``loss`` is differentiated with respect to every trainable initializer; the
float32 gradients onnxruntime computes must match torch's float64 gradients to a relative 1e-4.
The absolute floor 1e-6 is for entries that are exactly (dead ReLUs, the last position's
embedding) or analytically (the attention key bias, ~1e-17) zero, where a relative test is
meaningless: the README measures torch's own float32 autograd at |error| / max|grad| <= 6e-7
against the same references.
"""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest

from onnxgrad import gradients
from onnxgrad.checking import session

DATA = os.path.join(os.path.dirname(__file__), "data", "torch")
RTOL, ATOL = 1e-4, 1e-6


@pytest.mark.parametrize("name", ["mlp_ce", "resnet_cnn", "gpt_block"])
def test_matches_torch(name):
    model = onnx.load(os.path.join(DATA, f"{name}.onnx"))
    ref = np.load(os.path.join(DATA, f"{name}.npz"))
    params = sorted(k[len("grad/"):] for k in ref.files if k.startswith("grad/"))
    feeds = {k[len("input/"):]: ref[k] for k in ref.files if k.startswith("input/")}

    result = gradients(model, "loss", params)
    onnx.checker.check_model(result.model, full_check=True)
    loss, *grads = session(result.model).run(["loss"] + result.names, feeds)
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-6)

    worst = {}
    for p, g in zip(params, grads):
        expected = ref[f"grad/{p}"]
        assert g.shape == expected.shape, p
        np.testing.assert_allclose(g, expected, rtol=RTOL, atol=ATOL, err_msg=f"{name}: d loss / d {p}")
        worst[p] = float(np.max(np.abs(g - expected)) / max(float(np.max(np.abs(expected))), 1e-30))
    p = max(worst, key=worst.get)
    print(f"\n{name}: {len(params)} parameters, worst max|error| / max|grad| = {worst[p]:.2e} ({p})")
