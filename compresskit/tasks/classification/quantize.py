"""Stage 4 (optional): quantize an exported ONNX model with ONNX Runtime and verify it against its fp32 self.

Every mode ends the same way: the quantized graph runs on the validation split next to its fp32 source, and the
run fails (VerificationError) unless its labels agree with fp32's on at least ``min_agreement`` of the inputs and
its accuracy drops by at most ``max_accuracy_drop``. When an integer mode breaks that budget, the accuracy-aware
fallback measures which layers suffer most from quantization and keeps them in fp32 until the budget holds, then
returns those layers' nodes to integer one by one wherever the budget still holds.

A source whose weights are in external data (``model.onnx`` + ``model.onnx.data``, see ``export``) gives
quantized graphs in the same layout, at every step that writes one: whatever the mode shrinks the weights to, the
layout stays one a reader of the source folder already handles.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import (
    UserError,
    VerificationError,
    atomic_dir,
    read_json,
    sha256_file,
    stage_record,
    write_json,
)
from compresskit.machine import default_threads, has_vnni
from compresskit.onnx.io import external_data_files, graph_record, move_graph, save_graph
from compresskit.onnx.sessions import (
    SESSION_FILE,
    available_providers,
    batched_logits,
    make_session,
    session_inputs,
    tokenize_numpy,
)
from compresskit.tasks.classification.data import read_split_for_head
from compresskit.tasks.classification.verify import Parity, compare
from compresskit.timing import SETTLE_SECONDS, Latency, time_runs

MODES = ("none", "dynamic-int8", "static-int8", "fp16", "int4", "auto")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
DEVICES = ("cpu", "cuda")
AUTO_MODES = {
    # int8 kernels (MatMulInteger, QDQ) are CPU kernels: ONNX Runtime's CUDA provider runs them on the CPU or not
    # at all, so on a GPU only half precision and weight-only int4 (MatMulNBits has CUDA kernels) are candidates.
    "cpu": ("dynamic-int8", "static-int8", "int4"),
    "cuda": ("fp16", "int4"),
}
INTEGER_MODES = ("dynamic-int8", "static-int8", "int4")
"""Modes that quantize weights node by node, so the fallback can keep chosen nodes in fp32."""

FP16_KEEP_FP32 = (
    # exp() overflows half precision above ~11, and a softmax row sum over long sequences loses digits.
    "Softmax", "Exp",
    # Normalisation computes mean(x²): a hidden state above 256 (BERT-like encoders have outlier dimensions of
    # several hundred) squares past fp16's 65504. Fused or not (ReduceMean → Pow → Sqrt), keep it in fp32.
    "LayerNormalization", "SkipLayerNormalization", "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization", "ReduceMean", "Pow", "Sqrt",
    # Erf, Tanh and Gelu are bounded and stay in fp16; MatMul/Gemm, where the speed is, accumulate in fp32 on GPUs.
)
"""Operator types kept in fp32 by ``fp16`` (on top of ONNX Runtime's list of ops that have no fp16 kernels)."""

ENTROPY_BINS = 512
"""Histogram bins of the entropy (KL) calibration, whose thresholds are searched from 128 bins up: 512 lets it clip a
range down to a quarter. TensorRT's 2048 allows a sixteenth but costs about six times as long in ONNX Runtime's
per-threshold Python loop (~0.3 s per tensor on a small CPU), only to clip BERT's outlier dimensions, which matter,
harder."""
MAX_FALLBACK_STEPS = 8
"""At most this many layer groups are put back to fp32 before the fallback gives up."""
LATENCY_WARMUP, LATENCY_RUNS = 3, 20
_SUFFIX = {"dynamic-int8": "int8", "static-int8": "int8-static", "fp16": "fp16", "int4": "int4"}
# "layer.3", "layers.3", "h.3", "block_3"…: the index that makes nodes one transformer layer.
_LAYER = re.compile(r"(?:^|[/._])(?:layer|layers|h|block|blocks)[._](\d+)(?=[/._]|$)")


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the quantizers' advice on the root logger ("consider pre-processing") and the calibrators' prints
    ("Collecting tensor data…"): users cannot act on either, and the CLI owns the terminal."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


def _matmul_nbits_quantizer() -> Any:
    """ONNX Runtime's 4-bit MatMul quantizer, imported without its side effect: the module calls
    ``logging.basicConfig(level=INFO)``, which would make every library's INFO logs print for the rest of the run."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        root.setLevel(level)
        for h in root.handlers[:]:
            if h not in handlers:
                root.removeHandler(h)
    return MatMulNBitsQuantizer


@dataclass(frozen=True)
class QuantizeConfig:
    """Which quantization, and how strictly to verify it."""

    mode: str = "dynamic-int8"
    """``dynamic-int8``, ``static-int8``, ``fp16``, ``int4``, ``auto`` or ``none`` (``--quantize``)."""
    per_channel: bool = False
    """One scale per output channel of each weight instead of per tensor (``--per-channel``)."""
    reduce_range: bool | None = None
    """7-bit weights, avoiding u8×s8 overflow on CPUs without VNNI; None decides from the CPU. Not a CLI flag: the
    Python API only (``QuantizeConfig(reduce_range=...)``); the CLI always decides from the CPU."""
    min_agreement: float = 0.99
    """Smallest allowed share of labels equal to the fp32 model's (``--int8-min-agreement``)."""
    max_length: int = 128
    """Tokens per validation input in the check (``--max-length``)."""
    calibration_samples: int = 64
    """Train examples whose activation ranges fix ``static-int8``'s scales (``--calibration-samples``)."""
    calibration_method: str = "minmax"
    """How ``static-int8`` turns activations into ranges: minmax, entropy or percentile (``--calibration-method``)."""
    int4_block_size: int = 32
    """Weights per scale along the reduced axis in ``int4`` (a power of two ≥ 16) (``--int4-block-size``)."""
    device: str = "cpu"
    """Where the model will run: picks ``auto``'s candidates and where their latency is measured (``--device``)."""
    max_accuracy_drop: float = 0.01
    """Largest allowed fall of validation accuracy versus fp32, as a fraction (``--max-accuracy-drop``)."""
    fallback: bool = True
    """Keep the most sensitive layers in fp32 when an integer mode breaks the budget (``--no-fallback`` turns off)."""

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"--quantize must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0 < self.min_agreement <= 1:
            problems.append(f"--int8-min-agreement must be in (0, 1], got {self.min_agreement}")
        if self.max_length < 1:
            problems.append(f"--max-length must be at least 1, got {self.max_length}")
        if self.calibration_samples < 1:
            problems.append(f"--calibration-samples must be at least 1, got {self.calibration_samples}")
        if self.calibration_method not in CALIBRATION_METHODS:
            problems.append(f"--calibration-method must be one of {', '.join(CALIBRATION_METHODS)}, "
                            f"got {self.calibration_method!r}")
        b = self.int4_block_size
        if b < 16 or b & (b - 1):
            problems.append(f"--int4-block-size must be a power of two of at least 16 (16, 32, 64, 128…), got {b}")
        if self.device not in DEVICES:
            problems.append(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if not 0 <= self.max_accuracy_drop <= 1:
            problems.append(f"--max-accuracy-drop must be in [0, 1] (a fraction: 0.01 is one point), "
                            f"got {self.max_accuracy_drop}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class QuantizeResult:
    """The quantized folder and its check against the fp32 model."""

    onnx_dir: Path
    parity: Parity
    mode: str = "dynamic-int8"
    """The mode that made the model (``auto``'s pick when auto was asked for)."""


@dataclass(frozen=True)
class ValidationSet:
    """The inputs every quantized model is checked on, and the fp32 model's answers to them."""

    arrays: dict[str, np.ndarray]
    """Token tensors ``(n, seq)``, padded to the longest validation text."""
    labels: np.ndarray
    """Gold label ids ``(n,)`` in the model head's order (-1 for a label the head lacks)."""
    reference: np.ndarray
    """The fp32 model's logits ``(n, classes)``."""
    padded: dict[str, np.ndarray]
    """The same texts as ``(n, max_length)`` tensors: the fixed shape latency is measured at."""


def load_validation(onnx_dir: Path, data_dir: Path, max_length: int) -> ValidationSet:
    """Tokenise the validation split with ``onnx_dir``'s tokenizer and run the fp32 ``model.onnx`` on it."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(onnx_dir))
    texts, ids = read_split_for_head(data_dir, "validation", read_json(Path(onnx_dir) / "labels.json"))
    arrays = tokenize_numpy(tokenizer, texts, max_length)
    reference = batched_logits(make_session(Path(onnx_dir) / "model.onnx"), arrays)
    return ValidationSet(arrays, np.array(ids), reference, tokenize_numpy(tokenizer, texts, max_length, True))


def budget_problems(p: Parity, cfg: QuantizeConfig) -> list[str]:
    """What of the accuracy budget ``p`` breaks: label agreement below ``min_agreement``, accuracy falling by more
    than ``max_accuracy_drop``; empty when it holds. The 1e-9 keeps 0.99 = 0.99 from failing on rounding."""
    problems = []
    if p.label_agreement < cfg.min_agreement - 1e-9:
        problems.append(f"label agreement {p.label_agreement:.2%} < {cfg.min_agreement:.2%}")
    drop = _accuracy_drop(p)
    if drop is not None and drop > cfg.max_accuracy_drop + 1e-9:
        problems.append(f"accuracy drop {drop:.2%} > {cfg.max_accuracy_drop:.2%}")
    return problems


def _accuracy_drop(p: Parity) -> float | None:
    if p.accuracy_model is None or p.accuracy_reference is None:
        return None
    return p.accuracy_reference - p.accuracy_model


def _measure(model_path: Path, validation: ValidationSet, cfg: QuantizeConfig, model: str, reference: str) -> Parity:
    """Run ``model_path`` on the validation inputs and compare with fp32; NaN or inf raises VerificationError."""
    got = batched_logits(make_session(model_path), validation.arrays)
    p = compare(model, reference, got, validation.reference, None, cfg.min_agreement, validation.labels)
    return dataclasses.replace(p, passed=not budget_problems(p, cfg))


def verify_quantized(model_path: Path, validation: ValidationSet, cfg: QuantizeConfig, model: str = "model-onnx-q",
                     reference: str = "model-onnx") -> Parity:
    """Check a quantized graph against its fp32 source's answers on the validation inputs.

    Raises VerificationError (one line) on NaN/inf outputs, a different output shape, or a broken budget.
    """
    p = _measure(Path(model_path), validation, cfg, model, reference)
    problems = budget_problems(p, cfg)
    if problems:
        raise VerificationError(_mismatch(p, problems))
    return p


def _mismatch(p: Parity, problems: list[str]) -> str:
    return f"{p.model} does not match {p.reference} on {p.samples} validation inputs: " + "; ".join(problems)


def batch1_latency(model_path: Path, padded: dict[str, np.ndarray], device: str = "cpu") -> Latency:
    """Batch-1 latency of ``model_path`` over rows of ``padded`` (each ``(n, max_length)``), taken in turn:
    LATENCY_WARMUP runs, then LATENCY_RUNS timed ones. Quick and in-process: enough to rank candidates, not a
    benchmark (``compresskit bench`` measures the chosen model properly, in its own process)."""
    session = make_session(Path(model_path), threads=default_threads(), device=device)
    n = len(next(iter(padded.values())))
    rows = [session_inputs(session, {k: v[i:i + 1] for k, v in padded.items()}) for i in range(n)]
    # settle: the previous candidate's threads may still be spinning (timing.SETTLE_SECONDS)
    samples = time_runs(lambda row: session.run(None, row), rows, warmup=LATENCY_WARMUP, min_iterations=LATENCY_RUNS,
                        settle_s=SETTLE_SECONDS)
    return Latency.from_samples(samples)


# ---------------------------------------------------------------------------------------------------------------------
# Building one quantized graph


@dataclass(frozen=True)
class _Inputs:
    """What every build needs besides the graph: resolved once per run."""

    cfg: QuantizeConfig
    reduce_range: bool
    calibration: list[dict[str, np.ndarray]]
    """Tokenised train examples, one ``(1, seq)`` batch each (static-int8 only; empty otherwise)."""
    external: bool = False
    """Write every graph with its tensors in ``<graph>.data`` beside it, as the source was written."""


def _calibration_batches(onnx_dir: Path, data_dir: Path, cfg: QuantizeConfig) -> list[dict[str, np.ndarray]]:
    """The first ``calibration_samples`` train examples, one unpadded batch each, so that pad positions do not
    skew the ranges."""
    import onnx
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(onnx_dir))
    texts, _ = read_split_for_head(data_dir, "train", read_json(Path(onnx_dir) / "labels.json"),
                                   limit=cfg.calibration_samples)
    graph = onnx.load(str(Path(onnx_dir) / "model.onnx"), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    batches = []
    for text in texts:
        enc = tokenize_numpy(tokenizer, [text], cfg.max_length)
        batches.append({n: enc[n] for n in names})
    return batches


class _Reader:
    """The CalibrationDataReader protocol (``get_next`` until None) over prepared batches."""

    def __init__(self, batches: list[dict[str, np.ndarray]]) -> None:
        self._batches = batches
        self._i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._i >= len(self._batches):
            return None
        self._i += 1
        return self._batches[self._i - 1]

    def rewind(self) -> None:
        self._i = 0


def _prepare(mode: str, source: Path, workdir: Path, external: bool = False) -> Path:
    """The graph a mode quantizes: the source itself, or for static-int8 its pre-processed copy.

    Why pre-process for static-int8: the QDQ quantizer only quantizes tensors whose type it knows, and ONNX shape
    inference stops at the fused com.microsoft operators (SkipLayerNormalization, BiasGelu), so every tensor after
    the first of them is "of unknown type" and the bias quantization aborts. ONNX Runtime's symbolic shape inference
    knows these operators; ``auto_merge`` lets it unify the dynamic dimensions of the attention-mask path (Range,
    Expand), without which it stops with "Incomplete symbolic shape inference". Dynamic int8, fp16 and int4 do not
    need the tensor types (they take ``DefaultTensorType`` or infer them themselves), so they skip it.
    """
    if mode != "static-int8":
        return source
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = workdir / "preprocessed.onnx"
    if not prepared.is_file():
        with _quiet():
            quant_pre_process(str(source), str(prepared), auto_merge=True, save_as_external_data=external,
                              all_tensors_to_one_file=True, external_data_location=f"{prepared.name}.data")
    return prepared


def _calibrate(prepared: Path, inputs: _Inputs) -> Path | None:
    """Activation ranges of ``prepared``'s MatMul/Gemm tensors over the calibration batches, saved as ONNX Runtime's
    calibration cache next to it (None where this onnxruntime cannot take a cache).

    Why not let ``quantize_static`` calibrate: it passes no bin counts to the entropy calibrator, whose defaults
    (128 bins, 128 quantized bins) leave one candidate threshold, the full range, so "entropy" silently equals
    "minmax" (see ENTROPY_BINS). A cache also lets the fallback's trials reuse the ranges: they exclude nodes, not
    tensors, so the ranges do not change.
    """
    import inspect

    from onnxruntime.quantization import CalibrationMethod, create_calibrator, quantize_static

    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        if inputs.cfg.calibration_method == "entropy":
            import onnxruntime

            raise UserError(f"--calibration-method entropy: onnxruntime {onnxruntime.__version__} cannot take "
                            "calibration ranges from outside, and its own entropy calibration equals minmax; "
                            "upgrade onnxruntime or use --calibration-method minmax or percentile")
        return None
    from onnxruntime.quantization.calibrate import save_tensors_data

    cache = prepared.with_name("calibration.json")
    if cache.is_file():
        return cache
    method, options = {"minmax": (CalibrationMethod.MinMax, {}),
                       "entropy": (CalibrationMethod.Entropy, {"num_bins": ENTROPY_BINS, "num_quantized_bins": 128}),
                       "percentile": (CalibrationMethod.Percentile, {})}[inputs.cfg.calibration_method]
    with tempfile.TemporaryDirectory(dir=prepared.parent) as tmp, _quiet():
        calibrator = create_calibrator(prepared, ["MatMul", "Gemm"], augmented_model_path=str(Path(tmp) / "aug.onnx"),
                                       calibrate_method=method, use_external_data_format=inputs.external,
                                       extra_options=options)
        calibrator.collect_data(_Reader(inputs.calibration))
        save_tensors_data(calibrator.compute_data(), cache)
    return cache


def _remove_graph(path: Path) -> None:
    """Delete a graph written by ``_build`` and its data file, if there."""
    path.unlink(missing_ok=True)
    path.with_name(f"{path.name}.data").unlink(missing_ok=True)


def _build(mode: str, prepared: Path, target: Path, inputs: _Inputs, exclude: list[str]) -> None:
    """Write ``prepared`` quantized with ``mode`` to ``target``, leaving the nodes named in ``exclude`` in fp32."""
    import onnx

    cfg = inputs.cfg
    # The fallback rewrites the same target again and again, and ONNX Runtime's quantizers append to an existing
    # data file rather than replace it: each build starts from nothing.
    _remove_graph(target)
    # Fused contrib operators (BiasGelu, SkipLayerNormalization) defeat ONNX shape inference, and without a
    # default type the quantizer aborts on their outputs ("Unable to find data type"); they are all fp32.
    extra = {"DefaultTensorType": onnx.TensorProto.FLOAT}
    if mode == "dynamic-int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet():
            quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                             reduce_range=inputs.reduce_range, nodes_to_exclude=exclude, extra_options=extra,
                             use_external_data_format=inputs.external)
    elif mode == "static-int8":
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                  "percentile": CalibrationMethod.Percentile}[cfg.calibration_method]
        cache = _calibrate(prepared, inputs)
        calibration = {"calibration_cache_path": str(cache)} if cache else {
            "calibration_data_reader": _Reader(inputs.calibration)}
        # QDQ with uint8 activations and int8 weights is ONNX Runtime's recommendation for x86 CPUs. Only
        # MatMul/Gemm are quantized: that is where int8 pays, and the attention-mask path carries -inf/finfo.min
        # values that give other operators infinite calibration ranges (NaN zero points, histogram errors).
        with _quiet():
            quantize_static(str(prepared), str(target), quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=["MatMul", "Gemm"], per_channel=cfg.per_channel,
                            reduce_range=inputs.reduce_range, activation_type=QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=exclude, calibrate_method=method,
                            use_external_data_format=inputs.external, extra_options=extra, **calibration)
    elif mode == "fp16":
        # ONNX Runtime's converter (not onnxconverter-common's): through OnnxModel it runs symbolic shape inference
        # first, which knows the fused com.microsoft operators; plain ONNX inference does not, and the converter
        # then leaves fp32→fp16 casts out after blocked SkipLayerNormalization nodes (MatMul type mismatch).
        from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST
        from onnxruntime.transformers.onnx_model import OnnxModel

        model = OnnxModel(onnx.load(str(prepared)))
        with _quiet():
            model.convert_float_to_float16(keep_io_types=True, node_block_list=exclude,
                                           op_block_list=sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32}))
        save_graph(model.model, target, inputs.external)
    elif mode == "int4":
        quantizer_cls = _matmul_nbits_quantizer()
        # Symmetric blocks along K; a K smaller than the block is padded by the quantizer, and MatMuls without a
        # constant weight (attention scores) are skipped by it.
        quantizer = quantizer_cls(onnx.load(str(prepared)), bits=4, block_size=cfg.int4_block_size,
                                  is_symmetric=True, nodes_to_exclude=exclude)
        with _quiet():
            quantizer.process()
        save_graph(quantizer.model.model, target, inputs.external)
    else:
        raise AssertionError(f"no builder for mode {mode!r}")


# ---------------------------------------------------------------------------------------------------------------------
# Accuracy-aware fallback


_QUANTIZED_OPS = {
    # quantize_dynamic's default operator set (its IntegerOpsRegistry, plus Gemm, which it turns into MatMulInteger):
    # fused Attention and EmbedLayerNormalization become QAttention / QEmbedLayerNormalization.
    "dynamic-int8": ("MatMul", "Gemm", "Attention", "EmbedLayerNormalization", "Gather", "Conv", "LSTM"),
    "static-int8": ("MatMul", "Gemm"),  # what _build asks quantize_static for
    "int4": ("MatMul",),  # MatMulNBitsQuantizer's default
}


def quantizable_groups(model_path: Path, mode: str) -> list[list[str]]:
    """The nodes ``mode`` quantizes, grouped by transformer layer (``…/layer.3/…``), in graph order.

    A node whose name carries no layer index (pooler, classifier, fused ``Attention_0``, a hand-made graph) is a group
    of its own. Dynamic int8 and int4 only quantize nodes with a constant weight; static int8 also quantizes
    activation × activation products (attention scores).
    """
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    groups: dict[str, list[str]] = {}
    for node in graph.node:
        if node.op_type not in _QUANTIZED_OPS[mode] or not node.name:
            continue
        if mode != "static-int8" and not initializers.intersection(node.input):
            continue
        m = _LAYER.search(node.name)
        groups.setdefault(node.name[:m.end()] if m else node.name, []).append(node.name)
    return list(groups.values())


def _score(p: Parity | None) -> tuple[float, float, float]:
    """Higher is better: agreement first, then accuracy, then (on ties, frequent on small validation sets) the mean
    logit error, which still moves when no label does."""
    if p is None:
        return (-1.0, -1.0, -np.inf)
    return (p.label_agreement, p.accuracy_model or 0.0, -p.mean_abs_diff)


def _try(mode: str, prepared: Path, target: Path, inputs: _Inputs, exclude: list[str], validation: ValidationSet,
         model: str, reference: str) -> tuple[Parity | None, str | None]:
    """Build and measure; a graph whose outputs are NaN/inf is a measurement (None, why), not a crash."""
    _build(mode, prepared, target, inputs, exclude)
    try:
        return _measure(target, validation, inputs.cfg, model, reference), None
    except VerificationError as e:
        return None, str(e)


def _entry(p: Parity | None, why: str | None) -> dict[str, Any]:
    if p is None:
        return {"label_agreement": None, "accuracy": None, "accuracy_drop": None, "mean_abs_diff": None,
                "error": why}
    return {"label_agreement": p.label_agreement, "accuracy": p.accuracy_model, "accuracy_drop": _accuracy_drop(p),
            "mean_abs_diff": p.mean_abs_diff}


def _fallback(mode: str, prepared: Path, target: Path, inputs: _Inputs, validation: ValidationSet, model: str,
              reference: str, broken: list[str]) -> tuple[Parity | None, list[str], dict[str, Any]]:
    """Keep the most sensitive layer groups in fp32, greedily, until the budget holds or MAX_FALLBACK_STEPS.

    Sensitivity is measured, not guessed: each group is left out of quantization alone and the model is checked on
    validation; groups are then put back to fp32 best-recovering first, re-checking after each. Once the budget holds,
    ``_refine`` narrows the kept groups down to the nodes that need fp32. Returns the last parity (None when its
    outputs were not finite), the nodes kept in fp32 and the measurements.
    """
    groups = quantizable_groups(prepared, mode)
    trial = target.with_name("trial.onnx")
    sensitivity = []
    for group in groups:
        p, why = _try(mode, prepared, trial, inputs, group, validation, model, reference)
        sensitivity.append((group, p, why))
    _remove_graph(trial)
    sensitivity.sort(key=lambda s: _score(s[1]), reverse=True)
    excluded: list[str] = []
    steps = []
    p = None
    for group, _, _ in sensitivity[:MAX_FALLBACK_STEPS]:
        excluded = excluded + group
        p, why = _try(mode, prepared, target, inputs, excluded, validation, model, reference)
        problems = budget_problems(p, inputs.cfg) if p is not None else [why or "outputs not finite"]
        steps.append({"kept_fp32": excluded, **_entry(p, why), "holds": not problems})
        if not problems:
            break
    record = {"triggered_by": broken, "groups": len(groups),
              "sensitivity": [{"nodes": g, **_entry(sp, why)} for g, sp, why in sensitivity], "steps": steps}
    if steps and steps[-1]["holds"] and len(excluded) > 1:
        p, excluded, record["refined"] = _refine(mode, prepared, target, inputs, validation, model, reference,
                                                 excluded, p)
    return p, excluded, record


def _weight_elements(model_path: Path) -> dict[str, int]:
    """For each node with a constant input, the element count of its largest one (its weight): a proxy for the work
    that quantizing it speeds up."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    sizes = {i.name: int(np.prod(i.dims)) for i in graph.initializer}
    return {n.name: max((sizes[i] for i in n.input if i in sizes), default=0) for n in graph.node}


def _refine(mode: str, prepared: Path, target: Path, inputs: _Inputs, validation: ValidationSet, model: str,
            reference: str, kept: list[str], holding: Parity) -> tuple[Parity, list[str], list[dict[str, Any]]]:
    """Return nodes of the kept layer groups to ``mode`` one at a time while the budget still holds.

    Why: the fallback keeps whole layers, but a layer's sensitivity usually sits in one of its MatMuls (on
    all-MiniLM-L6-v2, layer 0's attention output alone: the layer's two feed-forward MatMuls, four times larger,
    quantize without breaking the budget). Nodes are tried largest weight first, since those are where the integer
    kernels save the most time; each try is measured on validation like every other step.
    """
    sizes = _weight_elements(prepared)
    order = sorted(kept, key=lambda n: -sizes.get(n, 0))  # stable: graph order among equals
    steps = []
    for node in order:
        trial = [n for n in kept if n != node]
        p, why = _try(mode, prepared, target, inputs, trial, validation, model, reference)
        holds = p is not None and not budget_problems(p, inputs.cfg)
        steps.append({"quantized": node, "weight_elements": sizes.get(node, 0), **_entry(p, why), "holds": holds})
        if holds:
            kept, holding = trial, p
    # the last try may have been refused: the target must hold the graph that ``kept`` describes
    if not steps[-1]["holds"]:
        _build(mode, prepared, target, inputs, kept)
    return holding, kept, steps


# ---------------------------------------------------------------------------------------------------------------------
# One mode, verified


@dataclass(frozen=True)
class _Outcome:
    """A quantized graph on disk and how it fared."""

    mode: str
    path: Path
    parity: Parity
    problems: list[str]
    kept_fp32: list[str]
    fallback: dict[str, Any] | None


def _quantize_one(mode: str, source: Path, workdir: Path, inputs: _Inputs, validation: ValidationSet,
                  name: str) -> _Outcome:
    """Quantize ``source`` with ``mode`` into ``workdir/<mode>/model.onnx`` and check it; an integer mode that breaks
    the budget goes through the fallback when the config allows. Outputs that are NaN/inf raise VerificationError."""
    folder = workdir / mode
    folder.mkdir(parents=True, exist_ok=True)
    if (source.parent / SESSION_FILE).is_file():  # every graph built here is checked and timed as it will be run
        shutil.copy2(source.parent / SESSION_FILE, folder / SESSION_FILE)
    prepared = _prepare(mode, source, folder, inputs.external)
    target = folder / "model.onnx"
    model, reference = f"{name}-onnx-{_SUFFIX[mode]}", f"{name}-onnx"
    _build(mode, prepared, target, inputs, [])
    p = _measure(target, validation, inputs.cfg, model, reference)
    problems = budget_problems(p, inputs.cfg)
    if not problems or not inputs.cfg.fallback or mode not in INTEGER_MODES:
        return _Outcome(mode, target, p, problems, [], None)
    fp, kept, record = _fallback(mode, prepared, target, inputs, validation, model, reference, problems)
    if not record["steps"]:
        return _Outcome(mode, target, p, [*problems, "and the fallback found no node to keep in fp32"], [], record)
    if fp is None:  # the last step's graph computed NaN/inf: no model to offer
        raise VerificationError(record["steps"][-1]["error"])
    left = budget_problems(fp, inputs.cfg)
    if left:
        left = [*left, f"even with {len(kept)} nodes kept in fp32 by the fallback"]
    return _Outcome(mode, target, fp, left, kept, record)


def _auto(source: Path, workdir: Path, inputs: _Inputs, validation: ValidationSet, name: str
          ) -> tuple[_Outcome, list[dict[str, Any]], Latency]:
    """Try each mode that fits ``cfg.device``, measure the verified ones' batch-1 latency, keep the fastest that holds
    the budget. Returns it, every candidate's record, and the fp32 source's latency on the same footing."""
    cfg = inputs.cfg
    candidates: list[dict[str, Any]] = []
    kept: list[tuple[float, _Outcome]] = []
    for mode in AUTO_MODES[cfg.device]:
        entry: dict[str, Any] = {"mode": mode}
        try:
            o = _quantize_one(mode, source, workdir, inputs, validation, name)
        except Exception as e:  # noqa: BLE001 - a mode that cannot be built or runs to NaN is a rejected candidate
            first = (str(e).strip().splitlines() or [""])[0]
            candidates.append({**entry, "kept": False, "reason": f"{type(e).__name__}: {first}"[:300]})
            continue
        latency = batch1_latency(o.path, validation.padded, cfg.device)
        entry.update(latency_ms=latency.p50, latency=latency, **_entry(o.parity, None), kept_fp32=o.kept_fp32,
                     fallback=o.fallback)
        if o.problems:
            entry.update(kept=False, reason="; ".join(o.problems))
        else:
            entry["kept"] = True
            kept.append((latency.p50, o))
        candidates.append(entry)
    if not kept:
        parts = [f"{c['mode']} accuracy drop {c['accuracy_drop']:.2%}, agreement {c['label_agreement']:.2%}"
                 if c.get("accuracy_drop") is not None else f"{c['mode']} {c['reason']}" for c in candidates]
        budget = f"accuracy drop ≤ {cfg.max_accuracy_drop:.2%}, label agreement ≥ {cfg.min_agreement:.2%}"
        raise VerificationError(f"--quantize auto: no mode holds the budget ({budget}) on {len(validation.labels)} "
                                "validation inputs: " + "; ".join(parts))
    best = min(kept, key=lambda k: k[0])[1]
    for c in candidates:
        if c["kept"]:
            c["chosen"] = c["mode"] == best.mode
            if not c["chosen"]:
                c["reason"] = f"slower than {best.mode}"
    return best, candidates, batch1_latency(source, validation.padded, cfg.device)


# ---------------------------------------------------------------------------------------------------------------------
# The stage


def quantize(cfg: QuantizeConfig, onnx_dir: Path, data_dir: Path, out: Path, name: str = "model"
             ) -> QuantizeResult:
    """Quantize ``onnx_dir/model.onnx`` into ``out`` (same self-contained layout) and verify on validation data."""
    if cfg.mode == "none":
        raise UserError("--quantize none: nothing to quantize")
    started = time.time()
    source = Path(onnx_dir) / "model.onnx"
    if not source.is_file():
        raise UserError(f"{onnx_dir} holds no model.onnx: export the model first")
    if cfg.mode == "auto" and cfg.device == "cuda" and "CUDAExecutionProvider" not in available_providers():
        raise UserError("--device cuda: this onnxruntime has no CUDAExecutionProvider to measure candidates on; "
                        "install onnxruntime-gpu or use --device cpu")
    reduce_range = (not has_vnni()) if cfg.reduce_range is None else cfg.reduce_range
    validation = load_validation(Path(onnx_dir), data_dir, cfg.max_length)
    needs_calibration = cfg.mode == "static-int8" or (cfg.mode == "auto" and "static-int8" in AUTO_MODES[cfg.device])
    source_data = external_data_files(source)
    inputs = _Inputs(cfg, reduce_range,
                     _calibration_batches(Path(onnx_dir), data_dir, cfg) if needs_calibration else [],
                     external=bool(source_data))
    extra: dict[str, Any] = {}
    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory(prefix=".quantize-", dir=tmp.parent) as work:
        if cfg.mode == "auto":
            outcome, extra["candidates"], reference_latency = _auto(source, Path(work), inputs, validation, name)
            extra["reference_latency_ms"] = reference_latency.p50
        else:
            outcome = _quantize_one(cfg.mode, source, Path(work), inputs, validation, name)
            if outcome.problems:
                raise VerificationError(_mismatch(outcome.parity, outcome.problems))
        target = tmp / "model.onnx"
        move_graph(outcome.path, target)  # the work folder goes afterwards: no need to copy gigabytes of weights
        parity = outcome.parity
        for f in Path(onnx_dir).iterdir():  # config, tokenizer, labels: the folder must stand alone
            # the source's own weights (model.onnx.data) would overwrite the quantized ones
            if f.is_file() and f.suffix != ".onnx" and f.name != "export.json" and f.name not in source_data:
                shutil.copy2(f, tmp / f.name)
        # The files that ship (the graph, its data, session.json) pass the check that chose them, loaded from where a
        # reader will load them.
        verify_quantized(target, validation, cfg, parity.model, parity.reference)
        if outcome.mode == "static-int8":
            extra["calibration"] = {"split": "train", "samples": len(inputs.calibration),
                                    "method": cfg.calibration_method, "preprocessed": "quant_pre_process(auto_merge)"}
        if outcome.mode == "int4":
            extra["int4_block_size"] = cfg.int4_block_size
        write_json(tmp / "quantize.json", stage_record(
            "quantize", dataclasses.asdict(cfg), {"onnx": str(source), "onnx_sha256": sha256_file(source),
                                                 "onnx_data_sha256": {n: sha256_file(source.parent / n)
                                                                      for n in source_data},
                                                 "data": str(data_dir)}, started,
            mode=outcome.mode, intended_device="cuda" if outcome.mode == "fp16" else cfg.device,
            reduce_range=reduce_range, vnni=has_vnni(), parity=parity.to_dict(), outputs_finite=True,
            accuracy_drop=_accuracy_drop(parity), kept_fp32=outcome.kept_fp32, fallback=outcome.fallback,
            **graph_record(target), **extra))
    return QuantizeResult(out, parity, outcome.mode)
