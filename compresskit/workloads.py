"""Workload sweeps and what the report derives from them.

A benchmark times each variant on a grid of cells, (batch size, sequence length): ``--batch-sizes`` ×
``--seq-lengths``. This module names the cells and measures them inside a benchmark worker (``measure_cells``), finds
the largest batch that fits on a GPU (``max_batch_before_oom``), and, for the report, computes the student's speed-ups
against the reference teacher and against the fastest teacher form measured (``speedups``), and the cells where an
ONNX graph is slower than the PyTorch model it was exported from (``slower_than_pytorch``).

numpy only at import: the benchmark worker imports this module in ONNX processes, which must not import torch.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from compresskit.timing import Latency
from compresskit.variants import REFERENCE_TEACHER, reference_teacher


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


# ---------------------------------------------------------------- for the report


def _p50(row: dict, key: str) -> float | None:
    value = ((row.get("latency_ms") or {}).get(key) or {}).get("p50")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def _batch_keys(variants: list[dict]) -> list[str]:
    """``batch_1`` and the largest batch any variant measured (one key when only batch 1 was)."""
    sizes = {int(k.split("_")[1]) for v in variants for k in (v.get("latency_ms") or {}) if k.startswith("batch_")}
    return [f"batch_{b}" for b in sorted({1, max(sizes, default=1)})]


def speedups(variants: list[dict]) -> dict[str, Any]:
    """The fastest student's speed-up (p50 over p50, at the main sequence length) against the reference teacher
    (``teacher-pytorch``, fp32 eager) and against the fastest teacher variant measured in any form (ONNX, bf16,
    torch.compile), at batch 1 and at the largest batch measured.

    Why both: a user on this machine would not run the teacher in fp32 eager PyTorch if a faster form of it exists;
    the speed-up compression buys is the one against the best of those. Returns ``{"reference": name, "by_batch":
    {"batch_1": {...}, "batch_32": {...}}}``; a figure that cannot be computed is None.
    """
    teachers = [v for v in variants if v.get("model") == "teacher"]
    students = [v for v in variants if v.get("model") == "student"]
    reference = reference_teacher(teachers)
    out: dict[str, Any] = {"reference": reference.get("name") if reference else None, "by_batch": {}}
    for key in _batch_keys(variants):
        def fastest(rows: list[dict]) -> tuple[str | None, float | None]:
            timed = [(v["name"], p) for v in rows if (p := _p50(v, key)) is not None]
            return min(timed, key=lambda t: t[1]) if timed else (None, None)

        student, s_ms = fastest(students)
        teacher, t_ms = fastest(teachers)
        r_ms = _p50(reference, key) if reference else None
        out["by_batch"][key] = {
            "student": student, "student_p50_ms": s_ms,
            "reference_p50_ms": r_ms, "fastest_teacher": teacher, "fastest_teacher_p50_ms": t_ms,
            "vs_reference": r_ms / s_ms if r_ms and s_ms else None,
            "vs_fastest_teacher": t_ms / s_ms if t_ms and s_ms else None,
        }
    return out


def _cell_p50(row: dict) -> dict[tuple[int, int | None], float]:
    """p50 per (batch, sequence length) cell of a variant: its ``workloads``, else its ``latency_ms`` keys (sequence
    length unknown: None)."""
    cells_ = {(c["batch"], c["sequence_length"]): c["latency_ms"]["p50"] for c in row.get("workloads") or []
              if isinstance((c.get("latency_ms") or {}).get("p50"), (int, float))}
    if not cells_:
        cells_ = {(int(k.split("_")[1]), None): p for k in row.get("latency_ms") or {}
                  if (p := _p50(row, k)) is not None}
    return cells_


def slower_than_pytorch(variants: list[dict]) -> list[dict[str, Any]]:
    """Every measured cell where an ONNX variant's p50 is above that of the PyTorch model it comes from (the same
    model's fp32 eager ``<model>-pytorch`` variant): ``{"variant", "source", "batch", "sequence_length", "onnx_ms",
    "pytorch_ms"}``, in the variants' and cells' order."""
    by_name = {v.get("name"): v for v in variants}
    found = []
    for v in variants:
        source = by_name.get(f"{v.get('model')}-pytorch")
        if v.get("format") != "onnx" or source is None:
            continue
        theirs = _cell_p50(source)
        for (batch, seq), ms in _cell_p50(v).items():
            if (batch, seq) in theirs and ms > theirs[(batch, seq)]:
                found.append({"variant": v["name"], "source": source["name"], "batch": batch,
                              "sequence_length": seq, "onnx_ms": ms, "pytorch_ms": theirs[(batch, seq)]})
    return found


def notes(variants: list[dict], exports: dict[str, Any], skipped: list[dict]) -> list[str]:
    """The report's warnings, one line each: ONNX variants slower than their PyTorch source (measured by the
    benchmark, and as export's choice saw it), and variants that were not measured, with why."""
    lines = []
    for s in slower_than_pytorch(variants):
        at = f"batch {s['batch']}" + (f", sequence {s['sequence_length']}" if s["sequence_length"] else "")
        lines.append(f"{s['variant']} is slower than its PyTorch source {s['source']} at {at}: p50 "
                     f"{s['onnx_ms']:.2f} ms against {s['pytorch_ms']:.2f} ms")
    for name, record in exports.items():
        choice = (record or {}).get("choice") or {}
        for key in choice.get("slower_than_pytorch") or []:
            onnx_ms = (choice.get("shipped_ms") or {}).get(key)
            torch_ms = (choice.get("pytorch_ms") or {}).get(key)
            figures = f": {onnx_ms:.2f} ms against {torch_ms:.2f} ms" if onnx_ms and torch_ms else ""
            lines.append(f"export of the {name}: the fastest ONNX graph ({choice.get('chosen')}) is slower than "
                         f"PyTorch at {key.replace('_', ' ')} when export timed it{figures}; it is kept, the "
                         "pipeline needs ONNX")
    for s in skipped:
        lines.append(f"{s.get('name')} not measured: {s.get('reason')}")
    return lines


def speedup_lines(report: dict) -> list[str]:
    """The report's speed-up lines, one per batch size (see ``speedups``)."""
    block = report.get("speedups") or {}
    lines = []
    for key, s in (block.get("by_batch") or {}).items():
        if not s.get("student"):
            continue
        size = key.removeprefix("batch_")
        vs_ref = f"{s['vs_reference']:.2f}× {block.get('reference') or REFERENCE_TEACHER}" \
            if s.get("vs_reference") else f"— against {block.get('reference') or REFERENCE_TEACHER}"
        vs_best = f"{s['vs_fastest_teacher']:.2f}× the fastest teacher form ({s['fastest_teacher']}, " \
                  f"{s['fastest_teacher_p50_ms']:.2f} ms)" if s.get("vs_fastest_teacher") else "no teacher measured"
        lines.append(f"batch {size}: {s['student']} ({s['student_p50_ms']:.2f} ms p50) is {vs_ref} and {vs_best}")
    return lines
