"""The gradient judge: onnxgrad's gradients against float64 central differences.

How a check works (``check_gradients``):

1. The model is cast to float64 (inputs, outputs, value_info, initializers, constants, ``Cast``
   targets, in every subgraph and local function) and differentiated *as cast*: a float16,
   bfloat16 or float32 model is judged by the same gradient rules run in float64, never by
   finite differences in its own low precision.
2. Random seeds ``u`` for the ys (or the given ``grad_ys``) and a random direction ``v`` per x.
   The analytic directional derivative ``sum_i g_i v_i`` is compared with the central difference
   ``(F(x + h v) - F(x - h v)) / 2h`` of ``F = sum_j u_j y_j`` at one fixed step ``h`` (``STEP``).
3. Tolerance: ``rtol * max(sum_i |g_i v_i|, |numeric|) + noise``. The first term scales with the
   derivative being checked (the sum of the magnitudes of its terms, so cancellation in the sum
   does not make it vanish); ``noise`` is the round-off of the difference quotient itself,
   ``NOISE_ULPS * eps * sum_j |u_j| max|y_j(x +- h v)| / 2h`` summed only over the outputs that
   the step actually changed: an output that does not depend on x (a -FLT_MAX mask, an unrelated
   head) adds nothing. There is no retry at another step. Where a comparison fails, the
   round-off of the directions involved is measured before the verdict (``_roundoff``): an
   output computed by cancellation rounds in ulps of its terms, not of its value, and an output
   the step leaves unchanged (a saturated tanh) while it depends on x has a quotient of 0 with
   the same round-off as a changed one; an output that does not depend on x still adds nothing.
4. Kinks and ties: when the central difference disagrees, the one-sided quotients
   ``(F(x+hv) - F(x)) / h`` and ``(F(x) - F(x-hv)) / h`` are compared. For a smooth F they
   differ by ``h F''`` only; if they disagree beyond their tolerance, x sits on a kink (Relu at
   0, a tied maximum) and the verdict is ``KINK``: neither proven nor refuted, never a silent
   pass or fail (the analytic value need not lie between them where several kinks meet with
   seeds of both signs). Otherwise ``FAIL``.
5. Jacobian: the full matrix (one-hot seeds against one-hot steps) when ``x.size * y.size`` is at
   most ``jacobian_limit``; above it, ``samples`` random rows and columns: the block they span,
   the sampled rows against ``J v`` and the sampled columns against ``u^T J``. Never skipped.
   A model with an op that has no float64 form (Celu, QuantizeLinear, RotaryEmbedding) is
   differentiated in its own dtype and that gradient model is cast instead (onnx.reference then
   evaluates the op in float64).
6. A model whose floats are not float64 is also differentiated in its own dtype; that gradient
   must agree with the float64 one to ``NATIVE_RTOL[dtype]`` of the largest gradient entry (it
   proves the rules emit the same formula in every dtype, e.g. no float16-only error).

Runtimes: onnxruntime (graph optimizations off), per model; where it lacks a float64 kernel or
rejects the model, ``onnx.reference.ReferenceEvaluator``. Reference-evaluator defects worked
around here: its Erf computes in float32 (replaced by a float64 kernel), it returns numpy
scalars for 0-d outputs (wrapped back into arrays) and it cannot return a tensor that is not a
graph output (ys, xs and stop tensors are appended as outputs). onnxruntime's float64 kernels
listed in ``ORT_FLOAT64_DEFECTS`` lose precision: models holding them run in onnx.reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from .api import gradients
from .arguments import check_names, parse_names
from .errors import GradientArgumentError, OnnxGradError
from .graph import FLOAT_TYPES, GraphIndex
from .loading import ModelLike, load_model

#: The float64 central-difference step: truncation (h^2 f'''/6) and round-off (eps |f| / h) are
#: both about 1e-11 of the derivative's scale, far below RTOL.
STEP = 1e-5
#: Relative tolerance of every comparison in float64.
RTOL = 1e-5
#: Round-off allowed per output element, in units of float64 epsilon (a few ops' rounding each).
NOISE_ULPS = 64
_EPS64 = float(np.finfo(np.float64).eps)
_EPS: Dict[int, float] = {TensorProto.DOUBLE: _EPS64, TensorProto.FLOAT: 1.19e-7, TensorProto.FLOAT16: 9.77e-4,
        TensorProto.BFLOAT16: 7.81e-3}
#: Measured round-off allowed in a failing comparison: a central quotient's round-off is at most
#: (|e+| + |e-|) / 2h for evaluation errors e; ``_roundoff`` measures max |e| (a lower bound: a
#: least-squares fit absorbs part of it), so twice that.
ROUNDOFF_FACTOR = 2.0
#: The largest round-off ``_roundoff`` accepts as measured, in ulps of the output: cancellation
#: of terms up to 2^16 times the output's size.
ROUNDOFF_CAP = 2.0 ** 16
#: The step telling an output the fixed step leaves unchanged, but that depends on x, from one
#: that does not depend on x (``_roundoff``).
DEPENDENCE_STEP = 1e-2
_NINE = np.vander(np.arange(-4.0, 5.0), 4)
#: Residuals of the least-squares cubic through 9 equally spaced values: their round-off.
_OFF_CUBIC = np.eye(9) - _NINE @ np.linalg.pinv(_NINE)
#: Agreement required between a model's own-dtype gradient and its float64 gradient, relative to
#: the largest float64 gradient entry: a few roundings of that dtype through a backward pass.
NATIVE_RTOL: Dict[int, float] = {TensorProto.FLOAT: 1e-3, TensorProto.FLOAT16: 3e-2, TensorProto.BFLOAT16: 1.5e-1}
#: Rows and columns sampled from a Jacobian larger than ``jacobian_limit``.
SAMPLES = 8

#: Precision attributes whose default is float32: set explicitly, or the op computes in float32.
_STASH_DEFAULT_FLOAT = {("LayerNormalization", "stash_type"), ("GroupNormalization", "stash_type"),
                        ("RMSNormalization", "stash_type")}
#: Ops whose ONNX function body holds float32 constants: no float64 form despite their schema.
_FLOAT32_BODIES = {"MeanVarianceNormalization"}
#: onnxruntime float64 kernels that lose precision: models holding them run in onnx.reference.
ORT_FLOAT64_DEFECTS = {"Shrink": "rounds its input through float32 (Shrink(-0.7) = -0.69999999)"}

PASS, FAIL, KINK = "PASS", "FAIL", "KINK"
_NON_DIFF = onnx.defs.OpSchema.DifferentiationCategory.NonDifferentiable
_RANK = {PASS: 0, KINK: 1, FAIL: 2}

#: Attributes holding an element type that must follow the cast to float64.
_DTYPE_ATTRS = {("Cast", "to"), ("RandomNormal", "dtype"), ("RandomUniform", "dtype"), ("RandomNormalLike", "dtype"),
                ("RandomUniformLike", "dtype"), ("EyeLike", "dtype"), ("Bernoulli", "dtype")}
#: Attributes choosing an internal precision: float64 all the way, or round-off swamps the check.
_PRECISION_ATTRS = {("LayerNormalization", "stash_type"), ("GroupNormalization", "stash_type"),
                    ("RMSNormalization", "stash_type"), ("Attention", "softmax_precision")}


class _ShapeJump(Exception):
    """A step changed the shape of an output: no difference quotient exists there."""


class CheckError(OnnxGradError, RuntimeError):
    """The check itself cannot run: no runtime evaluates the model (say which and why)."""

    exit_code = 7


@dataclass
class XCheck:
    """The verdict for one x.

    ``analytic`` is ``sum(grad_x * v)`` in float64, ``numeric`` the central difference, ``error``
    their distance and ``tolerance`` what it may be (see the module docstring); ``left`` and
    ``right`` are the one-sided quotients (computed when the central one disagrees).
    ``jacobian_ratio`` is the worst checked Jacobian entry's error over its tolerance (passes at
    <= 1; rows/columns sampled above the limit, ``jacobian_sampled``). ``native_ratio`` compares
    the gradient computed in the model's own dtype with the float64 one (passes at <= 1; None for
    a float64 model or where no runtime runs that dtype, see ``note``). ``verdict`` is PASS, FAIL
    or KINK (the check landed on a kink or tie; see ``note``).
    """

    name: str
    shape: tuple
    analytic: float
    numeric: float
    error: float
    tolerance: float
    verdict: str = PASS
    left: Optional[float] = None
    right: Optional[float] = None
    jacobian_ratio: Optional[float] = None
    jacobian_sampled: bool = False
    native_ratio: Optional[float] = None
    step: float = STEP
    note: str = ""

    @property
    def relative_error(self) -> float:
        """``error`` relative to the larger of the two derivatives."""
        return self.error / max(abs(self.analytic), abs(self.numeric), 1e-300)

    @property
    def ok(self) -> bool:
        """True only for PASS: a kink is not a proof."""
        return self.verdict == PASS

    @property
    def kink(self) -> bool:
        """The check landed on a kink or tie (neither proven nor refuted)."""
        return self.verdict == KINK


@dataclass
class CheckReport:
    """One :class:`XCheck` per x; ``ok`` when all pass.

    ``gradient_model`` is the gradient model in the model's own dtype (the one users run),
    ``float64_model`` the one the judge evaluated; ``runtime`` names the runtime used per model;
    ``rtol`` is the relative tolerance applied, ``cast_after`` says when the gradient could not be
    built in float64 (a given ``grad_model``, an op without a float64 form) and was cast instead.
    """

    checks: List[XCheck] = field(default_factory=list)
    gradient_model: Optional[ModelProto] = None
    float64_model: Optional[ModelProto] = None
    runtime: Dict[str, str] = field(default_factory=dict)
    rtol: float = 0.0
    cast_after: str = ""  # why and how the gradient was built in the model's dtype, then cast

    @property
    def ok(self) -> bool:
        """Every x passed."""
        return all(c.ok for c in self.checks)

    @property
    def verdict(self) -> str:
        """FAIL if any x failed, else KINK if any landed on a kink, else PASS."""
        return max((c.verdict for c in self.checks), key=_RANK.__getitem__, default=PASS)


def session(model: ModelProto) -> Any:
    """An onnxruntime CPU session with graph optimizations off (numerics as written)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


class Evaluator:
    """Runs one model: onnxruntime if it can, else ``onnx.reference`` (decided at the first run)."""

    def __init__(self, model: ModelProto, what: str, reference: bool = False) -> None:
        self.model = model
        self.what = what
        self.reference = reference
        self.runtime = ""
        self._run: Optional[Callable[..., Any]] = None

    def run(self, names: Sequence[str], feeds: Mapping[str, np.ndarray]) -> List[np.ndarray]:
        """The named outputs (as arrays) for ``feeds``."""
        feeds = dict(feeds)
        if self._run is None:
            return self._first_run(list(names), feeds)
        return [np.asarray(a) for a in self._run(list(names), feeds)]

    def _first_run(self, names: List[str], feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        defect = next((n.op_type for n in self.model.graph.node if n.op_type in ORT_FLOAT64_DEFECTS), None)
        ort_error = f"its float64 {defect} {ORT_FLOAT64_DEFECTS[defect]}" if defect else "not asked"
        try:
            if defect or self.reference:
                raise CheckError(ort_error)
            sess = session(self.model)
            out = sess.run(names, feeds)
            self._run, self.runtime = sess.run, "onnxruntime"
            return [np.asarray(a) for a in out]
        except Exception as e:  # a kernel onnxruntime lacks (float64 Conv...) or an opset it does not know
            ort_error = " ".join(str(e).split())[:300]
        from onnx.reference import ReferenceEvaluator

        try:
            opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 1)
            ref = ReferenceEvaluator(self.model, new_ops=reference_kernels(opset))
            out = ref.run(names, feeds)
        except Exception as e:
            raise CheckError(f"cannot evaluate the {self.what}: onnxruntime: {ort_error}; onnx.reference: "
                             f"{' '.join(str(e).split())[:300]}") from None
        self._run, self.runtime = ref.run, "onnx.reference"
        return [np.asarray(a) for a in out]


def reference_kernels(opset: int) -> List[type]:
    """Kernels replacing onnx.reference's, for a model at ``opset``, where it computes another
    function (BatchNormalization-9 mixes in batch statistics when momentum is set; Softmax and
    LogSoftmax before opset 13 skip the 2-D coercion; LRN sums over the batch axis; MaxUnpool
    ignores output_shape; Resize misreads opset 10's inputs and negative axes; LSTM, GRU and RNN
    ignore activations, activation_alpha/beta, clip, input_forget and sequence_lens), loses float64
    precision (Erf, and Gelu's function body whose inner evaluator ignores replacements,
    DynamicQuantizeLinear and CausalConvWithState compute in float32; MeanVarianceNormalization's
    function body has float32 constants), fails (ConvTranspose with output_shape) or lacks a
    kernel (GlobalLpPool, MaxRoiPool, linear Upsample, GridSample's opset-16 mode names,
    DequantizeLinear before opset 19)."""
    from onnx.reference.op_run import OpRun
    from onnx.reference.ops.op_batch_normalization import BatchNormalization_14 as BatchNormBase
    from onnx.reference.ops.op_conv_transpose import ConvTranspose as ConvTransposeBase
    from onnx.reference.ops.op_dequantize_linear import DequantizeLinear_23 as DequantizeBase
    from onnx.reference.ops.op_grid_sample import GridSample as GridSampleBase
    from onnx.reference.ops.op_resize import Resize as ResizeBase

    erf = np.vectorize(math.erf, otypes=[np.float64])

    class Erf(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray) -> Tuple[np.ndarray]:
            return (erf(x).astype(x.dtype),)

    class Gelu(OpRun):
        op_domain = ""

        def _run(self, x: np.ndarray, approximate: str = "none") -> Tuple[np.ndarray]:
            if approximate == "tanh":
                y = 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
            else:
                y = 0.5 * x * (1 + erf(x / math.sqrt(2)))
            return (y.astype(x.dtype),)

    class GridSample(GridSampleBase):  # onnx.reference knows only opset 20's mode names
        op_domain = ""

        def _run(self, x: np.ndarray, grid: np.ndarray, mode: Optional[str] = None, padding_mode: Optional[str] = None,
                 align_corners: Optional[int] = None) -> Tuple[np.ndarray]:
            mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode or "", mode)
            return super()._run(x, grid, mode=mode, padding_mode=padding_mode, align_corners=align_corners)

    class DequantizeLinear(DequantizeBase):  # onnx.reference implements opset 19 and newer only
        op_domain = ""

    class DynamicQuantizeLinear(OpRun):  # onnx.reference computes the scale in float32
        op_domain = ""

        def _run(self, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
            hi, lo = max(0.0, float(np.max(x))), min(0.0, float(np.min(x)))
            scale = 1.0 if hi == lo else (hi - lo) / 255
            zero = float(np.rint(min(255.0, max(0.0, -lo / scale))))
            y = np.clip(np.rint(x / scale) + zero, 0, 255)
            return y.astype(np.uint8), np.array(scale, x.dtype), np.array(zero, np.uint8)

    class CausalConvWithState(OpRun):  # onnx.reference computes the activation in float32
        op_domain = ""

        def _run(self, x: np.ndarray, w: np.ndarray, bias: Optional[np.ndarray] = None,
                 past: Optional[np.ndarray] = None, activation: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
            from onnx.reference.ops.op_conv import _conv_implementation

            k = w.shape[2]
            pad = np.zeros((x.shape[0], x.shape[1], k - 1), x.dtype) if past is None else past
            padded = np.concatenate([pad, x], axis=2)
            y = _conv_implementation(padded, w, bias, "NOTSET", [1], x.shape[1], [k], [0, 0], [1]).astype(x.dtype)
            if activation in ("silu", "swish"):
                y = y / (1 + np.exp(-y))
            return y, padded[:, :, padded.shape[2] - (k - 1):]

    class MaxUnpool(OpRun):  # onnx.reference addresses the inferred shape, not output_shape
        op_domain = ""

        def _run(self, x: np.ndarray, indices: np.ndarray, output_shape: Optional[np.ndarray] = None,
                 kernel_shape: Optional[List[int]] = None, pads: Optional[List[int]] = None,
                 strides: Optional[List[int]] = None) -> Tuple[np.ndarray]:
            n = len(kernel_shape or [])
            if output_shape is None:
                st, pd = strides or [1] * n, pads or [0] * (2 * n)
                spatial = [(d - 1) * s + k - pd[i] - pd[i + n]
                           for i, (d, s, k) in enumerate(zip(x.shape[2:], st, kernel_shape or []))]
                output_shape = np.array(list(x.shape[:2]) + spatial)
            y = np.zeros(int(np.prod(output_shape)), x.dtype)
            y[indices.reshape(-1)] = x.reshape(-1)
            return (y.reshape([int(d) for d in output_shape]),)

    class LRN(OpRun):  # onnx.reference sums the squares over a window of the batch axis, not channels
        op_domain = ""

        def _run(self, x: np.ndarray, alpha: float = 1e-4, beta: float = 0.75, bias: float = 1.0,
                 size: int = 1) -> Tuple[np.ndarray]:
            lo, hi = (size - 1) // 2, -(-(size - 1) // 2)
            sq = x * x
            window = np.stack([sq[:, max(0, c - lo):min(x.shape[1], c + hi + 1)].sum(axis=1)
                               for c in range(x.shape[1])], axis=1)
            return ((x / (bias + alpha / size * window) ** beta).astype(x.dtype),)

    class MeanVarianceNormalization(OpRun):  # its function body's constants are float32
        op_domain = ""

        def _run(self, x: np.ndarray, axes: Optional[List[int]] = None) -> Tuple[np.ndarray]:
            ax = tuple(axes if axes is not None else [0, 2, 3])
            mean = x.mean(axis=ax, keepdims=True)
            var = (x * x).mean(axis=ax, keepdims=True) - mean * mean
            return (((x - mean) / (np.sqrt(var) + 1e-9)).astype(x.dtype),)

    class GlobalLpPool(OpRun):  # no onnx.reference kernel
        op_domain = ""

        def _run(self, x: np.ndarray, p: int = 2) -> Tuple[np.ndarray]:
            ax = tuple(range(2, x.ndim))
            return ((np.abs(x) ** p).sum(axis=ax, keepdims=True) ** (1.0 / p),)

    class MaxRoiPool(OpRun):  # no onnx.reference kernel; onnxruntime's (Caffe's) bins
        op_domain = ""

        def _run(self, x: np.ndarray, rois: np.ndarray, pooled_shape: Optional[List[int]] = None,
                 spatial_scale: float = 1.0) -> Tuple[np.ndarray]:
            ph, pw = pooled_shape or [1, 1]
            height, width = x.shape[2:]
            y = np.zeros((rois.shape[0], x.shape[1], ph, pw), x.dtype)
            for n, roi in enumerate(rois):
                x1, y1, x2, y2 = (int(np.floor(v * spatial_scale + 0.5)) for v in roi[1:5])
                bin_h, bin_w = max(y2 - y1 + 1, 1) / ph, max(x2 - x1 + 1, 1) / pw
                for i in range(ph):
                    h0 = min(max(int(np.floor(i * bin_h)) + y1, 0), height)
                    h1 = min(max(int(np.ceil((i + 1) * bin_h)) + y1, 0), height)
                    for j in range(pw):
                        w0 = min(max(int(np.floor(j * bin_w)) + x1, 0), width)
                        w1 = min(max(int(np.ceil((j + 1) * bin_w)) + x1, 0), width)
                        if h1 > h0 and w1 > w0:
                            y[n, :, i, j] = x[int(roi[0]), :, h0:h1, w0:w1].max(axis=(1, 2))
            return (y,)

    class Resize(ResizeBase):  # onnx.reference misreads opset 10's (X, scales) and negative axes
        op_domain = ""

        def _run(self, x: np.ndarray, roi: Optional[np.ndarray] = None, scales: Optional[np.ndarray] = None,
                 sizes: Optional[np.ndarray] = None, antialias: Optional[int] = None,
                 axes: Optional[List[int]] = None, coordinate_transformation_mode: Optional[str] = None,
                 cubic_coeff_a: Optional[float] = None, exclude_outside: Optional[int] = None,
                 extrapolation_value: Optional[float] = None, keep_aspect_ratio_policy: Optional[str] = None,
                 mode: Optional[str] = None, nearest_mode: Optional[str] = None) -> Tuple[np.ndarray]:
            if len(self.onnx_node.input) == 2:
                roi, scales = None, roi
                coordinate_transformation_mode = coordinate_transformation_mode or "asymmetric"
                nearest_mode = nearest_mode or "floor"
            return super()._run(x, roi, scales, sizes, antialias,
                                None if axes is None else [a % x.ndim for a in axes],
                                coordinate_transformation_mode, cubic_coeff_a, exclude_outside, extrapolation_value,
                                keep_aspect_ratio_policy, mode, nearest_mode)

    class Upsample(OpRun):  # onnx.reference has only integer-scale nearest
        op_domain = ""

        def _run(self, x: np.ndarray, scales: np.ndarray, mode: str = "nearest") -> Tuple[np.ndarray]:
            from onnx.reference.ops.op_resize import _interpolate_nd, _linear_coeffs, _nearest_coeffs

            def nearest(r: float, scale: float) -> np.ndarray:
                return _nearest_coeffs(r, mode="floor")

            fct = _linear_coeffs if mode in ("linear", "bilinear") else nearest
            y = _interpolate_nd(x, fct, scale_factors=[float(s) for s in scales],
                                coordinate_transformation_mode="asymmetric")
            return (y.astype(x.dtype),)

    class ConvTranspose(ConvTransposeBase):  # onnx.reference fails on output_shape and on groups:
        op_domain = ""                        # explicit pads, and one call per group

        def _run(self, X: np.ndarray, W: np.ndarray, B: Optional[np.ndarray] = None,  # type: ignore[override]  # noqa: N803
                 **attrs: Any) -> Tuple[np.ndarray]:
            output_shape, group = attrs.get("output_shape"), attrs.get("group") or 1
            if output_shape is not None:
                n = X.ndim - 2
                k, d = list(attrs.get("kernel_shape") or W.shape[2:]), list(attrs.get("dilations") or [1] * n)
                st, extra = list(attrs.get("strides") or [1] * n), list(attrs.get("output_padding") or [0] * n)
                total = [st[i] * (X.shape[2 + i] - 1) + extra[i] + (k[i] - 1) * d[i] + 1 - output_shape[-n + i]
                         for i in range(n)]
                begin = [t - t // 2 if attrs.get("auto_pad") != "SAME_UPPER" else t // 2 for t in total]
                attrs.update(pads=begin + [t - b for t, b in zip(total, begin)], auto_pad="NOTSET", output_shape=None)
            if group == 1:
                return super()._run(X, W, B=B, **attrs)
            attrs["group"] = 1
            parts = [super(ConvTranspose, self)._run(x, w, B=None, **attrs)[0]
                     for x, w in zip(np.split(X, group, axis=1), np.split(W, group, axis=0))]
            y = np.concatenate(parts, axis=1)
            if B is not None:
                y = y + B.reshape((1, -1) + (1,) * (X.ndim - 2))
            return (y.astype(X.dtype),)

    class BatchNormalization(BatchNormBase):  # onnx.reference mixes in batch statistics at opset 9
        op_domain = ""                         # whenever momentum is set, even for inference

        def _run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray,
                 epsilon: Optional[float] = None, momentum: Optional[float] = None,
                 training_mode: Optional[int] = None) -> Tuple[np.ndarray, ...]:
            if training_mode or len(self.onnx_node.output) > 1:
                return super()._run(x, scale, bias, mean, var, epsilon, momentum, training_mode)
            shape = (1, -1) + (1,) * (x.ndim - 2)
            eps = 1e-5 if epsilon is None else epsilon
            y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * scale.reshape(shape)
            return ((y + bias.reshape(shape)).astype(x.dtype),)

    # --- LSTM, GRU, RNN: onnx.reference ignores activations, alpha/beta, clip, input_forget and
    # sequence_lens; these follow onnxgrad/rules/recurrent.py's conventions (onnxruntime's)
    from .rules.recurrent import ACTIVATION_PARAMS, DEFAULT_ACTIVATIONS

    def activation(name: str, alpha: float, beta: float) -> Callable[[np.ndarray], np.ndarray]:
        table: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
            "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "sigmoid": lambda x: 0.5 * (1 + np.tanh(0.5 * x)),
            "affine": lambda x: alpha * x + beta, "leakyrelu": lambda x: np.where(x < 0, alpha * x, x),
            "thresholdedrelu": lambda x: np.where(x > alpha, x, 0), "scaledtanh": lambda x: alpha * np.tanh(beta * x),
            "hardsigmoid": lambda x: np.clip(alpha * x + beta, 0, 1),
            "elu": lambda x: np.where(x < 0, alpha * (np.exp(x) - 1), x), "softsign": lambda x: x / (1 + np.abs(x)),
            "softplus": lambda x: np.logaddexp(0, x),
        }
        return table[name]

    class _Recurrent(OpRun):
        """One recurrent op over time, per direction: ``step(x_t, h, c, d)`` returns the new (h, c)."""
        op_domain = ""
        gates = 1

        def _run(self, X: np.ndarray, W: np.ndarray, R: np.ndarray, B: Optional[np.ndarray] = None,  # noqa: N803
                 sequence_lens: Optional[np.ndarray] = None, initial_h: Optional[np.ndarray] = None,
                 initial_c: Optional[np.ndarray] = None, P: Optional[np.ndarray] = None,  # noqa: N803
                 **attrs: Any) -> Tuple[np.ndarray, ...]:
            layout = attrs.get("layout") or 0
            if layout:  # to time-major
                X = np.swapaxes(X, 0, 1)  # noqa: N806
                initial_h = None if initial_h is None else np.swapaxes(initial_h, 0, 1)
                initial_c = None if initial_c is None else np.swapaxes(initial_c, 0, 1)
            steps, batch, dirs, H = X.shape[0], X.shape[1], W.shape[0], R.shape[-1]  # noqa: N806
            g = self.gates
            self.clip = attrs.get("clip")
            self.input_forget = bool(attrs.get("input_forget"))
            self.linear_before_reset = bool(attrs.get("linear_before_reset"))
            # activations per direction, alpha and beta consumed in order by those that take them
            names = [n.lower() for n in (attrs.get("activations") or DEFAULT_ACTIVATIONS[type(self).__name__] * dirs)]
            per_dir = len(DEFAULT_ACTIVATIONS[type(self).__name__])
            if len(names) == per_dir and dirs == 2:
                names = names * 2
            alphas, betas = list(attrs.get("activation_alpha") or []), list(attrs.get("activation_beta") or [])
            acts = []
            for n in names:
                takes_a, takes_b, alpha, beta = ACTIVATION_PARAMS[n]
                alpha = float(alphas.pop(0)) if takes_a and alphas else alpha
                beta = float(betas.pop(0)) if takes_b and betas else beta
                acts.append(activation(n, alpha, beta))
            lens = np.full(batch, steps) if sequence_lens is None else np.asarray(sequence_lens).astype(np.int64)
            Y = np.zeros((steps, dirs, batch, H), X.dtype)  # noqa: N806
            Y_h = np.zeros((dirs, batch, H), X.dtype)  # noqa: N806
            Y_c = np.zeros((dirs, batch, H), X.dtype)  # noqa: N806
            reverse = [attrs.get("direction") == "reverse"] if dirs == 1 else [False, True]
            for d in range(dirs):
                self.acts = acts[d * per_dir:(d + 1) * per_dir]
                self.W, self.R = W[d], R[d]
                bias = np.zeros(2 * g * H, X.dtype) if B is None else B[d]
                self.Wb, self.Rb = bias[:g * H], bias[g * H:]
                self.P = np.zeros(3 * H, X.dtype) if P is None else P[d]
                h = np.zeros((batch, H), X.dtype) if initial_h is None else initial_h[d]
                c = np.zeros((batch, H), X.dtype) if initial_c is None else initial_c[d]
                for t in (range(steps - 1, -1, -1) if reverse[d] else range(steps)):
                    live = (t < lens)[:, None]  # past its length an entry keeps its state and outputs zero
                    h_new, c_new = self.step(X[t], h, c)
                    h, c = np.where(live, h_new, h), np.where(live, c_new, c)
                    Y[t, d] = np.where(live, h, 0)
                empty = (lens == 0)[:, None]  # a sequence of length 0 has zero final states
                Y_h[d], Y_c[d] = np.where(empty, 0, h), np.where(empty, 0, c)
            if layout:
                Y, Y_h, Y_c = np.transpose(Y, (2, 0, 1, 3)), np.swapaxes(Y_h, 0, 1), np.swapaxes(Y_c, 0, 1)  # noqa: N806
            return (Y, Y_h, Y_c)[:len(self.onnx_node.output)]

        def gate(self, k: int, z: np.ndarray) -> np.ndarray:
            """Activation ``k`` of the direction applied to the clipped pre-activation ``z``."""
            if self.clip is not None:
                z = np.clip(z, -self.clip, self.clip)
            return self.acts[k](z)

        def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            raise NotImplementedError

    class RNN(_Recurrent):
        gates = 1

        def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            return self.gate(0, x @ self.W.T + h @ self.R.T + self.Wb + self.Rb), c

    class GRU(_Recurrent):
        gates = 3

        def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            H = h.shape[1]  # noqa: N806
            xw = x @ self.W.T + self.Wb
            Rz, Rr, Rh = self.R[:H], self.R[H:2 * H], self.R[2 * H:]  # noqa: N806
            Rbz, Rbr, Rbh = self.Rb[:H], self.Rb[H:2 * H], self.Rb[2 * H:]  # noqa: N806
            z = self.gate(0, xw[:, :H] + h @ Rz.T + Rbz)
            r = self.gate(0, xw[:, H:2 * H] + h @ Rr.T + Rbr)
            if self.linear_before_reset:
                cand = self.gate(1, xw[:, 2 * H:] + r * (h @ Rh.T + Rbh))
            else:
                cand = self.gate(1, xw[:, 2 * H:] + (r * h) @ Rh.T + Rbh)
            return (1 - z) * cand + z * h, c

    class LSTM(_Recurrent):
        gates = 4

        def step(self, x: np.ndarray, h: np.ndarray, c: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
            H = h.shape[1]  # noqa: N806
            pre = x @ self.W.T + h @ self.R.T + self.Wb + self.Rb  # gates i, o, f, c
            Pi, Po, Pf = self.P[:H], self.P[H:2 * H], self.P[2 * H:]  # noqa: N806
            i = self.gate(0, pre[:, :H] + Pi * c)
            f = 1 - i if self.input_forget else self.gate(0, pre[:, 2 * H:3 * H] + Pf * c)
            C = f * c + i * self.gate(1, pre[:, 3 * H:])  # noqa: N806
            o = self.gate(0, pre[:, H:2 * H] + Po * C)
            return o * self.acts[2](C), C

    class LinearAttention(OpRun):  # onnx.reference computes in float32 whatever the input type
        op_domain = ""

        def _run(self, query: np.ndarray, key: np.ndarray, value: np.ndarray, past_state: Optional[np.ndarray] = None,
                 decay: Optional[np.ndarray] = None, beta: Optional[np.ndarray] = None,
                 chunk_size: Optional[int] = None, kv_num_heads: int = 1, q_num_heads: int = 1,
                 scale: Optional[float] = None, update_rule: Optional[str] = None) -> Tuple[np.ndarray, np.ndarray]:
            # the recurrence of the ONNX specification, token by token, in the inputs' precision
            rule = update_rule or "gated_delta"
            b, t, _ = query.shape
            d_k, d_v = query.shape[2] // q_num_heads, value.shape[2] // kv_num_heads

            def heads(x: np.ndarray, n: int) -> np.ndarray:  # (B, T, n*D) -> (B, n, T, D)
                return x.reshape(b, t, n, -1).transpose(0, 2, 1, 3)

            q, k, v = heads(query, q_num_heads), heads(key, kv_num_heads), heads(value, kv_num_heads)
            state = (np.zeros((b, kv_num_heads, d_k, d_v), query.dtype) if past_state is None
                     else past_state.astype(query.dtype))
            factor = 1 / math.sqrt(d_k) if not scale else float(scale)
            out = np.zeros((b, q_num_heads, t, d_v), query.dtype)
            for i in range(t):
                if decay is not None and rule in ("gated", "gated_delta"):  # per head or per key dimension
                    state = state * np.exp(heads(decay, kv_num_heads)[:, :, i, :])[..., None]
                kt, vt = k[:, :, i, :], v[:, :, i, :]
                if beta is not None and rule in ("delta", "gated_delta"):
                    vt = heads(beta, beta.shape[2])[:, :, i, :] * (vt - np.einsum("bhdm,bhd->bhm", state, kt))
                state = state + kt[..., None] * vt[..., None, :]
                shared = np.repeat(state, q_num_heads // kv_num_heads, axis=1)  # GQA: kv head of each q head
                out[:, :, i, :] = factor * np.einsum("bhd,bhdm->bhm", q[:, :, i, :], shared)
            present = state.astype(query.dtype if past_state is None else past_state.dtype)
            return out.transpose(0, 2, 1, 3).reshape(b, t, -1), present

    kernels: List[type] = [BatchNormalization]
    if opset < 13:
        # before opset 13, Softmax and LogSoftmax coerce x to 2-D at ``axis`` (default 1); onnx.reference
        # normalizes over that one axis only
        def coerced(node_run: OpRun, x: np.ndarray) -> np.ndarray:
            """x as the 2-D [N, D] at the node's axis; its default is 1 here, not the -1 that
            onnx.reference passes for an absent attribute (the newest schema's default)."""
            axis = next((a.i for a in node_run.onnx_node.attribute if a.name == "axis"), 1)
            return x.reshape(int(np.prod(x.shape[:axis % x.ndim])), -1)

        class Softmax(OpRun):
            op_domain = ""

            def _run(self, x: np.ndarray, axis: Optional[int] = None) -> Tuple[np.ndarray]:
                flat = coerced(self, x)
                e = np.exp(flat - flat.max(axis=1, keepdims=True))
                return ((e / e.sum(axis=1, keepdims=True)).reshape(x.shape),)

        class LogSoftmax(OpRun):
            op_domain = ""

            def _run(self, x: np.ndarray, axis: Optional[int] = None) -> Tuple[np.ndarray]:
                flat = coerced(self, x)
                shifted = flat - flat.max(axis=1, keepdims=True)
                return ((shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))).reshape(x.shape),)

        kernels += [Softmax, LogSoftmax]
    return kernels + [ConvTranspose, Erf, Gelu, GridSample, DequantizeLinear, DynamicQuantizeLinear,
                      CausalConvWithState, MaxUnpool, LRN,
                      MeanVarianceNormalization, GlobalLpPool, MaxRoiPool, Resize, Upsample, LSTM, GRU, RNN,
                      LinearAttention]


# ------------------------------------------------------------------------------------ float64 cast
def _cast_type(tp: onnx.TypeProto) -> None:
    while True:
        kind = tp.WhichOneof("value")
        if kind in ("tensor_type", "sparse_tensor_type"):
            inner = getattr(tp, kind)
            if inner.elem_type in FLOAT_TYPES:
                inner.elem_type = TensorProto.DOUBLE
            return
        if kind == "sequence_type":
            tp = tp.sequence_type.elem_type
        elif kind == "optional_type":
            tp = tp.optional_type.elem_type
        elif kind == "map_type":
            tp = tp.map_type.value_type
        else:
            return


def _cast_tensor(t: TensorProto) -> None:
    if t.data_type in FLOAT_TYPES and t.data_type != TensorProto.DOUBLE:
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))


def _float32_only(graph: onnx.GraphProto, opset: int) -> "set[str]":
    """Tensors feeding a non-differentiable input whose type is fixed to float (Resize's scales
    and roi, Upsample's scales): they stay float32, the only type the op accepts there."""
    keep = set()
    for node in graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        for name, param in zip(node.input, schema.inputs):
            if param.type_str == "tensor(float)" and param.differentiation_category == _NON_DIFF:
                keep.add(name)
    return keep


def _has_attr(op_type: str, opset: int, name: str) -> bool:
    try:
        return name in onnx.defs.get_schema(op_type, opset, "").attributes
    except onnx.defs.SchemaError:
        return False


def to_float64(model: ModelProto) -> ModelProto:
    """A copy of ``model`` computing in float64 wherever it computed in float16/bfloat16/float."""
    m = ModelProto()
    m.CopyFrom(model)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), 1)
    graphs: List[onnx.GraphProto] = [m.graph]
    node_lists = [f.node for f in m.functions]
    for f in m.functions:
        for vi in f.value_info:
            _cast_type(vi.type)
    keep: "set[str]" = set()
    while graphs or node_lists:
        if graphs:
            g = graphs.pop()
            keep = _float32_only(g, opset)
            for vi in list(g.input) + list(g.output) + list(g.value_info):
                if vi.name not in keep:
                    _cast_type(vi.type)
            for t in g.initializer:
                if t.name not in keep:
                    _cast_tensor(t)
            for st in g.sparse_initializer:
                _cast_tensor(st.values)
            node_lists.append(g.node)
            continue
        for node in node_lists.pop():
            if node.op_type == "Constant" and node.output[0] in keep:
                continue
            if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
                # its default is a float32 zero (function bodies rely on it: LinearAttention's state)
                node.attribute.append(helper.make_attribute("value", numpy_helper.from_array(np.zeros(1))))
            single = len([o for o in node.output if o]) == 1  # a float32 Mean/InvStdDev output fixes the stash
            if single:
                missing = {a for op, a in _STASH_DEFAULT_FLOAT if op == node.op_type and _has_attr(op, opset, a)}
                missing -= {a.name for a in node.attribute}
                node.attribute.extend(helper.make_attribute(a, TensorProto.DOUBLE) for a in sorted(missing))
            for a in node.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    _cast_tensor(a.t)
                elif a.type == onnx.AttributeProto.TENSORS:
                    for t in a.tensors:
                        _cast_tensor(t)
                elif a.type == onnx.AttributeProto.GRAPH:
                    graphs.append(a.g)
                elif a.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(a.graphs)
                elif a.type == onnx.AttributeProto.INT and (node.op_type, a.name) in _DTYPE_ATTRS:
                    a.i = TensorProto.DOUBLE if a.i in FLOAT_TYPES else a.i
                elif a.type == onnx.AttributeProto.INT and (node.op_type, a.name) in _PRECISION_ATTRS and (
                        single or node.op_type == "Attention"):
                    a.i = TensorProto.DOUBLE
    return m


def no_float64_op(model: ModelProto) -> Optional[str]:
    """The first op type of the main graph whose schema has no float64 form (Celu, QuantizeLinear,
    RotaryEmbedding...), or None. Such a model cannot be cast before differentiating."""
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            continue
        if node.op_type in _FLOAT32_BODIES:
            return node.op_type
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:
            continue
        no_double = {c.type_param_str for c in schema.type_constraints
                     if "tensor(float)" in c.allowed_type_strs and "tensor(double)" not in c.allowed_type_strs}
        for params, names in ((schema.inputs, node.input), (schema.outputs, node.output)):
            for i, name in enumerate(names):  # only what the node uses (LayerNormalization's float-only
                if not name or not params:    # Mean output may be absent)
                    continue
                p = params[min(i, len(params) - 1)]
                fixed = p.type_str == "tensor(float)" and p.differentiation_category != _NON_DIFF
                if p.type_str in no_double or fixed:
                    return node.op_type
    return None


# ------------------------------------------------------------------------------------ model surgery
def random_feeds(model: ModelProto, rng: np.random.Generator, dim: int = 2) -> Dict[str, np.ndarray]:
    """Random values for every graph input that is not an initializer (float: standard normal,
    others zeros); a symbolic dimension gets ``dim``."""
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
    for n in dict.fromkeys(names):
        if n not in have:
            m.graph.output.append(onnx.ValueInfoProto(name=n))
    return m


def _as_inputs(model: ModelProto, values: Mapping[str, np.ndarray]) -> ModelProto:
    """A copy of ``model`` where each named tensor is a graph input (its initializer dropped, its
    producer's output renamed away): what finite differences perturb or hold fixed."""
    m = ModelProto()
    m.CopyFrom(model)
    inputs = {i.name for i in m.graph.input}
    kept = [t for t in m.graph.initializer if t.name not in values]
    if len(kept) != len(m.graph.initializer):
        del m.graph.initializer[:]
        m.graph.initializer.extend(kept)
    for node in m.graph.node:
        for k, out in enumerate(node.output):
            if out in values:
                node.output[k] = f"{out}/onnxgrad_check_cut"
    for name, value in values.items():
        if name not in inputs:
            elem = helper.np_dtype_to_tensor_dtype(value.dtype)
            m.graph.input.append(helper.make_tensor_value_info(name, elem, list(value.shape)))
    return m


# ------------------------------------------------------------------------------------ the verdict
Quotients = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # central, left, right, noise


def _judge(analytic: np.ndarray, q: Quotients, scale: np.ndarray, rtol: float,
           q2: Optional[Quotients] = None) -> Tuple[np.ndarray, np.ndarray]:
    """(error / tolerance, verdict rank) per element; see the module docstring, steps 3 and 4.

    ``q`` holds the quotients at the step h, ``q2`` those at h / 10, used only to classify a
    failure: a smooth function's one-sided quotients differ by h f'' (ten times less at h / 10)
    and its central quotient is stable; at a kink or tie the one-sided quotients keep disagreeing
    as the step shrinks, or the central quotient moves. The tolerance never changes."""
    central, left, right, noise = q
    tol = rtol * np.maximum(scale, np.abs(central)) + noise + 1e-300
    err = np.abs(analytic - central)
    bad = ~(err <= tol)  # NaN or inf anywhere (no derivative, or a gradient that overflowed) fails
    rank = np.where(bad, _RANK[FAIL], _RANK[PASS])
    if q2 is not None and bad.any():
        central2, left2, right2, noise2 = q2
        gap, gap2 = np.abs(left - right), np.abs(left2 - right2)
        tol1 = rtol * np.maximum(scale, np.maximum(np.abs(left), np.abs(right))) + 2 * noise + 1e-300
        tol2 = rtol * np.maximum(scale, np.maximum(np.abs(left2), np.abs(right2))) + 2 * noise2 + 1e-300
        tie = (gap > tol1) & (gap2 > tol2) & (gap2 > 0.5 * gap)
        moved = np.abs(central - central2) > tol + rtol * np.abs(central2) + noise2
        rank = np.where(bad & (tie | moved), _RANK[KINK], rank)
    return err / tol, rank


def _quotients(f: Callable[[np.ndarray], List[np.ndarray]], x0: np.ndarray, direction: np.ndarray,
               base: np.ndarray, h: float) -> np.ndarray:
    """Central, left and right difference quotients of every y element along ``direction`` and
    the central one's round-off, stacked (4, y size)."""
    plus, minus = _flat(f(x0 + h * direction)), _flat(f(x0 - h * direction))

    def diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        # an output the step leaves unchanged differs by 0, also when it is infinite (a -inf mask)
        return np.where(a == b, 0.0, a - b)

    return np.stack([diff(plus, minus) / (2 * h), diff(base, minus) / h, diff(plus, base) / h, _noise(plus, minus, h)])


def _roundoff(f: Callable[[np.ndarray], List[np.ndarray]], x0: np.ndarray, direction: np.ndarray,
              base: np.ndarray, h: float, q: np.ndarray, q2: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """``q`` (quotients at h) and ``q2`` (at h / 10) with each element's noise raised to the
    round-off its evaluation measurably has, for a comparison that failed (module docstring,
    step 4). ``_noise`` assumes a few ulps of the output's value; two cases have more:

    * an output computed by cancellation (a GRU state ``(1 - z) c + z h`` of 2e-4 made of terms
      near 1) rounds in ulps of its terms. That round-off is measured as in Moré and Wild's
      ECnoise: sixth differences of the output at 9 points spaced h along the direction (a
      smooth function's are ~h^6 f^(6), 1e-30 of its scale). Only a measure below
      ``ROUNDOFF_CAP`` ulps of the output counts: a kink within the points (sixth differences
      ~ its slope jump times h) is not round-off and keeps its KINK or FAIL;
    * an output the step leaves unchanged although it depends on x (a saturated tanh, whose
      derivative 5e-12 moves 1 - 1e-12 by less than an ulp in a step of 1e-5): its quotient 0
      carries the round-off of a changed output, ``_noise``'s. It gets it only when a step of
      ``DEPENDENCE_STEP`` changes it, so an output that does not depend on x (a -FLT_MAX mask)
      still adds nothing.
    """
    try:
        vals = np.stack([_flat(f(x0 + k * h * direction)) if k else base for k in range(-4, 5)])
        far = [_flat(f(x0 + s * DEPENDENCE_STEP * direction)) for s in (1, -1)]
    except _ShapeJump:
        return q, q2
    with np.errstate(invalid="ignore", over="ignore"):
        wobble = np.max(np.abs(_OFF_CUBIC @ vals), axis=0)  # what no cubic in the step explains
        wobble = np.where(wobble <= ROUNDOFF_CAP * _EPS64 * np.max(np.abs(vals), axis=0), wobble, 0.0)
    depends = ((far[0] != base) | (far[1] != base)) & np.isfinite(base)
    out = []
    for quotients, step in ((q, h), (q2, h / 10)):
        quotients = quotients.copy()
        noise = quotients[3]
        unresolved = np.where(depends & (noise == 0), NOISE_ULPS * _EPS64 * np.abs(base) / (2 * step), 0.0)
        quotients[3] = np.maximum(np.maximum(noise, unresolved), ROUNDOFF_FACTOR * wobble / step)
        out.append(quotients)
    return out[0], out[1]


def _noise(plus: np.ndarray, minus: np.ndarray, h: float) -> np.ndarray:
    """Round-off of (plus - minus) / 2h per element; zero where the step changed nothing."""
    changed = plus != minus
    return np.where(changed, NOISE_ULPS * _EPS64 * np.maximum(np.abs(plus), np.abs(minus)) / (2 * h), 0.0)


def _floored(scale: np.ndarray, floor: float) -> np.ndarray:
    """Entry scales with a floor at ``floor`` times the largest: an entry that is zero by
    cancellation (the imaginary part of a DFT's DC term) carries the round-off of the terms it
    cancels, which its own value does not show."""
    return scale + floor * (float(np.max(scale)) if scale.size else 0.0)


def _verdict(rank: np.ndarray) -> str:
    top = int(np.max(rank)) if rank.size else 0
    return next(k for k, v in _RANK.items() if v == top)


def _flat(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in arrays]) if arrays else np.zeros(0)


# ------------------------------------------------------------------------------------ the check
@dataclass
class _Setup:
    proto: ModelProto
    ys: List[str]
    xs: List[str]
    stops: List[str]
    feeds64: Dict[str, np.ndarray]
    native_feeds: Dict[str, np.ndarray]


def check_gradients(
    model: ModelLike,
    xs: Sequence[str],
    ys: Optional[Sequence[str]] = None,
    feeds: Optional[Mapping[str, np.ndarray]] = None,
    seed: int = 0,
    jacobian_limit: int = 1024,
    step: Optional[float] = None,
    rtol: Optional[float] = None,
    grad_ys: Optional[Sequence[Any]] = None,
    stop_gradients: Optional[Sequence[str]] = None,
    grad_model: Optional[ModelLike] = None,
    samples: int = SAMPLES,
) -> CheckReport:
    """Judge onnxgrad's gradients of ``ys`` w.r.t. ``xs`` against float64 central differences.

    ``feeds``: values of graph inputs; missing ones are random (float: standard normal, others
    zeros). ``ys`` defaults to every float graph output. ``grad_ys``: per y, None (a random seed
    u, the default and strongest check) or a number / array (that seed). ``stop_gradients`` are
    held constant by the finite differences too. ``step`` and ``rtol`` override ``STEP`` and
    ``RTOL``. ``grad_model``: judge this existing gradient model instead of differentiating;
    its outputs after the model's own are the gradients in ``xs`` order, and its extra inputs
    are seeds: a ``grad_ys`` entry then is None (the model used ones), a number/array (the
    constant it used) or the name of its seed input (fed a random u). See the module docstring.
    """
    proto = load_model(model)
    return judge(proto, GraphIndex(proto), xs, ys, feeds, seed, jacobian_limit, step, rtol, grad_ys, stop_gradients,
                 grad_model, samples)


def judge(proto: ModelProto, index: GraphIndex, xs: Sequence[str], ys: Optional[Sequence[str]] = None,
          feeds: Optional[Mapping[str, np.ndarray]] = None, seed: int = 0, jacobian_limit: int = 1024,
          step: Optional[float] = None, rtol: Optional[float] = None, grad_ys: Optional[Sequence[Any]] = None,
          stop_gradients: Optional[Sequence[str]] = None, grad_model: Optional[ModelLike] = None,
          samples: int = SAMPLES) -> CheckReport:
    """:func:`check_gradients` on a model already loaded and indexed (``index = GraphIndex(proto)``,
    which validated it): the command line loads and validates a model once."""
    setup = _setup(proto, index, xs, ys, feeds, stop_gradients, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    h = STEP if step is None else float(step)
    tol_r = RTOL if rtol is None else float(rtol)
    native = _native_elem(index, proto, setup)
    # a float64 model stays as it is: its Cast-to-float nodes may be an emitter's kernel workaround
    model64 = proto if native == TensorProto.DOUBLE else to_float64(proto)
    types64 = {i.name: i.type.tensor_type.elem_type for i in model64.graph.input}
    setup.feeds64 = {k: v.astype(helper.tensor_dtype_to_np_dtype(types64[k])) if k in types64 and
                     types64[k] in FLOAT_TYPES else v for k, v in setup.feeds64.items()}
    fwd = Evaluator(_with_outputs(model64, setup.ys + setup.xs + setup.stops), "float64 model")
    names = setup.ys + setup.xs + setup.stops
    values = dict(zip(names, fwd.run(names, setup.feeds64)))
    y0 = [np.asarray(values[y], np.float64) for y in setup.ys]

    us, seed_feeds, grad_names, grad64, grad_native = _gradient_models(
        proto, model64, setup, y0, grad_ys, grad_model, native, rng)
    report = CheckReport(gradient_model=grad_native, float64_model=grad64)
    floor = 1e-3
    if native != TensorProto.DOUBLE and (grad_model is not None or no_float64_op(proto) is not None):
        # the gradient's constants were rounded to the model's dtype before the cast: the
        # comparisons allow that rounding (16 ulps of the terms), nothing else
        tol_r = max(tol_r, 16 * _EPS[native])
        floor = max(floor, 16 * _EPS[native] / tol_r)
        report.cast_after = (f"gradient built in {TensorProto.DataType.Name(native).lower()} and cast to float64 "
                             f"(rtol {tol_r:.3g})")
    report.rtol = tol_r
    report.runtime["forward"] = fwd.runtime
    gsess = Evaluator(grad64, "float64 gradient model")
    wanted = [n for n in grad_names if n is not None]
    gfeeds = {**setup.feeds64, **seed_feeds}
    grads = dict(zip(wanted, gsess.run(wanted, gfeeds)))
    report.runtime["gradient"] = gsess.runtime
    native_grads, native_note = _run_native(grad_native, wanted, setup, seed_feeds, native, report,
                                            gsess.runtime == "onnx.reference")

    top = max((float(np.max(np.abs(v))) for v in grads.values() if np.size(v)), default=0.0)
    for x, gname in zip(setup.xs, grad_names):
        x0 = np.asarray(values[x], np.float64)
        if np.asarray(values[x]).dtype.kind != "f":
            continue
        frozen = {s: np.asarray(values[s]) for s in setup.stops if s != x}
        cut = Evaluator(_as_inputs(model64, {**frozen, x: x0}), f"float64 model cut at {x!r}")
        base = {**{k: v for k, v in setup.feeds64.items() if k != x}, **frozen}
        cut_inputs = {i.name for i in cut.model.graph.input}
        base = {k: v for k, v in base.items() if k in cut_inputs}

        def f(xv: np.ndarray, base: Dict[str, np.ndarray] = base, cut: Evaluator = cut, x: str = x) -> List[np.ndarray]:
            out = [np.asarray(a, np.float64) for a in cut.run(setup.ys, {**base, x: np.asarray(xv, np.float64)})]
            if any(o.shape != y.shape for o, y in zip(out, y0)):
                raise _ShapeJump()
            return out

        g = np.asarray(grads[gname], np.float64) if gname is not None else np.zeros(x0.shape)
        try:
            check, v, along_v = _directional(x, x0, g, f, y0, us, rng, h, tol_r)
            if x0.size:
                along = (v, along_v, partial(_quotients, f, x0, v, _flat(y0), h / 10))
                _jacobian(check, x0, g, f, y0, us, along, gsess, gfeeds, seed_feeds, gname, h, tol_r,
                          jacobian_limit, samples, rng, floor)
        except _ShapeJump:
            check = XCheck(x, tuple(x0.shape), float(np.sum(g)), float("nan"), float("nan"), float("nan"), KINK,
                           step=h, note="an output changes shape within the step (tied values, e.g. Unique's): "
                                        "not differentiable here, not verified")
            report.checks.append(check)
            continue
        if gname is not None and gname in native_grads:
            check.native_ratio = _native_ratio(native_grads[gname], g, native, top)
            if not check.native_ratio <= 1 and check.verdict != FAIL:
                check.verdict = FAIL
                check.note = (f"the {TensorProto.DataType.Name(native).lower()} gradient differs from the float64 "
                              f"one by {check.native_ratio:.3g}x its tolerance")
        elif native_note and not check.note:
            check.note = native_note
        report.checks.append(check)
    return report


def _setup(proto: ModelProto, index: GraphIndex, xs: Sequence[str], ys: Optional[Sequence[str]],
           feeds: Optional[Mapping[str, Any]], stops: Optional[Sequence[str]], rng: np.random.Generator) -> _Setup:
    xs_l = parse_names(xs, "xs")
    ys_l = parse_names(ys, "ys") if ys else [o for o in index.graph_outputs if index.tensor_info(o).is_float]
    if not ys_l:
        raise GradientArgumentError("the model has no float output to differentiate; pass ys explicitly")
    stops_l = parse_names(stops, "stop_gradients")
    check_names(index, ys_l, "ys")
    check_names(index, xs_l, "xs")
    check_names(index, stops_l, "stop_gradients")
    inputs = {i.name for i in proto.graph.input}
    unknown = [k for k in (feeds or {}) if k not in inputs]
    if unknown:
        raise GradientArgumentError(f"feeds: {unknown[0]!r} is not a graph input of the model")
    native_feeds = {k: np.asarray(v) for k, v in (feeds or {}).items()}
    for k, v in random_feeds(proto, rng).items():
        native_feeds.setdefault(k, v)
    feeds64 = {k: v.astype(np.float64) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v
               for k, v in native_feeds.items()}
    return _Setup(proto, ys_l, xs_l, stops_l, feeds64, native_feeds)


def _native_elem(index: GraphIndex, proto: ModelProto, setup: _Setup) -> int:
    """The least precise float type of the model's inputs, initializers and ys (DOUBLE when all
    are float64): the dtype its users run the gradient in."""
    names = [i.name for i in proto.graph.input] + [t.name for t in proto.graph.initializer] + setup.ys
    types = {index.tensor_info(n).elem_type for n in names} & FLOAT_TYPES
    order = [TensorProto.BFLOAT16, TensorProto.FLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE]
    return next((t for t in order if t in types), TensorProto.DOUBLE)


def _gradient_models(proto: ModelProto, model64: ModelProto, setup: _Setup, y0: List[np.ndarray],
                     grad_ys: Optional[Sequence[Any]], grad_model: Optional[ModelLike], native: int,
                     rng: np.random.Generator) -> Tuple[List[np.ndarray], Dict[str, np.ndarray], List[Optional[str]],
                                                        ModelProto, Optional[ModelProto]]:
    """Seeds u (float64, exactly representable in the native dtype), their feeds, the gradient
    output per x, and the float64 and native gradient models."""
    entries = list(grad_ys) if grad_ys is not None else [None] * len(setup.ys)
    if len(entries) != len(setup.ys):
        raise GradientArgumentError(f"Passed {len(entries)} grad_ys for {len(setup.ys)} ys")
    native_np = helper.tensor_dtype_to_np_dtype(native)
    us: List[np.ndarray] = []
    seed_feeds: Dict[str, np.ndarray] = {}
    seed_inputs: List[str] = []
    for i, (entry, val) in enumerate(zip(entries, y0)):
        if entry is None and grad_model is not None:
            u = np.ones(val.shape)
        elif entry is None or isinstance(entry, str):
            u = rng.standard_normal(val.shape).astype(native_np).astype(np.float64)
        else:
            u = np.broadcast_to(np.asarray(entry, np.float64), val.shape).copy()
        us.append(u)
        if grad_model is None:  # a fed seed, even for a constant one: the Jacobian feeds one-hot seeds
            seed_inputs.append(f"onnxgrad_check/u{i}")
            seed_feeds[seed_inputs[-1]] = u
        elif isinstance(entry, str):
            seed_feeds[entry] = u
    if grad_model is not None:
        given = load_model(grad_model)
        outs = [o.name for o in given.graph.output]
        own = {o.name for o in proto.graph.output}
        names: List[Optional[str]] = [o for o in outs if o not in own]
        if len(names) != len(setup.xs):
            raise GradientArgumentError(
                f"the gradient model has {len(names)} outputs beyond the model's own, expected one per x "
                f"({len(setup.xs)}): {', '.join(str(n) for n in names) or 'none'}")
        return us, seed_feeds, names, given if native == TensorProto.DOUBLE else to_float64(given), given
    stop = setup.stops or None
    if no_float64_op(proto) is not None:
        # Differentiated in its own dtype, then cast: the same nodes, evaluated in float64.
        result = gradients(proto, setup.ys, setup.xs, grad_ys=seed_inputs, stop_gradients=stop)
        return us, seed_feeds, list(result.names), to_float64(result.model), result.model
    result64 = gradients(model64, setup.ys, setup.xs, grad_ys=seed_inputs, stop_gradients=stop)
    if native != TensorProto.DOUBLE:
        native_model = gradients(proto, setup.ys, setup.xs, grad_ys=seed_inputs, stop_gradients=stop).model
    else:
        native_model = result64.model
    return us, seed_feeds, list(result64.names), result64.model, native_model


def _run_native(grad_native: Optional[ModelProto], wanted: List[str], setup: _Setup,
                seed_feeds: Dict[str, np.ndarray], native: int, report: CheckReport,
                reference: bool) -> Tuple[Dict[str, np.ndarray], str]:
    """The gradients computed in the model's own dtype, or ({}, why not). In onnx.reference when
    the float64 gradient ran there: the two runtimes disagree on some ops' semantics (Resize-10)."""
    if native == TensorProto.DOUBLE or grad_native is None or not wanted:
        return {}, ""
    native_np = helper.tensor_dtype_to_np_dtype(native)
    feeds = {**setup.native_feeds, **{k: v.astype(native_np) for k, v in seed_feeds.items()}}
    ev = Evaluator(grad_native, f"{TensorProto.DataType.Name(native).lower()} gradient model", reference)
    try:
        out = ev.run(wanted, feeds)
    except CheckError as e:
        return {}, f"own-dtype gradient not compared: {e}"
    report.runtime["native gradient"] = ev.runtime
    return dict(zip(wanted, out)), ""


def _native_ratio(native: np.ndarray, g64: np.ndarray, elem: int, top: float) -> float:
    """max |own-dtype gradient - float64 gradient| over its tolerance: NATIVE_RTOL of the largest
    float64 gradient entry of any x (a gradient that is zero by cancellation, e.g. w.r.t. an
    attention mask, keeps the own dtype's rounding of the terms that cancel)."""
    diff = float(np.max(np.abs(np.asarray(native, np.float64) - g64))) if g64.size else 0.0
    return diff / (NATIVE_RTOL.get(elem, 1e-3) * top + 1e-300)


def _directional(x: str, x0: np.ndarray, g: np.ndarray, f: Callable[[np.ndarray], List[np.ndarray]],
                 y0: List[np.ndarray], us: List[np.ndarray], rng: np.random.Generator, h: float,
                 tol_r: float) -> Tuple[XCheck, np.ndarray, np.ndarray]:
    """The directional check, with v and the quotients of every y element along it."""
    v = rng.standard_normal(x0.shape)
    u, base = _flat(us), _flat(y0)
    along = _quotients(f, x0, v, base, h)
    analytic = float(np.sum(g * v))
    scale = np.array([np.sum(np.abs(g * v))])

    def dotted(q: np.ndarray) -> Quotients:
        return (np.array([u @ q[0]]), np.array([u @ q[1]]), np.array([u @ q[2]]), np.array([np.abs(u) @ q[3]]))

    q = dotted(along)
    ratio, rank = _judge(np.array([analytic]), q, scale, tol_r)
    if rank[0] != _RANK[PASS]:
        along, fine = _roundoff(f, x0, v, base, h, along, _quotients(f, x0, v, base, h / 10))
        q = dotted(along)
        ratio, rank = _judge(np.array([analytic]), q, scale, tol_r, dotted(fine))
    central = float(q[0][0])
    tol = abs(analytic - central) / ratio[0] if ratio[0] > 0 else tol_r * max(scale[0], abs(central)) + q[3][0]
    check = XCheck(x, tuple(x0.shape), analytic, central, abs(analytic - central), float(tol), _verdict(rank), step=h)
    if check.verdict != PASS:
        check.left, check.right = float(q[1][0]), float(q[2][0])
    if not (np.isfinite(analytic) and np.isfinite(central)):
        check.note = "not finite: the function or its gradient is infinite or NaN here (no derivative to check)"
    if check.kink:
        check.note = (f"kink or tie at x along v: the one-sided quotients {check.left:.6g} and {check.right:.6g} "
                      f"disagree at steps h and h/10 (analytic {analytic:.6g}); not verified here")
    return check, v, along


def _jacobian(check: XCheck, x0: np.ndarray, g: np.ndarray, f: Callable[[np.ndarray], List[np.ndarray]],
              y0: List[np.ndarray], us: List[np.ndarray],
              along: Tuple[np.ndarray, np.ndarray, Callable[[], np.ndarray]], gsess: Evaluator,
              gfeeds: Dict[str, np.ndarray], seed_feeds: Dict[str, np.ndarray], gname: Optional[str], h: float,
              tol_r: float, limit: int, samples: int, rng: np.random.Generator, floor: float) -> None:
    """Fill ``check.jacobian_ratio`` (see the module docstring, step 5); a failing or kinked
    entry downgrades ``check.verdict``. ``along`` is the directional check's v, its quotients at
    h and a function giving them at h / 10."""
    base = _flat(y0)
    n_y, n_x = base.size, x0.size
    if n_y == 0:
        return
    sampled = n_x * n_y > limit
    rows = np.sort(rng.choice(n_y, min(samples, n_y), replace=False)) if sampled else np.arange(n_y)
    cols = np.sort(rng.choice(n_x, min(samples, n_x), replace=False)) if sampled else np.arange(n_x)
    seed_names = list(seed_feeds)
    if len(seed_names) != len(y0):
        rows = rows[:0]  # a given gradient model with constant seeds: no one-hot rows, columns only
    # analytic rows: one-hot seeds through the gradient model
    analytic = np.zeros((rows.size, n_x))
    if gname is not None:
        offsets = np.cumsum([0] + [y.size for y in y0])
        for r, row in enumerate(rows):
            k = int(np.searchsorted(offsets, row, side="right") - 1)
            onehot = [np.zeros(y.shape) for y in y0]
            onehot[k].reshape(-1)[row - offsets[k]] = 1.0
            out = gsess.run([gname], {**gfeeds, **dict(zip(seed_names, onehot))})[0]
            analytic[r] = np.asarray(out, np.float64).reshape(-1)
    v, u = along[0].reshape(-1), _flat(us)
    units = [np.eye(1, n_x, int(col)).reshape(x0.shape) for col in cols]

    def columns(step: float) -> np.ndarray:
        """Quotients along each sampled x entry: (4, y size, columns)."""
        return np.stack([_quotients(f, x0, e, base, step) for e in units], axis=2)

    def parts(cq: np.ndarray, dq: np.ndarray) -> List[Tuple[np.ndarray, Quotients, np.ndarray]]:
        """(analytic, quotients, scale) of each comparison: the block of sampled rows x columns;
        when sampled, also the rows against J v and the columns against u^T J (the gradient)."""
        block = analytic[:, cols]
        out = [(block, (cq[0][rows], cq[1][rows], cq[2][rows], cq[3][rows]), _floored(np.abs(block), floor))]
        if sampled:
            out.append((analytic @ v, (dq[0][rows], dq[1][rows], dq[2][rows], dq[3][rows]),
                        _floored(np.abs(analytic) @ np.abs(v), floor)))
            out.append((g.reshape(-1)[cols], (u @ cq[0], u @ cq[1], u @ cq[2], np.abs(u) @ cq[3]),
                        _floored(np.abs(u) @ np.abs(cq[0]), floor)))
        return out

    cq, dq = columns(h), along[1]
    judged = [_judge(a, q, sc, tol_r) for a, q, sc in parts(cq, dq)]
    if any(np.any(rank) for _, rank in judged):
        # classify the failures with the quotients at h / 10, after measuring the round-off of
        # the directions that failed (_roundoff): the block's and the gradient's columns, v's rows
        cq2, dq2 = columns(h / 10), along[2]()
        failed = np.zeros(cols.size, bool)
        failed |= np.any(judged[0][1], axis=0)
        if sampled:
            failed |= judged[2][1] != 0
        for j in np.flatnonzero(failed):
            cq[:, :, j], cq2[:, :, j] = _roundoff(f, x0, units[j], base, h, cq[:, :, j], cq2[:, :, j])
        if sampled and np.any(judged[1][1]):
            dq, dq2 = _roundoff(f, x0, v.reshape(x0.shape), base, h, dq, dq2)
        judged = [_judge(a, q, sc, tol_r, fq[1]) for (a, q, sc), fq in zip(parts(cq, dq), parts(cq2, dq2))]
    check.jacobian_ratio = float(max((np.max(r) for r, _ in judged if r.size), default=0.0))
    check.jacobian_sampled = sampled
    verdict = _verdict(np.concatenate([rank.reshape(-1) for _, rank in judged]))
    if _RANK[verdict] > _RANK[check.verdict]:
        check.verdict = verdict
        if verdict == KINK:
            check.note = "kink or tie in a Jacobian entry: quotients disagree at steps h and h/10; not verified here"
