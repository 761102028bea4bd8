"""Every decoder family on a tiny random model (``model_families``), through the steps that depend on the family:
a student cut from the teacher's blocks, saved and loaded back, exported with its KV cache and verified against
PyTorch (torch.onnx: the route every family has; the builder route is covered on Llama in ``test_lm_export``),
quantized to int4 (MatMulNBits on that graph), and one answer from ``compresskit generate``'s ONNX Runtime GenAI.

Cost per family: about 10 s on a 2-core CPU, most of it torch.onnx's export."""

import json

import numpy as np
import pytest
from lm_models import CORPUS, save_lm
from model_families import DECODERS, decoder, slug

from compresskit.models import prune_layers
from compresskit.tasks.causal_lm.export import LMExportConfig, export_lm
from compresskit.tasks.causal_lm.onnx_build import matmul_bits
from compresskit.tasks.causal_lm.onnx_decoder import OnnxDecoder
from compresskit.tasks.causal_lm.onnx_generate import generate
from compresskit.tasks.causal_lm.onnx_verify import DecoderParity
from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig, quantize_lm

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Validation prompts without answers (a random teacher's are empty) and held-out text to judge int4 on."""
    folder = tmp_path_factory.mktemp("data")
    rows = [{"prompt": f"tell me of the {WORDS[i % 8]}", "kind": "user", "source_id": f"v {i}", "reference": None,
             "response": ""} for i in range(4)]
    (folder / "validation.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "heldout.jsonl").write_text("".join(json.dumps({"id": f"t{i}", "text": t}) + "\n"
                                                  for i, t in enumerate(CORPUS)))
    return folder


@pytest.mark.parametrize("name", list(DECODERS), ids=[slug(n) for n in DECODERS])
def test_a_decoder_student_exports_verifies_quantizes_and_generates(name, tmp_path, data_dir):
    student = save_lm(tmp_path / "student", prune_layers(decoder(name), [0, 2]))
    fp32 = tmp_path / "onnx" / "student"
    record = export_lm(LMExportConfig(candidates=("torch",), verify_prompts=2, parity=DecoderParity(steps=3),
                                      timing_tokens=2), student, data_dir, fp32, tmp_path / "cache")
    assert record["verification"]["passed"] and record["path"] == "torch.onnx"
    quantized = quantize_lm(LMQuantizeConfig(precisions=("int4",), builder=False, teacher_int4=False, examples=4,
                                             max_fallbacks=0), student, fp32, data_dir, tmp_path / "onnx",
                            tmp_path / "cache", threads=1)["int4"]
    assert quantized["path"] == "matmulnbits" and quantized["judged_on"] == "heldout text"
    graph = tmp_path / "onnx" / "student-int4" / "model.onnx"
    assert 4 in matmul_bits(graph)  # weights really at 4 bits, not a copy of the fp32 graph
    logits, _ = OnnxDecoder(graph.parent, threads=1).prefill(np.asarray([[5, 17, 42, 99]], dtype=np.int64))
    assert np.isfinite(logits).all()
    answer = generate(graph.parent, "tell me of the market", max_new_tokens=3, threads=1)
    assert 1 <= len(answer.tokens) <= 3 and answer.prompt_tokens > 0


def test_a_sliding_window_graph_gets_a_kv_cache_as_long_as_its_window():
    from compresskit.tasks.causal_lm.onnx_generate import kv_capacity

    def config(window, shared=True, context=8192):
        decoder = {"sliding_window": {"window_size": window}} if window else {}
        return {"model": {"context_length": context, "decoder": decoder},
                "search": {"past_present_share_buffer": shared}}

    assert kv_capacity(config(4096), 129) == 4096  # Gemma 2: the kernel refuses a cache shorter than the window
    assert kv_capacity(config(4096, context=2048), 129) == 2048  # never past the context
    assert kv_capacity(config(64), 129) == 129  # the window fits in what is needed anyway
    assert kv_capacity(config(None), 129) == 129 and kv_capacity(config(4096, shared=False), 129) == 129


def test_a_builder_graph_whose_window_is_not_shorter_than_its_context_is_refused(tmp_path):
    import onnx
    from onnx import helper

    from compresskit.artifacts import UserError
    from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, _check_built

    (tmp_path / "genai_config.json").write_text(json.dumps(
        {"model": {"context_length": 256, "decoder": {"head_size": 16, "sliding_window": {"window_size": 4096}}}}))

    def save(window: int) -> None:
        node = helper.make_node("GroupQueryAttention", ["q"], ["o"], domain="com.microsoft", local_window_size=window)
        graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("q", onnx.TensorProto.FLOAT, [1])],
                                  [helper.make_tensor_value_info("o", onnx.TensorProto.FLOAT, [1])])
        onnx.save(helper.make_model(graph), tmp_path / "model.onnx")

    save(-1)  # the builder wrote no window into the kernel (Mistral): the config's window does not bind it
    _check_built(tmp_path, GenAIBuild())
    save(4096)  # Gemma 2: the kernel itself has the window
    with pytest.raises(UserError, match="sliding window of 4096 tokens, not less than its context of 256"):
        _check_built(tmp_path, GenAIBuild())
