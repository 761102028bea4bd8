"""The causal-LM task through the real CLI, on a tiny random Llama and a tiny prompt file."""

import json
import math

import pytest
from conftest import cli
from lm_models import save_lm, tiny_llama

from compresskit.reporting.report import validate_report
from compresskit.tasks.causal_lm.bench import LMBenchConfig

# The teacher's int4 graph only: its fp32 and int8 arms (the default) are built by lm_run alone, which every other run
# here would otherwise build again at about 45 s each.
FAST = ["--max-steps", "4", "--lm-batch-size", "2", "--lm-max-length", "64", "--max-new-tokens", "6",
        "--decode-tokens", "8", "--lm-test-prompts", "4", "--device", "cpu", "--rounds", "1", "--teacher-graphs", "int4"]
DEFAULT_TEACHER_GRAPHS = ["--teacher-graphs", "fp32,int8,int4"]
WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album", "chip", "bill"]


@pytest.fixture(scope="module")
def llm_teacher(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("lm") / "teacher", tiny_llama(layers=3, hidden=64, max_positions=512))


def write_prompts(path):
    path.write_text("".join(json.dumps({"prompt": f"write about the {WORDS[i % 10]} and the {WORDS[i * 3 % 10]}"})
                            + "\n" for i in range(24)))
    return path


@pytest.fixture
def prompt_file(tmp_path):
    return write_prompts(tmp_path / "prompts.jsonl")


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory, llm_teacher):
    """One causal-LM run through the real CLI (--task auto infers causal-lm from the teacher's config), shared by
    the tests below; those that damage it come last."""
    root = tmp_path_factory.mktemp("lm-run")
    args = ("distill-and-export", "--teacher", str(llm_teacher), "--dataset",
            str(write_prompts(root / "prompts.jsonl")), "--output-root", str(root / "runs"), "--run-name", "lm", *FAST,
            *DEFAULT_TEACHER_GRAPHS)
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "runs" / "lm", args


def test_distill_and_export_runs_a_causal_lm_end_to_end(lm_run):
    run, _ = lm_run
    report = json.loads((run / "report.json").read_text())
    assert report["task"] == "causal-lm" and validate_report(report) == []
    assert json.loads((run / "run.json").read_text())["task"] == "causal-lm"
    rows = {v["name"]: v for v in report["variants"]}
    assert set(rows) == {"teacher-pytorch", "teacher-onnx", "teacher-onnx-int8", "teacher-onnx-int4",
                         "student-pruned-pytorch", "student-pytorch", "student-onnx", "student-onnx-int8",
                         "student-onnx-int4"}
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
    # the report's sections are the family's: how each decoder graph was built
    markdown = (run / "report.md").read_text()
    assert "## ONNX graphs" in markdown and f"**student:** {export['chosen']} export" in markdown

def test_the_causal_lm_report_decides_and_its_shipped_graph_generates_without_torch(lm_run, tmp_path):
    import subprocess
    import sys

    from compresskit.deploy import read_card, write_deploy
    from compresskit.tasks import get_task

    run, _ = lm_run
    report = json.loads((run / "report.json").read_text())
    d = report["decision"]
    assert d["budget"] == {"max_perplexity_ratio": 1.25} and d["workload"]["key"] == "decode"
    assert d["frontier"] and set(d["frontier"]) <= {v["name"] for v in report["variants"]}
    if d["chosen"] is not None:
        assert (run / "deploy" / "README.md").is_file()
    # ship the int4 student's graph whatever the budget chose, and answer with it on ONNX Runtime GenAI alone
    report["decision"] = {**d, "chosen": "student-onnx-int4"}
    out = tmp_path / "run"
    out.mkdir()
    shipped = write_deploy(out, report, get_task("causal-lm"))
    meta, body = read_card(shipped / "README.md")
    assert meta["pipeline_tag"] == "text-generation" and meta["library_name"] == "onnx"
    row = next(v for v in report["variants"] if v["name"] == "student-onnx-int4")
    values = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert values["perplexity"] == row["quality"]["perplexity"]
    code = ("import sys; sys.modules['torch'] = None\n"
            "from compresskit.cli import main\n"
            f"sys.argv = ['compresskit', 'generate', {str(shipped)!r}, 'write about the', '--max-new-tokens', '4',"
            " '--no-chat']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generate: " in proc.stderr and "tokens after a" in proc.stderr



def test_the_gates_judge_the_deployed_students_agreement_and_perplexity(lm_run):
    """The limits sit just either side of the measured figures, so each gate is seen to pass and to fail."""
    run, _ = lm_run
    from compresskit.gates import deployed_student

    variants = json.loads((run / "report.json").read_text())["variants"]
    deployed = deployed_student(variants)  # the fastest quantized graph: int8 or int4, as this machine timed them
    student = deployed["quality"]
    teacher = next(v for v in variants if v["name"] == "teacher-pytorch")["quality"]
    agreement, ratio = student["top1_agreement"], student["perplexity"] / teacher["perplexity"]
    assert cli("report", "--run-dir", str(run), "--min-agreement", f"{max(0.0, agreement - 0.01):.4f}",
               "--max-perplexity-ratio", f"{max(1.0, ratio * 1.01):.4f}").returncode == 0
    proc = cli("report", "--run-dir", str(run), "--min-agreement", f"{min(1.0, agreement + 0.01):.4f}")
    assert proc.returncode == 4 and f"{deployed['name']} quality.top1_agreement" in proc.stderr, proc.stderr[-2000:]
    if ratio > 1.02:
        proc = cli("report", "--run-dir", str(run), "--max-perplexity-ratio", f"{ratio * 0.99:.4f}")
        assert proc.returncode == 4 and "max-perplexity-ratio" in proc.stderr


def test_bench_run_dir_measures_again_with_the_runs_own_settings(lm_run):
    """``bench --run-dir`` reads the run's config.toml: the run's --decode-tokens 8 holds, and a flag given to bench
    (--rounds 2) overrides it. Each variant's speed is measured in a second process too, ONNX Runtime's and
    PyTorch's alike."""
    run, _ = lm_run
    proc = cli("bench", "--run-dir", str(run), "--device", "cpu", "--rounds", "2")
    assert proc.returncode == 0, proc.stderr[-2000:]
    decode_tokens = int(FAST[FAST.index("--decode-tokens") + 1])
    assert decode_tokens != LMBenchConfig.decode_tokens
    for row in json.loads((run / "bench" / "bench.json").read_text())["variants"]:
        g = row["generation"]
        assert len(g["decode_rounds_tokens_per_s"]) == 2 and min(g["decode_rounds_tokens_per_s"]) > 0, row["name"]
        # 3 repeats (the run's) split over 2 rounds (2 a round), each timing the run's decode tokens but the first
        assert g["decode_ms_per_token"]["iterations"] == 2 * 2 * (decode_tokens - 1), row["name"]


def test_a_damaged_int4_graph_is_made_again_and_the_rest_reused(lm_run):
    run, args = lm_run
    weights = max((run / "onnx" / "student-int4").iterdir(), key=lambda f: f.stat().st_size)
    whole = weights.stat().st_size
    with open(weights, "r+b") as f:
        f.truncate(whole // 2)
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [ln.strip() for ln in (proc.stdout + proc.stderr).splitlines()]
    notes = [ln for ln in lines if ln.startswith(("reused ", "made "))]
    made = [n for n in notes if n.startswith("made ")]
    assert [n.split()[1] for n in made] == ["onnx/student-int4/"], notes
    flat = "".join((proc.stdout + proc.stderr).split())  # the console wraps long lines
    assert f"madeonnx/student-int4/again:{weights}is{whole // 2:,}bytes,{whole:,}whenitwasmade" in flat
    assert {n.split()[1] for n in notes if n.startswith("reused ")} == {
        "data/", "student/", "onnx/student/", "onnx/student-int8/", "onnx/teacher-int4/", "onnx/teacher/",
        "onnx/teacher-int8/"}
    assert weights.stat().st_size == whole


def test_a_cut_pruned_student_makes_both_students_again(lm_run):
    """The pruned student is made with the distilled one: a cut pruned student makes both again."""
    run, args = lm_run
    layers = json.loads((run / "student" / "distill.json").read_text())["student_layers"]
    pruned = run / "student-pruned" / "model.safetensors"
    with open(pruned, "r+b") as f:
        f.truncate(pruned.stat().st_size // 2)
    proc = cli(*args)
    assert proc.returncode == 0, proc.stderr[-3000:]
    flat = "".join((proc.stdout + proc.stderr).split())
    assert f"madestudent-pruned/andstudent/again:{pruned}is" in flat and "reuseddata/" in flat
    assert json.loads((run / "student-pruned" / "pruned.json").read_text())["layers"] == layers


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
               # what this test is about ends at the distilled student: no int8/int4 builds, one export route
               "--lm-quantize", "none", "--lm-export-candidates", "torch")
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
