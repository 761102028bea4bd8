"""Token-level distillation losses: hand-computed values, masking, chunking, the JSD limits and the top-k teacher."""

from __future__ import annotations

import math

import pytest
import torch
from lm_models import tiny_llama

from compresskit.artifacts import UserError
from compresskit.tasks.causal_lm import kd_losses as K
from compresskit.tasks.causal_lm.kd_losses import IGNORE_INDEX, LMKDConfig


def _softmax(xs: list[float], t: float = 1.0) -> list[float]:
    e = [math.exp(x / t) for x in xs]
    return [v / sum(e) for v in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0)


# one batch, three positions, vocabulary 3; position 1 is masked out
S = [[1.0, 0.0, -1.0], [5.0, -3.0, 2.0], [0.5, 0.5, 2.0]]
T = [[0.0, 2.0, 1.0], [-1.0, 4.0, 0.0], [1.0, 0.0, 0.0]]
MASK = torch.tensor([[True, False, True]])


def _tensors():
    return torch.tensor([S]), torch.tensor([T])


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_forward_and_reverse_kl_match_hand_computed_values(temperature):
    s, t = _tensors()
    fwd = [_kl(_softmax(T[i], temperature), _softmax(S[i], temperature)) for i in (0, 2)]
    rev = [_kl(_softmax(S[i], temperature), _softmax(T[i], temperature)) for i in (0, 2)]
    scale = temperature ** 2
    assert K.forward_kl(s, t, MASK, temperature).item() == pytest.approx(scale * sum(fwd) / 2, rel=1e-5)
    assert K.reverse_kl(s, t, MASK, temperature).item() == pytest.approx(scale * sum(rev) / 2, rel=1e-5)
    assert fwd != pytest.approx(rev)  # the two directions really differ on these rows


def test_jsd_matches_hand_computed_value():
    s, t = _tensors()
    beta, vals = 0.3, []
    for i in (0, 2):
        p, q = _softmax(T[i]), _softmax(S[i])
        m = [beta * a + (1 - beta) * b for a, b in zip(p, q)]
        vals.append(beta * _kl(p, m) + (1 - beta) * _kl(q, m))
    assert K.generalized_jsd(s, t, MASK, beta).item() == pytest.approx(sum(vals) / 2, rel=1e-5)


def test_jsd_tends_to_forward_and_reverse_kl():
    torch.manual_seed(0)
    # float64: the limit is approached linearly in β, and float32 rounding would hide it below 1e-4
    s, t = torch.randn(2, 5, 11, dtype=torch.float64), torch.randn(2, 5, 11, dtype=torch.float64) * 2
    mask = torch.ones(2, 5, dtype=torch.bool)
    fwd, rev = K.forward_kl(s, t, mask).item(), K.reverse_kl(s, t, mask).item()
    for eps in (1e-6, 1e-7):
        assert K.generalized_jsd(s, t, mask, eps).item() / eps == pytest.approx(fwd, rel=1e-4)
        assert K.generalized_jsd(s, t, mask, 1 - eps).item() / eps == pytest.approx(rev, rel=1e-4)
    assert K.generalized_jsd(s, t, mask, 0.5).item() < min(fwd, rev)  # bounded by log 2, far from either here
    # the end points are those limits (GKD's definition), not the degenerate JSD(0) = JSD(1) = 0
    assert K.generalized_jsd(s, t, mask, 0.0).item() == pytest.approx(fwd, rel=1e-6)
    assert K.generalized_jsd(s, t, mask, 1.0).item() == pytest.approx(rev, rel=1e-6)


def test_cross_entropy_matches_hand_computed_value():
    s, _ = _tensors()
    targets = torch.tensor([[2, IGNORE_INDEX, 0]])
    expected = -(math.log(_softmax(S[0])[2]) + math.log(_softmax(S[2])[0])) / 2
    assert K.token_cross_entropy(s, targets).item() == pytest.approx(expected, rel=1e-6)


def test_mix_weights_divergence_and_cross_entropy():
    s, t = _tensors()
    targets = torch.tensor([[2, IGNORE_INDEX, 0]])
    cfg = LMKDConfig("reverse_kl", temperature=2.0, alpha=0.25)
    expected = 0.25 * K.reverse_kl(s, t, MASK, 2.0) + 0.75 * K.token_cross_entropy(s, targets)
    assert K.kd_loss(s, t, targets, cfg).item() == pytest.approx(expected.item(), rel=1e-6)


def test_masked_positions_change_nothing():
    s, t = _tensors()
    targets = torch.tensor([[2, IGNORE_INDEX, 0]])
    cfg = LMKDConfig("jsd", beta=0.5, alpha=0.5)
    before = K.kd_loss(s, t, targets, cfg)
    s2, t2 = s.clone(), t.clone()
    s2[0, 1], t2[0, 1] = float("nan"), float("inf")  # garbage where the mask is off
    assert K.kd_loss(s2, t2, targets, cfg).item() == pytest.approx(before.item(), rel=1e-7)


def test_no_position_gives_zero_that_backpropagates():
    s = torch.randn(1, 3, 5)
    s[0, 1] = float("nan")  # garbage at a masked position must not leak into the zero
    s.requires_grad_(True)
    loss = K.kd_loss(s, torch.randn(1, 3, 5), torch.full((1, 3), IGNORE_INDEX), LMKDConfig("jsd", alpha=0.5))
    loss.backward()
    assert loss.item() == 0.0 and s.grad is not None
    hidden = torch.randn(1, 3, 4, requires_grad=True)
    head = K.Head(torch.randn(5, 4))
    chunked = K.kd_loss_chunked(hidden, head, torch.randn(1, 3, 4), head, torch.full((1, 3), IGNORE_INDEX),
                                LMKDConfig())
    chunked.backward()
    assert chunked.item() == 0.0 and hidden.grad is not None


def test_next_token_targets_shift_labels():
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 7, 8, 9]])
    assert K.next_token_targets(labels).tolist() == [[IGNORE_INDEX, 7, 8, 9, IGNORE_INDEX]]


def _hidden_setup(seed: int = 0):
    torch.manual_seed(seed)
    B, L, H, V = 2, 7, 8, 13
    s_hidden = torch.randn(B, L, H, requires_grad=True)
    t_hidden = torch.randn(B, L, 6)
    s_head = K.Head(torch.randn(V, H, requires_grad=True), torch.randn(V))
    t_head = K.Head(torch.randn(V, 6))
    targets = torch.randint(0, V, (B, L))
    targets[0, :3] = IGNORE_INDEX
    targets[1, -2:] = IGNORE_INDEX
    return s_hidden, s_head, t_hidden, t_head, targets


@pytest.mark.parametrize("cfg", [LMKDConfig(), LMKDConfig("reverse_kl", temperature=2.0, alpha=0.7),
                                 LMKDConfig("jsd", beta=0.2)])
def test_chunked_equals_unchunked_in_value_and_gradient(cfg):
    s_hidden, s_head, t_hidden, t_head, targets = _hidden_setup()
    full = K.kd_loss(s_head.logits(s_hidden), t_head.logits(t_hidden), targets, cfg)
    g_full = torch.autograd.grad(full, [s_hidden, s_head.weight])
    chunked = K.kd_loss_chunked(s_hidden, s_head, t_hidden, t_head, targets, cfg, chunk_size=3)
    g_chunk = torch.autograd.grad(chunked, [s_hidden, s_head.weight])
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    for a, b in zip(g_full, g_chunk):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_topk_with_k_equal_vocab_equals_full_loss():
    s_hidden, s_head, t_hidden, t_head, targets = _hidden_setup(1)
    s_logits, t_logits = s_head.logits(s_hidden), t_head.logits(t_hidden)
    mask = targets != IGNORE_INDEX
    teacher = K.topk_from_logits(t_logits[mask], k=t_logits.shape[-1])
    for cfg in (LMKDConfig(), LMKDConfig("reverse_kl"), LMKDConfig("jsd", beta=0.6, alpha=0.5),
                LMKDConfig(temperature=3.0, topk_mode="renormalize")):
        full = K.kd_loss(s_logits, t_logits, targets, cfg).item()
        assert K.topk_kd_loss(s_logits, teacher, targets, cfg).item() == pytest.approx(full, rel=1e-5)
        chunked = K.topk_kd_loss_chunked(s_hidden, s_head, teacher, targets, cfg, chunk_size=4)
        assert chunked.item() == pytest.approx(full, rel=1e-5)


def test_topk_bucket_matches_hand_computed_value():
    # k = 1 of 3 tokens: the teacher's top token and "the other two" as one outcome
    s, t = torch.tensor([[S[0]]]), torch.tensor([[T[0]]])
    targets = torch.tensor([[0]])
    teacher = K.topk_from_logits(t[0], k=1)
    p, q = _softmax(T[0]), _softmax(S[0])
    top = max(range(3), key=lambda i: p[i])
    expected = _kl([p[top], 1 - p[top]], [q[top], 1 - q[top]])
    assert teacher.indices.tolist() == [[top]]
    assert K.topk_kd_loss(s, teacher, targets, LMKDConfig()).item() == pytest.approx(expected, rel=1e-5)
    # a lower bound of the full KL (coarsening), and strictly lower here
    assert expected < _kl(p, q)


def test_topk_renormalized_matches_hand_computed_value():
    s, t = torch.tensor([[S[2]]]), torch.tensor([[T[2]]])
    teacher = K.topk_from_logits(t[0], k=2)
    idx = teacher.indices[0].tolist()
    p = _softmax([T[2][i] for i in idx])
    q = _softmax([S[2][i] for i in idx])
    cfg = LMKDConfig(topk_mode="renormalize")
    assert K.topk_kd_loss(s, teacher, torch.tensor([[0]]), cfg).item() == pytest.approx(_kl(p, q), rel=1e-5)


def test_topk_bucket_refuses_a_temperature():
    s, t = _tensors()
    teacher = K.topk_from_logits(t[MASK], k=2)
    with pytest.raises(UserError, match="topk_mode bucket needs --kd-temperature 1"):
        K.topk_kd_loss(s, teacher, torch.where(MASK, 0, IGNORE_INDEX), LMKDConfig(temperature=2.0))


def test_config_reports_all_problems_at_once():
    with pytest.raises(UserError) as e:
        LMKDConfig("kl", beta=2.0, temperature=0.0, alpha=-1.0, topk_mode="x")
    msg = str(e.value)
    for flag in ("--kd-divergence", "--jsd-beta", "--kd-temperature", "--kd-alpha", "topk_mode"):
        assert flag in msg
    assert "\n" not in msg


def test_different_vocabularies_are_refused():
    with pytest.raises(ValueError, match="same vocabulary"):
        K.kd_loss(torch.randn(1, 2, 5), torch.randn(1, 2, 6), torch.zeros(1, 2, dtype=torch.long), LMKDConfig())


# ---------------------------------------------------------------------------------------------------------------
# Heads that post-process their logits: the model's own logits are what the chunked losses must see


def _tiny_gemma2(seed: int = 0, cap: float = 0.5):
    """A random Gemma 2 whose soft cap bends its logits (they reach about 0.3; Gemma 2 itself caps at 30)."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(seed)
    config = Gemma2Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, final_logit_softcapping=cap,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return Gemma2ForCausalLM(config).eval()


def _tiny_granite(seed: int = 0, logits_scaling: float = 8.0):
    """A random Granite, whose logits are the linear ones divided by ``logits_scaling``."""
    from transformers import GraniteConfig, GraniteForCausalLM

    torch.manual_seed(seed)
    config = GraniteConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, logits_scaling=logits_scaling,
                           pad_token_id=0, bos_token_id=1, eos_token_id=2)
    return GraniteForCausalLM(config).eval()


def _own_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits


def _hidden(model, ids):
    return K.final_hidden_states(model, ids, torch.ones_like(ids))


@pytest.mark.parametrize("build, scale, cap", [(_tiny_gemma2, 1.0, 0.5), (_tiny_granite, 1 / 8, None)])
def test_head_gives_the_models_own_logits_and_differs_from_the_plain_linear_map(build, scale, cap):
    model = build()
    head = K.check_lm_head(model)
    assert head.scale == pytest.approx(scale) and head.cap == cap
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as in a bf16 training step: the check runs without it
        assert K.check_lm_head(model)[2:] == head[2:]
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden, want = _hidden(model, ids), _own_logits(model, ids)
        torch.testing.assert_close(K.lm_head(model).logits(hidden), want, rtol=1e-5, atol=1e-6)
        plain = K.Head(head.weight, head.bias).logits(hidden)
    # ignoring the cap (or the scale) would be far off: 15 % of the largest logit at least
    assert (plain - want).abs().max() > 0.15 * want.abs().max()


def test_chunked_losses_equal_losses_on_the_models_own_logits():
    student, teacher = _tiny_gemma2(seed=1), _tiny_granite(seed=2)
    ids = torch.randint(3, 300, (2, 11), generator=torch.Generator().manual_seed(1))
    targets = K.next_token_targets(ids)
    targets[0, :4] = IGNORE_INDEX  # a prompt
    s_head, t_head = K.check_lm_head(student), K.check_lm_head(teacher)
    s_logits, t_logits = student(input_ids=ids).logits, _own_logits(teacher, ids)
    s_hidden = _hidden(student, ids)
    with torch.no_grad():
        t_hidden = _hidden(teacher, ids)
    cfg = LMKDConfig()  # forward KL, T = 1
    full = K.kd_loss(s_logits, t_logits, targets, cfg)
    chunked = K.kd_loss_chunked(s_hidden, s_head, t_hidden, t_head, targets, cfg, chunk_size=4)
    assert chunked.item() == pytest.approx(full.item(), rel=1e-5)
    g_full = torch.autograd.grad(full, [s_head.weight])[0]
    g_chunk = torch.autograd.grad(chunked, [s_head.weight], retain_graph=True)[0]
    torch.testing.assert_close(g_chunk, g_full, rtol=1e-4, atol=1e-7)
    ce = K.cross_entropy_chunked(s_hidden, s_head, targets, chunk_size=4)
    assert ce.item() == pytest.approx(K.token_cross_entropy(s_logits, targets).item(), rel=1e-5)
    mask = targets != IGNORE_INDEX
    top = K.topk_from_logits(t_logits[mask], k=300)
    assert K.topk_kd_loss_chunked(s_hidden, s_head, top, targets, cfg, chunk_size=4).item() == pytest.approx(
        full.item(), rel=1e-5)
    # the same losses through plain linear heads (cap and scale ignored) are another number
    plain = K.kd_loss_chunked(s_hidden, K.Head(s_head.weight), t_hidden, K.Head(t_head.weight), targets, cfg)
    assert abs(plain.item() - full.item()) > 0.1 * full.item()


def test_logits_that_are_not_the_head_are_refused_and_a_field_the_model_ignores_is_not():
    doubled = tiny_llama()
    own_forward = doubled.forward

    def forward(*args, **kwargs):
        out = own_forward(*args, **kwargs)
        out.logits = 2 * out.logits
        return out

    doubled.forward = forward
    with pytest.raises(UserError, match=r"^LlamaForCausalLM's logits are not a linear map of its final hidden") as e:
        K.check_lm_head(doubled)
    assert "\n" not in str(e.value)
    ignored = tiny_llama()
    ignored.config.logit_scale = 4.0  # a Cohere attribute that Llama's forward never applies: its own logits decide
    head = K.lm_head(ignored)
    assert (head.scale, head.cap) == (1.0, None)


def test_lm_head_checks_each_model_once_and_keeps_its_training_mode():
    model = _tiny_granite()
    calls = []
    own_forward = model.forward

    def forward(*args, **kwargs):
        calls.append(model.training)
        return own_forward(*args, **kwargs)

    model.forward = forward
    model.train()
    model.model.layers[0].eval()  # a frozen part stays as it was
    for _ in range(3):
        head = K.lm_head(model)
    assert calls == [False] and head.scale == pytest.approx(1 / 8)  # one forward, in eval mode
    assert model.training and not model.model.layers[0].training and model.model.layers[1].training
