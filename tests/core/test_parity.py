"""The two engines give the same answers: one history of webhooks, claims and outcomes
is played on an SQLite buffer and a PostgreSQL buffer, then every read the core makes is
asked of both and the answers compared whole, ordering included."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from plugins.whatsapp.parse import parse_payload
from tests.backends import POSTGRES, fresh_schema_url, needs_postgres
from tests.whatsapp import payloads as p

pytestmark = needs_postgres
POLICY = Policy(max_attempts=2, retry_delay=lambda attempt: 600.0, held_delay=900.0)
OTHER = "+14155550100"
ODD = "a\x00b \ud800 ’ नमस्ते \\ % _ ' \""  # NUL, a lone surrogate, quotes, LIKE signs


async def _store(buffer: Buffer, *changes: Any) -> None:
    parsed = parse_payload(p.envelope(*changes))
    await buffer.append(parsed.messages, parsed.statuses, parsed.contact_names,
                        parsed.identities)


async def _history(buffer: Buffer) -> None:
    """Webhooks of every shape, then claims and outcomes of each kind."""
    await buffer.install_sinks(["crm", "audit"])
    await _store(buffer, p.message_change(
        [p.text_message("wamid.1", p.CUSTOMER, "first", ts="1700000000"),
         {**p.image_message("wamid.2", p.CUSTOMER, caption=ODD), "timestamp": "1700000100"}],
        contacts=[p.contact(p.CUSTOMER, "Sheena Nelson", user_id=p.BSUID)]))
    await _store(buffer, p.message_change(
        [p.text_message("wamid.3", OTHER, ODD, ts="1700003700")],
        contacts=[p.contact(OTHER, ODD)]))
    await _store(buffer, p.message_change([p.group_text_message("wamid.g1",
                                                                timestamp="1700000050")]))
    await _store(buffer, p.echo_change([p.echo("wamid.o1", to=p.CUSTOMER, timestamp="1700000200")]))
    await _store(buffer, p.message_change(statuses=[
        p.failed_status("wamid.o1"), p.status("wamid.o1", "read")]))
    await buffer.append([], contacts={"+19995550123": "Contact only"})  # no message yet
    claims = await buffer.claim("crm", 10, 60, now=1_800_000_000)
    for claim in claims:
        if claim.batch.conversation.key == OTHER:
            outcomes = [Outcome.rejected(ODD) for _ in claim.messages]
        elif claim.batch.conversation.key.startswith("group:"):
            outcomes = [Outcome.held("no phone number") for _ in claim.messages]
        else:
            claim.batch.new_ledger[claim.batch.key + "#lead"] = "ACT-1"
            outcomes = [Outcome.delivered() for _ in claim.messages]
        await buffer.complete(claim, outcomes, POLICY, now=1_800_000_001)
    (audit, *_) = await buffer.claim("audit", 1, 60, now=1_800_000_002)
    await buffer.complete(audit, [Outcome.retry("busy") for _ in audit.messages], POLICY,
                          now=1_800_000_003)
    await buffer.record_sync("crm", 1_800_000_004, 1_800_000_184, ODD)


_VOLATILE = {"installed_at", "stored_at", "eta_seconds", "backfill_started_at", "id",
             "message_id", "ids", "message_ids", "batch_key", "key_of_batch"}


def _plain(value: Any) -> Any:
    """An answer with what differs by nature (wall-clock stamps, row ids) taken out."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, datetime):
        return value.timestamp()
    return value


async def _answers(buffer: Buffer) -> dict[str, Any]:
    found: dict[str, Any] = {
        "sinks": await buffer.sinks(),
        "messages": await buffer.messages(),
        "dead_letters": await buffer.dead_letters(),
        "dead_targets": await buffer.dead_targets(),
        "hourly": sorted((await buffer.hourly(0)).items()),
        "count": await buffer.count_messages(),
        "media": await buffer.media_counts(),
        "held": await buffer.held_chats("crm"),
        "failed_sends": await buffer.failed_sends(10),
        "people": await buffer.people_counts(),
        "status": await buffer.status_of("whatsapp", "wamid.o1"),
    }
    for sort in ("last_message", "last_synced", "pending"):
        for show in ("all", "held", "dead", "groups"):
            for search in (None, "sheena", "650", ODD[:3], "%"):
                found[f"list {sort} {show} {search!r}"] = await buffer.conversation_list(
                    "crm", sort=sort, show=show, search=search)
    for key in ("+16505551234", OTHER, f"group:{p.GROUP}", "+19995550123"):
        found[f"conversation {key}"] = await buffer.conversation(key)
    return _plain(found)


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_every_read_gives_the_same_answer_on_both_engines(tmp_path):
    answers = []
    lite = await Buffer.open(tmp_path / "b.db")
    try:
        await _history(lite)
        answers.append(await _answers(lite))
    finally:
        await lite.close()
    async with fresh_schema_url() as url:
        pg = await Buffer.open(url)
        try:
            await _history(pg)
            answers.append(await _answers(pg))
        finally:
            await pg.close()
    sqlite_answers, postgres_answers = answers
    assert sqlite_answers["count"] == 5
    assert sqlite_answers["dead_letters"] and sqlite_answers["held"]  # the history happened
    for name in sqlite_answers:
        assert postgres_answers[name] == sqlite_answers[name], name
