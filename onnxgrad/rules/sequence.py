"""Sequence and Optional operators.

The engine carries gradients of tensors. An optional value's gradient is represented by its
element's gradient (a tensor): Optional wraps, OptionalGetElement unwraps, and the gradient
passes through both unchanged. An empty optional holds nothing to differentiate.

A sequence's gradient would have to be a sequence: aggregation (Sum) and zero-filling do not
apply to sequences and the element shapes are only known at run time, so the sequence ops are
recorded as unsupported. Sequences of floats are still followed by the engine, so a gradient
reaching one of these ops raises instead of being silently cut.
"""

from ..registry import not_supported, register_gradient


@register_gradient("Optional", since=15)
def optional(g, op, dy):
    return [dy]


@register_gradient("OptionalGetElement", since=15)
def optional_get_element(g, op, dy):
    return [dy]


_SEQUENCE = ("sequence-typed gradients: the engine aggregates and zero-fills tensors only "
             "(element shapes of a sequence are known only at run time)")

for _op in ("SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceErase", "ConcatFromSequence",
            "SplitToSequence"):
    not_supported(_op, _SEQUENCE)
