"""Small shared pieces for stages that talk through folders on disk: errors, atomic writes, hashes, records."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input from the user: the CLI prints the message as one line and exits with code 2."""

    exit_code = 2


class VerificationError(Exception):
    """An exported or quantized model does not match its source: the run must fail, not warn (exit code 3)."""

    exit_code = 3


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (temp file + rename) so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_json_default)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    """Read a JSON artifact, turning a missing or corrupt file into a one-line user error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the stage that makes it first") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def _json_default(o: Any) -> Any:
    if dataclasses.is_dataclass(o) and not isinstance(o, type):
        return dataclasses.asdict(o)
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(final: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling folder; on success it replaces ``final``, on any error it is removed.

    Why: a stage that fails half-way (a failed parity check, Ctrl-C) must leave no artifact that the next
    stage, or a user, could mistake for a finished one.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists; pass --overwrite to replace it")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj: Any) -> str:
    """Stable hash of a JSON-able object (keys sorted), used as a cache key."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_json_default).encode()).hexdigest()


def folder_size_mb(path: Path, suffixes: tuple[str, ...] | None = None) -> float:
    """Size in MB (10^6 bytes) of the files under ``path`` (optionally only those with given suffixes)."""
    path = Path(path)
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return sum(p.stat().st_size for p in files if suffixes is None or p.suffix in suffixes) / 1e6


def stage_record(stage: str, config: Any, inputs: dict[str, Any], started: float, **extra: Any) -> dict[str, Any]:
    """What a stage writes beside its output: resolved config, inputs, versions, timing (house style #3)."""
    from compresskit.machine import library_versions

    return {
        "stage": stage,
        "config": config,
        "inputs": inputs,
        "versions": library_versions(),
        "seconds": round(time.time() - started, 3),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }


def free_bytes(path: Path) -> int:
    """Free disk space where ``path`` (or its nearest existing parent) lives."""
    p = Path(path).resolve()
    while not p.exists():
        p = p.parent
    return shutil.disk_usage(p).free
