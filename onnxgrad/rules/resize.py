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
the image side, no constant growing with it.

When scales, roi and the sizes along the resized axes are constants, the measuring node reads
only constants, so runtimes fold it and Hessians never differentiate it. When any of them exists
only at run time (scales or roi fed as inputs, sizes computed from the image, symbolic image
sides), the measuring node takes the forward's own scales/roi for axis a at run time (a Where
keeps axis a's entry and puts 1, or the identity crop, elsewhere) and the sides from ``Shape``:
nothing is needed when the gradient is built.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from ..tensorinfo import Dim

# Attributes that shape the per-axis matrix (copied to the measuring node).
_MATRIX_ATTRS = ("mode", "coordinate_transformation_mode", "cubic_coeff_a", "exclude_outside", "nearest_mode",
                 "antialias")

Params = Dict[str, Optional[List[float]]]


def _full(values: np.ndarray, axes: Optional[List[int]], rank: int, fill: List[float]) -> List[float]:
    """Per-axis values for all ``rank`` axes; ``axes`` (opset 18) lists the axes ``values`` cover."""
    if axes is None:
        return [float(v) for v in values]
    out = list(fill)
    for a, v in zip(axes, values):
        out[a % rank] = float(v)
    return out


def _names(op: Op) -> Dict[str, Optional[str]]:
    """The forward node's scales, roi (read by tf_crop_and_resize only) and sizes inputs, None when absent."""
    if op.op_type == "Upsample" or op.opset < 11:
        return {"scales": op.input(1), "roi": None, "sizes": None}
    crop = op.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    return {"scales": op.input(2), "roi": op.input(1) if crop else None, "sizes": op.input(3)}


def _inputs(g: Emitter, op: Op) -> Optional[Params]:
    """The forward node's scales and (tf_crop_and_resize only) roi as full-rank lists, None when
    absent; None for the whole when one of them is known only at run time.

    Sizes need no reading: the output's shape is what they produced."""
    rank = g.rank(op.inputs[0])
    names = _names(op)
    axes = op.attr("axes")
    axes = [int(a) for a in axes] if axes else None
    out: Params = {"scales": None, "roi": None}
    for key in ("scales", "roi"):
        name = names[key]
        value = g.constant_value(name) if name else None
        if name and value is None:
            return None
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


def _eye(g: Emitter, x: str, axis: int) -> str:
    """The identity [n, n] of x's side n along ``axis`` (static or read at run time), computed."""
    return g.EyeLike(g.constant_of_shape(_int_vector(g, [(x, axis), (x, axis)]), 0.0, like=x))


def _identity_along(g: Emitter, x: str, axis: int, basis: int) -> str:
    """:func:`_eye` laid out along (``basis``, ``axis``) with every other axis of size 1 (it is
    symmetric: the order of the two does not matter)."""
    return g.unsqueeze(_eye(g, x, axis), [k for k in range(g.rank(x)) if k not in (axis, basis)])


def _adjoint_along(g: Emitter, t: str, axis: int, rank: int, a_t: str, in_size: Dim, out_size: Dim,
                   k: Optional[int]) -> str:
    """``t`` contracted along ``axis`` with the rows of A^T [in, out]: per input position its K
    nonzero entries (TopK of |A^T|) gathered from t and weighted. K is the most nonzeros any
    position has, read at run time, or the bound ``k`` (which keeps the shapes static).

    The last axis is contracted on a copy with the last two axes swapped: a Gather along the last
    axis moves one element per index, along the one before it a whole row (onnxruntime: 1 ms
    against about 0.2 ms plus the two Transposes on segnet512's 64-channel 64x64 decoder)."""
    swap = None
    if axis == rank - 1 and rank > 2:
        swap = list(range(rank - 2)) + [rank - 1, rank - 2]
        t, axis = g.transpose(t, swap), rank - 2
    if k is None:
        nonzero = g.cast_like(g.Greater(g.Abs(a_t), g.const(0.0, like=a_t)), a_t)
        most = g.reduce("ReduceMax", g.reduce_sum(nonzero, [1], keepdims=False), [0])  # [1]
        picks = g.op("TopK", g.Abs(a_t), g.Cast(most, to=TensorProto.INT64), outputs=2, axis=1)[1]
    else:
        picks = g.op("TopK", g.Abs(a_t), outputs=2, axis=1, k=k)[1]
    trailing = [1] * (rank - 1 - axis)
    if isinstance(in_size, int) and isinstance(out_size, int):
        rows = g.const(np.arange(in_size).reshape(in_size, 1) * out_size, dtype=TensorProto.INT64)
        weights = g.Gather(g.reshape(a_t, [-1]), g.Add(picks, rows), axis=0)  # signed, [in, K]
        weights = g.reshape(weights, [in_size, -1] + trailing)
    else:
        weights = g.unsqueeze(g.GatherElements(a_t, picks, axis=1), range(2, 2 + len(trailing)))
    gathered = g.Gather(t, picks, axis=axis)  # axis becomes [in, K]
    summed = g.reduce_sum(g.Mul(gathered, weights), [axis + 1], keepdims=False)
    return summed if swap is None else g.transpose(summed, swap)


def _k_bound(op: Op, in_size: int, out_size: int, scale: float, crop: Optional[float]) -> int:
    """At most how many outputs read one input along an axis (opset 9-12 modes), for a scale of at
    most ``scale`` and a tf_crop_and_resize crop of ``crop`` (None: unknown until run time).

    Output o samples the input at x(o) = o * step + c and reads the taps within R of it (R = 1
    for nearest and linear, 2 for cubic), so an input is read by the outputs whose x(o) lies in an
    interval of width 2R: at most 2R / step + 1 of them; borders clamp, hence the margin."""
    mode = op.attr("coordinate_transformation_mode", "half_pixel" if op.opset >= 11 else "asymmetric")
    step = 1.0 / scale
    if mode in ("align_corners", "tf_crop_and_resize") and out_size > 1:
        if crop is None:
            return out_size
        step = (in_size - 1) * (crop if mode == "tf_crop_and_resize" else 1.0) / (out_size - 1)
    reach = 2 if op.attr("mode", "nearest") == "cubic" else 1
    return int(min(out_size, np.ceil((2 * reach + 2) / max(step, 1e-9)) + 2))


def _measure(g: Emitter, op: Op, x: str, axis: int, in_size: int, out_size: int, basis: int,
             params: Params) -> str:
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
    if op.op_type == "Upsample":
        measured = g.emit("Upsample", eye, scales, **attrs)
    else:
        roi = None
        if params["roi"] is not None:
            r = [0.0] * rank + [1.0] * rank
            r[axis], r[rank + axis] = params["roi"][axis], params["roi"][rank + axis]
            roi = g.const(np.asarray(r, np.float32), dtype=TensorProto.FLOAT)
        measured = g.emit("Resize", eye, roi, scales, sizes, **attrs)
    return g.reshape(measured, [in_size, out_size] if basis < axis else [out_size, in_size])


class _KeepAspect:
    """Resize with sizes and keep_aspect_ratio_policy not_larger/not_smaller (opset 18+).

    One scale (the min or max of sizes/in over ``axes``) applies to all of ``axes``, with the
    output rounded; the measuring node must see the same scale, so it resizes a tensor as large
    as the input along ``axes`` (ones there, the identity along the measured axis and a basis
    axis outside ``axes``), with the forward's policy and sizes, and keeps one slice along the
    other axes. With tf_crop_and_resize the ones become zeros where the crop extrapolates, so
    instead of a slice it keeps, per entry, the largest in magnitude along the other axes (the
    entry itself or 0).
    """

    def __init__(self, axes: List[int], sizes: str, values: Optional[List[int]], in_sizes: List[Dim],
                 scale: Optional[float], policy: str, roi: Optional[str]) -> None:
        """``sizes``: the forward's sizes input, ``values`` its value when constant; ``scale``: the
        one scale when sizes and the input's sides are constants, else None; ``roi``: the
        forward's roi under tf_crop_and_resize, else None."""
        self.axes, self.sizes, self.values, self.in_sizes = axes, sizes, values, in_sizes
        self.scale, self.policy, self.roi = scale, policy, roi

    @classmethod
    def of(cls, g: Emitter, op: Op, xs: Sequence[Dim]) -> "_KeepAspect":
        rank = len(xs)
        policy = op.attr("keep_aspect_ratio_policy")
        name = op.input(3)
        if name is None:
            raise GradientArgumentError(f"Resize node {op.name!r}: keep_aspect_ratio_policy needs sizes")
        roi = op.input(1) if op.attr("coordinate_transformation_mode") == "tf_crop_and_resize" else None
        axes = [int(a) % rank for a in op.attr("axes") or range(rank)]
        in_sizes = [xs[a] for a in axes]
        sizes = g.constant_value(name)
        values = None if sizes is None else [int(s) for s in sizes]
        static = [d for d in in_sizes if isinstance(d, int)]
        scale = None
        if values is not None and len(static) == len(in_sizes):
            ratios = [float(s) / d for s, d in zip(values, static)]
            scale = min(ratios) if policy == "not_larger" else max(ratios)
        return cls(axes, name, values, in_sizes, scale, policy, roi)

    def measure(self, g: Emitter, op: Op, x: str, axis: int, out_size: Dim) -> Tuple[int, str]:
        """(basis axis, A_axis^T [in, out] if basis < axis else A_axis [out, in]); basis -1 is an
        axis put before x's own ones."""
        rank = g.rank(x)
        free = [k for k in range(rank) if k != axis and k not in self.axes]
        if not free:
            return -1, self._measure_lifted(g, op, x, axis, out_size)
        basis = free[0]
        in_size = self.in_sizes[self.axes.index(axis)]
        others = [a for a in self.axes if a != axis]
        if not isinstance(in_size, int) or not isinstance(out_size, int) or self.scale is None or self.roi is not None:
            # sides or sizes known at run time, or a crop: x's sides read from its shape
            items: List[Side] = [(x, a) if a in self.axes else (x, axis) if a == basis else 1 for a in range(rank)]
            eye = g.Expand(_identity_along(g, x, axis, basis), _int_vector(g, items))
            measured = g.emit("Resize", eye, self.roi, None, self.sizes, axes=self.axes,
                              keep_aspect_ratio_policy=self.policy, **self._attrs(op))
            kept = self._one_of(g, measured, others)
            return basis, g.squeeze(kept, [k for k in range(rank) if k not in (axis, basis)])
        shape = [1] * rank
        for a, n in zip(self.axes, self.in_sizes):
            shape[a] = int(n)  # type: ignore[arg-type]  # static: self.scale is known
        shape[basis] = in_size
        eye_shape = [1] * rank
        eye_shape[basis] = eye_shape[axis] = in_size
        eye = g.Expand(_identity(g, in_size, eye_shape, x), g.ints(shape))
        measured = g.emit("Resize", eye, None, None, g.ints(self.values), axes=self.axes,  # type: ignore[arg-type]
                          keep_aspect_ratio_policy=self.policy, **self._attrs(op))
        kept = self._one_of(g, measured, others)
        return basis, g.reshape(kept, [in_size, out_size] if basis < axis else [out_size, in_size])

    def _attrs(self, op: Op) -> Dict[str, object]:
        """The measuring node's attributes (outside a crop the output is 0, not a constant)."""
        attrs = {k: op.attr(k) for k in _MATRIX_ATTRS if op.has_attr(k)}
        if self.roi is not None:
            attrs["extrapolation_value"] = 0.0
        return attrs

    def _one_of(self, g: Emitter, measured: str, others: List[int]) -> str:
        """``measured`` reduced to one entry along ``others`` (kept with size 1): the first one, or
        under a crop, where ``measured`` is the entry or 0 along them, the largest in magnitude."""
        if not others:
            return measured
        if self.roi is None:
            return g.slice(measured, [0] * len(others), [1] * len(others), others)
        high, low = g.reduce("ReduceMax", measured, others), g.reduce("ReduceMin", measured, others)
        return g.Where(g.Less(g.Abs(high), g.Abs(low)), low, high)

    def _measure_lifted(self, g: Emitter, op: Op, x: str, axis: int, out_size: Dim) -> str:
        """A_axis^T [in, out] when ``axes`` is every axis of x: measured on a tensor of two more
        axes put first, the identity's basis and a unit axis (``axes`` shifted past them), the form
        onnxruntime's linear and cubic kernels take for a 2-D or 3-D x (outer two scales 1)."""
        rank = g.rank(x)
        eye = g.unsqueeze(_eye(g, x, axis), [1] + [k + 2 for k in range(rank) if k != axis])
        sides = _int_vector(g, [(x, axis), 1, *((x, k) for k in range(rank))])
        measured = g.emit("Resize", g.Expand(eye, sides), self.roi, None, self.sizes, axes=[k + 2 for k in self.axes],
                          keep_aspect_ratio_policy=self.policy, **self._attrs(op))
        measured = self._one_of(g, measured, [k + 2 for k in self.axes if k != axis])
        n = self.in_sizes[self.axes.index(axis)]
        if isinstance(n, int) and isinstance(out_size, int):
            return g.reshape(measured, [n, out_size])
        return g.squeeze(measured, [1] + [k + 2 for k in range(rank) if k != axis])


Side = Union[int, Tuple[str, int]]


def _int_vector(g: Emitter, items: Sequence[Side]) -> str:
    """A 1-D int64 tensor of ``items``: ints, or (t, axis) for t's side along axis (read at run
    time unless static); consecutive constants are written as one."""
    values: List[Side] = []
    for item in items:
        if isinstance(item, tuple):
            shape = g.shape(item[0])
            side = shape[item[1]] if shape is not None else None
            values.append(side if isinstance(side, int) else item)
        else:
            values.append(item)
    if all(isinstance(v, int) for v in values):
        return g.ints(values)  # type: ignore[arg-type]
    pieces: List[str] = []
    run: List[int] = []
    for v in values:
        if isinstance(v, int):
            run.append(v)
            continue
        if run:
            pieces.append(g.ints(run))
            run = []
        pieces.append(g.dims(v[0], [v[1]]))
    if run:
        pieces.append(g.ints(run))
    return g.Concat(*pieces, axis=0)


class _RunTime:
    """The measuring node's scales, roi and sizes for one axis, computed in the graph from the
    forward's own (any of them may be known only at run time)."""

    def __init__(self, g: Emitter, op: Op, rank: int) -> None:
        self.g, self.op, self.rank = g, op, rank
        names = _names(op)
        self.scales, self.roi, self.sizes = names["scales"], names["roi"], names["sizes"]
        axes = op.attr("axes")
        #: the axes the forward's scales, sizes and roi list, in their order
        self.axes = [int(a) % rank for a in axes] if axes else list(range(rank))
        self.axes_attr = [int(a) for a in axes] if axes else None
        given = self._given(self.scales), self._given(self.sizes)
        #: "scales" or "sizes" when the forward's choice is known now, "either" when it is made at run time
        self.mode = "either" if given == (None, None) else "sizes" if given[0] is False or given[1] else "scales"

    def _given(self, name: Optional[str]) -> Optional[bool]:
        """Whether input ``name`` holds values: False when absent or a constant empty tensor,
        True when a constant with values, None when known only at run time."""
        if name is None:
            return False
        value = self.g.constant_value(name)
        return None if value is None else bool(value.size)

    def resized(self, a: int, xs: Sequence[Dim], ys: Optional[Sequence[Dim]]) -> bool:
        """Whether axis ``a`` may be resized (False only where it is statically the identity)."""
        if a not in self.axes:
            return False
        if self.roi is not None:
            return True  # the crop moves the samples even at equal sides
        if self.mode == "scales":
            value = self.g.constant_value(self.scales)
            return value is None or float(value[self.axes.index(a)]) != 1.0
        if self.mode == "sizes":
            return ys is None or not isinstance(xs[a], int) or xs[a] != ys[a]
        return True

    def _cut(self, t: str, like: str) -> str:
        """``t`` cut to ``like``'s run-time length."""
        g = self.g
        return g.Slice(t, g.ints([0]), g.reshape(g.Size(like), [1]), g.ints([0]))

    def _masked(self, name: str, keep: Sequence[bool], fill: str, sized: bool) -> str:
        """``name`` where ``keep``, ``fill`` (as long as ``name``) elsewhere. ``sized``: the mask
        is cut to ``name``'s run-time length, so that an empty ``name`` (scales not given at opset
        11-12, a sizes input then empty) gives an empty result; being an elementwise function of
        ``name``, the result keeps its static length too (onnx's inference of the measuring node
        reads it to tell which was given)."""
        mask = self.g.const(np.asarray(keep, bool), dtype=TensorProto.BOOL)
        return self.g.Where(self._cut(mask, name) if sized else mask, name, fill)

    def inputs(self, x: str, a: int, basis: int) -> Tuple[Optional[str], Optional[str], Optional[str]]:
        """(roi, scales, sizes) of the node measuring axis ``a`` on the identity along (basis, a):
        axis a's entries of the forward's roi and scales, the identity's elsewhere (no crop,
        scale 1); sizes the identity's sides, the output's side along axis a."""
        g, k = self.g, len(self.axes)
        keep = [n == a for n in self.axes]
        roi = scales = sizes = None
        if self.roi is not None:
            fill = g.const(np.asarray([0.0] * k + [1.0] * k, np.float32), like=self.roi)
            roi = self._masked(self.roi, keep + keep, fill, sized=False)
        if self.mode != "sizes" and self.scales is not None:
            # scales are positive: s / s is 1 and as long as s (no float constant, which a float64
            # cast of the gradient model would turn to double where Resize wants float)
            ones = g.Div(self.scales, self.scales)
            scales = self._masked(self.scales, keep, ones, sized=self.mode == "either")
        if self.mode != "scales" and self.sizes is not None:
            y = self.op.outputs[0]
            sizes = _int_vector(g, [(y, a) if n == a else (x, a) if n == basis else 1 for n in self.axes])
            if self.mode == "either":
                sizes = self._masked(self.sizes, [False] * k, self._cut(sizes, self.sizes), sized=True)
        return roi, scales, sizes

    def measure(self, x: str, a: int, basis: int, in_size: Dim, out_size: Dim) -> str:
        """A_a^T [in, out] if basis < a else A_a [out, in], measured at run time; its shape is
        stated when the sides are static."""
        g, op = self.g, self.op
        eye = _identity_along(g, x, a, basis)
        attrs = {k: op.attr(k) for k in _MATRIX_ATTRS if op.has_attr(k)}
        roi, scales, sizes = self.inputs(x, a, basis)
        if roi is not None:
            attrs["extrapolation_value"] = 0.0  # outside the crop the output is a constant, not x
        if op.op_type == "Upsample":
            measured = g.emit("Upsample", eye, scales, **attrs)
        else:
            measured = g.emit("Resize", eye, roi, scales, sizes, axes=self.axes_attr, **attrs)
        if isinstance(in_size, int) and isinstance(out_size, int):
            return g.reshape(measured, [in_size, out_size] if basis < a else [out_size, in_size])
        return g.squeeze(measured, [k for k in range(self.rank) if k not in (a, basis)])


def _constant_axes(xs: Sequence[Dim], ys: Optional[Sequence[Dim]], params: Optional[Params],
                   aspect: Optional[_KeepAspect], crop: bool) -> Optional[List[int]]:
    """The axes to contract when every matrix can be measured from constants (scales, roi,
    keep-aspect sizes, the sides along those axes), else None."""
    if params is None or ys is None or (aspect is not None and aspect.scale is None):
        return None
    axes = []
    for a in range(len(xs)):
        if aspect is not None:
            if a not in aspect.axes:
                continue  # a crop too leaves the axes outside ``axes`` alone
            unit = aspect.scale == 1.0
        elif params["scales"] is not None:
            unit = params["scales"][a] == 1.0
        else:
            unit = xs[a] == ys[a]
        if unit and not crop:
            continue  # the identity along this axis
        if not isinstance(xs[a], int) or not isinstance(ys[a], int):
            return None
        axes.append(a)
    return axes


def _runtime_grad(g: Emitter, op: Op, dy: str, xs: Sequence[Dim], ys: Optional[Sequence[Dim]],
                  aspect: Optional[_KeepAspect], runtime_k: bool) -> str:
    """The gradient with each axis's matrix measured from the forward's run-time inputs."""
    x, rank = op.inputs[0], len(xs)
    source = _RunTime(g, op, rank)
    dx = dy
    # Axes whose sides are statically equal (their scale is likely 1: N, C) are contracted where
    # the tensor is smallest: last when upsampling (on the input-sized result), first when
    # downsampling (on dy).
    same = [ys is not None and isinstance(xs[a], int) and xs[a] == ys[a] for a in range(rank)]
    shrinks = ys is not None and all(isinstance(d, int) for d in (*xs, *ys)) and \
        np.prod(ys, dtype=np.int64) < np.prod(xs, dtype=np.int64)  # type: ignore[arg-type]
    for a in sorted(range(rank), key=lambda a: same[a] != shrinks):
        if (a not in aspect.axes) if aspect is not None else not source.resized(a, xs, ys):
            continue
        in_size, out_size = xs[a], (ys[a] if ys is not None else None)
        k = None
        if not runtime_k:
            if not isinstance(in_size, int) or not isinstance(out_size, int):
                raise GradientArgumentError(
                    f"{op.op_type} node {op.name!r}: before opset 13 the gradient needs static sides along "
                    f"resized axis {a} (its adjoint takes a static number of taps); convert the model to opset 13")
            # scales give out = floor(in * scale): the scale is below (out + 1) / in
            scale = (out_size + (0 if source.mode == "sizes" else 1)) / in_size
            k = _k_bound(op, in_size, out_size, scale, None if source.roi is not None else 1.0)
        if aspect is not None:
            basis, m = aspect.measure(g, op, x, a, out_size)
        else:
            basis = 0 if a else 1
            m = source.measure(x, a, basis, in_size, out_size)
        a_t = m if basis < a else g.Transpose(m, perm=[1, 0])
        dx = _adjoint_along(g, dx, a, rank, a_t, in_size, out_size, k)
    return dx


def _resize_grad(g: Emitter, op: Op, dy: str, runtime_k: bool) -> str:
    """dx of Resize/Upsample; ``runtime_k``: the adjoint's number of taps may be read at run time."""
    x, y = op.inputs[0], op.outputs[0]
    xs, ys = g.shape(x), g.shape(y)
    if xs is None:
        raise GradientArgumentError(f"{op.op_type} node {op.name!r}: the gradient needs the rank of its input")
    rank = len(xs)
    if rank < 2:
        raise GradientArgumentError(f"{op.op_type} node {op.name!r}: the gradient needs an input of rank 2 or more")
    params = _inputs(g, op)
    crop = op.attr("coordinate_transformation_mode") == "tf_crop_and_resize"
    aspect = _KeepAspect.of(g, op, xs) if op.attr("keep_aspect_ratio_policy", "stretch") != "stretch" else None
    axes = _constant_axes(xs, ys, params, aspect, crop)
    if axes is None or params is None or ys is None:
        return _runtime_grad(g, op, dy, xs, ys, aspect, runtime_k)
    dx = dy
    for a in axes:
        in_size, out_size = int(xs[a]), int(ys[a])  # type: ignore[arg-type]
        if aspect is not None:
            basis, m = aspect.measure(g, op, x, a, out_size)
        else:
            basis = 0 if a else 1
            m = _measure(g, op, x, a, in_size, out_size, basis, params)
        # m is A_a^T [in, out] when basis < a, else A_a [out, in]
        a_t = m if basis < a else g.Transpose(m, perm=[1, 0])
        k = None
        if not runtime_k:
            scale = params["scales"][a] if params["scales"] is not None else out_size / in_size
            roi = params["roi"]
            k = _k_bound(op, in_size, out_size, scale, roi[rank + a] - roi[a] if roi else 1.0)
        dx = _adjoint_along(g, dx, a, rank, a_t, in_size, out_size, k)
    return dx


# K, the adjoint's number of taps per input position, is read at run time from Resize-13 on; before,
# a static bound keeps every shape static: a Hessian undoes the adjoint's broadcast over K, which
# for a K unknown until run time takes ReduceSum with its axes as an input (opset 13).
@register_gradient("Resize", since=13, inputs=(0,))
def resize_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy, runtime_k=True), None, None, None]


@register_gradient("Resize", since=10, until=12, inputs=(0,))
def resize_grad_10(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy, runtime_k=False), None, None, None]


@register_gradient("Upsample", since=9, until=9, inputs=(0,))
def upsample_grad(g: Emitter, op: Op, dy: str) -> list:
    return [_resize_grad(g, op, dy, runtime_k=False), None]
