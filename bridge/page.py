"""The status page ("Mini-CRM view"): server-rendered HTML, login form, requeue button."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import logging
import math
import time
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web
from markupsafe import Markup, escape

from bridge import params
from bridge.attention import attention, number_of, person_of
from bridge.buffer.reads import SHOWS, SORTS
from bridge.cluster import cluster_report, tell_cluster
from bridge.health import ago
from bridge.page_charts import charts
from bridge.render import displayable, in_zone, render_line
from bridge.security import (
    SESSION_COOKIE,
    admin_only,
    admin_token,
    digest,
    is_loopback,
    refusal,
)
from bridge.state import BRIDGE
from bridge.status import (
    PER_PAGE,
    add_health,
    bridge_health,
    conversation_report,
    page_data,
    record_link,
    sink_details,
)
from bridge.textreport import zone
from bridge.throttle import client_key

if TYPE_CHECKING:
    import jinja2

logger = logging.getLogger(__name__)


def plain(value: Any) -> str:
    """Text a customer or a CRM wrote, without direction or control characters: a name
    holding U+202E (right-to-left override) would otherwise show the number beside it
    reversed, and a file 'photo\u202egpj.exe' as 'photoexe.jpg'."""
    return displayable("" if value is None else str(value))


def isolated(value: Any) -> Markup:
    """`plain(value)` in <bdi>: an Arabic or Hebrew name keeps its own direction without
    reordering the number or words around it."""
    return Markup("<bdi>{}</bdi>").format(plain(value))


@functools.cache
def templates() -> jinja2.Environment:
    """The page's templates, loaded on the first page served: jinja2 is not imported by
    a bridge (or a command) that never renders one."""
    import jinja2

    found = jinja2.Environment(loader=jinja2.PackageLoader("bridge", "templates"),
                               autoescape=True, undefined=jinja2.StrictUndefined)
    found.filters.update(plain=plain, bdi=isolated, person=person_of, number=number_of)
    return found
LOGIN_FAILURE_DELAY = 1.0  # seconds: slows token guessing through the form
REFRESH_EVERY = 30  # seconds between the page's refreshes of its live parts (script);
# ?refresh=N (5 to 3600) sets another, e.g. for a wall display
NOSCRIPT_REFRESH = 60  # seconds: a whole-page reload, for a browser without scripts
SCRIPT = (Path(__file__).parent / "static" / "page.js").read_bytes()


def page_routes() -> list[web.RouteDef]:
    return [
        web.get("/", index),
        web.get("/static/page.js", page_script),
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.post("/dead-letters/requeue", admin_only(requeue)),
        web.get("/conversation", conversation),
        web.get("/conversation/file", media_file),
        web.post("/conversation/requeue", admin_only(requeue_conversation)),
        web.get("/conversation/purge", purge_form),
        web.post("/conversation/purge", admin_only(purge)),
    ]
MAX_PAGE = 1_000_000
TOKEN_LONGEST = 4096  # characters of a typed admin token; a longer one is refused unchecked


def _epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _when(value: datetime | None, tz: tzinfo | None) -> str:
    if value is None:
        return "never"
    return in_zone(value, tz)


def relative(value: datetime | float | None, tz: tzinfo | None, now: float,
             never: str = "never", due: bool = False) -> Markup:
    """'42 s ago' or 'in 2 min', the absolute time (with its zone) on hover; a time
    something is `due` at reads 'now' once it has passed (it is under way)."""
    if value is None:
        return Markup(escape(never))
    when = value if isinstance(value, datetime) else datetime.fromtimestamp(value, UTC)
    delta = when.timestamp() - now
    if due and delta < 0:
        delta = 0.0
    words = "now" if abs(delta) < 1 else f"in {ago(delta)}" if delta > 0 else f"{ago(-delta)} ago"
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        when.astimezone(UTC).isoformat(timespec="seconds"), _when(when, tz), words)


def zone_label(tz: tzinfo | None, now: float) -> str:
    """'Asia/Kolkata (IST)', or "this server's zone (UTC)"."""
    abbreviation = datetime.fromtimestamp(now, UTC).astimezone(tz).strftime("%Z")
    name = getattr(tz, "key", None)
    return f"{name} ({abbreviation})" if name else f"this server's zone ({abbreviation})"


def csrf_token(request: web.Request) -> str:
    """A form token bound to this session (or to loopback use) and to this process."""
    subject = request.cookies.get(SESSION_COOKIE) or "loopback"
    key = request.app[BRIDGE].csrf_key
    return hmac.new(key, subject.encode(), hashlib.sha256).hexdigest()


def _render(name: str, status: int = 200, **context: Any) -> web.Response:
    html = templates().get_template(name).render(**context)
    return web.Response(text=html, status=status, content_type="text/html",
                        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                 "Content-Security-Policy": "default-src 'self'; "
                                 "style-src 'unsafe-inline'; form-action 'self'"})


def _signed_in_or_raise(request: web.Request) -> None:
    """Let the request through, or send a browser to the login form (or refuse it)."""
    refused = refusal(request)
    if refused is not None:
        raise web.HTTPSeeOther("/login") if admin_token(request) else refused


def _list_query(request: web.Request) -> dict[str, Any]:
    """The list's search, sort, filter and page from the address; a bad value is a 400."""
    query = request.query
    return {"search": (params.text(query, "q") or "").strip() or None,
            "sort": params.choice(query, "sort", SORTS, "last_message"),
            "show": params.choice(query, "show", SHOWS, "all"),
            "page": params.whole(query, "page", 1, low=1, high=MAX_PAGE),
            "sink": params.text(query, "sink") or None,
            "refresh": params.whole(query, "refresh", REFRESH_EVERY, low=5, high=3600)}


async def _page_reads(view: Any, wanted: dict[str, Any]) -> dict[str, Any]:
    """The page's figures, conversation list and lists to act on, in one snapshot."""
    data = await page_data(view, wanted["sink"], search=wanted["search"], sort=wanted["sort"],
                           show=wanted["show"], page=wanted["page"])
    data["attention"] = await attention(view, data["sinks"], data["sink"])
    return data


async def index(request: web.Request) -> web.StreamResponse:
    """The status page: the verdict, what needs attention, conversations, then details."""
    _signed_in_or_raise(request)
    bridge = request.app[BRIDGE]
    wanted = _list_query(request)
    data = await bridge.buffer.snapshot(lambda view: _page_reads(view, wanted))
    if wanted["sink"] not in (None, data["sink"]):  # page_data falls back to the first sink
        raise web.HTTPNotFound(text=f"no sink named {params.shown(wanted['sink'])}")
    cluster = await cluster_report(bridge)
    now = time.time()
    await add_health(bridge, data["sinks"], cluster, now)
    _add_live(bridge, data)
    data["health"] = bridge_health(bridge, data["sinks"])
    tz = zone(bridge.config.server.timezone)

    def link(anchor: str = "conversations", **change: Any) -> str:
        """This list's address with some parameters changed (page back to 1 unless given),
        opened at `anchor` so the results are on screen."""
        params = {"sink": data["sink"], "q": wanted["search"], "sort": wanted["sort"],
                  "show": wanted["show"], "page": 1, **change}
        defaults = {"sort": "last_message", "show": "all", "page": 1}
        kept = {k: v for k, v in params.items() if v and defaults.get(k) != v}
        return ("/?" + urlencode(kept) if kept else "/") + (f"#{anchor}" if anchor else "")

    pages = max(1, math.ceil((data["total"] or 0) / PER_PAGE))
    return _render("status.html", data=data, wanted=wanted, pages=pages, link=link,
                   charts=await charts(bridge, data["sinks"], tz, now),
                   cluster=cluster,
                   stamp=lambda value: _when(_epoch(value), tz),
                   rel=lambda value, never="never", due=False: relative(value, tz, now, never,
                                                                         due),
                   zone=zone_label(tz, now), updated=_when(_epoch(now), tz),
                   refresh=wanted["refresh"],
                   noscript_refresh=max(wanted["refresh"], NOSCRIPT_REFRESH),
                   sources=[source.name for source in bridge.sources],
                   conversation_link=_conversation_link, label=_label, detail=_detail,
                   when=lambda value: _when(value, tz), csrf=csrf_token(request),
                   requeued=params.whole(request.query, "requeued"),
                   purged=params.whole(request.query, "purged"),
                   purge_left=PURGE_LEFT.get(params.text(request.query, "left", "")),
                   logged_in=SESSION_COOKIE in request.cookies)


async def page_script(request: web.Request) -> web.StreamResponse:
    """The page's small refresh script (the page works without it)."""
    return web.Response(body=SCRIPT, content_type="text/javascript",
                        headers={"Cache-Control": "no-cache"})


def _detail(value: Any) -> str:
    """A sink's describe() value as a reader wants it: yes/no, a list joined, "–" for none
    (a plugin's dict holds Python values: True, [12000], 0.0 read as code on the page)."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple | set | frozenset):
        return ", ".join(_detail(v) for v in value) or "none"
    return str(value)


def _label(key: str) -> str:
    """A sink's describe() key as a label: 'throttled_for_s' -> 'Throttled for (s)'."""
    words = key.replace("_", " ").strip()
    if words.endswith(" s"):
        words = words[:-2] + " (s)"
    return words[:1].upper() + words[1:]


def _add_live(bridge: Any, data: dict[str, Any]) -> None:
    """What only the running process knows: the sinks' details and record links."""
    sinks = {sink.name: sink for sink in bridge.sinks}
    for entry in data["sinks"]:
        entry["details"] = sink_details(sinks.get(entry["sink"]))
    chosen = sinks.get(data["sink"])
    for row in data["conversations"]:
        row["record_url"] = record_link(chosen, row["record_id"])


def _conversation_link(key: str) -> str:
    return "/conversation?" + urlencode({"key": key})


async def conversation(request: web.Request) -> web.StreamResponse:
    """One person: who they are, every stored message, and what each sink made of it."""
    _signed_in_or_raise(request)
    bridge = request.app[BRIDGE]
    key = params.text(request.query, "key", "")
    report = await conversation_report(bridge, key)
    if report is None:
        raise web.HTTPNotFound(text=f"no conversation {params.shown(key)} in the buffer")
    tz, now = zone(bridge.config.server.timezone), time.time()
    return _render("conversation.html", c=report, when=lambda value: _when(value, tz),
                   rel=lambda value, due=False: relative(value, tz, now, due=due),
                   line=render_line,
                   csrf=csrf_token(request), requeued=params.whole(request.query, "requeued"),
                   logged_in=SESSION_COOKIE in request.cookies)


# Shown in the browser; anything else (HTML, SVG, PDF ...) is only downloaded, never run.
INLINE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/gif", "audio/ogg",
                          "audio/mpeg", "audio/mp4", "audio/aac", "video/mp4", "video/3gpp"})


async def media_file(request: web.Request) -> web.StreamResponse:
    """A stored media file of one message (?id=), for the conversation page's link."""
    _signed_in_or_raise(request)
    message_id = params.whole(request.query, "id", low=1)
    if message_id is None:
        raise params.bad("id is missing (a message id, from the conversation page's link)")
    found = await request.app[BRIDGE].buffer.media_file(message_id)
    if found is None:
        raise web.HTTPNotFound(text=f"no stored file for message {message_id}")
    path, mime = found
    mime = (mime or "application/octet-stream").split(";")[0].strip().lower()
    inline = mime in INLINE_TYPES
    return web.FileResponse(path, headers={
        "Content-Type": mime if inline else "application/octet-stream",
        "Content-Disposition": "inline" if inline else
        f'attachment; filename="message-{message_id}"',
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store"})


async def login_form(request: web.Request) -> web.StreamResponse:
    if not admin_token(request):
        raise web.HTTPSeeOther("/")
    return _render("login.html", error=None)


async def login(request: web.Request) -> web.StreamResponse:
    """Check the admin token typed into the form; on success set the session cookie."""
    expected = admin_token(request)
    if not expected:
        raise web.HTTPSeeOther("/")
    form = await params.form(request)
    throttle, client = request.app[BRIDGE].login_throttle, client_key(request.remote)
    wait = math.ceil(throttle.wait(client))
    if wait:  # refused unchecked, the right token too: parallel guesses learn nothing
        page = _render("login.html", status=429, error="Too many wrong tokens from this "
                       f"address: try again in {wait} s.")
        page.headers["Retry-After"] = str(wait)
        return page
    given = params.text(form, "token", "", longest=TOKEN_LONGEST)
    if not hmac.compare_digest(digest(given), digest(expected)):  # no length shows
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
    form = await params.form(request)
    _check_form(request, form)
    sink = params.text(form, "sink", "")
    if sink not in {s.name for s in bridge.sinks}:
        raise web.HTTPBadRequest(text=f"no sink named {params.shown(sink)}")
    ids = params.ids(form, "message_id")
    moved = await bridge.buffer.requeue(sink, ids or None)
    if sink in bridge.runners:
        bridge.runners[sink].wake()
    await tell_cluster(bridge.buffer, "sync", sink)  # the processes that drain it, too
    raise web.HTTPSeeOther(f"/?requeued={moved}")


def _check_form(request: web.Request, form: Any) -> None:
    if not hmac.compare_digest(params.text(form, "csrf", "").encode(),
                               csrf_token(request).encode()):
        raise web.HTTPForbidden(text="the form is stale or forged (reload the page)")


async def requeue_conversation(request: web.Request) -> web.StreamResponse:
    """The conversation page's button: its dead letters back to pending, retries due now."""
    bridge = request.app[BRIDGE]
    form = await params.form(request)
    _check_form(request, form)
    key = params.text(form, "key", "")
    moved = await bridge.buffer.requeue_conversation(key)
    for runner in bridge.runners.values():
        runner.wake()
    await tell_cluster(bridge.buffer, "sync", None)
    raise web.HTTPSeeOther(_conversation_link(key) + f"&requeued={moved['requeued']}")


PURGE_LEFT = {
    "wal": "but another process was reading the buffer, so its WAL file could not be "
           "emptied: deleted bytes may remain there. Purge the number again",
    "copies": "but older copies remain in the buffer file's free space. Purge the number again",
    "vacuum": "but older copies remain in the buffer file's free space and VACUUM failed "
              "(free disk space, as much as the buffer takes), then purge the number again",
}


async def purge_form(request: web.Request) -> web.StreamResponse:
    """The confirmation step before a purge: the number must be typed again."""
    _signed_in_or_raise(request)
    bridge = request.app[BRIDGE]
    key = params.text(request.query, "key", "")
    found = await bridge.buffer.conversation(key, limit=1)
    if found is None:
        raise web.HTTPNotFound(text=f"no conversation {params.shown(key)} in the buffer")
    return _render("purge.html", person=found["person"], csrf=csrf_token(request),
                   error=None, conversation_link=_conversation_link,
                   logged_in=SESSION_COOKIE in request.cookies)


async def purge(request: web.Request) -> web.StreamResponse:
    """Delete one person's messages and mappings from the buffer, once confirmed."""
    bridge = request.app[BRIDGE]
    form = await params.form(request)
    _check_form(request, form)
    key = params.text(form, "key", "")
    if not key:
        raise params.bad("key is missing (the conversation's number); nothing was deleted")
    if params.text(form, "confirm", "").strip() != key:
        raise web.HTTPBadRequest(text="confirm must repeat the conversation's number exactly;"
                                      " nothing was deleted")
    found = await bridge.buffer.purge_conversation(key)
    removed = found["messages"]
    logger.warning("purged conversation ...%s from the buffer: %d messages", key[-4:], removed)
    left = _bytes_left(found)
    raise web.HTTPSeeOther(f"/?purged={removed}" + (f"&left={left}" if left else ""))


def _bytes_left(found: dict[str, Any]) -> str | None:
    """Why deleted bytes may still be in the buffer's files after a purge (SQLite), as a
    word the status page explains; None when none are."""
    if not found.get("overwritten"):
        return None  # PostgreSQL: the README says what a vacuum leaves
    if found.get("vacuum_error"):
        return "vacuum"
    if found.get("stale_copies"):
        return "copies"
    return None if found.get("wal_emptied") else "wal"

