"""The JSON a receiver gets, and its signature: HMAC-SHA256 of the exact body bytes."""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import asdict
from typing import Any

from bridge import Batch, Message, render_line

SIGNATURE_HEADER = "X-Chatbridge-Signature"
KEY_HEADER = "Idempotency-Key"


def body(batch: Batch) -> bytes:
    """The batch as UTF-8 JSON, the same bytes on every retry of the batch."""
    document = {
        "batch": batch.key,
        "conversation": batch.conversation.key,
        "messages": [_message(m) for m in batch.messages],  # oldest first
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


def _message(message: Message) -> dict[str, Any]:
    return {
        "id": message.provider_id,
        "source": message.source,
        "account": message.account,
        "direction": message.direction.value,
        "sent_at": message.sent_at.isoformat(),
        "kind": message.kind,
        "text": message.text,
        "line": render_line(message),  # one readable line, for CRMs that only store text
        "contact_name": message.contact_name,
        "reply_to": message.reply_to,
        "media": asdict(message.media) if message.media else None,
    }


def sign(body: bytes, secret: str) -> str:
    """The signature header value: `sha256=<hex digest>`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header: str | None) -> bool:
    """Whether `header` signs `body` with `secret` (constant-time compare)."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)
