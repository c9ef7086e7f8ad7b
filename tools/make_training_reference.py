#!/usr/bin/env python
"""Record PyTorch training trajectories that onnxgrad's step models must reproduce.

Run from the repository root (needs torch, CPU; nothing else in onnxgrad needs it):

    python tools/make_training_reference.py

For each network it runs 20 steps of every optimizer configuration below with ``torch.optim`` in
float64, starting from the parameter values stored in the ONNX file, and writes into
tests/data/training/:

  <name>.npz   configs                  JSON: {config name: training_step keyword arguments}
               batch/<k>/<input>        the batch of step k (k = 0..19)
               <config>/loss            float64 [20], the loss of each step (before its update)
               <config>/param/<name>    float64, each trained parameter after the 20 steps

Networks: ``resnet_cnn`` and ``gpt_block`` are models/small_cnn.onnx and
models/transformer_block.onnx (the modules of tools/export_torch_models.py); ``mlp_logits`` is a
small classifier ending in logits with a symbolic batch dimension, written here as
tests/data/training/mlp_logits.onnx, trained through each loss builder with batches of varying
size. The output is deterministic (fixed seeds, fixed zip timestamps).
"""

from __future__ import annotations

import importlib.util
import json
import os
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "tests", "data", "training")
STEPS = 20

_spec = importlib.util.spec_from_file_location("export_torch_models",
                                               os.path.join(ROOT, "tools", "export_torch_models.py"))
exporter = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(exporter)  # type: ignore[union-attr]

#: Optimizer configurations, as keyword arguments of onnxgrad.training.training_step (and the
#: Optimizer fields); each exercises a different part of torch.optim's formulas.
OPTIMIZER_CONFIGS: Dict[str, dict] = {
    "sgd": {"optimizer": "sgd", "lr": 0.1, "weight_decay": 0.01},
    "sgd_clip": {"optimizer": "sgd", "lr": 0.1, "clip_grad_norm": 0.3},
    "momentum": {"optimizer": "momentum", "lr": 0.05, "momentum": 0.9, "dampening": 0.1, "weight_decay": 1e-3},
    "nesterov": {"optimizer": "momentum", "lr": 0.05, "momentum": 0.8, "nesterov": True},
    "adam": {"optimizer": "adam", "lr": 0.01, "betas": [0.9, 0.99], "weight_decay": 1e-3},
    "adamw": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.1, "clip_grad_norm": 0.5},
    "amsgrad": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "amsgrad": True},
}

LOSS_CONFIGS: Dict[str, dict] = {
    name: {"loss_fn": name, "target": "target", "optimizer": "adam", "lr": 0.02}
    for name in ("mse", "l1", "bce_with_logits", "cross_entropy")
}
#: a quarter of the class targets set to torch's default ignore_index, -100
LOSS_CONFIGS["cross_entropy_ignore"] = {**LOSS_CONFIGS["cross_entropy"], "ignore_index": -100}


def make_optimizer(params: List[torch.nn.Parameter], cfg: dict) -> torch.optim.Optimizer:
    kind = cfg["optimizer"]
    wd = cfg.get("weight_decay")
    if kind == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], weight_decay=wd or 0.0)
    if kind == "momentum":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg.get("momentum", 0.9),
                               dampening=cfg.get("dampening", 0.0), nesterov=cfg.get("nesterov", False),
                               weight_decay=wd or 0.0)
    betas = tuple(cfg.get("betas", (0.9, 0.999)))
    amsgrad = cfg.get("amsgrad", False)
    if kind == "adam":
        return torch.optim.Adam(params, lr=cfg["lr"], betas=betas, weight_decay=wd or 0.0, amsgrad=amsgrad)
    return torch.optim.AdamW(params, lr=cfg["lr"], betas=betas, weight_decay=0.01 if wd is None else wd,
                             amsgrad=amsgrad)


def load_onnx_values(model: nn.Module, onnx_path: str) -> None:
    """Set every parameter and buffer of ``model`` to the initializer of the same name."""
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(onnx_path).graph.initializer}
    with torch.no_grad():
        for name, param in model.named_parameters():  # tied weights (lm_head = wte) are listed once
            if name not in inits:
                raise RuntimeError(f"parameter {name} has no initializer in {onnx_path}")
            param.copy_(torch.from_numpy(inits[name].copy()))
        for name, buffer in model.named_buffers():  # BN running stats, u; not num_batches_tracked
            if name in inits:
                buffer.copy_(torch.from_numpy(inits[name].copy()))


def trajectory(model: nn.Module, loss_of: Callable[[nn.Module, dict], torch.Tensor], batches: List[dict],
               cfg: dict) -> Tuple[np.ndarray, Dict[str, np.ndarray], List[float]]:
    """Train a float64 copy of ``model`` for len(batches) steps; losses, final params, grad norms."""
    import copy

    m = copy.deepcopy(model).double().eval()
    params = dict(m.named_parameters())
    opt = make_optimizer(list(params.values()), cfg)
    losses, norms = [], []
    for batch in batches:
        opt.zero_grad()
        loss = loss_of(m, batch)
        loss.backward()
        grads = [p.grad for p in params.values() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(gr) for gr in grads]))))
        if cfg.get("clip_grad_norm"):
            torch.nn.utils.clip_grad_norm_(list(params.values()), cfg["clip_grad_norm"])
        opt.step()
        losses.append(loss.item())
    return np.array(losses), {n: p.detach().numpy().copy() for n, p in params.items()}, norms


class MLP(nn.Module):
    """Linear(8, 16) - tanh - Linear(16, 4): logits for 4 classes (tanh keeps it smooth)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.tanh(self.fc1(x)))


def export_mlp(path: str) -> MLP:
    torch.manual_seed(3)
    m = MLP().eval()
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    buf = __import__("io").BytesIO()
    torch.onnx.export(m, (torch.randn(3, 8),), buf, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}},
                      do_constant_folding=False, training=torch.onnx.TrainingMode.EVAL)
    proto = onnx.load_from_string(buf.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, path)
    return m


def torch_loss(name: str, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    functions: Dict[str, Callable[..., torch.Tensor]] = {
        "mse": F.mse_loss, "l1": F.l1_loss, "bce_with_logits": F.binary_cross_entropy_with_logits,
        "cross_entropy": F.cross_entropy}
    return functions[name](logits, target)


def to_torch(a: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(a)
    return t.double() if t.is_floating_point() else t


def report(name: str, cfg_name: str, losses: np.ndarray, norms: List[float], cfg: dict) -> None:
    clip = cfg.get("clip_grad_norm")
    clipped = f", clipped in {sum(n > clip for n in norms)}/{len(norms)} steps" if clip else ""
    print(f"  {name}/{cfg_name}: loss {losses[0]:.6g} -> {losses[-1]:.6g}; grad norm {norms[0]:.3g}..{norms[-1]:.3g}"
          f"{clipped}")


def main() -> None:
    os.makedirs(OUT_DIR, exist_ok=True)
    rng = np.random.default_rng(14)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}")

    # (module, ONNX file, batch of step k, loss, lr factor per optimizer): the CNN's loss
    # sum(out * u) is linear in its output of a ReLU net, unbounded below, and SGD's steps grow
    # with the gradient: smaller steps keep all 20 finite
    networks: Dict[str, Tuple[Any, ...]] = {
        "resnet_cnn": (exporter.ResNetCNN, os.path.join(ROOT, "models", "small_cnn.onnx"),
                       lambda k: {"x": rng.standard_normal((2, 3, 8, 8)).astype(np.float32)},
                       lambda m, b: m(to_torch(b["x"])),
                       {"sgd": 0.01, "momentum": 0.01, "adam": 0.1, "adamw": 0.1}),
        "gpt_block": (exporter.GPTBlock, os.path.join(ROOT, "models", "transformer_block.onnx"),
                      lambda k: {"idx": rng.integers(0, 11, (2, 6)).astype(np.int64)},
                      lambda m, b: m(to_torch(b["idx"])),
                      {"sgd": 1.0, "momentum": 1.0, "adam": 1.0, "adamw": 1.0}),
    }
    for name, (cls, onnx_path, make_batch, loss_of, factor) in networks.items():
        model = cls()
        load_onnx_values(model, onnx_path)
        steps = [make_batch(k) for k in range(STEPS)]
        configs = {c: {**cfg, "lr": cfg["lr"] * factor[cfg["optimizer"]]} for c, cfg in OPTIMIZER_CONFIGS.items()}
        arrays: Dict[str, np.ndarray] = {"configs": np.array(json.dumps(configs))}
        for k, b in enumerate(steps):
            arrays.update({f"batch/{k}/{i}": v for i, v in b.items()})
        for cfg_name, cfg in configs.items():
            losses, params, norms = trajectory(model, loss_of, steps, cfg)
            report(name, cfg_name, losses, norms, cfg)
            arrays[f"{cfg_name}/loss"] = losses
            arrays.update({f"{cfg_name}/param/{p}": v for p, v in params.items()})
        exporter.save_npz_deterministic(os.path.join(OUT_DIR, f"{name}.npz"), arrays)

    mlp = export_mlp(os.path.join(OUT_DIR, "mlp_logits.onnx"))
    sizes = [3, 5, 4, 7, 2] * (STEPS // 5)
    arrays = {"configs": np.array(json.dumps(LOSS_CONFIGS))}
    for cfg_name, cfg in LOSS_CONFIGS.items():
        batches: List[Dict[str, np.ndarray]] = []
        for n in sizes:
            x = rng.standard_normal((n, 8)).astype(np.float32)
            if cfg["loss_fn"] == "cross_entropy":
                target = rng.integers(0, 4, n).astype(np.int64)
                if "ignore_index" in cfg:  # ignore some, never all
                    target[1:][rng.uniform(size=n - 1) < 0.25] = cfg["ignore_index"]
            elif cfg["loss_fn"] == "bce_with_logits":
                target = rng.uniform(0, 1, (n, 4)).astype(np.float32)
            else:
                target = rng.standard_normal((n, 4)).astype(np.float32)
            batches.append({"x": x, "target": target})
        for k, b in enumerate(batches):
            arrays.update({f"{cfg_name}/batch/{k}/{i}": v for i, v in b.items()})
        def loss_of(m: nn.Module, b: dict, fn: str = cfg["loss_fn"]) -> torch.Tensor:
            return torch_loss(fn, m(to_torch(b["x"])), to_torch(b["target"]))

        losses, params, norms = trajectory(mlp, loss_of, batches, cfg)
        report("mlp_logits", cfg_name, losses, norms, cfg)
        arrays[f"{cfg_name}/loss"] = losses
        arrays.update({f"{cfg_name}/param/{p}": v for p, v in params.items()})
    exporter.save_npz_deterministic(os.path.join(OUT_DIR, "mlp_logits.npz"), arrays)
    for f in sorted(os.listdir(OUT_DIR)):
        print(f"wrote {os.path.join(OUT_DIR, f)} ({os.path.getsize(os.path.join(OUT_DIR, f))} bytes)")


if __name__ == "__main__":
    main()
