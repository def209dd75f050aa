"""What several bridge processes on one PostgreSQL buffer share beyond the buffer itself:
the CRM rate budgets (one per sink and budget, however many processes drain it), wake-ups
(LISTEN/NOTIFY: sync-now and backfill reach every process) and the process registry (who
is alive, who drained each sink last) for /status, /metrics and the status page."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

import asyncpg

logger = logging.getLogger(__name__)

CLUSTER_LOCK = "chatbridge:cluster-tables"
CHANNEL = "chatbridge_sync"  # NOTIFY payload: {"schema", "action", "sink"} as JSON
ACTIONS = ("sync", "backfill")
HEARTBEAT_EVERY = 5.0  # seconds between a process's heartbeats
ALIVE_FOR = 3  # heartbeats missed before a process counts as gone
FORGET_AFTER = 24 * 3600.0  # a gone process's row is deleted after this long
RECONNECT_EVERY = 2.0  # seconds between tries of the listener's lost connection

# Created idempotently when a PostgresBuffer opens (after the buffer's own migrations):
# they hold only live coordination state, nothing a migration would have to carry over.
CLUSTER_TABLES = """
CREATE TABLE IF NOT EXISTS rate_budgets (
    sink TEXT NOT NULL,
    budget TEXT NOT NULL,
    starts DOUBLE PRECISION[] NOT NULL DEFAULT '{}',   -- epoch seconds (server clock)
    paused_until DOUBLE PRECISION NOT NULL DEFAULT 0,  -- nobody starts a call before this
    PRIMARY KEY (sink, budget)
);
CREATE TABLE IF NOT EXISTS processes (
    id TEXT PRIMARY KEY,                         -- a uuid per process start
    hostname TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,        -- epoch seconds (server clock)
    heartbeat_at DOUBLE PRECISION NOT NULL,      -- epoch seconds (server clock)
    sinks TEXT[] NOT NULL DEFAULT '{}',          -- the sinks it runs
    drained JSONB NOT NULL DEFAULT '{}'          -- sink -> when it last delivered a batch
);
"""


async def ensure_tables(conn: asyncpg.Connection) -> None:
    """Create the cluster's tables if missing (processes starting together create once)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1 || current_schema()))",
                           CLUSTER_LOCK)
        await conn.execute(CLUSTER_TABLES)


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

    def __init__(self, pool: Any, sink: str, budget: str) -> None:
        self._pool = pool
        self.sink = sink
        self.budget = budget

    async def take(self, calls: int, spacing: float) -> Take:
        """Record a call start if the budget allows one now, else say how long to wait."""
        async with self._pool.acquire() as conn, conn.transaction():
            row = await self._locked_row(conn)
            now = await conn.fetchval("SELECT extract(epoch FROM clock_timestamp())::float8")
            starts = list(row["starts"])[-calls:]
            delay = row["paused_until"] - now
            if len(starts) >= calls:
                delay = max(delay, starts[-calls] + spacing - now)
            if delay <= 0:
                starts = (starts + [now])[-calls:]
                await conn.execute("UPDATE rate_budgets SET starts = $3 "
                                   "WHERE sink = $1 AND budget = $2",
                                   self.sink, self.budget, starts)
            return Take(max(0.0, delay), tuple(now - s for s in starts),
                        max(0.0, row["paused_until"] - now))

    async def pause(self, seconds: float) -> None:
        """Let no process start a call for `seconds` from now (server clock), e.g. after a 429."""
        await self._pool.execute(
            "INSERT INTO rate_budgets AS r (sink, budget, paused_until) "
            "VALUES ($1, $2, extract(epoch FROM clock_timestamp()) + $3) "
            "ON CONFLICT (sink, budget) DO UPDATE SET paused_until = "
            "greatest(r.paused_until, excluded.paused_until)",
            self.sink, self.budget, seconds)

    async def _locked_row(self, conn: asyncpg.Connection) -> asyncpg.Record:
        sql = ("SELECT starts, paused_until FROM rate_budgets "
               "WHERE sink = $1 AND budget = $2 FOR UPDATE")
        row = await conn.fetchrow(sql, self.sink, self.budget)
        if row is None:
            await conn.execute("INSERT INTO rate_budgets (sink, budget) VALUES ($1, $2) "
                               "ON CONFLICT DO NOTHING", self.sink, self.budget)
            row = await conn.fetchrow(sql, self.sink, self.budget)
        return row


# -- wake-ups: sync-now and backfill reach every process ------------------------------------


async def notify(buffer: Any, action: str, sink: str | None = None) -> bool:
    """Tell every bridge process on this PostgreSQL buffer to drain `sink` now (all sinks
    when None): `action` is "sync" (sync-now, a requeue) or "backfill" (one was queued).
    False (nothing sent) when the buffer is not PostgreSQL: its one process was woken
    directly."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    if not hasattr(buffer, "fetch") or not hasattr(buffer, "shared_budget"):
        return False
    await buffer.fetch(
        "SELECT pg_notify($1, json_build_object('schema', current_schema(),"
        " 'action', $2::text, 'sink', $3::text)::text)", CHANNEL, action, sink)
    return True


async def tell_cluster(buffer: Any, action: str, sink: str | None) -> None:
    """notify(), for callers that already woke their own runners: never raises."""
    try:
        await notify(buffer, action, sink)
    except Exception as exc:  # the local drain runs anyway
        logger.warning("could not tell the other bridge processes (%s): %s", action, exc)


class Listener:
    """LISTENs on CHANNEL on a dedicated connection (reconnecting when it is lost) and
    calls `on_wake(action, sink)` for this schema's notifications."""

    def __init__(self, dsn: str, schema: str | None,
                 on_wake: Callable[[str, str | None], None]) -> None:
        self._dsn = dsn
        self._settings = {"search_path": schema} if schema else None
        self._on_wake = on_wake
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
        try:
            self._schema = await conn.fetchval("SELECT current_schema()")
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._received)
            self.connected = True  # missed while away: the interval's drain finds it
            while not stop.is_set() and not lost.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop, lost), HEARTBEAT_EVERY)
                if not stop.is_set() and not lost.is_set():
                    await conn.execute("SELECT 1", timeout=HEARTBEAT_EVERY)  # still there?
        finally:
            with suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    def _received(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        try:
            note = json.loads(payload)
        except ValueError:
            return
        if note.get("schema") != self._schema or note.get("action") not in ACTIONS:
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


def wake_runners(runners: Mapping[str, Any], action: str, sink: str | None) -> list[str]:
    """Wake the named runner (every one when `sink` is None); the names woken."""
    woken = [name for name in runners if sink in (None, name)]
    for name in woken:
        runners[name].wake()
    if woken and action == "backfill":
        logger.info("backfill queued elsewhere in the cluster: draining %s", ", ".join(woken))
    return woken


# -- the process registry -------------------------------------------------------------------


def this_host() -> dict[str, Any]:
    """Who this process is: hostname, pid, version."""
    try:
        version = importlib.metadata.version("chatbridge-crm")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    return {"hostname": socket.gethostname(), "pid": os.getpid(), "version": version}


class Member:
    """This process's row in `processes`: registered at start, a heartbeat every
    HEARTBEAT_EVERY seconds (with when it last delivered to each sink), deleted at a clean
    stop. A process is alive while its heartbeat is younger than ALIVE_FOR heartbeats."""

    def __init__(self, buffer: Any, runners: Mapping[str, Any],
                 every: float = HEARTBEAT_EVERY) -> None:
        self.buffer = buffer
        self.runners = runners
        self.every = every
        self.id = getattr(buffer, "owner", None) or str(uuid.uuid4())  # its lease tokens' prefix

    async def run(self, stop: asyncio.Event) -> None:
        """Heartbeat until `stop`, then leave; never raises."""
        while not stop.is_set():
            try:
                await self.beat()
            except Exception as exc:
                logger.warning("cluster heartbeat failed: %s: %s", type(exc).__name__, exc)
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)
        with suppress(Exception):
            await self.buffer.fetch("DELETE FROM processes WHERE id = $1", self.id)

    async def beat(self) -> None:
        """Insert or refresh this process's row; forget long-gone processes."""
        me = this_host()
        drained = {name: runner.last_delivered_at for name, runner in self.runners.items()
                   if getattr(runner, "last_delivered_at", None) is not None}
        await self.buffer.fetch(
            "INSERT INTO processes (id, hostname, pid, version, started_at, heartbeat_at,"
            " sinks, drained) VALUES ($1, $2, $3, $4, extract(epoch FROM clock_timestamp()),"
            " extract(epoch FROM clock_timestamp()), $5, $6::jsonb) ON CONFLICT (id) DO UPDATE"
            " SET heartbeat_at = excluded.heartbeat_at, sinks = excluded.sinks,"
            " drained = excluded.drained",
            self.id, me["hostname"], me["pid"], me["version"], sorted(self.runners),
            json.dumps(drained))
        await self.buffer.fetch(
            "DELETE FROM processes WHERE heartbeat_at < extract(epoch FROM clock_timestamp())"
            " - $1", FORGET_AFTER)
        if hasattr(self.buffer, "release_dead_leases"):
            await self.buffer.release_dead_leases(ALIVE_FOR * self.every)

    async def report(self) -> dict[str, Any]:
        """{processes: [...], drains: {sink: process}, this: id} as /status shows it."""
        rows = await self.buffer.fetch(
            "SELECT id, hostname, pid, version, started_at, heartbeat_at, sinks,"
            " drained::text, extract(epoch FROM clock_timestamp()) - heartbeat_at"
            " FROM processes ORDER BY started_at")
        processes = [_process(row, self.every, self.id) for row in rows]
        return {"processes": processes, "drains": _drains(processes), "this": self.id,
                "heartbeat_every": self.every, "shared": True}


def _process(row: tuple, every: float, me: str) -> dict[str, Any]:
    pid, hostname, number, version, started, beat, sinks, drained, age = row
    return {"id": pid, "hostname": hostname, "pid": number, "version": version,
            "started_at": started, "heartbeat_at": beat, "heartbeat_age_s": round(age, 1),
            "alive": age < ALIVE_FOR * every, "this": pid == me, "sinks": list(sinks),
            "drained": json.loads(drained)}


def _drains(processes: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per sink, the process that delivered to it last (alive ones first)."""
    best: dict[str, dict[str, Any]] = {}
    for process in processes:
        for sink, at in process["drained"].items():
            current = best.get(sink)
            if current is None or (process["alive"], at) > (current["alive"], current["at"]):
                best[sink] = {"process": process["id"], "hostname": process["hostname"],
                              "pid": process["pid"], "alive": process["alive"], "at": at}
    return best


def local_report(bridge: Any) -> dict[str, Any]:
    """The cluster of a bridge whose buffer is not shared (SQLite): this process alone."""
    now = time.time()
    me = {"id": "local", **this_host(), "started_at": bridge.started_at, "heartbeat_at": now,
          "heartbeat_age_s": 0.0, "alive": True, "this": True, "sinks": sorted(bridge.runners),
          "drained": {name: runner.last_delivered_at for name, runner in bridge.runners.items()
                      if getattr(runner, "last_delivered_at", None) is not None}}
    return {"processes": [me], "drains": _drains([me]), "this": "local",
            "heartbeat_every": None, "shared": False}


async def cluster_report(bridge: Any) -> dict[str, Any]:
    """The cluster as /status shows it: every process on a shared buffer, else this one."""
    if bridge.cluster is None:
        return local_report(bridge)
    try:
        return await bridge.cluster.report()
    except Exception as exc:
        logger.warning("cluster report failed: %s: %s", type(exc).__name__, exc)
        return {**local_report(bridge), "shared": True,
                "error": f"the process registry could not be read: {type(exc).__name__}"}
