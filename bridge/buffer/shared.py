"""What several bridge processes on one PostgreSQL buffer share beyond the buffer itself:
CRM rate budgets (one per sink and budget, however many processes drain it), wake-ups
(LISTEN/NOTIFY) and the process registry. Their tables are declared with the others
(bridge.buffer.tables); these statements run on PostgreSQL only, and read the server's
clock, so processes on several hosts agree on time."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg
import sqlalchemy as sa

import bridge.buffer.delivery as delivery
from bridge.buffer.compiler import P, Query, greatest
from bridge.buffer.connectors import Connector, PgConnector
from bridge.buffer.tables import REAL, TEXT, batches, media, processes, rate_budgets

logger = logging.getLogger(__name__)

CHANNEL = "chatbridge_sync"  # NOTIFY payload: {"schema", "action", "sink"} as JSON
NAMED = "chatbridge:"  # + a process's id: the application_name of its listener's session
HEARTBEAT_EVERY = 5.0  # seconds between a process's heartbeats
FORGET_AFTER = 24 * 3600.0  # a gone process's row is deleted after this long
RECONNECT_EVERY = 2.0  # seconds between tries of the listener's lost connection

_clock = sa.extract("epoch", sa.func.clock_timestamp())
r, p = rate_budgets.c, processes.c
NOW = Query(sa.select(sa.cast(_clock, REAL)), "server clock")
BUDGET = Query(sa.select(r.starts, r.paused_until).where(
    r.sink == P("sink"), r.budget == P("budget")).with_for_update(), "a budget, locked")
NEW_BUDGET = Query(lambda insert: insert(rate_budgets).values(
    sink=P("sink"), budget=P("budget")).on_conflict_do_nothing(), "a new budget")
STARTS = Query(sa.update(rate_budgets).values(starts=P("starts")).where(
    r.sink == P("sink"), r.budget == P("budget")), "a call started")


def _pause(insert: Any) -> Any:
    new = insert(rate_budgets).values(sink=P("sink"), budget=P("budget"),
                                      paused_until=sa.cast(_clock, REAL) + P("seconds", type_=REAL))
    return new.on_conflict_do_update(index_elements=["sink", "budget"], set_={
        "paused_until": greatest(r.paused_until, new.excluded.paused_until)})


PAUSE = Query(_pause, "pause a budget")


class Transactions(Protocol):
    """A write transaction of the shared buffer."""

    async def write(self, work: Callable[[Connector], Any]) -> Any: ...


@dataclass(frozen=True)
class Take:
    """One attempt at a budget: `delay` 0 means a call was recorded and may start now,
    else the seconds to wait; `ages` are the log's starts as seconds before the server's
    now (oldest first) and `paused_for` the seconds left of a shared pause."""

    delay: float
    ages: tuple[float, ...]
    paused_for: float


class RateBudget:
    """One sink's budget (e.g. "ordinary", "bulk") kept in the `rate_budgets` row.

    Each take locks the row (FOR UPDATE), reads the server's clock and the log of the last
    `calls` starts, and records a start only if the `calls`-th last one is `spacing`
    seconds old and no pause holds: the sliding log of RateLimiter, shared by every process.
    """

    def __init__(self, buffer: Transactions, sink: str, budget: str) -> None:
        self._buffer = buffer
        self.sink = sink
        self.budget = budget

    async def take(self, calls: int, spacing: float) -> Take:
        """Record a call start if the budget allows one now, else say how long to wait."""
        return await self._buffer.write(lambda db: self._take(db, calls, spacing))

    async def _take(self, db: Connector, calls: int, spacing: float) -> Take:
        row = await db.one(BUDGET, sink=self.sink, budget=self.budget)
        if row is None:
            await db.run(NEW_BUDGET, sink=self.sink, budget=self.budget)
            row = await db.one(BUDGET, sink=self.sink, budget=self.budget)
        logged, paused_until = row
        now = await db.value(NOW)
        starts = list(json.loads(logged))[-calls:]
        delay = paused_until - now
        if len(starts) >= calls:
            delay = max(delay, starts[-calls] + spacing - now)
        if delay <= 0:
            starts = (starts + [now])[-calls:]
            await db.run(STARTS, starts=json.dumps(starts), sink=self.sink, budget=self.budget)
        return Take(max(0.0, delay), tuple(now - s for s in starts),
                    max(0.0, paused_until - now))

    async def pause(self, seconds: float) -> None:
        """Let no process start a call for `seconds` from now (server clock), e.g. after a 429."""
        await self._buffer.write(lambda db: db.run(PAUSE, sink=self.sink, budget=self.budget,
                                                   seconds=seconds))


# -- wake-ups: sync-now and backfill reach every process ------------------------------------

_note = sa.func.json_build_object("schema", sa.func.current_schema(),
                                  "action", P("action", type_=TEXT), "sink", P("sink", type_=TEXT))
NOTIFY = Query(sa.select(sa.func.pg_notify(P("channel", type_=TEXT), sa.cast(_note, sa.Text))),
               "wake every process")
SCHEMA = Query(sa.select(sa.func.current_schema()), "current schema")
ALIVE = Query(sa.select(sa.literal(1)), "still connected")


async def notify(db: Connector, action: str, sink: str | None) -> None:
    await db.rows(NOTIFY, channel=CHANNEL, action=action, sink=sink)


class Listener:
    """LISTENs on CHANNEL on a dedicated connection (reconnecting when it is lost) and
    calls `on_wake(action, sink)` for this schema's notifications."""

    def __init__(self, dsn: str, schema: str | None,
                 on_wake: Callable[[str, str | None], None],
                 actions: tuple[str, ...] = ("sync", "backfill"), owner: str | None = None) -> None:
        self._dsn = dsn
        # its session named for the process: while it is open, the process is not dead
        # (only paused, or cut off from the registry): see RELEASE_DEAD
        self._settings = {**({"search_path": schema} if schema else {}),
                          **({"application_name": NAMED + owner} if owner else {})} or None
        self._on_wake = on_wake
        self._actions = actions
        self._schema: str | None = None
        self.connected = False

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until `stop`; never raises."""
        warned = False
        while not stop.is_set():
            try:
                await self._listen(stop)
                warned = False
            except Exception as exc:  # the server went away: try again shortly
                if not warned:
                    logger.warning("cluster wake-ups lost (%s: %s); reconnecting",
                                   type(exc).__name__, exc)
                    warned = True
            self.connected = False
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), RECONNECT_EVERY)

    async def _listen(self, stop: asyncio.Event) -> None:
        conn = await asyncpg.connect(self._dsn, server_settings=self._settings)
        db = PgConnector(conn)
        try:
            self._schema = await db.value(SCHEMA)
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._received)
            self.connected = True  # missed while away: the interval's drain finds it
            while not stop.is_set() and not lost.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop, lost), HEARTBEAT_EVERY)
                if not stop.is_set() and not lost.is_set():
                    await asyncio.wait_for(db.value(ALIVE), HEARTBEAT_EVERY)  # still there?
        finally:
            with suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if note.get("schema") != self._schema or note.get("action") not in self._actions:
            return
        self._on_wake(note["action"], note.get("sink"))


async def _first(*events: asyncio.Event) -> None:
    """Return when any of `events` is set."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


# -- the process registry -------------------------------------------------------------------


def _beat(insert: Any) -> Any:
    new = insert(processes).values(
        id=P("id"), hostname=P("hostname"), pid=P("pid"), version=P("version"),
        started_at=sa.cast(_clock, REAL), heartbeat_at=sa.cast(_clock, REAL), sinks=P("sinks"),
        drained=P("drained"))
    x = new.excluded
    return new.on_conflict_do_update(index_elements=["id"], set_={
        "heartbeat_at": x.heartbeat_at, "sinks": x.sinks, "drained": x.drained})


BEAT = Query(_beat, "process heartbeat")
FORGET = Query(sa.delete(processes).where(p.heartbeat_at < sa.cast(_clock, REAL)
                                          - P("after", type_=REAL)), "forget gone processes")
LEAVE = Query(sa.delete(processes).where(p.id == P("id")), "a process leaves")
PROCESSES = Query(sa.select(
    p.id, p.hostname, p.pid, p.version, p.started_at, p.heartbeat_at, p.sinks, p.drained,
    sa.cast(_clock, REAL) - p.heartbeat_at).order_by(p.started_at, p.id), "processes")
_gone = sa.select(p.id).where(p.heartbeat_at < sa.cast(_clock, REAL) - P("dead_after", type_=REAL))
_sessions = sa.table("pg_stat_activity", sa.column("application_name"))
_holder = sa.func.split_part(batches.c.lease_token, ":", 1)
# A silent process with no session left is dead (the kernel closed its connections); one
# whose listener is still connected may only be paused, and goes on posting when resumed
# until its deliver_timeout: its batch is freed once that has passed (settled_by).
RELEASE_DEAD = Query(sa.update(batches).values(delivery.FREED)
    .where(batches.c.state == "leased", batches.c.sink == P("sink"), _holder.in_(_gone),
           sa.or_(batches.c.lease_until <= P("settled_by", type_=REAL), ~sa.exists().where(
               _sessions.c.application_name == sa.literal(NAMED) + _holder)))
    .returning(batches.c.id), "free the leases of silent processes")
# A media fetch posts nothing: a gone holder's lease (no session left) is freed at once; a
# paused one's runs out (resumed, it goes on writing its own part file). Leases are found
# by media_leased (lease_owner IS NOT NULL, said here so the planner may use it), not by
# walking the pending jobs.
_fetcher = media.c.lease_owner
RELEASE_DEAD_MEDIA = Query(sa.update(media).values(lease_until=None, lease_owner=None)
    .where(media.c.state == "pending", _fetcher.isnot(None), _fetcher.in_(_gone),
           ~sa.exists().where(_sessions.c.application_name == sa.literal(NAMED) + _fetcher))
    .returning(media.c.message_id), "free the media leases of gone processes")


async def beat(db: Connector, owner: str, me: Mapping[str, Any], sinks: list[str],
               drained: Mapping[str, float]) -> None:
    await db.run(BEAT, id=owner, hostname=me["hostname"], pid=me["pid"],
                 version=me["version"], sinks=json.dumps(sinks), drained=json.dumps(drained))
    await db.run(FORGET, after=FORGET_AFTER)


async def leave(db: Connector, owner: str) -> None:
    await db.run(LEAVE, id=owner)


async def processes_of(db: Connector) -> list[dict[str, Any]]:
    return [{"id": pid, "hostname": host, "pid": number, "version": version,
             "started_at": started, "heartbeat_at": beat_at, "sinks": json.loads(sinks),
             "drained": json.loads(drained), "age": age}
            for pid, host, number, version, started, beat_at, sinks, drained, age
            in await db.rows(PROCESSES)]


async def release_dead_leases(db: Connector, dead_after: float, spare: Mapping[str, float],
                              now: float, after_lease: Mapping[str, float] | None = None
                              ) -> int:
    """Free the leases of silent processes that are gone (no session left) or whose
    delivery has surely ended: `spare` is, per sink, how long a lease outlasts its
    holder's deliver_timeout. A process only paused (SIGSTOP, a VM frozen) is silent too,
    and once resumed it goes on posting until its deliver_timeout cuts it off: its batch
    taken before then would be posted twice. A write a killed process had in flight may
    still commit: the batch's retry (its key check) waits `after_lease` (per sink) past
    the lease's end, at once if that moment has passed (delivery.FREED)."""
    freed = 0
    settle = after_lease or {}
    for sink, seconds in sorted(spare.items()):
        freed += len(await db.rows(RELEASE_DEAD, now=now, dead_after=dead_after, sink=sink,
                                   settled_by=now + max(0.0, seconds),
                                   after_lease=settle.get(sink, float("-inf"))))
    return freed


async def release_dead_media(db: Connector, dead_after: float) -> int:
    """Free the media leases of processes silent for `dead_after` seconds with no session
    left (killed: their downloads ended with them); how many. Their partial files are
    never taken: each process writes its own (bridge.media), swept once a lease old."""
    return len(await db.rows(RELEASE_DEAD_MEDIA, dead_after=dead_after))
