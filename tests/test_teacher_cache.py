"""The teacher-output cache: computed once, reused, and equal to running the teacher online."""

import json

import numpy as np
import pytest
import torch

from compresskit.models import LoadOptions, load_tokenizer
from compresskit.tasks.classification.distill import DistillConfig, distill
from compresskit.tasks.classification.losses import LossWeights
from compresskit.tasks.classification.models import load_classifier
from compresskit.tasks.classification.objective import Objective
from compresskit.tasks.classification.teacher_cache import TeacherNeeds, activation_bytes, teacher_outputs
from compresskit.tasks.classification.training import Collator, TextDataset, encode
from compresskit.training import TrainConfig

FAST = TrainConfig(epochs=3, learning_rate=2e-3, max_length=32, device="cpu", batch_size=8)
TEXTS = ["match goal team", "bank market price share profit stock trade", "the chip", "code device network app data"]


def _batch(tokenizer, outputs, labels=(0, 1, 2, 0)):
    ds = TextDataset(encode(tokenizer, TEXTS, 32), list(labels), outputs)
    return Collator(tokenizer)([ds[i] for i in range(len(ds))])


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_cached_activations_give_the_loss_of_the_online_teacher(tmp_path, tiny_teacher, padding_side):
    teacher = load_classifier(str(tiny_teacher), LoadOptions()).eval()
    teacher.set_attn_implementation("eager")  # attention maps come from the eager implementation only
    tokenizer = load_tokenizer(str(tiny_teacher), LoadOptions())
    tokenizer.padding_side = padding_side
    student = load_classifier(str(tiny_teacher), LoadOptions()).eval()
    student.set_attn_implementation("eager")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    weights = LossWeights(soft=1.0, hidden=1.0, attention=1.0, embedding=1.0)
    pairs = [(0, 0), (1, 1)]
    cached_obj = Objective(weights, 2.0, 0.5, None, pairs, teacher_layers=2)
    hidden, attentions = cached_obj.activation_needs()
    assert hidden == (1, 2) and attentions == (0, 1)
    needs = TeacherNeeds(logits=True, hidden=hidden, attentions=attentions)
    outputs = teacher_outputs(teacher, tokenizer, "t", TEXTS, 32, needs, tmp_path, "cpu")
    batch = _batch(tokenizer, outputs)
    assert batch["teacher_hidden"][2].shape == (4, batch["input_ids"].shape[1], 32)
    assert batch["teacher_attentions"][1].shape == (4, 2, batch["input_ids"].shape[1], batch["input_ids"].shape[1])

    from_cache, _ = cached_obj(student, batch)
    online_batch = {k: v for k, v in batch.items() if k not in ("teacher_hidden", "teacher_attentions")}
    online, _ = Objective(weights, 2.0, 0.5, teacher, pairs)(student, online_batch)
    # float16 storage of the targets moves the loss by far less than a training step does
    assert from_cache.item() == pytest.approx(online.item(), rel=2e-3)
    # and the comparison can fail: targets from another layer give another loss
    swapped = dict(batch, teacher_hidden={1: batch["teacher_hidden"][2], 2: batch["teacher_hidden"][1]})
    assert abs(cached_obj(student, swapped)[0].item() - online.item()) > 1e-3


def test_cache_is_reused_and_extended_with_missing_outputs_only(tmp_path, tiny_teacher):
    teacher = load_classifier(str(tiny_teacher), LoadOptions())
    tokenizer = load_tokenizer(str(tiny_teacher), LoadOptions())
    first = teacher_outputs(teacher, tokenizer, "t", TEXTS, 32, TeacherNeeds(logits=True), tmp_path, "cpu")
    logits_file = first.folder / "logits.npy"
    stamp = logits_file.stat().st_mtime_ns
    second = teacher_outputs(teacher, tokenizer, "t", TEXTS, 32, TeacherNeeds(logits=True, hidden=(2,)),
                             tmp_path, "cpu")
    assert second.folder == first.folder and logits_file.stat().st_mtime_ns == stamp
    assert sorted(p.name for p in first.folder.glob("*.npy")) == ["hidden-2.npy", "lengths.npy", "logits.npy"]
    assert second.hidden[2].dtype == np.float16 and list(second.lengths) == [5, 9, 4, 7]  # with [CLS] and [SEP]
    assert not [p for p in tmp_path.rglob("*") if ".tmp" in p.name]
    # other texts or another length are another cache entry
    teacher_outputs(teacher, tokenizer, "t", TEXTS[:2], 32, TeacherNeeds(logits=True), tmp_path, "cpu")
    assert len(list(tmp_path.glob("teacher-outputs-*"))) == 2


def test_activation_size_estimate():
    class C:
        hidden_size, num_attention_heads = 384, 12

    needs = TeacherNeeds(hidden=(1, 6), attentions=(5,))
    # BBC News: 1,779 training articles at 128 tokens
    assert activation_bytes(needs, 1779, 128, C) == 2 * 1779 * 128 * 384 * 2 + 1779 * 12 * 128 * 128 * 2


def test_distillation_reads_activations_from_the_cache(tmp_path, tiny_teacher, tiny_data):
    weights = LossWeights(soft=1.0, hidden=1.0, attention=1.0)
    r = distill(DistillConfig(student_layers="1", layer_map="1:0", weights=weights, train=FAST), tiny_teacher,
                tiny_data, tmp_path / "s", tmp_path / "c")
    rec = json.loads((r.model_dir / "distill.json").read_text())["teacher_outputs"]
    assert rec["activations"].startswith("cached")
    assert rec["files"] == ["logits.npy", "hidden-2.npy", "attention-1.npy", "lengths.npy"]
    online = distill(DistillConfig(student_layers="1", layer_map="1:0", weights=weights, train=FAST,
                                   cache_teacher_activations=False), tiny_teacher, tiny_data, tmp_path / "o",
                     tmp_path / "c2")
    rec2 = json.loads((online.model_dir / "distill.json").read_text())["teacher_outputs"]
    assert rec2["activations"].startswith("online") and rec2["files"] == ["logits.npy"]
    # the same training from cached or live targets ends at (nearly) the same place
    assert abs(r.validation_accuracy - online.validation_accuracy) <= 1 / 12 + 1e-9


def test_cold_logits_come_from_onnx_runtime_and_match_pytorch(tmp_path, tiny_teacher, monkeypatch):
    from compresskit.tasks.classification import teacher_cache
    from compresskit.tasks.classification.training import predict_logits

    teacher = load_classifier(str(tiny_teacher), LoadOptions())
    tokenizer = load_tokenizer(str(tiny_teacher), LoadOptions())
    texts = TEXTS * 20  # several batches of different padded lengths
    attention = teacher.config._attn_implementation
    fast = teacher_outputs(teacher, tokenizer, "t", texts, 32, TeacherNeeds(logits=True), tmp_path / "a", "cpu")
    assert json.loads((fast.folder / "cache.json").read_text())["logits_runtime"] == "onnxruntime"
    want = predict_logits(teacher, tokenizer, texts, 32)
    assert np.abs(fast.logits - want).max() <= teacher_cache.ORT_PARITY
    assert teacher.config._attn_implementation == attention  # the export's eager switch is undone
    # a graph that misses the parity bound is dropped and PyTorch computes the logits
    monkeypatch.setattr(teacher_cache, "ORT_PARITY", -1.0)
    slow = teacher_outputs(teacher, tokenizer, "t", texts, 32, TeacherNeeds(logits=True), tmp_path / "b", "cpu")
    assert json.loads((slow.folder / "cache.json").read_text())["logits_runtime"] == "pytorch"
    assert np.abs(slow.logits - want).max() < 1e-6
