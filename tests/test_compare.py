"""Comparing a run with a baseline: the statistics on hand-made reports, the regression gates, and the CLI (`compare`,
and `report --baseline` on a run folder benchmarked for real)."""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from conftest import cli

from compresskit.artifacts import UserError
from compresskit.gates import GateConfig, evaluate_gates, failed_gates
from compresskit.reporting.compare import CompareConfig, compare_reports, p50_ratio_interval, write_comparison
from compresskit.reporting.report import validate_report
from compresskit.tasks.causal_lm.task import CAUSAL_LM as LM
from compresskit.tasks.classification.task import TEXT_CLASSIFICATION as TC

N = 300  # test examples


def _labels() -> list[int]:
    return np.random.default_rng(0).integers(0, 3, N).tolist()


def _row(name: str, model: str, fmt: str, precision: str, wrong: list[int], p50: float, seed: int) -> dict:
    """A report row whose predictions are right except at the indices ``wrong``, timed 400 times around ``p50``."""
    labels = _labels()
    pred = [(y + 1) % 3 if i in wrong else y for i, y in enumerate(labels)]
    samples = (p50 * (1 + 0.05 * np.random.default_rng(seed).standard_normal(400))).round(4).tolist()
    lat = {"mean": float(np.mean(samples)), "p50": float(np.median(samples)), "p90": p50, "p99": p50,
           "iterations": 400}
    return {"name": name, "model": model, "format": fmt, "precision": precision, "device": "cpu",
            "accuracy": 1 - len(wrong) / N, "macro_f1": 1 - len(wrong) / N, "agreement_with_teacher": 1.0,
            "size_mb": 10.0, "parameters": 1000, "peak_rss_mb": 400.0, "peak_gpu_mb": None,
            "latency_ms": {"batch_1": lat}, "throughput_per_s": {"batch_1": 1000 / p50},
            "predictions": pred, "latency_samples_ms": {"batch_1": samples}}


def _report(student_wrong: list[int], student_p50: float = 4.0, seed: int = 0) -> dict:
    base_wrong = list(range(0, N, 20))  # the teacher: 95 %
    return {"schema_version": 1, "task": "text-classification", "run_name": f"run-{seed}", "created": "2026-11-29",
            "teacher": {}, "student": {}, "config": {}, "machine": {}, "versions": {}, "gates": [],
            "test_samples": N, "test_set": {"count": N, "sha256": "ab" * 32, "labels": _labels()},
            "data": {"sha256": "cd" * 32},
            "variants": [_row("teacher-pytorch", "teacher", "pytorch", "fp32", base_wrong, 20.0, seed),
                         _row("student-onnx", "student", "onnx", "fp32", student_wrong, 5.0, seed + 1),
                         _row("student-onnx-int8", "student", "onnx", "int8", student_wrong, student_p50, seed + 2)]}


GATES = GateConfig(max_accuracy_regression=0.01, max_latency_regression=1.10)


def test_identical_runs_span_zero_and_pass_every_gate():
    base = _report(list(range(0, N, 10)))
    result = compare_reports(base, copy.deepcopy(base))
    for v in result["variants"]:
        acc, lat = v["metrics"]["accuracy"], v["latency"]["batch_1"]
        assert acc["low"] <= 0 <= acc["high"] and acc["change"] == 0
        assert lat["low"] <= 1 <= lat["high"] and lat["ratio"] == 1
    results = evaluate_gates(GATES, base["variants"], TC, comparison=result)
    assert [r.name for r in results] == ["max-accuracy-regression", "max-latency-regression"]
    assert failed_gates(results) == []


def test_two_runs_of_the_same_model_differ_only_by_noise():
    """Same predictions, timings drawn afresh from the same distribution: the ratio's interval holds 1."""
    result = compare_reports(_report([1, 2, 3], seed=0), _report([1, 2, 3], seed=10))
    lat = result["deployed"]["latency"]["batch_1"]
    assert lat["ratio"] != 1 and lat["low"] < 1 < lat["high"]
    assert failed_gates(evaluate_gates(GATES, _report([1, 2, 3])["variants"], TC, comparison=result)) == []


def test_many_worse_predictions_fail_the_accuracy_gate_with_the_compared_variant_named():
    base, cur = _report(list(range(0, N, 10))), _report(list(range(0, N, 3)))  # 90 % → 66.7 %
    result = compare_reports(base, cur)
    acc = result["deployed"]["metrics"]["accuracy"]
    assert result["deployed"]["name"] == result["deployed"]["baseline_name"] == "student-onnx-int8"
    assert acc["change"] == pytest.approx(-(100 - 30) / N) and acc["high"] < -0.1
    assert acc["changed_to_wrong"] == 90 and acc["changed_to_right"] == 20  # multiples of 30 are wrong in both
    assert acc["p_value"] < 1e-9
    (gate,) = evaluate_gates(GateConfig(max_accuracy_regression=0.01), cur["variants"], TC, comparison=result)
    assert not gate.passed and gate.value == pytest.approx(-acc["high"])
    assert gate.detail.startswith("student-onnx-int8 vs baseline student-onnx-int8: accuracy 0.6667 vs 0.9000")
    assert "95 % CI" in gate.detail and "> limit 0.0100" in gate.detail


def test_one_worse_example_is_noise_not_a_regression():
    """The point estimate loses 1/300 > 0, but the interval reaches below the limit: the gate passes."""
    result = compare_reports(_report([]), _report([7]))
    (gate,) = evaluate_gates(GateConfig(max_accuracy_regression=0.0), _report([7])["variants"], TC, comparison=result)
    assert result["deployed"]["metrics"]["accuracy"]["change"] == pytest.approx(-1 / N)
    assert gate.passed, gate.detail


def test_latency_ratio_interval_comes_from_the_samples():
    base = np.random.default_rng(1).gamma(20, 0.25, 500)  # ~5 ms, right-skewed like real timings
    low, high = p50_ratio_interval(base, base * 1.5)  # resampled independently: an interval around 1.5
    assert 1.4 < low < 1.5 < high < 1.6
    cur = np.random.default_rng(2).gamma(20, 0.25, 500) * 1.3
    low, high = p50_ratio_interval(base, cur)
    ratio = np.median(cur) / np.median(base)
    assert low < ratio < high and 1.1 < low and high < 1.5
    assert p50_ratio_interval(base, cur) == (low, high)  # seeded: the same runs give the same interval
    narrow = p50_ratio_interval(base, cur, CompareConfig(confidence=0.5))
    assert low < narrow[0] < narrow[1] < high


def _with_rounds(report: dict, p50s: list[float], name: str = "student-onnx-int8") -> dict:
    """``report`` with the variant ``name`` timed in len(p50s) processes whose p50s were ``p50s``."""
    row = next(v for v in report["variants"] if v["name"] == name)
    row["latency_rounds_ms"] = {"batch_1": list(p50s)}
    return report


def test_a_process_to_process_shift_is_noise_when_both_runs_have_rounds():
    """What a shared machine does: within each process the timed runs agree to 5 %, but one run's processes came out
    20 % slower. From the timed runs alone that is a certain regression; the per-round p50s show processes of either
    run that slow, so the interval spans 1 and the gate passes."""
    base = _with_rounds(_report([], student_p50=4.0), [4.0, 4.9, 4.1, 3.9, 4.8])
    cur = _with_rounds(_report([], student_p50=4.8, seed=5), [4.8, 4.1, 5.0, 4.0, 4.9])
    lat = compare_reports(base, cur)["deployed"]["latency"]["batch_1"]
    assert lat["method"] == "rounds" and (lat["baseline_rounds"], lat["current_rounds"]) == (5, 5)
    assert lat["low"] < 1 < lat["high"] and lat["ratio"] == pytest.approx(
        np.exp(np.mean(np.log([4.8, 4.1, 5.0, 4.0, 4.9])) - np.mean(np.log([4.0, 4.9, 4.1, 3.9, 4.8]))))
    assert failed_gates(evaluate_gates(GATES, cur["variants"], TC, comparison=compare_reports(base, cur))) == []
    runs_only = compare_reports(_report([], student_p50=4.0), _report([], student_p50=4.8, seed=5))
    lat = runs_only["deployed"]["latency"]["batch_1"]
    assert lat["method"] == "runs" and lat["low"] > 1.1  # the same shift, judged on one process a run


def test_a_slower_student_fails_the_latency_gate_on_rounds_too():
    base = _with_rounds(_report([]), [4.0, 4.3, 3.9])
    cur = _with_rounds(_report([], student_p50=6.0), [6.1, 5.8, 6.4])
    lat = compare_reports(base, cur)["deployed"]["latency"]["batch_1"]
    assert lat["method"] == "rounds" and lat["low"] > 1.3
    (gate,) = evaluate_gates(GateConfig(max_latency_regression=1.10), [], TC, comparison=compare_reports(base, cur))
    assert not gate.passed
    # one round in the baseline (an older run): the timed runs' bootstrap, said so
    one = _with_rounds(_report([]), [4.0])
    assert compare_reports(one, cur)["deployed"]["latency"]["batch_1"]["method"] == "runs"


def test_a_slower_student_fails_the_latency_gate():
    result = compare_reports(_report([]), _report([], student_p50=6.0))  # 4 ms → 6 ms
    lat = result["deployed"]["latency"]["batch_1"]
    assert lat["low"] > 1.4
    (gate,) = evaluate_gates(GateConfig(max_latency_regression=1.10), [], TC, comparison=result)
    assert not gate.passed and gate.value == pytest.approx(lat["low"]) and "ms vs" in gate.detail
    (loose,) = evaluate_gates(GateConfig(max_latency_regression=2.0), [], TC, comparison=result)
    assert loose.passed


@pytest.mark.parametrize("change, needle", [
    (lambda r: r["test_set"].update(count=N - 1), f"{N} examples in the baseline, {N - 1} in the current run"),
    (lambda r: r["test_set"].update(sha256="ef" * 32), "test split sha256 abababababab… in the baseline"),
    (lambda r: r["test_set"].update(sha256=None, labels=r["test_set"]["labels"][::-1]), "gold labels differ"),
    (lambda r: (r.pop("test_set"), r["data"].update(sha256="00" * 32)), "data sha256"),
])
def test_different_test_sets_are_refused(change, needle):
    base, cur = _report([]), _report([])
    if "data sha256" in needle:
        base.pop("test_set")
    change(cur)
    with pytest.raises(UserError, match="different test sets") as e:
        compare_reports(base, cur)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_another_label_order_on_the_same_test_split_is_compared():
    """Another teacher head's label order renumbers the gold ids; the same examples, scored each against its own."""
    base, cur = _report([]), _report(list(range(0, N, 3)))
    cur["test_set"]["labels"] = [(y + 1) % 3 for y in cur["test_set"]["labels"]]
    for v in cur["variants"]:
        v["predictions"] = [(p + 1) % 3 for p in v["predictions"]]
    acc = compare_reports(base, cur)["deployed"]["metrics"]["accuracy"]
    assert acc["change"] == pytest.approx(-100 / N) and acc["high"] < 0


def test_no_common_variant_is_refused():
    cur = _report([])
    for v in cur["variants"]:
        v["name"] += "-new"
    with pytest.raises(UserError, match="no variant in common"):
        compare_reports(_report([]), cur)


def test_variants_without_predictions_get_deltas_without_an_interval():
    """A causal LM's rows (quality figures, no predictions, no samples): changes only; the gate judges the point."""
    base, cur = _report([]), _report([])
    for r, agreement, ppl in ((base, 0.40, 200.0), (cur, 0.30, 210.0)):
        r["task"] = "causal-lm"
        r["test_set"] = {"count": N, "sha256": "ab" * 32, "labels": None}
        for v in r["variants"]:
            for k in ("predictions", "latency_samples_ms", "accuracy", "macro_f1", "agreement_with_teacher"):
                v.pop(k)
            v["quality"] = {"top1_agreement": agreement, "perplexity": ppl}
    result = compare_reports(base, cur)
    m = result["deployed"]["metrics"]
    assert set(m) == {"quality.top1_agreement", "quality.perplexity"}
    assert m["quality.perplexity"]["change"] == pytest.approx(10.0) and "low" not in m["quality.top1_agreement"]
    assert "low" not in result["deployed"]["latency"]["batch_1"]
    acc, lat = evaluate_gates(GATES, cur["variants"], LM, comparison=result)
    assert not acc.passed and acc.value == pytest.approx(0.10) and "point estimate" in acc.detail
    assert lat.passed and "no latency samples" in lat.detail
    from compresskit.reporting.compare_render import render_compare_markdown

    md = render_compare_markdown(result)
    assert "## Other quality figures" in md and "| student-onnx-int8 | quality.perplexity | 200.0000 |" in md


def test_regression_gates_without_a_comparison_fail_not_raise():
    results = evaluate_gates(GATES, _report([])["variants"], TC)
    assert [r.passed for r in results] == [False, False]
    assert all("no --baseline comparison" in r.detail for r in results)


def test_written_files_and_step_summary(tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    result = compare_reports(_report(list(range(0, N, 10))), _report(list(range(0, N, 3)), student_p50=6.0))
    paths = write_comparison(result, tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["compare.html", "compare.json", "compare.md",
                                                                     "keep.txt"]
    md = paths["markdown"].read_text(encoding="utf-8")
    assert summary.read_text(encoding="utf-8") == "earlier step\n\n" + md
    assert "| student-onnx-int8 | -23.33 [" in md and "less accurate, slower @1" in md
    page = paths["html"].read_text(encoding="utf-8")
    assert page.count('src="data:image/png;base64,') == 1  # the before/after plot, inline
    assert json.loads(paths["json"].read_text())["deployed"]["name"] == "student-onnx-int8"


# ---------------------------------------------------------------- the CLI


def _one_line_error(proc, *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    error = " ".join(lines[-3:])
    assert "error:" in error
    for n in needles:
        assert n in error, error


def test_compare_command_writes_next_to_current_and_refuses_bad_input(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "cur").mkdir()
    (tmp_path / "base" / "report.json").write_text(json.dumps(_report([])))
    (tmp_path / "cur" / "report.json").write_text(json.dumps(_report(list(range(0, N, 3)))))
    summary = tmp_path / "summary.md"
    ok = cli("compare", str(tmp_path / "base"), str(tmp_path / "cur" / "report.json"),
             env={"GITHUB_STEP_SUMMARY": str(summary), "COLUMNS": "250"})
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "student-onnx-int8" in ok.stdout and "less accurate" in ok.stdout
    assert sorted(p.name for p in (tmp_path / "cur" / "compare").iterdir()) == ["compare.html", "compare.json",
                                                                                 "compare.md"]
    assert summary.read_text().startswith("\n# compresskit comparison: run-0 → run-0")

    _one_line_error(cli("compare", str(tmp_path / "nowhere"), str(tmp_path / "cur")), "does not exist")
    (tmp_path / "empty").mkdir()
    _one_line_error(cli("compare", str(tmp_path / "empty"), str(tmp_path / "cur")), "holds no report.json")
    other = _report([])
    other["test_set"]["count"] = 10
    (tmp_path / "other.json").write_text(json.dumps(other))
    proc = cli("compare", str(tmp_path / "other.json"), str(tmp_path / "cur"), "--out", str(tmp_path / "o"))
    _one_line_error(proc, "different test sets")
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def benchmarked_run(tmp_path_factory, tiny_classifier, tiny_data, tiny_onnx):
    """A run folder laid out by hand from the tiny fixtures (teacher, student and the student's ONNX export), then
    benchmarked and reported by the real CLI."""
    run = tmp_path_factory.mktemp("cmp") / "run"
    shutil.copytree(tiny_data, run / "data")
    shutil.copytree(tiny_classifier, run / "teacher")
    shutil.copytree(tiny_classifier, run / "student")
    shutil.copytree(tiny_onnx, run / "onnx" / "student")
    proc = cli("bench", "--run-dir", str(run), "--sequence-length", "32", "--batch-sizes", "1,4", "--iterations",
               "5", "--min-seconds", "0", "--rounds", "2", "--threads", "1", "--device", "cpu")
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli("report", "--run-dir", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_report_carries_predictions_and_timings_and_plots(benchmarked_run):
    report = json.loads((benchmarked_run / "report.json").read_text())
    assert validate_report(report) == []
    n = report["test_set"]["count"]
    assert n == len(report["test_set"]["labels"]) > 0 and len(report["test_set"]["sha256"]) == 64
    for v in report["variants"]:
        assert len(v["predictions"]) == n
        assert np.mean(np.array(v["predictions"]) == report["test_set"]["labels"]) == pytest.approx(v["accuracy"])
        samples = v["latency_samples_ms"]
        # --iterations 5 over --rounds 2: three timed runs in each of two processes, pooled, each round's p50 kept
        assert set(samples) == {"batch_1", "batch_4"} and len(samples["batch_1"]) == 6
        assert [len(r) for r in v["latency_rounds_ms"].values()] == [2, 2]
        assert np.percentile(samples["batch_1"], 50) == pytest.approx(v["latency_ms"]["batch_1"]["p50"], abs=1e-3)
    page = (benchmarked_run / "report.html").read_text()
    # with a decision, its frontier plot takes the place of plain accuracy against latency
    first = ", per variant: the frontier, the budget edge and what ships" if report.get("decision") else ", per variant"
    for alt in (f"accuracy against p50 latency at batch 1{first}", "box plot of the timed runs at batch 1, per variant"):
        assert f'<img alt="{alt}" src="data:image/png;base64,' in page
    assert "predictions" not in (benchmarked_run / "report.md").read_text()


def test_report_against_a_baseline_passes_then_fails_the_gates(benchmarked_run, tmp_path):
    run = benchmarked_run
    baseline = json.loads((run / "report.json").read_text())
    (tmp_path / "same.json").write_text(json.dumps(baseline))
    gates = ["--max-accuracy-regression", "0.01", "--max-latency-regression", "1.10"]
    proc = cli("report", "--run-dir", str(run), "--baseline", str(tmp_path / "same.json"), *gates,
               env={"COLUMNS": "250"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert [g["name"] for g in report["gates"]] == ["max-accuracy-regression", "max-latency-regression"]
    assert report["comparison"]["deployed"]["name"] == "student-onnx"
    assert (run / "compare" / "compare.md").is_file() and "Against the baseline" in (run / "report.html").read_text()

    # a baseline whose deployed student was 10× faster and never wrong: this run regressed on both counts
    fast = copy.deepcopy(baseline)
    student = next(v for v in fast["variants"] if v["name"] == "student-onnx")
    student["latency_samples_ms"] = {k: [x / 10 for x in s] for k, s in student["latency_samples_ms"].items()}
    student["latency_ms"] = {k: {**lat, "p50": lat["p50"] / 10} for k, lat in student["latency_ms"].items()}
    student["latency_rounds_ms"] = {k: [x / 10 for x in r] for k, r in student["latency_rounds_ms"].items()}
    student["predictions"] = list(fast["test_set"]["labels"])
    current_student = next(v for v in baseline["variants"] if v["name"] == "student-onnx")
    (tmp_path / "fast.json").write_text(json.dumps(fast))
    proc = cli("report", "--run-dir", str(run), "--baseline", str(tmp_path / "fast.json"), *gates)
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "max-latency-regression" in proc.stderr and "quality gate(s) failed" in proc.stderr
    report = json.loads((run / "report.json").read_text())
    by_name = {g["name"]: g for g in report["gates"]}
    assert not by_name["max-latency-regression"]["passed"]
    # the random tiny student is far from perfect, so losing every right answer the baseline had is real
    assert current_student["accuracy"] < 0.8 and not by_name["max-accuracy-regression"]["passed"]


def test_regression_gates_need_a_baseline_and_a_real_one(benchmarked_run, tmp_path):
    proc = cli("report", "--run-dir", str(benchmarked_run), "--max-latency-regression", "1.1")
    _one_line_error(proc, "--baseline")
    proc = cli("report", "--run-dir", str(benchmarked_run), "--baseline", str(tmp_path / "missing"),
               "--max-latency-regression", "1.1")
    _one_line_error(proc, "does not exist")
    proc = cli("report", "--run-dir", str(benchmarked_run), "--baseline", str(benchmarked_run),
               "--max-latency-regression", "0.9")
    _one_line_error(proc, "--max-latency-regression is a ratio")


def test_comparing_and_plotting_do_not_import_torch(tmp_path):
    import subprocess
    import sys

    (tmp_path / "r.json").write_text(json.dumps(_report([])))
    code = ("import json, sys; from compresskit.reporting.compare import compare; "
            "from compresskit.reporting.render import render_html; "
            f"r = json.load(open({str(tmp_path / 'r.json')!r})); compare({str(tmp_path / 'r.json')!r}, "
            f"{str(tmp_path / 'r.json')!r}); assert '<img ' in render_html(r); print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "False", proc.stderr[-2000:]


def test_distill_and_export_refuses_a_missing_baseline_before_writing(tmp_path, tiny_encoder, tiny_csv):
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv), "--output-root",
               str(tmp_path / "out"), "--baseline", str(tmp_path / "main" / "report.json"),
               "--max-accuracy-regression", "0.01")
    _one_line_error(proc, "does not exist")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow  # two pipeline runs, about 3 minutes here; the default run covers the same path through `report`
def test_distill_and_export_with_a_baseline_fails_a_real_regression(tmp_path, tiny_encoder, tiny_csv):
    """The whole pipeline twice on one folder (the second resumes, measuring afresh) against a baseline whose deployed
    student was ten times faster: exit 4, the gate names the compared variants, compare/ and the summary are written."""
    from test_cli import FAST

    args = ["distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv), "--output-root",
            str(tmp_path / "out"), "--run-name", "tiny", "--quantize", "none", *FAST]
    first = cli(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    baseline = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())
    for v in baseline["variants"]:
        v["latency_samples_ms"] = {k: [x / 10 for x in s] for k, s in (v["latency_samples_ms"] or {}).items()}
        v["latency_ms"] = {k: {**lat, "p50": lat["p50"] / 10} for k, lat in v["latency_ms"].items()}
    (tmp_path / "main.json").write_text(json.dumps(baseline))
    summary = tmp_path / "summary.md"
    second = cli(*args, "--baseline", str(tmp_path / "main.json"), "--max-accuracy-regression", "0.01",
                 "--max-latency-regression", "1.10", env={"GITHUB_STEP_SUMMARY": str(summary)})
    assert second.returncode == 4, second.stderr[-3000:]
    assert "resuming the run" in second.stderr
    report = json.loads((tmp_path / "out" / "tiny" / "report.json").read_text())
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["max-accuracy-regression"]["passed"]  # the same student, measured again: no accuracy change
    latency = gates["max-latency-regression"]
    assert not latency["passed"] and latency["value"] > 5
    assert report["comparison"]["deployed"]["name"] == report["comparison"]["deployed"]["baseline_name"]
    assert latency["detail"].startswith(f"{report['comparison']['deployed']['name']} vs baseline ")
    assert "95 % CI" in latency["detail"]  # judged on the interval from the timed runs, not the point estimate
    assert (tmp_path / "out" / "tiny" / "compare" / "compare.html").is_file()
    assert "# compresskit comparison: tiny → tiny" in summary.read_text()


def test_mcnemar_exact_p_is_the_binomial_tail_of_the_changed_examples():
    from compresskit.stats import mcnemar_exact_p

    assert mcnemar_exact_p(0, 0) == 1.0 and mcnemar_exact_p(3, 3) == 1.0
    assert mcnemar_exact_p(5, 1) == pytest.approx(2 * 7 / 64)  # the 1-layer student's 5 vs 1: p 0.22, not flagged
    assert mcnemar_exact_p(1, 5) == mcnemar_exact_p(5, 1)
    assert mcnemar_exact_p(10, 0) == pytest.approx(2 / 1024)


def test_a_graph_chosen_anew_is_named_with_the_flags_that_pin_the_baseline_s():
    """Export picks its graph by timing; a rerun that ships another one says so, and how to ship the baseline's."""
    base, cur = _report([]), _report([])
    base["exports"] = {"student": {"chosen": "torchscript+eager+cls-only", "skip_layer_norm": {"form": "unfused"}},
                       "teacher": {"chosen": "torchscript+eager"}}
    cur["exports"] = {"student": {"chosen": "dynamo+sdpa+cls-only", "skip_layer_norm": {"form": "unfused"}},
                      "teacher": {"chosen": "torchscript+eager"}}
    result = compare_reports(base, cur)
    (change,) = result["graph_changes"]
    assert change["model"] == "student" and change["variants"] == ["student-onnx", "student-onnx-int8"]
    assert change["pin"] == "--exporter torchscript --attention eager --cls-only on --skip-layer-norm unfused"
    from compresskit.reporting.compare_render import render_compare_markdown

    assert "Other student graph:** torchscript+eager+cls-only (SkipLayerNorm unfused) → dynamo+sdpa+cls-only" in \
        render_compare_markdown(result)
    assert compare_reports(base, copy.deepcopy(base))["graph_changes"] == []
