"""Message <-> database row; the only place that knows the body JSON layout."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import orjson

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
        to_timestamp(message.sent_at), stored_at, dump_body(body),
    )


def dump_body(body: dict[str, Any]) -> str:
    """Compact JSON text of a body, non-ASCII kept; values JSON lacks become str().

    orjson first: ~6x faster than json.dumps on a webhook's message, the largest cost of
    an append on the event loop. What it refuses (integers beyond 64 bits, keys that are
    not strings) goes through json.dumps, which takes them. Both give the same JSON value;
    a non-finite float, which no webhook body can carry (load_body refuses it), would be
    written as null.
    """
    try:
        return orjson.dumps(body, default=str, option=_ORJSON).decode()
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)


def message_from_row(row: Any) -> Message:
    """Rebuild a Message from (id, source, provider_id, conversation, sent_at, stored_at, body,
    file) where file is the media job as JSON (MEDIA_FILE) or NULL."""
    mid, source, provider_id, conversation, sent_at, stored_at, text, file = row
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


def _file(text: str | None, media: dict[str, Any] | None) -> MediaFile | None:
    if text is None:
        return None
    state, path, mime_type, size, sha256, reason = json.loads(text)
    return MediaFile(state=state, path=path, mime_type=mime_type or (media or {}).get("mime_type"),
                     filename=(media or {}).get("filename"), size=size, sha256=sha256,
                     reason=reason)


# The last column is the message's media job (bridge/buffer/media.py): one primary-key
# lookup per row, NULL for a message without one.
MESSAGE_COLUMNS = ("m.id, m.source, m.provider_id, m.conversation, m.sent_at, m.stored_at,"
                   " m.body, (SELECT json_array(f.state, f.path, f.mime_type, f.size, f.sha256,"
                   " f.reason) FROM media f WHERE f.message_id = m.id)")
