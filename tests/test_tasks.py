import inspect
import subprocess
import sys

import pytest
from transformers import BertConfig, GPT2Config, LlamaConfig

from compresskit.artifacts import UserError, write_json
from compresskit.models import model_shape
from compresskit.tasks import families, get_task, infer_task, resolve_task, task_of_run
from compresskit.tasks.causal_lm.task import CAUSAL_LM
from compresskit.tasks.classification.task import TEXT_CLASSIFICATION, check_teacher
from compresskit.tasks.protocol import Task
from compresskit.variants import Variant, reference_teacher


@pytest.mark.parametrize("config, task", [
    (BertConfig(architectures=["BertForSequenceClassification"]), TEXT_CLASSIFICATION),
    (BertConfig(architectures=["BertModel"]), TEXT_CLASSIFICATION),
    (LlamaConfig(architectures=["LlamaForCausalLM"]), CAUSAL_LM),
    (GPT2Config(architectures=["GPT2LMHeadModel"]), CAUSAL_LM),
    (LlamaConfig(), CAUSAL_LM),  # no architectures: the model type says decoder
])
def test_task_is_inferred_from_the_teachers_config(config, task):
    assert infer_task(config) is task


def test_task_and_teacher_are_resolved_from_the_flags():
    def never(name):
        raise AssertionError(f"{name}'s config should not be read")

    # no --teacher: the registry's first family and its embedded teacher
    assert resolve_task("auto", None, never) == (TEXT_CLASSIFICATION, TEXT_CLASSIFICATION.default_teacher)
    # a family's embedded teacher names its family; --task picks the family's own embedded teacher
    assert resolve_task("auto", "SmolLM2-135M-Instruct", never) == (CAUSAL_LM, "SmolLM2-135M-Instruct")
    alias = "sentence-transformers/all-MiniLM-L6-v2"  # another name of an embedded teacher: no hub look-up either
    assert resolve_task("auto", alias, never) == (TEXT_CLASSIFICATION, alias)
    assert resolve_task("causal-lm", None, never) == (CAUSAL_LM, CAUSAL_LM.default_teacher)
    # any other teacher: its config decides, unless --task says
    llama = LlamaConfig(architectures=["LlamaForCausalLM"])
    assert resolve_task("auto", "my/llm", lambda name: llama) == (CAUSAL_LM, "my/llm")
    assert resolve_task("text-classification", "my/llm", never) == (TEXT_CLASSIFICATION, "my/llm")


def test_an_unknown_task_is_a_one_line_error():
    assert get_task("causal-lm") is CAUSAL_LM
    with pytest.raises(UserError, match="--task must be auto or one of text-classification, causal-lm") as e:
        get_task("translation")
    assert "\n" not in str(e.value)


def test_every_family_provides_every_member_of_the_protocol():
    """The protocol lists what the core calls; a family that lacks a member would fail only when that path runs."""
    members = set(Task.__annotations__) | {n for n, v in vars(Task).items() if inspect.isfunction(v)}
    for task in families().values():
        missing = sorted(m for m in members if not hasattr(task, m))
        assert missing == [], task.name
        assert set(task.quality_fields) and task.options, task.name


def test_a_run_folder_names_its_family(tmp_path):
    with pytest.raises(UserError, match="names its task family"):
        task_of_run(tmp_path)
    write_json(tmp_path / "bench" / "bench.json", {"task": "causal-lm"})
    assert task_of_run(tmp_path) is CAUSAL_LM
    write_json(tmp_path / "run.json", {"task": "text-classification"})  # the run's own record comes first
    assert task_of_run(tmp_path) is TEXT_CLASSIFICATION


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


def test_a_teacher_without_a_head_is_finetuned_and_one_with_a_head_must_know_the_labels():
    bare = BertConfig(architectures=["BertModel"])
    assert check_teacher(bare, ["a", "b"], "auto", "t") is True
    with pytest.raises(UserError, match="no classification head"):
        check_teacher(bare, ["a", "b"], "never", "t")
    head = BertConfig(architectures=["BertForSequenceClassification"], id2label={0: "a", 1: "b"})
    assert check_teacher(head, ["a", "b"], "auto", "t") is False
    with pytest.raises(UserError, match="cannot predict label"):
        check_teacher(head, ["a", "c"], "auto", "t")


def test_one_reference_teacher_rule_for_objects_and_report_rows():
    rows = [{"name": "student-onnx", "model": "student"}, {"name": "teacher-onnx", "model": "teacher"},
            {"name": "teacher-pytorch", "model": "teacher"}]
    assert reference_teacher(rows)["name"] == "teacher-pytorch"
    assert reference_teacher(rows[:2])["name"] == "teacher-onnx"
    assert reference_teacher(rows[:1]) is None
    objs = [Variant("teacher-onnx", "teacher", "onnx", "fp32", "x"), Variant("s", "student", "onnx", "int8", "y")]
    assert reference_teacher(objs).name == "teacher-onnx"
