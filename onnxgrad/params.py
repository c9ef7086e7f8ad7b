"""Which tensors of a model are its trainable parameters (``--xs @params``) and data inputs (``@inputs``).

A *parameter* is what a training loop updates. In an ONNX model that is a float tensor whose value
is fixed in the file:

- a float initializer, or
- the float output of a ``Constant`` or ``ConstantOfShape`` node with more than one element
  (some exporters and ONNX's own light model zoo store weights this way; a one-element
  ``Constant`` is a literal such as GELU's 0.5 or an attention scale),

that feeds at least one *trainable position*: an input a gradient rule differentiates. Left out:

- BatchNormalization's running mean and variance (inputs 3 and 4): statistics updated by
  averaging, not by gradients, although the output depends on them;
- inputs a rule does not differentiate (Resize scales, Dropout's ratio, a Pad value...) and inputs
  of non-differentiable ops: hyper-parameters and shape data, never weights;
- tensors nothing reads, and integer or boolean tensors (shapes, indices, masks).

An input of an op without a registered rule (a custom op) counts as trainable: asking for its
gradient then reports the missing rule instead of silently dropping a weight. Names read inside
a subgraph (If/Loop/Scan bodies) count as trainable too.

*Data inputs* are the float graph inputs that are not initializers. ``exclude`` takes
shell-style globs (``fnmatch``, case-sensitive), matched against tensor names.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from onnx import AttributeProto, NodeProto

from . import registry
from .arguments import parse_names
from .graph import FLOAT_TYPES, GraphIndex
from .loading import ModelLike, load_model

#: Inputs that depend on a rule-differentiable op's output but that training never updates by
#: gradient, by (op type, default domain): input positions.
RUNNING_STATISTICS: dict[str, frozenset[int]] = {"BatchNormalization": frozenset({3, 4})}

_CONSTANT_DOMAINS = ("", "ai.onnx")


def parameters(model: ModelLike, exclude: str | Sequence[str] | None = None) -> list[str]:
    """The names of ``model``'s trainable parameters, in initializer then node order.

    What ``onnxgrad differentiate --xs @params`` selects: float initializers and float outputs of
    ``Constant``/``ConstantOfShape`` nodes that feed an input some gradient rule differentiates,
    without BatchNormalization's running statistics (see :mod:`onnxgrad.params`).

    Args:
        model: an ``onnx.ModelProto`` or the path of a ``.onnx`` file (external weights are not read).
        exclude: a glob or a list of globs; parameters whose name matches one are left out.

    >>> import onnxgrad
    >>> onnxgrad.parameters("models/linear_regression.onnx")
    ['w', 'b']
    """
    return select_parameters(GraphIndex(load_model(model)), exclude)


def data_inputs(model: ModelLike, exclude: str | Sequence[str] | None = None) -> list[str]:
    """The float graph inputs that are not initializers (``--xs @inputs``), minus ``exclude`` globs.

    >>> import onnxgrad
    >>> onnxgrad.data_inputs("models/linear_regression.onnx")
    ['x', 'target']
    """
    return select_data_inputs(GraphIndex(load_model(model)), exclude)


def select_parameters(index: GraphIndex, exclude: str | Sequence[str] | None = None) -> list[str]:
    """:func:`parameters` of an indexed model."""
    found = [t.name for t in index.graph.initializer if t.data_type in FLOAT_TYPES]
    for node in index.nodes:
        if node.domain in _CONSTANT_DOMAINS and node.op_type in ("Constant", "ConstantOfShape") \
                and _float_constant(node) and _not_a_literal(index, node.output[0]):
            found.append(node.output[0])
    return [name for name in without(found, exclude) if _feeds_trainable_position(index, name)]


def select_data_inputs(index: GraphIndex, exclude: str | Sequence[str] | None = None) -> list[str]:
    """:func:`data_inputs` of an indexed model."""
    found = [name for name in index.graph_inputs
             if name not in index.initializers and index.tensor_info(name).is_float]
    return without(found, exclude)


def without(names: Sequence[str], exclude: str | Sequence[str] | None) -> list[str]:
    """``names`` minus those matching one of the ``exclude`` globs, order kept."""
    globs = parse_names(exclude, "exclude")
    return [n for n in names if not any(fnmatch.fnmatchcase(n, g) for g in globs)]


def _float_constant(node: NodeProto) -> bool:
    """Whether a Constant or ConstantOfShape node produces a float tensor."""
    for a in node.attribute:
        if a.name == "value" and a.type == AttributeProto.TENSOR:
            return a.t.data_type in FLOAT_TYPES
        if a.name == "value_floats":
            return True
    return node.op_type == "ConstantOfShape"  # without 'value' it is float32 zeros


def _not_a_literal(index: GraphIndex, name: str) -> bool:
    """Whether a constant may have more than one element (its shape unknown counts as may)."""
    shape = index.tensor_info(name).shape
    if shape is None:
        return True
    numel = 1
    for d in shape:
        if not isinstance(d, int):
            return True
        numel *= d
    return numel > 1


def _feeds_trainable_position(index: GraphIndex, name: str) -> bool:
    for idx in index.consumers.get(name, ()):
        node = index.nodes[idx]
        positions = [i for i, n in enumerate(index.node_inputs[idx]) if n == name]
        if not positions:
            return True  # read inside a subgraph
        rule = registry.lookup(node.op_type, node.domain, index.opset)
        for i in positions:
            if _trainable(rule, node, i):
                return True
    return False


def _trainable(rule: registry.GradientRule | None, node: NodeProto, position: int) -> bool:
    if rule is None or rule.status == registry.UNSUPPORTED:
        return True
    if rule.status == registry.NON_DIFFERENTIABLE:
        return False
    if node.domain in _CONSTANT_DOMAINS and position in RUNNING_STATISTICS.get(node.op_type, ()):
        return False
    return rule.inputs is None or position in rule.inputs
