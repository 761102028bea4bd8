"""Tiny, offline fixtures: a word-level tokenizer, random 2-layer BERTs and a small 3-class data set, made in code."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

# Tests never reach a model hub: everything they load is made in code or shipped in an installed package.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TOPICS = {
    "sport": "match goal team player coach league score win season cup",
    "tech": "computer software chip phone internet data code device network app",
    "money": "bank market price share profit stock trade economy rate fund",
}
FILLER = "the a of and in to for on with at by from this that it is was"


def make_rows(n_per_class: int = 40, seed: int = 0) -> list[dict[str, str]]:
    """Sentences whose topic words give the label away, with filler noise, so a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        vocab, filler = words.split(), FILLER.split()
        for _ in range(n_per_class):
            tokens = rng.choices(vocab, k=6) + rng.choices(filler, k=6)
            rng.shuffle(tokens)
            rows.append({"text": " ".join(tokens), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "tiny.csv"
    rows = make_rows()
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    return path


def save_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, classifier_labels: list[str] | None = None,
                   seed: int = 0) -> Path:
    """A random BERT (bare encoder, or a classifier with the given labels) with a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertModel, BertForSequenceClassification, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    words = sorted({w for ws in (*TOPICS.values(), FILLER) for w in ws.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
    tok.save_pretrained(folder)
    config = BertConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=2,
                        intermediate_size=2 * hidden, max_position_embeddings=64)
    torch.manual_seed(seed)
    if classifier_labels is None:
        model = BertModel(config)
    else:
        config.num_labels = len(classifier_labels)
        config.id2label = dict(enumerate(classifier_labels))
        config.label2id = {n: i for i, n in enumerate(classifier_labels)}
        model = BertForSequenceClassification(config)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    """A bare random encoder: like all-MiniLM-L6-v2, it has no classification head."""
    return save_tiny_bert(tmp_path_factory.mktemp("encoder") / "model")


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory, tiny_csv) -> Path:
    """The tiny CSV split by compresskit's data stage."""
    from compresskit.data import DataConfig, prepare_data

    return prepare_data(DataConfig(dataset=str(tiny_csv)), tmp_path_factory.mktemp("split") / "data").data_dir


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A random 2-layer classifier whose head knows the tiny data's three labels."""
    return save_tiny_bert(tmp_path_factory.mktemp("clf") / "model", classifier_labels=sorted(TOPICS))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_classifier, tiny_data) -> Path:
    """The tiny classifier exported (and verified) by compresskit's export stage."""
    from compresskit.export import ExportConfig, export

    return export(ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="off"), tiny_classifier, tiny_data,
                  tmp_path_factory.mktemp("onnx") / "model").onnx_dir


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_encoder, tiny_data) -> Path:
    """The tiny encoder fine-tuned on the tiny data: a teacher that knows the task (100 % on validation)."""
    from compresskit.finetune import FinetuneConfig, finetune_teacher
    from compresskit.training import TrainConfig

    cfg = FinetuneConfig(TrainConfig(epochs=8, learning_rate=2e-3, max_length=32, device="cpu"))
    return finetune_teacher(cfg, str(tiny_encoder), tiny_data, tmp_path_factory.mktemp("teacher") / "t").model_dir
