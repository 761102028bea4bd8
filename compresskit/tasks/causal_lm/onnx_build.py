"""Export a decoder LLM to ONNX with a KV cache through ONNX Runtime GenAI's model builder.

The builder (``python -m onnxruntime_genai.models.builder``) writes one graph that both prefills and decodes: inputs
``input_ids``, ``attention_mask`` and ``past_key_values.N.key/value``; outputs ``logits`` and ``present.N.key/value``;
fused ``GroupQueryAttention`` with rotary embeddings inside, and, for int4/int8, ``MatMulNBits`` weight-only MatMuls.
Beside it come ``genai_config.json`` (IO names, layer count, KV heads, head size), the tokenizer files and the chat
template, so the folder runs under ``onnxruntime_genai`` and under ``onnx_decoder.OnnxDecoder``.

Why a subprocess and not the builder's Python API: the API needs its private ``parse_extra_options`` first, the
builder holds the whole model in memory while it writes, and a crash of it must not take the caller down.

``torch_onnx_decoder`` is the second candidate: ``torch.onnx.export`` (dynamo) of the transformers model itself with
the same IO names and cache layout, plain ONNX ops (no fused attention, float32 only), and a ``genai_config.json``
written from the model's config, so the same runners (``OnnxDecoder``, ``onnxruntime_genai``) take either folder.
It reaches families the builder does not support (GPT-2) and gives a reference graph without the builder's fusions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit.artifacts import (
    UserError,
    atomic_dir,
    read_json,
    sha256_file,
    stage_record,
    write_json,
)

PRECISIONS = ("fp32", "int8", "int4")
BLOCK_SIZES = (16, 32, 64, 128, 256)
EXECUTION_PROVIDERS = ("cpu", "cuda")
ALGORITHMS = ("default", "rtn", "k_quant")
INT8_SELECTORS = ("last_matmul", "mixed_layers")
"""MatMul groups the builder can keep at 8 bits inside an int4 graph: the LM head (``last_matmul``), and llama.cpp's
most quantization-sensitive MatMuls (``mixed_layers``: the first and last eighth of the layers and every third one's
attention value and MLP down projections)."""
INT8_GROUP_WORDS = {"last_matmul": "the LM head",
                    "mixed_layers": "llama.cpp's most sensitive MatMuls (attention and MLP-down of a third of the "
                                    "layers)"}
"""How the report and the console name those groups."""
LM_HEAD = "/lm_head/MatMul"
"""The builder's name for the output projection's MatMul (before quantization renames it ``…_Q4``/``…_Q8``)."""
BUILD_RECORD = "build.json"
GENAI_CONFIG = "genai_config.json"


@dataclass(frozen=True)
class GenAIBuild:
    """How the ONNX Runtime GenAI builder makes the decoder graph."""

    precision: str = "fp32"
    """Weights of the MatMuls: ``fp32``, or ``int8``/``int4`` weight-only (``MatMulNBits``, per block of weights)."""
    block_size: int = 32
    """Weights per quantization block (int4/int8): 16, 32, 64, 128 or 256; smaller is closer to fp32, larger smaller."""
    accuracy_level: int = 4
    """Lowest precision of the activations inside ``MatMulNBits``: 1 fp32, 2 fp16, 3 bf16, 4 int8 (fastest on CPU)."""
    exclude: tuple[str, ...] = (LM_HEAD,)
    """MatMul nodes kept in float by int4/int8 (names as ``matmul_groups`` lists them); the output projection is the
    most sensitive to quantization and is excluded by default."""
    execution_provider: str = "cpu"
    """The ONNX Runtime execution provider the graph is built for (its fused operators differ by provider)."""
    algorithm: str = "default"
    """How int4/int8 weights are rounded: ``default`` (the builder's round-to-nearest), ``rtn``, ``k_quant``
    (per-block scales chosen to minimise the error, as llama.cpp's k-quants) (``--int4-algorithm``)."""
    int8: tuple[str, ...] = ()
    """Groups of an int4 graph kept at 8 bits instead (``INT8_SELECTORS``): higher precision for the most sensitive
    MatMuls at half the bytes of keeping them in float."""

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in PRECISIONS:
            problems.append(f"--onnx-precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.block_size not in BLOCK_SIZES:
            problems.append(f"--int4-block-size must be one of {', '.join(map(str, BLOCK_SIZES))}, "
                            f"got {self.block_size}")
        if self.accuracy_level not in (1, 2, 3, 4):
            problems.append(f"--int4-accuracy-level must be 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8), "
                            f"got {self.accuracy_level}")
        if isinstance(self.exclude, str):
            problems.append("--int4-exclude takes a list of node names, not one string")
        elif any(not isinstance(n, str) or not n or "," in n or n != n.strip() for n in self.exclude):
            problems.append(f"--int4-exclude names MatMul nodes such as {LM_HEAD} (no commas or blanks), "
                            f"got {list(self.exclude)}")
        if self.algorithm not in ALGORITHMS:
            problems.append(f"--int4-algorithm must be one of {', '.join(ALGORITHMS)}, got {self.algorithm!r}")
        if any(g not in INT8_SELECTORS for g in self.int8):
            problems.append(f"int8 groups must be some of {', '.join(INT8_SELECTORS)}, got {list(self.int8)}")
        if self.execution_provider not in EXECUTION_PROVIDERS:
            problems.append(f"--onnx-provider must be one of {', '.join(EXECUTION_PROVIDERS)}, "
                            f"got {self.execution_provider!r}")
        if problems:
            raise UserError("; ".join(problems))

    @property
    def quantized(self) -> bool:
        """Whether the MatMul weights are quantized (int8/int4)."""
        return self.precision != "fp32"


def builder_command(model_dir: Path, out: Path, cfg: GenAIBuild, cache_dir: Path) -> list[str]:
    """The command line that runs the builder on ``model_dir`` into ``out`` (what ``build.json`` records)."""
    extra = [f"block_size={cfg.block_size}", f"accuracy_level={cfg.accuracy_level}"]
    if cfg.exclude:
        extra.append("nodes_to_exclude=" + ",".join(cfg.exclude))
    if cfg.algorithm != "default":
        extra.append(f"algo_config={cfg.algorithm}")
    if cfg.int8 and cfg.precision == "int4":
        extra.append("matmul_mixed_precision=" + ",".join(f"{g}:int8" for g in cfg.int8))
    return [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(model_dir), "-o", str(out),
            "-p", cfg.precision, "-e", cfg.execution_provider, "-c", str(cache_dir), "--extra_options", *extra]


def build_genai(model_dir: Path, out: Path, cfg: GenAIBuild, cache_dir: Path) -> dict[str, Any]:
    """Build the decoder graph of the causal LM in ``model_dir`` into ``out`` and return what ``build.json`` says.

    ``out`` is written whole or not at all (``atomic_dir``). A builder failure (an unsupported family such as GPT-2,
    an encoder, a broken folder) becomes a one-line ``UserError`` with the last meaningful line of its output. The
    record holds the options, the command, the time, the size of the weights and the versions.
    """
    started = time.time()
    model_dir, out, cache_dir = Path(model_dir).resolve(), Path(out), Path(cache_dir)
    if not (model_dir / "config.json").is_file():
        raise UserError(f"{model_dir} is not a model folder (no config.json): give a saved causal LM such as the "
                        "output of the distill stage")
    with atomic_dir(out) as tmp:
        command = builder_command(model_dir, tmp.resolve(), cfg, cache_dir.resolve())
        # Progress bars are noise in a log, and offline: a local folder needs nothing from the hub.
        env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
        proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
        if proc.returncode != 0 or not (tmp / GENAI_CONFIG).is_file():
            why = last_meaningful_line(proc.stderr) or last_meaningful_line(proc.stdout) or \
                f"exit code {proc.returncode}"
            raise UserError(f"the ONNX Runtime GenAI builder could not build {model_dir} ({_kind(model_dir)}, "
                            f"{cfg.precision}): {why}")
        _check_built(tmp, cfg)
        groups = matmul_groups(tmp / "model.onnx")
        record = stage_record(
            "build_genai", {**dataclasses.asdict(cfg), "exclude": list(cfg.exclude)},
            {"model_dir": str(model_dir), "config_sha256": sha256_file(model_dir / "config.json"),
             "weight_files": {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}},
            started,
            path="genai-builder",
            command=[str(c) for c in command],
            onnxruntime_genai=_version("onnxruntime-genai"),
            weights_bytes=sum(p.stat().st_size for p in tmp.glob("*.onnx.data")),
            onnx_bytes=sum(p.stat().st_size for p in tmp.iterdir() if p.name.endswith((".onnx", ".onnx.data"))),
            matmuls={"quantized": sorted(n for g in groups.values() for n, q in g.items() if q),
                     "float": sorted(n for g in groups.values() for n, q in g.items() if not q),
                     "bits": matmul_bits(tmp / "model.onnx")},
        )
        record["command"] = [c.replace(str(tmp.resolve()), str(out.resolve())) for c in record["command"]]
        write_json(tmp / BUILD_RECORD, record)
    return record


def _kind(model_dir: Path) -> str:
    """What the folder's config.json says the model is (its builder message names only the path)."""
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "unreadable config.json"
    return ", ".join(config.get("architectures") or []) or str(config.get("model_type", "unknown type"))


def _check_built(folder: Path, cfg: GenAIBuild) -> None:
    """Refuse, before anything is renamed into place, a graph that would fail at run time or ignore an option."""
    genai = read_json(folder / GENAI_CONFIG)
    decoder = genai["model"]["decoder"]
    head = decoder.get("head_size")
    context = genai["model"].get("context_length")
    # the attention kernel needs a KV cache at least as long as its window, and GenAI sizes it by max_length, which
    # may not pass the context: such a graph builds, verifies (plain ONNX Runtime) and then fails in every generation
    window = _attention_window(folder / "model.onnx") if isinstance(context, int) else None
    if window is not None and window >= context:
        raise UserError(f"the builder's graph has a sliding window of {window} tokens, not less than its context of "
                        f"{context}: ONNX Runtime GenAI's attention cannot allocate a KV cache that long")
    # ORT's CPU GroupQueryAttention kernel rejects these at the first run ("head_size shall be a multiple of 16")
    if cfg.execution_provider == "cpu" and isinstance(head, int) and head % 16:
        raise UserError(f"the model's attention head size is {head}, and ONNX Runtime's CPU attention kernel needs "
                        "a multiple of 16: give the model fewer, wider heads (hidden size / heads)")
    if cfg.quantized and cfg.exclude:
        groups = matmul_groups(folder / "model.onnx")
        names = {n for g in groups.values() for n in g}
        unknown = [n for n in cfg.exclude if n not in names]
        if unknown:
            example = next(iter(groups.get("layer 0", {})), LM_HEAD)
            raise UserError(f"--int4-exclude names {', '.join(unknown)}, not a MatMul of this graph; names look like "
                            f"{LM_HEAD} or {example} (the build.json of any build of this model lists them)")


def _attention_window(model_path: Path) -> int | None:
    """The largest ``local_window_size`` of the graph's fused attention nodes (None when no node has a window): the
    builder writes it for the sliding-window layers of some families (Gemma 2) and not of others."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    sizes = [a.i for n in model.graph.node if n.op_type == "GroupQueryAttention" for a in n.attribute
             if a.name == "local_window_size" and a.i > 0]
    return max(sizes) if sizes else None


_TRACEBACK_LINE = re.compile(r"^(Traceback \(|File \"|[\^~]+$)")  # matched after stripping
_PROGRESS = re.compile(r"\d+%\||it/s\]|s/it\]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?")


def last_meaningful_line(text: str) -> str:
    """The line of a tool's output that says why it failed: the last ``SomeError: …`` line when there is one, else
    the last line that is not blank, a progress bar or traceback scaffolding."""
    lines = [_ANSI.sub("", ln).strip() for ln in re.split(r"[\r\n]+", text or "")]
    lines = [ln for ln in lines if ln and not _PROGRESS.search(ln) and not _TRACEBACK_LINE.match(ln)]
    for ln in reversed(lines):
        if _EXCEPTION.match(ln):
            return ln
    return lines[-1] if lines else ""


_LAYER = re.compile(r"^/model/layers\.(\d+)/")
_QUANT_SUFFIX = re.compile(r"_Q\d+$")
_SCOPE_INDEX = re.compile(r"(?:^|\.)(\d+)(?:\.|$)")
"""The first numeric part of a module path (``model.model.layers.3.mlp.down_proj``, GPT-2's ``transformer.h.3…``):
the index in the decoder's list of layers, whatever the family calls that list."""
_SCOPES = "pkg.torch.onnx.name_scopes"
"""Node metadata in which torch.onnx (dynamo) writes the module path a node came from, outermost first."""
WEIGHTED_OPS = ("MatMul", "MatMulNBits", "Gemm")


@dataclass(frozen=True)
class MatMulNode:
    """A MatMul of a decoder graph that multiplies by a weight (not attention's activation products)."""

    name: str
    """The node's name before quantization (``…_Q4``/``…_Q8`` stripped): what ``nodes_to_exclude`` takes."""
    group: str
    """``"lm_head"``, ``"layer N"`` or ``"other"``."""
    quantized: bool
    """Whether it is a ``MatMulNBits`` already."""
    module: str
    """The module it computes: the builder's path (``/model/layers.0/mlp/down_proj``) or torch's name scope
    (``model.model.layers.0.mlp.down_proj``); empty when the graph does not say."""
    weight: str
    """Where its weight comes from: ``initializer``, ``transposed`` (a ``Transpose`` of one: a tied embedding table
    used as the LM head), or ``quantized``."""


def _scope(node: Any) -> str:
    """The innermost module path torch.onnx recorded for ``node`` ("" when none)."""
    import ast

    for prop in node.metadata_props:
        if prop.key == _SCOPES:
            try:
                scopes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return ""
            # the last entry names the op itself (``linear_3``), the one before it the module
            return str(scopes[-2]) if len(scopes) >= 2 else ""
    return ""


def weighted_matmuls(model: Any) -> list[MatMulNode]:
    """The weight MatMuls of a loaded decoder graph (``onnx.ModelProto``) in graph order, each with its group.

    Builder graphs are grouped by their node names (``/lm_head/MatMul``, ``/model/layers.N/…``). A torch-exported
    graph names nodes ``node_linear_7``, so there the module path torch.onnx keeps in each node's metadata gives the
    layer, and the LM head is the weight MatMul nearest the ``logits`` output (through a soft-cap's elementwise ops),
    which also finds it when a tied embedding table reaches it through a ``Transpose``."""
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}

    def weight(node: Any) -> str | None:
        if node.op_type == "MatMulNBits":
            return "quantized"
        b = node.input[1] if len(node.input) > 1 else ""
        if node.op_type == "Gemm":  # GPT-2's Conv1D exports as Gemm; only plain ``A @ B + C`` is a MatMul
            attrs = {a.name: a for a in node.attribute}
            plain = (attrs["transA"].i if "transA" in attrs else 0) == 0 and all(
                (attrs[k].f if k in attrs else 1.0) == 1.0 for k in ("alpha", "beta"))
            return "initializer" if plain and b in inits else None
        if b in inits:
            return "initializer"
        src = producer.get(b)
        if src is not None and src.op_type == "Transpose" and src.input[0] in inits:
            perm = next((list(a.ints) for a in src.attribute if a.name == "perm"), [1, 0])
            return "transposed" if perm == [1, 0] else None
        return None

    found = [(n, w) for n in graph.node if n.op_type in WEIGHTED_OPS for w in [weight(n)] if w is not None]
    # the LM head: breadth-first from the logits output, the first weight MatMul met
    head, frontier, seen = None, [o.name for o in graph.output if o.name == "logits"], set()
    weighted = {id(n) for n, _ in found}
    while frontier and head is None:
        nxt = []
        for tensor in frontier:
            node = producer.get(tensor)
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            if id(node) in weighted:
                head = node
                break
            nxt += [i for i in node.input if i and i not in inits]
        frontier = nxt
    out = []
    for node, w in found:
        quantized = node.op_type == "MatMulNBits"
        name = _QUANT_SUFFIX.sub("", node.name) if quantized else node.name
        scope = _scope(node)
        builder_layer = _LAYER.match(name)
        scope_layer = _SCOPE_INDEX.search(scope)
        if name.startswith("/lm_head/") or node is head:
            group = "lm_head"
        elif builder_layer or scope_layer:
            group = f"layer {(builder_layer or scope_layer).group(1)}"
        else:
            group = "other"
        module = name.rsplit("/", 1)[0] if name.startswith("/") else scope
        out.append(MatMulNode(name, group, quantized, module, w))
    return out


def matmul_groups(model_path: Path) -> dict[str, dict[str, bool]]:
    """The weight MatMul nodes of a built graph, grouped ``"lm_head"``, ``"layer 0"``, ``"layer 1"``, …, ``"other"``.

    Each maps a node's name as ``GenAIBuild.exclude`` takes it to whether it is quantized. The builder renames a
    quantized MatMul ``…/MatMul_Q4`` (``_Q8``) and makes it ``MatMulNBits``; the name given here is the one before,
    e.g. ``/lm_head/MatMul`` or ``/model/layers.0/attn/qkv_proj/MatMul``, so a caller can list an fp32 or an int4
    build and exclude the most sensitive nodes from the next one. A ``torch_onnx_decoder`` graph works too (names
    like ``node_linear_7``, grouped by ``weighted_matmuls``). Layers come in order.
    """
    import onnx

    path = Path(model_path)
    model = onnx.load(str(path / "model.onnx" if path.is_dir() else path), load_external_data=False)
    groups: dict[str, dict[str, bool]] = {}
    for m in weighted_matmuls(model):
        groups.setdefault(m.group, {})[m.name] = m.quantized
    # lm_head first, then layers by number, then anything else: the order a reader expects, not the graph's
    order = sorted(groups, key=lambda g: (g != "lm_head", g == "other", int(g.split()[1]) if g[:6] == "layer " else 0))
    return {g: groups[g] for g in order}


def mixed_layer_indices(layers: int) -> list[int]:
    """The layers whose attention-value and MLP-down MatMuls llama.cpp (and the builder's ``mixed_layers``) keep at
    higher precision: the first and last eighth, and every third one between."""
    return [i for i in range(layers) if i < layers / 8 or i >= 7 * layers / 8 or (i - round(layers / 8)) % 3 == 2]


_VALUE_PROJECTIONS = ("v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "qkv")
"""Module names of attention's value projection (alone or fused with the query and key ones) in transformers'
decoders: the one part of ``mixed_layers`` a graph's structure does not tell apart from the query projection."""


def int8_selection(nodes: list[MatMulNode], selectors: tuple[str, ...]) -> list[str]:
    """The MatMul names ``INT8_SELECTORS`` pick in a graph of ``nodes`` (``weighted_matmuls``), as the builder picks
    them: ``last_matmul`` the LM head; ``mixed_layers`` in ``mixed_layer_indices`` the attention value projection
    and the MLP's output projection (a layer's last weight MatMul)."""
    chosen: list[str] = []
    if "last_matmul" in selectors:
        chosen += [m.name for m in nodes if m.group == "lm_head"]
    if "mixed_layers" in selectors:
        by_layer: dict[int, list[MatMulNode]] = {}
        for m in nodes:
            if m.group.startswith("layer "):
                by_layer.setdefault(int(m.group.split()[1]), []).append(m)
        for i in mixed_layer_indices(max(by_layer, default=-1) + 1):
            layer = by_layer.get(i, [])
            chosen += [m.name for m in layer if re.split(r"[./]", m.module)[-1] in _VALUE_PROJECTIONS]
            if layer and layer[-1].name not in chosen:
                chosen.append(layer[-1].name)
    return chosen


def matmul_bits(model_path: Path) -> dict[int, int]:
    """How many quantized MatMuls of a built graph hold their weights at each bit width (``{4: 60, 8: 14}``)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    counts: dict[int, int] = {}
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
            counts[bits] = counts.get(bits, 0) + 1
    return dict(sorted(counts.items()))


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None



def _past_names(layers: int) -> tuple[list[str], list[str]]:
    past = [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]
    return past, [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


_GENAI_DECODER_TYPES = ("llama", "mistral", "qwen2")
"""Model types that onnxruntime_genai runs as a plain decoder with the builder's IO (others run as ``llama``)."""


def genai_config_for(config: Any, generation: Any = None) -> dict[str, Any]:
    """A ``genai_config.json`` for a ``torch_onnx_decoder`` graph of a model with the transformers ``config``: the
    builder's IO names and the model's geometry; the present tensors grow by concatenation, so no shared buffer."""
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_size = getattr(config, "head_dim", None) or config.hidden_size // heads
    context = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
    eos = getattr(generation, "eos_token_id", None) if generation is not None else None
    eos = eos if eos is not None else config.eos_token_id
    pad = config.pad_token_id if getattr(config, "pad_token_id", None) is not None else \
        (eos[0] if isinstance(eos, list) else eos)
    model = {
        "bos_token_id": getattr(config, "bos_token_id", None),
        "context_length": context,
        "decoder": {
            "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
            "filename": "model.onnx",
            "head_size": head_size,
            "hidden_size": config.hidden_size,
            "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                       "past_key_names": "past_key_values.%d.key", "past_value_names": "past_key_values.%d.value"},
            "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                        "present_value_names": "present.%d.value"},
            "num_attention_heads": heads,
            "num_hidden_layers": config.num_hidden_layers,
            "num_key_value_heads": kv_heads,
        },
        "eos_token_id": eos,
        "pad_token_id": pad,
        # the type picks onnxruntime_genai's runner; its gpt2 runner expects another IO than this graph's
        "type": config.model_type if config.model_type in _GENAI_DECODER_TYPES else "llama",
        "vocab_size": config.vocab_size,
    }
    return {
        "model": {k: v for k, v in model.items() if v is not None},  # onnxruntime_genai rejects nulls
        "search": {"do_sample": False, "max_length": context, "min_length": 0, "num_beams": 1,
                   "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
                   "temperature": 1.0, "top_k": 50, "top_p": 1.0, "early_stopping": True, "length_penalty": 1.0,
                   "diversity_penalty": 0.0, "no_repeat_ngram_size": 0},
    }


def cache_geometry(model: Any) -> dict[str, int]:
    """Layers, KV heads and head size of a causal LM's KV cache, read from the cache one forward pass makes rather
    than from config fields: a config may carry a field its family ignores (a ``num_key_value_heads`` on an OPT or
    GPT-NeoX config, whose attention has none), and the graph's cache inputs must have the shape the model makes."""
    import torch

    ids = torch.zeros(1, 2, dtype=torch.long, device=model.get_input_embeddings().weight.device)
    with torch.no_grad():
        cache = model(input_ids=ids, use_cache=True).past_key_values
    layers = getattr(cache, "layers", None)
    key = layers[0].keys if layers else (cache[0][0] if cache is not None else None)
    if key is None or key.dim() != 4:
        return {}
    return {"num_hidden_layers": len(layers) if layers else len(cache), "num_key_value_heads": int(key.shape[1]),
            "head_size": int(key.shape[-1])}


_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                    "generation_config.json")


def torch_onnx_decoder(model_dir: Path, out: Path, opset: int | None = None) -> dict[str, Any]:
    """Export the causal LM in ``model_dir`` with its KV cache by ``torch.onnx.export`` (dynamo) into ``out``.

    The graph has the builder's IO (``input_ids``, ``attention_mask``, ``past_key_values.N.key/value`` (batch,
    kv_heads, past, head_dim) in; ``logits``, ``present.N.key/value`` out, past + new positions) with positions taken
    from the cache length, so an all-ones attention mask, as ``OnnxDecoder`` feeds, is right. Float32 weights; no
    sliding-window ring buffer (a sliding-window layer keeps its whole past, and the mask limits what it sees).
    Written whole or not at all, with ``genai_config.json``, the tokenizer files and ``build.json``.
    """
    import inspect

    import torch

    from compresskit.tasks.causal_lm.teacher import load_causal_lm

    started = time.time()
    model_dir = Path(model_dir).resolve()
    model = load_causal_lm(str(model_dir))
    config = model.config
    genai = genai_config_for(config, getattr(model, "generation_config", None))
    decoder = genai["model"]["decoder"]
    decoder.update(cache_geometry(model))
    layers, kv_heads, head = decoder["num_hidden_layers"], decoder["num_key_value_heads"], decoder["head_size"]
    past_names, present_names = _past_names(layers)
    # transformers 5.x renamed past_key_values to cache, in the forward's arguments and in its output
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    wrapper = _flat_cache_decoder(model, layers, cache_arg).eval()

    # example sizes above 1 everywhere: the exporter specialises a dimension of size 0 or 1 to a constant
    batch, seq, past = 2, 3, 4
    args = (torch.randint(0, config.vocab_size, (batch, seq)), torch.ones(batch, past + seq, dtype=torch.long),
            *[torch.randn(batch, kv_heads, past, head) for _ in past_names])
    b, s, p, t = (torch.export.Dim(n) for n in ("batch", "sequence_length", "past_sequence_length",
                                                 "total_sequence_length"))
    shapes = ({0: b, 1: s}, {0: b, 1: t}, tuple({0: b, 2: p} for _ in past_names))
    with atomic_dir(out) as tmp:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")  # tracer warnings on transformers' mask code; verify_decoder judges
            try:
                program = torch.onnx.export(wrapper, args, input_names=["input_ids", "attention_mask", *past_names],
                                            output_names=["logits", *present_names], dynamic_shapes=shapes,
                                            opset_version=opset, dynamo=True, optimize=True)
            except Exception as e:  # noqa: BLE001 - the exporter raises many types; its message names the step
                raise UserError(f"torch.onnx.export could not export {model_dir} with its KV cache: "
                                f"{last_meaningful_line(str(e)) or type(e).__name__}") from None
        program.save(str(tmp / "model.onnx"), external_data=True)
        (tmp / GENAI_CONFIG).write_text(json.dumps(genai, indent=4) + "\n", encoding="utf-8")
        for name in _TOKENIZER_FILES:
            if (model_dir / name).is_file():
                shutil.copy2(model_dir / name, tmp / name)
        record = stage_record(
            "torch_onnx_decoder", {"opset": opset, "exporter": "dynamo", "model_type": config.model_type},
            {"model_dir": str(model_dir), "config_sha256": sha256_file(model_dir / "config.json"),
             "weight_files": {p.name: p.stat().st_size for p in sorted(model_dir.glob("*.safetensors"))}},
            started,
            path="torch.onnx",
            weights_bytes=sum(p.stat().st_size for p in tmp.glob("*.onnx.data")),
            onnx_bytes=sum(p.stat().st_size for p in tmp.iterdir() if p.name.endswith((".onnx", ".onnx.data"))),
        )
        write_json(tmp / BUILD_RECORD, record)
    return record


def _flat_cache_decoder(model: Any, layers: int, cache_arg: str) -> Any:
    """``model`` as a module over flat tensors: (input_ids, attention_mask, past k0, v0, k1, …) → (logits, present
    k0, v0, …), the cache rebuilt inside so the exporter sees only tensors. Made here: torch is imported lazily."""
    import torch
    from transformers import DynamicCache

    class FlatCacheDecoder(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, *past: Any) -> tuple[Any, ...]:
            cache = DynamicCache()
            for i in range(layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=True, **{cache_arg: cache})
            present = getattr(out, cache_arg)
            return (out.logits, *[t for layer in present.layers for t in (layer.keys, layer.values)])

    return FlatCacheDecoder()
