"""ONNX Runtime training's forward+backward on a model ``bench_models.py`` built, timed beside onnxgrad's.

Runs under the Python of a separate virtual environment holding ``onnxruntime-training`` (it
replaces the ``onnxruntime`` package, so it never goes into the main environment)::

    python -m venv /tmp/ortt && /tmp/ortt/bin/pip install onnxruntime-training "numpy<2" onnx
    python benchmarks/bench_models.py --ort-training /tmp/ortt/bin/python

``bench_models.py`` calls it once per model as ``PYTHON ort_training.py DIR NAME ROUNDS``; it prints
one JSON object of CPU seconds per run: the plain forward, onnxgrad's gradient model and ONNX
Runtime training's step (``generate_artifacts`` with the model's loss as is, every weight
requiring a gradient; ``Module`` in train mode: forward, backward through its private
``com.microsoft`` *Grad kernels, gradients written into its buffers; BatchNormalization's running
statistics stay frozen, which it cannot differentiate), all three in this process's onnxruntime
(the training build), interleaved the same way as ``bench_models.py`` does. A model its gradient
builder refuses gives {"error": ...}.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import types
from typing import Callable, Dict, List

import numpy as np
import onnx
import onnxruntime

onnxruntime.set_default_logger_severity(3)
# The package's __init__ imports PyTorch for ORTModule, which neither the offline artifact
# builder nor the on-device api.Module needs: load its submodules without it.
_pkg = types.ModuleType("onnxruntime.training")
_pkg.__path__ = [os.path.join(os.path.dirname(onnxruntime.__file__), "training")]
sys.modules.setdefault("onnxruntime.training", _pkg)

from onnxruntime.training import api, artifacts  # noqa: E402


def _options() -> onnxruntime.SessionOptions:
    opts = onnxruntime.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    return opts


def training_step(forward: onnx.ModelProto, weights: List[str], loss: str, feed: Dict[str, np.ndarray],
                  work: str) -> Callable[[], object]:
    """One forward+backward of ONNX Runtime training on ``forward`` (reduced to its loss output)."""
    model = onnx.ModelProto()
    model.CopyFrom(forward)
    del model.graph.output[:]
    model.graph.output.extend([o for o in forward.graph.output if o.name == loss])
    # its BatchNormalization gradient has no outputs for the running statistics: they stay frozen
    # (and bench_models.py builds onnxgrad's gradient model for the same weights, *.grad_ortt.onnx)
    stats = {i for n in model.graph.node if n.op_type == "BatchNormalization" for i in n.input[3:5]}
    weights = [w for w in weights if w not in stats]
    frozen = [t.name for t in model.graph.initializer if t.name not in set(weights)]
    artifacts.generate_artifacts(model, requires_grad=weights, frozen_params=frozen, loss=None,
                                 artifact_directory=work)
    state = api.CheckpointState.load_checkpoint(os.path.join(work, "checkpoint"))
    module = api.Module(os.path.join(work, "training_model.onnx"), state, device="cpu",
                        session_options=_options())
    module.train()
    inputs = [feed[i.name] for i in model.graph.input if i.name in feed]

    def step() -> object:
        module.lazy_reset_grad()  # the step writes fresh gradients rather than adding to the last ones
        return module(*inputs)

    return step


def main(argv: List[str]) -> int:
    d, name, rounds = argv[0], argv[1], int(argv[2])
    feed = dict(np.load(os.path.join(d, f"{name}.npz")))
    info = json.load(open(os.path.join(d, f"{name}.json")))
    forward = onnx.load(os.path.join(d, f"{name}.fwd.onnx"))
    same_weights = os.path.join(d, f"{name}.grad_ortt.onnx")
    grad = "grad_ortt" if os.path.exists(same_weights) else "grad"
    sessions = {label: onnxruntime.InferenceSession(os.path.join(d, f"{name}.{kind}.onnx"), _options(),
                                                    providers=["CPUExecutionProvider"])
                for label, kind in (("forward", "fwd"), ("onnxgrad", grad))}
    runs: Dict[str, Callable[[], object]] = {label: (lambda s=s: s.run(None, feed)) for label, s in sessions.items()}
    with tempfile.TemporaryDirectory() as work:
        try:
            runs["ort training"] = training_step(forward, info["weights"], info["loss"], feed, work)
        except RuntimeError as e:  # its gradient builder or its kernels lack an op (LRN, Sum-8, ResizeGrad...)
            print(json.dumps({"onnxruntime": onnxruntime.__version__, "error": " ".join(str(e).split())[-160:]}))
            return 0
        for run in runs.values():
            run()  # warm-up
        start = time.process_time()
        runs["forward"]()
        repeats = max(1, int(np.ceil(0.02 / max(time.process_time() - start, 1e-6))))
        times: Dict[str, List[float]] = {label: [] for label in runs}
        labels = list(runs)
        for r in range(rounds):
            for label in labels[r % len(labels):] + labels[:r % len(labels)]:
                start = time.process_time()
                for _ in range(repeats):
                    runs[label]()
                times[label].append((time.process_time() - start) / repeats)
    print(json.dumps({"onnxruntime": onnxruntime.__version__, **times}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
