from __future__ import annotations

import copy
import json
import re

import pytest
from rich.console import Console

from compresskit.reporting.render import render_console_table, render_html, render_markdown
from compresskit.reporting.report import validate_report, write_report
from compresskit.reporting.tables import MISSING


def _variant(name: str, model: str, fmt: str, precision: str, accuracy: float, p50_1: float, p50_32: float,
             size_mb: float, parameters: int) -> dict:
    def lat(p50: float, iterations: int) -> dict:
        return {"mean": p50 * 1.02, "p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "iterations": iterations}

    return {
        "name": name, "model": model, "format": fmt, "precision": precision, "device": "cpu",
        "providers": ["CPUExecutionProvider"] if fmt == "onnx" else [],
        "accuracy": accuracy, "macro_f1": accuracy - 0.01,
        "agreement_with_teacher": 1.0 if model == "teacher" else 0.98,
        "size_mb": size_mb, "parameters": parameters, "peak_rss_mb": 612.0, "peak_gpu_mb": None,
        "latency_ms": {"batch_1": lat(p50_1, 150), "batch_32": lat(p50_32, 20)},
        "throughput_per_s": {"batch_1": 1000 / p50_1, "batch_32": 32_000 / p50_32},
    }


@pytest.fixture
def report() -> dict:
    return {
        "schema_version": 1, "task": "text-classification", "run_name": "bbc-news", "created": "2026-11-28T00:00:00Z",
        "teacher": {"source": "minilm-bbc", "path": "runs/teacher", "parameters": 22713216, "layers": 6,
                    "hidden_size": 384},
        "student": {"source": "teacher-layers 0,5", "path": "runs/student", "parameters": 12345, "layers": 2,
                    "hidden_size": 384},
        "data": {"source": "bbc.csv", "labels": ["business", "entertainment", "politics", "sport", "tech"],
                 "sizes": {"train": 1780, "validation": 222, "test": 223}, "sha256": "ab" * 32},
        "config": {"epochs": 3, "temperature": 2.0},
        "machine": {"cpu": "AMD EPYC", "physical_cores": 2, "logical_cores": 2, "threads": 2, "memory_gb": 23.4,
                    "gpu": None, "platform": "Linux-6.1-x86_64"},
        "versions": {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "onnx": "1.23.2",
                     "onnxruntime": "1.32.0", "compresskit": "0.1.0"},
        "sequence_length": 128,
        "variants": [
            _variant("teacher-pytorch", "teacher", "pytorch", "fp32", 0.9731, 20.0, 400.0, 86.7, 22713216),
            _variant("teacher-onnx", "teacher", "onnx", "fp32", 0.9731, 16.0, 320.0, 86.5, 22713216),
            _variant("student-pytorch", "student", "pytorch", "fp32", 0.9650, 8.0, 160.0, 45.1, 11_500_000),
            _variant("student-onnx", "student", "onnx", "fp32", 0.9650, 5.0, 100.0, 45.0, 11_500_000),
            _variant("student-onnx-int8", "student", "onnx", "int8", 0.9552, 4.0, 64.0, 11.4, 11_500_000),
        ],
        "verification": [{"model": "student-onnx", "reference": "student-pytorch", "max_abs_diff": 1e-5,
                          "mean_abs_diff": 1e-6, "label_agreement": 1.0, "tolerance": 1e-3, "min_agreement": 0.995,
                          "passed": True}],
        "gates": [{"name": "max-accuracy-drop", "limit": 0.01, "value": 0.0179, "passed": False,
                   "detail": "student-onnx-int8 accuracy 0.9552 vs teacher 0.9731: drop 0.0179 > limit 0.0100"},
                  {"name": "min-speedup", "limit": 3.0, "value": 5.0, "passed": True, "detail": "speed-up 5.00×"}],
    }


def _md_row(markdown: str, name: str) -> list[str]:
    """Return the cells of the variant table row whose first cell is ``name``."""
    variants_section = markdown.split("## Variants")[1].split("\n## ")[0]
    (line,) = [ln for ln in variants_section.splitlines() if ln.startswith(f"| {name} |")]
    return [c.strip() for c in line.strip("|").split("|")]


def test_markdown_has_every_variant_with_speedups(report):
    md = render_markdown(report)
    assert md.startswith("# compresskit report: bbc-news\n")
    for v in report["variants"]:
        assert f"| {v['name']} |" in md
    assert _md_row(md, "teacher-pytorch")[11] == "1.00×"
    assert _md_row(md, "student-onnx")[11] == "4.00×"  # 20 ms / 5 ms
    # Columns: name, format, precision, acc %, F1, agreement %, p50, p90, p99 @1, p50 @32, throughput @32, speed-up
    assert _md_row(md, "student-onnx-int8") == ["student-onnx-int8", "onnx", "int8", "95.52", "0.9452", "98.00",
                                                "4.00", "4.40", "5.20", "64.00", "500.0", "5.00×", "11.4", "11.50",
                                                "612"]


def test_markdown_table_header_and_sections(report):
    md = render_markdown(report)
    assert "| variant | format | precision | accuracy (%) |" in md
    assert "p50 @32 (ms)" in md and "throughput @32 (/s)" in md
    assert "peak GPU" not in md  # no variant measured GPU memory
    assert "|---|---|---|---:|" in md  # the separator row GitHub needs to render a table
    assert "## Export verification" in md and "| student-onnx | student-pytorch | 1.00e-05 |" in md
    assert "- FAIL max-accuracy-drop: student-onnx-int8" in md
    assert "- PASS min-speedup: speed-up 5.00×\n" in md
    assert "AMD EPYC, 2 physical / 2 logical cores, 2 threads" in md
    assert "train 1780 / validation 222 / test 223" in md


def test_missing_values_render_as_dash(report):
    report["variants"][3]["macro_f1"] = None
    report["variants"][3]["peak_rss_mb"] = float("nan")
    del report["variants"][3]["latency_ms"]["batch_32"]
    row = _md_row(render_markdown(report), "student-onnx")
    assert row[4] == MISSING and row[9] == MISSING and row[14] == MISSING


def test_speedup_without_teacher_pytorch_is_against_the_reference_teacher(report):
    # one reference-teacher rule for bench, gates and report: teacher-pytorch, else the first teacher variant
    report["variants"] = report["variants"][1:]
    md = render_markdown(report)
    teacher_p50 = report["variants"][0]["latency_ms"]["batch_1"]["p50"]
    assert _md_row(md, "teacher-onnx")[11] == "1.00×"
    assert _md_row(md, "student-onnx")[11] == f"{teacher_p50 / 5.0:.2f}×"
    report["variants"] = [v for v in report["variants"] if v["model"] == "student"]
    assert _md_row(render_markdown(report), "student-onnx")[11] == MISSING


def test_gpu_column_appears_when_measured(report):
    report["variants"][0]["peak_gpu_mb"] = 1234.0
    md = render_markdown(report)
    assert "peak GPU (MB)" in md
    assert _md_row(md, "teacher-pytorch")[-1] == "1234" and _md_row(md, "student-onnx")[-1] == MISSING


def test_only_batch_1_has_no_large_batch_column(report):
    for v in report["variants"]:
        v["latency_ms"].pop("batch_32")
    md = render_markdown(report)
    assert "p50 @32" not in md and "throughput @1 (/s)" in md


def test_pipe_in_name_does_not_break_markdown_table(report):
    report["variants"][0]["name"] = "a|b"
    assert "| a\\|b |" in render_markdown(report)


def test_html_is_self_contained_and_escaped(report):
    report["variants"][2]["name"] = "<script>alert(1)</script>"
    page = render_html(report)
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    # nothing fetched from elsewhere: the only sources are the plots' own PNG bytes
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert "href=" not in page and sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<td class=\"num\">5.00×</td>" in page
    assert page.count("<tr>") == 1 + 5 + 1 + 1  # variant header + rows, verification header + row


def test_console_table_matches_variants(report):
    report["variants"][4]["name"] = "[bold]int8"
    table = render_console_table(report)
    assert table.row_count == 5
    assert [c.header for c in table.columns][:3] == ["variant", "format", "precision"]
    console = Console(width=300, record=True)
    console.print(table)
    text = console.export_text()
    assert "[bold]int8" in text and "5.00×" in text


def test_validate_accepts_sample(report):
    assert validate_report(report) == []


def test_validate_reports_missing_accuracy_and_wrong_version(report):
    bad = copy.deepcopy(report)
    del bad["variants"][1]["accuracy"]
    bad["schema_version"] = 2
    problems = validate_report(bad)
    assert len(problems) == 2
    assert any(p.startswith("schema_version:") for p in problems)
    assert "variants/1: 'accuracy' is a required property" in problems


def test_validate_checks_latency_and_gates(report):
    del report["variants"][0]["latency_ms"]["batch_1"]
    report["variants"][1]["format"] = "tflite"
    report["gates"][0]["passed"] = "yes"
    problems = validate_report(report)
    assert any(p.startswith("variants/0/latency_ms:") and "batch_1" in p for p in problems)
    assert any(p.startswith("variants/1/format:") for p in problems)
    assert any(p.startswith("gates/0/passed:") for p in problems)


def test_write_report_writes_files_and_appends_step_summary(report, tmp_path, monkeypatch):
    summary = tmp_path / "summary.md"
    summary.write_text("earlier step output\n", encoding="utf-8")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    out = tmp_path / "out"

    paths = write_report(report, out)

    assert paths == {"json": out / "report.json", "markdown": out / "report.md", "html": out / "report.html"}
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == report
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md == render_markdown(report)
    assert paths["html"].read_text(encoding="utf-8") == render_html(report)
    text = summary.read_text(encoding="utf-8")
    assert text.startswith("earlier step output\n") and text.endswith(md)
    assert sorted(p.name for p in out.iterdir()) == ["report.html", "report.json", "report.md"]  # no temp files


def test_write_report_without_summary_and_nan_becomes_null(report, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    report["variants"][0]["peak_rss_mb"] = float("nan")
    paths = write_report(report, tmp_path)
    raw = paths["json"].read_text(encoding="utf-8")
    assert "NaN" not in raw
    assert json.loads(raw)["variants"][0]["peak_rss_mb"] is None


def test_graph_section_says_how_each_onnx_model_was_built(report):
    report["exports"] = {
        "teacher": {"chosen": "torchscript+eager+cls-only", "last_layer": "cls-only",
                    "fused_operators": {"Attention": 5, "BiasGelu": 6},
                    "skip_layer_norm": {"setting": "auto", "form": "unfused", "nodes": 12,
                                        "latency_ms": {"fused": {"batch_1": 7.64, "batch_32": 201.3},
                                                       "unfused": {"batch_1": 6.87, "batch_32": 190.1}}}},
        "student": {"chosen": "dynamo+eager", "fused_operators": {}, "skip_layer_norm": {"form": "fused"}},
        "student-quantized": {"mode": "dynamic-int8", "kept_fp32": ["/model/layer.0/output/dense/MatMul"]},
    }
    assert validate_report(report) == []
    md = render_markdown(report)
    assert ("- **teacher:** torchscript+eager+cls-only; fused Attention ×5, BiasGelu ×6; SkipLayerNormalization "
            "un-fused (12 nodes: @1 6.87 ms against 7.64 ms, @32 190.10 ms against 201.30 ms fused)") in md
    assert "- **student:** dynamo+eager; fused none\n" in md
    assert ("- **student-quantized:** dynamic-int8, 1 node(s) kept in fp32 by the accuracy fallback "
            "(/model/layer.0/output/dense/MatMul)") in md
    # a causal LM's section is its family's: the export route, and what the quantize ladder kept at 8 bits
    lm = {**report, "task": "causal-lm", "exports": {
        "student": {"chosen": "genai"},
        "student-int4": {"mode": "int4", "kept_fp32": [], "kept_int8": ["last_matmul", "mixed_layers"]}}}
    lm_md = render_markdown(lm)
    assert "- **student:** genai export, verified against PyTorch\n" in lm_md
    assert ("- **student-int4:** int4, 0 group(s) kept in full precision; at 8 bits: the LM head, "
            "llama.cpp's most sensitive MatMuls") in lm_md
    assert md.index("## ONNX graphs") < md.index("## Gates")
    assert "<h2>ONNX graphs</h2>" in render_html(report)
    report["exports"] = {"teacher": "not an object"}
    assert validate_report(report)  # the schema catches a malformed entry


def test_html_plots_need_their_data(report):
    """Accuracy against latency from every report; the latency box plot only with timed runs; no plot without data."""
    page = render_html(report)
    assert page.count("<img ") == 1 and 'alt="accuracy against p50 latency at batch 1, per variant"' in page
    report["variants"][3]["latency_samples_ms"] = {"batch_1": [5.0, 5.2, 4.9, 5.1]}
    assert validate_report(report) == []
    page = render_html(report)
    assert page.count("<img ") == 2 and 'alt="box plot of the timed runs at batch 1, per variant"' in page
    for v in report["variants"]:
        v["accuracy"] = None
        v.pop("latency_samples_ms", None)
    assert "<img " not in render_html(report) and "<h2>Plots</h2>" not in render_html(report)


def test_markdown_leaves_out_predictions_and_samples(report):
    """report.json carries per-example predictions and every timed run for `compare`; the Markdown stays a table."""
    before = render_markdown(report)
    for v in report["variants"]:
        v["predictions"] = [0, 1, 2] * 100
        v["latency_samples_ms"] = {"batch_1": [1.0] * 500}
    report["test_set"] = {"count": 300, "sha256": "ab" * 32, "labels": [0, 1, 2] * 100}
    assert validate_report(report) == []
    assert render_markdown(report) == before
    report["variants"][0]["predictions"] = ["business"]
    assert any(p.startswith("variants/0/predictions/0:") for p in validate_report(report))


def test_report_json_keeps_number_lists_on_one_line(report, tmp_path, monkeypatch):
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    lines_before = write_report(report, tmp_path / "a")["json"].read_text().count("\n")
    for v in report["variants"]:
        v["predictions"] = [0, 1, 2] * 100
        v["latency_samples_ms"] = {"batch_1": [1.25, 3e-05, 12.0] * 500}
    text = write_report(report, tmp_path / "b")["json"].read_text()
    assert json.loads(text) == report
    assert text.count("\n") == lines_before + 4 * len(report["variants"])  # "predictions", and samples with its key
    assert '"predictions": [0, 1, 2, 0,' in text and '"batch_1": [1.25, 3e-05, 12.0,' in text


def test_header_says_how_the_latencies_were_timed(report):
    assert "**Timing:**" not in render_markdown(report)  # no bench settings in the config: nothing claimed
    report["config"]["bench"] = {"rounds": 5, "min_iterations": 30, "min_seconds": 3.0}
    assert ("- **Timing:** each variant in 5 fresh processes, round by round across the variants; a p50 pools their "
            "timed runs") in render_markdown(report)
    report["config"]["bench"]["rounds"] = 1
    assert "each variant in one fresh process; at least 30 timed runs and 3 s" in render_markdown(report)
