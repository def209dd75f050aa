"""Bridges in separate schemas of one database (`?schema=NAME`) share nothing: the
advisory locks that serialise one buffer's processes are named within its schema."""

from __future__ import annotations

import asyncio

import pytest

from bridge.buffer import Buffer
from bridge.buffer.delivery import FORMING
from tests.backends import NO_POSTGRES, POSTGRES, fresh_schema_url
from tests.helpers import message

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)


async def test_a_bridge_forming_batches_never_holds_up_another_schemas_claims():
    async with fresh_schema_url() as first_url, fresh_schema_url() as second_url:
        first = await Buffer.open(first_url, pool_size=2)
        second = await Buffer.open(second_url, pool_size=2)
        try:
            await second.install_sinks(["crm"])
            await second.append([message(1)])
            forming = asyncio.Event()
            done = asyncio.Event()

            async def hold(db) -> None:  # the first bridge, mid-way through forming
                assert await db.try_lock(FORMING + "crm")
                forming.set()
                await done.wait()

            holder = asyncio.create_task(first.write(hold))
            await forming.wait()
            try:
                claimed = await second.claim("crm", 10, 300)
            finally:
                done.set()
                await holder
            assert [c.batch.conversation.key for c in claimed] == ["+919876543210"]
        finally:
            await first.close()
            await second.close()
