"""The sink against LeadSquared as the reference records it (issue 14): key checks in
ActivityFields and Include_CSV, opportunity types, documented phone forms, String fields."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from bridge.config import describe
from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.config import LeadSquaredConfig
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import assert_exactly_once, chat, settled, sink_for


def opportunity_reads(sim) -> list[dict]:
    return [c.query for c in sim.calls if c.path.endswith("/GetOpportunitiesOfLead")]


async def test_lost_answers_give_no_duplicates_on_leads_or_opportunities(sim, buffer):
    """Every post commits and its answer is lost: only the CRM-side key check (ActivityFields
    on the lead, Include_CSV on the opportunity) stops a second post."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.add_opportunity(lead, "A")
    await buffer.append([chat(n) for n in range(3)])
    sim.configure(drop_after_commit_rate=1.0)
    async with running(buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: len(sim.activities(lead)) == 2)
        # the retry after the lost answers checked both targets for its keys
        await wait_until(lambda: any(c.path.endswith("/GetActivitiesOfOpportunity")
                                     for c in sim.calls))
        sim.configure(drop_after_commit_rate=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert_exactly_once(sim, [lead], range(3), with_opportunities=[lead])
    asked = [c.body for c in sim.calls if c.path.endswith("/GetActivitiesOfOpportunity")]
    assert asked and all(FIELDS["key"] in b["Columns"]["Include_CSV"] for b in asked)


async def test_opportunities_are_asked_per_type_looked_up_once_from_the_account(sim, buffer):
    sim.add_opportunity_type(12001, "Loan")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sale = sim.add_opportunity(lead, "Sale")
    loan = sim.add_opportunity(lead, "Loan", event_code=12001)
    await buffer.append([chat(1)])
    async with running(buffer, [sink := sink_for(sim)]):
        await wait_until(lambda: len(sim.activities(lead)) == 3)
        await wait_until(lambda: settled(buffer))
    assert sorted(q["opportunityType"] for q in opportunity_reads(sim)) == ["12000", "12001"]
    assert {a["RelatedOpportunityId"] for a in sim.activities(lead)} == {None, sale, loan}
    assert sink.describe()["opportunity_types"] == [12000, 12001]


async def test_configured_opportunity_types_are_the_only_ones_asked(sim, buffer):
    sim.add_opportunity_type(12001, "Loan")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.add_opportunity(lead, "Sale")
    loan = sim.add_opportunity(lead, "Loan", event_code=12001)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities={"types": [12001]})]):
        await wait_until(lambda: len(sim.activities(lead)) == 2)
        await wait_until(lambda: settled(buffer))
    assert [q["opportunityType"] for q in opportunity_reads(sim)] == ["12001"]
    assert {a["RelatedOpportunityId"] for a in sim.activities(lead)} == {None, loan}


async def test_a_failed_opportunity_read_posts_the_lead_activity_and_retries_the_rest(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    opportunity = sim.add_opportunity(lead, "A")
    sim.break_endpoint("GetOpportunitiesOfLead", 503)
    await buffer.append([chat(1), chat(2)])
    # a short rate window keeps the client's backoff between its read retries short
    async with running(buffer, [sink_for(sim, max_attempts=50, rate_limit="1000/0.05s")]):
        await wait_until(lambda: len(sim.activities(lead)) == 1)
        await wait_until(lambda: len(opportunity_reads(sim)) >= 6)  # retried, never "none"
        assert sim.activities(opportunity_id=opportunity) == []
        assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]
        assert await buffer.dead_letters() == []
        sim.mend_endpoint("GetOpportunitiesOfLead")
        await wait_until(lambda: len(sim.activities(opportunity_id=opportunity)) == 1)
        await wait_until(lambda: settled(buffer))
    assert_exactly_once(sim, [lead], [1, 2], with_opportunities=[lead])


async def test_activity_type_is_created_with_string_fields_and_attachments_allowed(sim, buffer):
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await buffer.append([chat(1)])
    async with running(buffer, [sink := sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    kind = sim.store.types[sink.account.event]
    assert kind.allow_attachments
    assert {f["DataType"] for f in kind.fields.values()} == {"String"}


async def test_phone_lookups_use_documented_forms_and_quick_search_finds_the_rest(sim, buffer):
    meera = sim.add_lead(FirstName="Meera", Phone="0091 98765 43210")
    sim.add_lead(FirstName="Decoy", Phone="0091 98765 43211")  # negative control
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: settled(buffer))
    assert [a["RelatedProspectId"] for a in sim.activities()] == [meera]
    asked = [c.query["phone"] for c in sim.calls if c.path.endswith("RetrieveLeadByPhoneNumber")]
    assert asked and all(q.lstrip("+").isdigit() for q in asked), asked
    # an exact-match account finds that stored form only through the quick search
    assert sim.store.switches.phone_match != "exact" or any(
        c.path.endswith("Leads.GetByQuickSearch") for c in sim.calls)


async def test_a_quick_search_hit_that_is_another_number_is_not_taken(sim, buffer):
    sim.add_lead(FirstName="Decoy", Phone="+1 98765 432100")  # contains the digits, not it
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: buffer.conversations("leadsquared"))
        await wait_until(lambda: any(c.path.endswith("Leads.GetByQuickSearch")
                                     for c in sim.calls))
    assert sim.activities() == []
    (conversation,) = await buffer.conversations("leadsquared")
    assert conversation["record_id"] is None



@pytest.mark.parametrize(("value", "expected"), [
    ({"types": ["x"]}, "opportunities: types.0: 'x' is not valid"),
    ({"types": []}, "opportunities: types: [] is not valid"),
    ({"typs": [12000]}, "opportunities: typs: unknown key (allowed: latest, status, types)"),
    ([12000], "opportunities: [12000] is not valid: use true, false, or {types: [12000"),
    ({"status": []}, "opportunities: status: [] is not valid: List should have at least 1 "
                     "item after validation, not 0 (statuses are Open, Won, Lost"),
])
def test_opportunity_config_errors_name_the_key_and_the_fix(value, expected):
    with pytest.raises(ValidationError) as caught:
        LeadSquaredConfig(access_key="a", secret_key="b", opportunities=value)
    assert expected in describe(caught.value, LeadSquaredConfig, "plugins.leadsquared")


def test_opportunities_true_false_and_types_all_still_load():
    for value in (True, False, {"types": [12000, 12001]}, {"status": ["Open"]}):
        LeadSquaredConfig(access_key="a", secret_key="b", opportunities=value)
    for value, status in (({}, ["Open"]), ({"types": [12000]}, ["Open"]),
                          ({"status": "any"}, None), ({"status": "Won"}, ["Won"])):
        config = LeadSquaredConfig(access_key="a", secret_key="b", opportunities=value)
        assert config.opportunities.status == status, value  # Open unless set


async def test_a_status_error_on_http_200_after_the_create_landed_is_found_not_refused(
        sim, buffer):
    """Create commits, then answers HTTP 200 `Status: Error` with a non-MX type (a .NET
    NullReferenceException): the chat is in the CRM once and delivered, not dead-lettered."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("Create", "NullReferenceException",
                        "Object reference not set to an instance of an object.", status=200,
                        after_commit=True)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, bulk=False, opportunities=False)]):
        await wait_until(lambda: settled(buffer))
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1])


async def test_a_server_exception_on_http_200_to_a_lead_lookup_is_retried_not_a_dead_letter(
        sim, buffer):
    """RetrieveLeadByPhoneNumber answers HTTP 200 `Status: Error` with a .NET exception
    until mended: the chat waits (as on a 500) and lands once, never dead-lettered."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.refuse_endpoint("RetrieveLeadByPhoneNumber", "NullReferenceException",
                        "Object reference not set to an instance of an object.", status=200)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=False, max_attempts=50,
                                         rate_limit="1000/0.05s")]):
        await wait_until(lambda: sum(c.path.endswith("RetrieveLeadByPhoneNumber")
                                     for c in sim.calls) >= 6 or buffer.dead_letters())
        assert await buffer.dead_letters() == []
        sim.mend_endpoint("RetrieveLeadByPhoneNumber")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1])
