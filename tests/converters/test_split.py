from __future__ import annotations

from collections import Counter

from converters.split import split_conversations


def keys(n_per_arc=10, arcs=("a", "b", "c")):
    return [(f"{arc}-{i:02d}", arc) for arc in arcs for i in range(n_per_arc)]


def test_deterministic_for_a_seed_and_independent_of_file_order():
    k = keys()
    assert split_conversations(k, 0.2, 3) == split_conversations(list(reversed(k)), 0.2, 3)
    assert split_conversations(k, 0.2, 3) != split_conversations(k, 0.2, 4)


def test_stratified_by_arc():
    val = split_conversations(keys(), 0.2, 0)
    assert len(val) == 6
    assert Counter(v.split("-")[0] for v in val) == {"a": 2, "b": 2, "c": 2}


def test_small_strata_share_the_seats():
    val = split_conversations(keys(n_per_arc=3, arcs=tuple("abcd")), 0.1, 0)
    assert len(val) == 1  # round(12 * 0.1); no arc is large enough for a seat of its own


def test_zero_fraction_and_tiny_files():
    assert split_conversations(keys(), 0, 0) == set()
    assert split_conversations([("only", "a")], 0.5, 0) == set()
    assert len(split_conversations([("x", "a"), ("y", "a")], 0.9, 0)) == 1  # never all of it
