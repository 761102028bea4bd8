"""Task families: what differs between classifying text and generating it sits in ``tasks/<family>/``, behind the
``Task`` protocol (``tasks.protocol``), which holds exactly what the shared core calls; this module is the registry.

The core (pipeline, benchmark harness, report, compare, gates, CLI) never names a family: it asks the task of a run
for its options and settings, run identity and default run name, its stages, how to benchmark a run folder, the
report's columns, header lines and sections, compare's metrics, the fields the gates read, and the family's own
commands. A family is registered once, in ``families()`` below; adding one touches its own package and that
function.

``python -m compresskit.tasks`` lists the families and what each needs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, read_json

# The protocol lives in its own module, which the families import; this module is the registry, which imports them.
from compresskit.tasks.protocol import Collected, Column, Stage, StageContext, Task  # noqa: F401

AUTO = "auto"



def families() -> dict[str, Task]:
    """The task families that run, by ``--task`` name: the registry. The first is what ``compresskit
    distill-and-export`` runs when neither ``--task`` nor ``--teacher`` says otherwise. Imported when asked for, so
    that importing the protocol loads no family."""
    from compresskit.tasks.causal_lm.task import CAUSAL_LM
    from compresskit.tasks.classification.task import TEXT_CLASSIFICATION

    return {task.name: task for task in (TEXT_CLASSIFICATION, CAUSAL_LM)}


def task_names() -> list[str]:
    """The ``--task`` values that run (``--task`` also takes ``auto``)."""
    return list(families())


def get_task(name: str) -> Task:
    """The task family called ``name``; a one-line UserError for an unknown one."""
    known = families()
    if name not in known:
        raise UserError(f"--task must be auto or one of {', '.join(known)}, got {name!r}")
    return known[name]


def infer_task(config: Any) -> Task:
    """The family whose ``accepts`` takes a teacher's config; a one-line UserError when none or several do."""
    taking = [t for t in families().values() if t.accepts(config)]
    if len(taking) != 1:
        kind = ", ".join(getattr(config, "architectures", None) or [str(getattr(config, "model_type", "?"))])
        which = "no task family takes" if not taking else f"{', '.join(t.name for t in taking)} all take"
        raise UserError(f"{which} a teacher described as {kind}; pass --task {' or --task '.join(task_names())}")
    return taking[0]


def resolve_task(name: str, teacher: str | None, read_config: Callable[[str], Any]) -> tuple[Task, str]:
    """The task and the teacher of a run from ``--task`` and ``--teacher``: ``--task`` when given; under ``auto`` the
    family whose embedded teacher ``teacher`` names, else the one the teacher's config implies (``read_config``
    reads it), else with no teacher the registry's first family. No ``--teacher``: the family's embedded one."""
    if name != AUTO:
        task = get_task(name)
    elif teacher is None:
        task = next(iter(families().values()))
    else:
        named = [t for t in families().values() if teacher in (t.default_teacher, *t.teacher_aliases)]
        task = named[0] if named else infer_task(read_config(teacher))
    return task, teacher if teacher is not None else task.default_teacher


def task_of_run(run_dir: Path) -> Task:
    """The family that made a run folder, as its records say (``run.json``, else ``data/data.json``, else
    ``bench/bench.json``: each names its ``task``); a one-line UserError when none does."""
    run_dir = Path(run_dir)
    for record in (run_dir / "run.json", run_dir / "data" / "data.json", run_dir / "bench" / "bench.json"):
        if record.is_file():
            name = (read_json(record) or {}).get("task")
            if name in families():
                return get_task(name)
    raise UserError(f"{run_dir} holds no record that names its task family (run.json, data/data.json or "
                    "bench/bench.json): is it a run folder made by distill-and-export or prepare-data?")
