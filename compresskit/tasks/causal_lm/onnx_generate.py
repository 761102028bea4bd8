"""Answer a prompt with an exported decoder LLM, using ONNX Runtime GenAI alone: torch and transformers are never
imported, so an exported folder runs where neither is installed.

An exported LLM folder is what ONNX Runtime GenAI's model builder writes: ``model.onnx`` (and ``model.onnx.data``),
``genai_config.json``, ``tokenizer.json``, ``tokenizer_config.json`` and, for a chat model, ``chat_template.jinja``.
Decoding is greedy, as the student's quality was measured (``quality``), so an answer here is the
answer the report scored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import onnxruntime_genai as og

from compresskit.artifacts import UserError

NOT_EXPORTED = ("not an exported LLM folder (no genai_config.json): run distill-and-export --task causal-lm, or "
                "python -m onnxruntime_genai.models.builder -i MODEL -o FOLDER -p fp32 -e cpu, and give its output "
                "folder")


@dataclass(frozen=True)
class Generation:
    """One greedy answer and how long it took."""

    text: str
    """The answer, decoded (the prompt and the chat template's turn markers are not part of it)."""
    tokens: tuple[int, ...]
    """The generated token ids, the end-of-sequence token included when the model produced it."""
    prompt_tokens: int
    """Tokens of the prompt as the model read it (after the chat template)."""
    load_s: float
    """Seconds to load the model and tokenizer."""
    first_token_s: float
    """Time to first token: seconds from the prompt's encoding to the first generated token (prefill included)."""
    decode_s: float
    """Seconds from the first generated token to the last."""

    @property
    def decode_tokens_per_s(self) -> float:
        """Tokens after the first per second of decoding (the first is prefill's); 0 for a one-token answer."""
        return (len(self.tokens) - 1) / self.decode_s if len(self.tokens) > 1 and self.decode_s > 0 else 0.0


def check_folder(folder: Path) -> dict:
    """The folder's ``genai_config.json``, read; a ``UserError`` when the folder is missing or is not an exported
    LLM folder."""
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist" if not folder.exists() else f"{folder} is not a folder")
    path = folder / "genai_config.json"
    if not path.is_file():
        raise UserError(f"{folder} is {NOT_EXPORTED}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}): export the model again") from None


def chat_template(folder: Path) -> str | None:
    """The folder's chat template: ``chat_template.jinja`` (what transformers 4.x saves and the builder copies), else
    ``tokenizer_config.json``'s ``chat_template`` (older saves; a list of named templates gives its ``default``);
    None when it has neither."""
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(encoding="utf-8") or None
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    try:
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return None
    if isinstance(template, list):
        template = next((t.get("template") for t in template if isinstance(t, dict) and t.get("name") == "default"),
                        None)
    return template if isinstance(template, str) and template else None


def model_text(tokenizer: og.Tokenizer, folder: Path, prompt: str, chat: bool) -> str:
    """The text the model reads: with ``chat`` and a folder that has a chat template, ``prompt`` as one user turn
    followed by the assistant's opening (``add_generation_prompt``), rendered by ONNX Runtime GenAI's own template
    engine (``Tokenizer.apply_chat_template``, no jinja2 or transformers); otherwise ``prompt`` as it is.

    The template is found here (``chat_template``) and handed over as ``template_str`` rather than left to og to
    find: og raises "Empty chat template" on a folder without one, and this way a folder with none falls back to the
    raw prompt on purpose, not by catching an error that could mean something else.
    """
    template = chat_template(folder) if chat else None
    if template is None:
        return prompt
    messages = json.dumps([{"role": "user", "content": prompt}])
    try:
        return tokenizer.apply_chat_template(messages, template_str=template, add_generation_prompt=True)
    except RuntimeError as e:
        raise UserError(f"the chat template of {folder} does not render ({_first_line(e)}): fix it, or pass "
                        "--no-chat to send the prompt as it is") from None


def load(folder: Path, threads: int | None = None) -> tuple[og.Model, og.Tokenizer, int]:
    """The folder's model, its tokenizer and its context length (tokens of prompt and answer together).

    ``threads`` sets ONNX Runtime's intra-op threads of the decoder session: og 0.18 has no setter for session
    options, so the value is overlaid on the folder's ``genai_config.json`` in memory (``Config.overlay``, the file
    is not changed); None keeps the folder's setting, or ONNX Runtime's default (the physical cores).
    """
    config = check_folder(folder)
    if threads is not None and threads < 1:
        raise UserError(f"--threads must be at least 1, got {threads}")
    context = config.get("model", {}).get("context_length")
    if not isinstance(context, int) or context < 2:
        raise UserError(f"{folder / 'genai_config.json'} has no model.context_length: export the model again")
    try:
        og_config = og.Config(str(folder))
        if threads is not None:
            og_config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        model = og.Model(og_config)
        tokenizer = og.Tokenizer(model)
    except RuntimeError as e:  # a file the config names is missing or broken: the folder is the user's input
        raise UserError(f"ONNX Runtime GenAI cannot load {folder}: {_first_line(e)}") from None
    return model, tokenizer, context


def kv_capacity(genai_config: dict, needed: int) -> int:
    """The ``max_length`` to give ONNX Runtime GenAI for a generation of ``needed`` tokens (prompt and answer).

    A builder graph with a sliding window (Gemma 2/3, some Qwen2) runs its attention kernel on a KV cache that must
    hold at least the window, and GenAI sizes a shared cache by ``max_length``: asking for only what is needed fails
    at the first token ("KV cache capacity (129) must be at least local_window_size (4096)"). Such a graph gets the
    window (at most the context); callers then stop after their own count of tokens, not at ``max_length``."""
    model = genai_config.get("model", {})
    window = (model.get("decoder", {}).get("sliding_window") or {}).get("window_size")
    shared = genai_config.get("search", {}).get("past_present_share_buffer", False)
    context = model.get("context_length") or needed
    if shared and isinstance(window, int) and window > needed:
        return max(needed, min(window, context))
    return needed


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def _check_request(prompt: str, max_new_tokens: int) -> None:
    if not prompt.strip():
        raise UserError("the prompt is empty: give the text to answer, e.g. compresskit generate FOLDER \"Hello\"")
    if max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")


def _prompt_ids(tokenizer: og.Tokenizer, folder: Path, prompt: str, chat: bool, context: int):
    """The prompt's token ids (int32 array); a ``UserError`` when they leave no room in the context."""
    ids = tokenizer.encode(model_text(tokenizer, folder, prompt, chat))
    if len(ids) >= context:
        raise UserError(f"the prompt is {len(ids)} tokens but the model's context holds {context} (context_length "
                        f"in genai_config.json), answer included: shorten the prompt")
    return ids


def _greedy(model: og.Model, tokenizer: og.Tokenizer, ids, max_new_tokens: int, context: int, config: dict
            ) -> Iterator[tuple[int, str]]:
    """Greedy decoding: each new token id with its piece of text (``""`` while a character's bytes are incomplete),
    until the end-of-sequence token, ``max_new_tokens`` or the end of the context, whichever comes first."""
    params = og.GeneratorParams(model)
    # past_present_share_buffer (the builder's default) sizes the KV cache by max_length: ask for what is needed
    # (or a sliding window's length, kv_capacity), and count the tokens here
    needed = min(len(ids) + max_new_tokens, context)
    params.set_search_options(do_sample=False, max_length=kv_capacity(config, needed))
    generator = og.Generator(model, params)
    generator.append_tokens(ids)
    stream = tokenizer.create_stream()
    for _ in range(needed - len(ids)):
        if generator.is_done():
            break
        generator.generate_next_token()
        token = int(generator.get_next_tokens()[0])
        yield token, stream.decode(token)


def generate_stream(folder: Path, prompt: str, max_new_tokens: int, chat: bool = True,
                    threads: int | None = None) -> Iterator[str]:
    """Greedy answer to ``prompt`` from the exported LLM in ``folder``, yielded in pieces of text as the tokens are
    generated (a piece is one token's text, or several tokens' when a character spans them; never empty).

    With ``chat`` and a folder that has a chat template (``chat_template.jinja`` or ``tokenizer_config.json``'s
    ``chat_template``), the prompt is one user turn of that template, opened for the assistant's answer; without a
    template, or with ``chat=False``, the model reads the raw prompt. At most ``max_new_tokens`` tokens, fewer when
    the model ends its answer or the context (``context_length``) is full. ``threads``: ONNX Runtime intra-op
    threads (see ``load``). Bad input (missing or non-exported folder, empty prompt, ``max_new_tokens`` < 1, a prompt
    that fills the context) raises ``UserError`` before anything is generated, on the first ``next`` (as any
    generator's body runs).
    """
    _check_request(prompt, max_new_tokens)
    model, tokenizer, context = load(folder, threads)
    ids = _prompt_ids(tokenizer, folder, prompt, chat, context)
    for _, piece in _greedy(model, tokenizer, ids, max_new_tokens, context, check_folder(folder)):
        if piece:
            yield piece


def generate(folder: Path, prompt: str, max_new_tokens: int, chat: bool = True, threads: int | None = None,
             on_piece: Callable[[str], None] | None = None) -> Generation:
    """``generate_stream``'s answer as one text, with its timing; ``on_piece`` sees each piece as it comes (the CLI
    prints them), so a caller can stream and still get the timing afterwards."""
    _check_request(prompt, max_new_tokens)
    start = time.perf_counter()
    model, tokenizer, context = load(folder, threads)
    loaded = time.perf_counter()
    ids = _prompt_ids(tokenizer, folder, prompt, chat, context)
    tokens: list[int] = []
    pieces: list[str] = []
    first = last = loaded
    for token, piece in _greedy(model, tokenizer, ids, max_new_tokens, context, check_folder(folder)):
        last = time.perf_counter()
        if not tokens:
            first = last
        tokens.append(token)
        if piece:
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
    return Generation(text="".join(pieces), tokens=tuple(tokens), prompt_tokens=len(ids), load_s=loaded - start,
                      first_token_s=first - loaded, decode_s=last - first)
