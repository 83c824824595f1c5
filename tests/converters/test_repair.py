from __future__ import annotations

import ftfy.bad_codecs  # noqa: F401
import pytest

from converters.repair import _MAYBE_MOJIBAKE, Repairer


@pytest.mark.parametrize("codec", ["sloppy-windows-1252", "latin-1"])
def test_prefilter_sees_every_double_encoded_character(codec):
    # Every 2-, 3- and 4-byte UTF-8 lead with every continuation byte, read back through the codec.
    for lead in range(0xC2, 0xF5):
        for cont in range(0x80, 0xC0):
            assert _MAYBE_MOJIBAKE.search(bytes([lead, cont]).decode(codec)), (hex(lead), hex(cont))


def test_repairs_mojibake_and_keeps_typographic_punctuation():
    r = Repairer()
    assert (
        r.fix("Jennifer, firstâ€”take a breath. Letâ€™s", "target_response")
        == "Jennifer, first—take a breath. Let’s"
    )
    assert r.fix("Chloé’s “plan” — fine", "target_response") == "Chloé’s “plan” — fine"
    assert r.fix("ChloÃ© said", "conversation_history") == "Chloé said"
    assert r.fix("Jennifer, firstâ€”take a breath. Letâ€™s", "target_response")  # counted again
    assert dict(r.counts) == {"target_response": 2, "conversation_history": 1}
    assert r.distinct_strings_repaired == 2
