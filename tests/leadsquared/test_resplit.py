"""A retry re-splits the messages not yet delivered (transcript.split): every message must
still reach the lead and each open opportunity exactly once. Through the simulator over
HTTP, drained from a real buffer (SQLite, and PostgreSQL when it is there)."""

from __future__ import annotations

from collections import Counter

import pytest

# both engines here (tests/leadsquared/conftest.py gives this package SQLite only)
from tests.conftest import buffer_target  # noqa: F401
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import NUMBER, settled, sink_for, texts_in


def sized(n: int, length: int, minutes_ago: float, account: str = "acct"):
    """A message whose text is `msg-0000n` padded to `length` characters."""
    text = f"msg-{n:05d} " + "x" * (length - 10)
    return message(n, NUMBER, source="whatsapp", text=text, minutes_ago=minutes_ago,
                   account=account)


def texts_on(sim, lead: str, opportunity: str | None) -> Counter:
    return Counter(t for a in sim.activities(lead)
                   if a["RelatedOpportunityId"] == opportunity
                   for t in texts_in(a["ActivityNote"]))


def lead_creates_answered(sim) -> int:
    return sum(1 for c in sim.calls if c.path.endswith("ProspectActivity.svc/Create")
               and isinstance(c.body, dict) and not c.body.get("RelatedOpportunityId")
               and c.status == 200)


async def test_a_note_whose_lead_post_failed_is_not_joined_to_an_earlier_part_after_a_middle_one_lands(  # noqa: E501
        sim, buffer):
    """Three notes (note_limit 1000): m1, a long m2, a short m3. On the lead m1 and m2
    land and m3's post fails (503); on the opportunity m1's post fails (503) and m2's
    lands. m2 is delivered; the retry holds m1 and m3, which now fit in one note. Joined
    under m1's key (in the ledger for the lead), m3's lead post would be skipped: m3
    would never reach the lead."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    await buffer.append([sized(1, 275, 30), sized(2, 675, 20), sized(3, 175, 10)])
    sim.configure(latency=0.3)  # time to queue the faults between two posts
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_answered(sim) == 2, timeout=30)
        # m3's post on the lead, then m1's on the opportunity: a gateway's 503 each
        sim.configure(gateway_errors=[[503, "Create"], [503, "Create"]])
        await wait_until(lambda: texts_on(sim, lead, deal)["msg-00002"], timeout=30)
        assert sim.knobs.gateway_errors == []  # both were used by the first try
        sim.configure(latency=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({"msg-00001": 1, "msg-00002": 1, "msg-00003": 1})
    assert texts_on(sim, lead, None) == wanted
    assert texts_on(sim, lead, deal) == wanted
    assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []
    (state,) = await buffer.sinks()
    assert state["failing_targets"] == 0  # the lead's wait is gone once m3 landed


async def test_a_note_landed_on_the_lead_is_not_posted_again_when_its_lines_grew_before_the_retry(  # noqa: E501
        sim, buffer):
    """One note of three messages lands on the lead; its post on the opportunity fails
    (503). Before the retry the customer's WhatsApp name changes (a new message carries
    it): every line of theirs is longer, the three no longer fit in one note, and the
    retry's re-split gave m3 a part (and key) of its own: posted on the lead a second
    time."""
    from dataclasses import replace

    from tests.leadsquared.test_targets import posts_on

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    await buffer.append([sized(n, 230, 30 - n) for n in (1, 2, 3)])
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: posts_on(sim, deal) >= 2, timeout=30)
        renamed = replace(sized(4, 20, 1), contact_name="Asha Kumari Venkataraman-Iyer (Pune)")
        await buffer.append([renamed])
        sim.refuse_posts(deal, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({f"msg-{n:05d}": 1 for n in (1, 2, 3, 4)})
    assert texts_on(sim, lead, deal) == wanted
    assert texts_on(sim, lead, None) == wanted


async def test_a_photo_whose_file_comes_later_follows_once_while_a_later_note_retries_for_its_opportunity(  # noqa: E501
        sim, buffer, tmp_path):
    """m1 and a photo (not fetched yet) in one note, a long m3 in the next. Both land on
    the lead; on the opportunity the first lands and m3's fails (503). The photo's text is
    delivered and its file follows once fetched: attached once to the first note, and no
    message posted twice anywhere, while m3 retries for the opportunity."""
    from dataclasses import replace
    from datetime import timedelta

    from tests.leadsquared.test_attachments import fetch
    from tests.whatsapp.test_media import PHONE_ID, media_message

    buffer.media_sources = {"whatsapp": None}
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    first, third = sized(1, 275, 30, PHONE_ID), sized(3, 675, 10, PHONE_ID)
    photo = replace(media_message(2, "m-1"), sent_at=first.sent_at + timedelta(minutes=10))
    await buffer.append([first, photo, third])
    sim.configure(latency=0.3)
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: sum(1 for c in sim.calls if c.path.endswith("/Create")
                                     and c.status == 200) == 3, timeout=30)
        sim.configure(gateway_errors=[[503, "Create"]])  # m3's post on the opportunity
        await wait_until(lambda: sim.knobs.gateway_errors == [], timeout=30)
        sim.configure(latency=0.0)
        await fetch(buffer, tmp_path, b"photo bytes")
        await wait_until(lambda: settled(buffer), timeout=30)
        await wait_until(lambda: [a for a in sim.activities(lead)
                                  if sim.attachments(a["Id"])], timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({"msg-00001": 1, "msg-00003": 1})
    assert texts_on(sim, lead, None) == wanted and texts_on(sim, lead, deal) == wanted
    notes = [a for a in sim.activities(lead) if a["RelatedOpportunityId"] is None]
    assert sum("my bill" in a["ActivityNote"] for a in notes) == 1
    assert sum(len(sim.attachments(a["Id"])) for a in sim.activities(lead)) == 1
    assert await buffer.dead_letters() == [] and await buffer.dead_targets() == []


@pytest.mark.parametrize(("length", "pieces", "granularity"), [
    (2470, 3, "window"), (800, 1, "window"), (800, 1, "message")])
async def test_a_long_message_landed_in_pieces_is_cut_at_the_same_places_when_its_line_grew(
        sim, buffer, length, pieces, granularity):
    """A message too long for one note lands on the lead in three pieces (keys by offset),
    or one that just fits in one note; their posts on the opportunity fail (503). Before
    the retry the customer's name changes: the line is longer and needed one more piece,
    a new key, posting the message's end on the lead a second time. The retry cuts where
    the first try did (nowhere, for the one that fitted)."""
    from dataclasses import replace

    from tests.leadsquared.test_targets import posts_on

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    long = sized(1, length, 30)
    await buffer.append([replace(long, text=long.text + " END-00001")])
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s", granularity=granularity)
    async with running(buffer, [sink]):
        await wait_until(lambda: posts_on(sim, deal) >= 2 * pieces, timeout=30)
        assert len(sim.activities(lead)) == pieces
        renamed = replace(sized(2, 20, 1), contact_name="Asha Kumari Venkataraman-Iyer (Pune)")
        await buffer.append([renamed])
        sim.refuse_posts(deal, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    for target in (None, deal):
        notes = [a["ActivityNote"] for a in sim.activities(lead)
                 if a["RelatedOpportunityId"] == target]
        assert sum(note.count("END-00001") for note in notes) == 1
        assert texts_on(sim, lead, target) == Counter({"msg-00001": 1, "msg-00002": 1})


@pytest.mark.parametrize(("before", "after"), [
    ({"note_limit": 1000}, {"note_limit": 600}),
    ({"note_limit": 600}, {"note_limit": 1000}),
    ({"granularity": "window"}, {"granularity": "message"}),
    ({"granularity": "message"}, {"granularity": "window"})])
async def test_a_setting_changed_between_tries_posts_nothing_twice(sim, buffer, before, after):
    """Three messages land on the lead (in one note, or three); their posts on the
    opportunity fail (503). The bridge restarts with another note_limit or granularity:
    the retry keeps the notes that landed as they were, so nothing reaches the lead twice
    and the opportunity gets each message once."""
    from tests.leadsquared.test_targets import posts_on

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    await buffer.append([sized(n, 120, 30 - n) for n in (1, 2, 3)])
    # a short lease: a batch claimed as the first drain stops waits for it to run out
    settings = {"bulk": False, "max_attempts": 50, "rate_limit": "1000/0.05s",
                "lease": 3.0, "deliver_timeout": 2.0, "timeout": 0.6}
    async with running(buffer, [sink_for(sim, **settings, **before)]):
        await wait_until(lambda: posts_on(sim, deal) >= 2, timeout=30)
    landed = len(sim.activities(lead))
    sim.refuse_posts(deal, reason="")
    async with running(buffer, [sink_for(sim, **settings, **after)]):
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({f"msg-{n:05d}": 1 for n in (1, 2, 3)})
    assert texts_on(sim, lead, None) == wanted and texts_on(sim, lead, deal) == wanted
    assert len([a for a in sim.activities(lead) if not a["RelatedOpportunityId"]]) == landed


async def test_a_note_whose_lead_post_failed_is_not_joined_to_a_photo_note_retried_for_its_attach(  # noqa: E501
        sim, buffer, tmp_path):
    """As above, with the first note waiting for its photo's attach (a gateway's 408)
    rather than for the opportunity: its key is in the ledger for the lead and the
    opportunity, so m3 joined to it would reach neither."""
    from dataclasses import replace
    from datetime import timedelta

    from tests.leadsquared.test_attachments import fetch
    from tests.whatsapp.test_media import PHONE_ID, media_message

    buffer.media_sources = {"whatsapp": None}
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    second, third = sized(2, 800, 20, PHONE_ID), sized(3, 175, 10, PHONE_ID)
    photo = replace(media_message(1, "m-1"), sent_at=second.sent_at - timedelta(minutes=5))
    await buffer.append([photo, second, third])
    await fetch(buffer, tmp_path, b"photo bytes")
    sim.break_endpoint("Add", 408)
    sim.configure(latency=0.3)
    sink = sink_for(sim, bulk=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_answered(sim) == 2, timeout=30)
        sim.configure(gateway_errors=[[503, "Create"]])  # m3's post on the lead

        async def attach_waits() -> bool:
            (conversation,) = await buffer.conversations("leadsquared")
            return "attachment" in (conversation["last_error"] or "")
        await wait_until(attach_waits, timeout=30)  # the first try ended
        sim.configure(latency=0.0)
        sim.mend_endpoint("Add")
        await wait_until(lambda: settled(buffer), timeout=30)
    wanted = Counter({"msg-00002": 1, "msg-00003": 1})
    for target in (None, deal):
        assert texts_on(sim, lead, target) == wanted
        notes = [a for a in sim.activities(lead) if a["RelatedOpportunityId"] == target]
        assert sum("my bill" in a["ActivityNote"] for a in notes) == 1
    assert sum(len(sim.attachments(a["Id"])) for a in sim.activities(lead)) == 1


async def test_a_lead_post_that_waits_with_its_messages_is_not_counted_as_a_failing_target(
        sim, buffer):
    """The record of a failed lead post's start (so a retry re-splits there) is not a
    failure of its own: its messages' retry and dead letter say it. The status page's
    "N failing" must not count it, neither while it retries nor once its messages are dead
    letters (before, it stayed "failing" there until the batch was purged)."""
    from bridge import WAITS_WITH_MESSAGES
    from tests.backends import query

    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await buffer.append([sized(1, 50, 10)])
    sim.break_endpoint("Create", 503)
    sink = sink_for(sim, bulk=False, retry_for=1.0, max_attempts=10_000,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: lead_creates_tried(sim) >= 2, timeout=30)
        (state,) = await buffer.sinks()
        assert state["failing_targets"] == 0 and state["backlog"] == 1
        await wait_until(buffer.dead_letters, timeout=30)
    (state,) = await buffer.sinks()
    assert (state["failing_targets"], state["dead_targets"], state["dead_letters"]) == (0, 0, 1)
    reasons = [r for (r,) in await query(buffer, "SELECT reason FROM targets")]
    assert reasons and all(r.startswith(WAITS_WITH_MESSAGES) for r in reasons)


def lead_creates_tried(sim) -> int:
    return sum(1 for c in sim.calls if c.path.endswith("ProspectActivity.svc/Create"))


REPLY = "".join(f"{n:04d}," for n in range(500))  # 2,500 characters, each token unique


def pieces_of(sim, lead: str, provider_id: str) -> list[tuple[int, int, str]]:
    """(start, end, the note's line) of each piece of a long message on the lead, by start."""
    from plugins.leadsquared.activity_type import FIELDS
    from plugins.leadsquared.transcript import piece_span
    from tests.leadsquared.test_sink import field

    found = []
    for activity in sim.activities(lead):
        pid, _, tail = field(activity, FIELDS["key"]).rpartition(":")
        if pid.endswith(f":{provider_id}") and (span := piece_span(tail)):
            found.append((*span, activity["ActivityNote"].split("\n", 1)[1]))
    return sorted(found)


async def test_a_long_reply_whose_quoted_message_landed_first_is_completed_exactly_once(
        sim, buffer):
    """A long reply quotes the message it answers while that message is in its batch. The
    question and the reply's first pieces land, one piece fails (503): the question is
    delivered, so the retry renders the reply without its quote. Its pieces were keyed by
    spans of a line that began with the quote: the retry's spans were shifted by the
    quote's length, and characters of the reply were lost (or posted twice)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    question = message(1, NUMBER, source="whatsapp", minutes_ago=30, text="what is the price?")
    reply = message(2, NUMBER, source="whatsapp", minutes_ago=20, text=REPLY, reply_to="m1")
    await buffer.append([question, reply])
    sim.configure(latency=0.3)  # time to queue the fault between two posts
    sink = sink_for(sim, bulk=False, opportunities=False, note_limit=1000, max_attempts=50,
                    rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: len(sim.activities(lead)) >= 2, timeout=30)
        sim.configure(gateway_errors=[[503, "Create"]])
        await wait_until(lambda: sim.knobs.gateway_errors == [], timeout=30)
        sim.configure(latency=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    pieces = pieces_of(sim, lead, "m2")
    assert len(pieces) >= 3
    assert [(s, e) for s, e, _ in pieces] == list(zip(
        [0] + [e for _, e, _ in pieces[:-1]], [e for _, e, _ in pieces], strict=True))
    assert pieces[-1][1] == len(REPLY)  # the spans tile the reply's text, once
    assert all(line.endswith(REPLY[s:e]) for s, e, line in pieces)
    assert "“what is the price?”" in pieces[0][2]
    assert await buffer.dead_letters() == []
