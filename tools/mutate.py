"""Mutation testing of onnxgrad's gradient rules against their own rule tests.

For every registered rule (one registry entry: op type and opset range) the tool builds mutants,
plausible bugs a rule could have, and runs that op's rule cases (every ``Case`` of the
``tests/test_rules_*.py`` tables whose op and opset the entry covers) through the judge
(``rulecheck.check_case``). A mutant is *killed* when a case fails; a *survivor* is a bug the
tests cannot see, to be killed by a new case or explained in ``docs/mutation.md``.

Mutants of a rule (each wraps the registered function; nothing is edited on disk):

* ``scale[i]``: gradient i multiplied by 1.05 (the subtle bug);
* ``sign[i]``: gradient i negated;
* ``swap-grads``: the gradients of inputs 0 and 1 exchanged;
* ``swap-operands[k]``: the k-th non-commutative binary node the rule emits (Sub, Div, MatMul,
  Pow, ...) gets its two operands swapped (a transposed or reversed formula);
* ``ignore-attr[name]``: the rule reads attribute ``name`` as if the node did not set it.

Gradient indices, emitted nodes and attributes are those the rule used in a first, unmutated run
of its cases (which must pass: otherwise the entry is reported as ``baseline failing``).

Usage::

    python tools/mutate.py                         # every rule (long: see docs/mutation.md)
    python tools/mutate.py --ops Relu,Conv         # some ops
    python tools/mutate.py --sample 4 --rotate 2026-12-01   # CI: 4 rules chosen by the key
    python tools/mutate.py --report docs/mutation.md        # write the Markdown report

Exit status: 0 when every mutant was killed, 1 when one survived or a baseline failed.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "tests")]

import onnx  # noqa: E402

from onnxgrad import registry  # noqa: E402
from onnxgrad.emitter import Op  # noqa: E402

#: Binary ops whose operand order matters (swapping them is a plausible transposition bug).
NON_COMMUTATIVE = {"Sub", "Div", "MatMul", "Pow", "Gemm", "Greater", "Less", "GreaterOrEqual", "LessOrEqual",
                   "Conv", "ConvTranspose", "Mod", "BitShift", "Expand", "Reshape"}
MAX_SWAPS = 3  # operand swaps per rule: the first emitted nodes hold the formula's core
MAX_GRADS = 3  # scale/sign mutants per rule: the first differentiable inputs

RuleFn = Callable[..., Sequence[Optional[str]]]


@dataclass
class Mutant:
    """One mutant: a name and a wrapper turning the rule into the bug."""

    name: str
    wrap: Callable[[RuleFn], RuleFn]


@dataclass
class RuleResult:
    """Killed and surviving mutants of one registry entry."""

    label: str
    cases: int
    killed: List[str] = field(default_factory=list)
    survivors: List[str] = field(default_factory=list)
    baseline: str = ""  # why the unmutated rule already fails its cases ("" when it passes)
    seconds: float = 0.0


# ------------------------------------------------------------------------------------ cases
def rule_cases() -> List[Any]:
    """Every ``Case`` in the module-level tables of ``tests/test_rules_*.py``."""
    from rulecheck import Case

    cases: Dict[str, Any] = {}
    for fname in sorted(os.listdir(os.path.join(ROOT, "tests"))):
        if not (fname.startswith("test_rules_") and fname.endswith(".py")):
            continue
        module = importlib.import_module(fname[:-3])
        for value in vars(module).values():
            if isinstance(value, list):
                for item in value:
                    if isinstance(item, Case):
                        cases.setdefault(f"{fname}:{item.id}", item)
    return list(cases.values())


def _entry_cases(entry: registry.GradientRule, cases: Sequence[Any]) -> List[Any]:
    return [c for c in cases if c.op_type == entry.op_type and registry.lookup(c.op_type, "", c.opset) is entry]


def _waive_deprecation(model: Any, *args: Any, **kwargs: Any) -> None:
    """onnx's checker, minus its complaint about deprecated ops (GroupNormalization-18 still runs
    everywhere; ``tests/test_rules_normalization.py`` waives it the same way)."""
    try:
        _STRICT_CHECK(model, *args, **kwargs)
    except onnx.checker.ValidationError as e:
        if "deprecated" not in str(e):
            raise


_STRICT_CHECK = onnx.checker.check_model


def _run(cases: Sequence[Any]) -> Optional[str]:
    """None when every case passes, else the first failure (case id and message)."""
    from rulecheck import check_case

    onnx.checker.check_model = _waive_deprecation
    for case in cases:
        for dtype in sorted(case.dtypes, key=lambda d: d != "float64"):  # float64 first: fastest kill
            try:
                check_case(case, dtype)
            except Exception as e:  # noqa: BLE001  (any failure of the judge kills the mutant)
                return f"{case.id}-{dtype}: {type(e).__name__}: {' '.join(str(e).split())[:200]}"
    return None


# ------------------------------------------------------------------------------------ mutants
class _Recorder:
    """What an unmutated run used: gradient slots, non-commutative emissions, attributes read."""

    def __init__(self) -> None:
        self.grads: "set[int]" = set()
        self.swaps = 0
        self.attrs: "set[str]" = set()


class _SwappingEmitter:
    """The rule's emitter, with the operands of its k-th non-commutative node swapped (k < 0:
    count only)."""

    def __init__(self, g: Any, k: int, recorder: Optional[_Recorder] = None) -> None:
        self._g, self._k, self._n, self._rec = g, k, 0, recorder

    def op(self, op_type: str, *inputs: Optional[str], **attrs: Any) -> Any:
        if op_type in NON_COMMUTATIVE and len(inputs) >= 2:
            if self._n == self._k:
                inputs = (inputs[1], inputs[0], *inputs[2:])
            self._n += 1
            if self._rec is not None:
                self._rec.swaps = max(self._rec.swaps, self._n)
        return self._g.op(op_type, *inputs, **attrs)

    def __getattr__(self, name: str) -> Any:
        if name[:1].isupper():
            return lambda *inputs, **attrs: self.op(name, *inputs, **attrs)
        return getattr(self._g, name)


class _HidingOp(Op):
    """The forward node as the rule sees it, with one attribute unset (or recording reads)."""

    def __init__(self, op: Op, hidden: Optional[str], recorder: Optional[_Recorder] = None) -> None:
        self.__dict__.update(op.__dict__)
        self._attributes = {k: v for k, v in op._attrs.items() if k != hidden}
        self._rec = recorder

    def attr(self, name: str, default: Any = None) -> Any:
        if self._rec is not None and name in self._attrs:
            self._rec.attrs.add(name)
        return super().attr(name, default)

    def has_attr(self, name: str) -> bool:
        if self._rec is not None and name in self._attrs:
            self._rec.attrs.add(name)
        return super().has_attr(name)


def _recording(fn: RuleFn, rec: _Recorder) -> RuleFn:
    def rule(g: Any, op: Op, *dys: Optional[str]) -> List[Optional[str]]:
        grads = list(fn(_SwappingEmitter(g, -1, rec), _HidingOp(op, None, rec), *dys))
        rec.grads.update(i for i, r in enumerate(grads) if r is not None)
        return grads

    return rule


def _on_grad(i: int, change: Callable[[Any, str], str]) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        def rule(g: Any, op: Op, *dys: Optional[str]) -> List[Optional[str]]:
            grads = list(fn(g, op, *dys))
            grad = grads[i] if i < len(grads) else None
            if grad is not None:
                grads[i] = change(g, grad)
            return grads

        return rule

    return wrap


def _swap_grads(fn: RuleFn) -> RuleFn:
    def rule(g: Any, op: Op, *dys: Optional[str]) -> List[Optional[str]]:
        grads = list(fn(g, op, *dys))
        grads[0], grads[1] = grads[1], grads[0]
        return grads

    return rule


def _swap_operands(k: int) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        def rule(g: Any, op: Op, *dys: Optional[str]) -> Sequence[Optional[str]]:
            return fn(_SwappingEmitter(g, k), op, *dys)

        return rule

    return wrap


def _ignore_attr(name: str) -> Callable[[RuleFn], RuleFn]:
    def wrap(fn: RuleFn) -> RuleFn:
        def rule(g: Any, op: Op, *dys: Optional[str]) -> Sequence[Optional[str]]:
            return fn(g, _HidingOp(op, name), *dys)

        return rule

    return wrap


def mutants(rec: _Recorder) -> List[Mutant]:
    """The mutants of a rule, from what its unmutated run used."""
    grads = sorted(rec.grads)[:MAX_GRADS]
    out = [Mutant(f"scale[{i}]", _on_grad(i, lambda g, t: g.Mul(t, g.const(1.05, like=t)))) for i in grads]
    out += [Mutant(f"sign[{i}]", _on_grad(i, lambda g, t: g.Neg(t))) for i in grads]
    if len(rec.grads) >= 2 and {0, 1} <= rec.grads:
        out.append(Mutant("swap-grads", _swap_grads))
    out += [Mutant(f"swap-operands[{k}]", _swap_operands(k)) for k in range(min(rec.swaps, MAX_SWAPS))]
    out += [Mutant(f"ignore-attr[{a}]", _ignore_attr(a)) for a in sorted(rec.attrs)]
    return out


# ------------------------------------------------------------------------------------ driver
def _label(entry: registry.GradientRule) -> str:
    until = f"-{entry.until}" if entry.until is not None else "+"
    return f"{entry.op_type} (opset {entry.since}{until})"


@contextmanager
def _swapped_in(entry: registry.GradientRule, fn: RuleFn) -> Iterator[None]:
    original = entry.fn
    object.__setattr__(entry, "fn", fn)  # entries are frozen: the tool swaps the rule in place
    try:
        yield
    finally:
        object.__setattr__(entry, "fn", original)


def mutate_entry(entry: registry.GradientRule, cases: Sequence[Any]) -> RuleResult:
    """Run every mutant of ``entry`` (a rule: its ``fn`` is set) against its cases."""
    assert entry.fn is not None
    fn: RuleFn = entry.fn
    start = time.perf_counter()
    own = _entry_cases(entry, cases)
    result = RuleResult(_label(entry), len(own))
    if not own:
        result.baseline = "no rule case"
        return result
    rec = _Recorder()
    with _swapped_in(entry, _recording(fn, rec)):
        failure = _run(own)
    if failure:
        result.baseline = failure
        return result
    for m in mutants(rec):
        (result.killed if _killed(entry, m.wrap(fn), own) else result.survivors).append(m.name)
    result.seconds = time.perf_counter() - start
    return result


def _killed(entry: registry.GradientRule, mutant: RuleFn, cases: Sequence[Any]) -> bool:
    """Whether ``cases`` catch the mutant. It runs in a forked child where the OS allows: a mutant
    can make onnxruntime abort the process (an assertion on a shape the bug produced), which
    counts as caught."""
    if not hasattr(os, "fork"):
        with _swapped_in(entry, mutant):
            return _run(cases) is not None
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:  # the child: exit status 1 = killed, 0 = survived
        try:
            with _swapped_in(entry, mutant):
                caught = _run(cases) is not None
        finally:
            sys.stdout.flush()
        os._exit(1 if caught else 0)
    _, status = os.waitpid(pid, 0)
    return not (os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0)


def select(entries: List[registry.GradientRule], ops: Optional[List[str]], sample: int,
           rotate: str) -> List[registry.GradientRule]:
    """The entries to mutate: named ops, or a sample rotating with ``rotate`` (a date in CI)."""
    if ops:
        return [e for e in entries if e.op_type in ops]
    if sample:
        ranked = sorted(entries, key=lambda e: hashlib.sha256(f"{rotate}/{_label(e)}".encode()).hexdigest())
        return ranked[:sample]
    return entries


def report(results: Sequence[RuleResult], seconds: float) -> str:
    """The Markdown report: score, then one row per rule, survivors named."""
    total = sum(len(r.killed) + len(r.survivors) for r in results)
    killed = sum(len(r.killed) for r in results)
    lines = [f"Mutants: {total}, killed: {killed}, survived: {total - killed}, mutation score "
             f"{100.0 * killed / max(total, 1):.1f}% ({len(results)} rules, {seconds:.0f} s)", "",
             "| rule | cases | mutants | killed | survivors / note |", "|---|---|---|---|---|"]
    for r in results:
        note = r.baseline and f"not run: {r.baseline}" or ", ".join(r.survivors)
        lines.append(f"| {r.label} | {r.cases} | {len(r.killed) + len(r.survivors)} | {len(r.killed)} | {note} |")
    return "\n".join(lines) + "\n"


def explained_survivors(path: str) -> Dict[str, set]:
    """Per rule label, the survivors the last full report (``docs/mutation.md``) names and explains
    as equivalent mutants: a rotating sample fails only on a survivor not listed there."""
    found: Dict[str, set] = {}
    if not os.path.exists(path):
        return found
    with open(path, encoding="utf-8") as f:
        for line in f:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) == 5 and cells[3].isdigit() and not cells[4].startswith("not run"):
                found[cells[0]] = {s.strip() for s in cells[4].split(", ") if s.strip()}
    return found


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ops", default="", help="comma-separated op types (default: every rule)")
    parser.add_argument("--sample", type=int, default=0, help="mutate this many rules, chosen by --rotate")
    parser.add_argument("--rotate", default=time.strftime("%Y-%m-%d"), help="key of the rotating sample")
    parser.add_argument("--report", default="", help="write the Markdown report to this file")
    parser.add_argument("--start", default="", help="skip the rules whose op type sorts before this one")
    args = parser.parse_args(argv)
    import onnxgrad.rules  # noqa: F401  (registers every rule)

    entries = [e for e in registry.entries() if e.status == registry.RULE and e.domain in ("", "ai.onnx")]
    chosen = [e for e in select(entries, [o for o in args.ops.split(",") if o], args.sample, args.rotate)
              if e.op_type >= args.start]
    cases = rule_cases()
    start = time.perf_counter()
    results = []
    for entry in chosen:
        r = mutate_entry(entry, cases)
        results.append(r)
        status = f"not run: {r.baseline}" if r.baseline else \
            f"{len(r.killed)}/{len(r.killed) + len(r.survivors)} killed" + \
            (f", survivors: {', '.join(r.survivors)}" if r.survivors else "")
        print(f"{r.label}: {status} ({r.seconds:.1f} s)", flush=True)
        if args.report:  # rewritten after every rule: an interrupted run keeps what it measured
            with open(args.report, "w", encoding="utf-8") as f:
                f.write(report(results, time.perf_counter() - start))
    print(report(results, time.perf_counter() - start).splitlines()[0])
    explained = explained_survivors(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                                 "docs", "mutation.md"))
    failed = any(set(r.survivors) - explained.get(r.label, set()) or (r.baseline and r.baseline != "no rule case")
                 for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
