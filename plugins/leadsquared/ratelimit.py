"""Sliding-log rate limiter: no window of `per` seconds ever holds more than `calls` starts."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from typing import Any, Protocol

logger = logging.getLogger(__name__)

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(ms|s|m|h)\s*$")
_FORMS = "'<calls>/<period><unit>' with unit ms, s, m or h, e.g. '10/5s', '25/5s', '5/1s', '300/1m'"


def parse_rate(text: str) -> tuple[int, float]:
    """'10/5s' -> (10, 5.0); '300/1m' -> (300, 60.0); '5/s' -> (5, 1.0)."""
    match = _RATE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} not understood; use {_FORMS}")
    calls, amount, unit = int(match[1]), float(match[2] or 1), match[3]
    if calls < 1 or amount <= 0:
        raise ValueError(f"rate {text!r} needs at least 1 call per a positive period; use {_FORMS}")
    return calls, amount * _UNITS[unit]


class SharedBudget(Protocol):
    """A budget several processes draw on (bridge.cluster.RateBudget in PostgreSQL)."""

    async def take(self, calls: int, spacing: float) -> Any:
        """Record a start if allowed now; a result with .delay, .ages, .paused_for."""

    async def pause(self, seconds: float) -> None:
        """Let no process start a call for `seconds` from now."""


class RateLimiter:
    """Fair (FIFO) asyncio limiter keeping the start times of the last `calls` acquisitions.

    A new acquisition may start only once the `calls`-th previous one is at least
    `per + margin` seconds old, so every window of `per` seconds, aligned or not, holds at
    most `calls` starts. `margin` absorbs jitter between when a request starts here and
    when it reaches the server (network, event-loop lag on a busy machine); by default 2 %
    of `per`, at least 50 ms for windows of 1 s or more, at most 0.25 s.

    `share(budget)` makes the log a cluster's (issue 18): each start is then also recorded
    in the shared budget, which every process's limiter consults, and a pause after a
    rate-limit answer holds every process. The local log then mirrors the shared one as of
    this process's last look, so `ready_in` and `state` are estimates between calls.
    """

    def __init__(self, calls: int, per: float, *, margin: float | None = None) -> None:
        if calls < 1 or per <= 0 or (margin or 0) < 0:
            raise ValueError("RateLimiter needs calls >= 1, per > 0 and margin >= 0")
        self.calls = calls
        self.per = per
        self._spacing = per + (_margin(per) if margin is None else margin)
        self._log: deque[float] = deque(maxlen=calls)
        self._lock = asyncio.Lock()  # asyncio.Lock wakes waiters in FIFO order
        self._paused_until = 0.0
        self._waiting = 0
        self._shared: SharedBudget | None = None
        self._pausing: set[asyncio.Task] = set()

    @classmethod
    def from_text(cls, text: str, *, margin: float | None = None) -> RateLimiter:
        """A limiter from a config string such as '10/5s'."""
        calls, per = parse_rate(text)
        return cls(calls, per, margin=margin)

    def share(self, budget: SharedBudget) -> None:
        """Draw on `budget` together with the other processes' limiters from now on.

        A shared start is recorded in PostgreSQL before the request leaves, and on a busy
        machine the commit's answer can take longer to come back than the local margin
        allows for (3 processes on 2 cores: 11 arrivals in one 1-s window at a 50-ms
        margin), so shared spacing gets SHARED_MARGIN more."""
        if self._shared is None:
            self._spacing += SHARED_MARGIN
        self._shared = budget

    @property
    def shared(self) -> bool:
        return self._shared is not None

    async def acquire(self) -> None:
        """Wait for a free slot (first come, first served) and record its start."""
        self._waiting += 1
        try:
            async with self._lock:
                while True:
                    while (delay := self._delay(time.monotonic())) > 0:
                        await asyncio.sleep(delay)
                    if self._shared is None:
                        self._log.append(time.monotonic())
                        return
                    if await self._take_shared():
                        return
        finally:
            self._waiting -= 1

    async def _take_shared(self) -> bool:
        """One try at the shared budget; True when a start was recorded, else slept."""
        take = await self._shared.take(self.calls, self._spacing)
        now = time.monotonic()
        self._log = deque((now - age for age in take.ages), maxlen=self.calls)
        if take.paused_for > 0:
            self._paused_until = max(self._paused_until, now + take.paused_for)
        if take.delay <= 0:
            return True
        await asyncio.sleep(take.delay)
        return False

    def ready_in(self) -> float:
        """Seconds before an acquisition could start now (0 = a slot is free)."""
        return max(0.0, self._delay(time.monotonic()))

    def pause_until(self, monotonic_deadline: float) -> None:
        """Let nobody acquire before `monotonic_deadline` (time.monotonic()), e.g. after a 429."""
        self._paused_until = max(self._paused_until, monotonic_deadline)
        if self._shared is not None:
            task = asyncio.get_running_loop().create_task(
                self._pause_shared(monotonic_deadline - time.monotonic()))
            self._pausing.add(task)
            task.add_done_callback(self._pausing.discard)

    async def _pause_shared(self, seconds: float) -> None:
        try:
            await self._shared.pause(seconds)
        except Exception as exc:  # this process still pauses; the others learn by their 429
            logger.warning("could not share a rate-limit pause: %s: %s", type(exc).__name__, exc)

    @property
    def state(self) -> dict:
        """Snapshot for /status and metrics."""
        now = time.monotonic()
        return {
            "calls": self.calls,
            "per": self.per,
            "in_window": sum(1 for started in self._log if now - started < self.per),
            "waiting": self._waiting,
            "paused_until": self._paused_until if self._paused_until > now else None,
            "paused_for": max(0.0, self._paused_until - now),
            "shared": self._shared is not None,
        }

    def _delay(self, now: float) -> float:
        """Seconds until the next acquisition may start (0 = now)."""
        delay = self._paused_until - now
        if len(self._log) == self.calls:
            delay = max(delay, self._log[0] + self._spacing - now)
        return delay


SHARED_MARGIN = 0.15  # seconds; at 10/5s the shared budget can still be used 97 %


def _margin(per: float) -> float:
    """Default jitter allowance: 20 ms alone let 41 calls into one 1-s span under CPU load."""
    floor = 0.05 if per >= 1 else 0.0  # sub-second windows exist only in tests
    return min(0.25, max(floor, per * 0.02))
