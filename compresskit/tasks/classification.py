"""Text classification with an encoder (BERT family): the task family compresskit started with.

What is classification-specific lives here: labelled texts, a classification head the teacher must have (or be
fine-tuned to), one ``logits`` output per input, parity as logit closeness plus argmax agreement, accuracy /
macro-F1 / agreement as quality, and forward passes at fixed batch sizes as the benchmark workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError
from compresskit.tasks import Column, ExportSpec, Stage, StageContext, Workload


@dataclass(frozen=True)
class Found:
    """What classification's preflight found: the teacher's resolved source, whether it is fine-tuned first, and
    the loaded examples (the data stage writes them without loading again)."""

    source: str
    needs_finetune: bool
    examples: Any  # compresskit.data.Examples


@dataclass(frozen=True)
class TextClassification:
    """The ``text-classification`` task family (see the module docstring)."""

    name: str = "text-classification"
    summary: str = "label texts with an encoder classifier (BERT family); student = fewer/narrower encoder layers"
    needs: str = ("an encoder teacher (a sequence classifier, or a bare encoder that is fine-tuned first) and "
                  "labelled texts: bbc-news, CSV/JSONL/Parquet with text and label columns, <label>/*.txt folders")
    quality_metric: str = "accuracy"

    def default_run_name(self, cfg: Any) -> str:
        """``<data>-<teacher>``, e.g. ``bbc-news-all-minilm-l6-v2``."""
        from compresskit.data import BBC_NEWS
        from compresskit.run import slug

        data = cfg.data.dataset if cfg.data.dataset == BBC_NEWS else Path(cfg.data.dataset).stem
        return slug(f"{data}-{Path(cfg.teacher.rstrip('/')).name}")

    def preflight(self, cfg: Any, cache: Path) -> Found:
        """The teacher's config and the data, checked before anything is written: labels, the student's layers,
        whether the teacher's head fits, and whether the graph can be one ONNX file when ``--external-data never``."""
        from compresskit.export import use_external_data
        from compresskit.models import (estimated_weight_bytes, layer_count, parse_layers, read_config,
                                        resolve_model_source)

        source = resolve_model_source(cfg.teacher)
        config = read_config(source, cfg.load)
        examples = self.load_examples(cfg.data)
        if cfg.distill.student is None and cfg.distill.student_shape is None:
            parse_layers(cfg.distill.student_layers, layer_count(config))
        if cfg.export.external_data == "never":
            # export refuses a model over one protobuf file's limit; find out now, not after hours of distillation
            weights = estimated_weight_bytes(config)
            if weights is not None:
                use_external_data(weights, "never")
        return Found(source, self.check_teacher(config, examples.labels, cfg.finetune_mode, cfg.teacher), examples)

    def stages(self, ctx: StageContext) -> list[Stage]:
        """data → teacher (fine-tuned when it has no head) → distill → export → quantize (unless ``none``) →
        baseline (TF-IDF) → bench."""
        cfg, found = ctx.cfg, ctx.found
        origin = cfg.distill.student or (f"shape {cfg.distill.student_shape}" if cfg.distill.student_shape
                                         else f"teacher layers {cfg.distill.student_layers}")
        stages = [
            Stage("data", found.examples.source, lambda: _data_stage(ctx)),
            Stage("teacher", found.source, lambda: _teacher_stage(ctx)),
            Stage("distill", f"T={cfg.distill.temperature}, α={cfg.distill.alpha}, student={origin}, "
                             f"terms={cfg.distill.weights.active()}", lambda: _distill_stage(ctx)),
            Stage("export", f"{cfg.export.exporter}, opset {cfg.export.opset}, parity on validation",
                  lambda: _export_stage(ctx, self)),
        ]
        if cfg.quantize.mode != "none":
            stages.append(Stage("quantize", cfg.quantize.mode, lambda: _quantize_stage(ctx, self)))
        stages.append(Stage("baseline", "TF-IDF + logistic regression on the training split",
                            lambda: _baseline_stage(ctx)))
        stages.append(Stage("bench", f"batch sizes {cfg.bench.sizes}, sequence {cfg.bench.lengths}, each "
                                     "variant in its own process", lambda: _bench_stage(ctx, self)))
        return stages

    def load_examples(self, cfg: Any) -> Any:
        """Texts and label names from ``cfg`` (a ``DataConfig``); at least two distinct labels."""
        from compresskit.data import load_examples

        examples = load_examples(cfg)
        labels = sorted(set(examples.labels))
        if len(labels) < 2:
            raise UserError(f"{examples.source} has {len(labels)} distinct label(s); classification needs at least 2")
        return examples

    def check_teacher(self, config: Any, targets: list[str], finetune_mode: str, source: str) -> bool:
        """A teacher without a classification head is fine-tuned first (``--finetune-teacher auto``); one with a head
        must know every label of the data unless it is fine-tuned anyway."""
        from compresskit.models import is_classifier, match_labels

        has_head = is_classifier(config)
        needs_finetune = finetune_mode == "always" or (finetune_mode == "auto" and not has_head)
        if not needs_finetune:
            if not has_head:
                raise UserError(f"teacher {source} has no classification head and --finetune-teacher is never")
            match_labels(config, sorted(set(targets)), source)
        return needs_finetune

    def export_spec(self, input_names: Sequence[str]) -> ExportSpec:
        """Token tensors in, one row of logits per input out; batch and sequence stay dynamic."""
        from compresskit.torch_export import logits_export_spec

        return logits_export_spec(input_names)

    def parity(self, model: str, reference: str, got: np.ndarray, want: np.ndarray, tolerance: float | None,
               min_agreement: float, targets: np.ndarray | None = None) -> Any:
        """Logits within ``tolerance`` (None: not checked, as for quantized models) and predicted labels agreeing on
        at least ``min_agreement`` of the inputs."""
        from compresskit.verify import compare

        return compare(model, reference, got, want, tolerance, min_agreement, targets)

    def quality(self, outputs: np.ndarray, gold: np.ndarray, reference: np.ndarray | None, classes: int
                ) -> dict[str, float | None]:
        """Accuracy and macro-F1 of the predicted labels ``outputs`` against ``gold``, and agreement with the
        reference teacher's predictions ``reference``."""
        from compresskit.bench import label_quality

        return label_quality(outputs, gold, reference, classes)

    def workloads(self, batch_sizes: Sequence[int], sequence_length: int) -> list[Workload]:
        """One forward pass over ``batch`` padded inputs, for batch 1 and each requested size."""
        return [Workload(b, sequence_length) for b in sorted({1, *batch_sizes})]

    def report_columns(self) -> list[Column]:
        """Accuracy and agreement in percent, macro-F1 as a fraction."""
        return [Column("accuracy (%)", "accuracy", scale=100), Column("macro-F1", "macro_f1", "{:.4f}"),
                Column("agreement (%)", "agreement_with_teacher", scale=100)]


TEXT_CLASSIFICATION = TextClassification()


# ---------------------------------------------------------------- the stages of distill-and-export


def _data_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.data import prepare_data
    from compresskit.run import reuse_or_make

    note = reuse_or_make(ctx.layout, ctx.layout.data,
                         lambda: prepare_data(ctx.cfg.data, ctx.layout.data, examples=ctx.found.examples),
                         record_file="data.json")
    data = read_json(ctx.layout.data / "data.json")
    return [f"{data['sizes']} · labels: {', '.join(data['labels'])}", note]


def _teacher_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.finetune import cached_or_finetune
    from compresskit.run import link_tree, record_stage, reuse_or_make

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
        lines = ["already a classifier: used as it is"]
    record_stage(layout, "teacher", {"path": str(teacher_dir), "source": cfg.teacher,
                                     "finetuned": ctx.found.needs_finetune})
    return lines


def _download_teacher(source: str, layout: Any, load: Any) -> Path:
    """A hub-id classifier, saved into the run folder so every later stage reads a local folder."""
    from compresskit.models import load_classifier, load_tokenizer

    if not (layout.teacher / "config.json").is_file():
        model, tok = load_classifier(source, load), load_tokenizer(source, load)
        model.save_pretrained(layout.teacher)
        tok.save_pretrained(layout.teacher)
    return layout.teacher


def _distill_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.distill import distill
    from compresskit.run import record_stage, reuse_or_make

    layout, teacher = ctx.layout, ctx.layout.recorded_teacher()
    note = reuse_or_make(layout, layout.student, lambda: distill(
        ctx.cfg.distill, teacher, layout.data, layout.student, ctx.cache, ctx.cfg.load, resume=ctx.resumed),
        (layout.data, teacher), "distill.json")
    rec = read_json(layout.student / "distill.json")
    record_stage(layout, "distill", {"path": str(layout.student)})
    return [f"{rec['parameters']:,} parameters, {rec['layers']} layers, validation accuracy "
            f"{rec['best_validation_accuracy']:.4f} ({rec['seconds']:.0f} s on {rec['device']}, {rec['precision']})",
            note]


def _export_stage(ctx: StageContext, task: TextClassification) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.export import export
    from compresskit.run import record_stage, reuse_or_make

    layout, lines = ctx.layout, []
    for name, folder in (("teacher", layout.recorded_teacher()), ("student", layout.student)):
        note = reuse_or_make(layout, layout.onnx(name), lambda name=name, folder=folder: export(
            ctx.cfg.export, folder, layout.data, layout.onnx(name), name, ctx.cfg.load, task),
            (layout.data, folder), "export.json")
        p = read_json(layout.onnx(name) / "export.json")["parity"]
        lines.append(f"{name}: max |Δlogit| {p['max_abs_diff']:.2e}, label agreement {p['label_agreement']:.2%}")
        lines.append(note)
    record_stage(layout, "export", {"teacher": str(layout.onnx("teacher")), "student": str(layout.onnx("student"))})
    return lines


def _quantize_stage(ctx: StageContext, task: TextClassification) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.quantize import quantize
    from compresskit.run import record_stage, reuse_or_make

    layout, cfg = ctx.layout, ctx.cfg
    note = reuse_or_make(layout, layout.onnx("student-quantized"), lambda: quantize(
        cfg.quantize, layout.onnx("student"), layout.data, layout.onnx("student-quantized"), "student", task),
        (layout.data, layout.onnx("student")), "quantize.json")
    q = read_json(layout.onnx("student-quantized") / "quantize.json")
    p = q["parity"]
    record_stage(layout, "quantize", {"path": str(layout.onnx("student-quantized"))})
    return [f"mode {q.get('mode', cfg.quantize.mode)}",
            f"label agreement with fp32 {p['label_agreement']:.2%}, accuracy {p['accuracy_reference']:.4f} → "
            f"{p['accuracy_model']:.4f}", note]


def _baseline_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.baseline import RECORD_FILE, TfidfConfig, fit_baseline
    from compresskit.run import record_stage, reuse_or_make

    layout, folder = ctx.layout, ctx.layout.baseline
    # like every stage's output: reused only while whole and made from the same data, else fitted again
    note = reuse_or_make(layout, folder, lambda: fit_baseline(TfidfConfig(), layout.data, folder), (layout.data,),
                         RECORD_FILE)
    rec = read_json(folder / RECORD_FILE)
    record_stage(layout, "baseline", {"path": str(folder)})
    val = rec["validation_accuracy"]
    return [f"C={rec['c']:g}, {rec['parameters']:,} parameters"
            + (f", validation accuracy {val:.4f}" if val is not None else "") + f" ({rec['seconds']:.0f} s)", note]


def _bench_stage(ctx: StageContext, task: TextClassification) -> list[str]:
    from compresskit.bench import bench
    from compresskit.variants import discover_variants

    bench(ctx.cfg.bench, discover_variants(ctx.layout, ctx.cfg.bench.teacher_forms), ctx.layout.data,
          ctx.layout.bench, task)
    return []
