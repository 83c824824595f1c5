"""Text repair, counted: double-encoded UTF-8 (mojibake) back to what was meant.

`ftfy.fix_encoding` only undoes encoding mix-ups; `ftfy.fix_text` would also straighten the
typographic quotes and dashes (’ “ ” —) that are part of the consultant's voice, so we never call it.
The same strings recur many times (pair k's history repeats pairs 1..k-1), so results are cached:
the repair is decided once per distinct string, and every occurrence is counted.
"""

from __future__ import annotations

import re
from collections import Counter

import ftfy

# UTF-8 read back as Windows-1252 or Latin-1 (the double encoding real files carry, `â€”` for `—`)
# turns each multi-byte character into a lead byte 0xC2-0xF4, shown as one of U+00C2-U+00F4 (Â ... ô),
# followed by a continuation byte 0x80-0xBF, shown as U+0080-U+00BF or one of Windows-1252's 27
# letters and punctuation at 0x80-0x9F. A string without such a two-character sequence cannot hold that
# mojibake and skips ftfy's badness scan (~0.1 ms a string, 60% of a conversion's time before).
# Mojibake through other code pages (MacRoman, cp437) is not looked for.
_CP1252_HIGH = (
    "\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u2013\u2014\u2018-\u201a"
    "\u201c-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122"
)
_MAYBE_MOJIBAKE = re.compile(f"[\u00c2-\u00f4][\u0080-\u00bf{_CP1252_HIGH}]")


class Repairer:
    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self.counts: Counter[str] = Counter()  # occurrences repaired, by field
        self.examples: list[tuple[str, str]] = []  # a few (before, after) for the report

    def fix(self, text: str, field: str) -> str:
        fixed = self._cache.get(text)
        if fixed is None:
            fixed = ftfy.fix_encoding(text) if _MAYBE_MOJIBAKE.search(text) else text
            self._cache[text] = fixed
            if fixed != text and len(self.examples) < 3:
                self.examples.append(_excerpt(text, fixed))
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
