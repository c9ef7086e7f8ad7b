"""onnxgrad: ``tf.gradients`` for ONNX models.

>>> import onnxgrad
>>> model, names = onnxgrad.gradients("model.onnx", ys="loss", xs=["w", "b"])  # doctest: +SKIP

The returned model is the original graph plus its backward pass in standard ONNX (default
domain only), runnable by onnxruntime or any other ONNX runtime, and differentiable again.
"""

from . import rules as _rules  # noqa: F401  (registers the built-in gradient rules)
from .api import AggregationMethod, GradientsResult, UnconnectedGradients, gradients
from .stopgrad import stop_gradient
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
from .modelio import save
from .params import data_inputs, parameters
from .registry import no_gradient, register_gradient
from .training import training_step

#: The package version (pyproject.toml reads it from here: the one place it is written).
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
    "data_inputs",
    "gradients",
    "no_gradient",
    "parameters",
    "register_gradient",
    "save",
    "stop_gradient",
    "training_step",
]
