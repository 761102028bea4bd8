"""Un-fused SkipLayerNormalization: same numbers as the fused node, kept un-fused by the session, measured by export."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compresskit.artifacts import UserError
from compresskit.onnx.sessions import SESSION_FILE, profile_node_events
from compresskit.runtime import OnnxClassifier
from compresskit.tasks.classification.export import ExportConfig, choose_fastest, export
from compresskit.tasks.classification.layer_norm import FUSION, unfuse_skip_layer_norm
from compresskit.tasks.classification.quantize import QuantizeConfig, quantize

HIDDEN = 16


def _skip_layer_norm_graph(bias: bool, sum_output: bool) -> onnx.ModelProto:
    """x, skip → SkipLayerNormalization → y (and, with ``sum_output``, its x+skip(+bias) output, scaled by 2)."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=HIDDEN).astype(np.float32), n) for n in ("gamma", "beta", "bias")]
    inputs = ["x", "skip", "gamma", "beta", *(["bias"] if bias else [])]
    outputs = ["y", "", "", "s"] if sum_output else ["y"]
    nodes = [helper.make_node("SkipLayerNormalization", inputs, outputs, domain="com.microsoft", epsilon=1e-5,
                              name="sln")]
    graph_outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, HIDDEN])]
    if sum_output:
        nodes.append(helper.make_node("Add", ["s", "s"], ["s2"], name="twice"))
        graph_outputs.append(helper.make_tensor_value_info("s2", TensorProto.FLOAT, [2, 5, HIDDEN]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2, 5, HIDDEN])
                                           for n in ("x", "skip")], graph_outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


def _run(model: onnx.ModelProto, feed: dict) -> list[np.ndarray]:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # run the nodes as written
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"]).run(None, feed)


@pytest.mark.parametrize("bias,sum_output", [(True, False), (False, False), (True, True)])
def test_unfused_nodes_compute_what_the_fused_one_does(bias, sum_output):
    rng = np.random.default_rng(1)
    feed = {n: rng.normal(size=(2, 5, HIDDEN)).astype(np.float32) for n in ("x", "skip")}
    fused = _skip_layer_norm_graph(bias, sum_output)
    want = _run(fused, feed)
    unfused = _skip_layer_norm_graph(bias, sum_output)
    assert unfuse_skip_layer_norm(unfused) == 1
    onnx.checker.check_model(unfused)
    ops = [n.op_type for n in unfused.graph.node]
    assert "SkipLayerNormalization" not in ops and ops.count("LayerNormalization") == 1
    assert ops.count("Add") == (2 if bias else 1) + (1 if sum_output else 0)
    for got, expected in zip(_run(unfused, feed), want, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)


def test_training_outputs_and_old_opsets_are_refused():
    model = _skip_layer_norm_graph(True, False)
    model.graph.node[0].output.extend(["mean"])
    with pytest.raises(ValueError, match="mean/inv_std"):
        unfuse_skip_layer_norm(model)
    old = _skip_layer_norm_graph(True, False)
    old.opset_import[0].version = 14
    with pytest.raises(ValueError, match="opset 17"):
        unfuse_skip_layer_norm(old)
    with pytest.raises(UserError, match="--skip-layer-norm unfused needs --opset 17 or later"):
        ExportConfig(skip_layer_norm="unfused", opset=14)
    with pytest.raises(UserError, match="--skip-layer-norm must be one of auto, fused, unfused, got 'off'"):
        ExportConfig(skip_layer_norm="off")


@pytest.fixture(scope="module")
def unfused(tmp_path_factory, tiny_classifier, tiny_data):
    cfg = ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="off",
                       skip_layer_norm="unfused")
    return export(cfg, tiny_classifier, tiny_data, tmp_path_factory.mktemp("unfused") / "model").onnx_dir


TOKENS = {n: np.ones((1, 7), dtype=np.int64) for n in ("input_ids", "attention_mask", "token_type_ids")}


def _ran_op_types(model_path, feed=TOKENS) -> set[str]:
    """Operator types of the nodes ONNX Runtime ran for ``feed`` (from its profiler), after its own fusions."""
    events, _ = profile_node_events(model_path, feed)
    return {e["args"]["op_name"] for e in events if "op_name" in e.get("args", {})}


def test_unfused_export_is_verified_and_its_session_keeps_it_unfused(unfused, tiny_onnx):
    record = json.loads((unfused / "export.json").read_text())
    sln = record["skip_layer_norm"]
    assert sln["form"] == "unfused" and sln["nodes"] == 4 and sln["session"]["disabled_optimizers"] == [FUSION]
    assert "SkipLayerNormalization" not in record["fused_operators"] and record["parity"]["passed"]
    assert json.loads((unfused / SESSION_FILE).read_text())["disabled_optimizers"] == [FUSION]
    graph_ops = {n.op_type for n in onnx.load(unfused / "model.onnx").graph.node}
    assert "SkipLayerNormalization" not in graph_ops and "LayerNormalization" in graph_ops
    # what the session actually ran: LayerNormalization, never a re-fused SkipLayerNormalization
    ran = _ran_op_types(unfused / "model.onnx")
    assert "LayerNormalization" in ran and "SkipLayerNormalization" not in ran
    assert "SkipLayerNormalization" in _ran_op_types(tiny_onnx / "model.onnx")  # the fused export, for contrast
    # same answers as the fused export, through the ONNX-Runtime-only helper
    texts = ["Shares rose after the results.", "The striker scored twice in the final."]
    np.testing.assert_allclose(OnnxClassifier(unfused).logits(texts), OnnxClassifier(tiny_onnx).logits(texts),
                               atol=1e-4)


def test_make_session_applies_the_folder_settings(tmp_path):
    """ONNX Runtime fuses Add + Add + LayerNormalization back into SkipLayerNormalization on its own (shapes known);
    session.json beside the graph is what stops it."""
    model = _skip_layer_norm_graph(True, False)
    unfuse_skip_layer_norm(model)
    # int64 graph inputs cast to float: compresskit's session helpers feed token tensors, which are int64
    graph = model.graph
    casts = [helper.make_node("Cast", [f"{n}_ids"], [n], to=TensorProto.FLOAT, name=f"cast_{n}") for n in ("x", "skip")]
    graph.node.insert(0, casts[1])
    graph.node.insert(0, casts[0])
    del graph.input[:]
    graph.input.extend(helper.make_tensor_value_info(f"{n}_ids", TensorProto.INT64, [2, 5, HIDDEN]) for n in ("x", "skip"))
    onnx.save(model, tmp_path / "model.onnx")
    rng = np.random.default_rng(2)
    feed = {f"{n}_ids": rng.integers(-3, 4, size=(2, 5, HIDDEN)) for n in ("x", "skip")}

    assert "SkipLayerNormalization" in _ran_op_types(tmp_path / "model.onnx", feed)
    (tmp_path / SESSION_FILE).write_text(json.dumps({"disabled_optimizers": [FUSION]}))
    ran = _ran_op_types(tmp_path / "model.onnx", feed)
    assert ran >= {"Add", "LayerNormalization"} and "SkipLayerNormalization" not in ran


def test_quantized_folder_carries_the_session_settings(unfused, tiny_data, tmp_path):
    r = quantize(QuantizeConfig(max_length=32), unfused, tiny_data, tmp_path / "q", "x")
    assert json.loads((r.onnx_dir / SESSION_FILE).read_text())["disabled_optimizers"] == [FUSION]
    assert "SkipLayerNormalization" not in _ran_op_types(r.onnx_dir / "model.onnx")


def test_auto_times_both_forms_and_keeps_the_faster(tmp_path, tiny_classifier, tiny_data):
    cfg = ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="off")
    r = export(cfg, tiny_classifier, tiny_data, tmp_path / "auto")
    sln = json.loads((r.onnx_dir / "export.json").read_text())["skip_layer_norm"]
    latency = sln["latency_ms_batch1"]
    assert sln["setting"] == "auto" and set(latency) == {"fused", "unfused"}
    assert sln["form"] == choose_fastest(sln["latency_ms"])[0]  # the rule over batch 1 and the largest batch
    assert (r.onnx_dir / SESSION_FILE).is_file() == (sln["form"] == "unfused")
