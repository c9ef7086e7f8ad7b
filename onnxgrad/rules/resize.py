"""Resize (opset 10+) and Upsample (opset 9).

Every mode (nearest, linear, cubic, with or without antialias) and every coordinate
transformation resizes each axis independently with a fixed matrix: y = x x_a A_a over the
resized axes, A_a [out_a, in_a] depending only on sizes, scales, roi and attributes. So
``dx = dy x_a A_a^T``, one axis after the other.

A_a is not re-derived here (that would re-implement every mode and coordinate rule, and any
runtime quirk would break the gradient); it is measured in the graph: the same Resize, applied
to the identity (EyeLike, nothing stored) laid out along (basis axis, axis a) with every other
axis left alone, returns A_a^T. A_a^T is sparse (each input feeds a few outputs), so it is kept
as its K nonzeros per input position (TopK, K the most any position has) and applied as a Gather
of dy along axis a, a Mul by the weights and a ReduceSum over K: run time and memory linear in
the image side, no constant growing with it. Every node of that derivation reads only
constants, so runtimes fold it and Hessians never differentiate it. Needs static shapes and
constant scales/sizes/roi.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from ..tensorinfo import Dim

# Attributes that shape the per-axis matrix (copied to the measuring node).
_MATRIX_ATTRS = ("mode", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "nearest_mode",
                 "antialias")


def _full(values: np.ndarray, axes: Optional[List[int]], rank: int, fill: List[float]) -> List[float]:
    """Per-axis values for all ``rank`` axes; ``axes`` (opset 18) lists the axes ``values`` cover."""
    if axes is None:
        return [float(v) for v in values]
    out = list(fill)
    for a, v in zip(axes, values):
        out[a % rank] = float(v)
    return out


def _inputs(g: Emitter, op: Op) -> Dict[str, Optional[List[float]]]:
    """The forward node's scales and (tf_crop_and_resize only) roi as full-rank lists, None when absent.

    Sizes need no reading: the output's static shape is what they produced."""
    rank = g.rank(op.inputs[0])
    if op.op_type == "Upsample" or op.opset < 11:
        names = {"scales": op.input(1)}
    else:
        names = {"scales": op.input(2)}
        if op.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
            names["roi"] = op.input(1)
    axes = op.attr("axes")
    axes = [int(a) for a in axes] if axes else None
    out: Dict[str, Optional[List[float]]] = {"scales": None, "roi": None}
    for key, name in names.items():
        value = g.constant_value(name) if name else None
        if name and value is None:
            raise GradientArgumentError(
                f"{op.op_type} node {op.name!r}: its {key} input {name!r} must be a constant "
                "(initializer or Constant) to differentiate it")
        if value is None or value.size == 0:
            continue
        if key == "scales":
            out[key] = _full(value, axes, rank, [1.0] * rank)
        else:
            n = value.size // 2
            out[key] = _full(value[:n], axes, rank, [0.0] * rank) + _full(value[n:], axes, rank, [1.0] * rank)
    return out


def _identity(g: Emitter, n: int, shape: List[int], like: str) -> str:
    """The n x n identity in ``like``'s dtype, reshaped to ``shape``, computed (EyeLike), not stored."""
    return g.reshape(g.EyeLike(g.constant_of_shape(g.ints([n, n]), 0.0, like=like)), shape)


def _adjoint_along(g: Emitter, t: str, axis: int, rank: int, a_t: str, in_size: int, out_size: int,
                   k: Optional[int]) -> str:
    """``t`` contracted along ``axis`` with the rows of A^T [in, out]: per input position its K
    nonzero entries (TopK of |A^T|) gathered from t and weighted. K is the most nonzeros any
    position has, read at run time, or the bound ``k`` (which keeps the shapes static)."""
    if k is None:
        nonzero = g.cast_like(g.Greater(g.Abs(a_t), g.const(0.0, like=a_t)), a_t)
        most = g.reduce("ReduceMax", g.reduce_sum(nonzero, [1], keepdims=False), [0])  # [1]
        picks = g.op("TopK", g.Abs(a_t), g.Cast(most, to=TensorProto.INT64), outputs=2, axis=1)[1]
    elif g.opset >= 10:
        picks = g.op("TopK", g.Abs(a_t), g.ints([k]), outputs=2, axis=1)[1]
    else:
        picks = g.op("TopK", g.Abs(a_t), outputs=2, axis=1, k=k)[1]
    g.set_info(picks, TensorProto.INT64, (in_size, k))
    rows = g.const(np.arange(in_size).reshape(in_size, 1) * out_size, dtype=TensorProto.INT64)
    weights = g.Gather(g.reshape(a_t, [-1]), g.Add(picks, rows), axis=0)  # signed, [in, K]
    weights = g.reshape(weights, [in_size, -1] + [1] * (rank - 1 - axis))
    gathered = g.Gather(t, picks, axis=axis)  # axis becomes [in, K]
    return g.reduce_sum(g.Mul(gathered, weights), [axis + 1], keepdims=False)


def _k_bound(op: Op, axis: int, in_size: int, out_size: int, params: Dict[str, Optional[List[float]]]) -> int:
    """At most how many outputs read one input along ``axis`` (opset 9-12 modes).

    Output o samples the input at x(o) = o * step + c and reads the taps within R of it (R = 1
    for nearest and linear, 2 for cubic), so an input is read by the outputs whose x(o) lies in an
    interval of width 2R: at most 2R / step + 1 of them; borders clamp, hence the margin."""
    mode = op.attr("coordinate_transformation_mode", "half_pixel" if op.opset >= 11 else "asymmetric")
    scale = params["scales"][axis] if params["scales"] is not None else out_size / in_size
    step = 1.0 / scale
    if mode in ("align_corners", "tf_crop_and_resize") and out_size > 1:
        crop = params["roi"][len(params["roi"]) // 2 + axis] - params["roi"][axis] if params["roi"] else 1.0
        step = (in_size - 1) * (crop if mode == "tf_crop_and_resize" else 1.0) / (out_size - 1)
    reach = 2 if op.attr("mode", "nearest") == "cubic" else 1
    return int(min(out_size, np.ceil((2 * reach + 2) / max(step, 1e-9)) + 2))


def _measure(g: Emitter, op: Op, x: str, axis: int, in_size: int, out_size: int, basis: int,
             params: Dict[str, Optional[List[float]]]) -> str:
    """Resize of the identity along (basis, axis): its [in, out] or [out, in] matrix as a tensor."""
    rank = g.rank(x)
    eye_shape = [1] * rank
    eye_shape[basis] = eye_shape[axis] = in_size
    eye = _identity(g, in_size, eye_shape, x)
    attrs = {k: op.attr(k) for k in _MATRIX_ATTRS if op.has_attr(k)}
    if op.attr("coordinate_transformation_mode") == "tf_crop_and_resize":
        attrs["extrapolation_value"] = 0.0  # outside the crop the output is a constant, not x
    scales = None
    if params["scales"] is not None:
        s = [1.0] * rank
        s[axis] = params["scales"][axis]
        scales = g.const(np.asarray(s, np.float32), dtype=TensorProto.FLOAT)
    sizes = None
    if scales is None:
        sz = list(eye_shape)
        sz[axis] = out_size
        sizes = g.ints(sz)
    if op.op_type == "Upsample" or g.opset < 11:
        measured = g.emit(op.op_type, eye, scales, **attrs)
    else:
        roi = None
        if params["roi"] is not None:
            r = [0.0] * rank + [1.0] * rank
            r[axis], r[rank + axis] = params["roi"][axis], params["roi"][rank + axis]
            roi = g.const(np.asarray(r, np.float32), dtype=TensorProto.FLOAT)
        if g.opset < 13:
            # roi and scales are required inputs before opset 13; empty means "not given"
            empty = g.const(np.zeros(0, np.float32), dtype=TensorProto.FLOAT)
            roi, scales = roi or empty, scales or empty
        measured = g.emit("Resize", eye, roi, scales, sizes, **attrs)
    return g.reshape(measured, [in_size, out_size] if basis < axis else [out_size, in_size])


class _KeepAspect:
    """Resize with sizes and keep_aspect_ratio_policy not_larger/not_smaller (opset 18+).

    One scale (the min or max of sizes/in over ``axes``) applies to all of ``axes``, with the
    output rounded; the measuring node must see the same scale, so it resizes a tensor as large
    as the input along ``axes`` (ones there, the identity along the measured axis and a basis
    axis outside ``axes``), with the forward's policy, and keeps one slice.
    """

    def __init__(self, axes: List[int], sizes: List[int], in_sizes: List[int], scale: float, policy: str) -> None:
        self.axes, self.sizes, self.in_sizes, self.scale, self.policy = axes, sizes, in_sizes, scale, policy

    @classmethod
    def of(cls, g: Emitter, op: Op, xs: Sequence[Dim]) -> "_KeepAspect":
        rank = len(xs)
        policy = op.attr("keep_aspect_ratio_policy")
        sizes = g.constant_value(op.input(3)) if len(op.inputs) > 3 else None
        axes = [int(a) % rank for a in op.attr("axes") or range(rank)]
        in_sizes = [xs[a] for a in axes]
        if sizes is None or op.attr("coordinate_transformation_mode") == "tf_crop_and_resize" or any(
                not isinstance(d, int) for d in in_sizes):
            raise GradientArgumentError(
                f"Resize node {op.name!r}: keep_aspect_ratio_policy needs constant sizes and static input sizes "
                "(and no tf_crop_and_resize)")
        static = [d for d in in_sizes if isinstance(d, int)]  # all of them (checked above)
        ratios = [float(s) / d for s, d in zip(sizes, static)]
        scale = min(ratios) if policy == "not_larger" else max(ratios)
        return cls(axes, [int(s) for s in sizes], static, scale, policy)

    def measure(self, g: Emitter, op: Op, x: str, axis: int, out_size: int) -> tuple:
        """(basis axis, A_axis^T [in, out] if basis < axis else A_axis [out, in])."""
        rank = g.rank(x)
        free = [k for k in range(rank) if k != axis and k not in self.axes]
        if not free:
            raise GradientArgumentError(
                f"Resize node {op.name!r}: keep_aspect_ratio_policy over every axis cannot be differentiated "
                "(no axis is left to hold the identity)")
        basis = free[0]
        in_size = self.in_sizes[self.axes.index(axis)]
        shape = [1] * rank
        for a, n in zip(self.axes, self.in_sizes):
            shape[a] = n
        shape[basis] = in_size
        eye_shape = [1] * rank
        eye_shape[basis] = eye_shape[axis] = in_size
        eye = g.Expand(_identity(g, in_size, eye_shape, x), g.ints(shape))
        attrs = {k: op.attr(k) for k in _MATRIX_ATTRS if op.has_attr(k)}
        measured = g.emit("Resize", eye, None, None, g.ints(self.sizes), axes=self.axes,
                        keep_aspect_ratio_policy=self.policy, **attrs)
        others = [a for a in self.axes if a != axis]
        if others:
            measured = g.slice(measured, [0] * len(others), [1] * len(others), others)
        return basis, g.reshape(measured, [in_size, out_size] if basis < axis else [out_size, in_size])


def _resize_grad(g: Emitter, op: Op, dy: str) -> str:
    x, y = op.inputs[0], op.outputs[0]
    xs, ys = g.shape(x), g.shape(y)
    if xs is None or ys is None:
        raise GradientArgumentError(
            f"{op.op_type} node {op.name!r}: the gradient needs the ranks of its input and output")
    rank = len(xs)
    if rank < 2:
        raise GradientArgumentError(f"{op.op_type} node {op.name!r}: the gradient needs an input of rank 2 or more")
    params = _inputs(g, op)
    crop = op.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    aspect = _KeepAspect.of(g, op, xs) if op.attr("keep_aspect_ratio_policy", "stretch") != "stretch" else None
    dx = dy
    for a in range(rank):
        if aspect is not None:
            unit = a not in aspect.axes or aspect.scale == 1.0
        elif params["scales"] is not None:
            unit = params["scales"][a] == 1.0
        else:
            unit = xs[a] == ys[a]
        if unit and not crop:
            continue  # the identity along this axis
        in_size, out_size = xs[a], ys[a]
        if not isinstance(in_size, int) or not isinstance(out_size, int):
            raise GradientArgumentError(
                f"{op.op_type} node {op.name!r}: the gradient needs static sizes along resized axis {a}")
        if aspect is not None:
            basis, m = aspect.measure(g, op, x, a, out_size)
        else:
            basis = 0 if a else 1
            m = _measure(g, op, x, a, in_size, out_size, basis, params)
        # m is A_a^T [in, out] when basis < a, else A_a [out, in]
        a_t = m if basis < a else g.Transpose(m, perm=[1, 0])
        # a run-time K leaves a dim that shape inference cannot know, which Hessians must undo at
        # run time (ReduceSum with axes as an input, opset 13)
        k = None if g.opset >= 13 else _k_bound(op, a, in_size, out_size, params)
        dx = _adjoint_along(g, dx, a, rank, a_t, in_size, out_size, k)
    g.set_info(dx, g.dtype(x), xs)
    return dx


@register_gradient("Resize", since=10, inputs=(0,))
def resize_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy), None, None, None]


@register_gradient("Upsample", since=9, until=9, inputs=(0,))
def upsample_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy), None]
