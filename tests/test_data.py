import json
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from conftest import cli

from compresskit.artifacts import UserError
from compresskit.corpus import bbc_news_root, stratified_split
from compresskit.tasks.classification.data import DataConfig, load_examples, prepare_data, read_split


def test_bbc_news_is_read_from_the_installed_package():
    texts, labels, source, dropped = load_examples(DataConfig())
    assert len(texts) == 2225 and dropped == 0
    assert Counter(labels) == {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}
    assert source.endswith(f"{bbc_news_root()})")
    assert all(t.strip() for t in texts)


def test_split_is_stratified_reproducible_and_disjoint():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    cfg = DataConfig(seed=7)
    s1, s2 = stratified_split(labels, cfg), stratified_split(labels, cfg)
    assert s1 == s2
    assert stratified_split(labels, DataConfig(seed=8)) != s1
    all_ix = s1["train"] + s1["validation"] + s1["test"]
    assert sorted(all_ix) == list(range(100))
    assert Counter(labels[i] for i in s1["test"]) == {"a": 10, "b": 6, "c": 4}
    assert Counter(labels[i] for i in s1["validation"]) == {"a": 5, "b": 3, "c": 2}


def test_a_larger_test_split_keeps_validation_and_holds_the_smaller_one():
    """The default test share went from 10 % to 20 %: validation (model selection) must not move, and the old
    test articles stay test articles, so figures on the two splits can be set side by side."""
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    small = stratified_split(labels, DataConfig(seed=7, test_fraction=0.1))
    large = stratified_split(labels, DataConfig(seed=7))
    assert sorted(large["validation"]) == sorted(small["validation"])
    assert set(small["test"]) < set(large["test"]) and len(large["test"]) == 2 * len(small["test"])
    assert set(large["train"]) < set(small["train"])


def test_max_samples_subsamples_every_class():
    labels = ["a"] * 500 + ["b"] * 100
    s = stratified_split(labels, DataConfig(max_samples=60))
    kept = s["train"] + s["validation"] + s["test"]
    assert 55 <= len(kept) <= 65
    assert {labels[i] for i in s["test"]} == {"a", "b"}


def test_prepare_data_writes_splits_and_manifest(tiny_csv, tmp_path):
    r = prepare_data(DataConfig(dataset=str(tiny_csv)), tmp_path / "d")
    assert r.labels == ["money", "sport", "tech"]
    assert sum(r.sizes.values()) == 120
    texts, ids = read_split(r.data_dir, "train")
    assert len(texts) == r.sizes["train"] and set(ids) == {0, 1, 2}
    manifest = json.loads((r.data_dir / "data.json").read_text())
    assert manifest["sha256"] == r.sha256 and manifest["sizes"] == r.sizes
    again = prepare_data(DataConfig(dataset=str(tiny_csv)), tmp_path / "d2")
    assert again.sha256 == r.sha256


def test_jsonl_and_parquet_with_named_columns(tmp_path):
    rows = [{"body": f"text {i}", "topic": "x" if i % 2 else "y"} for i in range(20)]
    jsonl = tmp_path / "d.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows))
    texts, labels, *_ = load_examples(DataConfig(dataset=str(jsonl), text_column="body", label_column="topic"))
    assert texts[3] == "text 3" and labels[3] == "x"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    texts2, labels2, *_ = load_examples(DataConfig(dataset=str(tmp_path / "d.parquet"), text_column="body",
                                                  label_column="topic"))
    assert (texts2, labels2) == (texts, labels)


def test_missing_column_names_the_flag(tiny_csv):
    with pytest.raises(UserError, match=r"no column 'body'.*--text-column"):
        load_examples(DataConfig(dataset=str(tiny_csv), text_column="body"))


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_examples(DataConfig(dataset=str(tmp_path / "nope.csv")))


@pytest.mark.parametrize("kwargs, flag", [({"validation_fraction": 0}, "--validation-fraction"),
                                          ({"test_fraction": 1.2}, "--test-fraction"),
                                          ({"max_samples": 3}, "--max-samples")])
def test_config_rejects_bad_values(kwargs, flag):
    with pytest.raises(UserError, match=flag):
        DataConfig(**kwargs)


def test_single_label_data_is_refused(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("text,label\n" + "".join(f"t{i},a\n" for i in range(20)))
    with pytest.raises(UserError, match="at least 2"):
        prepare_data(DataConfig(dataset=str(path)), tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- bad data, said precisely: which file, which lines, what to do


def unlabeled_csv(path: Path) -> Path:
    """Labels a and b with 6 rows each, and two rows without a label on lines 4 and 7: a quoted text over lines 2-3
    and a blank line 5 check that lines are counted as an editor shows them (the header is line 1)."""
    lines = ['text,label', '"first', 'second",a', 'no label here,', '', 'u,b', 'v,   ']
    lines += [f"t{i},{'ab'[i % 2]}" for i in range(10)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unlabeled_rows_are_named_by_csv_line(tmp_path):
    path = unlabeled_csv(tmp_path / "data.csv")
    with pytest.raises(UserError) as e:
        load_examples(DataConfig(dataset=str(path)))
    assert str(e.value) == (f"{path}: 2 rows have no 'label' (lines 4, 7); fill them in, or pass --drop-unlabeled "
                            "to leave them out")


def test_many_unlabeled_rows_name_the_first_five(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'a' if i % 3 else ''}\n" for i in range(30)))
    with pytest.raises(UserError, match=r"10 rows have no 'label' \(lines 2, 5, 8, 11, 14 and 5 more\)"):
        load_examples(DataConfig(dataset=str(path)))


def test_unlabeled_rows_in_a_folder_name_their_file(tmp_path):
    (tmp_path / "a.csv").write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(10)))
    (tmp_path / "b.jsonl").write_text('{"text": "x", "label": "a"}\n{"text": "y", "label": null}\n')
    with pytest.raises(UserError) as e:
        load_examples(DataConfig(dataset=str(tmp_path)))
    assert str(e.value).startswith(f"{tmp_path}: 1 row has no 'label' ({tmp_path / 'b.jsonl'} line 2);")


def test_drop_unlabeled_leaves_them_out_and_counts_them(tmp_path):
    path = unlabeled_csv(tmp_path / "data.csv")
    ex = load_examples(DataConfig(dataset=str(path), drop_unlabeled=True))
    assert (len(ex.texts), ex.dropped_unlabeled) == (12, 2) and sorted(set(ex.labels)) == ["a", "b"]
    assert ex.texts[0] == "first\nsecond"
    r = prepare_data(DataConfig(dataset=str(path), drop_unlabeled=True), tmp_path / "out")
    manifest = json.loads((r.data_dir / "data.json").read_text())
    assert manifest["dropped_unlabeled"] == 2 and manifest["config"]["drop_unlabeled"] is True
    assert sum(r.sizes.values()) == 12 and r.labels == ["a", "b"]


def test_every_row_unlabeled_is_refused_even_with_drop(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\nx,\ny,\n")
    with pytest.raises(UserError, match="no row has a 'label'.*--label-column"):
        load_examples(DataConfig(dataset=str(path), drop_unlabeled=True))


def test_empty_text_is_named_by_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"t{i},{'ab'[i % 2]}\n" for i in range(10)) + "  ,a\n")
    with pytest.raises(UserError) as e:
        load_examples(DataConfig(dataset=str(path)))
    assert str(e.value) == f"{path}: 1 row has an empty 'text' (line 12); fill it in or remove that row"


def good_jsonl_lines(n: int) -> list[str]:
    return [json.dumps({"text": f"t{i}", "label": "ab"[i % 2]}) for i in range(n)]


def test_broken_jsonl_line_is_named_by_its_line_in_the_file(tmp_path):
    path = tmp_path / "data.jsonl"
    lines = good_jsonl_lines(30)
    lines[9] = ""  # a blank line still counts as a line of the file
    path.write_text("\n".join([*lines, '{"text": oops, "label": "a"}', *good_jsonl_lines(3)]) + "\n")
    with pytest.raises(UserError) as e:
        load_examples(DataConfig(dataset=str(path)))
    assert str(e.value) == f"{path} line 31: not valid JSON (Expecting value at column 10)"


def test_jsonl_row_that_is_not_an_object_is_named(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join([*good_jsonl_lines(4), '["t", "a"]']) + "\n")
    with pytest.raises(UserError, match=r"data.jsonl line 5: not a JSON object but a list"):
        load_examples(DataConfig(dataset=str(path)))


def test_json_list_names_the_broken_line_and_the_record_that_is_not_an_object(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[\n  {"text": "a", "label": "x"},\n  {"text": , "label": "y"}\n]\n')
    with pytest.raises(UserError, match=r"broken.json line 3: not valid JSON \(Expecting value at column 12\)"):
        load_examples(DataConfig(dataset=str(broken)))
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([{"text": "a", "label": "x"}, "just text"]))
    with pytest.raises(UserError, match=r"wrong.json record 2: not a JSON object but a string"):
        load_examples(DataConfig(dataset=str(wrong)))


@pytest.mark.parametrize("counts, said", [
    ({"a": 5, "b": 1, "c": 2}, "labels 'b' (1 row) and 'c' (2 rows) have"),
    ({"a": 1, "b": 1, "c": 1}, "labels 'a' (1 row), 'b' (1 row) and 'c' (1 row) have"),
    ({"a": 5, "b": 2}, "label 'b' (2 rows) has"),
])
def test_labels_too_rare_to_split_are_named_up_front(tmp_path, counts, said):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"{y}{i},{y}\n" for y, n in counts.items() for i in range(n)))
    with pytest.raises(UserError) as e:
        load_examples(DataConfig(dataset=str(path)))
    them = "that label" if said.startswith("label ") else "those labels"
    assert str(e.value) == (f"{path}: {said} fewer than the 3 rows per label that a train/validation/test split "
                            f"needs; add rows, or leave {them} out")


def test_three_rows_per_label_are_enough_for_every_split(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("text,label\n" + "".join(f"{y}{i},{y}\n" for y in "ab" for i in range(3)))
    r = prepare_data(DataConfig(dataset=str(path)), tmp_path / "out")
    assert r.sizes == {"train": 2, "validation": 2, "test": 2}


def bad_data(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A data file with one of the problems above, and the message the CLI must print for it."""
    if case == "unlabeled":
        path = unlabeled_csv(tmp_path / "data.csv")
        return path, f"{path}: 2 rows have no 'label' (lines 4, 7); fill them in, or pass --drop-unlabeled"
    if case == "broken-jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("\n".join([*good_jsonl_lines(30), "{oops"]) + "\n")
        return path, f"{path} line 31: not valid JSON (Expecting property name enclosed in double quotes at column 2)"
    path = tmp_path / "data.csv"
    path.write_text("text,label\na0,a\nb0,b\nc0,c\n")
    return path, f"{path}: labels 'a' (1 row), 'b' (1 row) and 'c' (1 row) have fewer than the 3 rows per label"


def assert_one_error_line(proc: subprocess.CompletedProcess, message: str) -> None:
    """Exit 2, no traceback, and the message on one ``error:`` line."""
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]


@pytest.mark.parametrize("case", ["unlabeled", "broken-jsonl", "too-few-rows"])
def test_cli_says_what_is_wrong_with_the_data_before_making_a_run_folder(tmp_path, tiny_encoder, case):
    data, message = bad_data(tmp_path, case)
    proc = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(data),
               "--output-root", str(tmp_path / "out"), "--device", "cpu")
    assert_one_error_line(proc, message)
    assert not (tmp_path / "out").exists()


def test_cli_drop_unlabeled(tmp_path):
    data = unlabeled_csv(tmp_path / "data.csv")
    refused = cli("prepare-data", "--dataset", str(data), "--out", str(tmp_path / "d"))
    assert_one_error_line(refused, "--drop-unlabeled")
    assert not (tmp_path / "d").exists()
    proc = cli("prepare-data", "--dataset", str(data), "--out", str(tmp_path / "d"), "--drop-unlabeled")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((tmp_path / "d" / "data.json").read_text())["dropped_unlabeled"] == 2
