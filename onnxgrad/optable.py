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
  ``ConstantOfShape`` before 20, ``Gemm`` without its optional C before 11.

An op missing from :data:`OPS` cannot be emitted in the default domain: the emitter raises
:class:`~onnxgrad.errors.OpTableError` naming this table, so a new rule adds its ops here first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
from onnx import TensorProto, numpy_helper

from .errors import GradientArgumentError
from .shapes import concatenated, flattened, reshaped, unsqueezed
from .tensorinfo import Dim

if TYPE_CHECKING:
    from .emitter import Emitter

#: "To the end" for a Slice end (the largest int64; ONNX clamps it to the dimension).
END = int(np.iinfo(np.int64).max)

Shape = Optional[Tuple[Dim, ...]]
#: (emitter, inputs, attributes) -> element type of every output (0 = unknown)
DtypeRule = Callable[["Emitter", Sequence[str], Dict[str, Any]], int]
#: (emitter, inputs, attributes) -> shape of output 0, or None when not statically known
ShapeRule = Callable[["Emitter", Sequence[str], Dict[str, Any]], Shape]
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


def _gemm(g: "Emitter", inputs: List[Optional[str]], attrs: Dict[str, Any]) -> Emission:
    """Gemm's C is optional from opset 11; before it a scalar 0 stands in."""
    if g.opset < 11 and len(inputs) == 2:
        inputs.append(g.const(0, like=inputs[0]))
    return inputs, attrs


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


def _concat_shape(g: "Emitter", inputs: Sequence[str], attrs: Dict[str, Any]) -> Shape:
    return concatenated([g.shape(i) for i in inputs if i], int(attrs["axis"]))


# ---------------------------------------------------------------- the table
@dataclass(frozen=True)
class OpSpec:
    """How the emitter writes one op type (see the module docstring)."""

    dtype: DtypeRule = first_typed
    shape: Optional[ShapeRule] = None
    adapt: Optional[Adapter] = None


_SAME = OpSpec()
_INT64 = OpSpec(dtype=_fixed(TensorProto.INT64))
_BOOL = OpSpec(dtype=_fixed(TensorProto.BOOL))

#: Every default-domain op the emitter may write. Ops whose result takes the type of their first
#: typed input (arithmetic, data movement, the forward ops rules re-emit) share one entry.
OPS: Dict[str, OpSpec] = {
    **{op: _SAME for op in """
        Abs Acos Acosh Add AffineGrid Asin Asinh Atan Atanh AveragePool BatchNormalization Ceil Celu CenterCropPad Clip
        Col2Im Conv ConvTranspose Cos Cosh CumProd CumSum Det Div Dropout Einsum Elu Erf
        Exp Expand EyeLike Floor Gather GatherElements GatherND Gelu GridSample GroupNormalization HardSigmoid
        HardSwish Identity InstanceNormalization LayerNormalization LeakyRelu Log LogSoftmax LpNormalization
        MatMul Max MaxPool Mean Min Mish Mod Mul Neg Pow PRelu RMSNormalization Range Reciprocal Relu Resize
        ReverseSequence RoiAlign RotaryEmbedding Round Scatter ScatterElements ScatterND Selu Shrink Sigmoid
        Sign Sin Sinh Softmax Softplus Softsign SpaceToDepth Sqrt Sub Sum Tan Tanh TensorScatter Tile TopK
        Transpose Trilu Upsample Attention Swish ThresholdedRelu Hardmax LRN MeanVarianceNormalization
        Compress If Loop Scan MaxUnpool
        SequenceAt SequenceConstruct SequenceInsert SequenceErase ConcatFromSequence SplitToSequence
    """.split()},
    **{op: _INT64 for op in "Shape Size ArgMax ArgMin NonZero SequenceLength".split()},
    **{op: _BOOL for op in "Less Greater Not And Or Xor IsNaN IsInf".split()},
    **{op: OpSpec(adapt=_reduces(op, 13 if op in _REDUCE_13 else 18)) for op in _REDUCE_13 + _REDUCE_18},
    **{op: OpSpec(adapt=_moves(op)) for op in ("Squeeze", "Split", "Pad")},
    "Slice": OpSpec(adapt=_slice),
    "Unsqueeze": OpSpec(shape=_unsqueeze_shape, adapt=_moves("Unsqueeze")),
    "Reshape": OpSpec(shape=_reshape_shape),
    "Flatten": OpSpec(shape=_flatten_shape),
    "Concat": OpSpec(shape=_concat_shape),
    "Constant": OpSpec(dtype=_value_type, shape=_constant_shape),
    "ConstantOfShape": OpSpec(dtype=_value_type, adapt=_constant_of_shape),
    "Cast": OpSpec(dtype=_cast_to),
    "SequenceEmpty": OpSpec(dtype=_dtype_attr),
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
}


def adapter_opsets() -> Dict[str, List[int]]:
    """Per op type, the opsets at which its adapter switches form (tests run rules on both sides)."""
    switches: Dict[str, List[int]] = {op: sorted({m.since for m in moved.values()})
                                      for op, moved in MOVED_TO_INPUT.items()}
    switches.update({"Equal": [11], "LessOrEqual": [12], "GreaterOrEqual": [12], "Where": [16],
                     "ConstantOfShape": [20], "Gemm": [11], "DepthToSpace": [11]})
    return switches
