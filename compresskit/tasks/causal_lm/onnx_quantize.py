"""Weight-only int8/int4 of a verified decoder graph with ONNX Runtime's ``MatMulNBitsQuantizer``.

The GenAI builder quantizes only graphs it builds itself, from the model's weights, and only for the families it
knows. This quantizes the graph the export stage already verified (a builder graph or a ``torch_onnx_decoder`` one)
in place of that: every weight MatMul becomes ``MatMulNBits`` at 4 or 8 bits, with the same knobs as a builder
build (``onnx_build.GenAIBuild``: block size, accuracy level, rounding, 8-bit groups inside an int4 graph, nodes kept
in float), so the quantize stage's ladder reads the same whichever path made the graph. The folder keeps the fp32
folder's ``genai_config.json`` and tokenizer files, so ``OnnxDecoder`` and ``onnxruntime_genai`` run it as they run
the fp32 one.

Two rewrites come first, both so that more of the weights can be quantized, neither changing what is computed:
GPT-2's ``Gemm`` (its Conv1D) becomes ``MatMul`` + ``Add`` (the quantizer only takes MatMul), and a tied LM head
(``MatMul`` by ``Transpose(embedding table)``) gets its own transposed copy of the table, as the builder unties it,
since the quantizer needs a constant weight. A tied head kept in full precision is left tied: a float copy would
cost a whole table more and buy nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import shutil
import time
import warnings
from collections.abc import Iterator
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
from compresskit.tasks.causal_lm.onnx_build import (
    BUILD_RECORD,
    GENAI_CONFIG,
    GenAIBuild,
    int8_selection,
    matmul_bits,
    matmul_groups,
    weighted_matmuls,
)

PATH = "matmulnbits"
"""How the records name this path (the builder's is ``genai-builder``)."""
_GRAPH_FILES = ("model.onnx", "model.onnx.data")
_RECORDS = (BUILD_RECORD, "export.json", "quantize.json")
"""The source folder's own records: not copied, the new folder writes its own ``build.json``."""


def quantize_graph(source: Path, out: Path, cfg: GenAIBuild, note: dict[str, Any] | None = None) -> dict[str, Any]:
    """Quantize the decoder graph in ``source`` (``model.onnx`` with its genai_config) as ``cfg`` says into ``out``
    (written whole or not at all) and return what its ``build.json`` says.

    ``cfg.exclude`` names MatMuls kept in float (names as ``matmul_groups`` lists them for ``source``);
    ``cfg.int8`` picks the groups of an int4 graph kept at 8 bits (``onnx_build.int8_selection``); ``note`` adds
    fields to the record (why this path was taken)."""
    import onnx

    started = time.time()
    source, out = Path(source), Path(out)
    if not cfg.quantized:
        raise UserError(f"quantize_graph makes int8 or int4 graphs, not {cfg.precision}")
    if not (source / GENAI_CONFIG).is_file() or not (source / "model.onnx").is_file():
        raise UserError(f"{source} is not a decoder graph folder (model.onnx and {GENAI_CONFIG}): give the export "
                        "stage's output")
    model = onnx.load(str(source / "model.onnx"))  # with its weights: they are what is rewritten
    nodes = weighted_matmuls(model)
    names = {m.name for m in nodes}
    unknown = [n for n in cfg.exclude if n not in names]
    if unknown:
        example = next((m.name for m in nodes if m.group == "layer 0"), next(iter(names), "none"))
        raise UserError(f"--int4-exclude names {', '.join(unknown)}, not a weight MatMul of {source / 'model.onnx'}; "
                        f"names look like {example} (matmul_groups lists them)")
    int8 = [n for n in int8_selection(nodes, cfg.int8) if n not in cfg.exclude] if cfg.precision == "int4" else []
    rewritten = {"gemm_to_matmul": _gemm_to_matmul(model),
                 "untied": _untie_heads(model, [m.name for m in nodes if m.weight == "transposed"
                                                and m.name not in cfg.exclude])}
    scopes = {n.name: list(n.metadata_props) for n in model.graph.node if n.op_type == "MatMul"}
    model = _quantize(model, cfg, int8)
    _keep_metadata(model, scopes)
    with atomic_dir(out) as tmp:
        onnx.save_model(model, str(tmp / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="model.onnx.data", size_threshold=1024)
        for f in source.iterdir():
            if f.is_file() and f.name not in _GRAPH_FILES + _RECORDS:
                shutil.copy2(f, tmp / f.name)
        groups = matmul_groups(tmp / "model.onnx")
        record = stage_record(
            "quantize_graph", {**dataclasses.asdict(cfg), "exclude": list(cfg.exclude), "is_symmetric": True},
            {"graph": str(source / "model.onnx"), "graph_sha256": sha256_file(source / "model.onnx"),
             "made_by": made_by(source)},
            started,
            path=PATH,
            method="onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer",
            int8_nodes=int8,
            rewritten=rewritten,
            weights_bytes=sum(p.stat().st_size for p in tmp.glob("*.onnx.data")),
            onnx_bytes=sum(p.stat().st_size for p in tmp.iterdir() if p.name.endswith((".onnx", ".onnx.data"))),
            matmuls={"quantized": sorted(n for g in groups.values() for n, q in g.items() if q),
                     "float": sorted(n for g in groups.values() for n, q in g.items() if not q),
                     "bits": matmul_bits(tmp / "model.onnx")},
            **(note or {}),
        )
        write_json(tmp / BUILD_RECORD, record)
    return record


def made_by(folder: Path) -> str | None:
    """Which path made the decoder graph in ``folder``, as its own record says (``genai-builder``, ``torch.onnx`` or
    ``matmulnbits``); None when it has no record."""
    folder = Path(folder)
    if (folder / "export.json").is_file():
        rec = read_json(folder / "export.json")
        return rec.get("path") or {"genai": "genai-builder", "torch": "torch.onnx"}.get(rec.get("chosen"))
    if (folder / BUILD_RECORD).is_file():
        rec = read_json(folder / BUILD_RECORD)
        return rec.get("path") or {"build_genai": "genai-builder", "torch_onnx_decoder": "torch.onnx"}.get(
            rec.get("stage"))
    return None


def _quantizer() -> Any:
    """ORT's ``matmul_nbits_quantizer`` module, imported without its side effect: at import it points the root
    logger at stderr at INFO level, which would fill the pipeline's log with a line per node."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    from onnxruntime.quantization import matmul_nbits_quantizer

    for h in root.handlers[len(handlers):]:
        root.removeHandler(h)
    root.setLevel(level)
    return matmul_nbits_quantizer


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Only the quantizer's warnings and errors: its INFO lines and the progress bar it prints are noise."""
    import logging

    loggers = [logging.getLogger(n) for n in ("onnxruntime.quantization.matmul_nbits_quantizer", "neural_compressor")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # k-quant divides by zero on all-equal blocks and then handles the NaN itself
            warnings.simplefilter("ignore", RuntimeWarning)
            yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)


def _quantize(model: Any, cfg: GenAIBuild, int8: list[str]) -> Any:
    """``model`` with its weight MatMuls at ``cfg.precision`` bits (``int8`` names at 8), ``cfg.exclude`` in float.

    As the builder does it: ``rtn``/``k_quant`` take every node's bits in one pass; ORT's default quantizer takes
    one width a pass, so the int4 body is made first and the 8-bit nodes in a second pass (by then only they are
    still ``MatMul``, and a pass quantizes every ``MatMul`` it is not told to leave)."""
    ort_q = _quantizer()
    bits = 4 if cfg.precision == "int4" else 8
    common = {"block_size": cfg.block_size, "is_symmetric": True, "accuracy_level": cfg.accuracy_level}

    def default_pass(m: Any, b: int, exclude: list[str]) -> Any:
        q = ort_q.MatMulNBitsQuantizer(m, bits=b, nodes_to_exclude=exclude, **common)
        q.process()
        return q.model.model

    with _quiet():
        if cfg.algorithm == "default":
            model = default_pass(model, bits, [*cfg.exclude, *int8])
            return default_pass(model, 8, list(cfg.exclude)) if int8 else model
        # ORT's rtn/k_quant pack the 4-bit zero points of a weight with an odd number of blocks per column across
        # columns and fail; those few (narrow) weights are rounded to nearest by the default quantizer afterwards
        odd = [n for n in _odd_block_weights(model, cfg.block_size) if n not in int8 and bits == 4]
        weights = {n.name: {"bits": 8 if n.name in int8 else bits} for n in model.graph.node if n.op_type == "MatMul"}
        # ORT's rtn/k_quant config writes 4 bits for any MatMul without an entry of its own, whatever ``bits`` says
        algo = (ort_q.KQuantWeightOnlyQuantConfig if cfg.algorithm == "k_quant" else
                ort_q.RTNWeightOnlyQuantConfig)(customized_weight_config=weights)
        q = ort_q.MatMulNBitsQuantizer(model, bits=bits, nodes_to_exclude=[*cfg.exclude, *odd], algo_config=algo,
                                       **common)
        q.process()
        model = q.model.model
        return default_pass(model, bits, list(cfg.exclude)) if odd else model


def _odd_block_weights(model: Any, block_size: int) -> list[str]:
    """MatMuls whose constant weight (K, N) has an odd number of blocks along K."""
    dims = {i.name: list(i.dims) for i in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and len(dims.get(n.input[1], [])) == 2
            and -(-dims[n.input[1]][0] // block_size) % 2]


def _gemm_to_matmul(model: Any) -> list[str]:
    """Rewrite each ``Gemm(A, B, C)`` by a constant ``B`` (alpha = beta = 1, A not transposed) as ``MatMul`` (same
    name, same metadata) + ``Add``; returns the names rewritten."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    gemms = {m.name for m in weighted_matmuls(model) if m.weight == "initializer"}
    nodes, done = [], []
    for node in graph.node:
        if node.op_type != "Gemm" or node.name not in gemms:
            nodes.append(node)
            continue
        b = node.input[1]
        if any(a.name == "transB" and a.i for a in node.attribute):
            t = numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(inits[b]).T), f"{b}.T")
            graph.initializer.append(t)
            b = t.name
        product = f"{node.output[0]}.matmul" if len(node.input) > 2 and node.input[2] else node.output[0]
        matmul = onnx.helper.make_node("MatMul", [node.input[0], b], [product], name=node.name)
        matmul.metadata_props.extend(node.metadata_props)
        nodes.append(matmul)
        if product != node.output[0]:
            nodes.append(onnx.helper.make_node("Add", [product, node.input[2]], [node.output[0]],
                                               name=f"{node.name}.bias"))
        done.append(node.name)
    if done:
        graph.ClearField("node")
        graph.node.extend(nodes)
        _drop_unused_initializers(model)
    return done


def _untie_heads(model: Any, names: list[str]) -> list[str]:
    """Give each MatMul of ``names`` (weight: ``Transpose`` of an initializer) a transposed copy of that table as a
    constant, so it can be quantized; a ``Transpose`` left without readers goes. Returns the names rewritten."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    if not names:
        return []
    inits = {i.name: i for i in graph.initializer}
    producer = {o: n for n in graph.node for o in n.output}
    for node in graph.node:
        if node.name in names and node.op_type == "MatMul":
            table = producer[node.input[1]].input[0]
            copy = f"{table}.T"
            if copy not in inits:
                inits[copy] = numpy_helper.from_array(
                    np.ascontiguousarray(numpy_helper.to_array(inits[table]).T), copy)
                graph.initializer.append(inits[copy])
            node.input[1] = copy
    read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    kept = [n for n in graph.node if n.op_type != "Transpose" or any(o in read for o in n.output)]
    if len(kept) != len(graph.node):
        graph.ClearField("node")
        graph.node.extend(kept)
    return list(names)


def _drop_unused_initializers(model: Any) -> None:
    read = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    kept = [i for i in model.graph.initializer if i.name in read]
    if len(kept) != len(model.graph.initializer):
        model.graph.ClearField("initializer")
        model.graph.initializer.extend(kept)


def _keep_metadata(model: Any, scopes: dict[str, list[Any]]) -> None:
    """Copy each quantized node's module path from the MatMul it replaced (the quantizer makes new nodes without
    it), so ``matmul_groups`` groups a quantized torch-exported graph by layer as it groups the fp32 one."""
    import re

    for node in model.graph.node:
        if node.op_type == "MatMulNBits" and not node.metadata_props:
            props = scopes.get(re.sub(r"_Q\d+$", "", node.name))
            if props:
                node.metadata_props.extend(props)
