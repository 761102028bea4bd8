"""What a causal-LM run adds to the shared report and comparison: each decoder graph's verification and how it was
built (the export route kept, the precisions and what the quantize ladder kept at 8 bits or in full precision), and
the quality figures compare sets side by side."""

from __future__ import annotations

from typing import Any

from compresskit.reporting.tables import MISSING
from compresskit.tasks.causal_lm.onnx_build import INT8_GROUP_WORDS
from compresskit.tasks.protocol import Collected, collect_graphs
from compresskit.variants import finite_number

GRAPHS = (("teacher", "export.json"), ("teacher-int8", "quantize.json"),
          ("student", "export.json"), ("student-int8", "quantize.json"), ("student-int4", "quantize.json"))
"""The decoder graphs in a run folder that are checked against a reference, and the record that says how each was
made: the teacher's quantize-only arms (``--teacher-graphs``) and the student's graphs. The teacher's builder-default
int4 graph is a speed reference with a ``build.json`` and no check; the bench measures its quality."""


def collect(layout: Any) -> Collected:
    """Each decoder graph's check against its reference (PyTorch for the fp32 graph, the fp32 graph for a quantized
    one) and how it was built. A causal LM has no per-example gold labels."""
    return collect_graphs(layout, GRAPHS, _built)


def _built(record_file: str, record: dict[str, Any]) -> dict[str, Any]:
    """The export route kept, or the precision and what the quantize ladder kept at 8 bits or in full precision."""
    if record_file == "export.json":
        return {"chosen": record.get("chosen")}
    return {"mode": record.get("mode"), "kept_fp32": record.get("kept_fp32") or [],
            **({"kept_int8": record["kept_int8"]} if record.get("kept_int8") else {})}


def graph_lines(report: dict[str, Any]) -> list[tuple[str, str]]:
    """(model, text) per decoder graph: the export route it came from, or the precision a quantized graph holds and
    what the ladder kept at 8 bits or in full precision, named as a reader knows them (the LM head, llama.cpp's
    sensitive MatMuls)."""
    lines = []
    for name, e in (report.get("exports") or {}).items():
        if not isinstance(e, dict):
            continue
        if "mode" not in e:
            lines.append((name, f"{e.get('chosen') or MISSING} export, verified against PyTorch"))
            continue
        kept, int8 = e.get("kept_fp32") or [], e.get("kept_int8") or []
        lines.append((name, f"{e.get('mode') or MISSING}, {len(kept)} group(s) kept in full precision"
                      + (f" ({', '.join(map(str, kept))})" if kept else "")
                      + (f"; at 8 bits: {', '.join(INT8_GROUP_WORDS.get(g, str(g)) for g in int8)}" if int8 else "")))
    return lines


def metrics(row: dict[str, Any]) -> dict[str, float]:
    """Every numeric figure of the row's ``quality`` block (perplexity, top-1 agreement, …) as ``quality.<key>``."""
    quality = row.get("quality")
    if not isinstance(quality, dict):
        return {}
    return {f"quality.{k}": v for k, value in quality.items() if (v := finite_number(value)) is not None}
