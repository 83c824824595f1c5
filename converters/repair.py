"""Text repair, counted: double-encoded UTF-8 (mojibake) back to what was meant.

`ftfy.fix_encoding` only undoes encoding mix-ups; `ftfy.fix_text` would also straighten the
typographic quotes and dashes (’ “ ” —) that are part of the consultant's voice, so we never call it.
The same strings recur many times (pair k's history repeats pairs 1..k-1), so results are cached:
the repair is decided once per distinct string, and every occurrence is counted.
"""

from __future__ import annotations

from collections import Counter

import ftfy


class Repairer:
    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # occurrences repaired, by field
        self.examples: list[tuple[str, str]] = []  # a few (before, after) for the report

    def fix(self, text: str, field: str) -> str:
        fixed = self._cache.get(text)
        if fixed is None:
            # ASCII text cannot hold mojibake; skipping it keeps the converter near json.load speed.
            fixed = text if text.isascii() else ftfy.fix_encoding(text)
            self._cache[text] = fixed
            if fixed != text and len(self.examples) < 3:
                self.examples.append((_excerpt(text, fixed)))
        if fixed != text:
            self.counts[field] += 1
        return fixed

    @property
    def distinct_strings_repaired(self) -> int:
        return sum(1 for k, v in self._cache.items() if k != v)


def _excerpt(before: str, after: str, width: int = 30) -> tuple[str, str]:
    i = next((i for i, (a, b) in enumerate(zip(before, after, strict=False)) if a != b), 0)
    lo = max(0, i - 10)
    return before[lo : lo + width], after[lo : lo + width]
