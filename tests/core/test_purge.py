"""Erasure of one person from the buffer: `Buffer.purge_person` and `bridge purge`."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys

import pytest

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from plugins.whatsapp.parse import parse_payload
from tests.backends import rows
from tests.whatsapp import payloads as p

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)
PHONE, OTHER = "+16505551234", "+14155550100"


async def store(buffer, *changes) -> None:
    parsed = parse_payload(p.envelope(*changes))
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def seed(buffer) -> None:
    """Sheena (phone + BSUID, a photo, a group message, a status) and another customer."""
    await buffer.install_sinks(["crm"])
    await store(buffer, p.message_change(
        [p.text_message("wamid.1"), p.image_message("wamid.2")],
        contacts=[p.contact(p.CUSTOMER, "Sheena", user_id=p.BSUID)]))
    await store(buffer, p.message_change([p.bsuid_text_message("wamid.3")], contacts=[]))
    await store(buffer, p.message_change([p.group_text_message("wamid.g1", from_=p.CUSTOMER),
                                          p.group_text_message("wamid.g2", from_="14155550100")]))
    await store(buffer, p.message_change([p.text_message("wamid.9", "14155550100", "other")]))
    await store(buffer, p.message_change(statuses=[p.status("wamid.api", recipient=p.CUSTOMER)]))
    for claim in await buffer.claim("crm", 100, 60):
        claim.batch.record_id = "lead-" + claim.batch.conversation.key
        await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)


async def test_purge_by_user_id_removes_every_trace_of_the_person_only(buffer):
    await seed(buffer)
    found = await buffer.purge_person(user_id=p.BSUID)
    assert (found["person"], found["messages"], found["media"], found["statuses"],
            found["identities"], found["crm_mappings"]) == (PHONE, 4, 1, 1, 2, 1)
    assert await rows(buffer, "SELECT provider_id FROM messages ORDER BY provider_id") == [
        ("wamid.9",), ("wamid.g2",)]
    assert await rows(buffer, "SELECT key FROM identities WHERE key = 'US.13491208655302741918'"
                             " OR person = '+16505551234'") == []
    assert await rows(buffer, "SELECT conversation FROM sink_conversations ORDER BY 1") == [
        (OTHER,), (f"group:{p.GROUP}",)]
    assert await rows(buffer, "SELECT count(*) FROM statuses") == [(0,)]
    assert await rows(buffer, "SELECT count(*) FROM deliveries d WHERE NOT EXISTS"
                             " (SELECT 1 FROM messages m WHERE m.id = d.message_id)") == [(0,)]


async def test_dry_run_counts_and_keeps_everything(buffer):
    await seed(buffer)
    before = await rows(buffer, "SELECT count(*) FROM messages")
    found = await buffer.purge_person(phone=PHONE, dry_run=True)
    assert found["messages"] == 4 and found["dry_run"] is True
    assert await rows(buffer, "SELECT count(*) FROM messages") == before


async def test_purge_needs_exactly_one_key(buffer):
    with pytest.raises(ValueError, match="exactly one"):
        await buffer.purge_person()


def bridge(*args):
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60)


def test_bridge_purge_command_says_what_it_removed(tmp_path):
    db = tmp_path / "b.db"

    async def prepare() -> None:
        buffer = await Buffer.open(db)
        try:
            await seed(buffer)
        finally:
            await buffer.close()

    asyncio.run(prepare())
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")
    dry = bridge("purge", "-c", str(config), "--phone", "+1 650 555 1234", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would remove" in dry.stdout and "4 message(s)" in dry.stdout
    assert "the CRM was not changed" in dry.stdout
    done = bridge("purge", "-c", str(config), "--phone", "+16505551234")
    assert done.returncode == 0 and "removed" in done.stdout and "4 message(s)" in done.stdout
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchall() == [(2,)]
    bad = bridge("purge", "-c", str(config), "--phone", "6505551234")
    assert bad.returncode == 2 and "--phone" in bad.stderr and "E.164" in bad.stderr


async def test_the_page_purge_of_a_conversation_erases_the_whole_person(buffer):
    await seed(buffer)
    assert await buffer.purge(PHONE) == 4  # the admin page's call: by conversation key
    assert await rows(buffer, "SELECT key FROM identities ORDER BY key") == [(OTHER,)]
    assert await rows(buffer, "SELECT provider_id FROM messages ORDER BY provider_id") == [
        ("wamid.9",), ("wamid.g2",)]


async def test_purging_the_new_holder_of_a_recycled_number_keeps_the_earlier_holder(buffer):
    from datetime import UTC, datetime

    from bridge.model import Direction, Identity, Message

    def said(i: int, text: str) -> Message:
        return Message(source="whatsapp", provider_id=f"r{i}", conversation=PHONE,
                       account="PN-A", direction=Direction.IN, kind="text", text=text,
                       sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC))

    await buffer.install_sinks(["crm"])
    await buffer.append([said(1, "earlier holder")],
                        identities=[Identity(phone=PHONE, user_id="IN.EARLIER")])
    await buffer.append([said(2, "new holder")],  # the number, recycled
                        identities=[Identity(phone=PHONE, user_id="IN.NEW")])
    found = await buffer.purge_person(user_id="IN.NEW")
    assert found["messages"] == 1 and found["conversations"] == 1
    earlier = await buffer.conversation(PHONE)
    assert earlier is not None
    assert [m["message"].text for m in earlier["messages"]] == ["earlier holder"]
    assert await buffer.conversation("IN.NEW") is None
    # the number names the earlier holder's chat again: a next holder is told apart
    assert await rows(buffer, "SELECT key, person FROM identities ORDER BY key") == [
        (PHONE, PHONE), ("IN.EARLIER", PHONE)]
    await buffer.append([said(3, "a third holder")],
                        identities=[Identity(phone=PHONE, user_id="IN.THIRD")])
    assert [m["message"].text for m in (await buffer.conversation(PHONE))["messages"]] == [
        "earlier holder"]


async def test_purging_the_earlier_holder_of_a_recycled_number_keeps_the_new_holder(buffer):
    from datetime import UTC, datetime

    from bridge.model import Direction, Identity, Message

    def said(i: int, text: str) -> Message:
        return Message(source="whatsapp", provider_id=f"r{i}", conversation=PHONE,
                       account="PN-A", direction=Direction.IN, kind="text", text=text,
                       sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC))

    await buffer.install_sinks(["crm"])
    await buffer.append([said(1, "earlier holder")],
                        identities=[Identity(phone=PHONE, user_id="IN.EARLIER")])
    await buffer.append([said(2, "new holder")],
                        identities=[Identity(phone=PHONE, user_id="IN.NEW")])
    found = await buffer.purge_person(user_id="IN.EARLIER")
    assert found["messages"] == 1
    assert await buffer.conversation(PHONE) is None
    assert await rows(buffer, "SELECT key, person FROM identities ORDER BY key") == [
        (PHONE, "IN.NEW"), ("IN.NEW", "IN.NEW")]
    await buffer.append([said(3, "the number alone")])  # still the new holder's
    new = await buffer.conversation("IN.NEW")
    assert [m["message"].text for m in new["messages"]] == ["new holder", "the number alone"]


@pytest.mark.parametrize("typed", ["+5215512345678", "+52 1 55 1234 5678", "+525512345678"])
def test_a_mexican_number_is_purged_as_whatsapp_shows_it_too(tmp_path, typed):
    """WhatsApp shows a Mexican mobile as 521 + 10 digits (its wa_id, reference §14); the
    bridge stores it as +52 + 10 digits. An erasure request quoting the number as WhatsApp
    shows it finds the person (before: refused as 'expected E.164')."""
    db = tmp_path / "b.db"

    async def prepare() -> None:
        buffer = await Buffer.open(db)
        try:
            parsed = parse_payload(p.envelope(p.message_change(
                [p.text_message("wamid.mx1", "5215512345678", "hola")])))
            await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                                parsed.identities)
            assert await rows(buffer, "SELECT key FROM conversations") == [("+525512345678",)]
        finally:
            await buffer.close()

    asyncio.run(prepare())
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")
    done = bridge("purge", "-c", str(config), "--phone", typed)
    assert done.returncode == 0, done.stderr
    assert "for +525512345678: 1 message(s)" in done.stdout
