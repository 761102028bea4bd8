"""The plots of the HTML pages, as inline ``<img>`` tags (PNG, base64), so a page stays one self-contained file.

Each function takes report data (variant rows, a decision, a comparison) and returns the tag, or None when the data it needs
is missing: a page shows no empty axes. matplotlib is imported here only, and only when a plot is drawn; nothing here
imports torch. Figures are drawn on a bare ``Figure`` with the Agg canvas, never through pyplot, so no global
backend is switched and no figure stays open.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from typing import Any

from compresskit.variants import field_value, finite_number

_COLOURS = {"teacher": "tab:red", "student": "tab:blue", "baseline": "tab:gray"}


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _img(fig: Any, alt: str) -> str:
    """The figure as an ``<img>`` whose source is the PNG itself (a data: URI): nothing is fetched."""
    buf = io.BytesIO()
    fig.canvas.print_png(buf)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width: 100%">'


def _p50_1(row: dict) -> float | None:
    p50 = finite_number(((row.get("latency_ms") or {}).get("batch_1") or {}).get("p50"))
    return p50 if p50 is not None and p50 > 0 else None


def _scaled(values: list[float], metric: str) -> tuple[list[float], str]:
    """Fractions as percentages (every value in [0, 1]); other figures (perplexity) as they are."""
    if all(0 <= v <= 1 for v in values):
        return [100 * v for v in values], f"{metric} (%)"
    return values, metric


def _labelled(values: list[float], metric: str, label: str | None, scale: float) -> tuple[list[float], str]:
    """The values and axis label of a quality figure: the report column's ``label`` and ``scale`` where the caller
    has them (``accuracy (%)``, ``top-1 agreement (%)``), else guessed from the values (``_scaled``)."""
    if label is None:
        return _scaled(values, metric)
    return [scale * v for v in values], label


def bare_label(label: str) -> str:
    """A label without its trailing unit: ``accuracy (%)`` → ``accuracy``, for titles and alt texts."""
    return re.sub(r"\s*\([^()]*\)$", "", label) or label


def accuracy_vs_latency(variants: list[dict], metric: str = "accuracy", label: str | None = None,
                        scale: float = 1.0) -> str | None:
    """Each variant's quality ``metric`` (a report field) against its p50 at batch 1 (log x); None when no variant
    has both. ``label`` and ``scale``: the metric's report column header and scale (a human axis label, never the
    dotted field name); without them a fraction is shown as a percentage."""
    points = [(v, _p50_1(v), finite_number(field_value(v, metric))) for v in variants]
    points = [(v, x, y) for v, x, y in points if x is not None and y is not None]
    if not points:
        return None
    ys, label = _labelled([y for _, _, y in points], metric, label, scale)
    name = bare_label(label)
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    same_y: dict[float, int] = {}
    for (v, x, _), y in zip(points, ys):
        ax.scatter([x], [y], color=_COLOURS.get(str(v.get("model")), "tab:green"), s=40, zorder=3)
        # variants of one model share its accuracy (teacher forms, ONNX): stack their labels instead of overprinting
        k = same_y[round(y, 6)] = same_y.get(round(y, 6), -1) + 1
        ax.annotate(str(v.get("name")), (x, y), xytext=(4, 4 + 10 * k), textcoords="offset points", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    ax.set_ylabel(label)
    ax.set_title(f"{name} against latency")
    ax.grid(True, which="both", alpha=0.3)
    return _img(fig, f"{name} against p50 latency at batch 1, per variant")


def frontier_labels(decision: dict) -> tuple[str, str]:
    """The (x, y) axis labels of ``frontier_plot``: the decision's workload and quality labels, with the log scale
    and which way is faster or better, e.g. ("p50 latency at batch 1 (ms) — log scale, ← faster",
    "accuracy (%) — higher is better ↑")."""
    workload, quality = decision.get("workload") or {}, decision.get("quality") or {}
    faster = "faster →" if workload.get("higher_is_better") else "← faster"
    better = "higher is better ↑" if quality.get("higher_is_better", True) else "lower is better ↓"
    y_scale = "log scale, " if quality.get("log") else ""
    return (f"{workload.get('label') or workload.get('field')} — log scale, {faster}",
            f"{quality.get('label') or quality.get('field')} — {y_scale}{better}")


def frontier_plot(variants: list[dict], decision: dict) -> str | None:
    """Quality against speed for every variant, as the run's ``decision`` (``compresskit.decision``) judged them:
    x is the decision's workload field (log scale), y its quality field (times ``scale``; log scale where ``log``);
    the frontier (the variants no other beats on both) is a step line, the variant that ships is ringed, and the
    budget's edge (``quality.threshold``) is a dashed line. None when no variant row has both fields."""
    workload, quality = decision.get("workload") or {}, decision.get("quality") or {}
    x_field, y_field = workload.get("field"), quality.get("field")
    if not isinstance(x_field, str) or not isinstance(y_field, str):
        return None
    scale = finite_number(quality.get("scale")) or 1.0
    points = {}
    for v in variants:
        x, y = finite_number(field_value(v, x_field)), finite_number(field_value(v, y_field))
        if x is not None and x > 0 and y is not None:
            points[str(v.get("name"))] = (v, x, scale * y)
    if not points:
        return None
    x_label, y_label = frontier_labels(decision)
    log_y = bool(quality.get("log")) and all(y > 0 for _, _, y in points.values())
    fig = _figure(7.5, 4.8)
    ax = fig.add_subplot()

    def kind(row: dict) -> str:
        return str(row.get("model")) if str(row.get("model")) in _COLOURS else "other"

    for model, colour in (*_COLOURS.items(), ("other", "tab:green")):
        mine = [(x, y) for v, x, y in points.values() if kind(v) == model]
        if mine:
            ax.scatter(*zip(*mine), color=colour, s=40, zorder=3, label=model)

    # The step line: the best quality a variant on the frontier gives at each speed or better. Sorted by x, a
    # lower-is-faster x holds each frontier point's quality until the next one ("post"); a higher-is-faster x
    # reaches back to the previous one ("pre").
    front = sorted((points[n][1], points[n][2]) for n in decision.get("frontier") or [] if n in points)
    if front:
        ax.step(*zip(*front), where="pre" if workload.get("higher_is_better") else "post", color="black",
                lw=1.2, alpha=0.7, zorder=2, label="frontier")

    threshold = finite_number(quality.get("threshold"))
    if threshold is not None:
        edge = scale * threshold
        ax.axhline(edge, ls="--", color="tab:orange", lw=1.2, zorder=1,
                   label=f"budget edge ({bare_label(str(quality.get('label') or y_field))} {edge:.4g})")

    chosen = decision.get("chosen")
    if chosen in points:
        _, x, y = points[chosen]
        ax.scatter([x], [y], s=320, facecolors="none", edgecolors="black", linewidths=2, zorder=4, label="ships")
        ax.annotate("ships", (x, y), xytext=(-10, -22), textcoords="offset points", fontsize=9, fontweight="bold")
    elif decision.get("closest") in points:  # nothing meets the budget: show the nearest miss, not a winner
        _, x, y = points[decision["closest"]]
        ax.scatter([x], [y], s=320, facecolors="none", edgecolors="tab:red", linewidths=1.5, linestyles="--",
                   zorder=4, label="closest (nothing meets the budget)")
        ax.annotate("closest", (x, y), xytext=(-12, -22), textcoords="offset points", fontsize=9, color="tab:red")

    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    named = [(name, x, y) for name, (_, x, y) in points.items()]
    for (name, x, y), k in zip(named, _label_rows(ax, named)):
        ax.annotate(name, (x, y), xytext=(6, 4 + 10 * k), textcoords="offset points", fontsize=8)

    _plain_log_ticks(ax.xaxis, _log_subs([x for _, x, _ in points.values()]))
    if log_y:
        _plain_log_ticks(ax.yaxis, _log_subs([y for _, _, y in points.values()]))
    ax.set_xlabel(x_label)
    ax.set_ylabel(y_label)
    ax.set_title("Quality against speed: the frontier and what ships")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="best", fontsize=7)
    x_name = bare_label(str(workload.get("label") or x_field))
    y_name = bare_label(str(quality.get("label") or y_field))
    return _img(fig, f"{y_name} against {x_name}, per variant: the frontier, the budget edge and what ships")


def latency_distributions(variants: list[dict], batch: str = "batch_1") -> str | None:
    """Box plots of every timed run at ``batch`` per variant (from ``latency_samples_ms``); None without samples."""
    rows = [(str(v.get("name")), [float(x) for x in (v.get("latency_samples_ms") or {}).get(batch) or []
                                  if finite_number(x) is not None and x > 0]) for v in variants]
    rows = [(name, s) for name, s in rows if s]
    if not rows:
        return None
    fig = _figure(7, 1 + 0.45 * len(rows))
    ax = fig.add_subplot()
    ax.boxplot([s for _, s in rows], showfliers=True, flierprops={"markersize": 2, "alpha": 0.4},
               **_horizontal_labelled([n for n, _ in rows]))
    ax.invert_yaxis()  # the table's order, top to bottom
    low, high = min(min(s) for _, s in rows), max(max(s) for _, s in rows)
    if high / low > 10:
        ax.set_xscale("log")
        _plain_log_ticks(ax.xaxis)
    size = batch.removeprefix("batch_")
    ax.set_xlabel(f"latency per run at batch {size} (ms)")
    ax.set_title(f"latency distribution at batch {size} ({sum(len(s) for _, s in rows)} timed runs)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _img(fig, f"box plot of the timed runs at batch {size}, per variant")


def _log_subs(values: list[float]) -> tuple[float, ...]:
    """Where a log axis over ``values`` gets labelled ticks, per power of ten: every digit within one decade (300 to
    900 would otherwise show one label), 1-2-3-5 within two, 1-2-5 beyond."""
    decades = math.log10(max(values) / min(values))
    return tuple(range(1, 10)) if decades < 1 else (1.0, 2.0, 3.0, 5.0) if decades < 2 else (1.0, 2.0, 5.0)


def _label_rows(ax: Any, points: list[tuple[str, float, float]]) -> list[int]:
    """For each (name, x, y) point, how many label rows (10 points each) up its name goes so that no two names
    overprint: variants of one model often share a quality figure and sit close in speed. Boxes are estimated in
    points from the laid-out axes (about 5 points a character at font size 8)."""
    ax.figure.draw_without_rendering()  # settle the limits and the constrained layout first
    to_display = ax.transData.transform
    placed: list[tuple[float, float, float, float]] = []
    rows = []
    for name, x, y in points:
        px, py = to_display((x, y)) * 72 / ax.figure.dpi  # display pixels to points
        width = 5.0 * len(name)
        for k in range(8):
            box = (px + 6, px + 6 + width, py + 4 + 10 * k, py + 14 + 10 * k)
            if not any(box[0] < b[1] and b[0] < box[1] and box[2] < b[3] and b[2] < box[3] for b in placed):
                break
        placed.append(box)
        rows.append(k)
    return rows


def _plain_log_ticks(axis: Any, subs: tuple[float, ...] = (1.0, 2.0, 5.0)) -> None:
    """Ticks at ``subs`` times each power of ten, written as plain numbers: a range of one or two decades otherwise
    gets labelled minor ticks (2×10⁰, 3×10⁰…) that overprint."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _horizontal_labelled(names: list[str]) -> dict[str, Any]:
    """boxplot's arguments for horizontal boxes named ``names``, in the spelling of the installed matplotlib: 3.9
    renamed ``labels`` to ``tick_labels`` and 3.10 replaced ``vert=False`` by ``orientation`` (the old names warn)."""
    import inspect

    from matplotlib.axes import Axes

    params = inspect.signature(Axes.boxplot).parameters
    return {("tick_labels" if "tick_labels" in params else "labels"): names,
            **({"orientation": "horizontal"} if "orientation" in params else {"vert": False})}


def before_after(comparison: dict, metric: str = "accuracy", label: str | None = None,
                 scale: float = 1.0) -> str | None:
    """Per variant in both runs, an arrow from the baseline's (p50 at batch 1, ``metric``) to the current run's;
    None when no variant has both figures in both runs. ``label`` and ``scale`` as in ``accuracy_vs_latency``."""
    arrows = []
    for v in comparison.get("variants") or []:
        m = (v.get("metrics") or {}).get(metric) or {}
        lat = (v.get("latency") or {}).get("batch_1") or {}
        xb, xc = finite_number(lat.get("baseline_p50")), finite_number(lat.get("current_p50"))
        yb, yc = finite_number(m.get("baseline")), finite_number(m.get("current"))
        if None not in (xb, xc, yb, yc):
            arrows.append((str(v.get("name")), xb, xc, yb, yc))
    if not arrows:
        return None
    ys, label = _labelled([y for a in arrows for y in a[3:]], metric, label, scale)
    fig = _figure(7, 4.5)
    ax = fig.add_subplot()
    for i, (name, xb, xc, _, _) in enumerate(arrows):
        yb, yc = ys[2 * i], ys[2 * i + 1]
        ax.scatter([xb], [yb], color="tab:gray", s=30, zorder=3)
        ax.scatter([xc], [yc], color="tab:blue", s=40, zorder=3)
        ax.annotate("", xy=(xc, yc), xytext=(xb, yb),
                    arrowprops={"arrowstyle": "->", "color": "tab:blue", "lw": 1.2})
        ax.annotate(name, (xc, yc), xytext=(4, 4), textcoords="offset points", fontsize=8)
    ax.scatter([], [], color="tab:gray", label="baseline")
    ax.scatter([], [], color="tab:blue", label="current")
    ax.legend(loc="best", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    ax.set_ylabel(label)
    ax.set_title("baseline → current")
    ax.grid(True, which="both", alpha=0.3)
    return _img(fig, f"{bare_label(label)} and p50 latency at batch 1 of each variant, baseline to current")


def latency_vs_batch(variants: list[dict]) -> str | None:
    """p50 latency against batch size (both log scale), one panel per sequence length and one line per variant,
    from the variants' ``workloads`` cells; None when no variant timed more than one batch size."""
    lines: dict[int, list[tuple[dict, list[tuple[float, float]]]]] = {}
    for v in variants:
        by_length: dict[int, list[tuple[float, float]]] = {}
        for c in v.get("workloads") or []:
            p50 = finite_number((c.get("latency_ms") or {}).get("p50"))
            if (p50 is not None and p50 > 0 and finite_number(c.get("batch"))
                    and finite_number(c.get("sequence_length"))):
                by_length.setdefault(int(c["sequence_length"]), []).append((float(c["batch"]), p50))
        for length, points in by_length.items():
            if len(points) > 1:
                lines.setdefault(length, []).append((v, sorted(points)))
    if not lines:
        return None
    lengths = sorted(lines)
    fig = _figure(min(4.5 * len(lengths), 14), 4.5)
    axes = fig.subplots(1, len(lengths), squeeze=False, sharey=True)[0]  # one scale: lengths compare by eye
    for ax, length in zip(axes, lengths):
        for v, points in lines[length]:
            xs, ys = zip(*points)
            style = "-" if v.get("format") == "pytorch" else "--"
            ax.plot(xs, ys, style, marker="o", markersize=3, label=str(v.get("name")),
                    color=f"C{[r.get('name') for r in variants].index(v.get('name')) % 10}")
        ax.set_xscale("log", base=2)
        batches = sorted({x for _, points in lines[length] for x, _ in points})
        ax.set_xticks(batches, [f"{b:g}" for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size (log scale)")
        ax.set_title(f"sequence length {length}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("p50 latency (ms, log scale)")
    axes[-1].legend(loc="best", fontsize=7)
    return _img(fig, "p50 latency against batch size per sequence length, per variant")
