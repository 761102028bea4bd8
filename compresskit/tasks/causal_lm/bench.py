"""Benchmark stage for causal LMs: what each variant keeps of the teacher's language and tasks, and what it buys in
generation speed and memory, each variant measured in a fresh process (``lm.bench_worker``), as ``bench`` does.

Reads the LM data folder (``test.jsonl``: chat-templated prompts with the teacher's cached greedy answer;
``heldout.jsonl``: article texts for perplexity), writes ``bench.json`` (one row per variant; small),
``examples.json`` (per window and per prompt: NLLs, answers, scores), ``inputs.json`` (the exact texts and prompts
measured) and ``bench_record.json``.

Quality is measured against the reference teacher (``variants.reference_teacher``): agreement of argmax next
tokens, ROUGE-L of greedy answers against the teacher's cached answers, and paired bootstrap intervals of the
per-window NLL and per-prompt scores. Speed is batch 1: time to first token, prefill and decode tokens/s.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, atomic_dir, stage_record, write_json
from compresskit.bench import BenchResult, harness_problems, model_size_mb, pool_samples, run_rounds, run_worker
from compresskit.machine import default_threads, machine_info
from compresskit.variants import Variant, reference_teacher

TASK = "causal-lm"
KINDS = ("summary", "headline", "section", "user")
"""Prompt kinds ``test.jsonl`` may hold."""
PRECISIONS = ("fp32", "bf16", "fp16")
"""Precisions a PyTorch variant is measured in (the weights are cast after loading)."""


@dataclass(frozen=True)
class LMBenchConfig:
    """What to measure for a causal LM, on how much data, and how long."""

    window: int = 256
    """Perplexity windows: the first this many tokens of each held-out text (``--perplexity-window``)."""
    max_heldout: int = 24
    """Held-out texts used for perplexity and agreement on text, the first in file order (``--lm-heldout-texts``)."""
    max_prompts: int = 30
    """Test prompts answered greedily and scored, stratified by kind (``--lm-test-prompts``)."""
    max_new_tokens: int = 48
    """Longest greedy answer to a test prompt, in tokens (``--max-new-tokens``)."""
    prompt_lengths: tuple[int, ...] = (128, 512)
    """Time-to-first-token workloads: prompts of exactly these many tokens of held-out text; a length over a
    model's context is skipped for that model (``--ttft-prompt-lengths``)."""
    decode_tokens: int = 128
    """New tokens of the batch-1 decode workload after the first test prompt, forced (no stop at end of sequence)
    (``--decode-tokens``)."""
    repeats: int = 3
    """Timed repeats of each speed workload, after one warm-up, split across ``rounds`` (``--lm-repeats``)."""
    rounds: int = 3
    """Fresh processes each variant's speed is measured in, the rounds interleaved across variants (``--rounds``);
    round 1 also measures quality. Why: on the 2-core EPYC host one process of the int4 student decodes at 2.6 ms
    a token and the next at 3.6, with nothing else running, so a ratio of two variants each timed in one process
    can move by a third; the decode samples of every round are pooled, and each round's figure is recorded."""
    threads: int | None = None
    """Intra-op threads for every variant; None uses the physical cores (``--threads``)."""
    device: str = "auto"
    """``auto``, ``cpu`` or ``cuda`` for the PyTorch variants (``--device``)."""

    def __post_init__(self) -> None:
        problems = []
        if not 2 <= self.window <= 131072:
            problems.append(f"--perplexity-window must be between 2 and 131072 tokens, got {self.window}")
        for flag, value in (("--lm-heldout-texts", self.max_heldout), ("--lm-test-prompts", self.max_prompts),
                            ("--max-new-tokens", self.max_new_tokens), ("--lm-repeats", self.repeats)):
            if value < 1:
                problems.append(f"{flag} must be at least 1, got {value}")
        if not self.prompt_lengths or any(n < 1 for n in self.prompt_lengths) \
                or len(set(self.prompt_lengths)) != len(self.prompt_lengths):
            problems.append(f"--ttft-prompt-lengths must be distinct positive token counts, got {self.prompt_lengths}")
        if self.decode_tokens < 2:
            problems.append(f"--decode-tokens must be at least 2 (one from the prefill, the rest decoded), "
                            f"got {self.decode_tokens}")
        problems += harness_problems(self.rounds, self.threads, self.device)
        if problems:
            raise UserError("; ".join(problems))


# ---------------------------------------------------------------------------------------------------------------
# Inputs


def _jsonl(path: Path) -> list[tuple[str, dict]]:
    """(``file line n``, object) for each non-blank line of a JSONL file the data stage wrote (none for an empty
    file: it writes no test prompts for plain-text data); problems are one-line UserErrors."""
    from compresskit.tasks.causal_lm.prompts import jsonl_records

    return jsonl_records(path, f"{path} does not exist: run the LM data stage first")


def _string(record: dict, key: str, where: str, optional: bool = False) -> str | None:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {key} must be a non-empty string{' or null' if optional else ''}")
    return value


def read_test_prompts(path: Path) -> list[dict[str, Any]]:
    """The prompts of ``test.jsonl``: ``prompt`` (chat-templated), ``kind``, ``source_id``, ``reference``
    (title or section, or null) and ``response`` (the teacher's cached greedy answer, or null)."""
    rows = []
    for where, r in _jsonl(path):
        kind = r.get("kind")
        if kind not in KINDS:
            raise UserError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        response = r.get("response")
        if response is not None and not isinstance(response, str):  # "" is an answer: EOS came first
            raise UserError(f"{where}: response must be a string or null")
        rows.append({"prompt": _string(r, "prompt", where), "kind": kind,
                     "source_id": _string(r, "source_id", where),
                     "reference": _string(r, "reference", where, optional=True), "response": response})
    return rows


def read_heldout(path: Path) -> list[dict[str, str]]:
    """The held-out texts of ``heldout.jsonl``: ``id`` (unique) and ``text``."""
    rows, seen = [], set()
    for where, r in _jsonl(path):
        row = {"id": _string(r, "id", where), "text": _string(r, "text", where)}
        if row["id"] in seen:
            raise UserError(f"{where}: id {row['id']!r} is used twice; each held-out text needs its own id")
        seen.add(row["id"])
        rows.append(row)
    return rows


def select_prompts(rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """At most ``n`` prompts, stratified by kind: one of each kind in turn (kinds in order of first appearance,
    each kind's prompts in file order), returned in file order. Deterministic."""
    by_kind: dict[str, list[int]] = {}
    for i, r in enumerate(rows):
        by_kind.setdefault(r["kind"], []).append(i)
    queues = [list(reversed(ix)) for ix in by_kind.values()]
    chosen: list[int] = []
    while len(chosen) < n and any(queues):
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return [rows[i] for i in sorted(chosen)]


# ---------------------------------------------------------------------------------------------------------------
# Running the workers


def _check_variants(variants: list[Variant]) -> None:
    if not variants:
        raise UserError("no model variants to benchmark")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise UserError(f"variant names must be unique, got {', '.join(names)}")
    for v in variants:
        if v.format == "onnx":
            if not (Path(v.path) / "genai_config.json").is_file():
                raise UserError(f"{v.name}: {v.path} is not an exported LLM folder (no genai_config.json)")
            continue
        if v.format != "pytorch":
            raise UserError(f"{v.name}: unknown format {v.format!r} (pytorch or onnx)")
        if v.precision not in PRECISIONS:
            raise UserError(f"{v.name}: a PyTorch causal LM is measured in {', '.join(PRECISIONS)}, "
                            f"not {v.precision}")
        if not (Path(v.path) / "config.json").is_file():
            raise UserError(f"{v.name}: {v.path} is not a model folder (no config.json)")


def _context(v: Variant) -> int:
    """The context length of a variant: its config's, or for an exported folder its GenAI config's."""
    from compresskit.artifacts import read_json

    if v.format == "onnx":
        return int(read_json(Path(v.path) / "genai_config.json")["model"]["context_length"])
    from transformers import AutoConfig

    from compresskit.tasks.causal_lm.prompts import context_length
    return context_length(AutoConfig.from_pretrained(str(v.path)))


def _worker_tokens(variants: list[Variant], inputs: Path, cfg: LMBenchConfig, out: Path) -> tuple[Path, Any]:
    """For the ONNX workers (which load no tokenizer): every token sequence, made with the first variant's
    tokenizer (every variant reads the teacher's) within the shortest context; and that tokenizer, which decodes
    their answers."""
    import json

    from transformers import AutoTokenizer

    from compresskit.tasks.causal_lm.bench_worker import tokenized_inputs

    tokenizer = AutoTokenizer.from_pretrained(str(variants[0].path))
    context = min(_context(v) for v in variants)
    tokens = tokenized_inputs(tokenizer, json.loads(inputs.read_text(encoding="utf-8")), dataclasses.asdict(cfg),
                              context)
    write_json(out, tokens)
    return out, tokenizer


def _decoded(tokenizer: Any, response_ids: list[list[int]]) -> list[str]:
    """An ONNX worker's greedy answers as ``generate.greedy_from_ids`` writes them: cut at EOS, no special
    tokens, stripped."""
    eos = tokenizer.eos_token_id
    out = []
    for ids in response_ids:
        if eos is not None and eos in ids:
            ids = ids[:ids.index(eos)]
        out.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
    return out


# ---------------------------------------------------------------------------------------------------------------
# Comparing with the teacher


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


def _with_ci(values: list[float]) -> dict[str, Any]:
    """Mean, bootstrap 95 % interval and count of per-example scores (None when there are none)."""
    from compresskit.stats import bootstrap_mean_ci

    if not values:
        return {"mean": None, "low": None, "high": None, "n": 0}
    low, high = bootstrap_mean_ci(np.asarray(values))
    return {"mean": float(np.mean(values)), "low": low, "high": high, "n": len(values)}


def _paired(variant: dict[Any, float], teacher: dict[Any, float]) -> dict[str, Any] | None:
    """Paired bootstrap 95 % interval of variant − teacher over the examples both scored (keys), or None."""
    from compresskit.tasks.causal_lm.quality import paired_difference

    keys = [k for k in variant if k in teacher]
    if not keys:
        return None
    return {**paired_difference([variant[k] for k in keys], [teacher[k] for k in keys]), "n": len(keys)}


def _agreement(mine: list[dict], theirs: list[dict], key: str) -> tuple[float | None, dict]:
    """Token-weighted top-1 agreement of two workers' argmax ids, and the rate per example (by ``key``)."""
    agree = total = 0
    per: dict[Any, float] = {}
    for a, b in zip(mine, theirs):
        assert a[key] == b[key] and len(a["argmax"]) == len(b["argmax"]), "same inputs, same positions"
        same = sum(x == y for x, y in zip(a["argmax"], b["argmax"]))
        agree, total = agree + same, total + len(a["argmax"])
        if a["argmax"]:
            per[a[key]] = same / len(a["argmax"])
    return (agree / total if total else None), per


def _scores(r: dict, prompts: list[dict]) -> dict[str, dict[int, float]]:
    """Per-prompt scores of one worker's answers, keyed by prompt index."""
    from compresskit.tasks.causal_lm.quality import rouge_l_f1

    vs_teacher = {i: rouge_l_f1(r["responses"][i], p["response"]) for i, p in enumerate(prompts)
                  if p["response"] is not None}
    headline = {i: rouge_l_f1(r["responses"][i], p["reference"]) for i, p in enumerate(prompts)
                if p["kind"] == "headline" and p["reference"] is not None}
    section = {s["index"]: float(s["choice"] == prompts[s["index"]]["reference"].strip().lower())
               for s in r["sections"] if prompts[s["index"]]["reference"] is not None}
    nll = {w["id"]: w["nll"] / w["tokens"] for w in r["windows"] if w["tokens"]}
    return {"rouge_l_vs_teacher": vs_teacher, "headline_rouge_l": headline, "section_accuracy": section,
            "mean_nll": nll}


def _quality(name: str, r: dict, teacher_name: str | None, t: dict | None, prompts: list[dict]
             ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``quality`` block of one row, and its per-example values for ``examples.json``."""
    from compresskit.stats import bootstrap_ci

    mine = _scores(r, prompts)
    tokens = sum(w["tokens"] for w in r["windows"])
    agreement = agreement_responses = None
    per_window_agreement: dict = {}
    per_prompt_agreement: dict = {}
    if t is not None:
        for what, key in (("windows", "held-out text"), ("forced", "teacher's responses")):
            if r[f"{what}_sha256"] != t[f"{what}_sha256"]:
                raise UserError(f"{name} tokenises the {key} into other tokens than {teacher_name}: top-1 agreement "
                                "needs the teacher's tokenizer")
        agreement, per_window_agreement = _agreement(r["windows"], t["windows"], "id")
        agreement_responses, per_prompt_agreement = _agreement(r["forced"], t["forced"], "index")
    by_kind: dict[str, list[float]] = {}
    for i, score in mine["rouge_l_vs_teacher"].items():
        by_kind.setdefault(prompts[i]["kind"], []).append(score)
    section = list(mine["section_accuracy"].values())
    low_high = bootstrap_ci(np.asarray(section)) if section else (None, None)
    quality: dict[str, Any] = {
        "perplexity": math.exp(sum(w["nll"] for w in r["windows"]) / tokens) if tokens else None,
        "heldout_windows": len(r["windows"]),
        "heldout_tokens": tokens,
        "top1_agreement": agreement,
        "top1_agreement_responses": agreement_responses,
        "rouge_l_vs_teacher": {"overall": _mean(list(mine["rouge_l_vs_teacher"].values())),
                               **{k: _mean(v) for k, v in by_kind.items()},
                               "n": len(mine["rouge_l_vs_teacher"])},
        "headline_rouge_l": _with_ci(list(mine["headline_rouge_l"].values())),
        "section_accuracy": {"mean": _mean(section), "low": low_high[0], "high": low_high[1], "n": len(section)},
        "vs_teacher": None,
    }
    if t is not None and name != teacher_name:
        theirs = _scores(t, prompts)
        quality["vs_teacher"] = {k: _paired(mine[k], theirs[k]) for k in mine}
    examples = {
        "windows": [{"id": w["id"], "tokens": w["tokens"], "mean_nll": mine["mean_nll"].get(w["id"]),
                     "top1_agreement": per_window_agreement.get(w["id"])} for w in r["windows"]],
        "prompts": [{"source_id": p["source_id"], "kind": p["kind"], "response": r["responses"][i],
                     "rouge_l_vs_teacher": mine["rouge_l_vs_teacher"].get(i),
                     "rouge_l_vs_reference": mine["headline_rouge_l"].get(i),
                     "top1_agreement_on_teacher_response": per_prompt_agreement.get(i)}
                    for i, p in enumerate(prompts)],
        "sections": [{"source_id": prompts[s["index"]]["source_id"], "choice": s["choice"],
                      "reference": prompts[s["index"]]["reference"], "scores": s["scores"]} for s in r["sections"]],
        "decode_token_ids": r["generation"]["decode_token_ids"],
    }
    return quality, examples


def pool_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One ``generation`` record from each round's (round 1 first): per-token decode latency and decode tokens/s
    over every round's timed steps pooled; time to first token, prefill, end-to-end and batch-8 figures as the
    median of the rounds; each round's decode tokens/s kept (``decode_rounds_tokens_per_s``) to show the spread."""
    import statistics

    first = rounds[0]
    samples = [g.get("decode_samples_ms") or [] for g in rounds]
    out = {k: v for k, v in first.items() if k != "decode_samples_ms"}
    if any(samples):
        lat, _ = pool_samples(samples)
        out["decode_ms_per_token"], out["decode_tokens_per_s"] = lat.__dict__, 1000.0 / lat.mean
    out["decode_rounds_tokens_per_s"] = [g["decode_tokens_per_s"] for g in rounds]
    if len(rounds) > 1:
        def median(values: list[Any]) -> float | None:
            values = [v for v in values if v is not None]
            return statistics.median(values) if values else None

        for key in ("generate_tokens_per_s", "batch8_tokens_per_s"):
            out[key] = median([g.get(key) for g in rounds])
        out["prefill_tokens_per_s"] = {k: median([g["prefill_tokens_per_s"].get(k) for g in rounds])
                                       for k in first["prefill_tokens_per_s"]}
        out["ttft_ms"] = {k: None if v is None else {q: median([(g["ttft_ms"].get(k) or {}).get(q) for g in rounds])
                                                     for q in v} for k, v in first["ttft_ms"].items()}
        out["decode_matches_generate"] = all(g.get("decode_matches_generate") for g in rounds)
    return out


def _bandwidth(r: dict, machine: dict[str, Any] | None) -> dict[str, Any] | None:
    """How close an ONNX decoder runs to the memory limit: each decode step reads every weight once (the embedding
    table but one row), so decode tokens/s × those bytes is the bandwidth it uses (a lower bound: the KV cache and
    activations are left out), and that over the machine's measured read bandwidth (``machine.memory_bandwidth``)
    is the share of the limit it reaches; its share of a copy's read + write bandwidth is recorded beside."""
    if r.get("weight_bytes") is None:
        return None
    used = r["generation"]["decode_tokens_per_s"] * r["weight_bytes"] / 1e9
    limit, copy = (machine or {}).get("gb_per_s"), (machine or {}).get("copy_gb_per_s")
    return {"bytes_per_token": r["weight_bytes"], "gb_per_s": used, "machine_gb_per_s": limit,
            "fraction_of_limit": used / limit if limit else None,
            "fraction_of_copy": used / copy if copy else None}


def _row(v: Variant, r: dict, quality: dict, bandwidth: dict[str, Any] | None = None) -> dict[str, Any]:
    generation = {k: val for k, val in r["generation"].items() if k != "decode_token_ids"}
    return {
        "name": v.name, "model": v.model, "format": v.format, "precision": v.precision, "device": r["device"],
        "path": str(v.path), "parameters": r["parameters"], "size_mb": model_size_mb(v),
        "peak_rss_mb": r["peak_rss_mb"], "peak_gpu_mb": r["peak_gpu_mb"], "load_seconds": r["load_seconds"],
        "context": r["context"],
        "quality": quality,
        "generation": generation,
        "bandwidth": _bandwidth(r, bandwidth),
        # the report's generic columns: batch-1 latency and throughput are decode's
        "latency_ms": {"batch_1": generation["decode_ms_per_token"]},
        "throughput_per_s": {"batch_1": generation["decode_tokens_per_s"]},
    }


# ---------------------------------------------------------------------------------------------------------------
# The stage


def bench_lm(cfg: LMBenchConfig, variants: list[Variant], data_dir: Path, out: Path) -> BenchResult:
    """Measure every causal-LM variant, each in its own process, on the LM data folder ``data_dir``; writes
    ``out/bench.json`` (= the returned result), ``out/examples.json``, ``out/inputs.json`` and
    ``out/bench_record.json``."""
    from rich.console import Console

    _check_variants(variants)
    data_dir = Path(data_dir)
    prompts = select_prompts(read_test_prompts(data_dir / "test.jsonl"), cfg.max_prompts)
    heldout = read_heldout(data_dir / "heldout.jsonl")[:cfg.max_heldout]
    if not prompts and not heldout:
        raise UserError(f"{data_dir} holds neither test prompts (test.jsonl) nor held-out text (heldout.jsonl): "
                        "nothing to measure")
    started = time.time()
    threads = cfg.threads or default_threads()
    teacher = reference_teacher(variants)
    teacher_name = getattr(teacher, "name", None)
    console = Console(stderr=True)
    with atomic_dir(out) as tmp:
        inputs = tmp / "inputs.json"
        write_json(inputs, {"heldout": heldout, "prompts": prompts})
        work = tmp / "workers"
        work.mkdir()
        tokens = tokenizer = None
        if any(v.format == "onnx" for v in variants):
            tokens, tokenizer = _worker_tokens(variants, inputs, cfg, work / "tokens.json")
        per_round = dataclasses.replace(cfg, repeats=max(1, math.ceil(cfg.repeats / cfg.rounds)))

        # round 1 measures everything; later rounds time the speed workloads again (compresskit.bench.run_rounds)
        def measure(v: Variant, r: int) -> dict[str, Any]:
            extra = {"speed_only": r > 1}
            tag = f".round{r}" if r > 1 else ""
            if v.format == "onnx":
                res = run_worker("compresskit.tasks.causal_lm.bench_worker_onnx", v, per_round, inputs, work, threads,
                                 {"tokens": str(tokens), **extra}, tag)
                if r == 1:
                    res["responses"] = _decoded(tokenizer, res.pop("response_ids"))
            else:
                res = run_worker("compresskit.tasks.causal_lm.bench_worker", v, per_round, inputs, work, threads,
                                 extra, tag)
            g = res["generation"]
            console.log(f"{v.name}: decode {g['decode_tokens_per_s']:.1f} tokens/s, "
                        f"generate {g['generate_tokens_per_s']:.1f} tokens/s"
                        + (f" (round {r})" if cfg.rounds > 1 else ""))
            return res

        def describe(v: Variant, i: int, r: int) -> str:
            return (f"benchmarking {v.name} ({i}/{len(variants)}): "
                    + (f"{len(heldout)} held-out texts, {len(prompts)} prompts, " if r == 1 else "speed, ")
                    + f"{threads} threads" + (f", round {r} of {cfg.rounds}" if cfg.rounds > 1 else ""))

        with console.status("") as status:
            results, _ = run_rounds(variants, cfg.rounds, measure, status.update, describe)
        raw = {name: {**res[0], "generation": pool_rounds([r["generation"] for r in res])}
               for name, res in results.items()}
        t = raw[teacher_name] if teacher_name else None
        machine = machine_info(threads)
        bandwidth = None
        if any(v.format == "onnx" for v in variants):
            from compresskit.machine import fresh_memory_bandwidth
            bandwidth = machine["memory_bandwidth"] = fresh_memory_bandwidth(threads)
        rows, examples = [], {}
        for v in variants:
            quality, examples[v.name] = _quality(v.name, raw[v.name], teacher_name, t, prompts)
            rows.append(_row(v, raw[v.name], quality, bandwidth))
        result = BenchResult(TASK, cfg.window, len(prompts), threads, teacher_name, machine, rows)
        write_json(tmp / "bench.json", result.to_dict())
        write_json(tmp / "examples.json", {"reference_teacher": teacher_name, "variants": examples})
        write_json(tmp / "bench_record.json", stage_record(
            "bench", dataclasses.asdict(cfg), {"data": str(data_dir), "variants": [v.name for v in variants]},
            started, task=TASK))
        shutil.rmtree(work)
    return result
