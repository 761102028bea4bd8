"""The plots of the HTML pages, as inline ``<img>`` tags (PNG, base64), so a page stays one self-contained file.

Each function takes report data (variant rows, a comparison) and returns the tag, or None when the data it needs
is missing: a page shows no empty axes. matplotlib is imported here only, and only when a plot is drawn; nothing here
imports torch. Figures are drawn on a bare ``Figure`` with the Agg canvas, never through pyplot, so no global
backend is switched and no figure stays open.
"""

from __future__ import annotations

import base64
import html
import io
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


def accuracy_vs_latency(variants: list[dict], metric: str = "accuracy") -> str | None:
    """Each variant's quality ``metric`` against its p50 at batch 1 (log x); None when no variant has both."""
    points = [(v, _p50_1(v), finite_number(field_value(v, metric))) for v in variants]
    points = [(v, x, y) for v, x, y in points if x is not None and y is not None]
    if not points:
        return None
    ys, label = _scaled([y for _, _, y in points], metric)
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
    ax.set_title(f"{metric} against latency")
    ax.grid(True, which="both", alpha=0.3)
    return _img(fig, f"{metric} against p50 latency at batch 1, per variant")


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
        # a range of one or two decades gets labelled minor ticks (2×10⁰, 3×10⁰…) that overprint: plain numbers
        from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    size = batch.removeprefix("batch_")
    ax.set_xlabel(f"latency per run at batch {size} (ms)")
    ax.set_title(f"latency distribution at batch {size} ({sum(len(s) for _, s in rows)} timed runs)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _img(fig, f"box plot of the timed runs at batch {size}, per variant")


def _horizontal_labelled(names: list[str]) -> dict[str, Any]:
    """boxplot's arguments for horizontal boxes named ``names``, in the spelling of the installed matplotlib: 3.9
    renamed ``labels`` to ``tick_labels`` and 3.10 replaced ``vert=False`` by ``orientation`` (the old names warn)."""
    import inspect

    from matplotlib.axes import Axes

    params = inspect.signature(Axes.boxplot).parameters
    return {("tick_labels" if "tick_labels" in params else "labels"): names,
            **({"orientation": "horizontal"} if "orientation" in params else {"vert": False})}


def before_after(comparison: dict, metric: str = "accuracy") -> str | None:
    """Per variant in both runs, an arrow from the baseline's (p50 at batch 1, ``metric``) to the current run's;
    None when no variant has both figures in both runs."""
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
    ys, label = _scaled([y for a in arrows for y in a[3:]], metric)
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
    return _img(fig, f"{metric} and p50 latency at batch 1 of each variant, baseline to current")


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
