"""Render a comparison of two runs (``compresskit.reporting.compare.compare_reports``) as Markdown, HTML and a
terminal table. Nothing here reads files."""

from __future__ import annotations

import html

from rich.markup import escape as rich_escape
from rich.table import Table

from compresskit.reporting.tables import CSS, MISSING, fmt, html_table, md_table
from compresskit.tasks import get_task


def _change_cell(m: dict | None) -> str:
    """An accuracy change in points with its interval: ``-1.20 [-2.50, +0.10]``."""
    if not m or not isinstance(m.get("change"), (int, float)):
        return MISSING
    text = f"{100 * m['change']:+.2f}"
    if isinstance(m.get("low"), (int, float)) and isinstance(m.get("high"), (int, float)):
        text += f" [{100 * m['low']:+.2f}, {100 * m['high']:+.2f}]"
    if isinstance(m.get("changed_to_wrong"), int) and isinstance(m.get("changed_to_right"), int):
        text += f", {m['changed_to_wrong']}→wrong {m['changed_to_right']}→right"
        if isinstance(m.get("p_value"), (int, float)):
            text += f" (p {m['p_value']:.2g})"
    return text


def _ratio_cell(lat: dict | None) -> str:
    """A p50 ratio with its interval: ``1.04× [0.98, 1.11]``."""
    if not lat or not isinstance(lat.get("ratio"), (int, float)):
        return MISSING
    text = f"{lat['ratio']:.3f}×"
    if isinstance(lat.get("low"), (int, float)) and isinstance(lat.get("high"), (int, float)):
        text += f" [{lat['low']:.3f}, {lat['high']:.3f}]"
    return text


def _verdict(v: dict) -> str:
    """What the intervals say, in words: a change counts only when its whole interval is on one side."""
    words, judged = [], False
    acc = (v.get("metrics") or {}).get("accuracy") or {}
    if isinstance(acc.get("low"), (int, float)):
        judged = True
        if acc["high"] < 0:
            words.append("less accurate")
        elif acc["low"] > 0:
            words.append("more accurate")
    for key, lat in (v.get("latency") or {}).items():
        if isinstance(lat.get("low"), (int, float)):
            judged = True
            size = key.removeprefix("batch_")
            if lat["low"] > 1:
                words.append(f"slower @{size}")
            elif lat["high"] < 1:
                words.append(f"faster @{size}")
    return ", ".join(words) if words else ("no clear change" if judged else "no interval")


def _compare_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the comparison table: one row per variant in both runs."""
    variants = result.get("variants") or []
    batches = sorted({k for v in variants for k in (v.get("latency") or {})},
                     key=lambda k: int(k.split("_")[1]) if k.split("_")[-1].isdigit() else 1 << 30)
    level = f"{100 * (result.get('confidence') or 0.95):g} % CI"
    headers = ["variant", f"accuracy change (points) [{level}]",
               *(f"p50 @{k.removeprefix('batch_')} ratio [{level}]" for k in batches),
               "peak RSS change (MB)", "size change (MB)", "verdict"]
    rows = []
    for v in variants:
        res = v.get("resources") or {}
        rows.append([str(v.get("name", MISSING)), _change_cell((v.get("metrics") or {}).get("accuracy")),
                     *(_ratio_cell((v.get("latency") or {}).get(k)) for k in batches),
                     fmt((res.get("peak_rss_mb") or {}).get("change"), "{:+.0f}"),
                     fmt((res.get("size_mb") or {}).get("change"), "{:+.2f}"), _verdict(v)])
    return headers, rows


def _compare_metric_table(result: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the quality figures without an interval (all of a causal LM's; macro-F1...)."""
    rows = []
    for v in result.get("variants") or []:
        for name, m in (v.get("metrics") or {}).items():
            if "low" in m:  # shown with its interval in the main table
                continue
            rows.append([str(v.get("name", MISSING)), name, fmt(m.get("baseline"), "{:.4f}"),
                         fmt(m.get("current"), "{:.4f}"), fmt(m.get("change"), "{:+.4f}")])
    return ["variant", "metric", "baseline", "current", "change"], rows


def _latency_method(result: dict) -> str:
    """How the latency intervals of a comparison were made, in words."""
    methods = {lat.get("method") for v in result.get("variants") or [] for lat in (v.get("latency") or {}).values()}
    rounds = ("from the spread of each run's per-round p50s (every variant timed in several fresh processes: "
              "the drift between processes is in it)")
    runs = ("from each run's timed runs of a single process (the noise within a process only: the drift between "
            "processes and runs is not in it; bench --rounds 2 or more measures it)")
    if methods <= {"rounds", None} and "rounds" in methods:
        return rounds
    if methods <= {"runs", None} and "runs" in methods:
        return runs
    return f"{rounds} where both runs have rounds, else {runs}" if methods - {None} else "without intervals"


def _compare_header(result: dict) -> list[tuple[str, str]]:
    """The (label, text) lines above the comparison tables."""
    def run(r: dict) -> str:
        return f"{r.get('run_name') or MISSING} ({r.get('source') or MISSING}, created {r.get('created') or MISSING})"

    test = result.get("test_set") or {}
    sha = (test.get("sha256") or "")[:12]
    lines = [("Baseline", run(result.get("baseline") or {})), ("Current", run(result.get("current") or {})),
             ("Test set", f"{fmt(test.get('count'), '{}')} examples" + (f", sha256 {sha}…" if sha else "")),
             ("Intervals", f"{100 * (result.get('confidence') or 0.95):g} %: accuracy by a paired bootstrap over "
                           f"test examples ({result.get('n_boot')} resamples); latency {_latency_method(result)}; a "
                           "change counts when its whole interval is on one side")]
    deployed = result.get("deployed")
    if deployed:
        lines.append(("Deployed student", f"{deployed.get('name')} vs baseline {deployed.get('baseline_name')}"))
    for change in result.get("graph_changes") or []:
        def graph(g: dict) -> str:
            return g.get("candidate", MISSING) + (f" (SkipLayerNorm {g['form']})" if g.get("form") else "")

        lines.append((f"Other {change.get('model')} graph",
                      f"{graph(change.get('baseline') or {})} → {graph(change.get('current') or {})}: export chose "
                      f"another graph by timing, so the latency of {', '.join(map(str, change.get('variants') or []))} "
                      f"compares two graphs, not only the code; to compare the code alone, pin the baseline's "
                      f"({change.get('pin')})"))
    for label, key in (("Only in the baseline", "only_in_baseline"), ("Only in the current run", "only_in_current")):
        if result.get(key):
            lines.append((label, ", ".join(map(str, result[key]))))
    return lines


def _compare_title(result: dict) -> str:
    return (f"compresskit comparison: {(result.get('baseline') or {}).get('run_name') or MISSING} → "
            f"{(result.get('current') or {}).get('run_name') or MISSING}")


def render_compare_markdown(result: dict) -> str:
    """Render a comparison (``compresskit.reporting.compare.compare_reports``) as GitHub-flavoured Markdown."""
    out = [f"# {_compare_title(result)}", "", *(f"- **{label}:** {text}" for label, text in _compare_header(result))]
    out += ["", "## Variants", "", *md_table(*_compare_table(result), 1)]
    m_headers, m_rows = _compare_metric_table(result)
    if m_rows:
        out += ["", "## Other quality figures", "", *md_table(m_headers, m_rows, 2)]
    return "\n".join(out) + "\n"


def compare_html_body(result: dict) -> list[str]:
    """The comparison's header list, tables and before/after plot, as HTML fragments."""
    from compresskit.reporting import plots

    esc = html.escape
    parts = ["<ul>", *(f"<li><strong>{esc(label)}:</strong> {esc(text)}</li>" for label, text in
                       _compare_header(result)), "</ul>", html_table(*_compare_table(result), 1)]
    m_headers, m_rows = _compare_metric_table(result)
    if m_rows:
        parts += ["<h3>Other quality figures</h3>", html_table(m_headers, m_rows, 2)]
    task = get_task(str(result.get("task")))
    metric = task.quality_metric
    # the axis shows the column's header ("top-1 agreement (%)"), never the dotted report field
    column = next((c for c in task.report_columns() if c.field == metric), None)
    label, scale = (column.header, column.scale) if column else (None, 1.0)
    if img := plots.before_after(result, metric, label, scale):
        parts.append(f"<p>{img}</p>")
    return parts


def render_compare_html(result: dict) -> str:
    """Render a comparison as one self-contained HTML page (inline CSS and images, every value escaped)."""
    title = html.escape(_compare_title(result))
    return "\n".join([f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>",
                      f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>", *compare_html_body(result),
                      "</body>\n</html>\n"])


def render_compare_console(result: dict) -> Table:
    """The comparison table as a ``rich`` Table for the terminal."""
    headers, rows = _compare_table(result)
    table = Table(title=_compare_title(result))
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i in (0, len(headers) - 1) else "right")
    for row in rows:
        table.add_row(*map(rich_escape, row))
    return table
