"""lm.distill on a tiny random Llama: what each teacher source (live, top-k cache, none at α = 0) trains on, and
what the record says of it."""

import json

import pytest
import torch
from lm_models import save_lm, tiny_llama, tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm.distill import LMDistillConfig, distill_lm
from compresskit.tasks.causal_lm.kd_losses import (
    LMKDConfig,
    cross_entropy_chunked,
    final_hidden_states,
    kd_loss_chunked,
    lm_head,
    next_token_targets,
)
from compresskit.tasks.causal_lm.prompts import PromptExample, collate, tokenize_example
from compresskit.training import TrainConfig

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album"]


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("lm") / "teacher", tiny_llama(layers=3, hidden=32, max_positions=256))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    for split, n in (("train", 12), ("validation", 4)):
        rows = [{"prompt": f"tell me of the {WORDS[i % 8]}", "kind": "user", "source_id": f"{split} {i}",
                 "reference": None, "response": f"the {WORDS[(i * 3) % 8]} and the {WORDS[(i + 5) % 8]}"}
                for i in range(n)]
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "train_text.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": " ".join(WORDS[i:] * 3)})
                                                     + "\n" for i in range(4)))
    return folder


def _cfg(**kw):
    kd = kw.pop("kd", LMKDConfig())
    return LMDistillConfig(kd=kd, max_steps=3, train=TrainConfig(batch_size=4, learning_rate=1e-3, max_length=48,
                                                                 device="cpu"), **kw)


def test_top_k_cache_trains_without_the_live_teacher_and_records_its_size(tmp_path, teacher_dir, data_dir):
    rec = distill_lm(_cfg(teacher_topk=8), teacher_dir, data_dir, tmp_path / "student", tmp_path / "pruned",
                     cache_root=tmp_path / "cache")
    cache = rec["teacher_cache"]
    assert rec["teacher_outputs"].startswith("top-8 cache")
    assert cache["k"] == 8 and cache["bytes_per_token"] == 8 * (2 + 2) + 4  # float16 + uint16 ids + tail mass
    assert cache["positions"] > 0 and cache["megabytes"] > 0
    folders = list((tmp_path / "cache").iterdir())
    assert len(folders) == 1 and (folders[0] / "cache.json").is_file()
    assert (tmp_path / "student" / "model.safetensors").is_file()
    # a second student on the same examples reads the same cache: nothing is built again
    again = distill_lm(_cfg(teacher_topk=8), teacher_dir, data_dir, tmp_path / "student2", tmp_path / "pruned2",
                       cache_root=tmp_path / "cache")
    assert again["teacher_cache"]["path"] == cache["path"] and len(list((tmp_path / "cache").iterdir())) == 1


def test_alpha_zero_fine_tunes_on_the_answers_without_a_teacher(tmp_path, teacher_dir, data_dir):
    rec = distill_lm(_cfg(kd=LMKDConfig(alpha=0.0)), teacher_dir, data_dir, tmp_path / "student",
                     tmp_path / "pruned")
    assert rec["teacher_outputs"].startswith("none") and rec["teacher_cache"] is None
    assert rec["history"] and rec["best_validation_loss"] > 0


def test_live_teacher_is_the_default(tmp_path, teacher_dir, data_dir):
    rec = distill_lm(_cfg(), teacher_dir, data_dir, tmp_path / "student", tmp_path / "pruned")
    assert rec["teacher_outputs"] == "live teacher at every step" and rec["teacher_cache"] is None


def test_chunked_cross_entropy_is_the_alpha_zero_kd_loss():
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    student, teacher = tiny_llama(layers=1, seed=1), tiny_llama(layers=2, seed=2)
    rows = [tokenize_example(tok, PromptExample(f"say {w}", "user", w, response=f"the {w} again"), 48, 256)
            for w in WORDS[:3]]
    batch = collate(rows, tok.pad_token_id or 0)
    targets = next_token_targets(batch["labels"])
    s_hidden = final_hidden_states(student, batch["input_ids"], batch["attention_mask"])
    t_hidden = final_hidden_states(teacher, batch["input_ids"], batch["attention_mask"])
    ce = cross_entropy_chunked(s_hidden, lm_head(student), targets, chunk_size=5)
    via_kd = kd_loss_chunked(s_hidden, lm_head(student), t_hidden, lm_head(teacher), targets, LMKDConfig(alpha=0.0))
    assert ce.item() == pytest.approx(via_kd.item(), rel=1e-5) and ce.item() > 0
    ce.backward()
    assert student.get_output_embeddings().weight.grad.abs().sum() > 0


@pytest.mark.parametrize("kw, needle", [
    ({"teacher_topk": -1}, "--teacher-topk must be 0"),
    ({"teacher_topk": 8, "on_policy_fraction": 0.5}, "need the live teacher"),
    ({"teacher_topk": 8, "kd": LMKDConfig(temperature=2.0)}, "--kd-temperature 1"),
])
def test_top_k_settings_that_cannot_work_are_refused(kw, needle):
    with pytest.raises(UserError, match=needle):
        _cfg(**kw)


def test_a_shrunk_student_is_narrower_random_init_and_trains(tmp_path, teacher_dir, data_dir):
    rec = distill_lm(_cfg(student_shape="layers=2,hidden=16,heads=2,intermediate=32"), teacher_dir, data_dir,
                     tmp_path / "student", tmp_path / "pruned")
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]) == (16, 2, 2)
    assert rec["layers"] == 2 and rec["student_layers"] is None and "random init" in rec["student_origin"]
    assert json.loads((tmp_path / "pruned" / "pruned.json").read_text())["rule"] == rec["student_layers_rule"]


def test_the_users_own_student_trains_when_it_reads_the_teachers_tokens(tmp_path, teacher_dir, data_dir):
    own = save_lm(tmp_path / "own", tiny_llama(layers=1, hidden=16, seed=3))
    rec = distill_lm(_cfg(student=str(own)), teacher_dir, data_dir, tmp_path / "student", tmp_path / "pruned")
    assert rec["layers"] == 1 and rec["student_origin"] == f"the user's student {own}"


def test_student_checks_refuse_other_token_ids_and_encoders_and_bad_shapes(tmp_path, teacher_dir):
    from transformers import AutoConfig, AutoTokenizer

    from compresskit.tasks.causal_lm.distill import check_student

    config, tok = AutoConfig.from_pretrained(teacher_dir), AutoTokenizer.from_pretrained(teacher_dir)
    other = save_lm(tmp_path / "other", tiny_llama(vocab_size=280, layers=1), tiny_tokenizer(280))
    with pytest.raises(UserError, match="different tokenizer from the teacher"):
        check_student(_cfg(student=str(other)), config, tok)
    with pytest.raises(UserError, match="hidden 30 must be divisible by heads 4"):
        check_student(_cfg(student_shape="hidden=30,heads=4"), config, tok)
    with pytest.raises(UserError, match="--student-shape"):
        check_student(_cfg(student_shape="width=3"), config, tok)
    with pytest.raises(UserError, match="not both"):
        _cfg(student=str(other), student_shape="layers=1")
    check_student(_cfg(student_shape="layers=1,hidden=16,heads=2"), config, tok)  # a sensible shape passes
