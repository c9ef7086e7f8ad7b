"""Export small real models and their float64 reference gradients into ``tests/data/real/``.

Three steps, each run by a different Python (the heavy frameworks are never dependencies of
onnxgrad or of its default tests; only the committed ``.onnx``/``.npz`` files are)::

    python tools/export_real_models.py torch   # needs torch (+ onnxscript, transformers)
    python tools/export_real_models.py torchvision   # needs torch + torchvision (+ onnxscript)
    python tools/export_real_models.py tf      # needs tensorflow-cpu + tf2onnx
    python tools/export_real_models.py table   # needs onnxgrad + onnxruntime: docs/real-models.md

Every model computes the scalar ``loss = sum(u * output)`` with a fixed random ``u`` (a buffer
or constant inside the model, so the ONNX graph has a single output ``loss``). Each ``.npz``
holds ``input/<onnx input>`` (the exact feeds), ``loss`` (float64) and ``grad/<onnx name>``:
the framework's own float64 gradient (torch autograd on ``.double()``, ``tf.GradientTape`` on
float64 copies) of ``loss`` w.r.t. every float input and every parameter whose exported
initializer holds exactly the framework value (or its transpose). Parameters that an exporter
rewrote into new tensors (fused and gate-reordered recurrent weights) have no reference; they
are listed under ``unmapped`` in ``manifest.json`` and are still differentiated by the tests.
A model or exporter that fails is recorded in the manifest with its error.
"""

from __future__ import annotations

import io
import json
import os
import sys
import traceback
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "real")
MANIFEST = os.path.join(OUT, "manifest.json")
DOC = os.path.join(ROOT, "docs", "real-models.md")
# Relative bound the tests apply (max|g - ref| / max|ref| per tensor); see tests/test_real_models.py.
BOUND = 1e-4


def save_npz(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """Write a deterministic compressed npz (fixed member order and timestamps, shapes kept)."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for key in sorted(arrays):
            buf = io.BytesIO()
            # np.ascontiguousarray would turn the 0-d loss into shape (1,).
            np.save(buf, np.array(arrays[key], order="C"), allow_pickle=False)
            info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, buf.getvalue())


def load_manifest() -> Dict[str, Dict[str, Any]]:
    """Read the manifest (model id -> record), or an empty one."""
    if os.path.exists(MANIFEST):
        with open(MANIFEST) as f:
            return json.load(f)
    return {}


def store_manifest(manifest: Dict[str, Dict[str, Any]]) -> None:
    """Write the manifest sorted by model id."""
    os.makedirs(OUT, exist_ok=True)
    with open(MANIFEST, "w") as f:
        json.dump(dict(sorted(manifest.items())), f, indent=1, sort_keys=True)
        f.write("\n")


def map_initializers(
    onnx_model: Any, params: Dict[str, np.ndarray], constants: List[np.ndarray]
) -> Tuple[Dict[str, Tuple[str, bool]], List[str]]:
    """Match framework parameters to ONNX initializers by exact value.

    Returns ``({initializer: (param, transposed)}, unmapped)`` where ``unmapped`` lists float
    initializers with more than one element that match neither a parameter nor one of the
    ``constants`` (the loss weights ``u``): tensors the exporter made from parameters. Parameters
    are drawn at random, so an exact match cannot be a coincidence.
    """
    from onnx import numpy_helper

    mapped: Dict[str, Tuple[str, bool]] = {}
    unmapped: List[str] = []
    for init in onnx_model.graph.initializer:
        value = numpy_helper.to_array(init)
        if value.dtype.kind != "f":
            continue
        hit: Optional[Tuple[str, bool]] = None
        for pname, p in params.items():
            if p.shape == value.shape and np.array_equal(p, value):
                hit = (pname, False)
            elif p.ndim == 2 and p.T.shape == value.shape and np.array_equal(p.T, value):
                hit = (pname, True)
            if hit:
                break
        if hit and value.size > 1:
            mapped[init.name] = hit
        elif value.size > 1 and not hit and not any(c.shape == value.shape and np.array_equal(c, value)
                                                    for c in constants):
            unmapped.append(init.name)
    return mapped, unmapped


def graph_inputs(onnx_model: Any) -> List[str]:
    """Names of the graph inputs that are not initializers, in order."""
    inits = {i.name for i in onnx_model.graph.initializer}
    return [i.name for i in onnx_model.graph.input if i.name not in inits]


# ----------------------------------------------------------------------------------- PyTorch


def torch_models(group: str) -> Dict[str, Tuple[Callable[[], Any], Callable[[], Tuple[Any, ...]]]]:
    """Model builders of ``group`` ("torch" or "torchvision"): id -> (build the module, build its inputs)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    class Loss(nn.Module):
        """sum(u * first output of net) with a fixed random u."""

        def __init__(self, net: nn.Module, out_shape: Tuple[int, ...]) -> None:
            super().__init__()
            self.net = net
            self.register_buffer("u", torch.randn(out_shape))

        def forward(self, *args: Any) -> Any:
            out = self.net(*args)
            if isinstance(out, tuple):
                out = out[0]
            if isinstance(out, dict):  # torchvision's segmentation models
                out = out["out"]
            if hasattr(out, "logits"):
                out = out.logits
            return (out * self.u).sum()

    class Mha(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.att = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x: Any) -> Any:
            return self.att(x, x, x, need_weights=False)[0]

    class Bag(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bag = nn.EmbeddingBag(10, 4, mode="sum")

        def forward(self, idx: Any, offsets: Any) -> Any:
            return self.bag(idx, offsets)

    class Seg(nn.Module):
        """FCN/LRASPP-like head: strided features, 1x1 classifier, Resize to the input's run-time size."""

        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 6, 3, stride=2, padding=1)
            self.cls = nn.Conv2d(6, 4, 1)
            self.gate = nn.Conv2d(6, 4, 1)

        def forward(self, x: Any) -> Any:
            f = torch.relu(self.body(x))
            y = self.cls(f) * torch.sigmoid(self.gate(f.mean(dim=(2, 3), keepdim=True)))
            return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)

    class Shuffle(nn.Module):
        """ShuffleNetV2 unit: chunk into halves, branch on one half, concat, channel shuffle."""

        def __init__(self) -> None:
            super().__init__()
            self.pw1 = nn.Conv2d(4, 4, 1)
            self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
            self.pw2 = nn.Conv2d(4, 4, 1)

        def forward(self, x: Any) -> Any:
            a, b = x.chunk(2, dim=1)
            b = torch.relu(self.pw2(self.dw(torch.relu(self.pw1(b)))))
            y = torch.cat([a, b], dim=1)
            n, c, h, w = y.shape
            return y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)

    class Vit(nn.Module):
        """A tiny ViT (torchvision's layout: conv patchify, class token, learned positions, pre-LN encoder)."""

        def __init__(self) -> None:
            super().__init__()
            self.proj = nn.Conv2d(3, 8, 4, stride=4)
            self.cls = nn.Parameter(torch.randn(1, 1, 8))
            self.pos = nn.Parameter(torch.randn(1, 5, 8))
            layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.enc = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.ln = nn.LayerNorm(8)
            self.head = nn.Linear(8, 3)

        def forward(self, x: Any) -> Any:
            t = self.proj(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1) + self.pos
            return self.head(self.ln(self.enc(t))[:, 0])

    def gpt2() -> nn.Module:
        from transformers import GPT2Config, GPT2LMHeadModel

        cfg = GPT2Config(vocab_size=20, n_positions=8, n_embd=16, n_layer=2, n_head=2, resid_pdrop=0.0,
                         embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False)
        return GPT2LMHeadModel(cfg)

    def f(shape: Tuple[int, ...]) -> Callable[[], Tuple[Any, ...]]:
        return lambda: (torch.randn(shape),)

    if group == "torchvision":
        return torchvision_models(Loss, f)
    return {
        "lstm": (lambda: Loss(nn.LSTM(4, 5, num_layers=2, bidirectional=True, batch_first=True), (2, 3, 10)),
                 f((2, 3, 4))),
        "gru": (lambda: Loss(nn.GRU(4, 5), (3, 2, 5)), f((3, 2, 4))),
        "rnn": (lambda: Loss(nn.RNN(4, 5), (3, 2, 5)), f((3, 2, 4))),
        "embedding_bag": (lambda: Loss(Bag(), (3, 4)),
                          lambda: (torch.tensor([1, 2, 4, 5, 4, 3, 2, 9]), torch.tensor([0, 2, 5]))),
        "multihead_attention": (lambda: Loss(Mha(), (2, 3, 8)), f((2, 3, 8))),
        "transformer_encoder_layer": (
            lambda: Loss(nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True), (2, 3, 8)),
            f((2, 3, 8))),
        "vit_tiny": (lambda: Loss(Vit(), (2, 3)), f((2, 3, 8, 8))),
        "gpt2_tiny": (lambda: Loss(gpt2(), (2, 6, 20)), lambda: (torch.randint(0, 20, (2, 6)),)),
        "segmentation_head": (lambda: Loss(Seg(), (2, 4, 8, 8)), f((2, 3, 8, 8))),
        "shufflenet_unit": (lambda: Loss(Shuffle(), (2, 8, 4, 4)), f((2, 8, 4, 4))),
    }


def torchvision_models(
    loss: Callable[..., Any], inputs: Callable[[Tuple[int, ...]], Callable[[], Tuple[Any, ...]]]
) -> Dict[str, Tuple[Callable[[], Any], Callable[[], Tuple[Any, ...]]]]:
    """torchvision's own VisionTransformer, FCN and LRASPP classes at tiny sizes.

    The segmentation models get a two-conv backbone (torchvision's are ResNet-50 / MobileNetV3,
    megabytes); their heads and their Resize to the input's run-time size are torchvision's.
    """
    import torch
    import torch.nn as nn
    from torchvision.models import VisionTransformer
    from torchvision.models.segmentation import FCN, LRASPP
    from torchvision.models.segmentation.fcn import FCNHead

    class Backbone(nn.Module):
        def __init__(self, key: str) -> None:
            super().__init__()
            self.key = key
            self.c1 = nn.Conv2d(3, 4, 3, stride=2, padding=1)
            self.c2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)

        def forward(self, x: Any) -> Dict[str, Any]:
            low = torch.relu(self.c1(x))
            return {"low": low, self.key: torch.relu(self.c2(low))}

    return {
        "torchvision_vit": (lambda: loss(VisionTransformer(8, 4, 2, 2, 8, 16, num_classes=3), (2, 3)),
                            inputs((2, 3, 8, 8))),
        "torchvision_fcn": (lambda: loss(FCN(Backbone("out"), FCNHead(6, 3)), (2, 3, 8, 8)), inputs((2, 3, 8, 8))),
        "torchvision_lraspp": (lambda: loss(LRASPP(Backbone("high"), 4, 6, 3, inter_channels=8), (2, 3, 8, 8)),
                               inputs((2, 3, 8, 8))),
    }


def export_torch(group: str = "torch") -> None:
    """Export every model of ``group`` with each of TORCH_EXPORTERS; store files and manifest records."""
    import onnx
    import torch

    manifest = load_manifest()
    versions = f"torch {torch.__version__}, onnx {onnx.__version__}"
    if group == "torchvision":
        import torchvision

        versions += f", torchvision {torchvision.__version__}"
    for name, (build, make_inputs) in torch_models(group).items():
        for exporter in TORCH_EXPORTERS:
            mid = f"torch_{name}_{exporter}"
            torch.manual_seed(0)
            try:
                model = build().eval()
                with torch.no_grad():
                    # Default inits repeat values (LayerNorm ones, zero biases); a random shift makes
                    # every parameter unique, so the value-based mapping is unambiguous.
                    for p in model.parameters():
                        p.add_(0.1 * torch.randn_like(p))
                args = make_inputs()
                record = _export_one_torch(mid, model, args, exporter)
            except Exception as e:  # noqa: BLE001 - any exporter failure is a finding to record
                record = {"status": "export failed", "error": _short(e)}
                traceback.print_exc()
            record.update(framework="torch", exporter=exporter, model=name, versions=versions)
            manifest[mid] = record
            print(mid, record["status"], record.get("error", ""))
            store_manifest(manifest)


# torchscript: dynamo=False, constant folding off (every parameter stays an initializer);
# torchscript_functions: the same with export_modules_as_functions=True (model-local functions);
# dynamo: dynamo=True, optimize=False (no folding, so parameters keep their framework values);
# dynamo_optimized: dynamo=True with the default optimize=True, what users get. Its folding can
# merge a parameter into an exporter-made tensor (RNN's first step with h0 = 0 folds bias_hh),
# so only the gradients w.r.t. float graph inputs are compared; parameters are still
# differentiated. Models without a float input are not exported this way.
TORCH_EXPORTERS = ("torchscript", "torchscript_functions", "dynamo", "dynamo_optimized")


def _export_one_torch(mid: str, model: Any, args: Tuple[Any, ...], exporter: str) -> Dict[str, Any]:
    import copy

    import onnx
    import torch

    path = os.path.join(OUT, mid + ".onnx")
    optimized = exporter == "dynamo_optimized"
    if optimized and not any(a.is_floating_point() for a in args):
        return {"status": "not exported", "error": "no float graph input to compare (see TORCH_EXPORTERS)"}
    if exporter.startswith("dynamo"):
        prog = torch.onnx.export(model, args, dynamo=True, output_names=["loss"], optimize=optimized)
        if prog is None:
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no program")
        onnx.save(prog.model_proto, path)
    else:
        torch.onnx.export(model, args, path, dynamo=False, opset_version=17, output_names=["loss"],
                          do_constant_folding=False,
                          export_modules_as_functions=exporter == "torchscript_functions")
    onnx_model = onnx.load(path)
    names = graph_inputs(onnx_model)
    if len(names) != len(args):
        raise RuntimeError(f"exported graph has inputs {names} for {len(args)} arguments")

    params = {n: p.detach().numpy() for n, p in model.named_parameters()}
    mapped, unmapped = map_initializers(onnx_model, params, [b.numpy() for b in model.buffers()])
    if optimized:
        unmapped, mapped = sorted(unmapped + list(mapped)), {}
    model64 = copy.deepcopy(model).double()
    args64 = [a.double().requires_grad_(True) if a.is_floating_point() else a for a in args]
    loss = model64(*args64)
    named = dict(model64.named_parameters())
    wrt = [named[p] for p, _ in mapped.values()] + [a for a in args64 if a.is_floating_point()]
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    arrays: Dict[str, np.ndarray] = {"loss": np.asarray(loss.item(), dtype=np.float64)}
    for n, a in zip(names, args):
        arrays["input/" + n] = a.numpy()
    for (iname, (_, transposed)), g in zip(mapped.items(), grads):
        g64 = np.zeros(named[mapped[iname][0]].shape) if g is None else g.numpy()
        arrays["grad/" + iname] = g64.T if transposed else g64
    for n, a, g in zip([n for n, a in zip(names, args) if a.is_floating_point()],
                       [a for a in args64 if a.is_floating_point()], grads[len(mapped):]):
        arrays["grad/" + n] = np.zeros(a.shape) if g is None else g.numpy()
    save_npz(os.path.join(OUT, mid + ".npz"), arrays)
    # torch's own float32 autograd against its float64 gradient: the yardstick for BOUND.
    args32 = [a.clone().requires_grad_(True) if a.is_floating_point() else a for a in args]
    named32 = dict(model.named_parameters())
    grads32 = torch.autograd.grad(model(*args32), [named32[p] for p, _ in mapped.values()]
                                  + [a for a in args32 if a.is_floating_point()], allow_unused=True)
    # export_modules_as_functions turns the whole model into one function call and ignores
    # output_names, so the loss keeps a generated name.
    return {"status": "exported", "unmapped": unmapped, "params": len(params),
            "output": onnx_model.graph.output[0].name, "mapped": {k: v[0] for k, v in mapped.items()},
            "framework_float32_error": worst_error([None if g is None else g.numpy() for g in grads32],
                                                   [None if g is None else g.numpy() for g in grads])}


def worst_error(got: List[Optional[np.ndarray]], want: List[Optional[np.ndarray]]) -> float:
    """Largest max|got - want| / max|want| over pairs of tensors (None means zero)."""
    worst = 0.0
    for g, w in zip(got, want):
        if w is None:
            continue
        g = np.zeros_like(w) if g is None else g.astype(np.float64)
        scale = max(float(np.max(np.abs(w), initial=0.0)), 1e-30)
        worst = max(worst, float(np.max(np.abs(g - w), initial=0.0)) / scale)
    return worst


def _short(e: BaseException) -> str:
    """First line of an exception, type included, at most 300 characters."""
    text = f"{type(e).__name__}: {e}".strip().splitlines()
    return text[0][:300] if text else type(e).__name__


# -------------------------------------------------------------------------------- TensorFlow


def export_tf() -> None:
    """Convert every TF computation with tf2onnx; store files and manifest records."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    manifest = load_manifest()
    versions = f"tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}, onnx {onnx.__version__}"
    for name, spec in tf_models().items():
        mid = f"tf_{name}"
        try:
            record = _export_one_tf(mid, spec)
        except Exception as e:  # noqa: BLE001 - any converter failure is a finding to record
            record = {"status": "export failed", "error": _short(e)}
            traceback.print_exc()
        record.update(framework="tensorflow", exporter="tf2onnx", model=name, versions=versions)
        manifest[mid] = record
        print(mid, record["status"], record.get("error", ""))
        store_manifest(manifest)


def tf_models() -> Dict[str, Callable[[Any], Tuple[Callable[..., Any], List[Any], Tuple[int, ...]]]]:
    """Builders: id -> f(dtype) returning (fn(x, weights), weights, x shape); fn gives the output."""
    import tensorflow as tf

    def keras(make: Callable[[Any], Any], shape: Tuple[int, ...]) -> Callable[[Any], Any]:
        def build(dtype: Any) -> Any:
            layer = make(dtype)
            layer(tf.zeros(shape, dtype))
            return (lambda x, ws: layer(x)), layer.trainable_variables, shape
        return build

    def raw(fn: Callable[..., Any], wshapes: List[Tuple[int, ...]], shape: Tuple[int, ...]) -> Callable[[Any], Any]:
        def build(dtype: Any) -> Any:
            ws = [tf.Variable(tf.zeros(s, dtype)) for s in wshapes]
            return fn, ws, shape
        return build

    def while_loop(x: Any, ws: List[Any]) -> Any:
        w, b = ws
        _, h = tf.while_loop(lambda i, h: i < 3, lambda i, h: (i + 1, tf.tanh(tf.matmul(h, w) + b)),
                             (tf.constant(0), x))
        return h

    def scan(x: Any, ws: List[Any]) -> Any:
        w, h0 = ws
        return tf.scan(lambda a, xt: tf.tanh(tf.matmul(a, w) + xt), x, initializer=h0)

    def map_fn(x: Any, ws: List[Any]) -> Any:
        (w,) = ws
        return tf.map_fn(lambda r: tf.sin(r) * w + tf.reduce_sum(r * r), x)

    def cond(x: Any, ws: List[Any]) -> Any:
        w, v = ws
        return tf.cond(tf.reduce_sum(x) > 0.0, lambda: tf.matmul(x, w), lambda: tf.sin(x) * v)

    L = tf.keras.layers
    return {
        "keras_lstm": keras(lambda d: L.LSTM(5, return_sequences=True, dtype=d), (2, 3, 4)),
        "keras_gru": keras(lambda d: L.GRU(5, return_sequences=True, dtype=d), (2, 3, 4)),
        "keras_simple_rnn": keras(lambda d: L.SimpleRNN(5, return_sequences=True, dtype=d), (2, 3, 4)),
        "keras_bidirectional_lstm": keras(
            lambda d: L.Bidirectional(L.LSTM(5, return_sequences=True, dtype=d), dtype=d), (2, 3, 4)),
        "while_loop": raw(while_loop, [(4, 4), (4,)], (2, 4)),
        "scan": raw(scan, [(4, 4), (2, 4)], (3, 2, 4)),
        "map_fn": raw(map_fn, [(4,)], (3, 4)),
        "cond": raw(cond, [(4, 4), (2, 4)], (2, 4)),
    }


# tf2onnx fuses Keras LSTM weights into the ONNX LSTM's W, R, B; Keras orders the gates i, f, c, o
# along the kernel's columns, ONNX i, o, f, c.
KERAS_TO_ONNX_GATES = (0, 3, 1, 2)


def fused_lstm_value(keras: List[np.ndarray]) -> np.ndarray:
    """The ONNX LSTM tensor (W, R: [D, 4H, X]; B: [D, 8H]) tf2onnx builds from one Keras tensor per direction.

    Applied to Keras gradients it gives the gradient of the fused tensor: W and R are linear
    rearrangements of the kernels, and B = [bias, 0] feeds both halves into the same gate sums,
    so each half's gradient is the Keras bias gradient.
    """
    out = []
    for k in keras:
        kt = k.T if k.ndim == 2 else k
        gates = np.split(kt, 4, axis=0)
        v = np.concatenate([gates[i] for i in KERAS_TO_ONNX_GATES], axis=0)
        out.append(v if k.ndim == 2 else np.concatenate([v, v]))
    return np.stack(out)


def map_fused_lstm(onnx_model: Any, params: Dict[str, np.ndarray], unmapped: List[str]) -> Dict[str, List[str]]:
    """Find the exporter-made LSTM W, R, B among ``unmapped`` that are exact rearrangements of parameters.

    Returns ``{initializer: [parameter per direction]}``. A bias matches when the ONNX B is the
    rearranged Keras bias followed by zeros (the recurrence bias Keras does not have).
    """
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in onnx_model.graph.initializer}
    found: Dict[str, List[str]] = {}
    for name in unmapped:
        value = inits[name]
        if value.ndim not in (2, 3):
            continue
        per_direction: List[str] = []
        for d in range(value.shape[0]):
            for pname, p in params.items():
                if p.ndim != value.ndim - 1 or p.shape[-1] * (2 if p.ndim == 1 else 1) != value.shape[1]:
                    continue
                want = fused_lstm_value([p])[0]
                if p.ndim == 1:
                    want = np.concatenate([want[: p.size], np.zeros(p.size, p.dtype)])
                if want.shape == value[d].shape and np.array_equal(want, value[d]):
                    per_direction.append(pname)
                    break
        if len(per_direction) == value.shape[0]:
            found[name] = per_direction
    return found


def _export_one_tf(mid: str, build: Callable[[Any], Any]) -> Dict[str, Any]:
    import onnx
    import tensorflow as tf
    import tf2onnx

    rng = np.random.default_rng(0)
    fn32, ws32, shape = build(tf.float32)
    fn64, ws64, _ = build(tf.float64)
    values = [rng.standard_normal(w.shape).astype(np.float32) * 0.5 for w in ws32]
    for w32, w64, v in zip(ws32, ws64, values):
        w32.assign(v)
        w64.assign(v.astype(np.float64))
    x = rng.standard_normal(shape).astype(np.float32)
    out_shape = fn32(tf.constant(x), ws32).shape
    u = rng.standard_normal(out_shape).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec(shape, tf.float32, name="x")])
    def loss32(xin: Any) -> Any:
        return tf.identity(tf.reduce_sum(fn32(xin, ws32) * u), name="loss")

    onnx_model, _ = tf2onnx.convert.from_function(loss32, input_signature=loss32.input_signature, opset=17)
    onnx.save(onnx_model, os.path.join(OUT, mid + ".onnx"))
    names = graph_inputs(onnx_model)
    outs = [o.name for o in onnx_model.graph.output]
    if len(names) != 1 or len(outs) != 1:
        raise RuntimeError(f"converted graph has inputs {names} and outputs {outs}")

    x64 = tf.constant(x.astype(np.float64))
    with tf.GradientTape() as tape:
        tape.watch(x64)
        loss = tf.reduce_sum(fn64(x64, ws64) * u.astype(np.float64))
    grads = tape.gradient(loss, [x64] + list(ws64))
    params = {w.name + f"#{i}": v for i, (w, v) in enumerate(zip(ws32, values))}
    mapped, unmapped = map_initializers(onnx_model, params, [u])
    by_param = {p: g for p, g in zip(params, grads[1:])}
    arrays: Dict[str, np.ndarray] = {"loss": np.asarray(float(loss), dtype=np.float64),
                                     "input/" + names[0]: x,
                                     "grad/" + names[0]: grads[0].numpy()}
    for iname, (pname, transposed) in mapped.items():
        g = by_param[pname]
        g64 = np.zeros(values[list(params).index(pname)].shape) if g is None else tf.convert_to_tensor(g).numpy()
        arrays["grad/" + iname] = g64.T if transposed else g64
    fused = map_fused_lstm(onnx_model, params, unmapped)
    for iname, pnames in fused.items():
        arrays["grad/" + iname] = fused_lstm_value([tf.convert_to_tensor(by_param[pn]).numpy() for pn in pnames])
        unmapped.remove(iname)
    save_npz(os.path.join(OUT, mid + ".npz"), arrays)
    # TensorFlow's own float32 gradient against its float64 one: the yardstick for BOUND.
    x32 = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x32)
        loss32v = tf.reduce_sum(fn32(x32, ws32) * u)
    grads32 = tape.gradient(loss32v, [x32] + list(ws32))

    def dense(g: Any) -> Optional[np.ndarray]:
        return None if g is None else tf.convert_to_tensor(g).numpy()

    return {"status": "exported", "unmapped": unmapped, "params": len(params), "output": outs[0],
            "mapped": {**{k: v[0] for k, v in mapped.items()}, **{k: " + ".join(v) for k, v in fused.items()}},
            "framework_float32_error": worst_error([dense(g) for g in grads32], [dense(g) for g in grads])}


# ----------------------------------------------------------------------------------- table


def measure(mid: str, record: Dict[str, Any]) -> Dict[str, Any]:
    """Differentiate one committed model with onnxgrad and compare with its reference.

    Returns ``{"status": "error", "error": str}`` or ``{"status": "differentiates", "worst": float,
    "worst_of": str, "compared": int, "unmapped": int}``.
    """
    import onnx

    from onnxgrad import gradients
    from onnxgrad.checking import session

    model = onnx.load(os.path.join(OUT, mid + ".onnx"))
    ref = np.load(os.path.join(OUT, mid + ".npz"))
    output = record.get("output", "loss")
    compared = sorted(k[len("grad/"):] for k in ref.files if k.startswith("grad/"))
    xs = compared + sorted(record.get("unmapped", []))
    feeds = {k[len("input/"):]: ref[k] for k in ref.files if k.startswith("input/")}
    try:
        result = gradients(model, output, xs)
        onnx.checker.check_model(result.model, full_check=True)
        wanted = [n for n in result.names[:len(compared)]]
        got = session(result.model).run([output] + [n for n in result.names if n], feeds)
    except Exception as e:  # noqa: BLE001 - the table reports whatever stops the user
        return {"status": "error", "error": _short(e)}
    by_name = dict(zip([n for n in result.names if n], got[1:]))
    worst, worst_of = 0.0, ""
    for x, n in zip(compared, wanted):
        expected = ref["grad/" + x]
        g = by_name[n] if n else np.zeros_like(expected)
        err = float(np.max(np.abs(g - expected), initial=0.0)) / max(float(np.max(np.abs(expected), initial=0.0)),
                                                                     1e-30)
        if err > worst:
            worst, worst_of = err, x
    return {"status": "differentiates", "worst": worst, "worst_of": worst_of, "compared": len(compared),
            "unmapped": len(record.get("unmapped", []))}


def write_table() -> None:
    """Measure every model of the manifest and write docs/real-models.md."""
    manifest = load_manifest()
    lines = [
        "# Real exported models",
        "",
        "Generated by `python tools/export_real_models.py table` from `tests/data/real/` (models and",
        "float64 framework gradients written by its `torch`, `torchvision` and `tf` steps). Each model",
        "computes `loss = sum(u * output)`; onnxgrad differentiates it w.r.t. every float input and every",
        "float initializer, onnxruntime runs the result in float32, and the gradient is compared with the",
        "framework's float64 gradient as max|g - ref| / max|ref| per tensor (`tests/test_real_models.py`",
        f"asserts <= {BOUND:g}). `compared` counts tensors with a reference; `rewritten` counts",
        "initializers the exporter made itself (e.g. gate-reordered recurrent weights): differentiated, but",
        "with no framework counterpart to compare with (their gradients must exist and be finite).",
        "",
        "Exporters: `torchscript` is `torch.onnx.export(dynamo=False, do_constant_folding=False)`;",
        "`torchscript_functions` adds `export_modules_as_functions=True` (every module a model-local",
        "function); `dynamo` is `dynamo=True, optimize=False`; `dynamo_optimized` is the default",
        "`optimize=True`, whose constant folding may fold parameters into new tensors, so only the",
        "gradients w.r.t. graph inputs are compared there; `tf2onnx` is `tf2onnx.convert.from_function`",
        "(opset 17) of a `tf.function`.",
        "",
        "| model | exporter | result | worst rel. error | compared | rewritten | note |",
        "|---|---|---|---|---|---|---|",
    ]
    counts = {"differentiates": 0, "refused": 0, "not exported": 0}
    refusals: Dict[str, List[str]] = {}
    worst_all = 0.0
    for mid, rec in manifest.items():
        if rec["status"] != "exported":
            counts["not exported"] += 1
            lines.append(f"| {rec['model']} | {rec['exporter']} | {rec['status']} | | | | {_cell(rec['error'])} |")
            continue
        m = measure(mid, rec)
        if m["status"] == "error":
            counts["refused"] += 1
            refusals.setdefault(blocker_of(m["error"]), []).append(mid)
            lines.append(f"| {rec['model']} | {rec['exporter']} | **refused** | | | | {_cell(m['error'])} |")
        else:
            counts["differentiates"] += 1
            worst_all = max(worst_all, m["worst"])
            lines.append(f"| {rec['model']} | {rec['exporter']} | differentiates | {m['worst']:.1e} | "
                         f"{m['compared']} | {m['unmapped']} | worst: `{m['worst_of']}` |")
        print(lines[-1])
    lines += ["", "## Still refused, by blocker", ""]
    if not refusals:
        lines.append("None: every exported model differentiates.")
    else:
        lines += ["| blocker | refused | models |", "|---|---|---|"]
    for blocker, mids in sorted(refusals.items(), key=lambda kv: -len(kv[1])):
        names = ", ".join(f"{manifest[m]['model']} ({manifest[m]['exporter']})" for m in mids)
        lines.append(f"| {blocker} | {len(mids)} | {names} |")
    own = max(r.get("framework_float32_error", 0.0) for r in manifest.values())
    versions = sorted({r["versions"] for r in manifest.values()})
    lines += ["", f"Summary: {len(manifest)} model x exporter pairs; {counts['differentiates']} differentiate "
              f"(worst relative error {worst_all:.1e}; the frameworks' own float32 gradients reach {own:.1e}), "
              f"{counts['refused']} refused by onnxgrad, {counts['not exported']} not exported.",
              "", "Exported with: " + "; ".join(versions) + "."]
    with open(DOC, "w") as f:
        f.write("\n".join(lines) + "\n")


BLOCKERS = (
    ("is unknown; its gradient needs it",
     "a rank onnx's shape inference leaves unknown (TorchScript attention's Squeeze)"),
    ("the gradient needs static sizes", "`Resize` whose sizes are computed at run time"),
    ("fails ONNX shape inference", "the gradient model fails shape inference"),
)


def blocker_of(error: str) -> str:
    """Name the blocker behind an onnxgrad error message (the message's first line if unknown)."""
    for phrase, blocker in BLOCKERS:
        if phrase in error:
            return blocker
    return _cell(error)


def _cell(text: str) -> str:
    """Make text safe inside a markdown table cell."""
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: List[str]) -> int:
    """Command-line entry: one of ``torch``, ``torchvision``, ``tf``, ``table``."""
    steps = {"torch": export_torch, "torchvision": lambda: export_torch("torchvision"), "tf": export_tf,
             "table": write_table}
    if len(argv) != 2 or argv[1] not in steps:
        print(__doc__)
        return 2
    os.makedirs(OUT, exist_ok=True)
    steps[argv[1]]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
