"""Render a run's report dict (the data contract in ``compresskit.reporting.report.REPORT_SCHEMA``) as Markdown,
HTML and a terminal table. Nothing here reads files: measuring and collecting happen elsewhere.

All three renderers share one table builder, so the terminal, the Markdown summary and the HTML page always show
the same numbers. The report's task family gives its quality columns, extra header lines and sections
(``compresskit.tasks.Task``); the comparison with a baseline is rendered by ``compare_render``.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable

from rich.markup import escape as rich_escape
from rich.table import Table

from compresskit.onnx.sessions import GPU_PROVIDERS
from compresskit.reporting.compare_render import compare_html_body
from compresskit.reporting.tables import CSS, MISSING, fmt, html_table, md_table
from compresskit.tasks import Task, get_task
from compresskit.variants import field_value, reference_teacher


def report_task(report: dict) -> Task:
    """The task family of a report (its ``task``); a one-line UserError for a family this compresskit lacks."""
    return get_task(str(report.get("task")))


# ---------------------------------------------------------------- table and header builders


def _batch(variant: dict, n: int) -> dict:
    return (variant.get("latency_ms") or {}).get(f"batch_{n}") or {}


def _largest_batch(variants: list[dict]) -> int | None:
    """Return the largest batch size other than 1 that any variant measured, or None."""
    sizes = {int(m.group(1)) for v in variants for key in (v.get("latency_ms") or {})
             if (m := re.fullmatch(r"batch_(\d+)", key))}
    return max(sizes - {1}, default=None)


def _variant_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the variant table, every cell already formatted as text."""
    variants = report.get("variants") or []
    big = _largest_batch(variants)
    tp_batch = big or 1  # with only batch 1 measured, throughput at batch 1 is still worth showing
    teacher = reference_teacher(variants)
    base = _batch(teacher, 1).get("p50") if teacher else None
    show_gpu = any(v.get("peak_gpu_mb") is not None for v in variants)
    quality = report_task(report).report_columns()

    headers = ["variant", "format", "precision", *(c.header for c in quality),
               "p50 @1 (ms)", "p90 @1 (ms)", "p99 @1 (ms)"]
    if big:
        headers.append(f"p50 @{big} (ms)")
    headers += [f"throughput @{tp_batch} (/s)", "speed-up @1", "size (MB)", "params (M)", "peak RSS (MB)"]
    if show_gpu:
        headers.append("peak GPU (MB)")

    rows = []
    for v in variants:
        b1 = _batch(v, 1)
        p50 = b1.get("p50")
        ok = isinstance(base, (int, float)) and isinstance(p50, (int, float)) and p50 > 0
        row = [str(v.get("name", MISSING)), str(v.get("format", MISSING)), str(v.get("precision", MISSING)),
               *(fmt(field_value(v, c.field), c.spec, c.scale) for c in quality),
               fmt(p50), fmt(b1.get("p90")), fmt(b1.get("p99"))]
        if big:
            row.append(fmt(_batch(v, big).get("p50")))
        row += [fmt((v.get("throughput_per_s") or {}).get(f"batch_{tp_batch}"), "{:.1f}"),
                fmt(base / p50 if ok else None, "{:.2f}×"), fmt(v.get("size_mb"), "{:.1f}"),
                fmt(v.get("parameters"), "{:.2f}", scale=1e-6), fmt(v.get("peak_rss_mb"), "{:.0f}")]
        if show_gpu:
            row.append(fmt(v.get("peak_gpu_mb"), "{:.0f}"))
        rows.append(row)
    return headers, rows


_TEXT_COLUMNS = 3  # variant, format, precision: left-aligned; every other column is a number


def _model_line(m: dict) -> str:
    params = fmt(m.get("parameters"), "{:.2f}M params", scale=1e-6)
    return (f"{m.get('source') or m.get('path') or MISSING} ({params}, {fmt(m.get('layers'), '{}')} layers, "
            f"hidden {fmt(m.get('hidden_size'), '{}')})")


def _header(report: dict) -> list[tuple[str, str]]:
    """Return the (label, text) lines shown above the tables."""
    data, mach = report.get("data") or {}, report.get("machine") or {}
    sizes = " / ".join(f"{k} {v}" for k, v in (data.get("sizes") or {}).items()) or MISSING
    sha = (data.get("sha256") or "")[:12]
    return [
        ("Models", f"{_model_line(report.get('teacher') or {})} → {_model_line(report.get('student') or {})}"),
        ("Data", f"{data.get('source', MISSING)}, "
                 + (f"{len(data['labels'])} labels, " if data.get("labels") else "") + sizes
                 + (f", sha256 {sha}…" if sha else "")),
        ("Machine", f"{mach.get('cpu') or MISSING}, {fmt(mach.get('physical_cores'), '{}')} physical / "
                    f"{fmt(mach.get('logical_cores'), '{}')} logical cores, {fmt(mach.get('threads'), '{}')} "
                    f"threads, {fmt(mach.get('memory_gb'), '{:.1f}')} GB RAM, GPU {mach.get('gpu') or 'none'}, "
                    f"{mach.get('platform') or MISSING}"),
        ("Versions", ", ".join(f"{k} {v or MISSING}" for k, v in (report.get("versions") or {}).items())),
        ("Run", f"{report.get('task', MISSING)}, sequence length {fmt(report.get('sequence_length'), '{}')}, "
                f"created {report.get('created', MISSING)}"),
        *report_task(report).report_lines(report),
    ]


def _verification_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) comparing exported models with their reference; rows are empty when absent."""
    headers = ["model", "reference", "max |Δ|", "mean |Δ|", "label agreement (%)", "tolerance",
               "min agreement (%)", "result"]
    rows = [[str(c.get("model", MISSING)), str(c.get("reference", MISSING)),
             fmt(c.get("max_abs_diff"), "{:.2e}"), fmt(c.get("mean_abs_diff"), "{:.2e}"),
             fmt(c.get("label_agreement"), scale=100), fmt(c.get("tolerance"), "{:g}"),
             fmt(c.get("min_agreement"), scale=100), "✅ pass" if c.get("passed") else "❌ fail"]
            for c in report.get("verification") or []]
    return headers, rows


def _gate_lines(report: dict) -> list[tuple[str, str]]:
    """Return (mark, text) per gate, e.g. ("❌", "min-speedup: <detail>"); the bare numbers if no detail."""
    return [("✅" if g.get("passed") else "❌", f"{g.get('name', MISSING)}: " + (
             g.get("detail") or f"value {fmt(g.get('value'), '{:.4g}')}, limit {fmt(g.get('limit'), '{:g}')}"))
            for g in report.get("gates") or []]


def _placement_lines(report: dict) -> list[tuple[str, str]]:
    """Return (variant, text) per variant whose benchmark recorded node placement, e.g.
    ("student-onnx", "CUDAExecutionProvider, CPUExecutionProvider: 180 nodes on CUDAExecutionProvider, 6 on
    CPUExecutionProvider; nodes on CPU under GPU provider: 6 (Shape ×4, Gather ×2)")."""
    lines = []
    for v in report.get("variants") or []:
        placement = v.get("placement")
        if not isinstance(placement, dict):
            continue
        providers = v.get("providers") or []
        counts = placement.get("nodes_per_provider") or {}
        text = f"{', '.join(providers) or MISSING}: " + (", ".join(
            f"{n} nodes on {p}" if i == 0 else f"{n} on {p}" for i, (p, n) in enumerate(counts.items())) or MISSING)
        if providers and providers[0] in GPU_PROVIDERS:
            ops = Counter(str(n.get("op_type", MISSING)) for n in placement.get("cpu_fallback_nodes") or [])
            detail = ", ".join(f"{op} ×{n}" for op, n in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))
            text += f"; nodes on CPU under GPU provider: {ops.total()}" + (f" ({detail})" if detail else "")
        else:
            text += "; nodes on CPU under GPU provider: n/a (no GPU provider asked for)"
        lines.append((str(v.get("name", MISSING)), text))
    return lines


def _list_sections(report: dict, bold: Callable[[str], str], escape: Callable[[str], str] = str
                   ) -> list[tuple[str, list[str]]]:
    """The report's bulleted sections (the task family's, e.g. how each ONNX graph was built; execution providers;
    gates) that have items, each item's text passed through ``escape`` and each model name through ``bold``, for the
    Markdown and HTML renderers alike."""
    family = [(title, [f"{bold(n)} {escape(t)}" for n, t in lines])
              for title, lines in report_task(report).report_sections(report)]
    sections = [*family,
                ("Execution providers", [f"{bold(n)} {escape(t)}" for n, t in _placement_lines(report)]),
                ("Gates", [f"{mark} {escape(t)}" for mark, t in _gate_lines(report)]),
                *_speed_sections(report, escape)]
    return [(title, items) for title, items in sections if items]


def workload_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the workload sweep (``compresskit.tasks.classification.workloads``): one row per variant ×
    (batch, sequence) cell; rows are empty when no variant has cells."""
    headers = ["variant", "batch", "sequence", "p50 (ms)", "p90 (ms)", "mean (ms)", "throughput (/s)",
               "peak RSS (MB)"]
    gpu = any(c.get("peak_gpu_mb") is not None for v in report.get("variants") or [] for c in v.get("workloads") or [])
    if gpu:
        headers.append("peak GPU (MB)")
    rows = []
    for v in report.get("variants") or []:
        for c in v.get("workloads") or []:
            lat = c.get("latency_ms") or {}
            row = [str(v.get("name")), fmt(c.get("batch"), "{}"), fmt(c.get("sequence_length"), "{}"),
                   fmt(lat.get("p50")), fmt(lat.get("p90")), fmt(lat.get("mean")),
                   fmt(c.get("throughput_per_s"), "{:.1f}"), fmt(c.get("peak_rss_mb"), "{:.0f}")]
            if gpu:
                row.append(fmt(c.get("peak_gpu_mb"), "{:.0f}"))
            rows.append(row)
    return headers, rows


def _speed_sections(report: dict, escape: Callable[[str], str]) -> list[tuple[str, list[str]]]:
    """The student's speed-ups against teacher-pytorch and the fastest teacher form, and the report's notes
    (ONNX slower than PyTorch somewhere, variants not measured): ``reporting.speedups`` makes the lines."""
    from compresskit.reporting.speedups import speedup_lines

    return [("Speed-ups", [escape(t) for t in speedup_lines(report)]),
            ("Notes", [f"⚠️ {escape(str(t))}" for t in report.get("notes") or []])]


# ---------------------------------------------------------------- renderers


def render_markdown(report: dict) -> str:
    """Render the report as GitHub-flavoured Markdown (header, variant table, verification, providers, gates)."""
    out = [f"# compresskit report: {report.get('run_name') or MISSING}", ""]
    out += [f"- **{label}:** {text}" for label, text in _header(report)]
    out += ["", "## Variants", "", *md_table(*_variant_table(report), _TEXT_COLUMNS)]
    w_headers, w_rows = workload_table(report)
    if w_rows:
        out += ["", "## Workloads", "", *md_table(w_headers, w_rows, 1)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        out += ["", "## Export verification", "", *md_table(v_headers, v_rows, 2)]
    for title, items in _list_sections(report, bold=lambda name: f"**{name}:**"):
        out += ["", f"## {title}", "", *(f"- {item}" for item in items)]
    return "\n".join(out) + "\n"


def render_html(report: dict) -> str:
    """Render the report as one self-contained HTML page (inline CSS, no scripts, every value escaped)."""
    esc = html.escape
    title = esc(f"compresskit report: {report.get('run_name') or MISSING}")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>",
             f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<ul>"]
    parts += [f"<li><strong>{esc(label)}:</strong> {esc(text)}</li>" for label, text in _header(report)]
    parts += ["</ul>\n<h2>Variants</h2>", html_table(*_variant_table(report), _TEXT_COLUMNS)]
    w_headers, w_rows = workload_table(report)
    if w_rows:
        parts += ["<h2>Workloads</h2>", html_table(w_headers, w_rows, 1)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        parts += ["<h2>Export verification</h2>", html_table(v_headers, v_rows, 2)]
    for title, items in _list_sections(report, bold=lambda name: f"<strong>{esc(name)}:</strong>", escape=esc):
        parts += [f"<h2>{esc(title)}</h2>\n<ul>", *(f"<li>{item}</li>" for item in items), "</ul>"]
    parts += _report_plots(report)
    if isinstance(report.get("comparison"), dict):
        parts += ["<h2>Against the baseline</h2>", *compare_html_body(report["comparison"])]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def _report_plots(report: dict) -> list[str]:
    """The report page's plots (``compresskit.reporting.plots``), under one heading; none when no plot has its data."""
    from compresskit.reporting import plots

    variants = report.get("variants") or []
    images = [img for img in (plots.accuracy_vs_latency(variants, report_task(report).quality_metric),
                              plots.latency_distributions(variants), plots.latency_vs_batch(variants)) if img]
    return ["<h2>Plots</h2>", *(f"<p>{img}</p>" for img in images)] if images else []


def render_console_table(report: dict) -> Table:
    """Return the variant table as a ``rich`` Table for printing to the terminal; its caption says where each
    ONNX variant's nodes ran."""
    headers, rows = _variant_table(report)
    caption = "\n".join(f"{name}: {text}" for name, text in _placement_lines(report)) or None
    table = Table(title=f"compresskit: {report.get('run_name') or MISSING}",
                  caption=rich_escape(caption) if caption else None, caption_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < _TEXT_COLUMNS else "right")
    for row in rows:
        table.add_row(*map(rich_escape, row))  # a name like "[bold]" must print as text, not as markup
    return table


