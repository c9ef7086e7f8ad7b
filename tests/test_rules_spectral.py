"""Numeric tests (one table, one checker) of rules/spectral.py: DFT and STFT."""

import numpy as np
import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params


CASES = [
    # DFT: forward/inverse, real/complex, onesided, dft_length padding and truncation, both signatures
    *[Case(f"DFT/op{o}-{name}", "DFT",
           [("x", rand(2, 5, 3, last)), ("len", None if length is None else np.array(length, np.int64)),
            *([("axis", np.array(axis, np.int64))] if o >= 20 else [])],
           attrs={k: v for k, v in (("inverse", inv), ("onesided", one), ("axis", axis if o < 20 else None))
                  if v}, opset=o, constant=["len", "axis"])
      for o, name, last, length, axis, inv, one in [
          (17, "complex", 2, None, 1, 0, 0), (17, "real-onesided", 1, None, 1, 0, 1),
          (17, "inverse-axis2", 2, None, 2, 1, 0), (17, "real-padded", 1, 8, 1, 0, 0),
          (20, "complex-axis-2", 2, None, -2, 0, 0), (20, "real-onesided-truncated", 1, 4, 1, 0, 1),
          (20, "inverse-even", 2, 6, -3, 1, 0)]],
    # the onesided inverse (IRFFT) from a half spectrum, even and odd output lengths
    Case("DFT/op17-irfft-even", "DFT", [("x", rand(2, 4, 2))], attrs={"inverse": 1, "onesided": 1}, opset=17),
    Case("DFT/op20-irfft-odd", "DFT", [("x", rand(2, 3, 4, 2)), ("len", np.array(5, np.int64)),
                                       ("axis", np.array(1, np.int64))],
         attrs={"inverse": 1, "onesided": 1}, opset=20, constant=["len", "axis"]),
    # STFT: signal and window (bilinear), real or complex signal, overlapping frames. Two-sided only:
    # onnx 1.23's shape inference declares floor(n/2) + 2 onesided bins, one more than onnxruntime
    # returns (the onesided adjoint is shared with DFT, tested above, and in the corpus' test_stft).
    Case("STFT/window", "STFT", [("s", rand(2, 10, 1)), ("step", np.array(2, np.int64)),
                                 ("w", rand(4, seed=1, low=0.5))], attrs={"onesided": 0}, opset=17, constant=["step"]),
    Case("STFT/complex", "STFT", [("s", rand(1, 9, 2)), ("step", np.array(3, np.int64)), ("w", rand(5, seed=2))],
         attrs={"onesided": 0}, opset=17, constant=["step"]),
    Case("STFT/frame-length", "STFT", [("s", rand(2, 7, 1)), ("step", np.array(1, np.int64)), ("w", None),
                                       ("len", np.array(3, np.int64))], attrs={"onesided": 0}, opset=17,
         constant=["step", "len"]),
]


@pytest.mark.parametrize("case,dtype", params(CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in CASES if c.id in (
    "DFT/op17-real-onesided", "STFT/window")]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
