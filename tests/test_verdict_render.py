"""The report leads with its answer: the verdict block from ``decision`` (Markdown, HTML, console), the decision
column, plain-word marks instead of emoji, tables that scroll instead of running off the page, and the frontier plot
with human axis labels. Report dicts are built here in code; nothing is measured."""

from __future__ import annotations

import copy
import re

import pytest
from rich.console import Console

from compresskit.reporting import plots
from compresskit.reporting.render import (
    decision_mark,
    quality_label,
    render_console_table,
    render_html,
    render_markdown,
    render_verdict_console,
    verdict_lines,
)

EMOJI = ("✅", "❌", "⚠")


def _row(name: str, model: str, fmt: str, precision: str, accuracy: float, p50_1: float, p50_32: float) -> dict:
    def lat(p50: float) -> dict:
        return {"mean": p50 * 1.02, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "iterations": 20}

    return {"name": name, "model": model, "format": fmt, "precision": precision, "device": "cpu",
            "providers": ["CPUExecutionProvider"] if fmt == "onnx" else [], "accuracy": accuracy,
            "macro_f1": accuracy - 0.01, "agreement_with_teacher": 1.0 if model == "teacher" else 0.97,
            "size_mb": 40.0, "parameters": 11_000_000, "peak_rss_mb": 600.0, "peak_gpu_mb": None,
            "latency_ms": {"batch_1": lat(p50_1), "batch_32": lat(p50_32)},
            "throughput_per_s": {"batch_1": 1000 / p50_1, "batch_32": 32_000 / p50_32}}


def _decision(chosen: str | None = "student-onnx-int8") -> dict:
    check = {"gate": "max_accuracy_drop", "value": 0.004, "limit": 0.01, "low": -0.01, "high": 0.02, "passed": True,
             "text": "accuracy drop 0.4 points (95 % CI −1.0 to 2.0) ≤ 1.0"}
    return {
        "budget": {"max_accuracy_drop": 0.01}, "budget_source": "default",
        "budget_text": "accuracy at most 1.0 point below teacher-pytorch",
        "workload": {"key": "batch_1", "label": "p50 latency at batch 1 (ms)", "field": "latency_ms.batch_1.p50",
                     "higher_is_better": False},
        "quality": {"key": "max_accuracy_drop", "label": "accuracy (%)", "field": "accuracy", "higher_is_better": True,
                    "scale": 100, "threshold": 0.943},
        "chosen": chosen, "closest": None if chosen else "student-onnx",
        "frontier": ["student-onnx-int8", "baseline-tfidf", "teacher-onnx"],
        "reason": "student-onnx-int8 is the fastest of the 3 of 6 measured variants within the budget.",
        "by_workload": {"batch_1": "student-onnx-int8", "batch_32": "baseline-tfidf"},
        "workloads": [{"key": "batch_1", "label": "p50 latency at batch 1 (ms)", "higher_is_better": False},
                      {"key": "batch_32", "label": "p50 latency at batch 32 (ms)", "higher_is_better": False}],
        "headline": {"variant": "student-onnx-int8", "speedup": 6.54, "speedup_low": 6.1, "speedup_high": 7.0,
                     "against": "teacher-pytorch",
                     "quality": [{"label": "accuracy (%)", "value": 95.72, "teacher": 95.30, "low": 93.1,
                                  "high": 98.0, "unit": " %"}]} if chosen else None,
        "warnings": ["baseline-tfidf is more accurate than the teacher (97.30 % against 95.30 %)"],
        "candidates": [{"name": n, "model": m, "meets": meets, "speed": {"batch_1": 1.0, "batch_32": 10.0},
                        "checks": [check]}
                       for n, m, meets in (("teacher-onnx", "teacher", True), ("student-onnx", "student", True),
                                           ("student-onnx-int8", "student", bool(chosen)),
                                           ("baseline-tfidf", "baseline", True))],
    }


@pytest.fixture
def report() -> dict:
    return {
        "schema_version": 1, "task": "text-classification", "run_name": "bbc-news", "created": "2026-11-28T00:00:00Z",
        "teacher": {"source": "minilm-bbc", "parameters": 22_713_216, "layers": 6, "hidden_size": 384},
        "student": {"source": "teacher-layers 0,5", "parameters": 11_000_000, "layers": 2, "hidden_size": 384},
        "data": {"source": "bbc.csv", "sizes": {"train": 1780, "test": 223}},
        "machine": {"cpu": "AMD EPYC", "physical_cores": 2, "logical_cores": 2, "threads": 2},
        "versions": {"python": "3.11"}, "sequence_length": 128,
        "variants": [_row("teacher-pytorch", "teacher", "pytorch", "fp32", 0.9530, 20.0, 400.0),
                     _row("teacher-onnx", "teacher", "onnx", "fp32", 0.9530, 16.0, 320.0),
                     _row("student-pytorch", "student", "pytorch", "fp32", 0.9572, 8.0, 160.0),
                     _row("student-onnx", "student", "onnx", "fp32", 0.9572, 5.0, 100.0),
                     _row("student-onnx-int8", "student", "onnx", "int8", 0.9572, 3.0, 64.0),
                     _row("baseline-tfidf", "baseline", "sklearn", "fp64", 0.9730, 4.0, 8.0)],
        "verification": [{"model": "student-onnx", "reference": "student-pytorch", "max_abs_diff": 1e-5,
                          "mean_abs_diff": 1e-6, "label_agreement": 1.0, "tolerance": 1e-3, "min_agreement": 0.995,
                          "passed": False}],
        "gates": [{"name": "max-accuracy-drop", "limit": 0.01, "value": 0.02, "passed": False, "detail": "drop 0.02"},
                  {"name": "min-speedup", "limit": 3.0, "value": 5.0, "passed": True, "detail": "speed-up 5.00×"}],
        "notes": ["teacher-onnx is slower than teacher-pytorch at batch 32"],
        "decision": _decision(),
    }


def _lm_row(name: str, model: str, fmt: str, precision: str, agreement: float, perplexity: float,
            tokens_per_s: float) -> dict:
    ms = 1000 / tokens_per_s
    return {"name": name, "model": model, "format": fmt, "precision": precision, "device": "cpu",
            "size_mb": 1.0, "parameters": 200_000, "peak_rss_mb": 400.0, "peak_gpu_mb": None,
            "quality": {"perplexity": perplexity, "top1_agreement": agreement},
            "generation": {"decode_tokens_per_s": tokens_per_s, "batch8_tokens_per_s": 4 * tokens_per_s},
            "latency_ms": {"batch_1": {"mean": ms, "p50": ms, "p90": ms, "p99": ms, "iterations": 10}},
            "throughput_per_s": {"batch_1": tokens_per_s}}


def _lm_report() -> dict:
    rows = [_lm_row("teacher-pytorch", "teacher", "pytorch", "fp32", 1.0, 300.0, 76.0),
            _lm_row("teacher-onnx-int4", "teacher", "onnx", "int4", 0.93, 330.0, 150.0),
            _lm_row("student-pruned-pytorch", "baseline", "pytorch", "fp32", 0.55, 900.0, 140.0),
            _lm_row("student-onnx", "student", "onnx", "fp32", 0.91, 340.0, 300.0),
            _lm_row("student-onnx-int4", "student", "onnx", "int4", 0.88, 360.0, 520.0)]
    decision = {
        "budget": {"min_agreement": 0.9}, "budget_source": "gates",
        "budget_text": "top-1 agreement with teacher-pytorch at least 90.0 %",
        "workload": {"key": "decode", "label": "decode at batch 1 (tokens/s)", "field": "generation.decode_tokens_per_s",
                     "higher_is_better": True},
        "quality": {"key": "min_agreement", "label": "top-1 agreement (%)", "field": "quality.top1_agreement",
                    "higher_is_better": True, "scale": 100, "threshold": 0.9, "log": False},
        "chosen": "student-onnx", "closest": None, "frontier": ["teacher-pytorch", "teacher-onnx-int4",
                                                               "student-onnx", "student-onnx-int4"],
        "reason": "student-onnx is the fastest within the budget.", "by_workload": {"decode": "student-onnx"},
        "workloads": [{"key": "decode", "label": "decode at batch 1 (tokens/s)", "higher_is_better": True}],
        "headline": {"variant": "student-onnx", "speedup": 3.95, "speedup_low": None, "speedup_high": None,
                     "against": "teacher-pytorch",
                     "quality": [{"label": "top-1 agreement (%)", "value": 91.0, "teacher": 100.0, "low": None,
                                  "high": None, "unit": " %"}]},
        "warnings": [], "candidates": [],
    }
    return {"schema_version": 1, "task": "causal-lm", "run_name": "lm", "variants": rows, "gates": [],
            "decision": decision}


def _md_lines_before_header(md: str) -> list[str]:
    lines = md.splitlines()
    models = next(i for i, line in enumerate(lines) if line.startswith("- **Models:**"))
    return lines[:models]


def test_markdown_leads_with_the_verdict(report):
    md = render_markdown(report)
    head = _md_lines_before_header(md)
    assert head[0] == "# compresskit report: bbc-news" and head[1] == ""
    assert head[2] == "> - **Ship:** student-onnx-int8, a distilled student quantized to int8 (ONNX)"
    verdict = dict(line.removeprefix("> - **").split(":** ", 1) for line in head[2:] if line.startswith("> - "))
    assert verdict["Why"].startswith("student-onnx-int8 is the fastest")
    assert verdict["Speed-up"] == ("6.54× against teacher-pytorch (95 % CI 6.10× to 7.00×), by p50 latency at "
                                   "batch 1")
    assert verdict["Quality"] == ("accuracy 95.72 % (95 % CI 93.10 % to 98.00 %) against 95.30 % for "
                                  "teacher-pytorch")
    assert verdict["Budget"] == ("accuracy at most 1.0 point below teacher-pytorch (default: no quality gate "
                                 "given)")
    assert verdict["By workload"] == "p50 latency at batch 1: student-onnx-int8; p50 latency at batch 32: baseline-tfidf"
    assert verdict["Gates"] == "1 passed (min-speedup), 1 failed (max-accuracy-drop)"
    assert verdict["Warning"].startswith("baseline-tfidf is more accurate")
    assert md.index("**Ship:**") < md.index("**Models:**") < md.index("## Variants")


def test_verdict_lines_when_nothing_meets_the_budget(report):
    report["decision"] = _decision(chosen=None)
    lines = verdict_lines(report)
    assert lines[0] == ("Ship", "nothing meets the budget — closest: student-onnx, a distilled student (ONNX)")
    assert not any(label in ("Speed-up", "Quality") for label, _ in lines)  # no headline without a chosen variant
    md = render_markdown(report)
    assert _md_lines_before_header(md)[2].startswith("> - **Ship:** nothing meets the budget — closest: student-onnx")
    assert '<div class="verdict none">' in render_html(report)
    assert decision_mark(report["decision"], "student-onnx") == "within budget, closest"


def test_one_workload_and_gate_budget_lines(report):
    report["decision"]["by_workload"] = {"batch_1": "student-onnx-int8", "batch_32": "student-onnx-int8"}
    report["decision"]["budget_source"] = "gates"
    report["gates"] = []
    labels = dict(verdict_lines(report))
    assert "By workload" not in labels and "Gates" not in labels
    assert labels["Budget"] == "accuracy at most 1.0 point below teacher-pytorch"


@pytest.mark.parametrize("decision", ["absent", None])
def test_a_report_without_a_decision_renders_as_before(report, decision):
    if decision == "absent":
        del report["decision"]
    else:
        report["decision"] = None
    assert verdict_lines(report) == []
    md = render_markdown(report)
    assert "**Ship:**" not in md and "| variant | format | precision | accuracy (%) |" in md
    assert md.splitlines()[2].startswith("- **Models:**")
    page = render_html(report)
    assert 'class="verdict' not in page
    assert 'alt="accuracy against p50 latency at batch 1, per variant"' in page  # the old first plot stays
    console = Console(width=200, record=True)
    console.print(render_verdict_console(report))
    assert console.export_text() == ""


def test_variant_table_has_a_decision_column(report):
    md = render_markdown(report)
    assert "| variant | format | precision | decision | accuracy (%) |" in md
    assert "|---|---|---|---|---:|" in md  # the decision column is text: left-aligned
    variants = md.split("## Variants")[1].split("\n## ")[0]
    cells = {line.split(" | ")[0].removeprefix("| "): line.split(" | ")[3]
             for line in variants.splitlines() if line.startswith("| ")}
    assert cells["student-onnx-int8"] == "ships"
    assert cells["baseline-tfidf"] == "frontier, within budget"
    assert cells["student-onnx"] == "within budget"
    assert cells["student-pytorch"] == ""
    assert '<td><span class="ships">ships</span></td>' in render_html(report)
    table = render_console_table(report)
    assert [c.header for c in table.columns][:4] == ["variant", "format", "precision", "decision"]
    assert [c.justify for c in table.columns][3:5] == ["left", "right"]


def test_marks_are_words_not_emoji(report):
    md, page = render_markdown(report), render_html(report)
    for text in (md, page):
        assert not any(e in text for e in EMOJI)
    assert "- FAIL max-accuracy-drop: drop 0.02" in md and "- PASS min-speedup: speed-up 5.00×" in md
    assert "- Warning: teacher-onnx is slower than teacher-pytorch at batch 32" in md
    assert '<span class="fail">FAIL</span> max-accuracy-drop: drop 0.02' in page
    assert '<span class="pass">PASS</span> min-speedup' in page
    assert '<span class="warn">Warning:</span> teacher-onnx is slower' in page
    assert '<td class="num"><span class="fail">FAIL</span></td>' in page  # the export verification's result
    assert ".pass {" in page and ".fail {" in page


def test_html_verdict_comes_first_and_every_table_scrolls(report):
    page = render_html(report)
    assert page.index("</h1>") < page.index('<div class="verdict">') < page.index("<strong>Models:</strong>")
    assert "<strong>Ship:</strong> student-onnx-int8" in page
    assert '<strong class="warn">Warning:</strong>' in page
    for lm in (False, True):
        text = render_html(_lm_report()) if lm else page
        tables = [m.start() for m in re.finditer(r"<table", text)]
        assert tables
        for start in tables:
            assert text[:start].endswith('<div class="table-wrap">\n')
        assert text.count('<div class="table-wrap">') == len(tables) == text.count("</table>\n</div>")
    assert ".table-wrap { max-width: 100%; overflow-x: auto;" in page
    assert '<table class="wide">' in render_html(_lm_report())  # the causal-LM table's many columns: smaller font


def test_console_verdict_is_a_panel_of_the_lines(report):
    report["variants"][4]["name"] = report["decision"]["chosen"] = "[bold]int8"
    console = Console(width=240, record=True)
    console.print(render_verdict_console(report))
    text = console.export_text()
    assert "Verdict" in text and re.search(r"Ship: +\[bold\]int8, a distilled student", text)  # text, not markup
    assert re.search(r"Budget: +accuracy at most 1.0 point", text) and re.search(r"Warning: +baseline-tfidf", text)


def test_frontier_plot_for_classification_and_causal_lm(report):
    img = plots.frontier_plot(report["variants"], report["decision"])
    assert img is not None and img.startswith('<img alt="accuracy against p50 latency at batch 1, per variant: ')
    assert plots.frontier_labels(report["decision"]) == ("p50 latency at batch 1 (ms) — log scale, ← faster",
                                                         "accuracy (%) — higher is better ↑")
    lm = _lm_report()
    img = plots.frontier_plot(lm["variants"], lm["decision"])
    assert img is not None and img.startswith('<img alt="top-1 agreement against decode at batch 1, per variant')
    x_label, y_label = plots.frontier_labels(lm["decision"])
    assert x_label == "decode at batch 1 (tokens/s) — log scale, faster →"
    assert y_label == "top-1 agreement (%) — higher is better ↑" and "quality." not in x_label + y_label
    perplexity = copy.deepcopy(lm["decision"])
    perplexity["quality"] = {"key": "max_perplexity_ratio", "label": "perplexity", "field": "quality.perplexity",
                             "higher_is_better": False, "scale": 1, "threshold": 330.0, "log": True}
    perplexity["chosen"], perplexity["closest"] = None, "student-onnx-int4"
    assert plots.frontier_plot(lm["variants"], perplexity) is not None
    assert plots.frontier_labels(perplexity)[1] == "perplexity — log scale, lower is better ↓"


def test_frontier_plot_needs_its_fields(report):
    rows = [{k: v for k, v in row.items() if k not in ("accuracy", "latency_ms")} for row in report["variants"]]
    assert plots.frontier_plot(rows, report["decision"]) is None
    assert plots.frontier_plot(report["variants"], {**report["decision"], "workload": {}}) is None
    assert plots.frontier_plot(_lm_report()["variants"], report["decision"]) is None  # LM rows: no "accuracy"


def test_html_shows_the_frontier_plot_first_with_human_labels(report):
    page = render_html(report)
    images = re.findall(r'<img alt="([^"]*)"', page)
    assert images[0].startswith("accuracy against p50 latency at batch 1, per variant: the frontier")
    assert "accuracy against p50 latency at batch 1, per variant" not in images  # replaced, not repeated
    lm = _lm_report()
    del lm["decision"]
    images = re.findall(r'<img alt="([^"]*)"', render_html(lm))
    assert images[0] == "top-1 agreement against p50 latency at batch 1, per variant"  # not quality.top1_agreement
    assert quality_label(lm, "quality.top1_agreement") == ("top-1 agreement (%)", 100)
    assert quality_label(lm, "no.such.field") is None
