"""Erasure: every trace of a person the buffer holds, gone.

One transaction. The person is found through the contact map, so every number and
BSUID they were seen with goes too, as do their messages in group chats (their words,
not the group's others). Gone with them: delivery rows and dead letters, batches and the
ledger of what they posted, failed and dead targets, CRM mappings, media jobs (the files
after the commit), a sink's lead-directory records holding one of their numbers (name
and every number of the record: the directory is a cache, refilled from the CRM), and
their unknown-number marks. The CRM is left alone: sinks keep what they posted. The
backends then make sure no deleted byte stays in their files (store.purge_person).
"""

from __future__ import annotations

import json
from typing import Any

import phonenumbers
import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.schema import ExecutableDDLElement

from bridge.buffer.codec import ids_of
from bridge.buffer.compiler import P, Query, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import (
    batches,
    conversations,
    deliveries,
    directory,
    identities,
    ledger,
    media,
    messages,
    sink_conversations,
    sink_state,
    statuses,
    targets,
    unknown_numbers,
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
NAMES = Query(sa.select(conversations.c.contact_name).where(conversations.c.key.in_(_keys),
                                                            conversations.c.contact_name.isnot(None)),
              "a person's profile names")
RECORD_NAME = Query(sa.select(directory.c.name).where(
    directory.c.sink == P("sink"), directory.c.record_id == P("record_id"),
    directory.c.name.isnot(None)).limit(1), "a directory record's name")
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
_names = values_of("names", "text")
HELD_NAMES = Query(sa.union(
    sa.select(conversations.c.contact_name).where(conversations.c.contact_name.in_(_names)),
    sa.select(directory.c.name).where(directory.c.name.in_(_names))),
    "names still held by others")
_forms = values_of("forms", "text")
RECORDS = Query(sa.select(directory.c.sink, directory.c.record_id).where(
    directory.c.key.in_(_forms)).distinct(), "directory records of a person's numbers")
DROP_RECORD = Query(sa.delete(directory).where(directory.c.sink == P("sink"),
                                               directory.c.record_id == P("record_id")),
                    "forget a directory record")
UNKNOWN = Query(sa.select(sa.func.count()).select_from(unknown_numbers).where(
    unknown_numbers.c.number.in_(_forms)), "a person's unknown-number marks")
DROP_UNKNOWN = Query(sa.delete(unknown_numbers).where(unknown_numbers.c.number.in_(_forms)),
                     "forget a person's unknown-number marks")
DEAD = Query(sa.select(sa.func.count()).select_from(deliveries).where(
    deliveries.c.state == "dead", deliveries.c.message_id.in_(_ids)), "a person's dead letters")
BATCH_IDS = Query(sa.select(batches.c.id).where(batches.c.conversation.in_(_keys)),
                  "a person's batch ids")
TARGETS = Query(sa.select(targets.c.sink, targets.c.key, targets.c.batch_id,
                          targets.c.message_ids, targets.c.state), "failed targets")
DROP_TARGET = Query(sa.delete(targets).where(targets.c.sink == P("sink"),
                                             targets.c.key == P("key")), "forget a target")
DROP_LEDGER = Query(sa.delete(ledger).where(ledger.c.key >= P("low"), ledger.c.key < P("high")),
                    "forget a batch's ledger")


class Vacuum(ExecutableDDLElement):
    """PostgreSQL's VACUUM of some tables (it runs outside a transaction)."""

    inherit_cache = False

    def __init__(self, *tables: sa.Table) -> None:
        self.tables = tables


@compiles(Vacuum)
def _vacuum(element: Vacuum, compiler: sa.sql.compiler.DDLCompiler, **kw: object) -> str:
    return "VACUUM " + ", ".join(compiler.preparer.format_table(t) for t in element.tables)


# every table a purge deletes from (media: forget_orphans, in the same transaction)
VACUUM = Query(Vacuum(messages, deliveries, batches, ledger, targets, sink_conversations,
                      conversations, identities, statuses, directory, unknown_numbers, media),
               "vacuum what a purge touched")


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
    ids = await _message_ids(db, keys)
    forms = number_forms(keys)
    records = await db.rows(RECORDS, forms=forms)
    failed = await _targets(db, keys, ids)
    found = {"person": person, "keys": keys,
             "conversations": len(await _firsts(db, CHATS, keys=keys)),
             "messages": len(ids), "media": await _media(db, ids),
             "statuses": await db.value(STATUSES, keys=keys, ids=ids),
             "identities": len(await _firsts(db, IDENTITIES, keys=keys)),
             "crm_mappings": len(await _firsts(db, MAPPINGS, keys=keys)),
             "dead_letters": await db.value(DEAD, ids=ids),
             "dead_targets": sum(1 for *_, state in failed if state == "dead"),
             "directory": len(records), "unknown": await db.value(UNKNOWN, forms=forms),
             "dry_run": dry_run}
    if not dry_run:
        # what no byte of the files may still hold (the store hands it to the backend)
        traces = await _traces(db, keys, records)
        await _drop(db, (person, keys, others), ids, forms, records,
                    [(s, k) for s, k, _ in failed])
        found["traces"] = await _not_held_by_others(db, traces)
    return found


async def _message_ids(db: Connector, keys: list[str]) -> list[int]:
    """The person's messages: their chats', and their words in group chats (the sender is
    inside the body, which SQL never reads)."""
    wanted = set(keys)
    said = [mid for mid, body in await db.rows(GROUP_MESSAGES)
            if (json.loads(body).get("extra") or {}).get("sender") in wanted]
    return sorted({*await _firsts(db, OWN, keys=keys), *said})


async def _drop(db: Connector, who: tuple[str, list[str], list[str]], ids: list[int],
                forms: list[str], records: list[Any], failed: list[tuple[str, str]]) -> None:
    """Delete the person's rows; `who` is person_keys() (a recycled number they held goes
    back to its earlier holder's conversation)."""
    person, keys, others = who
    batch_keys = await _firsts(db, BATCH_KEYS, keys=keys)
    await db.run(DROP_STATUSES, keys=keys, ids=ids)
    if others:
        await db.run(GIVE_BACK, person=person, keys=others)
    for sink, target in failed:  # before their batches: found through them
        await db.run(DROP_TARGET, sink=sink, key=target)
    for step in DROP:
        await db.run(step, keys=keys, ids=ids)
    for batch in batch_keys:  # what the sinks posted under the person's batches
        await db.run(DROP_LEDGER, low=batch, high=batch + TOP)
    for sink, record_id in records:
        await db.run(DROP_RECORD, sink=sink, record_id=record_id)
    await db.run(DROP_UNKNOWN, forms=forms)


async def _traces(db: Connector, keys: list[str], records: list[Any]) -> list[str]:
    """The person's identifiers and names as stored: every key in every form a row may
    hold it (a phone's national digits too), their profile names, their leads' names."""
    names = set(await _firsts(db, NAMES, keys=keys))
    for sink, record_id in records:
        names.update(await _firsts(db, RECORD_NAME, sink=sink, record_id=record_id))
    return sorted({*number_forms(keys), *(national(k) for k in keys), *names} - {None, ""})


async def _not_held_by_others(db: Connector, traces: list[str]) -> list[str]:
    """The traces less the names that someone still in the buffer holds (another customer
    or lead with the same name): those bytes stay, rightly, and are no copy of hers."""
    held = set(await _firsts(db, HELD_NAMES, names=traces))
    return [t for t in traces if t not in held]


def national(key: str) -> str | None:
    """A phone key's national significant number (how a CRM's copy may spell it)."""
    if not key.startswith("+"):
        return None
    try:
        return str(phonenumbers.parse(key, None).national_number)
    except phonenumbers.NumberParseException:
        return None


NATIONAL_KEY = "nsn:"  # a sink's key for a number stored without its country code


def number_forms(keys: list[str]) -> list[str]:
    """The keys, and each phone also without its '+' (a sink may key numbers either way)
    and as its national digits after NATIONAL_KEY (how the LeadSquared directory keys a
    lead's number stored without country code, trunk 0 stripped or not)."""
    digits = {n for n in (national(k) for k in keys) if n}
    local = {NATIONAL_KEY + d for n in digits for d in (n, n.lstrip("0")) if d}
    return sorted({*keys, *(k[1:] for k in keys if k.startswith("+")), *local})


async def _targets(db: Connector, keys: list[str], ids: list[int]) -> list[tuple[str, str, str]]:
    """(sink, key, state) of the failed and dead targets of the person's batches or
    messages (message_ids is text, ",12,13,": read here, the table holds only failures)."""
    batch_ids = set(await _firsts(db, BATCH_IDS, keys=keys))
    wanted = set(ids)
    return [(sink, key, state) for sink, key, batch_id, covered, state in await db.rows(TARGETS)
            if batch_id in batch_ids or wanted.intersection(ids_of(covered))]


async def _media(db: Connector, ids: list[int]) -> int:
    if not ids:
        return 0
    return sum(1 for _, body in await db.rows(MEDIA, ids=ids)
               if json.loads(body).get("media") is not None)
