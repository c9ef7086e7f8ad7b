"""A seeded mutator over real models, run through the API and the command line.

Seeds: the example models in ``models/``, the PyTorch exports in ``tests/data/torch`` and a few
light model-zoo graphs shipped with the onnx package. Mutations: flipped bytes, truncation,
removed / duplicated / swapped nodes, renamed tensors, wrong dtypes and wrong ranks. For each
case the only outcomes allowed are

- a gradient model that passes ``onnx.checker.check_model(full_check=True)``, or
- an :class:`onnxgrad.errors.OnnxGradError` subclass from the API, and from
  ``onnxgrad differentiate`` one ``onnxgrad: error:`` line, that class's exit code, no traceback
  and no output file.

Anything else (another exception, exit code 1 "internal error", a traceback, an invalid output)
fails the test with the seed and the mutation, so the case can be replayed.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto

import onnxgrad
from onnxgrad.cli import cli
from onnxgrad.errors import OnnxGradError
from onnxgrad.graph import FLOAT_TYPES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
CASES_PER_SEED = 20


@dataclass
class Seed:
    path: str
    ys: List[str]
    xs: List[str]


def _seed(path: str) -> Seed:
    """ys: the first float graph output; xs: float graph inputs, float initializers, Constant and
    ConstantOfShape outputs (the light zoo models make their weights that way)."""
    m = onnx.load(path, load_external_data=False)
    inits = {t.name: t for t in m.graph.initializer}
    ys = [o.name for o in m.graph.output if o.type.tensor_type.elem_type in FLOAT_TYPES]
    xs = [i.name for i in m.graph.input if i.name not in inits and i.type.tensor_type.elem_type in FLOAT_TYPES]
    xs += [t.name for t in m.graph.initializer if t.data_type in FLOAT_TYPES]
    xs += [n.output[0] for n in m.graph.node if n.op_type in ("Constant", "ConstantOfShape")]
    assert ys and xs, path
    return Seed(path, ys[:1], xs[:6])


SEEDS = (
    [os.path.join(ROOT, "models", f) for f in ("cost_ws_bs.onnx", "linear_regression.onnx", "partial_derivatives.onnx")]
    + [os.path.join(ROOT, "tests", "data", "torch", f"{m}.onnx") for m in ("mlp_ce", "resnet_cnn", "gpt_block")]
    + [os.path.join(LIGHT, f"light_{m}.onnx") for m in ("squeezenet", "bvlc_alexnet", "zfnet512", "vgg19")]
)


# ------------------------------------------------------------------------------ the mutations
# Each takes (model, serialized bytes, rng) and returns the mutated bytes and a description.
Mutation = Callable[[onnx.ModelProto, bytes, random.Random], Tuple[bytes, str]]


def flip_bytes(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    b = bytearray(data)
    spots = [rng.randrange(len(b)) for _ in range(rng.randint(1, 8))]
    for i in spots:
        b[i] ^= 1 << rng.randrange(8)
    return bytes(b), f"flip bytes at {spots}"


def truncate(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    n = rng.randrange(len(data))
    return data[:n], f"truncate to {n} of {len(data)} bytes"


def remove_node(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    i = rng.randrange(len(m.graph.node))
    desc = f"remove node {i} ({m.graph.node[i].op_type})"
    del m.graph.node[i]
    return m.SerializeToString(), desc


def duplicate_node(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    i = rng.randrange(len(m.graph.node))
    m.graph.node.insert(rng.randrange(len(m.graph.node) + 1), m.graph.node[i])
    return m.SerializeToString(), f"duplicate node {i} ({m.graph.node[i].op_type})"


def swap_nodes(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    i, j = rng.randrange(len(m.graph.node)), rng.randrange(len(m.graph.node))
    a, b = onnx.NodeProto(), onnx.NodeProto()
    a.CopyFrom(m.graph.node[i])
    b.CopyFrom(m.graph.node[j])
    m.graph.node[i].CopyFrom(b)
    m.graph.node[j].CopyFrom(a)
    return m.SerializeToString(), f"swap nodes {i} and {j}"


def rename_tensor(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    node = m.graph.node[rng.randrange(len(m.graph.node))]
    names = [n for n in list(node.input) + list(node.output) if n]
    existing = [n for nd in m.graph.node for n in nd.output] + [i.name for i in m.graph.input]
    new = rng.choice([f"renamed_{rng.randrange(1000)}", rng.choice(existing)])
    if not names:
        return m.SerializeToString(), "rename nothing"
    old = rng.choice(names)
    for field in (node.input, node.output):
        for k, n in enumerate(field):
            if n == old:
                field[k] = new
    return m.SerializeToString(), f"rename {old!r} to {new!r} in node {node.name or node.op_type}"


_DTYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32,
           TensorProto.BOOL, TensorProto.STRING, TensorProto.UINT8, 0, 99]


def wrong_dtype(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    dtype = rng.choice(_DTYPES)
    targets = ([("input", vi) for vi in m.graph.input] + [("output", vi) for vi in m.graph.output]
               + [("initializer", t) for t in m.graph.initializer]
               + [("Cast", n) for n in m.graph.node if n.op_type == "Cast"])
    kind, t = rng.choice(targets)
    if kind == "initializer":
        t.data_type = dtype
    elif kind == "Cast":
        next(a for a in t.attribute if a.name == "to").i = dtype
    else:
        t.type.tensor_type.elem_type = dtype
    return m.SerializeToString(), f"{kind} {getattr(t, 'name', '')!r} dtype -> {dtype}"


def wrong_rank(m: onnx.ModelProto, data: bytes, rng: random.Random) -> Tuple[bytes, str]:
    targets = ([("input", vi) for vi in m.graph.input] + [("output", vi) for vi in m.graph.output]
               + [("initializer", t) for t in m.graph.initializer])
    kind, t = rng.choice(targets)
    dims = t.dims if kind == "initializer" else t.type.tensor_type.shape.dim
    if len(dims) and rng.random() < 0.5:
        del dims[rng.randrange(len(dims))]
        what = "drop a dim"
    elif kind == "initializer":
        dims.append(rng.choice([1, 2, 3]))
        what = "add a dim"
    else:
        dims.add().dim_value = rng.choice([1, 2, 3])
        what = "add a dim"
    return m.SerializeToString(), f"{kind} {t.name!r}: {what}"


MUTATIONS: List[Mutation] = [flip_bytes, truncate, remove_node, duplicate_node, swap_nodes, rename_tensor,
                             wrong_dtype, wrong_rank]


# ------------------------------------------------------------------------------ the oracle
def _runner() -> CliRunner:
    import inspect

    return CliRunner(mix_stderr=False) if "mix_stderr" in inspect.signature(CliRunner.__init__).parameters \
        else CliRunner()


def _api_outcome(path: str, seed: Seed) -> Optional[type]:
    """None on success (after checking the output), else the OnnxGradError class raised."""
    try:
        result = onnxgrad.gradients(path, seed.ys, seed.xs)
    except OnnxGradError as e:
        assert "\n" not in str(e), str(e)
        return type(e)
    onnx.checker.check_model(result.model, full_check=True)
    return None


def _cli_outcome(path: str, seed: Seed, out: str) -> int:
    args = ["differentiate", path, "--xs", ",".join(seed.xs), "-o", out]
    if seed.ys:
        args += ["--ys", ",".join(seed.ys)]
    r = _runner().invoke(cli, args, catch_exceptions=False)
    if r.exit_code == 0:
        onnx.checker.check_model(onnx.load(out), full_check=True)
        return 0
    lines = r.stderr.strip().splitlines()
    assert r.exit_code in (2, 3, 4, 5, 6), r.stderr
    assert len(lines) == 1 and lines[0].startswith("onnxgrad: error: "), r.stderr
    assert "Traceback" not in r.stderr and not os.path.exists(out), r.stderr
    return r.exit_code


@pytest.mark.parametrize("seed_path", SEEDS, ids=[os.path.basename(p)[:-5] for p in SEEDS])
def test_fuzz(seed_path: str, tmp_path):
    seed = _seed(seed_path)
    original = onnx.load(seed_path, load_external_data=False)
    rng = random.Random(os.path.basename(seed_path))  # str seeds hash deterministically (SHA-512)
    for case in range(CASES_PER_SEED):
        mutate = MUTATIONS[case % len(MUTATIONS)]
        m = onnx.ModelProto()
        m.CopyFrom(original)
        data, desc = mutate(m, original.SerializeToString(), rng)
        path = str(tmp_path / f"case{case}.onnx")
        with open(path, "wb") as f:
            f.write(data)
        out = str(tmp_path / f"case{case}.grad.onnx")
        where = f"{os.path.basename(seed_path)} case {case}: {desc}"
        try:
            api = _api_outcome(path, seed)
            code = _cli_outcome(path, seed, out)
        except AssertionError as e:
            raise AssertionError(f"{where}: {e}") from None
        except Exception as e:  # noqa: BLE001  (any other exception is the bug this test hunts)
            raise AssertionError(f"{where}: {type(e).__name__}: {e}") from e
        assert code == (0 if api is None else api.exit_code), f"{where}: API {api}, CLI exit {code}"
