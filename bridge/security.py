"""Request-level safety: no tracebacks to clients, admin endpoints behind a token or session."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from bridge.state import BRIDGE

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SESSION_COOKIE = "chatbridge_session"  # a page sign-in: see bridge/sessions.py
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Set by a reverse proxy: such a request came from elsewhere even if the proxy is local.
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP", "X-Client-IP", "True-Client-IP",
                 "CF-Connecting-IP")
# Host names a browser on this machine uses to reach the bridge, with or without a port.
LOOPBACK_HOST = re.compile(r"(127\.0\.0\.1|localhost|\[::1\])(:\d{1,5})?", re.IGNORECASE)
OPEN_TO_LOOPBACK = "no server.admin_token is configured, so this is open to loopback only"


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn an unexpected exception into a one-line 500; the traceback goes to the log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except RequestPayloadError as exc:  # the client's body: a bad Content-Encoding, cut off
        logger.warning("unreadable request body on %s %s: %s", request.method, request.path,
                       exc)
        refused = web.HTTPBadRequest(text="the request body could not be read (check its "
                                          "Content-Encoding)")
        refused.force_close()  # the rest of the body is unreadable: close, do not reuse
        raise refused from None
    except (ConnectionError, RuntimeError):  # RuntimeError: aiohttp's "Connection closed."
        if request.transport is not None and not request.transport.is_closing():
            logger.exception("unhandled error on %s %s", request.method, request.path)
            return web.json_response({"error": "internal error (see the bridge log)"},
                                     status=500)
        logger.debug("client hung up during %s %s", request.method, request.path)
        gone = web.HTTPBadRequest(text="the connection closed mid-request")
        gone.force_close()
        raise gone from None
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error (see the bridge log)"}, status=500)


def is_loopback(request: web.Request) -> bool:
    """Whether the peer is on this machine and no proxy forwarded the request."""
    if any(name in request.headers for name in PROXY_HEADERS):
        return False
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def loopback_host(request: web.Request) -> bool:
    """Whether the Host header names this machine: a page served to a rebound DNS name
    (evil.example resolving to 127.0.0.1) must not count as loopback use."""
    return LOOPBACK_HOST.fullmatch(request.headers.get("Host", "")) is not None


def token_ok(request: web.Request, expected: str) -> bool:
    """Bearer header matches the admin token (constant time)."""
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), expected.encode())


def admin_token(request: web.Request) -> str | None:
    return request.app[BRIDGE].config.server.admin_token


def refusal(request: web.Request) -> web.HTTPException | None:
    """Why this request may not use an admin route, or None when it may.

    With server.admin_token: a Bearer token or page session. Without: a loopback peer, no
    proxy header, and a loopback Host (the guard against DNS rebinding).
    """
    expected = admin_token(request)
    if expected:
        sessions = request.app[BRIDGE].sessions
        if token_ok(request, expected) or sessions.valid(request.cookies.get(SESSION_COOKIE)):
            return None
        return web.HTTPUnauthorized(text="admin token required (Authorization: Bearer ...)")
    if not is_loopback(request):
        return web.HTTPUnauthorized(text=OPEN_TO_LOOPBACK)
    if not loopback_host(request):
        host = request.headers.get("Host", "")[:80]
        return web.HTTPForbidden(text=f"Host {host!r} is not a loopback name: {OPEN_TO_LOOPBACK}"
                                      " (open http://127.0.0.1:PORT/, or set the token)")
    return None


def cross_site(request: web.Request) -> bool:
    """A browser sent this from another site (a CSRF attempt, or a misconfigured proxy)."""
    if request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
        return True
    origin = request.headers.get("Origin")
    return origin is not None and (origin == "null" or urlsplit(origin).netloc != request.host)


def admin_only(handler: Handler) -> Handler:
    """Require server.admin_token (or a page session); with none, answer loopback only."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        refused = refusal(request)
        if refused is not None:
            raise refused
        if request.method in UNSAFE and cross_site(request):
            raise web.HTTPForbidden(text="cross-site request refused")
        return await handler(request)

    return guarded
