"""The buffer backends the tests run against: SQLite always, PostgreSQL when
CHATBRIDGE_TEST_POSTGRES names a server (e.g. postgresql://postgres@127.0.0.1:5432/test);
each PostgreSQL test gets a fresh schema of its own, dropped afterwards."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest
import sqlalchemy as sa

POSTGRES = os.environ.get("CHATBRIDGE_TEST_POSTGRES", "")
NO_POSTGRES = ("CHATBRIDGE_TEST_POSTGRES is not set (e.g. postgresql://postgres@127.0.0.1"
               ":5432/test): the PostgreSQL backend is not tested")
needs_postgres = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)
BACKENDS = ["sqlite", pytest.param("postgresql", marks=needs_postgres)]


def postgres_url(schema: str) -> str:
    """The test server's URL with the buffer kept in `schema`."""
    joiner = "&" if "?" in POSTGRES else "?"
    return f"{POSTGRES}{joiner}schema={schema}"


def new_schema() -> str:
    return "cbtest_" + uuid.uuid4().hex[:12]


@asynccontextmanager
async def fresh_schema_url() -> AsyncIterator[str]:
    """A buffer URL in a new schema of its own, dropped afterwards."""
    schema = new_schema()
    try:
        yield postgres_url(schema)
    finally:
        await drop_schema(schema)


async def drop_schema(schema: str) -> None:
    """Drop a test's schema; a bridge of the test still closing can deadlock the drop
    (its last write against the cascade), so a deadlock is tried again."""
    conn = await asyncpg.connect(POSTGRES)
    try:
        for attempt in range(5):
            try:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                return
            except asyncpg.exceptions.DeadlockDetectedError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.2)
    finally:
        await conn.close()


def is_postgres(buffer) -> bool:  # noqa: ANN001 - any Buffer
    return type(buffer).__name__ == "PostgresBuffer"


sqlite_only = pytest.mark.parametrize(
    "buffer_target", ["sqlite", pytest.param("postgresql", marks=pytest.mark.skip(
        reason="SQLite-specific (file, PRAGMA, flock or writer behaviour)"))], indirect=True)


async def rows(buffer, sql: str, params: dict | None = None) -> list[tuple]:  # noqa: ANN001
    """Run `sql` (text both engines read alike; :name parameters) on a connection of its
    own, so it sees only committed rows. SQLAlchemy compiles the parameters for the
    buffer's engine; the text is never rewritten."""
    from bridge.buffer.compiler import POSTGRESQL, SQLITE, Query
    from bridge.buffer.connectors import plain
    from bridge.buffer.postgres import split_schema

    query = Query(sa.text(sql))
    if not is_postgres(buffer):
        compiled = query.on(SQLITE)
        with sqlite3.connect(buffer.path) as db:
            return db.execute(compiled.sql, compiled.args(params or {})).fetchall()
    compiled = query.on(POSTGRESQL)
    dsn, schema = split_schema(buffer.url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema} if schema else None)
    try:
        return [plain(r) for r in await conn.fetch(compiled.sql, *compiled.args(params or {}))]
    finally:
        await conn.close()


async def query(buffer, sql: str, params: dict | None = None) -> list[tuple]:  # noqa: ANN001
    """Run `sql` (portable text, :name parameters) on the buffer's own read side."""
    from bridge.buffer.compiler import Query

    return await buffer.read(lambda db: db.rows(Query(sa.text(sql)), **(params or {})))


async def execute(buffer, sql: str, params: dict | None = None) -> int:  # noqa: ANN001
    """Run a write (portable text, :name parameters) in one of the buffer's transactions."""
    from bridge.buffer.compiler import Query

    return await buffer.write(lambda db: db.run(Query(sa.text(sql)), **(params or {})))
