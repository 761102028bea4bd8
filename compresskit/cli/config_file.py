"""Options in a TOML file: ``distill-and-export --config compress.toml``, and the ``config.toml`` a run leaves.

The file is flat: one key per option, the flag without its dashes (``student-layers = "0,5"``; ``student_layers``
works too), with a TOML value of the option's type. A run writes every resolved option to ``config.toml`` in its
folder, so ``--config <run>/config.toml`` gives the same settings, hence the same run, which resumes.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from compresskit.artifacts import UserError, write_atomic

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, from PyPI
    import tomli as tomllib

_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path (a string)"}


def read_config_file(path: Path, types: dict[str, type]) -> dict[str, Any]:
    """The options in the TOML file ``path``, by option name (``student_layers``), as values of ``types[name]``.

    ``types`` maps each option the command takes to the type of its value (``bool``, ``int``, ``float``, ``str`` or
    ``Path``). A missing or malformed file, an unknown key, a key given twice (``a-b`` and ``a_b``) or a value of
    another type is refused with one line that names the file and the key.
    """
    path = Path(path)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"--config {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--config {path} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"--config {path} is not valid TOML: {e}") from None
    values: dict[str, Any] = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in types:
            raise UserError(f"--config {path}: unknown option {key!r} (keys are the command's flags without the "
                            "dashes, e.g. student-layers)")
        if name in values:
            raise UserError(f"--config {path}: option {key!r} is given twice")
        values[name] = _typed(value, types[name], f"--config {path}: {key}")
    return values


def _typed(value: Any, kind: type, where: str) -> Any:
    """``value`` as a ``kind``, or a UserError naming ``where``. TOML's own types decide: ``"4"`` is not a number,
    and ``1`` is not ``true`` (bool is an int in Python, so it is told apart first)."""
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str),
          Path: isinstance(value, str)}[kind]
    if not ok:
        shown = "a table" if isinstance(value, dict) else "a list" if isinstance(value, list) else repr(value)
        raise UserError(f"{where} must be {_KINDS[kind]}, got {shown}")
    return float(value) if kind is float else Path(value) if kind is Path else value


def write_config_file(path: Path, values: dict[str, Any]) -> None:
    """Write ``values`` (option name → value) as a flat TOML file that ``read_config_file`` reads back to the same
    values, atomically. None values are left out: an option absent from the file keeps its default.

    Written by hand since the standard library only reads TOML: strings quoted and escaped, bools lower-case,
    numbers as Python prints them (``repr`` of a float reads back to the same float).
    """
    lines = ["# compresskit distill-and-export --config <this file> repeats this run (same settings: it resumes).",
             "# Keys are the flags without their dashes; a flag given on the command line overrides its key."]
    lines += [f"{name.replace('_', '-')} = {toml_value(v)}" for name, v in values.items() if v is not None]
    write_atomic(Path(path), "\n".join(lines) + "\n")


def toml_value(value: Any) -> str:
    """One TOML value: ``True`` → ``true``, ``4.0`` → ``4.0``, ``Path('x')`` → ``"x"``, quotes escaped."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value)  # 1e-05, 2.0, inf and -inf are TOML floats as Python prints them
    if isinstance(value, (str, Path)):
        return _toml_string(str(value))
    raise TypeError(f"no TOML form for a {type(value).__name__}: {value!r}")


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(text: str) -> str:
    """A TOML basic string: quotes and backslashes escaped, and control characters, which TOML forbids raw."""
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'
