"""The behaviour both backends share, written once over two primitives.

`Buffer.open(target)` opens the backend its target names (a file path or
`sqlite:///file` for SQLiteBuffer, `postgresql://...` for PostgresBuffer). Every
operation below runs its SQL (bridge.buffer's modules) through a Connector that a backend
hands out: `write(work)` runs `work(db)` in one write transaction, `read(work)` on the
read side. Appends, the health check, opening and closing are the backend's own.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa

import bridge.buffer.delivery as delivery
import bridge.buffer.history as history
import bridge.buffer.media as media
import bridge.buffer.purge as purge
import bridge.buffer.syncs as syncs
from bridge.buffer.append import FOLD_QUEUED, FOLDED
from bridge.buffer.codec import ids_of
from bridge.buffer.compiler import (
    P,
    Query,
    greatest,
    json_field,
    rows_in,
    starts_with,
    values_of,
)
from bridge.buffer.connectors import Connector
from bridge.buffer.delivery import Claim, Policy
from bridge.buffer.group import GroupCommit
from bridge.buffer.location import is_postgres, sqlite_path
from bridge.buffer.media import MediaJob
from bridge.buffer.tables import (
    INT,
    REAL,
    TEXT,
    batches,
    deliveries,
    ledger,
    messages,
    sink_state,
    targets,
)
from bridge.buffer.views import ReadMethods
from bridge.contracts import WAITS_WITH_MESSAGES, Outcome, TargetFailure
from bridge.errors import BufferClosed
from bridge.model import Identity, Message, StatusUpdate

T = TypeVar("T")
Work = Callable[[Connector], Awaitable[T]]

logger = logging.getLogger(__name__)

# scheme -> backend class; each backend's module registers itself when imported: the
# SQLite one with bridge.buffer's names, the PostgreSQL one (asyncpg, its dialect's
# statements) when a postgresql:// buffer is opened or PostgresBuffer is first named
BACKENDS: dict[str, type[Buffer]] = {}
MODULES = {"sqlite": "bridge.buffer.sqlite", "postgresql": "bridge.buffer.postgres"}


def backend(scheme: str) -> type[Buffer]:
    """The buffer class for `scheme` ("sqlite", "postgresql"), its module loaded first."""
    if scheme not in BACKENDS:
        importlib.import_module(MODULES[scheme])
    return BACKENDS[scheme]


class Buffer(ReadMethods):
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
            return await backend("postgresql").open(str(path), runner=runner, **options)
        return await backend("sqlite").open(sqlite_path(path), synchronous, runner, **options)

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

    async def write(self, work: Work[T]) -> T:
        """Run `work(db)` in one write transaction; its result once committed."""
        raise NotImplementedError

    async def read(self, work: Work[T]) -> T:
        """Run `work(db)` on the read side (committed data only)."""
        raise NotImplementedError

    # -- ingest ------------------------------------------------------------------------

    # -- sinks -------------------------------------------------------------------------

    async def install_sinks(self, names: Sequence[str]) -> list[str]:
        """Record the enabled sinks; return the ones seen for the first time."""
        return await self.write(lambda db: install(db, list(names), time.time()))

    async def needs_backfill(self, sink: str) -> bool:
        return bool(await self.read(lambda db: db.value(NEEDS_BACKFILL, sink=sink)))

    async def installed_at(self, sink: str) -> float | None:
        """When `sink` was first seen (unix seconds), or None for one never installed."""
        return await self.read(lambda db: db.value(INSTALLED_AT, sink=sink))

    async def backfill(self, sink: str, since: float) -> int:
        """Queue for `sink` every stored message sent since `since`; mark backfill done."""
        now = time.time()
        return await self.write(lambda db: _backfill(db, sink, since, now))

    async def recovered(self, sink: str, keys: Sequence[tuple[str, str]], since: float,
                        stored_since: float) -> int:
        """Pace as backfill `sink`'s waiting deliveries of messages a source recovered for
        its backfill: `keys` (source, provider id), sent since `since`, stored since
        `stored_since` (when the backfill began: one stored before came live)."""
        if not keys:
            return 0
        return await self.write(lambda db: db.run(
            RECOVERED, sink=sink, since=since, stored_since=stored_since, keys=list(keys)))

    async def claim(self, sink: str, limit: int, lease: float, now: float | None = None,
                    backfill: bool | None = None, batch_size: int | None = None,
                    history_days: float | None = None, after_lease: float = 0.0
                    ) -> list[Claim]:
        """Lease up to `limit` batches of `sink` that are due (forming new ones first).

        New batches take about `batch_size` pending messages (default: `limit`, at least
        500), each conversation's whole; `limit` never cuts a conversation in two.
        `backfill`: True or False for only backfill or only live batches; None for both.
        `history_days`: the sink's backfill_days; older history is held first (history.py).
        `after_lease`: an expired lease's batch retries that long after the lease's end
        at the soonest (bridge.sync.settle_after_lease).
        """
        size = batch_size or max(limit, delivery.DEFAULT_BATCH_SIZE)

        async def work(db: Connector) -> list[Claim]:
            return await delivery.claim(db, sink, await self.clock(db, now), limit, lease,
                                        backfill, size, history_days=history_days,
                                        after_lease=after_lease)
        return await self.write(work)

    async def clock(self, db: Connector, now: float | None = None) -> float:
        """`now` when given, else the time every process of this buffer judges leases and
        waits by: this host's clock here (one process); the database server's on a
        shared buffer, whose hosts' clocks may disagree (PostgresBuffer)."""
        return time.time() if now is None else now

    # how far the buffer's clock is ahead of this host's, as clock() last read it (0 here)
    clock_shift: float = 0.0

    async def complete(self, claim: Claim, outcomes: Sequence[Outcome],
                       policy: Policy, now: float | None = None) -> dict[str, int]:
        """Record outcomes under the claim's lease (LeaseLost if it expired and moved on).

        Completions that arrive together (a sink delivering several batches at once) are
        recorded in one transaction, with the same few statements however many there are.
        """
        return await self._completions().submit((claim, list(outcomes), policy, now))

    async def unclaim(self, claims: Sequence[Claim], now: float | None = None) -> int:
        """Give back claims never handed to the sink (a runner stopping): due now, their
        try not counted, nothing to settle (no write of theirs can be in flight)."""
        async def work(db: Connector) -> int:
            return await delivery.unclaim(db, list(claims), await self.clock(db, now))
        return await self.write(work)

    async def renew(self, claim: Claim, lease: float, now: float | None = None) -> bool:
        """Lease the claim's batch for `lease` seconds from now again; False when the
        lease moved on (it expired and another drain took the batch)."""
        async def work(db: Connector) -> bool:
            return await delivery.renew(db, claim, await self.clock(db, now) + lease)
        return await self.write(work)

    def _completions(self) -> GroupCommit:
        found = self.__dict__.get("_completion_group")
        if found is None:
            found = self.__dict__["_completion_group"] = GroupCommit(self._complete_group)
        return found

    async def _complete_group(self, items: list[tuple[Any, ...]]) -> list[Any]:
        """Completions sharing a policy and a time (None: now) in one transaction each."""
        results: list[Any] = [None] * len(items)
        together: dict[tuple[int, float | None], list[int]] = {}
        for index, (_, _, policy, now) in enumerate(items):
            together.setdefault((id(policy), now), []).append(index)
        for indexes in together.values():
            _, _, policy, now = items[indexes[0]]

            async def work(db: Connector, these: list[int] = indexes, p: Policy = policy,
                           at: float | None = now) -> list[Any]:
                when = await self.clock(db, at)
                shift = self.clock_shift if at is None else 0.0
                return await delivery.complete_many(
                    db, [(items[i][0], _on_clock(items[i][1], shift)) for i in these], when, p)
            found = await self.write(work)
            for index, result in zip(indexes, found, strict=True):
                results[index] = result
        return results

    async def retry_now(self, sink: str, now: float | None = None) -> int:
        """Make the sink's batches waiting to retry due now (not waits the sink asked for)."""
        async def work(db: Connector) -> int:
            return await delivery.retry_now(db, sink, await self.clock(db, now))
        return await self.write(work)

    async def requeue(self, sink: str | None = None,
                      message_ids: Sequence[int] | None = None) -> int:
        """Move dead letters back to pending; return how many."""
        return await self.write(lambda db: delivery.requeue(db, sink, message_ids))

    async def requeue_conversation(self, conversation: str,
                                   now: float | None = None) -> dict[str, int]:
        """Dead letters of one conversation back to pending (every sink); its waiting
        retries due now. Returns {"requeued": n, "hurried": n}."""
        async def work(db: Connector) -> dict[str, int]:
            return await delivery.requeue_conversation(db, conversation,
                                                       await self.clock(db, now))
        return await self.write(work)

    async def purge(self, conversation: str) -> int:
        """Delete one person's messages and mappings from the buffer; messages deleted.

        The whole person goes (purge_person): every number and BSUID linked to the
        conversation, and their words in group chats too."""
        return (await self._erase_person(conversation))["messages"]

    async def purge_conversation(self, conversation: str) -> dict[str, Any]:
        """purge(), with all it found and what the backend did about its files (as
        purge_person: 'messages', ..., 'wal_emptied', 'stale_copies', 'vacuum_error')."""
        return await self._erase_person(conversation)

    async def record_sync(self, sink: str, at: float, next_at: float | None,
                          error: str | None) -> None:
        """Note a drain run: when it ran, when the next is due, and its error if any."""
        await self.write(lambda db: db.run(RECORD_SYNC, at=at, next_at=next_at, error=error,
                                           failed=int(error is not None), sink=sink))

    async def note_source_sync(self, source: str, account: str, kind: str,
                               what: syncs.SyncNote, now: float | None = None
                               ) -> dict[str, Any]:
        """Record what happened to a one-off provider sync (requested, a chunk arrived,
        declined ...); the sync as it stands after it (bridge.buffer.syncs)."""
        at = time.time() if now is None else now
        return await self.write(lambda db: syncs.note(db, source, account, kind, what, at))

    async def source_syncs(self, source: str | None = None) -> list[dict[str, Any]]:
        """Every one-off provider sync (of `source`, when given) and how far it got."""
        return await self.read(lambda db: syncs.all_syncs(db, source))

    async def prune(self, older_than: float, chunk: int = 5000) -> int:
        """Delete settled messages stored before `older_than`; undelivered ones stay.

        Their media files go too (after the commit that forgets them), unless another
        message holds the same bytes.
        """
        total = 0
        while True:
            removed = await self.write(lambda db: prune_chunk(db, older_than, chunk))
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
        if dry_run:
            return await self.write(lambda db: purge.purge(db, key, dry_run))
        return await self._erase_person(key)

    async def _erase_person(self, key: str) -> dict[str, Any]:
        """purge_person's deletes, their media jobs in the same transaction (a download
        finishing later finds no row: store.media_fetched), then their files, unused."""
        async def work(db: Connector) -> dict[str, Any]:
            found = await purge.purge(db, key, dry_run=False)
            found["paths"] = await media.forget_orphans(db)
            return found
        async with self.media_files:  # no file of this process installed meanwhile
            found, scrubbed = await self.erase(work, lambda found: found.pop("traces"))
            paths = found.pop("paths")
            for path in paths:
                _unlink(path)
        found["files"] = len(paths)
        return {**found, **scrubbed}

    async def erase(self, work: Work[T], traces: Callable[[T], Sequence[str]]
                    ) -> tuple[T, dict[str, Any]]:
        """Run a write that deletes a person, and leave none of the deleted bytes in the
        backend's files (`traces(result)`: strings that must be gone, where the backend can
        look); the result, and what the backend did to make sure of it."""
        raise NotImplementedError

    # -- media -------------------------------------------------------------------------

    async def forget_media(self) -> list[str]:
        """Drop the media jobs of deleted messages and delete files no job uses; the paths."""
        async with self.media_files:
            paths = await self.write(media.forget_orphans)
            for path in paths:
                _unlink(path)
        return paths

    async def media_claim(self, source: str, limit: int, lease: float,
                          now: float | None = None) -> list[MediaJob]:
        async def work(db: Connector) -> list[MediaJob]:
            return await media.claim(db, source, await self.clock(db, now), limit, lease)
        return await self.write(work)

    async def media_fetched(self, job: MediaJob, path: str, size: int, sha256: str,
                            mime_type: str | None, now: float | None = None) -> None:
        """Record a stored file (called holding media_files, after its rename into place).
        A job purged while its download ran has no row: the file it left is deleted
        (unless another message holds the same bytes)."""
        when = time.time() if now is None else now
        unused = await self.write(lambda db: media.fetched(db, job.message_id, path, size,
                                                           sha256, mime_type, when))
        if unused:
            logger.info("media of message %s arrived after the message was purged: its "
                        "file is deleted", job.message_id)
            _unlink(path)

    async def media_failed(self, job: MediaJob, reason: str, retry_at: float | None,
                           now: float | None = None) -> None:
        """Record a failed fetch: retry at `retry_at`, or dead letter (None) with `reason`."""
        when = time.time() if now is None else now
        await self.write(lambda db: media.failed(db, job.message_id, reason, retry_at, when))

    async def media_hold(self, source: str, reason: str | None) -> int:
        """Hold the source's pending jobs (it cannot fetch: reason), or release them (None)."""
        return await self.write(lambda db: media.set_hold(db, source, reason, time.time()))

    async def media_give_back(self, message_ids: Sequence[int]) -> int:
        """Free the leases of these jobs' downloads, cut off by a stop (this process's)."""
        return await self.write(lambda db: media.give_back(db, message_ids, None))

    async def media_next_due(self, source: str) -> float | None:
        return await self.write(lambda db: media.next_due(db, source))

    async def media_retry_now(self, source: str, *, every: bool,
                              now: float | None = None) -> int | None:
        """Bring the source's fetch retries that wait for their backoff forward to now:
        every one (how many), or only the one due first (its message id, None if none)."""
        async def work(db: Connector) -> int | None:
            when = await self.clock(db, now)
            if every:
                return await media.retry_all_now(db, source, when)
            return await media.retry_first_now(db, source, when)
        return await self.write(work)

    async def media_requeue(self, message_ids: Sequence[int] | None = None) -> int:
        return await self.write(lambda db: media.requeue(db, message_ids))

    async def media_file(self, message_id: int) -> tuple[str, str | None] | None:
        """(path, MIME type) of a message's fetched file, or None."""
        return await self.read(lambda db: media.file_of(db, message_id))

    async def media_paths(self) -> set[str]:
        return await self.read(media.stored_paths)

    async def record_landed(self, sink: str, key: str, external_id: str,
                            now: float | None = None) -> None:
        """Put one post that landed in the sink's ledger now (see delivery.landed_now)."""
        when = time.time() if now is None else now
        await self.write(lambda db: delivery.landed_now(db, sink, key, external_id, when))

    async def record_attempt(self, sink: str, batch_key: str, failure: TargetFailure,
                             now: float | None = None) -> None:
        """Record at once that a post is in flight (see delivery.attempt_now)."""
        when = time.time() if now is None else now
        await self.write(lambda db: delivery.attempt_now(db, sink, batch_key, failure, when))

    async def media_stored_bytes(self) -> int:
        """Bytes of fetched media stored, each file once (buffer.media_max_total counts it)."""
        return await self.read(media.stored_bytes)

    # -- reads: bridge.buffer.views.ReadMethods ----------------------------------------

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


def _on_clock(outcomes: Sequence[Outcome], shift: float) -> list[Outcome]:
    """Outcomes whose waits a sink asked for on this host's clock (not_before), on the
    buffer's: `shift` seconds later."""
    if not shift:
        return list(outcomes)
    return [replace(o, not_before=o.not_before + timedelta(seconds=shift))
            if o.not_before is not None else o for o in outcomes]


ss, d, m = sink_state.c, deliveries.c, messages.c
NEEDS_BACKFILL = Query(sa.select(ss.backfill_done_at.is_(None)).where(ss.sink == P("sink")),
                       "needs backfill")
INSTALLED_AT = Query(sa.select(ss.installed_at).where(ss.sink == P("sink")), "installed at")
SINK_ROWS = Query(sa.select(ss.sink, ss.enabled, ss.disabled_at), "installed sinks")
NEW_SINK = Query(sa.insert(sink_state).values(sink=P("sink"), installed_at=P("now")),
                 "install a sink")
# Re-enabled: queue what arrived while it was off, so nothing is skipped; history among it
# is backfill material, as at its append (paced, and held when older than backfill_days)
_history = sa.cast(json_field(m.body, "history"), TEXT).in_(("1", "true"))
CATCH_UP = Query(lambda insert: insert(deliveries).from_select(
    ["sink", "message_id", "backfill"], sa.select(
        P("sink", type_=TEXT), m.id, sa.case((_history, 1), else_=0)).where(
        m.stored_at >= P("since"))).on_conflict_do_nothing(), "queue what a sink missed")
ENABLE = Query(sa.update(sink_state).values(enabled=1, disabled_at=None)
               .where(ss.sink == P("sink")), "enable a sink")
DISABLE = Query(sa.update(sink_state).values(enabled=0, disabled_at=P("now"))
                .where(ss.sink == P("sink")), "disable a sink")
RECORD_SYNC = Query(sa.update(sink_state).values(  # last sync: never backwards (two hosts)
    last_sync_at=greatest(P("at", type_=REAL), sa.func.coalesce(ss.last_sync_at,
                                                                P("at", type_=REAL))),
    next_sync_at=P("next_at"),
    last_error=sa.func.coalesce(P("error", type_=ss.last_error.type), ss.last_error),
    last_error_at=sa.case((P("failed", type_=INT) == 1, P("at", type_=REAL)),
                          else_=ss.last_error_at)).where(ss.sink == P("sink")),
    "record a drain")


async def install(db: Connector, names: list[str], now: float) -> list[str]:
    """Record the enabled sinks; the ones seen for the first time."""
    existing = {sink: (enabled, disabled_at)
                for sink, enabled, disabled_at in await db.rows(SINK_ROWS)}
    first = []
    for name in names:
        if name not in existing:
            await db.run(NEW_SINK, sink=name, now=now)
            first.append(name)
        elif not existing[name][0]:
            await db.run(CATCH_UP, sink=name, since=existing[name][1])
            await db.run(FOLD_QUEUED, sink=name, reason=FOLDED, now=now)
            await db.run(ENABLE, sink=name)
    for name, (enabled, _) in existing.items():
        if enabled and name not in names:
            await db.run(DISABLE, now=now, sink=name)
    return first


# Finished rows of an earlier backfill leave the progress count; pending ones stay in it.
_BACKFILL = (
    Query(sa.update(deliveries).values(backfill=0).where(
        d.sink == P("sink"), d.backfill == 1, d.state != "pending"), "backfill: restart"),
    history.REOPEN,  # history held as older than backfill_days, now covered
    Query(lambda insert: insert(deliveries).from_select(
        ["sink", "message_id", "backfill"], sa.select(P("sink", type_=TEXT), m.id, sa.literal(1))
        .where(m.sent_at >= P("since"))).on_conflict_do_nothing(), "backfill: queue"),
)
# What the sources recovered for a backfill is already pending (its append queued it) and
# counts as backfill too, named by its keys: a webhook's message stored meanwhile is live
# and stays live (marked by the time it was stored, it was paced as backfill and the
# chat's later live messages went to the CRM before it: race62).
_keys = rows_in("keys", [("source", "text"), ("provider_id", "text")], alias="r")
RECOVERED = Query(sa.update(deliveries).values(backfill=1).where(
    d.sink == P("sink"), d.state == "pending", d.batch_id.is_(None),
    d.message_id.in_(sa.select(m.id).join_from(messages, _keys, sa.and_(
        m.source == _keys.c.source, m.provider_id == _keys.c.provider_id)).where(
        m.sent_at >= P("since"), m.stored_at >= P("stored_since")))),
    "backfill: what the sources recovered")
BACKFILL_COUNT = Query(sa.select(sa.func.count()).select_from(deliveries).where(
    d.sink == P("sink"), d.backfill == 1), "backfill: queued")
BACKFILL_DONE = Query(sa.update(sink_state).values(
    backfill_since=P("since"), backfill_done_at=P("now"), backfill_started_at=P("now"),
    backfill_total=P("queued")).where(ss.sink == P("sink")), "backfill: noted")


async def _backfill(db: Connector, sink: str, since: float, now: float) -> int:
    """Queue every message since `since` the sink does not have yet; progress restarts."""
    for step in _BACKFILL:
        await db.run(step, sink=sink, since=since)
    await db.run(FOLD_QUEUED, sink=sink, reason=FOLDED, now=now)
    queued = await db.value(BACKFILL_COUNT, sink=sink)
    await db.run(BACKFILL_DONE, since=since, now=now, queued=queued, sink=sink)
    return queued


_settled = sa.select(d.message_id).where(d.state.in_(("pending", "dead")))
# History held as older than a sink's backfill_days is not delivered: stored until a
# backfill reaching back to it posts it, as its reason says (looked up per sink by key)
_held = sa.exists().where(d.sink.in_(sa.select(ss.sink)), d.message_id == m.id,
                          d.state == "skipped", starts_with(d.reason, history.HISTORY_HELD))
PRUNE = (
    Query(sa.delete(messages).where(m.id.in_(sa.select(m.id).where(
        m.stored_at < P("older_than"), m.id.not_in(_settled), ~_held,
        m.id.not_in(values_of("kept"))).limit(P("chunk")))),
        "prune settled messages"),
)
# A dead target (an attachment waiting for its file, a refused opportunity post) is a
# dead letter: its messages and batch stay for its requeue (or its file's arrival) to
# re-open (read through the dead targets' own index)
_dead = sa.select(targets.c.batch_id, targets.c.message_ids).where(targets.c.state == "dead")
DEAD_TARGETS = Query(_dead, "messages of dead targets")
PRUNE_AFTER = (
    Query(sa.delete(deliveries).where(d.state.in_(("done", "skipped")), ~sa.exists().where(
        m.id == d.message_id))),
    Query(sa.delete(batches).where(batches.c.state == "done",
                                   batches.c.created_at < P("older_than"),
                                   batches.c.id.not_in(values_of("kept_batches")))),
    Query(sa.delete(ledger).where(ledger.c.created_at < P("older_than"))),
    # a post's start record whose batch is gone (its message was requeued into a batch of
    # another key and landed there): nothing reads it any more
    Query(sa.delete(targets).where(
        starts_with(targets.c.reason, WAITS_WITH_MESSAGES),
        ~sa.exists().where(batches.c.id == targets.c.batch_id))),
)


async def prune_chunk(db: Connector, older_than: float, chunk: int) -> int:
    dead = await db.rows(DEAD_TARGETS)
    kept = sorted({i for _, ids in dead for i in ids_of(ids)})
    kept_batches = sorted({batch for batch, _ in dead if batch is not None})
    removed = await db.run(PRUNE[0], older_than=older_than, chunk=chunk, kept=kept)
    for step in PRUNE_AFTER:
        await db.run(step, older_than=older_than, kept_batches=kept_batches)
    return removed
