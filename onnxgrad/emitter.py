"""The emitter: the only place that writes backward nodes.

It owns tensor and node names, constants, dtypes and shapes, and, through its op table
(:mod:`onnxgrad.optable`), every difference between opsets and runtime kernels (ReduceSum axes as
attribute or input, Split/Squeeze/Unsqueeze/Slice/Pad signatures, float ``Equal`` before opset
11), so that rules read like formulas: ``g.Mul(dy, g.Sub(g.const(1, like=y), g.Mul(y, y)))``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple, Union

import numpy as np
import onnx
from onnx import NodeProto, TensorProto, helper, numpy_helper

from . import composites
from .errors import GradientArgumentError, OpTableError
from .graph import GraphIndex
from .opview import Op, SliceParams
from .optable import END, OPS, first_typed
from .tensorinfo import FLOAT_TYPES, UNKNOWN, Dim, TensorInfo

if TYPE_CHECKING:
    from typing_extensions import TypeGuard

__all__ = ["END", "Emitter", "Op", "SliceParams"]  # Op and SliceParams: what rules read, next to what they write

Axes = Sequence[int]


def _fill_node(node: NodeProto, op_type: str, inputs: List[str], outputs: List[str], name: str, domain: str,
               attrs: Dict[str, Any]) -> NodeProto:
    """``helper.make_node`` into the empty ``node`` (attributes sorted by name, None values
    dropped), several times faster: the attributes rules pass most (ints, floats, int lists,
    tensors) are written in place."""
    node.op_type = op_type
    node.input.extend(inputs)
    node.output.extend(outputs)
    node.name = name
    if domain:
        node.domain = domain
    A = onnx.AttributeProto
    for key in sorted(attrs):
        value = attrs[key]
        kind = type(value)
        if value is None:
            continue
        if kind is int:
            a = node.attribute.add()
            a.name, a.i, a.type = key, value, A.INT
        elif kind is float:
            a = node.attribute.add()
            a.name, a.f, a.type = key, value, A.FLOAT
        elif kind is TensorProto:
            a = node.attribute.add()
            a.name, a.type = key, A.TENSOR
            a.t.CopyFrom(value)
        elif kind is list and value and all(type(v) is int for v in value):
            a = node.attribute.add()
            a.name, a.type = key, A.INTS
            a.ints.extend(value)
        else:
            node.attribute.append(helper.make_attribute(key, value))
    return node


class _Scope:
    """The context of :meth:`Emitter.scoped` (a class: entered once per differentiated node, where a
    generator-based context manager costs several times more)."""

    __slots__ = ("_g", "_scope", "_saved")

    def __init__(self, g: "Emitter", scope: str) -> None:
        self._g, self._scope, self._saved = g, scope, ""

    def __enter__(self) -> None:
        self._saved, self._g.scope = self._g.scope, self._scope

    def __exit__(self, *exc: object) -> None:
        self._g.scope = self._saved


def np_dtype(elem_type: int) -> np.dtype:
    return helper.tensor_dtype_to_np_dtype(elem_type)


class Emitter:
    """Writes backward nodes into a list, with unique names under one prefix.

    Tensors are plain names (str). Every emitted tensor's element type is tracked so constants can
    be made ``like=`` any tensor, forward or backward.
    """

    def __init__(self, index: GraphIndex, prefix: str, sink: Optional[Any] = None) -> None:
        """``sink``: a GraphProto's repeated ``node`` field to build the nodes in (saving a copy
        of each when they end up there); they are also listed in ``nodes``."""
        self.index = index
        self._sink = sink
        self.opset = index.opset
        self.prefix = prefix
        self.nodes: List[NodeProto] = []
        #: per node of ``nodes`` emitted by add_node: (inputs, outputs, has a subgraph attribute)
        self.node_io: List[Tuple[List[str], List[str], bool]] = []
        self.scope = prefix
        self._types: Dict[str, int] = {}
        self._shapes: Dict[str, Optional[Tuple[Dim, ...]]] = {}
        self._sequences: Set[str] = set()  # emitted values that are sequences of tensors
        self._counts: Dict[str, int] = {}
        self._taken: Set[str] = set(index.all_names()) | {n.name for n in index.nodes if n.name}
        self._const_cache: Dict[Tuple[int, bytes, Tuple[int, ...]], str] = {}
        #: the same constants, for a Python int or float given as is (most rules' constants): by
        #: (dtype, type, value), found without building the array and its bytes
        self._scalar_consts: Dict[Tuple[int, type, Any], str] = {}
        self._const_values: Dict[str, np.ndarray] = {}
        self._shape_of_cache: Dict[str, str] = {}
        self._defined: Dict[str, bool] = {}  # op type -> whether the opset defines it
        self.zeros: Set[str] = set()
        #: gradients that are not tensors (a sequence's), each with how to add it to others of its kind
        self.combiners: Dict[str, Any] = {}
        self.extra_inputs: List[onnx.ValueInfoProto] = []
        #: follow run-time-axes reductions by a no-op Slice stating x's dims (targets.py: tract)
        self.restate_dims = False
        #: write scatters before opset 11 as Scatter-9 instead of MaxUnpool (targets.py: openvino, tract)
        self.scatter9 = False

    def nested(self) -> "Emitter":
        """An emitter writing the nodes of a new subgraph (a Loop body a rule builds), for the
        caller to wrap in a GraphProto (``helper.make_graph(b.nodes, ...)``).

        It has its own node list. The names it picks stay unique across this emitter and every
        other nested one, and the types it records are shared (a subgraph's outputs are typed
        from them). The enclosing graph's constants stay readable, as a subgraph reads its
        enclosing scope; the constants it makes stay inside it."""
        b = Emitter.__new__(Emitter)
        b.index, b._sink, b.opset, b.prefix, b.scope = self.index, None, self.opset, self.prefix, self.scope
        b.nodes, b.node_io = [], []
        b._types, b._shapes, b._counts, b._taken = self._types, self._shapes, self._counts, self._taken
        b._sequences = self._sequences
        b._const_cache, b._shape_of_cache = dict(self._const_cache), dict(self._shape_of_cache)
        b._scalar_consts = dict(self._scalar_consts)
        b._const_values, b._defined = self._const_values, self._defined
        b.zeros, b.combiners, b.extra_inputs = self.zeros, self.combiners, self.extra_inputs
        return b

    def graph_input(self, hint: str, info: TensorInfo) -> str:
        """A fresh, typed input of the nested graph this emitter writes (see :meth:`nested`)."""
        name = self.fresh(hint)
        self.set_info(name, info.elem_type, info.shape)
        if info.sequence:
            self._sequences.add(name)
        return name

    def subgraph(self, name: str, inputs: Sequence[str], outputs: Sequence[str]) -> onnx.GraphProto:
        """The nodes this nested emitter wrote as a graph (a Loop body): ``inputs`` from
        :meth:`graph_input`, ``outputs`` typed by their element type (and kind)."""
        def typed(n: str, shape: bool) -> onnx.ValueInfoProto:
            info = self.info(n)
            if info.sequence:
                return helper.make_tensor_sequence_value_info(n, info.elem_type, None)
            dims = list(info.shape) if shape and info.shape is not None else None
            return helper.make_tensor_value_info(n, info.elem_type, dims)

        return helper.make_graph(self.nodes, name, [typed(n, True) for n in inputs], [typed(o, False) for o in outputs])

    # ---------------------------------------------------------------- names
    def fresh(self, hint: str) -> str:
        """A name under the current scope that no tensor or node uses yet."""
        base = f"{self.scope}/{hint}"
        n = self._counts.get(base, 0)
        name = base if n == 0 else f"{base}_{n}"
        while name in self._taken:
            n += 1
            name = f"{base}_{n}"
        self._counts[base] = n + 1
        self._taken.add(name)
        return name

    def reserve(self, names: Iterable[str]) -> None:
        """Mark ``names`` as used (values of an enclosing or nested graph): fresh() avoids them."""
        self._taken.update(names)

    def names_in_use(self) -> Set[str]:
        """Every tensor and node name fresh() avoids (a nested graph's emitter must avoid them too)."""
        return self._taken

    def scoped(self, scope: str) -> "_Scope":
        """Name what is emitted inside the ``with`` block under ``<prefix>/<scope>``."""
        return _Scope(self, f"{self.prefix}/{scope}")

    # ---------------------------------------------------------------- types and shapes
    def info(self, name: str) -> TensorInfo:
        """What is known about a tensor, forward or emitted."""
        if name in self._types:
            return TensorInfo(self._types[name], self._shapes.get(name), name in self._sequences)
        return self.index.tensor_info(name)

    def known_dtype(self, name: str) -> int:
        """ONNX element type of a tensor (forward or emitted), 0 when unknown."""
        t = self._types.get(name)
        return t if t is not None else self.index.tensor_info(name).elem_type

    def dtype(self, name: str) -> int:
        """ONNX element type of a tensor (forward or emitted); an error when unknown."""
        t = self._types[name] if name in self._types else self.index.tensor_info(name).elem_type
        if not t:
            raise GradientArgumentError(f"the element type of tensor {name!r} is unknown (shape inference failed)")
        return t

    def shape(self, name: str) -> Optional[Tuple[Dim, ...]]:
        """Static shape: ints for known dims, str for symbolic ones, None if the rank is unknown."""
        if name in self._types:  # as info(), without building a TensorInfo on this hot path
            return self._shapes.get(name)
        return self.index.info.get(name, UNKNOWN).shape

    def rank(self, name: str) -> int:
        """The rank of a tensor; an error when unknown."""
        s = self.shape(name)
        if s is None:
            raise GradientArgumentError(
                f"the gradient written under {self.scope!r} needs the rank of tensor {name!r}, which the model "
                "leaves to run time (shape inference cannot tell it); declare that tensor's shape in the model "
                "(a value_info) to differentiate through it"
            )
        return len(s)

    def dims_of(self, name: str) -> Tuple[Dim, ...]:
        """The dims of a tensor (ints, symbols or None); an error when its rank is unknown."""
        s = self.shape(name)
        if s is None:
            self.rank(name)  # the error
            raise AssertionError("unreachable")
        return s

    def static_shape(self, name: str) -> Optional[Tuple[int, ...]]:
        """The shape if every dimension is a known int, else None."""
        s = self.shape(name)
        if s is None:
            return None
        dims = [d for d in s if isinstance(d, int)]
        return tuple(dims) if len(dims) == len(s) else None

    def static_dims(self, name: str, what: str) -> Tuple[int, ...]:
        """The static shape of a tensor; an error naming ``what`` (the op whose gradient needs it)
        when some dimension is not known."""
        shape = self.static_shape(name)
        if shape is None:
            raise GradientArgumentError(f"the gradient of {what} needs the static shape of {name!r}")
        return shape

    def add_input(self, name: str, info: TensorInfo) -> str:
        """A new graph input ``name`` of type ``info`` (fed at run time, e.g. a grad_ys seed)."""
        shape = list(info.shape) if info.shape is not None else None
        self.extra_inputs.append(helper.make_tensor_value_info(name, info.elem_type, shape))
        self.set_info(name, info.elem_type, info.shape)
        return name

    def set_info(self, name: str, elem_type: int, shape: Optional[Sequence[Dim]] = None) -> None:
        """Record the type (and shape) of a tensor the emitter cannot see. Rules do not call it:
        the op table records what the emitter emits, :meth:`as_gradient_of` what a gradient is."""
        self._types[name] = elem_type
        if shape is not None:
            self._shapes[name] = tuple(shape)

    def adopt(self, other: "Emitter", names: Iterable[str]) -> None:
        """Know ``names``, values ``other`` wrote whose nodes are now in this emitter's graph (a
        function body inlined), as ``other`` knows them."""
        for name in names:
            info = other.info(name)
            self.set_info(name, info.elem_type, info.shape)
            if info.sequence:
                self._sequences.add(name)

    def as_gradient_of(self, grad: str, x: str) -> str:
        """``grad``, known from now on to have the shape of ``x`` (a gradient is shaped like its
        tensor) where its own shape is unknown."""
        if grad in self._shapes:  # the usual case, on the walk's hot path: an emitted, shaped gradient
            return grad
        if self.shape(grad) is None and self.shape(x) is not None:
            self.set_info(grad, self.known_dtype(grad) or self.known_dtype(x), self.shape(x))
        return grad

    # ---------------------------------------------------------------- node emission
    def op(self, op_type: str, *inputs: Optional[str], outputs: int = 1, domain: str = "",
           **attrs: Any) -> Union[str, List[str]]:
        """Emit one node; return its output name (or the list when ``outputs`` > 1).

        A default-domain op is written as its entry of the op table (:data:`onnxgrad.optable.OPS`)
        says: in the form the model's opset wants, with its result's dtype and shape recorded.
        Other domains (a user's custom ops) are emitted as given."""
        spec = None
        if not domain:
            spec = OPS.get(op_type)
            if spec is None:
                raise OpTableError(
                    f"the emitter's op table (onnxgrad/optable.py, OPS) has no entry for {op_type!r}; add one "
                    "(its result dtype, shape rule and opset adapter) before a rule emits it")
            if not self.can_emit(op_type):
                raise GradientArgumentError(
                    f"the backward nodes {self.scope + '/...'!r} need the ONNX operator {op_type}, which opset "
                    f"{self.opset} does not define; convert the model to a newer opset "
                    "(onnx.version_converter.convert_version)")
            if spec.adapt is not None:
                adapted = spec.adapt(self, list(inputs), attrs)
                if isinstance(adapted, str):  # the adapter emitted a stand-in itself
                    return adapted
                inputs, attrs = tuple(adapted[0]), adapted[1]
        outs = [self.fresh(op_type) for _ in range(outputs)]
        names = [i or "" for i in inputs]
        self.add_node(op_type, names, outs, outs[0], attrs, domain)
        if spec is not None:
            self._record_results(op_type, names, outs, attrs)
        else:
            et = first_typed(self, [i for i in names if i], attrs)
            for o in outs:
                if et:
                    self._types[o] = et
        return outs if outputs > 1 else outs[0]

    def _record_results(self, op_type: str, inputs: List[str], outputs: List[str], attrs: Dict[str, Any]) -> None:
        """Record what the op table knows of the results of ``op_type`` on ``inputs``."""
        spec = OPS[op_type]
        if spec.results is not None:  # one type per output (a subgraph's outputs, a sequence)
            for o, info in zip(outputs, spec.results(self, inputs, attrs, len(outputs))):
                if o and info.elem_type:
                    self.set_info(o, info.elem_type, info.shape)
                    if info.sequence:
                        self._sequences.add(o)
            return
        et = spec.dtype(self, [i for i in inputs if i], attrs)
        for o, t in zip(outputs, et if isinstance(et, list) else [et] * len(outputs)):
            if o and t:
                self._types[o] = t
        if spec.shape is not None:
            shape = spec.shape(self, inputs, attrs)
            if shape is not None:
                self._shapes[outputs[0]] = shape

    def typed_node(self, op_type: str, inputs: List[str], outputs: List[str], name: str,
                   attrs: Dict[str, Any]) -> NodeProto:
        """:meth:`add_node` with output names of the caller's choosing, typed by the op table (a
        node with subgraphs: its results' types come from the subgraphs' outputs)."""
        node = self.add_node(op_type, inputs, outputs, name, attrs)
        self._record_results(op_type, inputs, outputs, attrs)
        return node

    def replace_forward(self, op: Op, node: NodeProto) -> None:
        """Put ``node`` in place of the forward node ``op`` (the forward pass then runs it instead):
        it must produce every output of ``op``, with the same values; its other outputs are typed by
        the op table. For a node that must also record what its backward pass needs (a Loop
        emitting its per-iteration values) rather than running the forward work twice."""
        assert set(op.outputs) <= set(node.output), "a replacement keeps the node's outputs"
        self.index.nodes[op.index].CopyFrom(node)
        new = ["" if o in op.outputs else o for o in node.output]
        self._record_results(node.op_type, list(node.input), new,
                             {a.name: helper.get_attribute_value(a) for a in node.attribute})

    def can_emit(self, op_type: str) -> bool:
        """Whether the model's opset defines the default-domain op ``op_type`` (not deprecated)."""
        known = self._defined.get(op_type)
        if known is None:
            try:
                known = not onnx.defs.get_schema(op_type, self.opset, "").deprecated
            except onnx.defs.SchemaError:
                known = False
            self._defined[op_type] = known
        return known

    def emit(self, op_type: str, *inputs: Optional[str], **attrs: Any) -> str:
        """One node of the default-domain op ``op_type`` (named at run time): its output's name."""
        return self.op(op_type, *inputs, **attrs)  # type: ignore[return-value]

    def emit_outputs(self, op_type: str, n: int, *inputs: Optional[str], **attrs: Any) -> List[str]:
        """One node of ``op_type`` with ``n`` outputs: their names."""
        return self.op(op_type, *inputs, outputs=n, **attrs)  # type: ignore[return-value]

    def add_node(self, op_type: str, inputs: List[str], outputs: List[str], name: str,
                 attrs: Dict[str, Any], domain: str = "") -> NodeProto:
        """Append a node as given (names already chosen, no type tracking)."""
        node = _fill_node(self._sink.add() if self._sink is not None else NodeProto(), op_type, inputs, outputs,
                          name, domain, attrs)
        self.nodes.append(node)
        # the same, as Python values: reading them back from protobuf costs more than keeping them
        self.node_io.append((inputs, outputs, bool(attrs) and any(
            isinstance(v, onnx.GraphProto) or (isinstance(v, list) and any(isinstance(x, onnx.GraphProto) for x in v))
            for v in attrs.values())))
        return node

    def add_proto(self, node: NodeProto) -> NodeProto:
        """Append a copy of a ready-made node (a nested emitter's, or a function body's)."""
        copy = self._sink.add() if self._sink is not None else NodeProto()
        copy.CopyFrom(node)
        self.nodes.append(copy)
        graph_kinds = (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        self.node_io.append((list(node.input), list(node.output), any(a.type in graph_kinds for a in node.attribute)))
        return copy

    def __getattr__(self, op_type: str) -> Callable[..., str]:
        """``g.Mul(a, b)``: :meth:`op` for the op type named by the attribute."""
        if not op_type[:1].isupper():
            raise AttributeError(op_type)

        def emit(*inputs: Optional[str], **attrs: Any) -> str:
            return self.op(op_type, *inputs, **attrs)  # type: ignore[return-value]

        emit.__name__ = op_type
        self.__dict__[op_type] = emit  # later look-ups find it without calling __getattr__
        return emit

    # ---------------------------------------------------------------- constants
    def const(self, value: Any, like: Optional[str] = None, dtype: Optional[int] = None) -> str:
        """A constant tensor with the element type of ``like`` (or ``dtype``); cached."""
        if dtype is None:
            dtype = self.dtype(like) if like is not None else TensorProto.FLOAT
        kind = type(value)
        # 0.0 and -0.0 compare (and hash) equal, NaN never: those take the array path below
        scalar = (dtype, kind, value) if kind is int or (kind is float and value == value and value != 0.0) else None
        if scalar is not None:
            cached = self._scalar_consts.get(scalar)
            if cached is not None:
                return cached
        arr = np.asarray(value)
        bf16 = dtype == TensorProto.BFLOAT16
        if not bf16:
            arr = arr.astype(np_dtype(dtype))
        key = (dtype, arr.astype(np.float32).tobytes() if bf16 else arr.tobytes(), tuple(arr.shape))
        cached = self._const_cache.get(key)
        if cached is not None:  # before building the TensorProto: most constants repeat
            if scalar is not None:
                self._scalar_consts[scalar] = cached
            return cached
        if bf16:
            tensor = helper.make_tensor("value", dtype, arr.shape, arr.astype(np.float32).ravel().tolist())
        else:
            tensor = numpy_helper.from_array(arr, "value")
        saved, self.scope = self.scope, self.prefix  # constants are shared by every scope
        name = self.fresh("Const")
        self.scope = saved
        self.add_node("Constant", [], [name], name, {"value": tensor})
        self._types[name] = dtype
        self._shapes[name] = tuple(arr.shape)
        self._const_cache[key] = name
        if scalar is not None:
            self._scalar_consts[scalar] = name
        self._const_values[name] = arr
        return name

    def ints(self, values: Union[Sequence[int], np.ndarray]) -> str:
        """A 1-D int64 constant (shapes, axes, pads, starts...)."""
        if type(values) in (list, tuple) and all(type(v) is int for v in values):
            # most calls (axes, shapes): found by value, as const() finds a Python scalar
            key = (TensorProto.INT64, tuple, tuple(values))
            cached = self._scalar_consts.get(key)
            if cached is None:
                cached = self._scalar_consts[key] = self.const(np.asarray(values, dtype=np.int64),
                                                               dtype=TensorProto.INT64)
            return cached
        return self.const(np.asarray(list(values), dtype=np.int64), dtype=TensorProto.INT64)

    def scalar_int(self, value: int) -> str:
        """A 0-D int64 constant."""
        if type(value) is int and -(1 << 63) <= value < (1 << 63):
            return self.const(value, dtype=TensorProto.INT64)  # found by value when made before
        return self.const(np.asarray(value, dtype=np.int64), dtype=TensorProto.INT64)

    # ---------------------------------------------------------------- shape helpers
    def shape_of(self, x: str) -> str:
        """Shape(x) as an int64 tensor: a constant when static, a Shape node otherwise."""
        static = self.static_shape(x)
        if static is not None:
            return self.ints(static)
        if x not in self._shape_of_cache:
            self._shape_of_cache[x] = self.op("Shape", x)  # type: ignore[assignment]
        return self._shape_of_cache[x]

    def constant_of_shape(self, shape: str, value: float, like: str) -> str:
        """A tensor filled with ``value`` of ``like``'s dtype, shape given as an int64 tensor."""
        return self.op("ConstantOfShape", shape, value=self._scalar_tensor(value, self.dtype(like)))  # type: ignore[return-value]

    def _scalar_tensor(self, value: float, dtype: int) -> TensorProto:
        if dtype == TensorProto.BFLOAT16:
            return helper.make_tensor("value", dtype, [1], [float(value)])
        return numpy_helper.from_array(np.array([value], dtype=np_dtype(dtype)), "value")

    def zeros_like(self, x: str) -> str:
        """Zeros with ``x``'s shape and dtype (recorded so rules may skip work on them)."""
        z = self.constant_of_shape(self.shape_of(x), 0.0, like=x)
        self._shapes[z] = self.shape(x)
        self.zeros.add(z)
        return z

    def carries(self, grad: Optional[str]) -> "TypeGuard[str]":
        """True for a gradient that may be nonzero: neither absent nor zero-filled by the engine."""
        return not self.is_zero(grad)

    def is_zero(self, grad: Optional[str]) -> bool:
        """True for an absent output gradient or one the engine zero-filled: rules may skip it."""
        return grad is None or grad in self.zeros

    def ones_like(self, x: str) -> str:
        """Ones with ``x``'s shape and dtype."""
        static = self.static_shape(x)
        if static is not None and int(np.prod(static)) <= 16:
            return self.const(np.ones(static), like=x)
        o = self.constant_of_shape(self.shape_of(x), 1.0, like=x)
        self._shapes[o] = self.shape(x)
        return o

    def reshape(self, x: str, shape: Union[str, Sequence[int]]) -> str:
        """Reshape to an int64 tensor or a static list of ints (0 copies, -1 infers)."""
        return self.Reshape(x, shape if isinstance(shape, str) else self.ints(shape))

    def reshape_like(self, x: str, like: str) -> str:
        """``x`` reshaped to ``like``'s shape (``x`` itself when they are statically equal)."""
        if self.shape(x) is not None and self.shape(x) == self.shape(like) and self.static_shape(like) is not None:
            return x
        return self.reshape(x, self.shape_of(like))

    # ---------------------------------------------------------------- helpers over the op table
    def reduce(self, op_type: str, x: str, axes: Optional[Axes], keepdims: bool = True) -> str:
        """ReduceXxx over ``axes`` (None = all; empty = none, ``x`` itself)."""
        kd = 1 if keepdims else 0
        if axes is None:
            return self.op(op_type, x, keepdims=kd)  # type: ignore[return-value]
        axes = [int(a) for a in axes]
        if not axes:
            return x
        return self.op(op_type, x, axes=axes, keepdims=kd)  # type: ignore[return-value]

    def reduce_sum(self, x: str, axes: Optional[Axes], keepdims: bool = True) -> str:
        """ReduceSum over ``axes`` (None = all; empty = none, ``x`` itself)."""
        return self.reduce("ReduceSum", x, axes, keepdims)

    def squeeze(self, x: str, axes: Axes) -> str:
        """Drop the size-1 ``axes`` (none: ``x`` itself)."""
        if not axes:
            return x
        return self.Squeeze(x, axes=list(axes))

    def unsqueeze(self, x: str, axes: Axes) -> str:
        """Insert size-1 ``axes`` (none: ``x`` itself)."""
        if not axes:
            return x
        return self.Unsqueeze(x, axes=list(axes))

    def split(self, x: str, sizes: Sequence[int], axis: int) -> List[str]:
        """Split into pieces of static ``sizes`` along ``axis``."""
        return self.op("Split", x, outputs=len(sizes), axis=axis, split=list(sizes))  # type: ignore[return-value]

    def slice(self, x: str, starts: Sequence[int], ends: Sequence[Optional[int]], axes: Sequence[int],
              steps: Optional[Sequence[int]] = None) -> str:
        """Static Slice; an end of None runs to the end of its axis. Steps other than 1 need opset 10.
        ``x`` itself when the slice keeps every axis whole (a node less, which counts on small models)."""
        stops = [END if e is None else int(e) for e in ends]
        if steps is None or all(s == 1 for s in steps):
            shape = self.static_shape(x)
            if shape is not None and all(b == 0 and e >= shape[a] for b, e, a in zip(starts, stops, axes)):
                return x
        if steps is not None and all(s == 1 for s in steps) and self.opset < 10:
            steps = None
        return self.Slice(x, starts=list(starts), ends=stops, axes=list(axes),
                          steps=None if steps is None else list(steps))

    def transpose(self, x: str, perm: Sequence[int]) -> str:
        """Transpose by ``perm`` (``x`` itself for the identity permutation)."""
        perm = [int(p) for p in perm]
        if perm == sorted(perm):
            return x
        return self.Transpose(x, perm=perm)

    def gemm(self, a: str, b: str, alpha: float = 1.0, trans_a: bool = False, trans_b: bool = False) -> str:
        """``alpha * op(a) @ op(b)`` for matrices, ``op`` transposing when asked; one Gemm node."""
        return self.Gemm(a, b, alpha=None if alpha == 1.0 else float(alpha),
                         transA=1 if trans_a else None, transB=1 if trans_b else None)

    def where(self, cond: str, a: str, b: str) -> str:
        """``Where(cond, a, b)`` (kept for rules written against it; ``g.Where`` is the same)."""
        return self.Where(cond, a, b)

    def cast(self, x: str, dtype: int) -> str:
        """Cast ``x`` to element type ``dtype`` (no-op if already equal)."""
        if self.known_dtype(x) == dtype:
            return x
        return self.Cast(x, to=dtype)

    def cast_like(self, x: str, like: str) -> str:
        """Cast ``x`` to ``like``'s element type (no-op if already equal)."""
        to = self.dtype(like)
        if self.info(x).elem_type == to:
            return x
        return self.Cast(x, to=to)

    # ---------------------------------------------------------------- built from several ops (composites.py)
    sum_to = composites.sum_to
    sum_to_shape = composites.sum_to_shape
    scatter_nd_add = composites.scatter_nd_add
    scatter_elements_add = composites.scatter_elements_add
    scatter_flat = composites.scatter_flat
    pad = composites.pad
    log_softmax = composites.log_softmax

    # ---------------------------------------------------------------- constants of the forward graph
    def constant_value(self, name: Optional[str]) -> Optional[np.ndarray]:
        """The value of an initializer or Constant output (axes, pads, starts...), else None."""
        if not name:
            return None
        if name in self._const_values:
            return self._const_values[name]
        for t in self.index.graph.initializer:
            if t.name == name and t.data_location != TensorProto.EXTERNAL:
                return numpy_helper.to_array(t)
        p = self.index.producer.get(name)
        if p is not None and self.index.nodes[p].op_type == "Constant":
            attrs = {a.name: helper.get_attribute_value(a) for a in self.index.nodes[p].attribute}
            if "value" in attrs:
                return numpy_helper.to_array(attrs["value"])
            for key in ("value_ints", "value_int", "value_floats", "value_float"):
                if key in attrs:
                    return np.asarray(attrs[key])
        return None

    def dims(self, x: str, axes: Axes) -> str:
        """The dims of ``x`` at ``axes`` as a 1-D int64 tensor (a constant when they are static)."""
        s = self.shape(x)
        if s is not None and all(isinstance(s[a], int) for a in axes):
            return self.ints([s[a] for a in axes])  # type: ignore[misc]
        return self.Gather(self.shape_of(x), self.ints(axes), axis=0)

    def is_float(self, name: str) -> bool:
        t = self._types[name] if name in self._types else self.index.tensor_info(name).elem_type
        return t in FLOAT_TYPES
