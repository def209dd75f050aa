"""Bulk lead-activity posts: rows from concurrent deliveries share ≤ 25-item calls.

Each delivery hands its lead activity to `BulkPoster.post()` and waits for its own row:
the activity id, or a LeadSquaredError: of the whole call (a rate limit, an outage, an
unknown outcome), which the sink handles exactly as the same error from a single post, or
of a row without an activity id, which is always an unknown outcome (`read_row`): the
documented answer shows only ids, so a row we cannot read may have landed. So every batch
records its own outcomes, and idempotency keys and the after-crash key check are those of
the single-post path.

A call goes out when 25 rows wait, when every delivery in progress waits on a row and
no new row came for `quiet` seconds (deliveries that start meanwhile may still join), or
`linger` seconds after the oldest row; and never before the bulk budget has room (rows
keep gathering while it is spent).

`OpportunityBulk` does the same for opportunity activities: rows for one opportunity that
arrive together (a delivery hands over all its parts' rows at once, and concurrent
deliveries may add theirs) go out in ByOpportunityId calls of ≤ 25 when there are several;
a lone row is handed back to be posted singly (ProspectActivity.svc/Create, the ordinary
budget), since the bulk budget is the scarcer one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from plugins.leadsquared.api import row_error, said_not_created
from plugins.leadsquared.client import LeadSquaredClient
from plugins.leadsquared.errors import LeadSquaredError
from plugins.leadsquared.ratelimit import RateLimiter

BULK_MAX = 25  # activities per bulk call (reference §2c)
Row = TypeVar("Row", bound=tuple)  # (item, future, ...) of a row waiting for a call


class BulkPoster:
    """Gathers lead-activity items into bulk calls; one future per item."""

    def __init__(self, client: Callable[[], LeadSquaredClient | None], limiter: RateLimiter,
                 *, linger: float = 0.25, quiet: float = 0.02) -> None:
        self._client = client
        self._limiter = limiter
        self.linger = linger
        self.quiet = quiet  # a pause in arriving rows that ends the gathering early
        self._pending: list[tuple[dict, asyncio.Future[str], float]] = []
        self._active = 0  # deliveries in progress (each waits on at most one row at a time)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.calls = 0
        self.rows = 0

    @contextlib.contextmanager
    def delivering(self) -> Iterator[None]:
        """Count a delivery in progress while the block runs."""
        self._active += 1
        try:
            yield
        finally:
            self._active -= 1
            self._wake.set()

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """A delivery in progress that will hand in no lead row while the block runs (it
        posts on opportunities): the others need not wait for it before a call goes out."""
        self._active -= 1
        self._wake.set()
        try:
            yield
        finally:
            self._active += 1

    async def post(self, item: dict[str, Any]) -> str:
        """Post one lead activity in a bulk call; its activity id, or its row's error."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future, time.monotonic()))
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return await future

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for _, future, _ in self._pending:
            if not future.done():
                future.set_exception(LeadSquaredError("transient", "sink closed"))
        self._pending.clear()

    async def _run(self) -> None:
        while self._pending:
            self._pending = _wanted(self._pending)
            if not self._pending:
                return
            wait = self._wait_for()
            if wait > 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            rows, self._pending = self._pending[:BULK_MAX], self._pending[BULK_MAX:]
            await self._send(rows)

    def _wait_for(self) -> float:
        """Seconds before the next call should go out (0 = now)."""
        budget = self._limiter.ready_in()
        if budget > 0:
            return budget
        if len(self._pending) >= BULK_MAX:
            return 0.0
        now = time.monotonic()
        oldest = self._pending[0][2] + self.linger - now
        if len(self._pending) >= self._active:  # everyone waits: go once rows stop coming
            return max(0.0, min(oldest, self._pending[-1][2] + self.quiet - now))
        return max(0.0, oldest)

    async def _send(self, rows: list[tuple[dict, asyncio.Future[str], float]]) -> None:
        rows = _wanted(rows)
        if not rows:
            return
        self.calls += 1
        self.rows += len(rows)
        await _call(self._client(), lambda client: client.activities.post_bulk(
            lambda: _items(rows)), rows)


class OpportunityBulk:
    """Gathers activities per opportunity: several go out in ByOpportunityId calls, one
    alone is handed back (None) for the caller's single post."""

    def __init__(self, client: Callable[[], LeadSquaredClient | None], *,
                 quiet: float = 0.01) -> None:
        self._client = client
        self.quiet = quiet  # how long rows handed in together may keep arriving
        self._pending: dict[str, list[tuple[dict, asyncio.Future[str | None]]]] = {}
        self._flushes: dict[str, asyncio.Task] = {}
        self._sending: set[asyncio.Task] = set()
        self.calls = 0
        self.rows = 0

    async def post(self, opportunity: str, item: dict[str, Any]) -> str | None:
        """The activity id from a bulk call, the row's (or call's) error, or None when no
        other row for this opportunity came: then the caller posts it singly."""
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending.setdefault(opportunity, []).append((item, future))
        if opportunity not in self._flushes:
            task = asyncio.ensure_future(self._flush(opportunity))
            self._flushes[opportunity] = task
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return await future

    async def close(self) -> None:
        for task in list(self._sending):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flushes.clear()
        for rows in self._pending.values():
            for _, future in rows:
                _settle(future, exc=LeadSquaredError("transient", "sink closed"))
        self._pending.clear()

    async def _flush(self, opportunity: str) -> None:
        await asyncio.sleep(self.quiet)
        # later rows start a flush of their own
        self._flushes.pop(opportunity, None)
        rows = _wanted(self._pending.pop(opportunity, []))
        if len(rows) == 1:
            _, future = rows[0]
            if not future.done():
                future.set_result(None)  # alone: the single post is the cheaper call
            return
        for start in range(0, len(rows), BULK_MAX):
            await self._send(opportunity, rows[start:start + BULK_MAX])

    async def _send(self, opportunity: str,
                    rows: list[tuple[dict, asyncio.Future[str | None]]]) -> None:
        rows = _wanted(rows)
        if not rows:
            return
        self.calls += 1
        self.rows += len(rows)
        await _call(self._client(), lambda client: client.opportunities.post_bulk(
            opportunity, lambda: _items(rows)), rows)


def _wanted(rows: list[Row]) -> list[Row]:
    """The rows whose delivery still waits for them. A delivery cut off while its row
    waited (its deliver_timeout; a process paused past it) is retried, maybe by another
    process that has already checked the lead's keys and posted it: the row sent after
    the cut would be a second activity."""
    return [row for row in rows if not row[1].done()]


class NoneWanted(Exception):
    """Every row of a call was cut off while it waited for its budget: nothing is sent."""


def _items(rows: list[Row]) -> list[dict]:
    """The items of a call as it starts (its budget granted): `rows` narrowed to those
    still wanted (a wait for a shared budget can be long enough for a delivery to be cut
    off meanwhile); NoneWanted when none is."""
    rows[:] = _wanted(rows)
    if not rows:
        raise NoneWanted
    return [row[0] for row in rows]


async def _call(client: LeadSquaredClient | None,
                send: Callable[[LeadSquaredClient], Awaitable[list[dict]]],
                rows: list[Row]) -> None:
    """One bulk call; each row's answer settles its future (none is left waiting).
    `rows` is narrowed to those sent as the call starts (_items)."""
    futures = [row[1] for row in rows]
    try:
        if client is None:
            raise LeadSquaredError("transient", "the LeadSquared client is not started")
        answers = await send(client)
    except asyncio.CancelledError:
        for future in futures:  # the call may have gone out: its outcome is unknown
            _settle(future, exc=LeadSquaredError("unknown_outcome", "sink closed"))
        raise
    except Exception as exc:  # a LeadSquaredError, or a bug: no row may wait forever
        if isinstance(exc, LeadSquaredError) and exc.kind == "rejected":
            exc = refused_whole(exc)
        for future in futures:
            _settle(future, exc=exc)
        return
    checks: dict = {}  # the rows of one call share the key checks that follow it
    for future, answer in zip([row[1] for row in rows], answers, strict=True):
        _settle(future, answer=answer, checks=checks)


def _settle(future: asyncio.Future[Any], *, answer: dict | None = None,
            exc: BaseException | None = None, checks: dict | None = None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
        return
    try:
        future.set_result(read_row(answer or {}))
    except LeadSquaredError as unknown:
        unknown.checks = checks if checks is not None else {}  # see keys.once
        future.set_exception(unknown)


def refused_whole(exc: LeadSquaredError) -> LeadSquaredError:
    """A bulk call refused as a whole is no row's own answer: the refusal may be one
    row's fault (the others would land alone), and an answer that says Error (even on
    HTTP 200) may come after rows were made. So each row is an unknown outcome that says
    "not created": its key is looked for, and, absent, it is posted singly, whose answer
    is exact (a row that is itself refused is then refused alone)."""
    return LeadSquaredError("unknown_outcome", f"the bulk call was refused whole: "
                            f"{exc.message}", exception_type=exc.exception_type,
                            status=exc.status, not_created=True)


def read_row(row: dict[str, Any]) -> str:
    """A bulk answer row's activity id: a row with an id and no error is created (the
    documented `{"ProspectActivityId"}`, or `ActivityCreated: true` beside it). Any other
    row is an unknown outcome, never a refusal; `not_created` when the row says it was not
    made (ActivityCreated false, an error message, or a null id), so that the key check
    finding nothing lets it be posted again at once."""
    activity, error, said_no = row.get("ProspectActivityId"), row_error(row), said_not_created(row)
    if activity and not said_no:
        return str(activity)
    why = error or ("the row says it was not created" if said_no else
                    "the bulk answer names no activity id for this row")
    raise LeadSquaredError("unknown_outcome", f"bulk row: {why}", not_created=said_no)
