"""The buffer in one SQLite file (WAL): the embedded default, one runner process.

One thread owns the write connection (plain sqlite3, group commit: bridge.buffer.writer);
reads use other connections (aiosqlite), which WAL lets run alongside, each read one
snapshot (bridge.buffer.readers).
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiosqlite
import sqlalchemy as sa

import bridge.buffer.delivery as delivery
import bridge.buffer.legacy as legacy
import bridge.buffer.migrations as migrations
from bridge.buffer.append import Append, append_group, new_append
from bridge.buffer.compiler import P, Query
from bridge.buffer.connectors import Connector, SqliteConnector, drive
from bridge.buffer.faults import explain
from bridge.buffer.identity import KnownKeys
from bridge.buffer.legacy import step as legacy_step
from bridge.buffer.lock import FileHold
from bridge.buffer.readers import Readers
from bridge.buffer.store import BACKENDS, Buffer, Work
from bridge.buffer.tables import conversations, deliveries, heartbeat, messages, sink_state
from bridge.buffer.writer import MAX_GROUP, Writer
from bridge.buffer.writer import _transaction as transaction
from bridge.errors import BufferUnavailable
from bridge.model import Identity, Message, StatusUpdate

logger = logging.getLogger(__name__)
T = TypeVar("T")
VERSION = migrations.VERSION

# Room the health check proves there is: a typical webhook's rows, index pages and WAL
# frames, with margin (16 pages of 4 KiB).
HEALTH_PROBE_BYTES = 64 * 1024
GROW = Query(lambda insert: (lambda new: new.on_conflict_do_update(
    index_elements=["id"], set_={"at": new.excluded.at}))(insert(heartbeat).values(
        id=1, at=sa.func.zeroblob(P("size")))), "heartbeat: grow")
SETTLE = Query(sa.update(heartbeat).values(at=P("now")).where(heartbeat.c.id == 1),
               "heartbeat: settle")
# An append's writes, for the heartbeat to rehearse and roll back: they walk the same
# b-trees (messages, its unique and conversation indexes, deliveries, conversations).
REHEARSAL = (
    Query(sa.insert(messages).values(
        source="healthz", provider_id=sa.func.hex(sa.func.randomblob(8)), conversation="healthz",
        sent_at=0, stored_at=0, body="{}")),
    Query(sa.insert(deliveries).from_select(["sink", "message_id"], sa.select(
        sink_state.c.sink, sa.func.last_insert_rowid()).where(sink_state.c.enabled == 1))),
    Query(lambda insert: (lambda new: new.on_conflict_do_update(
        index_elements=["key"], set_={"message_count": conversations.c.message_count + 1}))(
        insert(conversations).values(key="healthz", message_count=1))),
)


class SQLiteBuffer(Buffer):
    """Open with `await Buffer.open(path)`; close with `await buffer.close()`."""

    def __init__(self, path: str, write: sqlite3.Connection, thread: ThreadPoolExecutor,
                 read: Readers, hold: FileHold,
                 group_limit: int = MAX_GROUP) -> None:
        self.path = path
        self._write = write
        self._thread = thread
        self._readers = read
        self._hold = hold
        # source -> None (it fetches media: each media message queues a job) or the reason
        # it will not (the job is queued held, and the transcript says why)
        self.media_sources: dict[str, str | None] = {}
        # held from a file's rename into media_path until its row commits, and from
        # forgetting rows until their files are unlinked: the same bytes fetched again
        # while their last copy is being pruned are never unlinked under the new row
        self.media_files = asyncio.Lock()
        self._writer = Writer(write, thread, self._append_group, group_limit, path,
                              hold.is_current)
        self._closed = False
        # senders' keys -> their person, as read by earlier groups (bridge.buffer.identity
        # KnownKeys); forgotten whenever anything but an append group wrote
        self._known = KnownKeys()

    async def _append_group(self, db: Connector, items: list[Append]) -> list[int]:
        # (in the writer's thread, inside the group's transaction) data_version changes
        # when another connection (another process: a CLI command) committed to the file
        self._known.as_of((self._writer.foreign,
                           self._write.execute("PRAGMA data_version").fetchone()[0]))
        return await append_group(db, items, self.media_sources, self._known)

    @classmethod
    async def open(cls, path: str | Path, synchronous: str = "full",
                   runner: bool = False, group_limit: int = MAX_GROUP,
                   after_lease: Mapping[str, float] | None = None) -> Buffer:
        """Open (creating and migrating if needed) the buffer at `path`.

        runner: this process serves webhooks and drains sinks. Only one runner may use a
        file at a time (an flock on the file enforces it), so leases left by a killed
        runner are released at once instead of waiting for them to expire. group_limit:
        appends per commit at most (1 turns group commit off; benchmarks compare the two).
        after_lease: per sink, how long after a released lease's end a write the killed
        runner had in flight may still land (bridge.sync.settle_after_lease): the batch's
        retry waits until then, or goes at once if that is past; a sink not named, at once.

        A file that cannot be opened, read or written raises BufferUnavailable (which
        file, what is wrong, what to do) with everything opened so far closed again.
        """
        path = str(path)
        mode = _pragma_for(synchronous)
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            hold = FileHold.take(path, runner)
        except OSError as exc:
            raise BufferUnavailable(explain(path, exc)) from exc
        thread = ThreadPoolExecutor(1, thread_name_prefix="buffer-writer")
        loop = asyncio.get_running_loop()
        write: sqlite3.Connection | None = None
        read: Readers | None = None
        buffer = None
        try:
            write = await loop.run_in_executor(thread, _connect_writer, path, mode)
            await loop.run_in_executor(thread, migrate, write)
            read = Readers(await _connect_reader(path, mode),
                           lambda: _connect_reader(path, mode), READERS)
            buffer = cls(path, write, thread, read, hold, group_limit)
            buffer._writer.start()
            if runner:
                await buffer.write(lambda db: delivery.release_leases(db, time.time(),
                                                                      after_lease))
        except BaseException as exc:
            if buffer is not None:
                await buffer.close()
            else:
                await _close_all(write, read, thread, hold)
            if isinstance(exc, sqlite3.Error | OSError):
                raise BufferUnavailable(explain(path, exc)) from exc
            raise
        return buffer

    async def close(self) -> None:
        """Finish queued writes, then close every connection."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._writer.close()
        finally:
            await _close_all(self._write, self._readers, self._thread, self._hold)

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
        await self.write(lambda db: db.run(GROW, size=HEALTH_PROBE_BYTES))
        await self.write(lambda db: _settle(db, self._write, time.time()))

    # -- the two primitives ------------------------------------------------------------

    async def write(self, work: Work[T]) -> T:
        self._check_open()
        return await self._writer.transact(work)

    async def read(self, work: Work[T]) -> T:
        """`work(db)` in one read transaction: all its statements see one snapshot."""
        self._check_open()
        return await self._readers.read(work)

    async def erase(self, work: Work[T], traces: Callable[[T], Sequence[str]]
                    ) -> tuple[T, dict[str, object]]:
        """The write with SQLite's secure delete on (deleted content is overwritten with
        zeros, in the pages and the freed pages), then the WAL checkpointed into the file
        and truncated, so no copy of the deleted rows stays in the -wal file either.

        Secure delete zeroes what the deletes free, not older copies of the same rows:
        an update that moved a row, or a page split, can leave one in a page's free space
        (seen in one randomized workload of five, secure_delete on or not).
        So the file is then searched for `traces(result)` (once the WAL was emptied: while
        another process's reader keeps it, the file still holds the pages from before the
        purge and the caller is told to run it again); if any is found, VACUUM
        rewrites the file from its live rows (time and free disk space in proportion to
        the buffer's size; writes wait meanwhile), and the WAL is emptied again."""
        self._check_open()
        return await self._writer.run(_erase, self._write, self.path, work, traces)

    # -- limits ------------------------------------------------------------------------

    async def limit_writes(self, *, size_cap: bool | None = None,
                           read_only: bool | None = None) -> None:
        """Cap the file at its size now (or lift the cap); refuse every write (or stop).

        Real SQLite failures follow (SQLITE_FULL beyond the cap, SQLITE_READONLY): the
        disk tests use them, and a person can freeze a buffer by hand. None leaves a
        setting as it is.
        """
        self._check_open()
        pragmas = []
        if size_cap is not None:
            pragmas.append(_SIZE_CAP[size_cap])
        if read_only is not None:
            pragmas.append(_QUERY_ONLY[read_only])
        for pragma in pragmas:
            await self._writer.run(self._write.execute, pragma)


async def _settle(db: Connector, conn: sqlite3.Connection, now: float) -> None:
    await db.run(SETTLE, now=now)
    conn.execute("SAVEPOINT rehearsal")
    try:
        for step in REHEARSAL:
            await db.run(step)
    finally:
        conn.execute("ROLLBACK TO rehearsal")
        conn.execute("RELEASE rehearsal")


def _erase(conn: sqlite3.Connection, path: str, work: Work[T],
           traces: Callable[[T], Sequence[str]]) -> tuple[T, dict[str, object]]:
    """(In the writer's thread) secure delete for this one transaction, the WAL emptied,
    the file searched for what must be gone and vacuumed if found. secure_delete is the
    connection's setting: it is put back as it was."""
    (before,) = conn.execute("PRAGMA secure_delete").fetchone()
    conn.execute("PRAGMA secure_delete = ON")
    try:
        result = transaction(conn, lambda db, _: work(db), None)
    finally:
        conn.execute(_SECURE_DELETE[bool(before)])
    notes: dict[str, object] = {"overwritten": True, "wal_emptied": _checkpoint(conn)}
    needles = [t.encode() for t in traces(result) if len(t.encode()) >= 4]
    if not notes["wal_emptied"]:
        # a reader kept the WAL: the file still holds the pages as they were before the
        # purge (their zeroed versions wait in the WAL), no older copy; a VACUUM now
        # could not reach the file either. The caller says to run the purge again.
        notes["stale_copies"] = 0
        return result, notes
    notes["stale_copies"] = found = _found_in(path, needles)
    if found:
        try:
            conn.execute("VACUUM")
        except sqlite3.Error as exc:  # e.g. no room for the copy it makes
            notes["vacuum_error"] = str(exc)
        else:
            notes["vacuumed"] = True
            notes["wal_emptied"] = _checkpoint(conn)
            notes["stale_copies"] = _found_in(path, needles)
    return result, notes


def _checkpoint(conn: sqlite3.Connection) -> bool:
    """Copy the WAL into the file and truncate it; False when a reader of an older
    snapshot (another process) kept it (after busy_timeout): the next one does it."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy


def _found_in(path: str, needles: Sequence[bytes], chunk: int = 1 << 20) -> int:
    """How many of `needles` the file holds anywhere (read in chunks that overlap)."""
    left, overlap, tail = set(needles), max(map(len, needles), default=1) - 1, b""
    with open(path, "rb") as handle:
        while left and (block := handle.read(chunk)):
            data = tail + block
            left = {n for n in left if n not in data}
            tail = data[-overlap:] if overlap else b""
    return len(needles) - len(left)


def migrate(conn: sqlite3.Connection) -> int:
    """Create or upgrade the file's schema (runs in the writer's thread, before any other
    write); refuse a file newer than this code."""
    (current,) = conn.execute("PRAGMA user_version").fetchone()
    migrations.refuse_newer(current, "buffer.path")
    if current == migrations.VERSION:
        return current
    if 0 < current < legacy.LAST:
        for number in range(current + 1, legacy.LAST + 1):
            conn.executescript(legacy_step(number))
        current = legacy.LAST
    conn.execute("BEGIN IMMEDIATE")
    try:
        db = SqliteConnector(conn)
        drive(migrations.create(db) if current == 0 else migrations.upgrade(db, current))
        conn.execute(f"PRAGMA user_version = {int(VERSION)}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return migrations.VERSION


# SQLite never lowers max_page_count below the pages in use: 1 caps the file as it is.
_SIZE_CAP = {True: "PRAGMA max_page_count = 1", False: "PRAGMA max_page_count = 4294967294"}
_SECURE_DELETE = {True: "PRAGMA secure_delete = ON", False: "PRAGMA secure_delete = OFF"}
_QUERY_ONLY = {True: "PRAGMA query_only = 1", False: "PRAGMA query_only = 0"}
# wal_autocheckpoint: WAL pages after which a commit copies them into the file (SQLite's
# default is 1000). That copy runs inside the commit, so every webhook waiting for the
# next group waits for it too: at c=64 it set the p99 (one run: 24.5 ms at 1000, 19.6 at
# 500, 17.7 at 300; another: 19.9 at 1000, 14.2 with no checkpoint at all; bench/README).
# A page written twice between copies is copied twice, but the CPU per webhook stayed
# within this machine's noise (+1 to +4 us in two runs). It also keeps
# the -wal file near 1.2 MB instead of 4 MB, as long as no reader holds an old snapshot:
# while one does, the WAL grows (a long export, another process's read), and SQLite
# reuses the file from its start afterwards without shrinking it; journal_size_limit
# cuts it back to 4 MiB then.
_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA busy_timeout = 10000",
            "PRAGMA foreign_keys = OFF", "PRAGMA wal_autocheckpoint = 300",
            "PRAGMA journal_size_limit = 4194304")
# Reader connections at most (each its own thread and page cache of up to 2 MB), opened
# as reads need them (bridge.buffer.readers): a command opens one, a bridge serving a
# status page beside its sinks a few. One connection with a lock made every small read
# (a sink's directory lookup) wait for whole status page reads: at 100,000 conversations,
# a page search and a page list loading in a loop, reads of one row took p50/p99 12/467 ms
# with one connection, 6.7/53 with two, 0.5/17 with four (20 s each, a shared 2-core
# machine at load 6; the shared connection before, statements interleaved: 14-20/358-469).
READERS = 4
# PRAGMA takes no parameters: the setting picks a constant, it is never formatted into SQL.
_SYNCHRONOUS = {"full": "PRAGMA synchronous = FULL", "normal": "PRAGMA synchronous = NORMAL"}


def _pragma_for(synchronous: str) -> str:
    """The key of _SYNCHRONOUS the setting names (ValueError for anything else)."""
    mode = str(synchronous).lower()
    if mode not in _SYNCHRONOUS:
        raise ValueError(f"buffer synchronous={synchronous!r}: use one of "
                         f"{', '.join(_SYNCHRONOUS)}")
    return mode


def _connect_writer(path: str, mode: str) -> sqlite3.Connection:
    """The write connection (called in the writer's thread, which alone uses it)."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        for pragma in _PRAGMAS:
            conn.execute(pragma)
        conn.execute(_SYNCHRONOUS[mode])
    except BaseException:
        conn.close()
        raise
    return conn


async def _connect_reader(path: str, mode: str) -> aiosqlite.Connection:
    """A reader connection: query_only, so a write inside read() fails here as it does in
    PostgreSQL's READ ONLY read() (it was taken: code writing in a read passed on SQLite)."""
    db = await aiosqlite.connect(path, isolation_level=None)
    try:
        for pragma in _PRAGMAS:
            await db.execute(pragma)
        await db.execute(_SYNCHRONOUS[mode])
        await db.execute(_QUERY_ONLY[True])
    except BaseException:
        await db.close()  # its thread would keep the process alive
        raise
    return db


async def _close_all(write: sqlite3.Connection | None, read: Readers | None,
                     thread: ThreadPoolExecutor, hold: FileHold) -> None:
    """Close every connection (each even if one fails), then give the file hold back."""
    try:
        if read is not None:
            await read.close()  # a broken connection still has its thread stopped
        if write is not None:
            try:
                await asyncio.get_running_loop().run_in_executor(thread, write.close)
            except Exception:
                logger.exception("closing the buffer's write connection failed")
        thread.shutdown(wait=True)
    finally:
        hold.release()


BACKENDS["sqlite"] = SQLiteBuffer
