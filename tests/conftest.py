"""Tiny, offline fixtures: a word-level tokenizer, random 2-layer BERTs and a small 3-class data set, made in code."""

from __future__ import annotations

import csv
import os
import random
import subprocess
import sys
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


def bert_classifier(layers: int = 2, seed: int = 0):
    """A random in-memory BERT classifier (width 32, 2 heads, vocabulary 50, 3 labels), in eval mode."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=3)).eval()


def save_tiny_bert(folder: Path, layers: int = 2, hidden: int = 32, classifier_labels: list[str] | None = None,
                   seed: int = 0) -> Path:
    """A random BERT (bare encoder, or a classifier with the given labels) with a word-level tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizerFast

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
    from compresskit.tasks.classification.data import DataConfig, prepare_data

    return prepare_data(DataConfig(dataset=str(tiny_csv)), tmp_path_factory.mktemp("split") / "data").data_dir


@pytest.fixture(scope="session")
def tiny_classifier(tmp_path_factory) -> Path:
    """A random 2-layer classifier whose head knows the tiny data's three labels."""
    return save_tiny_bert(tmp_path_factory.mktemp("clf") / "model", classifier_labels=sorted(TOPICS))


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory, tiny_classifier, tiny_data) -> Path:
    """The tiny classifier exported (and verified) by compresskit's export stage."""
    from compresskit.tasks.classification.export import ExportConfig, export

    return export(ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="off",
                               skip_layer_norm="fused"), tiny_classifier, tiny_data,
                  tmp_path_factory.mktemp("onnx") / "model").onnx_dir


@pytest.fixture(scope="session")
def tiny_teacher(tmp_path_factory, tiny_encoder, tiny_data) -> Path:
    """The tiny encoder fine-tuned on the tiny data: a teacher that knows the task (100 % on validation)."""
    from compresskit.tasks.classification.finetune import finetune_teacher
    from compresskit.training import FinetuneConfig, TrainConfig

    cfg = FinetuneConfig(TrainConfig(epochs=8, learning_rate=2e-3, max_length=32, device="cpu"))
    return finetune_teacher(cfg, str(tiny_encoder), tiny_data, tmp_path_factory.mktemp("teacher") / "t").model_dir


def outlier_model(src: Path, folder: Path, every_column: bool = False, width: int = 8, external: bool = False,
                  prefix: str = "") -> Path:
    """A hand-made classifier over ``src``'s tokenizer that per-tensor int8 cannot quantize, and where the culprit is
    one node: embed → mean over tokens → MatMul ``mix`` → Relu → MatMul ``head`` → logits.

    ``mix`` holds weights of 1e4 on a feature that every embedding sets to 0: fp32 never feels them, but they set the
    int8 (and, per column, int4) scale, so every other weight of ``mix`` rounds to 0. Keeping ``mix`` in fp32 fixes it.
    With ``external`` the weights are saved in ``model.onnx.data`` (give a ``width`` whose int8 weights still pass
    1 KiB, e.g. 64, to keep them there after quantization). ``prefix`` goes before both MatMuls' names: with
    ``"/layer.0/"`` they are one layer group, as a transformer layer's MatMuls are.
    """
    import json
    import shutil

    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    folder.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file() and f.suffix not in (".onnx", ".data") and f.name != "export.json":
            shutil.copy2(f, folder / f.name)
    vocab = len(json.loads((src / "tokenizer.json").read_text())["model"]["vocab"])
    rng = np.random.default_rng(0)
    emb = rng.normal(0, 1, (vocab, width)).astype(np.float32)
    emb[:, 0] = 0
    mix = rng.normal(0, 0.3, (width, width)).astype(np.float32)
    if every_column:
        mix[0, :] = 1e4
    else:
        mix[0, 0] = 1e4
    head = rng.normal(0, 1, (width, 3)).astype(np.float32)
    nodes = [helper.make_node("Gather", ["emb", "input_ids"], ["tok"], name="embed"),
             helper.make_node("ReduceMean", ["tok"], ["pooled"], axes=[1], keepdims=0, name="pool"),
             helper.make_node("MatMul", ["pooled", "mix"], ["h"], name=f"{prefix}mix/MatMul"),
             helper.make_node("Relu", ["h"], ["r"], name="act"),
             helper.make_node("MatMul", ["r", "head"], ["logits"], name=f"{prefix}head/MatMul")]
    graph = helper.make_graph(
        nodes, "outlier", [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3])],
        [numpy_helper.from_array(a, n) for a, n in ((emb, "emb"), (mix, "mix"), (head, "head"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, location="model.onnx.data",
                        size_threshold=1024)
    else:
        onnx.save(model, str(folder / "model.onnx"))
    return folder


def cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python -m compresskit ARGS`` as a user runs it: a real subprocess, its output captured."""
    return subprocess.run([sys.executable, "-m", "compresskit", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=600)
