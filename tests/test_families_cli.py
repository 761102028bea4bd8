"""The whole causal-LM pipeline through the real CLI on a family that takes the other paths than the Llama of
``test_causal_lm``: a Gemma 2 (``model_families``) with tied embeddings and soft-capped logits, whose decoder graph
comes from torch.onnx and whose int4 graph from MatMulNBits; the PyTorch figures (computed through the capped head)
and the ONNX graph's (computed by the exported model) must agree."""

import json

import pytest
from conftest import cli
from model_families import save_decoder

from compresskit.reporting.report import validate_report

FAST = ["--max-steps", "4", "--lm-batch-size", "2", "--lm-max-length", "64", "--max-new-tokens", "6",
        "--decode-tokens", "8", "--lm-test-prompts", "4", "--device", "cpu", "--rounds", "1", "--lm-quantize", "int4",
        "--lm-export-candidates", "torch", "--teacher-graphs", "int4"]
WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album", "chip", "bill"]


def test_a_soft_capped_tied_decoder_runs_end_to_end_through_torch_onnx_and_matmulnbits(tmp_path):
    teacher = save_decoder("Gemma 2", tmp_path / "gemma2")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"write about the {WORDS[i % 10]} and the {WORDS[i * 3 % 10]}"})
                               + "\n" for i in range(24)))
    proc = cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(prompts), "--output-root",
               str(tmp_path / "runs"), "--run-name", "gemma2", *FAST)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "runs" / "gemma2"
    report = json.loads((run / "report.json").read_text())
    assert validate_report(report) == []
    rows = {v["name"]: v for v in report["variants"]}
    assert {"teacher-pytorch", "student-pytorch", "student-onnx", "student-onnx-int4", "teacher-onnx-int4"} <= set(rows)
    export = json.loads((run / "onnx" / "student" / "export.json").read_text())
    assert export["path"] == "torch.onnx" and export["verification"]["passed"]
    # the cap is in both: PyTorch's perplexity through kd_losses.Head, the graph's through its own tanh
    assert rows["student-onnx"]["quality"]["perplexity"] == pytest.approx(
        rows["student-pytorch"]["quality"]["perplexity"], rel=1e-3)
    quant = json.loads((run / "onnx" / "student-int4" / "quantize.json").read_text())
    assert quant["path"] in ("genai-builder", "matmulnbits") and quant["judged_on"] in ("answers", "heldout text")
    if quant["path"] == "matmulnbits":
        assert quant["source_graph"] == "torch.onnx"
    generated = cli("generate", str(run / "onnx" / "student-int4"), "write about the market", "--max-new-tokens", "3")
    assert generated.returncode == 0, generated.stderr[-2000:]
