"""Workload sweeps of the classifier's benchmark.

A benchmark times each variant on a grid of cells, (batch size, sequence length): ``--batch-sizes`` ×
``--seq-lengths``. This module names the cells and measures them inside a benchmark worker (``measure_cells``), and
finds the largest batch that fits on a GPU (``max_batch_before_oom``). What the report derives from the cells is in
``compresskit.reporting.speedups``.

numpy only at import: the benchmark worker imports this module in ONNX processes, which must not import torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compresskit.timing import Latency


@dataclass(frozen=True)
class Cell:
    """One workload: ``batch`` inputs of ``sequence_length`` tokens through one forward pass."""

    batch: int
    sequence_length: int


def cells(batch_sizes: Iterable[int], seq_lengths: Iterable[int]) -> list[Cell]:
    """Every (batch, sequence length) pair, smallest first: by tokens per batch, then by sequence length.

    Why this order: a cell's peak memory is read after it ran, and memory an allocator kept from an earlier cell
    counts towards the next; running small before large keeps what is carried over smaller than the cell itself.
    """
    grid = [Cell(b, s) for b in sorted(set(batch_sizes)) for s in sorted(set(seq_lengths))]
    return sorted(grid, key=lambda c: (c.batch * c.sequence_length, c.sequence_length, c.batch))


def rows_of(arrays: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    """The first ``batch`` inputs of ``arrays`` (wrapping around when there are fewer), as one batch."""
    n = len(next(iter(arrays.values())))
    idx = np.arange(batch) % n
    return {k: v[idx] for k, v in arrays.items()}


# ---------------------------------------------------------------- in the benchmark worker


def reset_rss_peak() -> bool:
    """Reset this process's resident-set high-water mark (VmHWM) by writing 5 to /proc/self/clear_refs (Linux ≥ 4.0);
    False where that is not possible, and the mark then keeps growing over the whole process."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


@dataclass(frozen=True)
class GpuMemory:
    """How a PyTorch worker on CUDA reads its per-cell peak: ``reset`` (``torch.cuda.reset_peak_memory_stats``)
    before the cell, ``peak_mb`` (``torch.cuda.max_memory_allocated`` in MiB) after it."""

    reset: Callable[[], None]
    peak_mb: Callable[[], float]


def measure_cells(grid: Sequence[Cell], arrays_by_length: dict[int, dict[str, np.ndarray]],
                  timer: Callable[[dict[str, np.ndarray], int], list[float]], peak_rss_mb: Callable[[], float],
                  gpu: GpuMemory | None = None, first_call: Callable[[dict[str, np.ndarray]], object] | None = None
                  ) -> tuple[list[dict[str, Any]], dict[Cell, list[float]]]:
    """Time each cell of ``grid`` in order with ``timer(arrays, batch)`` (per-run ms) on the inputs tokenised to the
    cell's length, ``arrays_by_length[sequence_length]`` (arrays ``(n, sequence_length)``).

    Returns one record per cell (latency p50/p90/p99/mean, throughput, peak memory) and the raw samples per cell.

    Peak memory per cell: ``peak_rss_mb`` is this process's resident-set high-water mark read after the cell. Before
    each cell the mark is reset where Linux allows it (``rss_peak_scope: "cell"``), so the figure is the largest
    resident set *during* that cell: the loaded model, what the cell allocated, and what the allocator kept from the
    (smaller, see ``cells``) cells before it. Where it cannot be reset (``"process"``) the figure is the high-water
    mark of the whole process so far. On CUDA, ``gpu`` gives the cell's own peak of allocated GPU memory.

    ``first_call`` (torch.compile: a new shape compiles) runs once on the cell's first batch before timing; its time
    is recorded as ``first_call_s`` and kept out of the latency.
    """
    records, samples = [], {}
    for cell in grid:
        arrays = arrays_by_length[cell.sequence_length]
        scope = "cell" if reset_rss_peak() else "process"
        if gpu is not None:
            gpu.reset()
        record: dict[str, Any] = {"batch": cell.batch, "sequence_length": cell.sequence_length}
        if first_call is not None:
            t0 = time.perf_counter()
            first_call(rows_of(arrays, cell.batch))
            record["first_call_s"] = round(time.perf_counter() - t0, 3)
        ms = timer(arrays, cell.batch)
        latency = Latency.from_samples(ms)
        record |= {"latency_ms": latency.__dict__,
                   "throughput_per_s": round(cell.batch * 1000.0 / latency.mean, 2),
                   "peak_rss_mb": round(peak_rss_mb(), 1), "rss_peak_scope": scope,
                   "peak_gpu_mb": round(gpu.peak_mb(), 1) if gpu is not None else None}
        records.append(record)
        samples[cell] = ms
    return records, samples


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` says the device ran out of memory (torch's OutOfMemoryError, ONNX Runtime's failed
    allocation)."""
    text = f"{type(error).__name__}: {error}".lower()
    return "outofmemory" in text or "out of memory" in text or "failed to allocate" in text


def max_batch_before_oom(run: Callable[[dict[str, np.ndarray]], object], arrays: dict[str, np.ndarray], start: int,
                         limit: int = 65536, after_oom: Callable[[], None] | None = None) -> dict[str, Any]:
    """The largest batch of ``arrays``' inputs that ``run`` completes, found by doubling from ``start`` until the
    device runs out of memory or ``limit`` is passed; ``after_oom`` frees what the failed attempt left (PyTorch's
    ``torch.cuda.empty_cache``). Any error other than out-of-memory is raised.

    Returns ``{"batch": largest that ran (None: not even start), "out_of_memory": whether the search ended on OOM,
    "limit": limit, "sequence_length": …}``; ``out_of_memory: false`` means the true limit is above ``limit``.
    """
    fits, batch = None, max(1, start)
    while batch <= limit:
        try:
            run(rows_of(arrays, batch))
        except Exception as e:  # noqa: BLE001 — any runtime's allocation failure; others are re-raised below
            if not is_out_of_memory(e):
                raise
            if after_oom is not None:
                after_oom()
            return {"batch": fits, "out_of_memory": True, "limit": limit,
                    "sequence_length": int(next(iter(arrays.values())).shape[1])}
        fits, batch = batch, batch * 2
    return {"batch": fits, "out_of_memory": False, "limit": limit,
            "sequence_length": int(next(iter(arrays.values())).shape[1])}
