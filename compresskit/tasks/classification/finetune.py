"""Stage 1: fine-tune the teacher on the labelled data when it has no classification head yet.

A sentence-embedding model such as all-MiniLM-L6-v2 has no head for the data's classes, so it cannot teach
until it has been trained on them. The result is cached by (teacher weights, data hash, settings): a second
run with the same inputs reuses it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from compresskit.artifacts import (
    UserError,
    atomic_dir,
    file_manifest,
    manifest_problem,
    read_json,
    sha256_json,
    stage_record,
    truncation_problem,
    write_json,
)
from compresskit.models import count_parameters, load_tokenizer, source_fingerprint
from compresskit.tasks.classification.data import data_manifest, read_labels, read_split
from compresskit.tasks.classification.models import load_classifier
from compresskit.tasks.classification.training import SELECTION_RULE, TextDataset, encode, train
from compresskit.training import FinetuneConfig, checkpoint_dir, is_main_process


@dataclass(frozen=True)
class FinetuneResult:
    """The fine-tuned teacher's folder and how it did."""

    model_dir: Path
    validation_accuracy: float | None
    reused: bool
    damaged: str | None = None
    """Why a cache entry of the same inputs was not reused (a file cut or changed since it was made), if one was
    there."""


def cache_key(source: str, data_dir: Path, cfg: FinetuneConfig) -> str:
    """Key of a fine-tuned teacher in the cache: what it was made from and how."""
    return sha256_json({
        "source": source_fingerprint(source),
        "data": data_manifest(data_dir)["sha256"],
        "train": dataclasses.asdict(cfg.train),
        "selection": SELECTION_RULE,
    })[:16]


def finetune_teacher(cfg: FinetuneConfig, source: str, data_dir: Path, out: Path, resume: bool = False
                     ) -> FinetuneResult:
    """Train a classification head (and the encoder) of ``source`` on ``data_dir``; write the model to ``out``.

    With ``resume``, training continues from the newest checkpoint beside ``out`` (a killed run).
    """
    started = time.time()
    from transformers import set_seed

    labels = read_labels(data_dir)
    set_seed(cfg.train.seed)  # the new head's initialisation must not depend on what ran before
    model = load_classifier(source, cfg.load, labels=labels)
    tokenizer = load_tokenizer(source, cfg.load)
    train_texts, train_ids = read_split(data_dir, "train")
    val_texts, val_ids = read_split(data_dir, "validation")
    if not train_texts:
        raise UserError(f"{data_dir} has an empty training split")
    train_set = TextDataset(encode(tokenizer, train_texts, cfg.train.max_length), train_ids)
    val_set = TextDataset(encode(tokenizer, val_texts, cfg.train.max_length), val_ids)
    history = train(model, tokenizer, train_set, val_set, cfg.train, checkpoint_dir(out), resume=resume)
    if not is_main_process():
        return FinetuneResult(out, history["best_validation_accuracy"], reused=False)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "finetune.json", stage_record(
            "finetune-teacher", dataclasses.asdict(cfg), {"teacher": source, "data": str(data_dir),
                                                         "data_sha256": data_manifest(data_dir)["sha256"]},
            started, labels=labels, parameters=count_parameters(model), files=file_manifest(tmp), **history))
    return FinetuneResult(out, history["best_validation_accuracy"], reused=False)


def cached_or_finetune(cfg: FinetuneConfig, source: str, data_dir: Path, cache_root: Path) -> FinetuneResult:
    """Reuse a fine-tuned teacher from ``cache_root`` when one was made from the same inputs, else make it.

    An interrupted fine-tuning of the same inputs left checkpoints beside the cache entry: it is resumed.
    """
    out = cache_root / f"teacher-{cache_key(source, data_dir, cfg)}"
    damaged = entry_problem(out) if (out / "finetune.json").exists() else None
    if (out / "finetune.json").exists() and damaged is None:
        return FinetuneResult(out, read_json(out / "finetune.json").get("best_validation_accuracy"), reused=True)
    made = finetune_teacher(cfg, source, data_dir, out, resume=checkpoint_dir(out).is_dir())
    return dataclasses.replace(made, damaged=damaged)


def entry_problem(folder: Path) -> str | None:
    """Why a fine-tuned teacher ``folder`` must not be reused, or None: ``finetune.json`` unreadable, or a file not as
    it lists it (size and SHA-256, ``manifest_problem``). An entry made before ``finetune.json`` listed its files is
    checked from the files' own headers (``truncation_problem``)."""
    record = folder / "finetune.json"
    problem = truncation_problem(record)
    if problem:
        return problem
    files = read_json(record).get("files")
    if files is not None:
        return manifest_problem(folder, files)
    return next(filter(None, (truncation_problem(p) for p in sorted(folder.iterdir()) if p.is_file())), None)
