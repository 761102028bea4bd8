"""Stage 3: export a classifier to ONNX and prove, on real validation inputs, that it computes the same thing.

The output folder is self-contained: ``model.onnx``, ``config.json``, the tokenizer files and ``export.json``
(exporter, opset, graph optimisation, parity figures, versions, hashes). A model whose weights pass what one protobuf
file can hold (2 GB) keeps them in ``model.onnx.data`` beside ``model.onnx`` (ONNX's external-data format), which
ONNX Runtime finds on its own when it loads ``model.onnx``. A graph whose SkipLayerNormalization nodes were un-fused
(faster on ONNX Runtime's CPU provider, see ``layer_norm``) comes with ``session.json``, the session
settings that keep ONNX Runtime from fusing them back; ``compresskit.runtime`` applies it.
"""

from __future__ import annotations

import dataclasses
import functools
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import (
    UserError,
    VerificationError,
    atomic_dir,
    first_line,
    free_bytes,
    stage_record,
    write_json,
)
from compresskit.machine import default_threads
from compresskit.models import LoadOptions, load_tokenizer, weight_bytes
from compresskit.onnx.io import graph_record, move_graph
from compresskit.onnx.sessions import SESSION_FILE, batched_logits, make_session, run_logits, tokenize_numpy
from compresskit.onnx.torch_export import logits_export_spec, optimize_graph, torch_export
from compresskit.tasks.classification.data import read_split_for_head
from compresskit.tasks.classification.layer_norm import SESSION_SETTINGS, write_unfused
from compresskit.tasks.classification.models import head_labels, load_classifier
from compresskit.tasks.classification.verify import Parity, compare, require
from compresskit.timing import SETTLE_SECONDS, time_runs

EXPORTERS = ("auto", "torchscript", "dynamo")
ATTENTIONS = ("auto", "eager", "sdpa")
EXTERNAL_DATA = ("auto", "always", "never")
CLS_ONLY = ("auto", "on", "off")
SKIP_LAYER_NORM = ("auto", "fused", "unfused")
EXTERNAL_DATA_ABOVE = 1_800_000_000
"""Weight bytes above which ``--external-data auto`` moves the weights out of ``model.onnx``. Protobuf refuses files
over 2 GiB (2 147 483 647 bytes); the margin leaves room for the graph and for constants the exporters fold in."""


@dataclass(frozen=True)
class ExportConfig:
    """How to export and how strictly to verify."""

    opset: int = 17
    """ONNX opset (``--opset``)."""
    exporter: str = "auto"
    """``torchscript`` (``torch.onnx.export(dynamo=False)``), ``dynamo``, or ``auto``: both, keep the faster
    verified graph (``--exporter``)."""
    optimize: bool = True
    """Run ONNX Runtime's transformer optimizer (fused LayerNorm/GELU/attention where it can) (``--optimize``)."""
    max_length: int = 128
    """Tokens per validation input in the parity check (``--max-length``)."""
    attention: str = "auto"
    """Attention implementation traced into the graph: ``eager``, ``sdpa`` or ``auto`` (both, measured)
    (``--attention``)."""
    tolerance: float = 1e-3
    """Largest allowed |ONNX − PyTorch| logit difference (``--parity-tolerance``)."""
    min_agreement: float = 0.995
    """Smallest allowed share of equal predicted labels (``--parity-min-agreement``)."""
    parity_samples: int | None = None
    """Validation examples to check; None checks them all. Not a CLI flag: the Python API only
    (``ExportConfig(parity_samples=...)``); the CLI checks the whole validation split."""
    external_data: str = "auto"
    """Weights in ``model.onnx.data`` beside ``model.onnx``: ``auto`` when they pass EXTERNAL_DATA_ABOVE bytes,
    ``always``, or ``never`` (a model that needs it is refused) (``--external-data``)."""
    cls_only: str = "auto"
    """Compute the last layer at the [CLS] position only, the one the classification head reads (exact; BERT-family
    classifiers, see ``cls_pruning``): ``on``, ``off``, or ``auto``: try both graphs, keep the faster (``--cls-only``)."""
    skip_layer_norm: str = "auto"
    """Residual Add + LayerNormalization as ONNX Runtime's fused SkipLayerNormalization, or ``unfused`` (see
    ``layer_norm``), or ``auto``: time both forms of the chosen graph, keep the faster (``--skip-layer-norm``)."""
    batch_sizes: tuple[int, ...] = (1, 32)
    """The benchmark's batch sizes (``--batch-sizes``): candidate graphs are timed at batch 1 and at the largest of
    them, at ``max_length`` tokens, and the one fastest over both is kept (``choose_fastest``)."""

    @property
    def timing_batches(self) -> tuple[int, ...]:
        """The batch sizes candidates are timed at: 1 and the largest of ``batch_sizes``."""
        return tuple(sorted({1, max(self.batch_sizes)}))

    def __post_init__(self) -> None:
        problems = []
        if not self.batch_sizes or any(b < 1 for b in self.batch_sizes):
            problems.append(f"--batch-sizes must be positive integers, got {self.batch_sizes}")
        if self.skip_layer_norm not in SKIP_LAYER_NORM:
            problems.append(f"--skip-layer-norm must be one of {', '.join(SKIP_LAYER_NORM)}, "
                            f"got {self.skip_layer_norm!r}")
        elif self.skip_layer_norm == "unfused" and self.opset < 17:
            problems.append(f"--skip-layer-norm unfused needs --opset 17 or later (LayerNormalization), "
                            f"got {self.opset}")
        if self.cls_only not in CLS_ONLY:
            problems.append(f"--cls-only must be one of {', '.join(CLS_ONLY)}, got {self.cls_only!r}")
        if self.external_data not in EXTERNAL_DATA:
            problems.append(f"--external-data must be one of {', '.join(EXTERNAL_DATA)}, got {self.external_data!r}")
        if self.exporter not in EXPORTERS:
            problems.append(f"--exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.attention not in ATTENTIONS:
            problems.append(f"--attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")
        if not 11 <= self.opset <= 23:
            problems.append(f"--opset must be between 11 and 23, got {self.opset}")
        if not self.tolerance > 0:
            problems.append(f"--parity-tolerance must be > 0, got {self.tolerance}")
        if not 0 < self.min_agreement <= 1:
            problems.append(f"--parity-min-agreement must be in (0, 1], got {self.min_agreement}")
        if self.parity_samples is not None and self.parity_samples < 1:
            problems.append(f"parity_samples (ExportConfig, not a CLI flag) must be >= 1, got {self.parity_samples}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class ExportResult:
    """The exported folder and its parity figures."""

    onnx_dir: Path
    parity: Parity
    fused_operators: dict[str, int]


def use_external_data(weights: int, mode: str) -> bool:
    """Whether a graph whose weights take ``weights`` bytes is written with external data under ``--external-data
    mode``. Raises UserError when ``mode`` is ``never`` and the weights do not fit one protobuf file."""
    large = weights > EXTERNAL_DATA_ABOVE
    if mode == "never" and large:
        raise UserError(f"the model's weights take {weights / 1e9:.2f} GB, more than one ONNX file can hold (2 GB): "
                        "use --external-data auto or always")
    return mode == "always" or (mode == "auto" and large)


@dataclass(frozen=True)
class ParityInputs:
    """The validation split as the parity check feeds it to both models."""

    arrays: dict[str, np.ndarray]
    """Token tensors ``(n, seq)``, padded to the longest validation text (at most ``max_length`` tokens)."""
    labels: np.ndarray
    """Gold label ids ``(n,)`` in the model head's order (-1 for a label the head lacks)."""


def parity_inputs(cfg: ExportConfig, tokenizer: Any, labels_order: list[str], data_dir: Path) -> ParityInputs:
    """The first ``cfg.parity_samples`` validation texts (all when None), tokenised, with their label ids."""
    texts, ids = read_split_for_head(data_dir, "validation", labels_order, cfg.parity_samples)
    return ParityInputs(tokenize_numpy(tokenizer, texts, cfg.max_length), np.array(ids))


def _torch_logits(model: Any, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    import torch

    n = len(arrays["input_ids"])
    with torch.inference_mode():
        return np.concatenate([
            model(**{k: torch.from_numpy(v[s:s + batch_size]) for k, v in arrays.items()}).logits.float().numpy()
            for s in range(0, n, batch_size)
        ])


def verify_onnx(cfg: ExportConfig, onnx_path: Path, model: Any, tokenizer: Any, data_dir: Path,
                name: str = "model", inputs: ParityInputs | None = None, reference: np.ndarray | None = None
                ) -> Parity:
    """Run ``onnx_path`` and the PyTorch ``model`` on the validation split; raise VerificationError on mismatch.

    The inputs are longer and more than the few rows a graph is traced on, so the check also exercises the dynamic
    axes. ``inputs`` (the tokenised split) and ``reference`` (``model``'s logits ``(n, classes)`` on them) stand in
    for reading and running again when given: export checks each candidate graph against one PyTorch run per
    attention implementation.
    """
    if inputs is None:
        inputs = parity_inputs(cfg, tokenizer, head_labels(model.config), data_dir)
    if reference is None:
        reference = _torch_logits(model, inputs.arrays)
    got = batched_logits(make_session(onnx_path), inputs.arrays)
    # a classifier's parity: logit closeness and label agreement
    return require(compare(f"{name}-onnx", f"{name}-pytorch", got, reference, cfg.tolerance, cfg.min_agreement,
                           inputs.labels))


@dataclass(frozen=True)
class Candidate:
    """One way to produce the graph: which exporter, which attention implementation it traces, and whether the
    last layer is computed at the [CLS] position only."""

    exporter: str
    attention: str
    cls_only: bool = False

    @property
    def name(self) -> str:
        return f"{self.exporter}+{self.attention}" + ("+cls-only" if self.cls_only else "")


def candidates(cfg: ExportConfig, cls_only_possible: bool = False) -> list[Candidate]:
    """The exporter × attention (× [CLS]-only last layer) combinations to try. Eager attention traces to the
    MatMul/Softmax pattern that ONNX Runtime's optimizer fuses into one Attention operator; SDPA traces to a form
    it does not recognise."""
    exporters = ["torchscript", "dynamo"] if cfg.exporter == "auto" else [cfg.exporter]
    attentions = ["eager", "sdpa"] if cfg.attention == "auto" else [cfg.attention]
    last = {"on": [True], "off": [False], "auto": [False, True]}[cfg.cls_only]
    if not cls_only_possible:
        last = [False]
    return [Candidate(e, a, c) for c in last for e in exporters for a in attentions]


CHOICE_RULE = ("lowest geometric mean, over the timed workloads, of the graph's median latency divided by the "
               "fastest graph's at that workload")


def choose_fastest(latency: dict[str, dict[str, float]]) -> tuple[str, dict[str, float]]:
    """The graph to keep from ``latency[graph][workload]`` (median ms; every graph timed at the same workloads) and
    each graph's score: the geometric mean over workloads of its time over the fastest graph's time there (1.0: the
    fastest everywhere). The lowest score wins; on a tie, the first graph listed.

    Why ratios and a geometric mean: each workload counts the same however long it takes (batch 32 takes tens of
    times batch 1, and a plain sum would let it decide alone), and a 10 % loss at one workload is weighed against a
    10 % gain at another."""
    if not latency:
        raise ValueError("choose_fastest needs at least one timed graph")
    workloads = list(next(iter(latency.values())))
    best = {w: min(times[w] for times in latency.values()) for w in workloads}
    scores = {g: float(np.exp(np.mean([np.log(times[w] / best[w]) for w in workloads])))
              for g, times in latency.items()}
    return min(scores, key=scores.get), scores


def _feeds(arrays: dict[str, np.ndarray], batch: int, count: int = 8) -> list[dict[str, np.ndarray]]:
    """``count`` batches of ``batch`` rows of ``arrays``, walking through the rows (wrapping around)."""
    n = len(arrays["input_ids"])
    return [{k: v[np.arange(i * batch, (i + 1) * batch) % n] for k, v in arrays.items()}
            for i in range(min(count, max(1, n)))]


def _runs_per_round(batch: int, per_round: int) -> int:
    """Fewer runs per round at larger batches: a run at batch 32 takes tens of times one at batch 1."""
    return max(2, -(-per_round // batch))


def time_sessions(paths: dict[str, Path], arrays: dict[str, np.ndarray], threads: int | None,
                  batches: tuple[int, ...] = (1,), rounds: int = 5, per_round: int = 10,
                  settle_s: float = SETTLE_SECONDS) -> dict[str, dict[str, float]]:
    """Median latency (ms) of each graph at each batch size (``{"fused": {"batch_1": …, "batch_32": …}}``), measured
    in interleaved rounds so drift hits all alike, each block of runs after ``settle_s`` of quiet
    (``SETTLE_SECONDS``)."""
    sessions = {k: make_session(p, threads=threads) for k, p in paths.items()}
    samples: dict[str, dict[str, list[float]]] = {k: {} for k in sessions}
    for batch in batches:
        feeds = _feeds(arrays, batch)
        for s in sessions.values():  # every session is warm before the first is timed
            for f in feeds[:3]:
                run_logits(s, f)
        for _ in range(rounds):
            for k, s in sessions.items():
                samples[k].setdefault(f"batch_{batch}", []).extend(
                    time_runs(functools.partial(run_logits, s), feeds, min_iterations=_runs_per_round(batch, per_round),
                              settle_s=settle_s))
    return {k: {w: float(np.median(v)) for w, v in per.items()} for k, per in samples.items()}


def time_pytorch(model: Any, arrays: dict[str, np.ndarray], threads: int, batches: tuple[int, ...] = (1,),
                 rounds: int = 5, per_round: int = 10) -> dict[str, float]:
    """Median latency (ms) of the PyTorch ``model`` (fp32, eager, as loaded) at each batch size, with the same
    inputs and as many runs as ``time_sessions`` gives each graph: what an ONNX graph has to beat."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    @torch.inference_mode()
    def run(feed: dict[str, np.ndarray]) -> object:
        return model(**{k: torch.from_numpy(v) for k, v in feed.items()}).logits

    try:
        out = {}
        for batch in batches:
            feeds = _feeds(arrays, batch)
            # settle: the ONNX sessions timed just before may still be spinning
            out[f"batch_{batch}"] = float(np.median(time_runs(
                run, feeds, warmup=3, min_iterations=rounds * _runs_per_round(batch, per_round),
                settle_s=SETTLE_SECONDS)))
        return out
    finally:
        torch.set_num_threads(before)


def choice_record(cfg: ExportConfig, latency: dict[str, dict[str, float]], scores: dict[str, float], chosen: str,
                  shipped: dict[str, float], pytorch: dict[str, float]) -> dict[str, Any]:
    """export.json's account of how the graph was chosen: the rule, the workloads, every candidate's times and score,
    the shipped graph's times (after the SkipLayerNormalization choice) beside the PyTorch model's, and the workloads
    where the shipped graph is the slower of the two. It is shipped all the same: the later stages need ONNX."""
    return {"rule": CHOICE_RULE,
            "workloads": [{"batch": b, "sequence_length": cfg.max_length} for b in cfg.timing_batches],
            "candidates": {k: {"latency_ms": v, "score": scores[k]} for k, v in latency.items()},
            "chosen": chosen, "shipped_ms": shipped, "pytorch_ms": pytorch,
            "slower_than_pytorch": [w for w in shipped if w in pytorch and shipped[w] > pytorch[w]]}


def _check_disk(out: Path, weights: int, graphs: int) -> None:
    """Refuse, before anything is written, an export whose candidate graphs would not fit on the disk: they all
    stay until the fastest is known (they are timed together), plus one staged copy that the optimizer writes."""
    need, free = weights * (graphs + 1), free_bytes(Path(out).parent)
    if need > free:
        raise UserError(f"export needs about {need / 1e9:.1f} GB free next to {out} for {graphs} candidate graphs of "
                        f"{weights / 1e9:.2f} GB, and {free / 1e9:.1f} GB is free: free some space, or try fewer "
                        "candidates (--exporter torchscript --attention eager --cls-only off --skip-layer-norm fused "
                        "makes one)")


def _skip_layer_norm(cfg: ExportConfig, path: Path, parity: Parity, check: Callable[[Path], Parity],
                     timing: dict[str, np.ndarray], external: bool) -> tuple[Path, Parity, dict[str, Any]]:
    """Keep ``path`` (the chosen graph) or its copy with SkipLayerNormalization un-fused, as ``cfg.skip_layer_norm``
    says (``auto``: the faster by ``choose_fastest``, timed side by side at ``cfg.timing_batches``). The copy is
    verified against PyTorch by ``check``, like every candidate. Returns the graph to ship, its parity, and the
    record for export.json."""
    record: dict[str, Any] = {"setting": cfg.skip_layer_norm, "form": "fused"}
    if cfg.skip_layer_norm == "fused":
        return path, parity, record
    unfused = path.parent.parent / f"{path.parent.name}+unfused-sln" / path.name
    try:
        count = write_unfused(path, unfused, external)
    except ValueError as e:  # an opset before 17 (auto only: `unfused` refuses it up front), training outputs
        return path, parity, {**record, "error": str(e)}
    record["nodes"] = count
    if not count:
        return path, parity, record
    try:
        unfused_parity = check(unfused)
    except VerificationError as e:
        if cfg.skip_layer_norm == "unfused":
            raise
        return path, parity, {**record, "error": str(e)}
    if cfg.skip_layer_norm == "auto":
        latency = time_sessions({"fused": path, "unfused": unfused}, timing, default_threads(), cfg.timing_batches)
        form, scores = choose_fastest(latency)
        record |= {"latency_ms": latency, "scores": scores, "rule": CHOICE_RULE,
                   "latency_ms_batch1": {k: v["batch_1"] for k, v in latency.items()}}
        if form == "fused":
            return path, parity, record
    return unfused, unfused_parity, {**record, "form": "unfused", "session": SESSION_SETTINGS}


def export(cfg: ExportConfig, model_dir: Path, data_dir: Path, out: Path, name: str = "model",
           load: LoadOptions = LoadOptions()) -> ExportResult:
    """Export the classifier in ``model_dir`` to ``out/model.onnx`` (weights in ``out/model.onnx.data`` when
    ``cfg.external_data`` says so) and verify it on the validation split.

    With ``--exporter auto`` / ``--attention auto`` every combination is exported, optimised and verified; every
    verified graph is timed at ``max_length`` tokens and batch 1 and the largest ``cfg.batch_sizes``, the fastest over
    both by ``choose_fastest`` is kept, and all candidates, the rule and the PyTorch model's times are recorded
    (``choice``).
    """
    started = time.time()
    from compresskit.tasks.classification.cls_pruning import ClsOnlyClassifier, supports

    model = load_classifier(str(model_dir), load)
    cls_only_unsupported = supports(model)
    if cfg.cls_only == "on" and cls_only_unsupported:
        raise UserError(f"--cls-only on: {cls_only_unsupported} (use --cls-only auto or off)")
    tokenizer = load_tokenizer(str(model_dir), load)
    labels_order = head_labels(model.config)
    sample = parity_inputs(dataclasses.replace(cfg, parity_samples=2), tokenizer, labels_order, data_dir).arrays
    validation = parity_inputs(cfg, tokenizer, labels_order, data_dir)
    weights = weight_bytes(model)
    external = use_external_data(weights, cfg.external_data)  # before any folder is made: `never` may refuse
    tries = candidates(cfg, cls_only_possible=cls_only_unsupported is None)
    _check_disk(out, weights, len(tries) + (cfg.skip_layer_norm != "fused"))
    references: dict[str, np.ndarray] = {}  # PyTorch logits per attention implementation, shared by exporters
    loaded_attention = getattr(model.config, "_attn_implementation", None)  # what a PyTorch user runs
    with atomic_dir(out) as tmp:
        tried: list[dict[str, Any]] = []
        made: dict[str, tuple[Candidate, Path, dict[str, int], str, Parity]] = {}
        for cand in tries:
            path = tmp / "candidates" / cand.name / "model.onnx"
            path.parent.mkdir(parents=True)
            entry: dict[str, Any] = {"candidate": cand.name, "exporter": cand.exporter, "attention": cand.attention,
                                     "cls_only": cand.cls_only}
            tried.append(entry)
            try:
                model.set_attn_implementation(cand.attention)
                # the [CLS]-only graph is checked below against the full PyTorch model, not against itself
                traced = ClsOnlyClassifier(model) if cand.cls_only else model
                torch_export(traced, sample, path, cand.exporter, cfg.opset, external,
                             logits_export_spec(list(sample)))
            except Exception as e:  # exporter failures come in many types; the user needs the first line
                entry["error"] = f"export failed: {first_line(e)}"
                continue
            fused, note = {}, "off"
            if cfg.optimize:
                try:
                    fused, note = optimize_graph(path, model.config, external), "onnxruntime.transformers (opt_level 0)"
                except Exception as e:  # a speed feature: a failure is recorded, the plain graph is still valid
                    note = f"failed, plain graph kept: {first_line(e)}"
            entry |= {"optimizer": note, "fused_operators": fused}
            try:
                if cand.attention not in references:
                    references[cand.attention] = _torch_logits(model, validation.arrays)
                parity = verify_onnx(cfg, path, model, tokenizer, data_dir, name, validation,
                                     references[cand.attention])
            except VerificationError as e:
                entry["error"] = str(e)
                continue
            except Exception as e:
                # a graph ONNX Runtime refuses to load (torch 2.13's dynamo exporter writes Split's opset-18
                # num_outputs into an opset-17 ModernBERT graph) is that candidate's failure; the others may load
                if not type(e).__module__.startswith("onnxruntime"):
                    raise
                entry["error"] = f"export failed: ONNX Runtime cannot load the graph: {first_line(e)}"
                continue
            entry["parity"] = parity.to_dict()
            made[cand.name] = (cand, path, fused, note, parity)
        if not made:
            reasons = "; ".join(f"{t['candidate']}: {t['error']}" for t in tried)
            if all("export failed" in t["error"] for t in tried):
                raise UserError(f"ONNX export of {model_dir} failed: {reasons}")
            raise VerificationError(f"no ONNX export of {model_dir} matched PyTorch: {reasons}")
        timing = tokenize_numpy(tokenizer, read_split_for_head(data_dir, "validation", labels_order, 8)[0],
                                cfg.max_length, pad_to_max=True)
        # every verified graph is timed, a lone one too: the record says whether it beats PyTorch
        latency = time_sessions({k: v[1] for k, v in made.items()}, timing, default_threads(), cfg.timing_batches)
        best, scores = choose_fastest(latency)
        for entry in tried:
            if entry["candidate"] in latency:
                entry |= {"latency_ms": latency[entry["candidate"]], "score": scores[entry["candidate"]],
                          "latency_ms_batch1": latency[entry["candidate"]]["batch_1"]}
        chosen, path, fused, note, parity = made[best]
        reference = references[chosen.attention]
        path, parity, skip_record = _skip_layer_norm(
            cfg, path, parity, lambda p: verify_onnx(cfg, p, model, tokenizer, data_dir, name, validation, reference),
            timing, external)
        if loaded_attention:
            model.set_attn_implementation(loaded_attention)
        choice = choice_record(cfg, latency, scores, best,
                               skip_record.get("latency_ms", {}).get(skip_record["form"], latency[best]),
                               time_pytorch(model, timing, default_threads(), cfg.timing_batches))
        if skip_record["form"] == "unfused":
            fused = {k: v for k, v in fused.items() if k != "SkipLayerNormalization"}
            shutil.copy2(path.parent / SESSION_FILE, tmp / SESSION_FILE)
        onnx_path = tmp / "model.onnx"
        move_graph(path, onnx_path)
        shutil.rmtree(tmp / "candidates")
        session = make_session(onnx_path)
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "labels.json", labels_order)
        write_json(tmp / "export.json", stage_record(
            "export", dataclasses.asdict(cfg), {"model": str(model_dir), "data": str(data_dir)}, started,
            exporter=chosen.exporter, attention=chosen.attention, chosen=chosen.name, candidates=tried, choice=choice,
            last_layer="cls-only" if chosen.cls_only else "full",
            cls_only_unsupported=cls_only_unsupported, skip_layer_norm=skip_record,
            opset=cfg.opset, optimizer=note, fused_operators=fused,
            input_names=[i.name for i in session.get_inputs()], providers=session.get_providers(),
            parity=parity.to_dict(), weight_bytes=weights, **graph_record(onnx_path)))
    return ExportResult(out, parity, fused)
