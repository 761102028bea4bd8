"""Depth pruning of causal LMs: block influence, layer choice, students from teacher blocks, shrunk students."""

from __future__ import annotations

import pytest
import torch
from lm_models import CORPUS, tiny_gpt2, tiny_llama, tiny_qwen2, tiny_tokenizer

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import layers as Ly
from compresskit.tasks.causal_lm.prompts import collate, text_windows


def _batch(seed: int = 0, vocab: int = 300):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, (2, 9), generator=g)
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[1, 6:] = 0
    return ids, mask


def test_influence_sums_match_hand_computed_cosines():
    h0 = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [9.0, 9.0]]])
    h1 = torch.tensor([[[0.0, 1.0], [2.0, 2.0], [-9.0, 3.0]]])
    h2 = torch.tensor([[[0.0, -3.0], [1.0, 0.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])  # the third token is padding: its values must not count
    sums, n = Ly.influence_sums([h0, h1, h2], mask)
    c = 2 ** -0.5
    assert n == 2
    assert sums.tolist() == pytest.approx([(1 - 0) + (1 - 1), (1 - (-1)) + (1 - c)])


@pytest.mark.parametrize("build", [tiny_llama, tiny_gpt2])
def test_block_hidden_states_are_raw_block_inputs_and_outputs(build):
    model = build(layers=3)
    ids, mask = _batch()
    hidden = Ly.block_hidden_states(model, ids, mask)
    _, blocks = Ly.decoder_blocks(model)
    assert len(hidden) == len(blocks) + 1
    # the last entry is the last block's own output: the final norm of it gives what the LM head reads
    norm = model.model.norm if hasattr(model, "model") else model.transformer.ln_f
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
        torch.testing.assert_close(model.lm_head(norm(hidden[-1])), out.logits, rtol=1e-4, atol=1e-5)


def test_block_influence_ignores_padding_and_matches_per_example_means():
    model = tiny_llama(layers=3)
    ids, mask = _batch(1)
    both = Ly.block_influence(model, [{"input_ids": ids, "attention_mask": mask}])
    # token-weighted: the same as pooling two single-example batches
    split = Ly.block_influence(model, [{"input_ids": ids[i:i + 1, :int(mask[i].sum())],
                                        "attention_mask": mask[i:i + 1, :int(mask[i].sum())]} for i in range(2)])
    assert len(both) == 3 and all(0 <= v <= 2 for v in both)
    assert both == pytest.approx(split, rel=1e-5)


def test_block_influence_on_tokenized_text():
    tok, model = tiny_tokenizer(), tiny_llama()
    batches = [collate(text_windows(tok, CORPUS[:4], window=12), pad_id=tok.pad_token_id)]
    assert len(Ly.block_influence(model, batches)) == 2


def test_choose_and_uniform_layers():
    choice = Ly.choose_layers([0.9, 0.1, 0.3, 0.05, 0.3, 0.8], depth=4)
    assert choice.layers == (0, 2, 4, 5) and "dropped [1, 3]" in choice.rule
    assert Ly.choose_layers([0.5, 0.5, 0.5], 1).layers == (0,)
    assert Ly.uniform_layers(30, 10).layers == (0, 3, 6, 10, 13, 16, 19, 23, 26, 29)
    assert Ly.uniform_layers(6, 2).layers == (0, 5) and Ly.uniform_layers(4, 4).layers == (0, 1, 2, 3)
    with pytest.raises(UserError, match="--student-depth must be between 1 and the teacher's 6 layers"):
        Ly.choose_layers([0.1] * 6, 7)


@pytest.mark.parametrize("build, layers", [(tiny_llama, [0, 2]), (tiny_gpt2, [1, 2]), (tiny_qwen2, [0, 2])])
def test_student_from_layers_equals_teacher_with_blocks_removed(build, layers):
    teacher = build(layers=3)
    student = Ly.student_from_layers(teacher, layers)
    assert len(Ly.decoder_blocks(student)[1]) == len(layers)
    # running the teacher with the dropped blocks removed gives the student's logits exactly
    ids, mask = _batch(2)
    _, blocks = Ly.decoder_blocks(teacher)
    pruned = torch.nn.ModuleList([blocks[i] for i in layers])
    parent = teacher.model if hasattr(teacher, "model") else teacher.transformer
    attr = "layers" if hasattr(teacher, "model") else "h"
    original = getattr(parent, attr)
    cfg_before = teacher.config.to_dict()
    with torch.no_grad():
        setattr(parent, attr, pruned)
        for j, block in enumerate(pruned):  # KV-cache slots follow the position in the stack
            for m in block.modules():
                if hasattr(m, "layer_idx"):
                    m._saved_idx, m.layer_idx = m.layer_idx, j
        try:
            expected = teacher(input_ids=ids, attention_mask=mask, use_cache=False).logits
        finally:
            setattr(parent, attr, original)
            for m in original.modules():
                if hasattr(m, "_saved_idx"):
                    m.layer_idx = m._saved_idx
        got = student(input_ids=ids, attention_mask=mask, use_cache=False).logits
    torch.testing.assert_close(got, expected)
    assert teacher.config.to_dict() == cfg_before  # the teacher is untouched


def test_student_keeps_ties_and_layer_types():
    teacher = tiny_qwen2(layers=3)
    assert teacher.config.layer_types == ["full_attention", "full_attention", "sliding_attention"]
    student = Ly.student_from_layers(teacher, [1, 2])
    assert student.config.num_hidden_layers == 2
    assert student.config.layer_types == ["full_attention", "sliding_attention"]
    assert student.model.layers[0].self_attn.sliding_window is None
    assert student.model.layers[1].self_attn.sliding_window == 16
    assert student.lm_head.weight is student.model.embed_tokens.weight
    assert student.lm_head.weight.data_ptr() != teacher.lm_head.weight.data_ptr()  # a copy, not a view
    gpt = Ly.student_from_layers(tiny_gpt2(layers=3), [0])
    assert gpt.config.n_layer == 1 and gpt.lm_head.weight is gpt.transformer.wte.weight


def test_student_from_layers_refuses_bad_layers():
    for bad in ([], [0, 0], [3], [-1]):
        with pytest.raises(UserError, match="--student-layers must name distinct layers among 0..2"):
            Ly.student_from_layers(tiny_llama(layers=3), bad)


@pytest.mark.parametrize("build", [tiny_llama, tiny_qwen2, tiny_gpt2])
def test_shrunk_student_is_narrower_with_the_same_vocabulary(build):
    teacher = build(hidden=64)
    student = Ly.shrunk_student(teacher.config, hidden=16, layers=1, heads=2, intermediate=24)
    assert type(student) is type(teacher)
    assert student.config.vocab_size == teacher.config.vocab_size
    assert sum(p.numel() for p in student.parameters()) < sum(p.numel() for p in teacher.parameters())
    ids, mask = _batch(3)
    assert student(input_ids=ids, attention_mask=mask).logits.shape == (2, 9, teacher.config.vocab_size)
    if hasattr(student.config, "layer_types"):
        assert len(student.config.layer_types) == 1


def test_shrunk_student_refuses_bad_shapes():
    with pytest.raises(UserError) as e:
        Ly.shrunk_student(tiny_llama().config, hidden=30, layers=0, heads=4, intermediate=8)
    assert "layers must be a positive integer" in str(e.value)
    with pytest.raises(UserError, match="divisible by heads"):
        Ly.shrunk_student(tiny_llama().config, hidden=30, layers=1, heads=4, intermediate=8)
    with pytest.raises(UserError, match="divisible by kv_heads"):
        Ly.shrunk_student(tiny_llama().config, hidden=32, layers=1, heads=4, intermediate=8, kv_heads=3)
