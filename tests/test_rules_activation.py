"""Numeric tests of the activation rules (one table, one checker).

Inputs stay at least 0.1 away from each function's kinks (0 for the Relu family, the thresholds of
ThresholdedRelu and Shrink, the corners of HardSigmoid and HardSwish).
"""

import numpy as np
import onnx
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


def away(*shape, seed=0, margin=0.1, scale=2.0):
    """Values in [-scale, -margin] u [margin, scale]."""
    mag = rand(*shape, seed=seed, low=margin, high=scale)
    return mag * np.where(rand(*shape, seed=seed + 100) < 0, -1.0, 1.0)


def avoiding(values, kinks, margin=0.1):
    """``values`` with every element within ``margin`` of a kink pushed ``2 * margin`` away."""
    v = np.array(values, dtype=np.float64)
    for k in kinks:
        near = np.abs(v - k) < margin
        v[near] = k + np.where(v[near] >= k, 2 * margin, -2 * margin)
    return v


# onnxruntime has no float64 kernel for these forward ops at these opsets: it runs several of them
# in float64 at opsets 18-21 only, through their ONNX function bodies (HardSwish expands to
# HardSigmoid-6; the Mish-22 gradient needs Softplus-22).
F32 = ("float32",)
# onnxruntime's float64 Shrink rounds its input through float32 (Shrink(-0.7) = -0.69999999).
SHRINK = F32
# The exact Gelu's gradient needs Erf, which onnxruntime implements for float32 only.
GELU = F32

X = away(3, 4)
WIDE = avoiding(rand(3, 5, seed=3, low=-5, high=5), [-3.0, 3.0])

CASES = [
    Case("Relu", "Relu", [("x", X)]),
    Case("Relu/opset9", "Relu", [("x", away(5, seed=1))], opset=9),
    Case("Relu/opset14", "Relu", [("x", X)], opset=14),
    Case("LeakyRelu/default", "LeakyRelu", [("x", X)]),
    Case("LeakyRelu/alpha", "LeakyRelu", [("x", X)], attrs={"alpha": 0.3}),
    Case("LeakyRelu/alpha-opset9", "LeakyRelu", [("x", X)], attrs={"alpha": 0.3}, opset=9, dtypes=F32),
    Case("Elu/default", "Elu", [("x", X)]),
    Case("Elu/alpha", "Elu", [("x", X)], attrs={"alpha": 0.7}),
    Case("Elu/alpha-opset22", "Elu", [("x", X)], attrs={"alpha": 0.7}, opset=22, dtypes=F32),
    Case("Elu/alpha-opset9", "Elu", [("x", X)], attrs={"alpha": 0.7}, opset=9, dtypes=F32),
    Case("Selu/default", "Selu", [("x", X)]),
    Case("Selu/attrs", "Selu", [("x", X)], attrs={"alpha": 1.5, "gamma": 0.8}),
    Case("Selu/attrs-opset22", "Selu", [("x", X)], attrs={"alpha": 1.5, "gamma": 0.8}, opset=22, dtypes=F32),
    Case("Selu/attrs-opset9", "Selu", [("x", X)], attrs={"alpha": 1.5, "gamma": 0.8}, opset=9, dtypes=F32),
    Case("Softplus", "Softplus", [("x", rand(3, 4, low=-3, high=3))]),
    Case("Softplus/opset22", "Softplus", [("x", rand(3, 4, low=-3, high=3))], opset=22, dtypes=F32),
    Case("Softplus/opset9", "Softplus", [("x", rand(3, 4, low=-3, high=3))], opset=9, dtypes=F32),
    Case("Softsign", "Softsign", [("x", X)]),
    Case("Softsign/opset22", "Softsign", [("x", X)], opset=22, dtypes=F32),
    Case("HardSigmoid/default", "HardSigmoid", [("x", avoiding(rand(3, 5, low=-4, high=4), [-2.5, 2.5]))]),
    Case("HardSigmoid/attrs", "HardSigmoid", [("x", avoiding(rand(3, 5, low=-3, high=3), [-1.5, 0.5]))],
         attrs={"alpha": 0.5, "beta": 0.75}),
    Case("HardSigmoid/attrs-opset22", "HardSigmoid", [("x", avoiding(rand(3, 5, low=-3, high=3), [-1.5, 0.5]))],
         attrs={"alpha": 0.5, "beta": 0.75}, opset=22, dtypes=F32),
    Case("HardSigmoid/attrs-opset9", "HardSigmoid", [("x", avoiding(rand(3, 5, low=-3, high=3), [-1.5, 0.5]))],
         attrs={"alpha": 0.5, "beta": 0.75}, opset=9, dtypes=F32),
    Case("PRelu/channel", "PRelu", [("x", away(2, 3, 2, 2)), ("slope", rand(3, 1, 1, seed=1))]),
    Case("PRelu/last-axis", "PRelu", [("x", away(2, 3, seed=2)), ("slope", rand(3, seed=1))]),
    Case("PRelu/last-axis-opset9", "PRelu", [("x", away(2, 3, seed=2)), ("slope", rand(3, seed=1))], opset=9,
         dtypes=F32),
    Case("PRelu/scalar-slope-opset16", "PRelu", [("x", away(4, 3, seed=2)), ("slope", rand(1, seed=1))], opset=16),
    # the Celu schema allows float32 only
    Case("Celu/default", "Celu", [("x", X)], opset=12, dtypes=("float32",)),
    Case("Celu/alpha", "Celu", [("x", X)], attrs={"alpha": 2.0}, dtypes=("float32",)),
    Case("ThresholdedRelu/default", "ThresholdedRelu", [("x", avoiding(rand(3, 4, low=-2, high=3), [1.0]))],
         opset=10, dtypes=F32),
    Case("ThresholdedRelu/alpha", "ThresholdedRelu", [("x", avoiding(rand(3, 4, low=-2, high=3), [0.5]))],
         attrs={"alpha": 0.5}),
    Case("Shrink/default", "Shrink", [("x", avoiding(rand(3, 4, low=-2, high=2), [-0.5, 0.5]))], opset=9,
         dtypes=SHRINK),
    Case("Shrink/attrs", "Shrink", [("x", avoiding(rand(3, 4, low=-2, high=2), [-1.0, 1.0]))],
         attrs={"lambd": 1.0, "bias": 0.3}, dtypes=SHRINK),
    Case("Gelu/none", "Gelu", [("x", rand(3, 4, low=-3, high=3))], opset=20, dtypes=GELU),
    Case("Gelu/tanh", "Gelu", [("x", rand(3, 4, low=-3, high=3))], attrs={"approximate": "tanh"}, opset=20),
    Case("HardSwish", "HardSwish", [("x", WIDE)], opset=14, dtypes=F32),
    Case("Mish", "Mish", [("x", rand(3, 4, low=-3, high=3))], opset=18),
    Case("Mish/opset22", "Mish", [("x", rand(3, 4, low=-3, high=3))], opset=22, dtypes=F32),
    Case("ThresholdedRelu/opset22", "ThresholdedRelu", [("x", avoiding(rand(3, 4, low=-2, high=3), [1.0]))],
         opset=22, dtypes=F32),
    Case("HardSwish/opset22", "HardSwish", [("x", WIDE)], opset=22, dtypes=F32),
]

if onnx.defs.has("Swish"):
    _SWISH = onnx.defs.get_schema("Swish").since_version
    CASES += [
        Case("Swish/default", "Swish", [("x", rand(3, 4, low=-3, high=3))], opset=_SWISH),
        Case("Swish/alpha", "Swish", [("x", rand(3, 4, low=-3, high=3))], attrs={"alpha": 1.7}, opset=_SWISH),
    ]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(CASES))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
