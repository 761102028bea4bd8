"""The real bundled teacher and BBC News through the whole CLI, on a small subsample. Run with ``-m slow``."""

import json
import subprocess
import sys

import pytest

from compresskit.report import validate_report


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
