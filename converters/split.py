"""Held-out split by conversation, stratified by emotional arc, deterministic for a seed.

Splitting by row would leak: pair k's context holds pairs 1..k-1 of the same conversation. So whole
conversations go to one side. The number held out is round(N * fraction) (at least one when the
fraction is above zero and there are two or more conversations), shared among arcs in proportion
to their size by largest remainder, so every arc with enough conversations is represented.
"""

from __future__ import annotations

import random
from collections import defaultdict


def split_conversations(keys: list[tuple[str, str]], fraction: float, seed: int) -> set[str]:
    """keys: (conversation_id, stratum) in file order. Returns the ids held out for validation."""
    if fraction <= 0 or len(keys) < 2:
        return set()
    n_val = min(len(keys) - 1, max(1, round(len(keys) * fraction)))
    strata: dict[str, list[str]] = defaultdict(list)
    for cid, stratum in keys:
        strata[stratum].append(cid)
    rng = random.Random(seed)
    names = sorted(strata)
    for name in names:
        strata[name].sort()  # file order must not matter, only the ids and the seed
        rng.shuffle(strata[name])
    quotas = {name: len(strata[name]) * n_val / len(keys) for name in names}
    take = {name: int(quotas[name]) for name in names}
    # Largest remainders get the seats left; ties broken by a seeded shuffle, not by name.
    order = sorted(names, key=lambda n: (-(quotas[n] - take[n]), rng.random()))
    for name in order[: n_val - sum(take.values())]:
        take[name] += 1
    return {cid for name in names for cid in strata[name][: take[name]]}
