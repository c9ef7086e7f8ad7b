"""Operators whose outputs carry no gradient (TensorFlow's ``no_gradient`` list)."""

from ..api import MARKER_DOMAIN, MARKER_OP
from ..registry import no_gradient

no_gradient(MARKER_OP, MARKER_DOMAIN, reason="stop-gradient marker inserted by onnxgrad.stop_gradient")

for _op, _why in [
    ("Shape", "integer output"),
    ("Size", "integer output"),
    ("ConstantOfShape", "output depends only on an integer shape"),
]:
    no_gradient(_op, reason=_why)
