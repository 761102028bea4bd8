"""Stage 5: benchmark each model variant in a fresh process: accuracy, latency, throughput, memory, size.

Why a process per variant: peak RSS is a per-process figure, and a model loaded earlier (or torch's own
allocations) would otherwise be counted against the next one. The parent tokenises the test split once into
``inputs.npz`` so every variant sees identical inputs and the ONNX workers never import torch.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, atomic_dir, folder_size_mb, read_json, stage_record, write_json
from compresskit.data import read_split_for_head
from compresskit.machine import default_threads, machine_info, pytorch_form_unsupported
from compresskit.timing import Latency
from compresskit.variants import TEACHER_FORMS, Variant, reference_teacher


@dataclass(frozen=True)
class BenchConfig:
    """What to measure and how long."""

    batch_sizes: tuple[int, ...] = (1, 32)
    """Batch sizes whose latency is measured; batch 1 is always included (``--batch-sizes``)."""
    sequence_length: int = 128
    """Every input is padded/truncated to this many tokens, so latencies compare like with like (``--sequence-length``).
    The main length: accuracy and the ``latency_ms`` batch keys (what the report's table and the gates read) are
    measured at it."""
    seq_lengths: tuple[int, ...] = ()
    """More sequence lengths to time every batch size at, a workload sweep (``--seq-lengths``); the main
    ``sequence_length`` is always included. Empty: only the main length."""
    teacher_forms: tuple[str, ...] = ("bf16", "compile")
    """Faster PyTorch forms of the teacher to measure too (``--teacher-forms``; see ``variants.teacher_forms``); a
    form this machine cannot run is recorded as skipped, with the reason."""
    warmup: int = 5
    """Untimed runs before timing each batch size (Python API; the CLI keeps the default)."""
    min_iterations: int = 30
    """Timed runs at least (``--iterations``)."""
    min_seconds: float = 3.0
    """…and keep timing until this much time has passed, for stable percentiles (``--min-seconds``)."""
    rounds: int = 5
    """Fresh processes each variant is timed in, the rounds interleaved across variants (``--rounds``). Why: on a
    shared machine one process of a model can run 10–30 % faster or slower than the next (where its memory and
    threads land), a difference no number of timed runs inside one process shows; ``compare`` needs the spread
    between processes to tell a real latency change from it. ``min_iterations`` and ``min_seconds`` are split
    across the rounds; round 1 also predicts the test split and times the workload sweep."""
    threads: int | None = None
    """Intra-op threads for every variant; None uses the physical cores (``--threads``)."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda`` for the PyTorch variants (``--device``)."""
    provider: str = "auto"
    """ONNX Runtime execution provider for the ONNX variants: ``auto`` (best available), ``cpu``, ``cuda``,
    ``tensorrt`` (``--provider``); the providers each session really used, and the nodes that ran on the CPU
    under a GPU provider, are recorded per variant."""
    max_samples: int | None = None
    """Test examples used for accuracy; None uses the whole test split (Python API; the CLI measures them all)."""

    def __post_init__(self) -> None:
        problems = []
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            problems.append(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if not 8 <= self.sequence_length <= 8192:
            problems.append(f"--sequence-length must be between 8 and 8192, got {self.sequence_length}")
        if any(not 8 <= n <= 8192 for n in self.seq_lengths):
            problems.append(f"--seq-lengths must be between 8 and 8192 each, got {self.seq_lengths}")
        if unknown := [f for f in self.teacher_forms if f not in TEACHER_FORMS]:
            problems.append(f"--teacher-forms takes {', '.join(TEACHER_FORMS)} or none, got {', '.join(unknown)}")
        if self.warmup < 0 or self.min_iterations < 1 or self.min_seconds < 0:
            problems.append("warmup must be >= 0, --iterations >= 1 and --min-seconds >= 0")
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or not 1 <= self.rounds <= 50:
            problems.append(f"--rounds must be an integer from 1 to 50, got {self.rounds!r}")
        if self.threads is not None and self.threads < 1:
            problems.append(f"--threads must be >= 1, got {self.threads}")
        if self.provider not in ("auto", "cpu", "cuda", "tensorrt"):
            problems.append(f"--provider must be auto, cpu, cuda or tensorrt, got {self.provider!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            problems.append(f"--device must be auto, cpu or cuda, got {self.device!r}")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def sizes(self) -> tuple[int, ...]:
        """Batch sizes to time, batch 1 first."""
        return tuple(sorted({1, *self.batch_sizes}))

    def per_round(self) -> BenchConfig:
        """This config with its timing budget split across ``rounds`` (what each worker process gets)."""
        return dataclasses.replace(self, min_iterations=max(1, math.ceil(self.min_iterations / self.rounds)),
                                   min_seconds=self.min_seconds / self.rounds)

    @property
    def lengths(self) -> tuple[int, ...]:
        """Sequence lengths to time, the main ``sequence_length`` among them, shortest first."""
        return tuple(sorted({self.sequence_length, *self.seq_lengths}))


def macro_f1(pred: np.ndarray, gold: np.ndarray, classes: int) -> float:
    """Unweighted mean of per-class F1 over the classes present in gold or predictions."""
    scores = []
    for c in range(classes):
        tp = int(((pred == c) & (gold == c)).sum())
        fp = int(((pred == c) & (gold != c)).sum())
        fn = int(((pred != c) & (gold == c)).sum())
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores)) if scores else 0.0


def label_quality(pred: np.ndarray, gold: np.ndarray, reference: np.ndarray | None, classes: int
                  ) -> dict[str, float | None]:
    """Accuracy and macro-F1 of predicted labels against ``gold``, and agreement with the reference teacher's
    predictions ``reference`` (None without one): text classification's quality metrics."""
    return {"accuracy": float((pred == gold).mean()), "macro_f1": macro_f1(pred, gold, classes),
            "agreement_with_teacher": float((pred == reference).mean()) if reference is not None else None}


@dataclass(frozen=True)
class BenchResult:
    """What ``bench`` measured, as written to ``bench.json``: one row per variant (the report's ``variants``)."""

    task: str
    sequence_length: int
    test_samples: int
    threads: int
    reference_teacher: str | None
    machine: dict[str, Any]
    variants: list[dict[str, Any]]
    seq_lengths: list[int] = dataclasses.field(default_factory=list)
    """Every sequence length timed (each variant's ``workloads`` holds its cells)."""
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Variants that were not measured: ``{"name", "model", "reason"}`` (a teacher form this machine cannot run)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (bench.json)."""
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> Any:
        """bench.json's keys read the same fields, for code that reads the JSON form (``result["variants"]``)."""
        return getattr(self, key)


def model_size_mb(v: Variant) -> float:
    """Bytes on disk of the weights (safetensors for PyTorch, the graph and its data for ONNX), in MB."""
    suffixes = {"pytorch": (".safetensors",), "sklearn": (".pkl",)}.get(v.format, (".onnx", ".data"))
    return round(folder_size_mb(v.path, suffixes), 3)


def write_inputs(cfg: BenchConfig, data_dir: Path, tokenizer_dir: Path, labels_order: list[str], out: Path) -> int:
    """Tokenise the test split once (padded to ``sequence_length``) into ``out`` for all workers."""
    from transformers import AutoTokenizer

    from compresskit.export import tokenize_numpy

    texts, ids = read_split_for_head(data_dir, "test", labels_order, cfg.max_samples)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    arrays = tokenize_numpy(tokenizer, texts, cfg.sequence_length, pad_to_max=True)
    labels = np.array(ids, dtype=np.int64)
    np.savez(out, labels=labels, **arrays)
    for length in cfg.lengths:  # the workload sweep's other lengths, the same texts
        if length != cfg.sequence_length:
            np.savez(length_inputs(out, length), **tokenize_numpy(tokenizer, texts, length, pad_to_max=True))
    return len(texts)


def length_inputs(inputs: Path, length: int) -> Path:
    """Where ``write_inputs`` puts the test inputs tokenised to ``length`` (a sweep length other than the main one)."""
    return inputs.with_name(f"{inputs.stem}-seq{length}.npz")


def unsupported(v: Variant, device: str) -> str | None:
    """Why this machine cannot run ``v`` (a PyTorch form that needs native bf16 or a C++ compiler), or None.
    ``device`` is the PyTorch device setting (``auto`` resolves to CUDA when torch sees a GPU)."""
    if v.format != "pytorch" or (v.precision == "fp32" and v.runtime == "eager"):
        return None
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    return pytorch_form_unsupported(v.precision, v.runtime, device)


def run_worker(module: str, v: Variant, cfg: Any, inputs: Path, workdir: Path, threads: int,
               extra: dict[str, Any] | None = None, tag: str = "") -> dict[str, Any]:
    """Measure ``v`` in a fresh ``python -m module SPEC RESULT`` process (its spec: the variant, ``cfg``, the inputs
    file, the thread count and ``extra``) and return its result. A worker that exits 2 refused its input: a one-line
    UserError naming the variant; any other failure is reported with its last line of stderr."""
    spec = workdir / f"{v.name}{tag}.spec.json"
    result = workdir / f"{v.name}{tag}.result.json"
    write_json(spec, {"variant": dataclasses.asdict(v), "config": dataclasses.asdict(cfg), "inputs": str(inputs),
                      "threads": threads, **(extra or {})})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", module, str(spec), str(result)], env=env, capture_output=True,
                          text=True, check=False)
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode == UserError.exit_code:  # the worker's own one-line refusal
        raise UserError(f"{v.name}: {last}")
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"benchmark of {v.name} failed: {last}")
    return json.loads(result.read_text(encoding="utf-8"))


def bench(cfg: BenchConfig, variants: list[Variant], data_dir: Path, out: Path, task: Any = None) -> BenchResult:
    """Measure every variant on the test split; writes ``out/bench.json`` and returns it.

    The task's quality metrics (``task.quality``; None: text classification's ``label_quality``: accuracy, macro-F1,
    agreement with the teacher's predictions) come from the same padded test inputs the latency runs use; agreement
    is with ``reference_teacher``.
    """
    from rich.console import Console

    if not variants:
        raise UserError("no model variants to benchmark")
    for v in variants:
        if not Path(v.path).exists():
            raise UserError(f"{v.name}: {v.path} does not exist")
    started = time.time()
    threads = cfg.threads or default_threads()
    labels_order = read_json(Path(variants[0].path) / "labels.json") if (Path(variants[0].path) / "labels.json").is_file() \
        else _labels_from_config(Path(variants[0].path))
    console = Console(stderr=True)
    with atomic_dir(out) as tmp:
        inputs = tmp / "inputs.npz"
        n = write_inputs(cfg, data_dir, Path(variants[0].path), labels_order, inputs)
        gold = np.load(inputs)["labels"]
        raw: dict[str, dict[str, Any]] = {}
        skipped: list[dict[str, Any]] = []
        by_length = {str(k): str(length_inputs(inputs, k)) for k in cfg.lengths if k != cfg.sequence_length}
        per_round = cfg.per_round()
        with console.status("") as status:
            for i, v in enumerate(variants, 1):
                if reason := unsupported(v, cfg.device):
                    skipped.append({"name": v.name, "model": v.model, "reason": reason})
                    console.log(f"{v.name}: skipped, {reason}")
                    continue
                status.update(f"benchmarking {v.name} ({i}/{len(variants)}) on {n} test inputs, {threads} threads"
                              + (f", round 1 of {cfg.rounds}" if cfg.rounds > 1 else ""))
                raw[v.name] = _measure(v, per_round, inputs, tmp, threads, data_dir, labels_order, by_length)
                if "skipped" in raw[v.name]:  # the worker tried and could not (torch.compile failed)
                    skipped.append({"name": v.name, "model": v.model, "reason": raw.pop(v.name)["skipped"]})
                    console.log(f"{v.name}: skipped, {skipped[-1]['reason']}")
                    continue
                console.log(f"{v.name}: p50 @1 {raw[v.name]['latency_ms']['batch_1']['p50']:.2f} ms")
            # Later rounds time the main-length batch sizes again, each variant in a new process, round by round
            # so that a machine slowing down over the run weighs on every variant alike.
            later: dict[str, list[dict[str, Any]]] = {name: [] for name in raw}
            for r in range(2, cfg.rounds + 1):
                for v in (v for v in variants if v.name in raw):
                    status.update(f"timing {v.name}, round {r} of {cfg.rounds}, {threads} threads")
                    later[v.name].append(_measure(v, per_round, inputs, tmp, threads, data_dir, labels_order, {},
                                                  latency_only=True, tag=f".round{r}"))
            for name, rest in later.items():
                _pool_rounds(raw[name], rest, cfg.sequence_length)
        teacher = getattr(reference_teacher(variants), "name", None)
        teacher_pred = np.array(raw[teacher]["predictions"]) if teacher else None
        rows = []
        for v in (v for v in variants if v.name in raw):
            r = raw[v.name]
            pred = np.array(r["predictions"])
            rows.append({
                "name": v.name, "model": v.model, "format": v.format, "precision": v.precision,
                "device": r["device"], "providers": r.get("providers", []), "path": str(v.path),
                **(task.quality if task else label_quality)(pred, gold, teacher_pred, len(labels_order)),
                "size_mb": model_size_mb(v), "parameters": v.parameters,
                "peak_rss_mb": r["peak_rss_mb"], "peak_gpu_mb": r.get("peak_gpu_mb"),
                "load_seconds": r["load_seconds"],
                "placement": r.get("placement"),
                "latency_ms": r["latency_ms"],
                "throughput_per_s": {k: round(int(k.split("_")[1]) * 1000.0 / lat["mean"], 2)
                                     for k, lat in r["latency_ms"].items()},
                # what `compresskit compare` pairs two runs on: the label id per test example, and every timed run
                "predictions": [int(p) for p in pred],
                "latency_samples_ms": r.get("latency_samples_ms"),
                # each round's p50 per batch size: what compare's latency interval is built from (see BenchConfig)
                "latency_rounds_ms": r.get("latency_rounds_ms"),
                # the workload sweep (batch × sequence cells), a compiled form's compile time, the GPU's batch limit
                "workloads": r.get("workloads"),
                **{k: r[k] for k in ("compile_seconds", "max_batch_before_oom") if k in r},
            })
        result = BenchResult(task.name if task else "text-classification", cfg.sequence_length, n, threads, teacher,
                             machine_info(threads), rows, list(cfg.lengths), skipped)
        write_json(tmp / "bench.json", result.to_dict())
        write_json(tmp / "bench_record.json", stage_record(
            "bench", dataclasses.asdict(cfg), {"data": str(data_dir), "variants": [v.name for v in variants]},
            started))
        for f in tmp.glob("*.spec.json"):
            f.unlink()
    return result


def _measure(v: Variant, cfg: BenchConfig, inputs: Path, workdir: Path, threads: int, data_dir: Path,
             labels_order: list[str], by_length: dict[str, str], latency_only: bool = False, tag: str = ""
             ) -> dict[str, Any]:
    """One worker process measuring ``v``; ``latency_only``: time the main-length batch sizes, nothing else."""
    if v.format == "sklearn":  # the baseline reads raw texts, not token ids: its own worker
        return run_worker("compresskit.baseline", v, cfg, inputs, workdir, threads,
                          {"data": str(data_dir), "labels_order": labels_order, "latency_only": latency_only}, tag)
    return run_worker("compresskit.bench_worker", v, cfg, inputs, workdir, threads,
                      {"inputs_by_length": by_length, "latency_only": latency_only}, tag)


def _pool_rounds(first: dict[str, Any], later: list[dict[str, Any]], main_length: int) -> None:
    """Fold the later rounds' timed runs into round 1's result ``first`` (in place): ``latency_samples_ms`` pools
    every round's runs and ``latency_ms`` (and the workload cells at the main length) summarise the pool;
    ``latency_rounds_ms`` keeps each round's p50, in round order."""
    pooled = {k: list(s) for k, s in (first.get("latency_samples_ms") or {}).items()}
    rounds = {k: [float(np.median(s))] for k, s in pooled.items()}
    for res in later:
        for k, s in (res.get("latency_samples_ms") or {}).items():
            if k in pooled and s:
                pooled[k] += s
                rounds[k].append(float(np.median(s)))
    first["latency_samples_ms"] = pooled
    first["latency_rounds_ms"] = rounds
    first["latency_ms"] = {k: Latency.from_samples(s).__dict__ for k, s in pooled.items()}
    for cell in first.get("workloads") or []:
        key = f"batch_{cell.get('batch')}"
        if cell.get("sequence_length") == main_length and key in pooled:
            lat = first["latency_ms"][key]
            cell["latency_ms"] = lat
            cell["throughput_per_s"] = round(cell["batch"] * 1000.0 / lat["mean"], 2)
            cell["rounds"] = len(rounds[key])
    first["peak_rss_mb"] = max([first.get("peak_rss_mb") or 0.0] + [r.get("peak_rss_mb") or 0.0 for r in later])


def _labels_from_config(model_dir: Path) -> list[str]:
    config = read_json(model_dir / "config.json")
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]
