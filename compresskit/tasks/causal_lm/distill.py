"""Stage 2 of the causal-LM task: a student decoder from the teacher's layers, trained on the teacher's next-token
distributions (token-level KD) through transformers' Trainer (resume, DDP/FSDP, bf16 on CUDA, as for classifiers).

The student keeps a subset of the teacher's decoder blocks: by default ``ceil(n/3)`` of them, chosen by measured
block influence on calibration text (``layers.block_influence``), or spread uniformly, or the ones the user names.
Before training, that pruned student is saved as it is (``pruned_out``): pruning alone destroys a decoder, and the
report shows that point beside the distilled one, so what distillation gives back is visible.

The loss (``kd_losses``) is computed over response tokens only (prompt tokens masked) and over every token of
plain-text windows, in chunks of positions, so memory does not grow with vocabulary × sequence. With
``on_policy_fraction`` λ > 0, that share of batches replaces the given answer with one the student samples itself,
scored by the teacher (on-policy distillation, GKD). With α = 0 the loss is cross-entropy on the teacher's answers
alone (sequence-level fine-tuning) and the teacher does not run during training. With ``teacher_topk`` k > 0 the
teacher runs once, before training, over every training and validation example, and its top-k next-token
distribution per position is read from an offline cache (``topk_cache``) at every step instead.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compresskit.artifacts import UserError, atomic_dir, stage_record, write_json
from compresskit.tasks.causal_lm.kd_losses import (
    IGNORE_INDEX,
    LMKDConfig,
    check_lm_head,
    final_hidden_states,
    kd_loss_chunked,
    lm_head,
)
from compresskit.tasks.causal_lm.prompts import TokenizedExample, collate, text_windows, tokenize_example
from compresskit.training import TrainConfig

LAYER_CHOICES = ("importance", "uniform")


@dataclass(frozen=True)
class LMDistillConfig:
    """Which student, which loss, how long."""

    kd: LMKDConfig = field(default_factory=LMKDConfig)
    """Divergence (forward KL, reverse KL, JSD with β), temperature T and the α mix with cross-entropy."""
    student_layers: str = "auto"
    """``auto`` (``ceil(n/3)`` teacher layers, chosen by ``layer_choice``), or teacher layer indices ``0,5,9``
    (``--student-layers``)."""
    student_depth: int | None = None
    """With ``auto``: this many layers instead of ``ceil(n/3)`` (``--student-depth``)."""
    student: str | None = None
    """The user's own causal LM as the student (a folder or hub id) instead of teacher layers; its tokenizer must be
    the teacher's (``--student``)."""
    student_shape: str | None = None
    """A narrower student of the teacher's family and vocabulary, randomly initialised:
    ``layers=8,hidden=256,heads=4,intermediate=1024`` (``--student-shape``)."""
    layer_choice: str = "importance"
    """How ``auto`` picks layers: ``importance`` (block influence on calibration text) or ``uniform``
    (``--layer-choice``)."""
    on_policy_fraction: float = 0.0
    """Share λ of training batches answered by the student itself and scored by the teacher (``--on-policy``)."""
    max_steps: int = 120
    """Optimiser steps (``--max-steps``)."""
    teacher_topk: int = 0
    """0: the live teacher scores every batch. k > 0: the teacher's top-k next-token log-probabilities (and the
    mass of the rest) per position, computed once into an offline cache and read at every step
    (``--teacher-topk``)."""
    window: int = 128
    """Tokens per plain-text training window (``--lm-window``)."""
    calibration_texts: int = 16
    """Training texts the block influence is measured on."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(batch_size=4, learning_rate=2e-4, max_length=192))
    """Optimiser and device settings (batch size, learning rate, max length, precision, …)."""

    def __post_init__(self) -> None:
        problems = []
        if self.layer_choice not in LAYER_CHOICES:
            problems.append(f"--layer-choice must be importance or uniform, got {self.layer_choice!r}")
        if not 0 <= self.on_policy_fraction <= 1:
            problems.append(f"--on-policy must be in [0, 1], got {self.on_policy_fraction}")
        if self.max_steps < 1:
            problems.append(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.student_depth is not None and self.student_depth < 1:
            problems.append(f"--student-depth must be >= 1, got {self.student_depth}")
        if self.student is not None and self.student_shape is not None:
            problems.append("give --student or --student-shape, not both")
        if self.teacher_topk < 0:
            problems.append(f"--teacher-topk must be 0 (live teacher) or a positive k, got {self.teacher_topk}")
        if self.teacher_topk and self.on_policy_fraction:
            problems.append("--teacher-topk caches the teacher's answers to the given examples; on-policy batches "
                            "(--on-policy) are answered by the student during training and need the live teacher")
        if self.teacher_topk and self.kd.alpha > 0 and self.kd.topk_mode == "bucket" and self.kd.temperature != 1:
            problems.append(f"--teacher-topk keeps no tail to temper: it needs --kd-temperature 1, got "
                            f"{self.kd.temperature}")
        if self.window < 8:
            problems.append(f"--lm-window must be at least 8 tokens, got {self.window}")
        if problems:
            raise UserError("; ".join(problems))


def choose_student_layers(cfg: LMDistillConfig, teacher: Any, calibration: list[TokenizedExample], pad_id: int
                          ) -> Any:
    """The teacher layers the student keeps and why (a ``layers.LayerChoice``)."""
    from compresskit.models import layer_count
    from compresskit.tasks.causal_lm.layers import LayerChoice, block_influence, choose_layers, uniform_layers

    n = layer_count(teacher.config)
    if cfg.student_layers != "auto":
        try:
            layers = tuple(int(x) for x in cfg.student_layers.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--student-layers must be auto or comma-separated layer indices, got "
                            f"{cfg.student_layers!r}") from None
        if not layers or any(not 0 <= i < n for i in layers) or len(set(layers)) != len(layers):
            raise UserError(f"--student-layers must name distinct layers among 0..{n - 1}, got {cfg.student_layers}")
        return LayerChoice(tuple(sorted(layers)), "given by --student-layers")
    depth = cfg.student_depth or math.ceil(n / 3)
    if cfg.layer_choice == "uniform":
        return uniform_layers(n, depth)
    batches = [collate(calibration[s:s + 4], pad_id) for s in range(0, len(calibration), 4)]
    with torch.no_grad():
        importance = block_influence(teacher, batches)
    return choose_layers(importance, depth)


def shape_of(spec: str, teacher_config: Any) -> dict[str, int]:
    """``--student-shape`` as ``layers.shrunk_student`` arguments; dimensions not named keep the teacher's."""
    from compresskit.models import layer_count, parse_shape

    given = parse_shape(spec)
    gpt2 = hasattr(teacher_config, "n_embd")
    teacher = {"num_hidden_layers": layer_count(teacher_config),
               "hidden_size": teacher_config.n_embd if gpt2 else teacher_config.hidden_size,
               "num_attention_heads": teacher_config.n_head if gpt2 else teacher_config.num_attention_heads,
               "intermediate_size": (teacher_config.n_inner or 4 * teacher_config.n_embd) if gpt2
               else teacher_config.intermediate_size}
    dims = {**teacher, **given}
    return {"layers": dims["num_hidden_layers"], "hidden": dims["hidden_size"],
            "heads": dims["num_attention_heads"], "intermediate": dims["intermediate_size"]}


def check_student(cfg: LMDistillConfig, teacher_config: Any, teacher_tokenizer: Any, load: Any = None) -> None:
    """Refuse, before anything is written, a ``--student`` that is not a causal LM or reads other token ids than
    the teacher, and a ``--student-shape`` that cannot be built."""
    from transformers import AutoTokenizer

    from compresskit.models import LoadOptions, is_causal_lm_config, read_config
    from compresskit.tasks.causal_lm.layers import shrunk_student
    from compresskit.tasks.causal_lm.teacher import require_same_tokenizer, resolve_causal_lm_source

    load = load or LoadOptions()
    if cfg.student_shape is not None:  # one layer deep: here only the dimensions' sense is checked
        shrunk_student(teacher_config, **{**shape_of(cfg.student_shape, teacher_config), "layers": 1})
    if cfg.student is None:
        return
    resolved = resolve_causal_lm_source(cfg.student, Path("."), load.allow_pickle)
    if not is_causal_lm_config(read_config(resolved, load)):
        raise UserError(f"--student {cfg.student} is not a causal language model; give a decoder LLM on the "
                        "teacher's vocabulary")
    try:
        student_tokenizer = AutoTokenizer.from_pretrained(resolved, trust_remote_code=load.trust_remote_code)
    except (OSError, ValueError) as e:
        raise UserError(f"--student {cfg.student}: its tokenizer does not load ({str(e).splitlines()[0]})") from None
    require_same_tokenizer(teacher_tokenizer, student_tokenizer, f"--student {cfg.student}")


def build_student(cfg: LMDistillConfig, teacher: Any, calibration: list[TokenizedExample], pad_id: int
                  ) -> tuple[Any, Any]:
    """The untrained student and a ``layers.LayerChoice`` saying where it came from (its layers empty when it is
    not made of teacher layers)."""
    from compresskit.tasks.causal_lm.layers import LayerChoice, shrunk_student, student_from_layers
    from compresskit.tasks.causal_lm.teacher import load_causal_lm

    if cfg.student is not None:
        return load_causal_lm(cfg.student).train(), LayerChoice((), f"the user's student {cfg.student}")
    if cfg.student_shape is not None:
        dims = shape_of(cfg.student_shape, teacher.config)
        student = shrunk_student(teacher.config, seed=cfg.train.seed, **dims)
        return student, LayerChoice((), f"shrunk teacher config {cfg.student_shape} (random init)")
    choice = choose_student_layers(cfg, teacher, calibration, pad_id)
    return student_from_layers(teacher, list(choice.layers)), choice


class LMObjective:
    """The Trainer's loss: token-level KD, chunked over positions, against the live teacher or its top-k cache
    (rows looked up by the batch's ``example_ids``); cross-entropy alone at α = 0. On a share λ of batches the
    student first answers the prompts itself (sampled), and the teacher scores that answer."""

    def __init__(self, teacher: Any | None, cfg: LMDistillConfig, pad_id: int, eos_id: int | None, seed: int,
                 cache: Any | None = None):
        self.teacher = None if teacher is None else teacher.eval()
        self.cfg, self.pad_id, self.eos_id, self.cache = cfg, pad_id, eos_id, cache
        self.rng = random.Random(seed)
        self.on_policy_batches = 0

    def __call__(self, model: Any, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, Any]]:
        from compresskit.tasks.causal_lm.kd_losses import (
            cross_entropy_chunked,
            next_token_targets,
            topk_kd_loss_chunked,
        )

        ids, mask, labels = inputs["input_ids"], inputs["attention_mask"], inputs["labels"]
        if model.training and self.cfg.on_policy_fraction and self.rng.random() < self.cfg.on_policy_fraction:
            ids, mask, labels = self._student_answers(model, ids, mask, labels)
            self.on_policy_batches += 1
        targets = next_token_targets(labels)
        student_hidden = final_hidden_states(model, ids, mask)
        if self.cfg.kd.alpha == 0:
            loss = cross_entropy_chunked(student_hidden, lm_head(model), targets)
        elif self.cache is not None:
            top = self.cache.rows(inputs["example_ids"].tolist())
            top = type(top)(*(x.to(ids.device) for x in top))
            loss = topk_kd_loss_chunked(student_hidden, lm_head(model), top, targets, self.cfg.kd)
        else:
            if self.teacher.device != ids.device:
                self.teacher.to(ids.device)
            with torch.no_grad():
                teacher_hidden = final_hidden_states(self.teacher, ids, mask)
            loss = kd_loss_chunked(student_hidden, lm_head(model), teacher_hidden, lm_head(self.teacher), targets,
                                   self.cfg.kd)
        return loss, {"loss": loss}

    @torch.no_grad()
    def _student_answers(self, model: Any, ids: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each row's prompt (the tokens before its first label) followed by an answer the student samples, as
        long as the given one; rows with no prompt (plain text) keep their text."""
        rows = []
        for r in range(ids.shape[0]):
            n = int(mask[r].sum())
            counted = (labels[r, :n] != IGNORE_INDEX).nonzero()
            start = int(counted[0]) if len(counted) else n
            if start == 0 or start == n:
                rows.append(TokenizedExample(ids[r, :n].tolist(), labels[r, :n].tolist(), "given"))
                continue
            prompt = ids[r:r + 1, :start]
            was_training = model.training
            model.eval()
            out = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), do_sample=True,
                                 max_new_tokens=n - start, pad_token_id=self.pad_id, eos_token_id=self.eos_id)
            model.train(was_training)
            answer = out[0, start:].tolist()
            rows.append(TokenizedExample(prompt[0].tolist() + answer, [IGNORE_INDEX] * start + answer, "sampled"))
        batch = collate(rows, self.pad_id)
        return (batch["input_ids"].to(ids.device), batch["attention_mask"].to(ids.device),
                batch["labels"].to(ids.device))


class Examples(torch.utils.data.Dataset):
    """Tokenised examples as the Trainer reads them, each with its row in the teacher's top-k cache (train
    examples first, then validation: ``first`` is where this split starts); ``collator`` pads a batch."""

    def __init__(self, examples: list[TokenizedExample], first: int = 0):
        self.examples, self.first = examples, first

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> tuple[int, TokenizedExample]:
        return self.first + i, self.examples[i]


def collator(pad_id: int) -> Any:
    """The Trainer's collator of ``Examples`` batches: ``collate``'s padded tensors plus ``example_ids``, the rows
    of the teacher's top-k cache."""
    def collate_with_ids(batch: list[tuple[int, TokenizedExample]]) -> dict[str, torch.Tensor]:
        return {**collate([ex for _, ex in batch], pad_id),
                "example_ids": torch.tensor([i for i, _ in batch], dtype=torch.long)}
    return collate_with_ids


def training_examples(tokenizer: Any, data_dir: Path, split: str, max_length: int, window: int, context: int
                      ) -> list[TokenizedExample]:
    """The instructions of ``split`` with their answers (prompt masked), and for ``train`` also the plain-text
    windows (every token counts)."""
    from compresskit.tasks.causal_lm.prepare import read_jsonl, read_prompts

    examples = [tokenize_example(tokenizer, ex, max_length, context) for ex in read_prompts(data_dir, split)
                if ex.response is not None]
    texts_file = Path(data_dir) / ("train_text.jsonl" if split == "train" else "heldout.jsonl")
    if split == "train" and texts_file.is_file():
        texts = [row["text"] for row in read_jsonl(texts_file)]
        examples += text_windows(tokenizer, texts, min(window, max_length), max_windows_per_text=1)
    return examples


def _teacher_cache(cfg: LMDistillConfig, teacher: Any, teacher_dir: Path, examples: list[TokenizedExample],
                   cache_root: Path, pad_id: int) -> tuple[Any, dict[str, Any]]:
    """The teacher's top-k cache of ``examples`` (built once, reused after), and what the record says of it."""
    from compresskit.artifacts import read_json
    from compresskit.models import source_fingerprint
    from compresskit.tasks.causal_lm.topk_cache import teacher_topk

    started = time.time()
    cache = teacher_topk(teacher, source_fingerprint(str(teacher_dir)), examples, cfg.train.max_length,
                         cfg.teacher_topk, cache_root, pad_id)
    info = read_json(cache.folder / "cache.json")
    size = sum(f.stat().st_size for f in cache.folder.iterdir())
    return cache, {"path": str(cache.folder), "k": cache.k, "positions": info["positions"],
                   "bytes_per_token": info["bytes_per_token"],
                   "full_logits_bytes_per_token": info["full_logits_bytes_per_token"], "megabytes": size / 1e6,
                   "seconds_to_open_or_build": round(time.time() - started, 3)}


def distill_lm(cfg: LMDistillConfig, teacher_dir: Path, data_dir: Path, out: Path, pruned_out: Path,
               resume: bool = False, cache_root: Path | None = None) -> dict[str, Any]:
    """Build the student from ``teacher_dir``'s layers, save it untrained to ``pruned_out``, distil it on
    ``data_dir`` into ``out`` (with ``distill.json``); returns the record. The teacher's top-k cache
    (``teacher_topk``) lives in ``cache_root`` (default: ``out``'s parent folder's ``.cache``)."""
    from transformers import AutoTokenizer

    from compresskit.models import count_parameters, layer_count
    from compresskit.tasks.causal_lm.prompts import context_length
    from compresskit.tasks.causal_lm.teacher import load_causal_lm
    from compresskit.training import checkpoint_dir, is_main_process, train

    started = time.time()
    torch.manual_seed(cfg.train.seed)
    teacher = load_causal_lm(str(teacher_dir))
    check_lm_head(teacher)  # one short forward; the losses then read its head without one per step
    tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    context = context_length(teacher.config)
    train_set = training_examples(tokenizer, data_dir, "train", cfg.train.max_length, cfg.window, context)
    eval_set = training_examples(tokenizer, data_dir, "validation", cfg.train.max_length, cfg.window, context)
    if not train_set:
        raise UserError(f"{data_dir} holds no training examples")
    if not eval_set:  # plain-text data has no instructions: hold out a slice of the windows
        eval_set, train_set = train_set[:max(1, len(train_set) // 10)], train_set[max(1, len(train_set) // 10):]
    student, choice = build_student(cfg, teacher, train_set[-cfg.calibration_texts:], pad_id)
    check_lm_head(student)
    if is_main_process() and not (pruned_out / "config.json").is_file():
        with atomic_dir(pruned_out) as tmp:
            student.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "pruned.json", {"teacher": str(teacher_dir), "layers": list(choice.layers),
                                             "rule": choice.rule, "parameters": count_parameters(student)})
    cache, cache_record = None, None
    if cfg.teacher_topk and cfg.kd.alpha > 0:
        cache, cache_record = _teacher_cache(cfg, teacher, teacher_dir, train_set + eval_set,
                                             Path(cache_root or Path(out).parent / ".cache"), pad_id)
    teacher_parameters = count_parameters(teacher)
    if cfg.kd.alpha == 0 or cache is not None:  # the teacher is not needed during training: free its memory
        teacher = None
    student.train()
    objective = LMObjective(teacher, cfg, pad_id, tokenizer.eos_token_id, cfg.train.seed, cache)
    eval_every = max(1, cfg.max_steps // 4)
    history = train(student, Examples(train_set), Examples(eval_set, len(train_set)), cfg.train,
                    checkpoint_dir(out), objective=objective, resume=resume, collator=collator(pad_id),
                    max_steps=cfg.max_steps, eval_steps=eval_every)
    params = count_parameters(student)
    if cfg.kd.alpha == 0:
        teacher_outputs = "none: cross-entropy on the teacher's answers and the text (α = 0)"
    elif cache is not None:
        teacher_outputs = f"top-{cache.k} cache ({cache_record['bytes_per_token']} bytes per token)"
    else:
        teacher_outputs = "live teacher at every step"
    record = stage_record(
        "distill", dataclasses.asdict(cfg), {"teacher": str(teacher_dir), "data": str(data_dir)}, started,
        task="causal-lm", parameters=params, teacher_parameters=teacher_parameters,
        layers=layer_count(student.config), student_layers=list(choice.layers) or None,
        student_layers_rule=choice.rule,
        layer_importance=list(choice.importance) if choice.importance else None,
        student_origin=f"teacher layers {','.join(map(str, choice.layers))}" if choice.layers else choice.rule,
        train_examples=len(train_set),
        validation_examples=len(eval_set), on_policy_batches=objective.on_policy_batches,
        teacher_outputs=teacher_outputs, teacher_cache=cache_record, **history)
    if is_main_process():
        with atomic_dir(out) as tmp:
            student.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            write_json(tmp / "distill.json", record)
    return record
