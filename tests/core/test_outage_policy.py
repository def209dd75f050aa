"""How the buffer judges failures (issue 25, point 5), on a fake clock: transient ones by
the time since the batch first failed (retry_for), the others by count (max_attempts)."""

from __future__ import annotations

from bridge.attention import dead_letter_advice
from bridge.buffer import Policy
from bridge.contracts import Outcome
from tests.helpers import message

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0,
                retry_for=3600.0)
DOWN = Outcome.retry("CRM transient: HTTP 503", transient=True)
BUG = Outcome.retry("sink error: KeyError: 'Id'")


async def attempt(buffer, at: float, outcome: Outcome) -> dict[str, int]:
    (claim,) = await buffer.claim("crm", 10, 60, now=at)
    return await buffer.complete(claim, [outcome] * len(claim.messages), POLICY, now=at)


async def test_transient_failures_past_max_attempts_stay_pending(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    for minute in range(10):  # ten tries in ten minutes, max_attempts 3
        assert await attempt(buffer, 1000.0 + 60 * minute, DOWN) == {"retry": 1}
    assert await buffer.dead_letters() == []
    assert await attempt(buffer, 1700.0, Outcome.delivered()) == {"done": 1}


async def test_other_failures_count_from_zero_after_an_outage(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    for minute in range(5):
        await attempt(buffer, 1000.0 + 60 * minute, DOWN)
    assert await attempt(buffer, 1400.0, BUG) == {"retry": 1}
    assert await attempt(buffer, 1460.0, BUG) == {"retry": 1}
    assert await attempt(buffer, 1520.0, BUG) == {"dead": 1}
    (dead,) = await buffer.dead_letters()
    assert dead["reason"] == "gave up after 3 attempts: sink error: KeyError: 'Id'"


async def test_after_retry_for_a_transient_failure_dead_letters_with_the_next_step(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    assert await attempt(buffer, 1000.0, DOWN) == {"retry": 1}  # the window starts here
    assert await attempt(buffer, 4599.0, DOWN) == {"retry": 1}
    assert await attempt(buffer, 4600.0, DOWN) == {"dead": 1}
    (dead,) = await buffer.dead_letters()
    assert dead["reason"] == ("crm kept failing for 1h (last: CRM transient: HTTP 503): "
                              "check its service status, then requeue")
    # requeued, it is a new batch: its window starts at its own first failure
    assert await buffer.requeue("crm") == 1
    assert await attempt(buffer, 9000.0, DOWN) == {"retry": 1}
    assert await attempt(buffer, 12000.0, DOWN) == {"retry": 1}
    assert await attempt(buffer, 12600.0, DOWN) == {"dead": 1}


async def test_without_retry_for_a_transient_failure_counts_like_any(buffer):
    """A Policy built without retry_for (a sink's own runner) keeps the count."""
    counted = Policy(max_attempts=2, retry_delay=lambda attempt: 0.0, held_delay=0.0)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 10, 60, now=1000.0)
    assert await buffer.complete(claim, [DOWN], counted, now=1000.0) == {"retry": 1}
    (claim,) = await buffer.claim("crm", 10, 60, now=1001.0)
    assert await buffer.complete(claim, [DOWN], counted, now=1001.0) == {"dead": 1}


def test_the_status_page_reads_an_outage_dead_letter_as_one():
    why, step = dead_letter_advice("leadsquared kept failing for 1d (last: LeadSquared "
                                   "transient: HTTP 503): check its service status, then "
                                   "requeue", "leadsquared")
    assert why == "leadsquared kept failing for 1d (last: LeadSquared transient: HTTP 503)"
    assert step == "Check leadsquared's service status; once it works, requeue it."
