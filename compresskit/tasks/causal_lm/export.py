"""Export stage of the causal-LM task: the student as a decoder graph with its KV cache, verified against PyTorch,
the fastest verified candidate kept.

Candidates (``LMExportConfig.candidates``):

- ``genai``: ONNX Runtime GenAI's model builder (``lm.onnx_build.build_genai``): fused attention with a shared
  KV buffer, what ``compresskit generate`` and ONNX Runtime GenAI run best; Llama, Mistral and Qwen2 families.
- ``torch``: ``torch.onnx.export`` of the model with its past key values (``lm.onnx_build.torch_onnx_decoder``),
  with the builder's input/output names: any family transformers can trace, GPT-2 included.

Each candidate is verified (``lm.onnx_verify.verify_decoder``) on validation prompts: logits at prefill and at every
step of a greedy continuation through the cache against PyTorch's, and greedy-token agreement. Each verified one is
timed on the same decode workload in this process (per-token latency through the cache, plain ONNX Runtime), and
the fastest becomes the run's ``onnx/student``; ``export.json`` names its route (``path``: ``genai-builder`` or
``torch.onnx``) and why each other route was not kept (``other_paths``: its build error, its failed verification or
its speed). When none verifies the stage fails with ``VerificationError``
(exit 3): a graph that does not compute what the student computes must not reach a report.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, VerificationError, atomic_dir, stage_record, write_json
from compresskit.tasks.causal_lm.onnx_verify import DecoderParity
from compresskit.timing import SETTLE_SECONDS

CANDIDATES = ("genai", "torch")
PATHS = {"genai": "genai-builder", "torch": "torch.onnx"}
"""How ``export.json`` (``path``, ``other_paths``) and the quantize stage's records name each candidate's route."""


@dataclass(frozen=True)
class LMExportConfig:
    """Which decoder graphs to try and how they are checked."""

    candidates: tuple[str, ...] = CANDIDATES
    """Export routes to try: ``genai`` (ONNX Runtime GenAI builder), ``torch`` (torch.onnx with past key values)
    (``--lm-export-candidates``)."""
    verify_prompts: int = 4
    """Validation prompts the graphs are verified on (``--verify-prompts``)."""
    parity: DecoderParity = field(default_factory=DecoderParity)
    """Steps of greedy continuation checked, the logit tolerance (relative to the largest logit) and, without a
    tolerance, the greedy agreement required (``--verify-steps``)."""
    timing_tokens: int = 32
    """Decode steps timed per candidate to choose the fastest."""
    threads: int | None = None
    """Intra-op threads when timing; None: the physical cores (``--threads``)."""

    def __post_init__(self) -> None:
        problems = []
        unknown = [c for c in self.candidates if c not in CANDIDATES]
        if unknown or not self.candidates:
            problems.append(f"--lm-export-candidates must name some of {', '.join(CANDIDATES)}, got "
                            f"{','.join(self.candidates) or 'none'}")
        if self.verify_prompts < 1:
            problems.append(f"--verify-prompts must be at least 1, got {self.verify_prompts}")
        if self.timing_tokens < 2:
            problems.append(f"timing_tokens must be at least 2, got {self.timing_tokens}")
        if problems:
            raise UserError("; ".join(problems))


def validation_examples(model_dir: Path, data_dir: Path, n: int, answered: bool, purpose: str) -> list[Any]:
    """The first ``n`` validation prompts of the LM data folder (test prompts when there is no validation split),
    tokenised as the bench tokenises them (the chat template already holds BOS): with their answers as labels when
    ``answered`` (prompts without one left out), else the prompt alone. ``purpose`` ends the error when there are
    none."""
    from dataclasses import replace

    from transformers import AutoConfig, AutoTokenizer

    from compresskit.tasks.causal_lm.prepare import read_prompts
    from compresskit.tasks.causal_lm.prompts import context_length, tokenize_example

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    context = context_length(AutoConfig.from_pretrained(str(model_dir)))
    rows = read_prompts(data_dir, "validation") or read_prompts(data_dir, "test")
    rows = [ex if answered else replace(ex, response=None) for ex in rows if ex.response or not answered][:n]
    if not rows:
        raise UserError(f"{data_dir} holds no validation prompts{' with answers' if answered else ''} {purpose}")
    return [tokenize_example(tokenizer, ex, context, context) for ex in rows]


def verification_prompts(model_dir: Path, data_dir: Path, n: int) -> list[list[int]]:
    """The first ``n`` validation prompts as token ids, the decoder graph's verification inputs."""
    return [ex.input_ids for ex in validation_examples(model_dir, data_dir, n, False, "to verify the decoder graph on")]


def decode_ms_per_token(folder: Path, prompt: list[int], tokens: int, threads: int | None) -> float:
    """Mean milliseconds of one decode step through the cache (after a prefill of ``prompt``), plain ONNX Runtime."""
    from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder

    decoder = OnnxDecoder(folder, threads=threads)
    logits, cache = decoder.prefill(np.asarray([prompt], dtype=np.int64))
    token = int(logits.argmax())
    for _ in range(2):  # warm-up
        logits, cache = decoder.step(token, cache)
    time.sleep(SETTLE_SECONDS)  # the candidate timed before may still hold the cores (timing.SETTLE_SECONDS)
    samples = []
    for _ in range(tokens):
        t0 = time.perf_counter()
        logits, cache = decoder.step(token, cache)
        token = int(logits.argmax())
        samples.append(time.perf_counter() - t0)
    return 1000.0 * float(np.mean(samples))


def _build(candidate: str, model_dir: Path, out: Path, cache_dir: Path) -> dict[str, Any]:
    from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, build_genai, torch_onnx_decoder

    if candidate == "genai":
        return build_genai(model_dir, out, GenAIBuild(precision="fp32"), cache_dir)
    return torch_onnx_decoder(model_dir, out)


def _why_not(entry: dict[str, Any], chosen: dict[str, Any]) -> str:
    """One line on why a candidate was not kept: its build error, its failed verification, or its speed."""
    if not entry["built"]:
        return entry["error"]
    if not entry["verification"]["passed"]:
        return f"failed verification: {entry['verification']['reason']}"
    return (f"verified but slower: {entry['decode_ms_per_token']:.2f} ms/token against "
            f"{chosen['decode_ms_per_token']:.2f}")


def export_lm(cfg: LMExportConfig, model_dir: Path, data_dir: Path, out: Path, cache_dir: Path,
              name: str = "student") -> dict[str, Any]:
    """Build every candidate of ``model_dir``, verify each against it, keep the fastest verified one as ``out``
    (with ``export.json``: every candidate's build, verification and timing); returns that record."""
    from compresskit.machine import default_threads
    from compresskit.tasks.causal_lm.onnx_verify import verify_decoder

    started = time.time()
    threads = cfg.threads or default_threads()
    prompts = verification_prompts(model_dir, data_dir, cfg.verify_prompts)
    work = out.parent / f".{out.name}.candidates"
    shutil.rmtree(work, ignore_errors=True)
    tried: dict[str, dict[str, Any]] = {}
    try:
        for candidate in cfg.candidates:
            folder = work / candidate
            try:
                build = _build(candidate, model_dir, folder, cache_dir)
            except UserError as e:  # a family one route cannot build is that route's failure, not the run's
                tried[candidate] = {"built": False, "error": str(e)}
                continue
            check = verify_decoder(folder, model_dir, prompts, cfg.parity, threads=threads)
            check.pop("per_prompt", None)
            entry = {"built": True, "build_seconds": build.get("seconds"), "verification": check}
            if check["passed"]:
                entry["decode_ms_per_token"] = decode_ms_per_token(folder, prompts[0], cfg.timing_tokens, threads)
            tried[candidate] = entry
        passed = {c: e for c, e in tried.items() if e.get("verification", {}).get("passed")}
        if not passed:
            reasons = "; ".join(f"{c}: {e.get('error') or e['verification']['reason']}" for c, e in tried.items())
            raise VerificationError(f"no decoder graph of {model_dir} matches PyTorch ({reasons})")
        chosen = min(passed, key=lambda c: passed[c]["decode_ms_per_token"])
        check = passed[chosen]["verification"]
        parity = {"model": f"{name}-onnx", "reference": f"{name}-pytorch",
                  "samples": check["prompts"] * cfg.parity.steps,
                  "max_abs_diff": max(check["prefill"]["max_abs"], check["decode"]["max_abs"]),
                  "mean_abs_diff": max(check["prefill"]["mean_abs"], check["decode"]["mean_abs"]),
                  "label_agreement": check["agreement"], "tolerance": cfg.parity.tolerance,
                  "min_agreement": None if cfg.parity.tolerance is not None else cfg.parity.min_agreement,
                  "passed": True}
        record = stage_record("export", asdict(cfg), {"model": str(model_dir), "data": str(data_dir)}, started,
                              task="causal-lm", chosen=chosen, path=PATHS[chosen],
                              other_paths={PATHS[c]: _why_not(e, passed[chosen]) for c, e in tried.items()
                                           if c != chosen},
                              candidates=tried, threads=threads, verification=check, parity=parity)
        with atomic_dir(out) as tmp:
            for f in (work / chosen).iterdir():
                shutil.move(str(f), tmp / f.name)
            write_json(tmp / "export.json", record)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return record
