"""Small shared pieces for stages that talk through folders on disk: errors, atomic writes, hashes, records."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
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


class DiskFullError(UserError):
    """The disk filled up while an artifact was written (``atomic_file`` / ``atomic_dir`` turn ENOSPC into this):
    one line naming what was being written and the space left, exit code 2. Nothing half-written is left, so the
    same command resumes once there is space."""

    def __init__(self, path: Path):
        self.path = Path(path)
        super().__init__(f"no space left on device while writing {self.path}: {free_bytes(self.path.parent) / 1e6:,.0f}"
                         " MB free there; free some space and run the same command again (finished stages are "
                         "reused)")


def _disk_full(e: BaseException) -> bool:
    """Whether ``e`` says the disk is full. Also by its text: libraries pass the OSError on wrapped in their own
    exception or as a string (an exporter's RuntimeError, export's record of each failed candidate)."""
    if isinstance(e, DiskFullError) or (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)):
        return True
    return isinstance(e, Exception) and any(os.strerror(n) in str(e) for n in (errno.ENOSPC, errno.EDQUOT))


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
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if _disk_full(e):
            raise DiskFullError(path) from None
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
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e):  # name the artifact, not a file in its temporary folder
            raise DiskFullError(final) from None
        raise


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """Size and SHA-256 of every file under ``folder``, by path relative to it: what a finished stage's output was,
    so that a later run can tell a damaged one (``manifest_problem``) before it reads it."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return {p.relative_to(folder).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256_file(p)} for p in files}


def manifest_problem(folder: Path, recorded: dict[str, dict[str, Any]]) -> str | None:
    """What differs between the files under ``folder`` and ``recorded`` (a ``file_manifest``): the first missing file,
    file of another size, or file with other bytes; None when every recorded file is as it was. Sizes are compared
    before any file is hashed, so a truncated file is found without reading the others."""
    folder = Path(folder)
    for name, want in recorded.items():
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        size = path.stat().st_size
        if size != want["bytes"]:
            return f"{path} is {size:,} bytes, {want['bytes']:,} when it was made"
    for name, want in recorded.items():
        if sha256_file(folder / name) != want["sha256"]:
            return f"{folder / name} has changed since it was made (SHA-256 differs)"
    return None


def truncation_problem(path: Path) -> str | None:
    """Why ``path`` cannot be whole, from its own header, without a record of it: a ``.safetensors`` or ``.npy``
    file shorter (or longer) than its header says, or a ``.json`` file that does not parse; None when it looks whole.

    Why: an interrupted download or copy, or a full disk, leaves a file that starts well and stops; the libraries
    that read these files then fail with messages that do not name the file, or (a memory map) only when the missing
    part is touched. Reads the header only (and JSON files whole).
    """
    path = Path(path)
    size = path.stat().st_size
    try:
        if path.suffix == ".json":
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                return f"{path} is not valid JSON ({e.msg} at line {e.lineno}, of {size:,} bytes)"
            return None
        with open(path, "rb") as f:
            if path.suffix == ".safetensors":
                head = f.read(8)
                n = int.from_bytes(head, "little") if len(head) == 8 else None
                if n is None or 8 + n > size:
                    return f"{path} is truncated: {size:,} bytes, shorter than its own header"
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
                want = 8 + n + end
            elif path.suffix == ".npy":
                import numpy as np

                version = np.lib.format.read_magic(f)
                read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                        else np.lib.format.read_array_header_2_0)
                shape, _, dtype = read(f)
                count = 1
                for d in shape:
                    count *= d
                want = f.tell() + count * dtype.itemsize
            else:
                return None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:  # JSON, numpy header or offsets unreadable
        return f"{path} is truncated or damaged ({first_line(e)})"
    if size != want:
        return f"{path} is {'truncated' if size < want else 'damaged'}: {size:,} bytes, its header describes {want:,}"
    return None


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
