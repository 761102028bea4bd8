"""Tiny random models of every family a user is likely to bring, built in code from transformers' own config
classes (no hub): the encoders a classifier is distilled from and the decoders a student LLM is cut from.

Each is 3 blocks deep, 64 wide with 4 heads of 16 (ONNX Runtime's CPU attention kernel needs heads at least 16
wide), so that pruning to 2 blocks drops one and every per-layer config field has something to re-index. Imported by
``tests/test_families.py``; not a conftest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

HIDDEN, LAYERS, HEADS = 64, 3, 4

_COMMON = dict(vocab_size=300, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_hidden_layers=LAYERS,
               num_attention_heads=HEADS, num_key_value_heads=2, max_position_embeddings=256, pad_token_id=0,
               bos_token_id=1, eos_token_id=2)

DECODERS: dict[str, dict[str, Any]] = {
    # family name (as the README's table names it): transformers model_type and the overrides it needs
    "Llama": {"model_type": "llama"},
    "Mistral": {"model_type": "mistral"},
    "Granite": {"model_type": "granite", "logits_scaling": 4.0},
    "Gemma 3": {"model_type": "gemma3_text", "head_dim": 16},
    "Phi-3": {"model_type": "phi3"},
    "OLMo 2": {"model_type": "olmo2"},
    "GPT-2": {"model_type": "gpt2", "n_layer": LAYERS, "n_embd": HIDDEN, "n_head": HEADS, "n_positions": 256},
    "Qwen2": {"model_type": "qwen2", "tie_word_embeddings": True},
    "Qwen3": {"model_type": "qwen3", "head_dim": 16, "tie_word_embeddings": True},
    "Gemma 2": {"model_type": "gemma2", "head_dim": 16, "final_logit_softcapping": 2.0, "sliding_window": 128},
    "GPT-NeoX (Pythia)": {"model_type": "gpt_neox", "rotary_pct": 1.0},
    "OPT": {"model_type": "opt", "ffn_dim": 2 * HIDDEN, "word_embed_proj_dim": HIDDEN},
}
"""Granite's logit scale and Gemma 2's soft cap are set small enough to change the logits of a random model; Gemma 2's
sliding window (128) is shorter than its context but longer than the tests' prompts, so a builder graph of it needs
a KV cache as long as the window (``onnx_generate.kv_capacity``)."""

ENCODERS: dict[str, dict[str, Any]] = {
    "BERT": {"model_type": "bert"},
    "DistilBERT": {"model_type": "distilbert", "dim": HIDDEN, "n_layers": LAYERS, "n_heads": HEADS,
                   "hidden_dim": 2 * HIDDEN},
    "RoBERTa": {"model_type": "roberta"},
    "XLM-R": {"model_type": "xlm-roberta"},
    "ELECTRA": {"model_type": "electra", "embedding_size": HIDDEN},
    "ALBERT": {"model_type": "albert", "embedding_size": 32},
    "DeBERTa-v2": {"model_type": "deberta-v2"},
    "MPNet": {"model_type": "mpnet"},
    "ModernBERT": {"model_type": "modernbert", "cls_token_id": 3, "sep_token_id": 4, "global_attn_every_n_layers": 2,
                   "local_attention": 8},
}


def config_of(family: dict[str, Any], **extra: Any) -> Any:
    """The family's config at the tiny common size."""
    from transformers import AutoConfig

    kwargs = {**_COMMON, **{k: v for k, v in family.items() if k != "model_type"}, **extra}
    return AutoConfig.for_model(family["model_type"], **kwargs)


def decoder(name: str, seed: int = 0) -> Any:
    """A random causal LM of the family ``name`` (a key of ``DECODERS``), in eval mode."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config_of(DECODERS[name])).eval()


def encoder_classifier(name: str, labels: list[str], vocab_size: int, seed: int = 0) -> Any:
    """A random sequence classifier of the family ``name`` (a key of ``ENCODERS``) with a head over ``labels``."""
    from transformers import AutoModelForSequenceClassification

    config = config_of(ENCODERS[name], vocab_size=vocab_size, num_labels=len(labels),
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    torch.manual_seed(seed)
    return AutoModelForSequenceClassification.from_config(config).eval()


def save_decoder(name: str, folder: Path, seed: int = 0) -> Path:
    """``decoder(name)`` saved with the tiny chat tokenizer of ``lm_models`` as a local model folder."""
    from lm_models import save_lm

    return save_lm(folder, decoder(name, seed))


def slug(name: str) -> str:
    """A test id for a family name: ``GPT-NeoX (Pythia)`` → ``gpt-neox-pythia``."""
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")
