"""One-off error pages from a proxy in front of LeadSquared are retried, never dead letters."""

from __future__ import annotations

import pytest

from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in


@pytest.mark.parametrize("status", [400, 404])
async def test_a_gateway_page_on_a_lead_lookup_is_retried(sim, buffer, status):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, opportunities=False, max_attempts=2)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.configure(gateway_errors=[[status, "RetrieveLeadByPhoneNumber"]])
        await buffer.append([chat(1)])
        await wait_until(lambda: settled(buffer))
    assert sim.knobs.gateway_errors == []  # the page was served
    assert [c.status for c in sim.calls if c.path.endswith("RetrieveLeadByPhoneNumber")][0] \
        == status
    assert await buffer.dead_letters() == []
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]


@pytest.mark.parametrize("status", [403, 408, 413])
async def test_a_gateway_page_on_a_lead_create_is_retried(sim, buffer, status):
    sink = sink_for(sim, opportunities=False, max_attempts=2, create_leads=True)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.configure(gateway_errors=[[status, "Lead.Create"]])
        await buffer.append([chat(1, "+14155550100")])
        await wait_until(lambda: settled(buffer))
    assert [c.status for c in sim.calls if c.path.endswith("Lead.Create")] == [status, 200]
    assert await buffer.dead_letters() == []
    (lead,) = sim.store.leads
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
