from __future__ import annotations

import math

import numpy as np
import pytest

from compresskit.stats import bootstrap_ci, paired_bootstrap_diff, pareto_front


def _vector(mean: float, n: int, seed: int) -> np.ndarray:
    """A shuffled 0/1 vector with exactly ``mean * n`` ones."""
    ones = round(mean * n)
    v = np.array([1] * ones + [0] * (n - ones))
    np.random.default_rng(seed).shuffle(v)
    return v


def test_bootstrap_ci_all_correct_is_a_point():
    assert bootstrap_ci(np.ones(50)) == (1.0, 1.0)


def test_bootstrap_ci_matches_the_normal_approximation():
    v = _vector(0.8, 400, seed=1)
    low, high = bootstrap_ci(v, seed=0)
    assert low < 0.8 < high
    expected_width = 2 * 1.96 * math.sqrt(0.8 * 0.2 / 400)  # ≈ 0.078
    assert abs((high - low) - expected_width) < 0.02


def test_bootstrap_ci_is_deterministic_for_a_seed():
    v = _vector(0.8, 400, seed=1)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci(v, seed=3) != bootstrap_ci(v, seed=4)


def test_bootstrap_ci_accepts_bools_and_a_narrower_confidence_gives_a_narrower_interval():
    v = _vector(0.8, 400, seed=1).astype(bool)
    low95, high95 = bootstrap_ci(v)
    low50, high50 = bootstrap_ci(v, confidence=0.5)
    assert high50 - low50 < high95 - low95


@pytest.mark.parametrize("bad, message", [
    (np.array([]), "non-empty"),
    (np.ones((3, 2)), "1-D"),
    (np.array([0, 1, 2]), "0/1"),
    (np.array([0.5, 1.0]), "0/1"),
])
def test_bootstrap_ci_rejects_bad_vectors(bad, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(bad)


@pytest.mark.parametrize("kwargs, message", [
    ({"n_boot": 0}, "n_boot"),
    ({"confidence": 1.0}, "confidence"),
    ({"confidence": 0}, "confidence"),
])
def test_bootstrap_ci_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_ci(np.ones(10), **kwargs)


def test_bootstrap_ci_large_input_is_chunked_without_changing_determinism():
    v = _vector(0.9, 50_000, seed=2)  # 2000 × 50 000 indices would be 800 MB in one draw
    low, high = bootstrap_ci(v, n_boot=200, seed=0)
    assert low < 0.9 < high
    assert (low, high) == bootstrap_ci(v, n_boot=200, seed=0)


def test_paired_diff_of_identical_vectors_is_exactly_zero():
    v = _vector(0.7, 300, seed=5)
    result = paired_bootstrap_diff(v, v.copy())
    assert result["diff"] == 0.0
    assert (result["low"], result["high"]) == (0.0, 0.0)
    assert result["p_a_not_better"] == 1.0  # a − b ≤ 0 in every resample


def test_paired_diff_detects_a_clearly_better_model():
    b = _vector(0.7, 400, seed=6)
    a = b.copy()
    a[np.flatnonzero(a == 0)[:60]] = 1  # a gets 60 more examples right and none wrong: +15 points
    result = paired_bootstrap_diff(a, b, seed=0)
    assert result["diff"] == pytest.approx(0.15)
    assert 0 < result["low"] < 0.15 < result["high"]
    assert result["p_a_not_better"] < 0.05
    flipped = paired_bootstrap_diff(b, a, seed=0)
    assert flipped["high"] < 0 and flipped["p_a_not_better"] == 1.0


def test_paired_diff_is_paired():
    # Two models that agree on almost every example: a gets 8 of 400 more right (+2 points). Their separate
    # intervals overlap widely, but resampling the same examples for both shows that a is reliably better.
    b = _vector(0.7, 400, seed=7)
    a = b.copy()
    a[np.flatnonzero(a == 0)[:8]] = 1
    a_low, a_high = bootstrap_ci(a)
    b_low, b_high = bootstrap_ci(b)
    assert a_low < b_high  # unpaired intervals overlap
    result = paired_bootstrap_diff(a, b)
    assert result["diff"] == pytest.approx(0.02)
    assert result["low"] > 0 and result["p_a_not_better"] < 0.01


def test_paired_diff_rejects_different_lengths():
    with pytest.raises(ValueError, match="same test examples"):
        paired_bootstrap_diff(np.ones(10), np.ones(11))


def test_pareto_front_on_a_hand_made_set():
    points = [
        (1.0, 0.80),  # 0: fastest and least accurate, still on the front
        (2.0, 0.85),  # 1: front
        (2.0, 0.85),  # 2: identical to 1, neither dominates the other: both kept
        (3.0, 0.84),  # 3: slower and less accurate than 1: dominated
        (2.5, 0.90),  # 4: front
        (5.0, 0.90),  # 5: as accurate as 4 but slower: dominated
        (6.0, 0.95),  # 6: the most accurate, on the front
        (1.0, 0.79),  # 7: as fast as 0 but less accurate: dominated
    ]
    assert pareto_front(points) == [0, 1, 2, 4, 6]


def test_pareto_front_is_sorted_by_latency_not_by_index():
    assert pareto_front([(9.0, 0.99), (1.0, 0.5), (4.0, 0.9)]) == [1, 2, 0]


def test_pareto_front_edge_cases():
    assert pareto_front([]) == []
    assert pareto_front([(1.0, 0.5)]) == [0]
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(1.0, float("nan"))])


def test_bootstrap_mean_ci_covers_a_continuous_mean_and_matches_bootstrap_ci_on_0_1():
    from compresskit.stats import bootstrap_mean_ci

    values = np.random.default_rng(0).uniform(0, 1, 300)
    low, high = bootstrap_mean_ci(values, seed=0)
    assert low < values.mean() < high
    assert (high - low) == pytest.approx(2 * 1.96 * values.std() / math.sqrt(300), rel=0.2)
    v = _vector(0.8, 400, seed=1)
    assert bootstrap_mean_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_mean_ci(np.full(5, 0.25)) == (0.25, 0.25)


@pytest.mark.parametrize("bad, message", [(np.array([]), "non-empty"), (np.ones((2, 2)), "1-D"),
                                          (np.array([0.5, float("nan")]), "finite")])
def test_bootstrap_mean_ci_rejects_bad_vectors(bad, message):
    from compresskit.stats import bootstrap_mean_ci

    with pytest.raises(ValueError, match=message):
        bootstrap_mean_ci(bad)
