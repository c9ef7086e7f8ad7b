"""The emitter's op table: every op the backward pass may emit, declared once.

Each entry (:class:`OpSpec`) gives an op's result element type (``dtype``), what is statically
known of its result's shape (``shape``, None when the emitter records nothing) and its opset
adapter (``adapt``): the rewrite that turns the one spelling rules use into the form the model's
opset and the runtimes' kernels accept. Rules write the newest, simplest form:

* arguments that moved from attributes to inputs are passed as keywords with plain values,
  ``g.ReduceMax(x, axes=[1], keepdims=1)``, ``g.Slice(x, starts=[0], ends=[END], axes=[2])``,
  ``g.Pad(x, pads=[...], value=0.0)``; :data:`MOVED_TO_INPUT` says from which opset each becomes
  an input (the same table tells :class:`~onnxgrad.emitter.Op` where to read a forward node's
  argument);
* runtime-kernel gaps are filled here: ``Equal`` on floats before opset 11 (no float kernel),
  ``LessOrEqual``/``GreaterOrEqual`` before 12, ``Where`` on bfloat16 before 16, bfloat16
  ``ConstantOfShape`` before 20, ``Gemm`` without its optional C before 11, ``MaxUnpool`` as a
  scatter from opset 11 (or for targets without it) and through float before.

An op missing from :data:`OPS` cannot be emitted in the default domain: the emitter raises
:class:`~onnxgrad.errors.OpTableError` naming this table, so a new rule adds its ops here first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from .errors import GradientArgumentError
from .shapes import concatenated, flattened, reshaped, unsqueezed
from .tensorinfo import Dim, TensorInfo, info_from_type

if TYPE_CHECKING:
    from .emitter import Emitter

#: "To the end" for a Slice end (the largest int64; ONNX clamps it to the dimension).
END = int(np.iinfo(np.int64).max)

Shape = Optional[Tuple[Dim, ...]]
#: (emitter, inputs, attributes) -> element type of every output, or a list of one per output (0 = unknown)
DtypeRule = Callable[["Emitter", Sequence[str], Dict[str, Any]], Union[int, List[int]]]
#: (emitter, inputs, attributes) -> shape of output 0, or None when not statically known
ShapeRule = Callable[["Emitter", Sequence[str], Dict[str, Any]], Shape]
#: (emitter, inputs, attributes, number of outputs) -> what is known of each output (ops whose
#: outputs differ in type: those with subgraphs, those making sequences)
ResultsRule = Callable[["Emitter", Sequence[str], Dict[str, Any], int], List[TensorInfo]]
#: (emitter, inputs, attributes) -> the (inputs, attributes) to emit at the emitter's opset, or the
#: name of a result the adapter emitted itself (a composite standing in for a missing kernel)
Emission = Union[str, Tuple[List[Optional[str]], Dict[str, Any]]]
Adapter = Callable[["Emitter", List[Optional[str]], Dict[str, Any]], Emission]


class Moved(NamedTuple):
    """An argument that is an attribute before opset ``since`` and input ``position`` from it."""

    since: int
    position: int
    kind: str  # "ints": an int64 1-D tensor; "int": an int64 scalar; "like0": a scalar of input 0's type
    default: Any = None  # its value when absent from the attribute form
    input_default: Any = None  # its value when absent from the input form (emitting it, it is left out)


def _reduce(since: int) -> Dict[str, Moved]:
    return {"axes": Moved(since, 1, "ints")}


_REDUCE_13 = ("ReduceSum",)
_REDUCE_18 = ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceSumSquare", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp")

#: Per op type, the arguments that moved from attributes to inputs, and when.
MOVED_TO_INPUT: Dict[str, Dict[str, Moved]] = {
    **{op: _reduce(13) for op in _REDUCE_13},
    **{op: _reduce(18) for op in _REDUCE_18},
    "Squeeze": {"axes": Moved(13, 1, "ints")},
    "Unsqueeze": {"axes": Moved(13, 1, "ints")},
    "Split": {"split": Moved(13, 1, "ints")},
    "Slice": {"starts": Moved(10, 1, "ints"), "ends": Moved(10, 2, "ints"), "axes": Moved(10, 3, "ints"),
              "steps": Moved(10, 4, "ints")},
    "Pad": {"pads": Moved(11, 1, "ints"), "value": Moved(11, 2, "like0", 0.0, 0.0)},
    "DFT": {"axis": Moved(20, 2, "int", 1, -2)},
}


def _move_arguments(g: "Emitter", op_type: str, inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """The attribute or input form of every argument of :data:`MOVED_TO_INPUT` at ``g.opset``."""
    for name, moved in sorted(MOVED_TO_INPUT[op_type].items(), key=lambda kv: kv[1].position):
        given_as_input = len(inputs) > moved.position and inputs[moved.position]
        if g.opset < moved.since:
            if given_as_input:
                raise GradientArgumentError(
                    f"{op_type} takes {name!r} as an input only from opset {moved.since} (this model has opset "
                    f"{g.opset}): its value must be known when the gradient is built")
            continue
        value = attrs.pop(name, None)
        if value is None or given_as_input or (moved.input_default is not None and value == moved.input_default):
            continue
        while len(inputs) < moved.position:
            inputs.append("")
        if moved.kind == "ints":
            tensor = g.ints(value)
        elif moved.kind == "int":
            tensor = g.scalar_int(value)
        else:
            tensor = g.const(value, like=inputs[0])
        inputs[moved.position:moved.position + 1] = [tensor]
    return inputs, attrs


def _moves(op_type: str) -> Adapter:
    def adapt(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
        return _move_arguments(g, op_type, inputs, attrs)

    return adapt


def _slice(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Slice takes no steps before opset 10."""
    steps = attrs.get("steps")
    if g.opset < 10 and steps is not None:
        if any(int(s) != 1 for s in steps):
            raise GradientArgumentError("Slice with steps needs opset 10 or newer")
        attrs.pop("steps")
    return _move_arguments(g, "Slice", inputs, attrs)


def _depth_to_space(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """DepthToSpace has a mode only from opset 11; before it, always the default DCR."""
    if g.opset < 11 and attrs.get("mode") is not None:
        if attrs.pop("mode") != "DCR":
            raise GradientArgumentError("DepthToSpace in CRD mode needs opset 11 or newer")
    return inputs, attrs


def _is_float(g: "Emitter", name: Optional[str]) -> bool:
    return name is not None and name != "" and g.info(name).is_float


def _equal(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Equal has no float kernel before opset 11: a == b is neither a < b nor b < a."""
    a, b = inputs[0], inputs[1]
    if g.opset >= 11 or not (_is_float(g, a) or _is_float(g, b)):
        return inputs, attrs
    return g.And(g.Not(g.Less(a, b)), g.Not(g.Less(b, a)))


def _or_equal(strict: str, flipped: str) -> Adapter:
    """LessOrEqual / GreaterOrEqual (opset 12): before it, not the flipped strict comparison."""
    def adapt(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
        if g.opset >= 12:
            return inputs, attrs
        return g.Not(g.emit(flipped, *inputs))

    adapt.__doc__ = f"{strict}OrEqual before opset 12: Not({flipped})."
    return adapt


def _where(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Where has no bfloat16 before opset 16: such branches go through float."""
    cond, a, b = inputs
    if g.opset >= 16 or g.dtype(a) != TensorProto.BFLOAT16:  # type: ignore[arg-type]
        return inputs, attrs
    f = TensorProto.FLOAT
    return g.Cast(g.Where(cond, g.Cast(a, to=f), g.Cast(b, to=f)), to=TensorProto.BFLOAT16)


def _constant_of_shape(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """ConstantOfShape has no bfloat16 value before opset 20: fill in float, then Cast."""
    value = attrs.get("value")
    if g.opset >= 20 or value is None or value.data_type != TensorProto.BFLOAT16:
        return inputs, attrs
    as_float = numpy_helper.from_array(numpy_helper.to_array(value).astype(np.float32), "value")
    return g.Cast(g.emit("ConstantOfShape", *inputs, value=as_float), to=TensorProto.BFLOAT16)


def _resize(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Resize written (X, roi, scales, sizes): at opset 10 it takes (X, scales) only; at 11 and 12
    roi and scales are required inputs, an empty tensor meaning "not given" (the empty constant is
    made whether used or not, which keeps the emitted names the same for every combination)."""
    x, roi, scales, sizes = (list(inputs) + [None] * 4)[:4]
    if g.opset < 11:
        if roi or sizes:
            raise GradientArgumentError("Resize takes roi and sizes only from opset 11")
        return [x, scales], attrs
    if g.opset < 13:
        empty = g.const(np.zeros(0, np.float32), dtype=TensorProto.FLOAT)
        inputs[1:3] = [roi or empty, scales or empty]
    return inputs, attrs


def _topk(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """TopK's k (``k=`` an int) is an attribute before opset 10 and a 1-D input from it."""
    if g.opset < 10:
        if len(inputs) > 1 and inputs[1]:
            raise GradientArgumentError("TopK takes k as an input only from opset 10: it must be known when the "
                                        "gradient is built")
        return inputs, attrs
    k = attrs.pop("k", None)
    if k is not None:
        inputs = [inputs[0], g.ints([int(k)])]
    return inputs, attrs


def _gemm(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Gemm's C is optional from opset 11; before it a scalar 0 stands in, with beta=0 so that
    runtimes skip it (onnxruntime otherwise broadcasts the zero over the result first)."""
    if g.opset < 11 and len(inputs) == 2:
        inputs.append(g.const(0, like=inputs[0]))
        attrs["beta"] = 0.0
    return inputs, attrs


def _identity(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Identity copies sequences only from opset 14: before it, a zero appended and erased again."""
    x = inputs[0]
    if g.opset >= 14 or not (x and g.info(x).sequence):
        return inputs, attrs
    return g.SequenceErase(g.SequenceInsert(x, g.const(0, dtype=g.dtype(x))), g.scalar_int(-1))


def _loop(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Loop carries sequences only from opset 13."""
    if g.opset < 13 and any(i and g.info(i).sequence for i in inputs[2:]):
        raise GradientArgumentError(
            f"the backward nodes {g.scope + '/...'!r} need a Loop carrying a sequence, which needs opset 13 or "
            f"newer (this model has opset {g.opset}); convert the model (onnx.version_converter.convert_version)")
    return inputs, attrs


def _max_unpool(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """MaxUnpool(d, indices, output_shape) of windows that never share a position, in a form every
    runtime the model's opset and target aim at runs.

    From opset 11, and before it for targets whose runtimes lack MaxUnpool (OpenVINO, tract:
    ``g.scatter9``), a scatter of d at the flat positions into zeros shaped ``output_shape``
    (ScatterND, or Scatter-9 through :meth:`~onnxgrad.emitter.Emitter.scatter_flat`). Otherwise
    MaxUnpool itself, sized by its attributes (kernel = output size - d's size + 1 at unit strides,
    as the caller gives them: every runtime agrees on that size, not on ``output_shape``);
    onnxruntime implements it for float only: float16 and bfloat16 go through float exactly, a
    double is split into three floats that sum to it exactly (24 bits each cover its 53), each
    unpooled and summed back in double.
    """
    d, indices, shape = inputs[0], inputs[1], inputs[2]
    assert d and indices and shape, "MaxUnpool is emitted with its output_shape"
    if g.opset >= 11 or g.scatter9:
        zeros = g.reshape(g.constant_of_shape(shape, 0.0, like=d), [-1])
        flat = g.scatter_flat(zeros, g.reshape(indices, [-1, 1]), g.reshape(d, [-1]))
        return g.Reshape(flat, shape)
    dtype = g.dtype(d)
    if dtype == TensorProto.FLOAT:
        return [d, indices], attrs
    pieces, rest = [], d
    count = 3 if dtype == TensorProto.DOUBLE else 1
    for k in range(count):
        piece = g.Cast(rest, to=TensorProto.FLOAT)
        pieces.append(g.Cast(g.MaxUnpool(piece, indices, shape, **attrs), to=dtype))
        if k < count - 1:
            rest = g.Sub(rest, g.Cast(piece, to=dtype))
    return g.Sum(*pieces) if len(pieces) > 1 else pieces[0]


def _reduction(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any], op_type: str,
               since: int) -> Emission:
    if attrs.get("noop_with_empty_axes") is not None and g.opset < since:
        raise GradientArgumentError(f"{op_type} with noop_with_empty_axes needs opset {since}")
    return _move_arguments(g, op_type, inputs, attrs)


def _reduces(op_type: str, since: int) -> Adapter:
    def adapt(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
        return _reduction(g, inputs, attrs, op_type, since)

    return adapt


# ---------------------------------------------------------------- dtype rules
def first_typed(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
    """The element type of the first input whose type is known."""
    for i in inputs:
        if i:
            t = g.known_dtype(i)
            if t:
                return t
    return 0


def _fixed(elem_type: int) -> DtypeRule:
    def rule(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
        return elem_type

    return rule


def _of_input(k: int) -> DtypeRule:
    def rule(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
        return g.known_dtype(inputs[k])

    return rule


def _cast_to(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
    return int(attrs["to"])


def _dtype_attr(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
    return int(attrs.get("dtype", TensorProto.FLOAT))


def _value_type(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> int:
    value = attrs.get("value")
    return value.data_type if value is not None else TensorProto.FLOAT


# ---------------------------------------------------------------- shape rules
def _constant_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    value = attrs.get("value")
    return tuple(value.dims) if value is not None else None


def _reshape_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    """Rank and dims of Reshape(x, target) when target is a constant."""
    value = g.constant_value(inputs[1])
    return None if value is None else reshaped(g.shape(inputs[0]), value.tolist())


def _unsqueeze_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    have = g.shape(inputs[0])
    axes = attrs.get("axes")
    if axes is None and len(inputs) > 1:
        value = g.constant_value(inputs[1])
        axes = None if value is None else [int(a) for a in value.reshape(-1)]
    return None if have is None or axes is None else unsqueezed(have, axes)


def _flatten_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    have = g.shape(inputs[0])
    return None if have is None else flattened(have, int(attrs.get("axis", 1)))


def _transpose_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    """x's dims in ``perm`` order (reversed without one)."""
    have = g.shape(inputs[0])
    if have is None:
        return None
    perm = attrs.get("perm") or range(len(have) - 1, -1, -1)
    return tuple(have[int(p)] for p in perm)


def _concat_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    return concatenated([g.shape(i) for i in inputs if i], int(attrs["axis"]))


def _scalar(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    return ()


# ---------------------------------------------------------------- result rules: subgraphs and sequences
def _declared(vi: Any) -> TensorInfo:
    """The type a subgraph's output declares (unknown when it declares none)."""
    return info_from_type(vi.type)


def _stacked(info: TensorInfo, axis: int = 0) -> TensorInfo:
    """The type of per-iteration values of type ``info`` stacked along a new ``axis``."""
    if info.shape is None:
        return info
    axis = axis % (len(info.shape) + 1)
    return TensorInfo(info.elem_type, info.shape[:axis] + (None,) + info.shape[axis:])


def _loop_results(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any], n: int) -> List[TensorInfo]:
    """Loop: the body's carried outputs (the initial values' types where the body declares
    none), then its scan outputs stacked along a new axis 0."""
    outs = list(attrs["body"].output)[1:]
    carried = len(inputs) - 2
    result = []
    for k, vi in enumerate(outs[:n]):
        info = _declared(vi)
        if k < carried and (not info.elem_type or (info.shape is None and not info.sequence)):
            start = g.info(inputs[2 + k])
            info = TensorInfo(info.elem_type or start.elem_type, start.shape, start.sequence)
        result.append(info if k < carried else _stacked(info))
    return result


def _if_results(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any], n: int) -> List[TensorInfo]:
    """If: each output has the type both branches declare (dims they disagree on unknown)."""
    result = []
    for a, b in zip(attrs["then_branch"].output, attrs["else_branch"].output):
        x, y = _declared(a), _declared(b)
        same = x.shape is not None and y.shape is not None and len(x.shape) == len(y.shape)
        shape = tuple(d if d == e else None for d, e in zip(x.shape, y.shape)) if same else None  # type: ignore[arg-type]
        result.append(TensorInfo(x.elem_type or y.elem_type, shape, x.sequence or y.sequence))
    return result[:n]


def _scan_results(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any], n: int) -> List[TensorInfo]:
    """Scan: the body's state outputs, then its scan outputs stacked along their output axes."""
    outs = [_declared(vi) for vi in attrs["body"].output]
    states = len(inputs) - int(attrs["num_scan_inputs"])
    axes = list(attrs.get("scan_output_axes") or [0] * (len(outs) - states))
    return (outs[:states] + [_stacked(info, a) for info, a in zip(outs[states:], axes)])[:n]


def _same_info(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any], n: int) -> List[TensorInfo]:
    """A copy: the type of its input (a tensor's dtype only, as for the ops of one dtype rule)."""
    info = g.info(inputs[0])
    return [info if info.sequence else TensorInfo(info.elem_type, None)]


def _sequence_of(dtype: Callable[["Emitter", Sequence[str], Dict[str, Any]], int]) -> ResultsRule:
    """A sequence of tensors of the element type ``dtype`` gives."""
    def rule(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any], n: int) -> List[TensorInfo]:
        return [TensorInfo(dtype(g, [i for i in inputs if i], attrs), None, sequence=True)]

    return rule


def _constant_of_shape_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    value = g.constant_value(inputs[0])
    return None if value is None else tuple(int(d) for d in value.reshape(-1))


def _window_op(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Optional[Tuple[List[Dim], List[Dim],
                                                                                            List[int], List[int],
                                                                                            List[int], List[int]]]:
    """(x's dims, w's dims, kernel, strides, dilations, pads) of a Conv or ConvTranspose the emitter
    writes with explicit pads, or None when its rank is unknown or its pads are automatic."""
    x, w = g.shape(inputs[0]), g.shape(inputs[1])
    if x is None or w is None or attrs.get("auto_pad", "NOTSET") not in ("NOTSET", ""):
        return None
    n = len(x) - 2
    kernel = list(attrs.get("kernel_shape") or w[2:])
    strides = list(attrs.get("strides") or [1] * n)
    dilations = list(attrs.get("dilations") or [1] * n)
    pads = list(attrs.get("pads") or [0] * (2 * n))
    return list(x), list(w), kernel, strides, dilations, pads


def _conv_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    """Conv: floor((size + pads - dilated kernel) / stride) + 1 per spatial axis, w's M channels."""
    known = _window_op(g, inputs, attrs)
    if known is None:
        return None
    x, w, kernel, strides, dilations, pads = known
    n = len(x) - 2
    spatial: List[Dim] = []
    for i in range(n):
        size, k = x[2 + i], kernel[i]
        spatial.append((size + pads[i] + pads[n + i] - (k - 1) * dilations[i] - 1) // strides[i] + 1
                       if isinstance(size, int) and isinstance(k, int) else None)
    return (x[0], w[0], *spatial)


def _conv_transpose_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    """ConvTranspose: stride (size - 1) + output_padding + dilated kernel - pads per spatial axis
    (or output_shape), M = w's dim 1 times group channels."""
    known = _window_op(g, inputs, attrs)
    if known is None:
        return None
    x, w, kernel, strides, dilations, pads = known
    n = len(x) - 2
    channels = w[1] * int(attrs.get("group", 1)) if isinstance(w[1], int) else None
    if attrs.get("output_shape"):
        return (x[0], channels, *attrs["output_shape"][-n:])
    extra = list(attrs.get("output_padding") or [0] * n)
    spatial: List[Dim] = []
    for i in range(n):
        size, k = x[2 + i], kernel[i]
        spatial.append(strides[i] * (size - 1) + extra[i] + (k - 1) * dilations[i] + 1 - pads[i] - pads[n + i]
                       if isinstance(size, int) and isinstance(k, int) else None)
    return (x[0], channels, *spatial)


def _max_pool_types(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> List[int]:
    """MaxPool's Y has x's type, its Indices are int64."""
    return [g.known_dtype(inputs[0]), TensorProto.INT64]


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class OpSpec:
    """How the emitter writes one op type (see the module docstring)."""

    dtype: DtypeRule = first_typed
    shape: Optional[ShapeRule] = None
    adapt: Optional[Adapter] = None
    #: one type per output, instead of ``dtype`` and ``shape``
    results: Optional[ResultsRule] = None


_SAME = OpSpec()
_INT64 = OpSpec(dtype=_fixed(TensorProto.INT64))
_BOOL = OpSpec(dtype=_fixed(TensorProto.BOOL))

#: Every default-domain op the emitter may write. Ops whose result takes the type of their first
#: typed input (arithmetic, data movement, the forward ops rules re-emit) share one entry.
OPS: Dict[str, OpSpec] = {
    **{op: _SAME for op in """
        Abs Acos Acosh Add AffineGrid Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu CenterCropPad Clip
        Col2Im Cos Cosh CumProd CumSum Det Div Dropout Einsum Elu Erf
        Exp Expand EyeLike Floor Gather GatherElements GatherND Gelu GridSample GroupNormalization HardSigmoid
        HardSwish InstanceNormalization LayerNormalization LeakyRelu Log LogSoftmax LpNormalization
        MatMul Max Mean Min Mish Mod Mul Neg Pow PRelu RMSNormalization Range Reciprocal Relu
        ReverseSequence RoiAlign RotaryEmbedding Round Scatter ScatterElements ScatterND Selu Shrink Sigmoid
        Sign Sin Sinh Softmax Softplus Softsign SpaceToDepth Sqrt Sub Sum Tan Tanh TensorScatter Tile
        Trilu Upsample Attention Swish ThresholdedRelu Hardmax LRN MeanVarianceNormalization
        Compress MaxUnpool SequenceAt ConcatFromSequence
    """.split()},
    **{op: _INT64 for op in "Shape ArgMax ArgMin NonZero".split()},
    **{op: OpSpec(dtype=_fixed(TensorProto.INT64), shape=_scalar) for op in ("Size", "SequenceLength")},
    "Identity": OpSpec(results=_same_info, adapt=_identity),
    "If": OpSpec(results=_if_results),
    "Loop": OpSpec(results=_loop_results, adapt=_loop),
    "Scan": OpSpec(results=_scan_results),
    **{op: OpSpec(results=_sequence_of(first_typed))
       for op in ("SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence")},
    **{op: _BOOL for op in "Less Greater Not And Or Xor IsNaN IsInf".split()},
    **{op: OpSpec(adapt=_reduces(op, 13 if op in _REDUCE_13 else 18)) for op in _REDUCE_13 + _REDUCE_18},
    **{op: OpSpec(adapt=_moves(op)) for op in ("Squeeze", "Split", "Pad")},
    "Slice": OpSpec(adapt=_slice),
    "Unsqueeze": OpSpec(shape=_unsqueeze_shape, adapt=_moves("Unsqueeze")),
    "Reshape": OpSpec(shape=_reshape_shape),
    "Flatten": OpSpec(shape=_flatten_shape),
    "Transpose": OpSpec(shape=_transpose_shape),
    "Concat": OpSpec(shape=_concat_shape),
    "Constant": OpSpec(dtype=_value_type, shape=_constant_shape),
    "ConstantOfShape": OpSpec(dtype=_value_type, shape=_constant_of_shape_shape, adapt=_constant_of_shape),
    "Conv": OpSpec(shape=_conv_shape),
    "ConvTranspose": OpSpec(shape=_conv_transpose_shape),
    "MaxPool": OpSpec(dtype=_max_pool_types),
    "MaxUnpool": OpSpec(adapt=_max_unpool),
    "Cast": OpSpec(dtype=_cast_to),
    "SequenceEmpty": OpSpec(results=_sequence_of(_dtype_attr)),
    "CastLike": OpSpec(dtype=_of_input(1)),
    "Where": OpSpec(dtype=_of_input(1), adapt=_where),
    "OneHot": OpSpec(dtype=_of_input(2)),
    "Unique": OpSpec(),
    "Equal": OpSpec(dtype=_fixed(TensorProto.BOOL), adapt=_equal),
    "LessOrEqual": OpSpec(dtype=_fixed(TensorProto.BOOL), adapt=_or_equal("Less", "Greater")),
    "GreaterOrEqual": OpSpec(dtype=_fixed(TensorProto.BOOL), adapt=_or_equal("Greater", "Less")),
    "Gemm": OpSpec(adapt=_gemm),
    "DepthToSpace": OpSpec(adapt=_depth_to_space),
    "DFT": OpSpec(adapt=_moves("DFT")),
    "Resize": OpSpec(adapt=_resize),
    "TopK": OpSpec(adapt=_topk),
}


def has_attribute(g: "Emitter", op_type: str, name: str) -> bool:
    """Whether the default-domain op ``op_type`` at the emitter's opset has the attribute ``name``
    (``ScatterND``'s ``reduction`` from opset 16): a rule asks this, as it asks ``g.can_emit``,
    instead of comparing opsets."""
    return g.can_emit(op_type) and name in onnx.defs.get_schema(op_type, g.opset, "").attributes


def adapter_opsets() -> Dict[str, List[int]]:
    """Per op type, the opsets at which its adapter switches form (tests run rules on both sides)."""
    switches: Dict[str, List[int]] = {op: sorted({m.since for m in moved.values()})
                                      for op, moved in MOVED_TO_INPUT.items()}
    switches.update({"Equal": [11], "LessOrEqual": [12], "GreaterOrEqual": [12], "Where": [16],
                     "ConstantOfShape": [20], "Gemm": [11], "DepthToSpace": [11], "MaxUnpool": [11],
                     "Resize": [11, 13], "TopK": [10]})
    # Loop (13) and Identity (14) switch only for sequences, which the sequence and control-flow
    # tests cover on both sides: listing them would test every rule emitting a tensor Identity twice more
    return switches
