"""Attention (scaled dot-product, with heads, masks, caches) and RotaryEmbedding."""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import numpy as np

from ..emitter import Emitter, Op
from ..errors import GradientArgumentError
from ..optable import END
from ..registry import register_gradient


def _heads_first(g: Emitter, t: str, heads: int) -> str:
    """(B, L, heads * d) -> (B, heads, L, d); 4-D tensors pass unchanged."""
    if g.rank(t) == 4:
        return t
    return g.transpose(g.reshape(t, [0, 0, heads, -1]), [0, 2, 1, 3])


def _heads_back(g: Emitter, t4: str, like: str) -> str:
    """Inverse of :func:`_heads_first` for a gradient shaped (B, heads, L, d), to ``like``'s layout."""
    if g.rank(like) == 4:
        return t4
    return g.reshape(g.transpose(t4, [0, 2, 1, 3]), [0, 0, -1])


def _num_heads(g: Emitter, op: Op, x: str, attr: str) -> int:
    heads = op.attr(attr) if g.rank(x) == 3 else (g.shape(x) or (None, None))[1]
    if not isinstance(heads, int):
        raise GradientArgumentError(
            f"Attention node '{op.name or op.outputs[0]}': the number of heads of {x!r} must be static")
    return heads


def _attention_bias(g: Emitter, op: Op, q4: str, k_total: str) -> Optional[str]:
    """The additive score bias: attn_mask (bool as 0/-inf), the causal frontier, the sliding
    window (opset 25) and the padding of nonpad_kv_seqlen."""
    neg_inf = g.const(-np.inf, like=q4)
    zero = g.const(0.0, like=q4)
    parts = []
    mask = op.input(3)
    if mask is not None:
        _check_mask_length(g, op, mask)
        parts.append(mask if g.is_float(mask) else g.Where(mask, zero, neg_inf))
    past, nonpad = op.input(4), op.input(6)
    causal = op.attr("is_causal", 0)
    left, right = op.attr("left_window_size", -1), op.attr("right_window_size", -1)
    if causal or left >= 0 or right >= 0:
        # query i sits at position i + offset among the keys: after the past keys (internal
        # cache), or as the last queries of the nonpad_kv_seqlen valid keys (external cache)
        if past:
            offset = g.dims(past, [2])
        elif nonpad is not None:
            offset = g.reshape(g.Sub(nonpad, g.dims(q4, [2])), [-1, 1, 1, 1])
        else:
            offset = g.ints([0])
        rows, cols = _positions(g, q4), _positions(g, k_total)
        behind = g.Sub(g.Add(g.unsqueeze(rows, [1]), offset), g.unsqueeze(cols, [0]))  # query position - key
        blocked = []
        if causal:
            blocked.append(g.Less(behind, g.ints([0])))
        if left >= 0:
            blocked.append(g.Greater(behind, g.ints([left])))
        if right >= 0:
            blocked.append(g.Less(behind, g.ints([-right])))
        outside = blocked[0]
        for b in blocked[1:]:
            outside = g.Or(outside, b)
        parts.append(g.Where(outside, neg_inf, zero))
    if nonpad is not None:
        cols = _positions(g, k_total)
        valid = g.Less(g.cast_like(cols, nonpad), g.reshape(nonpad, [-1, 1, 1, 1]))
        parts.append(g.Where(valid, zero, neg_inf))
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else g.Sum(*parts)


def _positions(g: Emitter, t4: str) -> str:
    """0, 1, ..., L - 1 for the sequence axis (2) of a (B, heads, L, d) tensor."""
    return g.Range(g.scalar_int(0), g.Gather(g.shape_of(t4), g.scalar_int(2)), g.scalar_int(1))


def _check_mask_length(g: Emitter, op: Op, mask: str) -> None:
    """Opset 24 lets a mask cover only the first keys (the rest padded with -inf); not supported."""
    k, past = op.inputs[1], op.input(4)
    lengths = [(g.shape(k) or (None,) * 3)[2 if g.rank(k) == 4 else 1]]
    if past:
        lengths.append((g.shape(past) or (None,) * 3)[2])
    mask_length = (g.shape(mask) or (None,))[-1]
    known = [n for n in lengths if isinstance(n, int)]
    if len(known) == len(lengths) and isinstance(mask_length, int) and mask_length not in (1, sum(known)):
        raise GradientArgumentError(
            f"Attention node '{op.name or op.outputs[0]}': attn_mask covers {mask_length} of the "
            f"{sum(known)} keys; masks shorter than the total sequence are not supported")


def _repeat_heads(g: Emitter, t: str, groups: int) -> str:
    """(B, H, L, d) -> (B, H * groups, L, d), each head repeated ``groups`` times in a row."""
    if groups == 1:
        return t
    b, h, length, d = (g.dims(t, [i]) for i in range(4))
    tiled = g.Expand(g.unsqueeze(t, [2]), g.ints([1, 1, groups, 1, 1]))
    return g.Reshape(tiled, g.Concat(b, g.Mul(h, g.ints([groups])), length, d, axis=0))


def _sum_head_groups(g: Emitter, d_rep: str, like: str, groups: int) -> str:
    """Adjoint of :func:`_repeat_heads`: sum each run of ``groups`` heads back to one."""
    if groups == 1:
        return d_rep
    b, h, length, d = (g.dims(like, [i]) for i in range(4))
    return g.reduce_sum(g.Reshape(d_rep, g.Concat(b, h, g.ints([groups]), length, d, axis=0)), [2], keepdims=False)


@register_gradient("Attention", since=23, inputs=(0, 1, 2, 3, 4, 5))
def attention(g: Emitter, op: Op, dy: str, d_present_key: Optional[str] = None,
              d_present_value: Optional[str] = None, d_qk: Optional[str] = None) -> List[Optional[str]]:
    """Scaled dot-product attention, recomputed in (B, heads, L, d) form:

        S0 = scale * q k^T,  S1 = softcap * tanh(S0 / softcap),  S2 = S1 + bias,
        P = softmax(S2),  Y = P v

    with k, v the past and current keys/values concatenated (present_*) and their heads repeated
    for grouped-query attention. qk_matmul_output is S0, S1, S2 or P by its mode.
    """
    q, k, v = op.inputs[:3]
    past_key, past_value = op.input(4), op.input(5)
    q_heads = _num_heads(g, op, q, "q_num_heads")
    kv_heads = _num_heads(g, op, k, "kv_num_heads")
    groups = q_heads // kv_heads
    q4 = _heads_first(g, q, q_heads)
    k4, v4 = _heads_first(g, k, kv_heads), _heads_first(g, v, kv_heads)
    k_total = g.Concat(past_key, k4, axis=2) if past_key else k4
    v_total = g.Concat(past_value, v4, axis=2) if past_value else v4
    k_rep, v_rep = _repeat_heads(g, k_total, groups), _repeat_heads(g, v_total, groups)

    if op.has_attr("scale"):
        scale = g.const(op.attr("scale"), like=q)
    else:
        # default 1/sqrt(head_size)
        q_shape = g.shape(q) or ()
        head = q_shape[-1] if q_shape and isinstance(q_shape[-1], int) else None
        if head is None:
            raise GradientArgumentError(
                f"Attention node '{op.name or op.outputs[0]}': the last dim of {q!r} must be static")
        scale = g.const(1.0 / np.sqrt(head if g.rank(q) == 4 else head // q_heads), like=q)
    s0 = g.Mul(g.MatMul(q4, g.transpose(k_rep, [0, 1, 3, 2])), scale)
    softcap = op.attr("softcap", 0.0)
    if softcap:
        cap = g.const(softcap, like=q)
        tanh = g.Tanh(g.Div(s0, cap))
        s1 = g.Mul(cap, tanh)
    else:
        s1 = s0
    bias = _attention_bias(g, op, q4, k_total)
    if bias is None:
        p = g.Softmax(s1, axis=-1)
    else:
        # A query that sees no key has an all -inf row, whose softmax is NaN; the op gives zeros.
        # Such rows get a zero bias before the softmax and zeros after it, so no NaN ever arises
        # (not even in a discarded branch, which a zero gradient would turn into NaN).
        zero = g.const(0.0, like=q)
        blind = g.IsInf(g.reduce("ReduceMax", bias, [-1]), detect_positive=0)
        s2 = g.Add(s1, g.Where(blind, zero, bias))
        p = g.Where(blind, zero, g.Softmax(s2, axis=-1))

    mode = op.attr("qk_matmul_output_mode", 0)
    d_at: Dict[int, Optional[str]] = {stage: None for stage in range(4)}
    if g.carries(d_qk):
        d_at[mode] = d_qk
    dy4 = _heads_first(g, dy, q_heads)
    d_v_rep = g.MatMul(g.transpose(p, [0, 1, 3, 2]), dy4)
    d_p = g.MatMul(dy4, g.transpose(v_rep, [0, 1, 3, 2]))
    if d_at[3] is not None:
        d_p = g.Add(d_p, d_at[3])
    d_s2 = g.Mul(p, g.Sub(d_p, g.reduce_sum(g.Mul(d_p, p), [3])))
    if d_at[2] is not None:
        d_s2 = g.Add(d_s2, d_at[2])
    d_s1 = g.Add(d_s2, d_at[1]) if d_at[1] is not None else d_s2
    d_s0 = g.Mul(d_s1, g.Sub(g.const(1.0, like=q), g.Mul(tanh, tanh))) if softcap else d_s1
    if d_at[0] is not None:
        d_s0 = g.Add(d_s0, d_at[0])
    d_s0 = g.Mul(d_s0, scale)
    d_q4 = g.MatMul(d_s0, k_rep)
    d_k_rep = g.MatMul(g.transpose(d_s0, [0, 1, 3, 2]), q4)

    d_mask = None
    mask = op.input(3)
    if mask is not None and g.is_float(mask):
        d_mask = _sum_to_mask(g, d_s2, mask)
    grads = [_heads_back(g, d_q4, q), None, None, d_mask, None, None]
    for slot, d_rep, total, live_present, cur, past in (
            (1, d_k_rep, k_total, d_present_key, k, past_key),
            (2, d_v_rep, v_total, d_present_value, v, past_value)):
        d_total = _sum_head_groups(g, d_rep, total, groups)
        if g.carries(live_present):
            d_total = g.Add(d_total, live_present)
        if past:
            split = g.dims(past, [2])
            end = g.ints([END])
            grads[slot + 3] = g.Slice(d_total, g.ints([0]), split, g.ints([2]))
            d_total = g.Slice(d_total, split, end, g.ints([2]))
        grads[slot] = _heads_back(g, d_total, cur)
    return grads + [None] * (len(op.inputs) - 6)


def _sum_to_mask(g: Emitter, d_scores: str, mask: str) -> str:
    """Sum a (B, H, S, T) score gradient to the shape of a broadcast attention mask."""
    mask_shape = g.shape(mask)
    if mask_shape is None:
        raise GradientArgumentError(f"the rank of attention mask {mask!r} must be known")
    rank = len(mask_shape)
    lead = list(range(4 - rank))
    axes = lead + [4 - rank + i for i, d in enumerate(mask_shape) if d == 1]
    reduced = g.reduce_sum(d_scores, axes, keepdims=True)
    return g.reshape(reduced, g.shape_of(mask)) if lead else reduced


# ---------------------------------------------------------------------------- RotaryEmbedding
@register_gradient("RotaryEmbedding", since=23, inputs=(0, 1, 2))
def rotary_embedding(g: Emitter, op: Op, dy: str) -> List[Optional[str]]:
    """Each pair (x1, x2) is rotated by its position's angle: (x1 cos - x2 sin, x1 sin + x2 cos).

    The input gradient rotates dy back (the transpose of a rotation is the rotation by minus the
    angle: the same op with -sin). The cache gradients collect dy1 x1 + dy2 x2 (cos) and
    dy2 x1 - dy1 x2 (sin) over heads, scattered to the rows position_ids picked.
    """
    x, cos, sin = op.inputs[:3]
    positions = op.input(3)
    attrs = {a: op.attr(a) for a in ("interleaved", "num_heads", "rotary_embedding_dim") if op.has_attr(a)}
    tail = [positions] if positions else []
    d_x = g.RotaryEmbedding(dy, cos, g.Neg(sin), *tail, **attrs)
    if not (g.is_float(cos) or g.is_float(sin)):
        return [d_x, None, None, None]
    x1, x2 = _rotary_halves(g, op, x)
    dy1, dy2 = _rotary_halves(g, op, dy)
    d_cos = g.reduce_sum(g.Add(g.Mul(dy1, x1), g.Mul(dy2, x2)), [2], keepdims=False)
    d_sin = g.reduce_sum(g.Sub(g.Mul(dy2, x1), g.Mul(dy1, x2)), [2], keepdims=False)
    if positions:
        # position_ids is [batch, sequence]: one 1-tuple of row indices per position
        rows = g.reshape(positions, [0, 0, 1]) if g.shape(positions) is None else g.unsqueeze(positions, [2])
        d_cos = g.scatter_nd_add(g.shape_of(cos), rows, d_cos)
        d_sin = g.scatter_nd_add(g.shape_of(sin), rows, d_sin)
    return [d_x, d_cos, d_sin, None]


def _rotary_halves(g: Emitter, op: Op, t: str) -> Tuple[str, str]:
    """The two rotated halves of ``t`` (shaped like the op's input) as (B, S, heads, R/2) each."""
    x = op.inputs[0]
    shape = g.shape(x)
    if g.rank(x) == 4:
        bshd = g.transpose(t, [0, 2, 1, 3])
        head = shape[3]  # type: ignore[index]
    else:
        heads = op.attr("num_heads")
        bshd = g.reshape(t, [0, 0, heads, -1])
        head = shape[2] // heads if isinstance(shape[2], int) else None  # type: ignore[index]
    rot = op.attr("rotary_embedding_dim", 0) or head
    if not isinstance(rot, int):
        raise GradientArgumentError(
            f"RotaryEmbedding node '{op.name or op.outputs[0]}': the head size of {x!r} must be static")
    if op.attr("interleaved", 0):
        return g.slice(bshd, [0], [rot], [3], [2]), g.slice(bshd, [1], [rot], [3], [2])
    return g.slice(bshd, [0], [rot // 2], [3]), g.slice(bshd, [rot // 2], [rot], [3])


