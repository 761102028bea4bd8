"""The causal-LM export and quantize stages on a tiny random Llama (heads 16 wide: ONNX Runtime's attention kernel
needs that): the verified graph is kept, a broken one stops the stage, quantization falls back group by group."""

import json
import shutil

import pytest
from lm_models import save_lm, tiny_llama

from compresskit.artifacts import VerificationError
from compresskit.tasks.causal_lm import export as lm_export
from compresskit.tasks.causal_lm.export import LMExportConfig, export_lm
from compresskit.tasks.causal_lm.onnx_verify import DecoderParity
from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig, fallback_groups, ladder, quantize_lm

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("lm") / "student", tiny_llama(layers=2, hidden=64, max_positions=256))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("data")
    rows = [{"prompt": f"tell me of the {WORDS[i % 8]}", "kind": "user", "source_id": f"v {i}", "reference": None,
             "response": f"the {WORDS[(i * 3) % 8]} and the {WORDS[(i + 5) % 8]}"} for i in range(6)]
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


@pytest.fixture(scope="module")
def exported(model_dir, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "onnx" / "student"
    export_lm(LMExportConfig(candidates=("genai",), verify_prompts=2, parity=DecoderParity(steps=6)), model_dir,
              data_dir, out, tmp_path_factory.mktemp("cache"))
    return out


def test_the_verified_graph_is_kept_with_its_record(exported):
    record = json.loads((exported / "export.json").read_text())
    assert record["chosen"] == "genai" and record["verification"]["passed"]
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] < 1e-4
    assert record["candidates"]["genai"]["decode_ms_per_token"] > 0
    assert (exported / "model.onnx").is_file() and (exported / "genai_config.json").is_file()
    assert not list(exported.parent.glob(".*candidates"))  # the candidates' work folder is gone


def test_a_graph_with_wrong_cache_wiring_stops_the_stage_and_writes_nothing(model_dir, data_dir, tmp_path,
                                                                            monkeypatch):
    import onnx

    build = lm_export._build

    def miswired(candidate, model, out, cache):  # the real build, then layer 0's key and value swapped
        record = build(candidate, model, out, cache)
        graph = onnx.load(str(out / "model.onnx"), load_external_data=False)
        swap = {"present.0.key": "present.0.value", "present.0.value": "present.0.key"}
        for node in graph.graph.node:
            node.output[:] = [swap.get(o, o) for o in node.output]
        onnx.save(graph, str(out / "model.onnx"))
        return record

    monkeypatch.setattr(lm_export, "_build", miswired)
    out = tmp_path / "onnx" / "student"
    with pytest.raises(VerificationError, match="decode steps"):
        export_lm(LMExportConfig(candidates=("genai",), verify_prompts=2, parity=DecoderParity(steps=6)), model_dir,
                  data_dir, out, tmp_path / "cache")
    assert not out.exists() and not list((tmp_path / "onnx").glob(".*"))


def test_fallback_order_is_head_then_outer_layers_inwards():
    assert fallback_groups(4) == ["lm_head", "layer 0", "layer 3", "layer 1", "layer 2"]
    assert fallback_groups(1) == ["lm_head", "layer 0"]


def test_int4_ladder_tries_8_bits_before_float_and_int8_goes_straight_to_float():
    int4 = ladder("int4", 2, LMQuantizeConfig(max_fallbacks=4))
    assert [(s["int8_groups"], s["full_precision_groups"]) for s in int4] == [
        ([], []), (["last_matmul"], []), (["last_matmul", "mixed_layers"], []),
        (["last_matmul", "mixed_layers"], ["lm_head"]), (["last_matmul", "mixed_layers"], ["lm_head", "layer 0"])]
    assert [s["full_precision_groups"] for s in ladder("int8", 2, LMQuantizeConfig(max_fallbacks=2))] == [
        [], ["lm_head"], ["lm_head", "layer 0"]]
    assert all(not s["int8_groups"] for s in ladder("int8", 2, LMQuantizeConfig()))
    assert len(ladder("int4", 2, LMQuantizeConfig(max_fallbacks=0))) == 1
    assert len(ladder("int4", 1, LMQuantizeConfig(max_fallbacks=50))) == 3 + 2  # every step once, no more


def test_quantize_climbs_the_ladder_until_the_budget_holds_and_records_each_attempt(model_dir, data_dir, exported,
                                                                                    tmp_path):
    from compresskit.tasks.causal_lm.onnx_build import matmul_bits, matmul_groups

    # an impossible budget: every allowed step is tried, the last build is kept and says it is outside
    strict = LMQuantizeConfig(precisions=("int4",), min_agreement=1.0, max_perplexity_ratio=1.0, max_fallbacks=3)
    scores = {}  # the fp32 graph's scores, shared between calls as the pipeline's stage shares them
    rec = quantize_lm(strict, model_dir, exported, data_dir, tmp_path, tmp_path / "cache", threads=1,
                      scores=scores)["int4"]
    reference = scores["reference"]
    assert [(a["int8_groups"], a["full_precision_groups"]) for a in rec["attempts"]] == [
        ([], []), (["last_matmul"], []), (["last_matmul", "mixed_layers"], []),
        (["last_matmul", "mixed_layers"], ["lm_head"])]
    assert not rec["within_budget"] and not rec["parity"]["passed"]
    q = json.loads((tmp_path / "student-int4" / "quantize.json").read_text())
    assert q["kept_fp32"] == ["lm_head"] and q["kept_int8"] == ["last_matmul", "mixed_layers"]
    groups = matmul_groups(tmp_path / "student-int4" / "model.onnx")
    assert not any(groups["lm_head"].values())  # kept in full precision
    assert all(groups["layer 0"].values()) and all(groups["layer 1"].values())
    bits = matmul_bits(tmp_path / "student-int4" / "model.onnx")
    assert set(bits) == {4, 8} and bits[8] >= 2  # the sensitive layer MatMuls at 8 bits, the rest at 4
    # a loose budget holds at once: nothing kept back
    shutil.rmtree(tmp_path / "student-int4")
    loose = LMQuantizeConfig(precisions=("int8",), min_agreement=0.0, max_perplexity_ratio=100.0)
    rec = quantize_lm(loose, model_dir, exported, data_dir, tmp_path, tmp_path / "cache", threads=1,
                      scores=scores)["int8"]
    assert scores["reference"] is reference  # measured once
    assert len(rec["attempts"]) == 1 and rec["within_budget"] and rec["chosen"]["agreement"] > 0.5
    assert set(matmul_bits(tmp_path / "student-int8" / "model.onnx")) == {8}


def test_bytes_read_per_token_leave_out_the_embedding_table(exported, model_dir):
    from transformers import AutoConfig

    from compresskit.tasks.causal_lm.bench_worker_onnx import bytes_read_per_token

    c = AutoConfig.from_pretrained(model_dir)
    params = sum(p.numel() for p in __import__("compresskit.tasks.causal_lm.teacher", fromlist=["x"]).load_causal_lm(
        str(model_dir)).parameters())
    every_weight_but_the_table = 4 * (params - c.vocab_size * c.hidden_size)  # fp32, untied head: read each step
    assert every_weight_but_the_table <= bytes_read_per_token(exported) <= 1.1 * every_weight_but_the_table


def test_memory_bandwidth_is_measured_both_ways():
    from compresskit.machine import fresh_memory_bandwidth, memory_bandwidth

    bw = memory_bandwidth(threads=2, megabytes=32, repeats=2)
    # the limit is the read (a decoder only reads); the copy's read + write figure is recorded beside, not used
    assert bw["gb_per_s"] == bw["read_gb_per_s"] > 0 and bw["copy_gb_per_s"] > 0 and bw["threads"] == 2
    fresh = fresh_memory_bandwidth(threads=1, passes=2)
    assert len(fresh["passes_gb_per_s"]) == len(fresh["passes_copy_gb_per_s"]) == 2
    assert fresh["gb_per_s"] > 0 and fresh["threads"] == 1
    assert round(fresh["gb_per_s"], 2) == max(fresh["passes_gb_per_s"]) and "new processes" in fresh["method"]


def test_int4_rounding_is_a_setting_the_builder_receives(tmp_path):
    from compresskit.artifacts import UserError
    from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, builder_command

    cmd = builder_command(tmp_path, tmp_path / "out", GenAIBuild(precision="int4", algorithm="k_quant",
                                                                 int8=("last_matmul",)), tmp_path)
    assert "algo_config=k_quant" in cmd and "matmul_mixed_precision=last_matmul:int8" in cmd
    assert not any(c.startswith(("algo_config", "matmul_mixed")) for c in builder_command(tmp_path, tmp_path,
                                                                                          GenAIBuild(), tmp_path))
    assert LMQuantizeConfig().algorithm == "k_quant"
    with pytest.raises(UserError, match="--int4-algorithm"):
        LMQuantizeConfig(algorithm="gptq")
    with pytest.raises(UserError, match="int8 groups"):
        GenAIBuild(precision="int4", int8=("attention",))
