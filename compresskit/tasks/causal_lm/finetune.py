"""Teacher fine-tuning for the causal-LM task (``--finetune-teacher always``): before it answers the prompts, the
teacher learns the instructions that have real answers.

An untuned instruct LLM picks the BBC section of an article at chance and writes headlines that share little with
the real titles; a student distilled from it inherits that. Fine-tuning teaches the teacher the task first, so what
the student is measured against is a teacher that does the job. The targets are the real answers only: the
article's section and its title (``PromptExample.reference``) and the answers a prompt file gives
(``PromptExample.response``); summaries have no real answer and are left out. The loss is cross-entropy on the
answer tokens (prompt masked), through the same Trainer as distillation (``lm.distill.LMObjective`` at α = 0).

The fine-tuned teacher is cached (``<cache>/lm-teacher-<key>/``), keyed by the base teacher's weights, the exact
training examples and the settings, and written atomically: a rerun or another student reuses it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, atomic_dir, read_json, sha256_json, stage_record, write_json
from compresskit.tasks.causal_lm.prompts import PromptExample


def with_real_answers(examples: list[PromptExample]) -> list[PromptExample]:
    """The examples that have a real answer, with it as their response: a given response, else the reference."""
    out = []
    for ex in examples:
        answer = ex.response if ex.response is not None else ex.reference
        if answer is not None and answer.strip():
            out.append(dataclasses.replace(ex, response=answer))
    return out


def check_finetune_data(prompts: dict[str, list[PromptExample]]) -> None:
    """Refuse up front data with no real answer to fine-tune on (plain text, or prompts without responses)."""
    if not with_real_answers(prompts.get("train", [])):
        raise UserError("--finetune-teacher always needs training prompts with real answers (the BBC News "
                        "headline and section prompts, or a prompt file with a response per prompt); these have "
                        "none")


def _key(teacher_dir: Path, train: list[PromptExample], cfg: Any, max_length: int) -> str:
    from compresskit.models import source_fingerprint

    return sha256_json({"teacher": source_fingerprint(str(teacher_dir)),
                        "examples": [[ex.prompt, ex.response] for ex in train],
                        "train": dataclasses.asdict(cfg.train), "max_length": max_length})[:16]


def cached_or_finetune_lm(cfg: Any, teacher_dir: Path, prompts: dict[str, list[PromptExample]], cache_root: Path,
                          batch_size: int, max_length: int) -> tuple[Path, dict[str, Any], bool]:
    """The fine-tuned teacher's folder (made when ``cache_root`` lacks it), its record and whether it was reused.
    ``cfg`` is a ``finetune.FinetuneConfig``: epochs and learning rate (``--teacher-epochs``,
    ``--teacher-learning-rate``); batch size and length are the distillation's."""
    train = with_real_answers(prompts.get("train", []))
    out = Path(cache_root) / f"lm-teacher-{_key(teacher_dir, train, cfg, max_length)}"
    if (out / "finetune.json").is_file():
        return out, read_json(out / "finetune.json"), True
    return out, finetune_lm_teacher(cfg, teacher_dir, train, with_real_answers(prompts.get("validation", [])),
                                    out, batch_size, max_length), False


def finetune_lm_teacher(cfg: Any, teacher_dir: Path, train: list[PromptExample], validation: list[PromptExample],
                        out: Path, batch_size: int, max_length: int) -> dict[str, Any]:
    """Fine-tune the teacher in ``teacher_dir`` on ``train`` (prompt → real answer) into ``out`` (with
    ``finetune.json``); returns the record."""
    import torch
    from transformers import AutoTokenizer

    from compresskit.tasks.causal_lm.distill import Examples, LMDistillConfig, LMObjective, collator
    from compresskit.tasks.causal_lm.kd_losses import LMKDConfig
    from compresskit.tasks.causal_lm.prompts import context_length, tokenize_example
    from compresskit.tasks.causal_lm.teacher import load_causal_lm
    from compresskit.training import checkpoint_dir, is_main_process
    from compresskit.training import train as run_training

    started = time.time()
    if not train:
        raise UserError("no training prompt has a real answer to fine-tune the teacher on")
    torch.manual_seed(cfg.train.seed)
    model = load_causal_lm(str(teacher_dir))
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    context = context_length(model.config)
    train_set = [tokenize_example(tokenizer, ex, max_length, context) for ex in train]
    eval_set = [tokenize_example(tokenizer, ex, max_length, context) for ex in validation] or train_set[:1]
    tcfg = dataclasses.replace(cfg.train, batch_size=batch_size, max_length=max_length)
    steps = max(1, math.ceil(cfg.train.epochs * len(train_set) / (batch_size * tcfg.gradient_accumulation)))
    objective = LMObjective(None, LMDistillConfig(kd=LMKDConfig(alpha=0.0), train=tcfg), pad_id,
                            tokenizer.eos_token_id, tcfg.seed)
    before = _mean_loss(model, objective, eval_set, pad_id)
    model.train()
    history = run_training(model, Examples(train_set), Examples(eval_set, len(train_set)), tcfg,
                           checkpoint_dir(out), objective=objective, collator=collator(pad_id), max_steps=steps,
                           eval_steps=max(1, steps // 3))
    record = stage_record("finetune", {"train": dataclasses.asdict(cfg.train)},
                          {"teacher": str(teacher_dir)}, started, task="causal-lm", steps=steps,
                          train_examples=len(train_set), validation_examples=len(eval_set),
                          kinds=sorted({ex.kind for ex in train}), validation_loss_before=before, **history)
    if is_main_process():
        with atomic_dir(out) as tmp:
            model.eval().save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "finetune.json", record)
    return record


def _mean_loss(model: Any, objective: Any, examples: list[Any], pad_id: int) -> float:
    """The answer cross-entropy of the untouched teacher on ``examples``, to show what fine-tuning changed."""
    import torch

    from compresskit.tasks.causal_lm.prompts import collate

    model.eval()
    losses = []
    with torch.no_grad():
        for s in range(0, len(examples), 8):
            batch = collate(examples[s:s + 8], pad_id)
            losses.append(float(objective(model, batch)[0]))
    return sum(losses) / len(losses)
