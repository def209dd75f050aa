"""A stored file that went missing (media_path deleted or restored from an older backup
while the bridge runs) is fetched again when a sink claims its message, instead of being
offered as fetched: the sink's upload then failed ('the stored file cannot be read'), a
dead target no requeue could mend (the media job said 'fetched', so `requeue --media`
did not touch it), and the photo never reached the CRM."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bridge.media import MediaPolicy, MediaRunner
from plugins.whatsapp.graph_simulator import create_graph_app
from tests.whatsapp.test_media import TOKEN, fetcher, media_message, upload


@pytest.fixture
async def graph(tmp_path, serve) -> str:
    (tmp_path / "graph").mkdir()
    return await serve(create_graph_app(TOKEN, tmp_path / "graph"))


async def test_a_missing_file_is_fetched_again_when_its_message_is_claimed(
        buffer, graph, tmp_path):
    buffer.media_sources = {"whatsapp": None}
    await buffer.install_sinks(["crm"])
    runner = MediaRunner("whatsapp", fetcher(graph), buffer,
                         MediaPolicy(str(tmp_path / "media"), retry_base=0.05))
    await runner.prepare()
    await buffer.append([media_message(1, await upload(graph, b"the bill, photographed"))])
    assert await runner.step()
    shutil.rmtree(tmp_path / "media")  # gone before the sink took it
    (claim,) = await buffer.claim("crm", 10, 60)
    (message,) = claim.batch.messages
    assert message.file.state == "pending"  # the sink waits for it, as for any file
    assert await runner.step()  # fetched again
    (stored,) = [m.file for m in await buffer.messages()]
    assert stored.state == "fetched"
    assert Path(stored.path).read_bytes() == b"the bill, photographed"
