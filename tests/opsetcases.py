"""Every rule at the opsets where its op, or an op its gradient emits, changes.

The rule tables (``tests/test_rules_*.py``) write each case at one opset. A rule can still break
at another one: the ops it emits change signature or lose a kernel there (``Equal`` had no float
kernel before opset 11, which broke ReduceMax/ReduceMin/ReduceProd at opsets 9 and 10 unseen).
:func:`generate` lists, per differentiated op type, the opsets that matter:

* the first opset where the op exists (from opset 9);
* for the op itself and each op its gradient emits (recorded by differentiating its cases), both
  sides of every opset where that op's inputs, outputs or attributes change (``onnx.defs``), and
  of every switch of its op-table adapter (:func:`onnxgrad.optable.adapter_opsets`: kernels
  missing before some opset);

and picks for each (op type, opset) the first case of the tables that can be written at that opset
(:func:`at_opset` moves arguments between their attribute and input forms). The result is kept in
``tests/data/opset_points.json`` (``python tools/opset_points.py`` rewrites it);
``tests/test_opsets.py`` runs each point through the table checker and checks the file is current.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import os
from typing import Dict, List, Optional, Set, Tuple

import numpy as np
import onnx

from onnxgrad import coverage, gradients
from onnxgrad.errors import GradientArgumentError
from onnxgrad.checking import session
from onnxgrad.optable import MOVED_TO_INPUT, adapter_opsets
from rulecheck import Case, build

HERE = os.path.dirname(os.path.abspath(__file__))
POINTS_PATH = os.path.join(HERE, "data", "opset_points.json")


def table_cases() -> Dict[str, List[Case]]:
    """The cases of every rule table, by op type, in table order (each id once)."""
    found: Dict[str, List[Case]] = {}
    seen: Set[str] = set()
    for path in sorted(glob.glob(os.path.join(HERE, "test_rules_*.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        for value in vars(module).values():
            if not isinstance(value, list):
                continue
            for case in value:
                if isinstance(case, Case) and case.id not in seen:
                    seen.add(case.id)
                    found.setdefault(case.op_type, []).append(case)
    return found


def at_opset(case: Case, opset: int) -> Case:
    """``case`` written at ``opset``: arguments that are attributes there and inputs at the case's
    own opset (or the reverse) are moved, keeping their values."""
    inputs = list(case.inputs)
    attrs = dict(case.attrs)
    constant = list(case.constant)
    taken = {name for name, _ in inputs}
    for name, moved in sorted(MOVED_TO_INPUT.get(case.op_type, {}).items(), key=lambda kv: kv[1].position):
        was_input, is_input = case.opset >= moved.since, opset >= moved.since
        if was_input and not is_input and len(inputs) > moved.position:
            value = inputs[moved.position][1]
            if value is not None:
                flat = np.asarray(value).reshape(-1)
                attrs[name] = (flat.tolist() if moved.kind == "ints" else
                               int(flat[0]) if moved.kind == "int" else float(flat[0]))
            inputs[moved.position] = (f"absent{moved.position}", None)
        elif is_input and not was_input and name in attrs:
            arr = np.asarray(attrs.pop(name), dtype=np.int64 if moved.kind in ("ints", "int") else np.float64)
            label = name if name not in taken else f"{name}_arg"
            while len(inputs) <= moved.position:
                inputs.append((f"absent{len(inputs)}", None))
            inputs[moved.position] = (label, arr)
            constant.append(label)
    while inputs and inputs[-1][1] is None:
        inputs.pop()
    return dataclasses.replace(case, id=f"{case.id}@opset{opset}", inputs=inputs, attrs=attrs,
                               constant=tuple(constant), opset=opset)


def runnable_dtype(case: Case) -> Optional[str]:
    """The dtype to check ``case`` in: float64 where onnxruntime has the kernel, else float32;
    None when the case is not a valid model onnxruntime loads (at its opset)."""
    for dtype in ("float64", "float32"):
        if dtype not in case.dtypes:
            continue
        try:
            model, feeds, _, _ = build(case, dtype)
            onnx.checker.check_model(model, full_check=True)
            results = session(model).run(None, feeds)
        except Exception:  # any refusal means the op cannot be written this way at this opset
            continue
        # the declared output shapes (onnx's inference at this opset) must be what the op computes:
        # an argument valid at one opset only (a negative axis before 11) breaks that silently
        declared = [tuple(d.dim_value for d in o.type.tensor_type.shape.dim) for o in model.graph.output]
        if all(np.shape(r) == d for r, d in zip(results, declared)):
            return dtype
    return None


def emitted_ops(case: Case) -> Set[str]:
    """The op types the gradient of ``case`` emits (at the case's own opset)."""
    model, _, xs, ys = build(case, "float64")
    grad = gradients(model, ys, xs).model
    return {n.op_type for n in grad.graph.node[len(model.graph.node):]}


#: Why an opset matters: an op-table adapter switches there (a kernel or signature the emitter
#: hides), or only onnx's signature of an op changes (the first opset of the op counts here too).
ADAPTER, SIGNATURE = "adapter", "signature"


def candidate_opsets(op_type: str, emitted: Set[str]) -> Dict[int, str]:
    """The opsets that matter for the gradient of ``op_type`` emitting ``emitted`` (see above),
    each with why (:data:`ADAPTER` wins over :data:`SIGNATURE`)."""
    live = coverage.live_range(op_type)
    if live is None:
        return {}
    lo, hi = live
    points = {lo: SIGNATURE}
    switches = adapter_opsets()
    for e in sorted(emitted | {op_type}):
        for v in coverage.signature_changes(e):
            points.setdefault(v - 1, SIGNATURE)
            points.setdefault(v, SIGNATURE)
        for v in switches.get(e, []):
            points[v - 1] = points[v] = ADAPTER
    return {p: why for p, why in sorted(points.items()) if lo <= p <= hi}


Point = Tuple[str, int, str, str, str]  # op type, opset, case id, dtype, why


def refusal(case: Case, dtype: str) -> str:
    """The message when the gradient of ``case`` needs an opset newer than its own ('' if not)."""
    model, _, xs, ys = build(case, dtype)
    try:
        gradients(model, ys, xs)
    except GradientArgumentError as e:
        if "opset" in str(e):
            return str(e)
        raise
    return ""


def generate() -> Tuple[List[Point], List[Point], List[Tuple[str, int]]]:
    """(points, refused, gaps): each (op type, opset, case id, dtype, why) to check numerically; those
    whose gradient needs a newer opset (a clear error is expected there); each (op type, opset) that
    matters but that no case of the tables can be written at (an op not defined or not run there)."""
    points: List[Point] = []
    refused: List[Point] = []
    gaps: List[Tuple[str, int]] = []
    for op_type, cases in sorted(table_cases().items()):
        emitted: Set[str] = set()
        for case in cases:
            try:
                emitted |= emitted_ops(case)
            except Exception:  # cases the tables expect to fail (error messages) emit nothing
                continue
        native = {c.opset for c in cases}
        for opset, why in candidate_opsets(op_type, emitted).items():
            if opset in native:
                continue  # the tables already run the op there
            for case in cases:
                dtype = runnable_dtype(at_opset(case, opset))
                if dtype is not None:
                    point = (op_type, opset, case.id, dtype, why)
                    (refused if refusal(at_opset(case, opset), dtype) else points).append(point)
                    break
            else:
                gaps.append((op_type, opset))
    return points, refused, gaps


def find(case_id: str) -> Case:
    """The table case with id ``case_id``."""
    for cases in table_cases().values():
        for case in cases:
            if case.id == case_id:
                return case
    raise KeyError(case_id)
