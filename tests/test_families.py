"""Every model family a user is likely to bring, on tiny random models (``model_families``): the steps that depend
on the family. Blocks found from the model itself and pruned (encoders and decoders share the code), the student
saved and loaded back; for encoders, export with verification, int8 and a prediction through the exported folder."""

import json

import pytest
import torch
from conftest import FILLER, TOPICS
from model_families import DECODERS, ENCODERS, config_of, decoder, encoder_classifier, slug

from compresskit.models import check_prunable, find_blocks, layer_count, per_layer_fields, prune_layers

FAMILIES = [("decoder", n) for n in DECODERS] + [("encoder", n) for n in ENCODERS]
KEEP = [0, 2]
"""Blocks a student keeps: dropping the middle one of three moves block 2 to index 1, so a field that is not
re-indexed shows."""


def _model(kind: str, name: str):
    return decoder(name) if kind == "decoder" else encoder_classifier(name, sorted(TOPICS), 300)


@pytest.mark.parametrize(("kind", "name"), FAMILIES, ids=[slug(n) for _, n in FAMILIES])
def test_blocks_are_found_and_pruned_keeping_the_teachers_weights(kind, name, tmp_path):
    teacher = _model(kind, name)
    found = find_blocks(teacher)
    if name == "ALBERT":  # one block shared across the depth: nothing per block to prune, the student runs it less
        assert found is None
    else:
        prefix, blocks = found
        assert len(blocks) == layer_count(teacher.config) == 3
        assert teacher.get_submodule(prefix) is blocks
    student = prune_layers(teacher, KEEP)
    assert layer_count(student.config) == 2
    for attr in per_layer_fields(teacher.config):  # layer_types of Gemma, Qwen, ModernBERT: teacher's 0 and 2
        assert list(getattr(student.config, attr)) == [getattr(teacher.config, attr)[i] for i in KEEP]
    if found is not None:
        s_blocks = find_blocks(student)[1]
        for j, i in enumerate(KEEP):
            for (ka, a), (kb, b) in zip(blocks[i].state_dict().items(), s_blocks[j].state_dict().items()):
                assert ka == kb and torch.equal(a, b), (name, ka)
    # what is not a block is copied whole: embeddings, final norm, head
    s_state = student.state_dict()
    for key, value in teacher.state_dict().items():
        if found is None or not key.startswith(found[0] + "."):
            assert torch.equal(s_state[key], value), key
    student.save_pretrained(tmp_path)
    again = type(student).from_pretrained(tmp_path).eval()
    ids = torch.randint(5, 300, (2, 12))
    with torch.no_grad():
        a = student(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        b = again(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize(("kind", "name"), FAMILIES, ids=[slug(n) for _, n in FAMILIES])
def test_the_preflight_builds_the_student_on_the_meta_device(kind, name):
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = config_of(DECODERS[name] if kind == "decoder" else ENCODERS[name])
    auto = AutoModelForCausalLM if kind == "decoder" else AutoModelForSequenceClassification
    check_prunable(config, auto, KEEP)  # no error, nothing allocated


def test_two_equally_likely_block_lists_are_refused_not_guessed():
    from compresskit.artifacts import UserError

    teacher = decoder("Llama")
    teacher.model.shadow = torch.nn.ModuleList([torch.nn.Linear(2, 2) for _ in range(3)])
    assert find_blocks(teacher)[0] == "model.layers"  # _no_split_modules names the decoder layer: no doubt
    teacher._no_split_modules = None
    with pytest.raises(UserError, match="cannot tell which are its layers"):
        find_blocks(teacher)


@pytest.mark.parametrize("name", list(DECODERS), ids=[slug(n) for n in DECODERS])
def test_block_influence_reads_each_blocks_own_input_and_output(name):
    from compresskit.tasks.causal_lm.layers import block_hidden_states, block_influence

    model = decoder(name)
    ids = torch.randint(5, 300, (2, 10))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    hidden = block_hidden_states(model, ids, mask)
    assert len(hidden) == 4 and all(h.shape == (2, 10, 64) for h in hidden)
    influence = block_influence(model, [{"input_ids": ids, "attention_mask": mask}])
    assert len(influence) == 3 and all(0 <= v <= 2 for v in influence)


# ---------------------------------------------------------------------------------------------------------------
# Encoders: export, verification, int8, prediction


@pytest.fixture(scope="module")
def encoder_tokenizer(tmp_path_factory):
    from transformers import BertTokenizerFast

    words = sorted({w for ws in (*TOPICS.values(), FILLER) for w in ws.split()})
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words])}
    folder = tmp_path_factory.mktemp("tok")
    BertTokenizerFast(vocab=vocab, do_lower_case=True).save_pretrained(folder)
    return folder, len(vocab)


@pytest.mark.parametrize("name", list(ENCODERS), ids=[slug(n) for n in ENCODERS])
def test_an_encoder_student_exports_verifies_quantizes_and_predicts(name, tmp_path, tiny_data, encoder_tokenizer):
    import shutil

    from compresskit.tasks.classification.export import ExportConfig, export
    from compresskit.tasks.classification.quantize import QuantizeConfig, quantize
    from compresskit.tasks.classification.runtime import OnnxClassifier

    tok_dir, vocab = encoder_tokenizer
    student = prune_layers(encoder_classifier(name, sorted(TOPICS), vocab), KEEP)
    model_dir = tmp_path / "student"
    student.save_pretrained(model_dir)
    for f in tok_dir.iterdir():
        shutil.copy(f, model_dir / f.name)
    # ModernBERT with every exporter: torch's dynamo graph of it does not load in ONNX Runtime (Split's opset-18
    # attribute in an opset-17 graph), which must be that candidate's failure, not the run's
    exporter = "auto" if name == "ModernBERT" else "torchscript"
    onnx = export(ExportConfig(max_length=32, exporter=exporter, attention="eager", cls_only="off"), model_dir,
                  tiny_data, tmp_path / "onnx").onnx_dir
    tried = {c["candidate"]: c.get("error") for c in json.loads((onnx / "export.json").read_text())["candidates"]}
    assert tried[json.loads((onnx / "export.json").read_text())["chosen"]] is None
    q = quantize(QuantizeConfig(mode="dynamic-int8", max_length=32, min_agreement=0.5, max_accuracy_drop=1.0),
                 onnx, tiny_data, tmp_path / "int8")
    assert q.parity.passed
    texts = ["the bank cut its rate", "the team won the cup"]
    fp32, int8 = OnnxClassifier(onnx), OnnxClassifier(q.onnx_dir)
    with torch.no_grad():
        from transformers import AutoTokenizer

        enc = AutoTokenizer.from_pretrained(model_dir)(texts, return_tensors="pt", padding=True)
        expected = [sorted(TOPICS)[i] for i in student(**enc).logits.argmax(-1).tolist()]
    assert [p["label"] for p in fp32.predict(texts)] == expected
    assert [p["label"] in TOPICS for p in int8.predict(texts)] == [True, True]


# ---------------------------------------------------------------------------------------------------------------
# Refused before anything is written


def _registered(model_type: str, forward_scale: float = 1.0, shadow_blocks: bool = False):
    """A Llama subclass registered with transformers' Auto classes under ``model_type``, as a user's custom model
    would be: its logits multiplied by ``forward_scale`` after the head (a formula no config field names), or a
    second list of per-layer modules beside the blocks, which pruning the blocks would leave as deep as before."""
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    config_cls = type(f"{model_type}Config", (LlamaConfig,), {"model_type": model_type})

    class Custom(LlamaForCausalLM):
        config_class = config_cls
        _no_split_modules = None if shadow_blocks else ["LlamaDecoderLayer"]

        def __init__(self, config):
            super().__init__(config)
            if shadow_blocks:
                self.adapters = torch.nn.ModuleList(torch.nn.Linear(4, 4) for _ in range(config.num_hidden_layers))

        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = out.logits * forward_scale
            return out

    AutoConfig.register(model_type, config_cls, exist_ok=True)
    AutoModelForCausalLM.register(config_cls, Custom, exist_ok=True)
    return config_of({"model_type": model_type})


@pytest.mark.parametrize(("model_type", "kwargs", "needle"), [
    ("ck-doubled-logits", {"forward_scale": 2.0}, "logits are not a linear map"),
    # transformers names the decoder layer class itself, so the blocks are found; the side list of per-layer modules
    # would not follow the pruning, and the student built on the meta device says so
    ("ck-per-layer-side-list", {"shadow_blocks": True}, r"^cannot build a student of Custom from its layers"),
])
def test_the_causal_lm_preflight_refuses_what_the_stages_could_not_do(model_type, kwargs, needle):
    from compresskit.artifacts import UserError
    from compresskit.tasks.causal_lm.distill import LMDistillConfig
    from compresskit.tasks.causal_lm.task import check_teacher_anatomy

    config = _registered(model_type, **kwargs)
    with pytest.raises(UserError, match=needle) as e:
        check_teacher_anatomy(LMDistillConfig(), config)
    assert "\n" not in str(e.value)
    check_teacher_anatomy(LMDistillConfig(), config_of(DECODERS["Llama"]))  # the plain family passes
