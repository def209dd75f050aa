"""The contact map: which phone numbers and BSUIDs are one person, and their conversation.

Runs inside the writer's group transaction (on SQLite, in the write connection's thread):
one SELECT of the keys a group mentions, one upsert of what changed, and a merge only
when a webhook shows two known conversations to be one person (rare).

A person's conversation key is a phone number (E.164) when one is known, else a BSUID.
When a phone is learned for a BSUID-only conversation, or two conversations turn out to
be one person (a number change), the messages, batches and CRM mappings move to one key;
deliveries keep their states, so nothing already synced is posted again.

Two business-scoped user ids (BSUIDs) are never one person unless a change message links
them (user_changed_user_id / user_changed_number name the previous id): a number shown
with a BSUID other than the one its person has changed hands (a recycled number). It
moves to the new person, whose conversation is keyed by their BSUID (the number stays the
old person's conversation key), and the old person keeps their messages and CRM record.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from bridge.buffer.compiler import P, Query, greatest, least, values_of
from bridge.buffer.connectors import Connector
from bridge.buffer.tables import (
    TEXT,
    batches,
    conversations,
    identities,
    messages,
    sink_conversations,
    sink_state,
)
from bridge.model import GROUP_PREFIX, Identity, Message, is_group

i, c = identities.c, conversations.c
KNOWN = Query(sa.select(i.key, i.person, i.seen_at, c.phone, c.bsuid, c.parent_bsuid, c.username)
              .select_from(identities.outerjoin(conversations, c.key == i.person))
              .where(i.key.in_(values_of("keys", "text"))), "known identities")
# the common case (a webhook that links no keys): only who each sender's key files under
PERSON_OF = Query(sa.select(i.key, i.person).where(i.key.in_(values_of("keys", "text"))),
                  "person of each key")
NEW_IDENTITY = Query(lambda insert: insert(identities).values(
    key=P("key"), person=P("person"), seen_at=P("seen_at")).on_conflict_do_nothing(),
    "new identity")


def _set_identity(insert: Any) -> Any:
    new = insert(identities).values(key=P("key"), person=P("person"), seen_at=P("seen_at"))
    return new.on_conflict_do_update(index_elements=["key"],
                                     set_={"person": new.excluded.person})


SET_IDENTITY = Query(_set_identity, "set identity")
_FACTS = ("phone", "bsuid", "parent_bsuid", "username")
DESCRIBE = Query(
    sa.update(conversations)
    .values({f: sa.func.coalesce(P(f, type_=TEXT), c[f]) for f in _FACTS})
    .where(c.key == P("key"), sa.or_(*(
        sa.and_(P(f, type_=TEXT).is_distinct_from(c[f]), P(f, type_=TEXT).isnot(None))
        for f in _FACTS))), "describe a person")


@dataclass(slots=True)
class _Person:
    """What one group of linked keys says about its person."""

    keys: dict[str, None] = field(default_factory=dict)  # ordered set
    phone: str | None = None
    user_id: str | None = None
    parent_user_id: str | None = None
    username: str | None = None
    name: str | None = None

    def take(self, identity: Identity) -> None:
        self.phone = identity.phone or self.phone
        self.user_id = identity.user_id or self.user_id
        self.parent_user_id = identity.parent_user_id or self.parent_user_id
        self.username = identity.username or self.username
        self.name = identity.name or self.name


class _Links:
    """Union-find over key strings."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, keys: Sequence[str]) -> None:
        root = self.find(keys[0])
        for key in keys[1:]:
            other = self.find(key)
            if other != root:
                self.parent[other] = root


Described = list[tuple[str | None, str | None, str | None, str | None, str]]


class KnownKeys:
    """Senders' keys -> their person, as groups of one writer read them from committed
    rows (SQLite's writer thread: nothing else writes there unseen). A webhook that links
    no keys then needs no lookup for a sender seen before: the lookup was ~15,000
    instructions of the writer's ~130,000 per append (callgrind, groups of 24).

    Only rows read before the group's own writes are kept (a key the group inserts is
    read, and kept, by a later group: a rolled-back group leaves nothing behind). It is
    forgotten as soon as anything else may have changed the contact map: a group that
    learns links (merges, moves), any other transaction of the writer (purges, imports,
    claims), or a commit by another connection (`as_of` with SQLite's data_version)."""

    LIMIT = 100_000  # keys kept at most (~10 MB); then it starts again

    def __init__(self) -> None:
        self.persons: dict[str, str] = {}
        self._stamp: object = None

    def as_of(self, stamp: object) -> None:
        """Forget everything unless `stamp` (what changes when others wrote) is the last."""
        if stamp != self._stamp:
            self.persons.clear()
            self._stamp = stamp

    def forget(self) -> None:
        self.persons.clear()


async def file_under_people(db: Connector, identities: Iterable[Identity],
                      message_keys: Iterable[str], now: float,
                      known: KnownKeys | None = None) -> tuple[dict[str, str], Described]:
    """Learn `identities`; return each message key (and each identity key) filed under
    another conversation key -> that key (a key filed under itself may be left out: read
    the mapping with .get(key, key)), and what to note on the conversations (`describe`,
    once their rows exist). Conversations found to be one person are merged here."""
    # the same person is named several times per webhook and per group: each fact once
    facts = [(i, i.keys) for i in dict.fromkeys(identities)]
    facts = [(i, keys) for i, keys in facts if keys]
    if not facts:  # the common case: only look the senders up
        return await _senders(db, message_keys, now, known), []
    if known is not None:
        known.forget()  # links learned now may move keys to another person
    links = _Links()
    for _, keys in facts:
        links.join(keys)
    for key in message_keys:
        if key and not is_group(key):
            links.find(key)
    if not links.parent:
        return {}, []
    known, described = await _known(db, list(links.parent))
    moved = _recycled(facts, known, described)
    for key, (person, _) in known.items():
        if key not in moved:
            links.join([key, person])
    people = _people(links, facts)
    mapping: dict[str, str] = {}
    changed: list[dict[str, Any]] = []
    for person in people.values():
        target = _conversation_key(person, known, moved)
        for old in _existing(person, known, moved) - {target}:
            await merge(db, old, target, now)
        for key in person.keys:
            mapping[key] = target
            if known.get(key, (None,))[0] != target:
                changed.append({"key": key, "person": target, "seen_at": now})
    if changed:
        await db.many(SET_IDENTITY, changed)
    rows = []
    for p in people.values():
        facts = (p.phone, p.user_id, p.parent_user_id, p.username)
        target = mapping[next(iter(p.keys))]
        noted = described.get(target, (None,) * 4)
        if any(new is not None and new != old for new, old in zip(facts, noted, strict=True)):
            rows.append((*facts, target))
    return mapping, rows


async def _senders(db: Connector, message_keys: Iterable[str], now: float,
                   known: KnownKeys | None = None) -> dict[str, str]:
    """The senders' keys filed under another key (most are filed under their own, and
    left out); a key never seen becomes a person of its own."""
    keys = list(dict.fromkeys(k for k in message_keys if k and not k.startswith(GROUP_PREFIX)))
    persons = known.persons if known is not None else {}
    asked = [key for key in keys if key not in persons]
    found: dict[str, str] = {}
    if asked:
        for key, person in await db.rows(PERSON_OF, keys=asked):
            found[key] = person
        new = [(key, key, now) for key in asked if key not in found]  # key, person, seen_at
        if new:  # a new person: their key is their conversation from now on
            await db.many(NEW_IDENTITY, new)
        if known is not None:  # read before this group wrote: committed rows
            if len(persons) + len(found) > KnownKeys.LIMIT:
                persons.clear()
            persons.update(found)
    moved = {}
    for key in keys:
        person = found.get(key) or persons.get(key)
        if person is not None and person != key:
            moved[key] = person
    return moved


async def _known(db: Connector, keys: list[str]
                 ) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[Any, ...]]]:
    """key -> (person, first seen); person -> (phone, user_id, parent, username) noted."""
    found: dict[str, tuple[str, float]] = {}
    described: dict[str, tuple[Any, ...]] = {}
    for key, person, seen, *noted in await db.rows(KNOWN, keys=keys):
        found[key] = (person, seen)
        described[person] = tuple(noted)
    return found, described


def _people(links: _Links, facts: list[tuple[Identity, tuple[str, ...]]]
            ) -> dict[str, _Person]:
    people: dict[str, _Person] = {}
    for key in list(links.parent):
        people.setdefault(links.find(key), _Person()).keys[key] = None
    for fact, keys in facts:
        people[links.find(keys[0])].take(fact)
    return people


def _recycled(facts: list[tuple[Identity, tuple[str, ...]]],
              known: dict[str, tuple[str, float]],
              described: dict[str, tuple[Any, ...]]) -> set[str]:
    """Known numbers a webhook shows with another BSUID than their person's, not linked
    to it by a change (previous ids) or a shared parent BSUID: they changed hands."""
    moved = set()
    for fact, _ in facts:
        phone, user_id = fact.phone, fact.user_id
        if not (phone and user_id and phone in known):
            continue
        holder = known[phone][0]
        _, theirs, parent, _ = described.get(holder, (None,) * 4)
        if not theirs or theirs == user_id or theirs in fact.previous:
            continue
        if known.get(user_id, ("",))[0] == holder or (parent and parent == fact.parent_user_id):
            continue
        moved.add(phone)
    return moved


def _existing(person: _Person, known: dict[str, tuple[str, float]],
              moved: set[str] = frozenset()) -> set[str]:  # type: ignore[assignment]
    return {known[k][0] for k in person.keys if k in known and k not in moved}


def _conversation_key(person: _Person, known: dict[str, tuple[str, float]],
                      moved: set[str] = frozenset()) -> str:  # type: ignore[assignment]
    """An existing phone-keyed conversation (the oldest); else the person's phone; else an
    existing BSUID conversation (the oldest); else the person's BSUID. A number that
    changed hands (`moved`) is never the key: it names the old person's conversation."""
    existing = sorted(_existing(person, known, moved),
                      key=lambda k: (known.get(k, ("", float("inf")))[1], k))
    phones = [k for k in existing if k.startswith("+")]
    if phones:
        return phones[0]
    phone = person.phone or next((k for k in person.keys if k.startswith("+")), None)
    # a number already known names its person (among `existing`, or `moved`); when that
    # person is not keyed by it, the conversation keyed by it (if any) is someone else's:
    # the earlier holder of a number that changed hands
    if phone and phone not in moved and phone not in known:
        return phone
    if existing:
        return existing[0]
    return person.user_id or next(iter(person.keys))


def id_changes(messages: Iterable[Message]) -> list[Identity]:
    """The old and new BSUID of each user_changed_user_id message, as one person: from
    extra["user_id_change"] ({"old", "new"}, as the source read them), else the documented
    raw fields (system.previous_user_id, system.user_id; from_user_id when user_id is
    missing)."""
    found = []
    for message in messages:
        if message.kind != "system":
            continue
        change = message.extra.get("user_id_change")
        if isinstance(change, dict):
            old, new = change.get("old"), change.get("new")
        else:
            raw = message.raw if isinstance(message.raw, dict) else {}
            system = raw.get("system")
            if not isinstance(system, dict) or system.get("type") != "user_changed_user_id":
                continue
            old, new = system.get("previous_user_id"), system.get("user_id") or raw.get(
                "from_user_id")
        if isinstance(old, str) and isinstance(new, str) and old and new and old != new:
            found.append(Identity(user_id=new, previous=(old,)))
    return found


async def describe(db: Connector, rows: Described) -> None:
    """Note the latest phone, BSUIDs and username on each person's conversation row."""
    if rows:
        await db.many(DESCRIBE, [dict(zip((*_FACTS, "key"), row, strict=True))
                                 for row in rows])


sc = sink_conversations.c
# every sink named: (sink, conversation), the key, finds a conversation's mappings (the
# conversation alone read every mapping, in the writer's transaction)
_MAPPED = sc.sink.in_(sa.select(sink_state.c.sink))
_MERGE_MESSAGES = Query(sa.update(messages).values(conversation=P("new"))
                        .where(messages.c.conversation == P("old")), "merge: messages")
_MERGE_BATCHES = Query(
    sa.update(batches).values(conversation=P("new"), next_attempt_at=sa.case(
        (batches.c.held == 1, least(batches.c.next_attempt_at, P("now"))),
        else_=batches.c.next_attempt_at)).where(batches.c.conversation == P("old")),
    "merge: batches")


def _merge_mappings(insert: Any) -> Any:
    moved = sa.select(sc.sink, P("new", type_=TEXT), sc.record_id, sc.last_synced_at,
                      sc.last_error, sa.null()).where(_MAPPED, sc.conversation == P("old"))
    new = insert(sink_conversations).from_select(
        ["sink", "conversation", "record_id", "last_synced_at", "last_error", "held_reason"],
        moved)
    x = new.excluded
    return new.on_conflict_do_update(index_elements=["sink", "conversation"], set_={
        "record_id": sa.func.coalesce(sc.record_id, x.record_id),
        "last_synced_at": greatest(sa.func.coalesce(sc.last_synced_at, 0),
                                   sa.func.coalesce(x.last_synced_at, 0))})


_MERGE_MAPPINGS = Query(_merge_mappings, "merge: CRM mappings")
_DROP_MAPPINGS = Query(sa.delete(sink_conversations).where(
    _MAPPED, sc.conversation == P("old")), "merge: old mappings")
_KEPT = ("contact_name", "account", "last_message_at", "message_count", "kind", "phone",
         "bsuid", "parent_bsuid", "username", "group_id")


def _merge_conversation(insert: Any) -> Any:
    moved = sa.select(P("new", type_=TEXT), *(c[k] for k in _KEPT)).where(c.key == P("old"))
    new = insert(conversations).from_select(["key", *_KEPT], moved)
    x = new.excluded
    first = {k: sa.func.coalesce(c[k], x[k]) for k in (
        "contact_name", "account", "phone", "bsuid", "parent_bsuid", "username")}
    return new.on_conflict_do_update(index_elements=["key"], set_={
        **first,
        "last_message_at": greatest(sa.func.coalesce(c.last_message_at, 0),
                                    sa.func.coalesce(x.last_message_at, 0)),
        "message_count": c.message_count + x.message_count})


_MERGE_CONVERSATION = Query(_merge_conversation, "merge: conversation")
_DROP_CONVERSATION = Query(sa.delete(conversations).where(c.key == P("old")),
                           "merge: old conversation")
_MERGE_IDENTITIES = Query(sa.update(identities).values(person=P("new"))
                          .where(i.person == P("old")), "merge: identities")


async def merge(db: Connector, old: str, new: str, now: float) -> None:
    """File conversation `old` under `new`: messages, batches, CRM mappings, identities.

    Delivery states stay as they are (what was synced is not posted again); a CRM record
    already mapped to `new` wins over the one of `old`; batches held for `old` (e.g. "no
    phone number") are tried again at once.
    """
    for step in (_MERGE_MESSAGES, _MERGE_BATCHES, _MERGE_MAPPINGS, _DROP_MAPPINGS,
                 _MERGE_CONVERSATION, _DROP_CONVERSATION, _MERGE_IDENTITIES):
        await db.run(step, old=old, new=new, now=now)
