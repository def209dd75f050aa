"""A download cut short or damaged is never stored as the whole file.

A lookaside download whose length is delimited by the connection's close (no
Content-Length, no chunked encoding) and that closes early looks complete to the HTTP
client. When Graph's lookup gives no sha256 in a form we can read, the only evidence left
is its `file_size` (a string [whatsapp-webhooks.md §8, M-MEDIA]): the half file was
recorded as fetched and attached to the CRM as the photo.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from tests.backends import execute
from tests.whatsapp.test_media import file_of, media_message, runner_for

PHOTO = bytes(range(256)) * 800  # 204,800 bytes


@pytest.fixture
async def cut_short() -> AsyncIterator[dict]:
    """A raw HTTP server that answers 200 without a length and closes after `served` bytes
    (state["served"]; the whole file by default)."""
    state = {"served": len(PHOTO)}

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nConnection: close\r\n\r\n"
                     + PHOTO[:state["served"]])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    state["url"] = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/photo"
    yield state
    server.close()
    await server.wait_closed()


async def graph_lookup(serve, download_url: str, **fields: object) -> str:
    """A Graph lookup stand-in answering M-MEDIA's fields (file_size a string)."""
    async def lookup(request: web.Request) -> web.Response:
        return web.json_response({"messaging_product": "whatsapp", "url": download_url,
                                  "mime_type": "image/jpeg", "file_size": str(len(PHOTO)),
                                  "id": request.match_info["id"], **fields})
    app = web.Application()
    app.add_routes([web.get("/{version}/{id}", lookup)])
    return await serve(app)


@pytest.mark.parametrize("sha256", [None, "ian\njM4k="], ids=["no-sha256", "opaque-sha256"])
async def test_a_download_closed_early_without_a_length_is_retried_not_stored(
        media_buffer, serve, cut_short, tmp_path, sha256):
    graph = await graph_lookup(serve, cut_short["url"], **({"sha256": sha256} if sha256 else {}))
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await media_buffer.append([media_message(1, "7001")])
    cut_short["served"] = len(PHOTO) // 2
    assert await runner.step()
    (message,) = await media_buffer.messages()
    assert message.file.state == "pending"
    assert f"after {len(PHOTO) // 2} of the {len(PHOTO)} bytes" in message.file.reason
    cut_short["served"] = len(PHOTO)
    await execute(media_buffer, "UPDATE media SET next_attempt_at = 0")  # due again now
    assert await runner.step()
    stored = await file_of(media_buffer, "wamid.1")
    assert stored.state == "fetched"
    assert stored.sha256 == hashlib.sha256(PHOTO).hexdigest()


async def test_a_stated_size_that_disagrees_with_a_matching_sha256_is_not_evidence(
        media_buffer, serve, cut_short, tmp_path):
    """The bytes a known-form sha256 names are whole, whatever file_size says: a strict
    size check must not refuse them (no source says file_size is exact)."""
    graph = await graph_lookup(serve, cut_short["url"], file_size="12",
                               sha256=hashlib.sha256(PHOTO).hexdigest())
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await media_buffer.append([media_message(1, "7002")])
    assert await runner.step()
    assert (await file_of(media_buffer, "wamid.1")).state == "fetched"


async def test_without_a_lookup_sha256_a_webhook_sha256_that_differs_refuses_the_bytes(
        media_buffer, serve, cut_short, tmp_path):
    """The lookup states no sha256: the webhook's (in a known form) is the evidence left."""
    graph = await graph_lookup(serve, cut_short["url"])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    wrong = hashlib.sha256(b"something else").hexdigest()
    await media_buffer.append([media_message(1, "7003", sha256=wrong)])
    assert await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "pending" and f"is not the stated {wrong}" in file.reason
    assert not list((tmp_path / "media").glob("??/*"))
