"""Admin endpoints: a token when one is configured; loopback only (never via a proxy) when not.

Every admin route is tried without credentials, with wrong ones and with forged sessions
(401, or 303 to /login for the page), then with the right token as the control.
"""

from __future__ import annotations

import asyncio
import inspect
import socket

import aiohttp
import httpx
import pytest
from aiohttp import web

from bridge.app import create_app
from bridge.plugins import get_plugin_manager, load_config
from bridge.security import SESSION_COOKIE, digest, token_ok
from bridge.state import BRIDGE
from bridge.throttle import FREE_FAILURES, LoginThrottle
from tests import oneshot
from tests.helpers import free_port
from tests.processes import BridgeProcess

ADMIN_TOKEN = "admin-token-for-the-security-tests"
ADMIN_ROUTES = [
    ("GET", "/status"),
    ("GET", "/metrics"),
    ("POST", "/sync-now"),
    ("POST", "/backfill?sink=leadsquared&days=1"),
    ("POST", "/dead-letters/requeue"),
]
PROXY_HEADERS = [{"X-Forwarded-For": "203.0.113.7"}, {"X-Forwarded-For": "127.0.0.1"},
                 {"Forwarded": "for=203.0.113.7"}, {"X-Real-IP": "203.0.113.7"},
                 {"X-Client-IP": "203.0.113.7"}, {"True-Client-IP": "203.0.113.7"},
                 {"CF-Connecting-IP": "203.0.113.7"}]


async def start(tmp_path, serve, token: str | None) -> str:
    config = tmp_path / "config.yaml"
    server = f"server: {{admin_token: {token}}}\n" if token else ""
    config.write_text(f"{server}buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
                      "    verify_token: verify\n    app_secret: secret\n")
    pm = get_plugin_manager()
    return await serve(create_app(load_config(config, pm), pm))


async def call(url: str, method: str, path: str, headers: dict | None = None,
               cookies: dict | None = None) -> tuple[int, str, str | None]:
    async with aiohttp.ClientSession(cookies=cookies) as http, http.request(
            method, url + path, headers=headers or {}, allow_redirects=False,
            data={"sink": "leadsquared", "csrf": "x"} if method == "POST" else None) as resp:
        return resp.status, await resp.text(), resp.headers.get("Location")


@pytest.fixture
async def with_token(tmp_path, serve):
    return await start(tmp_path, serve, ADMIN_TOKEN)


@pytest.fixture
async def without_token(tmp_path, serve):
    return await start(tmp_path, serve, None)


BAD_CREDENTIALS = {
    "none": ({}, None),
    "wrong bearer": ({"Authorization": "Bearer not-the-token"}, None),
    "empty bearer": ({"Authorization": "Bearer "}, None),
    "bearer prefix of the token": ({"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"}, None),
    "token without a scheme": ({"Authorization": ADMIN_TOKEN}, None),
    "basic scheme": ({"Authorization": f"Basic {ADMIN_TOKEN}"}, None),
    "token in another header": ({"X-Admin-Token": ADMIN_TOKEN}, None),
    "forged session cookie": ({}, {SESSION_COOKIE: "99999999999.deadbeef"}),
    "made-up session id": ({}, {SESSION_COOKIE: "x" * 43}),
    "over-long session id": ({}, {SESSION_COOKIE: "x" * 10_000}),
    "session with no signature": ({}, {SESSION_COOKIE: "99999999999"}),
    "session with a superscript digit": ({}, {SESSION_COOKIE: "\u00b25.x"}),
    "session with a 5,000-digit expiry": ({}, {SESSION_COOKIE: "9" * 5000 + ".ab"}),
}


@pytest.mark.parametrize("case", sorted(BAD_CREDENTIALS))
async def test_admin_routes_refuse_missing_or_bad_credentials(with_token, case):
    headers, cookies = BAD_CREDENTIALS[case]
    for method, path in ADMIN_ROUTES:
        status, text, _ = await call(with_token, method, path, headers, cookies)
        assert status == 401, (case, method, path, text)
        assert "admin token required" in text
    status, _, location = await call(with_token, "GET", "/", headers, cookies)
    assert (status, location) == (303, "/login"), case
    status, _, location = await call(with_token, "GET", "/?q=x", headers, cookies)
    assert (status, location) == (303, "/login"), case


async def test_the_token_in_the_query_string_is_not_a_credential(with_token):
    for method, path in ADMIN_ROUTES:
        joiner = "&" if "?" in path else "?"
        status, _, _ = await call(with_token, method, f"{path}{joiner}token={ADMIN_TOKEN}")
        assert status == 401, path


async def test_the_right_token_or_session_opens_them(with_token):
    bearer = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert (await call(with_token, "GET", "/status", bearer))[0] == 200
    assert (await call(with_token, "GET", "/metrics", bearer))[0] == 200
    assert (await call(with_token, "POST", "/sync-now", bearer))[0] == 200
    # past the guard: no such sink / stale form, not "unauthorised"
    assert (await call(with_token, "POST", "/backfill?sink=leadsquared", bearer))[0] == 404
    assert (await call(with_token, "POST", "/dead-letters/requeue", bearer))[0] == 403
    async with aiohttp.ClientSession() as http, http.post(
            f"{with_token}/login", data={"token": ADMIN_TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 303
        session = {SESSION_COOKIE: resp.cookies[SESSION_COOKIE].value}
    assert (await call(with_token, "GET", "/", cookies=session))[0] == 200
    assert (await call(with_token, "GET", "/status", cookies=session))[0] == 200


@pytest.mark.parametrize("proxy", PROXY_HEADERS, ids=lambda h: next(iter(h)))
async def test_without_a_token_a_forwarded_request_is_refused(without_token, proxy):
    for method, path in [*ADMIN_ROUTES, ("GET", "/")]:
        status, text, _ = await call(without_token, method, path, proxy)
        assert status == 401, (proxy, method, path)
        assert "loopback only" in text


# Each names a header some proxy, load balancer or CDN adds; spellings as sent on the wire.
MORE_PROXY_HEADERS = [
    ("Via", "1.1 nginx"), ("via", "HTTP/1.1 squid"), ("Via", ""), ("Forwarded", ""),
    ("X-Forwarded-Host", "bridge.example"), ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Port", "443"), ("X-Forwarded-Server", "edge"), ("X-Forwarded", "for=1.2.3.4"),
    ("x-forwarded-for", "127.0.0.1"), ("X_Forwarded_For", "203.0.113.7"),
    ("X-Original-Forwarded-For", "203.0.113.7"), ("X-Original-Host", "bridge.example"),
    ("X-Original-URL", "/status"), ("Client-IP", "203.0.113.7"),
    ("X-Cluster-Client-IP", "203.0.113.7"), ("Fastly-Client-IP", "203.0.113.7"),
    ("Fly-Client-IP", "203.0.113.7"), ("X-Azure-ClientIP", "203.0.113.7"),
    ("WL-Proxy-Client-IP", "203.0.113.7"), ("X-ProxyUser-Ip", "203.0.113.7"),
    ("X-Envoy-External-Address", "203.0.113.7"), ("X-Vercel-Forwarded-For", "203.0.113.7"),
    ("X-Real-IP", "127.0.0.1"), ("CF-Connecting-IPv6", "2001:db8::1"), ("CF-Ray", "8a1b-AMS"),
    ("CDN-Loop", "cloudflare"), ("X-Amzn-Trace-Id", "Root=1-67891233"),
    ("X-ARR-SSL", "2048|256"), ("X-Request-Start", "t=1739230955"),
    ("X-Remote-Addr", "203.0.113.7"), ("X-Originating-IP", "203.0.113.7"),
    ("X-Host", "bridge.example"), ("Front-End-Https", "on"),
    ("CloudFront-Viewer-Address", "203.0.113.7:46532"), ("X-Amz-Cf-Id", "abc=="),
    ("X-Varnish", "32770"), ("X-Nf-Client-Connection-Ip", "203.0.113.7"),
    ("Ali-CDN-Real-IP", "203.0.113.7"), ("Incap-Client-IP", "203.0.113.7"),
    ("Connection", "keep-alive, X-Forwarded-For"),  # a proxy asked to drop its own header
    ("X-BlueCoat-Via", "8c1b2e"), ("X-Rewrite-URL", "/status"),
]
# What browsers and curl send to the bridge directly: none of it means a proxy.
BROWSER_HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "Accept": "text/html,*/*",
    "Accept-Language": "en-GB,en;q=0.5", "Accept-Encoding": "gzip, deflate, br, zstd",
    "Sec-Fetch-Dest": "document", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "none",
    "Sec-Fetch-User": "?1", "Sec-CH-UA": '"Chromium";v="128"', "Sec-CH-UA-Mobile": "?0",
    "Sec-CH-UA-Platform": '"Linux"', "Upgrade-Insecure-Requests": "1", "DNT": "1",
    "Cache-Control": "max-age=0", "Pragma": "no-cache", "Priority": "u=0, i",
    "Referer": "http://127.0.0.1/", "If-None-Match": '"x"', "X-Requested-With": "fetch",
}


async def test_without_a_token_any_header_a_proxy_adds_means_forwarded(without_token):
    """Via, X-Forwarded-Host and the rest: a local reverse proxy that sends only those
    must not make a remote visitor look like loopback use (any casing, '_' for '-')."""
    for name, value in MORE_PROXY_HEADERS:
        for method, path in [("GET", "/status"), ("POST", "/sync-now"), ("GET", "/")]:
            status, text, _ = await call(without_token, method, path, {name: value})
            assert (status, "loopback only" in text) == (401, True), (name, method, path)
    status, _, _ = await call(without_token, "GET", "/status", BROWSER_HEADERS)
    assert status == 200, "a browser's own headers were taken for a proxy's"


async def test_without_a_token_an_http_1_0_request_counts_as_forwarded(without_token):
    """nginx's bare `proxy_pass` forwards as HTTP/1.0 with no header of its own (Host is
    the upstream's, 127.0.0.1:PORT): a remote visitor must not pass for loopback use."""
    host, port = without_token.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(f"GET /status HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
                 "Connection: close\r\n\r\n".encode())
    answer = (await reader.read()).decode()
    writer.close()
    assert answer.startswith("HTTP/1.0 401") and "loopback only" in answer, answer[:200]


async def test_without_a_token_ipv4_loopback_through_a_dual_stack_socket_is_loopback(
        tmp_path):
    """With the bridge on "::" (IPV6_V6ONLY off), 127.0.0.1 arrives as ::ffff:127.0.0.1."""
    listener = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    listener.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    listener.bind(("::", 0))
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {tmp_path}/b.db}}\n")
    pm = get_plugin_manager()
    runner = web.AppRunner(create_app(load_config(config, pm), pm))
    await runner.setup()
    try:
        await web.SockSite(runner, listener).start()
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        assert (await call(url, "GET", "/status"))[0] == 200
        assert (await call(url, "GET", "/status", {"Via": "1.1 nginx"}))[0] == 401
    finally:
        await runner.cleanup()


async def _token_app(tmp_path, serve, now: list[float]) -> str:
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{admin_token: {ADMIN_TOKEN}}}\n"
                      f"buffer: {{path: {tmp_path}/b.db}}\n")
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    app[BRIDGE].login_throttle = LoginThrottle(clock=lambda: now[0])
    return await serve(app)


async def test_wrong_bearer_tokens_are_throttled_and_the_right_one_still_opens(tmp_path, serve):
    now = [1000.0]
    url = await _token_app(tmp_path, serve, now)
    right = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def guess(n: int) -> tuple[int, str | None]:
        async with aiohttp.ClientSession() as http, http.get(
                f"{url}/status", headers={"Authorization": f"Bearer guess-{n}"}) as resp:
            return resp.status, resp.headers.get("Retry-After")

    answers = await asyncio.gather(*(guess(n) for n in range(40)))
    assert [s for s, _ in answers].count(401) == FREE_FAILURES, answers
    locked = [int(after) for s, after in answers if s == 429]
    assert len(locked) == 40 - FREE_FAILURES and min(locked) >= 1
    status, text, _ = await call(url, "GET", "/metrics", {"Authorization": "Bearer nope"})
    assert status == 429 and "try again in" in text and "\n" not in text.strip()
    # the right token from the same address is never locked out, and clears nothing
    assert (await call(url, "GET", "/status", right))[0] == 200
    assert (await call(url, "POST", "/sync-now", right))[0] == 200
    assert (await call(url, "GET", "/status", {"Authorization": "Bearer x"}))[0] == 429
    # the sign-in form keeps its own count: a stale token in a script locks nobody out of it
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/login", data={"token": ADMIN_TOKEN}, allow_redirects=False) as resp:
        assert resp.status == 303
    now[0] += 86400.0 + 1  # an idle day forgets
    assert (await call(url, "GET", "/status", {"Authorization": "Bearer x"}))[0] == 401


@pytest.mark.parametrize("header", [
    b"Bearer \xff\xfe", b"Bearer \xc3\xa9", b"\xff", b"Bearer", b"Bearer  ", b"Basic Og==",
    b"Bearer " + ADMIN_TOKEN.encode() + b"x", b"Bearer " + ADMIN_TOKEN[:-1].encode(),
])
async def test_odd_authorization_headers_get_401_never_500(with_token, header):
    host, port = with_token.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                 b"Authorization: " + header + b"\r\n\r\n")
    answer = await reader.read()
    writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]


async def test_the_bearer_scheme_is_case_insensitive(with_token):
    for scheme in ("Bearer", "bearer", "BEARER"):
        headers = {"Authorization": f"{scheme} {ADMIN_TOKEN}"}
        assert (await call(with_token, "GET", "/status", headers))[0] == 200, scheme


def test_the_token_comparison_hides_length_and_content():
    """Digests of equal length are compared, so a prefix or a longer guess takes the same
    path as any other wrong token."""
    assert token_ok(f"Bearer {ADMIN_TOKEN}", ADMIN_TOKEN)
    for given in ("", "Bearer", f"Bearer {ADMIN_TOKEN[:-1]}", f"Bearer {ADMIN_TOKEN}x",
                  f"Basic {ADMIN_TOKEN}", ADMIN_TOKEN):
        assert not token_ok(given, ADMIN_TOKEN), given
    source = inspect.getsource(token_ok)
    assert "digest(value), digest(expected)" in source and "compare_digest" in source
    assert len(digest("x")) == len(digest("x" * 4096)) == 32


async def test_without_a_token_loopback_is_open_as_documented(without_token):
    assert (await call(without_token, "GET", "/status"))[0] == 200
    assert (await call(without_token, "GET", "/"))[0] == 200
    port = without_token.rsplit(":", 1)[1]
    for host in ("127.0.0.1", f"127.0.0.1:{port}", "localhost", f"LocalHost:{port}", "[::1]",
                 f"[::1]:{port}"):
        assert (await call(without_token, "GET", "/status", {"Host": host}))[0] == 200, host


REBOUND_HOSTS = ["evil.example:{port}", "evil.example", "127.0.0.1.evil.example:{port}",
                 "localhost.evil.example", "127.0.0.1@evil.example:{port}", "10.0.0.1:{port}",
                 "[::2]:{port}", "127.0.0.2:{port}", ""]


@pytest.mark.parametrize("host", REBOUND_HOSTS)
async def test_without_a_token_a_rebound_host_name_is_refused(without_token, host):
    """DNS rebinding: evil.example resolves to 127.0.0.1, so the peer is loopback, but the
    Host header (and a matching Origin) name the attacker's site."""
    host = host.format(port=without_token.rsplit(":", 1)[1])
    same_site = {"Host": host, "Origin": f"http://{host}"}
    for method, path in [*ADMIN_ROUTES, ("GET", "/")]:
        status, text, _ = await call(without_token, method, path, same_site)
        assert status == 403, (host, method, path, status, text)
        assert "not a loopback name" in text and "\n" not in text.strip()
    status, text, _ = await call(without_token, "GET", "/healthz", same_site)
    assert status == 200  # not an admin route


def test_dns_rebinding_against_a_running_bridge_gets_nothing(tmp_path):
    """The reported attack on `bridge run` with no token: a page on evil.example, rebound
    to 127.0.0.1, reads /status and / and posts /sync-now with its own Host and Origin."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(f"server: {{port: {port}}}\nbuffer: {{path: {tmp_path}/b.db}}\n")
    bridge = BridgeProcess(config, port).start()
    try:
        rebound = {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}
        for method, path in [("GET", "/status"), ("GET", "/"), ("POST", "/sync-now")]:
            answer = oneshot.request(method, f"{bridge.url}{path}", headers=rebound, timeout=10)
            assert answer.status_code == 403, (method, path)
            assert "not a loopback name" in answer.text and "csrf" not in answer.text
        assert "sinks" in bridge.status()  # the same bridge by its loopback name
    finally:
        bridge.stop()


async def test_healthz_is_public_and_tells_nothing(with_token):
    status, text, _ = await call(with_token, "GET", "/healthz",
                                 {"X-Forwarded-For": "203.0.113.7"})
    assert status == 200
    assert text == '{"ok": true}'


async def test_a_refusal_names_the_buffer_to_this_machine_only(with_token):
    """A client command of another config meeting this bridge learns it is not its own
    (bridge.remote); a visitor through a proxy is not told the buffer's fingerprint."""
    async with httpx.AsyncClient() as http:
        here = await http.get(with_token + "/status")
        proxied = await http.get(with_token + "/status", headers=PROXY_HEADERS[0])
    assert here.status_code == proxied.status_code == 401
    assert len(here.headers["X-Chatbridge-Buffer"]) == 16
    assert "X-Chatbridge-Buffer" not in proxied.headers
