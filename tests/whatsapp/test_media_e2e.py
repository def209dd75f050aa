"""Media end to end with real processes (issue 17): `bridge run`, the Graph stand-in and
the LeadSquared simulator; webhooks in, files fetched byte-identical, texts never wait."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from pathlib import Path

import pytest

from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port
from tests.processes import (
    MEDIA_GRAPH_TOKEN,
    BridgeProcess,
    GraphProcess,
    SimulatorProcess,
    eventually,
)
from tests.whatsapp import payloads as p

SECRET, VERIFY = "media-app-secret", "media-verify"
GRAPH_TOKEN = MEDIA_GRAPH_TOKEN  # module_graph's (tests/conftest.py)
ASHA = "919876543210"
PHONE_ID = p.PHONE_ID


@pytest.fixture
def graph(module_graph):
    """The module's Graph stand-in, reset (POST /_sim/reset): each test starts clean."""
    return module_graph.fresh()


def start_bridge(tmp_path: Path, graph: GraphProcess, lsq: SimulatorProcess | None = None,
                 *, section: dict | None = None, sink: dict | None = None,
                 **buffer: object) -> BridgeProcess:
    """`bridge run` on the Graph stand-in (and the simulator): `section` the buffer section
    (a SQLite file in tmp_path unless given), `sink` LeadSquared settings over these."""
    port = free_port()
    plugins: dict = {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                  "access_token": GRAPH_TOKEN, "graph_url": graph.url}}
    if lsq is not None:
        plugins["leadsquared"] = {"host": lsq.url, "access_key": "e2e-access",
                                  "secret_key": "e2e-secret", "sync_interval": "1s",
                                  "retry_base": 0.2, "retry_cap": 1,
                                  # a killed bridge's batch waits for a write it may have
                                  # had in flight: its claim + 5 s + deliver_timeout + 3 x
                                  # timeout at most (the defaults: minutes); calls here
                                  # answer within 3 s
                                  "timeout": "4s", "deliver_timeout": "15s", "lease": "16s",
                                  **(sink or {})}
    config = {"server": {"port": port},
              "buffer": {**(section or {"path": str(tmp_path / "bridge.db")}),
                         "media_retry_base": 0.2, "media_retry_cap": 0.5, **buffer},
              "plugins": plugins}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return BridgeProcess(path, port).start()


def post(bridge: BridgeProcess, *messages: dict) -> None:
    change = p.message_change(list(messages), contacts=[p.contact(ASHA, "Asha Rao")])
    body = json.dumps(p.envelope(change)).encode()
    response = oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
    assert response.status_code == 200, response.text


def media_webhook(mid: str, kind: str, media_id: str, mime: str, data: bytes | None = None,
                  **fields: object) -> dict:
    sha = hashlib.sha256(data).hexdigest() if data is not None else "a4f3c8e1b2d9"
    obj = {"id": media_id, "mime_type": mime, "sha256": sha, **fields}
    return p.base(mid, ASHA, kind, ts=int(time.time()), **{kind: obj})


def media_rows(tmp_path: Path) -> dict[str, tuple]:
    """provider id -> (state, path, sha256, reason) straight from the buffer file."""
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        rows = db.execute("SELECT m.provider_id, f.state, f.path, f.sha256, f.reason FROM media f"
                          " JOIN messages m ON m.id = f.message_id").fetchall()
    return {row[0]: row[1:] for row in rows}


def test_an_image_a_voice_note_and_a_pdf_arrive_as_attachments_byte_identical(
        tmp_path, graph, lsq):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    files = {"wamid.img": ("image", "image/jpeg", os.urandom(200_000), {"caption": "my bill"}),
             "wamid.voice": ("audio", "audio/ogg; codecs=opus", os.urandom(50_000),
                             {"voice": True}),
             "wamid.pdf": ("document", "application/pdf", b"%PDF-1.4\n" + os.urandom(400_000),
                           {"filename": "invoice.pdf"})}
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        for mid, (kind, mime, data, extra) in files.items():
            media_id = graph.upload(data, mime, PHONE_ID)
            post(bridge, media_webhook(mid, kind, media_id, mime, data, **extra))
        rows = eventually(lambda: (r := media_rows(tmp_path)) and len(r) == 3
                          and all(v[0] == "fetched" for v in r.values()) and r)
        for mid, (_, _, data, _) in files.items():
            state, path, sha, _ = rows[mid]
            assert Path(path).read_bytes() == data
            assert sha == hashlib.sha256(data).hexdigest()
        attached = eventually(lambda: (found := all_attachments(lsq, lead))
                              and len(found) == 3 and found)
        assert sorted(a["Data"] for a in attached) == sorted(f[2] for f in files.values())
        assert "invoice.pdf" in {a["AttachmentName"] for a in attached}
        notes = " ".join(a["ActivityNote"] for a in lsq.activities(lead))
        for a in attached:
            assert f"[file {a['AttachmentName']}" in notes  # the line names the attachment
    finally:
        bridge.stop()


def backlog(bridge: BridgeProcess) -> int:
    (sink,) = [s for s in bridge.status()["sinks"] if s["sink"] == "leadsquared"]
    return sink["backlog"]


def all_attachments(lsq: SimulatorProcess, lead: str) -> list[dict]:
    return [dict(attachment, Activity=activity["Id"]) for activity in lsq.activities(lead)
            for attachment in lsq.attachments(activity["Id"])]


def test_sigkill_during_an_upload_loses_nothing_and_attaches_nothing_twice(
        tmp_path, graph, lsq):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    data = b"%PDF-1.4\n" + os.urandom(300_000)
    media_id = graph.upload(data, "application/pdf", PHONE_ID)
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        eventually(lambda: bridge.status())
        lsq.configure(latency=3.0)  # every call, the upload too, answers after 3 s
        post(bridge, media_webhook("wamid.doc", "document", media_id, "application/pdf", data,
                                   filename="contract.pdf"))
        eventually(lambda: any(c["path"] == "/File/Upload" for c in lsq.admin("GET", "calls")))
        bridge.kill()  # mid-upload: the text is posted, the attach never sent
        assert not any(c["path"].endswith("Attachment/Add") for c in lsq.admin("GET", "calls"))
        lsq.configure(latency=0.0)
        bridge.start()
        eventually(lambda: all_attachments(lsq, lead), timeout=60)
        eventually(lambda: backlog(bridge) == 0)
        attached = all_attachments(lsq, lead)
        assert [a["Data"] for a in attached] == [data]
        assert len(lsq.activities(lead)) == 1  # the text once, the file once
    finally:
        bridge.stop()


def test_a_graph_outage_delays_only_files_and_a_deleted_id_ends_with_metas_reason(
        tmp_path, graph, lsq):
    lead = lsq.add_lead(FirstName="Asha", LastName="Rao", Mobile="+91-9876543210")
    photo = os.urandom(20_000)
    photo_id = graph.upload(photo, "image/jpeg", PHONE_ID)
    deleted_id = graph.upload(b"soon gone", "image/jpeg", PHONE_ID)
    graph.delete(deleted_id)
    graph.faults(outage=True)
    bridge = start_bridge(tmp_path, graph, lsq)
    try:
        post(bridge, p.text_message("wamid.t1", ASHA, "here is my bill", ts=int(time.time())),
             media_webhook("wamid.p1", "image", photo_id, "image/jpeg", photo))
        activities = eventually(lambda: lsq.activities(lead))  # the text lands meanwhile
        note = activities[0]["ActivityNote"]
        assert "here is my bill" in note and "follows]" in note
        assert media_rows(tmp_path)["wamid.p1"][0] == "pending"
        assert "Service temporarily unavailable" in media_rows(tmp_path)["wamid.p1"][3]
        graph.faults(outage=False)
        state, path, _, _ = eventually(lambda: (r := media_rows(tmp_path)["wamid.p1"])[0]
                                       == "fetched" and r)
        assert Path(path).read_bytes() == photo
        (attached,) = eventually(lambda: all_attachments(lsq, lead))  # the file follows
        (named,) = [a for a in activities if "follows]" in a["ActivityNote"]]
        assert attached["Data"] == photo and attached["Activity"] == named["Id"]
        assert len(lsq.activities(lead)) == len(activities)  # the text was not posted again

        post(bridge, media_webhook("wamid.gone", "image", deleted_id, "image/jpeg"),
             p.text_message("wamid.t2", ASHA, "did you get it?", ts=int(time.time())))
        state, _, _, reason = eventually(lambda: (r := media_rows(tmp_path).get("wamid.gone"))
                                         and r[0] == "dead" and r)
        assert f"Object with ID '{deleted_id}' does not exist" in reason
        eventually(lambda: any("did you get it?" in a["ActivityNote"]
                               for a in lsq.activities(lead)))
    finally:
        bridge.stop()


def test_sigkill_during_a_download_loses_nothing(tmp_path, graph):
    data = os.urandom(600_000)
    media_id = graph.upload(data, "application/pdf", PHONE_ID)
    graph.faults(slow_bytes_per_s=200_000)  # ~3 s per download
    bridge = start_bridge(tmp_path, graph)
    parts = tmp_path / "media" / "tmp"
    try:
        post(bridge, media_webhook("wamid.doc", "document", media_id, "application/pdf", data,
                                   filename="contract.pdf"))
        eventually(lambda: parts.exists() and any(f.stat().st_size for f in parts.iterdir()))
        bridge.kill()
        assert media_rows(tmp_path)["wamid.doc"][0] == "pending"
        graph.faults(slow_bytes_per_s=0)
        bridge.start()
        state, path, _, _ = eventually(lambda: (r := media_rows(tmp_path)["wamid.doc"])[0]
                                       == "fetched" and r)
        assert Path(path).read_bytes() == data
        assert list(parts.iterdir()) == []
        assert [f.name for f in (tmp_path / "media").glob("??/*")] == [
            hashlib.sha256(data).hexdigest()]
    finally:
        bridge.stop()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("megabytes", [
    int(os.environ.get("CHATBRIDGE_MEDIA_MB", "40")),
    pytest.param(100, marks=pytest.mark.soak),
])
def test_memory_stays_flat_while_fetching_a_large_document(tmp_path, graph, megabytes):
    big = tmp_path / "big.pdf"
    with open(big, "wb") as handle:
        for _ in range(megabytes):
            handle.write(os.urandom(1024 * 1024))
    media_id = graph.upload(big, "application/pdf", PHONE_ID)
    bridge = start_bridge(tmp_path, graph)
    try:
        small = graph.upload(b"warm-up", "image/jpeg", PHONE_ID)  # same code paths, warm
        post(bridge, media_webhook("wamid.small", "image", small, "image/jpeg", b"warm-up"))
        eventually(lambda: media_rows(tmp_path)["wamid.small"][0] == "fetched")
        before = peak_rss_kb(bridge.proc.pid)
        digest = hashlib.sha256(big.read_bytes()).hexdigest()
        post(bridge, media_webhook("wamid.big", "document", media_id, "application/pdf",
                                   filename="big.pdf") | {"document": {
                                       "id": media_id, "mime_type": "application/pdf",
                                       "sha256": digest, "filename": "big.pdf"}})
        eventually(lambda: media_rows(tmp_path)["wamid.big"][0] == "fetched", timeout=120)
        growth_mb = (peak_rss_kb(bridge.proc.pid) - before) / 1024
        print(f"peak RSS grew {growth_mb:.1f} MB fetching {megabytes} MB")
        assert growth_mb < 16, f"peak RSS grew {growth_mb:.1f} MB for a {megabytes} MB file"
    finally:
        bridge.stop()
