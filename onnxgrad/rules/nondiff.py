"""Operators whose outputs carry no gradient (TensorFlow's ``no_gradient`` list), and operators
that are differentiable in principle but have no rule yet (``not_supported``, with the reason).

A gradient stops silently at a non-differentiable op. The decision for each op starts from the
schemas' per-input ``differentiation_category`` and is checked against the math: an op is listed
here when none of its float inputs reaches a float output through a function with a nonzero
derivative (integer/bool/string results, piecewise-constant results, random samples, outputs
that depend only on shapes).
"""

from __future__ import annotations

from ..registry import no_gradient, not_supported
from ..stopgrad import MARKER_DOMAIN, MARKER_OP

no_gradient(MARKER_OP, MARKER_DOMAIN, reason="stop-gradient marker inserted by onnxgrad.stop_gradient")

_INTEGER_OUTPUT = "integer output"
_BOOL_OUTPUT = "boolean output"
_BITWISE = "integer-only bitwise operation"
_QUANTIZED = "quantized (integer) output: piecewise constant in every float input"
_STRING = "string/text operation: no float input"
_RANDOM_LIKE = "random values that depend only on the input's shape and dtype, not its values"

_NON_DIFFERENTIABLE = [
    ("Shape", _INTEGER_OUTPUT),
    ("Size", _INTEGER_OUTPUT),
    ("Constant", "no inputs"),
    ("ConstantOfShape", "output depends only on an integer shape"),
    ("EyeLike", "output depends only on the input's shape and dtype"),
    ("Equal", _BOOL_OUTPUT),
    ("Less", _BOOL_OUTPUT),
    ("Greater", _BOOL_OUTPUT),
    ("LessOrEqual", _BOOL_OUTPUT),
    ("GreaterOrEqual", _BOOL_OUTPUT),
    ("Not", _BOOL_OUTPUT),
    ("And", _BOOL_OUTPUT),
    ("Or", _BOOL_OUTPUT),
    ("Xor", _BOOL_OUTPUT),
    ("IsNaN", _BOOL_OUTPUT),
    ("IsInf", _BOOL_OUTPUT),
    ("OptionalHasElement", _BOOL_OUTPUT),
    ("ArgMax", _INTEGER_OUTPUT),
    ("ArgMin", _INTEGER_OUTPUT),
    ("NonZero", _INTEGER_OUTPUT),
    ("NonMaxSuppression", "integer output (selected box indices)"),
    ("SequenceLength", _INTEGER_OUTPUT),
    ("SequenceEmpty", "no inputs"),
    ("BitShift", _BITWISE),
    ("BitwiseAnd", _BITWISE),
    ("BitwiseOr", _BITWISE),
    ("BitwiseXor", _BITWISE),
    ("BitwiseNot", _BITWISE),
    ("BitCast", "reinterprets the bits of its input: not a smooth function of the values"),
    ("Bernoulli", "random 0/1 samples: piecewise constant in the probabilities"),
    ("Multinomial", "random samples: integer output"),
    ("RandomNormal", "random values, no inputs"),
    ("RandomUniform", "random values, no inputs"),
    ("RandomNormalLike", _RANDOM_LIKE),
    ("RandomUniformLike", _RANDOM_LIKE),
    ("QuantizeLinear", _QUANTIZED),
    ("QLinearConv", _QUANTIZED),
    ("QLinearMatMul", _QUANTIZED),
    ("MatMulInteger", "integer inputs and output"),
    ("ConvInteger", "integer inputs and output"),
    ("StringNormalizer", _STRING),
    ("StringConcat", _STRING),
    ("StringSplit", _STRING),
    ("RegexFullMatch", _STRING),
    ("TfIdfVectorizer", "input is integer or string tokens"),
    ("ImageDecoder", "input is an encoded byte stream"),
    ("BlackmanWindow", "output depends only on an integer size"),
    ("HammingWindow", "output depends only on an integer size"),
    ("HannWindow", "output depends only on an integer size"),
    ("MelWeightMatrix", "builds a constant filterbank from integer sizes and frequency hyperparameters "
                        "(schema: every input non-differentiable)"),
]

for _op, _why in _NON_DIFFERENTIABLE:
    no_gradient(_op, reason=_why)

_CONTROL_FLOW = "control flow: differentiating through subgraphs is a later issue"

_NOT_SUPPORTED = [
    ("SequenceMap", _CONTROL_FLOW),
]

for _op, _why in _NOT_SUPPORTED:
    not_supported(_op, _why)
