"""Shape arithmetic, and shapes where ONNX's own inference gives up.

The pure functions (:func:`broadcast_shapes`, :func:`unsqueezed`, :func:`squeezed`,
:func:`reshaped`, :func:`flattened`, :func:`concatenated`) are the one place onnxgrad computes a
shape from others: the forward pass below and the emitter's op table both use them.

onnx's shape inference loses the rank as soon as a value it needs is computed at run time (a
``ReduceMean`` whose axes come from ``Range``, a ``Reshape(x, Shape(y))`` inside an expanded
function body). Rules need ranks, so :func:`complete_shapes` fills the gaps it can prove from the
structure alone: shape-preserving unary ops, numpy broadcasting, ``Reshape``/``Expand`` to
``Shape(t)``, and reductions with ``keepdims=1``. It never overrides what onnx inferred.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from onnx import NodeProto, TensorProto, helper, numpy_helper

from .tensorinfo import Dim, TensorInfo

#: Output 0 has the shape and element type of input 0.
SAME_SHAPE = frozenset("""
Identity Neg Abs Relu Sqrt Exp Log Tanh Sigmoid Softmax LogSoftmax Hardmax Erf Reciprocal Sin Cos
Tan Asin Acos Atan Sinh Cosh Asinh Acosh Atanh Floor Ceil Round Sign Clip LeakyRelu Elu Selu Celu
Softplus Softsign HardSigmoid HardSwish Mish Gelu ThresholdedRelu Shrink Swish Dropout LRN
InstanceNormalization LpNormalization MeanVarianceNormalization BatchNormalization
LayerNormalization RMSNormalization GroupNormalization CumSum Trilu PRelu
""".split())

#: Output 0 is the numpy broadcast of all inputs.
BROADCAST = frozenset("Add Sub Mul Div Pow Mod Max Min Sum Mean Where Equal Less Greater LessOrEqual "
                      "GreaterOrEqual And Or Xor BitShift".split())

_BOOL_RESULT = frozenset("Equal Less Greater LessOrEqual GreaterOrEqual And Or Xor Not IsNaN IsInf".split())
_SAME_SHAPE_BOOL = frozenset("Not IsNaN IsInf".split())


def broadcast_shapes(shapes: Sequence[Tuple[Dim, ...]]) -> Tuple[Dim, ...]:
    """numpy broadcasting of static/symbolic dims; None where the result cannot be named."""
    rank = max(len(s) for s in shapes)
    out: List[Dim] = []
    for i in range(rank):
        dims = {s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0}
        non_one = dims - {1}
        if not non_one:
            out.append(1)
        elif len(non_one) == 1:
            (d,) = non_one
            out.append(d)  # None stays None; 'N' with 1 broadcasts to 'N'
        else:
            ints = {d for d in non_one if isinstance(d, int)}
            out.append(ints.pop() if len(ints) == 1 and None not in non_one and all(
                isinstance(d, int) for d in non_one) else None)
    return tuple(out)


Shape = Tuple[Dim, ...]


def unsqueezed(shape: Shape, axes: Sequence[int]) -> Shape:
    """``shape`` with size-1 dims inserted at ``axes`` (of the result; negative from its end)."""
    rank = len(shape) + len(axes)
    ones, rest = {a % rank for a in axes}, iter(shape)
    return tuple(1 if a in ones else next(rest) for a in range(rank))


def squeezed(shape: Shape, axes: Sequence[int]) -> Shape:
    """``shape`` without the dims at ``axes``."""
    gone = {a % len(shape) for a in axes}
    return tuple(d for a, d in enumerate(shape) if a not in gone)


def reshaped(have: Optional[Shape], target: Sequence[int]) -> Shape:
    """The result of Reshape to the constant ``target`` (0 copies a dim of ``have``, -1 infers
    it when ``have`` is static)."""
    dims: List[Dim] = [int(d) if d > 0 else have[i] if d == 0 and have and i < len(have) else None
                       for i, d in enumerate(target)]
    size = [d for d in have if isinstance(d, int)] if have is not None else []
    static = [d for d in dims if isinstance(d, int)]
    if have is not None and len(size) == len(have) and len(static) == len(dims) - 1:
        dims[dims.index(None)] = int(np.prod(size)) // max(int(np.prod(static)), 1)
    return tuple(dims)


def _product(dims: Sequence[Dim]) -> Dim:
    """The product of ``dims``: a lone dim stays itself (even symbolic), None when not static."""
    if len(dims) == 1:
        return dims[0]
    static = [d for d in dims if isinstance(d, int)]
    return int(np.prod(static)) if len(static) == len(dims) else None


def flattened(shape: Shape, axis: int) -> Shape:
    """The result of Flatten at ``axis``: (prod(dims before it), prod(dims from it))."""
    axis = axis % (len(shape) + 1) if shape else 0
    return _product(shape[:axis]), _product(shape[axis:])


def concatenated(shapes: Sequence[Optional[Shape]], axis: int) -> Optional[Shape]:
    """The result of Concat along ``axis``: the common dims (the most precise stated) and the sum
    of the concatenated ones; None when no input's rank is known."""
    known = [s for s in shapes if s is not None]
    if not known:
        return None
    rank = len(known[0])
    axis = axis % rank if rank else 0
    along = [s[axis] if s is not None else None for s in shapes]
    lengths = [d for d in along if isinstance(d, int)]
    dims: List[Dim] = []
    for a in range(rank):
        if a == axis:
            dims.append(sum(lengths) if len(lengths) == len(along) else None)
        else:
            stated = [s[a] for s in known if s[a] is not None]
            dims.append(next((d for d in stated if isinstance(d, int)), stated[0] if stated else None))
    return tuple(dims)


def complete_shapes(nodes: Sequence[NodeProto], info: Dict[str, TensorInfo]) -> None:
    """Fill ``info`` for outputs whose shape onnx could not infer (nodes in topological order)."""
    shape_source: Dict[str, str] = {}  # output of Shape(t) (whole shape) -> t
    ints: Dict[str, List[int]] = {}  # small integer constants (Unsqueeze/Squeeze axes)
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or not node.output or not node.output[0]:
            continue
        op, out = node.op_type, node.output[0]
        if op == "Shape" and not node.attribute and node.input:
            shape_source[out] = node.input[0]
            continue
        if op == "Constant" and node.attribute and node.attribute[0].name == "value":
            t = node.attribute[0].t
            if t.data_type == TensorProto.INT64 and len(t.dims) <= 1:
                ints[out] = [int(v) for v in numpy_helper.to_array(t).reshape(-1)]
            continue
        for i, out_i in enumerate(node.output):
            have = info.get(out_i)
            if not out_i or (have is not None and have.shape is not None and have.elem_type):
                continue
            guess = _guess(node, i, info, shape_source, ints)
            if guess is None:
                continue
            elem = have.elem_type if have is not None and have.elem_type else guess.elem_type
            shape = have.shape if have is not None and have.shape is not None else guess.shape
            info[out_i] = TensorInfo(elem, shape)


def _shape(info: Dict[str, TensorInfo], name: str) -> Optional[Tuple[Dim, ...]]:
    t = info.get(name)
    return t.shape if t is not None else None


def _elem(info: Dict[str, TensorInfo], name: str) -> int:
    t = info.get(name)
    return t.elem_type if t is not None else 0


def _guess(node: NodeProto, index: int, info: Dict[str, TensorInfo], shape_source: Dict[str, str],
           ints: Dict[str, List[int]]) -> Optional[TensorInfo]:
    op, ins = node.op_type, list(node.input)
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    src = _shape(info, ins[0]) if ins and ins[0] else None
    if op in ("Split", "Slice", "Concat"):  # rank kept; the cut axis (or every sliced one) unknown
        if src is None:
            return None
        if op == "Slice":
            return TensorInfo(_elem(info, ins[0]), tuple(None for _ in src))
        axis = attrs.get("axis", 0) % len(src)
        return TensorInfo(_elem(info, ins[0]), tuple(None if a == axis else d for a, d in enumerate(src)))
    if op == "Loop" and index < len(ins) - 2:
        return _loop_carried(node, index, info)
    if index != 0:
        return None
    if op == "Transpose" and src is not None:
        perm = attrs.get("perm", list(range(len(src)))[::-1])
        return TensorInfo(_elem(info, ins[0]), tuple(src[p] for p in perm))
    if op in ("Unsqueeze", "Squeeze") and src is not None:
        axes = attrs.get("axes") if "axes" in attrs else ints.get(ins[1]) if len(ins) > 1 else None
        if axes is None:
            return None
        return TensorInfo(_elem(info, ins[0]), unsqueezed(src, axes) if op == "Unsqueeze" else squeezed(src, axes))
    if op in SAME_SHAPE or op in _SAME_SHAPE_BOOL:
        elem = TensorProto.BOOL if op in _SAME_SHAPE_BOOL else _elem(info, ins[0])
        return TensorInfo(elem, _shape(info, ins[0]))
    if op in ("Cast", "CastLike"):
        elem = int(attrs["to"]) if op == "Cast" else _elem(info, ins[1])
        return TensorInfo(elem, _shape(info, ins[0]))
    if op in BROADCAST:
        shapes = [_shape(info, i) for i in ins if i]
        if not shapes or any(s is None for s in shapes):
            return None
        if op in _BOOL_RESULT:
            elem = TensorProto.BOOL
        else:
            elem = _elem(info, ins[1] if op == "Where" else ins[0])
        return TensorInfo(elem, broadcast_shapes(shapes))  # type: ignore[arg-type]
    if op in ("Reshape", "Expand") and len(ins) > 1 and ins[1] in shape_source:
        target = _shape(info, shape_source[ins[1]])
        if target is None:
            return None
        if op == "Expand":
            if src is None:
                return None
            target = broadcast_shapes([src, target])
        return TensorInfo(_elem(info, ins[0]), target)
    if op.startswith("Reduce") and attrs.get("keepdims", 1) == 1:
        if src is None:
            return None
        return TensorInfo(_elem(info, ins[0]), tuple(None for _ in src))
    return None


def _loop_carried(node: NodeProto, k: int, info: Dict[str, TensorInfo]) -> Optional[TensorInfo]:
    """Final value of loop-carried value ``k``: onnx keeps only its element type, but where the body
    declares the carried value's shape (as its input and output, or as one of them matching the
    initial value's rank) its rank holds at every iteration; dims that agree are kept."""
    body = next(a.g for a in node.attribute if a.name == "body")
    start = _shape(info, node.input[2 + k])
    declared = []
    for vi in (body.output[1 + k], body.input[2 + k]):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            declared.append(tuple(d.dim_value if d.HasField("dim_value") else d.dim_param or None
                                  for d in tt.shape.dim))
    if start is not None:
        declared = [d for d in declared if len(d) == len(start)][:1] + [start]
    if len(declared) < 2 or len(declared[0]) != len(declared[1]):
        return None
    dims = tuple(d if d == e else None for d, e in zip(declared[0], declared[1]))
    return TensorInfo(_elem(info, node.input[2 + k]) or body.output[1 + k].type.tensor_type.elem_type, dims)
