"""The buffer in PostgreSQL, shared by several bridge processes (asyncpg).

Every operation is one transaction on a pooled connection; the SQL is the buffer's own
(bridge.buffer.dialect rewrites it). What one SQLite writer got for free, several
processes get from PostgreSQL locks:
- a claim holds a per-sink advisory lock while it batches and leases, and takes its rows
  FOR UPDATE SKIP LOCKED, so two processes never lease one batch, and a conversation's
  batches still go one at a time, in order (an older unfinished batch blocks a newer one);
- appends that teach the contact map (identities) hold one advisory lock, so two
  webhooks cannot merge the same person two ways at once;
- a killed process's leases are freed once the cluster registry sees it silent for three
  heartbeats (its lease tokens start with its id: release_dead_leases), or when they
  expire, whichever comes first; there is no flock, since other processes are alive.
A serialization failure or deadlock retries the whole transaction (it rolled back).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

import bridge.buffer.delivery as delivery
from bridge.buffer.append import Append, append_group, new_append
from bridge.buffer.delivery import Claim
from bridge.buffer.dialect import identifier
from bridge.buffer.pgdb import PgDb, plain
from bridge.buffer.pgschema import migrate
from bridge.buffer.store import BACKENDS, Buffer, _install
from bridge.buffer.writer import MAX_GROUP
from bridge.cluster import Listener, RateBudget, ensure_tables
from bridge.errors import BufferUnavailable
from bridge.model import Identity, Message, StatusUpdate

logger = logging.getLogger(__name__)

RETRIES = 5  # serialization failures / deadlocks retried per transaction
IDENTITY_LOCK = "chatbridge:identities"
INSTALL_LOCK = "chatbridge:install"
_RETRYABLE = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)


def redact(url: str) -> str:
    """The URL without its password (for logs, /status and errors)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.username else ""
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


def split_schema(url: str) -> tuple[str, str | None]:
    """(URL for asyncpg, schema) — `?schema=name` keeps the buffer in its own schema."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), None)
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit((parts.scheme, parts.netloc, parts.path, rest, parts.fragment)), schema


class PostgresBuffer(Buffer):
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
        the URL (without its password) and what to do."""
        dsn, schema = split_schema(url)
        if schema is not None and not _plain(schema):
            raise BufferUnavailable(f"buffer.url {redact(url)}: schema {schema!r} must be "
                                    "letters, digits and _ (not starting with a digit)")
        settings = {"search_path": schema} if schema else None
        try:
            if schema:
                await _create_schema(dsn, schema)
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=pool_size,
                                             server_settings=settings, command_timeout=60)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BufferUnavailable(f"buffer.url {redact(url)}: {_reason(exc)}; check that "
                                    "PostgreSQL runs there and the user may connect") from exc
        buffer = cls(url, pool)
        try:
            async with pool.acquire() as conn:
                await migrate(conn)
                await ensure_tables(conn)  # the cluster's own (bridge.cluster)
        except BaseException:
            await pool.close()
            raise
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
        async def work(db: PgDb) -> list[int]:
            if any(item.identities for item in items):
                await db.lock(IDENTITY_LOCK)
            return await append_group(db, items, self.media_sources)
        return await self._transact(work)

    async def heartbeat(self) -> None:
        """Commit a write now: proves the server is up, reachable and writable."""
        self._check_open()
        try:
            await self._transact(lambda db: db.execute(
                "INSERT INTO heartbeat (id, at) VALUES (1, ?) ON CONFLICT (id)"
                " DO UPDATE SET at = excluded.at", (time.time(),)))
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise BufferUnavailable(f"buffer.url {self.path}: {_reason(exc)}") from exc

    async def install_sinks(self, names: Sequence[str]) -> list[str]:
        async def work(db: PgDb) -> list[str]:
            await db.lock(INSTALL_LOCK)  # processes starting together install once
            return await _install(db, list(names), time.time())
        return await self._transact(work)

    async def claim(self, sink: str, limit: int, lease: float, now: float | None = None,
                    backfill: bool | None = None, batch_size: int | None = None) -> list[Claim]:
        """As Buffer.claim, with the sink's claims serialised across processes."""
        when = time.time() if now is None else now
        size = batch_size or max(limit, delivery.DEFAULT_BATCH_SIZE)

        async def work(db: PgDb) -> list[Claim]:
            await db.lock(f"chatbridge:claim:{sink}")
            return await delivery.claim(db, sink, when, limit, lease, backfill, size,
                                        owner=self.owner)
        return await self._transact(work)

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        self._check_open()
        async with self._pool.acquire() as conn:
            cursor = await PgDb(conn).run(sql, params)
            return await cursor.fetchall()

    async def release_dead_leases(self, dead_after: float) -> int:
        """Free the batch leases of processes whose heartbeat is older than `dead_after`
        seconds (killed, or cut off): their batches are retried as uncertain now instead
        of after their lease; returns how many."""
        rows = await self.fetch(
            "WITH gone AS (SELECT id FROM processes WHERE heartbeat_at"
            " < extract(epoch FROM clock_timestamp()) - $1)"
            " UPDATE batches SET state = 'ready', lease_token = NULL, lease_until = NULL,"
            " uncertain = 1, next_attempt_at = $2 WHERE state = 'leased'"
            " AND split_part(lease_token, ':', 1) IN (SELECT id FROM gone) RETURNING id",
            dead_after, time.time())
        if rows:
            logger.info("freed %d batch lease(s) of bridge processes gone silent", len(rows))
        return len(rows)

    async def fetch(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        """Native PostgreSQL SQL (no rewriting), for the cluster's own tables."""
        async with self._pool.acquire() as conn:
            return [plain(row) for row in await conn.fetch(sql, *params)]

    def shared_budget(self, sink: str, budget: str) -> RateBudget:
        """The CRM budget `budget` ("ordinary", "bulk") of `sink`, shared by every process
        on this database: hand it to the sink's limiter (RateLimiter.share)."""
        return RateBudget(self._pool, sink, budget)

    def listener(self, on_wake: Any) -> Listener:
        """A LISTENer for sync-now/backfill wake-ups on a connection of its own (run it)."""
        dsn, schema = split_schema(self.url)
        return Listener(dsn, schema, on_wake)

    async def limit_writes(self, *, size_cap: bool | None = None,
                           read_only: bool | None = None) -> None:
        raise NotImplementedError("limit_writes is a fault seam of the SQLite buffer only")

    async def _transact(self, work: Any) -> Any:
        self._check_open()
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction():
                    result = await work(PgDb(conn))
                self._commits += 1
                return result
            except _RETRYABLE:
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")


class GroupCommit:
    """Appends that arrive while a commit is under way share the next one.

    One group is in flight per process (as SQLite's writer): under load the groups grow,
    so a webhook costs a share of one transaction instead of one of its own. A group that
    fails is retried one append at a time, so one bad append fails alone.
    """

    def __init__(self, commit: Any, limit: int = MAX_GROUP) -> None:
        self._commit = commit
        self._limit = limit
        self._pending: list[tuple[Append, asyncio.Future[int]]] = []
        self._task: asyncio.Task[None] | None = None
        self.grouped = 0  # appends that shared a commit with others

    async def submit(self, item: Append) -> int:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending[:self._limit], self._pending[self._limit:]
            try:
                counts = await self._commit([item for item, _ in group])
            except Exception as exc:
                if len(group) == 1:
                    _settle(group[0][1], exc=exc)
                    continue
                for item, future in group:  # alone, so one bad append fails alone
                    try:
                        _settle(future, (await self._commit([item]))[0])
                    except Exception as alone:
                        _settle(future, exc=alone)
                continue
            if len(group) > 1:
                self.grouped += len(group)
            for (_, future), count in zip(group, counts, strict=True):
                _settle(future, count)


def _settle(future: asyncio.Future[int], value: int = 0,
            exc: BaseException | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(value)


async def _create_schema(dsn: str, schema: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{identifier(schema)}"')
    except (asyncpg.UniqueViolationError, asyncpg.DuplicateSchemaError):
        pass  # another process created it at the same moment (IF NOT EXISTS races)
    finally:
        await conn.close()


def _plain(name: str) -> bool:
    try:
        identifier(name)
    except ValueError:
        return False
    return True


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


BACKENDS["postgresql"] = PostgresBuffer
