"""One benchmark measurement in its own process: ``python -m compresskit.bench_worker SPEC RESULT``.

Kept apart from ``bench`` so an ONNX variant's process never imports torch, and its peak RSS is its own.
"""

from __future__ import annotations

import inspect
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from compresskit.timing import Latency, time_runs


def _pytorch_runner(path: str, device: str, threads: int) -> tuple[Callable[[dict], np.ndarray], Callable[[], None], dict]:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.set_num_threads(threads)
    model = AutoModelForSequenceClassification.from_pretrained(path, use_safetensors=True).eval().to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    names = set(inspect.signature(model.forward).parameters)

    @torch.inference_mode()
    def run(batch: dict) -> np.ndarray:
        feed = {k: torch.from_numpy(v).to(device) for k, v in batch.items() if k in names}
        return model(**feed).logits.float().cpu().numpy()

    return run, sync, {"device": device, "providers": []}


def _onnx_runner(path: str, device: str, threads: int) -> tuple[Callable[[dict], np.ndarray], Callable[[], None], dict]:
    from compresskit.onnx_runtime import make_session, run_logits

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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB.

    Why VmHWM first: on Linux ``ru_maxrss`` survives exec, so a worker started from a parent that had torch
    loaded would report the parent's peak; VmHWM belongs to the new program image only.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024.0  # bytes on macOS, KiB elsewhere


def main(spec_path: str, result_path: str) -> None:
    """Load one variant, predict the test inputs, time each batch size, record peak memory and, for ONNX, which
    execution provider ran each node."""
    spec = json.loads(Path(spec_path).read_text())
    v, cfg, threads = spec["variant"], spec["config"], spec["threads"]
    data = np.load(spec["inputs"])
    labels = data["labels"]
    arrays = {k: data[k] for k in data.files if k != "labels"}
    device = cfg["device"]
    if v["format"] == "pytorch":
        if device == "auto":
            import torch

            device = "cuda" if torch.cuda.is_available() else "cpu"
        loaded = time.perf_counter()
        run, sync, info = _pytorch_runner(v["path"], device, threads)
    else:
        loaded = time.perf_counter()
        run, sync, info = _onnx_runner(v["path"], cfg.get("provider", "auto"), threads)
    load_seconds = time.perf_counter() - loaded

    logits = np.concatenate([run({k: a[s:s + 32] for k, a in arrays.items()}) for s in range(0, len(labels), 32)])
    # The raw per-run times are kept beside their summary: comparing two runs needs them (a bootstrap interval of the
    # p50 ratio), and they cost a few kB per batch size.
    samples = {f"batch_{b}": _time(run, sync, arrays, b, cfg) for b in sorted({1, *cfg["batch_sizes"]})}
    latency = {k: Latency.from_samples(s).__dict__ for k, s in samples.items()}
    peak_gpu = None
    if info["device"] == "cuda" and v["format"] == "pytorch":
        import torch

        peak_gpu = torch.cuda.max_memory_allocated() / 2**20
    peak_rss = peak_rss_mb()  # read before the profiled session below, whose memory is not the variant's
    placement = None
    if v["format"] == "onnx":
        from compresskit.onnx_runtime import node_placement

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
    }
    Path(result_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
