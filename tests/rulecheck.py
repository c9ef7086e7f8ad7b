"""The one generic checker every rule test goes through.

A :class:`Case` describes a single-node model; :func:`check_case` builds it in the requested float
dtype, differentiates it with respect to every float input (or ``wrt``), and asserts:

* the gradient model (in the case's dtype) passes ``onnx.checker.check_model(full_check=True)``;
* the judge (:func:`onnxgrad.checking.check_gradients`) says PASS: the model cast to float64 and
  differentiated agrees with float64 central differences (directional derivative and Jacobian,
  relative tolerance 1e-5), and the gradient in the case's own dtype matches the float64 one; a
  case landing on a kink or tie (KINK) fails too: its inputs must avoid kinks;
* ``onnx.reference.ReferenceEvaluator`` runs the gradient model and gives the same gradients as
  onnxruntime.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from onnxgrad.checking import CheckReport, check_gradients, reference_kernels, session

DTYPES = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}


@dataclass
class Case:
    """One single-node test model.

    ``inputs``: ordered (name, value) pairs; float arrays are cast to the case dtype, others kept.
    A value of None is an omitted optional input (""). Names listed in ``constant`` become
    initializers instead of graph inputs (for inputs the op needs as constants, e.g. shapes).
    """

    id: str
    op_type: str
    inputs: Sequence[Any]
    attrs: Dict[str, Any] = field(default_factory=dict)
    opset: int = 18
    n_outputs: int = 1
    wrt: Optional[List[str]] = None
    constant: Sequence[str] = ()
    dtypes: Sequence[str] = ("float32", "float64")
    outputs_used: Optional[List[int]] = None  # which outputs are ys (default: every float output)
    rtol: Optional[float] = None
    # False only where onnx.reference itself evaluates the forward op wrongly; say why at the case.
    reference: bool = True
    # inputs whose first dim becomes the symbolic dim_param "N" (shape gradients must not need it)
    symbolic_dims: Sequence[str] = ()

    def __str__(self) -> str:
        return self.id


def build(case: Case, dtype: str) -> tuple:
    """(model, feeds, xs, ys) for ``case`` in ``dtype``."""
    elem = DTYPES[dtype]
    np_t = helper.tensor_dtype_to_np_dtype(elem)
    graph_inputs, inits, feeds, names, xs = [], [], {}, [], []
    for name, value in case.inputs:
        if value is None:
            names.append("")
            continue
        arr = np.asarray(value)
        if arr.dtype.kind == "f":
            arr = arr.astype(np_t)
        names.append(name)
        if name in case.constant:
            inits.append(numpy_helper.from_array(arr, name))
        else:
            shape = ["N", *arr.shape[1:]] if name in case.symbolic_dims else arr.shape
            graph_inputs.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), shape))
            feeds[name] = arr
        if arr.dtype.kind == "f" and (case.wrt is None or name in case.wrt):
            xs.append(name)
    outs = [f"y{i}" for i in range(case.n_outputs)]
    node = helper.make_node(case.op_type, names, outs, **case.attrs)
    graph = helper.make_graph([node], case.id.replace("/", "_"), graph_inputs,
                              [onnx.ValueInfoProto(name=o) for o in outs], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", case.opset)])
    model.ir_version = min(model.ir_version, 10)
    inferred = onnx.shape_inference.infer_shapes(model)
    types = {vi.name: vi for vi in inferred.graph.output}
    del model.graph.output[:]
    model.graph.output.extend(types[o] for o in outs)
    _complete_output_shapes(model, feeds, case.symbolic_dims)
    used = case.outputs_used if case.outputs_used is not None else range(case.n_outputs)
    out_types = {vi.name: vi.type.tensor_type.elem_type for vi in model.graph.output}
    ys = [outs[i] for i in used if out_types[outs[i]] in (TensorProto.FLOAT, TensorProto.DOUBLE)]
    return model, feeds, xs, ys


def _complete_output_shapes(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], symbolic: Sequence[str]) -> None:
    """Outputs whose shape depends on run-time values (axes, pads, repeats fed as inputs) get the
    shape onnxruntime computes: the full checker wants a shape on every graph output."""
    def known(vi):
        tt = vi.type.tensor_type
        return tt.elem_type and tt.HasField("shape") and all(
            d.HasField("dim_value") or (symbolic and d.dim_param == "N") for d in tt.shape.dim)

    missing = [vi for vi in model.graph.output if not known(vi)]
    if not missing:
        return
    values = session(model).run([vi.name for vi in missing], feeds)
    for vi, v in zip(missing, values):
        if not vi.type.tensor_type.elem_type:  # ops without an inference function (GroupNormalization)
            vi.type.tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(v.dtype)
        vi.type.tensor_type.ClearField("shape")
        for n in v.shape:
            vi.type.tensor_type.shape.dim.add().dim_value = n


def check_case(case: Case, dtype: str) -> None:
    model, feeds, xs, ys = build(case, dtype)
    report = check_gradients(model, xs, ys, feeds=feeds, rtol=case.rtol)
    grad_model = report.gradient_model
    onnx.checker.check_model(grad_model, full_check=True)
    assert not [c for c in report.checks if not c.ok], "gradient mismatch: " + _failures(report)
    assert len(report.checks) == len(xs)
    if case.reference:
        compare_with_reference(grad_model, feeds_for(grad_model, feeds))


def _failures(report: CheckReport) -> str:
    return "; ".join(f"{c.name} {c.verdict}: analytic {c.analytic:.6g} numeric {c.numeric:.6g} (err {c.error:.3g} > "
                     f"tol {c.tolerance:.3g}, jacobian ratio {c.jacobian_ratio}, own-dtype ratio {c.native_ratio}) "
                     f"{c.note}" for c in report.checks if not c.ok)


def check_second_order(case: Case, dtype: str) -> None:
    """Gradients of gradients (JAX's ``order=2``): the case's backward pass, with its grad_ys fed as
    graph inputs, is differentiated again with respect to the inputs and those grad_ys, and
    judged like a first gradient (float64 central differences of the first gradient)."""
    from onnxgrad import gradients

    model, feeds, xs, ys = build(case, dtype)
    seeds = [f"{y}/seed" for y in ys]
    first = gradients(model, ys, xs, grad_ys=seeds)
    firsts = [n for n in first.names if n is not None]
    assert firsts, f"{case.id}: no first gradient to differentiate"
    feeds = feeds_for(first.model, feeds, seed=2)
    report = check_gradients(first.model, xs + seeds, firsts, feeds=feeds, rtol=case.rtol)
    onnx.checker.check_model(report.gradient_model, full_check=True)
    assert not [c for c in report.checks if not c.ok], "second-order mismatch: " + _failures(report)
    assert len(report.checks) == len(xs) + len(seeds)
    if case.reference:
        compare_with_reference(report.gradient_model, feeds_for(report.gradient_model, feeds, seed=3))


def second_order_params(cases: Sequence[Case]):
    """pytest parameters: every case once, in float64 when it runs in float64."""
    import pytest

    return [pytest.param(c, "float64" if "float64" in c.dtypes else c.dtypes[0], id=c.id) for c in cases]


def feeds_for(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], seed: int = 1) -> Dict[str, np.ndarray]:
    """``feeds`` plus random values for any extra graph input (e.g. grad_ys seeds)."""
    rng = np.random.default_rng(seed)
    out = dict(feeds)
    sizes = {}  # a symbolic dim takes its size from a fed input that has it
    for vi in model.graph.input:
        if vi.name in feeds:
            for d, n in zip(vi.type.tensor_type.shape.dim, np.shape(feeds[vi.name])):
                if d.dim_param:
                    sizes[d.dim_param] = n
    for vi in model.graph.input:
        if vi.name not in out:
            tt = vi.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else sizes[d.dim_param] for d in tt.shape.dim]
            out[vi.name] = rng.standard_normal(shape).astype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
    return out


def compare_with_reference(model: onnx.ModelProto, feeds: Dict[str, np.ndarray], rtol: float = 1e-4,
                           atol: float = 1e-5) -> None:
    """onnx.reference (with the judge's fixes of its kernels) and onnxruntime agree on every output
    of ``model``."""
    names = [o.name for o in model.graph.output]
    ort_out = session(model).run(names, feeds)
    ref_out = ReferenceEvaluator(model, new_ops=reference_kernels(_opset(model))).run(names, feeds)
    for n, a, b in zip(names, ort_out, ref_out):
        np.testing.assert_allclose(np.asarray(b, dtype=np.float64) if np.asarray(b).dtype.kind == "f" else b,
                                   np.asarray(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a,
                                   rtol=rtol, atol=atol, err_msg=f"onnx.reference vs onnxruntime on {n}")


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def rand(*shape: int, seed: int = 0, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Deterministic uniform float64 test data."""
    return np.random.default_rng(seed + 7919 * len(shape) + sum(shape)).uniform(low, high, shape)


def params(cases: Sequence[Case]):
    """pytest parameters: every case in each of its dtypes."""
    import pytest

    return [pytest.param(c, d, id=f"{c.id}-{d}") for c in cases for d in c.dtypes]
