"""The decision (what to ship under a quality budget, the frontier) and the model card, on report rows built in code."""

from __future__ import annotations

import pytest

from compresskit.decision import Workload, budget_of, decide, frontier
from compresskit.deploy import model_card, read_card
from compresskit.gates import GateConfig, evaluate_gates
from compresskit.tasks import get_task

CLS = get_task("text-classification")
LM = get_task("causal-lm")


def _cls_row(name: str, model: str, correct: int, p50: float, fmt: str = "onnx", precision: str = "fp32",
             agree_with: list[int] | None = None, n: int = 100, big: float | None = None) -> dict:
    """A classification row whose first ``correct`` of ``n`` predictions are right (gold is all zeros)."""
    pred = [0] * correct + [1] * (n - correct)
    return {"name": name, "model": model, "format": fmt, "precision": precision, "accuracy": correct / n,
            "macro_f1": None, "agreement_with_teacher": None, "predictions": pred, "size_mb": 1.0, "parameters": 1,
            "peak_rss_mb": 1.0, "latency_ms": {"batch_1": {"mean": p50, "p50": p50, "p90": p50, "p99": p50},
                                               "batch_32": {"mean": big or 20 * p50, "p50": big or 20 * p50,
                                                            "p90": 1, "p99": 1}},
            "latency_rounds_ms": {"batch_1": [p50 * 0.98, p50, p50 * 1.02]}, "throughput_per_s": {}}


def _cls_report(rows: list[dict]) -> dict:
    teacher = rows[0]["predictions"]
    for r in rows:
        r["agreement_with_teacher"] = sum(a == b for a, b in zip(r["predictions"], teacher)) / len(teacher)
    return {"task": CLS.name, "run_name": "t", "variants": rows, "test_set": {"labels": [0] * 100, "count": 100},
            "teacher": {"source": "my-teacher"}, "student": {}, "data": {"source": "bbc-news"}, "config": {},
            "machine": {"cpu": "Test CPU", "threads": 2}, "versions": {"torch": "x"}}


def bbc_like() -> dict:
    """The BBC shape: the TF-IDF baseline is faster and more accurate than the int8 student; the teacher's own int8
    graph keeps its accuracy."""
    return _cls_report([
        _cls_row("teacher-pytorch", "teacher", 95, 17.0, fmt="pytorch"),
        _cls_row("teacher-onnx", "teacher", 95, 9.0),
        _cls_row("teacher-onnx-int8", "teacher", 95, 5.0, precision="int8"),
        _cls_row("student-onnx", "student", 95, 3.5),
        _cls_row("student-onnx-int8", "student", 94, 2.6, precision="int8"),
        _cls_row("baseline-tfidf", "baseline", 97, 1.6, fmt="sklearn", precision="fp64", big=300.0),
    ])


def test_the_fastest_variant_within_the_budget_ships_and_the_frontier_is_not_beaten():
    report = bbc_like()
    d = decide(report, CLS, *budget_of(GateConfig(), CLS.default_budget))
    assert d["budget"] == {"max_accuracy_drop": 0.01} and d["budget_source"] == "default"
    assert d["chosen"] == "baseline-tfidf"  # faster and more accurate: the classical model wins
    assert any("beats the teacher on accuracy" in w for w in d["warnings"])
    assert any("classical baseline" in w for w in d["warnings"])
    # the baseline beats everyone but the batch-32 p50; every student is beaten on both axes by the baseline
    assert d["frontier"] == ["baseline-tfidf"]
    assert any("no student is on the frontier" in w for w in d["warnings"])
    # at batch 32 the baseline is slow: the fastest within budget there is another variant
    assert d["by_workload"]["batch_1"] == "baseline-tfidf" and d["by_workload"]["batch_32"] == "student-onnx-int8"
    head = d["headline"]
    assert head["variant"] == "baseline-tfidf" and head["speedup"] == pytest.approx(17.0 / 1.6)
    assert head["speedup_low"] < head["speedup"] < head["speedup_high"]
    acc = head["quality"][0]
    assert acc["value"] == pytest.approx(97.0) and acc["teacher"] == pytest.approx(95.0)
    assert acc["low"] < 97.0 < acc["high"]


def test_without_the_baseline_a_student_ships_and_the_drop_has_a_paired_interval():
    report = bbc_like()
    report["variants"] = report["variants"][:-1]
    d = decide(report, CLS, *budget_of(GateConfig(), CLS.default_budget))
    assert d["chosen"] == "student-onnx-int8"
    check = next(c for c in d["candidates"] if c["name"] == "student-onnx-int8")["checks"][0]
    assert check["gate"] == "max_accuracy_drop" and check["value"] == pytest.approx(0.01) and check["passed"]
    assert check["low"] <= 0.01 <= check["high"]
    # 100 examples cannot show a 1-point drop is within 1 point: the decision says so
    assert any("interval" in w for w in d["warnings"])
    assert set(d["frontier"]) == {"student-onnx-int8", "student-onnx"}


def test_a_tighter_gate_budget_ships_the_teacher_int8_graph_and_require_student_fails():
    report = bbc_like()
    report["variants"] = report["variants"][:-1]
    gates = GateConfig(max_accuracy_drop=0.0, require_student=True)
    d = decide(report, CLS, *budget_of(gates, CLS.default_budget))
    assert d["budget_source"] == "gates" and d["chosen"] == "student-onnx"
    gates = GateConfig(max_accuracy_drop=0.0, max_latency_ms=8.0, require_student=True)
    report["variants"][3]["accuracy"] = 0.90  # the fp32 student now drops 5 points
    report["variants"][3]["predictions"] = [0] * 90 + [1] * 10
    d = decide(report, CLS, *budget_of(gates, CLS.default_budget))
    assert d["chosen"] == "teacher-onnx-int8"
    gate = next(r for r in evaluate_gates(gates, report["variants"], CLS, None, d) if r.name == "require-student")
    assert not gate.passed and "teacher-onnx-int8" in gate.detail and "not a student" in gate.detail


def test_a_budget_nothing_meets_ships_nothing_and_names_the_closest():
    report = bbc_like()
    gates = GateConfig(max_latency_ms=1.0, require_student=True)
    d = decide(report, CLS, *budget_of(gates, CLS.default_budget))
    assert d["chosen"] is None and d["closest"] == "baseline-tfidf" and d["headline"] is None
    assert "none of the 6 measured variants meets the budget" in d["reason"]
    gate = next(r for r in evaluate_gates(gates, report["variants"], CLS, None, d) if r.name == "require-student")
    assert not gate.passed and "closest: baseline-tfidf" in gate.detail


def _lm_row(name: str, model: str, ppl: float, tps: float, precision: str = "fp32", fmt: str = "onnx",
            nll: tuple[float, float] | None = None) -> dict:
    return {"name": name, "model": model, "format": fmt, "precision": precision, "size_mb": 1.0, "parameters": 1,
            "peak_rss_mb": 1.0, "latency_ms": {"batch_1": {"mean": 1000 / tps, "p50": 1000 / tps, "p90": 1, "p99": 1}},
            "throughput_per_s": {"batch_1": tps},
            "quality": {"perplexity": ppl, "top1_agreement": 1.0 if name == "teacher-pytorch" else 0.6,
                        "vs_teacher": {"mean_nll": {"diff": 0, "low": nll[0], "high": nll[1]}} if nll else None},
            "generation": {"decode_tokens_per_s": tps, "batch8_tokens_per_s": 4 * tps,
                           "decode_rounds_tokens_per_s": [tps * 0.99, tps, tps * 1.01]}}


def lm_like() -> dict:
    """The causal-LM default's shape: the int4 teacher costs 1.33× perplexity, the int4 student 7×."""
    rows = [_lm_row("teacher-pytorch", "teacher", 34.5, 14.6, fmt="pytorch"),
            _lm_row("teacher-onnx", "teacher", 34.5, 20.0, nll=(-0.01, 0.01)),
            _lm_row("teacher-onnx-int8", "teacher", 36.0, 60.0, "int8", nll=(0.02, 0.06)),
            _lm_row("teacher-onnx-int4", "teacher", 46.0, 136.0, "int4", nll=(0.25, 0.32)),
            _lm_row("pruned-untrained-pytorch", "baseline", 9000.0, 40.0, fmt="pytorch"),
            _lm_row("student-onnx-int4", "student", 243.8, 274.0, "int4", nll=(1.8, 2.1))]
    return {"task": LM.name, "run_name": "lm", "variants": rows, "test_set": {}, "teacher": {"source": "SmolLM2"},
            "student": {}, "data": {"source": "bbc-news"}, "config": {}, "machine": {}, "versions": {}}


@pytest.mark.parametrize(("ratio", "chosen"), [(1.05, "teacher-onnx-int8"), (1.25, "teacher-onnx-int8"),
                                               (1.5, "teacher-onnx-int4"), (10.0, "student-onnx-int4")])
def test_the_lm_budget_picks_the_graph_that_keeps_the_perplexity(ratio, chosen):
    report = lm_like()
    d = decide(report, LM, *budget_of(GateConfig(max_perplexity_ratio=ratio), LM.default_budget))
    assert d["chosen"] == chosen
    # a budget no student meets says that distillation does not pay there, naming the fastest student's failure
    stopped = [w for w in d["warnings"] if w.startswith("no student is within the budget")]
    assert bool(stopped) == (chosen != "student-onnx-int4")
    assert not stopped or "student-onnx-int4: perplexity ratio 7.07×" in stopped[0]
    assert d["workload"]["field"] == "generation.decode_tokens_per_s"
    assert d["frontier"] == ["student-onnx-int4", "teacher-onnx-int4", "teacher-onnx-int8", "teacher-onnx"]
    check = next(c for c in d["candidates"] if c["name"] == "teacher-onnx-int8")["checks"][0]
    assert check["gate"] == "max_perplexity_ratio" and check["low"] == pytest.approx(1.0202, abs=1e-3)
    head = d["headline"]
    assert head["speedup"] > 1 and head["speedup_low"] < head["speedup"] < head["speedup_high"]


def test_the_lm_default_budget_is_stated():
    d = decide(lm_like(), LM, *budget_of(GateConfig(min_speedup=2.0), LM.default_budget))
    assert d["budget"] == {"max_perplexity_ratio": 1.25, "min_speedup": 2.0} and d["budget_source"] == "default"
    assert "1.25×" in d["budget_text"]


def test_frontier_keeps_points_no_other_beats_on_every_axis():
    w = Workload("x", "x", "x", higher_is_better=False)
    names = ["a", "b", "c", "d"]
    quality = {"a": [0.0], "b": [1.0], "c": [0.5], "d": [0.5]}
    speed = {"a": 10.0, "b": 1.0, "c": 5.0, "d": 6.0}
    assert frontier(names, quality, speed, w) == ["b", "c", "a"]


def test_the_model_card_front_matter_holds_the_reports_metrics(tmp_path):
    report = bbc_like()
    report["variants"] = report["variants"][:-1]
    d = decide(report, CLS, *budget_of(GateConfig(), CLS.default_budget))
    report["decision"] = d
    row = next(v for v in report["variants"] if v["name"] == d["chosen"])
    path = tmp_path / "README.md"
    path.write_text(model_card(report, d, row, CLS.card(report, row)))
    meta, body = read_card(path)
    assert meta["base_model"] == "my-teacher" and meta["pipeline_tag"] == "text-classification"
    assert meta["library_name"] == "onnx" and meta["datasets"] == ["bbc-news"]
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["accuracy"] == row["accuracy"] and metrics["latency"] == row["latency_ms"]["batch_1"]["p50"]
    assert "## How to run it" in body and "onnxruntime" in body and "Test CPU" in body
