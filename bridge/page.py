"""The status page ("Mini-CRM view"): server-rendered HTML, login form, requeue button."""

from __future__ import annotations

import hashlib
import hmac
import math
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from aiohttp import web

from bridge.security import (
    SESSION_COOKIE,
    admin_only,
    admin_token,
    is_loopback,
    refusal,
)
from bridge.state import BRIDGE
from bridge.status import status_report
from bridge.throttle import client_key

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("bridge", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined)
LOGIN_FAILURE_DELAY = 1.0  # seconds: slows token guessing through the form


def page_routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.post("/dead-letters/requeue", admin_only(requeue)),
    ]


def zone(name: str | None) -> tzinfo | None:
    """server.timezone, or None for the system's zone."""
    return ZoneInfo(name) if name else None


def _when(value: datetime | None, tz: tzinfo | None) -> str:
    if value is None:
        return "never"
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def csrf_token(request: web.Request) -> str:
    """A form token bound to this session (or to loopback use) and to this process."""
    subject = request.cookies.get(SESSION_COOKIE) or "loopback"
    key = request.app[BRIDGE].csrf_key
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


def _render(name: str, status: int = 200, **context: Any) -> web.Response:
    html = TEMPLATES.get_template(name).render(**context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "style-src 'unsafe-inline'; form-action 'self'"})


async def index(request: web.Request) -> web.StreamResponse:
    """The status page: sinks, conversations with last synced time, dead letters."""
    refused = refusal(request)
    if refused is not None:
        raise web.HTTPSeeOther("/login") if admin_token(request) else refused
    bridge = request.app[BRIDGE]
    search = request.query.get("q", "").strip() or None
    report = await status_report(bridge, search, dead_letters=50)
    tz = zone(bridge.config.server.timezone)
    return _render("status.html", report=report, search=search or "",
                   when=lambda value: _when(value, tz), csrf=csrf_token(request),
                   requeued=request.query.get("requeued"),
                   logged_in=SESSION_COOKIE in request.cookies)


async def login_form(request: web.Request) -> web.StreamResponse:
    if not admin_token(request):
        raise web.HTTPSeeOther("/")
    return _render("login.html", error=None)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the admin token typed into the form; on success set the session cookie."""
    import asyncio

    expected = admin_token(request)
    if not expected:
        raise web.HTTPSeeOther("/")
    form = await request.post()
    throttle, client = request.app[BRIDGE].login_throttle, client_key(request.remote)
    wait = math.ceil(throttle.wait(client))
    if wait:  # refused unchecked, the right token too: parallel guesses learn nothing
        page = _render("login.html", status=429, error="Too many wrong tokens from this "
                       f"address: try again in {wait} s.")
        page.headers["Retry-After"] = str(wait)
        return page
    given = str(form.get("token", ""))
    if not hmac.compare_digest(given.encode(), expected.encode()):
        throttle.failed(client)
        await asyncio.sleep(LOGIN_FAILURE_DELAY)
        return _render("login.html", status=401, error="That is not the admin token.")
    throttle.succeeded(client)
    response = web.HTTPSeeOther("/")
    sessions = request.app[BRIDGE].sessions
    response.set_cookie(SESSION_COOKIE, sessions.open(), max_age=int(sessions.ttl),
                        httponly=True, samesite="Strict", path="/",
                        secure=_served_securely(request))
    raise response


def _served_securely(request: web.Request) -> bool:
    """HTTPS here or at the reverse proxy: then the cookie is marked Secure."""
    forwarded = request.headers.get("X-Forwarded-Proto", "")
    return request.secure or forwarded == "https" or not is_loopback(request)


async def logout(request: web.Request) -> web.StreamResponse:
    """End the session on the server (a copy of the cookie is dead too) and drop the cookie."""
    request.app[BRIDGE].sessions.close(request.cookies.get(SESSION_COOKIE))
    response = web.HTTPSeeOther("/login" if admin_token(request) else "/")
    response.del_cookie(SESSION_COOKIE, path="/")
    raise response


async def requeue(request: web.Request) -> web.StreamResponse:
    """The page's requeue button: one dead letter, or all of a sink's."""
    bridge = request.app[BRIDGE]
    form = await request.post()
    if not hmac.compare_digest(str(form.get("csrf", "")).encode(),
                               csrf_token(request).encode()):
        raise web.HTTPForbidden(text="the form is stale or forged (reload the page)")
    sink = str(form.get("sink", ""))
    if sink not in {s.name for s in bridge.sinks}:
        raise web.HTTPBadRequest(text=f"no sink named {sink!r}")
    ids = _ids(form.getall("message_id", []))
    moved = await bridge.buffer.requeue(sink, ids or None)
    if sink in bridge.runners:
        bridge.runners[sink].wake()
    raise web.HTTPSeeOther(f"/?requeued={moved}")


def _ids(values: list[Any]) -> list[int]:
    """Dead-letter ids from the form: ASCII digits that fit SQLite's 64-bit integers."""
    ids = []
    for value in map(str, values):
        if not (value.isascii() and value.isdigit() and len(value) <= 19
                and int(value) < 2**63):
            raise web.HTTPBadRequest(text="message_id must be a dead letter's id (a whole "
                                          "number from the status page)")
        ids.append(int(value))
    return ids

