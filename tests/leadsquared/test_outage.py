"""A CRM outage heals by itself (issue 25, point 5): transient failures (5xx, gateway pages,
timeouts, 429, connection errors) retry for the sink's retry_for from the first failure,
however many tries that takes; refusals dead-letter early; each dead letter says what to do
next. Against the simulator's fault switches over real HTTP."""

from __future__ import annotations

import pytest

from tests.backends import rows
from tests.helpers import running, wait_until
from tests.leadsquared.test_sink import assert_exactly_once, chat, settled, sink_for

# a short rate window keeps the client's own backoff between its retries short
FAST = {"rate_limit": "1000/0.05s", "bulk_rate_limit": "1000/0.05s"}


async def tries(buffer) -> int:
    return (await rows(buffer, "SELECT coalesce(max(attempts), 0) FROM batches"))[0][0]


async def started(sink) -> bool:
    return sink.steps is not None


async def test_an_outage_past_max_attempts_stays_pending_and_delivers_when_it_ends(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, max_attempts=2, **FAST)
    async with running(buffer, [sink]):
        await wait_until(lambda: started(sink))
        sim.configure(error_rate=1.0)  # every call: 500, or a gateway's 502/503 page
        await buffer.append([chat(1), chat(2)])
        await wait_until(lambda: _more_than(buffer, 5), timeout=30)
        assert await buffer.dead_letters() == []  # 5 tries, max_attempts 2: still pending
        ((since, outages, tries),) = await rows(
            buffer, "SELECT failing_since, outage_tries, attempts FROM batches")
        assert since is not None and outages >= tries - 1  # the window started, none counted
        sim.configure(error_rate=0.0)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    assert_exactly_once(sim, [lead], [1, 2])


async def _more_than(buffer, n: int) -> bool:
    return await tries(buffer) > n


async def test_rate_limiting_past_max_attempts_is_an_outage_too(sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, max_attempts=1, **FAST)
    async with running(buffer, [sink]):
        await wait_until(lambda: started(sink))
        sim.break_endpoint("RetrieveLeadByPhoneNumber", 429)
        await buffer.append([chat(1)])
        await wait_until(lambda: _more_than(buffer, 3), timeout=30)
        assert await buffer.dead_letters() == []
        sim.mend_endpoint("RetrieveLeadByPhoneNumber")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert_exactly_once(sim, [lead], [1])


async def test_after_retry_for_an_outage_dead_letters_saying_what_to_do(sim, buffer):
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, max_attempts=10_000, retry_for=1.0, **FAST)
    async with running(buffer, [sink]):
        await wait_until(lambda: started(sink))
        sim.break_endpoint("RetrieveLeadByPhoneNumber", 503)
        await buffer.append([chat(1)])
        (dead,) = await wait_until(buffer.dead_letters, timeout=30)
    assert dead["reason"].startswith("leadsquared kept failing for ")
    assert "HTTP 503" in dead["reason"]
    assert dead["reason"].endswith("check its service status, then requeue")


async def test_a_refusal_dead_letters_at_once_saying_what_to_fix(sim, buffer):
    sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    sink = sink_for(sim, max_attempts=5, **FAST)
    async with running(buffer, [sink]):
        await wait_until(lambda: started(sink))
        sim.refuse_endpoint("RetrieveLeadByPhoneNumber", "MXInvalidInputException",
                            "Invalid phone (simulated)", status=400)
        await buffer.append([chat(1)])
        (dead,) = await wait_until(buffer.dead_letters, timeout=30)
    assert await tries(buffer) == 1
    assert dead["reason"] == ("LeadSquared MXInvalidInputException: Invalid phone (simulated) "
                              "(fix what LeadSquared names (in the lead, the activity type or "
                              "the config), then requeue)")


async def test_an_attach_failing_through_an_outage_past_max_attempts_is_kept_not_dead(
        sim, buffer, tmp_path):
    """The text lands, then the attach endpoint is down (a gateway's page) for more tries
    than max_attempts: an outage, so the file's target keeps retrying for retry_for like
    the batch does, and is attached once LeadSquared answers (before: a dead target after
    max_attempts tries, 'gave up attaching a file')."""
    from tests.leadsquared.test_attachments import calls, fetch
    from tests.whatsapp.test_media import PHONE_ID, media_message

    buffer.media_sources = {"whatsapp": None}
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    await buffer.append([chat(1, account=PHONE_ID), media_message(2, "m-1")])
    await fetch(buffer, tmp_path, b"photo bytes")
    sim.break_endpoint("Add", 408)  # a gateway's page: the attach never reached the account
    async with running(buffer, [sink_for(sim, max_attempts=2, **FAST)]):
        await wait_until(lambda: calls(sim, "Attachment/Add") >= 5, timeout=30)
        (activity,) = sim.activities(lead)
        assert await buffer.dead_targets() == []
        sim.mend_endpoint("Add")
        await wait_until(lambda: sim.attachments(activity["Id"]), timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert len(sim.attachments(activity["Id"])) == 1 and await buffer.dead_targets() == []


async def test_an_opportunity_down_past_max_attempts_is_kept_and_gets_the_chat_when_mended(
        sim, buffer):
    """The lead's activity lands; the lead's opportunity answers a gateway's 503 page for
    more tries than max_attempts: an outage, so its target keeps retrying for retry_for
    (never a dead target after max_attempts tries) and the chat reaches it once mended."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    sink = sink_for(sim, max_attempts=2, **FAST)
    async with running(buffer, [sink]):
        await buffer.append([chat(1)])
        await wait_until(lambda: _more_than(buffer, 5), timeout=30)
        assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
        sim.refuse_posts(deal, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
    on_deal = [a for a in sim.activities(lead) if a["RelatedOpportunityId"] == deal]
    assert len(on_deal) == 1 and len(sim.activities(lead)) == 2


async def test_an_opportunity_down_past_retry_for_is_a_dead_target_saying_what_to_do(
        sim, buffer):
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    async with running(buffer, [sink_for(sim, max_attempts=10_000, retry_for=1.0, **FAST)]):
        await buffer.append([chat(1)])
        (dead,) = await wait_until(buffer.dead_targets, timeout=30)
        await wait_until(lambda: settled(buffer), timeout=30)
    assert dead["reason"].startswith("kept failing for ")
    assert dead["reason"].endswith("check its service status, then requeue")
    assert await buffer.dead_letters() == []  # the lead has the chat: only the deal waits
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]


async def test_an_opportunity_down_past_retry_for_never_takes_its_chat_to_dead_letter(
        sim, buffer):
    """The lead has the chat; only its opportunity is down. The sink judges the target's
    retry_for while it delivers, the buffer judges the messages' when it commits: a commit
    that comes later (a busy writer; here each delivery's commit waits 0.6 s) used to pass
    retry_for first, so the chat went to dead letter though the lead has it, and the
    opportunity's target stayed 'failing' in a finished batch: never retried, never dead
    (adv25). Wanted: the target dies, the chat never does."""
    import asyncio

    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    sink = sink_for(sim, max_attempts=10_000, retry_for=1.0, **FAST)
    real = sink.deliver

    async def deliver(batch):
        outcomes = await real(batch)
        await asyncio.sleep(0.6)  # the commit comes late
        return outcomes

    sink.deliver = deliver
    async with running(buffer, [sink]):
        await buffer.append([chat(1)])
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_letters() == []
    (dead,) = await buffer.dead_targets()
    assert dead["reason"].startswith("kept failing for ")
    assert [a["RelatedOpportunityId"] for a in sim.activities(lead)] == [None]


@pytest.mark.xfail(strict=True, reason=(
    "adv25, left to a design decision: a conversation's batches go in order, and a batch "
    "whose lead activity landed still retries while one opportunity answers 5xx; since "
    "0ab6216 (point 3) that lasts retry_for (24 h by default), not max_attempts tries, so "
    "the customer's later chats wait as long before reaching the lead"))
async def test_a_later_chat_reaches_the_lead_while_one_opportunity_is_down(sim, buffer):
    """The lead takes posts; only its opportunity answers a gateway's 503 page. The
    customer writes again: the new chat should reach the lead without waiting for that
    opportunity (before 0ab6216 it did, once the target died after max_attempts tries)."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    async with running(buffer, [sink_for(sim, max_attempts=2, **FAST)]):
        await buffer.append([chat(1)])
        await wait_until(lambda: sim.activities(lead))
        await wait_until(lambda: _more_than(buffer, 3), timeout=30)  # past max_attempts
        await buffer.append([chat(2)])
        await wait_until(lambda: any("msg-00002" in str(a) for a in sim.activities(lead)),
                         timeout=5)


async def test_one_opportunity_down_and_another_refusing_each_settle_on_their_own(
        sim, buffer):
    """adv25 (held): one opportunity answers 503 pages past max_attempts, another refuses
    the post. The refusal is a dead target at once; the outage keeps retrying (no dead
    letter, no dead target for it) and gets the chat once mended; the lead has it once."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    down = sim.add_opportunity(lead, "Down")
    closed = sim.add_opportunity(lead, "Closed")
    sim.refuse_posts(down, "down", transient=True)
    sim.refuse_posts(closed, "Opportunity is closed for new activities (simulated)")
    async with running(buffer, [sink_for(sim, max_attempts=2, **FAST)]):
        await buffer.append([chat(1)])
        (refused,) = await wait_until(buffer.dead_targets, timeout=30)
        await wait_until(lambda: _more_than(buffer, 4), timeout=30)
        assert [t["key"] for t in await buffer.dead_targets()] == [refused["key"]]
        assert refused["key"].endswith(f"@{closed}")
        assert await buffer.dead_letters() == []
        sim.refuse_posts(down, reason="")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert [t["key"] for t in await buffer.dead_targets()] == [refused["key"]]
    assert await buffer.dead_letters() == []
    assert sorted(str(a["RelatedOpportunityId"]) for a in sim.activities(lead)) == sorted(
        ["None", down])


async def test_an_opportunity_kept_through_an_outage_is_not_dead_at_its_first_counted_failure(
        sim, buffer):
    """adv25: the opportunity answers 503 pages for more tries than max_attempts (an
    outage: kept), then one try answers 401 (counted). Tries through the outage do not
    count, so that one counted failure must not make the target dead by itself; it
    lands once the CRM answers."""
    lead = sim.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = sim.add_opportunity(lead, "Deal")
    sim.refuse_posts(deal, "down", transient=True)
    async with running(buffer, [sink_for(sim, max_attempts=3, **FAST)]):
        await buffer.append([chat(1)])
        await wait_until(lambda: _more_than(buffer, 5), timeout=30)
        sim.refuse_posts(deal, reason="")
        sim.refuse_endpoint("Create", status=401)  # one counted failure, then mended
        await wait_until(lambda: any(c.path.endswith("Create") and c.status == 401
                                     for c in sim.calls), timeout=30)
        sim.mend_endpoint("Create")
        await wait_until(lambda: settled(buffer), timeout=30)
    assert await buffer.dead_targets() == [] and await buffer.dead_letters() == []
    assert len([a for a in sim.activities(lead) if a["RelatedOpportunityId"] == deal]) == 1
