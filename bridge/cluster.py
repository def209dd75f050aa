"""What several bridge processes on one PostgreSQL buffer share beyond the buffer itself:
the CRM rate budgets (one per sink and budget, however many processes drain it)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

CLUSTER_LOCK = "chatbridge:cluster-tables"

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
