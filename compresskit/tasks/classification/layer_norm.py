"""Un-fusing SkipLayerNormalization: a graph rewrite that export keeps only where it measures faster.

ONNX Runtime's transformer optimizer fuses each residual ``Add`` (+ bias ``Add``) + ``LayerNormalization`` into one
com.microsoft ``SkipLayerNormalization``. On the CPU provider of onnxruntime 1.32 that fused kernel is the slower
form: at BERT-small shapes (128 × 384) it took about 105 µs on two threads (195 µs on one) where the two Adds and
the standard ``LayerNormalization`` took 31 µs. all-MiniLM-L6-v2 has 12 of them, about a tenth of its int8 latency.
A later onnxruntime may fix the kernel, and a GPU provider has its own, so export times both forms of its chosen
graph and keeps the faster one (see ``compresskit.tasks.classification.export``).

The session must not fuse them back: ONNX Runtime's ``SkipLayerNormFusion`` runs at the extended optimisation level
that compresskit's sessions use. The unfused graph's folder therefore carries ``session.json`` naming that fusion
among the session's disabled optimizers; ``compresskit.onnx.sessions.make_session`` applies it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compresskit.artifacts import write_json
from compresskit.onnx.io import save_graph
from compresskit.onnx.sessions import SESSION_FILE

FUSION = "SkipLayerNormFusion"
"""ONNX Runtime's graph transformer that would turn Add + LayerNormalization back into SkipLayerNormalization."""
SESSION_SETTINGS = {"disabled_optimizers": [FUSION]}


def unfuse_skip_layer_norm(model: Any) -> int:
    """Replace every SkipLayerNormalization of the ModelProto ``model`` (in place) by ``Add(input, bias)`` when it
    has a bias, then ``Add(·, skip)``, then ``LayerNormalization`` over the last axis with its gamma, beta and
    epsilon. The sum output (index 3, the residual some fused graphs pass on) keeps its name. Returns the count."""
    from onnx import helper

    graph = model.graph
    nodes, count = [], 0
    for node in graph.node:
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            nodes.append(node)
            continue
        x, skip, gamma, beta, bias = (*node.input, "", "")[:5]
        out, mean, inv_std, total = (*node.output, "", "", "")[:4]
        if mean or inv_std:  # training outputs; an inference graph from the optimizer never reads them
            raise ValueError(f"{node.name} has mean/inv_std outputs, which LayerNormalization cannot stand in for")
        epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
        name = node.name or f"SkipLayerNormalization_{count}"
        total = total or f"{name}/sum"
        if bias:  # the order of the graph before fusion: dense output + bias, then the residual
            nodes.append(helper.make_node("Add", [x, bias], [f"{name}/biased"], name=f"{name}/AddBias"))
            nodes.append(helper.make_node("Add", [f"{name}/biased", skip], [total], name=f"{name}/Add"))
        else:
            nodes.append(helper.make_node("Add", [x, skip], [total], name=f"{name}/Add"))
        nodes.append(helper.make_node("LayerNormalization", [total, gamma, *([beta] if beta else [])], [out],
                                      name=f"{name}/LayerNorm", axis=-1, epsilon=epsilon))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    if count and not any(o.domain in ("", "ai.onnx") and o.version >= 17 for o in model.opset_import):
        raise ValueError("LayerNormalization needs opset 17 or later in the default domain")
    return count


def write_unfused(src: Path, dst: Path, external: bool) -> int:
    """Write ``src`` with its SkipLayerNormalization nodes un-fused to ``dst`` (same weight layout), and the session
    settings that keep them so beside it. Returns how many nodes were un-fused (0: nothing written)."""
    import onnx

    model = onnx.load(str(src))
    count = unfuse_skip_layer_norm(model)
    if count:
        dst.parent.mkdir(parents=True, exist_ok=True)
        save_graph(model, dst, external)
        write_json(dst.parent / SESSION_FILE, SESSION_SETTINGS)
    return count
