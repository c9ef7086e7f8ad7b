"""Dropout: identity in inference, the kept mask scaled by 1 / (1 - ratio) in training."""

from __future__ import annotations

from typing import List, Optional

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


@register_gradient("Dropout", until=11, inputs=(0,))
def dropout_inference(g: Emitter, op: Op, dy: str, d_mask: Optional[str] = None) -> List[Optional[str]]:
    """Identity: before opset 12 runtimes run Dropout as inference (the ratio attribute is never applied)."""
    return [dy]


@register_gradient("Dropout", since=12, inputs=(0,))
def dropout(g: Emitter, op: Op, dy: str, d_mask: Optional[str] = None) -> List[Optional[str]]:
    """Identity in inference; dy * mask / (1 - ratio) in training mode."""
    x = op.inputs[0]
    training = op.input(2)
    if training is None:
        return [dy, None, None]
    flag = g.constant_value(training)
    if flag is not None and not bool(flag):
        return [dy, None, None]
    mask = op.output(1)
    if mask is None:
        raise GradientArgumentError(
            f"Dropout node '{op.name or op.outputs[0]}' may run in training mode (training_mode input "
            f"{training!r}) but has no mask output, and its gradient needs the mask that the forward pass "
            "drew. Give the node a second output (the mask), e.g. node.output.append('dropout_mask'), "
            "or feed training_mode as a constant false."
        )
    ratio = op.input(1)
    keep = g.const(0.5, like=x) if ratio is None else g.Sub(g.const(1.0, like=x), g.cast_like(ratio, x))
    scale = g.Reciprocal(keep)
    if flag is None:
        # training_mode is only known at run time; in inference the mask is all true and y = x
        scale = g.Where(training, scale, g.const(1.0, like=x))
    return [g.Mul(g.Mul(dy, g.Cast(mask, to=g.dtype(x))), scale), None, None]
