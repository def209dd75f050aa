"""A reference endpoint: checks the signature, keeps the first post of each Idempotency-Key.

`bridge webhook receive` runs it to try the sink out. Tests drive it directly and can make
it fail (fail) or store a post and lose the answer (lose_answers), as real endpoints do.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from chatbridge_webhook_sink.payload import KEY_HEADER, SIGNATURE_HEADER, verify

OnPost = Callable[[str, dict[str, Any], bool], None]


class Receiver:
    """POST <path> takes signed batches; GET /_received lists them by key (loopback use)."""

    def __init__(self, secret: str, path: str = "/chatbridge", on_post: OnPost | None = None):
        self.secret, self.path, self.on_post = secret, path, on_post
        self.posts: dict[str, dict[str, Any]] = {}  # Idempotency-Key -> the first body
        self.failure: tuple[int, str | None] | None = None  # (status, Retry-After)
        self.lose_answers = False
        self.url = ""
        self._runner: web.AppRunner | None = None

    def fail(self, status: int, retry_after: str | None = None) -> None:
        """Answer every post with `status` (and a Retry-After) until heal()."""
        self.failure = (status, retry_after)

    def heal(self) -> None:
        """Answer normally again."""
        self.failure, self.lose_answers = None, False

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve on host:port (0: any free port); return the URL for plugins.webhook.url."""
        app = web.Application(client_max_size=16 * 2**20)
        app.router.add_post(self.path, self._take)
        app.router.add_get("/_received", self._list)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        self.url = f"http://{host}:{self._runner.addresses[0][1]}{self.path}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _take(self, request: web.Request) -> web.Response:
        if self.failure is not None:
            status, after = self.failure
            return web.json_response({"error": "failing on purpose"}, status=status,
                                     headers={"Retry-After": after} if after else None)
        raw = await request.read()
        if not verify(raw, self.secret, request.headers.get(SIGNATURE_HEADER)):
            raise web.HTTPUnauthorized(text=f"bad or missing {SIGNATURE_HEADER}")
        key = request.headers.get(KEY_HEADER)
        if not key:
            raise web.HTTPBadRequest(text=f"missing {KEY_HEADER}")
        try:
            document = json.loads(raw)
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON") from None
        duplicate = key in self.posts
        self.posts.setdefault(key, document)
        if self.on_post is not None:
            self.on_post(key, document, duplicate)
        if self.lose_answers and request.transport is not None:
            request.transport.close()  # stored, but the sender never hears back
        return web.json_response({"id": key, "duplicate": duplicate})

    async def _list(self, request: web.Request) -> web.Response:
        return web.json_response(self.posts)


async def serve(host: str, port: int, secret: str, echo: Callable[[str], None]) -> None:
    """Run a Receiver until cancelled, printing one line per post."""

    def show(key: str, document: dict[str, Any], duplicate: bool) -> None:
        count = len(document.get("messages") or [])
        again = " (a repeat: not stored again)" if duplicate else ""
        echo(f"{key}: {count} message(s) of {document.get('conversation')}{again}")

    receiver = Receiver(secret, on_post=show)
    echo(f"receiving on {await receiver.start(host, port)}")
    try:
        await asyncio.Event().wait()
    finally:
        await receiver.stop()
