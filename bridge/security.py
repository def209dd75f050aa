"""Request-level safety: no tracebacks to clients, admin endpoints behind a token."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

logger = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn an unexpected exception into a one-line 500; the traceback goes to the log."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except Exception:
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response({"error": "internal error (see the bridge log)"}, status=500)


def is_loopback(request: web.Request) -> bool:
    """Whether the peer is on this machine."""
    try:
        return ipaddress.ip_address(request.remote or "").is_loopback
    except ValueError:
        return False


def token_ok(request: web.Request, expected: str) -> bool:
    """Bearer header matches the admin token (constant time)."""
    header = request.headers.get("Authorization", "")
    given = header[7:] if header.startswith("Bearer ") else ""
    return hmac.compare_digest(given.encode(), expected.encode())


def admin_only(handler: Handler) -> Handler:
    """Require server.admin_token; with none configured, answer loopback peers only."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        from bridge.app import BRIDGE

        expected = request.app[BRIDGE].config.server.admin_token
        if expected:
            if not token_ok(request, expected):
                raise web.HTTPUnauthorized(text="admin token required (Authorization: Bearer ...)")
        elif not is_loopback(request):
            raise web.HTTPUnauthorized(
                text="no server.admin_token is configured, so this is open to loopback only")
        return await handler(request)

    return guarded
