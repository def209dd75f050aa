"""Async-shaped SQL over a plain sqlite3 connection, for code shared with PostgreSQL.

The append path (append, identity, media and failure notices) is written once with
`await db.execute(...)`. PostgreSQL runs it on asyncpg (bridge.buffer.pgdb); SQLite runs
it inside the writer's thread on plain sqlite3, where nothing ever waits: `drive` runs
such a coroutine to its end in one step.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


class SyncCursor:
    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self._cursor = cursor
        self.rowcount = cursor.rowcount

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def __aenter__(self) -> SyncCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Done:
    """An already finished statement: await it, or `async with` it."""

    def __init__(self, cursor: SyncCursor) -> None:
        self._cursor = cursor

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._cursor
        yield  # a generator that finishes without suspending

    async def __aenter__(self) -> SyncCursor:
        return self._cursor

    async def __aexit__(self, *exc: object) -> None:
        return None


class SyncDb:
    """A sqlite3 connection with the aiosqlite-shaped calls the shared code makes."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Done:
        return _Done(SyncCursor(self.conn.execute(sql, params)))

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    async def lock(self, name: str) -> None:
        """One writer holds the whole file: no finer lock is needed."""


def drive(step: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (SQL on SyncDb) to its end; return its value."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("a buffer step waited on I/O inside the SQLite writer thread")
