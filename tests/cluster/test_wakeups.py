"""sync-now and backfill reach every bridge process on one PostgreSQL buffer (issue 18):
a NOTIFY on chatbridge_sync wakes the runners of each process that LISTENs."""

from __future__ import annotations

import asyncio

import aiohttp
import asyncpg

from bridge.buffer.postgres import split_schema
from bridge.buffer.shared import NAMED, Listener
from bridge.cluster import notify
from bridge.config import BridgeConfig, BufferConfig
from tests.backends import drop_schema, new_schema, postgres_url
from tests.helpers import CorePlugin, RecordingSink, wait_until


async def _listen(buffer, heard: list) -> tuple[Listener, asyncio.Event, asyncio.Task]:
    listener = buffer.listener(lambda action, sink: heard.append((action, sink)))
    stop = asyncio.Event()
    task = asyncio.create_task(listener.run(stop))
    await wait_until(lambda: listener.connected, timeout=5)
    return listener, stop, task


async def test_a_notify_from_one_process_reaches_the_listener_of_another(open_buffers):
    sender, receiver = await open_buffers(2)
    heard: list = []
    _, stop, task = await _listen(receiver, heard)
    try:
        assert await notify(sender, "sync", "leadsquared")
        assert await notify(sender, "backfill", None)
        await wait_until(lambda: len(heard) == 2, timeout=5)
        assert heard == [("sync", "leadsquared"), ("backfill", None)]
    finally:
        stop.set()
        await task


async def test_a_buffer_in_another_schema_is_not_woken(open_buffers):
    (mine,) = await open_buffers(1)
    schema = new_schema()
    other = await type(mine).open(postgres_url(schema))
    heard: list = []
    _, stop, task = await _listen(mine, heard)
    try:
        await notify(other, "sync", "leadsquared")
        await notify(mine, "sync", "mine")
        await wait_until(lambda: heard, timeout=5)
        await asyncio.sleep(0.2)
        assert heard == [("sync", "mine")]
    finally:
        stop.set()
        await task
        await other.close()
        await drop_schema(schema)


async def test_the_listener_comes_back_after_its_connection_is_killed(open_buffers,
                                                                      monkeypatch):
    monkeypatch.setattr("bridge.buffer.shared.RECONNECT_EVERY", 0.1)
    sender, receiver = await open_buffers(2)
    heard: list = []
    listener, stop, task = await _listen(receiver, heard)
    try:
        dsn, _ = split_schema(receiver.url)
        admin = await asyncpg.connect(dsn)
        try:
            # only this receiver's listener (its session is named for its process): every
            # LISTEN on the server killed the listeners of tests running beside it on other
            # workers too, and theirs reconnect only after the default RECONNECT_EVERY
            killed = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%' AND application_name = $1",
                NAMED + receiver.owner)
        finally:
            await admin.close()
        assert killed >= 1
        await wait_until(lambda: not listener.connected, timeout=10)
        await wait_until(lambda: listener.connected, timeout=10)
        await notify(sender, "sync", "after")
        await wait_until(lambda: ("sync", "after") in heard, timeout=5)
    finally:
        stop.set()
        await task


async def test_notify_on_an_sqlite_buffer_sends_nothing(tmp_path):
    from bridge.buffer import Buffer

    buffer = await Buffer.open(str(tmp_path / "b.db"))
    try:
        assert await notify(buffer, "sync", None) is False
    finally:
        await buffer.close()


async def test_sync_now_on_one_process_wakes_the_drain_of_another(pg_url, serve):
    """Two apps on one schema; only B runs the sink, and its interval is an hour: the
    message goes out at once only if A's /sync-now reached B."""
    from bridge.app import create_app
    from bridge.plugins import get_plugin_manager

    drainer = RecordingSink("crm", sync_interval=3600)
    apps = []
    for sinks in ([RecordingSink("other", sync_interval=3600)], [drainer]):
        manager = get_plugin_manager(load_entrypoints=False)
        manager.register(CorePlugin(sinks=sinks), name="testsource")
        config = BridgeConfig(buffer=BufferConfig(url=pg_url))
        apps.append(await serve(create_app(config, manager)))
    a, b = apps
    async with aiohttp.ClientSession() as http:
        await wait_until(lambda: _cluster_size(http, a, 2), timeout=10)
        # B's first drain found nothing and was recorded; it now sleeps an hour (a fixed
        # 0.3 s wait here let a slow first drain take the message itself, under load)
        await wait_until(lambda: _synced_once(http, b, "crm"), timeout=30)
        async with http.post(f"{a}/ingest", json=[
                {"id": "w1", "conversation": "+911", "text": "hi"}]) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.5)
        assert drainer.delivered == []  # nothing drains it without a wake-up
        async with http.post(f"{a}/sync-now") as resp:
            assert resp.status == 200
        await wait_until(lambda: drainer.delivered == ["w1"], timeout=5)


async def _synced_once(http: aiohttp.ClientSession, base: str, sink: str) -> bool:
    async with http.get(f"{base}/status") as resp:
        report = await resp.json()
    return any(s["sink"] == sink and s["last_sync_at"] for s in report["sinks"])


async def _cluster_size(http: aiohttp.ClientSession, base: str, n: int) -> bool:
    async with http.get(f"{base}/status") as resp:
        report = await resp.json()
    return sum(p["alive"] for p in report["cluster"]["processes"]) == n



async def test_the_requeue_command_tells_every_process_to_sync(open_buffers, pg_url, tmp_path):
    """`bridge dead-letter requeue` writes to the buffer itself, so it must wake the
    running processes through NOTIFY too, or the requeued letters wait for an interval."""
    import subprocess
    import sys

    from bridge.buffer import Policy
    from bridge.contracts import Outcome
    from tests.helpers import message

    (buffer,) = await open_buffers(1)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 10, 60)
    await buffer.complete(claim, [Outcome.rejected("bad phone")],
                          Policy(max_attempts=1, retry_delay=lambda a: 0.0, held_delay=0.0))
    heard: list = []
    _, stop, task = await _listen(buffer, heard)
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer:\n  url: '{pg_url}'\n")
    try:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "bridge", "dead-letter", "requeue", "-c",
                             str(config), "--sink", "crm"],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert "requeued 1 message(s); the running bridges were told to sync now" \
            in result.stdout, result.stderr
        await wait_until(lambda: heard, timeout=5)
        assert heard == [("sync", "crm")]
    finally:
        stop.set()
        await task
