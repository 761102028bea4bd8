"""Render a report dict (the data contract in ``compresskit.report.REPORT_SCHEMA``) as Markdown, HTML and a terminal
table. Nothing here reads files: measuring and collecting happen elsewhere.

All three renderers share one table builder, so the terminal, the Markdown summary and the HTML page always show
the same numbers. The table and cell helpers are public: the sweep report renders with them too.
"""

from __future__ import annotations

import html
import math
import re
from collections import Counter
from collections.abc import Callable

from rich.markup import escape as rich_escape
from rich.table import Table

from compresskit.lm.onnx_build import INT8_GROUP_WORDS
from compresskit.onnx_runtime import GPU_PROVIDERS
from compresskit.tasks import Column
from compresskit.variants import field_value, reference_teacher

MISSING = "—"


# ---------------------------------------------------------------- shared table and header builders


def fmt(x: object, spec: str = "{:.2f}", scale: float = 1.0) -> str:
    """Format a number for a table cell; None, NaN and missing render as MISSING."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)  # a malformed value is shown as is rather than crashing the whole report
    return spec.format(x * scale if scale != 1.0 else x)  # keep ints as ints: "6 layers", not "6.0"


def _batch(variant: dict, n: int) -> dict:
    return (variant.get("latency_ms") or {}).get(f"batch_{n}") or {}


def _largest_batch(variants: list[dict]) -> int | None:
    """Return the largest batch size other than 1 that any variant measured, or None."""
    sizes = {int(m.group(1)) for v in variants for key in (v.get("latency_ms") or {})
             if (m := re.fullmatch(r"batch_(\d+)", key))}
    return max(sizes - {1}, default=None)


def quality_columns(report: dict) -> list[Column]:
    """The quality columns of the report's task (a report of an unknown task shows the classification ones)."""
    from compresskit.artifacts import UserError
    from compresskit.tasks import get_task
    from compresskit.tasks.classification import TEXT_CLASSIFICATION

    try:
        return get_task(str(report.get("task"))).report_columns()
    except UserError:
        return TEXT_CLASSIFICATION.report_columns()


def _variant_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the variant table, every cell already formatted as text."""
    variants = report.get("variants") or []
    big = _largest_batch(variants)
    tp_batch = big or 1  # with only batch 1 measured, throughput at batch 1 is still worth showing
    teacher = reference_teacher(variants)
    base = _batch(teacher, 1).get("p50") if teacher else None
    show_gpu = any(v.get("peak_gpu_mb") is not None for v in variants)
    quality = quality_columns(report)

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
        *_timing_line(report),
    ]


def _timing_line(report: dict) -> list[tuple[str, str]]:
    """How the latencies were taken, when the bench settings say (text classification): a reader of a p50 should
    know it pools several processes."""
    bench = (report.get("config") or {}).get("bench") or {}
    rounds = bench.get("rounds")
    if not isinstance(rounds, int):
        return []
    how = (f"each variant in {rounds} fresh processes, round by round across the variants; a p50 pools their timed "
           f"runs, and report.json keeps each process's p50 (latency_rounds_ms)" if rounds > 1 else
           "each variant in one fresh process")
    return [("Timing", f"{how}; at least {bench.get('min_iterations', MISSING)} timed runs and "
                       f"{fmt(bench.get('min_seconds'), '{:g}')} s per batch size in all")]


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


def _graph_lines(report: dict) -> list[tuple[str, str]]:
    """Return (model, text) per ONNX graph the run made: how export built it and what a quantized one kept in fp32,
    e.g. ("teacher", "torchscript+eager+cls-only; fused Attention ×5, BiasGelu ×6; SkipLayerNormalization
    un-fused (12 nodes: @1 6.87 ms against 7.64 ms, @32 190.1 ms against 201.3 ms fused)")."""
    lines = []
    for name, e in (report.get("exports") or {}).items():
        if not isinstance(e, dict):
            continue
        if "mode" in e:
            kept = e.get("kept_fp32") or []
            int8 = e.get("kept_int8") or []
            lines.append((name, f"{e.get('mode') or MISSING}, {len(kept)} node(s) kept in fp32 by the accuracy fallback"
                          + (f" ({', '.join(map(str, kept))})" if kept else "")
                          + (f"; at 8 bits: {', '.join(INT8_GROUP_WORDS.get(g, str(g)) for g in int8)}"
                             if int8 else "")))
            continue
        ops = e.get("fused_operators") or {}
        text = f"{e.get('chosen') or MISSING}; fused " + (", ".join(f"{op} ×{n}" for op, n in ops.items()) or "none")
        sln = e.get("skip_layer_norm") or {}
        if sln.get("form") == "unfused":
            # every workload the choice was made on (batch 1 and the largest batch), not batch 1 alone: the rule
            # weighs them together, so batch 1 by itself can favour the form that was not kept
            timing = sln.get("latency_ms") or {k: {"batch_1": v} for k, v in (sln.get("latency_ms_batch1") or {}).items()}
            measured = ""
            if {"fused", "unfused"} <= timing.keys():
                cells = [f"{w.replace('batch_', '@')} {timing['unfused'][w]:.2f} ms against {timing['fused'][w]:.2f} ms"
                         for w in timing["unfused"] if w in timing["fused"]]
                measured = ": " + ", ".join(cells) + " fused"
            text += f"; SkipLayerNormalization un-fused ({sln.get('nodes', MISSING)} nodes{measured})"
        lines.append((name, text))
    return lines


def _list_sections(report: dict, bold: Callable[[str], str], escape: Callable[[str], str] = str
                   ) -> list[tuple[str, list[str]]]:
    """The report's bulleted sections (ONNX graphs, execution providers, gates) that have items, each item's text
    passed through ``escape`` and each model name through ``bold``, for the Markdown and HTML renderers alike."""
    sections = [("ONNX graphs", [f"{bold(n)} {escape(t)}" for n, t in _graph_lines(report)]),
                ("Execution providers", [f"{bold(n)} {escape(t)}" for n, t in _placement_lines(report)]),
                ("Gates", [f"{mark} {escape(t)}" for mark, t in _gate_lines(report)]),
                *_speed_sections(report, escape)]
    return [(title, items) for title, items in sections if items]


def workload_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """(headers, rows) of the workload sweep (``compresskit.workloads``): one row per variant × (batch, sequence)
    cell; rows are empty when no variant has cells."""
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
    (ONNX slower than PyTorch somewhere, variants not measured): ``compresskit.workloads`` makes the lines."""
    from compresskit.workloads import speedup_lines

    return [("Speed-ups", [escape(t) for t in speedup_lines(report)]),
            ("Notes", [f"⚠️ {escape(str(t))}" for t in report.get("notes") or []])]


# ---------------------------------------------------------------- renderers


def md_table(headers: list[str], rows: list[list[str]], text_columns: int) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # a bare | would split the cell
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    return [line(headers), "|" + "|".join(align) + "|", *map(line, rows)]


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


CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
li { margin: 0.2rem 0; }
"""


def html_table(headers: list[str], rows: list[list[str]], text_columns: int) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    cell = ['<td>{}</td>' if i < text_columns else '<td class="num">{}</td>' for i in range(len(headers))]
    body = "".join("<tr>" + "".join(cell[i].format(esc(c)) for i, c in enumerate(row)) + "</tr>\n"
                   for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


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
        parts += ["<h2>Against the baseline</h2>", *_compare_html_body(report["comparison"])]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def _quality_metric(report: dict) -> str:
    """The field the task's accuracy gate reads (``accuracy``; a causal LM's ``quality.top1_agreement``)."""
    from compresskit.artifacts import UserError
    from compresskit.tasks import get_task

    try:
        return get_task(str(report.get("task"))).quality_metric
    except UserError:
        return "accuracy"


def _report_plots(report: dict) -> list[str]:
    """The report page's plots (``compresskit.plots``), under one heading; none when no plot has its data."""
    from compresskit import plots

    variants = report.get("variants") or []
    images = [img for img in (plots.accuracy_vs_latency(variants, _quality_metric(report)),
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


def finite(x: object) -> object:
    """Replace NaN and infinities with None, recursively: they are not valid JSON and mean 'not measured'."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x


# ---------------------------------------------------------------- a run against a baseline (compresskit.compare)


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
    """Render a comparison (``compresskit.compare.compare_reports``) as GitHub-flavoured Markdown."""
    out = [f"# {_compare_title(result)}", "", *(f"- **{label}:** {text}" for label, text in _compare_header(result))]
    out += ["", "## Variants", "", *md_table(*_compare_table(result), 1)]
    m_headers, m_rows = _compare_metric_table(result)
    if m_rows:
        out += ["", "## Other quality figures", "", *md_table(m_headers, m_rows, 2)]
    return "\n".join(out) + "\n"


def _compare_html_body(result: dict) -> list[str]:
    """The comparison's header list, tables and before/after plot, as HTML fragments."""
    from compresskit import plots

    esc = html.escape
    parts = ["<ul>", *(f"<li><strong>{esc(label)}:</strong> {esc(text)}</li>" for label, text in
                       _compare_header(result)), "</ul>", html_table(*_compare_table(result), 1)]
    m_headers, m_rows = _compare_metric_table(result)
    if m_rows:
        parts += ["<h3>Other quality figures</h3>", html_table(m_headers, m_rows, 2)]
    metric = "accuracy" if any("accuracy" in (v.get("metrics") or {}) for v in result.get("variants") or []) \
        else _quality_metric(result)
    if img := plots.before_after(result, metric):
        parts.append(f"<p>{img}</p>")
    return parts


def render_compare_html(result: dict) -> str:
    """Render a comparison as one self-contained HTML page (inline CSS and images, every value escaped)."""
    title = html.escape(_compare_title(result))
    return "\n".join([f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{title}</title>",
                      f"<style>{CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>", *_compare_html_body(result),
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
