"""The local lead directory (issue 15): filled by paging, matched locally in any stored
format, a miss costs one remote lookup, vanished leads dropped, unknown numbers wait."""

from __future__ import annotations

from collections import Counter

import httpx

from plugins.leadsquared.directory import chat_keys, number_keys
from tests.backends import query
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for

RECENT = "/v2/LeadManagement.svc/Leads.RecentlyModified"
HEADERS = {"x-LSQ-AccessKey": "sim-access-key", "x-LSQ-SecretKey": "sim-secret-key"}
NUMBER = "+919876543210"


def with_directory(sim, **kw):
    return sink_for(sim, opportunities=False, lead_directory="on", unknown_recheck=600, **kw)


def test_any_stored_format_shares_a_key_with_the_chat_number():
    wanted = set(chat_keys(NUMBER))
    for stored in ("+91-9876543210", "09876543210", "9876543210", "+919876543210",
                   "919876543210", "0091 98765 43210"):
        assert wanted & set(number_keys(stored)), stored
    assert not wanted & set(number_keys("+91-9876543211"))  # negative control


async def test_formats_match_locally_without_a_lookup(sim, buffer):
    forms = ["+91-9876543210", "09876543211", "9876543212", "+919876543213"]
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=f) for i, f in enumerate(forms)]
    await buffer.append([chat(i, f"+91987654321{i}") for i in range(4)])
    async with running(buffer, [with_directory(sim)]):
        await wait_until(lambda: settled(buffer), timeout=30)
    paths = Counter(c.path.rsplit("/", 1)[-1] for c in sim.calls)
    assert paths["Leads.RecentlyModified"] == 2  # the fill, then what changed meanwhile
    assert paths["RetrieveLeadByPhoneNumber"] == 0 and paths["Leads.GetByQuickSearch"] == 0
    assert [len(sim.activities(lead)) for lead in leads] == [1, 1, 1, 1]
    state = await buffer.directory("leadsquared").state()
    assert state["size"] == 4 and state["enabled"] and state["refreshed_at"]


async def test_a_miss_costs_one_lookup_then_waits_unknown_recheck(sim, buffer):
    sim.add_lead(FirstName="Other", Phone="9000000000")
    await buffer.append([chat(1, NUMBER)])
    rows = buffer.directory("leadsquared")
    async with running(buffer, [with_directory(sim)]):
        await wait_until(lambda: rows.unknown_checked_at(NUMBER), timeout=30)
        # later syncs try the held batch again (every sync_interval): the number waits,
        # no new search
        await wait_until(lambda: tries(buffer, at_least=4), timeout=30)
    paths = Counter(c.path.rsplit("/", 1)[-1] for c in sim.calls)
    assert paths["RetrieveLeadByPhoneNumber"] == 1 and paths["Leads.GetByQuickSearch"] == 0
    (state,) = await buffer.sinks()
    assert state["held"] == 1


async def tries(buffer, at_least: int) -> bool:
    """The sink's batches have been tried `at_least` times."""
    rows = await query(buffer, "SELECT max(attempts) FROM batches WHERE sink = 'leadsquared'")
    return (rows[0][0] or 0) >= at_least


async def test_a_full_fill_drops_vanished_leads(sim, buffer):
    gone = sim.add_lead(FirstName="Gone", Phone="9876543210")
    sink = with_directory(sim)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        rows = buffer.directory("leadsquared")
        assert await rows.lookup(chat_keys(NUMBER)) == gone
        sim.store.delete_lead(gone)
        await sink.directory.refresh(full=True)
        assert await rows.lookup(chat_keys(NUMBER)) is None


async def test_auto_turns_off_above_lead_directory_max(sim, buffer):
    for i in range(3):
        sim.add_lead(FirstName=f"L{i}", Phone=f"900000000{i}")
    sink = sink_for(sim, opportunities=False, lead_directory="auto", lead_directory_max=2)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
    state = await buffer.directory("leadsquared").state()
    assert state["enabled"] is False and state["size"] == 0 and state["records"] == 3


async def test_simulator_pages_strictly(sim):
    for i in range(3):
        sim.add_lead(FirstName=f"L{i}", Phone=f"900000000{i}")
    body = {"Parameter": {"FromDate": "2000-01-01 00:00:00", "ToDate": "2100-01-01 00:00:00"},
            "Columns": {"Include_CSV": "ProspectID,Phone"},
            "Paging": {"PageIndex": 2, "PageSize": 2}}
    async with httpx.AsyncClient(base_url=sim.base_url, headers=HEADERS) as http:
        page = (await http.post(RECENT, json=body)).json()
        big = await http.post(RECENT, json={**body, "Paging": {"PageIndex": 1,
                                                               "PageSize": 5001}})
        undated = await http.post(RECENT, json={**body, "Parameter": {}})
    assert page["RecordCount"] == 3 and len(page["Leads"]) == 1
    assert [p["Attribute"] for p in page["Leads"][0]["LeadPropertyList"]] == ["ProspectID",
                                                                              "Phone"]
    assert big.status_code == 500 and undated.status_code == 500


async def test_bridge_status_shows_the_directory_size_and_freshness(sim, buffer):
    from bridge.status import buffer_report
    from bridge.textreport import render_status

    sim.add_lead(FirstName="A", Phone="9876543210")
    async with running(buffer, [with_directory(sim)]) as (runner,):
        await wait_until(lambda: runner.started)
    text = render_status(await buffer_report(buffer))
    assert "directory   1 records, refreshed 20" in text


async def test_an_account_that_refuses_the_directory_read_still_syncs(sim, buffer):
    """A key whose user may not call Leads.RecentlyModified (or an outage of that one call
    at start): the directory is a shortcut, never a blocker. The sink starts, finds the
    lead by phone, and tries the directory again only after lead_directory_refresh, not
    on every chat."""
    lead = sim.add_lead(FirstName="Asha", Phone="9876543210")
    sim.refuse_endpoint("Leads.RecentlyModified")
    await buffer.append([chat(1, NUMBER), chat(2, "+919876543211")])
    sink = sink_for(sim, opportunities=False, lead_directory="auto")
    async with running(buffer, [sink]):
        await wait_until(lambda: sim.activities(lead), timeout=30)
        await wait_until(lambda: tries(buffer, at_least=3), timeout=30)
    paths = Counter(c.path.rsplit("/", 1)[-1] for c in sim.calls)
    assert paths["Leads.RecentlyModified"] == 1  # once at start; refresh_every is 5 min
    assert not sink.directory.enabled
