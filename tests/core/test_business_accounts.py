"""A conversation is a customer and a business number (issue 26, schema 13).

Each business account's chat with a customer is batched apart (its own transcript, its
own key); buffers made by the code before (schema 10), with batches pending and half
delivered, upgrade in place and deliver every message once, old batches under their old
keys."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Message
from tests.backends import POSTGRES, fresh_schema_url, rows
from tests.core.test_schema import _old_code

# The last commit before schema 13: batches held every account's messages of a customer.
BEFORE_13 = "5be8972dc9a86999d913c18c0c305d5f5ad8639f"
POLICY = Policy(max_attempts=5, retry_delay=lambda attempt: 60.0, held_delay=60.0)

OLD_SCRIPT = """
import asyncio, json, sys
from datetime import UTC, datetime
from bridge.buffer import Buffer, Policy
from bridge.contracts import Outcome
from bridge.model import Direction, Message

def message(i, customer, account):
    return Message(source="whatsapp", provider_id=f"m{i}", conversation=customer,
                   account=account, direction=Direction.IN,
                   sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC),
                   kind="text", text=f"text {i}")

async def main(target):
    buffer = await Buffer.open(target, runner=True)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, "+919000000001", "PN-A"),
                         message(2, "+919000000001", "PN-B"),
                         message(3, "+919000000002", "PN-A")])
    claims = {c.batch.conversation.key: c for c in
              await buffer.claim("crm", 10, 3600, now=1_800_000_000)}
    policy = Policy(max_attempts=5, retry_delay=lambda attempt: 60.0, held_delay=60.0)
    mixed = claims["+919000000001"]
    # half delivered: m1's note landed (in the ledger), m2's failed and waits to retry
    mixed.batch.remember(mixed.batch.key + ":m1:0", "ACT-1")
    await buffer.complete(mixed, [Outcome.delivered(), Outcome.retry("busy")], policy,
                          now=1_800_000_001)
    # claims["+919000000002"] stays leased: its answer was never recorded
    await buffer.append([message(4, "+919000000001", "PN-A"),
                         message(5, "+919000000001", "PN-B")])  # waiting, not batched
    await buffer.close()
    print(json.dumps({k: c.batch.key for k, c in claims.items()}))

asyncio.run(main(sys.argv[1]))
"""


def _make_old(tmp_path: Path, target: str) -> dict[str, str]:
    """A buffer made by the code before schema 13; the keys of its batches."""
    env = {**os.environ, "PYTHONPATH": str(_old_code(tmp_path, BEFORE_13))}
    done = subprocess.run([sys.executable, "-c", OLD_SCRIPT, target], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


async def _drain_all(buffer: Buffer) -> list[tuple[str, str | None, list[str], dict]]:
    """Claim and deliver until nothing is left: (key, account, provider ids, ledger) each."""
    seen = []
    now = 1_900_000_000
    for _ in range(10):
        claimed = await buffer.claim("crm", 10, 60, now=now)
        for claim in claimed:
            batch = claim.batch
            seen.append((batch.key, batch.account, [m.provider_id for m in claim.messages],
                         dict(batch.ledger)))
            await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY,
                                  now=now + 1)
        now += 100
    return seen


async def _check_upgraded(buffer: Buffer, old_keys: dict[str, str]) -> None:
    seen = await _drain_all(buffer)
    delivered = [pid for _, _, ids, _ in seen for pid in ids]
    assert sorted(delivered) == ["m2", "m3", "m4", "m5"]  # m1 was delivered before: not again
    by_ids = {tuple(ids): (key, account, ledger) for key, account, ids, ledger in seen}
    # the half-delivered batch: its old key, its ledger (m1's note), nothing regrouped
    key, account, ledger = by_ids[("m2",)]
    assert key == old_keys["+919000000001"] and account is None
    assert ledger == {key + ":m1:0": "ACT-1"}
    # the batch whose lease ran out: old key, its one account noted
    assert by_ids[("m3",)][:2] == (old_keys["+919000000002"], "PN-A")
    # new messages: one batch per business number, new keys
    assert by_ids[("m4",)][1] == "PN-A" and by_ids[("m5",)][1] == "PN-B"
    assert len({key for key, *_ in seen}) == 4
    assert await buffer.claim("crm", 10, 60, now=2_000_000_000) == []


async def test_an_sqlite_buffer_of_schema_10_upgrades_and_delivers_each_message_once(tmp_path):
    path = tmp_path / "old.db"
    old_keys = _make_old(tmp_path, str(path))
    buffer = await Buffer.open(path, runner=True)
    try:
        await _check_upgraded(buffer, old_keys)
    finally:
        await buffer.close()
    assert await rows(buffer, "SELECT account FROM messages ORDER BY id") == [
        ("PN-A",), ("PN-B",), ("PN-A",), ("PN-A",), ("PN-B",)]


@pytest.mark.skipif(not POSTGRES, reason="needs PostgreSQL")
async def test_a_postgres_buffer_of_schema_10_upgrades_and_delivers_each_message_once(tmp_path):
    async with fresh_schema_url() as url:
        old_keys = _make_old(tmp_path, url)
        buffer = await Buffer.open(url)
        try:
            await _check_upgraded(buffer, old_keys)
        finally:
            await buffer.close()


def _message(i: int, customer: str, account: str) -> Message:
    return Message(source="whatsapp", provider_id=f"n{i}", conversation=customer,
                   account=account, direction=Direction.IN,
                   sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC), kind="text",
                   text=f"text {i}")


async def test_a_customer_writing_to_two_numbers_makes_two_batches(buffer):
    await buffer.install_sinks(["crm"])
    await buffer.append([_message(1, "+919000000001", "PN-A"),
                         _message(2, "+919000000001", "PN-B"),
                         _message(3, "+919000000001", "PN-A")])
    claimed = []
    for _ in range(3):  # one customer's batches go one after the other (one lead)
        for claim in await buffer.claim("crm", 10, 60):
            claimed.append(claim)
            await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    got = [(c.batch.account, c.batch.conversation.account,
            [m.provider_id for m in c.messages]) for c in claimed]
    assert got == [("PN-A", "PN-A", ["n1", "n3"]), ("PN-B", "PN-B", ["n2"])]
    assert len({c.batch.key for c in claimed}) == 2


async def test_history_older_than_the_window_is_held_until_a_backfill_covers_it(buffer):
    import time

    await buffer.install_sinks(["crm"])
    now = time.time()
    old = [Message(source="whatsapp", provider_id=f"h{days}", conversation="+919000000001",
                   account="PN-A", direction=Direction.IN, kind="text", text=f"{days} days",
                   sent_at=datetime.fromtimestamp(now - days * 86400, UTC), history=True)
           for days in (10, 5, 1)]
    await buffer.append(old)
    claimed = await buffer.claim("crm", 10, 60, history_days=3)
    assert [m.provider_id for c in claimed for m in c.messages] == ["h1"]
    skipped = await rows(buffer, "SELECT message_id, reason FROM deliveries "
                                 "WHERE state = 'skipped' ORDER BY message_id")
    assert len(skipped) == 2 and all(r.startswith(
        "history older than the sink's backfill_days (3 days)") for _, r in skipped)
    (sink,) = await buffer.sinks()  # held ones are no part of a backfill's progress
    assert sink["backfill"]["messages_total"] == 1
    for claim in claimed:
        await buffer.complete(claim, [Outcome.delivered()] * len(claim.messages), POLICY)
    assert await buffer.backfill("crm", now - 7 * 86400) == 1  # reaches h5, not h10
    claimed = await buffer.claim("crm", 10, 60, history_days=3)  # not held again
    assert [m.provider_id for c in claimed for m in c.messages] == ["h5"]


def _said(i: int, key: str, kind: str = "text", **more) -> Message:
    return Message(source="whatsapp", provider_id=f"i{i}", conversation=key, account="PN-A",
                   direction=Direction.IN, kind=kind, text=f"text {i}",
                   sent_at=datetime.fromtimestamp(1_700_000_000 + 60 * i, UTC), **more)


async def test_two_bsuids_on_one_number_are_two_people(buffer):
    from bridge.model import Identity

    await buffer.append([_said(1, "+919000000001")],
                        identities=[Identity(phone="+919000000001", user_id="IN.Y")])
    await buffer.append([_said(2, "+919000000001")],  # the number, recycled
                        identities=[Identity(phone="+919000000001", user_id="IN.X")])
    await buffer.append([_said(3, "+919000000001")])  # the number alone: its holder now
    y, x = await buffer.conversation("+919000000001"), await buffer.conversation("IN.X")
    assert [m["message"].text for m in y["messages"]] == ["text 1"]
    assert [m["message"].text for m in x["messages"]] == ["text 2", "text 3"]
    assert x["person"]["bsuid"] == "IN.X" and y["person"]["bsuid"] == "IN.Y"


async def test_a_user_id_change_links_old_and_new_from_extra_or_the_raw_fields(buffer):
    from bridge.model import Identity

    await buffer.append([_said(1, "+919000000001")],
                        identities=[Identity(phone="+919000000001", user_id="IN.OLD")])
    await buffer.append([_said(2, "+919000000001", kind="system",
                               extra={"user_id_change": {"old": "IN.OLD", "new": "IN.NEW"}})])
    await buffer.append([_said(3, "+919000000001", kind="system", raw={
        "from_user_id": "IN.NEW", "system": {"type": "user_changed_user_id",
                                             "previous_user_id": "IN.NEW",
                                             "user_id": "IN.NEWER"}})])
    await buffer.append([_said(4, "+919000000001")],
                        identities=[Identity(phone="+919000000001", user_id="IN.NEWER")])
    await buffer.append([_said(5, "IN.NEW")])
    person = await buffer.conversation("+919000000001")
    assert [m["message"].text for m in person["messages"]] == [f"text {i}" for i in range(1, 6)]
    assert await buffer.conversation("IN.NEWER") is None


async def test_the_new_holder_of_a_number_stays_apart_message_after_message(buffer):
    from bridge.model import Identity

    await buffer.append([_said(1, "+919000000001")],
                        identities=[Identity(phone="+919000000001", user_id="IN.Y")])
    for i in (2, 3):  # every webhook of the new holder shows the number and their BSUID
        await buffer.append([_said(i, "+919000000001")],
                            identities=[Identity(phone="+919000000001", user_id="IN.X")])
    await buffer.append([_said(4, "+919000000001", kind="system",  # then their id changes
                               extra={"user_id_change": {"old": "IN.X", "new": "IN.X2"}})],
                        identities=[Identity(phone="+919000000001", user_id="IN.X2")])
    await buffer.append([_said(5, "+919000000001")],
                        identities=[Identity(phone="+919000000001", user_id="IN.X2")])
    y, x = await buffer.conversation("+919000000001"), await buffer.conversation("IN.X")
    assert [m["message"].text for m in y["messages"]] == ["text 1"]
    assert y["person"]["bsuid"] == "IN.Y"
    assert [m["message"].text for m in x["messages"]] == [f"text {i}" for i in (2, 3, 4, 5)]


async def test_history_a_backfill_opened_stays_open_after_a_shorter_backfill(buffer):
    import time

    await buffer.install_sinks(["crm"])
    now = time.time()
    await buffer.append([Message(source="whatsapp", provider_id="h10", conversation="+919000000001",
                                 account="PN-A", direction=Direction.IN, kind="text", text="old",
                                 sent_at=datetime.fromtimestamp(now - 10 * 86400, UTC),
                                 history=True)])
    assert await buffer.claim("crm", 10, 60, history_days=3) == []  # held
    assert await buffer.backfill("crm", now - 30 * 86400) == 1  # a person asks for 30 days
    await buffer.backfill("crm", now - 2 * 86400)  # and then for 2, before any drain ran
    claimed = await buffer.claim("crm", 10, 60, history_days=3)
    assert [m.provider_id for c in claimed for m in c.messages] == ["h10"]


DEAD_SCRIPT = OLD_SCRIPT.split("async def main")[0] + """
async def main(target):
    buffer = await Buffer.open(target, runner=True)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1, "+919000000001", "PN-A"),
                         message(2, "+919000000001", "PN-B")])
    (claim,) = await buffer.claim("crm", 10, 3600, now=1_800_000_000)
    policy = Policy(max_attempts=5, retry_delay=lambda attempt: 60.0, held_delay=60.0)
    await buffer.complete(claim, [Outcome.rejected("no")] * 2, policy, now=1_800_000_001)
    await buffer.close()
    print(json.dumps({"key": claim.batch.key}))

asyncio.run(main(sys.argv[1]))
"""


async def test_dead_letters_of_a_schema_10_buffer_requeued_go_one_batch_per_number(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(_old_code(tmp_path, BEFORE_13))}
    path = tmp_path / "old.db"
    done = subprocess.run([sys.executable, "-c", DEAD_SCRIPT, str(path)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    old_key = json.loads(done.stdout.strip().splitlines()[-1])["key"]
    buffer = await Buffer.open(path, runner=True)
    try:
        assert await buffer.requeue("crm") == 2
        seen = await _drain_all(buffer)
    finally:
        await buffer.close()
    assert sorted((account, ids) for _, account, ids, _ in seen) == [
        ("PN-A", ["m1"]), ("PN-B", ["m2"])]
    assert old_key not in {key for key, *_ in seen}


async def test_history_stored_while_a_sink_was_off_is_still_held_and_paced(buffer):
    import time

    await buffer.install_sinks(["crm", "other"])
    await buffer.install_sinks(["other"])  # crm taken out of the config for a while
    now = time.time()
    old = [Message(source="whatsapp", provider_id=f"h{days}", conversation="+919000000001",
                   account="PN-A", direction=Direction.IN, kind="text", text=f"{days} days",
                   sent_at=datetime.fromtimestamp(now - days * 86400, UTC), history=True)
           for days in (10, 1)]
    await buffer.append(old)
    await buffer.install_sinks(["crm", "other"])  # back: it catches up
    assert await buffer.claim("crm", 10, 60, backfill=False, history_days=3) == []
    claimed = await buffer.claim("crm", 10, 60, history_days=3)
    assert [m.provider_id for c in claimed for m in c.messages] == ["h1"]
