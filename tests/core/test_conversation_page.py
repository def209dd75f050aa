"""The conversation page, its buttons, the charts and the page's accessible structure."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import aiohttp

from bridge.contracts import Outcome
from bridge.state import BRIDGE
from tests.backends import execute, query
from tests.helpers import RecordingSink, wait_until

ASHA = "+919876543210"


class LedgerSink(RecordingSink):
    """Posts each batch as one CRM activity (ledger: batch key -> ACT-n) on lead LEAD-1;
    refuses messages whose text says "poison" until `cured`."""

    def __init__(self) -> None:
        super().__init__("crm", max_attempts=1)
        self.cured = False
        self.posted = 0

    async def deliver(self, batch):
        self.batches.append(batch)
        batch.record_id = "LEAD-1"
        outcomes = [Outcome.rejected("CRM says: note too long")
                    if "poison" in m.text and not self.cured else Outcome.delivered()
                    for m in batch.messages]
        if any(o.kind == "delivered" for o in outcomes):
            self.posted += 1
            batch.remember(batch.key, f"ACT-{self.posted}")
        self.delivered += [m.provider_id for m, o in zip(batch.messages, outcomes, strict=True)
                           if o.kind == "delivered"]
        return outcomes

    def record_url(self, record_id):
        return f"https://crm.example/leads/{record_id}"

    def activity_url(self, external_id):
        return f"https://crm.example/activities/{external_id}"

    def rate_budget(self):
        return 25, 5.0

    def bulk_rate_budget(self):
        return 5, 5.0


def client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def post(http, url, **form):
    async with http.post(url, data=form, allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location"), await resp.text()


async def page(http, url) -> str:
    async with http.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.text()


async def started(make_app, serve, sink):
    app = make_app([sink], timezone="UTC")
    base = await serve(app)
    return app, base


async def ingest(http, base, *texts, conversation=ASHA):
    items = [{"id": f"m-{conversation}-{n}", "conversation": conversation, "text": t}
             for n, t in enumerate(texts)]
    async with http.post(f"{base}/ingest", json=items) as resp:
        assert resp.status == 200


async def test_conversation_page_shows_messages_in_order_with_activity_ids(make_app, serve):
    sink = LedgerSink()
    _, base = await started(make_app, serve, sink)
    async with client() as http:
        await ingest(http, base, "hello", "poison here", "bye")
        await wait_until(lambda: len(sink.delivered) == 2)
        listing = await page(http, f"{base}/?q=98765")
        link = re.search(r'<a href="(/conversation\?key=[^"]+)" class="open">', listing)[1]
        html = await page(http, base + link.replace("&amp;", "&"))
    assert f'<dd class="number">{ASHA}</dd>' in html
    assert 'href="https://crm.example/leads/LEAD-1"' in html
    rows = re.findall(r'<tr data-message-id="\d+" data-provider-id="([^"]+)"(.*?)</tr>', html,
                      re.S)
    assert [pid for pid, _ in rows] == [f"m-{ASHA}-{n}" for n in range(3)]
    hello, poison, _ = (body for _, body in rows)
    assert "hello" in hello and "← in" in hello and ">text<" in hello
    assert 'data-state="done"' in hello and ">ACT-1</a>" in hello
    assert 'href="https://crm.example/activities/ACT-1"' in hello
    assert 'data-state="dead"' in poison and "CRM says: note too long" in poison
    assert "1 attempt" in poison


async def test_requeue_this_conversation_delivers_its_dead_letter(make_app, serve):
    sink = LedgerSink()
    _, base = await started(make_app, serve, sink)
    async with client() as http:
        await ingest(http, base, "poison")
        await ingest(http, base, "poison too", conversation="+14155550100")
        await wait_until(lambda: sink.batches and len(sink.batches) >= 2)
        html = await wait_until(lambda: _with(http, f"{base}/conversation?key=%2B919876543210",
                                              'data-state="dead"'))
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)[1]
        status, _, text = await post(http, f"{base}/conversation/requeue", key=ASHA)
        assert status == 403 and "stale or forged" in text
        sink.cured = True
        status, location, _ = await post(http, f"{base}/conversation/requeue", key=ASHA,
                                         csrf=csrf)
        assert status == 303 and location.endswith("requeued=1")
        await wait_until(lambda: sink.delivered == [f"m-{ASHA}-0"])
        assert "Requeued 1 dead letter(s) of this conversation" in await page(http,
                                                                               base + location)
        # the other person's dead letter stayed where it was
        other = await page(http, f"{base}/conversation?key=%2B14155550100")
        assert 'data-state="dead"' in other


async def _with(http, url, needle):
    html = await page(http, url)
    return html if needle in html else None


async def test_purge_needs_the_number_typed_again_then_deletes_the_person(make_app, serve):
    sink = LedgerSink()
    app, base = await started(make_app, serve, sink)
    buffer = app[BRIDGE].buffer
    async with client() as http:
        await ingest(http, base, "hello", "poison")
        await ingest(http, base, "keep me", conversation="+14155550100")
        await wait_until(lambda: len(sink.batches) >= 2)
        confirm = await page(http, f"{base}/conversation/purge?key=%2B919876543210")
        assert "cannot be undone" in confirm and 'id="confirm"' in confirm
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm)[1]
        status, _, text = await post(http, f"{base}/conversation/purge", key=ASHA, csrf=csrf,
                                     confirm="+9198")
        assert status == 400 and "nothing was deleted" in text
        assert await buffer.conversation(ASHA) is not None
        status, _, _ = await post(http, f"{base}/conversation/purge", key=ASHA, confirm=ASHA)
        assert status == 403  # no form token
        status, location, _ = await post(http, f"{base}/conversation/purge", key=ASHA,
                                         csrf=csrf, confirm=ASHA)
        assert status == 303 and location == "/?purged=2"
        async with http.get(f"{base}/conversation?key=%2B919876543210") as resp:
            assert resp.status == 404
    assert await buffer.messages(ASHA) == []
    assert (await buffer.sinks())[0]["dead_letters"] == 0  # its dead letter went with it
    assert [c["key"] for c in await buffer.conversations("crm", None, 10)] == ["+14155550100"]
    assert len(await buffer.messages("+14155550100")) == 1
    rows = await query(buffer, "SELECT count(*) FROM ledger")
    assert rows == [(1,)]  # only the other person's activity is still in the ledger


async def test_charts_are_svg_with_titles_patterns_and_the_limit(make_app, serve):
    sink = LedgerSink()
    app, base = await started(make_app, serve, sink)
    metrics = app[BRIDGE].metrics
    for _ in range(7):
        metrics.crm_call("crm", "Create", "ok", 0.01)
    for _ in range(3):
        metrics.crm_call("crm", "ByLeadId", "ok", 0.01, budget="bulk")
    async with client() as http:
        await ingest(http, base, "hello", "there")
        html = await page(http, f"{base}/")
    traffic = re.search(r'<svg[^>]*id="chart-traffic".*?</svg>', html, re.S)[0]
    assert 'role="img"' in traffic and "<title id=\"chart-traffic-t\">Messages in and out" \
        in traffic
    assert "2 in and 0 out in 48 hours" in traffic  # the desc says it in words
    assert 'url(#chart-traffic-hatch)' in traffic  # out is hatched, not only another colour
    calls = re.search(r'<svg[^>]*id="chart-calls-crm-ordinary".*?</svg>', html, re.S)[0]
    assert "Peak 7 CRM calls in a window against their limit of 25" in calls
    assert 'class="limit"' in calls and "limit 25 per 5 s" in calls
    assert "<caption>CRM calls per 5 s window" in html  # the text equivalent
    # bulk calls have a budget of their own: drawn apart, never added to the ordinary ones
    bulk = re.search(r'<svg[^>]*id="chart-calls-crm-bulk".*?</svg>', html, re.S)[0]
    assert "Peak 3 bulk calls in a window against their limit of 5" in bulk
    assert "limit 5 per 5 s" in bulk
    history = re.search(r'<svg[^>]*id="chart-backlog-history".*?</svg>', html, re.S)[0]
    assert "crm: backlog" in history  # sampled when the page was drawn


def test_backlog_samples_once_a_minute_and_peaks_per_hour():
    from bridge.metrics import Metrics
    metrics = Metrics(process=False)
    hour = 490_000
    for minute, backlog in [(0, 5), (0.5, 99), (1, 7), (30, 12), (61, 3)]:
        metrics.sample_backlog([{"sink": "crm", "backlog": backlog}], hour * 3600 + minute * 60)
    assert metrics.backlog_per_hour("crm", hour, 3) == [12, 3, None]  # 99 came too soon
    assert not metrics.backlog_due(hour * 3600 + 61 * 60 + 59)
    assert metrics.backlog_due(hour * 3600 + 62 * 60)


class Structure(HTMLParser):
    """Collects what the accessibility checks need from a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def all(self, tag):
        return [attrs for t, attrs in self.tags if t == tag]


async def test_pages_have_headers_captions_labels_and_a_phone_viewport(make_app, serve):
    sink = LedgerSink()
    _, base = await started(make_app, serve, sink)
    async with client() as http:
        await ingest(http, base, "hello")
        await wait_until(lambda: sink.delivered)
        pages = [await page(http, f"{base}/"),
                 await page(http, f"{base}/conversation?key=%2B919876543210"),
                 await page(http, f"{base}/conversation/purge?key=%2B919876543210")]
    for html in pages:
        found = Structure()
        found.feed(html)
        viewport = [m for m in found.all("meta") if m.get("name") == "viewport"]
        assert viewport and "width=device-width" in viewport[0]["content"]
        assert found.all("main") and found.all("main")[0]["id"] == "main"
        assert any(a.get("href") == "#main" for a in found.all("a"))  # skip link
        assert all(th.get("scope") in ("col", "row") for th in found.all("th"))
        assert html.count("<table") == html.count("<caption")
        labelled = {attrs["for"] for attrs in found.all("label")}
        visible = {attrs["id"] for attrs in found.all("input")
                   if attrs.get("type") not in ("hidden",) and "id" in attrs}
        assert visible <= labelled, visible - labelled
    assert "@media (max-width: 640px)" in pages[0]


async def test_a_stored_media_file_opens_from_the_conversation_page_never_as_a_page(
        make_app, serve, tmp_path):
    import hashlib

    from tests.whatsapp.test_media import media_message

    app, base = await started(make_app, serve, LedgerSink())
    buffer = app[BRIDGE].buffer
    buffer.media_sources = {"whatsapp": None}
    await buffer.append([media_message(1, "m-1"), media_message(2, "m-2")])
    for job, (data, mime) in zip(await buffer.media_claim("whatsapp", 10, 60),
                                 [(b"\xff\xd8jpeg", "image/jpeg"),
                                  (b"<script>alert(1)</script>", "text/html")], strict=True):
        path = tmp_path / hashlib.sha256(data).hexdigest()
        path.write_bytes(data)
        await buffer.media_fetched(job, str(path), len(data), path.name, mime)
    await buffer.install_sinks(["crm"])
    async with client() as http:
        await wait_until(lambda: _with(http, f"{base}/conversation?key=%2B919876543210",
                                       'data-state="done"'))
        await execute(buffer,  # as a sink's attachment target would
                      "INSERT INTO ledger (sink, key, external_id, created_at) SELECT 'crm',"
                      " b.key || '#file' || d.message_id, 'ATT-' || d.message_id, 0"
                      " FROM deliveries d JOIN batches b ON b.id = d.batch_id")
        html = await page(http, f"{base}/conversation?key=%2B919876543210")
        assert re.findall(r'<code class="activity">.*?(ACT-\d+|ATT-\d+)', html) == ["ACT-1"] * 2
        assert re.findall(r'<code class="attachment">(ATT-\d+)', html) == ["ATT-1", "ATT-2"]
        links = re.findall(r'<a class="stored-file" href="([^"]+)"', html)
        assert len(links) == 2
        async with http.get(base + links[0].replace("&amp;", "&")) as resp:
            assert await resp.read() == b"\xff\xd8jpeg"
            assert resp.headers["Content-Type"] == "image/jpeg"
        async with http.get(base + links[1].replace("&amp;", "&")) as resp:
            assert resp.headers["Content-Type"] == "application/octet-stream"
            assert resp.headers["Content-Disposition"].startswith("attachment")
            assert resp.headers["X-Content-Type-Options"] == "nosniff"
        status = await page(http, f"{base}/")  # the status page counts them per source
        card = re.search(r'id="media-whatsapp".*?</section>', status, re.S)[0]
        assert re.search(r'class="media-fetched">2 \(0\.0 MB stored\)', card), card
        assert 'class="media-pending">0<' in card
        async with http.get(f"{base}/conversation/file?id=999") as resp:
            assert resp.status == 404
        async with http.get(f"{base}/conversation/file?id=x") as resp:
            assert resp.status == 400


async def test_the_page_purge_says_when_deleted_bytes_may_remain(make_app, serve, tmp_path):
    """The status page's purge tells what `bridge purge` tells: with another process
    reading the buffer (its snapshot keeps the WAL from being emptied), deleted bytes may
    remain, so purge again (before: 'Purged: 2 message(s)' and nothing more)."""
    import sqlite3

    sink = LedgerSink()
    app, base = await started(make_app, serve, sink)
    async with client() as http:
        await ingest(http, base, "hello", "poison")
        await wait_until(lambda: len(sink.batches) >= 1)
        confirm = await page(http, f"{base}/conversation/purge?key=%2B919876543210")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', confirm)[1]
        reader = sqlite3.connect(tmp_path / "app.db")
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM messages").fetchone()  # a snapshot held
        try:
            status, location, _ = await post(http, f"{base}/conversation/purge", key=ASHA,
                                             csrf=csrf, confirm=ASHA)
        finally:
            reader.rollback()
            reader.close()
        assert status == 303 and location == "/?purged=2&left=wal"
        shown = await page(http, base + location)
        assert "WAL file could not be emptied" in shown and "Purge the number again" in shown
