"""Copy an SQLite buffer into PostgreSQL (`bridge buffer migrate --to postgresql://...`).

Every table is copied in primary-key order, a chunk per transaction, with its ids kept
(deliveries, batches, targets and media refer to message and batch ids) and
`ON CONFLICT DO NOTHING`: a chunk is in PostgreSQL whole or not at all, so a copy that
was stopped resumes where it stopped, and running it again copies nothing twice. The
bridge must be stopped: the SQLite file is opened as its runner (the flock refuses a
copy while a bridge runs), and what it would write meanwhile would not be copied.

Into a database that already holds other messages nothing is copied: ids would clash.
A first copy records its source in `buffer_imports`; only that source may resume. Once a
copy finished, running it again copies nothing: the bridges own the data from then on,
and a row they delivered, pruned or erased (`bridge purge`) must not come back.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import sqlalchemy as sa

import bridge.buffer.shared as shared
import bridge.buffer.tables as tables
from bridge.buffer import Buffer  # the SQLite backend loaded (registered); PostgreSQL below
from bridge.buffer.compiler import P, Query, greatest
from bridge.buffer.connectors import Connector
from bridge.buffer.postgres import PostgresBuffer
from bridge.errors import BridgeError

CHUNK = 2000
# a registered process heard from this recently is running (three of bridge.cluster's
# 5-s heartbeats)
ALIVE_WITHIN = 15.0
# The tables copied, in copy order (messages and batches before what refers to them);
# heartbeat and the cluster's live state are not.
TABLES = ("messages", "conversations", "batches", "deliveries", "ledger", "sink_state",
          "sink_conversations", "statuses", "identities", "targets", "media", "directory",
          "directory_state", "unknown_numbers", "source_syncs", "sink_numbers")
bi = tables.buffer_imports.c


class TransferError(BridgeError):
    """The copy cannot start (or go on): the message says why and what to do."""


@dataclass
class Copied:
    """Rows per table: in the SQLite file, newly written to PostgreSQL, there in the end."""

    source: dict[str, int] = field(default_factory=dict)
    written: dict[str, int] = field(default_factory=dict)
    target: dict[str, int] = field(default_factory=dict)
    finished_at: float | None = None  # an earlier copy finished then: nothing was copied

    @property
    def complete(self) -> bool:
        return all(self.target.get(t, 0) >= n for t, n in self.source.items())


def _table(name: str) -> sa.Table:
    return tables.metadata.tables[name]


def _count(name: str) -> Query:
    return Query(sa.select(sa.func.count()).select_from(_table(name)), f"count {name}")


def _chunk(name: str) -> Query:
    table = _table(name)
    return Query(sa.select(*table.columns).order_by(*table.primary_key.columns)
                 .limit(P("limit")).offset(P("offset")), f"chunk of {name}")


def _insert(name: str) -> Query:
    table = _table(name)
    return Query(lambda insert: insert(table).values({c.name: P(c.name) for c in table.columns})
                 .on_conflict_do_nothing(), f"copy into {name}")


COUNTS = {name: _count(name) for name in TABLES}
CHUNKS = {name: _chunk(name) for name in TABLES}
INSERTS = {name: _insert(name) for name in TABLES}
IMPORTS = Query(sa.select(bi.source, bi.finished_at), "earlier imports")
ANY_MESSAGE = Query(sa.select(sa.exists().where(tables.messages.c.id.isnot(None))),
                    "any message")
STARTED = Query(lambda insert: insert(tables.buffer_imports).values(
    source=P("source"), started_at=sa.extract("epoch", sa.func.now()))
    .on_conflict_do_nothing(), "import started")
FINISHED = Query(sa.update(tables.buffer_imports).values(
    finished_at=sa.extract("epoch", sa.func.now())).where(bi.source == P("source")),
    "import finished")
RESTART_IDS = {name: Query(sa.select(sa.func.setval(
    sa.func.pg_get_serial_sequence(name, "id"),
    greatest(sa.select(sa.func.max(_table(name).c.id)).scalar_subquery(), 1))),
    f"restart {name} ids") for name in ("messages", "batches")}


async def copy_buffer(sqlite_file: str, url: str,
                      progress: Callable[[str, int], None] | None = None,
                      after_lease: Mapping[str, float] | None = None) -> Copied:
    """Copy `sqlite_file` into the PostgreSQL buffer at `url` (created if needed).

    Leases a killed runner left are freed as `bridge run` frees them: a batch whose post
    may still land waits `after_lease` (per sink, bridge.sync.settle_after_lease) past its
    lease before a retry looks for its key; freed due at once, a bridge started on the
    copy right away found nothing yet and posted it again (adv49)."""
    # migrates it to this version too
    source = await Buffer.open(sqlite_file, runner=True, after_lease=after_lease)
    try:
        try:
            target = await Buffer.open(url)  # creates and migrates the PostgreSQL schema
        except BridgeError as exc:
            raise TransferError(str(exc)) from None
        if not isinstance(target, PostgresBuffer):
            await target.close()
            raise TransferError(f"{url} is not a PostgreSQL buffer")
        try:
            real = os.path.realpath(sqlite_file)
            copied = Copied(finished_at=await target.write(lambda db: _claim_target(db, real)))
            for name in TABLES:
                copied.source[name] = await source.read(lambda db, n=name: db.value(COUNTS[n]))
                copied.written[name] = 0 if copied.finished_at is not None else \
                    await _copy_table(source, target, name, progress)
                copied.target[name] = await target.read(lambda db, n=name: db.value(COUNTS[n]))
            if copied.finished_at is not None:
                return copied
            await target.write(_restart_ids)
            await target.write(lambda db: db.run(FINISHED, source=real))
            return copied
        finally:
            await target.close()
    finally:
        await source.close()


async def _claim_target(db: Connector, source: str) -> float | None:
    """Refuse a database holding messages from elsewhere; note this source as its import.
    When its copy already finished, when that was (nothing is to be copied again)."""
    found = {name: finished for name, finished in await db.rows(IMPORTS)}
    earlier = list(found)
    others = [name for name in earlier if name != source]
    if others:
        raise TransferError(f"this database already holds a copy of {others[0]}; copy "
                            "into an empty database (or another ?schema=)")
    if source not in found or found[source] is None:
        alive = [row for row in await db.rows(shared.PROCESSES) if row[-1] < ALIVE_WITHIN]
        if alive:
            raise TransferError(f"{len(alive)} bridge process(es) run on this database (pid "
                                f"{alive[0][2]} on {alive[0][1]}); stop them, copy, then start "
                                "them again (a bridge writing during a copy loses messages)")
    if not earlier and await db.value(ANY_MESSAGE):
        raise TransferError("this database already holds messages of a running bridge; copy "
                            "into an empty database (or another ?schema=) before starting "
                            "bridges on it")
    await db.run(STARTED, source=source)
    return found.get(source)


async def _copy_table(source: Buffer, target: Buffer, name: str,
                      progress: Callable[[str, int], None] | None) -> int:
    """Copy one table in key order, CHUNK rows per transaction; rows newly written."""
    columns = [c.name for c in _table(name).columns]
    written = offset = 0
    while True:
        rows = await source.read(lambda db, at=offset: db.rows(CHUNKS[name], limit=CHUNK,
                                                               offset=at))
        if not rows:
            return written

        async def work(db: Connector, rows: list = rows) -> int:
            before = await db.value(COUNTS[name])
            await db.many(INSERTS[name], [dict(zip(columns, row, strict=True)) for row in rows])
            return await db.value(COUNTS[name]) - before
        written += await target.write(work)
        offset += len(rows)
        if progress:
            progress(name, offset)


async def _restart_ids(db: Connector) -> None:
    """New messages and batches get ids after the copied ones."""
    for query in RESTART_IDS.values():
        await db.rows(query)
