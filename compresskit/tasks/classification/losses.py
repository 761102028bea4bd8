"""Distillation losses: small pure functions over logits, hidden states, attention maps and sentence embeddings.

Every loss returns a scalar float32 tensor. ``LossWeights`` says which terms a run uses and ``combine`` sums them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

HIDDEN_KINDS = ("mse", "cosine")
IGNORE_LABEL = -100  # an unlabelled example (the same value cross-entropy ignores by default)
# loss term name -> the CLI flag that sets its weight; the order is the order of the report
TERM_FLAGS = {
    "soft": "--w-soft",
    "mse_logits": "--w-mse-logits",
    "hidden": "--w-hidden",
    "attention": "--w-attention",
    "embedding": "--w-embedding",
}
# log(0) guard for probabilities; far below any probability a softmax over a real sequence produces
_EPS = 1e-12


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher_T || student_T) · T², averaged over the batch (Hinton et al. 2015).

    Shapes: ``student_logits`` and ``teacher_logits`` are ``(batch, classes)``; returns a scalar.
    The T² factor keeps the soft term's gradient magnitude independent of T, so α means the same at any T.
    """
    t = float(temperature)
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True) * (t * t)


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor | None,
    temperature: float,
    alpha: float,
) -> torch.Tensor:
    """α · soft-target loss + (1 − α) · cross-entropy on the hard labels.

    Shapes: logits ``(batch, classes)``, ``labels`` ``(batch,)`` of class ids or None (unlabelled text: soft
    term only). A label of ``IGNORE_LABEL`` marks an unlabelled row inside a mixed batch: it gets the soft term
    only. α = 0 is plain hard-label training; α = 1 learns from the teacher alone.
    """
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    if labels is None or alpha >= 1.0:
        return soft
    labelled = labels != IGNORE_LABEL
    if not bool(labelled.any()):
        return soft
    hard = F.cross_entropy(student_logits.float()[labelled], labels[labelled])
    if alpha <= 0.0:
        return hard
    return alpha * soft + (1.0 - alpha) * hard


def mse_logits_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> torch.Tensor:
    """Mean squared error between raw logits, averaged over all elements ("logit matching", Ba & Caruana 2014).

    Shapes: both ``(batch, classes)``; returns a scalar. Unlike the soft-target loss it also matches the logits'
    offset and scale, which softmax throws away.
    """
    return F.mse_loss(student_logits.float(), teacher_logits.float())


def _masked_token_mean(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``per_token`` ``(batch, seq)`` over positions where ``mask`` ``(batch, seq)`` is 1; 0 if none."""
    keep = mask.bool()
    # where(), not a multiply: a padded position holding inf/NaN would survive 0 · x and poison the mean
    total = torch.where(keep, per_token, torch.zeros_like(per_token)).sum()
    return total / keep.sum().clamp(min=1)


def needs_projection(student_width: int, teacher_width: int) -> bool:
    """True when student and teacher hidden widths differ, so hidden states need a learned projection to compare."""
    return student_width != teacher_width


def hidden_state_loss(
    student_hidden: torch.Tensor,
    teacher_hidden: torch.Tensor,
    attention_mask: torch.Tensor,
    kind: str = "mse",
    projection: torch.nn.Module | None = None,
) -> torch.Tensor:
    """Distance between one student layer's and one teacher layer's hidden states, over real tokens only.

    Shapes: ``student_hidden`` ``(batch, seq, d_s)``, ``teacher_hidden`` ``(batch, seq, d_t)``,
    ``attention_mask`` ``(batch, seq)`` of 0/1 (0 = padding, excluded); returns a scalar.
    ``projection`` maps d_s → d_t on the student side: TinyBERT's learned linear, e.g. ``HiddenProjection.layers[i]``.
    ``kind="mse"``: mean over real tokens of the per-token mean squared error across the hidden dim.
    ``kind="cosine"``: mean over real tokens of 1 − cosine similarity (ignores scale, matches direction).
    """
    if kind not in HIDDEN_KINDS:
        raise ValueError(f"--hidden-loss must be one of {', '.join(HIDDEN_KINDS)}, got {kind!r}")
    if student_hidden.shape[:2] != teacher_hidden.shape[:2] or teacher_hidden.shape[:2] != attention_mask.shape:
        raise ValueError(
            f"hidden states and mask must share (batch, seq): student {tuple(student_hidden.shape)}, "
            f"teacher {tuple(teacher_hidden.shape)}, mask {tuple(attention_mask.shape)}"
        )
    student = student_hidden.float()
    if projection is not None:
        student = projection(student).float()
    elif needs_projection(student.shape[-1], teacher_hidden.shape[-1]):
        raise ValueError(
            f"hidden widths differ (student {student.shape[-1]}, teacher {teacher_hidden.shape[-1]}) and no "
            "projection was given: pass a HiddenProjection layer to map student states to the teacher's width"
        )
    if student.shape[-1] != teacher_hidden.shape[-1]:
        raise ValueError(f"projection gives width {student.shape[-1]}, the teacher's is {teacher_hidden.shape[-1]}")
    teacher = teacher_hidden.float()
    if kind == "mse":
        per_token = (student - teacher).pow(2).mean(dim=-1)
    else:
        per_token = 1.0 - F.cosine_similarity(student, teacher, dim=-1)
    return _masked_token_mean(per_token, attention_mask)


class HiddenProjection(torch.nn.Module):
    """One learned ``nn.Linear(student_width, teacher_width)`` per mapped (teacher, student) layer pair (TinyBERT).

    Trained with the student and thrown away afterwards: it exists only so the hidden-state loss can compare
    states of different widths. ``forward(i, x)``: ``x`` ``(..., student_width)`` → ``(..., teacher_width)``.
    """

    def __init__(self, student_width: int, teacher_width: int, n_pairs: int) -> None:
        super().__init__()
        if student_width < 1 or teacher_width < 1 or n_pairs < 1:
            raise ValueError(f"HiddenProjection needs positive sizes, got {student_width}, {teacher_width}, {n_pairs}")
        self.layers = torch.nn.ModuleList(torch.nn.Linear(student_width, teacher_width) for _ in range(n_pairs))

    def forward(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Project ``x`` ``(..., student_width)`` with the i-th pair's linear map to ``(..., teacher_width)``."""
        return self.layers[i](x)


def parse_layer_map(spec: str, n_teacher: int, n_student: int) -> list[tuple[int, int]]:
    """Parse ``--layer-map`` into ``[(teacher_layer, student_layer), ...]`` in the order given.

    ``spec`` is ``"t:s,t:s,..."`` with 0-based transformer block indices, or ``"auto"``: student block j learns
    from teacher block round_half_up((j + 1) · n_teacher / n_student) − 1, a uniform spread that maps last to last
    (6 teacher, 2 student → ``[(2, 0), (5, 1)]``). Each student block may appear at most once.
    Callers: a transformers ``hidden_states`` tuple has n_layers + 1 entries (index 0 is the embedding output),
    so block i's output is ``hidden_states[i + 1]``; ``attentions`` has n_layers entries, block i at ``[i]``.
    """
    if n_teacher < 1 or n_student < 1:
        raise ValueError(f"--layer-map needs models with layers, got {n_teacher} teacher and {n_student} student")
    if spec.strip().lower() == "auto":
        # integer half-up rounding: exact, and free of Python round()'s banker's rounding at .5;
        # max(1, ·) keeps a student deeper than its teacher on block 0 rather than -1
        return [(max(1, (2 * (j + 1) * n_teacher + n_student) // (2 * n_student)) - 1, j) for j in range(n_student)]
    pairs: list[tuple[int, int]] = []
    problems: list[str] = []
    for item in spec.split(","):
        parts = [p.strip() for p in item.split(":")]
        try:
            t, s = (int(p) for p in parts)
        except ValueError:
            problems.append(f"{item.strip()!r} is not 'teacher_layer:student_layer' (two integers)")
            continue
        if not 0 <= t < n_teacher:
            problems.append(f"teacher layer {t} is out of range 0..{n_teacher - 1}")
        if not 0 <= s < n_student:
            problems.append(f"student layer {s} is out of range 0..{n_student - 1}")
        if s in [ps for _, ps in pairs]:
            problems.append(f"student layer {s} appears more than once")
        pairs.append((t, s))
    if problems:
        raise ValueError(f"bad --layer-map {spec!r}: " + "; ".join(problems) + " (example: '2:0,5:1' or 'auto')")
    return pairs


def heads_compatible(n_student_heads: int, n_teacher_heads: int) -> bool:
    """True when attention maps can be compared head by head (MiniLM-style transfer needs equal head counts)."""
    return n_student_heads == n_teacher_heads


def attention_transfer_loss(
    student_attn: torch.Tensor, teacher_attn: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """KL(teacher ‖ student) between self-attention distributions, per query row (MiniLM, Wang et al. 2020).

    Shapes: ``student_attn`` and ``teacher_attn`` ``(batch, heads, seq, seq)`` attention probabilities whose last
    dim sums to 1; ``attention_mask`` ``(batch, seq)`` of 0/1. Averaged over heads and real query positions; padded
    keys carry ~0 probability in both maps, so they add nothing. Returns a scalar.
    """
    if not heads_compatible(student_attn.shape[1], teacher_attn.shape[1]):
        raise ValueError(
            f"attention head counts differ: student has {student_attn.shape[1]}, teacher has {teacher_attn.shape[1]};"
            " attention transfer compares heads one to one (set --w-attention 0 or pick matching models)"
        )
    if student_attn.shape != teacher_attn.shape:
        raise ValueError(f"attention maps differ in shape: {tuple(student_attn.shape)} vs {tuple(teacher_attn.shape)}")
    p_teacher = teacher_attn.float()
    # clamp inside the logs only: a teacher probability of 0 still weights its row term by exactly 0
    kl = p_teacher * (p_teacher.clamp_min(_EPS).log() - student_attn.float().clamp_min(_EPS).log())
    per_row = kl.sum(dim=-1).mean(dim=1)  # (batch, seq): sum over keys, mean over heads
    return _masked_token_mean(per_row, attention_mask)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens: ``hidden`` ``(batch, seq, d)``, ``attention_mask`` ``(batch, seq)`` → ``(batch, d)``.

    The sentence-transformers pooling; padded tokens are excluded, and an all-padding row pools to zeros.
    """
    keep = attention_mask.bool().unsqueeze(-1)
    summed = torch.where(keep, hidden.float(), torch.zeros((), dtype=torch.float32, device=hidden.device)).sum(dim=1)
    return summed / keep.sum(dim=1).clamp(min=1)


def embedding_loss(student_emb: torch.Tensor, teacher_emb: torch.Tensor) -> torch.Tensor:
    """MSE between pooled sentence embeddings, averaged over all elements (sentence-transformers' distillation).

    Shapes: both ``(batch, dim)``; returns a scalar.
    """
    if student_emb.shape != teacher_emb.shape:
        raise ValueError(f"embedding shapes differ: {tuple(student_emb.shape)} vs {tuple(teacher_emb.shape)}")
    return F.mse_loss(student_emb.float(), teacher_emb.float())


@dataclass(frozen=True)
class LossWeights:
    """How much each distillation term counts in the training loss; a weight of 0 switches a term off."""

    soft: float = 1.0
    """Weight of the α-mixed ``kd_loss`` (soft targets + hard labels)."""
    mse_logits: float = 0.0
    """Weight of ``mse_logits_loss``."""
    hidden: float = 0.0
    """Weight of ``hidden_state_loss``, summed over the ``--layer-map`` pairs."""
    hidden_kind: str = "mse"
    """Distance used by the hidden-state term: "mse" or "cosine"."""
    attention: float = 0.0
    """Weight of ``attention_transfer_loss``, summed over the ``--layer-map`` pairs."""
    embedding: float = 0.0
    """Weight of ``embedding_loss`` on mean-pooled last hidden states."""

    def __post_init__(self) -> None:
        problems = [
            f"{flag} must be a non-negative number, got {getattr(self, name)!r}"
            for name, flag in TERM_FLAGS.items()
            # `not >= 0` also rejects NaN, which `< 0` lets through
            if not getattr(self, name) >= 0
        ]
        if self.hidden_kind not in HIDDEN_KINDS:
            problems.append(f"--hidden-loss must be one of {', '.join(HIDDEN_KINDS)}, got {self.hidden_kind!r}")
        if not problems and not self.active():
            problems.append("all loss weights are 0: set at least one of " + ", ".join(TERM_FLAGS.values()))
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def needs_hidden_states(self) -> bool:
        """Whether models must be run with ``output_hidden_states=True``."""
        return self.hidden > 0 or self.embedding > 0

    @property
    def needs_attentions(self) -> bool:
        """Whether models must be run with ``output_attentions=True``."""
        return self.attention > 0

    def active(self) -> dict[str, float]:
        """The non-zero term weights, by term name, for the report."""
        return {name: float(getattr(self, name)) for name in TERM_FLAGS if getattr(self, name) > 0}


def combine(terms: dict[str, torch.Tensor], weights: LossWeights) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the scalar loss ``terms`` (keys from ``TERM_FLAGS``) → ``(total, {name: float value})``.

    Terms whose weight is 0 may be missing; if given they are logged but left out of the sum, so an unused,
    possibly non-finite term cannot turn the total into NaN. A term with a non-zero weight that is missing
    raises ``KeyError``.
    """
    unknown = sorted(set(terms) - set(TERM_FLAGS))
    if unknown:
        raise KeyError(f"unknown loss terms {unknown}: expected names from {list(TERM_FLAGS)}")
    missing = [name for name in weights.active() if name not in terms]
    if missing:
        raise KeyError(f"loss terms {missing} have non-zero weights but were not computed")
    total: torch.Tensor | None = None
    for name, weight in weights.active().items():
        part = weight * terms[name]
        total = part if total is None else total + part
    assert total is not None, "LossWeights guarantees at least one active term"
    return total, {name: float(value.detach()) for name, value in terms.items()}
