"""Parity checks: does a converted model (ONNX, int8…) still compute what its source computed?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from compresskit.artifacts import VerificationError


@dataclass(frozen=True)
class Parity:
    """How closely ``model``'s logits follow ``reference``'s on the same inputs."""

    model: str
    reference: str
    samples: int
    max_abs_diff: float
    mean_abs_diff: float
    label_agreement: float
    tolerance: float | None
    min_agreement: float
    passed: bool
    accuracy_model: float | None = None
    accuracy_reference: float | None = None

    def to_dict(self) -> dict:
        """JSON-ready form for manifests and report.json."""
        return asdict(self)


def compare(model: str, reference: str, got: np.ndarray, want: np.ndarray, tolerance: float | None,
            min_agreement: float, labels: np.ndarray | None = None) -> Parity:
    """Compare logits ``got`` with ``want`` (both ``(n, classes)``); ``tolerance`` None skips the max-diff test
    (quantized models are judged by label agreement and accuracy, not by a logit bound)."""
    if got.shape != want.shape:
        raise VerificationError(f"{model}: output shape {got.shape} differs from {reference}'s {want.shape}")
    if not np.isfinite(got).all():
        raise VerificationError(f"{model}: outputs contain NaN or inf on real validation inputs")
    diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
    agree = float((got.argmax(-1) == want.argmax(-1)).mean()) if len(got) else 1.0
    max_diff = float(diff.max()) if diff.size else 0.0
    passed = agree >= min_agreement and (tolerance is None or max_diff <= tolerance)
    acc_m = acc_r = None
    if labels is not None and len(labels):
        acc_m = float((got.argmax(-1) == labels).mean())
        acc_r = float((want.argmax(-1) == labels).mean())
    return Parity(model, reference, int(len(got)), max_diff, float(diff.mean()) if diff.size else 0.0, agree,
                  tolerance, min_agreement, passed, acc_m, acc_r)


def require(p: Parity) -> Parity:
    """Raise a one-line VerificationError when a parity check failed."""
    if not p.passed:
        parts = []
        if p.tolerance is not None and p.max_abs_diff > p.tolerance:
            parts.append(f"max |Δlogit| {p.max_abs_diff:.3g} > tolerance {p.tolerance:.3g}")
        if p.label_agreement < p.min_agreement:
            parts.append(f"label agreement {p.label_agreement:.2%} < {p.min_agreement:.2%}")
        raise VerificationError(f"{p.model} does not match {p.reference} on {p.samples} validation inputs: "
                                + "; ".join(parts))
    return p
