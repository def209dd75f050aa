"""The hand-over between the media fetch and the sink (issue 25, point 1).

A sink reads a file's state when it claims a batch and records "waiting for its file" when
it commits the outcomes; the media fetch re-opens waiting targets in its own commit. A fetch
that commits between the two used to find nothing waiting, and the wait recorded after it
was never re-opened: the photo was never attached, and nothing counted it. The seam here is
the sink's deliver(): the fetch commits after the sink read the state and before the core
commits what the sink said.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from contextlib import suppress

import pytest

from bridge import WAITING_FOR_FILE, Message, Outcome
from bridge.attention import attention
from bridge.buffer.delivery import Policy
from bridge.buffer.media import FETCHED as _FETCHED_ONLY
from bridge.sync import SinkRunner

# both engines here (tests/leadsquared/conftest.py gives this package SQLite only)
from tests.conftest import buffer_target  # noqa: F401
from tests.helpers import running, wait_until
from tests.leadsquared.test_attachments import calls, fetch
from tests.leadsquared.test_sink import chat, settled, sink_for
from tests.whatsapp.test_media import PHONE_ID, media_message

pytestmark = pytest.mark.filterwarnings("ignore::ResourceWarning")




@pytest.fixture
async def media_buffer(buffer):
    buffer.media_sources = {"whatsapp": None}
    return buffer


POLICY = Policy(50, lambda n: 0, 0)  # retries due at once
# the sink's call timeout where a drain is killed mid-delivery: a write it had in flight
# may land until 3 x timeout after its send, and the retry waits that out (adv36)
SETTLE = 1.5  # over the 1 s write_hold these tests use: a held write is not timed out


async def later_note_retries(buffer, why: str = f"{WAITING_FOR_FILE}: it follows once "
                             "fetched") -> tuple[Message, Message, str]:
    """One batch, two notes: the photo's note (photo + a text) landed as "activity-1" with
    its file target dead for `why`; the later note's post failed, so the batch waits to
    retry. Returns (photo, later message, the photo note's key)."""
    await buffer.install_sinks(["leadsquared"])
    await buffer.append([media_message(1, "m-1"), *(chat(n, account=PHONE_ID) for n in (2, 3))])
    (claim,) = await buffer.claim("leadsquared", 10, 60)
    photo, _, later = claim.messages
    part = f"{claim.batch.key}:{photo.provider_id}:0"
    claim.batch.remember(part, "activity-1")
    claim.batch.fail_target(f"{part}#file{photo.id}", "attachment", why, [photo.id], 50,
                            final=True)
    await buffer.complete(claim, [Outcome.delivered(), Outcome.delivered(),
                                  Outcome.retry("LeadSquared transient: 503")], POLICY)
    return photo, later, part


async def attached_once(sim, buffer, activity, photo: bytes) -> None:
    """The activity holds the photo, posted once with its text once; no dead target."""
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [photo]
    assert calls(sim, "ProspectActivity.svc/Create") == 1  # the text once
    assert calls(sim, "Attachment/Add") == 1
    assert await buffer.dead_targets() == []


def fetch_during_delivery(sink, then):
    """Wrap the sink's deliver(): once, after it decided, run `then` (the fetch's commit)
    before the core records the outcomes."""
    real, done = sink.deliver, []

    async def deliver(batch):
        outcomes = await real(batch)
        if not done:
            done.append(batch.key)
            await then()
        return outcomes

    sink.deliver = deliver
    return done


async def test_a_file_fetched_between_the_sinks_read_and_its_commit_is_still_attached(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    photo = os.urandom(20_000)
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    sink = sink_for(sim)
    seen = fetch_during_delivery(sink, lambda: fetch(media_buffer, tmp_path, photo))
    async with running(media_buffer, [sink]):
        await wait_until(lambda: seen)
        (activity,) = await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)
        await wait_until(lambda: settled(media_buffer))
    await attached_once(sim, media_buffer, activity, photo)


async def test_a_file_that_died_between_the_sinks_read_and_its_commit_says_why(
        sim, media_buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])

    async def dies() -> None:
        (job,) = await media_buffer.media_claim("whatsapp", 10, 60)
        await media_buffer.media_failed(job, "Graph API: media gone (code 100)", None)

    sink = sink_for(sim)
    seen = fetch_during_delivery(sink, dies)
    async with running(media_buffer, [sink]):
        await wait_until(lambda: seen)
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(media_buffer))
    (dead,) = await media_buffer.dead_targets()
    assert "the file never came: Graph API: media gone" in dead["reason"]


async def test_a_target_still_waiting_for_a_stored_file_is_overdue_at_once(
        sim, media_buffer, tmp_path):
    """Whatever leaves it so, a wait for a file that is already stored is overdue now, not
    after OVERDUE_FILE (15 minutes): the status page counts it, and /metrics exports the count."""
    from bridge.metrics import Metrics

    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text; the file to come
    sinks = await media_buffer.sinks()
    assert (await attention(media_buffer, sinks, "leadsquared"))["counts"]["overdue"] == 0
    # a file stored behind the wait's back (as the race above did): no re-open
    (job,) = await media_buffer.media_claim("whatsapp", 10, 60)
    path = tmp_path / "f"
    path.write_bytes(b"x")
    await media_buffer.write(lambda db: db.run(_FETCHED_ONLY, message_id=job.message_id,
                                               path=str(path), size=1, sha256="ab" * 32,
                                               mime_type=None, now=time.time()))
    found = await attention(media_buffer, sinks, "leadsquared")
    assert found["counts"]["overdue"] == 1 and len(found["overdue"]) == 1
    metrics = Metrics(process=False)
    body, _ = await metrics.render(media_buffer)
    assert 'chatbridge_overdue_attachments{sink="leadsquared"} 1.0' in body.decode()



async def test_an_attach_that_landed_is_not_repeated_after_a_crash_later_in_its_delivery(
        sim, media_buffer, tmp_path):
    """Two photos in one chat window: the first is attached, and the delivery is killed
    (its task cancelled: nothing more of it runs, as with SIGKILL) while the second uploads.
    The first attach is recorded as it lands, so the retry attaches only the second."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    first, second = os.urandom(5000), os.urandom(6000)
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1"),
                               media_message(3, "m-2")])
    for data in (first, second):
        (job,) = await media_buffer.media_claim("whatsapp", 1, 60)
        path = tmp_path / f"file-{job.message_id}"
        path.write_bytes(data)
        await media_buffer.media_fetched(job, str(path), len(data),
                                         hashlib.sha256(data).hexdigest(), "image/jpeg")
    sim.configure(latency=0.3)  # every call, the second upload too, takes 0.3 s
    await media_buffer.install_sinks(["leadsquared"])
    sink = sink_for(sim, lease=1.0, timeout=SETTLE)
    drain = asyncio.create_task(SinkRunner(sink, media_buffer).run(asyncio.Event()))
    (activity,) = await wait_until(lambda: sim.activities(lead))
    await wait_until(lambda: sim.attachments(activity["Id"]))
    # its answer recorded (the ledger): a kill between the two is the window attachments.py
    # leaves open (it attaches again), which cancelling at once hit now and then (adv25)
    await wait_until(lambda: _file_keys(media_buffer))
    drain.cancel()  # killed mid-delivery: its outcomes are never committed
    with suppress(asyncio.CancelledError):
        await drain
    await sink.close()
    assert len(sim.attachments(activity["Id"])) == 1
    sim.configure(latency=0.0)
    await asyncio.sleep(1.1)  # the killed drain's lease runs out (then a write it had in
    # flight may land for 3 x timeout: its retry waits that long)
    async with running(media_buffer, [sink_for(sim, lease=1.0, timeout=SETTLE)]):
        await wait_until(lambda: len(sim.attachments(activity["Id"])) >= 2)
        await wait_until(lambda: settled(media_buffer))
    assert sorted(a["Data"] for a in sim.attachments(activity["Id"])) == sorted([first, second])
    assert len(sim.activities(lead)) == 1


async def _file_keys(buffer) -> list:
    """The attaches recorded in the ledger."""
    from tests.backends import rows

    return await rows(buffer, "SELECT key FROM ledger WHERE key LIKE '%#file%'")


async def test_a_file_stored_while_its_message_retries_for_another_target_follows(
        sim, media_buffer, tmp_path):
    """The chat's activity is on the lead, its opportunity keeps failing (the message stays
    pending, retried): a file stored meanwhile re-opens its wait all the same, and the
    next retry attaches it (the wait used to stay dead: no delivered message to re-open)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    flaky = sim.add_opportunity(lead, "Flaky")
    sim.refuse_posts(flaky, "down", transient=True)
    # the photo first: its part's key names it (re-rendered without it, the key changes)
    await media_buffer.append([media_message(1, "m-1"), chat(2, account=PHONE_ID)])
    photo = os.urandom(8000)
    async with running(media_buffer, [sink_for(sim, max_attempts=500,
                                               rate_limit="1000/0.05s")]):
        (activity,) = await wait_until(lambda: [a for a in sim.activities(lead)
                                                if a["RelatedOpportunityId"] is None])
        await wait_until(lambda: calls(sim, "ProspectActivity.svc/Create") >= 3)
        assert sim.attachments(activity["Id"]) == []
        await fetch(media_buffer, tmp_path, photo)
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)
        await wait_until(lambda: calls(sim, "ProspectActivity.svc/Create") >= 8)
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [photo]
    # the window is posted once on the lead: the retries re-post the same part (its key)
    assert [a["Id"] for a in sim.activities(lead) if a["RelatedOpportunityId"] is None] == [
        activity["Id"]]


async def test_an_attach_cut_off_before_its_answer_is_never_sent_twice(
        sim, media_buffer, tmp_path):
    """The drain is killed while Attachment/Add is on its way, and the CRM commits it late
    (write_hold): the bridge recorded the attach before sending it, so the retry does not
    send it again; it is a dead target saying it may be attached (no API can tell)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, os.urandom(4000))
    await media_buffer.install_sinks(["leadsquared"])
    sink = sink_for(sim, lease=6.0, timeout=SETTLE)
    # every write reaches the account a second late, the attach too: set before the drain
    # starts, or a fast drain sends the attach before the hold (seen: the test raced)
    sim.configure(write_hold=1.0)
    drain = asyncio.create_task(SinkRunner(sink, media_buffer).run(asyncio.Event()))
    (activity,) = await wait_until(lambda: sim.activities(lead))
    await wait_until(lambda: calls(sim, "Attachment/Add"))
    drain.cancel()  # killed before the answer
    with suppress(asyncio.CancelledError):
        await drain
    await sink.close()
    await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)  # it landed
    sim.configure(write_hold=0.0)
    await asyncio.sleep(6.1)  # the killed drain's lease runs out
    async with running(media_buffer, [sink_for(sim, lease=1.0, timeout=SETTLE)]):
        await wait_until(lambda: media_buffer.dead_targets())
        await wait_until(lambda: settled(media_buffer))
    assert len(sim.attachments(activity["Id"])) == 1 and calls(sim, "Attachment/Add") == 1
    (dead,) = await media_buffer.dead_targets()
    assert "attach unconfirmed: the bridge stopped" in dead["reason"]


async def test_a_window_killed_mid_attach_while_it_retries_is_not_posted_again(
        sim, media_buffer, tmp_path):
    """The window (photo first) is on the lead, its opportunity keeps failing (retried);
    the file comes, and the retry is killed while its attach is on its way. The next retry
    re-posts the same window (its key: found, not posted), never the window without the
    photo under a new key; the cut-off attach is a dead target, never sent twice."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    flaky = sim.add_opportunity(lead, "Flaky")
    sim.refuse_posts(flaky, "down", transient=True)
    await media_buffer.append([media_message(1, "m-1"), chat(2, account=PHONE_ID)])
    await media_buffer.install_sinks(["leadsquared"])
    sink = sink_for(sim, lease=3.0, max_attempts=500, timeout=SETTLE)
    drain = asyncio.create_task(SinkRunner(sink, media_buffer).run(asyncio.Event()))
    (activity,) = await wait_until(lambda: [a for a in sim.activities(lead)
                                            if a["RelatedOpportunityId"] is None])
    await wait_until(lambda: calls(sim, "ProspectActivity.svc/Create") >= 3)
    sim.configure(write_hold=1.0)  # the attach reaches the account a second late (each
    # retry, held too, still ends within its 3 s lease)
    await fetch(media_buffer, tmp_path, b"photo bytes")
    await wait_until(lambda: calls(sim, "Attachment/Add"))
    drain.cancel()  # killed before the attach's answer
    with suppress(asyncio.CancelledError):
        await drain
    await sink.close()
    await asyncio.sleep(3.1)  # the hold ends (the attach lands); the lease runs out
    sim.configure(write_hold=0.0)
    async with running(media_buffer, [sink_for(sim, lease=3.0, max_attempts=500, timeout=SETTLE)]):
        await wait_until(lambda: media_buffer.dead_targets())
        await wait_until(lambda: calls(sim, "ProspectActivity.svc/Create") >= 8)
    assert [a["Id"] for a in sim.activities(lead) if a["RelatedOpportunityId"] is None] == [
        activity["Id"]]
    assert len(sim.attachments(activity["Id"])) == 1


async def test_a_file_stored_while_another_part_of_its_batch_retries_waits_for_the_batch(
        media_buffer, tmp_path):
    """A way to lose texts found while hunting the crash loop's cl-000234: one batch, two notes.
    The photo's note landed (its message delivered, its file waiting); the later note's
    post failed (its messages pending, the batch waits to retry). A fetch that re-opened the
    photo's message at once put it back in that batch beside the later note's messages: the
    sink rendered them together under the photo note's key, already in the ledger, and
    counted them delivered unposted. Wanted: the photo follows alone once its batch is done."""

    photo, later, part = await later_note_retries(media_buffer)
    await fetch(media_buffer, tmp_path, os.urandom(2000))
    sinks = await media_buffer.sinks()  # waiting for its batch, not overdue
    assert (await attention(media_buffer, sinks, "leadsquared"))["counts"]["overdue"] == 0
    (retry,) = await media_buffer.claim("leadsquared", 10, 60)
    # the retry carries the later note's message alone: never the photo beside it
    assert [m.id for m in retry.messages] == [later.id]
    await media_buffer.complete(retry, [Outcome.delivered()], POLICY)
    (follow,) = await media_buffer.claim("leadsquared", 10, 60)  # now the file, alone
    assert [m.id for m in follow.messages] == [photo.id]
    assert part in follow.batch.ledger and not follow.batch.targets[
        f"{part}#file{photo.id}"].dead


async def test_a_stored_file_held_by_its_batchs_retry_is_overdue_with_advice_that_fits(
        media_buffer, tmp_path):
    """After 15 minutes such a wait is overdue: the page must not advise fetching a file that
    is stored (`requeue --media`), but say it follows once the other part's retry ends."""
    from bridge.attention import _overdue

    await later_note_retries(media_buffer)
    await fetch(media_buffer, tmp_path, os.urandom(2000))
    count, (row,) = await media_buffer.overdue_files("leadsquared", time.time() + 1, 10)
    assert count == 1 and row["held"] is True
    shown = _overdue(row, {})
    assert "its file is stored" in shown["plain"] and "--media" not in shown["next"]
    (retry,) = await media_buffer.claim("leadsquared", 10, 60)
    await media_buffer.complete(retry, [Outcome.delivered()], POLICY)
    count, rows = await media_buffer.overdue_files("leadsquared", time.time() + 1, 10)
    assert all(not r["held"] for r in rows)  # its batch is done: the file is re-opened


async def test_a_file_stored_during_the_retry_that_lands_its_window_is_attached(
        sim, media_buffer, tmp_path):
    """The window (photo first) is on the lead, its opportunity fails (the messages stay
    pending, the file's wait dead). The outage ends; during the try that lands the window
    on the opportunity (it read the wait at its claim, so it skips the file), the file is
    stored. The fetch used to forget the wait (the message still pending: "the retry
    attaches it"), the try then delivered the message, and the photo was never attached,
    with nothing dead or overdue to show for it (adv25)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    flaky = sim.add_opportunity(lead, "Flaky")
    sim.refuse_posts(flaky, "down", transient=True)
    await media_buffer.append([media_message(1, "m-1"), chat(2, account=PHONE_ID)])
    photo = os.urandom(8000)
    sink = sink_for(sim, max_attempts=500)
    real, armed, done = sink.deliver, [], []

    async def deliver(batch):
        mended = bool(armed)  # this try began after the outcome ended
        outcomes = await real(batch)
        if mended and not done:
            done.append(batch.key)
            await fetch(media_buffer, tmp_path, photo)  # after the sink read the wait
        return outcomes

    sink.deliver = deliver
    async with running(media_buffer, [sink]):
        (activity,) = await wait_until(lambda: [a for a in sim.activities(lead)
                                                if a["RelatedOpportunityId"] is None])
        await wait_until(lambda: calls(sim, "ProspectActivity.svc/Create") >= 3)
        armed.append(True)
        sim.refuse_posts(flaky, "")  # the outage ends: the next try lands the window
        await wait_until(lambda: done)
        await wait_until(lambda: sim.activities(lead, flaky))
        await wait_until(lambda: settled(media_buffer))
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [photo]
    assert await media_buffer.dead_targets() == []


@pytest.mark.parametrize("reason", ["waiting", "unconfirmed"])
async def test_a_requeue_while_another_part_of_its_batch_retries_keeps_the_file_apart(
        media_buffer, tmp_path, reason):
    """The same way to lose a text as above, by a requeue (adv25): the photo's note landed,
    its file target is dead (still waiting for the file, or an attach unconfirmed), and the
    later note's post failed (the batch waits to retry). "Requeue all" (the page's button,
    `bridge dead-letter requeue`) re-opened the file target's message at once, back in that
    batch beside the later note's message: rendered together under the photo note's key,
    already in the ledger, the later text counted delivered unposted. Wanted: the retry
    carries the later note's message alone; the file target waits for the batch's end."""
    from plugins.leadsquared.attachments import UNCONFIRMED

    if reason == "waiting":
        photo, later, part = await later_note_retries(media_buffer)
    else:  # the file is stored, its attach unconfirmed
        photo, later, part = await later_note_retries(
            media_buffer, f"{UNCONFIRMED}: LeadSquared transient: 503; requeue to attach again")
        await fetch(media_buffer, tmp_path, os.urandom(2000))
    await media_buffer.requeue("leadsquared")  # all of the sink's dead letters
    (retry,) = await media_buffer.claim("leadsquared", 10, 60)
    assert [m.id for m in retry.messages] == [later.id]  # never the photo beside it
    await media_buffer.complete(retry, [Outcome.delivered()], POLICY)
    if reason == "waiting":  # the file comes once the batch is done: it follows alone
        await fetch(media_buffer, tmp_path, os.urandom(2000))
    else:  # a dead letter still: requeued now, it follows alone
        assert [t["key"] for t in await media_buffer.dead_targets()] == [
            f"{part}#file{photo.id}"]
        await media_buffer.requeue("leadsquared", [photo.id])
    (follow,) = await media_buffer.claim("leadsquared", 10, 60)
    assert [m.id for m in follow.messages] == [photo.id]
    assert part in follow.batch.ledger and not follow.batch.targets[
        f"{part}#file{photo.id}"].dead


async def test_a_file_deferred_for_its_batch_follows_when_the_other_part_dies_and_requeues(
        media_buffer, tmp_path):
    """The file came while the later note retried (its wait left for the batch's end); the
    later note then dies (a dead letter): the batch is done, so the photo follows alone to
    its note's activity, and the later note, requeued, goes in a batch of its own."""

    photo, later, part = await later_note_retries(media_buffer)
    await fetch(media_buffer, tmp_path, os.urandom(2000))  # left for the batch's end
    (retry,) = await media_buffer.claim("leadsquared", 10, 60)
    assert [m.id for m in retry.messages] == [later.id]
    await media_buffer.complete(retry, [Outcome.rejected("note refused")], POLICY)
    assert [d["message_id"] for d in await media_buffer.dead_letters()] == [later.id]
    (follow,) = await media_buffer.claim("leadsquared", 10, 60)
    assert [m.id for m in follow.messages] == [photo.id]
    assert part.startswith(f"{follow.batch.key}:")  # its own batch
    assert follow.batch.ledger[part] == "activity-1"
    assert not follow.batch.targets[f"{part}#file{photo.id}"].dead
    assert await media_buffer.requeue("leadsquared", [later.id]) == 1
    await media_buffer.complete(follow, [Outcome.delivered()], POLICY)
    (again,) = await media_buffer.claim("leadsquared", 10, 60)
    assert [m.id for m in again.messages] == [later.id] and again.batch.key != follow.batch.key
    assert await media_buffer.dead_targets() == []


async def test_each_photo_goes_to_its_own_note_when_a_note_between_them_is_delivered(
        sim, media_buffer, tmp_path):
    """Three notes in one batch (note_limit 1000): photo 1, a long text, photo 2. The texts
    land; both attaches meet a gateway's 408 (never reached the account: retried), so the
    photos' messages stay pending and the long text's is delivered. The retry renders the
    two photos alone: together they would fit in one note, keyed as the first photo's;
    each keeps its own note's key (its failing file target names it: follow_ups), so each
    photo goes to the activity whose note names it (adv25: held)."""
    from dataclasses import replace

    from tests.helpers import message

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    first = replace(media_message(1, "m-1"), text="a" * 200)
    long_text = message(2, "+919876543210", source="whatsapp", text="c" * 675,
                        account=PHONE_ID)
    second = replace(media_message(3, "m-2"), text="d" * 80)
    await media_buffer.append([first, long_text, second])
    photos = {}
    for job in await media_buffer.media_claim("whatsapp", 10, 60):
        data = os.urandom(3000)
        path = tmp_path / f"file-{job.message_id}"
        path.write_bytes(data)
        await media_buffer.media_fetched(job, str(path), len(data),
                                         hashlib.sha256(data).hexdigest(), "image/jpeg")
        photos[job.message_id] = data
    sim.break_endpoint("Add", 408)  # a gateway's page: the attach never reached the account
    sink = sink_for(sim, note_limit=1000, max_attempts=50, rate_limit="1000/0.05s",
                    bulk_rate_limit="1000/0.05s")
    async with running(media_buffer, [sink]):
        notes = await wait_until(lambda: len(sim.activities(lead)) == 3
                                 and sim.activities(lead))
        await wait_until(lambda: calls(sim, "Attachment/Add") >= 4, timeout=30)
        sim.mend_endpoint("Add")
        await wait_until(lambda: settled(media_buffer), timeout=30)
        await wait_until(lambda: sum(len(sim.attachments(a["Id"])) for a in notes) >= 2,
                         timeout=10)
    ids = sorted(photos)
    by_caption = {"a" * 200: photos[ids[0]], "d" * 80: photos[ids[1]]}
    for note in notes:
        named = [data for caption, data in by_caption.items()
                 if caption in str(note.get("ActivityNote", note))]
        assert [a["Data"] for a in sim.attachments(note["Id"])] == named


async def test_a_file_fetched_again_during_its_batchs_last_try_still_follows(
        media_buffer, tmp_path):
    """The photo's download died (its wait says the file never came) while the later note
    retried; the retry is leased, and meanwhile the media is requeued and fetched: the
    fetch leaves the wait to the try in flight, and that try's completion must re-read it
    although the wait it loaded still said the file never came (adv25)."""

    photo, later, part = await later_note_retries(media_buffer)
    (job,) = await media_buffer.media_claim("whatsapp", 10, 60)
    await media_buffer.media_failed(job, "Graph API: media gone (code 100)", None)
    (retry,) = await media_buffer.claim("leadsquared", 10, 60)  # the last try, in flight
    assert retry.batch.targets[f"{part}#file{photo.id}"].reason.startswith(
        "the file never came")
    await media_buffer.media_requeue([photo.id])
    await fetch(media_buffer, tmp_path, os.urandom(2000))
    await media_buffer.complete(retry, [Outcome.delivered()], POLICY)
    (follow,) = await media_buffer.claim("leadsquared", 10, 60)  # the file, alone
    assert [m.id for m in follow.messages] == [photo.id]
    assert not follow.batch.targets[f"{part}#file{photo.id}"].dead


async def test_a_file_stored_while_its_batchs_lease_is_lost_follows_after_the_next_try(
        media_buffer, tmp_path):
    """The fetch leaves a leased batch's wait to the try in flight; that try loses its
    lease (LeaseLost: it records nothing) and the next try, which loaded the wait too,
    re-reads it when it completes: the photo still follows alone (adv25: held)."""
    import time

    from bridge.errors import LeaseLost

    photo, later, part = await later_note_retries(media_buffer)
    t0 = time.time()
    (lost,) = await media_buffer.claim("leadsquared", 10, 60, now=t0)
    await fetch(media_buffer, tmp_path, os.urandom(2000))  # left to the try in flight
    (again,) = await media_buffer.claim("leadsquared", 10, 60, now=t0 + 61)  # it ran out
    with pytest.raises(LeaseLost):
        await media_buffer.complete(lost, [Outcome.delivered()], POLICY)
    await media_buffer.complete(again, [Outcome.delivered()], POLICY, now=t0 + 61)
    (follow,) = await media_buffer.claim("leadsquared", 10, 60, now=t0 + 62)
    assert [m.id for m in follow.messages] == [photo.id]
    assert not follow.batch.targets[f"{part}#file{photo.id}"].dead


async def test_a_file_that_never_came_requeued_first_as_a_dead_letter_still_follows(
        sim, media_buffer, tmp_path):
    """The text landed, its file's download died: the attachment is a dead target saying
    the file never came. A person presses requeue (every dead letter of the sink) before
    requeueing the media: the follow-up finds the file dead and attaches nothing. Then the
    media is requeued and fetched: the photo must still reach the activity (adv25)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))  # the text; its file waits
    (activity,) = sim.activities(lead)
    (job,) = await media_buffer.media_claim("whatsapp", 10, 60)
    await media_buffer.media_failed(job, "Graph API: media gone (code 100)", None)
    (dead,) = await media_buffer.dead_targets()
    assert dead["reason"].startswith("the file never came")
    await media_buffer.requeue("leadsquared")  # the page's button: all dead letters
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))
    await media_buffer.media_requeue([job.message_id])  # then the media, as advised
    photo = os.urandom(3000)
    await fetch(media_buffer, tmp_path, photo)
    async with running(media_buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(media_buffer))
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)
    assert [a["Data"] for a in sim.attachments(activity["Id"])] == [photo]
    assert len(sim.activities(lead)) == 1


async def test_the_requeue_command_names_a_file_target_it_left_dead(media_buffer, tmp_path,
                                                                     buffer_target):  # noqa: F811
    """`bridge dead-letter requeue` leaves a file target dead while another part of its
    batch retries (above); it said only "requeued 0 message(s); nothing to send", and the
    target stayed in the list with nothing to tell why. Now it names what it left, and why."""
    from plugins.leadsquared.attachments import UNCONFIRMED

    photo, later, part = await later_note_retries(
        media_buffer, f"{UNCONFIRMED}: LeadSquared transient: 503; requeue to attach again")
    config = tmp_path / "config.yaml"
    key = "url" if "://" in buffer_target else "path"
    config.write_text(f"buffer: {{{key}: '{buffer_target}'}}\nserver: {{port: 1}}\n")
    done = await asyncio.to_thread(subprocess.run, [
        sys.executable, "-m", "bridge", "dead-letter", "requeue", "-c", str(config),
        "--sink", "leadsquared"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "requeued 0 message(s)" in done.stdout  # the later note retries, not dead
    assert (f"1 dead target(s) left as they are: leadsquared #{photo.id} (attachment); "
            "a file target waits while another part of its batch retries") in done.stdout
    assert [t["key"] for t in await media_buffer.dead_targets()] == [f"{part}#file{photo.id}"]


async def test_a_stored_file_gone_before_its_delivery_is_fetched_again_and_attached_once(
        sim, media_buffer, tmp_path):
    """media_path deleted (or restored from an older backup) under a running bridge: a
    photo fetched but not attached yet was a dead target ('the stored file cannot be
    read') that no requeue could mend; now its file is fetched again and follows."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    photo = os.urandom(7_000)
    await media_buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(media_buffer, tmp_path, photo)
    (tmp_path / hashlib.sha256(photo).hexdigest()).unlink()  # the file is gone
    async with running(media_buffer, [sink_for(sim)]):
        (activity,) = await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: settled(media_buffer))  # the text; the file to come
        assert sim.attachments(activity["Id"]) == []
        await fetch(media_buffer, tmp_path, photo)  # the runner fetches it again
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=5)
        await wait_until(lambda: settled(media_buffer))
    await attached_once(sim, media_buffer, activity, photo)
