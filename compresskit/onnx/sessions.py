"""ONNX Runtime sessions and batched inference, with no torch import (the exported folder must run without it)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

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


SESSION_FILE = "session.json"
"""Settings a graph needs from the session that loads it, kept beside ``model.onnx`` (see the
classifier's ``layer_norm``)."""


def session_settings(model_path: Path) -> dict[str, Any]:
    """The settings in ``session.json`` beside ``model_path`` (empty when there is none)."""
    path = Path(model_path).parent / SESSION_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def make_session(model_path: Path, threads: int | None = None, device: str = "cpu") -> Any:
    """An inference session with all graph optimisations on the providers ``device`` names (see providers_for),
    less the optimizers that the folder's ``session.json`` disables.

    ``threads`` pins intra-op threads so latency figures are comparable with PyTorch at the same count.
    """
    return _create(model_path, _session_options(threads), device)


def _create(model_path: Path, opts: Any, device: str) -> Any:
    import onnxruntime as ort

    disabled = session_settings(model_path).get("disabled_optimizers") or []
    return ort.InferenceSession(str(model_path), sess_options=opts, providers=providers_for(device),
                                **({"disabled_optimizers": list(disabled)} if disabled else {}))


def _session_options(threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3  # warnings about unused initialisers and the like are noise for users
    return opts


def tokenize_numpy(tokenizer: Any, texts: list[str], max_length: int,
                   pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """Tokenise to int64 numpy arrays ``(len(texts), seq)``, padded to the longest text or to ``max_length``: the
    inputs of a session."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_tensors="np",
                    padding="max_length" if pad_to_max else True)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


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


# ---------------------------------------------------------------- which provider ran each node

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class NodeOnCpu:
    """One graph node that ONNX Runtime ran on the CPU although the session asked for a GPU first."""

    name: str
    """Node name in the optimised graph (ONNX Runtime names unnamed nodes ``<op>_<index>``)."""
    op_type: str
    """Operator, e.g. ``Shape`` or ``Gather``."""


@dataclass(frozen=True)
class Placement:
    """Where the nodes of one inference ran, as ONNX Runtime's profiler saw them."""

    nodes_per_provider: dict[str, int]
    """Distinct nodes that ran, per execution provider, most first; TensorRT counts each fused engine as one node."""
    cpu_fallback: tuple[NodeOnCpu, ...]
    """Nodes that ran on ``CPUExecutionProvider`` while the session's first provider was a GPU one; empty for a
    CPU session, where the CPU is what was asked for."""

    def to_json(self) -> dict[str, Any]:
        """The ``placement`` object of a benchmark record (see ``report.REPORT_SCHEMA``)."""
        return {"nodes_per_provider": dict(self.nodes_per_provider),
                "cpu_fallback_nodes": [{"name": n.name, "op_type": n.op_type} for n in self.cpu_fallback]}


_KERNEL_SUFFIX = "_kernel_time"


def _node_runs(events: Sequence[dict]) -> list[tuple[str, str, str]]:
    """(node name, op type, provider) of each distinct node in profiler ``events``, in the order they first ran.

    Node events (cat ``Node``) carry ``op_name`` and ``provider``; older runtimes also emit per-node
    ``fence_before``/``fence_after`` events without a provider, which are skipped. A node is keyed by its index
    when the trace gives one, so a node that ran twice counts once and unnamed nodes stay apart.
    """
    seen: dict[str, tuple[str, str, str]] = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or "provider" not in args:
            continue
        name = str(e.get("name", ""))
        name = name[:-len(_KERNEL_SUFFIX)] if name.endswith(_KERNEL_SUFFIX) else name
        seen.setdefault(str(args.get("node_index", name)), (name, str(args.get("op_name", "")), str(args["provider"])))
    return list(seen.values())


def nodes_per_provider(events: Sequence[dict]) -> dict[str, int]:
    """Count of distinct nodes per execution provider in profiler ``events``, most first."""
    return dict(Counter(provider for _, _, provider in _node_runs(events)).most_common())


def cpu_fallback(events: Sequence[dict], providers: Sequence[str]) -> tuple[NodeOnCpu, ...]:
    """Nodes of profiler ``events`` that ran on the CPU although ``providers`` (the session's, best first) put a
    GPU provider first; empty when the CPU itself was first, since then nothing fell back."""
    if not providers or providers[0] not in GPU_PROVIDERS:
        return ()
    return tuple(NodeOnCpu(name, op) for name, op, provider in _node_runs(events) if provider == CPU_PROVIDER)


def profile_node_events(model_path: Path, feed: dict[str, np.ndarray], device: str = "cpu",
                        threads: int | None = None) -> tuple[list[dict], list[str]]:
    """Run ``feed`` once under ONNX Runtime's profiler; return the trace's node events and the session providers.

    The session is built like ``make_session`` (same optimisation level and threads), so its nodes and their
    placement are those of the session that is timed. Why the profiler: it is the only public API that says
    which provider ran each node after partitioning. The trace file is written to a temporary folder and removed.
    """
    opts = _session_options(threads)
    opts.enable_profiling = True
    with tempfile.TemporaryDirectory(prefix="compresskit-profile-") as tmp:
        opts.profile_file_prefix = str(Path(tmp) / "ort")
        session = _create(model_path, opts, device)
        session.run(None, session_inputs(session, feed))
        trace = Path(session.end_profiling())
        events = json.loads(trace.read_text(encoding="utf-8"))
        providers = session.get_providers()
    return [e for e in events if e.get("cat") == "Node"], providers


def node_placement(model_path: Path, feed: dict[str, np.ndarray], device: str = "cpu",
                   threads: int | None = None) -> Placement:
    """Which execution provider ran each node of ``model_path`` on one real ``feed`` (a tokenised batch).

    Costs one extra session and one profiled run; call it apart from any timed session, since profiling slows
    every node it records.
    """
    events, providers = profile_node_events(model_path, feed, device, threads)
    return Placement(nodes_per_provider(events), cpu_fallback(events, providers))
