"""``distill-and-export``: the task's stages in order over one run folder, and the report with its quality gates.

The task family (``compresskit.tasks``) says which stages run and what each does; this module holds what every
task shares: the checks before anything is written, the run folder and its identity, the numbered steps, the
report and the gates. Each stage calls a stage function over artifacts on disk; a rerun of the same configuration
in the same folder reuses the stages that finished (a killed CI job resumes), and always measures and reports
afresh.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from compresskit.gates import GateConfig, evaluate_gates, failed_gates
from compresskit.models import LoadOptions
from compresskit.run import RunLayout, claim_run_dir, run_lock
from compresskit.tasks import get_task, task_of_run
from compresskit.tasks.protocol import StageContext
from compresskit.training import FinetuneConfig

GATE_EXIT = 4


@dataclass(frozen=True)
class PipelineConfig:
    """Every setting of one run: what all families share, and the family's own (``settings``)."""

    teacher: str
    """The teacher as given (``--teacher``), or the family's embedded one."""
    task: str
    """``--task`` as given: ``auto`` or a family's name (the run's identity keeps what the user asked for)."""
    family: str
    """The family that runs (``--task``, or the one ``tasks.resolve_task`` found for the teacher)."""
    finetune_mode: str  # auto | always | never
    finetune: FinetuneConfig
    """The teacher's fine-tuning, when the family fine-tunes it (``--teacher-epochs``, …)."""
    load: LoadOptions
    settings: Any
    """The family's settings for this run (its ``Task.settings``: one typed config per stage)."""


def run_pipeline(cfg: PipelineConfig, output_root: Path, run_name: str | None, overwrite: bool,
                 gates: GateConfig, console: Console, options: dict | None = None, baseline: Path | None = None
                 ) -> int:
    """Run the task's stages into ``output_root/run_name``, then the report and its gates; returns the exit code
    (0, or 4 when a gate failed).

    ``options``, the command's resolved flags, are saved as the run's ``config.toml`` (``--config`` repeats the run).
    ``baseline`` (``--baseline``), a run folder or report.json, is what the regression gates compare with.
    """
    started = time.time()
    if baseline is not None:  # a mistyped baseline is refused now, not after the whole run
        from compresskit.reporting.compare import load_report

        load_report(baseline)
    task = get_task(cfg.family)
    cache = Path(output_root) / ".cache"
    found = task.preflight(cfg, cache)  # everything that can be checked before anything is written
    layout = RunLayout(Path(output_root) / (run_name or task.default_run_name(cfg)))
    with run_lock(layout):  # a second run on this folder is refused at once instead of mixing into this one
        resumed = claim_run_dir(layout, task.identity(cfg), overwrite, task.name)
        if options is not None:
            from compresskit.cli.config_file import write_config_file

            write_config_file(layout.root / "config.toml", options)
        if resumed:
            console.print(f"[yellow]resuming the run in {layout.root}: finished stages are reused[/]")
        stages = task.stages(StageContext(cfg, found, layout, cache, resumed))
        step = _Steps(console, len(stages) + 1)
        for stage in stages:
            step(stage.name, stage.detail)
            for line in stage.run():
                console.print(f"    {line}", highlight=False)

        step("report", str(layout.root))
        code = report_and_gates(layout.root, gates, console, baseline)
    console.print(f"done in {time.time() - started:.0f} s")
    return code


def report_and_gates(run_dir: Path, gates: GateConfig, console: Console, baseline: Path | None = None) -> int:
    """Write the report of a benchmarked run, print its table, apply the gates; returns the exit code.

    With ``baseline`` (a run folder or report.json) the run is compared with it first (``reporting.compare``;
    different test sets are refused before anything is written), the regression gates judge that comparison, and
    compare.json/.md/.html go to ``run_dir/compare/``.
    """
    from compresskit.reporting.render import render_console_table, render_verdict_console
    from compresskit.reporting.report import build_report, validate_report, write_report

    task = task_of_run(Path(run_dir))
    collected = build_report(Path(run_dir), task)
    comparison = None
    if baseline is not None:
        from compresskit.reporting.compare import compare_reports, load_report

        base_report, base_path = load_report(baseline)
        comparison = compare_reports(base_report, collected.to_dict(),
                                     sources=(str(base_path), str(Path(run_dir) / "report.json")))
    from compresskit.decision import budget_of, decide
    from compresskit.deploy import write_deploy

    decision = decide(collected.to_dict(), task, *budget_of(gates, task.default_budget))
    results = evaluate_gates(gates, collected.variants, task, comparison, decision)
    report = dataclasses.replace(collected, gates=[r.to_dict() for r in results], comparison=comparison,
                                 decision=decision).to_dict()
    problems = validate_report(report)
    if problems:  # our own output: a mismatch is a bug, not a user error
        raise RuntimeError(f"report.json does not match its schema: {problems[0]}")
    paths = write_report(report, Path(run_dir))
    shipped = write_deploy(Path(run_dir), report, task)
    out = Console()
    if not out.is_terminal:  # CI logs: keep the whole table rather than squeezing it into 80 columns
        out = Console(width=220)
    out.print(render_verdict_console(report))  # the answer first, then the figures it rests on
    out.print(render_console_table(report))
    console.print(f"report: {paths['json']}, {paths['markdown']}, {paths['html']}")
    if shipped:
        console.print(f"deploy: {shipped} ({decision['chosen']}, model card {shipped / 'README.md'})", highlight=False)
    elif decision["chosen"] is None:
        console.print("deploy: nothing ships (nothing meets the budget)", highlight=False)
    else:
        console.print(f"deploy: {decision['chosen']} has no model folder to ship", highlight=False)
    if comparison is not None:
        from compresskit.reporting.compare import write_comparison
        from compresskit.reporting.compare_render import render_compare_console

        compared = write_comparison(comparison, Path(run_dir) / "compare")
        out.print(render_compare_console(comparison))
        console.print(f"comparison: {compared['json']}, {compared['markdown']}, {compared['html']}")
    for r in results:
        console.print(f"{'[green]PASS' if r.passed else '[red]FAIL'}[/] gate {r.name}: {r.detail}", highlight=False)
    failed = failed_gates(results)
    if failed:
        console.print(f"[bold red]error:[/] {len(failed)} quality gate(s) failed: "
                      + "; ".join(f"{r.name} ({r.detail})" for r in failed), highlight=False, soft_wrap=True)
        return GATE_EXIT
    return 0


class _Steps:
    """Numbered stage headers on the console."""

    def __init__(self, console: Console, total: int):
        self.console, self.total, self.n = console, total, 0

    def __call__(self, name: str, detail: str) -> None:
        self.n += 1
        self.console.rule(f"[bold]{self.n}/{self.total} {name}[/] · {detail}", align="left")
