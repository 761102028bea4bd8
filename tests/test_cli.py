"""The CLI as a user runs it: a real subprocess on a tiny model and tiny data."""

import json
import shutil
import subprocess
import sys

import pytest
from conftest import cli, save_tiny_bert

from compresskit.reporting.report import validate_report

FAST = ["--teacher-epochs", "8", "--teacher-learning-rate", "2e-3", "--epochs", "8", "--learning-rate", "2e-3",
        "--student-layers", "1", "--max-length", "32", "--sequence-length", "32", "--batch-sizes", "1,4",
        "--iterations", "3", "--min-seconds", "0", "--rounds", "1", "--threads", "1", "--device", "cpu",
        "--teacher-forms", "none"]


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
    assert names == ["teacher-pytorch", "teacher-onnx", "teacher-onnx-int8", "student-pytorch", "student-onnx",
                     "student-onnx-int8", "baseline-tfidf"]
    gate = report["gates"][0]
    assert gate["name"] == "min-speedup" and gate["passed"] is False and gate["limit"] == 1000000
    assert report["teacher"]["layers"] == 2 and report["student"]["layers"] == 1
    assert report["student"]["parameters"] < report["teacher"]["parameters"]
    assert all(v["passed"] for v in report["verification"]) and len(report["verification"]) == 4
    assert report["config"]["distill"]["temperature"] == 2.0
    md = (root / "tiny" / "report.md").read_text()
    assert "student-onnx-int8" in md and "- FAIL min-speedup" in md
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
              "onnx/teacher-quantized/model.onnx", "bench/bench.json"):
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
    (["--rounds", "0"], ["--rounds must be an integer from 1 to 50, got 0"]),
    (["--test-fraction", "1.2"], ["--test-fraction must be between 0 and 1, got 1.2"]),
    (["--int4-algorithm", "k_quant_last"],
     ["--int4-algorithm must be one of k_quant, default, rtn, got 'k_quant_last'"]),
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


def test_a_generic_head_is_read_as_the_datas_labels_and_every_figure_is_real(tmp_path):
    """A classifier whose head says LABEL_0, LABEL_1 (what AutoModelForSequenceClassification writes unless told
    otherwise) on neg/pos data a linear model separates: before, every variant scored 0 % and every gold id was -1.
    The run names the head once (teacher/ with the data's labels) and every stage reads that."""
    import csv

    from conftest import TOPICS, make_rows

    teacher = save_tiny_bert(tmp_path / "generic", classifier_labels=["LABEL_0", "LABEL_1"])
    original = (teacher / "config.json").read_text()
    data = tmp_path / "neg-pos.csv"
    rows = [{"text": r["text"], "label": {"sport": "pos", "money": "neg"}[r["label"]]}
            for r in make_rows() if r["label"] in ("sport", "money")]
    assert set(TOPICS) >= {"sport", "money"}
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(rows)
    one_graph = ["--exporter", "torchscript", "--attention", "eager", "--cls-only", "off", "--skip-layer-norm", "fused"]
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(data), "--output-root",
               str(tmp_path / "out"), "--run-name", "g", "--quantize", "none", *one_graph, *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "out" / "g"
    report = json.loads((run / "report.json").read_text())
    labels = report["test_set"]["labels"]
    assert labels and set(labels) == {0, 1}  # no gold id is -1
    rows = {v["name"]: v for v in report["variants"]}
    assert rows["baseline-tfidf"]["accuracy"] == 1.0  # the words give the label away
    for row in rows.values():  # each figure is what its predictions say
        assert row["accuracy"] == sum(p == g for p, g in zip(row["predictions"], labels)) / len(labels)
    assert json.loads((run / "onnx" / "teacher" / "labels.json").read_text()) == ["neg", "pos"]
    assert json.loads((run / "teacher" / "head_labels.json").read_text())["head"] == ["LABEL_0", "LABEL_1"]
    assert (teacher / "config.json").read_text() == original  # the user's folder is left as it was


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


# --- every flag has one home (compresskit.cli.options)

def test_every_flag_is_declared_once_and_named_after_its_option():
    """One ``typer.Option("--flag"`` per flag in the whole package, and each option's name is its flag (the key a
    config file uses)."""
    import re
    from collections import Counter
    from pathlib import Path

    import compresskit
    from compresskit.cli.options import OPTIONS, flag

    package = Path(compresskit.__file__).parent
    declared = Counter(m for p in package.rglob("*.py")
                       for m in re.findall(r'typer\.Option\(\s*"(--[a-z0-9-]+)', p.read_text(encoding="utf-8")))
    assert [f for f, n in declared.items() if n > 1] == []
    assert set(declared) == {flag(name) for name in OPTIONS}
    for name, opt in OPTIONS.items():
        assert opt.declaration.default.split("/")[0] == flag(name)
        assert opt.declaration.help, name


def test_option_defaults_are_the_stage_config_defaults():
    """The training and distillation defaults are written in the table (their modules import torch, which the CLI
    does not load up front): they must be the dataclasses' own."""
    from compresskit.cli.options import OPTIONS
    from compresskit.tasks.classification.bench import BenchConfig
    from compresskit.tasks.classification.distill import DistillConfig
    from compresskit.tasks.classification.export import ExportConfig
    from compresskit.tasks.classification.quantize import QuantizeConfig
    from compresskit.tasks.classification.sweep import SweepConfig
    from compresskit.training import FinetuneConfig

    d, t, w, s = DistillConfig(), FinetuneConfig().train, DistillConfig().weights, SweepConfig()
    want = {
        "temperature": d.temperature, "alpha": d.alpha, "student_layers": d.student_layers, "student": d.student,
        "student_shape": d.student_shape, "layer_map": d.layer_map, "unlabeled_data": d.unlabeled_data,
        "labeled_fraction": d.labeled_fraction, "cache_teacher_activations": d.cache_teacher_activations,
        "w_soft": w.soft, "w_mse_logits": w.mse_logits, "w_hidden": w.hidden, "hidden_loss": w.hidden_kind,
        "w_attention": w.attention, "w_embedding": w.embedding,
        "epochs": d.train.epochs, "learning_rate": d.train.learning_rate, "batch_size": d.train.batch_size,
        "max_length": d.train.max_length, "device": d.train.device, "precision": d.train.precision,
        "gradient_accumulation": d.train.gradient_accumulation, "seed": d.train.seed,
        "save_steps": d.train.save_steps, "early_stopping_patience": d.train.early_stopping_patience,
        "fsdp": d.train.fsdp, "teacher_epochs": t.epochs, "teacher_learning_rate": t.learning_rate,
        "students": ";".join(s.students), "keep_models": s.keep_models,
    }
    assert {n: OPTIONS[n].default for n in want} == want
    assert tuple(float(x) for x in OPTIONS["temperatures"].default.split(",")) == s.temperatures
    assert tuple(float(x) for x in OPTIONS["alphas"].default.split(",")) == s.alphas
    # the shared training flags are the same for the teacher's fine-tuning
    assert (t.batch_size, t.max_length, t.precision, t.seed) == (d.train.batch_size, d.train.max_length,
                                                                   d.train.precision, d.train.seed)
    assert OPTIONS["max_length"].default == ExportConfig.max_length == QuantizeConfig.max_length
    assert OPTIONS["device"].default == BenchConfig.device
    assert OPTIONS["batch_sizes"].default == ",".join(map(str, BenchConfig.batch_sizes))
    # the shared table's literals (the core's options module imports no family)
    from compresskit.corpus import BBC_NEWS
    from compresskit.tasks.classification.data import DataConfig

    assert (OPTIONS["dataset"].default, OPTIONS["validation_fraction"].default, OPTIONS["seed"].default,
            OPTIONS["max_samples"].default) == (BBC_NEWS, DataConfig.validation_fraction, DataConfig.seed,
                                                DataConfig.max_samples)
    assert (OPTIONS["int4_block_size"].default, OPTIONS["fallback"].default, OPTIONS["threads"].default) == (
        QuantizeConfig.int4_block_size, QuantizeConfig.fallback, BenchConfig.threads)
    assert f"text-classification, default {DataConfig.test_fraction}" in OPTIONS["test_fraction"].declaration.help
    assert f"text-classification {BenchConfig.rounds}" in OPTIONS["rounds"].declaration.help


def test_causal_lm_option_defaults_are_its_config_defaults():
    """The causal-LM flags' literal defaults are the family's config dataclasses' own (house style #15)."""
    from compresskit.cli.options import OPTIONS
    from compresskit.tasks.causal_lm.bench import LMBenchConfig
    from compresskit.tasks.causal_lm.distill import LMDistillConfig
    from compresskit.tasks.causal_lm.export import LMExportConfig
    from compresskit.tasks.causal_lm.prepare import LMDataConfig
    from compresskit.tasks.causal_lm.prompts import BBCPromptConfig
    from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig

    d, b, e, q, data = LMDistillConfig(), LMBenchConfig(), LMExportConfig(), LMQuantizeConfig(), LMDataConfig()
    want = {
        "kd_divergence": d.kd.divergence, "jsd_beta": d.kd.beta, "kd_temperature": d.kd.temperature,
        "kd_alpha": d.kd.alpha, "on_policy": d.on_policy_fraction, "max_steps": d.max_steps,
        "teacher_topk": d.teacher_topk, "student_depth": d.student_depth, "layer_choice": d.layer_choice,
        "lm_learning_rate": d.train.learning_rate, "lm_batch_size": d.train.batch_size,
        "lm_max_length": d.train.max_length, "lm_window": d.window,
        "lm_train_prompts": data.train_prompts, "lm_train_texts": data.train_texts,
        "lm_test_prompts": data.test_prompts, "lm_heldout_texts": data.heldout_texts,
        "max_new_tokens": data.max_new_tokens, "max_article_words": data.prompts.max_article_words,
        "lm_tasks": ",".join(data.prompts.kinds),
        "perplexity_window": b.window, "ttft_prompt_lengths": ",".join(map(str, b.prompt_lengths)),
        "lm_repeats": b.repeats, "decode_tokens": b.decode_tokens,
        "lm_export_candidates": ",".join(e.candidates), "verify_steps": e.parity.steps,
        "verify_prompts": e.verify_prompts, "lm_quantize": ",".join(q.precisions),
        "int4_accuracy_level": q.accuracy_level, "int4_algorithm": q.algorithm,
        "lm_quant_min_agreement": q.min_agreement, "lm_quant_max_perplexity_ratio": q.max_perplexity_ratio,
    }
    assert {n: OPTIONS[n].default for n in want} == want
    assert (b.max_heldout, b.max_prompts, b.max_new_tokens) == (data.heldout_texts, data.test_prompts,
                                                                 data.max_new_tokens)
    assert f"causal-lm {LMBenchConfig.rounds}" in OPTIONS["rounds"].declaration.help
    assert f"causal-lm, default {BBCPromptConfig.test_fraction}" in OPTIONS["test_fraction"].declaration.help


def test_help_groups_the_options_in_panels_and_cuts_no_flag_at_80_columns():
    """``--help`` reads as sections (each option in a panel) on an 80-column terminal, with no flag name cut."""
    from compresskit.cli.options import OPTIONS

    assert all(opt.declaration.rich_help_panel for opt in OPTIONS.values())
    proc = cli("distill-and-export", "--help", env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert proc.returncode == 0, proc.stderr
    for panel in ("Run", "Data", "Teacher", "Student and distillation", "Export", "Quantization", "Benchmark",
                  "Quality gates", "Causal LM"):
        assert f"─ {panel}" in proc.stdout, panel
    # A flag's name shows whole unless it is over 28 characters: rich then narrows the name column with the help
    # column (one such flag today, --lm-quant-max-perplexity-ratio, loses 3 characters at exactly 80 columns).
    from compresskit.cli.flags import flag
    from compresskit.cli.options import PIPELINE

    cut = [flag(n) for n in PIPELINE if len(flag(n)) <= 28 and f"{flag(n)} " not in proc.stdout
           and f"{flag(n)}\n" not in proc.stdout]
    assert cut == []
    assert "--no-cache-teacher-activations" in proc.stdout  # an off form is named in its help


def test_cli_start_up_does_not_import_torch():
    """``predict`` runs on ONNX Runtime alone, and ``--help`` should not wait for torch."""
    import sys

    code = "import sys, compresskit.cli.app; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_every_option_of_every_command_is_in_its_help():
    import typer

    from compresskit.cli.app import app
    from compresskit.cli.options import OPTIONS

    for command in typer.main.get_command(app).commands.values():
        taken = [p for p in command.params if p.name in OPTIONS]
        proc = cli(command.name, "--help", env={"TERMINAL_WIDTH": "400"})
        assert proc.returncode == 0, proc.stderr
        for p in taken:
            for f in (*p.opts, *p.secondary_opts):
                assert f in proc.stdout, (command.name, f)


def test_finetune_teacher_takes_the_teacher_flags():
    """``--epochs`` and ``--learning-rate`` are the student's; the teacher's fine-tuning has its own flags."""
    import typer

    from compresskit.cli.app import app

    commands = typer.main.get_command(app).commands
    finetune_cmd, distill_and_export_cmd = (commands[n].callback for n in ("finetune-teacher", "distill-and-export"))
    assert {"teacher_epochs", "teacher_learning_rate"} <= set(finetune_cmd.option_names)
    assert not {"epochs", "learning_rate"} & set(finetune_cmd.option_names)
    assert {"teacher_epochs", "epochs", "task", "config"} <= set(distill_and_export_cmd.option_names)


def test_a_task_outside_the_choices_is_one_line(tmp_path, tiny_encoder, tiny_csv):
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv),
               "--task", "translation", "--output-root", str(tmp_path / "out"))
    assert_one_line_error(proc, 2, "--task must be one of auto, text-classification, causal-lm, got 'translation'")
    assert not (tmp_path / "out").exists()


def test_the_saved_config_repeats_the_run(run):
    """config.toml holds every resolved flag (not --overwrite); given back with --config, it is the same run, so it
    resumes (and the same gate fails again) instead of being refused as another run."""
    root, _, _ = run
    config = root / "tiny" / "config.toml"
    text = config.read_text()
    assert "temperature = 2.0" in text and 'student-layers = "1"' in text and "min-speedup = 1000000.0" in text
    assert "overwrite" not in text and "config =" not in text and "run-name = \"tiny\"" in text
    proc = cli("distill-and-export", "--config", str(config), env={"GITHUB_STEP_SUMMARY": str(root / "again.md")})
    assert proc.returncode == 4, proc.stderr[-3000:]
    assert "resuming the run" in proc.stderr and "holds another run" not in proc.stderr


def test_a_budget_nothing_meets_ships_nothing_and_the_student_gate_names_the_closest(run, tmp_path):
    root, _, _ = run
    report = json.loads((root / "tiny" / "report.json").read_text())
    d = report["decision"]
    # the fixture's run asked for a speed-up of a million: no variant meets that, and nothing ships
    assert d["chosen"] is None and d["closest"] and d["budget"] == {"max_accuracy_drop": 0.01, "min_speedup": 1e6}
    assert d["budget_source"] == "default" and not (root / "tiny" / "deploy").exists()
    assert "nothing meets the budget" in (root / "tiny" / "report.md").read_text()
    copy = tmp_path / "tiny"
    shutil.copytree(root / "tiny", copy)
    proc = cli("report", "--run-dir", str(copy), "--min-speedup", "1000000", "--require-student")
    assert proc.returncode == 4, proc.stderr[-2000:]
    assert "require-student" in proc.stderr and f"closest: {d['closest']}" in proc.stderr


def test_the_report_ships_the_chosen_variant_with_a_model_card_that_matches_it(run, tmp_path):
    from compresskit.deploy import read_card, write_deploy
    from compresskit.tasks import get_task
    from compresskit.variants import field_value

    root, _, _ = run
    copy = tmp_path / "tiny"
    shutil.copytree(root / "tiny", copy)
    proc = cli("report", "--run-dir", str(copy))
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((copy / "report.json").read_text())
    d = report["decision"]
    assert d["chosen"] in {v["name"] for v in report["variants"]} and d["budget"] == {"max_accuracy_drop": 0.01}
    assert f"deploy: {copy / 'deploy'}" in proc.stderr.replace("\n", "")
    meta, body = read_card(copy / "deploy" / "README.md")
    row = next(v for v in report["variants"] if v["name"] == d["chosen"])
    assert meta["pipeline_tag"] == "text-classification" and meta["datasets"] and meta["base_model"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    facts = {m["type"]: m for m in get_task("text-classification").card(report, row).metrics}
    assert metrics and all(m["value"] == field_value(row, facts[m["type"]]["field"]) for m in metrics)
    assert {m["type"] for m in metrics} >= {"accuracy", "latency"}
    assert "## How to run it" in body and "## Limits" in body and d["chosen"] in body
    # the shipped int8 student's folder answers on ONNX Runtime alone, with torch absent from the process
    report["decision"] = {**d, "chosen": "student-onnx-int8"}
    shipped = write_deploy(copy, report, get_task("text-classification"))
    code = ("import sys; sys.modules['torch'] = None\n"  # any import of torch now fails
            "from compresskit.cli import main\n"
            f"sys.argv = ['compresskit', 'predict', {str(shipped)!r}, 'the team won the match', '--json']\n"
            "main()\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["label"] in json.loads((shipped / "labels.json").read_text())
    meta, body = read_card(shipped / "README.md")
    assert meta["library_name"] == "onnx" and "int8" in meta["tags"]
    # the card's own lines to run it with ONNX Runtime run as written, from the run folder, and agree with predict
    usage = body.split("```python\n", 1)[1].split("```", 1)[0]
    ran = subprocess.run([sys.executable, "-c", usage], cwd=copy, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stderr[-2000:]
    assert ran.stdout.strip() in json.loads((shipped / "labels.json").read_text())
