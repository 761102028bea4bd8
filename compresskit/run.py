"""The layout of one run folder (``export/<run-name>/``) and its ``run.json`` identity record.

Layout::

    run.json              resolved configuration, teacher source, stage status, and the size and SHA-256 of
                          every file of each finished output (checked before a rerun reuses it)
    data/                 the split (data stage)
    teacher/              the fine-tuned teacher (hard links into the cache when fine-tuned here)
    student/              the distilled student
    onnx/teacher/         ONNX exports, each self-contained
    onnx/student/
    onnx/student-quantized/
    bench/                per-variant measurements (bench.json)
    report.json, report.md, report.html

While a run works in it, ``<run folder>.lock`` beside it is locked (``run_lock``): a second run on the folder is
refused at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compresskit import __version__
from compresskit.artifacts import UserError, file_manifest, manifest_problem, read_json, sha256_json, write_json


@dataclass(frozen=True)
class RunLayout:
    """Paths of a run folder's artifacts."""

    root: Path

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def teacher(self) -> Path:
        return self.root / "teacher"

    @property
    def student(self) -> Path:
        return self.root / "student"

    def recorded_teacher(self, default: Path | None = None) -> Path:
        """Where the teacher stage left the teacher (``run.json`` records it: the run's ``teacher/`` folder, the
        user's own folder or a cache entry); before that stage ran, ``default`` (else ``teacher/``)."""
        run = read_json(self.record) if self.record.is_file() else {}
        stage = run.get("stages", {}).get("teacher")
        return Path(stage["path"]) if stage else (default if default is not None else self.teacher)

    def onnx(self, name: str) -> Path:
        """Folder of an ONNX variant: ``teacher``, ``student`` or ``student-quantized``."""
        return self.root / "onnx" / name

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    @property
    def baseline(self) -> Path:
        """The classical TF-IDF baseline fitted on the run's training split."""
        return self.root / "baseline"

    @property
    def lock(self) -> Path:
        """Beside the folder, not in it: ``--overwrite`` removes the folder while the lock is held."""
        return self.root.with_name(f"{self.root.name}.lock")


def slug(text: str) -> str:
    """A file-name-safe lower-case name."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "run"


def default_run_name(dataset: str, teacher: str, suffix: str = "") -> str:
    """A run folder's name from its data and teacher: ``bbc-news-all-minilm-l6-v2`` (a file's stem for a data file,
    the folder's name for a teacher folder), with a family's ``suffix`` (``-lm``)."""
    from compresskit.corpus import BBC_NEWS

    data = dataset if dataset == BBC_NEWS else Path(dataset).stem
    return slug(f"{data}-{Path(teacher.rstrip('/')).name}{suffix}")


def run_identity(config: dict[str, Any]) -> str:
    """What makes two runs the same run: every artifact-shaping option and the compresskit version."""
    return sha256_json({"config": config, "compresskit": __version__})


@contextlib.contextmanager
def run_lock(layout: RunLayout) -> Iterator[Path]:
    """Hold the run folder's lock file for the ``with`` block; a run that holds it already is a one-line UserError
    naming it (pid, host, start time).

    Why ``flock``: the kernel releases it when the holder's process ends however it ends, so a run killed with
    ``kill -9`` (a cancelled CI job) leaves no lock that must be removed by hand; the pid written in the file only
    serves the message. On release the file is removed while still locked, and a taker checks that the file it locked
    is still the one at the path, so two runs can never each hold a different file of the same name.
    """
    path = layout.lock
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(fd)
            os.close(fd)
            raise UserError(f"{layout.root} is in use by another run ({holder}); wait for it to end, or choose "
                            f"another --run-name (the lock, {path}, goes when that process ends)") from None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the previous holder removed this file after we opened it: lock the path's new file
    try:
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                 "command": " ".join(sys.argv)[:2000]}).encode())
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        os.close(fd)


def _lock_holder(fd: int) -> str:
    """Who holds a lock file, from what it wrote into it: ``pid 123 on host, started 2026-01-31T12:00:00Z``."""
    try:
        info = json.loads(os.pread(fd, 1 << 16, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:  # taken a moment ago, its details not written yet
        return "its details are not written yet"
    return f"pid {info['pid']} on {info.get('host', '?')}, started {info.get('started', '?')}"


def claim_run_dir(layout: RunLayout, config: dict[str, Any], overwrite: bool, task: str) -> bool:
    """Make ``layout.root`` this run of the ``task`` family's folder. Returns True when an earlier, identical run is
    resumed. ``run.json`` records the identity of ``config`` and the family (what ``tasks.task_of_run`` reads).

    A folder holding a different run (or anything that is not a run) is refused unless ``overwrite``: a CI job
    must never mix artifacts of two configurations in one report.
    """
    identity = run_identity(config)
    root = layout.root
    if root.exists() and not root.is_dir():
        raise UserError(f"output path {root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()):
        same = layout.record.is_file() and read_json(layout.record).get("identity") == identity
        if overwrite:
            shutil.rmtree(root)
        elif not same:
            raise UserError(f"{root} holds another run; pass --overwrite to replace it, or choose another --run-name")
        else:
            _remove_leftovers(root)
            return True
    root.mkdir(parents=True, exist_ok=True)
    write_json(layout.record, {"schema_version": 1, "identity": identity, "task": task, "config": config,
                               "stages": {}})
    return False


def _remove_leftovers(root: Path) -> None:
    """Temporary folders and files of a stage that was killed (kill -9 skips the cleanup in ``atomic_dir`` and
    ``atomic_file``)."""
    # .quantize-*: quantize's scratch folder beside its output (onnx/), a TemporaryDirectory that kill -9 leaves
    for pattern in (".*.tmp-*", "*/.*.tmp-*", ".*.tmp", "*/.*.tmp", "*/.quantize-*"):
        for p in root.glob(pattern):
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def record_stage(layout: RunLayout, stage: str, info: dict[str, Any]) -> None:
    """Note in ``run.json`` that a stage finished and where its output is."""
    record = read_json(layout.record)
    record.setdefault("stages", {})[stage] = info
    write_json(layout.record, record)


def _output_key(layout: RunLayout, folder: Path) -> str:
    """How ``run.json`` names an output folder: relative to the run folder (``onnx/student``), else its full path."""
    folder = Path(folder)
    try:
        return folder.relative_to(layout.root).as_posix()
    except ValueError:
        return str(folder)


def _digest(manifest: dict[str, dict[str, Any]], record_file: str | None) -> str:
    """The content of an output that later stages read: every file but the stage's own record, whose timings
    differ on every run, so a stage made again with the same result does not make every later stage stale."""
    return sha256_json({k: v["sha256"] for k, v in manifest.items() if k != record_file})


def record_output(layout: RunLayout, folder: Path, inputs: tuple[Path, ...] = (), record_file: str | None = None
                  ) -> None:
    """Note in ``run.json`` that a stage's output ``folder`` is finished: size and SHA-256 of each of its files, and
    the content of the outputs it was made from (``inputs``), so that ``check_output`` can tell later whether it is
    still whole and still made from what the run has now."""
    manifest = file_manifest(folder)
    record = read_json(layout.record)
    outputs = record.setdefault("outputs", {})
    outputs[_output_key(layout, folder)] = {
        "files": manifest, "digest": _digest(manifest, record_file),
        "inputs": {_output_key(layout, i): outputs.get(_output_key(layout, i), {}).get("digest") for i in inputs},
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(layout.record, record)


NOT_MADE = "not made yet"


def check_output(layout: RunLayout, folder: Path, inputs: tuple[Path, ...] = ()) -> str | None:
    """None when ``folder`` can be reused: ``run.json`` records it as finished, every recorded file is there with its
    size and SHA-256, and its inputs are as they were when it was made. Else why not: ``NOT_MADE``, or the damaged
    file, or the input made again with another content.

    Why a record and not just the folder: stages publish their folders whole (``atomic_dir``), but a file can still
    be cut or changed afterwards (a full disk while copying a cache, a half-restored CI cache, a hand edit); reading
    it would fail late with an unclear message, or worse, not fail.
    """
    outputs = read_json(layout.record).get("outputs", {}) if layout.record.is_file() else {}
    made = outputs.get(_output_key(layout, folder))
    if made is None or not Path(folder).is_dir():
        return NOT_MADE
    problem = manifest_problem(folder, made["files"])
    if problem:
        return problem
    for i in inputs:
        key = _output_key(layout, i)
        if made["inputs"].get(key) != outputs.get(key, {}).get("digest"):
            return f"{key} was made again with another content"
    return None


def reuse_or_make(layout: RunLayout, folder: Path, make: Callable[[], Any], inputs: tuple[Path, ...] = (),
                  record_file: str | None = None) -> str:
    """Reuse the stage output ``folder`` when ``check_output`` finds it whole, else run ``make`` (which writes it) and
    record it (``record_output``). Returns a line for the console: what was reused, or why it was made again.

    An output published but not recorded (the run was killed between the two, a moment) is made again: without its
    record nothing tells that it is whole."""
    why = check_output(layout, folder, inputs)
    if why is None:
        files = len(read_json(layout.record)["outputs"][_output_key(layout, folder)]["files"])
        return f"reused {_output_key(layout, folder)}/ ({files} files as recorded)"
    make()
    record_output(layout, folder, inputs, record_file)
    return f"made {_output_key(layout, folder)}/" + ("" if why == NOT_MADE else f" again: {why}")


def link_tree(src: Path, dst: Path) -> None:
    """Copy a folder as hard links where the file system allows (a cached teacher costs no extra disk)."""
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)

    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    shutil.copytree(src, tmp, copy_function=link)
    if dst.exists():
        shutil.rmtree(dst)
    os.replace(tmp, dst)
