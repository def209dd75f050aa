"""An asyncpg connection behind the small aiosqlite surface the buffer's SQL modules use.

`db.execute(sql, params)` (awaited, or `async with`), `cursor.fetchall()`, `fetchone()`,
`rowcount`, and `db.executemany(sql, rows)`: the statements are the buffer's SQLite SQL,
rewritten by `bridge.buffer.dialect.to_postgres`. Rows come back as tuples, with
PostgreSQL's numeric (sum() of bigint) turned into int or float as SQLite would give them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

import asyncpg

from bridge.buffer.dialect import to_postgres

DIALECT = "postgresql"


class PgCursor:
    """The rows (or row count) of one statement, already fetched."""

    def __init__(self, rows: list[tuple[Any, ...]], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    async def fetchall(self) -> list[tuple[Any, ...]]:
        return self._rows

    async def fetchone(self) -> tuple[Any, ...] | None:
        return self._rows[0] if self._rows else None

    async def close(self) -> None:
        return None

    async def __aenter__(self) -> PgCursor:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None


class _Pending:
    """What `execute` returns: await it, or use it as `async with ... as cursor`."""

    def __init__(self, db: PgDb, sql: str, params: Sequence[Any]) -> None:
        self._db, self._sql, self._params = db, sql, params

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._db.run(self._sql, self._params).__await__()

    async def __aenter__(self) -> PgCursor:
        return await self._db.run(self._sql, self._params)

    async def __aexit__(self, *exc: object) -> None:
        return None


class PgDb:
    """One connection, inside the transaction the caller opened."""

    dialect = DIALECT

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> _Pending:
        return _Pending(self, sql, params)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        rows = [tuple(row) for row in rows]
        if rows:
            await self.conn.executemany(to_postgres(sql), rows)

    async def run(self, sql: str, params: Sequence[Any] = ()) -> PgCursor:
        """Run one statement; rows for a query or RETURNING, else the affected count."""
        text = to_postgres(sql)
        head = text.lstrip()[:6].upper()
        if head in ("SELECT", "WITH R", "VALUES") or head.startswith("WITH") \
                or " RETURNING " in text.upper():
            rows = [plain(row) for row in await self.conn.fetch(text, *params)]
            return PgCursor(rows, len(rows))
        status = await self.conn.execute(text, *params)
        return PgCursor([], _count(status))

    async def lock(self, name: str) -> None:
        """Hold a transaction-scoped advisory lock named `name` (released at commit)."""
        await self.conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", name)


def plain(row: Sequence[Any]) -> tuple[Any, ...]:
    """A record as a tuple; numeric values as SQLite would return them (int or float)."""
    return tuple(_plain_value(v) if isinstance(v, Decimal) else v for v in row)


def _plain_value(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0
