"""Media cannot stop ingest (issue 25, point 2), through real processes: `bridge run` and the
Graph stand-in. A customer's documents that would pass buffer.media_max_total, or take the
disk under buffer.media_min_free, are refused before they are written: dead media whose
reason names the key to raise, while text webhooks and /healthz keep answering 200."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from tests import oneshot
from tests.processes import eventually
from tests.whatsapp import payloads as p
from tests.whatsapp.test_media_e2e import (
    ASHA,
    PHONE_ID,
    media_rows,
    media_webhook,
    post,
    start_bridge,
)


@pytest.fixture
def graph(module_graph):
    """The module's Graph stand-in, reset (POST /_sim/reset): each test starts clean."""
    return module_graph.fresh()


def still_ingesting(bridge, n: int) -> None:
    """A text webhook is stored (200) and /healthz answers 200."""
    post(bridge, p.text_message(f"wamid.text{n}", ASHA, f"still here {n}", ts=int(time.time())))
    assert oneshot.get(f"{bridge.url}/healthz", timeout=10).status_code == 200


def test_past_media_max_total_a_document_is_dead_media_and_texts_still_get_200(tmp_path, graph):
    first, second = os.urandom(700_000), os.urandom(700_000)
    bridge = start_bridge(tmp_path, graph, media_max_total="1MB", media_max_bytes="1MB")
    try:
        post(bridge, media_webhook("wamid.doc1", "document", graph.upload(
            first, "application/pdf", PHONE_ID), "application/pdf", first))
        eventually(lambda: media_rows(tmp_path)["wamid.doc1"][0] == "fetched")
        post(bridge, media_webhook("wamid.doc2", "document", graph.upload(
            second, "application/pdf", PHONE_ID), "application/pdf", second))
        state, path, _, reason = eventually(
            lambda: (r := media_rows(tmp_path)["wamid.doc2"])[0] == "dead" and r)
        assert path is None and "buffer.media_max_total (1 MB)" in reason, reason
        still_ingesting(bridge, 1)
        stored = [f for f in (tmp_path / "media").rglob("*") if f.is_file()]
        assert [f.stat().st_size for f in stored] == [len(first)]
    finally:
        bridge.stop()


def test_under_media_min_free_nothing_is_fetched_and_texts_still_get_200(tmp_path, graph):
    """A floor above the disk's free space: as a disk nearly full would be."""
    data = os.urandom(200_000)
    bridge = start_bridge(tmp_path, graph, media_min_free="1000TB")
    try:
        still_ingesting(bridge, 1)
        post(bridge, media_webhook("wamid.doc", "document", graph.upload(
            data, "application/pdf", PHONE_ID), "application/pdf", data))
        state, _, _, reason = eventually(
            lambda: (r := media_rows(tmp_path)["wamid.doc"])[0] == "dead" and r)
        assert "under buffer.media_min_free (1000 TB)" in reason, reason
        still_ingesting(bridge, 2)
        assert not [f for f in (tmp_path / "media").rglob("*") if f.is_file()]
    finally:
        bridge.stop()


def test_a_media_path_gone_unusable_retries_with_the_reason_and_no_stray_traceback(
        tmp_path, graph):
    """buffer.media_path replaced under a running bridge (a mount gone, a path now a file):
    each try fails with the OS error as its reason, texts keep their 200, and the log holds
    no 'Task exception was never retrieved' (the cleanup of the partial file raised it
    from every failed try: only FileNotFoundError was expected there)."""
    data = os.urandom(20_000)
    media = tmp_path / "media"
    bridge = start_bridge(tmp_path, graph, media_path=str(media), media_max_attempts=3)
    try:
        still_ingesting(bridge, 1)
        shutil.rmtree(media, ignore_errors=True)
        media.write_bytes(b"")  # a file where the directory was: nothing can be written
        post(bridge, media_webhook("wamid.photo", "image", graph.upload(
            data, "image/jpeg", PHONE_ID), "image/jpeg", data))
        state, _, _, reason = eventually(
            lambda: (r := media_rows(tmp_path)["wamid.photo"])[0] == "dead" and r)
        assert "gave up after 3 attempts" in reason and "NotADirectoryError" in reason, reason
        still_ingesting(bridge, 2)
    finally:
        bridge.stop()
    log = open(bridge.log.name, encoding="utf-8", errors="replace").read()
    assert "never retrieved" not in log and "Traceback" not in log, log[-3000:]
