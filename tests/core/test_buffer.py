"""The durable outbox on real SQLite files."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from bridge.errors import BridgeError, LeaseLost, SchemaError
from bridge.model import StatusUpdate
from tests.backends import rows, sqlite_only
from tests.helpers import message

POLICY = Policy(max_attempts=3, retry_delay=lambda attempt: 0.0, held_delay=0.0)


def file_rows(path, sql, params=()):
    with sqlite3.connect(path) as db:
        return db.execute(sql, params).fetchall()


async def test_concurrent_duplicate_appends_store_one_row(buffer):
    results = await asyncio.gather(*[buffer.append([message(1)]) for _ in range(20)])
    assert sorted(results) == [0] * 19 + [1]
    assert await rows(buffer, "SELECT count(*) FROM messages") == [(1,)]


@sqlite_only  # group commit is the SQLite writer's; each PostgreSQL append commits alone
async def test_concurrent_appends_share_commits(buffer):
    await asyncio.gather(*[buffer.append([message(i)]) for i in range(200)])
    assert await buffer.count_messages() == 200
    assert buffer.stats["grouped_appends"] == 200
    assert buffer.stats["commits"] < 200


@sqlite_only  # the WAL file is SQLite's
async def test_commits_copy_the_wal_into_the_file_every_few_hundred_pages(buffer):
    """A commit copies the WAL into the file once it holds 300 pages,
    not SQLite's default 1000: a smaller copy inside a commit holds the webhooks waiting
    for the next group up for less time. ~8 MB appended, the -wal file stays near 1.2 MB
    (at 1000 pages it grows past 4 MB)."""
    await _append_texts(buffer, range(4000))
    assert await buffer.count_messages() == 4000
    wal = Path(f"{buffer.path}-wal").stat().st_size
    assert 0 < wal < 2 * 1024 * 1024, wal


@sqlite_only  # the WAL file is SQLite's
async def test_a_wal_grown_under_a_long_reader_is_cut_back_once_it_ends(buffer):
    """While another connection holds an old snapshot no checkpoint can reset the WAL, so
    it grows; once the reader ends, the next reset cuts the file back to 4 MiB instead of
    keeping its largest size until a restart."""
    wal = Path(f"{buffer.path}-wal")
    reader = sqlite3.connect(buffer.path)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM messages").fetchone()  # holds this snapshot
    try:
        await _append_texts(buffer, range(0, 3000))  # ~6 MB of rows
        grown = wal.stat().st_size
        assert grown > 8 * 1024 * 1024, grown
    finally:
        reader.rollback()
        reader.close()
    await _append_texts(buffer, range(3000, 4200))
    assert wal.stat().st_size <= 4 * 1024 * 1024 < grown


async def _append_texts(buffer, numbers) -> None:  # noqa: ANN001 - any Buffer
    text = "x" * 2000
    numbers = list(numbers)
    for start in range(0, len(numbers), 40):
        await asyncio.gather(*[buffer.append([message(n, f"+9198{n % 500:08d}", text=text)])
                               for n in numbers[start:start + 40]])


async def test_append_returns_after_its_rows_are_committed(buffer):
    await buffer.append([message(7)])
    # A separate connection sees the row: it was committed, not just queued.
    assert await rows(buffer, "SELECT provider_id FROM messages") == [("m7",)]


async def test_messages_round_trip_with_all_fields(buffer):
    original = message(3, reply_to="m1", extra={"forwarded": True}, raw={"id": "m3"})
    await buffer.append([original])
    (stored,) = await buffer.messages()
    assert stored.id is not None and stored.stored_at is not None
    for name in ("provider_id", "conversation", "kind", "text", "contact_name", "reply_to",
                 "extra", "raw", "direction"):
        assert getattr(stored, name) == getattr(original, name), name
    assert abs((stored.sent_at - original.sent_at).total_seconds()) < 1e-3


async def test_every_enabled_sink_gets_a_delivery_row(buffer):
    await buffer.install_sinks(["a", "b"])
    await buffer.append([message(1), message(2, "+14155550100")])
    assert await rows(buffer, "SELECT sink, count(*) FROM deliveries GROUP BY sink") == [
        ("a", 2), ("b", 2)]


async def test_claim_groups_conversations_oldest_first(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(2, minutes_ago=1), message(1, minutes_ago=5),
                         message(3, "+14155550100")])
    claims = await buffer.claim("crm", 100, 60)
    by_conv = {c.batch.conversation.key: [m.provider_id for m in c.batch.messages] for c in claims}
    assert by_conv == {"+919876543210": ["m1", "m2"], "+14155550100": ["m3"]}
    assert claims[0].batch.conversation.contact_name == "Asha"


async def test_interleaved_chats_are_batched_whole_not_cut_at_the_claim_limit(buffer):
    await buffer.install_sinks(["crm"])
    numbers = [f"+9198765432{i:02d}" for i in range(10)]
    await buffer.append([message(n, numbers[n % 10]) for n in range(100)])  # interleaved
    claims = await buffer.claim("crm", 20, 60)  # the oldest 20 rows span all 10 chats
    assert sum(len(c.messages) for c in claims) >= 20
    for claim in claims:  # every conversation it met comes whole: one activity each
        assert len(claim.messages) == 10
        assert {m.conversation for m in claim.messages} == {claim.batch.conversation.key}
    rest = await buffer.claim("crm", 1000, 60)
    keys = [c.batch.conversation.key for c in claims + rest]
    assert sorted(keys) == sorted(numbers)  # ten chats, ten batches, none cut in two


async def test_expired_lease_is_redelivered_as_uncertain(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    t0 = time.time()
    (first,) = await buffer.claim("crm", 100, lease=60, now=t0)
    assert await buffer.claim("crm", 100, 60, now=t0 + 59) == []  # leased: nobody else gets it
    (again,) = await buffer.claim("crm", 100, 60, now=t0 + 61)  # the lease has run out
    assert again.batch.key == first.batch.key
    assert again.batch.attempt == 2 and again.batch.uncertain
    with pytest.raises(LeaseLost):
        await buffer.complete(first, [Outcome.delivered()], POLICY)
    await buffer.complete(again, [Outcome.delivered()], POLICY)
    assert (await buffer.sinks())[0]["backlog"] == 0


async def test_retry_keeps_the_batch_fixed(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2)])
    (claim,) = await buffer.claim("crm", 100, 60)
    await buffer.complete(claim, [Outcome.retry("down")] * 2, POLICY)
    await buffer.append([message(3)])  # arrives meanwhile: must not join the fixed batch
    claims = await buffer.claim("crm", 100, 60)
    retried = next(c for c in claims if c.batch.key == claim.batch.key)
    assert [m.provider_id for m in retried.batch.messages] == ["m1", "m2"]
    assert len(claims) == 1  # m3 follows its chat's older batch, never beside or before it
    await buffer.complete(retried, [Outcome.delivered()] * 2, POLICY)
    (after,) = await buffer.claim("crm", 100, 60)
    assert [m.provider_id for m in after.batch.messages] == ["m3"]


async def test_failing_message_dead_letters_after_max_attempts_others_delivered(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2), message(3)])
    for _ in range(POLICY.max_attempts):
        (claim,) = await buffer.claim("crm", 100, 60)
        outcomes = [Outcome.retry("bad") if m.provider_id == "m2" else Outcome.delivered()
                    for m in claim.batch.messages]
        await buffer.complete(claim, outcomes, POLICY)
    assert await buffer.claim("crm", 100, 60) == []
    (dead,) = await buffer.dead_letters("crm")
    assert dead["provider_id"] == "m2"
    assert dead["reason"] == "gave up after 3 attempts: bad"
    assert await rows(buffer, "SELECT message_id, state FROM deliveries ORDER BY message_id") == [
        (1, "done"), (2, "dead"), (3, "done")]


async def test_rejected_goes_to_dead_letter_at_once_and_requeue_delivers(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 100, 60)
    await buffer.complete(claim, [Outcome.rejected("Invalid Input! Parameter: phone")], POLICY)
    assert [d["reason"] for d in await buffer.dead_letters()] == [
        "Invalid Input! Parameter: phone"]
    assert await buffer.requeue("crm") == 1
    (again,) = await buffer.claim("crm", 100, 60)
    # Same messages, same key: a post an earlier attempt may have made is found again.
    assert again.batch.key == claim.batch.key and again.batch.attempt == 1
    await buffer.complete(again, [Outcome.delivered()], POLICY)
    assert await buffer.dead_letters() == []


async def test_held_batch_takes_new_messages_and_is_not_dead_lettered(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    for _ in range(POLICY.max_attempts + 2):
        (claim,) = await buffer.claim("crm", 100, 60)
        await buffer.complete(claim, [Outcome.held("no lead")] * len(claim.batch.messages),
                              POLICY)
    await buffer.append([message(2)])
    (claim,) = await buffer.claim("crm", 100, 60)
    assert [m.provider_id for m in claim.batch.messages] == ["m1", "m2"]
    sink = (await buffer.sinks())[0]
    assert sink["held"] == 2 and sink["dead_letters"] == 0
    await buffer.complete(claim, [Outcome.held("no lead")] * 2, POLICY)
    (conv,) = await buffer.conversations("crm")
    assert conv["held_reason"] == "no lead" and conv["pending"] == 2


async def test_ledger_and_record_id_are_committed_with_the_ack(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 100, 60)
    claim.batch.remember(f"{claim.batch.key}:0", "activity-1")
    claim.batch.record_id = "lead-9"
    await buffer.complete(claim, [Outcome.retry("second part failed")], POLICY)
    (again,) = await buffer.claim("crm", 100, 60)
    assert again.batch.ledger == {f"{claim.batch.key}:0": "activity-1"}
    assert again.batch.conversation.record_id == "lead-9"


async def test_last_synced_is_recorded_per_conversation(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 100, 60)
    before = datetime.now(UTC)
    await buffer.complete(claim, [Outcome.delivered()], POLICY)
    (conv,) = await buffer.conversations("crm")
    assert conv["last_synced_at"] >= before - timedelta(seconds=1)


async def test_status_never_downgrades_and_failed_is_kept_apart(buffer):
    now = datetime.now(UTC)
    await buffer.append([], [StatusUpdate("test", "out1", "read", now)])
    await buffer.append([], [StatusUpdate("test", "out1", "delivered", now)])
    await buffer.append([], [StatusUpdate("test", "out1", "failed", now, errors=[{"code": 1}])])
    status = await buffer.status_of("test", "out1")
    assert status["status"] == "read"
    assert status["failed_at"] is not None and "1" in status["errors"]


async def test_status_for_unknown_message_is_kept(buffer):
    await buffer.append([], [StatusUpdate("test", "never-seen", "sent", datetime.now(UTC))])
    assert (await buffer.status_of("test", "never-seen"))["status"] == "sent"


async def test_backfill_queues_only_the_window_and_only_once(buffer):
    await buffer.append([message(1, minutes_ago=5 * 24 * 60), message(2, minutes_ago=60)])
    assert await buffer.install_sinks(["crm"]) == ["crm"]
    assert await buffer.needs_backfill("crm")
    assert await buffer.backfill("crm", time.time() - 3 * 86400) == 1
    assert not await buffer.needs_backfill("crm")
    assert await buffer.install_sinks(["crm"]) == []


async def test_reenabled_sink_gets_what_arrived_while_it_was_off(buffer):
    await buffer.install_sinks(["a", "b"])
    await buffer.install_sinks(["a"])  # b removed from the config
    await buffer.append([message(1)])
    await buffer.install_sinks(["a", "b"])
    assert await rows(buffer, "SELECT sink FROM deliveries ORDER BY sink") == [("a",), ("b",)]


async def test_prune_removes_only_settled_old_messages(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1), message(2), message(3)])
    (claim,) = await buffer.claim("crm", 100, 60)
    outcomes = {"m1": Outcome.delivered(), "m2": Outcome.rejected("x"), "m3": Outcome.retry("y")}
    await buffer.complete(claim, [outcomes[m.provider_id] for m in claim.batch.messages], POLICY)
    assert await buffer.prune(time.time() + 1) == 1
    assert await rows(buffer, "SELECT provider_id FROM messages ORDER BY id") == [("m2",), ("m3",)]


async def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "future.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version = 99")
    with pytest.raises(SchemaError, match="newer than this Chatbridge"):
        await Buffer.open(path)


async def test_schema_version_is_recorded_and_reopen_keeps_data(tmp_path):
    path = tmp_path / "b.db"
    buf = await Buffer.open(path)
    await buf.append([message(1)])
    await buf.close()
    buf = await Buffer.open(path)
    assert await buf.count_messages() == 1
    await buf.close()
    from bridge.buffer.migrations import VERSION

    assert file_rows(path, "PRAGMA user_version") == [(VERSION,)]


async def test_a_version_1_buffer_is_migrated_with_its_pending_deliveries(tmp_path):
    from bridge.buffer.legacy import M001_INITIAL
    from bridge.buffer.migrations import VERSION

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # a buffer as the first release left it
        db.executescript(M001_INITIAL + "PRAGMA user_version = 1;")
        db.execute("INSERT INTO sink_state (sink, installed_at, backfill_done_at)"
                   " VALUES ('crm', 1, 1)")
    buf = await Buffer.open(path)
    try:
        await buf.append([message(1)])
        (claim,) = await buf.claim("crm", 100, 60)
        assert [m.provider_id for m in claim.messages] == ["m1"]
    finally:
        await buf.close()
    assert file_rows(path, "PRAGMA user_version") == [(VERSION,)]


async def test_second_runner_on_one_file_is_refused(tmp_path):
    first = await Buffer.open(tmp_path / "b.db", runner=True)
    try:
        with pytest.raises(BridgeError, match="another bridge process"):
            await Buffer.open(tmp_path / "b.db", runner=True)
    finally:
        await first.close()
    again = await Buffer.open(tmp_path / "b.db", runner=True)
    await again.close()


async def test_new_runner_releases_leases_of_a_dead_one(tmp_path):
    buf = await Buffer.open(tmp_path / "b.db", runner=True)
    await buf.install_sinks(["crm"])
    await buf.append([message(1)])
    assert len(await buf.claim("crm", 100, lease=3600)) == 1
    await buf.close()
    buf = await Buffer.open(tmp_path / "b.db", runner=True)
    (claim,) = await buf.claim("crm", 100, 60)
    assert claim.batch.uncertain and claim.batch.attempt == 2
    await buf.close()


async def test_rows_keep_what_the_fast_encoder_refuses(buffer):
    """Integers beyond 64 bits and non-string keys take the json.dumps path, losslessly."""
    raw = {"big": 2**70, 7: "seven", "when": datetime(2026, 1, 2, tzinfo=UTC), "ok": "नमस्ते"}
    plain = {"ok": "नमस्ते", "n": 1.5, "when": raw["when"]}  # the orjson path
    await buffer.append([message(1, raw=raw), message(2, raw=plain)])
    first, second = await buffer.messages()
    assert first.raw == {"big": 2**70, "7": "seven", "when": "2026-01-02 00:00:00+00:00",
                         "ok": "नमस्ते"}
    assert second.raw == {"ok": "नमस्ते", "n": 1.5, "when": "2026-01-02 00:00:00+00:00"}


async def test_a_wider_backfill_leaves_a_waiting_live_message_live(buffer):
    old = [message(n, conversation=f"+9198765000{n:02}", minutes_ago=10 * 1440)
           for n in range(1, 4)]
    await buffer.append(old)
    await buffer.install_sinks(["crm"])
    assert await buffer.backfill("crm", time.time() - 3 * 86400) == 0
    await buffer.append([message(9)])  # a customer writes; the next sync is minutes away
    assert await buffer.backfill("crm", time.time() - 30 * 86400) == 3  # bridge backfill
    (claim,) = await buffer.claim("crm", 10, 60, backfill=False)
    assert [m.provider_id for m in claim.batch.messages] == ["m9"]


async def test_a_sinks_last_sync_never_moves_back(buffer):
    # two bridges on one PostgreSQL, one host's clock a little behind the other's
    await buffer.install_sinks(["crm"])
    now = time.time()
    await buffer.record_sync("crm", now, now + 180, None)
    await buffer.record_sync("crm", now - 30, now + 150, None)
    (state,) = await buffer.sinks()
    assert state["last_sync_at"].timestamp() == pytest.approx(now, abs=0.01)
