"""Media fetch jobs: queued with their message, claimed by a source's fetcher, settled.

All media SQL lives here (the table and its states: bridge.buffer.tables.media). Files
themselves are the core's business (bridge/media.py); this module only says which paths a
deleted message leaves unreferenced.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

import bridge.buffer.delivery as delivery
from bridge.buffer.compiler import P, Query, greatest, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import REAL, TEXT, media, messages
from bridge.model import Message

# Kinds whose media is a file to fetch (an edit's or a reaction's media is not).
FILE_KINDS = ("image", "audio", "video", "document", "sticker")
f = media.c

QUEUE = Query(lambda insert: insert(media).values(
    {k: P(k) for k in ("message_id", "source", "media_id", "expected_sha256", "mime_type",
                       "state", "reason", "updated_at")}).on_conflict_do_nothing(),
    "queue a media job")
DUE = Query(
    sa.select(f.message_id, f.source, f.media_id, f.expected_sha256, f.mime_type, f.attempts,
              messages.c.body)
    .join_from(media, messages, messages.c.id == f.message_id)
    .where(f.source == P("source"), f.state == "pending", f.next_attempt_at <= P("now"),
           sa.func.coalesce(f.lease_until, 0) <= P("now"))
    .order_by(f.next_attempt_at, f.message_id).limit(P("limit"))
    # processes sharing the buffer never lease one job both (PostgreSQL; SQLite has one)
    .with_for_update(of=media, skip_locked=True), "due media jobs")
LEASE = Query(sa.update(media)
              .values(lease_until=P("until"), lease_owner=P("owner", type_=TEXT))
              .where(f.message_id.in_(values_of("ids"))), "lease media jobs")
NEXT_DUE = Query(sa.select(sa.func.min(greatest(f.next_attempt_at,
                                                sa.func.coalesce(f.lease_until, 0))))
                 .where(f.source == P("source"), f.state == "pending"), "next media job due")
FETCHED = Query(sa.update(media).values(
    state="fetched", path=P("path"), size=P("size"), sha256=P("sha256"),
    mime_type=sa.func.coalesce(P("mime_type", type_=TEXT), f.mime_type), reason=None,
    lease_until=None, lease_owner=None, attempts=f.attempts + 1, updated_at=P("now"))
    .where(f.message_id == P("message_id"), f.state == "pending"), "media fetched")
FAILED = Query(sa.update(media).values(
    state=sa.case((P("retry_at", type_=REAL).is_(None), "dead"), else_="pending"),
    next_attempt_at=sa.func.coalesce(P("retry_at", type_=REAL), f.next_attempt_at),
    attempts=f.attempts + 1, reason=P("reason"), lease_until=None, lease_owner=None,
    updated_at=P("now"))
    .where(f.message_id == P("message_id"), f.state == "pending"), "media fetch failed")
_waiting = (f.source == P("source"), f.state == "pending", f.next_attempt_at > P("now"),
            sa.func.coalesce(f.lease_until, 0) <= P("now"))
FIRST_WAITING = Query(sa.select(f.message_id).where(*_waiting)
                      .order_by(f.next_attempt_at, f.message_id).limit(1),
                      "the media retry due first")
FORWARD_ONE = Query(sa.update(media).values(next_attempt_at=P("now"))
                    .where(f.message_id == P("message_id"), *_waiting),
                    "a media retry due now")
FORWARD_ALL = Query(sa.update(media).values(next_attempt_at=P("now")).where(*_waiting),
                    "media retries due now")
RELEASE = Query(sa.update(media).values(state="pending", reason=None, next_attempt_at=0,
                                        updated_at=P("now"))
                .where(f.source == P("source"), f.state == "held"), "release held media")
HOLD = Query(sa.update(media).values(state="held", reason=P("reason"), lease_until=None,
                                     lease_owner=None, updated_at=P("now"))
             .where(f.source == P("source"), f.state == "pending"), "hold media")
UNLEASE = Query(sa.update(media).values(lease_until=None, lease_owner=None).where(
    f.source == P("source"), f.state == "pending", f.lease_until.isnot(None)),
    "void media leases")
GIVE_BACK = Query(sa.update(media).values(lease_until=None, lease_owner=None).where(
    f.message_id.in_(values_of("ids")), f.state == "pending", f.lease_until.isnot(None),
    f.lease_owner.is_not_distinct_from(P("owner", type_=TEXT))),
    "give back media leases")
REQUEUE_ALL = Query(sa.update(media).values(state="pending", next_attempt_at=0, attempts=0)
                    .where(f.state == "dead"), "requeue dead media")
REQUEUE = Query(sa.update(media).values(state="pending", next_attempt_at=0, attempts=0)
                .where(f.state == "dead", f.message_id.in_(values_of("ids"))),
                "requeue these dead media")
ORPHANS = Query(sa.delete(media).where(~sa.exists().where(messages.c.id == f.message_id))
                .returning(f.path, f.sha256), "forget media of deleted messages")
IN_USE = Query(sa.select(sa.literal(1)).where(f.sha256 == P("sha256")).limit(1),
               "media file still used")
PATHS = Query(sa.select(f.path).where(f.path.isnot(None)).distinct(), "stored media paths")
BY_STATE = Query(sa.select(f.source, f.state, sa.func.count()).group_by(f.source, f.state),
                 "media jobs by state")
_files = sa.select(f.source, f.sha256, f.size).where(f.state == "fetched").distinct().subquery()
BYTES = Query(sa.select(_files.c.source, sa.func.sum(_files.c.size)).group_by(_files.c.source),
              "media bytes stored")
_stored = sa.select(f.sha256, f.size).where(f.state == "fetched").distinct().subquery()
TOTAL_BYTES = Query(sa.select(sa.func.coalesce(sa.func.sum(_stored.c.size), 0)),
                    "media bytes stored in all")
REASONS = Query(sa.select(f.source, f.reason, sa.func.count()).where(f.reason.isnot(None))
                .group_by(f.source, f.reason).order_by(sa.func.count().desc(), f.source,
                                                       f.reason).limit(50), "media reasons")
FILE = Query(sa.select(f.path, f.mime_type).where(f.message_id == P("message_id"),
                                                  f.state == "fetched"), "a fetched file")


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


async def queue_jobs(db: Connector, fresh: Sequence[Message],
                     ids: Mapping[tuple[str, str], int], sources: Mapping[str, str | None],
                     now: float, hold: bool = True) -> None:
    """In the append's transaction: a job per new media message of a fetching source.

    sources: source name -> None (fetch) or the reason this process will not: the job is
    held with it, or (not `hold`: a shared buffer, where another process may fetch) pending
    with it, for whichever process can fetch (/status shows the reason meanwhile).
    """
    jobs = [{"message_id": ids[(m.source, m.provider_id)], "source": m.source,
             "media_id": m.media.id, "expected_sha256": m.media.sha256,
             "mime_type": m.media.mime_type,
             "state": "held" if sources[m.source] and hold else "pending",
             "reason": sources[m.source], "updated_at": now}
            for m in fresh if m.source in sources and m.kind in FILE_KINDS
            and m.media is not None and m.media.id]
    if jobs:
        await db.many(QUEUE, jobs)


async def claim(db: Connector, source: str, now: float, limit: int,
                lease: float, owner: str | None = None) -> list[MediaJob]:
    """Lease up to `limit` due jobs of `source` (oldest first); a leased one is not due.
    `owner`: on a shared buffer, this process (the registry's id): once it is gone, its
    leases are freed for the others (shared.release_dead_leases)."""
    jobs = []
    for message_id, job_source, media_id, sha, mime, attempts, body in await db.rows(
            DUE, source=source, now=now, limit=limit):
        told = json.loads(body)
        jobs.append(MediaJob(message_id, job_source, media_id, sha, mime,
                             (told.get("media") or {}).get("filename"), told.get("account"),
                             attempts))
    if jobs:
        await db.run(LEASE, until=now + lease, owner=owner,
                     ids=[job.message_id for job in jobs])
    return jobs


async def next_due(db: Connector, source: str) -> float | None:
    """When the source's next pending job is due (None: nothing pending)."""
    return await db.value(NEXT_DUE, source=source)


async def fetched(db: Connector, message_id: int, path: str, size: int,
                  sha256: str, mime_type: str | None, now: float) -> bool:
    """The file is stored; targets that wait for it (a sink's attachment) are re-opened.
    True when the job is gone (its message purged meanwhile) and no job uses the file."""
    if not await db.run(FETCHED, path=path, size=size, sha256=sha256, mime_type=mime_type,
                        now=now, message_id=message_id):
        return await db.one(IN_USE, sha256=sha256) is None
    await delivery.reopen_waiting(db, message_id)
    return False


async def failed(db: Connector, message_id: int, reason: str,
                 retry_at: float | None, now: float) -> None:
    """A failed try: retry at `retry_at`, or dead (None) with the reason."""
    await db.run(FAILED, retry_at=retry_at, reason=reason, now=now, message_id=message_id)
    if retry_at is None:
        await delivery.settle_waiting(db, message_id, reason)


async def retry_first_now(db: Connector, source: str, now: float) -> int | None:
    """Make the source's retry due first (waiting for its backoff) due now: a probe of the
    provider. Its message id, or None when none waits."""
    first = await db.value(FIRST_WAITING, source=source, now=now)
    if first is None or not await db.run(FORWARD_ONE, source=source, now=now,
                                         message_id=first):
        return None
    return first


async def retry_all_now(db: Connector, source: str, now: float) -> int:
    """Make every retry of the source that waits for its backoff due now; how many."""
    return await db.run(FORWARD_ALL, source=source, now=now)


async def set_hold(db: Connector, source: str, reason: str | None, now: float,
                   void_leases: bool = True) -> int:
    """Hold every pending job of `source` (reason), or release its held ones (None) and,
    with `void_leases` (a runner starting on a buffer only it fetches for: SQLite's flock),
    take back the leases a killed run left. On a shared buffer the other processes' leases
    are downloads under way: a gone one's are freed by the registry (release_dead_media)."""
    if reason is not None:
        return await db.run(HOLD, reason=reason, now=now, source=source)
    changed = await db.run(RELEASE, now=now, source=source)
    if void_leases:
        await db.run(UNLEASE, source=source)
    return changed


async def give_back(db: Connector, message_ids: Sequence[int], owner: str | None) -> int:
    """A runner stopping: the leases of its cut-off downloads (still held by `owner`, the
    process; None on a buffer of one process) are free for the next claim at once; how
    many."""
    if not message_ids:
        return 0
    return await db.run(GIVE_BACK, ids=list(message_ids), owner=owner)


async def requeue(db: Connector, message_ids: Sequence[int] | None) -> int:
    """Dead media jobs back to pending (all, or these messages')."""
    if message_ids is None:
        changed = await db.run(REQUEUE_ALL)
    else:
        changed = await db.run(REQUEUE, ids=list(message_ids))
    await delivery.await_file_again(db, message_ids)
    return changed


async def forget_orphans(db: Connector) -> list[str]:
    """Delete the jobs of messages that are gone; the paths no remaining job uses."""
    gone = [(path, sha) for path, sha in await db.rows(ORPHANS) if path]
    unused = [path for path, sha in gone if await db.one(IN_USE, sha256=sha) is None]
    return sorted(set(unused))


async def stored_paths(db: Connector) -> set[str]:
    """Every path a job refers to (a file in media_path not among them is an orphan)."""
    return {row[0] for row in await db.rows(PATHS)}


async def stored_bytes(db: Connector) -> int:
    """Bytes of every fetched file, each stored file once (all sources)."""
    return int(await db.value(TOTAL_BYTES) or 0)


async def counts(db: Connector) -> dict[str, dict[str, Any]]:
    """Per source: jobs per state, bytes stored, and reasons of dead and failing jobs."""
    out: dict[str, dict[str, Any]] = {}
    for source, state, n in await db.rows(BY_STATE):
        entry = out.setdefault(source, {"pending": 0, "fetched": 0, "dead": 0, "held": 0,
                                        "bytes": 0, "reasons": {}})
        entry[state] = n
    for source, size in await db.rows(BYTES):
        out[source]["bytes"] = size
    for source, reason, n in await db.rows(REASONS):
        out[source]["reasons"][reason] = n
    return out


async def file_of(db: Connector, message_id: int) -> tuple[str, str | None] | None:
    """(path, MIME type) of a message's fetched file, or None."""
    row = await db.one(FILE, message_id=message_id)
    return (row[0], row[1]) if row else None
