"""Task families: what differs between classifying text and generating it sits behind one small ``Protocol``.

The pipeline's stages (data → teacher → distil → export → quantize → bench → report → gates) stay the same for every
task; each asks its task for the parts that differ: the data, the training targets, the export spec, the parity
rule, the quality metrics, the benchmark workloads, the report columns and the metric the gates read.

``python -m compresskit.tasks`` lists the families and what each needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from compresskit.artifacts import UserError
# Defined beside the exporter that reads it: the stages import nothing from tasks, so no module imports itself back.
from compresskit.torch_export import ExportSpec  # noqa: F401  (part of the task interface)

AUTO = "auto"


@dataclass(frozen=True)
class Workload:
    """One benchmark workload: ``batch`` inputs of ``sequence_length`` tokens through one forward pass."""

    batch: int
    sequence_length: int

    @property
    def key(self) -> str:
        """The key of this workload in a variant's ``latency_ms`` (``batch_32``)."""
        return f"batch_{self.batch}"


@dataclass(frozen=True)
class Column:
    """A column of the report's variant table: the variant field it shows, how, and which way is better."""

    header: str
    field: str
    spec: str = "{:.2f}"
    scale: float = 1.0
    higher_is_better: bool = True


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


class Task(Protocol):
    """What a task family provides to the shared pipeline."""

    name: str
    """The ``--task`` value and report.json's ``task``."""
    summary: str
    """One line: what the task does."""
    needs: str
    """What a user must bring: the teacher's kind, the data's form."""
    quality_metric: str
    """The variant field the accuracy gate compares (higher is better)."""

    def default_run_name(self, cfg: Any) -> str:
        """The run folder's name when ``--run-name`` is not given, from the data and the teacher."""
        ...

    def preflight(self, cfg: Any, cache: Path) -> Any:
        """Check the teacher and the data before anything is written (one-line UserError on bad input); returns
        what the stages need of it. ``cache`` is the shared cache folder (an embedded teacher is built there)."""
        ...

    def stages(self, ctx: StageContext) -> list[Stage]:
        """The stages of ``distill-and-export`` before the report, in order (data, teacher, distill, …, bench)."""
        ...

    def load_examples(self, cfg: Any) -> tuple[list[str], list[str], str]:
        """Load ``(inputs, targets, source description)`` of the data set ``cfg`` names; UserError on bad data."""
        ...

    def check_teacher(self, config: Any, targets: list[str], finetune_mode: str, source: str) -> bool:
        """Check the teacher can serve this data; return whether it must be fine-tuned first."""
        ...

    def export_spec(self, input_names: Sequence[str]) -> ExportSpec:
        """The graph's inputs, outputs and dynamic axes for a model fed ``input_names``."""
        ...

    def parity(self, model: str, reference: str, got: np.ndarray, want: np.ndarray, tolerance: float | None,
               min_agreement: float, targets: np.ndarray | None = None) -> Any:
        """Compare a converted model's outputs with its source's (a ``verify.Parity``)."""
        ...

    def quality(self, outputs: np.ndarray, gold: np.ndarray, reference: np.ndarray | None, classes: int
                ) -> dict[str, float | None]:
        """The quality metrics of one variant's predictions on the test split."""
        ...

    def workloads(self, batch_sizes: Sequence[int], sequence_length: int) -> list[Workload]:
        """What the benchmark times for each variant."""
        ...

    def report_columns(self) -> list[Column]:
        """The quality columns of the report's variant table."""
        ...


def families() -> dict[str, Task]:
    """The task families that run today, by ``--task`` name."""
    from compresskit.tasks.causal_lm import CAUSAL_LM
    from compresskit.tasks.classification import TEXT_CLASSIFICATION

    return {TEXT_CLASSIFICATION.name: TEXT_CLASSIFICATION, CAUSAL_LM.name: CAUSAL_LM}



def task_names() -> list[str]:
    """The ``--task`` values that run today."""
    return list(families())


def get_task(name: str) -> Task:
    """The task family called ``name``; a one-line UserError for an unknown one."""
    built = families()
    if name in built:
        return built[name]
    raise UserError(f"--task must be auto or one of {', '.join(built)}, got {name!r}")


def infer_task(config: Any) -> str:
    """The task family a teacher's config implies: a causal LM (``*ForCausalLM``, ``*LMHeadModel``) is
    ``causal-lm``; an encoder, with or without a classification head, is ``text-classification``."""
    archs = getattr(config, "architectures", None) or []
    if any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in archs) or getattr(config, "is_decoder", False):
        return "causal-lm"
    return "text-classification"


def resolve_task(name: str, config: Any) -> Task:
    """``--task`` as given, or inferred from the teacher's config when it is ``auto``."""
    return get_task(infer_task(config) if name == AUTO else name)


def model_shape(config: Any) -> dict[str, Any]:
    """Depth and width of a model from its config, whatever the family calls them (``num_hidden_layers`` in BERT
    and Llama, ``n_layer`` in GPT-2): read through optimum's normalized configs, which map each family's names."""
    from optimum.utils import NormalizedConfigManager

    model_type = getattr(config, "model_type", None)
    try:
        normalized = NormalizedConfigManager.get_normalized_config_class(model_type)(config)
    except (KeyError, AttributeError):  # a family optimum does not know: the common names, where present
        normalized = None

    def read(attr: str, *names: str) -> Any:
        if normalized is not None:
            try:
                return getattr(normalized, attr)
            except AttributeError:
                pass
        return next((getattr(config, n) for n in names if getattr(config, n, None) is not None), None)

    return {"model_type": model_type, "layers": read("num_layers", "num_hidden_layers", "n_layer"),
            "hidden_size": read("hidden_size", "hidden_size", "n_embd"),
            "heads": read("num_attention_heads", "num_attention_heads", "n_head"),
            "intermediate_size": getattr(config, "intermediate_size", None)}
