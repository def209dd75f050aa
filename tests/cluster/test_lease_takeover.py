"""A process that dies holding leases (issue 18): once the registry sees it silent for
three heartbeats, and its deliver_timeout has cut off any delivery it still had, its
batches are freed for the others, as uncertain retries, instead of waiting out their lease
(300 s by default). A process only paused (SIGSTOP) is silent too, and goes on when
resumed: its batch is not taken while its delivery could still post."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

from bridge.buffer import Policy
from bridge.cluster import Member
from bridge.contracts import Outcome
from bridge.errors import LeaseLost
from tests.helpers import message, wait_until

POLICY = Policy(max_attempts=5, retry_delay=lambda attempt: 0.0, held_delay=0.0)
LEASE, DELIVER_TIMEOUT = 300.0, 120.0  # the defaults


def _runners(lease: float = LEASE, deliver_timeout: float = DELIVER_TIMEOUT,
             after_lease: float | None = None) -> dict:
    """The runners of a process draining sink "crm" with these settings (`after_lease`:
    how long past a freed lease's end its batch waits, bridge.sync.settle_after_lease)."""
    settings = SimpleNamespace(lease=lease, deliver_timeout=deliver_timeout)
    runner = SimpleNamespace(settings=settings, last_delivered_at=None)
    if after_lease is not None:
        runner.after_lease = after_lease
    return {"crm": runner}


async def test_a_silent_processs_leases_go_to_the_others_before_they_expire(open_buffers):
    killed, survivor = await open_buffers(2)
    await survivor.install_sinks(["crm"])
    await survivor.append([message(1), message(2, "+14155550100")])
    gone = Member(killed, _runners(), every=0.1)
    await gone.beat()  # registered, then silent: SIGKILLed mid-delivery
    # claimed just over deliver_timeout ago: whatever it was posting has been cut off
    held = await killed.claim("crm", 1, lease=LEASE, now=time.time() - DELIVER_TIMEOUT - 2)
    assert len(held) == 1 and held[0].token.startswith(gone.id + ":")
    live = Member(survivor, _runners(), every=0.1)
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
    mine, other = Member(first, _runners(), every=0.1), Member(second, _runners(), every=0.1)
    await mine.beat()
    (held,) = await first.claim("crm", 10, 300)
    for _ in range(5):  # both keep beating: nobody's leases are freed
        await asyncio.sleep(0.1)
        await mine.beat()
        await other.beat()
    assert await second.claim("crm", 10, 300) == []
    await first.complete(held, [Outcome.delivered()], POLICY)


async def test_a_paused_processs_lease_is_kept_while_its_delivery_could_still_post(
        open_buffers):
    """SIGSTOP for 20 s (lease 5m, deliver_timeout 2m): the others saw it silent and took
    its batch, and it posted the batch again when resumed (SIGCONT): a second activity.
    Its lease is freed only once its deliver_timeout has passed since the claim."""
    paused, other = await open_buffers(2)
    await other.install_sinks(["crm"])
    await other.append([message(1)])
    stop = asyncio.Event()
    listener = paused.listener(lambda action, sink: None)  # its session stays open
    listening = asyncio.ensure_future(listener.run(stop))
    try:
        await wait_until(lambda: listener.connected)
        sleeper = Member(paused, _runners(), every=0.1)
        await sleeper.beat()
        (held,) = await paused.claim("crm", 1, lease=LEASE)  # posting it, then stopped
        live = Member(other, _runners(), every=0.1)
        await asyncio.sleep(0.4)  # silent for more than three heartbeats
        await live.beat()
        assert await other.claim("crm", 10, LEASE) == []  # it may still post: not taken
        await paused.complete(held, [Outcome.delivered()], POLICY)  # resumed, it records it
    finally:
        stop.set()
        await listening


async def test_a_killed_processs_lease_goes_at_once_though_its_delivery_could_last(
        open_buffers):
    """Killed, a process has no session left (the kernel closed its connections): nothing
    of it can post any more, so its fresh lease goes once it is silent, without waiting
    for its deliver_timeout."""
    survivor, held = await _killed_holding(open_buffers, time.time())
    await Member(survivor, _runners(), every=0.1).beat()
    (taken,) = await survivor.claim("crm", 10, LEASE)
    assert taken.batch.key == held.batch.key and taken.batch.uncertain



async def test_a_killed_processs_batch_waits_for_a_write_it_may_have_had_in_flight(
        open_buffers):
    """Freed at once, its batch is retried only once a write the killed process had sent
    can no longer land (here 20 s after the claim): the retry's key check would miss a
    write still in flight and post it again (adv36's late commit, after a crash)."""
    claimed = time.time()
    survivor, held = await _killed_holding(open_buffers, claimed)
    await Member(survivor, _runners(after_lease=20 - LEASE), every=0.1).beat()
    assert await survivor.claim("crm", 10, LEASE) == []  # freed, settling
    (sink,) = await survivor.sinks()
    assert sink["settling"] == 1
    assert abs(sink["settling_until"].timestamp() - (claimed + 20)) < 1e-3
    (taken,) = await survivor.claim("crm", 10, LEASE, now=claimed + 20)
    assert taken.batch.key == held.batch.key and taken.batch.uncertain


async def _killed_holding(open_buffers, claimed: float):
    """Two processes; the first, listening and beating, claims the one batch at `claimed`,
    then is killed (its sessions end) and goes silent: (the survivor, the killed claim)."""
    killed, survivor = await open_buffers(2)
    await survivor.install_sinks(["crm"])
    await survivor.append([message(1)])
    stop = asyncio.Event()
    listener = killed.listener(lambda action, sink: None)
    listening = asyncio.ensure_future(listener.run(stop))
    await wait_until(lambda: listener.connected)
    await Member(killed, _runners(), every=0.1).beat()
    (held,) = await killed.claim("crm", 1, lease=LEASE, now=claimed)
    stop.set()  # SIGKILL: its sessions end
    await listening
    await asyncio.sleep(0.4)
    return survivor, held
