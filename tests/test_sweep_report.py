from __future__ import annotations

import copy
import json

import pytest

from compresskit.tasks.classification.sweep_report import (
    _split_plottable,
    plot_accuracy_vs_latency,
    render_sweep_html,
    render_sweep_markdown,
    write_sweep_report,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(name: str, kind: str, layers: int, temperature: float | None, alpha: float | None, accuracy: float,
         latency: float | None, size_mb: float | None = 15.7) -> dict:
    return {"name": name, "student_layers": layers, "hidden_size": 384, "temperature": temperature, "alpha": alpha,
            "kind": kind, "accuracy": accuracy, "ci_low": accuracy - 0.02, "ci_high": accuracy + 0.02,
            "agreement_with_teacher": 1.0 if kind == "teacher" else 0.97, "latency_ms_p50": latency,
            "size_mb": size_mb, "parameters": 15_600_000, "train_seconds": 120.0}


@pytest.fixture
def rows() -> list[dict]:
    # Front: L2-T4 (fast), L4-T4 (middle), teacher (slow, best). L2-hard is as fast as L2-T4 but less accurate.
    return [
        _row("L4-T4-a0.5", "kd", 4, 4.0, 0.5, 0.955, 5.0),
        _row("L2-hard", "hard-labels", 2, None, 0.0, 0.93, 2.0),
        _row("teacher", "teacher", 6, None, None, 0.96, 10.0, size_mb=87.0),
        _row("L2-T4-a0.5", "kd", 2, 4.0, 0.5, 0.95, 2.0),
        _row("L2-T2-a0.9", "kd", 2, 2.0, 0.9, 0.94, None, size_mb=None),
    ]


@pytest.fixture
def comparisons() -> list[dict]:
    return [
        {"label": "KD (T=4, α=0.5) vs hard labels, 2 layers", "diff": 0.004, "low": -0.01, "high": 0.02,
         "p_a_not_better": 0.31},
        {"label": "KD (T=4, α=0.5) vs hard labels, 4 layers", "diff": 0.031, "low": 0.012, "high": 0.05,
         "p_a_not_better": 0.001},
        {"label": "KD (T=2, α=0.9) vs hard labels, 2 layers", "diff": -0.025, "low": -0.04, "high": -0.01,
         "p_a_not_better": 0.998},
    ]


def _md_row(markdown: str, name: str) -> list[str]:
    line = next(l for l in markdown.splitlines() if l.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def _md_headers(markdown: str) -> list[str]:
    line = next(l for l in markdown.splitlines() if l.startswith("| name |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_plot_writes_a_png(rows, tmp_path):
    path = plot_accuracy_vs_latency(rows, tmp_path / "plot.png", "sweep")
    assert path == tmp_path / "plot.png"
    data = path.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 5000
    assert [p.name for p in tmp_path.iterdir()] == ["plot.png"]  # no temp file left behind


def test_plot_skips_rows_without_latency(rows, tmp_path):
    plotted, skipped = _split_plottable(rows)
    assert [r["name"] for r in skipped] == ["L2-T2-a0.9"]
    assert len(plotted) == 4
    # Nothing plottable still gives a valid image rather than an exception.
    none = [dict(r, latency_ms_p50=None) for r in rows]
    assert plot_accuracy_vs_latency(none, tmp_path / "empty.png", "sweep").read_bytes().startswith(PNG_MAGIC)


def test_plot_uses_log_scale_for_a_wide_latency_range(rows, tmp_path):
    wide = copy.deepcopy(rows)
    wide[2]["latency_ms_p50"] = 500.0  # teacher 250× slower than the fastest student
    assert plot_accuracy_vs_latency(wide, tmp_path / "wide.png", "wide").read_bytes().startswith(PNG_MAGIC)


def test_markdown_table(rows):
    md = render_sweep_markdown(rows)
    headers = _md_headers(md)
    col = {h: i for i, h in enumerate(headers)}
    l2 = _md_row(md, "L2-T4-a0.5")
    assert l2[col["accuracy (%) [CI]"]] == "95.00 [93.00, 97.00]"
    assert l2[col["speed-up"]] == "5.00×"  # teacher 10 ms / 2 ms
    assert _md_row(md, "L4-T4-a0.5")[col["speed-up"]] == "2.00×"
    assert _md_row(md, "teacher")[col["speed-up"]] == "1.00×"
    assert l2[col["agreement (%)"]] == "97.00"
    assert l2[col["T"]] == "4" and l2[col["α"]] == "0.5"
    pareto = {name: _md_row(md, name)[col["Pareto"]] for name in
              ("teacher", "L2-T4-a0.5", "L4-T4-a0.5", "L2-hard", "L2-T2-a0.9")}
    assert pareto == {"teacher": "✓", "L2-T4-a0.5": "✓", "L4-T4-a0.5": "✓", "L2-hard": "", "L2-T2-a0.9": ""}
    no_latency = _md_row(md, "L2-T2-a0.9")
    assert no_latency[col["p50 (ms)"]] == "—" and no_latency[col["speed-up"]] == "—"
    assert "Not on the plot (no latency or accuracy): L2-T2-a0.9" in md


def test_markdown_sorts_by_kind_then_layers_t_alpha(rows):
    md = render_sweep_markdown(rows)
    order = [l.split("|")[1].strip() for l in md.splitlines()
             if l.startswith("| ") and not l.startswith("| name")]
    assert order == ["teacher", "L2-T2-a0.9", "L2-T4-a0.5", "L4-T4-a0.5", "L2-hard"]


def test_markdown_comparison_verdicts(rows, comparisons):
    md = render_sweep_markdown(rows, comparisons)
    lines = [l for l in md.splitlines() if l.startswith("- ")]
    assert len(lines) == 3
    assert "+0.40 points [-1.00, +2.00]" in lines[0] and lines[0].endswith("no significant difference")
    assert lines[1].endswith("KD better by 3.10 points")
    assert lines[2].endswith("hard labels better by 2.50 points")
    assert "## Paired comparisons" not in render_sweep_markdown(rows)


def test_html_embeds_the_png_and_escapes_names(rows, comparisons, tmp_path):
    rows[0]["name"] = "<b>bold</b>"
    comparisons[0]["label"] = "a <script> label"
    png = plot_accuracy_vs_latency(rows, tmp_path / "plot.png", "t")
    page = render_sweep_html(rows, comparisons, png, "sweep <i>1</i>")
    assert "data:image/png;base64,iVBORw0KGgo" in page  # base64 of the PNG magic bytes
    assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page
    assert "<script>" not in page and "<i>1</i>" not in page
    assert "95.00 [93.00, 97.00]" in page and "no significant difference" in page
    assert "data:image" not in render_sweep_html(rows, comparisons, None, "t")


def test_write_sweep_report(rows, comparisons, tmp_path):
    out = tmp_path / "report"
    paths = write_sweep_report(rows, comparisons, out, "my sweep")
    assert set(paths) == {"json", "png", "markdown", "html"}
    assert sorted(p.name for p in out.iterdir()) == ["sweep.html", "sweep.json", "sweep.md", "sweep.png"]
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["rows"] == rows and data["comparisons"] == comparisons and data["title"] == "my sweep"
    assert paths["png"].read_bytes().startswith(PNG_MAGIC)
    assert paths["markdown"].read_text(encoding="utf-8").startswith("# my sweep\n")
    assert "![accuracy against latency](sweep.png)" in paths["markdown"].read_text(encoding="utf-8")
    assert "data:image/png;base64," in paths["html"].read_text(encoding="utf-8")


def test_write_sweep_report_turns_nan_into_null(rows, tmp_path):
    rows[0]["size_mb"] = float("nan")
    paths = write_sweep_report(rows, None, tmp_path, "t")
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert data["rows"][0]["size_mb"] is None and data["comparisons"] == []
