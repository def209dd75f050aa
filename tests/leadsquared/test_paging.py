"""Reads that page: a server serving fewer rows a call than asked (switch paging=capped,
docs/leadsquared-simulator.md) must not hide a key (a post made twice) or an open deal (a
chat missing from it)."""

from __future__ import annotations

from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.api import activity_item
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.keys import KeyCheck
from plugins.leadsquared.ratelimit import RateLimiter
from plugins.leadsquared.simulator import Simulator
from tests.helpers import running, wait_until
from tests.leadsquared.test_client import WHEN
from tests.leadsquared.test_sink import chat, settled, sink_for


def client_of(sim: Simulator) -> LeadSquaredClient:
    return LeadSquaredClient(sim.base_url, sim.access_key, sim.secret_key,
                             limiter=RateLimiter(1000, 1.0), backoff_base=0.01)


async def test_a_key_deeper_than_a_capped_page_is_found_on_the_lead_and_the_opportunity(sim):
    """30 chat activities on a lead and on its deal, 25 served a call: every key is read,
    the oldest included (a retry would otherwise post it again)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.configure(paging="capped")
    async with client_of(sim) as client:
        event = await client.activities.create_type("WhatsApp", [
            {"SchemaName": FIELDS["key"], "DisplayName": "Key", "DataType": "String"}])
        for n in range(30):
            fields = {FIELDS["key"]: f"k{n}"}
            await client.activities.post(activity_item(lead, event, f"n{n}", WHEN, fields))
            await client.activities.post(activity_item(lead, event, f"o{n}", WHEN, fields,
                                                       opportunity_id=deal))
        keys = KeyCheck(client, event)
        on_lead, on_deal = await keys.on_lead(lead), await keys.on_opportunity(deal)
    assert {f"k{n}" for n in range(30)} <= set(on_lead) and "k0" in on_lead
    assert set(on_deal) == {f"k{n}" for n in range(30)}


async def test_an_open_deal_past_a_capped_page_of_opportunities_gets_the_chat(sim, buffer):
    """The lead's one open deal is its oldest of 30, served on the second page only."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    open_deal = sim.add_opportunity(lead, "Open deal")
    for n in range(29):
        sim.add_opportunity(lead, f"Won {n}", status="Won")
    sim.configure(paging="capped")
    await buffer.append([chat(1), chat(2)])
    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    targets = [a["RelatedOpportunityId"] for a in sim.activities(lead)]
    assert sorted(targets, key=str) == sorted([None, open_deal], key=str)
    for target in (None, open_deal):
        notes = " ".join(a["ActivityNote"] for a in sim.activities(lead)
                         if a["RelatedOpportunityId"] == target)
        assert notes.count("msg-00001") == notes.count("msg-00002") == 1


async def test_a_server_ignoring_the_offset_asked_ends_the_read_not_loops(serve):
    """A Retrieve that answers its first 25 rows whatever Offset is asked, RecordCount 1000:
    the read stops at the repeated page (one extra call), not after 40."""
    from aiohttp import web

    calls = []

    async def retrieve(request: web.Request) -> web.Response:
        calls.append(await request.json())
        rows = [{"Id": f"a{n}", "ActivityFields": {FIELDS["key"]: f"k{n}"}} for n in range(25)]
        return web.json_response({"RecordCount": 1000, "ProspectActivities": rows})

    app = web.Application()
    app.router.add_post("/v2/ProspectActivity.svc/Retrieve", retrieve)
    base = await serve(app)
    async with LeadSquaredClient(base, "a", "s", limiter=RateLimiter(1000, 1.0)) as client:
        rows = await client.activities.of_lead("lead-1", 201)
    assert len(rows) == 25 and len(calls) == 2
