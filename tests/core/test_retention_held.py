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
