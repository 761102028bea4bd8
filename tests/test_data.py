import json
from collections import Counter

import pytest

from compresskit.artifacts import UserError
from compresskit.data import DataConfig, bbc_news_root, load_examples, prepare_data, read_split, stratified_split


def test_bbc_news_is_read_from_the_installed_package():
    texts, labels, source = load_examples(DataConfig())
    assert len(texts) == 2225
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
    assert Counter(labels[i] for i in s1["test"]) == {"a": 5, "b": 3, "c": 2}
    assert Counter(labels[i] for i in s1["validation"]) == {"a": 5, "b": 3, "c": 2}


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
    texts, labels, _ = load_examples(DataConfig(dataset=str(jsonl), text_column="body", label_column="topic"))
    assert texts[3] == "text 3" and labels[3] == "x"
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    texts2, labels2, _ = load_examples(DataConfig(dataset=str(tmp_path / "d.parquet"), text_column="body",
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
