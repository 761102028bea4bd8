"""External-data format (weights in ``model.onnx.data`` beside ``model.onnx``), forced on tiny models with
``--external-data always``: what a model over 2 GB gets from ``auto``, without building one."""

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import cli, outlier_model
from onnx import TensorProto, helper, numpy_helper

import compresskit.tasks.classification.export as export_module
from compresskit.artifacts import DiskFullError, UserError, sha256_file
from compresskit.models import weight_bytes
from compresskit.runtime import OnnxClassifier
from compresskit.tasks.classification.data import read_split
from compresskit.tasks.classification.export import ExportConfig, export, use_external_data
from compresskit.tasks.classification.quantize import QuantizeConfig, quantize

# cls_only off, fused layer norms: these exports are compared with tiny_onnx's graph, and a timing choice must
# not decide the graph
CONFIG = {"max_length": 32, "attention": "eager", "external_data": "always", "cls_only": "off",
          "skip_layer_norm": "fused"}


def external_tensors(onnx_path: Path) -> list[tuple[str, int, int]]:
    """(location, offset, length) of every initializer stored outside the graph file."""
    out = []
    for t in onnx.load(str(onnx_path), load_external_data=False).graph.initializer:
        if t.data_location == TensorProto.EXTERNAL:
            info = {e.key: e.value for e in t.external_data}
            out.append((info["location"], int(info.get("offset", 0)), int(info["length"])))
    return out


def assert_weights_outside(folder: Path) -> None:
    """model.onnx holds no initializer over 1 KiB, and model.onnx.data holds exactly the external tensors: no bytes
    left over from an earlier write (onnx and ONNX Runtime append to an existing data file)."""
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False).graph
    for t in graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            assert len(t.raw_data) <= 1024, t.name
    tensors = external_tensors(folder / "model.onnx")
    assert tensors and {loc for loc, _, _ in tensors} == {"model.onnx.data"}
    data = folder / "model.onnx.data"
    assert sum(n for _, _, n in tensors) == data.stat().st_size == max(o + n for _, o, n in tensors)


def assert_record_hashes_data(record: dict, folder: Path) -> None:
    assert record["external_data"] is True
    assert record["data_files"] == [{"name": "model.onnx.data", "sha256": sha256_file(folder / "model.onnx.data"),
                                     "size_bytes": (folder / "model.onnx.data").stat().st_size}]
    assert record["sha256"] == sha256_file(folder / "model.onnx")


def no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if ".tmp" in p.name]


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_classifier, tiny_data) -> dict[str, Path]:
    """The tiny classifier exported by each exporter with ``--external-data always``."""
    root = tmp_path_factory.mktemp("external")
    return {e: export(ExportConfig(exporter=e, **CONFIG), tiny_classifier, tiny_data, root / e).onnx_dir
            for e in ("torchscript", "dynamo")}


def test_flag_is_validated_with_the_other_options():
    with pytest.raises(UserError) as e:
        ExportConfig(external_data="sometimes", opset=5)
    assert "--external-data must be one of auto, always, never, got 'sometimes'" in str(e.value)
    assert "--opset" in str(e.value)


@pytest.mark.parametrize("weights, mode, expected", [
    (100_000, "auto", False), (1_800_000_000, "auto", False), (1_800_000_001, "auto", True),
    (3_000_000_000, "auto", True), (100_000, "always", True), (3_000_000_000, "always", True),
    (100_000, "never", False), (1_800_000_000, "never", False),
])
def test_decision_follows_the_weight_bytes(weights, mode, expected):
    assert use_external_data(weights, mode) is expected


def test_never_refuses_a_model_over_the_limit_in_one_line():
    with pytest.raises(UserError) as e:
        use_external_data(3_000_000_000, "never")
    message = str(e.value)
    assert "3.00 GB" in message and "--external-data auto or always" in message and "\n" not in message


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_both_exporters_keep_the_weights_beside_the_graph(exported, exporter, tiny_onnx):
    folder = exported[exporter]
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "export.json", "labels.json", "model.onnx",
                                                        "model.onnx.data", "tokenizer.json", "tokenizer_config.json"]
    assert_weights_outside(folder)
    assert (folder / "model.onnx").stat().st_size * 3 < (folder / "model.onnx.data").stat().st_size
    record = json.loads((folder / "export.json").read_text())
    assert_record_hashes_data(record, folder)
    assert record["exporter"] == exporter and record["config"]["external_data"] == "always"
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] <= 1e-3
    assert 0 < record["weight_bytes"] < 200_000
    # ONNX Runtime's optimizer read and rewrote the external weights: the same fusions as a one-file export
    assert record["optimizer"].startswith("onnxruntime.transformers")
    if exporter == "torchscript":
        single = json.loads((tiny_onnx / "export.json").read_text())
        assert record["fused_operators"] == single["fused_operators"] and single["external_data"] is False
        assert single["data_files"] == [] and not (tiny_onnx / "model.onnx.data").exists()


def test_runtime_and_predict_find_the_data_beside_the_graph(exported, tiny_onnx, tiny_data, tmp_path):
    texts, _ = read_split(tiny_data, "validation")
    want = OnnxClassifier(tiny_onnx)
    for exporter, folder in exported.items():
        moved = shutil.copytree(folder, tmp_path / exporter)  # the data file is found relative to model.onnx
        clf = OnnxClassifier(moved)
        np.testing.assert_allclose(clf.logits(texts), want.logits(texts), atol=1e-4)
        assert [p["label"] for p in clf.predict(texts)] == [p["label"] for p in want.predict(texts)]
    proc = cli("predict", str(tmp_path / "dynamo"), texts[0], texts[1], "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = [json.loads(line)["label"] for line in proc.stdout.strip().splitlines()]
    assert got == [p["label"] for p in want.predict(texts[:2])]


def test_a_copy_without_the_data_file_is_a_user_error(exported, tmp_path):
    folder = shutil.copytree(exported["torchscript"], tmp_path / "copy")
    (folder / "model.onnx.data").unlink()
    with pytest.raises(UserError, match="lacks model.onnx.data"):
        OnnxClassifier(folder)
    proc = cli("predict", str(folder), "goal team")
    assert proc.returncode == 2 and "copy it along with model.onnx" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("mode", ["dynamic-int8", "static-int8", "fp16", "int4"])
def test_quantize_from_an_external_data_source(exported, tiny_data, tmp_path, mode):
    source = exported["torchscript"]
    r = quantize(QuantizeConfig(mode=mode, max_length=32, int4_block_size=16), source, tiny_data, tmp_path / mode)
    folder = r.onnx_dir
    assert_weights_outside(folder)
    record = json.loads((folder / "quantize.json").read_text())
    assert_record_hashes_data(record, folder)
    assert record["mode"] == mode and record["parity"]["passed"]
    assert record["inputs"]["onnx_data_sha256"] == {"model.onnx.data": sha256_file(source / "model.onnx.data")}
    # the fp32 weights of the source were not copied over the quantized ones
    assert record["data_files"][0]["sha256"] != record["inputs"]["onnx_data_sha256"]["model.onnx.data"]
    assert (folder / "model.onnx.data").stat().st_size < (source / "model.onnx.data").stat().st_size
    assert OnnxClassifier(folder).predict(["goal team match"])[0]["label"] in {"money", "sport", "tech"}


def test_dynamic_int8_computes_the_same_from_either_layout(exported, tiny_onnx, tiny_data, tmp_path):
    """The torchscript+eager export of the same model, one file or external data, quantizes to the same logits."""
    texts, _ = read_split(tiny_data, "validation")
    cfg = QuantizeConfig(max_length=32)
    split = quantize(cfg, exported["torchscript"], tiny_data, tmp_path / "split").onnx_dir
    single = quantize(cfg, tiny_onnx, tiny_data, tmp_path / "single").onnx_dir
    assert not (single / "model.onnx.data").exists()
    np.testing.assert_allclose(OnnxClassifier(split).logits(texts), OnnxClassifier(single).logits(texts), atol=1e-5)


def test_fallback_rewrites_leave_no_stale_bytes_in_the_data_file(tmp_path, tiny_onnx, tiny_data):
    """The fallback writes the same graph many times over; each write must replace the data file, not append."""
    # 64 features wide, so that the weights pass 1 KiB even in int8 and land in the data file
    src = outlier_model(tiny_onnx, tmp_path / "outlier", width=64, external=True)
    assert external_tensors(src / "model.onnx")
    r = quantize(QuantizeConfig(max_length=32), src, tiny_data, tmp_path / "q", "x")
    record = json.loads((r.onnx_dir / "quantize.json").read_text())
    assert record["kept_fp32"] == ["mix/MatMul"] and len(record["fallback"]["sensitivity"]) >= 2
    assert_weights_outside(r.onnx_dir)
    assert_record_hashes_data(record, r.onnx_dir)


def test_auto_switches_by_size_and_never_refuses_before_writing(monkeypatch, tmp_path, tiny_classifier, tiny_data):
    """With the limit lowered below the tiny model's weights, ``auto`` stores them outside and ``never`` refuses."""
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_ABOVE", 1000)
    cfg = {**CONFIG, "exporter": "torchscript"}
    with pytest.raises(UserError, match="use --external-data auto or always"):
        export(ExportConfig(**{**cfg, "external_data": "never"}), tiny_classifier, tiny_data, tmp_path / "never")
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    r = export(ExportConfig(**{**cfg, "external_data": "auto"}), tiny_classifier, tiny_data, tmp_path / "auto")
    assert json.loads((r.onnx_dir / "export.json").read_text())["external_data"] is True
    assert_weights_outside(r.onnx_dir)


def test_a_failure_after_the_weights_are_written_leaves_no_folder(monkeypatch, tmp_path, tiny_classifier, tiny_data):
    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(export_module, "stage_record", disk_full)  # the last step, after the move into place
    # the full disk is one line naming what was being written (artifacts.DiskFullError), not a raw OSError
    with pytest.raises(DiskFullError, match="no space left on device while writing .*out"):
        export(ExportConfig(exporter="torchscript", **CONFIG), tiny_classifier, tiny_data, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_export_cli_flag(tmp_path, tiny_classifier, tiny_data, tiny_encoder, tiny_csv):
    out = tmp_path / "onnx"
    proc = cli("export", "--model", str(tiny_classifier), "--data", str(tiny_data), "--out", str(out),
               "--max-length", "32", "--exporter", "torchscript", "--attention", "eager", "--external-data", "always")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "export.json").read_text())["external_data"] is True
    bad = cli("export", "--model", str(tiny_classifier), "--data", str(tiny_data), "--out", str(tmp_path / "bad"),
              "--external-data", "sometimes")
    assert bad.returncode == 2 and "--external-data must be one of auto, always, never" in bad.stderr
    assert not (tmp_path / "bad").exists()
    bad = cli("distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv), "--output-root",
              str(tmp_path / "runs"), "--external-data", "sometimes")
    assert bad.returncode == 2 and "--external-data must be one of auto, always, never" in bad.stderr
    assert not (tmp_path / "runs").exists()


def test_spilled_tensor_files_are_gathered_into_one_data_file(tmp_path):
    """The TorchScript exporter takes no external-data option: over 2 GB it writes one file per tensor, named after
    the tensor. The export gathers them into model.onnx.data (or back into one file), whatever the exporter left."""
    from compresskit.onnx.io import store_exported
    from compresskit.onnx.sessions import make_session

    rng = np.random.default_rng(0)
    weights = {n: rng.normal(0, 1, (32, 32)).astype(np.float32) for n in ("w1", "w2")}
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])],
        [numpy_helper.from_array(a, n) for n, a in weights.items()])
    path = tmp_path / "model.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path),
                    save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "w1", "w2"]
    x = {"x": rng.normal(0, 1, (1, 32)).astype(np.float32)}
    want = x["x"] @ weights["w1"] @ weights["w2"]

    store_exported(path, external=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert_weights_outside(tmp_path)
    np.testing.assert_allclose(make_session(path).run(None, x)[0], want, rtol=1e-5)

    store_exported(path, external=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    np.testing.assert_allclose(make_session(path).run(None, x)[0], want, rtol=1e-5)


def test_distill_and_export_refuses_never_before_any_stage(monkeypatch, tmp_path, tiny_encoder, tiny_csv):
    """The pipeline sizes the teacher from its config (meta device) and refuses ``never`` before fine-tuning or
    distilling anything: the export stage would refuse it only after all that work."""
    from transformers import AutoModelForSequenceClassification

    from compresskit.cli.app import app
    from compresskit.models import LoadOptions, read_config
    from compresskit.tasks.classification.models import estimated_weight_bytes

    loaded = AutoModelForSequenceClassification.from_pretrained(str(tiny_encoder), num_labels=2)
    assert estimated_weight_bytes(read_config(str(tiny_encoder), LoadOptions())) == weight_bytes(loaded)
    monkeypatch.setattr(export_module, "EXTERNAL_DATA_ABOVE", 1000)
    with pytest.raises(UserError, match="use --external-data auto or always"):
        app(["distill-and-export", "--teacher", str(tiny_encoder), "--dataset", str(tiny_csv), "--student-layers", "0",
             "--output-root", str(tmp_path), "--external-data", "never"], standalone_mode=False)
    assert list(tmp_path.iterdir()) == []  # no run folder, no teacher cache


def test_export_refuses_up_front_when_its_candidates_would_not_fit_on_disk(monkeypatch, tmp_path, tiny_classifier,
                                                                          tiny_data):
    """All candidate graphs stay on disk until they are timed together: a disk that cannot hold them is refused
    before the first is written, with the way to export fewer."""
    from transformers import AutoModelForSequenceClassification

    weights = weight_bytes(AutoModelForSequenceClassification.from_pretrained(str(tiny_classifier)))
    # room for 9 graphs (8 candidates + the un-fused copy) but not for the optimizer's staged copy on top
    monkeypatch.setattr(export_module, "free_bytes", lambda path: weights * 9 + 1)
    with pytest.raises(UserError, match=r"for 9 candidate graphs .* --skip-layer-norm fused makes one"):
        export(ExportConfig(max_length=32), tiny_classifier, tiny_data, tmp_path / "out")
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export_module, "free_bytes", lambda path: weights * 2)  # one candidate fits in twice that
    one = ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="off",
                       skip_layer_norm="fused")
    assert export(one, tiny_classifier, tiny_data, tmp_path / "one").parity.passed
