"""A bridge process SIGKILLed while it downloads a photo (two `bridge run` on one PostgreSQL
buffer): its media lease names it, and once the registry sees it gone (silent, no session
left) the survivor fetches the file, as it takes over the dead process's batches, instead
of waiting out the media lease (900 s: the photo reached LeadSquared ~15 minutes late)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import asyncpg
import pytest

from bridge.buffer.postgres import split_schema
from bridge.cluster import Member
from tests.backends import NO_POSTGRES, POSTGRES
from tests.helpers import free_port, wait_until
from tests.processes import (
    BridgeProcess,
    GraphProcess,
    SimulatorProcess,
    buffer_section,
    eventually,
)
from tests.reliability.support import report
from tests.whatsapp.test_media import media_message
from tests.whatsapp.test_media_e2e import (
    GRAPH_TOKEN,
    PHONE_ID,
    SECRET,
    VERIFY,
    all_attachments,
    media_webhook,
    post,
)

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)

SIZE, SLOW = 600_000, 20_000  # bytes, bytes a second: a 30-s download
# seconds from the kill until the survivor fetches: the registry's three missed heartbeats
# (15 s), its next heartbeat (5 s), the media runner's next look (5 s), the fetch, slack
TAKEN_WITHIN = 45.0


def start(tmp_path: Path, name: str, buffer: dict, graph: GraphProcess,
          lsq: SimulatorProcess, token: bool = True) -> BridgeProcess:
    """`bridge run` on the shared buffer and media_path (README: the process that fetches
    a file is not always the one that posts it); without `token`, no access_token: the
    process cannot fetch media."""
    port = free_port()
    config = {"server": {"port": port},
              "buffer": {**buffer, "media_path": str(tmp_path / "media"),
                         "media_retry_base": 0.2, "media_retry_cap": 0.5},
              "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                       "access_token": GRAPH_TOKEN, "graph_url": graph.url},
                          "leadsquared": {"host": lsq.url, "access_key": "e2e-access",
                                          "secret_key": "e2e-secret", "sync_interval": "1s",
                                          "retry_base": 0.2, "retry_cap": 1, "timeout": "4s",
                                          "deliver_timeout": "15s", "lease": "16s"}}}
    if not token:
        del config["plugins"]["whatsapp"]["access_token"]
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(config))
    return BridgeProcess(path, port).start()


def downloading(bridges: list[BridgeProcess]) -> BridgeProcess | None:
    """The bridge with a partial download open (its file descriptors, read from /proc)."""
    for bridge in bridges:
        fds = Path(f"/proc/{bridge.proc.pid}/fd")
        for fd in fds.iterdir() if fds.exists() else ():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.endswith(".part") and os.path.getsize(target) > 0:
                return bridge
    return None


def media_state(url: str) -> str | None:
    """The state of the one media job in the buffer."""
    async def read() -> str | None:
        dsn, schema = split_schema(url)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            return await conn.fetchval("SELECT state FROM media")
        finally:
            await conn.close()
    return asyncio.run(read())


def killed_holder_delays(tmp_path: Path, graph: GraphProcess, lsq: SimulatorProcess,
                         timeout: float) -> tuple[float, float]:
    """Kill the bridge downloading a slow photo; seconds until the survivor has fetched
    it, and until it is attached in LeadSquared (timeout: AssertionError)."""
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    data = os.urandom(SIZE)
    media_id = graph.upload(data, "image/jpeg", PHONE_ID)
    graph.faults(slow_bytes_per_s=SLOW)
    bridges: list[BridgeProcess] = []
    with buffer_section("postgresql", tmp_path) as buffer:
        try:
            bridges = [start(tmp_path, name, buffer, graph, lsq) for name in ("one", "two")]
            post(bridges[0], media_webhook("wamid.photo", "image", media_id, "image/jpeg", data))
            holder = eventually(lambda: downloading(bridges), timeout=20, every=0.05)
            holder.kill()
            killed_at = time.monotonic()
            graph.faults(slow_bytes_per_s=0)  # the survivor's download is quick
            eventually(lambda: media_state(buffer["url"]) == "fetched", timeout=timeout,
                       every=0.2)
            fetched = time.monotonic() - killed_at
            (attached,) = eventually(lambda: all_attachments(lsq, lead), timeout=timeout)
            arrived = time.monotonic() - killed_at
            assert hashlib.sha256(attached["Data"]).digest() == hashlib.sha256(data).digest()
            return fetched, arrived
        finally:
            for bridge in bridges:
                bridge.kill()


def test_a_killed_processs_media_lease_is_taken_over_once_it_is_gone(
        tmp_path, module_simulator):
    graph = GraphProcess(GRAPH_TOKEN, tmp_path / "graph")
    try:
        fetched, arrived = killed_holder_delays(tmp_path, graph, module_simulator.fresh(),
                                                TAKEN_WITHIN)
    finally:
        graph.stop()
    report(f"media of a SIGKILLed holder: fetched by the survivor {fetched:.1f} s after the "
           f"kill, attached in LeadSquared after {arrived:.1f} s")
    assert fetched < TAKEN_WITHIN and arrived < TAKEN_WITHIN + 10, (fetched, arrived)


async def test_a_gone_processs_media_lease_is_freed_and_a_paused_ones_kept(open_buffers):
    """Both silent for three heartbeats: the killed one (no session left) loses its fetch's
    lease at the survivor's next heartbeat; the paused one (SIGSTOP: its listener's session
    still open) keeps it, since resumed it goes on downloading."""
    killed, paused, survivor = await open_buffers(3)
    for buf in (killed, paused, survivor):
        buf.media_sources = {"whatsapp": None}
    await survivor.append([media_message(1, "media-1")])
    await survivor.append([media_message(2, "media-2")])
    stop = asyncio.Event()
    listener = paused.listener(lambda action, sink: None)
    listening = asyncio.create_task(listener.run(stop))
    try:
        await wait_until(lambda: listener.connected)
        for buf, job in ((killed, 1), (paused, 2)):
            await Member(buf, {}, every=0.1).beat()
            assert [j.message_id for j in await buf.media_claim("whatsapp", 1, 900)] == [job]
        live = Member(survivor, {}, every=0.1)
        await live.beat()
        assert await survivor.media_claim("whatsapp", 4, 900) == []  # both held
        await asyncio.sleep(0.4)  # more than three of their heartbeats
        await live.beat()
        assert [j.message_id for j in await survivor.media_claim("whatsapp", 4, 900)] == [1]
    finally:
        stop.set()
        await asyncio.wait_for(listening, 10)
