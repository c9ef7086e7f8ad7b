"""The coverage table: every operator of the default ONNX domain joined with the gradient registry.

One row per op type, built from ``onnx.defs.get_all_schemas_with_history()`` for opsets
``MIN_OPSET`` to the newest the installed onnx knows: its opset range, its differentiable inputs,
the registry's decision (rule / non-differentiable / unsupported, or MISSING when nothing is
recorded for some opset in the range) and the reason. ``onnxgrad ops`` prints :func:`render`;
``python -m onnxgrad.coverage`` rewrites ``docs/operators.md``.
"""

from __future__ import annotations

import functools
import os
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import onnx
import onnx.defs

from . import registry
from . import rules as _rules  # noqa: F401  (registers the built-in rules)
from .graph import MIN_OPSET

MISSING = "MISSING"
STATUSES = (registry.RULE, registry.NON_DIFFERENTIABLE, registry.UNSUPPORTED, MISSING)
DOC_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "operators.md")

_FLOAT_TYPE_NAMES = {f"tensor({t})" for t in ("float16", "bfloat16", "float", "double")}
_NON_DIFF = onnx.defs.OpSchema.DifferentiationCategory.NonDifferentiable


@dataclass(frozen=True)
class Row:
    op_type: str
    opsets: str
    inputs: str
    status: str
    reason: str


@functools.lru_cache(maxsize=1)
def _default_domain_schemas() -> Dict[str, List[onnx.defs.OpSchema]]:
    """Every schema version of each default-domain op, oldest first."""
    found: Dict[str, List[onnx.defs.OpSchema]] = {}
    for s in onnx.defs.get_all_schemas_with_history():
        if s.domain in ("", "ai.onnx"):
            found.setdefault(s.name, []).append(s)
    for versions in found.values():
        versions.sort(key=lambda s: s.since_version)
    return found


def _live_range(versions: Sequence[onnx.defs.OpSchema], newest: int) -> Optional[Tuple[int, int]]:
    """Opsets in [MIN_OPSET, newest] where the op exists (a deprecated version ends its life)."""
    start = versions[0].since_version
    end = newest
    for s in versions:
        if s.deprecated:
            end = s.since_version - 1
            break
    lo = max(start, MIN_OPSET)
    return (lo, end) if lo <= end else None


def _float_inputs(schema: onnx.defs.OpSchema) -> List[str]:
    """Inputs that may hold floats and that the schema does not tag non-differentiable."""
    allowed = {c.type_param_str: set(c.allowed_type_strs) for c in schema.type_constraints}
    names = []
    for inp in schema.inputs:
        types = allowed.get(inp.type_str, {inp.type_str})
        floaty = any(any(f in t for f in _FLOAT_TYPE_NAMES) for t in types)
        if floaty and inp.differentiation_category != _NON_DIFF:
            names.append(inp.name)
    return names


def _status_for(op_type: str, lo: int, hi: int) -> Tuple[str, str, List[registry.GradientRule]]:
    """(status, reason, entries) of ``op_type`` over opsets lo..hi."""
    used: List[registry.GradientRule] = []
    gaps: List[int] = []
    for opset in range(lo, hi + 1):
        e = registry.lookup(op_type, "", opset)
        if e is None:
            gaps.append(opset)
        elif e not in used:
            used.append(e)
    if gaps:
        return MISSING, f"nothing recorded for opsets {_span(gaps)}", used
    statuses = []
    for e in used:
        if e.status not in statuses:
            statuses.append(e.status)
    reasons = []
    for e in used:
        if e.reason and e.reason not in reasons:
            reasons.append(e.reason if len(used) == 1 else f"{e.opset_range}: {e.reason}")
    return " + ".join(statuses), "; ".join(reasons), used


def _span(opsets: List[int]) -> str:
    parts, start, prev = [], opsets[0], opsets[0]
    ends: List[Optional[int]] = [*opsets[1:], None]
    for o in ends:
        if o is not None and o == prev + 1:
            prev = o
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if o is not None:
            start = prev = o
    return ", ".join(parts)


def live_range(op_type: str) -> Optional[Tuple[int, int]]:
    """The opsets in [MIN_OPSET, newest] where the default-domain op ``op_type`` exists."""
    versions_ = _default_domain_schemas().get(op_type)
    return _live_range(versions_, onnx.defs.onnx_opset_version()) if versions_ else None


def versions(op_type: str) -> List[int]:
    """The opsets at which the default-domain op ``op_type`` got a new schema version."""
    return [s.since_version for s in _default_domain_schemas().get(op_type, [])]


def signature_changes(op_type: str) -> List[int]:
    """The opsets at which ``op_type``'s inputs, outputs or attributes change (not its type lists)."""
    changes: List[int] = []
    previous = None
    for s in _default_domain_schemas().get(op_type, []):
        signature = (tuple((i.name, i.option) for i in s.inputs), tuple(sorted(s.attributes)),
                     tuple((o.name, o.option) for o in s.outputs))
        if previous is not None and signature != previous:
            changes.append(s.since_version)
        previous = signature
    return changes


def rows() -> List[Row]:
    """One row per default-domain op type alive in opsets MIN_OPSET..newest, sorted by name."""
    newest = onnx.defs.onnx_opset_version()
    out = []
    for op_type, versions in sorted(_default_domain_schemas().items()):
        live = _live_range(versions, newest)
        if live is None:
            continue
        lo, hi = live
        status, reason, used = _status_for(op_type, lo, hi)
        latest = [s for s in versions if s.since_version <= hi][-1]
        if status == registry.RULE and len(used) == 1 and used[0].inputs is not None:
            diff = [latest.inputs[i].name for i in used[0].inputs if i < len(latest.inputs)]
        elif registry.RULE in status:
            diff = _float_inputs(latest)
        else:
            diff = []
        opsets = f"{lo}+" if hi == newest else (str(lo) if lo == hi else f"{lo}-{hi}")
        out.append(Row(op_type, opsets, ", ".join(diff) or "-", status, reason))
    return out


def counts(table: Sequence[Row]) -> Dict[str, int]:
    """How many rows have each status (a mixed status counts under its first part)."""
    result = {s: 0 for s in STATUSES}
    for r in table:
        result[r.status.split(" + ")[0]] += 1
    return result


def render(markdown: bool = False) -> str:
    """The coverage table: plain columns for a terminal, or the whole ``docs/operators.md``."""
    table = rows()
    n = counts(table)
    summary = (f"{len(table)} operators: {n[registry.RULE]} with a gradient rule, "
               f"{n[registry.NON_DIFFERENTIABLE]} non-differentiable, {n[registry.UNSUPPORTED]} unsupported, "
               f"{n[MISSING]} missing")
    header = ("op type", "opsets", "differentiable inputs", "status", "reason")
    cells = [header] + [(r.op_type, r.opsets, r.inputs, r.status, r.reason) for r in table]
    if not markdown:
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = ["  ".join(c[i].ljust(widths[i]) for i in range(4)) + "  " + c[4] for c in cells]
        return "\n".join(lines + ["", summary])
    esc = lambda s: s.replace("|", "\\|")  # noqa: E731
    lines = [
        "# Operator coverage",
        "",
        "Generated by `python -m onnxgrad.coverage` (or `onnxgrad ops --markdown docs/operators.md`); "
        "do not edit by hand. `tests/test_coverage.py` fails when this file and the registry disagree.",
        "",
        f"Every operator of the default ONNX domain known to onnx {onnx.__version__} for opsets "
        f"{MIN_OPSET} to {onnx.defs.onnx_opset_version()}, with the gradient registry's decision:",
        "",
        "- **rule**: a gradient rule; *differentiable inputs* lists the inputs it differentiates.",
        "- **non-differentiable**: gradients stop here silently (integer, boolean or string results, "
        "piecewise-constant or random outputs), like TensorFlow's `no_gradient`.",
        "- **unsupported**: differentiable in principle but no rule yet; reaching it raises `LookupError` "
        "with the reason.",
        "",
        f"Summary: {summary}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in cells[1:]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] = ()) -> int:
    """Write ``docs/operators.md`` (or the path given) from the registry."""
    path = argv[0] if argv else DOC_PATH
    with open(path, "w", encoding="utf-8") as f:
        f.write(render(markdown=True))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
