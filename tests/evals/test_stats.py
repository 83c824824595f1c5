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


def test_turns_of_few_conversations_do_not_narrow_the_interval():
    """Whole conversations won or lost (their turns agree): resampled by turn, 40 turns look like 40
    independent draws and the interval is narrow; by conversation it is as wide as 4 draws are."""
    from evals.stats import cluster_ci, interval

    units = [(f"c{c}", 1.0 if c % 2 else 0.0) for c in range(4) for _ in range(10)]
    _, lo_turn, hi_turn = bootstrap_ci([v for _, v in units])
    mean, lo, hi = cluster_ci(units)
    assert (lo_turn, hi_turn) == (0.35, 0.65)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)  # 4 conversations: all lost or all won is 1 in 16 each
    assert interval(units)["n_clusters"] == 4 and interval([]) == {
        "mean": None,
        "ci95": None,
        "n": 0,
        "n_clusters": 0,
    }


def test_length_control_takes_a_longer_replys_wins_back():
    """A judge that always prefers the longer reply, an adapter longer on 3 prompts in 4: raw win rate
    0.75; at equal length (the regression's intercept, AlpacaEval 2's idea) about a coin, 0.5 inside its
    interval. With lengths unrelated to who wins, the two agree."""
    import numpy as np

    from evals.stats import cluster_ci, length_controlled

    rng = np.random.default_rng(4)
    units = []
    for c in range(12):
        for t in range(4):
            diff = rng.uniform(20, 200) * (1 if t < 3 else -1)  # the adapter's length minus the base's
            units.append((f"c{c}", 1.0 if diff > 0 else 0.0, diff))
    raw = cluster_ci([(c, y) for c, y, _ in units])[0]
    lc = length_controlled(units)
    assert raw == 0.75 and lc["win_rate"] < 0.65 and lc["ci95"][0] < 0.5 < lc["ci95"][1]
    assert lc["length_slope"] > 1
    fair = [(c, y, rng.uniform(-200, 200)) for c, y, _ in units]
    assert abs(length_controlled(fair)["win_rate"] - raw) < 0.05
    assert length_controlled([]) == {"win_rate": None, "ci95": None, "length_slope": None}
