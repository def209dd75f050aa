"""What the core needs from a buffer, and the behaviour both backends share.

`Buffer` is the storage interface: `Buffer.open(target)` opens the backend its target
names (a file path or `sqlite:///file` for SQLiteBuffer, `postgresql://...` for
PostgresBuffer). Every operation below is written once, over two primitives a backend
provides: `_transact(work)` runs `work(db)` in one write transaction (db: an aiosqlite
connection, or bridge.buffer.pgdb.PgDb), and `query(sql, params)` runs one read. Appends,
the health check, opening and closing are the backend's own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiosqlite

import bridge.buffer.delivery as delivery
import bridge.buffer.media as media
import bridge.buffer.purge as purge
import bridge.buffer.reads as reads
from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.directory import Directory
from bridge.buffer.media import MediaJob
from bridge.contracts import Outcome
from bridge.errors import BufferClosed
from bridge.model import Identity, Message, StatusUpdate

logger = logging.getLogger(__name__)

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(target: str | Path) -> bool:
    """Does this buffer target name a PostgreSQL server?"""
    return str(target).startswith(POSTGRES_SCHEMES)


def sqlite_path(target: str | Path) -> str:
    """The file of an SQLite target: `sqlite:///rel.db`, `sqlite:////abs.db` or a path."""
    text = str(target)
    return text[len("sqlite:///"):] if text.startswith("sqlite:///") else text


# scheme -> backend class; each backend's module registers itself (bridge.buffer imports both)
BACKENDS: dict[str, type[Buffer]] = {}


class Buffer:
    """The durable outbox. Open with `await Buffer.open(target)`; close with `close()`."""

    media_sources: dict[str, str | None]
    media_files: asyncio.Lock
    _closed: bool

    @classmethod
    async def open(cls, path: str | Path, synchronous: str = "full",
                   runner: bool = False, **options: Any) -> Buffer:
        """Open the buffer `path` names: an SQLite file (or sqlite:///...) or a
        postgresql:// URL. See SQLiteBuffer.open and PostgresBuffer.open."""
        if is_postgres(path):
            return await BACKENDS["postgresql"].open(str(path), runner=runner, **options)
        return await BACKENDS["sqlite"].open(sqlite_path(path), synchronous, runner, **options)

    # -- what each backend provides ------------------------------------------------------

    async def close(self) -> None:
        raise NotImplementedError

    @property
    def stats(self) -> dict[str, int]:
        raise NotImplementedError

    async def append(self, messages: Iterable[Message], statuses: Iterable[StatusUpdate] = (),
                     contacts: Mapping[str, str] | None = None,
                     identities: Iterable[Identity] = ()) -> int:
        """Store durably (committed before this returns); return the new message count."""
        raise NotImplementedError

    async def heartbeat(self) -> None:
        """Prove the buffer can take a webhook now (raise BufferUnavailable if not)."""
        raise NotImplementedError

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Run one read (internal to the buffer package's readers)."""
        raise NotImplementedError

    async def limit_writes(self, *, size_cap: bool | None = None,
                           read_only: bool | None = None) -> None:
        raise NotImplementedError

    async def _transact(self, work: Any) -> Any:
        raise NotImplementedError

    # -- ingest ------------------------------------------------------------------------

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
                " last_error = CASE WHEN CAST(? AS TEXT) IS NULL THEN last_error ELSE ? END,"
                " last_error_at = CASE WHEN CAST(? AS TEXT) IS NULL THEN last_error_at"
                " ELSE ? END"
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

    # -- internals ---------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BufferClosed("the buffer is closed")


# SQLite never lowers max_page_count below the pages in use: 1 caps the file as it is.


def _unlink(path: str) -> None:
    try:
        Path(path).unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:  # the row is gone; a stray file is only disk space
        logger.warning("could not delete media file %s: %s", path, exc.strerror)


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
