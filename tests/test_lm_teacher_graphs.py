"""The teacher's quantize-only arms (``--teacher-graphs``): its fp32 decoder graph, verified against the teacher in
PyTorch, and its int8 graph, judged against that fp32 graph, built as the student's are and measured by the bench.

One causal-LM run through the real CLI on a tiny random Llama (the student's own quantized graphs and the teacher's
builder-default int4 graph left out to keep it short); the other tests work on copies of its folder."""

import json
import math
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import cli
from lm_models import save_lm, tiny_llama

from compresskit.reporting.report import validate_report

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album", "chip", "bill"]
FAST = ["--max-steps", "2", "--lm-batch-size", "2", "--lm-max-length", "48", "--max-new-tokens", "4",
        "--decode-tokens", "4", "--lm-test-prompts", "3", "--lm-heldout-texts", "3", "--ttft-prompt-lengths", "16",
        "--perplexity-window", "64", "--lm-repeats", "1", "--rounds", "1", "--verify-prompts", "2", "--verify-steps", "4",
        "--lm-export-candidates", "genai", "--lm-quantize", "none", "--device", "cpu"]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    # head size 16: ONNX Runtime's CPU attention kernel needs a multiple of 16
    return save_lm(tmp_path_factory.mktemp("lm") / "teacher", tiny_llama(layers=2, hidden=64))


@pytest.fixture(scope="module")
def prompts(tmp_path_factory):
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"write about the {WORDS[i % 10]} and the {WORDS[i * 3 % 10]}"})
                            + "\n" for i in range(16)))
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory, teacher, prompts):
    """The run folder and the console output of one run with the teacher's fp32 and int8 graphs."""
    root = tmp_path_factory.mktemp("teacher-graphs")
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(prompts), "--output-root",
               str(root), "--run-name", "lm", "--teacher-graphs", "fp32,int8", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "lm", proc.stdout + proc.stderr


def _stage_context(folder: Path, teacher: Path, teacher_graphs: tuple[str, ...]) -> SimpleNamespace:
    """What the causal-LM export and quantize stages read of a ``StageContext``, for the run in ``folder``: the
    run's own quantize settings (no student precision) with ``teacher_graphs``. The stages reuse every output whose
    record is whole, whatever the settings."""
    from compresskit.run import RunLayout
    from compresskit.tasks.causal_lm.options import LMConfig
    from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig

    settings = LMConfig(quantize=LMQuantizeConfig(precisions=(), teacher_graphs=teacher_graphs))
    return SimpleNamespace(cfg=SimpleNamespace(settings=settings), found=SimpleNamespace(teacher_dir=teacher),
                           layout=RunLayout(folder), cache=folder.parent / ".cache", resumed=True)


def _copy_without_teacher_graphs(run_dir: Path, to: Path) -> Path:
    shutil.copytree(run_dir, to)
    for name in ("teacher", "teacher-int8"):
        shutil.rmtree(to / "onnx" / name)
    return to


def test_the_teachers_fp32_and_int8_graphs_are_verified_and_measured(run, teacher):
    folder, console = run
    export = json.loads((folder / "onnx" / "teacher" / "export.json").read_text())
    assert export["verification"]["passed"] and export["parity"]["model"] == "teacher-onnx"
    assert export["parity"]["reference"] == "teacher-pytorch"
    assert Path(export["inputs"]["model"]).resolve() == teacher.resolve()
    quant = json.loads((folder / "onnx" / "teacher-int8" / "quantize.json").read_text())
    assert quant["precision"] == "int8" and quant["inputs"]["fp32"] == str(folder / "onnx" / "teacher")
    assert quant["parity"]["model"] == "teacher-onnx-int8" and quant["parity"]["reference"] == "teacher-onnx"
    assert not (folder / "onnx" / "teacher-int4").exists() and not (folder / "onnx" / "student-int8").exists()
    flat = " ".join(console.split())  # the console wraps long lines
    assert "teacher fp32: genai: verified" in flat and "teacher fp32: chosen: genai" in flat
    assert "teacher int8: agreement" in flat and "made onnx/teacher/" in flat and "made onnx/teacher-int8/" in flat

    bench = [v["name"] for v in json.loads((folder / "bench" / "bench.json").read_text())["variants"]]
    assert bench[:3] == ["teacher-pytorch", "teacher-onnx", "teacher-onnx-int8"]
    report = json.loads((folder / "report.json").read_text())
    assert validate_report(report) == []
    rows = {v["name"]: v for v in report["variants"]}
    for name, precision in (("teacher-onnx", "fp32"), ("teacher-onnx-int8", "int8")):
        row = rows[name]
        assert (row["model"], row["format"], row["precision"]) == ("teacher", "onnx", precision)
        assert math.isfinite(row["quality"]["perplexity"]) and row["generation"]["decode_tokens_per_s"] > 0
    # the fp32 graph computes what the teacher computes; agreement is measured against the teacher in PyTorch
    assert rows["teacher-onnx"]["quality"]["perplexity"] == pytest.approx(
        rows["teacher-pytorch"]["quality"]["perplexity"], rel=1e-3)
    assert report["speedups"]["reference"] == "teacher-pytorch"
    checked = {c["model"]: c for c in report["verification"]}
    assert checked["teacher-onnx"]["passed"] and checked["teacher-onnx-int8"]["reference"] == "teacher-onnx"
    assert report["exports"]["teacher"] == {"chosen": "genai"} and report["exports"]["teacher-int8"]["mode"] == "int8"
    assert "**teacher:** genai export, verified against PyTorch" in (folder / "report.md").read_text()


def test_teacher_graphs_none_builds_no_teacher_graph(run, teacher, tmp_path):
    from compresskit.tasks.causal_lm.task import _export_stage, _quantize_stage, lm_variants

    folder = _copy_without_teacher_graphs(run[0], tmp_path / "lm")
    ctx = _stage_context(folder, teacher, ())
    lines = _export_stage(ctx) + _quantize_stage(ctx)
    assert "reused onnx/student/ " in " ".join(lines) + " " and not any("teacher" in line for line in lines)
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["student"]
    assert [v.name for v in lm_variants(ctx.layout, teacher) if v.model == "teacher"] == ["teacher-pytorch"]


def test_a_teacher_graph_that_fails_verification_is_that_arms_failure(run, teacher, tmp_path, monkeypatch):
    """The run goes on: the student's graph is kept, the teacher's int8 graph is skipped with a line. (export_lm's
    own refusal of a graph that does not match is tests/test_lm_export.py's; here it is faked, to cost no build.)"""
    from compresskit.artifacts import VerificationError
    from compresskit.tasks.causal_lm import export
    from compresskit.tasks.causal_lm.task import _export_stage, _quantize_stage

    def no_match(cfg, model_dir, *args, **kwargs):
        raise VerificationError(f"no decoder graph of {model_dir} matches PyTorch (genai: max |Δ| 1 > 1e-4)")

    monkeypatch.setattr(export, "export_lm", no_match)
    folder = _copy_without_teacher_graphs(run[0], tmp_path / "lm")
    ctx = _stage_context(folder, teacher, ("fp32", "int8"))
    lines = _export_stage(ctx) + _quantize_stage(ctx)
    used = ctx.layout.recorded_teacher()  # the teacher the run's stages use, as the teacher stage recorded it
    assert f"teacher fp32: not built: no decoder graph of {used} matches PyTorch (genai: max |Δ| 1 > 1e-4)" in lines
    assert "reused onnx/student/ (" in " ".join(lines)
    assert "teacher int8: not built: the teacher's fp32 graph (onnx/teacher) was not built" in lines
    assert sorted(p.name for p in (folder / "onnx").iterdir()) == ["student"]


def test_teacher_graphs_flag_and_its_refusals(teacher, prompts, tmp_path):
    from compresskit.artifacts import UserError
    from compresskit.cli.options import OPTIONS
    from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig

    assert OPTIONS["teacher_graphs"].default == ",".join(LMQuantizeConfig().teacher_graphs) == "fp32,int8,int4"
    assert LMQuantizeConfig(teacher_int4=False).teacher_graphs == ("fp32", "int8")  # the former setting's meaning
    with pytest.raises(UserError, match="^--teacher-graphs int8 is judged against the teacher's fp32 graph"):
        LMQuantizeConfig(teacher_graphs=("int8", "int4"))
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(prompts), "--output-root", str(out),
               "--teacher-graphs", "fp32,fp16", *FAST)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: --teacher-graphs must name some of fp32, int8, int4 or none, got fp32,fp16"
    assert not out.exists()
