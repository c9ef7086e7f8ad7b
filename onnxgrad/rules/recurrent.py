"""Recurrent layers: LSTM, GRU and RNN.

Backpropagation through time in standard ONNX ops. For each direction the gradient graph holds

1. ``A = X W^T + Wb`` for every step at once (one MatMul),
2. the states entering each step, stacked: the node's own ``Y`` holds every step's ``h`` (shifted
   by one step, the initial state first); LSTM's cell states then take a ``Scan`` of
   ``c_t = f_t c_{t-1} + i_t g_t`` alone, its gates computed for all steps at once beforehand.
   Only a node whose ``Y`` is not an output recomputes the whole recurrence in a ``Scan``,
3. every gate of every step recomputed at once from those states, and from them the coefficients
   of the backward recurrence: how ``dL/dh`` (and ``dL/dc``) arriving at a step reach the
   pre-activations and the states entering it. It is linear in them, so
4. a backward ``Scan`` over the steps in reverse is a few products, one MatMul with ``R`` (two for
   GRU's default candidate) and a stack of the pre-activations' gradients,
5. ``dX = dA W``, ``dW = sum_t dA_t^T X_t``, ``dR`` the same over the states entering the steps,
   the bias and peephole gradients as sums, all outside the loops.

Every stack is in time order; a scan running the other way reads and writes it reversed (one
Gather each). A reverse direction processes the steps ``T-1 .. 0``. ``sequence_lens`` masks each
step: past a batch entry's length the state is carried unchanged and ``Y`` is zero, which is what
runtimes compute for both directions (a reversed sequence starts at its own last step), so the
states entering a sequence's own steps are still ``Y``'s, or the initial state. An entry of length
0 outputs zero ``Y_h``/``Y_c``. Memory grows linearly with the number of steps.

Semantics follow the ONNX operator specification and onnxruntime's kernels where the text leaves
room: ``clip`` bounds each gate's full pre-activation (peephole term included), not the cell state
LSTM's ``h`` reads; ``input_forget`` couples ``f = 1 - i``; ``activation_alpha``/``_beta`` are
consumed in order by the activations that take them, missing ones take onnxruntime's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from ..tensorinfo import TensorInfo

# ---------------------------------------------------------------- activations
def _indicator(b: Emitter, cond: str, like: str) -> str:
    """1 where ``cond`` holds, else 0, in ``like``'s dtype."""
    return b.Cast(cond, to=b.dtype(like))


@dataclass(frozen=True)
class _Act:
    """One activation of the ONNX recurrent-op list with its alpha and beta."""

    name: str
    alpha: float
    beta: float

    def __call__(self, b: Emitter, x: str) -> str:
        return _FORWARD[self.name](b, x, self)

    def derivative(self, b: Emitter, x: str, y: str) -> str:
        """d act(x) / dx, given ``y = act(x)``."""
        return _DERIVATIVE[self.name](b, x, y, self)


def _c(b: Emitter, v: float, like: str) -> str:
    return b.const(v, like=like)


_FORWARD: Dict[str, Callable[[Emitter, str, _Act], str]] = {
    "relu": lambda b, x, a: b.Relu(x),
    "tanh": lambda b, x, a: b.Tanh(x),
    "sigmoid": lambda b, x, a: b.Sigmoid(x),
    "affine": lambda b, x, a: b.Add(b.Mul(_c(b, a.alpha, x), x), _c(b, a.beta, x)),
    "leakyrelu": lambda b, x, a: b.Where(b.Less(x, _c(b, 0, x)), b.Mul(_c(b, a.alpha, x), x), x),
    "thresholdedrelu": lambda b, x, a: b.Mul(x, _indicator(b, b.Greater(x, _c(b, a.alpha, x)), x)),
    "scaledtanh": lambda b, x, a: b.Mul(_c(b, a.alpha, x), b.Tanh(b.Mul(_c(b, a.beta, x), x))),
    "hardsigmoid": lambda b, x, a: b.Max(_c(b, 0, x), b.Min(_c(b, 1, x), b.Add(b.Mul(_c(b, a.alpha, x), x),
                                                                                 _c(b, a.beta, x)))),
    "elu": lambda b, x, a: b.Where(b.Less(x, _c(b, 0, x)), b.Mul(_c(b, a.alpha, x), b.Sub(b.Exp(x), _c(b, 1, x))), x),
    "softsign": lambda b, x, a: b.Div(x, b.Add(_c(b, 1, x), b.Abs(x))),
    # log(1 + e^x) without overflow
    "softplus": lambda b, x, a: b.Add(b.Relu(x), b.Log(b.Add(_c(b, 1, x), b.Exp(b.Neg(b.Abs(x)))))),
}

def _tanh_slope(b: Emitter, x: str) -> str:
    """tanh'(x) = 4 sigmoid(2x) sigmoid(-2x), accurate where tanh saturates: 1 - tanh(x)^2 cancels
    there (float32 rounds tanh(10) to 1 - 6e-8, so 1 - y^2 is 1.2e-7 or 0 where the slope is 8e-9)."""
    return b.Mul(_c(b, 4, x), b.Mul(b.Sigmoid(b.Mul(_c(b, 2, x), x)), b.Sigmoid(b.Mul(_c(b, -2, x), x))))


# Slopes are computed from x where the form from y cancels in saturation (tanh, sigmoid).
_DERIVATIVE: Dict[str, Callable[[Emitter, str, str, _Act], str]] = {
    "relu": lambda b, x, y, a: _indicator(b, b.Greater(x, _c(b, 0, x)), x),
    "tanh": lambda b, x, y, a: _tanh_slope(b, x),
    "sigmoid": lambda b, x, y, a: b.Mul(y, b.Sigmoid(b.Neg(x))),
    "affine": lambda b, x, y, a: b.Expand(_c(b, a.alpha, x), b.Shape(x)),  # a stack, for a scan to slice
    "leakyrelu": lambda b, x, y, a: b.Where(b.Less(x, _c(b, 0, x)), _c(b, a.alpha, x), _c(b, 1, x)),
    "thresholdedrelu": lambda b, x, y, a: _indicator(b, b.Greater(x, _c(b, a.alpha, x)), x),
    "scaledtanh": lambda b, x, y, a: b.Mul(_c(b, a.alpha * a.beta, x), _tanh_slope(b, b.Mul(_c(b, a.beta, x), x))),
    "hardsigmoid": lambda b, x, y, a: b.Mul(_c(b, a.alpha, x), b.Mul(_indicator(b, b.Greater(y, _c(b, 0, x)), x),
                                                                     _indicator(b, b.Less(y, _c(b, 1, x)), x))),
    "elu": lambda b, x, y, a: b.Where(b.Less(x, _c(b, 0, x)), b.Add(y, _c(b, a.alpha, x)), _c(b, 1, x)),
    "softsign": lambda b, x, y, a: b.Reciprocal(b.Pow(b.Add(_c(b, 1, x), b.Abs(x)), _c(b, 2, x))),
    "softplus": lambda b, x, y, a: b.Sigmoid(x),
}

# (takes alpha, takes beta, default alpha, default beta). The defaults are onnxruntime's, so the
# gradient matches the forward values it computes: the ONNX operators' for LeakyRelu, HardSigmoid
# and Elu, 0 for the others (the ThresholdedRelu operator's default would be 1).
ACTIVATION_PARAMS: Dict[str, Tuple[bool, bool, float, float]] = {
    "relu": (False, False, 0.0, 0.0), "tanh": (False, False, 0.0, 0.0), "sigmoid": (False, False, 0.0, 0.0),
    "affine": (True, True, 0.0, 0.0), "leakyrelu": (True, False, 0.01, 0.0),
    "thresholdedrelu": (True, False, 0.0, 0.0), "scaledtanh": (True, True, 0.0, 0.0),
    "hardsigmoid": (True, True, 0.2, 0.5), "elu": (True, False, 1.0, 0.0),
    "softsign": (False, False, 0.0, 0.0), "softplus": (False, False, 0.0, 0.0),
}

DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"], "RNN": ["Tanh"]}
_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def _activations(op: Op, directions: int) -> List[List[_Act]]:
    """The activations of each direction, alpha and beta consumed in order by those that take them."""
    per_dir = len(DEFAULT_ACTIVATIONS[op.op_type])
    names = op.attr("activations") or DEFAULT_ACTIVATIONS[op.op_type] * directions
    if len(names) == per_dir and directions == 2:
        names = names * 2
    alphas, betas = list(op.attr("activation_alpha") or []), list(op.attr("activation_beta") or [])
    acts = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATION_PARAMS:
            raise GradientArgumentError(f"{op.op_type} node {op.name!r}: unknown activation {name!r}")
        takes_a, takes_b, alpha, beta = ACTIVATION_PARAMS[key]
        if takes_a and alphas:
            alpha = float(alphas.pop(0))
        if takes_b and betas:
            beta = float(betas.pop(0))
        acts.append(_Act(key, alpha, beta))
    return [acts[d * per_dir:(d + 1) * per_dir] for d in range(directions)]


# ---------------------------------------------------------------- gates and the cells' forward step
@dataclass(frozen=True)
class _Rec:
    """A block of rows of the recurrent weights R, its transpose and its bias."""

    R: str
    RT: str
    Rb: Optional[str]

    def __call__(self, b: Emitter, h: str) -> str:
        """``h R^T + Rb``, the recurrent half of the block's pre-activations."""
        hr = b.MatMul(h, self.RT)
        return b.Add(hr, self.Rb) if self.Rb else hr


@dataclass
class _Params:
    """What a cell reads from the enclosing scope for one direction (names of outer tensors)."""

    hidden: int
    acts: List[_Act]
    clip: Optional[float]
    rec: _Rec  # every gate's block: R [G*H, H]
    P: Optional[List[str]]  # LSTM peepholes [i, o, f], each [H]
    input_forget: bool = False
    linear_before_reset: bool = False
    #: GRU without linear_before_reset: the update and reset gates' block, and the candidate's
    #: (whose recurrent half reads r * h)
    zr: Optional[_Rec] = None
    cand: Optional[_Rec] = None


@dataclass(frozen=True)
class _Gate:
    """``y = act(clip(z))``."""

    z: str
    clipped: str
    y: str
    act: _Act
    bound: Optional[str]  # the clip, if any

    def slope(self, b: Emitter) -> str:
        """dy/dz: the activation's slope where the clip passes z through, else 0."""
        s = self.act.derivative(b, self.clipped, self.y)
        if self.bound is None:
            return s
        return b.Mul(s, _indicator(b, b.Not(b.Greater(b.Abs(self.z), self.bound)), self.z))


def _gate(b: Emitter, z: str, act: _Act, p: _Params) -> _Gate:
    if p.clip is None:
        return _Gate(z, z, act(b, z), act, None)
    bound = _c(b, p.clip, z)
    clipped = b.Max(b.Neg(bound), b.Min(bound, z))
    return _Gate(z, clipped, act(b, clipped), act, bound)


# The forward formulas serve one step ([B, G*H] tensors, gate ``axis`` 1) and all steps at once
# ([T, B, G*H], axis 2), from the states entering the steps.
@dataclass
class _RNNStep:
    z: _Gate
    h: str


def _rnn_forward(b: Emitter, a: str, h: str, p: _Params) -> _RNNStep:
    """``H = f(a + h R^T + Rb)``."""
    z = _gate(b, b.Add(a, p.rec(b, h)), p.acts[0], p)
    return _RNNStep(z, z.y)


@dataclass
class _GRUStep:
    z: _Gate
    r: _Gate
    cand: _Gate
    hh: Optional[str]  # linear_before_reset: h Rh^T + Rbh
    rh: Optional[str]  # otherwise: r * h
    delta: str  # h - cand
    h: str


def _gru_forward(b: Emitter, a: str, h: str, p: _Params, axis: int) -> _GRUStep:
    """GRU (gates z, r, candidate):  ``H = (1 - z) cand + z h = cand + z (h - cand)``."""
    H = p.hidden
    f, g = p.acts
    az, ar, ah = b.split(a, [H] * 3, axis=axis)
    hh = rh = None
    if p.linear_before_reset:
        hz, hr, hh = b.split(p.rec(b, h), [H] * 3, axis=axis)
    else:
        assert p.zr is not None
        hz, hr = b.split(p.zr(b, h), [H] * 2, axis=axis)
    z = _gate(b, b.Add(az, hz), f, p)
    r = _gate(b, b.Add(ar, hr), f, p)
    if hh is not None:
        pre = b.Add(ah, b.Mul(r.y, hh))
    else:  # the candidate's recurrent half is (r * h) Rh^T + Rbh, not r * (h Rh^T + Rbh)
        assert p.cand is not None
        rh = b.Mul(r.y, h)
        pre = b.Add(ah, p.cand(b, rh))
    cand = _gate(b, pre, g, p)
    delta = b.Sub(h, cand.y)
    return _GRUStep(z, r, cand, hh, rh, delta, b.Add(cand.y, b.Mul(z.y, delta)))


@dataclass
class _LSTMGates:
    """The gates that make an LSTM's cell state ``C = f c + i cand`` (``f = 1 - i`` with input_forget)."""

    i: _Gate
    f: Optional[_Gate]  # None with input_forget
    f_y: str
    cand: _Gate

    def cell_state(self, b: Emitter, c: str) -> str:
        return b.Add(b.Mul(self.f_y, c), b.Mul(self.i.y, self.cand.y))


def _lstm_gates(b: Emitter, zi: str, zf: str, zc: str, c: Optional[str], p: _Params) -> _LSTMGates:
    """i, f and the candidate from their pre-activations; the peepholes Pi, Pf read ``c``."""
    f_act, g_act, _ = p.acts
    Pi, _, Pf = p.P if p.P else (None, None, None)
    i = _gate(b, b.Add(zi, b.Mul(Pi, c)) if Pi else zi, f_act, p)
    if p.input_forget:
        return _LSTMGates(i, None, b.Sub(_c(b, 1, zi), i.y), _gate(b, zc, g_act, p))
    f = _gate(b, b.Add(zf, b.Mul(Pf, c)) if Pf else zf, f_act, p)
    return _LSTMGates(i, f, f.y, _gate(b, zc, g_act, p))


@dataclass
class _LSTMOutput:
    o: _Gate
    hC: str  # h(C)
    h: str


def _lstm_output(b: Emitter, zo: str, C: str, p: _Params) -> _LSTMOutput:
    """``H = o h(C)``, ``o = f(zo + Po C)``."""
    f_act, _, h_act = p.acts
    Po = p.P[1] if p.P else None
    o = _gate(b, b.Add(zo, b.Mul(Po, C)) if Po else zo, f_act, p)
    hC = h_act(b, C)
    return _LSTMOutput(o, hC, b.Mul(o.y, hC))


def _lstm_forward(b: Emitter, a: str, h: str, c: str, p: _Params, axis: int) -> List[str]:
    """LSTM (gates i, o, f, c; peepholes P = [Pi, Po, Pf]): the new h and C."""
    zi, zo, zf, zc = b.split(b.Add(a, p.rec(b, h)), [p.hidden] * 4, axis=axis)
    C = _lstm_gates(b, zi, zf, zc, c, p).cell_state(b, c)
    return [_lstm_output(b, zo, C, p).h, C]


#: one step of each cell: (emitter, a, states entering, params) -> the new states
_ONE_STEP: Dict[str, Callable[[Emitter, str, List[str], _Params], List[str]]] = {
    "RNN": lambda b, a, s, p: [_rnn_forward(b, a, s[0], p).h],
    "GRU": lambda b, a, s, p: [_gru_forward(b, a, s[0], p, axis=1).h],
    "LSTM": lambda b, a, s, p: _lstm_forward(b, a, s[0], s[1], p, axis=1),
}


# ---------------------------------------------------------------- one node, in time-major layout
@dataclass
class _TimeMajor:
    """A recurrent node's tensors in time-major layout, and what every direction shares."""

    kind: str
    hidden: int
    x: str  # [T, B, I]
    y: Optional[str]  # the node's own Y, [T, D, B, H] (None: not an output)
    dY: Optional[str]  # [T, D, B, H]
    d_final: List[Optional[str]]  # gradients of Y_h (and Y_c), [D, B, H] each
    initial: List[Optional[str]]  # initial_h (and initial_c), [D, B, H] each
    backwards: str  # T-1 .. 0: reads a stack against time
    times: Optional[str]  # 0 .. T-1, with sequence_lens or a run-time T
    lens: Optional[str]  # sequence_lens as int64 [B]
    mask: Optional[str]  # [T, B, 1] bool: the step is within its sequence
    nonempty: Optional[str]  # [B, 1]: 1 where a sequence has at least one step
    zero_state: str  # [B, H]


def _within(g: Emitter, times: str, lens: str) -> str:
    """[T, B, 1] bool: ``times[t] < lens[b]``."""
    return g.unsqueeze(g.Less(g.unsqueeze(times, [1]), lens), [2])


def _time_major(g: Emitter, op: Op, hidden: int, dys: Sequence[Optional[str]]) -> _TimeMajor:
    """Transpose a batch-major (layout 1) node's tensors to time-major; step indices and masks."""
    kind = op.op_type
    layout = op.attr("layout", 0)

    def tm(t: Optional[str], perm: List[int]) -> Optional[str]:
        return g.transpose(t, perm) if t and layout else t

    X = op.inputs[0]
    x = tm(X, [1, 0, 2])
    assert x is not None
    n_states = 2 if kind == "LSTM" else 1
    static_t = (g.shape(X) or [None, None])[1 if layout else 0]
    L = op.input(4)
    lens = g.Cast(L, to=TensorProto.INT64) if L else None
    times = None
    if isinstance(static_t, int):
        backwards = g.ints(list(range(static_t - 1, -1, -1)))
        if lens:
            times = g.ints(list(range(static_t)))
    else:  # the indices of T nonzero values: Range needs opset 11
        times = g.reshape(g.NonZero(g.constant_of_shape(g.dims(x, [0]), 1.0, like=x)), [-1])
        backwards = g.Sub(g.Sub(g.dims(x, [0]), g.ints([1])), times)
    batch = g.Gather(g.Shape(x), g.ints([1]), axis=0)
    dy = dys[0]
    return _TimeMajor(
        kind, hidden, x, tm(op.output(0), [1, 2, 0, 3]),
        tm(None if g.is_zero(dy) else dy, [1, 2, 0, 3]),
        [tm(None if g.is_zero(d) else d, [1, 0, 2]) for d in dys[1:1 + n_states]],
        [tm(op.input(5 + k), [1, 0, 2]) for k in range(n_states)], backwards, times, lens,
        _within(g, times, lens) if lens and times else None,
        g.unsqueeze(g.Cast(g.Greater(lens, g.scalar_int(0)), to=g.dtype(X)), [1]) if lens else None,
        g.constant_of_shape(g.Concat(batch, g.ints([hidden]), axis=0), 0.0, like=X))


# ---------------------------------------------------------------- one direction: stacks and scans
@dataclass
class _Direction:
    """One direction's recurrence in the enclosing scope (outer tensor names)."""

    params: _Params
    A: str  # X W^T + Wb, [T, B, G*H]
    h0: str  # [B, H]
    c0: Optional[str]
    s: _TimeMajor
    reverse: bool

    def masked(self, g: Emitter, x: str, fill: float) -> str:
        """``x`` ([T, B, ...]) on the steps of each sequence, ``fill`` past its end."""
        return x if self.s.mask is None else g.Where(self.s.mask, x, _c(g, fill, x))


#: one step of a scan: (emitter, carried values, this step's slice of each stack by key) -> (new
#: carried values, values to stack); none may be a body input (onnxruntime stacks those wrong)
_Step = Callable[[Emitter, List[str], Dict[str, str]], Tuple[List[str], List[str]]]


def _scan(g: Emitter, d: _Direction, carried: List[str], xs: Dict[str, Optional[str]], step: _Step,
          backward: bool) -> Tuple[List[str], List[str]]:
    """A Scan over the steps in processing order, or its reverse with ``backward``, slicing the
    time-order stacks ``xs`` (None ones left out): the final carried values and the stacked
    values (time order). onnx.reference scans forward only, so a scan against time reads and writes
    its stacks reversed."""
    against_time = d.reverse != backward

    def ordered(x: str) -> str:
        return g.Gather(x, d.s.backwards, axis=0) if against_time else x

    stacks = {k: x for k, x in xs.items() if x is not None}
    b = g.nested()
    states = [b.graph_input("carried", TensorInfo(g.dtype(c), None)) for c in carried]
    slices = {k: b.graph_input(k, TensorInfo(g.dtype(x), None)) for k, x in stacks.items()}
    new, stacked = step(b, states, slices)
    body = b.subgraph("step", states + list(slices.values()), new + stacked)
    outs = g.op("Scan", *carried, *[ordered(x) for x in stacks.values()], outputs=len(new) + len(stacked),
                body=body, num_scan_inputs=len(stacks))
    outs = outs if isinstance(outs, list) else [outs]
    return outs[:len(new)], [ordered(y) for y in outs[len(new):]]


def _recur(g: Emitter, d: _Direction, initial: List[str], xs: Dict[str, Optional[str]],
           step: Callable[[Emitter, List[str], Dict[str, str]], List[str]]) -> List[str]:
    """A recurrence run forward from ``initial``: the stacks of the states after each step, as
    ``step`` computes them from the carried states and the step's slices of ``xs``. Past a
    sequence's end its state is carried unchanged (the stacks keep what the step computed)."""
    def body(b: Emitter, states: List[str], x: Dict[str, str]) -> Tuple[List[str], List[str]]:
        new = step(b, states, x)
        if "mask" not in x:  # a value both carried and stacked: onnxruntime loses the carried one
            return new, [b.Identity(n) for n in new]
        return [b.Where(x["mask"], n, s) for n, s in zip(new, states)], new

    return _scan(g, d, initial, {**xs, "mask": d.s.mask}, body, backward=False)[1]


def _entering(g: Emitter, d: _Direction, after: str, initial: str) -> str:
    """The states entering each step from the states ``after`` each step (time-order stacks):
    the step's before it in processing order, ``initial`` at a sequence's first step."""
    first = g.unsqueeze(initial, [0])
    if d.reverse:
        shifted = g.Concat(g.slice(after, [1], [None], [0]), first, axis=0)
    else:
        shifted = g.Concat(first, g.slice(after, [0], [-1], [0]), axis=0)
    s = d.s
    if s.lens is None or s.times is None or s.mask is None:
        return shifted
    # a reversed sequence starts at its own last step; past a sequence's end (where nothing reads
    # the state) the initial state too, rather than Y's zeros
    within = _within(g, g.Add(s.times, g.scalar_int(1)), s.lens) if d.reverse else s.mask
    return g.Where(within, shifted, initial)


def _arriving(b: Emitter, dh: str, x: Dict[str, str]) -> str:
    """The gradient of a step's h: carried from the step after it, plus Y's."""
    return b.Add(dh, x["dY"]) if "dY" in x else dh


def _kept(b: Emitter, x: Dict[str, str], new: str, carried: str) -> str:
    """``new``, where the step is past its sequence's end the ``carried`` gradient, handed on unchanged."""
    return b.Where(x["mask"], new, carried) if "mask" in x else new


def _backprop_scan(g: Emitter, d: _Direction, d_final: List[str], dY: Optional[str],
                   coefficients: Dict[str, str], step: _Step) -> Tuple[List[str], List[str]]:
    """The backward recurrence: a scan over the steps in reverse from the final states' gradients,
    reading Y's gradient, the mask and the per-step ``coefficients``."""
    return _scan(g, d, d_final, {**coefficients, "dY": dY, "mask": d.s.mask}, step, backward=True)


def _weight_grad(g: Emitter, dz: str, h: str) -> str:
    """``sum_t dz_t^T h_t`` over the steps and batch entries ([T, B, K] and [T, B, H] stacks)."""
    return g.gemm(g.Flatten(dz, axis=2), g.Flatten(h, axis=2), trans_a=True)


@dataclass
class _Backprop:
    """The gradients of the initial states ([dh0] or [dh0, dc0]), of R and of the peepholes, and
    the stacks of dA and d(h R^T + Rb) (time order)."""

    d_initial: List[str]
    dR: str
    dP: Optional[str]
    dA: str
    dHR: str


# ---------------------------------------------------------------- each cell's backward pass
# From the states entering every step (Hp, Cp), each cell computes all its gates at once and the
# coefficients K (masked: zero past a sequence's end) that take the gradient dH arriving at a step
# to its pre-activations; the scan then only applies them.
def _rnn_backprop(g: Emitter, d: _Direction, Hp: str, Cp: Optional[str], dY: Optional[str],
                  d_final: List[str]) -> _Backprop:
    """``dz = dH f'(z)``, ``dh = dz R``."""
    p = d.params
    K = d.masked(g, _rnn_forward(g, d.A, Hp, p).z.slope(g), 0.0)

    def step(b: Emitter, carried: List[str], x: Dict[str, str]) -> Tuple[List[str], List[str]]:
        (dh,) = carried
        dz = b.Mul(_arriving(b, dh, x), x["K"])
        return [_kept(b, x, b.MatMul(dz, p.rec.R), dh)], [dz]

    d_initial, (dA,) = _backprop_scan(g, d, d_final, dY, {"K": K}, step)
    return _Backprop(d_initial, _weight_grad(g, dA, Hp), None, dA, dA)


def _gru_backprop(g: Emitter, d: _Direction, Hp: str, Cp: Optional[str], dY: Optional[str],
                  d_final: List[str]) -> _Backprop:
    """``d cand = dH (1 - z)``, ``dz = dH (h - cand)``, ``dh = dH z`` plus the recurrent halves'."""
    p = d.params
    H = p.hidden
    fw = _gru_forward(g, d.A, Hp, p, axis=2)
    Kz = g.Mul(fw.delta, fw.z.slope(g))
    Kh = g.Mul(g.Sub(_c(g, 1, d.A), fw.z.y), fw.cand.slope(g))
    N = d.masked(g, fw.z.y, 1.0)  # past a sequence's end dh = dH: the scan hands it on
    if fw.hh is not None:  # linear_before_reset: d r = d cand * (h Rh^T + Rbh)
        K = d.masked(g, g.Concat(Kz, g.Mul(g.Mul(Kh, fw.hh), fw.r.slope(g)), g.Mul(Kh, fw.r.y), axis=2), 0.0)

        def step(b: Emitter, carried: List[str], x: Dict[str, str]) -> Tuple[List[str], List[str]]:
            (dh,) = carried
            dH = _arriving(b, dh, x)
            dhr = b.Mul(b.Concat(dH, dH, dH, axis=1), x["K"])  # of h R^T + Rb
            return [b.Add(b.MatMul(dhr, p.rec.R), b.Mul(dH, x["N"]))], [dhr, dH if dH != dh else b.Identity(dh)]

        d_initial, (dHR, dHs) = _backprop_scan(g, d, d_final, dY, {"K": K, "N": N}, step)
        dz, dr, _ = g.split(dHR, [H] * 3, axis=2)
        dA = g.Concat(dz, dr, g.Mul(dHs, d.masked(g, Kh, 0.0)), axis=2)
        return _Backprop(d_initial, _weight_grad(g, dHR, Hp), None, dA, dHR)

    # d(r h) = d cand Rh, read by r (dr = d(r h) h) and h (d(r h) r)
    assert p.zr is not None and p.cand is not None and fw.rh is not None
    zr, cand = p.zr, p.cand
    Kzr = d.masked(g, g.Concat(Kz, g.Mul(Hp, fw.r.slope(g)), axis=2), 0.0)

    def step0(b: Emitter, carried: List[str], x: Dict[str, str]) -> Tuple[List[str], List[str]]:
        (dh,) = carried
        dH = _arriving(b, dh, x)
        dcand = b.Mul(dH, x["Kh"])
        drh = b.MatMul(dcand, cand.R)
        dzr = b.Mul(b.Concat(dH, drh, axis=1), x["Kzr"])
        return [b.Add(b.Add(b.MatMul(dzr, zr.R), b.Mul(drh, x["r"])), b.Mul(dH, x["N"]))], [dzr, dcand]

    d_initial, (dzr, dcand) = _backprop_scan(g, d, d_final, dY,
                                             {"Kh": d.masked(g, Kh, 0.0), "Kzr": Kzr, "r": fw.r.y, "N": N}, step0)
    dA = g.Concat(dzr, dcand, axis=2)
    return _Backprop(d_initial, g.Concat(_weight_grad(g, dzr, Hp), _weight_grad(g, dcand, fw.rh), axis=0), None,
                     dA, dA)


def _lstm_cell_states(g: Emitter, d: _Direction, zi: str, zf: str, zc: str) -> Tuple[str, _LSTMGates, str]:
    """(the cell states entering each step, the gates, the new cell states) where Y gave h: a scan
    of ``c_t = f_t c_{t-1} + i_t cand_t`` alone, or with peepholes, which make i and f read c, of
    the gates too."""
    p = d.params
    assert d.c0 is not None
    if p.P:
        after = _recur(g, d, [d.c0], {"zi": zi, "zf": zf, "zc": zc}, lambda b, c, x: [
            _lstm_gates(b, x["zi"], x["zf"], x["zc"], c[0], p).cell_state(b, c[0])])[0]
        Cp = _entering(g, d, after, d.c0)
        gates = _lstm_gates(g, zi, zf, zc, Cp, p)
        return Cp, gates, gates.cell_state(g, Cp)
    gates = _lstm_gates(g, zi, zf, zc, None, p)
    after = _recur(g, d, [d.c0], {"f": gates.f_y, "ig": g.Mul(gates.i.y, gates.cand.y)},
                   lambda b, c, x: [b.Add(b.Mul(x["f"], c[0]), x["ig"])])[0]
    return _entering(g, d, after, d.c0), gates, after


def _lstm_backprop(g: Emitter, d: _Direction, Hp: str, Cp: Optional[str], dY: Optional[str],
                   d_final: List[str]) -> _Backprop:
    """``dC = dH o h'(C) + dC_next (+ dzo Po)``; ``di = dC cand``, ``df = dC c``, ``d cand = dC i``,
    ``do = dH h(C)``; ``dh = [dzi, dzo, dzf, dzc] R``, ``dc = dC f (+ dzi Pi + dzf Pf)``."""
    p = d.params
    H = p.hidden
    zi, zo, zf, zc = g.split(g.Add(d.A, p.rec(g, Hp)), [H] * 4, axis=2)
    if Cp is None:
        Cp, gates, C = _lstm_cell_states(g, d, zi, zf, zc)
    else:
        gates = _lstm_gates(g, zi, zf, zc, Cp, p)
        C = gates.cell_state(g, Cp)
    out = _lstm_output(g, zo, C, p)
    Pi, Po, Pf = p.P if p.P else (None, None, None)
    Ko = g.Mul(out.hC, out.o.slope(g))
    M = g.Mul(out.o.y, p.acts[2].derivative(g, C, out.hC))  # dC / dH
    if Po:
        M = g.Add(M, g.Mul(Ko, Po))
    Ki = g.Mul(g.Sub(gates.cand.y, Cp) if gates.f is None else gates.cand.y, gates.i.slope(g))  # f = 1 - i
    Kf = g.zeros_like(Ki) if gates.f is None else g.Mul(Cp, gates.f.slope(g))
    N = gates.f_y  # dc / dC
    if Pi:
        N = g.Add(N, g.Mul(Ki, Pi))
    if Pf and gates.f is not None:
        N = g.Add(N, g.Mul(Kf, Pf))
    K = d.masked(g, g.Concat(Ki, Ko, Kf, g.Mul(gates.i.y, gates.cand.slope(g)), axis=2), 0.0)

    def step(b: Emitter, carried: List[str], x: Dict[str, str]) -> Tuple[List[str], List[str]]:
        dh, dc = carried
        dH = _arriving(b, dh, x)
        dC = b.Add(b.Mul(dH, x["M"]), dc)
        dz = b.Mul(b.Concat(dC, dH, dC, dC, axis=1), x["K"])
        return [_kept(b, x, b.MatMul(dz, p.rec.R), dh), _kept(b, x, b.Mul(dC, x["N"]), dc)], [dz]

    d_initial, (dA,) = _backprop_scan(g, d, d_final, dY, {"M": M, "K": K, "N": N}, step)
    dP = None
    if p.P:  # sums of dzi c, dzo C, dzf c
        dP = g.reduce_sum(g.Mul(g.slice(dA, [0], [3 * H], [2]), g.Concat(Cp, C, Cp, axis=2)), [0, 1], keepdims=False)
    return _Backprop(d_initial, _weight_grad(g, dA, Hp), dP, dA, dA)


_BACKPROP = {"LSTM": _lstm_backprop, "GRU": _gru_backprop, "RNN": _rnn_backprop}


def _one_direction(g: Emitter, op: Op, s: _TimeMajor, dnum: int, acts: List[_Act]) -> Dict[str, Optional[str]]:
    """The gradients of direction ``dnum``: dX (time-major), dW, dR, dB, dP and the initial states'."""
    W, R, B, P = op.inputs[1], op.inputs[2], op.input(3), op.input(7)
    G, H = _GATES[s.kind], s.hidden
    dd = g.scalar_int(dnum)
    Wd, Rd = g.Gather(W, dd, axis=0), g.Gather(R, dd, axis=0)
    Bd = g.Gather(B, dd, axis=0) if B else None
    Wb = g.slice(Bd, [0], [G * H], [0]) if Bd else None
    Rb = g.slice(Bd, [G * H], [2 * G * H], [0]) if Bd else None

    def rec(lo: int, hi: int) -> _Rec:
        if (lo, hi) == (0, G):
            return _Rec(Rd, g.Transpose(Rd, perm=[1, 0]), Rb)
        Rp = g.slice(Rd, [lo * H], [hi * H], [0])
        return _Rec(Rp, g.Transpose(Rp, perm=[1, 0]), g.slice(Rb, [lo * H], [hi * H], [0]) if Rb else None)

    lbr = bool(op.attr("linear_before_reset", 0))
    gru0 = s.kind == "GRU" and not lbr
    Pd = g.split(g.Gather(P, dd, axis=0), [H] * 3, axis=0) if P else None
    params = _Params(H, acts, op.attr("clip"), rec(0, G), Pd, bool(op.attr("input_forget", 0)), lbr,
                     rec(0, 2) if gru0 else None, rec(2, 3) if gru0 else None)
    A = g.MatMul(s.x, g.Transpose(Wd, perm=[1, 0]))
    if Wb:
        A = g.Add(A, Wb)
    reverse = op.attr("direction", "forward") == "reverse" or dnum == 1
    h0, c0 = [g.Gather(t, dd, axis=0) if t else s.zero_state for t in s.initial] + [None] * (2 - len(s.initial))
    assert h0 is not None
    d = _Direction(params, A, h0, c0, s, reverse)
    if s.y:  # every step's h
        Hp, Cp = _entering(g, d, g.Gather(s.y, dd, axis=1), h0), None
    else:
        after = _recur(g, d, [h0] + ([c0] if c0 else []), {"a": A},
                       lambda b, states, x: _ONE_STEP[s.kind](b, x["a"], states, params))
        Hp = _entering(g, d, after[0], h0)
        Cp = _entering(g, d, after[1], c0) if c0 else None

    def final(df: Optional[str]) -> str:
        if df is None:
            return s.zero_state
        part = g.Gather(df, dd, axis=0)
        # an empty sequence outputs zero final states: nothing flows back from them
        return g.Mul(part, s.nonempty) if s.nonempty else part

    dY = d.masked(g, g.Gather(s.dY, dd, axis=1), 0.0) if s.dY else None  # Y is zero past a sequence's end
    bp = _BACKPROP[s.kind](g, d, Hp, Cp, dY, [final(df) for df in s.d_final])
    dWb = g.reduce_sum(bp.dA, [0, 1], keepdims=False)
    return {
        "dX": g.MatMul(bp.dA, Wd),
        "dW": _weight_grad(g, bp.dA, s.x),
        "dR": bp.dR,
        "dB": g.Concat(dWb, dWb if bp.dHR == bp.dA else g.reduce_sum(bp.dHR, [0, 1], keepdims=False), axis=0),
        "dh0": bp.d_initial[0],
        "dc0": bp.d_initial[1] if len(bp.d_initial) > 1 else None,
        "dP": bp.dP,
    }


# ---------------------------------------------------------------- the rules
def _recurrent(g: Emitter, op: Op, *dys: Optional[str]) -> List[Optional[str]]:
    """Gradients of LSTM/GRU/RNN w.r.t. X, W, R, B, initial_h (and initial_c, P for LSTM)."""
    kind = op.op_type
    r_shape = g.shape(op.inputs[2])
    hidden = op.attr("hidden_size") or (r_shape[-1] if r_shape else None)
    if not isinstance(hidden, int):
        raise GradientArgumentError(f"{kind} node {op.name!r}: hidden_size is unknown (no attribute, "
                                    "R's shape unknown)")
    directions = 2 if op.attr("direction", "forward") == "bidirectional" else 1
    s = _time_major(g, op, hidden, dys)
    per_dir = [_one_direction(g, op, s, dnum, acts) for dnum, acts in enumerate(_activations(op, directions))]

    def stacked(key: str) -> str:  # the directions' gradients side by side, [D, ...]
        parts = [g.unsqueeze(p[key], [0]) for p in per_dir]  # type: ignore[arg-type]
        return parts[0] if len(parts) == 1 else g.Concat(*parts, axis=0)

    def batch_major(t: str) -> str:
        return g.transpose(t, [1, 0, 2]) if op.attr("layout", 0) else t

    dX = per_dir[0]["dX"] if directions == 1 else g.Add(per_dir[0]["dX"], per_dir[1]["dX"])
    grads: List[Optional[str]] = [batch_major(dX), stacked("dW"), stacked("dR"), stacked("dB"), None,  # type: ignore[arg-type]
                                  batch_major(stacked("dh0"))]
    if kind == "LSTM":
        grads += [batch_major(stacked("dc0")), stacked("dP") if op.input(7) else None]
    return [gr if op.input(i) else None for i, gr in enumerate(grads[:len(op.inputs)])]


@register_gradient("LSTM", since=9, inputs=[0, 1, 2, 3, 5, 6, 7])
def lstm(g: Emitter, op: Op, dy: Optional[str], dy_h: Optional[str] = None,
         dy_c: Optional[str] = None) -> List[Optional[str]]:
    """LSTM: backpropagation through time (see the module docstring)."""
    return _recurrent(g, op, dy, dy_h, dy_c)


@register_gradient("GRU", since=9, inputs=[0, 1, 2, 3, 5])
def gru(g: Emitter, op: Op, dy: Optional[str], dy_h: Optional[str] = None) -> List[Optional[str]]:
    """GRU: backpropagation through time (see the module docstring)."""
    return _recurrent(g, op, dy, dy_h)


@register_gradient("RNN", since=9, inputs=[0, 1, 2, 3, 5])
def rnn(g: Emitter, op: Op, dy: Optional[str], dy_h: Optional[str] = None) -> List[Optional[str]]:
    """RNN: backpropagation through time (see the module docstring)."""
    return _recurrent(g, op, dy, dy_h)
