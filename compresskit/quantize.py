"""Stage 4 (optional): quantize an exported ONNX model with ONNX Runtime and verify it against its fp32 self."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from compresskit.artifacts import UserError, atomic_dir, read_json, sha256_file, stage_record, write_json
from compresskit.data import read_split_for_head
from compresskit.export import tokenize_numpy
from compresskit.machine import has_vnni
from compresskit.onnx_runtime import batched_logits, make_session
from compresskit.verify import Parity, compare, require

MODES = ("none", "dynamic-int8")


@contextlib.contextmanager
def _quiet_root_logger():
    """The quantizer logs advice ("consider pre-processing") on the root logger at WARNING; users cannot act on it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@dataclass(frozen=True)
class QuantizeConfig:
    """Which quantization and how strictly to verify it."""

    mode: str = "dynamic-int8"
    """``dynamic-int8`` (int8 weights, activations quantized at run time) or ``none`` (``--quantize``)."""
    per_channel: bool = False
    """One scale per output channel of each weight instead of per tensor (``--per-channel``)."""
    reduce_range: bool | None = None
    """7-bit weights, avoiding u8×s8 overflow on CPUs without VNNI; None decides from the CPU (``--reduce-range``)."""
    min_agreement: float = 0.99
    """Smallest allowed share of labels equal to the fp32 model's (``--int8-min-agreement``)."""
    max_length: int = 128
    """Tokens per validation input in the check (``--max-length``)."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"--quantize must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 0 < self.min_agreement <= 1:
            raise UserError(f"--int8-min-agreement must be in (0, 1], got {self.min_agreement}")


@dataclass(frozen=True)
class QuantizeResult:
    """The quantized folder and its check against the fp32 model."""

    onnx_dir: Path
    parity: Parity


def quantize(cfg: QuantizeConfig, onnx_dir: Path, data_dir: Path, out: Path, name: str = "model") -> QuantizeResult:
    """Quantize ``onnx_dir/model.onnx`` into ``out`` (same self-contained layout) and verify on validation data."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoTokenizer

    if cfg.mode == "none":
        raise UserError("--quantize none: nothing to quantize")
    started = time.time()
    source = Path(onnx_dir) / "model.onnx"
    if not source.is_file():
        raise UserError(f"{onnx_dir} holds no model.onnx: export the model first")
    reduce_range = (not has_vnni()) if cfg.reduce_range is None else cfg.reduce_range
    tokenizer = AutoTokenizer.from_pretrained(str(onnx_dir))
    texts, ids = read_split_for_head(data_dir, "validation", read_json(Path(onnx_dir) / "labels.json"))
    label_ids = np.array(ids)
    arrays = tokenize_numpy(tokenizer, texts, cfg.max_length)
    reference = batched_logits(make_session(source), arrays)
    with atomic_dir(out) as tmp:
        target = tmp / "model.onnx"
        # Fused contrib operators (BiasGelu, SkipLayerNormalization) defeat ONNX shape inference, and without a
        # default type the quantizer aborts on their outputs ("Unable to find data type"); they are all fp32.
        with _quiet_root_logger():
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, per_channel=cfg.per_channel,
                             reduce_range=reduce_range, extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        got = batched_logits(make_session(target), arrays)
        parity = require(compare(f"{name}-onnx-int8", f"{name}-onnx", got, reference, None, cfg.min_agreement,
                                 label_ids))
        for f in Path(onnx_dir).iterdir():  # config, tokenizer, labels: the folder must stand alone
            if f.is_file() and f.suffix != ".onnx" and f.name != "export.json":
                shutil.copy2(f, tmp / f.name)
        write_json(tmp / "quantize.json", stage_record(
            "quantize", dataclasses.asdict(cfg), {"onnx": str(source), "onnx_sha256": sha256_file(source),
                                                 "data": str(data_dir)}, started,
            reduce_range=reduce_range, vnni=has_vnni(), parity=parity.to_dict(), sha256=sha256_file(target),
            size_bytes=target.stat().st_size))
    return QuantizeResult(out, parity)
