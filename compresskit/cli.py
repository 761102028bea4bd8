"""Command line: one thin function per stage, and ``distill-and-export`` that runs them in order.

Exit codes: 0 success, 1 internal error, 2 bad input, 3 a converted model failed verification,
4 a quality gate failed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from compresskit.artifacts import UserError, VerificationError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a student from a teacher, export it to ONNX, quantize it, and measure what it buys.")
console = Console(stderr=True)


# Options shared by several commands, declared once so flags and help read the same everywhere.
OptData = Annotated[Path, typer.Option("--data", help="A data folder made by `prepare-data` (or a run's data/).")]
OptDevice = Annotated[str, typer.Option("--device", help="auto (CUDA when present) | cpu | cuda.")]
OptMaxLen = Annotated[int, typer.Option("--max-length", help="Tokens per example; longer texts are truncated.")]
OptTrust = Annotated[bool, typer.Option("--trust-remote-code", help="Allow model code shipped with a hub model.")]
OptPickle = Annotated[bool, typer.Option("--allow-pickle", help="Accept pickle checkpoints (pytorch_model.bin).")]
OptSeed = Annotated[int, typer.Option("--seed", help="Seed for splits, initialisation and shuffling.")]
OptSaveSteps = Annotated[Optional[int], typer.Option("--save-steps", help="Checkpoint and evaluate every N steps (default: each epoch).")]
OptPatience = Annotated[Optional[int], typer.Option("--early-stopping-patience", help="Stop after N evaluations without improvement.")]
OptShape = Annotated[Optional[str], typer.Option("--student-shape", help="Shrunk teacher config, random init: layers=4,hidden=256,heads=4,intermediate=1024.")]
OptWSoft = Annotated[float, typer.Option("--w-soft", help="Weight of the α-mixed soft/hard term.")]
OptWMse = Annotated[float, typer.Option("--w-mse-logits", help="Weight of MSE between logits.")]
OptWHidden = Annotated[float, typer.Option("--w-hidden", help="Weight of the hidden-state term (see --layer-map).")]
OptHiddenKind = Annotated[str, typer.Option("--hidden-loss", help="mse | cosine.")]
OptWAttn = Annotated[float, typer.Option("--w-attention", help="Weight of attention-distribution transfer.")]
OptWEmb = Annotated[float, typer.Option("--w-embedding", help="Weight of MSE between mean-pooled embeddings.")]
OptLayerMap = Annotated[str, typer.Option("--layer-map", help="teacher:student layer pairs like 2:0,5:1, or auto.")]
OptUnlabeled = Annotated[Optional[str], typer.Option("--unlabeled-data", help="Unlabelled texts (.txt lines or a data file with a text column).")]
OptLabeledFraction = Annotated[float, typer.Option("--labeled-fraction", help="Keep labels for this share of the training split; the rest is unlabelled text.")]
OptCalSamples = Annotated[int, typer.Option("--calibration-samples", help="static-int8: training examples to calibrate on.")]
OptCalMethod = Annotated[str, typer.Option("--calibration-method", help="static-int8: minmax | entropy | percentile.")]
OptInt4Block = Annotated[int, typer.Option("--int4-block-size", help="int4: weights per quantization block.")]
OptFallback = Annotated[bool, typer.Option("--fallback/--no-fallback", help="Keep the most sensitive layers in fp32 (measured) until the budget holds.")]
OptResume = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint of an interrupted run.")]
OptClsOnly = Annotated[str, typer.Option("--cls-only", help="Compute the last layer at [CLS] only (exact, BERT classifiers): auto (try both, keep the faster) | on | off.")]
OptSkipLayerNorm = Annotated[str, typer.Option("--skip-layer-norm", help="Residual Add + LayerNorm as ONNX Runtime's fused SkipLayerNormalization or unfused: auto (time both, keep the faster) | fused | unfused.")]
OptCacheActs = Annotated[bool, typer.Option("--cache-teacher-activations/--no-cache-teacher-activations", help="Cache the teacher's hidden states/attentions that loss terms read (float16, on disk) instead of running the teacher at every step.")]
OptFsdp = Annotated[bool, typer.Option("--fsdp", help="Shard the model across the GPUs of a torchrun / accelerate launch job (FSDP2) instead of DDP.")]
OptExternalData = Annotated[str, typer.Option("--external-data", help="Weights in model.onnx.data beside model.onnx: auto (when they pass 1.8 GB; one ONNX file holds at most 2) | always | never.")]


def _load_opts(trust_remote_code: bool, allow_pickle: bool):
    from compresskit.models import LoadOptions

    return LoadOptions(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)


def _train_cfg(epochs: float, batch_size: int, lr: float, max_length: int, device: str, precision: str,
               grad_accum: int, seed: int, save_steps: int | None = None, patience: int | None = None,
               fsdp: bool = False):
    from compresskit.training import TrainConfig

    return TrainConfig(epochs=epochs, batch_size=batch_size, learning_rate=lr, max_length=max_length, device=device,
                       precision=precision, gradient_accumulation=grad_accum, seed=seed, save_steps=save_steps,
                       early_stopping_patience=patience, fsdp=fsdp)


def _distill_cfg(temperature, alpha, student_layers, student, student_shape, w_soft, w_mse_logits, w_hidden,
                 hidden_loss, w_attention, w_embedding, layer_map, unlabeled_data, train, load, labeled_fraction=1.0,
                 cache_teacher_activations=True):
    from compresskit.distill import DistillConfig
    from compresskit.losses import LossWeights

    try:
        weights = LossWeights(soft=w_soft, mse_logits=w_mse_logits, hidden=w_hidden, hidden_kind=hidden_loss,
                              attention=w_attention, embedding=w_embedding)
    except ValueError as e:
        raise UserError(str(e)) from None
    return DistillConfig(temperature=temperature, alpha=alpha, student_layers=student_layers, student=student,
                         student_shape=student_shape, weights=weights, layer_map=layer_map,
                         unlabeled_data=unlabeled_data, labeled_fraction=labeled_fraction, train=train, load=load,
                         cache_teacher_activations=cache_teacher_activations)


def _onnx_device(device: str) -> str:
    """Where ONNX models will run: CUDA only when asked for (or auto) and ONNX Runtime can use it."""
    from compresskit.onnx_runtime import available_providers

    return "cuda" if device != "cpu" and "CUDAExecutionProvider" in available_providers() else "cpu"


def _parse_batch_sizes(spec: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise UserError(f"--batch-sizes must be comma-separated integers like 1,32, got {spec!r}") from None


@app.command("prepare-data")
def prepare_data_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the split to.")],
    dataset: Annotated[str, typer.Option("--dataset", help="bbc-news | CSV/JSONL/Parquet file or folder | datasets name.")] = "bbc-news",
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label",
    max_samples: Annotated[Optional[int], typer.Option("--max-samples", help="Stratified subsample for quick runs.")] = None,
    seed: OptSeed = 42,
) -> None:
    """Load a labelled data set and write a stratified train/validation/test split."""
    from compresskit.data import DataConfig, prepare_data

    r = prepare_data(DataConfig(dataset, text_column, label_column, seed=seed, max_samples=max_samples), out)
    console.print(f"data: {r.sizes} labels={r.labels} → {r.data_dir}")


@app.command("finetune-teacher")
def finetune_cmd(
    teacher: Annotated[str, typer.Option("--teacher", help="Base model: local folder or hub id.")],
    data: OptData,
    out: Annotated[Path, typer.Option("--out", help="Folder for the fine-tuned teacher.")],
    epochs: Annotated[float, typer.Option("--epochs")] = 3.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate")] = 1e-4,
    max_length: OptMaxLen = 128,
    device: OptDevice = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16.")] = "auto",
    gradient_accumulation: Annotated[int, typer.Option("--gradient-accumulation")] = 1,
    seed: OptSeed = 42,
    save_steps: OptSaveSteps = None,
    early_stopping_patience: OptPatience = None,
    fsdp: OptFsdp = False,
    resume: OptResume = False,
    trust_remote_code: OptTrust = False,
    allow_pickle: OptPickle = False,
) -> None:
    """Fine-tune a teacher that has no classification head on the data's labels."""
    from compresskit.finetune import FinetuneConfig, finetune_teacher
    from compresskit.models import resolve_model_source

    cfg = FinetuneConfig(_train_cfg(epochs, batch_size, learning_rate, max_length, device, precision,
                                    gradient_accumulation, seed, save_steps, early_stopping_patience, fsdp),
                         _load_opts(trust_remote_code, allow_pickle))
    r = finetune_teacher(cfg, resolve_model_source(teacher), data, out, resume=resume)
    console.print(f"teacher: validation accuracy {r.validation_accuracy:.4f} → {r.model_dir}")


@app.command("distill")
def distill_cmd(
    teacher: Annotated[Path, typer.Option("--teacher", help="A fine-tuned teacher folder.")],
    data: OptData,
    out: Annotated[Path, typer.Option("--out", help="Folder for the student.")],
    temperature: Annotated[float, typer.Option("--temperature", help="Softmax temperature T of the soft targets.")] = 2.0,
    alpha: Annotated[float, typer.Option("--alpha", help="Weight of the soft loss; 1-α goes to hard labels.")] = 0.5,
    student_layers: Annotated[str, typer.Option("--student-layers", help="Teacher layers the student keeps.")] = "0,5",
    student: Annotated[Optional[str], typer.Option("--student", help="Use this model as the student instead.")] = None,
    student_shape: OptShape = None,
    w_soft: OptWSoft = 1.0,
    w_mse_logits: OptWMse = 0.0,
    w_hidden: OptWHidden = 0.0,
    hidden_loss: OptHiddenKind = "mse",
    w_attention: OptWAttn = 0.0,
    w_embedding: OptWEmb = 0.0,
    layer_map: OptLayerMap = "auto",
    unlabeled_data: OptUnlabeled = None,
    labeled_fraction: OptLabeledFraction = 1.0,
    epochs: Annotated[float, typer.Option("--epochs")] = 4.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate")] = 1e-4,
    max_length: OptMaxLen = 128,
    device: OptDevice = "auto",
    precision: Annotated[str, typer.Option("--precision")] = "auto",
    gradient_accumulation: Annotated[int, typer.Option("--gradient-accumulation")] = 1,
    seed: OptSeed = 42,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Where the teacher's outputs are cached.")] = None,
    cache_teacher_activations: OptCacheActs = True,
    save_steps: OptSaveSteps = None,
    early_stopping_patience: OptPatience = None,
    fsdp: OptFsdp = False,
    resume: OptResume = False,
    trust_remote_code: OptTrust = False,
    allow_pickle: OptPickle = False,
) -> None:
    """Distil a student from a fine-tuned teacher (soft targets at temperature T, mixed with labels by α)."""
    from compresskit.distill import distill
    from compresskit.training import is_main_process

    load = _load_opts(trust_remote_code, allow_pickle)
    cfg = _distill_cfg(temperature, alpha, student_layers, student, student_shape, w_soft, w_mse_logits, w_hidden,
                       hidden_loss, w_attention, w_embedding, layer_map, unlabeled_data,
                       _train_cfg(epochs, batch_size, learning_rate, max_length, device, precision,
                                  gradient_accumulation, seed, save_steps, early_stopping_patience, fsdp), load,
                       labeled_fraction, cache_teacher_activations)
    r = distill(cfg, teacher, data, out, cache_dir or out.parent / ".cache", load, resume=resume)
    if not is_main_process():
        return
    console.print(f"student: {r.parameters:,} parameters, validation accuracy {r.validation_accuracy:.4f} → {r.model_dir}")


@app.command("export")
def export_cmd(
    model: Annotated[Path, typer.Option("--model", help="A classifier folder (teacher or student).")],
    data: OptData,
    out: Annotated[Path, typer.Option("--out", help="Folder for model.onnx and its files.")],
    name: Annotated[str, typer.Option("--name", help="Name used in parity messages.")] = "model",
    exporter: Annotated[str, typer.Option("--exporter", help="auto (both, keep the faster verified) | torchscript | dynamo.")] = "auto",
    attention: Annotated[str, typer.Option("--attention", help="auto | eager | sdpa: attention traced into the graph.")] = "auto",
    opset: Annotated[int, typer.Option("--opset")] = 17,
    optimize: Annotated[bool, typer.Option("--optimize/--no-optimize", help="ONNX Runtime transformer fusions.")] = True,
    tolerance: Annotated[float, typer.Option("--parity-tolerance", help="Max |ONNX-PyTorch| logit difference.")] = 1e-3,
    min_agreement: Annotated[float, typer.Option("--parity-min-agreement")] = 0.995,
    max_length: OptMaxLen = 128,
    external_data: OptExternalData = "auto",
    cls_only: OptClsOnly = "auto",
    skip_layer_norm: OptSkipLayerNorm = "auto",
    allow_pickle: OptPickle = False,
) -> None:
    """Export a classifier to ONNX (dynamic batch and sequence) and verify it against PyTorch."""
    from compresskit.export import ExportConfig, export

    cfg = ExportConfig(opset=opset, exporter=exporter, attention=attention, optimize=optimize, max_length=max_length,
                       tolerance=tolerance, min_agreement=min_agreement, external_data=external_data,
                       cls_only=cls_only, skip_layer_norm=skip_layer_norm)
    r = export(cfg, model, data, out, name, _load_opts(False, allow_pickle))
    console.print(f"export: max |Δ| {r.parity.max_abs_diff:.2e}, agreement {r.parity.label_agreement:.2%} → {r.onnx_dir}")


@app.command("quantize")
def quantize_cmd(
    onnx: Annotated[Path, typer.Option("--onnx", help="An exported folder holding model.onnx.")],
    data: OptData,
    out: Annotated[Path, typer.Option("--out", help="Folder for the quantized model.")],
    mode: Annotated[str, typer.Option("--quantize", help="dynamic-int8 | static-int8 | fp16 | int4 | auto.")] = "dynamic-int8",
    per_channel: Annotated[bool, typer.Option("--per-channel")] = False,
    min_agreement: Annotated[float, typer.Option("--int8-min-agreement", help="Smallest label agreement with fp32.")] = 0.99,
    max_accuracy_drop: Annotated[float, typer.Option("--max-accuracy-drop", help="Largest validation accuracy drop vs fp32.")] = 0.01,
    calibration_samples: OptCalSamples = 64,
    calibration_method: OptCalMethod = "minmax",
    int4_block_size: OptInt4Block = 32,
    fallback: OptFallback = True,
    device: Annotated[str, typer.Option("--device", help="Target: cpu | cuda (decides what auto tries).")] = "cpu",
    name: Annotated[str, typer.Option("--name")] = "model",
    max_length: OptMaxLen = 128,
) -> None:
    """Quantize an ONNX model with ONNX Runtime and verify it against its fp32 self."""
    from compresskit.quantize import QuantizeConfig, quantize

    cfg = QuantizeConfig(mode=mode, per_channel=per_channel, min_agreement=min_agreement, max_length=max_length,
                         calibration_samples=calibration_samples, calibration_method=calibration_method,
                         int4_block_size=int4_block_size, device=device, max_accuracy_drop=max_accuracy_drop,
                         fallback=fallback)
    r = quantize(cfg, onnx, data, out, name)
    console.print(f"quantize: {r.mode}, agreement with fp32 {r.parity.label_agreement:.2%} → {r.onnx_dir}")


@app.command("bench")
def bench_cmd(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="A run folder (see README: run layout).")],
    batch_sizes: Annotated[str, typer.Option("--batch-sizes")] = "1,32",
    sequence_length: Annotated[int, typer.Option("--sequence-length")] = 128,
    threads: Annotated[Optional[int], typer.Option("--threads", help="Default: physical cores.")] = None,
    iterations: Annotated[int, typer.Option("--iterations", help="Minimum timed runs per batch size.")] = 30,
    min_seconds: Annotated[float, typer.Option("--min-seconds", help="Minimum timing per batch size.")] = 3.0,
    device: OptDevice = "auto",
    provider: Annotated[str, typer.Option("--provider", help="ONNX Runtime provider: auto | cpu | cuda | tensorrt.")] = "auto",
) -> None:
    """Benchmark every variant found in a run folder, each in its own process."""
    from compresskit.bench import BenchConfig, bench
    from compresskit.pipeline import discover_variants
    from compresskit.run import RunLayout

    cfg = BenchConfig(_parse_batch_sizes(batch_sizes), sequence_length, min_iterations=iterations,
                      min_seconds=min_seconds, threads=threads, device=device, provider=provider)
    layout = RunLayout(run_dir)
    bench(cfg, discover_variants(layout), layout.data, layout.bench)
    console.print(f"bench → {layout.bench / 'bench.json'}")


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Option("--run-dir", help="A benchmarked run folder.")],
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="e.g. 0.01 = 1 point.")] = None,
    min_speedup: Annotated[Optional[float], typer.Option("--min-speedup")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms")] = None,
) -> None:
    """Write report.json/.md/.html for a benchmarked run and apply the quality gates."""
    from compresskit.pipeline import report_and_gates

    raise typer.Exit(report_and_gates(run_dir, _gates(max_accuracy_drop, min_speedup, max_latency_ms), console))


def _gates(max_accuracy_drop, min_speedup, max_latency_ms):
    from compresskit.gates import GateConfig

    try:
        return GateConfig(max_accuracy_drop, min_speedup, max_latency_ms)
    except ValueError as e:
        raise UserError(str(e)) from None


@app.command("predict")
def predict_cmd(
    folder: Annotated[Path, typer.Argument(help="An exported (or quantized) ONNX folder.")],
    texts: Annotated[list[str], typer.Argument(help="Texts to classify.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Classify texts with an exported folder, using ONNX Runtime alone (torch is not imported)."""
    import json

    from compresskit.runtime import OnnxClassifier

    clf = OnnxClassifier(folder)
    for text, p in zip(texts, clf.predict(texts)):
        if as_json:
            print(json.dumps({"text": text, **p}))
        else:
            print(f"{p['label']}\t{p['score']:.3f}\t{text[:80]}")


@app.command("sweep")
def sweep_cmd(
    teacher: Annotated[Path, typer.Option("--teacher", help="A fine-tuned teacher folder (e.g. a run's teacher/).")],
    data: OptData,
    out: Annotated[Path, typer.Option("--out", help="Folder for the sweep's points and report.")],
    students: Annotated[str, typer.Option("--students", help="';'-separated: teacher layer lists or shape:layers=2,hidden=128.")] = "0;0,5;0,2,5",
    temperatures: Annotated[str, typer.Option("--temperatures")] = "1,2,4,8",
    alphas: Annotated[str, typer.Option("--alphas", help="0 is the hard-label (no teacher) ablation.")] = "0,0.5,0.9",
    epochs: Annotated[float, typer.Option("--epochs")] = 4.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate")] = 1e-4,
    max_length: OptMaxLen = 128,
    device: OptDevice = "auto",
    seed: OptSeed = 42,
    unlabeled_data: OptUnlabeled = None,
    labeled_fraction: OptLabeledFraction = 1.0,
    keep_models: Annotated[bool, typer.Option("--keep-models")] = False,
    threads: Annotated[Optional[int], typer.Option("--threads")] = None,
) -> None:
    """Distil a grid of students (architecture × T × α, with the α=0 ablation) and compare them."""
    from compresskit.bench import BenchConfig
    from compresskit.sweep import SweepConfig, sweep

    def floats(flag: str, spec: str) -> tuple[float, ...]:
        try:
            return tuple(float(x) for x in spec.split(",") if x.strip())
        except ValueError:
            raise UserError(f"{flag} must be comma-separated numbers, got {spec!r}") from None

    cfg = SweepConfig(tuple(s.strip() for s in students.split(";") if s.strip()), floats("--temperatures", temperatures),
                      floats("--alphas", alphas), keep_models=keep_models)
    base = _distill_cfg(2.0, 0.5, "0,5", None, None, 1.0, 0.0, 0.0, "mse", 0.0, 0.0, "auto", unlabeled_data,
                        _train_cfg(epochs, batch_size, learning_rate, max_length, device, "auto", 1, seed),
                        _load_opts(False, False), labeled_fraction)
    bench_cfg = BenchConfig(batch_sizes=(1,), sequence_length=max_length, min_iterations=20, min_seconds=2.0,
                            threads=threads, device=device)
    result = sweep(cfg, base, teacher, data, out, bench_cfg, out / ".cache")
    for c in result["comparisons"]:
        console.print(f"{c['label']}: {c['diff'] * 100:+.2f} points, 95% CI [{c['low'] * 100:+.2f}, {c['high'] * 100:+.2f}]")
    console.print(f"sweep report: {result['paths']['html']}")


@app.command("distill-and-export")
def distill_and_export_cmd(
    teacher: Annotated[str, typer.Option("--teacher", help="Local folder or hub id; default: the bundled all-MiniLM-L6-v2.")] = "all-MiniLM-L6-v2",
    dataset: Annotated[str, typer.Option("--dataset", help="bbc-news | CSV/JSONL/Parquet file or folder | datasets name.")] = "bbc-news",
    text_column: Annotated[str, typer.Option("--text-column")] = "text",
    label_column: Annotated[str, typer.Option("--label-column")] = "label",
    output_root: Annotated[Path, typer.Option("--output-root", help="Where run folders go.")] = Path("export"),
    run_name: Annotated[Optional[str], typer.Option("--run-name", help="Run folder name; default from data and teacher.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a run folder that holds another run.")] = False,
    finetune: Annotated[str, typer.Option("--finetune-teacher", help="auto (when it has no head) | always | never.")] = "auto",
    teacher_epochs: Annotated[float, typer.Option("--teacher-epochs")] = 3.0,
    teacher_learning_rate: Annotated[float, typer.Option("--teacher-learning-rate")] = 1e-4,
    student_layers: Annotated[str, typer.Option("--student-layers", help="Teacher layers the student keeps.")] = "0,5",
    student: Annotated[Optional[str], typer.Option("--student", help="Your own student model instead.")] = None,
    student_shape: OptShape = None,
    w_soft: OptWSoft = 1.0,
    w_mse_logits: OptWMse = 0.0,
    w_hidden: OptWHidden = 0.0,
    hidden_loss: OptHiddenKind = "mse",
    w_attention: OptWAttn = 0.0,
    w_embedding: OptWEmb = 0.0,
    layer_map: OptLayerMap = "auto",
    unlabeled_data: OptUnlabeled = None,
    labeled_fraction: OptLabeledFraction = 1.0,
    temperature: Annotated[float, typer.Option("--temperature")] = 2.0,
    alpha: Annotated[float, typer.Option("--alpha")] = 0.5,
    epochs: Annotated[float, typer.Option("--epochs", help="Student epochs.")] = 4.0,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 16,
    learning_rate: Annotated[float, typer.Option("--learning-rate", help="Student learning rate.")] = 1e-4,
    max_length: OptMaxLen = 128,
    max_samples: Annotated[Optional[int], typer.Option("--max-samples", help="Stratified subsample, for quick runs.")] = None,
    device: OptDevice = "auto",
    precision: Annotated[str, typer.Option("--precision", help="auto | fp32 | bf16 | fp16.")] = "auto",
    gradient_accumulation: Annotated[int, typer.Option("--gradient-accumulation")] = 1,
    seed: OptSeed = 42,
    save_steps: OptSaveSteps = None,
    early_stopping_patience: OptPatience = None,
    exporter: Annotated[str, typer.Option("--exporter", help="auto | torchscript | dynamo.")] = "auto",
    attention: Annotated[str, typer.Option("--attention", help="auto | eager | sdpa.")] = "auto",
    opset: Annotated[int, typer.Option("--opset")] = 17,
    optimize: Annotated[bool, typer.Option("--optimize/--no-optimize")] = True,
    parity_tolerance: Annotated[float, typer.Option("--parity-tolerance")] = 1e-3,
    parity_min_agreement: Annotated[float, typer.Option("--parity-min-agreement")] = 0.995,
    external_data: OptExternalData = "auto",
    cls_only: OptClsOnly = "auto",
    skip_layer_norm: OptSkipLayerNorm = "auto",
    cache_teacher_activations: OptCacheActs = True,
    fsdp: OptFsdp = False,
    quantize: Annotated[str, typer.Option("--quantize", help="dynamic-int8 | static-int8 | fp16 | int4 | auto | none.")] = "dynamic-int8",
    per_channel: Annotated[bool, typer.Option("--per-channel")] = False,
    int8_min_agreement: Annotated[float, typer.Option("--int8-min-agreement")] = 0.99,
    calibration_samples: OptCalSamples = 64,
    calibration_method: OptCalMethod = "minmax",
    int4_block_size: OptInt4Block = 32,
    fallback: OptFallback = True,
    batch_sizes: Annotated[str, typer.Option("--batch-sizes", help="Latency batch sizes.")] = "1,32",
    sequence_length: Annotated[int, typer.Option("--sequence-length", help="Benchmark tokens per input.")] = 128,
    threads: Annotated[Optional[int], typer.Option("--threads")] = None,
    provider: Annotated[str, typer.Option("--provider", help="ONNX Runtime provider: auto | cpu | cuda | tensorrt.")] = "auto",
    iterations: Annotated[int, typer.Option("--iterations")] = 30,
    min_seconds: Annotated[float, typer.Option("--min-seconds")] = 3.0,
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop")] = None,
    min_speedup: Annotated[Optional[float], typer.Option("--min-speedup")] = None,
    max_latency_ms: Annotated[Optional[float], typer.Option("--max-latency-ms")] = None,
    trust_remote_code: OptTrust = False,
    allow_pickle: OptPickle = False,
) -> None:
    """Run the whole pipeline: data → fine-tune teacher → distil → export → quantize → bench → report → gates."""
    from compresskit.bench import BenchConfig
    from compresskit.data import DataConfig
    from compresskit.export import ExportConfig
    from compresskit.finetune import FinetuneConfig
    from compresskit.pipeline import PipelineConfig, run_pipeline
    from compresskit.quantize import QuantizeConfig

    if finetune not in ("auto", "always", "never"):
        raise UserError(f"--finetune-teacher must be auto, always or never, got {finetune!r}")
    load = _load_opts(trust_remote_code, allow_pickle)
    cfg = PipelineConfig(
        teacher=teacher,
        finetune_mode=finetune,
        data=DataConfig(dataset, text_column, label_column, seed=seed, max_samples=max_samples),
        finetune=FinetuneConfig(_train_cfg(teacher_epochs, batch_size, teacher_learning_rate, max_length, device,
                                           precision, gradient_accumulation, seed, fsdp=fsdp), load),
        distill=_distill_cfg(temperature, alpha, student_layers, student, student_shape, w_soft, w_mse_logits,
                             w_hidden, hidden_loss, w_attention, w_embedding, layer_map, unlabeled_data,
                             _train_cfg(epochs, batch_size, learning_rate, max_length, device, precision,
                                        gradient_accumulation, seed, save_steps, early_stopping_patience, fsdp), load,
                             labeled_fraction, cache_teacher_activations),
        export=ExportConfig(opset=opset, exporter=exporter, attention=attention, optimize=optimize,
                            max_length=max_length, tolerance=parity_tolerance, min_agreement=parity_min_agreement,
                            external_data=external_data, cls_only=cls_only, skip_layer_norm=skip_layer_norm),
        quantize=QuantizeConfig(mode=quantize, per_channel=per_channel, min_agreement=int8_min_agreement,
                                max_length=max_length, calibration_samples=calibration_samples,
                                calibration_method=calibration_method, int4_block_size=int4_block_size,
                                device=_onnx_device(device), fallback=fallback,
                                # the same budget the accuracy gate applies, when one is set
                                max_accuracy_drop=0.01 if max_accuracy_drop is None else max_accuracy_drop),
        bench=BenchConfig(_parse_batch_sizes(batch_sizes), sequence_length, min_iterations=iterations,
                          min_seconds=min_seconds, threads=threads, device=device, provider=provider),
        load=load,
    )
    gates = _gates(max_accuracy_drop, min_speedup, max_latency_ms)
    raise typer.Exit(run_pipeline(cfg, output_root, run_name, overwrite, gates, console))


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
