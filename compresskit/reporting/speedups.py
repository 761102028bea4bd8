"""What the report derives from the variants' latencies, whatever the task family: the fastest student's speed-ups
against the reference teacher and against the fastest teacher form measured (``speedups``), the cells where an ONNX
graph is slower than the PyTorch model it was exported from (``slower_than_pytorch``), and the report's warnings
(``notes``)."""

from __future__ import annotations

import math
from typing import Any

from compresskit.variants import REFERENCE_TEACHER, reference_teacher


def _p50(row: dict, key: str) -> float | None:
    value = ((row.get("latency_ms") or {}).get(key) or {}).get("p50")
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) and value > 0 else None


def _batch_keys(variants: list[dict]) -> list[str]:
    """``batch_1`` and the largest batch any variant measured (one key when only batch 1 was)."""
    sizes = {int(k.split("_")[1]) for v in variants for k in (v.get("latency_ms") or {}) if k.startswith("batch_")}
    return [f"batch_{b}" for b in sorted({1, max(sizes, default=1)})]


def speedups(variants: list[dict]) -> dict[str, Any]:
    """The fastest student's speed-up (p50 over p50, at the main sequence length) against the reference teacher
    (``teacher-pytorch``, fp32 eager) and against the fastest teacher variant measured in any form (ONNX, bf16,
    torch.compile), at batch 1 and at the largest batch measured.

    Why both: a user on this machine would not run the teacher in fp32 eager PyTorch if a faster form of it exists;
    the speed-up compression buys is the one against the best of those. Returns ``{"reference": name, "by_batch":
    {"batch_1": {...}, "batch_32": {...}}}``; a figure that cannot be computed is None.
    """
    teachers = [v for v in variants if v.get("model") == "teacher"]
    students = [v for v in variants if v.get("model") == "student"]
    reference = reference_teacher(teachers)
    out: dict[str, Any] = {"reference": reference.get("name") if reference else None, "by_batch": {}}
    for key in _batch_keys(variants):
        def fastest(rows: list[dict]) -> tuple[str | None, float | None]:
            timed = [(v["name"], p) for v in rows if (p := _p50(v, key)) is not None]
            return min(timed, key=lambda t: t[1]) if timed else (None, None)

        student, s_ms = fastest(students)
        teacher, t_ms = fastest(teachers)
        r_ms = _p50(reference, key) if reference else None
        out["by_batch"][key] = {
            "student": student, "student_p50_ms": s_ms,
            "reference_p50_ms": r_ms, "fastest_teacher": teacher, "fastest_teacher_p50_ms": t_ms,
            "vs_reference": r_ms / s_ms if r_ms and s_ms else None,
            "vs_fastest_teacher": t_ms / s_ms if t_ms and s_ms else None,
        }
    return out


def _cell_p50(row: dict) -> dict[tuple[int, int | None], float]:
    """p50 per (batch, sequence length) cell of a variant: its ``workloads``, else its ``latency_ms`` keys (sequence
    length unknown: None)."""
    cells_ = {(c["batch"], c["sequence_length"]): c["latency_ms"]["p50"] for c in row.get("workloads") or []
              if isinstance((c.get("latency_ms") or {}).get("p50"), (int, float))}
    if not cells_:
        cells_ = {(int(k.split("_")[1]), None): p for k in row.get("latency_ms") or {}
                  if (p := _p50(row, k)) is not None}
    return cells_


def slower_than_pytorch(variants: list[dict]) -> list[dict[str, Any]]:
    """Every measured cell where an ONNX variant's p50 is above that of the PyTorch model it comes from (the same
    model's fp32 eager ``<model>-pytorch`` variant): ``{"variant", "source", "batch", "sequence_length", "onnx_ms",
    "pytorch_ms"}``, in the variants' and cells' order."""
    by_name = {v.get("name"): v for v in variants}
    found = []
    for v in variants:
        source = by_name.get(f"{v.get('model')}-pytorch")
        if v.get("format") != "onnx" or source is None:
            continue
        theirs = _cell_p50(source)
        for (batch, seq), ms in _cell_p50(v).items():
            if (batch, seq) in theirs and ms > theirs[(batch, seq)]:
                found.append({"variant": v["name"], "source": source["name"], "batch": batch,
                              "sequence_length": seq, "onnx_ms": ms, "pytorch_ms": theirs[(batch, seq)]})
    return found


def notes(variants: list[dict], exports: dict[str, Any], skipped: list[dict]) -> list[str]:
    """The report's warnings, one line each: ONNX variants slower than their PyTorch source (measured by the
    benchmark, and as export's choice saw it), and variants that were not measured, with why."""
    lines = []
    for s in slower_than_pytorch(variants):
        at = f"batch {s['batch']}" + (f", sequence {s['sequence_length']}" if s["sequence_length"] else "")
        lines.append(f"{s['variant']} is slower than its PyTorch source {s['source']} at {at}: p50 "
                     f"{s['onnx_ms']:.2f} ms against {s['pytorch_ms']:.2f} ms")
    for name, record in exports.items():
        choice = (record or {}).get("choice") or {}
        for key in choice.get("slower_than_pytorch") or []:
            onnx_ms = (choice.get("shipped_ms") or {}).get(key)
            torch_ms = (choice.get("pytorch_ms") or {}).get(key)
            figures = f": {onnx_ms:.2f} ms against {torch_ms:.2f} ms" if onnx_ms and torch_ms else ""
            lines.append(f"export of the {name}: the fastest ONNX graph ({choice.get('chosen')}) is slower than "
                         f"PyTorch at {key.replace('_', ' ')} when export timed it{figures}; it is kept, the "
                         "pipeline needs ONNX")
    for s in skipped:
        lines.append(f"{s.get('name')} not measured: {s.get('reason')}")
    return lines


def speedup_lines(report: dict) -> list[str]:
    """The report's speed-up lines, one per batch size (see ``speedups``)."""
    block = report.get("speedups") or {}
    lines = []
    for key, s in (block.get("by_batch") or {}).items():
        if not s.get("student"):
            continue
        size = key.removeprefix("batch_")
        vs_ref = f"{s['vs_reference']:.2f}× {block.get('reference') or REFERENCE_TEACHER}" \
            if s.get("vs_reference") else f"— against {block.get('reference') or REFERENCE_TEACHER}"
        vs_best = f"{s['vs_fastest_teacher']:.2f}× the fastest teacher form ({s['fastest_teacher']}, " \
                  f"{s['fastest_teacher_p50_ms']:.2f} ms)" if s.get("vs_fastest_teacher") else "no teacher measured"
        lines.append(f"batch {size}: {s['student']} ({s['student_p50_ms']:.2f} ms p50) is {vs_ref} and {vs_best}")
    return lines
