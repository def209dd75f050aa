"""The contact map: which phone numbers and BSUIDs are one person, and their conversation.

Runs inside the writer's group transaction (on SQLite, in the write connection's thread):
one SELECT of the keys a group mentions, one upsert of what changed, and a merge only
when a webhook shows two known conversations to be one person (rare).

A person's conversation key is a phone number (E.164) when one is known, else a BSUID.
When a phone is learned for a BSUID-only conversation, or two conversations turn out to
be one person (a number change), the messages, batches and CRM mappings move to one key;
deliveries keep their states, so nothing already synced is posted again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bridge.model import Identity, is_group

CHUNK = 500  # keys per SELECT (SQLite takes 32,766 parameters)


async def _select(db: Any, sql: str, params: Sequence[Any]) -> list[Any]:
    """Every row of one statement (db: sqlite, aiosqlite-like or PostgreSQL, see syncdb)."""
    async with db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


def _placeholders(n: int) -> str:
    """'?,?,?' for n values."""
    return ",".join("?" * n)


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


async def file_under_people(db: Any, identities: Iterable[Identity],
                      message_keys: Iterable[str], now: float
                      ) -> tuple[dict[str, str], Described]:
    """Learn `identities`; return each message key (and each identity key) -> its person's
    conversation key, and what to note on the conversations (`describe`, once their rows
    exist). Conversations found to be one person are merged here."""
    # the same person is named several times per webhook and per group: each fact once
    facts = [(i, i.keys) for i in dict.fromkeys(identities)]
    facts = [(i, keys) for i, keys in facts if keys]
    if not facts:  # the common case: only look the senders up
        keys = list(dict.fromkeys(k for k in message_keys if k and not is_group(k)))
        known = (await _known(db, keys))[0] if keys else {}
        new = [(key, key, now) for key in keys if key not in known]
        if new:  # a new person: their key is their conversation from now on
            await db.executemany("INSERT OR IGNORE INTO identities (key, person, seen_at)"
                           " VALUES (?, ?, ?)", new)
        return {key: person for key, (person, _) in known.items()}, []
    links = _Links()
    for _, keys in facts:
        links.join(keys)
    for key in message_keys:
        if key and not is_group(key):
            links.find(key)
    if not links.parent:
        return {}, []
    known, described = await _known(db, list(links.parent))
    for key, (person, _) in known.items():
        links.join([key, person])
    people = _people(links, facts)
    mapping: dict[str, str] = {}
    changed: list[tuple[str, str, float]] = []
    for person in people.values():
        target = _conversation_key(person, known)
        for old in _existing(person, known) - {target}:
            await merge(db, old, target, now)
        for key in person.keys:
            mapping[key] = target
            if known.get(key, (None,))[0] != target:
                changed.append((key, target, now))
    if changed:
        await db.executemany("INSERT INTO identities (key, person, seen_at) VALUES (?, ?, ?)"
                       " ON CONFLICT (key) DO UPDATE SET person = excluded.person", changed)
    rows = []
    for p in people.values():
        facts = (p.phone, p.user_id, p.parent_user_id, p.username)
        target = mapping[next(iter(p.keys))]
        noted = described.get(target, (None,) * 4)
        if any(new is not None and new != old for new, old in zip(facts, noted, strict=True)):
            rows.append((*facts, target))
    return mapping, rows


async def _known(db: Any, keys: list[str]
           ) -> tuple[dict[str, tuple[str, float]], dict[str, tuple[Any, ...]]]:
    """key -> (person, first seen); person -> (phone, user_id, parent, username) noted."""
    found: dict[str, tuple[str, float]] = {}
    described: dict[str, tuple[Any, ...]] = {}
    for start in range(0, len(keys), CHUNK):
        chunk = keys[start:start + CHUNK]
        marks = _placeholders(len(chunk))
        for key, person, seen, *noted in await _select(
                db, "SELECT i.key, i.person, i.seen_at, c.phone, c.bsuid, c.parent_bsuid,"
                " c.username FROM identities i LEFT JOIN conversations c ON c.key = i.person"
                f" WHERE i.key IN ({marks})", chunk):
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


def _existing(person: _Person, known: dict[str, tuple[str, float]]) -> set[str]:
    return {known[k][0] for k in person.keys if k in known}


def _conversation_key(person: _Person, known: dict[str, tuple[str, float]]) -> str:
    """An existing phone-keyed conversation (the oldest); else the person's phone; else an
    existing BSUID conversation (the oldest); else the person's BSUID."""
    existing = sorted(_existing(person, known),
                      key=lambda k: (known.get(k, ("", float("inf")))[1], k))
    phones = [k for k in existing if k.startswith("+")]
    if phones:
        return phones[0]
    phone = person.phone or next((k for k in person.keys if k.startswith("+")), None)
    if phone:
        return phone
    if existing:
        return existing[0]
    return person.user_id or next(iter(person.keys))


async def describe(db: Any, rows: Described) -> None:
    """Note the latest phone, BSUIDs and username on each person's conversation row."""
    if rows:
        await db.executemany(
            "UPDATE conversations SET phone = coalesce(?1, phone),"
            " bsuid = coalesce(?2, bsuid), parent_bsuid = coalesce(?3, parent_bsuid),"
            " username = coalesce(?4, username) WHERE key = ?5"
            " AND (?1 IS NOT phone AND ?1 IS NOT NULL OR ?2 IS NOT bsuid AND ?2 IS NOT NULL"
            " OR ?3 IS NOT parent_bsuid AND ?3 IS NOT NULL"
            " OR ?4 IS NOT username AND ?4 IS NOT NULL)", rows)


async def merge(db: Any, old: str, new: str, now: float) -> None:
    """File conversation `old` under `new`: messages, batches, CRM mappings, identities.

    Delivery states stay as they are (what was synced is not posted again); a CRM record
    already mapped to `new` wins over the one of `old`; batches held for `old` (e.g. "no
    phone number") are tried again at once.
    """
    await db.execute("UPDATE messages SET conversation = ? WHERE conversation = ?", (new, old))
    await db.execute("UPDATE batches SET conversation = ?1,"
               " next_attempt_at = CASE WHEN held = 1 THEN min(next_attempt_at, ?3)"
               " ELSE next_attempt_at END WHERE conversation = ?2", (new, old, now))
    await db.execute(
        "INSERT INTO sink_conversations (sink, conversation, record_id, last_synced_at,"
        " last_error, held_reason) SELECT sink, ?, record_id, last_synced_at, last_error,"
        " NULL FROM sink_conversations WHERE conversation = ? AND true"
        " ON CONFLICT (sink, conversation) DO UPDATE SET"
        " record_id = coalesce(sink_conversations.record_id, excluded.record_id),"
        " last_synced_at = max(coalesce(sink_conversations.last_synced_at, 0),"
        " coalesce(excluded.last_synced_at, 0))", (new, old))
    await db.execute("DELETE FROM sink_conversations WHERE conversation = ?", (old,))
    await db.execute(
        "INSERT INTO conversations (key, contact_name, account, last_message_at, message_count,"
        " kind, phone, bsuid, parent_bsuid, username, group_id)"
        " SELECT ?, contact_name, account, last_message_at, message_count, kind, phone, bsuid,"
        " parent_bsuid, username, group_id FROM conversations WHERE key = ? AND true"
        " ON CONFLICT (key) DO UPDATE SET"
        " contact_name = coalesce(conversations.contact_name, excluded.contact_name),"
        " account = coalesce(conversations.account, excluded.account),"
        " last_message_at = max(coalesce(conversations.last_message_at, 0),"
        " coalesce(excluded.last_message_at, 0)),"
        " message_count = conversations.message_count + excluded.message_count,"
        " phone = coalesce(conversations.phone, excluded.phone),"
        " bsuid = coalesce(conversations.bsuid, excluded.bsuid),"
        " parent_bsuid = coalesce(conversations.parent_bsuid, excluded.parent_bsuid),"
        " username = coalesce(conversations.username, excluded.username)", (new, old))
    await db.execute("DELETE FROM conversations WHERE key = ?", (old,))
    await db.execute("UPDATE identities SET person = ? WHERE person = ?", (new, old))
