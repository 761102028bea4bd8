"""What a text-classification run adds to the shared report and comparison: what it reads from its run folder
(each graph's parity check and build record, the gold labels of the test inputs), how its latencies were taken, how
each ONNX graph was built, and, between two runs, which exported graph each shipped (export chooses by timing, so
a rerun can ship another and its latency then compares two graphs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from compresskit.reporting.tables import MISSING, fmt
from compresskit.tasks.protocol import Collected, collect_graphs
from compresskit.variants import finite_number

GRAPHS = (("teacher", "export.json"), ("teacher-quantized", "quantize.json"), ("student", "export.json"),
          ("student-quantized", "quantize.json"))
"""The ONNX folders of a run and the record that says how each was made."""
METRICS = ("accuracy", "macro_f1", "agreement_with_teacher")
"""The quality figures of a report row that compare sets side by side."""


def collect(layout: Any) -> Collected:
    """Each ONNX graph's parity check and build record, and the gold label ids of ``bench/inputs.npz`` (in the
    order the variants' ``predictions`` use)."""
    collected = collect_graphs(layout, GRAPHS, _built)
    inputs = Path(layout.bench) / "inputs.npz"
    if inputs.is_file():
        import numpy as np

        with np.load(inputs) as arrays:
            if "labels" in arrays.files:
                return dataclasses.replace(collected, test_labels=[int(x) for x in arrays["labels"]])
    return collected


def _built(record_file: str, record: dict[str, Any]) -> dict[str, Any]:
    """How an exported graph was chosen and fused, or what quantization kept in fp32."""
    if record_file == "export.json":
        return {"chosen": record.get("chosen"), "last_layer": record.get("last_layer"),
                "skip_layer_norm": record.get("skip_layer_norm"), "choice": record.get("choice"),
                "fused_operators": record.get("fused_operators", {})}
    return {"mode": record.get("mode"), "kept_fp32": record.get("kept_fp32") or []}


def metrics(row: dict[str, Any]) -> dict[str, float]:
    """Accuracy, macro-F1 and agreement with the teacher, where the row has them."""
    return {k: v for k in METRICS if (v := finite_number(row.get(k))) is not None}


def timing_lines(report: dict) -> list[tuple[str, str]]:
    """How the latencies were taken, from the run's bench settings: a reader of a p50 should know it pools several
    processes."""
    bench = (report.get("config") or {}).get("bench") or {}
    rounds = bench.get("rounds")
    if not isinstance(rounds, int):
        return []
    how = (f"each variant in {rounds} fresh processes, round by round across the variants; a p50 pools their timed "
           f"runs, and report.json keeps each process's p50 (latency_rounds_ms)" if rounds > 1 else
           "each variant in one fresh process")
    return [("Timing", f"{how}; at least {bench.get('min_iterations', MISSING)} timed runs and "
                       f"{fmt(bench.get('min_seconds'), '{:g}')} s per batch size in all")]


def graph_lines(report: dict) -> list[tuple[str, str]]:
    """Return (model, text) per ONNX graph the run made: how export built it and what a quantized one kept in fp32,
    e.g. ("teacher", "torchscript+eager+cls-only; fused Attention ×5, BiasGelu ×6; SkipLayerNormalization
    un-fused (12 nodes: @1 6.87 ms against 7.64 ms, @32 190.1 ms against 201.3 ms fused)")."""
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


def shipped_graphs(report: dict) -> dict[str, dict[str, str]]:
    """Per exported model (``teacher``, ``student``) the ONNX graph its export stage shipped: ``candidate`` (exporter +
    attention [+ cls-only]) and, when chosen, the SkipLayerNormalization ``form``. Empty for reports without
    ``exports`` (an old one)."""
    out = {}
    for model, e in (report.get("exports") or {}).items():
        if isinstance(e, dict) and isinstance(e.get("chosen"), str):
            form = (e.get("skip_layer_norm") or {}).get("form")
            out[model] = {"candidate": e["chosen"], **({"form": form} if isinstance(form, str) else {})}
    return out


def pin_flags(graph: dict[str, str]) -> str:
    """The export flags that make ``export`` ship ``graph`` (``shipped_graphs``'s form) without choosing."""
    parts = graph["candidate"].split("+")
    flags = f"--exporter {parts[0]} --attention {parts[1]} --cls-only {'on' if 'cls-only' in parts[2:] else 'off'}"
    return flags + (f" --skip-layer-norm {graph['form']}" if "form" in graph else "")


def graph_changes(baseline: dict, current: dict, common: list[dict]) -> list[dict[str, Any]]:
    """The exported models whose shipped graph differs between the runs, with the ONNX variants built from them.
    Why it matters: export chooses its graph by timing, and where candidates are close a rerun can ship another one;
    the latency of those variants then compares two graphs, not two versions of the code."""
    b, c = shipped_graphs(baseline), shipped_graphs(current)
    return [{"model": m, "baseline": b[m], "current": c[m], "pin": pin_flags(b[m]),
             "variants": [v.get("name") for v in common if v.get("model") == m and v.get("format") == "onnx"]}
            for m in sorted(set(b) & set(c)) if b[m] != c[m]]
