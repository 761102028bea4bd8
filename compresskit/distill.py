"""Stage 2: distil a student from a fine-tuned teacher.

The student learns from the teacher's temperature-softened output distribution mixed with the hard labels
(``kd_loss``). The teacher's logits on the training split are computed once and cached on disk, keyed by the
teacher, the data and the sequence length, so epochs, reruns and sweeps do not pay for the teacher again.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, atomic_dir, sha256_json, stage_record, write_json
from compresskit.data import data_manifest, read_labels, read_split
from compresskit.finetune import source_fingerprint
from compresskit.models import (
    LoadOptions,
    check_model_dir,
    count_parameters,
    head_labels,
    is_classifier,
    layer_count,
    load_classifier,
    load_tokenizer,
    match_labels,
    parse_layers,
    student_from_teacher_layers,
    tokenizers_agree,
)
from compresskit.training import (
    TextDataset,
    TrainConfig,
    checkpoint_dir,
    encode,
    is_main_process,
    predict_logits,
    resolve_device,
    train,
)


@dataclass(frozen=True)
class DistillConfig:
    """How the student is built and taught."""

    temperature: float = 2.0
    """Softmax temperature of the soft targets (``--temperature``); higher shows more of the teacher's
    'dark knowledge' about wrong classes."""
    alpha: float = 0.5
    """Weight of the soft-target loss; 1 − α goes to hard-label cross-entropy (``--alpha``, 0..1)."""
    student_layers: str = "0,5"
    """Teacher layers the student keeps, DistilBERT-style (``--student-layers``)."""
    student: str | None = None
    """A student model folder or hub id to use instead of teacher layers (``--student``)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4.0, learning_rate=1e-4))
    """Optimisation settings of the student."""
    load: LoadOptions = field(default_factory=LoadOptions)
    """Trust settings for loading a user-given student."""

    def __post_init__(self) -> None:
        problems = []
        if not self.temperature > 0:
            problems.append(f"--temperature must be > 0, got {self.temperature}")
        if not 0 <= self.alpha <= 1:
            problems.append(f"--alpha must be between 0 and 1, got {self.alpha}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class DistillResult:
    """The student's folder and how it did on validation."""

    model_dir: Path
    validation_accuracy: float | None
    parameters: int


def teacher_label_ids(teacher_labels: list[str], data_labels: list[str], ids: list[int]) -> list[int]:
    """Re-index data label ids (into the data's sorted labels) to the teacher head's label order."""
    index = {n: i for i, n in enumerate(teacher_labels)}
    return [index[data_labels[i]] for i in ids]


def teacher_logits_cached(teacher: Any, tokenizer: Any, teacher_dir: Path, data_dir: Path, texts: list[str],
                          max_length: int, cache_root: Path, device: str) -> np.ndarray:
    """The teacher's logits on ``texts``, from the disk cache when the same teacher, data and length made them."""
    key = sha256_json({"teacher": source_fingerprint(str(teacher_dir)), "data": data_manifest(data_dir)["sha256"],
                       "max_length": max_length, "n": len(texts)})[:16]
    path = cache_root / f"teacher-logits-{key}.npy"
    if path.is_file():
        return np.load(path)
    logits = predict_logits(teacher, tokenizer, texts, max_length, device=device, desc="teacher logits")
    cache_root.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")  # unique per process: torchrun ranks race here
    np.save(tmp, logits)
    tmp.replace(path)
    return logits


def build_student(cfg: DistillConfig, teacher: Any, teacher_tokenizer: Any, labels: list[str]) -> tuple[Any, str]:
    """The student model and a description of where it came from."""
    if cfg.student is None:
        layers = parse_layers(cfg.student_layers, layer_count(teacher.config))
        return student_from_teacher_layers(teacher, layers), f"teacher layers {','.join(map(str, layers))}"
    if Path(cfg.student).exists():
        check_model_dir(Path(cfg.student), cfg.load.allow_pickle)
    student_tok = load_tokenizer(cfg.student, cfg.load)
    if not tokenizers_agree(teacher_tokenizer, student_tok):
        raise UserError(f"the tokenizer of --student {cfg.student} differs from the teacher's; distillation needs "
                        "both to see the same token ids (use a student built on the teacher's vocabulary)")
    return load_classifier(cfg.student, cfg.load, labels=labels), cfg.student


def distill(cfg: DistillConfig, teacher_dir: Path, data_dir: Path, out: Path, cache_root: Path,
            teacher_load: LoadOptions = LoadOptions(), resume: bool = False) -> DistillResult:
    """Distil a student from the fine-tuned teacher in ``teacher_dir`` on ``data_dir``; write it to ``out``.

    With ``resume``, training continues from the newest checkpoint beside ``out`` (a killed run).
    """
    started = time.time()
    teacher = load_classifier(str(teacher_dir), teacher_load)
    if not is_classifier(teacher.config):
        raise UserError(f"teacher {teacher_dir} has no classification head: fine-tune it first (finetune-teacher)")
    data_labels = read_labels(data_dir)
    labels = match_labels(teacher.config, data_labels, str(teacher_dir))
    if head_labels(teacher.config) != labels:  # generic LABEL_i names: give the head the data's names
        teacher.config.id2label = dict(enumerate(labels))
        teacher.config.label2id = {n: i for i, n in enumerate(labels)}
    tokenizer = load_tokenizer(str(teacher_dir), teacher_load)
    train_texts, train_ids = read_split(data_dir, "train")
    val_texts, val_ids = read_split(data_dir, "validation")
    train_ids = teacher_label_ids(labels, data_labels, train_ids)
    val_ids = teacher_label_ids(labels, data_labels, val_ids)

    device = resolve_device(cfg.train.device)
    soft = teacher_logits_cached(teacher, tokenizer, teacher_dir, data_dir, train_texts, cfg.train.max_length,
                                 cache_root, device)
    from transformers import set_seed

    set_seed(cfg.train.seed)  # a user-given student may get a fresh head: same seed, same start
    student, origin = build_student(cfg, teacher, tokenizer, labels)
    del teacher
    train_set = TextDataset(encode(tokenizer, train_texts, cfg.train.max_length), train_ids, soft)
    val_set = TextDataset(encode(tokenizer, val_texts, cfg.train.max_length), val_ids)
    history = train(student, tokenizer, train_set, val_set, cfg.train, checkpoint_dir(out),
                    temperature=cfg.temperature, alpha=cfg.alpha, resume=resume)
    params = count_parameters(student)
    if not is_main_process():  # under torchrun every rank trains; rank 0 alone publishes the student
        return DistillResult(out, history["best_validation_accuracy"], params)
    with atomic_dir(out) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "distill.json", stage_record(
            "distill", dataclasses.asdict(cfg), {"teacher": str(teacher_dir), "data": str(data_dir),
                                                "data_sha256": data_manifest(data_dir)["sha256"]},
            started, student_origin=origin, labels=labels, parameters=params,
            layers=layer_count(student.config), **history))
    return DistillResult(out, history["best_validation_accuracy"], params)
