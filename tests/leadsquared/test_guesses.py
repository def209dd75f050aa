"""The sink where the docs are thin (issue 23): right under every plausible answer.

These tests run here under the simulator's defaults (the documented readings) and again in
test_sink_switches.py under each switch alone and all at once; where a reading changes what
must happen (an upload answer without an S3 URL), the test says what each reading means.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from datetime import UTC, datetime, timedelta

import pytest

from bridge import Batch, Conversation
from plugins.leadsquared.attachments import NO_URL
from plugins.leadsquared.directory import LeadDirectory, chat_keys
from plugins.leadsquared.opportunities import NONE_FOUND
from tests.helpers import running, wait_until
from tests.leadsquared.test_attachments import fetch
from tests.leadsquared.test_sink import chat, settled, sink_for, texts_in
from tests.whatsapp.test_media import PHONE_ID, media_message

BY_OPPORTUNITY = "/v2/ProspectActivity.svc/Bulk/CustomActivity/Add/ByOpportunityId"


def deals(sim, lead: str) -> dict[str, str]:
    """An open, a won and a lost deal on the lead: status -> opportunity id."""
    return {status: sim.add_opportunity(lead, f"{status} deal", status=status)
            for status in ("Open", "Won", "Lost")}


async def test_a_chat_with_a_photo_lands_once_on_the_lead_and_only_the_open_deal(
        sim, buffer, tmp_path):
    buffer.media_sources = {"whatsapp": None}
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    by_status = deals(sim, lead)
    photo = os.urandom(20_000)
    await buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1"),
                         chat(3, account=PHONE_ID)])
    await fetch(buffer, tmp_path, photo)
    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(buffer), timeout=30)
    activities = sim.activities(lead)
    assert sorted(a["RelatedOpportunityId"] or "" for a in activities) == sorted(
        ["", by_status["Open"]])  # Won and Lost deals get nothing by default
    for activity in activities:
        assert texts_in(activity["ActivityNote"]) == ["msg-00001", "msg-00003"]
    (on_lead,) = [a for a in activities if a["RelatedOpportunityId"] is None]
    attached = sim.attachments(on_lead["Id"])
    assert await buffer.dead_letters() == []
    if sim.store.switches.upload_answer == "s3":
        (file,) = attached
        assert file["Data"] == photo and file["AttachmentFile"].startswith(sim.base_url)
        assert await buffer.dead_targets() == []
    else:  # no S3 URL in the answer: held in the bridge, said plainly, never guessed
        (dead,) = await buffer.dead_targets()
        assert attached == [] and dead["reason"] == NO_URL


async def test_lost_bulk_answers_and_unreadable_rows_still_post_exactly_once(sim, buffer):
    """Every bulk answer is lost half the time: each row is then an unknown outcome, settled
    by the key check on the retry; whatever the answer's shape, one activity per window."""
    phones = [f"+9198765{i:05d}" for i in range(8)]
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=p[3:]) for i, p in enumerate(phones)]
    await buffer.append([chat(i, phones[i]) for i in range(8)])
    sim.configure(drop_after_commit_rate=0.5, seed=5)
    async with running(buffer, [sink_for(sim, opportunities=False, max_attempts=50)]):
        await wait_until(lambda: all(sim.activities(lead) for lead in leads), timeout=30)
        sim.configure(drop_after_commit_rate=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [len(sim.activities(lead)) for lead in leads] == [1] * 8
    assert await buffer.dead_letters() == []


def first_chat(n: int) -> Batch:
    return Batch(key=f"b{n}", sink="leadsquared",
                 conversation=Conversation(key="+919811122233", contact_name="Asha"),
                 messages=[chat(n, "+919811122233")])


async def test_two_processes_creating_a_lead_for_one_new_number_make_one_lead(sim):
    """Two bridges (two sinks, nothing shared but the account) deliver the first chat of a
    new number at once, and both start at once (one creates the activity type, the other
    finds it): Phone is unique by default, so the second create is refused and finds the
    first lead."""
    sinks = [sink_for(sim, create_leads=True, opportunities=False) for _ in range(2)]
    sim.configure(latency=0.005)  # both look the number up before either creates it
    await asyncio.gather(*(sink.start() for sink in sinks))
    try:
        outcomes = await asyncio.gather(*(sink.deliver(first_chat(n))
                                          for n, sink in enumerate(sinks)))
    finally:
        for sink in sinks:
            await sink.close()
    assert [o.kind for pair in outcomes for o in pair] == ["delivered", "delivered"]
    (lead,) = sim.store.leads  # one lead for the number
    assert sim.store.leads[lead]["Phone"] == sim.store.leads[lead]["Mobile"] == "+91-9811122233"
    assert sorted(t for a in sim.activities(lead) for t in texts_in(a["ActivityNote"])) == [
        "msg-00000", "msg-00001"]
    assert len([t for t in sim.store.types.values() if t.name == "WhatsApp Chats"]) == 1


async def test_concurrent_deliveries_for_one_new_number_in_one_process_make_one_lead(sim):
    """Two batches for one new number delivered at once (as two conversations of one
    customer would be): the first creates the lead, the second finds it."""
    sink = sink_for(sim, create_leads=True, opportunities=False)
    await sink.start()
    sim.configure(latency=0.005)  # both would look the number up before either creates it
    try:
        outcomes = await asyncio.gather(*(sink.deliver(first_chat(n)) for n in (1, 2)))
    finally:
        await sink.close()
    assert [o.kind for pair in outcomes for o in pair] == ["delivered", "delivered"]
    assert len([c for c in sim.calls if c.path.endswith("Lead.Create")]) == 1  # never raced
    (lead,) = sim.store.leads
    assert sorted(t for a in sim.activities(lead) for t in texts_in(a["ActivityNote"])) == [
        "msg-00001", "msg-00002"]


async def fill(sim, buffer, *, page: int, clock=None, after_call=None):
    """A full fill of the directory with `page` leads a call; its rows. `after_call` runs
    after each Leads.RecentlyModified call (an edit made while the fill reads)."""
    sink = sink_for(sim, opportunities=False)
    await sink.start()
    options = {"clock": clock} if clock else {}
    directory = LeadDirectory(sink.client, buffer.directory("leadsquared"), mode="on",
                              limit=1000, refresh_every=300, page=page, **options)
    if after_call is not None:
        read = sink.client.leads.recently_modified

        async def reading(*args, **kwargs) -> dict:
            answer = await read(*args, **kwargs)
            after_call()
            return answer

        sink.client.leads.recently_modified = reading
    try:
        await directory.refresh(full=True)
    finally:
        await sink.close()
    return buffer.directory("leadsquared")


async def test_a_lead_edited_mid_fill_skips_no_lead(sim, buffer):
    """Paging by position, an edit during the fill (the lead leaves the window) shifts the
    later pages and skips a lead nobody touched; reading by time skips none."""
    numbers = [f"+91981112{i:04d}" for i in range(7)]
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=n[3:]) for i, n in enumerate(numbers)]
    for i, lead in enumerate(leads):
        sim.store.leads[lead]["ModifiedOn"] = f"2025-01-0{i + 1} 10:00:00"
    times = iter(datetime(2025, 2, 1, tzinfo=UTC) + timedelta(seconds=s) for s in (0, 10))
    edited: list[str] = []

    def edit_after_the_first_page() -> None:  # a user edits the newest lead's number
        if not edited:  # (5 s after the fill began: it leaves the window)
            edited.append(leads[-1])
            sim.store.leads[leads[-1]].update(Phone="9811129999",
                                              ModifiedOn="2025-02-01 00:00:05")

    rows = await fill(sim, buffer, page=2, clock=lambda: next(times),
                      after_call=edit_after_the_first_page)
    for number, lead in zip(numbers[:-1], leads[:-1], strict=True):
        assert await rows.lookup(chat_keys(number)) == lead, number
    assert await rows.lookup(chat_keys("+919811129999")) == leads[-1]  # its new number


async def test_an_old_lead_edited_lately_is_read_whatever_order_the_account_sorts_in(
        sim, buffer):
    """Leads created and modified in step, but the oldest edited last: an account that
    sorts by creation (recent_sort=ignored) gives pages that look newest-modified first
    and are not; counting each window, not trusting the order, still reads every lead."""
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=f"98111300{i:02d}") for i in range(7)]
    for i, lead in enumerate(leads):
        sim.store.leads[lead]["ModifiedOn"] = f"2025-01-0{i + 1} 10:00:00"
    sim.store.leads[leads[0]]["ModifiedOn"] = "2025-01-20 10:00:00"  # edited lately
    rows = await fill(sim, buffer, page=2)
    for i, lead in enumerate(leads):
        assert await rows.lookup(chat_keys(f"+9198111300{i:02d}")) == lead


async def test_more_leads_in_one_second_than_a_page_are_all_read(sim, buffer):
    leads = [sim.add_lead(FirstName=f"L{i}", Phone=f"98111200{i:02d}") for i in range(7)]
    for lead in leads:
        sim.store.leads[lead]["ModifiedOn"] = "2025-01-01 10:00:00"  # one bulk import
    rows = await fill(sim, buffer, page=3)
    for i, lead in enumerate(leads):
        assert await rows.lookup(chat_keys(f"+9198111200{i:02d}")) == lead


async def test_without_an_owner_email_opportunity_posts_go_one_by_one(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    opportunity = sim.add_opportunity(lead, "Deal")
    sim.break_endpoint("ByUserId", 403)  # the key's user may not read users
    await buffer.append([chat(1), chat(2)])
    async with running(buffer, [sink_for(sim, granularity="message")]):
        await wait_until(lambda: settled(buffer), timeout=30)
    assert not [c for c in sim.calls if c.path == BY_OPPORTUNITY]
    assert len(sim.activities(opportunity_id=opportunity)) == 2


@pytest.mark.parametrize(("choice", "expected"), [
    (True, ["Open"]), ({"types": [12000]}, ["Open"]), ({"status": "any"}, ["Open", "Won",
                                                                           "Lost"]),
    ({"status": ["Won"]}, ["Won"])])
async def test_opportunity_posts_go_to_open_deals_unless_the_filter_says_otherwise(
        sim, buffer, choice, expected):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    by_status = deals(sim, lead)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, opportunities=choice)]):
        await wait_until(lambda: settled(buffer))
    posted = {a["RelatedOpportunityId"] for a in sim.activities(lead)} - {None}
    assert posted == {by_status[status] for status in expected}


async def test_no_opportunity_types_found_posts_on_the_lead_and_says_so(sim, buffer, caplog):
    caplog.set_level(logging.WARNING)
    sim.configure(opportunity_types="absent")  # and GetOpportunitiesOfLead needs a type
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sim.add_opportunity(lead, "Deal")
    await buffer.append([chat(1)])
    async with running(buffer, [sink := sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]
    assert NONE_FOUND in caplog.text
    described = sink.describe()
    assert (described["opportunity_types"], described["opportunity_types_from"]) == (
        [], "none found")


async def test_an_untyped_opportunity_read_is_used_when_the_account_allows_it(sim, buffer):
    sim.configure(opportunity_types="absent", opportunity_type="optional")
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    await buffer.append([chat(1)])
    async with running(buffer, [sink := sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    assert {a["RelatedOpportunityId"] for a in sim.activities(lead)} == {None, deal}
    assert sink.describe()["opportunity_types_from"] == "GetOpportunitiesOfLead without a type"


async def test_an_untyped_read_refused_for_a_deleted_lead_keeps_opportunity_posts_on(sim):
    """Types come from an untyped GetOpportunitiesOfLead, and the first read of the run is
    on a cached lead deleted meanwhile: its refusal is about the lead, not the type, so
    opportunity posts stay on; the number's new lead and its open deal get the chat."""
    sim.configure(opportunity_types="absent", opportunity_type="optional")
    old = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim)
    await sink.start()
    try:
        sim.store.delete_lead(old)
        new = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
        deal = sim.add_opportunity(new)
        stale = Batch(key="b1", sink="leadsquared", record_id=old,
                      conversation=Conversation(key="+919876543210"), messages=[chat(1)])
        assert [o.kind for o in await sink.deliver(stale)] == ["delivered"]
        assert sink.describe()["opportunity_types_from"] == (
            "GetOpportunitiesOfLead without a type")
    finally:
        await sink.close()
    assert {a["RelatedOpportunityId"] for a in sim.activities(new)} == {None, deal}


async def test_the_production_sink_never_imports_the_simulator():
    code = ("import sys, plugins.leadsquared, plugins.leadsquared.sink; "
            "print([m for m in sys.modules if 'simulator' in m])")
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code,
                                                   stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    assert out.decode().strip() == "[]"
