"""The Cloud API webhook: verification handshake (GET) and signed notifications (POST)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Container
from dataclasses import replace
from datetime import datetime

from aiohttp import web

from bridge import STATUS_KINDS, Ingest, Message, Metrics, SourceSyncs, SyncNote, query_text
from plugins.whatsapp.body import load_body
from plugins.whatsapp.config import WhatsAppConfig
from plugins.whatsapp.media import GraphMedia
from plugins.whatsapp.parse import HISTORY_DECLINED, Parsed, PayloadError, parse_payload
from plugins.whatsapp.signature import signed_like, verify_signature, verify_token

logger = logging.getLogger(__name__)

JSON_TYPES = {"application/json", ""}
DEV_ONLY = "dev-only"  # the sample config.yaml's placeholder values start with this
# what to do when Meta's signatures stop matching (the health verdict says it)
WRONG_SECRET = ("check plugins.whatsapp.app_secret: Meta's App Dashboard, App settings › "
                "Basic › App secret; list the old and new one while you rotate")
OTHER_OBJECT_LOG_EVERY = 3600.0  # seconds between WARNINGs for one other object
OTHER_OBJECT = ("the Meta app also sends webhooks of objects other than "
                "whatsapp_business_account to this URL; unsubscribe them in the App Dashboard "
                "(Webhooks) or give them a callback of their own")


class WhatsAppSource:
    """Receives WhatsApp Business Platform webhooks and stores them before answering."""

    name = "whatsapp"

    def __init__(self, config: WhatsAppConfig, metrics: Metrics | None = None) -> None:
        self.config = config
        self.body_timeout = config.body_timeout
        self.metrics = metrics if metrics is not None else Metrics(process=False)
        self._allowed = frozenset(config.phone_number_ids) if config.phone_number_ids else None
        self.media = GraphMedia(config)  # photos, voice notes, documents: fetched by the core
        if any(v.startswith(DEV_ONLY) for v in (config.verify_token, *config.secrets)):
            logger.warning("plugins.whatsapp uses the sample config's dev-only token or secret:"
                           " anyone who reads config.yaml can post webhooks; set "
                           "WHATSAPP_VERIFY_TOKEN and WHATSAPP_APP_SECRET before going live")

    def routes(self, ingest: Ingest) -> list[web.RouteDef]:
        async def receive(request: web.Request) -> web.Response:
            return await self.receive(request, ingest)

        return [web.get(self.config.path, self.handshake), web.post(self.config.path, receive)]

    def backfill(self, since: datetime) -> list[Message]:
        # Meta has no API to fetch past messages; history webhooks are stored as they arrive.
        return []

    async def handshake(self, request: web.Request) -> web.Response:
        """Meta's GET: echo hub.challenge when mode and verify token match."""
        mode = query_text(request.query, "hub.mode")
        token = query_text(request.query, "hub.verify_token", longest=4096)
        challenge = query_text(request.query, "hub.challenge", longest=4096)
        if mode == "subscribe" and verify_token(token, self.config.verify_token) and challenge:
            self.metrics.webhook(self.name, "handshake_verified")
            return web.Response(text=challenge, content_type="text/plain")
        self.metrics.webhook(self.name, "handshake_refused")
        raise web.HTTPForbidden(text="verify token or mode does not match")

    async def receive(self, request: web.Request, ingest: Ingest) -> web.Response:
        """Verify, parse, store in one commit, and only then answer 200."""
        started = time.perf_counter()
        body = await self._read_body(request)
        header = request.headers.get("X-Hub-Signature-256")
        if not verify_signature(body, header, self.config.secrets):
            self._refuse("bad_signature", "unauthorized")
            if signed_like(header):  # Meta's, with another secret: status says so
                self.metrics.wrong_signature(self.name, WRONG_SECRET)
            raise web.HTTPUnauthorized(text="X-Hub-Signature-256 missing or not valid for this "
                                            "body (check plugins.whatsapp.app_secret)")
        if request.content_type not in JSON_TYPES:
            self._refuse("bad_content_type", "unsupported_media_type")
            raise web.HTTPUnsupportedMediaType(text="expected Content-Type: application/json")
        parsed = self._parse(body)
        if parsed.other_object is not None:
            return self._other_object(parsed.other_object, time.perf_counter() - started)
        apart = history_apart(parsed.messages)
        noted: Container[str] = ()  # numbers whose history is noted already
        try:
            if apart is None:  # every webhook but a rare history one: one append
                stored = await ingest.append(parsed.messages, parsed.statuses,
                                             parsed.contact_names, parsed.identities)
                counts = history_counts(parsed.messages, stored)
            else:
                stored, noted = await self._append_apart(parsed, apart, ingest)
                counts = {}
        except web.HTTPException:  # a count that could not be noted: answered already
            raise
        except Exception:
            logger.exception("could not store a webhook; answering 503 so that Meta retries")
            self.metrics.webhook(self.name, "unavailable")
            raise web.HTTPServiceUnavailable(
                text="could not store the webhook; retry later") from None
        if parsed.history or parsed.contact_syncs or counts:
            await self._note_history(parsed, counts, ingest, skip=noted)
        self._count(parsed, stored, time.perf_counter() - started)
        return web.Response(text="OK", content_type="text/plain")

    async def _append_apart(self, parsed: Parsed, apart: list[list[Message]],
                            ingest: Ingest) -> tuple[int, set[str]]:
        """Store the webhook in several appends (all committed before the answer; a
        retry after a crash between them dedupes): each number's history apart, so that
        each number's sync counts its own new messages. Each number's count is noted
        right after its own append, before the next one: a bridge killed between two
        appends has counted the first (Meta's retry finds its messages stored: new to
        nobody then). (stored, the numbers whose history was noted)."""
        stored, noted = 0, set()
        for n, group in enumerate(apart):
            new = await ingest.append(group, parsed.statuses if n == 0 else (),
                                      parsed.contact_names if n == 0 else None,
                                      parsed.identities if n == 0 else ())
            stored += new
            if group and group[0].history:
                await self._note_history(parsed, {group[0].account: new}, ingest,
                                         only=group[0].account)
                noted.add(group[0].account)
        return stored, noted

    async def _note_history(self, parsed: Parsed, counts: dict[str, int],
                            ingest: Ingest, only: str | None = None,
                            skip: Container[str] = ()) -> None:
        """How far each number's coexistence history got (phase, chunk, progress, new
        messages) and whether its contacts arrived, kept in the buffer for `bridge
        whatsapp coexistence --status` and /status. After the messages' commit: a failure
        here answers 503, Meta retries, the messages dedupe and the chunk is noted then.
        only: that number's chunks alone (no contacts); skip: numbers noted already."""
        if not isinstance(ingest, SourceSyncs):
            return
        notes = [(c.account, SyncNote(
            state="declined" if c.declined else None, phase=c.phase, chunk=c.chunk_order,
            progress=c.progress, detail=DECLINED if c.declined else None))
            for c in parsed.history
            if (only is None or c.account == only) and c.account not in skip]
        for account, new in counts.items():  # each number's own new messages, once
            first = next((n for n, (a, _) in enumerate(notes) if a == account), None)
            if first is None:  # media follow-ups only: their number, no chunk
                notes.append((account, SyncNote(messages=new)))
            else:
                notes[first] = (account, replace(notes[first][1], messages=new))
        try:
            for account, note in notes:
                await ingest.note_source_sync(self.name, account, "history", note)
            for account in dict.fromkeys(parsed.contact_syncs if only is None else ()):
                await ingest.note_source_sync(self.name, account, "contacts",
                                              SyncNote(state="done"))
        except Exception:
            logger.exception("could not note the history sync's progress; answering 503 so "
                             "that Meta retries")
            self.metrics.webhook(self.name, "unavailable")
            raise web.HTTPServiceUnavailable(text="could not store the webhook; retry later") \
                from None

    async def _read_body(self, request: web.Request) -> bytes:
        """The whole body within body_timeout: 413 when too large, 408 when too slow; a
        client that hangs up mid-body is logged at DEBUG, not as an error."""
        try:
            if request.content.is_eof():  # all of it came with the headers: nothing to wait
                return await request.read()  # for (and a timer costs ~5 us a request)
            async with asyncio.timeout(self.body_timeout):
                return await request.read()
        except web.HTTPRequestEntityTooLarge:  # over client_max_size: 413
            self._refuse("too_large", "too_large")
            raise
        except TimeoutError:
            self._refuse("slow_body", "bad_request")
            refused = web.HTTPRequestTimeout(
                text=f"the body did not arrive within {self.body_timeout:g} s")
            refused.force_close()
            await refused.prepare(request)
            await refused.write_eof()
            request.protocol.force_close()  # now, not after aiohttp lingers 10 s more
            raise refused from None
        except (ConnectionError, RuntimeError):  # RuntimeError: aiohttp's "Connection closed."
            if request.transport is not None and not request.transport.is_closing():
                raise
            logger.debug("webhook client hung up before sending the whole body")
            self.metrics.webhook(self.name, "bad_request")
            refused = web.HTTPBadRequest(text="the connection closed mid-body")
        refused.force_close()
        raise refused

    def _parse(self, body: bytes):
        try:
            payload = load_body(body)  # strict UTF-8; lone surrogates -> U+FFFD
        except (ValueError, RecursionError):  # bad JSON, bad UTF-8, absurd nesting
            self._refuse("bad_json", "bad_request")
            raise web.HTTPBadRequest(text="body is not valid JSON") from None
        try:
            return parse_payload(payload, source=self.name,
                                 default_region=self.config.default_region,
                                 phone_number_ids=self._allowed)
        except PayloadError as exc:
            self._refuse("bad_payload", "bad_request")
            raise web.HTTPBadRequest(text=str(exc)) from None
        except RecursionError:
            self._refuse("bad_payload", "bad_request")
            raise web.HTTPBadRequest(text="payload is nested too deeply") from None

    def _other_object(self, name: str, seconds: float) -> web.Response:
        """200 for a signed notification of another Meta object: a 400 would have Meta
        retry it for days and flag the callback as failing, for nothing this source could
        ever store. Logged (never its body) and counted, so that an operator sees it."""
        self.metrics.webhook(self.name, "ignored", seconds=seconds)
        self.metrics.ignored(self.name, f"object:{name}")
        now = time.time()
        before = self.metrics.other_object(self.name, name, OTHER_OBJECT, now)
        # a page's feed may send thousands: a WARNING for the first of an hour, else DEBUG
        loud = before is None or now - before >= OTHER_OBJECT_LOG_EVERY
        logger.log(logging.WARNING if loud else logging.DEBUG,
                   "webhook of Meta object %r acknowledged and not stored: %s", name,
                   OTHER_OBJECT)
        return web.Response(text="OK", content_type="text/plain")

    def _refuse(self, reason: str, outcome: str) -> None:
        self.metrics.webhook(self.name, outcome)
        logger.warning("webhook refused: %s", reason)

    def _count(self, parsed, stored: int, seconds: float) -> None:
        duplicate = len(parsed.messages) - stored
        if stored or parsed.statuses:
            outcome = "stored"
        elif parsed.messages:
            outcome = "duplicate"
        else:
            outcome = "ignored"
        self.metrics.webhook(self.name, outcome, seconds=seconds)
        self.metrics.stored(self.name, stored, duplicate, len(parsed.statuses))
        for status in parsed.statuses:
            kind = status.status if status.status in STATUS_KINDS else "other"
            self.metrics.status(self.name, kind, _error_code(status.errors))
        self.metrics.ignored(self.name, "other_business_number", parsed.skipped_numbers)
        for field_name, n in parsed.ignored_fields.items():
            self.metrics.ignored(self.name, f"field:{field_name}", n)
        logger.debug("webhook stored: %d new, %d duplicate messages, %d statuses",
                     stored, duplicate, len(parsed.statuses))


def history_apart(messages: list[Message]) -> list[list[Message]] | None:
    """The webhook's messages as appends of their own (the live ones first, then each
    number's history), when they hold history and one append could not say how many new
    messages each number's history brought: of two numbers, or beside live ones. None:
    one append (no history, or one number's history alone)."""
    groups: dict[tuple[str, bool], list[Message]] = {}
    for message in messages:
        groups.setdefault((message.account, True) if message.history else ("", False),
                          []).append(message)
    if len(groups) < 2 or not any(history for _, history in groups):
        return None
    return sorted(groups.values(), key=lambda group: group[0].history)


def history_counts(messages: list[Message], stored: int) -> dict[str, int]:
    """New history messages by number, for one append (history_apart gave None)."""
    return {messages[0].account: stored} if messages and messages[0].history else {}


DECLINED = (f"the business turned chat history sharing off in the WhatsApp Business app "
            f"(error {HISTORY_DECLINED}); nothing of its past chats will arrive")


def _error_code(errors: list) -> str:
    """Meta's first error code as a metric label: digits only (bounded), else "other"."""
    if not errors:
        return ""
    code = str(errors[0].get("code", "")) if isinstance(errors[0], dict) else ""
    return code if code.isdigit() and len(code) <= 10 else "other"
