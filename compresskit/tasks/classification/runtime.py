"""Run an exported folder with ONNX Runtime alone: no torch, no transformers.

    from compresskit.runtime import OnnxClassifier
    clf = OnnxClassifier("export/bbc-news-all-minilm-l6-v2/onnx/student-quantized")
    clf.predict(["Shares in the bank rose 5% after results."])  # [{"label": "business", "score": 0.98, ...}]

The folder is what ``compresskit export`` or ``quantize`` wrote: ``model.onnx``, ``tokenizer.json``,
``labels.json`` and the stage record holding the sequence length the model was verified at. A large model keeps its
weights in ``model.onnx.data`` beside ``model.onnx``; ONNX Runtime reads it from there. A ``session.json`` beside it
names ONNX Runtime optimizers the session must leave off (see ``layer_norm``); the session applies it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError
from compresskit.onnx.sessions import make_session, run_logits


def _stage_record(folder: Path) -> dict[str, Any]:
    """The folder's stage record: ``export.json`` for an export, ``quantize.json`` for a quantized copy (which does
    not carry its source's export.json); empty when there is neither."""
    for record in ("export.json", "quantize.json"):
        path = folder / record
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
    return {}


class OnnxClassifier:
    """A text classifier from an exported folder, tokenising with the ``tokenizers`` library."""

    def __init__(self, folder: str | Path, threads: int | None = None, device: str = "cpu",
                 max_length: int | None = None):
        from tokenizers import Tokenizer

        self.folder = Path(folder)
        for name in ("model.onnx", "tokenizer.json", "labels.json"):
            if not (self.folder / name).is_file():
                raise UserError(f"{self.folder} holds no {name}: give a folder written by `compresskit export` "
                                "or `compresskit quantize`")
        record = _stage_record(self.folder)
        # external-data files the record lists for model.onnx but the folder lacks
        missing = [f["name"] for f in record.get("data_files") or [] if not (self.folder / f["name"]).is_file()]
        if missing:  # a copy of the folder that left the weights behind; ONNX Runtime's own error reads as a crash
            raise UserError(f"{self.folder} lacks {', '.join(missing)}, which holds the weights of its model.onnx: "
                            "copy it along with model.onnx")
        self.labels: list[str] = json.loads((self.folder / "labels.json").read_text(encoding="utf-8"))
        # the sequence length the model was exported and verified at (128 if the record does not say)
        self.max_length = max_length or int(record.get("config", {}).get("max_length") or 128)
        self.tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_length)
        pad_id = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.enable_padding(pad_id=pad_id)
        self.session = make_session(self.folder / "model.onnx", threads=threads, device=device)

    @property
    def providers(self) -> list[str]:
        """Execution providers the session actually uses."""
        return self.session.get_providers()

    def logits(self, texts: list[str]) -> np.ndarray:
        """Logits ``(len(texts), classes)``."""
        encodings = self.tokenizer.encode_batch(list(texts))
        batch = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return run_logits(self.session, batch)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        """For each text: the label, its probability, and the probability of every label."""
        logits = self.logits(texts)
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        return [{"label": self.labels[int(p.argmax())], "score": float(p.max()),
                 "scores": {n: float(x) for n, x in zip(self.labels, p)}} for p in probs]
