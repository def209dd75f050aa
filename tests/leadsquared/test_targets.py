"""Targets are independent: the lead's activity and each opportunity's have their own
outcome, retry and dead letter (issue 14; DESIGN.md "Reality first")."""

from __future__ import annotations

import aiosqlite
from click.testing import CliRunner

from bridge.buffer import Buffer
from bridge.buffer.legacy import STEPS as MIGRATIONS
from bridge.buffer.migrations import VERSION
from bridge.status import buffer_report
from bridge.textreport import render_status
from tests.backends import query
from tests.helpers import message, running, wait_until
from tests.leadsquared.test_sink import chat, settled, sink_for


def posts_on(sim, opportunity: str | None) -> int:
    """Posts that asked for this target (None: the lead's own activity): Create calls, and
    rows of bulk calls (ByLeadId for the lead)."""
    single = sum(1 for c in sim.calls if c.path.endswith("ProspectActivity.svc/Create")
                 and isinstance(c.body, dict)
                 and c.body.get("RelatedOpportunityId") == opportunity)
    rows = sum(len(c.body) for c in sim.calls if opportunity is None
               and c.path.endswith("Bulk/CustomActivity/Add/ByLeadId")
               and isinstance(c.body, list))
    return single + rows


async def test_a_refused_opportunity_is_a_dead_target_and_the_lead_activity_lands_once(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    closed, open_ = sim.add_opportunity(lead, "Old"), sim.add_opportunity(lead, "New")
    sim.refuse_posts(closed, "Opportunity is closed")
    await buffer.append([chat(1), chat(2)])
    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: settled(buffer))
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None, open_]
    assert posts_on(sim, None) == 1 and posts_on(sim, closed) == 1  # refused: never retried
    assert await buffer.dead_letters() == []  # the messages are delivered (on the lead)
    (dead,) = await buffer.dead_targets()
    assert dead["target"] == f"opportunity {closed}"
    assert "MXInvalidInputException" in dead["reason"] and "Opportunity is closed" in dead[
        "reason"]
    assert dead["conversation"] == "+919876543210" and len(dead["message_ids"]) == 2
    (state,) = await buffer.sinks()
    assert (state["dead_targets"], state["dead_letters"], state["backlog"]) == (1, 0, 0)


async def test_a_failing_opportunity_is_retried_alone_then_dead_lettered(sim, buffer):
    """A 503 is an outage's: the opportunity's target retries alone for retry_for (not
    max_attempts tries), then is a dead target of its own."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    flaky = sim.add_opportunity(lead, "Flaky")
    sim.refuse_posts(flaky, "down", transient=True)
    await buffer.append([chat(1)])
    sink = sink_for(sim, max_attempts=3, retry_for=1.5, rate_limit="1000/0.05s")
    async with running(buffer, [sink]):
        await wait_until(lambda: buffer.dead_targets(), timeout=30)
        await wait_until(lambda: settled(buffer))
    assert posts_on(sim, None) == 1  # the lead's activity: once, never re-posted
    assert posts_on(sim, flaky) >= 3  # its own tries (the client retries inside each)
    (dead,) = await buffer.dead_targets()
    assert dead["attempts"] > 3 and "503" in dead["reason"]
    assert dead["reason"].startswith("leadsquared kept failing for ")
    assert await buffer.dead_letters() == []
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]


async def test_a_failing_opportunity_does_not_hold_back_the_others(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    fine = sim.add_opportunity(lead, "Fine")
    flaky = sim.add_opportunity(lead, "Flaky")  # newest: tried first
    sim.refuse_posts(flaky, "down", transient=True)
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, max_attempts=50, rate_limit="1000/0.05s")]):
        await wait_until(lambda: sim.activities(opportunity_id=fine))
        await wait_until(lambda: posts_on(sim, flaky) >= 10)  # still retried meanwhile
        assert posts_on(sim, None) == 1 and posts_on(sim, fine) == 1
        assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []


async def test_an_opportunity_that_cannot_be_checked_waits_alone(sim, buffer):
    """On a retry the sink checks each target for earlier posts; an opportunity whose
    activities cannot be read waits, and the lead's activity goes out anyway."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    opportunity = sim.add_opportunity(lead, "Deal")
    sim.break_endpoint("Create", 503)  # the first attempt posts nothing
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim, max_attempts=50, rate_limit="1000/0.05s")]):
        await wait_until(lambda: sum(c.path.endswith("/Create") for c in sim.calls) >= 1)
        sim.break_endpoint("GetActivitiesOfOpportunity", 503)
        sim.mend_endpoint("Create")
        await wait_until(lambda: sim.activities(lead))
        assert sim.activities(opportunity_id=opportunity) == []
        sim.mend_endpoint("GetActivitiesOfOpportunity")
        await wait_until(lambda: sim.activities(opportunity_id=opportunity))
        await wait_until(lambda: settled(buffer))
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None, opportunity]


async def test_requeue_retries_only_the_dead_target(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    closed = sim.add_opportunity(lead, "Old")
    sim.refuse_posts(closed, "Opportunity is closed")
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim)]) as (runner,):
        await wait_until(lambda: buffer.dead_targets())
        sim.refuse_posts(closed, reason="")  # a person reopened the opportunity
        assert await buffer.requeue("leadsquared") == 1
        runner.wake()
        await wait_until(lambda: sim.activities(opportunity_id=closed))
        await wait_until(lambda: settled(buffer))
    assert posts_on(sim, None) == 1
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None, closed]
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []


async def test_status_and_dead_letter_list_show_which_target_failed_and_why(
        sim, buffer, tmp_path):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    closed = sim.add_opportunity(lead, "Old")
    sim.refuse_posts(closed, "Opportunity is closed")
    await buffer.append([chat(1)])
    async with running(buffer, [sink_for(sim)]):
        await wait_until(lambda: buffer.dead_targets())
    text = render_status(await buffer_report(buffer))
    assert "1 dead" in text and f"dead target opportunity {closed}" in text
    assert "Opportunity is closed" in text


async def test_a_version_6_buffer_gains_the_targets_table(tmp_path):
    path = tmp_path / "old.db"
    async with aiosqlite.connect(path) as db:
        for number, script in enumerate(MIGRATIONS[:6], start=1):
            await db.executescript(f"BEGIN;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
    buffer = await Buffer.open(path)
    try:
        assert await buffer.dead_targets() == []
        rows = await query(buffer, "PRAGMA user_version")
        assert rows[0][0] == VERSION >= 7
    finally:
        await buffer.close()


def test_dead_letter_list_names_the_target(tmp_path):
    """`bridge dead-letter list` over a buffer with one dead target (written by the sink's
    own path: fail_target, then the buffer's complete)."""
    import asyncio

    from bridge.buffer.delivery import Policy
    from bridge.cli import cli
    from bridge.contracts import Outcome

    config = tmp_path / "config.yaml"
    config.write_text(f"buffer:\n  path: {tmp_path / 'b.db'}\nplugins: {{}}\n")

    async def seed() -> None:
        buffer = await Buffer.open(tmp_path / "b.db")
        try:
            await buffer.install_sinks(["leadsquared"])
            await buffer.append([chat(1)])
            (claim,) = await buffer.claim("leadsquared", 10, 60)
            claim.batch.fail_target(claim.batch.key + ":x@opp-1", "opportunity opp-1",
                                    "LeadSquared MXInvalidInputException: closed",
                                    [m.id for m in claim.messages], 8, final=True)
            await buffer.complete(claim, [Outcome.delivered()], Policy(8, lambda n: 1, 1))
        finally:
            await buffer.close()

    asyncio.run(seed())
    out = CliRunner().invoke(cli, ["dead-letter", "list", "-c", str(config)]).output
    assert "target opportunity opp-1: LeadSquared MXInvalidInputException: closed" in out


async def test_a_group_members_refused_opportunity_is_a_dead_target_too(sim, buffer):
    """groups: participants posts each sender's messages through a batch of their own: a
    target failing there (a refused deal) is recorded on the group's batch like any other,
    never dropped with the sub-batch (a delivered message whose deal silently missed it)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    closed = sim.add_opportunity(lead, "Old")
    sim.refuse_posts(closed, "Opportunity is closed")
    await buffer.append([message(1, "group:G1", source="whatsapp", text="hello group",
                                 extra={"sender": "+919876543210"})])
    async with running(buffer, [sink_for(sim, groups="participants")]):
        await wait_until(lambda: settled(buffer))
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]
    (dead,) = await buffer.dead_targets()
    assert dead["target"] == f"opportunity {closed}" and "Opportunity is closed" in dead[
        "reason"]


def test_a_note_retried_for_its_opportunity_keeps_its_own_part_after_a_middle_one_lands():
    """Three notes in one batch (note_limit 1000): m1, a long m3, a short m4. All landed
    on the lead; on the opportunity m1 and m3 landed, m4's post failed (503); m1's photo
    attach failed (408, retried). m3 is delivered; the retry holds m1 and m4, which fit in
    one note: m4 must keep its own part (key ...:m4:0), else its opportunity post is
    skipped as m1's (in the ledger)."""
    from dataclasses import replace
    from datetime import UTC

    from bridge.contracts import Batch, TargetFailure
    from bridge.model import Conversation
    from plugins.leadsquared.config import LeadSquaredConfig
    from plugins.leadsquared.targets import Planner

    m1, m3, m4 = (replace(message(1, text="a" * 275), id=1),
                  replace(message(3, text="c" * 675), id=3),
                  replace(message(4, text="d" * 175), id=4))
    planner = Planner(LeadSquaredConfig(access_key="a", secret_key="b", note_limit=1000),
                      None, None, UTC, True)
    person = Conversation("+919876543210", "Asha")
    whole = Batch(key="bk", sink="leadsquared", conversation=person, messages=[m1, m3, m4])
    assert [p.key for p in planner.parts(whole)] == ["bk:m1:0", "bk:m3:0", "bk:m4:0"]
    ledger = {"bk:m1:0": "a1", "bk:m3:0": "a3", "bk:m4:0": "a4", "bk:m1:0@O": "o1",
              "bk:m3:0@O": "o3"}
    failing = [TargetFailure("bk:m1:0#file1", "attachment", "LeadSquared 408", False, (1,), 1),
               TargetFailure("bk:m4:0@O", "opportunity O", "LeadSquared 503", False, (4,), 1)]
    retry = Batch(key="bk", sink="leadsquared", conversation=person, messages=[m1, m4],
                  ledger=ledger, targets={f.key: f for f in failing})
    parts = {m.id: p.key for p in planner.parts(retry) for m in p.messages}
    assert parts == {1: "bk:m1:0", 4: "bk:m4:0"}


def test_a_retry_of_notes_from_many_earlier_parts_keeps_each_in_its_own_part():
    """Five notes: m1 waits for the opportunity, m2 and m4 are delivered, m3's post on the
    lead failed and m5's was not attempted after it (both recorded as the lead's waits,
    delivery._remember_waiting_starts). The retry holds m1, m3 and m5, which would fit
    in one note: each keeps its own part and key."""
    from dataclasses import replace
    from datetime import UTC

    from bridge.contracts import Batch, TargetFailure
    from bridge.model import Conversation
    from plugins.leadsquared.config import LeadSquaredConfig
    from plugins.leadsquared.targets import Planner

    short, long = (replace(message(n, text="s" * 200), id=n) for n in (1, 3, 5)), \
        (replace(message(n, text="l" * 675), id=n) for n in (2, 4))
    m1, m3, m5 = short
    m2, m4 = long
    planner = Planner(LeadSquaredConfig(access_key="a", secret_key="b", note_limit=1000),
                      None, None, UTC, True)
    person = Conversation("+919876543210", "Asha")
    whole = Batch(key="bk", sink="leadsquared", conversation=person,
                  messages=[m1, m2, m3, m4, m5])
    assert [p.key for p in planner.parts(whole)] == [f"bk:m{n}:0" for n in range(1, 6)]
    ledger = {"bk:m1:0": "a1", "bk:m2:0": "a2", "bk:m2:0@O": "o2", "bk:m4:0": "a4",
              "bk:m4:0@O": "o4"}
    failing = [TargetFailure("bk:m1:0@O", "opportunity O", "503", False, (1,), 1),
               TargetFailure("bk:m3:0", "lead", "503", False, (3,), 1),
               TargetFailure("bk:m5:0", "lead", "not attempted", False, (5,), 1)]
    retry = Batch(key="bk", sink="leadsquared", conversation=person, messages=[m1, m3, m5],
                  ledger=ledger, targets={f.key: f for f in failing}, attempt=2)
    assert [[m.id for m in p.messages] for p in planner.parts(retry)] == [[1], [3], [5]]
    assert [p.key for p in planner.parts(retry)] == ["bk:m1:0", "bk:m3:0", "bk:m5:0"]
