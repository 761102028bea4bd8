"""The report of a run: collect its stage records and measurements into one ``Report``, check it against the JSON
Schema, and write report.json, report.md and report.html (rendered by ``compresskit.reporting.render``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from compresskit.artifacts import UserError, write_atomic
from compresskit.models import model_shape
from compresskit.reporting.render import render_html, render_markdown
from compresskit.reporting.tables import finite
from compresskit.tasks import Task, get_task

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
    # what every task measures; each task's own quality fields are required below, by the report's task
    "required": ["name", "format", "precision", "size_mb", "parameters", "peak_rss_mb", "latency_ms",
                 "throughput_per_s"],
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "model": {"enum": ["teacher", "student", "baseline"]},
        "format": {"enum": ["pytorch", "onnx", "sklearn"]},
        "precision": {"enum": ["fp32", "int8", "int4", "bf16", "fp16", "fp64"]},
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
        # what `compresskit compare` pairs two runs on; absent in reports written before it existed
        "predictions": {"type": ["array", "null"], "items": {"type": "integer"}},
        "latency_samples_ms": {"type": ["object", "null"], "propertyNames": _BATCH_KEY,
                               "additionalProperties": {"type": "array", "items": {"type": "number"}}},
        # each benchmark round's (process's) p50, in round order: compare's latency interval when both runs have two
        "latency_rounds_ms": {"type": ["object", "null"], "propertyNames": _BATCH_KEY,
                              "additionalProperties": {"type": "array", "items": {"type": "number"}}},
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
        "task": {"type": "string", "minLength": 1},
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
        "test_set": {
            "type": "object",
            "properties": {"count": {"type": ["integer", "null"]}, "sha256": {"type": ["string", "null"]},
                           "labels": {"type": ["array", "null"], "items": {"type": "integer"}}},
        },
        "comparison": {"type": ["object", "null"]},
        "decision": {
            "type": ["object", "null"],
            "required": ["budget", "chosen", "frontier", "reason", "by_workload"],
            "properties": {"budget": {"type": "object", "additionalProperties": {"type": "number"}},
                           "chosen": {"type": ["string", "null"]},
                           "frontier": {"type": "array", "items": {"type": "string"}},
                           "reason": {"type": "string"},
                           "by_workload": {"type": "object", "additionalProperties": {"type": ["string", "null"]}}},
        },
        "speedups": {"type": "object", "properties": {"by_batch": {"type": "object", "propertyNames": _BATCH_KEY}}},
        "slower_than_pytorch": {"type": "array", "items": {"type": "object", "required": ["variant", "source", "batch"]}},
        "skipped": {"type": "array", "items": {"type": "object", "required": ["name", "reason"]}},
        "notes": {"type": "array", "items": {"type": "string"}},
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


def report_schema(task: Task) -> dict:
    """``REPORT_SCHEMA`` for a report of the ``task`` family: its variants carry the family's quality fields
    (``Task.quality_fields``) besides what every family measures."""
    return {**REPORT_SCHEMA, "allOf": [
        {"properties": {"variants": {"items": {"required": list(task.quality_fields)}}}}]}


def validate_report(report: dict) -> list[str]:
    """Check ``report`` against the schema of its task family (``report_schema``); return one readable line per
    problem (empty = valid). A task this compresskit does not know is a problem too."""
    try:
        schema = report_schema(get_task(str(report.get("task"))))
    except UserError as e:
        return [f"task: {e}"]
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(report), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]


# ---------------------------------------------------------------- collecting and writing


@dataclass(frozen=True)
class Report:
    """A run's report: the fields of report.json (see ``REPORT_SCHEMA``)."""

    task: str
    run_name: str
    created: str
    teacher: dict[str, Any]
    student: dict[str, Any]
    data: dict[str, Any]
    config: dict[str, Any]
    machine: dict[str, Any]
    versions: dict[str, str | None]
    sequence_length: int | None
    test_samples: int | None
    exports: dict[str, Any]
    variants: list[dict[str, Any]]
    verification: list[dict[str, Any]]
    gates: list[dict[str, Any]] = field(default_factory=list)
    speedups: dict[str, Any] = field(default_factory=dict)
    """The fastest student against ``teacher-pytorch`` and against the fastest teacher form, at batch 1 and the
    largest batch (``workloads.speedups``)."""
    slower_than_pytorch: list[dict[str, Any]] = field(default_factory=list)
    """Cells where an ONNX variant is slower than its PyTorch source (``workloads.slower_than_pytorch``)."""
    skipped: list[dict[str, Any]] = field(default_factory=list)
    """Variants the benchmark could not run on this machine, with the reason (bench.json's ``skipped``)."""
    notes: list[str] = field(default_factory=list)
    """Warnings for the reader, one line each (``workloads.notes``)."""
    test_set: dict[str, Any] = field(default_factory=dict)
    """The measured test examples: ``count``, ``sha256`` of the data's test split and, for classification, the gold
    ``labels`` (ids in the order the variants' ``predictions`` use); two runs are compared only on the same set."""
    decision: dict[str, Any] | None = None
    """What to ship and why (``compresskit.decision.decide``): the budget, the chosen variant, the frontier."""
    comparison: dict[str, Any] | None = None
    """With ``--baseline``: this run against the baseline (``reporting.compare``), as compare.json holds it."""
    schema_version: int = 1

    def to_dict(self) -> dict[str, Any]:
        """The JSON form that the schema validates and the renderers read."""
        return dataclasses.asdict(self)


# A JSON array of plain numbers, as json.dumps(indent=2) spreads it over one line per number.
_NUMBER_LIST = re.compile(r"\[\n\s+(-?[0-9][0-9.eE+-]*(?:,\n\s+-?[0-9][0-9.eE+-]*)*)\n\s*\]")


def report_json(report: dict) -> str:
    """report.json's text: indented, NaN as null, and each list of numbers (a variant's ``predictions``, its timed
    runs) on one line, so the file stays readable with thousands of them."""
    text = json.dumps(finite(report), indent=2, ensure_ascii=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def write_report(report: dict | Report, out_dir: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.html into ``out_dir``; return their paths by kind.

    When ``GITHUB_STEP_SUMMARY`` names a file (as in GitHub Actions), the Markdown is also appended to it, so
    the table shows on the workflow run page.
    """
    report = report.to_dict() if isinstance(report, Report) else report
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = render_markdown(report)
    texts = {
        "json": ("report.json", report_json(report)),
        "markdown": ("report.md", markdown),
        "html": ("report.html", render_html(report)),
    }
    paths = {}
    for kind, (name, text) in texts.items():
        paths[kind] = out_dir / name
        write_atomic(paths[kind], text)
    if summary := os.environ.get("GITHUB_STEP_SUMMARY"):
        with open(summary, "a", encoding="utf-8") as f:
            f.write("\n" + markdown)  # start on a fresh line whatever the previous step left
    return paths


def _read(path: Path) -> dict[str, Any]:
    """A stage record, or {} when the stage did not run (a report shows what there is)."""
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _model_info(folder: Path, record_name: str, source: str | None) -> dict:
    """Source, size and shape of a model folder, from its config and stage record."""
    from types import SimpleNamespace

    info: dict = {"path": str(folder), "source": source}
    config = _read(folder / "config.json")
    if config:
        info |= model_shape(SimpleNamespace(**config))
    record = _read(folder / record_name)
    info |= {k: record.get(k) for k in ("parameters", "best_validation_accuracy", "train_seconds",
                                         "precision", "device", "student_origin") if k in record}
    return info


def build_report(run_dir: Path, task: Task) -> Report:
    """Collect the report of a run folder of the ``task`` family from its stage records, what the family reads of
    its own folders (``Task.collect``) and ``bench/bench.json`` (gates: none yet; the caller adds them with
    ``dataclasses.replace``)."""
    from compresskit.machine import library_versions
    from compresskit.run import RunLayout

    layout = RunLayout(Path(run_dir))
    bench_path = layout.bench / "bench.json"
    if not bench_path.is_file():
        raise UserError(f"{bench_path} does not exist: run `compresskit bench` on {run_dir} first")
    bench = _read(bench_path)
    run, data = _read(layout.record), _read(layout.data / "data.json")
    config = run.get("config", {})
    collected = task.collect(layout)
    verification, exports = collected.verification, collected.exports
    teacher_dir = layout.recorded_teacher()
    from compresskit.reporting.speedups import notes, slower_than_pytorch, speedups
    return Report(
        task=task.name,
        run_name=layout.root.name,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # the teacher stage records the source it resolved (a task's embedded default, not the flag's value)
        teacher=_model_info(teacher_dir, "finetune.json",
                            run.get("stages", {}).get("teacher", {}).get("source", config.get("teacher"))),
        student=_model_info(layout.student, "distill.json", None),
        data={"source": data.get("inputs", {}).get("source"), "labels": data.get("labels"),
              "sizes": data.get("sizes"), "sha256": data.get("sha256")},
        config=config,
        machine=bench.get("machine", {}),
        versions=library_versions(),
        sequence_length=bench.get("sequence_length"),
        test_samples=bench.get("test_samples"),
        exports=exports,
        variants=bench["variants"],
        verification=verification,
        speedups=speedups(bench["variants"]),
        slower_than_pytorch=slower_than_pytorch(bench["variants"]),
        skipped=bench.get("skipped", []),
        notes=notes(bench["variants"], exports, bench.get("skipped", [])),
        test_set=_test_set(layout, bench.get("test_samples"), collected.test_labels),
    )


def _test_set(layout: Any, count: int | None, labels: list[int] | None) -> dict[str, Any]:
    """What identifies the measured test examples: their number, the hash of the data's test split and the gold label
    ids (where the family has them; the ids index the variants' ``predictions``)."""
    from compresskit.artifacts import sha256_file

    split = layout.data / "test.jsonl"
    return {"count": count, "sha256": sha256_file(split) if split.is_file() else None, "labels": labels}
