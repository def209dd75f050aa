"""The SQLite buffer's read side: each read() one snapshot, on a connection of its own.

A read's statements run in one read transaction (BEGIN ... COMMIT), so they all see the
file as one commit left it: a completion committing between two of them (a business
number synced, its window closed) is seen whole or not at all. A connection holds one
transaction at a time, so each read borrows a reader connection for its length: up to
`size` reads run side by side (WAL: beside the writer too, which they never block),
further ones wait for a connection to come back. Connections open as reads need them.

A read transaction keeps the WAL from being checkpointed past its snapshot while it
lasts (and a purge's TRUNCATE checkpoint waits for it): a read's work awaits only its
own statements, never anything else, so each one stays short.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import aiosqlite

from bridge.buffer.connectors import AioSqliteConnector, Connector
from bridge.errors import BufferClosed

logger = logging.getLogger(__name__)
T = TypeVar("T")
# The reader connection (and its Readers) the current task's read holds: a read begun
# inside it (a status view calling the buffer) joins its snapshot instead of waiting for a
# second connection while holding one (with every connection held so, none came back)
_HELD: contextvars.ContextVar[tuple[Readers, aiosqlite.Connection] | None] = \
    contextvars.ContextVar("held_reader", default=None)


class Readers:
    """Reader connections (`first` already open; `connect` opens another), each lent to
    one read at a time."""

    def __init__(
        self,
        first: aiosqlite.Connection,
        connect: Callable[[], Awaitable[aiosqlite.Connection]],
        size: int,
    ) -> None:
        self._connect = connect
        self._idle = [first]
        self._open = [first]
        self._room = asyncio.Semaphore(size)
        self._closed = False

    async def read(self, work: Callable[[Connector], Awaitable[T]]) -> T:
        """`work(db)` in one read transaction on a connection no other read uses meanwhile
        (a read inside a read of the same buffer runs in the outer one's snapshot)."""
        held = _HELD.get()
        if held is not None and held[0] is self:
            return await work(AioSqliteConnector(held[1]))
        async with self._lend() as conn:
            token = _HELD.set((self, conn))
            try:
                return await snapshot(conn, work)
            except Exception as exc:
                if self._closed:  # its connection was closed under it (the buffer closed)
                    raise BufferClosed("the buffer was closed during the read") from exc
                raise
            finally:
                _HELD.reset(token)

    @asynccontextmanager
    async def _lend(self) -> AsyncIterator[aiosqlite.Connection]:
        """A connection for one read; none once the buffer closed (a read waiting for one
        then got a connection close() had closed, and a driver's error instead of
        BufferClosed)."""
        async with self._room:
            if self._closed:
                raise BufferClosed("the buffer is closed")
            conn = self._idle.pop() if self._idle else await self._add()
            try:
                yield conn
            finally:
                if not self._closed:  # else close() closed it: it is no one's to lend
                    self._idle.append(conn)

    async def _add(self) -> aiosqlite.Connection:
        conn = await self._connect()
        if self._closed:  # closed while it opened
            await conn.close()
            raise BufferClosed("the buffer is closed")
        self._open.append(conn)
        return conn

    async def close(self) -> None:
        """Close every reader connection (each even if one fails: its thread stops)."""
        self._closed = True
        for conn in self._open:
            try:
                await conn.close()
            except Exception:
                logger.exception("closing one of the buffer's read connections failed")
        self._open.clear()
        self._idle.clear()


async def snapshot(conn: aiosqlite.Connection, work: Callable[[Connector], Awaitable[T]]) -> T:
    """Run `work` inside BEGIN ... COMMIT on `conn`: every statement sees one snapshot.

    The transaction ends whatever happens: a read that raises (or is cancelled) rolls it
    back. aiosqlite runs a connection's calls in the order they were made, so the
    rollback of a cancelled read runs after its last statement and before the next
    read's BEGIN; commit and rollback do nothing once no transaction is open."""
    try:
        await conn.execute("BEGIN")
        result = await work(AioSqliteConnector(conn))
        await conn.commit()
    except BaseException:
        await conn.rollback()
        raise
    return result
