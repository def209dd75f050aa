"""An opportunity outage that starts at the list of the lead's opportunities
(GetOpportunitiesOfLead down, as the whole OpportunityManagement service would be): the
lead takes the chat, the deal copies wait. As when only the opportunity's posts fail
(test_outage), the customer's later chats pass the waiting batch (it is aside), and past
retry_for the copies are given up as a dead target of their own, never as a dead letter
of a message the lead holds (requeued, a dead letter is batched again under a new key and
posted on the lead a second time). Against the simulator over real HTTP
(break_endpoint: a gateway's 503 page)."""

from __future__ import annotations

from tests.backends import rows
from tests.helpers import running, wait_until
from tests.leadsquared.test_outage import FAST, _more_than
from tests.leadsquared.test_sink import assert_exactly_once, chat, settled, sink_for

LIST = "GetOpportunitiesOfLead"


def _on_lead(sim, lead, n: int) -> bool:
    return any(f"msg-{n:05d}" in a["ActivityNote"] for a in sim.activities(lead))


async def test_a_later_chat_reaches_the_lead_while_its_opportunities_cannot_be_listed(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.add_opportunity(lead, "Deal")
    sim.break_endpoint(LIST, 503)
    async with running(buffer, [sink_for(sim, max_attempts=2, **FAST)]):
        await buffer.append([chat(1)])
        await wait_until(lambda: _on_lead(sim, lead, 1), timeout=10)
        await wait_until(lambda: _more_than(buffer, 3), timeout=30)  # past max_attempts
        await buffer.append([chat(2)])
        await wait_until(lambda: _on_lead(sim, lead, 2), timeout=10)
        assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
        (state,) = await buffer.sinks()
        assert state["failing_targets"] >= 1  # the deal copies wait, and the status says so
        sim.mend_endpoint(LIST)
        await wait_until(lambda: settled(buffer), timeout=30)
        assert await rows(buffer, "SELECT key FROM targets") == []
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1, 2], with_opportunities=[lead])


async def test_opportunities_unlisted_past_retry_for_are_a_dead_target_and_requeue_once(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.break_endpoint(LIST, 503)
    async with running(buffer, [sink_for(sim, max_attempts=10_000, retry_for=1.0, **FAST)]):
        await buffer.append([chat(1)])
        (dead,) = await wait_until(buffer.dead_targets, timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
        assert await buffer.dead_letters() == []  # on the lead: delivered
        assert dead["reason"].startswith("leadsquared kept failing for ")
        sim.mend_endpoint(LIST)
        assert await buffer.requeue() == 1
        await wait_until(lambda: sim.activities(opportunity_id=deal), timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1], with_opportunities=[lead])
