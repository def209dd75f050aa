"""A history media follow-up (`<id>#media`, extra.upgrades) and its placeholder in one batch:
the CRM gets the media once, never the placeholder's 'Media (not synced)' beside it.

The buffer settles a placeholder its follow-up overtook only while no batch holds it; a
chat with no lead yet sits in a held batch, which takes in the follow-up when it arrives.
The batch then holds both, and the sink writes only the follow-up (the placeholder counts
as delivered). Real SQLite buffer, the LeadSquared simulator over HTTP."""

from __future__ import annotations

from dataclasses import replace

from bridge import UPGRADE_SUFFIX, Media
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import NUMBER, settled, sink_for


def history(n: int, **kw):
    return replace(message(n, NUMBER, source="whatsapp", minutes_ago=30, **kw), history=True)


async def test_a_held_placeholder_is_written_once_as_its_follow_up(sim, buffer):
    sink = sink_for(sim)
    text = history(1, text="before-the-photo")
    placeholder = replace(history(2), kind="media_placeholder", text="")
    await buffer.append([text, placeholder])
    async with running(buffer, [sink]):
        async def held() -> bool:
            return (await buffer.sinks())[0]["held"] == 2
        await wait_until(held)  # no lead: batched and held
        await buffer.append([replace(history(2), provider_id="m2" + UPGRADE_SUFFIX,
                                     kind="image", text="the-old-shelf",
                                     media=Media(id="media-1", mime_type="image/png"),
                                     extra={"upgrades": "m2"})])
        await wait_until(lambda: _held_count(buffer, 3))  # the held batch took it in
        lead = sim.add_lead(FirstName="Meera", Phone="+91-9876543210")
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))
    notes = " ".join(a["ActivityNote"] for a in sim.activities(lead))
    assert notes.count("the-old-shelf") == 1 and "before-the-photo" in notes
    assert "not synced" not in notes


async def _held_count(buffer, n: int) -> bool:
    return (await buffer.sinks())[0]["held"] == n
