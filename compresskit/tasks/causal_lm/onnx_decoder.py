"""Run a decoder LLM graph with a KV cache (a folder with ``genai_config.json``) on plain ONNX Runtime.

numpy and onnxruntime only: no torch, no transformers, not even indirectly, so what is measured here is what a
deployment without PyTorch runs. The folder is the one ``onnx_build.build_genai`` writes: one graph
that prefills and decodes, its IO names and cache geometry in ``genai_config.json`` (or ``torch_onnx_decoder``'s).

The cache protocol of that graph: ``past_key_values.N.key/value`` of shape (batch, kv_heads, past, head_dim) go in,
``present.N.key/value`` with the new positions appended come out and are fed back at the next step, and
``attention_mask`` covers past + new tokens (the builder's graph derives positions from it; ``position_ids`` is
fed when ``genai_config.json`` names it). Layers with a sliding window keep a fixed-size ring buffer instead
(``genai_config.json`` ``sliding_window``): their past starts as zeros of the window's capacity and keeps that shape.
``torch_onnx_decoder`` folders follow the same protocol, without ring buffers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError

GENAI_CONFIG = "genai_config.json"
_KNOWN_INPUTS = {"input_ids", "attention_mask", "position_ids", "past_key_names", "past_value_names"}
_NUMPY = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
          "tensor(int32)": np.int32}


@dataclass(frozen=True)
class KVCache:
    """The decoder's state after ``length`` tokens: per layer its key then its value tensor, (1, kv_heads, n,
    head_dim), n = ``length`` (or the ring's capacity for a sliding-window layer)."""

    tensors: tuple[np.ndarray, ...]
    length: int


class OnnxDecoder:
    """Prefill, step and greedy decoding of one sequence (batch 1) through a KV-cache decoder graph."""

    def __init__(self, folder: Path, threads: int | None = None, providers: tuple[str, ...] = ("CPUExecutionProvider",)
                 ) -> None:
        """Open ``folder/genai_config.json`` and its graph; ``threads`` sets ONNX Runtime's intra-op threads."""
        import onnxruntime as ort

        self.folder = Path(folder)
        path = self.folder / GENAI_CONFIG
        if not path.is_file():
            raise UserError(f"{self.folder} has no {GENAI_CONFIG}: give a folder made by the ONNX Runtime GenAI "
                            "builder (build_genai)")
        config = json.loads(path.read_text(encoding="utf-8"))["model"]
        decoder = config["decoder"]
        self.config = config
        self.layers: int = decoder["num_hidden_layers"]
        self.kv_heads: int = decoder["num_key_value_heads"]
        self.head_size: int = decoder["head_size"]
        self.context_length: int | None = config.get("context_length")
        inputs, outputs = decoder["inputs"], decoder["outputs"]
        unknown = set(inputs) - _KNOWN_INPUTS
        if unknown:
            raise UserError(f"{path} names inputs this runner does not feed: {', '.join(sorted(unknown))}")
        self._ids, self._mask = inputs["input_ids"], inputs["attention_mask"]
        self._positions = inputs.get("position_ids")
        self._past = [name % i for i in range(self.layers) for name in (inputs["past_key_names"],
                                                                          inputs["past_value_names"])]
        self._present = [name % i for i in range(self.layers) for name in (outputs["present_key_names"],
                                                                            outputs["present_value_names"])]
        self._logits = outputs["logits"]
        window = decoder.get("sliding_window") or {}
        if window.get("slide_key_value_cache") or window.get("slide_inputs"):
            raise UserError(f"{path} asks for a sliding KV cache or sliding inputs, which only ONNX Runtime GenAI's "
                            "runtime implements; rebuild for the cpu execution provider")
        # a sliding-window layer's GroupQueryAttention wants a ring buffer of at least the window from the start
        capacity = window.get("window_size", 0) + window.get("cache_slack", 0)
        self._capacity = {layer: capacity for layer in window.get("layers", [])}

        opts = ort.SessionOptions()
        if threads is not None:
            opts.intra_op_num_threads = threads
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(str(self.folder / decoder["filename"]), sess_options=opts,
                                            providers=list(providers))
        types = {i.name: i for i in self.session.get_inputs()}
        fed = [self._ids, self._mask, *self._past, *([self._positions] if self._positions else [])]
        missing, unfed = [n for n in fed if n not in types], [n for n in types if n not in fed]
        if missing or unfed:
            raise UserError(f"{self.folder / decoder['filename']} does not match its {GENAI_CONFIG}: "
                            f"inputs named but absent: {', '.join(missing) or 'none'}; inputs not named: "
                            f"{', '.join(unfed) or 'none'}")
        self._positions_dtype = _NUMPY[types[self._positions].type] if self._positions else np.int64
        self._ids_dtype = _NUMPY[types[self._ids].type]
        self._mask_dtype = _NUMPY[types[self._mask].type]
        self._cache_dtype = _NUMPY[types[self._past[0]].type]
        dim = types[self._past[0]].shape[3]
        self.cache_dim = dim if isinstance(dim, int) else self.head_size

    def forward(self, ids: np.ndarray, cache: KVCache) -> tuple[np.ndarray, KVCache]:
        """One run of the graph: feed ``ids`` (1, L) int64 after ``cache``; return logits (1, L, V) in float32 and
        the cache after them (a prompt may be prefilled in chunks this way)."""
        ids = _as_ids(ids)
        total = cache.length + ids.shape[1]
        if self.context_length and total > self.context_length:
            raise UserError(f"{total} tokens exceed the model's context of {self.context_length}")
        feed: dict[str, Any] = {self._ids: ids.astype(self._ids_dtype),
                                self._mask: np.ones((1, total), dtype=self._mask_dtype)}
        if self._positions:
            feed[self._positions] = np.arange(cache.length, total, dtype=self._positions_dtype)[None, :]
        feed.update(zip(self._past, cache.tensors))
        outs = self.session.run([self._logits, *self._present], feed)
        return outs[0].astype(np.float32, copy=False), KVCache(tuple(outs[1:]), total)

    def empty_cache(self) -> KVCache:
        """The cache before any token: zero-length per layer, a zeroed ring buffer for a sliding-window layer."""
        shapes = [(1, self.kv_heads, self._capacity.get(i // 2, 0), self.cache_dim) for i in range(len(self._past))]
        return KVCache(tuple(np.zeros(s, dtype=self._cache_dtype) for s in shapes), 0)

    def logits(self, input_ids: np.ndarray) -> np.ndarray:
        """Logits (1, L, V), float32, of ``input_ids`` (1, L) int64, prefilled from an empty cache."""
        return self.forward(input_ids, self.empty_cache())[0]

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, KVCache]:
        """Run the prompt (1, L); return the last position's logits (V,) and the cache after it."""
        logits, cache = self.forward(input_ids, self.empty_cache())
        return logits[0, -1], cache

    def step(self, token: int, cache: KVCache) -> tuple[np.ndarray, KVCache]:
        """Feed one token after ``cache``; return its logits (V,) and the cache one longer."""
        logits, cache = self.forward(np.array([[int(token)]], dtype=np.int64), cache)
        return logits[0, -1], cache

    def greedy(self, input_ids: np.ndarray, max_new_tokens: int, eos_id: int | None = None) -> list[int]:
        """Greedy continuation of ``input_ids`` (1, L): up to ``max_new_tokens`` new ids, stopping after ``eos_id``
        (which is included when produced)."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
        logits, cache = self.prefill(input_ids)
        out: list[int] = []
        while True:
            token = int(np.argmax(logits))
            out.append(token)
            if len(out) == max_new_tokens or token == eos_id:
                return out
            logits, cache = self.step(token, cache)


def _as_ids(input_ids: Any) -> np.ndarray:
    ids = np.asarray(input_ids, dtype=np.int64)
    if ids.ndim == 1:
        ids = ids[None, :]
    if ids.ndim != 2 or ids.shape[0] != 1 or ids.shape[1] == 0:
        raise ValueError(f"input_ids must be one non-empty sequence, shape (1, L); got shape {ids.shape}")
    return ids
