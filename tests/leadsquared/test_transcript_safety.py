"""Transcripts against the simulator: a message that cannot be rendered fails alone, and no
field of a message can forge a line of the note."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in


async def test_an_unrenderable_message_is_rejected_alone_and_its_neighbours_delivered(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    good = [chat(n, minutes_ago=60 - n) for n in range(40)]
    # 23:30 UTC on the last day of year 9999 is already year 10000 in the account's zone
    # (the simulator's user is in Asia/Kolkata): no datetime can hold it.
    extreme = dataclasses.replace(chat(999), sent_at=datetime(9999, 12, 31, 23, 30, tzinfo=UTC))
    await buffer.append([*good[:20], extreme, *good[20:]])
    sink = sink_for(sim, opportunities=False)
    async with running(buffer, [sink]):
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(buffer))

    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == [f"msg-{n:05d}" for n in range(40)]
    (dead,) = await buffer.dead_letters("leadsquared")
    assert dead["provider_id"] == extreme.provider_id
    assert dead["reason"].startswith("cannot be written as a transcript line")
    assert "out of range" in dead["reason"] or "year" in dead["reason"]
    (state,) = await buffer.sinks()
    assert state["backlog"] == 0
