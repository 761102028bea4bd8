"""Every command-line option, declared once: its flag, type, default and help (house style #15).

A command names the options it takes (``@takes("teacher", "data", ...)``) and receives their values as one dict,
keyed by the option's name: the flag without its dashes, ``-`` written ``_`` (``--student-layers`` →
``student_layers``). The same names are the keys of a config file (``config_file``).

Defaults come from the stage config dataclasses where the stage's module is light to import (export, quantize,
bench, data, gates). The training and distillation settings are written here as literals: their dataclasses live
in modules that import torch, and reading them would make every command, ``predict`` and ``--help`` included,
pay for importing torch (about 2 s). tests/test_cli.py checks that those literals equal the dataclass defaults.
"""

from __future__ import annotations

import functools
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from compresskit.artifacts import UserError
from compresskit.bench import BenchConfig
from compresskit.data import DataConfig
from compresskit.export import ExportConfig
from compresskit.gates import GateConfig
from compresskit.lm.bench import LMBenchConfig
from compresskit.models import DEFAULT_TEACHER, LoadOptions
from compresskit.quantize import QuantizeConfig

REQUIRED = inspect.Parameter.empty
"""The default of an option that has none: the command refuses to run without it."""


@dataclass(frozen=True)
class Opt:
    """One option: the type of its value, its default, and typer's declaration (flag and help)."""

    type: Any
    default: Any
    declaration: Any  # typer.models.OptionInfo
    choices: tuple[str, ...] = ()
    """The only values allowed, checked by ``check_choices`` (most options are checked by their stage instead)."""

    @property
    def value_type(self) -> type:
        """The type of a given value: ``Optional[int]`` → ``int`` (a config file cannot say None)."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        return args[0] if typing.get_origin(self.type) is typing.Union else self.type

    def parameter(self, name: str, optional: bool = False) -> inspect.Parameter:
        """The parameter typer reads from a command's signature; ``optional`` makes a required option default to
        None (a command that has its own default for it)."""
        default = None if optional and self.default is REQUIRED else self.default
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[Optional[self.type] if optional else self.type,
                                                      self.declaration])


def _joined(values: tuple, sep: str = ",") -> str:
    """A tuple default as the comma-separated text its flag takes: (1, 32) → ``1,32``."""
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


OPTIONS: dict[str, Opt] = {
    # --- the run as a whole (distill-and-export)
    "config": Opt(Optional[Path], None, typer.Option(
        "--config", help="A TOML file of options: keys are the flags without dashes (temperature = 4.0, "
                         "student-layers = \"0,5\"). Flags given here override it. A run folder's config.toml "
                         "repeats that run.")),
    "task": Opt(str, "auto", typer.Option(
        "--task", help="Task family; auto infers it from the teacher's config (auto | text-classification | "
                       "causal-lm)."), choices=("auto", "text-classification", "causal-lm")),
    "output_root": Opt(Path, Path("export"), typer.Option("--output-root", help="Where run folders go.")),
    "run_name": Opt(Optional[str], None, typer.Option(
        "--run-name", help="Run folder name; default from data and teacher.")),
    "overwrite": Opt(bool, False, typer.Option("--overwrite", help="Replace a run folder that holds another run.")),
    "finetune_teacher": Opt(str, "auto", typer.Option(
        "--finetune-teacher", help="Fine-tune the teacher first: auto (when it has no classification head) | "
                                   "always | never."), choices=("auto", "always", "never")),

    # --- folders of the stage commands
    "teacher": Opt(str, DEFAULT_TEACHER, typer.Option(
        "--teacher", help="The teacher: a local folder or a hub id; default: the bundled all-MiniLM-L6-v2, a bare "
                          "encoder. distill and sweep need a fine-tuned one (e.g. a run's teacher/).")),
    "data": Opt(Path, REQUIRED, typer.Option(
        "--data", help="A data folder made by `prepare-data` (or a run's data/).")),
    "out": Opt(Path, REQUIRED, typer.Option("--out", help="Folder to write this command's output to.")),
    "model": Opt(Path, REQUIRED, typer.Option("--model", help="A classifier folder (teacher or student).")),
    "onnx": Opt(Path, REQUIRED, typer.Option("--onnx", help="An exported folder holding model.onnx.")),
    "run_dir": Opt(Path, REQUIRED, typer.Option(
        "--run-dir", help="A run folder made by distill-and-export (or laid out like one).")),
    "name": Opt(str, "model", typer.Option(
        "--name", help="The model's name in messages and records (teacher, student).")),
    "cache_dir": Opt(Optional[Path], None, typer.Option(
        "--cache-dir", help="Where the teacher's outputs are cached; default: .cache beside --out.")),
    "resume": Opt(bool, False, typer.Option(
        "--resume", help="Continue from the newest checkpoint of an interrupted run.")),
    "trust_remote_code": Opt(bool, LoadOptions.trust_remote_code, typer.Option(
        "--trust-remote-code", help="Allow model code shipped with a hub model.")),
    "allow_pickle": Opt(bool, LoadOptions.allow_pickle, typer.Option(
        "--allow-pickle", help="Accept pickle checkpoints (pytorch_model.bin), which can run code when loaded.")),

    # --- data (DataConfig)
    "dataset": Opt(str, DataConfig.dataset, typer.Option(
        "--dataset", help="bbc-news | a CSV/JSONL/JSON/Parquet file or folder | a folder of <label>/*.txt | a "
                          "datasets name.")),
    "text_column": Opt(str, DataConfig.text_column, typer.Option(
        "--text-column", help="Column holding the input text.")),
    "label_column": Opt(str, DataConfig.label_column, typer.Option(
        "--label-column", help="Column holding the class label.")),
    "max_samples": Opt(Optional[int], DataConfig.max_samples, typer.Option(
        "--max-samples", help="Stratified subsample, for quick runs.")),
    "drop_unlabeled": Opt(bool, DataConfig.drop_unlabeled, typer.Option(
        "--drop-unlabeled", help="Leave out rows whose label is empty (counted in data.json) instead of refusing "
                                 "the data.")),
    "validation_fraction": Opt(float, DataConfig.validation_fraction, typer.Option(
        "--validation-fraction", help="Share of each label (or of the articles) held out for validation: model "
                                      "selection and parity checks.")),
    "test_fraction": Opt(Optional[float], None, typer.Option(
        "--test-fraction", help=f"Share of each label held out for the final test metrics (default "
                                f"{DataConfig.test_fraction}); causal-lm: share of the articles (default 0.1).")),
    "seed": Opt(int, DataConfig.seed, typer.Option("--seed", help="Seed for splits, initialisation and shuffling.")),

    # --- training (TrainConfig; literals, see the module docstring)
    "teacher_epochs": Opt(float, 3.0, typer.Option(
        "--teacher-epochs", help="Epochs of the teacher's fine-tuning.")),
    "teacher_learning_rate": Opt(float, 1e-4, typer.Option(
        "--teacher-learning-rate", help="Peak learning rate of the teacher's fine-tuning.")),
    "epochs": Opt(float, 4.0, typer.Option("--epochs", help="Epochs of the student's distillation.")),
    "learning_rate": Opt(float, 1e-4, typer.Option(
        "--learning-rate", help="Peak learning rate of the student (AdamW, linear decay after a 10% warm-up).")),
    "batch_size": Opt(int, 16, typer.Option("--batch-size", help="Training examples per optimiser step and device.")),
    "max_length": Opt(int, ExportConfig.max_length, typer.Option(
        "--max-length", help="Tokens per example; longer texts are truncated.")),
    "device": Opt(str, BenchConfig.device, typer.Option(
        "--device", help="auto (CUDA when present) | cpu | cuda: where training and the PyTorch benchmarks run, "
                         "and the target quantize picks its modes for.")),
    "precision": Opt(str, "auto", typer.Option(
        "--precision", help="Training number format: auto (bf16 on CUDA if supported, else fp16; fp32 on CPU) | "
                            "fp32 | bf16 | fp16.")),
    "gradient_accumulation": Opt(int, 1, typer.Option(
        "--gradient-accumulation", help="Micro-batches per optimiser step.")),
    "save_steps": Opt(Optional[int], None, typer.Option(
        "--save-steps", help="Checkpoint and evaluate every N steps (default: each epoch); the student's in "
                             "distill-and-export.")),
    "early_stopping_patience": Opt(Optional[int], None, typer.Option(
        "--early-stopping-patience", help="Stop after N evaluations without improvement; the student's in "
                                          "distill-and-export.")),
    "fsdp": Opt(bool, False, typer.Option(
        "--fsdp", help="Shard the model across the GPUs of a torchrun / accelerate launch job (FSDP2) instead "
                       "of DDP.")),

    # --- distillation (DistillConfig, LossWeights; literals, see the module docstring)
    "temperature": Opt(float, 2.0, typer.Option(
        "--temperature", help="Softmax temperature T of the soft targets; the soft loss is scaled by T².")),
    "alpha": Opt(float, 0.5, typer.Option(
        "--alpha", help="Weight of the soft loss, 0..1; 1-α goes to the hard labels (0: no teacher at all).")),
    "student_layers": Opt(str, "auto", typer.Option(
        "--student-layers", help="Teacher layers the student keeps, e.g. 0,5; auto: ceil(n/3) of the teacher's n "
                                 "layers, spread from its first to its last (0,5 for 6).")),
    "student": Opt(Optional[str], None, typer.Option(
        "--student", help="Your own student model (folder or hub id) instead; its tokenizer must match the "
                          "teacher's.")),
    "student_shape": Opt(Optional[str], None, typer.Option(
        "--student-shape", help="Shrunk teacher config, random init: layers=4,hidden=256,heads=4,intermediate=1024.")),
    "w_soft": Opt(float, 1.0, typer.Option("--w-soft", help="Weight of the α-mixed soft/hard term.")),
    "w_mse_logits": Opt(float, 0.0, typer.Option("--w-mse-logits", help="Weight of MSE between logits.")),
    "w_hidden": Opt(float, 0.0, typer.Option(
        "--w-hidden", help="Weight of the hidden-state term (see --layer-map).")),
    "hidden_loss": Opt(str, "mse", typer.Option("--hidden-loss", help="Hidden-state distance: mse | cosine.")),
    "w_attention": Opt(float, 0.0, typer.Option(
        "--w-attention", help="Weight of attention-distribution transfer (needs equal head counts).")),
    "w_embedding": Opt(float, 0.0, typer.Option(
        "--w-embedding", help="Weight of MSE between mean-pooled embeddings.")),
    "layer_map": Opt(str, "auto", typer.Option(
        "--layer-map", help="teacher:student layer pairs like 2:0,5:1, or auto.")),
    "unlabeled_data": Opt(Optional[str], None, typer.Option(
        "--unlabeled-data", help="Unlabelled texts (.txt lines or a data file with a text column), learnt from the "
                                 "teacher's soft labels alone.")),
    "labeled_fraction": Opt(float, 1.0, typer.Option(
        "--labeled-fraction", help="Keep labels for this share of the training split; the rest is unlabelled text.")),
    "cache_teacher_activations": Opt(bool, True, typer.Option(
        "--cache-teacher-activations/--no-cache-teacher-activations",
        help="Cache the teacher's hidden states/attentions that loss terms read (float16, on disk) instead of "
             "running the teacher at every step.")),

    # --- sweep (SweepConfig; literals, see the module docstring)
    "students": Opt(str, "0;0,5;0,2,5", typer.Option(
        "--students", help="';'-separated students: teacher layer lists or shape:layers=2,hidden=128.")),
    "temperatures": Opt(str, "1,2,4,8", typer.Option("--temperatures", help="Temperatures T of the KD points.")),
    "alphas": Opt(str, "0,0.5,0.9", typer.Option(
        "--alphas", help="α values; 0 is the hard-label (no teacher) ablation.")),
    "keep_models": Opt(bool, False, typer.Option(
        "--keep-models", help="Keep every point's student weights (by default only predictions are kept).")),

    # --- export (ExportConfig)
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

    # --- quantization (QuantizeConfig)
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
    "int4_block_size": Opt(int, QuantizeConfig.int4_block_size, typer.Option(
        "--int4-block-size", help="int4: weights per quantization block (a power of two, at least 16).")),
    "fallback": Opt(bool, QuantizeConfig.fallback, typer.Option(
        "--fallback/--no-fallback", help="Keep the most sensitive layers in fp32 (measured) until the accuracy "
                                         "budget holds.")),

    # --- benchmark (BenchConfig)
    "batch_sizes": Opt(str, _joined(BenchConfig.batch_sizes), typer.Option(
        "--batch-sizes", help="Batch sizes whose latency is measured, comma-separated; export times its candidate "
                              "graphs at batch 1 and the largest of them.")),
    "sequence_length": Opt(int, BenchConfig.sequence_length, typer.Option(
        "--sequence-length", help="Benchmark tokens per input (every input is padded or truncated to it): the main "
                                  "length, at which accuracy and the report's table are measured.")),
    "seq_lengths": Opt(Optional[str], None, typer.Option(
        "--seq-lengths", help="Workload sweep: more sequence lengths, comma-separated (64,128,256); every batch size "
                              "is timed at each, and at --sequence-length.")),
    "teacher_forms": Opt(str, _joined(BenchConfig.teacher_forms), typer.Option(
        "--teacher-forms", help="Faster PyTorch forms of the teacher measured as baselines: bf16, compile "
                                "(comma-separated) or none; a form this machine cannot run is recorded as skipped.")),
    "threads": Opt(Optional[int], BenchConfig.threads, typer.Option(
        "--threads", help="Intra-op threads for every measured model; default: the physical cores.")),
    "iterations": Opt(int, BenchConfig.min_iterations, typer.Option(
        "--iterations", help="Minimum timed runs per batch size.")),
    "min_seconds": Opt(float, BenchConfig.min_seconds, typer.Option(
        "--min-seconds", help="Minimum timing per batch size, in seconds.")),
    "rounds": Opt(Optional[int], None, typer.Option(
        "--rounds", help="Fresh processes each variant is timed in, interleaved across variants; compare's latency "
                         "interval is built from the spread between them. The timing budget is split across rounds "
                         f"(default: text-classification {BenchConfig.rounds}, causal-lm {LMBenchConfig.rounds}).")),
    "provider": Opt(str, BenchConfig.provider, typer.Option(
        "--provider", help="ONNX Runtime provider: auto | cpu | cuda | tensorrt.")),

    # --- causal LMs (--task causal-lm: compresskit.lm.prepare / distill / bench; literals, see the docstring)
    "kd_divergence": Opt(str, "forward_kl", typer.Option(
        "--kd-divergence", help="causal-lm: token-level divergence: forward_kl (mass-covering) | reverse_kl "
                                "(mode-seeking) | jsd (generalized Jensen-Shannon, see --jsd-beta)."),
        choices=("forward_kl", "reverse_kl", "jsd")),
    "jsd_beta": Opt(float, 0.5, typer.Option(
        "--jsd-beta", help="causal-lm: JSD weight β in [0, 1]: 0 is forward KL, 1 reverse KL.")),
    "kd_temperature": Opt(float, 1.0, typer.Option(
        "--kd-temperature", help="causal-lm: softmax temperature of both models in the divergence (scaled by T²).")),
    "kd_alpha": Opt(float, 1.0, typer.Option(
        "--kd-alpha", help="causal-lm: weight of the divergence; 1-α goes to cross-entropy on the target tokens.")),
    "on_policy": Opt(float, 0.0, typer.Option(
        "--on-policy", help="causal-lm: share λ of batches the student answers itself (sampled), scored by the "
                            "teacher (GKD).")),
    "max_steps": Opt(int, 120, typer.Option("--max-steps", help="causal-lm: optimiser steps of distillation.")),
    "teacher_topk": Opt(int, 0, typer.Option(
        "--teacher-topk", help="causal-lm: 0 runs the teacher at every step; k > 0 runs it once and trains on an "
                               "offline cache of its top-k next-token probabilities per position (k*4+4 bytes a "
                               "token for a vocabulary up to 65,536).")),
    "student_depth": Opt(Optional[int], None, typer.Option(
        "--student-depth", help="causal-lm with --student-layers auto: keep this many teacher layers (default "
                                "ceil(n/3)).")),
    "layer_choice": Opt(str, "importance", typer.Option(
        "--layer-choice", help="causal-lm with --student-layers auto: importance (measured block influence) | "
                               "uniform."), choices=("importance", "uniform")),
    "lm_learning_rate": Opt(float, 2e-4, typer.Option(
        "--lm-learning-rate", help="causal-lm: peak AdamW learning rate of the student.")),
    "lm_batch_size": Opt(int, 4, typer.Option("--lm-batch-size", help="causal-lm: sequences per optimiser step.")),
    "lm_max_length": Opt(int, 192, typer.Option(
        "--lm-max-length", help="causal-lm: tokens per training sequence (prompt + answer).")),
    "lm_window": Opt(int, 128, typer.Option(
        "--lm-window", help="causal-lm: tokens per plain-text training window.")),
    "lm_train_prompts": Opt(int, 96, typer.Option(
        "--lm-train-prompts", help="causal-lm: training instructions the teacher answers (sequence-level targets).")),
    "lm_train_texts": Opt(int, 300, typer.Option(
        "--lm-train-texts", help="causal-lm: training articles used as plain text (language-modelling KD).")),
    "lm_tasks": Opt(str, "summary,headline,section", typer.Option(
        "--lm-tasks", help="causal-lm with bbc-news: instructions per article, some of summary, headline, section.")),
    "max_article_words": Opt(int, 60, typer.Option(
        "--max-article-words", help="causal-lm with bbc-news: article bodies in prompts cut to this many words.")),
    "lm_test_prompts": Opt(int, 30, typer.Option(
        "--lm-test-prompts", help="causal-lm: held-out instructions for ROUGE-L, agreement and section choice.")),
    "lm_heldout_texts": Opt(int, 24, typer.Option(
        "--lm-heldout-texts", help="causal-lm: held-out articles for perplexity and next-token agreement.")),
    "max_new_tokens": Opt(int, 48, typer.Option(
        "--max-new-tokens", help="causal-lm: longest greedy answer, in tokens (teacher answers, student answers).")),
    "perplexity_window": Opt(int, 256, typer.Option(
        "--perplexity-window", help="causal-lm: perplexity and agreement on the first this many tokens of each "
                                    "held-out text.")),
    "ttft_prompt_lengths": Opt(str, "128,512", typer.Option(
        "--ttft-prompt-lengths", help="causal-lm: prompt lengths (tokens) whose time to first token is measured.")),
    "lm_repeats": Opt(int, 3, typer.Option(
        "--lm-repeats", help="causal-lm: timed repeats of each generation-speed workload, after one warm-up.")),
    "decode_tokens": Opt(int, 128, typer.Option(
        "--decode-tokens", help="causal-lm: new tokens timed at batch 1 for decode tokens/s.")),
    "lm_export_candidates": Opt(str, "genai,torch", typer.Option(
        "--lm-export-candidates", help="causal-lm: decoder-graph routes to try, the fastest verified kept: genai "
                                       "(ONNX Runtime GenAI builder) | torch (torch.onnx with past key values).")),
    "verify_steps": Opt(int, 16, typer.Option(
        "--verify-steps", help="causal-lm: greedy tokens per validation prompt whose logits the decoder graph must "
                               "match (prefill + steps through the KV cache).")),
    "verify_prompts": Opt(int, 4, typer.Option(
        "--verify-prompts", help="causal-lm: validation prompts the decoder graph is verified on.")),
    "lm_quantize": Opt(str, "int8,int4", typer.Option(
        "--lm-quantize", help="causal-lm: weight-only precisions to build (int8, int4), or none.")),
    "int4_accuracy_level": Opt(int, 4, typer.Option(
        "--int4-accuracy-level", help="causal-lm: MatMulNBits accuracy level: 4 computes in int8 (fastest on "
                                      "CPU), 1 in fp32.")),
    "int4_algorithm": Opt(str, "k_quant", typer.Option(
        "--int4-algorithm", help="causal-lm: how int4 weights are rounded: k_quant (error-minimising block "
                                 "scales) | default (the builder's round to nearest) | rtn."),
        choices=("k_quant", "default", "rtn")),
    "lm_quant_min_agreement": Opt(float, 0.7, typer.Option(
        "--lm-quant-min-agreement", help="causal-lm: top-1 agreement a quantized graph keeps with the fp32 graph "
                                         "on validation answers (else more MatMuls stay in full precision).")),
    "lm_quant_max_perplexity_ratio": Opt(float, 1.5, typer.Option(
        "--lm-quant-max-perplexity-ratio", help="causal-lm: a quantized graph's answer perplexity at most this "
                                                "times the fp32 graph's.")),

    # --- quality gates (GateConfig)
    "max_accuracy_drop": Opt(Optional[float], GateConfig.max_accuracy_drop, typer.Option(
        "--max-accuracy-drop", help="Largest allowed accuracy drop, e.g. 0.01 = 1 point: a gate on teacher minus "
                                    "student, and the budget quantization keeps against fp32 (0.01 when not "
                                    "given).")),
    "min_speedup": Opt(Optional[float], GateConfig.min_speedup, typer.Option(
        "--min-speedup", help="Gate: smallest allowed teacher p50 / fastest student p50 at batch 1.")),
    "max_latency_ms": Opt(Optional[float], GateConfig.max_latency_ms, typer.Option(
        "--max-latency-ms", help="Gate: largest allowed fastest-student p50 at batch 1, in ms.")),
    "max_perplexity_ratio": Opt(Optional[float], GateConfig.max_perplexity_ratio, typer.Option(
        "--max-perplexity-ratio", help="Gate (causal-lm): largest allowed student / teacher perplexity on held-out "
                                       "text.")),
    "min_agreement": Opt(Optional[float], GateConfig.min_agreement, typer.Option(
        "--min-agreement", help="Gate (causal-lm): smallest allowed top-1 next-token agreement with the teacher.")),
    "baseline": Opt(Optional[Path], None, typer.Option(
        "--baseline", help="A baseline run folder or its report.json: the run is compared with it (compare/ in the "
                           "run folder) and the regression gates judge the comparison.")),
    "max_accuracy_regression": Opt(Optional[float], GateConfig.max_accuracy_regression, typer.Option(
        "--max-accuracy-regression", help="Gate (with --baseline): largest allowed accuracy loss of the deployed "
                                          "student against the baseline, e.g. 0.01; fails only when the whole 95 % "
                                          "interval of the loss lies above it.")),
    "max_latency_regression": Opt(Optional[float], GateConfig.max_latency_regression, typer.Option(
        "--max-latency-regression", help="Gate (with --baseline): largest allowed current / baseline p50 at batch "
                                         "1 of the deployed student, e.g. 1.10; fails only when the ratio's whole 95 "
                                         "% interval lies above it.")),

    # --- predict
    "json": Opt(bool, False, typer.Option("--json", help="Print JSON lines instead of a table.")),

    # --- generate
    "chat": Opt(bool, True, typer.Option(
        "--chat/--no-chat", help="generate: send the prompt as a user turn of the folder's chat template (when it "
                                 "has one); --no-chat sends it as it is.")),
}

DEFAULTS: dict[str, Any] = {name: o.default for name, o in OPTIONS.items() if o.default is not REQUIRED}
"""The value of every option that has a default, as a command that does not take it sees it."""


def takes(*names: str, optional: tuple[str, ...] = ()) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command the options ``names`` (in that order, repeats dropped) from ``OPTIONS``; those in ``optional``
    default to None where the table requires them (``compare``'s ``--out``, which has a default folder).

    The command is written ``def cmd(<own parameters>, **o)``: typer reads its own parameters (a ``typer.Context``,
    ``typer.Argument``s) and the named options from the signature set here, and ``o`` receives every option: those
    it takes as given, the others at their defaults, so the config builders in ``cli`` can read any option.
    """
    def wrap(func: Callable[..., Any]) -> Callable[..., Any]:
        own = [p for p in inspect.signature(func, eval_str=True).parameters.values() if p.kind is not p.VAR_KEYWORD]

        @functools.wraps(func)
        def command(**given: Any) -> Any:
            return func(**(DEFAULTS | given))

        unique = tuple(dict.fromkeys(names))
        command.__signature__ = inspect.Signature([*own, *(OPTIONS[n].parameter(n, n in optional) for n in unique)])
        command.option_names = unique
        return command

    return wrap


def flag(name: str) -> str:
    """The flag of an option: ``student_layers`` → ``--student-layers``."""
    return "--" + name.replace("_", "-")


def check_choices(o: dict[str, Any]) -> None:
    """Refuse a value outside its option's ``choices``, with one line that names the flag and the choices."""
    for name, opt in OPTIONS.items():
        if opt.choices and o.get(name, opt.default) not in opt.choices:
            raise UserError(f"{flag(name)} must be one of {', '.join(opt.choices)}, got {o[name]!r}")
