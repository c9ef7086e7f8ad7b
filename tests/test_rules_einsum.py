"""Numeric tests (one table, one checker) of rules/einsum.py."""

import pytest

from rulecheck import Case, check_case, check_second_order, params, rand, second_order_params

EINSUM = [
    ("matmul", "ij,jk->ik", [(2, 3), (3, 4)]),
    ("matmul-implicit", "ij,jk", [(2, 3), (3, 4)]),
    ("spaces", "ij, jk -> ik", [(2, 3), (3, 4)]),
    ("batch-matmul", "bij,bjk->bik", [(2, 2, 3), (2, 3, 2)]),
    ("transpose", "ijk->kji", [(2, 3, 4)]),
    ("transpose-implicit", "ba", [(2, 3)]),
    ("sum-all", "ij->", [(2, 3)]),
    ("summed-out", "ij->i", [(2, 3)]),
    ("summed-out-both", "ij,kl->jk", [(2, 3), (4, 2)]),
    ("outer", "i,j->ij", [(3,), (4,)]),
    ("dot", "ij,ij->", [(2, 3), (2, 3)]),
    ("three-operands", "bn,anm,bm->ba", [(2, 3), (4, 3, 2), (2, 2)]),
    ("same-letter-thrice", "i,i,i->", [(4,), (4,), (4,)]),
    ("diagonal", "ii->i", [(3, 3)]),
    ("trace-implicit", "ii", [(3, 3)]),
    ("diagonal-with-other", "iij,jk->ik", [(3, 3, 2), (2, 4)]),
    ("diagonal-kept-twice", "iji->ij", [(2, 3, 2)]),
    ("ellipsis", "...ij,...jk->...ik", [(2, 3, 4), (2, 4, 2)]),
    ("ellipsis-implicit", "...ij,...jk", [(2, 2, 3), (2, 3, 2)]),
    ("ellipsis-broadcast", "...ij,...jk->...ik", [(2, 3, 4), (1, 4, 2)]),
    ("ellipsis-rank-differs", "...ij,jk->...ik", [(2, 2, 3, 4), (4, 2)]),
    # onnxruntime refuses an ellipsis summed away ("...i->i"), so only letters are summed here
    ("ellipsis-letter-summed", "...ij->...j", [(2, 3, 4)]),
    ("ellipsis-middle", "i...j,j->i...", [(2, 3, 4), (4,)]),
    ("ellipsis-diagonal", "...ii->...i", [(2, 3, 3)]),
]
EINSUM_CASES = [
    Case(f"Einsum/{opset}-{name}", "Einsum", [(f"x{i}", rand(*s, seed=i)) for i, s in enumerate(shapes)],
         {"equation": eq}, opset=opset)
    for name, eq, shapes in EINSUM for opset in ((12, 18) if name in ("matmul", "diagonal", "ellipsis") else (18,))
]



@pytest.mark.parametrize("case,dtype", params(EINSUM_CASES))
def test_rule(case, dtype):
    check_case(case, dtype)


# a symbolic batch dim: no rule may need its size
SYMBOLIC = [
    Case("Einsum/symbolic-batch", "Einsum", [("x0", rand(2, 2, 3)), ("x1", rand(2, 3, 2, seed=1))],
         {"equation": "bij,bjk->bik"}, opset=18, symbolic_dims=["x0", "x1"]),
    Case("Einsum/symbolic-diagonal-summed", "Einsum", [("x0", rand(2, 3, 3)), ("x1", rand(3, 2, seed=1))],
         {"equation": "bii,jk->ik"}, opset=18, symbolic_dims=["x0"]),
]


@pytest.mark.parametrize("case,dtype", params(SYMBOLIC))
def test_symbolic_batch(case, dtype):
    check_case(case, dtype)


SECOND_ORDER = [c for c in EINSUM_CASES if c.id in (
    "Einsum/18-three-operands", "Einsum/18-diagonal-with-other", "Einsum/18-ellipsis-broadcast",
    "Einsum/18-summed-out-both")]


@pytest.mark.parametrize("case,dtype", second_order_params(SECOND_ORDER))
def test_second_order(case, dtype):
    check_second_order(case, dtype)
