"""What "doing the teacher's job" means for a student LLM, measured: perplexity, agreement with the teacher, and
task scores on BBC News prompts, each with a per-example value for a paired bootstrap against the teacher.

- ``perplexity``: exp of the token-weighted mean negative log-likelihood over held-out windows.
- ``top1_agreement``: on given token sequences (teacher-forced), how often the student's most likely next token
  is the teacher's.
- ``rouge_l_f1``: longest-common-subsequence F1 of a generated headline against the real title.
- ``section_choice``: the section whose name the model finds most likely after the prompt.
- ``greedy_generate``: the teacher's (or student's) answers, for headlines and summaries.
- ``paired_difference``: a 95 % paired bootstrap interval of student − teacher per-example scores.

Every pass over a model computes logits ``chunk`` positions at a time from the final hidden states, so memory does
not grow with sequence × vocabulary (49,152 for the SmolLM2 teacher).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from compresskit.tasks.causal_lm.kd_losses import IGNORE_INDEX, final_hidden_states, lm_head, next_token_targets
from compresskit.tasks.causal_lm.prompts import SECTIONS, TokenizedExample, collate


@dataclass(frozen=True)
class Perplexity:
    """Perplexity on a set of windows, and what it is made of."""

    value: float
    """exp(nll / tokens)."""
    nll: float
    """Summed negative log-likelihood (nats) of the predicted tokens."""
    tokens: int
    """Predicted tokens (each window's first token has no prediction)."""
    per_example: tuple[float, ...]
    """Mean NLL per window, for a paired comparison."""


@dataclass(frozen=True)
class Agreement:
    """Teacher-forced next-token top-1 agreement of a student with its teacher."""

    rate: float
    """agree / total."""
    agree: int
    total: int
    per_example: tuple[float, ...]
    """Agreement rate per sequence, for a paired comparison."""


# ---------------------------------------------------------------------------------------------------------------
# Teacher-forced passes


def _batches(examples: list[TokenizedExample], batch_size: int, pad_id: int):
    for s in range(0, len(examples), batch_size):
        yield s, collate(examples[s:s + batch_size], pad_id)


@torch.no_grad()
def target_logprobs(model: Any, batch: dict[str, torch.Tensor], chunk: int = 256) -> torch.Tensor:
    """log P(next token) at every position whose target counts, 0 elsewhere: ``(B, L)`` from a ``collate`` batch
    (``input_ids``, ``attention_mask``, ``labels`` ``(B, L)``)."""
    hidden = final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
    head = lm_head(model)
    targets = next_token_targets(batch["labels"])
    keep = (targets != IGNORE_INDEX).reshape(-1)
    rows, ys = hidden.reshape(-1, hidden.shape[-1])[keep], targets.reshape(-1)[keep]
    out = torch.zeros(keep.shape[0], dtype=torch.float64)
    parts = [F.log_softmax(head.logits(rows[s:s + chunk]).float(), -1).gather(-1, ys[s:s + chunk, None])[:, 0]
             for s in range(0, rows.shape[0], chunk)]
    if parts:
        out[keep] = torch.cat(parts).double()
    return out.reshape(targets.shape)


def perplexity(model: Any, examples: list[TokenizedExample], pad_id: int, batch_size: int = 4) -> Perplexity:
    """Token-weighted perplexity over ``examples`` (``prompts.text_windows``: every token a label), each window
    scored on its own: a window's first token is context only."""
    nll, tokens, per = 0.0, 0, []
    for _, batch in _batches(examples, batch_size, pad_id):
        logp = target_logprobs(model, batch)
        counts = (next_token_targets(batch["labels"]) != IGNORE_INDEX).sum(-1)
        sums = -logp.sum(-1)
        nll, tokens = nll + float(sums.sum()), tokens + int(counts.sum())
        per += [float(s / c) if c else float("nan") for s, c in zip(sums, counts)]
    if not tokens:
        raise ValueError("perplexity needs at least one window of 2 or more tokens")
    return Perplexity(math.exp(nll / tokens), nll, tokens, tuple(per))


@torch.no_grad()
def _argmax_next(model: Any, batch: dict[str, torch.Tensor], keep: torch.Tensor, chunk: int) -> torch.Tensor:
    """The model's most likely next token at the ``keep`` ``(B, L)`` positions, as a flat ``(N,)`` vector."""
    hidden = final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
    rows, head = hidden[keep], lm_head(model)
    if not rows.shape[0]:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([head.logits(rows[s:s + chunk]).argmax(-1) for s in range(0, rows.shape[0], chunk)])


def top1_agreement(student: Any, teacher: Any, examples: list[TokenizedExample], pad_id: int,
                   batch_size: int = 4, chunk: int = 256) -> Agreement:
    """How often the student's top-1 next token equals the teacher's, both reading the same given tokens, over
    the positions whose label counts (``IGNORE_INDEX`` labels — prompt, padding — excluded)."""
    agree, total, per = 0, 0, []
    for _, batch in _batches(examples, batch_size, pad_id):
        keep = next_token_targets(batch["labels"]) != IGNORE_INDEX
        same = _argmax_next(student, batch, keep, chunk) == _argmax_next(teacher, batch, keep, chunk)
        counts = keep.sum(-1).tolist()
        agree, total = agree + int(same.sum()), total + int(same.numel())
        for piece, c in zip(torch.split(same, counts), counts):
            per.append(float(piece.float().mean()) if c else float("nan"))
    if not total:
        raise ValueError("top-1 agreement needs at least one position with a label")
    return Agreement(agree / total, agree, total, tuple(per))


# ---------------------------------------------------------------------------------------------------------------
# Task scores


def _rouge_tokens(text: str) -> list[str]:
    """Lower-cased whitespace tokens with surrounding punctuation stripped ("Paris." and "paris" match)."""
    return [t for t in (w.strip(".,;:!?\"'()[]{}«»“”‘’…-") for w in text.lower().split()) if t]


def _lcs(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, O(len(a) · len(b)) time and O(len(b)) memory."""
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_f1(candidate: str, reference: str) -> float:
    """ROUGE-L F1 (Lin 2004, β = 1): LCS of the two token lists over their lengths; 0 when either is empty."""
    c, r = _rouge_tokens(candidate), _rouge_tokens(reference)
    lcs = _lcs(c, r)
    if not lcs:
        return 0.0
    precision, recall = lcs / len(c), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def _prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    # as prompts.tokenize_example: a chat template has written BOS already
    return tokenizer(prompt, add_special_tokens=not getattr(tokenizer, "chat_template", None))["input_ids"]


def continuation_logprobs(model: Any, tokenizer: Any, prompt: str, candidates: list[str]) -> np.ndarray:
    """Sum of the token log-probabilities of each candidate continuing ``prompt`` (rendered), ``(len(candidates),)``.

    A sum, not a mean per token: it is the probability of the whole answer, though it favours answers of fewer
    tokens ("tech" is one token, "entertainment" may be three).
    """
    head = _prompt_ids(tokenizer, prompt)
    examples = []
    for c in candidates:
        ids = tokenizer(c, add_special_tokens=False)["input_ids"]
        examples.append(TokenizedExample(head + ids, [IGNORE_INDEX] * len(head) + ids, c))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return target_logprobs(model, collate(examples, pad)).sum(-1).numpy()


def section_choice(model: Any, tokenizer: Any, prompts: list[str], candidates: tuple[str, ...] = SECTIONS
                   ) -> tuple[list[str], np.ndarray]:
    """For each rendered prompt, the candidate (section name) of highest log-likelihood, and the scores
    ``(len(prompts), len(candidates))``."""
    scores = np.stack([continuation_logprobs(model, tokenizer, p, list(candidates)) for p in prompts])
    return [candidates[i] for i in scores.argmax(-1)], scores


@torch.no_grad()
def greedy_generate(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int = 48) -> list[str]:
    """Greedy answers to rendered prompts (``prompts.render_prompt``), at most ``max_new_tokens`` each, stopped at
    the end-of-sequence token, special tokens and surrounding white space removed. One prompt at a time: no
    padding to get wrong, and a CPU gains little from batching decode."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    out = []
    for prompt in prompts:
        ids = torch.tensor([_prompt_ids(tokenizer, prompt)])
        generated = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                   do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=eos,
                                   pad_token_id=pad)
        out.append(tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True).strip())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Comparing student and teacher


def paired_difference(student: np.ndarray | list[float], teacher: np.ndarray | list[float], n_boot: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of student − teacher per-example scores ``(n,)`` with a paired percentile bootstrap interval:
    ``diff``, ``low``, ``high``.

    0/1 scores (section right or wrong) go to ``stats.paired_bootstrap_diff``; continuous ones (ROUGE-L, mean NLL,
    agreement rate) get the same interval from ``stats.bootstrap_mean_ci`` of the per-example differences.
    Examples where either score is NaN are dropped.
    """
    from compresskit import stats

    a, b = np.asarray(student, dtype=np.float64), np.asarray(teacher, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"student and teacher must score the same examples, got shapes {a.shape} and {b.shape}")
    ok = ~(np.isnan(a) | np.isnan(b))
    a, b = a[ok], b[ok]
    if not a.size:
        raise ValueError("no example has a score for both models")
    if np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all():
        r = stats.paired_bootstrap_diff(a, b, n_boot=n_boot, confidence=confidence, seed=seed)
        return {"diff": r["diff"], "low": r["low"], "high": r["high"]}
    # resampling the per-example differences draws the same pairs as resampling both columns together
    low, high = stats.bootstrap_mean_ci(a - b, n_boot=n_boot, confidence=confidence, seed=seed)
    return {"diff": float(a.mean() - b.mean()), "low": low, "high": high}


_WORD = re.compile(r"\w+")


def section_of_answer(answer: str, candidates: tuple[str, ...] = SECTIONS) -> str | None:
    """The section a free-text answer names (its first word that is a candidate, "sports" read as "sport"), or
    None: for scoring generated answers, next to the log-likelihood choice."""
    for word in _WORD.findall(answer.lower()):
        word = "sport" if word == "sports" else word
        if word in candidates:
            return word
    return None
