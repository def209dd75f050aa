"""Two bridge processes on one PostgreSQL buffer share buffer.media_path (README: the one
that fetches a photo is not always the one that posts it). A process starting while the
other downloads (a rolling restart) must not damage that download's file."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

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
