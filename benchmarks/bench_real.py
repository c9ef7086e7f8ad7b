"""Run time of the gradient models of the real exported models (``tests/data/real``), and where it goes.

    python benchmarks/bench_real.py                   # every exported model, 7 rounds, prints the table
    python benchmarks/bench_real.py --models torch_gru_dynamo tf_scan --rounds 11
    python benchmarks/bench_real.py --write-readme    # the table into benchmarks/README.md

The models are the ones ``tests/test_real_models.py`` checks against the frameworks' float64
gradients (torch both exporters, torchvision, transformers, TensorFlow + tf2onnx: recurrent
layers, If/Loop/Scan, sequences, model-local functions, run-time shapes), with the inputs stored
beside them. The gradient model is ``onnxgrad.gradients(model, output, xs)`` with the same xs as
that test (every compared tensor and every initializer the exporter made itself). Timing as in
``bench_models.py`` (same sessions and interleaved rounds: onnxruntime CPU, 2 intra-op threads,
spinning off, CPU-time medians); then one onnxruntime profile of the gradient model per model
names the op types that take the most kernel time, with their share of the FLOPs (nodes inside
Loop/Scan/If bodies included). These models are small (batch 1-4, short sequences), so per-node
cost weighs more than on the networks of ``bench_models.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from typing import Dict, List, Optional, Tuple

import numpy as np
import onnx

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)
DATA = os.path.join(ROOT, "tests", "data", "real")

from bench_models import machine, profile, time_model  # noqa: E402

MARK_BEGIN, MARK_END = "<!-- bench_real table: begin -->", "<!-- bench_real table: end -->"


def exported() -> Dict[str, dict]:
    """The manifest entries of the real models that were exported (the others record why not)."""
    with open(os.path.join(DATA, "manifest.json")) as f:
        manifest = json.load(f)
    return {m: rec for m, rec in sorted(manifest.items()) if rec["status"] == "exported"}


def build(mid: str, rec: dict, out: str) -> int:
    """Writes ``mid``.fwd.onnx, .grad.onnx and .npz (the stored inputs) into ``out``; returns the
    number of nodes the gradient adds (subgraph nodes included). ``rec``: its manifest entry."""
    import onnxgrad

    model = onnx.load(os.path.join(DATA, mid + ".onnx"))
    ref = np.load(os.path.join(DATA, mid + ".npz"))
    xs = sorted(k[len("grad/"):] for k in ref.files if k.startswith("grad/")) + sorted(rec["unmapped"])
    result = onnxgrad.gradients(model, rec.get("output", "loss"), xs)
    onnx.save(model, os.path.join(out, f"{mid}.fwd.onnx"))
    onnx.save(result.model, os.path.join(out, f"{mid}.grad.onnx"))
    feed = {k[len("input/"):]: ref[k] for k in ref.files if k.startswith("input/")}
    np.savez(os.path.join(out, f"{mid}.npz"), **feed)
    return _count(result.model.graph) - _count(model.graph)


def _count(graph: onnx.GraphProto) -> int:
    """Nodes of ``graph`` and of every subgraph in it, without recursion."""
    total, stack = 0, [graph]
    while stack:
        g = stack.pop()
        total += len(g.node)
        for node in g.node:
            for a in node.attribute:
                stack.extend([a.g] if a.type == onnx.AttributeProto.GRAPH else list(a.graphs))
    return total


#: onnxruntime times these including their bodies, whose nodes it also times one by one
CONTAINERS = ("Loop", "Scan", "If")


def _body_profile(mid: str, out: str) -> List[Tuple[str, float, float]]:
    """:func:`bench_models.profile` without the control-flow nodes themselves (their time is that
    of the body nodes, listed on their own), shares renormalized over the rest."""
    rows = [r for r in profile(mid, out) if r[0] not in CONTAINERS]
    total_t, total_f = sum(r[1] for r in rows) or 1.0, sum(r[2] for r in rows) or 1.0
    return [(op, t / total_t, f / total_f) for op, t, f in rows]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", help="model ids from tests/data/real/manifest.json (default: all exported)")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--top", type=int, default=3, help="op types listed per model from the profile")
    p.add_argument("--write-readme", action="store_true", help="write the table into benchmarks/README.md")
    args = p.parse_args(argv)
    manifest = exported()
    models = args.models or list(manifest)
    unknown = sorted(set(models) - set(manifest))
    if unknown:
        p.error(f"not an exported real model: {', '.join(unknown)}")
    out = tempfile.mkdtemp(prefix="bench_real_")
    header = ("| model | forward ms | fwd+bwd ms | ratio | backward nodes | costliest op types "
              "(share of kernel time / of FLOPs) |\n|---|---|---|---|---|---|")
    rows, ratios = [], []
    for i, mid in enumerate(models, 1):
        added = build(mid, manifest[mid], out)
        times = time_model(mid, {"onnxgrad": out}, args.rounds, torch=False)
        fwd, grad = float(np.median(times["forward"])), float(np.median(times["onnxgrad"]))
        top = ", ".join(f"{op} {100 * t:.0f}/{100 * f:.0f} %" for op, t, f in _body_profile(mid, out)[:args.top])
        row = f"| {mid} | {1e3 * fwd:.3g} | {1e3 * grad:.3g} | {grad / fwd:.2f}x | {added} | {top} |"
        rows.append(row)
        ratios.append(grad / fwd)
        print(f"[{i}/{len(models)}] {row}", flush=True)
    note = (f"{machine()}\nMedians of {args.rounds} interleaved rounds, CPU time (both intra-op threads); "
            f"ratios {min(ratios):.2f}x - {max(ratios):.2f}x, median {float(np.median(ratios)):.2f}x.")
    table = "\n".join([header] + rows)
    print("\n" + table + "\n\n" + note)
    if args.write_readme:
        path = os.path.join(HERE, "README.md")
        with open(path) as f:
            text = f.read()
        begin, end = text.index(MARK_BEGIN) + len(MARK_BEGIN), text.index(MARK_END)
        with open(path, "w") as f:
            f.write(text[:begin] + "\n" + table + "\n\n" + note + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
