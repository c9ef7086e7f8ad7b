"""The public API: :func:`gradients`, TensorFlow's semantics on ONNX (and :func:`stop_gradient`,
from :mod:`onnxgrad.stopgrad`)."""

from __future__ import annotations

import functools
import gc
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Set, Tuple, TypeVar, Union

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper

from . import engine, targets
from .arguments import (AggregationMethod, GradY, UnconnectedGradients, aggregator, check_names, parse_grad_ys,
                        parse_names, parse_unconnected, unique_prefix)
from .emitter import Emitter
from .errors import GradientArgumentError, GradientTypeError
from .graph import FLOAT_TYPES, GraphIndex, subgraph_outer_names
from .loading import ModelLike, load_model
from .stopgrad import stop_gradient
from .tensorinfo import TensorInfo
from .validation import check_gradient_model

__all__ = ["AggregationMethod", "GradientsResult", "UnconnectedGradients", "append_gradients", "gradients",
           "stop_gradient"]

F = TypeVar("F", bound=Callable[..., Any])


class GradientsResult(NamedTuple):
    """``model``: the augmented ModelProto; ``names[i]``: output holding d(sum ys)/d xs[i] or None."""

    model: ModelProto
    names: List[Optional[str]]




def gradients(
    model: ModelLike,
    ys: Union[str, Sequence[str]],
    xs: Union[str, Sequence[str]],
    grad_ys: Optional[Union[GradY, Sequence[GradY]]] = None,
    name: str = "gradients",
    gate_gradients: bool = False,
    aggregation_method: Optional[int] = None,
    stop_gradients: Optional[Union[str, Sequence[str]]] = None,
    unconnected_gradients: Union[str, UnconnectedGradients] = UnconnectedGradients.NONE,
    target: Optional[str] = None,
) -> GradientsResult:
    """Append the gradients of ``sum(ys)`` with respect to each of ``xs`` to an ONNX model.

    The counterpart of ``tf.gradients``: the returned model is the original graph (every output
    kept, in order) plus backward nodes in the default ONNX domain, plus one graph output per
    gradient in ``xs`` order.

    Args:
        model: an ``onnx.ModelProto`` (never modified) or the path of a ``.onnx`` file.
        ys: name or list of names of the tensors to differentiate; any value of the main graph.
        xs: name or list of names to differentiate with respect to: graph inputs, initializers,
            Constant outputs or intermediate values. Repeating an x returns the same gradient.
        grad_ys: None (ones shaped like each y), or a list aligned with ``ys`` whose entries are
            None (ones), a number or numpy array (a constant of y's dtype), or a string: an
            existing tensor, or the name of a new graph input of y's type and shape that the
            caller feeds at run time.
        name: prefix of every new node and tensor (uniquified if the model already uses it).
        gate_gradients: accepted for compatibility. TensorFlow uses it to group an op's input
            gradients behind a tuple (a control dependency); ONNX graphs have no control
            dependencies and every runtime schedules nodes by data flow, so it changes nothing.
        aggregation_method: :class:`AggregationMethod`. ``ADD_N`` (default) sums several
            contributions with one n-ary ``Sum``; ``EXPERIMENTAL_TREE`` and
            ``EXPERIMENTAL_ACCUMULATE_N`` with a chain of ``Add``.
        stop_gradients: tensors held constant: backprop does not pass through them (partial
            instead of total derivatives). Markers placed by :func:`stop_gradient` also stop it.
        unconnected_gradients: ``"none"`` (None for an x the ys do not depend on, and no output
            is added for it) or ``"zero"`` (zeros of x's shape and dtype).
        target: None (portable output for every runtime where that costs nothing) or a runtime
            profile of :mod:`onnxgrad.targets` (``"openvino"``, ``"tract"``, ``"portable"``) adding
            the workarounds that runtime needs at some cost (a weight copy, a decomposed forward op).

    Returns:
        ``GradientsResult(model, names)``; ``names[i]`` is the output name of the gradient for
        ``xs[i]`` or None.

    Raises:
        LookupError (:class:`~onnxgrad.errors.NoGradientError`): an op between xs and ys has no
            gradient rule.
        ValueError: invalid arguments (unknown names, lengths, option values) or an unreadable or
            invalid model.
        TypeError: a ``grad_ys`` entry whose dtype cannot seed y's gradient.

    Integer, bool and string tensors are constants: gradients never flow through them.
    """
    return _differentiate(lambda: GraphIndex(load_model(model)), ys, xs, grad_ys, name, aggregation_method,
                          stop_gradients, unconnected_gradients, target)


def append_gradients(
    index: GraphIndex,
    ys: Union[str, Sequence[str]],
    xs: Union[str, Sequence[str]],
    grad_ys: Optional[Union[GradY, Sequence[GradY]]] = None,
    name: str = "gradients",
    aggregation_method: Optional[int] = None,
    stop_gradients: Optional[Union[str, Sequence[str]]] = None,
    unconnected_gradients: Union[str, UnconnectedGradients] = UnconnectedGradients.NONE,
    target: Optional[str] = None,
) -> GradientsResult:
    """:func:`gradients` on a model already loaded and indexed, as the command line does
    (``GraphIndex(load_model(path))``): ``index.model`` is extended in place, instead of being
    copied, validated and shape-inferred a second time. The index must not be used afterwards."""
    return _differentiate(lambda: index, ys, xs, grad_ys, name, aggregation_method, stop_gradients,
                          unconnected_gradients, target)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Run the ``with`` block with the cyclic garbage collector paused.

    A large graph's backward pass allocates millions of small objects (names, lists, protobuf
    wrappers) that live until the end: the collector would scan them again and again (15-20% of
    the time at 100k nodes) to find almost no cycles. Those there are get collected afterwards.
    The command line holds it over a whole command: reading, indexing and writing the model too.
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            # what was made meanwhile joins the oldest generation: left in the youngest, it would be
            # scanned all at once at the next allocation (a second at 100k nodes) for no cycles
            gc.freeze()
            gc.enable()
            gc.unfreeze()


def _without_gc(fn: F) -> F:
    """``fn`` run inside :func:`gc_paused`."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with gc_paused():
            return fn(*args, **kwargs)
    return run  # type: ignore[return-value]


@_without_gc
def _differentiate(
    load: Callable[[], GraphIndex],
    ys: Union[str, Sequence[str]],
    xs: Union[str, Sequence[str]],
    grad_ys: Optional[Union[GradY, Sequence[GradY]]],
    name: str,
    aggregation_method: Optional[int],
    stop_gradients: Optional[Union[str, Sequence[str]]],
    unconnected_gradients: Union[str, UnconnectedGradients],
    target: Optional[str] = None,
) -> GradientsResult:
    """:func:`gradients` on the index ``load`` gives (called once the arguments parse); its model is
    private (a copy, or handed over) and is extended in place."""
    ys_l = parse_names(ys, "ys")
    xs_l = parse_names(xs, "xs")
    stops = parse_names(stop_gradients, "stop_gradients")
    if not ys_l:
        raise GradientArgumentError("ys is empty: name at least one tensor to differentiate")
    unconnected = parse_unconnected(unconnected_gradients)
    aggregate = aggregator(aggregation_method)
    gys = parse_grad_ys(grad_ys, len(ys_l))
    targets.check_target(target)

    index = load()
    proto = index.model
    if targets.prepare_forward(proto, target):
        index = GraphIndex(proto)
    for what, given in (("ys", ys_l), ("xs", xs_l), ("stop_gradients", stops)):
        check_names(index, given, what)

    n_forward = len(proto.graph.node)
    # nodes are built in place in the graph
    g = Emitter(index, unique_prefix(index, name), sink=proto.graph.node)
    g.restate_dims = targets.restates_dims(target)
    g.scatter9 = targets.scatters_before_11(target)
    seeds = [_seed(g, index, y, gy) for y, gy in zip(ys_l, gys)]
    raw = engine.backprop(g, ys_l, xs_l, seeds, set(stops), aggregate)

    # each distinct x's gradient (unconnected ones zero-filled if asked)
    answers: Dict[str, Optional[str]] = {}
    for x, dx in zip(xs_l, raw):
        if x not in answers:
            if dx is None and unconnected is UnconnectedGradients.ZERO and g.is_float(x):
                dx = g.zeros_like(x)
            answers[x] = dx
    live = _prune(g, [dx for dx in answers.values() if dx is not None])
    # A gradient's own node gives it under its output name where nothing else reads it (as
    # tf.gradients returns the tensors themselves); elsewhere an Identity copies it. An Identity
    # per weight was a quarter of a deep MLP's backward nodes and ~1 % of small_cnn's run time.
    moved: Dict[str, str] = {}  # gradient -> the output name it was given
    outputs: List[Tuple[str, onnx.TypeProto]] = []
    types: Dict[TensorInfo, onnx.TypeProto] = {}  # many xs share a type: build each TypeProto once
    done: Dict[str, Optional[str]] = {}
    for x, dx in answers.items():
        if dx is None:
            done[x] = None
            continue
        out = g.fresh(f"{x.replace('/', '_')}_grad")
        if dx in live.movable and dx not in moved:
            node, slot = live.movable[dx]
            g.nodes[node].output[slot] = moved[dx] = out
        else:
            g.add_node("Identity", [moved.get(dx, dx)], [out], out, {})
        info = index.tensor_info(x)
        if info not in types:
            shape = list(info.shape) if info.shape is not None else None
            types[info] = helper.make_tensor_value_info(out, info.elem_type, shape).type
        outputs.append((out, types[info]))
        done[x] = out
    names = [done[x] for x in xs_l]
    _drop(proto.graph.node, n_forward, live.dead)  # after the renaming: dropping copies the nodes kept
    proto.graph.input.extend(g.extra_inputs)
    for out, tp in outputs:
        proto.graph.output.add(name=out, type=tp)
    targets.finish(proto, n_forward, target)
    check_gradient_model(proto)
    return GradientsResult(proto, names)


def _drop(container: Any, start: int, dead: List[int]) -> None:
    """Remove the backward nodes at positions ``dead`` (ascending) of the nodes from ``start`` on."""
    if len(dead) <= 64:  # usually a handful: each deletion moves the nodes after it
        for i in reversed(dead):
            del container[start + i]
        return
    gone = set(dead)
    kept = onnx.GraphProto()
    kept.node.extend(n for i, n in enumerate(container[start:]) if i not in gone)
    del container[start:]
    container.extend(kept.node)


class _Live(NamedTuple):
    """What :func:`_prune` finds."""

    dead: List[int]  # positions of the backward nodes no output depends on, ascending
    movable: Dict[str, Tuple[int, int]]  # output -> (position, slot) of its maker, where nothing else reads it


def _prune(g: Emitter, outputs: Sequence[str]) -> _Live:
    """The backward nodes the names ``outputs`` depend on, and those they do not.

    Rules compute a gradient for every input of an op; those of inputs nobody asked about (a
    target, the data of a weights-only request) would otherwise stay in the graph as dead nodes.
    An output that a backward node makes and no other backward node (nor a subgraph of one)
    reads is ``movable``: walking back from the last node meets every reader of a tensor before
    its maker.
    """
    nodes, io = g.nodes, g.node_io
    asked = set(outputs)
    needed = set(asked)
    read: Set[str] = set()  # names of ``outputs`` a live node reads
    made: Dict[str, Tuple[int, int]] = {}
    dead = []
    for i in range(len(nodes) - 1, -1, -1):
        ins, outs, has_graph = io[i]
        if needed.isdisjoint(outs):
            dead.append(i)
            continue
        if has_graph:
            ins = list(ins) + subgraph_outer_names(nodes[i])
        if not asked.isdisjoint(outs):
            made.update((o, (i, slot)) for slot, o in enumerate(outs) if o in asked)
        if not asked.isdisjoint(ins):
            read.update(asked.intersection(ins))
        needed.update(ins)
        needed.discard("")  # an omitted optional input: "" must never match an omitted output
    return _Live(dead[::-1], {t: where for t, where in made.items() if t not in read})


def _seed(g: Emitter, index: GraphIndex, y: str, gy: GradY) -> str:
    info = index.tensor_info(y)
    if gy is None and info.elem_type in (TensorProto.COMPLEX64, TensorProto.COMPLEX128):
        raise GradientTypeError(
            f"y {y!r} is complex: pass its grad_ys explicitly (as tf.gradients requires); note that "
            "onnxgrad treats complex tensors as constants, so no gradient flows through them"
        )
    if gy is None:
        if not info.is_float:
            return ""  # integer y: nothing flows
        return g.ones_like(y)
    if isinstance(gy, str):
        if index.exists(gy):
            t = index.tensor_info(gy).elem_type
            if info.is_float and t and t not in FLOAT_TYPES:
                raise GradientTypeError(
                    f"grad_ys entry {gy!r} has dtype {TensorProto.DataType.Name(t).lower()} but y "
                    f"{y!r} is {TensorProto.DataType.Name(info.elem_type).lower()}; a float y needs a float gradient"
                )
            return gy
        return g.add_input(gy, info)
    arr = np.asarray(gy)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise GradientTypeError(
            f"grad_ys entry for {y!r} has dtype {arr.dtype}; it must be numeric (float for a float y)"
        )
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise GradientArgumentError(f"grad_ys entry for {y!r} holds NaN or infinity; a seed must be finite")
    if not info.is_float:
        return ""
    if arr.ndim == 0 and info.shape != ():
        # a number seeds every element: one ConstantOfShape, never a dense constant of y's size
        seed = g.constant_of_shape(g.shape_of(y), arr.item(), like=y)
        g.set_info(seed, info.elem_type, info.shape)
        return seed
    static = g.static_shape(y)
    if static is not None and arr.shape != static:
        try:
            arr = np.broadcast_to(arr, static)
        except ValueError:
            raise GradientArgumentError(
                f"grad_ys entry for {y!r} has shape {arr.shape}, y has shape {static}"
            ) from None
    return g.const(arr, like=y)


