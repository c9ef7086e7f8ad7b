"""CausalConvWithState: a depthwise causal convolution carrying its last positions as state."""

from __future__ import annotations

from typing import List, Optional

import numpy as np

from ..emitter import Emitter, Op
from ..registry import register_gradient


@register_gradient("CausalConvWithState", inputs=[0, 1, 2, 3])
def causal_conv_with_state(g: Emitter, op: Op, dy: str, d_present: Optional[str]) -> List[Optional[str]]:
    # z[n,c,t] = sum_k w[c,k] p[n,c,t+k] + b[c] over p = concat(past_state, input); output =
    # act(z), present_state = the last k-1 positions of p. past_state is differentiable like the
    # input it is concatenated with (the schema tags it otherwise, as carried state).
    x, w = op.inputs[:2]
    b, past = op.input(2), op.input(3)
    c, _, k = g.static_dims(w, "CausalConvWithState")
    length = g.static_dims(x, "CausalConvWithState")[2]
    if past is None and k > 1:
        past = g.constant_of_shape(g.Concat(g.dims(x, [0, 1]), g.ints([k - 1]), axis=0), 0.0, like=x)
        given_past = False
    else:
        given_past = past is not None
    p = g.Concat(past, x, axis=2) if k > 1 else x
    dz = dy
    if op.attr("activation", "none") in ("silu", "swish"):
        z = g.Conv(p, w, *([b] if b else []), group=c)
        s = g.Sigmoid(z)
        one = g.const(1, like=x)
        dz = g.Mul(dy, g.Mul(s, g.Add(one, g.Mul(z, g.Sub(one, s)))))
    flipped = g.Gather(w, g.ints(list(range(k - 1, -1, -1))), axis=2)
    dp = g.Conv(g.pad(dz, [0, 0, k - 1, 0, 0, k - 1]), flipped, group=c) if k > 1 else g.Mul(dz, g.reshape(w, [c, 1]))
    if k > 1 and g.carries(d_present):
        dp = g.Add(dp, g.pad(d_present, [0, 0, length, 0, 0, 0]))
    windows = g.Gather(p, g.ints(np.add.outer(np.arange(length), np.arange(k))), axis=2)  # (N, C, L, k)
    dw = g.reshape(g.reduce_sum(g.Mul(g.unsqueeze(dz, [3]), windows), [0, 2], keepdims=False), [c, 1, k])
    db = g.reduce_sum(dz, [0, 2], keepdims=False) if b else None
    dx = g.slice(dp, [k - 1], [k - 1 + length], [2]) if k > 1 else dp
    d_past = None
    if given_past and past is not None:
        d_past = g.slice(dp, [0], [k - 1], [2]) if k > 1 else g.zeros_like(past)
    return [dx, dw, db, d_past]
