#!/usr/bin/env python
"""Export small PyTorch models to ONNX and record torch-autograd reference gradients.

Run from the repository root:

    python tools/export_torch_models.py

For every model <name> this writes into tests/data/torch/:

  <name>.onnx  float32 ONNX model (opset 17, legacy TorchScript exporter) whose single
               graph output "loss" is the scalar training loss.  Data (x, targets,
               token ids) are graph inputs; parameters are initializers named after the
               torch parameters (no constant folding).
  <name>.npz   input/<onnx input name>   the exact input arrays (float32 / int64)
               loss                      float64 scalar loss (model run in float64)
               grad/<initializer name>   float64 d loss / d initializer, same shape as
                                         the initializer, for every trainable initializer

Gradients are computed with torch.autograd on a float64 copy of the model
(model.double()) using the same (float32-representable) parameter values that are
stored in the ONNX file.  Requires torch (CPU), onnx, onnxruntime, numpy.
"""
from __future__ import annotations

import io
import math
import os
import sys
import zipfile

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import numpy_helper

OPSET = 17
MODELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
EXAMPLES = {"resnet_cnn": "small_cnn.onnx", "gpt_block": "transformer_block.onnx"}
OUT_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "data", "torch")


# --------------------------------------------------------------------------- models
class MLPCE(nn.Module):
    """Linear-ReLU-Linear classifier with mean cross-entropy loss."""

    def __init__(self, d_in=8, d_hidden=16, n_classes=5):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_hidden)
        self.fc2 = nn.Linear(d_hidden, n_classes)

    def forward(self, x, target):
        return F.cross_entropy(self.fc2(F.relu(self.fc1(x))), target)


class ResNetCNN(nn.Module):
    """conv-BN-ReLU stem, one basic residual block, strided conv, GAP, linear head.

    BatchNorm runs in eval mode (running statistics).  loss = sum(head(x) * u)."""

    def __init__(self, c=8, c2=12, n_out=4):
        super().__init__()
        self.conv1 = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.block_conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.block_bn1 = nn.BatchNorm2d(c)
        self.block_conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.block_bn2 = nn.BatchNorm2d(c)
        self.down = nn.Conv2d(c, c2, 3, stride=2, padding=1)
        self.fc = nn.Linear(c2, n_out)
        self.register_buffer("u", torch.zeros(2, n_out))

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        r = F.relu(self.block_bn1(self.block_conv1(h)))
        r = self.block_bn2(self.block_conv2(r))
        h = F.relu(h + r)
        h = F.relu(self.down(h))
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        out = self.fc(h)
        return (out * self.u).sum()


class GPTBlock(nn.Module):
    """Token + learned position embedding, one pre-LN transformer block with hand-written
    causal multi-head attention and tanh-GELU MLP, final LN, LM head tied to wte."""

    def __init__(self, vocab=11, seq=6, d=16, n_head=2):
        super().__init__()
        self.n_head = n_head
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying
        # True above the diagonal = position may NOT be attended to
        self.register_buffer("causal_mask", torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1))
        self.register_buffer("pos", torch.arange(seq, dtype=torch.int64))

    def attn(self, x):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)
        att = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(self.causal_mask, float("-inf"))
        att = F.softmax(att, dim=-1)
        y = torch.matmul(att, v)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.c_proj(y)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe(self.pos)
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp_proj(F.gelu(self.mlp_fc(self.ln_2(x)), approximate="tanh"))
        logits = self.lm_head(self.ln_f(x))
        V = logits.shape[-1]
        return F.cross_entropy(logits[:, :-1, :].reshape(-1, V), idx[:, 1:].reshape(-1))


# --------------------------------------------------------------------------- builders
def _init_params(model, std_bias=0.1):
    """Small, well-scaled random init: weights ~ N(0, 1/fan_in), biases ~ N(0, 0.1^2),
    BN/LN scale ~ 1 + N(0, 0.1^2), shift ~ N(0, 0.1^2), BN running stats randomized.
    Nothing equals a constant, which keeps the value-based name mapping unambiguous."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if isinstance(_owner(model, name), (nn.BatchNorm2d, nn.LayerNorm)):
                p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(std_bias * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p[0].numel()))
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn_like(mod.running_mean))
                mod.running_var.copy_(1.0 + 0.5 * torch.rand_like(mod.running_var))


def _owner(model, pname):
    mod = model
    for part in pname.split(".")[:-1]:
        mod = getattr(mod, part)
    return mod


def build_mlp_ce():
    torch.manual_seed(0)
    m = MLPCE()
    _init_params(m)
    x = torch.randn(4, 8)
    target = torch.tensor([3, 0, 4, 1], dtype=torch.int64)
    return m, (x, target), ["x", "target"]


def build_resnet_cnn():
    torch.manual_seed(1)
    m = ResNetCNN()
    _init_params(m)
    m.u.copy_(torch.randn_like(m.u))
    x = torch.randn(2, 3, 8, 8)
    return m, (x,), ["x"]


def build_gpt_block():
    torch.manual_seed(2)
    m = GPTBlock()
    _init_params(m)
    with torch.no_grad():  # embeddings: std 0.3 (tied LM head -> moderate logits)
        m.wte.weight.copy_(0.3 * torch.randn_like(m.wte.weight))
        m.wpe.weight.copy_(0.3 * torch.randn_like(m.wpe.weight))
    idx = torch.randint(0, 11, (2, 6), dtype=torch.int64)
    return m, (idx,), ["idx"]


MODELS = {
    "mlp_ce": build_mlp_ce,
    "resnet_cnn": build_resnet_cnn,
    "gpt_block": build_gpt_block,
}


# --------------------------------------------------------------------------- helpers
def save_npz_deterministic(path, arrays):
    """Like np.savez_compressed but with fixed zip timestamps (byte-reproducible)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for key in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def export(model, args, input_names):
    f = io.BytesIO()
    torch.onnx.export(
        model, args, f,
        dynamo=False,
        opset_version=OPSET,
        input_names=input_names,
        output_names=["loss"],
        export_params=True,
        keep_initializers_as_inputs=False,
        do_constant_folding=False,
        training=torch.onnx.TrainingMode.EVAL,
    )
    return onnx.load_from_string(f.getvalue())


def map_initializers(model, onnx_model):
    """Return {init_name: (param_name, transposed)} for trainable initializers and
    {init_name: description} for the others.  Fails loudly on anything ambiguous."""
    params = dict(model.named_parameters(remove_duplicate=False))  # includes tied aliases
    unique = {id(p): n for n, p in model.named_parameters()}        # canonical names
    buffers = dict(model.named_buffers())
    trainable, other = {}, {}
    for init in onnx_model.graph.initializer:
        val = numpy_helper.to_array(init)
        name = init.name
        if name in params:
            p = params[name].detach().cpu().numpy()
            if val.shape != p.shape or not np.array_equal(val, p):
                raise RuntimeError(f"initializer {name!r} does not match torch parameter values")
            trainable[name] = (unique[id(params[name])], False)
            continue
        if name in buffers:
            other[name] = "buffer (non-trainable)"
            continue
        hits = []
        for pn, p in model.named_parameters():
            pv = p.detach().cpu().numpy()
            if val.shape == pv.shape and np.array_equal(val, pv):
                hits.append((pn, False))
            elif pv.ndim == 2 and val.shape == pv.T.shape and np.array_equal(val, pv.T):
                hits.append((pn, True))
        if len(hits) > 1:
            raise RuntimeError(f"initializer {name!r} matches several parameters: {hits}")
        if hits:
            trainable[name] = hits[0]
        else:
            other[name] = "exporter constant (non-trainable)"
    mapped = [pn for pn, _ in trainable.values()]
    for pn in dict(model.named_parameters()):
        if mapped.count(pn) != 1:
            raise RuntimeError(f"torch parameter {pn!r} maps to {mapped.count(pn)} initializers "
                               f"(need exactly 1): {trainable}")
    return trainable, other


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


# --------------------------------------------------------------------------- main
def process(name, builder):
    model, args, input_names = builder()
    model.eval()
    onnx_model = export(model, args, input_names)

    onnx.checker.check_model(onnx_model, full_check=True)
    g = onnx_model.graph
    assert [o.name for o in g.output] == ["loss"], [o.name for o in g.output]
    assert [i.name for i in g.input] == input_names, [i.name for i in g.input]
    assert len(g.output[0].type.tensor_type.shape.dim) == 0, "loss must be a scalar"

    trainable, other = map_initializers(model, onnx_model)

    # float32 check: torch vs onnxruntime
    with torch.no_grad():
        loss32 = float(model(*args))
    feeds = {n: a.numpy() for n, a in zip(input_names, args)}
    sess = ort.InferenceSession(onnx_model.SerializeToString(), providers=["CPUExecutionProvider"])
    (ort_loss,) = sess.run(["loss"], feeds)
    assert ort_loss.shape == () and ort_loss.dtype == np.float32
    rel = abs(float(ort_loss) - loss32) / abs(loss32)
    if rel > 1e-5:
        raise RuntimeError(f"{name}: onnxruntime loss {float(ort_loss)} vs torch {loss32} (rel {rel:.2e})")

    # float32 torch grads (conditioning check only)
    model.zero_grad()
    model(*args).backward()
    grads32 = {pn: p.grad.detach().double().numpy().copy() for pn, p in model.named_parameters()}

    # float64 reference (also records the smallest |ReLU input| so that float32
    # evaluation cannot land on the other side of a kink)
    m64 = model.double()
    m64.zero_grad()
    args64 = tuple(a.double() if a.is_floating_point() else a for a in args)
    relu_inputs = []
    orig_relu = F.relu
    F.relu = lambda t, *a, **k: (relu_inputs.append(t.detach().abs().min().item()), orig_relu(t, *a, **k))[1]
    try:
        loss64 = m64(*args64)
    finally:
        F.relu = orig_relu
    relu_margin = min(relu_inputs) if relu_inputs else float("inf")
    if relu_margin < 1e-5:  # float32 rounding of pre-activations is ~1e-7
        raise RuntimeError(f"{name}: a ReLU input is within {relu_margin:.1e} of 0; change seed")
    loss64.backward()
    grads64 = {pn: p.grad.detach().numpy().copy() for pn, p in m64.named_parameters()}

    arrays = {f"input/{n}": a for n, a in feeds.items()}
    arrays["loss"] = np.array(loss64.item(), dtype=np.float64)
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    worst32 = worst_ew = 0.0
    for iname, (pn, transposed) in trainable.items():
        gr = grads64[pn].T if transposed else grads64[pn]
        gr = np.ascontiguousarray(gr, dtype=np.float64)
        assert gr.shape == inits[iname].shape, (iname, gr.shape, inits[iname].shape)
        assert np.all(np.isfinite(gr))
        arrays[f"grad/{iname}"] = gr
        worst32 = max(worst32, rel_err(grads32[pn], grads64[pn]))
        ew = np.abs(grads32[pn] - grads64[pn]) / (np.abs(grads64[pn]) + 1e-6)
        worst_ew = max(worst_ew, float(ew.max()))

    onnx.save(onnx_model, os.path.join(OUT_DIR, f"{name}.onnx"))
    if name in EXAMPLES:  # the README's real-network examples are the same files
        onnx.save(onnx_model, os.path.join(MODELS_DIR, EXAMPLES[name]))
    save_npz_deterministic(os.path.join(OUT_DIR, f"{name}.npz"), arrays)

    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    print(f"== {name}: loss32={loss32:.8g} ort={float(ort_loss):.8g} (rel {rel:.1e}) "
          f"loss64={loss64.item():.10g}")
    print(f"   torch f32-vs-f64 grads: max|d|/max|g| {worst32:.1e}, max elementwise |d|/(|g|+1e-6) "
          f"{worst_ew:.1e}; min |ReLU input| {relu_margin:.2e}")
    print("   ops:", ", ".join(f"{k}x{v}" for k, v in sorted(ops.items())))
    for iname, arr in inits.items():
        if iname in trainable:
            pn, tr = trainable[iname]
            note = f"param {pn}" + (" (transposed)" if tr else "") + ("" if pn == iname else " [renamed]")
        else:
            note = other[iname]
        print(f"   init {iname} {arr.dtype} {list(arr.shape)}: {note}")
    aliases = [n for n, _ in model.named_parameters(remove_duplicate=False) if n not in dict(model.named_parameters())]
    if aliases:
        print("   tied aliases (same tensor, no separate initializer):", aliases)


def main():
    os.makedirs(OUT_DIR, exist_ok=True)
    print(f"torch {torch.__version__}, onnx {onnx.__version__}, onnxruntime {ort.__version__}, opset {OPSET}")
    names = sys.argv[1:] or list(MODELS)
    for name in names:
        process(name, MODELS[name])


if __name__ == "__main__":
    main()
