"""Sequence and Optional operators.

An optional value's gradient is represented by its element's gradient (a tensor): Optional
wraps, OptionalGetElement unwraps, and the gradient passes through both unchanged. An empty
optional holds nothing to differentiate.

A sequence's gradient is a sequence of the same length holding each element's gradient. The
engine adds tensors up with Sum; the sequence gradients these rules emit are registered in
``g.combiners`` with :func:`add_sequences`, for the engine to use when several consumers of one
sequence (typically ``SequenceAt`` at several positions) send gradients. ``SequenceAt`` sends zeros
at every other position. Sequences split from a tensor (``SplitToSequence``: the dynamo
exporter's ``split``/``chunk``) have their gradients added as one tensor and get their zeros
from one; sequences built by ``SequenceConstruct`` element by element; any other sequence needs
a Loop carrying a sequence (opset 13 or newer).
"""

from __future__ import annotations

from typing import List, Optional

from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient
from .recurrent import body_graph, body_input


@register_gradient("Optional", since=15)
def optional(g: Emitter, op: Op, dy: Optional[str]) -> List[Optional[str]]:
    """Optional(x): the gradient of the optional is x's."""
    return [dy]


@register_gradient("OptionalGetElement", since=15)
def optional_get_element(g: Emitter, op: Op, dy: Optional[str]) -> List[Optional[str]]:
    """OptionalGetElement(o): o's gradient is the element's."""
    return [dy]


# ---------------------------------------------------------------- sequence gradients
def _sequence_grad(g: Emitter, name: str, seq: str) -> str:
    """Mark ``name`` as a gradient of sequence ``seq``: the engine adds such gradients with add_sequences."""
    g.combiners[name] = lambda g, parts: add_sequences(g, parts, seq)
    return name


def _length(g: Emitter, seq: str) -> str:
    n = g.SequenceLength(seq)
    g.set_info(n, TensorProto.INT64, ())
    return n


def _position(g: Emitter, position: Optional[str], length: str, default_end: bool) -> str:
    """A sequence position as a non-negative int64 scalar (negative ones count from ``length``);
    absent: ``length`` (the end) when ``default_end``, else the last element."""
    if position is None:
        return length if default_end else g.Sub(length, g.scalar_int(1))
    p = position if g.dtype(position) == TensorProto.INT64 else g.Cast(position, to=TensorProto.INT64)
    return g.Where(g.Less(p, g.scalar_int(0)), g.Add(p, length), p)


def _built_by(g: Emitter, seq: str) -> Optional[Op]:
    """The SplitToSequence or SequenceConstruct node of the forward graph that made ``seq``, if one did."""
    p = g.index.producer.get(seq)
    if p is None or g.index.nodes[p].op_type not in ("SplitToSequence", "SequenceConstruct"):
        return None
    return Op(g.index.nodes[p], p, g.opset)


def _joined(g: Emitter, split: Op, seq: str) -> str:
    """The elements of ``seq`` (shaped like the outputs of ``split``) joined back into one tensor."""
    dropped = split.input(1) is None and split.attr("keepdims", 1) == 0
    return g.ConcatFromSequence(seq, axis=split.attr("axis", 0), new_axis=1 if dropped else None)


def _split_like(g: Emitter, split: Op, x: str) -> str:
    """``x`` (shaped like the input of ``split``) split into a sequence as ``split`` does."""
    return g.op("SplitToSequence", x, split.input(1), axis=split.attr("axis"),  # type: ignore[return-value]
                keepdims=split.attr("keepdims"))


def _need_sequence_loops(g: Emitter, what: str) -> None:
    if g.opset < 13:
        raise GradientArgumentError(f"{what} needs a Loop carrying a sequence, which needs opset 13 or newer")


def add_sequences(g: Emitter, parts: List[str], seq: str) -> str:
    """Element-wise sum of gradients of sequence ``seq``: as one tensor when ``seq`` was split from
    one, element by element when SequenceConstruct built it, else in a Loop over the positions."""
    src = _built_by(g, seq)
    if src is not None and src.op_type == "SplitToSequence":
        return _sequence_grad(g, _split_like(g, src, g.Sum(*[_joined(g, src, p) for p in parts])), seq)
    if src is not None:
        return _sequence_grad(g, g.SequenceConstruct(*[
            g.Sum(*[g.SequenceAt(p, g.scalar_int(j)) for p in parts]) for j in range(len(src.inputs))]), seq)
    _need_sequence_loops(g, f"adding the gradients of sequence {seq!r}, used more than once,")
    b = g.nested()
    i = body_input(b, "position", TensorProto.INT64, [])
    cond = body_input(b, "cond", TensorProto.BOOL, [])
    acc = body_input(b, "sum", g.dtype(parts[0]))
    grown = b.SequenceInsert(acc, b.Sum(*[b.SequenceAt(p, i) for p in parts]))
    body = body_graph(b, "add_sequences", [(i, TensorProto.INT64, []), (cond, TensorProto.BOOL, []),
                                           (acc, g.dtype(parts[0]), None)], [b.Identity(cond), grown],
                      sequences={acc, grown})
    out = g.op("Loop", _length(g, parts[0]), g.const(True, dtype=TensorProto.BOOL), _empty(g, parts[0]), body=body)
    g.set_info(out, g.dtype(parts[0]))  # type: ignore[arg-type]
    return _sequence_grad(g, out, seq)  # type: ignore[arg-type]


def _empty(g: Emitter, like: str) -> str:
    e = g.op("SequenceEmpty", dtype=g.dtype(like))
    g.set_info(e, g.dtype(like))  # type: ignore[arg-type]
    return e  # type: ignore[return-value]


def _zeros_like_sequence(g: Emitter, seq: str) -> str:
    """A sequence of zeros shaped like ``seq``'s elements."""
    src = _built_by(g, seq)
    if src is not None and src.op_type == "SplitToSequence":
        return _split_like(g, src, g.zeros_like(src.inputs[0]))
    if src is not None:
        return g.SequenceConstruct(*[g.zeros_like(t) for t in src.inputs])
    _need_sequence_loops(g, f"the gradient of an element of sequence {seq!r} (zeros for the others)")
    b = g.nested()
    i = body_input(b, "position", TensorProto.INT64, [])
    cond = body_input(b, "cond", TensorProto.BOOL, [])
    acc = body_input(b, "zeros", g.dtype(seq))
    grown = b.SequenceInsert(acc, b.zeros_like(b.SequenceAt(seq, i)))
    body = body_graph(b, "zeros_like_sequence", [(i, TensorProto.INT64, []), (cond, TensorProto.BOOL, []),
                                                 (acc, g.dtype(seq), None)], [b.Identity(cond), grown],
                      sequences={acc, grown})
    out = g.op("Loop", _length(g, seq), g.const(True, dtype=TensorProto.BOOL), _empty(g, seq), body=body)
    g.set_info(out, g.dtype(seq))  # type: ignore[arg-type]
    return out  # type: ignore[return-value]


# ---------------------------------------------------------------- the rules
@register_gradient("SequenceAt", since=11, inputs=[0])
def sequence_at(g: Emitter, op: Op, dy: Optional[str]) -> List[Optional[str]]:
    """y = S[p]: dS is zeros but dy at p."""
    seq = op.inputs[0]
    p = _position(g, op.input(1), _length(g, seq), default_end=False)
    # dy goes in before the zero it replaces: inserting at the end (a position equal to the
    # length) is what onnx.reference gets wrong (it inserts at the front)
    with_dy = g.SequenceInsert(_zeros_like_sequence(g, seq), dy, p)
    return [_sequence_grad(g, g.SequenceErase(with_dy, g.Add(p, g.scalar_int(1))), seq), None]


@register_gradient("SequenceConstruct", since=11)
def sequence_construct(g: Emitter, op: Op, dS: Optional[str]) -> List[Optional[str]]:
    """S = [t0, t1, ...]: dt_j = dS[j]."""
    return [g.SequenceAt(dS, g.scalar_int(j)) for j in range(len(op.inputs))]


@register_gradient("SequenceInsert", since=11, inputs=[0, 1])
def sequence_insert(g: Emitter, op: Op, dS: Optional[str]) -> List[Optional[str]]:
    """S' = S with t inserted at p (default: the end): dt = dS'[p], dS = dS' without position p."""
    seq = op.inputs[0]
    p = _position(g, op.input(2), _length(g, seq), default_end=True)
    return [_sequence_grad(g, g.SequenceErase(dS, p), seq), g.SequenceAt(dS, p), None]


@register_gradient("SequenceErase", since=11, inputs=[0])
def sequence_erase(g: Emitter, op: Op, dS: Optional[str]) -> List[Optional[str]]:
    """S' = S without position p (default: the last): dS = dS' with zeros put back at p."""
    seq = op.inputs[0]
    p = _position(g, op.input(1), _length(g, seq), default_end=False)
    zeros = g.zeros_like(g.SequenceAt(seq, p))
    # a zero appended first keeps the insertion off the end (see sequence_at), then goes again
    padded = g.SequenceInsert(g.SequenceInsert(dS, zeros), zeros, p)
    return [_sequence_grad(g, g.SequenceErase(padded, g.scalar_int(-1)), seq), None]


@register_gradient("SplitToSequence", since=11, inputs=[0])
def split_to_sequence(g: Emitter, op: Op, dS: Optional[str]) -> List[Optional[str]]:
    """S = split(x) along axis: dx = the elements of dS concatenated along it (stacked when
    keepdims=0 dropped the axis)."""
    assert dS is not None  # the engine calls a rule only with a gradient for its (single) output
    return [_joined(g, op, dS), None]


@register_gradient("ConcatFromSequence", since=11)
def concat_from_sequence(g: Emitter, op: Op, dy: Optional[str]) -> List[Optional[str]]:
    """y = the elements of S concatenated (new_axis=1: stacked) along axis: dS = dy split back."""
    seq = op.inputs[0]
    axis = op.attr("axis")
    if op.attr("new_axis", 0):
        return [_sequence_grad(g, g.SplitToSequence(dy, axis=axis, keepdims=0), seq)]
    return [_sequence_grad(g, g.SplitToSequence(dy, _sizes_along(g, seq, axis), axis=axis), seq)]


def _sizes_along(g: Emitter, seq: str, axis: int) -> str:
    """The size of each element of ``seq`` along ``axis`` (1-D int64): a Loop over the elements."""
    b = g.nested()
    i = body_input(b, "position", TensorProto.INT64, [])
    cond = body_input(b, "cond", TensorProto.BOOL, [])
    elem = b.SequenceAt(seq, i)
    shape = b.Shape(elem)
    rank = b.Size(shape)
    where = b.ints([axis]) if axis >= 0 else b.Add(b.ints([axis]), b.Reshape(rank, b.ints([1])))
    body = body_graph(b, "sizes", [(i, TensorProto.INT64, []), (cond, TensorProto.BOOL, [])],
                      [b.Identity(cond), b.Gather(shape, where, axis=0)])
    stacked = g.op("Loop", _length(g, seq), g.const(True, dtype=TensorProto.BOOL), body=body)
    g.set_info(stacked, TensorProto.INT64)  # type: ignore[arg-type]
    return g.reshape(stacked, [-1])  # type: ignore[arg-type]
