"""The buffer in PostgreSQL, shared by several bridge processes (asyncpg).

Every operation is one transaction on a pooled connection, running the buffer's
statements compiled for PostgreSQL (bridge.buffer.compiler). What one SQLite writer got
for free, several processes get from PostgreSQL locks:
- a claim leases its batches in one statement, FOR UPDATE SKIP LOCKED, so two processes
  never lease one batch and never wait on each other, and a conversation's batches go
  one at a time, in order (an older unfinished batch blocks a newer one); one process
  at a time forms new batches of a sink (a try-lock: see bridge.buffer.delivery);
- appends that teach the contact map (identities) hold one advisory lock, so two
  webhooks cannot merge the same person two ways at once; other appends of messages hold
  it shared (beside each other), so none files a message under a person, or makes a key
  a person, while a merge or a link of that key commits;
- a killed process's leases are freed once the cluster registry sees it silent for three
  heartbeats (its lease tokens start with its id: release_dead_leases) and its
  deliver_timeout has passed since the claim (a process only paused goes on posting when
  resumed, until that timeout), or when they expire, whichever comes first; its media
  fetches' leases (media.lease_owner names it) once no session of it is left; there is no
  flock, since other processes are alive.
A serialization failure or deadlock retries the whole transaction (it rolled back).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg
import sqlalchemy as sa

import bridge.buffer.delivery as delivery
import bridge.buffer.media as media
import bridge.buffer.purge as purge
import bridge.buffer.shared as shared
from bridge.buffer.append import Append, append_group, new_append
from bridge.buffer.compiler import P, Query
from bridge.buffer.connectors import Connector, PgConnector
from bridge.buffer.delivery import Claim
from bridge.buffer.group import GroupCommit
from bridge.buffer.migrations import migrate_postgres
from bridge.buffer.pgurl import check_url, redact, scrub, split_schema
from bridge.buffer.port import SharedBuffer
from bridge.buffer.store import BACKENDS, RECORD_SYNC, Buffer, Work, install
from bridge.buffer.tables import buffer_imports, heartbeat
from bridge.errors import BufferUnavailable
from bridge.model import Identity, Message, StatusUpdate

T = TypeVar("T")

logger = logging.getLogger(__name__)

RETRIES = 5  # serialization failures / deadlocks retried per transaction
# seconds a transaction may sit idle (its process paused: SIGSTOP, a frozen VM) before the
# server ends its session: its locks (the batch forming lock, a rate budget's row, the
# contact map's lock) would otherwise hold up every other process until it is resumed
IDLE_IN_TRANSACTION = 15.0
CLOCK_STEP = 1.0  # seconds this host's clock must be off the server's to be moved onto it
IDENTITY_LOCK = "chatbridge:identities"
INSTALL_LOCK = "chatbridge:install"
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


class PostgresBuffer(Buffer, SharedBuffer):
    """Open with `await Buffer.open("postgresql://...")`; close with `close()`."""

    def __init__(self, url: str, pool: asyncpg.Pool) -> None:
        self.path = redact(url)
        self.url = url
        self._pool = pool
        self.media_sources: dict[str, str | None] = {}
        self.media_files = asyncio.Lock()
        self._closed = False
        self._commits = 0
        self._group = GroupCommit(self._append_group)
        # this process on the shared buffer: its lease tokens start with it, and the
        # cluster registry (bridge.cluster.Member) heartbeats under it
        self.owner = str(uuid.uuid4())

    @classmethod
    async def open(cls, url: str, synchronous: str = "full", runner: bool = False,
                   pool_size: int = 10, **_: Any) -> PostgresBuffer:
        """Connect, create the schema if needed and migrate (under an advisory lock).

        A server that cannot be reached, or refuses us, raises BufferUnavailable naming
        the URL (without its secrets) and what to do; a URL that cannot work (no host, a
        schema name outside pgurl.SCHEMA_PATTERN) raises ConfigError before any connection."""
        check_url(url)  # the same check as the config's and `bridge check`'s
        dsn, schema = split_schema(url)
        settings = {"idle_in_transaction_session_timeout": f"{IDLE_IN_TRANSACTION * 1000:.0f}",
                    **({"search_path": schema} if schema else {})}
        try:
            if schema:
                await _create_schema(dsn, schema)
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size,
                                             server_settings=settings, command_timeout=60)
        except (OSError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BufferUnavailable(f"buffer.url {redact(url)}: {_reason(exc, url)}; check that "
                                    "PostgreSQL runs there and the user may connect") from exc
        buffer = cls(url, pool)
        try:
            async with pool.acquire() as conn, conn.transaction():
                await migrate_postgres(PgConnector(conn), "buffer.url")
                copying = await PgConnector(conn).value(UNFINISHED_COPY) if runner else None
        except BaseException:
            await pool.close()
            raise
        if copying:
            await pool.close()
            raise BufferUnavailable(
                f"buffer.url {redact(url)}: the copy of {copying} into it has not finished "
                "(`bridge buffer migrate`); run the copy to its end, then start the bridges "
                "(a bridge writing during a copy gets the ids the copy is filling in)")
        return buffer

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._pool.close()

    @property
    def stats(self) -> dict[str, int]:
        return {"commits": self._commits, "grouped_appends": self._group.grouped}

    async def append(self, messages: Iterable[Message], statuses: Iterable[StatusUpdate] = (),
                     contacts: Mapping[str, str] | None = None,
                     identities: Iterable[Identity] = ()) -> int:
        """Store in one transaction, committed before this returns; new message count."""
        self._check_open()
        item = new_append(messages, statuses, contacts, identities)
        if item is None:
            return 0

        return await self._group.submit(item)

    async def _append_group(self, items: list[Append]) -> list[int]:
        """One transaction for a group of appends (see GroupCommit)."""
        async def work(db: PgConnector) -> list[int]:
            if any(item.identities for item in items):
                await db.lock(IDENTITY_LOCK)
            elif any(item.messages for item in items):  # files under the persons it reads:
                await db.lock(IDENTITY_LOCK, shared=True)  # no merge or link meanwhile
            # a source this process cannot fetch may be fetched by another: its jobs are
            # queued pending (media_hold)
            return await append_group(db, items, self.media_sources, hold_media=False)
        return await self.write(work)

    async def heartbeat(self) -> None:
        """Commit a write now: proves the server is up, reachable and writable."""
        self._check_open()
        try:
            await self.write(lambda db: db.run(BEAT, at=time.time()))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BufferUnavailable(f"buffer.url {self.path}: {_reason(exc, self.url)}") from exc

    async def install_sinks(self, names: Sequence[str]) -> list[str]:
        async def work(db: PgConnector) -> list[str]:
            await db.lock(INSTALL_LOCK)  # processes starting together install once
            return await install(db, list(names), time.time())
        return await self.write(work)

    async def claim(self, sink: str, limit: int, lease: float, now: float | None = None,
                    backfill: bool | None = None, batch_size: int | None = None,
                    history_days: float | None = None, after_lease: float = 0.0
                    ) -> list[Claim]:
        """As Buffer.claim, with the sink's claims serialised across processes."""
        size = batch_size or max(limit, delivery.DEFAULT_BATCH_SIZE)

        async def work(db: PgConnector) -> list[Claim]:
            return await delivery.claim(db, sink, await self.clock(db, now), limit, lease,
                                        backfill, size, owner=self.owner,
                                        history_days=history_days, after_lease=after_lease)
        return await self.write(work)

    async def media_claim(self, source: str, limit: int, lease: float,
                          now: float | None = None) -> list[media.MediaJob]:
        """As Buffer.media_claim, each lease naming this process (release_dead_media)."""
        async def work(db: PgConnector) -> list[media.MediaJob]:
            return await media.claim(db, source, await self.clock(db, now), limit, lease,
                                     owner=self.owner)
        return await self.write(work)

    async def media_hold(self, source: str, reason: str | None) -> int:
        """As Buffer.media_hold, but a start takes back no lease: the other processes'
        are downloads under way (a second process's start fetched their files again);
        a gone one's are freed by the registry (release_dead_media), a stopped one gave
        its own back (media_give_back). And a process that cannot fetch (a reason) holds
        nothing: the other processes may fetch the source's jobs (its start held them
        all, downloads under way too, and nothing released them until a fetching process
        restarted); its appends queue theirs pending, with the reason (append_group)."""
        if reason is not None:
            logger.warning("this process fetches no media of %s (%s); on this shared buffer "
                           "a process of the cluster that can fetch them does", source, reason)
            return 0
        return await self.write(lambda db: media.set_hold(db, source, reason, time.time(),
                                                          void_leases=False))

    async def media_give_back(self, message_ids: Sequence[int]) -> int:
        """As Buffer.media_give_back: only leases this process still holds."""
        return await self.write(lambda db: media.give_back(db, message_ids, self.owner))

    async def record_sync(self, sink: str, at: float, next_at: float | None,
                          error: str | None) -> None:
        """As Buffer.record_sync, the times moved onto the server's clock: `last synced`
        never goes backwards, so a host running an hour ahead pinned it an hour into the
        future for every process, and their status said 'behind' meanwhile (adv38)."""
        async def work(db: PgConnector) -> None:
            await self.clock(db)
            shift = self.clock_shift  # this host's clock to the server's
            await db.run(RECORD_SYNC, at=at + shift, error=error, failed=int(error is not None),
                         next_at=None if next_at is None else next_at + shift, sink=sink)
        await self.write(work)

    async def clock(self, db: Connector, now: float | None = None) -> float:
        """`now` when given, else the server's clock: a lease or a wait one process writes
        is judged by another, and their hosts' clocks may disagree (a host minutes ahead
        took the batches others were delivering and posted them again: adv38)."""
        if now is not None:
            return now
        server = float(await db.value(shared.NOW))
        shift = server - time.time()
        # clocks in step (NTP) differ by the read's own milliseconds: no shift, so a time
        # a caller gives is stored as given
        self.clock_shift = shift if abs(shift) >= CLOCK_STEP else 0.0
        return server

    async def read(self, work: Work[T]) -> T:
        """`work(db)` in one REPEATABLE READ, READ ONLY transaction: every statement sees
        the snapshot its first one took (in autocommit each took its own: a completion
        committing between two showed a number synced with its window still open). A
        read-only transaction never fails to serialize, so it is never retried."""
        self._check_open()
        async with self._pool.acquire() as conn, conn.transaction(
                isolation="repeatable_read", readonly=True):
            return await work(PgConnector(conn))

    async def write(self, work: Work[T]) -> T:
        self._check_open()
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    result = await work(PgConnector(conn))
                self._commits += 1
                return result
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def erase(self, work: Work[T], traces: Callable[[T], Sequence[str]]
                    ) -> tuple[T, dict[str, object]]:
        """The write, then VACUUM of the tables a purge touches: PostgreSQL has no secure
        delete; VACUUM frees the dead row versions for reuse (it does not zero them), and
        WAL segments and backups keep their copies (README, Erasure)."""
        result = await self.write(work)
        traces(result)  # the server's files cannot be read from here
        async with self._pool.acquire() as conn:  # VACUUM runs outside a transaction
            await PgConnector(conn).run(purge.VACUUM)
        return result, {"vacuumed": True}

    # -- what only a shared buffer offers (bridge.buffer.port.SharedBuffer) ------------------

    async def release_dead_leases(self, dead_after: float,
                                  spare: Mapping[str, float] | None = None,
                                  after_lease: Mapping[str, float] | None = None) -> int:
        """Free the batch leases of processes whose heartbeat is older than `dead_after`
        seconds (killed, or cut off) once their delivery has surely timed out (`spare`: per
        sink, lease less deliver_timeout; a sink not named is left to its lease): their
        batches are retried as uncertain, instead of after their lease, once a write they
        had in flight can no longer land (`after_lease`, per sink: that long after the
        lease's end; default at once). Their media fetches' leases too, once no session of
        theirs is left (a fetch posts nothing); how many leases in all."""
        async def work(db: PgConnector) -> tuple[int, int]:
            batches = await shared.release_dead_leases(db, dead_after, spare or {},
                                                       await self.clock(db), after_lease or {})
            return batches, await shared.release_dead_media(db, dead_after)
        batches, fetches = await self.write(work)
        if batches:
            logger.info("freed %d batch lease(s) of bridge processes gone silent", batches)
        if fetches:
            logger.info("freed %d media fetch lease(s) of bridge processes gone", fetches)
        return batches + fetches

    def shared_budget(self, sink: str, budget: str) -> shared.RateBudget:
        """The CRM budget `budget` ("ordinary", "bulk") of `sink`, shared by every process
        on this database: hand it to the sink's limiter (RateLimiter.share)."""
        return shared.RateBudget(self, sink, budget)

    def listener(self, on_wake: Any) -> shared.Listener:
        """A LISTENer for sync-now/backfill wake-ups on a connection of its own (run it)."""
        dsn, schema = split_schema(self.url)
        return shared.Listener(dsn, schema, on_wake, owner=self.owner)

    async def notify(self, action: str, sink: str | None) -> None:
        """Wake every process on this buffer: `action` for `sink` (None: every sink)."""
        await self.read(lambda db: shared.notify(db, action, sink))

    async def beat(self, me: Mapping[str, Any], sinks: list[str],
                   drained: Mapping[str, float]) -> None:
        """Insert or refresh this process's row in the registry; forget long-gone ones."""
        await self.write(lambda db: shared.beat(db, self.owner, me, sinks, drained))

    async def leave(self) -> None:
        """Take this process's row out of the registry (a clean stop)."""
        await self.write(lambda db: shared.leave(db, self.owner))

    async def processes(self) -> list[dict[str, Any]]:
        """Every process in the registry: id, host, pid, version, times, sinks, drained,
        heartbeat age (server clock)."""
        return await self.read(shared.processes_of)


async def _create_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await PgConnector(conn).run(Query(sa.schema.CreateSchema(schema, if_not_exists=True)))
    except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
        pass  # another process created it at the same moment (IF NOT EXISTS races)
    finally:
        await conn.close()


BEAT = Query(lambda insert: (lambda new: new.on_conflict_do_update(
    index_elements=["id"], set_={"at": new.excluded.at}))(insert(heartbeat).values(
        id=1, at=P("at"))), "heartbeat")


# `bridge buffer migrate` under way (or stopped midway): its SQLite file, else nothing.
# A bridge appending meanwhile gets message ids the copy then inserts (ON CONFLICT DO
# NOTHING both ways): its webhooks got 200 for messages no table kept (adv49).
UNFINISHED_COPY = Query(sa.select(buffer_imports.c.source).where(
    buffer_imports.c.finished_at.is_(None)).limit(1), "unfinished buffer copy")


def _reason(exc: BaseException, url: str) -> str:
    """The first line of a driver's error, without the URL's secrets."""
    text = str(exc).strip() or type(exc).__name__
    return scrub(text.splitlines()[0], url)


BACKENDS["postgresql"] = PostgresBuffer
