"""Media fetching (issue 17): jobs queued with their message, fetched from the Graph
stand-in over real HTTP into content-addressed files, retried, dead-lettered, held."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import shutil
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from aiohttp import web

import bridge.media as bridge_media
from bridge.buffer import Buffer
from bridge.media import MediaPolicy, MediaRunner, sha256_matches
from bridge.model import Direction, Media, MediaFile, Message
from plugins.whatsapp.config import WhatsAppConfig
from plugins.whatsapp.media import NO_TOKEN, GraphMedia
from tests.backends import BACKENDS, execute, fresh_schema_url, query
from tests.helpers import free_port, wait_until

TOKEN = "graph-test-token"
PHONE_ID = "106540352242922"


async def upload(graph: str, data: bytes, mime: str = "image/jpeg") -> str:
    async with httpx.AsyncClient() as client:
        answer = await client.post(f"{graph}/_sim/media", content=data,
                                   params={"mime_type": mime, "phone_number_id": PHONE_ID})
    return answer.json()["id"]


async def sim_stats(graph: str) -> dict:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{graph}/_sim/stats")).json()


async def fault(graph: str, **knobs) -> None:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{graph}/_sim/faults", json=knobs)).raise_for_status()


def media_message(n: int, media_id: str, kind: str = "image", sha256: str | None = None,
                  filename: str | None = None) -> Message:
    return Message(source="whatsapp", provider_id=f"wamid.{n}", conversation="+919876543210",
                   account=PHONE_ID, direction=Direction.IN, sent_at=datetime.now(UTC),
                   kind=kind, text="my bill",
                   media=Media(id=media_id, mime_type="image/jpeg", sha256=sha256,
                               filename=filename))


def fetcher(graph: str, token: str | None = TOKEN) -> GraphMedia:
    return GraphMedia(WhatsAppConfig(verify_token="v", app_secret="s", access_token=token,
                                     graph_url=graph))


def runner_for(buf: Buffer, graph: str, tmp_path: Path, **policy) -> MediaRunner:
    settings = {"retry_base": 0.05, "retry_cap": 0.2, **policy}
    return MediaRunner("whatsapp", fetcher(graph), buf,
                       MediaPolicy(str(tmp_path / "media"), **settings))


async def file_of(buf: Buffer, provider_id: str):
    return next(m.file for m in await buf.messages() if m.provider_id == provider_id)


async def test_a_media_message_queues_one_job_in_its_commit_and_a_text_none(media_buffer):
    text = Message(source="whatsapp", provider_id="wamid.t", conversation="+919876543210",
                   account=PHONE_ID, direction=Direction.IN, sent_at=datetime.now(UTC),
                   kind="text", text="hi")
    await media_buffer.append([media_message(1, "111"), text])
    await media_buffer.append([media_message(1, "111")])  # a webhook retry
    rows = await query(media_buffer, "SELECT message_id, media_id, state FROM media")
    assert [(r[1], r[2]) for r in rows] == [("111", "pending")]
    assert (await file_of(media_buffer, "wamid.1")).state == "pending"
    assert (await file_of(media_buffer, "wamid.t")) is None


async def test_a_source_without_media_fetching_queues_nothing(buffer):
    await buffer.append([media_message(1, "111")])
    assert await query(buffer, "SELECT count(*) FROM media") == [(0,)]


async def test_fetched_file_is_stored_by_sha256_with_its_details(media_buffer, graph, tmp_path):
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    media_id = await upload(graph, data, "application/pdf")
    await media_buffer.append([media_message(1, media_id, "document", sha256=digest,
                                             filename="bill.pdf")])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    assert await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "fetched"
    assert file.path == str(tmp_path / "media" / digest[:2] / digest)
    assert Path(file.path).read_bytes() == data
    assert (file.size, file.sha256, file.mime_type, file.filename) == (
        len(data), digest, "application/pdf", "bill.pdf")
    assert list((tmp_path / "media" / "tmp").iterdir()) == []


@pytest.mark.parametrize("status", [404, 401, 403, 410])
async def test_an_expired_url_is_looked_up_again(media_buffer, graph, tmp_path, status):
    media_id = await upload(graph, b"voice note bytes", "audio/ogg")
    await media_buffer.append([media_message(1, media_id, "audio")])
    await fault(graph, url_ttl=-1, expired_status=status)  # every URL expired when issued
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "pending" and "refused twice" in file.reason
    stats = (await sim_stats(graph))
    assert stats["lookups"] == 2 and stats["refused"] == 2  # looked up again after refusal
    await fault(graph, url_ttl=300)
    await wait_until(runner.step, timeout=5)
    assert (await file_of(media_buffer, "wamid.1")).state == "fetched"


@pytest.mark.parametrize("status", [400, 404])
async def test_deleted_media_is_a_dead_letter_with_metas_reason(media_buffer, graph, tmp_path,
                                                                 status):
    await fault(graph, missing_status=status)
    media_id = await upload(graph, b"gone soon")
    async with httpx.AsyncClient() as client:
        (await client.delete(f"{graph}/_sim/media/{media_id}")).raise_for_status()
    await media_buffer.append([media_message(1, media_id)])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "dead"
    assert f"Object with ID '{media_id}' does not exist" in file.reason
    assert "(code 100)" in file.reason


async def test_a_404_page_without_a_graph_error_is_retried_not_dead(media_buffer, graph,
                                                                     tmp_path):
    """A proxy's HTML 404 (or a wrong graph_url) must not kill the photo: it is fetched
    once the lookup reaches Graph."""
    async def page(_: web.Request) -> web.Response:
        return web.Response(status=404, text="<html><h1>Not Found</h1></html>",
                            content_type="text/html")
    app = web.Application()
    app.router.add_get("/{tail:.*}", page)
    port = free_port()
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        media_id = await upload(graph, b"photo behind a proxy")
        await media_buffer.append([media_message(1, media_id)])
        wrong = runner_for(media_buffer, f"http://127.0.0.1:{port}", tmp_path)
        await wrong.prepare()
        await wrong.step()
        file = await file_of(media_buffer, "wamid.1")
        assert file.state == "pending" and "graph_url" in file.reason
    finally:
        await runner.cleanup()
    right = runner_for(media_buffer, graph, tmp_path)
    await right.prepare()
    await wait_until(right.step, timeout=5)
    assert (await file_of(media_buffer, "wamid.1")).state == "fetched"


async def test_an_outage_retries_with_backoff_then_fetches(media_buffer, graph, tmp_path):
    media_id = await upload(graph, b"photo")
    await media_buffer.append([media_message(1, media_id)])
    await fault(graph, outage=True)
    runner = runner_for(media_buffer, graph, tmp_path, retry_base=30, retry_cap=3600)
    await runner.prepare()
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "pending" and "Service temporarily unavailable" in file.reason
    (due,) = (await query(media_buffer, "SELECT next_attempt_at FROM media"))[0]
    assert due > datetime.now(UTC).timestamp() + 20  # backed off, not hammering
    assert not await runner.step()  # not due yet
    await fault(graph, outage=False)
    await execute(media_buffer, "UPDATE media SET next_attempt_at = 0")
    assert await runner.step()
    assert (await file_of(media_buffer, "wamid.1")).state == "fetched"


async def test_without_access_token_nothing_is_fetched_and_the_reason_is_kept(tmp_path, graph):
    buf = await Buffer.open(tmp_path / "b.db")
    try:
        source = fetcher(graph, token=None)
        assert source.hold_reason == NO_TOKEN
        buf.media_sources = {"whatsapp": source.hold_reason}
        await buf.append([media_message(1, await upload(graph, b"x"))])
        file = await file_of(buf, "wamid.1")
        assert file.state == "held" and "access_token is not set" in file.reason
        assert (await sim_stats(graph))["lookups"] == 0
    finally:
        await buf.close()


async def test_a_file_over_media_max_bytes_is_a_dead_letter(media_buffer, graph, tmp_path):
    await media_buffer.append([media_message(1, await upload(graph, b"x" * 5000))])
    runner = runner_for(media_buffer, graph, tmp_path, max_bytes=4096)
    await runner.prepare()
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "dead" and "buffer.media_max_bytes (4096 bytes)" in file.reason
    assert not list((tmp_path / "media").glob("??/*"))


async def test_a_webhook_sha256_that_disagrees_with_graphs_matching_one_is_logged_not_enforced(
        media_buffer, graph, tmp_path, caplog):
    """The webhook's sha256 is opaque [whatsapp-webhooks.md §4: "do not parse it"]; the
    lookup's, for the same id, named the bytes Graph serves. Enforcing the webhook's value
    refused the file at every try for 7 days (170 tries), then dead: the photo lost.
    (When the lookup states none, the webhook's value decides: test_media_transfer.)"""
    other = base64.b64encode(hashlib.sha256(b"the encrypted blob").digest()).decode()
    await media_buffer.append([media_message(1, await upload(graph, b"photo"), sha256=other)])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    with caplog.at_level("WARNING", logger="bridge.media"):
        await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "fetched" and file.sha256 == hashlib.sha256(b"photo").hexdigest()
    assert f"the webhook's sha256 {other} does not name the file" in caplog.text


def test_sha256_is_compared_as_hex_or_base64_and_opaque_text_is_no_evidence():
    digest = hashlib.sha256(b"abc").digest()
    assert sha256_matches(digest.hex(), digest)
    assert sha256_matches(digest.hex().upper(), digest)
    assert sha256_matches(base64.b64encode(digest).decode(), digest)
    assert not sha256_matches(hashlib.sha256(b"x").hexdigest(), digest)
    assert not sha256_matches(base64.b64encode(hashlib.sha256(b"x").digest()).decode(), digest)
    assert sha256_matches("ian\njM4k=", digest)  # a shape we cannot read proves nothing


async def test_prune_deletes_a_file_with_its_last_message(media_buffer, graph, tmp_path):
    data = b"shared bytes"
    await media_buffer.append([media_message(1, await upload(graph, data)),
                               media_message(2, await upload(graph, data))])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await runner.step()
    path = Path((await file_of(media_buffer, "wamid.1")).path)
    assert path == Path((await file_of(media_buffer, "wamid.2")).path) and path.exists()
    await execute(media_buffer, "DELETE FROM messages WHERE provider_id = 'wamid.1'")
    assert await media_buffer.forget_media() == []  # message 2 still holds the bytes
    assert path.exists()
    await media_buffer.prune(older_than=datetime.now(UTC).timestamp() + 60)
    assert not path.exists()
    assert await query(media_buffer, "SELECT count(*) FROM media") == [(0,)]


async def test_purging_a_person_deletes_their_files_and_keeps_anothers(
        media_buffer, graph, tmp_path):
    other = replace(media_message(3, await upload(graph, b"theirs")), conversation="+14155550100")
    await media_buffer.append([media_message(1, await upload(graph, b"mine")), other])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await runner.step()
    mine = Path((await file_of(media_buffer, "wamid.1")).path)
    theirs = Path((await file_of(media_buffer, "wamid.3")).path)
    assert mine.exists() and theirs.exists()
    dry = await media_buffer.purge_person(phone="+919876543210", dry_run=True)
    assert dry["media"] == 1 and mine.exists()
    found = await media_buffer.purge_person(phone="+919876543210")
    assert found["files"] == 1 and not mine.exists() and theirs.exists()
    assert await query(media_buffer, "SELECT count(*) FROM media") == [(1,)]


async def test_a_restarted_runner_clears_partial_downloads_and_unreferenced_files(
        media_buffer, graph, tmp_path):
    media = tmp_path / "media"
    (media / "tmp").mkdir(parents=True)
    (media / "tmp" / "whatsapp-7.part").write_bytes(b"half")
    stray = media / "ab" / ("ab" + "0" * 62)
    stray.parent.mkdir()
    stray.write_bytes(b"no job names me")
    await runner_for(media_buffer, graph, tmp_path).prepare()
    assert not (media / "tmp" / "whatsapp-7.part").exists() and not stray.exists()


async def test_a_media_directory_deleted_while_running_is_made_again(
        media_buffer, graph, tmp_path):
    """An operator clearing media_path (or a cleanup job) under a running bridge: the next
    download makes the directory again instead of failing until a restart."""
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    shutil.rmtree(tmp_path / "media")
    media_id = await upload(graph, b"photo bytes")
    await media_buffer.append([media_message(1, media_id)])
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert file.state == "fetched", file.reason
    assert Path(file.path).read_bytes() == b"photo bytes"


async def test_a_media_directory_not_writable_at_start_stops_no_fetching_for_good(
        media_buffer, graph, tmp_path, monkeypatch):
    """prepare() failing at start (media_path not writable yet: a mount not ready, a tmp
    that is not a directory) is retried: the runner does not die silently with every
    photo left pending until the next restart."""
    monkeypatch.setattr(bridge_media, "IDLE_POLL", 0.1)
    (tmp_path / "media").mkdir()
    (tmp_path / "media" / "tmp").write_bytes(b"in the way")
    media_id = await upload(graph, b"photo bytes")
    await media_buffer.append([media_message(1, media_id)])
    stop = asyncio.Event()
    task = asyncio.create_task(runner_for(media_buffer, graph, tmp_path).run(stop))
    await asyncio.sleep(0.5)
    (tmp_path / "media" / "tmp").unlink()  # mended
    try:
        await wait_until(lambda: _fetched(media_buffer, "wamid.1"), timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _fetched(buf: Buffer, provider_id: str) -> bool:
    return (await file_of(buf, provider_id)).state == "fetched"


@pytest.mark.parametrize("meta", [{"sha256": 123}, {"mime_type": 5},
                                  {"mime_type": ["image/png"], "sha256": {"hex": "ab"}}])
async def test_a_lookup_answer_with_fields_of_the_wrong_type_still_stores_the_file(
        media_buffer, serve, tmp_path, meta):
    """A Graph-like API (a proxy, a provider's copy of the Media API) answering sha256 or
    mime_type as something other than text: those fields say nothing, the file is stored
    with the webhook's type (was: retried for a week on "'int' object has no attribute
    'strip'" or a database binding error, or stored with the MIME type '5')."""
    async def lookup(request: web.Request) -> web.Response:
        return web.json_response({"url": f"http://{request.host}/file", "id": "1", **meta})

    async def download(request: web.Request) -> web.Response:
        return web.Response(body=b"photo bytes", content_type="image/jpeg")

    app = web.Application()
    app.add_routes([web.get("/v25.0/{id}", lookup), web.get("/file", download)])
    runner = runner_for(media_buffer, await serve(app), tmp_path)
    await runner.prepare()
    await media_buffer.append([media_message(1, "1")])
    await runner.step()
    file = await file_of(media_buffer, "wamid.1")
    assert (file.state, file.mime_type, file.reason) == ("fetched", "image/jpeg", None)
    assert Path(file.path).read_bytes() == b"photo bytes"


@pytest.mark.parametrize(("file", "note"), [
    (None, ""),
    (MediaFile("pending", mime_type="application/pdf"), "[file bill.pdf follows]"),
    (MediaFile("fetched", path="/m/ab/x", mime_type="application/pdf", size=2048,
               sha256="ab" * 32), "[file bill.pdf, 2.0 KB]"),
    (MediaFile("held", reason=NO_TOKEN),
     "[file not fetched: plugins.whatsapp.access_token is not set]"),
    (MediaFile("dead", reason="Graph API: Object with ID '9' does not exist (code 100)"),
     "[file not available: Graph API: Object with ID '9' does not exist]"),
])
def test_the_transcript_line_says_what_became_of_the_file(file, note):
    from bridge.render import file_note

    message = replace(media_message(1, "9", "document", filename="bill.pdf"), file=file)
    assert file_note(message) == note


def test_a_file_sent_without_a_name_is_named_by_kind_and_message_the_same_before_and_after():
    from bridge.render import file_name

    fetched = replace(media_message(1, "9"), file=MediaFile("fetched", path="/p",
                      mime_type="image/jpeg", size=1, sha256="cd" * 32))
    pending = replace(fetched, file=MediaFile("pending", mime_type="image/jpeg"))
    tag = "".join(c for c in fetched.provider_id if c.isalnum())[-12:]
    assert file_name(fetched) == file_name(pending) == f"image-{tag}.jpg"


async def test_status_and_metrics_count_media_per_source_with_reasons_and_bytes(
        media_buffer, graph, tmp_path):
    from bridge.metrics import Metrics
    from bridge.status import buffer_report

    gone = await upload(graph, b"x")
    async with httpx.AsyncClient() as client:
        await client.delete(f"{graph}/_sim/media/{gone}")
    await media_buffer.append([media_message(1, await upload(graph, b"12345")),
                               media_message(2, await upload(graph, b"12345")),
                               media_message(3, gone)])
    runner = runner_for(media_buffer, graph, tmp_path)
    await runner.prepare()
    await runner.step()
    await media_buffer.append([media_message(4, "not fetched yet")])
    media = (await buffer_report(media_buffer))["media"]["whatsapp"]
    assert (media["fetched"], media["dead"], media["pending"], media["bytes"]) == (2, 1, 1, 5)
    assert any("does not exist" in reason for reason in media["reasons"])
    metrics = Metrics(process=False)
    body = (await metrics.render(media_buffer))[0].decode()
    assert 'chatbridge_media_files{source="whatsapp",state="fetched"} 2.0' in body
    assert 'chatbridge_media_files{source="whatsapp",state="dead"} 1.0' in body
    assert 'chatbridge_media_bytes{source="whatsapp"} 5.0' in body


async def test_admin_reset_puts_the_stand_in_back_as_started_dropping_webhooks_to_send(
        graph, serve, tmp_path):
    """POST /_sim/reset (test tooling: one stand-in process serves a module's tests): media
    and their files, faults, counters, the coexistence settings, webhook target, syncs asked
    for and webhooks still to send are gone, as in a new process."""
    import asyncio
    import time

    from aiohttp import web

    received: list[bytes] = []

    async def webhook(request: web.Request) -> web.Response:
        received.append(await request.read())
        return web.Response()

    hook_app = web.Application()
    hook_app.router.add_post("/hook", webhook)
    hook = await serve(hook_app)
    media_id = await upload(graph, b"before the reset")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    sync = {"messaging_product": "whatsapp", "sync_type": "smb_app_state_sync"}
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{graph}/v25.0/{media_id}", headers=auth)).status_code == 200
        await fault(graph, outage=False, url_ttl=1, expired_status=410, slow_bytes_per_s=10)
        (await client.post(f"{graph}/_sim/webhook",
                           json={"url": f"{hook}/hook", "app_secret": "s"})).raise_for_status()
        (await client.post(f"{graph}/_sim/coexistence",
                           json={"onboarded_hours_ago": 10, "share_history": "decline",
                                 "delay": 0.5, "refusal_code": 7})).raise_for_status()
        asked = await client.post(f"{graph}/v25.0/{PHONE_ID}/smb_app_data", json=sync,
                                  headers=auth)
        assert asked.status_code == 200
        await fault(graph, outage=True)
        answer = await client.post(f"{graph}/_sim/reset")
        assert answer.status_code == 200
        assert answer.json() == {"lookups": 0, "downloads": 0, "refused": 0, "media": 0,
                                 "outage": False, "url_ttl": 300.0, "expired_status": 404,
                                 "missing_status": 400}
        assert not (tmp_path / "graph" / media_id).exists()
        gone = await client.get(f"{graph}/v25.0/{media_id}", headers=auth)
        assert gone.status_code == 400 and gone.json()["error"]["error_subcode"] == 33
        report = (await client.get(f"{graph}/_sim/coexistence")).json()
        assert report["share_history"] == "accept" and report["webhook_url"] is None
        assert report["requested"] == [] and report["sent"] == []
        assert abs(report["onboarded_at"] - time.time()) < 60
        await asyncio.sleep(0.8)  # past the dropped request's delay: nothing was sent
        assert received == []
        again = await client.post(f"{graph}/v25.0/{PHONE_ID}/smb_app_data", json=sync,
                                  headers=auth)
        assert again.status_code == 200  # asked once only: forgotten by the reset


@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_hurry_probes_one_waiting_fetch_then_brings_the_others_forward(
        backend, graph, tmp_path):
    """sync-now (MediaRunner.hurry) on both engines: the first waiting retry is due now;
    only when it is fetched do the others follow, each once; a hurry right after the last
    one brings nothing forward."""
    async with AsyncExitStack() as stack:
        target = str(tmp_path / "b.db") if backend == "sqlite" else \
            await stack.enter_async_context(fresh_schema_url())
        buf = await Buffer.open(target)
        stack.push_async_callback(buf.close)
        buf.media_sources = {"whatsapp": None}
        ids = [await upload(graph, b"photo %d" % n) for n in range(3)]
        await buf.append([media_message(n, media_id) for n, media_id in enumerate(ids)])
        await fault(graph, outage=True)
        runner = runner_for(buf, graph, tmp_path, retry_base=600, retry_cap=3600)
        await runner.prepare()
        await runner.step()  # each tried once: all wait ten minutes
        assert not await runner.step()
        runner.hurry()
        assert await runner.step()  # the probe: one fetch, failing again
        assert sorted(r[0] for r in await query(buf, "SELECT attempts FROM media")) == [1, 1, 2]
        await fault(graph, outage=False)
        runner.hurry()  # within retry_base of the last: shared with it
        assert not await runner.step()
        runner._hurried_at -= 600  # as if retry_base had passed
        runner.hurry()
        assert await runner.step()  # the probe, fetched: the others are due now
        assert await runner.step()
        states = await query(buf, "SELECT state FROM media")
        assert sorted(r[0] for r in states) == ["fetched"] * 3


async def test_bridge_status_text_names_the_files_waiting_and_why(media_buffer):
    """`bridge status` (the text report) shows each source's files by state and why some
    wait: it showed none, so a bridge without access_token said nothing of its photos
    outside the JSON."""
    from bridge.status import buffer_report
    from bridge.textreport import render_status
    from plugins.whatsapp.media import NO_TOKEN

    media_buffer.media_sources = {"whatsapp": NO_TOKEN}  # this bridge cannot fetch
    await media_buffer.append([media_message(1, "m-1"), media_message(2, "m-2")])
    text = render_status(await buffer_report(media_buffer))
    assert "files of whatsapp: 0 fetched, 0 waiting, 2 held" in text
    assert f"    2 × {NO_TOKEN}" in text
