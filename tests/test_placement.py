"""Which execution provider ran each node: real ONNX Runtime profiles of the tiny exported classifier."""

import tempfile

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from rich.console import Console
from tokenizers import Tokenizer

from compresskit.onnx.sessions import (
    CPU_PROVIDER,
    NodeOnCpu,
    cpu_fallback,
    node_placement,
    nodes_per_provider,
    profile_node_events,
)
from compresskit.reporting.render import render_console_table, render_html, render_markdown
from compresskit.reporting.report import validate_report
from compresskit.tasks.classification.bench import BenchConfig, Variant, bench

CUDA_FIRST = ["CUDAExecutionProvider", CPU_PROVIDER]


def _feed(folder) -> dict[str, np.ndarray]:
    """One tokenised sentence, as the benchmark feeds it."""
    enc = Tokenizer.from_file(str(folder / "tokenizer.json")).encode("the team won the cup match")
    return {"input_ids": np.array([enc.ids]), "attention_mask": np.array([enc.attention_mask]),
            "token_type_ids": np.array([enc.type_ids])}


@pytest.fixture(scope="module")
def cpu_events(tiny_onnx) -> list[dict]:
    events, providers = profile_node_events(tiny_onnx / "model.onnx", _feed(tiny_onnx), "cpu", threads=1)
    assert providers == [CPU_PROVIDER]
    return events


def _optimised_node_count(model_path, tmp_path) -> int:
    """Nodes of the graph ONNX Runtime runs, saved by the runtime itself at the optimisation level we use."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp_path / "optimised.onnx")
    opts.log_severity_level = 3
    ort.InferenceSession(str(model_path), sess_options=opts, providers=[CPU_PROVIDER])
    return len(onnx.load(tmp_path / "optimised.onnx").graph.node)


def test_cpu_session_runs_every_node_on_cpu_and_leaves_no_trace(tiny_onnx, tmp_path, monkeypatch):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(profiles))  # where the trace is written, to see it removed
    placement = node_placement(tiny_onnx / "model.onnx", _feed(tiny_onnx), "cpu", threads=1)
    assert list(profiles.iterdir()) == []
    assert list(placement.nodes_per_provider) == [CPU_PROVIDER]
    # every node of the optimised graph ran once, and each is counted once
    assert placement.nodes_per_provider[CPU_PROVIDER] == _optimised_node_count(tiny_onnx / "model.onnx", tmp_path)
    assert placement.cpu_fallback == ()  # the CPU was asked for: nothing fell back
    assert placement.to_json() == {"nodes_per_provider": placement.nodes_per_provider, "cpu_fallback_nodes": []}


def test_trace_has_the_fields_placement_reads(cpu_events):
    # guards against a runtime upgrade that renames what the profiler writes
    assert cpu_events and all(e["args"]["provider"] == CPU_PROVIDER and e["args"]["op_name"] for e in cpu_events)
    assert {e["args"]["op_name"] for e in cpu_events} >= {"Attention", "MatMul"}  # the fused graph ran


def test_cpu_nodes_count_as_fallback_only_under_a_gpu_provider(cpu_events):
    ran = sum(nodes_per_provider(cpu_events).values())
    flagged = cpu_fallback(cpu_events, CUDA_FIRST)
    assert len(flagged) == ran and all(isinstance(n, NodeOnCpu) for n in flagged)
    assert {n.op_type for n in flagged} == {e["args"]["op_name"] for e in cpu_events}
    assert len({n.name for n in flagged}) == ran  # unnamed nodes (the input Casts) stay apart
    assert cpu_fallback(cpu_events, ["TensorrtExecutionProvider", *CUDA_FIRST]) == flagged
    assert cpu_fallback(cpu_events, [CPU_PROVIDER]) == ()
    assert cpu_fallback(cpu_events, []) == ()


def test_only_nodes_left_on_cpu_are_flagged(cpu_events):
    # the real trace as a CUDA session would write it if the GPU had taken every node but the Casts
    moved = [{**e, "args": {**e["args"], "provider": CPU_PROVIDER if e["args"]["op_name"] == "Cast"
                                                  else "CUDAExecutionProvider"}} for e in cpu_events]
    casts = sum(e["args"]["op_name"] == "Cast" for e in cpu_events)
    assert casts > 0
    assert nodes_per_provider(moved) == {"CUDAExecutionProvider": len(cpu_events) - casts, CPU_PROVIDER: casts}
    assert {n.op_type for n in cpu_fallback(moved, CUDA_FIRST)} == {"Cast"}
    assert len(cpu_fallback(moved, CUDA_FIRST)) == casts
    # a node that ran twice (two runs in one trace) is still one node
    assert nodes_per_provider(moved + moved) == nodes_per_provider(moved)


def test_bench_record_and_report_carry_placement(tmp_path, tiny_onnx, tiny_data):
    cfg = BenchConfig(batch_sizes=(1,), sequence_length=32, warmup=0, min_iterations=2, min_seconds=0,
                      rounds=1, threads=1,
                      provider="cpu")
    result = bench(cfg, [Variant("teacher-onnx", "teacher", "onnx", "fp32", tiny_onnx, 1000)], tiny_data,
                   tmp_path / "bench")
    (row,) = result["variants"]
    assert row["providers"] == [CPU_PROVIDER]
    assert row["placement"]["cpu_fallback_nodes"] == []
    assert row["placement"]["nodes_per_provider"][CPU_PROVIDER] == _optimised_node_count(tiny_onnx / "model.onnx",
                                                                                         tmp_path)
    gpu_row = {**row, "name": "student-onnx-cuda", "providers": CUDA_FIRST,
               "placement": {"nodes_per_provider": {"CUDAExecutionProvider": 18, CPU_PROVIDER: 3},
                             "cpu_fallback_nodes": [{"name": "Shape_1", "op_type": "Shape"},
                                                    {"name": "Gather_4", "op_type": "Gather"},
                                                    {"name": "Shape_2", "op_type": "Shape"}]}}
    pytorch_row = {**row, "name": "teacher-pytorch", "format": "pytorch", "providers": [], "placement": None}
    report = {"schema_version": 1, "task": "text-classification", "teacher": {}, "student": {}, "config": {},
              "machine": result["machine"], "versions": {}, "variants": [pytorch_row, row, gpu_row], "gates": []}
    assert validate_report(report) == []

    md = render_markdown(report)
    section = md.split("## Execution providers")[1]
    assert "teacher-pytorch" not in section
    assert (f"- **teacher-onnx:** CPUExecutionProvider: {row['placement']['nodes_per_provider'][CPU_PROVIDER]} nodes "
            "on CPUExecutionProvider; nodes on CPU under GPU provider: n/a") in section
    assert ("- **student-onnx-cuda:** CUDAExecutionProvider, CPUExecutionProvider: 18 nodes on CUDAExecutionProvider, "
            "3 on CPUExecutionProvider; nodes on CPU under GPU provider: 3 (Shape ×2, Gather ×1)") in section
    assert "nodes on CPU under GPU provider: 3 (Shape ×2, Gather ×1)" in render_html(report)
    console = Console(width=300, record=True)
    console.print(render_console_table(report))
    assert "nodes on CPU under GPU provider: 3 (Shape ×2, Gather ×1)" in console.export_text()

    report["variants"][2]["placement"]["nodes_per_provider"][CPU_PROVIDER] = "3"
    del report["variants"][1]["placement"]["cpu_fallback_nodes"]
    problems = validate_report(report)
    assert any(p.startswith("variants/2/placement/nodes_per_provider/CPUExecutionProvider:") for p in problems)
    assert "variants/1/placement: 'cpu_fallback_nodes' is a required property" in problems
