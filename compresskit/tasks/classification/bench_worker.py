"""One benchmark measurement in its own process:
``python -m compresskit.tasks.classification.bench_worker SPEC RESULT``.

Kept apart from ``bench`` so an ONNX variant's process never imports torch, and its peak RSS is its own.
"""

from __future__ import annotations

import inspect
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compresskit.artifacts import first_line
from compresskit.machine import peak_rss_mb
from compresskit.tasks.classification.workloads import GpuMemory, cells, max_batch_before_oom, measure_cells, rows_of
from compresskit.timing import Latency, time_runs


def _pytorch_runner(path: str, device: str, threads: int, precision: str = "fp32", runtime: str = "eager"
                    ) -> tuple[Callable[[dict], np.ndarray], Callable[[], None], dict]:
    """The model as ``precision`` weights (``fp32``, or ``bf16``: cast after loading) run ``eager`` or through
    ``torch.compile`` (``compile``: lazy, the first call of each new input shape compiles)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval().to(device)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    names = set(inspect.signature(model.forward).parameters)
    if runtime == "compile":
        model = torch.compile(model)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    @torch.inference_mode()
    def run(batch: dict) -> np.ndarray:
        feed = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k in names}
        return model(**feed).logits.float().cpu().numpy()

    return run, sync, {"device": device, "providers": []}


def _onnx_runner(path: str, device: str, threads: int) -> tuple[Callable[[dict], np.ndarray], Callable[[], None], dict]:
    from compresskit.onnx.sessions import make_session, run_logits

    session = make_session(Path(path) / "model.onnx", threads=threads, device=device)
    providers = session.get_providers()
    return (lambda batch: run_logits(session, batch)), (lambda: None), {
        "device": "cuda" if "CUDAExecutionProvider" in providers else "cpu", "providers": providers}


def _time(run: Callable, sync: Callable, arrays: dict[str, np.ndarray], batch: int, cfg: dict) -> list[float]:
    """Per-run milliseconds of ``run`` at ``batch`` rows, with the warm-up, iterations and seconds of ``cfg``."""
    n = len(arrays["input_ids"])
    def take(i: int) -> dict:
        idx = [(i * batch + j) % n for j in range(batch)]  # walk through real test inputs, wrapping around
        return {k: v[idx] for k, v in arrays.items()}
    batches = [take(i) for i in range(min(64, max(1, n)))]
    return time_runs(run, batches, warmup=cfg["warmup"], min_iterations=cfg["min_iterations"],
                     min_seconds=cfg["min_seconds"], sync=sync)


def _load_arrays(path: str) -> dict[str, np.ndarray]:
    """The token arrays of an inputs file (everything but its labels)."""
    data = np.load(path)
    return {k: data[k] for k in data.files if k != "labels"}


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Load one variant (a PyTorch one as fp32 or bf16 weights, eager or compiled), time each workload cell (batch ×
    sequence length, ``workloads``), predict the test inputs, record peak memory (on CUDA also the
    largest batch that fits) and, for ONNX, which execution provider ran each node. A torch.compile that fails writes
    ``{"skipped": reason}`` instead."""
    v, cfg, threads = spec["variant"], spec["config"], spec["threads"]
    data = np.load(spec["inputs"])
    labels = data["labels"]
    arrays = {k: data[k] for k in data.files if k != "labels"}
    device = cfg["device"]
    if v["format"] == "pytorch":
        from compresskit.training import resolve_device

        device = resolve_device(device)
        loaded = time.perf_counter()
        run, sync, info = _pytorch_runner(v["path"], device, threads, v.get("precision", "fp32"),
                                          v.get("runtime", "eager"))
    else:
        loaded = time.perf_counter()
        run, sync, info = _onnx_runner(v["path"], cfg.get("provider", "auto"), threads)
    load_seconds = time.perf_counter() - loaded
    compiled = v.get("runtime") == "compile"
    extra: dict[str, Any] = {}
    if compiled:
        # compiling is not timed as latency: it is recorded, and a compile that fails (no working C++ toolchain, an
        # unsupported op) makes this variant skipped, with the reason, instead of failing the benchmark
        t0 = time.perf_counter()
        try:
            run(rows_of(arrays, 1))
        except Exception as e:  # noqa: BLE001 — torch.compile fails in many types; the user needs the first line
            return {"skipped": f"torch.compile failed: {first_line(e)}"}
        extra["compile_seconds"] = round(time.perf_counter() - t0, 3)

    # The workload grid, smallest cell first; the cells at the main sequence length are the `latency_ms` batch keys.
    # The raw per-run times are kept beside their summary: comparing two runs needs them (a bootstrap interval of the
    # p50 ratio), and they cost a few kB per batch size.
    main_length = arrays["input_ids"].shape[1]
    by_length = {main_length: arrays, **{int(k): _load_arrays(p) for k, p in spec.get("inputs_by_length", {}).items()}}
    if spec.get("latency_only"):  # a later round of the benchmark: the main-length batch sizes, timed again
        _, cell_samples = measure_cells(cells({1, *cfg["batch_sizes"]}, {main_length: arrays}), {main_length: arrays},
                                        lambda a, b: _time(run, sync, a, b, cfg), peak_rss_mb, None,
                                        run if compiled else None)
        return {**info,
                "latency_samples_ms": {f"batch_{c.batch}": [round(x, 4) for x in ms] for c, ms in cell_samples.items()},
                "peak_rss_mb": peak_rss_mb(), "load_seconds": round(load_seconds, 3), **extra}
    on_gpu = info["device"] == "cuda" and v["format"] == "pytorch"
    gpu = None
    if on_gpu:
        import torch

        gpu = GpuMemory(torch.cuda.reset_peak_memory_stats, lambda: torch.cuda.max_memory_allocated() / 2**20)
    peak_before = peak_rss_mb()
    grid = cells({1, *cfg["batch_sizes"]}, by_length)
    records, cell_samples = measure_cells(grid, by_length, lambda a, b: _time(run, sync, a, b, cfg), peak_rss_mb, gpu,
                                          run if compiled else None)
    samples = {f"batch_{c.batch}": ms for c, ms in cell_samples.items() if c.sequence_length == main_length}
    latency = {k: Latency.from_samples(s).__dict__ for k, s in sorted(samples.items(), key=lambda kv: int(kv[0][6:]))}

    logits = np.concatenate([run({k: a[s:s + 32] for k, a in arrays.items()}) for s in range(0, len(labels), 32)])
    peak_gpu = None
    if on_gpu:
        peak_gpu = max([r["peak_gpu_mb"] for r in records] + [torch.cuda.max_memory_allocated() / 2**20])
    # read before the profiled session below, whose memory is not the variant's; each cell reset the high-water mark
    peak_rss = max([peak_before, peak_rss_mb()] + [r["peak_rss_mb"] for r in records])
    if info["device"] == "cuda":
        # last: a search that ends in out-of-memory may leave the runtime's allocator in any state
        free = torch.cuda.empty_cache if v["format"] == "pytorch" else None
        extra["max_batch_before_oom"] = [max_batch_before_oom(run, a, max(cfg["batch_sizes"]), after_oom=free)
                                         for _, a in sorted(by_length.items())]
    placement = None
    if v["format"] == "onnx":
        from compresskit.onnx.sessions import node_placement

        # A separate session after timing: the profiler slows every node it records, and the timed session's
        # placement is the same because both are built with the same options and providers.
        placement = node_placement(Path(v["path"]) / "model.onnx", {k: a[:1] for k, a in arrays.items()},
                                   cfg.get("provider", "auto"), threads).to_json()
    result: dict[str, Any] = {
        **info,
        "predictions": logits.argmax(-1).tolist(),
        "latency_ms": latency,
        "latency_samples_ms": {k: [round(x, 4) for x in s] for k, s in samples.items()},
        "peak_rss_mb": peak_rss,
        "peak_gpu_mb": peak_gpu,
        "load_seconds": round(load_seconds, 3),
        "placement": placement,
        "torch_imported": "torch" in sys.modules,
        "workloads": records,
        **extra,
    }
    return result


if __name__ == "__main__":
    from compresskit.bench import worker_main

    worker_main(measure)
