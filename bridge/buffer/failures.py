"""A failed send of a message a sink already took: a notice for that sink's next window.

A message not yet batched for a sink shows its failure on its own transcript line (see
bridge.buffer.enrich). One already batched or delivered cannot change any more, so the
failure gets a message of its own (kind "status", provider id "<id>#failed") in the same
conversation, pending only for the sinks that took the original. Runs in the writer's
group transaction; only when the group holds failed statuses (rare).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.buffer.codec import dump_body
from bridge.buffer.enrich import first_error

SUFFIX = "#failed"


async def note_failures(db: Any, statuses: Sequence[tuple[Any, ...]],
                  now: float) -> None:
    """statuses: upsert rows (source, provider_id, status, rank, at, recipient, failed_at,
    errors); those with failed_at get a notice when a sink already took their message."""
    for source, provider_id, _, _, _, _, failed_at, errors in statuses:
        if failed_at is None:
            continue
        original = await _select_one(db,
            "SELECT m.id, m.conversation, m.sent_at, json_extract(m.body, '$.text'),"
            " json_extract(m.body, '$.account') FROM messages m"
            " WHERE m.source = ? AND m.provider_id = ? AND json_extract(m.body, '$.direction')"
            " = 'out' AND EXISTS (SELECT 1 FROM deliveries d WHERE d.message_id = m.id"
            " AND (d.state != 'pending' OR d.batch_id IS NOT NULL))",
            (source, provider_id))
        if original is None:
            continue
        message_id, conversation, sent_at, text, account = original
        body = {"account": account, "direction": "out", "kind": "status", "text": "",
                "reply_to": provider_id, "history": False,
                "extra": {"failed_of": provider_id, "failed": first_error(errors),
                          "target": {"at": sent_at, "text": text or ""}}, "raw": {}}
        row = await _select_one(db,
            "INSERT OR IGNORE INTO messages (source, provider_id, conversation, sent_at,"
            " stored_at, body) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
            (source, provider_id + SUFFIX, conversation, failed_at, now, dump_body(body)))
        if row is not None:
            await db.execute("INSERT OR IGNORE INTO deliveries (sink, message_id) SELECT sink, ?"
                       " FROM deliveries WHERE message_id = ? AND (state != 'pending'"
                       " OR batch_id IS NOT NULL)", (row[0], message_id))


async def _select_one(db: Any, sql: str, params: Sequence[Any]) -> Any:
    async with db.execute(sql, params) as cursor:
        return await cursor.fetchone()
