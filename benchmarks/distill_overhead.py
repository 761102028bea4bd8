"""Benchmark: what does distillation cost over plain hard-label training of the same student?

    python benchmarks/distill_overhead.py [--run-dir export/bbc-news-all-minilm-l6-v2] [--epochs 3]

Trains the same 2-layer student (teacher layers 0,5) on the same data for the same epochs three times, one after
another in this process: plain hard-label training (α = 0, the teacher is never run), distillation with a cold
teacher-logit cache (the teacher runs once over the training split), and distillation with the cache warm (a
rerun or a sweep). Goal: distil wall time / plain wall time <= 1.15.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from compresskit.machine import library_versions, machine_info
from compresskit.tasks.classification.distill import DistillConfig, distill
from compresskit.training import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("export/bbc-news-all-minilm-l6-v2"))
    ap.add_argument("--epochs", type=float, default=3.0)
    args = ap.parse_args()
    teacher, data = args.run_dir / "teacher", args.run_dir / "data"
    if not (teacher / "config.json").is_file():
        raise SystemExit(f"{teacher} is missing: run `compresskit distill-and-export` first")
    train = TrainConfig(epochs=args.epochs, learning_rate=1e-4, device="cpu")
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for name, alpha, cache in (("plain (α=0)", 0.0, "c1"), ("distil, cold cache", 0.5, "c2"),
                                   ("distil, warm cache", 0.5, "c2")):
            out = work / name.replace(" ", "_").replace(",", "")
            started = time.perf_counter()
            r = distill(DistillConfig(alpha=alpha, train=train), teacher, data, out, work / cache)
            times[name] = (time.perf_counter() - started, r.validation_accuracy)
            shutil.rmtree(out)
    plain = times["plain (α=0)"][0]
    print(f"\n### Distillation overhead: 2-layer student, BBC News train split, {args.epochs:g} epochs, CPU\n")
    print("| run | wall time (s) | ratio to plain | validation accuracy |")
    print("|---|---:|---:|---:|")
    for name, (seconds, acc) in times.items():
        print(f"| {name} | {seconds:.1f} | {seconds / plain:.3f} | {acc:.4f} |")
    print(f"\nmachine: {json.dumps(machine_info())}\nversions: {json.dumps(library_versions())}")


if __name__ == "__main__":
    main()
