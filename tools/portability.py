"""Run onnxgrad's gradient models in several ONNX runtimes and compare them with onnxruntime.

Run from the repository root: ``python tools/portability.py [--targets T,..] [--models a,b] [--out F]``.
It differentiates each model's scalar loss with respect to its trainable parameters, with the
model's static batch and with the batch dimension made symbolic, runs the gradient model in
onnxruntime (the reference), ``onnx.reference``, OpenVINO (CPU, f32), tract and onnxruntime-web
(WebAssembly under Node, found through ``$ONNXGRAD_NODE_MODULES``), and writes the
runtime x model matrix to ``docs/portability.md`` (``--out -`` prints it instead).

Every model is first moved away from its kinks (:func:`away_from_kinks`): where float32 rounding
alone decides a ReLU's side or a max-pool's tap, the runtimes' gradients differ by the model's
choice, not by a fault. Each cell is one of: ``matches`` (every output within ``RTOL`` of
onnxruntime, relative to the output's largest magnitude), ``lacks forward op`` (the runtime
refuses the forward model already, so no gradient model can run there), ``forward fixes batch``
(likewise, with a symbolic batch, where onnxruntime too refuses any other batch than the one the
model was exported with: the model is not batch-generic), ``forward differs`` (the runtime computes the forward loss
itself differently from onnxruntime, so its gradients cannot be compared), ``differs`` (with the
worst relative error), ``fails`` (the runtime refuses the gradient model although it runs the
forward one), or ``absent`` (the runtime's Python package is not installed).
"""

from __future__ import annotations

import argparse
import functools
import glob
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import zoo  # noqa: E402

import onnxgrad  # noqa: E402
from onnxgrad import targets  # noqa: E402

RTOL = 1e-5
RUNTIMES = ["onnx.reference", "openvino", "tract", "onnxruntime-web"]
Feed = Dict[str, np.ndarray]


@dataclass
class Case:
    """One model to differentiate: the forward model, a feed, the scalar y and the xs."""

    name: str
    model: onnx.ModelProto
    feed: Feed
    y: str
    xs: List[str]
    symbolic: bool = False


def _random_feed(model: onnx.ModelProto, seed: int = 0) -> Feed:
    rng = np.random.default_rng(seed)
    feed = {}
    for vi in model.graph.input:
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else 2 for d in t.shape.dim]
        if t.elem_type == TensorProto.FLOAT:
            feed[vi.name] = rng.standard_normal(dims).astype(np.float32)
        else:
            feed[vi.name] = rng.integers(0, 2, dims).astype(helper.tensor_dtype_to_np_dtype(t.elem_type))
    return feed


def example_cases() -> List[Case]:
    """The shipped examples of ``models/`` that have trainable parameters."""
    cases = []
    for path in sorted(glob.glob(os.path.join(ROOT, "models", "*.onnx"))):
        model = onnx.load(path)
        xs = onnxgrad.parameters(model)
        if xs:
            cases.append(Case(os.path.basename(path)[:-5], model, _random_feed(model), model.graph.output[-1].name, xs))
    return cases


def torch_cases() -> List[Case]:
    """The real-network PyTorch exports of ``tests/data/torch`` with their recorded inputs."""
    cases = []
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "torch", "*.onnx"))):
        ref = np.load(path[:-5] + ".npz")
        feed = {k[len("input/"):]: ref[k] for k in ref.files if k.startswith("input/")}
        xs = sorted(k[len("grad/"):] for k in ref.files if k.startswith("grad/"))
        cases.append(Case("torch_" + os.path.basename(path)[:-5], onnx.load(path), feed, "loss", xs))
    return cases


def zoo_cases(names: Optional[Sequence[str]] = None) -> List[Case]:
    """The onnx package's light model zoo, made differentiable by ``tests/zoo.py``."""
    cases = []
    for name in names or zoo.MODELS:
        model, feed, weights = zoo.load(name)
        model, loss = zoo.with_loss(model)
        cases.append(Case("zoo_" + name, model, feed, loss, weights))
    return cases


def symbolic_batch(case: Case) -> Case:
    """``case`` with dim 0 of every graph input of rank >= 1 renamed to the symbol ``N``, and dim 0
    of every graph output of rank >= 1 left unknown.

    An output still declared with the static batch (the light zoo's ``[1, 1000]``) would tell
    onnxgrad that the batch is 1 after all: its gradient model then mixes a constant 1 with ``N``
    (``Reshape(dy, [1000, 1, 1, 1])`` beside ``Transpose(x)`` of ``[.., N, ..]``), valid only for
    N = 1, which tract's shape analysis rightly refuses.
    """
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    for vi in m.graph.input:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].dim_param = "N"
    for vi in m.graph.output:
        dims = vi.type.tensor_type.shape.dim
        if len(dims):
            dims[0].Clear()
    del m.graph.value_info[:]
    return Case(case.name, m, case.feed, case.y, case.xs, symbolic=True)


# ---------------------------------------------------------------- kinks
#: How far (relative to the tensor's largest magnitude) every ReLU input must stay from 0, and every
#: max-pool window's largest value from its second largest, in the kink-aware comparison. float32
#: runtimes differ by ~1e-6 of that scale in these values; a gradient taken closer to a kink than
#: that is decided by rounding (which side of the ReLU, which tap of the pool), not by the model.
KINK_MARGIN = 1e-4


@dataclass
class Kinks:
    """What :func:`away_from_kinks` did: kink elements examined (ReLU inputs, max-pool inputs) and moved."""

    examined: int
    moved: int


def away_from_kinks(case: Case, margin: float = KINK_MARGIN, rounds: int = 40) -> Tuple[Case, Kinks]:
    """``case`` with each ReLU input and MaxPool input moved off its kinks by an offset added to it.

    In onnxruntime's forward values, a ReLU input within ``margin`` x (its tensor's max|x|) of 0
    gets an offset that puts it at 2 x that distance on its own side, and a max-pool window whose
    largest value (if positive) leads the second largest by less gets its largest raised to lead by
    2 x that distance. Moving one element moves those downstream of it, so the rounds repeat until
    none is left within the margin. The added offsets (``Add(x, kink/i)`` before node i, ``kink/i``
    a graph input fed like the data, so a symbolic batch stays batch-generic) make a
    different but fixed model, differentiable at the point measured: every runtime then decides
    each ReLU and each pool's tap as float64 does, and a difference left is not a kink's.
    """
    graph = case.model.graph
    sites = [i for i, n in enumerate(graph.node) if n.op_type in ("Relu", "MaxPool")]
    if not sites:
        return case, Kinks(0, 0)
    deltas: Dict[int, np.ndarray] = {}
    examined = 0
    for _ in range(rounds):
        model = _with_deltas(case.model, deltas)
        names = [_site_input(i, graph.node[i], deltas) for i in sites]
        values = run_onnxruntime(_exposing(model, names), _feed_with(case.feed, deltas), names)
        examined, near = 0, 0
        for i, x in zip(sites, values, strict=True):
            node = graph.node[i]
            tol = np.float32(margin * float(np.max(np.abs(x)))) if x.size else np.float32(0)
            step = _relu_step(x, tol) if node.op_type == "Relu" else _maxpool_step(node, x, tol)
            examined += x.size
            if step is not None:
                near += int(np.count_nonzero(step))
                deltas[i] = deltas.get(i, np.zeros_like(x)) + step
        if not near:
            break
    else:
        raise RuntimeError(f"{case.name}: kinks still within {margin:g} after {rounds} rounds")
    moved = sum(int(np.count_nonzero(d)) for d in deltas.values())
    nudged = Case(case.name, _with_deltas(case.model, deltas), _feed_with(case.feed, deltas), case.y, case.xs,
                  case.symbolic)
    return nudged, Kinks(examined, moved)


def _relu_step(x: np.ndarray, tol: np.float32) -> Optional[np.ndarray]:
    """What to add to ``x`` so its elements within ``tol`` of 0 sit at 2 tol on their side (None: none)."""
    near = np.abs(x) < tol
    if not near.any():
        return None
    return np.where(near, np.where(x >= 0, 2 * tol, -2 * tol) - x, 0).astype(x.dtype)


def _maxpool_step(node: onnx.NodeProto, x: np.ndarray, tol: np.float32) -> Optional[np.ndarray]:
    """What to add to ``x`` [N, C, H, W] so that each 2-D max-pool window whose positive maximum
    leads the runner-up by less than ``tol`` has it lead by 2 tol (None: no such window). Ties at 0
    are left: they are ReLU zeros, whose gradient is 0 whichever tap the pool picks."""
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if x.ndim != 4 or attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET") or attrs.get("ceil_mode") \
            or any(d != 1 for d in attrs.get("dilations", [1, 1])):
        raise NotImplementedError(f"kink-aware MaxPool {node.name!r}: only 2-D explicit-pads pools")
    (kh, kw), (sh, sw) = attrs["kernel_shape"], attrs.get("strides", [1, 1])
    t, left, b, r = attrs.get("pads", [0, 0, 0, 0])
    padded = np.pad(x, [(0, 0), (0, 0), (t, b), (left, r)], constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (kh, kw), axis=(2, 3))[:, :, ::sh, ::sw]
    flat = windows.reshape(windows.shape[:4] + (kh * kw,))
    order = np.argsort(-flat, axis=-1, kind="stable")
    top = np.take_along_axis(flat, order[..., :2], axis=-1)
    near = (top[..., 0] > tol) & (top[..., 0] - top[..., 1] < tol)
    if not near.any():
        return None
    step = np.zeros_like(x)
    # a channel tied almost everywhere (near-constant: the light zoo's deep BatchNorm outputs) gets a
    # ramp 2 tol (h + w), which gives every window one clear winner; isolated ties a raised winner
    flat_channels = (near.mean(axis=(2, 3)) > 0.1) & (near.sum(axis=(2, 3)) >= 16)
    if flat_channels.any():
        h, w = np.arange(x.shape[2])[:, None], np.arange(x.shape[3])[None, :]
        step[flat_channels] = (2 * tol * (h + w)).astype(x.dtype)
        near &= ~flat_channels[:, :, None, None]
    n, c, oh, ow = np.nonzero(near)
    first = order[n, c, oh, ow, 0]
    rows, cols = oh * sh + first // kw - t, ow * sw + first % kw - left
    raise_by = 2 * tol - (top[n, c, oh, ow, 0] - top[n, c, oh, ow, 1])
    np.maximum.at(step, (n, c, rows, cols), raise_by.astype(x.dtype))
    return step


def _site_input(i: int, node: onnx.NodeProto, deltas: Dict[int, np.ndarray]) -> str:
    """The name of node i's (possibly moved) first input in :func:`_with_deltas`' model."""
    return f"kink/{i}/x" if i in deltas else node.input[0]


def _feed_with(feed: Feed, deltas: Dict[int, np.ndarray]) -> Feed:
    """``feed`` plus the offsets ``kink/i`` of :func:`_with_deltas`' model."""
    return {**feed, **{f"kink/{i}": d for i, d in deltas.items()}}


def _with_deltas(model: onnx.ModelProto, deltas: Dict[int, np.ndarray]) -> onnx.ModelProto:
    """A copy of ``model`` whose node i reads ``Add(its input 0, kink/i)`` for each i in ``deltas``,
    with ``kink/i`` a graph input of the offset's shape."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    nodes = []
    for i, node in enumerate(m.graph.node):
        if i in deltas:
            m.graph.input.append(helper.make_tensor_value_info(f"kink/{i}", TensorProto.FLOAT, deltas[i].shape))
            nodes.append(helper.make_node("Add", [node.input[0], f"kink/{i}"], [f"kink/{i}/x"], name=f"kink/{i}/Add"))
            node.input[0] = f"kink/{i}/x"
        nodes.append(node)
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m


def _exposing(model: onnx.ModelProto, names: List[str]) -> onnx.ModelProto:
    """``model`` with ``names`` added as graph outputs, so onnxruntime returns them."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    present = {o.name for o in m.graph.output}
    m.graph.output.extend(helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in dict.fromkeys(names)
                          if n not in present)
    return m


# ---------------------------------------------------------------- runtimes
def run_onnxruntime(model: onnx.ModelProto, feed: Feed, outputs: List[str]) -> List[np.ndarray]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 4  # a refusal raises with its message; the log would print it again
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(outputs, feed)


def run_reference(model: onnx.ModelProto, feed: Feed, outputs: List[str]) -> List[np.ndarray]:
    from onnx.reference import ReferenceEvaluator

    return list(ReferenceEvaluator(model).run(outputs, feed))


def run_openvino(model: onnx.ModelProto, feed: Feed, outputs: List[str]) -> List[np.ndarray]:
    import openvino as ov

    core = ov.Core()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        onnx.save(model, path)
        compiled = core.compile_model(core.read_model(path), "CPU",
                                      {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
    result = compiled([feed[i.name] for i in model.graph.input])
    by_name = {}
    for port, value in result.items():
        for n in port.get_names():
            by_name[n] = np.asarray(value)
    return [by_name[o] for o in outputs]


def run_tract(model: onnx.ModelProto, feed: Feed, outputs: List[str]) -> List[np.ndarray]:
    import tract

    m = onnx.ModelProto()
    m.CopyFrom(model)
    # tract returns the graph outputs in order: ask for exactly the ones wanted
    known = {o.name: o for o in m.graph.output}
    del m.graph.output[:]
    m.graph.output.extend(known[o] if o in known else helper.make_empty_tensor_value_info(o) for o in outputs)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.onnx")
        onnx.save(m, path)
        # the model's own input types: a symbolic batch stays symbolic while tract compiles it
        runnable = tract.onnx().load(path).into_model().into_runnable()
    return [t.to_numpy() for t in runnable.run([feed[vi.name] for vi in m.graph.input])]


def _node_env() -> Dict[str, str]:
    """The environment in which ``node`` finds onnxruntime-web: ``$ONNXGRAD_NODE_MODULES`` (a
    node_modules folder, as ``.ci/run`` installs it) on ``NODE_PATH``."""
    env = dict(os.environ)
    extra = os.environ.get("ONNXGRAD_NODE_MODULES")
    if extra:
        env["NODE_PATH"] = os.pathsep.join(p for p in (extra, env.get("NODE_PATH")) if p)
    return env


def run_ort_web(model: onnx.ModelProto, feed: Feed, outputs: List[str]) -> List[np.ndarray]:
    """onnxruntime-web's WebAssembly backend under Node (``tools/ort_web_run.cjs``), one thread."""
    import json
    import subprocess

    with tempfile.TemporaryDirectory() as tmp:
        onnx.save(model, os.path.join(tmp, "model.onnx"))
        feeds = {}
        for i, (name, value) in enumerate(feed.items()):
            np.ascontiguousarray(value).tofile(os.path.join(tmp, f"in{i}.bin"))
            feeds[name] = {"type": str(value.dtype), "dims": list(value.shape), "file": f"in{i}.bin"}
        with open(os.path.join(tmp, "spec.json"), "w", encoding="utf-8") as f:
            json.dump({"outputs": outputs, "feeds": feeds}, f)
        done = subprocess.run(["node", os.path.join(ROOT, "tools", "ort_web_run.cjs"), tmp], env=_node_env(),
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise RuntimeError(done.stderr.strip().splitlines()[0] if done.stderr.strip() else "node failed")
        with open(os.path.join(tmp, "out.json"), encoding="utf-8") as f:
            described = json.load(f)
        return [np.fromfile(os.path.join(tmp, t["file"]), np.dtype(t["type"])).reshape(t["dims"]) for t in described]


RUNNERS: Dict[str, Callable[[onnx.ModelProto, Feed, List[str]], List[np.ndarray]]] = {
    "onnxruntime": run_onnxruntime, "onnx.reference": run_reference, "openvino": run_openvino, "tract": run_tract,
    "onnxruntime-web": run_ort_web,
}
PACKAGES = {"onnx.reference": "onnx", "openvino": "openvino", "tract": "tract",
            "onnxruntime-web": "onnxruntime-web (npm)"}


@functools.lru_cache(maxsize=None)
def available(runtime: str) -> bool:
    """True when the runtime's Python package can be imported (onnxruntime-web: Node resolves it)."""
    import importlib.util

    if runtime == "onnxruntime-web":
        import shutil
        import subprocess

        return shutil.which("node") is not None and subprocess.run(
            ["node", "-e", "require.resolve('onnxruntime-web')"], env=_node_env(), capture_output=True,
            timeout=60).returncode == 0
    return importlib.util.find_spec(PACKAGES.get(runtime, runtime)) is not None


def worst_relative(got: Sequence[np.ndarray], want: Sequence[np.ndarray]) -> float:
    """max over outputs of max|got - want| / max|want| (0 for two zero outputs)."""
    worst = 0.0
    for g, w in zip(got, want, strict=True):
        g64, w64 = np.asarray(g, np.float64), np.asarray(w, np.float64)
        if g64.shape != w64.shape:
            return float("inf")
        scale = float(np.max(np.abs(w64))) if w64.size else 0.0
        err = float(np.max(np.abs(g64 - w64))) if w64.size else 0.0
        worst = max(worst, err / scale if scale else err)
    return worst


def gradient_model(case: Case, target: Optional[str] = None) -> Tuple[onnx.ModelProto, List[str]]:
    """The gradient model of ``case`` (checked by onnx.checker) and the outputs to compare."""
    result = onnxgrad.gradients(case.model, case.y, case.xs, target=target)
    onnx.checker.check_model(result.model, full_check=True)
    return result.model, [case.y] + [n for n in result.names if n]


def compare(case: Case, runtime: str, target: Optional[str] = None,
            grad: Optional[Tuple[onnx.ModelProto, List[str]]] = None) -> Tuple[str, str]:
    """(status, detail) of ``runtime`` on ``case``'s gradient model against onnxruntime."""
    if not available(runtime):
        return "absent", f"python package {PACKAGES[runtime]!r} not installed"
    run = RUNNERS[runtime]
    model, outputs = grad or gradient_model(case, target)
    forward = onnx.ModelProto()
    forward.CopyFrom(case.model)
    targets.prepare_forward(forward, target)  # what the profile hands the runtime as the forward part
    try:
        forward_got = run(forward, case.feed, [case.y])
    except Exception as e:  # noqa: BLE001 - any refusal of the forward model means the same
        if case.symbolic and not batch_generic(forward, case.feed, case.y):
            return "forward fixes batch", _first_line(e)
        return "lacks forward op", _first_line(e)
    forward_err = worst_relative(forward_got, run_onnxruntime(forward, case.feed, [case.y]))
    if forward_err > RTOL:
        return "forward differs", f"{forward_err:.1e}"
    want = run_onnxruntime(model, case.feed, outputs)
    try:
        got = run(model, case.feed, outputs)
    except Exception as e:  # noqa: BLE001
        return "fails", _first_line(e)
    err = worst_relative(got, want)
    return ("matches" if err <= RTOL else "differs"), f"{err:.1e}"


def batch_generic(model: onnx.ModelProto, feed: Feed, y: str) -> bool:
    """Whether onnxruntime runs ``model`` with every input's dim 0 one larger than in ``feed``.

    Exporters often bake the batch into a Reshape's shape (the light zoo's ``[1, 9216]``, a
    PyTorch export's ``[2, 6, 2, 8]``): such a model runs only at that batch whatever its inputs
    declare, and a runtime that analyses shapes symbolically (tract) rightly refuses it when the
    batch is made symbolic.
    """
    bigger = {k: np.concatenate([v, v[:1]]) if v.ndim else v for k, v in feed.items()}
    try:
        run_onnxruntime(model, bigger, [y])
    except Exception:  # noqa: BLE001 - onnxruntime's refusal is the answer
        return False
    return True


def _first_line(e: BaseException) -> str:
    """The whole message on one line (a cell shows :func:`_short` of it)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}"


def _short(detail: str) -> str:
    """The informative part of a runtime's message: OpenVINO's without its source-location chain."""
    detail = detail.split(" Caused by:")[0]  # tract: the cause, then a backtrace
    parts = [p.strip() for p in re.split(r"Exception from \S+:|Check '[^']*' failed at \S+:", detail) if p.strip()]
    text = " ".join(parts[-2:]) if len(parts) > 1 else detail
    return text.replace("|", "/")[:200]


def matrix(cases: List[Case], target: Optional[str], runtimes: List[str],
           log: Callable[[str], None]) -> List[List[str]]:
    """Rows ``[model, batch, cell per runtime]``."""
    rows = []
    for case in cases:
        case, kinks = away_from_kinks(case)
        for variant in (case, symbolic_batch(case)):
            start = time.perf_counter()
            grad = gradient_model(variant, target)
            cells = []
            for runtime in runtimes:
                status, detail = compare(variant, runtime, target, grad)
                cells.append(status if status == "absent" else f"{status} ({_short(detail)})")
            batch = "symbolic" if variant.symbolic else "static"
            rows.append([variant.name, batch, f"{kinks.moved} / {kinks.examined}"] + cells)
            log(f"{variant.name:28s} {batch:8s} {time.perf_counter() - start:6.1f}s  " + " | ".join(cells))
    return rows


def versions() -> str:
    """The versions of every runtime measured, for the document's header."""
    import onnxruntime

    parts = [f"onnx {onnx.__version__}", f"onnxruntime {onnxruntime.__version__}"]
    if available("openvino"):
        import openvino

        parts.append(f"openvino {openvino.__version__.split('-')[0]}")
    if available("tract"):
        from importlib.metadata import version

        parts.append(f"tract {version('tract')}")
    return ", ".join(parts)


def render(rows_by_target: Dict[str, List[List[str]]], runtimes: List[str]) -> str:
    """The markdown of ``docs/portability.md``'s generated part."""
    out = [f"Measured with {versions()}; relative tolerance {RTOL:g} against onnxruntime "
           "(max|error| / max|onnxruntime's value| per output, worst output shown), away from kinks: "
           f"\"kinks moved\" counts the ReLU inputs and max-pool inputs moved to at least {KINK_MARGIN:g} of "
           "their tensor's largest magnitude from a kink, of all such elements (`away_from_kinks`).", ""]
    for target, rows in rows_by_target.items():
        out += [f"### target={target}", "", "| model | batch | kinks moved | " + " | ".join(runtimes) + " |",
                "|---|---|---|" + "---|" * len(runtimes)]
        out += ["| " + " | ".join(r) + " |" for r in rows]
        out.append("")
    return "\n".join(out)


BEGIN, END = "<!-- matrix:begin (tools/portability.py) -->", "<!-- matrix:end -->"


def main(argv: Optional[List[str]] = None) -> int:
    """Command-line entry: measure and write the matrix between the markers of the document."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--targets", default="default,portable",
                   help="comma-separated profiles to measure ('default' = target None)")
    p.add_argument("--models", default="", help="comma-separated case names (default: all)")
    p.add_argument("--zoo-targets", default="portable",
                   help="the profiles the light zoo is measured with (it takes minutes per model)")
    p.add_argument("--runtimes", default=",".join(RUNTIMES), help="comma-separated runtimes to compare")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "portability.md"))
    args = p.parse_args(argv)
    wanted = set(args.models.split(",")) if args.models else None
    small = [c for c in example_cases() + torch_cases() if wanted is None or c.name in wanted]
    zoo_names = [n for n in zoo.MODELS if wanted is None or f"zoo_{n}" in wanted]
    zoo_models = zoo_cases(zoo_names) if zoo_names and args.zoo_targets else []
    results = {}
    for t in args.targets.split(","):
        cases = small + (zoo_models if t in args.zoo_targets.split(",") else [])
        results[t] = matrix(cases, None if t == "default" else t, args.runtimes.split(","),
                            lambda s: print(s, file=sys.stderr, flush=True))
    text = render(results, args.runtimes.split(","))
    if args.out == "-":
        print(text)
        return 0
    with open(args.out, encoding="utf-8") as f:
        doc = f.read()
    head, rest = doc.split(BEGIN, 1)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(head + BEGIN + "\n" + text + "\n" + END + rest.split(END, 1)[1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
