"""Batched greedy answers from a causal LM: how the teacher writes its answers once, before distillation.

One prompt at a time (``quality.greedy_generate``) is exact but leaves most of a CPU's matrix units idle during
decoding; a left-padded batch decodes ``batch_size`` answers for little more than the time of one. Left padding
keeps every prompt's last token at the same position, so the first generated token of each row follows its own
prompt; the attention mask hides the padding, and positions are derived from the mask by transformers.
"""

from __future__ import annotations

from typing import Any

import torch


def generate_responses(model: Any, tokenizer: Any, prompts: list[str], max_new_tokens: int, batch_size: int = 16
                       ) -> list[str]:
    """Greedy answers to rendered prompts, at most ``max_new_tokens`` tokens each, stopped at the end-of-sequence
    token, decoded without special tokens and stripped, in the order of ``prompts`` (see ``greedy_from_ids``)."""
    templated = bool(getattr(tokenizer, "chat_template", None))
    # the template already wrote BOS where the model expects it; a second one would shift every position
    encoded = [tokenizer(p, add_special_tokens=not templated)["input_ids"] for p in prompts]
    return greedy_from_ids(model, tokenizer, encoded, max_new_tokens, batch_size)


@torch.no_grad()
def greedy_from_ids(model: Any, tokenizer: Any, prompts: list[list[int]], max_new_tokens: int, batch_size: int = 16
                    ) -> list[str]:
    """Greedy answers to prompts given as token ids, batched by length (similar lengths together, less padding),
    left-padded, on the model's device; what follows the end-of-sequence token is dropped. In the order given."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    answers: dict[int, str] = {}
    device = next(model.parameters()).device
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        width = max(len(prompts[i]) for i in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
            mask[r, width - len(prompts[i]):] = 1
        out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                             do_sample=False, temperature=None, top_p=None, top_k=None, eos_token_id=eos,
                             pad_token_id=pad)
        for r, i in enumerate(rows):
            new = out[r, width:].tolist()
            if eos is not None and eos in new:
                new = new[:new.index(eos)]  # what follows EOS is padding
            answers[i] = tokenizer.decode(new, skip_special_tokens=True).strip()
    return [answers[i] for i in range(len(prompts))]
