"""A process paused (SIGSTOP, a frozen VM) in the middle of a transaction keeps its locks:
the lock of the process forming a sink's batches, a rate budget's row, the contact map's
lock. Until it was resumed the others formed no batch (new chats waited), started no CRM
call, or stored no webhook that teaches the contact map (adv31). PostgreSQL now ends a
session idle in a transaction after IDLE_IN_TRANSACTION, which frees them."""

from __future__ import annotations

import asyncio
import time

import bridge.buffer.postgres as postgres
from bridge.buffer import Buffer
from bridge.buffer.delivery import FORMING
from tests.helpers import message


async def test_a_process_paused_holding_the_forming_lock_holds_up_the_others_briefly(
        pg_url, monkeypatch):
    monkeypatch.setattr(postgres, "IDLE_IN_TRANSACTION", 1.0, raising=False)
    paused, other = await Buffer.open(pg_url, pool_size=2), await Buffer.open(pg_url)
    holding, resumed = asyncio.Event(), asyncio.Event()
    try:
        await other.install_sinks(["crm"])

        async def forming(db) -> None:  # noqa: ANN001 - a connector
            assert await db.try_lock(FORMING + "crm")
            holding.set()
            await resumed.wait()  # stopped here: the server hears nothing more
        stuck = asyncio.ensure_future(paused.write(forming))
        await asyncio.wait_for(holding.wait(), 5)
        await other.append([message(1)])
        started = time.monotonic()
        claimed = []
        while not claimed and time.monotonic() - started < 10:
            claimed = await other.claim("crm", 10, 60)
            await asyncio.sleep(0.1)
        assert claimed, "no batch was formed while the other process was paused"
        assert time.monotonic() - started < 5
        resumed.set()
        await asyncio.gather(stuck, return_exceptions=True)  # its session was ended
    finally:
        resumed.set()
        await paused.close()
        await other.close()
