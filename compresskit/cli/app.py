"""The command line: one thin function per command, and ``distill-and-export`` that runs a task family's stages in
order (``compresskit.pipeline``).

Every option is declared once: the shared ones in ``cli.options``, each family's in ``tasks/<family>/options.py``.
A command names the options it takes; the settings of a stage are built from them by one function, shared by every
command that runs that stage (``cli.flags`` for the shared settings, the family's ``options`` module for its own).
The stage commands (prepare-data … quantize, predict, sweep) run the text-classification family's stages; generate
answers with an exported causal LM; bench, report and compare work on a run of any family.

Exit codes: 0 success, 1 internal error, 2 bad input, 3 a converted model failed verification,
4 a quality gate failed.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from compresskit.artifacts import UserError, VerificationError
from compresskit.cli.flags import finetune_config, load_options
from compresskit.cli.options import NOT_SAVED, OPTIONS, PIPELINE, check_choices, gate_config, takes
from compresskit.tasks import families


class _Command(typer.core.TyperCommand):
    """A command whose ``--help`` names an on/off flag's off form in its help text instead of a column of its own.

    Why: typer gives the off forms (``--no-cache-teacher-activations``) a column, as wide as the longest of them in
    the panel, and on an 80-column terminal that column pushes every flag name of the panel to be cut
    (``--gradient-accumula…``) and the help text to a few words a line."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        switched = [(p, p.secondary_opts, p.help) for p in self.params if getattr(p, "secondary_opts", None)]
        for param, off, text in switched:
            param.help, param.secondary_opts = f"{text} Off: {', '.join(off)}.", []
        try:
            super().format_help(ctx, formatter)
        finally:
            for param, off, text in switched:
                param.help, param.secondary_opts = text, off


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a student from a teacher, export it to ONNX, quantize it, and measure what it buys.")
console = Console(stderr=True)

GATES = ("max_accuracy_drop", "min_speedup", "max_latency_ms", "max_perplexity_ratio", "min_agreement",
         "require_student", "baseline", "max_accuracy_regression", "max_latency_regression")
BENCH = tuple(n for n, opt in OPTIONS.items()
              if opt.declaration.rich_help_panel == "Benchmark" or n in ("device", "threads", "rounds"))
"""What ``bench --run-dir`` takes: every benchmark option of every family; one given on the command line overrides
the run's saved setting."""


def pipeline_config(o: dict[str, Any]) -> Any:
    """Every setting of one distill-and-export run: the family (``--task``, or the one ``--teacher`` implies), the
    teacher (the family's embedded one when ``--teacher`` is not given), and the family's settings."""
    from compresskit.models import read_config, resolve_model_source
    from compresskit.pipeline import PipelineConfig
    from compresskit.tasks import resolve_task

    check_choices(o)
    load = load_options(o)
    task, teacher = resolve_task(o["task"], o["teacher"], lambda t: read_config(resolve_model_source(t), load))
    return PipelineConfig(teacher=teacher, task=o["task"], family=task.name, finetune_mode=o["finetune_teacher"],
                          # --save-steps and --early-stopping-patience are the student's here
                          finetune=finetune_config(o, checkpoints=False), load=load, settings=task.settings(o))


def with_config_file(ctx: typer.Context, o: dict[str, Any], names: tuple[str, ...], path: Path | None = None
                     ) -> dict[str, Any]:
    """``o`` with the values of a config file (``path``, default ``--config``'s), except for the flags given on the
    command line, which win."""
    path = path if path is not None else o.get("config")
    if path is None:
        return o
    from compresskit.cli.config_file import read_config_file

    types = {n: OPTIONS[n].value_type for n in names if n not in NOT_SAVED}
    from_file = read_config_file(path, types)
    # compared by name: typer's click (vendored in new releases) has its own ParameterSource class
    given = {n for n in from_file if n in ctx.params and ctx.get_parameter_source(n).name == "COMMANDLINE"}
    return o | {n: v for n, v in from_file.items() if n not in given}


# --- the commands

@app.command(cls=_Command, name="distill-and-export")
@takes(*PIPELINE)
def distill_and_export_cmd(ctx: typer.Context, **o: Any) -> None:
    """Run the whole pipeline: data → teacher → distil → export → quantize → bench → report → gates."""
    from compresskit.pipeline import run_pipeline

    o = with_config_file(ctx, o, PIPELINE)
    cfg, gates = pipeline_config(o), gate_config(o)
    settings = {n: o[n] for n in PIPELINE if n not in NOT_SAVED}  # saved as the run's config.toml
    raise typer.Exit(run_pipeline(cfg, o["output_root"], o["run_name"], o["overwrite"], gates, console,
                                  options=settings, baseline=o["baseline"]))


@app.command(cls=_Command, name="bench")
@takes("run_dir", *BENCH)
def bench_cmd(ctx: typer.Context, **o: Any) -> None:
    """Benchmark every variant of a run folder, each in its own processes, with the settings the run was made with
    (its config.toml); a benchmark flag given here overrides the saved one."""
    from compresskit.run import RunLayout
    from compresskit.tasks import task_of_run

    layout = RunLayout(o["run_dir"])
    task = task_of_run(layout.root)
    saved = layout.root / "config.toml"
    if saved.is_file():
        o = with_config_file(ctx, o, PIPELINE, saved)
    task.bench_run(task.settings(o), layout)
    console.print(f"bench → {layout.bench / 'bench.json'}")


@app.command(cls=_Command, name="report")
@takes("run_dir", *GATES)
def report_cmd(**o: Any) -> None:
    """Write report.json/.md/.html for a benchmarked run and apply the quality gates."""
    from compresskit.pipeline import report_and_gates

    raise typer.Exit(report_and_gates(o["run_dir"], gate_config(o), console, o["baseline"]))


@app.command(cls=_Command, name="compare")
@takes("out", optional=("out",))
def compare_cmd(baseline: Annotated[Path, typer.Argument(help="The baseline: a run folder or its report.json.")],
                current: Annotated[Path, typer.Argument(help="The run to judge: a run folder or its report.json.")],
                **o: Any) -> None:
    """Compare a run with a baseline run: quality, latency, memory and size, with 95 % intervals.

    Accuracy change with a paired bootstrap interval, p50 latency ratio per batch size (its interval from the spread
    of the benchmark rounds), memory and size; writes compare.json/.md/.html (default: compare/ in CURRENT's
    folder)."""
    from compresskit.reporting.compare import compare
    from compresskit.reporting.compare_render import render_compare_console

    result, paths = compare(baseline, current, o["out"])
    out = Console()
    if not out.is_terminal:  # CI logs: the whole table
        out = Console(width=220)
    out.print(render_compare_console(result))
    console.print(f"comparison: {paths['json']}, {paths['markdown']}, {paths['html']}")


@dataclass(frozen=True)
class Commands:
    """What a task family declares its own commands with (``Task.add_commands``): ``command(name, *options)``
    registers a command that takes those options from ``cli.options.OPTIONS``, as the core's commands do; ``console``
    is stderr, where commands report."""

    app: typer.Typer
    console: Console

    def command(self, name: str, *options: str, optional: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
        """The decorator of one command: ``@cli.command("export", "model", "data", ...)``."""
        def wrap(func: Callable) -> Callable:
            return self.app.command(cls=_Command, name=name)(takes(*options, optional=optional)(func))

        return wrap


for _task in families().values():  # each family's own commands, after the core's
    _task.add_commands(Commands(app, console))


def _close_process_group() -> None:
    """Destroy the torch.distributed process group that a launcher's run (torchrun, accelerate launch) made the
    Trainer create; neither transformers nor accelerate destroys it. Left alive, gloo's worker threads meet
    interpreter shutdown and abort a process whose work had succeeded ("terminate called without an active
    exception", SIGABRT). Called after a successful command only: a rank that failed must not wait for the others
    in a collective shutdown."""
    torch = sys.modules.get("torch")  # commands that never imported torch (predict) have no group to close
    if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main() -> None:
    """Entry point: run the app, turning known failures into one line and an exit code."""
    debug = bool(os.environ.get("COMPRESSKIT_DEBUG"))
    try:
        # Without standalone mode click returns a command's exit code instead of exiting: pass it on.
        code = app(standalone_mode=False)
        code = code if isinstance(code, int) else 0
        if code == 0:
            _close_process_group()
        sys.exit(code)
    except typer.Exit as e:
        if e.exit_code == 0:
            _close_process_group()
        sys.exit(e.exit_code)
    except (UserError, VerificationError) as e:
        console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        console.print("interrupted", style="red")
        sys.exit(130)
    except Exception as e:  # click's usage errors and anything unexpected
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk outside atomic writers
            where = f" while writing {e.filename}" if e.filename else ""
            console.print(f"[bold red]error:[/] no space left on device{where}: free some space and run the same "
                          "command again (finished stages are reused)", highlight=False, soft_wrap=True)
            sys.exit(2)
        # Usage errors (unknown option, bad value) are click exceptions: from click itself in older typer releases,
        # from the copy typer vendors (typer._click) in newer ones, which no longer depend on click. Both carry
        # show() and exit_code (2 for usage), so they are told apart by that rather than by class.
        show, code = getattr(e, "show", None), getattr(e, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        if type(e).__name__ == "Abort":  # click's Ctrl-C at a prompt
            sys.exit(130)
        if debug:
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        console.print(f"[bold red]internal error:[/] {type(e).__name__}: {first} "
                      "(set COMPRESSKIT_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)
