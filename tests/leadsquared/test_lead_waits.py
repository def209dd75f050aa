"""adv27: a failed lead post's start record (bridge.WAITS_WITH_MESSAGES) through its
messages' dead letter, a requeue, a landing and an erasure (SQLite, and PostgreSQL)."""

from __future__ import annotations

from collections import Counter

from tests.backends import query
from tests.helpers import running, wait_until
from tests.leadsquared.test_resplit import (  # noqa: F401 (fixture)
    buffer_target,
    lead_creates_answered,
    lead_creates_tried,
    sized,
    texts_on,
)
from tests.leadsquared.test_sink import settled, sink_for


async def dead_after_failed_lead_posts(sim, buffer, ids):
    """The messages `ids` die while every lead post fails (503)."""
    await buffer.append([sized(n, 400, 40 - n) for n in ids])
    sim.break_endpoint("Create", 503)
    sink = sink_for(sim, bulk=False, retry_for=1.0, max_attempts=10_000, note_limit=1000,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_tried(sim) >= 2, timeout=30)
        await wait_until(buffer.dead_letters, timeout=30)
    return sink


async def test_requeued_dead_messages_land_once_and_their_wait_record_goes(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = await dead_after_failed_lead_posts(sim, buffer, [1, 2, 3])
    assert await query(buffer, "SELECT count(*) FROM targets") != [(0,)]
    shown = await buffer.dead_targets()
    assert shown == []  # never shown as a dead target
    sim.mend_endpoint("Create")
    assert await buffer.requeue("leadsquared") == 3
    async with running(buffer, [sink]):
        await wait_until(lambda: settled(buffer), timeout=30)
    assert texts_on(sim, lead, None) == Counter({"msg-00001": 1, "msg-00002": 1,
                                                 "msg-00003": 1})
    assert await buffer.dead_letters() == []
    assert await query(buffer, "SELECT key, reason FROM targets") == []
    (state,) = await buffer.sinks()
    assert (state["failing_targets"], state["dead_targets"], state["backlog"]) == (0, 0, 0)


async def test_erasing_the_person_drops_the_wait_record(sim, buffer):
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await dead_after_failed_lead_posts(sim, buffer, [1])
    found = await buffer.purge_person(phone="+919876543210")
    assert found["messages"] == 1 and found["dead_letters"] == 1
    assert await query(buffer, "SELECT count(*) FROM targets") == [(0,)]



async def requeued_alone(sim, buffer):
    """m1 and m2 in two notes: m1 lands on the lead and the deal; m2's lead post fails
    until m2 dies; then m2 is requeued (alone: a batch of its own, another key) and lands.
    Returns the lead and the deal."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    await buffer.append([sized(1, 150, 30), sized(2, 150, 20)])
    sim.configure(latency=0.3)
    sink = sink_for(sim, bulk=False, note_limit=350, retry_for=1.0, max_attempts=10_000,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_answered(sim) == 1, timeout=30)
        sim.configure(gateway_errors=[[503, "Create"]])  # m2's post on the lead
        await wait_until(lambda: texts_on(sim, lead, deal)["msg-00001"], timeout=30)
        sim.break_endpoint("Create")  # m2's retries on the lead fail until it dies
        sim.configure(latency=0.0)
        await wait_until(buffer.dead_letters, timeout=30)
    assert [d["message_id"] for d in await buffer.dead_letters()] == [2]
    sim.mend_endpoint("Create")
    assert await buffer.requeue("leadsquared") == 1
    async with running(buffer, [sink]):
        await wait_until(lambda: settled(buffer), timeout=30)
    return lead, deal


async def test_a_message_requeued_after_a_part_of_its_batch_landed_reaches_each_target_once(
        sim, buffer):
    lead, deal = await requeued_alone(sim, buffer)
    wanted = Counter({"msg-00001": 1, "msg-00002": 1})
    assert texts_on(sim, lead, None) == wanted
    assert texts_on(sim, lead, deal) == wanted
    (state,) = await buffer.sinks()
    assert (state["failing_targets"], state["dead_letters"], state["backlog"]) == (0, 0, 0)


async def test_the_wait_record_of_a_message_requeued_alone_goes_once_it_lands(sim, buffer):
    """adv27's leak: the record is keyed by the first batch; requeued alone, m2 lands in a
    batch of its own under another key. It goes once none of its messages can come back."""
    await requeued_alone(sim, buffer)
    assert await query(buffer, "SELECT key, reason FROM targets") == []




async def test_a_wait_record_left_by_an_earlier_version_goes_with_its_batch(sim, buffer):
    """A buffer from before the landing dropped such records may hold one (adv27's leak):
    the retention prune takes it once its batch, done, is past buffer.retention."""
    import time

    from bridge import WAITS_WITH_MESSAGES
    from tests.backends import execute

    await requeued_alone(sim, buffer)
    assert await query(buffer, "SELECT key FROM targets") == []
    await execute(buffer, "INSERT INTO targets (sink, key, label, batch_id, message_ids, state,"
                          " attempts, reason, updated_at) SELECT 'leadsquared', 'left:m2:0',"
                          " 'lead', min(id), ',2,', 'failing', 1, :reason, 0 FROM batches",
                  {"reason": f"{WAITS_WITH_MESSAGES}: HTTP 503"})
    assert await query(buffer, "SELECT key FROM targets") == [("left:m2:0",)]
    await buffer.prune(time.time() + 1)
    assert await query(buffer, "SELECT key FROM targets") == []
