"""Training steps per second: an onnxgrad step model in onnxruntime against PyTorch.

For each network the same AdamW step (forward, backward, update) is timed in float32 on one CPU
thread each (torch.set_num_threads(1), onnxruntime intra_op_num_threads=1):

- onnxgrad: the step model of ``onnxgrad.training.training_step`` run by ``Trainer`` (IO
  binding, parameters and state kept as OrtValues between steps);
- PyTorch: the same network and weights, ``loss.backward()`` and ``torch.optim.AdamW.step()``;
- ONNX Runtime training (``onnxruntime.training``: ``Module.train_step`` + its AdamW) when that
  package is installed; otherwise the column says so.

Networks: the classifier of examples/finetune_classifier.py (batch 32 of 16x16 images),
models/small_cnn.onnx (batch 2 of 8x8) and models/transformer_block.onnx (2 sequences of 6).

    python benchmarks/bench_training.py [--steps 300] [--repeats 3]

Needs torch (CPU) for its column; prints the median over repeats.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import time
import types
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from onnxgrad.training import Optimizer, Trainer, training_step  # noqa: E402

LR, WEIGHT_DECAY = 1e-3, 1e-2


def _load(name: str, path: str) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _rate(step: Callable[[], object], steps: int, repeats: int) -> float:
    """Median steps per second of ``repeats`` runs of ``steps`` steps (after a warm-up)."""
    for _ in range(10):
        step()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps / (time.perf_counter() - start))
    return statistics.median(rates)


def onnxgrad_rate(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], steps: int, repeats: int,
                  **kwargs: Any) -> float:
    step = training_step(model, optimizer=Optimizer("adamw", weight_decay=WEIGHT_DECAY), lr=LR, **kwargs)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    trainer = Trainer(step.model, step.initial_state, sess_options=options)
    return _rate(lambda: trainer.step(feeds), steps, repeats)


def torch_rate(loss_of: Callable[[], Any], params: List, steps: int, repeats: int) -> float:
    import torch

    opt = torch.optim.AdamW(params, lr=LR, weight_decay=WEIGHT_DECAY)

    def step() -> None:
        opt.zero_grad()
        loss_of().backward()
        opt.step()

    return _rate(step, steps, repeats)


def ort_training_status() -> str:
    try:
        import onnxruntime.training  # noqa: F401
    except ImportError:
        return "not installed"
    return "installed, not measured"


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(1)
    example = _load("finetune_classifier", "examples/finetune_classifier.py")
    exporter = _load("export_torch_models", "tools/export_torch_models.py")
    rows = []

    model = example.build_classifier()
    x, y = example.make_batch(np.random.default_rng(0), 32)
    ours = onnxgrad_rate(model, {"image": x, "label": y}, args.steps, args.repeats,
                         loss_fn="cross_entropy", target="label")
    w = {t.name: torch.tensor(numpy_helper.to_array(t)).requires_grad_() for t in model.graph.initializer}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)

    def classifier_loss() -> torch.Tensor:
        h = F.max_pool2d(F.relu(F.conv2d(tx, w["conv1.weight"], w["conv1.bias"], padding=1)), 2)
        h = F.relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=1)).mean(dim=(2, 3))
        return F.cross_entropy(F.linear(h, w["fc.weight"], w["fc.bias"]), ty)

    rows.append(("classifier (batch 32)", ours, torch_rate(classifier_loss, list(w.values()), args.steps,
                                                            args.repeats)))

    networks: List[Tuple[str, str, Any, Dict[str, np.ndarray], List[str]]] = [
        ("small_cnn (batch 2)", "models/small_cnn.onnx", exporter.ResNetCNN,
         {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}, ["u"]),
        ("transformer_block (2x6 tokens)", "models/transformer_block.onnx", exporter.GPTBlock,
         {"idx": np.random.default_rng(2).integers(0, 11, (2, 6)).astype(np.int64)}, []),
    ]
    for label, path, cls, feed, exclude in networks:
        model = onnx.load(os.path.join(ROOT, path))
        ours = onnxgrad_rate(model, feed, args.steps, args.repeats, exclude=exclude)
        net = cls().eval()
        inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        with torch.no_grad():
            for name, tensor in list(net.named_parameters()) + list(net.named_buffers()):
                if name in inits:
                    tensor.copy_(torch.from_numpy(inits[name].copy()))
        inputs = [torch.from_numpy(v) for v in feed.values()]
        rows.append((label, ours, torch_rate(lambda: net(*inputs), list(net.parameters()), args.steps,
                                             args.repeats)))

    print(f"onnxruntime {ort.__version__}, torch {torch.__version__}, one thread each, AdamW, float32; "
          f"median of {args.repeats} x {args.steps} steps")
    print(f"{'network':<32}{'onnxgrad steps/s':>18}{'PyTorch steps/s':>17}{'ratio':>8}   ORT training")
    for label, ours, theirs in rows:
        print(f"{label:<32}{ours:>18.0f}{theirs:>17.0f}{ours / theirs:>8.2f}   {ort_training_status()}")


if __name__ == "__main__":
    main(sys.argv[1:])
