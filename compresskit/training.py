"""The training engine shared by teacher fine-tuning and distillation: transformers' ``Trainer``.

Why Trainer rather than a loop of our own: it brings mixed precision, gradient accumulation, per-epoch
evaluation with the best checkpoint kept, and runs unchanged under ``accelerate launch`` / ``torchrun``.
"""

from __future__ import annotations

import copy
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from compresskit.artifacts import UserError
from compresskit.models import LoadOptions


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of one training run (teacher fine-tuning or distillation)."""

    epochs: float = 3.0
    """Passes over the training split (``--epochs``)."""
    batch_size: int = 16
    """Examples per optimiser step and device (``--batch-size``)."""
    learning_rate: float = 5e-5
    """Peak AdamW learning rate, linearly decayed after a 10% warm-up (``--learning-rate``)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    max_length: int = 128
    """Tokens per example; longer texts are truncated (``--max-length``)."""
    device: str = "auto"
    """``auto`` (CUDA when present), ``cpu`` or ``cuda`` (``--device``)."""
    precision: str = "auto"
    """``auto`` (bf16 on CUDA if supported, else fp16; fp32 on CPU), ``fp32``, ``bf16`` or ``fp16`` (``--precision``)."""
    gradient_accumulation: int = 1
    """Micro-batches per optimiser step (``--gradient-accumulation``)."""
    seed: int = 42
    """Seed for initialisation, dropout and shuffling (``--seed``)."""
    save_steps: int | None = None
    """Checkpoint (and evaluate) every N optimiser steps instead of every epoch (``--save-steps``)."""
    early_stopping_patience: int | None = None
    """Stop after this many evaluations without a better validation accuracy (``--early-stopping-patience``)."""
    fsdp: bool = False
    """Shard parameters, gradients and optimiser state across the GPUs of a ``torchrun`` / ``accelerate launch``
    job (FSDP2, one unit per transformer layer) instead of replicating them (DDP) (``--fsdp``). CUDA only."""

    def __post_init__(self) -> None:
        problems = []
        if self.save_steps is not None and self.save_steps < 1:
            problems.append(f"--save-steps must be >= 1, got {self.save_steps}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            problems.append(f"--early-stopping-patience must be >= 1, got {self.early_stopping_patience}")
        if not self.epochs > 0:
            problems.append(f"--epochs must be > 0, got {self.epochs}")
        if self.batch_size < 1:
            problems.append(f"--batch-size must be >= 1, got {self.batch_size}")
        if not self.learning_rate > 0:
            problems.append(f"--learning-rate must be > 0, got {self.learning_rate}")
        if not 8 <= self.max_length <= 8192:
            problems.append(f"--max-length must be between 8 and 8192, got {self.max_length}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            problems.append(f"--precision must be auto, fp32, bf16 or fp16, got {self.precision!r}")
        if self.fsdp and self.device == "cpu":
            problems.append("--fsdp needs CUDA GPUs (accelerate runs CPU processes as DDP); drop --fsdp or use "
                            "--device cuda")
        if self.gradient_accumulation < 1:
            problems.append(f"--gradient-accumulation must be >= 1, got {self.gradient_accumulation}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class FinetuneConfig:
    """Settings of the teacher's fine-tuning."""

    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3.0, learning_rate=1e-4))
    """Optimisation settings (the teacher-prefixed flags, e.g. ``--teacher-epochs``)."""
    load: LoadOptions = field(default_factory=LoadOptions)
    """Trust settings for loading the base model."""


def checkpoint_dir(out: Path) -> Path:
    """Where the Trainer checkpoints of a stage writing ``out`` live: beside it, so they outlive a killed run."""
    return Path(out).parent / f".{Path(out).name}.checkpoints"


def last_complete_checkpoint(checkpoints: Path) -> str | None:
    """The newest Trainer checkpoint that was fully written, or None.

    The Trainer writes ``trainer_state.json`` last, so a checkpoint whose state file is missing or unreadable
    was cut off (kill -9 mid-save); it is deleted so that neither resuming nor rotation trips over it.
    """
    import json

    if not checkpoints.is_dir():
        return None
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]), reverse=True)
    for ckpt in found:
        try:
            json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
            return str(ckpt)
        except (OSError, ValueError):
            if is_main_process():
                shutil.rmtree(ckpt, ignore_errors=True)
    return None


def is_main_process() -> bool:
    """True in a single process, and in rank 0 of a ``torchrun`` / ``accelerate launch`` job: only it writes."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is a user error. Where
    training and the PyTorch benchmark workers run (``--device``)."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but torch sees no CUDA GPU (use --device auto or cpu)")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """Mixed precision is a CUDA feature here: on CPU everything trains in fp32."""
    if device == "cpu":
        if precision in ("bf16", "fp16"):
            raise UserError(f"--precision {precision} needs --device cuda; CPU training runs in fp32")
        return "fp32"
    if precision == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return precision


def fsdp_settings(model: Any) -> dict[str, Any]:
    """``TrainingArguments.fsdp_config`` for FSDP2 with one shard unit per transformer layer.

    The layer classes come from the model's ``_no_split_modules`` (e.g. ``BertLayer``), the blocks transformers
    itself never splits across devices. A full (unsharded) state dict is what the stage publishes at the end.
    """
    layers = sorted(getattr(model, "_no_split_modules", None) or [])
    inner = getattr(model, "student", None)  # StudentWithProjection wraps the model that knows its layers
    if not layers and inner is not None:
        layers = sorted(getattr(inner, "_no_split_modules", None) or [])
    config: dict[str, Any] = {"version": 2, "state_dict_type": "FULL_STATE_DICT", "reshard_after_forward": True}
    if layers:
        config["auto_wrap_policy"] = "TRANSFORMER_BASED_WRAP"
        config["transformer_layer_cls_to_wrap"] = layers
    else:  # a user model that names no layer class: wrap by parameter count instead
        config["auto_wrap_policy"] = "SIZE_BASED_WRAP"
        config["min_num_params"] = 1_000_000
    return config


def _make_trainer_class():
    from transformers import Trainer

    class DistillationTrainer(Trainer):
        """Trainer whose loss is the task's objective: ``objective(model, batch) -> (loss, outputs)``."""

        def __init__(self, *args, objective: Any, **kwargs):
            super().__init__(*args, **kwargs)
            self.objective = objective

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            loss, outputs = self.objective(model, inputs)
            return (loss, outputs) if return_outputs else loss

    return DistillationTrainer


def train(
    model: Any,
    train_set: Any,
    eval_set: Any,
    cfg: TrainConfig,
    checkpoints: Path,
    objective: Callable[[Any, dict[str, Any]], tuple[Any, Any]],
    collator: Callable[[list[dict[str, Any]]], dict[str, Any]],
    metrics: Callable[[Any], dict[str, float]] | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    eval_steps: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on the task's ``objective`` and ``collator``, evaluating on ``eval_set`` and keeping
    the best evaluation's weights.

    ``checkpoints`` holds Trainer checkpoints (model, optimiser, scheduler, RNG states); with ``resume`` the
    run continues from the newest one there, e.g. after the process was killed. It is emptied on success.
    With ``metrics`` (transformers' ``compute_metrics``, returning ``accuracy`` and the ``selection`` score that
    ranks checkpoints, higher is better) the best evaluation is chosen by ``selection``; without, by the
    objective's validation loss (a language model). ``max_steps`` replaces epochs with a fixed number of optimiser
    steps, evaluated every ``eval_steps``. Returns the training history.
    """
    from transformers import EarlyStoppingCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    device = resolve_device(cfg.device)
    if cfg.fsdp and device != "cuda":
        raise UserError("--fsdp needs CUDA GPUs (accelerate runs CPU processes as DDP); drop --fsdp")
    precision = resolve_precision(cfg.precision, device)
    steps_per_epoch = math.ceil(len(train_set) / (cfg.batch_size * cfg.gradient_accumulation))
    by_loss = metrics is None  # a language model has no labels to be accurate on: judge it by its loss
    every = eval_steps or cfg.save_steps
    total_steps = max_steps or steps_per_epoch * cfg.epochs
    args = TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=cfg.epochs,
        max_steps=max_steps or -1,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=max(32, cfg.batch_size),
        gradient_accumulation_steps=cfg.gradient_accumulation,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=max(1, int(0.1 * total_steps)),
        lr_scheduler_type="linear",
        eval_strategy="steps" if every else "epoch",
        save_strategy="steps" if every else "epoch",
        eval_steps=every,
        save_steps=every or 500,
        save_total_limit=2,  # the best and the newest: resuming needs the newest, the end needs the best
        load_best_model_at_end=True,
        metric_for_best_model="loss" if by_loss else "selection",
        greater_is_better=not by_loss,
        prediction_loss_only=by_loss,
        logging_strategy="steps" if every else "epoch",
        logging_steps=every or 500,
        report_to="none",
        seed=cfg.seed,
        data_seed=cfg.seed,
        use_cpu=device == "cpu",
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        dataloader_num_workers=0,
        disable_tqdm=False,
        remove_unused_columns=False,  # our datasets hold only what the objective needs (teacher_logits too)
        label_names=["labels"],  # not inferable from a wrapped student's forward(**kwargs)
        # several CPU processes (torchrun) talk over gloo; a single process must not ask for a process group
        ddp_backend="gloo" if device == "cpu" and int(os.environ.get("WORLD_SIZE", "1")) > 1 else None,
        fsdp=True if cfg.fsdp else None,
        fsdp_config=fsdp_settings(model) if cfg.fsdp else None,
    )
    last = last_complete_checkpoint(Path(checkpoints)) if resume else None
    callbacks = [EarlyStoppingCallback(cfg.early_stopping_patience)] if cfg.early_stopping_patience else []
    trainer_cls = _make_trainer_class()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # keep the console to progress bars and our own lines
    try:
        # FSDP turns the trained module's parameters into shards; training a copy leaves the caller's model a
        # plain module that receives the gathered full weights at the end
        trained = copy.deepcopy(model) if cfg.fsdp else model
        trainer = trainer_cls(
            model=trained,
            args=args,
            train_dataset=train_set,
            eval_dataset=eval_set,
            data_collator=collator,
            compute_metrics=metrics,
            objective=objective,
            callbacks=callbacks,
        )
        result = trainer.train(resume_from_checkpoint=last)
        if cfg.fsdp:
            state = trainer.accelerator.get_state_dict(trainer.model)  # a collective: every rank takes part
            if is_main_process():
                model.load_state_dict(state)
    finally:
        hf_logging.set_verbosity(verbosity)
    history = [
        {k: v for k, v in entry.items() if k in ("epoch", "loss", "eval_accuracy", "eval_loss", "train_runtime")}
        for entry in trainer.state.log_history
    ]
    best = trainer.state.best_metric
    if not by_loss and best is not None:  # report the kept checkpoint's accuracy, not its selection score
        kept = [e for e in trainer.state.log_history if e.get("eval_selection") == best]
        best = kept[0]["eval_accuracy"] if kept else None
    model.to("cpu").eval()
    if is_main_process():
        shutil.rmtree(checkpoints, ignore_errors=True)
    return {
        "resumed_from": Path(last).name if last else None,
        "world_size": args.world_size,
        "stopped_early": trainer.state.global_step < trainer.state.max_steps,
        "device": device,
        "precision": precision,
        "train_seconds": round(result.metrics.get("train_runtime", 0.0), 2),
        "train_samples_per_second": result.metrics.get("train_samples_per_second"),
        "best_validation_accuracy": None if by_loss else best,
        "best_validation_loss": best if by_loss else None,
        "history": history,
    }


