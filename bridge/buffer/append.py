"""The append path: one or several webhooks' messages, statuses and identities stored in
one transaction, on either engine (the connector runs it)."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

import bridge.buffer.failures as failures
import bridge.buffer.identity as identity
import bridge.buffer.media as media
from bridge.buffer.codec import message_row, to_timestamp
from bridge.buffer.compiler import P, Query, greatest, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import conversations, deliveries, messages, sink_state, statuses
from bridge.buffer.tables import media as media_jobs
from bridge.model import (
    STATUS_FAILED,
    STATUS_RANK,
    UPGRADE_SUFFIX,
    Identity,
    Message,
    StatusUpdate,
    is_group,
)

ROWS_PER_INSERT = 500  # messages per INSERT statement (8 parameters each; SQLite takes 32,766)
_MESSAGE_COLUMNS = ("source", "provider_id", "conversation", "sent_at", "stored_at", "body",
                    "direction", "account")


@lru_cache(maxsize=ROWS_PER_INSERT)
def insert_messages(count: int) -> Query:
    """INSERT of `count` message rows (parameters <column>_<n>, row after row: the rows'
    values go in as they are), new ones RETURNING; one text per row count, compiled once."""
    rows = [{c: P(f"{c}_{n}") for c in _MESSAGE_COLUMNS} for n in range(count)]
    return Query(lambda insert: insert(messages).values(rows).on_conflict_do_nothing()
                 .returning(messages.c.id, messages.c.source, messages.c.provider_id),
                 f"insert {count} messages")


def _new_deliveries() -> Any:
    # every enabled sink gets each new message (ids of this append and after)
    picked = sa.select(sink_state.c.sink, messages.c.id, sa.literal(0)).join_from(
        messages, sink_state, sink_state.c.enabled == 1).where(messages.c.id >= P("first"))
    return lambda insert: insert(deliveries).from_select(
        ["sink", "message_id", "backfill"], picked).on_conflict_do_nothing()


NEW_DELIVERIES = Query(_new_deliveries(), "deliveries of new messages")
# history (recovered, not live) is backfill material: paced like a backfill
HISTORY_AS_BACKFILL = Query(sa.update(deliveries).values(backfill=1).where(
    deliveries.c.sink.in_(sa.select(sink_state.c.sink)),  # the key's first column: no scan
    deliveries.c.message_id.in_(values_of("ids"))), "history deliveries as backfill")
_upgraded, _upgrade = messages.alias("upgraded"), messages.alias("upgrade")
# placeholders (of `source`, ids `ids`) whose upgrade is stored: their deliveries no sink has
# batched yet are settled, the upgrade carrying what they stood for (model.UPGRADE_SUFFIX)
FOLD_UPGRADED = Query(sa.update(deliveries).values(
    state="skipped", reason=P("reason"), done_at=P("now")).where(
    deliveries.c.sink.in_(sa.select(sink_state.c.sink)),  # the key, not every pending row
    deliveries.c.state == "pending", deliveries.c.batch_id.is_(None),
    deliveries.c.message_id.in_(sa.select(_upgraded.c.id).where(
        _upgraded.c.source == P("source"),
        _upgraded.c.provider_id.in_(values_of("ids", "text")),
        sa.exists().where(_upgrade.c.source == _upgraded.c.source,
                          _upgrade.c.provider_id == _upgraded.c.provider_id
                          + sa.literal(UPGRADE_SUFFIX))))),
    "fold upgraded placeholders")
FOLDED = "its media arrived later and is delivered in its place"
_dm = deliveries.c
# the same, for a sink that queues stored messages at once (its backfill, a re-enabled
# sink's catch-up): its pending unbatched deliveries whose message has an upgrade stored
FOLD_QUEUED = Query(sa.update(deliveries).values(
    state="skipped", reason=P("reason"), done_at=P("now")).where(
    _dm.sink == P("sink"), _dm.state == "pending", _dm.batch_id.is_(None),
    sa.exists().where(_upgraded.c.id == _dm.message_id,
                      _upgrade.c.source == _upgraded.c.source,
                      _upgrade.c.provider_id == _upgraded.c.provider_id
                      + sa.literal(UPGRADE_SUFFIX))),
    "fold upgraded placeholders a sink queued")


def _upsert_status(insert: Any) -> Any:
    new = insert(statuses).values({c: P(c) for c in (
        "source", "provider_id", "status", "rank", "at", "recipient", "failed_at", "errors")})
    ahead = new.excluded.rank > statuses.c.rank
    return new.on_conflict_do_update(index_elements=["source", "provider_id"], set_={
        "status": sa.case((ahead, new.excluded.status), else_=statuses.c.status),
        "at": sa.case((ahead, new.excluded.at), else_=statuses.c.at),
        "rank": greatest(statuses.c.rank, new.excluded.rank),
        "failed_at": sa.func.coalesce(statuses.c.failed_at, new.excluded.failed_at),
        "errors": sa.func.coalesce(new.excluded.errors, statuses.c.errors),
        "recipient": sa.func.coalesce(statuses.c.recipient, new.excluded.recipient)})


UPSERT_STATUS = Query(_upsert_status, "upsert status")
ORIGINALS = Query(sa.select(messages.c.source, messages.c.provider_id, messages.c.body,
                            media_jobs.c.state)
                  .outerjoin(media_jobs, media_jobs.c.message_id == messages.c.id)
                  # both key columns: the unique index, never a scan of every message
                  .where(messages.c.source.in_(values_of("sources", "text")),
                         messages.c.provider_id.in_(values_of("ids", "text"))),
                  "messages history follow-ups upgrade")


def _upsert_conversation(insert: Any) -> Any:
    c = conversations.c
    new = insert(conversations).values({k: P(k) for k in (
        "key", "contact_name", "account", "last_message_at", "message_count", "kind",
        "group_id")})
    x = new.excluded
    return new.on_conflict_do_update(index_elements=["key"], set_={
        "contact_name": sa.func.coalesce(x.contact_name, c.contact_name),
        "account": sa.func.coalesce(x.account, c.account),
        "last_message_at": greatest(sa.func.coalesce(c.last_message_at, 0),
                                    sa.func.coalesce(x.last_message_at, 0)),
        "message_count": c.message_count + x.message_count,
        "kind": sa.case((x.kind == "group", "group"), else_=c.kind),
        "group_id": sa.func.coalesce(x.group_id, c.group_id),
    }, where=sa.or_(  # a no-op update is skipped: a replayed webhook writes no page at all
        x.message_count > 0,
        sa.and_(x.contact_name.isnot(None), x.contact_name.is_distinct_from(c.contact_name)),
        sa.and_(x.account.isnot(None), x.account.is_distinct_from(c.account)),
        sa.and_(x.kind == "group", c.kind != "group")))


UPSERT_CONVERSATION = Query(_upsert_conversation, "upsert conversation")


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


_STATUS_COLUMNS = ("source", "provider_id", "status", "rank", "at", "recipient", "failed_at",
                   "errors")


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


async def append_group(db: Connector, items: list[Append],
                       media_sources: Mapping[str, str | None] | None = None,
                       known: identity.KnownKeys | None = None,
                       hold_media: bool = True) -> list[int]:
    """Insert every item's rows in the open transaction; return new-message counts.
    known: the senders' keys earlier groups read (one writer only: SQLite's); hold_media:
    a source of this process that cannot fetch queues its jobs held (else pending: a shared
    buffer, where another process may fetch them: media.queue_jobs)."""
    people, described = await identity.file_under_people(
        db, [i for item in items for i in (*item.identities, *identity.id_changes(
            item.messages))],
        [m.conversation for item in items for m in item.messages], items[-1].now, known)
    rows = [row for item in items for row in item.rows]
    if people:  # only the keys filed under another person's conversation
        rows = [(*row[:2], people[row[2]], *row[3:]) if row[2] in people else row
                for row in rows]
    rows = await _drop_live_copies(db, items, rows)
    new, first = await _insert_messages(db, rows)
    counts, fresh = _credit_new(items, new)
    if new:
        await db.run(NEW_DELIVERIES, first=first)
        history = [new[(m.source, m.provider_id)] for m in fresh if m.history]
        if history:
            await db.run(HISTORY_AS_BACKFILL, ids=history)
            await _fold_upgraded(db, [m for m in fresh if m.history], items[-1].now)
        if media_sources:
            await media.queue_jobs(db, fresh, new, media_sources, time.time(), hold_media)
    status_rows = [row for item in items for row in item.statuses]
    if status_rows:
        await db.many(UPSERT_STATUS, status_rows)  # rows in the statement's order
        await failures.note_failures(db, status_rows, items[-1].now)
    await _upsert_conversations(db, fresh, items, people)
    if described:
        await identity.describe(db, described)
    return counts


async def _fold_upgraded(db: Connector, history: list[Message], now: float) -> None:
    """A history media follow-up replaces its placeholder for every sink that has not
    taken the placeholder yet, whichever of the two was stored first."""
    ids: dict[str, set[str]] = defaultdict(set)
    for message in history:
        target = message.extra.get("upgrades")
        if isinstance(target, str):
            ids[message.source].add(target)
        elif message.kind == "media_placeholder":
            ids[message.source].add(message.provider_id)
    for source, wanted in ids.items():
        await db.run(FOLD_UPGRADED, source=source, ids=sorted(wanted), reason=FOLDED, now=now)


async def _drop_live_copies(db: Connector, items: list[Append],
                            rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """Rows without the history follow-ups whose message is stored with its media id
    (it came live: phase 0 of a history sync is the last day, so it comes again);
    such a follow-up is a duplicate, not an upgrade, and would reach the CRM twice. One
    whose original's file died (its media id expired, say) is kept: it brings the file."""
    wanted = {(m.source, m.extra["upgrades"]) for item in items for m in item.messages
              if m.history and isinstance(m.extra.get("upgrades"), str)}
    if not wanted:
        return rows
    found = await db.rows(ORIGINALS, sources=sorted({source for source, _ in wanted}),
                          ids=sorted({provider_id for _, provider_id in wanted}))
    live = {(source, provider_id + UPGRADE_SUFFIX) for source, provider_id, body, file in found
            if (source, provider_id) in wanted and _has_media(body) and file != "dead"}
    return [row for row in rows if (row[0], row[1]) not in live] if live else rows


def _has_media(body: str) -> bool:
    """Whether a stored message carries a media id (a placeholder, or a live message the
    Cloud API could not carry, e.g. unsupported, does not: its follow-up is kept)."""
    media_obj = json.loads(body).get("media")
    return isinstance(media_obj, dict) and bool(media_obj.get("id"))


async def _insert_messages(db: Connector, rows: list[tuple[Any, ...]]
                           ) -> tuple[dict[tuple[str, str], int], int]:
    """Insert the rows not stored yet: {(source, provider id): new id}, and the first id.

    One statement per ROWS_PER_INSERT rows, RETURNING what it inserted (a replay or a
    duplicate within the group returns nothing).
    """
    new: dict[tuple[str, str], int] = {}
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        values = [value for row in chunk for value in row]
        for message_id, source, provider_id in await db.rows(insert_messages(len(chunk)),
                                                             values):
            new[(source, provider_id)] = message_id
    return new, min(new.values(), default=0)


def _credit_new(items: list[Append], new: Mapping[tuple[str, str], int]
                ) -> tuple[list[int], list[Message]]:
    """Per item, how many of its messages are new; and each new message once (a key sent
    twice in one group is credited to its first sender)."""
    counts = []
    fresh = []
    left = dict.fromkeys(new)
    for item in items:
        count = 0
        for message in item.messages:
            if left.pop((message.source, message.provider_id), 0) is None:
                count += 1
                fresh.append(message)
        counts.append(count)
    return counts, fresh


async def _upsert_conversations(db: Connector, fresh: list[Message],
                                items: list[Append], people: Mapping[str, str]) -> None:
    # key -> [contact_name, account, last_message_at, message_count, kind, group_id]
    agg: dict[str, list[Any]] = {}
    for message in fresh:
        key = message.conversation
        entry = agg.get(people.get(key, key) if people else key)
        if entry is None:
            entry = agg[people.get(key, key) if people else key] = [
                None, None, 0.0, 0, "person", None]
        extra = message.extra
        if is_group(key):
            entry[4], entry[5] = "group", extra.get("group_id")
            entry[0] = entry[0] or extra.get("group_name")
        else:
            entry[0] = message.contact_name or entry[0]
            if extra.get("conversation_kind") == "group":
                entry[4] = "group"
        entry[1] = message.account or entry[1]
        sent = to_timestamp(message.sent_at)
        if sent > entry[2]:
            entry[2] = sent
        entry[3] += 1
    for item in items:
        for key, name in item.contacts.items():
            key = people.get(key, key)
            entry = agg.get(key)
            if entry is None:
                entry = agg[key] = [None, None, 0.0, 0, "person", None]
            entry[0] = name
    if agg:  # values in the statement's order: key, contact_name, account, ...
        await db.many(UPSERT_CONVERSATION, [(k, v[0], v[1], v[2] or None, v[3], v[4], v[5])
                                            for k, v in sorted(agg.items())])
