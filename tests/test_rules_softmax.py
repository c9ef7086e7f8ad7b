"""Numeric tests of the softmax family and the NLL / cross-entropy losses (one table, one checker)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from onnxgrad.checking import check_gradients
from rulecheck import (Case, check_case, check_second_order, compare_with_reference, feeds_for, params, rand,
                       second_order_params)


def labels(*shape, classes, seed=0, ignored=None, ignore_count=0):
    """int64 labels in [0, classes), with ``ignore_count`` entries set to ``ignored``."""
    lab = np.random.default_rng(seed).integers(0, classes, shape).astype(np.int64)
    if ignore_count:
        flat = lab.reshape(-1)
        flat[np.random.default_rng(seed + 1).choice(flat.size, ignore_count, replace=False)] = ignored
    return lab


def weights(classes, seed=3):
    return rand(classes, seed=seed, low=0.5, high=2.0)


# onnx.reference evaluates Softmax, LogSoftmax and Hardmax before opset 13 with the opset-13
# single-axis meaning; where the flattened (2-D) meaning differs, it cannot serve as a reference.
OLD_AXIS = {"reference": False}

SOFTMAX = []
for op in ("Softmax", "LogSoftmax"):
    SOFTMAX += [
        # before 13: flattened to 2-D at axis (default 1)
        Case(f"{op}/opset11-default", op, [("x", rand(2, 3, 4))], opset=11, **OLD_AXIS),
        Case(f"{op}/opset11-axis2", op, [("x", rand(2, 3, 4))], {"axis": 2}, opset=11),
        Case(f"{op}/opset12-axis0", op, [("x", rand(2, 3, 2))], {"axis": 0}, opset=12, **OLD_AXIS),
        Case(f"{op}/opset12-neg", op, [("x", rand(2, 3, 4))], {"axis": -2}, opset=12, **OLD_AXIS),
        Case(f"{op}/opset9", op, [("x", rand(3, 5))], opset=9),
        # 13+: a plain axis (default -1)
        Case(f"{op}/opset13-default", op, [("x", rand(2, 3, 4))], opset=13),
        Case(f"{op}/opset13-axis1", op, [("x", rand(2, 3, 4))], {"axis": 1}, opset=13),
        Case(f"{op}/opset18-neg3", op, [("x", rand(2, 3, 4))], {"axis": -3}),
    ]
SOFTMAX += [
    # onnxruntime implements Hardmax for float32 only
    Case("Hardmax/opset11", "Hardmax", [("x", rand(2, 3, 4))], opset=11, dtypes=("float32",), **OLD_AXIS),
    Case("Hardmax/opset13", "Hardmax", [("x", rand(2, 3, 4))], {"axis": 1}, opset=13, dtypes=("float32",)),
]

LOSSES = []
for opset in (12, 13, 18):
    for red in ("none", "sum", "mean"):
        LOSSES += [
            Case(f"SCE/{opset}-{red}-NC", "SoftmaxCrossEntropyLoss",
                 [("scores", rand(4, 5)), ("labels", labels(4, classes=5))],
                 {"reduction": red}, opset=opset),
            Case(f"SCE/{opset}-{red}-NCd1d2-weights-ignore-logprob", "SoftmaxCrossEntropyLoss",
                 [("scores", rand(2, 3, 2, 2)), ("labels", labels(2, 2, 2, classes=3, ignored=-1, ignore_count=2)),
                  ("weights", weights(3))],
                 {"reduction": red, "ignore_index": -1}, opset=opset, n_outputs=2),
            Case(f"SCE/{opset}-{red}-NCd1-ignore-in-range", "SoftmaxCrossEntropyLoss",
                 [("scores", rand(3, 4, 2)), ("labels", labels(3, 2, seed=5, classes=4))],
                 {"reduction": red, "ignore_index": 1}, opset=opset),
            Case(f"NLL/{opset}-{red}-NC-weights", "NegativeLogLikelihoodLoss",
                 [("log_prob", rand(4, 5)), ("labels", labels(4, classes=5, seed=2)), ("weights", weights(5))],
                 {"reduction": red}, opset=opset),
            Case(f"NLL/{opset}-{red}-NCd1d2-weights-ignore", "NegativeLogLikelihoodLoss",
                 [("log_prob", rand(2, 3, 2, 2)), ("labels", labels(2, 2, 2, classes=3, ignored=-100, ignore_count=3)),
                  ("weights", weights(3))],
                 {"reduction": red, "ignore_index": -100}, opset=opset),
            Case(f"NLL/{opset}-{red}-NCd1-ignore", "NegativeLogLikelihoodLoss",
                 [("log_prob", rand(3, 4, 3)), ("labels", labels(3, 3, classes=4, ignored=2, ignore_count=2, seed=4))],
                 {"reduction": red, "ignore_index": 2}, opset=opset),
        ]
LOSSES += [
    Case("SCE/13-int32-labels-ignore", "SoftmaxCrossEntropyLoss",
         [("scores", rand(4, 3)), ("labels", labels(4, classes=3, ignored=-5, ignore_count=1).astype(np.int32)),
          ("weights", weights(3))], {"ignore_index": -5}, opset=13),
    Case("NLL/13-int32-labels", "NegativeLogLikelihoodLoss",
         [("log_prob", rand(4, 3, 2)), ("labels", labels(4, 2, classes=3).astype(np.int32))],
         {"reduction": "sum"}, opset=13),
    Case("SCE/22-mean-logprob-only", "SoftmaxCrossEntropyLoss",
         [("scores", rand(3, 4)), ("labels", labels(3, classes=4))], opset=22, n_outputs=2, outputs_used=[1]),
    Case("NLL/22-mean", "NegativeLogLikelihoodLoss",
         [("log_prob", rand(3, 4)), ("labels", labels(3, classes=4))], opset=22),
]


@pytest.mark.parametrize("case,dtype", params(SOFTMAX + LOSSES))
def test_rule(case, dtype):
    check_case(case, dtype)


# a symbolic batch dim: class masks and reductions must not need its size
SYMBOLIC = [
    Case("SCE/13-mean-symbolic-N", "SoftmaxCrossEntropyLoss",
         [("scores", rand(3, 4, 2)), ("labels", labels(3, 2, classes=4, ignored=-1, ignore_count=1)),
          ("weights", weights(4))],
         {"ignore_index": -1}, opset=13, n_outputs=2, symbolic_dims=["scores", "labels"]),
    Case("NLL/12-none-symbolic-N", "NegativeLogLikelihoodLoss",
         [("log_prob", rand(3, 4)), ("labels", labels(3, classes=4))], {"reduction": "none"}, opset=12,
         symbolic_dims=["log_prob", "labels"]),
    Case("Softmax/opset11-symbolic-N", "Softmax", [("x", rand(2, 3, 4))], {"axis": 2}, opset=11, symbolic_dims=["x"]),
]

SECOND_ORDER = [c for c in SOFTMAX + LOSSES if c.id in (
    "Softmax/opset11-default", "Softmax/opset13-default", "LogSoftmax/opset11-default", "LogSoftmax/opset13-default",
    "SCE/13-mean-NCd1d2-weights-ignore-logprob", "SCE/12-sum-NCd1d2-weights-ignore-logprob",
    "NLL/12-mean-NCd1d2-weights-ignore", "NLL/13-none-NC-weights")]


@pytest.mark.parametrize("case,dtype", params(SYMBOLIC))
def test_symbolic_batch(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


@pytest.mark.parametrize("opset", [12, 13])
def test_symbolic_class_count(opset):
    """With C symbolic, the class index column comes from the run-time shape."""
    node = helper.make_node("SoftmaxCrossEntropyLoss", ["scores", "labels", "weights"], ["loss", "log_prob"],
                            ignore_index=1)
    graph = helper.make_graph(
        [node], "sce",
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", "C", 2]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", 2]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["C"])],
        [helper.make_tensor_value_info("loss", TensorProto.FLOAT, []),
         helper.make_tensor_value_info("log_prob", TensorProto.FLOAT, ["N", "C", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    feeds = {"scores": rand(3, 4, 2).astype(np.float32), "labels": np.array([[0, 1], [2, 3], [1, 1]]),
             "weights": weights(4).astype(np.float32)}
    report = check_gradients(model, ["scores", "weights"], ["loss", "log_prob"], feeds=feeds)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert report.ok and len(report.checks) == 2, report.checks
    compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds))
