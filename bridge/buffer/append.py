"""The append path: one or several webhooks' messages, statuses and identities stored in
one transaction. Shared by both backends (see bridge.buffer.syncdb for SQLite)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import bridge.buffer.failures as failures
import bridge.buffer.identity as identity
import bridge.buffer.media as media
from bridge.buffer.codec import message_row, to_timestamp
from bridge.model import STATUS_FAILED, STATUS_RANK, Identity, Message, StatusUpdate, is_group

ROWS_PER_INSERT = 500  # messages per INSERT statement (6 parameters each; SQLite takes 32,766)
_UPSERT_STATUS = """
INSERT INTO statuses (source, provider_id, status, rank, at, recipient, failed_at, errors)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (source, provider_id) DO UPDATE SET
    status = CASE WHEN excluded.rank > statuses.rank THEN excluded.status ELSE statuses.status END,
    at = CASE WHEN excluded.rank > statuses.rank THEN excluded.at ELSE statuses.at END,
    rank = max(statuses.rank, excluded.rank),
    failed_at = coalesce(statuses.failed_at, excluded.failed_at),
    errors = coalesce(excluded.errors, statuses.errors),
    recipient = coalesce(statuses.recipient, excluded.recipient)
"""
_UPSERT_CONVERSATION = """
INSERT INTO conversations (key, contact_name, account, last_message_at, message_count, kind,
                           group_id)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    contact_name = coalesce(excluded.contact_name, conversations.contact_name),
    account = coalesce(excluded.account, conversations.account),
    last_message_at = max(coalesce(conversations.last_message_at, 0),
                          coalesce(excluded.last_message_at, 0)),
    message_count = conversations.message_count + excluded.message_count,
    kind = CASE WHEN excluded.kind = 'group' THEN 'group' ELSE conversations.kind END,
    group_id = coalesce(excluded.group_id, conversations.group_id)
WHERE excluded.message_count > 0
   OR (excluded.contact_name IS NOT NULL
       AND excluded.contact_name IS NOT conversations.contact_name)
   OR (excluded.account IS NOT NULL AND excluded.account IS NOT conversations.account)
   OR (excluded.kind = 'group' AND conversations.kind != 'group')
"""  # the WHERE skips no-op updates: a replayed webhook then writes no page at all


@dataclass(slots=True)
class Append:
    """One append call's rows, waiting for its group's commit."""

    messages: list[Message]
    rows: list[tuple[Any, ...]]
    statuses: list[tuple[Any, ...]]
    contacts: Mapping[str, str]
    identities: list[Identity]
    now: float


def status_row(status: StatusUpdate) -> tuple[Any, ...]:
    failed = status.status == STATUS_FAILED
    return (status.source, status.provider_id, None if failed else status.status,
            STATUS_RANK.get(status.status, 0), to_timestamp(status.at), status.recipient,
            to_timestamp(status.at) if failed else None,
            json.dumps(status.errors) if status.errors else None)


def new_append(messages: Iterable[Message], statuses: Iterable[StatusUpdate],
               contacts: Mapping[str, str] | None, identities: Iterable[Identity]
               ) -> Append | None:
    """One append call's rows, stamped now; None when it has nothing to store."""
    now = time.time()
    messages = list(messages)
    item = Append(messages, [message_row(m, now) for m in messages],
                  [status_row(s) for s in statuses], contacts or {}, list(identities), now)
    if not (item.rows or item.statuses or item.contacts or item.identities):
        return None
    return item


async def append_group(db: Any, items: list[Append],
                  media_sources: Mapping[str, str | None] | None = None) -> list[int]:
    """Insert every item's rows in the open transaction; return new-message counts.

    On SQLite this runs in the write connection's thread, inside the Writer's
    transaction (db: SyncDb); on PostgreSQL in the append's own transaction (db: PgDb).
    """
    people, described = await identity.file_under_people(
        db, [i for item in items for i in item.identities],
        [m.conversation for item in items for m in item.messages], items[-1].now)
    rows = [row for item in items for row in item.rows]
    if people:
        rows = [(*row[:2], people.get(row[2], row[2]), *row[3:]) for row in rows]
    new, first = await _insert_messages(db, rows)
    if new and media_sources:
        await media.queue_jobs(db, first, media_sources, time.time())
    if new:
        # history (recovered, not live) is backfill material: paced like a backfill
        await db.execute(
            "INSERT OR IGNORE INTO deliveries (sink, message_id, backfill)"
            " SELECT s.sink, m.id, coalesce(json_extract(m.body, '$.history'), 0)"
            " FROM messages m JOIN sink_state s ON s.enabled = 1 WHERE m.id >= ?", (first,))
    statuses = [row for item in items for row in item.statuses]
    if statuses:
        await db.executemany(_UPSERT_STATUS, statuses)
        await failures.note_failures(db, statuses, items[-1].now)
    counts, fresh = _credit_new(items, new)
    await _upsert_conversations(db, fresh, items, people)
    await identity.describe(db, described)
    return counts


async def _insert_messages(db: Any,
                     rows: list[tuple[Any, ...]]) -> tuple[set[tuple[str, str]], int]:
    """Insert the rows not stored yet; their (source, provider id) keys and the first new id.

    One statement per ROWS_PER_INSERT rows, RETURNING what it inserted (a replay or a
    duplicate within the group returns nothing).
    """
    new: set[tuple[str, str]] = set()
    first = 0
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        marks = _value_rows(len(chunk), 6)
        async with db.execute(
            "INSERT OR IGNORE INTO messages (source, provider_id, conversation, sent_at,"
            f" stored_at, body) VALUES {marks} RETURNING id, source, provider_id",
            [value for row in chunk for value in row]) as cursor:
            inserted = await cursor.fetchall()
        for message_id, source, provider_id in inserted:
            new.add((source, provider_id))
            first = message_id if not first else min(first, message_id)
    return new, first


def _value_rows(count: int, width: int) -> str:
    """'(?,?),(?,?)' for count rows of width parameters."""
    row = "(" + ",".join("?" * width) + ")"
    return ",".join([row] * count)


def _credit_new(items: list[Append], new: set[tuple[str, str]]
                ) -> tuple[list[int], list[Message]]:
    """Per item, how many of its messages are new; and each new message once (a key sent
    twice in one group is credited to its first sender)."""
    counts = []
    fresh = []
    for item in items:
        count = 0
        for message in item.messages:
            key = (message.source, message.provider_id)
            if key in new:
                new.discard(key)
                count += 1
                fresh.append(message)
        counts.append(count)
    return counts, fresh


async def _upsert_conversations(db: Any, fresh: list[Message],
                                items: list[Append], people: Mapping[str, str]) -> None:
    agg: dict[str, list[Any]] = defaultdict(lambda: [None, None, 0.0, 0, "person", None])
    for message in fresh:
        entry = agg[people.get(message.conversation, message.conversation)]
        if is_group(message.conversation):
            entry[4], entry[5] = "group", message.extra.get("group_id")
            entry[0] = entry[0] or message.extra.get("group_name")
            entry[1] = message.account or entry[1]
            entry[2] = max(entry[2], to_timestamp(message.sent_at))
            entry[3] += 1
            continue
        entry[0] = message.contact_name or entry[0]
        entry[1] = message.account or entry[1]
        entry[2] = max(entry[2], to_timestamp(message.sent_at))
        entry[3] += 1
        if message.extra.get("conversation_kind") == "group":
            entry[4] = "group"
    for item in items:
        for key, name in item.contacts.items():
            agg[people.get(key, key)][0] = name
    if agg:
        await db.executemany(_UPSERT_CONVERSATION,
                             [(k, v[0], v[1], v[2] or None, v[3], v[4], v[5])
                              for k, v in sorted(agg.items())])

