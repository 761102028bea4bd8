"""The CLI as a user runs it: a real subprocess on a tiny model and tiny data."""

import json
import shutil
import subprocess

import pytest

from compresskit.report import validate_report
from conftest import cli, save_tiny_bert

FAST = ["--teacher-epochs", "8", "--teacher-learning-rate", "2e-3", "--epochs", "8", "--learning-rate", "2e-3",
        "--student-layers", "1", "--max-length", "32", "--sequence-length", "32", "--batch-sizes", "1,4",
        "--iterations", "3", "--min-seconds", "0", "--threads", "1", "--device", "cpu"]


def assert_one_line_error(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    error = " ".join(lines[-3:])  # rich may wrap one long message over terminal-width lines
    assert "error:" in error
    for n in needles:
        assert n in error, error


def test_an_unknown_option_is_a_usage_error_not_an_internal_one(tmp_path):
    """Usage errors come from typer's click (vendored in new typer releases): exit 2 with click's message."""
    proc = cli("quantize", "--onnx", str(tmp_path), "--data", str(tmp_path), "--out", str(tmp_path / "q"), "--bogus")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("Error: No such option: --bogus")
    assert not (tmp_path / "q").exists()


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_encoder, tiny_csv):
    """One full distill-and-export run with a gate that must fail (speed-up of a million)."""
    root = tmp_path_factory.mktemp("runs")
    summary = root / "summary.md"
    summary.write_text("earlier step\n")
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv),
               "--output-root", str(root), "--run-name", "tiny", "--min-speedup", "1000000", *FAST,
               env={"GITHUB_STEP_SUMMARY": str(summary)})
    return root, proc, summary


def test_pipeline_writes_a_valid_report_and_fails_the_gate(run):
    root, proc, summary = run
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "min-speedup" in proc.stderr and "quality gate(s) failed" in proc.stderr
    report = json.loads((root / "tiny" / "report.json").read_text())
    assert validate_report(report) == []
    names = [v["name"] for v in report["variants"]]
    assert names == ["teacher-pytorch", "teacher-onnx", "student-pytorch", "student-onnx", "student-onnx-int8"]
    gate = report["gates"][0]
    assert gate["name"] == "min-speedup" and gate["passed"] is False and gate["limit"] == 1000000
    assert report["teacher"]["layers"] == 2 and report["student"]["layers"] == 1
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert all(v["passed"] for v in report["verification"]) and len(report["verification"]) == 3
    assert report["config"]["distill"]["temperature"] == 2.0
    md = (root / "tiny" / "report.md").read_text()
    assert "student-onnx-int8" in md and "❌" in md
    assert (root / "tiny" / "report.html").is_file()
    assert summary.read_text().startswith("earlier step\n") and "student-onnx-int8" in summary.read_text()


def test_teacher_finetuning_is_cached_and_run_folder_is_complete(run):
    root, _, _ = run
    cached = [p for p in (root / ".cache").glob("teacher-*") if (p / "finetune.json").is_file()]
    outputs = list((root / ".cache").glob("teacher-outputs-*"))
    assert len(outputs) == 1 and sorted(p.name for p in outputs[0].glob("*.npy")) == ["logits.npy"]
    assert len(cached) == 1 and (cached[0] / "finetune.json").is_file()
    run_dir = root / "tiny"
    for p in ("run.json", "data/data.json", "teacher/finetune.json", "student/distill.json",
              "onnx/teacher/model.onnx", "onnx/student/model.onnx", "onnx/student-quantized/model.onnx",
              "bench/bench.json"):
        assert (run_dir / p).is_file(), p
    assert not [p for p in run_dir.rglob("*") if ".tmp" in p.name]


def test_report_subcommand_applies_gates_again(run):
    root, _, _ = run
    ok = cli("report", "--run-dir", str(root / "tiny"), "--max-accuracy-drop", "1.0")
    assert ok.returncode == 0, ok.stderr[-2000:]
    report = json.loads((root / "tiny" / "report.json").read_text())
    assert [g["name"] for g in report["gates"]] == ["max-accuracy-drop"] and report["gates"][0]["passed"]


def test_same_folder_with_other_settings_is_refused(run, tiny_encoder, tiny_csv):
    root, _, _ = run
    before = sorted(p.name for p in (root / "tiny").iterdir())
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv),
               "--output-root", str(root), "--run-name", "tiny", *FAST, "--temperature", "4")
    assert_one_line_error(proc, 2, "holds another run", "--overwrite")
    assert sorted(p.name for p in (root / "tiny").iterdir()) == before


@pytest.mark.parametrize("args, needles", [
    (["--teacher", "/nonexistent/teacher"], ["does not exist"]),
    (["--dataset", "/nonexistent/data.csv"], ["does not exist"]),
    (["--text-column", "body"], ["no column 'body'", "--text-column"]),
    (["--temperature", "0"], ["--temperature must be > 0"]),
    (["--alpha", "1.5"], ["--alpha must be between 0 and 1"]),
    (["--student-layers", "0,9"], ["--student-layers 0,9: the teacher has layers 0..1"]),
    (["--quantize", "int3"], ["--quantize"]),
    (["--skip-layer-norm", "off"], ["--skip-layer-norm must be one of auto, fused, unfused"]),
    (["--cls-only", "maybe"], ["--cls-only must be one of auto, on, off"]),
    (["--external-data", "sometimes"], ["--external-data must be one of auto, always, never"]),
])
def test_bad_input_gets_one_line_and_leaves_nothing(tmp_path, tiny_encoder, tiny_csv, args, needles):
    base = {"--teacher": str(tiny_encoder), "--dataset": str(tiny_csv)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    flat = [x for kv in base.items() for x in kv]
    proc = cli("distill-and-export", *FAST, *flat, "--output-root", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, *needles)
    assert not (tmp_path / "out").exists()


def test_teacher_head_that_cannot_hold_the_labels(tmp_path, tiny_csv):
    teacher = save_tiny_bert(tmp_path / "two-class", classifier_labels=["money", "sport"])
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(tiny_csv),
               "--output-root", str(tmp_path / "out"), *FAST)
    assert_one_line_error(proc, 2, "cannot predict label(s) tech")
    assert not (tmp_path / "out").exists()


def test_pickle_teacher_needs_explicit_permission(tmp_path, tiny_classifier, tiny_csv):
    import torch
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "pickled"
    shutil.copytree(tiny_classifier, folder)
    state = AutoModelForSequenceClassification.from_pretrained(folder).state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    proc = cli("distill-and-export", "--teacher", str(folder), "--dataset", str(tiny_csv),
               "--output-root", str(tmp_path / "out"), *FAST)
    assert_one_line_error(proc, 2, "--allow-pickle")
    assert not (tmp_path / "out").exists()


def test_stage_subcommands_chain_through_folders(tmp_path, tiny_classifier, tiny_csv):
    d, s, o = tmp_path / "data", tmp_path / "student", tmp_path / "onnx"
    assert cli("prepare-data", "--dataset", str(tiny_csv), "--out", str(d)).returncode == 0
    p = cli("distill", "--teacher", str(tiny_classifier), "--data", str(d), "--out", str(s), "--student-layers", "0",
            "--epochs", "1", "--max-length", "32", "--device", "cpu")
    assert p.returncode == 0, p.stderr[-2000:]
    p = cli("export", "--model", str(s), "--data", str(d), "--out", str(o), "--max-length", "32")
    assert p.returncode == 0, p.stderr[-2000:]
    assert (o / "model.onnx").is_file()
    p = cli("quantize", "--onnx", str(o), "--data", str(d), "--out", str(tmp_path / "q"), "--max-length", "32",
            "--quantize", "auto")
    assert p.returncode == 0, p.stderr[-2000:]
    record = json.loads((tmp_path / "q" / "quantize.json").read_text())
    assert {c["mode"] for c in record["candidates"]} == {"dynamic-int8", "static-int8", "int4"}
    p = cli("predict", str(tmp_path / "q"), "goal team match")
    assert p.returncode == 0 and p.stdout.split("\t")[0] in {"money", "sport", "tech"}, p.stderr[-2000:]
