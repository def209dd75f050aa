"""Per-sink delivery state machine: claim, complete, requeue. Each runs in one transaction.

A claim (both engines, the same statements):
1. frees expired leases and undoes wall-clock steps back;
2. forms new batches, each conversation whole: the oldest waiting messages say which
   conversations go (set-based: a handful of statements whatever their number). On a
   shared buffer one process forms at a time (a try-lock: the others skip forming, the
   one forming does it for them), so batch ids follow message order per conversation;
3. leases due batches in one statement (UPDATE ... WHERE id IN (SELECT ... FOR UPDATE
   SKIP LOCKED) RETURNING ...): a batch is due only when no older batch of its
   conversation is unfinished, so a conversation goes in order and to one process at a
   time; SKIP LOCKED lets processes lease side by side without waiting on each other,
   and a batch another process leased meanwhile fails its WHERE again when re-checked;
4. loads the leased batches' messages, mappings, ledger and failed targets (one query
   each for all batches).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import sqlalchemy as sa

import bridge.buffer.history as history
from bridge.buffer.codec import (
    from_timestamp,
    id_list,
    ids_of,
    message_from_row,
    select_messages,
)
from bridge.buffer.compiler import P, Query, greatest, indexed, rows_in, starts_with, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.enrich import enrich
from bridge.buffer.tables import (
    REAL,
    TEXT,
    batches,
    conversations,
    deliveries,
    ledger,
    media,
    messages,
    sink_conversations,
    sink_numbers,
    targets,
)
from bridge.contracts import (
    SETTLING,
    WAITING_FOR_FILE,
    WAITS_WITH_MESSAGES,
    Batch,
    Outcome,
    TargetFailure,
)
from bridge.durations import format_duration
from bridge.errors import LeaseLost
from bridge.model import Conversation, Message
from bridge.retry import gives_up

DEFAULT_BATCH_SIZE = 500  # new messages batched per claim (SinkSettings.batch_limit's default)
FORMING = "chatbridge:form:"  # + sink: the lock of the process forming that sink's batches
TOP = "\U0010ffff"  # key + TOP: the end of the range of keys that start with key


@dataclass(slots=True)
class Claim:
    """A leased batch: the Batch handed to the sink plus what the ack must name."""

    batch: Batch
    batch_id: int
    token: str
    messages: list[Message]  # all claimed messages; batch.messages may be filtered
    uncertain: bool = False  # set when the sink timed out or raised: it may have posted
    claimed_at: float | None = None  # time.monotonic() as the claim began (SinkRunner)


@dataclass(frozen=True, slots=True)
class Policy:
    """How outcomes turn into states: attempts before dead letter, delays in seconds.

    max_attempts counts a batch's tries less those that failed only transiently; a
    transient failure (a CRM outage) retries until retry_for seconds have passed since the
    batch first failed (None: it counts to max_attempts like any other)."""

    max_attempts: int
    retry_delay: Any  # Callable[[int], float]: attempt -> seconds
    held_delay: float
    retry_for: float | None = None


b, d, m = batches.c, deliveries.c, messages.c
# Pending rows are read through deliveries_pending: without ANALYZE statistics SQLite
# prefers the PRIMARY KEY (sink) search, which reads every delivery row the sink ever had
# (~50 ms a query at 1M rows, on the writer); the partial index holds only pending rows.
pending = indexed(deliveries, "deliveries_pending", "d")
older = indexed(batches, "batches_open", "o")
# A lease freed with its holder gone (killed, or its lease expired) may have had a CRM
# write in flight that still commits: its retry, which looks for its keys before posting
# again, waits until that write can no longer land. `after_lease` (per sink,
# bridge.sync.settle_after_lease) is how long after the lease's end that is; a moment
# already past retries at once. not_before too, so "sync now" never hurries it (adv36's
# late commit, after a crash: two activities with one key).
_SETTLED_AT = sa.func.coalesce(b.lease_until, 0) + P("after_lease", type_=REAL)
FREED = {"state": "ready", "lease_token": None, "lease_until": None, "uncertain": 1,
          "next_attempt_at": greatest(P("now", type_=REAL), _SETTLED_AT),
          "not_before": sa.case((_SETTLED_AT > P("now", type_=REAL), _SETTLED_AT),
                                else_=b.not_before),
          "last_error": sa.case((_SETTLED_AT > P("now", type_=REAL), SETTLING),
                                else_=b.last_error)}
RELEASE_ALL = Query(sa.update(batches).values(FREED).where(b.state == "leased"),
                    "free every lease")
RELEASE_SINK = Query(sa.update(batches).values(FREED).where(
    b.sink == P("sink"), b.state == "leased"), "free a sink's leases")
EXPIRE = Query(sa.update(batches).values(FREED).where(
    b.sink == P("sink"), b.state == "leased", b.lease_until < P("now")), "expire leases")
UNDO_CLOCK = Query(sa.update(batches).values(
    next_attempt_at=b.next_attempt_at - (b.released_at - P("now", type_=REAL)),
    not_before=b.not_before - (b.released_at - P("now", type_=REAL)), released_at=P("now"))
    .where(b.sink == P("sink"), b.state == "ready", b.next_attempt_at > P("now"),
           b.released_at > P("now")), "undo wall-clock steps back")
_HURRY = {"next_attempt_at": greatest(P("now", type_=REAL), sa.func.coalesce(b.not_before, 0))}
_WAITING = (b.state == "ready", b.next_attempt_at > P("now"),
            b.next_attempt_at > sa.func.coalesce(b.not_before, 0))
RETRY_NOW = Query(sa.update(batches).values(_HURRY).where(b.sink == P("sink"), *_WAITING),
                  "retry now")
HURRY_CONVERSATION = Query(sa.update(batches).values(_HURRY).where(
    b.conversation == P("conversation"), *_WAITING), "retry a conversation now")

pm = pending.c
OLDEST = Query(sa.select(m.conversation, m.account, pm.backfill)
               .join_from(pending, messages, m.id == pm.message_id)
               .where(pm.sink == P("sink"), pm.state == "pending", pm.batch_id.is_(None))
               .order_by(pm.backfill, pm.message_id).limit(P("size")), "oldest waiting")
# the waiting messages of the chosen conversations (each conversation's first `size`):
# found through each conversation's messages (messages_conversation), then their delivery
# row by its key; which (conversation, backfill) pairs were chosen is sorted out by the
# caller, so the plan never joins on the backfill flag alone. A batch is one customer
# with one business account (schema 13): each rep's chat is its own transcript.
_ranked = (sa.select(m.conversation, m.account, d.backfill, d.message_id,
                     sa.func.row_number().over(partition_by=(m.conversation, m.account,
                                                             d.backfill),
                                               order_by=m.id).label("n"))
    .join_from(messages, deliveries, sa.and_(d.sink == P("sink"), d.message_id == m.id))
    .where(m.conversation.in_(values_of("conversations", "text")), d.state == "pending",
           d.batch_id.is_(None))).subquery()
MEMBERS = Query(sa.select(_ranked.c.conversation, _ranked.c.account, _ranked.c.backfill,
                          _ranked.c.message_id)
                .where(_ranked.c.n <= P("size")).order_by(_ranked.c.message_id),
                "waiting messages of these conversations")
HELD = Query(sa.select(b.id, b.conversation, b.account, b.backfill).where(
    b.sink == P("sink"), b.state == "ready", b.held == 1, b.uncertain == 0,
    b.conversation.in_(values_of("conversations", "text"))).order_by(b.id)
    .with_for_update(skip_locked=True), "held batches that may grow")
_new = rows_in("new", [("conversation", "text"), ("account", "text"), ("key", "text"),
                      ("backfill", "int")], alias="n")
NEW_BATCHES = Query(lambda insert: insert(batches).from_select(
    ["sink", "conversation", "account", "key", "created_at", "backfill"],
    sa.select(P("sink", type_=TEXT), _new.c.conversation, _new.c.account, _new.c.key,
              P("now", type_=REAL), _new.c.backfill).where(sa.true()))
    .returning(b.id, b.conversation, b.account, b.backfill), "form batches")
_into = rows_in("members", [("message_id", "int"), ("batch_id", "int")], alias="t")
_members = rows_in("members", [("message_id", "int"), ("batch_id", "int")], alias="i")
# The IN names each delivery row to update by its key: without it SQLite joined the rows
# by scanning every delivery row of the sink and, for each, the members (json_each): a
# claim's batching took 19 s at 100,000 pending messages, 190 s at 1,000,000, all of it
# on the writer, so each webhook waited that long for its 200 (bench/footprint.py).
ASSIGN = Query(sa.update(deliveries).values(batch_id=_into.c.batch_id).where(
    d.sink == P("sink"), d.message_id == _into.c.message_id,
    d.message_id.in_(sa.select(_members.c.message_id))), "put messages in their batches")

_b = batches.alias("b")
_due = (sa.select(_b.c.id).where(
    _b.c.sink == P("sink"), _b.c.state == "ready", _b.c.next_attempt_at <= P("now"),
    _b.c.backfill.between(P("low"), P("high")),
    # A conversation's batches go in order: none while an older one of its class is
    # unfinished (waiting to retry, or leased). Live batches pass backfill ones never
    # tried (backfill is paced, live is not), but not one that failed and waits to
    # retry; a backfill batch (older messages) never waits behind a live one. One whose
    # messages are in the CRM and wait only for other targets (aside) is passed while it
    # waits: an opportunity's outage does not hold the customer's later chats back.
    ~sa.exists().where(older.c.sink == _b.c.sink, older.c.conversation == _b.c.conversation,
                       older.c.state != "done", older.c.id < _b.c.id,
                       sa.or_(older.c.state != "ready", older.c.aside == 0),
                       sa.or_(older.c.backfill == _b.c.backfill,
                              sa.and_(older.c.backfill > _b.c.backfill,
                                      older.c.attempts > 0))))
        .order_by(_b.c.backfill, _b.c.next_attempt_at, _b.c.id).limit(P("limit"))
        .with_for_update(skip_locked=True))
LEASE = Query(sa.update(batches).values(
    state="leased", lease_token=P("token"), lease_until=P("until"), attempts=b.attempts + 1)
    .where(b.id.in_(_due)).returning(b.id, b.conversation, b.key, b.attempts, b.uncertain,
                                     b.backfill, b.next_attempt_at, b.outage_tries,
                                     b.failing_since, b.account), "lease due batches")
LOAD = Query(select_messages(pm.batch_id).join(pending, pm.message_id == m.id).where(
    pm.sink == P("sink"), pm.state == "pending", pm.batch_id.in_(values_of("ids")))
    .order_by(m.sent_at, m.id), "messages of leased batches")
c, s = conversations.c, sink_conversations.c
CONVERSATIONS = Query(sa.select(
    c.key, c.contact_name, c.account, s.record_id, s.last_synced_at, c.phone, c.bsuid,
    c.parent_bsuid, c.username, c.group_id).select_from(conversations.outerjoin(
        sink_conversations, sa.and_(s.sink == P("sink"), s.conversation == c.key)))
    .where(c.key.in_(values_of("keys", "text"))), "conversations of leased batches")
_prefix = rows_in("prefixes", [("low", "text"), ("high", "text")], alias="p")
LEDGERS = Query(sa.select(ledger.c.key, ledger.c.external_id).join_from(
    ledger, _prefix, sa.and_(ledger.c.key >= _prefix.c.low, ledger.c.key < _prefix.c.high))
    .where(ledger.c.sink == P("sink")), "ledger of leased batches")
t = targets.c
FAILED_TARGETS = Query(sa.select(t.key, t.label, t.reason, t.state, t.message_ids, t.attempts,
                                 t.outages, t.transient)
                       .join_from(targets, _prefix, sa.and_(t.key >= _prefix.c.low,
                                                            t.key < _prefix.c.high))
                       .where(t.sink == P("sink")), "failed targets of leased batches")


RENEW = Query(sa.update(batches).values(lease_until=P("until")).where(
    b.id == P("id"), b.lease_token == P("token"), b.state == "leased"), "renew a lease")


_unsent = rows_in("unsent", [("batch_id", "int"), ("token", "text")], alias="u")
UNCLAIM = Query(sa.update(batches).values(
    state="ready", lease_token=None, lease_until=None, attempts=b.attempts - 1,
    next_attempt_at=P("now")).where(
    b.id == _unsent.c.batch_id, b.lease_token == _unsent.c.token, b.state == "leased"),
    "give back claims never handed to the sink")


async def unclaim(db: Connector, claims: Sequence[Claim], now: float) -> int:
    """Give back claims the sink never saw (the runner stopped before their turn): due
    now, their try not counted. Nothing of them can be in flight, so nothing to settle."""
    if not claims:
        return 0
    return await db.run(UNCLAIM, unsent=[(c.batch_id, c.token) for c in claims], now=now)


async def renew(db: Connector, claim: Claim, until: float) -> bool:
    """Extend a claim's lease to `until`; False when it moved on (taken by another drain
    once it expired, or freed): the batch is then that drain's to deliver."""
    return bool(await db.run(RENEW, id=claim.batch_id, token=claim.token, until=until))


async def release_leases(db: Connector, now: float,
                         after_lease: Mapping[str, float] | None = None) -> None:
    """Free every lease (a new runner starts: the old one is gone). Outcomes unknown: a
    sink named in `after_lease` retries no sooner than that long after the lease's end
    (its writes may still land until then); any other at once."""
    for sink, seconds in sorted((after_lease or {}).items()):
        await db.run(RELEASE_SINK, sink=sink, now=now, after_lease=seconds)
    await db.run(RELEASE_ALL, now=now, after_lease=float("-inf"))


async def claim(db: Connector, sink: str, now: float, limit: int, lease: float,
                backfill: bool | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                owner: str = "", history_days: float | None = None,
                after_lease: float = 0.0) -> list[Claim]:
    """Expire stale leases, batch new messages per conversation, lease what is due.

    `owner` prefixes the lease token ("<owner>:<uuid>"): on a shared buffer the process
    that holds a lease, so the leases of a process seen dead are freed before they expire.

    `limit` bounds the batches leased; `batch_size` how many new messages are batched
    (each conversation whole, up to `batch_size` of its messages), so a small claim never
    cuts a conversation into several batches. `backfill` True or False claims only
    batches of that class; None claims both. `history_days`: first hold the waiting
    history sent more than that many days before it was stored (bridge.buffer.history).
    `after_lease`: an expired lease's batch retries no sooner than that long after the
    lease's end (a write its holder had in flight may land until then; see FREED).
    """
    await db.run(EXPIRE, sink=sink, now=now, after_lease=after_lease)
    await undo_clock_steps(db, sink, now)
    if await db.try_lock(FORMING + sink):
        if history_days is not None:
            await history.hold(db, sink, history_days, now)
        await _form_batches(db, sink, now, batch_size)
    low, high = (0, 1) if backfill is None else (int(backfill), int(backfill))
    token = f"{owner}:{uuid.uuid4().hex}" if owner else uuid.uuid4().hex
    leased = await db.rows(LEASE, token=token, until=now + lease, sink=sink, now=now, low=low,
                           high=high, limit=limit)
    if not leased:
        return []
    leased.sort(key=lambda row: (row[5], row[6], row[0]))  # the order they were due in
    return await _load_claims(db, sink, leased, token, now)


async def undo_clock_steps(db: Connector, sink: str, now: float) -> None:
    """Waiting batches released "in the future" saw the wall clock step back: move their
    wait back by as much, so a step back of an hour does not add an hour to a retry."""
    await db.run(UNDO_CLOCK, sink=sink, now=now)


async def retry_now(db: Connector, sink: str, now: float) -> int:
    """Make the sink's waiting batches due now (a person asked for a sync), except for a
    wait the sink itself asked for (not_before); return how many were hurried."""
    await undo_clock_steps(db, sink, now)
    return await db.run(RETRY_NOW, sink=sink, now=now)


async def _form_batches(db: Connector, sink: str, now: float, limit: int) -> None:
    """Batch the conversations of the oldest unbatched messages, each whole, ~`limit` in all.

    With chats interleaved, taking just the oldest `limit` messages would cut one
    conversation into many batches (so many CRM activities); instead each conversation
    met there brings all its waiting messages (up to `limit`), oldest conversations first.
    """
    groups = list(dict.fromkeys(tuple(row) for row in await db.rows(OLDEST, sink=sink,
                                                                     size=limit)))
    if not groups:
        return
    # a group: (conversation, account, backfill)
    found: dict[tuple[str, str, int], list[int]] = {group: [] for group in groups}
    for conversation, account, backfill, message_id in await db.rows(
            MEMBERS, conversations=sorted({g[0] for g in groups}), sink=sink, size=limit):
        if (conversation, account, backfill) in found:
            found[(conversation, account, backfill)].append(message_id)
    chosen, taken = [], 0
    for group in groups:
        if taken >= limit:
            break
        if found[group]:
            chosen.append(group)
            taken += len(found[group])
    if not chosen:
        return
    held: dict[tuple[str, str | None, int], int] = {}
    for batch_id, conversation, account, backfill in await db.rows(
            HELD, sink=sink, conversations=sorted({g[0] for g in chosen})):
        held.setdefault((conversation, account, backfill), batch_id)  # NULL: grows no more
    fresh = [(g[0], g[1], _batch_key(sink, g[0], g[1], found[g]), g[2])
             for g in chosen if g not in held]
    if fresh:
        for batch_id, conversation, account, backfill in await db.rows(
                NEW_BATCHES, new=fresh, sink=sink, now=now):
            held[(conversation, account, backfill)] = batch_id
    await db.run(ASSIGN, sink=sink, members=[(message_id, held[group]) for group in chosen
                                             for message_id in found[group]])


def _batch_key(sink: str, conversation: str, account: str, ids: list[int]) -> str:
    """The key of a new batch. The business account is part of it (schema 13); batches
    formed before keep the keys they were stored with, so nothing is posted twice."""
    digest = hashlib.sha256(
        f"{sink}\x1f{conversation}\x1f{account}\x1f{ids[0]}-{ids[-1]}-{len(ids)}".encode())
    return "b" + digest.hexdigest()[:24]


async def _load_claims(db: Connector, sink: str, leased: list[Any],
                       token: str, now: float) -> list[Claim]:
    members: dict[int, list[Message]] = defaultdict(list)
    for row in await db.rows(LOAD, sink=sink, ids=[row[0] for row in leased]):
        members[row[-1]].append(message_from_row(row))
    await _fetch_missing(db, members, now)
    await enrich(db, sink, [m for batch in members.values() for m in batch])
    conversations = await _conversations(db, sink, {row[1] for row in leased})
    ranges = [(row[2], row[2] + TOP) for row in leased]
    posted = await db.rows(LEDGERS, sink=sink, prefixes=ranges)
    failed = await db.rows(FAILED_TARGETS, sink=sink, prefixes=ranges)
    claims = []
    for batch_id, conversation, key, attempt, uncertain, _, _, outages, since, account \
            in leased:
        person = conversations[conversation]
        if account is not None:  # this business number's chat (NULL: formed before 13)
            person = replace(person, account=account)
        batch = Batch(key=key, sink=sink, conversation=person, account=account,
                      messages=members[batch_id], attempt=attempt, uncertain=bool(uncertain),
                      outage_tries=outages, failing_since=since,
                      ledger={k: v for k, v in posted if k.startswith(key)},
                      targets=_failures([row for row in failed if row[0].startswith(key)]))
        batch.record_id = batch.conversation.record_id
        claims.append(Claim(batch, batch_id, token, list(batch.messages)))
    return claims


async def _conversations(db: Connector, sink: str, keys: set[str]) -> dict[str, Conversation]:
    rows = await db.rows(CONVERSATIONS, sink=sink, keys=sorted(keys))
    found = {r[0]: Conversation(r[0], r[1], r[2], r[3], from_timestamp(r[4]), *r[5:])
             for r in rows}
    return {key: found.get(key, Conversation(key)) for key in keys}


def _failures(rows: list[Any]) -> dict[str, TargetFailure]:
    return {k: TargetFailure(k, label, reason, state == "dead", ids_of(ids), attempts,
                             outages, bool(transient))
            for k, label, reason, state, ids, attempts, outages, transient in rows}


# -- completion ----------------------------------------------------------------------------
# Set-based: any number of claims are completed with the same few statements (one each for
# the lease check, outcomes, ledger, targets, what is left, the batches and the mappings).

_leases = rows_in("leases", [("batch_id", "int"), ("token", "text")], alias="k")
CHECK_LEASES = Query(sa.select(b.id, b.conversation).join_from(batches, _leases, sa.and_(
    b.id == _leases.c.batch_id, b.lease_token == _leases.c.token)).where(b.state == "leased")
    .with_for_update(of=batches), "check leases")
_settled = rows_in("settled", [("sink", "text"), ("message_id", "int"), ("state", "text"),
                               ("reason", "escaped")], alias="o")
SETTLE = Query(sa.update(deliveries).values(state=_settled.c.state, reason=_settled.c.reason,
                                            done_at=P("now")).where(
    d.sink == _settled.c.sink, d.message_id == _settled.c.message_id, d.state == "pending"),
    "record outcomes")
_posted = rows_in("posted", [("sink", "text"), ("key", "text"), ("external_id", "text")],
                  alias="l")
WRITE_LEDGER = Query(lambda insert: insert(ledger).from_select(
    ["sink", "key", "external_id", "created_at"],
    sa.select(_posted.c.sink, _posted.c.key, _posted.c.external_id, P("now", type_=REAL))
    .where(sa.true())).on_conflict_do_nothing(), "write the ledger")
_landed = rows_in("landed", [("sink", "text"), ("key", "text")], alias="g")
LANDED = Query(sa.delete(targets).where(sa.tuple_(t.sink, t.key).in_(
    sa.select(_landed.c.sink, _landed.c.key))), "forget targets that landed")
_TARGET_COLUMNS = ("sink", "key", "label", "batch_id", "message_ids", "state", "attempts",
                   "reason", "updated_at", "outages", "transient")
_failed = rows_in("failed", [("sink", "text"), ("key", "text"), ("label", "escaped"),
                             ("batch_id", "int"), ("message_ids", "text"), ("state", "text"),
                             ("attempts", "int"), ("reason", "escaped"), ("updated_at", "real"),
                             ("outages", "int"), ("transient", "int")],
                  alias="f")


def _upsert_targets(insert: Any) -> Any:
    new = insert(targets).from_select(list(_TARGET_COLUMNS), sa.select(
        *(_failed.c[k] for k in _TARGET_COLUMNS)).where(sa.true()))
    return new.on_conflict_do_update(index_elements=["sink", "key"], set_={
        k: new.excluded[k] for k in _TARGET_COLUMNS[2:]})


UPSERT_TARGETS = Query(_upsert_targets, "record failed targets")
LEFT = Query(sa.select(pm.batch_id, sa.func.count()).select_from(pending).where(
    pm.sink.in_(values_of("sinks", "text")), pm.batch_id.in_(values_of("ids")),
    pm.state == "pending").group_by(pm.batch_id), "messages left in batches")
DONE = Query(sa.update(batches).values(state="done", lease_token=None, lease_until=None,
                                       last_error=None).where(b.id.in_(values_of("ids"))),
             "batches done")
_back = rows_in("back", [("batch_id", "int"), ("next_attempt_at", "real"),
                         ("not_before", "real"), ("held", "int"), ("uncertain", "int"),
                         ("error", "escaped"), ("outage_tries", "int"),
                         ("failing_since", "real"), ("aside", "int")],
                alias="w")
PUT_BACK = Query(sa.update(batches).values(
    state="ready", lease_token=None, lease_until=None, next_attempt_at=_back.c.next_attempt_at,
    not_before=_back.c.not_before, released_at=P("now"), held=_back.c.held,
    uncertain=_back.c.uncertain, last_error=_back.c.error,
    outage_tries=_back.c.outage_tries,
    failing_since=_back.c.failing_since, aside=_back.c.aside).where(b.id == _back.c.batch_id),
    "batches back to wait")
_TOUCHED = ("sink", "conversation", "record_id", "last_synced_at", "last_error", "held_reason")
_touched = rows_in("touched", [("sink", "text"), ("conversation", "text"), ("record_id", "text"),
                               ("last_synced_at", "real"), ("last_error", "escaped"),
                               ("held_reason", "escaped")], alias="n")


def _touch(insert: Any) -> Any:
    new = insert(sink_conversations).from_select(list(_TOUCHED), sa.select(
        *(_touched.c[k] for k in _TOUCHED)).where(sa.true()))
    x = new.excluded
    return new.on_conflict_do_update(index_elements=["sink", "conversation"], set_={
        "record_id": sa.func.coalesce(x.record_id, s.record_id),
        # never backwards: completions may commit out of their times' order (two bridges)
        "last_synced_at": sa.case((x.last_synced_at.is_(None), s.last_synced_at), else_=greatest(
            x.last_synced_at, sa.func.coalesce(s.last_synced_at, x.last_synced_at))),
        "last_error": x.last_error, "held_reason": x.held_reason})


_forgot = rows_in("forgot", [("sink", "text"), ("conversation", "text")], alias="z")
FORGET_RECORDS = Query(sa.update(sink_conversations).values(record_id=None).where(
    sa.tuple_(s.sink, s.conversation).in_(sa.select(_forgot.c.sink, _forgot.c.conversation))),
    "forget CRM records the sinks cleared")
TOUCH = Query(_touch, "note syncs on the conversations")
_numbered = rows_in("numbered", [("sink", "text"), ("account", "text"),
                                 ("last_synced_at", "real")], alias="u")


def _number_synced(insert: Any) -> Any:
    # in key order: every process locks the shared rows in one order, so two completions
    # noting the same numbers never wait on each other (PostgreSQL: a deadlock, adv45)
    new = insert(sink_numbers).from_select(["sink", "account", "last_synced_at"], sa.select(
        _numbered.c.sink, _numbered.c.account, _numbered.c.last_synced_at).where(sa.true())
        .order_by(_numbered.c.sink, _numbered.c.account))
    x, n = new.excluded, sink_numbers.c
    # never backwards: completions may commit out of their times' order (two bridges)
    return new.on_conflict_do_update(index_elements=["sink", "account"], set_={
        "last_synced_at": greatest(x.last_synced_at, n.last_synced_at)})


NUMBER_SYNCED = Query(_number_synced, "note syncs on the business numbers")


async def complete(db: Connector, claim: Claim, outcomes: Sequence[Outcome],
                   now: float, policy: Policy) -> dict[str, int]:
    """Record one outcome per message, the ledger and the CRM record, then free the batch."""
    (result,) = await complete_many(db, [(claim, outcomes)], now, policy)
    if isinstance(result, LeaseLost):
        raise result
    return result


async def complete_many(db: Connector, done: Sequence[tuple[Claim, Sequence[Outcome]]],
                        now: float, policy: Policy) -> list[dict[str, int] | LeaseLost]:
    """complete() for several claims in the same statements: per claim, its counts, or
    LeaseLost when its lease expired and moved on (the others are recorded all the same)."""
    held = dict(await db.rows(CHECK_LEASES, leases=[(c.batch_id, c.token) for c, _ in done]))
    results: list[dict[str, int] | LeaseLost] = []
    kept: list[tuple[Claim, Sequence[Outcome], dict[str, int], list[str]]] = []
    settled: list[tuple[Any, ...]] = []
    for claim, outcomes in done:
        if claim.batch_id not in held:
            results.append(LeaseLost(f"batch {claim.batch.key} is no longer leased by this "
                                     "drain"))
            continue
        counts, errors = _settle(claim, outcomes, policy, settled, now)
        kept.append((claim, outcomes, counts, errors))
        results.append(counts)
    if not kept:
        return results
    files = await _file_states(db, [claim for claim, *_ in kept])
    if settled:
        await db.run(SETTLE, settled=settled, now=now)
    await _write_posts(db, [claim for claim, *_ in kept], now)
    await _drop_settled_waits(db, settled)
    await _release(db, kept, now, policy)
    await _hand_over(db, files)
    touched = {(claim.batch.sink, held[claim.batch_id]): _touched_row(
        claim, held[claim.batch_id], now, counts, errors, outcomes)
        for claim, outcomes, counts, errors in kept}
    await db.run(TOUCH, touched=list(touched.values()))
    numbered = {(claim.batch.sink, claim.batch.account or ""): now
                for claim, _, counts, _ in kept if counts.get("done")}
    if numbered:
        await db.run(NUMBER_SYNCED, numbered=[(*k, v) for k, v in numbered.items()])
    # A sink that cleared the cached record id (merged or deleted in the CRM) forgets it:
    # else the stale id would be handed out again on every retry and requeue.
    forgot = [(claim.batch.sink, held[claim.batch_id]) for claim, *_ in kept
              if claim.batch.record_id is None and claim.batch.conversation.record_id]
    if forgot:
        await db.run(FORGET_RECORDS, forgot=forgot)
    return results


# The hand-over from the media fetch (issue 25): a sink that read a file as not fetched
# yet records its attachment as waiting, and the fetch's commit re-opens waiting targets.
# A fetch that committed after the sink's read but before this commit found nothing to
# re-open, so the file states are read again here, locked (FOR UPDATE: a fetch committing
# meanwhile is waited for, and one that comes after waits for this commit and then sees the
# wait), and a wait whose file is already stored or dead is settled in this transaction.
FILE_STATES = Query(sa.select(media.c.message_id, media.c.state, media.c.reason)
                    .where(media.c.message_id.in_(values_of("ids")))
                    .order_by(media.c.message_id).with_for_update(), "files waited for")


async def _file_states(db: Connector, claims: list[Claim]) -> list[tuple[int, str, str]]:
    """(message id, state, reason) of the files the claims' waits are for, locked: the new
    ones, and those recorded by an earlier try of the batch (a fetch that came while the
    batch still retried left them for the batch's end, reopen_waiting). A wait loaded as
    'the file never came' counts too: its media may have been requeued and fetched while
    this try was in flight (the fetch leaves a leased batch's waits to its completion)."""
    ids = sorted({i for claim in claims  # targets holds the new failures too (fail_target)
                  for f in claim.batch.targets.values()
                  if f.dead and f.reason.startswith((WAITING_FOR_FILE, FILE_NEVER_CAME))
                  for i in f.message_ids})
    if not ids:
        return []
    return [tuple(row) for row in await db.rows(FILE_STATES, ids=ids)]  # type: ignore[misc]


async def _hand_over(db: Connector, files: list[tuple[int, str, str]]) -> None:
    """Waits recorded just now for files that came (re-opened) or never will (why)."""
    for message_id, state, reason in files:
        if state == "fetched":
            await reopen_waiting(db, message_id)
        elif state == "dead":
            await settle_waiting(db, message_id, reason or "no reason given")


def _settle(claim: Claim, outcomes: Sequence[Outcome], policy: Policy,
            settled: list[tuple[Any, ...]], now: float) -> tuple[dict[str, int], list[str]]:
    """Counts and errors of a claim's outcomes; the deliveries they settle, added."""
    counts: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    for message, outcome in zip(claim.messages, outcomes, strict=True):
        state, reason = _next_state(outcome, claim.batch, policy, now)
        if state == "dead" and outcome.kind == "retry" and outcome.aside:
            _give_up_targets(claim.batch, message.id, policy, now)
            state, reason = "done", None  # it is in the CRM: its waiting targets died
        counts[state if state != "pending" else outcome.kind] += 1
        if outcome.kind not in ("delivered", "skipped"):
            errors.append(outcome.reason)
        if state != "pending":
            settled.append((claim.batch.sink, message.id, state, reason))
    return dict(counts), errors


def _next_state(outcome: Outcome, batch: Batch, policy: Policy,
                now: float) -> tuple[str, str | None]:
    if outcome.kind == "delivered":
        return "done", None
    if outcome.kind == "skipped":
        return "skipped", outcome.reason or None
    if outcome.kind == "rejected":
        return "dead", outcome.reason or "rejected by the sink (no reason given)"
    if outcome.kind != "retry":
        return "pending", None
    reason = outcome.reason or "no reason given"
    if _over(outcome.transient, batch, policy, now):
        return "dead", _gave_up(reason, outcome.transient, batch, policy, now)
    return "pending", None


def _over(transient: bool, batch: Batch, policy: Policy, now: float) -> bool:
    """Whether a retry of this try is given up: an outage's once retry_for has passed
    since the batch first failed, another's after max_attempts counted tries."""
    if _outage(transient, policy):
        return _failing_for(batch, now) >= policy.retry_for
    return gives_up(batch.attempt - batch.outage_tries, policy.max_attempts)  # this try too


def _gave_up(last: str, transient: bool, batch: Batch, policy: Policy, now: float) -> str:
    """Why a retry was given up (a dead letter's, or a dead target's, reason)."""
    if _outage(transient, policy):
        return (f"{batch.sink} kept failing for {format_duration(_failing_for(batch, now))} "
                f"(last: {last}): check its service status, then requeue")
    return f"gave up after {batch.attempt - batch.outage_tries} attempts: {last}"


def _failing_for(batch: Batch, now: float) -> float:
    """Seconds since the batch first failed (0 at its first failure)."""
    return now - (batch.failing_since if batch.failing_since is not None else now)


def _give_up_targets(batch: Batch, message_id: int, policy: Policy, now: float) -> None:
    """A message already in the CRM's main record (Outcome.aside) whose retry is given up:
    the targets it still waits for die, each a dead letter of its own with its own last
    error, and the message is delivered (a target never takes its message to dead letter
    with it). Committed with the outcomes (_write_posts)."""
    for key, failure in list(batch.targets.items()):
        if failure.dead or message_id not in failure.message_ids or key in batch.ledger \
                or failure.reason.startswith(WAITS_WITH_MESSAGES):
            continue
        why = _gave_up(failure.reason, failure.transient, batch, policy, now)
        batch.targets[key] = batch.new_targets[key] = replace(failure, dead=True, reason=why)


def _outage(transient: bool, policy: Policy) -> bool:
    """A transient failure judged by time (retry_for), not by count."""
    return transient and policy.retry_for is not None


async def landed_now(db: Connector, sink: str, key: str, external_id: str,
                     now: float) -> None:
    """One post that landed, in the ledger at once rather than with its batch's outcomes
    (a post no API can find again, such as an attachment: a crash before the outcomes'
    commit must not post it twice). Its failed target, if any, is gone."""
    await db.run(WRITE_LEDGER, posted=[(sink, key, external_id)], now=now)
    await db.run(LANDED, landed=[(sink, key)])


LEASED_KEY = Query(sa.select(b.id).where(b.sink == P("sink"), b.state == "leased",
                                         b.key == P("key")), "a leased batch by its key")


async def attempt_now(db: Connector, sink: str, batch_key: str, failure: TargetFailure,
                      now: float) -> None:
    """A post no API can find again is about to go out: its target, failing with the
    reason given (that it is in flight), at once. A crash before its answer leaves that
    reason for the retry to see; an answer replaces it (landed_now, or the outcomes)."""
    batch_id = await db.value(LEASED_KEY, sink=sink, key=batch_key)
    if batch_id is None:  # the lease moved on: this delivery records nothing more
        return
    await db.run(UPSERT_TARGETS, failed=[(
        sink, failure.key, failure.label, batch_id,
        id_list(failure.message_ids), "failing", failure.attempts,
        failure.reason, now, failure.outages, int(failure.transient))])


# A lead post's start record (bridge.WAITS_WITH_MESSAGES, written by a sink while the post
# waits) outlives its use once none of its messages can be delivered again: a retry of its
# batch lands it under the same key (LANDED), but a message requeued alone lands in a batch
# of its own, under another key (adv27).
WAIT_RECORDS = Query(sa.select(t.sink, t.key, t.message_ids).where(
    t.sink.in_(values_of("sinks", "text")), starts_with(t.reason, WAITS_WITH_MESSAGES)),
    "the sinks' lead post start records")
DELIVERY_STATES = Query(sa.select(d.message_id, d.state).where(
    d.sink == P("sink"), d.message_id.in_(values_of("ids"))), "a sink's deliveries' states")
FINAL = frozenset({"done", "skipped"})  # no retry or requeue brings these back


async def _drop_settled_waits(db: Connector, settled: list[tuple[Any, ...]]) -> None:
    """Forget the start records whose messages are all delivered (or skipped) now."""
    finished = {(sink, message_id) for sink, message_id, state, _ in settled if state in FINAL}
    if not finished:
        return
    records = await db.rows(WAIT_RECORDS, sinks=sorted({sink for sink, _ in finished}))
    held = {(sink, key): ids_of(ids) for sink, key, ids in records}
    touched = {k: ids for k, ids in held.items() if any((k[0], i) in finished for i in ids)}
    states: dict[tuple[str, int], str] = {}
    for sink in {sink for sink, _ in touched}:
        ids = sorted({i for (s, _), found in touched.items() if s == sink for i in found})
        states.update(((sink, i), state) for i, state in
                      await db.rows(DELIVERY_STATES, sink=sink, ids=ids))
    gone = [k for k, ids in touched.items() if all(states.get((k[0], i)) in FINAL for i in ids)]
    if gone:
        await db.run(LANDED, landed=gone)


async def _write_posts(db: Connector, claims: list[Claim], now: float) -> None:
    """The ledger; failed targets upserted; targets that landed (now in the ledger), or
    that wait no more (Batch.clear_target), gone."""
    posted = [(c.batch.sink, k, v) for c in claims for k, v in c.batch.new_ledger.items()]
    if posted:
        await db.run(WRITE_LEDGER, posted=posted, now=now)
        await db.run(LANDED, landed=[(sink, key) for sink, key, _ in posted])
    failed = [(c.batch.sink, f.key, f.label, c.batch_id,
               id_list(f.message_ids), "dead" if f.dead else "failing",
               f.attempts, f.reason, now, f.outages, int(f.transient))
              for c in claims for f in c.batch.new_targets.values()
              if f.key not in c.batch.new_ledger]
    if failed:
        await db.run(UPSERT_TARGETS, failed=failed)
    cleared = [(c.batch.sink, k) for c in claims for k in c.batch.cleared]
    if cleared:
        await db.run(LANDED, landed=cleared)


async def _release(db: Connector, kept: list[Any], now: float, policy: Policy) -> None:
    """Batches with nothing left pending are done; the others wait for their retry."""
    claims = [claim for claim, *_ in kept]
    left = dict(await db.rows(LEFT, sinks=sorted({c.batch.sink for c in claims}),
                              ids=[c.batch_id for c in claims]))
    finished = [c.batch_id for c in claims if not left.get(c.batch_id)]
    if finished:
        await db.run(DONE, ids=finished)
    back = []
    for claim, outcomes, _, errors in kept:
        if not left.get(claim.batch_id):
            continue
        waiting = [o for o in outcomes if o.kind in ("retry", "held")]
        held = all(o.kind == "held" for o in waiting)
        delay = policy.held_delay if held else policy.retry_delay(claim.batch.attempt)
        asked = max((o.not_before.timestamp() for o in waiting if o.not_before), default=None)
        back.append((claim.batch_id, max(now + delay, asked or 0.0), asked, int(held),
                     int(claim.uncertain), errors[-1] if errors else None,
                     *_failing(claim.batch, waiting, policy, now),
                     int(bool(waiting) and all(o.aside for o in waiting))))
    if back:
        await db.run(PUT_BACK, back=back, now=now)


def _failing(batch: Batch, waiting: list[Outcome], policy: Policy,
             now: float) -> tuple[int, float | None]:
    """(outage_tries, failing_since) of a batch put back: a try whose every retry was
    transient is an outage's (not counted to max_attempts); the first failure starts the
    window."""
    retries = [o for o in waiting if o.kind == "retry"]
    if not retries:
        return batch.outage_tries, batch.failing_since
    outage = all(_outage(o.transient, policy) for o in retries)
    since = batch.failing_since if batch.failing_since is not None else now
    return batch.outage_tries + int(outage), since


def _touched_row(claim: Claim, conversation: str, now: float, counts: dict[str, int],
                 errors: list[str], outcomes: Sequence[Outcome]) -> tuple[Any, ...]:
    batch = claim.batch
    held = next((o.reason for o in outcomes if o.kind == "held"), None)
    return (batch.sink, conversation, batch.record_id, now if counts.get("done") else None,
            errors[-1] if errors else None, held)


# -- dead letters back ---------------------------------------------------------------------

_REOPEN = {"state": "pending", "reason": None, "done_at": None}
# uncertain=1: what the batch posted before may not all be in the ledger (a crash between
# a post and its outcomes' commit), so its retry reads the lead's keys before posting again
# (a photo's text was seen twice on a lead in the crash loop with uncertain=0 here)
_RETRY_BATCH = Query(sa.update(batches).values(
    state="ready", attempts=0, next_attempt_at=0, not_before=None, uncertain=1,
    outage_tries=0,
    failing_since=None, aside=0)
    .where(b.id == P("batch_id"), b.state == "done"), "re-open a finished batch")
DEAD_TARGETS = Query(sa.select(t.sink, t.key, t.batch_id, t.message_ids, b.state, t.reason)
                     .select_from(targets.outerjoin(batches, b.id == t.batch_id)).where(
    t.state == "dead", t.sink == sa.func.coalesce(P("sink", type_=TEXT), t.sink))
    .order_by(t.sink, t.key), "dead targets")
REOPEN_MESSAGES = Query(sa.update(deliveries).values(_REOPEN).where(
    d.sink == P("sink"), d.batch_id == P("batch_id"), d.state == "done",
    d.message_id.in_(values_of("ids"))), "re-open a target's messages")
STILL_PENDING = Query(sa.select(sa.literal(1)).select_from(deliveries).where(
    d.sink == P("sink"), d.batch_id == P("batch_id"), d.message_id == P("message_id"),
    d.state == "pending"), "a target's message still pending")
DROP_TARGET = Query(sa.delete(targets).where(t.sink == P("sink"), t.key == P("key")),
                    "forget a target")
FOLLOW_UP = Query(sa.update(targets).values(state="failing", attempts=0, reason=P("reason"))
                  .where(t.sink == P("sink"), t.key == P("key")), "keep a file target")
_WAITING_PREFIX = starts_with(t.reason, WAITING_FOR_FILE)
WAITING = Query(sa.select(t.sink, t.key, t.batch_id, b.state)
                .select_from(targets.outerjoin(batches, b.id == t.batch_id)).where(
    t.state == "dead", t.message_ids.like(P("pattern")), _WAITING_PREFIX).order_by(t.sink, t.key),
    "targets waiting for a file")
REASON = Query(sa.update(targets).values(reason=P("reason"))
               .where(t.sink == P("sink"), t.key == P("key")), "target reason")
FILE_NEVER_CAME = "the file never came"
NEVER_CAME = Query(sa.select(t.sink, t.key, t.message_ids).where(
    t.state == "dead",
    starts_with(t.reason, FILE_NEVER_CAME)).order_by(t.sink, t.key),
    "targets whose file never came")
_SINK_MATCH = d.sink == sa.func.coalesce(P("sink", type_=TEXT), d.sink)
_LIVE_AGAIN = {**_REOPEN, "batch_id": None, "backfill": 0}
REQUEUE_ALL = Query(sa.update(deliveries).values(_LIVE_AGAIN).where(d.state == "dead",
                                                                    _SINK_MATCH),
                    "requeue dead letters")
REQUEUE = Query(sa.update(deliveries).values(_LIVE_AGAIN).where(
    d.state == "dead", _SINK_MATCH, d.message_id.in_(values_of("ids"))),
    "requeue these dead letters")
REQUEUE_CONVERSATION = Query(sa.update(deliveries).values(_LIVE_AGAIN).where(
    d.state == "dead", d.message_id.in_(sa.select(m.id).where(
        m.conversation == P("conversation")))), "requeue a conversation's dead letters")


async def requeue(db: Connector, sink: str | None, message_ids: Sequence[int] | None) -> int:
    """Dead letters back to pending (all, one sink's, or the given message ids): dead
    messages and dead targets; returns how many of both."""
    return await _requeue_messages(db, sink, message_ids) + await _requeue_targets(
        db, sink, message_ids)


async def _requeue_targets(db: Connector, sink: str | None,
                           message_ids: Sequence[int] | None) -> int:
    """Re-open a dead target: its messages go back to pending in their own batch, so the
    retry carries the same keys and re-posts only what is not in the ledger.

    A file target waits while its batch is not done (another part retries, or a try is in
    flight): its message back beside that part's messages would be rendered with them
    under its note's key, already in the ledger, and they would count as delivered
    unposted (as reopen_waiting). A wait for a file is re-read at the batch's end; any
    other stays a dead letter, to requeue once the batch is done.

    A file target whose file never came is fetched again (as `requeue --media`) and waits
    for it: re-opened without its file, the follow-up would find it dead, attach nothing,
    and leave the target failing, so a later media requeue would find no wait to re-open."""
    wanted = set(message_ids or ())
    count = 0
    for target_sink, key, batch_id, ids, batch_state, reason in await db.rows(DEAD_TARGETS,
                                                                               sink=sink):
        covered = list(ids_of(ids))
        if wanted and not wanted.intersection(covered):
            continue
        if "#file" in key and reason.startswith(FILE_NEVER_CAME):
            await _fetch_again(db, target_sink, key, covered)
            count += 1
            continue
        if "#file" in key and batch_state not in ("done", None):
            continue
        if not await db.run(REOPEN_MESSAGES, sink=target_sink, batch_id=batch_id, ids=covered):
            continue  # its messages were pruned: keep it listed, for a person
        if "#file" in key:  # a file target: the retry attaches the file alone
            await db.run(FOLLOW_UP, reason="requeued", sink=target_sink, key=key)
        else:
            await db.run(DROP_TARGET, sink=target_sink, key=key)
        await db.run(_RETRY_BATCH, batch_id=batch_id)
        count += 1
    return count


# media.REQUEUE's update, here: media imports this module (re-opening waits), so calling it
# from here would be an import cycle (tests/test_imports.py)
FETCH_AGAIN = Query(sa.update(media).values(state="pending", next_attempt_at=0, attempts=0)
                    .where(media.c.state == "dead", media.c.message_id.in_(values_of("ids"))),
                    "fetch these dead media again")


async def _fetch_again(db: Connector, sink: str, key: str, ids: list[int]) -> None:
    """A file target whose file never came, requeued: its file is fetched again and it
    waits for it (a file stored meanwhile re-opens it now)."""
    await db.run(FETCH_AGAIN, ids=ids)
    await db.run(REASON, reason=f"{WAITING_FOR_FILE}: fetched again", sink=sink, key=key)
    for message_id, state, _ in await db.rows(FILE_STATES, ids=ids):
        if state == "fetched":
            await reopen_waiting(db, message_id)


FILE_MISSING = Query(sa.update(media).values(
    state="pending", path=None, size=None, sha256=None, next_attempt_at=0, lease_until=None,
    reason=P("reason"), updated_at=P("now"))
    .where(media.c.state == "fetched", media.c.message_id.in_(values_of("ids"))),
    "fetch missing files again")
MISSING = "its stored file was missing (media_path deleted or restored?): fetched again"


async def _fetch_missing(db: Connector, members: dict[int, list[Message]],
                         now: float) -> None:
    """Messages whose stored file is gone (media_path deleted under the bridge): their
    files are fetched again, and the sink sees them pending (it waits for them, as for
    any file not fetched yet) instead of failing to read them for good."""
    gone = {m.id for batch in members.values() for m in batch
            if m.file is not None and m.file.state == "fetched"
            and not (m.file.path and os.path.exists(m.file.path))}
    if not gone:
        return
    await db.run(FILE_MISSING, reason=MISSING, now=now, ids=sorted(gone))
    for batch in members.values():
        batch[:] = [replace(m, file=replace(m.file, state="pending", path=None, size=None,
                                            sha256=None, reason=MISSING))
                    if m.id in gone and m.file is not None else m for m in batch]


async def reopen_waiting(db: Connector, message_id: int) -> int:
    """Re-open the targets that wait for this message's file (contracts.WAITING_FOR_FILE).

    A message delivered goes back to pending in its own batch, its file to follow alone,
    once that batch is done: while another part of it retries, the message back beside
    that part's messages would be rendered with them under its own key, already in the
    ledger, and they would count as delivered unposted (hunt25). The batch's completion
    re-reads such waits (_file_states) and re-opens them then. One still pending there
    (its batch retries for another target) is re-posted whole by that retry (same part,
    same key): its wait is simply forgotten, and the retry attaches the file like any
    other (a follow-up would render the part without it, under a new key: a second
    activity). A batch leased now is left alone: its try read the wait (and skips the
    file), so a wait forgotten under it would end with the message delivered and the file
    never attached; its completion re-reads the file, locked, and re-opens it then."""
    count = 0
    for sink, key, batch_id, batch_state in await _waiting(db, message_id):
        if batch_state == "leased":
            continue  # the try in flight settles it when it completes (_file_states)
        if batch_state == "done" and await db.run(REOPEN_MESSAGES, sink=sink,
                                                   batch_id=batch_id, ids=[message_id]):
            await db.run(FOLLOW_UP, reason="its file was fetched: to be attached", sink=sink,
                         key=key)
            await db.run(_RETRY_BATCH, batch_id=batch_id)
        elif await db.one(STILL_PENDING, sink=sink, batch_id=batch_id,
                          message_id=message_id) is not None:
            await db.run(DROP_TARGET, sink=sink, key=key)
        else:
            continue  # pruned, or dead: a requeue re-opens it
        count += 1
    return count


async def settle_waiting(db: Connector, message_id: int, reason: str) -> None:
    """The file will never come: its waiting targets stay dead, saying why."""
    for sink, key, *_ in await _waiting(db, message_id):
        await db.run(REASON, reason=f"{FILE_NEVER_CAME}: {reason}", sink=sink, key=key)


async def await_file_again(db: Connector, message_ids: Sequence[int] | None) -> None:
    """Media requeued: targets whose file never came wait for it again."""
    wanted = {f",{i}," for i in message_ids or ()}
    for sink, key, ids in await db.rows(NEVER_CAME):
        if not wanted or any(w in ids for w in wanted):
            await db.run(REASON, reason=f"{WAITING_FOR_FILE}: fetched again", sink=sink,
                         key=key)


async def _waiting(db: Connector, message_id: int) -> list[Any]:
    return await db.rows(WAITING, pattern=f"%,{message_id},%")


async def _requeue_messages(db: Connector, sink: str | None,
                            message_ids: Sequence[int] | None) -> int:
    # a person asked for it: live priority, not backfill pacing
    if message_ids:
        return await db.run(REQUEUE, sink=sink, ids=list(message_ids))
    return await db.run(REQUEUE_ALL, sink=sink)


async def requeue_conversation(db: Connector, conversation: str,
                               now: float) -> dict[str, int]:
    """One conversation's failures, every sink: dead letters back to pending, and batches
    waiting to retry made due now (except a wait the sink asked for)."""
    requeued = await db.run(REQUEUE_CONVERSATION, conversation=conversation)
    hurried = await db.run(HURRY_CONVERSATION, conversation=conversation, now=now)
    return {"requeued": requeued, "hurried": hurried}
