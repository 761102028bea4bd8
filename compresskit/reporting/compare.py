"""Compare a run with a baseline run (``compresskit compare BASELINE CURRENT``): per variant the change in accuracy
with a paired bootstrap interval, the p50 latency ratio with a bootstrap interval from the raw timings, and the
changes in peak memory and size. Writes compare.json, compare.md and compare.html.

Why intervals: a CI job compares this commit with the last accepted one on a few hundred test examples and a
shared machine, where accuracy moves by a point and latency by several percent from noise alone. Accuracy is
paired (both runs predict the same examples, so resampling the same indices cancels what the examples share).
Latency varies most between processes, not within one: a model's p50 can move 10–30 % from one fresh process to
the next on a shared machine while its timed runs inside each process agree to 1 %. So when both runs timed each
variant in several processes (``bench --rounds``), the interval comes from the spread of the per-round p50s (a Welch
t interval of the difference of mean log p50s); resampling the timed runs alone would call that spread a change.
Runs with a single round fall back to a bootstrap of the timed runs, which covers only the noise within a process.

numpy only (no torch): comparing two finished runs must stay cheap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, read_json, write_atomic, write_json
from compresskit.gates import deployed_student
from compresskit.stats import mcnemar_exact_p, paired_bootstrap_diff, rounds_ratio_interval
from compresskit.tasks import Task, get_task
from compresskit.variants import finite_number

# Timed runs drawn per chunk of bootstrap resamples: bounds memory when a fast model was timed thousands of times.
_MAX_DRAWS = 1 << 22
_RESOURCES = ("peak_rss_mb", "peak_gpu_mb", "size_mb", "parameters")


@dataclass(frozen=True)
class CompareConfig:
    """How the intervals are computed (Python API; the CLI keeps the defaults)."""

    n_boot: int = 2000
    """Bootstrap resamples per interval."""
    confidence: float = 0.95
    """Coverage of every interval (0.95: the 2.5th to the 97.5th percentile of the resamples)."""
    seed: int = 0
    """Seed of the resampling: the same two runs always give the same intervals."""

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.n_boot, bool) or not isinstance(self.n_boot, int) or self.n_boot < 1:
            problems.append(f"n_boot must be a positive integer, got {self.n_boot!r}")
        if not (isinstance(self.confidence, (int, float)) and 0 < self.confidence < 1):
            problems.append(f"confidence must lie strictly between 0 and 1, got {self.confidence!r}")
        if problems:
            raise UserError("; ".join(problems))


# ---------------------------------------------------------------- reading the two runs


def load_report(where: Path) -> tuple[dict[str, Any], Path]:
    """A run's report.json, given its run folder or the file itself; a one-line UserError when it is not there or
    is not a compresskit report."""
    where = Path(where)
    if not where.exists():
        raise UserError(f"{where} does not exist: pass a run folder or its report.json")
    path = where / "report.json" if where.is_dir() else where
    if not path.is_file():
        raise UserError(f"{where} holds no report.json: pass a run folder that `compresskit report` (or "
                        f"distill-and-export) has finished, or a report.json")
    report = read_json(path)
    if not isinstance(report, dict) or not isinstance(report.get("variants"), list):
        raise UserError(f"{path} is not a compresskit report (it has no variants list)")
    return report, path


def _count(report: dict) -> int | None:
    return (report.get("test_set") or {}).get("count") or report.get("test_samples")


def check_same_test_set(baseline: dict, current: dict) -> dict[str, Any]:
    """Refuse (UserError) two reports measured on different test examples: a different count or a different hash of
    the test split; when either lacks that hash, a different data hash or different gold labels. Returns what
    identifies the shared set (``count``, ``sha256``)."""
    b, c = baseline.get("test_set") or {}, current.get("test_set") or {}
    nb, nc = _count(baseline), _count(current)
    if nb is not None and nc is not None and nb != nc:
        raise UserError(f"the two runs were measured on different test sets: {nb} examples in the baseline, {nc} in "
                        f"the current run; compare runs made on the same data")
    hb, hc = b.get("sha256"), c.get("sha256")
    split_hashed = bool(hb and hc)
    what = "test split"
    if not split_hashed:  # reports without a test-split hash: the whole data set's hash is the next best thing
        hb, hc, what = (baseline.get("data") or {}).get("sha256"), (current.get("data") or {}).get("sha256"), "data"
    if hb and hc and hb != hc:
        raise UserError(f"the two runs were measured on different test sets: {what} sha256 {hb[:12]}… in the "
                        f"baseline, {hc[:12]}… in the current run; compare runs made on the same data")
    # Gold label ids say more only without the split's hash: with the same examples, another head's label order
    # changes the ids but not which predictions are right, and each run is scored against its own ids.
    lb, lc = b.get("labels"), c.get("labels")
    if not split_hashed and lb is not None and lc is not None and lb != lc:
        raise UserError("the two runs were measured on different test sets: their gold labels differ (another "
                        "label order or other examples); compare runs made on the same data")
    return {"count": nc if nc is not None else nb, "sha256": c.get("sha256") or b.get("sha256")}


# ---------------------------------------------------------------- statistics


def _samples(x: object) -> np.ndarray | None:
    """Timed runs (ms) as a vector, or None when absent or unusable (empty, not finite, not positive)."""
    if not isinstance(x, list) or not x:
        return None
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return a if a.ndim == 1 and np.isfinite(a).all() and (a > 0).all() else None


def _resampled_medians(samples: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Medians of ``n_boot`` bootstrap resamples of ``samples`` (shape (n,)) -> (n_boot,)."""
    n = samples.size
    chunk = max(1, _MAX_DRAWS // n)
    out = np.empty(n_boot)
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        out[start:stop] = np.median(samples[rng.integers(0, n, size=(stop - start, n))], axis=1)
    return out


def p50_ratio_interval(baseline_ms: np.ndarray, current_ms: np.ndarray, cfg: CompareConfig = CompareConfig()
                       ) -> tuple[float, float]:
    """Percentile bootstrap interval of median(current) / median(baseline) from the raw per-run times (ms, shapes
    (n,) and (m,)). The two sets are resampled independently: they are separate runs, not paired measurements."""
    b, c = _samples(list(baseline_ms)), _samples(list(current_ms))
    if b is None or c is None:
        raise ValueError("latency samples must be non-empty vectors of positive, finite milliseconds")
    rng = np.random.default_rng(cfg.seed)
    ratios = _resampled_medians(c, cfg.n_boot, rng) / _resampled_medians(b, cfg.n_boot, rng)
    tail = (1 - cfg.confidence) / 2
    low, high = np.quantile(ratios, [tail, 1 - tail])
    return float(low), float(high)


def _correctness(row: dict, labels: list[int] | None) -> np.ndarray | None:
    """1/0 per test example (prediction == gold), or None without predictions or labels."""
    pred = row.get("predictions")
    if not isinstance(pred, list) or labels is None or len(pred) != len(labels) or not pred:
        return None
    return (np.asarray(pred) == np.asarray(labels)).astype(np.int64)


def _batch_order(key: str) -> int:
    return int(key.split("_")[1]) if key.split("_")[-1].isdigit() else 1 << 30


def compare_variant(base: dict, cur: dict, base_labels: list[int] | None, cur_labels: list[int] | None,
                    task: Task, cfg: CompareConfig = CompareConfig()) -> dict[str, Any]:
    """One variant of the baseline against one of the current run (report rows of the ``task`` family).

    ``metrics``: per quality figure both rows carry (``task.metrics``) ``baseline``, ``current`` and ``change``
    (current − baseline); ``accuracy``
    also has ``low``/``high`` (the paired bootstrap interval of the change) when both rows carry per-example
    ``predictions`` of the same test examples. ``latency``: per batch size measured by both, the p50s, their
    ``ratio`` (current / baseline) and its interval, ``method`` ``rounds`` (both runs timed it in two or more
    processes: ``rounds_ratio_interval``, and the ratio is of the rounds' geometric means) or ``runs`` (a bootstrap
    of the timed runs: the noise within one process only). ``resources``: peak memory, size and
    parameters with their change and ratio.
    """
    metrics: dict[str, dict[str, Any]] = {}
    b_metrics, c_metrics = task.metrics(base), task.metrics(cur)
    for name, c in c_metrics.items():
        if name in b_metrics:
            metrics[name] = {"baseline": b_metrics[name], "current": c, "change": c - b_metrics[name]}
    cb, cc = _correctness(base, base_labels), _correctness(cur, cur_labels)
    if cb is not None and cc is not None and cb.size == cc.size:
        d = paired_bootstrap_diff(cc, cb, n_boot=cfg.n_boot, confidence=cfg.confidence, seed=cfg.seed)
        metrics["accuracy"] = {"baseline": float(cb.mean()), "current": float(cc.mean()), "change": d["diff"],
                               "low": d["low"], "high": d["high"], "examples": int(cc.size),
                               "changed_to_wrong": int(((cb == 1) & (cc == 0)).sum()),
                               "changed_to_right": int(((cb == 0) & (cc == 1)).sum())}
        # the exact test on the changed examples alone, beside the interval: "5 to wrong, 1 to right" reads as a
        # loss, and p says how often equally accurate models would split 6 changes that unevenly
        acc = metrics["accuracy"]
        acc["p_value"] = mcnemar_exact_p(acc["changed_to_wrong"], acc["changed_to_right"])
        metrics = {"accuracy": metrics.pop("accuracy"), **metrics}

    latency: dict[str, dict[str, Any]] = {}
    b_lat, c_lat = base.get("latency_ms") or {}, cur.get("latency_ms") or {}
    b_raw, c_raw = base.get("latency_samples_ms") or {}, cur.get("latency_samples_ms") or {}
    b_rounds, c_rounds = base.get("latency_rounds_ms") or {}, cur.get("latency_rounds_ms") or {}
    for key in sorted(set(b_lat) & set(c_lat), key=_batch_order):
        bp, cp = finite_number((b_lat[key] or {}).get("p50")), finite_number((c_lat[key] or {}).get("p50"))
        if bp is None or cp is None or bp <= 0 or cp <= 0:
            continue
        entry: dict[str, Any] = {"baseline_p50": bp, "current_p50": cp, "ratio": cp / bp}
        bs, cs = _samples(b_raw.get(key)), _samples(c_raw.get(key))
        br, cr = _samples(b_rounds.get(key)), _samples(c_rounds.get(key))
        if br is not None and cr is not None and br.size >= 2 and cr.size >= 2:
            entry["ratio"], entry["low"], entry["high"] = rounds_ratio_interval(br, cr, cfg.confidence)
            entry["method"] = "rounds"
            entry["baseline_rounds"], entry["current_rounds"] = int(br.size), int(cr.size)
        elif bs is not None and cs is not None:
            entry["low"], entry["high"] = p50_ratio_interval(bs, cs, cfg)
            entry["method"] = "runs"
        if bs is not None and cs is not None:
            entry["baseline_runs"], entry["current_runs"] = int(bs.size), int(cs.size)
        latency[key] = entry

    resources: dict[str, dict[str, Any]] = {}
    for key in _RESOURCES:
        b, c = finite_number(base.get(key)), finite_number(cur.get(key))
        if b is not None and c is not None:
            resources[key] = {"baseline": b, "current": c, "change": c - b, "ratio": c / b if b > 0 else None}
    return {"name": cur.get("name"), "baseline_name": base.get("name"), "metrics": metrics, "latency": latency,
            "resources": resources}


def compare_reports(baseline: dict, current: dict, cfg: CompareConfig = CompareConfig(),
                    sources: tuple[str, str] | None = None) -> dict[str, Any]:
    """Compare every variant present in both reports (matched by name), and the deployed student of each (the one
    the gates judge; matched by name, else the baseline's own deployed student). The reports' task family says which
    quality figures to set side by side and what else to note (``Task.metrics``, ``Task.compare_notes``). Refuses
    (UserError) reports of two families, different test sets and reports with no variant in common. ``sources``
    names the two reports in the result."""
    if baseline.get("task") != current.get("task"):
        raise UserError(f"the two runs are of different task families ({baseline.get('task')} in the baseline, "
                        f"{current.get('task')} in the current run); compare runs of the same task")
    task = get_task(str(current.get("task")))
    test_set = check_same_test_set(baseline, current)
    b_rows = {v.get("name"): v for v in baseline.get("variants") or []}
    c_rows = [v for v in current.get("variants") or []]
    common = [v for v in c_rows if v.get("name") in b_rows]
    if not common:
        raise UserError(f"the two runs have no variant in common (baseline: {', '.join(map(str, b_rows)) or 'none'}; "
                        f"current: {', '.join(str(v.get('name')) for v in c_rows) or 'none'})")
    b_labels = (baseline.get("test_set") or {}).get("labels")
    c_labels = (current.get("test_set") or {}).get("labels")
    variants = [compare_variant(b_rows[v["name"]], v, b_labels, c_labels, task, cfg) for v in common]

    deployed = None
    cur_student = deployed_student(c_rows)
    if cur_student is not None:
        base_student = b_rows.get(cur_student.get("name")) or deployed_student(list(b_rows.values()))
        if base_student is not None:
            deployed = compare_variant(base_student, cur_student, b_labels, c_labels, task, cfg)
    b_src, c_src = sources or (None, None)
    return {
        "schema_version": 1,
        "baseline": {"source": b_src, "run_name": baseline.get("run_name"), "created": baseline.get("created")},
        "current": {"source": c_src, "run_name": current.get("run_name"), "created": current.get("created")},
        "task": current.get("task"),
        "test_set": test_set,
        "confidence": cfg.confidence,
        "n_boot": cfg.n_boot,
        "variants": variants,
        "deployed": deployed,
        **task.compare_notes(baseline, current, [v.get("name") for v in common]),
        "only_in_baseline": [n for n in b_rows if n not in {v.get("name") for v in c_rows}],
        "only_in_current": [v.get("name") for v in c_rows if v.get("name") not in b_rows],
    }


# ---------------------------------------------------------------- writing


def write_comparison(result: dict, out_dir: Path, summary: bool = True) -> dict[str, Path]:
    """Write compare.json, compare.md and compare.html into ``out_dir``, each atomically (other files there are left
    alone); append the Markdown to ``$GITHUB_STEP_SUMMARY`` when that names a file and ``summary``."""
    from compresskit.reporting.compare_render import render_compare_html, render_compare_markdown
    from compresskit.reporting.tables import finite

    out_dir = Path(out_dir)
    markdown = render_compare_markdown(result)
    paths = {"json": out_dir / "compare.json", "markdown": out_dir / "compare.md", "html": out_dir / "compare.html"}
    write_json(paths["json"], finite(result))
    write_atomic(paths["markdown"], markdown)
    write_atomic(paths["html"], render_compare_html(result))
    if summary and (target := os.environ.get("GITHUB_STEP_SUMMARY")):
        with open(target, "a", encoding="utf-8") as f:
            f.write("\n" + markdown)  # start on a fresh line whatever the previous step left
    return paths


def default_out(current: Path) -> Path:
    """Where ``compare`` writes without ``--out``: ``compare/`` in the current run's folder."""
    current = Path(current)
    return (current if current.is_dir() else current.parent) / "compare"


def compare(baseline: Path, current: Path, out: Path | None = None, cfg: CompareConfig = CompareConfig()
            ) -> tuple[dict[str, Any], dict[str, Path]]:
    """The ``compare`` stage: read both reports (run folders or report.json files), compare them, write the three
    files into ``out`` (default ``default_out(current)``); returns the comparison and the paths written."""
    base_report, base_path = load_report(baseline)
    cur_report, cur_path = load_report(current)
    result = compare_reports(base_report, cur_report, cfg, sources=(str(base_path), str(cur_path)))
    return result, write_comparison(result, out or default_out(current))

