"""Pairs -> training lines: merge each conversation's prefix chain into as few lines as possible.

The supervision contract (docs/brightrun-v4.md): every pair with a non-blank target is
trained exactly once, preceded by exactly system + history + user input, and nothing else is
trained. One line per pair meets it at ~4x the tokens, because pair k repeats pairs 1..k-1.

Here a line is a list of messages. A pair whose context (system, history, user input) starts with
the messages of a line already built for its conversation extends that line: the missing context is
appended untrained and the target trained. In a clean conversation that gives one line; a null
target leaves the line ending on the user turn, and the next pair's history fills in the consultant's
answer as untrained context. A pair whose context continues no line (an edited conversation, a
changed system prompt) starts a line of its own with its full context. Either way the messages before
a trained target are exactly its context, which `tests/contract.py` checks independently.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Pair:
    """One training pair after text repair: the unit of supervision."""

    id: str
    turn: int
    context: tuple[tuple[str, str], ...]  # (role, content): system, history..., user input
    target: str | None  # None when the file's target is null or blank
    quality: float
    trainable: bool  # has a target and passes the quality filter
    # Carried for the evaluation's held-out sidecar (heldout.jsonl), never trained.
    emotional_context: dict | None = None
    skills: tuple[str, ...] = ()


@dataclass
class Line:
    conversation_id: str
    messages: list[list] = field(default_factory=list)  # [role, content, train]
    pair_ids: list[str] = field(default_factory=list)
    turns: list[int] = field(default_factory=list)
    quality_scores: list[float] = field(default_factory=list)
    own_context: bool = False  # started mid-conversation because the context did not continue

    def is_prefix_of(self, context: tuple[tuple[str, str], ...]) -> bool:
        n = len(self.messages)
        if n > len(context):
            return False
        return all(m[0] == c[0] and m[1] == c[1] for m, c in zip(self.messages, context, strict=False))

    def trim_untrained_tail(self) -> None:
        # Context after the last trained target teaches nothing and costs tokens.
        while self.messages and not self.messages[-1][2]:
            self.messages.pop()


def merge_conversation(conversation_id: str, pairs: list[Pair]) -> list[Line]:
    lines: list[Line] = []
    for pair in pairs:
        # The longest line that this pair's context continues (an edit may return to an older chain).
        host = max(
            (ln for ln in lines if ln.is_prefix_of(pair.context)),
            key=lambda ln: len(ln.messages),
            default=None,
        )
        if host is None:
            host = Line(conversation_id=conversation_id, own_context=bool(lines))
            lines.append(host)
        host.messages.extend([role, content, False] for role, content in pair.context[len(host.messages) :])
        if pair.target is not None:
            host.messages.append(["assistant", pair.target, pair.trainable])
        if pair.trainable:
            host.pair_ids.append(pair.id)
            host.turns.append(pair.turn)
            host.quality_scores.append(pair.quality)
    for line in lines:
        line.trim_untrained_tail()
    # A line left with nothing to train (all its targets null or filtered) is not written.
    return [ln for ln in lines if ln.pair_ids]


def naive_lines(pairs: list[Pair]) -> list[list[tuple[str, str]]]:
    """The one-line-per-pair expansion we measure against: context + target for each trained pair."""
    return [[*p.context, ("assistant", p.target)] for p in pairs if p.trainable]
