"""The buffer backends the tests run against: SQLite always, PostgreSQL when
CHATBRIDGE_TEST_POSTGRES names a server (e.g. postgresql://postgres@127.0.0.1:5432/test);
each PostgreSQL test gets a fresh schema of its own, dropped afterwards."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

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
    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def is_postgres(buffer) -> bool:  # noqa: ANN001 - any Buffer
    return type(buffer).__name__ == "PostgresBuffer"


sqlite_only = pytest.mark.parametrize(
    "buffer_target", ["sqlite", pytest.param("postgresql", marks=pytest.mark.skip(
        reason="SQLite-specific (file, PRAGMA, flock or writer behaviour)"))], indirect=True)


async def rows(buffer, sql: str, params=()) -> list[tuple]:  # noqa: ANN001 - any Buffer
    """Run SQLite-dialect `sql` on a connection of its own (so it sees only committed rows)."""
    if not is_postgres(buffer):
        with sqlite3.connect(buffer.path) as db:
            return db.execute(sql, params).fetchall()
    from bridge.buffer.dialect import to_postgres
    from bridge.buffer.pgdb import plain
    from bridge.buffer.postgres import split_schema

    dsn, schema = split_schema(buffer.url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema} if schema else None)
    try:
        return [plain(r) for r in await conn.fetch(to_postgres(sql), *params)]
    finally:
        await conn.close()
