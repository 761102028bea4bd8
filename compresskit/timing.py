"""Timing repeated runs: the one timing loop of export's graph comparison, quantize's candidate ranking and the
benchmark worker, and the ``Latency`` summary they report.

numpy only: the benchmark worker imports this module in a process that must not import torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

T = TypeVar("T")

SETTLE_SECONDS = 0.05
"""Pause before timing another session of the same process. Why: ONNX Runtime's intra-op threads spin-wait after
each run (its default), and on a machine with no core to spare the last session's spinning threads take the cores
from the next one. Timed back to back, two student graphs that run in 3.2 and 3.4 ms alone measured 4–8 ms at
batch 1, in either order from one repetition to the next, and two runs of one commit shipped different graphs;
with this pause they measure 3.24 and 3.43 ms every time (benchmarks/export_timing.py; figures in RESULTS.md)."""


@dataclass(frozen=True)
class Latency:
    """Latency statistics of repeated runs, in milliseconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    iterations: int

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> Latency:
        """Summarise per-run times (ms); percentiles by linear interpolation."""
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(float(a.mean()), *(float(np.percentile(a, q)) for q in (50, 90, 99)), int(a.size))


def time_runs(run: Callable[[T], object], inputs: Sequence[T], *, warmup: int = 0, min_iterations: int = 1,
              min_seconds: float = 0.0, max_iterations: int = 100_000,
              sync: Callable[[], object] | None = None, settle_s: float = 0.0) -> list[float]:
    """Milliseconds per call of ``run(input)``, taking ``inputs`` in turn (wrapping around).

    ``warmup`` untimed calls come first (on ``inputs[0]``, ``inputs[1]``…); timing then starts over from
    ``inputs[0]`` and goes on until at least ``min_iterations`` calls are timed and ``min_seconds`` have passed
    since the first, but stops at ``max_iterations``. ``sync`` (a GPU's ``synchronize``) runs after the warm-up and
    inside each timed call, so the time covers the work queued by ``run``, not only its launch. ``settle_s`` of
    quiet come before anything (``SETTLE_SECONDS`` where another model of the same process ran just before).
    """
    if not inputs:
        raise ValueError("time_runs needs at least one input")
    if settle_s > 0:
        time.sleep(settle_s)
    for i in range(warmup):
        run(inputs[i % len(inputs)])
    if sync is not None:
        sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < max_iterations and (len(samples) < min_iterations
                                             or time.perf_counter() - start < min_seconds):
        x = inputs[len(samples) % len(inputs)]
        t0 = time.perf_counter()
        run(x)
        if sync is not None:
            sync()
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples
