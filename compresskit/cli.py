"""Command line: one thin function per stage, and ``distill-and-export`` that runs them in order.

Every option is declared once, in ``compresskit.options``; a command names the options it takes and builds its
stage's config from them with the ``*_config`` functions below, which every command that runs that stage shares.

Exit codes: 0 success, 1 internal error, 2 bad input, 3 a converted model failed verification,
4 a quality gate failed.
"""

from __future__ import annotations

import errno
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from compresskit.artifacts import UserError, VerificationError
from compresskit.options import OPTIONS, check_choices, takes

if TYPE_CHECKING:  # the stage modules import torch: commands import them when they run, not at start-up
    from compresskit.bench import BenchConfig
    from compresskit.data import DataConfig
    from compresskit.distill import DistillConfig
    from compresskit.export import ExportConfig
    from compresskit.finetune import FinetuneConfig
    from compresskit.gates import GateConfig
    from compresskit.models import LoadOptions
    from compresskit.pipeline import PipelineConfig
    from compresskit.quantize import QuantizeConfig
    from compresskit.training import TrainConfig

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a student from a teacher, export it to ONNX, quantize it, and measure what it buys.")
console = Console(stderr=True)

# The options of each stage, as the commands that run the stage take them.
LOAD = ("trust_remote_code", "allow_pickle")
DATA = ("dataset", "text_column", "label_column", "max_samples", "drop_unlabeled", "validation_fraction",
        "test_fraction", "seed")
TRAIN = ("batch_size", "max_length", "device", "precision", "gradient_accumulation", "seed", "save_steps",
         "early_stopping_patience", "fsdp")
DISTILL = ("temperature", "alpha", "student_layers", "student", "student_shape", "w_soft", "w_mse_logits", "w_hidden",
           "hidden_loss", "w_attention", "w_embedding", "layer_map", "unlabeled_data", "labeled_fraction",
           "cache_teacher_activations", "epochs", "learning_rate", *TRAIN)
EXPORT = ("exporter", "attention", "opset", "optimize", "parity_tolerance", "parity_min_agreement", "max_length",
          "external_data", "cls_only", "skip_layer_norm", "batch_sizes")
QUANTIZE = ("quantize", "per_channel", "int8_min_agreement", "max_accuracy_drop", "calibration_samples",
            "calibration_method", "int4_block_size", "fallback", "max_length")
BENCH = ("batch_sizes", "seq_lengths", "sequence_length", "teacher_forms", "threads", "iterations", "min_seconds",
         "rounds", "device", "provider")
GATES = ("max_accuracy_drop", "min_speedup", "max_latency_ms", "max_perplexity_ratio", "min_agreement",
         "baseline", "max_accuracy_regression", "max_latency_regression")
LM = ("kd_divergence", "jsd_beta", "kd_temperature", "kd_alpha", "on_policy", "max_steps", "teacher_topk",
      "student_depth", "layer_choice", "lm_learning_rate", "lm_batch_size", "lm_max_length", "lm_window", "lm_tasks",
      "max_article_words", "lm_train_prompts", "lm_train_texts", "lm_test_prompts", "lm_heldout_texts",
      "max_new_tokens", "perplexity_window", "ttft_prompt_lengths", "lm_repeats", "decode_tokens",
      "lm_export_candidates", "verify_steps", "verify_prompts", "lm_quantize", "int4_accuracy_level", "int4_algorithm",
      "lm_quant_min_agreement", "lm_quant_max_perplexity_ratio")
PIPELINE = ("config", "task", "teacher", *DATA, "output_root", "run_name", "overwrite", "finetune_teacher",
            "teacher_epochs", "teacher_learning_rate", *DISTILL, *EXPORT, *QUANTIZE, *BENCH, *LM, *GATES, *LOAD)
NOT_SAVED = ("config", "overwrite")
"""Options of distill-and-export that are not settings of the run: its saved config.toml leaves them out (a reload
with ``overwrite = true`` would delete the run it means to repeat)."""


# --- one function per stage config: every command that runs a stage builds its config the same way

def load_options(o: dict[str, Any]) -> LoadOptions:
    """How far to trust model sources (``--trust-remote-code``, ``--allow-pickle``)."""
    from compresskit.models import LoadOptions

    return LoadOptions(trust_remote_code=o["trust_remote_code"], allow_pickle=o["allow_pickle"])


def data_config(o: dict[str, Any]) -> DataConfig:
    """The data set and its split."""
    from compresskit.data import DataConfig

    return DataConfig(dataset=o["dataset"], text_column=o["text_column"], label_column=o["label_column"],
                      seed=o["seed"], max_samples=o["max_samples"], drop_unlabeled=o["drop_unlabeled"],
                      validation_fraction=o["validation_fraction"],
                      test_fraction=DataConfig.test_fraction if o["test_fraction"] is None else o["test_fraction"])


def train_config(o: dict[str, Any], epochs: float, learning_rate: float, checkpoints: bool = True) -> TrainConfig:
    """Optimisation settings of one training run; ``checkpoints=False`` leaves out ``--save-steps`` and
    ``--early-stopping-patience`` (distill-and-export gives them to the student only)."""
    from compresskit.training import TrainConfig

    return TrainConfig(epochs=epochs, learning_rate=learning_rate, batch_size=o["batch_size"],
                       max_length=o["max_length"], device=o["device"], precision=o["precision"],
                       gradient_accumulation=o["gradient_accumulation"], seed=o["seed"], fsdp=o["fsdp"],
                       save_steps=o["save_steps"] if checkpoints else None,
                       early_stopping_patience=o["early_stopping_patience"] if checkpoints else None)


def finetune_config(o: dict[str, Any], checkpoints: bool = True) -> FinetuneConfig:
    """The teacher's fine-tuning (``--teacher-epochs``, ``--teacher-learning-rate`` and the shared training flags)."""
    from compresskit.finetune import FinetuneConfig

    return FinetuneConfig(train_config(o, o["teacher_epochs"], o["teacher_learning_rate"], checkpoints),
                          load_options(o))


def distill_config(o: dict[str, Any]) -> DistillConfig:
    """How the student is built and taught (``--epochs``, ``--learning-rate`` are the student's)."""
    from compresskit.distill import DistillConfig
    from compresskit.losses import LossWeights

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
    from compresskit.export import ExportConfig

    return ExportConfig(opset=o["opset"], exporter=o["exporter"], attention=o["attention"], optimize=o["optimize"],
                        max_length=o["max_length"], tolerance=o["parity_tolerance"],
                        min_agreement=o["parity_min_agreement"], external_data=o["external_data"],
                        cls_only=o["cls_only"], skip_layer_norm=o["skip_layer_norm"],
                        # candidates are timed on the workloads the benchmark measures, not batch 1 alone
                        batch_sizes=_parse_batch_sizes(o["batch_sizes"]))


def quantize_config(o: dict[str, Any], device: str) -> QuantizeConfig:
    """Which quantization for the ONNX ``device``, and its accuracy budget: ``--max-accuracy-drop``, the same limit
    the accuracy gate applies, or 0.01 when it is not given."""
    from compresskit.quantize import QuantizeConfig

    budget = o["max_accuracy_drop"]
    return QuantizeConfig(mode=o["quantize"], per_channel=o["per_channel"], min_agreement=o["int8_min_agreement"],
                          max_length=o["max_length"], calibration_samples=o["calibration_samples"],
                          calibration_method=o["calibration_method"], int4_block_size=o["int4_block_size"],
                          device=device, fallback=o["fallback"],
                          max_accuracy_drop=QuantizeConfig.max_accuracy_drop if budget is None else budget)


def bench_config(o: dict[str, Any]) -> BenchConfig:
    """What to measure and how long."""
    from compresskit.bench import BenchConfig

    forms = () if o["teacher_forms"].strip() in ("", "none") else tuple(
        f.strip() for f in o["teacher_forms"].split(",") if f.strip())
    return BenchConfig(batch_sizes=_parse_batch_sizes(o["batch_sizes"]), sequence_length=o["sequence_length"],
                       seq_lengths=_parse_batch_sizes(o["seq_lengths"] or "", "--seq-lengths", "64,128,256"),
                       teacher_forms=forms,
                       min_iterations=o["iterations"], min_seconds=o["min_seconds"],
                       rounds=BenchConfig.rounds if o["rounds"] is None else o["rounds"],
                       threads=o["threads"], device=o["device"], provider=o["provider"])


def gate_config(o: dict[str, Any]) -> GateConfig:
    """The quality gates; a limit left out is no gate."""
    from compresskit.gates import GateConfig

    try:
        cfg = GateConfig(max_accuracy_drop=o["max_accuracy_drop"], min_speedup=o["min_speedup"],
                         max_latency_ms=o["max_latency_ms"], max_perplexity_ratio=o["max_perplexity_ratio"],
                         min_agreement=o["min_agreement"], max_accuracy_regression=o["max_accuracy_regression"],
                         max_latency_regression=o["max_latency_regression"])
    except ValueError as e:
        raise UserError(str(e)) from None
    if o["baseline"] is None and (cfg.max_accuracy_regression is not None or cfg.max_latency_regression is not None):
        raise UserError("--max-accuracy-regression and --max-latency-regression compare with a baseline: pass "
                        "--baseline RUN_FOLDER|report.json")
    return cfg


def pipeline_config(o: dict[str, Any]) -> PipelineConfig:
    """Every stage's settings for one distill-and-export run."""
    from compresskit.pipeline import PipelineConfig

    check_choices(o)
    return PipelineConfig(teacher=o["teacher"], finetune_mode=o["finetune_teacher"], data=data_config(o),
                          # --save-steps and --early-stopping-patience are the student's here
                          finetune=finetune_config(o, checkpoints=False), distill=distill_config(o),
                          export=export_config(o), quantize=quantize_config(o, _onnx_device(o["device"])),
                          bench=bench_config(o), load=load_options(o), task=o["task"], lm=lm_config(o))


def lm_config(o: dict[str, Any]) -> Any:
    """The causal-LM family's settings (used when the task is causal-lm, given or inferred)."""
    from compresskit.lm.bench import LMBenchConfig
    from compresskit.lm.distill import LMDistillConfig
    from compresskit.lm.export import LMExportConfig
    from compresskit.lm.kd_losses import LMKDConfig
    from compresskit.lm.onnx_verify import DecoderParity
    from compresskit.lm.prepare import LMDataConfig
    from compresskit.lm.quantize import LMQuantizeConfig
    from compresskit.lm.prompts import BBCPromptConfig
    from compresskit.tasks.causal_lm import LMConfig
    from compresskit.training import TrainConfig

    # The causal-LM split keeps its own test share: its held-out sets are counted in prompts and windows
    # (--lm-test-prompts, --lm-heldout-texts), not the whole test split.
    test_fraction = BBCPromptConfig.test_fraction if o["test_fraction"] is None else o["test_fraction"]
    prompts = BBCPromptConfig(validation_fraction=o["validation_fraction"], test_fraction=test_fraction,
                              seed=o["seed"], max_article_words=o["max_article_words"], max_articles=o["max_samples"],
                              kinds=tuple(k.strip() for k in o["lm_tasks"].split(",") if k.strip()))
    data = LMDataConfig(dataset=o["dataset"], prompts=prompts, train_prompts=o["lm_train_prompts"],
                        train_texts=o["lm_train_texts"], test_prompts=o["lm_test_prompts"],
                        heldout_texts=o["lm_heldout_texts"], max_new_tokens=o["max_new_tokens"])
    kd = LMKDConfig(divergence=o["kd_divergence"], beta=o["jsd_beta"], temperature=o["kd_temperature"],
                    alpha=o["kd_alpha"])
    train = TrainConfig(batch_size=o["lm_batch_size"], learning_rate=o["lm_learning_rate"],
                        max_length=o["lm_max_length"], device=o["device"], precision=o["precision"],
                        gradient_accumulation=o["gradient_accumulation"], seed=o["seed"], fsdp=o["fsdp"])
    distill = LMDistillConfig(kd=kd, student_layers=o["student_layers"], student_depth=o["student_depth"],
                              layer_choice=o["layer_choice"], student=o["student"],
                              student_shape=o["student_shape"], on_policy_fraction=o["on_policy"],
                              max_steps=o["max_steps"], teacher_topk=o["teacher_topk"],
                              window=o["lm_window"], train=train)
    bench = LMBenchConfig(window=o["perplexity_window"], max_heldout=o["lm_heldout_texts"],
                          max_prompts=o["lm_test_prompts"], max_new_tokens=o["max_new_tokens"],
                          prompt_lengths=tuple(int(n) for n in _floats("--ttft-prompt-lengths",
                                                                        o["ttft_prompt_lengths"])),
                          decode_tokens=o["decode_tokens"], repeats=o["lm_repeats"], threads=o["threads"],
                          rounds=LMBenchConfig.rounds if o["rounds"] is None else o["rounds"], device=o["device"])
    export = LMExportConfig(candidates=_names(o["lm_export_candidates"]), verify_prompts=o["verify_prompts"],
                            parity=DecoderParity(steps=o["verify_steps"]), threads=o["threads"])
    quantize = LMQuantizeConfig(precisions=() if o["lm_quantize"].strip() == "none" else _names(o["lm_quantize"]),
                                block_size=o["int4_block_size"], accuracy_level=o["int4_accuracy_level"],
                                algorithm=o["int4_algorithm"],
                                min_agreement=o["lm_quant_min_agreement"],
                                max_perplexity_ratio=o["lm_quant_max_perplexity_ratio"],
                                max_fallbacks=LMQuantizeConfig.max_fallbacks if o["fallback"] else 0)
    return LMConfig(data=data, distill=distill, bench=bench, export=export, quantize=quantize)


def _names(text: str) -> tuple[str, ...]:
    """``a, b`` → ``("a", "b")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def with_config_file(ctx: typer.Context, o: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """``o`` with the values of ``--config``'s file, except for the flags given on the command line, which win."""
    if o["config"] is None:
        return o
    from compresskit.config_file import read_config_file

    types = {n: OPTIONS[n].value_type for n in names if n not in NOT_SAVED}
    from_file = read_config_file(o["config"], types)
    # compared by name: typer's click (vendored in new releases) has its own ParameterSource class
    given = {n for n in from_file if ctx.get_parameter_source(n).name == "COMMANDLINE"}
    return o | {n: v for n, v in from_file.items() if n not in given}


def fine_tuned_teacher(o: dict[str, Any]) -> Path:
    """``--teacher`` for the commands that read a fine-tuned teacher (distill, sweep): a folder as it is (the stage
    checks it); a name through ``resolve_model_source``, so the bundled default maps to its folder (a bare encoder,
    which distill refuses with the way to fine-tune it) and a mistyped path is said to be missing."""
    from compresskit.models import resolve_model_source

    folder = Path(o["teacher"])
    return folder if folder.exists() else Path(resolve_model_source(o["teacher"]))


def _onnx_device(device: str) -> str:
    """Where ONNX models will run: CUDA only when asked for (or auto) and ONNX Runtime can use it."""
    from compresskit.onnx_runtime import available_providers

    return "cuda" if device != "cpu" and "CUDAExecutionProvider" in available_providers() else "cpu"


def _parse_batch_sizes(spec: str, flag: str = "--batch-sizes", example: str = "1,32") -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag} must be comma-separated integers like {example}, got {spec!r}") from None


def _floats(flag: str, spec: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag} must be comma-separated numbers, got {spec!r}") from None


# --- the commands

@app.command("prepare-data")
@takes("out", *DATA)
def prepare_data_cmd(**o: Any) -> None:
    """Load a labelled data set and write a stratified train/validation/test split."""
    from compresskit.data import prepare_data

    r = prepare_data(data_config(o), o["out"])
    console.print(f"data: {r.sizes} labels={r.labels} → {r.data_dir}")


@app.command("finetune-teacher")
@takes("teacher", "data", "out", "teacher_epochs", "teacher_learning_rate", *TRAIN, "resume", *LOAD)
def finetune_cmd(**o: Any) -> None:
    """Fine-tune a teacher that has no classification head on the data's labels."""
    from compresskit.finetune import finetune_teacher
    from compresskit.models import resolve_model_source

    r = finetune_teacher(finetune_config(o), resolve_model_source(o["teacher"]), o["data"], o["out"],
                         resume=o["resume"])
    console.print(f"teacher: validation accuracy {r.validation_accuracy:.4f} → {r.model_dir}")


@app.command("distill")
@takes("teacher", "data", "out", *DISTILL, "cache_dir", "resume", *LOAD)
def distill_cmd(**o: Any) -> None:
    """Distil a student from a fine-tuned teacher (soft targets at temperature T, mixed with labels by α)."""
    from compresskit.distill import distill
    from compresskit.training import is_main_process

    out = o["out"]
    r = distill(distill_config(o), fine_tuned_teacher(o), o["data"], out, o["cache_dir"] or out.parent / ".cache",
                load_options(o), resume=o["resume"])
    if not is_main_process():
        return
    console.print(f"student: {r.parameters:,} parameters, validation accuracy {r.validation_accuracy:.4f} "
                  f"→ {r.model_dir}")


@app.command("export")
@takes("model", "data", "out", "name", *EXPORT, "allow_pickle")
def export_cmd(**o: Any) -> None:
    """Export a classifier to ONNX (dynamic batch and sequence) and verify it against PyTorch."""
    from compresskit.export import export

    r = export(export_config(o), o["model"], o["data"], o["out"], o["name"], load_options(o))
    console.print(f"export: max |Δ| {r.parity.max_abs_diff:.2e}, agreement {r.parity.label_agreement:.2%} "
                  f"→ {r.onnx_dir}")


@app.command("quantize")
@takes("onnx", "data", "out", *QUANTIZE, "device", "name")
def quantize_cmd(**o: Any) -> None:
    """Quantize an ONNX model with ONNX Runtime and verify it against its fp32 self."""
    from compresskit.quantize import quantize

    # auto targets CUDA when ONNX Runtime can use it; cpu and cuda are taken as asked (quantize checks cuda)
    device = _onnx_device("auto") if o["device"] == "auto" else o["device"]
    r = quantize(quantize_config(o, device), o["onnx"], o["data"], o["out"], o["name"])
    console.print(f"quantize: {r.mode}, agreement with fp32 {r.parity.label_agreement:.2%} → {r.onnx_dir}")


@app.command("bench")
@takes("run_dir", *BENCH)
def bench_cmd(**o: Any) -> None:
    """Benchmark every variant found in a run folder, each in its own process."""
    from compresskit.artifacts import read_json
    from compresskit.bench import bench
    from compresskit.run import RunLayout
    from compresskit.variants import discover_variants

    layout = RunLayout(o["run_dir"])
    data = layout.data / "data.json"
    if data.is_file() and read_json(data).get("task") == "causal-lm":  # a causal-LM run measures generation
        from compresskit.lm.bench import LMBenchConfig, bench_lm
        from compresskit.tasks.causal_lm import lm_variants

        bench_lm(LMBenchConfig(threads=o["threads"], device=o["device"],
                               rounds=LMBenchConfig.rounds if o["rounds"] is None else o["rounds"]),
                 lm_variants(layout, layout.recorded_teacher()), layout.data, layout.bench)
    else:
        cfg = bench_config(o)
        bench(cfg, discover_variants(layout, cfg.teacher_forms), layout.data, layout.bench)
    console.print(f"bench → {layout.bench / 'bench.json'}")


@app.command("report")
@takes("run_dir", *GATES)
def report_cmd(**o: Any) -> None:
    """Write report.json/.md/.html for a benchmarked run and apply the quality gates."""
    from compresskit.pipeline import report_and_gates

    raise typer.Exit(report_and_gates(o["run_dir"], gate_config(o), console, o["baseline"]))


@app.command("compare")
@takes("out", optional=("out",))
def compare_cmd(baseline: Annotated[Path, typer.Argument(help="The baseline: a run folder or its report.json.")],
                current: Annotated[Path, typer.Argument(help="The run to judge: a run folder or its report.json.")],
                **o: Any) -> None:
    """Compare a run with a baseline run: accuracy change (paired bootstrap 95 % interval), p50 latency ratio per batch
    size (bootstrap interval from the timed runs), memory and size; writes compare.json/.md/.html (default: compare/
    in CURRENT's folder)."""
    from compresskit.compare import compare
    from compresskit.render import render_compare_console

    result, paths = compare(baseline, current, o["out"])
    out = Console()
    if not out.is_terminal:  # CI logs: the whole table
        out = Console(width=220)
    out.print(render_compare_console(result))
    console.print(f"comparison: {paths['json']}, {paths['markdown']}, {paths['html']}")


@app.command("predict")
@takes("json")
def predict_cmd(folder: Annotated[Path, typer.Argument(help="An exported (or quantized) ONNX folder.")],
                texts: Annotated[list[str], typer.Argument(help="Texts to classify.")], **o: Any) -> None:
    """Classify texts with an exported folder, using ONNX Runtime alone (torch is not imported)."""
    import json

    from compresskit.runtime import OnnxClassifier

    clf = OnnxClassifier(folder)
    for text, p in zip(texts, clf.predict(texts)):
        if o["json"]:
            print(json.dumps({"text": text, **p}))
        else:
            print(f"{p['label']}\t{p['score']:.3f}\t{text[:80]}")


@app.command("sweep")
@takes("teacher", "data", "out", "students", "temperatures", "alphas", "epochs", "batch_size", "learning_rate",
       "max_length", "device", "seed", "unlabeled_data", "labeled_fraction", "keep_models", "threads")
def sweep_cmd(**o: Any) -> None:
    """Distil a grid of students (architecture × T × α, with the α=0 ablation) and compare them."""
    from compresskit.bench import BenchConfig
    from compresskit.sweep import SweepConfig, sweep

    cfg = SweepConfig(tuple(s.strip() for s in o["students"].split(";") if s.strip()),
                      _floats("--temperatures", o["temperatures"]), _floats("--alphas", o["alphas"]),
                      keep_models=o["keep_models"])
    bench_cfg = BenchConfig(batch_sizes=(1,), sequence_length=o["max_length"], min_iterations=20, min_seconds=2.0,
                            rounds=1, threads=o["threads"], device=o["device"])
    base = distill_config(o)  # every point's settings but its grid values; the distill flags not taken: defaults
    result = sweep(cfg, base, fine_tuned_teacher(o), o["data"], o["out"], bench_cfg, o["out"] / ".cache")
    for c in result["comparisons"]:
        console.print(f"{c['label']}: {c['diff'] * 100:+.2f} points, "
                      f"95% CI [{c['low'] * 100:+.2f}, {c['high'] * 100:+.2f}]")
    console.print(f"sweep report: {result['paths']['html']}")


@app.command("distill-and-export")
@takes(*PIPELINE)
def distill_and_export_cmd(ctx: typer.Context, **o: Any) -> None:
    """Run the whole pipeline: data → fine-tune teacher → distil → export → quantize → bench → report → gates."""
    from compresskit.pipeline import run_pipeline

    o = with_config_file(ctx, o, PIPELINE)
    cfg, gates = pipeline_config(o), gate_config(o)
    settings = {n: o[n] for n in PIPELINE if n not in NOT_SAVED}  # saved as the run's config.toml
    raise typer.Exit(run_pipeline(cfg, o["output_root"], o["run_name"], o["overwrite"], gates, console,
                                  options=settings, baseline=o["baseline"]))


@app.command("generate")
@takes("max_new_tokens", "chat", "threads")
def generate_cmd(folder: Annotated[Path, typer.Argument(help="An exported LLM folder (genai_config.json, "
                                                              "model.onnx, tokenizer.json).")],
                 prompt: Annotated[str, typer.Argument(help="The prompt to answer.")], **o: Any) -> None:
    """Stream a greedy answer from an exported decoder LLM, using ONNX Runtime GenAI alone (torch is not imported)."""
    from compresskit.lm.onnx_generate import generate

    def show(piece: str) -> None:
        sys.stdout.write(piece)
        sys.stdout.flush()

    r = generate(folder, prompt, o["max_new_tokens"], chat=o["chat"], threads=o["threads"], on_piece=show)
    print(flush=True)
    console.print(f"generate: {len(r.tokens)} tokens after a {r.prompt_tokens}-token prompt, time to first token "
                  f"{r.first_token_s * 1000:.0f} ms, decode {r.decode_tokens_per_s:.1f} tokens/s "
                  f"(load {r.load_s:.2f} s)", highlight=False, soft_wrap=True)


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
