"""Adding a task family touches its own package and the registry only: a toy family (tests/toy_family.py, a few
lines) registered by patching ``compresskit.tasks.families`` runs through the shared core end to end: preflight,
run folder and identity, its stages, the benchmark harness (its worker in fresh processes, in rounds), the report
with its columns, header line and section, the gates reading its fields, ``bench --run-dir``'s path, and compare."""

import json
from pathlib import Path

import pytest
from rich.console import Console
from toy_family import TOY, ToySettings

import compresskit.tasks
from compresskit.gates import GateConfig
from compresskit.models import LoadOptions
from compresskit.pipeline import GATE_EXIT, PipelineConfig, report_and_gates, run_pipeline
from compresskit.reporting.compare import compare_reports
from compresskit.reporting.report import validate_report
from compresskit.run import RunLayout
from compresskit.tasks import task_of_run
from compresskit.training import FinetuneConfig


@pytest.fixture
def toy(monkeypatch):
    real = compresskit.tasks.families()
    monkeypatch.setattr(compresskit.tasks, "families", lambda: {**real, TOY.name: TOY})
    # the harness starts the family's worker as `python -m toy_family`: it must find this folder
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).parent))
    return TOY


def config(rounds: int = 2) -> PipelineConfig:
    return PipelineConfig(teacher=TOY.default_teacher, task=TOY.name, family=TOY.name, finetune_mode="never",
                          finetune=FinetuneConfig(), load=LoadOptions(), settings=ToySettings(rounds=rounds))


def test_a_toy_family_runs_through_the_core_end_to_end(tmp_path, toy):
    console = Console(stderr=True)
    # the student reads only the last digit, which decides parity: it keeps the teacher's accuracy
    code = run_pipeline(config(), tmp_path, None, False, GateConfig(max_accuracy_drop=0.0), console)
    assert code == 0
    run = tmp_path / "toy"  # the family named the run folder
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "parity-toy" and validate_report(report) == []
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["student-rule"]["accuracy"] == 1.0 and len(rows["student-rule"]["latency_rounds_ms"]["batch_1"]) == 2
    assert json.loads((run / "run.json").read_text())["task"] == "parity-toy"
    markdown = (run / "report.md").read_text()
    assert "accuracy (%)" in markdown and "**Rule:** x % 2" in markdown and "## Rules" in markdown
    assert report["gates"][0]["name"] == "max-accuracy-drop" and report["gates"][0]["passed"]
    # the gates read the family's fields: a perplexity gate on a family without perplexity fails, and says why
    assert report_and_gates(run, GateConfig(max_perplexity_ratio=2.0), console) == GATE_EXIT
    failed = json.loads((run / "report.json").read_text())["gates"][0]
    assert not failed["passed"] and "measures no perplexity" in failed["detail"]
    # `compresskit bench --run-dir` asks the run folder for its family, then the family benchmarks it
    assert task_of_run(run) is toy
    toy.bench_run(ToySettings(rounds=3), RunLayout(run))
    again = json.loads((run / "bench" / "bench.json").read_text())
    assert len(again["variants"][0]["latency_rounds_ms"]["batch_1"]) == 3
    # compare sets the family's metrics side by side
    result = compare_reports(report, json.loads((run / "report.json").read_text()))
    assert result["task"] == "parity-toy" and result["deployed"]["metrics"]["accuracy"]["change"] == 0.0


def test_the_same_toy_run_resumes_and_another_is_refused(tmp_path, toy):
    console = Console(stderr=True)
    assert run_pipeline(config(), tmp_path, "r", False, GateConfig(), console) == 0
    assert run_pipeline(config(), tmp_path, "r", False, GateConfig(), console) == 0  # the family's identity: same run
    from compresskit.artifacts import UserError

    with pytest.raises(UserError, match="holds another run"):
        run_pipeline(config(rounds=1), tmp_path, "r", False, GateConfig(), console)
