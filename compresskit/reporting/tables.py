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


def finite(x: object) -> object:
    """Replace NaN and infinities with None, recursively: they are not valid JSON and mean 'not measured'."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    return x
