"""The judge's figures and their uncertainty: means, paired differences and win rates with a 95% interval
from a cluster bootstrap over held-out conversations.

Why by conversation (issue 27): the prompts are turns of a few held-out conversations (the customer holds
out 10-20; the 12-conversation sample holds out 1), and turns of one conversation share its client, arc
and consultant, so they are not independent draws. Resampling turns as if they were makes the interval far
too narrow; resampling whole conversations (each unit keeps its own weight) is the usual cure for clustered
data (Field & Welsh 2007, "Bootstrapping clustered data"; Arena-Hard resamples battles, each order of a
pair one battle). A percentile interval, seeded so a report is reproducible. With one conversation the
interval is a point: the verdict's `min_conversations` says `insufficient` before any interval is read.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

WIN, TIE, LOSS = 1.0, 0.5, 0.0


def bootstrap_ci(
    outcomes: list[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi) of independent outcomes: each its own cluster (lm-eval's items, for instance)."""
    return cluster_ci([(i, v) for i, v in enumerate(outcomes)], n_boot, seed, level)


def cluster_ci(
    units: list[tuple[str, float]], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi) of (cluster, value) units: the mean over units, and the percentile interval of the
    means of n_boot samples of whole clusters drawn with replacement. ValueError when there is no unit."""
    if not units:
        raise ValueError("an interval needs at least one value")
    by_cluster: dict = defaultdict(list)
    for cluster, value in units:
        by_cluster[cluster].append(float(value))
    sums = np.array([sum(v) for v in by_cluster.values()])
    counts = np.array([len(v) for v in by_cluster.values()])
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(n_boot, len(sums)))
    means = sums[picks].sum(axis=1) / counts[picks].sum(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(sums.sum() / counts.sum()), float(lo), float(hi)


def interval(units: list[tuple[str, float]], seed: int = 0, digits: int = 4) -> dict:
    """{"mean", "ci95", "n", "n_clusters"} of (cluster, value) units, rounded for a report; mean and
    ci95 None when there is none (JSON has no NaN)."""
    out = {"mean": None, "ci95": None, "n": len(units), "n_clusters": len({c for c, _ in units})}
    if units:
        mean, lo, hi = cluster_ci(units, seed=seed)
        out |= {"mean": round(mean, digits), "ci95": [round(lo, digits), round(hi, digits)]}
    return out


def mean_n(values: list[float]) -> dict:
    """{"mean", "n"}; mean None when nothing was scored (JSON has no NaN)."""
    return {"mean": round(float(np.mean(values)), 4) if values else None, "n": len(values)}


def _logistic_fits(y: np.ndarray, x: np.ndarray, weights: np.ndarray, iters: int = 30) -> np.ndarray:
    """Intercepts and slopes, shape (fits, 2), of logistic regressions of y in [0, 1] (ties 0.5: a
    fractional response) on x, one per row of `weights` (each unit's weight in that fit: a bootstrap
    sample is the count of times its cluster was drawn), all by Newton's method at once. A ridge keeps a
    separable sample finite: weak on the intercept (all wins stays near 1), and on the slope a Gaussian
    prior of standard deviation ~3 log-odds (from equal length to "longer"): a judge that always picks the
    longer reply is fitted as such (tests/evals/test_stats.py), an endless slope is not."""
    design = np.column_stack([np.ones_like(x), x])  # (units, 2)
    beta = np.zeros((weights.shape[0], 2))
    ridge = np.array([1e-3, 0.1])
    for _ in range(iters):
        p = 1 / (1 + np.exp(-(beta @ design.T)))  # (fits, units)
        grad = (weights * (y - p)) @ design - ridge * beta
        curve = weights * p * (1 - p)
        hess = np.einsum("fu,ui,uj->fij", curve, design, design) + np.diag(ridge)
        step = np.linalg.solve(hess, grad[..., None])[..., 0]
        beta += step
        if np.abs(step).max() < 1e-9:
            break
    return beta


def length_controlled(
    units: list[tuple[str, float, float]], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict:
    """A win rate with length controlled (AlpacaEval 2's idea, Dubois et al. 2024: regress the preference
    on the length difference and read the intercept): units are (cluster, outcome 1/0.5/0, second's length
    minus first's, in tokens). The feature is tanh(difference / its standard deviation), as AlpacaEval 2's
    GLM has it: a reply far longer counts as "longer", not as a lever extrapolating the intercept from five
    deviations away. The win rate at equal length is sigmoid(intercept), with a cluster-bootstrap
    interval. When one side is always the longer, length and quality cannot be told apart and the figure
    stays near the raw win rate. {"win_rate", "ci95", "length_slope"}; None values when there is no unit."""
    if not units:
        return {"win_rate": None, "ci95": None, "length_slope": None}
    names = sorted({c for c, _, _ in units})
    index = np.array([names.index(c) for c, _, _ in units])
    y = np.array([o for _, o, _ in units], dtype=float)
    diff = np.array([d for _, _, d in units], dtype=float)
    x = np.tanh(diff / (float(np.std(diff)) or 1.0))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(names), size=(n_boot, len(names)))
    counts = np.stack([np.bincount(row, minlength=len(names)) for row in draws])  # (boots, clusters)
    weights = np.vstack([np.ones(len(units)), counts[:, index]])  # row 0: the sample itself
    beta = _logistic_fits(y, x, weights)
    rates = 1 / (1 + np.exp(-beta[:, 0]))
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(rates[1:], [tail, 100 - tail])
    return {
        "win_rate": round(float(rates[0]), 4),
        "ci95": [round(float(lo), 4), round(float(hi), 4)],
        "length_slope": round(float(beta[0, 1]), 4),  # log-odds from equal length to "longer"
    }


def _tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either ranking left out of its pairs); nan when either has no order."""
    sx = np.sign(x[:, None] - x[None, :])
    sy = np.sign(y[:, None] - y[None, :])
    denominator = np.sqrt(np.count_nonzero(sx) * np.count_nonzero(sy))
    return float((sx * sy).sum() / denominator) if denominator else float("nan")


def rank_agreement(units: list[tuple[str, float, float]], n_boot: int = 2000, seed: int = 0) -> dict:
    """How far two ratings of the same items rank them alike: Kendall's tau-b of (cluster, x, y) units
    and a 95% cluster-bootstrap interval (resamples in which either rating has no order are left out).
    {"tau", "ci95", "n"}; tau None when either rating is constant (nothing to agree on)."""
    x = np.array([a for _, a, _ in units], dtype=float)
    y = np.array([b for _, _, b in units], dtype=float)
    tau = _tau_b(x, y) if units else float("nan")
    if np.isnan(tau):
        return {"tau": None, "ci95": None, "n": len(units)}
    by_cluster: dict = defaultdict(list)
    for i, (cluster, _, _) in enumerate(units):
        by_cluster[cluster].append(i)
    groups = list(by_cluster.values())
    rng = np.random.default_rng(seed)
    taus = []
    for row in rng.integers(0, len(groups), size=(n_boot, len(groups))):
        idx = np.concatenate([groups[g] for g in row])
        if not np.isnan(t := _tau_b(x[idx], y[idx])):
            taus.append(t)
    lo, hi = np.percentile(taus, [2.5, 97.5]) if taus else (tau, tau)
    return {"tau": round(tau, 4), "ci95": [round(float(lo), 4), round(float(hi), 4)], "n": len(units)}
