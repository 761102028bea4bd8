"""The one atomic writer: readers see the old file or the whole new one, and a failed write leaves nothing."""

import json
import os
import stat

import pytest

from compresskit.artifacts import atomic_file, first_line, write_atomic, write_json


def test_write_atomic_writes_text_and_bytes_and_replaces(tmp_path):
    path = tmp_path / "sub" / "out.txt"
    write_atomic(path, "héllo\n")
    assert path.read_text(encoding="utf-8") == "héllo\n"
    write_atomic(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["out.txt"]  # no temp file left


def test_an_error_mid_write_leaves_no_file_and_no_temp_file(tmp_path):
    path = tmp_path / "out.json"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_file(path) as tmp:
            tmp.write_text('{"half": ', encoding="utf-8")
            raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="not JSON serialisable"):
        write_json(path, {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_an_error_mid_write_keeps_the_old_file_whole(tmp_path):
    path = tmp_path / "out.json"
    write_json(path, {"v": 1})
    with pytest.raises(KeyboardInterrupt):
        with atomic_file(path) as tmp:
            tmp.write_text("{", encoding="utf-8")
            raise KeyboardInterrupt
    assert json.loads(path.read_text()) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_replace_false_keeps_a_file_that_got_there_first(tmp_path):
    path = tmp_path / "logits.npy"
    with atomic_file(path, replace=False) as tmp:
        tmp.write_bytes(b"mine")
        path.write_bytes(b"other rank's")  # another process finished first
    assert path.read_bytes() == b"other rank's" and [p.name for p in tmp_path.iterdir()] == ["logits.npy"]
    write_atomic(tmp_path / "new.json", "{}", replace=False)
    assert (tmp_path / "new.json").read_text() == "{}"


def test_written_files_get_the_umask_mode_like_their_neighbours(tmp_path):
    write_atomic(tmp_path / "a.json", "{}")
    (tmp_path / "b.json").write_text("{}")
    assert stat.S_IMODE(os.stat(tmp_path / "a.json").st_mode) == stat.S_IMODE(os.stat(tmp_path / "b.json").st_mode)


def test_first_line():
    assert first_line(ValueError("bad input\nsecond line")) == "bad input"
    assert first_line(ValueError()) == "ValueError"
