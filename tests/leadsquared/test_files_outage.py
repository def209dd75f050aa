"""A files-host outage (mend69): a real `bridge run`, the Graph stand-in and the LeadSquared
simulator process over HTTP, File Upload answering a gateway's 503 page (simulator
break_endpoint, `POST /_sim/break`) for longer than max_attempts syncs.

Before: attachments.py recorded each failed upload as a counted failure of the file's
target, so after max_attempts syncs the photo was a dead target ('gave up attaching a file')
and never reached the lead's activity, although the outage ended; and its wait was not
aside, so the customer's later chats queued behind it. Now an upload or attach that fails
transiently (client.py's kinds: 5xx, gateway pages, timeouts, 429, an upload's lost answer)
is an outage's: not counted, given up only after retry_for (by the buffer at commit, as a
dead target, never a dead letter of the chat), and the chat's later batches pass it."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends import BACKENDS
from tests.processes import (
    BridgeProcess,
    GraphProcess,
    SimulatorProcess,
    buffer_section,
    eventually,
)
from tests.whatsapp import payloads as p
from tests.whatsapp.test_media_e2e import (
    ASHA,
    PHONE_ID,
    all_attachments,
    media_webhook,
    post,
    start_bridge,
)

FAST = {"rate_limit": "1000/0.05s", "bulk_rate_limit": "1000/0.05s"}  # short client backoff
MAX_ATTEMPTS = 2


@pytest.fixture
def graph(module_graph):
    return module_graph.fresh()


@pytest.fixture
def buffer(request, tmp_path):
    with buffer_section(getattr(request, "param", "sqlite"), tmp_path) as section:
        yield section


on_both_backends = pytest.mark.parametrize("buffer", BACKENDS, indirect=True)


def start(
    tmp_path: Path, graph: GraphProcess, lsq: SimulatorProcess, buffer: dict, retry_for: str
) -> BridgeProcess:
    sink = {"retry_cap": 0.5, "max_attempts": MAX_ATTEMPTS, "retry_for": retry_for, **FAST}
    return start_bridge(tmp_path, graph, lsq, section=buffer, sink=sink)


def sink_of(bridge: BridgeProcess) -> dict:
    (sink,) = [s for s in bridge.status()["sinks"] if s["sink"] == "leadsquared"]
    return sink


def file_targets(buffer: dict) -> list[tuple]:
    """(state, attempts, outages, transient, reason) of each attachment target."""
    query = (
        "SELECT state, attempts, outages, transient, reason FROM targets "
        "WHERE label LIKE 'attachment %'"
    )
    if "url" not in buffer:
        with sqlite3.connect(buffer["path"], timeout=30) as db:
            return db.execute(query).fetchall()
    return asyncio.run(_postgres_rows(buffer["url"], query))


async def _postgres_rows(url: str, query: str) -> list[tuple]:
    import asyncpg

    from bridge.buffer.postgres import split_schema

    dsn, schema = split_schema(url)
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        return [tuple(row) for row in await conn.fetch(query)]
    finally:
        await conn.close()


def send_photo(bridge: BridgeProcess, graph: GraphProcess, data: bytes) -> None:
    media_id = graph.upload(data, "image/jpeg", PHONE_ID)
    post(
        bridge,
        media_webhook(
            "wamid.photo", "image", media_id, "image/jpeg", data, caption="the crack in the tile"
        ),
    )


@on_both_backends
def test_a_files_host_down_past_max_attempts_attaches_the_photo_once_it_is_back(
    tmp_path, graph, lsq, buffer
):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    photo = os.urandom(40_000)
    lsq.admin("POST", "break", json={"endpoint": "Upload", "status": 503})
    bridge = start(tmp_path, graph, lsq, buffer, retry_for="10m")
    try:
        send_photo(bridge, graph, photo)
        (activity,) = eventually(lambda: lsq.activities(lead))  # the text waits for nothing
        assert "the crack in the tile" in activity["ActivityNote"]
        ((state, attempts, outages, transient, reason),) = eventually(
            lambda: [t for t in file_targets(buffer) if t[1] > 3 * MAX_ATTEMPTS], timeout=90
        )
        assert state == "failing" and outages == attempts and transient == 1, reason
        assert "503" in reason
        sink = sink_of(bridge)
        assert sink["dead_targets"] == 0 and sink["dead_letters"] == 0
        assert sink["failing_targets"] == 1
        # the customer writes again: the chat reaches the lead while the photo waits
        post(
            bridge,
            p.text_message("wamid.later", ASHA, "any news on the tile?", ts=int(time.time())),
        )
        eventually(
            lambda: any("any news on the tile" in a["ActivityNote"] for a in lsq.activities(lead)),
            timeout=20,
        )
        assert all_attachments(lsq, lead) == []
        lsq.admin("POST", "mend", json={"endpoint": "Upload"})
        (attached,) = eventually(lambda: all_attachments(lsq, lead), timeout=60)
        eventually(lambda: sink_of(bridge)["backlog"] == 0, timeout=60)
        sink = sink_of(bridge)
        assert sink["dead_targets"] == 0 and sink["dead_letters"] == 0
        assert sink["failing_targets"] == 0
    finally:
        bridge.stop()
    assert attached["Data"] == photo and attached["Activity"] == activity["Id"]
    assert len(all_attachments(lsq, lead)) == 1  # exactly once
    assert len(lsq.activities(lead)) == 2


@on_both_backends
def test_a_files_host_down_past_retry_for_is_a_dead_target_that_requeue_brings_back(
    tmp_path, graph, lsq, buffer
):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    photo = os.urandom(40_000)
    lsq.admin("POST", "break", json={"endpoint": "Upload", "status": 503})
    bridge = start(tmp_path, graph, lsq, buffer, retry_for="4s")
    try:
        send_photo(bridge, graph, photo)
        (activity,) = eventually(lambda: lsq.activities(lead))
        sink = eventually(
            lambda: (s := sink_of(bridge))["dead_targets"] and s["backlog"] == 0 and s, timeout=60
        )
        assert sink["dead_letters"] == 0, json.dumps(sink["dead_letter_sample"])  # chat landed
        (dead,) = sink["dead_target_sample"]
        assert dead["target"].startswith("attachment ")
        assert dead["reason"].startswith("leadsquared kept failing for "), dead["reason"]
        assert "503" in dead["reason"] and "requeue" in dead["reason"]
        assert all_attachments(lsq, lead) == []
        lsq.admin("POST", "mend", json={"endpoint": "Upload"})
        done = subprocess.run(
            [sys.executable, "-m", "bridge", "dead-letter", "requeue", "-c", str(bridge.config)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        (attached,) = eventually(lambda: all_attachments(lsq, lead), timeout=60)
        eventually(
            lambda: (s := sink_of(bridge))["backlog"] == 0 and not s["dead_targets"], timeout=60
        )
    finally:
        bridge.stop()
    assert attached["Data"] == photo and attached["Activity"] == activity["Id"]
    assert len(all_attachments(lsq, lead)) == 1 and len(lsq.activities(lead)) == 1
