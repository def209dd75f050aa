"""Fixtures for the cluster tests: a fresh PostgreSQL schema, and several buffers (each
with its own pool, as separate bridge processes have) opened on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from bridge.buffer import Buffer
from tests.backends import NO_POSTGRES, POSTGRES, fresh_schema_url

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    """A buffer URL in a schema of its own, dropped afterwards."""
    if not POSTGRES:
        pytest.skip(NO_POSTGRES)
    async with fresh_schema_url() as url:
        yield url


@pytest.fixture
async def open_buffers(pg_url) -> AsyncIterator[Callable[[int], Awaitable[list]]]:
    """open_buffers(n): n PostgresBuffers on one schema (n pools: n 'processes')."""
    opened: list = []

    async def open_n(n: int) -> list:
        for _ in range(n):
            opened.append(await Buffer.open(pg_url, pool_size=4))
        return opened[-n:]

    yield open_n
    for buffer in opened:
        await buffer.close()
