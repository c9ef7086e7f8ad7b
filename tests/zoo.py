"""The onnx package's "light" model zoo (real architectures, weights stripped) made differentiable.

``onnx/backend/test/data/light/light_<name>.onnx`` keeps every layer of AlexNet, ResNet-50, ... but
replaces each weight by ``ConstantOfShape(shape)`` (all 0.02). :func:`load` turns every such
weight into a random initializer, He-scaled (std sqrt(2 / fan_in)) so activations keep their
size through the ReLUs; BatchNormalization gets mean 0 and variance 1 (positive, matching the
He-scaled activations); the classifier feeding the final Softmax is rescaled so its logits have
unit standard deviation (a saturated softmax would make every gradient vanish).
"""

from __future__ import annotations

import os
from typing import Dict, List, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")

#: the models of the brief, by their file stem
MODELS = ["bvlc_alexnet", "zfnet512", "squeezenet", "resnet50", "densenet121", "inception_v1", "inception_v2",
          "shufflenet"]


def _session(model: onnx.ModelProto):
    from onnxgrad.checking import session

    return session(model)


def load(name: str, seed: int = 0) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray], List[str]]:
    """(model, feed for its data input, names of every weight and bias) for ``light_<name>.onnx``.

    The weights are the random initializers replacing ConstantOfShape plus the float
    initializers the file already holds, except BatchNormalization's running statistics.
    """
    model = onnx.load(os.path.join(LIGHT_DIR, f"light_{name}.onnx"))
    rng = np.random.default_rng(seed)
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}

    weights: Dict[str, np.ndarray] = {}
    kept = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input[0] in inits:
            shape = [int(d) for d in numpy_helper.to_array(inits[node.input[0]])]
            weights[node.output[0]] = _random_weight(rng, shape)
        else:
            kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)

    stats = set()
    for node in kept:
        if node.op_type == "BatchNormalization":
            mean, var = node.input[3], node.input[4]
            stats.update((mean, var))
            weights[mean] = np.zeros(_dims(inits, weights, mean), np.float32)
            weights[var] = np.ones(_dims(inits, weights, var), np.float32)

    used = {i for n in kept for i in n.input}
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name in used}
    values.update(weights)
    del graph.initializer[:]
    graph.initializer.extend(numpy_helper.from_array(v, k) for k, v in values.items())
    data = [i for i in graph.input if i.name not in values and i.name in used]
    del graph.input[:]
    graph.input.extend(data)
    model.ir_version = max(model.ir_version, 7)  # initializers need not be graph inputs

    feed = {i.name: rng.standard_normal([d.dim_value for d in i.type.tensor_type.shape.dim]).astype(np.float32)
            for i in data}
    _unit_logits(model, feed)
    trainable = [t.name for t in graph.initializer if t.data_type == TensorProto.FLOAT and t.name not in stats]
    return model, feed, trainable


def _dims(inits, weights, name: str) -> List[int]:
    if name in weights:
        return list(weights[name].shape)
    return [int(d) for d in inits[name].dims]


def _random_weight(rng: np.random.Generator, shape: List[int]) -> np.ndarray:
    if len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    # biases: small, nonzero (a zero bias puts many ReLU inputs exactly on the kink)
    return rng.uniform(-0.1, 0.1, shape).astype(np.float32)


def _unit_logits(model: onnx.ModelProto, feed: Dict[str, np.ndarray]) -> None:
    """Scale the weight and bias of the layer feeding the final Softmax to unit-std logits."""
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    softmax = [n for n in graph.node if n.op_type == "Softmax"]
    if not softmax:
        return
    logits = softmax[-1].input[0]
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(logits, TensorProto.FLOAT, None))
    std = float(np.std(_session(probe).run([logits], feed)[0]))
    layer = producer[logits]
    inits = {t.name: t for t in graph.initializer}
    for name in layer.input[1:3]:
        if name in inits:
            t = inits[name]
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) / np.float32(std), name))


def with_loss(model: onnx.ModelProto, tensor: str = "", seed: int = 1) -> Tuple[onnx.ModelProto, str]:
    """``model`` plus a scalar output ``loss = sum(u * tensor)`` (default: the model's output), u fixed random."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    tensor = tensor or m.graph.output[0].name
    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    del probe.graph.output[:]
    probe.graph.output.append(helper.make_tensor_value_info(tensor, TensorProto.FLOAT, None))
    inferred = onnx.shape_inference.infer_shapes(probe)
    known = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    dims = [d.dim_value for d in known[tensor].type.tensor_type.shape.dim]
    u = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    m.graph.initializer.append(numpy_helper.from_array(u, "zoo/u"))
    m.graph.node.extend([
        helper.make_node("Mul", [tensor, "zoo/u"], ["zoo/weighted"]),
        helper.make_node("ReduceSum", ["zoo/weighted"], ["loss"], keepdims=0),
    ])
    m.graph.output.append(helper.make_tensor_value_info("loss", TensorProto.FLOAT, []))
    return m, "loss"


def reference_float64(model: onnx.ModelProto):
    """An onnx.reference evaluator of ``model`` in float64 with onnxruntime's semantics.

    onnx.reference runs these opset-9 graphs differently from onnxruntime: BatchNormalization-9
    mixes in batch statistics through its default momentum and Softmax-9 is taken over one axis
    instead of the 2-D coercion (the version converter rewrites both to opset 15, whose inference
    semantics the runtimes share), and its LRN is off the ONNX formula (11 % at activations ~30,
    where onnxruntime matches the formula to 1e-7), so LRN is evaluated by the formula here.
    """
    from onnx import version_converter
    from onnx.reference import ReferenceEvaluator
    from onnx.reference.op_run import OpRun

    class LRN(OpRun):
        op_domain = ""

        def _run(self, x, alpha=None, beta=None, bias=None, size=None):
            # y = x / (bias + alpha / size * sum of x^2 over channels c - floor((size-1)/2)
            #                                                   .. c + ceil((size-1)/2)) ^ beta
            channels, squares = x.shape[1], np.zeros_like(x)
            for c in range(channels):
                lo, hi = max(0, c - (size - 1) // 2), min(channels, c + size // 2 + 1)
                squares[:, c] = (x[:, lo:hi] ** 2).sum(axis=1)
            return (x / (bias + alpha / size * squares) ** beta,)

    return ReferenceEvaluator(version_converter.convert_version(as_float64(model), 15), new_ops=[LRN])


def as_float64(model: onnx.ModelProto) -> onnx.ModelProto:
    """A float64 copy (float initializers, inputs and outputs), for onnx.reference."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for t in m.graph.initializer:
        if t.data_type == TensorProto.FLOAT:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for vi in list(m.graph.input) + list(m.graph.output):
        if vi.type.tensor_type.elem_type == TensorProto.FLOAT:
            vi.type.tensor_type.elem_type = TensorProto.DOUBLE
    del m.graph.value_info[:]
    return m


def along_direction(model: onnx.ModelProto, weights: List[str], seed: int = 2
                    ) -> Tuple[onnx.ModelProto, Dict[str, np.ndarray]]:
    """A copy where every weight W is ``W0 + t * V`` for a scalar graph input ``t`` (fed 0).

    d output / dt at t = 0 is the directional derivative along V in weight space, so one
    central difference in t checks the gradient with respect to all weights at once. V is
    random with each weight's own scale (relative perturbation), returned by name.
    """
    m = onnx.ModelProto()
    m.CopyFrom(model)
    rng = np.random.default_rng(seed)
    inits = {t.name: t for t in m.graph.initializer}
    directions, nodes, moved = {}, [], []
    for w in weights:
        value = numpy_helper.to_array(inits[w])
        scale = float(np.sqrt(np.mean(value.astype(np.float64) ** 2))) or 1.0
        v = rng.standard_normal(value.shape, dtype=np.float32) * np.float32(scale)
        directions[w] = v
        inits[w].name = f"{w}/at0"
        moved.append(numpy_helper.from_array(v, f"{w}/direction"))
        nodes.append(helper.make_node("Mul", ["zoo/t", f"{w}/direction"], [f"{w}/step"]))
        nodes.append(helper.make_node("Add", [f"{w}/at0", f"{w}/step"], [w]))
    m.graph.initializer.extend(moved)
    old = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend(nodes + old)
    m.graph.input.append(helper.make_tensor_value_info("zoo/t", TensorProto.FLOAT, []))
    return m, directions
