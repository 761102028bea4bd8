"""Turn a benchmark report dict into report.json, Markdown, HTML and a terminal table.

Measuring happens elsewhere; this module only reads the report dict (the data contract in ``REPORT_SCHEMA``)
and renders it. All three renderers share one table builder, so the terminal, the Markdown summary and the HTML
page always show the same numbers.
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import jsonschema
from rich.markup import escape as rich_escape
from rich.table import Table

from compresskit.artifacts import UserError
from compresskit.onnx_runtime import GPU_PROVIDERS

MISSING = "—"

_NUM_OR_NULL = {"type": ["number", "null"]}
_BATCH_KEY = {"pattern": "^batch_[1-9][0-9]*$"}
_LATENCY = {
    "type": "object",
    "required": ["mean", "p50", "p90", "p99"],
    "properties": {
        "mean": {"type": "number"},
        "p50": {"type": "number"},
        "p90": {"type": "number"},
        "p99": {"type": "number"},
        "iterations": {"type": "integer"},
    },
}
_PLACEMENT = {
    "type": ["object", "null"],  # null for PyTorch variants, which have no execution providers
    "required": ["nodes_per_provider", "cpu_fallback_nodes"],
    "properties": {
        "nodes_per_provider": {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}},
        "cpu_fallback_nodes": {
            "type": "array",
            "items": {"type": "object", "required": ["name", "op_type"],
                      "properties": {"name": {"type": "string"}, "op_type": {"type": "string"}}},
        },
    },
}
_VARIANT = {
    "type": "object",
    "required": ["name", "format", "precision", "accuracy", "macro_f1", "agreement_with_teacher", "size_mb",
                 "parameters", "peak_rss_mb", "latency_ms", "throughput_per_s"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "model": {"enum": ["teacher", "student"]},
        "format": {"enum": ["pytorch", "onnx"]},
        "precision": {"enum": ["fp32", "int8", "int4", "bf16", "fp16"]},
        "device": {"type": "string"},
        "providers": {"type": "array", "items": {"type": "string"}},
        "placement": _PLACEMENT,
        "accuracy": _NUM_OR_NULL,
        "macro_f1": _NUM_OR_NULL,
        "agreement_with_teacher": _NUM_OR_NULL,
        "size_mb": _NUM_OR_NULL,
        "parameters": {"type": ["integer", "null"]},
        "peak_rss_mb": _NUM_OR_NULL,
        "peak_gpu_mb": _NUM_OR_NULL,
        "latency_ms": {"type": "object", "required": ["batch_1"], "propertyNames": _BATCH_KEY,
                       "additionalProperties": _LATENCY},
        "throughput_per_s": {"type": "object", "propertyNames": _BATCH_KEY, "additionalProperties": _NUM_OR_NULL},
    },
}
# Extra keys are allowed everywhere: readers ignore what they do not know, and a breaking change bumps
# schema_version instead.
REPORT_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "compresskit report",
    "type": "object",
    "required": ["schema_version", "task", "teacher", "student", "config", "machine", "versions", "variants",
                 "gates"],
    "properties": {
        "schema_version": {"const": 1},
        "task": {"type": "string"},
        "run_name": {"type": "string"},
        "created": {"type": "string"},
        "teacher": {"type": "object"},
        "student": {"type": "object"},
        "data": {"type": "object"},
        "config": {"type": "object"},
        "machine": {"type": "object"},
        "versions": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
        "sequence_length": {"type": "integer"},
        "variants": {"type": "array", "items": _VARIANT},
        "exports": {"type": "object", "additionalProperties": {"type": "object"}},
        "verification": {
            "type": "array",
            "items": {"type": "object", "required": ["model", "reference", "passed"],
                      "properties": {"passed": {"type": "boolean"}}},
        },
        "gates": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "limit", "value", "passed"],
                "properties": {"name": {"type": "string"}, "limit": {"type": "number"}, "value": _NUM_OR_NULL,
                               "passed": {"type": "boolean"}, "detail": {"type": "string"}},
            },
        },
    },
}


def validate_report(report: dict) -> list[str]:
    """Check ``report`` against ``REPORT_SCHEMA``; return one readable line per problem (empty = valid)."""
    validator = jsonschema.Draft202012Validator(REPORT_SCHEMA)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]


# ---------------------------------------------------------------- shared table and header builders


def _fmt(x: object, spec: str = "{:.2f}", scale: float = 1.0) -> str:
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


def _variant_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the variant table, every cell already formatted as text."""
    variants = report.get("variants") or []
    big = _largest_batch(variants)
    tp_batch = big or 1  # with only batch 1 measured, throughput at batch 1 is still worth showing
    teacher = next((v for v in variants if v.get("name") == "teacher-pytorch"), None)
    base = _batch(teacher, 1).get("p50") if teacher else None
    show_gpu = any(v.get("peak_gpu_mb") is not None for v in variants)

    headers = ["variant", "format", "precision", "accuracy (%)", "macro-F1", "agreement (%)",
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
               _fmt(v.get("accuracy"), scale=100), _fmt(v.get("macro_f1"), "{:.4f}"),
               _fmt(v.get("agreement_with_teacher"), scale=100),
               _fmt(p50), _fmt(b1.get("p90")), _fmt(b1.get("p99"))]
        if big:
            row.append(_fmt(_batch(v, big).get("p50")))
        row += [_fmt((v.get("throughput_per_s") or {}).get(f"batch_{tp_batch}"), "{:.1f}"),
                _fmt(base / p50 if ok else None, "{:.2f}×"), _fmt(v.get("size_mb"), "{:.1f}"),
                _fmt(v.get("parameters"), "{:.2f}", scale=1e-6), _fmt(v.get("peak_rss_mb"), "{:.0f}")]
        if show_gpu:
            row.append(_fmt(v.get("peak_gpu_mb"), "{:.0f}"))
        rows.append(row)
    return headers, rows


_TEXT_COLUMNS = 3  # variant, format, precision: left-aligned; every other column is a number


def _model_line(m: dict) -> str:
    params = _fmt(m.get("parameters"), "{:.2f}M params", scale=1e-6)
    return (f"{m.get('source') or m.get('path') or MISSING} ({params}, {_fmt(m.get('layers'), '{}')} layers, "
            f"hidden {_fmt(m.get('hidden_size'), '{}')})")


def _header(report: dict) -> list[tuple[str, str]]:
    """Return the (label, text) lines shown above the tables."""
    data, mach = report.get("data") or {}, report.get("machine") or {}
    sizes = " / ".join(f"{k} {v}" for k, v in (data.get("sizes") or {}).items()) or MISSING
    sha = (data.get("sha256") or "")[:12]
    return [
        ("Models", f"{_model_line(report.get('teacher') or {})} → {_model_line(report.get('student') or {})}"),
        ("Data", f"{data.get('source', MISSING)}, {len(data.get('labels') or [])} labels, {sizes}"
                 + (f", sha256 {sha}…" if sha else "")),
        ("Machine", f"{mach.get('cpu') or MISSING}, {_fmt(mach.get('physical_cores'), '{}')} physical / "
                    f"{_fmt(mach.get('logical_cores'), '{}')} logical cores, {_fmt(mach.get('threads'), '{}')} "
                    f"threads, {_fmt(mach.get('memory_gb'), '{:.1f}')} GB RAM, GPU {mach.get('gpu') or 'none'}, "
                    f"{mach.get('platform') or MISSING}"),
        ("Versions", ", ".join(f"{k} {v or MISSING}" for k, v in (report.get("versions") or {}).items())),
        ("Run", f"{report.get('task', MISSING)}, sequence length {_fmt(report.get('sequence_length'), '{}')}, "
                f"created {report.get('created', MISSING)}"),
    ]


def _verification_table(report: dict) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) comparing exported models with their reference; rows are empty when absent."""
    headers = ["model", "reference", "max |Δ|", "mean |Δ|", "label agreement (%)", "tolerance",
               "min agreement (%)", "result"]
    rows = [[str(c.get("model", MISSING)), str(c.get("reference", MISSING)),
             _fmt(c.get("max_abs_diff"), "{:.2e}"), _fmt(c.get("mean_abs_diff"), "{:.2e}"),
             _fmt(c.get("label_agreement"), scale=100), _fmt(c.get("tolerance"), "{:g}"),
             _fmt(c.get("min_agreement"), scale=100), "✅ pass" if c.get("passed") else "❌ fail"]
            for c in report.get("verification") or []]
    return headers, rows


def _gate_lines(report: dict) -> list[tuple[str, str]]:
    """Return (mark, text) per gate, e.g. ("❌", "min-speedup: <detail>"); the bare numbers if no detail."""
    return [("✅" if g.get("passed") else "❌", f"{g.get('name', MISSING)}: " + (
             g.get("detail") or f"value {_fmt(g.get('value'), '{:.4g}')}, limit {_fmt(g.get('limit'), '{:g}')}"))
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
    un-fused (12 nodes: 6.87 ms against 7.64 ms fused)")."""
    lines = []
    for name, e in (report.get("exports") or {}).items():
        if not isinstance(e, dict):
            continue
        if "mode" in e:
            kept = e.get("kept_fp32") or []
            lines.append((name, f"{e.get('mode') or MISSING}, {len(kept)} node(s) kept in fp32 by the accuracy fallback"
                          + (f" ({', '.join(map(str, kept))})" if kept else "")))
            continue
        ops = e.get("fused_operators") or {}
        text = f"{e.get('chosen') or MISSING}; fused " + (", ".join(f"{op} ×{n}" for op, n in ops.items()) or "none")
        sln = e.get("skip_layer_norm") or {}
        if sln.get("form") == "unfused":
            timing = sln.get("latency_ms_batch1") or {}
            measured = (f": {timing['unfused']:.2f} ms against {timing['fused']:.2f} ms fused"
                        if {"fused", "unfused"} <= timing.keys() else "")
            text += f"; SkipLayerNormalization un-fused ({sln.get('nodes', MISSING)} nodes{measured})"
        lines.append((name, text))
    return lines


def _list_sections(report: dict, bold: Callable[[str], str], escape: Callable[[str], str] = str
                   ) -> list[tuple[str, list[str]]]:
    """The report's bulleted sections (ONNX graphs, execution providers, gates) that have items, each item's text
    passed through ``escape`` and each model name through ``bold``, for the Markdown and HTML renderers alike."""
    sections = [("ONNX graphs", [f"{bold(n)} {escape(t)}" for n, t in _graph_lines(report)]),
                ("Execution providers", [f"{bold(n)} {escape(t)}" for n, t in _placement_lines(report)]),
                ("Gates", [f"{mark} {escape(t)}" for mark, t in _gate_lines(report)])]
    return [(title, items) for title, items in sections if items]


# ---------------------------------------------------------------- renderers


def _md_table(headers: list[str], rows: list[list[str]], text_columns: int) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # a bare | would split the cell
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    return [line(headers), "|" + "|".join(align) + "|", *map(line, rows)]


def render_markdown(report: dict) -> str:
    """Render the report as GitHub-flavoured Markdown (header, variant table, verification, providers, gates)."""
    out = [f"# compresskit report: {report.get('run_name') or MISSING}", ""]
    out += [f"- **{label}:** {text}" for label, text in _header(report)]
    out += ["", "## Variants", "", *_md_table(*_variant_table(report), _TEXT_COLUMNS)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        out += ["", "## Export verification", "", *_md_table(v_headers, v_rows, 2)]
    for title, items in _list_sections(report, bold=lambda name: f"**{name}:**"):
        out += ["", f"## {title}", "", *(f"- {item}" for item in items)]
    return "\n".join(out) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
li { margin: 0.2rem 0; }
"""


def _html_table(headers: list[str], rows: list[list[str]], text_columns: int) -> str:
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
             f"<style>{_CSS}</style>\n</head>\n<body>\n<h1>{title}</h1>\n<ul>"]
    parts += [f"<li><strong>{esc(label)}:</strong> {esc(text)}</li>" for label, text in _header(report)]
    parts += ["</ul>\n<h2>Variants</h2>", _html_table(*_variant_table(report), _TEXT_COLUMNS)]
    v_headers, v_rows = _verification_table(report)
    if v_rows:
        parts += ["<h2>Export verification</h2>", _html_table(v_headers, v_rows, 2)]
    for title, items in _list_sections(report, bold=lambda name: f"<strong>{esc(name)}:</strong>", escape=esc):
        parts += [f"<h2>{esc(title)}</h2>\n<ul>", *(f"<li>{item}</li>" for item in items), "</ul>"]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


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


# ---------------------------------------------------------------- writing


def _finite(x: object) -> object:
    """Replace NaN and infinities with None, recursively: they are not valid JSON and mean 'not measured'."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` so that readers see either the old file or the whole new one, never half of it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_report(report: dict, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir``; return their paths by kind.

    When ``GITHUB_STEP_SUMMARY`` names a file (as in GitHub Actions), the Markdown is also appended to it, so
    the table shows on the workflow run page.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    texts = {
        "json": ("report.json", json.dumps(_finite(report), indent=2, ensure_ascii=False) + "\n"),
        "markdown": ("report.md", markdown),
        "html": ("report.html", render_html(report)),
    }
    paths = {}
    for kind, (name, text) in texts.items():
        paths[kind] = out_dir / name
        _write_atomic(paths[kind], text)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as f:
            f.write("\n" + markdown)  # start on a fresh line whatever the previous step left
    return paths


def _model_info(folder: Path, record_name: str, source: str | None) -> dict:
    """Source, size and shape of a model folder, from its config and stage record."""
    info: dict = {"path": str(folder), "source": source}
    config_path = folder / "config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text(encoding="utf-8"))
        info |= {"model_type": config.get("model_type"), "layers": config.get("num_hidden_layers"),
                 "hidden_size": config.get("hidden_size"), "heads": config.get("num_attention_heads"),
                 "intermediate_size": config.get("intermediate_size")}
    record_path = folder / record_name
    if record_path.is_file():
        record = json.loads(record_path.read_text(encoding="utf-8"))
        info |= {k: record.get(k) for k in ("parameters", "best_validation_accuracy", "train_seconds",
                                             "precision", "device", "student_origin") if k in record}
    return info


def build_report(run_dir: Path, gates: list[dict] | None = None) -> dict:
    """Assemble the report dict of a run folder from its stage records and ``bench/bench.json``."""
    from compresskit.machine import library_versions
    from compresskit.run import RunLayout

    layout = RunLayout(Path(run_dir))
    bench_path = layout.bench / "bench.json"
    if not bench_path.is_file():
        raise UserError(f"{bench_path} does not exist: run `compresskit bench` on {run_dir} first")
    bench = json.loads(bench_path.read_text(encoding="utf-8"))
    run = json.loads(layout.record.read_text(encoding="utf-8")) if layout.record.is_file() else {}
    config = run.get("config", {})
    data = json.loads((layout.data / "data.json").read_text(encoding="utf-8")) if (layout.data / "data.json").is_file() else {}
    verification, fused, exports = [], {}, {}
    for name, stage in (("teacher", "export.json"), ("student", "export.json"), ("student-quantized", "quantize.json")):
        path = layout.onnx(name) / stage
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        verification.append(record["parity"])
        if stage == "export.json":
            fused[name] = record.get("fused_operators", {})
            exports[name] = {"chosen": record.get("chosen"), "last_layer": record.get("last_layer"),
                             "skip_layer_norm": record.get("skip_layer_norm"), "fused_operators": fused[name]}
        else:
            exports[name] = {"mode": record.get("mode"), "kept_fp32": record.get("kept_fp32") or []}
    teacher_dir = Path(run.get("stages", {}).get("teacher", {}).get("path", layout.teacher))
    return {
        "schema_version": 1,
        "task": "text-classification",
        "run_name": layout.root.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "teacher": _model_info(teacher_dir, "finetune.json", config.get("teacher")),
        "student": _model_info(layout.student, "distill.json", None),
        "data": {"source": data.get("inputs", {}).get("source"), "labels": data.get("labels"),
                 "sizes": data.get("sizes"), "sha256": data.get("sha256")},
        "config": config,
        "machine": bench.get("machine", {}),
        "versions": library_versions(),
        "sequence_length": bench.get("sequence_length"),
        "test_samples": bench.get("test_samples"),
        "fused_operators": fused,
        "exports": exports,
        "variants": bench["variants"],
        "verification": verification,
        "gates": gates or [],
    }
