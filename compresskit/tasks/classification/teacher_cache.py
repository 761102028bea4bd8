"""The teacher-output cache: the teacher runs once over a text set, and epochs, reruns and sweeps read its outputs
from disk.

One folder per (teacher, texts, sequence length), under ``<cache root>/teacher-outputs-<key>/``, one ``.npy`` file
per output, so a run that needs a layer an earlier run did not store computes only what is missing:

- ``logits.npy`` ``(n, classes)`` float32: the soft targets;
- ``hidden-<i>.npy`` ``(n, max_length, width)`` float16: ``hidden_states[i]`` of the teacher (0 = embeddings,
  i = output of layer i − 1), only when a hidden-state or embedding term needs it;
- ``attention-<l>.npy`` ``(n, heads, max_length, max_length)`` float16: layer l's attention probabilities, only
  when the attention-transfer term needs them;
- ``lengths.npy`` ``(n,)``: real tokens per text. Row r of a token-level file holds text r's tokens at
  positions ``0..length-1`` whatever the tokenizer's padding side; the rest is zero.

Why float16 for the inner activations: they are large (BBC News at 128 tokens: 175 MB per hidden layer, 700 MB
per attention layer in float16) and feed MSE-type losses whose targets do not need more than float16's 3
significant digits. The files are memory-mapped, so a batch reads only its own rows.

Each file is published whole (written under a temporary name, then renamed), and beside it ``<file>.sha256``
(``sha256sum`` format) records its content. Before a file is served, its size is checked against its own header and
its bytes against that checksum: a file cut short or changed since (a full disk while a CI cache was saved, a
half-restored cache) is removed and computed again, never read.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from compresskit.artifacts import atomic_file, sha256_file, sha256_json, truncation_problem, write_atomic


@dataclass(frozen=True)
class TeacherNeeds:
    """Which teacher outputs the losses of a run read."""

    logits: bool = False
    """The logits (soft targets, logit MSE)."""
    hidden: tuple[int, ...] = ()
    """Indices into the teacher's ``hidden_states`` (0 = embeddings)."""
    attentions: tuple[int, ...] = ()
    """Teacher layers whose attention probabilities are needed."""

    @property
    def activations(self) -> bool:
        """Whether any token-level output (hidden states, attentions) is needed."""
        return bool(self.hidden or self.attentions)

    def files(self) -> list[str]:
        """The cache files these needs read (``lengths.npy`` goes with any token-level file)."""
        names = (["logits.npy"] if self.logits else []) + [f"hidden-{i}.npy" for i in self.hidden]
        names += [f"attention-{i}.npy" for i in self.attentions]
        return names + (["lengths.npy"] if self.activations else [])


@dataclass
class TeacherOutputs:
    """The teacher's outputs on one text set, row r for text r (arrays are memory-mapped where large)."""

    logits: np.ndarray | None = None
    hidden: dict[int, np.ndarray] = field(default_factory=dict)
    attentions: dict[int, np.ndarray] = field(default_factory=dict)
    lengths: np.ndarray | None = None
    folder: Path | None = None

    def row(self, r: int) -> dict[str, Any]:
        """What one training example carries to the collator: its logits and its (unpadded) activations."""
        item: dict[str, Any] = {}
        if self.logits is not None:
            item["teacher_logits"] = self.logits[r]
        if self.hidden or self.attentions:
            n = int(self.lengths[r])
            if self.hidden:
                item["teacher_hidden"] = {i: a[r, :n] for i, a in self.hidden.items()}
            if self.attentions:
                item["teacher_attentions"] = {i: a[r, :, :n, :n] for i, a in self.attentions.items()}
        return item


def texts_key(teacher_fingerprint: str, texts: list[str], max_length: int) -> str:
    """Cache key: the teacher's weights and settings, the exact texts in order, and the sequence length."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return sha256_json({"teacher": teacher_fingerprint, "texts": h.hexdigest(), "max_length": max_length,
                        "n": len(texts)})[:16]


def activation_bytes(needs: TeacherNeeds, n: int, max_length: int, config: Any) -> int:
    """Disk bytes the token-level files of ``needs`` take for ``n`` texts (float16)."""
    per_hidden = n * max_length * config.hidden_size * 2
    per_attention = n * config.num_attention_heads * max_length * max_length * 2
    return len(needs.hidden) * per_hidden + len(needs.attentions) * per_attention


def _open(path: Path) -> np.ndarray:
    # memory-mapped: a training batch pages in only its own rows of a multi-GB file
    return np.load(path, mmap_mode="r")


def load(folder: Path, needs: TeacherNeeds) -> TeacherOutputs:
    """The cached outputs in ``folder`` that ``needs`` names (all files must exist)."""
    out = TeacherOutputs(folder=folder)
    if needs.logits:
        out.logits = np.load(folder / "logits.npy")
    out.hidden = {i: _open(folder / f"hidden-{i}.npy") for i in needs.hidden}
    out.attentions = {i: _open(folder / f"attention-{i}.npy") for i in needs.attentions}
    if needs.activations:
        out.lengths = np.load(folder / "lengths.npy")
    return out


def _checksum_path(path: Path) -> Path:
    return path.with_name(f"{path.name}.sha256")


def _write_checksum(path: Path) -> None:
    """Record ``path``'s SHA-256 beside it (``sha256sum -c`` reads it too); one already there is kept."""
    write_atomic(_checksum_path(path), f"{sha256_file(path)}  {path.name}\n", replace=False)


def file_problem(path: Path) -> str | None:
    """Why the cache file ``path`` must not be served, or None when it is whole: shorter or longer than its .npy
    header says, or bytes other than its ``.sha256`` records. A file without a checksum (its writer was killed between
    publishing the file and its checksum, or a cache made before checksums) was published whole by its rename, so once
    its header agrees with its size its checksum is recorded now."""
    problem = truncation_problem(path)
    if problem:
        return problem
    checksum = _checksum_path(path)
    if not checksum.is_file():
        _write_checksum(path)
        return None
    want = checksum.read_text(encoding="utf-8").split(maxsplit=1)[:1]
    if want != [sha256_file(path)]:
        return f"{path} has changed since it was written (its SHA-256 differs from {checksum.name})"
    return None


def drop_damaged(folder: Path, names: list[str]) -> list[str]:
    """Remove the files of ``names`` in ``folder`` that ``file_problem`` finds damaged (and their checksums), so they
    are computed again; returns the problems found."""
    problems = []
    for name in names:
        path = folder / name
        if path.is_file():
            problem = file_problem(path)
            if problem:
                problems.append(problem)
                path.unlink(missing_ok=True)
                _checksum_path(path).unlink(missing_ok=True)
    return problems


def _reserve(path: Path) -> None:
    """Allocate a new memory-mapped file's blocks now. Why: writes through a memory map into a sparse file that the
    full disk cannot back kill the process with SIGBUS; reserved up front, a full disk is an ENOSPC error here."""
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), 0, os.fstat(f.fileno()).st_size)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):  # a file system without fallocate
                raise


def _save(array: np.ndarray, tmp: Path) -> None:
    """Write ``array`` as .npy to exactly ``tmp`` (through a file object: np.save appends .npy to a bare name)."""
    with open(tmp, "wb") as f:
        np.save(f, array)


@torch.inference_mode()
def compute(teacher: Any, tokenizer: Any, texts: list[str], max_length: int, needs: TeacherNeeds, folder: Path,
            device: str, batch_size: int = 64, desc: str | None = "teacher outputs") -> None:
    """Run the teacher once over ``texts`` and write the files of ``needs`` that ``folder`` lacks.

    Files are filled under a unique temporary name and renamed when all are complete (``atomic_file``), so a killed
    run leaves no file that a later run could mistake for a finished one; a concurrent rank that published a file
    first keeps it (same content).
    """
    folder.mkdir(parents=True, exist_ok=True)
    missing = [name for name in needs.files() if not (folder / name).is_file()]
    if not missing:
        return
    n = len(texts)
    config = teacher.config
    arrays: dict[str, np.ndarray] = {}
    try:
        with contextlib.ExitStack() as files:
            tmp = {name: files.enter_context(atomic_file(folder / name, replace=False)) for name in missing}
            files.callback(arrays.clear)  # the memory maps close before their files are renamed or removed
            for name, path in tmp.items():
                if name == "logits.npy":
                    arrays[name] = np.zeros((n, config.num_labels), dtype=np.float32)
                elif name == "lengths.npy":
                    arrays[name] = np.zeros(n, dtype=np.int32)
                elif name.startswith("hidden-"):
                    arrays[name] = np.lib.format.open_memmap(path, "w+", np.float16,
                                                             (n, max_length, config.hidden_size))
                    _reserve(path)
                else:
                    arrays[name] = np.lib.format.open_memmap(
                        path, "w+", np.float16, (n, config.num_attention_heads, max_length, max_length))
                    _reserve(path)
            _fill(teacher, tokenizer, texts, max_length, arrays, device, batch_size, desc)
            for name, arr in arrays.items():
                if isinstance(arr, np.memmap):
                    arr.flush()
                else:
                    _save(arr, tmp[name])
        for name in missing:
            _write_checksum(folder / name)
    finally:
        teacher.to("cpu")


def _fill(teacher: Any, tokenizer: Any, texts: list[str], max_length: int, arrays: dict[str, np.ndarray],
          device: str, batch_size: int, desc: str | None) -> None:
    """Run the teacher over ``texts`` in batches and write its outputs into ``arrays`` (keyed by cache file name),
    row r for text r, token-level outputs at positions ``0..length-1``."""
    from rich.progress import track

    want_hidden = any(m.startswith("hidden-") for m in arrays)
    want_attn = any(m.startswith("attention-") for m in arrays)
    teacher = teacher.to(device).eval()
    left = getattr(tokenizer, "padding_side", "right") == "left"
    starts = range(0, len(texts), batch_size)
    for s in track(starts, description=desc, transient=True) if desc else starts:
        enc = tokenizer(texts[s:s + batch_size], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt").to(device)
        out = teacher(**enc, output_hidden_states=want_hidden or None, output_attentions=want_attn or None)
        lengths = enc["attention_mask"].sum(-1).cpu().numpy()
        width = enc["attention_mask"].shape[1]
        for name, arr in arrays.items():
            if name == "logits.npy":
                arr[s:s + len(lengths)] = out.logits.float().cpu().numpy()
            elif name == "lengths.npy":
                arr[s:s + len(lengths)] = lengths
            else:
                index = int(name.split("-")[1].split(".")[0])
                src = (out.hidden_states if name.startswith("hidden-") else out.attentions)[index]
                src = src.to(torch.float16).cpu().numpy()
                for j, k in enumerate(lengths):
                    k = int(k)
                    lo = width - k if left else 0  # real tokens sit at the end under left padding
                    if name.startswith("hidden-"):
                        arr[s + j, :k] = src[j, lo:lo + k]
                    else:
                        arr[s + j, :, :k, :k] = src[j, :, lo:lo + k, lo:lo + k]


ORT_PARITY = 1e-4
"""Largest |ONNX Runtime − PyTorch| teacher logit accepted before the ONNX Runtime pass is used (measured on
the first batch; MiniLM-L6 on BBC News differs by 5e-6)."""


def logits_with_onnx_runtime(teacher: Any, tokenizer: Any, texts: list[str], max_length: int,
                             batch_size: int = 32, desc: str | None = "teacher logits (ONNX Runtime)"
                             ) -> np.ndarray | None:
    """The teacher's logits computed by ONNX Runtime on its exported, fused graph; None when that is not possible.

    Why: on a CPU the fused graph runs about 2.2× faster than PyTorch eager (BBC News teacher, 2 cores), and the
    export takes about 2 s, so a cold cache costs half as much. The graph is checked against PyTorch on the first
    batch and dropped (PyTorch computes everything) if it differs by more than ``ORT_PARITY`` or fails to export.
    """
    import tempfile
    import warnings

    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return None
    from rich.progress import track

    from compresskit.onnx.sessions import make_session, run_logits, tokenize_numpy
    from compresskit.onnx.torch_export import optimize_graph, torch_export

    previous = teacher.config._attn_implementation
    batches = [texts[s:s + batch_size] for s in range(0, len(texts), batch_size)]
    try:
        with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = Path(tmp) / "teacher.onnx"
            teacher.set_attn_implementation("eager")  # the pattern ONNX Runtime fuses into Attention
            first = tokenize_numpy(tokenizer, batches[0], max_length)
            torch_export(teacher.cpu().eval(), {k: v[:2] for k, v in first.items()}, path, "torchscript", opset=17)
            optimize_graph(path, teacher.config)
            session = make_session(path)
            with torch.inference_mode():
                reference = teacher(**{k: torch.from_numpy(v) for k, v in first.items()}).logits.float().numpy()
            out = [run_logits(session, first)]
            if not np.abs(out[0] - reference).max() <= ORT_PARITY:
                return None
            rest = range(1, len(batches))
            for i in track(rest, description=desc, transient=True) if desc else rest:
                out.append(run_logits(session, tokenize_numpy(tokenizer, batches[i], max_length)))
            return np.concatenate(out)
    except Exception:  # a speed path: any export or runtime failure leaves the job to PyTorch
        return None
    finally:
        teacher.set_attn_implementation(previous)


def teacher_outputs(teacher: Any, tokenizer: Any, fingerprint: str, texts: list[str], max_length: int,
                    needs: TeacherNeeds, cache_root: Path, device: str) -> TeacherOutputs:
    """The teacher's outputs on ``texts``, computed only where the cache lacks them.

    When only the logits are missing and the teacher runs on the CPU, ONNX Runtime computes them
    (``logits_with_onnx_runtime``); ``cache.json`` records which runtime made them.
    """
    folder = Path(cache_root) / f"teacher-outputs-{texts_key(fingerprint, texts, max_length)}"
    for problem in drop_damaged(folder, needs.files()):
        from rich.console import Console

        Console(stderr=True).print(f"teacher-output cache: {problem}: computing it again", highlight=False)
    runtime = None
    only_logits_missing = all((folder / f).is_file() for f in needs.files() if f != "logits.npy")
    # with activations to compute, PyTorch's pass yields the logits too, so ONNX Runtime would only add work
    if needs.logits and not (folder / "logits.npy").is_file() and only_logits_missing and device == "cpu" and texts:
        logits = logits_with_onnx_runtime(teacher, tokenizer, texts, max_length)
        if logits is not None:
            with atomic_file(folder / "logits.npy", replace=False) as tmp:
                _save(logits, tmp)
            _write_checksum(folder / "logits.npy")
            runtime = "onnxruntime"
    if runtime is None and needs.logits and not (folder / "logits.npy").is_file():
        runtime = "pytorch"
    compute(teacher, tokenizer, texts, max_length, needs, folder, device)
    info = folder / "cache.json"
    if not info.is_file():
        write_atomic(info, json.dumps({"teacher": fingerprint, "texts": len(texts), "max_length": max_length,
                                       "logits_runtime": runtime}), replace=False)
    return load(folder, needs)
