"""Numeric tests of the normalization rules (one table, one checker)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onnxgrad
from onnxgrad.checking import check_gradients
from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def positive(*shape, seed=0):
    return rand(*shape, seed=seed, low=0.5, high=1.5)


def away_from_zero(*shape, seed=0):
    """Uniform magnitudes in [0.2, 1] with random signs (keeps |x| and sign(x) smooth)."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 1.0, shape) * rng.choice([-1.0, 1.0], shape)


def bn_inputs(*shape, seed=0):
    c = shape[1]
    return [("x", rand(*shape, seed=seed)), ("scale", rand(c, seed=seed + 1)), ("B", rand(c, seed=seed + 2)),
            ("mean", rand(c, seed=seed + 3)), ("var", positive(c, seed=seed + 4))]


# onnx.reference gets these forward ops wrong, so it cannot serve as a second runtime there:
# BatchNormalization-9 treats the momentum default as training mode, LRN sums windows along the
# batch axis, LpNormalization p=1 sums x instead of |x|.
NO_REFERENCE = {"reference": False}
# onnxruntime implements these for float32 only
FLOAT32 = {"dtypes": ("float32",)}

BATCH = []
for opset in (9, 14, 15):
    ref = NO_REFERENCE if opset < 14 else {}
    BATCH += [
        Case(f"BN/{opset}-inference-NCHW", "BatchNormalization", bn_inputs(2, 3, 2, 2), {"epsilon": 1e-3},
             opset=opset, **ref),
        Case(f"BN/{opset}-inference-NC", "BatchNormalization", bn_inputs(4, 3, seed=1), opset=opset, **ref),
    ]
for opset in (14, 15):
    BATCH += [
        Case(f"BN/{opset}-training-all-outputs", "BatchNormalization", bn_inputs(3, 2, 4, seed=2),
             {"training_mode": 1, "momentum": 0.7}, opset=opset, n_outputs=3),
        Case(f"BN/{opset}-training-Y", "BatchNormalization", bn_inputs(2, 3, 2, 2, seed=3),
             {"training_mode": 1}, opset=opset, n_outputs=3, outputs_used=[0]),
        Case(f"BN/{opset}-training-running-var", "BatchNormalization", bn_inputs(4, 2, seed=4),
             {"training_mode": 1, "momentum": 0.6}, opset=opset, n_outputs=3, outputs_used=[2]),
    ]

INSTANCE = [
    Case(f"InstanceNorm/{opset}-{'x'.join(map(str, shape))}", "InstanceNormalization",
         [("x", rand(*shape)), ("scale", rand(shape[1], seed=1)), ("B", rand(shape[1], seed=2))],
         {"epsilon": 1e-3}, opset=opset, **FLOAT32)
    for opset, shape in ((9, (2, 3, 4)), (18, (2, 2, 2, 3)), (22, (1, 3, 5)))
]

# LayerNormalization's Mean/InvStdDev are stashed in float32 (the only stash type onnxruntime
# runs), so they are checked in float32; in float64 only Y is a y.
LAYER = []
for axis, shape, scale_shape in ((-1, (2, 3, 4), (4,)), (1, (2, 3, 4), (3, 4)), (-2, (2, 3, 4), (1, 4)),
                                  (0, (2, 3), (2, 3)), (2, (2, 2, 2, 3), (2, 3))):
    xs = [("x", rand(*shape)), ("scale", rand(*scale_shape, seed=1)), ("B", rand(*scale_shape, seed=2))]
    LAYER += [
        Case(f"LayerNorm/axis{axis}", "LayerNormalization", xs, {"axis": axis, "epsilon": 1e-3}, opset=17),
        Case(f"LayerNorm/axis{axis}-stats", "LayerNormalization", xs, {"axis": axis}, opset=17, n_outputs=3,
             dtypes=("float32",)),
    ]
LAYER += [
    Case("LayerNorm/no-bias", "LayerNormalization", [("x", rand(3, 4)), ("scale", rand(4, seed=1))], opset=18),
    Case("LayerNorm/mean-only", "LayerNormalization", [("x", rand(3, 4)), ("scale", rand(4, seed=1))],
         opset=18, n_outputs=3, outputs_used=[1], dtypes=("float32",)),
    Case("LayerNorm/invstd-only", "LayerNormalization", [("x", rand(3, 4)), ("scale", rand(4, seed=1))],
         opset=18, n_outputs=3, outputs_used=[2], dtypes=("float32",)),
]

GROUP = []
for opset in (21,):
    for shape, groups in (((2, 4, 3), 2), ((2, 6, 2, 2), 3), ((1, 4, 5), 4), ((2, 3, 4), 1)):
        p = groups if opset < 21 else shape[1]
        GROUP.append(Case(f"GroupNorm/{opset}-{'x'.join(map(str, shape))}-g{groups}", "GroupNormalization",
                          [("x", rand(*shape)), ("scale", rand(p, seed=1)), ("bias", rand(p, seed=2))],
                          {"num_groups": groups, "epsilon": 1e-3, "stash_type": 11}, opset=opset))

RMS = [
    Case("RMSNorm/axis-1", "RMSNormalization", [("x", rand(2, 3, 4)), ("scale", rand(4, seed=1))], opset=23),
    Case("RMSNorm/axis1", "RMSNormalization", [("x", rand(2, 3, 4)), ("scale", rand(3, 4, seed=1))],
         {"axis": 1, "epsilon": 1e-3}, opset=23),
    Case("RMSNorm/axis-2-scale-broadcast", "RMSNormalization", [("x", rand(2, 3, 4)), ("scale", rand(1, 4, seed=1))],
         {"axis": -2}, opset=23),
]

MISC = []
for opset in (9, 13):
    mvn = FLOAT32  # MVN is a function whose body has float32 constants: invalid for float64
    MISC += [
        Case(f"MVN/{opset}-axes0,2,3", "MeanVarianceNormalization", [("x", rand(2, 3, 2, 2))],
             {"axes": [0, 2, 3]}, opset=opset, **mvn),
        Case(f"MVN/{opset}-axes1", "MeanVarianceNormalization", [("x", rand(2, 3, 4))], {"axes": [1]}, opset=opset,
             **mvn),
        Case(f"MVN/{opset}-axes-neg", "MeanVarianceNormalization", [("x", rand(3, 2, 4))], {"axes": [0, -1]},
             opset=opset, **mvn),
        Case(f"LRN/{opset}-size3", "LRN", [("x", rand(2, 5, 2, 2))], {"size": 3, "alpha": 0.5, "beta": 0.75},
             opset=opset, **FLOAT32, **NO_REFERENCE),
        # onnxruntime accepts odd sizes and 4-D inputs only
        Case(f"LRN/{opset}-size1", "LRN", [("x", rand(2, 4, 3, 1))], {"size": 1, "alpha": 0.3, "beta": 0.6,
                                                                       "bias": 2.0}, opset=opset, **FLOAT32,
             **NO_REFERENCE),
        Case(f"LRN/{opset}-size5-wide", "LRN", [("x", rand(1, 3, 2, 3))], {"size": 5, "alpha": 0.8, "beta": 1.2},
             opset=opset, **FLOAT32, **NO_REFERENCE),
    ]
for opset in (9, 22):
    for p in (1, 2):
        ref = NO_REFERENCE if p == 1 else {}
        MISC += [
            Case(f"LpNorm/{opset}-p{p}-default", "LpNormalization", [("x", away_from_zero(3, 4))], {"p": p},
                 opset=opset, **ref),
            Case(f"LpNorm/{opset}-p{p}-axis0", "LpNormalization", [("x", away_from_zero(3, 4, seed=1))],
                 {"p": p, "axis": 0}, opset=opset, **ref),
            Case(f"LpNorm/{opset}-p{p}-axis-2", "LpNormalization", [("x", away_from_zero(2, 3, 2, seed=2))],
                 {"p": p, "axis": -2}, opset=opset, **ref),
        ]


@pytest.mark.parametrize("case,dtype", params(BATCH + INSTANCE + LAYER + GROUP + RMS + MISC))
def test_rule(case, dtype):
    check_case(case, dtype)


GROUP18 = [
    Case(f"GroupNorm/18-{'x'.join(map(str, shape))}-g{groups}", "GroupNormalization",
         [("x", rand(*shape)), ("scale", rand(groups, seed=1)), ("bias", rand(groups, seed=2))],
         {"num_groups": groups, "epsilon": 1e-3}, opset=18)
    for shape, groups in (((2, 4, 3), 2), ((2, 6, 2, 2), 3), ((2, 3, 4), 1))
]


@pytest.mark.parametrize("case,dtype", params(GROUP18))
def test_group_normalization_18(case, dtype, monkeypatch):
    """GroupNormalization-18 (scale and bias per group) still runs in onnxruntime, but onnx's checker
    rejects it as deprecated (and onnxgrad refuses models the checker rejects); only that complaint
    is waived here."""
    strict = onnx.checker.check_model

    def waive_deprecation(model, *args, **kwargs):
        try:
            strict(model, *args, **kwargs)
        except onnx.checker.ValidationError as e:
            if "deprecated" not in str(e):
                raise

    monkeypatch.setattr(onnx.checker, "check_model", waive_deprecation)
    check_case(case, dtype)


# a symbolic batch dim: the element counts of batch statistics come from the run-time shape
SYMBOLIC = [
    Case("BN/15-training-symbolic-N", "BatchNormalization", bn_inputs(3, 2, 4, seed=2),
         {"training_mode": 1, "momentum": 0.7}, opset=15, n_outputs=3, symbolic_dims=["x"]),
    Case("LayerNorm/axis0-stats-symbolic-N", "LayerNormalization",
         [("x", rand(2, 3)), ("scale", rand(2, 3, seed=1)), ("B", rand(2, 3, seed=2))], {"axis": 0}, opset=17,
         n_outputs=3, dtypes=("float32",), symbolic_dims=["x"]),
    Case("GroupNorm/21-symbolic-N", "GroupNormalization",
         [("x", rand(2, 4, 3)), ("scale", rand(4, seed=1)), ("bias", rand(4, seed=2))],
         {"num_groups": 2, "stash_type": 11}, opset=21, symbolic_dims=["x"]),
    Case("InstanceNorm/symbolic-N", "InstanceNormalization",
         [("x", rand(2, 3, 4)), ("scale", rand(3, seed=1)), ("B", rand(3, seed=2))], opset=18,
         symbolic_dims=["x"], **FLOAT32),
    Case("LRN/symbolic-N", "LRN", [("x", rand(2, 5, 2, 2))], {"size": 3}, opset=13, symbolic_dims=["x"],
         **FLOAT32, **NO_REFERENCE),
    Case("RMSNorm/symbolic-N", "RMSNormalization", [("x", rand(2, 3, 4)), ("scale", rand(4, seed=1))], opset=23,
         symbolic_dims=["x"]),
]

SECOND_ORDER = [c for c in BATCH + INSTANCE + LAYER + GROUP + RMS + MISC if c.id in (
    "BN/15-inference-NCHW", "BN/15-training-all-outputs", "InstanceNorm/18-2x2x2x3", "LayerNorm/axis1",
    "LayerNorm/axis-1-stats", "GroupNorm/21-2x6x2x2-g3", "RMSNorm/axis1", "MVN/13-axes1", "LRN/13-size3",
    "LpNorm/22-p1-axis0", "LpNorm/22-p2-axis0")]


@pytest.mark.parametrize("case,dtype", params(SYMBOLIC))
def test_symbolic_batch(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


@pytest.mark.parametrize("dtype,recomputed", [(TensorProto.FLOAT, False), (TensorProto.FLOAT16, True)])
def test_layer_norm_reads_its_saved_statistics(dtype, recomputed):
    """With Mean and InvStdDev among its outputs, stashed in x's type (float32 by default),
    LayerNormalization's gradient reads them instead of recomputing two reductions; for another
    x type (float16 here) it recomputes them in x's type."""
    x = helper.make_tensor_value_info("x", dtype, [2, 3, 4])
    outs = [helper.make_tensor_value_info("y", dtype, [2, 3, 4])]
    node = helper.make_node("LayerNormalization", ["x", "scale"], ["y", "mean", "inv"], axis=-1)
    scale = numpy_helper.from_array(rand(4, seed=1).astype(helper.tensor_dtype_to_np_dtype(dtype)), "scale")
    model = helper.make_model(helper.make_graph([node], "ln", [x], outs, [scale]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if not recomputed:
        report = check_gradients(model, ["x", "scale"], ["y"], feeds={"x": rand(2, 3, 4).astype(np.float32)})
        assert report.ok, report.checks
    backward = onnxgrad.gradients(model, ["y"], ["x", "scale"]).model.graph.node[1:]
    assert any(n.op_type == "ReduceMean" and "x" in n.input for n in backward) == recomputed
