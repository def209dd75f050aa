"""A media file's upload to LeadSquared reads the file off the event loop and sends the
very bytes stored: a large video (or a slow disk) never holds up the webhooks."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import json
import os
import threading
import time

import httpx
import pytest

from bridge.app import BRIDGE, create_app
from bridge.plugins import get_plugin_manager, load_config
from plugins.leadsquared.client import LeadSquaredClient
from plugins.whatsapp.signature import sign
from tests.whatsapp.test_webhook import PATH, change, envelope, text_message

SECRET = "upload-secret"
WAIT = 10.0  # seconds the webhook poster waits before giving the file its bytes anyway


@pytest.fixture
async def bridge_url(tmp_path, serve):
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
                      f"    verify_token: t\n    app_secret: {SECRET}\n")
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    return await serve(app), app


async def uploaded(sim, path: str, name: str = "clip.mp4") -> bytes:
    """Upload `path` with the sink's client; the bytes the simulator's S3 URL serves."""
    async with LeadSquaredClient(sim.base_url, sim.access_key, sim.secret_key,
                                 max_retries=0) as client:
        upload = await client.files.upload(sim.base_url, path, name, "video/mp4", 1)
    async with httpx.AsyncClient() as http:
        return (await http.get(upload.url)).content


async def test_a_large_file_arrives_byte_identical(sim, tmp_path):
    """Over aiohttp's 1 MiB default: the simulator's files host refused every such file
    with a 413 that the real one does not send (its read() stopped at client_max_size)."""
    data = os.urandom(5 << 20) + b"\r\n--tail\r\n"  # a boundary-like ending, too
    path = tmp_path / "clip.mp4"
    path.write_bytes(data)
    got = await uploaded(sim, str(path))
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(data).hexdigest()


def post_webhook_then_feed(url: str, fifo: str, data: bytes, order: list[str]) -> None:
    """In a thread: post a signed webhook (waiting at most WAIT s for its answer), then
    write the file's bytes. `order` says whether the webhook was answered first."""
    body = json.dumps(envelope([change([text_message("while-uploading")])])).encode()
    out = writer_once_read(fifo)  # the upload has the file open: now the webhook
    try:
        answer = httpx.post(url + PATH, content=body, timeout=WAIT, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
        order.append(f"webhook {answer.status_code}")
    except httpx.TimeoutException:
        order.append("webhook timed out")
    with out:  # the file's bytes come only now
        out.write(data)
    order.append("file written")


def writer_once_read(fifo: str):
    """The FIFO's write end, opened once the upload opened its read end (a non-blocking
    open fails until then), and then made blocking."""
    for _ in range(int(WAIT / 0.01)):
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:
                raise
            time.sleep(0.01)
            continue
        os.set_blocking(fd, True)
        return os.fdopen(fd, "wb")
    raise AssertionError("the upload never opened its file")


async def test_a_webhook_is_answered_while_an_uploads_file_read_waits_on_the_disk(
        sim, bridge_url, tmp_path):
    """A FIFO stands in for a disk that takes its time: the upload opens and reads it,
    and nothing arrives until the webhook posted meanwhile was answered. Read on the
    event loop (httpx's `files=`), the read held the loop, the webhook waited, timed out."""
    url, app = bridge_url
    fifo = tmp_path / "slow.mp4"
    os.mkfifo(fifo)
    data = os.urandom(3 << 20)
    order: list[str] = []
    upload = asyncio.create_task(uploaded(sim, str(fifo)))
    poster = threading.Thread(target=post_webhook_then_feed,
                              args=(url, str(fifo), data, order))
    poster.start()
    [got] = await asyncio.gather(upload, return_exceptions=True)
    await asyncio.to_thread(poster.join)
    assert order == ["webhook 200", "file written"]
    assert [m.provider_id for m in await app[BRIDGE].buffer.messages()] == ["while-uploading"]
    assert got == data  # chunked (a pipe has no size), and whole
