"""Fixtures: real SQLite buffers in tmp dirs, fresh plugin managers, real servers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bridge.buffer import Buffer
from bridge.plugins import get_plugin_manager
from plugins.leadsquared.simulator import Simulator
from tests.backends import BACKENDS, fresh_schema_url


@pytest.fixture
def pm():
    """A fresh plugin manager with no installed plugins loaded."""
    return get_plugin_manager(load_entrypoints=False)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    """The LeadSquared simulator, in-process on a loopback port."""
    simulator = Simulator(seed=7)
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture(params=BACKENDS)
async def buffer_target(request, tmp_path) -> AsyncIterator[str]:
    """A fresh buffer of each backend: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        yield str(tmp_path / "buffer.db")
        return
    async with fresh_schema_url() as url:
        yield url


@pytest.fixture
async def buffer(buffer_target) -> AsyncIterator[Buffer]:
    buf = await Buffer.open(buffer_target)
    try:
        yield buf
    finally:
        await buf.close()


@pytest.fixture
async def serve():
    """serve(app) -> base URL of the app running on 127.0.0.1 (stopped after the test)."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application) -> str:
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    yield start
    for runner in reversed(runners):
        await runner.cleanup()
