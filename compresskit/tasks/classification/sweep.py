"""``compresskit sweep``: can the student do the teacher's job, and which distillation settings matter?

Distils one student per point of a grid (student architecture × temperature T × α), always including the
no-teacher ablation (α = 0: hard labels only, same student, same budget), and reports for each point the test
accuracy with a bootstrap 95 % CI, agreement with the teacher, latency at batch 1 and size. KD is compared with
hard-label training by a paired bootstrap on the same test articles, choosing the KD settings on *validation*
accuracy so the test set does not pick the winner. Every point is stored as it finishes: a rerun skips it.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, folder_size_mb, read_json, write_json
from compresskit.models import LoadOptions, count_parameters, load_tokenizer
from compresskit.stats import bootstrap_ci, paired_bootstrap_diff
from compresskit.tasks.classification.bench import BenchConfig, bench
from compresskit.tasks.classification.data import read_labels, read_split
from compresskit.tasks.classification.distill import DistillConfig, distill
from compresskit.tasks.classification.models import head_labels, load_classifier
from compresskit.tasks.classification.training import predict_logits
from compresskit.variants import Variant


@dataclass(frozen=True)
class SweepConfig:
    """The grid and how to measure it."""

    students: tuple[str, ...] = ("0", "0,5", "0,2,5")
    """Student architectures: teacher layer lists, or ``shape:layers=2,hidden=128,...`` (``--students``, ';'-separated)."""
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    """Temperatures T of the KD points (``--temperatures``)."""
    alphas: tuple[float, ...] = (0.0, 0.5, 0.9)
    """α values; 0 is the hard-label ablation, run once per student since T has no effect there (``--alphas``)."""
    n_boot: int = 2000
    """Bootstrap resamples for the confidence intervals."""
    keep_models: bool = False
    """Keep every point's student weights (``--keep-models``); by default only predictions are kept."""

    def __post_init__(self) -> None:
        problems = []
        if not self.students:
            problems.append("--students names no student")
        if any(not t > 0 for t in self.temperatures) or not self.temperatures:
            problems.append(f"--temperatures must be > 0, got {self.temperatures}")
        if any(not 0 <= a <= 1 for a in self.alphas) or not self.alphas:
            problems.append(f"--alphas must be between 0 and 1, got {self.alphas}")
        if problems:
            raise UserError("; ".join(problems))


def _student_kwargs(spec: str) -> dict[str, Any]:
    if spec.startswith("shape:"):
        return {"student_shape": spec[len("shape:"):], "student_layers": "0"}
    return {"student_layers": spec}


def _point_name(spec: str, temperature: float | None, alpha: float) -> str:
    arch = spec.replace("shape:", "").replace(",", "-").replace("=", "")
    if alpha == 0:
        return f"S[{arch}]-hard"
    return f"S[{arch}]-T{temperature:g}-a{alpha:g}"


def grid(cfg: SweepConfig) -> list[tuple[str, float | None, float]]:
    """(student spec, T, α) points; α = 0 appears once per student (T is irrelevant without soft targets)."""
    points = []
    for spec in cfg.students:
        if 0.0 in cfg.alphas:
            points.append((spec, None, 0.0))
        points += [(spec, t, a) for a in cfg.alphas if a > 0 for t in cfg.temperatures]
    return points


def _predict(model_dir: Path, data_dir: Path, split: str, max_length: int) -> np.ndarray:
    """Predicted label ids (in the data's sorted label order) on one split."""
    model = load_classifier(str(model_dir), LoadOptions())
    tok = load_tokenizer(str(model_dir), LoadOptions())
    texts, _ = read_split(data_dir, split)
    pred = predict_logits(model, tok, texts, max_length).argmax(-1)
    order = head_labels(model.config)
    data_labels = read_labels(data_dir)
    remap = np.array([data_labels.index(n) for n in order])
    return remap[pred]


def run_point(base: DistillConfig, spec: str, temperature: float | None, alpha: float, teacher_dir: Path,
              data_dir: Path, out: Path, cache: Path, keep_model: bool) -> dict[str, Any]:
    """Distil one point and store its predictions (``point.json``); reuse them when already there."""
    record = out / "point.json"
    if record.is_file():
        return read_json(record)
    cfg = dataclasses.replace(base, temperature=temperature or base.temperature, alpha=alpha, **_student_kwargs(spec))
    started = time.time()
    result = distill(cfg, teacher_dir, data_dir, out / "student", cache)
    student_rec = read_json(out / "student" / "distill.json")
    point = {
        "name": _point_name(spec, temperature, alpha), "student": spec, "temperature": temperature, "alpha": alpha,
        "kind": "hard-labels" if alpha == 0 else "kd",
        "student_layers": student_rec["layers"],
        "hidden_size": read_json(out / "student" / "config.json")["hidden_size"],
        "parameters": result.parameters, "validation_accuracy": result.validation_accuracy,
        "train_seconds": student_rec.get("train_seconds"), "seconds": round(time.time() - started, 1),
        "size_mb": round(folder_size_mb(out / "student", (".safetensors",)), 2),
        "test_predictions": _predict(out / "student", data_dir, "test", base.train.max_length).tolist(),
    }
    if not keep_model:
        shutil.rmtree(out / "student")
    write_json(record, point)
    return point


def _latency_by_architecture(points: list[dict], teacher_dir: Path, data_dir: Path, work: Path,
                             bench_cfg: BenchConfig, base: DistillConfig) -> dict[str, float]:
    """p50 at batch 1 for the teacher and one student per architecture (T and α do not change the speed)."""
    archs = {}
    for p in points:
        archs.setdefault(p["student"], p)
    variants = [Variant("teacher", "teacher", "pytorch", "fp32", teacher_dir)]
    for spec in archs:
        folder = work / "latency" / _point_name(spec, None, 0.0)
        if not (folder / "config.json").is_file():
            # an untrained student of the same shape runs exactly as fast as a trained one
            teacher = load_classifier(str(teacher_dir), LoadOptions())
            from compresskit.tasks.classification.distill import build_student

            kwargs = _student_kwargs(spec)
            student, _ = build_student(dataclasses.replace(base, **kwargs), teacher, None, head_labels(teacher.config))
            student.save_pretrained(folder)
        variants.append(Variant(spec, "student", "pytorch", "fp32", folder))
    result = bench(bench_cfg, variants, data_dir, work / "latency" / "bench")
    return {v["name"]: v["latency_ms"]["batch_1"]["p50"] for v in result["variants"]}


def sweep(cfg: SweepConfig, base: DistillConfig, teacher_dir: Path, data_dir: Path, out: Path,
          bench_cfg: BenchConfig, cache: Path) -> dict[str, Any]:
    """Run the grid into ``out`` and write ``sweep.{json,md,html,png}``; returns rows and comparisons."""
    from compresskit.tasks.classification.sweep_report import write_sweep_report

    out.mkdir(parents=True, exist_ok=True)
    points = []
    todo = grid(cfg)
    for i, (spec, t, a) in enumerate(todo, 1):
        name = _point_name(spec, t, a)
        print(f"[sweep {i}/{len(todo)}] {name}", flush=True)
        points.append(run_point(base, spec, t, a, teacher_dir, data_dir, out / "points" / name, cache,
                                cfg.keep_models))
    _, gold_ids = read_split(data_dir, "test")
    gold = np.array(gold_ids)
    teacher_pred = _predict(teacher_dir, data_dir, "test", base.train.max_length)
    latency = _latency_by_architecture(points, teacher_dir, data_dir, out, bench_cfg, base)
    teacher_model = load_classifier(str(teacher_dir), LoadOptions())
    t_correct = (teacher_pred == gold).astype(int)
    rows = [{"name": "teacher", "kind": "teacher", "student_layers": teacher_model.config.num_hidden_layers,
             "hidden_size": teacher_model.config.hidden_size, "temperature": None, "alpha": None,
             "accuracy": float(t_correct.mean()), **dict(zip(("ci_low", "ci_high"), bootstrap_ci(t_correct, cfg.n_boot))),
             "agreement_with_teacher": 1.0, "latency_ms_p50": latency["teacher"],
             "size_mb": round(folder_size_mb(teacher_dir, (".safetensors",)), 2),
             "parameters": count_parameters(teacher_model), "train_seconds": None}]
    correct: dict[str, np.ndarray] = {}
    for p in points:
        pred = np.array(p["test_predictions"])
        c = (pred == gold).astype(int)
        correct[p["name"]] = c
        lo, hi = bootstrap_ci(c, cfg.n_boot)
        rows.append({k: p[k] for k in ("name", "kind", "student_layers", "hidden_size", "temperature", "alpha",
                                       "parameters", "size_mb", "train_seconds", "validation_accuracy")}
                    | {"accuracy": float(c.mean()), "ci_low": lo, "ci_high": hi,
                       "agreement_with_teacher": float((pred == teacher_pred).mean()),
                       "latency_ms_p50": latency[p["student"]]})
    comparisons = []
    for spec in cfg.students:
        kd = [p for p in points if p["student"] == spec and p["alpha"] > 0]
        hard = [p for p in points if p["student"] == spec and p["alpha"] == 0]
        if not kd or not hard:
            continue
        best = max(kd, key=lambda p: (p["validation_accuracy"] or 0, -abs((p["temperature"] or 0) - 2)))
        d = paired_bootstrap_diff(correct[best["name"]], correct[hard[0]["name"]], cfg.n_boot)
        comparisons.append({"label": f"{best['name']} (best KD on validation) vs {hard[0]['name']}",
                            "a": best["name"], "b": hard[0]["name"], **d})
    write_json(out / "sweep_config.json", {"sweep": dataclasses.asdict(cfg), "distill": dataclasses.asdict(base),
                                           "bench": dataclasses.asdict(bench_cfg), "teacher": str(teacher_dir),
                                           "data": str(data_dir)})
    paths = write_sweep_report(rows, comparisons, out, "compresskit sweep: accuracy against latency")
    return {"rows": rows, "comparisons": comparisons, "paths": paths}
