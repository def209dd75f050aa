"""Two bridge processes on one PostgreSQL buffer share buffer.media_path (README: the one
that fetches a photo is not always the one that posts it). A process starting while the
other downloads (a rolling restart) must not damage that download's file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from pathlib import Path

import pytest

import bridge.media as bridge_media
from bridge.media import MediaPolicy, MediaRunner
from plugins.whatsapp.graph_simulator import create_graph_app
from tests.helpers import wait_until
from tests.whatsapp.test_media import TOKEN, fault, fetcher, media_message, upload


@pytest.fixture
async def graph(tmp_path, serve) -> str:
    (tmp_path / "graph").mkdir()
    return await serve(create_graph_app(TOKEN, tmp_path / "graph"))


def runner(buf, graph: str, tmp_path: Path) -> MediaRunner:  # noqa: ANN001 - a Buffer
    return MediaRunner("whatsapp", fetcher(graph), buf,
                       MediaPolicy(str(tmp_path / "media"), retry_base=0.05, retry_cap=0.1))


async def test_a_process_starting_during_anothers_download_leaves_its_file_whole(
        open_buffers, graph, tmp_path):
    first, second = await open_buffers(2)
    for buf in (first, second):
        buf.media_sources = {"whatsapp": None}
    data = os.urandom(400_000)
    media_id = await upload(graph, data)
    await first.append([media_message(1, media_id)])
    await fault(graph, slow_bytes_per_s=200_000)  # two seconds a download
    one, two = runner(first, graph, tmp_path), runner(second, graph, tmp_path)
    await one.prepare()
    downloading = asyncio.create_task(one.step())
    while not one._outs or one._outs[1].size < len(data) * 0.7:
        await asyncio.sleep(0.02)
    await two.prepare()  # the second process starts (its own step may take the job too)
    again = asyncio.create_task(two.step())
    await downloading
    again.cancel()  # the second process is stopped in its turn (a rolling restart)
    await asyncio.gather(again, return_exceptions=True)
    files = [m.file for m in await first.messages()]
    if files[0].state == "fetched":  # whatever is recorded as fetched is whole
        assert hashlib.sha256(Path(files[0].path).read_bytes()).digest() == \
            hashlib.sha256(data).digest(), f"a short file ({files[0].path}) is recorded whole"
    await fault(graph, slow_bytes_per_s=0)

    async def fetched() -> bool:
        await one.step()
        return [m.file for m in await first.messages()][0].state == "fetched"

    await wait_until(fetched, timeout=10)
    stored = Path([m.file for m in await first.messages()][0].path)
    assert stored.read_bytes() == data
    assert list((tmp_path / "media" / "tmp").iterdir()) == []


async def test_a_process_starting_while_another_records_its_file_keeps_that_file(
        open_buffers, graph, tmp_path):
    """The starter's sweep of files no job names must spare a file another process has
    just renamed into place and is recording (its commit slow: a loaded database)."""
    first, second = await open_buffers(2)
    for buf in (first, second):
        buf.media_sources = {"whatsapp": None}
    data = os.urandom(5_000)
    await first.append([media_message(1, await upload(graph, data))])
    one, two = runner(first, graph, tmp_path), runner(second, graph, tmp_path)
    await one.prepare()
    record, installed = first.media_fetched, asyncio.Event()

    async def slow_commit(*args, **kwargs) -> None:  # noqa: ANN002, ANN003 - as it is
        installed.set()
        await asyncio.sleep(0.5)
        await record(*args, **kwargs)

    first.media_fetched = slow_commit
    fetching = asyncio.create_task(one.step())
    await installed.wait()
    await two.prepare()  # the second process starts now
    await fetching
    (file,) = [m.file for m in await first.messages()]
    assert file.state == "fetched"
    assert Path(file.path).exists(), "a file recorded as fetched was swept away"
    assert Path(file.path).read_bytes() == data


async def test_on_a_shared_buffer_a_start_sweeps_only_what_no_process_touched_for_a_lease(
        open_buffers, graph, tmp_path):
    (buf,) = await open_buffers(1)
    buf.media_sources = {"whatsapp": None}
    media = tmp_path / "media"
    (media / "tmp").mkdir(parents=True)
    (media / "ab").mkdir()
    old_part, young_part = media / "tmp" / "whatsapp-7-x.part", media / "tmp" / "whatsapp-8-y.part"
    old_file, young_file = media / "ab" / ("ab" + "0" * 62), media / "ab" / ("ab" + "1" * 62)
    for path in (old_part, young_part, old_file, young_file):
        path.write_bytes(b"left behind")
    for path in (old_part, old_file):
        os.utime(path, (time.time() - 7200, time.time() - 7200))  # a killed run's, long ago
    await runner(buf, graph, tmp_path).prepare()
    assert not old_part.exists() and not old_file.exists()
    assert young_part.exists() and young_file.exists()  # another process's, maybe


async def test_a_killed_processs_leftovers_are_swept_by_the_live_ones(
        open_buffers, graph, tmp_path, monkeypatch):
    """Young when the others started (so spared), a killed process's partial download
    is swept once it is a lease old, without waiting for a restart."""
    monkeypatch.setattr(bridge_media, "IDLE_POLL", 0.05)
    (buf,) = await open_buffers(1)
    buf.media_sources = {"whatsapp": None}
    live = MediaRunner("whatsapp", fetcher(graph), buf,
                       MediaPolicy(str(tmp_path / "media"), lease=0.5))
    stop = asyncio.Event()
    task = asyncio.create_task(live.run(stop))
    try:
        left = tmp_path / "media" / "tmp" / "whatsapp-9-killed.part"
        await wait_until(left.parent.exists)
        left.write_bytes(b"half a photo")  # the other process is killed now
        await asyncio.sleep(0.2)
        assert left.exists()  # it may still be downloading: spared
        await wait_until(lambda: not left.exists(), timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_two_processes_claiming_at_once_never_take_one_media_job_both(open_buffers):
    """Each job is leased by one process: two claims at the same moment (both woken by
    appends, or polling) split the due jobs between them instead of both downloading."""
    first, second = await open_buffers(2)
    for buf in (first, second):
        buf.media_sources = {"whatsapp": None}
    await first.append([media_message(n, f"media-{n}") for n in range(1, 41)])
    taken: list[int] = []
    for _ in range(10):
        one, two = await asyncio.gather(first.media_claim("whatsapp", 4, 60),
                                        second.media_claim("whatsapp", 4, 60))
        taken += [job.message_id for job in one + two]
    assert len(taken) == len(set(taken)), "a media job leased by both processes"
    assert len(set(taken)) == 40
