"""The model variants a run measures (teacher and student, PyTorch and ONNX, fp32 and quantized; each family finds
its own in a run folder), the teacher's faster PyTorch forms, and which variant is the reference teacher that every
comparison is made against."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REFERENCE_TEACHER = "teacher-pytorch"


@dataclass(frozen=True)
class Variant:
    """One model to measure."""

    name: str
    model: str  # "teacher", "student" or "baseline"
    format: str  # "pytorch", "onnx" or "sklearn" (the TF-IDF baseline)
    precision: str
    path: Path
    parameters: int | None = None
    runtime: str = "eager"
    """How a PyTorch variant runs: ``eager``, or ``compile`` (``torch.compile`` of the loaded model)."""


def _field(v: Any, key: str) -> Any:
    return v.get(key) if isinstance(v, dict) else getattr(v, key, None)


def reference_teacher(variants: Iterable[Any]) -> Any | None:
    """The variant every speed-up, accuracy drop and agreement is measured against: ``teacher-pytorch`` when it
    was measured, else the first teacher variant, else None. Takes ``Variant`` objects or report rows (dicts)."""
    variants = list(variants)
    named = [v for v in variants if _field(v, "name") == REFERENCE_TEACHER]
    return (named or [v for v in variants if _field(v, "model") == "teacher"] or [None])[0]


def field_value(row: dict, path: str) -> Any:
    """A report row's field by its dotted path (``quality.perplexity``); None where any part is missing."""
    value: Any = row
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def finite_number(x: object) -> float | None:
    """``x`` as a float when it is a finite number (not a bool), else None: how gates, compare and plots read a
    report field that may be missing, null or NaN."""
    if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x):
        return float(x)
    return None


TEACHER_FORMS = ("bf16", "compile")
"""Faster PyTorch forms of the teacher that a user would try before any compression (``--teacher-forms``)."""


def teacher_forms(teacher: Variant, forms: Iterable[str]) -> list[Variant]:
    """The fp32 eager PyTorch ``teacher`` in other forms, each a teacher variant of its own: ``bf16`` (weights cast
    to bfloat16, ``teacher-pytorch-bf16``) and ``compile`` (``torch.compile`` of the fp32 model,
    ``teacher-pytorch-compile``). They are baselines to beat, never the reference teacher: that stays
    ``teacher-pytorch``, whose fp32 eager predictions every agreement is measured against."""
    made = {"bf16": Variant(f"{teacher.name}-bf16", teacher.model, "pytorch", "bf16", teacher.path,
                            teacher.parameters),
            "compile": Variant(f"{teacher.name}-compile", teacher.model, "pytorch", teacher.precision, teacher.path,
                               teacher.parameters, runtime="compile")}
    return [made[f] for f in forms]
