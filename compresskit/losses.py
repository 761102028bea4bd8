"""Distillation losses: small pure functions over logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
    term only). α = 0 is plain hard-label training; α = 1 learns from the teacher alone.
    """
    soft = soft_target_loss(student_logits, teacher_logits, temperature)
    if labels is None or alpha >= 1.0:
        return soft
    hard = F.cross_entropy(student_logits.float(), labels)
    if alpha <= 0.0:
        return hard
    return alpha * soft + (1.0 - alpha) * hard
