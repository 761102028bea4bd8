"""Benchmark: does the default student LLM decode >= 8x as many tokens/s as its teacher in PyTorch and >= 2x as many
as the teacher's own int4 ONNX Runtime GenAI build, near the memory-bandwidth limit, and at least as fast as the
same student built by the GenAI builder itself?

    python benchmarks/lm_generation.py [--run-dir export/bbc-news-smollm2-135m-instruct-lm]

Runs `compresskit distill-and-export --task causal-lm` first when the folder has no report. Builds the peer: the
same distilled student through ONNX Runtime GenAI's builder at int4 with its defaults (every MatMul at 4 bits, the
LM head included, block 32, accuracy level 4). Then measures, side by side in one run and each in its own process
(the pipeline's bench stage): the teacher in PyTorch and as its int4 graph, the student in PyTorch and as the
chosen fp32, int8 and int4 graphs, and the peer. Each graph's top-1 agreement with the student's fp32 graph
(teacher-forced on the validation answers, as the quantize stage judges) is measured too. Besides the int4 graph
the run chose under its own budget, compresskit's quantize stage is run once more with the peer's own quality as
the budget (its agreement and perplexity ratio): the graph compresskit picks when asked for what the peer gives,
which is the like-for-like comparison of speed. Prints Markdown with ratios, the machine and
versions; writes ``<run>/generation-benchmark.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from compresskit.artifacts import read_json, write_json
from compresskit.machine import default_threads, library_versions
from compresskit.run import RunLayout
from compresskit.tasks.causal_lm.bench import LMBenchConfig, bench_lm
from compresskit.tasks.causal_lm.onnx_build import GenAIBuild, build_genai
from compresskit.tasks.causal_lm.quantize import LMQuantizeConfig, answer_examples, answer_scores, judge, quantize_lm
from compresskit.tasks.causal_lm.task import lm_variants
from compresskit.variants import Variant


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("export/bbc-news-smollm2-135m-instruct-lm"))
    ap.add_argument("--rounds", type=int, default=None,
                    help="processes each variant's speed is measured in, interleaved (default: the run's, else "
                         f"{LMBenchConfig.rounds})")
    args = ap.parse_args()
    layout = RunLayout(args.run_dir)
    started = time.time()
    if not (layout.root / "report.json").is_file():
        print(f"no finished run in {layout.root}: running the default causal-LM pipeline", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "compresskit", "distill-and-export", "--task", "causal-lm",
                        "--output-root", str(layout.root.parent), "--run-name", layout.root.name], check=True)
    teacher_dir = layout.recorded_teacher()
    peer_dir = layout.onnx("peer-genai-int4")
    if not (peer_dir / "build.json").is_file():
        build_genai(layout.student, peer_dir, GenAIBuild(precision="int4", exclude=()), layout.root.parent / ".cache")
    variants = lm_variants(layout, teacher_dir)
    params = next(v.parameters for v in variants if v.name == "student-pytorch")
    variants.append(Variant("peer-genai-int4", "student", "onnx", "int4", peer_dir, params))

    threads = default_threads()
    examples = answer_examples(layout.student, layout.data, LMQuantizeConfig.examples)
    reference = answer_scores(layout.onnx("student"), examples, threads)
    peer = judge(peer_dir, reference, examples, threads, LMQuantizeConfig())
    # compresskit's quantize stage asked for the peer's quality: the first rung of its ladder that keeps at least the
    # peer's agreement and no more than its perplexity ratio
    saved = read_json(layout.onnx("student-int4") / "quantize.json")["config"]
    run_cfg = LMQuantizeConfig(**{k: tuple(x) if isinstance(x, list) else x for k, x in saved.items()})
    at_peer = dataclasses.replace(run_cfg, precisions=("int4",), min_agreement=peer["agreement"],
                                  max_perplexity_ratio=peer["perplexity_ratio"], teacher_int4=False)
    record = quantize_lm(at_peer, layout.student, layout.onnx("student"), layout.data, layout.root / "onnx",
                         layout.root.parent / ".cache", threads, name="student-at-peer-quality",
                         scores={"examples": examples, "reference": reference})["int4"]
    variants.append(Variant("student-onnx-int4-at-peer-quality", "student", "onnx", "int4",
                            layout.onnx("student-at-peer-quality-int4"), params))
    agreement = {v.name: peer["agreement"] if v.path == peer_dir else
                 judge(Path(v.path), reference, examples, threads, LMQuantizeConfig())["agreement"]
                 for v in variants if v.format == "onnx" and v.model == "student"}

    cfg = LMBenchConfig(**{k: tuple(x) if isinstance(x, list) else x
                           for k, x in read_json(layout.bench / "bench_record.json")["config"].items()})
    if args.rounds is not None:
        cfg = dataclasses.replace(cfg, rounds=args.rounds)
    with tempfile.TemporaryDirectory() as tmp:
        result = bench_lm(cfg, variants, layout.data, Path(tmp) / "bench").to_dict()
    rows = {r["name"]: r for r in result["variants"]}

    def tps(name: str) -> float:
        return rows[name]["generation"]["decode_tokens_per_s"]

    # the at-peer-quality graph is outside the run's budget: the best variant is chosen among what the run ships
    students = [n for n in rows if n.startswith("student-onnx") and "at-peer" not in n or n == "student-pytorch"]
    best = max(students, key=tps)
    machine = result["machine"]
    bw = machine.get("memory_bandwidth", {}).get("gb_per_s")
    passes = ", ".join(f"{x:.1f}" for x in machine.get("memory_bandwidth", {}).get("passes_gb_per_s", []))
    copies = ", ".join(f"{x:.1f}" for x in machine.get("memory_bandwidth", {}).get("passes_copy_gb_per_s", []))
    lines = [f"### Student LLM generation, batch 1, {cfg.decode_tokens} new tokens, {result['threads']} threads, "
             f"{cfg.rounds} rounds (each variant's speed in {cfg.rounds} processes, interleaved; decode steps pooled)",
             "", f"Machine: {machine.get('cpu')}, memory bandwidth {bw:.1f} GB/s "
             f"({machine['memory_bandwidth']['method']}; passes {passes} GB/s; copy {copies} GB/s read + write); "
             f"onnxruntime {library_versions().get('onnxruntime')}, onnxruntime-genai "
             f"{library_versions().get('onnxruntime-genai')}", "",
             "| variant | size MB | perplexity | top-1 agr. with teacher | agr. with student fp32 graph | "
             "TTFT@128 p50 ms | decode tok/s (each round) | p50 ms/token | batch 8 tok/s | × teacher PyTorch | "
             "× teacher int4 | bandwidth use (of read; of copy) | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        g, q, b = r["generation"], r["quality"], r.get("bandwidth") or {}
        ttft = (g["ttft_ms"].get("prompt_128") or {}).get("p50")
        lines.append(
            f"| {name} | {r['size_mb']:.0f} | {q['perplexity']:.1f} | {q['top1_agreement']:.3f} | "
            f"{agreement[name]:.3f} | " if name in agreement else
            f"| {name} | {r['size_mb']:.0f} | {q['perplexity']:.1f} | {q['top1_agreement']:.3f} | – | ")
        per_round = ", ".join(f"{x:.0f}" for x in g.get("decode_rounds_tokens_per_s", []))
        lines[-1] += (f"{ttft:.1f} | {g['decode_tokens_per_s']:.1f} ({per_round}) | "
                      f"{g['decode_ms_per_token']['p50']:.2f} | "
                      f"{g.get('batch8_tokens_per_s', float('nan')):.1f} | {tps(name) / tps('teacher-pytorch'):.2f} | "
                      f"{tps(name) / tps('teacher-onnx-int4'):.2f} | "
                      f"{_share(b)} | "
                      f"{r['peak_rss_mb']:.0f} |")
    def ms(name: str) -> float:
        return rows[name]["generation"]["decode_ms_per_token"]["p50"]

    run_int4 = read_json(layout.onnx("student-int4") / "quantize.json")
    lines += ["", f"- Best student variant: {best}, {tps(best) / tps('teacher-pytorch'):.2f}× the teacher in PyTorch "
              f"(goal ≥ 8×), {tps(best) / tps('teacher-onnx-int4'):.2f}× the teacher's int4 graph (goal ≥ 2×)."]
    for ours, budget, rec in (("student-onnx-int4-at-peer-quality", "the peer's own quality as the budget", record),
                              ("student-onnx-int4", "the run's budget", run_int4)):
        chosen = rec["chosen"]
        int8, full = (", ".join(chosen[k]) or "none" for k in ("int8_groups", "full_precision_groups"))
        lines.append(f"- Peer, {budget}: compresskit's int4 graph (build {len(rec['attempts'])} of its ladder: 8 bits "
                     f"{int8}; float {full}) "
                     f"at {ms(ours) / ms('peer-genai-int4'):.2f}× the GenAI builder's default int4 per-token p50 "
                     f"latency (goal ≤ 1.0×), agreement with the fp32 graph {agreement[ours]:.3f} against "
                     f"{agreement['peer-genai-int4']:.3f}.")
    text = "\n".join(lines)
    print(text)
    write_json(layout.root / "generation-benchmark.json", {
        "machine": machine, "versions": library_versions(), "seconds": time.time() - started,
        "agreement_with_fp32_graph": agreement, "peer_quality": peer, "at_peer_quality": record,
        "variants": rows, "markdown": text})


def _share(b: dict) -> str:
    """A decoder's bandwidth use as 'GB/s, share of the read limit; share of the copy'."""
    if not b.get("fraction_of_limit"):
        return "–"
    copy = f"; {b['fraction_of_copy']:.0%}" if b.get("fraction_of_copy") else ""
    return f"{b['gb_per_s']:.1f} GB/s, {b['fraction_of_limit']:.0%}{copy}"


if __name__ == "__main__":
    main()
