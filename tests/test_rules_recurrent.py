"""Numeric tests of the LSTM, GRU and RNN gradients in onnxgrad/rules/recurrent.py (one table, one checker).

onnxruntime implements these ops in float only and time-major only (layout 0), so the first table
runs in onnxruntime in float32 (every attribute and optional input but layout); the second runs the
same checker with onnx.reference as the runtime: float64, and layout 1, for the attributes
onnx.reference implements (it ignores activations, clip, sequence_lens and input_forget).
"""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest
import rulecheck
from onnx.reference import ReferenceEvaluator
from rulecheck import Case, check_case, params, rand

import onnxgrad
import onnxgrad.checking

T, B, IN, H = 3, 2, 3, 2  # steps, batch, input size, hidden size
GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
DIRECTION = {1: "forward", 2: "bidirectional", -1: "reverse"}
# onnx.reference evaluates the forward op without these attributes and inputs
IGNORED_BY_REFERENCE = ("activations", "clip", "input_forget")


def inputs(op: str, d: int, layout: int, lens: Optional[List[int]], bias: bool, h0: bool, c0: bool, peep: bool,
           seed: int, scale: float = 1.0) -> list:
    g = GATES[op]
    x = scale * (rand(B, T, IN, seed=seed) if layout else rand(T, B, IN, seed=seed))
    state = (B, d, H) if layout else (d, B, H)
    ins: List[Any] = [("X", x), ("W", rand(d, g * H, IN, seed=seed + 1)), ("R", rand(d, g * H, H, seed=seed + 2)),
                      ("B", rand(d, 2 * g * H, seed=seed + 3) if bias else None),
                      ("L", None if lens is None else np.array(lens, np.int32)),
                      ("h0", rand(*state, seed=seed + 4) if h0 else None)]
    if op == "LSTM":
        ins += [("c0", rand(*state, seed=seed + 5) if c0 else None),
                ("P", rand(d, 3 * H, seed=seed + 6) if peep else None)]
    while ins[-1][1] is None:
        ins.pop()
    return ins


def case(id: str, op: str, d: int = 1, layout: int = 0, lens: Optional[List[int]] = None,
         outs: Optional[List[int]] = None,
         opset: int = 22, bias: bool = True, h0: bool = True, c0: bool = True, peep: bool = True, seed: int = 0,
         dtypes=("float32",), symbolic_dims=(), scale: float = 1.0, **attrs: Any) -> Case:
    """One recurrent node with hidden size 2 over 3 steps of a batch of 2 (X times ``scale``)."""
    a: Dict[str, Any] = {"hidden_size": H, "direction": DIRECTION[d], **attrs}
    if layout:
        a["layout"] = 1
    reference = lens is None and not any(k in attrs for k in IGNORED_BY_REFERENCE)
    return Case(f"{op}/{id}", op, inputs(op, abs(d), layout, lens, bias, h0, c0, peep, seed, scale), attrs=a,
                opset=opset,
                n_outputs=3 if op == "LSTM" else 2, outputs_used=outs, dtypes=dtypes, reference=reference,
                constant=["L"] if id.startswith("static-lens") else (), symbolic_dims=symbolic_dims)


ALL_ACTIVATIONS = [("Relu", [], []), ("Tanh", [], []), ("Sigmoid", [], []), ("Affine", [0.7], [0.2]),
                   ("LeakyRelu", [0.1], []), ("ThresholdedRelu", [0.15], []), ("ScaledTanh", [1.3], [0.6]),
                   ("HardSigmoid", [0.3], [0.45]), ("Elu", [0.8], []), ("Softsign", [], []), ("Softplus", [], [])]

CASES = []
for op in ("RNN", "GRU", "LSTM"):
    CASES += [
        case("forward", op),
        case("reverse", op, d=-1),
        case("bidirectional", op, d=2),
        case("no-bias-no-initial-state", op, d=2, bias=False, h0=False, c0=False, peep=False),
        case("lens-forward", op, lens=[2, 3]),
        case("lens-reverse", op, d=-1, lens=[3, 1]),
        case("lens-bidirectional-dynamic-steps", op, d=2, lens=[1, 2], symbolic_dims=["X"]),
        case("static-lens-bidirectional", op, d=2, lens=[2, 3]),
        case("lens-empty-sequence", op, d=2, lens=[0, 2]),
        case("only-Y", op, d=2, outs=[0]),
        case("only-Y_h", op, d=2, outs=[1]),
        case("clip", op, d=2, clip=0.6),
        # gates saturated (pre-activations up to ~100): float32 slopes computed as 1 - y^2 cancel there
        # (RNN's float32 gradient was 21x its tolerance off at scale 60); they come from x instead
        case("saturated", op, d=2, scale=45.0, bias=False, h0=False, c0=False, peep=False),
        case("opset9", op, d=2, opset=9),
    ]

# every activation with its alpha/beta: RNN has one per direction
CASES += [case(f"activation-{n}", "RNN", d=2, activations=[n, "Tanh"], seed=3,
               **({"activation_alpha": a} if a else {}), **({"activation_beta": b} if b else {}))
          for n, a, b in ALL_ACTIVATIONS]
CASES += [
    case("activations-bidirectional", "GRU", d=2, activations=["HardSigmoid", "Softsign", "Sigmoid", "Elu"],
         activation_alpha=[0.25, 0.9], activation_beta=[0.55]),
    case("activations-leaky-scaled", "GRU", activations=["LeakyRelu", "ScaledTanh"], activation_alpha=[0.2, 0.8],
         activation_beta=[1.1]),
    case("linear-before-reset", "GRU", d=2, linear_before_reset=1),
    case("linear-before-reset-lens-clip", "GRU", d=-1, lens=[2, 3], linear_before_reset=1, clip=0.7),
    case("activations-bidirectional", "LSTM", d=2, activations=["HardSigmoid", "Elu", "Softsign",
                                                                "Sigmoid", "Affine", "ScaledTanh"],
         activation_alpha=[0.3, 0.9, 0.8, 1.2], activation_beta=[0.5, 0.1, 0.7]),
    case("activations-relu-softplus", "LSTM", activations=["Sigmoid", "Softplus", "ThresholdedRelu"],
         activation_alpha=[0.05]),
    # alpha/beta left out: onnxruntime's defaults (ThresholdedRelu's is 0, not the operator's 1)
    case("activation-defaults", "RNN", d=2, activations=["LeakyRelu", "ThresholdedRelu"], seed=3),
    case("activation-defaults", "GRU", activations=["HardSigmoid", "Elu"]),
    case("activation-defaults-beta-left-out", "LSTM", activations=["Sigmoid", "Affine", "Tanh"],
         activation_alpha=[0.9]),
    case("initial-h-only-with-peepholes", "LSTM", d=2, c0=False),
    case("input-forget", "LSTM", d=2, input_forget=1),
    case("input-forget-lens-clip", "LSTM", d=-1, lens=[3, 2], input_forget=1, clip=0.5),
    case("input-forget-clip", "LSTM", d=-1, input_forget=1, clip=0.5),
    case("input-forget-lens", "LSTM", d=-1, lens=[3, 2], input_forget=1),
    case("input-forget-clip-nopeep", "LSTM", d=-1, input_forget=1, clip=0.5, peep=False),
    case("clip-lens", "LSTM", d=-1, lens=[3, 2], clip=0.5),
    case("no-peepholes", "LSTM", d=2, peep=False),
    case("only-Y_c", "LSTM", d=2, outs=[2]),
    case("Y_h-and-Y_c", "LSTM", d=-1, outs=[1, 2], lens=[1, 3]),
]

# through onnx.reference: float64, and layout 1 (onnxruntime refuses batch-major recurrent ops)
F64 = ("float64",)
CASES_REFERENCE = []
for op in ("RNN", "GRU", "LSTM"):
    CASES_REFERENCE += [
        case("forward", op, dtypes=F64),
        case("reverse", op, d=-1, dtypes=F64),
        case("bidirectional", op, d=2, dtypes=F64),
        case("layout1-bidirectional", op, d=2, layout=1, dtypes=F64),
        case("layout1-reverse-opset14", op, d=-1, layout=1, opset=14, dtypes=F64),
        case("layout1-no-bias-no-initial-state", op, d=2, layout=1, bias=False, h0=False, c0=False, peep=False,
             dtypes=F64),
        case("dynamic-steps", op, d=2, symbolic_dims=["X"], dtypes=F64),
    ]
CASES_REFERENCE += [case("linear-before-reset", "GRU", d=2, linear_before_reset=1, dtypes=F64),
                    case("layout1-linear-before-reset", "GRU", d=-1, layout=1, linear_before_reset=1, dtypes=F64),
                    case("layout1-only-Y_h", "LSTM", d=2, layout=1, outs=[1], dtypes=F64),
                    case("layout1-only-Y_c", "LSTM", d=2, layout=1, outs=[2], dtypes=F64),
                    case("no-peepholes", "LSTM", d=2, peep=False, dtypes=F64)]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_recurrent_float32(case: Case) -> None:
    check_case(case, "float32")


class _ReferenceSession:
    """onnx.reference behind the part of onnxruntime's InferenceSession the checker uses."""

    def __init__(self, model):
        self._ref = ReferenceEvaluator(model)
        self._model = model

    def run(self, names, feeds):
        return self._ref.run(names, feeds)

    def get_outputs(self):
        return self._model.graph.output

    def get_inputs(self):
        return self._model.graph.input


@pytest.mark.parametrize("case,dtype", params(CASES_REFERENCE))
def test_recurrent_reference(case: Case, dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(onnxgrad.checking, "session", _ReferenceSession)
    monkeypatch.setattr(rulecheck, "session", _ReferenceSession)
    check_case(case, dtype)


def test_no_hidden_size_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    """hidden_size left out (onnxruntime requires it, onnx.reference does not): the rule reads it
    from R's shape. Not in a module-level table: tools/fingerprint.py builds those cases with
    onnxruntime."""
    no_hidden_size = case("no-hidden-size-attribute", "GRU", d=2, dtypes=F64)
    del no_hidden_size.attrs["hidden_size"]
    test_recurrent_reference(no_hidden_size, "float64", monkeypatch)



@pytest.mark.parametrize("without_y", [False, True], ids=["Y", "without-Y"])
@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_layout1_with_sequence_lens_matches_layout0(op: str, without_y: bool) -> None:
    """Layout 1 with sequence_lens, which no runtime here evaluates (onnxruntime refuses layout 1,
    onnx.reference ignores sequence_lens): the gradients of the batch-major node equal those of
    the time-major node (checked numerically above) on the transposed problem. Without Y the
    gradient graphs recompute the recurrence themselves, so onnx.reference runs them correctly;
    with Y they read the states from onnx.reference's Y, computed without the masks, the same
    wrong way in both layouts."""
    build = _build_without_y if without_y else rulecheck.build
    time_major = case("lens-layout0", op, d=2, lens=[1, 3])
    model0, feeds0, xs, ys = build(time_major, "float64")
    to_batch_major = {"X": [1, 0, 2], "h0": [1, 0, 2], "c0": [1, 0, 2]}
    batch_major = Case("lens-layout1", op, [(n, np.transpose(v, to_batch_major[n]) if n in to_batch_major else v)
                                            for n, v in time_major.inputs],
                       attrs={**time_major.attrs, "layout": 1}, n_outputs=time_major.n_outputs)
    model1, feeds1, _, _ = build(batch_major, "float64")
    rng = np.random.default_rng(0)
    seeds0 = {y: rng.standard_normal(v.shape) for y, v in zip(ys, ReferenceEvaluator(model0).run(ys, feeds0))}
    seeds1 = {y: np.transpose(u, [2, 0, 1, 3] if u.ndim == 4 else [1, 0, 2]) for y, u in seeds0.items()}
    grads = []
    for model, feeds, seeds in ((model0, feeds0, seeds0), (model1, feeds1, seeds1)):
        result = onnxgrad.gradients(model, ys, xs, grad_ys=[f"seed/{y}" for y in ys])
        grads.append(ReferenceEvaluator(result.model).run(
            result.names, {**feeds, **{f"seed/{y}": u for y, u in seeds.items()}}))
    for x, g0, g1 in zip(xs, *grads):
        expected = np.transpose(g0, to_batch_major[x]) if x in to_batch_major else g0
        np.testing.assert_allclose(g1, expected, rtol=1e-10, atol=1e-12, err_msg=x)


# ---------------------------------------------------------------- an independent proof in longdouble
def _sech2(z: np.ndarray) -> np.ndarray:
    return 1 / np.cosh(z) ** 2


def _sig(z: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-z))


def _jvp(op: str, f: Dict[str, np.ndarray], t: Dict[str, np.ndarray]) -> np.ndarray:
    """d Y_h along the tangent ``t``, by forward mode in np.longdouble (ONNX defaults: tanh RNN,
    GRU with sigmoid/tanh and linear_before_reset 0, no sequence_lens)."""
    X, W, R = f["X"], f["W"], f["R"]  # noqa: N806
    hidden, dirs = R.shape[-1], W.shape[0]
    g = GATES[op] * hidden
    zero = np.zeros(2 * g, np.longdouble)
    out = []
    for d in range(dirs):
        Bd, dBd = (f["B"][d], t["B"][d]) if "B" in f else (zero, zero)  # noqa: N806
        h = dh = np.zeros((X.shape[1], hidden), np.longdouble)
        for k in (range(X.shape[0] - 1, -1, -1) if d else range(X.shape[0])):
            a = X[k] @ W[d].T + Bd[:g]
            da = t["X"][k] @ W[d].T + X[k] @ t["W"][d].T + dBd[:g]
            if op == "RNN":
                z = a + h @ R[d].T + Bd[g:]
                dz = da + dh @ R[d].T + h @ t["R"][d].T + dBd[g:]
                h, dh = np.tanh(z), _sech2(z) * dz
                continue

            def part(i: int, m: np.ndarray) -> np.ndarray:
                return m[..., i * hidden:(i + 1) * hidden]

            Rd, dRd, Rb, dRb = R[d], t["R"][d], Bd[g:], dBd[g:]  # noqa: N806
            zz = part(0, a) + h @ part(0, Rd.T) + part(0, Rb)
            zr = part(1, a) + h @ part(1, Rd.T) + part(1, Rb)
            dzz = part(0, da) + dh @ part(0, Rd.T) + h @ part(0, dRd.T) + part(0, dRb)
            dzr = part(1, da) + dh @ part(1, Rd.T) + h @ part(1, dRd.T) + part(1, dRb)
            z, r = _sig(zz), _sig(zr)
            dz, dr = _sig(zz) * _sig(-zz) * dzz, _sig(zr) * _sig(-zr) * dzr
            zc = part(2, a) + (r * h) @ part(2, Rd.T) + part(2, Rb)
            dzc = part(2, da) + (dr * h + r * dh) @ part(2, Rd.T) + (r * h) @ part(2, dRd.T) + part(2, dRb)
            c, dc = np.tanh(zc), _sech2(zc) * dzc
            h, dh = (1 - z) * c + z * h, -dz * c + (1 - z) * dc + dz * h + z * dh
        out.append(dh)
    return np.stack(out).reshape(-1)


@pytest.mark.parametrize("name", ["test_rnn_seq_length", "test_simple_rnn_bidirectional", "test_gru_seq_length"])
def test_saturated_corpus_jacobians_against_longdouble(name: str) -> None:
    """ONNX's corpus cases whose gates saturate (inputs up to 18): every entry of onnxgrad's
    float64 Jacobian of Y_h (one-hot seeds, onnx.reference with the judge's kernels) against a
    forward-mode Jacobian in np.longdouble from the ONNX equations (slopes as sech^2 and
    sigmoid(x) sigmoid(-x), no onnxgrad code). Entries range from 1 to 1e-100; they agree to a
    few ulps of the O(1) intermediate values (the finite-difference judge cannot resolve the
    tiny ones: tests/corpus.py, test_gru_seq_length)."""
    import corpus

    from onnxgrad.checking import reference_kernels, to_float64

    entry = next(e for e in corpus.entries() if e.name == name)
    model = to_float64(entry.load())
    op = model.graph.node[0].op_type
    feeds = {k: np.asarray(v, np.float64) for k, v in entry.feeds.items()}
    f = {k: v.astype(np.longdouble) for k, v in feeds.items()}
    y_shape = (f["W"].shape[0], f["X"].shape[1], f["R"].shape[-1])  # Y_h: [directions, batch, hidden]
    n_y = int(np.prod(y_shape))
    result = onnxgrad.gradients(model, ["Y_h"], entry.xs, grad_ys=["seed"])
    ref = ReferenceEvaluator(result.model, new_ops=reference_kernels(22))
    rows = [ref.run(result.names, {**feeds, "seed": np.eye(n_y)[i].reshape(y_shape)}) for i in range(n_y)]
    for k, x in enumerate(entry.xs):
        ours = np.stack([np.asarray(r[k]).reshape(-1) for r in rows])
        exact = np.zeros(ours.shape, np.longdouble)
        for j in range(f[x].size):
            tangent = {n: np.zeros_like(v) for n, v in f.items()}
            tangent[x].reshape(-1)[j] = 1
            exact[:, j] = _jvp(op, f, tangent)
        error = float(np.max(np.abs(ours - exact)))
        assert error <= 64 * np.finfo(np.float64).eps, (x, error)


# Nodes per step of each scan a bidirectional node's gradient runs per direction, in the order
# emitted: LSTM's cell-state recurrence (h comes from Y), then the backward recurrence. The old
# graphs recomputed the recurrence in a forward Loop and every gate again in the backward Loop
# (22-93 nodes per step).
SCAN_STEPS = [
    ("RNN", {}, [3]),
    ("RNN", {"lens": [2, 3]}, [4]),
    ("GRU", {"linear_before_reset": 1}, [6]),
    ("GRU", {}, [10]),
    ("GRU", {"lens": [2, 3]}, [10]),
    ("LSTM", {"peep": False}, [3, 7]),
    ("LSTM", {"peep": False, "lens": [2, 3]}, [3, 9]),
    ("LSTM", {}, [11, 7]),  # peepholes: the cell-state recurrence computes i and f too
]


def _scan_steps(op: str, attrs: Dict[str, Any], without_y: bool = False) -> List[int]:
    model, _, xs, ys = rulecheck.build(case("scans", op, d=2, **attrs), "float32")
    if without_y:
        model, ys = _without_y(model, ys)
    nodes = onnxgrad.gradients(model, ys, xs).model.graph.node
    assert not [n for n in nodes if n.op_type == "Loop"]
    return [len(a.g.node) for n in nodes if n.op_type == "Scan" for a in n.attribute if a.name == "body"]


@pytest.mark.parametrize("op,attrs,steps", SCAN_STEPS, ids=[f"{o}-{a}" for o, a, _ in SCAN_STEPS])
def test_states_come_from_y(op: str, attrs: Dict[str, Any], steps: List[int]) -> None:
    """The states entering each step come from the node's own Y (with sequence_lens too: Y is zero
    only past a sequence's end, where no state is read), LSTM's cell states from a scan of
    ``c_t = f_t c_{t-1} + i_t g_t``; every gate is computed for all steps at once outside the
    scans, and the backward scan only applies the coefficients they give."""
    found = _scan_steps(op, attrs)
    assert len(found) == 2 * len(steps)
    assert all(n <= bound for n, bound in zip(found, steps * 2)), found


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_without_y_the_scan_recomputes_the_states(op: str) -> None:
    """A node that does not output Y: one scan per direction recomputes the recurrence (for LSTM
    h and c together), then the same backward scan."""
    backward = dict((o, s[-1]) for o, a, s in SCAN_STEPS if not a)
    found = _scan_steps(op, {}, without_y=True)
    assert len(found) == 4
    assert found[1] <= backward[op] and found[3] <= backward[op], found


def _without_y(model: Any, ys: List[str]) -> Tuple[Any, List[str]]:
    """The model with its recurrent node's Y left out (output ""): nothing holds the states."""
    model.graph.node[0].output[0] = ""
    kept = [o for o in model.graph.output if o.name != "y0"]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model, [y for y in ys if y != "y0"]


_BUILD = rulecheck.build


def _build_without_y(c: Case, dtype: str) -> tuple:
    model, feeds, xs, ys = _BUILD(c, dtype)
    model, ys = _without_y(model, ys)
    return model, feeds, xs, ys


CASES_WITHOUT_Y = [c for c in CASES if c.id.split("/")[1] in (
    "forward", "reverse", "lens-reverse", "lens-bidirectional-dynamic-steps", "lens-empty-sequence", "clip",
    "linear-before-reset-lens-clip", "input-forget-lens-clip", "no-peepholes", "Y_h-and-Y_c")]


@pytest.mark.parametrize("case", CASES_WITHOUT_Y, ids=str)
def test_recurrent_without_y(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table's cases that cover the recomputed recurrence, on a node that does not output Y."""
    monkeypatch.setattr(rulecheck, "build", _build_without_y)
    check_case(case, "float32")


@pytest.mark.parametrize("case", [c for c in CASES_REFERENCE if c.id.split("/")[1] in (
    "layout1-bidirectional", "dynamic-steps", "layout1-reverse-opset14")], ids=str)
def test_recurrent_reference_without_y(case: Case, monkeypatch: pytest.MonkeyPatch) -> None:
    """Float64, layout 1 and a dynamic number of steps through onnx.reference, on a node that does
    not output Y."""
    monkeypatch.setattr(rulecheck, "build", _build_without_y)
    test_recurrent_reference(case, "float64", monkeypatch)
