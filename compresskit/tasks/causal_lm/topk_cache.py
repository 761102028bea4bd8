"""An offline cache of the LLM teacher's top-k next-token distribution: the teacher runs once over the tokenised
training examples, and every epoch, rerun and sweep reads its targets from disk.

Why top-k and not the logits: full float16 logits of a 49,152-token vocabulary take 98,304 bytes per token (BBC
News, 2,000 articles × 3 prompts × ~300 tokens: 177 GB). The top 16 (log-probability float16 + token id uint16)
plus the log mass of the rest (float32) take 68 bytes per token, 1,446 times less; full logits are never stored.

One folder per (teacher, token sequences, max length, k): ``<cache root>/teacher-topk-<key>/`` holding

- ``logprobs.npy`` ``(T, k)`` float16: log P of the k most likely next tokens, descending. Log-probabilities, not
  logits: the top-k values sit near 0, where float16 is most precise (steps of 1/1024 below 1);
- ``indices.npy`` ``(T, k)``: their token ids, uint16 when the vocabulary has at most 65,536 tokens, else int32;
- ``other.npy`` ``(T,)`` float32: log of the mass outside the top k, computed exactly from the full distribution
  (summing float16 top-k probabilities would leave it to rounding error);
- ``offsets.npy`` ``(n + 1,)`` int64: example r's positions are rows ``offsets[r]:offsets[r + 1]``;
- ``cache.json``: what it holds, and its bytes per token.

Only positions whose next token is a label are stored (the response tokens of a prompt, every token of plain
text), in order, so the rows of a batch line up with ``kd_losses``' masked positions. The folder is written under
a temporary name and renamed when complete (``artifacts.atomic_dir``): a killed run leaves nothing that is read
back as a finished cache. Reads are memory-mapped: a batch pages in its own rows only.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresskit.artifacts import UserError, atomic_dir, free_bytes, read_json, sha256_json, write_json
from compresskit.tasks.causal_lm.kd_losses import (
    IGNORE_INDEX,
    TopK,
    final_hidden_states,
    lm_head,
    next_token_targets,
    topk_from_logits,
)
from compresskit.tasks.causal_lm.prompts import TokenizedExample, collate

_FILES = ("logprobs.npy", "indices.npy", "other.npy", "offsets.npy")


def index_dtype(vocab_size: int) -> np.dtype:
    """The narrowest integer type that holds every token id: uint16 up to 65,536 tokens (SmolLM2: 49,152)."""
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.int32)


def bytes_per_token(k: int, vocab_size: int) -> int:
    """Disk bytes per cached position: k float16 log-probabilities, k token ids, one float32 tail mass."""
    return k * (2 + index_dtype(vocab_size).itemsize) + 4


def counted_positions(example: TokenizedExample) -> int:
    """Positions of ``example`` whose next token is a label: the rows it takes in the cache."""
    return sum(1 for y in example.labels[1:] if y != IGNORE_INDEX)


def cache_key(teacher_fingerprint: str, examples: list[TokenizedExample], max_length: int, k: int) -> str:
    """Key of a cache: the teacher, the exact token sequences and their labels in order, the length and k."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(np.asarray(ex.input_ids, dtype=np.int64).tobytes())
        h.update(b"|")
        h.update(np.asarray(ex.labels, dtype=np.int64).tobytes())
        h.update(b"\0")
    return sha256_json({"teacher": teacher_fingerprint, "tokens": h.hexdigest(), "max_length": max_length,
                        "k": k, "n": len(examples)})[:16]


@dataclass(frozen=True)
class TopKCache:
    """A finished cache, memory-mapped."""

    folder: Path
    k: int
    offsets: np.ndarray
    logprobs: np.ndarray
    indices: np.ndarray
    other: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def rows(self, examples: list[int]) -> TopK:
        """The teacher's top-k rows of the given examples, concatenated in that order: ``TopK`` with ``(N, k)``
        float32 log-probabilities, ``(N, k)`` int64 ids and ``(N,)`` float32 tail masses, N their counted
        positions. For a ``prompts.collate`` batch of the same examples they are its masked positions in order."""
        spans = [np.arange(self.offsets[r], self.offsets[r + 1]) for r in examples]
        idx = np.concatenate(spans) if spans else np.zeros(0, dtype=np.int64)
        return TopK(torch.from_numpy(self.logprobs[idx].astype(np.float32)),
                    torch.from_numpy(self.indices[idx].astype(np.int64)),
                    torch.from_numpy(self.other[idx].astype(np.float32)))


def open_cache(folder: Path) -> TopKCache:
    """Memory-map a finished cache folder (one that ``build`` renamed into place)."""
    folder = Path(folder)
    info = read_json(folder / "cache.json")
    arrays = {name: np.load(folder / name, mmap_mode="r") for name in _FILES}
    return TopKCache(folder, int(info["k"]), np.asarray(arrays["offsets.npy"]), arrays["logprobs.npy"],
                     arrays["indices.npy"], arrays["other.npy"])


@torch.inference_mode()
def _fill(teacher: Any, examples: list[TokenizedExample], k: int, pad_id: int, batch_size: int, chunk: int,
          logprobs: np.ndarray, indices: np.ndarray, other: np.ndarray) -> None:
    """Run the teacher over ``examples`` and write the top-k of its counted positions, in order, into the arrays."""
    head, row = lm_head(teacher), 0
    for s in range(0, len(examples), batch_size):
        batch = collate(examples[s:s + batch_size], pad_id)
        hidden = final_hidden_states(teacher, batch["input_ids"], batch["attention_mask"])
        keep = next_token_targets(batch["labels"]) != IGNORE_INDEX
        rows = hidden[keep]
        # logits chunk by chunk: a batch's full (tokens, vocab) logits are never held at once
        for c in range(0, rows.shape[0], chunk):
            top = topk_from_logits(head.logits(rows[c:c + chunk]), k)
            n = top.logprobs.shape[0]
            logprobs[row:row + n] = top.logprobs.numpy().astype(np.float16)
            indices[row:row + n] = top.indices.numpy().astype(indices.dtype)
            other[row:row + n] = top.other.numpy()
            row += n
    assert row == logprobs.shape[0], "rows written differ from the counted positions"


def build(teacher: Any, examples: list[TokenizedExample], k: int, folder: Path, pad_id: int,
          teacher_fingerprint: str = "", batch_size: int = 8, chunk: int = 256) -> TopKCache:
    """Compute the teacher's top-k cache of ``examples`` into ``folder``, atomically, and open it."""
    vocab = int(teacher.get_output_embeddings().weight.shape[0])
    if not 1 <= k <= vocab:
        raise UserError(f"k (top-k) must be between 1 and the teacher's vocabulary of {vocab:,}, got {k}")
    counts = [counted_positions(ex) for ex in examples]
    offsets = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64)
    total = int(offsets[-1])
    need = total * bytes_per_token(k, vocab)
    folder = Path(folder)
    if need > free_bytes(folder.parent):
        raise UserError(f"the teacher's top-{k} cache needs {need / 1e9:.1f} GB and {folder.parent} has "
                        f"{free_bytes(folder.parent) / 1e9:.1f} GB free; lower k or free space")
    with atomic_dir(folder) as tmp:
        dtype = index_dtype(vocab)
        logprobs = np.lib.format.open_memmap(tmp / "logprobs.npy", "w+", np.float16, (total, k))
        indices = np.lib.format.open_memmap(tmp / "indices.npy", "w+", dtype, (total, k))
        other = np.lib.format.open_memmap(tmp / "other.npy", "w+", np.float32, (total,))
        _fill(teacher, examples, k, pad_id, batch_size, chunk, logprobs, indices, other)
        for arr in (logprobs, indices, other):
            arr.flush()
        del logprobs, indices, other  # the maps close before the folder is renamed
        np.save(tmp / "offsets.npy", offsets)
        write_json(tmp / "cache.json", {
            "teacher": teacher_fingerprint, "k": k, "vocab_size": vocab, "examples": len(examples),
            "positions": total, "logprobs": "float16", "indices": dtype.name, "other": "float32",
            "bytes_per_token": bytes_per_token(k, vocab),
            "full_logits_bytes_per_token": 2 * vocab,  # what float16 logits would take, for comparison
        })
    return open_cache(folder)


def teacher_topk(teacher: Any, teacher_fingerprint: str, examples: list[TokenizedExample], max_length: int, k: int,
                 cache_root: Path, pad_id: int, batch_size: int = 8) -> TopKCache:
    """The teacher's top-k cache of ``examples`` (each at most ``max_length`` tokens), computed only when
    ``cache_root`` lacks it. ``teacher_fingerprint`` names the teacher's weights (``finetune.source_fingerprint``
    of its folder): another teacher, other texts, another length or another k is another cache."""
    too_long = next((ex for ex in examples if len(ex.input_ids) > max_length), None)
    if too_long is not None:
        raise UserError(f"{too_long.source_id}: {len(too_long.input_ids)} tokens, more than --max-length "
                        f"{max_length}; tokenise with that length")
    folder = Path(cache_root) / f"teacher-topk-{cache_key(teacher_fingerprint, examples, max_length, k)}"
    if (folder / "cache.json").is_file():
        return open_cache(folder)
    return build(teacher, examples, k, folder, pad_id, teacher_fingerprint, batch_size)
