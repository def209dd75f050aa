"""Copy an SQLite buffer into PostgreSQL (`bridge buffer migrate --to postgresql://...`).

Every table is copied in primary-key order, a chunk per transaction, with its ids kept
(deliveries, batches, targets and media refer to message and batch ids) and
`ON CONFLICT DO NOTHING`: a chunk is in PostgreSQL whole or not at all, so a copy that
was stopped resumes where it stopped, and running it again copies nothing twice. The
bridge must be stopped: the SQLite file is opened as its runner (the flock refuses a
copy while a bridge runs), and what it would write meanwhile would not be copied.

Into a database that already holds other messages nothing is copied: ids would clash.
A first copy records its source in `buffer_imports`; only that source may resume.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from bridge.buffer.dialect import identifier, identifiers
from bridge.buffer.pgdb import plain
from bridge.buffer.postgres import redact, split_schema
from bridge.buffer.store import Buffer
from bridge.errors import BridgeError

CHUNK = 2000
# table -> its primary key, in copy order (messages and batches before what refers to them)
TABLES: dict[str, tuple[str, ...]] = {
    "messages": ("id",), "conversations": ("key",), "batches": ("id",),
    "deliveries": ("sink", "message_id"), "ledger": ("sink", "key"), "sink_state": ("sink",),
    "sink_conversations": ("sink", "conversation"), "statuses": ("source", "provider_id"),
    "identities": ("key",), "targets": ("sink", "key"), "media": ("message_id",),
    "directory": ("sink", "key", "record_id"), "directory_state": ("sink",),
    "unknown_numbers": ("sink", "number"),
}
_IMPORTS = """
CREATE TABLE IF NOT EXISTS buffer_imports (
    source      TEXT PRIMARY KEY,   -- the SQLite file's real path
    started_at  DOUBLE PRECISION NOT NULL,
    finished_at DOUBLE PRECISION
)"""


class TransferError(BridgeError):
    """The copy cannot start (or go on): the message says why and what to do."""


@dataclass
class Copied:
    """Rows per table: in the SQLite file, newly written to PostgreSQL, there in the end."""

    source: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return all(self.target.get(t, 0) >= n for t, n in self.source.items())


async def copy_buffer(sqlite_file: str, url: str,
                      progress: Callable[[str, int], None] | None = None) -> Copied:
    """Copy `sqlite_file` into the PostgreSQL buffer at `url` (created if needed)."""
    source = await Buffer.open(sqlite_file, runner=True)  # migrates it to this version too
    try:
        target = await Buffer.open(url)  # creates and migrates the PostgreSQL schema
        await target.close()
        conn = await _connect(url)
        try:
            await _claim_target(conn, os.path.realpath(sqlite_file))
            copied = Copied()
            for table, key in TABLES.items():
                copied.source[table] = (await source.query(
                    f"SELECT count(*) FROM {identifier(table)}"))[0][0]
                copied.written[table] = await _copy_table(source, conn, table, key, progress)
                copied.target[table] = await conn.fetchval(
                    f"SELECT count(*) FROM {identifier(table)}")
            await _restart_ids(conn)
            await conn.execute("UPDATE buffer_imports SET finished_at = extract(epoch FROM now())"
                               " WHERE source = $1", os.path.realpath(sqlite_file))
            return copied
        finally:
            await conn.close()
    finally:
        await source.close()


async def _connect(url: str) -> asyncpg.Connection:
    dsn, schema = split_schema(url)
    try:
        return await asyncpg.connect(
            dsn, server_settings={"search_path": schema} if schema else None)
    except (OSError, asyncpg.PostgresError) as exc:
        raise TransferError(f"{redact(url)}: {exc}") from None


async def _claim_target(conn: asyncpg.Connection, source: str) -> None:
    """Refuse a database holding messages from elsewhere; note this source as its import."""
    await conn.execute(_IMPORTS)
    earlier = await conn.fetch("SELECT source FROM buffer_imports")
    others = [row["source"] for row in earlier if row["source"] != source]
    if others:
        raise TransferError(f"this database already holds a copy of {others[0]}; copy "
                            "into an empty database (or another ?schema=)")
    if not earlier and await conn.fetchval("SELECT EXISTS (SELECT 1 FROM messages)"):
        raise TransferError("this database already holds messages of a running bridge; copy "
                            "into an empty database (or another ?schema=) before starting "
                            "bridges on it")
    await conn.execute("INSERT INTO buffer_imports (source, started_at) VALUES"
                       " ($1, extract(epoch FROM now())) ON CONFLICT (source) DO NOTHING", source)


async def _copy_table(source: Buffer, conn: asyncpg.Connection, table: str,
                      key: tuple[str, ...], progress: Callable[[str, int], None] | None) -> int:
    """Copy one table in key order, CHUNK rows per transaction; rows newly written."""
    columns = [row[1] for row in await source.query(
        f"PRAGMA table_info({identifier(table)})")]
    insert = (f"INSERT INTO {identifier(table)} ({identifiers(columns)})"
              f" VALUES ({_numbered(len(columns))}) ON CONFLICT DO NOTHING")
    written = offset = 0
    while True:
        rows = await source.query(
            f"SELECT {identifiers(columns)} FROM {identifier(table)}"
            f" ORDER BY {identifiers(key)} LIMIT ? OFFSET ?", (CHUNK, offset))
        if not rows:
            return written
        before = await conn.fetchval(f"SELECT count(*) FROM {identifier(table)}")
        async with conn.transaction():
            await conn.executemany(insert, [_values(row) for row in rows])
        written += await conn.fetchval(f"SELECT count(*) FROM {identifier(table)}") - before
        offset += len(rows)
        if progress:
            progress(table, offset)


def _numbered(count: int) -> str:
    """'$1, $2, $3' for count parameters."""
    return ", ".join(f"${i + 1}" for i in range(count))


def _values(row: Any) -> tuple[Any, ...]:
    return tuple(plain(row))


async def _restart_ids(conn: asyncpg.Connection) -> None:
    """New messages and batches get ids after the copied ones."""
    for table in ("messages", "batches"):
        await conn.execute(
            f"SELECT setval(pg_get_serial_sequence($1, 'id'),"
            f" greatest((SELECT max(id) FROM {identifier(table)}), 1))", table)
