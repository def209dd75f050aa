"""The simulator against the reference, row by row (docs/leadsquared-simulator.md)."""

from __future__ import annotations

import re
from pathlib import Path

import aiohttp
import pytest

from plugins.leadsquared.simulator.switches import SWITCHES, Switches
from tests.leadsquared import test_simulator as base
from tests.leadsquared.test_simulator import (
    ACCESS,
    KEYS,
    SECRET,
    WHEN,
    is_error,
    make_type,
    post_activity,
)

sim, http, api = base.sim, base.http, base.api  # the same fixtures as test_simulator.py
ROOT = Path(__file__).resolve().parents[2]
TABLE = ROOT / "docs" / "leadsquared-simulator.md"
OPPORTUNITIES = "OpportunityManagement.svc/GetOpportunitiesOfLead"


def table_rows() -> list[list[str]]:
    """The behaviour table's rows, cells stripped (header and rule lines left out)."""
    rows = []
    for line in TABLE.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and re.match(r"^[A-Z]\d+$", cells[0]):
            rows.append(cells)
    return rows


def test_every_table_row_has_a_source_and_a_test_that_exists():
    rows = table_rows()
    assert len(rows) >= 30
    tests = "\n".join(p.read_text() for p in (ROOT / "tests" / "leadsquared").glob("test_*.py"))
    for row in rows:
        source, pinned = row[-2], row[-1]
        assert re.search(r"\[(DOC|LIVE|CW|RB|PHP|GH|GUESS|FAULT)", source), row
        names = re.findall(r"`(test_\w+)`", pinned)
        assert names, row
        for name in names:
            assert re.search(rf"def {name}\(", tests), f"row {row[0]}: no test {name}"


def test_every_switch_is_in_the_table_and_defaults_to_its_first_choice():
    text = TABLE.read_text()
    for name, choices in SWITCHES.items():
        assert f"`{name}`" in text
        assert getattr(Switches(), name) == choices[0]


# --- leads -------------------------------------------------------------------------------


async def test_phone_lookup_digits_with_or_without_country_code_never_separators(sim, api):
    asha = sim.add_lead(FirstName="Asha", Phone="9901111111")  # the doc example's storage
    ravi = sim.add_lead(FirstName="Ravi", Mobile="+91-9123456780")

    async def found(phone: str) -> list[str]:
        status, body = await api("GET", "LeadManagement.svc/RetrieveLeadByPhoneNumber",
                                 params={"phone": phone})
        assert status == 200
        return [lead["ProspectID"] for lead in body]

    for setting in SWITCHES["phone_match"]:
        sim.configure(phone_match=setting)
        assert await found("9901111111") == [asha]
        assert await found("+919123456780") == []  # digits only: a '+' matches nothing
        for separated in ("99011 11111", "990-111-1111", "+91-9123456780", "+91 9123456780"):
            assert await found(separated) == [], (setting, separated)
        assert await found("9999999999") == []  # negative control
    sim.configure(phone_match="exact")
    assert await found("919901111111") == [] and await found("9123456780") == []
    assert await found("919123456780") == []  # stored with '+91-': no digits form equals it
    sim.configure(phone_match="normalised")
    assert await found("919901111111") == [asha] and await found("9123456780") == [ravi]
    assert await found("919123456780") == [ravi]
    sim.configure(phone_match="exact", phone_plus="accepted")
    assert await found("+919123456780") == [ravi]


async def test_quick_search_finds_literal_substrings_and_digits_only_when_switched(sim, api):
    lead = sim.add_lead(FirstName="Meera", Phone="0091 98765 43210")
    path = "LeadManagement.svc/Leads.GetByQuickSearch"
    _, by_text = await api("GET", path, params={"key": "98765 43210"})
    _, by_digits = await api("GET", path, params={"key": "9876543210"})
    _, nothing = await api("GET", path, params={"key": "nobody-here"})
    assert [x["ProspectID"] for x in by_text] == [lead] and by_digits == [] and nothing == []
    sim.configure(quick_search="digits")
    _, by_digits = await api("GET", path, params={"key": "9876543210"})
    assert [x["ProspectID"] for x in by_digits] == [lead]


async def test_leads_get_filters_by_parameter_and_silently_ignores_a_query_wrapper(sim, api):
    asha = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    sim.add_lead(FirstName="Ravi", Phone="+91-9123456780")
    lookup = {"LookupName": "Phone", "LookupValue": "%9876543210", "SqlOperator": "LIKE"}
    status, body = await api("POST", "LeadManagement.svc/Leads.Get", json={"Parameter": lookup})
    assert status == 200 and [x["ProspectID"] for x in body] == [asha]
    _, ignored = await api("POST", "LeadManagement.svc/Leads.Get", json={"Query": lookup})
    assert len(ignored) == 2  # the wrong wrapper filters nothing, and says nothing


# --- activity types ------------------------------------------------------------------------


async def test_create_type_accepts_string_and_refuses_number_and_datetime_unless_switched(
        sim, api):
    def body(name: str, kind: str) -> dict:
        return {"ActivityEventName": name, "Fields": [
            {"SchemaName": "mx_Custom_1", "DisplayName": "F", "DataType": kind}]}

    path = "ProspectActivity.svc/CreateType"
    assert (await api("POST", path, json=body("A", "String")))[0] == 200
    for kind in ("Number", "DateTime"):
        status, answer = await api("POST", path, json=body(f"B {kind}", kind))
        assert status == 500 and is_error(answer, "MXInvalidInputException")
        assert kind in answer["ExceptionMessage"]
    sim.configure(field_types="any")
    for kind in ("Number", "DateTime"):
        assert (await api("POST", path, json=body(f"C {kind}", kind)))[0] == 200


async def test_get_activity_setting_shows_fields_and_allow_attachments(sim, api):
    path = "ProspectActivity.svc/CreateType"
    fields = [{"SchemaName": "mx_Custom_1", "DisplayName": "Key", "DataType": "String"}]
    _, with_files = await api("POST", path, json={"ActivityEventName": "Chats",
                                                  "AllowAttachments": 1, "Fields": fields})
    _, without = await api("POST", path, json={"ActivityEventName": "Calls"})
    setting = "ProspectActivity.svc/CustomActivity/GetActivitySetting"
    status, first = await api("GET", setting, params={"code": with_files["Message"]["Id"]})
    assert status == 200 and set(first) == {"ID", "Name", "DisplayName", "Fields"}  # the doc
    sim.configure(activity_setting="attachments_key")
    status, first = await api("GET", setting, params={"code": with_files["Message"]["Id"]})
    _, second = await api("GET", setting, params={"code": without["Message"]["Id"]})
    assert status == 200 and first["Name"] == "Chats" and first["AllowAttachments"] == 1
    assert [f["SchemaName"] for f in first["Fields"]] == ["mx_Custom_1"]
    assert second["AllowAttachments"] == 0 and second["Fields"] == []


# --- Retrieve -----------------------------------------------------------------------------


async def test_retrieve_items_have_the_live_shape_with_custom_fields_in_activity_fields(
        sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    fields = [{"SchemaName": "mx_Custom_1", "Value": "key-1"}]
    _, posted = await post_activity(api, lead, event, "hello", ActivityDateTime=WHEN,
                                    Fields=fields)
    _, body = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead})
    [row] = body["ProspectActivities"]
    assert (row["Id"], row["EventCode"], row["EventName"], row["RelatedProspectId"]) == (
        posted["Message"]["Id"], event, "WhatsApp Chats", lead)
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", row["CreatedOn"])
    assert all(set(item) == {"Key", "Value"} for item in row["Data"])
    assert "mx_Custom_1" not in {item["Key"] for item in row["Data"]}
    activity_fields = row["ActivityFields"]
    assert activity_fields["mx_Custom_1"] == "key-1"
    assert activity_fields["ActivityEvent_Note"] == "hello"
    assert activity_fields["CreatedBy"] == sim.store.user_id
    assert re.fullmatch(r"\d{1,2}/\d{1,2}/\d{4} \d{1,2}:\d{2}:\d{2} [AP]M",
                        activity_fields["CreatedOn"])
    assert isinstance(row["ProspectActivityAutoId"], int)


async def test_retrieve_shape_switch_moves_custom_fields_between_activity_fields_and_data(
        sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    await post_activity(api, lead, event, Fields=[{"SchemaName": "mx_Custom_1", "Value": "k"}])

    async def row() -> dict:
        _, body = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead})
        return body["ProspectActivities"][0]

    sim.configure(retrieve_shape="both")
    both = await row()
    assert both["ActivityFields"]["mx_Custom_1"] == "k"
    assert {"Key": "mx_Custom_1", "Value": "k"} in both["Data"]
    sim.configure(retrieve_shape="docs")
    docs = await row()
    assert "ActivityFields" not in docs and {"Key": "mx_Custom_1", "Value": "k"} in docs["Data"]


async def test_system_event_items_have_no_activity_fields(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    assert (await post_activity(api, lead, 21, "called"))[0] == 200  # inbound phone call
    _, body = await api("POST", "ProspectActivity.svc/Retrieve", params={"leadId": lead})
    [row] = body["ProspectActivities"]
    assert row["EventCode"] == 21 and "ActivityFields" not in row


# --- opportunities ----------------------------------------------------------------------


async def test_opportunities_of_lead_without_type_is_refused_unless_switched(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    opportunity = sim.add_opportunity(lead, name="Plan")
    status, body = await api("POST", OPPORTUNITIES, params={"leadId": lead})
    assert status == 500 and body["Status"] == "Error"
    assert body["ExceptionType"].startswith("MX") and "opportunityType" in body[
        "ExceptionMessage"]
    status, typed = await api("POST", OPPORTUNITIES,
                              params={"leadId": lead, "opportunityType": 12000})
    assert status == 200 and [r["OpportunityId"] for r in typed["List"]] == [opportunity]
    sim.configure(opportunity_type="optional")
    status, untyped = await api("POST", OPPORTUNITIES, params={"leadId": lead})
    assert status == 200 and untyped["RecordCount"] == 1


async def test_opportunity_items_are_flat_with_the_live_keys(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    opportunity = sim.add_opportunity(lead, name="Plan", status="Won")
    _, body = await api("POST", OPPORTUNITIES, params={"leadId": lead, "opportunityType": 12000})
    [row] = body["List"]
    assert (row["OpportunityId"], row["RelatedProspectId"], row["Status"], row["Owner"],
            row["mx_Custom_1"]) == (opportunity, lead, "Won", sim.store.user_id, "Plan")
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}", row["ModifiedOn"])
    assert "Fields" not in row


async def test_activities_of_opportunity_carry_custom_fields_only_when_named(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    opportunity = sim.add_opportunity(lead, name="Plan")
    event = await make_type(api)
    await post_activity(api, lead, event, RelatedOpportunityId=opportunity,
                        Fields=[{"SchemaName": "mx_Custom_1", "Value": "k"},
                                {"SchemaName": "mx_Custom_2", "Value": "3"}])
    path = "OpportunityManagement.svc/GetActivitiesOfOpportunity"
    params = {"opportunityId": opportunity}
    _, plain = await api("POST", path, params=params)
    _, named = await api("POST", path, params=params,
                         json={"Columns": {"Include_CSV": "mx_Custom_1"}})
    assert "mx_Custom_1" not in plain["List"][0] and "mx_Custom_2" not in plain["List"][0]
    assert named["List"][0]["mx_Custom_1"] == "k" and "mx_Custom_2" not in named["List"][0]


async def test_an_opportunity_refusing_posts_refuses_only_its_own(sim, api):
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    closed, open_ = sim.add_opportunity(lead, name="Old"), sim.add_opportunity(lead, name="New")
    sim.refuse_posts(closed, "Opportunity is closed")
    event = await make_type(api)
    status, body = await post_activity(api, lead, event, RelatedOpportunityId=closed)
    assert status == 500 and is_error(body, "MXInvalidInputException")
    assert "Opportunity is closed" in body["ExceptionMessage"]
    assert (await post_activity(api, lead, event, RelatedOpportunityId=open_))[0] == 200
    assert (await post_activity(api, lead, event))[0] == 200
    with pytest.raises(ValueError):
        sim.refuse_posts("no-such-opportunity")


# --- bodies -------------------------------------------------------------------------------


async def test_malformed_json_is_500_with_a_non_mx_type_or_400_when_switched(sim, http):
    url = f"{sim.base_url}/v2/LeadManagement.svc/Lead.Create"
    headers = {**KEYS, "Content-Type": "application/json"}
    for setting, expected in (("500", 500), ("400", 400)):
        sim.configure(bad_json=setting)
        async with http.post(url, data="[{", headers=headers) as response:
            body = await response.json(content_type=None)
        assert response.status == expected and body["Status"] == "Error"
        assert not body["ExceptionType"].startswith("MX")
    assert sim.store.leads == {}


async def test_a_body_not_in_utf8_gets_400(sim, http):
    url = f"{sim.base_url}/v2/LeadManagement.svc/Lead.Create"
    headers = {**KEYS, "Content-Type": "application/json"}
    data = '[{"Attribute":"FirstName","Value":"José"}]'.encode("latin-1")
    async with http.post(url, data=data, headers=headers) as response:
        assert response.status == 400
        assert (await response.json(content_type=None))["Status"] == "Error"
    utf8 = data.decode("latin-1").encode()
    async with http.post(url, data=utf8, headers=headers) as response:
        assert response.status == 200
    assert [lead["FirstName"] for lead in sim.store.leads.values()] == ["José"]


async def test_cli_flags_and_admin_config_set_every_switch(sim, http):
    from click.testing import CliRunner

    from plugins.leadsquared.cli import simulator as command

    help_text = CliRunner().invoke(command, ["--help"]).output
    for name, choices in SWITCHES.items():
        assert f"--{name.replace('_', '-')}" in help_text and choices[-1] in help_text
        async with http.post(f"{sim.base_url}/_sim/config", json={name: choices[-1]}) as r:
            assert r.status == 200 and (await r.json())[name] == choices[-1]
        async with http.post(f"{sim.base_url}/_sim/config", json={name: "nonsense"}) as r:
            assert r.status == 400


# --- round 3: the documented samples first, each other reading behind a switch -------------


async def test_user_by_access_key_has_the_documented_sample_keys_with_email_null(sim, api):
    status, user = await api("GET", "Authentication.svc/UserByAccessKey.Get")
    assert status == 200 and user["EmailAddress"] is None and "@" in user["PassPhrase"]
    assert {"Id", "Name", "Role", "TimeZone", "DefaultCountryCode", "MobileServiceURLs",
            "LSQCommonServiceURLs"} <= set(user)
    sim.configure(user_fields="email")
    _, filled = await api("GET", "Authentication.svc/UserByAccessKey.Get")
    assert filled["EmailAddress"] == user["PassPhrase"]


async def test_a_user_looked_up_by_id_has_the_email_and_an_unknown_id_answers_empty(sim, api):
    _, user = await api("GET", "Authentication.svc/UserByAccessKey.Get")
    path = "UserManagement.svc/User/Retrieve/ByUserId"
    status, found = await api("GET", path, params={"userId": user["Id"]})
    assert status == 200 and found[0]["UserId"] == user["Id"]
    assert found[0]["EmailAddress"] == user["PassPhrase"]
    assert await api("GET", path, params={"userId": "no-such-user"}) == (200, [])


async def test_opportunity_types_are_listed_with_activity_types_unless_switched(sim, api):
    _, listed = await api("GET", "ProspectActivity.svc/ActivityTypes.Get")
    assert 12000 in [t["ActivityEvent"] for t in listed]
    sim.configure(opportunity_types="absent")
    _, absent = await api("GET", "ProspectActivity.svc/ActivityTypes.Get")
    assert [t["ActivityEvent"] for t in absent] == [21, 22]  # activity types only


async def test_only_email_and_phone_are_unique_unless_mobile_is_switched_on(sim, api):
    path = "LeadManagement.svc/Lead.Create"

    def lead(**attrs: str) -> list[dict]:
        return [{"Attribute": k, "Value": v} for k, v in {"FirstName": "A", **attrs}.items()]

    assert (await api("POST", path, json=lead(Mobile="+91-9876543210")))[0] == 200
    assert (await api("POST", path, json=lead(Mobile="+91-9876543210")))[0] == 200  # again
    assert (await api("POST", path, json=lead(Phone="+91-9811122233")))[0] == 200
    status, body = await api("POST", path, json=lead(Phone="+91 98111 22233"))
    assert status == 500 and is_error(body, "MXDuplicateEntryException")
    assert "Phone" in body["ExceptionMessage"]
    sim.configure(unique_fields="mobile_too")
    status, body = await api("POST", path, json=lead(Mobile="+91-9876543210"))
    assert status == 500 and is_error(body, "MXDuplicateEntryException")


async def test_recently_modified_sorts_as_asked_unless_sorting_is_ignored(sim, api):
    ids = [sim.add_lead(FirstName=f"L{i}", Phone=f"900000000{i}") for i in range(3)]
    for lead, when in zip(ids, ("2025-01-02", "2025-01-03", "2025-01-01"), strict=True):
        sim.store.leads[lead]["ModifiedOn"] = f"{when} 10:00:00"

    async def order(column: str, direction: str) -> list[str]:
        _, body = await api("POST", "LeadManagement.svc/Leads.RecentlyModified", json={
            "Parameter": {"FromDate": "2000-01-01 00:00:00", "ToDate": "2100-01-01 00:00:00"},
            "Columns": {"Include_CSV": "ProspectID"},
            "Paging": {"PageIndex": 1, "PageSize": 10},
            "Sorting": {"ColumnName": column, "Direction": direction}})
        return [lead["LeadPropertyList"][0]["Value"] for lead in body["Leads"]]

    assert await order("ModifiedOn", "1") == [ids[1], ids[0], ids[2]]  # most recent first
    assert await order("ModifiedOn", "0") == [ids[2], ids[0], ids[1]]
    assert await order("ProspectAutoId", "1") == ids[::-1]
    sim.configure(recent_sort="ignored")
    assert await order("ModifiedOn", "1") == ids[::-1] == await order("ProspectAutoId", "1")
    assert await order("ModifiedOn", "0") == ids


async def test_the_upload_answer_names_the_s3_url_or_only_the_file_when_switched(sim, http):
    form = aiohttp.FormData({"FileType": "1", "AccessKey": ACCESS, "SecretKey": SECRET,
                             "FileStorageType": "0", "EnableResize": "false"})
    form.add_field("uploadFiles", b"bytes", filename="a.jpg", content_type="image/jpeg")
    async with http.post(f"{sim.base_url}/File/Upload", data=form) as response:
        answer = await response.json()
    assert answer["s3FilePath"].startswith(sim.base_url) and answer["uploadedFile"]
    sim.configure(upload_answer="name_only")
    form = aiohttp.FormData({"FileType": "1", "AccessKey": ACCESS, "SecretKey": SECRET})
    form.add_field("uploadFiles", b"bytes", filename="a.jpg", content_type="image/jpeg")
    async with http.post(f"{sim.base_url}/File/Upload", data=form) as response:
        assert set(await response.json()) == {"Status", "uploadedFile"}


async def test_capped_paging_answers_at_most_25_rows_a_call_and_the_total(sim, api):
    """Switch paging=capped: Retrieve and the opportunity lists serve 25 rows whatever is
    asked, RecordCount the total; PageIndex counts pages of 25."""
    lead = sim.add_lead(FirstName="Asha", Phone="+91-9876543210")
    event = await make_type(api)
    for minute in range(30):
        await post_activity(api, lead, event, f"n{minute}",
                            ActivityDateTime=f"2025-01-31 09:{minute:02d}:00")
        sim.add_opportunity(lead, name=f"Deal {minute}")
    sim.configure(paging="capped")
    retrieve = "ProspectActivity.svc/Retrieve"
    asked = {"Paging": {"Offset": "0", "RowCount": "100"}}
    _, first = await api("POST", retrieve, params={"leadId": lead}, json=asked)
    _, rest = await api("POST", retrieve, params={"leadId": lead},
                        json={"Paging": {"Offset": "25", "RowCount": "100"}})
    assert (first["RecordCount"], len(first["ProspectActivities"]),
            len(rest["ProspectActivities"])) == (30, 25, 5)
    query = {"leadId": lead, "opportunityType": 12000}
    _, page1 = await api("POST", OPPORTUNITIES, params=query,
                         json={"Paging": {"PageIndex": 1, "PageSize": 100}})
    _, page2 = await api("POST", OPPORTUNITIES, params=query,
                         json={"Paging": {"PageIndex": 2, "PageSize": 100}})
    assert (page1["RecordCount"], len(page1["List"]), len(page2["List"])) == (30, 25, 5)
    ids = {row["OpportunityId"] for row in page1["List"] + page2["List"]}
    assert len(ids) == 30
    sim.configure(paging="honoured")
    _, whole = await api("POST", retrieve, params={"leadId": lead}, json=asked)
    assert len(whole["ProspectActivities"]) == 30


async def test_leads_get_on_a_field_no_lead_holds_answers_none_or_every_lead_when_switched(
        sim, api):
    sim.add_lead(FirstName="Ravi", Mobile="+91-9123456780")
    sheena = sim.add_lead(FirstName="Sheena", mx_WhatsApp_User_ID="US.1")
    path = "LeadManagement.svc/Leads.Get"

    def body(name: str) -> dict:
        return {"Parameter": {"LookupName": name, "LookupValue": "US.1", "SqlOperator": "="}}

    _, none = await api("POST", path, json=body("mx_WhatsApp_UserID"))
    assert none == []
    sim.configure(unknown_field="ignored")
    _, every = await api("POST", path, json=body("mx_WhatsApp_UserID"))
    assert [lead["FirstName"] for lead in every] == ["Ravi", "Sheena"]
    _, known = await api("POST", path, json=body("mx_WhatsApp_User_ID"))  # a field held
    assert [lead["ProspectID"] for lead in known] == [sheena]
