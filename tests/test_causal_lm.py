"""The causal-LM task through the real CLI, on a tiny random Llama and a tiny prompt file."""

import json
import math

import pytest

from compresskit.tasks.causal_lm.bench import LMBenchConfig
from compresskit.reporting.report import validate_report
from conftest import cli
from lm_models import save_lm, tiny_llama

FAST = ["--max-steps", "4", "--lm-batch-size", "2", "--lm-max-length", "64", "--max-new-tokens", "6",
        "--decode-tokens", "8", "--lm-test-prompts", "4", "--device", "cpu", "--rounds", "1"]
WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album", "chip", "bill"]


@pytest.fixture(scope="module")
def llm_teacher(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("lm") / "teacher", tiny_llama(layers=3, hidden=64, max_positions=512))


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"write about the {WORDS[i % 10]} and the {WORDS[i * 3 % 10]}"})
                            + "\n" for i in range(24)))
    return path


def test_distill_and_export_runs_a_causal_lm_end_to_end(tmp_path, llm_teacher, prompt_file):
    # --task auto infers causal-lm from the teacher's config (LlamaForCausalLM)
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file),
               "--output-root", str(tmp_path / "runs"), "--run-name", "lm", *FAST, "--min-agreement", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "lm"
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "causal-lm" and validate_report(report) == []
    rows = {v["name"]: v for v in report["variants"]}
    assert set(rows) == {"teacher-pytorch", "teacher-onnx-int4", "student-pruned-pytorch", "student-pytorch",
                         "student-onnx", "student-onnx-int8", "student-onnx-int4"}
    assert rows["student-pruned-pytorch"]["model"] == "baseline"
    # the fp32 decoder graph was verified against PyTorch and computes what the student computes
    export = json.loads((run / "onnx" / "student" / "export.json").read_text())
    assert export["verification"]["passed"] and export["chosen"] in ("genai", "torch")
    assert rows["student-onnx"]["quality"]["perplexity"] == pytest.approx(rows["student-pytorch"]["quality"]
                                                                          ["perplexity"], rel=1e-3)
    for name in ("student-onnx", "student-onnx-int8", "student-onnx-int4", "teacher-onnx-int4"):
        assert rows[name]["bandwidth"]["bytes_per_token"] > 0 and rows[name]["bandwidth"]["gb_per_s"] > 0
    quant = json.loads((run / "onnx" / "student-int4" / "quantize.json").read_text())
    assert quant["attempts"] and "agreement" in quant["chosen"]
    # the teacher agrees with itself; its answers are the reference of ROUGE-L against the teacher
    assert rows["teacher-pytorch"]["quality"]["rouge_l_vs_teacher"]["overall"] == pytest.approx(1.0)
    for row in rows.values():
        g = row["generation"]
        assert g["decode_tokens_per_s"] > 0 and math.isfinite(g["decode_tokens_per_s"])
    distill = json.loads((run / "student" / "distill.json").read_text())
    assert distill["task"] == "causal-lm" and distill["layers"] == 1  # auto: ceil(3/3) layers of 3
    assert distill["student_layers_rule"].startswith("block influence")
    assert len(distill["layer_importance"]) == 3
    # the pruned student keeps the same layers, untrained
    pruned = json.loads((run / "student-pruned" / "pruned.json").read_text())
    assert pruned["layers"] == distill["student_layers"]
    data = json.loads((run / "data" / "data.json").read_text())
    assert data["teacher_answers"] == data["sizes"]["train"] + data["sizes"]["validation"] + data["sizes"]["test"]
    gates = {g["name"]: g for g in report["gates"]}
    assert gates["min-agreement"]["passed"]
    # the stage commands work on a causal-LM run folder too: bench measures it again, report re-applies gates
    # (in two rounds: each variant's speed measured in a second process too, ONNX Runtime's and PyTorch's alike)
    proc = cli("bench", "--run-dir", str(run), "--device", "cpu", "--rounds", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in json.loads((run / "bench" / "bench.json").read_text())["variants"]:
        g = row["generation"]
        assert len(g["decode_rounds_tokens_per_s"]) == 2 and min(g["decode_rounds_tokens_per_s"]) > 0, row["name"]
        # the bench command's defaults: 3 repeats split over 2 rounds (2 a round) of 127 timed steps each
        assert g["decode_ms_per_token"]["iterations"] == 2 * 2 * (LMBenchConfig.decode_tokens - 1), row["name"]
    agreement = next(v for v in json.loads((run / "report.json").read_text())["variants"]
                     if v["name"] == "student-pytorch")["quality"]["top1_agreement"]
    proc = cli("report", "--run-dir", str(run), "--min-agreement", "1")
    assert (proc.returncode == 4) == (agreement < 1) and "min-agreement" in proc.stderr
    # a stage output damaged after the run (a cut file) is found and made again; the outputs before it are reused
    weights = max((run / "onnx" / "student-int4").iterdir(), key=lambda f: f.stat().st_size)
    whole = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(whole // 2)
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file),
               "--output-root", str(tmp_path / "runs"), "--run-name", "lm", *FAST, "--min-agreement", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()]
    notes = [ln for ln in lines if ln.startswith(("reused ", "made "))]
    made = [n for n in notes if n.startswith("made ")]
    assert [n.split()[1] for n in made] == ["onnx/student-int4/"], notes
    flat = "".join((proc.stdout + proc.stderr).split())  # the console wraps long lines
    assert f"madeonnx/student-int4/again:{weights}is{whole // 2:,}bytes,{whole:,}whenitwasmade" in flat
    assert {n.split()[1] for n in notes if n.startswith("reused ")} == {
        "data/", "student/", "onnx/student/", "onnx/student-int8/", "onnx/teacher-int4/"}
    assert weights.stat().st_size == whole
    # the pruned student is made with the distilled one: a cut pruned student makes both again
    pruned = run / "student-pruned" / "model.safetensors"
    with open(pruned, "r+b") as f:
        f.truncate(pruned.stat().st_size // 2)
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file),
               "--output-root", str(tmp_path / "runs"), "--run-name", "lm", *FAST, "--min-agreement", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    flat = "".join((proc.stdout + proc.stderr).split())
    assert f"madestudent-pruned/andstudent/again:{pruned}is" in flat and "reuseddata/" in flat
    assert json.loads((run / "student-pruned" / "pruned.json").read_text())["layers"] == distill["student_layers"]


def test_a_classifier_teacher_with_task_causal_lm_is_one_line(tmp_path, tiny_classifier, prompt_file):
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--task", "causal-lm", "--teacher", str(tiny_classifier), "--dataset",
               str(prompt_file), "--output-root", str(out), *FAST)
    assert proc.returncode == 2
    assert "not a causal language model" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("content, needle", [
    ("", "is empty"),
    ('{"prompt": "a"}\n{"text": "b"}\n', "line 2"),
    ('{"prompt": "a"}\nnot json\n', "line 2"),
])
def test_bad_prompt_files_are_one_line_and_write_nothing(tmp_path, llm_teacher, content, needle):
    data = tmp_path / "bad.jsonl"
    data.write_text(content)
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(data), "--output-root",
               str(out), *FAST)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (out / "bad-teacher-lm").exists()


def test_bad_rounds_on_a_causal_lm_run_is_one_line_and_writes_nothing(tmp_path, llm_teacher, prompt_file):
    # the causal-LM bench resolves --rounds itself (default 3), so its check is its own, not classification's
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file), "--output-root",
               str(out), *FAST, "--rounds", "0")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == "error: --rounds must be an integer from 1 to 50, got 0"
    assert not out.exists()


def test_a_prompt_longer_than_the_context_is_refused_naming_it(tmp_path, prompt_file):
    short = save_lm(tmp_path / "short", tiny_llama(layers=2, hidden=32, max_positions=16))
    proc = cli("distill-and-export", "--teacher", str(short), "--dataset", str(prompt_file), "--output-root",
               str(tmp_path / "runs"), *FAST)
    assert proc.returncode == 2
    assert "longer than the model's context" in proc.stderr and "Traceback" not in proc.stderr


def test_a_student_with_another_vocabulary_is_one_line_and_writes_nothing(tmp_path, llm_teacher, prompt_file):
    from lm_models import tiny_tokenizer

    other = save_lm(tmp_path / "other", tiny_llama(vocab_size=280, layers=1), tiny_tokenizer(280))
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file), "--student",
               str(other), "--output-root", str(out), *FAST)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "different tokenizer from the teacher" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() or not any(out.iterdir())


def test_finetune_teacher_always_trains_the_teacher_on_real_answers_first(tmp_path, llm_teacher):
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"which word is {WORDS[i % 10]}?", "response": WORDS[i % 10]})
                            + "\n" for i in range(24)))
    run = tmp_path / "runs" / "ft"
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(data), "--finetune-teacher",
               "always", "--teacher-epochs", "2", "--output-root", str(tmp_path / "runs"), "--run-name", "ft", *FAST,
               "--min-agreement", "0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stage = json.loads((run / "run.json").read_text())["stages"]["teacher"]
    assert stage["finetuned"] and stage["path"] == str(run / "teacher")
    record = json.loads((run / "teacher" / "finetune.json").read_text())
    assert record["train_examples"] > 0 and record["kinds"] == ["user"]
    assert record["best_validation_loss"] < record["validation_loss_before"]  # it learnt the answers
    # the student was distilled from, and is measured against, the fine-tuned teacher
    assert json.loads((run / "student" / "distill.json").read_text())["inputs"]["teacher"] == str(run / "teacher")
    report = json.loads((run / "report.json").read_text())
    assert next(v for v in report["variants"] if v["name"] == "teacher-pytorch")["path"] == str(run / "teacher")


def test_finetune_teacher_always_without_real_answers_is_one_line(tmp_path, llm_teacher, prompt_file):
    out = tmp_path / "runs"
    proc = cli("distill-and-export", "--teacher", str(llm_teacher), "--dataset", str(prompt_file),
               "--finetune-teacher", "always", "--output-root", str(out), *FAST)
    assert proc.returncode == 2 and "needs training prompts with real answers" in proc.stderr
    assert "Traceback" not in proc.stderr and (not out.exists() or not any(out.iterdir()))
