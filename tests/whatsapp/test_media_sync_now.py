"""`bridge sync-now` and the media fetches that wait for their backoff, with real processes
(`bridge run`, the Graph stand-in): once Graph is back, a person asking for a sync gets
the files now, not after the backoff; while Graph is still down, the ask costs one try of
one file, never a try of every file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from tests.processes import BridgeProcess, GraphProcess, eventually
from tests.whatsapp.test_media_e2e import media_webhook, post, start_bridge

BACKOFF = {"media_retry_base": "120s", "media_retry_cap": "1h"}  # far beyond every wait here
WAITING = 3


@pytest.fixture
def graph(module_graph):
    return module_graph.fresh()


def jobs(tmp_path: Path) -> dict[str, tuple]:
    """provider id -> (state, attempts, next_attempt_at) straight from the buffer file."""
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        rows = db.execute("SELECT m.provider_id, f.state, f.attempts, f.next_attempt_at "
                          "FROM media f JOIN messages m ON m.id = f.message_id").fetchall()
    return {row[0]: row[1:] for row in rows}


def waiting_for_graph(tmp_path: Path, graph: GraphProcess) -> BridgeProcess:
    """A bridge whose WAITING photos each failed once for a Graph outage and wait for a
    retry two minutes away."""
    ids = [graph.upload(b"photo %d" % n, "image/jpeg") for n in range(WAITING)]
    graph.faults(outage=True)
    bridge = start_bridge(tmp_path, graph, **BACKOFF)
    post(bridge, *(media_webhook(f"wamid.p{n}", "image", media_id, "image/jpeg",
                                 b"photo %d" % n) for n, media_id in enumerate(ids)))
    eventually(lambda: [a for _, a, _ in jobs(tmp_path).values()] == [1] * WAITING,
               timeout=30)
    assert all(state == "pending" and due > time.time() + 60
               for state, _, due in jobs(tmp_path).values())
    return bridge


def test_sync_now_fetches_the_files_waiting_for_a_retry_once_graph_is_back(tmp_path, graph):
    bridge = waiting_for_graph(tmp_path, graph)
    try:
        graph.faults(outage=False)
        bridge.sync_now()  # no sink at all: the files are the whole of the sync
        eventually(lambda: {s for s, _, _ in jobs(tmp_path).values()} == {"fetched"},
                   timeout=30)
    finally:
        bridge.stop()


def test_sync_now_against_a_graph_still_down_tries_one_file_and_the_others_keep_waiting(
        tmp_path, graph):
    bridge = waiting_for_graph(tmp_path, graph)
    try:
        before = jobs(tmp_path)
        for _ in range(5):  # a person pressing it again and again
            bridge.sync_now()
        probed = eventually(lambda: [k for k, (_, a, _) in jobs(tmp_path).items() if a == 2],
                            timeout=30)
        assert len(probed) == 1
        deadline = time.monotonic() + 2.0  # no second try of anything, nothing else moved
        while time.monotonic() < deadline:
            now = jobs(tmp_path)
            assert {k: v for k, v in now.items() if k not in probed} == \
                {k: v for k, v in before.items() if k not in probed}
            assert now[probed[0]][1] == 2 and now[probed[0]][2] > time.time() + 60
            time.sleep(0.1)
    finally:
        bridge.stop()
