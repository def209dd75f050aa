"""One slow download stalls nothing (issue 25, point 3).

A real aiohttp server stands in for the Graph API; one of its files drips a byte a second
(every read arrives well within its timeout). plugins.whatsapp.media_timeout bounds the
whole download, and the media runner lets each download finish or fail on its own, so the
photos queued behind the slow one are fetched while it drips.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web

from bridge.buffer import Buffer
from bridge.media import CLAIM_LIMIT, MediaPolicy, MediaRunner
from plugins.whatsapp.config import WhatsAppConfig
from plugins.whatsapp.media import GraphMedia
from tests.helpers import wait_until
from tests.whatsapp.test_media import file_of, media_message

DRIP_EVERY = 1.0  # seconds between the slow file's bytes
DEADLINE = 5.0  # media_timeout in this test


@pytest.fixture
async def dripping():
    """A Graph stand-in: media 'slow' drips a byte every DRIP_EVERY s, the others are quick."""
    started: dict[str, float] = {}

    async def lookup(request: web.Request) -> web.Response:
        media_id = request.match_info["media_id"]
        base = f"http://{request.host}"
        return web.json_response({"url": f"{base}/download/{media_id}", "mime_type": "image/jpeg",
                                  "id": media_id, "messaging_product": "whatsapp"})

    async def download(request: web.Request) -> web.StreamResponse:
        media_id = request.match_info["media_id"]
        started.setdefault(media_id, time.monotonic())
        if media_id != "slow":
            return web.Response(body=f"photo {media_id}".encode(), content_type="image/jpeg")
        response = web.StreamResponse()
        response.content_length = 1000
        await response.prepare(request)
        for _ in range(1000):
            await response.write(b"x")
            await asyncio.sleep(DRIP_EVERY)
        return response

    app = web.Application()
    app.router.add_get("/v25.0/{media_id}", lookup)
    app.router.add_get("/download/{media_id}", download)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", started
    await runner.cleanup()


async def test_a_dripping_download_is_cut_at_media_timeout_and_the_photos_behind_it_arrive(
        media_buffer, dripping, tmp_path):
    graph, started = dripping
    fast = [f"fast{i}" for i in range(CLAIM_LIMIT + 2)]  # more than one claim's worth
    await media_buffer.append([media_message(1, "slow")] + [
        media_message(i + 2, media_id) for i, media_id in enumerate(fast)])
    fetcher = GraphMedia(WhatsAppConfig(verify_token="v", app_secret="s", access_token="t",
                                        graph_url=graph, media_timeout=DEADLINE))
    runner = MediaRunner("whatsapp", fetcher, media_buffer,
                         MediaPolicy(str(tmp_path / "media"), retry_base=600, retry_cap=600))
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        begun = time.monotonic()
        for i in range(len(fast)):  # each photo behind the slow one, while it still drips
            await wait_until(lambda i=i: _state(media_buffer, f"wamid.{i + 2}", "fetched"),
                             timeout=DEADLINE - 1)
        assert (await file_of(media_buffer, "wamid.1")).state == "pending"
        assert time.monotonic() - begun < DEADLINE - 1
        # the slow one is cut at the deadline: a failed try with its reason, retried later
        await wait_until(lambda: _reason(media_buffer, "wamid.1"), timeout=DEADLINE + 3)
        cut_after = time.monotonic() - started["slow"]
        assert DEADLINE - 0.5 < cut_after < DEADLINE + 2, cut_after
        (reason,) = await _reason(media_buffer, "wamid.1")
        assert "plugins.whatsapp.media_timeout (5 s)" in reason and "cut off" in reason
        assert (await file_of(media_buffer, "wamid.1")).state == "pending"  # tried again later
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await fetcher.close()


async def _state(buf: Buffer, provider_id: str, state: str) -> bool:
    file = await file_of(buf, provider_id)
    return file is not None and file.state == state


async def _reason(buf: Buffer, provider_id: str) -> list[str]:
    from tests.backends import query

    rows = await query(buf, "SELECT f.reason FROM media f JOIN messages m ON m.id = "
                            f"f.message_id WHERE m.provider_id = '{provider_id}'")
    return [rows[0][0]] if rows and rows[0][0] else []
