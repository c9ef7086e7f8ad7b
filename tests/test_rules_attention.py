"""Numeric tests (one table per op, one checker) of rules/attention.py: Attention and
RotaryEmbedding."""

import numpy as np
import pytest

import onnxgrad
from onnxgrad.errors import GradientArgumentError
from rulecheck import Case, build, check_case, check_second_order, params, rand, second_order_params


def qkv(b, hq, s, d, hkv=None, t=None, dv=None, three_d=False, seed=0):
    """Q, K, V inputs in the 4-D (B, heads, L, d) or 3-D (B, L, heads * d) layout."""
    hkv, t, dv = hkv or hq, t or s, dv or d
    shapes = [(b, hq, s, d), (b, hkv, t, d), (b, hkv, t, dv)]
    if three_d:
        shapes = [(b, s, hq * d), (b, t, hkv * d), (b, t, hkv * dv)]
    return [(n, rand(*shape, seed=seed + i)) for i, (n, shape) in enumerate(zip("QKV", shapes))]


ATTENTION = [
    Case("Attention/mha", "Attention", qkv(2, 2, 3, 4), opset=23),
    Case("Attention/scale-softcap", "Attention", qkv(1, 2, 3, 2), {"scale": 0.7, "softcap": 2.0}, opset=23),
    Case("Attention/cross-dv", "Attention", qkv(1, 2, 2, 3, t=4, dv=2), opset=23),
    Case("Attention/3d", "Attention", qkv(2, 2, 3, 2, three_d=True), {"q_num_heads": 2, "kv_num_heads": 2},
         opset=23),
    Case("Attention/gqa", "Attention", qkv(1, 4, 3, 2, hkv=2), opset=23),
    Case("Attention/gqa-3d", "Attention", qkv(1, 4, 2, 2, hkv=1, three_d=True),
         {"q_num_heads": 4, "kv_num_heads": 1}, opset=23),
    Case("Attention/float-mask-2d", "Attention", qkv(1, 2, 3, 2) + [("attn_mask", rand(3, 3, seed=9))],
         opset=23),
    Case("Attention/float-mask-4d", "Attention", qkv(2, 2, 3, 2) + [("attn_mask", rand(2, 1, 3, 3, seed=9))],
         opset=23),
    Case("Attention/bool-mask", "Attention",
         qkv(1, 2, 3, 2) + [("attn_mask", np.array([[True, False, True], [True, True, False], [False, True, True]]))],
         opset=23),
    # the middle query row sees no key: its output is a constant zero row
    Case("Attention/bool-mask-fully-masked-row", "Attention",
         qkv(1, 2, 3, 2) + [("attn_mask", np.array([[True, False, True], [False, False, False], [False, True, True]]))],
         opset=23),
    Case("Attention/24-nonpad-empty-sample", "Attention",
         qkv(2, 2, 2, 2, t=3) + [("attn_mask", None), ("past_key", None), ("past_value", None),
                                 ("nonpad_kv_seqlen", np.array([0, 2]))], opset=24),
    Case("Attention/causal", "Attention", qkv(1, 2, 3, 2), {"is_causal": 1}, opset=23),
    Case("Attention/past-present-causal", "Attention",
         qkv(1, 2, 2, 2) + [("attn_mask", None), ("past_key", rand(1, 2, 3, 2, seed=7)),
                            ("past_value", rand(1, 2, 3, 2, seed=8))],
         {"is_causal": 1}, opset=23, n_outputs=3),
    Case("Attention/past-gqa-3d-mask", "Attention",
         qkv(1, 4, 2, 2, hkv=2, three_d=True) + [("attn_mask", rand(2, 5, seed=6)),
                                                 ("past_key", rand(1, 2, 3, 2, seed=7)),
                                                 ("past_value", rand(1, 2, 3, 2, seed=8))],
         {"q_num_heads": 4, "kv_num_heads": 2}, opset=23, n_outputs=3),
] + [
    Case(f"Attention/qk-output-mode{mode}", "Attention",
         qkv(1, 2, 3, 2) + [("attn_mask", rand(3, 4, seed=9)), ("past_key", rand(1, 2, 1, 2, seed=7)),
                            ("past_value", rand(1, 2, 1, 2, seed=8))],
         {"qk_matmul_output_mode": mode, "softcap": 3.0}, opset=23, n_outputs=4,
         # onnx.reference returns the softcapped scores in mode 0, where the spec (and onnxruntime)
         # give the raw q k^T product
         reference=mode != 0)
    for mode in range(4)
] + [
    Case("Attention/24-nonpad", "Attention", qkv(2, 2, 3, 2) + [("attn_mask", None), ("past_key", None),
                                                                 ("past_value", None),
                                                                 ("nonpad_kv_seqlen", np.array([2, 3]))],
         opset=24),
    # causal with an external cache: the queries are the last of the nonpad_kv_seqlen valid keys
    # (query i sees key j iff j <= i + nonpad - q_len); in batch 0 the offset is negative and
    # query 0 sees no key
    Case("Attention/24-causal-nonpad", "Attention",
         qkv(2, 2, 2, 2, t=4) + [("attn_mask", None), ("past_key", None), ("past_value", None),
                                 ("nonpad_kv_seqlen", np.array([1, 3]))], {"is_causal": 1}, opset=24),
    Case("Attention/24-causal-nonpad-mask", "Attention",
         qkv(2, 2, 2, 2, t=4) + [("attn_mask", rand(2, 4, seed=9)), ("past_key", None), ("past_value", None),
                                 ("nonpad_kv_seqlen", np.array([4, 3]))], {"is_causal": 1}, opset=24),
    # sliding windows (opset 25): key j is seen iff -right <= i + offset - j <= left
    Case("Attention/25-window-bidirectional", "Attention", qkv(1, 2, 4, 2),
         {"left_window_size": 1, "right_window_size": 1}, opset=25),
    Case("Attention/25-window-left-causal-past", "Attention",
         qkv(1, 2, 2, 2) + [("attn_mask", None), ("past_key", rand(1, 2, 3, 2, seed=7)),
                            ("past_value", rand(1, 2, 3, 2, seed=8))],
         {"is_causal": 1, "left_window_size": 2}, opset=25, n_outputs=3),
    Case("Attention/25-window-right-nonpad-gqa", "Attention",
         qkv(2, 4, 2, 2, hkv=2, t=4) + [("attn_mask", None), ("past_key", None), ("past_value", None),
                                        ("nonpad_kv_seqlen", np.array([2, 4]))],
         {"right_window_size": 0}, opset=25),
]


# onnx.reference's Softmax warns on the all -inf rows of fully masked queries
@pytest.mark.filterwarnings("ignore:invalid value encountered in subtract:RuntimeWarning")
@pytest.mark.parametrize("case,dtype", params(ATTENTION))
def test_attention(case, dtype):
    check_case(case, dtype)


def caches(rows, half, seed=0):
    angles = rand(rows, half, seed=seed, low=0.0, high=3.0)
    return [("cos_cache", np.cos(angles)), ("sin_cache", np.sin(angles))]


POSITIONS = np.array([[0, 2, 2], [3, 0, 1]])  # repeated positions: the cache gradient must add up

ROTARY = [
    Case("RoPE/4d-positions", "RotaryEmbedding", [("x", rand(2, 2, 3, 4))] + caches(4, 2) +
         [("position_ids", POSITIONS)], opset=23),
    Case("RoPE/4d-interleaved", "RotaryEmbedding", [("x", rand(2, 2, 3, 4))] + caches(4, 2) +
         [("position_ids", POSITIONS)], {"interleaved": 1}, opset=23),
    Case("RoPE/3d-partial", "RotaryEmbedding", [("x", rand(2, 3, 12))] + caches(5, 2) +
         [("position_ids", POSITIONS)], {"num_heads": 2, "rotary_embedding_dim": 4}, opset=23),
    Case("RoPE/3d-partial-interleaved", "RotaryEmbedding", [("x", rand(2, 3, 12))] + caches(4, 2) +
         [("position_ids", POSITIONS)], {"num_heads": 2, "rotary_embedding_dim": 4, "interleaved": 1}, opset=23),
    Case("RoPE/no-positions", "RotaryEmbedding", [("x", rand(2, 2, 3, 4))] +
         [(n, v.reshape(2, 3, 2)) for n, v in caches(6, 2)], opset=23),
    Case("RoPE/x-only", "RotaryEmbedding", [("x", rand(1, 2, 3, 6))] + caches(3, 3) +
         [("position_ids", np.array([[2, 0, 1]]))], opset=23, wrt=["x"]),
]


for _case in ROTARY:
    _case.dtypes = ("float32",)  # RotaryEmbedding is defined for float, float16 and bfloat16 only


@pytest.mark.parametrize("case,dtype", params(ROTARY))
def test_rotary_embedding(case, dtype):
    check_case(case, dtype)



# a symbolic batch dim: no rule may need its size
SYMBOLIC = [
    Case("Attention/symbolic-batch-gqa-causal-past", "Attention",
         qkv(2, 4, 2, 2, hkv=2) + [("attn_mask", None), ("past_key", rand(2, 2, 1, 2, seed=7)),
                                   ("past_value", rand(2, 2, 1, 2, seed=8))],
         {"is_causal": 1}, opset=23, n_outputs=3, dtypes=("float64",),
         symbolic_dims=["Q", "K", "V", "past_key", "past_value"]),
    Case("RoPE/symbolic-batch", "RotaryEmbedding", [("x", rand(2, 3, 8))] + caches(4, 2) +
         [("position_ids", POSITIONS)], {"num_heads": 2}, opset=23, dtypes=("float32",),
         symbolic_dims=["x", "position_ids"]),
]

SECOND_ORDER = [c for c in ATTENTION + ROTARY if c.id in (
    "Attention/gqa", "Attention/scale-softcap", "Attention/float-mask-2d", "RoPE/3d-partial-interleaved",
    "RoPE/4d-positions",
    # a query that sees no key: no NaN may arise anywhere, or the second derivative is NaN
    "Attention/bool-mask-fully-masked-row", "Attention/24-causal-nonpad")]


@pytest.mark.parametrize("case,dtype", params(SYMBOLIC))
def test_symbolic_batch(case, dtype):
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)


def test_attention_mask_shorter_than_the_keys_is_a_clear_error():
    model, _, xs, ys = build(Case("short-mask", "Attention", qkv(1, 2, 3, 2, t=4) + [("attn_mask", rand(3, 2))],
                                  opset=24), "float32")
    with pytest.raises(GradientArgumentError, match="covers 2 of the 4 keys"):
        onnxgrad.gradients(model, ys, xs)
