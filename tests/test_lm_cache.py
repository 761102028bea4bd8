"""The teacher's top-k cache: exact rows, keyed, memory-mapped, atomic, small."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from lm_models import CORPUS, tiny_llama, tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import kd_losses as K
from compresskit.tasks.causal_lm import topk_cache as C
from compresskit.tasks.causal_lm.prompts import (
    PromptExample,
    TokenizedExample,
    collate,
    render_prompt,
    text_windows,
    tokenize_example,
)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def examples(tok):
    chats = [PromptExample(render_prompt(tok, q), "user", f"q{i}", response=a) for i, (q, a) in
             enumerate([("Name a colour.", "Blue."), ("What is the capital of France?", "Paris is.")])]
    out = [tokenize_example(tok, ex, max_length=40, context=128) for ex in chats]
    return out + text_windows(tok, CORPUS[:3], window=10)


def test_bytes_per_token_and_index_type():
    assert C.index_dtype(49_152) == np.uint16 and C.index_dtype(151_936) == np.int32
    assert C.bytes_per_token(16, 49_152) == 68 and C.bytes_per_token(32, 49_152) == 132
    assert C.bytes_per_token(16, 151_936) == 16 * 6 + 4


def test_cache_rows_equal_the_teachers_top_k(tmp_path, tok, examples):
    teacher = tiny_llama()
    cache = C.teacher_topk(teacher, "tiny", examples, max_length=40, k=5, cache_root=tmp_path,
                           pad_id=tok.pad_token_id, batch_size=3)
    assert len(cache) == len(examples) and isinstance(cache.logprobs, np.memmap)
    assert cache.indices.dtype == np.uint16 and cache.logprobs.dtype == np.float16
    order = [3, 0, 1]
    batch = collate([examples[i] for i in order], tok.pad_token_id)
    targets = K.next_token_targets(batch["labels"])
    mask = targets != K.IGNORE_INDEX
    with torch.no_grad():
        logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    exact = K.topk_from_logits(logits[mask], k=5)
    got = cache.rows(order)
    assert got.indices.shape == (int(mask.sum()), 5)
    assert torch.equal(got.indices, exact.indices)
    torch.testing.assert_close(got.logprobs, exact.logprobs, atol=1e-2, rtol=1e-3)  # float16 on disk
    torch.testing.assert_close(got.other, exact.other)
    # the loss from the cache is the loss from the live teacher, to float16 precision
    student = tiny_llama(seed=1)
    with torch.no_grad():
        s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    cfg = K.LMKDConfig()
    assert K.topk_kd_loss(s_logits, got, targets, cfg).item() == pytest.approx(
        K.topk_kd_loss(s_logits, exact, targets, cfg).item(), rel=1e-3)


def test_cache_is_reused_and_keyed(tmp_path, tok, examples):
    teacher = tiny_llama()
    first = C.teacher_topk(teacher, "tiny", examples, 40, 4, tmp_path, tok.pad_token_id)
    # a finished cache is read, not recomputed: no teacher is needed
    again = C.teacher_topk(None, "tiny", examples, 40, 4, tmp_path, tok.pad_token_id)
    assert again.folder == first.folder
    np.testing.assert_array_equal(again.indices, first.indices)
    keys = {C.cache_key("tiny", examples, 40, 4), C.cache_key("tiny", examples, 40, 8),
            C.cache_key("tiny", examples, 48, 4), C.cache_key("other", examples, 40, 4),
            C.cache_key("tiny", examples[1:], 40, 4)}
    masked = [TokenizedExample(examples[0].input_ids, [-100] * len(examples[0].labels), "x"), *examples[1:]]
    keys.add(C.cache_key("tiny", masked, 40, 4))
    assert len(keys) == 6


def test_only_top_k_is_stored(tmp_path, tok, examples):
    cache = C.teacher_topk(tiny_llama(), "tiny", examples, 40, 3, tmp_path, tok.pad_token_id)
    info = (cache.folder / "cache.json").read_text()
    positions = sum(C.counted_positions(ex) for ex in examples)
    assert f'"positions": {positions}' in info and f'"bytes_per_token": {C.bytes_per_token(3, 300)}' in info
    data = sum(a.nbytes for a in (cache.logprobs, cache.indices, cache.other))
    assert data == positions * C.bytes_per_token(3, 300)
    on_disk = sum(p.stat().st_size for p in cache.folder.iterdir())
    assert on_disk < positions * 300 * 2  # far below float16 logits for every position
    assert sorted(p.name for p in cache.folder.iterdir()) == sorted([*C._FILES, "cache.json"])


def test_a_failed_run_leaves_nothing_read_as_complete(tmp_path, tok, examples):
    bad = TokenizedExample([1, 2, 10_000], [1, 2, 10_000], "bad")  # an id past the vocabulary fails mid-run
    with pytest.raises(IndexError):
        C.teacher_topk(tiny_llama(), "tiny", [examples[0], bad], 40, 4, tmp_path, tok.pad_token_id, batch_size=1)
    assert list(tmp_path.iterdir()) == []
    # what a killed run leaves (a temporary sibling) is never taken for the cache
    key = C.cache_key("tiny", examples, 40, 4)
    stale = tmp_path / f".teacher-topk-{key}.tmp-killed"
    stale.mkdir()
    (stale / "cache.json").write_text("{}")
    cache = C.teacher_topk(tiny_llama(), "tiny", examples, 40, 4, tmp_path, tok.pad_token_id)
    assert cache.folder.name == f"teacher-topk-{key}" and len(cache) == len(examples)


def test_bad_k_and_long_examples_are_refused(tmp_path, tok, examples):
    with pytest.raises(UserError, match="k .top-k. must be between 1 and the teacher's vocabulary of 300"):
        C.teacher_topk(tiny_llama(), "tiny", examples, 40, 301, tmp_path, tok.pad_token_id)
    with pytest.raises(UserError, match="q0: .* more than --max-length 8"):
        C.teacher_topk(tiny_llama(), "tiny", examples, 8, 4, tmp_path, tok.pad_token_id)
    assert list(tmp_path.iterdir()) == []
