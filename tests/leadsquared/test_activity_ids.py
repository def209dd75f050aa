"""An activity found by its idempotency key: its id read under every plausible name, and
one whose row names none still counts as landed (never posted twice) but is never sent to
LeadSquared as an id: a file for it is a dead target saying what happened and what to do.

The id's name in GetActivitiesOfOpportunity rows is not documented (reference §2e: "paged",
no sample); Retrieve documents `Id` (§2c, §8 [LIVE]). No simulator switch serves the other
names: only keys.activity_id reads them, checked here for each name on both reads, with the
rows served over HTTP by the simulator's garble_endpoint (docs row K13).
"""

from __future__ import annotations

import pytest

from plugins.leadsquared.activity_type import FIELDS
from plugins.leadsquared.api import NO_ACTIVITY_ID
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.keys import KeyCheck
from tests.backends import query
from tests.helpers import running, wait_until
from tests.leadsquared.test_attachments import calls, fetch
from tests.leadsquared.test_sink import chat, settled, sink_for
from tests.whatsapp.test_media import PHONE_ID, media_message

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")

KEY = FIELDS["key"]
EVENT = 201


@pytest.fixture
async def media_buffer(buffer):
    buffer.media_sources = {"whatsapp": None}
    return buffer


def on_lead(key: str, **ids) -> dict:
    """A Retrieve row as a live account shapes it (custom fields in ActivityFields)."""
    return {"EventCode": EVENT, "ActivityFields": {KEY: key}, **ids}


def on_deal(key: str, **ids) -> dict:
    """A GetActivitiesOfOpportunity row (flat, custom fields named in Columns)."""
    return {"ActivityEvent": EVENT, KEY: key, **ids}


@pytest.mark.parametrize(("ids", "expected"), [
    ({"Id": "act-1"}, "act-1"),  # Retrieve's documented name
    ({"ProspectActivityId": "act-1"}, "act-1"),  # bulk answers', Attachment/Add's
    ({"ActivityId": "act-1"}, "act-1"),  # Capture's (GUESS here)
    ({"ID": "act-1"}, "act-1"),  # GetActivityDetails' (GUESS here)
    ({"Id": None, "ProspectActivityId": "", "ActivityId": "act-1"}, "act-1"),
    ({}, NO_ACTIVITY_ID),  # the key, and no id under any name
    ({"Id": None, "ProspectActivityId": None}, NO_ACTIVITY_ID),
    ({"ProspectActivityAutoId": 17}, NO_ACTIVITY_ID),  # Retrieve's second id: not sent
])
async def test_a_key_check_reads_the_activity_id_under_each_name_and_none_is_no_id(
        sim, ids, expected):
    """Read as `str(row.get("Id") or row.get("ProspectActivityId"))`: a row under another
    name, or under none, recorded the activity id "None", which an attach then sent."""
    sim.garble_endpoint("Retrieve", {"RecordCount": 1, "ProspectActivities": [
        on_lead("chat:1", **ids)]})
    sim.garble_endpoint("GetActivitiesOfOpportunity", {"RecordCount": 1, "List": [
        on_deal("chat:1@deal", **ids)]})
    async with LeadSquaredClient(sim.base_url, sim.access_key, sim.secret_key,
                                 max_retries=0) as client:
        keys = KeyCheck(client, EVENT)
        assert await keys.on_lead("lead-1") == {"chat:1": expected}
        assert await keys.on_opportunity("deal-1") == {"chat:1@deal": expected}


async def test_a_duplicate_whose_row_names_no_id_leaves_the_other_rows_id(sim):
    """One key on two activities (an earlier duplicate): the one with an id is recorded."""
    sim.garble_endpoint("Retrieve", {"RecordCount": 3, "ProspectActivities": [
        on_lead("chat:1"), on_lead("chat:1", Id="act-2"), on_lead("chat:1")]})
    async with LeadSquaredClient(sim.base_url, sim.access_key, sim.secret_key,
                                 max_retries=0) as client:
        assert await KeyCheck(client, EVENT).on_lead("lead-1") == {"chat:1": "act-2"}


def without_ids(sim, lead: str) -> dict:
    """Retrieve's answer of the lead's activities as the simulator shapes them, each row
    without an id under any name."""
    rows = []
    for activity in sim.store.stored_activities(lead):
        row = activity.as_row()
        for name in ("Id", "ProspectActivityAutoId"):
            row.pop(name)
        rows.append(row)
    return {"RecordCount": len(rows), "ProspectActivities": rows}


async def ledger(buffer) -> dict[str, str]:
    return dict(await query(buffer, "SELECT key, external_id FROM ledger"))


async def test_a_photo_for_an_activity_found_without_an_id_is_a_dead_target_not_a_bogus_attach(
        sim, media_buffer, tmp_path):
    """The chat's post landed but its answer was lost; the retry finds the activity by its
    key in a read whose row names no id. The text is not posted again, and the photo is a
    dead target saying why and what to do: it was sent to Attachment/Add with
    ProspectActivityId "None" (the ledger said "None" too)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, b"photo bytes")
    sim.configure(drop_after_commit_rate=1.0)  # the post lands, its answer is lost
    sim.break_endpoint("Retrieve", 503)  # and the key check after it fails
    async with running(media_buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: sim.activities(lead) and calls(sim, "/Retrieve"))
    (posted,) = sim.activities(lead)
    sim.configure(drop_after_commit_rate=0.0)
    sim.mend_endpoint("Retrieve")
    sim.garble_endpoint("Retrieve", without_ids(sim, lead))
    async with running(media_buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: settled(media_buffer), timeout=30)
        await wait_until(media_buffer.dead_targets)
    assert [a["Id"] for a in sim.activities(lead)] == [posted["Id"]]  # never posted twice
    assert calls(sim, "/File/Upload") == calls(sim, "Attachment/Add") == 0
    (dead,) = await media_buffer.dead_targets()
    part = next(f["Value"] for f in posted["Fields"] if f["SchemaName"] == KEY)
    assert dead["target"].startswith("attachment ")
    assert "no activity id" in dead["reason"] and part in dead["reason"]
    assert "attach it by hand" in dead["reason"] and "requeue" in dead["reason"]
    assert await media_buffer.dead_letters() == []  # the text is delivered
    assert (await ledger(media_buffer))[part] == NO_ACTIVITY_ID
    sim.mend_endpoint("Retrieve")  # the reads name the id now: a requeue attaches it
    assert await media_buffer.requeue() == 1
    async with running(media_buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: sim.attachments(posted["Id"]), timeout=30)
        await wait_until(lambda: settled(media_buffer))
    assert [a["Data"] for a in sim.attachments(posted["Id"])] == [b"photo bytes"]
    assert len(sim.activities(lead)) == 1 and await media_buffer.dead_targets() == []


async def test_a_file_follows_to_the_id_its_post_answered_when_a_key_check_names_none(
        sim, media_buffer, tmp_path):
    """The ledger holds the id the post answered; a later key check whose rows name no id
    must not replace it with an unknown one (the file would be held for no reason)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text; its file to come
        (activity,) = sim.activities(lead)
        sim.garble_endpoint("Retrieve", without_ids(sim, lead))
        reads = calls(sim, "/Retrieve")
        await fetch(media_buffer, tmp_path, b"photo bytes")
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=30)
        await wait_until(lambda: settled(media_buffer))
    assert calls(sim, "/Retrieve") > reads  # the follow-up checked the keys
    assert len(sim.attachments(activity["Id"])) == 1
    assert await media_buffer.dead_targets() == []
    assert calls(sim, "ProspectActivity.svc/Create") == 1
