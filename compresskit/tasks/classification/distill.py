"""Stage 2: distil a student from a fine-tuned teacher.

The student learns from the teacher's temperature-softened output distribution mixed with the hard labels
(``kd_loss``), plus any inner-activation terms. The teacher's outputs on the training texts (logits; hidden
states and attentions only when a term needs them) are computed once and cached on disk, keyed by the teacher,
the texts and the sequence length (``teacher_cache``), so epochs, reruns and sweeps do not pay for the teacher
again.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, atomic_dir, free_bytes, stage_record, write_json
from compresskit.models import (
    LoadOptions,
    check_model_dir,
    count_parameters,
    layer_count,
    load_tokenizer,
    parse_shape,
    source_fingerprint,
    tokenizers_agree,
)
from compresskit.tasks.classification.data import data_manifest, read_labels, read_split_for_head
from compresskit.tasks.classification.losses import IGNORE_LABEL, LossWeights, heads_compatible, parse_layer_map
from compresskit.tasks.classification.models import (
    head_labels,
    is_classifier,
    load_classifier,
    match_labels,
    parse_layers,
    student_from_teacher_layers,
    student_layers_rule,
)
from compresskit.tasks.classification.objective import Objective, StudentWithProjection, make_projection
from compresskit.tasks.classification.teacher_cache import TeacherNeeds, activation_bytes, teacher_outputs
from compresskit.tasks.classification.training import TextDataset, encode, train
from compresskit.training import TrainConfig, checkpoint_dir, is_main_process, resolve_device


@dataclass(frozen=True)
class DistillConfig:
    """How the student is built and taught."""

    temperature: float = 2.0
    """Softmax temperature of the soft targets (``--temperature``); higher shows more of the teacher's
    'dark knowledge' about wrong classes."""
    alpha: float = 0.5
    """Weight of the soft-target loss; 1 − α goes to hard-label cross-entropy (``--alpha``, 0..1)."""
    student_layers: str = "auto"
    """Teacher layers the student keeps, DistilBERT-style, e.g. ``0,5`` (``--student-layers``); ``auto`` keeps
    ceil(n/3) of the teacher's n layers, spread from the first to the last (``models.auto_student_layers``)."""
    student: str | None = None
    """A student model folder or hub id to use instead of teacher layers (``--student``)."""
    student_shape: str | None = None
    """A shrunk copy of the teacher's config, randomly initialised, e.g. ``layers=4,hidden=256,heads=4,
    intermediate=1024`` (``--student-shape``)."""
    weights: LossWeights = field(default_factory=LossWeights)
    """Weights of the loss terms (``--w-soft``, ``--w-mse-logits``, ``--w-hidden``, ``--w-attention``,
    ``--w-embedding``); ``soft`` weighs the α-mixed soft/hard term."""
    layer_map: str = "auto"
    """Teacher→student layer pairs for hidden-state and attention terms, e.g. ``2:0,5:1`` (``--layer-map``)."""
    unlabeled_data: str | None = None
    """Text without labels that the student learns from the teacher's soft labels alone (``--unlabeled-data``):
    a .txt file (one text per line) or a CSV/JSONL/Parquet file with a text column."""
    labeled_fraction: float = 1.0
    """Keep the labels of only this (stratified) share of the training split; with α > 0 the rest is used as
    unlabelled text, learnt from the teacher's soft labels (``--labeled-fraction``). Simulates few labels."""
    cache_teacher_activations: bool = True
    """Cache the teacher's hidden states / attentions that the loss terms read on disk (float16, memory-mapped)
    instead of running the teacher beside the student at every step (``--cache-teacher-activations``). Falls
    back to running it online when the cache would not fit in half the free disk space."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4.0, learning_rate=1e-4))
    """Optimisation settings of the student."""
    load: LoadOptions = field(default_factory=LoadOptions)
    """Trust settings for loading a user-given student."""

    def __post_init__(self) -> None:
        problems = []
        if self.student is not None and self.student_shape is not None:
            problems.append("give either --student or --student-shape, not both")
        if not 0 < self.labeled_fraction <= 1:
            problems.append(f"--labeled-fraction must be in (0, 1], got {self.labeled_fraction}")
        if self.unlabeled_data is not None and self.alpha == 0:
            problems.append("--unlabeled-data teaches through soft labels, which --alpha 0 switches off")
        if self.unlabeled_data is not None and not Path(self.unlabeled_data).is_file():
            problems.append(f"--unlabeled-data {self.unlabeled_data} does not exist")
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


def shrunk_student(teacher: Any, spec: str) -> Any:
    """A randomly initialised model of the teacher's architecture with smaller dimensions."""
    import copy

    config = copy.deepcopy(teacher.config)
    for key, value in parse_shape(spec).items():
        setattr(config, key, value)
    if config.hidden_size % config.num_attention_heads:
        raise UserError(f"--student-shape: hidden {config.hidden_size} is not divisible by heads "
                        f"{config.num_attention_heads}")
    return type(teacher)(config).eval()


def build_student(cfg: DistillConfig, teacher: Any, teacher_tokenizer: Any, labels: list[str]) -> tuple[Any, str]:
    """The student model and a description of where it came from."""
    if cfg.student_shape is not None:
        return shrunk_student(teacher, cfg.student_shape), f"shrunk teacher config {cfg.student_shape} (random init)"
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


def layer_choice(cfg: DistillConfig, n_teacher: int) -> dict[str, Any]:
    """For distill.json: the teacher layers the student was built from and how they were chosen (``auto`` or given);
    empty when the student is not built from teacher layers (``--student``, ``--student-shape``)."""
    if cfg.student is not None or cfg.student_shape is not None:
        return {}
    return {"student_layers": parse_layers(cfg.student_layers, n_teacher),
            "student_layers_rule": student_layers_rule(cfg.student_layers, n_teacher)}


def hide_labels(texts: list[str], ids: list[int], fraction: float, seed: int, keep_unlabeled: bool
                ) -> tuple[list[str], list[int]]:
    """Keep the labels of a stratified ``fraction`` of the examples (at least one per class); the others become
    unlabelled (``IGNORE_LABEL``) when ``keep_unlabeled``, else are dropped."""
    import random

    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(ids):
        by_class.setdefault(y, []).append(i)
    keep = set()
    for idx in by_class.values():
        rng.shuffle(idx)
        keep.update(idx[: max(1, round(len(idx) * fraction))])
    rows = [i for i in range(len(ids)) if i in keep or keep_unlabeled]
    return [texts[i] for i in rows], [ids[i] if i in keep else IGNORE_LABEL for i in rows]


def read_unlabeled(path: str) -> list[str]:
    """Texts of ``--unlabeled-data``: one per line of a .txt file, or the text column of a data file."""
    p = Path(path)
    if p.suffix.lower() == ".txt":
        texts = [line.strip() for line in p.read_text(encoding="utf-8", errors="replace").splitlines()]
    else:
        from compresskit.tasks.classification.data import rows_from_file

        rows = rows_from_file(p)
        if rows and "text" not in rows[0]:
            raise UserError(f"--unlabeled-data {path} has no 'text' column")
        texts = [str(r.get("text") or "").strip() for r in rows]
    texts = [t for t in texts if t]
    if not texts:
        raise UserError(f"--unlabeled-data {path} holds no text")
    return texts


def make_objective(cfg: DistillConfig, teacher: Any, student: Any) -> tuple[Any, Objective]:
    """The module the Trainer optimises (the student, or student + projection) and the loss over a batch."""
    w = cfg.weights
    pairs: list[tuple[int, int]] = []
    if w.hidden or w.attention:
        try:
            pairs = parse_layer_map(cfg.layer_map, layer_count(teacher.config), layer_count(student.config))
        except ValueError as e:
            raise UserError(str(e)) from None
    if w.attention:
        t_heads, s_heads = teacher.config.num_attention_heads, student.config.num_attention_heads
        if not heads_compatible(s_heads, t_heads):
            raise UserError(f"--w-attention needs equal head counts: teacher {t_heads}, student {s_heads}")
        # attention maps are only returned by the eager implementation, not by fused SDPA kernels
        for m in (teacher, student):
            m.set_attn_implementation("eager")
    projection = make_projection(w, student.config.hidden_size, teacher.config.hidden_size, len(pairs))
    model = StudentWithProjection(student, projection) if projection is not None else student
    objective = Objective(w, cfg.temperature, cfg.alpha, None, pairs, teacher_layers=layer_count(teacher.config))
    return model, objective


def plan_teacher_outputs(cfg: DistillConfig, objective: Objective, teacher_config: Any, n: int, cache_root: Path
                         ) -> tuple[TeacherNeeds, str]:
    """Which teacher outputs to cache, and how the inner activations are served (for the record).

    α = 0 with no logit term is the no-teacher ablation: it must not pay for (or see) the teacher's logits.
    """
    hidden, attentions = objective.activation_needs()
    needs = TeacherNeeds(logits=cfg.alpha > 0 or cfg.weights.mse_logits > 0, hidden=hidden, attentions=attentions)
    if not needs.activations:
        return needs, "none needed"
    size = activation_bytes(needs, n, cfg.train.max_length, teacher_config)
    if not cfg.cache_teacher_activations:
        return TeacherNeeds(logits=needs.logits), "online (--no-cache-teacher-activations)"
    free = free_bytes(cache_root)
    if size > free / 2:
        return TeacherNeeds(logits=needs.logits), (f"online: the cache would take {size / 1e9:.1f} GB, "
                                                   f"{free / 1e9:.1f} GB free")
    return needs, f"cached ({size / 1e6:.0f} MB, float16)"


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
    # match_labels guaranteed every data label has a place in the head, so no id is -1 here
    train_texts, train_ids = read_split_for_head(data_dir, "train", labels)
    val_texts, val_ids = read_split_for_head(data_dir, "validation", labels)

    device = resolve_device(cfg.train.device)
    if cfg.labeled_fraction < 1:
        train_texts, train_ids = hide_labels(train_texts, train_ids, cfg.labeled_fraction, cfg.train.seed,
                                             keep_unlabeled=cfg.alpha > 0)
    if cfg.unlabeled_data:
        extra = read_unlabeled(cfg.unlabeled_data)
        train_texts, train_ids = train_texts + extra, train_ids + [IGNORE_LABEL] * len(extra)
    from transformers import set_seed

    set_seed(cfg.train.seed)  # a user-given student may get a fresh head: same seed, same start
    student, origin = build_student(cfg, teacher, tokenizer, labels)
    chosen = layer_choice(cfg, layer_count(teacher.config))
    model, objective = make_objective(cfg, teacher, student)
    needs, activations = plan_teacher_outputs(cfg, objective, teacher.config, len(train_texts), cache_root)
    cached = (teacher_outputs(teacher, tokenizer, source_fingerprint(str(teacher_dir)), train_texts,
                              cfg.train.max_length, needs, cache_root, device) if needs.files() else None)
    if objective.needs_teacher and not needs.activations:
        objective.teacher = teacher.eval()  # not cached: the teacher runs beside the student
    train_set = TextDataset(encode(tokenizer, train_texts, cfg.train.max_length), train_ids, cached)
    val_set = TextDataset(encode(tokenizer, val_texts, cfg.train.max_length), val_ids)
    history = train(model, tokenizer, train_set, val_set, cfg.train, checkpoint_dir(out), objective, resume=resume)
    del teacher, objective
    params = count_parameters(student)
    if not is_main_process():  # under torchrun every rank trains; rank 0 alone publishes the student
        return DistillResult(out, history["best_validation_accuracy"], params)
    with atomic_dir(out) as tmp:
        student.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "distill.json", stage_record(
            "distill", dataclasses.asdict(cfg), {"teacher": str(teacher_dir), "data": str(data_dir),
                                                "data_sha256": data_manifest(data_dir)["sha256"]},
            started, student_origin=origin, labels=labels, parameters=params, loss_terms=cfg.weights.active(),
            teacher_outputs={"cache": str(cached.folder) if cached else None, "files": needs.files(),
                             "activations": activations},
            labeled_examples=sum(i != IGNORE_LABEL for i in train_ids),
            unlabeled_examples=sum(i == IGNORE_LABEL for i in train_ids),
            layers=layer_count(student.config), **chosen, **history))
    return DistillResult(out, history["best_validation_accuracy"], params)
