"""Two runs on one run folder: the second is refused at once, and a run killed with kill -9 leaves no stuck lock."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import cli

from compresskit.artifacts import UserError
from compresskit.run import RunLayout, run_lock

HOLD = """
import sys, time
from pathlib import Path
from compresskit.run import RunLayout, run_lock

with run_lock(RunLayout(Path(sys.argv[1]))):
    print("locked", flush=True)
    time.sleep(300)
"""


@pytest.fixture
def holder(tmp_path):
    """Another process that holds the lock of ``tmp_path/out/tiny`` and sleeps."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "out" / "tiny")], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()


def test_a_second_run_is_refused_naming_the_first(tmp_path, holder):
    layout = RunLayout(tmp_path / "out" / "tiny")
    with pytest.raises(UserError) as e:
        with run_lock(layout):
            pytest.fail("took a lock another process holds")
    message = str(e.value)
    assert f"pid {holder.pid} on {socket.gethostname()}, started 20" in message
    assert "is in use by another run" in message and "\n" not in message


def test_a_lock_held_in_this_process_refuses_a_second_taker(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with run_lock(layout):
        with pytest.raises(UserError, match=f"pid {os.getpid()} "):
            with run_lock(layout):
                pass


def test_a_holder_killed_with_sigkill_leaves_no_stuck_lock(tmp_path, holder):
    layout = RunLayout(tmp_path / "out" / "tiny")
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert layout.lock.is_file()  # kill -9 skips the clean-up: the file stays, its lock does not
    with run_lock(layout) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert not layout.lock.exists()


def test_a_finished_run_leaves_no_lock_behind(tmp_path):
    layout = RunLayout(tmp_path / "run")
    for _ in range(2):
        with run_lock(layout) as path:
            assert path == tmp_path / "run.lock" and path.is_file()
        assert not layout.lock.exists()
    with pytest.raises(RuntimeError):  # a run that fails releases its lock as well
        with run_lock(layout):
            raise RuntimeError("a stage failed")
    with run_lock(layout):
        pass


def test_cli_refuses_a_second_run_on_a_busy_folder_and_keeps_it(tmp_path, holder, tiny_encoder, tiny_csv):
    """Even with --overwrite: the running run's folder is not removed under it."""
    run_dir = tmp_path / "out" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "run.json").write_text("{}")
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv),
               "--output-root", str(tmp_path / "out"), "--run-name", "tiny", "--overwrite", "--device", "cpu")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"{run_dir} is in use by another run (pid {holder.pid} " in errors[0], proc.stderr
    assert sorted(p.name for p in run_dir.iterdir()) == ["run.json"]


def test_lock_lives_beside_the_run_folder():
    assert RunLayout(Path("export") / "tiny").lock == Path("export") / "tiny.lock"
