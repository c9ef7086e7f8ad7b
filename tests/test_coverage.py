"""Every default-domain operator has a recorded decision, and docs/operators.md shows the registry."""

import os

from onnxgrad import coverage, registry

REGENERATE = "regenerate it with `python -m onnxgrad.coverage` (or `onnxgrad ops --markdown docs/operators.md`)"


def test_every_default_domain_op_has_a_decision():
    missing = [f"{r.op_type} ({r.opsets}): {r.reason}" for r in coverage.rows() if r.status == coverage.MISSING]
    assert not missing, "operators without a gradient decision:\n" + "\n".join(missing)


def test_table_lists_each_live_op_once():
    table = coverage.rows()
    names = [r.op_type for r in table]
    assert len(names) == len(set(names))
    assert {"Add", "Det", "CumProd", "If", "Shape"} <= set(names)
    assert sum(coverage.counts(table).values()) == len(table)
    # ops removed before the newest opset end there (Scatter became ScatterElements at 11)
    assert {r.op_type: r.opsets for r in table}["Scatter"] == "9-10"


def test_unsupported_and_non_differentiable_rows_give_a_reason():
    for r in coverage.rows():
        if r.status in (registry.NON_DIFFERENTIABLE, registry.UNSUPPORTED):
            assert r.reason, f"{r.op_type} is {r.status} without a reason"


def test_docs_match_the_registry():
    with open(coverage.DOC_PATH, encoding="utf-8") as f:
        on_disk = f.read()
    fresh = coverage.render(markdown=True)
    assert on_disk == fresh, f"{os.path.relpath(coverage.DOC_PATH)} is out of date with the registry; {REGENERATE}"


def test_plain_render_has_one_line_per_op():
    text = coverage.render(markdown=False)
    assert len(text.splitlines()) == len(coverage.rows()) + 3  # header, blank line, summary


def test_rules_package_imports_every_family():
    """A family module missing from rules/__init__.py would register nothing, silently."""
    import pkgutil
    import sys

    import onnxgrad.rules

    modules = {m.name for m in pkgutil.iter_modules(onnxgrad.rules.__path__)}
    missing = [m for m in sorted(modules) if f"onnxgrad.rules.{m}" not in sys.modules]
    assert not missing, f"add {missing} to the imports of onnxgrad/rules/__init__.py"
