"""The API's bearer tokens, each with a name: who moved a version, in the registry's records (issue 28)."""

from __future__ import annotations

import re

NAMED_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MIN_TOKEN = 16


def api_tokens(single: str | None, named: str | None) -> list[tuple[str, str]]:
    """(name, token) pairs: JOBS_API_TOKENS as `name:token,name:token` (each person or app its own, so the
    registry records who moved a version), and the single JOBS_API_TOKEN as "api", as before. A malformed
    pair, an empty or repeated name or token stops the service: a typo must not lock someone out quietly."""
    pairs = [("api", single)] if single else []
    for number, item in enumerate((named or "").split(","), 1):
        if not item.strip():
            continue
        name, sep, value = item.strip().partition(":")
        if not sep or not NAMED_TOKEN.fullmatch(name) or len(value) < MIN_TOKEN:
            raise RuntimeError(
                "JOBS_API_TOKENS: each entry is name:token (a name of letters, digits, . _ -; a token of at "
                f"least {MIN_TOKEN} characters), comma-separated; entry {number} is not"
            )
        pairs.append((name, value))
    names, values = [n for n, _ in pairs], [v for _, v in pairs]
    if len(set(names)) != len(names) or len(set(values)) != len(values):
        raise RuntimeError("JOBS_API_TOKENS: a name or a token is given twice")
    return pairs
