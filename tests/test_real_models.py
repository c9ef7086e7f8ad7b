"""onnxgrad on real exported models against the framework's own float64 gradients.

The models and references in ``tests/data/real/`` come from ``tools/export_real_models.py``
(PyTorch with both exporters, Keras / ``tf.function`` through tf2onnx); neither framework is
needed here. Each model computes ``loss = sum(u * output)``; onnxgrad differentiates it w.r.t.
every float input and float initializer, onnxruntime runs the gradient model in float32, and
every tensor with a framework reference must satisfy

    max|g - ref| / max|ref| <= 1e-4.

Why 1e-4: the gradient model runs in float32 (unit roundoff 6e-8) and the reference is exact to
float64. The frameworks' own float32 gradients of these same models miss their float64 gradients
by at most 6.4e-7 on this measure (``framework_float32_error`` in the manifest, measured by the
export tool); a different runtime may sum in another order and use other kernels (fused
recurrent ops, another erf or tanh), so the bound leaves a factor of 150 over that. A wrong
gradient (a missing path, a swapped gate, a wrong transpose) is off by 1e-2 or more. The bound
is relative to the tensor's largest entry because entries that are zero or nearly so (dead
units, cancelling terms) have no meaningful relative error of their own.

Models onnxgrad still refuses are ``xfail(strict=True)`` pinned to the error class and message,
so a fix turns them into failures that ask for the entry to be removed.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Tuple, Type

import numpy as np
import onnx
import pytest

from onnxgrad import gradients
from onnxgrad.checking import session
from onnxgrad.errors import OnnxGradError

DATA = os.path.join(os.path.dirname(__file__), "data", "real")
BOUND = 1e-4

with open(os.path.join(DATA, "manifest.json")) as _f:
    MANIFEST: Dict[str, dict] = json.load(_f)

# Model id -> (error class, text the message must contain): what onnxgrad refuses today.
REFUSED: Dict[str, Tuple[Type[OnnxGradError], str]] = {}


def _cases() -> List[object]:
    cases: List[object] = []
    for mid, rec in MANIFEST.items():
        if rec["status"] != "exported":
            continue
        marks = []
        if mid in REFUSED:
            cls, text = REFUSED[mid]
            marks.append(pytest.mark.xfail(strict=True, raises=cls, reason=f"onnxgrad refuses: {text}"))
        cases.append(pytest.param(mid, marks=marks, id=mid))
    return cases


def test_manifest_matches_files() -> None:
    """Every exported model has its files, every refusal entry names an exported model."""
    for mid, rec in MANIFEST.items():
        if rec["status"] == "exported":
            assert os.path.exists(os.path.join(DATA, mid + ".onnx")), mid
            assert os.path.exists(os.path.join(DATA, mid + ".npz")), mid
        else:
            assert rec["error"], mid
    assert set(REFUSED) <= {m for m, r in MANIFEST.items() if r["status"] == "exported"}


@pytest.mark.parametrize("mid", _cases())
def test_matches_framework(mid: str) -> None:
    """onnxgrad's gradients of the exported model equal the framework's float64 gradients."""
    rec = MANIFEST[mid]
    model = onnx.load(os.path.join(DATA, mid + ".onnx"))
    ref = np.load(os.path.join(DATA, mid + ".npz"))
    output = rec.get("output", "loss")
    compared = sorted(k[len("grad/"):] for k in ref.files if k.startswith("grad/"))
    rewritten = sorted(rec["unmapped"])
    feeds = {k[len("input/"):]: ref[k] for k in ref.files if k.startswith("input/")}
    assert compared, "nothing to compare"

    try:
        result = gradients(model, output, compared + rewritten)
    except OnnxGradError as e:
        if mid in REFUSED:
            assert REFUSED[mid][1] in str(e), str(e)
        raise
    onnx.checker.check_model(result.model, full_check=True)
    fetch = [n for n in result.names if n]
    loss, *values = session(result.model).run([output] + fetch, feeds)
    got = dict(zip(fetch, values))
    np.testing.assert_allclose(loss, ref["loss"], rtol=BOUND, err_msg="the exported model's loss")

    errors = {}
    for x, name in zip(compared, result.names):
        expected = ref["grad/" + x]
        g = got[name] if name else np.zeros_like(expected)
        assert g.shape == expected.shape, x
        scale = max(float(np.max(np.abs(expected))), 1e-30)
        errors[x] = float(np.max(np.abs(g - expected))) / scale
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    for x, name in zip(rewritten, result.names[len(compared):]):
        # Exporter-made tensors have no framework reference; their gradient must at least exist
        # with the tensor's shape and be finite (the compared input gradients pass through them).
        assert name, f"no gradient for {x}"
        assert got[name].shape == shapes[x], x
        assert np.all(np.isfinite(got[name])), x
    worst = max(errors, key=lambda x: errors[x])
    print(f"\n{mid}: {len(compared)} compared, worst max|error| / max|ref| = {errors[worst]:.1e} ({worst})")
    bad = {x: e for x, e in errors.items() if not e <= BOUND}
    assert not bad, f"{mid}: relative errors above {BOUND}: {bad}"
