from __future__ import annotations

import pytest

from compresskit.gates import GateConfig, GateResult, evaluate_gates, failed_gates
from compresskit.tasks.causal_lm.task import CAUSAL_LM as LM
from compresskit.tasks.classification.task import TEXT_CLASSIFICATION as TC


def variant(name: str, model: str, accuracy: float | None, p50: float | None) -> dict:
    latency = {} if p50 is None else {"batch_1": {"mean": p50, "p50": p50, "p90": p50, "p99": p50, "iterations": 10}}
    return {"name": name, "model": model, "accuracy": accuracy, "latency_ms": latency}


@pytest.fixture
def variants() -> list[dict]:
    return [
        variant("teacher-pytorch", "teacher", 0.9731, 20.0),
        variant("teacher-onnx", "teacher", 0.9731, 15.0),
        variant("student-pytorch", "student", 0.9650, 8.0),
        variant("student-onnx", "student", 0.9650, 5.0),
        variant("student-onnx-int8", "student", 0.9552, 4.0),
    ]


def test_accuracy_drop_uses_int8_student_and_fails_with_margin(variants):
    (result,) = evaluate_gates(GateConfig(max_accuracy_drop=0.01), variants, TC)
    assert result.name == "max-accuracy-drop"
    assert result.value == pytest.approx(0.9731 - 0.9552)
    assert not result.passed
    assert result.detail == ("student-onnx-int8 accuracy 0.9552 vs teacher 0.9731: "
                             "drop 0.0179 > limit 0.0100 (by 0.0079)")


def test_accuracy_drop_passes_within_limit(variants):
    (result,) = evaluate_gates(GateConfig(max_accuracy_drop=0.02), variants, TC)
    assert result.passed
    assert result.value == pytest.approx(0.0179)


def test_accuracy_drop_equal_to_limit_passes_despite_float_rounding():
    # 0.97 - 0.96 is 0.010000000000000009 in binary floating point.
    vs = [variant("teacher-pytorch", "teacher", 0.97, 20.0), variant("student-onnx-int8", "student", 0.96, 4.0)]
    (result,) = evaluate_gates(GateConfig(max_accuracy_drop=0.01), vs, TC)
    assert result.passed


def test_accuracy_drop_without_int8_uses_fastest_student(variants):
    without_int8 = [v for v in variants if v["name"] != "student-onnx-int8"]
    (result,) = evaluate_gates(GateConfig(max_accuracy_drop=0.01), without_int8, TC)
    assert result.detail.startswith("student-onnx accuracy 0.9650")  # 5 ms beats student-pytorch's 8 ms
    assert result.value == pytest.approx(0.9731 - 0.9650)
    assert result.passed


def test_speedup_passes_and_fails(variants):
    # teacher-pytorch 20 ms / fastest student (int8) 4 ms = 5.0
    (ok,) = evaluate_gates(GateConfig(min_speedup=5.0), variants, TC)
    assert ok.passed and ok.value == pytest.approx(5.0)
    assert "student-onnx-int8 p50 4.00 ms vs teacher-pytorch 20.00 ms" in ok.detail
    (bad,) = evaluate_gates(GateConfig(min_speedup=6.0), variants, TC)
    assert not bad.passed and bad.value == pytest.approx(5.0)
    assert bad.detail.endswith("speed-up 5.00× < limit 6.00× (short by 1.00×)")


def test_latency_passes_and_fails(variants):
    (ok,) = evaluate_gates(GateConfig(max_latency_ms=4.0), variants, TC)
    assert ok.passed and ok.value == pytest.approx(4.0)
    (bad,) = evaluate_gates(GateConfig(max_latency_ms=3.5), variants, TC)
    assert not bad.passed
    assert bad.detail == "student-onnx-int8 p50 4.00 ms at batch 1 > limit 3.50 ms (by 0.50 ms)"


def test_missing_teacher_gives_failed_gates_not_exceptions(variants):
    students = [v for v in variants if v["model"] == "student"]
    results = evaluate_gates(GateConfig(max_accuracy_drop=0.5, min_speedup=1.0), students, TC)
    assert [r.passed for r in results] == [False, False]
    assert all(r.value is None for r in results)
    assert "no teacher variant" in results[0].detail
    assert "no teacher latency" in results[1].detail


def test_teacher_falls_back_to_any_teacher_variant(variants):
    no_pytorch = [v for v in variants if v["name"] != "teacher-pytorch"]
    (result,) = evaluate_gates(GateConfig(min_speedup=1.0), no_pytorch, TC)
    assert result.value == pytest.approx(15.0 / 4.0)
    assert "vs teacher-onnx 15.00 ms" in result.detail


def test_unmeasured_accuracy_fails_with_detail(variants):
    variants[-1]["accuracy"] = None
    (result,) = evaluate_gates(GateConfig(max_accuracy_drop=0.5), variants, TC)
    assert not result.passed
    assert result.detail == "student-onnx-int8 has no measured accuracy"


def test_no_gates_configured_and_failed_gates_filter(variants):
    assert evaluate_gates(GateConfig(), variants, TC) == []
    results = evaluate_gates(GateConfig(max_accuracy_drop=0.01, min_speedup=2.0, max_latency_ms=3.0), variants, TC)
    assert [r.name for r in results] == ["max-accuracy-drop", "min-speedup", "max-latency-ms"]
    assert [r.name for r in failed_gates(results)] == ["max-accuracy-drop", "max-latency-ms"]


def test_gate_result_to_dict():
    result = GateResult("min-speedup", 2.0, 5.0, True, "fine")
    assert result.to_dict() == {"name": "min-speedup", "limit": 2.0, "value": 5.0, "passed": True, "detail": "fine"}


@pytest.mark.parametrize("kwargs, flag", [
    ({"max_accuracy_drop": 1.5}, "--max-accuracy-drop"),
    ({"max_accuracy_drop": -0.1}, "--max-accuracy-drop"),
    ({"min_speedup": -1}, "--min-speedup must be > 0, got -1"),
    ({"min_speedup": float("nan")}, "--min-speedup"),
    ({"max_latency_ms": 0}, "--max-latency-ms must be > 0, got 0"),
    ({"max_accuracy_regression": 1.5}, "--max-accuracy-regression must be in \\[0, 1\\]"),
    ({"max_accuracy_regression": float("nan")}, "--max-accuracy-regression"),
    ({"max_latency_regression": 0.9}, "--max-latency-regression is a ratio of current to baseline p50, at least 1"),
])
def test_gate_config_rejects_bad_values(kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        GateConfig(**kwargs)


def test_gate_config_reports_all_problems_at_once():
    with pytest.raises(ValueError) as err:
        GateConfig(max_accuracy_drop=2, min_speedup=0, max_latency_ms=-5)
    assert all(flag in str(err.value) for flag in ("--max-accuracy-drop", "--min-speedup", "--max-latency-ms"))


def _lm_row(name: str, model: str, perplexity: float | None, agreement: float | None) -> dict:
    return {"name": name, "model": model, "format": "pytorch", "precision": "fp32",
            "quality": {"perplexity": perplexity, "top1_agreement": agreement},
            "latency_ms": {"batch_1": {"p50": 10.0 if model == "teacher" else 4.0}}}


def test_causal_lm_gates_read_perplexity_ratio_and_agreement_of_the_student():
    rows = [_lm_row("teacher-pytorch", "teacher", 30.0, 1.0), _lm_row("student-pruned-pytorch", "baseline", 9e4, 0.01),
            _lm_row("student-pytorch", "student", 45.0, 0.62)]
    ppl, agree = evaluate_gates(GateConfig(max_perplexity_ratio=1.5, min_agreement=0.7), rows, LM)
    assert ppl.passed and ppl.value == pytest.approx(1.5) and "student-pytorch" in ppl.detail
    assert not agree.passed and agree.value == pytest.approx(0.62) and "short by 0.0800" in agree.detail
    (strict,) = evaluate_gates(GateConfig(max_perplexity_ratio=1.4), rows, LM)
    assert not strict.passed and "(by 0.10)" in strict.detail
    missing = [_lm_row("teacher-pytorch", "teacher", None, None), _lm_row("student-pytorch", "student", None, None)]
    assert not any(r.passed for r in evaluate_gates(GateConfig(max_perplexity_ratio=2, min_agreement=0), missing, LM))
    with pytest.raises(ValueError, match="--max-perplexity-ratio must be >= 1"):
        GateConfig(max_perplexity_ratio=0.5)


def _comparison(change: float, low: float | None, high: float | None, ratio: float, r_low: float | None,
                r_high: float | None) -> dict:
    """The ``deployed`` pair of a ``compare_reports`` result, as far as the regression gates read it."""
    acc = {"baseline": 0.95, "current": 0.95 + change, "change": change}
    lat = {"baseline_p50": 4.0, "current_p50": 4.0 * ratio, "ratio": ratio}
    if low is not None:
        acc |= {"low": low, "high": high}
    if r_low is not None:
        lat |= {"low": r_low, "high": r_high}
    return {"confidence": 0.95, "deployed": {"name": "student-onnx-int8", "baseline_name": "student-onnx-int8",
                                             "metrics": {"accuracy": acc}, "latency": {"batch_1": lat}}}


def test_regression_gates_judge_the_whole_interval():
    cfg = GateConfig(max_accuracy_regression=0.01, max_latency_regression=1.10)
    # the regression's interval [0.015, 0.04] lies above 0.01; the ratio's [1.12, 1.30] lies above 1.10: both fail
    acc, lat = evaluate_gates(cfg, [], TC, comparison=_comparison(-0.025, -0.04, -0.015, 1.2, 1.12, 1.30))
    assert not acc.passed and acc.value == pytest.approx(0.015) and not lat.passed and lat.value == pytest.approx(1.12)
    assert acc.detail.startswith("student-onnx-int8 vs baseline student-onnx-int8: accuracy 0.9250 vs 0.9500")
    assert lat.detail.endswith("lower end 1.120× > limit 1.100× (by 0.020×)")
    # the same point estimates with intervals that reach below the limits: noise, both pass
    acc, lat = evaluate_gates(cfg, [], TC, comparison=_comparison(-0.025, -0.05, 0.0, 1.2, 1.05, 1.35))
    assert acc.passed and acc.value == pytest.approx(0.0) and lat.passed and lat.value == pytest.approx(1.05)


def test_regression_gates_without_intervals_judge_the_point_estimate():
    acc, lat = evaluate_gates(GateConfig(max_accuracy_regression=0.01, max_latency_regression=1.10), [], TC,
                              comparison=_comparison(-0.025, None, None, 1.05, None, None))
    assert not acc.passed and acc.value == pytest.approx(0.025) and "point estimate" in acc.detail
    assert lat.passed and lat.value == pytest.approx(1.05) and "point estimate" in lat.detail


def test_regression_gates_fail_without_a_student_in_both_runs():
    results = evaluate_gates(GateConfig(max_accuracy_regression=0.01, max_latency_regression=1.1), [], TC,
                             comparison={"deployed": None})
    assert [r.passed for r in results] == [False, False]
    assert all("no student in both runs" in r.detail and r.value is None for r in results)
