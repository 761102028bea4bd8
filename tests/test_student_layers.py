"""``--student-layers auto``, the default: the student's depth and layers follow the teacher's depth."""

import json

import pytest
from conftest import TOPICS, cli, save_tiny_bert

from compresskit.artifacts import UserError
from compresskit.tasks.classification.models import auto_student_layers, parse_layers, student_layers_rule


@pytest.mark.parametrize("n, layers", [(1, [0]), (2, [0]), (3, [0]), (4, [0, 3]), (6, [0, 5]), (7, [0, 3, 6]),
                                       (12, [0, 4, 7, 11]), (24, [0, 3, 7, 10, 13, 16, 20, 23])])
def test_auto_keeps_a_third_of_the_layers_from_first_to_last(n, layers):
    assert auto_student_layers(n) == layers


def test_auto_for_every_depth():
    for n in range(1, 101):
        layers = auto_student_layers(n)
        assert len(layers) == -(-n // 3)  # ceil(n/3)
        assert layers == sorted(set(layers)) and layers[0] == 0
        assert layers[-1] == (n - 1 if len(layers) > 1 else 0)
        gaps = [b - a for a, b in zip(layers, layers[1:])]
        assert not gaps or max(gaps) - min(gaps) <= 1  # spread evenly
    assert len(auto_student_layers(30)) == 10


def test_auto_refuses_a_teacher_without_layers():
    with pytest.raises(UserError, match="--student-layers auto"):
        auto_student_layers(0)


def test_the_rule_says_how_the_layers_were_chosen():
    assert student_layers_rule("auto", 6) == "auto: ceil(6/3) = 2 layers spread from first to last"
    assert student_layers_rule("auto", 2) == "auto: ceil(2/3) = 1 layer: the first"
    assert student_layers_rule("0,3", 6) == "given: --student-layers 0,3"
    assert parse_layers(" Auto ", 12) == [0, 4, 7, 11]


# The 12-layer case is slow (36 s on 2 cores) and the rule it checks is covered above for 12 layers: the 2-layer
# run keeps the pipeline path in the default suite.
@pytest.mark.parametrize("depth, want", [(2, [0]), pytest.param(12, [0, 4, 7, 11], marks=pytest.mark.slow)])
def test_distill_and_export_picks_the_layers_from_the_teacher_by_default(tmp_path, tiny_csv, depth, want):
    """No --student-layers: a 2-layer and a 12-layer teacher both get a student (the old default, 0,5, fitted
    neither). A classifier teacher skips fine-tuning; one export candidate and no int8 keep it quick."""
    teacher = save_tiny_bert(tmp_path / f"teacher-{depth}", layers=depth, classifier_labels=sorted(TOPICS))
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(tiny_csv), "--output-root",
               str(tmp_path / "runs"), "--run-name", "auto", "--epochs", "1", "--max-length", "32",
               "--sequence-length", "32", "--batch-sizes", "1", "--iterations", "2", "--min-seconds", "0",
               "--rounds", "1",
               "--threads", "1", "--device", "cpu", "--quantize", "none", "--exporter", "torchscript",
               "--attention", "eager", "--cls-only", "off", "--skip-layer-norm", "fused")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "auto"
    record = json.loads((run / "student" / "distill.json").read_text())
    assert record["student_layers"] == want and record["layers"] == len(want)
    assert record["student_layers_rule"] == student_layers_rule("auto", depth)
    assert record["config"]["student_layers"] == "auto"
    report = json.loads((run / "report.json").read_text())
    assert report["teacher"]["layers"] == depth and report["student"]["layers"] == len(want)
    assert 'student-layers = "auto"' in (run / "config.toml").read_text()
