"""Distillation on tiny models: students of every kind, every loss term, unlabelled text, resume, two processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from compresskit.artifacts import UserError
from compresskit.models import LoadOptions, parse_shape
from compresskit.tasks.classification.distill import DistillConfig, distill
from compresskit.tasks.classification.losses import LossWeights
from compresskit.tasks.classification.models import load_classifier
from compresskit.training import TrainConfig

FAST = TrainConfig(epochs=10, learning_rate=2e-3, max_length=32, device="cpu", batch_size=8)


def _record(out):
    return json.loads((out / "distill.json").read_text())


@pytest.fixture(scope="module")
def plain_student(tmp_path_factory, tiny_teacher, tiny_data):
    """A student of teacher layer 1 trained on soft targets alone (the default terms); shared by the tests that
    need one, to keep the suite short."""
    root = tmp_path_factory.mktemp("plain")
    return distill(DistillConfig(student_layers="1", train=FAST), tiny_teacher, tiny_data, root / "s", root / "c"), root


def test_kd_student_from_teacher_layers_learns_the_task(plain_student):
    r, root = plain_student
    assert r.validation_accuracy >= 0.9
    rec = _record(r.model_dir)
    assert rec["layers"] == 1 and rec["loss_terms"] == {"soft": 1.0}
    assert list((root / "c").glob("teacher-outputs-*/logits.npy")), "teacher logits are cached for reuse"
    assert rec["teacher_outputs"]["activations"] == "none needed"
    assert not (root / ".s.checkpoints").exists(), "checkpoints are removed after success"


def test_narrow_random_student_with_hidden_and_embedding_terms(tmp_path, tiny_teacher, tiny_data):
    cfg = DistillConfig(student_shape="layers=1,hidden=16,heads=2,intermediate=32",
                        weights=LossWeights(soft=1.0, hidden=1.0, hidden_kind="cosine", embedding=0.5), train=FAST)
    r = distill(cfg, tiny_teacher, tiny_data, tmp_path / "s", tmp_path / "c")
    student = load_classifier(str(r.model_dir), LoadOptions())
    assert student.config.hidden_size == 16 and student.config.num_hidden_layers == 1
    # the projection trained beside the student is not part of the saved student
    assert not any("projection" in k for k in student.state_dict())
    assert _record(r.model_dir)["loss_terms"] == {"soft": 1.0, "hidden": 1.0, "embedding": 0.5}


def _attention_gap(student_dir, teacher_dir, data_dir, layers=((1, 0),)):
    """Mean KL(teacher ‖ student) of the mapped layers' attention maps on the validation texts."""
    import torch
    from transformers import AutoTokenizer

    from compresskit.tasks.classification.data import read_split
    from compresskit.tasks.classification.losses import attention_transfer_loss

    texts, _ = read_split(data_dir, "validation")
    tok = AutoTokenizer.from_pretrained(str(teacher_dir))
    batch = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    models = [load_classifier(str(d), LoadOptions()) for d in (student_dir, teacher_dir)]
    for m in models:
        m.set_attn_implementation("eager")  # attention maps are returned by the eager implementation
    with torch.no_grad():
        s, t = (m(**batch, output_attentions=True).attentions for m in models)
    return sum(float(attention_transfer_loss(s[j], t[i], batch["attention_mask"])) for i, j in layers) / len(layers)


def test_attention_transfer_and_logit_mse_terms_enter_the_loss_and_pull_the_student(tmp_path, tiny_teacher,
                                                                                     tiny_data, plain_student):
    import torch

    from compresskit.tasks.classification.losses import attention_transfer_loss, mse_logits_loss
    from compresskit.tasks.classification.objective import Objective

    # each term is in the loss with its weight: the loss grows by exactly 0.5·MSE(logits) + 1.0·KL(attention)
    teacher = load_classifier(str(tiny_teacher), LoadOptions())
    teacher.set_attn_implementation("eager")
    student = load_classifier(str(tiny_teacher), LoadOptions())
    student.set_attn_implementation("eager")
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.2 * torch.randn_like(p))
    inputs = {"input_ids": torch.tensor([[2, 7, 9, 3, 5]]), "attention_mask": torch.ones(1, 5, dtype=torch.long),
              "labels": torch.tensor([1])}
    with torch.no_grad():
        t_out = teacher(**inputs, output_attentions=True)
        s_out = student(**inputs, output_attentions=True)
    batch = {**inputs, "teacher_logits": t_out.logits, "teacher_attentions": {1: t_out.attentions[1]}}
    plain, _ = Objective(LossWeights(), 2.0, 0.5)(student, batch)
    full, _ = Objective(LossWeights(mse_logits=0.5, attention=1.0), 2.0, 0.5, None, [(1, 0)])(student, batch)
    want = 0.5 * mse_logits_loss(s_out.logits, t_out.logits) + attention_transfer_loss(
        s_out.attentions[0], t_out.attentions[1], inputs["attention_mask"])
    assert float(full - plain) == pytest.approx(float(want), rel=1e-4) and float(want) > 1e-3

    # and distillation uses them: the attention maps the term reads are cached, and the student trained with the
    # term attends more like the teacher's layer 1 than the same student trained without it
    cfg = DistillConfig(student_layers="1", layer_map="1:0", train=FAST,
                        weights=LossWeights(soft=1.0, mse_logits=0.5, attention=1.0))
    r = distill(cfg, tiny_teacher, tiny_data, tmp_path / "s", tmp_path / "c")
    assert r.validation_accuracy >= 0.9
    rec = _record(r.model_dir)
    assert rec["loss_terms"] == {"soft": 1.0, "mse_logits": 0.5, "attention": 1.0}
    assert list((tmp_path / "c").glob("teacher-outputs-*/attention-1.npy"))
    plain = plain_student[0].model_dir  # the same student and budget without the term
    assert _attention_gap(r.model_dir, tiny_teacher, tiny_data) < 0.8 * _attention_gap(plain, tiny_teacher, tiny_data)


def test_attention_needs_equal_head_counts(tmp_path, tiny_teacher, tiny_data):
    cfg = DistillConfig(student_shape="heads=4", weights=LossWeights(attention=1.0), train=FAST)
    with pytest.raises(UserError, match="equal head counts: teacher 2, student 4"):
        distill(cfg, tiny_teacher, tiny_data, tmp_path / "s", tmp_path / "c")
    assert not (tmp_path / "s").exists()


def test_unlabelled_text_is_learnt_from_soft_labels(tmp_path, tiny_teacher, tiny_data):
    from conftest import make_rows

    path = tmp_path / "unlabelled.txt"
    path.write_text("\n".join(r["text"] for r in make_rows(20, seed=5)))
    cfg = DistillConfig(student_layers="1", unlabeled_data=str(path), train=FAST)
    r = distill(cfg, tiny_teacher, tiny_data, tmp_path / "s", tmp_path / "c")
    assert _record(r.model_dir)["unlabeled_examples"] == 60
    with pytest.raises(UserError, match="--alpha 0"):
        DistillConfig(unlabeled_data=str(path), alpha=0.0)


def test_shape_parsing():
    assert parse_shape("layers=2, hidden=64") == {"num_hidden_layers": 2, "hidden_size": 64}
    with pytest.raises(UserError, match="--student-shape"):
        parse_shape("depth=2")


def _cli_distill(teacher, data, out, *extra):
    return [sys.executable, "-m", "compresskit", "distill", "--teacher", str(teacher), "--data", str(data),
            "--out", str(out), "--student-layers", "1", "--epochs", "30", "--learning-rate", "2e-3",
            "--batch-size", "8", "--max-length", "32", "--device", "cpu", "--save-steps", "12", *extra]


def test_resume_after_kill_ends_like_an_uninterrupted_run(tmp_path, tiny_teacher, tiny_data):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = subprocess.run(_cli_distill(tiny_teacher, tiny_data, tmp_path / "whole"), env=env, capture_output=True,
                           text=True, timeout=600)
    assert whole.returncode == 0, whole.stderr[-2000:]
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cli_distill(tiny_teacher, tiny_data, out), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    ckpts = tmp_path / ".killed.checkpoints"
    deadline = time.time() + 300
    while time.time() < deadline and len(list(ckpts.glob("checkpoint-*"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed: give it more epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "distill.json").exists(), "killed before the end: nothing published"
    resumed = subprocess.run(_cli_distill(tiny_teacher, tiny_data, out, "--resume"), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = _record(tmp_path / "whole"), _record(out)
    assert b["resumed_from"] and b["resumed_from"].startswith("checkpoint-")
    assert abs(a["best_validation_accuracy"] - b["best_validation_accuracy"]) <= 1 / 12 + 1e-9


def test_two_cpu_processes_reach_the_quality_of_one(tmp_path, tiny_teacher, tiny_data):
    """DDP over gloo through torchrun: half the batch per process, the same effective batch."""
    one = subprocess.run(_cli_distill(tiny_teacher, tiny_data, tmp_path / "one"), capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-2000:]
    cmd = _cli_distill(tiny_teacher, tiny_data, tmp_path / "two")
    cmd[cmd.index("--batch-size") + 1] = "4"
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m",
                          *cmd[2:]], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a, b = _record(tmp_path / "one"), _record(tmp_path / "two")
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert b["best_validation_accuracy"] >= a["best_validation_accuracy"] - 1 / 12 - 1e-9


def test_few_labels_rest_as_unlabelled_text(tmp_path, tiny_teacher, tiny_data):
    kd = distill(DistillConfig(student_layers="1", labeled_fraction=0.1, train=FAST), tiny_teacher, tiny_data,
                 tmp_path / "kd", tmp_path / "c")
    rec = _record(kd.model_dir)
    assert rec["labeled_examples"] == 9 and rec["unlabeled_examples"] == 75  # 3 per class kept of 28/28/28
    hard = distill(DistillConfig(student_layers="1", labeled_fraction=0.1, alpha=0.0, train=FAST), tiny_teacher,
                   tiny_data, tmp_path / "hard", tmp_path / "c")
    rec = _record(hard.model_dir)
    assert rec["labeled_examples"] == 9 and rec["unlabeled_examples"] == 0  # no teacher: nothing to learn from


def test_alpha_zero_keeps_the_inner_terms(tiny_teacher):
    """α = 0 switches off the soft targets only: hidden-state terms still pull the student to the teacher."""
    import torch

    from compresskit.tasks.classification.objective import Objective

    teacher = load_classifier(str(tiny_teacher), LoadOptions())
    student = load_classifier(str(tiny_teacher), LoadOptions())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(0.1 * torch.randn_like(p))
    inputs = {"input_ids": torch.tensor([[2, 7, 9, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long),
              "labels": torch.tensor([1])}
    plain, _ = Objective(LossWeights(), 1.0, 0.0)(student, inputs)
    with_hidden, _ = Objective(LossWeights(hidden=1.0), 1.0, 0.0, teacher, [(1, 1)])(student, inputs)
    assert with_hidden.item() > plain.item() + 1e-6
