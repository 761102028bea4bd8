"""What to ship: the fastest measured variant that meets the user's quality budget, the variants no other beats on
both quality and speed (the frontier), and why, as report.json's ``decision``.

The budget is made of the limits the user already gives the gates (``--max-accuracy-drop``, ``--max-perplexity-ratio``,
``--min-agreement``, and ``--max-latency-ms`` / ``--min-speedup`` when given); when no quality limit is given, the
family's stated default applies (``Task.default_budget``), so every run answers the question. Every variant is a
candidate, whatever made it: the teacher unchanged or quantized, a student, the classical baseline. A user may ship
any of them, and sometimes the honest answer is not a student.

A variant meets the budget when its measured figure does (as the gates judge); where the report has an interval for
that figure (paired over the same test examples), the check records it and the decision says when the interval
reaches past the limit, since a few hundred examples can hide a point either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from compresskit.variants import field_value, finite_number, reference_teacher

QUALITY_GATES = ("max_accuracy_drop", "max_perplexity_ratio", "min_agreement")
"""The gates whose limits make the quality budget, in the order the decision lists them."""
SPEED_GATES = ("max_latency_ms", "min_speedup")
"""Gates that, when given, also bound what may ship."""


@dataclass(frozen=True)
class Workload:
    """A speed figure the decision ranks variants by: a report row's field, its label, and which way is faster."""

    key: str
    label: str
    field: str
    higher_is_better: bool
    rounds: str | None = None
    """The row field holding this figure once per benchmark round (fresh process), for the speed-up's interval."""


def budget_of(gates: Any, default: dict[str, float]) -> tuple[dict[str, float], str]:
    """The budget from the gate limits (``gates.GateConfig``), keyed by gate name, and where it came from:
    ``gates`` when the user gave at least one quality limit, else ``default`` (the family's default quality budget,
    plus any speed limit the user gave)."""
    given = {k: float(v) for k in (*QUALITY_GATES, *SPEED_GATES) if (v := getattr(gates, k, None)) is not None}
    if any(k in given for k in QUALITY_GATES):
        return given, "gates"
    return {**default, **given}, "default"


def _p50_1(row: dict) -> float | None:
    p50 = finite_number(((row.get("latency_ms") or {}).get("batch_1") or {}).get("p50"))
    return p50 if p50 is not None and p50 > 0 else None


def _label(task: Any, field: str, fallback: str) -> tuple[str, float]:
    """The report column's header and scale for a field (``accuracy`` → ``accuracy (%)``, 100), else ``fallback``."""
    from compresskit.tasks.protocol import column_of

    column = column_of(task, field)
    return (column.header, column.scale) if column else (fallback, 1.0)


@dataclass(frozen=True)
class _Dim:
    """One quality term of the budget: which row field it reads and how a row's value becomes the judged number."""

    gate: str
    field: str | None  # None: the family does not measure it (a perplexity budget on a classifier): never met
    at_most: bool  # the judged number must be at most the limit (drop, ratio) or at least (agreement)


def _field_of(task: Any, gate: str) -> str | None:
    """The report row field a quality gate reads, as the family names it (None: the family does not measure it)."""
    return {"max_accuracy_drop": task.quality_metric, "max_perplexity_ratio": task.perplexity_metric,
            "min_agreement": task.agreement_metric}[gate]


def _dims(task: Any, budget: dict[str, float]) -> list[_Dim]:
    dims = []
    for gate in QUALITY_GATES:
        if gate not in budget:
            continue
        dims.append(_Dim(gate, _field_of(task, gate), at_most=gate != "min_agreement"))
    return dims


def _judged(dim: _Dim, row: dict, teacher: dict) -> float | None:
    """The number a budget term judges for ``row``: teacher − row (a drop), row / teacher (a ratio) or the row's
    own agreement; None when not measured."""
    if dim.field is None:
        return None
    mine, theirs = finite_number(field_value(row, dim.field)), finite_number(field_value(teacher, dim.field))
    if mine is None:
        return None
    if dim.gate == "max_accuracy_drop":
        return None if theirs is None else theirs - mine
    if dim.gate == "max_perplexity_ratio":
        return None if theirs is None or theirs <= 0 else mine / theirs
    return mine


_WHAT = {"max_accuracy_drop": "{metric} drop", "max_perplexity_ratio": "perplexity ratio",
         "min_agreement": "agreement with the teacher", "max_latency_ms": "p50 at batch 1",
         "min_speedup": "speed-up at batch 1"}


def _number(gate: str, x: float) -> str:
    if gate in ("max_accuracy_drop", "min_agreement"):
        return f"{100 * x:.1f}" + (" points" if gate == "max_accuracy_drop" else " %")
    if gate == "max_latency_ms":
        return f"{x:.2f} ms"
    return f"{x:.2f}×"


def _bare(gate: str, x: float) -> str:
    """``_number`` without its unit (inside an interval that the figure before it names)."""
    return f"{100 * x:.1f}" if gate in ("max_accuracy_drop", "min_agreement") else f"{x:.2f}"


def budget_text(budget: dict[str, float], task: Any) -> str:
    """The budget in words: ``accuracy at most 1.0 points below teacher-pytorch; perplexity at most 1.25×``."""
    parts = []
    for gate, limit in budget.items():
        if gate == "max_accuracy_drop":
            parts.append(f"{_label(task, task.quality_metric, task.quality_metric)[0].split(' (')[0]} at most "
                         f"{_number(gate, limit)} below the teacher's")
        elif gate == "max_perplexity_ratio":
            parts.append(f"perplexity at most {limit:.2f}× the teacher's")
        elif gate == "min_agreement":
            parts.append(f"agreement with the teacher at least {_number(gate, limit)}")
        elif gate == "max_latency_ms":
            parts.append(f"p50 at batch 1 at most {limit:.2f} ms")
        elif gate == "min_speedup":
            parts.append(f"at least {limit:.2f}× faster than the teacher at batch 1")
    return "; ".join(parts)


def _check(gate: str, value: float | None, limit: float, interval: tuple[float, float] | None, what: str
           ) -> dict[str, Any]:
    at_most = gate.startswith("max_")
    if value is None:
        return {"gate": gate, "what": what, "value": None, "limit": limit, "low": None, "high": None, "passed": False,
                "text": f"{what}: not measured"}
    # limits are typed as decimals and accuracies are ratios of counts: 0.97 - 0.96 must not fail a 0.01 limit
    passed = value <= limit + 1e-9 if at_most else value >= limit - 1e-9
    low, high = interval if interval else (None, None)
    ci = f" (95 % CI {_bare(gate, low)} to {_bare(gate, high)})" if interval else ""
    return {"gate": gate, "what": what, "value": value, "limit": limit, "low": low, "high": high, "passed": passed,
            "text": f"{what} {_number(gate, value)}{ci} {'≤' if at_most else '≥'} {_number(gate, limit)}"
                    if passed else
                    f"{what} {_number(gate, value)}{ci} {'>' if at_most else '<'} {_number(gate, limit)}"}


def _uncertain(check: dict[str, Any]) -> bool:
    """Whether a passed check's interval reaches past the limit."""
    if not check["passed"] or check["low"] is None:
        return False
    return check["high"] > check["limit"] + 1e-9 if check["gate"].startswith("max_") else \
        check["low"] < check["limit"] - 1e-9


def _violation(check: dict[str, Any]) -> float:
    """How far a failed check is from its limit, relative to the limit (a missing figure counts as far)."""
    if check["passed"]:
        return 0.0
    if check["value"] is None:
        return math.inf
    scale = abs(check["limit"]) or 1.0
    return abs(check["value"] - check["limit"]) / scale


def _faster(w: Workload, a: float, b: float) -> bool:
    return a > b if w.higher_is_better else a < b


def _speedup(w: Workload, mine: float, theirs: float) -> float:
    return mine / theirs if w.higher_is_better else theirs / mine


def frontier(names: list[str], quality: dict[str, list[float]], speed: dict[str, float], workload: Workload
             ) -> list[str]:
    """The names no other beats on every quality term (each oriented so that lower is better) and on speed: not
    worse anywhere and better somewhere. Identical points do not beat each other. Ordered fastest first."""
    def key(n: str) -> list[float]:
        s = speed[n]
        return [*quality[n], -s if workload.higher_is_better else s]

    points = {n: key(n) for n in names}
    front = [n for n in names if not any(
        all(o <= m for o, m in zip(points[other], points[n])) and any(o < m for o, m in zip(points[other], points[n]))
        for other in names if other != n)]
    return sorted(front, key=lambda n: points[n][-1])


def decide(report: dict[str, Any], task: Any, budget: dict[str, float], source: str) -> dict[str, Any]:
    """report.json's ``decision`` for a report dict (its ``variants`` measured), the family ``task`` and the
    ``budget`` (``budget_of``): see the module docstring. Rows without the first workload's speed are not
    candidates (a variant the bench skipped)."""
    variants = report.get("variants") or []
    teacher = reference_teacher(variants)
    workloads: list[Workload] = task.decision_workloads(variants)
    main = workloads[0]
    dims = _dims(task, budget)
    candidates, quality_keys, speeds = [], {}, {}
    for row in variants:
        speed = {w.key: s for w in workloads if (s := finite_number(field_value(row, w.field))) is not None and s > 0}
        if main.key not in speed or teacher is None:
            continue
        checks = []
        for dim in dims:
            value = _judged(dim, row, teacher)
            interval = None if row is teacher else task.budget_interval(dim.gate, row, teacher, report)
            what = (_WHAT[dim.gate].format(metric=_label(task, dim.field, dim.field)[0].split(" (")[0])
                    if dim.field else f"{_WHAT[dim.gate]} (this family does not measure it)")
            checks.append(_check(dim.gate, value, budget[dim.gate], interval, what))
        t_speed = finite_number(field_value(teacher, main.field))
        if "max_latency_ms" in budget:
            checks.append(_check("max_latency_ms", _p50_1(row), budget["max_latency_ms"], None,
                                 _WHAT["max_latency_ms"]))
        if "min_speedup" in budget:
            mine, theirs = _p50_1(row), _p50_1(teacher)
            checks.append(_check("min_speedup", theirs / mine if mine and theirs else None, budget["min_speedup"],
                                 None, _WHAT["min_speedup"]))
        name = str(row.get("name"))
        candidates.append({"name": name, "model": row.get("model"), "format": row.get("format"),
                           "precision": row.get("precision"), "speed": speed,
                           "speedup": _speedup(main, speed[main.key], t_speed) if t_speed else None,
                           "meets": all(c["passed"] for c in checks), "checks": checks})
        # the frontier is drawn on the terms this family measures, each oriented so that lower is better
        judged = [(c["value"], d) for c, d in zip(checks, dims) if d.field is not None]
        if all(v is not None for v, _ in judged):
            # to four decimals (0.01 points of accuracy, 0.0001 of a ratio): a verified fp32 graph whose perplexity
            # differs from PyTorch's in the sixth digit does not beat it on quality
            quality_keys[name] = [round(v if d.at_most else -v, 4) for v, d in judged]
            speeds[name] = speed[main.key]
    meeting = [c for c in candidates if c["meets"]]

    def fastest(w: Workload) -> dict[str, Any] | None:
        timed = [c for c in meeting if w.key in c["speed"]]
        best = None
        for c in timed:
            if best is None or _faster(w, c["speed"][w.key], best["speed"][w.key]):
                best = c
        return best

    chosen = fastest(main)
    by_workload = {w.key: (c["name"] if (c := fastest(w)) else None) for w in workloads}
    front = frontier(list(quality_keys), quality_keys, speeds, main) if quality_keys else []
    closest = None
    if chosen is None and candidates:
        closest = min(candidates, key=lambda c: (sum(not x["passed"] for x in c["checks"]),
                                                 sum(_violation(x) for x in c["checks"])))["name"]
    decision = {
        "budget": budget, "budget_source": source, "budget_text": budget_text(budget, task),
        "workload": _workload_dict(main), "workloads": [_workload_dict(w) for w in workloads],
        "quality": _quality_axis(task, dims, budget, teacher),
        "chosen": chosen["name"] if chosen else None, "closest": closest, "frontier": front,
        "by_workload": by_workload, "candidates": candidates,
    }
    decision["headline"] = _headline(decision, report, task, teacher, main)
    decision["reason"] = _reason(decision, chosen, teacher, main, candidates)
    decision["warnings"] = _warnings(decision, report, task, teacher, chosen, candidates)
    return decision


def _workload_dict(w: Workload) -> dict[str, Any]:
    return {"key": w.key, "label": w.label, "field": w.field, "higher_is_better": w.higher_is_better}


def _quality_axis(task: Any, dims: list[_Dim], budget: dict[str, float], teacher: dict | None) -> dict[str, Any]:
    """The first quality term as a plot axis: the row field, its label and scale, and the row value at the
    budget's edge. Without a quality term, the family's quality metric and no edge."""
    dims = [d for d in dims if d.field is not None]
    dim = dims[0] if dims else None
    field = dim.field if dim else task.quality_metric
    label, scale = _label(task, field, field)
    theirs = finite_number(field_value(teacher or {}, field))
    threshold = None
    if dim is not None:
        limit = budget[dim.gate]
        threshold = {"max_accuracy_drop": None if theirs is None else theirs - limit,
                     "max_perplexity_ratio": None if theirs is None else theirs * limit,
                     "min_agreement": limit}[dim.gate]
    higher = not (dim is not None and dim.gate == "max_perplexity_ratio") and not (
        dim is None and task.perplexity_metric == field)
    return {"key": dim.gate if dim else None, "label": label, "field": field, "higher_is_better": higher,
            "scale": scale, "threshold": threshold, "log": not higher}


def _headline(decision: dict, report: dict, task: Any, teacher: dict | None, main: Workload) -> dict[str, Any] | None:
    """The chosen variant's speed-up over the reference teacher (with the interval compare's rounds give, where
    both have several rounds) and its quality figures beside the teacher's."""
    name = decision["chosen"]
    if name is None or teacher is None:
        return None
    row = next(v for v in report["variants"] if v.get("name") == name)
    cand = next(c for c in decision["candidates"] if c["name"] == name)
    low, high = speedup_interval(teacher, row, main)
    quality = []
    for check in cand["checks"]:
        if check["gate"] not in QUALITY_GATES:
            continue
        field = _field_of(task, check["gate"])
        if field is None:
            continue
        label, scale = _label(task, field, field)
        mine, theirs = finite_number(field_value(row, field)), finite_number(field_value(teacher, field))
        entry = {"gate": check["gate"], "label": label, "value": None if mine is None else mine * scale,
                 "teacher": None if theirs is None else theirs * scale, "low": None, "high": None,
                 "unit": " %" if scale == 100 else "", "scale": scale}
        interval = task.value_interval(field, row, report)
        if interval is not None:
            entry["low"], entry["high"] = interval[0] * scale, interval[1] * scale
        quality.append(entry)
    return {"variant": name, "against": teacher.get("name"), "speedup": cand["speedup"], "speedup_low": low,
            "speedup_high": high, "quality": quality}


def speedup_interval(teacher: dict, row: dict, w: Workload) -> tuple[float | None, float | None]:
    """The 95 % interval of the speed-up over the teacher from each benchmark round's figure (compare's rounds
    interval), or (None, None) where either has fewer than two rounds."""
    import numpy as np

    from compresskit.stats import rounds_ratio_interval

    if w.rounds is None:
        return None, None
    t, m = field_value(teacher, w.rounds) or [], field_value(row, w.rounds) or []
    if len(t) < 2 or len(m) < 2:
        return None, None
    # rounds_ratio_interval gives current / baseline: a speed-up is teacher / variant for a latency and
    # variant / teacher for a rate
    first, second = (t, m) if w.higher_is_better else (m, t)
    _, low, high = rounds_ratio_interval(np.asarray(first, dtype=float), np.asarray(second, dtype=float))
    return low, high


_KIND = {"student": "a distilled student", "baseline": "the classical baseline"}


def kind_of(candidate: dict[str, Any]) -> str:
    """What a variant is, in words: ``the teacher, quantized to int8`` / ``a distilled student``."""
    model, precision, fmt = candidate.get("model"), candidate.get("precision"), candidate.get("format")
    if model == "teacher":
        if fmt == "onnx" and precision not in (None, "fp32"):
            return f"the teacher quantized to {precision}, no distillation"
        form = (" on ONNX Runtime" if fmt == "onnx" else " with bfloat16 weights" if precision == "bf16"
                else " under torch.compile" if str(candidate.get("name", "")).endswith("-compile") else "")
        return "the teacher itself" + form
    if model == "baseline" and fmt == "sklearn":
        return "the classical baseline (no neural network)"
    if model == "baseline":
        return "an undistilled baseline"
    return _KIND.get(str(model), str(model))


def _reason(decision: dict, chosen: dict | None, teacher: dict | None, main: Workload, candidates: list[dict]
            ) -> str:
    n = len(candidates)
    meeting = sum(c["meets"] for c in candidates)
    if chosen is None:
        closest = next((c for c in candidates if c["name"] == decision["closest"]), None)
        if closest is None:
            return "no variant was measured: nothing to choose from"
        failed = "; ".join(c["text"] for c in closest["checks"] if not c["passed"])
        return (f"none of the {n} measured variants meets the budget ({decision['budget_text']}); the closest, "
                f"{closest['name']}, fails: {failed}")
    speed = chosen["speed"][main.key]
    unit = main.label
    against = ""
    if chosen["speedup"] is not None and teacher is not None and chosen["name"] != teacher.get("name"):
        against = f", {chosen['speedup']:.2f}× {teacher.get('name')}"
    checks = "; ".join(c["text"] for c in chosen["checks"])
    # the name and kind are said beside the reason wherever it is shown (the verdict's Ship line, the card's lead)
    return (f"the fastest of the {meeting} of {n} measured variants within the budget: {unit}: {speed:.2f}{against}; "
            f"{checks}")


def _warnings(decision: dict, report: dict, task: Any, teacher: dict | None, chosen: dict | None,
              candidates: list[dict]) -> list[str]:
    out = []
    variants = report.get("variants") or []
    t_q = finite_number(field_value(teacher or {}, task.quality_metric))
    label, scale = _label(task, task.quality_metric, task.quality_metric)
    short = label.split(" (")[0]
    unit = " %" if scale == 100 else ""
    for row in variants:
        q = finite_number(field_value(row, task.quality_metric))
        if row.get("model") == "baseline" and row.get("format") == "sklearn" and q is not None and t_q is not None \
                and q > t_q:
            out.append(f"{row['name']} beats the teacher on {short} ({q * scale:.2f}{unit} against "
                       f"{t_q * scale:.2f}{unit}): a classical model does this job better than the model being "
                       "compressed")
    if chosen is not None and chosen.get("model") == "baseline" and chosen.get("format") == "sklearn":
        out.append(f"the classical baseline {chosen['name']} wins: faster than every variant within the budget, "
                   "with no neural network to ship")
    if decision["frontier"] and not any(c["model"] == "student" for c in candidates
                                        if c["name"] in decision["frontier"]):
        out.append("no student is on the frontier: some other variant is at least as good and as fast as every "
                   "student")
    students = [c for c in candidates if c["model"] == "student"]
    if students and not any(c["meets"] for c in students):
        best = max(students, key=lambda c: c.get("speedup") or 0.0)
        failed = "; ".join(x["text"] for x in best["checks"] if not x["passed"])
        out.append(f"no student is within the budget: distillation does not pay at this budget (the fastest student, "
                   f"{best['name']}: {failed})")
    if chosen is not None:
        for c in chosen["checks"]:
            if _uncertain(c):
                out.append(f"{chosen['name']} meets the budget on its measured figure, but the 95 % interval of its "
                           f"{c['what']} reaches past the limit: more test examples "
                           "would settle it")
    if chosen is None and decision["closest"]:
        out.append(f"nothing meets the budget: nothing is shipped (closest: {decision['closest']})")
    return out
