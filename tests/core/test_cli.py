"""`bridge status` and `bridge dead-letter` against a real buffer file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from tests.helpers import message

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)


def bridge(*args):
    return subprocess.run([sys.executable, "-m", "bridge", *args], capture_output=True,
                          text=True, timeout=60)


async def seed(path):
    buffer = await Buffer.open(path)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2, "+14155550100")])
    for claim in await buffer.claim("crm", 100, 60):
        outcome = (Outcome.rejected("MXInvalidInputException: Invalid phone")
                   if claim.batch.conversation.key == "+14155550100" else Outcome.delivered())
        await buffer.complete(claim, [outcome], POLICY)
    await buffer.close()


def test_status_and_dead_letter_commands(tmp_path):
    db = tmp_path / "b.db"
    asyncio.run(seed(db))
    config = tmp_path / "config.yaml"
    config.write_text(f"buffer: {{path: {db}}}\n")

    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    (sink,) = report["sinks"]
    assert (sink["sink"], sink["backlog"], sink["dead_letters"]) == ("crm", 0, 1)
    synced = {c["key"]: c["last_synced_at"] for c in sink["conversations"]}
    assert synced["+919876543210"] is not None and synced["+14155550100"] is None

    text = bridge("status", "-c", str(config)).stdout
    assert "sink crm" in text and "dead letter 1" in text

    listed = bridge("dead-letter", "list", "-c", str(config)).stdout
    assert "+14155550100" in listed and "MXInvalidInputException: Invalid phone" in listed

    requeued = bridge("dead-letter", "requeue", "-c", str(config), "--sink", "crm")
    assert "requeued 1 message(s)" in requeued.stdout
    report = json.loads(bridge("status", "-c", str(config), "--json").stdout)
    assert (report["sinks"][0]["backlog"], report["sinks"][0]["dead_letters"]) == (1, 0)


def test_settle_heap_freezes_startup_objects_and_raises_the_young_threshold():
    import gc

    from bridge.cli import GC_YOUNG_THRESHOLD, settle_heap

    before = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
