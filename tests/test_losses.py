import dataclasses
import math

import pytest
import torch

from compresskit.tasks.classification.losses import (
    HiddenProjection,
    LossWeights,
    attention_transfer_loss,
    combine,
    embedding_loss,
    heads_compatible,
    hidden_state_loss,
    kd_loss,
    mean_pool,
    mse_logits_loss,
    needs_projection,
    parse_layer_map,
    soft_target_loss,
)


def _kl_by_hand(s: list[float], t: list[float], temp: float) -> float:
    ps = [math.exp(x / temp) for x in s]
    pt = [math.exp(x / temp) for x in t]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    return sum(q * math.log(q / p) for p, q in zip(ps, pt))


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0])
def test_soft_target_loss_is_kl_times_t_squared(temp):
    s, t = [1.0, 0.0, -1.0], [0.5, 2.0, -0.5]
    got = soft_target_loss(torch.tensor([s]), torch.tensor([t]), temp).item()
    assert got == pytest.approx(_kl_by_hand(s, t, temp) * temp**2, rel=1e-5)


def test_soft_target_loss_averages_over_batch():
    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    want = (_kl_by_hand([1, 0], [0, 1], 2.0) + 0.0) / 2 * 4
    assert soft_target_loss(s, t, 2.0).item() == pytest.approx(want, rel=1e-5)


def test_soft_loss_is_zero_when_student_matches_teacher():
    x = torch.randn(4, 5)
    assert soft_target_loss(x, x.clone(), 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_mixes_soft_and_hard_by_alpha():
    s, t = torch.tensor([[2.0, 0.5, -1.0]]), torch.tensor([[0.0, 3.0, 0.0]])
    y = torch.tensor([0])
    ce = -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.5) + math.exp(-1.0)))
    soft = _kl_by_hand([2.0, 0.5, -1.0], [0.0, 3.0, 0.0], 2.0) * 4
    assert kd_loss(s, t, y, 2.0, 0.0).item() == pytest.approx(ce, rel=1e-5)
    assert kd_loss(s, t, y, 2.0, 1.0).item() == pytest.approx(soft, rel=1e-5)
    assert kd_loss(s, t, y, 2.0, 0.3).item() == pytest.approx(0.3 * soft + 0.7 * ce, rel=1e-5)


def test_kd_loss_without_labels_uses_soft_targets_only():
    s, t = torch.tensor([[2.0, 0.5]]), torch.tensor([[0.0, 3.0]])
    assert kd_loss(s, t, None, 2.0, 0.5).item() == pytest.approx(soft_target_loss(s, t, 2.0).item())


def test_kd_loss_gradient_flows_to_student_only():
    s = torch.randn(3, 4, requires_grad=True)
    t = torch.randn(3, 4, requires_grad=True)
    kd_loss(s, t, torch.tensor([0, 1, 2]), 2.0, 0.5).backward()
    assert s.grad is not None and s.grad.abs().sum() > 0
    # the teacher is a fixed target: its logits receive a gradient only if someone forgot to detach upstream,
    # but the loss itself must not depend on teacher gradients to work
    assert t.grad is None or torch.isfinite(t.grad).all()


# --- logit matching -------------------------------------------------------------------------------------------


def test_mse_logits_loss_averages_over_all_elements():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[0.0, 2.0], [1.0, 5.0]])
    # squared differences 1, 0, 4, 1 over 4 elements
    assert mse_logits_loss(s, t).item() == pytest.approx(6.0 / 4)


def test_mse_logits_loss_is_zero_for_equal_logits_and_sees_offsets():
    x = torch.tensor([[1.0, -1.0, 0.5]])
    assert mse_logits_loss(x, x.clone()).item() == 0.0
    # a constant shift leaves softmax (and the soft-target loss) unchanged but logit matching notices it
    assert soft_target_loss(x + 3.0, x, 1.0).item() == pytest.approx(0.0, abs=1e-6)
    assert mse_logits_loss(x + 3.0, x).item() == pytest.approx(9.0)


# --- hidden states --------------------------------------------------------------------------------------------


def test_hidden_mse_is_mean_over_real_tokens_of_per_token_mse():
    student = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [9.0, 9.0]]])
    teacher = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    # token 0: (1 + 0) / 2 = 0.5; token 1: (1 + 1) / 2 = 1.0; token 2 is padding
    assert hidden_state_loss(student, teacher, mask).item() == pytest.approx((0.5 + 1.0) / 2)


def test_hidden_loss_averages_tokens_not_sequences():
    student = torch.tensor([[[2.0], [0.0]], [[1.0], [3.0]]])
    teacher = torch.zeros(2, 2, 1)
    mask = torch.tensor([[1, 0], [1, 1]])
    # three real tokens with squared errors 4, 1, 9; a mean of sequence means would give (4 + 5) / 2 instead
    assert hidden_state_loss(student, teacher, mask).item() == pytest.approx((4 + 1 + 9) / 3)


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_hidden_loss_ignores_padded_tokens(kind):
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 3), torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    before = hidden_state_loss(student, teacher, mask, kind=kind).item()
    changed_s, changed_t = student.clone(), teacher.clone()
    changed_s[0, 3], changed_t[1, 2:] = 100.0, float("nan")
    assert hidden_state_loss(changed_s, changed_t, mask, kind=kind).item() == pytest.approx(before)
    # and the mask matters at all: unmasking changes the value
    assert hidden_state_loss(changed_s, teacher, torch.ones(2, 4), kind=kind).item() != pytest.approx(before)


def test_hidden_cosine_by_hand():
    student = torch.tensor([[[1.0, 0.0], [3.0, 4.0]]])
    teacher = torch.tensor([[[0.0, 1.0], [4.0, 3.0]]])
    # orthogonal: 1 - 0; cos([3,4],[4,3]) = 24 / 25
    want = ((1 - 0) + (1 - 24 / 25)) / 2
    assert hidden_state_loss(student, teacher, torch.ones(1, 2), kind="cosine").item() == pytest.approx(want)


def test_hidden_cosine_of_identical_or_scaled_states_is_zero():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3)
    assert hidden_state_loss(x, x.clone(), mask, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_state_loss(2.5 * x, x, mask, kind="cosine").item() == pytest.approx(0.0, abs=1e-6)
    assert hidden_state_loss(2.5 * x, x, mask, kind="mse").item() > 0.1


def test_hidden_loss_with_projection_by_hand_and_gradient_reaches_projection():
    proj = torch.nn.Linear(2, 3)
    with torch.no_grad():
        proj.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        proj.bias.zero_()
    student = torch.tensor([[[1.0, 2.0]]], requires_grad=True)
    teacher = torch.tensor([[[1.0, 2.0, 5.0]]])
    # projected student [1, 2, 3] against [1, 2, 5]: squared errors 0, 0, 4 over 3 dims
    loss = hidden_state_loss(student, teacher, torch.ones(1, 1), projection=proj)
    assert loss.item() == pytest.approx(4 / 3)
    loss.backward()
    assert proj.weight.grad is not None and proj.weight.grad.abs().sum() > 0
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_hidden_loss_rejects_width_mismatch_without_projection():
    with pytest.raises(ValueError, match=r"widths differ \(student 4, teacher 8\).*projection"):
        hidden_state_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 8), torch.ones(1, 2))
    with pytest.raises(ValueError, match="projection gives width 5"):
        hidden_state_loss(torch.zeros(1, 2, 4), torch.zeros(1, 2, 8), torch.ones(1, 2),
                          projection=torch.nn.Linear(4, 5))


def test_hidden_loss_rejects_unknown_kind_and_mismatched_shapes():
    x = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="--hidden-loss"):
        hidden_state_loss(x, x, torch.ones(1, 2), kind="l1")
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        hidden_state_loss(x, torch.zeros(1, 3, 4), torch.ones(1, 2))


def test_hidden_projection_has_one_linear_per_pair_and_uses_the_ith():
    torch.manual_seed(0)
    proj = HiddenProjection(4, 6, 3)
    assert len(proj.layers) == 3
    assert all(isinstance(m, torch.nn.Linear) and (m.in_features, m.out_features) == (4, 6) for m in proj.layers)
    x = torch.randn(2, 5, 4)
    out = proj(1, x)
    assert out.shape == (2, 5, 6)
    assert torch.equal(out, proj.layers[1](x))
    assert not torch.allclose(out, proj.layers[0](x))
    # the projections are parameters of the module, so an optimizer over it trains them
    assert sum(p.numel() for p in proj.parameters()) == 3 * (4 * 6 + 6)


def test_needs_projection_and_equal_width_projection_is_allowed():
    assert needs_projection(4, 8) and not needs_projection(8, 8)
    assert HiddenProjection(8, 8, 1)(0, torch.zeros(1, 8)).shape == (1, 8)
    with pytest.raises(ValueError):
        HiddenProjection(8, 8, 0)


# --- layer map ------------------------------------------------------------------------------------------------


def test_parse_layer_map_explicit_keeps_order_and_allows_spaces():
    assert parse_layer_map("2:0,5:1", 6, 2) == [(2, 0), (5, 1)]
    assert parse_layer_map(" 5 : 1 , 2:0 ", 6, 2) == [(5, 1), (2, 0)]
    assert parse_layer_map("0:1", 6, 2) == [(0, 1)]


@pytest.mark.parametrize(
    ("n_teacher", "n_student", "want"),
    [
        (6, 2, [(2, 0), (5, 1)]),
        (6, 3, [(1, 0), (3, 1), (5, 2)]),
        (12, 4, [(2, 0), (5, 1), (8, 2), (11, 3)]),
        (4, 4, [(0, 0), (1, 1), (2, 2), (3, 3)]),
        (5, 2, [(2, 0), (4, 1)]),  # 2.5 rounds half up to 3 (Python's round() would give 2)
        (1, 3, [(0, 0), (0, 1), (0, 2)]),  # deeper student: never below block 0
    ],
)
def test_parse_layer_map_auto_is_uniform_last_to_last(n_teacher, n_student, want):
    assert parse_layer_map("auto", n_teacher, n_student) == want
    assert parse_layer_map(" AUTO ", n_teacher, n_student) == want


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("", "not 'teacher_layer:student_layer'"),
        ("2", "not 'teacher_layer:student_layer'"),
        ("2:0:1", "not 'teacher_layer:student_layer'"),
        ("a:b", "not 'teacher_layer:student_layer'"),
        ("2:0,", "not 'teacher_layer:student_layer'"),
        ("2.0:0", "not 'teacher_layer:student_layer'"),
        ("6:0", "teacher layer 6 is out of range 0..5"),
        ("-1:0", "teacher layer -1 is out of range"),
        ("2:2", "student layer 2 is out of range 0..1"),
        ("2:0,3:0", "student layer 0 appears more than once"),
    ],
)
def test_parse_layer_map_rejects_bad_specs(spec, why):
    with pytest.raises(ValueError, match="--layer-map") as err:
        parse_layer_map(spec, 6, 2)
    assert why in str(err.value)


def test_parse_layer_map_reports_all_problems_at_once():
    with pytest.raises(ValueError) as err:
        parse_layer_map("9:0,1:7", 6, 2)
    assert "teacher layer 9" in str(err.value) and "student layer 7" in str(err.value)


def test_parse_layer_map_rejects_models_without_layers():
    with pytest.raises(ValueError, match="--layer-map"):
        parse_layer_map("auto", 6, 0)


# --- attention transfer ---------------------------------------------------------------------------------------


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


def test_attention_transfer_of_identical_maps_is_zero():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(2, 3, 4, 4), dim=-1)
    assert attention_transfer_loss(attn, attn.clone(), torch.ones(2, 4)).item() == pytest.approx(0.0, abs=1e-6)


def test_attention_transfer_by_hand():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]]]])
    row0, row1 = _kl([0.5, 0.5], [0.25, 0.75]), _kl([1.0, 0.0], [0.5, 0.5])
    assert row1 == pytest.approx(math.log(2))
    assert attention_transfer_loss(student, teacher, torch.ones(1, 2)).item() == pytest.approx((row0 + row1) / 2)


def test_attention_transfer_averages_heads_and_skips_padded_queries():
    teacher = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [1.0, 0.0]]]])
    student = torch.tensor([[[[0.25, 0.75], [0.5, 0.5]], [[0.5, 0.5], [0.9, 0.1]]]])
    mask = torch.tensor([[1, 0]])
    # query 1 is padding; head 0 row 0 differs from the teacher, head 1 row 0 matches it
    want = (_kl([0.5, 0.5], [0.25, 0.75]) + 0.0) / 2
    assert attention_transfer_loss(student, teacher, mask).item() == pytest.approx(want)
    changed = student.clone()
    changed[0, :, 1] = torch.tensor([0.0, 1.0])
    assert attention_transfer_loss(changed, teacher, mask).item() == pytest.approx(want)


def test_attention_transfer_is_finite_with_zero_probabilities():
    teacher = torch.tensor([[[[1.0, 0.0]]]])
    assert attention_transfer_loss(teacher.clone(), teacher, torch.ones(1, 1)).item() == pytest.approx(0.0, abs=1e-6)
    loss = attention_transfer_loss(torch.tensor([[[[0.0, 1.0]]]]), teacher, torch.ones(1, 1))
    assert torch.isfinite(loss) and loss.item() > 10


def test_attention_transfer_rejects_different_head_counts():
    assert heads_compatible(4, 4) and not heads_compatible(2, 4)
    with pytest.raises(ValueError, match="head counts differ: student has 2, teacher has 4"):
        attention_transfer_loss(torch.full((1, 2, 3, 3), 1 / 3), torch.full((1, 4, 3, 3), 1 / 3), torch.ones(1, 3))


# --- sentence embeddings --------------------------------------------------------------------------------------


def test_mean_pool_by_hand_ignores_padding():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]], [[4.0, 0.0], [-7.0, 7.0], [7.0, 7.0]]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert mean_pool(hidden, mask).tolist() == [[2.0, 4.0], [4.0, 0.0]]


def test_mean_pool_of_all_padding_row_is_zero():
    assert mean_pool(torch.ones(1, 2, 3), torch.zeros(1, 2)).tolist() == [[0.0, 0.0, 0.0]]


def test_embedding_loss_by_hand():
    s = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    t = torch.tensor([[1.0, 0.0], [0.0, 4.0]])
    # squared differences 0, 4, 9, 0 over 4 elements
    assert embedding_loss(s, t).item() == pytest.approx(13 / 4)
    with pytest.raises(ValueError, match="embedding shapes differ"):
        embedding_loss(s, torch.zeros(2, 3))


# --- weights and combination ----------------------------------------------------------------------------------


def test_loss_weights_defaults_are_plain_kd():
    w = LossWeights()
    assert w.active() == {"soft": 1.0}
    assert not w.needs_hidden_states and not w.needs_attentions
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.soft = 2.0  # type: ignore[misc]


def test_loss_weights_say_what_the_models_must_output():
    assert LossWeights(hidden=0.5).needs_hidden_states
    assert LossWeights(embedding=1.0).needs_hidden_states
    assert not LossWeights(embedding=1.0).needs_attentions
    assert LossWeights(attention=1.0).needs_attentions
    assert LossWeights(soft=0.0, mse_logits=2.0, attention=0.5).active() == {"mse_logits": 2.0, "attention": 0.5}


@pytest.mark.parametrize(
    ("field", "flag"),
    [("soft", "--w-soft"), ("mse_logits", "--w-mse-logits"), ("hidden", "--w-hidden"),
     ("attention", "--w-attention"), ("embedding", "--w-embedding")],
)
@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_loss_weights_reject_negative_or_nan_weights(field, flag, bad):
    with pytest.raises(ValueError, match=flag):
        LossWeights(**{field: bad})


def test_loss_weights_reject_unknown_hidden_kind_and_report_all_problems():
    with pytest.raises(ValueError, match="--hidden-loss") as err:
        LossWeights(hidden=1.0, hidden_kind="l1", attention=-1.0)
    assert "--w-attention" in str(err.value)
    assert LossWeights(hidden=1.0, hidden_kind="cosine").hidden_kind == "cosine"


def test_loss_weights_reject_all_zero():
    with pytest.raises(ValueError, match="all loss weights are 0"):
        LossWeights(soft=0.0)


def test_combine_weights_active_terms_and_logs_every_term():
    weights = LossWeights(soft=1.0, hidden=0.5)
    student = torch.tensor(2.0, requires_grad=True)
    terms = {"soft": student * 1.0, "hidden": student * 2.0, "attention": torch.tensor(float("nan"))}
    total, logged = combine(terms, weights)
    # 1 · 2 + 0.5 · 4; the zero-weight NaN term is logged but not summed
    assert total.item() == pytest.approx(4.0)
    assert logged["soft"] == 2.0 and logged["hidden"] == 4.0 and math.isnan(logged["attention"])
    assert set(logged) == {"soft", "hidden", "attention"}
    total.backward()
    assert student.grad.item() == pytest.approx(1.0 + 0.5 * 2.0)


def test_combine_missing_zero_weight_terms_are_fine():
    total, logged = combine({"mse_logits": torch.tensor(3.0)}, LossWeights(soft=0.0, mse_logits=2.0))
    assert total.item() == 6.0 and logged == {"mse_logits": 3.0}


def test_combine_rejects_missing_active_and_unknown_terms():
    with pytest.raises(KeyError, match="hidden"):
        combine({"soft": torch.tensor(1.0)}, LossWeights(hidden=1.0))
    with pytest.raises(KeyError, match="hiden"):
        combine({"soft": torch.tensor(1.0), "hiden": torch.tensor(1.0)}, LossWeights())
