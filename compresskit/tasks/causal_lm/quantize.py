"""Quantize stage of the causal-LM task: weight-only int8 and int4 decoder graphs (MatMulNBits, built by ONNX
Runtime GenAI's builder), each judged against the verified fp32 graph, with a measured fallback.

Weight-only int4 of a small LLM is lossy: rounding every MatMul of the default 10-layer SmolLM2 student to 4 bits
(blocks of 32, round to nearest) keeps the fp32 graph's greedy token at only 0.55 of positions. The int4 builds are
therefore a ladder, each step judged before the next is built:

1. every MatMul at 4 bits, with k-quant rounding (per-block scales chosen to minimise the error): at the same size
   and speed as round-to-nearest it keeps more (0.59 against 0.55 on the default student);
2. the LM head at 8 bits (its error lands directly on the logits);
3. llama.cpp's most sensitive MatMuls at 8 bits too (``mixed_layers``);
4. then, group by group, MatMuls kept in full precision: the LM head, the first and last decoder layers, then the
   next ones inwards.

8 bits costs half the bytes a float MatMul does, so the 8-bit steps come first. Each build is measured on the
validation prompts with the teacher's answers (teacher-forced, plain ONNX Runtime) against the fp32 graph: top-1
agreement and answer perplexity. The first build within both budgets is kept; when none is, the last one is kept and
its record says it is outside the budget (the report shows it, a gate can fail on it). An int8 graph has no 8-bit
steps: its ladder is the full-precision groups alone.

Two paths make each build. The builder (``genai-builder``) builds from the model's weights, with its fused
attention; where it cannot build the model (a family it does not know, a config of a newer transformers it cannot
read) or is not wanted, the verified fp32 graph itself, a torch-exported one included, is quantized with ONNX
Runtime's ``MatMulNBitsQuantizer`` (``matmulnbits``, ``onnx_quantize``) with the same knobs and the same ladder.
``quantize.json`` says which (``path``) and, when the builder failed, why (``builder_error``).

The graphs are judged on the validation prompts' answers when they have some. Without any (a teacher that answered
every prompt with nothing) they are judged on held-out text instead: the first tokens of each ``heldout.jsonl`` text,
teacher-forced, every position scored, the same agreement and perplexity against the fp32 graph. ``judged_on`` says
which.

The teacher's own int4 build (``teacher_int4``) is made here too, with the builder's default options: it is the
"teacher on ONNX Runtime" every speed-up of the student is also compared with. Where the builder cannot build the
teacher, its torch-exported graph quantized the same way (every MatMul at 4 bits) stands in, and says so.

Beside it the teacher gets quantize-only arms built exactly as the student's graphs are (``teacher_graphs``): its
fp32 graph (the export stage, verified against the teacher in PyTorch) and its int8 graph (``quantize_lm`` with
``name="teacher"``, judged against that fp32 graph on the same ladder and budget). Why: int4 with the builder's
defaults costs the default SmolLM2-135M teacher 1.33× perplexity, so a report must be able to say whether a merely
quantized teacher (int8, or fp32 on ONNX Runtime) keeps a quality budget that its int4 graph breaks — the bar
distillation has to clear.
"""

from __future__ import annotations

import math
import time
from dataclasses import InitVar, asdict, dataclass, replace
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, atomic_dir, read_json, stage_record, write_json

PRECISIONS = ("int8", "int4")
TEACHER_GRAPHS = ("fp32", "int8", "int4")
"""The teacher's decoder graphs the run can build (``--teacher-graphs``): its verified fp32 graph, its int8 graph
judged against that one (both made as the student's are), and its int4 graph with the builder's defaults."""
BUILDER, MATMULNBITS = "genai-builder", "matmulnbits"
"""The two paths a quantized graph is made by (``quantize.json`` ``path``)."""
ANSWERS, HELDOUT = "answers", "heldout text"
"""What the graphs were judged on (``quantize.json`` ``judged_on``)."""


@dataclass(frozen=True)
class LMQuantizeConfig:
    """Which weight-only precisions to build and what each must keep of the fp32 graph."""

    precisions: tuple[str, ...] = PRECISIONS
    """Weight-only precisions to build: int8, int4, or none (``--lm-quantize``)."""
    block_size: int = 32
    """Weights per quantization block of MatMulNBits (``--int4-block-size``)."""
    accuracy_level: int = 4
    """MatMulNBits accuracy level: 4 multiplies in int8 (fastest on CPU), 1 in fp32 (``--int4-accuracy-level``)."""
    algorithm: str = "k_quant"
    """How the int4 weights are rounded: ``default`` (the builder's round to nearest), ``rtn`` or ``k_quant``
    (per-block scales that minimise the error) (``--int4-algorithm``). On the default student k-quant kept 0.59
    agreement with every MatMul at 4 bits where round to nearest kept 0.55, at the same size and speed."""
    min_agreement: float = 0.7
    """Top-1 agreement with the fp32 graph, teacher-forced on the validation answers; the default is the budget a
    student has against its teacher (``--lm-quant-min-agreement``)."""
    max_perplexity_ratio: float = 1.5
    """Answer perplexity at most this times the fp32 graph's; the default is the student's budget against its
    teacher (``--lm-quant-max-perplexity-ratio``)."""
    max_fallbacks: int = 4
    """Builds after the first, each one step further up the ``ladder`` (``--no-fallback`` sets 0)."""
    examples: int = 12
    """Validation prompts with answers the budget is measured on."""
    teacher_graphs: tuple[str, ...] = TEACHER_GRAPHS
    """The teacher's decoder graphs to build, some of fp32, int8, int4, or none (``--teacher-graphs``): fp32 is
    exported and verified as the student's is, int8 is built and judged against it as the student's int8 is, int4
    is the builder-default graph (``teacher_int4``), the teacher-on-ONNX-Runtime speed reference."""
    builder: bool = True
    """Build with ONNX Runtime GenAI's builder first; False quantizes the verified fp32 graph with
    ``MatMulNBitsQuantizer`` straight away (as happens anyway where the builder cannot build the model)."""
    heldout_window: int = 128
    """Tokens of each held-out text the graphs are judged on when no validation prompt has an answer."""
    teacher_int4: InitVar[bool | None] = None
    """The former spelling of the int4 entry of ``teacher_graphs`` (``False`` leaves int4 out). An init argument
    only, not a field, so the run's identity and records hold ``teacher_graphs`` alone; kept so that callers and
    recorded configs that name it still build."""

    def __post_init__(self, teacher_int4: bool | None) -> None:
        from compresskit.tasks.causal_lm.onnx_build import BLOCK_SIZES

        if teacher_int4 is not None:
            graphs = [g for g in self.teacher_graphs if g != "int4"] + (["int4"] if teacher_int4 else [])
            object.__setattr__(self, "teacher_graphs", tuple(g for g in TEACHER_GRAPHS if g in graphs))
        problems = []
        if any(g not in TEACHER_GRAPHS for g in self.teacher_graphs):
            problems.append(f"--teacher-graphs must name some of {', '.join(TEACHER_GRAPHS)} or none, got "
                            f"{','.join(self.teacher_graphs)}")
        elif "int8" in self.teacher_graphs and "fp32" not in self.teacher_graphs:
            # the int8 graph is judged against the verified fp32 one, as the student's is
            problems.append("--teacher-graphs int8 is judged against the teacher's fp32 graph: name fp32 too "
                            "(fp32,int8)")
        if any(p not in PRECISIONS for p in self.precisions):
            problems.append(f"--lm-quantize must name some of {', '.join(PRECISIONS)} or none, got "
                            f"{','.join(self.precisions)}")
        if self.block_size not in BLOCK_SIZES:
            problems.append(f"--int4-block-size must be one of {', '.join(map(str, BLOCK_SIZES))}, got "
                            f"{self.block_size}")
        from compresskit.tasks.causal_lm.onnx_build import ALGORITHMS
        if self.algorithm not in ALGORITHMS:
            problems.append(f"--int4-algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if self.accuracy_level not in (1, 2, 3, 4):
            problems.append(f"--int4-accuracy-level must be 1, 2, 3 or 4, got {self.accuracy_level}")
        if not 0 <= self.min_agreement <= 1:
            problems.append(f"--lm-quant-min-agreement must lie in [0, 1], got {self.min_agreement}")
        if not self.max_perplexity_ratio >= 1:
            problems.append(f"--lm-quant-max-perplexity-ratio must be at least 1, got {self.max_perplexity_ratio}")
        if self.max_fallbacks < 0:
            problems.append(f"--lm-quant-fallbacks must be >= 0, got {self.max_fallbacks}")
        if self.heldout_window < 2:
            problems.append(f"heldout_window must be at least 2 tokens, got {self.heldout_window}")
        if problems:
            raise UserError("; ".join(problems))


def ladder(precision: str, layers: int, cfg: LMQuantizeConfig) -> list[dict[str, list[str]]]:
    """The builds to try in order, each ``{"int8_groups": [...], "full_precision_groups": [...]}``: the first with
    nothing held back, then (int4) the 8-bit steps, then one more full-precision group at a time, at most
    ``cfg.max_fallbacks`` steps after the first."""
    from compresskit.tasks.causal_lm.onnx_build import INT8_SELECTORS

    int8 = list(INT8_SELECTORS) if precision == "int4" else []
    steps = [{"int8_groups": int8[:i], "full_precision_groups": []} for i in range(len(int8) + 1)]
    groups = fallback_groups(layers)
    steps += [{"int8_groups": int8, "full_precision_groups": groups[:i]} for i in range(1, len(groups) + 1)]
    return steps[:cfg.max_fallbacks + 1]


def fallback_groups(layers: int) -> list[str]:
    """The MatMul groups kept at full precision, in the order they are added: the LM head, then the first and last
    layers, then inwards from both ends."""
    order = ["lm_head"]
    lo, hi = 0, layers - 1
    while lo <= hi:
        order.append(f"layer {lo}")
        if hi != lo:
            order.append(f"layer {hi}")
        lo, hi = lo + 1, hi - 1
    return order


def answer_examples(model_dir: Path, data_dir: Path, n: int) -> list[dict[str, list[int]]]:
    """``n`` validation prompts with their (teacher's) answers as ids and labels (-100 on the prompt)."""
    from compresskit.tasks.causal_lm.export import validation_examples

    return [{"input_ids": t.input_ids, "labels": t.labels}
            for t in validation_examples(model_dir, data_dir, n, True, "to judge the quantized graphs on")]


def heldout_examples(model_dir: Path, data_dir: Path, n: int, window: int) -> list[dict[str, list[int]]]:
    """The first ``window`` tokens (at most the model's context) of the first ``n`` held-out texts of the data
    folder (``heldout.jsonl``), every token a label; [] when there are none."""
    from transformers import AutoConfig, AutoTokenizer

    from compresskit.tasks.causal_lm.prepare import read_jsonl
    from compresskit.tasks.causal_lm.prompts import context_length, text_windows

    path = Path(data_dir) / "heldout.jsonl"
    texts = [str(r.get("text") or "") for r in read_jsonl(path)] if path.is_file() else []
    texts = [t for t in texts if t.strip()]
    if not texts:
        return []
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    window = min(window, context_length(AutoConfig.from_pretrained(str(model_dir))))
    return [{"input_ids": w.input_ids, "labels": w.labels}
            for w in text_windows(tokenizer, texts, window, max_windows_per_text=1)[:n]]


def judging_examples(model_dir: Path, data_dir: Path, cfg: LMQuantizeConfig) -> tuple[list[dict], str]:
    """What the quantized graphs are judged on and its name (``ANSWERS`` or ``HELDOUT``): the validation (else test)
    prompts with their answers when any has one, else held-out text windows; a one-line ``UserError`` when the
    folder holds neither."""
    from compresskit.tasks.causal_lm.prepare import read_prompts

    data_dir = Path(data_dir)
    rows = next((rows for split in ("validation", "test") if (data_dir / f"{split}.jsonl").is_file()
                 for rows in [read_prompts(data_dir, split)] if rows), [])
    if any(ex.response for ex in rows):
        return answer_examples(model_dir, data_dir, cfg.examples), ANSWERS
    examples = heldout_examples(model_dir, data_dir, cfg.examples, cfg.heldout_window)
    if not examples:
        raise UserError(f"{data_dir} holds neither validation prompts with answers nor held-out text (heldout.jsonl) "
                        "to judge the quantized graphs on: give prompts with answers, or let the teacher answer them")
    return examples, HELDOUT


def answer_scores(folder: Path, examples: list[dict], threads: int) -> tuple[float, list[list[int]]]:
    """Answer perplexity of a graph and its argmax ids at the answer positions."""
    from compresskit.tasks.causal_lm.bench_worker_onnx import teacher_forced
    from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder

    scored = teacher_forced(OnnxDecoder(folder, threads=threads), examples)
    nll, n = sum(s[0] for s in scored), sum(s[1] for s in scored)
    return math.exp(nll / max(n, 1)), [s[2] for s in scored]


def judge(folder: Path, reference: tuple[float, list[list[int]]], examples: list[dict], threads: int,
          cfg: LMQuantizeConfig) -> dict[str, Any]:
    """Agreement and perplexity ratio of a quantized graph against the fp32 graph's ``reference`` scores."""
    ppl, argmax = answer_scores(folder, examples, threads)
    same = sum(a == b for x, y in zip(argmax, reference[1]) for a, b in zip(x, y))
    total = sum(len(x) for x in reference[1])
    agreement = same / total if total else 1.0
    ratio = ppl / reference[0]
    return {"agreement": agreement, "perplexity": ppl, "perplexity_ratio": ratio,
            "within_budget": agreement >= cfg.min_agreement and ratio <= cfg.max_perplexity_ratio}


def quantize_lm(cfg: LMQuantizeConfig, model_dir: Path, fp32_dir: Path, data_dir: Path, out_dir: Path,
                cache_dir: Path, threads: int, name: str = "student", scores: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Build ``model_dir`` at each precision into ``out_dir/<name>-<precision>`` (with ``quantize.json``), climbing
    the ``ladder`` until the budget against the fp32 graph in ``fp32_dir`` holds; returns the records.

    Each precision is built by the builder, or, where it cannot build the model (or ``cfg.builder`` is off), by
    quantizing the fp32 graph itself (``onnx_quantize.quantize_graph``). ``scores`` holds the judging ``examples``
    and the fp32 graph's ``reference`` scores once measured (and the builder's failure once seen), so that callers
    building one precision per call (the pipeline's stage) measure the fp32 graph, and try the builder, once."""
    import shutil

    from transformers import AutoConfig

    from compresskit.models import layer_count
    from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, build_genai, matmul_groups
    from compresskit.tasks.causal_lm.onnx_quantize import made_by, quantize_graph

    layers = layer_count(AutoConfig.from_pretrained(str(model_dir)))
    scores = {} if scores is None else scores
    records = {}
    for precision in cfg.precisions:
        out = out_dir / f"{name}-{precision}"
        if (out / "quantize.json").is_file():
            records[precision] = read_json(out / "quantize.json")
            continue
        if "reference" not in scores:  # measured once, and only when something is to be built
            scores["examples"], scores["judged_on"] = judging_examples(model_dir, data_dir, cfg)
            scores["reference"] = answer_scores(fp32_dir, scores["examples"], threads)
        examples, reference = scores["examples"], scores["reference"]
        started = time.time()
        attempts = []
        work = out_dir / f".{name}-{precision}.attempts"
        shutil.rmtree(work, ignore_errors=True)  # a killed run's attempts are not reused
        base = GenAIBuild(precision=precision, block_size=cfg.block_size, accuracy_level=cfg.accuracy_level,
                          exclude=(), algorithm=cfg.algorithm if precision == "int4" else "default")
        # the builder fails on a family, not on a precision: once it failed, the other precision does not retry
        builder_error = scores.get("builder_error") if cfg.builder else None
        path = BUILDER if cfg.builder and builder_error is None else MATMULNBITS
        for i, step in enumerate(ladder(precision, layers, cfg)):
            folder = work / f"attempt-{i}"
            if path == BUILDER:
                # node names as the builder writes them (a torch-exported fp32 graph names them otherwise)
                names = matmul_groups(work / "attempt-0" / "model.onnx") if step["full_precision_groups"] else {}
                try:
                    build_genai(model_dir, folder, replace(base, int8=tuple(step["int8_groups"]), exclude=tuple(
                        n for g in step["full_precision_groups"] for n in names.get(g, {}))), cache_dir)
                except UserError as e:
                    if i:  # it built the first step: a later failure is not the family's, and is the run's
                        raise
                    builder_error = scores["builder_error"] = str(e)
                    path = MATMULNBITS
            if path == MATMULNBITS:
                names = matmul_groups(fp32_dir / "model.onnx")
                quantize_graph(fp32_dir, folder, replace(base, int8=tuple(step["int8_groups"]), exclude=tuple(
                    n for g in step["full_precision_groups"] for n in names.get(g, {}))))
            verdict = judge(folder, reference, examples, threads, cfg)
            attempts.append({**step, **verdict})
            if verdict["within_budget"]:
                break
        chosen = attempts[-1]
        record = stage_record("quantize", asdict(cfg), {"model": str(model_dir), "fp32": str(fp32_dir),
                                                        "data": str(data_dir)}, started, task="causal-lm",
                              precision=precision, path=path,
                              **({"builder_error": builder_error} if builder_error else {}),
                              source_graph=made_by(fp32_dir), judged_on=scores["judged_on"],
                              attempts=attempts, chosen=chosen,
                              within_budget=chosen["within_budget"],
                              reference={"perplexity": reference[0]}, mode=precision,
                              kept_fp32=chosen["full_precision_groups"], kept_int8=chosen["int8_groups"],
                              parity={"model": f"{name}-onnx-{precision}", "reference": f"{name}-onnx",
                                      "samples": len(examples), "max_abs_diff": None, "mean_abs_diff": None,
                                      "label_agreement": chosen["agreement"], "tolerance": None,
                                      "min_agreement": cfg.min_agreement, "passed": chosen["within_budget"]})
        with atomic_dir(out) as tmp:
            for f in (work / f"attempt-{len(attempts) - 1}").iterdir():
                shutil.move(str(f), tmp / f.name)
            write_json(tmp / "quantize.json", record)
        shutil.rmtree(work, ignore_errors=True)
        records[precision] = record
    return records


def teacher_int4(model_dir: Path, out: Path, cache_dir: Path) -> dict[str, Any]:
    """The teacher's int4 graph as ONNX Runtime GenAI's builder makes it by default (every MatMul, the LM head
    included, at 4 bits, blocks of 32): what a user of that tool gets, and so the fair "teacher on ONNX Runtime".

    Where the builder cannot build the teacher, its ``torch_onnx_decoder`` graph is quantized with the same options
    by ``MatMulNBitsQuantizer`` and checked to run; ``build.json`` then says ``path: matmulnbits`` and the
    builder's ``builder_error``. That graph is not verified against PyTorch as the student's is: it is a speed
    reference, and its quality is measured by the bench like every variant's."""
    import shutil

    import numpy as np

    from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, build_genai, torch_onnx_decoder
    from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder
    from compresskit.tasks.causal_lm.onnx_quantize import quantize_graph

    cfg = GenAIBuild(precision="int4", exclude=())
    try:
        return build_genai(model_dir, out, cfg, cache_dir)
    except UserError as e:
        builder_error = str(e)
    work = out.parent / f".{out.name}.fp32"
    shutil.rmtree(work, ignore_errors=True)
    try:
        torch_onnx_decoder(model_dir, work)
        record = quantize_graph(work, out, cfg, note={"builder_error": builder_error,
                                                      "source": "torch.onnx, exported for this build and not kept"})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    decoder = OnnxDecoder(out, threads=1)
    logits, cache = decoder.prefill(np.asarray([[1, 2, 3, 4]], dtype=np.int64) % decoder.config["vocab_size"])
    logits, cache = decoder.step(int(logits.argmax()), cache)
    if not np.isfinite(logits).all():
        shutil.rmtree(out, ignore_errors=True)
        raise UserError(f"the teacher's int4 graph quantized from its torch.onnx export gives non-finite logits "
                        f"({builder_error})")
    return record
