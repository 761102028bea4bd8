"""The training engine's settings: FSDP through transformers' Trainer / accelerate, refused where it cannot run."""

import pytest

from compresskit.artifacts import UserError
from compresskit.training import TrainConfig, fsdp_settings
from conftest import bert_classifier


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

    from compresskit.losses import HiddenProjection
    from compresskit.objective import StudentWithProjection

    wrapped = StudentWithProjection(bert_classifier(layers=1), HiddenProjection(32, 64, 2))
    assert fsdp_settings(wrapped)["transformer_layer_cls_to_wrap"] == ["BertEmbeddings", "BertLayer"]
    plain = fsdp_settings(torch.nn.Linear(4, 4))
    assert plain["auto_wrap_policy"] == "SIZE_BASED_WRAP" and "transformer_layer_cls_to_wrap" not in plain


def test_fsdp_is_refused_on_cpu_with_the_flag_named():
    with pytest.raises(UserError, match="--fsdp needs CUDA GPUs"):
        TrainConfig(fsdp=True, device="cpu")
