"""Tiny causal LMs and a tiny byte-level BPE tokenizer with a chat template, built in code (no hub, fixed seeds).

Imported by the ``tests/test_lm_*.py`` files; not a conftest, so the classifier tests' fixtures stay as they are.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import torch

# ChatML, as SmolLM2 and Qwen2 use it, without a default system turn
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CORPUS = [
    "the market rose as the bank cut its rate and shares in the firm gained",
    "the team won the cup final after a late goal from their young player",
    "the minister said the government would publish the bill on tuesday",
    "the film won an award and the singer released a new album this week",
    "the company launched a phone with a faster chip and a new software update",
    "what is the capital of france ? paris is the capital of france .",
    "summarise this news article in one sentence . write a headline for this news article .",
    "which section does this article belong to : business , entertainment , politics , sport or tech ?",
]


@cache
def _tokenizer_json(vocab_size: int) -> str:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|im_start|>",
                                                                         "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return tok.to_str()


def tiny_tokenizer(vocab_size: int = 300, chat: bool = True):
    """A byte-level BPE tokenizer (any text encodes, decoding round-trips) trained on ``CORPUS``; ``chat`` gives it
    a ChatML template with ``<|im_end|>`` as end of sequence, as the SmolLM2 teacher has."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(_tokenizer_json(vocab_size)),
                                  eos_token="<|im_end|>" if chat else "<|endoftext|>", pad_token="<|endoftext|>",
                                  bos_token="<|im_start|>" if chat else "<|endoftext|>")
    if chat:
        tok.chat_template = CHAT_TEMPLATE
    return tok


def tiny_llama(vocab_size: int = 300, layers: int = 2, hidden: int = 32, seed: int = 0, tie: bool = False,
               max_positions: int = 128):
    """A random Llama (4 heads, 2 KV heads), in eval mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=max_positions, tie_word_embeddings=tie, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(vocab_size: int = 300, layers: int = 3, hidden: int = 32, seed: int = 0):
    """A random Qwen2 with tied embeddings and per-layer ``layer_types`` (the last layer sliding-window)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=128, tie_word_embeddings=True, use_sliding_window=True,
                         sliding_window=16, max_window_layers=layers - 1, pad_token_id=0)
    return Qwen2ForCausalLM(config).eval()


def tiny_gpt2(vocab_size: int = 300, layers: int = 2, hidden: int = 32, seed: int = 0):
    """A random GPT-2 (2 heads; tied embeddings, as GPT-2 has)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=vocab_size, n_layer=layers, n_embd=hidden, n_head=2, n_positions=128,
                        bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return GPT2LMHeadModel(config).eval()


def save_lm(folder: Path, model, tokenizer=None) -> Path:
    """Save a model (safetensors) and its tokenizer as a model folder."""
    model.save_pretrained(folder)
    (tokenizer if tokenizer is not None else tiny_tokenizer(model.config.vocab_size)).save_pretrained(folder)
    return folder
