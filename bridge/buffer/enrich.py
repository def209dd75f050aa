"""What a sink needs to know about claimed messages beyond their own rows.

Run when a batch is claimed (one query per kind of fact, only when the batch needs it):
- a group message's sender as the contact map knows them (`sender_person`), so a sink
  can post it on the sender's record;
- the failure of an outbound message (`failed`: Meta's title and code), so its
  transcript line says it was not delivered;
- the message an edit, a deletion, a reaction or a reply is about (`target`: its time,
  first words and kind, a template's name), so a line about a message synced in an
  earlier activity can name it as the rep saw it there, not by an id nothing in the CRM
  shows; and, for one the buffer does not hold (it predates the install, or came on a
  number the bridge does not serve), `target: {"found": False}`, so the line says "an
  earlier message" instead of the id (the id stays in reply_to and raw, and is logged at
  DEBUG only).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import sqlalchemy as sa

from bridge.buffer.compiler import P, Query, rows_in, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import conversations, identities, messages, sink_conversations, statuses
from bridge.model import Direction, Message, is_group

logger = logging.getLogger(__name__)
i, c, s = identities.c, conversations.c, sink_conversations.c
SENDERS = Query(
    sa.select(i.key, c.key, c.contact_name, c.phone, c.bsuid, c.username, s.record_id)
    .select_from(identities.join(conversations, c.key == i.person).outerjoin(
        sink_conversations, sa.and_(s.sink == P("sink"), s.conversation == c.key)))
    .where(i.key.in_(values_of("keys", "text"))), "group senders")
_pairs = rows_in("pairs", [("source", "text"), ("provider_id", "text")], alias="pairs")
FAILURES = Query(
    sa.select(statuses.c.source, statuses.c.provider_id, statuses.c.errors)
    .join_from(statuses, _pairs, sa.and_(statuses.c.source == _pairs.c.source,
                                         statuses.c.provider_id == _pairs.c.provider_id))
    .where(statuses.c.failed_at.isnot(None)), "failed sends")
TARGETS = Query(
    sa.select(messages.c.source, messages.c.provider_id, messages.c.sent_at, messages.c.body)
    .join_from(messages, _pairs, sa.and_(messages.c.source == _pairs.c.source,
                                         messages.c.provider_id == _pairs.c.provider_id)),
    "messages edited, deleted, reacted or replied to")


async def enrich(db: Connector, sink: str, messages: list[Message]) -> None:
    """Add `sender_person`, `failed` and `target` to the messages' extra, in place."""
    await _senders(db, sink, [m for m in messages if is_group(m.conversation)])
    await _failures(db, [m for m in messages if m.direction == Direction.OUT])
    await _targets(db, [m for m in messages if m.reply_to])


async def _senders(db: Connector, sink: str, messages: list[Message]) -> None:
    keys = sorted({m.extra["sender"] for m in messages if m.extra.get("sender")})
    if not keys:
        return
    found = {}
    for key, person, name, phone, user_id, username, record in await db.rows(
            SENDERS, sink=sink, keys=keys):
        found[key] = {"key": person, "name": name, "phone": phone or (
            person if person.startswith("+") else None), "user_id": user_id,
            "username": username, "record_id": record}
    for message in messages:
        person = found.get(message.extra.get("sender"))
        if person:
            message.extra["sender_person"] = person


async def _failures(db: Connector, messages: list[Message]) -> None:
    pairs = sorted({(m.source, m.provider_id) for m in messages})
    if not pairs:
        return
    failed = {}
    for source, provider_id, errors in await db.rows(FAILURES, pairs=pairs):
        failed[(source, provider_id)] = first_error(errors)
    for message in messages:
        if (message.source, message.provider_id) in failed:
            message.extra["failed"] = failed[(message.source, message.provider_id)]


def first_error(errors: str | None) -> dict[str, Any]:
    """Meta's first error of a failed status: title and code (either may be missing)."""
    try:
        items = json.loads(errors) if errors else []
    except ValueError:
        items = []
    first = items[0] if items and isinstance(items[0], dict) else {}
    return {"title": first.get("title") or first.get("message"), "code": first.get("code")}


def _name_of(stored: dict[str, Any]) -> dict[str, Any]:
    """A template's name (extra.template.name), for naming a template without words."""
    extra = stored.get("extra")
    template = extra.get("template") if isinstance(extra, dict) else None
    name = template.get("name") if isinstance(template, dict) else None
    return {"name": name} if isinstance(name, str) and name else {}


async def _targets(db: Connector, messages: list[Message]) -> None:
    pairs = sorted({(m.source, m.reply_to) for m in messages if m.reply_to})
    if not pairs:
        return
    found = {}
    for source, provider_id, sent_at, body in await db.rows(TARGETS, pairs=pairs):
        stored = json.loads(body)
        found[(source, provider_id)] = {"at": sent_at, "text": stored.get("text") or "",
                                        "kind": stored.get("kind"), **_name_of(stored)}
    for message in messages:
        if (message.source, message.reply_to) in found:
            message.extra["target"] = found[(message.source, message.reply_to)]
        elif "target" not in message.extra:  # a failure notice brings its own
            message.extra["target"] = {"found": False}
            logger.debug("message %s is about %s, which the buffer does not hold",
                         message.provider_id, message.reply_to)
