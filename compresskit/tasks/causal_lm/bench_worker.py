"""One causal-LM benchmark measurement in its own process:
``python -m compresskit.tasks.causal_lm.bench_worker SPEC RESULT``.

The parent (``lm.bench``) writes the spec: the variant, the config, the path of ``inputs.json`` (the held-out texts
and test prompts every variant sees) and the thread count. This process loads the one model, measures it and writes
raw results; everything that compares two models (agreement, ROUGE-L, bootstrap intervals) is the parent's.

Why our own teacher-forced pass instead of ``lm.quality.perplexity`` / ``section_choice``: those build their batches
on the CPU, and here the model may sit on a GPU; and one pass gives each window's NLL and its argmax ids together.
The tests check that the numbers equal ``lm.quality``'s on the CPU.

A ``UserError`` (a prompt longer than the model's context, no GPU for ``--device cuda``…) is printed as one line
on stderr with exit code 2, so the parent can show it as the user's problem, not a crash.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError
from compresskit.machine import peak_rss_mb
from compresskit.timing import Latency, time_runs

_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
_GENERATE_BATCH = 16  # as lm.generate writes the cached answers: decode is memory-bound, 16 cost little more than 1
_TF_BATCH = 4  # sequences per teacher-forced pass


def _ids_sha256(sequences: list[list[int]]) -> str:
    """A hash of token-id sequences: the parent compares it across variants (same tokens, comparable argmaxes)."""
    return hashlib.sha256(json.dumps(sequences).encode()).hexdigest()


def teacher_forced(model: Any, examples: list, pad_id: int, device: str, batch_size: int = _TF_BATCH,
                   chunk: int = 256) -> list[tuple[float, int, list[int]]]:
    """Per ``TokenizedExample``: the summed NLL (nats) of its labelled next tokens, how many there are, and the
    model's argmax next-token id at each of those positions (in order).

    Logits are made ``chunk`` positions at a time from the final hidden states, as ``lm.quality`` does, so memory
    does not grow with positions × vocabulary.
    """
    import torch
    import torch.nn.functional as F

    from compresskit.tasks.causal_lm.kd_losses import (
        IGNORE_INDEX,
        final_hidden_states,
        lm_head,
        next_token_targets,
    )
    from compresskit.tasks.causal_lm.prompts import collate

    head = lm_head(model)
    out: list[tuple[float, int, list[int]]] = []
    with torch.inference_mode():
        for s in range(0, len(examples), batch_size):
            batch = {k: t.to(device) for k, t in collate(examples[s:s + batch_size], pad_id).items()}
            hidden = final_hidden_states(model, batch["input_ids"], batch["attention_mask"])
            targets = next_token_targets(batch["labels"])
            keep = targets != IGNORE_INDEX
            rows, ys = hidden[keep], targets[keep]  # (N, H), (N,): example by example, position by position
            nll, top = [torch.zeros(0, dtype=torch.float64)], [torch.zeros(0, dtype=torch.long)]
            for c in range(0, rows.shape[0], chunk):
                logits = head.logits(rows[c:c + chunk]).float()
                nll.append(-F.log_softmax(logits, -1).gather(-1, ys[c:c + chunk, None])[:, 0].double().cpu())
                top.append(logits.argmax(-1).cpu())
            counts = keep.sum(-1).tolist()
            for n, t, c in zip(torch.split(torch.cat(nll), counts), torch.split(torch.cat(top), counts), counts):
                out.append((float(n.sum()), int(c), t.tolist()))
    return out


def _prompt_ids(tokenizer: Any, record: dict, context: int) -> list[int]:
    """A test prompt's ids as the data stage tokenised it (``prompts.tokenize_example``: no second BOS after a
    chat template), refused naming the prompt when longer than the model's context."""
    from compresskit.tasks.causal_lm.prompts import PromptExample, tokenize_example

    example = PromptExample(record["prompt"], record["kind"], record["source_id"])  # no response: the prompt alone
    return tokenize_example(tokenizer, example, context, context).input_ids


def _section_choices(model: Any, tokenizer: Any, prompts: list[list[int]], pad_id: int, device: str
                     ) -> list[tuple[str, list[float]]]:
    """For each prompt (ids), the section name of highest summed log-likelihood as its continuation, and the five
    scores: ``lm.quality.section_choice``, with the model on ``device``."""
    from compresskit.tasks.causal_lm.kd_losses import IGNORE_INDEX
    from compresskit.tasks.causal_lm.prompts import SECTIONS, TokenizedExample

    names = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in SECTIONS]
    out = []
    for head in prompts:
        examples = [TokenizedExample(head + ids, [IGNORE_INDEX] * len(head) + ids, c) for ids, c in zip(names, SECTIONS)]
        scores = [-nll for nll, _, _ in teacher_forced(model, examples, pad_id, device, batch_size=len(SECTIONS))]
        out.append((SECTIONS[max(range(len(scores)), key=scores.__getitem__)], scores))  # first of equal maxima
    return out


def _speed_prompt(tokenizer: Any, texts: list[str], n: int) -> list[int]:
    """Exactly ``n`` tokens of held-out text (the texts one after another, again from the start if too short)."""
    ids: list[int] = []
    for text in texts:
        ids += tokenizer(text, add_special_tokens=True)["input_ids"]
    if not ids:
        raise UserError("the held-out texts tokenise to nothing: no prompt for the speed workloads")
    return (ids * (n // len(ids) + 1))[:n]


def _speed_inputs(tokenizer: Any, heldout: list[dict], prompts: list[dict], context: int
                  ) -> tuple[list[str], list[int]]:
    """What the speed workloads read, the same in every worker and round: the texts the time-to-first-token prompts
    are cut from (held-out text; data without any, a prompt file, gives its prompts and answers instead) and the
    decode prompt (the first test prompt, else 16 tokens of those texts)."""
    texts = [h["text"] for h in heldout] or [p["prompt"] + (p["response"] or "") for p in prompts]
    decode = _prompt_ids(tokenizer, prompts[0], context) if prompts else _speed_prompt(tokenizer, texts, 16)
    return texts, decode


def time_to_first_token(first_token: Callable[[Any], Any], prompts: dict[int, Any], repeats: int,
                        sync: Callable[[], None] = lambda: None) -> tuple[dict, dict]:
    """Time to first token (p50, p90 ms) and prefill tokens/s per prompt length, keyed ``prompt_<n>``;
    ``prompts`` maps each length to the prompt ``first_token`` takes, or None where the model cannot read it."""
    ttft: dict[str, dict[str, float] | None] = {}
    prefill: dict[str, float | None] = {}
    for n, ids in prompts.items():
        key = f"prompt_{n}"
        if ids is None:
            ttft[key] = prefill[key] = None
            continue
        lat = Latency.from_samples(time_runs(first_token, [ids], warmup=1, min_iterations=repeats, sync=sync))
        ttft[key] = {"p50": lat.p50, "p90": lat.p90}
        prefill[key] = n * 1000.0 / lat.mean
    return ttft, prefill


def speed_record(ttft: dict, prefill: dict, step_ms: list[float], decoded: list[int], generated: list[int],
                 generate_s: float, decode_prompt: list[int], batch8_tokens_per_s: float) -> dict[str, Any]:
    """The ``generation`` result of a worker, the same for every runtime: time to first token and prefill per
    prompt length, per-token decode latency from the timed steps ``step_ms``, the end-to-end generation, batch-8
    throughput, and whether the timed decode made the tokens the generation made."""
    per_token = Latency.from_samples(step_ms)
    return {
        "batch8_tokens_per_s": batch8_tokens_per_s,
        "ttft_ms": ttft,
        "prefill_tokens_per_s": prefill,
        "decode_tokens_per_s": 1000.0 / per_token.mean,
        "decode_ms_per_token": per_token.__dict__,
        "decode_samples_ms": [round(t, 4) for t in step_ms],  # pooled across rounds by the parent
        "generate_tokens_per_s": len(generated) / generate_s,
        "decode_prompt_tokens": len(decode_prompt),
        "decode_new_tokens": len(decoded),
        "generate_new_tokens": len(generated),
        "decode_matches_generate": decoded == generated,
        "decode_token_ids": decoded,
    }


def generation_speed(model: Any, tokenizer: Any, cfg: dict, texts: list[str], decode_prompt: list[int],
                     context: int, device: str, sync: Callable[[], None]) -> dict[str, Any]:
    """Batch-1 speed: time to first token per prompt length, and a greedy decode of exactly ``decode_tokens``.

    Decode is a manual loop over the KV cache, each step timed (forward, argmax, sync): the first new token comes
    from the prefill, the other ``decode_tokens − 1`` from timed steps, so the per-token latencies are pure decode.
    EOS is suppressed, as ``min_new_tokens`` does in ``generate``, so both make exactly ``decode_tokens`` tokens and
    the same ones. Then one ``model.generate`` of the same length is timed end to end, prefill included.
    """
    import torch

    kwargs = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos

    def first_token(ids: torch.Tensor) -> tuple[int, Any]:
        out = model(input_ids=ids, use_cache=True, **kwargs)
        return int(out.logits[0, -1].argmax()), out.past_key_values

    with torch.inference_mode():
        ttft, prefill = time_to_first_token(
            first_token, {n: None if n > context else torch.tensor([_speed_prompt(tokenizer, texts, n)], device=device)
                          for n in cfg["prompt_lengths"]}, cfg["repeats"], sync)

        steps = cfg["decode_tokens"]
        if len(decode_prompt) + steps > context:
            raise UserError(f"the decode workload needs {len(decode_prompt)} prompt tokens + --decode-tokens "
                            f"{steps}, more than the model's context of {context}; lower --decode-tokens")
        prompt = torch.tensor([decode_prompt], device=device)

        def pick(out: Any) -> torch.Tensor:
            logits = out.logits[:, -1].float()
            if eos is not None:
                logits[:, eos] = float("-inf")
            return logits.argmax(-1, keepdim=True)  # (1, 1)

        def decode(n_new: int) -> tuple[list[int], list[float]]:
            out = model(input_ids=prompt, use_cache=True, **kwargs)
            new, times = [pick(out)], []
            for _ in range(n_new - 1):
                t0 = time.perf_counter()
                out = model(input_ids=new[-1], past_key_values=out.past_key_values, use_cache=True, **kwargs)
                new.append(pick(out))
                sync()
                times.append((time.perf_counter() - t0) * 1000.0)
            return [int(t) for t in new], times

        decode(min(steps, 8))  # warm-up: the first steps allocate the cache and pick kernels
        sync()
        tokens, samples = [], []
        for _ in range(cfg["repeats"]):
            tokens, times = decode(steps)
            samples += times

        sync()
        t0 = time.perf_counter()
        generated = model.generate(input_ids=prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=steps,
                                   min_new_tokens=steps, do_sample=False, temperature=None, top_p=None, top_k=None,
                                   eos_token_id=eos, pad_token_id=pad)
        sync()
        generate_s = time.perf_counter() - t0
    generate_new = generated[0, prompt.shape[1]:].tolist()
    batch = prompt.repeat(8, 1)  # 8 requests answered together, prefill included
    sync()
    t0 = time.perf_counter()
    with torch.inference_mode():
        model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), max_new_tokens=steps,
                       min_new_tokens=steps, do_sample=False, temperature=None, top_p=None, top_k=None,
                       eos_token_id=eos, pad_token_id=pad)
    sync()
    batch8 = 8 * steps / (time.perf_counter() - t0)
    return speed_record(ttft, prefill, samples, tokens, generate_new, generate_s, decode_prompt, batch8)


def measure(spec: dict) -> dict[str, Any]:
    """Load the spec's variant and measure it: held-out windows, teacher-forced responses, greedy responses,
    section choices and generation speed. Returns the raw result the parent reads."""
    import torch
    from transformers import AutoTokenizer

    from compresskit.tasks.causal_lm.prompts import (
        PromptExample,
        context_length,
        text_windows,
        tokenize_example,
    )
    from compresskit.tasks.causal_lm.teacher import load_causal_lm
    from compresskit.training import resolve_device

    v, cfg, threads = spec["variant"], spec["config"], spec["threads"]
    inputs = json.loads(Path(spec["inputs"]).read_text(encoding="utf-8"))
    heldout, prompts = inputs["heldout"], inputs["prompts"]
    torch.set_num_threads(threads)
    device = resolve_device(cfg["device"])
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    started = time.perf_counter()
    model = load_causal_lm(str(v["path"]))
    model = model.to(device=device, dtype=getattr(torch, _DTYPES[v["precision"]]))
    tokenizer = AutoTokenizer.from_pretrained(str(v["path"]))
    sync()
    load_seconds = time.perf_counter() - started
    context = context_length(model.config)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)

    if spec.get("speed_only"):  # a later round (``LMBenchConfig.rounds``): the speed workloads alone
        texts, decode_prompt = _speed_inputs(tokenizer, heldout, prompts, context)
        return {"generation": generation_speed(model, tokenizer, cfg, texts, decode_prompt, context, device, sync)}

    # held-out windows: perplexity and agreement on text
    if cfg["window"] > context:
        raise UserError(f"--perplexity-window {cfg['window']} is longer than {v['name']}'s context of {context} "
                        "tokens; lower --perplexity-window")
    windows = text_windows(tokenizer, [h["text"] for h in heldout], cfg["window"], max_windows_per_text=1)
    window_ids = [heldout[int(w.source_id.split()[1])]["id"] for w in windows]  # "text {i} window 0"
    scored = teacher_forced(model, windows, pad_id, device)

    # teacher-forced on the teacher's cached responses: agreement where the teacher answered
    with_response = [i for i, p in enumerate(prompts) if p.get("response") is not None]
    forced_examples = [tokenize_example(tokenizer, PromptExample(prompts[i]["prompt"], prompts[i]["kind"],
                                                                 prompts[i]["source_id"]), context, context,
                                        response=prompts[i]["response"]) for i in with_response]
    forced = teacher_forced(model, forced_examples, pad_id, device)

    # greedy answers and section choices
    prompt_ids = [_prompt_ids(tokenizer, p, context) for p in prompts]
    for p, ids in zip(prompts, prompt_ids):
        if len(ids) + cfg["max_new_tokens"] > context:
            raise UserError(f"{p['source_id']}: the prompt is {len(ids)} tokens; with --max-new-tokens "
                            f"{cfg['max_new_tokens']} it exceeds {v['name']}'s context of {context}")
    # batched as the data stage wrote the teacher's cached answers, so the teacher's fresh answers match them
    from compresskit.tasks.causal_lm.generate import greedy_from_ids

    responses = greedy_from_ids(model, tokenizer, prompt_ids, cfg["max_new_tokens"], _GENERATE_BATCH)
    section_idx = [i for i, p in enumerate(prompts) if p["kind"] == "section"]
    sections = _section_choices(model, tokenizer, [prompt_ids[i] for i in section_idx], pad_id, device)

    texts, decode_prompt = _speed_inputs(tokenizer, heldout, prompts, context)
    generation = generation_speed(model, tokenizer, cfg, texts, decode_prompt, context, device, sync)
    peak_gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {
        "device": device,
        "parameters": sum(p.numel() for p in model.parameters()),  # parameters() counts tied weights once
        "context": context,
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": peak_gpu,
        "windows": [{"id": i, "nll": nll, "tokens": n, "argmax": top} for i, (nll, n, top) in zip(window_ids, scored)],
        "windows_sha256": _ids_sha256([w.input_ids for w in windows]),
        "forced": [{"index": i, "nll": nll, "tokens": n, "argmax": top}
                   for i, (nll, n, top) in zip(with_response, forced)],
        "forced_sha256": _ids_sha256([e.input_ids for e in forced_examples]),
        "responses": responses,
        "sections": [{"index": i, "choice": c, "scores": s} for i, (c, s) in zip(section_idx, sections)],
        "generation": generation,
    }


def tokenized_inputs(tokenizer: Any, inputs: dict, cfg: dict, context: int) -> dict[str, Any]:
    """Every token sequence ``measure`` reads, made the way it makes them, for a worker that has no tokenizer of
    its own (``lm.bench_worker_onnx``: transformers' tokenizers import torch, which would count in its memory).

    ``windows`` and ``forced``: ids and labels (-100 where a position does not count) with their hashes, which the
    parent compares across variants; ``prompts``: each test prompt's ids; ``sections``: the section prompts'
    indices and the five names' ids; ``speed``: the time-to-first-token prompts per length and the decode prompt.
    """
    from compresskit.tasks.causal_lm.prompts import SECTIONS, PromptExample, text_windows, tokenize_example

    heldout, prompts = inputs["heldout"], inputs["prompts"]
    windows = text_windows(tokenizer, [h["text"] for h in heldout], cfg["window"], max_windows_per_text=1)
    with_response = [i for i, p in enumerate(prompts) if p.get("response") is not None]
    forced = [tokenize_example(tokenizer, PromptExample(prompts[i]["prompt"], prompts[i]["kind"],
                                                        prompts[i]["source_id"]), context, context,
                               response=prompts[i]["response"]) for i in with_response]
    prompt_ids = [_prompt_ids(tokenizer, p, context) for p in prompts]
    texts, decode_prompt = _speed_inputs(tokenizer, heldout, prompts, context)
    return {
        "windows": [{"id": heldout[int(w.source_id.split()[1])]["id"], "input_ids": w.input_ids,
                     "labels": w.labels} for w in windows],
        "windows_sha256": _ids_sha256([w.input_ids for w in windows]),
        "forced": [{"index": i, "input_ids": e.input_ids, "labels": e.labels} for i, e in zip(with_response, forced)],
        "forced_sha256": _ids_sha256([e.input_ids for e in forced]),
        "prompts": prompt_ids,
        "sections": {"index": [i for i, p in enumerate(prompts) if p["kind"] == "section"],
                     "names": list(SECTIONS),
                     "name_ids": [tokenizer(c, add_special_tokens=False)["input_ids"] for c in SECTIONS]},
        "speed": {f"prompt_{n}": _speed_prompt(tokenizer, texts, n) for n in cfg["prompt_lengths"] if n <= context},
        "decode_prompt": decode_prompt,
        "eos_id": tokenizer.eos_token_id,
    }


if __name__ == "__main__":
    from compresskit.bench import worker_main

    worker_main(measure)
