"""The causal-LM benchmark stage: every variant in its own process, quality against the reference teacher (equal
to ``lm.quality``'s own numbers), and batch-1 generation speed."""

from __future__ import annotations

import json
import math

import pytest
from lm_models import CORPUS, save_lm, tiny_llama, tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import quality as Q
from compresskit.tasks.causal_lm.bench import (
    LMBenchConfig,
    bench_lm,
    read_test_prompts,
    select_prompts,
)
from compresskit.tasks.causal_lm.prompts import INSTRUCTIONS, SECTIONS, render_prompt, text_windows
from compresskit.variants import Variant

CFG = LMBenchConfig(window=16, max_heldout=6, max_prompts=7, max_new_tokens=4, prompt_lengths=(16, 32),
                    decode_tokens=8, repeats=1, rounds=2, threads=1, device="cpu")


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    """A 2-layer teacher saved twice, a 1-layer student, and a data folder in the LM data stage's format, with the
    teacher's greedy answers cached as the data stage caches them (``lm.quality.greedy_generate``)."""
    root = tmp_path_factory.mktemp("lm_bench")
    tok = tiny_tokenizer()
    teacher = tiny_llama(layers=2, seed=0, max_positions=256)
    student = tiny_llama(layers=1, seed=1, max_positions=256)
    for name, model in (("teacher", teacher), ("teacher-copy", teacher), ("student", student)):
        save_lm(root / name, model, tok)
    rows = []
    for i, text in enumerate(CORPUS[:5]):
        for kind, reference in (("summary", None), ("headline", " ".join(text.split()[:5])),
                                ("section", SECTIONS[i])):
            rows.append({"prompt": render_prompt(tok, f"{INSTRUCTIONS[kind]}\n\n{text}"), "kind": kind,
                         "source_id": f"article/{i}", "reference": reference})
    rows.append({"prompt": render_prompt(tok, "what is the capital of france ?"), "kind": "user",
                 "source_id": "prompts.jsonl line 1", "reference": None})
    answers = Q.greedy_generate(teacher, tok, [r["prompt"] for r in rows], CFG.max_new_tokens)
    for r, a in zip(rows, answers):
        r["response"] = a
    rows[1]["response"] = None  # a prompt the teacher did not answer: left out of the comparisons with answers
    data = root / "data"
    data.mkdir()
    _write_jsonl(data / "test.jsonl", rows)
    _write_jsonl(data / "heldout.jsonl", [{"id": f"h{i}", "text": t} for i, t in enumerate(CORPUS)])
    (data / "data.json").write_text("{}")
    return {"root": root, "data": data, "tok": tok, "teacher": teacher, "student": student}


@pytest.fixture(scope="module")
def measured(lm):
    variants = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", lm["root"] / "teacher"),
                Variant("student-pytorch", "student", "pytorch", "fp32", lm["root"] / "student"),
                Variant("teacher-copy", "teacher", "pytorch", "fp32", lm["root"] / "teacher-copy")]
    out = lm["root"] / "bench"
    result = bench_lm(CFG, variants, lm["data"], out)
    return result, {r["name"]: r for r in result.variants}, out


def _numbers(obj, path=""):
    """(path, value) of every leaf of a JSON-like object."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _numbers(v, f"{path}/{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _numbers(v, f"{path}/{i}")
    else:
        yield path, obj


def test_every_number_is_present_and_finite(measured):
    result, rows, _ = measured
    assert result.task == "causal-lm" and result.sequence_length == 16 and result.reference_teacher == "teacher-pytorch"
    assert result.test_samples == 7 and result.threads == 1
    for name, row in rows.items():
        for path, value in _numbers(row):
            if path in ("/peak_gpu_mb", "/bandwidth") or (name == "teacher-pytorch" and path == "/quality/vs_teacher"):
                assert value is None, path  # CPU run; PyTorch rows have no graph bytes; no self-comparison
                continue
            assert value is not None, f"{name}{path}"
            if isinstance(value, (int, float)):
                assert math.isfinite(value), f"{name}{path}"
        g = row["generation"]
        assert set(g["ttft_ms"]) == set(g["prefill_tokens_per_s"]) == {"prompt_16", "prompt_32"}
        assert all(0 < t["p50"] <= t["p90"] for t in g["ttft_ms"].values())
        assert g["decode_tokens_per_s"] > 0 and g["generate_tokens_per_s"] > 0
        assert row["latency_ms"] == {"batch_1": g["decode_ms_per_token"]}
        assert row["throughput_per_s"] == {"batch_1": g["decode_tokens_per_s"]}
        q = row["quality"]
        assert q["heldout_windows"] == 6 and q["section_accuracy"]["n"] == 2 and q["headline_rouge_l"]["n"] == 2
        assert row["size_mb"] > 0 and row["peak_rss_mb"] > 10 and row["device"] == "cpu"
    assert set(rows["student-pytorch"]["quality"]["vs_teacher"]) == {"rouge_l_vs_teacher", "headline_rouge_l",
                                                                     "section_accuracy", "mean_nll"}


def test_a_copy_of_the_teacher_agrees_fully_and_the_student_does_not(measured):
    _, rows, _ = measured
    teacher, copy, student = rows["teacher-pytorch"], rows["teacher-copy"], rows["student-pytorch"]
    for row in (teacher, copy):
        assert row["quality"]["top1_agreement"] == 1.0 and row["quality"]["top1_agreement_responses"] == 1.0
    assert copy["quality"]["perplexity"] == teacher["quality"]["perplexity"]
    assert copy["quality"]["vs_teacher"]["mean_nll"] == {"diff": 0.0, "low": 0.0, "high": 0.0, "n": 6}
    assert student["quality"]["perplexity"] != pytest.approx(teacher["quality"]["perplexity"], rel=1e-3)
    assert student["quality"]["top1_agreement"] < 1.0
    assert student["parameters"] < teacher["parameters"] == copy["parameters"]


def test_decode_makes_exactly_decode_tokens(measured):
    _, rows, _ = measured
    for row in rows.values():
        g = row["generation"]
        assert g["decode_new_tokens"] == g["generate_new_tokens"] == CFG.decode_tokens
        # the first token comes from the prefill; every later one is a timed step
        # every round's timed steps pooled: one repeat a round (repeats split across rounds, at least one)
        assert g["decode_ms_per_token"]["iterations"] == CFG.rounds * (CFG.decode_tokens - 1)
        assert len(g["decode_rounds_tokens_per_s"]) == CFG.rounds and "decode_samples_ms" not in g
        assert g["decode_matches_generate"] is True


def test_rounds_pool_decode_steps_and_take_the_median_of_the_rest():
    from compresskit.tasks.causal_lm.bench import pool_rounds

    def gen(steps, ttft, batch8):
        return {"decode_samples_ms": steps, "decode_tokens_per_s": 1000.0 / (sum(steps) / len(steps)),
                "decode_ms_per_token": {}, "ttft_ms": {"prompt_16": {"p50": ttft, "p90": ttft + 1}, "prompt_99": None},
                "prefill_tokens_per_s": {"prompt_16": 16000.0 / ttft, "prompt_99": None},
                "batch8_tokens_per_s": batch8, "generate_tokens_per_s": batch8 / 2, "decode_matches_generate": True,
                "decode_token_ids": [1, 2]}

    g = pool_rounds([gen([2.0, 2.0], 10.0, 100.0), gen([4.0, 4.0], 30.0, 300.0), gen([3.0, 3.0], 20.0, 50.0)])
    assert g["decode_ms_per_token"]["iterations"] == 6 and g["decode_ms_per_token"]["p50"] == 3.0
    assert g["decode_tokens_per_s"] == pytest.approx(1000.0 / 3.0)
    assert g["decode_rounds_tokens_per_s"] == pytest.approx([500.0, 250.0, 1000.0 / 3.0])
    assert g["ttft_ms"] == {"prompt_16": {"p50": 20.0, "p90": 21.0}, "prompt_99": None}
    assert g["prefill_tokens_per_s"] == {"prompt_16": pytest.approx(800.0), "prompt_99": None}
    assert g["batch8_tokens_per_s"] == 100.0 and g["generate_tokens_per_s"] == 50.0
    assert g["decode_token_ids"] == [1, 2] and "decode_samples_ms" not in g
    one = pool_rounds([gen([2.0, 4.0], 10.0, 100.0)])  # one round: its own figures, with the pooled latency
    assert one["ttft_ms"]["prompt_16"]["p50"] == 10.0 and one["decode_rounds_tokens_per_s"] == [pytest.approx(1000 / 3)]


def test_numbers_equal_lm_quality_in_process(lm, measured):
    _, rows, out = measured
    tok, teacher, student = lm["tok"], lm["teacher"], lm["student"]
    examples = json.loads((out / "examples.json").read_text())["variants"]
    windows = text_windows(tok, CORPUS[:6], CFG.window, max_windows_per_text=1)
    for name, model in (("teacher-pytorch", teacher), ("student-pytorch", student)):
        ppl = Q.perplexity(model, windows, tok.pad_token_id)
        assert rows[name]["quality"]["perplexity"] == pytest.approx(ppl.value, rel=1e-5)
        assert [w["mean_nll"] for w in examples[name]["windows"]] == pytest.approx(list(ppl.per_example), rel=1e-5)
    assert rows["student-pytorch"]["quality"]["top1_agreement"] == pytest.approx(
        Q.top1_agreement(student, teacher, windows, tok.pad_token_id).rate)
    prompts = json.loads((out / "inputs.json").read_text())["prompts"]
    sections = [p["prompt"] for p in prompts if p["kind"] == "section"]
    for name, model in (("teacher-pytorch", teacher), ("student-pytorch", student)):
        assert [s["choice"] for s in examples[name]["sections"]] == Q.section_choice(model, tok, sections)[0]
    # batched left-padded greedy answers are the teacher's cached one-at-a-time answers
    assert [e["response"] for e in examples["teacher-pytorch"]["prompts"]] == \
        Q.greedy_generate(teacher, tok, [p["prompt"] for p in prompts], CFG.max_new_tokens)
    cached = [p for p in prompts if p["response"] is not None]
    assert rows["teacher-pytorch"]["quality"]["rouge_l_vs_teacher"]["n"] == len(cached) == 6


def test_artifacts_on_disk(measured):
    result, _, out = measured
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(result.to_dict()))
    record = json.loads((out / "bench_record.json").read_text())
    assert record["stage"] == "bench" and record["task"] == "causal-lm" and record["config"]["window"] == 16
    assert set(json.loads((out / "examples.json").read_text())["variants"]) == {
        "teacher-pytorch", "student-pytorch", "teacher-copy"}
    assert not (out / "workers").exists()
    text = (out / "bench.json").read_text()  # per-token and per-prompt data live in examples.json
    assert "decode_token_ids" not in text and "argmax" not in text


def test_text_only_data_without_a_teacher_gives_perplexity_and_speed(lm, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "test.jsonl").write_text("")  # the data stage writes no prompts for plain .txt data
    _write_jsonl(data / "heldout.jsonl", [{"id": f"text {i}", "text": t} for i, t in enumerate(CORPUS[:3])])
    variants = [Variant("student-pytorch", "student", "pytorch", "fp32", lm["root"] / "student")]
    result = bench_lm(CFG, variants, data, tmp_path / "bench")
    row = result.variants[0]
    assert result.test_samples == 0 and result.reference_teacher is None
    assert math.isfinite(row["quality"]["perplexity"]) and row["quality"]["heldout_windows"] == 3
    assert row["quality"]["top1_agreement"] is None and row["quality"]["vs_teacher"] is None
    assert row["quality"]["rouge_l_vs_teacher"]["n"] == 0 and row["quality"]["section_accuracy"]["n"] == 0
    assert row["generation"]["decode_new_tokens"] == CFG.decode_tokens


def test_select_prompts_is_stratified_by_kind_and_keeps_file_order():
    rows = [{"kind": k, "i": i} for i, k in enumerate(["summary"] * 5 + ["headline"] * 3 + ["section"])]
    chosen = select_prompts(rows, 5)
    assert [r["i"] for r in chosen] == [0, 1, 5, 6, 8]
    assert len(select_prompts(rows, 100)) == 9


def test_config_names_every_bad_flag_at_once():
    with pytest.raises(UserError) as e:
        LMBenchConfig(window=1, max_prompts=0, decode_tokens=1, prompt_lengths=(), device="tpu", rounds=0)
    for flag in ("--perplexity-window", "--lm-test-prompts", "--decode-tokens", "--ttft-prompt-lengths", "--device",
                 "--rounds"):
        assert flag in str(e.value)


def test_bad_data_is_one_line_naming_file_and_line(tmp_path):
    path = tmp_path / "test.jsonl"
    _write_jsonl(path, [{"prompt": "p", "kind": "summary", "source_id": "a"},
                        {"prompt": "p", "kind": "poem", "source_id": "b"}])
    with pytest.raises(UserError, match="test.jsonl line 2: kind must be one of"):
        read_test_prompts(path)


def test_an_onnx_variant_that_is_not_an_exported_folder_is_refused_in_one_line(lm, tmp_path):
    onnx = Variant("student-onnx", "student", "onnx", "fp32", tmp_path)
    with pytest.raises(UserError, match="not an exported LLM folder") as e:
        bench_lm(CFG, [onnx], lm["data"], tmp_path / "bench")
    assert "\n" not in str(e.value) and not (tmp_path / "bench").exists()


def test_a_failing_worker_is_reported_with_its_last_stderr_line(lm, tmp_path):
    broken = save_lm(tmp_path / "broken", lm["student"], lm["tok"])
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a cut-off file: the header claims more than is there
    variants = [Variant("student-pytorch", "student", "pytorch", "fp32", broken)]
    with pytest.raises((RuntimeError, UserError), match="student-pytorch") as e:
        bench_lm(CFG, variants, lm["data"], tmp_path / "bench")
    message = str(e.value)
    assert "\n" not in message and message.split(": ", 1)[1].strip()
    assert not (tmp_path / "bench").exists()
