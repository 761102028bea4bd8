"""Small, pure statistics for comparing students: bootstrap confidence intervals and the Pareto front.

Accuracy on a few hundred test examples moves by a point or two from noise alone, so a sweep reports every
accuracy with a bootstrap interval, and compares two models with a *paired* bootstrap: both are scored on the
same examples, so resampling the same indices for both cancels the per-example difficulty they share.
"""

from __future__ import annotations

import math

import numpy as np

# Indices drawn per chunk (32 MiB of int64): bounds memory on large test sets without changing the result.
_MAX_DRAWS = 1 << 22


def _correctness(x: object, name: str) -> np.ndarray:
    """Check that ``x`` is a non-empty 1-D vector of 0/1 (or bool) values; return it as float64."""
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector of per-example 0/1 correctness, "
                         f"got shape {arr.shape}")
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0/1 (or True/False) values, one per test example")
    return arr.astype(np.float64)


def _check_settings(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ValueError(f"n_boot must be a positive integer, got {n_boot!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise ValueError(f"confidence must lie strictly between 0 and 1 (e.g. 0.95), got {confidence!r}")


def _resampled_means(columns: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Means of ``n_boot`` bootstrap resamples of the rows of ``columns`` (n, k) -> (n_boot, k).

    All k columns use the same resampled row indices, which is what makes a paired comparison paired.
    """
    n, k = columns.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, _MAX_DRAWS // n)
    means = np.empty((n_boot, k))
    for start in range(0, n_boot, chunk):
        stop = min(start + chunk, n_boot)
        idx = rng.integers(0, n, size=(stop - start, n))
        for j in range(k):
            means[start:stop, j] = columns[idx, j].mean(axis=1)
    return means


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def bootstrap_ci(correct: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of ``correct`` (shape (n,), 0/1 per test example).

    Deterministic for a given ``seed``. Returns (low, high) as fractions, e.g. (0.93, 0.97).
    """
    _check_settings(n_boot, confidence)
    values = _correctness(correct, "correct")
    return _interval(_resampled_means(values[:, None], n_boot, seed)[:, 0], confidence)


def bootstrap_mean_ci(values: np.ndarray, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of continuous per-example scores ``values`` (shape (n,), e.g.
    ROUGE-L per prompt or mean NLL per window); ``bootstrap_ci`` is its 0/1 counterpart.

    Same resampling as ``bootstrap_ci``, so a 0/1 vector gets the same interval from both. Deterministic for a
    given ``seed``. Returns (low, high).
    """
    _check_settings(n_boot, confidence)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"values must be a non-empty 1-D vector of per-example scores, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("values must be finite numbers (drop the examples without a score first)")
    return _interval(_resampled_means(arr[:, None], n_boot, seed)[:, 0], confidence)


def paired_bootstrap_diff(correct_a: np.ndarray, correct_b: np.ndarray, n_boot: int = 2000,
                          confidence: float = 0.95, seed: int = 0) -> dict:
    """Paired bootstrap of mean(a) − mean(b) for two models scored on the same test examples (shapes (n,)).

    Returns ``diff`` (observed mean_a − mean_b), ``low``/``high`` (percentile interval of the difference) and
    ``p_a_not_better`` (share of resamples where a − b ≤ 0; small means a is reliably better).
    """
    _check_settings(n_boot, confidence)
    a, b = _correctness(correct_a, "correct_a"), _correctness(correct_b, "correct_b")
    if a.shape != b.shape:
        raise ValueError(f"correct_a and correct_b must score the same test examples, got lengths "
                         f"{a.size} and {b.size}")
    means = _resampled_means(np.stack([a, b], axis=1), n_boot, seed)
    diffs = means[:, 0] - means[:, 1]
    low, high = _interval(diffs, confidence)
    return {"diff": float(a.mean() - b.mean()), "low": low, "high": high,
            "p_a_not_better": float(np.mean(diffs <= 0))}


def mcnemar_exact_p(to_wrong: int, to_right: int) -> float:
    """Two-sided exact McNemar p-value for two models scored on the same examples: ``to_wrong`` examples the first
    got right and the second wrong, ``to_right`` the reverse. Under "equally accurate" each changed example goes
    either way with probability 1/2, so the p-value is a binomial tail (1.0 when nothing changed)."""
    from math import comb

    n, k = to_wrong + to_right, min(to_wrong, to_right)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(comb(n, i) for i in range(k + 1)) / 2 ** n)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated (latency, accuracy) points, sorted by latency (then index).

    Lower latency and higher accuracy are better. A point is dominated when another is no slower and no less
    accurate, and strictly better in one of the two; identical points therefore do not dominate each other.
    """
    for i, (x, y) in enumerate(points):
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"point {i} is {(x, y)!r}: latency and accuracy must be finite numbers")
    front = [i for i, (x, y) in enumerate(points)
             if not any(xo <= x and yo >= y and (xo < x or yo > y) for xo, yo in points)]
    return sorted(front, key=lambda i: (points[i][0], i))


def rounds_ratio_interval(baseline_p50s: np.ndarray, current_p50s: np.ndarray, confidence: float = 0.95
                          ) -> tuple[float, float, float]:
    """(ratio, low, high) of current / baseline latency from each run's per-round p50s (shapes (n,), (m,), n, m ≥ 2):
    the ratio of their geometric means with a Welch t interval on the log scale (rounds are few, so t, not normal,
    quantiles; the two runs' spreads may differ)."""
    from scipy.stats import t as student_t

    b, c = np.log(np.asarray(baseline_p50s, dtype=np.float64)), np.log(np.asarray(current_p50s, dtype=np.float64))
    if b.size < 2 or c.size < 2:
        raise ValueError("a rounds interval needs at least two rounds in each run")
    diff = float(c.mean() - b.mean())
    vb, vc = b.var(ddof=1) / b.size, c.var(ddof=1) / c.size
    se = float(np.sqrt(vb + vc))
    if se == 0.0:
        return float(np.exp(diff)), float(np.exp(diff)), float(np.exp(diff))
    df = (vb + vc) ** 2 / (vb ** 2 / (b.size - 1) + vc ** 2 / (c.size - 1))
    half = float(student_t.ppf(1 - (1 - confidence) / 2, df)) * se
    return float(np.exp(diff)), float(np.exp(diff - half)), float(np.exp(diff + half))
