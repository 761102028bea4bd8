"""Text classification with an encoder (BERT family): the ``text-classification`` family's ``Task``.

What is classification-specific lives in this package: labelled texts, a classification head the teacher must have
(or be fine-tuned to), one ``logits`` output per input, parity as logit closeness plus argmax agreement, accuracy /
macro-F1 / agreement as quality, forward passes at fixed batch sizes as the benchmark workload, and the TF-IDF
baseline every report carries. This module says what the core calls; the stages are the package's other modules.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError
from compresskit.tasks.classification import decision
from compresskit.tasks.classification.data import TASK
from compresskit.tasks.classification.models import DEFAULT_TEACHER
from compresskit.tasks.classification.options import OPTIONS, ClassificationConfig, settings
from compresskit.tasks.classification.report import METRICS, collect, graph_changes, graph_lines, metrics, timing_lines
from compresskit.tasks.protocol import Collected, Column, Stage, StageContext


@dataclass(frozen=True)
class Found:
    """What classification's preflight found: the teacher's resolved source, whether it is fine-tuned first, and
    the loaded examples (the data stage writes them without loading again)."""

    source: str
    needs_finetune: bool
    examples: Any  # compresskit.tasks.classification.data.Examples


@dataclass(frozen=True)
class TextClassification:
    """The ``text-classification`` task family (see the module docstring)."""

    name: str = TASK
    summary: str = "label texts with an encoder classifier (BERT family); student = fewer/narrower encoder layers"
    needs: str = ("an encoder teacher (a sequence classifier, or a bare encoder that is fine-tuned first) and "
                  "labelled texts: bbc-news, CSV/JSONL/Parquet with text and label columns, <label>/*.txt folders")
    default_teacher: str = DEFAULT_TEACHER
    teacher_aliases: tuple[str, ...] = (f"sentence-transformers/{DEFAULT_TEACHER}",)
    quality_metric: str = "accuracy"
    agreement_metric: str = "agreement_with_teacher"
    perplexity_metric: str | None = None
    quality_fields: tuple[str, ...] = METRICS
    options: dict[str, Any] = field(default_factory=lambda: OPTIONS)
    default_budget: dict[str, float] = field(default_factory=lambda: dict(decision.DEFAULT_BUDGET))

    def accepts(self, config: Any) -> bool:
        """Every teacher that is not a causal language model: an encoder, with or without a classification head."""
        from compresskit.models import is_causal_lm_config

        return not is_causal_lm_config(config)

    def settings(self, o: dict[str, Any]) -> ClassificationConfig:
        """Data, distillation, export, quantization and benchmark settings from the flags (``options.settings``)."""
        return settings(o)

    def default_run_name(self, cfg: Any) -> str:
        """``<data>-<teacher>``, e.g. ``bbc-news-all-minilm-l6-v2``."""
        from compresskit.run import default_run_name

        return default_run_name(cfg.settings.data.dataset, cfg.teacher)

    def identity(self, cfg: Any) -> dict[str, Any]:
        """Every setting of the run but the gates: the teacher and how it is fine-tuned and loaded, and every
        stage's config."""
        return {"teacher": cfg.teacher, "task": cfg.task, "finetune_mode": cfg.finetune_mode,
                "finetune": dataclasses.asdict(cfg.finetune), "load": dataclasses.asdict(cfg.load),
                **dataclasses.asdict(cfg.settings)}

    def preflight(self, cfg: Any, cache: Path) -> Found:
        """The teacher's config and the data, checked before anything is written: labels, the student's layers,
        whether the teacher's head fits, and whether the graph can be one ONNX file when ``--external-data never``."""
        from compresskit.models import layer_count, read_config
        from compresskit.tasks.classification.export import use_external_data
        from compresskit.tasks.classification.models import estimated_weight_bytes, parse_layers, resolve_teacher

        source = resolve_teacher(cfg.teacher)
        config = read_config(source, cfg.load)
        examples = load_labelled(cfg.settings.data)
        if cfg.settings.distill.student is None and cfg.settings.distill.student_shape is None:
            from transformers import AutoModelForSequenceClassification

            from compresskit.models import check_prunable

            layers = parse_layers(cfg.settings.distill.student_layers, layer_count(config))
            check_prunable(config, AutoModelForSequenceClassification, layers)
        if cfg.settings.export.external_data == "never":
            # export refuses a model over one protobuf file's limit; find out now, not after hours of distillation
            weights = estimated_weight_bytes(config)
            if weights is not None:
                use_external_data(weights, "never")
        return Found(source, check_teacher(config, examples.labels, cfg.finetune_mode, cfg.teacher), examples)

    def stages(self, ctx: StageContext) -> list[Stage]:
        """data → teacher (fine-tuned when it has no head) → distill → export → quantize (unless ``none``) →
        baseline (TF-IDF) → bench."""
        s, found = ctx.cfg.settings, ctx.found
        origin = s.distill.student or (f"shape {s.distill.student_shape}" if s.distill.student_shape
                                         else f"teacher layers {s.distill.student_layers}")
        stages = [
            Stage("data", found.examples.source, lambda: _data_stage(ctx)),
            Stage("teacher", found.source, lambda: _teacher_stage(ctx)),
            Stage("distill", f"T={s.distill.temperature}, α={s.distill.alpha}, student={origin}, "
                             f"terms={s.distill.weights.active()}", lambda: _distill_stage(ctx)),
            Stage("export", f"{s.export.exporter}, opset {s.export.opset}, parity on validation",
                  lambda: _export_stage(ctx)),
        ]
        if s.quantize.mode != "none":
            stages.append(Stage("quantize", s.quantize.mode, lambda: _quantize_stage(ctx)))
        stages.append(Stage("baseline", "TF-IDF + logistic regression on the training split",
                            lambda: _baseline_stage(ctx)))
        stages.append(Stage("bench", f"batch sizes {s.bench.sizes}, sequence {s.bench.lengths}, each "
                                     "variant in its own process", lambda: _bench_stage(ctx)))
        return stages

    def bench_run(self, settings: ClassificationConfig, layout: Any) -> None:
        """Every variant in the run folder (the teacher's PyTorch forms of ``--teacher-forms`` among them) on the
        test split, each in its own processes."""
        from compresskit.tasks.classification.bench import bench, discover_variants

        bench(settings.bench, discover_variants(layout, settings.bench.teacher_forms), layout.data, layout.bench)

    def add_commands(self, cli: Any) -> None:
        """The family's own commands (``commands.add_commands``)."""
        from compresskit.tasks.classification.commands import add_commands

        add_commands(cli)

    def collect(self, layout: Any) -> Collected:
        """Each ONNX graph's parity check and build record, and the test split's gold label ids."""
        return collect(layout)

    def report_columns(self) -> list[Column]:
        """Accuracy and agreement in percent, macro-F1 as a fraction."""
        return [Column("accuracy (%)", "accuracy", scale=100), Column("macro-F1", "macro_f1", "{:.4f}"),
                Column("agreement (%)", "agreement_with_teacher", scale=100)]

    def report_lines(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """How the latencies were taken (rounds of fresh processes, timed runs and seconds)."""
        return timing_lines(report)

    def report_sections(self, report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
        """How each ONNX graph was built: exporter, fusions, SkipLayerNormalization form, fp32 fallbacks."""
        return [("ONNX graphs", graph_lines(report))]

    def metrics(self, row: dict[str, Any]) -> dict[str, float]:
        """Accuracy, macro-F1 and agreement with the teacher."""
        return metrics(row)

    def decision_workloads(self, variants: list[dict[str, Any]]) -> list[Any]:
        """``decision.workloads``."""
        return decision.workloads(variants)

    def budget_interval(self, gate: str, row: dict[str, Any], teacher: dict[str, Any], report: dict[str, Any]
                        ) -> tuple[float, float] | None:
        """``decision.budget_interval``."""
        return decision.budget_interval(gate, row, teacher, report)

    def value_interval(self, field: str, row: dict[str, Any], report: dict[str, Any]) -> tuple[float, float] | None:
        """``decision.value_interval``."""
        return decision.value_interval(field, row, report)

    def card(self, report: dict[str, Any], row: dict[str, Any]) -> Any:
        """``decision.card``."""
        return decision.card(report, row)

    def compare_notes(self, baseline: dict[str, Any], current: dict[str, Any], common: list[str]) -> dict[str, Any]:
        """``graph_changes``: the exported models whose shipped graph differs between the two runs."""
        rows = [v for v in current.get("variants") or [] if v.get("name") in common]
        return {"graph_changes": graph_changes(baseline, current, rows)}


TEXT_CLASSIFICATION = TextClassification()


def load_labelled(cfg: Any) -> Any:
    """Texts and label names from ``cfg`` (a ``DataConfig``); at least two distinct labels."""
    from compresskit.tasks.classification.data import load_examples

    examples = load_examples(cfg)
    labels = sorted(set(examples.labels))
    if len(labels) < 2:
        raise UserError(f"{examples.source} has {len(labels)} distinct label(s); classification needs at least 2")
    return examples


def check_teacher(config: Any, targets: list[str], finetune_mode: str, source: str) -> bool:
    """A teacher without a classification head is fine-tuned first (``--finetune-teacher auto``); one with a head
    must know every label of the data unless it is fine-tuned anyway."""
    from compresskit.tasks.classification.models import is_classifier, match_labels

    has_head = is_classifier(config)
    needs_finetune = finetune_mode == "always" or (finetune_mode == "auto" and not has_head)
    if not needs_finetune:
        if not has_head:
            raise UserError(f"teacher {source} has no classification head and --finetune-teacher is never")
        match_labels(config, sorted(set(targets)), source)
    return needs_finetune


# ---------------------------------------------------------------- the stages of distill-and-export


def _data_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import reuse_or_make
    from compresskit.tasks.classification.data import prepare_data

    note = reuse_or_make(ctx.layout, ctx.layout.data,
                         lambda: prepare_data(ctx.cfg.settings.data, ctx.layout.data, examples=ctx.found.examples),
                         record_file="data.json")
    data = read_json(ctx.layout.data / "data.json")
    return [f"{data['sizes']} · labels: {', '.join(data['labels'])}", note]


def _teacher_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import link_tree, record_stage, reuse_or_make
    from compresskit.tasks.classification.finetune import cached_or_finetune

    cfg, layout, source = ctx.cfg, ctx.layout, ctx.found.source
    if ctx.found.needs_finetune:
        made = []

        def make() -> None:
            made.append(cached_or_finetune(cfg.finetune, source, layout.data, ctx.cache))
            link_tree(made[0].model_dir, layout.teacher)

        note = reuse_or_make(layout, layout.teacher, make, (layout.data,), "finetune.json")
        teacher_dir = layout.teacher
        accuracy = read_json(layout.teacher / "finetune.json").get("best_validation_accuracy")
        lines = [f"fine-tuned{' (cached)' if not made or made[0].reused else ''}: validation accuracy {accuracy:.4f}",
                 note] + ([f"cache entry made again: {made[0].damaged}"] if made and made[0].damaged else [])
    else:
        teacher_dir = Path(source) if Path(source).is_dir() else _download_teacher(source, layout, cfg.load)
        teacher_dir, named = _name_generic_head(teacher_dir, layout, cfg.load)
        lines = ["already a classifier: used as it is"] + named
    record_stage(layout, "teacher", {"path": str(teacher_dir), "source": cfg.teacher,
                                     "finetuned": ctx.found.needs_finetune})
    return lines


HEAD_LABELS = "head_labels.json"
"""The record of a generic head named after the data's labels (``_name_generic_head``)."""


def _name_generic_head(teacher_dir: Path, layout: Any, load: Any) -> tuple[Path, list[str]]:
    """A head whose labels have generic names (``LABEL_0``, ``LABEL_1``…: what transformers writes unless told
    otherwise) gets the data's names, once, here: the run's ``teacher/`` becomes the teacher's files as hard links
    with a ``config.json`` whose ``id2label`` holds the names ``models.match_labels`` gave each output (the data's
    labels in sorted order), so every later stage (distill, export's labels.json, the benchmark's gold ids) reads one
    mapping. Before, the benchmark looked the data's names up in ``LABEL_i`` and scored every variant 0 %. Returns
    the teacher folder to use and the console lines; a head with real names is used as it is."""
    from compresskit.artifacts import read_json, write_json
    from compresskit.models import read_config
    from compresskit.run import link_tree, reuse_or_make
    from compresskit.tasks.classification.data import read_labels
    from compresskit.tasks.classification.models import head_labels, match_labels

    config = read_config(str(teacher_dir), load)
    generic = head_labels(config)
    labels = match_labels(config, read_labels(layout.data), str(teacher_dir))
    if generic == labels:
        return teacher_dir, []
    out = layout.teacher

    def name() -> None:
        if Path(teacher_dir).resolve() != Path(out).resolve():
            link_tree(teacher_dir, out)
        raw = read_json(out / "config.json")
        raw["id2label"] = {str(i): n for i, n in enumerate(labels)}
        raw["label2id"] = {n: i for i, n in enumerate(labels)}
        write_json(out / "config.json", raw)  # atomic: it replaces the hard link, the teacher's own file is kept
        write_json(out / HEAD_LABELS, {"source": str(teacher_dir), "head": generic, "labels": labels,
                                       "rule": "output i is the i-th of the data's labels in sorted order"})

    if Path(teacher_dir).resolve() == Path(out).resolve():  # a downloaded teacher: the run's own copy
        name()
        note = f"named {out.name}/'s head in place"
    else:
        note = reuse_or_make(layout, out, name, (layout.data,), HEAD_LABELS)
    pairs = ", ".join(f"{g} = {n}" for g, n in zip(generic, labels))
    return out, [f"its head names its outputs {', '.join(generic)}: read as the data's labels in sorted order "
                 f"({pairs})", note]


def _download_teacher(source: str, layout: Any, load: Any) -> Path:
    """A hub-id classifier, saved into the run folder so every later stage reads a local folder."""
    from compresskit.models import load_tokenizer
    from compresskit.tasks.classification.models import load_classifier

    if not (layout.teacher / "config.json").is_file():
        model, tok = load_classifier(source, load), load_tokenizer(source, load)
        model.save_pretrained(layout.teacher)
        tok.save_pretrained(layout.teacher)
    return layout.teacher


def _distill_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import record_stage, reuse_or_make
    from compresskit.tasks.classification.distill import distill

    layout, teacher = ctx.layout, ctx.layout.recorded_teacher()
    note = reuse_or_make(layout, layout.student, lambda: distill(
        ctx.cfg.settings.distill, teacher, layout.data, layout.student, ctx.cache, ctx.cfg.load, resume=ctx.resumed),
        (layout.data, teacher), "distill.json")
    rec = read_json(layout.student / "distill.json")
    record_stage(layout, "distill", {"path": str(layout.student)})
    return [f"{rec['parameters']:,} parameters, {rec['layers']} layers, validation accuracy "
            f"{rec['best_validation_accuracy']:.4f} ({rec['seconds']:.0f} s on {rec['device']}, {rec['precision']})",
            note]


def _export_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import record_stage, reuse_or_make
    from compresskit.tasks.classification.export import export

    layout, lines = ctx.layout, []
    for name, folder in (("teacher", layout.recorded_teacher()), ("student", layout.student)):
        note = reuse_or_make(layout, layout.onnx(name), lambda name=name, folder=folder: export(
            ctx.cfg.settings.export, folder, layout.data, layout.onnx(name), name, ctx.cfg.load),
            (layout.data, folder), "export.json")
        p = read_json(layout.onnx(name) / "export.json")["parity"]
        lines.append(f"{name}: max |Δlogit| {p['max_abs_diff']:.2e}, label agreement {p['label_agreement']:.2%}")
        lines.append(note)
    record_stage(layout, "export", {"teacher": str(layout.onnx("teacher")), "student": str(layout.onnx("student"))})
    return lines


def _quantize_stage(ctx: StageContext) -> list[str]:
    """The student's graph quantized, then the teacher's through the same ``QuantizeConfig`` (mode, ``auto``'s
    choice, the accuracy budget and its fallback), so every report answers "does distillation buy anything over
    quantizing the teacher?". The student's graph is what ships: its failing verification fails the run. The
    teacher's is a reference: its failing verification is recorded and printed, and the run goes on without it."""
    import shutil

    from compresskit.artifacts import VerificationError, read_json
    from compresskit.run import record_stage, reuse_or_make
    from compresskit.tasks.classification.quantize import quantize

    layout, cfg = ctx.layout, ctx.cfg

    def one(name: str) -> list[str]:
        source, out = layout.onnx(name), layout.onnx(f"{name}-quantized")
        note = reuse_or_make(layout, out, lambda: quantize(cfg.settings.quantize, source, layout.data, out, name),
                             (layout.data, source), "quantize.json")
        q = read_json(out / "quantize.json")
        p = q["parity"]
        # the reuse note keeps its own first word ("reused …", "made …": what readers of the console look for); it
        # names the folder, so it needs no prefix
        return [f"{name}: mode {q.get('mode', cfg.settings.quantize.mode)}",
                f"{name}: label agreement with fp32 {p['label_agreement']:.2%}, accuracy "
                f"{p['accuracy_reference']:.4f} → {p['accuracy_model']:.4f}", note]

    lines = one("student")
    info: dict[str, Any] = {"path": str(layout.onnx("student-quantized")),
                            "teacher": str(layout.onnx("teacher-quantized"))}
    try:
        lines += one("teacher")
    except VerificationError as e:
        # quantize publishes its folder only once verified, so this attempt wrote nothing; a folder left by an earlier
        # attempt, from a teacher graph since made again, must not be benchmarked as this graph's
        shutil.rmtree(layout.onnx("teacher-quantized"), ignore_errors=True)
        reason = (str(e).strip().splitlines() or ["verification failed"])[0]
        info.update(teacher=None, teacher_not_quantized=reason)
        lines.append(f"teacher: not quantized: {reason}")
    record_stage(layout, "quantize", info)
    return lines


def _baseline_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import record_stage, reuse_or_make
    from compresskit.tasks.classification.baseline import RECORD_FILE, TfidfConfig, fit_baseline

    layout, folder = ctx.layout, ctx.layout.baseline
    # like every stage's output: reused only while whole and made from the same data, else fitted again
    note = reuse_or_make(layout, folder, lambda: fit_baseline(TfidfConfig(), layout.data, folder), (layout.data,),
                         RECORD_FILE)
    rec = read_json(folder / RECORD_FILE)
    record_stage(layout, "baseline", {"path": str(folder)})
    val = rec["validation_accuracy"]
    return [f"C={rec['c']:g}, {rec['parameters']:,} parameters"
            + (f", validation accuracy {val:.4f}" if val is not None else "") + f" ({rec['seconds']:.0f} s)", note]


def _bench_stage(ctx: StageContext) -> list[str]:
    TEXT_CLASSIFICATION.bench_run(ctx.cfg.settings, ctx.layout)
    return []
