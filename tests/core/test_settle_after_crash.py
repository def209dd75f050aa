"""A batch whose holder is gone (killed: its lease expired, or freed at a runner's start)
is retried once a write the holder had in flight can no longer land, and no later; the
status says it is settling, and health does not call the sink failing (adv36's late
commit, after a crash). The real processes: tests/leadsquared/test_crash_settle.py."""

from __future__ import annotations

import time
from types import SimpleNamespace

import pytest

from bridge.buffer import Buffer
from bridge.contracts import SETTLING, START_WITHIN, SinkSettings
from bridge.sync import SinkRunner, settle_after_lease
from tests.backends import rows
from tests.helpers import message

LEASE = 10.0
SETTLE = 5.0  # after the lease's end


def _sink(write_settle: float | None = None, **settings: float) -> SimpleNamespace:
    sink = SimpleNamespace(name="crm", settings=SinkSettings(**settings))
    if write_settle is not None:
        sink.write_settle = write_settle
    return sink


def test_the_wait_after_a_lease_is_its_delivery_then_the_sinks_write_settle():
    # defaults (lease 5m, deliver_timeout 2m), LeadSquared's 3 x 30 s: sent by the claim
    # + 5 s + 2 m, landed 90 s later: 85 s before the lease's end
    assert settle_after_lease(_sink(90.0)) == START_WITHIN + 120 - 300 + 90
    # a lease barely over deliver_timeout: the lease's end bounds the sending
    assert settle_after_lease(_sink(9.0, lease=5, deliver_timeout=4)) == -1 + 9
    # a sink that does not say: deliver_timeout (the Sink contract's default)
    assert settle_after_lease(_sink(lease=300, deliver_timeout=60)) == START_WITHIN + 60 - 300 + 60


async def _leased(buffer: Buffer, now: float) -> None:
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 1, LEASE, now=now)
    assert claim.batch.attempt == 1


async def test_an_expired_lease_waits_until_its_write_can_no_longer_land(buffer):
    start = time.time()
    await _leased(buffer, start)
    later = start + LEASE + 1  # expired; its write may land until the lease's end + 5 s
    assert await buffer.claim("crm", 1, LEASE, now=later, after_lease=SETTLE) == []
    (sink,) = await buffer.sinks()
    assert sink["settling"] == 1
    assert sink["settling_until"].timestamp() == pytest.approx(start + LEASE + SETTLE, abs=1e-3)
    health = await buffer.sync_health("crm")
    assert health["retrying"] == 0 and health["retry_error"] is None  # not failing
    assert await buffer.retry_now("crm", now=later) == 0  # "sync now" does not hurry it
    assert await buffer.claim("crm", 1, LEASE, now=start + LEASE + SETTLE - 0.1) == []
    (claim,) = await buffer.claim("crm", 1, LEASE, now=start + LEASE + SETTLE)
    assert claim.batch.uncertain  # its retry looks for what landed first
    (sink,) = await buffer.sinks()
    assert sink["settling"] == 0


async def test_a_lease_whose_write_has_surely_landed_is_retried_at_once(buffer):
    start = time.time() - 3600  # the bridge comes back an hour after the crash
    await _leased(buffer, start)
    (claim,) = await buffer.claim("crm", 1, LEASE, now=time.time(), after_lease=SETTLE)
    assert claim.batch.uncertain
    assert (await buffer.sinks())[0]["settling"] == 0


async def test_a_runner_start_frees_a_killed_runs_lease_once_its_write_can_land(tmp_path):
    path = tmp_path / "buffer.db"
    start = time.time()
    killed = await Buffer.open(path, runner=True)
    await _leased(killed, start)
    await killed.close()  # as a SIGKILL leaves it: leased, no outcome
    restarted = await Buffer.open(path, runner=True, after_lease={"crm": SETTLE})
    try:
        assert await restarted.claim("crm", 1, LEASE, now=start + 1) == []
        (sink,) = await restarted.sinks()
        assert sink["settling"] == 1
        assert sink["settling_until"].timestamp() == pytest.approx(start + LEASE + SETTLE, abs=1e-3)
        (row,) = await rows(restarted, "SELECT last_error FROM batches")
        assert row[0] == SETTLING
        (claim,) = await restarted.claim("crm", 1, LEASE, now=start + LEASE + SETTLE)
        assert claim.batch.uncertain and claim.batch.attempt == 2
    finally:
        await restarted.close()


async def test_claims_given_back_unsent_go_again_at_once_uncounted(buffer):
    start = time.time()
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    claims = await buffer.claim("crm", 1, LEASE, now=start)
    assert await buffer.unclaim(claims, now=start) == 1
    (claim,) = await buffer.claim("crm", 1, LEASE, now=start + 0.1, after_lease=SETTLE)
    assert claim.batch.attempt == 1 and not claim.batch.uncertain


async def test_a_delivery_starting_late_in_its_lease_renews_it_first(buffer):
    """So the lease says when its writes went (settle_after_lease counts from its start)."""
    sink = _sink(9.0, lease=300, deliver_timeout=60)
    runner = SinkRunner(sink, buffer)
    await buffer.install_sinks(["crm"])
    await buffer.append([message(1)])
    (claim,) = await buffer.claim("crm", 1, 300)
    (before,) = await rows(buffer, "SELECT lease_until FROM batches")
    claim.claimed_at = time.monotonic()
    assert await runner._lease_holds(claim)  # at once: kept as it is
    assert await rows(buffer, "SELECT lease_until FROM batches") == [before]
    claim.claimed_at = time.monotonic() - START_WITHIN - 1  # waited its turn
    assert await runner._lease_holds(claim)
    (after,) = await rows(buffer, "SELECT lease_until FROM batches")
    assert after[0] > before[0]
