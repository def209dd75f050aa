"""Each read() of the buffer is one snapshot: all its statements see the data as one commit
left it, on both engines. Was: SQLite ran each statement of a read in autocommit on one
shared reader connection (PostgreSQL on a pooled connection outside a transaction), so a
completion committing between two statements showed a business number synced with its
chat window still open (CI failed test_numbers_status once on it).

The reads here pause between two of their statements on an event while a real write
commits: the interleaving is forced, not hoped for."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Any

import pytest
import sqlalchemy as sa

import bridge.buffer.reads as reads
from bridge.buffer import Policy
from bridge.buffer.compiler import Query
from bridge.buffer.connectors import Connector, Row
from bridge.buffer.sqlite import READERS
from bridge.buffer.views import ReadMethods
from bridge.contracts import Outcome
from bridge.status import buffer_report, page_data
from tests.backends import sqlite_only
from tests.helpers import message

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)
MESSAGES = Query(sa.text("SELECT count(*) FROM messages"))


class Paused(Connector):
    """A read's real connector that, after its first statement, waits for `resume`
    (having set `paused`): the test commits a write in between."""

    def __init__(self, db: Connector, paused: asyncio.Event, resume: asyncio.Event) -> None:
        self.db, self.dialect = db, db.dialect
        self.paused, self.resume, self.statements = paused, resume, 0

    async def rows(
        self, query: Query, values: Sequence[Any] | None = None, /, **params: Any
    ) -> list[Row]:
        found = await self.db.rows(query, values, **params)
        self.statements += 1
        if self.statements == 1:
            self.paused.set()
            await self.resume.wait()
        return found

    async def run(self, query: Query, **params: Any) -> int:
        raise AssertionError("a read writes nothing")

    async def many(self, query: Query, params: Any) -> None:
        raise AssertionError("a read writes nothing")


async def paused_read(buffer, work, resume: asyncio.Event) -> Any:  # noqa: ANN001
    """Start `work` as a read that pauses after its first statement; (task, paused)."""
    paused = asyncio.Event()
    task = asyncio.create_task(buffer.read(lambda db: work(Paused(db, paused, resume))))
    waiting = asyncio.create_task(paused.wait())
    await asyncio.wait({task, waiting}, return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if task.done():
        task.result()  # raises what the read raised
    return task


async def twice(db: Connector) -> tuple[int, int]:
    return await db.value(MESSAGES), await db.value(MESSAGES)


async def test_a_read_sees_one_snapshot_while_a_write_commits_between_its_statements(buffer):
    await buffer.append([message(1)])
    resume = asyncio.Event()
    task = await paused_read(buffer, twice, resume)
    await buffer.append([message(2)])  # committed while the read is between statements
    resume.set()
    assert await task == (1, 1)  # was (1, 2): each statement its own snapshot
    assert await buffer.read(twice) == (2, 2)  # the next read sees the commit


async def test_numbers_never_show_a_number_synced_with_its_window_still_open(buffer):
    """reads.numbers reads the open windows, then the last syncs: a completion committing
    between the two showed the number synced with its window open (1 open, synced)."""
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, account="106540352242922")])
    (claim,) = await buffer.claim("crm", 100, 60)
    resume = asyncio.Event()
    task = await paused_read(buffer, lambda db: reads.numbers(db, "crm"), resume)
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    resume.set()
    (number,) = await task
    assert (number["open"], number["last_synced_at"]) == (1, None)  # all before the commit
    (number,) = await buffer.numbers("crm")
    assert number["open"] == 0 and number["last_synced_at"] is not None


async def test_reads_side_by_side_each_keep_their_own_snapshot(buffer):
    """More reads at once than the SQLite buffer has reader connections, the first ones
    paused mid-read while a write commits: none runs inside another's transaction (a
    second BEGIN on a shared connection failed), each sees one state throughout."""
    await buffer.append([message(1)])
    resume = asyncio.Event()
    first = await paused_read(buffer, twice, resume)
    second = await paused_read(buffer, twice, resume)
    rest = [asyncio.create_task(buffer.read(twice)) for _ in range(4)]
    await buffer.append([message(2)])
    resume.set()
    assert await first == await second == (1, 1)
    assert all(a == b for a, b in await asyncio.gather(*rest))
    assert await buffer.read(twice) == (2, 2)


async def test_a_read_that_raises_or_is_cancelled_still_ends_its_transaction(buffer):
    """A read left open would keep its old snapshot for the next read on its connection
    (or refuse its BEGIN), and keep the WAL from being reset."""
    await buffer.append([message(1)])

    async def fails(db: Connector) -> None:
        await db.value(MESSAGES)
        raise ValueError("a bug in a read")

    for _ in range(3):  # more than the connections it might have been lent
        with pytest.raises(ValueError, match="a bug in a read"):
            await buffer.read(fails)
    task = await paused_read(buffer, twice, asyncio.Event())  # never resumed
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await buffer.append([message(2)])
    for _ in range(3):
        assert await buffer.read(twice) == (2, 2)


@sqlite_only  # the WAL is SQLite's
async def test_no_read_holds_the_wal_once_it_returned(buffer):
    """After reads that returned, raised or were cancelled, a TRUNCATE checkpoint from
    another connection (no busy wait) empties the WAL: no reader holds a snapshot."""
    await buffer.append([message(1)])

    async def fails(db: Connector) -> None:
        await db.value(MESSAGES)
        raise ValueError("a bug in a read")

    with pytest.raises(ValueError):
        await buffer.read(fails)
    task = await paused_read(buffer, twice, asyncio.Event())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await buffer.read(twice) == (1, 1)
    await buffer.append([message(2)])
    with sqlite3.connect(buffer.path) as other:
        busy, _, _ = other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0


class PausedReads(ReadMethods):
    """The buffer's status reads, the first of them pausing after its first statement
    (Paused) until `resume`; those after it run as they are."""

    def __init__(self, buffer, resume: asyncio.Event) -> None:  # noqa: ANN001 - a Buffer
        self.buffer, self.resume, self.paused = buffer, resume, asyncio.Event()

    async def read(self, work):  # noqa: ANN001, ANN201 - as Buffer.read
        if self.paused.is_set():
            return await self.buffer.read(work)
        return await self.buffer.read(lambda db: work(Paused(db, self.paused, self.resume)))


async def _claimed(buffer) -> Any:  # noqa: ANN001 - a Buffer
    """One pending message of one business number, claimed by the sink crm."""
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, account="106540352242922")])
    (claim,) = await buffer.claim("crm", 100, 60)
    return claim


async def _completed_while_paused(buffer, claim, compose) -> dict:  # noqa: ANN001
    """`compose(reads)` with the buffer's reads paused after their first statement while
    the claim's completion commits."""
    resume = asyncio.Event()
    reads_ = PausedReads(buffer, resume)
    task = asyncio.create_task(compose(reads_))
    await asyncio.wait(
        {task, asyncio.create_task(reads_.paused.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    resume.set()
    return await task


def _as_of(sink: dict) -> tuple:
    (number,) = sink["numbers"]
    return (
        sink["backlog"],
        number["open"],
        number["last_synced_at"] is not None,
        sink.get("last_delivered_at") is not None,
    )


async def test_the_status_report_is_one_snapshot(buffer):
    """`bridge status` and /status (buffer_report): a sink's backlog, its numbers' open
    windows and last syncs, and its last delivery (the health verdict's) all as of one
    commit. Was: each read its own, so the backlog said 1 pending while the number said
    synced with nothing open and the sink said delivered."""
    claim = await _claimed(buffer)
    report = await _completed_while_paused(buffer, claim, buffer_report)
    (sink,) = report["sinks"]
    assert _as_of(sink) == (1, 1, False, False)  # all of it before the completion
    (sink,) = (await buffer_report(buffer))["sinks"]
    assert _as_of(sink) == (0, 0, True, True)


async def test_the_status_page_is_one_snapshot(buffer):
    """The status page's figures and conversation list (page_data), the same way."""
    claim = await _claimed(buffer)
    data = await _completed_while_paused(buffer, claim, lambda r: page_data(r, "crm"))
    (sink,) = data["sinks"]
    (row,) = data["conversations"]
    assert _as_of(sink) == (1, 1, False, False)
    assert (row["pending"], row["synced"], row["last_synced_at"]) == (1, 0, None)


@sqlite_only  # the reader connections are SQLite's (PostgreSQL's pool is its own)
async def test_a_read_inside_a_read_joins_its_snapshot_instead_of_waiting_for_a_connection(
        buffer):
    """A snapshot's work that calls the buffer's own reads held one reader connection while
    waiting for another: as many such reads at once as there are connections, and none
    ever came back. A read inside a read now runs in the outer one's snapshot."""
    await buffer.append([message(1)])

    async def nested(db: Connector) -> tuple[int, tuple[int, int]]:
        first = await db.value(MESSAGES)
        await asyncio.sleep(0.05)  # every outer read holds its connection before any nests
        return first, await buffer.read(twice)

    reads_at_once = READERS + 2  # more reads at once than it has connections
    found = await asyncio.wait_for(asyncio.gather(
        *(buffer.read(nested) for _ in range(reads_at_once))), timeout=10)
    assert found == [(1, (1, 1))] * reads_at_once
