"""PostgreSQL out of reach (issue 18): a webhook's append fails (so it is answered 503,
never 200) and the health check says the buffer cannot commit; when the server is back,
both work again without reopening the buffer. The outage is a real loopback TCP proxy
between the buffer and the test server, cut and restored."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import pytest

from bridge.buffer import Buffer
from bridge.errors import BufferUnavailable
from tests.helpers import message


class Proxy:
    """Forwards 127.0.0.1:<port> to the server; cut() drops every connection and refuses
    new ones until restore()."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._open |= {writer, up_writer}
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer),
                             return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.transport.abort()


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = f"{parts.username}@127.0.0.1:{port}" if parts.username else f"127.0.0.1:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


async def test_appends_and_health_fail_while_postgres_is_out_of_reach_then_recover(pg_url):
    server = urlsplit(pg_url)
    proxy = Proxy(server.hostname, server.port or 5432)
    await proxy.start()
    buffer = await Buffer.open(through(pg_url, proxy.port))
    try:
        await buffer.install_sinks(["crm"])
        assert await buffer.append([message(1)]) == 1
        await buffer.heartbeat()

        await proxy.cut()
        with pytest.raises(Exception):  # noqa: B017 - whatever asyncpg raises: not stored
            await buffer.append([message(2)])
        with pytest.raises(BufferUnavailable, match="buffer.url"):
            await buffer.heartbeat()

        await proxy.start()  # the same port again: the server is back
        await buffer.heartbeat()
        assert await buffer.append([message(2)]) == 1  # stored now, once
        assert await buffer.count_messages() == 2
    finally:
        await buffer.close()
        await proxy.cut()
