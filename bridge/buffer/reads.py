"""Read-only queries behind `bridge status`, /status and the status page."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from bridge.buffer.codec import MESSAGE_COLUMNS, from_timestamp, message_from_row
from bridge.model import Message

Query = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

_SINK_COLUMNS = ("sink", "installed_at", "enabled", "disabled_at", "last_sync_at",
                 "next_sync_at", "last_error", "last_error_at", "backfill_since",
                 "backfill_done_at", "backfill_total", "backfill_started_at")
_TIMES = {"installed_at", "disabled_at", "last_sync_at", "next_sync_at", "last_error_at",
          "backfill_since", "backfill_done_at", "last_synced_at", "last_message_at",
          "failed_at", "at", "dead_at", "sent_at", "backfill_started_at"}


def _record(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict, with unix times turned into aware datetimes."""
    return {c: from_timestamp(v) if c in _TIMES else v for c, v in zip(columns, row, strict=True)}


async def sinks(query: Query) -> list[dict[str, Any]]:
    """Every sink ever installed, with backlog, held and dead-letter counts."""
    rows = await query(f"SELECT {', '.join(_SINK_COLUMNS)} FROM sink_state ORDER BY sink", ())
    counts = {}
    for sink, state, held, n in await query(
        "SELECT d.sink, d.state, coalesce(b.held, 0), count(*) FROM deliveries d"
        " LEFT JOIN batches b ON b.id = d.batch_id WHERE d.state IN ('pending', 'dead')"
        " GROUP BY d.sink, d.state, coalesce(b.held, 0)", ()):
        entry = counts.setdefault(sink, {"backlog": 0, "held": 0, "dead_letters": 0})
        if state == "dead":
            entry["dead_letters"] += n
        else:
            entry["backlog"] += n
            entry["held"] += n if held else 0
    progress = await backfill_progress(query)
    result = []
    for row in rows:
        record = _record(_SINK_COLUMNS, row)
        record["enabled"] = bool(record["enabled"])
        record.update(counts.get(record["sink"], {"backlog": 0, "held": 0, "dead_letters": 0}))
        record["backfill"] = _with_eta(progress.get(record["sink"]),
                                       record["backfill_started_at"])
        result.append(record)
    return result


async def backfill_progress(query: Query) -> dict[str, dict[str, int]]:
    """Per sink: backfill messages and conversations done and in all."""
    rows = await query(
        "SELECT d.sink, count(*), sum(d.state != 'pending'), count(DISTINCT m.conversation),"
        " count(DISTINCT CASE WHEN d.state = 'pending' THEN m.conversation END)"
        " FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.backfill = 1"
        " GROUP BY d.sink", ())
    return {sink: {"messages_total": total, "messages_done": done,
                   "conversations_total": convs, "conversations_done": convs - open_convs}
            for sink, total, done, convs, open_convs in rows}


def _with_eta(progress: dict[str, Any] | None, started_at: datetime | None) -> dict[str, Any]:
    """Progress plus seconds left at the pace so far (None until something is done)."""
    if progress is None:
        return {"messages_total": 0, "messages_done": 0, "conversations_total": 0,
                "conversations_done": 0, "eta_seconds": None}
    done, total = progress["messages_done"], progress["messages_total"]
    eta = None
    if started_at and 0 < done < total:
        eta = (time.time() - started_at.timestamp()) * (total - done) / done
    return {**progress, "eta_seconds": eta if done < total else 0.0}


async def conversations(query: Query, sink: str | None, search: str | None,
                        limit: int) -> list[dict[str, Any]]:
    """Conversations, newest first, with one sink's mapping and pending count."""
    columns = ("key", "contact_name", "account", "last_message_at", "message_count",
               "record_id", "last_synced_at", "last_error", "held_reason", "pending",
               "synced", "transcripts")
    where, params = "", [sink, sink, sink, sink]
    if search:
        where = " WHERE c.key LIKE ? OR c.contact_name LIKE ?"
        params += [f"%{search}%", f"%{search}%"]
    rows = await query(
        "SELECT c.key, c.contact_name, c.account, c.last_message_at, c.message_count,"
        " s.record_id, s.last_synced_at, s.last_error, s.held_reason,"
        " (SELECT count(*) FROM deliveries d JOIN messages m ON m.id = d.message_id"
        "  WHERE d.state = 'pending' AND d.sink = coalesce(?, d.sink)"
        "  AND m.conversation = c.key),"
        " (SELECT count(*) FROM messages m JOIN deliveries d ON d.message_id = m.id"
        "  WHERE m.conversation = c.key AND d.sink = coalesce(?, d.sink)"
        "  AND d.state = 'done'),"
        # a transcript: one delivered batch (one conversation window)
        " (SELECT count(DISTINCT d.batch_id) FROM messages m JOIN deliveries d"
        "  ON d.message_id = m.id WHERE m.conversation = c.key"
        "  AND d.sink = coalesce(?, d.sink) AND d.state = 'done')"
        " FROM conversations c"
        " LEFT JOIN sink_conversations s ON s.conversation = c.key AND s.sink = ?"
        f"{where} ORDER BY c.last_message_at DESC LIMIT ?", [*params, limit])
    return [_record(columns, row) for row in rows]


async def dead_letters(query: Query, sink: str | None, limit: int) -> list[dict[str, Any]]:
    """Dead-lettered deliveries, newest first, with the reason a person acts on."""
    columns = ("sink", "message_id", "source", "provider_id", "conversation", "sent_at",
               "reason", "dead_at")
    rows = await query(
        "SELECT d.sink, d.message_id, m.source, m.provider_id, m.conversation, m.sent_at,"
        " d.reason, d.done_at FROM deliveries d JOIN messages m ON m.id = d.message_id"
        " WHERE d.state = 'dead' AND d.sink = coalesce(?, d.sink)"
        " ORDER BY d.done_at DESC LIMIT ?", (sink, limit))
    return [_record(columns, row) for row in rows]


async def messages(query: Query, conversation: str | None, limit: int) -> list[Message]:
    """Stored messages, oldest first (one conversation's, or all)."""
    rows = await query(f"SELECT {MESSAGE_COLUMNS} FROM messages m"
                       " WHERE m.conversation = coalesce(?, m.conversation)"
                       " ORDER BY m.sent_at, m.id LIMIT ?", (conversation, limit))
    return [message_from_row(row) for row in rows]


async def status_of(query: Query, source: str, provider_id: str) -> dict[str, Any] | None:
    """The delivery status recorded for one outbound message."""
    columns = ("status", "at", "recipient", "failed_at", "errors")
    rows = await query("SELECT status, at, recipient, failed_at, errors FROM statuses"
                       " WHERE source = ? AND provider_id = ?", (source, provider_id))
    return _record(columns, rows[0]) if rows else None
