"""Stage 0 of the causal-LM task: the prompts, the teacher's answers to them, and held-out text, written to disk.

The data folder holds, one JSON object per line:

- ``train.jsonl``, ``validation.jsonl``, ``test.jsonl``: instructions (``prompts.PromptExample`` fields) whose
  ``response`` is the teacher's greedy answer (generated once here, the sequence-level target and the reference the
  student's answers are compared with) or the user's own answer where the data gave one;
- ``train_text.jsonl``, ``heldout.jsonl``: ``{"id", "text"}`` article texts, for language-modelling distillation
  and for held-out perplexity;
- ``data.json``: what was made, from what, how long the teacher took (house style #3).

Articles are split before any prompt is made, so an article's text, title and prompts sit in one split only.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, atomic_dir, stage_record, write_json
from compresskit.tasks.causal_lm.prompts import BBCPromptConfig, PromptExample, read_prompt_file, read_text_files

BBC_NEWS = "bbc-news"
PROMPT_FILES = (".jsonl", ".ndjson")
TEXT_FILES = (".txt",)


@dataclass(frozen=True)
class LMDataConfig:
    """Which prompts and texts to make, and how much of them (sized for a 2-core CPU by default)."""

    dataset: str = BBC_NEWS
    """``bbc-news`` (instructions built from the embedded corpus), a JSONL prompt file (``prompt``, ``prompt`` +
    ``response``, or chat ``messages``), or a ``.txt`` file / folder of them for language-modelling distillation
    (``--dataset``)."""
    prompts: BBCPromptConfig = field(default_factory=lambda: BBCPromptConfig(max_article_words=60))
    """How BBC News becomes instructions and splits (summary, headline, section; article bodies cut short)."""
    train_prompts: int = 96
    """Training instructions the teacher answers (its answers are the sequence-level targets)."""
    test_prompts: int = 30
    """Held-out instructions the teacher answers, for ROUGE-L and agreement on its answers (stratified by kind)."""
    train_texts: int = 300
    """Training articles used as plain text for language-modelling distillation."""
    heldout_texts: int = 24
    """Held-out articles for perplexity and next-token agreement."""
    max_new_tokens: int = 48
    """Longest teacher answer, in tokens (greedy decoding)."""

    def __post_init__(self) -> None:
        problems = []
        for flag, v in (("--lm-train-prompts", self.train_prompts), ("--lm-train-texts", self.train_texts)):
            if v < 0:
                problems.append(f"{flag} must be >= 0, got {v}")
        if self.train_prompts + self.train_texts == 0:
            problems.append("--lm-train-prompts and --lm-train-texts cannot both be 0: nothing to train on")
        for flag, v in (("--lm-test-prompts", self.test_prompts), ("--lm-heldout-texts", self.heldout_texts),
                        ("--max-new-tokens", self.max_new_tokens)):
            if v < 1:
                problems.append(f"{flag} must be >= 1, got {v}")
        if problems:
            raise UserError("; ".join(problems))


@dataclass(frozen=True)
class LMData:
    """Prompts per split and article texts, before the teacher answers."""

    prompts: dict[str, list[PromptExample]]
    train_text: list[dict[str, str]]
    heldout: list[dict[str, str]]
    source: str


def _by_kind(examples: list[PromptExample], n: int) -> list[PromptExample]:
    """Up to ``n`` examples taking the kinds in turn, so every kind is represented however small ``n`` is."""
    kinds: dict[str, list[PromptExample]] = {}
    for ex in examples:
        kinds.setdefault(ex.kind, []).append(ex)
    out, queues = [], [list(v) for v in kinds.values()]
    while len(out) < n and any(queues):
        for q in queues:
            if q and len(out) < n:
                out.append(q.pop(0))
    return out


def load_lm_data(cfg: LMDataConfig, tokenizer: Any) -> LMData:
    """The prompts and texts ``cfg`` names; UserError (one line, naming file and line) on bad input."""
    if cfg.dataset == BBC_NEWS:
        from compresskit.tasks.causal_lm.prompts import article_prompts, read_bbc_articles, split_articles

        splits = split_articles(read_bbc_articles(), cfg.prompts)
        prompts = {s: [ex for a in arts for ex in article_prompts(a, tokenizer, cfg.prompts.kinds,
                                                                   cfg.prompts.max_article_words)]
                   for s, arts in splits.items()}
        text = [{"id": a.id, "text": f"{a.title}\n{a.body}"} for a in splits["train"][:cfg.train_texts]]
        heldout = [{"id": a.id, "text": f"{a.title}\n{a.body}"} for a in splits["test"][:cfg.heldout_texts]]
        return LMData({"train": _by_kind(prompts["train"], cfg.train_prompts),
                       "validation": _by_kind(prompts["validation"], max(8, cfg.test_prompts // 2)),
                       "test": _by_kind(prompts["test"], cfg.test_prompts)}, text, heldout, "BBC News instructions")
    path = Path(cfg.dataset).expanduser()
    if not path.exists():
        raise UserError(f"data set {cfg.dataset} does not exist (give bbc-news, a .jsonl prompt file, or .txt files)")
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    if all(p.suffix.lower() in TEXT_FILES for p in files):
        texts = read_text_files(files)
        n = len(texts)
        if n < 3:
            raise UserError(f"{path} holds {n} text(s); language-modelling distillation needs at least 3 "
                            "(train, held-out)")
        cut = max(1, n // 10)
        items = [{"id": f"text {i}", "text": t} for i, t in enumerate(texts)]
        return LMData({"train": [], "validation": [], "test": []}, items[cut:], items[:cut], str(path.resolve()))
    if len(files) != 1 or files[0].suffix.lower() not in PROMPT_FILES:
        raise UserError(f"{path}: give one .jsonl prompt file or .txt text files")
    examples = read_prompt_file(files[0], tokenizer)
    n = len(examples)
    if n < 10:
        raise UserError(f"{files[0]} holds {n} prompts; a train/validation/test split needs at least 10")
    cut = max(1, n // 10)
    return LMData({"train": examples[2 * cut:], "validation": examples[cut:2 * cut], "test": examples[:cut]},
                  [], [], str(files[0].resolve()))


def check_context(data: LMData, tokenizer: Any, context: int) -> None:
    """Refuse, naming it, a prompt longer than the model's context (before anything is written or generated)."""
    from compresskit.tasks.causal_lm.prompts import tokenize_example

    for examples in data.prompts.values():
        for ex in examples:
            tokenize_example(tokenizer, dataclasses.replace(ex, response=None), context, context)


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSONL file this stage wrote."""
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def read_prompts(data_dir: Path, split: str) -> list[PromptExample]:
    """The instructions of one split, with the teacher's (or the user's) answers."""
    return [PromptExample(**row) for row in read_jsonl(Path(data_dir) / f"{split}.jsonl")]


def prepare_lm_data(cfg: LMDataConfig, teacher: Any, tokenizer: Any, out: Path, data: LMData | None = None
                    ) -> dict[str, Any]:
    """Write the data folder (see the module docstring) into ``out``, the teacher answering every prompt that has
    no answer yet; returns data.json's content. ``data`` passes what ``load_lm_data`` already loaded."""
    from compresskit.tasks.causal_lm.generate import generate_responses

    started = time.time()
    data = data or load_lm_data(cfg, tokenizer)
    with atomic_dir(out) as tmp:
        answered, generated, teacher_seconds = {}, 0, 0.0
        for split, examples in data.prompts.items():
            todo = [i for i, ex in enumerate(examples) if ex.response is None]
            t0 = time.time()
            answers = generate_responses(teacher, tokenizer, [examples[i].prompt for i in todo], cfg.max_new_tokens)
            teacher_seconds += time.time() - t0
            generated += len(todo)
            by_index = dict(zip(todo, answers))
            answered[split] = [dataclasses.replace(ex, response=by_index.get(i, ex.response))
                               for i, ex in enumerate(examples)]
            _write_jsonl(tmp / f"{split}.jsonl", [dataclasses.asdict(ex) for ex in answered[split]])
        # a prompt file brings no held-out text: its test prompts with their answers stand in, as the model reads them
        heldout = data.heldout or [{"id": ex.source_id, "text": ex.prompt + (ex.response or "")}
                                   for ex in answered.get("test", [])]
        _write_jsonl(tmp / "train_text.jsonl", data.train_text)
        _write_jsonl(tmp / "heldout.jsonl", heldout)
        record = stage_record(
            "data", dataclasses.asdict(cfg), {"source": data.source}, started, task="causal-lm",
            sizes={s: len(v) for s, v in answered.items()} | {"train_text": len(data.train_text),
                                                              "heldout": len(heldout)},
            kinds={s: sorted({ex.kind for ex in v}) for s, v in answered.items()},
            teacher_answers=generated, teacher_seconds=round(teacher_seconds, 1))
        write_json(tmp / "data.json", record)
    return record
