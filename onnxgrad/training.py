"""Training steps in plain ONNX: loss, gradients and an optimizer update in one model.

:func:`training_step` turns a model into its *step model*: one standard-ONNX graph (default
domain only, at the model's own opset) that any inference runtime runs. Its inputs are the batch,
every trained parameter (the selected initializers become graph inputs), the optimizer state and
the learning rate; its outputs are the loss, the updated parameters and the updated state. A
training loop feeds each step's updated values back as the next step's inputs:

>>> import onnxgrad.training as tr
>>> step = tr.training_step("net.onnx", loss_fn="cross_entropy", target="labels",
...                         optimizer="adamw", lr=1e-3)                     # doctest: +SKIP
>>> trainer = tr.Trainer(step.model, step.initial_state)                    # doctest: +SKIP
>>> for x, y in batches:                                                    # doctest: +SKIP
...     loss = trainer.step({"x": x, "labels": y})
>>> tr.save_trained("net.onnx", trainer.state(), "net.trained.onnx")        # doctest: +SKIP

Optimizers follow ``torch.optim`` exactly (SGD with momentum, dampening and Nesterov, Adam's
bias correction and eps placement, AdamW's decoupled weight decay) and
``torch.nn.utils.clip_grad_norm_`` clips by the global norm before the update, so a step model
reproduces a PyTorch training run.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import zipfile
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import onnx
from onnx import ModelProto, TensorProto, helper, numpy_helper

from .api import append_gradients
from .emitter import Emitter, np_dtype
from .errors import GradientArgumentError, ModelReadError, OutputWriteError
from .graph import FLOAT_TYPES, GraphIndex, subgraph_outer_names
from .loading import ModelLike, load_model
from .params import select_parameters, without
from .tensorinfo import Dim, TensorInfo
from .validation import check_gradient_model

#: Loss builders for models that end in predictions or logits (``torch.nn.functional`` names).
LOSS_FUNCTIONS = ("mse", "cross_entropy", "bce_with_logits", "l1")
#: Optimizer names: ``torch.optim.SGD`` without and with momentum, ``Adam`` and ``AdamW``.
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")
#: Key of the step model's metadata entry describing its interface (JSON).
METADATA_KEY = "onnxgrad.training"
#: Parameter dtypes ``mixed_precision`` trains through float32 master weights.
HALF_TYPES = frozenset({TensorProto.FLOAT16, TensorProto.BFLOAT16})
#: Selector meaning "every trainable parameter" (float initializers but BatchNorm statistics).
PARAMS = "@params"


@dataclass(frozen=True)
class Optimizer:
    """An optimizer with ``torch.optim``'s hyperparameters and defaults.

    ``name``: ``"sgd"``, ``"momentum"`` (SGD with ``momentum``, ``dampening``, ``nesterov``),
    ``"adam"`` or ``"adamw"`` (``betas``, ``eps``, ``amsgrad``: the denominator uses the largest
    second moment seen so far). ``weight_decay`` None means torch's default:
    0, or 0.01 for AdamW. Weight decay is L2 added to the gradient except for AdamW, where it
    shrinks the parameter directly (decoupled).
    """

    name: str = "sgd"
    weight_decay: Optional[float] = None
    momentum: float = 0.9
    dampening: float = 0.0
    nesterov: bool = False
    betas: Tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    amsgrad: bool = False

    @property
    def decay(self) -> float:
        """The weight decay in force (torch's default when none was given)."""
        if self.weight_decay is not None:
            return float(self.weight_decay)
        return 0.01 if self.name == "adamw" else 0.0

    def validate(self) -> "Optimizer":
        """Return ``self`` or raise :class:`GradientArgumentError` naming the bad hyperparameter."""
        if self.name not in OPTIMIZERS:
            raise GradientArgumentError(f"unknown optimizer {self.name!r}; choose one of {', '.join(OPTIMIZERS)}")
        if len(tuple(self.betas)) != 2:
            raise GradientArgumentError(f"optimizer {self.name}: betas must be two numbers, got {self.betas!r}")
        b1, b2 = self.betas
        checks = [(self.decay >= 0, f"weight_decay must be >= 0, got {self.decay}"),
                  (0 <= self.momentum, f"momentum must be >= 0, got {self.momentum}"),
                  (0 <= self.dampening <= 1, f"dampening must be in [0, 1], got {self.dampening}"),
                  (not self.nesterov or (self.momentum > 0 and self.dampening == 0),
                   "nesterov needs momentum > 0 and dampening 0 (as in torch.optim.SGD)"),
                  (0 <= b1 < 1 and 0 <= b2 < 1, f"betas must be in [0, 1), got {self.betas}"),
                  (self.eps >= 0, f"eps must be >= 0, got {self.eps}"),
                  (not self.amsgrad or self.name in ("adam", "adamw"), "amsgrad is an option of adam and adamw")]
        for ok, message in checks:
            if not ok:
                raise GradientArgumentError(f"optimizer {self.name}: {message}")
        return self

    def state_names(self) -> Tuple[str, ...]:
        """Per-parameter state tensors, as torch.optim names them in ``optimizer.state``."""
        if self.name in ("adam", "adamw"):
            return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())
        return {"sgd": (), "momentum": ("momentum_buffer",)}[self.name]


@dataclass
class TrainingStep:
    """What :func:`training_step` built.

    ``model``: the step model. ``loss``: its loss output. ``batch``: the inputs fed each step
    (data, targets). ``params``: trained parameters, ``state``: optimizer state inputs (the
    ``step`` count, then per-parameter tensors), ``lr``: the learning-rate input (a scalar of the
    loss dtype, float32 with mixed precision; the ``lr`` given is recorded in the metadata as the
    default). ``updates`` maps each parameter and state input to the output holding its value
    after the step. ``initial_state``: the starting value of every parameter and state input
    (see :func:`save_state`).
    """

    model: ModelProto
    loss: str
    batch: List[str]
    params: List[str]
    state: List[str]
    lr: str
    updates: Dict[str, str]
    initial_state: Dict[str, np.ndarray] = field(repr=False, default_factory=dict)


# ------------------------------------------------------------------------------------ selection
def select_params(index: GraphIndex, selectors: Optional[Sequence[str]] = None,
                  exclude: Optional[Sequence[str]] = None) -> Tuple[List[str], Set[str]]:
    """The parameters to train, in initializer order, and those the user named exactly.

    ``selectors``: names, shell-style globs (``fc.*``) or ``@params`` (the default): the float
    initializers among :func:`onnxgrad.parameters` (so never BatchNorm running statistics, which
    are not trained by gradients). A glob or ``@params`` picks among those; an exact name may be
    any float initializer. ``exclude``: globs removed from the selection (frozen parameters).
    Unselected initializers stay constants.
    """
    floats = [t.name for t in index.graph.initializer if t.data_type in FLOAT_TYPES]
    trainable = [n for n in select_parameters(index) if n in index.initializers]
    chosen: Set[str] = set()
    exact: Set[str] = set()
    for sel in selectors or [PARAMS]:
        if sel == PARAMS:
            chosen.update(trainable)
        elif any(c in sel for c in "*?["):
            hits = [n for n in trainable if fnmatch.fnmatchcase(n, sel)]
            if not hits:
                raise GradientArgumentError(f"parameter pattern {sel!r} matches no trainable float initializer")
            chosen.update(hits)
        elif sel in floats:
            chosen.add(sel)
            exact.add(sel)
        else:
            kind = "an initializer that is not float" if sel in index.initializers \
                else "not an initializer of the main graph"
            raise GradientArgumentError(f"parameter {sel!r} is {kind}; trainable parameters are float initializers")
    chosen = set(without(sorted(chosen), exclude))
    names = [n for n in floats if n in chosen]
    if not names:
        raise GradientArgumentError("no parameter to train: the selection (after --exclude) is empty")
    return names, exact & chosen


def _float_tensor(index: GraphIndex, name: str, what: str) -> TensorInfo:
    """What is known of ``name``, a float tensor of the main graph (else a clear error naming ``what``)."""
    if not index.exists(name):
        raise GradientArgumentError(f"{what} {name!r} is not a tensor of the model's main graph")
    info = index.tensor_info(name)
    if not info.is_float:
        raise GradientArgumentError(f"{what} {name!r} is not a float tensor")
    return info


# ------------------------------------------------------------------------------------ losses
def _float_outputs(index: GraphIndex) -> List[str]:
    return [o for o in index.graph_outputs if index.tensor_info(o).is_float]


def _add_loss(proto: ModelProto, loss_fn: str, prediction: Optional[str], target: str, ignore_index: int) -> str:
    """Append ``loss = loss_fn(prediction, target)`` (mean reduction, torch's formulas) to the
    graph, with ``target`` a new graph input unless the model already has that input."""
    if loss_fn not in LOSS_FUNCTIONS:
        raise GradientArgumentError(f"unknown loss function {loss_fn!r}; choose one of {', '.join(LOSS_FUNCTIONS)}")
    index = GraphIndex(proto)
    if prediction is None:
        candidates = _float_outputs(index)
        if len(candidates) != 1:
            raise GradientArgumentError(
                f"the model has {len(candidates)} float outputs ({', '.join(candidates) or 'none'}); name the "
                "one the loss compares with its target (prediction=..., --prediction)")
        prediction = candidates[0]
    info = _float_tensor(index, prediction, "prediction")
    g = Emitter(index, _unique(index, "loss"), sink=proto.graph.node)
    shape = info.shape
    if loss_fn == "cross_entropy":
        if shape is None or len(shape) < 2:
            raise GradientArgumentError(
                f"cross_entropy needs logits of rank >= 2 ([batch, classes, ...]); {prediction!r} has shape "
                f"{'unknown' if shape is None else list(shape)}")
        if len(shape) > 2 and index.opset < 13:
            raise GradientArgumentError("cross_entropy over logits of rank > 2 needs opset 13 or newer "
                                        "(LogSoftmax takes one axis only from opset 13)")
        target_type: int = TensorProto.INT64
        target_shape: Optional[Tuple[Dim, ...]] = (shape[0],) + tuple(shape[2:])
    else:
        target_type, target_shape = info.elem_type, shape
    if index.exists(target):
        if target not in index.graph_inputs:
            raise GradientArgumentError(f"target {target!r} names an existing tensor that is not a graph input; "
                                        "choose a new name for the target input")
        if index.tensor_info(target).elem_type != target_type:
            raise GradientArgumentError(f"target {target!r} must be {TensorProto.DataType.Name(target_type).lower()} "
                                        f"for {loss_fn}")
    else:
        dims = None if target_shape is None else list(target_shape)
        proto.graph.input.append(helper.make_tensor_value_info(target, target_type, dims))
        g.set_info(target, target_type, target_shape)

    x, t = prediction, target
    if loss_fn == "mse":
        err = g.Sub(x, t)
        value = g.ReduceMean(g.Mul(err, err), keepdims=0)
    elif loss_fn == "l1":
        value = g.ReduceMean(g.Abs(g.Sub(x, t)), keepdims=0)
    elif loss_fn == "bce_with_logits":
        # softplus(x) - x t = -[t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))], stable for any x
        value = g.ReduceMean(g.Sub(g.Softplus(x), g.Mul(x, t)), keepdims=0)
    else:
        # -log softmax(x)[target] (class axis 1), averaged over the targets that are not ignore_index
        kept = g.Not(g.Equal(t, g.const(ignore_index, like=t)))
        safe = g.Where(kept, t, g.const(0, like=t))
        log_p = g.LogSoftmax(x, axis=1)
        if index.opset >= 11:
            picked = g.squeeze(g.GatherElements(log_p, g.unsqueeze(safe, [1]), axis=1), [1])
        else:  # no GatherElements yet: select with a one-hot mask
            one_hot = g.OneHot(safe, g.dims(x, [1]), g.const([0.0, 1.0], like=x), axis=1)
            picked = g.reduce_sum(g.Mul(one_hot, log_p), [1], keepdims=False)
        weight = g.Cast(kept, to=info.elem_type)
        value = g.Div(g.Neg(g.reduce_sum(g.Mul(picked, weight), None, keepdims=False)),
                      g.reduce_sum(weight, None, keepdims=False))
    loss = g.fresh("value") if index.exists("loss") else "loss"
    g.add_node("Identity", [value], [loss], loss, {})
    proto.graph.output.insert(0, helper.make_tensor_value_info(loss, info.elem_type, []))
    return loss


# ------------------------------------------------------------------------------------ optimizers
class _Update:
    """Writes the optimizer's formulas for each parameter: torch.optim's ``step()``."""

    def __init__(self, g: Emitter, opt: Optimizer, lr: str, step: str) -> None:
        self.g, self.opt, self.lr = g, opt, lr
        self.t = g.Add(step, g.const(1, like=step))  # this step's number, 1 on the first step
        self.step = step
        self._per_dtype: Dict[Tuple[str, int], str] = {}

    def _as(self, what: str, tensor: str, dtype: int) -> str:
        """``tensor`` (lr, t) cast once to each parameter dtype that needs it."""
        key = (what, dtype)
        if key not in self._per_dtype:
            self._per_dtype[key] = tensor if self.g.dtype(tensor) == dtype else self.g.Cast(tensor, to=dtype)
        return self._per_dtype[key]

    def apply(self, p: str, grad: str, state: Sequence[str]) -> Tuple[str, List[str]]:
        """The parameter and its state after one step."""
        g, opt = self.g, self.opt
        c = lambda v: g.const(v, like=p)  # noqa: E731
        lr = self._as("lr", self.lr, g.dtype(p))
        decay = opt.decay
        if opt.name == "adamw" and decay:
            p_in = g.Mul(p, g.Sub(c(1.0), g.Mul(lr, c(decay))))  # p (1 - lr wd), before the Adam step
        else:
            p_in = p
            if decay:
                grad = g.Add(grad, g.Mul(p, c(decay)))
        if opt.name == "sgd":
            return g.Sub(p_in, g.Mul(lr, grad)), []
        if opt.name == "momentum":
            (buf,) = state
            # torch starts the buffer at the first gradient itself: no dampening on step 1
            keep = c(1.0 - opt.dampening)
            if opt.dampening:
                keep = g.where(g.Equal(self.step, g.const(0, like=self.step)), c(1.0), keep)
            new_buf = g.Add(g.Mul(buf, c(opt.momentum)), g.Mul(grad, keep))
            direction = g.Add(grad, g.Mul(new_buf, c(opt.momentum))) if opt.nesterov else new_buf
            return g.Sub(p_in, g.Mul(lr, direction)), [new_buf]
        m, v = state[:2]
        b1, b2 = opt.betas
        new_m = g.Add(g.Mul(m, c(b1)), g.Mul(grad, c(1.0 - b1)))
        new_v = g.Add(g.Mul(v, c(b2)), g.Mul(g.Mul(grad, grad), c(1.0 - b2)))
        new_state = [new_m, new_v]
        if opt.amsgrad:
            new_state.append(g.Max(state[2], new_v))
        step_size, sqrt_correction2 = self._adam_scalars(p)
        denom = g.Add(g.Div(g.Sqrt(new_state[-1]), sqrt_correction2), c(opt.eps))
        return g.Sub(p_in, g.Mul(step_size, g.Div(new_m, denom))), new_state

    def _adam_scalars(self, p: str) -> Tuple[str, str]:
        """lr / (1 - beta1^t) and sqrt(1 - beta2^t): the same for every parameter of one dtype."""
        g, dtype = self.g, self.g.dtype(p)
        key = ("adam", dtype)
        if key not in self._per_dtype:
            c = lambda v: g.const(v, like=p)  # noqa: E731
            b1, b2 = self.opt.betas
            t = self._as("t", self.t, dtype)
            correction1 = g.Sub(c(1.0), g.Pow(c(b1), t))
            correction2 = g.Sub(c(1.0), g.Pow(c(b2), t))
            self._per_dtype[key] = g.Div(self._as("lr", self.lr, dtype), correction1)
            self._per_dtype[("adam_sqrt", dtype)] = g.Sqrt(correction2)
        return self._per_dtype[key], self._per_dtype[("adam_sqrt", dtype)]


def _clip(g: Emitter, grads: List[str], max_norm: float, dtype: int) -> List[str]:
    """torch.nn.utils.clip_grad_norm_: scale every gradient by min(1, max_norm / (norm + 1e-6)),
    the norm being the 2-norm of all gradients together."""
    squares = [g.Cast(s, to=dtype) if g.dtype(s) != dtype else s
               for s in (g.ReduceSumSquare(gr, keepdims=0) for gr in grads)]
    total = g.Sqrt(squares[0] if len(squares) == 1 else g.Sum(*squares))
    one = g.const(1.0, dtype=dtype)
    coef = g.Min(g.Div(g.const(max_norm, dtype=dtype), g.Add(total, g.const(1e-6, dtype=dtype))), one)
    return [g.Mul(gr, g.cast_like(coef, gr)) for gr in grads]


# ------------------------------------------------------------------------------------ the step
def training_step(
    model: ModelLike,
    loss: Optional[str] = None,
    params: Optional[Union[str, Sequence[str]]] = None,
    optimizer: Union[str, Optimizer] = "sgd",
    lr: float = 1e-3,
    *,
    loss_fn: Optional[str] = None,
    target: str = "target",
    prediction: Optional[str] = None,
    ignore_index: int = -100,
    exclude: Optional[Union[str, Sequence[str]]] = None,
    weight_decay: Optional[float] = None,
    clip_grad_norm: Optional[float] = None,
    keep_outputs: bool = False,
    mixed_precision: bool = False,
    loss_scale: float = 1.0,
) -> TrainingStep:
    """Build the training step of ``model``: loss, gradients and optimizer update in one model.

    Args:
        model: an ``onnx.ModelProto`` (never modified) or the path of a ``.onnx`` file.
        loss: the scalar float tensor to minimize. Default: the model's only float output.
            Not with ``loss_fn``.
        params: what to train: names, globs (``"fc.*"``) or ``"@params"`` (default: every float
            initializer except BatchNorm running statistics). See :func:`select_params`.
        optimizer: ``"sgd"``, ``"momentum"``, ``"adam"``, ``"adamw"`` or an :class:`Optimizer`
            with hyperparameters (torch.optim's defaults otherwise).
        lr: the learning rate recorded as the step model's default (its metadata); the model
            takes the learning rate as an input each step, so schedules need no new model.
        loss_fn: build the loss instead: ``"mse"``, ``"l1"``, ``"bce_with_logits"`` (targets of the
            prediction's shape and dtype) or ``"cross_entropy"`` (logits ``[N, C, ...]``, int64
            class indices ``[N, ...]``), each the mean over elements as in torch.nn.functional.
        target: name of the target input ``loss_fn`` compares with (a new graph input, or an
            existing one).
        prediction: the tensor ``loss_fn`` reads. Default: the model's only float output.
        ignore_index: cross_entropy's target value that contributes nothing (torch's default
            -100); the mean is over the other targets.
        exclude: globs of parameters to keep frozen (constants).
        weight_decay: overrides the optimizer's weight decay.
        clip_grad_norm: clip the global gradient 2-norm to this value before the update.
        keep_outputs: also output the model's other outputs (e.g. the logits).
        mixed_precision: train float16/bfloat16 parameters through float32 master weights: the
            step model's parameter inputs and outputs, moments and update are float32, and the
            forward pass reads each parameter cast to its own dtype. Without it, half-precision
            parameters are updated in their own dtype (Adam's eps 1e-8 is then 0 in float16).
        loss_scale: multiply the loss by this before backpropagation and divide the gradients
            by it after (static loss scaling: keeps small float16 gradients from flushing to 0).

    Returns:
        A :class:`TrainingStep` (the model, its interface and the initial state).

    Raises:
        ValueError (:class:`~onnxgrad.errors.GradientArgumentError`): a bad argument.
        LookupError (:class:`~onnxgrad.errors.NoGradientError`): an op on the path from a
            parameter to the loss has no gradient rule.
    """
    opt = _checked_optimizer(optimizer, weight_decay, lr, clip_grad_norm, loss_scale)
    source = None if isinstance(model, ModelProto) else os.fspath(model)
    proto = load_model(model)
    original_outputs = [o.name for o in proto.graph.output]
    if loss_fn is not None:
        if loss is not None:
            raise GradientArgumentError("give either loss (a tensor of the model) or loss_fn (a loss to build), "
                                        "not both")
        loss = _add_loss(proto, loss_fn, prediction, target, ignore_index)
    index = GraphIndex(proto)
    loss = _resolve_loss(index, loss)
    chosen, exact = select_params(index, [params] if isinstance(params, str) else params,
                                  [exclude] if isinstance(exclude, str) else exclude)
    masters = _read_through_casts(proto, chosen) if mixed_precision else {}
    if masters:  # Cast nodes now read the half-precision parameters: index the changed graph
        index = GraphIndex(proto)

    # the model is private (load_model copied it) and already indexed: extended in place, not
    # copied, validated and shape-inferred again
    result = append_gradients(index, loss, [masters.get(p, p) for p in chosen], name="gradients",
                              grad_ys=None if loss_scale == 1 else float(loss_scale))
    named = [p for p, gname in zip(chosen, result.names) if gname is None and p in exact]
    if named:
        raise GradientArgumentError(f"the loss {loss!r} does not depend on parameter {named[0]!r}: it cannot be "
                                    "trained")
    trained = [(p, gname) for p, gname in zip(chosen, result.names) if gname is not None]
    if not trained:
        raise GradientArgumentError(f"the loss {loss!r} depends on none of the selected parameters")

    step_model = result.model
    infos = {t.name: t for t in step_model.graph.initializer}
    values = {p: _initializer_value(infos[p], source) for p, _ in trained}
    emitted = _append_update(step_model, loss, trained, set(masters), opt, clip_grad_norm, loss_scale)

    trained_names = {p for p, _ in trained}
    kept = [t for t in step_model.graph.initializer if t.name not in trained_names]
    del step_model.graph.initializer[:]
    step_model.graph.initializer.extend(kept)
    # a trained initializer that old exporters also list as an input is re-declared with the others
    inputs = [i for i in step_model.graph.input if i.name not in trained_names]
    del step_model.graph.input[:]
    step_model.graph.input.extend(inputs + emitted.inputs)
    outputs = [o for o in step_model.graph.output if o.name == loss or
               (keep_outputs and o.name in original_outputs)]
    outputs.sort(key=lambda o: o.name != loss)  # the loss first
    del step_model.graph.output[:]
    step_model.graph.output.extend(outputs + emitted.outputs)
    _prune(step_model)

    params_l = [p for p, _ in trained]
    carried = set(emitted.updates) | {emitted.lr}
    constants = {t.name for t in step_model.graph.initializer}  # inputs with a default (old exporters)
    batch = [i.name for i in step_model.graph.input if i.name not in carried and i.name not in constants]
    initial = {p: values[p].astype(emitted.zeros[p].dtype) for p in params_l}
    initial.update((s, emitted.zeros[s]) for s in emitted.state)
    meta = {"loss": loss, "batch": batch, "params": params_l, "state": emitted.state, "lr": emitted.lr,
            "updates": emitted.updates, "optimizer": opt.name, "hyperparameters": {
                "lr": lr, "weight_decay": opt.decay, "momentum": opt.momentum, "dampening": opt.dampening,
                "nesterov": opt.nesterov, "betas": list(opt.betas), "eps": opt.eps, "amsgrad": opt.amsgrad,
                "clip_grad_norm": clip_grad_norm,
                "mixed_precision": bool(masters), "loss_scale": loss_scale}}
    entry = step_model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    check_gradient_model(step_model)
    return TrainingStep(step_model, loss, batch, params_l, emitted.state, emitted.lr, emitted.updates, initial)


def _checked_optimizer(optimizer: Union[str, Optimizer], weight_decay: Optional[float], lr: float,
                       clip_grad_norm: Optional[float], loss_scale: float) -> Optimizer:
    """The optimizer to use, once every hyperparameter is known to be valid."""
    opt = Optimizer(optimizer) if isinstance(optimizer, str) else optimizer
    if weight_decay is not None:
        opt = replace(opt, weight_decay=weight_decay)
    opt.validate()
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise GradientArgumentError(f"lr must be a positive number, got {lr!r}")
    if clip_grad_norm is not None and not clip_grad_norm > 0:
        raise GradientArgumentError(f"clip_grad_norm must be positive, got {clip_grad_norm!r}")
    if isinstance(loss_scale, bool) or not isinstance(loss_scale, (int, float)) or not loss_scale > 0:
        raise GradientArgumentError(f"loss_scale must be a positive number, got {loss_scale!r}")
    return opt


@dataclass
class _Emitted:
    """What :func:`_append_update` added: new graph inputs (parameters, state, lr) and outputs,
    the state and lr input names, input -> updated output, and each parameter's and state
    input's zeros (their dtype and shape; the state's initial value)."""

    inputs: List[onnx.ValueInfoProto]
    outputs: List[onnx.ValueInfoProto]
    state: List[str]
    lr: str
    updates: Dict[str, str]
    zeros: Dict[str, np.ndarray]


def _append_update(model: ModelProto, loss: str, trained: Sequence[Tuple[str, str]], masters: Set[str],
                   opt: Optimizer, clip_grad_norm: Optional[float], loss_scale: float) -> _Emitted:
    """Append the optimizer step to the gradient model: unscaling, clipping, then ``opt``'s update
    of each parameter from its gradient, with an Identity output ``<input>/updated`` per parameter
    and state input. ``masters``: parameters whose float32 master weight is the input."""
    index = GraphIndex(model)
    g = Emitter(index, _unique(index, "optimizer"), sink=model.graph.node)
    dtype = index.tensor_info(loss).elem_type
    if masters and dtype in HALF_TYPES:
        dtype = TensorProto.FLOAT  # lr and the gradient norm in the master weights' precision
    lr, step = g.fresh("lr"), g.fresh("step")
    g.set_info(lr, dtype, ())
    g.set_info(step, TensorProto.INT64, ())
    dims = {t.name: list(t.dims) for t in model.graph.initializer}
    types = {t.name: TensorProto.FLOAT if t.name in masters else t.data_type for t in model.graph.initializer}
    grads = []
    for p, grad in trained:
        grad = g.Cast(grad, to=TensorProto.FLOAT) if p in masters else grad
        grads.append(grad if loss_scale == 1 else g.Div(grad, g.const(loss_scale, like=grad)))
        g.set_info(p, types[p], tuple(dims[p]))
    if clip_grad_norm is not None:
        grads = _clip(g, grads, float(clip_grad_norm), dtype)
    update = _Update(g, opt, lr, step)

    zeros: Dict[str, np.ndarray] = {step: np.zeros((), np.int64)}
    params, state = [], [step]
    new_values: List[Tuple[str, str]] = [(step, update.t)]
    for (p, _), grad in zip(trained, grads):
        params.append(p)
        zeros[p] = np.zeros(dims[p], np_dtype(types[p]))
        own = []
        for kind in opt.state_names():
            s = g.fresh(f"{kind}/{p}")
            g.set_info(s, types[p], tuple(dims[p]))
            own.append(s)
            zeros[s] = np.zeros_like(zeros[p])
        new_p, new_state = update.apply(p, grad, own)
        new_values.append((p, new_p))
        new_values.extend(zip(own, new_state))
        state.extend(own)

    outputs, updates = [], {}
    for name, value in new_values:
        g.scope = name
        out = g.fresh("updated")
        g.add_node("Identity", [value], [out], out, {})
        updates[name] = out
        outputs.append(helper.make_tensor_value_info(out, g.dtype(name), list(zeros[name].shape)))
    inputs = [helper.make_tensor_value_info(n, g.dtype(n), list(zeros[n].shape)) for n in params + state]
    inputs.append(helper.make_tensor_value_info(lr, dtype, []))
    return _Emitted(inputs, outputs, state, lr, updates, zeros)


def _read_through_casts(proto: ModelProto, params: Sequence[str]) -> Dict[str, str]:
    """For mixed precision: each float16/bfloat16 parameter ``p`` is read by the forward graph
    through ``Cast(p)`` to its dtype, so ``p`` itself can become a float32 master weight. Returns
    {p: the cast tensor}, whose gradient is the parameter's."""
    inits = {t.name: t for t in proto.graph.initializer}
    half = [p for p in params if inits[p].data_type in HALF_TYPES]
    if not half:
        return {}
    used = {n for node in proto.graph.node for n in list(node.input) + list(node.output)}
    used.update(inits)
    casts, masters = [], {}
    for p in half:
        name, k = f"{p}/half", 1
        while name in used:
            name, k = f"{p}/half_{k}", k + 1
        used.add(name)
        masters[p] = name
        casts.append(helper.make_node("Cast", [p], [name], name=name, to=inits[p].data_type))
    for node in proto.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute) and \
                set(subgraph_outer_names(node)) & set(masters):
            raise GradientArgumentError(f"mixed_precision: node {node.name or node.op_type!r} reads a half-precision "
                                        "parameter inside a subgraph; train it without mixed precision")
        for i, name in enumerate(node.input):
            if name in masters:
                node.input[i] = masters[name]
    old = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + old)
    return masters


def _resolve_loss(index: GraphIndex, loss: Optional[str]) -> str:
    if loss is None:
        candidates = [o for o in _float_outputs(index) if index.tensor_info(o).shape in ((), None)]
        if len(candidates) != 1:
            raise GradientArgumentError(
                "name the loss: the model has " + (f"several scalar float outputs ({', '.join(candidates)})"
                                                   if candidates else "no scalar float output")
                + "; or build one with loss_fn (--loss-fn) and a target")
        loss = candidates[0]
    info = _float_tensor(index, loss, "loss")
    if info.shape is not None and len(info.shape) != 0:
        raise GradientArgumentError(
            f"loss {loss!r} has shape {list(info.shape)}, not a scalar; reduce it in the model or use loss_fn")
    return loss


def _unique(index: GraphIndex, name: str) -> str:
    used = set(index.all_names())
    taken = lambda p: any(u == p or u.startswith(p + "/") for u in used)  # noqa: E731
    k, candidate = 1, name
    while taken(candidate):
        candidate = f"{name}_{k}"
        k += 1
    return candidate


def _initializer_value(tensor: TensorProto, source: Optional[str]) -> np.ndarray:
    """The value of an initializer, reading external data beside the source model if needed."""
    if tensor.data_location != TensorProto.EXTERNAL:
        return numpy_helper.to_array(tensor)
    if source is None:
        raise ModelReadError(f"initializer {tensor.name!r} is stored as external data; pass the model's path "
                             "so its weights can be read")
    copy = TensorProto()
    copy.CopyFrom(tensor)
    try:
        onnx.external_data_helper.load_external_data_for_tensor(copy, os.path.dirname(os.path.abspath(source)))
    except OSError as e:
        raise ModelReadError(f"cannot read the external weights of {tensor.name!r}: {e.strerror or e}") from None
    copy.data_location = TensorProto.DEFAULT
    del copy.external_data[:]
    return numpy_helper.to_array(copy)


def _prune(model: ModelProto) -> None:
    """Drop nodes and initializers no output depends on (outputs the step does not return)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if needed.isdisjoint(node.output):
            continue
        keep.append(node)
        needed.update(node.input)
        needed.update(subgraph_outer_names(node))
    del graph.node[:]
    graph.node.extend(reversed(keep))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)
    infos = [v for v in graph.value_info if v.name in needed]
    del graph.value_info[:]
    graph.value_info.extend(infos)


# ------------------------------------------------------------------------------------ state files
def save_state(path: str, state: Mapping[str, np.ndarray]) -> None:
    """Write parameters and optimizer state (keys: the step model's input names) atomically.

    ``.onnx``: a model whose graph has no inputs and no nodes, only the tensors as initializers
    and outputs, so that any ONNX runtime (onnxruntime-web in a browser too) reads the state by
    running it. Anything else: an ``.npz`` file (byte-reproducible).
    """
    from .modelio import write_model

    if path.lower().endswith(".onnx"):
        tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in state.items()]
        outputs = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in tensors]
        graph = helper.make_graph([], "training_state", [], outputs, tensors)
        write_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7,
                                      producer_name="onnxgrad"), path)
        return
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}")
    tmp = path + ".tmp"
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for key in state:
                buf = io.BytesIO()
                np.lib.format.write_array(buf, np.asarray(state[key]), allow_pickle=False)
                info = zipfile.ZipInfo(key + ".npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputWriteError(f"cannot write {path}: {e.strerror or e}") from None


def load_state(path: str) -> Dict[str, np.ndarray]:
    """Read a state file written by :func:`save_state`: ``.onnx`` (its initializers) or ``.npz``."""
    if path.lower().endswith(".onnx"):
        try:
            model = onnx.load(path)
            return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
        except Exception as e:  # OSError, protobuf's DecodeError, onnx's external-data errors
            raise ModelReadError(f"cannot read state file {path}: {e}") from None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise ModelReadError(f"cannot read state file {path}: {e}") from None


def interface(model: ModelProto) -> dict:
    """The step model's interface recorded by :func:`training_step` (loss, batch, params, state,
    lr, updates, optimizer)."""
    for entry in model.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    raise GradientArgumentError(f"the model has no {METADATA_KEY!r} metadata: it was not made by training_step")


def save_trained(model: ModelLike, state: Mapping[str, np.ndarray], path: str) -> ModelProto:
    """Write ``model`` with every initializer named in ``state`` replaced by its trained value.

    ``model`` is the original model (a path or ModelProto), ``state`` e.g. :meth:`Trainer.state`
    (optimizer state entries are ignored). Shapes and dtypes must match the initializers, but for
    float32 master weights of float16/bfloat16 initializers, which are rounded to them.
    Returns the written model.
    """
    from .modelio import write_model

    source = None if isinstance(model, ModelProto) else os.fspath(model)
    proto = load_model(model)
    for t in proto.graph.initializer:
        if t.name not in state:
            continue
        value = np.asarray(state[t.name])
        master = t.data_type in HALF_TYPES and value.dtype == np.float32  # mixed precision's float32 copy
        if tuple(value.shape) != tuple(t.dims) or not (master or value.dtype == np_dtype(t.data_type)):
            raise GradientArgumentError(
                f"trained value of {t.name!r} is {value.dtype}{list(value.shape)}, the model's initializer is "
                f"{TensorProto.DataType.Name(t.data_type).lower()}{list(t.dims)}")
        if master:  # rounded to the nearest value of the initializer's dtype
            t.CopyFrom(helper.make_tensor(t.name, t.data_type, list(t.dims), value.ravel().tolist()))
        else:
            t.CopyFrom(numpy_helper.from_array(value, t.name))
    write_model(proto, path, source=source)
    return proto


# ------------------------------------------------------------------------------------ the loop
class Trainer:
    """Runs a step model in onnxruntime, keeping parameters and state as ``OrtValue``s.

    Each step binds the batch from numpy and the previous step's output OrtValues as inputs (IO
    binding), so parameters and optimizer state never travel through numpy between steps.

    >>> trainer = Trainer(step.model, step.initial_state)   # doctest: +SKIP
    >>> loss = trainer.step({"x": x, "target": y})          # doctest: +SKIP
    """

    def __init__(self, model: ModelProto, state: Mapping[str, np.ndarray],
                 providers: Optional[Sequence[str]] = None, device: str = "cpu",
                 sess_options: Optional[object] = None) -> None:
        """``state``: the initial value of every parameter and state input (:attr:`TrainingStep.initial_state`
        or :func:`load_state`); ``providers``, ``sess_options``: onnxruntime's; ``device``: where the
        carried values live (``"cpu"``, ``"cuda"``...)."""
        import onnxruntime as ort

        self.meta = interface(model)
        self.device = device
        missing = [n for n in self.meta["updates"] if n not in state]
        if missing:
            raise GradientArgumentError(f"the initial state lacks {missing[0]!r} ({len(missing)} entries missing)")
        self.session = ort.InferenceSession(model.SerializeToString(), sess_options=sess_options,
                                            providers=list(providers or ["CPUExecutionProvider"]))
        self._lr_dtype = np_dtype(next(i.type.tensor_type.elem_type for i in model.graph.input
                                       if i.name == self.meta["lr"]))
        self.values = {n: ort.OrtValue.ortvalue_from_numpy(np.asarray(state[n], order="C"), device)
                       for n in self.meta["updates"]}
        self._carried = list(self.meta["updates"])

    def step(self, batch: Mapping[str, np.ndarray], lr: Optional[float] = None) -> float:
        """Run one step on ``batch`` (input name -> array); return the loss. ``lr``: this step's
        learning rate (default: the one given to :func:`training_step`)."""
        binding = self.session.io_binding()
        for name, value in batch.items():
            binding.bind_cpu_input(name, np.asarray(value, order="C"))
        rate = self.meta["hyperparameters"]["lr"] if lr is None else lr
        binding.bind_cpu_input(self.meta["lr"], np.asarray(rate, self._lr_dtype))
        for name in self._carried:
            binding.bind_ortvalue_input(name, self.values[name])
        binding.bind_output(self.meta["loss"], "cpu")
        for name in self._carried:
            binding.bind_output(self.meta["updates"][name], self.device)
        self.session.run_with_iobinding(binding)
        loss, *new = binding.get_outputs()
        self.values = dict(zip(self._carried, new))
        return float(loss.numpy())

    def state(self) -> Dict[str, np.ndarray]:
        """Parameters and optimizer state as numpy arrays (for :func:`save_state`, :func:`save_trained`)."""
        return {n: v.numpy() for n, v in self.values.items()}
