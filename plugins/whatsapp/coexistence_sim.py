"""The Graph simulator's coexistence part: the one-time sync requests and the webhooks
they start (sources in docs/graph-simulator.md; shapes in plugins.whatsapp.history_script).

`POST /<version>/<phone number id>/smb_app_data` with the bearer token and
`{"messaging_product": "whatsapp", "sync_type": "history" | "smb_app_state_sync"}`:
- accepted: `{"messaging_product": "whatsapp", "request_id": ...}` [M-COEX]; then, after
  `delay` seconds, the webhooks are posted, signed with the app secret, to the URL set with
  POST /_sim/webhook (history: the rep accepted sharing, unless `share_history` says
  "decline" (one declined chunk) or "pending" (nothing is sent: the rep has not answered));
- refused, with Graph's error object: a wrong token (401, code 190); a body without a
  known sync_type (400, code 100); a request more than 24 hours after onboarding
  (`onboarded_hours_ago`), or a second request of the same sync [M-COEX: "once only",
  "within 24 hours"]. Meta does not document those two answers: `refusal_status`,
  `refusal_code` and `refusal_message` set them (default 400, code 100 with a message
  naming the rule), and the CLI prints whatever Graph says.
Settings: POST /_sim/coexistence {"onboarded_hours_ago", "share_history", "delay", "gap",
"refusal_status", "refusal_code", "refusal_message", "display_phone_number"}; what was
sent: GET /_sim/coexistence.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiohttp import web

import plugins.whatsapp.history_script as script
from plugins.whatsapp.signature import sign

logger = logging.getLogger(__name__)

SYNC_TYPES = ("history", "smb_app_state_sync")
WINDOW_HOURS = 24  # [M-COEX] the partner has 24 hours after onboarding to start a sync
SHARE_CHOICES = ("accept", "decline", "pending")
ATTEMPTS = 3  # a webhook the bridge does not answer 200 is sent again, as Meta retries


@dataclass
class Coexistence:
    """The coexistence part's state; `graph` is the stand-in's (its outage switch),
    `authorised(request)` checks the bearer token, `serve(media_id, mime, data, phone_id)`
    makes a file a media id the stand-in serves."""

    graph: Any
    authorised: Callable[[web.Request], bool]
    serve: Callable[[str, str, bytes, str], None]
    onboarded_at: float = field(default_factory=time.time)
    share_history: str = "accept"
    display_phone_number: str = "15550783881"
    delay: float = 0.3  # seconds between the accepted request and the first webhook
    gap: float = 0.2  # seconds between webhooks
    refusal_status: int = 400
    refusal_code: int = 100
    refusal_message: str | None = None
    webhook_url: str | None = None
    app_secret: str | None = None
    requested: dict[tuple[str, str], str] = field(default_factory=dict)  # -> request id
    sent: list[dict[str, Any]] = field(default_factory=list)  # {field, status}
    tasks: set[asyncio.Task] = field(default_factory=set)


COEX = web.AppKey("coexistence", Coexistence)


def add_coexistence(app: web.Application, graph: Any,
                    authorised: Callable[[web.Request], bool],
                    serve: Callable[[str, str, bytes, str], None]) -> None:
    """Routes and state of the coexistence part on the Graph stand-in `app`."""
    app[COEX] = Coexistence(graph, authorised, serve)
    app.add_routes([
        web.post("/{version:v[0-9]+\\.[0-9]+}/{phone_id}/smb_app_data", smb_app_data),
        web.post("/_sim/webhook", set_webhook),
        web.post("/_sim/coexistence", settings),
        web.get("/_sim/coexistence", report),
    ])
    app.on_cleanup.append(_cancel)


def _state(request: web.Request) -> tuple[Any, Coexistence]:
    coex = request.app[COEX]
    return coex.graph, coex


def _error(status: int, message: str, code: int, kind: str = "OAuthException"
           ) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "code": code,
                                        "fbtrace_id": secrets.token_urlsafe(8)}},
                             status=status)


async def smb_app_data(request: web.Request) -> web.Response:
    graph, coex = _state(request)
    if graph.outage:
        return _error(503, "Service temporarily unavailable", 2)
    if not coex.authorised(request):
        return _error(401, "Invalid OAuth access token - Cannot parse access token", 190)
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    sync_type = body.get("sync_type") if isinstance(body, dict) else None
    if sync_type not in SYNC_TYPES or body.get("messaging_product") != "whatsapp":
        return _error(400, "(#100) Param sync_type must be one of {HISTORY, "
                      "SMB_APP_STATE_SYNC} and messaging_product must be whatsapp", 100)
    phone_id = request.match_info["phone_id"]
    if time.time() - coex.onboarded_at > WINDOW_HOURS * 3600:
        return _refusal(coex, f"the {WINDOW_HOURS}-hour window after onboarding has passed; "
                              "offboard the number and onboard it again")
    if (phone_id, sync_type) in coex.requested:
        return _refusal(coex, f"{sync_type} sync was already requested for this phone number;"
                              " it can be requested once only")
    request_id = secrets.token_hex(8)
    coex.requested[(phone_id, sync_type)] = request_id
    task = asyncio.get_running_loop().create_task(_send_later(graph, coex, phone_id, sync_type))
    coex.tasks.add(task)
    task.add_done_callback(coex.tasks.discard)
    return web.json_response({"messaging_product": "whatsapp", "request_id": request_id})


def _refusal(coex: Coexistence, why: str) -> web.Response:
    return _error(coex.refusal_status, coex.refusal_message or f"(#{coex.refusal_code}) {why}",
                  coex.refusal_code)


def _webhooks(graph: Any, coex: Coexistence, phone_id: str, sync_type: str
              ) -> list[dict[str, Any]]:
    display = coex.display_phone_number
    if sync_type == "smb_app_state_sync":
        return [script.contacts_webhook(phone_id, display)]
    if coex.share_history == "decline":
        return [script.declined_webhook(phone_id, display)]
    if coex.share_history == "pending":
        return []
    for media_id, mime, data in (script.PHOTO, script.PRICE_LIST):
        coex.serve(media_id, mime, data, phone_id)  # the follow-ups' files
    return script.history_webhooks(phone_id, display, tag=secrets.token_hex(3))


async def _send_later(graph: Any, coex: Coexistence, phone_id: str, sync_type: str) -> None:
    await asyncio.sleep(coex.delay)
    payloads = _webhooks(graph, coex, phone_id, sync_type)
    if not payloads or not (coex.webhook_url and coex.app_secret):
        return
    async with httpx.AsyncClient(timeout=30) as client:
        for n, payload in enumerate(payloads):
            if n:
                await asyncio.sleep(coex.gap)
            await _post(client, coex, payload)


async def _post(client: httpx.AsyncClient, coex: Coexistence, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json",
               "X-Hub-Signature-256": sign(body, coex.app_secret or "")}
    field_name = payload["entry"][0]["changes"][0]["field"]
    status = 0
    for attempt in range(ATTEMPTS):
        try:
            status = (await client.post(coex.webhook_url or "", content=body,
                                        headers=headers)).status_code
        except httpx.HTTPError as exc:
            logger.warning("coexistence webhook not delivered: %s", exc)
            status = 0
        if status == 200:
            break
        await asyncio.sleep(0.5 * (attempt + 1))
    coex.sent.append({"field": field_name, "status": status})


async def set_webhook(request: web.Request) -> web.Response:
    """Where the coexistence webhooks go: {"url", "app_secret"}."""
    _, coex = _state(request)
    body = await request.json()
    coex.webhook_url, coex.app_secret = body["url"], body["app_secret"]
    return web.json_response({"url": coex.webhook_url})


async def settings(request: web.Request) -> web.Response:
    _, coex = _state(request)
    body = await request.json()
    if "onboarded_hours_ago" in body:
        coex.onboarded_at = time.time() - float(body["onboarded_hours_ago"]) * 3600
    if "share_history" in body:
        if body["share_history"] not in SHARE_CHOICES:
            raise web.HTTPBadRequest(text=f"share_history must be one of {SHARE_CHOICES}")
        coex.share_history = body["share_history"]
    for name in ("delay", "gap"):
        if name in body:
            setattr(coex, name, float(body[name]))
    for name in ("refusal_status", "refusal_code"):
        if name in body:
            setattr(coex, name, int(body[name]))
    for name in ("refusal_message", "display_phone_number"):
        if name in body:
            setattr(coex, name, body[name])
    return await report(request)


async def report(request: web.Request) -> web.Response:
    _, coex = _state(request)
    return web.json_response({
        "onboarded_at": coex.onboarded_at, "share_history": coex.share_history,
        "requested": [{"phone_number_id": p, "sync_type": t, "request_id": r}
                      for (p, t), r in coex.requested.items()],
        "sent": coex.sent, "webhook_url": coex.webhook_url})


async def reset_coexistence(app: web.Application) -> None:
    """The coexistence part as the stand-in was started (`POST /_sim/reset`): webhooks
    still to send are dropped (their tasks cancelled), then the onboarding time is now and
    every setting, the webhook target, the syncs asked for and the sent log are gone."""
    coex = app[COEX]
    pending = list(coex.tasks)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=10)
    fresh = Coexistence(coex.graph, coex.authorised, coex.serve)
    for name in coex.__dataclass_fields__:
        setattr(coex, name, getattr(fresh, name))


async def _cancel(app: web.Application) -> None:
    for task in list(app[COEX].tasks):
        task.cancel()
