"""Thin connectors: run a compiled Query on the driver each engine already uses.

Every SQL function of the buffer takes one `Connector` and awaits `rows`, `one`, `value`,
`run` or `many` with named parameters. Three drivers sit behind it:
- `SqliteConnector`: plain sqlite3 in the SQLite writer's own thread, where nothing ever
  waits (`drive` runs such a coroutine to its end in one step);
- `AioSqliteConnector`: aiosqlite, for the SQLite buffer's reads;
- `PgConnector`: asyncpg, inside the transaction its caller opened.
The SQL text is never changed here: each Query was compiled for the connector's dialect.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite
import sqlalchemy as sa

from bridge.buffer.compiler import SQLITE, Query, postgresql_dialect

if TYPE_CHECKING:  # asyncpg loads with the PostgreSQL backend, not for an SQLite buffer
    import asyncpg

T = TypeVar("T")
Row = tuple[Any, ...]


class Connector(ABC):
    """One connection, inside a transaction (or a read) its owner opened."""

    dialect: sa.Dialect

    @abstractmethod
    async def rows(self, query: Query, values: Sequence[Any] | None = None, /,
                   **params: Any) -> list[Row]:
        """Every row the statement returns. Parameters by name, or `values` in the
        statement's parameter order (the hot path's multi-row inserts)."""

    @abstractmethod
    async def run(self, query: Query, **params: Any) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    async def many(self, query: Query,
                   params: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        """Run a statement once per parameter set (no rows back): each a mapping of
        names, or values in the statement's parameter order."""

    async def one(self, query: Query, **params: Any) -> Row | None:
        """The first row, or None."""
        found = await self.rows(query, **params)
        return found[0] if found else None

    async def value(self, query: Query, **params: Any) -> Any:
        """The first column of the first row, or None."""
        found = await self.rows(query, **params)
        return found[0][0] if found else None

    async def lock(self, name: str, shared: bool = False) -> None:
        """Hold the lock `name` until this transaction ends (`shared`: beside other shared
        holders, not beside an exclusive one). SQLite's one writer already holds the whole
        file, so only PostgreSQL takes one."""
        return None

    async def try_lock(self, name: str) -> bool:
        """Take the lock `name` until this transaction ends if nobody holds it; whether
        it was taken (SQLite's one writer always has it)."""
        return True


class SqliteConnector(Connector):
    """A sqlite3 connection used from its own thread (the SQLite writer's)."""

    dialect = SQLITE

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def rows(self, query: Query, values: Sequence[Any] | None = None, /,
                   **params: Any) -> list[Row]:
        compiled = query.on(SQLITE)
        found = self.conn.execute(compiled.sql, compiled.args(
            params if values is None else values)).fetchall()
        return [compiled.row(r) for r in found] if compiled.results else found

    async def run(self, query: Query, **params: Any) -> int:
        compiled = query.on(SQLITE)
        return self.conn.execute(compiled.sql, compiled.args(params)).rowcount

    async def many(self, query: Query,
                   params: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        compiled = query.on(SQLITE)
        self.conn.executemany(compiled.sql, compiled.many(params))


class AioSqliteConnector(Connector):
    """An aiosqlite connection (the SQLite buffer's reads)."""

    dialect = SQLITE

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self.conn = conn

    async def rows(self, query: Query, values: Sequence[Any] | None = None, /,
                   **params: Any) -> list[Row]:
        compiled = query.on(SQLITE)
        async with self.conn.execute(compiled.sql, compiled.args(
                params if values is None else values)) as cursor:
            found = await cursor.fetchall()
        return [compiled.row(r) for r in found]

    async def run(self, query: Query, **params: Any) -> int:
        compiled = query.on(SQLITE)
        async with self.conn.execute(compiled.sql, compiled.args(params)) as cursor:
            return cursor.rowcount

    async def many(self, query: Query,
                   params: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        compiled = query.on(SQLITE)
        await self.conn.executemany(compiled.sql, compiled.many(params))


class PgConnector(Connector):
    """An asyncpg connection, inside the transaction its caller opened."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.dialect = postgresql_dialect()

    async def rows(self, query: Query, values: Sequence[Any] | None = None, /,
                   **params: Any) -> list[Row]:
        compiled = query.on(self.dialect)
        found = await self.conn.fetch(compiled.sql, *compiled.args(
            params if values is None else values))
        return [compiled.row(plain(r)) for r in found]

    async def run(self, query: Query, **params: Any) -> int:
        compiled = query.on(self.dialect)
        status = await self.conn.execute(compiled.sql, *compiled.args(params))
        return _count(status)

    async def many(self, query: Query,
                   params: Iterable[Mapping[str, Any] | Sequence[Any]]) -> None:
        compiled = query.on(self.dialect)
        values = compiled.many(params)
        if values:
            await self.conn.executemany(compiled.sql, values)

    async def lock(self, name: str, shared: bool = False) -> None:
        """A transaction-scoped advisory lock (released at commit or rollback)."""
        await self.rows(_LOCK_SHARED if shared else _LOCK, name=name)

    async def try_lock(self, name: str) -> bool:
        return bool(await self.value(_TRY_LOCK, name=name))


# Advisory locks are the database's, not a schema's: the name is taken within the
# connection's schema, so bridges in separate schemas of one database (`?schema=`) never
# wait on each other's locks (a claim skipped forming while another schema's bridge formed).
_NAME = sa.bindparam("name", type_=sa.Text)
_KEY = sa.func.hashtext(sa.func.concat(sa.func.current_schema(), ":", _NAME))
_LOCK = Query(sa.select(sa.func.pg_advisory_xact_lock(_KEY)))
_LOCK_SHARED = Query(sa.select(sa.func.pg_advisory_xact_lock_shared(_KEY)))
_TRY_LOCK = Query(sa.select(sa.func.pg_try_advisory_xact_lock(_KEY)))


def plain(row: Any) -> Row:
    """A record as a tuple; PostgreSQL's numeric (sum of bigint) as int or float, the way
    SQLite returns the same sum."""
    return tuple(_number(v) if type(v) is Decimal else v for v in row)


def _number(value: Decimal) -> int | float:
    return int(value) if value == value.to_integral_value() else float(value)


def _count(status: str) -> int:
    """Rows affected, from a command tag such as 'UPDATE 3' or 'INSERT 0 1'."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def drive(step: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (SQL on a SqliteConnector) to its end."""
    try:
        step.send(None)
    except StopIteration as done:
        return done.value
    step.close()
    raise RuntimeError("a buffer step waited on I/O inside the SQLite writer thread")
