"""What each quality budget ships, from finished runs: the decision (``compresskit.decision``) of a run's report.json
taken again under several budgets, without measuring anything, with every variant's speed-up over the teacher in
PyTorch (95 % interval from the benchmark's rounds) and its quality against the budget.

    python benchmarks/decisions.py export/bbc-news-all-minilm-l6-v2 export/bbc-news-smollm2-135m-instruct
    python benchmarks/decisions.py RUN --figures benchmarks/figures    # also save each default budget's frontier plot

Budgets: text classification at an accuracy drop of 0 (tight), 1 point (the default) and 3 points (loose); causal LM
at a perplexity ratio of 1.05 (tight), 1.25 (the default), 1.5 and 10 (loose). Prints Markdown for RESULTS.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path

from compresskit.decision import budget_of, decide, kind_of, speedup_interval
from compresskit.gates import GateConfig
from compresskit.tasks import get_task
from compresskit.variants import field_value, reference_teacher

BUDGETS = {"text-classification": [("tight", GateConfig(max_accuracy_drop=0.0)), ("default", GateConfig()),
                                   ("loose", GateConfig(max_accuracy_drop=0.03))],
           "causal-lm": [("tight", GateConfig(max_perplexity_ratio=1.05)), ("default", GateConfig()),
                         ("loose", GateConfig(max_perplexity_ratio=1.5)),
                         ("very loose", GateConfig(max_perplexity_ratio=10.0))]}


def _quality(task, row: dict) -> str:
    col = next(c for c in task.report_columns() if c.field == task.quality_metric)
    q = field_value(row, task.quality_metric)
    out = f"{col.header.split(' (')[0]} {q * col.scale:.2f}" if q is not None else "—"
    if task.perplexity_metric and (p := field_value(row, task.perplexity_metric)) is not None:
        out = f"perplexity {p:.1f}; " + out
    return out


def summarise(run: Path, figures: Path | None) -> list[str]:
    report = json.loads((run / "report.json").read_text())
    task = get_task(report["task"])
    machine, versions = report.get("machine") or {}, report.get("versions") or {}
    lines = [f"### {report['run_name']} ({report['task']})", "",
             f"Machine: {machine.get('cpu')}, {machine.get('threads')} threads; "
             + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + f"; report of {report.get('created')}.", ""]
    teacher = reference_teacher(report["variants"])
    default = decide(report, task, *budget_of(GateConfig(), task.default_budget))
    main = task.decision_workloads(report["variants"])[0]
    lines += [f"Every variant against {teacher['name']} ({main.label}; speed-up with the 95 % interval of the "
              "benchmark's rounds):", "", "| variant | what it is | speed | speed-up | quality | meets the default budget |",
              "|---|---|---:|---:|---|---|"]
    for c in default["candidates"]:
        row = next(v for v in report["variants"] if v["name"] == c["name"])
        low, high = speedup_interval(teacher, row, main)
        ci = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
        check = "; ".join(x["text"] for x in c["checks"])
        lines.append(f"| {c['name']} | {kind_of(c)} | {c['speed'][main.key]:.2f} | {c['speedup']:.2f}×{ci} | "
                     f"{_quality(task, row)} | {'yes' if c['meets'] else 'no'}: {check} |")
    lines += ["", "| budget | ships | what it is | speed-up | frontier | by workload |", "|---|---|---|---:|---|---|"]
    for label, gates in BUDGETS[report["task"]]:
        d = decide(report, task, *budget_of(gates, task.default_budget))
        chosen = next((c for c in d["candidates"] if c["name"] == d["chosen"]), None)
        head = d["headline"] or {}
        ci = (f" [{head['speedup_low']:.2f}, {head['speedup_high']:.2f}]" if head.get("speedup_low") is not None
              else "")
        ships = d["chosen"] or f"nothing (closest: {d['closest']})"
        lines.append(f"| {label}: {d['budget_text']} | {ships} | {kind_of(chosen) if chosen else '—'} | "
                     + (f"{head['speedup']:.2f}×{ci}" if head else "—") + f" | {', '.join(d['frontier'])} | "
                     + ", ".join(f"{k}: {v}" for k, v in d["by_workload"].items()) + " |")
    neural = {**report, "variants": [v for v in report["variants"] if v.get("format") != "sklearn"]}
    if len(neural["variants"]) < len(report["variants"]):
        # what ships for a user who must ship a neural network: the same decision without the classical baseline
        d = decide(neural, task, *budget_of(GateConfig(), task.default_budget))
        head = d["headline"] or {}
        ci = (f" [{head['speedup_low']:.2f}, {head['speedup_high']:.2f}]" if head.get("speedup_low") is not None
              else "")
        lines.append(f"| default, neural networks only | {d['chosen']} | "
                     f"{kind_of(next(c for c in d['candidates'] if c['name'] == d['chosen'])) if d['chosen'] else '—'}"
                     f" | " + (f"{head['speedup']:.2f}×{ci}" if head else "—") + f" | {', '.join(d['frontier'])} | "
                     + ", ".join(f"{k}: {v}" for k, v in d["by_workload"].items()) + " |")
    lines += ["", "Warnings under the default budget:", ""] + [f"- {w}" for w in default["warnings"]] + [""]
    if figures is not None:
        from compresskit.reporting.plots import frontier_plot

        img = frontier_plot(report["variants"], default)
        if img:
            figures.mkdir(parents=True, exist_ok=True)
            png = figures / f"frontier-{report['task']}.png"
            png.write_bytes(base64.b64decode(re.search(r'base64,([^"]+)"', img).group(1)))
            lines += [f"![quality against speed, {report['task']}]({png.relative_to(Path('benchmarks'))})"
                      if png.is_relative_to(Path("benchmarks")) else f"![frontier]({png})", ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders (with report.json)")
    parser.add_argument("--figures", type=Path, default=None, help="save each run's default frontier plot here")
    args = parser.parse_args()
    for run in args.runs:
        print("\n".join(summarise(run, args.figures)))


if __name__ == "__main__":
    main()
