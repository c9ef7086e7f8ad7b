#!/usr/bin/env python
"""Fine-tune a small image classifier with an onnxgrad step model, and plot its loss curve.

Run from the repository root:

    python examples/finetune_classifier.py [--steps 300] [--png examples/finetune_classifier.png]

The classifier (Conv-Relu-MaxPool-Conv-Relu-GlobalAveragePool-Gemm, 16x16 RGB images, 4 classes,
symbolic batch) is an ONNX model built here with random weights; its first convolution plays the
pretrained backbone and stays frozen. The data are generated: horizontal stripes, vertical
stripes, diagonal stripes and a centred blob, each with random phase, colour and noise.

1. ``training_step`` writes the training step (cross-entropy on the logits, AdamW) as one ONNX
   model; ``Trainer`` runs it in onnxruntime for ``--steps`` batches of 32.
2. ``save_trained`` writes the classifier with the trained weights; its accuracy on held-out
   images is measured with a plain inference session before and after.
3. If PyTorch is installed, the same network with the same weights is trained on the same batches
   with ``torch.optim.AdamW`` and its curve drawn beside onnxgrad's (they coincide up to float32
   rounding). matplotlib draws the PNG.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from onnxgrad.training import Optimizer, Trainer, save_trained, training_step

HERE = os.path.dirname(os.path.abspath(__file__))
CLASSES = ["horizontal", "vertical", "diagonal", "blob"]
SIZE = 16
LR, WEIGHT_DECAY, BATCH = 3e-3, 1e-2, 32


def build_classifier(seed: int = 0) -> onnx.ModelProto:
    """The classifier as an ONNX model (opset 17), weights He-initialized."""
    rng = np.random.default_rng(seed)

    def he(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    weights = {"conv1.weight": he(8, 3, 3, 3), "conv1.bias": np.zeros(8, np.float32),
               "conv2.weight": he(16, 8, 3, 3), "conv2.bias": np.zeros(16, np.float32),
               "fc.weight": he(len(CLASSES), 16) * np.float32(0.5), "fc.bias": np.zeros(len(CLASSES), np.float32)}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["p1", "conv2.weight", "conv2.bias"], ["c2"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["r2"]),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"]),
        helper.make_node("Gemm", ["features", "fc.weight", "fc.bias"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "classifier", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", len(CLASSES)])],
        [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def make_batch(rng: np.random.Generator, n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` generated images [n, 3, 16, 16] and their labels."""
    labels = rng.integers(0, len(CLASSES), n)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    images = np.empty((n, 3, SIZE, SIZE), np.float32)
    for i, label in enumerate(labels):
        phase, period = rng.uniform(0, 2 * np.pi), rng.uniform(3, 6)
        if label == 0:
            pattern = np.sin(2 * np.pi * yy / period + phase)
        elif label == 1:
            pattern = np.sin(2 * np.pi * xx / period + phase)
        elif label == 2:
            pattern = np.sin(2 * np.pi * (xx + yy) / period / np.sqrt(2) + phase)
        else:
            cy, cx = rng.uniform(5, 11, 2)
            pattern = 2 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(6, 14)) - 0.5
        colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        images[i] = colour[:, None, None] * pattern + rng.normal(0, 0.3, (3, SIZE, SIZE))
    return images, labels.astype(np.int64)


def accuracy(model_path: str, images: np.ndarray, labels: np.ndarray) -> float:
    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    (logits,) = sess.run(["logits"], {"image": images})
    return float(np.mean(logits.argmax(axis=1) == labels))


def train_onnx(model: onnx.ModelProto, batches: List[Tuple[np.ndarray, np.ndarray]]) -> Tuple[List[float], Trainer]:
    step = training_step(model, loss_fn="cross_entropy", target="label", exclude="conv1.*", lr=LR,
                         optimizer=Optimizer("adamw", weight_decay=WEIGHT_DECAY))
    trainer = Trainer(step.model, step.initial_state)
    return [trainer.step({"image": x, "label": y}) for x, y in batches], trainer


def train_torch(model: onnx.ModelProto, batches: List[Tuple[np.ndarray, np.ndarray]]) -> Optional[List[float]]:
    """The same network, weights and batches with torch.optim.AdamW; None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    w = {t.name: torch.tensor(numpy_helper.to_array(t)) for t in model.graph.initializer}
    trained = [w[k].requires_grad_() for k in ("conv2.weight", "conv2.bias", "fc.weight", "fc.bias")]
    opt = torch.optim.AdamW(trained, lr=LR, weight_decay=WEIGHT_DECAY)
    losses = []
    for x, y in batches:
        h = F.max_pool2d(F.relu(F.conv2d(torch.from_numpy(x), w["conv1.weight"], w["conv1.bias"], padding=1)), 2)
        h = F.relu(F.conv2d(h, w["conv2.weight"], w["conv2.bias"], padding=1)).mean(dim=(2, 3))
        loss = F.cross_entropy(F.linear(h, w["fc.weight"], w["fc.bias"]), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def plot(path: str, losses: List[float], reference: Optional[List[float]], accuracies: Dict[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    ax.plot(losses, label="onnxgrad step model in onnxruntime", linewidth=2.5, color="tab:blue")
    if reference is not None:
        ax.plot(reference, label="PyTorch torch.optim.AdamW", linewidth=1, linestyle="--", color="tab:orange")
    ax.set_xlabel("step (batch of 32 generated images)")
    ax.set_ylabel("cross-entropy loss")
    ax.set_title(f"Fine-tuning a 4-class CNN, conv1 frozen: held-out accuracy "
                 f"{accuracies['before']:.1%} -> {accuracies['after']:.1%}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, metadata={"Software": None})
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--png", default=os.path.join(HERE, "finetune_classifier.png"))
    args = parser.parse_args(argv)

    model = build_classifier()
    rng = np.random.default_rng(1)
    batches = [make_batch(rng, BATCH) for _ in range(args.steps)]
    held_out = make_batch(np.random.default_rng(2), 512)

    start = time.perf_counter()
    losses, trainer = train_onnx(model, batches)
    seconds = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        before, after = os.path.join(tmp, "classifier.onnx"), os.path.join(tmp, "classifier.trained.onnx")
        onnx.save(model, before)
        save_trained(before, trainer.state(), after)
        accuracies = {"before": accuracy(before, *held_out), "after": accuracy(after, *held_out)}
    reference = train_torch(model, batches)

    print(f"onnxgrad: {args.steps} steps in {seconds:.2f} s; loss {np.mean(losses[:10]):.3f} (first 10 steps) -> "
          f"{np.mean(losses[-10:]):.3f} (last 10); held-out accuracy {accuracies['before']:.1%} -> "
          f"{accuracies['after']:.1%}")
    if reference is not None:
        print(f"PyTorch:  loss {np.mean(reference[:10]):.3f} -> {np.mean(reference[-10:]):.3f}; largest difference "
              f"between the curves {np.max(np.abs(np.array(losses) - np.array(reference))):.1e}")
    plot(args.png, losses, reference, accuracies)
    print(f"wrote {args.png}")


if __name__ == "__main__":
    main()
