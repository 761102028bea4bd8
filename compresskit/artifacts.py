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
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input from the user: the CLI prints the message as one line and exits with code 2."""

    exit_code = 2


class VerificationError(Exception):
    """An exported or quantized model does not match its source: the run must fail, not warn (exit code 3)."""

    exit_code = 3


@contextlib.contextmanager
def atomic_file(path: Path, replace: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write; on success it is renamed to ``path``, on any error removed.

    Why: readers (a later stage, a user, another rank) see either the old file or the whole new one, never half of
    it, and a killed run leaves no file that could be mistaken for a finished one. ``replace=False`` keeps a file that
    appeared at ``path`` meanwhile (another process that wrote the same content first) and drops the new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique name created here, not by mkstemp: mkstemp makes the file 0600, and a renamed artifact would keep that
    # mode instead of the umask's that every other file of the folder gets.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    tmp.touch(exist_ok=False)
    try:
        yield tmp
        if not replace and path.exists():
            tmp.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: Path, data: str | bytes, replace: bool = True) -> None:
    """Write ``data`` (text as UTF-8, or bytes) to ``path`` through ``atomic_file``."""
    with atomic_file(path, replace) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically (``write_atomic``) so a crash never leaves half a file."""
    write_atomic(path, json.dumps(obj, indent=2, default=_json_default) + "\n")


def read_json(path: Path) -> Any:
    """Read a JSON artifact, turning a missing or corrupt file into a one-line user error."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} does not exist: run the stage that makes it first") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e.msg} at line {e.lineno})") from None


def first_line(e: BaseException) -> str:
    """The first line of an exception's message (its type's name when it has none), for one-line user messages."""
    return str(e).splitlines()[0] if str(e) else type(e).__name__


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
