import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compresskit.artifacts import VerificationError
from compresskit.models import LoadOptions, load_tokenizer
from compresskit.onnx.sessions import make_session
from compresskit.tasks.classification.export import ExportConfig, choose_fastest, verify_onnx
from compresskit.tasks.classification.models import load_classifier
from compresskit.tasks.classification.verify import compare, require


def test_export_is_self_contained_and_verified(tiny_onnx):
    names = {p.name for p in tiny_onnx.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer.json", "labels.json", "export.json"} <= names
    record = json.loads((tiny_onnx / "export.json").read_text())
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] <= 1e-3
    assert record["parity"]["label_agreement"] >= 0.995
    assert record["exporter"] == "torchscript" and record["attention"] == "eager" and record["opset"] == 17
    # eager attention traces to the pattern ONNX Runtime fuses into one Attention operator per layer
    assert record["fused_operators"].get("Attention") == 2
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


def test_auto_tries_every_exporter_and_keeps_the_fastest_verified(tmp_path, tiny_classifier, tiny_data):
    from compresskit.tasks.classification.export import export

    r = export(ExportConfig(max_length=32), tiny_classifier, tiny_data, tmp_path / "auto")
    record = json.loads((r.onnx_dir / "export.json").read_text())
    tried = {c["candidate"]: c for c in record["candidates"]}
    full = {"torchscript+eager", "torchscript+sdpa", "dynamo+eager", "dynamo+sdpa"}
    assert set(tried) == full | {f"{k}+cls-only" for k in full}
    verified = {k: c for k, c in tried.items() if "parity" in c}
    assert verified, record["candidates"]
    # every verified graph is timed at batch 1 and the largest bench batch size, and the rule picks over both
    choice = record["choice"]
    assert choice["workloads"] == [{"batch": 1, "sequence_length": 32}, {"batch": 32, "sequence_length": 32}]
    assert set(choice["candidates"]) == set(verified)
    timings = {k: c["latency_ms"] for k, c in choice["candidates"].items()}
    assert all(set(t) == {"batch_1", "batch_32"} and min(t.values()) > 0 for t in timings.values())
    assert record["chosen"] == choice["chosen"] == choose_fastest(timings)[0]
    assert verified[record["chosen"]]["latency_ms_batch1"] == timings[record["chosen"]]["batch_1"]
    # the shipped graph against the PyTorch model it came from, at the same workloads
    assert set(choice["pytorch_ms"]) == {"batch_1", "batch_32"}
    assert choice["slower_than_pytorch"] == [w for w in ("batch_1", "batch_32")
                                             if choice["shipped_ms"][w] > choice["pytorch_ms"][w]]
    assert record["exporter"] in ("torchscript", "dynamo") and r.parity.passed
    assert not (r.onnx_dir / "candidates").exists()


def test_cls_only_last_layer_is_verified_against_the_full_model(tmp_path, tiny_classifier, tiny_data):
    from compresskit.tasks.classification.export import export

    r = export(ExportConfig(max_length=32, exporter="torchscript", attention="eager", cls_only="on"), tiny_classifier,
               tiny_data, tmp_path / "cls")
    record = json.loads((r.onnx_dir / "export.json").read_text())
    assert record["chosen"] == "torchscript+eager+cls-only" and record["last_layer"] == "cls-only"
    assert record["parity"]["passed"] and record["parity"]["max_abs_diff"] <= 1e-4
    # the first layer still gets ONNX Runtime's fused Attention; the pruned last layer is computed by hand
    assert record["fused_operators"].get("Attention") == 1
    session = make_session(r.onnx_dir / "model.onnx")
    for b, s in ((1, 5), (3, 17)):
        feed = {i.name: np.ones((b, s), dtype=np.int64) for i in session.get_inputs()}
        assert session.run(None, feed)[0].shape == (b, 3)


def test_cls_only_on_is_refused_for_a_model_it_cannot_prune(tmp_path, tiny_data):
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    from compresskit.artifacts import UserError
    from compresskit.tasks.classification.export import export

    folder = tmp_path / "distil"
    DistilBertForSequenceClassification(DistilBertConfig(vocab_size=60, dim=32, n_layers=1, n_heads=2, hidden_dim=64,
                                                         num_labels=3)).save_pretrained(folder)
    with pytest.raises(UserError, match="--cls-only must be one of auto, on, off, got 'maybe'"):
        ExportConfig(cls_only="maybe")
    with pytest.raises(UserError, match="--cls-only on: DistilBertForSequenceClassification is not a Bert"):
        export(ExportConfig(max_length=32, cls_only="on"), folder, tiny_data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_choice_rule_weighs_every_workload():
    # a graph 5 % faster at batch 1 but twice as slow at batch 32 loses: the choice is not batch 1 alone
    latency = {"a": {"batch_1": 10.0, "batch_32": 400.0}, "b": {"batch_1": 10.5, "batch_32": 200.0}}
    chosen, scores = choose_fastest(latency)
    assert chosen == "b" and scores["b"] == pytest.approx((1.05 * 1.0) ** 0.5)
    assert scores["a"] == pytest.approx((1.0 * 2.0) ** 0.5)
    # ratios, not sums: a 10 % loss at batch 32 is worth a 10 % gain at batch 1, however long each takes
    even = {"x": {"batch_1": 10.0, "batch_32": 330.0}, "y": {"batch_1": 11.0, "batch_32": 300.0}}
    assert choose_fastest(even)[1]["x"] == pytest.approx(choose_fastest(even)[1]["y"])
    assert choose_fastest(even)[0] == "x"  # a tie goes to the first listed
    # one workload: plainly the fastest
    assert choose_fastest({"p": {"batch_1": 3.0}, "q": {"batch_1": 2.0}}) == ("q", {"p": 1.5, "q": 1.0})


def test_export_times_the_bench_batch_sizes():
    assert ExportConfig().timing_batches == (1, 32)
    assert ExportConfig(batch_sizes=(8, 4)).timing_batches == (1, 8)
    with pytest.raises(Exception, match="--batch-sizes"):
        ExportConfig(batch_sizes=(0,))
