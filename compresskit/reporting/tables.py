"""Cells and tables both documents share (the run report, ``render``, and the comparison, ``compare_render``): number
formatting, Markdown and HTML tables, the page style, and NaN-free JSON values. Nothing here reads files."""

from __future__ import annotations

import html
import math

MISSING = "—"


def fmt(x: object, spec: str = "{:.2f}", scale: float = 1.0) -> str:
    """Format a number for a table cell; None, NaN and missing render as MISSING."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return MISSING
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)  # a malformed value is shown as is rather than crashing the whole report
    return spec.format(x * scale if scale != 1.0 else x)  # keep ints as ints: "6 layers", not "6.0"


def md_table(headers: list[str], rows: list[list[str]], text_columns: int) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"  # a bare | would split the cell
    align = ["---" if i < text_columns else "---:" for i in range(len(headers))]
    return [line(headers), "|" + "|".join(align) + "|", *map(line, rows)]


CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
.table-wrap { max-width: 100%; overflow-x: auto; margin: 1rem 0; }
table { border-collapse: collapse; font-size: 0.9rem; }
table.wide { font-size: 0.8rem; }
th, td { border: 1px solid #ccc; padding: 0.3rem 0.6rem; }
th { background: #f0f0f0; }
th:first-child, td:first-child { white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
li { margin: 0.2rem 0; }
.pass { color: #1a7f37; font-weight: 600; }
.fail { color: #c62828; font-weight: 600; }
.warn { color: #9a6700; font-weight: 600; }
.ships { font-weight: 600; }
.verdict { border-left: 4px solid #1a7f37; background: #f3faf5; padding: 0.4rem 1rem; margin: 1rem 0; }
.verdict.none { border-left-color: #c62828; background: #fdf4f4; }
.verdict ul { padding-left: 1rem; }
"""

WIDE_TABLE = 16
"""Tables with more columns than this get a smaller font (the causal-LM variant table has about twenty)."""

MARKS = {True: "PASS", False: "FAIL"}
"""A check's result in words: a browser without emoji fonts draws ✅ and ❌ as empty boxes."""

WARNING = "Warning:"
"""The mark before a warning, in words for the same reason (⚠️)."""

_CELL_CLASSES = {"PASS": "pass", "FAIL": "fail", "ships": "ships"}


def html_table(headers: list[str], rows: list[list[str]], text_columns: int) -> str:
    """The table as HTML inside a ``table-wrap`` div that scrolls sideways, so a wide table never runs off the page;
    a cell that is a mark (PASS, FAIL, ships) gets its CSS class."""
    esc = html.escape

    def cell(i: int, c: str) -> str:
        css = _CELL_CLASSES.get(c)
        text = f'<span class="{css}">{esc(c)}</span>' if css else esc(c)
        return f"<td>{text}</td>" if i < text_columns else f'<td class="num">{text}</td>'

    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(i, c) for i, c in enumerate(row)) + "</tr>\n" for row in rows)
    wide = ' class="wide"' if len(headers) > WIDE_TABLE else ""
    return (f'<div class="table-wrap">\n<table{wide}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n'
            "</table>\n</div>")


def finite(x: object) -> object:
    """Replace NaN and infinities with None, recursively: they are not valid JSON and mean 'not measured'."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
