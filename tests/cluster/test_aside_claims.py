"""Claims from several processes at once on one PostgreSQL buffer while some batches are
aside (deal64: their messages are on the lead, only other targets wait) and others fail
on the lead: a later batch may pass an aside batch, even while that one's retry is in
flight in another process, but never one whose messages have not reached the lead. The
invariant checked: when a batch's messages reach the lead (delivered, or aside), every
older batch of its conversation already reached it. Outcomes are drawn at random (seeded)."""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict

from bridge.contracts import Outcome
from tests.cluster.test_concurrent_claims import POLICY, _message

CONVERSATIONS, ROUNDS = 4, 6


def _outcome(rng: random.Random, tries: int) -> Outcome:
    """delivered, aside (on the lead, a deal's copy waits), or a failure on the lead; a
    batch is delivered by its fourth try."""
    if tries >= 4:
        return Outcome.delivered()
    return rng.choice([Outcome.delivered(), Outcome.retry("deal down", transient=True,
                                                          aside=True),
                       Outcome.retry("lead down", transient=True)])


async def test_a_later_batch_passes_only_batches_whose_messages_reached_the_lead(open_buffers):
    buffers = await open_buffers(3)
    await buffers[0].install_sinks(["crm"])
    rng = random.Random(68)
    for round_ in range(ROUNDS):  # each round a batch of its own per conversation
        await buffers[0].append([_message(c, round_) for c in range(CONVERSATIONS)])
        assert await buffers[0].claim("crm", 0, 30) == []
    on_lead: dict[str, set[int]] = defaultdict(set)  # conversation -> rounds on the lead
    tries: dict[int, int] = defaultdict(int)
    broken: list[str] = []

    async def work(buffer) -> None:  # noqa: ANN001 - a PostgresBuffer
        idle = 0
        while idle < 30:
            claims = await buffer.claim("crm", 3, 30, batch_size=CONVERSATIONS * ROUNDS)
            if not claims:
                idle += 1
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for claim in claims:
                key = claim.batch.conversation.key
                rounds = {int(m.text.split(":")[1]) for m in claim.messages}
                tries[claim.batch_id] += 1
                outcome = _outcome(rng, tries[claim.batch_id])
                if outcome.kind == "delivered" or outcome.aside:
                    missing = set(range(min(rounds))) - on_lead[key]
                    if missing:
                        broken.append(f"{key}: rounds {sorted(rounds)} before {missing}")
                    on_lead[key] |= rounds
                await asyncio.sleep(0.002)  # a sink's call
                await buffer.complete(claim, [outcome] * len(claim.messages), POLICY)

    await asyncio.gather(*(work(b) for b in buffers))
    assert broken == []
    assert all(r == set(range(ROUNDS)) for r in on_lead.values()), on_lead
    assert all(s["backlog"] == 0 for s in await buffers[0].sinks())
