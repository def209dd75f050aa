"""A deal closed (or gone with its lead) while its copy of a chat waits out an outage:
the chat is on the lead and the deal no longer takes chats, so the copy waits no more.
Before, its target stayed 'failing' for good once the message was delivered (nothing
retries it, nothing gives it up): `bridge status` and the status page counted one failing
target forever. Against the simulator over real HTTP (refuse_posts(transient=True): a
gateway's 503 page on the deal's posts)."""

from __future__ import annotations

from bridge.status import buffer_report
from bridge.textreport import render_status
from tests.backends import rows
from tests.helpers import running, wait_until
from tests.leadsquared.test_outage import FAST, _more_than
from tests.leadsquared.test_sink import assert_exactly_once, chat, settled, sink_for

OPEN_ONLY = {"opportunities": {"status": ["Open"]}, "opportunity_cache": 0}


async def test_a_deal_closed_while_its_copy_waits_leaves_no_failing_target(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    async with running(buffer, [sink_for(sim, max_attempts=2, **OPEN_ONLY, **FAST)]):
        await buffer.append([chat(1)])
        await wait_until(lambda: _more_than(buffer, 3), timeout=30)  # the copy waits
        assert len(await rows(buffer, "SELECT key FROM targets")) == 1
        sim.store.opportunities[deal].status = "Lost"  # closed in the CRM meanwhile
        await wait_until(lambda: settled(buffer), timeout=30)
        (state,) = await buffer.sinks()
        assert state["failing_targets"] == 0 and state["dead_targets"] == 0
        assert "targets     0 failing" in render_status(await buffer_report(buffer))
    assert await rows(buffer, "SELECT key FROM targets") == []
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1])
    assert sim.activities(opportunity_id=deal) == []


async def test_a_lead_deleted_while_its_deals_copy_waits_leaves_no_failing_target(
        sim, buffer):
    old = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(old, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    async with running(buffer, [sink_for(sim, max_attempts=2, **OPEN_ONLY, **FAST)]):
        await buffer.append([chat(1)])
        await wait_until(lambda: _more_than(buffer, 3), timeout=30)
        sim.store.delete_lead(old)  # with its deal (merged away, likewise)
        new = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
        await buffer.append([chat(2)])
        await wait_until(lambda: sim.activities(new), timeout=10)
        await wait_until(lambda: settled(buffer), timeout=30)
        (state,) = await buffer.sinks()
        assert state["failing_targets"] == 0 and state["dead_targets"] == 0
    assert await rows(buffer, "SELECT key FROM targets") == []
    assert await buffer.dead_letters() == []
