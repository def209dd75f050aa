"""What a sink needs to know about claimed messages beyond their own rows.

Run when a batch is claimed (one query per kind of fact, only when the batch needs it):
- a group message's sender as the contact map knows them (`sender_person`), so a sink
  can post it on the sender's record;
- the failure of an outbound message (`failed`: Meta's title and code), so its
  transcript line says it was not delivered;
- the message an edit or a deletion changes (`target`: its time and first words).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiosqlite

from bridge.model import Direction, Message, is_group


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    async with db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


def _placeholders(n: int) -> str:
    """'?,?,?' for n values."""
    return ",".join("?" * n)


def _value_rows(count: int, width: int) -> str:
    """'(?,?),(?,?)' for count rows of width values."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


async def enrich(db: aiosqlite.Connection, sink: str, messages: list[Message]) -> None:
    """Add `sender_person`, `failed` and `target` to the messages' extra, in place."""
    await _senders(db, sink, [m for m in messages if is_group(m.conversation)])
    await _failures(db, [m for m in messages if m.direction == Direction.OUT])
    await _targets(db, [m for m in messages if m.kind in ("edit", "revoke") and m.reply_to])


async def _senders(db: aiosqlite.Connection, sink: str, messages: list[Message]) -> None:
    keys = sorted({m.extra["sender"] for m in messages if m.extra.get("sender")})
    if not keys:
        return
    found = {}
    for key, person, name, phone, user_id, username, record in await _rows(
            db, "SELECT i.key, c.key, c.contact_name, c.phone, c.bsuid, c.username,"
            " s.record_id FROM identities i JOIN conversations c ON c.key = i.person"
            " LEFT JOIN sink_conversations s ON s.sink = ? AND s.conversation = c.key"
            f" WHERE i.key IN ({_placeholders(len(keys))})", (sink, *keys)):
        found[key] = {"key": person, "name": name, "phone": phone or (
            person if person.startswith("+") else None), "user_id": user_id,
            "username": username, "record_id": record}
    for message in messages:
        person = found.get(message.extra.get("sender"))
        if person:
            message.extra["sender_person"] = person


async def _failures(db: aiosqlite.Connection, messages: list[Message]) -> None:
    pairs = sorted({(m.source, m.provider_id) for m in messages})
    if not pairs:
        return
    failed = {}
    for source, provider_id, errors in await _rows(
            db, "SELECT source, provider_id, errors FROM statuses WHERE failed_at IS NOT NULL"
            f" AND (source, provider_id) IN (VALUES {_value_rows(len(pairs), 2)})",
            [v for pair in pairs for v in pair]):
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


async def _targets(db: aiosqlite.Connection, messages: list[Message]) -> None:
    pairs = sorted({(m.source, m.reply_to) for m in messages if m.reply_to})
    if not pairs:
        return
    found = {}
    for source, provider_id, sent_at, text in await _rows(
            db, "SELECT source, provider_id, sent_at, json_extract(body, '$.text') FROM messages"
            f" WHERE (source, provider_id) IN (VALUES {_value_rows(len(pairs), 2)})",
            [v for pair in pairs for v in pair]):
        found[(source, provider_id)] = {"at": sent_at, "text": text or ""}
    for message in messages:
        if (message.source, message.reply_to) in found:
            message.extra["target"] = found[(message.source, message.reply_to)]
