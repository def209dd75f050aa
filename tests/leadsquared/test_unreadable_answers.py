"""Successes the sink cannot read (HTTP 200 of a shape the docs do not show) are unknown
outcomes, never "nothing there": no user, no phone number, no activity, no lead."""

from __future__ import annotations

import pytest

from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.simulator.users import ADMIN_EMAIL
from tests.helpers import running, wait_until
from tests.leadsquared.test_owners_unread import PRIYA, to_priya
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in

# 200 answers of shapes no source shows for a call documented to answer an array
NOT_A_LIST = [{"Status": "Success", "Message": "done"},  # an object
              {"Status": "Success", "Users": []},  # an array under a key of its own
              "<html><body>maintenance</body></html>"]  # a gateway's page, with 200


def reps_account(sim) -> str:
    """Priya holds her business number on her user record; Kiran owns the lead."""
    sim.add_user("Priya", "priya@example.com", last="Rao", phones="+91-9800000001")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    return sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)


@pytest.mark.parametrize("body", [*NOT_A_LIST[:2],
                                  {"Status": "Error", "Message": "Something went wrong"}])
async def test_a_users_list_that_is_no_list_is_not_an_account_without_users(sim, buffer,
                                                                             body):
    """Users.Get answers 200 with an object: read as "no users", owners: auto mapped no
    number and Priya's chat was filed under the lead's owner, Kiran. So with an untyped
    error envelope on HTTP 200 (undocumented: LeadSquared refuses with 4xx/5xx and an MX
    type, reference §3): taken for a refusal, the sink started with no number mapped."""
    lead = reps_account(sim)
    sim.garble_endpoint("Users.Get", body)
    await buffer.append([to_priya(1)])

    def users_reads() -> int:
        return sum(c.path.endswith("/Users.Get") for c in sim.calls)

    async with running(buffer, [sink_for(sim, owners="auto")]):
        await wait_until(lambda: users_reads() >= 3 or sim.activities(lead), timeout=30)
        assert sim.activities(lead) == []
        sim.mend_endpoint("Users.Get")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [a["Owner"] for a in sim.activities(lead)] == ["priya@example.com"]


async def test_a_user_record_that_is_no_list_is_not_a_user_without_numbers(sim, buffer):
    """User/Retrieve/ByUserId answers 200 with an object: read as "inactive or unknown",
    Priya held no number and her chat was filed under Kiran."""
    lead = reps_account(sim)
    sim.garble_endpoint("ByUserId", {"UserId": None, "Status": "Success"})
    await buffer.append([to_priya(1)])

    def record_reads() -> int:
        return sum(c.path.endswith("/ByUserId") for c in sim.calls)

    async with running(buffer, [sink_for(sim, owners="auto")]):
        await wait_until(lambda: record_reads() >= 9 or sim.activities(lead), timeout=30)
        assert sim.activities(lead) == []
        sim.mend_endpoint("ByUserId")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [a["Owner"] for a in sim.activities(lead)] == ["priya@example.com"]


@pytest.mark.parametrize("body", NOT_A_LIST)
async def test_each_user_lookup_raises_on_an_answer_it_cannot_read(sim, body):
    """By id, by email and the list: an answer that is no array is an error naming the
    call, never None ("inactive or unknown") or [] ("no users")."""
    priya = sim.add_user("Priya", "priya@example.com")
    async with LeadSquaredClient(sim.base_url, sim.access_key, sim.secret_key,
                                 max_retries=0) as client:
        for endpoint, call in (("Users.Get", client.users.all),
                               ("ByUserId", lambda: client.users.by_id(priya)),
                               ("ByEmailAddress",
                                lambda: client.users.by_email("priya@example.com"))):
            sim.garble_endpoint(endpoint, body)
            with pytest.raises(LeadSquaredError) as caught:
                await call()
            assert caught.value.kind == "transient"
            sim.mend_endpoint(endpoint)
        # the documented answers still read: a user, and [] for an unknown one
        assert (await client.users.by_id(priya))["EmailAddress"] == "priya@example.com"
        assert await client.users.by_email("nobody@example.com") is None
        assert [u["ID"] for u in await client.users.all()][-1] == priya


async def test_an_owners_map_read_again_from_an_unreadable_list_stays_as_it_was(sim, buffer):
    """owners: a fixed map; the users read again (sync now) answer an object: the map read
    before stays, its emails still checked (not every rep taken for "no user")."""
    sim.add_user("Priya", "priya@example.com", last="Rao")
    sink = sink_for(sim, owners={PRIYA: "priya@example.com"})
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        before = dict(sink.owners.emails)
        sim.garble_endpoint("Users.Get", {"Status": "Success"})
        await sink.owners.refresh()
    assert sink.owners.emails == before and sink.owners.can_own("priya@example.com")


@pytest.mark.parametrize("body", [{"RecordCount": 1, "Activities": []},  # another key
                                  {"RecordCount": 1, "ProspectActivities": {"Id": "x"}},
                                  [{"Id": "x"}]])  # the rows bare
async def test_a_key_check_that_cannot_be_read_posts_nothing_again(sim, buffer, body):
    """The post's answer is lost; the key check's Retrieve answers 200 in a shape with no
    readable rows: read as "no activities", the chat was posted a second time."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.configure(drop_after_commit_rate=1.0)  # the post commits, its answer is lost
    sim.garble_endpoint("Retrieve", body)
    await buffer.append([chat(1)])

    def checks() -> int:
        return sum(c.path.endswith("/Retrieve") for c in sim.calls)

    async with running(buffer, [sink_for(sim, opportunities=False)]):
        await wait_until(lambda: sim.activities(lead), timeout=30)
        sim.configure(drop_after_commit_rate=0.0)
        await wait_until(lambda: checks() >= 3 or len(sim.activities(lead)) > 1, timeout=30)
        assert len(sim.activities(lead)) == 1
        sim.mend_endpoint("Retrieve")
        await wait_until(lambda: settled(buffer), timeout=30)
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert await buffer.dead_letters() == []


async def test_lookups_answering_null_create_no_second_lead(sim, buffer):
    """RetrieveLeadByPhoneNumber and Leads.GetByQuickSearch answer 200 `null` (the docs:
    an array, [] for none): read as "no lead", a second lead was created for a person who
    has one."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.garble_endpoint("RetrieveLeadByPhoneNumber", None)
    sim.garble_endpoint("Leads.GetByQuickSearch", None)
    await buffer.append([chat(1)])

    def lookups() -> int:
        return sum(c.path.endswith("/RetrieveLeadByPhoneNumber") for c in sim.calls)

    async with running(buffer, [sink_for(sim, opportunities=False, create_leads=True)]):
        # three forms of the number a try: three tries, or a lead created
        await wait_until(lambda: lookups() >= 9 or len(sim.store.leads) > 1, timeout=30)
        assert list(sim.store.leads) == [lead]
        sim.mend_endpoint("RetrieveLeadByPhoneNumber")
        sim.mend_endpoint("Leads.GetByQuickSearch")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert list(sim.store.leads) == [lead] and len(sim.activities(lead)) == 1


@pytest.mark.parametrize("body", [{}, None])
async def test_a_lead_read_that_cannot_be_read_files_no_chat_under_the_api_user(sim, buffer,
                                                                                body):
    """owner_fallback lead_owner: the lead's owner comes from Leads.GetById, which answers
    200 with an empty object or null: read as "a lead without owner", the chat was owned by the API
    user instead of Kiran, who owns the lead."""
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    sim.garble_endpoint("Leads.GetById", body)
    await buffer.append([to_priya(1)])  # Priya's number is mapped to nobody

    def reads() -> int:
        return sum(c.path.endswith("/Leads.GetById") for c in sim.calls)

    sink = sink_for(sim, opportunities=False, owners={"+919800000099": "kiran@example.com"})
    async with running(buffer, [sink]):
        await wait_until(lambda: reads() >= 3 or sim.activities(lead), timeout=30)
        assert sim.activities(lead) == []
        sim.mend_endpoint("Leads.GetById")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [a["Owner"] for a in sim.activities(lead)] == ["kiran@example.com"]


@pytest.mark.parametrize(("reading", "owner"), [
    ("recorded", "priya@example.com"),  # taken as given: hers
    ("refused", "kiran@example.com"),  # read again: owner_fallback, the lead's owner
    ("api_user", ADMIN_EMAIL)])  # LeadSquared gives it to the keys' user
async def test_a_rep_deactivated_since_the_last_read_of_the_users_loses_no_chat(
        sim, buffer, reading, owner):
    """Priya is deactivated in LeadSquared after the sink read the users (the map still
    names her until the next read). How LeadSquared answers an inactive owner is not
    documented (switch inactive_owner): the chat lands once, never a dead letter. Under
    `refused` it was dead-lettered ('fix what LeadSquared names, then requeue')."""
    sim.configure(inactive_owner=reading)
    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    kiran = sim.add_user("Kiran", "kiran@example.com", last="Das")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210", OwnerId=kiran)
    sink = sink_for(sim, opportunities=False, owners={PRIYA: "priya@example.com"},
                    max_attempts=3)
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.store.users.by_id[priya].active = False
        await buffer.append([to_priya(1)])
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    (activity,) = sim.activities(lead)
    assert texts_in(activity["ActivityNote"]) == ["msg-00001"]
    assert activity["Owner"] == owner


async def test_a_refused_part_of_a_deactivated_rep_beside_one_of_theirs_that_landed(
        sim, buffer):
    """One chat's two notes owned by Priya: the first landed, the second was refused (she was
    deactivated between the two posts). The refused one goes again under owner_fallback;
    the landed one keeps its outcome (none: landed). _owner_gone looked every part of a
    refused owner up in the results, and a landed part has none: KeyError, the whole
    delivery failed."""
    from bridge import Outcome
    from plugins.leadsquared.delivery import _owner_gone
    from plugins.leadsquared.owners import Rep
    from plugins.leadsquared.transcript import Part

    priya = sim.add_user("Priya", "priya@example.com", last="Rao")
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, opportunities=False, owners={PRIYA: "priya@example.com"})
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: runner.started)
        sim.store.users.by_id[priya].active = False
        rep = Rep("priya@example.com", "Priya Rao", PRIYA)
        landed, refused = Part("key:1", rep=rep), Part("key:2", rep=rep)
        results = {"key:2": Outcome.rejected("MXInvalidInputException: not an active user")}
        await _owner_gone(sink.steps, [landed, refused], results)
    assert set(results) == {"key:2"}  # the landed part: still no outcome of its own
    assert results["key:2"].kind == "retry"
    assert "owner_fallback" in results["key:2"].reason


@pytest.mark.parametrize("row", [{"OpportunityID": "{opp}", "Status": "Open"},  # its id
                                 {"OpportunityId": "{opp}", "OpportunityStatus": "Open"}])
async def test_an_open_deal_whose_row_cannot_be_read_still_gets_the_chat(sim, buffer, row):
    """GetOpportunitiesOfLead answers the open deal's row with its id, or its status, under
    a key the sink does not read: the row was dropped as no deal (the chat delivered, the
    deal never got it)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    row = {k: v.format(opp=deal) for k, v in row.items()}
    sim.garble_endpoint("GetOpportunitiesOfLead", {"RecordCount": 1, "List": [row]})
    await buffer.append([chat(1)])

    def reads() -> int:
        return sum(c.path.endswith("/GetOpportunitiesOfLead") for c in sim.calls)

    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: reads() >= 3 or settled(buffer), timeout=30)
        sim.mend_endpoint("GetOpportunitiesOfLead")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert len(sim.activities(opportunity_id=deal)) == 1
    assert len(sim.activities(lead)) == 2 and await buffer.dead_letters() == []
