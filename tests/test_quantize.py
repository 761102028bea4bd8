import json

import onnx
import pytest

from compresskit.artifacts import UserError
from compresskit.tasks.classification.quantize import QuantizeConfig, quantize


def test_dynamic_int8_is_quantized_and_verified(tmp_path, tiny_onnx, tiny_data):
    r = quantize(QuantizeConfig(max_length=32), tiny_onnx, tiny_data, tmp_path / "int8", "student")
    ops = {n.op_type for n in onnx.load(r.onnx_dir / "model.onnx").graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} & ops
    record = json.loads((r.onnx_dir / "quantize.json").read_text())
    assert record["parity"]["reference"] == "student-onnx" and record["parity"]["label_agreement"] >= 0.99
    assert isinstance(record["reduce_range"], bool)
    assert (r.onnx_dir / "tokenizer.json").is_file() and (r.onnx_dir / "labels.json").is_file()


def test_unknown_mode_names_the_flag():
    with pytest.raises(UserError, match="--quantize"):
        QuantizeConfig(mode="int3")


def test_missing_onnx_leaves_nothing(tmp_path, tiny_data):
    with pytest.raises(UserError, match="no model.onnx"):
        quantize(QuantizeConfig(), tmp_path, tiny_data, tmp_path / "out")
    assert not (tmp_path / "out").exists()
