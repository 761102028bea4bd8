"""Render a distillation sweep: one table row per student, a plot of accuracy against latency, and the
paired comparisons that say whether distillation beat training on hard labels.

A sweep result is a list of row dicts, one per trained model (the teacher is the row with kind "teacher"):
``name, kind ("kd" | "hard-labels" | "teacher"), student_layers, hidden_size, temperature, alpha, accuracy,
ci_low, ci_high, agreement_with_teacher, latency_ms_p50, size_mb, parameters, train_seconds``; fractions are
in [0, 1], and latency and size may be None when not measured. Measuring happens elsewhere; this module only
renders, and the table, Markdown and HTML share one table builder so they always show the same numbers.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from compresskit.artifacts import atomic_file, write_atomic
from compresskit.reporting.tables import CSS, MISSING, finite, fmt, html_table, md_table
from compresskit.stats import pareto_front

_KIND_ORDER = {"teacher": 0, "kd": 1, "hard-labels": 2}
# kind -> (marker, colour, legend label)
_KIND_STYLE = {"teacher": ("*", "tab:red", "teacher"), "kd": ("o", "tab:blue", "distilled (KD)"),
               "hard-labels": ("s", "tab:orange", "hard labels (α=0)")}
_OTHER_STYLE = ("D", "tab:gray", "other")


def _is_num(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x == x  # x == x is False for NaN


def _split_plottable(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Split rows into those with both a latency and an accuracy (plottable) and the rest."""
    keep, rest = [], []
    for r in rows:
        (keep if _is_num(r.get("latency_ms_p50")) and _is_num(r.get("accuracy")) else rest).append(r)
    return keep, rest


def _pareto_ids(rows: list[dict]) -> set[int]:
    """``id()`` of each row on the accuracy/latency Pareto front (rows without both values are never on it)."""
    plottable, _ = _split_plottable(rows)
    front = pareto_front([(r["latency_ms_p50"], r["accuracy"]) for r in plottable])
    return {id(plottable[i]) for i in front}


def _sort_key(row: dict) -> tuple:
    def none_last(x: object) -> tuple:
        return (x is None, x if x is not None else 0)
    kind = row.get("kind")
    return (_KIND_ORDER.get(kind, len(_KIND_ORDER)), str(kind), none_last(row.get("student_layers")),
            none_last(row.get("hidden_size")), none_last(row.get("temperature")), none_last(row.get("alpha")),
            str(row.get("name")))


# ---------------------------------------------------------------- plot


def plot_accuracy_vs_latency(rows: list[dict], path: Path, title: str) -> Path:
    """Plot test accuracy (%) against p50 latency (ms), one marker per row, the Pareto front as a step line.

    Error bars show each row's CI; rows without a latency or accuracy are left out and named in a footnote.
    Writes a PNG atomically and returns ``path``.
    """
    # A bare Figure renders with Agg without touching pyplot's global backend, so calling this from a
    # notebook or a headless server behaves the same and leaves no figure open.
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    path = Path(path)
    plotted, skipped = _split_plottable(rows)
    fig = Figure(figsize=(9, 6), layout="constrained")
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)

    handles = []
    for kind in sorted({r.get("kind") for r in plotted}, key=lambda k: (_KIND_ORDER.get(k, 9), str(k))):
        marker, colour, label = _KIND_STYLE.get(kind, _OTHER_STYLE)
        group = [r for r in plotted if r.get("kind") == kind]
        xs = [r["latency_ms_p50"] for r in group]
        ys = [100 * r["accuracy"] for r in group]
        below = [max(0.0, 100 * (r["accuracy"] - r["ci_low"])) if _is_num(r.get("ci_low")) else 0.0 for r in group]
        above = [max(0.0, 100 * (r["ci_high"] - r["accuracy"])) if _is_num(r.get("ci_high")) else 0.0 for r in group]
        ax.errorbar(xs, ys, yerr=[below, above], fmt=marker, color=colour, markersize=9 if marker == "*" else 6,
                    capsize=3, elinewidth=1, zorder=3)
        handles.append(Line2D([], [], marker=marker, color=colour, linestyle="", label=label))
    for r in plotted:
        ax.annotate(str(r.get("name")), (r["latency_ms_p50"], 100 * r["accuracy"]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7)

    front = [plotted[i] for i in pareto_front([(r["latency_ms_p50"], r["accuracy"]) for r in plotted])]
    if front:
        fx, fy = [r["latency_ms_p50"] for r in front], [100 * r["accuracy"] for r in front]
        ax.step(fx, fy, where="post", color="black", linewidth=1, linestyle="--", zorder=2)
        ax.scatter(fx, fy, s=180, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        handles.append(Line2D([], [], marker="o", markersize=11, markerfacecolor="none", color="black",
                              linestyle="--", label="Pareto front"))
    latencies = [r["latency_ms_p50"] for r in plotted]
    if latencies and min(latencies) > 0 and max(latencies) / min(latencies) > 10:
        ax.set_xscale("log")
    if handles:
        ax.legend(handles=handles, loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no row has both a latency and an accuracy", ha="center", transform=ax.transAxes)
    if skipped:
        fig.text(0.01, 0.005, "not plotted (no latency or accuracy): "
                 + ", ".join(str(r.get("name")) for r in skipped), fontsize=7, ha="left", va="bottom")
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    return path


# ---------------------------------------------------------------- table and comparisons


def _sweep_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Return (headers, rows) of the sweep table, sorted by kind, layers, hidden size, T, α."""
    teacher = next((r for r in rows if r.get("kind") == "teacher"), None)
    base = teacher.get("latency_ms_p50") if teacher else None
    on_front = _pareto_ids(rows)
    headers = ["name", "kind", "layers", "hidden", "T", "α", "accuracy (%) [CI]", "agreement (%)", "p50 (ms)",
               "speed-up", "size (MB)", "Pareto"]
    table = []
    for r in sorted(rows, key=_sort_key):
        accuracy = fmt(r.get("accuracy"), scale=100)
        if _is_num(r.get("ci_low")) and _is_num(r.get("ci_high")):
            accuracy += f" [{100 * r['ci_low']:.2f}, {100 * r['ci_high']:.2f}]"
        p50 = r.get("latency_ms_p50")
        speedup = base / p50 if _is_num(base) and _is_num(p50) and p50 > 0 else None
        table.append([str(r.get("name", MISSING)), str(r.get("kind", MISSING)),
                      fmt(r.get("student_layers"), "{}"), fmt(r.get("hidden_size"), "{}"),
                      fmt(r.get("temperature"), "{:g}"), fmt(r.get("alpha"), "{:g}"), accuracy,
                      fmt(r.get("agreement_with_teacher"), scale=100), fmt(p50), fmt(speedup, "{:.2f}×"),
                      fmt(r.get("size_mb"), "{:.1f}"), "✓" if id(r) in on_front else ""])
    return headers, table


_TEXT_COLUMNS = 2  # name, kind


def _verdict(c: dict) -> str:
    """Plain words for a paired comparison: a significant difference only when the CI excludes 0."""
    a, b = c.get("a", "KD"), c.get("b", "hard labels")  # the comparison is always "a vs b", diff = a − b
    low, high, diff = c.get("low"), c.get("high"), c.get("diff")
    if not (_is_num(low) and _is_num(high) and _is_num(diff)):
        return "not computed"
    if low <= 0 <= high:
        return "no significant difference"
    winner = a if low > 0 else b
    return f"{winner} better by {abs(100 * diff):.2f} points"


def _comparison_line(c: dict) -> str:
    """E.g. 'KD vs hard labels, 2 layers: +0.40 points [-1.00, +2.00], P(a not better) 0.310 → no significant…'."""
    return (f"{c.get('label', MISSING)}: {fmt(c.get('diff'), '{:+.2f}', scale=100)} points "
            f"[{fmt(c.get('low'), '{:+.2f}', scale=100)}, {fmt(c.get('high'), '{:+.2f}', scale=100)}], "
            f"P(a not better) {fmt(c.get('p_a_not_better'), '{:.3f}')} → {_verdict(c)}")


def _skipped_note(rows: list[dict]) -> str | None:
    _, skipped = _split_plottable(rows)
    if not skipped:
        return None
    return "Not on the plot (no latency or accuracy): " + ", ".join(str(r.get("name")) for r in skipped)


# ---------------------------------------------------------------- renderers


def render_sweep_markdown(rows: list[dict], comparisons: list[dict] | None = None, *,
                          title: str = "compresskit sweep", image: str | None = None) -> str:
    """Render the sweep as GitHub-flavoured Markdown: the table, then the paired comparisons.

    ``image`` is an optional relative link to the accuracy/latency PNG, shown above the table.
    """
    out = [f"# {title}", ""]
    if image:
        out += [f"![accuracy against latency]({image})", ""]
    out += ["## Students", "", *md_table(*_sweep_table(rows), _TEXT_COLUMNS), "",
            "Accuracy with its bootstrap confidence interval; speed-up is the teacher's p50 over the row's; "
            "✓ marks the accuracy/latency Pareto front."]
    if note := _skipped_note(rows):
        out += ["", note]
    if comparisons:
        out += ["", "## Paired comparisons", "", "Differences in accuracy points, paired bootstrap interval.", "",
                *(f"- {_comparison_line(c)}" for c in comparisons)]
    return "\n".join(out) + "\n"


def render_sweep_html(rows: list[dict], comparisons: list[dict] | None, png_path: Path | None,
                      title: str) -> str:
    """Render the sweep as one self-contained HTML page: inline CSS, the PNG inlined as a data: URI."""
    esc = html.escape
    parts = [f"<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{esc(title)}</title>",
             f"<style>{CSS}img {{ max-width: 100%; }}\n</style>\n</head>\n<body>\n<h1>{esc(title)}</h1>"]
    if png_path is not None and Path(png_path).is_file():
        data = base64.b64encode(Path(png_path).read_bytes()).decode("ascii")
        parts.append(f'<img alt="accuracy against latency" src="data:image/png;base64,{data}">')
    parts += ["<h2>Students</h2>", html_table(*_sweep_table(rows), _TEXT_COLUMNS),
              "<p>Accuracy with its bootstrap confidence interval; speed-up is the teacher's p50 over the row's; "
              "✓ marks the accuracy/latency Pareto front.</p>"]
    if note := _skipped_note(rows):
        parts.append(f"<p>{esc(note)}</p>")
    if comparisons:
        parts += ["<h2>Paired comparisons</h2>", "<p>Differences in accuracy points, paired bootstrap interval.</p>",
                  "<ul>", *(f"<li>{esc(_comparison_line(c))}</li>" for c in comparisons), "</ul>"]
    parts.append("</body>\n</html>\n")
    return "\n".join(parts)


def write_sweep_report(rows: list[dict], comparisons: list[dict] | None, out_dir: Path,
                       title: str) -> dict[str, Path]:
    """Write sweep.json, sweep.png, sweep.md and sweep.html into ``out_dir``, each atomically.

    Returns their paths by kind: "json", "png", "markdown", "html".
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    comparisons = comparisons or []
    paths = {"json": out_dir / "sweep.json", "png": out_dir / "sweep.png", "markdown": out_dir / "sweep.md",
             "html": out_dir / "sweep.html"}
    write_atomic(paths["json"], json.dumps(finite({"title": title, "rows": rows, "comparisons": comparisons}),
                                            indent=2, ensure_ascii=False) + "\n")
    plot_accuracy_vs_latency(rows, paths["png"], title)
    write_atomic(paths["markdown"], render_sweep_markdown(rows, comparisons, title=title, image="sweep.png"))
    write_atomic(paths["html"], render_sweep_html(rows, comparisons, paths["png"], title))
    return paths
