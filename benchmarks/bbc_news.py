"""Benchmark: on BBC News, does the distilled student keep >= 97 % of the teacher's accuracy and run >= 6x faster
than the teacher in PyTorch at batch 1, sequence 128?

    python benchmarks/bbc_news.py [--run-dir export/bbc-news-all-minilm-l6-v2] [--rounds 3]

Runs the default pipeline when the run folder has no report yet, then measures every variant ``--rounds`` times
(each round benchmarks all variants one after another, each in a fresh process) and reports, per variant, the
median over rounds of its p50 latency, so that a noisy neighbour in one round does not decide the ratio. Prints a
Markdown table of ratios against teacher-pytorch measured in the same run, with the machine and versions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compresskit.machine import library_versions, machine_info
from compresskit.run import RunLayout
from compresskit.tasks.classification.bench import BenchConfig, bench, discover_variants


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("export/bbc-news-all-minilm-l6-v2"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    args = ap.parse_args()

    layout = RunLayout(args.run_dir)
    pipeline_seconds = None
    if not (layout.root / "report.json").is_file():
        print(f"no finished run in {layout.root}: running `compresskit distill-and-export`", file=sys.stderr)
        started = time.time()
        subprocess.run([sys.executable, "-m", "compresskit", "distill-and-export", "--output-root",
                        str(layout.root.parent), "--run-name", layout.root.name], check=True)
        pipeline_seconds = time.time() - started

    cfg = BenchConfig(batch_sizes=(1, 32), sequence_length=128, min_seconds=args.min_seconds)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr)
            rounds.append(bench(cfg, discover_variants(layout), layout.data, Path(tmp) / f"round{r}"))
    names = [v["name"] for v in rounds[0]["variants"]]
    by_name = {n: [next(v for v in rd["variants"] if v["name"] == n) for rd in rounds] for n in names}

    def median(n: str, batch: str) -> float:
        return statistics.median(v["latency_ms"][batch]["p50"] for v in by_name[n])

    teacher = by_name["teacher-pytorch"][0]
    t1, t32 = median("teacher-pytorch", "batch_1"), median("teacher-pytorch", "batch_32")
    print(f"\n### BBC News, batch 1 and 32, sequence 128, {rounds[0]['threads']} threads, "
          f"median of {args.rounds} rounds\n")
    print("| variant | accuracy | of teacher's accuracy | agreement | p50 @1 (ms) | speed-up @1 | p50 @32 (ms) "
          "| speed-up @32 | peak RSS (MB) | size (MB) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        v = by_name[n][0]
        m1, m32 = median(n, "batch_1"), median(n, "batch_32")
        print(f"| {n} | {v['accuracy']:.4f} | {v['accuracy'] / teacher['accuracy']:.2%} | "
              f"{v['agreement_with_teacher']:.2%} | {m1:.2f} | {t1 / m1:.2f}× | {m32:.1f} | {t32 / m32:.2f}× | "
              f"{statistics.median(x['peak_rss_mb'] for x in by_name[n]):.0f} | {v['size_mb']:.1f} |")
    students = [n for n in names if n.startswith("student")]
    best = min(students, key=lambda n: median(n, "batch_1"))
    retention = by_name[best][0]["accuracy"] / teacher["accuracy"]
    print(f"\nbest student at batch 1: {best}: {t1 / median(best, 'batch_1'):.2f}× faster than teacher-pytorch "
          f"(goal >= 6×), {retention:.2%} of its accuracy (goal >= 97 %)")
    print(f"\nmachine: {json.dumps(machine_info(rounds[0]['threads']))}")
    print(f"versions: {json.dumps(library_versions())}")
    if pipeline_seconds:
        print(f"pipeline wall time (this invocation): {pipeline_seconds:.0f} s")


if __name__ == "__main__":
    main()
