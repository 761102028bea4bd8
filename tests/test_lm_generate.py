"""``compresskit generate``: a greedy answer from an exported decoder LLM, streamed with ONNX Runtime GenAI alone.

The exported folder is built once per module from a tiny random Llama by ONNX Runtime GenAI's model builder (about
8 s). Its hidden size is 64: with 4 heads that is a head size of 16, the smallest that the builder's CPU attention
(GroupQueryAttention) accepts.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm.onnx_generate import generate, generate_stream

PROMPT = "what is the capital of france ?"

# Runs the CLI as `python -m compresskit` does, then says on stderr which heavy modules the run imported.
RUN_CLI = """
import sys
from compresskit.cli import main
sys.argv = ["compresskit", *sys.argv[1:]]
try:
    main()
except SystemExit as e:
    code = e.code
print("heavy modules:", [m for m in ("torch", "transformers") if m in sys.modules], file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """(the Hugging Face folder of a tiny random chat Llama, its export by ONNX Runtime GenAI's builder)."""
    from lm_models import save_lm, tiny_llama

    root = tmp_path_factory.mktemp("generate")
    hf = save_lm(root / "hf", tiny_llama(layers=2, hidden=64, max_positions=256))
    out = root / "onnx"
    proc = subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                           "-p", "fp32", "-e", "cpu", "-c", str(root / "cache")], check=False, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return hf, out


@pytest.fixture(scope="module")
def exported(folders) -> Path:
    return folders[1]


def test_cli_streams_an_answer_without_torch(exported):
    proc = subprocess.run([sys.executable, "-c", RUN_CLI, "generate", str(exported), PROMPT, "--max-new-tokens", "12",
                           "--threads", "1"], check=False, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == generate(exported, PROMPT, 12).text + "\n"
    assert proc.stdout.strip()
    summary, imported = proc.stderr.strip().splitlines()[-2:]
    assert summary.startswith("generate: 12 tokens") and "time to first token" in summary and "tokens/s" in summary
    assert imported == "heavy modules: []"


def test_streaming_yields_the_answer_in_pieces(exported):
    pieces = list(generate_stream(exported, PROMPT, 20))
    assert len(pieces) > 1 and all(pieces)
    whole = generate(exported, PROMPT, 20)
    assert "".join(pieces) == whole.text
    assert len(whole.tokens) == 20 and whole.prompt_tokens > 0
    assert whole.first_token_s > 0 and whole.decode_tokens_per_s > 0


@pytest.mark.parametrize("chat", [True, False])
def test_greedy_tokens_are_transformers_greedy_tokens(folders, chat):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf, exported = folders
    tokenizer, model = AutoTokenizer.from_pretrained(hf), AutoModelForCausalLM.from_pretrained(hf).eval()
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": PROMPT}], add_generation_prompt=True,
                                            return_tensors="pt", return_dict=True)["input_ids"]
    else:
        ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    with torch.no_grad():
        want = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    got = generate(exported, PROMPT, 24, chat=chat)
    assert got.prompt_tokens == ids.shape[1]
    assert list(got.tokens) == want[0, ids.shape[1]:].tolist()


def test_a_folder_without_a_chat_template_reads_the_raw_prompt(exported, tmp_path):
    bare = shutil.copytree(exported, tmp_path / "bare")
    (bare / "chat_template.jinja").unlink()
    assert generate(bare, PROMPT, 8).tokens == generate(exported, PROMPT, 8, chat=False).tokens
    assert generate(exported, PROMPT, 8).tokens != generate(exported, PROMPT, 8, chat=False).tokens


def test_threads_do_not_change_the_answer(exported):
    assert generate(exported, PROMPT, 8, threads=1).tokens == generate(exported, PROMPT, 8, threads=2).tokens


def test_bad_input_raises_user_error_before_loading(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        next(generate_stream(tmp_path / "missing", PROMPT, 4))  # a generator checks on its first piece


@pytest.mark.parametrize("case, needle", [
    ("missing", "does not exist"),
    ("not-exported", "not an exported LLM folder (no genai_config.json): run distill-and-export --task causal-lm"),
    ("empty-prompt", "the prompt is empty"),
    ("no-new-tokens", "--max-new-tokens must be at least 1, got 0"),
    ("no-threads", "--threads must be at least 1, got 0"),
    ("too-long", "but the model's context holds 256"),
])
def test_bad_input_is_one_line_and_exit_2(exported, tmp_path, case, needle):
    folder, prompt, extra = str(exported), PROMPT, []
    if case == "missing":
        folder = str(tmp_path / "missing")
    elif case == "not-exported":
        folder = str(tmp_path)
    elif case == "empty-prompt":
        prompt = " "
    elif case == "no-new-tokens":
        extra = ["--max-new-tokens", "0"]
    elif case == "no-threads":
        extra = ["--threads", "0"]
    elif case == "too-long":
        prompt = "the market rose " * 100
    proc = cli("generate", folder, prompt, *extra)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], proc.stderr
