"""The retry policy (a pure function: exponential, capped, jittered) and retry timing in
the buffer: wall-clock steps, sync-now, per-conversation order."""

import random
import time
from datetime import UTC, datetime

import pytest

from bridge.buffer import Policy
from bridge.contracts import Outcome
from bridge.retry import backoff_delay, gives_up
from tests.backends import query
from tests.helpers import RecordingSink, message, running, wait_until


def test_delay_doubles_per_attempt_without_jitter():
    assert [backoff_delay(n, base=10, cap=1000, jitter=0) for n in range(1, 6)] == [
        10, 20, 40, 80, 160]


def test_delay_is_capped_even_for_huge_attempt_counts():
    assert backoff_delay(500, base=10, cap=3600, jitter=0) == 3600


def test_jitter_spreads_within_bounds_and_varies():
    rng = random.Random(7)
    delays = [backoff_delay(3, base=10, cap=1000, jitter=0.2, rng=rng) for _ in range(200)]
    assert all(32 <= d <= 48 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100


def test_attempt_counts_from_one():
    with pytest.raises(ValueError):
        backoff_delay(0)


def test_gives_up_at_max_attempts():
    assert [gives_up(n, 3) for n in (1, 2, 3, 4)] == [False, False, True, True]


# --- retry timing in the buffer: wall-clock steps, sync-now, per-conversation order ----------

HOUR = 3600.0
WAIT = Policy(max_attempts=5, retry_delay=lambda attempt: 30.0, held_delay=30.0)


async def _fail_once(buffer, at: float, **outcome) -> None:
    """Claim the one due batch at `at` and record a retry (30 s backoff) at `at`."""
    (claim,) = await buffer.claim("crm", 100, 60, now=at)
    await buffer.complete(claim, [Outcome.retry("CRM down", **outcome)] * len(claim.messages),
                          WAIT, now=at)


async def test_a_wall_clock_stepped_back_adds_no_wait_to_a_retry(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    start = time.time()
    await _fail_once(buffer, start)
    stepped = start - HOUR  # the clock is set back an hour right after
    # the next sync sees the step; the 30 s wait counts from then, not an hour later
    assert await buffer.claim("crm", 100, 60, now=stepped + 1) == []
    (claim,) = await buffer.claim("crm", 100, 60, now=stepped + 32)
    assert [m.provider_id for m in claim.messages] == ["m1"]


async def test_retry_now_hurries_a_waiting_batch_but_not_a_wait_the_sink_asked_for(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2, "+14155550100")])
    start = time.time()
    claims = await buffer.claim("crm", 100, 60, now=start)
    asked = datetime.fromtimestamp(start + 600, UTC)  # e.g. a write that may still commit
    for claim, outcome in zip(claims, [Outcome.retry("CRM down"),
                                       Outcome.retry("unknown outcome", not_before=asked)],
                              strict=True):
        await buffer.complete(claim, [outcome], WAIT, now=start)
    assert await buffer.claim("crm", 100, 60, now=start + 1) == []
    assert await buffer.retry_now("crm", now=start + 1) == 1
    (claim,) = await buffer.claim("crm", 100, 60, now=start + 1)
    assert [m.provider_id for m in claim.messages] == ["m1"]
    await buffer.complete(claim, [Outcome.delivered()], WAIT, now=start + 1)
    assert await buffer.claim("crm", 100, 60, now=start + 599) == []
    (later,) = await buffer.claim("crm", 100, 60, now=start + 601)
    assert [m.provider_id for m in later.messages] == ["m2"]


async def test_sync_now_retries_a_waiting_batch_at_once(buffer):
    calls = []

    def behaviour(m):
        calls.append(m.provider_id)
        return Outcome.retry("CRM down") if len(calls) == 1 else Outcome.delivered()

    sink = RecordingSink(behaviour=behaviour, retry_base=HOUR, retry_cap=HOUR)
    await buffer.append([message(1)])
    async with running(buffer, [sink]) as (runner,):
        await wait_until(lambda: calls == ["m1"])
        await wait_until(lambda: _waiting(buffer))  # an hour's backoff ahead
        runner.wake()  # what `bridge sync-now` does
        await wait_until(lambda: sink.delivered == ["m1"], timeout=5)


async def _waiting(buffer) -> bool:
    rows = await query(buffer, "SELECT count(*) FROM batches WHERE state = 'ready'"
                               " AND next_attempt_at > :after", {"after": time.time() + 60})
    return rows[0][0] == 1


async def test_a_newer_message_waits_behind_an_older_one_of_its_chat_that_waits_to_retry(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, minutes_ago=1)])
    start = time.time()
    await _fail_once(buffer, start)
    await buffer.append([message(2), message(3, "+14155550100")])  # m2: same chat as m1
    (other,) = await buffer.claim("crm", 100, 60, now=start + 1)  # another chat is not held up
    assert [m.provider_id for m in other.messages] == ["m3"]
    (first,) = await buffer.claim("crm", 100, 60, now=start + 31)
    assert [m.provider_id for m in first.messages] == ["m1"]  # m1 first, m2 not beside it
    await buffer.complete(first, [Outcome.delivered()], WAIT, now=start + 31)
    (second,) = await buffer.claim("crm", 100, 60, now=start + 32)
    assert [m.provider_id for m in second.messages] == ["m2"]
