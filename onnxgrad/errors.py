"""Exceptions raised by onnxgrad.

Each class also derives from the built-in exception TensorFlow's ``tf.gradients`` raises for the
same situation (``ValueError``, ``TypeError``, ``LookupError``, ``OSError``), so code written for
TensorFlow catches them unchanged. ``exit_code`` is what the command line returns for the class.
"""

from __future__ import annotations


def first_line(e: Exception) -> str:
    """The first line of an exception from onnx or protobuf, shortened, for one of our messages."""
    text = " ".join(str(e).split("\n", 1)[0].split()) or type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class OnnxGradError(Exception):
    """Base class of every error onnxgrad raises on purpose."""

    exit_code = 1


class GradientArgumentError(OnnxGradError, ValueError):
    """An argument is invalid: an unknown tensor name, a bad option value, a length mismatch."""

    exit_code = 2


class GradientTypeError(OnnxGradError, TypeError):
    """A ``grad_ys`` entry has a dtype that cannot seed the gradient of its y."""

    exit_code = 2


class ModelReadError(OnnxGradError, ValueError):
    """The input cannot be read as an ONNX model (missing, empty, not a protobuf, not a model)."""

    exit_code = 3


class InvalidModelError(OnnxGradError, ValueError):
    """The model was read but is not a valid graph (cycle, dangling input, duplicate names...)."""

    exit_code = 4


class NoGradientError(OnnxGradError, LookupError):
    """An operation between xs and ys has no registered gradient rule."""

    exit_code = 5


class OutputWriteError(OnnxGradError, OSError):
    """The output model cannot be written."""

    exit_code = 6


class OpTableError(OnnxGradError, RuntimeError):
    """A rule emitted an op the emitter's op table (:mod:`onnxgrad.optable`) does not declare: a
    bug in that rule or a missing table entry, never the user's model."""

    exit_code = 7
