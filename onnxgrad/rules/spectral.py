"""Spectral transforms: DFT and STFT, whose adjoints are the (inverse) transforms themselves."""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from onnx import TensorProto

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..registry import register_gradient


def _dft_adjoint(g: Emitter, dy: str, a: int, r: int, n: int, inverse: int, onesided: int, real: bool,
                 like: str) -> str:
    """Adjoint of a length-n DFT along axis ``a`` (of rank-r tensors whose last dim is re/im).

    The DFT matrix F is complex-linear; the adjoint of x -> F x is F^H = n * IDFT (and of the
    inverse transform, DFT / n). A onesided output dropped rows of F (zero-pad dy back to n) and a
    real input keeps the real part.
    """
    if onesided:
        dy = g.pad(dy, [0] * r + [n - (n // 2 + 1) if d == a else 0 for d in range(r)])
    back = g.DFT(dy, axis=a, inverse=1 - inverse)
    back = g.Mul(back, g.const(1.0 / n if inverse else float(n), like=like))
    return g.slice(back, [0], [1], [r - 1]) if real else back


@register_gradient("DFT", since=17, inputs=[0])
def dft(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    x = op.inputs[0]
    shape = g.static_dims(x, "DFT")
    r = len(shape)
    if op.is_dynamic("axis") or (op.input(1) and g.constant_value(op.input(1)) is None):
        return [_dft_dynamic(g, op, dy, shape), None, None]
    a = int(op.arg("axis").reshape(-1)[0]) % r  # type: ignore[union-attr]
    inverse, onesided = op.attr("inverse", 0), op.attr("onesided", 0)
    if inverse and onesided:
        return [_irfft_adjoint(g, op, dy, x, shape, a), None, None]
    n = int(np.asarray(op.constant_input(1, "dft_length")).reshape(-1)[0]) if op.input(1) else shape[a]
    back = _dft_adjoint(g, dy, a, r, n, inverse, onesided, shape[-1] == 1, like=x)
    length = shape[a]  # undo dft_length's zero-padding or truncation of x
    if n > length:
        back = g.slice(back, [0], [length], [a])
    elif n < length:
        back = g.pad(back, [0] * r + [length - n if d == a else 0 for d in range(r)])
    return [back, None, None]


def _dft_dynamic(g: Emitter, op: Op, dy: str, shape: Sequence[int]) -> str:
    """:func:`_dft_adjoint` (and the IRFFT's) when the axis or dft_length is known only at run time
    (from opset 20, where DFT takes its axis as an input too): pads and slices along that axis
    and the 1/n scalings are computed at run time."""
    r = len(shape)
    inverse, onesided = op.attr("inverse", 0), op.attr("onesided", 0)
    static = None if op.is_dynamic("axis") else int(op.arg("axis").reshape(-1)[0]) % r  # type: ignore[union-attr]
    if static is None:
        axis = g.Reshape(g.cast(op.arg_input("axis"), TensorProto.INT64), g.ints([]))  # type: ignore[arg-type]
        axis = g.Where(g.Less(axis, g.scalar_int(0)), g.Add(axis, g.scalar_int(r)), axis)
    else:
        axis = g.scalar_int(static)

    def dft(t: str, **attrs: int) -> str:  # the axis as the opset wants it: an attribute before 20
        return g.DFT(t, axis=static, **attrs) if static is not None else g.DFT(t, None, axis, **attrs)
    length = g.Gather(g.ints(shape), axis, axis=0)
    on_axis = g.Cast(g.Equal(g.ints(range(r)), axis), to=TensorProto.INT64)  # 1 at the axis, 0 elsewhere

    def pad_end(t: str, amount: str) -> str:  # zeros appended along the axis
        return g.pad(t, g.Concat(g.ints([0] * r), g.Mul(on_axis, amount), axis=0))

    given = op.input(1)
    default = g.Mul(g.Sub(length, g.scalar_int(1)), g.scalar_int(2)) if inverse and onesided else length
    n = g.Reshape(g.cast(given, TensorProto.INT64), g.ints([])) if given else default
    n_float = g.cast_like(n, dy)
    if inverse and onesided:  # see _irfft_adjoint: bins 1..n-m count twice
        half = dft(dy, onesided=1)
        bin_ = g.CumSum(g.ones_like(half), axis, exclusive=1)
        upper = g.Sub(n_float, g.cast_like(length, dy))
        doubled = g.And(g.GreaterOrEqual(bin_, g.const(1, like=dy)), g.LessOrEqual(bin_, upper))
        return g.Mul(half, g.Div(g.Where(doubled, g.const(2, like=dy), g.const(1, like=dy)), n_float))
    if onesided:
        dy = pad_end(dy, g.Sub(n, g.Add(g.Div(n, g.scalar_int(2)), g.scalar_int(1))))
    back = dft(dy, inverse=1 - inverse)
    back = g.Div(back, n_float) if inverse else g.Mul(back, n_float)
    if shape[-1] == 1:  # a real input keeps the real part
        back = g.slice(back, [0], [1], [r - 1])
    # undo dft_length's zero-padding or truncation of x
    back = g.Slice(back, g.ints([0]), g.Reshape(length, g.ints([1])), g.Reshape(axis, g.ints([1])))
    return pad_end(back, g.Max(g.Sub(length, n), g.scalar_int(0)))


def _irfft_adjoint(g: Emitter, op: Op, dy: str, x: str, shape: Sequence[int], a: int) -> str:
    # y = Re(IDFT(X extended by conjugate symmetry)). The adjoint of Re(IDFT) is DFT(dy) / n; the
    # extension copies bin j (conjugated) to n - j, so bins 1..n-m receive their mirror's share:
    # twice the onesided DFT of the real dy.
    r, m = len(shape), shape[a]
    n = int(np.asarray(op.constant_input(1, "dft_length")).reshape(-1)[0]) if op.input(1) else 2 * (m - 1)
    if n // 2 + 1 != m:
        raise GradientArgumentError(f"the gradient of the inverse onesided DFT needs {n // 2 + 1} input bins, not {m}")
    half = g.DFT(dy, axis=a, onesided=1)
    weights = np.where((np.arange(m) >= 1) & (np.arange(m) <= n - m), 2.0, 1.0) / n
    return g.Mul(half, g.const(weights.reshape([m] + [1] * (r - 1 - a)), like=x))


@register_gradient("STFT", since=17, inputs=[0, 2])
def stft(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    # y[b, f] = DFT(signal[b, f*step : f*step + n] * window): frames are gathered, windowed and
    # transformed; the adjoint transforms back, and overlap-adds the frames into the signal.
    signal, window = op.inputs[0], op.input(2)
    batch, length, parts = g.static_dims(signal, "STFT")
    step = g.constant_value(op.inputs[1])
    if window is not None:
        n = g.static_dims(window, "STFT")[0]
    elif g.constant_value(op.input(3)) is None:
        return [_stft_runtime_length(g, op, dy), None, None, None]
    else:
        n = int(np.asarray(op.constant_input(3, "frame_length")).reshape(-1)[0])
    if step is not None:
        count = (length - n) // int(step.reshape(-1)[0]) + 1
        known = np.add.outer(np.arange(count) * int(step.reshape(-1)[0]), np.arange(n))  # (frames, n)
        positions = g.ints(known)
    else:  # a frame step known only at run time: the frames' start positions too
        step_t = g.Reshape(g.cast(op.inputs[1], TensorProto.INT64), g.ints([]))
        frames_t = g.Add(g.Div(g.scalar_int(length - n), step_t), g.scalar_int(1))
        starts = g.Mul(g.Range(g.scalar_int(0), frames_t, g.scalar_int(1)), step_t)
        positions = g.Add(g.unsqueeze(starts, [1]), g.ints(np.arange(n).reshape(1, n)))
    frames = g.Gather(signal, positions, axis=1)  # (B, F, n, parts)
    d_windowed = _dft_adjoint(g, dy, 2, 4, n, 0, op.attr("onesided", 1), parts == 1, like=signal)
    d_window = None
    if window is not None:
        d_window = g.reduce_sum(g.Mul(d_windowed, frames), [0, 1, 3], keepdims=False)
        d_windowed = g.Mul(d_windowed, g.reshape(window, [1, 1, n, 1]))
    per_position = g.transpose(d_windowed, [1, 2, 0, 3])  # (F, n, B, parts)
    size = g.ints([length, batch, parts])
    # (frames, n, 1): one coordinate per index
    targets = g.ints(known[..., None]) if step is not None else g.reshape(positions, [-1, n, 1])
    summed = g.scatter_nd_add(size, targets, per_position)
    return [g.transpose(summed, [1, 0, 2]), None, d_window, None]


def _stft_runtime_length(g: Emitter, op: Op, dy: str) -> str:
    """The signal's gradient of an STFT without window whose frame_length (and maybe frame_step)
    is known only at run time: the same inverse transform and overlap-add, with the frame
    positions, the onesided padding and the scaling by n computed at run time."""
    signal = op.inputs[0]
    batch, length, parts = g.static_dims(signal, "STFT")

    def scalar(t: str) -> str:
        return g.Reshape(g.cast(t, TensorProto.INT64), g.ints([]))

    n, step = scalar(op.inputs[3]), scalar(op.inputs[1])
    count = g.Add(g.Div(g.Sub(g.scalar_int(length), n), step), g.scalar_int(1))
    starts = g.Mul(g.Range(g.scalar_int(0), count, g.scalar_int(1)), step)
    positions = g.Add(g.unsqueeze(starts, [1]), g.unsqueeze(g.Range(g.scalar_int(0), n, g.scalar_int(1)), [0]))
    if op.attr("onesided", 1):  # the dropped bins n//2+1 .. n-1 of each frame get zeros
        dropped = g.Sub(n, g.Add(g.Div(n, g.scalar_int(2)), g.scalar_int(1)))
        dy = g.pad(dy, g.Concat(g.ints([0] * 6), g.Reshape(dropped, g.ints([1])), g.ints([0]), axis=0))
    back = g.Mul(g.DFT(dy, axis=2, inverse=1), g.cast_like(n, dy))  # the adjoint of the DFT: n * IDFT
    if parts == 1:  # a real signal keeps the real part
        back = g.slice(back, [0], [1], [3])
    per_position = g.reshape(g.transpose(back, [1, 2, 0, 3]), [-1, batch, parts])  # (F * n, B, parts)
    summed = g.scatter_nd_add(g.ints([length, batch, parts]), g.reshape(positions, [-1, 1]), per_position)
    return g.transpose(summed, [1, 0, 2])
