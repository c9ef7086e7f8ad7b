"""The ``onnxgrad train-step`` command: write a model's training step as one standard-ONNX model.

It is attached to the ``onnxgrad`` click group by importing this module from :mod:`onnxgrad.cli`;
errors reach the user through that group as one ``onnxgrad: error: ...`` line with the agreed
exit codes (2 usage, 3 unreadable model, 4 invalid model, 5 no gradient rule, 6 unwritable output).
"""

from __future__ import annotations

import os
import time
from typing import List, Optional, Sequence, Tuple

import click
from onnx import TensorProto

from .cli import CONTEXT_SETTINGS, debug_option, cli
from .errors import OutputWriteError
from .modelio import write_model
from .training import LOSS_FUNCTIONS, OPTIMIZERS, PARAMS, Optimizer, save_state, training_step


def _names(values: Sequence[str]) -> List[str]:
    """Comma-separated values of a repeatable option, as one list."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _outputs(model_path: str, out: Optional[str], state: Optional[str]) -> Tuple[str, str]:
    """The step model's and the initial state's paths, never the input model itself."""
    folder, base = os.path.split(model_path)
    stem = base[: -len(".onnx")] if base.lower().endswith(".onnx") else base
    out = out if out is not None else os.path.join(folder, f"{stem}.train.onnx")
    if state is None:
        state = (out[: -len(".onnx")] if out.lower().endswith(".onnx") else out) + ".npz"
    for path in (out, state):
        if os.path.exists(path) and os.path.exists(model_path) and os.path.samefile(path, model_path):
            raise OutputWriteError(f"refusing to overwrite the input model {model_path}; choose another output path")
    if os.path.abspath(out) == os.path.abspath(state):
        raise OutputWriteError(f"the step model and the state file would both be {out}; choose another --state")
    return out, state


def _betas(text: Optional[str]) -> Tuple[float, float]:
    if text is None:
        return Optimizer().betas
    parts = text.split(",")
    try:
        b1, b2 = (float(p) for p in parts)
    except ValueError:
        raise click.BadParameter(f"expected two numbers B1,B2, got {text!r}", param_hint="--betas") from None
    return b1, b2


@cli.command("train-step", context_settings=CONTEXT_SETTINGS)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--loss", "loss", default=None, metavar="NAME",
              help="The model's scalar loss tensor. Default: its only scalar float output.")
@click.option("--loss-fn", type=click.Choice(LOSS_FUNCTIONS), default=None,
              help="Build the loss from the model's prediction and a new target input instead (mean over "
                   "elements, as torch.nn.functional): mse, l1, bce_with_logits (targets shaped like the "
                   "prediction) or cross_entropy (logits [N, C, ...], int64 class indices [N, ...]).")
@click.option("--target", default=None, metavar="NAME", help="Name of the target input of --loss-fn (default: target).")
@click.option("--prediction", default=None, metavar="NAME",
              help="The tensor --loss-fn reads. Default: the model's only float output.")
@click.option("--ignore-index", type=int, default=-100, show_default=True,
              help="cross_entropy: the target value that contributes nothing (the mean is over the others).")
@click.option("--params", "params_opt", multiple=True, metavar="SELECTORS",
              help=f"Parameters to train: names, globs ('fc.*') or {PARAMS} (the default: every float "
                   "initializer except BatchNorm running statistics), comma-separated (repeatable).")
@click.option("--exclude", "exclude_opt", multiple=True, metavar="GLOBS",
              help="Parameters to keep frozen (constants), comma-separated globs (repeatable).")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default="sgd", show_default=True,
              help="torch.optim's SGD, SGD with momentum, Adam or AdamW, with torch's formulas.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True,
              help="Learning rate recorded as the default; the step model takes it as an input every step.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Weight decay (L2 on the gradient; decoupled for adamw). Default: torch's (0; adamw 0.01).")
@click.option("--momentum", type=click.FloatRange(min=0), default=0.9, show_default=True,
              help="Momentum of the momentum optimizer.")
@click.option("--dampening", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Dampening of the momentum optimizer.")
@click.option("--nesterov", is_flag=True, help="Nesterov momentum (momentum optimizer).")
@click.option("--betas", default=None, metavar="B1,B2", help="Adam/AdamW betas (default 0.9,0.999).")
@click.option("--eps", type=click.FloatRange(min=0), default=1e-8, show_default=True, help="Adam/AdamW eps.")
@click.option("--amsgrad", is_flag=True, help="Adam/AdamW's AMSGrad variant (the largest second moment so far).")
@click.option("--clip-grad-norm", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MAX",
              help="Clip the global gradient 2-norm to MAX before the update (torch.nn.utils.clip_grad_norm_).")
@click.option("--keep-outputs", is_flag=True, help="Also output the model's own outputs (e.g. the logits).")
@click.option("--mixed-precision", is_flag=True,
              help="Train float16/bfloat16 parameters through float32 master weights and moments.")
@click.option("--loss-scale", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Static loss scale: the loss is multiplied by it before backprop, the gradients divided after.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="Step model. Default: <stem>.train.onnx beside MODEL. Never the input itself.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False), default=None,
              help="Initial state (parameters, optimizer state): .npz, or .onnx (a model of initializers any ONNX "
                   "runtime reads by running it). Default: the output's name with .npz.")
@debug_option
def train_step(model_path: str, loss: Optional[str], loss_fn: Optional[str], target: Optional[str],
               prediction: Optional[str], ignore_index: int, params_opt: Sequence[str], exclude_opt: Sequence[str],
               optimizer: str, lr: float, weight_decay: Optional[float], momentum: float, dampening: float,
               nesterov: bool, betas: Optional[str], eps: float, amsgrad: bool, clip_grad_norm: Optional[float],
               keep_outputs: bool, mixed_precision: bool, loss_scale: float, out: Optional[str],
               state_path: Optional[str]) -> None:
    """Write MODEL's training step: loss, gradients and optimizer update in one ONNX model.

    The step model's inputs are the batch, every trained parameter, the optimizer state and the
    learning rate; its outputs are the loss, the updated parameters and the updated state (each
    named <input>/updated). Feed each step's updated values to the next step. The initial values
    of parameters and state are written to an .npz file beside it. Frozen parameters and
    BatchNorm running statistics stay constants inside the model.

    \b
    Examples:
      onnxgrad train-step models/transformer_block.onnx --optimizer adamw --lr 1e-3
      onnxgrad train-step classifier.onnx --loss-fn cross_entropy --target labels --exclude 'backbone.*'
      onnxgrad train-step models/small_cnn.onnx --exclude u --optimizer momentum --clip-grad-norm 1
    """
    start = time.perf_counter()
    if loss is not None and loss_fn is not None:
        raise click.UsageError("give either --loss (a tensor of the model) or --loss-fn (a loss to build), not both")
    if target is not None and loss_fn is None:
        raise click.UsageError("--target names the target input of --loss-fn; give --loss-fn too")
    if prediction is not None and loss_fn is None:
        raise click.UsageError("--prediction is the tensor --loss-fn reads; give --loss-fn too")
    out, state_out = _outputs(model_path, out, state_path)
    for path in (out, state_out):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder):
            raise OutputWriteError(f"output folder does not exist: {folder}")
    opt = Optimizer(optimizer, weight_decay=weight_decay, momentum=momentum, dampening=dampening,
                    nesterov=nesterov, betas=_betas(betas), eps=eps, amsgrad=amsgrad)
    step = training_step(model_path, loss=loss, params=_names(params_opt) or None, optimizer=opt, lr=lr,
                         loss_fn=loss_fn, target=target or "target", prediction=prediction, ignore_index=ignore_index,
                         exclude=_names(exclude_opt) or None, clip_grad_norm=clip_grad_norm,
                         keep_outputs=keep_outputs, mixed_precision=mixed_precision, loss_scale=loss_scale)
    save_state(state_out, step.initial_state)
    try:
        write_model(step.model, out, source=model_path)
    except BaseException:
        os.unlink(state_out)  # nothing is left behind when anything fails
        raise
    types = {i.name: i.type.tensor_type.elem_type for i in step.model.graph.input}
    rows = [[p, TensorProto.DataType.Name(types[p]).lower(),
             "[" + ", ".join(str(d) for d in step.initial_state[p].shape) + "]"] for p in step.params]
    click.echo(_table(["parameter", "dtype", "shape"], rows))
    size = sum(int(step.initial_state[p].size) for p in step.params)
    click.echo(f"inputs: {', '.join(step.batch)} (batch), {len(step.params)} parameters, {len(step.state)} state "
               f"tensors, {step.lr}; outputs: {step.loss}, then each parameter's and state tensor's /updated")
    click.echo(f"wrote {out} and {state_out} ({size} trained values, {opt.name}, "
               f"{time.perf_counter() - start:.2f} s)")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip() for cells in lines)
