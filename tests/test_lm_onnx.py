"""The decoder-LLM ONNX export with a KV cache (ONNX Runtime GenAI builder), its torch-free runner and its verification.

Tiny random models only. Their heads are 16 wide: ONNX Runtime's CPU attention kernel refuses narrower ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from lm_models import save_lm, tiny_gpt2, tiny_llama, tiny_qwen2

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm.onnx_build import (
    LM_HEAD,
    GenAIBuild,
    build_genai,
    last_meaningful_line,
    matmul_groups,
    torch_onnx_decoder,
)
from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder
from compresskit.tasks.causal_lm.onnx_verify import DecoderParity, verify_decoder
from compresskit.tasks.causal_lm.teacher import load_causal_lm

PROMPTS = [[5, 17, 42], [1, 99, 3, 250, 7, 8, 120, 33, 64, 12, 200, 150]]
QKV0 = "/model/layers.0/attn/qkv_proj/MatMul"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return save_lm(tmp_path_factory.mktemp("llama") / "model", tiny_llama(layers=2, hidden=64, max_positions=256))


@pytest.fixture(scope="module")
def fp32(llama_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fp32") / "onnx"
    build_genai(llama_dir, out, GenAIBuild(precision="fp32"), tmp_path_factory.mktemp("cache"))
    return out


@pytest.fixture(scope="module")
def torch_model(llama_dir):
    return load_causal_lm(str(llama_dir))


def test_fp32_build_writes_the_folder_and_its_record(fp32):
    names = {p.name for p in fp32.iterdir()}
    assert {"model.onnx", "model.onnx.data", "genai_config.json", "tokenizer.json", "build.json"} <= names
    assert not [p for p in fp32.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    record = json.loads((fp32 / "build.json").read_text())
    assert record["config"]["precision"] == "fp32"
    assert record["weights_bytes"] == (fp32 / "model.onnx.data").stat().st_size
    assert record["versions"]["onnxruntime"] and record["onnxruntime_genai"] and record["seconds"] > 0
    assert str(fp32.resolve()) in record["command"] and not record["matmuls"]["quantized"]


def test_matmul_names_by_group(fp32):
    groups = matmul_groups(fp32)
    assert list(groups) == ["lm_head", "layer 0", "layer 1"]
    assert groups["lm_head"] == {LM_HEAD: False}
    assert list(groups["layer 0"]) == [QKV0, "/model/layers.0/attn/o_proj/MatMul",
                                       "/model/layers.0/mlp/gate_proj/MatMul", "/model/layers.0/mlp/up_proj/MatMul",
                                       "/model/layers.0/mlp/down_proj/MatMul"]


def test_fp32_build_verifies(fp32, llama_dir):
    result = verify_decoder(fp32, llama_dir, PROMPTS, DecoderParity(steps=8), threads=1)
    assert result["passed"] and result["reason"] is None, result["reason"]
    assert result["prefill"]["max_abs"] < 1e-5 and result["decode"]["max_abs"] < 1e-5
    assert result["agreement"] == 1.0 and result["free_run_agreement"] == 1.0
    assert json.loads(json.dumps(result))["config"]["steps"] == 8  # JSON-able as returned


def test_logits_equal_pytorch_and_steps_equal_prefill(fp32, torch_model):
    decoder = OnnxDecoder(fp32, threads=1)
    ids = np.array([PROMPTS[1]], dtype=np.int64)
    with torch.no_grad():
        ref = torch_model(torch.from_numpy(ids)).logits.numpy()
    full = decoder.logits(ids)
    assert full.shape == ref.shape == (1, ids.shape[1], 300) and full.dtype == np.float32
    np.testing.assert_allclose(full, ref, atol=1e-5, rtol=0)
    logits, cache = decoder.prefill(ids[:, :4])
    stepped = [logits]
    for token in ids[0, 4:]:
        logits, cache = decoder.step(int(token), cache)
        stepped.append(logits)
    assert cache.length == ids.shape[1] and cache.tensors[0].shape == (1, 2, ids.shape[1], 16)
    np.testing.assert_allclose(np.stack(stepped), full[0, 3:], atol=1e-5, rtol=0)
    new = decoder.greedy(ids, 5)
    assert len(new) == 5 and new[0] == int(full[0, -1].argmax())
    assert decoder.greedy(ids, 5, eos_id=new[1]) == new[:2]


def _rewired(fp32, folder, swap):
    """A copy of the fp32 folder whose graph writes present tensors under each other's names."""
    import onnx

    shutil.copytree(fp32, folder)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in model.graph.node:
        node.output[:] = [swap.get(o, o) for o in node.output]
    onnx.save(model, str(folder / "model.onnx"))
    return folder


def test_broken_cache_wiring_is_caught_at_decode_steps(fp32, llama_dir, tmp_path):
    # layer 0's present key comes out as layer 1's and the other way round: prefill logits cannot tell
    broken = _rewired(fp32, tmp_path / "layers", {"present.0.key": "present.1.key", "present.1.key": "present.0.key"})
    result = verify_decoder(broken, llama_dir, PROMPTS, DecoderParity(steps=8), threads=1)
    assert not result["passed"] and "decode steps" in result["reason"] and "\n" not in result["reason"]
    assert result["prefill"]["max_abs"] < 1e-5 and result["decode"]["max_abs"] > 1e-3
    # judged by agreement alone (as for int4) the swap above goes unseen on a random model (|Δ| 8e-3 moves no
    # argmax); keys fed back as values do not
    broken = _rewired(fp32, tmp_path / "kv", {"present.0.key": "present.0.value", "present.0.value": "present.0.key"})
    result = verify_decoder(broken, llama_dir, PROMPTS, DecoderParity(steps=8, tolerance=None), threads=1)
    assert not result["passed"] and "decode steps" in result["reason"] and result["agreement"] < 0.95


def test_int4_build_excludes_nodes_loads_and_runs(llama_dir, tmp_path):
    out = tmp_path / "int4"
    record = build_genai(llama_dir, out, GenAIBuild(precision="int4", exclude=(LM_HEAD, QKV0)), tmp_path / "cache")
    groups = matmul_groups(out)
    assert groups["lm_head"] == {LM_HEAD: False} and groups["layer 0"][QKV0] is False
    assert groups["layer 0"]["/model/layers.0/mlp/down_proj/MatMul"] is True
    assert groups["layer 1"]["/model/layers.1/attn/qkv_proj/MatMul"] is True
    assert record["matmuls"]["float"] == sorted([LM_HEAD, QKV0]) and len(record["matmuls"]["quantized"]) == 9
    result = verify_decoder(out, llama_dir, PROMPTS, DecoderParity(steps=8, tolerance=None, min_agreement=0.5),
                            threads=1)
    assert 0 < result["decode"]["max_abs"] < 1.0 and result["agreement"] >= 0.5, result["reason"]


def test_qwen2_sliding_window_layer_runs_past_its_window(tmp_path):
    folder = save_lm(tmp_path / "qwen2", tiny_qwen2(hidden=64))  # last layer: window of 16 tokens
    out = tmp_path / "onnx"
    build_genai(folder, out, GenAIBuild(), tmp_path / "cache")
    assert OnnxDecoder(out).empty_cache().tensors[-1].shape == (1, 2, 16, 16)
    prompt = list(range(3, 23))  # 20 tokens + 8 steps: past the window
    result = verify_decoder(out, folder, [prompt], DecoderParity(steps=8), threads=1)
    assert result["passed"], result["reason"]


def test_torch_export_has_the_builder_io_and_verifies(fp32, llama_dir, tmp_path):
    import onnx

    out = tmp_path / "torch"
    record = torch_onnx_decoder(llama_dir, out)
    assert record["weights_bytes"] > 0 and (out / "genai_config.json").is_file() and (out / "tokenizer.json").is_file()

    def io(folder):
        graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
        return sorted(i.name for i in graph.input), sorted(o.name for o in graph.output)

    assert io(out) == io(fp32)
    result = verify_decoder(out, llama_dir, PROMPTS, DecoderParity(steps=8), threads=1)
    assert result["passed"] and result["agreement"] == 1.0, result["reason"]


def test_decoder_imports_no_torch(fp32):
    code = ("import sys, numpy as np, compresskit.tasks.causal_lm.onnx_decoder as d\n"
            f"print(d.OnnxDecoder({str(fp32)!r}, threads=1).greedy(np.array([[5, 6, 7]]), 3))\n"
            "assert not {'torch', 'transformers'} & set(sys.modules), 'torch or transformers imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_builder_failure_is_one_line_user_error(tmp_path):
    folder = save_lm(tmp_path / "gpt2", tiny_gpt2())
    with pytest.raises(UserError) as e:
        build_genai(folder, tmp_path / "out", GenAIBuild(), tmp_path / "cache")
    assert "\n" not in str(e.value) and "GPT2LMHeadModel" in str(e.value)
    assert str(e.value).endswith("model is not currently supported.")  # the builder's own last line
    assert not (tmp_path / "out").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="no config.json"):
        build_genai(empty, tmp_path / "out", GenAIBuild(), tmp_path / "cache")


def test_heads_narrower_than_16_are_refused(tmp_path):
    folder = save_lm(tmp_path / "narrow", tiny_llama(hidden=32))  # 4 heads of 8
    with pytest.raises(UserError, match="head size is 8.*multiple of 16"):
        build_genai(folder, tmp_path / "out", GenAIBuild(), tmp_path / "cache")
    assert not (tmp_path / "out").exists()


def test_config_names_the_flags():
    with pytest.raises(UserError) as e:
        GenAIBuild(precision="int3", block_size=48, accuracy_level=0, execution_provider="tpu")
    for flag in ("--onnx-precision", "--int4-block-size", "--int4-accuracy-level", "--onnx-provider"):
        assert flag in str(e.value)
    with pytest.raises(UserError, match="--int4-exclude"):
        GenAIBuild(exclude=LM_HEAD)  # a string, not a tuple of names
    with pytest.raises(UserError, match="--verify-steps"):
        DecoderParity(steps=1)


def test_last_meaningful_line_skips_progress_and_traceback():
    err = ("Loading: 100%|####| 3/3 [00:00<00:00, 9.1it/s]\rSaving x: 50%|##| 1/2 [00:00<00:00, 3it/s]\n"
           "Traceback (most recent call last):\n  File \"b.py\", line 3, in <module>\n    f()\n"
           "NotImplementedError: The gpt2 model is not currently supported.\n\x1b[0m\n")
    assert last_meaningful_line(err) == "NotImplementedError: The gpt2 model is not currently supported."
    assert last_meaningful_line("something went wrong\n\n") == "something went wrong"
