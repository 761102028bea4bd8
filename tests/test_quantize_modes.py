"""Every quantization mode on tiny graphs: the operators it produces, its verification, and what it records."""

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import outlier_model
from onnx import TensorProto, numpy_helper

from compresskit.artifacts import UserError, VerificationError
from compresskit.tasks.classification.quantize import (
    QuantizeConfig,
    load_validation,
    quantizable_groups,
    quantize,
    verify_quantized,
)


def _ops(folder: Path) -> set[str]:
    return {n.op_type for n in onnx.load(folder / "model.onnx").graph.node}


def _record(folder: Path) -> dict:
    return json.loads((folder / "quantize.json").read_text())


def _float_matmuls(folder: Path) -> set[str]:
    """Names of the MatMuls left in fp32 in ``folder``'s graph: dynamic int8 turns a quantized MatMul into another
    operator, static int8 feeds it from DequantizeLinear nodes."""
    nodes = onnx.load(folder / "model.onnx").graph.node
    dequantized = {o for n in nodes if n.op_type == "DequantizeLinear" for o in n.output}
    return {n.name for n in nodes if n.op_type == "MatMul" and not dequantized.intersection(n.input)}


def test_new_fields_are_validated_together_and_name_their_flags():
    with pytest.raises(UserError) as e:
        QuantizeConfig(calibration_samples=0, calibration_method="kl", int4_block_size=24, device="tpu",
                       max_accuracy_drop=-0.1)
    for flag in ("--calibration-samples", "--calibration-method", "--int4-block-size", "--device",
                 "--max-accuracy-drop"):
        assert flag in str(e.value)
    # the pipeline builds it positionally: mode, per_channel, reduce_range, min_agreement, max_length
    cfg = QuantizeConfig("int4", True, None, 0.9, 32)
    assert (cfg.mode, cfg.per_channel, cfg.min_agreement, cfg.max_length, cfg.fallback) == ("int4", True, 0.9, 32, True)


@pytest.mark.parametrize("mode, expected", [
    ("dynamic-int8", {"DynamicQuantizeLinear", "MatMulInteger"}),
    ("static-int8", {"QuantizeLinear", "DequantizeLinear"}),
    ("int4", {"MatMulNBits"}),
])
def test_integer_modes_make_their_operators_and_pass(tmp_path, tiny_onnx, tiny_data, mode, expected):
    r = quantize(QuantizeConfig(mode=mode, max_length=32, int4_block_size=16), tiny_onnx, tiny_data,
                 tmp_path / mode, "student")
    assert expected <= _ops(r.onnx_dir)
    record = _record(r.onnx_dir)
    assert record["mode"] == r.mode == mode and record["kept_fp32"] == [] and record["fallback"] is None
    assert record["parity"]["reference"] == "student-onnx" and record["parity"]["label_agreement"] >= 0.99
    assert record["accuracy_drop"] <= 0.01 and record["intended_device"] == "cpu"
    assert (r.onnx_dir / "tokenizer.json").is_file()
    assert [p.name for p in tmp_path.iterdir()] == [mode]  # no scratch folder (trials, calibration) left behind
    assert sorted(p.name for p in r.onnx_dir.iterdir() if p.suffix == ".onnx") == ["model.onnx"]


def test_each_calibration_method_runs_on_train_examples_and_sets_its_own_scales(tmp_path, tiny_onnx, tiny_data):
    """ONNX Runtime's own entropy calibration (128 bins) equals minmax: ours must not. The random tiny model has no
    outlier activations, so the KL search keeps the full range on all but a tensor or two; 16 training examples left
    it none on the 70/10/20 split, 32 leave it one."""
    scales = {}
    for method in ("minmax", "entropy", "percentile"):
        r = quantize(QuantizeConfig(mode="static-int8", max_length=32, calibration_samples=32,
                                    calibration_method=method), tiny_onnx, tiny_data, tmp_path / method)
        assert r.parity.passed and _record(r.onnx_dir)["calibration"] == {
            "split": "train", "samples": 32, "method": method, "preprocessed": "quant_pre_process(auto_merge)"}
        graph = onnx.load(r.onnx_dir / "model.onnx").graph
        scales[method] = {i.name: numpy_helper.to_array(i) for i in graph.initializer if i.name.endswith("_scale")}
    for method in ("entropy", "percentile"):
        assert scales[method].keys() == scales["minmax"].keys()
        assert any(not np.allclose(scales["minmax"][k], scales[method][k]) for k in scales["minmax"])


def test_fp16_halves_weights_keeps_io_fp32_and_stays_finite(tmp_path, tiny_onnx, tiny_data):
    r = quantize(QuantizeConfig(mode="fp16", max_length=32), tiny_onnx, tiny_data, tmp_path / "fp16", "student")
    model = onnx.load(r.onnx_dir / "model.onnx")
    assert any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    assert all(o.type.tensor_type.elem_type == TensorProto.FLOAT for o in model.graph.output)
    # overflow-prone operators stay fp32: their inputs come through a Cast to float
    halves = {o for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT
              for o in n.output}
    assert any(i in halves for n in model.graph.node if n.op_type == "SkipLayerNormalization" for i in n.input)
    record = _record(r.onnx_dir)
    assert record["intended_device"] == "cuda" and record["outputs_finite"] is True
    validation = load_validation(r.onnx_dir, tiny_data, 32)
    p = verify_quantized(r.onnx_dir / "model.onnx", validation, QuantizeConfig(max_length=32))
    assert p.passed and p.max_abs_diff < 1e-2


def _weight_matmuls(path: Path) -> list[str]:
    graph = onnx.load(path).graph
    weights = {i.name for i in graph.initializer}
    return [n.name for n in graph.node if n.op_type == "MatMul" and weights.intersection(n.input)]


def test_int4_quantizes_every_weight_matmul_even_with_a_block_larger_than_k(tmp_path, tiny_onnx, tiny_data):
    """Block 64 exceeds K = 32 of most MatMuls (hidden size 32): the quantizer pads, and skips MatMuls without a
    constant weight (attention products, when attention is not fused)."""
    r = quantize(QuantizeConfig(mode="int4", max_length=32, int4_block_size=64), tiny_onnx, tiny_data, tmp_path / "q")
    expected = _weight_matmuls(tiny_onnx / "model.onnx")
    nodes = onnx.load(r.onnx_dir / "model.onnx").graph.node
    assert len(expected) >= 6 and sum(n.op_type == "MatMulNBits" for n in nodes) == len(expected)
    assert _weight_matmuls(r.onnx_dir / "model.onnx") == []
    assert all(a.i == 64 for n in nodes if n.op_type == "MatMulNBits" for a in n.attribute if a.name == "block_size")
    assert _record(r.onnx_dir)["int4_block_size"] == 64


def test_verification_catches_a_corrupted_scale(tmp_path, tiny_onnx, tiny_data):
    cfg = QuantizeConfig(max_length=32)
    r = quantize(cfg, tiny_onnx, tiny_data, tmp_path / "int8", "student")
    validation = load_validation(r.onnx_dir, tiny_data, 32)
    assert verify_quantized(r.onnx_dir / "model.onnx", validation, cfg).passed
    model = onnx.load(r.onnx_dir / "model.onnx")
    scale = next(i for i in model.graph.initializer
                 if i.name.startswith("model.classifier.weight") and i.name.endswith("_scale"))
    flipped = -numpy_helper.to_array(scale)  # the classifier's logits change sign: argmax becomes argmin
    scale.CopyFrom(numpy_helper.from_array(flipped, scale.name))
    onnx.save(model, str(tmp_path / "flipped.onnx"))
    with pytest.raises(VerificationError, match="label agreement"):
        verify_quantized(tmp_path / "flipped.onnx", validation, cfg)
    scale.CopyFrom(numpy_helper.from_array(np.full_like(flipped, np.nan), scale.name))
    onnx.save(model, str(tmp_path / "nan.onnx"))
    with pytest.raises(VerificationError, match="NaN or inf"):
        verify_quantized(tmp_path / "nan.onnx", validation, cfg)


def test_auto_records_candidates_and_keeps_the_fastest(tmp_path, tiny_onnx, tiny_data):
    r = quantize(QuantizeConfig(mode="auto", max_length=32, int4_block_size=16), tiny_onnx, tiny_data,
                 tmp_path / "auto", "student")
    record = _record(r.onnx_dir)
    candidates = record["candidates"]
    assert [c["mode"] for c in candidates] == ["dynamic-int8", "static-int8", "int4"]
    assert all(c["kept"] and c["latency_ms"] > 0 and c["label_agreement"] >= 0.99 for c in candidates)
    chosen = [c for c in candidates if c.get("chosen")]
    assert len(chosen) == 1 and chosen[0]["latency_ms"] == min(c["latency_ms"] for c in candidates)
    assert record["mode"] == r.mode == chosen[0]["mode"] and record["config"]["mode"] == "auto"
    assert {"dynamic-int8": "MatMulInteger", "static-int8": "QuantizeLinear", "int4": "MatMulNBits"}[r.mode] \
        in _ops(r.onnx_dir)
    assert record["reference_latency_ms"] > 0


def test_auto_rejects_candidates_over_budget(tmp_path, tiny_onnx, tiny_data):
    """One outlier weight breaks per-tensor int8; int4's blocks isolate it (one column), so int4 must win."""
    src = outlier_model(tiny_onnx, tmp_path / "outlier")
    cfg = QuantizeConfig(mode="auto", min_agreement=0.9, max_accuracy_drop=0.1, int4_block_size=16, max_length=32,
                         fallback=False)
    r = quantize(cfg, src, tiny_data, tmp_path / "q", "x")
    candidates = {c["mode"]: c for c in _record(r.onnx_dir)["candidates"]}
    assert r.mode == "int4" and candidates["int4"]["chosen"]
    for mode in ("dynamic-int8", "static-int8"):
        assert not candidates[mode]["kept"] and "label agreement" in candidates[mode]["reason"]


def test_auto_fails_when_no_mode_holds_the_budget(tmp_path, tiny_onnx, tiny_data):
    src = outlier_model(tiny_onnx, tmp_path / "outlier", every_column=True)
    cfg = QuantizeConfig(mode="auto", int4_block_size=16, max_length=32, fallback=False)
    with pytest.raises(VerificationError, match="no mode holds the budget") as e:
        quantize(cfg, src, tiny_data, tmp_path / "q")
    assert "\n" not in str(e.value)
    for mode in ("dynamic-int8", "static-int8", "int4"):
        assert f"{mode} accuracy drop" in str(e.value)
    assert not (tmp_path / "q").exists()


def test_auto_on_cuda_needs_the_cuda_provider(tmp_path, tiny_onnx, tiny_data):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has CUDA")
    with pytest.raises(UserError, match="--device cuda"):
        quantize(QuantizeConfig(mode="auto", device="cuda", max_length=32), tiny_onnx, tiny_data, tmp_path / "q")


def test_without_fallback_a_broken_int8_model_fails(tmp_path, tiny_onnx, tiny_data):
    src = outlier_model(tiny_onnx, tmp_path / "outlier")
    with pytest.raises(VerificationError, match="x-onnx-int8 does not match x-onnx.*label agreement"):
        quantize(QuantizeConfig(max_length=32, fallback=False), src, tiny_data, tmp_path / "q", "x")


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_fallback_keeps_the_measured_culprit_in_fp32(tmp_path, tiny_onnx, tiny_data, mode):
    src = outlier_model(tiny_onnx, tmp_path / "outlier")
    r = quantize(QuantizeConfig(mode=mode, max_length=32), src, tiny_data, tmp_path / "q", "x")
    record = _record(r.onnx_dir)
    assert record["kept_fp32"] == ["mix/MatMul"] and r.parity.label_agreement >= 0.99
    fallback = record["fallback"]
    assert "label agreement" in fallback["triggered_by"][0]
    # measured: leaving "mix" out recovers agreement, leaving "head" out does not
    sensitivity = {tuple(s["nodes"]): s for s in fallback["sensitivity"]}
    assert sensitivity[("mix/MatMul",)]["label_agreement"] == 1.0
    assert sensitivity[("head/MatMul",)]["label_agreement"] < 0.5
    assert fallback["sensitivity"][0]["nodes"] == ["mix/MatMul"] and fallback["steps"][-1]["holds"]
    # the shipped graph really has "head" quantized and "mix" not
    fp32 = _float_matmuls(r.onnx_dir)
    assert "mix/MatMul" in fp32 and "head/MatMul" not in fp32


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8"])
def test_fallback_narrows_a_kept_layer_down_to_its_culprit(tmp_path, tiny_onnx, tiny_data, mode):
    """Both MatMuls sit in one layer group, so the group fallback keeps both; the refinement must measure its way
    back to quantizing ``head`` (the innocent one) and ship exactly that graph."""
    src = outlier_model(tiny_onnx, tmp_path / "outlier", prefix="/layer.0/")
    r = quantize(QuantizeConfig(mode=mode, max_length=32), src, tiny_data, tmp_path / "q", "x")
    record = _record(r.onnx_dir)
    fallback = record["fallback"]
    assert fallback["steps"][-1]["kept_fp32"] == ["/layer.0/mix/MatMul", "/layer.0/head/MatMul"]
    refined = fallback["refined"]
    # largest weight first: mix (8×8) is tried before head (8×3), fails the budget, and stays fp32
    assert [s["quantized"] for s in refined] == ["/layer.0/mix/MatMul", "/layer.0/head/MatMul"]
    assert [s["holds"] for s in refined] == [False, True]
    assert refined[0]["label_agreement"] < 0.99 and refined[1]["label_agreement"] >= 0.99
    assert record["kept_fp32"] == ["/layer.0/mix/MatMul"] and r.parity.label_agreement >= 0.99
    fp32 = _float_matmuls(r.onnx_dir)
    assert "/layer.0/mix/MatMul" in fp32 and "/layer.0/head/MatMul" not in fp32


def test_layer_groups_follow_layer_indices(tiny_onnx):
    groups = quantizable_groups(tiny_onnx / "model.onnx", "dynamic-int8")
    layered = [g for g in groups if "/layer." in g[0]]
    assert [g[0].split("/layer.")[1].split("/")[0] for g in layered] == ["0", "1"]  # one group per layer, in order
    assert all(len({n.split("/layer.")[1].split("/")[0] for n in g}) == 1 for g in layered)
    assert all(len(g) == 1 for g in groups if g not in layered)  # pooler, classifier, fused nodes: alone
    assert {"/model/bert/pooler/dense/Gemm", "/model/classifier/Gemm"} <= {g[0] for g in groups}
    assert sorted(n for g in quantizable_groups(tiny_onnx / "model.onnx", "int4") for n in g) \
        == sorted(_weight_matmuls(tiny_onnx / "model.onnx"))
