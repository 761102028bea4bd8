"""A student LLM from its teacher: which decoder blocks to keep, copying them, or a narrower random model.

Which blocks a depth-pruned student keeps matters more than anything else about it before training: on
SmolLM2-135M (30 blocks) keeping 20 chosen by block influence gives an untrained perplexity of 171, keeping blocks
0–14 and 25–29 gives 9,763 (MEASUREMENTS.md). Block influence (Men et al. 2024, "ShortGPT") of block l is the
mean over real tokens of 1 − cos(h_l, h_{l+1}), its input against its output: a block that barely turns the
residual stream can go.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from typing import Any

import torch

from compresskit.artifacts import UserError
from compresskit.models import find_blocks, layer_count, per_layer_fields, prune_layers


@dataclass(frozen=True)
class LayerChoice:
    """Which teacher blocks a student keeps, and why (for the stage record)."""

    layers: tuple[int, ...]
    """Kept teacher block indices, ascending: student block j starts as teacher block ``layers[j]``."""
    rule: str
    """How they were chosen, in words."""
    importance: tuple[float, ...] | None = None
    """Block influence per teacher block, when the choice used it."""


# ---------------------------------------------------------------------------------------------------------------
# Model anatomy


def decoder_blocks(model: Any) -> tuple[str, torch.nn.ModuleList]:
    """The qualified name and the list of a causal LM's decoder blocks, found from the model itself
    (``models.find_blocks``): ``model.layers`` in Llama or Qwen2, ``transformer.h`` in GPT-2, ``gpt_neox.layers``,
    ``model.decoder.layers`` in OPT…"""
    found = find_blocks(model)
    if found is None:
        raise UserError(f"cannot find the decoder blocks of a {type(model).__name__}: no list of "
                        f"{layer_count(model.config)} blocks (its blocks share their weights?); depth pruning needs "
                        "one module per block")
    return found


# ---------------------------------------------------------------------------------------------------------------
# Block influence


def influence_sums(hidden_states: list[torch.Tensor], attention_mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Sum over real tokens of 1 − cos(h_l, h_{l+1}) per block, and the number of tokens.

    ``hidden_states``: n + 1 tensors ``(B, L, H)``, block l reading ``hidden_states[l]`` and writing
    ``hidden_states[l + 1]``; ``attention_mask`` ``(B, L)``, 0 at padding. Returns ``(n,)`` float64 sums and the
    token count, so batches add up before one division.
    """
    keep = attention_mask.bool()
    sums = []
    for a, b in itertools.pairwise(hidden_states):
        cos = torch.nn.functional.cosine_similarity(a[keep].double(), b[keep].double(), dim=-1)
        sums.append((1.0 - cos).sum())
    return torch.stack(sums), int(keep.sum())


@torch.no_grad()
def block_hidden_states(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> list[torch.Tensor]:
    """Each decoder block's input and output, n + 1 tensors ``(B, L, H)``, from one forward pass, caught with hooks
    on the blocks themselves.

    Not transformers' ``hidden_states``: it ends with the *normed* output of the last block (what the LM head reads),
    and the cosine against that would measure the final norm's per-channel gain as well (on SmolLM2, 16 BBC
    articles × 256 tokens, the last block scored 0.976 that way and 0.229 on its own output; the ten lowest blocks
    are the same but one: 3, 6, 12–17, 25, 26 against MEASUREMENTS.md's 3, 5, 12–17, 25, 26, on other articles).
    Hooks also work whatever a family calls its final norm, and whether a block returns a tensor or a tuple.
    """
    _, blocks = decoder_blocks(model)
    caught: list[torch.Tensor] = []

    def first(x: Any) -> torch.Tensor:
        return x[0] if isinstance(x, (tuple, list)) else x

    def on_input(_m: Any, args: tuple, kwargs: dict) -> None:
        if not caught:
            caught.append(first(args) if args else kwargs["hidden_states"])

    def on_output(_m: Any, _args: Any, out: Any) -> None:
        caught.append(first(out))

    handles = [blocks[0].register_forward_pre_hook(on_input, with_kwargs=True)]
    handles += [b.register_forward_hook(on_output) for b in blocks]
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return caught


def block_influence(model: Any, batches: list[dict[str, torch.Tensor]]) -> tuple[float, ...]:
    """Block influence of each decoder block on calibration batches (``prompts.collate`` output: ``input_ids``,
    ``attention_mask`` ``(B, L)``): mean over all real tokens of 1 − cos(block input, block output), ``(n,)``."""
    total, tokens = None, 0
    for batch in batches:
        hidden = block_hidden_states(model, batch["input_ids"], batch["attention_mask"])
        sums, n = influence_sums(hidden, batch["attention_mask"])
        total, tokens = (sums if total is None else total + sums), tokens + n
    if not tokens:
        raise UserError("block influence needs calibration text with at least one token")
    return tuple(float(v) for v in total / tokens)


# ---------------------------------------------------------------------------------------------------------------
# Choosing blocks


def _check_depth(n: int, depth: int) -> None:
    if not 1 <= depth <= n:
        raise UserError(f"--student-depth must be between 1 and the teacher's {n} layers, got {depth}")


def choose_layers(importance: tuple[float, ...] | list[float], depth: int) -> LayerChoice:
    """The ``depth`` blocks of highest influence, ascending (ties keep the lower index)."""
    n = len(importance)
    _check_depth(n, depth)
    ranked = sorted(range(n), key=lambda i: (-importance[i], i))
    kept = tuple(sorted(ranked[:depth]))
    dropped = sorted(set(range(n)) - set(kept))
    return LayerChoice(kept, f"block influence: kept the {depth} of {n} layers that change the hidden state most "
                             f"(1 - cos of block input and output); dropped {dropped}",
                       tuple(float(v) for v in importance))


def uniform_layers(n: int, depth: int) -> LayerChoice:
    """``depth`` blocks spread evenly from the first to the last (round half up): 30 → 10 keeps
    0, 3, 6, 10, 13, 16, 19, 23, 26, 29."""
    _check_depth(n, depth)
    if depth == 1:
        return LayerChoice((0,), f"uniform: 1 of {n} layers, the first")
    # round(i * (n-1) / (depth-1)) in integers: no float error, ties go up
    kept = tuple((2 * i * (n - 1) + depth - 1) // (2 * (depth - 1)) for i in range(depth))
    return LayerChoice(kept, f"uniform: {depth} of {n} layers spread evenly from the first to the last")


# ---------------------------------------------------------------------------------------------------------------
# Building students


def _check_layers(layers: list[int] | tuple[int, ...], n: int) -> list[int]:
    kept = sorted(set(layers))
    if not kept or len(kept) != len(layers) or not all(0 <= i < n for i in kept):
        raise UserError(f"--student-layers must name distinct layers among 0..{n - 1}, got {list(layers)}")
    return kept


def student_from_layers(teacher: Any, layers: list[int] | tuple[int, ...]) -> Any:
    """A copy of ``teacher`` keeping the decoder blocks ``layers`` (ascending), in eval mode (``models.prune_layers``,
    shared with the encoders): the blocks found from the model itself, per-layer config fields re-indexed."""
    kept = _check_layers(layers, layer_count(teacher.config))
    decoder_blocks(teacher)  # a decoder without a list of blocks is refused here, in words about decoders
    return prune_layers(teacher, kept)


def shrunk_student(teacher_config: Any, hidden: int, layers: int, heads: int, intermediate: int,
                   kv_heads: int | None = None, seed: int = 0) -> Any:
    """A narrower, randomly initialised causal LM of the teacher's family and vocabulary, in eval mode.

    Llama-like configs (``hidden_size``, ``num_attention_heads``, ``num_key_value_heads``, ``intermediate_size``)
    and GPT-2. ``kv_heads`` defaults to keeping the teacher's query-per-KV-head ratio where it divides ``heads``.
    """
    from transformers import AutoModelForCausalLM

    gpt2 = hasattr(teacher_config, "n_embd")
    if not gpt2 and not all(hasattr(teacher_config, a) for a in ("hidden_size", "num_attention_heads",
                                                                 "intermediate_size")):
        raise UserError(f"a shrunk student of a {type(teacher_config).__name__} is not supported (Llama-, Qwen2- and "
                        "GPT-2-like models are)")
    if kv_heads is None:
        ratio = teacher_config.num_attention_heads // (getattr(teacher_config, "num_key_value_heads", None)
                                                       or teacher_config.num_attention_heads)
        kv_heads = heads // ratio if not gpt2 and ratio >= 1 and heads % ratio == 0 else heads
    problems = [f"{flag} must be a positive integer, got {v}" for flag, v in
                (("hidden", hidden), ("layers", layers), ("heads", heads),
                 ("intermediate", intermediate), ("kv_heads", kv_heads)) if v < 1]
    if not problems:
        if hidden % heads:
            problems.append(f"hidden {hidden} must be divisible by heads {heads}")
        elif not gpt2 and (hidden // heads) % 2:
            problems.append(f"hidden / heads = {hidden // heads} must be even (rotary halves)")
        if heads % kv_heads:
            problems.append(f"heads {heads} must be divisible by kv_heads {kv_heads}")
    if problems:
        raise UserError("; ".join(problems))
    n, per_layer = layer_count(teacher_config), per_layer_fields(teacher_config)
    config = copy.deepcopy(teacher_config)
    if gpt2:
        config.n_embd, config.n_layer, config.n_head, config.n_inner = hidden, layers, heads, intermediate
    else:
        config.hidden_size, config.num_hidden_layers = hidden, layers
        config.num_attention_heads, config.intermediate_size = heads, intermediate
        if hasattr(config, "num_key_value_heads"):
            config.num_key_value_heads = kv_heads
        if getattr(config, "head_dim", None) is not None:
            config.head_dim = hidden // heads
        for attr in per_layer:  # the teacher's attention kinds, sampled as a uniform depth cut would
            value = getattr(config, attr)
            setattr(config, attr, [value[i] for i in uniform_layers(n, min(layers, n)).layers]
                    + [value[-1]] * max(0, layers - n))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config).eval()
