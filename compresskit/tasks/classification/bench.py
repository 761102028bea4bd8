"""The classifier's benchmark: accuracy, latency, throughput, memory and size of each variant, on the shared harness
(``compresskit.bench``: a fresh process per variant and round).

The parent tokenises the test split once into ``inputs.npz`` so every variant sees identical inputs and the ONNX
workers never import torch; the workers are ``bench_worker`` (PyTorch and ONNX) and ``baseline`` (TF-IDF).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, atomic_dir, read_json, stage_record, write_json
from compresskit.bench import BenchResult, harness_problems, model_size_mb, pool_samples, run_rounds, run_worker
from compresskit.machine import default_threads, machine_info, pytorch_form_unsupported
from compresskit.run import RunLayout
from compresskit.tasks.classification.data import TASK, read_labels, read_split_for_head
from compresskit.variants import REFERENCE_TEACHER, TEACHER_FORMS, Variant, reference_teacher, teacher_forms


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
        problems += harness_problems(self.rounds, self.threads, self.device)
        if self.provider not in ("auto", "cpu", "cuda", "tensorrt"):
            problems.append(f"--provider must be auto, cpu, cuda or tensorrt, got {self.provider!r}")
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


def write_inputs(cfg: BenchConfig, data_dir: Path, tokenizer_dir: Path, labels_order: list[str], out: Path) -> int:
    """Tokenise the test split once (padded to ``sequence_length``) into ``out`` for all workers."""
    from transformers import AutoTokenizer

    from compresskit.tasks.classification.export import tokenize_numpy

    texts, ids = read_split_for_head(data_dir, "test", labels_order, cfg.max_samples)
    if any(i < 0 for i in ids):  # the stages map a head's labels before this: a gold id it lacks is our bug
        missing = sorted(set(read_labels(data_dir)) - set(labels_order))
        raise RuntimeError(f"the test split holds label(s) {', '.join(missing)} that the measured head "
                           f"({', '.join(labels_order)}) does not know: every variant would score them wrong")
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
    from compresskit.training import resolve_device

    return pytorch_form_unsupported(v.precision, v.runtime, resolve_device(device))


def bench(cfg: BenchConfig, variants: list[Variant], data_dir: Path, out: Path) -> BenchResult:
    """Measure every variant on the test split; writes ``out/bench.json`` and returns it.

    Accuracy, macro-F1 and agreement with ``reference_teacher``'s predictions come from the same padded test inputs
    the latency runs use. Round 1 predicts the test split and times the workload sweep; later rounds time the
    main-length batch sizes again, each in a new process (``compresskit.bench.run_rounds``).
    """
    from rich.console import Console

    if not variants:
        raise UserError("no model variants to benchmark")
    for v in variants:
        if not Path(v.path).exists():
            raise UserError(f"{v.name}: {v.path} does not exist")
    started = time.time()
    threads = cfg.threads or default_threads()
    head = Path(variants[0].path)
    labels_order = read_json(head / "labels.json") if (head / "labels.json").is_file() else _labels_from_config(head)
    console = Console(stderr=True)
    with atomic_dir(out) as tmp:
        inputs = tmp / "inputs.npz"
        n = write_inputs(cfg, data_dir, Path(variants[0].path), labels_order, inputs)
        gold = np.load(inputs)["labels"]
        by_length = {str(k): str(length_inputs(inputs, k)) for k in cfg.lengths if k != cfg.sequence_length}
        per_round = cfg.per_round()

        def measure(v: Variant, r: int) -> dict[str, Any]:
            if r == 1 and (reason := unsupported(v, cfg.device)):
                console.log(f"{v.name}: skipped, {reason}")
                return {"skipped": reason}
            res = _measure(v, per_round, inputs, tmp, threads, data_dir, labels_order, by_length if r == 1 else {},
                           latency_only=r > 1, tag=f".round{r}" if r > 1 else "")
            if "skipped" in res:  # the worker tried and could not (torch.compile failed)
                console.log(f"{v.name}: skipped, {res['skipped']}")
            elif r == 1:
                console.log(f"{v.name}: p50 @1 {res['latency_ms']['batch_1']['p50']:.2f} ms")
            return res

        def describe(v: Variant, i: int, r: int) -> str:
            if r == 1:
                return (f"benchmarking {v.name} ({i}/{len(variants)}) on {n} test inputs, {threads} threads"
                        + (f", round 1 of {cfg.rounds}" if cfg.rounds > 1 else ""))
            return f"timing {v.name}, round {r} of {cfg.rounds}, {threads} threads"

        with console.status("") as status:
            results, skipped = run_rounds(variants, cfg.rounds, measure, status.update, describe)
        raw = {name: _pool_rounds(res[0], res[1:], cfg.sequence_length) for name, res in results.items()}
        teacher = getattr(reference_teacher(variants), "name", None)
        teacher_pred = np.array(raw[teacher]["predictions"]) if teacher else None
        rows = []
        for v in (v for v in variants if v.name in raw):
            r = raw[v.name]
            pred = np.array(r["predictions"])
            rows.append({
                "name": v.name, "model": v.model, "format": v.format, "precision": v.precision,
                "device": r["device"], "providers": r.get("providers", []), "path": str(v.path),
                **label_quality(pred, gold, teacher_pred, len(labels_order)),
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
        result = BenchResult(TASK, cfg.sequence_length, n, threads, teacher,
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
        return run_worker("compresskit.tasks.classification.baseline", v, cfg, inputs, workdir, threads,
                          {"data": str(data_dir), "labels_order": labels_order, "latency_only": latency_only}, tag)
    return run_worker("compresskit.tasks.classification.bench_worker", v, cfg, inputs, workdir, threads,
                      {"inputs_by_length": by_length, "latency_only": latency_only}, tag)


def _pool_rounds(first: dict[str, Any], later: list[dict[str, Any]], main_length: int) -> dict[str, Any]:
    """Round 1's result ``first`` with the later rounds' timed runs folded in (``compresskit.bench.pool_samples``):
    ``latency_samples_ms`` pools every round's runs, ``latency_ms`` (and the workload cells at the main length)
    summarise the pool, ``latency_rounds_ms`` keeps each round's p50 in round order, and peak RSS is the largest of
    any round. Returns ``first``, changed in place."""
    per_key = {k: [list(s)] for k, s in (first.get("latency_samples_ms") or {}).items()}
    for res in later:
        for k, s in (res.get("latency_samples_ms") or {}).items():
            if k in per_key and s:
                per_key[k].append(s)
    pooled = {k: pool_samples(rounds) for k, rounds in per_key.items()}
    first["latency_samples_ms"] = {k: [x for s in rounds for x in s] for k, rounds in per_key.items()}
    first["latency_rounds_ms"] = {k: medians for k, (_, medians) in pooled.items()}
    first["latency_ms"] = {k: lat.__dict__ for k, (lat, _) in pooled.items()}
    for cell in first.get("workloads") or []:
        key = f"batch_{cell.get('batch')}"
        if cell.get("sequence_length") == main_length and key in pooled:
            lat = first["latency_ms"][key]
            cell["latency_ms"] = lat
            cell["throughput_per_s"] = round(cell["batch"] * 1000.0 / lat["mean"], 2)
            cell["rounds"] = len(first["latency_rounds_ms"][key])
    first["peak_rss_mb"] = max([first.get("peak_rss_mb") or 0.0] + [r.get("peak_rss_mb") or 0.0 for r in later])
    return first


def _labels_from_config(model_dir: Path) -> list[str]:
    config = read_json(model_dir / "config.json")
    id2label = config.get("id2label") or {}
    return [str(id2label[k]) for k in sorted(id2label, key=int)]


def precision_of(mode: str) -> str:
    """The number format a quantization mode leaves the weights in: ``dynamic-int8`` → ``int8``."""
    return {"fp16": "fp16", "int4": "int4"}.get(mode, "int8")


def discover_variants(layout: RunLayout, forms: Iterable[str] = ()) -> list[Variant]:
    """The variants present in a run folder, teacher first; with ``forms`` (see ``teacher_forms``) the PyTorch
    teacher's other forms follow it."""
    teacher_dir = layout.recorded_teacher()

    def params(folder: Path, record: str) -> int | None:
        p = folder / record
        return read_json(p).get("parameters") if p.is_file() else None

    t_params = params(teacher_dir, "finetune.json")
    s_params = params(layout.student, "distill.json")

    def quantized(model: str, parameters: int | None) -> list[Variant]:
        """``<model>-onnx-<precision>`` when the quantize stage made ``onnx/<model>-quantized``. The teacher's is the
        quantize-only arm: the teacher's own graph through the student's quantization and verification."""
        folder = layout.onnx(f"{model}-quantized")
        if not (folder / "quantize.json").is_file():
            return []
        precision = precision_of(read_json(folder / "quantize.json").get("mode", "dynamic-int8"))
        return [Variant(f"{model}-onnx-{precision}", model, "onnx", precision, folder, parameters)]

    candidates = [
        Variant("teacher-pytorch", "teacher", "pytorch", "fp32", teacher_dir, t_params),
        Variant("teacher-onnx", "teacher", "onnx", "fp32", layout.onnx("teacher"), t_params),
        *quantized("teacher", t_params),
        Variant("student-pytorch", "student", "pytorch", "fp32", layout.student, s_params),
        Variant("student-onnx", "student", "onnx", "fp32", layout.onnx("student"), s_params),
        *quantized("student", s_params),
    ]
    baseline = layout.baseline / "baseline.json"
    if baseline.is_file():  # the classical TF-IDF baseline, measured like a model
        candidates.append(Variant("baseline-tfidf", "baseline", "sklearn", "fp64", layout.baseline,
                                  read_json(baseline).get("parameters")))
    marker = {"onnx": "model.onnx", "sklearn": "baseline.json"}
    found = [v for v in candidates if (v.path / marker.get(v.format, "config.json")).is_file()]
    if not found:
        raise UserError(f"{layout.root} holds no models to benchmark (expected teacher/, student/, onnx/…)")
    if found[0].name == REFERENCE_TEACHER:
        found[1:1] = teacher_forms(found[0], forms)
    return found
