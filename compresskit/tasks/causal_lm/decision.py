"""What the causal-LM family gives the decision (``compresskit.decision``) and the shipped variant's model card
(``compresskit.deploy``): generation speed as the workload, the perplexity ratio's paired interval, metrics and
usage."""

from __future__ import annotations

import math
from typing import Any

from compresskit.decision import Workload
from compresskit.variants import field_value, finite_number

DEFAULT_BUDGET = {"max_perplexity_ratio": 1.25}
"""Held-out perplexity at most 1.25× the teacher's, when the user gives no quality gate."""


def workloads(variants: list[dict[str, Any]]) -> list[Workload]:
    """Decode tokens/s at batch 1 (what ``chosen`` is fastest at: a chat answer's speed) and generation tokens/s
    at batch 8."""
    return [Workload("decode", "decode at batch 1 (tokens/s)", "generation.decode_tokens_per_s", True,
                     "generation.decode_rounds_tokens_per_s"),
            Workload("batch_8", "generation at batch 8 (tokens/s)", "generation.batch8_tokens_per_s", True)]


def budget_interval(gate: str, row: dict, teacher: dict, report: dict) -> tuple[float, float] | None:
    """The perplexity ratio's interval from the paired interval of the per-window mean NLL difference (the bench's
    ``quality.vs_teacher.mean_nll``): exp of its ends. The windows have near-equal token counts, so this is the
    interval of the token-weighted ratio up to that difference."""
    if gate != "max_perplexity_ratio":
        return None
    d = field_value(row, "quality.vs_teacher.mean_nll") or {}
    low, high = finite_number(d.get("low")), finite_number(d.get("high"))
    if low is None or high is None:
        return None
    return math.exp(low), math.exp(high)


def value_interval(field: str, row: dict, report: dict) -> tuple[float, float] | None:
    """None: the report keeps no per-window perplexity or agreement interval of a row on its own."""
    return None


_METRICS = (("perplexity", "held-out perplexity", "quality.perplexity"),
            ("accuracy", "top-1 next-token agreement with the teacher", "quality.top1_agreement"),
            ("rouge", "ROUGE-L against the teacher's answers", "quality.rouge_l_vs_teacher.overall"),
            ("throughput", "decode tokens/s at batch 1", "generation.decode_tokens_per_s"))


def card(report: dict[str, Any], row: dict[str, Any]) -> Any:
    """The card of a decoder: its metrics as report.json holds them, and how to run the folder."""
    from compresskit.deploy import CardFacts

    metrics = [{"type": t, "name": n, "value": finite_number(field_value(row, f)), "field": f,
                "label": {"quality.perplexity": "perplexity"}.get(f)} for t, n, f in _METRICS]
    limits = []
    if row.get("format") == "onnx":
        usage = ("import onnxruntime_genai as og\n"
                 "model = og.Model(\"deploy\"); tokenizer = og.Tokenizer(model); params = og.GeneratorParams(model)\n"
                 "params.set_search_options(max_length=256); generator = og.Generator(model, params)\n"
                 "generator.append_tokens(tokenizer.encode(\"The Bank of England said\"))\n"
                 "while not generator.is_done(): generator.generate_next_token()\n"
                 "print(tokenizer.decode(generator.get_sequence(0)))\n")
        command = "compresskit generate deploy \"The Bank of England said\""
        library = "onnx"
        limits.append("an fp32 graph is verified against PyTorch step by step (logits and greedy tokens); an int8 or "
                      "int4 graph is judged against its fp32 graph by agreement and perplexity within the run's "
                      "quantization budget, not verified token for token")
    else:
        usage = ("from transformers import AutoModelForCausalLM, AutoTokenizer\n"
                 "tokenizer, model = AutoTokenizer.from_pretrained(\"deploy\"), "
                 "AutoModelForCausalLM.from_pretrained(\"deploy\")\n"
                 "ids = model.generate(**tokenizer(\"The Bank of England said\", return_tensors=\"pt\"), "
                 "max_new_tokens=48)\n"
                 "print(tokenizer.decode(ids[0]))\n")
        command = ("python -c \"from transformers import pipeline; print(pipeline('text-generation', "
                   "model='deploy')('The Bank of England said'))\"")
        library = "transformers"
    from compresskit.tasks.causal_lm.teacher import EMBEDDED_TEACHER

    hub = (f"HuggingFaceTB/{EMBEDDED_TEACHER}"  # the GGUF file the embedded teacher is read from is this model's
           if (report.get("teacher") or {}).get("source") == EMBEDDED_TEACHER else None)
    return CardFacts("text-generation", "Text Generation", metrics, usage, command, library, limits, hub)
