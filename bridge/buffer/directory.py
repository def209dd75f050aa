"""A sink's record directory in the buffer: phone keys -> CRM records, and unknown numbers.

The sink fills it (issue 15); here is only the SQL. Shared by every process on the buffer,
kept across restarts.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa

from bridge.buffer.compiler import P, Query
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import (
    REAL,
    TEXT,
    conversations,
    directory,
    directory_state,
    identities,
    unknown_numbers,
)

T = TypeVar("T")
r, ds, u = directory.c, directory_state.c, unknown_numbers.c


class Transactions(Protocol):
    """What a directory needs of its buffer: a write transaction and a read."""

    async def write(self, work: Callable[[Connector], Awaitable[T]]) -> T: ...

    async def read(self, work: Callable[[Connector], Awaitable[T]]) -> T: ...


STATE = Query(sa.select(
    ds.enabled, ds.generation, ds.filled_at, ds.refreshed_at, ds.watermark, ds.records,
    sa.select(sa.func.count(r.record_id.distinct())).where(r.sink == P("sink"))
    .scalar_subquery()).where(ds.sink == P("sink")), "directory state")
LOOKUP = Query(sa.select(r.record_id).where(r.sink == P("sink"), r.key == P("key"))
               .order_by(r.record_id).limit(1), "directory lookup")
DROP_RECORD = Query(sa.delete(directory).where(r.sink == P("sink"), r.record_id == P("record_id")),
                    "drop a record")


def _put(insert: Any) -> Any:
    new = insert(directory).values({k: P(k) for k in (
        "sink", "key", "record_id", "name", "generation")})
    return new.on_conflict_do_update(index_elements=["sink", "key", "record_id"], set_={
        "name": new.excluded.name, "generation": new.excluded.generation})


PUT = Query(_put, "directory row")
DROP_OLDER = Query(sa.delete(directory).where(r.sink == P("sink"),
                                              r.generation < P("generation")),
                   "drop rows of older fills")
DROP_ALL = Query(sa.delete(directory).where(r.sink == P("sink")), "empty the directory")


def _save(insert: Any) -> Any:
    new = insert(directory_state).values({k: P(k) for k in (
        "sink", "enabled", "generation", "filled_at", "refreshed_at", "watermark", "records")})
    x = new.excluded
    return new.on_conflict_do_update(index_elements=["sink"], set_={
        "enabled": x.enabled, "generation": x.generation,
        "filled_at": sa.func.coalesce(x.filled_at, ds.filled_at),
        "refreshed_at": x.refreshed_at, "watermark": x.watermark,
        "records": sa.func.coalesce(x.records, ds.records)})


SAVE_STATE = Query(_save, "directory state saved")
UNKNOWN_AT = Query(sa.select(u.checked_at).where(u.sink == P("sink"), u.number == P("number")),
                   "unknown number checked")


def _note_unknown(insert: Any) -> Any:
    """Noted only while the buffer still knows the number (a conversation or an identity):
    a delivery in flight while its person is purged must not write the number back."""
    known = sa.or_(sa.exists().where(conversations.c.key == P("number", type_=TEXT)),
                   sa.exists().where(identities.c.key == P("number", type_=TEXT)))
    new = insert(unknown_numbers).from_select(["sink", "number", "checked_at"], sa.select(
        P("sink", type_=TEXT), P("number", type_=TEXT), P("checked_at", type_=REAL))
        .where(known))
    return new.on_conflict_do_update(index_elements=["sink", "number"],
                                     set_={"checked_at": new.excluded.checked_at})


NOTE_UNKNOWN = Query(_note_unknown, "unknown number noted")
FORGET_UNKNOWN = Query(sa.delete(unknown_numbers).where(u.sink == P("sink"),
                                                        u.number == P("number")),
                       "unknown number forgotten")


class Directory:
    """One sink's rows; writes run in the buffer's write transactions, reads on its reads."""

    def __init__(self, buffer: Transactions, sink: str) -> None:
        self._buffer = buffer
        self.sink = sink

    async def state(self) -> dict[str, Any] | None:
        row = await self._buffer.read(lambda db: db.one(STATE, sink=self.sink))
        if row is None:
            return None
        enabled, generation, filled, refreshed, watermark, records, size = row
        return {"enabled": bool(enabled), "generation": generation, "filled_at": filled,
                "refreshed_at": refreshed, "watermark": watermark, "records": records,
                "size": size}

    async def lookup(self, keys: Iterable[str]) -> str | None:
        """The record under the first key that has one."""
        async def work(db: Connector) -> str | None:
            for key in keys:
                found = await db.value(LOOKUP, sink=self.sink, key=key)
                if found is not None:
                    return str(found)
            return None
        return await self._buffer.read(work)

    async def put(self, records: list[tuple[str, str | None, list[str]]],
                  generation: int) -> None:
        """(record id, name, keys) each: replaces what the directory held for the record."""
        async def work(db: Connector) -> None:
            await db.many(DROP_RECORD, [{"sink": self.sink, "record_id": record_id}
                                        for record_id, _, _ in records])
            await db.many(PUT, [{"sink": self.sink, "key": key, "record_id": record_id,
                                 "name": name, "generation": generation}
                                for record_id, name, keys in records for key in keys])
        await self._buffer.write(work)

    async def drop(self, record_id: str) -> None:
        """Forget a record that no longer exists (deleted or merged)."""
        await self._buffer.write(lambda db: db.run(DROP_RECORD, sink=self.sink,
                                                   record_id=record_id))

    async def save_state(self, *, enabled: bool, generation: int, watermark: str | None,
                         full: bool, records: int | None = None) -> None:
        """Record a finished refresh; a full one drops the rows older generations left."""
        now = time.time()

        async def work(db: Connector) -> None:
            if full:
                await db.run(DROP_OLDER, sink=self.sink, generation=generation)
            await db.run(SAVE_STATE, sink=self.sink, enabled=int(enabled),
                         generation=generation, filled_at=now if full else None,
                         refreshed_at=now, watermark=watermark, records=records)
            if not enabled:
                await db.run(DROP_ALL, sink=self.sink)
        await self._buffer.write(work)

    async def unknown_checked_at(self, number: str) -> float | None:
        return await self._buffer.read(lambda db: db.value(UNKNOWN_AT, sink=self.sink,
                                                           number=number))

    async def note_unknown(self, number: str, at: float) -> None:
        await self._buffer.write(lambda db: db.run(NOTE_UNKNOWN, sink=self.sink, number=number,
                                                   checked_at=at))

    async def forget_unknown(self, number: str) -> None:
        await self._buffer.write(lambda db: db.run(FORGET_UNKNOWN, sink=self.sink,
                                                   number=number))
