"""The benchmark harness every task family runs on: each variant measured in fresh worker processes, in rounds.

Why a process per variant and per round: peak RSS is a per-process figure, and a model loaded earlier (or torch's
own allocations) would otherwise be counted against the next one; and on a shared machine one process of a model
can run 10–30 % faster or slower than the next (where its memory and threads land), a difference no number of timed
runs inside one process shows. So every variant is measured in ``rounds`` processes, round by round across the
variants, so that a machine slowing down over the run weighs on every variant alike.

The family gives the workers (a module run as ``python -m MODULE SPEC RESULT``, whose ``main`` calls
``worker_main``) and what to make of their results; this module holds what both families do the same way: the
spawn and its JSON contract, the round loop, the pooling of timed samples over rounds, the checks of the settings
every family shares (``--rounds``, ``--threads``, ``--device``), and the ``bench.json`` record.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compresskit.artifacts import UserError, folder_size_mb, write_json
from compresskit.timing import Latency
from compresskit.variants import Variant

DEVICES = ("auto", "cpu", "cuda")
"""Where the PyTorch variants run (``--device``); ``auto`` is CUDA when torch sees a GPU."""


def harness_problems(rounds: object, threads: int | None, device: str) -> list[str]:
    """What is wrong with the settings every family's benchmark shares, one message per problem naming its flag."""
    problems = []
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 50:
        problems.append(f"--rounds must be an integer from 1 to 50, got {rounds!r}")
    if threads is not None and threads < 1:
        problems.append(f"--threads must be >= 1, got {threads}")
    if device not in DEVICES:
        problems.append(f"--device must be auto, cpu or cuda, got {device!r}")
    return problems


@dataclass(frozen=True)
class BenchResult:
    """What a benchmark measured, as written to ``bench.json``: one row per variant (the report's ``variants``)."""

    task: str
    sequence_length: int
    test_samples: int
    threads: int
    reference_teacher: str | None
    machine: dict[str, Any]
    variants: list[dict[str, Any]]
    seq_lengths: list[int] = dataclasses.field(default_factory=list)
    """Every sequence length timed (each variant's ``workloads`` holds its cells); empty where the family times
    no sequence sweep."""
    skipped: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Variants that were not measured: ``{"name", "model", "reason"}`` (a teacher form this machine cannot run)."""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (bench.json)."""
        return dataclasses.asdict(self)

    def __getitem__(self, key: str) -> Any:
        """bench.json's keys read the same fields, for code that reads the JSON form (``result["variants"]``)."""
        return getattr(self, key)


def model_size_mb(v: Variant) -> float:
    """Bytes on disk of the weights (safetensors for PyTorch, the graph and its data for ONNX, the pickle of a
    scikit-learn model), in MB."""
    suffixes = {"pytorch": (".safetensors",), "sklearn": (".pkl",)}.get(v.format, (".onnx", ".data"))
    return round(folder_size_mb(v.path, suffixes), 3)


def run_worker(module: str, v: Variant, cfg: Any, inputs: Path, workdir: Path, threads: int,
               extra: dict[str, Any] | None = None, tag: str = "") -> dict[str, Any]:
    """Measure ``v`` in a fresh ``python -m module SPEC RESULT`` process (its spec: the variant, ``cfg``, the inputs
    file, the thread count and ``extra``) and return its result. A worker that exits 2 refused its input: a one-line
    UserError naming the variant; any other failure is reported with its last line of stderr."""
    spec = workdir / f"{v.name}{tag}.spec.json"
    result = workdir / f"{v.name}{tag}.result.json"
    write_json(spec, {"variant": dataclasses.asdict(v), "config": dataclasses.asdict(cfg), "inputs": str(inputs),
                      "threads": threads, **(extra or {})})
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", module, str(spec), str(result)], env=env, capture_output=True,
                          text=True, check=False)
    last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    if proc.returncode == UserError.exit_code:  # the worker's own one-line refusal
        raise UserError(f"{v.name}: {last}")
    if proc.returncode != 0 or not result.is_file():
        raise RuntimeError(f"benchmark of {v.name} failed: {last}")
    return json.loads(result.read_text(encoding="utf-8"))


def worker_main(measure: Callable[[dict[str, Any]], dict[str, Any]], argv: list[str] | None = None) -> None:
    """The worker's side of ``run_worker``: read the spec file named first in ``argv`` (default ``sys.argv[1:]``),
    ``measure`` it, and write the result to the file named second. A ``UserError`` is one line on stderr and exit
    code 2, which ``run_worker`` turns back into a UserError naming the variant."""
    spec_path, result_path = (sys.argv[1:] if argv is None else argv)[:2]
    spec = json.loads(Path(spec_path).read_text(encoding="utf-8"))
    try:
        result = measure(spec)
    except UserError as e:
        print(str(e).splitlines()[0] if str(e) else "UserError", file=sys.stderr)
        sys.exit(UserError.exit_code)
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")


def run_rounds(variants: list[Variant], rounds: int, measure: Callable[[Variant, int], dict[str, Any]],
               status: Callable[[str], None], describe: Callable[[Variant, int, int], str]
               ) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """Measure every variant ``rounds`` times, round by round across the variants: ``measure(v, r)`` (r from 1) runs
    one worker and returns its result. A round-1 result holding ``skipped`` (a form this machine cannot run) drops
    the variant from later rounds. Returns each measured variant's results in round order, and the skipped ones
    as ``{"name", "model", "reason"}``; ``status`` shows ``describe(v, i, r)`` before each measurement."""
    results: dict[str, list[dict[str, Any]]] = {}
    skipped: list[dict[str, Any]] = []
    for r in range(1, rounds + 1):
        active = variants if r == 1 else [v for v in variants if v.name in results]
        for i, v in enumerate(active, 1):
            status(describe(v, i, r))
            res = measure(v, r)
            if r == 1 and "skipped" in res:
                skipped.append({"name": v.name, "model": v.model, "reason": res["skipped"]})
                continue
            results.setdefault(v.name, []).append(res)
    return results, skipped


def pool_samples(per_round: list[list[float]]) -> tuple[Latency, list[float]]:
    """Timed samples (ms) of several rounds as one pool: its summary, and each round's median in round order (the
    spread between processes that ``compare``'s latency interval is built from). Rounds without samples count for
    neither."""
    pooled = [float(x) for s in per_round for x in s]
    return Latency.from_samples(pooled), [float(np.median(s)) for s in per_round if len(s)]
