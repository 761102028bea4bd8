import json
import subprocess
import sys

import numpy as np
import pytest

from compresskit.artifacts import UserError
from compresskit.models import LoadOptions, load_tokenizer
from compresskit.runtime import OnnxClassifier
from compresskit.tasks.classification.data import read_split
from compresskit.tasks.classification.models import load_classifier
from compresskit.tasks.classification.training import predict_logits


def test_runtime_matches_pytorch_without_torch(tiny_onnx, tiny_classifier, tiny_data):
    texts, _ = read_split(tiny_data, "validation")
    clf = OnnxClassifier(tiny_onnx)
    assert clf.max_length == 32 and clf.providers[-1] == "CPUExecutionProvider"
    want = predict_logits(load_classifier(str(tiny_classifier), LoadOptions()),
                          load_tokenizer(str(tiny_classifier), LoadOptions()), texts, 32)
    np.testing.assert_allclose(clf.logits(texts), want, atol=1e-4)
    preds = clf.predict(texts[:2])
    assert preds[0]["label"] in {"money", "sport", "tech"} and abs(sum(preds[0]["scores"].values()) - 1) < 1e-5
    code = (f"import sys; from compresskit.runtime import OnnxClassifier; "
            f"OnnxClassifier({str(tiny_onnx)!r}).predict(['goal team']); print('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_predict_cli(tiny_onnx):
    proc = subprocess.run([sys.executable, "-m", "compresskit", "predict", str(tiny_onnx), "goal team match",
                           "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    assert row["text"] == "goal team match" and row["label"] in row["scores"]


def test_not_an_export_folder(tmp_path):
    with pytest.raises(UserError, match="holds no model.onnx"):
        OnnxClassifier(tmp_path)
