"""The classical baseline every classification report carries: TF-IDF + logistic regression on the same split.

Why: "the student keeps 100 % of the teacher" means little when the teacher is below a linear model that trains in
seconds. The baseline is fitted on the run's training split (its regularisation C chosen on validation), saved
beside the models in ``<run>/baseline/``, and measured by the benchmark like any variant, in its own process:
``python -m compresskit.tasks.classification.baseline SPEC RESULT``
predicts the test texts and times batches of raw text (the time
includes vectorising, which is the baseline's tokeniser).

No torch here: the worker's peak memory is the baseline's own.
"""

from __future__ import annotations

import json
import pickle
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import (
    UserError,
    atomic_dir,
    sha256_file,
    stage_record,
    write_json,
)
from compresskit.tasks.classification.data import data_manifest, read_labels, read_split

MODEL_FILE = "model.pkl"
RECORD_FILE = "baseline.json"
VARIANT = "baseline-tfidf"


@dataclass(frozen=True)
class TfidfConfig:
    """Settings of the TF-IDF + logistic-regression baseline (Python API; the CLI uses the defaults)."""

    ngram_max: int = 2
    """Word n-grams from 1 to this length."""
    min_df: int = 2
    """Leave out n-grams seen in fewer training documents (most bigrams occur once and only add size)."""
    sublinear_tf: bool = True
    """1 + log(tf) instead of raw counts: long articles do not drown short ones."""
    c_grid: tuple[float, ...] = (1.0, 10.0, 100.0)
    """Inverse regularisation strengths tried; the best on validation is kept."""

    def __post_init__(self) -> None:
        if self.ngram_max < 1 or self.min_df < 1 or not self.c_grid or any(c <= 0 for c in self.c_grid):
            raise UserError("the TF-IDF baseline needs ngram_max >= 1, min_df >= 1 and positive C values")


@dataclass(frozen=True)
class TfidfFit:
    """A fitted baseline: the scikit-learn pipeline, its C and validation accuracy."""

    model: Any
    c: float
    validation_accuracy: float | None


def fit_tfidf(cfg: TfidfConfig, train_texts: list[str], train_ids: list[int], val_texts: list[str],
              val_ids: list[int]) -> TfidfFit:
    """Fit one pipeline per C on the training texts; keep the one with the best validation accuracy (the first
    on ties; the first C without a validation split)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(set(train_ids)) < 2:
        raise UserError("the TF-IDF baseline needs at least two labels in the training split")
    best: TfidfFit | None = None
    for c in cfg.c_grid:
        model = make_pipeline(
            TfidfVectorizer(ngram_range=(1, cfg.ngram_max), min_df=min(cfg.min_df, len(train_texts)),
                            sublinear_tf=cfg.sublinear_tf),
            LogisticRegression(C=c, max_iter=2000))
        model.fit(train_texts, train_ids)
        score = float(model.score(val_texts, val_ids)) if val_texts else None
        if best is None or (score is not None and best.validation_accuracy is not None
                            and score > best.validation_accuracy):
            best = TfidfFit(model, c, score)
        if score is None:
            break
    assert best is not None  # c_grid is non-empty
    return best


def parameter_count(model: Any) -> int:
    """Learned numbers of a fitted pipeline: the logistic regression's weights and biases plus one IDF weight per
    vocabulary entry."""
    vectorizer, classifier = model.steps[0][1], model.steps[-1][1]
    return int(classifier.coef_.size + classifier.intercept_.size + vectorizer.idf_.size)


def fit_baseline(cfg: TfidfConfig, data_dir: Path, out: Path) -> dict[str, Any]:
    """Fit the baseline on ``data_dir``'s training split and write ``out/model.pkl`` and ``out/baseline.json``
    (atomically: a killed fit leaves no folder). Label ids follow ``labels.json``, the run's label order."""
    started = time.time()
    train = read_split(data_dir, "train")
    val = read_split(data_dir, "validation")
    fit = fit_tfidf(cfg, *train, *val)
    with atomic_dir(out) as tmp:
        with open(tmp / MODEL_FILE, "wb") as f:
            pickle.dump(fit.model, f, protocol=pickle.HIGHEST_PROTOCOL)
        record = stage_record("baseline", asdict(cfg), {"data": str(data_dir),
                                                         "data_sha256": data_manifest(data_dir)["sha256"]},
                              started, labels=read_labels(data_dir), c=fit.c,
                              validation_accuracy=fit.validation_accuracy, parameters=parameter_count(fit.model),
                              model_sha256=sha256_file(tmp / MODEL_FILE))
        write_json(tmp / RECORD_FILE, record)
    return record


def load_baseline(folder: Path) -> Any:
    """The fitted pipeline in ``folder``, after checking it is the file ``baseline.json`` recorded.

    Why the hash: unpickling runs code from the file, so only the file this run wrote (and whose hash it recorded
    beside it) is loaded; a truncated or replaced file is refused instead."""
    model_file, record_file = folder / MODEL_FILE, folder / RECORD_FILE
    if not model_file.is_file() or not record_file.is_file():
        raise UserError(f"{folder} holds no fitted baseline ({MODEL_FILE} and {RECORD_FILE})")
    want = json.loads(record_file.read_text(encoding="utf-8")).get("model_sha256")
    if want != sha256_file(model_file):
        raise UserError(f"{model_file} is not the file {RECORD_FILE} recorded (truncated or replaced): "
                        f"delete {folder} and run again")
    with open(model_file, "rb") as f:
        return pickle.load(f)


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """The benchmark worker (``compresskit.bench.worker_main``): predict the test split's texts, time each batch
    size, record peak memory."""
    from compresskit.machine import peak_rss_mb
    from compresskit.timing import Latency, time_runs

    v, cfg = spec["variant"], spec["config"]
    data_dir = Path(spec["data"])
    texts, _ = read_split(data_dir, "test")
    limit = cfg.get("max_samples")
    texts = texts[:limit] if limit else texts
    # The baseline predicts ids in labels.json's order; the bench scores in the reference head's order.
    names, head = read_labels(data_dir), {n: i for i, n in enumerate(spec.get("labels_order") or read_labels(data_dir))}
    t0 = time.perf_counter()
    model = load_baseline(Path(v["path"]))
    load_seconds = time.perf_counter() - t0
    # a later benchmark round only times: the predictions are round 1's
    predictions = None if spec.get("latency_only") else np.array([head.get(names[i], -1) for i in model.predict(texts)])
    latency, samples_ms = {}, {}
    for b in sorted({1, *cfg["batch_sizes"]}):
        batches = [[texts[(i * b + j) % len(texts)] for j in range(b)] for i in range(min(64, len(texts)))]
        samples = time_runs(model.predict, batches, warmup=cfg["warmup"], min_iterations=cfg["min_iterations"],
                            min_seconds=cfg["min_seconds"])
        latency[f"batch_{b}"] = Latency.from_samples(samples).__dict__
        samples_ms[f"batch_{b}"] = [round(x, 4) for x in samples]  # what compare's latency interval resamples
    return {
        "device": "cpu", "providers": [],
        "predictions": None if predictions is None else predictions.tolist(), "latency_ms": latency,
        "latency_samples_ms": samples_ms,
        "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": None, "load_seconds": round(load_seconds, 3),
        "placement": None, "torch_imported": "torch" in sys.modules}


if __name__ == "__main__":
    from compresskit.bench import worker_main

    worker_main(measure)
