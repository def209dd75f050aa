"""The durable outbox: every message is committed here before a webhook is answered.

All SQL of Chatbridge lives in this package. One writer task owns the write connection
(group commit); status reads use a second connection, which WAL lets run alongside.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from bridge.buffer import delivery, failures, identity, media
from bridge.buffer.codec import message_row, to_timestamp
from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.faults import explain
from bridge.buffer.lock import FileHold
from bridge.buffer.media import MediaJob
from bridge.buffer.schema import migrate
from bridge.buffer.store import Buffer
from bridge.buffer.writer import MAX_GROUP, Writer
from bridge.errors import BufferUnavailable
from bridge.model import STATUS_FAILED, STATUS_RANK, Identity, Message, StatusUpdate, is_group

__all__ = ["Buffer", "Claim", "MediaJob", "Policy", "SQLiteBuffer"]

logger = logging.getLogger(__name__)

# Room the health check proves there is: a typical webhook's rows, index pages and WAL
# frames, with margin (16 pages of 4 KiB).
HEALTH_PROBE_BYTES = 64 * 1024
ROWS_PER_INSERT = 500  # messages per INSERT statement (6 parameters each; SQLite takes 32,766)
_UPSERT_STATUS = """
INSERT INTO statuses (source, provider_id, status, rank, at, recipient, failed_at, errors)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, provider_id) DO UPDATE SET
    status = CASE WHEN excluded.rank > statuses.rank THEN excluded.status ELSE statuses.status END,
    at = CASE WHEN excluded.rank > statuses.rank THEN excluded.at ELSE statuses.at END,
    rank = max(statuses.rank, excluded.rank),
    failed_at = coalesce(statuses.failed_at, excluded.failed_at),
    errors = coalesce(excluded.errors, statuses.errors),
    recipient = coalesce(statuses.recipient, excluded.recipient)
"""
_UPSERT_CONVERSATION = """
INSERT INTO conversations (key, contact_name, account, last_message_at, message_count, kind,
                           group_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    contact_name = coalesce(excluded.contact_name, contact_name),
    account = coalesce(excluded.account, account),
    last_message_at = max(coalesce(last_message_at, 0), coalesce(excluded.last_message_at, 0)),
    message_count = message_count + excluded.message_count,
    kind = CASE WHEN excluded.kind = 'group' THEN 'group' ELSE kind END,
    group_id = coalesce(excluded.group_id, group_id)
WHERE excluded.message_count > 0
   OR (excluded.contact_name IS NOT NULL AND excluded.contact_name IS NOT contact_name)
   OR (excluded.account IS NOT NULL AND excluded.account IS NOT account)
   OR (excluded.kind = 'group' AND kind != 'group')
"""  # the WHERE skips no-op updates: a replayed webhook then writes no page at all


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


@dataclass(slots=True)
class _Append:
    messages: list[Message]
    rows: list[tuple[Any, ...]]
    statuses: list[tuple[Any, ...]]
    contacts: Mapping[str, str]
    identities: list[Identity]
    now: float


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

    def _append_group(self, db: sqlite3.Connection, items: list[_Append]) -> list[int]:
        return _append_group(db, items, self.media_sources)

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
        now = time.time()
        messages = list(messages)
        item = _Append(messages, [message_row(m, now) for m in messages],
                       [_status_row(s) for s in statuses], contacts or {}, list(identities), now)
        if not (item.rows or item.statuses or item.contacts or item.identities):
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


def _status_row(status: StatusUpdate) -> tuple[Any, ...]:
    failed = status.status == STATUS_FAILED
    return (status.source, status.provider_id, None if failed else status.status,
            STATUS_RANK.get(status.status, 0), to_timestamp(status.at), status.recipient,
            to_timestamp(status.at) if failed else None,
            json.dumps(status.errors) if status.errors else None)


def _append_group(db: sqlite3.Connection, items: list[_Append],
                  media_sources: Mapping[str, str | None] | None = None) -> list[int]:
    """Insert every item's rows in the open transaction; return new-message counts.

    Runs in the write connection's thread, inside the Writer's transaction: plain sqlite3.
    """
    people, described = identity.file_under_people(
        db, [i for item in items for i in item.identities],
        [m.conversation for item in items for m in item.messages], items[-1].now)
    rows = [row for item in items for row in item.rows]
    if people:
        rows = [(*row[:2], people.get(row[2], row[2]), *row[3:]) for row in rows]
    new, first = _insert_messages(db, rows)
    if new and media_sources:
        media.queue_jobs(db, first, media_sources, time.time())
    if new:
        # history (recovered, not live) is backfill material: paced like a backfill
        db.execute(
            "INSERT OR IGNORE INTO deliveries (sink, message_id, backfill)"
            " SELECT s.sink, m.id, coalesce(json_extract(m.body, '$.history'), 0)"
            " FROM messages m JOIN sink_state s ON s.enabled = 1 WHERE m.id >= ?", (first,))
    statuses = [row for item in items for row in item.statuses]
    if statuses:
        db.executemany(_UPSERT_STATUS, statuses)
        failures.note_failures(db, statuses, items[-1].now)
    counts, fresh = _credit_new(items, new)
    _upsert_conversations(db, fresh, items, people)
    identity.describe(db, described)
    return counts


def _insert_messages(db: sqlite3.Connection,
                     rows: list[tuple[Any, ...]]) -> tuple[set[tuple[str, str]], int]:
    """Insert the rows not stored yet; their (source, provider id) keys and the first new id.

    One statement per ROWS_PER_INSERT rows, RETURNING what it inserted (a replay or a
    duplicate within the group returns nothing).
    """
    new: set[tuple[str, str]] = set()
    first = 0
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        marks = _value_rows(len(chunk), 6)
        inserted = db.execute(
            "INSERT OR IGNORE INTO messages (source, provider_id, conversation, sent_at,"
            f" stored_at, body) VALUES {marks} RETURNING id, source, provider_id",
            [value for row in chunk for value in row]).fetchall()
        for message_id, source, provider_id in inserted:
            new.add((source, provider_id))
            first = message_id if not first else min(first, message_id)
    return new, first


def _value_rows(count: int, width: int) -> str:
    """'(?,?),(?,?)' for count rows of width parameters."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


def _credit_new(items: list[_Append], new: set[tuple[str, str]]
                ) -> tuple[list[int], list[Message]]:
    """Per item, how many of its messages are new; and each new message once (a key sent
    twice in one group is credited to its first sender)."""
    counts = []
    fresh = []
    for item in items:
        count = 0
        for message in item.messages:
            key = (message.source, message.provider_id)
            if key in new:
                new.discard(key)
                count += 1
                fresh.append(message)
        counts.append(count)
    return counts, fresh


def _upsert_conversations(db: sqlite3.Connection, fresh: list[Message],
                          items: list[_Append], people: Mapping[str, str]) -> None:
    agg: dict[str, list[Any]] = defaultdict(lambda: [None, None, 0.0, 0, "person", None])
    for message in fresh:
        entry = agg[people.get(message.conversation, message.conversation)]
        if is_group(message.conversation):
            entry[4], entry[5] = "group", message.extra.get("group_id")
            entry[0] = entry[0] or message.extra.get("group_name")
            entry[1] = message.account or entry[1]
            entry[2] = max(entry[2], to_timestamp(message.sent_at))
            entry[3] += 1
            continue
        entry[0] = message.contact_name or entry[0]
        entry[1] = message.account or entry[1]
        entry[2] = max(entry[2], to_timestamp(message.sent_at))
        entry[3] += 1
        if message.extra.get("conversation_kind") == "group":
            entry[4] = "group"
    for item in items:
        for key, name in item.contacts.items():
            agg[people.get(key, key)][0] = name
    if agg:
        db.executemany(_UPSERT_CONVERSATION,
                       [(k, v[0], v[1], v[2] or None, v[3], v[4], v[5])
                        for k, v in agg.items()])

