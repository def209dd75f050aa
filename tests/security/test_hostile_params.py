"""Every route the app registers, walked with hostile parameter values: a 4xx with a
one-line reason, never a 5xx.

The routes come from the app's router, so a route added later is walked with no change
here; the parameter names each one reads are found in its handler's source (and in the
functions of its module it calls), so a new parameter is walked too. Each name gets each
value in the query string, repeated, as a form field and in a JSON body, with the other
parameters a request needs to get that far (the form token, a real sink and conversation).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from yarl import URL

from bridge import page
from bridge.app import create_app
from bridge.plugins import get_plugin_manager, load_config
from bridge.state import BRIDGE
from bridge.throttle import LoginThrottle
from plugins.whatsapp.signature import sign
from tests.backends import BACKENDS, fresh_schema_url
from tests.whatsapp import payloads as p

TOKEN, SECRET, CUSTOMER = "walker-admin-token", "walker-app-secret", "919876543210"
HOSTILE = [
    "9223372036854775808", "-9223372036854775809", "18446744073709551616", "9" * 400,
    "-1", "0", "-0", "+7", "1.5", "1e3", "1e308", "nan", "NaN", "inf", "-inf", "0x1f",
    "\u0661\u0662\u0663", "\uff11\uff12", "\u00b2", "1_000", " 7", "7 ", "", "\x00", "\n",
    "x" * 5000, "\ufffd", "\u202e", "'\"; --", "%", "*", "NEAR(", "[]", "{}",
]
RAW = ["%ED%A0%80", "%FF", "%C0%AF", "%00", "%", "%zz"]  # bytes no UTF-8 encoder makes
# A literal parameter name read in a handler: params.text(request.query, "page") (a
# plugin: query_text(request.query, ...)), query.get("q"), form.getall("message_id"),
# request.match_info["id"] ...
NAME_READ = re.compile(r"""(?:(?:params\.\w+|query_text)\(\s*[\w.\[\]()]+,\s*"""
                       r"""|(?:query|form|post\(\)|match_info)"""
                       r"""(?:\.get|\.getall)?[(\[]\s*)"([\w.\-]+)\"""")
CALLED = re.compile(r"\b(\w+)\(")
BROKEN_FORMS = [
    ("application/x-www-form-urlencoded", b"csrf=\xff&key=\xfe"),
    ("application/x-www-form-urlencoded; charset=bogus", b"key=x"),
    ("application/x-www-form-urlencoded; charset=utf-16", b"key=x"),
    ("multipart/form-data", b"--x\r\n"),
    ("multipart/form-data; boundary=x", b"garbage"),
    ("multipart/form-data; boundary=x",
     b"--x\r\nContent-Disposition: form-data\r\n\r\nv\r\n--x--\r\n"),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="key"\r\n\r\n\xff\r\n--x--\r\n'),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="key"; filename="a"\r\n\r\nv\r\n--x--\r\n'),
    ("multipart/form-data; boundary=x",
     b'--x\r\nContent-Disposition: form-data; name="key"\r\nContent-Type: multipart/mixed;'
     b' boundary=y\r\n\r\n--y\r\n\r\nv\r\n--y--\r\n--x--\r\n'),
    ("application/json", b'{"id": 1e999, "page": NaN, "key": [1]}'),
    ("application/json", b"\xff\xfe"),
]


def read_names(handler: Callable[..., Any]) -> set[str]:
    """Parameter names `handler` reads, itself or through the functions it calls."""
    names: set[str] = set()
    seen: set[Any] = set()
    todo = [handler]
    while todo:
        function = inspect.unwrap(todo.pop())  # getsource reads the wrapped one anyway
        if function in seen:
            continue
        seen.add(function)
        try:
            source = inspect.getsource(function)
        except (OSError, TypeError):
            continue
        names.update(NAME_READ.findall(source))
        todo.extend(_callees(function, CALLED.findall(source)))
    return names


def _callees(function: Any, called: list[str]) -> Iterator[Any]:
    """The functions named in `called` that `function` can reach: its module's, those it
    closes over (a guard's handler), and methods of the object it is bound to or closes
    over (a source's `self`)."""
    try:
        nonlocals = inspect.getclosurevars(function).nonlocals
    except TypeError:  # a builtin or a callable object
        nonlocals = {}
    scopes = [getattr(function, "__globals__", {}), nonlocals]
    objects = [o for o in (getattr(function, "__self__", None), *nonlocals.values())
               if o is not None and not inspect.isfunction(o)]
    for name in called:
        for scope in scopes:
            if inspect.isfunction(scope.get(name)):
                yield scope[name]
        for obj in objects:
            found = getattr(obj, name, None)
            if inspect.ismethod(found) or inspect.isfunction(found):
                yield found


@pytest.fixture(params=BACKENDS)
async def buffer_setting(request, tmp_path) -> AsyncIterator[str]:
    """The buffer section: an SQLite file, or a PostgreSQL schema (NUL is its poison)."""
    if request.param == "sqlite":
        yield f"{{path: {tmp_path}/b.db}}"
        return
    async with fresh_schema_url() as url:
        yield f"{{url: '{url}'}}"


@pytest.fixture
async def walked(tmp_path, serve, monkeypatch, buffer_setting):
    """The app with both built-in plugins and one stored conversation; (url, app)."""
    config = tmp_path / "config.yaml"
    config.write_text(
        f"server: {{admin_token: {TOKEN}}}\nbuffer: {buffer_setting}\nplugins:\n"
        f"  whatsapp: {{verify_token: verify, app_secret: {SECRET}}}\n"
        "  leadsquared: {host: simulator, access_key: a, secret_key: b, sync_interval: 1h}\n")
    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    app[BRIDGE].login_throttle = LoginThrottle(free=10**9)  # every guess is checked
    monkeypatch.setattr(page, "LOGIN_FAILURE_DELAY", 0.0)
    url = await serve(app)
    body = json.dumps(p.envelope(p.message_change([p.text_message("wamid.w1", CUSTOMER)])))
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/webhooks/whatsapp", data=body.encode(),
            headers={"Content-Type": "application/json",
                     "X-Hub-Signature-256": sign(body.encode(), SECRET)}) as resp:
        assert resp.status == 200
    return url, app


def _routes(app) -> list[tuple[str, str, set[str]]]:
    """(method, path, names it reads) of every route but HEAD (GET's own handler)."""
    routes = []
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info()
        path = info.get("path") or info.get("formatter")
        routes.append((route.method, path, read_names(route.handler)))
    return routes


def _paths(path: str) -> Iterator[str]:
    """`path` itself, or each hostile value in each of its {variables}."""
    variables = re.findall(r"\{(\w+)[^}]*\}", path)
    if not variables:
        yield path
        return
    for variable in variables:
        for value in [*HOSTILE, "1"]:
            filled = {v: quote(value if v == variable else "1", safe="") for v in variables}
            yield re.sub(r"\{(\w+)[^}]*\}", lambda m, filled=filled: filled[m[1]], path)


class Walk:
    """Sends the requests and keeps every answer that breaks the rule."""

    def __init__(self, http: aiohttp.ClientSession, url: str, baseline: dict[str, str]):
        self.http, self.url, self.baseline = http, url, baseline
        self.sent = 0
        self.broken: list[str] = []
        self.seen: Counter[tuple[str, int]] = Counter()

    async def send(self, method: str, target: str | URL, what: str, **kw: Any) -> None:
        self.sent += 1
        kw.setdefault("headers", {})["Authorization"] = f"Bearer {TOKEN}"
        try:
            await self._check(method, target, what, **kw)
        except aiohttp.ClientError as exc:  # e.g. a Location header too long to read
            self.broken.append(f"{method} {what}: unreadable answer ({exc!r:.200})")

    async def _check(self, method: str, target: str | URL, what: str, **kw: Any) -> None:
        async with self.http.request(method, target, allow_redirects=False, **kw) as resp:
            text = await resp.text(errors="replace")
            plain = resp.content_type == "text/plain"
            self.seen[(str(target).split("?")[0].removeprefix(self.url), resp.status)] += 1
            if resp.status >= 500 or "Traceback" in text or (
                    resp.status >= 400 and plain and ("\n" in text.strip() or len(text) > 300)):
                self.broken.append(f"{method} {what}: {resp.status} {text[:200]!r}")

    async def parameter(self, method: str, path: str, name: str) -> None:
        others = {k: v for k, v in self.baseline.items() if k != name}
        for value in HOSTILE:
            what = f"{path} {name}={value[:30]!r}"
            await self.send(method, self.url + path, what, params={**others, name: value})
            if method == "POST":
                await self.send(method, self.url + path, "form " + what,
                                data={**others, name: value})
                await self.send(method, self.url + path, "json " + what,
                                json={**others, name: value})
        for raw in RAW:
            query = "&".join(f"{k}={quote(v, safe='')}" for k, v in others.items())
            target = URL(f"{self.url}{path}?{query}&{quote(name)}={raw}", encoded=True)
            await self.send(method, target, f"{path} {name}={raw} (raw)")
        twice = [*others.items(), (name, "1"), (name, "2")]
        await self.send(method, self.url + path, f"{path} {name} twice", params=twice)
        if method == "POST":
            await self.send(method, self.url + path, f"form {path} {name} twice",
                            data=twice)
            await self.send(method, self.url + path, f"form {path} {name}=100 KB",
                            data={**others, name: "7" * 100_000})
            for number in ("1e999", "NaN", "-Infinity", "9223372036854775808", "[1, 2]"):
                await self.send(method, self.url + path, f"json {path} {name}={number}",
                                data=f'{{"{name}": {number}}}'.encode(),
                                headers={"Content-Type": "application/json"})


async def test_every_route_answers_hostile_parameters_with_a_4xx_never_a_5xx(walked, caplog):
    url, app = walked
    routes = _routes(app)
    read = {name for _, _, names in routes for name in names}
    # the walk finds what the handlers read, through the admin guard and the source's method
    assert {"id", "page", "sort", "show", "q", "sink", "key", "message_id", "csrf", "days",
            "confirm", "token", "requeued", "hub.challenge", "hub.verify_token"} <= read
    csrf = hmac.new(app[BRIDGE].csrf_key, b"loopback", hashlib.sha256).hexdigest()
    baseline = {"csrf": csrf, "sink": "leadsquared", "key": "+" + CUSTOMER}
    caplog.set_level(logging.ERROR)
    async with aiohttp.ClientSession() as http:
        walk = Walk(http, url, baseline)
        for method, path, names in routes:
            for concrete in _paths(path):
                for name in sorted(names):
                    await walk.parameter(method, concrete, name)
                if method == "POST":
                    for content_type, body in BROKEN_FORMS:
                        await walk.send(method, url + concrete,
                                        f"{concrete} body {body[:30]!r} as {content_type}",
                                        data=body, headers={"Content-Type": content_type})
    unhandled = [r.getMessage() for r in caplog.records if "unhandled" in r.getMessage()]
    assert walk.broken == [] and unhandled == [], "\n".join(walk.broken[:40] + unhandled[:5])
    assert len(routes) >= 15 and walk.sent > 1000
    # the baseline got each form past its guard and CSRF check to the parameters themselves
    for reached in [("/conversation/file", 400), ("/dead-letters/requeue", 400), ("/login", 401),
                    ("/conversation/purge", 400), ("/conversation/requeue", 303),
                    ("/backfill", 400), ("/", 400), ("/webhooks/whatsapp", 400)]:
        assert walk.seen[reached], (reached, sorted(walk.seen.items()))


async def test_the_reported_id_and_its_kin_get_a_one_line_400(walked):
    """The issue's reproduction, and what int() alone would have let through."""
    url, _ = walked
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=bearer) as http:
        for value in ("9223372036854775808", "-1", "0", "\u0661\u0662\u0663", " 7", "1_0",
                      "+7", "7.0", ""):
            async with http.get(f"{url}/conversation/file", params={"id": value}) as resp:
                assert resp.status == 400, (value, resp.status)
                assert (await resp.text()).startswith("id must be a whole number from 1 to ")
        async with http.get(f"{url}/conversation/file?id=1&id=2") as resp:
            assert (resp.status, await resp.text()) == (400, "id is given 2 times (give it "
                                                             "once)")
        async with http.get(f"{url}/conversation/file", params={"id": "9223372036854775807"}
                            ) as resp:
            assert resp.status == 404  # the largest id is a fair question: no such file
        async with http.get(f"{url}/", params={"requeued": "Your account is locked, call "
                                                           "+1 555 0100"}) as resp:
            assert resp.status == 400  # a banner's number, never text of the sender's
        async with http.get(f"{url}/", params={"sink": "no-such-sink"}) as resp:
            assert (resp.status, await resp.text()) == (404, "no sink named 'no-such-sink'")
        async with http.post(f"{url}/backfill", params={"sink": "leadsquared",
                                                        "days": "\u0661"}) as resp:
            assert resp.status == 400 and "days must be a number" in await resp.text()
        async with http.post(f"{url}/backfill") as resp:  # was 404 "no running sink named ''"
            assert resp.status == 400 and (await resp.text()).startswith("sink is required")
