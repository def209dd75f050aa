"""Erasure: a person's messages, identities, media references and CRM mappings, gone.

One transaction. The person is found through the contact map, so every number and
BSUID they were seen with goes too, as do their messages in group chats (their words,
not the group's others). The CRM is left alone: sinks keep what they posted.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa

from bridge.buffer.compiler import P, Query, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import (
    batches,
    conversations,
    deliveries,
    identities,
    ledger,
    messages,
    sink_conversations,
    sink_state,
    statuses,
)
from bridge.model import GROUP_PREFIX

TOP = "\U0010ffff"
i, m, st = identities.c, messages.c, statuses.c
_keys = values_of("keys", "text")
_ids = values_of("ids")
PERSON = Query(sa.select(i.person).where(i.key == P("key")), "the person of a key")
LINKED = Query(sa.select(i.key).where(i.person == P("person")), "a person's keys")
# keys that are another person's conversation: a recycled number stays the key of its
# earlier holder's chat while its identity row names the new holder (bridge.buffer.identity)
OTHERS = Query(sa.select(i.person).where(i.person.in_(_keys), i.person != P("person"))
               .distinct(), "other people's conversations among the keys")
# such a number names its earlier holder's conversation again once the new holder is gone
GIVE_BACK = Query(sa.update(identities).values(person=i.key).where(
    i.person == P("person"), i.key.in_(_keys)), "a recycled number back to its earlier holder")
CHATS = Query(sa.select(conversations.c.key).where(conversations.c.key.in_(_keys)),
              "a person's conversations")
OWN = Query(sa.select(m.id).where(m.conversation.in_(_keys)), "a person's messages")
GROUP_MESSAGES = Query(sa.select(m.id, m.body).where(
    m.conversation >= GROUP_PREFIX, m.conversation < GROUP_PREFIX + TOP),
    "group chat messages")
MEDIA = Query(sa.select(m.id, m.body).where(m.id.in_(_ids)), "bodies of messages")
BATCH_KEYS = Query(sa.select(batches.c.key).where(batches.c.conversation.in_(_keys)),
                   "a person's batches")
# a person's identity rows name them (a key of theirs may name another: a recycled number)
IDENTITIES = Query(sa.select(i.key).where(i.person.in_(_keys)), "a person's identities")
MAPPINGS = Query(sa.select(sink_conversations.c.sink).where(
    sink_conversations.c.conversation.in_(_keys)), "a person's CRM mappings")
_of_person = sa.or_(st.recipient.in_(_keys), sa.tuple_(st.source, st.provider_id).in_(
    sa.select(m.source, m.provider_id).where(m.id.in_(_ids))))
STATUSES = Query(sa.select(sa.func.count()).select_from(statuses).where(_of_person),
                 "a person's statuses")
DROP_STATUSES = Query(sa.delete(statuses).where(_of_person), "forget a person's statuses")
DROP = tuple(Query(step, "forget a person") for step in (
    # by the primary key (sink, message_id): every sink's row of each message
    sa.delete(deliveries).where(deliveries.c.sink.in_(sa.select(sink_state.c.sink)),
                                deliveries.c.message_id.in_(_ids)),
    sa.delete(messages).where(m.id.in_(_ids)),
    sa.delete(batches).where(batches.c.conversation.in_(_keys)),
    sa.delete(sink_conversations).where(sink_conversations.c.conversation.in_(_keys)),
    sa.delete(conversations).where(conversations.c.key.in_(_keys)),
    sa.delete(identities).where(i.person.in_(_keys))))
DROP_LEDGER = Query(sa.delete(ledger).where(ledger.c.key >= P("low"), ledger.c.key < P("high")),
                    "forget a batch's ledger")


async def _firsts(db: Connector, query: Query, **params: Any) -> list[Any]:
    return [row[0] for row in await db.rows(query, **params)]


async def person_keys(db: Connector, key: str) -> tuple[str, list[str], list[str]]:
    """The person's conversation key; every phone/BSUID linked to them, less a number that
    changed hands and keys the earlier holder's conversation; those numbers (`others`)."""
    person = await db.value(PERSON, key=key) or key
    keys = {person, key, *await _firsts(db, LINKED, person=person)}
    others = await _firsts(db, OTHERS, keys=sorted(keys), person=person)
    return person, sorted(keys - set(others)), others


async def purge(db: Connector, key: str, dry_run: bool) -> dict[str, Any]:
    """Delete (or with dry_run only count) everything the buffer holds of one person."""
    person, keys, others = await person_keys(db, key)
    chats = await _firsts(db, CHATS, keys=keys)
    wanted = set(keys)
    # their words in group chats: the sender is inside the body, which SQL never reads
    said = [mid for mid, body in await db.rows(GROUP_MESSAGES)
            if (json.loads(body).get("extra") or {}).get("sender") in wanted]
    ids = sorted({*await _firsts(db, OWN, keys=keys), *said})
    batch_keys = await _firsts(db, BATCH_KEYS, keys=keys)
    found = {"person": person, "keys": keys, "conversations": len(chats),
             "messages": len(ids), "media": await _media(db, ids),
             "statuses": await db.value(STATUSES, keys=keys, ids=ids),
             "identities": len(await _firsts(db, IDENTITIES, keys=keys)),
             "crm_mappings": len(await _firsts(db, MAPPINGS, keys=keys)), "dry_run": dry_run}
    if not dry_run:
        await db.run(DROP_STATUSES, keys=keys, ids=ids)
        if others:
            await db.run(GIVE_BACK, person=person, keys=others)
        for step in DROP:
            await db.run(step, keys=keys, ids=ids)
        for batch in batch_keys:  # what the sinks posted under the person's batches
            await db.run(DROP_LEDGER, low=batch, high=batch + TOP)
    return found


async def _media(db: Connector, ids: list[int]) -> int:
    if not ids:
        return 0
    return sum(1 for _, body in await db.rows(MEDIA, ids=ids)
               if json.loads(body).get("media") is not None)
