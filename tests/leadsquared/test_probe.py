"""`bridge leadsquared check --probe` against the simulator under several switch settings:
each guess is reported as the reading the account shows, and nothing is written."""

from __future__ import annotations

import pytest

from plugins.leadsquared.checkup import run_check
from plugins.leadsquared.config import LeadSquaredConfig
from plugins.leadsquared.simulator import Simulator
from tests.leadsquared.test_check_command import writes


async def probe(sim: Simulator, phone: str | None = None, **settings) -> str:
    lines: list[str] = []
    config = LeadSquaredConfig(host=sim.base_url, access_key=sim.access_key,
                               secret_key=sim.secret_key, rate_limit="1000/1s", **settings)
    before = len(sim.calls)
    assert await run_check(config, lines.append, phone, probe=True)
    assert writes([c.as_dict() for c in sim.calls[before:]]) == []  # read-only, always
    return "\n".join(lines)


def account(sim: Simulator) -> None:
    """Two leads, the older one modified last (creation and modification orders differ),
    one with a number, the chat type present."""
    sim.add_lead(FirstName="Old", Phone="+91-9811122233")  # modified now
    newer = sim.add_lead(FirstName="New", EmailAddress="new@example.com")
    sim.store.leads[newer]["ModifiedOn"] = "2020-01-01 00:00:00"
    sim.store.create_type({"ActivityEventName": "WhatsApp Chats", "AllowAttachments": 1})


async def test_the_documented_readings_are_named_as_such(sim):
    account(sim)
    out = await probe(sim)
    assert "probe user_fields: documented: UserByAccessKey.Get has EmailAddress null" in out
    assert "probe user lookup: User/Retrieve/ByUserId names the key's user admin@" in out
    assert "probe opportunity_types: listed: ActivityTypes.Get holds [12000]" in out
    assert "probe opportunity_type: required: GetOpportunitiesOfLead without a type" in out
    assert "probe activity_setting: documented: no AllowAttachments key" in out
    assert "probe phone_match: unclear: no digits form found it" in out  # stored '+91-…'
    assert "probe phone_plus: no_match: a leading '+' finds nothing" in out
    assert "probe recent_sort: documented" in out
    for switch in ("bulk_answer", "upload_answer", "unique_fields"):
        assert f"probe {switch}: not probed: can only be seen by" in out


@pytest.mark.parametrize(("switches", "expected"), [
    ({"user_fields": "email"}, "probe user_fields: email: UserByAccessKey.Get fills"),
    ({"opportunity_types": "absent"}, "probe opportunity_types: absent"),
    ({"opportunity_type": "optional"}, "probe opportunity_type: optional: "),
    ({"activity_setting": "attachments_key"},
     "probe activity_setting: attachments_key: AllowAttachments = 1"),
    ({"phone_match": "normalised"}, "probe phone_match: normalised: digits with and without"),
    ({"phone_plus": "accepted"}, "probe phone_plus: accepted"),
    ({"phone_plus": "refused"}, "probe phone_plus: refused: a leading '+' is refused"),
    ({"recent_sort": "ignored"}, "probe recent_sort: ignored: the order does not follow"),
], ids=lambda value: ",".join(f"{k}={v}" for k, v in value.items())
   if isinstance(value, dict) else "")
async def test_each_switch_setting_is_reported_as_the_reading_the_account_shows(
        sim, switches, expected):
    account(sim)
    sim.configure(**switches)
    assert expected in await probe(sim)


async def test_an_account_modified_in_creation_order_cannot_show_its_sorting(sim):
    older = sim.add_lead(FirstName="Old", Phone="9811122233")
    sim.add_lead(FirstName="New", Phone="9811122234")  # modified now
    sim.store.leads[older]["ModifiedOn"] = "2020-01-01 00:00:00"
    assert "probe recent_sort: cannot tell: the newest leads were modified in the order" in (
        await probe(sim))


async def test_an_exact_account_is_told_apart_with_a_digits_stored_number(sim):
    sim.add_lead(FirstName="Digits", Phone="9811122233")
    assert "probe phone_match: exact: only the form equal to the stored value finds it" in (
        await probe(sim))


async def test_check_says_plainly_when_no_opportunity_types_can_be_found(sim):
    account(sim)
    sim.configure(opportunity_types="absent")  # and GetOpportunitiesOfLead needs a type
    out = await probe(sim)
    assert "warn no opportunity types can be found" in out
    assert "set plugins.leadsquared.opportunities.types" in out
    sim.configure(opportunity_type="optional")
    assert "none listed, but GetOpportunitiesOfLead answers without a type" in (
        await probe(sim))
    assert "ok   opportunity types from config: 12000" in await probe(
        sim, opportunities={"types": [12000]})


async def test_check_names_the_owner_of_bulk_opportunity_posts_and_the_status_filter(sim):
    account(sim)
    out = await probe(sim)
    assert "ok   bulk opportunity posts are owned by admin@simulator.invalid (the key's " in out
    assert "info opportunity posts go to deals with status Open" in out
    configured = await probe(sim, owner_email="rep@example.com", opportunities={
        "status": "any"})
    assert "owned by rep@example.com (owner_email)" in configured
    assert "deals with status any status" in configured
    sim.break_endpoint("ByUserId", 403)
    assert "info no owner email found" in await probe(sim)
