"""Resize (opset 10+) and Upsample (opset 9).

Every mode (nearest, linear, cubic, with or without antialias) and every coordinate
transformation resizes each axis independently with a fixed matrix: y = x x_a A_a over the
resized axes, A_a [out_a, in_a] depending only on sizes, scales, roi and attributes. So
``dx = dy x_a A_a^T``: one MatMul per resized axis, which sums duplicates (nearest upsampling
reads one input several times) like a scatter-add.

A_a is not re-derived here (that would re-implement every mode and coordinate rule, and any
runtime quirk would break the gradient); it is measured in the graph: the same Resize, applied
to the identity matrix laid out along (basis axis, axis a) with every other axis left alone,
returns A_a^T. That node reads only constants, so runtimes fold it and Hessians never
differentiate it. Needs static shapes and constant scales/sizes/roi.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient

# Attributes that shape the per-axis matrix (copied to the measuring node).
_MATRIX_ATTRS = ("mode", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "nearest_mode",
                 "antialias")


def contract_axis(g: Emitter, t: str, axis: int, rank: int, m: Optional[str], m_t: str) -> str:
    """Contract axis ``axis`` of ``t`` with the rows of the matrix ``m`` [A, B] (``m_t`` is its
    transpose; ``m`` is only read for the last axis): that axis, A long, becomes B long."""
    if axis == rank - 1:
        return g.MatMul(t, m)
    if axis == rank - 2:
        return g.MatMul(m_t, t)
    perm = list(range(rank))
    perm[axis], perm[rank - 2] = perm[rank - 2], perm[axis]
    return g.transpose(g.MatMul(m_t, g.transpose(t, perm)), perm)


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
    rank = g.rank(op.input(0))
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


def _measure(g: Emitter, op: Op, x: str, axis: int, in_size: int, out_size: int, basis: int,
             params: Dict[str, Optional[List[float]]]) -> str:
    """Resize of the identity along (basis, axis): its [in, out] or [out, in] matrix as a tensor."""
    rank = g.rank(x)
    eye_shape = [1] * rank
    eye_shape[basis] = eye_shape[axis] = in_size
    eye = g.const(np.eye(in_size).reshape(eye_shape), like=x)
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
        measured = g.op(op.op_type, eye, scales, **attrs)
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
        measured = g.op("Resize", eye, roi, scales, sizes, **attrs)
    return g.reshape(measured, [in_size, out_size] if basis < axis else [out_size, in_size])


class _KeepAspect:
    """Resize with sizes and keep_aspect_ratio_policy not_larger/not_smaller (opset 18+).

    One scale (the min or max of sizes/in over ``axes``) applies to all of ``axes``, with the
    output rounded; the measuring node must see the same scale, so it resizes a tensor as large
    as the input along ``axes`` (ones there, the identity along the measured axis and a basis
    axis outside ``axes``), with the forward's policy, and keeps one slice.
    """

    def __init__(self, axes: List[int], sizes: List[int], in_sizes: List[int], scale: float, policy: str):
        self.axes, self.sizes, self.in_sizes, self.scale, self.policy = axes, sizes, in_sizes, scale, policy

    @classmethod
    def of(cls, g: Emitter, op: Op, xs) -> "_KeepAspect":
        rank = len(xs)
        policy = op.attr("keep_aspect_ratio_policy")
        sizes = g.constant_value(op.input(3)) if len(op.inputs) > 3 else None
        axes = [int(a) % rank for a in op.attr("axes") or range(rank)]
        if sizes is None or op.attr("coordinate_transformation_mode") == "tf_crop_and_resize" or any(
                not isinstance(xs[a], int) for a in axes):
            raise GradientArgumentError(
                f"Resize node {op.name!r}: keep_aspect_ratio_policy needs constant sizes and static input sizes "
                "(and no tf_crop_and_resize)")
        ratios = [float(s) / xs[a] for s, a in zip(sizes, axes)]
        scale = min(ratios) if policy == "not_larger" else max(ratios)
        return cls(axes, [int(s) for s in sizes], [int(xs[a]) for a in axes], scale, policy)

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
        eye = g.const(np.eye(in_size).reshape(eye_shape) * np.ones(shape), like=x)
        attrs = {k: op.attr(k) for k in _MATRIX_ATTRS if op.has_attr(k)}
        measured = g.op("Resize", eye, None, None, g.ints(self.sizes), axes=self.axes,
                        keep_aspect_ratio_policy=self.policy, **attrs)
        others = [a for a in self.axes if a != axis]
        if others:
            measured = g.slice(measured, [0] * len(others), [1] * len(others), others)
        return basis, g.reshape(measured, [in_size, out_size] if basis < axis else [out_size, in_size])


def _resize_grad(g: Emitter, op: Op, dy: str) -> str:
    x, y = op.input(0), op.output(0)
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
        if not isinstance(xs[a], int) or not isinstance(ys[a], int):
            raise GradientArgumentError(
                f"{op.op_type} node {op.name!r}: the gradient needs static sizes along resized axis {a}")
        if aspect is not None:
            basis, m = aspect.measure(g, op, x, a, ys[a])
        else:
            basis = 0 if a else 1
            m = _measure(g, op, x, a, xs[a], ys[a], basis, params)
        # m is A_a^T [in, out] when basis < a, else A_a [out, in]; the last axis needs A_a itself
        if basis < a:
            dx = contract_axis(g, dx, a, rank, g.Transpose(m, perm=[1, 0]) if a == rank - 1 else None, m)
        else:
            dx = contract_axis(g, dx, a, rank, m, g.Transpose(m, perm=[1, 0]))
    g.set_info(dx, g.dtype(x), xs)
    return dx


@register_gradient("Resize", since=10, inputs=(0,))
def resize_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy), None, None, None]


@register_gradient("Upsample", since=9, until=9, inputs=(0,))
def upsample_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy), None]
