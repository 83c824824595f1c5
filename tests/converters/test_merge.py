"""Merging prefix chains, on small hand-made conversations whose right answer is obvious."""

from __future__ import annotations

from converters.merge import Pair, merge_conversation, naive_lines

SYS = ("system", "be kind")


def chain(n, null=(), edits=None, filtered=()):
    """n pairs of one conversation; `edits` maps a pair index to a history it sees instead."""
    pairs, history = [], []
    for k in range(n):
        user, answer = f"u{k}", f"a{k}"
        hist = edits.get(k, history) if edits else history
        target = None if k in null else answer
        pairs.append(
            Pair(
                id=f"p{k}",
                turn=k + 1,
                context=(SYS, *hist, ("user", user)),
                target=target,
                quality=3.0,
                trainable=target is not None and k not in filtered,
            )
        )
        history = [*history, ("user", user), ("assistant", answer)]
    return pairs


def flat(line):
    return [(r, c, t) for r, c, t in line.messages]


def test_clean_chain_is_one_line():
    [line] = merge_conversation("c", chain(4))
    assert line.pair_ids == ["p0", "p1", "p2", "p3"]
    assert flat(line) == [("system", "be kind", False)] + [
        x for k in range(4) for x in (("user", f"u{k}", False), ("assistant", f"a{k}", True))
    ]
    assert not line.own_context


def test_null_first_turn_is_untrained_context_from_next_history():
    [line] = merge_conversation("c", chain(3, null={0}))
    assert line.pair_ids == ["p1", "p2"]
    assert flat(line)[1:3] == [("user", "u0", False), ("assistant", "a0", False)]


def test_null_last_turn_leaves_no_untrained_tail():
    [line] = merge_conversation("c", chain(3, null={2}))
    assert flat(line)[-1] == ("assistant", "a1", True)


def test_edited_history_keeps_its_own_context():
    edited = [("user", "u0"), ("assistant", "a0 (edited)"), ("user", "u1"), ("assistant", "a1")]
    first, second = merge_conversation("c", chain(3, edits={2: edited}))
    assert first.pair_ids == ["p0", "p1"] and second.pair_ids == ["p2"]
    assert second.own_context
    assert flat(second) == [("system", "be kind", False)] + [(r, c, False) for r, c in edited] + [
        ("user", "u2", False),
        ("assistant", "a2", True),
    ]


def test_pair_after_an_edit_returns_to_the_longest_line_it_continues():
    # Pair 2 saw an edited turn 0; pair 3 saw the original chain again.
    edited = [("user", "u0"), ("assistant", "a0 (edited)"), ("user", "u1"), ("assistant", "a1")]
    first, second = merge_conversation("c", chain(4, edits={2: edited}))
    assert first.pair_ids == ["p0", "p1", "p3"]
    assert second.pair_ids == ["p2"]
    # In the first line, pair 2's turn is context only: it is trained once, on its own line.
    assert ("assistant", "a2", False) in flat(first)


def test_changed_system_prompt_starts_a_new_line():
    pairs = chain(2)
    pairs[1] = Pair(**{**pairs[1].__dict__, "context": (("system", "other"), *pairs[1].context[1:])})
    assert [ln.pair_ids for ln in merge_conversation("c", pairs)] == [["p0"], ["p1"]]


def test_nothing_trainable_writes_no_line():
    assert merge_conversation("c", chain(3, null={0, 1, 2})) == []
    assert merge_conversation("c", chain(2, filtered={0, 1})) == []


def test_filtered_target_stays_as_context():
    [line] = merge_conversation("c", chain(3, filtered={1}))
    assert line.pair_ids == ["p0", "p2"]
    assert ("assistant", "a1", False) in flat(line)


def test_naive_expansion_is_one_line_per_trained_pair():
    naive = naive_lines(chain(3, null={0}))
    assert len(naive) == 2
    assert naive[1][-1] == ("assistant", "a2") and naive[1][-2] == ("user", "u2")
