"""The quantize-only arm of text classification: the teacher's own ONNX graph through the student's quantization and
verification (``onnx/teacher-quantized``, variant ``teacher-onnx-<precision>``), so a report shows what distillation
buys over quantizing the teacher.

A run folder is put together from the session's tiny exported classifier (as both teacher and student graph: the
arm's plumbing is what is tested, not the student's quality) and the quantize stage, benchmark and report run on it
in process; no second distill-and-export run (tests/test_cli.py's run checks the same rows through the CLI)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import outlier_model

from compresskit.artifacts import VerificationError, write_json
from compresskit.run import RunLayout, claim_run_dir, record_output
from compresskit.tasks.classification.bench import BenchConfig, bench, discover_variants
from compresskit.tasks.classification.quantize import QuantizeConfig
from compresskit.tasks.classification.task import TEXT_CLASSIFICATION, _quantize_stage
from compresskit.tasks.protocol import StageContext


def _layout(root: Path, tiny_onnx: Path, tiny_data: Path, teacher_onnx: Path | None = None) -> RunLayout:
    """A run folder as the export stage leaves it: data/, onnx/teacher/ and onnx/student/, recorded in run.json."""
    layout = RunLayout(root)
    claim_run_dir(layout, {"test": "teacher-quantized"}, False, TEXT_CLASSIFICATION.name)
    shutil.copytree(tiny_data, layout.data)
    shutil.copytree(teacher_onnx or tiny_onnx, layout.onnx("teacher"))
    shutil.copytree(tiny_onnx, layout.onnx("student"))
    for folder in (layout.data, layout.onnx("teacher"), layout.onnx("student")):
        record_output(layout, folder)
    return layout


def _stage(layout: RunLayout, cfg: QuantizeConfig) -> list[str]:
    """The quantize stage as distill-and-export runs it (it reads only the quantize settings of the run's config)."""
    run_cfg = SimpleNamespace(settings=SimpleNamespace(quantize=cfg))
    return _quantize_stage(StageContext(run_cfg, None, layout, layout.root / ".cache", False))


@pytest.fixture(scope="module")
def quantized_run(tmp_path_factory, tiny_onnx, tiny_data):
    """The quantize stage (dynamic int8), a one-round benchmark of every variant and the report, on one folder."""
    from compresskit.reporting.report import build_report

    layout = _layout(tmp_path_factory.mktemp("tq") / "run", tiny_onnx, tiny_data)
    lines = _stage(layout, QuantizeConfig(max_length=32))
    cfg = BenchConfig(batch_sizes=(1,), sequence_length=16, warmup=1, min_iterations=3, min_seconds=0.0, rounds=1,
                      threads=1, teacher_forms=())
    bench(cfg, discover_variants(layout), layout.data, layout.bench)
    return layout, lines, build_report(layout.root, TEXT_CLASSIFICATION).to_dict()


def test_the_teacher_graph_is_quantized_and_verified_like_the_students(quantized_run):
    layout, lines, _ = quantized_run
    for name in ("teacher", "student"):
        record = json.loads((layout.onnx(f"{name}-quantized") / "quantize.json").read_text())
        assert record["mode"] == "dynamic-int8" and record["parity"]["passed"]
        assert record["parity"]["model"] == f"{name}-onnx-int8" and record["parity"]["reference"] == f"{name}-onnx"
        assert record["inputs"]["onnx"] == str(layout.onnx(name) / "model.onnx")
        assert (layout.onnx(f"{name}-quantized") / "model.onnx").is_file()
    assert [line.split(":")[0] for line in lines if not line.startswith(("made ", "reused "))] == [
        "student", "student", "teacher", "teacher"]
    assert "made onnx/teacher-quantized/" in lines
    stage = json.loads(layout.record.read_text())["stages"]["quantize"]
    assert stage == {"path": str(layout.onnx("student-quantized")), "teacher": str(layout.onnx("teacher-quantized"))}
    # a resumed run reuses it like every finished output
    assert "reused onnx/teacher-quantized/" in " ".join(_stage(layout, QuantizeConfig(max_length=32)))


def test_the_teacher_arm_follows_teacher_onnx_among_the_variants(quantized_run):
    layout, _, _ = quantized_run
    found = {v.name: v for v in discover_variants(layout)}
    assert list(found) == ["teacher-onnx", "teacher-onnx-int8", "student-onnx", "student-onnx-int8"]
    arm = found["teacher-onnx-int8"]
    assert (arm.model, arm.format, arm.precision, arm.path) == ("teacher", "onnx", "int8", layout.onnx("teacher-quantized"))


def test_the_report_has_a_teacher_int8_row_its_check_and_its_graph(quantized_run):
    from compresskit.reporting.report import validate_report

    _, _, report = quantized_run
    assert validate_report(report) == []
    rows = {v["name"]: v for v in report["variants"]}
    row = rows["teacher-onnx-int8"]
    assert (row["model"], row["format"], row["precision"]) == ("teacher", "onnx", "int8")
    assert 0 <= row["accuracy"] <= 1 and row["latency_ms"]["batch_1"]["p50"] > 0
    assert isinstance(row["agreement_with_teacher"], float)  # against teacher-onnx, the reference here
    checks = {c["model"]: c for c in report["verification"]}
    assert checks["teacher-onnx-int8"]["reference"] == "teacher-onnx" and checks["teacher-onnx-int8"]["passed"]
    assert list(report["exports"]) == ["teacher", "teacher-quantized", "student", "student-quantized"]
    assert report["exports"]["teacher-quantized"] == {"mode": "dynamic-int8", "kept_fp32": []}
    # the deployed student is still the student's quantized graph, not the teacher's
    from compresskit.gates import deployed_student

    assert deployed_student(report["variants"])["name"] == "student-onnx-int8"


def test_a_teacher_that_breaks_the_budget_is_a_line_not_a_failed_run(quantized_run, tmp_path, tiny_onnx):
    """The teacher's graph made again as one per-tensor int8 cannot quantize, without the fallback: the student's
    quantized graph is reused, the teacher arm is dropped (the earlier one with it) and the run goes on."""
    layout = RunLayout(tmp_path / "run")
    shutil.copytree(quantized_run[0].root, layout.root)
    shutil.rmtree(layout.onnx("teacher"))
    outlier_model(tiny_onnx, layout.onnx("teacher"))
    record_output(layout, layout.onnx("teacher"))
    lines = _stage(layout, QuantizeConfig(max_length=32, fallback=False))
    assert "reused onnx/student-quantized/" in " ".join(lines)
    failed = [line for line in lines if line.startswith("teacher: not quantized: ")]
    assert len(failed) == 1 and "teacher-onnx-int8 does not match teacher-onnx" in failed[0]
    assert "label agreement" in failed[0] and "\n" not in failed[0]
    assert not layout.onnx("teacher-quantized").exists()
    stage = json.loads(layout.record.read_text())["stages"]["quantize"]
    assert stage["teacher"] is None and stage["teacher_not_quantized"] == failed[0].removeprefix(
        "teacher: not quantized: ")
    assert "teacher-onnx-int8" not in [v.name for v in discover_variants(layout)]


def test_both_graphs_get_the_same_settings_and_only_the_students_failure_stops_the_run(tmp_path, tiny_onnx,
                                                                                       tiny_data, monkeypatch):
    """``--quantize auto`` (or any mode) reaches both calls as one config; a VerificationError of the student's
    graph still fails the run."""
    import compresskit.tasks.classification.quantize as quantize_module

    calls, fails = [], set()

    def fake(cfg, onnx_dir, data_dir, out, name):
        calls.append((cfg, Path(onnx_dir).name, name))
        if name in fails:
            raise VerificationError(f"{name}-onnx-int4 does not match {name}-onnx: made up")
        parity = {"model": f"{name}-onnx-int4", "reference": f"{name}-onnx", "label_agreement": 1.0,
                  "accuracy_reference": 1.0, "accuracy_model": 1.0, "passed": True}
        write_json(Path(out) / "quantize.json", {"mode": "int4", "parity": parity})
        (Path(out) / "model.onnx").write_bytes(b"")  # what discover_variants looks for

    monkeypatch.setattr(quantize_module, "quantize", fake)
    cfg = QuantizeConfig(mode="auto", max_length=32)
    layout = _layout(tmp_path / "run", tiny_onnx, tiny_data)
    lines = _stage(layout, cfg)
    assert [(c is cfg, folder, name) for c, folder, name in calls] == [(True, "student", "student"),
                                                                       (True, "teacher", "teacher")]
    assert "teacher: mode int4" in lines and "student: mode int4" in lines
    assert [v.name for v in discover_variants(layout)][:2] == ["teacher-onnx", "teacher-onnx-int4"]
    fails.add("student")
    with pytest.raises(VerificationError, match="student-onnx-int4"):
        _stage(_layout(tmp_path / "other", tiny_onnx, tiny_data), cfg)
