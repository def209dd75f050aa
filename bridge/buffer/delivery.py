"""Per-sink delivery state machine: claim, complete, requeue. Each runs as one transaction."""

from __future__ import annotations

import hashlib
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aiosqlite

from bridge.buffer.codec import MESSAGE_COLUMNS, from_timestamp, message_from_row
from bridge.buffer.enrich import enrich
from bridge.contracts import WAITING_FOR_FILE, Batch, Outcome, TargetFailure
from bridge.errors import LeaseLost
from bridge.model import Conversation, Message
from bridge.retry import gives_up


@dataclass(slots=True)
class Claim:
    """A leased batch: the Batch handed to the sink plus what the ack must name."""

    batch: Batch
    batch_id: int
    token: str
    messages: list[Message]  # all claimed messages; batch.messages may be filtered
    uncertain: bool = False  # set when the sink timed out or raised: it may have posted


@dataclass(frozen=True, slots=True)
class Policy:
    """How outcomes turn into states: attempts before dead letter, delays in seconds."""

    max_attempts: int
    retry_delay: Any  # Callable[[int], float]: attempt -> seconds
    held_delay: float


# Queries of pending rows say INDEXED BY deliveries_pending: without ANALYZE statistics
# SQLite prefers a PRIMARY KEY (sink) search, which reads every delivery row the sink ever
# had, done ones too (~50 ms a query at 1M rows, on the writer); the partial index holds
# only pending rows.


DEFAULT_BATCH_SIZE = 500  # new messages batched per claim (SinkSettings.batch_limit's default)


def _placeholders(n: int) -> str:
    return ",".join("?" * n)


def _lock_rows(db: Any, skip_locked: bool) -> str:
    """PostgreSQL only: lock the batch rows a claim or an ack reads (several processes
    share the buffer); SQLite's single writer holds the whole file and needs no clause.

    A claim skips rows another transaction holds (SKIP LOCKED); an ack waits for its row,
    then re-reads it, so a lease taken over meanwhile is seen and raises LeaseLost."""
    if getattr(db, "dialect", "sqlite") != "postgresql":
        return ""
    return " FOR UPDATE SKIP LOCKED" if skip_locked else " FOR UPDATE"


async def _rows(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[Any]:
    async with db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def release_leases(db: aiosqlite.Connection, now: float) -> None:
    """Free every lease (a new runner starts: the old one is gone). Outcomes unknown."""
    await db.execute(
        "UPDATE batches SET state = 'ready', lease_token = NULL, lease_until = NULL,"
        " uncertain = 1, next_attempt_at = ? WHERE state = 'leased'", (now,))


async def claim(db: aiosqlite.Connection, sink: str, now: float, limit: int,
                lease: float, backfill: bool | None = None,
                batch_size: int = DEFAULT_BATCH_SIZE, owner: str = "") -> list[Claim]:
    """Expire stale leases, batch new messages per conversation, lease what is due.

    `owner` prefixes the lease token ("<owner>:<uuid>"): on a shared buffer the process
    that holds a lease, so the leases of a process seen dead are freed before they expire.

    `limit` bounds the batches leased; `batch_size` how many new messages are batched
    (each conversation whole, up to `batch_size` of its messages), so a small claim never
    cuts a conversation into several batches. `backfill` True or False claims only
    batches of that class; None claims both.
    """
    await db.execute(
        "UPDATE batches SET state = 'ready', lease_token = NULL, lease_until = NULL,"
        " uncertain = 1, next_attempt_at = ? WHERE sink = ? AND state = 'leased'"
        " AND lease_until < ?", (now, sink, now))
    await undo_clock_steps(db, sink, now)
    await _form_batches(db, sink, now, batch_size)
    classes = (0, 1) if backfill is None else (int(backfill),)
    # A conversation's batches go in order: none while an older one of its class is
    # unfinished (waiting to retry, or leased). Live batches pass backfill ones never tried
    # (backfill is paced, live is not), but not one that failed and waits to retry; a
    # backfill batch (older messages) never waits behind a live one.
    due = await _rows(db, "SELECT id, conversation, key, attempts, uncertain FROM batches b"
                      " WHERE sink = ? AND state = 'ready' AND next_attempt_at <= ?"
                      f" AND backfill IN ({_placeholders(len(classes))})"
                      " AND NOT EXISTS (SELECT 1 FROM batches o INDEXED BY batches_open"
                      " WHERE o.sink = b.sink AND o.conversation = b.conversation"
                      " AND o.state != 'done' AND o.id < b.id"
                      " AND (o.backfill = b.backfill OR (o.backfill > b.backfill"
                      " AND o.attempts > 0)))"
                      " ORDER BY backfill, next_attempt_at, id LIMIT ?" + _lock_rows(db, True),
                      (sink, now, *classes, limit))
    if not due:
        return []
    token = f"{owner}:{uuid.uuid4().hex}" if owner else uuid.uuid4().hex
    ids = [row[0] for row in due]
    await db.execute(
        f"UPDATE batches SET state = 'leased', lease_token = ?, lease_until = ?,"
        f" attempts = attempts + 1 WHERE id IN ({_placeholders(len(ids))})",
        (token, now + lease, *ids))
    return await _load_claims(db, sink, due, token)


async def undo_clock_steps(db: aiosqlite.Connection, sink: str, now: float) -> None:
    """Waiting batches released "in the future" saw the wall clock step back: move their
    wait back by as much, so a step back of an hour does not add an hour to a retry."""
    await db.execute(
        "UPDATE batches SET next_attempt_at = next_attempt_at - (released_at - ?),"
        " not_before = not_before - (released_at - ?), released_at = ?"
        " WHERE sink = ? AND state = 'ready' AND next_attempt_at > ? AND released_at > ?",
        (now, now, now, sink, now, now))


async def retry_now(db: aiosqlite.Connection, sink: str, now: float) -> int:
    """Make the sink's waiting batches due now (a person asked for a sync), except for a
    wait the sink itself asked for (not_before); return how many were hurried."""
    await undo_clock_steps(db, sink, now)
    async with db.execute(
            "UPDATE batches SET next_attempt_at = max(?, coalesce(not_before, 0))"
            " WHERE sink = ? AND state = 'ready' AND next_attempt_at > ?"
            " AND next_attempt_at > coalesce(not_before, 0)", (now, sink, now)) as cursor:
        return cursor.rowcount


async def _form_batches(db: aiosqlite.Connection, sink: str, now: float, limit: int) -> None:
    """Batch the conversations of the oldest unbatched messages, each whole, ~`limit` in all.

    With chats interleaved, taking just the oldest `limit` messages would cut one
    conversation into many batches (so many CRM activities); instead each conversation
    met there brings all its waiting messages (up to `limit`), oldest conversations first.
    """
    oldest = await _rows(db, "SELECT m.conversation, d.backfill FROM deliveries d"
                         " INDEXED BY deliveries_pending JOIN messages m ON m.id = d.message_id"
                         " WHERE d.sink = ?"
                         " AND d.state = 'pending' AND d.batch_id IS NULL"
                         " ORDER BY d.backfill, d.message_id LIMIT ?", (sink, limit))
    taken = 0
    for conversation, backfill in dict.fromkeys(tuple(row) for row in oldest):
        if taken >= limit:
            break
        ids = [row[0] for row in await _rows(
            db, "SELECT d.message_id FROM messages m JOIN deliveries d"
            " ON d.message_id = m.id AND d.sink = ? WHERE m.conversation = ?"
            " AND d.backfill = ? AND d.state = 'pending' AND d.batch_id IS NULL"
            " ORDER BY m.id LIMIT ?", (sink, conversation, backfill, limit))]
        if ids:
            taken += len(ids)
            await _batch(db, sink, conversation, backfill, ids, now)


async def _batch(db: aiosqlite.Connection, sink: str, conversation: str, backfill: int,
                 ids: list[int], now: float) -> None:
    """Put `ids` in the conversation's held batch, or in a new one keyed by its content."""
    batch_id = await _held_batch(db, sink, conversation, backfill)
    if batch_id is None:
        key = _batch_key(sink, conversation, ids)
        async with db.execute(
            "INSERT INTO batches (sink, conversation, key, created_at, backfill)"
            " VALUES (?, ?, ?, ?, ?) RETURNING id",
            (sink, conversation, key, now, backfill)) as cursor:
            (batch_id,) = await cursor.fetchone()
    await db.execute(
        f"UPDATE deliveries SET batch_id = ? WHERE sink = ?"
        f" AND message_id IN ({_placeholders(len(ids))})", (batch_id, sink, *ids))


async def _held_batch(db: aiosqlite.Connection, sink: str, conversation: str,
                      backfill: int) -> int | None:
    """A waiting batch that never reached the CRM (held, certain) may take new messages."""
    rows = await _rows(db, "SELECT id FROM batches WHERE sink = ? AND conversation = ?"
                       " AND state = 'ready' AND held = 1 AND uncertain = 0 AND backfill = ?"
                       " LIMIT 1", (sink, conversation, backfill))
    return rows[0][0] if rows else None


def _batch_key(sink: str, conversation: str, ids: list[int]) -> str:
    digest = hashlib.sha256(f"{sink}\x1f{conversation}\x1f{ids[0]}-{ids[-1]}-{len(ids)}".encode())
    return "b" + digest.hexdigest()[:24]


async def _load_claims(db: aiosqlite.Connection, sink: str, due: list[Any],
                       token: str) -> list[Claim]:
    ids = [row[0] for row in due]
    marks = _placeholders(len(ids))
    members: dict[int, list[Any]] = defaultdict(list)
    for row in await _rows(db, f"SELECT d.batch_id, {MESSAGE_COLUMNS} FROM deliveries d"
                           f" INDEXED BY deliveries_pending JOIN messages m ON m.id = d.message_id"
                           f" WHERE d.sink = ?"
                           f" AND d.state = 'pending' AND d.batch_id IN ({marks})"
                           f" ORDER BY m.sent_at, m.id", (sink, *ids)):
        members[row[0]].append(message_from_row(row[1:]))
    await enrich(db, sink, [m for batch in members.values() for m in batch])
    conversations = await _conversations(db, sink, {row[1] for row in due})
    claims = []
    for batch_id, conversation, key, attempts, uncertain in due:
        batch = Batch(key=key, sink=sink, conversation=conversations[conversation],
                      messages=members[batch_id], attempt=attempts + 1, uncertain=bool(uncertain),
                      ledger=await _ledger(db, sink, key), targets=await _targets(db, sink, key))
        batch.record_id = batch.conversation.record_id
        claims.append(Claim(batch, batch_id, token, list(batch.messages)))
    return claims


async def _conversations(db: aiosqlite.Connection, sink: str,
                         keys: set[str]) -> dict[str, Conversation]:
    marks = _placeholders(len(keys))
    rows = await _rows(db, f"SELECT c.key, c.contact_name, c.account, s.record_id,"
                       f" s.last_synced_at, c.phone, c.bsuid, c.parent_bsuid, c.username,"
                       f" c.group_id FROM conversations c LEFT JOIN sink_conversations s"
                       f" ON s.sink = ? AND s.conversation = c.key WHERE c.key IN ({marks})",
                       (sink, *keys))
    found = {r[0]: Conversation(r[0], r[1], r[2], r[3], from_timestamp(r[4]), *r[5:])
             for r in rows}
    return {key: found.get(key, Conversation(key)) for key in keys}


async def _ledger(db: aiosqlite.Connection, sink: str, key: str) -> dict[str, str]:
    """Ledger entries whose key starts with the batch key (sinks derive keys from it)."""
    rows = await _rows(db, "SELECT key, external_id FROM ledger WHERE sink = ? AND key >= ?"
                       " AND key < ?", (sink, key, key + "\U0010ffff"))
    return dict(rows)


async def _targets(db: aiosqlite.Connection, sink: str,
                   key: str) -> dict[str, TargetFailure]:
    """Failed targets whose key starts with the batch key."""
    rows = await _rows(db, "SELECT key, label, reason, state, message_ids, attempts FROM targets"
                       " WHERE sink = ? AND key >= ? AND key < ?", (sink, key, key + "\U0010ffff"))
    return {k: TargetFailure(k, label, reason, state == "dead",
                             tuple(int(i) for i in ids.strip(",").split(",") if i), attempts)
            for k, label, reason, state, ids, attempts in rows}


async def _write_targets(db: aiosqlite.Connection, claim: Claim, now: float) -> None:
    """Failed targets upserted; targets that landed (now in the ledger) forgotten."""
    batch = claim.batch
    if batch.new_ledger:
        await db.executemany("DELETE FROM targets WHERE sink = ? AND key = ?",
                             [(batch.sink, k) for k in batch.new_ledger])
    await db.executemany(
        "INSERT INTO targets (sink, key, label, batch_id, message_ids, state, attempts, reason,"
        " updated_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (sink, key) DO UPDATE SET"
        " label = excluded.label, batch_id = excluded.batch_id, state = excluded.state,"
        " message_ids = excluded.message_ids, attempts = excluded.attempts,"
        " reason = excluded.reason, updated_at = excluded.updated_at",
        [(batch.sink, t.key, t.label, claim.batch_id, "," + ",".join(map(str, t.message_ids))
          + ",", "dead" if t.dead else "failing", t.attempts, t.reason, now)
         for t in batch.new_targets.values() if t.key not in batch.new_ledger])


async def complete(db: aiosqlite.Connection, claim: Claim, outcomes: Sequence[Outcome],
                   now: float, policy: Policy) -> dict[str, int]:
    """Record one outcome per message, the ledger and the CRM record, then free the batch."""
    batch = claim.batch
    await _check_lease(db, claim)
    counts: dict[str, int] = defaultdict(int)
    errors: list[str] = []
    for message, outcome in zip(claim.messages, outcomes, strict=True):
        state, reason = _next_state(outcome, batch.attempt, policy)
        counts[state if state != "pending" else outcome.kind] += 1
        if outcome.kind not in ("delivered", "skipped"):
            errors.append(outcome.reason)
        if state != "pending":
            await db.execute(
                "UPDATE deliveries SET state = ?, reason = ?, done_at = ? WHERE sink = ?"
                " AND message_id = ? AND state = 'pending'",
                (state, reason, now, batch.sink, message.id))
    await _write_ledger(db, batch, now)
    await _write_targets(db, claim, now)
    await _release(db, claim, outcomes, now, policy, errors)
    # the batch's conversation now: a merge (bridge.buffer.identity) may have moved it
    (conversation,) = (await _rows(db, "SELECT conversation FROM batches WHERE id = ?",
                                   (claim.batch_id,)))[0]
    await _touch_conversation(db, batch, conversation, now, delivered=counts["done"] > 0,
                              errors=errors, outcomes=outcomes)
    return dict(counts)


def _next_state(outcome: Outcome, attempt: int, policy: Policy) -> tuple[str, str | None]:
    if outcome.kind == "delivered":
        return "done", None
    if outcome.kind == "skipped":
        return "skipped", outcome.reason or None
    if outcome.kind == "rejected":
        return "dead", outcome.reason or "rejected by the sink (no reason given)"
    if outcome.kind == "retry" and gives_up(attempt, policy.max_attempts):
        return "dead", f"gave up after {attempt} attempts: {outcome.reason or 'no reason given'}"
    return "pending", None


async def _check_lease(db: aiosqlite.Connection, claim: Claim) -> None:
    rows = await _rows(db, "SELECT 1 FROM batches WHERE id = ? AND state = 'leased'"
                       " AND lease_token = ?" + _lock_rows(db, False),
                       (claim.batch_id, claim.token))
    if not rows:
        raise LeaseLost(f"batch {claim.batch.key} is no longer leased by this drain")


async def _write_ledger(db: aiosqlite.Connection, batch: Batch, now: float) -> None:
    if batch.new_ledger:
        await db.executemany(
            "INSERT OR IGNORE INTO ledger (sink, key, external_id, created_at) VALUES (?,?,?,?)",
            [(batch.sink, k, v, now) for k, v in batch.new_ledger.items()])


async def _release(db: aiosqlite.Connection, claim: Claim, outcomes: Sequence[Outcome],
                   now: float, policy: Policy, errors: list[str]) -> None:
    left = await _rows(db, "SELECT count(*) FROM deliveries INDEXED BY deliveries_pending"
                       " WHERE sink = ? AND batch_id = ? AND state = 'pending'",
                       (claim.batch.sink, claim.batch_id))
    if left[0][0] == 0:
        await db.execute("UPDATE batches SET state = 'done', lease_token = NULL,"
                         " lease_until = NULL, last_error = NULL WHERE id = ?", (claim.batch_id,))
        return
    waiting = [o for o in outcomes if o.kind in ("retry", "held")]
    held = all(o.kind == "held" for o in waiting)
    delay = policy.held_delay if held else policy.retry_delay(claim.batch.attempt)
    asked = max((o.not_before.timestamp() for o in waiting if o.not_before), default=None)
    await db.execute(
        "UPDATE batches SET state = 'ready', lease_token = NULL, lease_until = NULL,"
        " next_attempt_at = ?, not_before = ?, released_at = ?, held = ?, uncertain = ?,"
        " last_error = ? WHERE id = ?",
        (max(now + delay, asked or 0.0), asked, now, int(held), int(claim.uncertain),
         errors[-1] if errors else None, claim.batch_id))


async def _touch_conversation(db: aiosqlite.Connection, batch: Batch, conversation: str,
                              now: float, delivered: bool, errors: list[str],
                              outcomes: Sequence[Outcome]) -> None:
    held = next((o.reason for o in outcomes if o.kind == "held"), None)
    # A sink that cleared the cached record id (merged or deleted in the CRM) forgets it:
    # else the stale id would be handed out again on every retry and requeue.
    forget = batch.record_id is None and batch.conversation.record_id is not None
    await db.execute(
        "INSERT INTO sink_conversations (sink, conversation, record_id, last_synced_at,"
        " last_error, held_reason) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (sink, conversation) DO UPDATE SET"
        " record_id = CASE WHEN ? = 1 THEN NULL"
        " ELSE coalesce(excluded.record_id, sink_conversations.record_id) END,"
        " last_synced_at = coalesce(excluded.last_synced_at, sink_conversations.last_synced_at),"
        " last_error = excluded.last_error, held_reason = excluded.held_reason",
        (batch.sink, conversation, batch.record_id, now if delivered else None,
         errors[-1] if errors else None, held, int(forget)))


async def requeue(db: aiosqlite.Connection, sink: str | None,
                  message_ids: Sequence[int] | None) -> int:
    """Dead letters back to pending (all, one sink's, or the given message ids): dead
    messages and dead targets; returns how many of both."""
    return await _requeue_messages(db, sink, message_ids) + await _requeue_targets(
        db, sink, message_ids)


async def _requeue_targets(db: aiosqlite.Connection, sink: str | None,
                           message_ids: Sequence[int] | None) -> int:
    """Re-open a dead target: its messages go back to pending in their own batch, so the
    retry carries the same keys and re-posts only what is not in the ledger."""
    dead = await _rows(db, "SELECT sink, key, batch_id, message_ids FROM targets"
                       " WHERE state = 'dead' AND sink = coalesce(?, sink)", (sink,))
    wanted = set(message_ids or ())
    count = 0
    for target_sink, key, batch_id, ids in dead:
        covered = [int(i) for i in ids.strip(",").split(",") if i]
        if wanted and not wanted.intersection(covered):
            continue
        async with db.execute(
                f"UPDATE deliveries SET state = 'pending', reason = NULL, done_at = NULL"
                f" WHERE sink = ? AND batch_id = ? AND state = 'done'"
                f" AND message_id IN ({_placeholders(len(covered))})",
                (target_sink, batch_id, *covered)) as cursor:
            if cursor.rowcount == 0:  # its messages were pruned: keep it listed, for a person
                continue
        if "#file" in key:  # a file target: the retry attaches the file alone
            await _keep_as_follow_up(db, target_sink, key, "requeued")
        else:
            await db.execute("DELETE FROM targets WHERE sink = ? AND key = ?",
                             (target_sink, key))
        await db.execute("UPDATE batches SET state = 'ready', attempts = 0, next_attempt_at = 0,"
                         " not_before = NULL, uncertain = 0 WHERE id = ? AND state = 'done'",
                         (batch_id,))
        count += 1
    return count


async def reopen_waiting(db: aiosqlite.Connection, message_id: int) -> int:
    """Re-open the targets that wait for this message's file (contracts.WAITING_FOR_FILE)."""
    count = 0
    for sink, key, batch_id in await _waiting(db, message_id):
        async with db.execute(
                "UPDATE deliveries SET state = 'pending', reason = NULL, done_at = NULL"
                " WHERE sink = ? AND batch_id = ? AND message_id = ? AND state = 'done'",
                (sink, batch_id, message_id)) as cursor:
            if cursor.rowcount == 0:
                continue
        await _keep_as_follow_up(db, sink, key, "its file was fetched: to be attached")
        await db.execute("UPDATE batches SET state = 'ready', attempts = 0, next_attempt_at = 0,"
                         " not_before = NULL, uncertain = 0 WHERE id = ? AND state = 'done'",
                         (batch_id,))
        count += 1
    return count


async def _keep_as_follow_up(db: aiosqlite.Connection, sink: str, key: str, reason: str) -> None:
    """A re-opened file target stays listed (failing, no tries yet): it tells the sink which
    part (so which activity) the message's text went into, so only the file goes out."""
    await db.execute("UPDATE targets SET state = 'failing', attempts = 0, reason = ?"
                     " WHERE sink = ? AND key = ?", (reason, sink, key))


FILE_NEVER_CAME = "the file never came"


async def settle_waiting(db: aiosqlite.Connection, message_id: int, reason: str) -> None:
    """The file will never come: its waiting targets stay dead, saying why."""
    for sink, key, _ in await _waiting(db, message_id):
        await db.execute("UPDATE targets SET reason = ? WHERE sink = ? AND key = ?",
                         (f"{FILE_NEVER_CAME}: {reason}", sink, key))


async def await_file_again(db: aiosqlite.Connection,
                           message_ids: Sequence[int] | None) -> None:
    """Media requeued: targets whose file never came wait for it again."""
    rows = await _rows(db, "SELECT sink, key, message_ids FROM targets WHERE state = 'dead'"
                       " AND substr(reason, 1, ?) = ?", (len(FILE_NEVER_CAME), FILE_NEVER_CAME))
    wanted = {f",{i}," for i in message_ids or ()}
    for sink, key, ids in rows:
        if not wanted or any(w in ids for w in wanted):
            await db.execute("UPDATE targets SET reason = ? WHERE sink = ? AND key = ?",
                             (f"{WAITING_FOR_FILE}: fetched again", sink, key))


async def _waiting(db: aiosqlite.Connection, message_id: int) -> list[Any]:
    return await _rows(db, "SELECT sink, key, batch_id FROM targets WHERE state = 'dead'"
                       " AND message_ids LIKE ? AND substr(reason, 1, ?) = ?",
                       (f"%,{message_id},%", len(WAITING_FOR_FILE), WAITING_FOR_FILE))


async def _requeue_messages(db: aiosqlite.Connection, sink: str | None,
                            message_ids: Sequence[int] | None) -> int:
    # a person asked for it: live priority, not backfill pacing
    sql = ("UPDATE deliveries SET state = 'pending', batch_id = NULL, reason = NULL,"
           " done_at = NULL, backfill = 0 WHERE state = 'dead'")
    params: list[Any] = []
    if sink is not None:
        sql += " AND sink = ?"
        params.append(sink)
    if message_ids:
        sql += f" AND message_id IN ({_placeholders(len(message_ids))})"
        params.extend(message_ids)
    async with db.execute(sql, params) as cursor:
        return cursor.rowcount


async def requeue_conversation(db: aiosqlite.Connection, conversation: str,
                               now: float) -> dict[str, int]:
    """One conversation's failures, every sink: dead letters back to pending, and batches
    waiting to retry made due now (except a wait the sink asked for)."""
    async with db.execute(
            "UPDATE deliveries SET state = 'pending', batch_id = NULL, reason = NULL,"
            " done_at = NULL, backfill = 0 WHERE state = 'dead' AND message_id IN"
            " (SELECT id FROM messages WHERE conversation = ?)", (conversation,)) as cursor:
        requeued = cursor.rowcount
    async with db.execute(
            "UPDATE batches SET next_attempt_at = max(?, coalesce(not_before, 0))"
            " WHERE conversation = ? AND state = 'ready' AND next_attempt_at > ?"
            " AND next_attempt_at > coalesce(not_before, 0)",
            (now, conversation, now)) as cursor:
        hurried = cursor.rowcount
    return {"requeued": requeued, "hurried": hurried}


async def purge(db: aiosqlite.Connection, conversation: str) -> int:
    """Delete a person from the buffer: messages, deliveries, batches and their ledger
    entries, statuses, CRM mappings, the conversation. Returns the messages deleted."""
    for sink, key in await _rows(db, "SELECT sink, key FROM batches WHERE conversation = ?",
                                 (conversation,)):
        await db.execute("DELETE FROM ledger WHERE sink = ? AND key >= ? AND key < ?",
                         (sink, key, key + "\U0010ffff"))
    await db.execute("DELETE FROM deliveries WHERE sink IN (SELECT sink FROM sink_state)"
                     " AND message_id IN (SELECT id FROM messages WHERE conversation = ?)",
                     (conversation,))
    await db.execute("DELETE FROM statuses WHERE (source, provider_id) IN"
                     " (SELECT source, provider_id FROM messages WHERE conversation = ?)",
                     (conversation,))
    await db.execute("DELETE FROM batches WHERE conversation = ?", (conversation,))
    async with db.execute("DELETE FROM messages WHERE conversation = ?",
                          (conversation,)) as cursor:
        removed = cursor.rowcount
    await db.execute("DELETE FROM sink_conversations WHERE sink IN"
                     " (SELECT sink FROM sink_state) AND conversation = ?", (conversation,))
    await db.execute("DELETE FROM conversations WHERE key = ?", (conversation,))
    return removed
