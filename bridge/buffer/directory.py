"""A sink's record directory in the buffer: phone keys -> CRM records, and unknown numbers.

The sink fills it (issue 15); here is only the SQL. Shared by every process on the buffer,
kept across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import aiosqlite


class Directory:
    """One sink's rows; `buffer` runs writes in its writer and reads on its read side."""

    def __init__(self, buffer: Any, sink: str) -> None:
        self._buffer = buffer
        self.sink = sink

    async def state(self) -> dict[str, Any] | None:
        rows = await self._buffer.query(
            "SELECT enabled, generation, filled_at, refreshed_at, watermark, records,"
            " (SELECT COUNT(DISTINCT record_id) FROM directory WHERE sink = ?)"
            " FROM directory_state WHERE sink = ?", (self.sink, self.sink))
        if not rows:
            return None
        enabled, generation, filled, refreshed, watermark, records, size = rows[0]
        return {"enabled": bool(enabled), "generation": generation, "filled_at": filled,
                "refreshed_at": refreshed, "watermark": watermark, "records": records,
                "size": size}

    async def lookup(self, keys: Iterable[str]) -> str | None:
        """The record under the first key that has one."""
        for key in keys:
            rows = await self._buffer.query(
                "SELECT record_id FROM directory WHERE sink = ? AND key = ?"
                " ORDER BY record_id LIMIT 1", (self.sink, key))
            if rows:
                return str(rows[0][0])
        return None

    async def put(self, records: list[tuple[str, str | None, list[str]]],
                  generation: int) -> None:
        """(record id, name, keys) each: replaces what the directory held for the record."""
        async def work(db: aiosqlite.Connection) -> None:
            ids = [(self.sink, record_id) for record_id, _, _ in records]
            await db.executemany("DELETE FROM directory WHERE sink = ? AND record_id = ?", ids)
            await db.executemany(
                "INSERT INTO directory (sink, key, record_id, name, generation)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (sink, key, record_id) DO UPDATE SET"
                " name = excluded.name, generation = excluded.generation",
                [(self.sink, key, record_id, name, generation)
                 for record_id, name, keys in records for key in keys])
        await self._buffer._transact(work)

    async def drop(self, record_id: str) -> None:
        """Forget a record that no longer exists (deleted or merged)."""
        await self._buffer._transact(lambda db: db.execute(
            "DELETE FROM directory WHERE sink = ? AND record_id = ?", (self.sink, record_id)))

    async def save_state(self, *, enabled: bool, generation: int, watermark: str | None,
                         full: bool, records: int | None = None) -> None:
        """Record a finished refresh; a full one drops the rows older generations left."""
        now = time.time()

        async def work(db: aiosqlite.Connection) -> None:
            if full:
                await db.execute("DELETE FROM directory WHERE sink = ? AND generation < ?",
                                 (self.sink, generation))
            await db.execute(
                "INSERT INTO directory_state (sink, enabled, generation, filled_at,"
                " refreshed_at, watermark, records) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (sink) DO UPDATE SET enabled = excluded.enabled,"
                " generation = excluded.generation,"
                " filled_at = COALESCE(excluded.filled_at, directory_state.filled_at),"
                " refreshed_at = excluded.refreshed_at, watermark = excluded.watermark,"
                " records = COALESCE(excluded.records, directory_state.records)",
                (self.sink, int(enabled), generation, now if full else None, now, watermark,
                 records))
            if not enabled:
                await db.execute("DELETE FROM directory WHERE sink = ?", (self.sink,))
        await self._buffer._transact(work)

    async def unknown_checked_at(self, number: str) -> float | None:
        rows = await self._buffer.query(
            "SELECT checked_at FROM unknown_numbers WHERE sink = ? AND number = ?",
            (self.sink, number))
        return rows[0][0] if rows else None

    async def note_unknown(self, number: str, at: float) -> None:
        await self._buffer._transact(lambda db: db.execute(
            "INSERT INTO unknown_numbers (sink, number, checked_at) VALUES (?, ?, ?)"
            " ON CONFLICT (sink, number) DO UPDATE SET checked_at = excluded.checked_at",
            (self.sink, number, at)))

    async def forget_unknown(self, number: str) -> None:
        await self._buffer._transact(lambda db: db.execute(
            "DELETE FROM unknown_numbers WHERE sink = ? AND number = ?", (self.sink, number)))
