"""Numeric verification of gradients against central differences, run in onnxruntime.

TensorFlow's directional check (README.md, "Checking gradients numerically"): random seed u
(grad_ys) and random direction v per x; compare ``sum(grad_x * v)`` with
``(f(x + e v) - f(x - e v)) . u / (2 e)``. For small tensors the full Jacobian is compared as
well. Used by ``onnxgrad check`` and by the test-suite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from .api import gradients
from .arguments import check_names, parse_names
from .errors import GradientArgumentError
from .graph import FLOAT_TYPES, GraphIndex
from .loading import ModelLike, load_model

#: Step and relative tolerance per element type.
STEP = {TensorProto.DOUBLE: 1e-6, TensorProto.FLOAT: 1e-3, TensorProto.FLOAT16: 1e-2, TensorProto.BFLOAT16: 1e-2}
RTOL = {TensorProto.DOUBLE: 1e-6, TensorProto.FLOAT: 2e-3, TensorProto.FLOAT16: 5e-2, TensorProto.BFLOAT16: 1e-1}
_MACHINE_EPS = {TensorProto.DOUBLE: 2.2e-16, TensorProto.FLOAT: 1.2e-7, TensorProto.FLOAT16: 9.8e-4,
                TensorProto.BFLOAT16: 7.8e-3}


@dataclass
class XCheck:
    """Result for one x: the directional derivative computed both ways.

    ``error`` is ``|analytic - numeric|`` and passes when within ``tolerance`` (relative part plus
    the rounding noise of the finite difference). ``jacobian_ratio`` is the worst Jacobian entry's
    error divided by its own tolerance (passes at <= 1), or None when x was too large.
    """

    name: str
    shape: tuple
    analytic: float
    numeric: float
    error: float
    tolerance: float
    jacobian_ratio: Optional[float] = None
    step: Optional[float] = None  # the finite-difference step finally used

    @property
    def relative_error(self) -> float:
        return self.error / max(abs(self.analytic), abs(self.numeric), 1e-30)

    @property
    def ok(self) -> bool:
        return self.error <= self.tolerance and (self.jacobian_ratio is None or self.jacobian_ratio <= 1.0)


@dataclass
class CheckReport:
    """One :class:`XCheck` per x; ``ok`` when all pass."""

    checks: List[XCheck] = field(default_factory=list)
    gradient_model: Optional[ModelProto] = None

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)


def session(model: ModelProto):
    """An onnxruntime CPU session with graph optimizations off (numerics as written)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def random_feeds(model: ModelProto, rng: np.random.Generator, dim: int = 2) -> Dict[str, np.ndarray]:
    """Random values for every graph input that is not an initializer (ints are zeros)."""
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else dim for d in tt.shape.dim]
        dtype = helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if tt.elem_type in FLOAT_TYPES:
            feeds[vi.name] = rng.standard_normal(shape).astype(dtype)
        else:
            feeds[vi.name] = np.zeros(shape, dtype=dtype)
    return feeds


def _with_outputs(model: ModelProto, names: Sequence[str]) -> ModelProto:
    m = ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def _cut(model: ModelProto, x: str, value: np.ndarray) -> ModelProto:
    """A copy of ``model`` where ``x`` is a graph input (its producer's output renamed away)."""
    m = ModelProto()
    m.CopyFrom(model)
    if any(i.name == x for i in m.graph.input):
        return m
    kept = [t for t in m.graph.initializer if t.name != x]
    if len(kept) != len(m.graph.initializer):
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)
    else:
        for node in m.graph.node:
            if x in node.output:
                node.output[list(node.output).index(x)] = f"{x}/cut_away"
                break
    elem = helper.np_dtype_to_tensor_dtype(value.dtype)
    m.graph.input.append(helper.make_tensor_value_info(x, elem, list(value.shape)))
    return m


def _dot(ys: Sequence[np.ndarray], us: Sequence[np.ndarray]) -> float:
    return float(sum(np.sum(y.astype(np.float64) * u.astype(np.float64)) for y, u in zip(ys, us)))


def check_gradients(
    model: ModelLike,
    xs: Sequence[str],
    ys: Optional[Sequence[str]] = None,
    feeds: Optional[Mapping[str, np.ndarray]] = None,
    seed: int = 0,
    jacobian_limit: int = 4096,
    step: Optional[float] = None,
    rtol: Optional[float] = None,
) -> CheckReport:
    """Differentiate ``ys`` w.r.t. ``xs`` and compare with central differences in onnxruntime.

    Graph inputs missing from ``feeds`` get random values (float: standard normal; integer:
    zeros). ``ys`` defaults to every float graph output. The full Jacobian is also compared for
    each x with ``x.size * total y size <= jacobian_limit``.
    """
    proto = load_model(model)
    xs_l = parse_names(xs, "xs")
    index = GraphIndex(proto)
    ys_l = parse_names(ys, "ys") if ys else [o for o in index.graph_outputs if index.tensor_info(o).is_float]
    if not ys_l:
        raise GradientArgumentError("the model has no float output to differentiate; pass ys explicitly")
    check_names(index, ys_l, "ys")  # before onnxruntime sees them: a clear error, not an ORT failure
    check_names(index, xs_l, "xs")
    rng = np.random.default_rng(seed)
    feeds = dict(feeds) if feeds is not None else {}
    for k, v in random_feeds(proto, rng).items():
        feeds.setdefault(k, v)

    fwd = session(_with_outputs(proto, list(ys_l) + list(xs_l)))
    values = dict(zip([o.name for o in fwd.get_outputs()], fwd.run(None, feeds)))
    y_vals = [values[y] for y in ys_l]
    us = [rng.standard_normal(y.shape).astype(y.dtype) for y in y_vals]
    u_names = [f"onnxgrad_check/u{i}" for i in range(len(ys_l))]

    result = gradients(proto, ys_l, xs_l, grad_ys=u_names)
    gsess = session(result.model)
    gfeeds = dict(feeds)
    gfeeds.update(zip(u_names, us))
    wanted = [n for n in result.names if n is not None]
    grads = dict(zip(wanted, gsess.run(wanted, gfeeds)))

    report = CheckReport(gradient_model=result.model)
    y_size = sum(int(y.size) for y in y_vals)
    for x, gname in zip(xs_l, result.names):
        x0 = np.asarray(values[x])
        if x0.dtype.kind != "f":
            continue
        elem = helper.np_dtype_to_tensor_dtype(x0.dtype)
        e = step if step is not None else STEP.get(elem, 1e-3)
        tol_r = rtol if rtol is not None else RTOL.get(elem, 1e-3)
        cut = session(_cut(proto, x, x0))
        cut_feeds = {k: v for k, v in feeds.items() if k in {i.name for i in cut.get_inputs()}}

        def f(xv: np.ndarray) -> List[np.ndarray]:
            return cut.run(ys_l, {**cut_feeds, x: np.asarray(xv, dtype=x0.dtype)})  # 0-d x: keep an array

        gx = grads[gname].astype(np.float64) if gname is not None else np.zeros(x0.shape)
        v = rng.standard_normal(x0.shape)
        analytic = float(np.sum(gx * v))
        scale = sum(float(np.sum(np.abs(y.astype(np.float64) * u))) for y, u in zip(y_vals, us))

        def directional(h: float) -> float:
            return (_dot(f(x0 + h * v), us) - _dot(f(x0 - h * v), us)) / (2 * h)

        def tolerance(h: float, numeric: float) -> float:
            noise = 50 * _MACHINE_EPS.get(elem, 1e-7) * scale / h
            return tol_r * max(abs(analytic), abs(numeric)) + noise + 1e-12

        numeric = directional(e)
        tol = tolerance(e, numeric)
        if abs(analytic - numeric) > tol and step is None:
            # A kink (Relu, Max...) within the step makes the difference quotient jump. Shrink
            # the step and compare with the most stable pair of successive quotients; their
            # disagreement joins the tolerance, so a wrong rule (off at every step) still fails.
            quotients = [numeric] + [directional(e / 4 ** j) for j in (1, 2, 3)]
            k = min(range(3), key=lambda i: abs(quotients[i] - quotients[i + 1]))
            e, numeric = e / 4 ** (k + 1), quotients[k + 1]
            tol = tolerance(e, numeric) + 2 * abs(quotients[k] - quotients[k + 1])
        check = XCheck(x, tuple(x0.shape), analytic, numeric, abs(analytic - numeric), tol, step=e)
        if gname is not None and x0.size * y_size <= jacobian_limit:
            y_max = max(float(np.max(np.abs(y))) if y.size else 0.0 for y in y_vals)
            entry_noise = 50 * _MACHINE_EPS.get(elem, 1e-7) * max(y_max, 1.0) / e
            check.jacobian_ratio = _jacobian_ratio(f, x0, e, gsess, gfeeds, u_names, y_vals, gname, tol_r, entry_noise)
        report.checks.append(check)
    return report


def _jacobian_ratio(f, x0, e, gsess, gfeeds, u_names, y_vals, gname, tol_r, noise) -> float:
    """max over entries of |J_analytic - J_numeric| / (tol_r * |J| + noise)."""
    numeric = np.zeros((sum(y.size for y in y_vals), x0.size))
    flat = x0.reshape(-1).astype(np.float64)
    for j in range(x0.size):
        d = np.zeros_like(flat)
        d[j] = e
        plus = f((flat + d).reshape(x0.shape))
        minus = f((flat - d).reshape(x0.shape))
        numeric[:, j] = np.concatenate(
            [(p.astype(np.float64) - m).reshape(-1) for p, m in zip(plus, minus)]) / (2 * e)
    analytic = np.zeros_like(numeric)
    row = 0
    for k, y in enumerate(y_vals):
        for i in range(y.size):
            us = [np.zeros(yy.shape, yy.dtype) for yy in y_vals]
            us[k].reshape(-1)[i] = 1
            analytic[row] = gsess.run([gname], {**gfeeds, **dict(zip(u_names, us))})[0].reshape(-1)
            row += 1
    bound = tol_r * np.maximum(np.abs(analytic), np.abs(numeric)) + noise + 1e-12
    return float(np.max(np.abs(analytic - numeric) / bound)) if bound.size else 0.0
