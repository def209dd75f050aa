"""Bridge processes on one PostgreSQL buffer whose hosts' clocks disagree (adv38).

A lease is written by one process and judged by another: with each host's own wall
clock, a host running minutes ahead (no NTP, a VM resumed with a stale clock) saw every
other process's lease as expired, took the batch being delivered and posted it too. The
leases, waits and silent-process releases are judged by the database server's clock."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import message

SKEWED = """
import asyncio, json, sys, time
real = time.time
time.time = lambda: real() + float(sys.argv[2])  # this host's wall clock is off
from bridge.buffer import Buffer

async def main(url, action):
    buffer = await Buffer.open(url, pool_size=2)
    try:
        if action == "timeout":  # its delivery was cut off: retry no sooner than 2 min on
            from datetime import UTC, datetime
            from bridge.buffer import Policy
            from bridge.contracts import Outcome
            (claim,) = await buffer.claim("memory", 10, lease=300)
            settled = datetime.fromtimestamp(time.time() + 120, UTC)
            await buffer.complete(claim, [Outcome.retry("sink timed out after 120s",
                                                        not_before=settled, transient=True)],
                                  Policy(max_attempts=5, retry_delay=lambda n: 0.0,
                                         held_delay=0.0))
            print(json.dumps([m.provider_id for m in claim.messages]))
            return
        if action == "sync":  # a drain ran now and the next is due in 3 min
            await buffer.record_sync("memory", time.time(), time.time() + 180, None)
            print("[]")
            return
        claims = await buffer.claim("memory", 10, lease=300)
        print(json.dumps([m.provider_id for c in claims for m in c.messages]))
    finally:
        await buffer.close()

asyncio.run(main(sys.argv[1], sys.argv[3]))
"""


def _claim_on_a_host_off_by(url: str, seconds: float, action: str = "claim") -> list[str]:
    """What a bridge process on a host whose clock is `seconds` off claims (its ids)."""
    done = subprocess.run([sys.executable, "-c", SKEWED, url, str(seconds), action],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


async def test_a_host_whose_clock_runs_ahead_never_takes_a_batch_being_delivered(
        open_buffers, pg_url):
    (mine,) = await open_buffers(1)
    await mine.install_sinks(["memory"])
    await mine.append([message(1, "+919876500001")])
    (held,) = await mine.claim("memory", 10, lease=300)  # being delivered here, 5 min lease
    assert [m.provider_id for m in held.messages] == ["m1"]
    assert _claim_on_a_host_off_by(pg_url, 400.0) == []  # 6.7 min ahead: not taken


async def test_a_batch_claimed_on_a_host_whose_clock_runs_behind_stays_leased(open_buffers,
                                                                               pg_url):
    (mine,) = await open_buffers(1)
    await mine.install_sinks(["memory"])
    await mine.append([message(1, "+919876500001")])
    # claimed for 5 min on a host 6.7 min behind: its lease must not end before it began
    assert _claim_on_a_host_off_by(pg_url, -400.0) == ["m1"]
    assert await mine.claim("memory", 10, lease=300) == []


async def test_a_host_whose_clock_runs_ahead_stamps_its_syncs_truthfully(open_buffers, pg_url):
    """'last synced' is the cluster's: a host an hour ahead pinned it an hour into the
    future (it never goes backwards), and every status page said 'behind: stamped in the
    future' for that hour while all was well."""
    import time

    (mine,) = await open_buffers(1)
    await mine.install_sinks(["memory"])
    _claim_on_a_host_off_by(pg_url, 3600.0, "sync")
    (state,) = await mine.sinks()
    assert abs(state["last_sync_at"].timestamp() - time.time()) < 60
    assert abs(state["next_sync_at"].timestamp() - (time.time() + 180)) < 60


async def test_a_wait_asked_for_on_a_host_whose_clock_runs_behind_is_waited_out(open_buffers,
                                                                                pg_url):
    """A delivery cut off by deliver_timeout may still land in the CRM: its retry waits as
    long again (the sink's not_before), then checks the keys. Asked for on a host 6.7 min
    behind, that wait was already over for the others: the retry's key check could run
    before the late write landed, and post the chat twice."""
    (mine,) = await open_buffers(1)
    await mine.install_sinks(["memory"])
    await mine.append([message(1, "+919876500001")])
    assert _claim_on_a_host_off_by(pg_url, -400.0, "timeout") == ["m1"]
    assert await mine.claim("memory", 10, lease=300) == []  # 2 min to wait yet
