"""The ``onnxgrad`` command line: ``differentiate``, ``check`` and ``ops``.

Every error onnxgrad raises on purpose reaches the user as one line on stderr
(``onnxgrad: error: ...``) with the exit code of its class (:mod:`onnxgrad.errors`); usage errors
exit 2; anything unexpected is one ``internal error`` line (exit 1) unless ``--debug`` asks for
the traceback. An output file is written atomically, only once everything succeeded.
"""

from __future__ import annotations

import os
import tempfile
import time
import traceback
from typing import Dict, List, NoReturn, Optional, Sequence, Tuple

import click
import numpy as np
from onnx import ModelProto, TensorProto

from . import __version__
from .api import AggregationMethod, GradientsResult, _gradients
from .errors import GradientArgumentError, ModelReadError, OnnxGradError, OutputWriteError
from .graph import FLOAT_TYPES, GraphIndex, load_model
from .modelio import write_model

PARAMS = "@params"
INPUTS = "@inputs"

AGGREGATION = {
    "add_n": AggregationMethod.ADD_N,
    "tree": AggregationMethod.EXPERIMENTAL_TREE,
    "accumulate_n": AggregationMethod.EXPERIMENTAL_ACCUMULATE_N,
}

_DEBUG_KEY = "onnxgrad.debug"
_CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class _Group(click.Group):
    """Turns exceptions into the one-line messages and exit codes the module docstring promises."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            _usage_exit(err, ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OnnxGradError as err:
            if ctx.meta.get(_DEBUG_KEY):
                traceback.print_exc()
            click.echo(f"onnxgrad: error: {_one_line(err)}", err=True)
            raise click.exceptions.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            click.echo("onnxgrad: interrupted", err=True)
            raise click.exceptions.Exit(130) from None
        except Exception as err:  # noqa: BLE001  (the last line of defence: never a bare traceback)
            if ctx.meta.get(_DEBUG_KEY):
                traceback.print_exc()
            click.echo(
                f"onnxgrad: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug)", err=True
            )
            raise click.exceptions.Exit(1) from None

    def make_context(self, info_name, args, parent=None, **extra) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            _usage_exit(err, None)


def _usage_exit(err: click.UsageError, ctx: Optional[click.Context]) -> NoReturn:
    """Usage errors, like every other error, are one line (exit 2)."""
    ctx = err.ctx or ctx
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    click.echo(f"onnxgrad: error: {_one_line(err.format_message())}{hint}", err=True)
    raise click.exceptions.Exit(err.exit_code) from None


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG_KEY] = True


def _debug_option(f):
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                        help="Show the full traceback when something fails.")(f)


@click.group(cls=_Group, context_settings=_CONTEXT)
@_debug_option
@click.version_option(__version__, prog_name="onnxgrad")
def cli() -> None:
    """tf.gradients for ONNX models: append the backward pass as standard ONNX nodes.

    \b
    Examples:
      onnxgrad differentiate model.onnx --xs @params --ys loss
      onnxgrad check model.onnx --xs w,b
      onnxgrad ops
    """


# ------------------------------------------------------------------------------------------ names
def gradients(index: GraphIndex, ys: Sequence[str], xs: Sequence[str], **options) -> GradientsResult:
    """``onnxgrad.gradients`` on the model the command loaded and indexed: ``index.model`` is
    extended in place instead of being copied, validated and shape-inferred a second time."""
    return _gradients(index.model, index, ys, xs, **options)


def _split(values: Sequence[str]) -> List[str]:
    """Names from a repeatable option whose values may also be comma-separated lists."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _float_initializers(model: ModelProto) -> List[str]:
    return [t.name for t in model.graph.initializer if t.data_type in FLOAT_TYPES]


def _float_inputs(model: ModelProto, index: GraphIndex) -> List[str]:
    inits = {t.name for t in model.graph.initializer}
    return [i.name for i in model.graph.input if i.name not in inits and index.tensor_info(i.name).is_float]


def _resolve_xs(values: Sequence[str], model: ModelProto, index: GraphIndex) -> List[str]:
    xs: List[str] = []
    for item in _split(values):
        if item == PARAMS:
            found = _float_initializers(model)
            if not found:
                raise GradientArgumentError(f"--xs {PARAMS}: the model has no float initializer (no weights)")
            xs.extend(found)
        elif item == INPUTS:
            found = _float_inputs(model, index)
            if not found:
                raise GradientArgumentError(f"--xs {INPUTS}: the model has no float graph input")
            xs.extend(found)
        elif item.startswith("@"):
            raise GradientArgumentError(f"--xs: unknown group {item!r}; use {PARAMS} or {INPUTS}")
        else:
            xs.append(item)
    if not xs:
        raise GradientArgumentError("--xs is empty: name at least one tensor to differentiate with respect to")
    return xs


def _resolve_ys(values: Sequence[str], index: GraphIndex) -> List[str]:
    ys = _split(values)
    if ys:
        return ys
    ys = [o for o in index.graph_outputs if index.tensor_info(o).is_float]
    if not ys:
        raise GradientArgumentError("the model has no float graph output; name the tensors to differentiate with --ys")
    return ys


def _parse_grad_ys(values: Sequence[str], ys: Sequence[str]) -> Optional[list]:
    """``Y=NUMBER``, ``Y=@NAME`` or ``Y=FILE.npy`` entries -> the API's grad_ys list."""
    if not values:
        return None
    chosen: Dict[str, object] = {}
    for item in _split(values):
        y, sep, spec = item.partition("=")
        y, spec = y.strip(), spec.strip()
        if not sep or not y or not spec:
            raise GradientArgumentError(f"--grad-ys {item!r}: expected Y=NUMBER, Y=@NAME or Y=FILE.npy")
        if y not in ys:
            raise GradientArgumentError(f"--grad-ys {item!r}: {y!r} is not one of the ys ({', '.join(ys)})")
        if y in chosen:
            raise GradientArgumentError(f"--grad-ys: {y!r} is given twice")
        if spec.startswith("@"):
            if len(spec) == 1:
                raise GradientArgumentError(f"--grad-ys {item!r}: a tensor name must follow '@'")
            chosen[y] = spec[1:]
        elif spec.endswith(".npy"):
            try:
                chosen[y] = np.load(spec, allow_pickle=False)
            except (OSError, ValueError) as e:
                raise GradientArgumentError(f"--grad-ys {item!r}: cannot read {spec}: {e}") from None
        else:
            try:
                chosen[y] = float(spec)
            except ValueError:
                raise GradientArgumentError(
                    f"--grad-ys {item!r}: {spec!r} is not a number, an @name or a .npy file") from None
    return [chosen.get(y) for y in ys]


# ------------------------------------------------------------------------------------------ output
def _default_output(model_path: str) -> str:
    folder, base = os.path.split(model_path)
    stem = base[: -len(".onnx")] if base.lower().endswith(".onnx") else base
    return os.path.join(folder, f"{stem}.grad.onnx")


def _same_file(a: str, b: str) -> bool:
    if os.path.exists(a) and os.path.exists(b):
        return os.path.samefile(a, b)
    return os.path.realpath(a) == os.path.realpath(b)


def _check_output(model_path: str, out: str) -> None:
    if _same_file(model_path, out):
        raise OutputWriteError(f"refusing to overwrite the input model {model_path}; choose another -o")
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}")
    if os.path.isdir(out):
        raise OutputWriteError(f"output path is a directory: {out}")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shape_text(shape: Optional[Tuple]) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _gradient_rows(result: GradientsResult, xs: Sequence[str]) -> List[List[str]]:
    outputs = {o.name: o for o in result.model.graph.output}
    rows = []
    for x, name in zip(xs, result.names):
        if name is None:
            rows.append([x, "(unconnected: None)", "-", "-"])
            continue
        tt = outputs[name].type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim) \
            if tt.HasField("shape") else None
        rows.append([x, name, TensorProto.DataType.Name(tt.elem_type).lower(), _shape_text(dims)])
    return rows


# ------------------------------------------------------------------------------------------ commands
@cli.command(context_settings=_CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--xs", "xs_opt", multiple=True, required=True, metavar="NAMES",
              help=f"Tensors to differentiate with respect to, comma-separated (repeatable). {PARAMS} = every "
                   f"float initializer (the weights), {INPUTS} = every float graph input.")
@click.option("--ys", "ys_opt", multiple=True, metavar="NAMES",
              help="Tensors to differentiate, comma-separated (repeatable). Default: every float graph output.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="Output model. Default: <stem>.grad.onnx beside MODEL. Never the input itself.")
@click.option("--grad-ys", "grad_ys_opt", multiple=True, metavar="Y=SEED",
              help="Initial gradient of a y (default: ones). SEED is a NUMBER (a constant of y's shape), "
                   "@NAME (an existing tensor, or a new graph input of y's type fed at run time) or FILE.npy.")
@click.option("--stop-gradients", "stops_opt", multiple=True, metavar="NAMES",
              help="Tensors held constant (partial instead of total derivatives), comma-separated.")
@click.option("--unconnected-gradients", type=click.Choice(["none", "zero"]), default="none", show_default=True,
              help="For an x the ys do not depend on: no output (none) or a zeros output (zero).")
@click.option("--aggregation-method", type=click.Choice(sorted(AGGREGATION)), default="add_n", show_default=True,
              help="How several gradient contributions are summed: one Sum (add_n) or a chain of Add (tree, "
                   "accumulate_n).")
@click.option("--name", default="gradients", show_default=True,
              help="Prefix of every new node and tensor (uniquified if the model already uses it).")
@click.option("--gate-gradients", is_flag=True,
              help="Accepted for tf.gradients compatibility; ONNX has no control dependencies, so it "
                   "changes nothing in the graph.")
@_debug_option
def differentiate(model_path: str, xs_opt, ys_opt, out, grad_ys_opt, stops_opt, unconnected_gradients,
                  aggregation_method, name, gate_gradients) -> None:
    """Append d(sum of ys)/d x for each x to MODEL and write the new model.

    The output keeps every original output, in order, followed by one gradient output per x
    (in --xs order). A table of x, gradient output, dtype and shape is printed.

    \b
    Examples:
      onnxgrad differentiate models/linear_regression.onnx --xs @params
      onnxgrad differentiate net.onnx --xs w1,b1 --ys loss -o net.train.onnx
      onnxgrad differentiate net.onnx --xs x --grad-ys logits=@seed   # seed fed at run time
      onnxgrad differentiate models/partial_derivatives.onnx --xs a,b --stop-gradients a,b
    """
    start = time.perf_counter()
    out = out if out is not None else _default_output(model_path)
    _check_output(model_path, out)
    model = load_model(model_path)
    index = GraphIndex(model)
    xs = _resolve_xs(xs_opt, model, index)
    ys = _resolve_ys(ys_opt, index)
    forward_nodes = len(model.graph.node)  # gradients() extends the model in place
    result = gradients(
        index, ys, xs,
        grad_ys=_parse_grad_ys(grad_ys_opt, ys),
        name=name,
        aggregation_method=AGGREGATION[aggregation_method],
        stop_gradients=_split(stops_opt) or None,
        unconnected_gradients=unconnected_gradients,
    )
    write_model(result.model, out, source=model_path)
    added = len(result.model.graph.node) - forward_nodes
    click.echo(_table(["x", "gradient output", "dtype", "shape"], _gradient_rows(result, xs)))
    click.echo(f"wrote {out} ({_count(added, 'node')} added for {_count(len(ys), 'y')} and "
               f"{_count(len(xs), 'x')}, {time.perf_counter() - start:.2f} s)")


@cli.command(context_settings=_CONTEXT)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--xs", "xs_opt", multiple=True, required=True, metavar="NAMES",
              help=f"Tensors to check gradients for, comma-separated; {PARAMS} / {INPUTS} as in differentiate.")
@click.option("--ys", "ys_opt", multiple=True, metavar="NAMES",
              help="Tensors to differentiate. Default: every float graph output.")
@click.option("--grad-model", "grad_model", type=click.Path(dir_okay=False), default=None, metavar="FILE",
              help="Check this existing gradient model of MODEL (its outputs after MODEL's are the gradients, in "
                   "--xs order) instead of differentiating MODEL.")
@click.option("--grad-ys", "grad_ys_opt", multiple=True, metavar="Y=SEED",
              help="Seed of a y: NUMBER or FILE.npy (that seed), or @NAME (random; with --grad-model, the seed "
                   "input NAME of the gradient model). Default: random (with --grad-model: ones).")
@click.option("--stop-gradients", "stops_opt", multiple=True, metavar="NAMES",
              help="Tensors held constant, in the gradient and in the finite differences.")
@click.option("--feeds", "feeds_path", type=click.Path(dir_okay=False), default=None, metavar="FILE.npz",
              help="Values of graph inputs (arrays named after the inputs); the others are random.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random inputs and directions.")
@click.option("--rtol", type=float, default=None, metavar="R", help="Relative tolerance (default 1e-5).")
@click.option("--step", type=float, default=None, metavar="H", help="Central-difference step (default 1e-5).")
@_debug_option
def check(model_path: str, xs_opt: Tuple[str, ...], ys_opt: Tuple[str, ...], grad_model: Optional[str],
          grad_ys_opt: Tuple[str, ...], stops_opt: Tuple[str, ...], feeds_path: Optional[str], seed: int,
          rtol: Optional[float], step: Optional[float]) -> None:
    """Verify the gradients of MODEL against float64 central differences.

    The model is cast to float64 and differentiated as cast (float16, bfloat16 and float32 models
    are judged by the same rules in float64). For each x, random seeds u for the ys and a random
    direction v compare sum(grad_x * v) with (F(x + h v) - F(x - h v)) / 2h, F = sum(u * ys), at
    a relative tolerance of 1e-5 of the derivative plus the quotient's round-off; the Jacobian is
    compared too (random rows and columns when large), and the gradient in the model's own dtype
    must match the float64 one. An x on a kink or tie is reported as KINK (not a proof).

    Exits 0 when every x passes or lands on a kink, 1 if any FAILs, 7 on an internal error.

    \b
    Examples:
      onnxgrad check models/linear_regression.onnx --xs @params --ys loss
      onnxgrad check net.onnx --xs @params --grad-model net.grad.onnx
      onnxgrad check net.onnx --xs x --feeds inputs.npz --stop-gradients h
    """
    try:
        _check_command(model_path, xs_opt, ys_opt, grad_model, grad_ys_opt, stops_opt, feeds_path, seed, rtol, step)
    except (OnnxGradError, click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort,
            KeyboardInterrupt):
        raise
    except Exception as err:  # noqa: BLE001  (a crash of the check is a bug: exit 7, never 1 = FAIL)
        if click.get_current_context().meta.get(_DEBUG_KEY):
            traceback.print_exc()
        click.echo(f"onnxgrad: internal error: {type(err).__name__}: {_one_line(str(err))} (rerun with --debug)",
                   err=True)
        raise click.exceptions.Exit(7) from None


def _check_command(model_path: str, xs_opt: Sequence[str], ys_opt: Sequence[str], grad_model: Optional[str],
                   grad_ys_opt: Sequence[str], stops_opt: Sequence[str], feeds_path: Optional[str], seed: int,
                   rtol: Optional[float], step: Optional[float]) -> None:
    from .checking import judge

    start = time.perf_counter()
    model = load_model(model_path)
    index = GraphIndex(model)  # the one validation of the model
    xs = _resolve_xs(xs_opt, model, index)
    ys = _resolve_ys(ys_opt, index)
    _load_weights(model, model_path)
    given = None
    if grad_model is not None:
        given = load_model(grad_model)
        _load_weights(given, grad_model)
    report = judge(model, index, xs, ys, feeds=_read_feeds(feeds_path), seed=seed, rtol=rtol, step=step,
                   grad_ys=_parse_grad_ys(grad_ys_opt, ys), stop_gradients=_split(stops_opt) or None,
                   grad_model=given)
    rows = [[c.name, _shape_text(c.shape), f"{c.analytic:.6g}", f"{c.numeric:.6g}", f"{c.error:.3g}",
             f"{c.tolerance:.3g}", _ratio_text(c.jacobian_ratio) + ("*" if c.jacobian_sampled else ""), c.verdict]
            for c in report.checks]
    click.echo(_table(["x", "shape", "analytic", "numeric", "error", "tolerance", "jacobian ratio", "result"], rows))
    for c in report.checks:
        if c.note:
            click.echo(f"{c.name}: {c.note}")
    if any(c.jacobian_sampled for c in report.checks):
        click.echo("* random rows and columns of a large Jacobian; ratios pass at <= 1")
    if report.cast_after:
        click.echo(f"note: {report.cast_after}")
    failed = sum(c.verdict == "FAIL" for c in report.checks)
    kinks = sum(c.verdict == "KINK" for c in report.checks)
    runtimes = ", ".join(sorted(set(report.runtime.values())))
    click.echo(f"{len(report.checks) - failed - kinks} passed, {failed} failed, {_count(kinks, 'kink')} (not "
               f"verified: try another --seed) in {time.perf_counter() - start:.2f} s ({runtimes}, float64)")
    if failed:
        raise click.exceptions.Exit(1)


def _ratio_text(ratio: Optional[float]) -> str:
    return "-" if ratio is None else f"{ratio:.3g}"


def _read_feeds(path: Optional[str]) -> Optional[Dict[str, np.ndarray]]:
    """Input values from an .npz file (one array per graph input name)."""
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
        raise GradientArgumentError(
            f"--feeds: cannot read {path}: {_one_line(str(e))} (expected an .npz file)") from None


def _load_weights(model: ModelProto, model_path: str) -> None:
    """Read external weights into ``model``: the check runs it from memory, wherever the cwd is."""
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    if not any(uses_external_data(t) for t in model.graph.initializer):
        return
    try:
        load_external_data_for_model(model, os.path.dirname(os.path.abspath(model_path)))
    except Exception as e:  # OSError, or onnx's ValidationError for a missing or irregular file
        raise ModelReadError(f"cannot read the external weights of {model_path}: {_one_line(str(e))}") from None


@cli.command(context_settings=_CONTEXT)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write the table as Markdown to PATH ('-' for stdout) instead of printing plain text.")
@_debug_option
def ops(markdown_path: Optional[str]) -> None:
    """List the gradient registry: op type, domain, opsets, differentiable inputs, status.

    \b
    Examples:
      onnxgrad ops
      onnxgrad ops --markdown docs/operators.md
    """
    from .coverage import render

    if markdown_path is None:
        click.echo(render(markdown=False))
        return
    text = render(markdown=True)
    if markdown_path == "-":
        click.echo(text)
        return
    _write_text(markdown_path, text if text.endswith("\n") else text + "\n")
    click.echo(f"wrote {markdown_path}")


def _write_text(path: str, text: str) -> None:
    """Atomic text write, like :func:`onnxgrad.modelio.write_model`."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise OutputWriteError(f"output folder does not exist: {folder}")
    fd, tmp = tempfile.mkstemp(prefix=".onnxgrad-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise OutputWriteError(f"cannot write {path}: {e.strerror or e}") from None


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Console-script entry point (``onnxgrad = onnxgrad.cli:main``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="onnxgrad")

