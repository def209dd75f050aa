"""The buffer backends the tests run against: SQLite always, PostgreSQL when
CHATBRIDGE_TEST_POSTGRES names a server (e.g. postgresql://postgres@127.0.0.1:5432/test);
each PostgreSQL test gets a fresh schema of its own, dropped afterwards."""

from __future__ import annotations

import os
import uuid

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


async def drop_schema(schema: str) -> None:
    conn = await asyncpg.connect(POSTGRES)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()
