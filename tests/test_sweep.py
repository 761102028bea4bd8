import json

import pytest

from compresskit.artifacts import UserError
from compresskit.tasks.classification.bench import BenchConfig
from compresskit.tasks.classification.distill import DistillConfig
from compresskit.tasks.classification.sweep import SweepConfig, grid, sweep
from compresskit.training import TrainConfig


def test_grid_runs_the_hard_label_ablation_once_per_student():
    points = grid(SweepConfig(students=("0", "0,1"), temperatures=(1.0, 4.0), alphas=(0.0, 0.5)))
    assert points == [("0", None, 0.0), ("0", 1.0, 0.5), ("0", 4.0, 0.5),
                      ("0,1", None, 0.0), ("0,1", 1.0, 0.5), ("0,1", 4.0, 0.5)]


def test_bad_grid_names_the_flag():
    with pytest.raises(UserError, match="--temperatures"):
        SweepConfig(temperatures=(0.0,))
    with pytest.raises(UserError, match="--alphas"):
        SweepConfig(alphas=(1.5,))


def test_sweep_reports_every_point_with_ci_latency_and_a_comparison(tmp_path, tiny_teacher, tiny_data):
    base = DistillConfig(train=TrainConfig(epochs=10, learning_rate=2e-3, max_length=32, device="cpu", batch_size=8))
    cfg = SweepConfig(students=("0", "shape:layers=1,hidden=16,heads=2,intermediate=32"), temperatures=(2.0,),
                      alphas=(0.0, 0.5), n_boot=200)
    bench_cfg = BenchConfig(batch_sizes=(1,), sequence_length=32, warmup=1, min_iterations=3, min_seconds=0, rounds=1,
                            threads=1)
    result = sweep(cfg, base, tiny_teacher, tiny_data, tmp_path / "sw", bench_cfg, tmp_path / "cache")
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"teacher", "S[0]-hard", "S[0]-T2-a0.5", "S[layers1-hidden16-heads2-intermediate32]-hard",
                         "S[layers1-hidden16-heads2-intermediate32]-T2-a0.5"}
    for r in rows.values():
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"]
        assert r["latency_ms_p50"] > 0
    assert rows["S[layers1-hidden16-heads2-intermediate32]-hard"]["hidden_size"] == 16
    assert len(result["comparisons"]) == 2
    assert {"diff", "low", "high", "p_a_not_better"} <= set(result["comparisons"][0])
    for kind in ("json", "png", "markdown", "html"):
        assert result["paths"][kind].is_file()
    assert not list((tmp_path / "sw" / "points").glob("*/student")), "weights are not kept by default"
    # a rerun reuses every finished point instead of training again
    before = json.loads((tmp_path / "sw" / "points" / "S[0]-hard" / "point.json").read_text())
    again = sweep(cfg, base, tiny_teacher, tiny_data, tmp_path / "sw", bench_cfg, tmp_path / "cache")
    assert json.loads((tmp_path / "sw" / "points" / "S[0]-hard" / "point.json").read_text()) == before
    assert [r["name"] for r in again["rows"]] == [r["name"] for r in result["rows"]]
