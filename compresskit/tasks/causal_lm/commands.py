"""The causal-LM family's own command: ``generate``, a greedy answer from an exported decoder folder on ONNX Runtime
GenAI alone."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer


def add_commands(cli: Any) -> None:
    """Declare the family's commands on the app (``cli.command(name, *options)``, see ``compresskit.cli.app``)."""

    @cli.command("generate", "max_new_tokens", "chat", "threads")
    def generate_cmd(folder: Annotated[Path, typer.Argument(help="An exported LLM folder (genai_config.json, "
                                                                  "model.onnx, tokenizer.json).")],
                     prompt: Annotated[str, typer.Argument(help="The prompt to answer.")], **o: Any) -> None:
        """Stream a greedy answer from an exported decoder LLM, using ONNX Runtime GenAI alone (torch is not
        imported)."""
        from compresskit.tasks.causal_lm.onnx_generate import generate

        def show(piece: str) -> None:
            sys.stdout.write(piece)
            sys.stdout.flush()

        r = generate(folder, prompt, o["max_new_tokens"], chat=o["chat"], threads=o["threads"], on_piece=show)
        print(flush=True)
        cli.console.print(f"generate: {len(r.tokens)} tokens after a {r.prompt_tokens}-token prompt, time to first "
                          f"token {r.first_token_s * 1000:.0f} ms, decode {r.decode_tokens_per_s:.1f} tokens/s "
                          f"(load {r.load_s:.2f} s)", highlight=False, soft_wrap=True)
