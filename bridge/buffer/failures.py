"""A failed send of a message a sink already took: a notice for that sink's next window.

A message not yet batched for a sink shows its failure on its own transcript line (see
bridge.buffer.enrich). One already batched or delivered cannot change any more, so the
failure gets a message of its own (kind "status", provider id "<id>#failed") in the same
conversation, pending only for the sinks that took the original. Runs in the writer's
group transaction; only when the group holds failed statuses (rare).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from bridge.buffer.codec import dump_body
from bridge.buffer.compiler import P, Query
from bridge.buffer.connectors import Connector
from bridge.buffer.enrich import first_error
from bridge.buffer.tables import deliveries, messages, sink_state

SUFFIX = "#failed"
m, d = messages.c, deliveries.c
# a sink already took it; every sink named, so that (sink, message_id), the primary key,
# finds a message's deliveries (the message id alone scanned them all)
_TAKEN = sa.and_(d.sink.in_(sa.select(sink_state.c.sink)),
                 sa.or_(d.state != "pending", d.batch_id.isnot(None)))
ORIGINAL = Query(sa.select(m.id, m.conversation, m.sent_at, m.body).where(
    m.source == P("source"), m.provider_id == P("provider_id"), m.direction == "out",
    sa.exists().where(d.message_id == m.id, _TAKEN)), "failed send: its message")
NOTICE = Query(lambda insert: insert(messages).values(
    {k: P(k) for k in ("source", "provider_id", "conversation", "sent_at", "stored_at", "body",
                       "direction", "account")}).on_conflict_do_nothing().returning(m.id),
    "failed send: notice")
NOTICE_DELIVERIES = Query(lambda insert: insert(deliveries).from_select(
    ["sink", "message_id"], sa.select(d.sink, P("notice", type_=sa.BigInteger)).where(
        d.message_id == P("original"), _TAKEN)).on_conflict_do_nothing(),
    "failed send: notice for the sinks that took it")


async def note_failures(db: Connector, statuses: Sequence[tuple[Any, ...]],
                        now: float) -> None:
    """statuses: upsert rows (source, provider_id, status, rank, at, recipient, failed_at,
    errors); those with failed_at get a notice when a sink already took their message."""
    for source, provider_id, _, _, _, _, failed_at, errors in statuses:
        if failed_at is None:
            continue
        original = await db.one(ORIGINAL, source=source, provider_id=provider_id)
        if original is None:
            continue
        message_id, conversation, sent_at, stored = original
        told = json.loads(stored)
        body = {"account": told.get("account"), "direction": "out", "kind": "status",
                "text": "", "reply_to": provider_id, "history": False,
                "extra": {"failed_of": provider_id, "failed": first_error(errors),
                          "target": {"at": sent_at, "text": told.get("text") or ""}},
                "raw": {}}
        notice = await db.value(NOTICE, source=source, provider_id=provider_id + SUFFIX,
                                conversation=conversation, sent_at=failed_at, stored_at=now,
                                body=dump_body(body), direction="out",
                                account=told.get("account") or "")
        if notice is not None:
            await db.run(NOTICE_DELIVERIES, notice=notice, original=message_id)
