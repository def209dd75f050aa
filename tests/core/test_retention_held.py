"""Retention prunes only what is safely delivered: history held as older than a sink's
backfill_days is stored, not posted, and stays until a backfill posts it (adv38)."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from bridge.buffer import Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Message
from tests.backends import rows

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)


def _history(days: float, now: float) -> Message:
    return Message(source="whatsapp", provider_id=f"h{days:g}", conversation="+919000000001",
                   account="PN-A", direction=Direction.IN, kind="text", text=f"{days:g} days",
                   sent_at=datetime.fromtimestamp(now - days * 86400, UTC), history=True)


async def test_history_held_past_backfill_days_outlives_the_retention_prune(buffer):
    await buffer.install_sinks(["crm"])
    now = time.time()
    await buffer.append([_history(10, now), _history(1, now)])
    for claim in await buffer.claim("crm", 10, 60, history_days=3):  # h10 held, h1 posted
        await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    # the retention (30 days) passes: the delivered message goes, the held one stays
    assert await buffer.prune(now + 31 * 86400) == 1
    assert await rows(buffer, "SELECT provider_id FROM messages") == [("h10",)]
    # as its reason promises, a backfill reaching back to it posts it
    assert await buffer.backfill("crm", now - 11 * 86400) == 1
    claimed = await buffer.claim("crm", 10, 60, history_days=3)
    assert [m.provider_id for c in claimed for m in c.messages] == ["h10"]


async def test_a_photo_whose_file_has_not_come_outlives_the_retention_prune(buffer, tmp_path):
    """Its text landed (delivered), its attachment waits for the file (a Graph outage, the
    source held for a month): the prune keeps the message and its media job, so the file
    is still fetched and attached once it comes."""
    from bridge import WAITING_FOR_FILE
    from tests.leadsquared.test_attachments import fetch
    from tests.whatsapp.test_media import media_message

    buffer.media_sources = {"whatsapp": None}
    await buffer.install_sinks(["crm"])
    await buffer.append([media_message(1, "m-1")])
    (claim,) = await buffer.claim("crm", 10, 60)
    (photo,) = claim.messages
    part = f"{claim.batch.key}:{photo.provider_id}:0"
    claim.batch.remember(part, "activity-1")
    claim.batch.fail_target(f"{part}#file{photo.id}", "attachment",
                            f"{WAITING_FOR_FILE}: it follows once fetched", [photo.id], 50,
                            final=True)
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    assert await buffer.prune(time.time() + 31 * 86400) == 0
    await fetch(buffer, tmp_path, b"the bill")  # the file comes: its attach re-opens
    (again,) = await buffer.claim("crm", 10, 60)
    assert [(m.provider_id, m.file.state) for m in again.messages] == [("wamid.1", "fetched")]


async def test_a_dead_target_keeps_its_messages_past_the_retention_for_its_requeue(buffer):
    """The lead's note landed, the deal's post was refused (a dead target, listed as a
    dead letter): a month on, its requeue still finds the message to post."""
    await buffer.install_sinks(["crm"])
    await buffer.append([Message(
        source="whatsapp", provider_id="w1", conversation="+919000000001", account="PN-A",
        direction=Direction.IN, kind="text", text="hello", sent_at=datetime.now(UTC))])
    (claim,) = await buffer.claim("crm", 10, 60)
    (said,) = claim.messages
    part = f"{claim.batch.key}:{said.provider_id}:0"
    claim.batch.remember(part, "activity-1")
    claim.batch.fail_target(f"{part}@OPP-1", "opportunity OPP-1", "refused: deal closed",
                            [said.id], 50, final=True)
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    assert await buffer.prune(time.time() + 31 * 86400) == 0
    assert await buffer.requeue("crm") == 1
    (again,) = await buffer.claim("crm", 10, 60)
    assert [m.provider_id for m in again.messages] == ["w1"]
