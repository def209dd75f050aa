"""`bridge whatsapp coexistence`: turn on a coexistence number's history and contacts sync,
and follow the history as it arrives.

Meta [M-COEX, reference §6, §14]: after a number is onboarded with Embedded Signup's
coexistence option, the partner has 24 hours to request each sync, once:
`POST /<version>/<phone number id>/smb_app_data` with the access token and
`{"messaging_product": "whatsapp", "sync_type": "smb_app_state_sync" | "history"}`. The
rep then accepts (or declines) sharing on the phone, and the history arrives as `history`
webhooks in three phases, their progress read by the webhook into the buffer
(bridge SourceSyncs, kind "history").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from bridge import Buffer, SyncNote
from plugins.whatsapp.config import WhatsAppConfig

SOURCE = "whatsapp"
SYNCS = (("contacts", "smb_app_state_sync"), ("history", "history"))  # (our kind, Meta's)
TOKEN_ERROR = 190  # Graph: the access token is invalid or expired
EXPLAIN = [
    "Coexistence: the rep keeps the WhatsApp Business app on their phone, and this bridge "
    "gets what they type there (smb_message_echoes) and, once, their past chats.",
    "This request works once per number, within 24 hours of its onboarding (Embedded Signup,"
    " \"connect your existing WhatsApp Business app\"); after that the number must be "
    "offboarded and onboarded again.",
    "On the rep's phone: the WhatsApp Business app asks whether to share the chat history "
    "with the business platform. The rep must accept (Share); if they decline, no history "
    "arrives and nothing can ask again.",
    "History then arrives in three phases (the last day, up to 90 days, up to 180 days); "
    "photos and files only for the last 14 days, a little after their messages.",
]


class CoexistenceError(Exception):
    """A request refused or unreachable: str(e) is the one line to show."""


class GraphUnavailable(CoexistenceError):
    """No answer, or a Graph server error (5xx): not a refusal; asking again may work."""


@dataclass(frozen=True, slots=True)
class Requested:
    kind: str
    request_id: str | None


def smb_app_data_url(config: WhatsAppConfig, phone_id: str) -> str:
    return f"{config.graph_url}/{config.graph_version}/{phone_id}/smb_app_data"


async def request_syncs(config: WhatsAppConfig, phone_id: str,
                        client: httpx.AsyncClient | None = None,
                        skip: frozenset[str] = frozenset()) -> list[Requested]:
    """Ask for the contacts sync, then the history sync (but not the kinds in `skip`,
    asked for before); CoexistenceError names every refusal in one line, the accepted
    requests in its `accepted`."""
    if not config.access_token:
        raise CoexistenceError("plugins.whatsapp.access_token is not set: the sync requests "
                               "need the system-user token of the app that onboarded the "
                               "number (add `access_token: ${WHATSAPP_ACCESS_TOKEN}`)")
    own = client is None
    client = client or httpx.AsyncClient(timeout=30)
    accepted: list[Requested] = []
    refused: list[tuple[str, str]] = []
    failed: list[tuple[str, str]] = []
    try:
        for kind, sync_type in SYNCS:
            if kind in skip:
                continue
            try:
                accepted.append(Requested(kind, await _request(client, config, phone_id,
                                                               sync_type)))
            except GraphUnavailable as exc:
                failed.append((kind, str(exc)))
            except CoexistenceError as exc:
                refused.append((kind, str(exc)))
    finally:
        if own:
            await client.aclose()
    if refused or failed:
        error = CoexistenceError("; ".join(
            ([_refusal_line(phone_id, refused)] if refused else [])
            + ([_failure_line(phone_id, failed)] if failed else [])))
        error.accepted = accepted  # type: ignore[attr-defined]
        raise error
    return accepted


async def _request(client: httpx.AsyncClient, config: WhatsAppConfig, phone_id: str,
                   sync_type: str) -> str | None:
    url = smb_app_data_url(config, phone_id)
    try:
        response = await client.post(url, json={"messaging_product": "whatsapp",
                                                "sync_type": sync_type},
                                     headers={"Authorization": f"Bearer {config.access_token}"})
    except httpx.HTTPError as exc:
        raise GraphUnavailable(f"the Graph API at {config.graph_url} did not answer "
                               f"({type(exc).__name__}: {exc})".replace(": )", ")")) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200:  # taken, whatever the body: it can be asked for once
        request_id = body.get("request_id") if isinstance(body, dict) else None
        return request_id if isinstance(request_id, str) else None
    if response.status_code >= 500:
        raise GraphUnavailable(_graph_reason(response.status_code, body))
    raise CoexistenceError(_graph_reason(response.status_code, body))


def _graph_reason(status: int, body: object) -> str:
    """Graph's own message and code, and what to do about it."""
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    message = " ".join(str(error.get("message") or f"HTTP {status}").split())[:300]
    code = error.get("code")
    line = f"{message} (code {code}, HTTP {status})" if code is not None else \
        f"{message} (HTTP {status})"
    if code == TOKEN_ERROR or status == 401:
        return line + "; check plugins.whatsapp.access_token"
    return line


def _refusal_line(phone_id: str, refused: Sequence[tuple[str, str]]) -> str:
    reasons = list(dict.fromkeys(reason for _, reason in refused))
    kinds = " and ".join(kind for kind, _ in refused)
    advice = ("each sync can be requested once, within 24 hours of onboarding; past that, "
              "offboard the number and onboard it again through Embedded Signup")
    return (f"Graph refused the {kinds} request{'s' * (len(refused) > 1)} for {phone_id}: "
            f"{'; '.join(reasons)} ({advice})")


def _failure_line(phone_id: str, failed: Sequence[tuple[str, str]]) -> str:
    reasons = list(dict.fromkeys(reason for _, reason in failed))
    kinds = " and ".join(kind for kind, _ in failed)
    return (f"the {kinds} request{'s' * (len(failed) > 1)} for {phone_id} did not go "
            f"through: {'; '.join(reasons)} (Graph did not refuse it; run the command again)")


async def bridge_answers(bases: Sequence[str]) -> bool:
    """Whether a bridge answers /healthz at one of `bases` (to receive the history)."""
    async with httpx.AsyncClient(timeout=3) as client:
        for base in bases:
            try:
                await client.get(f"{base}/healthz")
                return True
            except httpx.HTTPError:
                continue
    return False


# -- progress ------------------------------------------------------------------------------

def describe(sync: dict[str, Any]) -> str:
    """One line: a sync's state and how far it got."""
    kind, state = sync["kind"], sync["state"]
    parts = [f"{sync['account']} {kind}: {state}"]
    if sync.get("progress") is not None:
        parts.append(f"{sync['progress']} %")
    if sync.get("phase") is not None:
        parts.append(f"phase {sync['phase']} of 0-2")
    if sync.get("chunks"):
        parts.append(f"{sync['chunks']} chunk{'s' * (sync['chunks'] != 1)}")
    if kind == "history" or sync.get("messages"):
        parts.append(f"{sync.get('messages') or 0} new messages")
    requested = sync.get("requested_at")
    if isinstance(requested, datetime):
        parts.append(f"requested {requested.astimezone(UTC):%Y-%m-%d %H:%M} UTC")
    line = ", ".join(parts)
    return line + (f" ({sync['detail']})" if sync.get("detail") else "")


async def note_requested(buffer: Buffer, phone_id: str, requested: Sequence[Requested]) -> None:
    now = time.time()
    for item in requested:
        await buffer.note_source_sync(SOURCE, phone_id, item.kind, SyncNote(
            state="requested", requested_at=now, request_id=item.request_id), now=now)


async def syncs_of(buffer: Buffer, phone_id: str | None) -> list[dict[str, Any]]:
    return [s for s in await buffer.source_syncs(SOURCE)
            if phone_id is None or s["account"] == phone_id]


async def follow(buffer: Buffer, phone_id: str, wait: float, say: Callable[[str], None],
                 poll: float = 0.5) -> dict[str, Any] | None:
    """Say each change of the number's history sync until it is done or declined, or
    `wait` seconds pass; the sync as last read."""
    deadline, last, seen = time.monotonic() + wait, None, None
    while True:
        history = next((s for s in await syncs_of(buffer, phone_id)
                        if s["kind"] == "history"), None)
        line = describe(history) if history else None
        if line and line != seen:
            say(line)
            seen = line
        last = history
        if history and history["state"] in ("done", "declined", "failed"):
            return history
        if time.monotonic() >= deadline:
            return last
        await asyncio.sleep(poll)
