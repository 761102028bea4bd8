import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compresskit.artifacts import VerificationError
from compresskit.export import ExportConfig, verify_onnx
from compresskit.models import LoadOptions, load_classifier, load_tokenizer
from compresskit.onnx_runtime import make_session
from compresskit.verify import compare, require


def test_export_is_self_contained_and_verified(tiny_onnx):
    names = {p.name for p in tiny_onnx.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "labels.json", "export.json"} <= names
    record = json.loads((tiny_onnx / "export.json").read_text())
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] <= 1e-3
    assert record["parity"]["label_agreement"] >= 0.995
    assert record["exporter"] == "torchscript" and record["opset"] == 17
    assert record["versions"]["onnxruntime"]


def test_export_has_dynamic_batch_and_sequence(tiny_onnx):
    session = make_session(tiny_onnx / "model.onnx")
    for b, s in ((1, 5), (3, 17)):
        feed = {i.name: np.ones((b, s), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (b, 3)


def test_verification_catches_a_broken_model(tmp_path, tiny_onnx, tiny_classifier, tiny_data):
    """Flip the sign of the classifier weights in the graph: parity must fail, not warn."""
    model = onnx.load(tiny_onnx / "model.onnx")
    broken = 0
    for init in model.graph.initializer:
        arr = numpy_helper.to_array(init)
        if arr.ndim == 2 and 3 in arr.shape and arr.shape != (3, 3):  # the (hidden, 3) classifier matrix
            init.CopyFrom(numpy_helper.from_array(-arr * 5, init.name))
            broken += 1
    assert broken == 1
    path = tmp_path / "broken.onnx"
    onnx.save(model, path)
    torch_model = load_classifier(str(tiny_classifier), LoadOptions())
    tok = load_tokenizer(str(tiny_classifier), LoadOptions())
    with pytest.raises(VerificationError, match="does not match"):
        verify_onnx(ExportConfig(max_length=32), path, torch_model, tok, tiny_data)
    # and the untouched export passes the same check
    assert verify_onnx(ExportConfig(max_length=32), tiny_onnx / "model.onnx", torch_model, tok, tiny_data).passed


def test_compare_reports_each_failure():
    want = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert require(compare("m", "r", want + 1e-6, want, 1e-3, 0.995)).passed
    with pytest.raises(VerificationError, match="max \\|Δlogit\\| 0.5 > tolerance"):
        require(compare("m", "r", want + np.array([[0.5, 0.0], [0.0, 0.0]]), want, 1e-3, 0.5))
    with pytest.raises(VerificationError, match="label agreement 50.00% < 99.50%"):
        require(compare("m", "r", np.array([[0.0, 1.0], [0.0, 1.0]]), want, None, 0.995))
    with pytest.raises(VerificationError, match="NaN"):
        compare("m", "r", want * np.nan, want, None, 0.9)


def test_dynamo_exporter_also_passes_parity(tmp_path, tiny_classifier, tiny_data):
    from compresskit.export import export

    r = export(ExportConfig(exporter="dynamo", max_length=32), tiny_classifier, tiny_data, tmp_path / "dyn")
    assert r.parity.passed and r.parity.max_abs_diff <= 1e-3
    assert json.loads((r.onnx_dir / "export.json").read_text())["exporter"] == "dynamo"
