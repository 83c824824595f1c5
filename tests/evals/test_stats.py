"""The bootstrap interval on inputs whose answer can be worked out by hand, and the means."""

from __future__ import annotations

import pytest

from evals.stats import bootstrap_ci, mean_n


def test_two_outcomes_hand_checked():
    # Resampling [0, 1] twice gives means 0, 0.5, 1 with probability 1/4, 1/2, 1/4: the 2.5th and 97.5th
    # percentiles of 10000 such means are 0 and 1 for any seed (each end holds ~25% of the draws).
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], seed=7) == (0.5, 0.0, 1.0)


def test_five_wins_five_losses_hand_checked():
    # A resampled mean is Binomial(10, 1/2) / 10. P(X <= 1) = 11/1024 = 1.1% and P(X <= 2) = 56/1024 = 5.5%,
    # so the 2.5th percentile is X = 2 (0.2); by symmetry the 97.5th is 0.8. Far from either edge: any seed.
    assert bootstrap_ci([1.0] * 5 + [0.0] * 5) == (0.5, 0.2, 0.8)
    assert bootstrap_ci([0.0, 1.0] * 5, seed=123) == (0.5, 0.2, 0.8)


def test_all_ties_and_all_wins_have_no_spread():
    assert bootstrap_ci([0.5] * 12) == (0.5, 0.5, 0.5)
    assert bootstrap_ci([1.0] * 3) == (1.0, 1.0, 1.0)


def test_seeded_and_level():
    outcomes = [1, 1, 0.5, 1, 0, 0.5, 1, 1, 0.5, 1]
    first = bootstrap_ci(outcomes, seed=3)
    assert first == bootstrap_ci(outcomes, seed=3)  # reproducible
    mean, lo, hi = first
    assert mean == 0.75 and lo < mean < hi <= 1.0
    _, lo50, hi50 = bootstrap_ci(outcomes, seed=3, level=0.5)
    assert lo <= lo50 < hi50 <= hi  # a 50% interval sits inside the 95% one


def test_nothing_to_resample():
    with pytest.raises(ValueError):
        bootstrap_ci([])


def test_mean_n():
    assert mean_n([3, 4, 5]) == {"mean": 4.0, "n": 3}
    assert mean_n([]) == {"mean": None, "n": 0}
