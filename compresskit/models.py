"""Loading models safely, whatever the task family: a source checked before anything is written (a folder with
safetensors weights and whole files, or a hub id), configs read with the remote-code policy, tokenizers, and the
shape of a model (depth, width, parameters) read from the model itself."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, first_line, read_json, sha256_file, sha256_json, truncation_problem

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
    """Turn ``--teacher`` into a local folder (checked) or a hub id. A family's embedded teacher is resolved by the
    family first (``tasks.<family>``), which hands every other name to this function."""
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


def weight_bytes(model: Any) -> int:
    """Bytes of a torch module's parameters and buffers (shared tensors once): what an exported graph stores."""
    return sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))


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


LAYER_COUNT_ATTRS = ("num_hidden_layers", "n_layers", "n_layer", "num_layers")
"""Config attributes that hold a model's depth, by family (BERT and Llama, DistilBERT, GPT-2, T5)."""


def layer_count(config: Any) -> int:
    """Number of transformer blocks a config declares."""
    for attr in LAYER_COUNT_ATTRS:
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    raise UserError(f"cannot tell how many layers a {type(config).__name__} has")


def tokenizers_agree(a: Any, b: Any) -> bool:
    """Whether two tokenizers map text to the same ids (vocabulary and special tokens), as distillation needs."""
    if a.get_vocab() != b.get_vocab():
        return False
    return json.dumps(a.special_tokens_map, sort_keys=True) == json.dumps(b.special_tokens_map, sort_keys=True)


def source_fingerprint(source: str) -> str:
    """Identity of a model source: a hash of a local folder's config and weights, or the hub id itself."""
    path = Path(source)
    if not path.is_dir():
        return source
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix in (".safetensors", ".json", ".bin")))
    return sha256_json({p.name: sha256_file(p) for p in files})


_SHAPE_KEYS = {"layers": "num_hidden_layers", "hidden": "hidden_size", "heads": "num_attention_heads",
               "intermediate": "intermediate_size"}


def parse_shape(spec: str) -> dict[str, int]:
    """``layers=4,hidden=256`` → config overrides, checked for sense (hidden divisible by heads)."""
    out: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        key, _, value = part.partition("=")
        if key not in _SHAPE_KEYS or not value.isdigit() or int(value) < 1:
            raise UserError(f"--student-shape: {part!r} is not one of {', '.join(k + '=N' for k in _SHAPE_KEYS)}")
        out[_SHAPE_KEYS[key]] = int(value)
    if not out:
        raise UserError("--student-shape names no dimension")
    return out


def model_shape(config: Any) -> dict[str, Any]:
    """Depth and width of a model from its config, whatever the family calls them (``num_hidden_layers`` in BERT
    and Llama, ``n_layer`` in GPT-2): read through optimum's normalized configs, which map each family's names."""
    from optimum.utils import NormalizedConfigManager

    model_type = getattr(config, "model_type", None)
    try:
        normalized = NormalizedConfigManager.get_normalized_config_class(model_type)(config)
    except (KeyError, AttributeError):  # a family optimum does not know: the common names, where present
        normalized = None

    def read(attr: str, *names: str) -> Any:
        if normalized is not None:
            try:
                return getattr(normalized, attr)
            except AttributeError:
                pass
        return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), None)

    return {"model_type": model_type, "layers": read("num_layers", "num_hidden_layers", "n_layer"),
            "hidden_size": read("hidden_size", "hidden_size", "n_embd"),
            "heads": read("num_attention_heads", "num_attention_heads", "n_head"),
            "intermediate_size": getattr(config, "intermediate_size", None)}


def is_causal_lm_config(config: Any) -> bool:
    """Whether a config describes a decoder language model (Llama, Qwen2, GPT-2, …), not an encoder.

    By its ``architectures`` when it names them (``…ForCausalLM``, ``…LMHeadModel``); without them, a model type
    that transformers builds as a causal LM and not as a masked LM (BERT-likes are both, and are encoders).
    """
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    archs = getattr(config, "architectures", None) or []
    if archs:
        return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs)
    auto_map = getattr(config, "auto_map", None) or {}
    if "AutoModelForCausalLM" in auto_map:
        return True
    model_type = getattr(config, "model_type", "")
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


_PER_LAYER_WORDS = ("layer", "head", "window", "block", "kv", "ffn", "intermediate")
"""Words in the name of a config field that can hold one entry per block (``layer_types``, OpenELM's
``num_query_heads``, DeciLM's ``block_configs``, per-layer ``sliding_window``s): a list as long as the model is deep
is only taken for per-layer when its name says so, so a 2-layer model's unrelated pair of ids is left alone."""


def per_layer_fields(config: Any) -> list[str]:
    """The config fields that hold one entry per block (``layer_types``: full or sliding attention in ModernBERT,
    Gemma, Qwen3…; per-layer head counts or windows), found in the config itself: lists as long as the model is deep
    whose name speaks of layers, heads, windows or blocks."""
    n = layer_count(config)
    return [k for k, v in vars(config).items()
            if isinstance(v, (list, tuple)) and len(v) == n and k != "architectures"
            and any(w in k.lower() for w in _PER_LAYER_WORDS)]


def student_config(config: Any, layers: list[int]) -> Any:
    """A copy of a teacher ``config`` for a student that keeps ``layers``: the layer count set, and every per-layer
    field (``per_layer_fields``) re-indexed so student block j keeps what teacher block ``layers[j]`` had. Encoders
    and decoders alike: a 1-layer student of a 3-layer ModernBERT must not keep 3 ``layer_types``."""
    import copy

    fields = per_layer_fields(config)
    config = copy.deepcopy(config)
    for attr in LAYER_COUNT_ATTRS:
        if isinstance(getattr(config, attr, None), int):
            setattr(config, attr, len(layers))
    for attr in fields:
        value = getattr(config, attr)
        setattr(config, attr, [value[i] for i in layers])
    return config


def find_blocks(model: Any) -> tuple[str, Any] | None:
    """The qualified name and the ``ModuleList`` of a model's transformer blocks, found in the model itself, for
    encoders and decoders of any family transformers ships: the module lists as deep as the config says, holding one
    kind of module, preferring the block class the model names in ``_no_split_modules`` (what accelerate keeps on one
    device: ``LlamaDecoderLayer``, ``GPTNeoXLayer``, ``OPTDecoderLayer``…; some encoders name none). None when no
    list is as deep as the model (ALBERT shares one block across its depth: there is nothing per block to prune).
    Two equally good lists are refused: guessing would prune the wrong ones."""
    import torch

    n = layer_count(model.config)
    candidates = [(name, m) for name, m in model.named_modules()
                  if isinstance(m, torch.nn.ModuleList) and len(m) == n and len({type(c) for c in m}) == 1]
    named = set(getattr(model, "_no_split_modules", None) or ())
    preferred = [c for c in candidates if type(c[1][0]).__name__ in named] or candidates
    if not preferred:
        return None
    if len(preferred) > 1:
        raise UserError(f"{type(model).__name__} has {len(preferred)} lists of {n} blocks "
                        f"({', '.join(name for name, _ in preferred)}); cannot tell which are its layers")
    return preferred[0]


def prune_layers(teacher: Any, layers: list[int]) -> Any:
    """A copy of ``teacher`` keeping only its blocks ``layers`` (ascending), in eval mode: student block j starts as
    teacher block ``layers[j]``; embeddings, norms and heads are copied, tied weights stay tied (the student is built
    from its config, which ties them, then loaded). Encoders (DistilBERT-style initialisation) and decoders alike.

    The config is fixed before the model is built (``student_config``): attention modules read their kind (full or
    sliding window) from ``layer_types`` when they are constructed. A model whose blocks share their weights (no list
    of blocks, ``find_blocks``) keeps all of them and runs them fewer times; anything else that does not load back
    whole is refused in one line rather than left half initialised."""
    found = find_blocks(teacher)
    student = type(teacher)(student_config(teacher.config, layers))
    new_index = {old: new for new, old in enumerate(layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        if found is not None and key.startswith(found[0] + "."):
            old, rest = key[len(found[0]) + 1:].split(".", 1)
            if int(old) not in new_index:
                continue
            key = f"{found[0]}.{new_index[int(old)]}.{rest}"
        state[key] = value
    missing, unexpected = student.load_state_dict(state, strict=False)  # copies into the student's own tensors
    if missing or unexpected:
        raise UserError(f"cannot build a student of {type(teacher).__name__} from its layers {layers}: missing "
                        f"{missing[:3]}, unexpected {unexpected[:3]} (give --student to bring your own student)")
    return student.eval()


def skeleton(config: Any, auto_class: Any) -> Any | None:
    """The model ``config`` describes, built by ``auto_class`` (``AutoModelForCausalLM``…) on the meta device:
    its modules and shapes without memory or weights, so a preflight can find the blocks and the head of a model of
    any size before anything is written. None when transformers cannot build it from the config alone (custom code):
    the stages then check the loaded model."""
    import torch

    try:
        with torch.device("meta"):
            return auto_class.from_config(config)
    except Exception:  # noqa: BLE001 - only a preflight; the loaded model is checked again where it is used
        return None


def check_prunable(config: Any, auto_class: Any, layers: list[int]) -> None:
    """Refuse, before anything is written, a teacher whose kept ``layers`` cannot become a student: the blocks not
    found, a per-layer field the student cannot be built with, weights that do not load back. ``prune_layers`` on
    the meta device: the same code the distill stage runs, with nothing allocated."""
    import torch

    model = skeleton(config, auto_class)
    if model is None:
        return
    with torch.device("meta"):
        try:
            prune_layers(model, layers)
        except UserError:
            raise
        except Exception as e:  # noqa: BLE001 - transformers refuses a config many ways; one line says which
            raise UserError(f"cannot build a {len(layers)}-layer student of {type(model).__name__}: {first_line(e)}"
                            ) from None
