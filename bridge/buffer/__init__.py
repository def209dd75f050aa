"""The durable outbox: every message is committed here before a webhook is answered.

All SQL of Chatbridge lives in this package. One writer task owns the write connection
(group commit); status reads use a second connection, which WAL lets run alongside.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.buffer import delivery
from bridge.buffer.append import Append, append_group, new_append
from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.faults import explain
from bridge.buffer.lock import FileHold
from bridge.buffer.media import MediaJob
from bridge.buffer.postgres import PostgresBuffer
from bridge.buffer.schema import migrate
from bridge.buffer.store import BACKENDS, Buffer
from bridge.buffer.syncdb import SyncDb, drive
from bridge.buffer.writer import MAX_GROUP, Writer
from bridge.errors import BufferUnavailable
from bridge.model import Identity, Message, StatusUpdate

__all__ = ["Buffer", "Claim", "MediaJob", "Policy", "PostgresBuffer", "SQLiteBuffer"]

logger = logging.getLogger(__name__)

# Room the health check proves there is: a typical webhook's rows, index pages and WAL
# frames, with margin (16 pages of 4 KiB).
HEALTH_PROBE_BYTES = 64 * 1024
# An append's writes, for the heartbeat to rehearse and roll back: they walk the same
# b-trees (messages, its unique and conversation indexes, deliveries, conversations).
_REHEARSAL = (
    "INSERT INTO messages (source, provider_id, conversation, sent_at, stored_at, body)"
    " VALUES ('healthz', hex(randomblob(8)), 'healthz', 0, 0, '{}')",
    "INSERT INTO deliveries (sink, message_id)"
    " SELECT sink, last_insert_rowid() FROM sink_state WHERE enabled = 1",
    "INSERT INTO conversations (key, message_count) VALUES ('healthz', 1)"
    " ON CONFLICT (key) DO UPDATE SET message_count = message_count + 1",
)


class SQLiteBuffer(Buffer):
    """Open with `await Buffer.open(path)`; close with `await buffer.close()`."""

    def __init__(self, path: str, write: aiosqlite.Connection, read: aiosqlite.Connection,
                 hold: FileHold, group_limit: int = MAX_GROUP) -> None:
        self.path = path
        self._write = write
        self._read = read
        self._hold = hold
        # source -> None (it fetches media: each media message queues a job) or the reason
        # it will not (the job is queued held, and the transcript says why)
        self.media_sources: dict[str, str | None] = {}
        # held from a file's rename into media_path until its row commits, and from
        # forgetting rows until their files are unlinked: the same bytes fetched again
        # while their last copy is being pruned are never unlinked under the new row
        self.media_files = asyncio.Lock()
        self._writer = Writer(write, self._append_group, group_limit, path, hold.is_current)
        self._closed = False

    def _append_group(self, db: sqlite3.Connection, items: list[Append]) -> list[int]:
        return drive(append_group(SyncDb(db), items, self.media_sources))

    @classmethod
    async def open(cls, path: str | Path, synchronous: str = "full",
                   runner: bool = False, group_limit: int = MAX_GROUP) -> Buffer:
        """Open (creating and migrating if needed) the buffer at `path`.

        runner: this process serves webhooks and drains sinks. Only one runner may use a
        file at a time (an flock on the file enforces it), so leases left by a killed
        runner are released at once instead of waiting for them to expire. group_limit:
        appends per commit at most (1 turns group commit off; benchmarks compare the two).

        A file that cannot be opened, read or written raises BufferUnavailable (which
        file, what is wrong, what to do) with everything opened so far closed again.
        """
        path = str(path)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            hold = FileHold.take(path, runner)
        except OSError as exc:
            raise BufferUnavailable(explain(path, exc)) from exc
        opened: list[aiosqlite.Connection] = []
        buffer = None
        try:
            opened.append(await _connect(path, synchronous))
            await migrate(opened[0])
            opened.append(await _connect(path, synchronous))
            buffer = cls(path, *opened, hold, group_limit)
            buffer._writer.start()
            if runner:
                await buffer._transact(lambda db: delivery.release_leases(db, time.time()))
        except BaseException as exc:
            if buffer is not None:
                await buffer.close()
            else:
                await _close_all(opened, hold)
            if isinstance(exc, sqlite3.Error | OSError):
                raise BufferUnavailable(explain(path, exc)) from exc
            raise
        return buffer

    async def close(self) -> None:
        """Finish queued writes, then close both connections."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.close()
        finally:
            await _close_all([self._write, self._read], self._hold)

    @property
    def stats(self) -> dict[str, int]:
        """Commits and grouped appends so far (for metrics and benchmarks)."""
        return {"commits": self._writer.commits, "grouped_appends": self._writer.grouped}

    # -- ingest ------------------------------------------------------------------------

    async def append(self, messages: Iterable[Message], statuses: Iterable[StatusUpdate] = (),
                     contacts: Mapping[str, str] | None = None,
                     identities: Iterable[Identity] = ()) -> int:
        """Store in one commit (shared with concurrent appends); return new message count.

        identities go to the contact map in the same commit, and each message is filed
        under its person's conversation (see bridge.buffer.identity).
        """
        self._check_open()
        item = new_append(messages, statuses, contacts, identities)
        if item is None:
            return 0
        return await self._writer.append(item)

    async def heartbeat(self) -> None:
        """Commit a write that needs new space: proves the buffer can take a webhook now.

        A tiny update still commits on a full disk or at SQLite's max_page_count (it
        rewrites a page or WAL frames already there) while appends are refused, so the
        heartbeat row first grows by HEALTH_PROBE_BYTES (a blob, committed: new pages
        and WAL frames), then shrinks back, leaving the pages free for the next appends.
        The shrinking step also rehearses an append (rolled back): a damaged page on its
        way fails the heartbeat too. BufferUnavailable comes first if the file was deleted
        or replaced, or a write found it damaged: a heartbeat may still commit then, while
        webhooks cannot.
        """
        self._check_open()
        self._writer.check_current()
        if self._writer.damaged:
            raise BufferUnavailable(self._writer.damaged)

        async def grow(db: aiosqlite.Connection) -> None:
            await db.execute("INSERT INTO heartbeat (id, at) VALUES (1, zeroblob(?))"
                             " ON CONFLICT (id) DO UPDATE SET at = excluded.at",
                             (HEALTH_PROBE_BYTES,))

        async def settle(db: aiosqlite.Connection) -> None:
            await db.execute("UPDATE heartbeat SET at = ? WHERE id = 1", (time.time(),))
            await db.execute("SAVEPOINT rehearsal")
            try:
                for sql in _REHEARSAL:
                    await db.execute(sql)
            finally:
                await db.execute("ROLLBACK TO rehearsal")
                await db.execute("RELEASE rehearsal")

        await self._transact(grow)
        await self._transact(settle)

    # -- sinks -------------------------------------------------------------------------

    # -- media -------------------------------------------------------------------------

    # -- reads -------------------------------------------------------------------------

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read on the read connection (internal to the buffer package's readers)."""
        self._check_open()
        async with self._read.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    # -- limits ------------------------------------------------------------------------

    async def limit_writes(self, *, size_cap: bool | None = None,
                           read_only: bool | None = None) -> None:
        """Cap the file at its size now (or lift the cap); refuse every write (or stop).

        Real SQLite failures follow (SQLITE_FULL beyond the cap, SQLITE_READONLY): the
        disk tests use them, and a person can freeze a buffer by hand. None leaves a
        setting as it is.
        """
        self._check_open()
        if size_cap is not None:
            await self._write.execute(_SIZE_CAP[size_cap])
        if read_only is not None:
            await self._write.execute(_QUERY_ONLY[read_only])

    # -- internals ---------------------------------------------------------------------

    async def _transact(self, work: Any) -> Any:
        self._check_open()
        return await self._writer.transact(work)


# SQLite never lowers max_page_count below the pages in use: 1 caps the file as it is.
_SIZE_CAP = {True: "PRAGMA max_page_count = 1", False: "PRAGMA max_page_count = 4294967294"}
_QUERY_ONLY = {True: "PRAGMA query_only = 1", False: "PRAGMA query_only = 0"}
_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = OFF")
# PRAGMA takes no parameters: the setting picks a constant, it is never formatted into SQL.
_SYNCHRONOUS = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}


async def _connect(path: str, synchronous: str) -> aiosqlite.Connection:
    mode = str(synchronous).lower()
    if mode not in _SYNCHRONOUS:
        raise ValueError(f"buffer synchronous={synchronous!r}: use one of "
                         f"{', '.join(_SYNCHRONOUS)}")
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in _PRAGMAS:
            await db.execute(pragma)
        await db.execute(_SYNCHRONOUS[mode])
    except BaseException:
        await db.close()  # its thread would keep the process alive
        raise
    return db


async def _close_all(connections: Sequence[aiosqlite.Connection], hold: FileHold) -> None:
    """Close every connection (each even if one fails), then give the file hold back."""
    try:
        for db in connections:
            try:
                await db.close()
            except Exception:  # a broken connection still has its thread stopped
                logger.exception("closing a buffer connection failed")
    finally:
        hold.release()


BACKENDS["sqlite"] = SQLiteBuffer
