"""Media files into LeadSquared (issue 17, part 4): File Upload on the files host and
Attachment/Add on the activity that names the file; each attachment a target of its own."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import suppress

import httpx
import pytest

from bridge.buffer import Buffer
from bridge.sync import SinkRunner
from plugins.leadsquared.activity_type import FIELD_DEFINITIONS
from plugins.leadsquared.config import files_base
from tests.backends import query
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for
from tests.whatsapp.test_media import PHONE_ID, media_message

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")


@pytest.mark.parametrize(("api", "override", "files"), [
    ("https://api-in21.leadsquared.com/v2/", None, "https://files-in21.leadsquared.com"),
    ("https://api-us11.leadsquared.com", None, "https://files-us11.leadsquared.com"),
    ("https://api.leadsquared.com", None, "https://files.leadsquared.com"),
    ("http://127.0.0.1:8090", None, "http://127.0.0.1:8090"),
    ("https://lsq-proxy.example.com/", None, "https://lsq-proxy.example.com"),
    ("https://api-in21.leadsquared.com", "https://files.example", "https://files.example"),
])
def test_the_files_host_follows_the_api_hosts_region(api, override, files):
    assert files_base(api, override) == files


# --- the simulator's File Upload and Attachment/Add (rows F1-F3) -------------------------

async def sim_upload(sim, data: bytes, *, secret: str | None = None, file_type: str = "1",
                     name: str = "photo.jpg") -> httpx.Response:
    form = {"FileType": file_type, "AccessKey": sim.access_key,
            "SecretKey": sim.secret_key if secret is None else secret,
            "FileStorageType": "0", "EnableResize": "false"}
    async with httpx.AsyncClient() as client:
        return await client.post(f"{sim.base_url}/File/Upload", data=form,
                                 files={"uploadFiles": (name, data, "image/jpeg")})


async def sim_api(sim, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{sim.base_url}/v2/{path}", json=body, headers={
            "x-LSQ-AccessKey": sim.access_key, "x-LSQ-SecretKey": sim.secret_key})


def new_type(sim, attachments: bool) -> int:
    return sim.store.create_type({"ActivityEventName": f"Chats {attachments}",
                                  "AllowAttachments": int(attachments)})


def post_on(sim, lead: str, event: int) -> str:
    return sim.store.post_activity({"RelatedProspectId": lead, "ActivityEvent": event,
                                    "ActivityNote": "n"}, 2000).id


async def test_file_upload_is_multipart_with_keys_in_the_form_and_names_the_stored_file(sim):
    data = os.urandom(5000)
    answer = await sim_upload(sim, data)
    assert answer.status_code == 200
    name, url = answer.json()["uploadedFile"], answer.json()["s3FilePath"]
    assert url.startswith(sim.base_url) and url.endswith(name)  # the S3 URL (§8, §9)
    async with httpx.AsyncClient() as client:
        assert (await client.get(url)).content == data
    assert (await sim_upload(sim, data, secret="wrong")).status_code == 401
    assert (await sim_upload(sim, data, file_type="9")).json()["Status"] == "Error"
    async with httpx.AsyncClient() as client:
        not_form = await client.post(f"{sim.base_url}/File/Upload", json={"uploadFiles": "x"})
    assert not_form.status_code == 400 and "multipart/form-data" in not_form.text


async def test_attachment_add_attaches_an_uploaded_file_only_where_the_type_allows(sim):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    allowed, refused = post_on(sim, lead, new_type(sim, True)), post_on(sim, lead,
                                                                         new_type(sim, False))
    data = os.urandom(3000)
    uploaded = (await sim_upload(sim, data)).json()
    url = uploaded["s3FilePath"]
    body = {"AttachmentName": "photo.jpg", "Description": "d", "AttachmentFile": url}
    ok = await sim_api(sim, "ProspectActivity.svc/Attachment/Add",
                       {**body, "ProspectActivityId": allowed})
    assert ok.status_code == 200 and ok.json()["Message"]["Id"]
    (attached,) = sim.attachments(allowed)
    assert attached["Data"] == data and attached["AttachmentName"] == "photo.jpg"
    no = await sim_api(sim, "ProspectActivity.svc/Attachment/Add",
                       {**body, "ProspectActivityId": refused})
    assert no.json()["ExceptionType"] == "MXInvalidInputException"
    assert "not allowed" in no.json()["ExceptionMessage"] and sim.attachments(refused) == []
    for stranger in ("https://elsewhere/x.jpg",  # a file of no upload, a URL built by hand
                     f"{sim.base_url}/File/{uploaded['uploadedFile']}",
                     uploaded["uploadedFile"]):
        answer = await sim_api(sim, "ProspectActivity.svc/Attachment/Add", {
            **body, "ProspectActivityId": allowed, "AttachmentFile": stranger})
        assert answer.json()["Status"] == "Error" and len(sim.attachments(allowed)) == 1


async def test_the_lead_page_shows_an_activitys_attachments(sim):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    activity = post_on(sim, lead, new_type(sim, True))
    url = (await sim_upload(sim, b"img")).json()["s3FilePath"]
    await sim_api(sim, "ProspectActivity.svc/Attachment/Add", {
        "ProspectActivityId": activity, "AttachmentName": "bill.jpg", "AttachmentFile": url})
    async with httpx.AsyncClient() as client:
        page = await client.get(f"{sim.base_url}/LeadManagement/LeadDetails",
                                params={"LeadID": lead})
    assert "bill.jpg" in page.text and f"<img src='{url}'" in page.text


# --- the sink ---------------------------------------------------------------------------

async def fetch(buffer: Buffer, tmp_path, data: bytes, mime: str = "image/jpeg") -> None:
    """Stand in for the media runner: the pending job's file stored and recorded. As the
    runner, it claims again while a sink's commit holds the job's row (PostgreSQL: the
    claim skips locked rows)."""
    (job,) = await wait_until(lambda: buffer.media_claim("whatsapp", 10, 60), timeout=5)
    sha = hashlib.sha256(data).hexdigest()
    path = tmp_path / sha
    path.write_bytes(data)
    await buffer.media_fetched(job, str(path), len(data), sha, mime)


def calls(sim, endpoint: str) -> int:
    """Calls to `endpoint`; for Create, bulk rows on the lead count too (issue 15: lead
    activities go out in bulk calls)."""
    rows = sum(len(c.body) for c in sim.calls if endpoint == "ProspectActivity.svc/Create"
               and c.path.endswith("Bulk/CustomActivity/Add/ByLeadId")
               and isinstance(c.body, list))
    return rows + sum(1 for c in sim.calls if c.path.endswith(endpoint))


def activity_posts_arrived(sim) -> int:
    """Activity posts (single or bulk) that reached the simulator, answered or not."""
    return sum(1 for c in sim.calls if c.path.endswith(
        ("ProspectActivity.svc/Create", "Bulk/CustomActivity/Add/ByLeadId")))


@pytest.fixture
async def media_buffer(buffer):
    buffer.media_sources = {"whatsapp": None}
    return buffer


async def test_a_fetched_file_is_uploaded_and_attached_to_the_activity_naming_it_once(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    photo = os.urandom(30_000)
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, photo)
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))
    (activity,) = sim.activities(lead)
    (attached,) = sim.attachments(activity["Id"])
    assert attached["Data"] == photo
    assert f"[file {attached['AttachmentName']}, 29.3 KB]" in activity["ActivityNote"]
    async with running(media_buffer, [sink_for(sim)]):  # a second run sends nothing again
        await wait_until(lambda: settled(media_buffer))
    assert calls(sim, "/File/Upload") == calls(sim, "Attachment/Add") == 1
    assert len(sim.attachments(activity["Id"])) == 1


async def test_a_file_fetched_after_its_text_was_synced_follows_to_the_same_activity(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    # the file's message is not the first of its part: alone, it would render a new part key
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(
        2, "m-1", kind="document", filename="bill.pdf")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text does not wait for the file
        (activity,) = sim.activities(lead)
        assert "[file bill.pdf follows]" in activity["ActivityNote"]
        assert sim.attachments(activity["Id"]) == [] and await media_buffer.dead_letters() == []
        assert await media_buffer.dead_targets() == []  # a file to come is no dead letter
        (state,) = await media_buffer.sinks()
        assert (state["dead_targets"], state["failing_targets"]) == (0, 0)
        pdf = b"%PDF-1.4\n" + os.urandom(10_000)
        await fetch(media_buffer, tmp_path, pdf, "application/pdf")
        await wait_until(lambda: sim.attachments(activity["Id"]))
        await wait_until(lambda: settled(media_buffer))
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [pdf]
    assert sim.attachments(activity["Id"])[0]["AttachmentName"] == "bill.pdf"
    assert calls(sim, "ProspectActivity.svc/Create") == 1  # the text was never posted again
    assert await media_buffer.dead_targets() == []


async def test_a_file_follows_to_an_activity_found_by_its_key_after_a_lost_answer(
        sim, media_buffer, tmp_path):
    """The text's post landed but the bridge died before its answer; the retry finds it by
    its key (not
    posted again) and the file, fetched later, follows to that activity. Found by the crash
    loop: the key found was not put in the ledger, so the follow-up did not know the part
    it belonged to and posted the photo's line alone as a second activity."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await media_buffer.install_sinks(["leadsquared"])
    sim.configure(write_hold=1.0)  # the post reaches the account a second late
    # short call timeouts: the retry waits until a write of the killed drain can no longer
    # land (settle_after_lease: here 5 s after its lease's end), not the default's minutes
    quick = {"lease": 3.0, "deliver_timeout": 1.5, "timeout": 2.0}
    sink = sink_for(sim, **quick)
    drain = asyncio.create_task(SinkRunner(sink, media_buffer).run(asyncio.Event()))
    # the post has arrived (a bulk call's rows are counted only once the hold ends: waiting
    # for those raced the answer, and the drain usually recorded it before the cancel)
    await wait_until(lambda: activity_posts_arrived(sim))
    drain.cancel()  # killed before the answer: nothing recorded
    with suppress(asyncio.CancelledError):
        await drain
    await sink.close()
    (batch,) = await query(media_buffer, "SELECT state, uncertain FROM batches")
    assert batch == ("leased", 0)  # the answer never reached the buffer
    await asyncio.sleep(3.1)  # the hold ends (the post lands); the lease runs out
    sim.configure(write_hold=0.0)
    async with running(media_buffer, [sink_for(sim, **quick)]):
        await wait_until(lambda: settled(media_buffer), timeout=30)
        (activity,) = sim.activities(lead)
        await fetch(media_buffer, tmp_path, b"photo bytes")
        await wait_until(lambda: sim.attachments(activity["Id"]))
        await wait_until(lambda: settled(media_buffer))
    assert [a["Id"] for a in sim.activities(lead)] == [activity["Id"]]
    assert len(sim.attachments(activity["Id"])) == 1
    assert calls(sim, "ProspectActivity.svc/Create") == 1


async def test_a_failing_attach_is_retried_alone_and_never_reposts_the_text(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, b"photo bytes")
    sim.break_endpoint("Add", 408)  # a gateway's page: the attach never reached the account
    async with running(media_buffer, [sink_for(sim, max_attempts=50,
                                               rate_limit="1000/0.05s")]):
        await wait_until(lambda: calls(sim, "Attachment/Add") >= 6)
        (activity,) = sim.activities(lead)  # the text landed meanwhile
        sim.mend_endpoint("Add")
        await wait_until(lambda: sim.attachments(activity["Id"]))
        await wait_until(lambda: settled(media_buffer))
    assert calls(sim, "ProspectActivity.svc/Create") == 1
    assert len(sim.attachments(activity["Id"])) == 1 and await media_buffer.dead_targets() == []


def type_without_attachments(sim) -> None:
    sim.store.create_type({"ActivityEventName": "WhatsApp Chats", "AllowAttachments": 0,
                           "Fields": [dict(f, IsMandatory=False, Sequence=i + 1)
                                      for i, f in enumerate(FIELD_DEFINITIONS)]})


async def test_a_type_without_attachments_keeps_the_file_in_the_bridge_and_says_so(
        sim, media_buffer, tmp_path):
    sim.configure(activity_setting="attachments_key")  # the account says AllowAttachments
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    type_without_attachments(sim)
    await media_buffer.append([media_message(1, "m-1")])
    await fetch(media_buffer, tmp_path, b"photo bytes")
    sink = sink_for(sim)
    async with running(media_buffer, [sink]):
        await wait_until(lambda: settled(media_buffer))
    (activity,) = sim.activities(lead)
    assert "held in the bridge" in activity["ActivityNote"]
    assert calls(sim, "/File/Upload") == calls(sim, "Attachment/Add") == 0
    assert "held in the bridge" in sink.describe()["attachments"]


async def test_a_type_that_does_not_say_whether_it_allows_attachments_is_tried_and_the_refusal_is_a_dead_target(  # noqa: E501
        sim, media_buffer, tmp_path):
    """The documented GetActivitySetting has no AllowAttachments: unknown counts as allowed,
    and Attachment/Add's refusal is the attachment's own dead letter; the text lands."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    type_without_attachments(sim)
    await media_buffer.append([media_message(1, "m-1")])
    await fetch(media_buffer, tmp_path, b"photo bytes")
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))
    (activity,) = sim.activities(lead)
    assert "held in the bridge" not in activity["ActivityNote"]
    assert calls(sim, "Attachment/Add") == 1 and sim.attachments(activity["Id"]) == []
    (dead,) = await media_buffer.dead_targets()
    assert dead["target"].startswith("attachment") and "not allowed" in dead["reason"]
    assert await media_buffer.dead_letters() == []


async def test_a_failing_attach_whose_type_stopped_allowing_attachments_is_a_dead_target(
        sim, media_buffer, tmp_path):
    """An attach retried (408) when someone turns Allow Attachments off on the type and the
    bridge restarts: the retry cannot attach, so the target is a dead target saying why (to
    requeue once the type allows them again), never left failing in a finished batch,
    counted and listed nowhere."""
    sim.configure(activity_setting="attachments_key")  # the account says AllowAttachments
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, b"photo bytes")
    sim.break_endpoint("Add", 408)
    async with running(media_buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: calls(sim, "Attachment/Add") >= 2)
    (activity,) = sim.activities(lead)
    sim.mend_endpoint("Add")
    for kind in sim.store.types.values():
        kind.allow_attachments = False
    async with running(media_buffer, [sink_for(sim, max_attempts=50)]):
        await wait_until(lambda: settled(media_buffer))
        await wait_until(lambda: settled(media_buffer))  # and a drain after that
    assert sim.attachments(activity["Id"]) == []
    assert calls(sim, "ProspectActivity.svc/Create") == 1
    (dead,) = await media_buffer.dead_targets()
    assert dead["target"].startswith("attachment ") and "allows attachments" in dead["reason"]
    (state,) = await media_buffer.sinks()
    assert (state["dead_targets"], state["failing_targets"]) == (1, 0)
    assert await media_buffer.dead_letters() == []


async def test_an_attach_whose_answer_is_lost_is_not_repeated(sim, media_buffer, tmp_path):
    """No documented read of an activity's attachments: an attach with an unknown outcome
    is a dead target saying so, never sent again by itself (a duplicate is the worse one)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([media_message(1, "m-1")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text, file still pending
        (activity,) = sim.activities(lead)
        sim.configure(drop_after_commit_rate=1.0)  # writes commit, their answers are lost
        await fetch(media_buffer, tmp_path, b"photo bytes")
        await wait_until(lambda: calls(sim, "Attachment/Add"))
        await wait_until(lambda: settled(media_buffer))
        await wait_until(lambda: settled(media_buffer))  # and a drain after that
    assert calls(sim, "Attachment/Add") == 1 and len(sim.attachments(activity["Id"])) == 1
    (dead,) = await media_buffer.dead_targets()
    assert dead["target"].startswith("attachment ") and "attach unconfirmed" in dead["reason"]


async def test_without_an_access_token_the_posted_line_says_why_and_nothing_is_uploaded(
        sim, buffer):
    from plugins.whatsapp.media import NO_TOKEN

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    buffer.media_sources = {"whatsapp": NO_TOKEN}  # as a source without a token queues them
    await buffer.append([media_message(1, "m-1")])
    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    (activity,) = sim.activities(lead)
    assert "[file not fetched: plugins.whatsapp.access_token is not set]" in activity[
        "ActivityNote"]
    assert calls(sim, "/File/Upload") == 0 and await buffer.dead_targets() == []


async def test_a_file_that_never_came_is_a_dead_target_and_follows_once_requeued(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([media_message(1, "m-1")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text; its file still to come
        (job,) = await media_buffer.media_claim("whatsapp", 10, 60)
        await media_buffer.media_failed(job, "Graph API: media gone (code 100)", None)
        (dead,) = await media_buffer.dead_targets()
        assert "the file never came: Graph API: media gone" in dead["reason"]
        assert await media_buffer.media_requeue() == 1  # `bridge dead-letter requeue --media`
        assert await media_buffer.dead_targets() == []  # waiting for its file again
        await fetch(media_buffer, tmp_path, b"photo, at last")
        (activity,) = sim.activities(lead)
        await wait_until(lambda: sim.attachments(activity["Id"]))
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [b"photo, at last"]
    assert calls(sim, "ProspectActivity.svc/Create") == 1


def test_dead_letter_requeue_media_fetches_dead_files_again(tmp_path):
    import asyncio

    from click.testing import CliRunner

    from bridge.cli import cli

    config = tmp_path / "config.yaml"
    config.write_text(f"buffer:\n  path: {tmp_path / 'b.db'}\nplugins: {{}}\n")

    async def seed(then) -> object:
        buffer = await Buffer.open(tmp_path / "b.db")
        buffer.media_sources = {"whatsapp": None}
        try:
            return await then(buffer)
        finally:
            await buffer.close()

    async def dead_job(buffer: Buffer) -> None:
        await buffer.append([media_message(1, "m-1")])
        (job,) = await buffer.media_claim("whatsapp", 10, 60)
        await buffer.media_failed(job, "gone", None)

    asyncio.run(seed(dead_job))
    out = CliRunner().invoke(cli, ["dead-letter", "requeue", "--media", "-c", str(config)])
    assert out.exit_code == 0 and "requeued 1 media file(s)" in out.output
    states = asyncio.run(seed(lambda b: query(b, "SELECT state FROM media")))
    assert states == [("pending",)]


async def test_a_file_over_the_files_hosts_limit_is_a_dead_target_naming_size_and_limit(
        sim, media_buffer, tmp_path):
    """The files host answers 413 for a file over its limit: the same file gets the same
    answer every time. Read as a gateway's one-off page, it was sent again (each time
    whole) on every try, and its dead letter blamed a gateway and named no size."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.configure(upload_limit=1 << 20)
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, os.urandom(3 << 20))
    async with running(media_buffer, [sink_for(sim, max_attempts=3)]):
        await wait_until(lambda: settled(media_buffer), timeout=60)
        await wait_until(media_buffer.dead_targets, timeout=60)
    (activity,) = sim.activities(lead)  # the text landed
    assert sim.attachments(activity["Id"]) == []
    assert calls(sim, "/File/Upload") == 1  # never sent again: the answer would not change
    (dead,) = await media_buffer.dead_targets()
    assert "413" in dead["reason"] and "too large" in dead["reason"]
    assert "3.0 MiB" in dead["reason"] and "1.0 MiB" in dead["reason"]  # size and limit
    assert "gateway" not in dead["reason"]
