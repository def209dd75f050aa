"""The LeadSquared sink's identity rules, in-process against the simulator over HTTP."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from plugins.leadsquared.simulator.leads import search, update
from plugins.leadsquared.simulator.state import ApiError
from plugins.whatsapp.parse import parse_payload
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import settled, sink_for
from tests.whatsapp import payloads as p


async def store(buffer, *changes) -> None:
    await buffer.install_sinks(["leadsquared"])  # the payloads' times are older than backfill
    parsed = parse_payload(p.envelope(*changes))
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def test_a_number_changed_before_the_first_sync_still_finds_the_lead_by_the_old_one(
        sim, buffer):
    lead = sim.add_lead(FirstName="Sheena", Mobile="+1-6505551234")
    await store(buffer, p.message_change([p.text_message("wamid.1", body="old number")]))
    await store(buffer, p.message_change(
        [p.changed_number_message("wamid.2", p.CUSTOMER, "16505550000")], contacts=[]))
    async with running(buffer, [sink_for(sim, create_leads=True, opportunities=False)]):
        await wait_until(lambda: settled(buffer))
    assert len(sim.store.leads) == 1  # no duplicate lead for the new number
    (activity,) = sim.activities(lead)
    assert "old number" in activity["ActivityNote"]
    assert sim.store.leads[lead]["Mobile"] == "+1-6505551234"  # update_lead_phone is off


async def test_a_lead_found_by_bsuid_needs_no_phone(sim, buffer):
    lead = sim.add_lead(FirstName="Sheena", mx_WhatsApp_User_ID=p.BSUID)
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1", body="no phone")],
                                         contacts=[]))
    async with running(buffer, [sink_for(sim, user_id_field="mx_WhatsApp_User_ID",
                                         opportunities=False)]):
        await wait_until(lambda: sim.activities(lead))
    assert "no phone" in sim.activities(lead)[0]["ActivityNote"]
    calls = [c.path for c in sim.calls]
    assert any(path.endswith("Leads.Get") for path in calls)


def test_user_id_field_must_be_a_custom_field_schema_name(sim):
    with pytest.raises(ValidationError, match="user_id_field"):
        sink_for(sim, user_id_field="WhatsApp User ID")


def test_simulated_leads_get_and_lead_update_follow_the_reference(sim):
    lead = sim.add_lead(FirstName="Asha", mx_WhatsApp_User_ID="US.1")
    body = {"Parameter": {"LookupName": "mx_WhatsApp_User_ID", "LookupValue": "us.1",
                          "SqlOperator": "="}}
    assert [x["ProspectID"] for x in search(sim.store, body)] == [lead]
    assert update(sim.store, lead, [{"Attribute": "Mobile", "Value": "+91-9000011111"}]) == 1
    assert sim.store.leads[lead]["Mobile"] == "+91-9000011111"
    with pytest.raises(ApiError, match="leadId"):
        update(sim.store, "no-such-lead", [{"Attribute": "Mobile", "Value": "1"}])


async def test_a_bsuid_search_whose_filter_is_dropped_files_the_chat_on_no_other_lead(
        sim, buffer):
    """user_id_field misspelt (no lead holds it) and an account that drops such a filter
    (switch unknown_field=ignored): Leads.Get answers other leads; the chat must not land
    on the first of them, it waits as unknown."""
    sim.configure(unknown_field="ignored")
    ravi = sim.add_lead(FirstName="Ravi", Mobile="+91-9123456780")
    sheena = sim.add_lead(FirstName="Sheena", mx_WhatsApp_User_ID=p.BSUID)
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.1", body="no phone")],
                                         contacts=[]))
    async with running(buffer, [sink_for(sim, user_id_field="mx_WhatsApp_UserID",
                                         opportunities=False)]):
        await wait_until(lambda: any(c.path.endswith("Leads.Get") for c in sim.calls)
                         or sim.activities())
        await asyncio.sleep(0.5)  # the outcome of that look is recorded
    assert sim.activities(ravi) == [] and sim.activities(sheena) == []
    assert sim.activities() == []
