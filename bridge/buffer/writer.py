"""One thread owns the SQLite write connection; appends that queue up share one commit."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from bridge.buffer.connectors import Connector, SqliteConnector, drive
from bridge.buffer.faults import explain, is_damage
from bridge.errors import BufferClosed, BufferUnavailable

logger = logging.getLogger(__name__)
T = TypeVar("T")

Transaction = Callable[[Connector], Awaitable[T]]
GroupWork = Callable[[Connector, list[Any]], Awaitable[list[Any]]]

MAX_GROUP = 1000  # appends per commit; bounds one transaction's time and memory


class Writer:
    """Serialises every write; groups queued appends into one transaction.

    A caller's future resolves only after the COMMIT that holds its rows. Every
    transaction (BEGIN, its statements, COMMIT) runs in one trip to the connection's own
    thread, on plain sqlite3 (its SQL never waits there: `drive` runs it): each trip costs
    the event loop a wake-up and a hand-over of the GIL, which cost more event-loop time
    than the SQL itself when a group made five. Other transactions (claims, acks) run
    alone, after the appends waiting at that moment, so a draining sink never holds
    ingestion up for longer than one short transaction.

    After each commit `is_current` (one os.stat or two) proves the path still leads to the
    file just written: if the buffer was deleted or replaced, the commit went to a file no
    restart will read, so its callers get an error, never a 200, and so does every later
    write (`gone`). A commit that finds the file damaged sets `damaged`. Either makes the
    buffer unhealthy until a restart.
    """

    def __init__(self, db: sqlite3.Connection, thread: ThreadPoolExecutor,
                 group_work: GroupWork, group_limit: int = MAX_GROUP, path: str = "",
                 is_current: Callable[[], bool] = lambda: True) -> None:
        self._db = db
        self._thread = thread
        self._path = path
        self._is_current = is_current
        self.gone: str | None = None
        self.damaged: str | None = None
        self._group_limit = group_limit
        self._group_work = group_work
        self._appends: deque[tuple[Any, asyncio.Future[Any]]] = deque()
        self._others: deque[tuple[Transaction[Any], asyncio.Future[Any]]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self.commits = 0
        self.grouped = 0
        # transactions and calls other than append groups that have run in the thread: a
        # group that finds this changed knows the buffer may have changed under what it
        # remembers (bridge.buffer.identity's known keys)
        self.foreign = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="buffer-writer")

    async def close(self) -> None:
        """Finish everything queued, then stop."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            await self._task

    def append(self, item: Any) -> asyncio.Future[Any]:
        """Queue one append; the future gets the group work's result for it."""
        return self._queue(self._appends, item)

    def transact(self, work: Transaction[T]) -> asyncio.Future[T]:
        """Queue a transaction of its own."""
        return self._queue(self._others, work)

    @property
    def fault(self) -> str | None:
        """Why no write can be trusted until a restart, or None."""
        return self.gone or self.damaged

    def check_current(self) -> None:
        """Raise (and remember) BufferUnavailable if the path no longer leads to our file."""
        if self.gone is None and not self._is_current():
            self.gone = (f"buffer.path {self._path} was deleted or replaced while the bridge "
                         "was running; writes since then went to a file no restart will read "
                         "(restart the bridge; restore the file from a backup if you have one)")
            logger.error("%s", self.gone)
        self._refuse_if_gone()

    def _refuse_if_gone(self) -> None:
        if self.gone is not None:
            raise BufferUnavailable(self.gone)

    def _note(self, exc: BaseException) -> None:
        if self.damaged is None and is_damage(exc):
            self.damaged = explain(self._path, exc)
            logger.error("%s", self.damaged)

    def _queue(self, queue: deque[Any], item: Any) -> asyncio.Future[Any]:
        if self._closing:
            raise BufferClosed("the buffer is closing")
        self._refuse_if_gone()
        future = asyncio.get_running_loop().create_future()
        queue.append((item, future))
        self._wake.set()
        return future

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._appends or self._others:
                if self._appends:
                    await self._commit_group()
                if self._others:
                    await self._commit_one(*self._others.popleft())
            if self._closing:
                return

    async def _commit_group(self) -> None:
        count = min(self._group_limit, len(self._appends))
        group = [self._appends.popleft() for _ in range(count)]
        items = [item for item, _ in group]
        try:
            self._refuse_if_gone()
            results = await self._in_thread(items)
            self.check_current()
        except Exception as exc:
            self._note(exc)
            if len(group) == 1 or isinstance(exc, BufferUnavailable):
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                return
            # One bad append must not fail its neighbours: retry each on its own.
            logger.warning("grouped commit of %d appends failed; retrying one by one", len(group))
            for item, future in group:
                await self._commit_single(item, future)
            return
        self.commits += 1
        self.grouped += len(group)
        for (_, future), result in zip(group, results, strict=True):
            if not future.done():
                future.set_result(result)

    async def _commit_single(self, item: Any, future: asyncio.Future[Any]) -> None:
        async def alone() -> Any:
            (result,) = await self._in_thread([item])
            return result
        await self._settle(alone, future)

    async def _commit_one(self, work: Transaction[Any], future: asyncio.Future[Any]) -> None:
        await self._settle(lambda: self._in_transaction(work), future)

    async def _settle(self, run: Callable[[], Awaitable[Any]],
                      future: asyncio.Future[Any]) -> None:
        """Run one transaction; its result or error goes to the caller's future."""
        try:
            self._refuse_if_gone()
            result = await run()
            self.check_current()
        except Exception as exc:  # handed to the caller, who decides what it means
            self._note(exc)
            if not future.done():
                future.set_exception(exc)
            return
        self.commits += 1
        if not future.done():
            future.set_result(result)

    def _in_thread(self, items: list[Any]) -> Awaitable[list[Any]]:
        """Run the group work as one transaction in the connection's own thread."""
        return asyncio.get_running_loop().run_in_executor(
            self._thread, _transaction, self._db, self._group_work, items)

    async def _in_transaction(self, work: Transaction[T]) -> T:
        return await self.run(_transaction, self._db, lambda db, _: work(db), None)

    def run(self, function: Callable[..., T], *args: Any) -> Awaitable[T]:
        """Call `function(*args)` in the connection's thread (nothing else runs there);
        counted in `foreign` there, once it has run."""
        return asyncio.get_running_loop().run_in_executor(self._thread, self._counted,
                                                          function, *args)

    def _counted(self, function: Callable[..., T], *args: Any) -> T:
        try:
            return function(*args)
        finally:
            self.foreign += 1  # in the writer's thread, before the next group starts


def _transaction(conn: sqlite3.Connection, work: GroupWork, items: Any) -> Any:
    """BEGIN IMMEDIATE, the work, COMMIT; ROLLBACK if anything fails (runs in the thread)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = drive(work(SqliteConnector(conn), items))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:  # the connection may be broken; the caller sees the first
                logger.exception("rollback failed")
        raise
    return result
