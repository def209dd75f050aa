"""Cuts in Indian scripts: a consonant, its virama and the consonant after it are one
conjunct, one character to a reader (Unicode 15.1's extended grapheme clusters, GB9c):
"स्ते" in "नमस्ते". A cut between them leaves a dangling halant ("नमस्…") and starts the
next note with a bare consonant."""

from __future__ import annotations

import pytest

from bridge.render import cut, joined
from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.transcript import CONTINUED, piece_span
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import settled, sink_for

VIRAMAS = "\u094d\u09cd\u0acd\u0b4d\u0c4d\u0d4d"  # Unicode 15.1's InCB=Linker


def _key(activity: dict) -> str:
    return next(f["Value"] for f in activity["Fields"] if f["SchemaName"] == FIELDS["key"])


@pytest.mark.parametrize("word", ["नमस्ते ", "ক্ষমা ", "સ્ત્રી ", "ସ୍ତ୍ରୀ ", "స్త్రీ ", "സ്ത്രീ "])
def test_a_cut_never_leaves_a_virama_at_the_end(word):
    """cut() (quotes of replied-to lines, names): never between a virama and the consonant
    it joins, in each script whose virama forms conjuncts (Devanagari, Bengali, Gujarati,
    Oriya, Telugu, Malayalam)."""
    text = word * 6
    for limit in range(2, len(text)):
        assert not cut(text, limit).removesuffix("…").rstrip().endswith(tuple(VIRAMAS)), limit
    for i in range(1, len(text)):
        if text[i - 1] in VIRAMAS and text[i] != " ":
            assert joined(text, i), (word, i)


async def test_a_long_hindi_message_is_cut_between_conjuncts_on_the_lead(sim, buffer):
    """A 2,800-character Hindi message across notes of 301: every character lands once, and
    no note ends on a virama whose consonant opens the next."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    body = "नमस्ते दोस्त क्षमा " * 150
    await buffer.append([message(1, "+919876543210", source="whatsapp", text=body)])
    async with running(buffer, [sink_for(sim, opportunities=False, note_limit=301)]):
        await wait_until(lambda: settled(buffer), timeout=60)
    found = sorted(sim.activities(lead),
                   key=lambda a: piece_span(_key(a).rpartition(":")[2]) or (0, 0))
    assert len(found) > 10
    pieces = []
    for activity in found:
        line = activity["ActivityNote"].split("\n", 1)[1]
        pieces.append(line.split("Asha: ", 1)[1] if line.startswith("[")
                      else line.removeprefix(CONTINUED))
    assert "".join(pieces) == body
    for piece in pieces[:-1]:
        assert not piece.endswith(tuple(VIRAMAS)), piece[-10:]
