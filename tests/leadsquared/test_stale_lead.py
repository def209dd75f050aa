"""A lead merged or deleted in LeadSquared: the sink forgets the cached id and looks again."""

from __future__ import annotations

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in

MOBILE = "+91-9876543210"  # the stored form of test_sink.NUMBER


async def _conversation(buffer) -> dict:
    (conversation,) = await buffer.conversations("leadsquared")
    return conversation


async def test_a_deleted_lead_is_forgotten_and_the_new_lead_gets_the_chat(sim, buffer):
    old = sim.add_lead(FirstName="Asha", Mobile=MOBILE)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=False, max_attempts=3)]):
        await wait_until(lambda: settled(buffer))
        assert (await _conversation(buffer))["record_id"] == old

        sim.store.delete_lead(old)  # deleted (or merged away) in the CRM
        new = sim.add_lead(FirstName="Asha", Mobile=MOBILE)
        await buffer.append([chat(2)])
        await wait_until(lambda: sim.activities(new), timeout=5)
        await wait_until(lambda: settled(buffer))
    (activity,) = sim.activities(new)
    assert texts_in(activity["ActivityNote"]) == ["msg-00002"]
    assert await buffer.dead_letters() == []
    assert (await _conversation(buffer))["record_id"] == new


async def test_a_deleted_lead_without_successor_is_held_and_its_id_forgotten(sim, buffer):
    old = sim.add_lead(FirstName="Asha", Mobile=MOBILE)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=False, max_attempts=3)]):
        await wait_until(lambda: settled(buffer))
        sim.store.delete_lead(old)
        await buffer.append([chat(2)])

        async def held() -> bool:
            return bool((await _conversation(buffer))["held_reason"])
        await wait_until(held, timeout=5)
        conversation = await _conversation(buffer)
        assert "no lead" in conversation["held_reason"]
        assert conversation["record_id"] is None  # the stale id is gone from the buffer too

        new = sim.add_lead(FirstName="Asha", Mobile=MOBILE)
        await wait_until(lambda: sim.activities(new), timeout=5)
        await wait_until(lambda: settled(buffer))
    assert [texts_in(a["ActivityNote"]) for a in sim.activities(new)] == [["msg-00002"]]
    assert await buffer.dead_letters() == []
    assert (await _conversation(buffer))["record_id"] == new
