"""A source's one-off provider syncs (coexistence history) kept durably, on both engines."""

from __future__ import annotations

from bridge.buffer import SourceSyncs, SyncNote
from bridge.buffer.migrations import STEPS, upgrade


async def test_a_sync_is_requested_then_chunks_arrive_out_of_order_and_retried(buffer):
    assert isinstance(buffer, SourceSyncs)
    note = buffer.note_source_sync
    row = await note("whatsapp", "111", "history", SyncNote(
        state="requested", requested_at=1000.0, request_id="req-1"), now=1000.0)
    assert (row["state"], row["request_id"], row["progress"], row["chunks"]) == (
        "requested", "req-1", None, 0)
    await note("whatsapp", "111", "history", SyncNote(phase=1, chunk=2, progress=60,
                                                      messages=5), now=1001.0)
    await note("whatsapp", "111", "history", SyncNote(phase=0, chunk=1, progress=30,
                                                      messages=3), now=1002.0)
    row = await note("whatsapp", "111", "history", SyncNote(phase=1, chunk=2, progress=60,
                                                            messages=0), now=1003.0)  # a retry
    assert (row["state"], row["progress"], row["phase"], row["chunks"], row["messages"]) == (
        "arriving", 60, 1, 2, 8)
    row = await note("whatsapp", "111", "history", SyncNote(phase=2, chunk=1, progress=100,
                                                            messages=1), now=1004.0)
    assert (row["state"], row["progress"]) == ("done", 100)
    # a second request of a finished sync does not make it look pending again
    row = await note("whatsapp", "111", "history", SyncNote(state="requested"), now=1005.0)
    assert row["state"] == "done"
    await note("whatsapp", "222", "history", SyncNote(state="declined",
                                                      detail="turned off"), now=1006.0)
    rows = await buffer.source_syncs("whatsapp")
    assert [(r["account"], r["state"], r["requested_at"] is not None) for r in rows] == [
        ("111", "done", True), ("222", "declined", False)]
    assert rows[1]["detail"] == "turned off"
    assert await buffer.source_syncs("other") == []


async def test_upgrade_runs_numbered_steps_in_order_over_gaps():
    ran = []
    saved = dict(STEPS)
    try:
        STEPS.clear()
        for n in (12, 10, 15):
            async def step(db, n=n):
                ran.append(n)
            STEPS[n] = step
        await upgrade(None, 9)
        assert ran == [10, 12, 15]
        ran.clear()
        await upgrade(None, 10)
        assert ran == [12, 15]
    finally:
        STEPS.clear()
        STEPS.update(saved)
