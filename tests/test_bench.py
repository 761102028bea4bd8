import json
import subprocess
import sys

import numpy as np
import pytest

from compresskit.artifacts import UserError
from compresskit.tasks.classification.bench import BenchConfig, Variant, bench, macro_f1
from compresskit.timing import Latency


def test_latency_percentiles():
    lat = Latency.from_samples([float(x) for x in range(1, 101)])
    assert lat.mean == pytest.approx(50.5)
    assert lat.p50 == pytest.approx(50.5)
    assert lat.p90 == pytest.approx(90.1)
    assert lat.p99 == pytest.approx(99.01)
    assert lat.iterations == 100


def test_macro_f1_by_hand():
    gold = np.array([0, 0, 1, 1, 2])
    pred = np.array([0, 1, 1, 1, 0])
    # class 0: tp1 fp1 fn1 → 0.5; class 1: tp2 fp1 fn0 → 0.8; class 2: tp0 fn1 → 0
    assert macro_f1(pred, gold, 3) == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_batch_one_is_always_measured():
    assert BenchConfig(batch_sizes=(8,)).sizes == (1, 8)
    with pytest.raises(UserError, match="--batch-sizes"):
        BenchConfig(batch_sizes=(0,))


def test_bench_measures_each_variant_in_its_own_process(tmp_path, tiny_classifier, tiny_onnx, tiny_data):
    cfg = BenchConfig(batch_sizes=(1, 4), sequence_length=32, warmup=1, min_iterations=3, min_seconds=0, threads=1,
                      rounds=2)
    variants = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", tiny_classifier, 1000),
                Variant("teacher-onnx", "teacher", "onnx", "fp32", tiny_onnx, 1000)]
    result = bench(cfg, variants, tiny_data, tmp_path / "bench")
    rows = {r["name"]: r for r in result["variants"]}
    assert set(rows) == {"teacher-pytorch", "teacher-onnx"}
    # the same model in two runtimes: identical predictions on identical inputs
    assert rows["teacher-onnx"]["agreement_with_teacher"] == 1.0
    assert rows["teacher-onnx"]["accuracy"] == rows["teacher-pytorch"]["accuracy"]
    for r in rows.values():
        assert set(r["latency_ms"]) == {"batch_1", "batch_4"}
        # two rounds, two processes: 3 timed runs split as 2 + 2, pooled; each round's own p50 kept, in order
        assert r["latency_ms"]["batch_1"]["iterations"] == len(r["latency_samples_ms"]["batch_1"]) == 4
        assert [len(x) for x in r["latency_rounds_ms"].values()] == [2, 2]
        assert r["latency_rounds_ms"]["batch_1"][0] == pytest.approx(np.median(r["latency_samples_ms"]["batch_1"][:2]))
        assert 0 < r["latency_ms"]["batch_1"]["p50"] <= r["latency_ms"]["batch_1"]["p99"]
        assert r["peak_rss_mb"] > 10 and r["size_mb"] > 0
        # without --seq-lengths the workload cells are the batch sizes at the one sequence length
        assert [(c["batch"], c["sequence_length"]) for c in r["workloads"]] == [(1, 32), (4, 32)]
        assert r["workloads"][1]["latency_ms"] == r["latency_ms"]["batch_4"] and r["workloads"][1]["rounds"] == 2
    # an ONNX worker never imports torch, so its memory is its own: far below a torch process
    assert rows["teacher-onnx"]["peak_rss_mb"] < rows["teacher-pytorch"]["peak_rss_mb"]
    saved = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert saved["test_samples"] == 24 and saved["machine"]["threads"] == 1
    assert saved["seq_lengths"] == [32] and saved["skipped"] == []
    # the later round's process wrote its own result, beside round 1's
    assert (tmp_path / "bench" / "teacher-onnx.round2.result.json").is_file()


def test_onnx_worker_does_not_import_torch(tmp_path, tiny_onnx, tiny_data):
    from compresskit.artifacts import write_json
    from compresskit.tasks.classification.bench import write_inputs

    inputs = tmp_path / "inputs.npz"
    write_inputs(BenchConfig(sequence_length=32), tiny_data, tiny_onnx, ["money", "sport", "tech"], inputs)
    spec = tmp_path / "spec.json"
    write_json(spec, {"variant": {"name": "x", "format": "onnx", "path": str(tiny_onnx)},
                      "config": {"device": "cpu", "batch_sizes": [1], "warmup": 0, "min_iterations": 2,
                                 "min_seconds": 0}, "inputs": str(inputs), "threads": 1})
    subprocess.run([sys.executable, "-m", "compresskit.tasks.classification.bench_worker", str(spec),
                    str(tmp_path / "r.json")], check=True)
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["torch_imported"] is False
    assert len(result["predictions"]) == 24


def test_gpu_provider_missing_is_a_clear_error():
    import onnxruntime as ort

    from compresskit.onnx.sessions import providers_for

    assert providers_for("cpu") == ["CPUExecutionProvider"]
    assert providers_for("auto")[-1] == "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="onnxruntime-gpu"):
            providers_for("cuda")
    with pytest.raises(UserError, match="--provider"):
        providers_for("npu")


def test_rounds_split_the_timing_budget_and_are_checked():
    cfg = BenchConfig(min_iterations=30, min_seconds=3.0, rounds=4)
    assert (cfg.per_round().min_iterations, cfg.per_round().min_seconds) == (8, 0.75)
    for bad in (0, 51, 2.5, True):
        with pytest.raises(UserError, match="--rounds"):
            BenchConfig(rounds=bad)
