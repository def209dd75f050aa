"""Claims from several processes at once, on one PostgreSQL buffer, with no lock but the
rows': every message is delivered once, each conversation's batches in order, and never
two processes on one conversation at a time (issue 24: SKIP LOCKED claims)."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from datetime import UTC, datetime

from bridge.buffer import Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Message

POLICY = Policy(max_attempts=5, retry_delay=lambda attempt: 0.0, held_delay=0.0)
CONVERSATIONS, ROUNDS = 5, 8  # few conversations, many batches each: claims see several


def _message(conversation: int, n: int) -> Message:
    return Message(source="whatsapp", provider_id=f"c{conversation}-{n}",
                   conversation=f"+9190000{conversation:05d}", account="acc",
                   direction=Direction.IN, sent_at=datetime.now(UTC), kind="text",
                   text=f"{conversation}:{n}")


async def test_processes_claiming_at_once_keep_each_conversation_in_order(open_buffers):
    buffers = await open_buffers(3)
    await buffers[0].install_sinks(["crm"])
    delivered: dict[str, list[int]] = defaultdict(list)  # conversation -> message numbers
    held: dict[str, set] = defaultdict(set)  # conversation -> the leases on it now
    overlaps: list[str] = []
    appended = asyncio.Event()

    async def work(name: str, buffer) -> None:  # noqa: ANN001 - a PostgresBuffer
        idle = 0
        while idle < 20:
            claims = await buffer.claim("crm", 4, 30, batch_size=7)
            if not claims:
                idle += appended.is_set()
                await asyncio.sleep(0.01)
                continue
            idle = 0
            for claim in claims:
                key = claim.batch.conversation.key
                held[key].add((name, claim.batch_id))
                if len(held[key]) > 1:
                    overlaps.append(f"{key}: {sorted(held[key])}")
                await asyncio.sleep(0.005)  # a sink's call
                delivered[key] += [int(m.text.split(":")[1]) for m in claim.messages]
                held[key].discard((name, claim.batch_id))
                await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages),
                                      POLICY)

    async def append() -> None:
        # each round's messages become batches of their own before anything is leased
        # (a claim of 0 batches only forms them): every conversation has ROUNDS batches
        # waiting when the processes start, the newer ones due too
        for round_ in range(ROUNDS):
            await buffers[round_ % 3].append([_message(c, round_ * 2 + k)
                                              for c in range(CONVERSATIONS) for k in (0, 1)])
            assert await buffers[round_ % 3].claim("crm", 0, 30) == []
        appended.set()

    started = time.monotonic()
    await append()
    await asyncio.gather(*(work(f"p{i}", b) for i, b in enumerate(buffers)))
    assert overlaps == []
    assert len(delivered) == CONVERSATIONS
    for key, numbers in delivered.items():
        assert numbers == list(range(ROUNDS * 2)), (key, numbers)  # once each, in order
    assert time.monotonic() - started < 60
    assert all(s["backlog"] == 0 for s in await buffers[0].sinks())
