"""Fault battery: what a CI job that is killed, fills its disk, runs twice at once or gets a damaged teacher loses.

    python benchmarks/fault_battery.py [--keep DIR]

Runs ``compresskit distill-and-export`` as a user does (a subprocess) on a tiny random BERT and a tiny 3-topic data
set, meets it with each fault, then runs the same command again, and prints one Markdown table: the fault, what was
seen (exit code, first line of the message), what was lost (outputs made again, goal: only the one being made when
the fault came) and what the rerun gave (exit code, accuracies against a run that met no fault). About 6 minutes on
2 cores. The scenarios and how each stage is caught in progress are those of ``tests/test_faults.py``, whose helpers
this script uses (it needs the test dependencies: ``pip install -e '.[test]'``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_faults as F


def seen(outcome: F.Outcome, stage: str | None = None) -> str:
    """Exit code and the first line of the message (or which stage the kill caught)."""
    if outcome.code == -signal.SIGKILL:
        how, what = F.KILL_POINTS[stage]
        where = f"`{what}` appeared" if how == "appears" else f"about to publish `{what}`"
        return f"killed (SIGKILL) in {stage}: {where}"
    line = outcome.error_line()
    return f"exit {outcome.code}" + (f": `{line}`" if line else "")


def lost(outcome: F.Outcome, before: set[str], who: str = "the rerun") -> str:
    """Outputs that had been finished before and were made again by ``outcome`` (goal: none), then what it made."""
    redone = sorted(f"{k}/" for k in before if f"{k}/" in outcome.made())
    made = [m for m in outcome.made() if m.rstrip("/") not in before]
    out = "nothing" if not redone else f"**made again: {', '.join(redone)}**"
    return out + (f"; {who} made {', '.join(made)}" if made else "")


def resumed(root: Path, stage: str) -> str:
    """Whether the training of ``stage`` (teacher or distill) in the run in ``root`` resumed from a checkpoint."""
    record = {"teacher": "teacher/finetune.json", "distill": "student/distill.json"}.get(stage)
    path = root / F.RUN / record if record else None
    checkpoint = json.loads(path.read_text()).get("resumed_from") if path and path.is_file() else None
    return f" (training resumed from {checkpoint})" if checkpoint else ""


def rerun_result(outcome: F.Outcome, root: Path, reference: Path) -> str:
    """Exit code, reused outputs and whether the accuracies are those of the run that met no fault."""
    if outcome.code != 0:
        return f"exit {outcome.code}: `{outcome.error_line()}`"
    same = F.quality(root) == F.quality(reference)
    return (f"exit 0 in {outcome.seconds:.0f} s; reused {len(outcome.reused())} outputs; accuracies and predictions "
            + ("equal to the unfaulted run" if same else "**differ from the unfaulted run**"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temporary one)")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="fault-battery-"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[tuple[str, str, str, str]] = []
    try:
        inputs = F.make_inputs(work / "inputs")
        reference = work / "reference"
        ref = F.distill_and_export(reference, inputs)
        assert ref.code == 0, ref.console[-3000:]
        print(f"reference run: {ref.seconds:.0f} s", file=sys.stderr)

        # 1. kill -9 in each stage: one folder killed in every stage in turn; after each kill a copy of the folder is
        # run to the end, so each row's rerun starts from exactly what that kill left
        chain = work / "killed"
        for stage in F.KILL_POINTS:
            before = set(F.outputs(chain))
            killed = F.kill_in(stage, chain, inputs)
            state = set(F.outputs(chain))
            copy = work / f"rerun-after-{stage}"
            shutil.copytree(chain, copy)
            again = F.distill_and_export(copy, inputs)
            rows.append((f"kill -9 during **{stage}**", seen(killed, stage),
                         lost(again, state) + resumed(copy, stage) + ("" if before <= state else " (an output vanished!)"),
                         rerun_result(again, copy, reference)))
            print(f"kill in {stage}: {rows[-1]}", file=sys.stderr)
            shutil.rmtree(copy)

        # 2. a finished output damaged afterwards
        damaged_root = work / "damaged"
        shutil.copytree(reference, damaged_root)
        damaged = F.damage_outputs(damaged_root)
        before = set(F.outputs(damaged_root))
        again = F.distill_and_export(damaged_root, inputs)
        notes = again.notes() + [line.strip() for line in again.console.splitlines() if "teacher-output cache:" in line]
        for what, path in damaged.items():
            line = next((n for n in notes if str(path) in n), "")
            folder = next((n.split()[1] for n in again.notes() if str(path) in n), None)
            if "bench.json" in what:
                line, folder = "bench and report are always redone", "bench/"
            rows.append((f"{what} in a finished run", f"rerun: `{line}`" if line else "**not detected**",
                         f"{folder} made again, nothing else" if folder else "the cache file computed again",
                         rerun_result(again, damaged_root, reference)))
        extra = sorted(set(again.made()) - {"data/", "student/", "onnx/student/"})
        if extra:
            rows.append(("(damaged outputs above)", "", f"also made again: {', '.join(extra)}", ""))

        teacher_root = work / "damaged-teacher"
        shutil.copytree(reference, teacher_root)
        F.damage_teacher(teacher_root)
        again = F.distill_and_export(teacher_root, inputs)
        line = next((ln.strip() for ln in again.console.splitlines() if "cache entry made again" in ln), "")
        rows.append(("fine-tuned teacher cut (cache entry and run's teacher/)", f"rerun: `{line}`",
                     (f"{', '.join(again.made())} made again (fine-tuned again, same bytes: "
                      f"{', '.join(o for o in again.reused() if o != 'data/') or 'nothing'} reused)"),
                     rerun_result(again, teacher_root, reference)))

        # 3. two runs at once, then the first is killed
        busy = work / "busy"
        shutil.copytree(reference, busy)
        first = subprocess.Popen([sys.executable, "-c", F.BOOT, "distill-and-export", "--teacher",
                                  str(inputs.teacher), "--dataset", str(inputs.data), "--output-root", str(busy),
                                  "--run-name", F.RUN, *F.fast_args()], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        while not list(busy.glob(f"{F.RUN}/.bench.tmp-*")):
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)  # held still, lock and all, however long the second takes to start
        second = F.distill_and_export(busy, inputs)
        rows.append(("a second run on the same folder while the first runs", seen(second),
                     "nothing: the first run goes on", "(the first run is then killed: next row)"))
        first.send_signal(signal.SIGKILL)
        first.wait()
        third = F.distill_and_export(busy, inputs)
        rows.append(("the run holding the lock killed (kill -9)", "its lock file stays, its flock goes with it",
                     lost(third, set(F.outputs(busy))), rerun_result(third, busy, reference)))

        # 4. a full disk
        full = work / "full-disk"
        for what, spec in (("writing the teacher-output cache", "compresskit.tasks.classification.teacher_cache:_save:1"),
                           ("exporting to ONNX", "torch.onnx:export:2")):
            before = set(F.outputs(full))
            failed = F.distill_and_export(full, inputs, env={"FAULT_ENOSPC": spec,
                                                             "FAULT_ENOSPC_UNDER": str(full / F.RUN / "onnx")
                                                             if "onnx" in spec else "/"})
            rows.append((f"disk full while {what}", seen(failed),
                         lost(failed, before, "this run") + f"; temporary files left: {len(F.leftovers(full))}",
                         "next row" if "teacher" in what else ""))
        before = set(F.outputs(full))
        with_space = F.distill_and_export(full, inputs)
        rows.append(("the same command with space again", "", lost(with_space, before),
                     rerun_result(with_space, full, reference)))

        # 5. a teacher folder cut short
        for i, (what, damage) in enumerate((("model.safetensors cut in half", lambda d: F.truncate(d / "model.safetensors")),
                             ("config.json not JSON", lambda d: (d / "config.json").write_text('{"model_type": ')),
                             ("tokenizer.json cut in half", lambda d: F.truncate(d / "tokenizer.json")))):
            teacher = work / f"teacher-{i}"
            shutil.copytree(inputs.teacher, teacher)
            damage(teacher)
            out = work / f"out-{i}"
            refused = F.distill_and_export(out, inputs, teacher=teacher)
            rows.append((f"teacher folder: {what}", seen(refused).replace(str(work), "…"),
                         "nothing written" if not out.exists() else f"**{out} written**",
                         "with the file whole again: the unfaulted run"))
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| fault | what was seen | what was lost | rerun |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(c.replace(str(work), "…").replace("|", "\\|") for c in r) + " |")
    print(f"\n{len(rows)} scenarios in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
