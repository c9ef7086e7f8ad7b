"""Differentiation time on deep generated graphs of 1k, 10k and 100k nodes.

Each graph is a chain of layers ``h = Tanh(Add(MatMul(h, W_i), b_i))`` (three nodes per layer, a
4x4 weight and a bias per layer); the gradient of the last ``h`` is taken with respect to every
weight and bias. The script prints, per size, the time of each stage of ``onnxgrad.gradients``
in CPU seconds (reading the model, indexing it: validation and shape inference, the backward
walk, assembling the outputs, the output's check) and of writing the result with
:func:`onnxgrad.modelio.write_model`, then the growth ratio between sizes measured
side by side in this run. Linear cost means a ratio near 10 per step.

    python benchmarks/bench_scaling.py [--sizes 1000 10000 100000] [--profile 100000] [--cli]

``--cli`` measures ``onnxgrad differentiate MODEL --xs @params`` (in process) instead: reading
the file, differentiating and writing the result.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
from typing import List

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import onnxgrad  # noqa: E402
from onnxgrad import registry  # noqa: E402
from onnxgrad.modelio import write_model  # noqa: E402

WIDTH = 4


def chain_model(n_nodes: int, opset: int = 17) -> onnx.ModelProto:
    """A chain of ``n_nodes // 3`` MatMul/Add/Tanh layers with weights as initializers.

    Falls back to an elementwise ``Mul`` for the weight when no MatMul rule is registered, so the
    benchmark measures the engine rather than the rule coverage of the day.
    """
    mat = "MatMul" if registry.lookup("MatMul", "", opset) is not None else "Mul"
    rng = np.random.default_rng(0)
    nodes, inits = [], []
    h = "x"
    for i in range(n_nodes // 3):
        w_shape = (WIDTH, WIDTH) if mat == "MatMul" else (WIDTH,)
        inits.append(numpy_helper.from_array((rng.standard_normal(w_shape) * 0.5).astype(np.float32), f"W{i}"))
        inits.append(numpy_helper.from_array(np.zeros(WIDTH, np.float32), f"b{i}"))
        nodes.append(helper.make_node(mat, [h, f"W{i}"], [f"m{i}"], name=f"mm{i}"))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"], name=f"add{i}"))
        nodes.append(helper.make_node("Tanh", [f"a{i}"], [f"h{i}"], name=f"tanh{i}"))
        h = f"h{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, WIDTH])],
                              [helper.make_tensor_value_info(h, TensorProto.FLOAT, [2, WIDTH])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def weights(model: onnx.ModelProto) -> List[str]:
    return [t.name for t in model.graph.initializer]


#: the stages of ``onnxgrad.gradients`` timed apart: (label, module, function name) of the call
#: that does each; "assemble" is the rest (seeds, gradient outputs, pruning dead nodes)
STAGES = [("load", "api", "load_model"), ("index", "api", "GraphIndex"), ("walk", "engine", "backprop"),
          ("out check", "api", "check_gradient_model")]


class _StageClock:
    """CPU time spent in each stage of ``onnxgrad.gradients``: the functions of :data:`STAGES`
    are wrapped, in the namespace their caller reads them from, while the clock runs."""

    def __init__(self) -> None:
        self.cpu = {label: 0.0 for label, _, _ in STAGES}
        self._saved: list = []

    def __enter__(self) -> "_StageClock":
        from onnxgrad import api, engine

        for label, where, name in STAGES:
            module = {"api": api, "engine": engine}[where]
            fn = getattr(module, name)
            self._saved.append((module, name, fn))
            setattr(module, name, self._timed(label, fn))
        return self

    def _timed(self, label: str, fn):
        def timed(*args, **kwargs):
            c0 = time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.cpu[label] += time.process_time() - c0
        return timed

    def __exit__(self, *exc) -> None:
        for module, name, fn in self._saved:
            setattr(module, name, fn)


def run(n_nodes: int, folder: str) -> dict:
    model = chain_model(n_nodes)
    xs = weights(model)
    y = model.graph.output[0].name
    with _StageClock() as clock:
        c0, t0 = time.process_time(), time.perf_counter()
        result = onnxgrad.gradients(model, y, xs)
        c1, t1 = time.process_time(), time.perf_counter()
    write_model(result.model, os.path.join(folder, f"chain{n_nodes}.onnx"))
    c2, t2 = time.process_time(), time.perf_counter()
    assert all(n is not None for n in result.names)
    stages = dict(clock.cpu)
    stages["assemble"] = (c1 - c0) - sum(clock.cpu.values())
    stages["write"] = c2 - c1
    return {"nodes": len(model.graph.node), "grad_nodes": len(result.model.graph.node) - len(model.graph.node),
            "gradients": t1 - t0, "write": t2 - t1, "total": t2 - t0, "cpu": c2 - c0, "stages": stages}


def run_cli(n_nodes: int, folder: str) -> dict:
    """``onnxgrad differentiate`` on the saved chain, in this process (no interpreter start-up)."""
    from onnxgrad import cli

    model = chain_model(n_nodes)
    src, dst = os.path.join(folder, f"in{n_nodes}.onnx"), os.path.join(folder, f"out{n_nodes}.onnx")
    onnx.save(model, src)
    c0, t0 = time.process_time(), time.perf_counter()
    try:
        cli.cli.main(args=["differentiate", src, "--xs", "@params", "-o", dst], prog_name="onnxgrad",
                     standalone_mode=False)
    finally:
        c2, t2 = time.process_time(), time.perf_counter()
    grad_nodes = len(onnx.load(dst, load_external_data=False).graph.node) - len(model.graph.node)
    return {"nodes": len(model.graph.node), "grad_nodes": grad_nodes, "gradients": float("nan"),
            "write": float("nan"), "total": t2 - t0, "cpu": c2 - c0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    ap.add_argument("--profile", type=int, metavar="N", help="profile one size with cProfile instead")
    ap.add_argument("--cli", action="store_true", help="time `onnxgrad differentiate` instead of the API")
    args = ap.parse_args()
    measure = run_cli if args.cli else run
    sys.setrecursionlimit(200)  # no step may recurse per node
    with tempfile.TemporaryDirectory() as folder:
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            measure(args.profile, folder)
            prof.disable()
            pstats.Stats(prof).sort_stats("cumulative").print_stats(30)
            return
        rows = [measure(n, folder) for n in args.sizes]
    # CPU time is the figure to compare: wall time also counts other processes on a busy machine
    print(f"{'nodes':>8} {'bwd nodes':>10} {'gradients s':>12} {'write s':>8} {'wall s':>8} {'cpu s':>7} {'ratio':>6}")
    prev = None
    for r in rows:
        ratio = f"{r['cpu'] / prev['cpu']:.1f}x" if prev else ""
        print(f"{r['nodes']:>8} {r['grad_nodes']:>10} {r['gradients']:>12.2f} {r['write']:>8.2f} {r['total']:>8.2f} "
              f"{r['cpu']:>7.2f} {ratio:>6}")
        prev = r
    if all("stages" in r for r in rows):
        labels = list(rows[0]["stages"])
        print(f"\ncpu s per stage\n{'nodes':>8} " + " ".join(f"{label:>10}" for label in labels))
        for r in rows:
            print(f"{r['nodes']:>8} " + " ".join(f"{r['stages'][label]:>10.2f}" for label in labels))
    if len(rows) >= 2:
        last, before = rows[-1], rows[-2]
        growth = last["cpu"] / before["cpu"]
        size = last["nodes"] / before["nodes"]
        verdict = "linear" if growth <= 1.2 * size else "SUPERLINEAR"
        print(f"growth {size:.0f}x nodes -> {growth:.1f}x cpu time ({verdict})")


if __name__ == "__main__":
    main()
