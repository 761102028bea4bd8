"""Does a KV-cache decoder graph compute what its PyTorch model computes, at prefill and through its cache?

For each prompt PyTorch (float32, the reference) continues greedily for ``steps`` tokens with its own KV cache. The
ONNX decoder then prefills the same prompt and is teacher-forced through its cache on PyTorch's tokens, so each of
its logits sits at the same position as a reference logit: differences measure the graph, not a diverged text. A
prefill-only check would miss a wrongly wired cache (a present tensor fed back as another layer's past); the decode
steps are where that shows. The ONNX decoder's own free-running greedy continuation is compared too, for the record.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError


@dataclass(frozen=True)
class DecoderParity:
    """When a decoder graph counts as matching its PyTorch model."""

    steps: int = 16
    """Greedy tokens per prompt: the prefill's last position plus ``steps - 1`` decode steps through the cache."""
    tolerance: float | None = 1e-4
    """Largest max |Δ logit| allowed, relative to the largest |logit| of the reference over the same positions (fp32
    graphs measured 5e-7 on a tiny random Llama, 4e-6 on SmolLM2-135M); None judges by agreement only, as int8/int4
    graphs need (int8 measured 0.07-0.09 on SmolLM2-135M, int4 0.4-0.6)."""
    min_agreement: float = 0.95
    """Smallest fraction of decision positions where the graph's argmax is PyTorch's greedy token; judged only when
    ``tolerance`` is None. Within a tolerance the argmaxes can differ only where PyTorch's top two logits are closer
    than twice the measured |Δ|, a tie the |Δ| rule has already judged. (SmolLM2-135M measured 1.0 in fp32, 0.98 in
    int8, 0.67 in int4 with block 32; the agreement is always reported.)"""

    def __post_init__(self) -> None:
        problems = []
        if self.steps < 2:
            problems.append(f"--verify-steps must be at least 2 (one prefill and one decode step), got {self.steps}")
        if self.tolerance is not None and not self.tolerance > 0:
            problems.append(f"--verify-tolerance must be positive (or none, to judge by agreement), got "
                            f"{self.tolerance}")
        if not 0.0 <= self.min_agreement <= 1.0:
            problems.append(f"--verify-min-agreement must be between 0 and 1, got {self.min_agreement}")
        if problems:
            raise UserError("; ".join(problems))


def torch_greedy(model: Any, prompt: list[int], steps: int) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """PyTorch's greedy continuation through its own KV cache: prefill logits (P, V), the logits (V,) each of the
    ``steps`` tokens was chosen from, and the tokens. No end-of-sequence stop, so positions line up."""
    import inspect

    import torch

    # transformers 5.x renamed past_key_values to cache (the old name warns, then goes): use the one forward takes
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        out = model(torch.tensor([prompt], dtype=torch.long), use_cache=True)
        prefill = out.logits[0].float().numpy()
        chosen, tokens = [prefill[-1]], []
        for _ in range(steps):
            tokens.append(int(np.argmax(chosen[-1])))
            if len(tokens) == steps:
                break
            out = model(torch.tensor([[tokens[-1]]], dtype=torch.long), use_cache=True, **{name: getattr(out, name)})
            chosen.append(out.logits[0, -1].float().numpy())
    return prefill, chosen, tokens


def _diff(a: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    d = np.abs(a.astype(np.float64) - ref.astype(np.float64))
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "relative": float(d.max() / max(float(np.abs(ref).max()), 1e-12))}


def compare_prompt(decoder: Any, model: Any, prompt: list[int], steps: int) -> dict[str, Any]:
    """Prefill and teacher-forced decode differences, and greedy agreement, of one prompt (see module docstring)."""
    ref_prefill, ref_chosen, tokens = torch_greedy(model, prompt, steps)
    logits, cache = decoder.forward(np.array([prompt], dtype=np.int64), decoder.empty_cache())
    prefill = logits[0]
    onnx_chosen = [prefill[-1]]
    for token in tokens[:-1]:
        step_logits, cache = decoder.step(token, cache)
        onnx_chosen.append(step_logits)
    decode = np.stack(onnx_chosen[1:])
    agree = [int(np.argmax(o)) == t for o, t in zip(onnx_chosen, tokens)]
    free = decoder.greedy(np.array([prompt]), steps)
    same = [a == b for a, b in zip(free, tokens)]
    return {
        "prompt_tokens": len(prompt),
        "prefill": _diff(prefill, ref_prefill),
        "decode": _diff(decode, np.stack(ref_chosen[1:])),
        "agreement": sum(agree) / len(agree),
        "first_disagreement": agree.index(False) if False in agree else None,
        "free_run_agreement": sum(same) / len(same),
        "free_run_common_prefix": same.index(False) if False in same else len(same),
        "torch_tokens": tokens,
        "onnx_tokens": free,
    }


def verify_decoder(onnx_dir: Path, torch_dir: Path, prompts: list[list[int]], cfg: DecoderParity = DecoderParity(),
                   threads: int | None = None) -> dict[str, Any]:
    """Compare the decoder graph in ``onnx_dir`` with the causal LM in ``torch_dir`` on ``prompts`` (token ids).

    Returns a JSON-able dict: per prompt and worst over prompts the prefill and decode-step logits' max and mean
    |Δ| (and max |Δ| relative to the reference's largest |logit|), teacher-forced greedy agreement, free-running
    greedy agreement, ``passed`` and, when it fails, a one-line ``reason``.
    """
    from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder
    from compresskit.tasks.causal_lm.teacher import load_causal_lm

    if not prompts or any(len(p) == 0 for p in prompts):
        raise UserError("verifying a decoder needs at least one prompt, none of them empty")
    decoder = OnnxDecoder(Path(onnx_dir), threads=threads)
    model = load_causal_lm(str(torch_dir))
    vocab = model.get_output_embeddings().weight.shape[0]
    onnx_vocab = decoder.session.get_outputs()[0].shape[-1]
    if isinstance(onnx_vocab, int) and onnx_vocab != vocab:
        raise UserError(f"{onnx_dir} has {onnx_vocab} logits and {torch_dir} {vocab}: they are not the same model")
    per_prompt = [compare_prompt(decoder, model, [int(t) for t in p], cfg.steps) for p in prompts]

    def worst(stage: str, key: str) -> float:
        return max(r[stage][key] for r in per_prompt)

    result: dict[str, Any] = {
        "config": asdict(cfg),
        "prompts": len(prompts),
        "prefill": {k: worst("prefill", k) for k in ("max_abs", "mean_abs", "relative")},
        "decode": {k: worst("decode", k) for k in ("max_abs", "mean_abs", "relative")},
        "agreement": float(np.mean([r["agreement"] for r in per_prompt])),
        "min_agreement_prompt": min(r["agreement"] for r in per_prompt),
        "free_run_agreement": float(np.mean([r["free_run_agreement"] for r in per_prompt])),
        "per_prompt": per_prompt,
    }
    result["reason"] = _failure(result, cfg)
    result["passed"] = result["reason"] is None
    return result


def _failure(result: dict[str, Any], cfg: DecoderParity) -> str | None:
    """The first broken rule as one line, prefill before decode steps before agreement; None when all hold."""
    pre, dec = result["prefill"], result["decode"]
    if cfg.tolerance is not None and pre["relative"] > cfg.tolerance:
        return (f"prefill logits differ from PyTorch's: max |Δ| {pre['max_abs']:.3g} ({pre['relative']:.3g} of the "
                f"largest logit) exceeds the tolerance {cfg.tolerance:g}")
    if cfg.tolerance is not None and dec["relative"] > cfg.tolerance:
        return (f"decode steps through the KV cache differ from PyTorch's: max |Δ| {dec['max_abs']:.3g} "
                f"({dec['relative']:.3g} of the largest logit) exceeds the tolerance {cfg.tolerance:g} while prefill "
                f"is within it ({pre['relative']:.3g}): check how the KV cache is fed back")
    if cfg.tolerance is None and result["agreement"] < cfg.min_agreement:
        where = "decode steps" if pre["relative"] * 10 < dec["relative"] else "prefill and decode steps"
        return (f"greedy tokens agree with PyTorch's at {result['agreement']:.1%} of positions, below "
                f"{cfg.min_agreement:.1%} (max |Δ| {pre['max_abs']:.3g} at prefill, {dec['max_abs']:.3g} at "
                f"decode steps; worst in {where})")
    return None
