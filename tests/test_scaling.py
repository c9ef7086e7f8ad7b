"""A 100k-node graph differentiates with a recursion limit of 200: no step recurses per node.

The work runs in a fresh process whose limit is set after the imports, so pytest's own stack
does not count. No timing is asserted here; ``benchmarks/bench_scaling.py`` measures it.
"""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = r"""
import os, sys, tempfile
import onnx
from onnx import TensorProto, helper, numpy_helper
import numpy as np
import onnxgrad
from onnxgrad.errors import InvalidModelError
from onnxgrad.modelio import write_model

N = 100_000
# a chain of Neg nodes with a Tanh every 10 and a Mul by a weight every 100 (a cheap backward pass)
nodes, inits, h = [], [], "x"
for i in range(N):
    if i % 100 == 0:
        inits.append(numpy_helper.from_array(np.full(4, 0.9, np.float32), f"w{i}"))
        nodes.append(helper.make_node("Mul", [h, f"w{i}"], [f"h{i}"]))
    else:
        nodes.append(helper.make_node("Tanh" if i % 10 == 0 else "Neg", [h], [f"h{i}"]))
    h = f"h{i}"
graph = helper.make_graph(nodes, "deep", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info(h, TensorProto.FLOAT, [2, 4])], inits)
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
xs = ["x"] + [t.name for t in inits]

sys.setrecursionlimit(200)
result = onnxgrad.gradients(model, h, xs)
assert all(n is not None for n in result.names), result.names
with tempfile.TemporaryDirectory() as d:
    write_model(result.model, os.path.join(d, "g.onnx"))
    assert os.path.getsize(os.path.join(d, "g.onnx")) > 0

# the validation walks are iterative too: a cycle closing over the whole chain, a dangling input
model.graph.node[0].input[0] = h
try:
    onnxgrad.gradients(model, h, xs)
    raise SystemExit("cycle not detected")
except InvalidModelError as e:
    assert "cycle" in str(e), e
model.graph.node[0].input[0] = "nobody"
try:
    onnxgrad.gradients(model, h, xs)
    raise SystemExit("dangling input not detected")
except InvalidModelError as e:
    assert "dangling" in str(e), e
print("OK", len(model.graph.node), len(result.model.graph.node))
"""


def test_100k_nodes_without_recursion():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.startswith("OK 100000 "), r.stdout
