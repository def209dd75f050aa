"""A process that dies holding leases (issue 18): once the registry sees it silent for
three heartbeats, its batches are freed for the others at once, as uncertain retries,
instead of waiting out their lease (300 s by default)."""

from __future__ import annotations

import asyncio

from bridge.buffer import Policy
from bridge.cluster import Member
from bridge.contracts import Outcome
from bridge.errors import LeaseLost
from tests.helpers import message

POLICY = Policy(max_attempts=5, retry_delay=lambda attempt: 0.0, held_delay=0.0)


async def test_a_silent_processs_leases_go_to_the_others_before_they_expire(open_buffers):
    killed, survivor = await open_buffers(2)
    await survivor.install_sinks(["crm"])
    await survivor.append([message(1), message(2, "+14155550100")])
    gone = Member(killed, {}, every=0.1)
    await gone.beat()  # registered, then silent: SIGKILLed mid-delivery
    held = await killed.claim("crm", 1, lease=300)
    assert len(held) == 1 and held[0].token.startswith(gone.id + ":")
    live = Member(survivor, {}, every=0.1)
    await live.beat()
    assert [c.batch.conversation.key for c in await survivor.claim("crm", 10, 300)] \
        != [held[0].batch.conversation.key]  # still leased: only the other chat is free
    await asyncio.sleep(0.4)  # more than three of the killed process's heartbeats
    await live.beat()
    (taken,) = await survivor.claim("crm", 10, 300)
    assert taken.batch.key == held[0].batch.key  # the same batch, under its key
    assert taken.batch.uncertain and taken.batch.attempt == 2  # checked before posting
    await survivor.complete(taken, [Outcome.delivered()], POLICY)
    try:
        await killed.complete(held[0], [Outcome.delivered()], POLICY)
        raise AssertionError("a freed lease still acknowledged")
    except LeaseLost:
        pass


async def test_a_live_processs_leases_are_left_alone(open_buffers):
    first, second = await open_buffers(2)
    await first.install_sinks(["crm"])
    await first.append([message(1)])
    mine, other = Member(first, {}, every=0.1), Member(second, {}, every=0.1)
    await mine.beat()
    (held,) = await first.claim("crm", 10, 300)
    for _ in range(5):  # both keep beating: nobody's leases are freed
        await asyncio.sleep(0.1)
        await mine.beat()
        await other.beat()
    assert await second.claim("crm", 10, 300) == []
    await first.complete(held, [Outcome.delivered()], POLICY)
