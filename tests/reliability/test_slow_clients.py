"""Slow clients: a flood of unsigned slow-body connections must not take the webhook down.

The attack: ~1,100 connections that send headers and one byte of body, against an open-file
limit of 1024, stopped every webhook and /healthz and logged ~2.6 MB a second. Here the
bridge runs with a lowered RLIMIT_NOFILE so a few hundred connections make the same
attack. Loopback only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from aiohttp import web

from bridge.serve import CappedSite, listen
from tests.helpers import free_port
from tests.processes import log_file, tail, wait_http
from tests.reliability.support import (
    PATH,
    ThreadedApp,
    signed_headers,
    stored_ids,
    webhook_body,
    whatsapp_config,
)

ASHA = "919876543210"
SLOW_HEAD = (f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             f"X-Hub-Signature-256: sha256={'0' * 64}\r\nContent-Length: 1000\r\n\r\n{{").encode()


def slow_clients(port: int, n: int) -> list[socket.socket]:
    """`n` connections that each sent headers and one byte of a 1,000-byte body."""
    sockets = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        try:
            sock.sendall(SLOW_HEAD)
        except OSError:
            pass  # closed by the bridge already: the cap at work
        sockets.append(sock)
    return sockets


def start_bridge(tmp_path: Path, soft: int, hard: int) -> tuple[subprocess.Popen, str, Path]:
    """`bridge run` with RLIMIT_NOFILE set to (soft, hard) in the child."""
    port = free_port()
    db = tmp_path / "b.db"
    config = tmp_path / "config.yaml"
    config.write_text(whatsapp_config(db, host="127.0.0.1", port=port))
    log = log_file("slow-clients")

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    proc = subprocess.Popen([sys.executable, "-m", "bridge", "run", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=log, preexec_fn=limit,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc, "bridge", log)
    return proc, url, Path(log.name)


def timed(call) -> tuple[int | None, float]:
    started = time.monotonic()
    try:
        status: int | None = call().status_code
    except httpx.HTTPError:
        status = None
    return status, time.monotonic() - started


@pytest.mark.parametrize(("soft", "hard", "clients"), [
    (256, 256, 400),   # a hard limit of 256: the cap must hold connections below it
    (128, 4096, 300),  # a low soft limit: `bridge run` raises it to the hard one
])
def test_a_flood_of_slow_clients_leaves_webhooks_and_healthz_answering(tmp_path, soft, hard,
                                                                       clients):
    proc, url, log = start_bridge(tmp_path, soft, hard)
    sockets: list[socket.socket] = []
    try:
        before = log.stat().st_size
        sockets = slow_clients(int(url.rsplit(":", 1)[1]), clients)
        body = webhook_body([("wamid.slow1", ASHA, "still served")])
        with httpx.Client(base_url=url, timeout=5) as client:
            health = timed(lambda: client.get("/healthz"))
            hook = timed(lambda: client.post(PATH, content=body, headers=signed_headers(body)))
            time.sleep(1)  # a second of the flood held open: what does the log gain?
            grown = log.stat().st_size - before
        assert proc.poll() is None, tail(open(log))
        # liveness bounds, not benchmarks: a server out of descriptors never answers
        assert health[0] == 200 and health[1] < 3, health
        assert hook[0] == 200 and hook[1] < 3, hook
        assert "wamid.slow1" in stored_ids(tmp_path / "b.db")
        assert grown < 16_000, log.read_text(errors="replace")[-2000:]
    finally:
        for sock in sockets:
            sock.close()
        proc.kill()
        proc.wait()


def test_a_body_that_does_not_arrive_in_time_gets_408_and_stores_nothing(tmp_path):
    config = whatsapp_config(tmp_path / "b.db", {"body_timeout": 1})  # default 10 s; 1 the least
    with ThreadedApp(config, tmp_path / "config.yaml") as app:
        port = int(app.url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(SLOW_HEAD)
            started = time.monotonic()
            answer = b""
            while chunk := sock.recv(4096):  # until the bridge closes the connection
                answer += chunk
            took = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"did not arrive within 1 s" in answer
        assert 0.9 < took < 5, took
        assert stored_ids(tmp_path / "b.db") == set()


async def _capped(handler, cap: int) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.router.add_post("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await CappedSite(runner, *await listen("127.0.0.1", port, cap)).start()
    return runner, port


async def _request(port: int, body: bytes = b"x") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
                 % (len(body), body))
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return answer


async def test_past_the_cap_with_every_connection_busy_a_newcomer_gets_503():
    release = asyncio.Event()
    busy = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal busy
        await request.read()
        busy += 1
        await release.wait()  # body read, work in progress: not to be cut off
        return web.Response(text="done")

    runner, port = await _capped(handler, cap=3)
    try:
        held = [asyncio.create_task(_request(port)) for _ in range(3)]
        deadline = time.monotonic() + 10
        while busy < 3:
            assert time.monotonic() < deadline, busy
            await asyncio.sleep(0.01)
        refused = await _request(port)
        assert refused.startswith(b"HTTP/1.1 503"), refused
        assert b"too many open connections" in refused
        release.set()
        for answer in await asyncio.gather(*held):  # the busy ones were left to finish
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"done")
    finally:
        release.set()
        await runner.cleanup()
