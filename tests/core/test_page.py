"""The status page and admin auth on a real 127.0.0.1 server: login, CSRF, loopback rule."""

from __future__ import annotations

import asyncio
import re

import aiohttp

from bridge.contracts import Outcome
from bridge.security import SESSION_COOKIE
from bridge.sessions import SESSION_TTL, Sessions
from bridge.state import BRIDGE
from bridge.throttle import FREE_FAILURES, LoginThrottle, client_key
from tests.helpers import RecordingSink, wait_until

FORWARDED = {"X-Forwarded-For": "203.0.113.9"}  # what a reverse proxy adds for a remote peer


def rejecting(poison: str):
    return lambda m: Outcome.rejected("CRM says no") if m.provider_id == poison \
        else Outcome.delivered()


async def ingest(http, base, *items):
    async with http.post(f"{base}/ingest", json=list(items)) as resp:
        assert resp.status == 200


def client(**kw) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True), **kw)


async def test_page_shows_last_synced_and_transcripts_on_loopback_without_token(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")], timezone="Asia/Kolkata"))
    async with client() as http:
        await ingest(http, base, {"id": "a1", "conversation": "+919876543210", "text": "hi"},
                     {"id": "a2", "conversation": "+919876543210", "text": "there"})

        async def synced():
            async with http.get(f"{base}/status") as resp:
                (conv,) = (await resp.json())["sinks"][0]["conversations"]
                return conv["last_synced_at"]
        await wait_until(synced)
        async with http.get(f"{base}/") as resp:
            assert resp.status == 200 and resp.content_type == "text/html"
            html = await resp.text()
    row = re.search(r'<tr data-key="\+919876543210">(.*?)</tr>', html, re.S)[1]
    # relative, with the absolute time in server.timezone (labelled) on hover
    assert re.search(r'class="last-synced"><time datetime="\d{4}-\d\d-\d\dT[\d:]+\+00:00" '
                     r'title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST">(now|\d+ s ago)</time><', row)
    assert re.search(r'class="synced">2</td>', row)
    assert re.search(r'class="transcripts">1</td>', row)


async def test_admin_endpoints_refuse_forwarded_requests_without_a_token(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")]))
    async with client(headers=FORWARDED) as http:
        for method, path in [("GET", "/"), ("GET", "/status"), ("POST", "/sync-now")]:
            async with http.request(method, f"{base}{path}") as resp:
                assert resp.status == 401, path
                assert "loopback only" in await resp.text()
        await ingest(http, base, {"id": "w1", "conversation": "+911", "text": "x"})  # open


async def test_token_guards_page_api_and_leaves_the_webhook_open(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")], admin_token="s3cret-token"))
    async with client() as http:
        async with http.get(f"{base}/", allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/login"
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            async with http.get(f"{base}/status", headers=headers) as resp:
                assert resp.status == 401
        async with http.get(f"{base}/status",
                            headers={"Authorization": "Bearer s3cret-token"}) as resp:
            assert resp.status == 200
        await ingest(http, base, {"id": "w1", "conversation": "+911", "text": "x"})


async def test_login_form_sets_a_strict_http_only_session_cookie(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")], admin_token="s3cret-token"))
    async with client() as http:
        async with http.post(f"{base}/login", data={"token": "guess"}) as resp:
            assert resp.status == 401 and "not the admin token" in await resp.text()
        async with http.post(f"{base}/login", data={"token": "s3cret-token"},
                             allow_redirects=False) as resp:
            assert resp.status == 303
            cookie = resp.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        async with http.get(f"{base}/") as resp:
            assert resp.status == 200 and "Chatbridge status" in await resp.text()
        async with http.get(f"{base}/status") as resp:  # the session also opens the JSON
            assert resp.status == 200
        async with http.post(f"{base}/logout", allow_redirects=False) as resp:
            assert resp.status == 303
        async with http.get(f"{base}/", allow_redirects=False) as resp:
            assert resp.status == 303


async def sign_in(http, base, token: str = "s3cret-token") -> str:
    """Sign in through the form; the session cookie's value."""
    async with http.post(f"{base}/login", data={"token": token},
                         allow_redirects=False) as resp:
        assert resp.status == 303
        return resp.cookies[SESSION_COOKIE].value


async def page_status(base, cookie: str) -> tuple[int, str | None]:
    """GET / with only this session cookie: (status, Location)."""
    async with client(cookies={SESSION_COOKIE: cookie}) as http, \
            http.get(f"{base}/", allow_redirects=False) as resp:
        return resp.status, resp.headers.get("Location")


async def test_sign_out_ends_the_session_on_the_server(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")], admin_token="s3cret-token"))
    async with client() as http:
        cookie, other_tab = await sign_in(http, base), await sign_in(http, base)
    assert await page_status(base, cookie) == (200, None)
    async with client(cookies={SESSION_COOKIE: cookie}) as http, \
            http.post(f"{base}/logout", allow_redirects=False) as resp:
        assert resp.status == 303
    # a copy of the cookie (kept by another tab, a proxy log, a thief) opens nothing now
    assert await page_status(base, cookie) == (303, "/login")
    async with client(cookies={SESSION_COOKIE: cookie}) as http, \
            http.get(f"{base}/status") as resp:
        assert resp.status == 401
    assert await page_status(base, other_tab) == (200, None)  # only that session ended


async def test_a_session_older_than_its_ttl_is_refused(make_app, serve):
    now = [1000.0]
    app = make_app([RecordingSink("crm")], admin_token="s3cret-token")
    app[BRIDGE].sessions = Sessions(clock=lambda: now[0])
    base = await serve(app)
    async with client() as http:
        cookie = await sign_in(http, base)
    now[0] += SESSION_TTL - 1
    assert await page_status(base, cookie) == (200, None)
    now[0] += 2
    assert await page_status(base, cookie) == (303, "/login")


async def test_wrong_tokens_in_parallel_lock_the_client_out(make_app, serve):
    now = [1000.0]
    app = make_app([RecordingSink("crm")], admin_token="s3cret-token")
    app[BRIDGE].login_throttle = LoginThrottle(clock=lambda: now[0])
    base = await serve(app)

    async def attempt(http, token):
        async with http.post(f"{base}/login", data={"token": token},
                             allow_redirects=False) as resp:
            return resp.status, resp.headers.get("Retry-After")

    async with client() as http:
        answers = await asyncio.gather(*(attempt(http, f"guess-{n}") for n in range(200)))
        assert sorted(status for status, _ in answers).count(401) == FREE_FAILURES
        assert [a for a in answers if a[0] != 401] == [(429, "1")] * (200 - FREE_FAILURES)
        assert await attempt(http, "s3cret-token") == (429, "1")  # unchecked while locked
        now[0] += 1.0
        assert await attempt(http, "guess-again") == (401, None)
        assert await attempt(http, "s3cret-token") == (429, "2")  # the lockout doubled
        now[0] += 2.0
        assert await attempt(http, "s3cret-token") == (303, None)
        assert await attempt(http, "typo") == (401, None)  # success forgot the failures


def test_login_throttle_doubles_to_a_cap_forgets_and_stays_bounded():
    now = [0.0]
    throttle = LoginThrottle(free=2, first=1.0, longest=8.0, limit=3, clock=lambda: now[0])
    waits = []
    for _ in range(7):
        throttle.failed("a")
        waits.append(throttle.wait("a"))
    assert waits == [0.0, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert throttle.wait("b") == 0.0  # per client
    now[0] += 86400.0 + 1
    assert throttle.wait("a") == 0.0 and len(throttle) == 0  # an idle day forgets
    for n in range(10):
        throttle.failed(f"client-{n}")
    assert len(throttle) == 3
    assert client_key("2001:db8::1") == client_key("2001:db8::2") == "2001:db8::/64"
    assert client_key("::ffff:203.0.113.7") == "203.0.113.7"


def test_sessions_are_bounded_and_unguessable():
    sessions = Sessions(limit=3)
    values = [sessions.open() for _ in range(5)]
    assert len(sessions) == 3 and len(set(values)) == 5
    assert [sessions.valid(v) for v in values] == [False, False, True, True, True]
    assert not sessions.valid(values[-1][:-1]) and not sessions.valid(None)
    sessions.close(values[-1])
    assert not sessions.valid(values[-1]) and len(sessions) == 2


async def test_requeue_button_needs_the_form_token_and_same_origin(make_app, serve):
    sink = RecordingSink("crm", behaviour=rejecting("bad"), max_attempts=1)
    base = await serve(make_app([sink]))
    async with client() as http:
        await ingest(http, base, {"id": "bad", "conversation": "+911", "text": "x"})

        async def dead_letter_page():
            async with http.get(f"{base}/") as resp:
                html = await resp.text()
            return html if 'class="requeue"' in html else None
        html = await wait_until(dead_letter_page)
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', html)[1]
        message_id = re.search(r'name="message_id" value="(\d+)"', html)[1]
        form = {"sink": "crm", "message_id": message_id}
        async with http.post(f"{base}/dead-letters/requeue", data=form) as resp:
            assert resp.status == 403  # no form token
        async with http.post(f"{base}/dead-letters/requeue", data={**form, "csrf": csrf},
                             headers={"Origin": "http://evil.example"}) as resp:
            assert resp.status == 403 and "cross-site" in await resp.text()
        sink.behaviour = None  # the cause is fixed
        async with http.post(f"{base}/dead-letters/requeue", data={**form, "csrf": csrf},
                             allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/?requeued=1"
        await wait_until(lambda: sink.delivered == ["bad"])


async def test_a_requeue_id_sqlite_cannot_hold_is_a_400(make_app, serve):
    sink = RecordingSink("crm", behaviour=rejecting("bad"), max_attempts=1)
    base = await serve(make_app([sink]))
    async with client() as http:
        await ingest(http, base, {"id": "bad", "conversation": "+911", "text": "x"})

        async def form_token():
            async with http.get(f"{base}/") as resp:
                found = re.search(r'name="csrf" value="([0-9a-f]+)"', await resp.text())
            return found and found[1]
        csrf = await wait_until(form_token)
        for bad in ("1" * 40, str(2**63), "\u00b2", "1e3", "-1", "0x10", ""):
            async with http.post(f"{base}/dead-letters/requeue", data={
                    "sink": "crm", "csrf": csrf, "message_id": bad}) as resp:
                assert resp.status == 400, bad
                assert "message_id must be" in await resp.text()


async def test_search_filters_conversations_by_number_or_name(make_app, serve):
    base = await serve(make_app([RecordingSink("crm")]))
    async with client() as http:
        await ingest(http, base, {"id": "a", "conversation": "+919876543210", "text": "x"},
                     {"id": "b", "conversation": "+14155550100", "text": "y"})
        async with http.get(f"{base}/", params={"q": "4155"}) as resp:
            html = await resp.text()
    assert 'data-key="+14155550100"' in html and 'data-key="+919876543210"' not in html


class SimulatedSink(RecordingSink):
    simulated = "ExampleCRM"


def held_or_rejected(m):
    if m.conversation == "+14155550100":
        return Outcome.held("no record with this number in ExampleCRM (create one, or set "
                            "create_records)")
    if m.provider_id == "poison":
        return Outcome.rejected("ExampleCRM MXInvalidInputException: Invalid phone")
    return Outcome.delivered()


async def test_page_leads_with_the_verdict_then_what_needs_attention(make_app, serve):
    sink = SimulatedSink("crm", behaviour=held_or_rejected, max_attempts=1)
    base = await serve(make_app([sink], timezone="Asia/Kolkata"))
    async with client() as http:
        await ingest(http, base, {"id": "ok", "conversation": "+919876543210", "text": "hi"},
                     {"id": "poison", "conversation": "+919812345678",
                      "text": "Here is my full address: 12 MG Road, Bengaluru 560001, "
                              "near the big temple, second floor, ring twice"},
                     {"id": "wait", "conversation": "+14155550100", "text": "Do you ship?"})

        async def settled():
            async with http.get(f"{base}/") as resp:
                html = await resp.text()
            return html if "1</strong> held chat" in html and "1</strong> dead letter" in html \
                and 'Healthy <span class="why">· synced' in html else None
        html = await wait_until(settled)
        async with http.get(f"{base}/static/page.js") as resp:
            assert resp.status == 200 and resp.content_type == "text/javascript"
            assert "data-live" in await resp.text()
    order = [html.index(mark) for mark in ('id="simulator-banner"', 'id="verdict"',
                                           'id="attention"', 'id="conversations"',
                                           'id="details"')]
    assert order == sorted(order)  # verdict and problems before the list and the details
    assert "Simulator — nothing reaches ExampleCRM." in html
    assert re.search(r'<h2 id="verdict-headline">.*Healthy <span class="why">· synced '
                     r'(just now|\d+ s ago)</span></h2>', html)
    assert '<a href="#dead-letters" class="count warn" id="count-dead-letters">' in html
    assert '<span class="count ok" id="count-overdue"><strong>0</strong> overdue' in html
    dead = re.search(r'<tr data-message-id="\d+">(.*?)</tr>', html, re.S)[1]
    assert "+919812345678" in dead and "Here is my full address: 12 MG Road" in dead
    assert "ring twice" not in dead  # a preview, not the whole body
    assert "crm refused it: ExampleCRM MXInvalidInputException: Invalid phone" in dead
    assert "then requeue it." in dead and 'class="requeue"' in dead
    held = re.search(r'<tr data-key="\+14155550100">(.*?)</tr>', html.split('id="held"')[1],
                     re.S)[1]
    assert "Do you ship?" in held and "No record with this number in ExampleCRM" in held
    assert "Create one, or set create_records; it is checked again at every sync." in held
    assert 'action="/#conversations"' in html  # a search opens at its results
    assert 'href="/?sink=crm&amp;show=held#conversations"' in html
    assert 'data-refresh="30"' in html and '<meta http-equiv="refresh" content="60">' in html
    assert "Times are in Asia/Kolkata (IST)" in html


HOSTILE_NAME = "<img src=x onerror=alert(1)>\u202eSam"  # markup, then a right-to-left override


async def test_what_a_customer_wrote_cannot_script_reorder_or_widen_the_page(make_app, serve):
    """A name with markup and U+202E on every attention row; previews cut at a flag and at
    an emoji family; a long URL in a preview wraps inside its cell."""
    sink = SimulatedSink("crm", behaviour=held_or_rejected, max_attempts=1)
    base = await serve(make_app([sink]))
    url = "https://maps.example.com/" + "x" * 200
    async with client() as http:
        await ingest(http, base,
                     {"id": "poison", "conversation": "+919812345678", "name": HOSTILE_NAME,
                      "text": "a" * 78 + "🇮🇳🇮🇳"},
                     {"id": "wait", "conversation": "+14155550100", "name": HOSTILE_NAME,
                      "text": "b" * 78 + "👨\u200d👩\u200d👧 " + url})

        async def settled():
            async with http.get(f"{base}/") as resp:
                html = await resp.text()
            return html if "1</strong> held chat" in html and "1</strong> dead letter" in html \
                else None
        html = await wait_until(settled)
    assert "<img" not in html and "\u202e" not in html
    shown = "<bdi>&lt;img src=x onerror=alert(1)&gt;Sam</bdi>"
    attention = html.split('id="attention"')[1].split('id="conversations"')[0]
    assert attention.count(shown) == 2 and html.count(shown) == 4  # and the list's rows
    assert "<bdi>" + "a" * 78 + "…</bdi>" in attention  # not half a flag
    assert "<bdi>" + "b" * 78 + "…</bdi>" in attention  # not the man without his family
    assert re.search(r"table\.attention-list td\.preview \{\s*overflow-wrap: anywhere", html)


class DescribedSink(RecordingSink):
    """A sink whose describe() holds the Python values plugins put there."""

    def describe(self):
        return {"simulator": True, "opportunity_types": [12000, 12001], "throttled_for_s": 0.0,
                "activity_event": None, "lead_directory": "on"}


async def test_sink_details_read_as_words_not_python_values(make_app, serve):
    base = await serve(make_app([DescribedSink("crm")]))
    async with client() as http, http.get(f"{base}/") as resp:
        html = await resp.text()
    details = dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", html))
    assert details["Simulator"] == "yes"
    assert details["Opportunity types"] == "12000, 12001"
    assert details["Throttled for (s)"] == "0"
    assert details["Activity event"] == "–"
    assert details["Lead directory"] == "on"
    assert "True" not in details.values() and "[12000, 12001]" not in details.values()
