"""Read-only queries behind `bridge status`, /status and the status page."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from bridge.buffer.codec import (
    WIDTH,
    from_timestamp,
    ids_of,
    message_from_row,
    select_messages,
)
from bridge.buffer.compiler import (
    P,
    Query,
    indexed,
    ordered_join,
    starts_with,
    values_of,
    whole_number,
)
from bridge.buffer.connectors import Connector
from bridge.buffer.history import HISTORY_HELD, waiting_note
from bridge.buffer.tables import (
    TEXT,
    batches,
    deliveries,
    ledger,
    media,
    sink_conversations,
    sink_numbers,
    sink_state,
    statuses,
    targets,
)
from bridge.buffer.tables import (
    conversations as conversations_table,
)
from bridge.buffer.tables import (
    messages as messages_table,
)
from bridge.contracts import SETTLING, SINK_NOTE, WAITING_FOR_FILE, WAITS_WITH_MESSAGES
from bridge.model import Message

b, c, d, m = batches.c, conversations_table.c, deliveries.c, messages_table.c
s, t, st = sink_conversations.c, targets.c, statuses.c
pending = indexed(deliveries, "deliveries_pending", "d")
dead = indexed(deliveries, "deliveries_dead", "d")
_ANY_SINK = sa.func.coalesce(P("sink", type_=TEXT), sink_state.c.sink)
_NOT_WAITING = ~starts_with(t.reason, WAITING_FOR_FILE)

_SINK_COLUMNS = ("sink", "installed_at", "enabled", "disabled_at", "last_sync_at",
                 "next_sync_at", "last_error", "last_error_at", "backfill_since",
                 "backfill_done_at", "backfill_total", "backfill_started_at")
_TIMES = {"installed_at", "disabled_at", "last_sync_at", "next_sync_at", "last_error_at",
          "backfill_since", "backfill_done_at", "last_synced_at", "last_message_at",
          "failed_at", "at", "dead_at", "sent_at", "backfill_started_at", "waiting_since"}


def _record(columns: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    """A row as a dict, with unix times turned into aware datetimes."""
    return {c: from_timestamp(v) if c in _TIMES else v for c, v in zip(columns, row, strict=True)}


SINK_ROWS = Query(sa.select(*(sink_state.c[n] for n in _SINK_COLUMNS)).order_by(
    sink_state.c.sink), "sinks")
_held = sa.func.coalesce(b.held, 0)
# two partial-index reads: a scan of every delivery row took ~70 ms at 1M messages
BACKLOG = Query(sa.select(pending.c.sink, _held, sa.func.count()).select_from(
    pending.outerjoin(batches, b.id == pending.c.batch_id)).where(pending.c.state == "pending")
    .group_by(pending.c.sink, _held), "backlog per sink")
DEAD_LETTERS = Query(sa.select(dead.c.sink, sa.func.count()).where(dead.c.state == "dead")
                     .group_by(dead.c.sink), "dead letters per sink")
# a post that waits with its messages' retry is counted with them (backlog, dead letters)
_OWN_FAILURE = ~starts_with(t.reason, WAITS_WITH_MESSAGES)
TARGET_COUNTS = Query(sa.select(t.sink, t.state, sa.func.count()).where(
    _NOT_WAITING, _OWN_FAILURE).group_by(t.sink, t.state), "failed targets per sink")
# batches of a killed process waiting out a write it may have had in flight (delivery.FREED):
# among a sink's batches waiting for a later try (batches_ready, from now on)
_settling = (b.sink == P("sink"), b.state == "ready", b.next_attempt_at > P("now"),
             b.uncertain == 1, starts_with(b.last_error, SETTLING))
SETTLING_COUNTS = Query(sa.select(sa.func.count(), sa.func.max(b.next_attempt_at))
                        .where(*_settling), "a sink's batches settling after a crash")


async def sinks(db: Connector) -> list[dict[str, Any]]:
    """Every sink ever installed, with backlog, held and dead-letter counts."""
    rows = await db.rows(SINK_ROWS)
    counts: dict[str, dict[str, int]] = {}
    zero = {"backlog": 0, "held": 0, "dead_letters": 0, "failing_targets": 0,
            "dead_targets": 0, "settling": 0, "settling_until": None}
    for sink, held, n in await db.rows(BACKLOG):
        entry = counts.setdefault(sink, dict(zero))
        entry["backlog"] += n
        entry["held"] += n if held else 0
    for sink, n in await db.rows(DEAD_LETTERS):
        counts.setdefault(sink, dict(zero))["dead_letters"] = n
    for sink, state, n in await db.rows(TARGET_COUNTS):
        entry = counts.setdefault(sink, dict(zero))
        entry["dead_targets" if state == "dead" else "failing_targets"] = n
    now = time.time()
    for sink in [row[0] for row in rows]:
        n, until = await db.one(SETTLING_COUNTS, sink=sink, now=now)
        if n:
            counts.setdefault(sink, dict(zero)).update(settling=n, settling_until=until)
    progress = await backfill_progress(db)
    result = []
    for row in rows:
        record = _record(_SINK_COLUMNS, row)
        record["enabled"] = bool(record["enabled"])
        record.update(counts.get(record["sink"], zero))
        record["settling_until"] = from_timestamp(record["settling_until"])
        record["backfill"] = _with_eta(progress.get(record["sink"]),
                                       record["backfill_started_at"])
        result.append(record)
    return result


_HELD_PENDING = sa.and_(d.state == "pending", sa.func.coalesce(b.held, 0) == 1)
PROGRESS = Query(sa.select(
    d.sink, sa.func.count(), sa.func.sum(sa.case((d.state != "pending", 1), else_=0)),
    sa.func.sum(sa.case((_HELD_PENDING, 1), else_=0)),
    sa.func.sum(sa.case((d.state == "dead", 1), else_=0)),
    sa.func.count(m.conversation.distinct()),
    sa.func.count(sa.case((d.state == "pending", m.conversation)).distinct()))
    .join_from(deliveries, messages_table, m.id == d.message_id)
    .outerjoin(batches, b.id == d.batch_id).where(d.backfill == 1)
    .group_by(d.sink), "backfill progress")


async def backfill_progress(db: Connector) -> dict[str, dict[str, int]]:
    """Per sink: backfill messages and conversations done and in all, the messages held
    (waiting for something outside the bridge: no pace can promise their end), and those
    of the done that went to dead letters (done, but not in the CRM)."""
    rows = await db.rows(PROGRESS)
    return {sink: {"messages_total": total, "messages_done": done,
                   "messages_held": int(held or 0), "messages_dead": int(dead or 0),
                   "conversations_total": convs, "conversations_done": convs - open_convs}
            for sink, total, done, held, dead, convs, open_convs in rows}


def _with_eta(progress: dict[str, Any] | None, started_at: datetime | None) -> dict[str, Any]:
    """Progress plus seconds left at the pace so far (None until something is done, and
    when all that is left is held: it ends when someone acts, not at a pace)."""
    if progress is None:
        return {"messages_total": 0, "messages_done": 0, "messages_held": 0,
                "messages_dead": 0, "conversations_total": 0, "conversations_done": 0,
                "eta_seconds": None}
    done, total = progress["messages_done"], progress["messages_total"]
    moving = total - done - progress["messages_held"]
    eta = None
    if started_at and done > 0 and moving > 0:
        eta = (time.time() - started_at.timestamp()) * moving / done
    return {**progress, "eta_seconds": eta if done < total else 0.0}


# The conversation list: each order is an index walk that stops at the page (see tables).
SORTS = ("last_message", "last_synced", "pending")
SHOWS = ("all", "held", "dead", "groups")
# Columns that name a person: a search looks in each.
IDENTITY_COLUMNS = ("key", "contact_name", "username", "bsuid", "parent_bsuid")
_ROW_COLUMNS = ("key", "contact_name", "account", "kind", "last_message_at", "message_count",
                "record_id", "last_synced_at", "last_error", "held_reason", "phone", "username",
                "pending",
                "synced", "transcripts", "dead", "older_held", "older_held_since")
_PHONE_LIKE = set("0123456789+-() .")
_SHOW = {  # show -> condition on conversations; held and dead take the sink (NULL: any)
    "all": sa.true(),
    "held": c.key.in_(sa.select(s.conversation).where(
        s.held_reason.isnot(None), s.sink == sa.func.coalesce(P("sink", type_=TEXT), s.sink))),
    "dead": c.key.in_(sa.select(m.conversation).join_from(dead, messages_table,
                                                          m.id == dead.c.message_id).where(
        dead.c.state == "dead",
        dead.c.sink == sa.func.coalesce(P("sink", type_=TEXT), dead.c.sink))),
    "groups": c.kind == "group",
}
# newest first; a conversation with no message yet comes last on both engines
_RECENT = (c.last_message_at.desc().nulls_last(), c.key.desc())


def _ranked(sort: str) -> Any:
    """(key, rank) of the conversations that have a rank for the sink under `sort`."""
    if sort == "last_synced":
        synced = indexed(sink_conversations, "sink_conversations_synced", "s")
        return sa.select(synced.c.conversation.label("key"),
                         synced.c.last_synced_at.label("rank")).where(
            synced.c.sink == P("sink"), synced.c.last_synced_at.isnot(None)).cte("r")
    return sa.select(m.conversation.label("key"), sa.func.count().label("rank")).join_from(
        pending, messages_table, m.id == pending.c.message_id).where(
        pending.c.sink == P("sink"), pending.c.state == "pending").group_by(
        m.conversation).cte("r")


def _where(show: str, searching: bool) -> Any:
    condition = _SHOW[show]
    if searching:
        condition = sa.and_(condition, sa.or_(*(c[name].ilike(P("term"), escape="\\")
                                                for name in IDENTITY_COLUMNS)))
    return condition


_LISTS: dict[tuple[str, ...], Query] = {}


def _list_query(part: str, show: str, searching: bool, sort: str = "last_message") -> Query:
    """The list's statements, built once per (part, show, search or not, sort)."""
    key = (part, show, str(searching), sort)
    if key not in _LISTS:
        where = _where(show, searching)
        if part == "recent":
            q = sa.select(c.key).where(where).order_by(*_RECENT).limit(P("limit")).offset(
                P("offset"))
        elif part == "count":
            q = sa.select(sa.func.count()).select_from(conversations_table).where(where)
        else:
            r = _ranked(sort)
            if part == "ranked":
                q = sa.select(c.key).join_from(r, conversations_table, c.key == r.c.key).where(
                    where).order_by(r.c.rank.desc(), *_RECENT).limit(P("limit")).offset(
                    P("offset"))
            elif part == "ranked_count":
                q = sa.select(sa.func.count()).join_from(
                    r, conversations_table, c.key == r.c.key).where(where)
            else:  # the unranked rest, after the ranked ones
                q = sa.select(c.key).where(where, c.key.not_in(sa.select(r.c.key))).order_by(
                    *_RECENT).limit(P("limit")).offset(P("offset"))
        _LISTS[key] = Query(q, f"conversation list: {' '.join(key)}")
    return _LISTS[key]


async def conversations(db: Connector, sink: str | None, search: str | None,
                        limit: int) -> list[dict[str, Any]]:
    """Conversations, newest first, with one sink's mapping and pending count."""
    page = await conversation_list(db, sink, search=search, limit=limit, count=False)
    return page["rows"]


async def conversation_list(db: Connector, sink: str | None, *, search: str | None = None,
                            sort: str = "last_message", show: str = "all", offset: int = 0,
                            limit: int = 50, count: bool = True) -> dict[str, Any]:
    """One page of conversations: {"rows": [...], "total": matches (None unless count)}.

    With a rank (last synced, pending) the ranked conversations come first, highest first,
    then the rest by last message; each part reads its own index and stops at the page.
    """
    if sort not in SORTS or show not in SHOWS:
        raise ValueError(f"sort must be one of {SORTS} and show one of {SHOWS}")
    searching = bool(search)
    params = {"sink": sink, "term": _search_term(search) if search else None}
    if sort == "last_message" or not sink:
        keys = _firsts(await db.rows(_list_query("recent", show, searching), **params,
                                     limit=limit, offset=offset))
    else:
        keys = _firsts(await db.rows(_list_query("ranked", show, searching, sort), **params,
                                     limit=limit, offset=offset))
        if len(keys) < limit:
            first = await db.value(_list_query("ranked_count", show, searching, sort), **params)
            keys += _firsts(await db.rows(_list_query("rest", show, searching, sort), **params,
                                          limit=limit - len(keys),
                                          offset=max(0, offset - first)))
    total = None
    if count:
        total = await db.value(_list_query("count", show, searching), **params)
    return {"rows": await _list_rows(db, sink, keys), "total": total}


def _firsts(rows: list[Any]) -> list[Any]:
    return [row[0] for row in rows]


def _search_term(search: str) -> str:
    """The LIKE pattern of a search: a number matches by its digits."""
    text = search.strip()
    digits = "".join(ch for ch in text if ch.isdigit())
    if digits and set(text) <= _PHONE_LIKE:
        text = digits
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    # no text column holds U+0000 or a lone surrogate as itself (see tables.Escaped): any
    # one character matches there, so a search with one fails on neither engine
    return "%" + "".join("_" if _unstorable(ch) else ch for ch in escaped) + "%"


def _unstorable(ch: str) -> bool:
    return ch == "\x00" or "\ud800" <= ch <= "\udfff"


_OLDER_HELD = sa.and_(d.state == "skipped", starts_with(d.reason, HISTORY_HELD))
LIST_ROWS = Query(sa.select(
    c.key, c.contact_name, c.account, c.kind, c.last_message_at, c.message_count, s.record_id,
    s.last_synced_at, s.last_error, s.held_reason, c.phone, c.username)
    .select_from(conversations_table.outerjoin(
        sink_conversations, sa.and_(s.conversation == c.key, s.sink == P("sink"))))
    .where(c.key.in_(values_of("keys", "text"))), "conversation list rows")
_ss = sink_state.c
DELIVERY_COUNTS = Query(sa.select(
    m.conversation, sa.func.sum(sa.case((d.state == "pending", 1), else_=0)),
    sa.func.sum(sa.case((d.state == "done", 1), else_=0)),
    # a transcript: one delivered batch (one conversation window)
    sa.func.count(sa.case((d.state == "done", d.batch_id)).distinct()),
    sa.func.sum(sa.case((d.state == "dead", 1), else_=0)),
    # history older than the backfill window: stored, waiting for a backfill (history.py)
    sa.func.sum(sa.case((_OLDER_HELD, 1), else_=0)),
    sa.func.min(sa.case((_OLDER_HELD, m.sent_at))))
    # messages first, then each delivery by its primary key: the other way round SQLite
    # reads every delivery row the sink ever had
    .select_from(ordered_join(ordered_join(messages_table, sink_state, sa.true()), deliveries,
                              sa.and_(d.sink == _ss.sink, d.message_id == m.id)))
    .where(_ss.sink == _ANY_SINK, m.conversation.in_(values_of("keys", "text")))
    .group_by(m.conversation), "delivery counts per conversation")


async def _list_rows(db: Connector, sink: str | None, keys: list[str]) -> list[dict[str, Any]]:
    """The list's columns for the given conversations, in the given order."""
    if not keys:
        return []
    rows = await db.rows(LIST_ROWS, sink=sink, keys=keys)
    counts = {row[0]: tuple(row[1:]) for row in await db.rows(DELIVERY_COUNTS, sink=sink,
                                                                keys=keys)}
    found = {row[0]: _record(_ROW_COLUMNS, (*row, *counts.get(row[0], (0, 0, 0, 0, 0, None))))
             for row in rows}
    now = time.time()
    for row in found.values():
        row["older_held"] = int(row["older_held"] or 0)
        row["history_note"] = waiting_note(sink, row["older_held"], row["older_held_since"],
                                           now) if sink else None
    return [found[key] for key in keys if key in found]


_dead_by = sa.case((P("sink", type_=TEXT).is_(None), d.sink), else_=P("sink", type_=TEXT))
DEAD_LETTER_ROWS = Query(sa.select(
    d.sink, d.message_id, m.source, m.provider_id, m.conversation, m.sent_at, d.reason, d.done_at)
    .join_from(deliveries, messages_table, m.id == d.message_id)
    .where(d.state == "dead", d.sink == sa.func.coalesce(P("sink", type_=TEXT), d.sink))
    .order_by(d.done_at.desc(), d.sink, d.message_id).limit(P("limit")), "dead letters")
DEAD_TARGET_ROWS = Query(sa.select(
    t.sink, t.key, t.label, b.conversation, t.message_ids, t.attempts, t.reason, t.updated_at)
    .select_from(targets.outerjoin(batches, b.id == t.batch_id))
    .where(t.state == "dead", t.sink == sa.func.coalesce(P("sink", type_=TEXT), t.sink),
           _NOT_WAITING)  # a file still to come is not a dead letter
    .order_by(t.updated_at.desc(), t.sink, t.key).limit(P("limit")), "dead targets")
MESSAGES = Query(select_messages().where(
    m.conversation == sa.func.coalesce(P("conversation", type_=TEXT), m.conversation))
    .order_by(m.sent_at, m.id).limit(P("limit")), "messages")
STATUS = Query(sa.select(st.status, st.at, st.recipient, st.failed_at, st.errors).where(
    st.source == P("source"), st.provider_id == P("provider_id")), "status of a message")


async def dead_letters(db: Connector, sink: str | None, limit: int) -> list[dict[str, Any]]:
    """Dead-lettered deliveries, newest first, with the reason a person acts on."""
    columns = ("sink", "message_id", "source", "provider_id", "conversation", "sent_at",
               "reason", "dead_at")
    rows = await db.rows(DEAD_LETTER_ROWS, sink=sink, limit=limit)
    return [_record(columns, row) for row in rows]


async def dead_targets(db: Connector, sink: str | None, limit: int) -> list[dict[str, Any]]:
    """Dead-lettered targets (e.g. one CRM opportunity of a message), newest first."""
    columns = ("sink", "key", "target", "conversation", "message_ids", "attempts", "reason",
               "dead_at")
    found = [_record(columns, row) for row in await db.rows(DEAD_TARGET_ROWS, sink=sink,
                                                            limit=limit)]
    for record in found:
        record["message_ids"] = list(ids_of(record["message_ids"]))
    return found


async def messages(db: Connector, conversation: str | None, limit: int) -> list[Message]:
    """Stored messages, oldest first (one conversation's, or all)."""
    rows = await db.rows(MESSAGES, conversation=conversation, limit=limit)
    return [message_from_row(row) for row in rows]


async def status_of(db: Connector, source: str, provider_id: str) -> dict[str, Any] | None:
    """The delivery status recorded for one outbound message."""
    columns = ("status", "at", "recipient", "failed_at", "errors")
    row = await db.one(STATUS, source=source, provider_id=provider_id)
    return _record(columns, row) if row else None


_PERSON_COLUMNS = ("key", "contact_name", "account", "kind", "last_message_at",
                   "message_count", "username", "bsuid", "parent_bsuid")
_DELIVERY_COLUMNS = ("message_id", "sink", "state", "reason", "done_at", "batch_key",
                     "attempts", "batch_error", "held", "batch_state", "next_attempt_at")
_MAPPING_COLUMNS = ("sink", "record_id", "last_synced_at", "last_error", "held_reason")
PERSON = Query(sa.select(*(c[n] for n in _PERSON_COLUMNS)).where(c.key == P("key")),
               "a conversation")
MAPPINGS = Query(sa.select(*(s[n] for n in _MAPPING_COLUMNS)).where(  # every sink named:
    s.sink.in_(sa.select(sink_state.c.sink)), s.conversation == P("key"))  # the key, no scan
    .order_by(s.sink), "a conversation's CRM mappings")
STORED = Query(select_messages(st.status, st.failed_at).outerjoin(
    statuses, sa.and_(st.source == m.source, st.provider_id == m.provider_id))
    .where(m.conversation == P("key")).order_by(m.sent_at, m.id).limit(P("limit")),
    "a conversation's messages")
FATES = Query(sa.select(
    d.message_id, d.sink, d.state, d.reason, d.done_at, b.key, b.attempts, b.last_error, b.held,
    b.state, b.next_attempt_at)
    .select_from(ordered_join(ordered_join(messages_table, sink_state, sa.true()), deliveries,
                              sa.and_(d.sink == _ss.sink, d.message_id == m.id))
                 .outerjoin(batches, b.id == d.batch_id))
    .where(m.conversation == P("key")).order_by(d.message_id, d.sink),
    "what each sink did with a conversation's messages")
LEDGER_OF = Query(sa.select(ledger.c.key, ledger.c.external_id, ledger.c.created_at).where(
    ledger.c.sink == P("sink"), ledger.c.key >= P("low"), ledger.c.key < P("high"))
    .order_by(ledger.c.key), "a batch's ledger")


async def conversation(db: Connector, key: str, limit: int = 2000) -> dict[str, Any] | None:
    """One person's conversation: who, per sink mapping, messages with per-sink fate."""
    row = await db.one(PERSON, key=key)
    if row is None:
        return None
    person = _record(_PERSON_COLUMNS, row)
    mappings = await db.rows(MAPPINGS, key=key)
    stored = await db.rows(STORED, key=key, limit=limit)
    fates = await _fates(db, key)
    return {"person": person,
            "sinks": [_record(_MAPPING_COLUMNS, row) for row in mappings],
            "messages": [{"message": message_from_row(row), "status": row[WIDTH],
                          "failed_at": from_timestamp(row[WIDTH + 1]),
                          "deliveries": fates.get(row[0], [])} for row in stored],
            "truncated": len(stored) == limit}


async def _fates(db: Connector, key: str) -> dict[int, list[dict[str, Any]]]:
    """Per message id, per sink: state, reason, its batch's attempts and error, and the
    CRM objects (ledger: idempotency key -> id) its batch went into."""
    ledgers: dict[tuple[str, str], list[dict[str, Any]]] = {}
    fates: dict[int, list[dict[str, Any]]] = {}
    for row in await db.rows(FATES, key=key):
        fate = _record(_DELIVERY_COLUMNS, row)
        fate["done_at"] = from_timestamp(row[4])
        fate["next_attempt_at"] = from_timestamp(row[10])
        fate["held"] = bool(fate["held"])
        if fate["batch_key"]:
            where = (fate["sink"], fate["batch_key"])
            if where not in ledgers:
                ledgers[where] = await _ledger_of(db, *where)
            fate["activities"] = ledgers[where]
        else:
            fate["activities"] = []
        fates.setdefault(fate["message_id"], []).append(fate)
    return fates


async def _ledger_of(db: Connector, sink: str, batch_key: str) -> list[dict[str, Any]]:
    """Ledger entries of a batch: sinks derive their keys from the batch key (one whose
    part starts with SINK_NOTE is the sink's own note kept with the batch, no CRM object)."""
    rows = await db.rows(LEDGER_OF, sink=sink, low=batch_key, high=batch_key + "\U0010ffff")
    return [{"key": k, "part": k[len(batch_key):], "external_id": e,
             "created_at": from_timestamp(at)} for k, e, at in rows
            if not k[len(batch_key):].startswith(SINK_NOTE)]


_hour = whole_number(m.sent_at / sa.literal_column("3600.0"))
_sent = indexed(messages_table, "messages_sent", "messages")
_out = indexed(messages_table, "messages_out", "messages")
HOURLY = Query(sa.select(whole_number(_sent.c.sent_at / sa.literal_column("3600.0")),
                         sa.func.count()).where(_sent.c.sent_at >= P("since"))
               .group_by(whole_number(_sent.c.sent_at / sa.literal_column("3600.0"))),
               "messages per hour")
HOURLY_OUT = Query(sa.select(whole_number(_out.c.sent_at / sa.literal_column("3600.0")),
                             sa.func.count()).where(_out.c.sent_at >= P("since"),
                                                    _out.c.direction == "out")
                   .group_by(whole_number(_out.c.sent_at / sa.literal_column("3600.0"))),
                   "outbound messages per hour")
HELD_CHATS = Query(sa.select(s.held_reason, sa.func.count()).where(
    s.sink == P("sink"), s.held_reason.isnot(None)).group_by(s.held_reason)
    .order_by(sa.func.count().desc(), s.held_reason), "held chats by reason")
FAILED_SENDS = Query(
    sa.select(st.provider_id, st.recipient, m.conversation, st.failed_at, st.errors, m.id)
    .select_from(statuses.outerjoin(messages_table, sa.and_(
        m.source == st.source, m.provider_id == st.provider_id)))
    .where(st.failed_at.isnot(None)).order_by(st.failed_at.desc(), st.provider_id)
    .limit(P("limit")), "failed sends")
GROUP_CHATS = Query(sa.select(sa.func.count()).select_from(conversations_table).where(
    c.group_id.isnot(None)), "group chats")
FAILED_COUNT = Query(sa.select(sa.func.count()).select_from(statuses).where(
    st.failed_at.isnot(None)), "failed sends")
MESSAGE_COUNT = Query(sa.select(sa.func.count()).select_from(messages_table), "messages")


async def hourly(db: Connector, since: float) -> dict[tuple[int, str], int]:
    """Messages per (hour as unix hour number, direction) sent since `since`.

    Two index-only counts: every message (messages_sent) and the outbound ones
    (messages_out, a partial index); inbound is the difference."""
    every = await db.rows(HOURLY, since=since)
    out = dict(await db.rows(HOURLY_OUT, since=since))
    counts: dict[tuple[int, str], int] = {}
    for hour, n in every:
        counts[(hour, "in")] = n - out.get(hour, 0)
        counts[(hour, "out")] = out.get(hour, 0)
    return counts


# What waits per business number (a rep's number: a chat is a customer and a number): the
# chat windows formed and not done (batches_open: one row per window in flight), held or
# failing, and the messages dead-lettered (deliveries_dead). Read from the two partial
# indexes only: never a scan of every delivery.
_open = indexed(batches, "batches_open", "b")
_held_window = _open.c.held == 1  # waits for something outside (a lead): not failing
_failing = sa.and_(_open.c.failing_since.isnot(None), _open.c.held == 0)
NUMBER_BATCHES = Query(sa.select(
    sa.func.coalesce(_open.c.account, ""), sa.func.count(),
    sa.func.sum(sa.case((_held_window, 1), else_=0)),
    sa.func.max(sa.case((_held_window, _open.c.last_error))),
    sa.func.sum(sa.case((_failing, 1), else_=0)),
    sa.func.min(sa.case((_failing, _open.c.failing_since))),
    sa.func.max(sa.case((_failing, _open.c.last_error))))
    .where(_open.c.sink == P("sink"), _open.c.state != "done")
    .group_by(sa.func.coalesce(_open.c.account, "")), "open chat windows per business number")
NUMBER_SYNCED = Query(sa.select(sink_numbers.c.account, sink_numbers.c.last_synced_at).where(
    sink_numbers.c.sink == P("sink")), "when each business number last synced")
NUMBER_DEAD = Query(sa.select(m.account, sa.func.count()).join_from(
    dead, messages_table, m.id == dead.c.message_id).where(
    dead.c.sink == P("sink"), dead.c.state == "dead").group_by(m.account),
    "dead letters per business number")


async def numbers(db: Connector, sink: str) -> list[dict[str, Any]]:
    """Per business number (phone_number_id; "" where unknown) the sink synced or holds
    anything of: when a chat of it last reached the sink, chat windows open, held (e.g. no
    lead: a reason), failing (since when, a last error), and dead letters."""
    found: dict[str, dict[str, Any]] = {}
    zero = {"last_synced_at": None, "open": 0, "held": 0, "held_reason": None, "failing": 0,
            "failing_since": None, "last_error": None, "dead": 0}
    for account, n, held, why, failing, since, error in await db.rows(NUMBER_BATCHES,
                                                                       sink=sink):
        found[account] = {**zero, "open": n, "held": held or 0, "held_reason": why,
                          "failing": failing or 0, "failing_since": from_timestamp(since),
                          "last_error": error}
    for account, n in await db.rows(NUMBER_DEAD, sink=sink):
        found.setdefault(account or "", dict(zero))["dead"] = n
    for account, at in await db.rows(NUMBER_SYNCED, sink=sink):
        found.setdefault(account, dict(zero))["last_synced_at"] = from_timestamp(at)
    return [{"account": account, **found[account]} for account in sorted(found)]


async def held_chats(db: Connector, sink: str) -> list[dict[str, Any]]:
    """Chats a sink holds, counted by reason (e.g. no phone number and no user id field)."""
    rows = await db.rows(HELD_CHATS, sink=sink)
    return [{"reason": reason, "chats": n} for reason, n in rows]


async def failed_sends(db: Connector, limit: int) -> list[dict[str, Any]]:
    """Outbound messages WhatsApp reported as failed, newest first, with Meta's error."""
    columns = ("provider_id", "recipient", "conversation", "failed_at", "errors", "message_id")
    rows = await db.rows(FAILED_SENDS, limit=limit)
    return [_record(columns, row) for row in rows]


async def people_counts(db: Connector) -> dict[str, int]:
    """Group chats and failed sends in the buffer."""
    return {"group_chats": await db.value(GROUP_CHATS),
            "failed_sends": await db.value(FAILED_COUNT)}


async def count_messages(db: Connector) -> int:
    return await db.value(MESSAGE_COUNT)


# waiting for their next try, or in it now (leased): a CRM that times out keeps a batch
# leased through the sink's own retries for most of each cycle, so counting only the
# waiting ones said "healthy" through most of an outage
# (a batch settling after a crash waits for its process's write, not for the sink: SETTLING)
_retrying = (b.sink == P("sink"), b.state != "done", b.held == 0, b.attempts > 0,
             b.last_error.isnot(None), ~starts_with(b.last_error, SETTLING))
RETRYING = Query(sa.select(sa.func.count(), sa.func.min(b.created_at)).where(*_retrying),
                 "batches retrying after an error")
RETRY_ERROR = Query(sa.select(b.last_error).where(*_retrying)
                    .order_by(b.released_at.desc().nulls_last(), b.id.desc()).limit(1),
                    "the latest retry error")
_synced = indexed(sink_conversations, "sink_conversations_synced", "s")
LAST_DELIVERED = Query(sa.select(_synced.c.last_synced_at).where(
    _synced.c.sink == P("sink"), _synced.c.last_synced_at.isnot(None))
    .order_by(_synced.c.last_synced_at.desc()).limit(1),  # the newest entry of an index
    "last delivery of a sink")


_dead_since = (dead.c.sink == P("sink"), dead.c.state == "dead", dead.c.done_at > P("since"))
GIVEN_UP = Query(sa.select(sa.func.count(sa.distinct(m.conversation)))
                 .select_from(dead.join(messages_table, m.id == dead.c.message_id))
                 .where(*_dead_since), "chats given up since the last delivery")
GIVEN_UP_REASON = Query(sa.select(dead.c.reason).where(*_dead_since)
                        .order_by(dead.c.done_at.desc()).limit(1),
                        "the latest reason a sink gave up")


async def sync_health(db: Connector, sink: str) -> dict[str, Any]:
    """What the health verdict reads beyond sinks(): batches waiting to retry after an
    error (how many, when the oldest was first tried, the latest error), when the sink
    last delivered to a conversation, and the chats it gave up on (dead letters) since."""
    # the last delivery first: a retry that succeeds between the two reads then shows as
    # delivered in both, not in the count only (healthy beside "1 retrying")
    delivered = await db.value(LAST_DELIVERED, sink=sink)
    batches_, since = await db.one(RETRYING, sink=sink)
    latest = await db.value(RETRY_ERROR, sink=sink) if batches_ else None
    after = delivered if delivered is not None else 0.0
    given_up = await db.value(GIVEN_UP, sink=sink, since=after)
    why = await db.value(GIVEN_UP_REASON, sink=sink, since=after) if given_up else None
    return {"retrying": batches_, "retrying_since": from_timestamp(since),
            "retry_error": latest, "last_delivered_at": from_timestamp(delivered),
            "given_up": given_up, "given_up_reason": why}


_name = conversations_table.c.contact_name
BY_ID = Query(select_messages(_name).outerjoin(
    conversations_table, c.key == m.conversation).where(m.id.in_(values_of("ids"))),
    "messages with their person's name")
_later = messages_table.alias("newest")
_newest = (sa.select(_later.c.id).where(_later.c.conversation == c.key)
           .order_by(_later.c.sent_at.desc(), _later.c.id.desc()).limit(1)
           .correlate(conversations_table).scalar_subquery())
NEWEST = Query(select_messages(_name).join(conversations_table, m.id == _newest).where(
    c.key.in_(values_of("keys", "text"))), "each conversation's newest message")


async def previews(db: Connector, message_ids: Sequence[int] = (),
                   conversations: Sequence[str] = ()) -> dict[Any, tuple[str | None, Message]]:
    """Who and what, for the status page's lists of things to act on: per message id, and
    per conversation key its newest message, as (the person's name, the Message)."""
    found: dict[Any, tuple[str | None, Message]] = {}
    if message_ids:
        rows = await db.rows(BY_ID, ids=list(message_ids))
        found.update({row[0]: (row[-1], message_from_row(row)) for row in rows})
    if conversations:
        rows = await db.rows(NEWEST, keys=list(conversations))
        found.update({row[3]: (row[-1], message_from_row(row)) for row in rows})
    return found


_open = batches.alias("open_batch")
# A wait is overdue once it is old, or at once when its file is already stored and its
# batch is done (nothing will re-open it: the hand-over between fetch and sink went wrong;
# issue 25). While the batch still retries another part, the file waits for its end.
_fetched = sa.exists().where(media.c.state == "fetched", t.message_ids.like(
    sa.literal("%,") + sa.cast(media.c.message_id, TEXT) + sa.literal(",%")))
_batch_open = sa.exists().where(_open.c.id == t.batch_id, _open.c.state != "done")
_stored = sa.and_(_fetched, ~_batch_open)
_file_waits = (t.sink == P("sink"), t.state == "dead", ~_NOT_WAITING,
               sa.or_(t.updated_at < P("older_than"), _stored))
OVERDUE_COUNT = Query(sa.select(sa.func.count()).select_from(targets).where(*_file_waits),
                      "attachments waiting for their file")
# held: the file is stored, and the wait is for its batch's retry of another part to end
OVERDUE = Query(sa.select(t.label, b.conversation, t.message_ids, t.reason, t.updated_at,
                          sa.case((sa.and_(_fetched, _batch_open), 1), else_=0))
                .select_from(targets.outerjoin(batches, b.id == t.batch_id))
                .where(*_file_waits).order_by(t.updated_at, t.key).limit(P("limit")),
                "the oldest attachments waiting for their file")


async def overdue_files(db: Connector, sink: str, older_than: float,
                        limit: int) -> tuple[int, list[dict[str, Any]]]:
    """Targets (attachments) waiting for their message's file since before `older_than`
    (unix seconds): how many, and the oldest `limit` of them (held: the file is stored and
    the attach waits for its batch, which still retries another part)."""
    count = await db.value(OVERDUE_COUNT, sink=sink, older_than=older_than)
    columns = ("target", "conversation", "message_ids", "reason", "waiting_since", "held")
    rows = await db.rows(OVERDUE, sink=sink, older_than=older_than, limit=limit) \
        if count else []
    found = [_record(columns, row) for row in rows]
    for record in found:
        record["message_ids"] = list(ids_of(record["message_ids"]))
        record["held"] = bool(record["held"])
    return count, found

