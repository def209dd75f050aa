"""A stand-in for the Graph API's media endpoints, on 127.0.0.1, for tests and the demo.

What it serves, and where each behaviour comes from:
- `GET /<version>/<media id>` with `Authorization: Bearer <token>` answers
  `{"messaging_product": "whatsapp", "url", "mime_type", "sha256" (hex), "file_size"
  (a string), "id"}` [whatsapp-webhooks.md §8, M-MEDIA]. `phone_number_id`, when given,
  must be the number the media belongs to, else the lookup is refused [M-MEDIA].
- The `url` is valid for `url_ttl` seconds (default 300: "valid for 5 minutes") and
  needs the same bearer token: without it the file is not served [M-MEDIA].
- An unknown or deleted id: HTTP 400, Graph's error object with code 100, subcode 33,
  "Unsupported get request. Object with ID ... does not exist ..." (Graph's generic answer
  for a missing object, as quoted in public Graph API threads; the reference is silent).
  Whether Graph sends that object with 400 or 404 is not documented: `missing_status`
  switches between the two (the fetcher reads the error object, not the status).
- A wrong token: HTTP 401, OAuthException code 190 (Graph's invalid-token answer; the
  reference is silent).
- The reference is silent on what an expired download URL answers: `expired_status`
  switches between 404 (default), 401, 403 and 410; the fetcher must handle each.
Faults (POST /_sim/faults): `outage` (every call 503), `url_ttl`, `expired_status`,
`missing_status`, `slow_bytes_per_s` (throttled downloads). Media are added with POST
/_sim/media (raw body, streamed to disk; ?mime_type=&phone_number_id=) and deleted with
DELETE /_sim/media/<id>.
POST /_sim/reset (test tooling) puts the stand-in back as it was started: every media item
(and its file) gone, faults and counters back to their defaults, a new download-link key
(URLs handed out before no longer work), and the coexistence part's settings, webhook
target, syncs asked for and webhooks still to send dropped; one process serves many tests,
each from a clean stand-in, as the LeadSquared simulator's K11 reset does.

Coexistence (plugins.whatsapp.coexistence_sim; docs/graph-simulator.md has every source):
`POST /<version>/<phone number id>/smb_app_data` starts the contacts or history sync and
then posts the webhooks Meta would send, signed, to the bridge set with POST /_sim/webhook.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from plugins.whatsapp.coexistence_sim import add_coexistence, reset_coexistence

GONE_MESSAGE = ("Unsupported get request. Object with ID '{id}' does not exist, cannot be "
                "loaded due to missing permissions, or does not support this operation. "
                "Please read the Graph API documentation at "
                "https://developers.facebook.com/docs/graph-api")
EXPIRED_STATUSES = (404, 401, 403, 410)
MISSING_STATUSES = (400, 404)  # the missing-object error object with either status


@dataclass
class StoredMedia:
    id: str
    path: Path
    mime_type: str
    sha256: str
    size: int
    phone_number_id: str | None = None


@dataclass
class GraphState:
    token: str
    directory: Path
    url_ttl: float = 300.0
    expired_status: int = 404
    missing_status: int = 400
    outage: bool = False
    slow_bytes_per_s: int = 0
    media: dict[str, StoredMedia] = field(default_factory=dict)
    lookups: int = 0
    downloads: int = 0
    refused: int = 0
    link_key: bytes = field(default_factory=lambda: secrets.token_bytes(16))

    def reset(self) -> None:
        """Back to the state of a new stand-in: media (and their files) gone, faults and
        counters at their defaults, a new link key."""
        for item in self.media.values():
            item.path.unlink(missing_ok=True)
        fresh = GraphState(token=self.token, directory=self.directory)
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(fresh, name))

    def sign(self, media_id: str, expires: int) -> str:
        return hmac.new(self.link_key, f"{media_id}:{expires}".encode(), "sha256").hexdigest()


STATE = web.AppKey("graph_state", GraphState)


def create_graph_app(token: str, directory: str | Path | None = None) -> web.Application:
    """The Graph stand-in; media files live in `directory` (default: a new temp dir)."""
    folder = Path(directory) if directory else Path(tempfile.mkdtemp(prefix="graph-sim-"))
    app = web.Application(client_max_size=1024 ** 3)
    state = app[STATE] = GraphState(token=token, directory=folder)
    add_coexistence(app, state, lambda request: _authorised(request, state),
                    lambda media_id, mime, data, phone_id: serve_bytes(
                        state, media_id, mime, data, phone_id))
    app.add_routes([
        web.post("/_sim/media", add_media),
        web.delete("/_sim/media/{id}", delete_media),
        web.post("/_sim/faults", faults),
        web.post("/_sim/reset", reset),
        web.get("/_sim/stats", stats),
        web.get("/download/{id}", download),
        web.get("/{version:v[0-9]+\\.[0-9]+}/{id}", lookup),
    ])
    return app


def _error(status: int, message: str, kind: str, code: int,
           subcode: int | None = None) -> web.Response:
    error: dict[str, Any] = {"message": message, "type": kind, "code": code,
                             "fbtrace_id": secrets.token_urlsafe(8)}
    if subcode is not None:
        error["error_subcode"] = subcode
    return web.json_response({"error": error}, status=status)


def _authorised(request: web.Request, state: GraphState) -> bool:
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {state.token}".encode())


async def lookup(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.lookups += 1
    if state.outage:
        return _error(503, "Service temporarily unavailable", "OAuthException", 2)
    if not _authorised(request, state):
        return _error(401, "Invalid OAuth access token - Cannot parse access token",
                      "OAuthException", 190)
    media_id = request.match_info["id"]
    item = state.media.get(media_id)
    wanted = request.query.get("phone_number_id")
    if item is None or (wanted and item.phone_number_id and wanted != item.phone_number_id):
        return _error(state.missing_status, GONE_MESSAGE.format(id=media_id),
                      "GraphMethodException", 100, 33)
    expires = int(time.time() + state.url_ttl)
    url = (f"{request.scheme}://{request.host}/download/{media_id}"
           f"?ext={expires}&hash={state.sign(media_id, expires)}")
    return web.json_response({"messaging_product": "whatsapp", "url": url,
                              "mime_type": item.mime_type, "sha256": item.sha256,
                              "file_size": str(item.size), "id": media_id})


async def download(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    if state.outage:
        return web.Response(status=503, text="Service Unavailable")
    media_id = request.match_info["id"]
    try:
        expires = int(request.query.get("ext", ""))
    except ValueError:
        expires = 0
    good = hmac.compare_digest(request.query.get("hash", ""), state.sign(media_id, expires))
    item = state.media.get(media_id)
    if not _authorised(request, state):
        state.refused += 1
        return web.Response(status=401, text="")
    if not good or expires < time.time() or item is None:
        state.refused += 1
        return web.Response(status=state.expired_status, text="")
    state.downloads += 1
    if not state.slow_bytes_per_s:
        return web.FileResponse(item.path, headers={"Content-Type": item.mime_type})
    response = web.StreamResponse(headers={"Content-Type": item.mime_type,
                                           "Content-Length": str(item.size)})
    await response.prepare(request)
    chunk = max(1, state.slow_bytes_per_s // 10)
    with open(item.path, "rb") as handle:
        while block := handle.read(chunk):
            await response.write(block)
            await asyncio.sleep(0.1)
    await response.write_eof()
    return response


def serve_bytes(state: GraphState, media_id: str, mime: str, data: bytes,
                phone_number_id: str | None = None) -> None:
    """Serve `data` as media `media_id` (written to the stand-in's directory)."""
    path = state.directory / media_id
    path.write_bytes(data)
    state.media[media_id] = StoredMedia(media_id, path, mime, hashlib.sha256(data).hexdigest(),
                                        len(data), phone_number_id)


async def add_media(request: web.Request) -> web.Response:
    """Store the raw body as a new media item (streamed to disk); its id and sha256."""
    state = request.app[STATE]
    media_id = request.query.get("id") or str(10 ** 15 + secrets.randbelow(10 ** 15))
    path = state.directory / media_id
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as handle:
        async for block in request.content.iter_chunked(64 * 1024):
            digest.update(block)
            size += len(block)
            handle.write(block)
    item = StoredMedia(media_id, path, request.query.get("mime_type",
                                                         "application/octet-stream"),
                       digest.hexdigest(), size, request.query.get("phone_number_id"))
    state.media[media_id] = item
    return web.json_response({"id": media_id, "sha256": item.sha256, "file_size": size})


async def delete_media(request: web.Request) -> web.Response:
    state = request.app[STATE]
    item = state.media.pop(request.match_info["id"], None)
    if item is None:
        raise web.HTTPNotFound(text="no such media")
    item.path.unlink(missing_ok=True)
    return web.json_response({"deleted": item.id})


async def faults(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await request.json()
    if "outage" in body:
        state.outage = bool(body["outage"])
    if "url_ttl" in body:
        state.url_ttl = float(body["url_ttl"])
    if "slow_bytes_per_s" in body:
        state.slow_bytes_per_s = int(body["slow_bytes_per_s"])
    if "expired_status" in body:
        if body["expired_status"] not in EXPIRED_STATUSES:
            raise web.HTTPBadRequest(text=f"expired_status must be one of {EXPIRED_STATUSES}")
        state.expired_status = body["expired_status"]
    if "missing_status" in body:
        if body["missing_status"] not in MISSING_STATUSES:
            raise web.HTTPBadRequest(text=f"missing_status must be one of {MISSING_STATUSES}")
        state.missing_status = body["missing_status"]
    return await stats(request)


async def reset(request: web.Request) -> web.Response:
    """The stand-in as it was started (test tooling: one process, many tests)."""
    await reset_coexistence(request.app)
    request.app[STATE].reset()
    return await stats(request)


async def stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.json_response({"lookups": state.lookups, "downloads": state.downloads,
                              "refused": state.refused, "media": len(state.media),
                              "outage": state.outage, "url_ttl": state.url_ttl,
                              "expired_status": state.expired_status,
                              "missing_status": state.missing_status})


async def serve(host: str, port: int, token: str, directory: str | None = None) -> None:
    """Run the stand-in until cancelled."""
    runner = web.AppRunner(create_graph_app(token, directory))
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    print(f"Graph API stand-in on http://{host}:{port}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
