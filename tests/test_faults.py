"""Faults a CI job meets, on the real CLI with a tiny model: kill -9 in every stage, a finished output damaged
afterwards, a full disk, a teacher folder cut short. After each, the same command must finish, reuse only what is
whole, and give the accuracies of a run that met no fault. (Two runs at once: tests/test_run_lock.py.)

How a stage is caught in progress: from the run folder (its Trainer checkpoint, or its temporary folder, appearing),
then the test sends SIGKILL from outside. The data split and the report take milliseconds on this data, too short to
catch from outside, so for them the subprocess kills itself as it is about to publish the output (``BOOT`` below: the
test's own fault-injection hook, run before the CLI; the product has none). ``benchmarks/fault_battery.py`` runs the
same scenarios and prints what it saw.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_rows, save_tiny_bert

RUN = "tiny"
"""The run folder's name under each output root."""

# A test-side hook run in the CLI's process before the CLI itself, driven by environment variables:
#   FAULT_KILL_AT_PUBLISH=<path>  kill -9 the process as it is about to rename a finished output into <path>
#   FAULT_ENOSPC=<module>:<function>:<i>  that writer writes as usual, is cut to half of its bytes in the file that
#                                         is its argument i, then fails as a full disk does: OSError(ENOSPC);
#                                         with FAULT_ENOSPC_UNDER=<dir>, only for files under <dir>
BOOT = r"""
import errno, importlib, os, signal, sys

kill_at = os.environ.get("FAULT_KILL_AT_PUBLISH")
if kill_at:
    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.path.abspath(dst) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace

spec = os.environ.get("FAULT_ENOSPC")
if spec:
    module, name, index = spec.split(":")
    where = importlib.import_module(module)
    real_writer = getattr(where, name)

    def full_disk(*args, **kwargs):
        path = args[int(index)]
        real_writer(*args, **kwargs)
        if not os.path.abspath(path).startswith(os.environ.get("FAULT_ENOSPC_UNDER", "/")):
            return
        data = open(path, "rb").read()
        with open(path, "wb") as f:
            f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    setattr(where, name, full_disk)

sys.argv = ["compresskit", *sys.argv[1:]]
from compresskit.cli import main

main()
"""


def fast_args() -> list[str]:
    """A tiny run that takes about half a minute on 2 cores: one export candidate, few timed runs, the teacher only in
    its plain PyTorch form (when bench knows other forms)."""
    from compresskit.tasks.classification.bench import BenchConfig

    args = ["--teacher-epochs", "8", "--teacher-learning-rate", "2e-3", "--epochs", "3", "--learning-rate", "2e-3",
            "--student-layers", "1", "--max-length", "32", "--sequence-length", "32", "--batch-sizes", "1",
            "--iterations", "3", "--min-seconds", "0", "--rounds", "1", "--threads", "1", "--device", "cpu",
            "--exporter", "torchscript", "--attention", "eager", "--cls-only", "off", "--skip-layer-norm", "fused"]
    if "teacher_forms" in {f.name for f in dataclasses.fields(BenchConfig)}:
        args += ["--teacher-forms", "none"]
    return args


@dataclasses.dataclass
class Inputs:
    """The tiny teacher (a bare encoder: it is fine-tuned first) and data of every scenario."""

    teacher: Path
    data: Path


def make_inputs(folder: Path) -> Inputs:
    """A random bare encoder and the tiny three-topic CSV, in ``folder``."""
    import csv

    teacher = save_tiny_bert(folder / "encoder")
    data = folder / "tiny.csv"
    with open(data, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["text", "label"])
        w.writeheader()
        w.writerows(make_rows())
    return Inputs(teacher, data)


@dataclasses.dataclass
class Outcome:
    """One CLI invocation: exit code (-9 when killed), its console (stderr) and its stdout."""

    code: int
    console: str
    stdout: str
    seconds: float

    def error_line(self) -> str:
        """The first line that starts with ``error:`` or ``internal error:`` (empty when none)."""
        return next((line for line in self.console.splitlines() if "error:" in line), "")

    def notes(self) -> list[str]:
        """The console's lines about reuse: ``reused data/ (…)``, ``made student/ again: …``."""
        return [line.strip() for line in self.console.splitlines() if line.strip().startswith(("reused ", "made "))]

    def reused(self) -> list[str]:
        return [n.split()[1] for n in self.notes() if n.startswith("reused ")]

    def made(self) -> list[str]:
        return [n.split()[1] for n in self.notes() if n.startswith("made ")]


def distill_and_export(root: Path, inputs: Inputs, env: dict[str, str] | None = None, kill_when: str | None = None,
                       teacher: Path | None = None) -> Outcome:
    """``compresskit distill-and-export`` into ``root/tiny`` in a subprocess (through ``BOOT``). ``kill_when``: a glob
    under ``root``; the process is sent SIGKILL as soon as it matches."""
    args = ["distill-and-export", "--teacher", str(teacher or inputs.teacher), "--dataset", str(inputs.data),
            "--output-root", str(root), "--run-name", RUN, *fast_args()]
    logs = root.parent / f".{root.name}-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with open(logs / "stdout", "w+") as out, open(logs / "stderr", "w+") as err:
        proc = subprocess.Popen([sys.executable, "-c", BOOT, *args], stdout=out, stderr=err,
                                env={**os.environ, "COLUMNS": "400", "HF_HUB_OFFLINE": "1",
                                     "TOKENIZERS_PARALLELISM": "false", **(env or {})})
        try:
            while proc.poll() is None:
                if kill_when and next(root.glob(kill_when), None) is not None:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait()
                    break
                time.sleep(0.01)
                if time.time() - started > 600:
                    raise TimeoutError(f"distill-and-export took over 600 s: {args}")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        out.seek(0)
        err.seek(0)
        return Outcome(proc.returncode, err.read(), out.read(), time.time() - started)


KILL_POINTS: dict[str, tuple[str, str]] = {
    # stage: ("appears", glob under the output root that shows it in progress) or ("publish", output it is killed at)
    "data": ("publish", f"{RUN}/data"),
    "teacher": ("appears", ".cache/.teacher-*.checkpoints/checkpoint-*/trainer_state.json"),
    "distill": ("appears", f"{RUN}/.student.checkpoints/checkpoint-*/trainer_state.json"),
    "export": ("appears", f"{RUN}/onnx/.student.tmp-*"),
    "quantize": ("appears", f"{RUN}/onnx/.student-quantized.tmp-*"),
    "bench": ("appears", f"{RUN}/.bench.tmp-*"),
    "report": ("publish", f"{RUN}/report.md"),
}
"""Where each stage of distill-and-export is caught in progress (see the module docstring)."""


def kill_in(stage: str, root: Path, inputs: Inputs) -> Outcome:
    """Run distill-and-export and kill it with SIGKILL while ``stage`` is in progress."""
    how, what = KILL_POINTS[stage]
    if how == "publish":
        return distill_and_export(root, inputs, env={"FAULT_KILL_AT_PUBLISH": str((root / what).absolute())})
    return distill_and_export(root, inputs, kill_when=what)


def outputs(root: Path) -> dict[str, dict]:
    """run.json's record of the finished outputs (folder → files, digest, inputs, finished)."""
    path = root / RUN / "run.json"
    return json.loads(path.read_text()).get("outputs", {}) if path.is_file() else {}


def quality(root: Path) -> dict[str, dict]:
    """What must not change between a run that met faults and one that did not: each variant's accuracy, macro-F1,
    agreement with the teacher and predicted label per test example (timings may)."""
    report = json.loads((root / RUN / "report.json").read_text())
    return {v["name"]: {k: v.get(k) for k in ("accuracy", "macro_f1", "agreement_with_teacher", "predictions")}
            for v in report["variants"]}


def leftovers(root: Path) -> list[str]:
    """Temporary files or folders left in the run folder or the cache (a checkpoint folder is not one: it is kept
    on purpose, to resume)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".tmp" in p.name or p.name.startswith(".quantize-"))


def truncate(path: Path) -> None:
    """Cut ``path`` to half its size in place (what a full disk or an interrupted copy leaves)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def flip_last_byte(path: Path) -> None:
    """Change ``path``'s last byte in place: same size, other content."""
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def damage_outputs(root: Path) -> dict[str, Path]:
    """Damage one file of each finished output after the teacher, and the teacher-output cache, of the run in
    ``root``; returns the files by what they are. (The teacher: ``damage_teacher``. Made again, it would change the
    teacher-output cache's key, so that cache's damage would never be read.)"""
    run, cache = root / RUN, root / ".cache"
    damaged = {
        "data split (train.jsonl, cut)": run / "data" / "train.jsonl",
        "student (model.safetensors, cut)": run / "student" / "model.safetensors",
        "student ONNX (model.onnx, cut)": run / "onnx" / "student" / "model.onnx",
        "teacher-output cache (logits.npy, one byte changed)": next(cache.glob("teacher-outputs-*/logits.npy")),
        "bench.json (cut)": run / "bench" / "bench.json",
    }
    for what, path in damaged.items():
        (flip_last_byte if "changed" in what else truncate)(path)
    return damaged


def damage_teacher(root: Path) -> Path:
    """Cut the fine-tuned teacher's weights in the cache entry and in the run's teacher/ folder (in a run they are
    one file, hard links; a copied run has two); returns the cache entry's file."""
    entry = next(p for p in (root / ".cache").glob("teacher-*") if (p / "finetune.json").is_file())
    truncate(entry / "model.safetensors")
    teacher = root / RUN / "teacher" / "model.safetensors"
    if not os.path.samefile(teacher, entry / "model.safetensors"):
        truncate(teacher)
    return entry / "model.safetensors"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return make_inputs(tmp_path_factory.mktemp("fault-inputs"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory, inputs) -> Path:
    """An output root holding one run that met no fault."""
    root = tmp_path_factory.mktemp("reference") / "out"
    outcome = distill_and_export(root, inputs)
    assert outcome.code == 0, outcome.console[-3000:]
    return root


# ---------------------------------------------------------------- 1. kill -9 in every stage


def test_kill_9_in_every_stage_then_the_same_command_finishes_as_if_nothing_happened(tmp_path, inputs, reference):
    """One run folder, killed in each stage in turn: each restart reuses exactly the outputs the runs before it
    finished, redoes the stage that was killed (resuming its training from the last checkpoint), takes the lock the
    killed run held, and the last one ends with the accuracies and predictions of the run that met no fault."""
    root = tmp_path / "out"
    finished: dict[str, str] = {}  # output folder → when it was recorded finished
    for stage in KILL_POINTS:
        outcome = kill_in(stage, root, inputs)
        assert outcome.code == -signal.SIGKILL, (stage, outcome.code, outcome.console[-3000:])
        now = outputs(root)
        for folder, when in finished.items():  # reused, not redone
            assert now[folder]["finished"] == when, (stage, folder)
            assert f"{folder}/" in outcome.reused(), (stage, folder, outcome.notes())
        finished = {k: v["finished"] for k, v in now.items()}
    expected = {"data", "teacher", "student", "onnx/teacher", "onnx/student", "onnx/student-quantized",
                "onnx/teacher-quantized", "baseline"}
    assert set(finished) == expected
    last = distill_and_export(root, inputs)
    assert last.code == 0, last.console[-3000:]
    assert sorted(last.reused()) == sorted(f"{k}/" for k in expected) and last.made() == []
    assert quality(root) == quality(reference)
    assert leftovers(root) == [] and not (root / f"{RUN}.lock").exists()
    # both trainings were killed after a checkpoint and resumed from it, and gave the same student, byte for byte
    for record in ("teacher/finetune.json", "student/distill.json"):
        assert json.loads((root / RUN / record).read_text())["resumed_from"].startswith("checkpoint-"), record
    assert outputs(root)["student"]["files"]["model.safetensors"] == outputs(reference)["student"]["files"][
        "model.safetensors"]


# ---------------------------------------------------------------- 2. nothing damaged is read


def test_a_damaged_output_or_cache_entry_is_found_and_made_again(tmp_path, inputs, reference):
    root = tmp_path / "out"
    shutil.copytree(reference, root)
    damage_outputs(root)
    outcome = distill_and_export(root, inputs)
    assert outcome.code == 0, outcome.console[-3000:]
    again = {n.split()[1]: n for n in outcome.notes() if " again: " in n}
    assert set(again) == {"data/", "student/", "onnx/student/"}, outcome.notes()
    assert "train.jsonl is " in again["data/"] and "when it was made" in again["data/"]
    assert "model.safetensors" in again["student/"] and "model.onnx" in again["onnx/student/"]
    assert {"teacher/", "onnx/teacher/", "baseline/"} <= set(outcome.reused())  # data/ was remade with the same content
    assert "teacher-output cache: " in outcome.console and "logits.npy has changed" in outcome.console
    assert quality(root) == quality(reference)
    logits = next((root / ".cache").glob("teacher-outputs-*/logits.npy"))
    assert logits.read_bytes() == next((reference / ".cache").glob("teacher-outputs-*/logits.npy")).read_bytes()
    assert leftovers(root) == []


def test_a_stage_made_again_with_the_same_content_does_not_make_later_stages_stale(tmp_path, inputs, reference):
    """The split and the fine-tuned teacher (run folder and cache entry) are cut and made again: same content, so the
    student and the exports are still reused."""
    root = tmp_path / "out"
    shutil.copytree(reference, root)
    truncate(root / RUN / "data" / "validation.jsonl")
    weights = damage_teacher(root)
    outcome = distill_and_export(root, inputs)
    assert outcome.code == 0, outcome.console[-3000:]
    assert outcome.made() == ["data/", "teacher/"], outcome.notes()
    assert f"cache entry made again: {weights} is " in outcome.console
    assert set(outcome.reused()) == {"student/", "onnx/teacher/", "onnx/student/", "onnx/student-quantized/",
                                     "onnx/teacher-quantized/", "baseline/"}
    assert quality(root) == quality(reference)


def test_run_records_find_every_kind_of_damage(tmp_path):
    from compresskit.artifacts import write_json
    from compresskit.run import NOT_MADE, RunLayout, check_output, record_output

    layout = RunLayout(tmp_path / "run")
    write_json(layout.record, {"identity": "x", "stages": {}})
    a, b = layout.root / "a", layout.root / "b"
    write_json(a / "x.json", {"v": 1})
    assert check_output(layout, a) == NOT_MADE
    record_output(layout, a)
    (b / "sub").mkdir(parents=True)
    (b / "sub" / "w.bin").write_bytes(b"12345678")
    record_output(layout, b, (a,))
    assert check_output(layout, a) is None and check_output(layout, b, (a,)) is None
    flip_last_byte(b / "sub" / "w.bin")
    assert "w.bin has changed since it was made" in check_output(layout, b, (a,))
    (b / "sub" / "w.bin").write_bytes(b"1234")
    assert "w.bin is 4 bytes, 8 when it was made" in check_output(layout, b, (a,))
    (b / "sub" / "w.bin").unlink()
    assert "w.bin is missing" in check_output(layout, b, (a,))
    (b / "sub" / "w.bin").write_bytes(b"12345678")
    write_json(a / "x.json", {"v": 2})  # same size, other content: a made again differently
    record_output(layout, a)
    assert check_output(layout, b, (a,)) == "a was made again with another content"


def test_teacher_output_cache_never_serves_a_cut_file(tmp_path):
    import numpy as np

    from compresskit.tasks.classification.teacher_cache import drop_damaged, file_problem

    folder = tmp_path / "teacher-outputs-x"
    folder.mkdir()
    np.save(folder / "logits.npy", np.arange(300, dtype=np.float32).reshape(100, 3))
    assert file_problem(folder / "logits.npy") is None  # published before its checksum: adopted
    assert (folder / "logits.npy.sha256").read_text().endswith("  logits.npy\n")
    truncate(folder / "logits.npy")
    assert "is truncated" in drop_damaged(folder, ["logits.npy"])[0]
    assert sorted(p.name for p in folder.iterdir()) == []


def test_fine_tuned_teacher_cache_entry_is_checked_before_reuse(tmp_path, tiny_encoder, tiny_data):
    from compresskit.tasks.classification.finetune import cached_or_finetune, entry_problem
    from compresskit.training import FinetuneConfig, TrainConfig

    cfg = FinetuneConfig(TrainConfig(epochs=1, learning_rate=2e-3, max_length=32, device="cpu"))
    first = cached_or_finetune(cfg, str(tiny_encoder), tiny_data, tmp_path)
    assert not first.reused and entry_problem(first.model_dir) is None
    assert cached_or_finetune(cfg, str(tiny_encoder), tiny_data, tmp_path).reused
    truncate(first.model_dir / "model.safetensors")
    again = cached_or_finetune(cfg, str(tiny_encoder), tiny_data, tmp_path)
    assert not again.reused and "model.safetensors is " in again.damaged and entry_problem(again.model_dir) is None


# ---------------------------------------------------------------- 4. a full disk


def test_a_full_disk_while_caching_teacher_outputs_or_exporting_is_one_line_and_a_rerun_resumes(
        tmp_path, inputs, reference):
    """From a finished run whose student and teacher graph must be made again and whose teacher-output cache is gone:
    the disk fills while the teacher's outputs are cached, then while the teacher is exported; each time one line,
    exit 2, nothing half-written; with space, the same command finishes from where it stopped."""
    root = tmp_path / "out"
    shutil.copytree(reference, root)
    shutil.rmtree(next((root / ".cache").glob("teacher-outputs-*")))
    truncate(root / RUN / "student" / "model.safetensors")
    truncate(root / RUN / "onnx" / "teacher" / "model.onnx")
    cache_full = distill_and_export(root, inputs,
                                    env={"FAULT_ENOSPC": "compresskit.tasks.classification.teacher_cache:_save:1"})
    assert cache_full.code == 2 and "Traceback" not in cache_full.console, cache_full.console[-3000:]
    line = cache_full.error_line()
    assert line.startswith("error: no space left on device while writing ") and "logits.npy" in line
    assert " MB free there" in line
    entries = list((root / ".cache").glob("teacher-outputs-*"))
    assert entries and all(not any(e.iterdir()) for e in entries)  # no cut cache file, no temporary file
    # only the export stage's disk is full: the teacher's graph for its ONNX Runtime logits (a temporary folder)
    # must still be written, or the student would be trained on PyTorch's logits and differ by a few ulps
    export_full = distill_and_export(root, inputs, env={"FAULT_ENOSPC": "torch.onnx:export:2",
                                                        "FAULT_ENOSPC_UNDER": str(root / RUN / "onnx")})
    assert export_full.code == 2 and "Traceback" not in export_full.console, export_full.console[-3000:]
    assert export_full.error_line().startswith(
        f"error: no space left on device while writing {root / RUN / 'onnx' / 'teacher'}: ")
    assert set(export_full.reused()) == {"data/", "teacher/"} and export_full.made() == ["student/"]
    assert not list((root / RUN / "onnx").glob(".teacher.tmp-*"))  # the damaged graph stays, found again next time
    with_space = distill_and_export(root, inputs)
    assert with_space.code == 0, with_space.console[-3000:]
    assert with_space.made() == ["onnx/teacher/"], with_space.notes()
    assert set(with_space.reused()) == {"data/", "teacher/", "student/", "onnx/student/", "onnx/student-quantized/",
                                        "onnx/teacher-quantized/", "baseline/"}
    assert quality(root) == quality(reference) and leftovers(root) == []


def test_atomic_writers_turn_enospc_into_one_line_naming_the_artifact(tmp_path):
    from compresskit.artifacts import DiskFullError, atomic_dir, atomic_file

    def fill(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(DiskFullError) as e, atomic_file(tmp_path / "a.npy") as tmp:
        fill(tmp)
    assert str(e.value).startswith(f"no space left on device while writing {tmp_path / 'a.npy'}: ")
    with pytest.raises(DiskFullError) as e, atomic_dir(tmp_path / "out") as tmp:
        with atomic_file(tmp / "model.onnx") as f:  # nested: the message names the folder being made
            fill(f)
    assert f"while writing {tmp_path / 'out'}: " in str(e.value) and e.value.exit_code == 2
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- 5. a teacher folder cut short


@pytest.mark.parametrize("damage, needle", [
    (lambda d: truncate(d / "model.safetensors"), "model.safetensors is truncated"),
    (lambda d: (d / "config.json").write_text('{"model_type": "bert", '), "config.json is not valid JSON"),
    (lambda d: truncate(d / "tokenizer.json"), "tokenizer.json is not valid JSON"),
], ids=["weights-cut", "config-not-json", "tokenizer-cut"])
def test_a_teacher_folder_cut_short_is_refused_in_one_line_before_anything_is_written(tmp_path, inputs, damage,
                                                                                        needle):
    teacher = tmp_path / "teacher"
    shutil.copytree(inputs.teacher, teacher)
    damage(teacher)
    from compresskit.artifacts import UserError
    from compresskit.models import resolve_model_source

    with pytest.raises(UserError, match=needle):
        resolve_model_source(str(teacher))
    if "safetensors" not in needle:
        return  # one of the three through the CLI is enough: the others fail at the same check
    root = tmp_path / "out"
    outcome = distill_and_export(root, inputs, teacher=teacher)
    assert outcome.code == 2 and "Traceback" not in outcome.console, outcome.console[-3000:]
    lines = [line for line in outcome.console.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: {teacher / 'model.safetensors'} is truncated: ")
    assert "download or copy the model again" in lines[0]
    assert not root.exists()


def test_a_damaged_weights_file_found_only_at_load_time_names_the_model(tmp_path, inputs):
    """When the header is whole but the weights are not (the cheap check passes), loading still says which model."""
    from compresskit.artifacts import UserError
    from compresskit.models import LoadOptions
    from compresskit.tasks.classification.models import load_classifier

    teacher = tmp_path / "teacher"
    shutil.copytree(inputs.teacher, teacher)
    path = teacher / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:16] = b"\xff" * 8  # the JSON header is garbage now
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=f"{teacher}"):
        load_classifier(str(teacher), LoadOptions())
