"""The TF-IDF + logistic-regression baseline: fitted on the run's split, refused when its file changed, measured by
the benchmark in its own process like any variant."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compresskit.artifacts import UserError, read_json
from compresskit.run import RunLayout
from compresskit.tasks.classification.baseline import (
    MODEL_FILE,
    RECORD_FILE,
    TfidfConfig,
    fit_baseline,
    fit_tfidf,
    load_baseline,
)
from compresskit.tasks.classification.bench import BenchConfig, bench, discover_variants
from compresskit.tasks.classification.data import read_split
from compresskit.variants import Variant


def test_fit_picks_c_on_validation_and_learns_the_topics(tiny_data: Path) -> None:
    train, val = read_split(tiny_data, "train"), read_split(tiny_data, "validation")
    fit = fit_tfidf(TfidfConfig(c_grid=(0.001, 10.0)), *train, *val)
    # the topic words give the label away: a linear model on them must beat chance (1/3) by far
    assert fit.validation_accuracy is not None and fit.validation_accuracy >= 0.9
    # the topics are separable at any C here, so both tie on validation and the first C is kept
    assert fit.c == 0.001 and fit_tfidf(TfidfConfig(c_grid=(10.0, 0.001)), *train, *val).c == 10.0
    test_texts, test_ids = read_split(tiny_data, "test")
    assert fit.model.score(test_texts, test_ids) >= 0.9


def test_bad_settings_are_one_line() -> None:
    with pytest.raises(UserError, match="positive C"):
        TfidfConfig(c_grid=(0.0,))


def test_fitted_folder_is_recorded_and_a_replaced_file_is_refused(tiny_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "baseline"
    record = fit_baseline(TfidfConfig(), tiny_data, out)
    assert (out / MODEL_FILE).is_file() and read_json(out / RECORD_FILE)["parameters"] == record["parameters"] > 0
    assert load_baseline(out).predict(["bank market price share"]).shape == (1,)
    data = (out / MODEL_FILE).read_bytes()
    (out / MODEL_FILE).write_bytes(data[: len(data) // 2])  # an interrupted copy
    with pytest.raises(UserError, match="truncated or replaced"):
        load_baseline(out)


def test_bench_measures_the_baseline_in_its_own_process(tiny_classifier: Path, tiny_data: Path,
                                                        tmp_path: Path) -> None:
    folder = tmp_path / "baseline"
    fit_baseline(TfidfConfig(), tiny_data, folder)
    variants = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", tiny_classifier),
                Variant("baseline-tfidf", "baseline", "sklearn", "fp64", folder, 7)]
    cfg = BenchConfig(batch_sizes=(1, 4), sequence_length=16, warmup=1, min_iterations=3, min_seconds=0.0, rounds=2)
    result = bench(cfg, variants, tiny_data, tmp_path / "bench")
    row = {v["name"]: v for v in result.variants}["baseline-tfidf"]
    texts, gold = read_split(tiny_data, "test")
    want = load_baseline(folder).predict(texts)
    assert row["accuracy"] == pytest.approx(float((want == gold).mean()))
    assert row["accuracy"] >= 0.9 and row["size_mb"] > 0
    assert set(row["latency_ms"]) == {"batch_1", "batch_4"} and row["latency_ms"]["batch_1"]["p50"] > 0
    raw = json.loads((tmp_path / "bench" / "baseline-tfidf.result.json").read_text())
    assert raw["torch_imported"] is False  # its peak memory is the baseline's own
    # compare resamples the raw timed runs for its latency interval: the baseline row carries them like any variant
    assert len(row["latency_samples_ms"]["batch_4"]) == row["latency_ms"]["batch_4"]["iterations"] >= 3
    # …and a second round's process timed it again, predicting nothing (the predictions are round 1's)
    assert len(row["latency_rounds_ms"]["batch_4"]) == 2
    assert json.loads((tmp_path / "bench" / "baseline-tfidf.round2.result.json").read_text())["predictions"] is None


def test_run_folder_lists_the_baseline(tiny_classifier: Path, tiny_data: Path, tmp_path: Path) -> None:
    layout = RunLayout(tmp_path / "run")
    shutil.copytree(tiny_classifier, layout.teacher)
    assert "baseline-tfidf" not in [v.name for v in discover_variants(layout)]
    fit_baseline(TfidfConfig(), tiny_data, layout.baseline)
    found = {v.name: v for v in discover_variants(layout)}
    assert found["baseline-tfidf"].model == "baseline" and found["baseline-tfidf"].parameters > 0
