import subprocess
import sys

import numpy as np
import pytest
from transformers import BertConfig, GPT2Config, LlamaConfig

from compresskit.artifacts import UserError
from compresskit.tasks import families, get_task, infer_task, model_shape, resolve_task
from compresskit.tasks.classification import TEXT_CLASSIFICATION
from compresskit.variants import Variant, reference_teacher


@pytest.mark.parametrize("config, task", [
    (BertConfig(architectures=["BertForSequenceClassification"]), "text-classification"),
    (BertConfig(architectures=["BertModel"]), "text-classification"),
    (LlamaConfig(architectures=["LlamaForCausalLM"]), "causal-lm"),
    (GPT2Config(architectures=["GPT2LMHeadModel"]), "causal-lm"),
])
def test_task_is_inferred_from_the_teachers_config(config, task):
    assert infer_task(config) == task


def test_auto_resolves_to_the_inferred_family_and_an_explicit_task_wins():
    assert resolve_task("auto", BertConfig(architectures=["BertModel"])) is TEXT_CLASSIFICATION
    assert resolve_task("text-classification", GPT2Config(architectures=["GPT2LMHeadModel"])) is TEXT_CLASSIFICATION


def test_an_unknown_task_is_a_one_line_error():
    assert get_task("causal-lm").name == "causal-lm"
    with pytest.raises(UserError, match="--task must be auto or one of text-classification, causal-lm") as e:
        get_task("translation")
    assert "\n" not in str(e.value)


def test_python_m_compresskit_tasks_lists_every_family_and_what_it_needs():
    out = subprocess.run([sys.executable, "-m", "compresskit.tasks"], capture_output=True, text=True, check=True).stdout
    for name, task in families().items():
        assert name in out and task.needs in out
    assert "causal-lm" in out


def test_model_shape_reads_each_familys_names():
    gpt2 = model_shape(GPT2Config(n_layer=3, n_embd=48, n_head=4))
    assert (gpt2["layers"], gpt2["hidden_size"], gpt2["heads"]) == (3, 48, 4)
    shape = model_shape(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2, intermediate_size=64))
    assert shape == {"model_type": "bert", "layers": 2, "hidden_size": 32, "heads": 2, "intermediate_size": 64}


def test_classification_quality_export_spec_and_workloads():
    q = TEXT_CLASSIFICATION.quality(np.array([0, 1, 1, 2]), np.array([0, 1, 2, 2]), np.array([0, 1, 1, 1]), 3)
    assert q["accuracy"] == 0.75 and q["agreement_with_teacher"] == 0.75
    assert q["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert TEXT_CLASSIFICATION.quality(np.array([0]), np.array([0]), None, 2)["agreement_with_teacher"] is None
    spec = TEXT_CLASSIFICATION.export_spec(["input_ids", "attention_mask"])
    assert spec.outputs == ("logits",) and spec.dynamic_axes["attention_mask"] == {0: "batch", 1: "sequence"}
    assert [w.key for w in TEXT_CLASSIFICATION.workloads((32, 8), 128)] == ["batch_1", "batch_8", "batch_32"]


def test_a_teacher_without_a_head_is_finetuned_and_one_with_a_head_must_know_the_labels():
    bare = BertConfig(architectures=["BertModel"])
    assert TEXT_CLASSIFICATION.check_teacher(bare, ["a", "b"], "auto", "t") is True
    with pytest.raises(UserError, match="no classification head"):
        TEXT_CLASSIFICATION.check_teacher(bare, ["a", "b"], "never", "t")
    head = BertConfig(architectures=["BertForSequenceClassification"], id2label={0: "a", 1: "b"})
    assert TEXT_CLASSIFICATION.check_teacher(head, ["a", "b"], "auto", "t") is False
    with pytest.raises(UserError, match="cannot predict label"):
        TEXT_CLASSIFICATION.check_teacher(head, ["a", "c"], "auto", "t")


def test_one_reference_teacher_rule_for_objects_and_report_rows():
    rows = [{"name": "student-onnx", "model": "student"}, {"name": "teacher-onnx", "model": "teacher"},
            {"name": "teacher-pytorch", "model": "teacher"}]
    assert reference_teacher(rows)["name"] == "teacher-pytorch"
    assert reference_teacher(rows[:2])["name"] == "teacher-onnx"
    assert reference_teacher(rows[:1]) is None
    objs = [Variant("teacher-onnx", "teacher", "onnx", "fp32", "x"), Variant("s", "student", "onnx", "int8", "y")]
    assert reference_teacher(objs).name == "teacher-onnx"
