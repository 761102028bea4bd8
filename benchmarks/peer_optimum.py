"""Benchmark: compresskit's ONNX models against the optimum-onnx pipeline, PyTorch eager and PyTorch dynamic int8.

    python benchmarks/peer_optimum.py [--run-dir export/bbc-news-all-minilm-l6-v2] [--model student|teacher]

optimum-onnx pins transformers below 4.58, so it cannot live beside compresskit: this script makes a separate
virtual environment (``.venv-optimum``, git-ignored) with optimum-onnx and the transformers it wants, and runs
there the route its documentation gives: ``optimum-cli export onnx`` → ``ORTOptimizer`` O2 → ``ORTQuantizer``
dynamic int8 with the preset for this CPU (avx512_vnni when the CPU has VNNI, else avx2). Then, in this
environment, every model runs on the same test inputs (batch 1, sequence 128, same thread count) in interleaved
rounds so that machine noise hits all of them alike, and the ratios are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEER_VENV = ROOT / ".venv-optimum"

PEER_SCRIPT = r'''
import json, sys, traceback
from pathlib import Path
src, out, vnni = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
notes = {}
import subprocess
subprocess.run([sys.executable, "-m", "optimum.exporters.onnx", "--model", str(src), "--task", "text-classification",
                str(out / "fp32")], check=True)
from optimum.onnxruntime import ORTModelForSequenceClassification, ORTOptimizer, ORTQuantizer
from optimum.onnxruntime.configuration import AutoQuantizationConfig, OptimizationConfig
model = ORTModelForSequenceClassification.from_pretrained(out / "fp32")
ORTOptimizer.from_pretrained(model).optimize(save_dir=out / "o2", optimization_config=OptimizationConfig(optimization_level=2))
preset = AutoQuantizationConfig.avx512_vnni if vnni else AutoQuantizationConfig.avx2
qcfg = preset(is_static=False, per_channel=False)
try:
    q = ORTQuantizer.from_pretrained(out / "o2", file_name="model_optimized.onnx")
    q.quantize(save_dir=out / "int8", quantization_config=qcfg)
    notes["int8_source"] = "o2"
except Exception as e:
    notes["int8_o2_error"] = str(e).splitlines()[0][:300]
    q = ORTQuantizer.from_pretrained(out / "fp32")
    q.quantize(save_dir=out / "int8", quantization_config=qcfg)
    notes["int8_source"] = "fp32 (O2 route failed)"
import importlib.metadata as md
notes["versions"] = {p: md.version(p) for p in ("optimum", "optimum-onnx", "transformers", "onnxruntime", "torch")}
(out / "notes.json").write_text(json.dumps(notes, indent=2))
'''


def ensure_peer_env() -> Path:
    """The optimum-onnx environment, made once (torch from the same wheel as ours, CPU onnxruntime)."""
    python = PEER_VENV / "bin" / "python"
    if not python.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "torch==2.13.0", "optimum-onnx[onnxruntime]"],
                       check=True)
    return python


def first_onnx(folder: Path) -> Path:
    for name in ("model_optimized.onnx", "model_quantized.onnx", "model.onnx"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"no ONNX model in {folder}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", type=Path, default=ROOT / "export/bbc-news-all-minilm-l6-v2")
    ap.add_argument("--model", choices=("student", "teacher"), default="student")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compresskit.machine import default_threads, has_vnni, library_versions, machine_info
    from compresskit.onnx.sessions import make_session, run_logits
    from compresskit.tasks.classification.data import read_split_for_head
    from compresskit.tasks.classification.export import tokenize_numpy

    src = args.run_dir / args.model
    peer_out = args.run_dir / "peer-optimum" / args.model
    if not (peer_out / "notes.json").is_file():
        python = ensure_peer_env()
        peer_out.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(python), "-c", PEER_SCRIPT, str(src), str(peer_out), "1" if has_vnni() else "0"],
                       check=True)
    notes = json.loads((peer_out / "notes.json").read_text())

    threads = default_threads()
    torch.set_num_threads(threads)
    ours = {"compresskit fp32": args.run_dir / "onnx" / args.model / "model.onnx"}
    # the default run quantizes the student; for the teacher, make onnx/teacher-quantized with `compresskit quantize`
    if (args.run_dir / "onnx" / f"{args.model}-quantized" / "model.onnx").is_file():
        ours["compresskit int8"] = args.run_dir / "onnx" / f"{args.model}-quantized" / "model.onnx"
    peers = {"optimum fp32 O2": first_onnx(peer_out / "o2"), "optimum int8": first_onnx(peer_out / "int8")}
    sessions = {k: make_session(p, threads=threads) for k, p in {**ours, **peers}.items()}

    model = AutoModelForSequenceClassification.from_pretrained(src).eval()
    qmodel = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    tok = AutoTokenizer.from_pretrained(src)
    texts, gold = read_split_for_head(args.run_dir / "data", "test", labels)
    arrays = tokenize_numpy(tok, texts, 128, pad_to_max=True)
    gold = np.array(gold)

    def torch_run(m):
        def run(batch):
            with torch.inference_mode():
                return m(**{k: torch.from_numpy(v) for k, v in batch.items()}).logits.numpy()
        return run

    def ort_run(s):
        return lambda batch: run_logits(s, batch)

    runners = {"pytorch eager fp32": torch_run(model), "pytorch dynamic int8": torch_run(qmodel),
               **{k: ort_run(s) for k, s in sessions.items()}}
    accuracy, logits = {}, {}
    for name, run in runners.items():
        logits[name] = np.concatenate([run({k: v[i:i + 32] for k, v in arrays.items()})
                                       for i in range(0, len(gold), 32)])
        accuracy[name] = float((logits[name].argmax(-1) == gold).mean())
    feeds = [{k: v[i:i + 1] for k, v in arrays.items()} for i in range(32)]
    samples = {k: [] for k in runners}
    for name, run in runners.items():
        for f in feeds[:5]:
            run(f)
    for r in range(args.rounds):
        for name, run in runners.items():
            for i in range(args.per_round):
                t0 = time.perf_counter()
                run(feeds[(r * args.per_round + i) % len(feeds)])
                samples[name].append((time.perf_counter() - t0) * 1000)
    p50 = {k: statistics.median(v) for k, v in samples.items()}
    ref = logits["pytorch eager fp32"]
    print(f"\n### {args.model}: batch 1, sequence 128, {threads} threads, {args.rounds}×{args.per_round} interleaved runs\n")
    print("| model | p50 (ms) | vs PyTorch eager | vs optimum (same precision) | test accuracy "
          "| max abs logit diff vs PyTorch | mean abs logit diff | label agreement |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in runners:
        peer = "optimum int8" if "int8" in name and name.startswith("compresskit") else (
            "optimum fp32 O2" if name.startswith("compresskit") else None)
        vs_peer = f"{p50[name] / p50[peer]:.2f}×" if peer else "—"
        diff = np.abs(logits[name] - ref)
        agree = float((logits[name].argmax(-1) == ref.argmax(-1)).mean())
        print(f"| {name} | {p50[name]:.2f} | {p50['pytorch eager fp32'] / p50[name]:.2f}× faster | {vs_peer} | "
              f"{accuracy[name]:.4f} | {diff.max():.2e} | {diff.mean():.2e} | {agree:.2%} |")
    print("\n'vs optimum' is compresskit's p50 divided by optimum's: below 1 is faster.")
    print(f"\noptimum route: {json.dumps(notes)}")
    export_record = json.loads((args.run_dir / "onnx" / args.model / "export.json").read_text())
    print(f"compresskit export: chosen {export_record.get('chosen')}, fused {export_record.get('fused_operators')}, "
          f"SkipLayerNormalization {(export_record.get('skip_layer_norm') or {}).get('form', 'fused')}")
    print(f"machine: {json.dumps(machine_info(threads))}\nversions: {json.dumps(library_versions())}")


if __name__ == "__main__":
    main()
