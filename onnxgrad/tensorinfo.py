"""What is statically known about a tensor: its element type and shape (no ONNX graph needed).

The vocabulary every other module shares (the graph index, shape inference, the emitter and its
op table), so that none of them has to import another for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, List, Optional, Tuple, Union

import onnx
from onnx import TensorProto

#: Element types that carry gradients (TensorFlow's "backpropagatable" dtypes).
FLOAT_TYPES = frozenset(
    {TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT, TensorProto.DOUBLE}
)

#: A static dimension is an int, a symbolic one a str, an unknown one None.
Dim = Union[int, str, None]


@dataclass(frozen=True)
class TensorInfo:
    """What is statically known about a tensor."""

    elem_type: int  # 0 when unknown
    shape: Optional[Tuple[Dim, ...]]  # None when even the rank is unknown
    #: a sequence of tensors of ``elem_type`` (``shape`` is then None): its gradient is a sequence too
    sequence: bool = False

    @property
    def is_float(self) -> bool:
        """Whether the tensor carries gradients."""
        return self.elem_type in FLOAT_TYPES


#: What is known about a tensor nothing is known about.
UNKNOWN = TensorInfo(0, None)


def info_from_type(tp: onnx.TypeProto) -> TensorInfo:
    """The TensorInfo of a value of ONNX type ``tp``.

    An optional's gradient is its element's (rules/sequence.py). A sequence of floats keeps its
    element type so the engine follows it and an op consuming it raises (no rule) instead of
    silently cutting the gradient.
    """
    while tp.HasField("optional_type"):
        tp = tp.optional_type.elem_type
    if tp.HasField("sequence_type"):
        return TensorInfo(info_from_type(tp.sequence_type.elem_type).elem_type, None, sequence=True)
    if not tp.HasField("tensor_type"):
        return TensorInfo(0, None)
    tt = tp.tensor_type
    if not tt.HasField("shape"):
        return TensorInfo(tt.elem_type, None)
    dims: List[Dim] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value"):
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(d.dim_param)
        else:
            dims.append(None)
    return TensorInfo(tt.elem_type, tuple(dims))


def numel(dims: Iterable[int]) -> int:
    """The element count of a tensor of static ``dims``."""
    n = 1
    for d in dims:
        n *= d
    return n


