"""Render a run's report dict (the data contract in ``compresskit.reporting.report.REPORT_SCHEMA``) as Markdown,
HTML and a terminal table. Nothing here reads files: measuring and collecting happen elsewhere.

All three renderers share one table builder, so the terminal, the Markdown summary and the HTML page always show
the same numbers. Each leads with the answer: the verdict block (``verdict_lines``, from the report's ``decision``,
made by ``compresskit.decision``) comes before everything else. The report's task family gives its quality columns,
extra header lines and sections (``compresskit.tasks.Task``); the comparison with a baseline is rendered by
``compare_render``. Marks are words (PASS, FAIL, Warning), never emoji: a browser or terminal without an emoji font
shows those as boxes.
"""

from __future__ import annotations

import html
import re
from collections import Counter
from collections.abc import Callable

from rich.console import Group, RenderableType
from rich.markup import escape as rich_escape
from rich.panel import Panel
from rich.table import Table

from compresskit.onnx.sessions import GPU_PROVIDERS
from compresskit.reporting.compare_render import compare_html_body
from compresskit.reporting.plots import bare_label
from compresskit.reporting.tables import CSS, MARKS, MISSING, WARNING, fmt, html_table, md_table
from compresskit.tasks import Task, get_task
from compresskit.variants import field_value, finite_number, reference_teacher


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

    decision = _decision(report)
    headers = ["variant", "format", "precision", *(["decision"] if decision else []), *(c.header for c in quality),
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
               *([decision_mark(decision, str(v.get("name")))] if decision else []),
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


def _text_columns(report: dict) -> int:
    """How many leading columns of the variant table are text (left-aligned): ``_TEXT_COLUMNS``, and the decision
    column after them when the report has a decision."""
    return _TEXT_COLUMNS + (1 if _decision(report) else 0)


def decision_mark(decision: dict, name: str) -> str:
    """The variant table's decision cell for variant ``name``: ``ships`` for the chosen variant; else ``frontier``
    (no other variant beats it on both quality and speed) and ``within budget`` (it meets the budget), as they
    apply; ``closest`` for the nearest miss when nothing meets the budget; empty otherwise."""
    if name == decision.get("chosen"):
        return "ships"
    meets = {str(c.get("name")) for c in decision.get("candidates") or [] if isinstance(c, dict) and c.get("meets")}
    words = [w for w, yes in (("frontier", name in (decision.get("frontier") or [])), ("within budget", name in meets),
                              ("closest", not decision.get("chosen") and name == decision.get("closest"))) if yes]
    return ", ".join(words)


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
             fmt(c.get("min_agreement"), scale=100), MARKS[bool(c.get("passed"))]]
            for c in report.get("verification") or []]
    return headers, rows


def _gate_lines(report: dict) -> list[tuple[str, str]]:
    """Return (mark, text) per gate, e.g. ("FAIL", "min-speedup: <detail>"); the bare numbers if no detail."""
    return [(MARKS[bool(g.get("passed"))], f"{g.get('name', MISSING)}: " + (
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


def _list_sections(report: dict, bold: Callable[[str], str], escape: Callable[[str], str] = str,
                   mark: Callable[[str], str] = str) -> list[tuple[str, list[str]]]:
    """The report's bulleted sections (the task family's, e.g. how each ONNX graph was built; execution providers;
    gates) that have items, each item's text passed through ``escape``, each model name through ``bold`` and each
    mark (PASS, FAIL, Warning:) through ``mark``, for the Markdown and HTML renderers alike."""
    family = [(title, [f"{bold(n)} {escape(t)}" for n, t in lines])
              for title, lines in report_task(report).report_sections(report)]
    sections = [*family,
                ("Execution providers", [f"{bold(n)} {escape(t)}" for n, t in _placement_lines(report)]),
                ("Gates", [f"{mark(m)} {escape(t)}" for m, t in _gate_lines(report)]),
                *_speed_sections(report, escape, mark)]
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


def _speed_sections(report: dict, escape: Callable[[str], str], mark: Callable[[str], str] = str
                    ) -> list[tuple[str, list[str]]]:
    """The student's speed-ups against teacher-pytorch and the fastest teacher form, and the report's notes
    (ONNX slower than PyTorch somewhere, variants not measured): ``reporting.speedups`` makes the lines."""
    from compresskit.reporting.speedups import speedup_lines

    return [("Speed-ups", [escape(t) for t in speedup_lines(report)]),
            ("Notes", [f"{mark(WARNING)} {escape(str(t))}" for t in report.get("notes") or []])]


# ---------------------------------------------------------------- the verdict: what ships, and why


_MARK_CLASSES = {MARKS[True]: "pass", MARKS[False]: "fail", WARNING: "warn"}


def _decision(report: dict) -> dict | None:
    """The report's ``decision`` (``compresskit.decision``); None for a report made before it existed."""
    decision = report.get("decision")
    return decision if isinstance(decision, dict) else None


_FORMATS = {"pytorch": "PyTorch", "onnx": "ONNX", "sklearn": "scikit-learn"}


def model_kind(row: dict | None) -> str:
    """What a variant row is, in words: ``a distilled student quantized to int8 (ONNX)``, ``the teacher (PyTorch)``,
    ``the classical baseline (scikit-learn)``; empty for a row that is not there."""
    if not isinstance(row, dict):
        return ""
    model, form, precision = str(row.get("model") or ""), row.get("format"), str(row.get("precision") or "")
    if model == "baseline":
        who = "the classical baseline" if form == "sklearn" else "an undistilled baseline"
    else:
        who = {"teacher": "the teacher", "student": "a distilled student"}.get(model, model or "a variant")
    if precision.startswith(("int", "uint")):
        who += f" quantized to {precision}"
    elif precision not in ("", "fp32") and form != "sklearn":
        who += f" in {precision}"
    return who + (f" ({_FORMATS.get(str(form), form)})" if form else "")


def _num(x: float) -> str:
    """A figure of the verdict: one decimal from 100 up (perplexity 301.8), two below (95.72 %)."""
    return f"{x:.1f}" if abs(x) >= 100 else f"{x:.2f}"


def _interval(low: object, high: object, unit: str = "") -> str:
    """`` (95 % CI low to high)`` where both ends are numbers, else nothing (``compresskit.decision`` gives 95 %
    intervals)."""
    lo, hi = finite_number(low), finite_number(high)
    return f" (95 % CI {_num(lo)}{unit} to {_num(hi)}{unit})" if lo is not None and hi is not None else ""


def _headline_lines(decision: dict) -> list[tuple[str, str]]:
    """The Speed-up and Quality lines of the verdict, from the decision's headline (values already scaled)."""
    head = decision.get("headline")
    if not isinstance(head, dict):
        return []
    lines = []
    whose = f"{head['variant']}: " if head.get("variant") and head.get("variant") != decision.get("chosen") else ""
    against = str(head.get("against") or "the teacher")
    speedup = finite_number(head.get("speedup"))
    if speedup is not None:
        workload = (decision.get("workload") or {}).get("label")
        lines.append(("Speed-up", f"{whose}{speedup:.2f}× against {against}"
                      + _interval(head.get("speedup_low"), head.get("speedup_high"), "×")
                      + (f", by {bare_label(str(workload))}" if workload else "")))
    figures = []
    for q in head.get("quality") or []:
        value = finite_number(q.get("value")) if isinstance(q, dict) else None
        if value is None:
            continue
        unit = str(q.get("unit") or "")
        teacher = finite_number(q.get("teacher"))
        figures.append(f"{bare_label(str(q.get('label') or 'quality'))} {_num(value)}{unit}"
                       + _interval(q.get("low"), q.get("high"), unit)
                       + (f" against {_num(teacher)}{unit} for {against}" if teacher is not None else ""))
    if figures:
        lines.append(("Quality", whose + "; ".join(figures)))
    return lines


def verdict_lines(report: dict) -> list[tuple[str, str]]:
    """The (label, text) lines every report leads with, from its ``decision`` and ``gates``: Ship (the chosen
    variant and what it is, or that nothing meets the budget and which variant came closest), Why, Speed-up and
    Quality (with their intervals), Budget, By workload (where another workload would ship another variant), Gates
    and one Warning line per warning. Empty for a report without a decision."""
    decision = _decision(report)
    if decision is None:
        return []
    rows = {str(v.get("name")): v for v in report.get("variants") or [] if isinstance(v, dict)}

    def named(name: object) -> str:
        kind = model_kind(rows.get(str(name)))
        return f"{name}, {kind}" if kind else str(name)

    chosen, closest = decision.get("chosen"), decision.get("closest")
    lines = [("Ship", named(chosen) if chosen else "nothing meets the budget"
              + (f" — closest: {named(closest)}" if closest else ""))]
    if decision.get("reason"):
        lines.append(("Why", str(decision["reason"])))
    lines += _headline_lines(decision)
    if decision.get("budget_text"):
        lines.append(("Budget", str(decision["budget_text"])
                      + (" (default: no quality gate given)" if decision.get("budget_source") == "default" else "")))
    by_workload = decision.get("by_workload") or {}
    if len(set(by_workload.values())) > 1:
        labels = {w.get("key"): w.get("label") for w in decision.get("workloads") or [] if isinstance(w, dict)}
        lines.append(("By workload", "; ".join(f"{bare_label(str(labels.get(k) or k))}: {n or 'nothing'}"
                                               for k, n in by_workload.items())))
    gates = [g for g in report.get("gates") or [] if isinstance(g, dict)]
    if gates:
        passed = [str(g.get("name", MISSING)) for g in gates if g.get("passed")]
        failed = [str(g.get("name", MISSING)) for g in gates if not g.get("passed")]
        lines.append(("Gates", f"{len(passed)} passed" + (f" ({', '.join(passed)})" if passed else "")
                      + f", {len(failed)} failed" + (f" ({', '.join(failed)})" if failed else "")))
    lines += [("Warning", str(w)) for w in decision.get("warnings") or []]
    return lines


def _verdict_markdown(report: dict) -> list[str]:
    """The verdict as a quoted list, so it stands apart from the header list under it."""
    lines = verdict_lines(report)
    return [*(f"> - **{label}:** {text}" for label, text in lines), ""] if lines else []


def _verdict_html(report: dict) -> list[str]:
    """The verdict as a boxed list (red edge when nothing ships), every text escaped."""
    lines = verdict_lines(report)
    if not lines:
        return []
    esc = html.escape
    none = "" if (_decision(report) or {}).get("chosen") else " none"
    warn = ' class="warn"'
    items = [f"<li><strong{warn if label == 'Warning' else ''}>{esc(label)}:</strong> {esc(text)}</li>"
             for label, text in lines]
    return [f'<div class="verdict{none}">\n<ul>', *items, "</ul>\n</div>"]


def render_verdict_console(report: dict) -> RenderableType:
    """The verdict as a ``rich`` Panel, for the terminal before the variant table; an empty Group (prints nothing)
    for a report without a decision."""
    lines = verdict_lines(report)
    if not lines:
        return Group()
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()
    for label, text in lines:
        grid.add_row(rich_escape(f"{label}:"), rich_escape(text), style="yellow" if label == "Warning" else None)
    chosen = (_decision(report) or {}).get("chosen")
    return Panel(grid, title="Verdict", title_align="left", border_style="green" if chosen else "red", expand=False)


# ---------------------------------------------------------------- renderers


def render_markdown(report: dict) -> str:
    """Render the report as GitHub-flavoured Markdown (verdict, header, variant table, verification, providers,
    gates)."""
    out = [f"# compresskit report: {report.get('run_name') or MISSING}", "", *_verdict_markdown(report)]
    out += [f"- **{label}:** {text}" for label, text in _header(report)]
    out += ["", "## Variants", "", *md_table(*_variant_table(report), _text_columns(report))]
    w_headers, w_rows = workload_table(report)
    if w_rows:
        out += ["", "## Workloads", "", *md_table(w_headers, w_rows, 1)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        out += ["", "## Export verification", "", *md_table(v_headers, v_rows, 2)]
    for title, items in _list_sections(report, bold=lambda name: f"**{name}:**"):  # marks as plain words
        out += ["", f"## {title}", "", *(f"- {item}" for item in items)]
    return "\n".join(out) + "\n"


def render_html(report: dict) -> str:
    """Render the report as one self-contained HTML page (inline CSS, no scripts, every value escaped): the verdict
    first, then the header, the tables (each in a sideways-scrolling wrapper), the sections and the plots."""
    esc = html.escape
    title = esc(f"compresskit report: {report.get('run_name') or MISSING}")
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>",
             f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>", *_verdict_html(report), "<ul>"]
    parts += [f"<li><strong>{esc(label)}:</strong> {esc(text)}</li>" for label, text in _header(report)]
    parts += ["</ul>\n<h2>Variants</h2>", html_table(*_variant_table(report), _text_columns(report))]
    w_headers, w_rows = workload_table(report)
    if w_rows:
        parts += ["<h2>Workloads</h2>", html_table(w_headers, w_rows, 1)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        parts += ["<h2>Export verification</h2>", html_table(v_headers, v_rows, 2)]

    def mark(word: str) -> str:
        return f'<span class="{_MARK_CLASSES[word]}">{esc(word)}</span>'

    for title, items in _list_sections(report, bold=lambda name: f"<strong>{esc(name)}:</strong>", escape=esc,
                                       mark=mark):
        parts += [f"<h2>{esc(title)}</h2>\n<ul>", *(f"<li>{item}</li>" for item in items), "</ul>"]
    parts += _report_plots(report)
    if isinstance(report.get("comparison"), dict):
        parts += ["<h2>Against the baseline</h2>", *compare_html_body(report["comparison"])]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def quality_label(report: dict, field: str) -> tuple[str, float] | None:
    """The human header and scale of the report column that shows variant ``field`` (``quality.top1_agreement`` →
    ("top-1 agreement (%)", 100)), from the task's report columns; None where no column shows it."""
    from compresskit.tasks.protocol import column_of

    column = column_of(report_task(report), field)
    return (column.header, column.scale) if column else None


def _report_plots(report: dict) -> list[str]:
    """The report page's plots (``compresskit.reporting.plots``), under one heading; none when no plot has its data.
    With a decision its frontier plot comes first, in place of quality against latency."""
    from compresskit.reporting import plots

    variants = report.get("variants") or []
    decision = _decision(report)
    first = plots.frontier_plot(variants, decision) if decision else None
    if first is None:
        metric = report_task(report).quality_metric
        label, scale = quality_label(report, metric) or (None, 1.0)
        first = plots.accuracy_vs_latency(variants, metric, label, scale)
    images = [img for img in (first, plots.latency_distributions(variants), plots.latency_vs_batch(variants)) if img]
    return ["<h2>Plots</h2>", *(f"<p>{img}</p>" for img in images)] if images else []


def render_console_table(report: dict) -> Table:
    """Return the variant table as a ``rich`` Table for printing to the terminal (print ``render_verdict_console``
    before it); its caption says where each ONNX variant's nodes ran."""
    headers, rows = _variant_table(report)
    text_columns = _text_columns(report)
    caption = "\n".join(f"{name}: {text}" for name, text in _placement_lines(report)) or None
    table = Table(title=f"compresskit: {report.get('run_name') or MISSING}",
                  caption=rich_escape(caption) if caption else None, caption_justify="left")
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < text_columns else "right")
    for row in rows:
        table.add_row(*map(rich_escape, row))  # a name like "[bold]" must print as text, not as markup
    return table


