"""Workload sweeps (batch × sequence cells), the teacher's faster PyTorch forms, and what the report derives from them:
speed-ups against teacher-pytorch and the fastest teacher form, and notes where ONNX is slower than PyTorch."""

import json

import numpy as np
import pytest

from compresskit.artifacts import UserError
from compresskit.machine import pytorch_form_unsupported
from compresskit.reporting.speedups import notes, slower_than_pytorch, speedup_lines, speedups
from compresskit.tasks.classification.bench import BenchConfig, bench, unsupported
from compresskit.tasks.classification.workloads import Cell, cells, max_batch_before_oom
from compresskit.variants import Variant, reference_teacher, teacher_forms


def _row(name: str, model: str, fmt: str, p50: dict[int, float], seq: int = 128, **cells_p50: float) -> dict:
    """A bench row with p50s per batch at the main length and, as ``b<batch>s<seq>=ms``, more cells."""
    lat = {f"batch_{b}": {"p50": ms, "p90": ms, "p99": ms, "mean": ms} for b, ms in p50.items()}
    work = [{"batch": b, "sequence_length": seq, "latency_ms": {"p50": ms}} for b, ms in p50.items()]
    for key, ms in cells_p50.items():
        b, s = key[1:].split("s")
        work.append({"batch": int(b), "sequence_length": int(s), "latency_ms": {"p50": ms}})
    return {"name": name, "model": model, "format": fmt, "precision": "fp32", "latency_ms": lat, "workloads": work}


def test_cells_run_smallest_first():
    grid = cells({1, 8}, {128, 64})
    assert grid == [Cell(1, 64), Cell(1, 128), Cell(8, 64), Cell(8, 128)]
    assert [c.batch * c.sequence_length for c in cells({1, 2, 32}, {16, 256})] == sorted(
        c.batch * c.sequence_length for c in cells({1, 2, 32}, {16, 256}))


def test_sequence_lengths_always_hold_the_main_one():
    cfg = BenchConfig(sequence_length=128, seq_lengths=(256, 64))
    assert cfg.lengths == (64, 128, 256)
    assert BenchConfig().lengths == (128,)
    with pytest.raises(UserError, match="--seq-lengths"):
        BenchConfig(seq_lengths=(4,))
    with pytest.raises(UserError, match="--teacher-forms takes bf16, compile or none, got fp8"):
        BenchConfig(teacher_forms=("fp8",))


def test_cli_reads_the_sweep_flags():
    from compresskit.cli.options import DEFAULTS
    from compresskit.tasks.classification.options import bench_config

    cfg = bench_config(DEFAULTS | {"batch_sizes": "1,8,32", "seq_lengths": "64,128,256", "teacher_forms": "none"})
    assert cfg.sizes == (1, 8, 32) and cfg.lengths == (64, 128, 256) and cfg.teacher_forms == ()
    assert bench_config(DEFAULTS).lengths == (128,) and bench_config(DEFAULTS).teacher_forms == ("bf16", "compile")
    with pytest.raises(UserError, match="--seq-lengths must be comma-separated integers"):
        bench_config(DEFAULTS | {"seq_lengths": "64,long"})


def test_teacher_forms_are_teachers_but_never_the_reference(tmp_path):
    base = Variant("teacher-pytorch", "teacher", "pytorch", "fp32", tmp_path, 10)
    forms = teacher_forms(base, ("bf16", "compile"))
    assert [(v.name, v.model, v.precision, v.runtime) for v in forms] == [
        ("teacher-pytorch-bf16", "teacher", "bf16", "eager"), ("teacher-pytorch-compile", "teacher", "fp32", "compile")]
    assert reference_teacher([*forms, base]).name == "teacher-pytorch"
    assert unsupported(base, "cpu") is None  # fp32 eager runs everywhere


def test_speedups_against_teacher_pytorch_and_the_fastest_teacher():
    rows = [_row("teacher-pytorch", "teacher", "pytorch", {1: 28.0, 32: 612.0}),
            _row("teacher-pytorch-bf16", "teacher", "pytorch", {1: 14.0, 32: 500.0}),
            _row("teacher-onnx", "teacher", "onnx", {1: 16.5, 32: 759.0}),
            _row("student-onnx", "student", "onnx", {1: 4.0, 32: 100.0}),
            _row("student-onnx-int8", "student", "onnx", {1: 2.0, 32: 125.0})]
    s = speedups(rows)
    assert s["reference"] == "teacher-pytorch" and set(s["by_batch"]) == {"batch_1", "batch_32"}
    one, big = s["by_batch"]["batch_1"], s["by_batch"]["batch_32"]
    assert one["student"] == "student-onnx-int8" and one["vs_reference"] == pytest.approx(14.0)
    assert one["fastest_teacher"] == "teacher-pytorch-bf16" and one["vs_fastest_teacher"] == pytest.approx(7.0)
    assert big["student"] == "student-onnx" and big["fastest_teacher"] == "teacher-pytorch-bf16"
    assert big["vs_reference"] == pytest.approx(6.12) and big["vs_fastest_teacher"] == pytest.approx(5.0)
    lines = speedup_lines({"speedups": s})
    assert lines[0].startswith("batch 1: student-onnx-int8 (2.00 ms p50) is 14.00× teacher-pytorch and 7.00× the "
                               "fastest teacher form (teacher-pytorch-bf16, 14.00 ms)")


def test_onnx_slower_than_pytorch_is_noted_per_cell():
    rows = [_row("teacher-pytorch", "teacher", "pytorch", {1: 28.0, 32: 612.0}, b32s256=1500.0),
            _row("teacher-onnx", "teacher", "onnx", {1: 16.5, 32: 759.0}, b32s256=1400.0),
            _row("student-pytorch", "student", "pytorch", {1: 8.0, 32: 200.0}),
            _row("student-onnx", "student", "onnx", {1: 4.0, 32: 100.0})]
    slow = slower_than_pytorch(rows)
    assert slow == [{"variant": "teacher-onnx", "source": "teacher-pytorch", "batch": 32, "sequence_length": 128,
                     "onnx_ms": 759.0, "pytorch_ms": 612.0}]
    lines = notes(rows, {}, [{"name": "teacher-pytorch-compile", "reason": "torch.compile failed: no compiler"}])
    assert lines == ["teacher-onnx is slower than its PyTorch source teacher-pytorch at batch 32, sequence 128: p50 "
                     "759.00 ms against 612.00 ms",
                     "teacher-pytorch-compile not measured: torch.compile failed: no compiler"]
    # export's own record of a chosen graph slower than PyTorch becomes a note too
    choice = {"chosen": "torchscript+eager", "shipped_ms": {"batch_1": 5.0, "batch_32": 90.0},
              "pytorch_ms": {"batch_1": 8.0, "batch_32": 80.0}, "slower_than_pytorch": ["batch_32"]}
    assert notes(rows[2:], {"student": {"choice": choice}}, []) == [
        "export of the student: the fastest ONNX graph (torchscript+eager) is slower than PyTorch at batch 32 when "
        "export timed it: 90.00 ms against 80.00 ms; it is kept, the pipeline needs ONNX"]
    assert notes(rows[2:], {}, []) == []


def test_report_renders_speedups_notes_and_the_workload_table():
    from compresskit.reporting.render import render_html, render_markdown

    rows = [_row("teacher-pytorch", "teacher", "pytorch", {1: 28.0, 32: 612.0}, b1s256=40.0, b32s256=1500.0),
            _row("teacher-onnx", "teacher", "onnx", {1: 16.5, 32: 759.0}, b1s256=30.0, b32s256=1400.0),
            _row("student-onnx", "student", "onnx", {1: 2.0, 32: 100.0}, b1s256=3.0, b32s256=150.0)]
    report = {"run_name": "r", "task": "text-classification", "variants": rows, "speedups": speedups(rows),
              "notes": notes(rows, {}, [])}
    md = render_markdown(report)
    assert "## Speed-ups" in md and "8.25× the fastest teacher form (teacher-onnx, 16.50 ms)" in md
    assert "## Notes" in md and "teacher-onnx is slower than its PyTorch source teacher-pytorch at batch 32" in md
    assert "## Workloads" in md and md.count("| teacher-onnx | ") == 5  # 4 cells + the variant table's row
    html = render_html(report)
    assert "<h2>Workloads</h2>" in html and "p50 latency against batch size per sequence length" in html


def test_batch_search_stops_at_out_of_memory():
    arrays = {"input_ids": np.ones((3, 8), dtype=np.int64)}
    freed = []

    def run(batch: dict) -> None:  # a runner whose device holds 40 inputs
        if len(batch["input_ids"]) > 40:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    found = max_batch_before_oom(run, arrays, 4, after_oom=lambda: freed.append(True))
    assert found == {"batch": 32, "out_of_memory": True, "limit": 65536, "sequence_length": 8} and freed
    assert max_batch_before_oom(run, arrays, 1, limit=16)["out_of_memory"] is False

    def broken(batch: dict) -> None:
        raise ValueError("wrong input name")

    with pytest.raises(ValueError):
        max_batch_before_oom(broken, arrays, 1)


def test_bench_sweeps_cells_and_runs_or_skips_the_teacher_forms(tmp_path, tiny_classifier, tiny_onnx, tiny_data):
    cfg = BenchConfig(batch_sizes=(1, 2), sequence_length=32, seq_lengths=(16,), warmup=1, min_iterations=3,
                      min_seconds=0, rounds=1, threads=1, device="cpu")
    teacher = Variant("teacher-pytorch", "teacher", "pytorch", "fp32", tiny_classifier, 1000)
    variants = [teacher, *teacher_forms(teacher, ("bf16", "compile")),
                Variant("teacher-onnx", "teacher", "onnx", "fp32", tiny_onnx, 1000)]
    result = bench(cfg, variants, tiny_data, tmp_path / "bench").to_dict()
    rows = {r["name"]: r for r in result["variants"]}
    skipped = {s["name"]: s["reason"] for s in result["skipped"]}
    assert set(rows) | set(skipped) == {v.name for v in variants} and not set(rows) & set(skipped)
    assert result["seq_lengths"] == [16, 32] and result["reference_teacher"] == "teacher-pytorch"
    # a form is skipped exactly when this machine cannot run it, and says why
    bf16_reason = pytorch_form_unsupported("bf16", "eager", "cpu")
    assert ("teacher-pytorch-bf16" in skipped) == (bf16_reason is not None)
    if bf16_reason:
        assert skipped["teacher-pytorch-bf16"] == bf16_reason and "bf16" in bf16_reason
    else:  # measured like any variant, accuracy included, against the fp32 eager reference
        bf16 = rows["teacher-pytorch-bf16"]
        assert bf16["precision"] == "bf16" and bf16["model"] == "teacher" and 0 <= bf16["accuracy"] <= 1
        assert bf16["agreement_with_teacher"] is not None
    if pytorch_form_unsupported("fp32", "compile", "cpu"):
        assert "teacher-pytorch-compile" in skipped
    if "teacher-pytorch-compile" in rows:
        compiled = rows["teacher-pytorch-compile"]
        assert compiled["compile_seconds"] > 0 and compiled["agreement_with_teacher"] == 1.0
        assert all(c["first_call_s"] >= 0 for c in compiled["workloads"])
    else:
        assert skipped["teacher-pytorch-compile"]
    for r in rows.values():
        got = [(c["batch"], c["sequence_length"]) for c in r["workloads"]]
        assert got == [(1, 16), (2, 16), (1, 32), (2, 32)]  # 2 × 2 cells, smallest first
        for c in r["workloads"]:
            assert 0 < c["latency_ms"]["p50"] <= c["latency_ms"]["p90"] and c["latency_ms"]["mean"] > 0
            assert c["throughput_per_s"] > 0 and c["peak_rss_mb"] > 10 and c["peak_gpu_mb"] is None
        # the main length's cells are the batch keys the report's table and the gates read
        assert set(r["latency_ms"]) == {"batch_1", "batch_2"}
        main = {c["batch"]: c["latency_ms"]["p50"] for c in r["workloads"] if c["sequence_length"] == 32}
        assert r["latency_ms"]["batch_2"]["p50"] == main[2]
        assert r["peak_rss_mb"] >= max(c["peak_rss_mb"] for c in r["workloads"])
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["skipped"] == result["skipped"]
