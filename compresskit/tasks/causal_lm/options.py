"""The causal-LM family's own command-line options (its ``Task.options``, all in the "Causal LM" panel of
``--help``), and its settings for one run built from the flags (``settings``). The options every family shares
(teacher, data split, student layers, device, threads, rounds, gates) are in ``compresskit.cli.options``.

The defaults are literals: the config dataclasses live in modules that import torch, which ``--help`` must not
pay for; tests/test_cli.py checks each literal against its dataclass.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import typer

from compresskit.cli.flags import Opt, floats, names, panel

CAUSAL_LM = "Causal LM (--task causal-lm)"

OPTIONS: dict[str, Opt] = {
    **panel(CAUSAL_LM, {
        "kd_divergence": Opt(str, "forward_kl", typer.Option(
            "--kd-divergence", help="causal-lm: token-level divergence: forward_kl (mass-covering) | reverse_kl "
                                    "(mode-seeking) | jsd (generalized Jensen-Shannon, see --jsd-beta)."),
            choices=("forward_kl", "reverse_kl", "jsd")),
        "jsd_beta": Opt(float, 0.5, typer.Option(
            "--jsd-beta", help="causal-lm: JSD weight β in [0, 1]: 0 is forward KL, 1 reverse KL.")),
        "kd_temperature": Opt(float, 1.0, typer.Option(
            "--kd-temperature", help="causal-lm: softmax temperature of both models in the divergence (scaled by "
                                     "T²).")),
        "kd_alpha": Opt(float, 1.0, typer.Option(
            "--kd-alpha", help="causal-lm: weight of the divergence; 1-α goes to cross-entropy on the target "
                               "tokens.")),
        "on_policy": Opt(float, 0.0, typer.Option(
            "--on-policy", help="causal-lm: share λ of batches the student answers itself (sampled), scored by the "
                                "teacher (GKD).")),
        "max_steps": Opt(int, 120, typer.Option("--max-steps", help="causal-lm: optimiser steps of distillation.")),
        "teacher_topk": Opt(int, 0, typer.Option(
            "--teacher-topk", help="causal-lm: 0 runs the teacher at every step; k > 0 runs it once and trains on an "
                                   "offline cache of its top-k next-token probabilities per position (k*4+4 bytes a "
                                   "token for a vocabulary up to 65,536).")),
        "student_depth": Opt(Optional[int], None, typer.Option(
            "--student-depth", help="causal-lm with --student-layers auto: keep this many teacher layers (default "
                                    "ceil(n/3)).")),
        "layer_choice": Opt(str, "importance", typer.Option(
            "--layer-choice", help="causal-lm with --student-layers auto: importance (measured block influence) | "
                                   "uniform."), choices=("importance", "uniform")),
        "lm_learning_rate": Opt(float, 2e-4, typer.Option(
            "--lm-learning-rate", help="causal-lm: peak AdamW learning rate of the student.")),
        "lm_batch_size": Opt(int, 4, typer.Option("--lm-batch-size", help="causal-lm: sequences per optimiser step.")),
        "lm_max_length": Opt(int, 192, typer.Option(
            "--lm-max-length", help="causal-lm: tokens per training sequence (prompt + answer).")),
        "lm_window": Opt(int, 128, typer.Option(
            "--lm-window", help="causal-lm: tokens per plain-text training window.")),
        "lm_train_prompts": Opt(int, 96, typer.Option(
            "--lm-train-prompts", help="causal-lm: training instructions the teacher answers (sequence-level "
                                       "targets).")),
        "lm_train_texts": Opt(int, 300, typer.Option(
            "--lm-train-texts", help="causal-lm: training articles used as plain text (language modelling KD).")),
        "lm_tasks": Opt(str, "summary,headline,section", typer.Option(
            "--lm-tasks", show_default=False,  # the comma-separated default is one word: it would set the width
            help="causal-lm with bbc-news: instructions per article, some of summary, headline, section (comma-"
                 "separated; default: all three).")),
        "max_article_words": Opt(int, 60, typer.Option(
            "--max-article-words", help="causal-lm with bbc-news: article bodies in prompts cut to this many words.")),
        "lm_test_prompts": Opt(int, 30, typer.Option(
            "--lm-test-prompts", help="causal-lm: held-out instructions for ROUGE-L, agreement and section choice.")),
        "lm_heldout_texts": Opt(int, 24, typer.Option(
            "--lm-heldout-texts", help="causal-lm: held-out articles for perplexity and next-token agreement.")),
        "max_new_tokens": Opt(int, 48, typer.Option(
            "--max-new-tokens", help="causal-lm: longest greedy answer, in tokens (teacher answers, student "
                                     "answers).")),
        "perplexity_window": Opt(int, 256, typer.Option(
            "--perplexity-window", help="causal-lm: perplexity and agreement on the first this many tokens of each "
                                        "held-out text.")),
        "ttft_prompt_lengths": Opt(str, "128,512", typer.Option(
            "--ttft-prompt-lengths", help="causal-lm: prompt lengths (tokens) whose time to first token is measured.")),
        "lm_repeats": Opt(int, 3, typer.Option(
            "--lm-repeats", help="causal-lm: timed repeats of each generation speed workload, after one warm-up.")),
        "decode_tokens": Opt(int, 128, typer.Option(
            "--decode-tokens", help="causal-lm: new tokens timed at batch 1 for decode tokens/s.")),
        "lm_export_candidates": Opt(str, "genai,torch", typer.Option(
            "--lm-export-candidates", help="causal-lm: decoder-graph routes to try, the fastest verified kept: genai "
                                           "(ONNX Runtime GenAI builder) | torch (torch.onnx with past key values).")),
        "verify_steps": Opt(int, 16, typer.Option(
            "--verify-steps", help="causal-lm: greedy tokens per validation prompt whose logits the decoder graph must "
                                   "match (prefill + steps through the KV cache).")),
        "verify_prompts": Opt(int, 4, typer.Option(
            "--verify-prompts", help="causal-lm: validation prompts the decoder graph is verified on.")),
        "lm_quantize": Opt(str, "int8,int4", typer.Option(
            "--lm-quantize", help="causal-lm: weight-only precisions to build (int8, int4), or none.")),
        "teacher_graphs": Opt(str, "fp32,int8,int4", typer.Option(
            "--teacher-graphs", show_default=False,  # the comma-separated default is one word: it would set the width
            help="causal-lm: the teacher's ONNX graphs, some of fp32 (verified as the student's), int8 (judged "
                 "against it as the student's), int4 (builder defaults), or none (default: all three).")),
        "int4_accuracy_level": Opt(int, 4, typer.Option(
            "--int4-accuracy-level", help="causal-lm: MatMulNBits accuracy level: 4 computes in int8 (fastest on "
                                          "CPU), 1 in fp32.")),
        "int4_algorithm": Opt(str, "k_quant", typer.Option(
            "--int4-algorithm", help="causal-lm: how int4 weights are rounded: k_quant (error minimising block "
                                     "scales) | default (the builder's round to nearest) | rtn."),
            choices=("k_quant", "default", "rtn")),
        "lm_quant_min_agreement": Opt(float, 0.7, typer.Option(
            "--lm-quant-min-agreement", help="causal-lm: top-1 agreement a quantized graph keeps with the fp32 graph "
                                             "on validation answers (else more MatMuls stay in full precision).")),
        "lm_quant_max_perplexity_ratio": Opt(float, 1.5, typer.Option(
            "--lm-quant-max-perplexity-ratio", help="causal-lm: a quantized graph's answer perplexity at most this "
                                                    "times the fp32 graph's.")),
        "chat": Opt(bool, True, typer.Option(
            "--chat/--no-chat", help="generate: send the prompt as a user turn of the folder's chat template (when it "
                                     "has one); --no-chat sends it as it is."), pipeline=False),
    }),
}


@dataclass(frozen=True)
class LMConfig:
    """The causal-LM task's settings for one run (``PipelineConfig.lm``)."""

    data: Any = None  # compresskit.tasks.causal_lm.prepare.LMDataConfig
    distill: Any = None  # compresskit.tasks.causal_lm.distill.LMDistillConfig
    bench: Any = None  # compresskit.tasks.causal_lm.bench.LMBenchConfig
    export: Any = None  # compresskit.tasks.causal_lm.export.LMExportConfig
    quantize: Any = None  # compresskit.tasks.causal_lm.quantize.LMQuantizeConfig

    def __post_init__(self) -> None:
        # Built here rather than as field defaults: their modules import torch, which the CLI's --help must not pay.
        from compresskit.tasks.causal_lm.bench import LMBenchConfig
        from compresskit.tasks.causal_lm.distill import LMDistillConfig
        from compresskit.tasks.causal_lm.export import LMExportConfig
        from compresskit.tasks.causal_lm.prepare import LMDataConfig
        from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig

        for name, default in (("data", LMDataConfig), ("distill", LMDistillConfig), ("bench", LMBenchConfig),
                              ("export", LMExportConfig), ("quantize", LMQuantizeConfig)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default())


def settings(o: dict[str, Any]) -> LMConfig:
    """The causal-LM family's settings for one run, from the resolved flag values ``o``."""
    from compresskit.tasks.causal_lm.bench import LMBenchConfig
    from compresskit.tasks.causal_lm.distill import LMDistillConfig
    from compresskit.tasks.causal_lm.export import LMExportConfig
    from compresskit.tasks.causal_lm.kd_losses import LMKDConfig
    from compresskit.tasks.causal_lm.onnx_verify import DecoderParity
    from compresskit.tasks.causal_lm.prepare import LMDataConfig
    from compresskit.tasks.causal_lm.prompts import BBCPromptConfig
    from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig
    from compresskit.training import TrainConfig

    # The causal-LM split keeps its own test share: its held-out sets are counted in prompts and windows
    # (--lm-test-prompts, --lm-heldout-texts), not the whole test split.
    test_fraction = BBCPromptConfig.test_fraction if o["test_fraction"] is None else o["test_fraction"]
    prompts = BBCPromptConfig(validation_fraction=o["validation_fraction"], test_fraction=test_fraction,
                              seed=o["seed"], max_article_words=o["max_article_words"], max_articles=o["max_samples"],
                              kinds=tuple(k.strip() for k in o["lm_tasks"].split(",") if k.strip()))
    data = LMDataConfig(dataset=o["dataset"], prompts=prompts, train_prompts=o["lm_train_prompts"],
                        train_texts=o["lm_train_texts"], test_prompts=o["lm_test_prompts"],
                        heldout_texts=o["lm_heldout_texts"], max_new_tokens=o["max_new_tokens"])
    kd = LMKDConfig(divergence=o["kd_divergence"], beta=o["jsd_beta"], temperature=o["kd_temperature"],
                    alpha=o["kd_alpha"])
    train = TrainConfig(batch_size=o["lm_batch_size"], learning_rate=o["lm_learning_rate"],
                        max_length=o["lm_max_length"], device=o["device"], precision=o["precision"],
                        gradient_accumulation=o["gradient_accumulation"], seed=o["seed"], fsdp=o["fsdp"])
    distill = LMDistillConfig(kd=kd, student_layers=o["student_layers"], student_depth=o["student_depth"],
                              layer_choice=o["layer_choice"], student=o["student"],
                              student_shape=o["student_shape"], on_policy_fraction=o["on_policy"],
                              max_steps=o["max_steps"], teacher_topk=o["teacher_topk"],
                              window=o["lm_window"], train=train)
    bench = LMBenchConfig(window=o["perplexity_window"], max_heldout=o["lm_heldout_texts"],
                          max_prompts=o["lm_test_prompts"], max_new_tokens=o["max_new_tokens"],
                          prompt_lengths=tuple(int(n) for n in floats("--ttft-prompt-lengths",
                                                                        o["ttft_prompt_lengths"])),
                          decode_tokens=o["decode_tokens"], repeats=o["lm_repeats"], threads=o["threads"],
                          rounds=LMBenchConfig.rounds if o["rounds"] is None else o["rounds"], device=o["device"])
    export = LMExportConfig(candidates=names(o["lm_export_candidates"]), verify_prompts=o["verify_prompts"],
                            parity=DecoderParity(steps=o["verify_steps"]), threads=o["threads"])
    quantize = LMQuantizeConfig(precisions=() if o["lm_quantize"].strip() == "none" else names(o["lm_quantize"]),
                                block_size=o["int4_block_size"], accuracy_level=o["int4_accuracy_level"],
                                algorithm=o["int4_algorithm"],
                                min_agreement=o["lm_quant_min_agreement"],
                                max_perplexity_ratio=o["lm_quant_max_perplexity_ratio"],
                                max_fallbacks=LMQuantizeConfig.max_fallbacks if o["fallback"] else 0,
                                teacher_graphs=() if o["teacher_graphs"].strip() == "none"
                                else names(o["teacher_graphs"]))
    return LMConfig(data=data, distill=distill, bench=bench, export=export, quantize=quantize)
