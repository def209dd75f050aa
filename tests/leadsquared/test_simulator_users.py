"""The simulator's users and activity owners (docs/leadsquared-simulator.md rows U1-U3)."""

from __future__ import annotations

import pytest

from tests.leadsquared import test_simulator as base
from tests.leadsquared.test_simulator import make_type, post_activity

sim, http, api = base.sim, base.http, base.api
BY_LEAD = "ProspectActivity.svc/Bulk/CustomActivity/Add/ByLeadId"


async def test_users_get_lists_every_user_with_status_and_by_email_answers_active_ones(sim, api):
    priya = sim.add_user("Priya", "priya@example.com", last="Rao", phones="+91-9812345678")
    sim.add_user("Old", "old@example.com", active=False)
    status, users = await api("GET", "UserManagement.svc/Users.Get")
    assert status == 200
    listed = {u["EmailAddress"]: u for u in users}
    assert listed["priya@example.com"]["StatusCode"] == 0
    assert listed["old@example.com"]["StatusCode"] == 1
    assert "AssociatedPhoneNumbers" not in listed["priya@example.com"]  # not in Users.Get
    path = "UserManagement.svc/User/Retrieve/ByEmailAddress"
    _, found = await api("GET", path, params={"emailAddress": "Priya@Example.com"})
    assert found[0]["UserId"] == priya and found[0]["AssociatedPhoneNumbers"] == "+91-9812345678"
    assert await api("GET", path, params={"emailAddress": "old@example.com"}) == (200, [])
    assert await api("GET", path, params={"emailAddress": "nobody@example.com"}) == (200, [])


async def test_a_bulk_row_is_owned_by_its_activity_owner_email_as_given(sim, api):
    sim.add_user("Priya", "priya@example.com")
    lead, event = sim.add_lead(FirstName="A", Phone="1"), await make_type(api)
    rows = [{"RelatedProspectId": lead, "ActivityEvent": event, "ActivityNote": note,
             "ActivityOwnerEmail": email}
            for note, email in (("mine", "priya@example.com"), ("who", "ghost@example.com"))]
    status, body = await api("POST", BY_LEAD, json=rows)
    assert status == 200
    assert all(row["ProspectActivityId"] for row in body["Response"])
    owners = {a["ActivityNote"]: a["Owner"] for a in sim.activities(lead)}
    assert owners == {"mine": "priya@example.com", "who": "ghost@example.com"}


@pytest.mark.parametrize("reading", ["ignored", "owner_email", "owner_field"])
async def test_a_single_create_sets_its_owner_only_in_the_switched_reading(sim, api, reading):
    sim.configure(create_owner=reading)
    priya = sim.add_user("Priya", "priya@example.com")
    lead, event = sim.add_lead(FirstName="A", Phone="1"), await make_type(api)
    status, _ = await post_activity(api, lead, event, ActivityOwnerEmail="priya@example.com",
                                    Fields=[{"SchemaName": "Owner", "Value": priya}]
                                    if reading == "owner_field" else [])
    assert status == 200
    (activity,) = sim.activities(lead)
    expected = "admin@simulator.invalid" if reading == "ignored" else "priya@example.com"
    assert activity["Owner"] == expected
