"""A buffer closed while reads hold every reader connection and another read waits for
one (a status page polled as the bridge stops): each read ends with BufferClosed, the
error every other buffer call gives once it is closed (the status routes and `bridge
status` know it), never a driver's error about a closed connection (ValueError), and
no closed connection goes back to the pool for the read that waits. Real SQLite file,
real reader connections; reads pause on events, not sleeps."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from bridge.buffer.compiler import Query
from bridge.buffer.sqlite import READERS
from bridge.errors import BufferClosed
from tests.backends import sqlite_only
from tests.core.test_read_snapshot import MESSAGES
from tests.helpers import message


@sqlite_only  # the reader connections are SQLite's (PostgreSQL's pool is asyncpg's)
async def test_reads_held_or_waiting_when_the_buffer_closes_end_with_buffer_closed(buffer):
    entered, resume = asyncio.Semaphore(0), asyncio.Event()

    async def held(db):  # noqa: ANN001
        await db.value(MESSAGES)
        entered.release()
        await resume.wait()
        return await db.value(MESSAGES)

    holders = [asyncio.ensure_future(buffer.read(held)) for _ in range(READERS)]
    for _ in range(READERS):
        await asyncio.wait_for(entered.acquire(), 10)
    waiting = asyncio.ensure_future(buffer.read(lambda db: db.value(MESSAGES)))
    await asyncio.sleep(0)  # it queues for a connection (none is free)
    assert not waiting.done()
    closing = asyncio.ensure_future(buffer.close())
    await asyncio.sleep(0)
    resume.set()
    await asyncio.wait_for(closing, 10)
    results = await asyncio.wait_for(
        asyncio.gather(*holders, waiting, return_exceptions=True), 10)
    # a read whose statements all ran before its connection closed may have its answer
    assert all(isinstance(r, BufferClosed | int) for r in results), results
    with pytest.raises(BufferClosed):
        await buffer.read(lambda db: db.value(MESSAGES))


DELETE_ALL = Query(sa.text("DELETE FROM messages"))


async def test_a_read_that_writes_is_refused_on_both_engines(buffer):
    """PostgreSQL runs read() READ ONLY: a write there fails. SQLite's reader connections
    took it (a read-write transaction beside the writer, waiting on its lock): code that
    writes inside read() passed every SQLite test and failed on PostgreSQL only."""
    await buffer.append([message(1)])
    with pytest.raises(Exception, match="(?i)read.?only"):
        await buffer.read(lambda db: db.run(DELETE_ALL))
    assert await buffer.read(lambda db: db.value(MESSAGES)) == 1
