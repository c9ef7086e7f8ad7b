"""Recurrent layers: LSTM, GRU and RNN.

Backpropagation through time in standard ONNX ops. For each direction the gradient graph holds

1. ``A = X W^T + Wb`` for every step at once (one MatMul),
2. a forward ``Loop`` that recomputes the recurrence and stacks the state *entering* each step
   (the op outputs neither the cell states nor the states of steps past a sequence's end); GRU
   and RNN read those states from the node's own ``Y`` instead when it has them all,
3. a backward ``Loop`` over the steps in reverse: it recomputes the step's gates from the stored
   state, backpropagates through the cell, carries ``dL/dh`` (and ``dL/dc``) to the step before and
   accumulates the gradients of ``R`` and the peepholes; it stacks ``dL/dA`` and ``dL/d(h R^T+Rb)``,
4. ``dX = dA W``, ``dW = sum_t dA_t^T X_t`` and the bias gradients as sums, outside the loops.

A reverse direction runs the same recurrence over the steps ``T-1 .. 0``. ``sequence_lens`` masks
each step: past a batch entry's length the state is carried unchanged and ``Y`` is zero, which is
what runtimes compute for both directions (a reversed sequence starts at its own last step). An
entry of length 0 outputs zero ``Y_h``/``Y_c``. Memory grows linearly with the number of steps.

Semantics follow the ONNX operator specification and onnxruntime's kernels where the text leaves
room: ``clip`` bounds each gate's full pre-activation (peephole term included), not the cell state
LSTM's ``h`` reads; ``input_forget`` couples ``f = 1 - i``; ``activation_alpha``/``_beta`` are
consumed in order by the activations that take them, missing ones take onnxruntime's defaults.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import AbstractSet, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from onnx import GraphProto, TensorProto, ValueInfoProto, helper

from ..emitter import Emitter, Op
from ..tensorinfo import TensorInfo
from ..errors import GradientArgumentError
from ..registry import register_gradient

# ---------------------------------------------------------------- nested graphs
# The helpers of this section build Loop bodies with the emitter's nested emitter (Emitter.nested);
# sequence.py uses them too.


def body_input(b: Emitter, hint: str, elem_type: int, shape: Optional[list] = None) -> str:
    """A fresh name for an input of the body ``b`` emits, typed so formulas can use it."""
    return b.graph_input(hint, TensorInfo(elem_type, None if shape is None else tuple(shape)))


def _scan_output(b: Emitter, x: str) -> str:
    """``x`` flattened, as a Loop scan output: onnx.reference stacks scan outputs with
    ``np.vstack`` (joining 2-D ones along their first axis instead of stacking them), 1-D ones
    stack the same everywhere."""
    return b.Reshape(x, b.ints([-1]))


def _stacked(g: Emitter, x: str, tail: List[Union[int, str]]) -> str:
    """A Loop's stack of ``_scan_output`` rows reshaped to [steps, *tail] (int dims or 1-D int64 tensors)."""
    parts = [g.ints([-1])] + [g.ints([d]) if isinstance(d, int) else d for d in tail]
    return g.Reshape(x, g.Concat(*parts, axis=0))


def body_graph(b: Emitter, name: str, inputs: Sequence[Tuple[str, int, Optional[list]]], outputs: Sequence[str],
               sequences: AbstractSet[str] = frozenset()) -> GraphProto:
    """The GraphProto of the nodes ``b`` emitted: ``inputs`` as (name, element type, shape or None);
    the inputs and outputs named in ``sequences`` are sequences of that element type."""
    def typed(n: str, t: int, s: Optional[list]) -> ValueInfoProto:
        if n in sequences:
            return helper.make_tensor_sequence_value_info(n, t, s)
        return helper.make_tensor_value_info(n, t, s)

    return helper.make_graph(b.nodes, name, [typed(n, t, s) for n, t, s in inputs],
                             [typed(o, b.dtype(o), None) for o in outputs])


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
    "affine": lambda b, x, y, a: _c(b, a.alpha, x),
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


# ---------------------------------------------------------------- one step of each cell
@dataclass
class _Params:
    """What a cell reads from the enclosing scope for one direction (names of outer tensors)."""

    hidden: int
    acts: List[_Act]
    clip: Optional[float]
    R: str  # [G*H, H]
    RT: str  # R^T
    Rb: Optional[str]  # [G*H]
    P: Optional[List[str]]  # LSTM peepholes [i, o, f], each [H]
    input_forget: bool = False
    linear_before_reset: bool = False


def _clipped(b: Emitter, z: str, p: _Params) -> Tuple[str, Optional[str]]:
    """(clip(z), 1 where clip passes z through) or (z, None) without clip."""
    if p.clip is None:
        return z, None
    bound = _c(b, p.clip, z)
    inside = _indicator(b, b.Not(b.Greater(b.Abs(z), bound)), z)
    return b.Max(b.Neg(bound), b.Min(bound, z)), inside


def _through_clip(b: Emitter, dz: str, inside: Optional[str]) -> str:
    return dz if inside is None else b.Mul(dz, inside)


def _gate(b: Emitter, z: str, act: _Act, p: _Params) -> Tuple[str, Callable[[str], str]]:
    """``act(clip(z))`` and the map from its gradient to the gradient of ``z``."""
    zc, inside = _clipped(b, z, p)
    y = act(b, zc)
    return y, lambda dy: _through_clip(b, b.Mul(dy, act.derivative(b, zc, y)), inside)


def _hr(b: Emitter, h: str, p: _Params) -> str:
    """``h R^T + Rb``, the recurrent half of every gate's pre-activation."""
    hr = b.MatMul(h, p.RT)
    return b.Add(hr, p.Rb) if p.Rb else hr


@dataclass
class _StepGrads:
    """Gradients of one step: previous h and c, the input half ``a`` and the recurrent half
    ``h R^T + Rb`` of the pre-activations, R, and the peepholes (summed over the batch)."""

    dh: str
    dc: Optional[str]
    da: str
    dhr: str
    dR: str
    dP: Optional[str] = None


#: a cell's new state h, new cell state c (LSTM), and its backward step: gradients of one step
_Cell = Tuple[str, Optional[str], Callable[..., "_StepGrads"]]


def _rnn_cell(b: Emitter, a: str, h: str, c: Optional[str], p: _Params) -> _Cell:
    """``H = f(a + h R^T + Rb)``; returns (H, None, backward(dH, dC))."""
    y, back = _gate(b, b.Add(a, _hr(b, h, p)), p.acts[0], p)

    def backward(dH: str, dC: Optional[str] = None) -> _StepGrads:
        dz = back(dH)
        return _StepGrads(b.MatMul(dz, p.R), None, dz, dz, b.MatMul(b.Transpose(dz, perm=[1, 0]), h))

    return y, None, backward


def _gru_cell(b: Emitter, a: str, h: str, c: Optional[str], p: _Params) -> _Cell:
    """GRU (gates z, r, h):  H = (1 - z) * g(...) + z * h; returns (H, None, backward)."""
    H = p.hidden
    f, g = p.acts
    one = _c(b, 1, a)
    hr = _hr(b, h, p)
    az, ar, ah = b.split(a, [H, H, H], axis=1)
    hz, hrr, hh = b.split(hr, [H, H, H], axis=1)
    z, back_z = _gate(b, b.Add(az, hz), f, p)
    r, back_r = _gate(b, b.Add(ar, hrr), f, p)
    if p.linear_before_reset:
        pre_h = b.Add(ah, b.Mul(r, hh))
    else:  # the candidate's recurrent half is (r * h) Rh^T + Rbh, not r * (h Rh^T + Rbh)
        rh = b.Mul(r, h)
        Rh = b.slice(p.R, [2 * H], [3 * H], [0])
        pre_h = b.Add(ah, b.MatMul(rh, b.Transpose(Rh, perm=[1, 0])))
        if p.Rb:
            pre_h = b.Add(pre_h, b.slice(p.Rb, [2 * H], [3 * H], [0]))
    cand, back_h = _gate(b, pre_h, g, p)
    out = b.Add(b.Mul(b.Sub(one, z), cand), b.Mul(z, h))

    def backward(dH: str, dC: Optional[str] = None) -> _StepGrads:
        dpre_h = back_h(b.Mul(dH, b.Sub(one, z)))
        dz = back_z(b.Mul(dH, b.Sub(h, cand)))
        dh = b.Mul(dH, z)
        tr = [1, 0]
        if p.linear_before_reset:
            dr = b.Mul(dpre_h, hh)
            dhh = b.Mul(dpre_h, r)
            dr_pre = back_r(dr)
            dhr = b.Concat(dz, dr_pre, dhh, axis=1)
            dh = b.Add(dh, b.MatMul(dhr, p.R))
            dR = b.MatMul(b.Transpose(dhr, perm=tr), h)
        else:
            drh = b.MatMul(dpre_h, Rh)
            dr_pre = back_r(b.Mul(drh, h))
            dzr = b.Concat(dz, dr_pre, axis=1)
            dh = b.Add(b.Add(dh, b.Mul(drh, r)), b.MatMul(dzr, b.slice(p.R, [0], [2 * H], [0])))
            dhr = b.Concat(dzr, dpre_h, axis=1)
            dR = b.Concat(b.MatMul(b.Transpose(dzr, perm=tr), h), b.MatMul(b.Transpose(dpre_h, perm=tr), rh), axis=0)
        return _StepGrads(dh, None, b.Concat(dz, dr_pre, dpre_h, axis=1), dhr, dR)

    return out, None, backward


def _lstm_cell(b: Emitter, a: str, h: str, c: Optional[str], p: _Params) -> _Cell:
    """LSTM (gates i, o, f, c, peepholes P = [Pi, Po, Pf]); returns (H, C, backward(dH, dC))."""
    assert c is not None
    H = p.hidden
    f, g, hact = p.acts
    one = _c(b, 1, a)
    pre = b.Add(a, _hr(b, h, p))
    zi, zo, zf, zc = b.split(pre, [H] * 4, axis=1)
    Pi, Po, Pf = p.P if p.P else (None, None, None)
    i, back_i = _gate(b, b.Add(zi, b.Mul(Pi, c)) if Pi else zi, f, p)
    if p.input_forget:
        ft, back_f = b.Sub(one, i), None
    else:
        ft, back_f = _gate(b, b.Add(zf, b.Mul(Pf, c)) if Pf else zf, f, p)
    cand, back_c = _gate(b, zc, g, p)
    C = b.Add(b.Mul(ft, c), b.Mul(i, cand))
    o, back_o = _gate(b, b.Add(zo, b.Mul(Po, C)) if Po else zo, f, p)
    hC = hact(b, C)
    out = b.Mul(o, hC)

    def backward(dH: str, dC: Optional[str] = None) -> _StepGrads:
        dzo = back_o(b.Mul(dH, hC))
        dCt = b.Mul(b.Mul(dH, o), hact.derivative(b, C, hC))
        if dC is not None:
            dCt = b.Add(dCt, dC)
        if Po:
            dCt = b.Add(dCt, b.Mul(dzo, Po))
        di = b.Mul(dCt, cand)
        dft = b.Mul(dCt, c)
        dc = b.Mul(dCt, ft)
        dzc = back_c(b.Mul(dCt, i))
        if back_f is None:  # f = 1 - i
            di = b.Sub(di, dft)
            dzf = b.zeros_like(dft)
        else:
            dzf = back_f(dft)
        dzi = back_i(di)
        dpre = b.Concat(dzi, dzo, dzf, dzc, axis=1)
        dh = b.MatMul(dpre, p.R)
        dR = b.MatMul(b.Transpose(dpre, perm=[1, 0]), h)
        dP = None
        if p.P:
            dc = b.Add(dc, b.Mul(dzi, Pi))
            if back_f is not None:
                dc = b.Add(dc, b.Mul(dzf, Pf))
            dP = b.reduce_sum(b.Concat(b.Mul(dzi, c), b.Mul(dzo, C), b.Mul(dzf, c), axis=1), [0], keepdims=False)
        return _StepGrads(dh, dc, dpre, dpre, dR, dP)

    return out, C, backward


_CELLS = {"LSTM": _lstm_cell, "GRU": _gru_cell, "RNN": _rnn_cell}


# ---------------------------------------------------------------- the two loops of one direction
@dataclass
class _Direction:
    """One direction's recurrence in the enclosing scope (outer tensor names)."""

    kind: str
    params: _Params
    A: str  # X W^T + Wb, [T, B, G*H]
    h0: str  # [B, H]
    c0: Optional[str]
    steps: str  # T (int64 scalar)
    batch: str  # B (1-D int64)
    last: str  # T - 1
    lens: Optional[str]  # sequence_lens as int64 [B]
    reverse: bool

    def time(self, b: Emitter, k: str) -> str:
        """The time index of processing step ``k``."""
        return b.Sub(self.last, k) if self.reverse else k

    def mask(self, b: Emitter, t: str, like: str) -> Optional[str]:
        """[B, 1]: 1 for the batch entries whose sequence reaches time ``t``."""
        if self.lens is None:
            return None
        return b.unsqueeze(b.Cast(b.Less(t, self.lens), to=b.dtype(like)), [1])


def _loop(g: Emitter, d: _Direction, body: GraphProto, carried: Sequence[str], n_scans: int) -> List[str]:
    """A Loop over the T steps (the op table types its outputs from the body's)."""
    outs = g.op("Loop", d.steps, g.const(True, dtype=TensorProto.BOOL), *carried,
                outputs=len(carried) + n_scans, body=body)
    return outs if isinstance(outs, list) else [outs]


def _counter(b: Emitter) -> List[Tuple[str, int, Optional[list]]]:
    """The iteration number and condition every Loop body starts with."""
    return [(body_input(b, "step", TensorProto.INT64, []), TensorProto.INT64, []),
            (body_input(b, "cond", TensorProto.BOOL, []), TensorProto.BOOL, [])]


def _forward(g: Emitter, d: _Direction) -> Tuple[List[str], str]:
    """Recompute the recurrence: the stacked states entering each processing step ([h] or [h, c],
    each [T, B, H]) and the time indices T-1 .. 0 (to turn a stack over the steps around)."""
    b = g.nested()
    et = g.dtype(d.A)
    counter = _counter(b)
    i, cond = counter[0][0], counter[1][0]
    states = [body_input(b, "h", et)] + ([body_input(b, "c", et)] if d.c0 else [])
    t = d.time(b, i)
    h, c = states[0], states[1] if d.c0 else None
    out, C, _ = _CELLS[d.kind](b, b.Gather(d.A, t, axis=0), h, c, d.params)
    new = [out] + ([C] if C else [])
    m = d.mask(b, t, d.A)
    if m is not None:  # past its length a sequence keeps its state
        new = [b.Add(s, b.Mul(m, b.Sub(n, s))) for s, n in zip(states, new)]
    outputs = [b.Identity(cond), *new, *[_scan_output(b, s) for s in states], _scan_output(b, b.Sub(d.last, i))]
    body = body_graph(b, "recompute", counter + [(s, et, None) for s in states], outputs)
    n = len(states)
    res = _loop(g, d, body, [d.h0] + ([d.c0] if d.c0 else []), n + 1)
    tail: List[Union[int, str]] = [d.batch, d.params.hidden]
    return [_stacked(g, s, tail) for s in res[n:2 * n]], g.reshape(res[-1], [-1])


@dataclass
class _Backprop:
    """What the reverse pass gives: the gradients of the initial states ([dh0] or [dh0, dc0]), of
    R and of the peepholes, and the stacks of dA and d(h R^T + Rb) in reverse processing order."""

    d_initial: List[str]
    dR: str
    dP: Optional[str]
    dA: str
    dHR: str


def _backward(g: Emitter, d: _Direction, stored: List[str], dY: Optional[str], d_final: List[str]) -> _Backprop:
    """The reverse pass over the steps, from the gradients of the final states ``d_final`` and
    of ``Y`` (``dY``, [T, B, H] or None), reading the states ``stored`` by the forward loop."""
    b = g.nested()
    et = g.dtype(d.A)
    p = d.params
    counter = _counter(b)
    i, cond = counter[0][0], counter[1][0]
    d_states = [body_input(b, name, et) for name in ("dh", "dc")[:len(d_final)]]
    sums = [body_input(b, "dR", et)] + ([body_input(b, "dP", et)] if p.P else [])
    k = b.Sub(d.last, i)  # the processing step, last first
    t = d.time(b, k)
    state = [b.Gather(s, k, axis=0) for s in stored]
    _, _, backward = _CELLS[d.kind](b, b.Gather(d.A, t, axis=0), state[0], state[1] if len(state) > 1 else None,
                                    p)
    arriving = list(d_states)
    if dY:
        arriving[0] = b.Add(arriving[0], b.Gather(dY, t, axis=0))
    m = d.mask(b, t, d.A)
    if m is not None:
        arriving = [b.Mul(m, a) for a in arriving]
    s = backward(*arriving)
    to_previous = [s.dh] + ([s.dc] if s.dc else [])
    if m is not None:  # a finished sequence hands the gradient of its carried state on unchanged
        keep = b.Sub(_c(b, 1, m), m)
        to_previous = [b.Add(x, b.Mul(keep, dx)) for x, dx in zip(to_previous, d_states)]
    summed = [b.Add(sums[0], s.dR)] + ([b.Add(sums[1], s.dP)] if s.dP else [])
    body = body_graph(b, "backprop", counter + [(x, et, None) for x in d_states + sums],
                      [b.Identity(cond), *to_previous, *summed, _scan_output(b, s.da), _scan_output(b, s.dhr)])
    G, H = _GATES[d.kind], p.hidden
    init = d_final + [g.const(np.zeros((G * H, H)), like=d.A)] + ([g.const(np.zeros(3 * H), like=d.A)] if p.P else [])
    res = _loop(g, d, body, init, 2)
    n = len(d_final)
    tail: List[Union[int, str]] = [d.batch, G * H]
    return _Backprop(res[:n], res[n], res[n + 1] if p.P else None, _stacked(g, res[-2], tail),
                     _stacked(g, res[-1], tail))


# ---------------------------------------------------------------- one node
@dataclass
class _TimeMajor:
    """A recurrent node's tensors in time-major layout, and what every direction shares."""

    kind: str
    hidden: int
    x: str  # [T, B, I]
    y: Optional[str]  # the node's own Y, [T, D, B, H], where it holds the states (_states_from_output)
    static_steps: Optional[int]
    dY: Optional[str]  # [T, D, B, H]
    d_final: List[Optional[str]]  # gradients of Y_h (and Y_c), [D, B, H] each
    initial: List[Optional[str]]  # initial_h (and initial_c), [D, B, H] each
    steps: str
    batch: str
    last: str
    lens: Optional[str]
    nonempty: Optional[str]  # [B, 1]: 1 where a sequence has at least one step
    zero_state: str  # [B, H]


def _time_major(g: Emitter, op: Op, hidden: int, dys: Sequence[Optional[str]]) -> _TimeMajor:
    """Transpose a batch-major (layout 1) node's tensors to time-major; sizes and masks."""
    kind = op.op_type
    layout = op.attr("layout", 0)

    def tm(t: Optional[str], perm: List[int]) -> Optional[str]:
        return g.transpose(t, perm) if t and layout else t

    X = op.inputs[0]
    x = tm(X, [1, 0, 2])
    assert x is not None
    n_states = 2 if kind == "LSTM" else 1
    static_t = (g.shape(X) or [None, None])[1 if layout else 0]
    if isinstance(static_t, int):
        steps, last = g.scalar_int(static_t), g.scalar_int(static_t - 1)
    else:
        steps = g.squeeze(g.Gather(g.Shape(x), g.ints([0]), axis=0), [0])
        last = g.Sub(steps, g.scalar_int(1))
    batch = g.Gather(g.Shape(x), g.ints([1]), axis=0)
    L = op.input(4)
    lens = g.Cast(L, to=TensorProto.INT64) if L else None
    dy = dys[0]
    # Y is every step's state only for a state that is h alone (GRU, RNN), without sequence_lens
    # (past its end a sequence's Y is zero, not its carried state), and the step order is a
    # constant only for a static T
    holds_states = kind != "LSTM" and lens is None and isinstance(static_t, int)
    return _TimeMajor(
        kind, hidden, x, tm(op.output(0), [1, 2, 0, 3]) if holds_states else None,
        static_t if isinstance(static_t, int) else None,
        tm(None if g.is_zero(dy) else dy, [1, 2, 0, 3]),
        [tm(None if g.is_zero(d) else d, [1, 0, 2]) for d in dys[1:1 + n_states]],
        [tm(op.input(5 + k), [1, 0, 2]) for k in range(n_states)], steps, batch, last, lens,
        g.unsqueeze(g.Cast(g.Greater(lens, g.scalar_int(0)), to=g.dtype(X)), [1]) if lens else None,
        g.constant_of_shape(g.Concat(batch, g.ints([hidden]), axis=0), 0.0, like=X))


def _states_from_output(g: Emitter, s: _TimeMajor, dd: str, h0: str, reverse: bool
                        ) -> Optional[Tuple[List[str], str]]:
    """:func:`_forward`'s result without its Loop, where the node's own ``Y`` holds it: GRU and RNN
    carry only h, and Y is every step's h, so the states entering the processing steps are
    [h0, Y_0 .. Y_{T-2}] (a reverse direction: [h0, Y_{T-1} .. Y_1]); None where ``Y`` does not
    hold them (see :func:`_time_major`). On onnxruntime the forward Loop was about a third of the
    nodes run per step (torch's GRU: 22 of 78)."""
    if s.y is None or not s.static_steps:
        return None
    steps = s.static_steps
    first = g.unsqueeze(h0, [0])
    if steps == 1:
        entering = first
    else:
        y = g.Gather(s.y, dd, axis=1)  # [T, B, H]
        if reverse:
            rest = g.Gather(y, g.ints(list(range(steps - 1, 0, -1))), axis=0)
        else:
            rest = g.slice(y, [0], [steps - 1], [0])
        entering = g.Concat(first, rest, axis=0)
    return [entering], g.ints(list(range(steps - 1, -1, -1)))


def _one_direction(g: Emitter, op: Op, s: _TimeMajor, dnum: int, acts: List[_Act]) -> Dict[str, Optional[str]]:
    """The gradients of direction ``dnum``: dX (time-major), dW, dR, dB, dP and the initial states'."""
    W, R, B, P = op.inputs[1], op.inputs[2], op.input(3), op.input(7)
    G, H = _GATES[s.kind], s.hidden
    dd = g.scalar_int(dnum)
    Wd, Rd = g.Gather(W, dd, axis=0), g.Gather(R, dd, axis=0)
    Bd = g.Gather(B, dd, axis=0) if B else None
    Wb = g.slice(Bd, [0], [G * H], [0]) if Bd else None
    Rb = g.slice(Bd, [G * H], [2 * G * H], [0]) if Bd else None
    Pd = g.split(g.Gather(P, dd, axis=0), [H] * 3, axis=0) if P else None
    params = _Params(H, acts, op.attr("clip"), Rd, g.Transpose(Rd, perm=[1, 0]), Rb, Pd,
                     bool(op.attr("input_forget", 0)), bool(op.attr("linear_before_reset", 0)))
    A = g.MatMul(s.x, g.Transpose(Wd, perm=[1, 0]))
    if Wb:
        A = g.Add(A, Wb)
    reverse = op.attr("direction", "forward") == "reverse" or dnum == 1
    h0, c0 = [g.Gather(t, dd, axis=0) if t else s.zero_state for t in s.initial] + [None] * (2 - len(s.initial))
    d = _Direction(s.kind, params, A, h0, c0, s.steps, s.batch, s.last, s.lens, reverse)  # type: ignore[arg-type]

    def final(df: Optional[str]) -> str:
        if df is None:
            return s.zero_state
        part = g.Gather(df, dd, axis=0)
        # an empty sequence outputs zero final states: nothing flows back from them
        return g.Mul(part, s.nonempty) if s.nonempty else part

    stored, back_in_time = _states_from_output(g, s, dd, d.h0, reverse) or _forward(g, d)
    bp = _backward(g, d, stored, g.Gather(s.dY, dd, axis=1) if s.dY else None, [final(df) for df in s.d_final])
    dA = bp.dA if reverse else g.Gather(bp.dA, back_in_time, axis=0)  # forward: the stack runs last step first
    return {
        "dX": g.MatMul(dA, Wd),
        # sum over steps and batch entries of dA_t^T x_t
        "dW": g.MatMul(g.Transpose(g.Flatten(dA, axis=2), perm=[1, 0]), g.Flatten(s.x, axis=2)),
        "dR": bp.dR,
        "dB": g.Concat(g.reduce_sum(dA, [0, 1], keepdims=False), g.reduce_sum(bp.dHR, [0, 1], keepdims=False),
                       axis=0),
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
