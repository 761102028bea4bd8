"""The classifier's side of training: tokenised examples with the teacher's cached outputs, the collator that pads
them, the validation metric that picks the kept checkpoint, and batched prediction of logits. The engine itself
(transformers' Trainer) is ``compresskit.training``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresskit.tasks.classification.losses import LossWeights
from compresskit.tasks.classification.objective import Objective
from compresskit.training import TrainConfig
from compresskit.training import train as run_training


class TextDataset(torch.utils.data.Dataset):
    """Tokenised examples, optionally with the teacher's cached outputs for each (distillation targets)."""

    def __init__(self, encodings: dict[str, list], labels: list[int] | None, teacher: Any | None = None):
        self.encodings = encodings
        self.labels = labels
        self.teacher = teacher  # a teacher_cache.TeacherOutputs, row i for example i

    def __len__(self) -> int:
        return len(self.encodings["input_ids"])

    def __getitem__(self, i: int) -> dict[str, Any]:
        item = {k: v[i] for k, v in self.encodings.items()}
        if self.labels is not None:
            item["labels"] = self.labels[i]
        if self.teacher is not None:
            item.update(self.teacher.row(i))
        return item


def encode(tokenizer: Any, texts: list[str], max_length: int) -> dict[str, list]:
    """Tokenise without padding (the collator pads each batch to its longest member)."""
    return dict(tokenizer(texts, truncation=True, max_length=max_length))


_TEACHER_KEYS = ("labels", "teacher_logits", "teacher_hidden", "teacher_attentions")


class Collator:
    """Pads token fields per batch and stacks labels and the teacher's outputs.

    Cached teacher activations come unpadded (``(tokens, width)`` / ``(heads, tokens, tokens)``); they are
    placed where the tokenizer put each example's real tokens, so they line up with the padded batch.
    """

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        tok_keys = [k for k in items[0] if k not in _TEACHER_KEYS]
        batch = dict(self.tokenizer.pad([{k: it[k] for k in tok_keys} for it in items], return_tensors="pt"))
        if "labels" in items[0]:
            batch["labels"] = torch.tensor([it["labels"] for it in items], dtype=torch.long)
        if "teacher_logits" in items[0]:
            batch["teacher_logits"] = torch.tensor(np.stack([it["teacher_logits"] for it in items]), dtype=torch.float32)
        width = batch["input_ids"].shape[1]
        left = getattr(self.tokenizer, "padding_side", "right") == "left"
        if "teacher_hidden" in items[0]:
            batch["teacher_hidden"] = {i: self._place([it["teacher_hidden"][i] for it in items], width, left, 1)
                                       for i in items[0]["teacher_hidden"]}
        if "teacher_attentions" in items[0]:
            batch["teacher_attentions"] = {
                i: self._place([it["teacher_attentions"][i] for it in items], width, left, 2)
                for i in items[0]["teacher_attentions"]}
        return batch

    @staticmethod
    def _place(rows: list[np.ndarray], width: int, left: bool, token_dims: int) -> torch.Tensor:
        """Stack unpadded rows into a zero tensor padded to ``width`` along their ``token_dims`` last-but axes."""
        first = rows[0]
        if token_dims == 1:  # (tokens, hidden)
            out = torch.zeros((len(rows), width, first.shape[-1]), dtype=torch.float32)
            for j, r in enumerate(rows):
                k = r.shape[0]
                lo = width - k if left else 0
                out[j, lo:lo + k] = torch.from_numpy(np.asarray(r, dtype=np.float32))
        else:  # (heads, tokens, tokens)
            out = torch.zeros((len(rows), first.shape[0], width, width), dtype=torch.float32)
            for j, r in enumerate(rows):
                k = r.shape[-1]
                lo = width - k if left else 0
                out[j, :, lo:lo + k, lo:lo + k] = torch.from_numpy(np.asarray(r, dtype=np.float32))
        return out


SELECTION_RULE = "validation accuracy, ties to the lower validation cross-entropy"
"""How a classifier's kept checkpoint is chosen; part of the fine-tuned teacher's cache key, so a teacher chosen
by another rule is made again rather than reused."""


def _accuracy(eval_pred: Any) -> dict[str, float]:
    """Validation accuracy, and the ``selection`` score the best checkpoint is chosen by.

    Why not accuracy alone: a few hundred validation examples give accuracy in steps of 1/n, so checkpoints often
    tie, and the Trainer keeps the first of equals. On BBC News that kept the teacher after its first epoch (test
    92.8 %) over later ones that score 96.4 % on test with the same validation accuracy. ``selection`` breaks ties
    by the lower validation cross-entropy; its loss term stays under half of one example's step, so it never
    outweighs a difference in accuracy.
    """
    logits, labels = eval_pred.predictions, eval_pred.label_ids
    if isinstance(logits, tuple):
        logits = logits[0]
    logits = np.asarray(logits, dtype=np.float64)
    accuracy = float((np.argmax(logits, axis=-1) == labels).mean())
    top = logits.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
    rows = np.arange(len(labels))
    known = labels >= 0  # -1: a label the head lacks (a user's head) has no likelihood to score
    ce = float((log_z[known] - logits[rows[known], labels[known]]).mean()) if known.any() else 0.0
    return {"accuracy": accuracy, "selection": accuracy - min(ce, 1.0) / (2 * max(1, len(labels)))}


def train(model: Any, tokenizer: Any, train_set: TextDataset, eval_set: TextDataset, cfg: TrainConfig,
          checkpoints: Path, objective: Objective | None = None, resume: bool = False) -> dict[str, Any]:
    """Train a classifier with ``compresskit.training.train``: batches padded by ``Collator``, the loss an
    ``Objective`` (no objective: hard-label cross-entropy, as the teacher's fine-tuning uses), the kept checkpoint
    the one with the best validation accuracy (``_accuracy``)."""
    return run_training(model, train_set, eval_set, cfg, checkpoints,
                        objective=objective or Objective(LossWeights(), temperature=1.0, alpha=0.0),
                        collator=Collator(tokenizer), metrics=_accuracy, resume=resume)


@torch.inference_mode()
def predict_logits(model: Any, tokenizer: Any, texts: list[str], max_length: int, batch_size: int = 64,
                   device: str = "cpu", desc: str | None = None) -> np.ndarray:
    """Logits ``(len(texts), classes)`` of a classifier in eval mode, in fp32."""
    from rich.progress import track

    model = model.to(device).eval()
    out = []
    starts = range(0, len(texts), batch_size)
    for s in track(starts, description=desc, transient=True) if desc else starts:
        enc = tokenizer(texts[s:s + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt").to(device)
        out.append(model(**enc).logits.float().cpu().numpy())
    model.to("cpu")
    return np.concatenate(out) if out else np.zeros((0, model.config.num_labels), dtype=np.float32)
