"""Completions of two processes noting the same business numbers' last sync (sink_numbers,
one row per number, shared by every process) take the rows' locks in one order: in the
order each process listed them, two completions could wait on each other, PostgreSQL broke
the deadlock by failing one, and its outcomes waited to be recorded again (adv45)."""

from __future__ import annotations

import asyncio

import asyncpg

from bridge.buffer import Buffer
from bridge.buffer.connectors import PgConnector
from bridge.buffer.delivery import NUMBER_SYNCED
from bridge.buffer.postgres import split_schema


async def test_two_completions_noting_numbers_in_opposite_orders_do_not_deadlock(pg_url):
    buffer = await Buffer.open(pg_url)  # the schema, migrated
    await buffer.close()
    dsn, schema = split_schema(pg_url)
    first, second = [await asyncpg.connect(dsn, server_settings={
        "search_path": schema, "deadlock_timeout": "100ms"}) for _ in range(2)]
    try:
        a, b = first.transaction(), second.transaction()
        await a.start()
        await b.start()
        await PgConnector(first).run(NUMBER_SYNCED, numbered=[("crm", "n1", 1.0)])
        # the second lists n2 first: it must wait on n1 before it locks n2
        other = asyncio.create_task(PgConnector(second).run(
            NUMBER_SYNCED, numbered=[("crm", "n2", 1.0), ("crm", "n1", 1.0)]))
        await asyncio.sleep(0.3)
        assert not other.done()  # waiting on n1, held by the first
        await PgConnector(first).run(NUMBER_SYNCED, numbered=[("crm", "n2", 2.0)])
        await a.commit()
        await other  # no DeadlockDetectedError on either side
        await b.commit()
        rows = await first.fetch("SELECT account, last_synced_at FROM sink_numbers "
                                 "ORDER BY account")
        assert [tuple(r) for r in rows] == [("n1", 1.0), ("n2", 2.0)]
    finally:
        await first.close()
        await second.close()
