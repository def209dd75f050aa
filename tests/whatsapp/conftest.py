"""The sink and source suites run on SQLite: what they test does not depend on the
buffer's backend, which tests/core's contract tests cover on both. The end-to-end tests
that matter on PostgreSQL choose both backends themselves (`on_both_backends`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bridge.buffer import Buffer
from plugins.whatsapp.graph_simulator import create_graph_app
from tests.whatsapp.test_media import TOKEN


@pytest.fixture
async def buffer_target(tmp_path) -> AsyncIterator[str]:
    yield str(tmp_path / "buffer.db")


@pytest.fixture
async def graph(tmp_path, serve) -> str:
    """The Graph stand-in on a loopback port: its base URL."""
    (tmp_path / "graph").mkdir()
    return await serve(create_graph_app(TOKEN, tmp_path / "graph"))


@pytest.fixture
async def media_buffer(tmp_path) -> AsyncIterator[Buffer]:
    """An SQLite buffer that takes WhatsApp's media jobs."""
    buf = await Buffer.open(tmp_path / "b.db")
    buf.media_sources = {"whatsapp": None}
    yield buf
    await buf.close()
