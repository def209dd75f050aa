"""A rep's phone history as Meta sends it after a coexistence history request: the `history`
and `smb_app_state_sync` webhooks the Graph simulator posts (docs/graph-simulator.md).

Shapes and order, with their sources (reference whatsapp-webhooks.md, tags of its §0):
- chunks of three phases (0: day 0-1, 1: day 1-90, 2: day 90-180), each with
  `metadata.phase`, `chunk_order` and `progress` (100: done), sent out of order [M-HIST];
- a media message first as a `media_placeholder` in its thread, then again in a separate
  `history` webhook with a top-level `messages[]`, under the same message id, carrying the
  media object (only media of the last 14 days) [M-HIST; §14];
- the business's own messages in history under `message_echoes[]` (its media too) [§14];
- a username thread: `id` "" and the user named only by `from_user_id` [§9, §14];
- a declined share: one chunk with error 2593109 [M-HIST, M-COEX];
- the contacts sync: `state_sync[]` of `contact` items, action `add` [M-SYNC].
"""

from __future__ import annotations

import struct
import time
import zlib
from typing import Any

DAY = 86400
HISTORY_DECLINED = 2593109
RAHUL, MEERA = "919812345670", "919988776655"  # a rep's customers (Meera is a demo lead)
USERNAME_USER = "IN.1029384756102938475"  # a username-only customer: no number at all


def tiny_png() -> bytes:
    """A valid 2x2 PNG (a photo the history sync carries)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes([200, 60, 40] * 2) for _ in range(2))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


PDF = (b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[]"
       b"/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n")
# media ids the simulator serves for the follow-ups: (id, MIME type, bytes)
PHOTO = ("media-history-photo", "image/png", tiny_png())
PRICE_LIST = ("media-history-prices", "application/pdf", PDF)


def _text(mid: str, sender: str, body: str, at: float, **more: Any) -> dict[str, Any]:
    """A text; without a sender number (a username user) only `more` names them."""
    item = {"from": sender, "id": mid, "timestamp": str(int(at)), "type": "text",
            "text": {"body": body}, "history_context": {"status": "READ"}, **more}
    if not sender:
        del item["from"]
    return item


def _placeholder(mid: str, sender: str, at: float, **more: Any) -> dict[str, Any]:
    return {"from": sender, "id": mid, "timestamp": str(int(at)), "type": "media_placeholder",
            "history_context": {"status": "READ"}, **more}


def _envelope(waba: str, field: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"object": "whatsapp_business_account",
            "entry": [{"id": waba, "changes": [{"field": field, "value": value}]}]}


def _value(phone_id: str, display: str, **arrays: Any) -> dict[str, Any]:
    return {"messaging_product": "whatsapp",
            "metadata": {"display_phone_number": display, "phone_number_id": phone_id},
            **arrays}


def _chunk(phase: int, order: int, progress: int, threads: list[dict[str, Any]]
           ) -> dict[str, Any]:
    return {"metadata": {"phase": phase, "chunk_order": order, "progress": progress},
            "threads": threads}


def history_webhooks(phone_id: str, display: str, waba: str = "102290129340398",
                     now: float | None = None, tag: str = "") -> list[dict[str, Any]]:
    """The history webhooks of one accepted request, in the order they are sent."""
    now = time.time() if now is None else now
    hour = 3600
    ids = f"wamid.hist{tag}-"
    photo_id, prices_id = ids + "photo", ids + "prices"
    recent = [  # phase 0: the last day
        {"id": MEERA, "messages": [
            _text(ids + "m1", MEERA, "Here is the shelf I want to replace", now - 5 * hour),
            _placeholder(photo_id, MEERA, now - 5 * hour + 30),
            _text(ids + "m2", display, "Thanks Meera, quoting it now", now - 4 * hour)],
         "message_echoes": [
            _placeholder(prices_id, display, now - 4 * hour + 60, to=MEERA)]},
        {"id": "", "messages": [  # a username thread: the user has no number to name it by
            _text(ids + "u1", "", "Hi, is the sofa still available?", now - 3 * hour,
                  from_user_id=USERNAME_USER),
            _text(ids + "u2", display, "Yes! Want to see it this week?", now - 2 * hour)]},
    ]
    older = [{"id": RAHUL, "messages": [  # phase 1: weeks ago
        _text(ids + "r1", RAHUL, "Do you deliver to Pune?", now - 20 * DAY),
        _text(ids + "r2", display, "We do, free above 10,000", now - 20 * DAY + hour)]}]
    oldest = [{"id": RAHUL, "messages": [  # phase 2: months ago
        _text(ids + "r0", RAHUL, "Saw your stall at the fair", now - 120 * DAY)]}]
    follow_up = _value(
        phone_id, display,
        messages=[{"from": MEERA, "id": photo_id, "timestamp": str(int(now - 5 * hour + 30)),
                   "type": "image", "image": {"id": PHOTO[0], "mime_type": PHOTO[1],
                                              "caption": "the old shelf"}}],
        message_echoes=[{"from": display, "to": MEERA, "id": prices_id,
                         "timestamp": str(int(now - 4 * hour + 60)), "type": "document",
                         "document": {"id": PRICE_LIST[0], "mime_type": PRICE_LIST[1],
                                      "filename": "price-list.pdf"}}])
    contacts = [{"user_id": USERNAME_USER, "profile": {"username": "@priya"}}]
    return [  # out of order, as Meta warns chunks may be
        _envelope(waba, "history", _value(phone_id, display,
                                          history=[_chunk(1, 1, 60, older)])),
        _envelope(waba, "history", _value(phone_id, display, contacts=contacts,
                                          history=[_chunk(0, 1, 30, recent)])),
        _envelope(waba, "history", follow_up),  # Meta says only "separately": sent soon
        _envelope(waba, "history", _value(phone_id, display,
                                          history=[_chunk(2, 1, 100, oldest)])),
    ]


def declined_webhook(phone_id: str, display: str, waba: str = "102290129340398"
                     ) -> dict[str, Any]:
    """What arrives when the business declines sharing its chat history."""
    error = {"code": HISTORY_DECLINED, "title": "History sync is turned off by the business "
             "from the WhatsApp Business App", "message": "History sync is turned off",
             "error_data": {"details": "History sync is turned off by the business"}}
    return _envelope(waba, "history", _value(phone_id, display, history=[{"errors": [error]}]))


def contacts_webhook(phone_id: str, display: str, waba: str = "102290129340398",
                     now: float | None = None) -> dict[str, Any]:
    """The contacts sync: the rep's address book names."""
    at = str(int(time.time() if now is None else now))
    items = [{"type": "contact", "action": "add", "metadata": {"timestamp": at},
              "contact": {"full_name": name, "first_name": name.split()[0], "phone_number": n}}
             for n, name in ((MEERA, "Meera Shah"), (RAHUL, "Rahul Jain"))]
    return _envelope(waba, "smb_app_state_sync", _value(phone_id, display, state_sync=items))
