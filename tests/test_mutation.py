"""Mutation testing in CI: a rotating sample of rules; every mutant killed or explained in docs/mutation.md.

``tools/mutate.py`` builds mutants of a rule (x1.05 on a gradient, sign flip, swapped gradients,
swapped operands of an emitted node, an attribute ignored) and runs them against that op's rule
cases. The sample changes every day (its key is the date, or ``ONNXGRAD_MUTATION_KEY``), so the
whole registry is covered over time; ``docs/mutation.md`` holds the last full run.
"""

import os
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))

import mutate  # noqa: E402

#: rules per run: a few minutes on two cores
SAMPLE = 4


@pytest.mark.slow
def test_rotating_mutation_sample() -> None:
    key = os.environ.get("ONNXGRAD_MUTATION_KEY", time.strftime("%Y-%m-%d"))
    assert mutate.main(["--sample", str(SAMPLE), "--rotate", key]) == 0, f"a mutant survived (key {key})"
