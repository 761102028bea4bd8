"""LM data: BBC News instructions split by article, prompt files with one-line errors, tokenisation masks."""

from __future__ import annotations

import json

import pytest
from lm_models import tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import prompts as P
from compresskit.tasks.causal_lm.kd_losses import IGNORE_INDEX


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def articles():
    return P.read_bbc_articles()


def test_bbc_articles_have_titles_sections_and_no_duplicates(articles):
    assert {a.section for a in articles} == set(P.SECTIONS)
    assert len({a.id for a in articles}) == len(articles)
    assert len({a.title + a.body for a in articles}) == len(articles)
    first = next(a for a in articles if a.id == "tech/001")
    assert first.title == "Ink helps drive democracy in Asia" and not first.body.startswith(first.title)


def test_split_is_by_article_seeded_and_stratified(articles):
    cfg = P.BBCPromptConfig(seed=3)
    splits = P.split_articles(articles, cfg)
    ids = {s: {a.id for a in arts} for s, arts in splits.items()}
    assert sum(len(v) for v in ids.values()) == len(articles)
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["validation"])
    assert not (ids["validation"] & ids["test"])
    assert all({a.section for a in splits[s]} == set(P.SECTIONS) for s in P.SPLITS)
    assert P.split_articles(articles, cfg) == splits
    assert P.split_articles(articles, P.BBCPromptConfig(seed=4))["test"] != splits["test"]


def test_bbc_prompts_carry_references_and_the_chat_template(tok, articles):
    a = articles[0]
    examples = P.article_prompts(a, tok, P.KINDS, max_words=12)
    assert [e.kind for e in examples] == list(P.KINDS)
    by_kind = {e.kind: e for e in examples}
    assert by_kind["headline"].reference == a.title
    assert by_kind["section"].reference == a.section
    assert by_kind["summary"].reference is None
    assert all(e.source_id == a.id for e in examples)
    prompt = by_kind["headline"].prompt
    assert prompt.startswith("<|im_start|>user\n") and prompt.endswith("<|im_start|>assistant\n")
    assert a.title not in prompt  # the answer is not in the question
    assert " ".join(a.body.split()[:12]) in prompt and " ".join(a.body.split()[:13]) not in prompt


def test_bbc_prompt_splits_keep_articles_apart(tok):
    cfg = P.BBCPromptConfig(kinds=("headline", "section"), max_articles=40, max_article_words=20)
    splits = P.bbc_prompt_splits(tok, cfg)
    ids = {s: {e.source_id for e in exs} for s, exs in splits.items()}
    assert not (ids["train"] & ids["test"]) and not (ids["validation"] & ids["test"])
    assert all(len(exs) == 2 * len(ids[s]) for s, exs in splits.items())


def test_config_reports_all_problems_at_once():
    with pytest.raises(UserError) as e:
        P.BBCPromptConfig(kinds=("poem",), validation_fraction=0.0, max_article_words=1)
    assert all(f in str(e.value) for f in ("--lm-tasks", "--validation-fraction", "--max-article-words"))


def _write(tmp_path, lines):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_prompt_file_reads_the_three_forms(tmp_path, tok):
    path = _write(tmp_path, [
        json.dumps({"prompt": "What is the capital of France?"}),
        "",
        json.dumps({"prompt": "Name a colour.", "response": "Blue."}),
        json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}),
        json.dumps({"messages": [{"role": "user", "content": "Tell me more"}]}),
    ])
    ex = P.read_prompt_file(path, tok)
    assert [e.source_id for e in ex] == [f"data.jsonl line {n}" for n in (1, 3, 4, 5)]
    assert [e.response for e in ex] == [None, "Blue.", "Hello!", None]
    assert ex[0].prompt == "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert ex[2].prompt == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


@pytest.mark.parametrize("bad, message", [
    ('{"prompt": "x"', "data.jsonl line 2: not valid JSON"),
    ('{"text": "x"}', "data.jsonl line 2: has none of the fields prompt, messages"),
    ('["x"]', "data.jsonl line 2: not a JSON object"),
    ('{"prompt": ""}', "data.jsonl line 2: prompt must be a non-empty string"),
    ('{"prompt": "x", "response": 3}', "data.jsonl line 2: response must be a non-empty string"),
    ('{"messages": [{"role": "user"}]}', "data.jsonl line 2: messages must be a non-empty list"),
    ('{"messages": [{"role": "assistant", "content": "x"}]}', "data.jsonl line 2: messages hold only an assistant"),
])
def test_prompt_file_errors_name_file_and_line(tmp_path, tok, bad, message):
    path = _write(tmp_path, [json.dumps({"prompt": "fine"}), bad])
    with pytest.raises(UserError) as e:
        P.read_prompt_file(path, tok)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_empty_files_are_refused(tmp_path, tok):
    empty = tmp_path / "data.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(UserError, match="is empty"):
        P.read_prompt_file(empty, tok)
    (tmp_path / "a.txt").write_text("  \n", encoding="utf-8")
    with pytest.raises(UserError, match="a.txt is empty"):
        P.read_text_files([tmp_path / "a.txt"])


def test_messages_need_a_chat_template(tmp_path):
    path = _write(tmp_path, [json.dumps({"messages": [{"role": "user", "content": "x"}]})])
    with pytest.raises(UserError, match="line 1: messages need a chat template"):
        P.read_prompt_file(path, tiny_tokenizer(chat=False))


def test_tokenized_response_is_the_only_label(tok):
    ex = P.PromptExample(P.render_prompt(tok, "Name a colour."), "user", "x line 1", response="Blue.")
    out = P.tokenize_example(tok, ex, max_length=64, context=128)
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    assert out.input_ids[:n_prompt] == tok(ex.prompt, add_special_tokens=False)["input_ids"]
    assert out.labels[:n_prompt] == [IGNORE_INDEX] * n_prompt
    assert out.labels[n_prompt:] == out.input_ids[n_prompt:]
    assert tok.decode(out.input_ids[n_prompt:]) == "Blue.<|im_end|>"  # the student learns to stop


def test_end_of_turn_without_template_is_eos():
    plain = tiny_tokenizer(chat=False)
    assert P.end_of_turn(plain) == plain.eos_token
    assert P.end_of_turn(tiny_tokenizer()) == "<|im_end|>"


def test_long_prompts_are_refused_naming_the_example(tok):
    ex = P.PromptExample(P.render_prompt(tok, "the market rose " * 40), "user", "data.jsonl line 7", response="ok")
    with pytest.raises(UserError, match=r"^data.jsonl line 7: the prompt is \d+ tokens, longer than the model's "
                                        r"context of 32"):
        P.tokenize_example(tok, ex, max_length=16, context=32)
    with pytest.raises(UserError, match="data.jsonl line 7: .* no room for the answer within --max-length 16"):
        P.tokenize_example(tok, ex, max_length=16, context=10_000)
    # a response that does not fit is cut, the prompt kept whole
    n_prompt = len(tok(ex.prompt, add_special_tokens=False)["input_ids"])
    out = P.tokenize_example(tok, ex, max_length=n_prompt + 1, context=10_000)
    assert len(out.input_ids) == n_prompt + 1 and out.labels[-1] != IGNORE_INDEX


def test_text_windows_and_collate(tok):
    windows = P.text_windows(tok, ["the team won the cup final after a late goal", "the market"], window=4)
    assert all(2 <= len(w.input_ids) <= 4 and w.labels == w.input_ids for w in windows)
    ids = tok("the team won the cup final after a late goal")["input_ids"]
    assert [t for w in windows if w.source_id.startswith("text 0") for t in w.input_ids] == ids
    assert len(P.text_windows(tok, ["the team won the cup final after a late goal"], 4, max_windows_per_text=1)) == 1
    batch = P.collate(windows[:3], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    for r, w in enumerate(windows[:3]):
        n = len(w.input_ids)
        assert batch["attention_mask"][r].sum() == n
        assert (batch["labels"][r, n:] == IGNORE_INDEX).all()
