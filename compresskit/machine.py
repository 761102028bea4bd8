"""What machine and which library versions produced a measurement: every report and stage record carries it."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import sys
from collections.abc import Callable
from typing import Any


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty where unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def has_vnni() -> bool:
    """Whether int8 dot-product instructions exist; without them ONNX Runtime's u8s8 kernels can saturate."""
    return bool({"avx512_vnni", "avx_vnni", "amx_int8"} & cpu_flags())


def has_native_bf16() -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX-BF16): only then is a bf16 PyTorch model a faster
    form of the fp32 one rather than an emulated, slower one."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def cxx_compiler() -> str | None:
    """The C++ compiler torch.compile's CPU backend (inductor) would call, or None: ``$CXX`` when set, else the first
    of c++, g++, clang++ on the PATH."""
    import shutil

    for name in filter(None, (os.environ.get("CXX"), "c++", "g++", "clang++")):
        if found := shutil.which(name):
            return found
    return None


def pytorch_form_unsupported(precision: str, runtime: str, device: str) -> str | None:
    """Why this machine cannot run a PyTorch model as ``precision`` weights under ``runtime`` (``eager`` or
    ``compile``) on ``device`` (``cpu`` or ``cuda``), or None when it can.

    Why refuse bf16 without native support: emulated bf16 is slower than fp32, so it is no baseline a user on this
    machine would pick. A compile that fails for other reasons is found out by trying (the benchmark worker)."""
    if precision == "bf16":
        if device == "cuda":
            import torch

            if not torch.cuda.is_bf16_supported():
                return f"the GPU ({torch.cuda.get_device_name(0)}) has no bf16 support"
        elif not has_native_bf16():
            return "the CPU has no native bf16 (neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo flags)"
    if runtime == "compile" and device == "cpu" and cxx_compiler() is None:
        return "torch.compile on the CPU needs a C++ compiler (none of $CXX, c++, g++, clang++ found)"
    return None


def default_threads() -> int:
    """Threads for inference benchmarks: the physical cores this process may use."""
    import psutil

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count() or 1
    physical = psutil.cpu_count(logical=False) or usable
    return max(1, min(usable, physical))


def machine_info(threads: int | None = None) -> dict[str, Any]:
    """CPU model, cores, memory, GPU (when torch sees one) and the thread count used."""
    import psutil

    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            gpu = {"name": props.name, "memory_gb": round(props.total_memory / 2**30, 1), "count": torch.cuda.device_count()}
    except ImportError:
        pass
    return {
        "cpu": _cpu_model(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        "threads": threads,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "vnni": has_vnni(),
        "native_bf16": has_native_bf16(),
        "amx": bool({"amx_bf16", "amx_int8", "amx_tile"} & cpu_flags()),
        "gpu": gpu,
        "platform": platform.platform(),
    }


def library_versions() -> dict[str, str | None]:
    """Installed versions of the libraries that decide the numbers."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in ("compresskit", "torch", "transformers", "accelerate", "onnx", "onnxruntime", "onnxruntime-gpu",
                 "onnxruntime-genai", "optimum", "numpy", "tokenizers"):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            if name not in ("onnxruntime-gpu", "onnxruntime-genai"):
                out[name] = None
    return out


def memory_bandwidth(threads: int = 1, megabytes: int | None = None, repeats: int = 10) -> dict[str, Any]:
    """The machine's usable memory bandwidth for a decoder: the best of ``repeats`` reads of a ``megabytes`` array
    (far larger than any cache; by default 1 GB, or a sixteenth of the memory on a small machine) split over
    ``threads`` threads (numpy releases the GIL), with a copy of it measured beside (bytes read + bytes written).

    Why a read: decoding one token at batch 1 streams every weight once and writes next to nothing, so the roof it
    runs under is what a pure read moves. A copy counts its written bytes too, and on the 2-core EPYC host it moves
    more than any read does (43–46 GB/s read + write against 34–35 GB/s for a sum, a max, a float32 dot and a byte
    max alike): non-temporal stores do not queue behind the reads, so the copy's figure is a roof no decoder can
    reach there. The copy is kept in the record, as the figure to compare with other tools' copy benchmarks.
    Measured with the decoder's own thread count, so the two use the same cores. A decoder's bandwidth use is then
    its tokens/s × bytes read per token, and that over this figure says how close it runs to the memory limit.

    Why 1 GB: on the 2-core EPYC host (a virtual machine) arrays of 128–512 MB read at 36–40 GB/s more often than
    1 GB ones; but 1 GB arrays too read at 35 GB/s in some processes and 57–64 in others, minutes or seconds
    apart, with nothing else running: see ``fresh_memory_bandwidth``.
    """
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    if megabytes is None:
        total_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
        megabytes = max(64, min(1024, total_mb // 16))
    n = megabytes * 2**20 // 8
    src, dst = np.ones(n), np.empty(n)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    parts = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with ThreadPoolExecutor(threads) as pool:
        def best_of(work: Callable[[Any], Any]) -> float:
            list(pool.map(work, parts))  # touch both: page faults are not bandwidth
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                list(pool.map(work, parts))
                best = min(best, time.perf_counter() - t0)
            return best

        read = n * 8 / best_of(lambda p: p[1].sum()) / 1e9
        copy = 2 * n * 8 / best_of(lambda p: np.copyto(*p)) / 1e9
    return {"gb_per_s": read, "read_gb_per_s": read, "copy_gb_per_s": copy, "megabytes": megabytes,
            "repeats": repeats, "threads": threads,
            "method": f"numpy sum (bytes read) over {threads} thread(s), best of {repeats}; a copy (read + write "
                      "bytes) beside it"}


def fresh_memory_bandwidth(threads: int = 1, passes: int = 3) -> dict[str, Any]:
    """``memory_bandwidth`` measured in ``passes`` new processes, the best kept, with every pass's figure.

    Why new processes, and the best of several: the decoders are measured in new processes, and on the 2-core EPYC
    host (a virtual machine) one process reads memory at 35 GB/s and the next at 57–64, with nothing else running
    (which memory the guest is given seems to decide it, and it can change within a process). A limit is the most
    the machine gives, so the best pass is kept; the spread is recorded beside it, since a decoder's share of the
    limit is only as good as this figure.
    """
    import json
    import subprocess
    import sys

    code = ("import json, sys; from compresskit.machine import memory_bandwidth; "
            "print(json.dumps(memory_bandwidth(int(sys.argv[1]))))")
    results = []
    for _ in range(max(passes, 1)):
        proc = subprocess.run([sys.executable, "-c", code, str(threads)], capture_output=True, text=True,
                              check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    best = max(results, key=lambda r: r["gb_per_s"])
    return {**best, "passes_gb_per_s": [round(r["gb_per_s"], 2) for r in results],
            "passes_copy_gb_per_s": [round(r["copy_gb_per_s"], 2) for r in results],
            "method": best["method"] + f"; in {len(results)} new processes, the best"}


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
