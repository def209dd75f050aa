"""The SQLite writer remembers who its senders are between groups (identity.KnownKeys),
and forgets as soon as anything else may have changed the contact map."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa

from bridge.buffer import Buffer
from bridge.buffer.compiler import P, Query
from bridge.buffer.tables import identities
from plugins.whatsapp.parse import parse_payload
from tests.backends import rows
from tests.whatsapp import payloads as p

PHONE = "+16505551234"
OTHER = "US.13491208655302741918"
MOVE = Query(sa.update(identities).values(person=P("person")).where(
    identities.c.key == P("key")), "test: move a key")


async def store(buffer, mid: str) -> None:  # noqa: ANN001
    """A webhook that names its sender by number alone (it links no keys)."""
    parsed = parse_payload(p.envelope(p.message_change(
        [p.text_message(mid, p.CUSTOMER, "hi")], contacts=[p.contact(p.CUSTOMER, "Sheena")])))
    assert parsed.identities == []  # the writer's lookup path, not the learning one
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def filed(buffer) -> list[tuple]:  # noqa: ANN001
    return await rows(buffer, "SELECT provider_id, conversation FROM messages ORDER BY id")


async def test_a_sender_another_process_moved_is_filed_under_the_new_person(tmp_path):
    buffer = await Buffer.open(tmp_path / "b.db", runner=True)
    try:
        await store(buffer, "wamid.1")
        await store(buffer, "wamid.2")  # the sender's key is read, and remembered, here
        other = sqlite3.connect(tmp_path / "b.db")  # e.g. a CLI command's connection
        with other:
            other.execute("UPDATE identities SET person = ? WHERE key = ?", (OTHER, PHONE))
        other.close()
        await store(buffer, "wamid.3")
        assert await filed(buffer) == [
            ("wamid.1", PHONE), ("wamid.2", PHONE), ("wamid.3", OTHER)]
    finally:
        await buffer.close()


async def test_a_sender_another_transaction_moved_is_filed_under_the_new_person(tmp_path):
    buffer = await Buffer.open(tmp_path / "b.db", runner=True)
    try:
        await store(buffer, "wamid.1")
        await store(buffer, "wamid.2")
        await buffer.write(lambda db: db.run(MOVE, key=PHONE, person=OTHER))
        await store(buffer, "wamid.3")
        assert await filed(buffer) == [
            ("wamid.1", PHONE), ("wamid.2", PHONE), ("wamid.3", OTHER)]
    finally:
        await buffer.close()


async def test_a_sender_seen_again_is_filed_as_before_and_learned_once(tmp_path):
    buffer = await Buffer.open(tmp_path / "b.db", runner=True)
    try:
        for n in range(4):
            await store(buffer, f"wamid.{n}")
        assert await filed(buffer) == [(f"wamid.{n}", PHONE) for n in range(4)]
        assert await rows(buffer, "SELECT key, person FROM identities") == [(PHONE, PHONE)]
    finally:
        await buffer.close()
