"""Benchmark: what does each distillation choice give a student LLM back, and what does depth cost and buy?

    python benchmarks/lm_ablation.py [--run-dir export/bbc-news-smollm2-135m-instruct-lm] [--out export/lm-ablation]
                                     [--arms sft,forward-kl,reverse-kl,on-policy,top64,top64-5x] [--depths 5,20]

Starts from a finished `compresskit distill-and-export --task causal-lm` run (made first when the folder has no
report): its data, its teacher, its pruned-untrained student and its distilled (forward-KL) student. Every arm
trains a student with the run's settings and the same teacher layers, changing one thing:

- ``sft``: α = 0, cross-entropy on the teacher's greedy answers and the text (sequence-level KD; no teacher logits)
- ``forward-kl``: the run's own student (forward KL against the live teacher)
- ``reverse-kl``: reverse KL; ``jsd``: generalized JSD with β = 0.5
- ``on-policy``: forward KL, half of the batches answered by the student itself (GKD, λ = 0.5)
- ``top64``: forward KL against an offline top-64 cache of the teacher instead of the live teacher
- ``top64-5x``: the same with five times the steps (600 by default): what a larger training budget gives back,
  at the cache's cost per step

and each depth in ``--depths`` trains a student of that many layers (chosen by block influence) as the run did.
Then every model is measured by the pipeline's own bench stage, each in its own process, on the run's held-out
data, and each arm is compared with the pruned student, the SFT student and the forward-KL student by paired
bootstrap 95 % intervals over the same held-out windows and prompts. Arms already trained are reused, so an
interrupted benchmark resumes. Prints Markdown (written to ``<out>/ablation.md``), draws the depth trade-off
(``<out>/depth.png``) and records the machine and versions (``<out>/ablation.json``).
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import read_json, write_json
from compresskit.machine import library_versions
from compresskit.tasks.causal_lm.bench import LMBenchConfig, bench_lm
from compresskit.tasks.causal_lm.distill import LMDistillConfig, distill_lm
from compresskit.tasks.causal_lm.kd_losses import LMKDConfig
from compresskit.tasks.causal_lm.quality import paired_difference
from compresskit.training import TrainConfig
from compresskit.variants import Variant

ARMS = {
    "sft": lambda c: _kd(c, alpha=0.0),
    "forward-kl": None,  # the run's own student
    "reverse-kl": lambda c: _kd(c, divergence="reverse_kl"),
    "jsd": lambda c: _kd(c, divergence="jsd", beta=0.5),
    "on-policy": lambda c: dataclasses.replace(c, on_policy_fraction=0.5),
    "top64": lambda c: dataclasses.replace(c, teacher_topk=64),
    "top64-5x": lambda c: dataclasses.replace(c, teacher_topk=64, max_steps=5 * c.max_steps),
}
REFERENCES = ("pruned", "sft", "forward-kl")
"""What each arm is compared with, pairwise."""


def _kd(cfg: LMDistillConfig, **kw: Any) -> LMDistillConfig:
    return dataclasses.replace(cfg, kd=dataclasses.replace(cfg.kd, **kw))


def run_config(record: dict[str, Any]) -> LMDistillConfig:
    """The LMDistillConfig a distill.json was made with."""
    c = dict(record["config"])
    return LMDistillConfig(**{**c, "kd": LMKDConfig(**c["kd"]), "train": TrainConfig(**c["train"])})


def _train(name: str, cfg: LMDistillConfig, teacher_dir: Path, data_dir: Path, out: Path, cache: Path
           ) -> dict[str, Any]:
    folder = out / name / "student"
    if not (folder / "distill.json").is_file():
        print(f"training {name} ({cfg.max_steps} steps)", file=sys.stderr)
        distill_lm(cfg, teacher_dir, data_dir, folder, out / name / "pruned", cache_root=cache)
    return read_json(folder / "distill.json")


def _per_example(examples: dict[str, Any], name: str) -> dict[str, dict[Any, float]]:
    """Per held-out window and per prompt scores of one variant, keyed so that two variants pair up."""
    e = examples["variants"][name]
    nan = float("nan")

    def val(x: Any) -> float:
        return nan if x is None else float(x)
    return {
        "mean NLL (held-out text)": {w["id"]: val(w["mean_nll"]) for w in e["windows"]},
        "top-1 agreement (held-out text)": {w["id"]: val(w["top1_agreement"]) for w in e["windows"]},
        "top-1 agreement (teacher's answers)": {(p["source_id"], p["kind"]): val(
            p["top1_agreement_on_teacher_response"]) for p in e["prompts"]},
        "ROUGE-L vs teacher": {(p["source_id"], p["kind"]): val(p["rouge_l_vs_teacher"]) for p in e["prompts"]},
    }


def compare(examples: dict[str, Any], a: str, b: str) -> dict[str, dict[str, float]]:
    """Paired a − b per metric with its bootstrap 95 % interval."""
    mine, theirs = _per_example(examples, a), _per_example(examples, b)
    out = {}
    for metric, values in mine.items():
        keys = [k for k in values if k in theirs[metric]]
        out[metric] = paired_difference([values[k] for k in keys], [theirs[metric][k] for k in keys])
    return out


def _fmt(d: dict[str, float], lower_is_better: bool) -> str:
    verdict = ""
    if d["low"] > 0 or d["high"] < 0:
        better = (d["high"] < 0) == lower_is_better
        verdict = " better" if better else " worse"
    return f"{d['diff']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]{verdict}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=Path("export/bbc-news-smollm2-135m-instruct-lm"))
    ap.add_argument("--out", type=Path, default=Path("export/lm-ablation"))
    ap.add_argument("--arms", default="sft,forward-kl,reverse-kl,on-policy,top64")
    ap.add_argument("--depths", default="5,20")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rebench", action="store_true", help="measure again even when <out>/bench holds these models")
    args = ap.parse_args()
    run, out = args.run_dir, args.out
    arms = [a for a in args.arms.split(",") if a]
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        sys.exit(f"unknown arm(s) {', '.join(unknown)}; known: {', '.join(ARMS)}")
    depths = [int(d) for d in args.depths.split(",") if d]
    started = time.time()
    if not (run / "report.json").is_file():
        print(f"no finished run in {run}: running `compresskit distill-and-export --task causal-lm`", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "compresskit", "distill-and-export", "--task", "causal-lm",
                        "--output-root", str(run.parent), "--run-name", run.name], check=True)
    base = read_json(run / "student" / "distill.json")
    teacher_dir, data_dir = Path(base["inputs"]["teacher"]), run / "data"
    cache = run.parent / ".cache"
    cfg = dataclasses.replace(run_config(base), student_layers=",".join(map(str, base["student_layers"])))

    records: dict[str, dict[str, Any]] = {}
    models: dict[str, Path] = {"pruned": run / "student-pruned"}
    for arm in arms:
        if ARMS[arm] is None:
            records[arm], models[arm] = base, run / "student"
        else:
            records[arm] = _train(arm, ARMS[arm](cfg), teacher_dir, data_dir, out, cache)
            models[arm] = out / arm / "student"
    for depth in depths:
        name = f"depth-{depth}"
        records[name] = _train(name, dataclasses.replace(run_config(base), student_layers="auto",
                                                         student_depth=depth), teacher_dir, data_dir, out, cache)
        models[name] = out / name / "student"

    bench_cfg = dataclasses.replace(LMBenchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in
                                                     read_json(run / "bench" / "bench_record.json")["config"].items()}),
                                    repeats=args.repeats)
    variants = [Variant("teacher-pytorch", "teacher", "pytorch", "fp32", teacher_dir, base["teacher_parameters"])]
    variants += [Variant(f"{name}-pytorch", "baseline" if name == "pruned" else "student", "pytorch", "fp32", path,
                         None) for name, path in models.items()]
    bench_dir = out / "bench"
    done = read_json(bench_dir / "bench.json") if (bench_dir / "bench.json").is_file() else None
    if done and [r["name"] for r in done["variants"]] == [v.name for v in variants] and not args.rebench:
        result = done  # the same models were measured already: rendering again needs no new measurement
    else:
        result = bench_lm(bench_cfg, variants, data_dir, bench_dir).to_dict()
    examples = read_json(bench_dir / "examples.json")
    rows = {r["name"].removesuffix("-pytorch"): r for r in result["variants"]}
    teacher = rows["teacher"]

    lines = [f"### Student LLM ablation: {len(models)} students of the teacher's layers, same data and steps",
             "", f"Machine: {result['machine'].get('cpu', '?')}, {result['threads']} threads; "
             f"held-out: {teacher['quality']['heldout_windows']} windows, {teacher['quality']['heldout_tokens']} "
             f"tokens; {result['test_samples']} test prompts", "",
             "| student | layers | training | teacher outputs | train s | perplexity | ×teacher | top-1 agr. "
             "(text) | top-1 agr. (answers) | ROUGE-L vs teacher | decode tok/s | ×teacher |",
             "|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    teacher_layers = read_json(teacher_dir / "config.json").get("num_hidden_layers", "?")
    t_ppl, t_tps = teacher["quality"]["perplexity"], teacher["generation"]["decode_tokens_per_s"]
    lines.append(f"| teacher | {teacher_layers} | – | – | – | {t_ppl:.1f} | 1.00 | 1.000 | 1.000 | 1.000 | {t_tps:.1f} | 1.00 |")
    for name, row in rows.items():
        if name == "teacher":
            continue
        rec = records.get(name)
        q, tps = row["quality"], row["generation"]["decode_tokens_per_s"]
        how = "none (pruned)" if rec is None else (
            f"{rec['config']['kd']['divergence'] if rec['config']['kd']['alpha'] else 'CE only'}"
            f"{', on-policy λ=' + str(rec['config']['on_policy_fraction']) if rec['config']['on_policy_fraction'] else ''}"
            f", {rec['config']['max_steps']} steps")
        layers = len(base["student_layers"]) if rec is None else rec["layers"]
        lines.append(f"| {name} | {layers} | {how} | {'–' if rec is None else rec['teacher_outputs']} | "
                     f"{'–' if rec is None else format(rec['train_seconds'], '.0f')} | {q['perplexity']:.1f} | "
                     f"{q['perplexity'] / t_ppl:.2f} | {q['top1_agreement']:.3f} | {q['top1_agreement_responses']:.3f} "
                     f"| {q['rouge_l_vs_teacher']['overall']:.3f} | {tps:.1f} | {tps / t_tps:.2f} |")
    comparisons: dict[str, dict[str, Any]] = {}
    lines += ["", "Paired differences (row − reference) over the same held-out windows and prompts, bootstrap 95 % "
              "interval; 'better'/'worse' where the interval excludes 0:", ""]
    metrics = list(_per_example(examples, "teacher-pytorch"))
    lines += ["| student | vs | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name in rows:
        for ref in REFERENCES:
            if name in ("teacher", ref) or ref not in rows or (ref != "pruned" and name == "pruned"):
                continue
            c = compare(examples, f"{name}-pytorch", f"{ref}-pytorch")
            comparisons[f"{name} vs {ref}"] = c
            lines.append(f"| {name} | {ref} | " + " | ".join(_fmt(c[m], m.startswith("mean NLL")) for m in metrics)
                         + " |")
    text = "\n".join(lines)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(text + "\n")
    write_json(out / "ablation.json", {"machine": result["machine"], "versions": library_versions(),
                                       "seconds": time.time() - started, "comparisons": comparisons,
                                       "rows": {n: {"quality": r["quality"], "generation": r["generation"]}
                                                for n, r in rows.items()},
                                       "records": {n: {k: r.get(k) for k in ("layers", "student_layers",
                                                                          "teacher_outputs", "teacher_cache",
                                                                          "train_seconds", "best_validation_loss")}
                                                   for n, r in records.items()}})
    _plot_depth(rows, records, base, out / "depth.png")


def _plot_depth(rows: dict[str, Any], records: dict[str, Any], base: dict[str, Any], path: Path) -> None:
    """Perplexity and agreement against decode speed, one point per depth (the run's student is its depth)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [(len(base["student_layers"]), rows["forward-kl"])] if "forward-kl" in rows else []
    points += [(records[n]["layers"], rows[n]) for n in rows if n.startswith("depth-")]
    points.append((read_json(Path(base["inputs"]["teacher"]) / "config.json").get("num_hidden_layers"),
                   rows["teacher"]))
    points.sort(key=lambda p: p[0])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for depth, row in points:
        x = row["generation"]["decode_tokens_per_s"]
        ax1.scatter(x, row["quality"]["perplexity"])
        ax1.annotate(f"{depth} layers", (x, row["quality"]["perplexity"]))
        ax2.scatter(x, row["quality"]["top1_agreement"])
        ax2.annotate(f"{depth} layers", (x, row["quality"]["top1_agreement"]))
    ax1.set(xlabel="decode tokens/s (batch 1, PyTorch fp32)", ylabel="held-out perplexity", yscale="log",
            title="perplexity against speed")
    ax2.set(xlabel="decode tokens/s (batch 1, PyTorch fp32)", ylabel="top-1 agreement with teacher",
            title="agreement against speed")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"depth trade-off plot: {path}", file=sys.stderr)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
