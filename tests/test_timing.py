"""The one timing loop (export's graph comparison, quantize's ranking, the benchmark worker) and its summary."""

import subprocess
import sys
import time

import pytest

from compresskit.timing import Latency, time_runs


def test_latency_percentiles_from_samples():
    lat = Latency.from_samples([float(x) for x in range(1, 101)])
    assert lat.iterations == 100 and lat.mean == pytest.approx(50.5)
    assert lat.p50 == pytest.approx(50.5) and lat.p90 == pytest.approx(90.1) and lat.p99 == pytest.approx(99.01)
    one = Latency.from_samples([3.0])
    assert (one.mean, one.p50, one.p90, one.p99, one.iterations) == (3.0, 3.0, 3.0, 3.0, 1)


def test_warmup_runs_untimed_then_timing_starts_over_from_the_first_input():
    calls = []
    samples = time_runs(calls.append, ["a", "b", "c"], warmup=2, min_iterations=4)
    assert calls == ["a", "b", "a", "b", "c", "a"]  # 2 warm-up, then 4 timed, wrapping around the inputs
    assert len(samples) == 4 and all(s >= 0 for s in samples)


def test_min_iterations_and_min_seconds_are_both_honoured():
    assert len(time_runs(lambda x: None, [0], min_iterations=7)) == 7  # min_seconds 0: exactly min_iterations
    started = time.perf_counter()
    # no cap in reach: 100 000 trivial calls (the default cap) can take less than 0.05 s on a fast core
    samples = time_runs(lambda x: None, [0], min_iterations=1, min_seconds=0.05, max_iterations=10**9)
    assert time.perf_counter() - started >= 0.05 and len(samples) > 1  # a trivial call: many more than one
    slow = time_runs(lambda x: time.sleep(0.002), [0], min_iterations=5, min_seconds=0.001)
    assert len(slow) == 5 and min(slow) >= 2.0  # milliseconds; iterations outlast the seconds here
    assert len(time_runs(lambda x: None, [0], min_seconds=10, max_iterations=50)) == 50  # the cap stops it


def test_sync_runs_after_warmup_and_inside_each_timed_call():
    events = []
    time_runs(lambda x: events.append("run"), [0], warmup=2, min_iterations=2, sync=lambda: events.append("sync"))
    assert events == ["run", "run", "sync", "run", "sync", "run", "sync"]


def test_timing_does_not_import_torch():
    """The benchmark worker times ONNX variants in a process that must not import torch."""
    code = ("import sys, compresskit.timing, compresskit.tasks.classification.bench_worker; "
            "print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


def test_settle_pauses_before_anything_and_is_not_timed():
    calls = []
    t0 = time.perf_counter()
    samples = time_runs(lambda x: calls.append(time.perf_counter()), [0], warmup=1, min_iterations=3, settle_s=0.05)
    assert calls[0] - t0 >= 0.05  # the pause comes before the warm-up call
    assert len(samples) == 3 and max(samples) < 50.0  # and none of it is in a timed run
