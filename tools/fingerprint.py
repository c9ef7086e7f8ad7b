"""Print a SHA-256 of each gradient model onnxgrad builds for the shipped examples and the light zoo.

Run from the repository root: ``PYTHONPATH=$PWD python tools/fingerprint.py [OUT.txt]``. A
refactoring that keeps behaviour keeps every line; compare two runs with ``diff``. Each example of
``models/`` is differentiated up to three times (``@params``: every float initializer,
``@inputs``: every float graph input; then every Constant output) with respect to every float
graph output; each light-zoo model with respect to its weights (``tests/zoo.py``); each case of
the rule tables (``tests/test_rules_*.py``) as its test builds it.
"""

from __future__ import annotations

import glob
import hashlib
import os
import sys
from typing import Any, Iterator, List, Tuple

import onnx

import onnxgrad
from onnxgrad.graph import FLOAT_TYPES

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _float_outputs(model: onnx.ModelProto) -> List[str]:
    return [o.name for o in model.graph.output if o.type.tensor_type.elem_type in FLOAT_TYPES]


def _cases() -> Iterator[Tuple[str, onnx.ModelProto, List[str], List[str]]]:
    """(label, model, ys, xs) for every fingerprinted gradient model."""
    paths = sorted(glob.glob(os.path.join(HERE, "models", "*.onnx")))
    paths += sorted(glob.glob(os.path.join(HERE, "tests", "data", "torch", "*.onnx")))
    for path in paths:
        if path.endswith(".grad.onnx"):
            continue
        model = onnx.load(path)
        label = os.path.relpath(path, HERE)
        params = [t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES]
        inputs = [i.name for i in model.graph.input
                  if i.type.tensor_type.elem_type in FLOAT_TYPES and i.name not in params]
        # the tf.gradients documentation examples hold their variables in Constant nodes
        constants = [o for n in model.graph.node if n.op_type == "Constant" for o in n.output]
        for what, xs in (("@params", params), ("@inputs", inputs), ("@constants", constants)):
            if xs:
                yield f"{label} {what}", model, _float_outputs(model), xs
    sys.path.insert(0, os.path.join(HERE, "tests"))
    import zoo

    for name in zoo.MODELS:
        model, _, trainable = zoo.load(name)
        yield f"zoo:{name}", model, _float_outputs(model), trainable
    yield from _rule_cases()


def _rule_cases() -> Iterator[Tuple[str, onnx.ModelProto, List[str], List[str]]]:
    """Every Case of the rule tables (``tests/test_rules_*.py``), built in float32."""
    import importlib

    import rulecheck

    for path in sorted(glob.glob(os.path.join(HERE, "tests", "test_rules_*.py"))):
        module = importlib.import_module(os.path.basename(path)[:-3])
        seen = set()
        for value in vars(module).values():
            if not isinstance(value, list):
                continue
            for case in value:
                if isinstance(case, rulecheck.Case) and case.id not in seen:
                    seen.add(case.id)
                    dtype = "float32" if "float32" in case.dtypes else case.dtypes[0]
                    model, _, xs, ys = _build(rulecheck, case, dtype)
                    yield f"rule:{module.__name__}:{case.id}", model, ys, xs


def _build(rulecheck: Any, case: Any, dtype: str) -> tuple:
    """``rulecheck.build``, with onnx.reference completing the output shapes of a forward node
    onnxruntime refuses (GRU without ``hidden_size``), as that case's own test does."""
    from onnx.reference import ReferenceEvaluator
    from onnxruntime.capi.onnxruntime_pybind11_state import Fail

    try:
        return rulecheck.build(case, dtype)
    except Fail:
        saved, rulecheck.session = rulecheck.session, ReferenceEvaluator
        try:
            return rulecheck.build(case, dtype)
        finally:
            rulecheck.session = saved


def main(argv: List[str]) -> int:
    """Print one ``label sha256`` line per case (also to ``argv[0]`` when given)."""
    lines = []
    for label, model, ys, xs in _cases():
        try:
            grad = onnxgrad.gradients(model, ys, xs).model
            digest = hashlib.sha256(grad.SerializeToString(deterministic=True)).hexdigest()
        except onnxgrad.OnnxGradError as e:
            digest = f"error {type(e).__name__}: {e}"
        line = f"{label} {digest}"
        print(line, flush=True)
        lines.append(line)
    if argv:
        with open(argv[0], "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
