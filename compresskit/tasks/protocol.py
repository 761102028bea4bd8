"""The ``Task`` protocol: what a task family provides to the shared core, and the small records they exchange (a
report column, a pipeline stage and its context, what a family collects from its run folder for the report).

Every member of ``Task`` is called by the core; a family implements them in ``tasks/<family>/task.py`` and is
registered in ``compresskit.tasks.families``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from compresskit.artifacts import read_json


@dataclass(frozen=True)
class Column:
    """A column of the report's variant table: the variant field it shows, how, and which way is better."""

    header: str
    field: str
    spec: str = "{:.2f}"
    scale: float = 1.0
    higher_is_better: bool = True


def column_of(task: Any, field: str) -> Column | None:
    """The column of a family's report table that shows variant ``field``, or None: where a figure's human label
    and display scale come from (``accuracy`` → "accuracy (%)", 100)."""
    return next((c for c in task.report_columns() if c.field == field), None)


@dataclass(frozen=True)
class StageContext:
    """What a task's stages work with: the run's configuration (a ``pipeline.PipelineConfig``), what the task's
    preflight found, the run folder's layout, the shared cache folder, and whether an earlier run is resumed."""

    cfg: Any
    found: Any
    layout: Any  # compresskit.run.RunLayout
    cache: Path
    resumed: bool


@dataclass(frozen=True)
class Stage:
    """One numbered step of ``distill-and-export``: its name, the header detail, and the work, which reuses a
    finished output of an earlier run and returns the lines to print under the header."""

    name: str
    detail: str
    run: Callable[[], list[str]]


@dataclass(frozen=True)
class Collected:
    """What a task reads from its own run folder for the report: each ONNX graph's parity check
    (``verification``), how each graph was built (``exports``, by model name) and the gold label ids of the
    measured test examples (``test_labels``, in the order the variants' ``predictions`` use; None where the
    family has no per-example labels)."""

    verification: list[dict[str, Any]]
    exports: dict[str, dict[str, Any]]
    test_labels: list[int] | None = None


def collect_graphs(layout: Any, graphs: tuple[tuple[str, str], ...],
                   describe: Callable[[str, dict[str, Any]], dict[str, Any]]) -> Collected:
    """``Collected`` from the ONNX folders of a run (``layout.onnx(name)``) whose record file exists, in ``graphs``
    order: each record's ``parity`` check, and what ``describe(record_file, record)`` says of how the graph was
    built. ``graphs``: (folder name, record file: ``export.json`` or ``quantize.json``) pairs."""
    verification, exports = [], {}
    for name, record_file in graphs:
        path = Path(layout.onnx(name)) / record_file
        if path.is_file():
            record = read_json(path)
            verification.append(record["parity"])
            exports[name] = describe(record_file, record)
    return Collected(verification, exports)


class Task(Protocol):
    """What a task family provides to the shared core: every member is called by it."""

    name: str
    """The ``--task`` value, and report.json's and bench.json's ``task``."""
    summary: str
    """One line: what the task does (``--task`` help, ``python -m compresskit.tasks``)."""
    needs: str
    """What a user must bring: the teacher's kind, the data's form."""
    default_teacher: str
    """The embedded teacher, used when ``--teacher`` is not given; naming it picks this family under ``--task
    auto``."""
    teacher_aliases: tuple[str, ...]
    """Other names of the embedded teacher (``sentence-transformers/all-MiniLM-L6-v2``), which pick the family too."""
    quality_metric: str
    """The variant field the accuracy gates, the accuracy-against-latency plot and compare's headline read (a dotted
    path into a report row, higher is better)."""
    agreement_metric: str
    """The variant field ``--min-agreement`` reads: agreement of a student with the teacher, in [0, 1]."""
    perplexity_metric: str | None
    """The variant field ``--max-perplexity-ratio`` reads (lower is better); None where the family has none."""
    quality_fields: tuple[str, ...]
    """Fields every variant row of this family's report carries (the report schema requires them)."""
    default_budget: dict[str, float]
    """The quality budget the decision uses when the user gives no quality gate, keyed by gate name
    (``{"max_accuracy_drop": 0.01}``; see ``compresskit.decision``)."""
    options: dict[str, Any]
    """The family's own command-line options (``compresskit.cli.options.Opt`` by name); the shared ones are in the
    core's table."""

    def accepts(self, config: Any) -> bool:
        """Whether a teacher with this transformers config belongs to the family (``--task auto``)."""
        ...

    def settings(self, o: dict[str, Any]) -> Any:
        """The family's typed settings for one run, from the resolved flag values ``o`` (every option by name)."""
        ...

    def default_run_name(self, cfg: Any) -> str:
        """The run folder's name when ``--run-name`` is not given, from the data and the teacher."""
        ...

    def identity(self, cfg: Any) -> dict[str, Any]:
        """The settings that shape this run's artifacts (``run.json``'s identity: a rerun with the same ones
        resumes; gates never count, since they only judge a finished run)."""
        ...

    def preflight(self, cfg: Any, cache: Path) -> Any:
        """Check the teacher and the data before anything is written (one-line UserError on bad input); returns
        what the stages need of it. ``cache`` is the shared cache folder (an embedded teacher is built there)."""
        ...

    def stages(self, ctx: StageContext) -> list[Stage]:
        """The stages of ``distill-and-export`` before the report, in order (data, teacher, distill, …, bench)."""
        ...

    def bench_run(self, settings: Any, layout: Any) -> None:
        """Benchmark every variant of a run folder (``compresskit.run.RunLayout``) with ``settings`` (what
        ``settings()`` made), writing ``layout.bench``: the bench stage, and ``compresskit bench --run-dir``."""
        ...

    def add_commands(self, cli: Any) -> None:
        """Declare the family's own commands (its stages one at a time, answering with an exported model) with
        ``cli.command(name, *options)`` (``compresskit.cli.app.Commands``)."""
        ...

    def collect(self, layout: Any) -> Collected:
        """What the report reads from this family's run folder besides bench.json (see ``Collected``)."""
        ...

    def report_columns(self) -> list[Column]:
        """The quality columns of the report's variant table."""
        ...

    def report_lines(self, report: dict[str, Any]) -> list[tuple[str, str]]:
        """(label, text) lines the report shows in its header after the shared ones (how the figures were taken)."""
        ...

    def report_sections(self, report: dict[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
        """The family's sections of the report: (title, [(model name, text)]) each, e.g. how each ONNX graph was
        built; the renderers bold the name and escape the text."""
        ...

    def metrics(self, row: dict[str, Any]) -> dict[str, float]:
        """The numeric quality figures of one report row that ``compare`` sets side by side, by dotted field name
        (finite numbers only)."""
        ...

    def decision_workloads(self, variants: list[dict[str, Any]]) -> list[Any]:
        """The speed figures the decision ranks variants by (``decision.Workload``), the main one first (what
        ``chosen`` is fastest at); the others give ``by_workload``."""
        ...

    def budget_interval(self, gate: str, row: dict[str, Any], teacher: dict[str, Any], report: dict[str, Any]
                        ) -> tuple[float, float] | None:
        """The 95 % interval of the number a budget term judges for ``row`` against ``teacher`` (the accuracy drop,
        the perplexity ratio, the agreement), paired over the same examples; None where the report cannot give one."""
        ...

    def value_interval(self, field: str, row: dict[str, Any], report: dict[str, Any]) -> tuple[float, float] | None:
        """The 95 % interval of one quality figure of ``row`` (``accuracy``), or None."""
        ...

    def card(self, report: dict[str, Any], row: dict[str, Any]) -> Any:
        """What the shipped variant's model card says that only the family knows (``deploy.CardFacts``): the
        pipeline tag, the metrics, how to run it."""
        ...

    def compare_notes(self, baseline: dict[str, Any], current: dict[str, Any], common: list[str]
                      ) -> dict[str, Any]:
        """What else ``compare`` must say about two reports of this family (e.g. another exported graph was chosen,
        so latency compares two graphs); merged into compare.json. ``common``: the variant names in both."""
        ...
