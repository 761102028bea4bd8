import shutil

import pytest
import torch
from conftest import save_tiny_bert

from compresskit.artifacts import UserError
from compresskit.models import (
    LoadOptions,
    check_model_dir,
    count_parameters,
    load_tokenizer,
    resolve_model_source,
    tokenizers_agree,
)
from compresskit.tasks.classification.models import (
    load_classifier,
    match_labels,
    parse_layers,
    resolve_teacher,
    student_from_teacher_layers,
)


def test_student_keeps_the_chosen_teacher_layers(tmp_path):
    folder = save_tiny_bert(tmp_path / "t", layers=4, classifier_labels=["a", "b"])
    teacher = load_classifier(str(folder), LoadOptions())
    student = student_from_teacher_layers(teacher, [0, 3])
    assert student.config.num_hidden_layers == 2
    t_layers, s_layers = teacher.bert.encoder.layer, student.bert.encoder.layer
    assert len(s_layers) == 2
    for s_ix, t_ix in ((0, 0), (1, 3)):
        for (name, sp), (_, tp) in zip(s_layers[s_ix].named_parameters(), t_layers[t_ix].named_parameters()):
            assert torch.equal(sp, tp), name
    assert torch.equal(student.classifier.weight, teacher.classifier.weight)
    assert torch.equal(student.bert.embeddings.word_embeddings.weight, teacher.bert.embeddings.word_embeddings.weight)
    assert count_parameters(student) < count_parameters(teacher)
    # a copy, not shared storage: training the student must not change the teacher
    student.classifier.weight.data.add_(1.0)
    assert not torch.equal(student.classifier.weight, teacher.classifier.weight)


def test_parse_layers():
    assert parse_layers("5, 0", 6) == [0, 5]
    with pytest.raises(UserError, match="layers 0..5"):
        parse_layers("0,6", 6)
    with pytest.raises(UserError, match="comma-separated"):
        parse_layers("first", 6)


def test_parse_layers_auto_follows_the_teacher_depth():
    """``auto`` (the default) keeps 0,5 of the default 6-layer teacher, as the old default did, and fits any depth."""
    assert parse_layers("auto", 6) == [0, 5]
    assert parse_layers("auto", 12) == [0, 4, 7, 11] and parse_layers("auto", 2) == [0]
    with pytest.raises(UserError, match="like 0,5, or auto"):
        parse_layers("automatic", 6)


def test_missing_teacher_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        resolve_model_source(str(tmp_path / "nope"))


def test_default_teacher_resolves_to_the_bundled_package():
    path = resolve_teacher("all-MiniLM-L6-v2")
    assert path.endswith("model")
    check_model_dir(__import__("pathlib").Path(path))


def test_pickle_only_checkpoint_is_refused_unless_allowed(tmp_path, tiny_classifier):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_classifier, folder)
    model = load_classifier(str(folder), LoadOptions())
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="--allow-pickle"):
        check_model_dir(folder)
    with pytest.raises(UserError, match="--allow-pickle"):
        resolve_model_source(str(folder))
    check_model_dir(folder, allow_pickle=True)
    assert load_classifier(str(folder), LoadOptions(allow_pickle=True)).config.num_labels == 3


def test_label_matching(tiny_classifier):
    config = load_classifier(str(tiny_classifier), LoadOptions()).config
    assert match_labels(config, ["sport", "money"], "t") == ["money", "sport", "tech"]
    with pytest.raises(UserError, match="cannot predict label\\(s\\) weather"):
        match_labels(config, ["sport", "weather"], "t")
    config.id2label = {0: "LABEL_0", 1: "LABEL_1"}
    assert match_labels(config, ["y", "x"], "t") == ["x", "y"]
    with pytest.raises(UserError, match="head of 2 classes"):
        match_labels(config, ["x", "y", "z"], "t")


def test_tokenizer_agreement(tmp_path, tiny_classifier):
    a = load_tokenizer(str(tiny_classifier), LoadOptions())
    assert tokenizers_agree(a, load_tokenizer(str(tiny_classifier), LoadOptions()))
    b = load_tokenizer(resolve_teacher("all-MiniLM-L6-v2"), LoadOptions())
    assert not tokenizers_agree(a, b)


def test_a_student_keeps_the_per_layer_config_of_its_teacher_layers(tmp_path):
    """ModernBERT lists an attention kind per layer (``layer_types``): a 1-layer student of a 3-layer teacher keeps
    the kind of the layer it starts from, and saves and reloads (transformers refuses 3 kinds for 1 layer)."""
    from transformers import AutoModelForSequenceClassification, ModernBertConfig, ModernBertForSequenceClassification

    from compresskit.models import per_layer_fields

    config = ModernBertConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=2,
                              vocab_size=100, pad_token_id=0, eos_token_id=1, bos_token_id=2, cls_token_id=2,
                              sep_token_id=1, num_labels=2)
    teacher = ModernBertForSequenceClassification(config).eval()
    assert per_layer_fields(teacher.config) == ["layer_types"]
    kinds = list(teacher.config.layer_types)
    student = student_from_teacher_layers(teacher, [0, 2])
    assert student.config.num_hidden_layers == 2 and student.config.layer_types == [kinds[0], kinds[2]]
    student.save_pretrained(tmp_path / "s")
    again = AutoModelForSequenceClassification.from_pretrained(tmp_path / "s")
    assert again.config.layer_types == [kinds[0], kinds[2]]
    ids = torch.tensor([[2, 5, 7, 1]])
    assert torch.allclose(again(input_ids=ids).logits, student(input_ids=ids).logits, atol=1e-5)
