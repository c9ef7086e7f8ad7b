"""The forward node a rule differentiates, as rules read it: inputs, outputs, attributes.

Arguments that moved from attributes to inputs between opsets (ReduceXxx and Squeeze/Unsqueeze
axes, Split sizes, Slice parameters, Pad pads) read the same whichever form the node has
(:meth:`Op.axes`, :meth:`Op.slice_params`, :meth:`Op.arg`), so a rule never asks for the opset.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, NamedTuple, Optional

import numpy as np
from onnx import AttributeProto, NodeProto, helper

from .errors import GradientArgumentError
from .optable import MOVED_TO_INPUT

#: Looks up the value of a constant tensor (initializer or Constant output), None if not constant.
ConstantLookup = Callable[[Optional[str]], Optional[np.ndarray]]


class SliceParams(NamedTuple):
    """A Slice node's parameters with the defaults filled in (every axis listed, steps of 1)."""

    starts: List[int]
    ends: List[int]
    axes: List[int]
    steps: List[int]


class Op:
    """Read-only view of the forward node a rule differentiates."""

    def __init__(self, node: NodeProto, index: int, opset: int, constant: Optional[ConstantLookup] = None) -> None:
        """``constant``: how to read constant inputs (the emitter's ``constant_value``)."""
        self.node = node
        self.index = index
        self.opset = opset
        self.op_type = node.op_type
        self.inputs: List[str] = list(node.input)
        self.outputs: List[str] = list(node.output)
        self._attributes: Optional[Dict[str, AttributeProto]] = None  # by name, read on first use
        self._constant = constant

    @property
    def _attrs(self) -> Dict[str, AttributeProto]:
        if self._attributes is None:
            self._attributes = {a.name: a for a in self.node.attribute}
        return self._attributes

    @property
    def name(self) -> str:
        """The node's name ('' when it has none)."""
        return self.node.name

    def input(self, i: int) -> Optional[str]:
        """Name of input ``i``, or None when it is absent or an omitted optional input."""
        return self.inputs[i] if i < len(self.inputs) and self.inputs[i] else None

    def output(self, i: int = 0) -> Optional[str]:
        """Name of output ``i``, or None when it is absent or omitted."""
        return self.outputs[i] if i < len(self.outputs) and self.outputs[i] else None

    def attr(self, name: str, default: Any = None) -> Any:
        """Attribute value (bytes decoded to str), or ``default``."""
        a = self._attrs.get(name)
        if a is None:
            return default
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            return v.decode()
        if isinstance(v, list) and v and isinstance(v[0], bytes):
            return [x.decode() for x in v]
        return v

    def has_attr(self, name: str) -> bool:
        """Whether the node sets attribute ``name``."""
        return name in self._attrs

    def constant_input(self, i: int, what: str) -> np.ndarray:
        """The value of input ``i`` (called ``what`` in errors), which must be a constant."""
        name = self.input(i)
        value = self._constant(name) if self._constant is not None else None
        if value is None:
            raise GradientArgumentError(
                f"the gradient of {self.op_type} needs its {what} (input {i}, {name!r}) to be a constant")
        return value

    # ------------------------------------------------------------ attribute-or-input arguments
    def arg_input(self, name: str) -> Optional[str]:
        """The input holding argument ``name`` when this node passes it as an input, else None."""
        moved = MOVED_TO_INPUT.get(self.op_type, {}).get(name)
        if moved is None or self.opset < moved.since:
            return None
        return self.input(moved.position)

    def is_dynamic(self, name: str) -> bool:
        """Whether argument ``name`` is an input whose value is known only at run time."""
        tensor = self.arg_input(name)
        return tensor is not None and (self._constant is None or self._constant(tensor) is None)

    def arg(self, name: str) -> Optional[np.ndarray]:
        """Argument ``name`` (see :data:`~onnxgrad.optable.MOVED_TO_INPUT`) as an array, from the
        attribute or the constant input, whichever this node's opset uses; when absent, the
        default of that form (None when it has none).

        Raises GradientArgumentError when it is an input known only at run time (ask
        :meth:`is_dynamic` first where a rule can handle that)."""
        moved = MOVED_TO_INPUT.get(self.op_type, {}).get(name)
        if moved is None:
            value = self.attr(name)
            return None if value is None else np.asarray(value)
        if self.opset < moved.since:
            value = self.attr(name, moved.default)
            return None if value is None else np.asarray(value)
        tensor = self.input(moved.position)
        if tensor is None:
            return None if moved.input_default is None else np.asarray(moved.input_default)
        found = self._constant(tensor) if self._constant is not None else None
        if found is None:
            raise GradientArgumentError(
                f"the {name!r} input of {self.op_type} node {self.name or self.outputs[0]!r} is computed at run "
                "time; its gradient needs the value when the gradient is built (make it a constant)")
        return found

    def ints(self, name: str) -> Optional[List[int]]:
        """:meth:`arg` as a list of ints (None when absent)."""
        value = self.arg(name)
        return None if value is None else [int(v) for v in value.reshape(-1)]

    def axes(self) -> Optional[List[int]]:
        """The ``axes`` argument (attribute or input) as ints, None when absent."""
        return self.ints("axes")

    def slice_params(self) -> Optional[SliceParams]:
        """A Slice node's parameters as ints, or None when any is known only at run time."""
        if any(self.is_dynamic(k) for k in ("starts", "ends", "axes", "steps")):
            return None
        starts, ends = self.ints("starts") or [], self.ints("ends") or []
        return SliceParams(starts, ends, self.ints("axes") or list(range(len(starts))),
                           self.ints("steps") or [1] * len(starts))
