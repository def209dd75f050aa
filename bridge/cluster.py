"""What several bridge processes on one PostgreSQL buffer share beyond the buffer itself,
as the core sees it: wake-ups (sync-now and backfill reach every process) and the process
registry (who is alive, who drained each sink last) for /status, /metrics and the status
page. The SQL lives in the buffer (bridge.buffer.shared); a buffer offers these powers
when it is a SharedBuffer (bridge.buffer.port)."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import socket
import time
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

from bridge.buffer import SharedBuffer
from bridge.contracts import LEASE_MARGIN, START_WITHIN

logger = logging.getLogger(__name__)

ACTIONS = ("sync", "backfill")
HEARTBEAT_EVERY = 5.0  # seconds between a process's heartbeats
ALIVE_FOR = 3  # heartbeats missed before a process counts as gone


async def notify(buffer: Any, action: str, sink: str | None = None) -> bool:
    """Tell every bridge process on a shared buffer to drain `sink` now (all sinks when
    None): `action` is "sync" (sync-now, a requeue) or "backfill" (one was queued).
    False (nothing sent) when the buffer is not shared: its one process was woken
    directly."""
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {ACTIONS}, not {action!r}")
    if not isinstance(buffer, SharedBuffer):
        return False
    await buffer.notify(action, sink)
    return True


async def tell_cluster(buffer: Any, action: str, sink: str | None) -> None:
    """notify(), for callers that already woke their own runners: never raises."""
    try:
        await notify(buffer, action, sink)
    except Exception as exc:  # the local drain runs anyway
        logger.warning("could not tell the other bridge processes (%s): %s", action, exc)


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


async def register(buffer: Any, sinks: list[str]) -> None:
    """On a shared buffer, this process's first heartbeat, before any runner claims: a
    process killed before the Member's first beat had no row, so the registry never saw it
    gone and its leases (a media fetch's: 900 s) waited to run out. A lease whose owner has
    no row is not freed instead: a live process may claim before its first heartbeat.
    Never raises (the Member's heartbeat registers it then)."""
    if not isinstance(buffer, SharedBuffer):
        return
    try:
        await buffer.beat(this_host(), sorted(sinks), {})
    except Exception as exc:
        logger.warning("cluster registration failed: %s: %s", type(exc).__name__, exc)


class Member:
    """This process's row in `processes`: registered at start, a heartbeat every
    HEARTBEAT_EVERY seconds (with when it last delivered to each sink), deleted at a clean
    stop. A process is alive while its heartbeat is younger than ALIVE_FOR heartbeats."""

    def __init__(self, buffer: SharedBuffer, runners: Mapping[str, Any],
                 every: float = HEARTBEAT_EVERY) -> None:
        self.buffer = buffer
        self.runners = runners
        self.every = every
        self.id = buffer.owner  # its lease tokens' prefix

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
            await self.buffer.leave()

    async def beat(self) -> None:
        """Insert or refresh this process's row; forget long-gone processes; free the
        leases of processes gone silent."""
        drained = {name: runner.last_delivered_at for name, runner in self.runners.items()
                   if getattr(runner, "last_delivered_at", None) is not None}
        await self.buffer.beat(this_host(), sorted(self.runners), drained)
        await self.buffer.release_dead_leases(ALIVE_FOR * self.every, spare(self.runners),
                                              settle(self.runners))

    async def report(self) -> dict[str, Any]:
        """{processes: [...], drains: {sink: process}, this: id} as /status shows it."""
        processes = [_process(row, self.every, self.id) for row in await self.buffer.processes()]
        return {"processes": processes, "drains": _drains(processes), "this": self.id,
                "heartbeat_every": self.every, "shared": True}


def spare(runners: Mapping[str, Any]) -> dict[str, float]:
    """Per sink, how long a lease outlasts its delivery: a silent process's lease is freed
    no sooner than this before it expires, once its deliver_timeout has cut off any
    delivery it still had (a process paused, not dead, goes on when resumed). A delivery
    begins up to START_WITHIN after its lease began without renewing it."""
    return {name: max(0.0, runner.settings.lease - runner.settings.deliver_timeout
                      - LEASE_MARGIN - START_WITHIN)
            for name, runner in runners.items() if hasattr(runner, "settings")}


def settle(runners: Mapping[str, Any]) -> dict[str, float]:
    """Per sink, how long past a freed lease's end its batch waits: a write the silent
    process had in flight may land until then (bridge.sync.settle_after_lease)."""
    return {name: runner.after_lease for name, runner in runners.items()
            if hasattr(runner, "after_lease")}


def _process(row: dict[str, Any], every: float, me: str) -> dict[str, Any]:
    age = row["age"]
    return {"id": row["id"], "hostname": row["hostname"], "pid": row["pid"],
            "version": row["version"], "started_at": row["started_at"],
            "heartbeat_at": row["heartbeat_at"], "heartbeat_age_s": round(age, 1),
            "alive": age < ALIVE_FOR * every, "this": row["id"] == me,
            "sinks": list(row["sinks"]), "drained": row["drained"]}


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
