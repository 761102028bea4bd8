"""The training engine's settings: FSDP through transformers' Trainer / accelerate, refused where it cannot run."""

import numpy as np
import pytest
from conftest import bert_classifier

from compresskit.artifacts import UserError
from compresskit.training import TrainConfig, fsdp_settings


def test_fsdp_wraps_each_transformer_layer_and_accelerate_accepts_it():
    from transformers import TrainingArguments

    settings = fsdp_settings(bert_classifier(layers=1))
    assert settings["transformer_layer_cls_to_wrap"] == ["BertEmbeddings", "BertLayer"]
    args = TrainingArguments(output_dir="unused", use_cpu=True, fsdp=True, fsdp_config=settings, report_to="none")
    plugin = args.fsdp_plugin_args  # what accelerate's FullyShardedDataParallelPlugin is built from
    assert plugin["fsdp_version"] == 2 and plugin["state_dict_type"] == "FULL_STATE_DICT"
    assert plugin["transformer_cls_names_to_wrap"] == "BertEmbeddings,BertLayer"


def test_fsdp_of_a_wrapped_student_and_of_a_model_without_layer_classes():
    import torch

    from compresskit.tasks.classification.losses import HiddenProjection
    from compresskit.tasks.classification.objective import StudentWithProjection

    wrapped = StudentWithProjection(bert_classifier(layers=1), HiddenProjection(32, 64, 2))
    assert fsdp_settings(wrapped)["transformer_layer_cls_to_wrap"] == ["BertEmbeddings", "BertLayer"]
    plain = fsdp_settings(torch.nn.Linear(4, 4))
    assert plain["auto_wrap_policy"] == "SIZE_BASED_WRAP" and "transformer_layer_cls_to_wrap" not in plain


def test_fsdp_is_refused_on_cpu_with_the_flag_named():
    with pytest.raises(UserError, match="--fsdp needs CUDA GPUs"):
        TrainConfig(fsdp=True, device="cpu")


def test_checkpoint_selection_breaks_accuracy_ties_by_loss_but_never_outweighs_accuracy() -> None:
    """The kept checkpoint: the most accurate on validation, and of equally accurate ones the most confident in
    the right labels (the Trainer alone keeps the first of equals)."""
    from types import SimpleNamespace

    from compresskit.tasks.classification.training import _accuracy

    labels = np.array([0, 1, 1, 0])
    def score(logits: list[list[float]]) -> dict[str, float]:
        return _accuracy(SimpleNamespace(predictions=np.array(logits), label_ids=labels))

    unsure = score([[0.1, 0], [0, 0.1], [0, 0.1], [0, 0.1]])  # 3 of 4 right, barely
    sure = score([[5, 0], [0, 5], [0, 5], [0, 0.1]])  # the same 3 of 4, confidently
    assert unsure["accuracy"] == sure["accuracy"] == 0.75
    assert sure["selection"] > unsure["selection"]
    wrong_but_sure = score([[9, 0], [0, 9], [9, 0], [9, 0]])  # 3 of 4, one confidently wrong: loss far above 1
    four = score([[0.01, 0], [0, 0.01], [0, 0.01], [0.01, 0]])  # 4 of 4, barely
    assert four["accuracy"] == 1.0 and four["selection"] > max(sure["selection"], wrong_but_sure["selection"])
