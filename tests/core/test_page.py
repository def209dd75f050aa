"""The status page and admin auth on a real 127.0.0.1 server: login, CSRF, loopback rule."""

from __future__ import annotations

import re

import aiohttp

from bridge.contracts import Outcome
from bridge.security import SESSION_TTL, new_session, session_ok
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
    assert re.search(r'class="last-synced">\d{4}-\d\d-\d\d \d\d:\d\d:\d\d IST<', row)
    assert '<td class="synced">2</td>' in row and '<td class="transcripts">1</td>' in row


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


def test_session_cookies_expire_and_die_with_a_new_token():
    value = new_session("token-a", now=1000.0)
    assert session_ok(value, "token-a", now=1000.0 + SESSION_TTL - 1)
    assert not session_ok(value, "token-a", now=1000.0 + SESSION_TTL + 1)
    assert not session_ok(value, "token-b", now=1000.0)
    expires, _, signature = value.partition(".")
    assert not session_ok(f"{int(expires) + 999}.{signature}", "token-a", now=1000.0)
    assert not session_ok("garbage", "token-a") and not session_ok(None, "token-a")


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
