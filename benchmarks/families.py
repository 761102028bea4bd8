"""Which model families the whole pipeline takes, end to end, as a user would run it: a tiny random model of each
family (``tests/model_families.py``: 3 blocks, width 64) saved as a local folder, ``compresskit distill-and-export``
with the short settings the tests use, then ``compresskit generate`` (decoders) or ``compresskit predict``
(encoders) on the run's smallest graph. Prints one JSON line per family and the README's "Supported model
families" table: exit code, the export path kept (GenAI builder or torch.onnx for decoders), the int8/int4 path
and what it was judged on, the teacher's int4 path, and whether generate/predict answered.

    python benchmarks/families.py                       # every family, about 2 minutes each on a 2-core CPU
    python benchmarks/families.py --only Gemma\\ 2 OPT   # some

A refusal is a row too: the first line of the error, which must come before anything is written.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tiny families live with the tests

import model_families as F  # noqa: E402

from compresskit.machine import library_versions, machine_info  # noqa: E402

WORDS = ["market", "team", "minister", "film", "phone", "bank", "goal", "album", "chip", "bill"]
TOPICS = {"business": "market bank shares rate profit firm", "sport": "team goal cup match player coach",
          "tech": "phone chip software computer online data"}
LM_FAST = ["--max-steps", "4", "--lm-batch-size", "2", "--lm-max-length", "64", "--max-new-tokens", "6",
           "--decode-tokens", "8", "--lm-test-prompts", "4", "--device", "cpu", "--rounds", "1"]
CLS_FAST = ["--epochs", "1", "--rounds", "1", "--teacher-forms", "none", "--max-length", "32", "--batch-sizes", "1",
            "--device", "cpu"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "compresskit", *args], capture_output=True, text=True)


def _distill_and_export(name: str, kind: str, teacher: Path, data: Path, root: Path, flags: list[str]
                        ) -> tuple[dict, Path]:
    """One run of the whole pipeline on ``teacher`` and ``data``: the table row's exit code, time and error line, and
    the run folder."""
    t = time.time()
    p = _cli("distill-and-export", "--teacher", str(teacher), "--dataset", str(data), "--output-root",
             str(root / "runs"), "--run-name", F.slug(name), "--overwrite", *flags)
    row = {"family": name, "kind": kind, "exit": p.returncode, "seconds": round(time.time() - t),
           "error": (p.stderr.strip().splitlines() or [""])[-1] if p.returncode else None}
    return row, root / "runs" / F.slug(name)


def _read(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def decoder_row(name: str, root: Path) -> dict:
    prompts = root / "prompts.jsonl"
    if not prompts.is_file():
        prompts.write_text("".join(json.dumps({"prompt": f"write about the {WORDS[i % 10]} and the "
                                                         f"{WORDS[i * 3 % 10]}"}) + "\n" for i in range(24)))
    model = root / "models" / F.slug(name)
    if not model.exists():
        F.save_decoder(name, model)
    row, run = _distill_and_export(name, "decoder", model, prompts, root, LM_FAST)
    row["export"] = _read(run / "onnx" / "student" / "export.json").get("path")
    for precision in ("int8", "int4"):
        q = _read(run / "onnx" / f"student-{precision}" / "quantize.json")
        row[precision] = q and {"path": q.get("path"), "judged_on": q.get("judged_on"),
                                "within_budget": q.get("within_budget")}
    row["teacher_int4"] = _read(run / "onnx" / "teacher-int4" / "build.json").get("path")
    graph = run / "onnx" / "student-int4"
    if graph.is_dir():
        g = _cli("generate", str(graph), "write about the market", "--max-new-tokens", "4")
        row["generate"] = g.returncode == 0
    return row


def encoder_row(name: str, root: Path) -> dict:
    from transformers import BertTokenizerFast

    data = root / "cls.csv"
    if not data.is_file():
        with data.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "label"])
            for label, words in TOPICS.items():
                ws = words.split()
                for i in range(30):
                    w.writerow([f"the {ws[i % 6]} and the {ws[(i * 5) % 6]} of the {ws[(i + 2) % 6]}", label])
    model = root / "models" / F.slug(name)
    if not model.exists():
        vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "and", "of",
                                             *sorted({w for ws in TOPICS.values() for w in ws.split()})])}
        tok = BertTokenizerFast(vocab=vocab, do_lower_case=True)
        F.encoder_classifier(name, sorted(TOPICS), len(vocab)).save_pretrained(model)
        tok.save_pretrained(model)
    row, run = _distill_and_export(name, "encoder", model, data, root, CLS_FAST)
    export = _read(run / "onnx" / "student" / "export.json")
    row["export"] = (export.get("choice") or {}).get("chosen") or export.get("config", {}).get("exporter")
    q = _read(run / "onnx" / "student-quantized" / "quantize.json")
    row["int8"] = q and {"mode": q.get("mode") or q.get("config", {}).get("mode"),
                         "passed": (q.get("parity") or {}).get("passed")}
    graph = run / "onnx" / "student-quantized"
    if graph.is_dir():
        g = _cli("predict", str(graph), "the team won the cup")
        row["predict"] = g.returncode == 0
    report = _read(run / "report.json")
    row["accuracy"] = {v["name"]: v.get("accuracy") for v in report.get("variants", [])} or None
    return row


def table(rows: list[dict]) -> str:
    lines = ["| family | kind | distil → report | ONNX export | int8 | int4 | teacher int4 | generate / predict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ok = "✓" if r["exit"] == 0 else f"exit {r['exit']}: {r['error']}"

        def q(x: dict | None) -> str:
            if not x:
                return "–"
            if "path" in x:
                return f"{x['path']} ({x['judged_on']})"
            return f"{x['mode']}{'' if x.get('passed') else ' (outside budget)'}"

        run_it = r.get("generate", r.get("predict"))
        lines.append(f"| {r['family']} | {r['kind']} | {ok} | {r.get('export') or '–'} | {q(r.get('int8'))} | "
                     f"{q(r.get('int4')) if r['kind'] == 'decoder' else '–'} | {r.get('teacher_int4') or '–'} | "
                     f"{'✓' if run_it else '–' if run_it is None else '✗'} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", nargs="*", help="family names as the table writes them (default: all)")
    p.add_argument("--root", type=Path, default=Path("export/families"), help="where the models and runs go")
    args = p.parse_args()
    families = [("decoder", n) for n in F.DECODERS] + [("encoder", n) for n in F.ENCODERS]
    if args.only:
        families = [f for f in families if f[1] in args.only]
    args.root.mkdir(parents=True, exist_ok=True)
    rows = []
    for kind, name in families:
        row = decoder_row(name, args.root) if kind == "decoder" else encoder_row(name, args.root)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n" + table(rows))
    print(f"\nmachine: {json.dumps(machine_info())}\nversions: {json.dumps(library_versions())}")


if __name__ == "__main__":
    main()
