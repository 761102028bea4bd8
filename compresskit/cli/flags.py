"""How one command-line option is declared, the parsers of list-valued flags, and the settings every family builds
the same way from the shared flags (trust, training, the teacher's fine-tuning): what the core's option table
(``cli.options``) and each task family's (``tasks/<family>/options.py``) are written with.

Nothing here imports a task family or the command-line app, so a family's options module can import it while the
core assembles the families' tables.
"""

from __future__ import annotations

import inspect
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from compresskit.artifacts import UserError
from compresskit.models import LoadOptions

REQUIRED = inspect.Parameter.empty
"""The default of an option that has none: the command refuses to run without it."""

# Help panels: `--help` shows each as a section of its own, so a long list reads as groups on an 80-column terminal.
RUN = "Run"
FOLDERS = "Folders"
DATA = "Data"
TEACHER = "Teacher"
STUDENT = "Student and distillation"
EXPORT = "Export"
QUANTIZATION = "Quantization"
BENCHMARK = "Benchmark"
GATES = "Quality gates"
OUTPUT = "Output"


@dataclass(frozen=True)
class Opt:
    """One option: the type of its value, its default, and typer's declaration (flag, help and panel)."""

    type: Any
    default: Any
    declaration: Any  # typer.models.OptionInfo
    choices: tuple[str, ...] = ()
    """The only values allowed, checked by ``cli.options.check_choices`` (most options are checked by their stage
    instead)."""
    pipeline: bool = True
    """Whether ``distill-and-export`` takes it (a setting of the run); False for a stage command's own folders and
    for flags only one command reads (the sweep's grid, ``predict --json``)."""

    @property
    def value_type(self) -> type:
        """The type of a given value: ``Optional[int]`` → ``int`` (a config file cannot say None)."""
        args = [a for a in typing.get_args(self.type) if a is not type(None)]
        return args[0] if typing.get_origin(self.type) is typing.Union else self.type

    def parameter(self, name: str, optional: bool = False) -> inspect.Parameter:
        """The parameter typer reads from a command's signature; ``optional`` makes a required option default to
        None (a command that has its own default for it)."""
        default = None if optional and self.default is REQUIRED else self.default
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                 annotation=Annotated[Optional[self.type] if optional else self.type,
                                                      self.declaration])


def panel(name: str, options: dict[str, Opt]) -> dict[str, Opt]:
    """``options`` shown under the ``--help`` panel ``name``."""
    for opt in options.values():
        opt.declaration.rich_help_panel = name
    return options


def flag(name: str) -> str:
    """The flag of an option: ``student_layers`` → ``--student-layers``."""
    return "--" + name.replace("_", "-")


def joined(values: tuple, sep: str = ",") -> str:
    """A tuple default as the comma-separated text its flag takes: (1, 32) → ``1,32``."""
    return sep.join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def names(text: str) -> tuple[str, ...]:
    """``a, b`` → ``("a", "b")``."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def ints(spec: str, flag_name: str = "--batch-sizes", example: str = "1,32") -> tuple[int, ...]:
    """Comma-separated integers (``1,32``); a one-line UserError naming ``flag_name`` otherwise."""
    try:
        return tuple(int(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag_name} must be comma-separated integers like {example}, got {spec!r}") from None


def floats(flag_name: str, spec: str) -> tuple[float, ...]:
    """Comma-separated numbers; a one-line UserError naming ``flag_name`` otherwise."""
    try:
        return tuple(float(x) for x in spec.split(",") if x.strip())
    except ValueError:
        raise UserError(f"{flag_name} must be comma-separated numbers, got {spec!r}") from None


# --- the settings every family builds the same way from the shared flags

def load_options(o: dict[str, Any]) -> LoadOptions:
    """How far to trust model sources (``--trust-remote-code``, ``--allow-pickle``)."""
    return LoadOptions(trust_remote_code=o["trust_remote_code"], allow_pickle=o["allow_pickle"])


def train_config(o: dict[str, Any], epochs: float, learning_rate: float, checkpoints: bool = True) -> Any:
    """Optimisation settings of one training run (``training.TrainConfig``) from the shared training flags;
    ``checkpoints=False`` leaves out ``--save-steps`` and ``--early-stopping-patience`` (distill-and-export gives them
    to the student only)."""
    from compresskit.training import TrainConfig

    return TrainConfig(epochs=epochs, learning_rate=learning_rate, batch_size=o["batch_size"],
                       max_length=o["max_length"], device=o["device"], precision=o["precision"],
                       gradient_accumulation=o["gradient_accumulation"], seed=o["seed"], fsdp=o["fsdp"],
                       save_steps=o["save_steps"] if checkpoints else None,
                       early_stopping_patience=o["early_stopping_patience"] if checkpoints else None)


def finetune_config(o: dict[str, Any], checkpoints: bool = True) -> Any:
    """The teacher's fine-tuning (``training.FinetuneConfig``: ``--teacher-epochs``, ``--teacher-learning-rate`` and
    the shared training flags), in every family."""
    from compresskit.training import FinetuneConfig

    return FinetuneConfig(train_config(o, o["teacher_epochs"], o["teacher_learning_rate"], checkpoints),
                          load_options(o))
