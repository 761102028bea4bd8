"""``distill-and-export``: the stages in order over one run folder, and the report with its quality gates.

Each step calls a stage function over artifacts on disk; a rerun of the same configuration in the same folder
reuses the stages that finished (a killed CI job resumes), and always measures and reports afresh.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from compresskit.artifacts import read_json
from compresskit.bench import BenchConfig, bench
from compresskit.data import BBC_NEWS, DataConfig, Examples, prepare_data
from compresskit.distill import DistillConfig, distill
from compresskit.export import ExportConfig, export, use_external_data
from compresskit.finetune import FinetuneConfig, cached_or_finetune
from compresskit.gates import GateConfig, evaluate_gates, failed_gates
from compresskit.models import (
    LoadOptions,
    estimated_weight_bytes,
    layer_count,
    parse_layers,
    read_config,
    resolve_model_source,
)
from compresskit.quantize import QuantizeConfig, quantize
from compresskit.run import RunLayout, claim_run_dir, link_tree, record_stage, slug
from compresskit.tasks import Task, resolve_task
from compresskit.variants import discover_variants

GATE_EXIT = 4


@dataclass(frozen=True)
class PipelineConfig:
    """Every stage's settings for one run."""

    teacher: str
    finetune_mode: str  # auto | always | never
    data: DataConfig
    finetune: FinetuneConfig
    distill: DistillConfig
    export: ExportConfig
    quantize: QuantizeConfig
    bench: BenchConfig
    load: LoadOptions
    task: str = "auto"
    """The task family (``--task``): ``auto`` infers it from the teacher's config (see ``compresskit.tasks``)."""


def default_run_name(cfg: PipelineConfig) -> str:
    """``<data>-<teacher>``, e.g. ``bbc-news-all-minilm-l6-v2``."""
    data = cfg.data.dataset if cfg.data.dataset == BBC_NEWS else Path(cfg.data.dataset).stem
    return slug(f"{data}-{Path(cfg.teacher.rstrip('/')).name}")


def identity_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The options that shape artifacts (gates do not: they only judge a finished run)."""
    return dataclasses.asdict(cfg)


@dataclass(frozen=True)
class Preflight:
    """What the checks before the run found: the teacher's resolved source, the task, whether the teacher is
    fine-tuned first, and the loaded examples (so the data stage does not load them twice)."""

    source: str
    task: Task
    needs_finetune: bool
    examples: Examples


def _preflight(cfg: PipelineConfig) -> Preflight:
    """Check everything that can be checked before anything is written: teacher, task, data, labels."""
    source = resolve_model_source(cfg.teacher)
    config = read_config(source, cfg.load)
    task = resolve_task(cfg.task, config)
    examples = task.load_examples(cfg.data)
    if cfg.distill.student is None and cfg.distill.student_shape is None:
        parse_layers(cfg.distill.student_layers, layer_count(config))
    if cfg.export.external_data == "never":
        # export refuses a model over one protobuf file's limit; find out now, not after hours of distillation
        weights = estimated_weight_bytes(config)
        if weights is not None:
            use_external_data(weights, "never")
    needs_finetune = task.check_teacher(config, examples.labels, cfg.finetune_mode, cfg.teacher)
    return Preflight(source, task, needs_finetune, examples)


def run_pipeline(cfg: PipelineConfig, output_root: Path, run_name: str | None, overwrite: bool,
                 gates: GateConfig, console: Console, options: dict | None = None) -> int:
    """Run all stages into ``output_root/run_name``; returns the exit code (0, or 4 when a gate failed).

    ``options``, the command's resolved flags, are saved as the run's ``config.toml`` (``--config`` repeats the run).
    """
    started = time.time()
    pre = _preflight(cfg)
    source, needs_finetune = pre.source, pre.needs_finetune
    layout = RunLayout(Path(output_root) / (run_name or default_run_name(cfg)))
    resumed = claim_run_dir(layout, identity_config(cfg), overwrite)
    if options is not None:
        from compresskit.config_file import write_config_file

        write_config_file(layout.root / "config.toml", options)
    cache = Path(output_root) / ".cache"
    step = _Steps(console, 7 if cfg.quantize.mode != "none" else 6)
    if resumed:
        console.print(f"[yellow]resuming the run in {layout.root}: finished stages are reused[/]")

    step("data", pre.examples.source)
    if not (layout.data / "data.json").is_file():
        prepare_data(cfg.data, layout.data, examples=pre.examples)
    data = read_json(layout.data / "data.json")
    console.print(f"    {data['sizes']} · labels: {', '.join(data['labels'])}")

    step("teacher", source)
    if needs_finetune:
        ft = cached_or_finetune(cfg.finetune, source, layout.data, cache)
        if not (layout.teacher / "finetune.json").is_file():
            link_tree(ft.model_dir, layout.teacher)
        teacher_dir = layout.teacher
        console.print(f"    fine-tuned{' (cached)' if ft.reused else ''}: validation accuracy "
                      f"{ft.validation_accuracy:.4f}")
    else:
        teacher_dir = Path(source) if Path(source).is_dir() else _download_teacher(source, layout, cfg.load)
        console.print("    already a classifier: used as it is")
    record_stage(layout, "teacher", {"path": str(teacher_dir), "source": cfg.teacher, "finetuned": needs_finetune})

    origin = cfg.distill.student or (f"shape {cfg.distill.student_shape}" if cfg.distill.student_shape
                                     else f"teacher layers {cfg.distill.student_layers}")
    step("distill", f"T={cfg.distill.temperature}, α={cfg.distill.alpha}, student={origin}, "
                    f"terms={cfg.distill.weights.active()}")
    if not (layout.student / "distill.json").is_file():
        distill(cfg.distill, teacher_dir, layout.data, layout.student, cache, cfg.load, resume=resumed)
    rec = read_json(layout.student / "distill.json")
    console.print(f"    {rec['parameters']:,} parameters, {rec['layers']} layers, validation accuracy "
                  f"{rec['best_validation_accuracy']:.4f} ({rec['seconds']:.0f} s on {rec['device']}, {rec['precision']})")
    record_stage(layout, "distill", {"path": str(layout.student)})

    step("export", f"{cfg.export.exporter}, opset {cfg.export.opset}, parity on validation")
    for name, folder in (("teacher", teacher_dir), ("student", layout.student)):
        if not (layout.onnx(name) / "export.json").is_file():
            export(cfg.export, folder, layout.data, layout.onnx(name), name, cfg.load, pre.task)
        p = read_json(layout.onnx(name) / "export.json")["parity"]
        console.print(f"    {name}: max |Δlogit| {p['max_abs_diff']:.2e}, label agreement {p['label_agreement']:.2%}")
    record_stage(layout, "export", {"teacher": str(layout.onnx("teacher")), "student": str(layout.onnx("student"))})

    if cfg.quantize.mode != "none":
        step("quantize", cfg.quantize.mode)
        if not (layout.onnx("student-quantized") / "quantize.json").is_file():
            quantize(cfg.quantize, layout.onnx("student"), layout.data, layout.onnx("student-quantized"), "student",
                     pre.task)
        q = read_json(layout.onnx("student-quantized") / "quantize.json")
        p = q["parity"]
        console.print(f"    mode {q.get('mode', cfg.quantize.mode)}")
        console.print(f"    label agreement with fp32 {p['label_agreement']:.2%}, accuracy "
                      f"{p['accuracy_reference']:.4f} → {p['accuracy_model']:.4f}")
        record_stage(layout, "quantize", {"path": str(layout.onnx("student-quantized"))})

    step("bench", f"batch sizes {cfg.bench.sizes}, sequence {cfg.bench.sequence_length}, each variant in its own process")
    bench(cfg.bench, discover_variants(layout), layout.data, layout.bench, pre.task)

    step("report", str(layout.root))
    code = report_and_gates(layout.root, gates, console)
    console.print(f"done in {time.time() - started:.0f} s")
    return code


def _download_teacher(source: str, layout: RunLayout, load: LoadOptions) -> Path:
    """A hub-id classifier, saved into the run folder so every later stage reads a local folder."""
    from compresskit.models import load_classifier, load_tokenizer

    if not (layout.teacher / "config.json").is_file():
        model, tok = load_classifier(source, load), load_tokenizer(source, load)
        model.save_pretrained(layout.teacher)
        tok.save_pretrained(layout.teacher)
    return layout.teacher


def report_and_gates(run_dir: Path, gates: GateConfig, console: Console) -> int:
    """Write the report of a benchmarked run, print its table, apply the gates; returns the exit code."""
    from compresskit.report import build_report, render_console_table, validate_report, write_report
    from compresskit.tasks import get_task

    collected = build_report(Path(run_dir))
    results = evaluate_gates(gates, collected.variants, get_task(collected.task).quality_metric)
    report = dataclasses.replace(collected, gates=[r.to_dict() for r in results]).to_dict()
    problems = validate_report(report)
    if problems:  # our own output: a mismatch is a bug, not a user error
        raise RuntimeError(f"report.json does not match its schema: {problems[0]}")
    paths = write_report(report, Path(run_dir))
    out = Console()
    if not out.is_terminal:  # CI logs: keep the whole table rather than squeezing it into 80 columns
        out = Console(width=220)
    out.print(render_console_table(report))
    console.print(f"report: {paths['json']}, {paths['markdown']}, {paths['html']}")
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
