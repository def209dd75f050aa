"""The rep's label in the business field (business_field, default mx_Custom_6) fits the
field whatever LeadSquared counts, and is never cut inside a visible character.

The field's length is sourced (MaxFieldLength 200, reference §2), its unit is not (UNSURE:
simulator switch field_length, one setting per plausible count). Rep.field_label cut by
code points: a name of Devanagari, emoji and flags fit 200 code points but not 200 UTF-16
units or UTF-8 bytes (the post refused, the chat dead-lettered), and the cut could fall
inside a grapheme. Over real HTTP, under each setting."""

from __future__ import annotations

import pytest

from bridge import joined
from plugins.leadsquared.owners import utf8_length
from plugins.leadsquared.simulator.state import FIELD_LIMIT, field_length
from plugins.leadsquared.simulator.switches import SWITCHES
from tests.helpers import running, wait_until
from tests.leadsquared.test_owners_unread import PRIYA, to_priya
from tests.leadsquared.test_sink import field, settled, sink_for

# 20 x (a conjunct word, a ZWJ family, a flag): 320 code points, 440 UTF-16 units, 960 UTF-8
# bytes. With this first name a cut at 183 code points (200 less the number and "…") falls
# inside "नमस्ते", between a consonant and its virama's conjunct.
FIRST = "Priyanka"
LAST = ("नमस्ते 👨‍👩‍👧 🇮🇳 " * 20).strip()


@pytest.mark.parametrize("unit", SWITCHES["field_length"])
async def test_a_long_rep_name_fits_the_business_field_by_every_count_cut_between_characters(
        sim, buffer, unit):
    sim.configure(field_length=unit)
    sim.add_user(FIRST, "priya@example.com", last=LAST, phones=PRIYA)
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await buffer.append([to_priya(1)])
    async with running(buffer, [sink_for(sim, owners={PRIYA: "priya@example.com"},
                                         opportunities=False)]):
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    (activity,) = sim.activities(lead)
    value = field(activity, "mx_Custom_6")
    assert value is not None and value.endswith(f"… ({PRIYA})")  # the number kept whole
    name = value.removesuffix(f"… ({PRIYA})")
    full = f"{FIRST} {LAST}"
    assert name.startswith(FIRST) and full.startswith(name)
    assert not joined(full, len(name))  # ends between two visible characters
    # within the strictest count, so within the field whatever LeadSquared counts
    assert field_length(value, unit) <= utf8_length(value) <= FIELD_LIMIT
