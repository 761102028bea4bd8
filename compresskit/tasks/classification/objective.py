"""What the student is trained to minimise, given a batch: the weighted distillation terms of ``losses``.

Everything the teacher contributes normally comes in the batch, read from the teacher-output cache
(``teacher_cache``): logits for the soft targets, and, when a hidden-state, attention or embedding term is on,
the hidden states and attention maps of the mapped layers. When the activations are not cached (the cache would
not fit on disk, or ``--no-cache-teacher-activations``) the teacher runs alongside the student, without
gradients. Batches that carry no teacher outputs (evaluation) get those terms as zero.
"""

from __future__ import annotations

from typing import Any

import torch

from compresskit.tasks.classification.losses import (
    IGNORE_LABEL,
    HiddenProjection,
    LossWeights,
    attention_transfer_loss,
    combine,
    embedding_loss,
    hidden_state_loss,
    kd_loss,
    mean_pool,
    mse_logits_loss,
    needs_projection,
)


class StudentWithProjection(torch.nn.Module):
    """The student plus the learned linear maps from its width to the teacher's (TinyBERT-style).

    Wrapping them in one module lets the Trainer optimise, checkpoint and restore both together; only the
    student is saved as the result.
    """

    def __init__(self, student: Any, projection: HiddenProjection):
        super().__init__()
        self.student = student
        self.projection = projection
        self.config = student.config

    def forward(self, **kwargs: Any) -> Any:
        return self.student(**kwargs)


class Objective:
    """Loss of one batch: ``α·kd + weights·(mse logits, hidden, attention, embedding)``."""

    def __init__(self, weights: LossWeights, temperature: float, alpha: float, teacher: Any | None = None,
                 layer_pairs: list[tuple[int, int]] | None = None, teacher_layers: int | None = None):
        """``teacher`` runs online only when inner activations are needed and not cached; ``teacher_layers``
        (the teacher's depth) locates its last hidden state for the embedding term."""
        self.weights = weights
        self.temperature = temperature
        self.alpha = alpha
        self.teacher = teacher.eval() if teacher is not None else None
        self.layer_pairs = layer_pairs or []
        if teacher_layers is None and teacher is not None:
            teacher_layers = teacher.config.num_hidden_layers
        self.last_hidden = teacher_layers if teacher_layers is not None else -1

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher's inner activations."""
        return self.weights.needs_hidden_states or self.weights.needs_attentions

    def activation_needs(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(teacher ``hidden_states`` indices, teacher attention layers) the terms read, for the cache."""
        hidden = {t + 1 for t, _ in self.layer_pairs} if self.weights.hidden else set()
        if self.weights.embedding:
            hidden.add(self.last_hidden)
        attentions = {t for t, _ in self.layer_pairs} if self.weights.attention else set()
        return tuple(sorted(hidden)), tuple(sorted(attentions))

    def __call__(self, model: Any, inputs: dict[str, Any]) -> tuple[torch.Tensor, Any]:
        model_inputs = {k: v for k, v in inputs.items() if not (k == "labels" or k.startswith("teacher_"))}
        labels, teacher_logits = inputs.get("labels"), inputs.get("teacher_logits")
        want_hidden, want_attn = self.weights.needs_hidden_states, self.weights.needs_attentions
        out = model(**model_inputs, output_hidden_states=want_hidden or None, output_attentions=want_attn or None)
        if teacher_logits is None:  # no soft targets (teacher fine-tuning, α = 0, evaluation): hard-label CE
            terms = {"soft": torch.nn.functional.cross_entropy(out.logits.float(), labels, ignore_index=IGNORE_LABEL)}
        else:
            terms = {"soft": kd_loss(out.logits, teacher_logits, labels, self.temperature, self.alpha)}
        if self.weights.mse_logits:  # without teacher logits there is nothing to match: the term is zero
            terms["mse_logits"] = (mse_logits_loss(out.logits, teacher_logits) if teacher_logits is not None
                                   else out.logits.new_zeros(()))
        if self.needs_teacher:
            terms |= self._inner_terms(model, model_inputs, out, inputs.get("teacher_hidden"),
                                       inputs.get("teacher_attentions"))
        total, _ = combine(terms, self.weights)
        return total, out

    def _inner_terms(self, model: Any, model_inputs: dict[str, torch.Tensor], out: Any,
                     t_hidden: dict[int, torch.Tensor] | None, t_attn: dict[int, torch.Tensor] | None
                     ) -> dict[str, torch.Tensor]:
        """Hidden-state, attention and embedding terms; teacher activations from the batch, else from the teacher."""
        want_hidden, want_attn = self.weights.needs_hidden_states, self.weights.needs_attentions
        cached = (t_hidden is not None or not want_hidden) and (t_attn is not None or not want_attn)
        if not cached:
            if self.teacher is None:  # evaluation batch, activations cached for training only
                zero = out.logits.new_zeros((), dtype=torch.float32)
                return {k: zero for k in ("hidden", "attention", "embedding") if getattr(self.weights, k)}
            t_out = self._teacher_outputs(model_inputs, want_hidden, want_attn)
            t_hidden = dict(enumerate(t_out.hidden_states)) if want_hidden else None
            t_attn = dict(enumerate(t_out.attentions)) if want_attn else None
        mask = model_inputs["attention_mask"]
        projection = model.projection if isinstance(model, StudentWithProjection) else None
        terms: dict[str, torch.Tensor] = {}
        if self.weights.hidden:
            terms["hidden"] = sum(
                hidden_state_loss(out.hidden_states[s + 1], t_hidden[t + 1], mask, self.weights.hidden_kind,
                                  projection.layers[i] if projection is not None else None)
                for i, (t, s) in enumerate(self.layer_pairs)) / max(1, len(self.layer_pairs))
        if self.weights.attention:
            terms["attention"] = sum(
                attention_transfer_loss(out.attentions[s], t_attn[t], mask)
                for t, s in self.layer_pairs) / max(1, len(self.layer_pairs))
        if self.weights.embedding:
            s_emb = mean_pool(out.hidden_states[-1], mask)
            if projection is not None:
                s_emb = projection.layers[-1](s_emb)
            terms["embedding"] = embedding_loss(s_emb, mean_pool(t_hidden[self.last_hidden], mask))
        return terms

    @torch.no_grad()
    def _teacher_outputs(self, model_inputs: dict[str, torch.Tensor], hidden: bool, attn: bool) -> Any:
        device = model_inputs["input_ids"].device
        if next(self.teacher.parameters()).device != device:
            self.teacher.to(device)
        return self.teacher(**model_inputs, output_hidden_states=hidden or None, output_attentions=attn or None)


def make_projection(weights: LossWeights, student_width: int, teacher_width: int, n_pairs: int
                    ) -> HiddenProjection | None:
    """Linear maps student→teacher width, one per layer pair (+1 for the embedding), when widths differ."""
    if not (weights.hidden or weights.embedding) or not needs_projection(student_width, teacher_width):
        return None
    return HiddenProjection(student_width, teacher_width, n_pairs + 1)
