"""Run time of onnxgrad's gradient models against the plain forward, side by side in one process.

    python benchmarks/bench_models.py                       # every model, 7 rounds, table printed
    python benchmarks/bench_models.py --models resnet50 segnet512 --rounds 11
    python benchmarks/bench_models.py --baseline /tmp/old   # also an older onnxgrad source tree
    python benchmarks/bench_models.py --write-readme        # the table into benchmarks/README.md
    python benchmarks/bench_models.py --profile resnet50    # onnxruntime profile: time vs FLOPs per op type
    python benchmarks/bench_models.py --ort-training /tmp/ortt/bin/python  # also ONNX Runtime training

Models: the onnx package's light zoo at 224x224 with random weights (``tests/zoo.py``), the shipped
``models/small_cnn.onnx`` and ``models/transformer_block.onnx``, and ``segnet512``, a 512x512
segmentation-style encoder-decoder with Resize upsampling and skip connections built here with
onnx.helper. Each forward model ends in a scalar loss (zoo: sum(u * output), u fixed random); the
gradient model is ``onnxgrad.gradients(model, loss, every float weight)``, i.e. the forward plus
the backward pass in one run.

Method: gradient models are built (and saved) by a subprocess per onnxgrad version, so two versions
can be compared in one timing process. Per model, the sessions (onnxruntime CPU, 2 intra-op
threads, ``session.intra_op.allow_spinning=0`` so idle threads burn no CPU, default graph
optimizations) are run in interleaved rounds (forward, gradient, [baseline gradient], order
rotated each round) after one warm-up run each; the CPU time of each run is measured with
``time.process_time`` (all threads of this process), and the medians are compared. Sharing the
machine with other jobs changes all of them alike within a round, so the ratios hold where the
absolute times do not. Peak memory is measured per model in a fresh subprocess: the resident set
high-water mark (VmHWM) minus the resident set before the first run.

PyTorch autograd (CPU, 2 threads, OMP_WAIT_POLICY=PASSIVE) is measured when installed, on the same
ONNX graph and weights interpreted op by op (``benchmarks/torch_ref.py``; models it cannot
interpret show n/a). ONNX Runtime training (``onnxruntime-training``, which replaces the
``onnxruntime`` package) is measured from a separate virtual environment given by
``--ort-training``: ``benchmarks/ort_training.py`` times its training step and onnxgrad's gradient
model side by side in that environment's onnxruntime (see its docstring for the setup).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from functools import partial
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

# PyTorch's OpenMP threads would otherwise spin between kernels and bill that as CPU time
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ZOO = ["bvlc_alexnet", "zfnet512", "squeezenet", "resnet50", "densenet121", "inception_v1", "inception_v2",
       "shufflenet"]
MODELS = ZOO + ["small_cnn", "transformer_block", "segnet512"]


# ---------------------------------------------------------------- models
def segnet512(opset: int = 17) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray], List[str], str]:
    """A 512x512 encoder-decoder: strided 3x3 Conv + ReLU stages, MaxPool, AveragePool, bilinear and
    nearest Resize back up with Concat skips, a 1x1 classifier, loss = sum(u * logits)."""
    rng = np.random.default_rng(0)
    inits: List[onnx.TensorProto] = []
    nodes: List[onnx.NodeProto] = []
    weights: List[str] = []

    def conv(x: str, cin: int, cout: int, k: int, stride: int, name: str, relu: bool = True) -> str:
        w = rng.standard_normal((cout, cin, k, k), dtype=np.float32) * np.float32(np.sqrt(2.0 / (cin * k * k)))
        inits.append(numpy_helper.from_array(w, f"{name}.w"))
        inits.append(numpy_helper.from_array(rng.uniform(-0.1, 0.1, cout).astype(np.float32), f"{name}.b"))
        weights.extend([f"{name}.w", f"{name}.b"])
        nodes.append(helper.make_node("Conv", [x, f"{name}.w", f"{name}.b"], [f"{name}.y"], kernel_shape=[k, k],
                                      strides=[stride, stride], pads=[k // 2] * 4))
        if not relu:
            return f"{name}.y"
        nodes.append(helper.make_node("Relu", [f"{name}.y"], [f"{name}.r"]))
        return f"{name}.r"

    def resize(x: str, name: str, mode: str) -> str:
        if "scales2" not in {t.name for t in inits}:
            inits.append(numpy_helper.from_array(np.asarray([1, 1, 2, 2], np.float32), "scales2"))
        nodes.append(helper.make_node("Resize", [x, "", "scales2"], [name], mode=mode))
        return name

    e1 = conv("image", 3, 16, 3, 2, "enc1")                      # 256
    e2 = conv(e1, 16, 32, 3, 2, "enc2")                          # 128
    nodes.append(helper.make_node("MaxPool", [e2], ["pool2"], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    e3 = conv("pool2", 32, 64, 3, 1, "enc3")                     # 64
    nodes.append(helper.make_node("AveragePool", [e3], ["pool3"], kernel_shape=[2, 2], strides=[2, 2]))
    e4 = conv("pool3", 64, 64, 3, 1, "enc4")                     # 32
    u3 = resize(e4, "up3", "linear")                             # 64
    nodes.append(helper.make_node("Concat", [u3, e3], ["cat3"], axis=1))
    d3 = conv("cat3", 128, 32, 3, 1, "dec3")
    u2 = resize(d3, "up2", "nearest")                            # 128
    nodes.append(helper.make_node("Concat", [u2, e2], ["cat2"], axis=1))
    d2 = conv("cat2", 64, 16, 3, 1, "dec2")
    logits = conv(resize(d2, "up1", "linear"), 16, 5, 1, 1, "head", relu=False)  # 256
    out = resize(logits, "logits", "linear")                     # 512
    u = rng.standard_normal((1, 5, 512, 512), dtype=np.float32)
    inits.append(numpy_helper.from_array(u, "u"))
    nodes.append(helper.make_node("Mul", [out, "u"], ["weighted"]))
    nodes.append(helper.make_node("ReduceSum", ["weighted"], ["loss"], keepdims=0))
    graph = helper.make_graph(nodes, "segnet512", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                 [1, 3, 512, 512])],
                              [helper.make_tensor_value_info("loss", TensorProto.FLOAT, [])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    feed = {"image": rng.standard_normal((1, 3, 512, 512), dtype=np.float32)}
    return model, feed, weights, "loss"


def load(name: str) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray], List[str], str]:
    """(forward model ending in a scalar loss, feeds, weights to differentiate, loss name)."""
    if name in ZOO:
        sys.path.insert(0, os.path.join(ROOT, "tests"))
        import zoo

        model, feed, weights = zoo.load(name)
        model, loss = zoo.with_loss(model)
        return model, feed, weights, loss
    if name == "segnet512":
        return segnet512()
    model = onnx.load(os.path.join(ROOT, "models", f"{name}.onnx"))
    from onnxgrad.checking import random_feeds

    feed = random_feeds(model, np.random.default_rng(0))
    weights = [t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    return model, feed, weights, model.graph.output[0].name


def build(names: List[str], out: str) -> None:
    """Write ``<name>.fwd.onnx``, ``<name>.grad.onnx``, ``<name>.npz`` and ``<name>.json`` into ``out``
    with the onnxgrad found on sys.path (run in a subprocess per version)."""
    import onnxgrad

    for name in names:
        model, feed, weights, loss = load(name)
        start = time.process_time()
        result = onnxgrad.gradients(model, loss, weights)
        seconds = time.process_time() - start
        onnx.save(model, os.path.join(out, f"{name}.fwd.onnx"))
        onnx.save(result.model, os.path.join(out, f"{name}.grad.onnx"))
        np.savez(os.path.join(out, f"{name}.npz"), **feed)
        consts = sum(_const_bytes(n) for n in result.model.graph.node[len(model.graph.node):])
        # ONNX Runtime training cannot differentiate BatchNormalization's running statistics: for
        # its column onnxgrad's gradient model differentiates the same weights it does
        same = [w for w in weights if w not in batch_norm_statistics(model)]
        if same != weights:
            onnx.save(onnxgrad.gradients(model, loss, same).model, os.path.join(out, f"{name}.grad_ortt.onnx"))
        with open(os.path.join(out, f"{name}.json"), "w") as f:
            json.dump({"build_s": seconds, "fwd_nodes": len(model.graph.node), "weights": weights, "loss": loss,
                       "grad_nodes": len(result.model.graph.node), "backward_const_bytes": consts,
                       "onnxgrad": os.path.dirname(onnxgrad.__file__)}, f)
        print(f"built {name}: {seconds:.2f} s", file=sys.stderr, flush=True)


def batch_norm_statistics(model: onnx.ModelProto) -> set:
    """Names of the running mean and variance inputs of the model's BatchNormalization nodes."""
    return {i for n in model.graph.node if n.op_type == "BatchNormalization" for i in n.input[3:5]}


def _const_bytes(node: onnx.NodeProto) -> int:
    if node.op_type != "Constant":
        return 0
    return sum(len(a.t.raw_data) or 4 * len(a.t.float_data) + 8 * len(a.t.int64_data) for a in node.attribute)


def _build_variant(src: str, names: List[str], out: str) -> None:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([src, os.path.join(ROOT, "tests")]))
    subprocess.run([sys.executable, os.path.abspath(__file__), "--build-into", out, "--models", *names],
                   env=env, check=True)


# ---------------------------------------------------------------- timing
def session(path: str, profile: Optional[str] = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3
    if profile:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def time_model(name: str, dirs: Dict[str, str], rounds: int, torch: bool) -> Dict[str, List[float]]:
    """CPU seconds per run: "forward", one gradient model per entry of ``dirs``, and with ``torch``
    "torch forward" and "torch fwd+bwd" when the interpreter runs the model and agrees on the loss."""
    first = next(iter(dirs.values()))
    feed = dict(np.load(os.path.join(first, f"{name}.npz")))
    sessions = {"forward": session(os.path.join(first, f"{name}.fwd.onnx"))}
    for label, d in dirs.items():
        sessions[label] = session(os.path.join(d, f"{name}.grad.onnx"))
    runs: Dict[str, Callable[[], object]] = {label: partial(sess.run, None, feed) for label, sess in sessions.items()}
    if torch:
        runs.update(_torch_runs(name, first, feed, float(np.asarray(runs["forward"]()[-1]).reshape(-1)[0])))
    times: Dict[str, List[float]] = defaultdict(list)
    labels = list(runs)
    for run in runs.values():
        run()  # warm-up: allocations, weight prepacking
    start = time.process_time()
    runs["forward"]()
    # tiny models: repeat each run so a timed block lasts >= 20 ms (the clock and the scheduler
    # would otherwise dominate)
    repeats = max(1, int(np.ceil(0.02 / max(time.process_time() - start, 1e-6))))
    for r in range(rounds):
        for label in labels[r % len(labels):] + labels[:r % len(labels)]:
            start = time.process_time()
            for _ in range(repeats):
                runs[label]()
            times[label].append((time.process_time() - start) / repeats)
    return times


def _torch_runs(name: str, d: str, feed: Dict[str, np.ndarray], loss_value: float) -> Dict[str, Callable[[], object]]:
    """PyTorch autograd on the same graph and weights (empty when it cannot run it or disagrees)."""
    import torch

    from torch_ref import Unsupported, runner

    torch.set_num_threads(2)
    info = json.load(open(os.path.join(d, f"{name}.json")))
    model = onnx.load(os.path.join(d, f"{name}.fwd.onnx"))
    try:
        forward, forward_backward = runner(model, feed, info["weights"], info["loss"])
    except Unsupported as e:
        print(f"{name}: PyTorch interpreter: unsupported {e}", file=sys.stderr)
        return {}
    if abs(forward() - loss_value) > 1e-3 * max(1.0, abs(loss_value)):
        print(f"{name}: PyTorch loss {forward()} != onnxruntime {loss_value}; not timed", file=sys.stderr)
        return {}
    return {"torch forward": forward, "torch fwd+bwd": forward_backward}


_PEAK = """
import resource, sys, numpy as np
sys.path.insert(0, {here!r})
from bench_models import session
def rss(key):
    for line in open('/proc/self/status'):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
sess = session({path!r})
feed = dict(np.load({feed!r}))
before = rss('VmRSS')
sess.run(None, feed); sess.run(None, feed)
print(rss('VmHWM') - before)
"""


def peak_memory(path: str, feed: str) -> int:
    """Bytes the resident set grows to while running ``path`` twice, in a fresh process."""
    code = _PEAK.format(here=HERE, path=path, feed=feed)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- profile
def _flops(op: str, ins: List[List[int]], outs: List[List[int]]) -> float:
    """Multiply-adds x 2 of the heavy kernels, one per output element for everything else."""
    size = float(np.prod(outs[0])) if outs and outs[0] else 0.0
    try:
        if op in ("Conv", "FusedConv"):
            return 2 * size * float(np.prod(ins[1][1:]))
        if op == "ConvTranspose":
            return 2 * float(np.prod(ins[0])) * float(np.prod(ins[1][1:]))
        if op in ("MatMul", "Gemm", "FusedMatMul", "FusedGemm"):
            a = ins[0]
            k = a[0] if op.endswith("Gemm") and size and outs[0][0] != a[0] else a[-1]
            return 2 * size * k
    except (IndexError, TypeError):
        return size
    return size


def profile(name: str, d: str, runs: int = 3) -> List[Tuple[str, float, float]]:
    """(op type, share of kernel time, share of FLOPs) of the gradient model, by time share."""
    feed = dict(np.load(os.path.join(d, f"{name}.npz")))
    prefix = os.path.join(tempfile.mkdtemp(), name)
    sess = session(os.path.join(d, f"{name}.grad.onnx"), profile=prefix)
    for _ in range(runs + 1):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    # onnxruntime's profile lists no input it prepacked (a ConvTranspose's weight): read its shape
    # from the model, where the node keeps its name
    model = onnx.load(os.path.join(d, f"{name}.grad.onnx"), load_external_data=False)
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    weight_of = {n.name: dims[n.input[1]] for n in model.graph.node
                 if n.op_type == "ConvTranspose" and len(n.input) > 1 and n.input[1] in dims}
    seen: Dict[str, int] = defaultdict(int)
    times: Dict[str, float] = defaultdict(float)
    flops: Dict[str, float] = defaultdict(float)
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        node = e["name"][:-len("_kernel_time")]
        seen[node] += 1
        if seen[node] == 1:
            continue  # the warm-up run
        args = e["args"]
        op = args["op_name"]
        ins = [list(next(iter(t.values()))) for t in args.get("input_type_shape", [])]
        outs = [list(next(iter(t.values()))) for t in args.get("output_type_shape", [])]
        if len(ins) == 1 and node in weight_of:
            ins.append(weight_of[node])
        times[op] += e["dur"]
        flops[op] += _flops(op, ins, outs)
    total_t, total_f = sum(times.values()), sum(flops.values())
    rows = [(op, times[op] / total_t, flops[op] / total_f) for op in times]
    return sorted(rows, key=lambda r: -r[1])


# ---------------------------------------------------------------- report
def machine() -> str:
    import onnxruntime as ort

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    load = os.getloadavg()
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, onnx {onnx.__version__}, "
            f"onnxruntime {ort.__version__}, numpy {np.__version__}; load average at the end "
            f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min)")


def optional_frameworks(ort_training: Optional[str] = None) -> str:
    found = []
    try:
        __import__("torch")
        found.append("PyTorch: installed, autograd on the same ONNX graph and weights (benchmarks/torch_ref.py)")
    except ImportError:
        found.append("PyTorch: not installed, not measured")
    if ort_training:
        version = subprocess.run([ort_training, "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        found.append(f"ONNX Runtime training: onnxruntime-training {version} in a separate environment "
                     "(benchmarks/ort_training.py), its step and onnxgrad's gradient model timed there side by side")
    else:
        found.append("ONNX Runtime training: not measured (--ort-training)")
    return "; ".join(found)


def ort_training(python: str, d: str, name: str, rounds: int) -> List[str]:
    """[ORT training's fwd+bwd / its forward, onnxgrad's gradient model / ORT training's step], both
    run by onnxruntime-training's own onnxruntime in one process (benchmarks/ort_training.py)."""
    out = subprocess.run([python, os.path.join(HERE, "ort_training.py"), d, name, str(rounds)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if "error" in result:
        print(f"{name}: ONNX Runtime training refused it: {result['error']}", file=sys.stderr)
        return ["n/a", "n/a"]
    med = {k: statistics.median(v) for k, v in result.items() if isinstance(v, list)}
    return [f"{med['ort training'] / med['forward']:.2f}x", f"{med['onnxgrad'] / med['ort training']:.2f}"]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--baseline", help="source tree of another onnxgrad version, measured beside this one")
    p.add_argument("--write-readme", action="store_true", help="write the table into benchmarks/README.md")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even when installed")
    p.add_argument("--ort-training", metavar="PYTHON",
                   help="the Python of a separate environment with onnxruntime-training (benchmarks/ort_training.py)")
    # no choices=: argparse refuses an empty list against them (``--profile`` alone means every model)
    p.add_argument("--profile", nargs="*", metavar="MODEL",
                   help="profile these gradient models (all without a name) instead of timing")
    p.add_argument("--build-into", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.profile is not None:
        unknown = sorted(set(args.profile) - set(MODELS))
        if unknown:
            p.error(f"--profile: unknown model {', '.join(unknown)} (choose from {', '.join(MODELS)})")
        args.profile = args.profile or MODELS
    if args.build_into:
        build(args.models, args.build_into)
        return 0
    work = tempfile.mkdtemp(prefix="onnxgrad-bench-")
    dirs = {"onnxgrad": os.path.join(work, "current")}
    if args.baseline:
        dirs["baseline"] = os.path.join(work, "baseline")
    sources = {"onnxgrad": ROOT, "baseline": args.baseline}
    for label, d in dirs.items():
        os.makedirs(d)
        _build_variant(sources[label], args.models if args.profile is None else args.profile, d)
    if args.profile is not None:
        for name in args.profile:
            print(f"\n{name}: op type, share of kernel time, share of FLOPs (gradient model)")
            for op, t, f in profile(name, dirs["onnxgrad"])[:15]:
                print(f"  {op:24s} {100 * t:6.1f} % {100 * f:7.2f} %")
        return 0

    header = ["model", "forward ms", "fwd+bwd ms", "ratio"]
    if args.baseline:
        header += ["baseline fwd+bwd ms", "baseline ratio"]
    torch_ok = optional_frameworks().startswith("PyTorch: installed") and not args.no_torch
    if torch_ok:
        header += ["PyTorch fwd ms", "PyTorch fwd+bwd ms", "PyTorch ratio", "onnxgrad / PyTorch fwd+bwd"]
    if args.ort_training:
        header += ["ORT training ratio", "onnxgrad / ORT training fwd+bwd"]
    header += ["build s", "bwd const MB", "peak MB fwd", "peak MB fwd+bwd"]
    rows = []
    for name in args.models:
        times = time_model(name, dirs, args.rounds, torch_ok)
        med = {k: statistics.median(v) for k, v in times.items()}
        info = json.load(open(os.path.join(dirs["onnxgrad"], f"{name}.json")))
        row = [name, f"{1e3 * med['forward']:.3g}", f"{1e3 * med['onnxgrad']:.3g}",
               f"{med['onnxgrad'] / med['forward']:.2f}x"]
        if args.baseline:
            row += [f"{1e3 * med['baseline']:.3g}", f"{med['baseline'] / med['forward']:.2f}x"]
        if torch_ok and "torch fwd+bwd" in med:
            row += [f"{1e3 * med['torch forward']:.3g}", f"{1e3 * med['torch fwd+bwd']:.3g}",
                    f"{med['torch fwd+bwd'] / med['torch forward']:.2f}x",
                    f"{med['onnxgrad'] / med['torch fwd+bwd']:.2f}"]
        elif torch_ok:
            row += ["n/a"] * 4
        if args.ort_training:
            row += ort_training(args.ort_training, dirs["onnxgrad"], name, args.rounds)
        row += [f"{info['build_s']:.2f}", f"{info['backward_const_bytes'] / 1e6:.2f}"]
        if args.no_memory:
            row += ["", ""]
        else:
            d, feed = dirs["onnxgrad"], os.path.join(dirs["onnxgrad"], f"{name}.npz")
            row += [f"{peak_memory(os.path.join(d, f'{name}.{kind}.onnx'), feed) / 2**20:.0f}"
                    for kind in ("fwd", "grad")]
        rows.append(row)
        print(" | ".join(row), flush=True)
    table = "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(r) + " |" for r in rows])
    note = (f"Machine: {machine()}.\n{optional_frameworks(args.ort_training)}.\n"
            f"Medians of {args.rounds} interleaved rounds, CPU time (both intra-op threads).")
    print("\n" + table + "\n\n" + note)
    if args.write_readme:
        _write_readme(table, note)
    return 0


_BEGIN, _END = "<!-- bench_models table: begin -->", "<!-- bench_models table: end -->"


def _write_readme(table: str, note: str) -> None:
    """Replace the marked block of benchmarks/README.md (or append one)."""
    path = os.path.join(HERE, "README.md")
    text = open(path).read()
    block = f"{_BEGIN}\n{table}\n\n{note}\n{_END}"
    if _BEGIN in text:
        text = text[:text.index(_BEGIN)] + block + text[text.index(_END) + len(_END):]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
