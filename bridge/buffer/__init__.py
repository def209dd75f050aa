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

from bridge.buffer import delivery, failures, identity, media, purge, reads
from bridge.buffer.codec import message_row, to_timestamp
from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.directory import Directory
from bridge.buffer.faults import explain
from bridge.buffer.lock import FileHold
from bridge.buffer.media import MediaJob
from bridge.buffer.schema import migrate
from bridge.buffer.writer import MAX_GROUP, Writer
from bridge.contracts import Outcome
from bridge.errors import BufferClosed, BufferUnavailable
from bridge.model import STATUS_FAILED, STATUS_RANK, Identity, Message, StatusUpdate, is_group

__all__ = ["Buffer", "Claim", "MediaJob", "Policy"]

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


class Buffer:
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

    async def install_sinks(self, names: Sequence[str]) -> list[str]:
        """Record the enabled sinks; return the ones seen for the first time."""
        return await self._transact(lambda db: _install(db, list(names), time.time()))

    async def needs_backfill(self, sink: str) -> bool:
        rows = await self.query("SELECT backfill_done_at IS NULL FROM sink_state WHERE sink = ?",
                                (sink,))
        return bool(rows and rows[0][0])

    async def backfill(self, sink: str, since: float) -> int:
        """Queue for `sink` every stored message sent since `since`; mark backfill done."""
        return await self._transact(lambda db: _backfill(db, sink, since, time.time()))

    async def claim(self, sink: str, limit: int, lease: float, now: float | None = None,
                    backfill: bool | None = None, batch_size: int | None = None) -> list[Claim]:
        """Lease up to `limit` batches of `sink` that are due (forming new ones first).

        New batches take about `batch_size` pending messages (default: `limit`, at least
        500), each conversation's whole; `limit` never cuts a conversation in two.
        `backfill`: True or False for only backfill or only live batches; None for both.
        """
        when = time.time() if now is None else now
        size = batch_size or max(limit, delivery.DEFAULT_BATCH_SIZE)
        return await self._transact(
            lambda db: delivery.claim(db, sink, when, limit, lease, backfill, size))

    async def complete(self, claim: Claim, outcomes: Sequence[Outcome],
                       policy: Policy, now: float | None = None) -> dict[str, int]:
        """Record outcomes under the claim's lease (LeaseLost if it expired and moved on)."""
        when = time.time() if now is None else now
        return await self._transact(
            lambda db: delivery.complete(db, claim, outcomes, when, policy))

    async def retry_now(self, sink: str, now: float | None = None) -> int:
        """Make the sink's batches waiting to retry due now (not waits the sink asked for)."""
        when = time.time() if now is None else now
        return await self._transact(lambda db: delivery.retry_now(db, sink, when))

    async def requeue(self, sink: str | None = None,
                      message_ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to pending; return how many."""
        return await self._transact(lambda db: delivery.requeue(db, sink, message_ids))

    async def requeue_conversation(self, conversation: str,
                                   now: float | None = None) -> dict[str, int]:
        """Dead letters of one conversation back to pending (every sink); its waiting
        retries due now. Returns {"requeued": n, "hurried": n}."""
        when = time.time() if now is None else now
        return await self._transact(
            lambda db: delivery.requeue_conversation(db, conversation, when))

    async def purge(self, conversation: str) -> int:
        """Delete one person's messages and mappings from the buffer; messages deleted.

        The whole person goes (purge_person): every number and BSUID linked to the
        conversation, and their words in group chats too."""
        async def work(db: aiosqlite.Connection) -> int:
            return (await purge.purge(db, conversation, dry_run=False))["messages"]
        removed = await self._transact(work)
        await self.forget_media()
        return removed

    async def record_sync(self, sink: str, at: float, next_at: float | None,
                          error: str | None) -> None:
        """Note a drain run: when it ran, when the next is due, and its error if any."""
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "UPDATE sink_state SET last_sync_at = ?, next_sync_at = ?,"
                " last_error = CASE WHEN ? IS NULL THEN last_error ELSE ? END,"
                " last_error_at = CASE WHEN ? IS NULL THEN last_error_at ELSE ? END"
                " WHERE sink = ?", (at, next_at, error, error, error, at, sink))
        await self._transact(work)

    async def prune(self, older_than: float, chunk: int = 5000) -> int:
        """Delete settled messages stored before `older_than`; undelivered ones stay.

        Their media files go too (after the commit that forgets them), unless another
        message holds the same bytes.
        """
        total = 0
        while True:
            removed = await self._transact(lambda db: _prune_chunk(db, older_than, chunk))
            total += removed
            await self.forget_media()
            if removed < chunk:
                return total

    async def purge_person(self, *, phone: str | None = None, user_id: str | None = None,
                           dry_run: bool = False) -> dict[str, Any]:
        """Erase one person from the buffer: messages (theirs in group chats too), delivery
        rows, statuses, media references, identities, CRM mappings and the ledger of their
        batches. Found by E.164 phone ("+919876543210") or BSUID; every key linked to them
        goes too. dry_run counts without deleting. The CRM is not touched.

        Returns {"person", "keys", "conversations", "messages", "media", "statuses",
        "identities", "crm_mappings", "dry_run"}.
        """
        if bool(phone) == bool(user_id):
            raise ValueError("give exactly one of phone or user_id")
        key = phone or user_id
        found = await self._transact(lambda db: purge.purge(db, key, dry_run))
        if not dry_run:
            found["files"] = len(await self.forget_media())  # after the commit that forgot them
        return found

    # -- media -------------------------------------------------------------------------

    async def forget_media(self) -> list[str]:
        """Drop the media jobs of deleted messages and delete files no job uses; the paths."""
        async with self.media_files:
            paths = await self._transact(media.forget_orphans)
            for path in paths:
                _unlink(path)
        return paths

    async def media_claim(self, source: str, limit: int, lease: float,
                          now: float | None = None) -> list[MediaJob]:
        when = time.time() if now is None else now
        return await self._transact(lambda db: media.claim(db, source, when, limit, lease))

    async def media_fetched(self, job: MediaJob, path: str, size: int, sha256: str,
                            mime_type: str | None, now: float | None = None) -> None:
        when = time.time() if now is None else now
        await self._transact(lambda db: media.fetched(db, job.message_id, path, size, sha256,
                                                      mime_type, when))

    async def media_failed(self, job: MediaJob, reason: str, retry_at: float | None,
                           now: float | None = None) -> None:
        """Record a failed fetch: retry at `retry_at`, or dead letter (None) with `reason`."""
        when = time.time() if now is None else now
        await self._transact(lambda db: media.failed(db, job.message_id, reason, retry_at, when))

    async def media_hold(self, source: str, reason: str | None) -> int:
        """Hold the source's pending jobs (it cannot fetch: reason), or release them (None)."""
        return await self._transact(lambda db: media.set_hold(db, source, reason, time.time()))

    async def media_next_due(self, source: str) -> float | None:
        return await self._transact(lambda db: media.next_due(db, source))

    async def media_requeue(self, message_ids: Sequence[int] | None = None) -> int:
        return await self._transact(lambda db: media.requeue(db, message_ids))

    async def media_file(self, message_id: int) -> tuple[str, str | None] | None:
        """(path, MIME type) of a message's fetched file, or None."""
        rows = await self.query("SELECT path, mime_type FROM media WHERE message_id = ?"
                                " AND state = 'fetched'", (message_id,))
        return (rows[0][0], rows[0][1]) if rows else None

    async def media_counts(self) -> dict[str, dict[str, Any]]:
        return await media.counts(self.query)

    async def media_paths(self) -> set[str]:
        return await media.stored_paths(self.query)

    # -- reads -------------------------------------------------------------------------

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run a read on the read connection (internal to the buffer package's readers)."""
        self._check_open()
        async with self._read.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def sinks(self) -> list[dict[str, Any]]:
        return await reads.sinks(self.query)

    def directory(self, sink: str) -> Directory:
        """The sink's record directory (phone -> CRM record) and unknown numbers."""
        return Directory(self, sink)

    async def conversations(self, sink: str | None = None, search: str | None = None,
                            limit: int = 100) -> list[dict[str, Any]]:
        return await reads.conversations(self.query, sink, search, limit)

    async def conversation_list(self, sink: str | None, **kwargs: Any) -> dict[str, Any]:
        """A page of the conversation list (search, sort, show, offset, limit: see reads)."""
        return await reads.conversation_list(self.query, sink, **kwargs)

    async def conversation(self, key: str, limit: int = 2000) -> dict[str, Any] | None:
        """One conversation with its messages and what each sink did with them."""
        return await reads.conversation(self.query, key, limit)

    async def dead_letters(self, sink: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        return await reads.dead_letters(self.query, sink, limit)

    async def dead_targets(self, sink: str | None = None,
                           limit: int = 100) -> list[dict[str, Any]]:
        """Targets given up on (one CRM opportunity of a message ...), with the reason."""
        return await reads.dead_targets(self.query, sink, limit)

    async def messages(self, conversation: str | None = None, limit: int = 1000) -> list[Message]:
        return await reads.messages(self.query, conversation, limit)

    async def status_of(self, source: str, provider_id: str) -> dict[str, Any] | None:
        return await reads.status_of(self.query, source, provider_id)

    async def hourly(self, since: float) -> dict[tuple[int, str], int]:
        """Messages per (unix hour, direction) sent since `since` (the page's chart)."""
        return await reads.hourly(self.query, since)

    async def count_messages(self) -> int:
        return (await self.query("SELECT count(*) FROM messages"))[0][0]

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

    def _check_open(self) -> None:
        if self._closed:
            raise BufferClosed("the buffer is closed")


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


def _unlink(path: str) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # the row is gone; a stray file is only disk space
        logger.warning("could not delete media file %s: %s", path, exc.strerror)


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


async def _install(db: aiosqlite.Connection, names: list[str], now: float) -> list[str]:
    async with db.execute("SELECT sink, enabled, disabled_at FROM sink_state") as cursor:
        existing = {r[0]: (r[1], r[2]) for r in await cursor.fetchall()}
    first = []
    for name in names:
        if name not in existing:
            await db.execute("INSERT INTO sink_state (sink, installed_at) VALUES (?, ?)",
                             (name, now))
            first.append(name)
        elif not existing[name][0]:
            # Re-enabled: queue what arrived while it was off, so nothing is skipped.
            await db.execute("INSERT OR IGNORE INTO deliveries (sink, message_id) SELECT ?, id"
                             " FROM messages WHERE stored_at >= ?", (name, existing[name][1]))
            await db.execute("UPDATE sink_state SET enabled = 1, disabled_at = NULL"
                             " WHERE sink = ?", (name,))
    for name, (enabled, _) in existing.items():
        if enabled and name not in names:
            await db.execute("UPDATE sink_state SET enabled = 0, disabled_at = ? WHERE sink = ?",
                             (now, name))
    return first


async def _backfill(db: aiosqlite.Connection, sink: str, since: float, now: float) -> int:
    """Queue every message since `since` the sink does not have yet; progress restarts."""
    # Finished rows of an earlier backfill leave the progress count; pending ones stay in it.
    await db.execute("UPDATE deliveries SET backfill = 0 WHERE sink = ? AND backfill = 1"
                     " AND state != 'pending'", (sink,))
    await db.execute("INSERT OR IGNORE INTO deliveries (sink, message_id, backfill)"
                     " SELECT ?, id, 1 FROM messages WHERE sent_at >= ?", (sink, since))
    # Messages already pending (e.g. source history just appended) count as backfill too.
    await db.execute("UPDATE deliveries SET backfill = 1 WHERE sink = ? AND state = 'pending'"
                     " AND batch_id IS NULL AND message_id IN"
                     " (SELECT id FROM messages WHERE sent_at >= ?)", (sink, since))
    async with db.execute("SELECT count(*) FROM deliveries WHERE sink = ? AND backfill = 1",
                          (sink,)) as cursor:
        (queued,) = await cursor.fetchone()
    await db.execute("UPDATE sink_state SET backfill_since = ?, backfill_done_at = ?,"
                     " backfill_started_at = ?, backfill_total = ? WHERE sink = ?",
                     (since, now, now, queued, sink))
    return queued


async def _prune_chunk(db: aiosqlite.Connection, older_than: float, chunk: int) -> int:
    async with db.execute(
        "DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE stored_at < ?"
        " AND id NOT IN (SELECT message_id FROM deliveries WHERE state IN ('pending', 'dead'))"
        " LIMIT ?)", (older_than, chunk)) as cursor:
        removed = cursor.rowcount
    await db.execute("DELETE FROM deliveries WHERE state IN ('done', 'skipped') AND NOT EXISTS"
                     " (SELECT 1 FROM messages m WHERE m.id = deliveries.message_id)")
    await db.execute("DELETE FROM batches WHERE state = 'done' AND created_at < ?", (older_than,))
    await db.execute("DELETE FROM ledger WHERE created_at < ?", (older_than,))
    return removed
