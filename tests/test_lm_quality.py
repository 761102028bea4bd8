"""Quality measures for student LLMs: perplexity, top-1 agreement, ROUGE-L, section choice, greedy answers, CIs."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from lm_models import CORPUS, tiny_gpt2, tiny_llama, tiny_tokenizer

from compresskit import stats
from compresskit.tasks.causal_lm import quality as Q
from compresskit.tasks.causal_lm.prompts import SECTIONS, TokenizedExample, render_prompt, text_windows


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def windows(tok):
    return text_windows(tok, CORPUS[:4], window=8)


def test_rouge_l_matches_hand_computed_values():
    assert Q.rouge_l_f1("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # LCS "a c" = 2 of 3 and of 4 tokens: P = 2/3, R = 2/4
    assert Q.rouge_l_f1("a b c", "a x c y") == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))
    assert Q.rouge_l_f1("Paris, France.", "paris france") == 1.0
    assert Q.rouge_l_f1("", "anything") == 0.0 and Q.rouge_l_f1("x y", "z") == 0.0


def test_perplexity_is_token_weighted_and_padding_free(tok, windows):
    model = tiny_llama()
    one = Q.perplexity(model, windows, tok.pad_token_id, batch_size=1)
    many = Q.perplexity(model, windows, tok.pad_token_id, batch_size=5)
    assert one.value == pytest.approx(many.value, rel=1e-5) and one.tokens == many.tokens
    # the same as transformers' own loss, summed window by window
    nll = 0.0
    for w in windows:
        ids = torch.tensor([w.input_ids])
        with torch.no_grad():
            nll += model(input_ids=ids, labels=ids).loss.item() * (len(w.input_ids) - 1)
    assert one.tokens == sum(len(w.input_ids) - 1 for w in windows)
    assert one.value == pytest.approx(math.exp(nll / one.tokens), rel=1e-5)
    assert len(one.per_example) == len(windows)


def test_uniform_model_has_perplexity_of_its_vocabulary(tok, windows):
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight.zero_()
    assert Q.perplexity(model, windows, tok.pad_token_id).value == pytest.approx(300, rel=1e-6)


def test_top1_agreement_counts_only_labelled_positions(tok, windows):
    teacher, student = tiny_llama(), copy.deepcopy(tiny_llama())
    torch.manual_seed(1)
    with torch.no_grad():  # a student close to the teacher, so that they agree sometimes
        student.lm_head.weight.add_(0.02 * torch.randn_like(student.lm_head.weight))
    assert Q.top1_agreement(teacher, teacher, windows, tok.pad_token_id).rate == 1.0
    # only the answer part of each sequence counts: mask the first 3 labels
    masked = [TokenizedExample(w.input_ids, [-100 if i < 3 else t for i, t in enumerate(w.labels)], w.source_id)
              for w in windows]
    got = Q.top1_agreement(student, teacher, masked, tok.pad_token_id, batch_size=3, chunk=5)
    agree = total = 0
    for w in masked:
        ids = torch.tensor([w.input_ids])
        with torch.no_grad():
            a, b = student(ids).logits[0].argmax(-1), teacher(ids).logits[0].argmax(-1)
        positions = [t for t in range(len(w.labels) - 1) if w.labels[t + 1] != -100]
        agree += sum(int(a[t] == b[t]) for t in positions)
        total += len(positions)
    assert (got.agree, got.total) == (agree, total) and 0 < got.rate < 1


def test_section_choice_scores_are_continuation_logprobs(tok):
    model = tiny_gpt2()
    prompt = render_prompt(tok, "Which section? the team won the cup")
    choices, scores = Q.section_choice(model, tok, [prompt])
    assert scores.shape == (1, len(SECTIONS)) and choices[0] == SECTIONS[int(scores[0].argmax())]
    head = tok(prompt, add_special_tokens=False)["input_ids"]
    for j, name in enumerate(SECTIONS):
        cand = tok(name, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([head + cand])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0], -1)
        expected = sum(logp[len(head) - 1 + i, t].item() for i, t in enumerate(cand))
        assert scores[0, j] == pytest.approx(expected, rel=1e-4)


def test_greedy_generate_is_the_argmax_path_and_bounded(tok):
    model = tiny_llama()
    prompt = render_prompt(tok, "What is the capital of France?")
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    for _ in range(6):  # the greedy path by hand
        with torch.no_grad():
            nxt = int(model(torch.tensor([ids])).logits[0, -1].argmax())
        ids.append(nxt)
        if nxt == tok.eos_token_id:
            break
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    expected = tok.decode(ids[n_prompt:], skip_special_tokens=True).strip()
    assert Q.greedy_generate(model, tok, [prompt], max_new_tokens=6) == [expected]


def test_paired_difference_uses_stats_for_binary_scores():
    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 2, 50), rng.integers(0, 2, 50)
    r = Q.paired_difference(a, b, seed=3)
    ref = stats.paired_bootstrap_diff(a, b, seed=3)
    assert (r["diff"], r["low"], r["high"]) == (ref["diff"], ref["low"], ref["high"])


def test_paired_difference_of_continuous_scores():
    rng = np.random.default_rng(1)
    teacher = rng.uniform(0, 1, 200)
    student = teacher - 0.1 + rng.normal(0, 0.01, 200)
    r = Q.paired_difference(student, teacher)
    assert r["diff"] == pytest.approx(student.mean() - teacher.mean())
    assert r["low"] < r["diff"] < r["high"] < 0  # a reliable loss of about 0.1
    assert r["high"] - r["low"] < 0.01  # pairing cancels the large per-example spread
    same = Q.paired_difference(teacher, teacher)
    assert same == {"diff": 0.0, "low": 0.0, "high": 0.0}
    with pytest.raises(ValueError, match="same examples"):
        Q.paired_difference(teacher, teacher[:10])


def test_section_of_answer():
    assert Q.section_of_answer("Sports.") == "sport" and Q.section_of_answer("It is Tech news") == "tech"
    assert Q.section_of_answer("no idea") is None


def _post_processed_lm(family: str):
    """A random Gemma 2 with a soft cap of 0.5, or a Granite whose logits are divided by ``logits_scaling`` 8; head
    weights × 20, so that the linear logits reach a few units and the cap or the scale changes the perplexity."""
    import transformers

    torch.manual_seed(0)
    dims = {"vocab_size": 300, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "pad_token_id": 0, "bos_token_id": 1,
            "eos_token_id": 2}
    if family == "gemma2":
        model = transformers.Gemma2ForCausalLM(transformers.Gemma2Config(**dims, head_dim=8,
                                                                         final_logit_softcapping=0.5))
    else:
        model = transformers.GraniteForCausalLM(transformers.GraniteConfig(**dims, logits_scaling=8.0))
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(20)
    return model.eval()


@pytest.mark.parametrize("family", ["gemma2", "granite"])
def test_perplexity_of_capped_and_scaled_models_is_that_of_their_own_logits(tok, windows, family):
    model = _post_processed_lm(family)
    got = Q.perplexity(model, windows, tok.pad_token_id, batch_size=3)
    nll, tokens, plain_nll = 0.0, 0, 0.0
    head = model.get_output_embeddings().weight
    for w in windows:
        ids = torch.tensor([w.input_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
            linear = model.model(input_ids=ids).last_hidden_state[0, :-1] @ head.T
        nll -= torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).sum().item()
        plain_nll -= torch.log_softmax(linear, -1).gather(-1, ids[0, 1:, None]).sum().item()
        tokens += len(w.input_ids) - 1
    assert got.tokens == tokens
    assert got.value == pytest.approx(math.exp(nll / tokens), rel=1e-5)
    # a head without the cap or the scale would report another perplexity, far from this one
    assert abs(math.exp(plain_nll / tokens) - got.value) > 0.2 * got.value
