"""Text classification with an encoder (BERT family): the task family compresskit started with.

What is classification-specific lives here: labelled texts, a classification head the teacher must have (or be
fine-tuned to), one ``logits`` output per input, parity as logit closeness plus argmax agreement, accuracy /
macro-F1 / agreement as quality, and forward passes at fixed batch sizes as the benchmark workload.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compresskit.artifacts import UserError
from compresskit.tasks import Column, ExportSpec, Workload


def macro_f1(pred: np.ndarray, gold: np.ndarray, classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for c in range(classes):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


@dataclass(frozen=True)
class TextClassification:
    """The ``text-classification`` task family (see the module docstring)."""

    name: str = "text-classification"
    summary: str = "label texts with an encoder classifier (BERT family); student = fewer/narrower encoder layers"
    needs: str = ("an encoder teacher (a sequence classifier, or a bare encoder that is fine-tuned first) and "
                  "labelled texts: bbc-news, CSV/JSONL/Parquet with text and label columns, <label>/*.txt folders")
    quality_metric: str = "accuracy"

    def load_examples(self, cfg: Any) -> Any:
        """Texts and label names from ``cfg`` (a ``DataConfig``); at least two distinct labels."""
        from compresskit.data import load_examples

        examples = load_examples(cfg)
        labels = sorted(set(examples.labels))
        if len(labels) < 2:
            raise UserError(f"{examples.source} has {len(labels)} distinct label(s); classification needs at least 2")
        return examples

    def check_teacher(self, config: Any, targets: list[str], finetune_mode: str, source: str) -> bool:
        """A teacher without a classification head is fine-tuned first (``--finetune-teacher auto``); one with a head
        must know every label of the data unless it is fine-tuned anyway."""
        from compresskit.models import is_classifier, match_labels

        has_head = is_classifier(config)
        needs_finetune = finetune_mode == "always" or (finetune_mode == "auto" and not has_head)
        if not needs_finetune:
            if not has_head:
                raise UserError(f"teacher {source} has no classification head and --finetune-teacher is never")
            match_labels(config, sorted(set(targets)), source)
        return needs_finetune

    def export_spec(self, input_names: Sequence[str]) -> ExportSpec:
        """Token tensors in, one row of logits per input out; batch and sequence stay dynamic."""
        names = tuple(input_names)
        return ExportSpec(inputs=names, outputs=("logits",),
                          dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}})

    def parity(self, model: str, reference: str, got: np.ndarray, want: np.ndarray, tolerance: float | None,
               min_agreement: float, targets: np.ndarray | None = None) -> Any:
        """Logits within ``tolerance`` (None: not checked, as for quantized models) and predicted labels agreeing on
        at least ``min_agreement`` of the inputs."""
        from compresskit.verify import compare

        return compare(model, reference, got, want, tolerance, min_agreement, targets)

    def quality(self, outputs: np.ndarray, gold: np.ndarray, reference: np.ndarray | None, classes: int
                ) -> dict[str, float | None]:
        """Accuracy and macro-F1 of the predicted labels ``outputs`` against ``gold``, and agreement with the
        reference teacher's predictions ``reference``."""
        return {"accuracy": float((outputs == gold).mean()), "macro_f1": macro_f1(outputs, gold, classes),
                "agreement_with_teacher": float((outputs == reference).mean()) if reference is not None else None}

    def workloads(self, batch_sizes: Sequence[int], sequence_length: int) -> list[Workload]:
        """One forward pass over ``batch`` padded inputs, for batch 1 and each requested size."""
        return [Workload(b, sequence_length) for b in sorted({1, *batch_sizes})]

    def report_columns(self) -> list[Column]:
        """Accuracy and agreement in percent, macro-F1 as a fraction."""
        return [Column("accuracy (%)", "accuracy", scale=100), Column("macro-F1", "macro_f1", "{:.4f}"),
                Column("agreement (%)", "agreement_with_teacher", scale=100)]


TEXT_CLASSIFICATION = TextClassification()
