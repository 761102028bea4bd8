"""Every command-line option, declared once (house style #15): the options every task family shares are in the table
below; each family's own are in ``tasks/<family>/options.py`` (its ``Task.options``), and ``OPTIONS`` holds them
all, so a flag's type, default and help cannot drift between commands.

A command names the options it takes (``@takes("teacher", "data", ...)``) and receives their values as one dict,
keyed by the option's name: the flag without its dashes, ``-`` written ``_`` (``--student-layers`` →
``student_layers``). The same names are the keys of a config file (``config_file``). ``--help`` shows the options
in panels (run, data, teacher, student and distillation, export, quantization, benchmark, gates, causal LM).

Defaults come from the stage config dataclasses where the stage's module is light to import. The training defaults
are written here as literals: their dataclasses live in modules that import torch, and reading them would make
every command, ``predict`` and ``--help`` included, pay for importing torch (about 2 s). tests/test_cli.py checks
that those literals equal the dataclass defaults.
"""

from __future__ import annotations

import functools
import inspect
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from compresskit.artifacts import UserError
from compresskit.cli.flags import (
    BENCHMARK,
    DATA,
    FOLDERS,
    GATES,
    QUANTIZATION,
    REQUIRED,
    RUN,
    STUDENT,
    TEACHER,
    Opt,
    flag,
    panel,
)
from compresskit.corpus import BBC_NEWS
from compresskit.gates import GateConfig
from compresskit.models import LoadOptions
from compresskit.tasks import AUTO, families, task_names

SHARED: dict[str, Opt] = {
    **panel(RUN, {
        "config": Opt(Optional[Path], None, typer.Option(
            "--config", help="A TOML file of options: keys are the flags without dashes (temperature = 4.0, "
                             "student-layers = \"0,5\"). Flags given here override it. A run folder's config.toml "
                             "repeats that run.")),
        "task": Opt(str, AUTO, typer.Option(
            "--task", help=f"Task family: auto (the family of --teacher: the one whose embedded teacher it names, "
                           f"else the one its config implies; no --teacher: {task_names()[0]}) | "
                           f"{' | '.join(task_names())}. `python -m compresskit.tasks` lists what each needs."),
            choices=(AUTO, *task_names())),
        "output_root": Opt(Path, Path("export"), typer.Option("--output-root", help="Where run folders go.")),
        "run_name": Opt(Optional[str], None, typer.Option(
            "--run-name", help="Run folder name; default from data and teacher.")),
        "overwrite": Opt(bool, False, typer.Option("--overwrite", help="Replace a run folder that holds another run.")),
        "device": Opt(str, "auto", typer.Option(
            "--device", help="auto (CUDA when present) | cpu | cuda: where training and the PyTorch benchmarks run, "
                             "and the target quantize picks its modes for.")),
    }),
    **panel(TEACHER, {
        "teacher": Opt(Optional[str], None, typer.Option(
            "--teacher", help="The teacher: a local folder or a hub id; default: the task family's embedded one "
                              "(text-classification: all-MiniLM-L6-v2, a bare encoder; causal-lm: "
                              "SmolLM2-135M-Instruct). distill and sweep need a fine-tuned one (e.g. a run's "
                              "teacher/).")),
        "finetune_teacher": Opt(str, "auto", typer.Option(
            "--finetune-teacher", help="Fine-tune the teacher first: auto (when it has no classification head) | "
                                       "always | never."), choices=("auto", "always", "never")),
        "teacher_epochs": Opt(float, 3.0, typer.Option(
            "--teacher-epochs", help="Epochs of the teacher's fine-tuning.")),
        "teacher_learning_rate": Opt(float, 1e-4, typer.Option(
            "--teacher-learning-rate", help="Peak learning rate of the teacher's fine-tuning.")),
        "trust_remote_code": Opt(bool, LoadOptions.trust_remote_code, typer.Option(
            "--trust-remote-code", help="Allow model code shipped with a hub model.")),
        "allow_pickle": Opt(bool, LoadOptions.allow_pickle, typer.Option(
            "--allow-pickle", help="Accept pickle checkpoints (pytorch_model.bin), which can run code when loaded.")),
    }),
    **panel(FOLDERS, {
        "data": Opt(Path, REQUIRED, typer.Option(
            "--data", help="A data folder made by `prepare-data` (or a run's data/)."), pipeline=False),
        "out": Opt(Path, REQUIRED, typer.Option("--out", help="Folder to write this command's output to."),
            pipeline=False),
        "model": Opt(Path, REQUIRED, typer.Option("--model", help="A classifier folder (teacher or student)."),
            pipeline=False),
        "onnx": Opt(Path, REQUIRED, typer.Option(
            "--onnx", help="An exported folder holding model.onnx."), pipeline=False),
        "run_dir": Opt(Path, REQUIRED, typer.Option(
            "--run-dir", help="A run folder made by distill-and-export (or laid out like one)."), pipeline=False),
        "name": Opt(str, "model", typer.Option(
            "--name", help="The model's name in messages and records (teacher, student)."), pipeline=False),
        "cache_dir": Opt(Optional[Path], None, typer.Option(
            "--cache-dir", help="Where the teacher's outputs are cached; default: .cache beside "
                                "--out."), pipeline=False),
        "resume": Opt(bool, False, typer.Option(
            "--resume", help="Continue from the newest checkpoint of an interrupted run."), pipeline=False),
    }),
    **panel(DATA, {
        "dataset": Opt(str, BBC_NEWS, typer.Option(
            "--dataset", help="bbc-news | a CSV/JSONL/JSON/Parquet file or folder | a folder of <label>/*.txt | a "
                              "datasets name.")),
        "max_samples": Opt(Optional[int], None, typer.Option(
            "--max-samples", help="Stratified subsample, for quick runs.")),
        "validation_fraction": Opt(float, 0.1, typer.Option(
            "--validation-fraction", help="Share of each label (or of the articles) held out for validation: model "
                                          "selection and parity checks.")),
        "test_fraction": Opt(Optional[float], None, typer.Option(
            "--test-fraction", help="Share held out for the final test metrics: of each label (text-classification, "
                                    "default 0.2) or of the articles (causal-lm, default 0.1).")),
        "seed": Opt(int, 42, typer.Option("--seed", help="Seed for splits, initialisation and shuffling.")),
    }),
    **panel(STUDENT, {
        "student_layers": Opt(str, "auto", typer.Option(
            "--student-layers", help="Teacher layers the student keeps, e.g. 0,5; auto: ceil(n/3) of the teacher's n "
                                     "layers, spread from its first to its last (0,5 for 6).")),
        "student": Opt(Optional[str], None, typer.Option(
            "--student", help="Your own student model (folder or hub id) instead; its tokenizer must match the "
                              "teacher's.")),
        "student_shape": Opt(Optional[str], None, typer.Option(
            "--student-shape", help="A shrunk copy of the teacher's config, randomly initialised, e.g. "
                                    "layers=4,hidden=256 (keys: layers, hidden, heads, intermediate).")),
        "batch_size": Opt(int, 16, typer.Option(
            "--batch-size", help="Training examples per optimiser step and device.")),
        "max_length": Opt(int, 128, typer.Option(
            "--max-length", help="Tokens per example; longer texts are truncated.")),
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
    }),
    **panel(QUANTIZATION, {
        "int4_block_size": Opt(int, 32, typer.Option(
            "--int4-block-size", help="int4: weights per quantization block (a power of two, at least 16).")),
        "fallback": Opt(bool, True, typer.Option(
            "--fallback/--no-fallback", help="Keep the most sensitive layers in fp32 (measured) until the accuracy "
                                             "budget holds.")),
    }),
    **panel(BENCHMARK, {
        "threads": Opt(Optional[int], None, typer.Option(
            "--threads", help="Intra-op threads for every measured model; default: the physical cores.")),
        "rounds": Opt(Optional[int], None, typer.Option(
            "--rounds", help="Fresh processes each variant is timed in, interleaved across variants; compare's latency "
                             "interval is built from the spread between them. The timing budget is split across rounds "
                             "(default: text-classification 5, causal-lm 3).")),
    }),
    **panel(GATES, {
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
        "require_student": Opt(bool, GateConfig.require_student, typer.Option(
            "--require-student/--no-require-student", help="Gate: fail when the variant the report ships (the fastest "
                                                           "within the quality budget) is not a student: "
                                                           "distillation stopped paying.")),
        "baseline": Opt(Optional[Path], None, typer.Option(
            "--baseline", help="A baseline run folder or its report.json: the run is compared with it (compare/ in the "
                               "run folder) and the regression gates judge the comparison.")),
        "max_accuracy_regression": Opt(Optional[float], GateConfig.max_accuracy_regression, typer.Option(
            "--max-accuracy-regression", help="Gate (with --baseline): largest allowed accuracy loss of the deployed "
                                              "student against the baseline, e.g. 0.01; fails only when the whole 95 % "
                                              "interval of the loss lies above it.")),
        "max_latency_regression": Opt(Optional[float], GateConfig.max_latency_regression, typer.Option(
            "--max-latency-regression", help="Gate (with --baseline): largest allowed current / baseline p50 at batch "
                                             "1 of the deployed student, e.g. 1.10; fails only when the ratio's whole "
                                             "95 % interval lies above it.")),
    }),
}
"""The options every task family reads, or the core's commands take."""

OPTIONS: dict[str, Opt] = {**SHARED}
for _task in families().values():
    if clash := sorted(set(OPTIONS) & set(_task.options)):
        raise RuntimeError(f"{_task.name} declares options the core or another family has: {', '.join(clash)}")
    OPTIONS |= _task.options

PIPELINE: tuple[str, ...] = tuple(name for name, opt in OPTIONS.items() if opt.pipeline)
"""The options of ``distill-and-export``: the settings of a run, of whichever family."""
NOT_SAVED = ("config", "overwrite")
"""Options of distill-and-export that are not settings of the run: its saved config.toml leaves them out (a reload
with ``overwrite = true`` would delete the run it means to repeat)."""

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



def check_choices(o: dict[str, Any]) -> None:
    """Refuse a value outside its option's ``choices``, with one line that names the flag and the choices."""
    for name, opt in OPTIONS.items():
        if opt.choices and o.get(name, opt.default) not in opt.choices:
            raise UserError(f"{flag(name)} must be one of {', '.join(opt.choices)}, got {o[name]!r}")


# --- the settings every family builds the same way from the flags

def gate_config(o: dict[str, Any]) -> GateConfig:
    """The quality gates; a limit left out is no gate."""
    try:
        cfg = GateConfig(max_accuracy_drop=o["max_accuracy_drop"], min_speedup=o["min_speedup"],
                         max_latency_ms=o["max_latency_ms"], max_perplexity_ratio=o["max_perplexity_ratio"],
                         min_agreement=o["min_agreement"], max_accuracy_regression=o["max_accuracy_regression"],
                         max_latency_regression=o["max_latency_regression"], require_student=o["require_student"])
    except ValueError as e:
        raise UserError(str(e)) from None
    if o["baseline"] is None and (cfg.max_accuracy_regression is not None or cfg.max_latency_regression is not None):
        raise UserError("--max-accuracy-regression and --max-latency-regression compare with a baseline: pass "
                        "--baseline RUN_FOLDER|report.json")
    return cfg
