"""Each rule at the opsets where its op or the ops its gradient emits change (tests/opsetcases.py).

The points come from ``tests/data/opset_points.json``. The default suite runs those beside an
op-table adapter's switch (kernels and signatures the emitter hides, where the ReduceMax bug was);
the slow suite runs the others (onnx signature changes alone) and fails when the file is out of
date (``PYTHONPATH=$PWD python tools/opset_points.py``).
"""

import json
import os
import sys
from typing import Any, List

import pytest

import opsetcases
from rulecheck import check_case

with open(opsetcases.POINTS_PATH, encoding="utf-8") as _f:
    _DATA = json.load(_f)


def _params(rows: List[List[Any]]) -> List[Any]:
    return [pytest.param(*row[:4], id=f"{row[0]}@{row[1]}:{row[2]}",
                         marks=[pytest.mark.slow] if len(row) > 4 and row[4] != opsetcases.ADAPTER else [])
            for row in rows]


@pytest.mark.parametrize("op_type,opset,case_id,dtype", _params(_DATA["points"]))
def test_rule_at_opset(op_type: str, opset: int, case_id: str, dtype: str) -> None:
    case = opsetcases.at_opset(opsetcases.find(case_id), opset)
    assert case.op_type == op_type
    check_case(case, dtype)


@pytest.mark.parametrize("op_type,opset,case_id,dtype", _params(_DATA["refused"]))
def test_rule_needing_a_newer_opset_says_so(op_type: str, opset: int, case_id: str, dtype: str) -> None:
    case = opsetcases.at_opset(opsetcases.find(case_id), opset)
    assert opsetcases.refusal(case, dtype)


def test_reduce_extrema_and_prod_below_opset_11_are_listed() -> None:
    """The bug this list exists for: Equal had no float kernel before opset 11."""
    listed = {(p[0], p[1]) for p in _DATA["points"]}
    for op_type in ("ReduceMax", "ReduceMin", "ReduceProd"):
        assert {(op_type, 9), (op_type, 10)} <= listed


@pytest.mark.slow
def test_points_file_is_current() -> None:
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
    import opset_points

    with open(opsetcases.POINTS_PATH, encoding="utf-8") as f:
        assert f.read() == opset_points.render(), "regenerate it: PYTHONPATH=$PWD python tools/opset_points.py"
