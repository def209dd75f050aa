"""The LeadSquared simulator over real HTTP: strict refusals, shapes, paging and fault knobs."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from plugins.leadsquared.simulator import Simulator
from plugins.leadsquared.simulator.state import ApiError
from tests.helpers import wait_until

ACCESS, SECRET = "test-access", "test-secret"
KEYS = {"x-LSQ-AccessKey": ACCESS, "x-LSQ-SecretKey": SECRET}
WHEN = "2025-01-31 09:15:00"


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator(ACCESS, SECRET, seed=3)
    await simulator.start("127.0.0.1", 0)
    try:
        yield simulator
    finally:
        await simulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def api(sim: Simulator, http: aiohttp.ClientSession):
    """api(method, path, json=..., params=..., headers=...) -> (status, parsed JSON body)."""

    async def call(method: str, path: str, **options: Any) -> tuple[int, Any]:
        options.setdefault("headers", KEYS)
        async with http.request(method, f"{sim.base_url}/v2/{path}", **options) as response:
            return response.status, await response.json(content_type=None)

    return call


async def make_type(api, name: str = "WhatsApp Chats", fields: int = 2) -> int:
    schema = [{"SchemaName": f"mx_Custom_{i}", "DisplayName": f"F{i}", "DataType": "String"}
              for i in range(1, fields + 1)]
    status, body = await api("POST", "ProspectActivity.svc/CreateType",
                             json={"ActivityEventName": name, "Fields": schema})
    assert status == 200 and body["Status"] == "Success"
    return body["Message"]["Id"]


async def post_activity(api, lead: str, event: int, note: str = "hi", **extra: Any):
    body = {"RelatedProspectId": lead, "ActivityEvent": event, "ActivityNote": note, **extra}
    return await api("POST", "ProspectActivity.svc/Create", json=body)


def is_error(body: Any, exception_type: str) -> bool:
    return body["Status"] == "Error" and body["ExceptionType"] == exception_type


# --- auth and account --------------------------------------------------------------------


async def test_wrong_or_missing_keys_get_401_in_header_and_query_form(api):
    path = "Authentication.svc/UserByAccessKey.Get"
    wrong_header = {"x-LSQ-AccessKey": ACCESS, "x-LSQ-SecretKey": "nope"}
    for options in ({"headers": wrong_header}, {"headers": {}},
                    {"headers": {}, "params": {"accessKey": ACCESS, "secretKey": "nope"}}):
        status, body = await api("GET", path, **options)
        assert status == 401 and body["Status"] == "Error"
    query_form = {"headers": {}, "params": {"accessKey": ACCESS, "secretKey": SECRET}}
    assert (await api("GET", path, **query_form))[0] == 200
    assert (await api("GET", path))[0] == 200


async def test_user_by_access_key_names_this_host_without_scheme(sim, api):
    status, user = await api("GET", "Authentication.svc/UserByAccessKey.Get")
    host = sim.base_url.removeprefix("http://")
    assert status == 200 and user["LSQCommonServiceURLs"] == {"api": host, "app": host}
    assert (user["TimeZone"], user["DefaultCountryCode"]) == ("Asia/Kolkata", "91")
    assert user["Id"] and user["Role"]


# --- leads ---------------------------------------------------------------------------------


async def test_phone_lookup_is_strict_about_separators_and_a_leading_plus(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")

    async def lookup(phone: str) -> tuple[int, list[dict]]:
        return await api("GET", "LeadManagement.svc/RetrieveLeadByPhoneNumber",
                         params={"phone": phone})

    for miss in ("9876543210", "919876543210", "+91-9876543210", "+91 9876543210",
                 "+919876543210"):  # exact matching, and a '+' matches nothing by default
        assert await lookup(miss) == (200, []), miss
    sim.configure(phone_plus="accepted")
    status, rows = await lookup("+919876543210")
    assert status == 200 and [row["ProspectID"] for row in rows] == [lead]
    sim.configure(phone_plus="refused")
    status, body = await lookup("+919876543210")
    assert status == 500 and body["ExceptionType"] == "MXInvalidInputException"


async def test_phone_lookup_returns_the_lead_with_the_most_recent_activity(sim, api):
    older = sim.add_lead(FirstName="A", Phone="919876543210")
    newer = sim.add_lead(FirstName="B", Mobile="91-9876543210")
    event = await make_type(api)
    await post_activity(api, older, event, ActivityDateTime="2025-01-02 00:00:00")
    await post_activity(api, newer, event, ActivityDateTime="2025-01-01 00:00:00")
    status, rows = await api("GET", "LeadManagement.svc/RetrieveLeadByPhoneNumber",
                             params={"phone": "919876543210"})
    assert status == 200 and [row["ProspectID"] for row in rows] == [older]


async def test_lead_create_returns_the_id_and_get_by_id_reads_it_back(api):
    attrs = [{"Attribute": "FirstName", "Value": "Ravi"},
             {"Attribute": "Mobile", "Value": "+91-9123456780"},
             {"Attribute": "mx_City", "Value": "Pune"}]
    status, body = await api("POST", "LeadManagement.svc/Lead.Create", json=attrs)
    lead = body["Message"]["Id"]
    assert status == 200 and body["Status"] == "Success"
    status, rows = await api("GET", "LeadManagement.svc/Leads.GetById", params={"id": lead})
    assert [(r["ProspectID"], r["Mobile"], r["mx_City"]) for r in rows] == [
        (lead, "+91-9123456780", "Pune")]
    assert (await api("GET", "LeadManagement.svc/Leads.GetById", params={"id": "x"}))[1] == []


async def test_lead_create_duplicate_phone_is_http_500_duplicate_entry(sim, api):
    sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    attrs = [{"Attribute": "FirstName", "Value": "Asha"},
             {"Attribute": "Phone", "Value": "+919876543210"}]
    status, body = await api("POST", "LeadManagement.svc/Lead.Create", json=attrs)
    assert status == 500 and body == {
        "Status": "Error", "ExceptionType": "MXDuplicateEntryException",
        "ExceptionMessage": "A Lead with same Phone Number already exists."}
    assert len(sim.store.leads) == 1


async def test_lead_create_refuses_unknown_attributes_but_accepts_mx_ones(sim, api):
    status, body = await api("POST", "LeadManagement.svc/Lead.Create",
                             json=[{"Attribute": "City", "Value": "Pune"}])
    assert status == 500 and is_error(body, "MXInvalidInputException")
    status, _ = await api("POST", "LeadManagement.svc/Lead.Create",
                          json=[{"Attribute": "mx_City", "Value": "Pune"}])
    assert status == 200 and len(sim.store.leads) == 1
    with pytest.raises(ApiError):
        sim.add_lead(City="Pune")


async def test_create_or_update_updates_the_match_and_creates_otherwise(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    update = [{"Attribute": "Phone", "Value": "+91-9876543210"},
              {"Attribute": "LastName", "Value": "Patil"},
              {"Attribute": "SearchBy", "Value": "Phone"}]
    status, body = await api("POST", "LeadManagement.svc/Lead.CreateOrUpdate", json=update)
    assert status == 200 and body["Message"]["Id"] == lead
    assert sim.store.lead(lead)["LastName"] == "Patil"
    create = [{"Attribute": "EmailAddress", "Value": "new@example.com"}]
    status, body = await api("POST", "LeadManagement.svc/Lead.CreateOrUpdate", json=create)
    assert status == 200 and body["Message"]["Id"] != lead and len(sim.store.leads) == 2


# --- activity types and activities ---------------------------------------------------------


async def test_create_type_create_and_retrieve_round_trip_with_fields(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api, "WhatsApp Chats")
    status, types = await api("GET", "ProspectActivity.svc/ActivityTypes.Get")
    assert status == 200 and {"ActivityEventName": "WhatsApp Chats",
                              "ActivityEvent": event}.items() <= types[-1].items()
    fields = [{"SchemaName": "mx_Custom_1", "Value": "wamid.X"},
              {"SchemaName": "mx_Custom_2", "Value": "3"}]
    status, posted = await post_activity(api, lead, event, "hello", ActivityDateTime=WHEN,
                                         Fields=fields)
    assert status == 200 and posted["Status"] == "Success"
    status, body = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead},
                             json={"Parameter": {"ActivityEvent": event}})
    [row] = body["ProspectActivities"]
    assert status == 200 and body["RecordCount"] == 1
    assert (row["Id"], row["EventCode"], row["EventName"], row["ActivityDateTime"]) == (
        posted["Message"]["Id"], event, "WhatsApp Chats", WHEN)
    assert {"mx_Custom_1": "wamid.X", "mx_Custom_2": "3",
            "ActivityEvent_Note": "hello"}.items() <= row["ActivityFields"].items()
    assert time.strptime(row["CreatedOn"], "%Y-%m-%d %H:%M:%S")


async def test_create_type_refuses_duplicate_names_and_bad_fields(api):
    await make_type(api, "Chats")
    status, body = await api("POST", "ProspectActivity.svc/CreateType",
                             json={"ActivityEventName": "chats"})
    assert status == 500 and is_error(body, "MXDuplicateEntryException")
    too_many = [{"SchemaName": f"mx_Custom_{i}"} for i in range(1, 52)]
    for bad in (too_many, [{"SchemaName": "mx_Custom_51"}], [{"SchemaName": "mx_Key"}]):
        status, body = await api("POST", "ProspectActivity.svc/CreateType",
                                 json={"ActivityEventName": "Other", "Fields": bad})
        assert status == 500 and is_error(body, "MXInvalidInputException")
    status, body = await api("POST", "ProspectActivity.svc/CreateType", json={"Score": 0})
    assert status == 500 and is_error(body, "MXMandatoryAttributeMissingException")


async def test_unknown_activity_event_code_is_refused(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    status, body = await post_activity(api, lead, 999)
    assert status == 500 and is_error(body, "MXInvalidInputException")
    assert "ActivityEvent" in body["ExceptionMessage"] and sim.activities() == []


async def test_unknown_lead_undefined_field_and_bad_datetime_are_refused(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api, fields=1)
    refused = [
        await post_activity(api, "00000000-0000-4000-8000-000000000000", event),
        await post_activity(api, lead, event, Fields=[{"SchemaName": "mx_Custom_2",
                                                        "Value": "x"}]),
        await post_activity(api, lead, event, ActivityDateTime="2025-01-31T09:15:00Z"),
    ]
    assert all(status == 500 and is_error(body, "MXInvalidInputException")
               for status, body in refused)
    assert sim.activities() == []


async def test_note_longer_than_the_limit_is_refused_with_its_length(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    status, body = await post_activity(api, lead, event, "x" * 2001)
    assert status == 500 and is_error(body, "MXInvalidInputException")
    assert "2001" in body["ExceptionMessage"] and "2000" in body["ExceptionMessage"]
    assert (await post_activity(api, lead, event, "x" * 2000))[0] == 200
    sim.configure(note_limit=10)
    assert (await post_activity(api, lead, event, "x" * 11))[0] == 500
    assert len(sim.activities(lead_id=lead)) == 1


async def test_a_custom_field_longer_than_200_is_refused_as_the_switch_counts(sim, api):
    """MaxFieldLength 200 [DOC:get-activity-details]; its unit per switch field_length."""
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)

    async def post(value: str) -> int:
        fields = [{"SchemaName": "mx_Custom_1", "Value": value}]
        return (await post_activity(api, lead, event, Fields=fields))[0]

    hindi, family = "न" * 67, "👨‍👩‍👧" * 25  # 201 bytes, 67 units; 200 units, 125 points
    assert await post("x" * 200) == 200 and await post("x" * 201) == 500
    assert await post(hindi) == 500 and await post(family) == 500  # 450 bytes
    sim.configure(field_length="utf16")
    assert await post(hindi) == 200 and await post(family) == 200
    assert await post(family + "x") == 500
    sim.configure(field_length="code_points")
    assert await post(family + "x") == 200 and await post("x" * 201) == 500
    status, body = await post_activity(api, lead, event, Fields=[
        {"SchemaName": "mx_Custom_2", "Value": "x" * 201}])
    assert status == 500 and is_error(body, "MXInvalidInputException")
    assert "mx_Custom_2" in body["ExceptionMessage"] and "200" in body["ExceptionMessage"]
    assert len(sim.activities(lead_id=lead)) == 4  # only those accepted


# --- opportunities -------------------------------------------------------------------------


async def test_opportunity_activity_shows_in_get_activities_of_opportunity(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    opportunity = sim.add_opportunity(lead, name="Deal")
    event = await make_type(api)
    status, posted = await post_activity(api, lead, event, "on the deal",
                                         RelatedOpportunityId=opportunity)
    assert status == 200 and posted["Message"]["RelatedId"] == lead
    status, body = await api("POST", "OpportunityManagement.svc/GetActivitiesOfOpportunity",
                             params={"opportunityId": opportunity})
    assert status == 200 and body["RecordCount"] == 1
    assert [row["ProspectActivityId"] for row in body["List"]] == [posted["Message"]["Id"]]
    assert [a["Id"] for a in sim.activities(opportunity_id=opportunity)] == [
        posted["Message"]["Id"]]
    # By design the lead's history lists activities posted on its opportunities too.
    _, history = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead})
    assert history["RecordCount"] == 1


async def test_activity_on_an_opportunity_of_another_lead_is_refused(sim, api):
    asha = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    ravi = sim.add_lead(FirstName="Ravi", Phone="+91-9123456780")
    event = await make_type(api)
    status, body = await post_activity(api, asha, event,
                                       RelatedOpportunityId=sim.add_opportunity(ravi))
    assert status == 500 and is_error(body, "MXInvalidInputException")
    assert sim.activities() == []


async def test_capture_creates_lead_and_opportunity_listed_by_get_opportunities_of_lead(api):
    capture = {
        "LeadDetails": [{"Attribute": "Phone", "Value": "+91-9876543210"},
                        {"Attribute": "SearchBy", "Value": "Phone"}],
        "Opportunity": {"OpportunityEventCode": 12000, "OpportunityNote": "n",
                        "Fields": [{"SchemaName": "mx_Custom_1", "Value": "Annual plan"},
                                   {"SchemaName": "Status", "Value": "Won"}]},
    }
    status, body = await api("POST", "OpportunityManagement.svc/Capture", json=capture)
    assert status == 200 and body["Status"] == "Success"
    opportunity, lead = body["Message"]["Id"], body["Message"]["RelatedId"]
    assert body["AdditionalDetails"][0]["ActivityId"] == opportunity
    status, listed = await api("POST", "OpportunityManagement.svc/GetOpportunitiesOfLead",
                               params={"leadId": lead, "opportunityType": "12000"})
    assert status == 200 and listed["RecordCount"] == 1
    [row] = listed["List"]
    assert (row["OpportunityId"], row["RelatedProspectId"], row["mx_Custom_1"], row["Status"],
            row["OpportunityEvent"]) == (opportunity, lead, "Annual plan", "Won", "12000")


async def test_get_on_get_opportunities_of_lead_is_405(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    status, body = await api("GET", "OpportunityManagement.svc/GetOpportunitiesOfLead",
                             params={"leadId": lead})
    assert status == 405 and body["Status"] == "Error"
    status, body = await api("POST", "ProspectActivity.svc/ActivityTypes.Get")
    assert status == 405 and body["Status"] == "Error"


# --- transport-level refusals ----------------------------------------------------------------


async def test_unknown_path_is_404_and_a_wrong_content_type_is_400(sim, api, http):
    status, body = await api("GET", "LeadManagement.svc/NoSuchMethod")
    assert status == 404 and body["Status"] == "Error"
    url = f"{sim.base_url}/v2/LeadManagement.svc/Lead.Create"
    for data, content_type in (("[]", "text/plain"),):
        headers = {**KEYS, "Content-Type": content_type}
        async with http.post(url, data=data, headers=headers) as response:
            assert response.status == 400
            assert (await response.json(content_type=None))["Status"] == "Error"


# --- paging --------------------------------------------------------------------------------


async def test_retrieve_answers_25_by_default_and_30_with_rowcount_50(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    for minute in range(30):
        await post_activity(api, lead, event, f"n{minute}",
                            ActivityDateTime=f"2025-01-31 09:{minute:02d}:00")
    status, first = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead})
    assert status == 200 and first["RecordCount"] == 30
    assert len(first["ProspectActivities"]) == 25
    assert first["ProspectActivities"][0]["ActivityDateTime"] == "2025-01-31 09:29:00"
    paging = {"Paging": {"Offset": "0", "RowCount": "50"}}
    _, every = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead},
                         json=paging)
    assert len(every["ProspectActivities"]) == 30


async def test_opportunity_lists_answer_25_per_page_by_default(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    for number in range(30):
        sim.add_opportunity(lead, name=f"Deal {number}")
    path = "OpportunityManagement.svc/GetOpportunitiesOfLead"
    _, first = await api("POST", path, params={"leadId": lead, "opportunityType": 12000})
    _, second = await api("POST", path, params={"leadId": lead, "opportunityType": 12000},
                          json={"Paging": {"PageIndex": 2, "PageSize": 25}})
    assert (first["RecordCount"], len(first["List"]), len(second["List"])) == (30, 25, 5)


# --- fault knobs ---------------------------------------------------------------------------


async def fresh_window(seconds: float = 5.0, room: float = 1.0) -> None:
    """Wait for a new fixed window when less than `room` seconds remain in this one."""
    left = seconds - time.monotonic() % seconds
    if left < room:
        await asyncio.sleep(left + 0.01)


@pytest.mark.parametrize("signal, statuses", [
    ("429", [429, 429]), ("200", [200, 200]), ("both", [429, 200])])
async def test_rate_limit_refuses_calls_past_n_in_a_window_with_either_signal(
        sim, api, signal, statuses):
    sim.configure(rate_limit=3, rate_limit_signal=signal)
    await fresh_window()
    answers = [await api("GET", "ProspectActivity.svc/ActivityTypes.Get") for _ in range(5)]
    assert [status for status, _ in answers[:3]] == [200, 200, 200]
    assert [status for status, _ in answers[3:]] == statuses
    for _, body in answers[3:]:
        assert body == {"Status": "Error", "ExceptionType": "MXAPIRateLimitExceededException",
                        "ExceptionMessage": "API calls exceeded the limit of 3 in 5 second(s)"}
    assert len(sim.calls) == 5


READ = "ProspectActivity.svc/ActivityTypes.Get"
ASHA = [{"Attribute": "FirstName", "Value": "Asha"},
        {"Attribute": "Phone", "Value": "+91-9876543210"}]


async def next_window(at: float, seconds: float) -> None:
    """Sleep into the fixed window after the one holding `at` (a time.monotonic())."""
    await asyncio.sleep(max(0.0, (at // seconds + 1) * seconds - time.monotonic()) + 0.01)


async def held_lead_create(sim, api) -> asyncio.Future:
    """A Lead.Create sent, once it has arrived (write_hold keeps its answer)."""
    arrived = len(sim.calls) + 1
    write = asyncio.ensure_future(api("POST", "LeadManagement.svc/Lead.Create", json=ASHA))
    while len(sim.calls) < arrived:
        await asyncio.sleep(0.005)
    return write


async def test_a_held_write_past_the_limit_is_refused_in_the_window_it_arrived_in(sim, api):
    """A gateway counts a call when it arrives. A held write was counted only after its
    hold, against its arrival's window: a read in a later window meanwhile had moved the
    budget on, so the held write found a fresh count of 1 and committed, although it was
    the third call of a window allowing two."""
    sim.configure(rate_limit="2/1s", write_hold=3.0)
    await fresh_window(1.0, room=0.5)
    assert [(await api("GET", READ))[0] for _ in range(2)] == [200, 200]
    write = await held_lead_create(sim, api)
    await next_window(sim.calls[-1].at, 1.0)
    assert (await api("GET", READ))[0] == 200  # a later window's first call
    status, body = await write
    assert (status, body["ExceptionType"]) == (429, "MXAPIRateLimitExceededException")
    assert sim.store.leads == {} and not sim.calls[2].held  # refused, never held


async def test_a_held_write_never_costs_the_window_its_hold_ends_in_its_count(sim, api):
    """A held write counted at its hold's end set the budget back to its arrival's
    window with a count of 1: the window the hold ended in lost the calls it had counted,
    and took a third call where it allows two."""
    sim.configure(rate_limit="2/1s", write_hold=1.5)
    await fresh_window(1.0, room=0.9)  # the hold ends mid-way through the next window
    write = await held_lead_create(sim, api)
    await next_window(sim.calls[-1].at, 1.0)
    assert [(await api("GET", READ))[0] for _ in range(2)] == [200, 200]
    assert (await write)[0] == 200  # alone in its own window
    third = await api("GET", READ)
    reads = sim.calls[-3:]
    assert len({int(call.at) for call in reads}) == 1, "the scenario needs one window"
    assert third[0] == 429 and len(sim.store.leads) == 1


def test_a_call_counted_late_counts_in_its_own_window_and_the_current_one_keeps_its_count():
    """over_limit never moves a budget's window backwards: a call counted after later ones
    (its answer delayed by latency) counts where it arrived, and the window after keeps
    the calls it had."""
    sim = Simulator(rate_limit="2/1s")
    assert not sim.over_limit(10.2) and not sim.over_limit(10.3)  # window 10 is full
    assert not sim.over_limit(9.9)  # window 9's first call, counted late
    assert sim.over_limit(10.4)  # window 10's third call
    assert sim.over_limit(9.95) is False and sim.over_limit(9.97) is True


async def test_error_rate_one_answers_every_call_with_5xx_before_doing_anything(sim, api, http):
    sim.configure(error_rate=1.0)
    statuses = []
    attrs = [{"Attribute": "FirstName", "Value": "Asha"}]
    for _ in range(10):
        async with http.post(f"{sim.base_url}/v2/LeadManagement.svc/Lead.Create", json=attrs,
                             headers=KEYS) as response:
            statuses.append(response.status)
    assert set(statuses) <= {500, 502, 503} and sim.store.leads == {}


async def test_drop_after_commit_stores_the_activity_but_the_client_sees_a_disconnect(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    sim.configure(drop_after_commit_rate=1.0)
    with pytest.raises(aiohttp.ClientError):
        await post_activity(api, lead, event, "landed anyway")
    [stored] = sim.activities(lead_id=lead)
    assert stored["ActivityNote"] == "landed anyway"
    assert sim.calls[-1].status is None


async def test_latency_delays_every_call(sim, api):
    sim.configure(latency=0.2)
    started = time.monotonic()
    assert (await api("GET", "ProspectActivity.svc/ActivityTypes.Get"))[0] == 200
    assert time.monotonic() - started >= 0.2


async def test_calls_are_recorded_and_max_calls_in_window_counts_them(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    await api("GET", "LeadManagement.svc/Leads.GetById", params={"id": lead})
    await api("POST", "LeadManagement.svc/Lead.Create", json=[{"Attribute": "City"}])
    await asyncio.sleep(0.3)
    await api("GET", "LeadManagement.svc/Leads.GetById",
              headers={}, params={"id": lead, "accessKey": ACCESS, "secretKey": SECRET})
    first, second, third = sim.calls
    assert (first.method, first.path, first.query, first.status) == (
        "GET", "/v2/LeadManagement.svc/Leads.GetById", {"id": lead}, 200)
    assert (second.body, second.status) == ([{"Attribute": "City"}], 500)
    assert third.query["secretKey"] == "***"
    assert first.at < second.at < third.at
    assert sim.max_calls_in_window(0.2) == 2 and sim.max_calls_in_window(5) == 3


async def test_configure_refuses_unknown_knobs_and_bad_values(sim):
    for knobs in ({"rate_limt": 3}, {"error_rate": 2}, {"rate_limit_signal": "503"},
                  {"rate_limit": "fast"}):
        with pytest.raises(ValueError):
            sim.configure(**knobs)


# --- admin routes --------------------------------------------------------------------------


async def test_admin_routes_seed_configure_and_report(sim, http, api):
    async def admin(method: str, path: str, body: Any = None) -> Any:
        async with http.request(method, f"{sim.base_url}/_sim/{path}", json=body) as response:
            assert response.status == 200
            return await response.json()

    lead = (await admin("POST", "leads", {"FirstName": "Asha", "Phone": "+91-9876543210"}))[
        "ProspectID"]
    opportunity = (await admin("POST", "opportunities", {"lead_id": lead, "name": "Deal",
                                                          "status": "Open"}))["OpportunityId"]
    assert [row["ProspectID"] for row in await admin("GET", "leads")] == [lead]
    event = await make_type(api)
    await post_activity(api, lead, event, RelatedOpportunityId=opportunity)
    activities = await admin("GET", f"activities?opportunityId={opportunity}")
    assert [a["RelatedProspectId"] for a in activities] == [lead]
    assert (await admin("POST", "config", {"note_limit": 5}))["note_limit"] == 5
    assert sim.knobs.note_limit == 5
    assert len(await admin("GET", "calls")) == 2
    assert await admin("GET", "stats") == {"calls": 2, "max_calls_in_window": 2}


async def test_admin_reset_puts_the_account_back_as_constructed_dropping_calls_in_flight(http):
    """POST /_sim/reset: the account, knobs and switches as constructed (a restarted
    simulator), so one simulator process can serve many tests, each starting clean; a
    write held when the reset comes is dropped, never committed after."""
    sim = Simulator(ACCESS, SECRET, seed=3, phone_match="normalised", note_limit=50)
    await sim.start("127.0.0.1", 0)
    api = api_of(http, sim)
    try:
        fresh = copy.deepcopy((sim.store.user_id, sim.knobs, sim.store.switches,
                               sim.store.users.listing()))
        lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
        event = await make_type(api)
        sim.add_opportunity(lead)
        sim.add_user("Ravi", "ravi@example.com")
        sim.break_endpoint("Leads.GetById")
        sim.configure(phone_match="exact", note_limit=9, rate_limit=100, write_hold=5.0)
        held = asyncio.ensure_future(post_activity(api, lead, event))
        # the post is in, held (a fixed 0.3 s here assumed it had arrived by then)
        await wait_until(lambda: sim.held_writes and sim.in_flight, timeout=10)
        async with http.post(f"{sim.base_url}/_sim/reset") as response:
            assert response.status == 200 and await response.json() == {"reset": True}
        with pytest.raises(aiohttp.ClientError):
            await held  # dropped: no answer
        assert not sim.held_writes and not sim.in_flight
        assert (sim.store.user_id, sim.knobs, sim.store.switches,
                sim.store.users.listing()) == fresh
        assert sim.store.leads == {} and sim.store.opportunities == {}
        assert sim.calls == [] and sim.broken == {}
        await asyncio.sleep(0.3)
        assert sim.activities() == []  # the held write never lands
        status, body = await api("GET", "LeadManagement.svc/Leads.GetById", params={"id": lead})
        assert (status, body) == (200, [])  # mended, and the lead is gone
    finally:
        await sim.stop()


def api_of(http: aiohttp.ClientSession, sim: Simulator):
    """The `api` fixture's call, on a simulator the test made itself."""

    async def call(method: str, path: str, **options: Any) -> tuple[int, Any]:
        options.setdefault("headers", KEYS)
        async with http.request(method, f"{sim.base_url}/v2/{path}", **options) as response:
            return response.status, await response.json(content_type=None)

    return call
