"""The judge's figures: per-criterion means and the pairwise win rate with a bootstrap 95% interval.

A percentile bootstrap over prompts (each prompt's outcome resampled with replacement), seeded so that a
report is reproducible. It is the usual choice for a win rate on tens of prompts: no normality assumption,
and ties (0.5) need no special case.
"""

from __future__ import annotations

import numpy as np

WIN, TIE, LOSS = 1.0, 0.5, 0.0


def bootstrap_ci(
    outcomes: list[float], n_boot: int = 10000, seed: int = 0, level: float = 0.95
) -> tuple[float, float, float]:
    """(mean, lo, hi) of outcomes (adapter win=1, tie=0.5, loss=0): the mean and the percentile interval
    of n_boot resampled means. ValueError when there is nothing to resample (no scored pair)."""
    values = np.asarray(outcomes, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one outcome")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, size=(n_boot, values.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(values.mean()), float(lo), float(hi)


def mean_n(values: list[float]) -> dict:
    """{"mean", "n"}; mean None when nothing was scored (JSON has no NaN)."""
    return {"mean": round(float(np.mean(values)), 4) if values else None, "n": len(values)}
