"""Quality gates: pass/fail checks on benchmark results, for CI to act on.

A gate compares one number taken from the report's ``variants`` against a limit the user gave on the command
line. Gates never raise on missing data: a gate that cannot be computed fails, and its detail says why, so a
broken benchmark can never make CI green.

The two regression gates compare the deployed student with the same variant of a baseline run
(``reporting.compare``) and judge the bootstrap interval, not the point difference: a few hundred test examples
and a shared CI machine move accuracy and latency by noise alone, and a gate that fires on noise gets switched off.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol

from compresskit.variants import field_value, finite_number, reference_teacher

# Accuracies are ratios of counts and limits are typed as decimals, so 0.97 - 0.96 must not fail a 0.01 limit.
_EPS = 1e-9


class GateFields(Protocol):
    """The report fields the gates read, as a task family names them (``compresskit.tasks.Task``)."""

    quality_metric: str
    """What ``--max-accuracy-drop`` and ``--max-accuracy-regression`` compare (higher is better)."""
    agreement_metric: str
    """What ``--min-agreement`` reads, in [0, 1]."""
    perplexity_metric: str | None
    """What ``--max-perplexity-ratio`` reads (lower is better); None where the family has none."""


@dataclass(frozen=True)
class GateConfig:
    """Limits for the quality gates; ``None`` leaves a gate out."""

    max_accuracy_drop: float | None = None
    """Largest allowed teacher-minus-student accuracy, absolute (0.01 = one point), in [0, 1]."""
    min_speedup: float | None = None
    """Smallest allowed teacher p50 / best student p50 at batch 1, > 0."""
    max_latency_ms: float | None = None
    """Largest allowed best student p50 at batch 1, in milliseconds, > 0."""
    max_perplexity_ratio: float | None = None
    """Largest allowed student / teacher perplexity on held-out text (a family that measures perplexity), >= 1."""
    min_agreement: float | None = None
    """Smallest allowed agreement of the student with the teacher (the family's ``agreement_metric``: top-1
    next-token agreement of a causal LM, label agreement of a classifier), in [0, 1]."""
    max_accuracy_regression: float | None = None
    """Largest allowed loss of the deployed student's quality metric against ``--baseline``, absolute, in [0, 1]:
    fails only when the whole 95 % interval of baseline − current lies above it."""
    require_student: bool = False
    """Fail when the decision's chosen variant (``compresskit.decision``: the fastest within the quality budget) is
    not a student, or when nothing meets the budget: for users who want to know when distillation stopped paying."""
    max_latency_regression: float | None = None
    """Largest allowed current / baseline p50 at batch 1 of the deployed student (1.10 = 10 % slower), >= 1: fails
    only when the lower end of the ratio's 95 % interval lies above it."""

    def __post_init__(self) -> None:
        problems = []
        # Written as `not (...)` so that NaN is rejected too.
        if self.max_accuracy_drop is not None and not 0 <= self.max_accuracy_drop <= 1:
            problems.append(f"--max-accuracy-drop must be in [0, 1], got {self.max_accuracy_drop}")
        if self.min_speedup is not None and not self.min_speedup > 0:
            problems.append(f"--min-speedup must be > 0, got {self.min_speedup}")
        if self.max_latency_ms is not None and not self.max_latency_ms > 0:
            problems.append(f"--max-latency-ms must be > 0, got {self.max_latency_ms}")
        if self.max_perplexity_ratio is not None and not self.max_perplexity_ratio >= 1:
            problems.append(f"--max-perplexity-ratio must be >= 1, got {self.max_perplexity_ratio}")
        if self.min_agreement is not None and not 0 <= self.min_agreement <= 1:
            problems.append(f"--min-agreement must be in [0, 1], got {self.min_agreement}")
        if self.max_accuracy_regression is not None and not 0 <= self.max_accuracy_regression <= 1:
            problems.append(f"--max-accuracy-regression must be in [0, 1] (0.01 = one point), "
                            f"got {self.max_accuracy_regression}")
        if self.max_latency_regression is not None and not self.max_latency_regression >= 1:
            problems.append(f"--max-latency-regression is a ratio of current to baseline p50, at least 1 (1.10 = 10 % "
                            f"slower), got {self.max_latency_regression}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class GateResult:
    """The outcome of one gate; ``value`` is None when it could not be computed."""

    name: str
    limit: float
    value: float | None
    passed: bool
    detail: str

    def to_dict(self) -> dict:
        """Return the JSON form stored in the report's ``gates`` list."""
        return dataclasses.asdict(self)


def _p50_batch1(variant: dict) -> float | None:
    """Return a variant's median latency at batch size 1 in ms, or None when not measured."""
    p50 = finite_number(((variant.get("latency_ms") or {}).get("batch_1") or {}).get("p50"))
    # A zero or negative time is a broken measurement, and would divide by zero in the speed-up.
    return p50 if p50 is not None and p50 > 0 else None


def _fastest_student(variants: list[dict]) -> dict | None:
    """Return the student variant with the lowest p50 at batch 1, or None if no student was timed."""
    timed = [v for v in variants if v.get("model") == "student" and _p50_batch1(v) is not None]
    return min(timed, key=_p50_batch1, default=None)


def deployed_student(variants: list[dict]) -> dict | None:
    """Return the student a user would ship: the quantized ONNX one if built (of several, as an LLM's int8 and
    int4 graphs, the fastest: the one the speed gate judges too), else the fastest one."""
    quantized = [v for v in variants
                 if v.get("model") == "student" and v.get("format") == "onnx" and v.get("precision") != "fp32"]
    return _fastest_student(quantized) or (quantized[0] if quantized else _fastest_student(variants))


def _judge(name: str, limit: float, value: float, head: str, at_most: bool, spec: str, unit: str = ""
           ) -> GateResult:
    """Pass when ``value`` is at most (``at_most``) or at least ``limit``, within _EPS; the detail is ``head`` with
    the comparison, and on a failure the margin, each number through ``spec`` with ``unit``."""
    passed = value <= limit + _EPS if at_most else value >= limit - _EPS
    bound = f"limit {spec.format(limit)}{unit}"
    if passed:
        return GateResult(name, limit, value, True, f"{head} {'<=' if at_most else '>='} {bound}")
    gap, how = (value - limit, "by") if at_most else (limit - value, "short by")
    return GateResult(name, limit, value, False,
                      f"{head} {'>' if at_most else '<'} {bound} ({how} {spec.format(gap)}{unit})")


def _accuracy_gate(limit: float, variants: list[dict], metric: str) -> GateResult:
    name = "max-accuracy-drop"
    teacher, student = reference_teacher(variants), deployed_student(variants)
    if teacher is None or student is None:
        missing = "teacher" if teacher is None else "student"
        return GateResult(name, limit, None, False, f"no {missing} variant in the report: cannot compare {metric}")
    t_acc, s_acc = finite_number(field_value(teacher, metric)), finite_number(field_value(student, metric))
    if t_acc is None or s_acc is None:
        which = teacher["name"] if t_acc is None else student["name"]
        return GateResult(name, limit, None, False, f"{which} has no measured {metric}")
    drop = t_acc - s_acc
    head = f"{student['name']} {metric} {s_acc:.4f} vs teacher {t_acc:.4f}: drop {drop:.4f}"
    return _judge(name, limit, drop, head, at_most=True, spec="{:.4f}")


def _speedup_gate(limit: float, variants: list[dict]) -> GateResult:
    name = "min-speedup"
    teacher, student = reference_teacher(variants), _fastest_student(variants)
    t_p50 = _p50_batch1(teacher) if teacher is not None else None
    if t_p50 is None or student is None:
        missing = "teacher" if t_p50 is None else "student"
        return GateResult(name, limit, None, False, f"no {missing} latency at batch 1: cannot compute the speed-up")
    s_p50 = _p50_batch1(student)
    speedup = t_p50 / s_p50
    head = (f"{student['name']} p50 {s_p50:.2f} ms vs {teacher['name']} {t_p50:.2f} ms at batch 1: "
            f"speed-up {speedup:.2f}×")
    return _judge(name, limit, speedup, head, at_most=False, spec="{:.2f}", unit="×")


def _latency_gate(limit: float, variants: list[dict]) -> GateResult:
    name = "max-latency-ms"
    student = _fastest_student(variants)
    if student is None:
        return GateResult(name, limit, None, False, "no student latency at batch 1 in the report")
    p50 = _p50_batch1(student)
    head = f"{student['name']} p50 {p50:.2f} ms at batch 1"
    return _judge(name, limit, p50, head, at_most=True, spec="{:.2f}", unit=" ms")


def _perplexity_gate(limit: float, variants: list[dict], field: str | None) -> GateResult:
    name = "max-perplexity-ratio"
    if field is None:
        return GateResult(name, limit, None, False, "this task family measures no perplexity")
    teacher, student = reference_teacher(variants), deployed_student(variants)
    t = finite_number(field_value(teacher or {}, field))
    s = finite_number(field_value(student or {}, field))
    if t is None or s is None or t <= 0:
        return GateResult(name, limit, None, False, "no teacher and student perplexity in the report")
    ratio = s / t
    head = f"{student['name']} perplexity {s:.2f} vs teacher {t:.2f}: ratio {ratio:.2f}"
    return _judge(name, limit, ratio, head, at_most=True, spec="{:.2f}")


def _agreement_gate(limit: float, variants: list[dict], field: str) -> GateResult:
    name = "min-agreement"
    student = deployed_student(variants)
    a = finite_number(field_value(student or {}, field))
    if a is None:
        return GateResult(name, limit, None, False, f"no student {field} (agreement with the teacher) in the report")
    head = f"{student['name']} {field} (agreement with the teacher) {a:.4f}"
    return _judge(name, limit, a, head, at_most=False, spec="{:.4f}")


def _regression_head(pair: dict) -> str:
    """Which two variants were compared: ``student-onnx-int8 vs baseline student-onnx-int8``."""
    return f"{pair.get('name')} vs baseline {pair.get('baseline_name')}"


def _accuracy_regression_gate(limit: float, comparison: dict | None, metric: str) -> GateResult:
    name = "max-accuracy-regression"
    pair = (comparison or {}).get("deployed")
    if pair is None:
        why = "no --baseline comparison" if comparison is None else "no student in both runs"
        return GateResult(name, limit, None, False, f"{why}: cannot compare {metric} with the baseline")
    m = (pair.get("metrics") or {}).get(metric) or {}
    base, cur = finite_number(m.get("baseline")), finite_number(m.get("current"))
    if base is None or cur is None:
        return GateResult(name, limit, None, False, f"{_regression_head(pair)}: no {metric} in both runs")
    regression = base - cur
    head = f"{_regression_head(pair)}: {metric} {cur:.4f} vs {base:.4f}, regression {regression:+.4f}"
    low, high = finite_number(m.get("low")), finite_number(m.get("high"))
    if low is None or high is None:  # no per-example predictions (a causal LM, an old baseline): no interval
        return _judge(name, limit, regression, head + " (no per-example predictions: point estimate judged)",
                      at_most=True, spec="{:.4f}")
    # m's interval is of current − baseline; the regression's is its mirror image
    level = f"{100 * (comparison.get('confidence') or 0.95):g} %"
    head += f", {level} CI [{-high:+.4f}, {-low:+.4f}]: lower end {-high:.4f}"
    return _judge(name, limit, -high, head, at_most=True, spec="{:.4f}")


def _latency_regression_gate(limit: float, comparison: dict | None) -> GateResult:
    name = "max-latency-regression"
    pair = (comparison or {}).get("deployed")
    if pair is None:
        why = "no --baseline comparison" if comparison is None else "no student in both runs"
        return GateResult(name, limit, None, False, f"{why}: cannot compare latency with the baseline")
    lat = (pair.get("latency") or {}).get("batch_1") or {}
    ratio = finite_number(lat.get("ratio"))
    if ratio is None:
        return GateResult(name, limit, None, False, f"{_regression_head(pair)}: no p50 at batch 1 in both runs")
    head = (f"{_regression_head(pair)}: p50 @1 {lat['current_p50']:.2f} ms vs {lat['baseline_p50']:.2f} ms, "
            f"ratio {ratio:.3f}×")
    low, high = finite_number(lat.get("low")), finite_number(lat.get("high"))
    if low is None or high is None:
        return _judge(name, limit, ratio, head + " (no latency samples: point estimate judged)", at_most=True,
                      spec="{:.3f}", unit="×")
    level = f"{100 * (comparison.get('confidence') or 0.95):g} %"
    head += f", {level} CI [{low:.3f}, {high:.3f}]: lower end {low:.3f}×"
    return _judge(name, limit, low, head, at_most=True, spec="{:.3f}", unit="×")


def _student_gate(decision: dict | None) -> GateResult:
    name = "require-student"
    if not decision:
        return GateResult(name, 1.0, None, False, "the report has no decision: cannot tell what ships")
    chosen = decision.get("chosen")
    if chosen is None:
        return GateResult(name, 1.0, 0.0, False, f"nothing meets the budget ({decision.get('budget_text')}): "
                                                 f"nothing ships; closest: {decision.get('closest')}")
    model = next((c.get("model") for c in decision.get("candidates") or [] if c.get("name") == chosen), None)
    if model == "student":
        return GateResult(name, 1.0, 1.0, True, f"{chosen} ships, a student")
    from compresskit.decision import kind_of

    cand = next(c for c in decision["candidates"] if c.get("name") == chosen)
    students = [c for c in decision["candidates"] if c.get("model") == "student"]
    why = ""
    if students:
        # the student nearest to shipping: fewest failed checks, then the fastest
        best = min(students, key=lambda c: (sum(not x["passed"] for x in c["checks"]), -(c.get("speedup") or 0.0)))
        failed = "; ".join(x["text"] for x in best["checks"] if not x["passed"])
        why = f"; best student {best['name']}: " + (failed or "within the budget but slower")
    return GateResult(name, 1.0, 0.0, False, f"{chosen} ships ({kind_of(cand)}), not a student{why}")


def evaluate_gates(cfg: GateConfig, variants: list[dict], fields: GateFields, comparison: dict | None = None,
                   decision: dict | None = None) -> list[GateResult]:
    """Evaluate every gate set in ``cfg`` against the report's ``variants``, in a fixed order.

    ``fields`` (the run's task family) names what the quality gates read. Speed and latency use the fastest student
    at batch 1; the accuracy gate compares the family's ``quality_metric`` (higher is better) of the quantized
    student when present, since that is what gets deployed. The
    regression gates read ``comparison`` (``reporting.compare.compare_reports`` of a baseline and this run), whose
    ``deployed`` entry pairs the deployed student with the baseline's. Missing data gives a failed result, never an
    exception.
    """
    metric = fields.quality_metric
    results = []
    if cfg.max_accuracy_drop is not None:
        results.append(_accuracy_gate(cfg.max_accuracy_drop, variants, metric))
    if cfg.min_speedup is not None:
        results.append(_speedup_gate(cfg.min_speedup, variants))
    if cfg.max_latency_ms is not None:
        results.append(_latency_gate(cfg.max_latency_ms, variants))
    if cfg.max_perplexity_ratio is not None:
        results.append(_perplexity_gate(cfg.max_perplexity_ratio, variants, fields.perplexity_metric))
    if cfg.min_agreement is not None:
        results.append(_agreement_gate(cfg.min_agreement, variants, fields.agreement_metric))
    if cfg.require_student:
        results.append(_student_gate(decision))
    if cfg.max_accuracy_regression is not None:
        results.append(_accuracy_regression_gate(cfg.max_accuracy_regression, comparison, metric))
    if cfg.max_latency_regression is not None:
        results.append(_latency_regression_gate(cfg.max_latency_regression, comparison))
    return results


def failed_gates(results: list[GateResult]) -> list[GateResult]:
    """Return the results that did not pass, in their original order."""
    return [r for r in results if not r.passed]
