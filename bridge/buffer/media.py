"""Media fetch jobs: queued with their message, claimed by a source's fetcher, settled.

All media SQL lives here (the table and its states: schema.M008_MEDIA). Files themselves
are the core's business (bridge/media.py); this module only says which paths a deleted
message leaves unreferenced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

import bridge.buffer.delivery as delivery

# Kinds whose media is a file to fetch (an edit's or a reaction's media is not).
FILE_KINDS = ("image", "audio", "video", "document", "sticker")

_QUEUE = (
    "INSERT OR IGNORE INTO media (message_id, source, media_id, expected_sha256, mime_type,"
    " state, reason, updated_at)"
    " SELECT m.id, m.source, json_extract(m.body, '$.media.id'),"
    " json_extract(m.body, '$.media.sha256'), json_extract(m.body, '$.media.mime_type'),"
    " CAST(? AS TEXT), CAST(? AS TEXT), CAST(? AS DOUBLE PRECISION) FROM messages m"
    " WHERE m.id >= ? AND m.source = ?"
    " AND json_extract(m.body, '$.kind') IN ('image', 'audio', 'video', 'document', 'sticker')"
    " AND json_extract(m.body, '$.media.id') IS NOT NULL"
)


@dataclass(frozen=True, slots=True)
class MediaJob:
    """One media file to fetch: the provider's id, what the webhook said of it, tries so far."""

    message_id: int
    source: str
    media_id: str
    expected_sha256: str | None
    mime_type: str | None
    filename: str | None
    account: str | None
    attempts: int


async def queue_jobs(db: Any, first: int, sources: Mapping[str, str | None],
               now: float) -> None:
    """In the append's transaction: a job per new media message of a fetching source.

    sources: source name -> None (fetch) or the reason it will not (the job is held).
    One INSERT per source per group, whatever the number of messages.
    """
    for source, hold in sources.items():
        await db.execute(_QUEUE, ("held" if hold else "pending", hold, now, first, source))


async def claim(db: aiosqlite.Connection, source: str, now: float, limit: int,
                lease: float) -> list[MediaJob]:
    """Lease up to `limit` due jobs of `source` (oldest first); a leased one is not due."""
    async with db.execute(
        "SELECT f.message_id, f.source, f.media_id, f.expected_sha256, f.mime_type,"
        " json_extract(m.body, '$.media.filename'), json_extract(m.body, '$.account'),"
        " f.attempts FROM media f JOIN messages m ON m.id = f.message_id"
        " WHERE f.source = ? AND f.state = 'pending' AND f.next_attempt_at <= ?"
        " AND coalesce(f.lease_until, 0) <= ? ORDER BY f.next_attempt_at, f.message_id LIMIT ?",
        (source, now, now, limit)) as cursor:
        jobs = [MediaJob(*row) for row in await cursor.fetchall()]
    if jobs:
        marks = _placeholders(len(jobs))
        await db.execute(f"UPDATE media SET lease_until = ? WHERE message_id IN ({marks})",
                         (now + lease, *(job.message_id for job in jobs)))
    return jobs


async def next_due(db: aiosqlite.Connection, source: str) -> float | None:
    """When the source's next pending job is due (None: nothing pending)."""
    async with db.execute("SELECT min(max(next_attempt_at, coalesce(lease_until, 0)))"
                          " FROM media WHERE source = ? AND state = 'pending'",
                          (source,)) as cursor:
        (due,) = await cursor.fetchone()
    return due


async def fetched(db: aiosqlite.Connection, message_id: int, path: str, size: int,
                  sha256: str, mime_type: str | None, now: float) -> None:
    """The file is stored; targets that wait for it (a sink's attachment) are re-opened."""
    await db.execute(
        "UPDATE media SET state = 'fetched', path = ?, size = ?, sha256 = ?,"
        " mime_type = coalesce(?, mime_type), reason = NULL, lease_until = NULL,"
        " attempts = attempts + 1, updated_at = ? WHERE message_id = ? AND state = 'pending'",
        (path, size, sha256, mime_type, now, message_id))
    await delivery.reopen_waiting(db, message_id)


async def failed(db: aiosqlite.Connection, message_id: int, reason: str,
                 retry_at: float | None, now: float) -> None:
    """A failed try: retry at `retry_at`, or dead (None) with the reason."""
    await db.execute(
        "UPDATE media SET state = CASE WHEN CAST(? AS DOUBLE PRECISION) IS NULL THEN 'dead'"
        " ELSE 'pending' END,"
        " next_attempt_at = coalesce(?, next_attempt_at), attempts = attempts + 1, reason = ?,"
        " lease_until = NULL, updated_at = ? WHERE message_id = ? AND state = 'pending'",
        (retry_at, retry_at, reason, now, message_id))
    if retry_at is None:
        await delivery.settle_waiting(db, message_id, reason)


async def set_hold(db: aiosqlite.Connection, source: str, reason: str | None,
                   now: float) -> int:
    """Hold every pending job of `source` (reason), or release its held ones (None)."""
    if reason is None:
        cursor = await db.execute(
            "UPDATE media SET state = 'pending', reason = NULL, next_attempt_at = 0,"
            " updated_at = ? WHERE source = ? AND state = 'held'", (now, source))
    else:
        cursor = await db.execute(
            "UPDATE media SET state = 'held', reason = ?, lease_until = NULL, updated_at = ?"
            " WHERE source = ? AND state = 'pending'", (reason, now, source))
    changed = cursor.rowcount
    await cursor.close()
    if reason is None:  # a runner starting: leases of a killed one are void (flock)
        await db.execute("UPDATE media SET lease_until = NULL WHERE source = ?"
                         " AND state = 'pending' AND lease_until IS NOT NULL", (source,))
    return changed


async def requeue(db: aiosqlite.Connection, message_ids: Sequence[int] | None) -> int:
    """Dead media jobs back to pending (all, or these messages')."""
    if message_ids is None:
        cursor = await db.execute("UPDATE media SET state = 'pending', next_attempt_at = 0,"
                                  " attempts = 0 WHERE state = 'dead'")
    else:
        marks = _placeholders(len(message_ids))
        cursor = await db.execute("UPDATE media SET state = 'pending', next_attempt_at = 0,"
                                  f" attempts = 0 WHERE state = 'dead' AND message_id IN ({marks})",
                                  tuple(message_ids))
    changed = cursor.rowcount
    await cursor.close()
    await delivery.await_file_again(db, message_ids)
    return changed


def _placeholders(count: int) -> str:
    """'?,?,?' for count parameters."""
    return ",".join("?" * count)


async def forget_orphans(db: aiosqlite.Connection) -> list[str]:
    """Delete the jobs of messages that are gone; the paths no remaining job uses."""
    async with db.execute(
        "DELETE FROM media WHERE NOT EXISTS (SELECT 1 FROM messages m"
        " WHERE m.id = media.message_id) RETURNING path, sha256") as cursor:
        gone = [(path, sha) for path, sha in await cursor.fetchall() if path]
    unused = []
    for path, sha in gone:
        async with db.execute("SELECT 1 FROM media WHERE sha256 = ? LIMIT 1", (sha,)) as cursor:
            if await cursor.fetchone() is None:
                unused.append(path)
    return sorted(set(unused))


async def stored_paths(query: Any) -> set[str]:
    """Every path a job refers to (a file in media_path not among them is an orphan)."""
    return {row[0] for row in await query("SELECT DISTINCT path FROM media"
                                          " WHERE path IS NOT NULL")}


async def counts(query: Any) -> dict[str, dict[str, Any]]:
    """Per source: jobs per state, bytes stored, and reasons of dead and failing jobs."""
    out: dict[str, dict[str, Any]] = {}
    for source, state, n in await query(
            "SELECT source, state, count(*) FROM media"
            " GROUP BY source, state"):
        entry = out.setdefault(source, {"pending": 0, "fetched": 0, "dead": 0, "held": 0,
                                        "bytes": 0, "reasons": {}})
        entry[state] = n
    for source, size in await query(
            "SELECT source, sum(size) FROM (SELECT DISTINCT source, sha256, size FROM media"
            " WHERE state = 'fetched') AS f GROUP BY source"):
        out[source]["bytes"] = size
    for source, reason, n in await query(
            "SELECT source, reason, count(*) FROM media WHERE reason IS NOT NULL"
            " GROUP BY source, reason ORDER BY count(*) DESC LIMIT 50"):
        out[source]["reasons"][reason] = n
    return out
