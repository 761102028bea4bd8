"""The quantize stage's two paths on tiny random decoders: the GenAI builder, and MatMulNBitsQuantizer on the
verified fp32 graph where the builder cannot build the family (Gemma 3 on transformers 5) or is not wanted; and what
the graphs are judged on when the prompts have no answers (held-out text)."""

import json

import numpy as np
import onnx
import pytest
import torch
from lm_models import CORPUS, save_lm, tiny_llama

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm.export import LMExportConfig, export_lm
from compresskit.tasks.causal_lm.onnx_build import (
    matmul_bits,
    matmul_groups,
    torch_onnx_decoder,
)
from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder
from compresskit.tasks.causal_lm.onnx_verify import DecoderParity
from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig, quantize_lm

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album"]
PROMPTS = [[5, 17, 42, 99, 3, 250, 7, 8, 120, 33, 64, 12], [1, 99, 3, 250, 7, 8]]


def _data(folder, answered: bool, heldout: bool):
    folder.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": f"tell me of the {WORDS[i % 8]}", "kind": "user", "source_id": f"v {i}", "reference": None,
             "response": f"the {WORDS[(i * 3) % 8]} and the {WORDS[(i + 5) % 8]}" if answered else ""}
            for i in range(6)]
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [{"id": f"t{i}", "text": t} for i, t in enumerate(CORPUS)] if heldout else []
    (folder / "heldout.jsonl").write_text("".join(json.dumps(r) + "\n" for r in texts))
    return folder


def tiny_gemma3(seed: int = 0):
    """A random Gemma 3 text model (heads 16 wide, a sliding-window layer, tied embeddings as Gemma has): a family
    the GenAI builder cannot read from a transformers-5 config."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
                              sliding_window=16, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Gemma3ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A Gemma 3 student exported by the export stage (both candidates tried) and its data folder."""
    root = tmp_path_factory.mktemp("gemma")
    model = save_lm(root / "student", tiny_gemma3())
    data = _data(root / "data", answered=True, heldout=True)
    fp32 = root / "onnx" / "student"
    export_lm(LMExportConfig(verify_prompts=2, parity=DecoderParity(steps=4), timing_tokens=2), model, data, fp32,
              root / "cache")
    return {"root": root, "model": model, "data": data, "fp32": fp32}


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    """A 3-layer Llama (llama.cpp's sensitive layers are 0 and 2) and its torch.onnx graph."""
    root = tmp_path_factory.mktemp("llama")
    model = save_lm(root / "student", tiny_llama(layers=3, hidden=64, max_positions=256))
    fp32 = root / "onnx" / "student"
    torch_onnx_decoder(model, fp32)
    return {"root": root, "model": model, "fp32": fp32}


def test_export_keeps_torch_and_names_the_builders_failure(gemma):
    record = json.loads((gemma["fp32"] / "export.json").read_text())
    assert record["chosen"] == "torch" and record["path"] == "torch.onnx"
    assert set(record["other_paths"]) == {"genai-builder"}
    why = record["other_paths"]["genai-builder"]
    assert why == record["candidates"]["genai"]["error"] and "Gemma3ForCausalLM" in why and "\n" not in why


def test_int4_of_an_unbuildable_family_takes_the_matmulnbits_path_and_runs(gemma):
    cfg = LMQuantizeConfig(precisions=("int4",), min_agreement=0.5, max_perplexity_ratio=10.0, teacher_int4=False)
    out = gemma["root"] / "onnx"
    rec = quantize_lm(cfg, gemma["model"], gemma["fp32"], gemma["data"], out, gemma["root"] / "cache",
                      threads=1)["int4"]
    q = json.loads((out / "student-int4" / "quantize.json").read_text())
    assert q["path"] == rec["path"] == "matmulnbits" and q["source_graph"] == "torch.onnx"
    assert "Gemma3ForCausalLM" in q["builder_error"] and "\n" not in q["builder_error"]
    assert q["judged_on"] == "answers" and q["within_budget"]
    # every weight MatMul at 4 bits, the tied LM head given its own (quantized) copy of the table
    groups = matmul_groups(out / "student-int4")
    assert list(groups) == ["lm_head", "layer 0", "layer 1"] and all(all(g.values()) for g in groups.values())
    assert set(matmul_bits(out / "student-int4" / "model.onnx")) == {4}
    build = json.loads((out / "student-int4" / "build.json").read_text())
    assert build["path"] == "matmulnbits" and build["rewritten"]["untied"] == list(groups["lm_head"])
    for name in ("genai_config.json", "tokenizer.json"):
        assert (out / "student-int4" / name).is_file()
    # its greedy tokens, teacher-forced on the prompts, mostly agree with the fp32 graph's
    int4, fp32 = OnnxDecoder(out / "student-int4", threads=1), OnnxDecoder(gemma["fp32"], threads=1)
    same = [int4.logits(np.array([p])).argmax(-1) == fp32.logits(np.array([p])).argmax(-1) for p in PROMPTS]
    assert np.concatenate(same, axis=None).mean() >= 0.6
    assert len(int4.greedy(np.array([PROMPTS[0]]), 4)) == 4  # and it decodes through its cache


def test_a_full_precision_group_stays_a_plain_matmul(llama, tmp_path):
    data = _data(tmp_path / "data", answered=True, heldout=False)
    # an impossible budget: the ladder climbs to its last allowed step, the LM head and layer 0 in float
    strict = LMQuantizeConfig(precisions=("int4",), min_agreement=1.0, max_perplexity_ratio=1.0, max_fallbacks=4,
                              builder=False)
    rec = quantize_lm(strict, llama["model"], llama["fp32"], data, tmp_path, tmp_path / "cache", threads=1)["int4"]
    assert rec["path"] == "matmulnbits" and "builder_error" not in rec and rec["source_graph"] == "torch.onnx"
    assert rec["kept_fp32"] == ["lm_head", "layer 0"] and len(rec["attempts"]) == 5
    before = matmul_groups(llama["fp32"])
    graph = onnx.load(str(tmp_path / "student-int4" / "model.onnx"), load_external_data=False).graph
    ops = {n.name: n.op_type for n in graph.node}
    for name in [*before["lm_head"], *before["layer 0"]]:
        assert ops[name] == "MatMul"
    for name in before["layer 1"]:
        assert ops[f"{name}_Q4"] == "MatMulNBits" and name not in ops
    assert matmul_groups(tmp_path / "student-int4")["layer 1"] == dict.fromkeys(before["layer 1"], True)
    # the 8-bit steps came first and stay: layer 2's value and MLP-down projections (layer 0's are in float)
    assert rec["kept_int8"] == ["last_matmul", "mixed_layers"]
    assert matmul_bits(tmp_path / "student-int4" / "model.onnx") == {4: 12, 8: 2}
    int8 = [n.name for n in graph.node if n.op_type == "MatMulNBits" and any(a.name == "bits" and a.i == 8
                                                                                for a in n.attribute)]
    assert sorted(int8) == sorted(f"{n}_Q8" for n in list(before["layer 2"])[2::4])  # v_proj, down_proj
    logits = [n for n in graph.node if "logits" in n.output]
    assert [n.name for n in logits] == list(before["lm_head"])  # the LM head is the MatMul writing the logits


def test_prompts_without_answers_are_judged_on_heldout_text(llama, tmp_path):
    data = _data(tmp_path / "data", answered=False, heldout=True)
    cfg = LMQuantizeConfig(precisions=("int8",), min_agreement=0.0, max_perplexity_ratio=100.0, builder=False,
                           heldout_window=16)
    scores = {}
    rec = quantize_lm(cfg, llama["model"], llama["fp32"], data, tmp_path, tmp_path / "cache", threads=1,
                      scores=scores)["int8"]
    assert rec["judged_on"] == scores["judged_on"] == "heldout text"
    assert rec["parity"]["samples"] == len(CORPUS) and all(len(e["input_ids"]) == 16 for e in scores["examples"])
    assert rec["chosen"]["agreement"] > 0.8 and rec["reference"]["perplexity"] > 1
    assert set(matmul_bits(tmp_path / "student-int8" / "model.onnx")) == {8}
    # neither answers nor held-out text: one line saying what is missing
    empty = _data(tmp_path / "empty", answered=False, heldout=False)
    with pytest.raises(UserError, match="neither validation prompts with answers nor held-out text") as e:
        quantize_lm(cfg, llama["model"], llama["fp32"], empty, tmp_path / "q2", tmp_path / "cache", threads=1)
    assert "\n" not in str(e.value)


def test_teacher_int4_falls_back_when_the_builder_cannot_build(llama, tmp_path, monkeypatch):
    import shutil

    from compresskit.tasks.causal_lm import onnx_build
    from compresskit.tasks.causal_lm.quantize import teacher_int4

    def cannot(*args, **kwargs):
        raise UserError("the ONNX Runtime GenAI builder could not build it: KeyError: 'rope_type'")

    # the builder's failure and the torch export are the other tests' business: here only what follows them
    monkeypatch.setattr(onnx_build, "build_genai", cannot)
    monkeypatch.setattr(onnx_build, "torch_onnx_decoder", lambda model, out: shutil.copytree(llama["fp32"], out))
    out = tmp_path / "teacher-int4"
    record = teacher_int4(llama["model"], out, tmp_path / "cache")
    build = json.loads((out / "build.json").read_text())
    assert build == json.loads(json.dumps(record)) and build["path"] == "matmulnbits" and "rope_type" in build["builder_error"]
    assert build["onnx_bytes"] > 0 and list(build["matmuls"]["bits"]) == ["4"] and not build["matmuls"]["float"]
    assert not list(tmp_path.glob(".*"))  # the torch export's work folder is gone
