"""A file that uploads slower than the delivery may take (adv67): a real `bridge run`, the
Graph stand-in and the LeadSquared simulator over HTTP, the files host reading the upload
at a slow uplink's pace (knob upload_rate).

The upload ran inside deliver(): deliver_timeout cut the whole delivery, every message of
the batch was retried as a CRM outage ('sink timed out'), the file was uploaded again each
try, and after retry_for the chat, whose text had landed, went to dead letter as 'kept
failing'. The upload now gets what is left of the delivery's time less one call's timeout
(for Attachment/Add); cut there, it is the attachment's failed try, not the chat's."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.processes import BridgeProcess, GraphProcess, SimulatorProcess, eventually
from tests.whatsapp.test_media_e2e import (
    PHONE_ID,
    all_attachments,
    media_webhook,
    post,
    start_bridge,
)

SIZE, RATE = 12_000_000, 1_200_000  # a 10-s upload, the bytes flowing all along
CALL, DELIVER = 2.0, 6.0  # the sink's timeout and deliver_timeout, seconds


@pytest.fixture
def graph(module_graph):
    return module_graph.fresh()


def start(tmp_path: Path, graph: GraphProcess, lsq: SimulatorProcess) -> BridgeProcess:
    return start_bridge(tmp_path, graph, lsq, sink={
        "timeout": f"{CALL:g}s", "deliver_timeout": f"{DELIVER:g}s", "lease": "8s",
        "max_attempts": 2, "retry_for": "10s"})


def sink_of(bridge: BridgeProcess) -> dict:
    (sink,) = [s for s in bridge.status()["sinks"] if s["sink"] == "leadsquared"]
    return sink


def test_a_file_too_slow_to_upload_is_a_dead_attachment_never_a_dead_chat(tmp_path, graph, lsq):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    data = os.urandom(SIZE)
    media_id = graph.upload(data, "video/mp4", PHONE_ID)
    lsq.configure(upload_rate=RATE)
    bridge = start(tmp_path, graph, lsq)
    try:
        post(
            bridge,
            media_webhook(
                "wamid.v", "video", media_id, "video/mp4", data, caption="the leak under the sink"
            ),
        )
        (activity,) = eventually(lambda: lsq.activities(lead))
        assert "the leak under the sink" in activity["ActivityNote"]
        started = time.monotonic()
        sink = eventually(  # settled: the chat or its file given up
            lambda: (
                (s := sink_of(bridge))["backlog"] == 0
                and (s["dead_letters"] or s["dead_targets"])
                and s
            ),
            timeout=90,
        )
        assert sink["dead_letters"] == 0, json.dumps(sink["dead_letter_sample"])  # the chat landed
        assert sink["dead_targets"] == 1
        (dead,) = sink["dead_target_sample"]
        assert "did not finish" in json.dumps(dead) and "deliver_timeout" in json.dumps(dead)
        # a timeout is an outage's failure (as the client takes one): given up after
        # retry_for, not max_attempts (mend69)
        assert dead["reason"].startswith("leadsquared kept failing for "), dead["reason"]
        assert time.monotonic() - started < 60
        assert all_attachments(lsq, lead) == []
        assert len(lsq.activities(lead)) == 1
    finally:
        bridge.stop()
