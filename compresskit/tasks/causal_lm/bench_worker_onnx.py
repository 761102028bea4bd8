"""One exported causal LM measured in its own process, torch never imported:
``python -m compresskit.tasks.causal_lm.bench_worker_onnx SPEC RESULT``.

The counterpart of ``lm.bench_worker`` for an ONNX decoder folder (ONNX Runtime GenAI's layout: ``model.onnx``,
``genai_config.json``, tokenizer). It writes the same raw result, so the parent compares every variant alike:

- quality from plain ONNX Runtime (``lm.onnx_decoder.OnnxDecoder``): per held-out window and per teacher answer the
  summed NLL and argmax ids of a full forward pass; greedy answers through the KV cache (as token ids: the parent
  decodes them with the teacher's tokenizer); the five section names scored after each section prompt;
- speed from ONNX Runtime GenAI, the runtime ``compresskit generate`` uses: time to first token per prompt length,
  per-token decode latency over exactly ``decode_tokens`` new tokens (EOS held back by ``min_length``), and one
  end-to-end generation;
- peak RSS of this process after the speed workloads, before the quality passes open a second session: no torch
  in it, so it is the runtime's own footprint.

The token sequences come from the parent (``bench_worker.tokenized_inputs``), made with the teacher's tokenizer
exactly as the PyTorch worker makes them: transformers' tokenizers import torch. What this worker shares with the
PyTorch one (``lm.bench_worker``: its timing helpers and result record) imports no torch at module level.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError
from compresskit.machine import peak_rss_mb
from compresskit.tasks.causal_lm.bench_worker import speed_record, time_to_first_token

IGNORE_INDEX = -100


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    x = logits.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def teacher_forced(decoder: Any, examples: list[dict]) -> list[tuple[float, int, list[int]]]:
    """Per example (``input_ids``, ``labels``): summed NLL of its labelled next tokens, their count and the argmax
    ids there, from one full forward pass (batch 1: no padding to get wrong)."""
    out = []
    for ex in examples:
        ids, labels = np.asarray(ex["input_ids"], dtype=np.int64), np.asarray(ex["labels"], dtype=np.int64)
        targets = labels[1:]
        keep = np.nonzero(targets != IGNORE_INDEX)[0]
        if not len(keep):
            out.append((0.0, 0, []))
            continue
        logits = decoder.logits(ids[None, :])[0, :-1][keep]  # position t predicts token t + 1
        logp = _log_softmax(logits)
        nll = float(-logp[np.arange(len(keep)), targets[keep]].sum())
        out.append((nll, int(len(keep)), logits.argmax(-1).astype(int).tolist()))
    return out


def _sections(decoder: Any, prompts: list[list[int]], names: list[str], name_ids: list[list[int]]
              ) -> list[tuple[str, list[float]]]:
    out = []
    for head in prompts:
        examples = [{"input_ids": head + ids, "labels": [IGNORE_INDEX] * len(head) + ids} for ids in name_ids]
        scores = [-nll for nll, _, _ in teacher_forced(decoder, examples)]
        out.append((names[int(np.argmax(scores))], scores))  # argmax: the first of equal maxima, as in PyTorch
    return out


def _genai_model(folder: Path, threads: int) -> Any:
    """An ONNX Runtime GenAI model of ``folder`` on the CPU with ``threads`` intra-op threads."""
    import onnxruntime_genai as og

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads,
                                                                         "inter_op_num_threads": 1}}}}))
    return og.Model(config)


def generation_speed(model: Any, cfg: dict, speed: dict[str, list[int]], decode_prompt: list[int],
                     context: int, genai_config: dict) -> dict[str, Any]:
    """Batch-1 speed with ONNX Runtime GenAI: time to first token per prompt length (generator made, prompt
    appended, first token chosen), then a greedy decode of exactly ``decode_tokens`` with each step timed, then one
    generation end to end."""
    import onnxruntime_genai as og

    from compresskit.tasks.causal_lm.onnx_generate import kv_capacity

    def generator(prompt_len: int, new: int, min_new: int = 0) -> Any:
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, max_length=kv_capacity(genai_config, prompt_len + new),
                                  min_length=prompt_len + min_new)
        return og.Generator(model, params)

    def first_token(ids: list[int]) -> int:
        g = generator(len(ids), 1)
        g.append_tokens(ids)
        g.generate_next_token()
        return int(g.get_next_tokens()[0])

    # GenAI needs room for the first new token: a prompt of the whole context is not timed
    ttft, prefill = time_to_first_token(first_token, {n: speed.get(f"prompt_{n}") if n < context else None
                                                      for n in cfg["prompt_lengths"]}, cfg["repeats"])

    steps = cfg["decode_tokens"]
    if len(decode_prompt) + steps > context:
        raise UserError(f"the decode workload needs {len(decode_prompt)} prompt tokens + --decode-tokens {steps}, "
                        f"more than the model's context of {context}; lower --decode-tokens")

    def decode(n_new: int) -> tuple[list[int], list[float]]:
        g = generator(len(decode_prompt), n_new, n_new)
        g.append_tokens(decode_prompt)
        g.generate_next_token()  # the first new token: prefill, not decode
        tokens, times = [int(g.get_next_tokens()[0])], []
        for _ in range(n_new - 1):
            t0 = time.perf_counter()
            g.generate_next_token()
            tokens.append(int(g.get_next_tokens()[0]))
            times.append((time.perf_counter() - t0) * 1000.0)
        return tokens, times

    decode(min(steps, 8))  # warm-up
    tokens, samples = [], []
    for _ in range(cfg["repeats"]):
        tokens, times = decode(steps)
        samples += times
    t0 = time.perf_counter()
    g = generator(len(decode_prompt), steps, steps)
    g.append_tokens(decode_prompt)
    for _ in range(steps):  # counted: max_length may be a sliding window's length (kv_capacity)
        g.generate_next_token()
    generate_s = time.perf_counter() - t0
    generated = [int(t) for t in g.get_sequence(0)][len(decode_prompt):]
    return speed_record(ttft, prefill, samples, tokens, generated, generate_s, decode_prompt,
                        _batch_throughput(model, decode_prompt, steps, 8, genai_config))


def _batch_throughput(model: Any, prompt: list[int], new: int, batch: int, genai_config: dict) -> float:
    """New tokens per second of a greedy generation of ``new`` tokens for ``batch`` copies of ``prompt`` at once,
    prefill included (what a server answering ``batch`` requests together gets)."""
    import onnxruntime_genai as og

    from compresskit.tasks.causal_lm.onnx_generate import kv_capacity

    params = og.GeneratorParams(model)
    params.set_search_options(do_sample=False, batch_size=batch,
                              max_length=kv_capacity(genai_config, len(prompt) + new), min_length=len(prompt) + new)
    t0 = time.perf_counter()
    g = og.Generator(model, params)
    g.append_tokens(np.asarray([prompt] * batch, dtype=np.int32))
    for _ in range(new):  # counted: max_length may be a sliding window's length (kv_capacity)
        g.generate_next_token()
    return batch * new / (time.perf_counter() - t0)


def bytes_read_per_token(folder: Path) -> int:
    """Bytes of weights one decode step reads: every initializer of the graph except the tables only a ``Gather``
    reads (the token embedding: one row a token, not the whole table). Read from the graph's initializer shapes
    and types (external data is not loaded)."""
    import onnx

    model = onnx.load(str(Path(folder) / "model.onnx"), load_external_data=False)
    gathered, used_otherwise = set(), set()
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            (gathered if node.op_type == "Gather" and i == 0 else used_otherwise).add(name)
    total = 0
    for init in model.graph.initializer:
        if init.name in gathered and init.name not in used_otherwise:
            continue
        n = 1
        for d in init.dims:
            n *= d
        bits = {onnx.TensorProto.INT4: 4, onnx.TensorProto.UINT4: 4}.get(init.data_type)
        total += n * bits // 8 if bits else n * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
    return total


def measure(spec: dict) -> dict[str, Any]:
    """Load the spec's ONNX variant and measure it; returns the raw result ``lm.bench`` reads (as
    ``lm.bench_worker.measure``'s, with ``response_ids`` in place of decoded responses)."""
    from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder

    v, cfg, threads = spec["variant"], spec["config"], spec["threads"]
    folder = Path(v["path"])
    if not (folder / "genai_config.json").is_file():
        raise UserError(f"{v['name']}: {folder} is not an exported LLM folder (no genai_config.json)")
    tokens = json.loads(Path(spec["tokens"]).read_text(encoding="utf-8"))
    genai_config = json.loads((folder / "genai_config.json").read_text())
    context = int(genai_config["model"]["context_length"])
    longest = max([len(w["input_ids"]) for w in tokens["windows"]] + [0])
    if longest > context:
        raise UserError(f"--perplexity-window {cfg['window']} is longer than {v['name']}'s context of {context} "
                        "tokens; lower --perplexity-window")
    # speed first, with the runtime alone in the process: its peak memory is the deployment's footprint (the
    # quality passes below open a second session of the same graph)
    started = time.perf_counter()
    model = _genai_model(folder, threads)
    load_seconds = time.perf_counter() - started
    generation = generation_speed(model, cfg, tokens["speed"], tokens["decode_prompt"], context, genai_config)
    peak_rss = peak_rss_mb()
    del model
    if spec.get("speed_only"):  # a later round (``LMBenchConfig.rounds``): the speed workloads alone
        return {"generation": generation}  # the parent reads round 1's memory and quality

    decoder = OnnxDecoder(folder, threads=threads)
    scored = teacher_forced(decoder, tokens["windows"])
    forced = teacher_forced(decoder, tokens["forced"])
    for ids in tokens["prompts"]:
        if len(ids) + cfg["max_new_tokens"] > context:
            raise UserError(f"a test prompt of {len(ids)} tokens with --max-new-tokens {cfg['max_new_tokens']} "
                            f"exceeds {v['name']}'s context of {context}")
    response_ids = [decoder.greedy(np.asarray([ids], dtype=np.int64), cfg["max_new_tokens"], tokens["eos_id"])
                    for ids in tokens["prompts"]]
    sec = tokens["sections"]
    sections = _sections(decoder, [tokens["prompts"][i] for i in sec["index"]], sec["names"], sec["name_ids"])
    return {
        "device": "cpu",
        "parameters": v.get("parameters"),
        "context": context,
        "load_seconds": round(load_seconds, 3),
        "peak_rss_mb": peak_rss,
        "peak_gpu_mb": None,
        "weight_bytes": bytes_read_per_token(folder),
        "windows": [{"id": w["id"], "nll": nll, "tokens": n, "argmax": top}
                    for w, (nll, n, top) in zip(tokens["windows"], scored)],
        "windows_sha256": tokens["windows_sha256"],
        "forced": [{"index": f["index"], "nll": nll, "tokens": n, "argmax": top}
                   for f, (nll, n, top) in zip(tokens["forced"], forced)],
        "forced_sha256": tokens["forced_sha256"],
        "response_ids": response_ids,
        "sections": [{"index": i, "choice": c, "scores": s} for i, (c, s) in zip(sec["index"], sections)],
        "generation": generation,
    }


if __name__ == "__main__":
    from compresskit.bench import worker_main

    worker_main(measure)
