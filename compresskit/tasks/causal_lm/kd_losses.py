"""Token-level distillation losses for causal LMs: pure functions over next-token distributions.

Conventions (shared by every function here):

- ``B`` batch, ``L`` sequence length, ``V`` vocabulary, ``H`` hidden width, ``N`` positions that count.
- Position ``t`` of the logits predicts token ``t + 1``. ``targets`` ``(B, L)`` holds that next token, or
  ``IGNORE_INDEX`` (-100) where the position does not count (prompt tokens, padding, the last position);
  ``next_token_targets`` makes it from the ``labels`` of ``prompts.tokenize_example``. ``mask`` ``(B, L)`` is
  ``targets != IGNORE_INDEX``: the response positions.
- Every loss is a mean over the ``N`` masked positions (token-weighted: a long response counts more than a short
  one), and a masked-out position cannot change it: its rows are dropped before anything is computed.
- Divergences compare the teacher distribution P with the student distribution Q at temperature T and are
  multiplied by T² (Hinton et al. 2015), so the weight of the term means the same at any T.

Memory: a full ``(B, L, V)`` log-softmax is 4·B·L·V bytes per model (batch 4 × 512 tokens × 49,152 vocab: 400 MB
each, twice that with its gradient). ``kd_loss_chunked`` / ``topk_kd_loss_chunked`` take the final hidden states
and the LM head (``lm_head``: its weights and the soft cap or scale some families put on their logits, checked once
against the model's own logits) instead and compute logits for ``chunk_size`` positions at a time under activation
checkpointing, so neither the forward nor the backward pass ever holds more than one chunk of ``(chunk, V)``
rows per model.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from compresskit.artifacts import UserError

IGNORE_INDEX = -100  # the label value cross-entropy ignores by default; marks prompt and padding positions
DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")
TOPK_MODES = ("bucket", "renormalize")


@dataclass(frozen=True)
class LMKDConfig:
    """How the student learns from the teacher's next-token distributions."""

    divergence: str = "forward_kl"
    """``forward_kl`` KL(P‖Q): mass-covering; ``reverse_kl`` KL(Q‖P): mode-seeking; ``jsd``: generalized
    Jensen–Shannon between them, weighted by ``beta`` (``--kd-divergence``)."""
    beta: float = 0.5
    """JSD weight β in [0, 1]: 0 is forward KL, 1 reverse KL (GKD, Agarwal et al. 2024) (``--jsd-beta``)."""
    temperature: float = 1.0
    """Softmax temperature T of both models in the divergence; the divergence is scaled by T²
    (``--kd-temperature``)."""
    alpha: float = 1.0
    """Weight of the divergence; 1 − α goes to cross-entropy on the target tokens (``--kd-alpha``)."""
    topk_mode: str = "bucket"
    """With a top-k teacher: ``bucket`` (the teacher's mass outside its top k is one extra outcome) or
    ``renormalize`` (both distributions renormalised over the top k) (Python API: not a CLI flag yet)."""

    def __post_init__(self) -> None:
        problems = []
        if self.divergence not in DIVERGENCES:
            problems.append(f"--kd-divergence must be one of {', '.join(DIVERGENCES)}, got {self.divergence!r}")
        if not 0.0 <= self.beta <= 1.0:
            problems.append(f"--jsd-beta must lie in [0, 1], got {self.beta}")
        if not (math.isfinite(self.temperature) and self.temperature > 0):
            problems.append(f"--kd-temperature must be a positive number, got {self.temperature}")
        if not 0.0 <= self.alpha <= 1.0:
            problems.append(f"--kd-alpha must lie in [0, 1], got {self.alpha}")
        if self.topk_mode not in TOPK_MODES:
            problems.append(f"topk_mode must be one of {', '.join(TOPK_MODES)}, got {self.topk_mode!r}")
        if problems:
            raise UserError("; ".join(problems))


class TopK(NamedTuple):
    """The teacher's k most likely next tokens at each of ``N`` positions (what ``topk_cache`` stores).

    ``logprobs`` ``(N, k)``: log P(token) at temperature 1, in descending order; ``indices`` ``(N, k)``: token ids;
    ``other`` ``(N,)``: log of the probability mass outside the top k (−inf when k covers the vocabulary).
    Rows are the masked positions of a batch in row-major order: ``mask.flatten().nonzero()`` order.
    """

    logprobs: torch.Tensor
    indices: torch.Tensor
    other: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Targets and row selection


def next_token_targets(labels: torch.Tensor) -> torch.Tensor:
    """Shift ``labels`` ``(B, L)`` left by one: ``targets[:, t] = labels[:, t + 1]``, the last position ignored.

    Why: ``logits[:, t]`` predicts the token at ``t + 1``; the losses here compare distributions position by
    position, so the target has to sit where its prediction is made.
    """
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    return targets


def _wide(x: torch.Tensor) -> torch.Tensor:
    """``x`` in at least float32: log-softmax over a large vocabulary in bf16/fp16 loses the tail (float64 kept)."""
    return x if x.dtype == torch.float64 else x.float()


def _rows(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked positions of ``x`` ``(B, L, ...)`` as rows ``(N, ...)``, in row-major order."""
    return x.reshape(-1, *x.shape[2:])[mask.reshape(-1).bool()]


def _check_mask(mask: torch.Tensor, like: torch.Tensor) -> None:
    if mask.shape != like.shape[:2]:
        raise ValueError(f"mask must have shape (B, L) = {tuple(like.shape[:2])}, got {tuple(mask.shape)}")


# ---------------------------------------------------------------------------------------------------------------
# Row divergences over log-probabilities: (N, V') -> (N,)


def _kl_rows(logp: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) per row from log-probabilities ``(N, V')``; outcomes with p = 0 contribute 0 (not 0 · −inf)."""
    p = logp.exp()
    return torch.where(p > 0, p * (logp - logq), torch.zeros_like(p)).sum(-1)


def _jsd_rows(logp_teacher: torch.Tensor, logq_student: torch.Tensor, beta: float) -> torch.Tensor:
    """Generalized JSD(β) = β·KL(P‖M) + (1 − β)·KL(Q‖M), M = β·P + (1 − β)·Q, per row ``(N, V') -> (N,)``.

    At β = 0 and β = 1 the mixture equals one of the two and JSD(β) is 0, so, as in GKD (and TRL), the end points
    are defined as the limits the family interpolates between: forward KL(P‖Q) at β = 0 and reverse KL(Q‖P) at
    β = 1. Near them JSD(β)/β → KL(P‖Q) and JSD(β)/(1 − β) → KL(Q‖P): the scale changes with β, so a learning
    rate tuned for one β does not carry over to another.
    """
    if beta <= 0.0:
        return _kl_rows(logp_teacher, logq_student)
    if beta >= 1.0:
        return _kl_rows(logq_student, logp_teacher)
    # log M in log space: exp() of both and a sum would underflow for the tail of a 49k-token vocabulary
    logm = torch.logsumexp(torch.stack([logp_teacher + math.log(beta), logq_student + math.log1p(-beta)]), dim=0)
    return beta * _kl_rows(logp_teacher, logm) + (1.0 - beta) * _kl_rows(logq_student, logm)


def _divergence_rows(logp_teacher: torch.Tensor, logq_student: torch.Tensor, cfg: LMKDConfig) -> torch.Tensor:
    """The divergence ``cfg`` names between teacher and student log-probabilities ``(N, V') -> (N,)``."""
    if cfg.divergence == "forward_kl":
        return _kl_rows(logp_teacher, logq_student)
    if cfg.divergence == "reverse_kl":
        return _kl_rows(logq_student, logp_teacher)
    return _jsd_rows(logp_teacher, logq_student, cfg.beta)


def _full_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
               cfg: LMKDConfig) -> torch.Tensor:
    """Per-position loss ``(N,)`` from full-vocabulary logits ``(N, V)`` of both models and ``targets`` ``(N,)``."""
    t = cfg.temperature
    loss = student_logits.new_zeros(student_logits.shape[0], dtype=_wide(student_logits[:0]).dtype)
    if cfg.alpha > 0:
        logq = F.log_softmax(_wide(student_logits) / t, dim=-1)
        logp = F.log_softmax(_wide(teacher_logits) / t, dim=-1)
        loss = loss + cfg.alpha * (t * t) * _divergence_rows(logp, logq, cfg)
    if cfg.alpha < 1:
        loss = loss + (1.0 - cfg.alpha) * F.cross_entropy(_wide(student_logits), targets, reduction="none")
    return loss


def _topk_rows(student_logits: torch.Tensor, teacher: TopK, targets: torch.Tensor, cfg: LMKDConfig
               ) -> torch.Tensor:
    """Per-position loss ``(N,)`` against a top-k teacher; student logits ``(N, V)``, teacher rows ``(N, k)``.

    ``bucket``: both distributions are coarsened to k + 1 outcomes (the teacher's top-k tokens and "any other
    token"), and the divergence is taken between those. It keeps the teacher's confidence: a teacher that puts 40 %
    outside its top k asks the student to do the same, where renormalising would ask for 0 %; and coarsening never
    increases a KL, so it is a lower bound of the full divergence, equal to it when k = V. Needs T = 1: the tail's
    shape, which a temperature would reweight, is not stored.
    ``renormalize``: both distributions restricted to the teacher's top k and renormalised; any T works (within the
    support the tempered, renormalised teacher is exact), but the student is pushed to put all its mass on k tokens.
    """
    idx = teacher.indices.long()
    k, vocab = idx.shape[-1], student_logits.shape[-1]
    loss = student_logits.new_zeros(student_logits.shape[0], dtype=_wide(student_logits[:0]).dtype)
    if cfg.alpha > 0:
        if cfg.topk_mode == "renormalize":
            t = cfg.temperature
            logp = F.log_softmax(_wide(teacher.logprobs) / t, dim=-1)
            logq = F.log_softmax(_wide(student_logits).gather(-1, idx) / t, dim=-1)
            div = (t * t) * _divergence_rows(logp, logq, cfg)
        else:
            logq_all = F.log_softmax(_wide(student_logits), dim=-1)
            logp, logq = _wide(teacher.logprobs), logq_all.gather(-1, idx)
            if k < vocab:
                # the student's mass outside the teacher's top k, exactly: logsumexp over the other V - k tokens
                logq_other = torch.logsumexp(logq_all.scatter(-1, idx, float("-inf")), dim=-1, keepdim=True)
                logp = torch.cat([logp, _wide(teacher.other).unsqueeze(-1)], dim=-1)
                logq = torch.cat([logq, logq_other], dim=-1)
            div = _divergence_rows(logp, logq, cfg)
        loss = loss + cfg.alpha * div
    if cfg.alpha < 1:
        loss = loss + (1.0 - cfg.alpha) * F.cross_entropy(_wide(student_logits), targets, reduction="none")
    return loss


def _check_topk(teacher: TopK, cfg: LMKDConfig, n_rows: int, vocab: int) -> None:
    if cfg.alpha > 0 and cfg.topk_mode == "bucket" and cfg.temperature != 1.0:
        raise UserError(f"topk_mode bucket needs --kd-temperature 1 (a top-k teacher stores no tail to temper), "
                        f"got {cfg.temperature}; use topk_mode renormalize for another temperature")
    if teacher.logprobs.shape != teacher.indices.shape or teacher.logprobs.shape[0] != n_rows:
        raise ValueError(f"top-k teacher rows {tuple(teacher.logprobs.shape)} / {tuple(teacher.indices.shape)} do "
                         f"not match the {n_rows} masked positions")
    if teacher.logprobs.shape[-1] > vocab:
        raise ValueError(f"top-k teacher has k = {teacher.logprobs.shape[-1]} > vocabulary {vocab}")


def _mean(total: torch.Tensor, n: int, anchor: torch.Tensor) -> torch.Tensor:
    """``total / n``; with no position to count, a zero that still belongs to the graph (backward() works)."""
    if n == 0:
        return _graph_zero(anchor)
    return total / n


def _graph_zero(anchor: torch.Tensor) -> torch.Tensor:
    """A float zero on ``anchor``'s graph, so backward() works on a batch without a counted position; summing an
    empty slice, not multiplying by 0, which a NaN at a masked position would turn into NaN."""
    return anchor.reshape(-1)[:0].sum().float()


# ---------------------------------------------------------------------------------------------------------------
# Public losses on logits


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """KL(P_T ‖ Q_T) · T², mean over masked positions. Logits ``(B, L, V)``, ``mask`` ``(B, L)``; scalar."""
    return kd_loss(student_logits, teacher_logits, _mask_as_targets(mask),
                   LMKDConfig("forward_kl", temperature=temperature))


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """KL(Q_T ‖ P_T) · T², mean over masked positions. Logits ``(B, L, V)``, ``mask`` ``(B, L)``; scalar."""
    return kd_loss(student_logits, teacher_logits, _mask_as_targets(mask),
                   LMKDConfig("reverse_kl", temperature=temperature))


def generalized_jsd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor, beta: float,
                    temperature: float = 1.0) -> torch.Tensor:
    """Generalized JSD(β) between P_T and Q_T, · T², mean over masked positions (``_jsd_rows`` for β = 0, 1).

    Logits ``(B, L, V)``, ``mask`` ``(B, L)``; returns a scalar.
    """
    return kd_loss(student_logits, teacher_logits, _mask_as_targets(mask),
                   LMKDConfig("jsd", beta=beta, temperature=temperature))


def token_cross_entropy(student_logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the target tokens, mean over positions whose target is not ``IGNORE_INDEX``.

    ``student_logits`` ``(B, L, V)``, ``targets`` ``(B, L)`` (``next_token_targets``); returns a scalar.
    """
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_logits)
    rows = _wide(_rows(student_logits, mask))
    per = F.cross_entropy(rows, _rows(targets, mask), reduction="sum")
    return _mean(per, rows.shape[0], student_logits)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
            cfg: LMKDConfig) -> torch.Tensor:
    """α · divergence(P_T, Q_T) · T² + (1 − α) · cross-entropy of ``targets``, mean over the response positions.

    ``student_logits``, ``teacher_logits`` ``(B, L, V)``; ``targets`` ``(B, L)`` next tokens, ``IGNORE_INDEX``
    where a position does not count. Returns a scalar. Holds the full logits: for long sequences and large
    vocabularies use ``kd_loss_chunked``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ: the two models need the same vocabulary")
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_logits)
    s, t, y = _rows(student_logits, mask), _rows(teacher_logits, mask).detach(), _rows(targets, mask)
    return _mean(_full_rows(s, t, y, cfg).sum(), s.shape[0], student_logits)


def topk_kd_loss(student_logits: torch.Tensor, teacher: TopK, targets: torch.Tensor, cfg: LMKDConfig
                 ) -> torch.Tensor:
    """``kd_loss`` against a top-k teacher (``TopK`` rows for the masked positions; see ``_topk_rows`` for the
    two modes). ``student_logits`` ``(B, L, V)``, ``targets`` ``(B, L)``; returns a scalar."""
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_logits)
    s, y = _rows(student_logits, mask), _rows(targets, mask)
    _check_topk(teacher, cfg, s.shape[0], s.shape[-1])
    return _mean(_topk_rows(s, teacher, y, cfg).sum(), s.shape[0], student_logits)


def _mask_as_targets(mask: torch.Tensor) -> torch.Tensor:
    """Targets that only carry ``mask`` (pure divergences never read the token ids)."""
    return torch.where(mask.bool(), 0, IGNORE_INDEX)


# ---------------------------------------------------------------------------------------------------------------
# Chunked losses on hidden states + LM head


class Head(NamedTuple):
    """A model's output layer: ``logits = cap · tanh(scale · (hidden @ weight.T + bias) / cap)``, ``weight``
    ``(V, H)``, ``bias`` ``(V,)``; ``scale`` 1 and ``cap`` None make it a plain linear layer. Scale and cap are the
    post-processing some families apply to their linear logits (``lm_head`` finds them)."""

    weight: torch.Tensor
    bias: torch.Tensor | None = None
    scale: float = 1.0
    """Factor on the linear logits (Granite: 1 / ``logits_scaling``; Cohere: ``logit_scale``)."""
    cap: float | None = None
    """Soft cap applied after the scale (Gemma 2/3: ``final_logit_softcapping``); None: no cap."""

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``(N, H) -> (N, V)``."""
        return _head_logits(hidden, self.weight, self.bias, self.scale, self.cap)


def _head_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float,
                 cap: float | None) -> torch.Tensor:
    """``Head.logits`` with its parts as separate arguments (what the checkpointed chunks receive)."""
    logits = F.linear(hidden, weight, bias)
    if scale == 1.0 and cap is None:
        return logits  # a plain head keeps its dtype, as before
    # in float32, as the losses read logits anyway: a bf16 value rounded again before the tanh would add error
    logits = _wide(logits)
    if scale != 1.0:
        logits = logits * scale
    if cap is not None:
        logits = cap * torch.tanh(logits / cap)
    return logits


# Config attributes by which families post-process their linear logits, and the exponents transformers applies them
# with (logits · value ** exponent). ``logits_scaling`` means opposite things in different families (Granite and
# MiniCPM3 divide, HyperCLOVAX multiplies), so both readings are candidates and the model's own logits decide.
_SCALES: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("logit_scale", (1,)),  # Cohere, Cohere2
    ("logits_scaling", (-1, 1)),  # Granite family, MiniCPM3 (on the hidden state); HyperCLOVAX
    ("lm_head_multiplier", (1,)),  # Falcon-H1
    ("output_multiplier", (1,)),  # MuseSpark / MuseGlimmer, before the cap
    ("logits_mup_width_multiplier", (-1,)),  # Inkling (on the hidden state)
)
_CAPS = ("final_logit_softcapping", "logits_soft_cap")  # Gemma 2/3/3n/4, nanochat; RecurrentGemma
_PROBE_TOKENS = 8
_VERIFIED: weakref.WeakKeyDictionary[Any, tuple[float, float | None]] = weakref.WeakKeyDictionary()


def _config_number(config: Any, name: str) -> float | None:
    """``name`` as a number from the text config (multimodal models keep it there) or the config itself."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for c in (text, config):
        value = getattr(c, name, None)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def _readings(config: Any) -> list[tuple[float, float | None]]:
    """The ``(scale, cap)`` pairs the config can mean, the most common reading first."""
    cap = next((v for v in (_config_number(config, n) for n in _CAPS) if v), None)
    scales = [1.0]
    for name, exponents in _SCALES:
        value = _config_number(config, name)
        if value is None or value in (0.0, 1.0) or not math.isfinite(value):
            continue  # 0 or inf would make every logit equal: left to the check to refuse
        scales = [s * value ** e for s in scales for e in exponents]
    # then the plain readings: a config may carry a field its model never applies (a Llama config with a stray
    # logit_scale computes plain logits); the model's own logits decide, so such a model is not refused
    readings = [(s, cap) for s in scales] + [(s, None) for s in scales] + [(1.0, cap), (1.0, None)]
    return list(dict.fromkeys(readings))


def _describe(scale: float, cap: float | None) -> str:
    parts = ([f"scaled by {scale:.6g}"] if scale != 1.0 else []) + ([f"soft-capped at {cap:g}"] if cap else [])
    return "linear map" + (f" ({', '.join(parts)})" if parts else "")


def _probe(model: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's own logits ``(P, V)`` and its final hidden states ``(P, H)`` on ``P`` token ids spread over the
    vocabulary: eval mode, no gradients, no autocast (a bf16 autocast would blur the comparison); every module's
    training flag is restored after."""
    embeddings = model.get_input_embeddings().weight
    ids = torch.linspace(0, embeddings.shape[0] - 1, _PROBE_TOKENS).round().long()[None].to(embeddings.device)
    mask = torch.ones_like(ids)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(embeddings.device.type, enabled=False):
            logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            hidden = final_hidden_states(model, ids, mask)
    finally:
        for m, mode in modes:
            m.training = mode
    return logits[0], hidden[0]


def check_lm_head(model: Any) -> Head:
    """The output layer of a Hugging Face causal LM with the post-processing its config names (soft cap, logit
    scale), verified: one forward of the model on a few token ids must give the logits ``Head.logits`` computes
    from ``final_hidden_states``. Refuses (``UserError``) a model whose logits are anything else, since the
    chunked losses and quality measures would score other logits than the model's. The reading is kept for this
    model object, so ``lm_head`` is cheap after; call this where a model is loaded or built, so a refusal comes
    before any work."""
    name = type(model).__name__
    out = model.get_output_embeddings()
    weight = getattr(out, "weight", None)
    if not isinstance(weight, torch.Tensor):
        raise UserError(f"{name} has no linear output layer (get_output_embeddings()); the causal-LM losses and "
                        "quality measures need one")
    bias = getattr(out, "bias", None)
    want, hidden = _probe(model)
    want = want.float()
    # 1e-4 of the largest logit in float32; a bf16/fp16 model rounds its own logits (and its cap) to a few ulps
    rel = max(1e-4, 8 * torch.finfo(weight.dtype).eps if weight.is_floating_point() else 1e-2)
    bound = rel * float(want.abs().max())
    readings, closest = _readings(model.config), float("inf")
    same_shape = want.shape == (hidden.shape[0], weight.shape[0])  # e.g. a padded vocabulary sliced off
    for scale, cap in readings if same_shape else []:
        with torch.no_grad(), torch.autocast(weight.device.type, enabled=False):  # as the probe ran
            err = float((Head(weight, bias, scale, cap).logits(hidden).float() - want).abs().max())
        if err <= bound:  # NaN never passes
            _VERIFIED[model] = (scale, cap)
            return Head(weight, bias, scale, cap)
        closest = min(closest, err)
    tried = " or ".join(dict.fromkeys(_describe(s, c) for s, c in readings))
    how = (f"off by up to {closest:.3g}, largest logit {float(want.abs().max()):.3g}" if same_shape else
           f"{want.shape[-1]} logits per token, the output layer has {weight.shape[0]} rows")
    raise UserError(f"{name}'s logits are not a {tried} of its final hidden state ({how}); the causal-LM losses "
                    "and quality measures compute logits that way and cannot score this model")


def lm_head(model: Any) -> Head:
    """The output layer of a Hugging Face causal LM as ``check_lm_head`` verified it; cheap (no forward) for a model
    already checked, checked now (one short forward) on its first use otherwise."""
    reading = _VERIFIED.get(model)
    if reading is None:
        return check_lm_head(model)
    out = model.get_output_embeddings()
    return Head(out.weight, getattr(out, "bias", None), *reading)


def final_hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The hidden states the LM head reads (after the final norm), ``(B, L, H)``, without computing logits."""
    return model.base_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def _chunked_mean(row_loss: Callable[..., torch.Tensor], row_inputs: list[torch.Tensor | None],
                  extra: tuple[Any, ...], n: int, chunk_size: int, anchor: torch.Tensor
                  ) -> torch.Tensor:
    """Mean over ``n`` rows of ``row_loss(*[x[chunk] for x in row_inputs], *extra) -> (chunk,)``, one chunk at a
    time. With gradients on, each chunk runs under activation checkpointing: only its inputs are kept and its
    ``(chunk, V)`` logits are recomputed in backward, so the memory of the pass does not grow with ``n``."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    if n == 0:
        return _graph_zero(anchor)
    total = anchor.new_zeros((), dtype=torch.float32)
    grad = torch.is_grad_enabled()
    for start in range(0, n, chunk_size):
        args = [None if x is None else x[start:start + chunk_size] for x in row_inputs] + list(extra)
        if grad:
            part = checkpoint(row_loss, *args, use_reentrant=False)
        else:
            part = row_loss(*args)
        total = total + part.sum()
    return total / n


# The chunk functions take each head as tensors (checkpointing saves and recomputes from tensor arguments) and its
# scale and cap as plain floats.
def _full_chunk(s_hidden, t_hidden, y, s_weight, s_bias, s_scale, s_cap, t_weight, t_bias, t_scale, t_cap, cfg):
    return _full_rows(_head_logits(s_hidden, s_weight, s_bias, s_scale, s_cap),
                      _head_logits(t_hidden, t_weight, t_bias, t_scale, t_cap), y, cfg)


def _topk_chunk(s_hidden, logprobs, indices, other, y, s_weight, s_bias, s_scale, s_cap, cfg):
    return _topk_rows(_head_logits(s_hidden, s_weight, s_bias, s_scale, s_cap), TopK(logprobs, indices, other), y,
                      cfg)


def kd_loss_chunked(student_hidden: torch.Tensor, student_head: Head, teacher_hidden: torch.Tensor,
                    teacher_head: Head, targets: torch.Tensor, cfg: LMKDConfig, chunk_size: int = 256
                    ) -> torch.Tensor:
    """``kd_loss`` from final hidden states, computing logits ``chunk_size`` positions at a time.

    ``student_hidden`` ``(B, L, H_s)``, ``teacher_hidden`` ``(B, L, H_t)`` (``final_hidden_states``), heads with
    weights ``(V, H_s)`` / ``(V, H_t)``, ``targets`` ``(B, L)``. Returns a scalar equal to ``kd_loss`` on the
    full logits. The teacher side is detached.
    """
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_hidden)
    if student_head.weight.shape[0] != teacher_head.weight.shape[0]:
        raise ValueError(f"student and teacher heads have {student_head.weight.shape[0]} and "
                         f"{teacher_head.weight.shape[0]} outputs: the two models need the same vocabulary")
    s, t, y = _rows(student_hidden, mask), _rows(teacher_hidden, mask).detach(), _rows(targets, mask)
    t_bias = None if teacher_head.bias is None else teacher_head.bias.detach()
    extra = (student_head.weight, student_head.bias, student_head.scale, student_head.cap,
             teacher_head.weight.detach(), t_bias, teacher_head.scale, teacher_head.cap, cfg)
    return _chunked_mean(_full_chunk, [s, t, y], extra, s.shape[0], chunk_size, student_hidden)


def topk_kd_loss_chunked(student_hidden: torch.Tensor, student_head: Head, teacher: TopK, targets: torch.Tensor,
                         cfg: LMKDConfig, chunk_size: int = 256) -> torch.Tensor:
    """``topk_kd_loss`` from the student's final hidden states ``(B, L, H)`` and head, ``chunk_size`` positions
    at a time; ``teacher`` holds ``(N, k)`` rows for the masked positions. Returns a scalar."""
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_hidden)
    s, y = _rows(student_hidden, mask), _rows(targets, mask)
    _check_topk(teacher, cfg, s.shape[0], student_head.weight.shape[0])
    rows = [s, teacher.logprobs, teacher.indices, teacher.other, y]
    extra = (student_head.weight, student_head.bias, student_head.scale, student_head.cap, cfg)
    return _chunked_mean(_topk_chunk, rows, extra, s.shape[0], chunk_size, student_hidden)


def _ce_chunk(s_hidden, y, s_weight, s_bias, s_scale, s_cap):
    return F.cross_entropy(_wide(_head_logits(s_hidden, s_weight, s_bias, s_scale, s_cap)), y, reduction="none")


def cross_entropy_chunked(student_hidden: torch.Tensor, student_head: Head, targets: torch.Tensor,
                          chunk_size: int = 256) -> torch.Tensor:
    """Mean cross-entropy of the student on the target tokens, ``chunk_size`` positions at a time: the loss at
    α = 0 (sequence-level fine-tuning on the teacher's answers), where no teacher distribution is needed at all.
    Equal to ``kd_loss_chunked`` with ``alpha=0``, without running the teacher."""
    mask = targets != IGNORE_INDEX
    _check_mask(mask, student_hidden)
    s, y = _rows(student_hidden, mask), _rows(targets, mask)
    extra = (student_head.weight, student_head.bias, student_head.scale, student_head.cap)
    return _chunked_mean(_ce_chunk, [s, y], extra, s.shape[0], chunk_size, student_hidden)


def topk_from_logits(teacher_logits: torch.Tensor, k: int) -> TopK:
    """The teacher's top-k log-probabilities, token ids and log mass of the rest, from rows ``(N, V)``.

    Returns ``TopK`` with ``(N, k)``, ``(N, k)``, ``(N,)``; ``other`` is computed exactly (logsumexp over the
    V − k other tokens), not as log(1 − Σ top-k), which loses all precision when the top k hold nearly everything.
    """
    if not 1 <= k <= teacher_logits.shape[-1]:
        raise UserError(f"k (top-k) must be between 1 and the vocabulary size {teacher_logits.shape[-1]}, got {k}")
    logp = F.log_softmax(_wide(teacher_logits), dim=-1)
    values, indices = logp.topk(k, dim=-1)
    other = torch.logsumexp(logp.scatter(-1, indices, float("-inf")), dim=-1)
    return TopK(values, indices, other)
