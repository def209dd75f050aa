"""Read-only queries behind `bridge status`, /status and the status page."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

from bridge.buffer.codec import MESSAGE_COLUMNS, from_timestamp, message_from_row
from bridge.contracts import WAITING_FOR_FILE
from bridge.model import Message

Query = Callable[[str, Sequence[Any]], Awaitable[list[Any]]]

_SINK_COLUMNS = ("sink", "installed_at", "enabled", "disabled_at", "last_sync_at",
                 "next_sync_at", "last_error", "last_error_at", "backfill_since",
                 "backfill_done_at", "backfill_total", "backfill_started_at")
_TIMES = {"installed_at", "disabled_at", "last_sync_at", "next_sync_at", "last_error_at",
          "backfill_since", "backfill_done_at", "last_synced_at", "last_message_at",
          "failed_at", "at", "dead_at", "sent_at", "backfill_started_at", "waiting_since"}


def _record(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict, with unix times turned into aware datetimes."""
    return {c: from_timestamp(v) if c in _TIMES else v for c, v in zip(columns, row, strict=True)}


async def sinks(query: Query) -> list[dict[str, Any]]:
    """Every sink ever installed, with backlog, held and dead-letter counts."""
    rows = await query(f"SELECT {', '.join(_SINK_COLUMNS)} FROM sink_state ORDER BY sink", ())
    counts: dict[str, dict[str, int]] = {}
    zero = {"backlog": 0, "held": 0, "dead_letters": 0, "failing_targets": 0,
            "dead_targets": 0}
    # two partial-index reads: a scan of every delivery row took ~70 ms at 1M messages
    for sink, held, n in await query(
            "SELECT d.sink, coalesce(b.held, 0), count(*) FROM deliveries d"
            " INDEXED BY deliveries_pending LEFT JOIN batches b ON b.id = d.batch_id"
            " WHERE d.state = 'pending' GROUP BY 1, 2", ()):
        entry = counts.setdefault(sink, dict(zero))
        entry["backlog"] += n
        entry["held"] += n if held else 0
    for sink, n in await query("SELECT sink, count(*) FROM deliveries INDEXED BY deliveries_dead"
                               " WHERE state = 'dead' GROUP BY sink", ()):
        counts.setdefault(sink, dict(zero))["dead_letters"] = n
    for sink, state, n in await query(
            "SELECT sink, state, count(*) FROM targets WHERE substr(reason, 1, ?) != ?"
            " GROUP BY sink, state", (len(WAITING_FOR_FILE), WAITING_FOR_FILE)):
        entry = counts.setdefault(sink, dict(zero))
        entry["dead_targets" if state == "dead" else "failing_targets"] = n
    progress = await backfill_progress(query)
    result = []
    for row in rows:
        record = _record(_SINK_COLUMNS, row)
        record["enabled"] = bool(record["enabled"])
        record.update(counts.get(record["sink"], zero))
        record["backfill"] = _with_eta(progress.get(record["sink"]),
                                       record["backfill_started_at"])
        result.append(record)
    return result


async def backfill_progress(query: Query) -> dict[str, dict[str, int]]:
    """Per sink: backfill messages and conversations done and in all."""
    rows = await query(
        "SELECT d.sink, count(*), sum(CASE WHEN d.state != 'pending' THEN 1 ELSE 0 END),"
        " count(DISTINCT m.conversation),"
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


# The conversation list: each order is an index walk that stops at the page (see M005).
SORTS = ("last_message", "last_synced", "pending")
SHOWS = ("all", "held", "dead", "groups")
# Columns that name a person; search covers those the conversations table has (number and
# name today; an identity layer adding username or BSUID columns is searched with no change).
IDENTITY_COLUMNS = ("key", "contact_name", "username", "bsuid", "parent_bsuid")
_ROW_COLUMNS = ("key", "contact_name", "account", "kind", "last_message_at", "message_count",
                "record_id", "last_synced_at", "last_error", "held_reason", "pending",
                "synced", "transcripts", "dead")
_PHONE_LIKE = set("0123456789+-() .")

# SQL pieces the list is assembled from; only these constants ever go into its SQL.
# show -> condition on `conversations c`; held and dead take the sink (NULL: any sink)
_SHOW = {
    "all": "1 = 1",
    "held": "c.key IN (SELECT conversation FROM sink_conversations"
            " WHERE held_reason IS NOT NULL AND sink = coalesce(?, sink))",
    "dead": "c.key IN (SELECT m.conversation FROM deliveries d INDEXED BY deliveries_dead"
            " JOIN messages m ON m.id = d.message_id"
            " WHERE d.state = 'dead' AND d.sink = coalesce(?, d.sink))",
    "groups": "c.kind = 'group'",
}
_MATCH = {  # identity column -> one more way a search term matches
    "key": " OR c.key LIKE ? ESCAPE '\\'",
    "contact_name": " OR c.contact_name LIKE ? ESCAPE '\\'",
    "username": " OR c.username LIKE ? ESCAPE '\\'",
    "bsuid": " OR c.bsuid LIKE ? ESCAPE '\\'",
    "parent_bsuid": " OR c.parent_bsuid LIKE ? ESCAPE '\\'",
}
# by searching: a search reads the table once and sorts its few matches ("+" keeps SQLite
# from walking the date index for the order); a list walks the index and stops at the page
_SOURCE = {False: " FROM conversations c INDEXED BY conversations_recent",
           True: " FROM conversations c"}
_RECENT = {False: " ORDER BY c.last_message_at DESC, c.key DESC",
           True: " ORDER BY +c.last_message_at DESC, c.key DESC"}
# sort -> (conversation, rank) of the conversations that have a rank for the sink
_RANKED = {
    "last_synced": "WITH r (key, rank) AS (SELECT conversation, last_synced_at"
                   " FROM sink_conversations INDEXED BY sink_conversations_synced"
                   " WHERE sink = ? AND last_synced_at IS NOT NULL) ",
    "pending": "WITH r (key, rank) AS (SELECT m.conversation, count(*) FROM deliveries d"
               " INDEXED BY deliveries_pending JOIN messages m ON m.id = d.message_id"
               " WHERE d.sink = ? AND d.state = 'pending' GROUP BY m.conversation) ",
}


async def conversations(query: Query, sink: str | None, search: str | None,
                        limit: int) -> list[dict[str, Any]]:
    """Conversations, newest first, with one sink's mapping and pending count."""
    page = await conversation_list(query, sink, search=search, limit=limit, count=False)
    return page["rows"]


async def conversation_list(query: Query, sink: str | None, *, search: str | None = None,
                            sort: str = "last_message", show: str = "all", offset: int = 0,
                            limit: int = 50, count: bool = True) -> dict[str, Any]:
    """One page of conversations: {"rows": [...], "total": matches (None unless count)}.

    With a rank (last synced, pending) the ranked conversations come first, highest first,
    then the rest by last message; each part reads its own index and stops at the page.
    """
    if sort not in SORTS or show not in SHOWS:
        raise ValueError(f"sort must be one of {SORTS} and show one of {SHOWS}")
    where = " WHERE (" + _SHOW[show] + ")"
    params: list[Any] = [sink] if show in ("held", "dead") else []
    if search:
        columns, term = await _search_terms(query, search)
        match = " AND (1 = 0"
        for column in columns:
            match += _MATCH[column]
        where += match + ")"
        params += [term] * len(columns)
    searching = bool(search)
    if sort == "last_message" or not sink:
        sql = "SELECT c.key" + _SOURCE[searching] + where + _RECENT[searching]
        keys = _firsts(await query(sql + " LIMIT ? OFFSET ?", [*params, limit, offset]))
    else:
        ranked = _RANKED[sort] + "SELECT c.key FROM r JOIN conversations c ON c.key = r.key"
        keys = _firsts(await query(ranked + where + " ORDER BY r.rank DESC,"
                                   " c.last_message_at DESC, c.key DESC LIMIT ? OFFSET ?",
                                   [sink, *params, limit, offset]))
        if len(keys) < limit:
            first = await query(_RANKED[sort] + "SELECT count(*) FROM r JOIN conversations c"
                                " ON c.key = r.key" + where, [sink, *params])
            rest = (_RANKED[sort] + "SELECT c.key" + _SOURCE[searching] + where
                    + " AND c.key NOT IN (SELECT key FROM r)" + _RECENT[searching])
            keys += _firsts(await query(rest + " LIMIT ? OFFSET ?",
                                        [sink, *params, limit - len(keys),
                                         max(0, offset - first[0][0])]))
    total = None
    if count:
        total = (await query("SELECT count(*) FROM conversations c" + where, params))[0][0]
    return {"rows": await _list_rows(query, sink, keys), "total": total}


def _firsts(rows: list[Any]) -> list[Any]:
    return [row[0] for row in rows]


async def _search_terms(query: Query, search: str) -> tuple[list[str], str]:
    """The identity columns present, and the LIKE pattern: a number matches by its digits."""
    present = {row[1] for row in await query("PRAGMA table_info(conversations)", ())}
    columns = [c for c in IDENTITY_COLUMNS if c in present]
    text = search.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if digits and set(text) <= _PHONE_LIKE:
        text = digits
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return columns, f"%{escaped}%"


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


async def _list_rows(query: Query, sink: str | None, keys: list[str]) -> list[dict[str, Any]]:
    """The list's columns for the given conversations, in the given order."""
    if not keys:
        return []
    marks = _placeholders(len(keys))
    rows = await query(
        "SELECT c.key, c.contact_name, c.account, c.kind, c.last_message_at, c.message_count,"
        " s.record_id, s.last_synced_at, s.last_error, s.held_reason FROM conversations c"
        " LEFT JOIN sink_conversations s ON s.conversation = c.key AND s.sink = ?"
        f" WHERE c.key IN ({marks})", [sink, *keys])
    counts = await _delivery_counts(query, sink, keys)
    found = {row[0]: _record(_ROW_COLUMNS, (*row, *counts.get(row[0], (0, 0, 0, 0))))
             for row in rows}
    return [found[key] for key in keys if key in found]


async def _delivery_counts(query: Query, sink: str | None,
                           keys: list[str]) -> dict[str, tuple[int, int, int, int]]:
    """Per conversation: pending, delivered, transcripts (delivered batches), dead.

    CROSS JOIN keeps SQLite on the conversations' messages first, then each delivery by
    its primary key: the other way round it reads every delivery row the sink ever had.
    """
    marks = _placeholders(len(keys))
    rows = await query(
        "SELECT m.conversation, sum(CASE WHEN d.state = 'pending' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN d.state = 'done' THEN 1 ELSE 0 END),"
        # a transcript: one delivered batch (one conversation window)
        " count(DISTINCT CASE WHEN d.state = 'done' THEN d.batch_id END),"
        " sum(CASE WHEN d.state = 'dead' THEN 1 ELSE 0 END)"
        " FROM messages m CROSS JOIN sink_state ss"
        " CROSS JOIN deliveries d ON d.sink = ss.sink AND d.message_id = m.id"
        f" WHERE ss.sink = coalesce(?, ss.sink) AND m.conversation IN ({marks})"
        " GROUP BY m.conversation", [sink, *keys])
    return {row[0]: tuple(row[1:]) for row in rows}


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


async def dead_targets(query: Query, sink: str | None, limit: int) -> list[dict[str, Any]]:
    """Dead-lettered targets (e.g. one CRM opportunity of a message), newest first."""
    columns = ("sink", "key", "target", "conversation", "message_ids", "attempts", "reason",
               "dead_at")
    rows = await query(
        "SELECT t.sink, t.key, t.label, b.conversation, t.message_ids, t.attempts, t.reason,"
        " t.updated_at FROM targets t LEFT JOIN batches b ON b.id = t.batch_id"
        " WHERE t.state = 'dead' AND t.sink = coalesce(?, t.sink)"
        " AND substr(t.reason, 1, ?) != ?"  # a file still to come is not a dead letter
        " ORDER BY t.updated_at DESC LIMIT ?", (sink, len(WAITING_FOR_FILE), WAITING_FOR_FILE,
                                                limit))
    found = [_record(columns, row) for row in rows]
    for record in found:
        record["message_ids"] = [int(i) for i in record["message_ids"].strip(",").split(",") if i]
    return found


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


_PERSON_COLUMNS = ("key", "contact_name", "account", "kind", "last_message_at",
                   "message_count")
_DELIVERY_COLUMNS = ("message_id", "sink", "state", "reason", "done_at", "batch_key",
                     "attempts", "batch_error", "held", "batch_state", "next_attempt_at")


_IDENTITY_SELECT = {  # identity columns beyond the person's basic ones, when present
    "username": "SELECT username FROM conversations WHERE key = ?",
    "bsuid": "SELECT bsuid FROM conversations WHERE key = ?",
    "parent_bsuid": "SELECT parent_bsuid FROM conversations WHERE key = ?",
}
_MAPPING_COLUMNS = ("sink", "record_id", "last_synced_at", "last_error", "held_reason")


async def conversation(query: Query, key: str, limit: int = 2000) -> dict[str, Any] | None:
    """One person's conversation: who, per sink mapping, messages with per-sink fate."""
    rows = await query("SELECT key, contact_name, account, kind, last_message_at,"
                       " message_count FROM conversations WHERE key = ?", (key,))
    if not rows:
        return None
    person = _record(_PERSON_COLUMNS, rows[0])
    present = {row[1] for row in await query("PRAGMA table_info(conversations)", ())}
    for column in _IDENTITY_SELECT:
        if column in present:
            person[column] = (await query(_IDENTITY_SELECT[column], (key,)))[0][0]
    mappings = await query("SELECT sink, record_id, last_synced_at, last_error, held_reason"
                           " FROM sink_conversations WHERE conversation = ? ORDER BY sink",
                           (key,))
    stored = await query(
        f"SELECT {MESSAGE_COLUMNS}, st.status, st.failed_at FROM messages m LEFT JOIN"
        " statuses st ON st.source = m.source AND st.provider_id = m.provider_id"
        " WHERE m.conversation = ? ORDER BY m.sent_at, m.id LIMIT ?", (key, limit))
    fates = await _fates(query, key)
    return {"person": person,
            "sinks": [_record(_MAPPING_COLUMNS, row) for row in mappings],
            "messages": [{"message": message_from_row(row[:8]), "status": row[8],
                          "failed_at": from_timestamp(row[9]),
                          "deliveries": fates.get(row[0], [])} for row in stored],
            "truncated": len(stored) == limit}


async def _fates(query: Query, key: str) -> dict[int, list[dict[str, Any]]]:
    """Per message id, per sink: state, reason, its batch's attempts and error, and the
    CRM objects (ledger: idempotency key -> id) its batch went into."""
    rows = await query(
        "SELECT d.message_id, d.sink, d.state, d.reason, d.done_at, b.key, b.attempts,"
        " b.last_error, b.held, b.state, b.next_attempt_at FROM messages m"
        " CROSS JOIN sink_state ss CROSS JOIN deliveries d"
        " ON d.sink = ss.sink AND d.message_id = m.id"
        " LEFT JOIN batches b ON b.id = d.batch_id WHERE m.conversation = ?"
        " ORDER BY d.message_id, d.sink", (key,))
    ledgers: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fates: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        fate = _record(_DELIVERY_COLUMNS, row)
        fate["done_at"] = from_timestamp(row[4])
        fate["next_attempt_at"] = from_timestamp(row[10])
        fate["held"] = bool(fate["held"])
        if fate["batch_key"]:
            where = (fate["sink"], fate["batch_key"])
            if where not in ledgers:
                ledgers[where] = await _ledger_of(query, *where)
            fate["activities"] = ledgers[where]
        else:
            fate["activities"] = []
        fates.setdefault(fate["message_id"], []).append(fate)
    return fates


async def _ledger_of(query: Query, sink: str, batch_key: str) -> list[dict[str, Any]]:
    """Ledger entries of a batch: sinks derive their keys from the batch key."""
    rows = await query("SELECT key, external_id, created_at FROM ledger WHERE sink = ?"
                       " AND key >= ? AND key < ? ORDER BY key",
                       (sink, batch_key, batch_key + "\U0010ffff"))
    return [{"key": k, "part": k[len(batch_key):], "external_id": e,
             "created_at": from_timestamp(at)} for k, e, at in rows]


async def hourly(query: Query, since: float) -> dict[tuple[int, str], int]:
    """Messages per (hour as unix hour number, direction) sent since `since`.

    Two index-only counts: every message (messages_sent) and the outbound ones
    (messages_out, a partial index); inbound is the difference."""
    every = await query("SELECT CAST(sent_at / 3600 AS INTEGER), count(*) FROM messages"
                        " INDEXED BY messages_sent WHERE sent_at >= ? GROUP BY 1", (since,))
    out = dict(await query(
        "SELECT CAST(sent_at / 3600 AS INTEGER), count(*) FROM messages INDEXED BY messages_out"
        " WHERE sent_at >= ? AND json_extract(body, '$.direction') = 'out' GROUP BY 1",
        (since,)))
    counts: dict[tuple[int, str], int] = {}
    for hour, n in every:
        counts[(hour, "in")] = n - out.get(hour, 0)
        counts[(hour, "out")] = out.get(hour, 0)
    return counts


async def held_chats(query: Query, sink: str) -> list[dict[str, Any]]:
    """Chats a sink holds, counted by reason (e.g. no phone number and no user id field)."""
    rows = await query("SELECT held_reason, count(*) FROM sink_conversations WHERE sink = ?"
                       " AND held_reason IS NOT NULL GROUP BY held_reason"
                       " ORDER BY count(*) DESC", (sink,))
    return [{"reason": reason, "chats": n} for reason, n in rows]


async def failed_sends(query: Query, limit: int) -> list[dict[str, Any]]:
    """Outbound messages WhatsApp reported as failed, newest first, with Meta's error."""
    columns = ("provider_id", "recipient", "conversation", "failed_at", "errors", "message_id")
    rows = await query(
        "SELECT s.provider_id, s.recipient, m.conversation, s.failed_at, s.errors, m.id"
        " FROM statuses s LEFT JOIN messages m ON m.source = s.source"
        " AND m.provider_id = s.provider_id WHERE s.failed_at IS NOT NULL"
        " ORDER BY s.failed_at DESC LIMIT ?", (limit,))
    return [_record(columns, row) for row in rows]


async def people_counts(query: Query) -> dict[str, int]:
    """Group chats and failed sends in the buffer."""
    (groups,) = (await query("SELECT count(*) FROM conversations WHERE group_id IS NOT NULL",
                             ()))[0]
    (failed,) = (await query("SELECT count(*) FROM statuses WHERE failed_at IS NOT NULL", ()))[0]
    return {"group_chats": groups, "failed_sends": failed}


_RETRYING = (" FROM batches WHERE sink = ? AND state = 'ready' AND held = 0 AND attempts > 0"
             " AND last_error IS NOT NULL")


async def sync_health(query: Query, sink: str) -> dict[str, Any]:
    """What the health verdict reads beyond sinks(): batches waiting to retry after an
    error (how many, when the oldest was first tried, the latest error) and when the sink
    last delivered to a conversation."""
    ((batches, since),) = await query("SELECT count(*), min(created_at)" + _RETRYING, (sink,))
    latest = await query("SELECT last_error" + _RETRYING + " ORDER BY released_at DESC LIMIT 1",
                         (sink,)) if batches else []
    delivered = await query("SELECT last_synced_at FROM sink_conversations WHERE sink = ?"
                            " AND last_synced_at IS NOT NULL ORDER BY last_synced_at DESC"
                            " LIMIT 1", (sink,))  # the newest entry of an index, not a scan
    return {"retrying": batches, "retrying_since": from_timestamp(since),
            "retry_error": latest[0][0] if latest else None,
            "last_delivered_at": from_timestamp(delivered[0][0]) if delivered else None}


async def previews(query: Query, message_ids: Sequence[int] = (),
                   conversations: Sequence[str] = ()) -> dict[Any, tuple[str | None, Message]]:
    """Who and what, for the status page's lists of things to act on: per message id, and
    per conversation key its newest message, as (the person's name, the Message)."""
    found: dict[Any, tuple[str | None, Message]] = {}
    if message_ids:
        rows = await query(f"SELECT {MESSAGE_COLUMNS}, c.contact_name FROM messages m LEFT JOIN"
                           " conversations c ON c.key = m.conversation"
                           f" WHERE m.id IN ({_placeholders(len(message_ids))})",
                           list(message_ids))
        found.update({row[0]: (row[-1], message_from_row(row[:-1])) for row in rows})
    if conversations:
        rows = await query(f"SELECT {MESSAGE_COLUMNS}, c.contact_name FROM conversations c"
                           " JOIN messages m ON m.id = (SELECT id FROM messages"
                           " WHERE conversation = c.key ORDER BY sent_at DESC, id DESC LIMIT 1)"
                           f" WHERE c.key IN ({_placeholders(len(conversations))})",
                           list(conversations))
        found.update({row[3]: (row[-1], message_from_row(row[:-1])) for row in rows})
    return found


async def overdue_files(query: Query, sink: str, older_than: float,
                        limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Targets (attachments) waiting for their message's file since before `older_than`
    (unix seconds): how many, and the oldest `limit` of them."""
    where = (" FROM targets t LEFT JOIN batches b ON b.id = t.batch_id WHERE t.sink = ?"
             " AND t.state = 'dead' AND substr(t.reason, 1, ?) = ? AND t.updated_at < ?")
    params = (sink, len(WAITING_FOR_FILE), WAITING_FOR_FILE, older_than)
    ((count,),) = await query("SELECT count(*)" + where, params)
    columns = ("target", "conversation", "message_ids", "reason", "waiting_since")
    rows = await query("SELECT t.label, b.conversation, t.message_ids, t.reason, t.updated_at"
                       + where + " ORDER BY t.updated_at LIMIT ?", (*params, limit)) \
        if count else []
    found = [_record(columns, row) for row in rows]
    for record in found:
        record["message_ids"] = [int(i) for i in record["message_ids"].strip(",").split(",") if i]
    return count, found
