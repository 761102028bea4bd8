"""The text-classification family's own command-line options (its ``Task.options``), and the settings of one run
built from the flags (``settings``): the data's columns, the student's distillation, ONNX export, quantization and
benchmark options. The options every family shares are in ``compresskit.cli.options``.

Defaults come from the stage config dataclasses where their module is light to import (data, export, quantize,
bench); the distillation and training ones are literals, since their modules import torch (tests/test_cli.py checks
them against the dataclasses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import typer

from compresskit.artifacts import UserError
from compresskit.cli.flags import (
    BENCHMARK,
    DATA,
    EXPORT,
    OUTPUT,
    QUANTIZATION,
    STUDENT,
    Opt,
    ints,
    joined,
    load_options,
    panel,
    train_config,
)
from compresskit.tasks.classification.bench import BenchConfig
from compresskit.tasks.classification.data import DataConfig
from compresskit.tasks.classification.export import ExportConfig
from compresskit.tasks.classification.quantize import QuantizeConfig

OPTIONS: dict[str, Opt] = {
    **panel(DATA, {
        "text_column": Opt(str, DataConfig.text_column, typer.Option(
            "--text-column", help="Column holding the input text.")),
        "label_column": Opt(str, DataConfig.label_column, typer.Option(
            "--label-column", help="Column holding the class label.")),
        "drop_unlabeled": Opt(bool, DataConfig.drop_unlabeled, typer.Option(
            "--drop-unlabeled", help="Leave out rows whose label is empty (counted in data.json) instead of refusing "
                                     "the data.")),
    }),
    **panel(STUDENT, {
        "epochs": Opt(float, 4.0, typer.Option("--epochs", help="Epochs of the student's distillation.")),
        "learning_rate": Opt(float, 1e-4, typer.Option(
            "--learning-rate", help="Peak learning rate of the student (AdamW, linear decay after a 10% warm-up).")),
        "temperature": Opt(float, 2.0, typer.Option(
            "--temperature", help="Softmax temperature T of the soft targets; the soft loss is scaled by T².")),
        "alpha": Opt(float, 0.5, typer.Option(
            "--alpha", help="Weight of the soft loss, 0..1; 1-α goes to the hard labels (0: no teacher at all).")),
        "w_soft": Opt(float, 1.0, typer.Option("--w-soft", help="Weight of the α-mixed soft/hard term.")),
        "w_mse_logits": Opt(float, 0.0, typer.Option("--w-mse-logits", help="Weight of MSE between logits.")),
        "w_hidden": Opt(float, 0.0, typer.Option(
            "--w-hidden", help="Weight of the hidden-state term (see --layer-map).")),
        "hidden_loss": Opt(str, "mse", typer.Option("--hidden-loss", help="Hidden-state distance: mse | cosine.")),
        "w_attention": Opt(float, 0.0, typer.Option(
            "--w-attention", help="Weight of the transfer of attention distributions (needs equal head counts).")),
        "w_embedding": Opt(float, 0.0, typer.Option(
            "--w-embedding", help="Weight of MSE between mean-pooled embeddings.")),
        "layer_map": Opt(str, "auto", typer.Option(
            "--layer-map", help="teacher:student layer pairs like 2:0,5:1, or auto.")),
        "unlabeled_data": Opt(Optional[str], None, typer.Option(
            "--unlabeled-data", help="Unlabelled texts (.txt lines or a data file with a text column), learnt from the "
                                     "teacher's soft labels alone.")),
        "labeled_fraction": Opt(float, 1.0, typer.Option(
            "--labeled-fraction", help="Keep labels for this share of the training split; the rest is unlabelled "
                                       "text.")),
        "cache_teacher_activations": Opt(bool, True, typer.Option(
            "--cache-teacher-activations/--no-cache-teacher-activations",
            help="Cache the teacher's hidden states and attentions that loss terms read (float16, on disk) instead of "
                 "running the teacher at every step.")),
    }),
    **panel("Sweep (compresskit sweep)", {
        "students": Opt(str, "0;0,5;0,2,5", typer.Option(
            "--students", help="';'-separated students: teacher layer lists or shape:layers=2,hidden=128."),
            pipeline=False),
        "temperatures": Opt(str, "1,2,4,8", typer.Option("--temperatures", help="Temperatures T of the KD points."),
            pipeline=False),
        "alphas": Opt(str, "0,0.5,0.9", typer.Option(
            "--alphas", help="α values; 0 is the hard-label (no teacher) ablation."), pipeline=False),
        "keep_models": Opt(bool, False, typer.Option(
            "--keep-models", help="Keep every point's student weights (by default only predictions are kept)."),
            pipeline=False),
    }),
    **panel(EXPORT, {
        "exporter": Opt(str, ExportConfig.exporter, typer.Option(
            "--exporter", help="auto (both, keep the faster verified graph) | torchscript | dynamo.")),
        "attention": Opt(str, ExportConfig.attention, typer.Option(
            "--attention", help="Attention traced into the graph: auto (both, measured) | eager | sdpa.")),
        "opset": Opt(int, ExportConfig.opset, typer.Option("--opset", help="ONNX opset.")),
        "optimize": Opt(bool, ExportConfig.optimize, typer.Option(
            "--optimize/--no-optimize", help="Run ONNX Runtime's transformer fusions.")),
        "parity_tolerance": Opt(float, ExportConfig.tolerance, typer.Option(
            "--parity-tolerance", help="Largest allowed |ONNX - PyTorch| logit difference.")),
        "parity_min_agreement": Opt(float, ExportConfig.min_agreement, typer.Option(
            "--parity-min-agreement", help="Smallest allowed share of labels equal to PyTorch's.")),
        "external_data": Opt(str, ExportConfig.external_data, typer.Option(
            "--external-data", help="Weights in model.onnx.data beside model.onnx: auto (when they pass 1.8 GB; one "
                                    "ONNX file holds at most 2) | always | never.")),
        "cls_only": Opt(str, ExportConfig.cls_only, typer.Option(
            "--cls-only", help="Compute the last layer at [CLS] only (exact, BERT classifiers): auto (try both, keep "
                               "the faster) | on | off.")),
        "skip_layer_norm": Opt(str, ExportConfig.skip_layer_norm, typer.Option(
            "--skip-layer-norm", help="Residual Add + LayerNorm as ONNX Runtime's fused SkipLayerNormalization or "
                                      "unfused: auto (time both, keep the faster) | fused | unfused.")),
    }),
    **panel(QUANTIZATION, {
        "quantize": Opt(str, QuantizeConfig.mode, typer.Option(
            "--quantize", help="dynamic-int8 | static-int8 | fp16 | int4 | auto (the fastest mode that holds "
                               "--max-accuracy-drop) | none (distill-and-export: no quantized variant).")),
        "per_channel": Opt(bool, QuantizeConfig.per_channel, typer.Option(
            "--per-channel", help="One scale per output channel of each weight instead of per tensor.")),
        "int8_min_agreement": Opt(float, QuantizeConfig.min_agreement, typer.Option(
            "--int8-min-agreement", help="Smallest allowed share of labels equal to the fp32 model's.")),
        "calibration_samples": Opt(int, QuantizeConfig.calibration_samples, typer.Option(
            "--calibration-samples", help="static-int8: training examples to calibrate on.")),
        "calibration_method": Opt(str, QuantizeConfig.calibration_method, typer.Option(
            "--calibration-method", help="static-int8: minmax | entropy | percentile.")),
    }),
    **panel(BENCHMARK, {
        "batch_sizes": Opt(str, joined(BenchConfig.batch_sizes), typer.Option(
            "--batch-sizes", help="Batch sizes whose latency is measured, comma-separated; export times its candidate "
                                  "graphs at batch 1 and the largest of them.")),
        "sequence_length": Opt(int, BenchConfig.sequence_length, typer.Option(
            "--sequence-length", help="Benchmark tokens per input (every input is padded or truncated to it): the main "
                                      "length, at which accuracy and the report's table are measured.")),
        "seq_lengths": Opt(Optional[str], None, typer.Option(
            "--seq-lengths", help="Workload sweep: more sequence lengths, comma-separated (64,128,256); every batch "
                                  "size is timed at each, and at --sequence-length.")),
        "teacher_forms": Opt(str, joined(BenchConfig.teacher_forms), typer.Option(
            "--teacher-forms", help="Faster PyTorch forms of the teacher measured as baselines: bf16, compile "
                                    "(comma-separated) or none; a form this machine cannot run is recorded as "
                                    "skipped.")),
        "iterations": Opt(int, BenchConfig.min_iterations, typer.Option(
            "--iterations", help="Minimum timed runs per batch size.")),
        "min_seconds": Opt(float, BenchConfig.min_seconds, typer.Option(
            "--min-seconds", help="Minimum timing per batch size, in seconds.")),
        "provider": Opt(str, BenchConfig.provider, typer.Option(
            "--provider", help="ONNX Runtime provider: auto | cpu | cuda | tensorrt.")),
    }),
    **panel(OUTPUT, {
        "json": Opt(bool, False, typer.Option("--json", help="Print JSON lines instead of a table."), pipeline=False),
    }),
}


@dataclass(frozen=True)
class ClassificationConfig:
    """The settings of one text-classification run (``PipelineConfig.settings``), one typed config per stage."""

    data: DataConfig
    distill: Any  # compresskit.tasks.classification.distill.DistillConfig (its module imports torch)
    export: ExportConfig
    quantize: QuantizeConfig
    bench: BenchConfig


def settings(o: dict[str, Any]) -> ClassificationConfig:
    """Every stage's settings for one run, from the resolved flag values ``o``."""
    return ClassificationConfig(data=data_config(o), distill=distill_config(o), export=export_config(o),
                                quantize=quantize_config(o, onnx_device(o["device"])), bench=bench_config(o))


# --- one function per stage config: every command that runs a stage builds its config the same way

def data_config(o: dict[str, Any]) -> DataConfig:
    """The data set and its split."""
    return DataConfig(dataset=o["dataset"], text_column=o["text_column"], label_column=o["label_column"],
                      seed=o["seed"], max_samples=o["max_samples"], drop_unlabeled=o["drop_unlabeled"],
                      validation_fraction=o["validation_fraction"],
                      test_fraction=DataConfig.test_fraction if o["test_fraction"] is None else o["test_fraction"])


def distill_config(o: dict[str, Any]) -> Any:
    """How the student is built and taught (``--epochs``, ``--learning-rate`` are the student's)."""
    from compresskit.tasks.classification.distill import DistillConfig
    from compresskit.tasks.classification.losses import LossWeights

    try:
        weights = LossWeights(soft=o["w_soft"], mse_logits=o["w_mse_logits"], hidden=o["w_hidden"],
                              hidden_kind=o["hidden_loss"], attention=o["w_attention"], embedding=o["w_embedding"])
    except ValueError as e:
        raise UserError(str(e)) from None
    return DistillConfig(temperature=o["temperature"], alpha=o["alpha"], student_layers=o["student_layers"],
                         student=o["student"], student_shape=o["student_shape"], weights=weights,
                         layer_map=o["layer_map"], unlabeled_data=o["unlabeled_data"],
                         labeled_fraction=o["labeled_fraction"],
                         cache_teacher_activations=o["cache_teacher_activations"],
                         train=train_config(o, o["epochs"], o["learning_rate"]), load=load_options(o))


def export_config(o: dict[str, Any]) -> ExportConfig:
    """How to export to ONNX and how strictly to verify."""
    return ExportConfig(opset=o["opset"], exporter=o["exporter"], attention=o["attention"], optimize=o["optimize"],
                        max_length=o["max_length"], tolerance=o["parity_tolerance"],
                        min_agreement=o["parity_min_agreement"], external_data=o["external_data"],
                        cls_only=o["cls_only"], skip_layer_norm=o["skip_layer_norm"],
                        # candidates are timed on the workloads the benchmark measures, not batch 1 alone
                        batch_sizes=ints(o["batch_sizes"]))


def quantize_config(o: dict[str, Any], device: str) -> QuantizeConfig:
    """Which quantization for the ONNX ``device``, and its accuracy budget: ``--max-accuracy-drop``, the same limit
    the accuracy gate applies, or 0.01 when it is not given."""
    budget = o["max_accuracy_drop"]
    return QuantizeConfig(mode=o["quantize"], per_channel=o["per_channel"], min_agreement=o["int8_min_agreement"],
                          max_length=o["max_length"], calibration_samples=o["calibration_samples"],
                          calibration_method=o["calibration_method"], int4_block_size=o["int4_block_size"],
                          device=device, fallback=o["fallback"],
                          max_accuracy_drop=QuantizeConfig.max_accuracy_drop if budget is None else budget)


def bench_config(o: dict[str, Any]) -> BenchConfig:
    """What to measure and how long."""
    forms = () if o["teacher_forms"].strip() in ("", "none") else tuple(
        f.strip() for f in o["teacher_forms"].split(",") if f.strip())
    return BenchConfig(batch_sizes=ints(o["batch_sizes"]), sequence_length=o["sequence_length"],
                       seq_lengths=ints(o["seq_lengths"] or "", "--seq-lengths", "64,128,256"),
                       teacher_forms=forms,
                       min_iterations=o["iterations"], min_seconds=o["min_seconds"],
                       rounds=BenchConfig.rounds if o["rounds"] is None else o["rounds"],
                       threads=o["threads"], device=o["device"], provider=o["provider"])


def onnx_device(device: str) -> str:
    """Where ONNX models will run: CUDA only when asked for (or auto) and ONNX Runtime can use it."""
    from compresskit.onnx.sessions import available_providers

    return "cuda" if device != "cpu" and "CUDAExecutionProvider" in available_providers() else "cpu"
