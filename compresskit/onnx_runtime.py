"""ONNX Runtime sessions and batched inference, with no torch import (the exported folder must run without it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def available_providers() -> list[str]:
    """Execution providers this onnxruntime build offers."""
    import onnxruntime as ort

    return ort.get_available_providers()


PROVIDER_CHOICES = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def providers_for(device: str) -> list[str]:
    """Execution providers to ask for, best first, among those this onnxruntime build has.

    ``auto`` takes TensorRT, then CUDA, then CPU as available. Asking for a GPU provider that the installed
    onnxruntime lacks (the CPU wheel) is a user error, not a silent fall-back to the CPU.
    """
    import onnxruntime as ort

    have = ort.get_available_providers()
    if device == "auto":
        return [p for p in PROVIDER_CHOICES["tensorrt"] if p in have]
    if device not in PROVIDER_CHOICES:
        from compresskit.artifacts import UserError

        raise UserError(f"--provider must be cpu, cuda, tensorrt or auto, got {device!r}")
    wanted = PROVIDER_CHOICES[device]
    if wanted[0] not in have:
        from compresskit.artifacts import UserError

        raise UserError(f"--provider {device}: this onnxruntime has no {wanted[0]} (it has {', '.join(have)}); "
                        "install onnxruntime-gpu (pip install 'compresskit[gpu]')")
    return [p for p in wanted if p in have]


def make_session(model_path: Path, threads: int | None = None, device: str = "cpu") -> Any:
    """An inference session with all graph optimisations on the providers ``device`` names (see providers_for).

    ``threads`` pins intra-op threads so latency figures are comparable with PyTorch at the same count.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers and the like are noise for users
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=providers_for(device))


def session_inputs(session: Any, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The subset of a tokenised batch that the graph takes, as int64."""
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in batch]
    if missing:
        raise KeyError(f"the model wants inputs {missing} that the tokenizer did not give")
    return {n: np.asarray(batch[n], dtype=np.int64) for n in names}


def run_logits(session: Any, batch: dict[str, np.ndarray]) -> np.ndarray:
    """Logits ``(batch, classes)`` of one batch, in fp32."""
    return np.asarray(session.run(None, session_inputs(session, batch))[0], dtype=np.float32)


def batched_logits(session: Any, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Logits of all rows of ``arrays`` (each ``(n, seq)``), run ``batch_size`` rows at a time."""
    n = len(next(iter(arrays.values())))
    out = [run_logits(session, {k: v[s:s + batch_size] for k, v in arrays.items()}) for s in range(0, n, batch_size)]
    return np.concatenate(out)
