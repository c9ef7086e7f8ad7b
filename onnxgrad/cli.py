"""The ``onnxgrad`` command line: ``differentiate``, ``check`` and ``ops``.

Every error onnxgrad raises on purpose reaches the user as one line on stderr
(``onnxgrad: error: ...``) with the exit code of its class (:mod:`onnxgrad.errors`):

====  ==========================================================================
0     success
1     a check FAILed
2     usage: a bad option, argument or tensor name
3     the model (or its external weights) cannot be read
4     the model is not valid (or its external-data metadata contradicts itself)
5     no gradient rule for an op between the xs and the ys
6     the output cannot be written
7     internal error: a bug in onnxgrad (``--debug`` shows the traceback)
130   interrupted (Ctrl-C); 128 + N when terminated by signal N (SIGTERM 143, SIGHUP 129)
====  ==========================================================================

Text that comes from a model or the user (tensor names, paths) is printed with non-printable
characters escaped, so a hostile name cannot drive the terminal. Progress goes to stderr on a
terminal only; ``--json`` prints one JSON document on stdout (:func:`json_document`). An output
file is written atomically, only once everything succeeded; ``SIGTERM`` and ``SIGHUP`` unwind
like Ctrl-C, so an interrupted run leaves no file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from types import FrameType
from typing import Any, Callable, NoReturn, TypeVar

import click
import numpy as np
from onnx import ModelProto, TensorProto

from . import __version__
from .api import AggregationMethod, GradientsResult, append_gradients, gc_paused
from .errors import GradientArgumentError, ModelReadError, OnnxGradError
from .graph import GraphIndex
from .loading import load_model
from .modelio import output_path, write_file, write_model
from .params import select_data_inputs, select_parameters, without
from .targets import TARGETS

PARAMS = "@params"
INPUTS = "@inputs"

#: Exit code of an unexpected exception (a bug); the other codes belong to :mod:`onnxgrad.errors`.
EXIT_INTERNAL = 7
EXIT_INTERRUPTED = 130

AGGREGATION = {
    "add_n": AggregationMethod.ADD_N,
    "tree": AggregationMethod.EXPERIMENTAL_TREE,
    "accumulate_n": AggregationMethod.EXPERIMENTAL_ACCUMULATE_N,
}

_DEBUG_KEY = "onnxgrad.debug"
_JSON_KEY = "onnxgrad.json"
_QUIET_KEY = "onnxgrad.quiet"
_VERBOSE_KEY = "onnxgrad.verbose"
_RUN_KEY = "onnxgrad.run"
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

F = TypeVar("F", bound=Callable[..., Any])


def printable(text: object) -> str:
    """``text`` with every non-printable character (escape sequences, control characters, line
    breaks, bidirectional overrides) replaced by its Python escape, e.g. ``\\x1b`` or ``\\u202e``."""
    s = str(text)
    if s.isprintable():
        return s
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in s)


def _one_line(text: object) -> str:
    """An error message as one printable line."""
    return printable(" ".join(str(text).split()))


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, like KeyboardInterrupt, so that every
    ``finally`` on the way out runs (temporary files, partial copies) and no handler swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


_CAUGHT_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n))


def _on_signal(signum: int, _frame: FrameType | None) -> NoReturn:
    for s in _CAUGHT_SIGNALS:  # a second signal must not cut the cleanup short
        signal.signal(s, signal.SIG_IGN)
    raise Terminated(signum)


def _catch_signals() -> None:
    """Turn SIGTERM and SIGHUP into :class:`Terminated` (main thread only, as Python requires)."""
    if threading.current_thread() is threading.main_thread():
        for s in _CAUGHT_SIGNALS:
            signal.signal(s, _on_signal)


class _Group(click.Group):
    """Turns exceptions into the one-line messages and exit codes the module docstring promises."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as err:
            _usage_exit(err, ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except OnnxGradError as err:
            _fail(ctx, err, f"onnxgrad: error: {_one_line(err)}", err.exit_code)
        except KeyboardInterrupt as err:
            _fail(ctx, err, "onnxgrad: interrupted", EXIT_INTERRUPTED)
        except Terminated as err:
            _fail(ctx, err, f"onnxgrad: terminated by {signal.Signals(err.signum).name}", 128 + err.signum)
        except Exception as err:  # noqa: BLE001  (the last line of defence: never a bare traceback)
            _fail(ctx, err, f"onnxgrad: internal error: {type(err).__name__}: {_one_line(err)} (rerun with --debug)",
                  EXIT_INTERNAL)

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if not args and not ctx.resilient_parsing:  # a bare `onnxgrad`: the help, not an error
            click.echo(ctx.get_help())
            ctx.exit(0)
        return super().parse_args(ctx, args)

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: Any) -> click.Context:
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.UsageError as err:
            _usage_exit(err, None)


def _fail(ctx: click.Context, err: BaseException, line: str, code: int) -> NoReturn:
    """Report ``err``: the traceback with --debug, the JSON document with --json, one stderr line."""
    if ctx.meta.get(_DEBUG_KEY):
        traceback.print_exception(type(err), err, err.__traceback__)
    run = ctx.meta.get(_RUN_KEY)
    if isinstance(run, Run) and run.json:
        run.emit(None, error=err, exit_code=code)
    click.echo(line, err=True)
    raise click.exceptions.Exit(code) from None


def _usage_exit(err: click.UsageError, ctx: click.Context | None) -> NoReturn:
    """Usage errors, like every other error, are one line (exit 2)."""
    ctx = err.ctx or ctx
    hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
    click.echo(f"onnxgrad: error: {_one_line(err.format_message())}{hint}", err=True)
    raise click.exceptions.Exit(err.exit_code) from None


def _meta_flag(key: str) -> Callable[[click.Context, click.Parameter, bool], None]:
    def store(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            ctx.meta[key] = True
    return store


def debug_option(f: F) -> F:
    return click.option("--debug", is_flag=True, expose_value=False, callback=_meta_flag(_DEBUG_KEY),
                        help="Show the full traceback when something fails.")(f)


def _output_options(f: F) -> F:
    """``--json``, ``-q/--quiet`` and ``-v/--verbose`` for a command; read them with :meth:`Run.start`."""
    f = click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_meta_flag(_VERBOSE_KEY),
                     help="Print each phase and its time on stderr, then the total time and peak memory.")(f)
    f = click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_meta_flag(_QUIET_KEY),
                     help="Print nothing but errors (no progress, no table).")(f)
    return click.option("--json", "json_output", is_flag=True, expose_value=False, callback=_meta_flag(_JSON_KEY),
                        help="Print one JSON document on stdout instead of the table, also on failure.")(f)


@click.group(cls=_Group, context_settings=CONTEXT_SETTINGS)
@debug_option
@click.version_option(__version__, prog_name="onnxgrad")
def cli() -> None:
    """tf.gradients for ONNX models: append the backward pass as standard ONNX nodes.

    \b
    Examples:
      onnxgrad differentiate model.onnx --xs @params --ys loss
      onnxgrad check model.onnx --xs w,b
      onnxgrad ops

    Exit codes: 0 success, 1 a check failed, 2 usage, 3 unreadable model, 4 invalid model,
    5 no gradient rule, 6 output cannot be written, 7 internal error.
    """


# ------------------------------------------------------------------------------------------ reporting
def json_document(command: str, result: dict[str, Any] | None, error: BaseException | None = None,
                  exit_code: int = 0, timings: dict[str, float] | None = None) -> str:
    """The one JSON document a command prints on stdout with ``--json``::

        {"onnxgrad": "0.1.0", "command": "differentiate", "ok": true, "exit_code": 0,
         "result": {...command specific...} or null,
         "error": null or {"type": "InvalidModelError", "message": "..."},
         "timings": {"read model": 0.01, ...}}

    ``ok`` is true exactly when ``exit_code`` is 0. Non-ASCII text is escaped (``\\uXXXX``), so the
    document is safe on any terminal.
    """
    doc = {
        "onnxgrad": __version__,
        "command": command,
        "ok": exit_code == 0,
        "exit_code": exit_code,
        "result": result,
        "error": None if error is None else {"type": type(error).__name__, "message": " ".join(str(error).split())},
        "timings": {k: round(v, 6) for k, v in (timings or {}).items()},
    }
    return json.dumps(doc, ensure_ascii=True)


class Run:
    """What a command reports besides its result: progress on a terminal, phase timings with
    ``--verbose``, its JSON document with ``--json``. One per command invocation."""

    def __init__(self, command: str, meta: dict[str, Any]) -> None:
        self.command = command
        self.json = bool(meta.get(_JSON_KEY))
        self.quiet = bool(meta.get(_QUIET_KEY))
        self.verbose = bool(meta.get(_VERBOSE_KEY))
        self.progress = not self.quiet and _stderr_is_terminal()
        self.timings: dict[str, float] = {}
        self.started = time.perf_counter()

    @classmethod
    def start(cls, command: str) -> Run:
        """The Run of the current click command (its options read from the context)."""
        ctx = click.get_current_context()
        run = cls(command, ctx.meta)
        ctx.meta[_RUN_KEY] = run
        return run

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase; on a terminal show it as a live status line while it runs."""
        t0 = time.perf_counter()
        ticker = _Ticker(name) if self.progress else None
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
        self.timings[name] = time.perf_counter() - t0
        if self.verbose:
            click.echo(f"onnxgrad: {name}: {self.timings[name]:.2f} s", err=True)

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def say(self, text: str) -> None:
        """Human output on stdout (nothing with --quiet or --json)."""
        if not (self.quiet or self.json):
            click.echo(text)

    def emit(self, result: dict[str, Any] | None, error: BaseException | None = None,
             exit_code: int = 0) -> None:
        """Print the JSON document (only with --json)."""
        if self.json:
            click.echo(json_document(self.command, result, error, exit_code, self.timings))

    def finish(self) -> None:
        if self.verbose:
            click.echo(f"onnxgrad: total: {self.elapsed:.2f} s, peak memory {_peak_memory_mib():.0f} MiB", err=True)


def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def _peak_memory_mib() -> float:
    try:
        import resource
    except ImportError:  # not on POSIX
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB elsewhere


class _Ticker:
    """A status line on stderr (``onnxgrad: <phase>... 3.2 s``), redrawn every 0.25 s by a
    background thread while a phase runs, and erased when it ends."""

    def __init__(self, label: str) -> None:
        self.label = printable(label)
        self.t0 = time.perf_counter()
        self.done = threading.Event()
        self._draw()
        self.thread = threading.Thread(target=self._run, name="onnxgrad-progress", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(0.25):
            self._draw()

    def _draw(self) -> None:
        sys.stderr.write(f"\r\x1b[Konnxgrad: {self.label}... {time.perf_counter() - self.t0:.1f} s")
        sys.stderr.flush()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


# ------------------------------------------------------------------------------------------ names
def gradients(index: GraphIndex, ys: Sequence[str], xs: Sequence[str], **options: Any) -> GradientsResult:
    """``onnxgrad.gradients`` on the model the command loaded and indexed: ``index.model`` is
    extended in place instead of being copied, validated and shape-inferred a second time."""
    return append_gradients(index, ys, xs, **options)


def _split(values: Sequence[str]) -> list[str]:
    """Names from a repeatable option whose values may also be comma-separated lists."""
    return [part.strip() for v in values for part in v.split(",") if part.strip()]


def _resolve_xs(values: Sequence[str], model: ModelProto, index: GraphIndex, exclude: Sequence[str] = ()) -> list[str]:
    """``--xs`` entries with the groups expanded (:mod:`onnxgrad.params`), minus ``--exclude`` globs."""
    xs: list[str] = []
    for item in _split(values):
        if item == PARAMS:
            found = select_parameters(index)
            if not found:
                raise GradientArgumentError(
                    f"--xs {PARAMS}: the model has no trainable parameter (a float initializer or a Constant "
                    "weight feeding a differentiable input); name the tensors instead")
            xs.extend(found)
        elif item == INPUTS:
            found = select_data_inputs(index)
            if not found:
                raise GradientArgumentError(f"--xs {INPUTS}: the model has no float graph input")
            xs.extend(found)
        elif item.startswith("@"):
            raise GradientArgumentError(f"--xs: unknown group {item!r}; use {PARAMS} or {INPUTS}")
        else:
            xs.append(item)
    if not xs:
        raise GradientArgumentError("--xs is empty: name at least one tensor to differentiate with respect to")
    kept = without(xs, list(exclude))
    if not kept:
        raise GradientArgumentError(f"--exclude {' '.join(exclude)} leaves no x of the {len(xs)} selected")
    return kept


def _resolve_ys(values: Sequence[str], index: GraphIndex) -> list[str]:
    ys = _split(values)
    if ys:
        return ys
    ys = [o for o in index.graph_outputs if index.tensor_info(o).is_float]
    if not ys:
        raise GradientArgumentError("the model has no float graph output; name the tensors to differentiate with --ys")
    return ys


def _parse_grad_ys(values: Sequence[str], ys: Sequence[str]) -> list | None:
    """``Y=NUMBER``, ``Y=@NAME`` or ``Y=FILE.npy`` entries -> the API's grad_ys list."""
    if not values:
        return None
    chosen: dict[str, object] = {}
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
            if os.path.exists(spec) and not os.path.isfile(spec):  # a FIFO or device would block or never end
                raise GradientArgumentError(f"--grad-ys {item!r}: {spec} is not a regular file")
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


def _check_output(model_path: str, out: str) -> None:
    """Fail before the work if ``out`` cannot be the output (see :func:`onnxgrad.modelio.output_path`)."""
    output_path(out, source=model_path)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns; every cell shown with non-printable characters escaped."""
    cells = [[printable(c) for c in row] for row in [header, *rows]]
    widths = [max(len(c) for c in col) for col in zip(*cells)]

    def fmt(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()

    return "\n".join([fmt(cells[0]), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells[1:]])


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _shape_text(shape: tuple | None) -> str:
    if shape is None:
        return "?"
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _gradient_info(result: GradientsResult, xs: Sequence[str]) -> list[dict[str, Any]]:
    """Per x: its gradient output (None when unconnected), dtype and shape (None when unknown)."""
    outputs = {o.name: o for o in result.model.graph.output}
    found: list[dict[str, Any]] = []
    for x, name in zip(xs, result.names):
        if name is None:
            found.append({"x": x, "output": None, "dtype": None, "shape": None})
            continue
        tt = outputs[name].type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tt.shape.dim] \
            if tt.HasField("shape") else None
        found.append({"x": x, "output": name, "dtype": TensorProto.DataType.Name(tt.elem_type).lower(), "shape": dims})
    return found


def _gradient_rows(info: Sequence[dict[str, Any]]) -> list[list[str]]:
    return [[g["x"], "(unconnected: None)", "-", "-"] if g["output"] is None else
            [g["x"], g["output"], g["dtype"], _shape_text(g["shape"])] for g in info]


# ------------------------------------------------------------------------------------------ commands
@cli.command(context_settings=CONTEXT_SETTINGS)
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option("--xs", "xs_opt", multiple=True, required=True, metavar="NAMES",
              help=f"Tensors to differentiate with respect to, comma-separated (repeatable). {PARAMS} = the "
                   f"trainable parameters (float initializers and Constant weights feeding differentiable inputs, "
                   f"not BatchNorm running statistics), {INPUTS} = every float graph input.")
@click.option("--exclude", "exclude_opt", multiple=True, metavar="GLOB",
              help="Leave out the xs whose name matches GLOB (shell-style: *, ?, [..]; repeatable), "
                   "e.g. --xs @params --exclude 'bn*'.")
@click.option("--ys", "ys_opt", multiple=True, metavar="NAMES",
              help="Tensors to differentiate, comma-separated (repeatable). Default: every float graph output.")
@click.option("-o", "--output", "out", type=click.Path(dir_okay=False), default=None,
              help="Output model. Default: <stem>.grad.onnx beside MODEL. Never the input itself, never an "
                   "existing device or FIFO; a symlink to a file is written through.")
@click.option("--external-data", is_flag=True,
              help="Store the output's in-file tensors of 1 KiB or more in <OUTPUT>.data beside it (needed "
                   "for outputs above protobuf's 2 GB limit).")
@click.option("--grad-ys", "grad_ys_opt", multiple=True, metavar="Y=SEED",
              help="Initial gradient of a y (default: ones). SEED is a finite NUMBER (every element of y's "
                   "gradient), @NAME (an existing tensor, or a new graph input of y's type fed at run time) or "
                   "FILE.npy.")
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
@click.option("--target", type=click.Choice(sorted(TARGETS)), default=None,
              help="Add the workarounds a runtime needs at some cost (docs/portability.md): "
                   + "; ".join(f"{k}: {v}" for k, v in sorted(TARGETS.items())) + ".")
@_output_options
@debug_option
def differentiate(model_path: str, xs_opt: tuple[str, ...], exclude_opt: tuple[str, ...], ys_opt: tuple[str, ...],
                  out: str | None, external_data: bool, grad_ys_opt: tuple[str, ...], stops_opt: tuple[str, ...],
                  unconnected_gradients: str, aggregation_method: str, name: str, gate_gradients: bool,
                  target: str | None) -> None:
    """Append d(sum of ys)/d x for each x to MODEL and write the new model.

    The output keeps every original output, in order, followed by one gradient output per x
    (in --xs order). A table of x, gradient output, dtype and shape is printed.

    \b
    Examples:
      onnxgrad differentiate models/linear_regression.onnx --xs @params
      onnxgrad differentiate net.onnx --xs @params --exclude 'embed*' --ys loss -o net.train.onnx
      onnxgrad differentiate net.onnx --xs x --grad-ys logits=@seed   # seed fed at run time
      onnxgrad differentiate models/partial_derivatives.onnx --xs a,b --stop-gradients a,b
      onnxgrad differentiate big.onnx --xs @params --external-data    # output above 2 GB
    """
    with gc_paused():  # reading, indexing and writing a large model: objects that live to the end
        _differentiate_command(model_path, xs_opt, exclude_opt, ys_opt, out, external_data, grad_ys_opt, stops_opt,
                               unconnected_gradients, aggregation_method, name, target)


def _differentiate_command(model_path: str, xs_opt: tuple[str, ...], exclude_opt: tuple[str, ...],
                           ys_opt: tuple[str, ...], out: str | None, external_data: bool, grad_ys_opt: tuple[str, ...],
                           stops_opt: tuple[str, ...], unconnected_gradients: str, aggregation_method: str, name: str,
                           target: str | None) -> None:
    run = Run.start("differentiate")
    out = out if out is not None else _default_output(model_path)
    _check_output(model_path, out)
    with run.phase("reading the model"):
        model = load_model(model_path)
    with run.phase("checking the model and inferring shapes"):
        index = GraphIndex(model)
    xs = _resolve_xs(xs_opt, model, index, exclude_opt)
    ys = _resolve_ys(ys_opt, index)
    grad_ys = _parse_grad_ys(grad_ys_opt, ys)
    forward_nodes = len(model.graph.node)  # gradients() extends the model in place
    with run.phase("building the backward pass"):
        result = gradients(
            index, ys, xs,
            grad_ys=grad_ys,
            name=name,
            aggregation_method=AGGREGATION[aggregation_method],
            stop_gradients=_split(stops_opt) or None,
            unconnected_gradients=unconnected_gradients,
            target=target,
        )
    added = len(result.model.graph.node) - forward_nodes
    info = _gradient_info(result, xs)
    with run.phase("writing the output"):
        data_file = write_model(result.model, out, source=model_path, external_data=external_data)
    run.say(_table(["x", "gradient output", "dtype", "shape"], _gradient_rows(info)))
    run.say(f"wrote {printable(out)} ({_count(added, 'node')} added for {_count(len(ys), 'y')} and "
            f"{_count(len(xs), 'x')}, {run.elapsed:.2f} s)")
    run.emit({"model": model_path, "output": out,
              "external_data": data_file,
              "ys": ys, "xs": xs, "gradients": info, "nodes_added": added, "seconds": round(run.elapsed, 6)})
    run.finish()


@cli.command(context_settings=CONTEXT_SETTINGS)
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
@debug_option
def check(model_path: str, xs_opt: tuple[str, ...], ys_opt: tuple[str, ...], grad_model: str | None,
          grad_ys_opt: tuple[str, ...], stops_opt: tuple[str, ...], feeds_path: str | None, seed: int,
          rtol: float | None, step: float | None) -> None:
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


def _check_command(model_path: str, xs_opt: Sequence[str], ys_opt: Sequence[str], grad_model: str | None,
                   grad_ys_opt: Sequence[str], stops_opt: Sequence[str], feeds_path: str | None, seed: int,
                   rtol: float | None, step: float | None) -> None:
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


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.3g}"


def _read_feeds(path: str | None) -> dict[str, np.ndarray] | None:
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


@cli.command(context_settings=CONTEXT_SETTINGS)
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write the table as Markdown to PATH ('-' for stdout) instead of printing plain text.")
@_output_options
@debug_option
def ops(markdown_path: str | None) -> None:
    """List the gradient registry for every default-domain ONNX op: op type, opsets,
    differentiable inputs, status (rule, non-differentiable, unsupported) and reason.

    \b
    Examples:
      onnxgrad ops
      onnxgrad ops --json
      onnxgrad ops --markdown docs/operators.md
    """
    from .coverage import counts, render, rows

    run = Run.start("ops")
    if run.json:
        if markdown_path is not None:
            raise click.UsageError("--json and --markdown exclude each other")
        with run.phase("reading the registry"):
            table = rows()
        run.emit({"operators": [{"op_type": r.op_type, "opsets": r.opsets, "differentiable_inputs": r.inputs,
                                 "status": r.status, "reason": r.reason} for r in table],
                  "counts": counts(table)})
        return
    if markdown_path is None:
        run.say(render(markdown=False))
        return
    text = render(markdown=True)
    if markdown_path == "-":
        click.echo(text)
        return
    write_file(markdown_path, (text if text.endswith("\n") else text + "\n").encode("utf-8"))
    run.say(f"wrote {printable(markdown_path)}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``onnxgrad = onnxgrad.cli:main``)."""
    _catch_signals()
    cli.main(args=list(argv) if argv is not None else None, prog_name="onnxgrad")


from . import cli_train  # noqa: E402,F401  (registers the train-step command)
