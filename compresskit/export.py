"""Stage 3: export a classifier to ONNX and prove, on real validation inputs, that it computes the same thing.

The output folder is self-contained: ``model.onnx``, ``config.json``, the tokenizer files and ``export.json``
(exporter, opset, graph optimisation, parity figures, versions, hashes). A model whose weights pass what one protobuf
file can hold (2 GB) keeps them in ``model.onnx.data`` beside ``model.onnx`` (ONNX's external-data format), which
ONNX Runtime finds on its own when it loads ``model.onnx``. A graph whose SkipLayerNormalization nodes were un-fused
(faster on ONNX Runtime's CPU provider, see ``compresskit.layer_norm``) comes with ``session.json``, the session
settings that keep ONNX Runtime from fusing them back; ``compresskit.runtime`` applies it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import (UserError, VerificationError, atomic_dir, free_bytes, sha256_file, stage_record,
                                   write_json)
from compresskit.data import read_split_for_head
from compresskit.models import LoadOptions, head_labels, load_classifier, load_tokenizer, weight_bytes
from compresskit.onnx_runtime import SESSION_FILE, batched_logits, make_session, run_logits
from compresskit.verify import Parity, compare, require

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
    """Validation examples to check; None checks them all (``--parity-samples``)."""
    external_data: str = "auto"
    """Weights in ``model.onnx.data`` beside ``model.onnx``: ``auto`` when they pass EXTERNAL_DATA_ABOVE bytes,
    ``always``, or ``never`` (a model that needs it is refused) (``--external-data``)."""
    cls_only: str = "auto"
    """Compute the last layer at the [CLS] position only, the one the classification head reads (exact; BERT-family
    classifiers, see ``cls_pruning``): ``on``, ``off``, or ``auto``: try both graphs, keep the faster (``--cls-only``)."""
    skip_layer_norm: str = "auto"
    """Residual Add + LayerNormalization as ONNX Runtime's fused SkipLayerNormalization, or ``unfused`` (see
    ``layer_norm``), or ``auto``: time both forms of the chosen graph, keep the faster (``--skip-layer-norm``)."""

    def __post_init__(self) -> None:
        problems = []
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
            problems.append(f"--parity-samples must be >= 1, got {self.parity_samples}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class ExportResult:
    """The exported folder and its parity figures."""

    onnx_dir: Path
    parity: Parity
    fused_operators: dict[str, int]


def tokenize_numpy(tokenizer: Any, texts: list[str], max_length: int, pad_to_max: bool = False) -> dict[str, np.ndarray]:
    """Tokenise to int64 numpy arrays, padded to the longest text or to ``max_length``."""
    enc = tokenizer(texts, truncation=True, max_length=max_length, return_tensors="np",
                    padding="max_length" if pad_to_max else True)
    return {k: np.asarray(v, dtype=np.int64) for k, v in enc.items()}


class _LogitsOnly:
    """Wraps a classifier so the exported graph takes positional token tensors and returns only logits."""

    @staticmethod
    def wrap(model: Any, input_names: list[str]) -> Any:
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, *tensors):
                out = self.model(**dict(zip(input_names, tensors)))
                return out.logits if hasattr(out, "logits") else out  # a ClsOnlyClassifier returns the logits

        return Wrapped().eval()


def use_external_data(weights: int, mode: str) -> bool:
    """Whether a graph whose weights take ``weights`` bytes is written with external data under ``--external-data
    mode``. Raises UserError when ``mode`` is ``never`` and the weights do not fit one protobuf file."""
    large = weights > EXTERNAL_DATA_ABOVE
    if mode == "never" and large:
        raise UserError(f"the model's weights take {weights / 1e9:.2f} GB, more than one ONNX file can hold (2 GB): "
                        "use --external-data auto or always")
    return mode == "always" or (mode == "auto" and large)


def _all_tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto of ``graph``: initializers, and tensors in node attributes and subgraphs (ONNX Runtime's
    quantizers move large Constant attributes to external data too)."""
    yield from graph.initializer
    yield from (s.values for s in graph.sparse_initializer)
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            if a.HasField("g"):
                yield from _all_tensors(a.g)
            for g in a.graphs:
                yield from _all_tensors(g)


def external_data_files(onnx_path: Path) -> list[str]:
    """Files holding ``onnx_path``'s external tensors, relative to its folder, in first-use order; empty for a graph
    that is one file. Reads the graph only, not the weights."""
    import onnx

    names: dict[str, None] = {}
    for t in _all_tensors(onnx.load(str(onnx_path), load_external_data=False).graph):
        if t.data_location == onnx.TensorProto.EXTERNAL:
            names[next(e.value for e in t.external_data if e.key == "location")] = None
    return list(names)


def save_graph(model: Any, path: Path, external: bool) -> None:
    """Write the ModelProto ``model`` to ``path``: one file, or (``external``) its tensors over 1 KiB in
    ``<path name>.data`` beside it."""
    import onnx
    from google.protobuf.message import EncodeError

    data = path.with_name(path.name + ".data")
    # onnx appends to an existing data file, so a stale one would stay inside the new one as dead bytes
    data.unlink(missing_ok=True)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data.name, size_threshold=1024)
        return
    try:
        onnx.save_model(model, str(path))
    except (ValueError, EncodeError) as e:  # upb raises EncodeError, the pure-Python protobuf ValueError
        raise UserError(f"the ONNX graph does not fit one protobuf file (2 GB limit): use --external-data always "
                        f"({_first_line(e)})") from e


def move_graph(src: Path, dst: Path) -> None:
    """Move the graph ``src`` and its external-data files to ``dst``, replacing ``dst`` and its data files. The graph
    names its data files relative to itself, so they keep their names beside the moved graph."""
    if dst.is_file():
        for name in external_data_files(dst):
            (dst.parent / name).unlink(missing_ok=True)
    for name in external_data_files(src):
        (dst.parent / name).parent.mkdir(parents=True, exist_ok=True)
        os.replace(src.parent / name, dst.parent / name)
    os.replace(src, dst)


def graph_record(onnx_path: Path) -> dict[str, Any]:
    """Manifest fields of a graph: its hash and size, whether it has external data, and each data file's name,
    hash and size (a graph's weights are part of what a hash must pin down)."""
    files = external_data_files(onnx_path)
    return {
        "sha256": sha256_file(onnx_path), "size_bytes": onnx_path.stat().st_size, "external_data": bool(files),
        "data_files": [{"name": n, "sha256": sha256_file(onnx_path.parent / n),
                        "size_bytes": (onnx_path.parent / n).stat().st_size} for n in files],
    }


def _store(path: Path, external: bool) -> None:
    """Leave the exporter's graph at ``path`` in the layout the run chose: one file, or ``model.onnx`` plus
    ``model.onnx.data``. Why: the TorchScript exporter takes no such option and spills a graph over 2 GB into one file
    per tensor, named after the tensor; the dynamo exporter spills from its own threshold (1.5 GiB)."""
    import onnx

    files = external_data_files(path)
    if files == ([path.name + ".data"] if external else []):
        return
    model = onnx.load(str(path))  # brings every external tensor into memory, so their files can go
    for name in files:
        (path.parent / name).unlink()
    save_graph(model, path, external)


def _torch_export(model: Any, sample: dict[str, np.ndarray], path: Path, cfg: ExportConfig,
                  external: bool = False) -> None:
    import warnings

    import torch

    names = list(sample)
    args = tuple(torch.from_numpy(sample[n]) for n in names)
    wrapped = _LogitsOnly.wrap(model, names)
    # The tracer warns about every Python branch on shapes in transformers' mask code; the parity check on real
    # inputs of several lengths is what tells whether the traced graph is right, so the warnings are noise.
    with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if cfg.exporter == "torchscript":
            torch.onnx.export(
                wrapped, args, str(path), input_names=names, output_names=["logits"], opset_version=cfg.opset,
                dynamic_axes={**{n: {0: "batch", 1: "sequence"} for n in names}, "logits": {0: "batch"}},
                do_constant_folding=True, dynamo=False,
            )
        else:
            batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2)
            with contextlib.redirect_stdout(io.StringIO()):  # its step-by-step progress lines are not for users
                program = torch.onnx.export(
                    wrapped, args, input_names=names, output_names=["logits"], opset_version=cfg.opset,
                    dynamic_shapes=(tuple({0: batch, 1: seq} for _ in names),), dynamo=True, optimize=True,
                )
            program.save(str(path), external_data=external)
    _store(path, external)


def _optimize(path: Path, config: Any, external: bool = False) -> dict[str, int]:
    """Fuse transformer subgraphs in place with ONNX Runtime's optimizer; returns fused-operator counts."""
    from onnxruntime.transformers.optimizer import optimize_model

    model_type = config.model_type if config.model_type in ("bert", "roberta", "distilbert") else "bert"
    # opt_level 0: only the Python fusions, so the file stays portable across execution providers; the
    # session applies ORT's own provider-specific optimisations when it loads the model.
    opt = optimize_model(str(path), model_type=model_type, num_heads=config.num_attention_heads,
                         hidden_size=config.hidden_size, opt_level=0)
    # Saved beside, then moved over the plain graph: a save that fails half-way must leave the plain graph whole,
    # since the caller keeps it when optimisation fails.
    staged = path.parent / "optimized" / path.name
    try:
        opt.save_model_to_file(str(staged), use_external_data_format=external, all_tensors_to_one_file=True)
        move_graph(staged, path)
    finally:
        shutil.rmtree(staged.parent, ignore_errors=True)
    return {k: int(v) for k, v in opt.get_fused_operator_statistics().items() if v}


def _validation_inputs(cfg: ExportConfig, tokenizer: Any, labels_order: list[str], data_dir: Path
                       ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tokenised validation texts and their label ids in the model head's order (-1 for unknown labels)."""
    texts, ids = read_split_for_head(data_dir, "validation", labels_order, cfg.parity_samples)
    return tokenize_numpy(tokenizer, texts, cfg.max_length), np.array(ids)


def _torch_logits(model: Any, arrays: dict[str, np.ndarray], batch_size: int = 32) -> np.ndarray:
    import torch

    n = len(arrays["input_ids"])
    with torch.inference_mode():
        return np.concatenate([
            model(**{k: torch.from_numpy(v[s:s + batch_size]) for k, v in arrays.items()}).logits.float().numpy()
            for s in range(0, n, batch_size)
        ])


def verify_onnx(cfg: ExportConfig, onnx_path: Path, model: Any, tokenizer: Any, data_dir: Path,
                name: str = "model") -> Parity:
    """Run ``onnx_path`` and the PyTorch ``model`` on the validation split; raise VerificationError on mismatch.

    Inputs are padded per batch to their longest member, so the check also exercises the dynamic axes.
    """
    arrays, label_ids = _validation_inputs(cfg, tokenizer, head_labels(model.config), data_dir)
    return _parity(cfg, onnx_path, arrays, _torch_logits(model, arrays), label_ids, name)


def _parity(cfg: ExportConfig, onnx_path: Path, arrays: dict[str, np.ndarray], reference: np.ndarray,
            label_ids: np.ndarray, name: str) -> Parity:
    got = batched_logits(make_session(onnx_path), arrays)
    return require(compare(f"{name}-onnx", f"{name}-pytorch", got, reference, cfg.tolerance, cfg.min_agreement,
                           label_ids))


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


def time_sessions(paths: dict[str, Path], arrays: dict[str, np.ndarray], threads: int | None, rounds: int = 5,
                  per_round: int = 10) -> dict[str, float]:
    """Median batch-1 latency (ms) of each graph, measured in interleaved rounds so drift hits all alike."""
    sessions = {k: make_session(p, threads=threads) for k, p in paths.items()}
    feeds = [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(min(8, len(arrays["input_ids"])))]
    samples: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        for f in feeds[:3]:
            run_logits(s, f)
    for _ in range(rounds):
        for k, s in sessions.items():
            for i in range(per_round):
                t0 = time.perf_counter()
                run_logits(s, feeds[i % len(feeds)])
                samples[k].append((time.perf_counter() - t0) * 1000)
    return {k: float(np.median(v)) for k, v in samples.items()}


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _check_disk(out: Path, weights: int, graphs: int) -> None:
    """Refuse, before anything is written, an export whose candidate graphs would not fit on the disk: they all
    stay until the fastest is known (they are timed together), plus one staged copy that the optimizer writes."""
    need, free = weights * (graphs + 1), free_bytes(Path(out).parent)
    if need > free:
        raise UserError(f"export needs about {need / 1e9:.1f} GB free next to {out} for {graphs} candidate graphs of "
                        f"{weights / 1e9:.2f} GB, and {free / 1e9:.1f} GB is free: free some space, or try fewer "
                        "candidates (--exporter torchscript --attention eager --cls-only off --skip-layer-norm fused "
                        "makes one)")


def _skip_layer_norm(cfg: ExportConfig, path: Path, parity: Parity, arrays: dict[str, np.ndarray],
                     reference: np.ndarray, label_ids: np.ndarray, timing: dict[str, np.ndarray], name: str,
                     external: bool) -> tuple[Path, Parity, dict[str, Any]]:
    """Keep ``path`` (the chosen graph) or its copy with SkipLayerNormalization un-fused, as ``cfg.skip_layer_norm``
    says (``auto``: the faster, timed side by side). The copy is verified against PyTorch like every candidate.
    Returns the graph to ship, its parity, and the record for export.json."""
    from compresskit.layer_norm import SESSION_SETTINGS, write_unfused
    from compresskit.machine import default_threads

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
        unfused_parity = _parity(cfg, unfused, arrays, reference, label_ids, name)
    except VerificationError as e:
        if cfg.skip_layer_norm == "unfused":
            raise
        return path, parity, {**record, "error": str(e)}
    if cfg.skip_layer_norm == "auto":
        latency = time_sessions({"fused": path, "unfused": unfused}, timing, default_threads())
        record["latency_ms_batch1"] = latency
        if latency["fused"] <= latency["unfused"]:
            return path, parity, record
    return unfused, unfused_parity, {**record, "form": "unfused", "session": SESSION_SETTINGS}


def export(cfg: ExportConfig, model_dir: Path, data_dir: Path, out: Path, name: str = "model",
           load: LoadOptions = LoadOptions()) -> ExportResult:
    """Export the classifier in ``model_dir`` to ``out/model.onnx`` (weights in ``out/model.onnx.data`` when
    ``cfg.external_data`` says so) and verify it on the validation split.

    With ``--exporter auto`` / ``--attention auto`` every combination is exported, optimised and verified; the
    fastest verified graph at batch 1 and ``max_length`` tokens is kept, and all candidates are recorded.
    """
    from compresskit.machine import default_threads

    started = time.time()
    from compresskit.cls_pruning import ClsOnlyClassifier, supports

    model = load_classifier(str(model_dir), load)
    cls_only_unsupported = supports(model)
    if cfg.cls_only == "on" and cls_only_unsupported:
        raise UserError(f"--cls-only on: {cls_only_unsupported} (use --cls-only auto or off)")
    tokenizer = load_tokenizer(str(model_dir), load)
    sample, _ = _validation_inputs(dataclasses.replace(cfg, parity_samples=2), tokenizer, head_labels(model.config),
                                   data_dir)
    arrays, label_ids = _validation_inputs(cfg, tokenizer, head_labels(model.config), data_dir)
    weights = weight_bytes(model)
    external = use_external_data(weights, cfg.external_data)  # before any folder is made: `never` may refuse
    tries = candidates(cfg, cls_only_possible=cls_only_unsupported is None)
    _check_disk(out, weights, len(tries) + (cfg.skip_layer_norm != "fused"))
    references: dict[str, np.ndarray] = {}  # PyTorch logits per attention implementation, shared by exporters
    with atomic_dir(out) as tmp:
        tried: list[dict[str, Any]] = []
        made: dict[str, tuple[Path, dict[str, int], str, Parity]] = {}
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
                _torch_export(traced, sample, path, dataclasses.replace(cfg, exporter=cand.exporter), external)
            except Exception as e:  # exporter failures come in many types; the user needs the first line
                entry["error"] = f"export failed: {_first_line(e)}"
                continue
            fused, note = {}, "off"
            if cfg.optimize:
                try:
                    fused, note = _optimize(path, model.config, external), "onnxruntime.transformers (opt_level 0)"
                except Exception as e:  # a speed feature: a failure is recorded, the plain graph is still valid
                    note = f"failed, plain graph kept: {_first_line(e)}"
            entry |= {"optimizer": note, "fused_operators": fused}
            try:
                if cand.attention not in references:
                    references[cand.attention] = _torch_logits(model, arrays)
                parity = _parity(cfg, path, arrays, references[cand.attention], label_ids, name)
            except VerificationError as e:
                entry["error"] = str(e)
                continue
            entry["parity"] = parity.to_dict()
            made[cand.name] = (path, fused, note, parity)
        if not made:
            reasons = "; ".join(f"{t['candidate']}: {t['error']}" for t in tried)
            if all("export failed" in t["error"] for t in tried):
                raise UserError(f"ONNX export of {model_dir} failed: {reasons}")
            raise VerificationError(f"no ONNX export of {model_dir} matched PyTorch: {reasons}")
        timing = tokenize_numpy(tokenizer, read_split_for_head(data_dir, "validation", head_labels(model.config),
                                                               8)[0], cfg.max_length, pad_to_max=True)
        if len(made) > 1:
            latency = time_sessions({k: v[0] for k, v in made.items()}, timing, default_threads())
            for entry in tried:
                entry["latency_ms_batch1"] = latency.get(entry["candidate"])
            chosen = min(latency, key=latency.get)
        else:
            chosen = next(iter(made))
        path, fused, note, parity = made[chosen]
        reference = references[chosen.split("+")[1]]
        path, parity, skip_record = _skip_layer_norm(cfg, path, parity, arrays, reference, label_ids, timing, name,
                                                     external)
        if skip_record["form"] == "unfused":
            fused = {k: v for k, v in fused.items() if k != "SkipLayerNormalization"}
            shutil.copy2(path.parent / SESSION_FILE, tmp / SESSION_FILE)
        onnx_path = tmp / "model.onnx"
        move_graph(path, onnx_path)
        shutil.rmtree(tmp / "candidates")
        session = make_session(onnx_path)
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "labels.json", head_labels(model.config))
        write_json(tmp / "export.json", stage_record(
            "export", dataclasses.asdict(cfg), {"model": str(model_dir), "data": str(data_dir)}, started,
            exporter=chosen.split("+")[0], attention=chosen.split("+")[1], chosen=chosen, candidates=tried,
            last_layer="cls-only" if chosen.endswith("+cls-only") else "full",
            cls_only_unsupported=cls_only_unsupported, skip_layer_norm=skip_record,
            opset=cfg.opset, optimizer=note, fused_operators=fused,
            input_names=[i.name for i in session.get_inputs()], providers=session.get_providers(),
            parity=parity.to_dict(), weight_bytes=weights, **graph_record(onnx_path)))
    return ExportResult(out, parity, fused)
