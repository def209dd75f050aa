"""Message <-> database row; the only place that knows the body JSON layout."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa

from bridge.buffer.tables import media, messages
from bridge.model import Direction, Media, MediaFile, Message

# datetimes and dataclasses go to default=str, as json.dumps would have them
_ORJSON = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def to_timestamp(value: datetime) -> float:
    """Unix seconds of an aware datetime (naive ones are taken as UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.timestamp()


def from_timestamp(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def id_list(ids: Iterable[int]) -> str:
    """Message ids as a target row's message_ids column holds them: ",12,13,"."""
    return "," + ",".join(map(str, ids)) + ","


def ids_of(text: str) -> tuple[int, ...]:
    """The message ids of a ",12,13," column (id_list's inverse)."""
    return tuple(int(i) for i in text.strip(",").split(",") if i)


def message_row(message: Message, stored_at: float) -> tuple[Any, ...]:
    """The INSERT parameters for one message."""
    body: dict[str, Any] = {
        "account": message.account, "direction": str(message.direction), "kind": message.kind,
        "text": message.text, "contact_name": message.contact_name,
        "reply_to": message.reply_to, "history": message.history, "extra": message.extra,
        "raw": message.raw,
    }
    if message.media is not None:
        body["media"] = {k: v for k, v in asdict(message.media).items() if v not in (None, False)}
    return (
        message.source, message.provider_id, message.conversation,
        to_timestamp(message.sent_at), stored_at, dump_body(body), str(message.direction),
        message.account or "",
    )


def dump_body(body: dict[str, Any]) -> str:
    """Compact JSON text of a body; values JSON lacks become str().

    The text keeps JSON's escapes, which is what lets every string survive both engines:
    U+0000 stays the six characters \\u0000 (PostgreSQL's text and jsonb refuse the
    character itself), and a lone surrogate (valid in a webhook's JSON as \\ud800, but
    no UTF-8 encoder takes it) stays an escape too: orjson refuses such a string, and the
    json.dumps fallback then writes ASCII with every non-ASCII character escaped.

    orjson first: ~6x faster than json.dumps on a webhook's message, the largest cost of
    an append on the event loop. What it refuses (lone surrogates, integers beyond 64
    bits, keys that are not strings) goes through json.dumps, which takes them. Both give
    the same JSON value.
    """
    try:
        return orjson.dumps(body, default=str, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=True, separators=(",", ":"), default=str)


def message_from_row(row: Any) -> Message:
    """Rebuild a Message from a row of MESSAGE_COLUMNS."""
    mid, source, provider_id, conversation, sent_at, stored_at, text, *file = row[:WIDTH]
    body = json.loads(text)
    media = body.pop("media", None)
    return Message(
        source=source,
        provider_id=provider_id,
        conversation=conversation,
        account=body.get("account", ""),
        direction=Direction(body.get("direction", "in")),
        sent_at=from_timestamp(sent_at),
        kind=body.get("kind", "unsupported"),
        text=body.get("text", ""),
        media=Media(**media) if media else None,
        contact_name=body.get("contact_name"),
        reply_to=body.get("reply_to"),
        history=bool(body.get("history", False)),
        extra=body.get("extra") or {},
        raw=body.get("raw") or {},
        id=mid,
        stored_at=from_timestamp(stored_at),
        file=_file(file, media),
    )


def _file(file: list[Any], media: dict[str, Any] | None) -> MediaFile | None:
    state, path, mime_type, size, sha256, reason = file
    if state is None:
        return None
    return MediaFile(state=state, path=path, mime_type=mime_type or (media or {}).get("mime_type"),
                     filename=(media or {}).get("filename"), size=size, sha256=sha256,
                     reason=reason)


# A message row: its columns, then its media job's (media.py) or NULLs without one.
MESSAGE_COLUMNS = (messages.c.id, messages.c.source, messages.c.provider_id,
                   messages.c.conversation, messages.c.sent_at, messages.c.stored_at,
                   messages.c.body, media.c.state, media.c.path, media.c.mime_type,
                   media.c.size, media.c.sha256, media.c.reason)
WIDTH = len(MESSAGE_COLUMNS)


def select_messages(*more: Any) -> Any:
    """SELECT of message rows (MESSAGE_COLUMNS, then `more`), with their media jobs."""
    return sa.select(*MESSAGE_COLUMNS, *more).select_from(
        messages.outerjoin(media, media.c.message_id == messages.c.id))
