"""Numeric tests of If, Loop and Scan (onnxgrad/rules/controlflow.py, onnxgrad/subgraph.py).

Subgraphs are typed, so every case is built once per dtype. Values the subgraphs read from the
enclosing scope are graph inputs of the test model (``Case.scope``) and get gradients too.
"""

import inspect
import sys
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
import onnx.reference
import pytest
from onnx import GraphProto, TensorProto, helper, numpy_helper
from rulecheck import Case, check_case, check_second_order, compare_with_reference, feeds_for, rand

import onnxgrad
from onnxgrad.checking import check_gradients

DT = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}
I64, BOOL = TensorProto.INT64, TensorProto.BOOL


def node(op: str, ins: Sequence[str], outs: Sequence[str], **attrs: Any):
    return helper.make_node(op, list(ins), list(outs), **attrs)


def graph(name: str, nodes: list, inputs: list, outputs: list) -> GraphProto:
    """A subgraph; ``inputs``/``outputs`` are (name, elem_type, shape) triples."""
    return helper.make_graph(nodes, name, [helper.make_tensor_value_info(*i) for i in inputs],
                             [helper.make_tensor_value_info(*o) for o in outputs])


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


# ---------------------------------------------------------------- If
def if_cases(d: str) -> List[Case]:
    t = DT[d]
    then = graph("then", [node("Mul", ["x", "w"], ["t0"]), node("Sin", ["t0"], ["t1"])], [], [("t1", t, [2, 3])])
    other = graph("else", [node("Exp", ["x"], ["e0"]), node("Add", ["e0", "b"], ["e1"])], [], [("e1", t, [2, 3])])
    two_then = graph("then2", [node("Mul", ["x", "x"], ["p"]), node("Tanh", ["w"], ["q"])], [],
                     [("p", t, [2, 3]), ("q", t, [2, 3])])
    two_else = graph("else2", [node("Neg", ["w"], ["r"]), node("Cos", ["x"], ["s"])], [],
                     [("r", t, [2, 3]), ("s", t, [2, 3])])
    inner_then = graph("inner_then", [node("Mul", ["x", "t0"], ["u"])], [], [("u", t, [2, 3])])
    inner_else = graph("inner_else", [node("Sigmoid", ["w"], ["v"])], [], [("v", t, [2, 3])])
    nested = graph("nested", [node("Sin", ["w"], ["t0"]),
                              node("If", ["c2"], ["n0"], then_branch=inner_then, else_branch=inner_else),
                              node("Mul", ["n0", "b"], ["n1"])], [], [("n1", t, [2, 3])])
    scope = [("x", rand(2, 3)), ("w", rand(2, 3, seed=1)), ("b", rand(2, 3, seed=2))]
    cases = []
    for c in (True, False):
        cases.append(Case(f"If/{c}", "If", [("c", np.array(c))], {"then_branch": then, "else_branch": other},
                          opset=13, scope=scope, dtypes=(d,)))
        cases.append(Case(f"If/two-outputs-{c}", "If", [("c", np.array(c))],
                          {"then_branch": two_then, "else_branch": two_else}, opset=18, n_outputs=2,
                          scope=scope[:2], dtypes=(d,)))
        for c2 in (True, False):
            cases.append(Case(f"If/nested-{c}-{c2}", "If", [("c", np.array(c))],
                              {"then_branch": nested, "else_branch": other}, opset=16, dtypes=(d,),
                              scope=[*scope, ("c2", np.array(c2))]))
    cases.append(Case("If/one-output-used", "If", [("c", np.array(True))],
                      {"then_branch": two_then, "else_branch": two_else}, n_outputs=2, outputs_used=[1],
                      scope=scope[:2], dtypes=(d,)))
    return cases


# ---------------------------------------------------------------- Loop
def loop_cases(d: str) -> List[Case]:
    t = DT[d]
    common = [("i", I64, []), ("cin", BOOL, [])]
    # for-loop: v <- tanh(v * w + x), scan output sum(v * v, axis 1); w, x read from the enclosing scope
    body = graph("body", [node("Mul", ["v", "w"], ["a"]), node("Add", ["a", "x"], ["b"]), node("Tanh", ["b"], ["vo"]),
                          node("Mul", ["vo", "vo"], ["sq"]), node("ReduceSum", ["sq", "ax"], ["so"], keepdims=0),
                          node("Identity", ["cin"], ["co"])],
                 common + [("v", t, [2, 3])], [("co", BOOL, []), ("vo", t, [2, 3]), ("so", t, [2])])
    # while-loop (no trip count): runs while sum(v) < 6; v grows by exp(w) each step, times 1 + iter/4
    growth = graph("while", [node("Exp", ["w"], ["e"]), node("Cast", ["i"], ["fi"], to=t),
                             node("Mul", ["fi", "quarter"], ["q"]), node("Add", ["q", "one"], ["f"]),
                             node("Mul", ["e", "f"], ["step"]), node("Add", ["v", "step"], ["vo"]),
                             node("ReduceSum", ["vo"], ["tot"], keepdims=0), node("Less", ["tot", "limit"], ["co"])],
                   common + [("v", t, [3])], [("co", BOOL, []), ("vo", t, [3])])
    consts = [("quarter", np.array(0.25)), ("one", np.array(1.0)), ("limit", np.array(6.0))]
    # trip count 10 but the condition ends it after 3 iterations; an int counter is carried too
    early = graph("early", [node("Mul", ["v", "w"], ["vo"]), node("Add", ["k", "one_i"], ["ko"]),
                            node("Less", ["i", "two_i"], ["co"]), node("Sin", ["vo"], ["so"])],
                  common + [("v", t, [2]), ("k", I64, [1])], [("co", BOOL, []), ("vo", t, [2]), ("ko", I64, [1]),
                                                             ("so", t, [2])])
    # nested loop: the inner loop multiplies by w twice; the outer adds x
    inner = graph("inner", [node("Mul", ["u", "w"], ["uo"]), node("Identity", ["cj"], ["cjo"])],
                  [("j", I64, []), ("cj", BOOL, []), ("u", t, [2])], [("cjo", BOOL, []), ("uo", t, [2])])
    outer = graph("outer", [node("Loop", ["two_i", "cin", "v"], ["vi"], body=inner), node("Add", ["vi", "x"], ["vs"]),
                            node("Sin", ["vs"], ["vo"]), node("Identity", ["cin"], ["co"])],
                  common + [("v", t, [2])], [("co", BOOL, []), ("vo", t, [2])])
    # an If inside the loop body, on the parity of the iteration
    branchy = graph("branchy", [node("Mod", ["i", "two_i"], ["m"]), node("Equal", ["m", "zero_i"], ["even"]),
                                node("If", ["even"], ["vo"],
                                     then_branch=graph("even", [node("Mul", ["v", "w"], ["ev"])], [], [("ev", t, [2])]),
                                     else_branch=graph("odd", [node("Sin", ["v"], ["od"])], [], [("od", t, [2])])),
                                node("Identity", ["cin"], ["co"])],
                    common + [("v", t, [2])], [("co", BOOL, []), ("vo", t, [2])])
    # a carried value passed through unchanged (body output = body input), and the loop's own input
    # v0 read again inside the body (a gradient both as carried initial value and as an outer read)
    passthrough = graph("passthrough", [node("Mul", ["b", "a"], ["ba"]), node("Add", ["ba", "v0"], ["bo"]),
                                        node("Sin", ["bo"], ["so"]), node("Identity", ["cin"], ["co"])],
                        common + [("a", t, [2]), ("b", t, [2])], [("co", BOOL, []), ("a", t, [2]), ("bo", t, [2]),
                                                                 ("so", t, [2])])
    # a Scan inside the loop body: v <- v + cumulative sum over the rows of x * v
    scan_body = graph("scan_body", [node("Mul", ["xt", "vv"], ["p"]), node("Add", ["acc", "p"], ["acc_o"])],
                      [("acc", t, [2]), ("xt", t, [2])], [("acc_o", t, [2])])
    with_scan = graph("with_scan", [node("Identity", ["v"], ["vv"]),
                                    node("Scan", ["v", "x"], ["total"], body=scan_body, num_scan_inputs=1),
                                    node("Tanh", ["total"], ["vo"]),
                                    node("Identity", ["cin"], ["co"])],
                      common + [("v", t, [2])], [("co", BOOL, []), ("vo", t, [2])])
    # the carried value changes shape every iteration ([2, 3] -> [3, 2] -> ...), its size does not
    turning = graph("turning", [node("Sin", ["v"], ["s"]), node("Transpose", ["s"], ["st"]),
                                node("Mul", ["st", "st"], ["q"]), node("Add", ["st", "q"], ["vo"]),
                                node("Identity", ["cin"], ["co"])],
                    common + [("v", t, None)], [("co", BOOL, []), ("vo", t, None)])
    ints = [("one_i", i64(1).reshape(())), ("two_i", i64(2).reshape(())), ("zero_i", i64(0).reshape(()))]
    w2, x2, ax = ("w", rand(2, 3, seed=1) * 0.8), ("x", rand(2, 3, seed=2)), ("ax", i64(1))
    true = np.array(True)
    return [
        # onnx.reference runs no iteration when a Loop's condition input is omitted
        Case("Loop/for", "Loop", [("M", i64(3).reshape(())), ("cond", None), ("v0", rand(2, 3))], {"body": body},
             opset=13, n_outputs=2, constant=["M", "ax"], scope=[w2, x2, ax], dtypes=(d,), reference=False),
        Case("Loop/for-cond-input", "Loop", [("M", i64(4).reshape(())), ("cond", true), ("v0", rand(2, 3))],
             {"body": body}, opset=16, n_outputs=2, scope=[w2, x2, ax], constant=["ax"], dtypes=(d,)),
        # a dynamic trip count: M is a graph input
        Case("Loop/dynamic-trips", "Loop", [("M", i64(5).reshape(())), ("cond", true), ("v0", rand(2, 3))],
             {"body": body}, opset=13, n_outputs=2, scope=[w2, x2, ax], constant=["ax"], dtypes=(d,)),
        # onnx.reference cannot stack the scan outputs of zero iterations (np.vstack of nothing)
        Case("Loop/zero-trips", "Loop", [("M", i64(0).reshape(())), ("cond", true), ("v0", rand(2, 3))],
             {"body": body}, opset=13, n_outputs=2, outputs_used=[0], scope=[w2, x2, ax], constant=["ax"],
             dtypes=(d,), reference=False),
        Case("Loop/while", "Loop", [("M", None), ("cond", np.array(True)), ("v0", rand(3, seed=4))], {"body": growth},
             opset=13, scope=[("w", rand(3, seed=5, low=-0.5, high=0.2)), *consts], constant=[c for c, _ in consts],
             dtypes=(d,)),
        Case("Loop/early-exit", "Loop", [("M", i64(10).reshape(())), ("cond", true), ("v0", rand(2)),
                                         ("k0", i64(0))], {"body": early}, opset=13, n_outputs=3,
             scope=[("w", rand(2, seed=3)), *ints[:2]], constant=["one_i", "two_i"], dtypes=(d,)),
        Case("Loop/nested", "Loop", [("M", i64(3).reshape(())), ("cond", true), ("v0", rand(2))], {"body": outer},
             opset=13, scope=[("w", rand(2, seed=3)), ("x", rand(2, seed=6)), ints[1]], constant=["two_i"],
             dtypes=(d,)),
        Case("Loop/passthrough-and-input-read", "Loop", [("M", i64(3).reshape(())), ("cond", true), ("v0", rand(2)),
                                                         ("b0", rand(2, seed=1))], {"body": passthrough}, opset=13,
             n_outputs=3, dtypes=(d,)),
        Case("Loop/scan-inside", "Loop", [("M", i64(2).reshape(())), ("cond", true), ("v0", rand(2))],
             {"body": with_scan}, opset=16, scope=[("x", rand(3, 2, seed=7))], dtypes=(d,)),
        Case("Loop/shape-changing", "Loop", [("M", i64(3).reshape(())), ("cond", true), ("v0", rand(2, 3))],
             {"body": turning}, opset=13, dtypes=(d,)),
        Case("Loop/if-inside", "Loop", [("M", i64(4).reshape(())), ("cond", true), ("v0", rand(2))], {"body": branchy},
             opset=13, scope=[("w", rand(2, seed=3)), ints[1], ints[2]], constant=["two_i", "zero_i"], dtypes=(d,)),
    ]


# ---------------------------------------------------------------- Scan
def scan_cases(d: str) -> List[Case]:
    t = DT[d]
    # s <- s * w + x_t ; y_t = sin(s)
    rnn = graph("rnn", [node("Mul", ["s", "w"], ["a"]), node("Add", ["a", "xt"], ["so"]), node("Sin", ["so"], ["yt"])],
                [("s", t, [3]), ("xt", t, [3])], [("so", t, [3]), ("yt", t, [3])])
    # no state: y_t = x_t * z_t + w (two scan inputs)
    stateless = graph("stateless", [node("Mul", ["xt", "zt"], ["p"]), node("Add", ["p", "w"], ["yt"])],
                      [("xt", t, [3]), ("zt", t, [3])], [("yt", t, [3])])
    # a matrix state times each column of x (scan axis 1), outputs stacked along axis 1 in reverse
    mat = graph("mat", [node("MatMul", ["m", "w"], ["mw"]), node("Mul", ["mw", "xt"], ["mo"]),
                        node("ReduceSum", ["mo"], ["yt"], keepdims=0)],
                [("m", t, [2, 2]), ("xt", t, [2, 1])], [("mo", t, [2, 2]), ("yt", t, [])])
    # onnx.reference implements Scan only for axes 0 and forward directions: the other cases run in
    # onnxruntime alone
    ref = {"reference": False}
    return [
        Case("Scan/state", "Scan", [("s0", rand(3)), ("x", rand(4, 3, seed=1))], {"body": rnn, "num_scan_inputs": 1},
             opset=16, n_outputs=2, scope=[("w", rand(3, seed=2))], dtypes=(d,)),
        Case("Scan/reverse-input", "Scan", [("s0", rand(3)), ("x", rand(4, 3, seed=1))],
             {"body": rnn, "num_scan_inputs": 1, "scan_input_directions": [1], "scan_output_directions": [1]},
             opset=11, n_outputs=2, scope=[("w", rand(3, seed=2))], dtypes=(d,), **ref),
        Case("Scan/axes", "Scan", [("s0", rand(3)), ("x", rand(3, 5, seed=1))],
             {"body": rnn, "num_scan_inputs": 1, "scan_input_axes": [-1], "scan_output_axes": [1]},
             opset=11, n_outputs=2, scope=[("w", rand(3, seed=2))], dtypes=(d,), **ref),
        Case("Scan/stateless-two-inputs", "Scan", [("x", rand(4, 3, seed=1)), ("z", rand(3, 4, seed=3))],
             {"body": stateless, "num_scan_inputs": 2, "scan_input_axes": [0, 1], "scan_input_directions": [0, 1]},
             opset=9, scope=[("w", rand(3, seed=2))], dtypes=(d,), **ref),
        Case("Scan/matrix-state", "Scan", [("m0", rand(2, 2)), ("x", rand(2, 3, 1, seed=1))],
             {"body": mat, "num_scan_inputs": 1, "scan_input_axes": [1], "scan_output_directions": [1]},
             opset=13, n_outputs=2, scope=[("w", rand(2, 2, seed=2))], dtypes=(d,), **ref),
    ]


def _params(build) -> list:
    return [pytest.param(c, d, id=f"{c.id}-{d}") for d in ("float32", "float64") for c in build(d)]


@pytest.mark.parametrize("case,dtype", _params(if_cases))
def test_if(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", _params(loop_cases))
def test_loop(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case,dtype", _params(scan_cases))
def test_scan(case: Case, dtype: str) -> None:
    check_case(case, dtype)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id) for build in (if_cases, loop_cases, scan_cases)
                                  for c in build("float64")])
def test_second_order(case: Case) -> None:
    """The backward If/Loop/Scan are differentiable again (Hessian-vector products)."""
    check_second_order(case, "float64")


# ---------------------------------------------------------------- end to end: TensorFlow-style exports
D = TensorProto.DOUBLE
INT64_MAX = np.iinfo(np.int64).max


def _model(nodes: list, inputs: list, outputs: list, inits: Sequence = (), opset: int = 13):
    g = helper.make_graph(nodes, "tf_export", [helper.make_tensor_value_info(*i) for i in inputs],
                          [helper.make_tensor_value_info(*o) for o in outputs],
                          [numpy_helper.from_array(np.asarray(v), n) for n, v in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _check_model(model, xs: List[str], ys: List[str], feeds: Dict[str, np.ndarray]) -> None:
    """float64 central differences in onnxruntime, ONNX's full check, and onnx.reference agreeing."""
    report = check_gradients(model, xs, ys, feeds=feeds)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert len(report.checks) == len(xs)
    bad = [c for c in report.checks if not c.ok]
    assert not bad, [(c.name, c.analytic, c.numeric, c.jacobian_ratio) for c in bad]
    compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds))


def test_tf_while_loop() -> None:
    """``tf.while_loop(lambda i, v: i < n, lambda i, v: (i + 1, v + sin(v) * w), (0, x))`` as tf2onnx
    exports it: a Loop with the maximal trip count whose condition, computed in the body, ends it
    after ``n`` iterations (n fed at run time)."""
    body = graph("while_body", [
        node("Add", ["i", "one"], ["i1"]), node("Sin", ["v"], ["s"]), node("Mul", ["s", "w"], ["sw"]),
        node("Add", ["v", "sw"], ["v1"]), node("Less", ["i1", "n"], ["c1"])],
        [("it", I64, []), ("c", BOOL, []), ("i", I64, []), ("v", D, [3])],
        [("c1", BOOL, []), ("i1", I64, []), ("v1", D, [3])])
    model = _model([node("Less", ["zero", "n"], ["c0"]),
                    node("Loop", ["max", "c0", "zero", "x"], ["i_final", "v_final"], body=body),
                    node("ReduceSum", ["v_final"], ["loss"], keepdims=0)],
                   [("x", D, [3]), ("w", D, [3]), ("n", I64, [])], [("loss", D, [])],
                   [("max", np.int64(INT64_MAX)), ("zero", np.int64(0)), ("one", np.int64(1))])
    _check_model(model, ["x", "w"], ["loss"], {"x": rand(3), "w": rand(3, seed=1), "n": np.array(4, np.int64)})


def test_tf_scan() -> None:
    """``tf.scan(lambda a, e: a * w + e, elems, initializer=a0)`` as tf2onnx exports it: a Loop over
    the rows of ``elems`` (read from the enclosing scope with Gather) with the accumulator carried
    and every step's value as a scan output."""
    body = graph("scan_body", [
        node("Gather", ["elems", "it"], ["e"], axis=0), node("Mul", ["a", "w"], ["aw"]),
        node("Add", ["aw", "e"], ["a1"]),
        node("Identity", ["c"], ["c1"]), node("Identity", ["a1"], ["a_out"])],
        [("it", I64, []), ("c", BOOL, []), ("a", D, [3])], [("c1", BOOL, []), ("a1", D, [3]), ("a_out", D, [3])])
    model = _model([node("Shape", ["elems"], ["shape"]), node("Gather", ["shape", "zero"], ["steps"], axis=0),
                    node("Loop", ["steps", "true", "a0"], ["a_final", "stacked"], body=body),
                    node("Tanh", ["stacked"], ["y"])],
                   [("elems", D, ["T", 3]), ("a0", D, [3]), ("w", D, [3])], [("y", D, ["T", 3])],
                   [("zero", np.int64(0)), ("true", np.array(True))])
    _check_model(model, ["elems", "a0", "w"], ["y"], {"elems": rand(5, 3), "a0": rand(3, seed=1),
                                                     "w": rand(3, seed=2)})


def test_tf_map_fn() -> None:
    """``tf.map_fn(lambda e: tanh(e @ w), elems)``: a Loop with no carried value, one scan output."""
    body = graph("map_body", [node("Gather", ["elems", "it"], ["e"], axis=0), node("MatMul", ["e", "w"], ["ew"]),
                              node("Tanh", ["ew"], ["t"]), node("Identity", ["c"], ["c1"])],
                 [("it", I64, []), ("c", BOOL, [])], [("c1", BOOL, []), ("t", D, [2])])
    model = _model([node("Shape", ["elems"], ["shape"]), node("Gather", ["shape", "zero"], ["steps"], axis=0),
                    node("Loop", ["steps", "true"], ["mapped"], body=body)],
                   [("elems", D, [4, 3]), ("w", D, [3, 2])], [("mapped", D, [4, 2])],
                   [("zero", np.int64(0)), ("true", np.array(True))])
    _check_model(model, ["elems", "w"], ["mapped"], {"elems": rand(4, 3), "w": rand(3, 2, seed=1)})


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_tf_cond(sign: float) -> None:
    """``tf.cond(reduce_sum(x) > 0, lambda: x * w, lambda: exp(x) - b)`` as tf2onnx exports it."""
    then = graph("true_fn", [node("Mul", ["x", "w"], ["t"])], [], [("t", D, [3])])
    other = graph("false_fn", [node("Exp", ["x"], ["e"]), node("Sub", ["e", "b"], ["f"])], [], [("f", D, [3])])
    model = _model([node("ReduceSum", ["x"], ["s"], keepdims=0), node("Greater", ["s", "zero"], ["p"]),
                    node("If", ["p"], ["r"], then_branch=then, else_branch=other), node("Mul", ["r", "r"], ["y"])],
                   [("x", D, [3]), ("w", D, [3]), ("b", D, [3])], [("y", D, [3])], [("zero", np.float64(0.0))])
    x = np.abs(rand(3)) * sign
    _check_model(model, ["x", "w", "b"], ["y"], {"x": x, "w": rand(3, seed=1), "b": rand(3, seed=2)})


def _seq(name: str, shape: Optional[list] = None) -> onnx.ValueInfoProto:
    return helper.make_value_info(name, helper.make_sequence_type_proto(helper.make_tensor_type_proto(D, shape)))


def _t(name: str, elem: int, shape: Optional[list]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def test_loop_appends_to_a_sequence() -> None:
    """The dynamo exporter's pattern (EmbeddingBag): a Loop carrying a sequence it appends a row
    to at every iteration, joined after the loop by ConcatFromSequence; the carried tensor reads
    the sequence too (its first element), so gradients flow between both carried values."""
    body = helper.make_graph(
        [node("Mul", ["v", "w"], ["a"]), node("Sin", ["a"], ["vo"]), node("SequenceInsert", ["s", "vo"], ["so"]),
         node("SequenceAt", ["so", "zero"], ["first"]), node("Add", ["vo", "first"], ["vs"]),
         node("Identity", ["c"], ["co"])],
        "append_body", [_t("i", I64, []), _t("c", BOOL, []), _t("v", D, [1, 3]), _seq("s", [1, 3])],
        [_t("co", BOOL, []), _t("vs", D, [1, 3]), _seq("so", [1, 3])])
    model = _model([node("SequenceEmpty", [], ["s0"], dtype=D),
                    node("Loop", ["n", "true", "x", "s0"], ["v_final", "s_final"], body=body),
                    node("ConcatFromSequence", ["s_final"], ["rows"], axis=0), node("Tanh", ["rows"], ["y"]),
                    node("Mul", ["v_final", "v_final"], ["z"])],
                   [("x", D, [1, 3]), ("w", D, [1, 3]), ("n", I64, [])], [("y", D, [4, 3]), ("z", D, [1, 3])],
                   [("zero", np.int64(0)), ("true", np.array(True))], opset=13)
    _check_model(model, ["x", "w"], ["y", "z"], {"x": rand(1, 3), "w": rand(1, 3, seed=1), "n": np.array(4, np.int64)})


def test_loop_carried_sequence_read_inside_only() -> None:
    """A carried sequence whose final value nobody uses: the body reads it (its first and last
    elements) for the carried tensor and a scan output, so its gradient inside the loop is not
    zero although the final one is (zeros for every element)."""
    body = helper.make_graph(
        [node("SequenceInsert", ["s", "v"], ["so"]), node("SequenceAt", ["so", "minus_one"], ["last"]),
         node("Mul", ["last", "w"], ["a"]), node("Tanh", ["a"], ["b"]), node("Add", ["b", "v"], ["vo"]),
         node("SequenceAt", ["s", "zero"], ["first"]), node("Mul", ["first", "b"], ["scanned"]),
         node("Identity", ["c"], ["co"])],
        "read_body", [_t("i", I64, []), _t("c", BOOL, []), _t("v", D, [2]), _seq("s", [2])],
        [_t("co", BOOL, []), _t("vo", D, [2]), _seq("so", [2]), _t("scanned", D, [2])])
    model = _model([node("SequenceConstruct", ["x0"], ["s0"]),
                    node("Loop", ["three", "true", "x", "s0"], ["y", "seq", "ys"], body=body)],
                   [("x", D, [2]), ("x0", D, [2]), ("w", D, [2])], [("y", D, [2]), ("ys", D, [3, 2])],
                   [("three", np.int64(3)), ("true", np.array(True)), ("minus_one", np.int64(-1)),
                    ("zero", np.int64(0))], opset=13)
    _check_model(model, ["x", "x0", "w"], ["y", "ys"], {"x": rand(2), "x0": rand(2, seed=1), "w": rand(2, seed=2)})


def test_loop_carried_sequence_also_used_outside() -> None:
    """The initial sequence of a Loop is read outside it too: its gradient from the Loop and the
    one from SequenceAt add up element by element. Opset 15: sequences are copied by Identity
    (the other sequence tests run at 13, where the op table copies them otherwise)."""
    body = helper.make_graph(
        [node("Mul", ["v", "v"], ["vo"]), node("SequenceInsert", ["s", "vo"], ["so"]), node("Identity", ["c"], ["co"])],
        "twice_body", [_t("i", I64, []), _t("c", BOOL, []), _t("v", D, [2]), _seq("s", [2])],
        [_t("co", BOOL, []), _t("vo", D, [2]), _seq("so", [2])])
    model = _model([node("SequenceConstruct", ["x0", "x1"], ["s0"]),
                    node("Loop", ["two", "true", "x", "s0"], ["v_final", "s_final"], body=body),
                    node("ConcatFromSequence", ["s_final"], ["joined"], axis=0), node("Sin", ["joined"], ["y"]),
                    node("SequenceAt", ["s0", "one"], ["e"]), node("Mul", ["e", "v_final"], ["z"])],
                   [("x", D, [2]), ("x0", D, [2]), ("x1", D, [2])], [("y", D, [8]), ("z", D, [2])],
                   [("two", np.int64(2)), ("one", np.int64(1)), ("true", np.array(True))], opset=15)
    _check_model(model, ["x", "x0", "x1"], ["y", "z"], {"x": rand(2), "x0": rand(2, seed=1), "x1": rand(2, seed=2)})


@pytest.mark.parametrize("taken", [True, False])
def test_if_with_sequences(taken: bool) -> None:
    """An If whose branches extend an enclosing sequence differently (the then branch also reads
    an element of it): sequence gradients into and out of both branches."""
    then = helper.make_graph([node("Mul", ["x", "w"], ["xw"]), node("SequenceInsert", ["s", "xw"], ["t"]),
                              node("SequenceAt", ["s", "zero"], ["first"]), node("Mul", ["first", "x"], ["tx"]),
                              node("SequenceInsert", ["t", "tx"], ["t2"])],
                             "then_seq", [], [_seq("t2", [2])])
    other = helper.make_graph([node("Sin", ["x"], ["sx"]), node("SequenceInsert", ["s", "sx"], ["e"])],
                              "else_seq", [], [_seq("e", [2])])
    model = _model([node("SequenceConstruct", ["a"], ["s"]),
                    node("If", ["c"], ["r"], then_branch=then, else_branch=other),
                    node("ConcatFromSequence", ["r"], ["y"], axis=0, new_axis=1)],
                   [("x", D, [2]), ("w", D, [2]), ("a", D, [2]), ("c", BOOL, [])],
                   [("y", D, [3 if taken else 2, 2])], [("zero", np.int64(0))], opset=13)
    _check_model(model, ["x", "w", "a"], ["y"], {"x": rand(2), "w": rand(2, seed=1), "a": rand(2, seed=2),
                                                 "c": np.array(taken)})


def test_loop_reads_elements_of_an_outer_sequence() -> None:
    """``for i: v <- v * S[i] + tanh(S[i])`` with S split from x outside the loop: the gradient of
    the sequence S, read at every step, is summed over the steps (element-wise) and reaches x."""
    body = helper.make_graph(
        [node("SequenceAt", ["parts", "i"], ["e"]), node("Mul", ["v", "e"], ["a"]), node("Tanh", ["e"], ["t"]),
         node("Add", ["a", "t"], ["vo"]), node("Identity", ["c"], ["co"])],
        "outer_seq_body", [_t("i", I64, []), _t("c", BOOL, []), _t("v", D, [1, 2])],
        [_t("co", BOOL, []), _t("vo", D, [1, 2])])
    model = _model([node("SplitToSequence", ["x"], ["parts"], axis=0),
                    node("SequenceLength", ["parts"], ["n"]),
                    node("Loop", ["n", "true", "v0"], ["y"], body=body)],
                   [("x", D, [3, 2]), ("v0", D, [1, 2])], [("y", D, [1, 2])], [("true", np.array(True))], opset=13)
    _check_model(model, ["x", "v0"], ["y"], {"x": rand(3, 2), "v0": rand(1, 2, seed=1)})


def test_loop_carrying_a_sequence_runs_once() -> None:
    """The gradient model runs the user's Loop once: the recording copy takes its place and
    computes its outputs."""
    body = helper.make_graph(
        [node("Sin", ["v"], ["vo"]), node("SequenceInsert", ["s", "vo"], ["so"]), node("Identity", ["c"], ["co"])],
        "once_body", [_t("i", I64, []), _t("c", BOOL, []), _t("v", D, [2]), _seq("s", [2])],
        [_t("co", BOOL, []), _t("vo", D, [2]), _seq("so", [2])])
    model = _model([node("SequenceEmpty", [], ["s0"], dtype=D),
                    node("Loop", ["three", "true", "x", "s0"], ["v_final", "s_final"], body=body),
                    node("ConcatFromSequence", ["s_final"], ["y"], axis=0)],
                   [("x", D, [2])], [("y", D, [6])], [("three", np.int64(3)), ("true", np.array(True))], opset=13)
    result = onnxgrad.gradients(model, "y", "x")
    runs = [n for n in result.model.graph.node if n.op_type == "Loop" and n.attribute[0].g.name == "once_body"]
    assert len(runs) == 1 and "v_final" in runs[0].output  # the recording copy, in the user's Loop's place
    _check_model(model, ["x"], ["y"], {"x": rand(2)})


def test_body_writes_a_new_subgraph() -> None:
    """subgraph.Body with no forward nodes is the emitter of a new Loop body (as a recurrent rule
    would write one): h <- tanh(h @ w) three times, w read from the enclosing graph."""
    from onnxgrad.emitter import Emitter
    from onnxgrad.graph import GraphIndex
    from onnxgrad.tensorinfo import TensorInfo
    from onnxgrad.subgraph import Body

    model = _model([node("Identity", ["h0"], ["h_in"])], [("h0", D, [1, 3]), ("w", D, [3, 3])], [("h_in", D, [1, 3])])
    g = Emitter(GraphIndex(model), "rule")
    b = Body(g, GraphProto(), [("i", TensorInfo(I64, ())), ("c", TensorInfo(BOOL, ())), ("h", g.info("h_in"))], [],
             ["w"], "step")
    body = b.graph(["c", b.g.Tanh(b.g.MatMul("h", "w"))])
    out = g.fresh("h")
    g.add_node("Loop", [g.scalar_int(3), g.const(np.array(True), dtype=BOOL), "h_in"], [out], g.fresh("Loop"),
               {"body": body})
    model.graph.node.extend(g.nodes)
    model.graph.output.append(helper.make_tensor_value_info(out, D, [1, 3]))
    onnx.checker.check_model(model, full_check=True)
    h, w = rand(1, 3), rand(3, 3, seed=1)
    compare_with_reference(model, {"h0": h, "w": w})  # onnxruntime agrees
    got = onnx.reference.ReferenceEvaluator(model).run([out], {"h0": h, "w": w})[0]
    for _ in range(3):
        h = np.tanh(h @ w)
    np.testing.assert_allclose(got, h, rtol=1e-12)


def test_op_without_rule_inside_a_branch_is_named() -> None:
    """A branch op without a gradient rule raises LookupError naming it, as in the main graph."""
    then = graph("then", [helper.make_node("Cube", ["x"], ["t"], domain="my.ops", name="cube_in_branch")], [],
                 [("t", D, [3])])
    other = graph("else", [node("Neg", ["x"], ["e"])], [], [("e", D, [3])])
    g = helper.make_graph([node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "m",
                          [helper.make_tensor_value_info("x", D, [3]), helper.make_tensor_value_info("c", BOOL, [])],
                          [helper.make_tensor_value_info("y", D, [3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("my.ops", 1)])
    with pytest.raises(LookupError, match="cube_in_branch.*my.ops::Cube"):
        onnxgrad.gradients(model, "y", "x")


def _nested_ifs(depth: int) -> onnx.ModelProto:
    """``y = sin(x) * w`` under ``depth`` nested Ifs on ``c`` (every else branch: ``-x``)."""
    inner = graph("level0", [node("Sin", ["x"], ["s"]), node("Mul", ["s", "w"], ["t0"])], [], [("t0", D, [3])])
    for k in range(1, depth + 1):
        other = graph(f"else{k}", [node("Neg", ["x"], [f"e{k}"])], [], [(f"e{k}", D, [3])])
        inner = graph(f"level{k}", [node("If", ["c"], [f"t{k}"], then_branch=inner, else_branch=other)], [],
                      [(f"t{k}", D, [3])])
    return _model(list(inner.node), [("x", D, [3]), ("w", D, [3]), ("c", BOOL, [])], [(f"t{depth}", D, [3])],
                  opset=17)


@pytest.mark.parametrize("taken", [True, False])
def test_deep_nesting_keeps_the_python_stack_flat(taken: bool) -> None:
    """30 nested Ifs (protobuf parses at most 100 nested messages: 3 per level) differentiate with
    100 Python frames to spare: nested backward passes run from the engine's own stack
    (engine.run), not by recursion (which needed about 6 frames per level)."""
    depth = 30
    model = _nested_ifs(depth)
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)
    try:
        onnxgrad.gradients(model, f"t{depth}", ["x", "w"])
    finally:
        sys.setrecursionlimit(saved)
    _check_model(model, ["x", "w"], [f"t{depth}"], {"x": rand(3), "w": rand(3, seed=1), "c": np.array(taken)})


def test_deeply_nested_loops_keep_the_python_stack_flat() -> None:
    """30 nested Loops (the outer one runs twice, each inner one once; innermost ``v <- sin(v * w)``)
    differentiate with 100 Python frames to spare, and the gradients are right."""
    depth = 30
    body = graph("b0", [node("Mul", ["v0", "w"], ["m0"]), node("Sin", ["m0"], ["o0"]),
                        node("Identity", ["c0"], ["co0"])],
                 [("i0", I64, []), ("c0", BOOL, []), ("v0", D, [2])], [("co0", BOOL, []), ("o0", D, [2])])
    for k in range(1, depth):
        body = graph(f"b{k}", [node("Loop", ["one", "true", f"v{k}"], [f"o{k}"], body=body),
                               node("Identity", [f"c{k}"], [f"co{k}"])],
                     [(f"i{k}", I64, []), (f"c{k}", BOOL, []), (f"v{k}", D, [2])],
                     [(f"co{k}", BOOL, []), (f"o{k}", D, [2])])
    model = _model([node("Loop", ["two", "true", "x"], ["y"], body=body)], [("x", D, [2]), ("w", D, [2])],
                   [("y", D, [2])], [("one", np.int64(1)), ("two", np.int64(2)), ("true", np.array(True))], opset=17)
    saved = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 100)
    try:
        onnxgrad.gradients(model, "y", ["x", "w"])
    finally:
        sys.setrecursionlimit(saved)
    _check_model(model, ["x", "w"], ["y"], {"x": rand(2), "w": rand(2, seed=1)})
