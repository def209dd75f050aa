"""A PostgreSQL blip while a drain records its outcomes (issue 25, point 6): the batch the
sink delivered must not stay leased for the whole lease (5 minutes); its outcomes are
recorded as soon as the server is back. The blip is a real loopback TCP proxy between the
buffer and the test server, cut while the sink delivers and restored a moment later."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

from bridge.buffer import Buffer
from bridge.contracts import Batch, Outcome
from bridge.sync import SinkRunner
from tests.backends import query
from tests.cluster.test_outage import Proxy, through
from tests.helpers import RecordingSink, message, wait_until

LEASE = 300.0  # the default: what a failed completion used to wait out


class CuttingSink(RecordingSink):
    """Delivers, then cuts the database off before the drain records the outcome."""

    def __init__(self, proxy: Proxy, outcome: Outcome) -> None:
        super().__init__("crm", behaviour=lambda _m: outcome, sync_interval=60,
                         lease=LEASE)
        self.proxy = proxy
        self.cut = asyncio.Event()

    async def deliver(self, batch: Batch) -> list[Outcome]:
        outcomes = await super().deliver(batch)
        if not self.cut.is_set():
            await self.proxy.cut()
            self.cut.set()
        return outcomes


async def _run_through_a_blip(pg_url: str, outcome: Outcome) -> tuple[CuttingSink, Buffer,
                                                                         float]:
    """Deliver one message while the server blips; return the sink, a direct buffer to look
    with, and how long after the server came back the batch stopped being leased."""
    server = urlsplit(pg_url)
    proxy = Proxy(server.hostname, server.port or 5432)
    await proxy.start()
    buffer = await Buffer.open(through(pg_url, proxy.port))
    direct = await Buffer.open(pg_url)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    sink = CuttingSink(proxy, outcome)
    runner = SinkRunner(sink, buffer)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(sink.cut.wait(), 10)
        await asyncio.sleep(1.5)  # the completion failed meanwhile
        assert await states(direct) == [("leased",)]
        await proxy.start()  # the same port: the server is back
        back = time.monotonic()
        await wait_until(lambda: _not_leased(direct), timeout=15)
        return sink, direct, time.monotonic() - back
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await buffer.close()
        await proxy.cut()


async def states(buffer: Buffer) -> list[tuple]:
    return [tuple(r) for r in await query(buffer, "SELECT state FROM batches")]


async def _not_leased(buffer: Buffer) -> bool:
    return await states(buffer) not in ([], [("leased",)])


async def test_a_delivered_batch_is_recorded_within_seconds_of_postgres_coming_back(pg_url):
    sink, direct, took = await _run_through_a_blip(pg_url, Outcome.delivered())
    try:
        assert took < 10, f"recorded {took:.1f}s after the server came back"
        assert await states(direct) == [("done",)]
        delivered = await query(direct, "SELECT state FROM deliveries")
        assert [tuple(r) for r in delivered] == [("done",)]
        assert sink.delivered == ["m1"]  # recorded, not delivered again
    finally:
        await direct.close()


async def test_a_batch_to_retry_is_claimable_within_seconds_of_postgres_coming_back(pg_url):
    sink, direct, took = await _run_through_a_blip(pg_url, Outcome.retry("CRM busy"))
    try:
        assert took < 10, f"released {took:.1f}s after the server came back"
        (row,) = await query(direct, "SELECT state, lease_token, next_attempt_at, "
                                     "last_error FROM batches")
        assert row[0] == "ready" and row[1] is None and row[3] == "CRM busy"
        assert row[2] < time.time() + 1  # the sink's short retry delay, not the lease
        claimed = await direct.claim("crm", 10, 60, now=time.time() + 1)
        assert [m.provider_id for c in claimed for m in c.messages] == ["m1"]
    finally:
        await direct.close()


async def test_outcomes_of_a_lease_that_moved_on_meanwhile_are_dropped(pg_url):
    """While the server was out of reach, the lease ran out and another process took the
    batch: the old outcomes are not recorded over its lease, and not tried for ever."""
    server = urlsplit(pg_url)
    proxy = Proxy(server.hostname, server.port or 5432)
    await proxy.start()
    buffer = await Buffer.open(through(pg_url, proxy.port))
    other = await Buffer.open(pg_url)  # another bridge process, with its own connection
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    sink = CuttingSink(proxy, Outcome.delivered())
    runner = SinkRunner(sink, buffer)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await asyncio.wait_for(sink.cut.wait(), 10)
        await wait_until(lambda: runner.unrecorded)
        (taken,) = await other.claim("crm", 10, 60, now=time.time() + LEASE + 1)  # expired
        await proxy.start()
        await wait_until(lambda: not runner.unrecorded, timeout=15)
        (row,) = await query(other, "SELECT state, lease_token FROM batches")
        assert tuple(row) == ("leased", taken.token)  # still the other process's lease
        assert [tuple(r) for r in await query(other, "SELECT state FROM deliveries")] \
            == [("pending",)]
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)
        await buffer.close()
        await other.close()
        await proxy.cut()
