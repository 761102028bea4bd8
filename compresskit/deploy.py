"""Ship the decision: the run folder's ``deploy/`` holds the chosen variant's own folder (what ``compresskit predict``
or ``generate`` runs) and a model card, ``deploy/README.md``, in the Hugging Face format: YAML front matter
(``base_model``, ``pipeline_tag``, ``library_name``, ``datasets``, ``model-index`` with the measured metrics) and then
what the model is, how it was made, its figures beside the teacher's, the machine they were measured on, how to run
it, and its limits.

The folder is rewritten with every report, so it always matches report.json; when nothing meets the budget it is
removed, so a stale model is never shipped by a pipeline that copies ``deploy/`` blindly.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compresskit.artifacts import atomic_dir, write_atomic
from compresskit.variants import reference_teacher

DEPLOY = "deploy"
CARD = "README.md"


@dataclass(frozen=True)
class CardFacts:
    """What a family says in the card of one variant (``Task.card``)."""

    pipeline_tag: str
    """The Hugging Face task: ``text-classification``, ``text-generation``."""
    task_name: str
    """The task in words, for ``model-index``: ``Text Classification``."""
    metrics: list[dict[str, Any]]
    """``{"type", "name", "value", "field"}`` per metric: ``field`` is the report row's dotted field the value is
    (so a reader can check the card against report.json)."""
    usage: str
    """How to run the folder with ONNX Runtime (or the library that runs it), a few lines of Python."""
    command: str
    """The compresskit command that answers with it: ``compresskit predict deploy "some text"``."""
    library: str
    """``library_name``: ``onnx``, ``transformers``, ``sklearn``."""
    limits: list[str] = field(default_factory=list)
    """What the family knows the figures do not show (what verification checked, a baseline that beats it)."""
    base_model: str | None = None
    """The teacher's hub id where the run names it otherwise (an embedded teacher's short name); None: as given."""


def front_matter(meta: dict[str, Any]) -> str:
    import yaml

    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000) + "---\n"


def read_card(path: Path) -> tuple[dict[str, Any], str]:
    """A model card's front matter (a dict) and its Markdown body; a card without front matter is an error."""
    import yaml

    text = Path(path).read_text(encoding="utf-8")
    if not text.startswith("---\n") or "\n---\n" not in text[4:]:
        raise ValueError(f"{path} does not start with YAML front matter")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def _section(cfg: dict[str, Any], name: str) -> dict[str, Any]:
    """A stage's settings in a run's config: at its top (classification: ``distill``) or one level down, under the
    family's own key (causal LM: ``lm.distill``)."""
    if isinstance(cfg.get(name), dict):
        return cfg[name]
    return next((v[name] for v in cfg.values() if isinstance(v, dict) and isinstance(v.get(name), dict)), {})


def _fmt(x: Any, spec: str = "{:.4g}") -> str:
    return "—" if x is None else spec.format(x)


def model_card(report: dict[str, Any], decision: dict[str, Any], row: dict[str, Any], facts: CardFacts) -> str:
    """The text of ``deploy/README.md`` for the shipped variant ``row`` of ``report``."""
    from compresskit.decision import kind_of

    teacher = reference_teacher(report.get("variants") or []) or {}
    t_info, s_info = report.get("teacher") or {}, report.get("student") or {}
    data = report.get("data") or {}
    source = str(t_info.get("source") or t_info.get("path") or "unknown")
    # the hub id a reader can look up, where the teacher is an embedded one known by a short name
    base_model = facts.base_model or source
    name = f"{report.get('run_name')}-{row['name']}"
    cfg = report.get("config") or {}
    # the data set as the user named it (``bbc-news``, a hub id, a file), not the folder it was read from
    dataset = str(_section(cfg, "data").get("dataset") or data.get("source") or "unknown")
    precision = row.get("precision")
    meta: dict[str, Any] = {
        "base_model": base_model,
        "pipeline_tag": facts.pipeline_tag,
        "library_name": facts.library,
        "datasets": [dataset],
        "tags": ["compresskit", *(["distillation"] if row.get("model") == "student" else []),
                 *([str(precision)] if precision not in (None, "fp32") else []), str(row.get("format"))],
        "model-index": [{"name": name, "results": [{
            "task": {"type": facts.pipeline_tag, "name": facts.task_name},
            "dataset": {"name": dataset, "type": dataset, "split": "test"},
            "metrics": [{"type": m["type"], "value": m["value"], "name": m["name"]} for m in facts.metrics
                        if m["value"] is not None]}]}],
    }
    cand = next((c for c in decision.get("candidates") or [] if c["name"] == row["name"]), {})
    machine = report.get("machine") or {}
    versions = report.get("versions") or {}
    lines = [front_matter(meta), f"# {name}", "",
             f"**{row['name']}**: {kind_of(row)}, chosen by compresskit as the variant to ship for this run: "
             f"{decision.get('reason', '')}.", "",
             "## How it was made", "",
             f"- Teacher: `{source}` ({_fmt(t_info.get('parameters') or teacher.get('parameters'), '{:,}')} parameters, "
             f"{_fmt(t_info.get('layers'), '{}')} layers).",
             ]
    if row.get("model") == "student":
        lines.append(f"- Student: {_fmt(s_info.get('layers'), '{}')} layers, {_fmt(s_info.get('parameters'), '{:,}')}"
                     f" parameters" + (f", made from {s_info['student_origin']}" if s_info.get("student_origin")
                                       else "") + ".")
        distill = {k: v for k, v in _section(cfg, "distill").items() if not isinstance(v, (dict, list))}
        if distill:
            lines.append("- Distillation: " + ", ".join(f"{k}={v}" for k, v in distill.items()) + ".")
    quantize = {k: v for k, v in _section(cfg, "quantize").items() if not isinstance(v, (dict, list))}
    if row.get("format") == "onnx" and precision not in (None, "fp32") and quantize:
        lines.append(f"- Quantization to {precision}: " + ", ".join(f"{k}={v}" for k, v in quantize.items()) + ".")
    lines.append(f"- Format: {row.get('format')}, {precision}; {_fmt(row.get('size_mb'), '{:.1f}')} MB.")
    lines += ["", "## Measured figures", "",
              f"On the test split of `{dataset}` ({_fmt((report.get('test_set') or {}).get('count'), '{}')}"
              f" examples), against the teacher `{teacher.get('name', '—')}`:", "",
              "| figure | this model | teacher |", "|---|---:|---:|"]
    by_field = {m["field"]: m for m in facts.metrics}
    teacher_facts = {}
    if teacher:
        from compresskit.variants import field_value

        teacher_facts = {f: field_value(teacher, f) for f in by_field}
    head = decision.get("headline") or {}
    intervals = {q["label"]: q for q in head.get("quality") or []}
    for m in facts.metrics:
        t = teacher_facts.get(m["field"])
        q = intervals.get(m.get("label") or "")
        scale = (q or {}).get("scale") or 1.0  # the headline's figures are scaled for display; the card's are raw
        ci = (f" (95 % CI {q['low'] / scale:.4g} to {q['high'] / scale:.4g})" if q and q.get("low") is not None
              else "")
        lines.append(f"| {m['name']} | {_fmt(m['value'])}{ci} | {_fmt(t)} |")
    if head.get("speedup") is not None:
        ci = (f" (95 % CI {head['speedup_low']:.2f}× to {head['speedup_high']:.2f}×)"
              if head.get("speedup_low") is not None else "")
        lines.append(f"| speed-up against {head.get('against')} ({decision['workload']['label']}) | "
                     f"{head['speedup']:.2f}×{ci} | 1.00× |")
    lines += ["", f"Budget it was chosen under: {decision.get('budget_text')}"
              + (" (the default: no quality gate was given)." if decision.get("budget_source") == "default" else "."),
              ""]
    for c in cand.get("checks") or []:
        lines.append(f"- {c['text']}")
    lines += ["", "Measured on: "
              f"{machine.get('cpu') or 'unknown CPU'}, {machine.get('threads', '—')} threads, GPU "
              f"{machine.get('gpu') or 'none'}, {machine.get('platform') or ''}; "
              + ", ".join(f"{k} {v}" for k, v in versions.items() if v) + ". Speed on other hardware differs: "
              "measure there before relying on these figures.", "",
              "## How to run it", "", "```python", facts.usage.rstrip(), "```", "", "Or, from a shell:", "",
              "```sh", facts.command, "```", "", "## Limits", ""]
    lines += [f"- {x}" for x in [*facts.limits, *decision.get("warnings", [])]] or ["- none known"]
    return "\n".join(lines) + "\n"


def write_deploy(run_dir: Path, report: dict[str, Any], task: Any) -> Path | None:
    """Write ``run_dir/deploy`` for the report's decision (see the module docstring); returns it, or None when
    nothing ships (and any earlier ``deploy/`` is removed)."""
    from compresskit.run import link_tree

    out = Path(run_dir) / DEPLOY
    decision = report.get("decision") or {}
    chosen = decision.get("chosen")
    row = next((v for v in report.get("variants") or [] if v.get("name") == chosen), None)
    if row is None or not row.get("path") or not Path(row["path"]).is_dir():
        shutil.rmtree(out, ignore_errors=True)
        return None
    facts = task.card(report, row)
    card = model_card(report, decision, row, facts)
    with atomic_dir(out) as tmp:
        link_tree(Path(row["path"]), tmp)
        write_atomic(tmp / CARD, card)  # replaces a README the variant's folder may hold
    return out
