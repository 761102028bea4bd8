"""What text classification gives the decision (``compresskit.decision``) and the shipped variant's model card
(``compresskit.deploy``): latency workloads, intervals paired over the test examples, metrics and usage."""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from compresskit.decision import Workload
from compresskit.variants import finite_number, reference_teacher

DEFAULT_BUDGET = {"max_accuracy_drop": 0.01}
"""One accuracy point below the teacher, when the user gives no quality gate."""


def workloads(variants: list[dict[str, Any]]) -> list[Workload]:
    """p50 latency at batch 1 (what ``chosen`` is fastest at) and at the largest batch measured."""
    sizes = {int(m.group(1)) for v in variants for k in (v.get("latency_ms") or {})
             if (m := re.fullmatch(r"batch_(\d+)", k))}
    return [Workload(f"batch_{n}", f"p50 latency at batch {n} (ms)", f"latency_ms.batch_{n}.p50", False,
                     f"latency_rounds_ms.batch_{n}")
            for n in sorted({1, max(sizes, default=1)})]


def _arrays(row: dict, report: dict) -> tuple[np.ndarray, np.ndarray] | None:
    labels = (report.get("test_set") or {}).get("labels")
    pred = row.get("predictions")
    if not labels or not pred or len(labels) != len(pred):
        return None
    return np.asarray(pred), np.asarray(labels)


def budget_interval(gate: str, row: dict, teacher: dict, report: dict) -> tuple[float, float] | None:
    """Paired bootstrap intervals over the test examples: the accuracy drop (teacher − row) and the agreement."""
    from compresskit.stats import bootstrap_ci, paired_bootstrap_diff

    mine, theirs = _arrays(row, report), _arrays(teacher, report)
    if mine is None or theirs is None:
        return None
    if gate == "max_accuracy_drop":
        r = paired_bootstrap_diff((theirs[0] == theirs[1]).astype(float), (mine[0] == mine[1]).astype(float))
        return r["low"], r["high"]
    if gate == "min_agreement":
        return bootstrap_ci((mine[0] == theirs[0]).astype(float))
    return None


def value_interval(field: str, row: dict, report: dict) -> tuple[float, float] | None:
    """Bootstrap intervals of accuracy and of agreement with the reference teacher."""
    from compresskit.stats import bootstrap_ci

    mine = _arrays(row, report)
    if mine is None:
        return None
    if field == "accuracy":
        return bootstrap_ci((mine[0] == mine[1]).astype(float))
    if field == "agreement_with_teacher":
        teacher = reference_teacher(report.get("variants") or [])
        theirs = _arrays(teacher or {}, report)
        return None if theirs is None else bootstrap_ci((mine[0] == theirs[0]).astype(float))
    return None


_METRICS = (("accuracy", "accuracy", "accuracy"), ("f1", "macro-F1", "macro_f1"),
            ("agreement", "agreement with the teacher", "agreement_with_teacher"),
            ("latency", "p50 latency at batch 1 (ms)", "latency_ms.batch_1.p50"))


def card(report: dict[str, Any], row: dict[str, Any]) -> Any:
    """The card of a classifier: its metrics as report.json holds them, and how to run the folder."""
    from compresskit.deploy import CardFacts
    from compresskit.variants import field_value

    metrics = [{"type": t, "name": n, "value": finite_number(field_value(row, f)), "field": f,
                "label": {"accuracy": "accuracy (%)", "agreement_with_teacher": "agreement (%)"}.get(f)}
               for t, n, f in _METRICS]
    length = report.get("sequence_length") or 128
    limits = []
    if row.get("format") == "onnx":
        usage = (
            "import json, onnxruntime as ort; from transformers import AutoTokenizer\n"
            "tok, session = AutoTokenizer.from_pretrained(\"deploy\"), ort.InferenceSession(\"deploy/model.onnx\")\n"
            f"enc = tok([\"Shares rose after the results.\"], return_tensors=\"np\", padding=\"max_length\", "
            f"truncation=True, max_length={length})\n"
            "logits = session.run(None, {i.name: enc[i.name] for i in session.get_inputs()})[0]\n"
            "print(json.load(open(\"deploy/labels.json\"))[int(logits.argmax(-1)[0])])\n")
        command = "compresskit predict deploy \"Shares rose after the results.\""
        library = "onnx"
        limits.append("verified against its source model on the validation split (logits and labels; see the run's "
                      "report, 'Export verification'); figures are from the test split only")
    elif row.get("format") == "sklearn":
        usage = ("import json, pickle  # a TF-IDF + logistic-regression pipeline; it predicts label ids\n"
                 "model, labels = pickle.load(open(\"deploy/model.pkl\", \"rb\")), json.load(open(\"deploy/baseline.json\"))[\"labels\"]\n"
                 "print(labels[int(model.predict([\"Shares rose after the results.\"])[0])])\n")
        command = "python -c \"import pickle; print(pickle.load(open('deploy/model.pkl','rb')).predict(['text']))\""
        library = "sklearn"
        limits.append("a pickled scikit-learn pipeline: load it only from a source you trust, with the scikit-learn "
                      "version in the run's report")
    else:
        usage = ("from transformers import pipeline\n"
                 "classify = pipeline(\"text-classification\", model=\"deploy\")\n"
                 "print(classify(\"Shares rose after the results.\"))\n")
        command = "python -c \"from transformers import pipeline; print(pipeline('text-classification', " \
                  "model='deploy')('text'))\""
        library = "transformers"
        if row.get("precision") == "bf16" or row.get("runtime") == "compile" or "-compile" in str(row.get("name")):
            limits.append(f"measured as {row.get('name')}: load the weights and apply the same form "
                          "(bfloat16 weights / torch.compile) to get the measured speed")
    mine = finite_number(row.get("accuracy"))
    for other in report.get("variants") or []:
        theirs = finite_number(other.get("accuracy"))
        if other is not row and other.get("format") == "sklearn" and mine is not None and theirs is not None \
                and theirs > mine:
            limits.append(f"the classical baseline {other['name']} is more accurate on the same test split "
                          f"({100 * theirs:.2f} % against {100 * mine:.2f} %): consider shipping it instead")
    from compresskit.tasks.classification.models import DEFAULT_TEACHER

    hub = (f"sentence-transformers/{DEFAULT_TEACHER}"
           if (report.get("teacher") or {}).get("source") == DEFAULT_TEACHER else None)
    return CardFacts("text-classification", "Text Classification", metrics, usage, command, library, limits, hub)
