"""A second `bridge run` starting on a shared PostgreSQL buffer while the first downloads a
photo: the starting process took back every media lease of the source (a runner's start
voided them, as SQLite's one runner per file may), so it fetched the live process's photo
again (two downloads of one file from Graph). Only the leases of processes gone (or of a
runner stopped cleanly, which gives its own back) may be taken."""

from __future__ import annotations

import asyncio
import hashlib
import os

import asyncpg
import pytest

from bridge.buffer import Buffer
from bridge.buffer.postgres import split_schema
from tests import oneshot
from tests.backends import NO_POSTGRES, POSTGRES, execute
from tests.cluster.test_media_killed_holder import downloading, start
from tests.processes import GraphProcess, buffer_section, eventually
from tests.whatsapp.test_media import media_message
from tests.whatsapp.test_media_e2e import (
    GRAPH_TOKEN,
    PHONE_ID,
    all_attachments,
    media_webhook,
    post,
)

pytestmark = pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES)

SIZE, SLOW = 400_000, 20_000  # bytes, bytes a second: a 20-s download


def media_states(url: str) -> dict[str, str]:
    """media id -> state of every media job in the buffer."""
    async def read() -> dict[str, str]:
        dsn, schema = split_schema(url)
        conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
        try:
            return dict(await conn.fetch("SELECT media_id, state FROM media"))
        finally:
            await conn.close()
    return asyncio.run(read())


def held_job(url: str) -> None:
    """A media job held (as a buffer of one process without a Graph token queues it; on a
    shared buffer such a process queues it pending): a runner's start releases held jobs
    in the same commit that dealt with the leases, so its state says the start has
    happened."""
    async def append() -> None:
        buffer = await Buffer.open(url)
        try:
            await buffer.append([media_message(900, "held-job")])  # no job queued
            assert await execute(buffer, (
                "INSERT INTO media (message_id, source, media_id, state, reason, updated_at) "
                "SELECT id, 'whatsapp', 'held-job', 'held', 'no token', 0 FROM messages "
                "WHERE provider_id = 'wamid.900'")) == 1
        finally:
            await buffer.close()
    asyncio.run(append())


def slow_photos(tmp_path, module_simulator, *sizes: int, slow: int = SLOW) -> tuple:
    """A reset LeadSquared account with Asha's lead, and a Graph stand-in of the test's
    own serving one random photo of each size at `slow` bytes a second: (lsq, graph, lead,
    [(bytes, media id), ...])."""
    lsq = module_simulator.fresh()
    graph = GraphProcess(GRAPH_TOKEN, tmp_path / "graph")
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    photos = []
    for size in sizes:
        data = os.urandom(size)
        photos.append((data, graph.upload(data, "image/jpeg", PHONE_ID)))
    graph.faults(slow_bytes_per_s=slow)
    return lsq, graph, lead, photos


def downloads(graph: GraphProcess) -> int:
    return oneshot.get(f"{graph.url}/_sim/stats", timeout=10).json()["downloads"]


def test_a_second_process_starting_leaves_a_live_processs_download_alone(
        tmp_path, module_simulator):
    lsq, graph, lead, [(data, media_id)] = slow_photos(tmp_path, module_simulator, SIZE)
    bridges = []
    try:
        with buffer_section("postgresql", tmp_path) as buffer:
            try:
                bridges.append(start(tmp_path, "one", buffer, graph, lsq))
                post(bridges[0], media_webhook("wamid.photo", "image", media_id, "image/jpeg",
                                               data))
                assert eventually(lambda: downloading(bridges), timeout=20, every=0.05) \
                    is bridges[0]
                held_job(buffer["url"])
                bridges.append(start(tmp_path, "two", buffer, graph, lsq))
                eventually(lambda: media_states(buffer["url"])["held-job"] != "held",
                           timeout=30, every=0.1)  # two's runner has started
                assert media_states(buffer["url"])[media_id] == "pending"  # still downloading
                eventually(lambda: media_states(buffer["url"])[media_id] == "fetched",
                           timeout=60, every=0.2)
                (attached,) = eventually(lambda: all_attachments(lsq, lead), timeout=60)
                assert hashlib.sha256(attached["Data"]).digest() == \
                    hashlib.sha256(data).digest()
                assert downloads(graph) == 1  # was 2: two fetched the photo one was fetching
            finally:
                for bridge in bridges:
                    bridge.kill()
    finally:
        graph.stop()


def test_a_download_cut_off_by_a_clean_stop_is_fetched_at_the_next_start(
        tmp_path, module_simulator):
    """SIGTERM while a photo downloads, then `bridge run` again: the stopping runner gives
    its lease back (the start takes none, and the registry frees only a gone process's,
    where a stopped one has left it), so the file is fetched now, not after the media
    lease (900 s)."""
    lsq, graph, lead, [(data, media_id)] = slow_photos(tmp_path, module_simulator, SIZE)
    bridge = None
    try:
        with buffer_section("postgresql", tmp_path) as buffer:
            try:
                bridge = start(tmp_path, "one", buffer, graph, lsq)
                post(bridge, media_webhook("wamid.photo", "image", media_id, "image/jpeg", data))
                eventually(lambda: downloading([bridge]), timeout=20, every=0.05)
                bridge.stop()  # SIGTERM: a clean stop, the download cut off
                assert bridge.proc.returncode == 0
                assert media_states(buffer["url"])[media_id] == "pending"
                graph.faults(slow_bytes_per_s=0)
                bridge = start(tmp_path, "one", buffer, graph, lsq)
                eventually(lambda: media_states(buffer["url"])[media_id] == "fetched",
                           timeout=60, every=0.2)
                (attached,) = eventually(lambda: all_attachments(lsq, lead), timeout=60)
                assert hashlib.sha256(attached["Data"]).digest() == \
                    hashlib.sha256(data).digest()
            finally:
                if bridge is not None:
                    bridge.kill()
    finally:
        graph.stop()


async def test_a_stopping_runner_gives_back_only_the_leases_it_still_holds(open_buffers):
    """A download cut off by a stop gives its lease back; one whose lease ran out and that
    another process took meanwhile stays that process's (its download goes on)."""
    first, other = await open_buffers(2)
    for buf in (first, other):
        buf.media_sources = {"whatsapp": None}
    await first.append([media_message(1, "media-1"), media_message(2, "media-2")])
    now = await first.read(first.clock)
    assert [j.message_id for j in await first.media_claim("whatsapp", 2, 60, now=now)] == [1, 2]
    (taken,) = await other.media_claim("whatsapp", 1, 900, now=now + 61)  # 1's lease ran out
    assert taken.message_id == 1
    assert await first.media_give_back([1, 2]) == 1  # only 2 was still its own
    (again,) = await other.media_claim("whatsapp", 2, 900, now=now + 62)
    assert again.message_id == 2  # due at once; 1 is still the other's download
