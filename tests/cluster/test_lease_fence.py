"""A drain delivers a batch only while its lease holds (adv31): a large claim's last
batches wait their turn behind the others, and a process paused (SIGSTOP, a frozen VM)
between its claim and a delivery resumes late; meanwhile their leases may have expired
and another process taken and posted them. Before each delivery whose lease would not
outlast deliver_timeout the drain renews it, and leaves a batch whose lease moved on."""

from __future__ import annotations

import asyncio

from bridge.buffer import Policy
from bridge.contracts import Outcome
from bridge.sync import SinkRunner
from tests.helpers import RecordingSink, message

POLICY = Policy(max_attempts=5, retry_delay=lambda attempt: 0.0, held_delay=0.0)


async def test_a_batch_whose_lease_was_taken_while_it_waited_is_not_delivered(open_buffers):
    mine, other = await open_buffers(2)
    await mine.install_sinks(["memory"])
    await mine.append([message(n, f"+9198765000{n:02d}") for n in range(4)])  # 4 batches
    sink = RecordingSink(lease=2.0, deliver_timeout=1.0, delay=0.8)  # 0.8 s a delivery
    drain = asyncio.ensure_future(SinkRunner(sink, mine).drain())  # claims all 4 at once
    await asyncio.sleep(2.1)  # the 4th still waits its turn; its lease has run out
    taken = await other.claim("memory", 10, lease=60)
    for claim in taken:
        await other.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    await drain
    theirs = {m.provider_id for claim in taken for m in claim.messages}
    assert theirs, "the other process took nothing: the test lost its timing"
    assert not theirs & set(sink.delivered)  # each delivered by one process only
    assert sorted(theirs | set(sink.delivered)) == [f"m{n}" for n in range(4)]


async def test_a_lease_about_to_run_out_is_renewed_before_the_delivery(open_buffers):
    mine, other = await open_buffers(2)
    await mine.install_sinks(["memory"])
    await mine.append([message(n, f"+9198765000{n:02d}") for n in range(3)])
    sink = RecordingSink(lease=2.0, deliver_timeout=1.0, delay=0.75)
    drain = asyncio.ensure_future(SinkRunner(sink, mine).drain())
    await asyncio.sleep(2.1)  # the 3rd, begun at 1.5 s, is still being delivered
    assert await other.claim("memory", 10, lease=60) == []  # renewed as it began
    await drain
    assert sorted(sink.delivered) == ["m0", "m1", "m2"]
