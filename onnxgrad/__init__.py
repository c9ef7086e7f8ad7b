"""onnxgrad: ``tf.gradients`` for ONNX models.

>>> import onnxgrad
>>> model, names = onnxgrad.gradients("model.onnx", ys="loss", xs=["w", "b"])  # doctest: +SKIP

The returned model is the original graph plus its backward pass in standard ONNX (default
domain only), runnable by onnxruntime or any other ONNX runtime, and differentiable again.
"""

from . import rules as _rules  # noqa: F401  (registers the built-in gradient rules)
from .api import AggregationMethod, GradientsResult, UnconnectedGradients, gradients, stop_gradient
from .emitter import Emitter, Op
from .errors import (
    GradientArgumentError,
    GradientTypeError,
    InvalidModelError,
    ModelReadError,
    NoGradientError,
    OnnxGradError,
    OutputWriteError,
)
from .registry import no_gradient, register_gradient
from .training import training_step

__version__ = "0.1.0"

__all__ = [
    "AggregationMethod",
    "Emitter",
    "GradientArgumentError",
    "GradientTypeError",
    "GradientsResult",
    "InvalidModelError",
    "ModelReadError",
    "NoGradientError",
    "OnnxGradError",
    "Op",
    "OutputWriteError",
    "UnconnectedGradients",
    "gradients",
    "no_gradient",
    "register_gradient",
    "stop_gradient",
    "training_step",
]
