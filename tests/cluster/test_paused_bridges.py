"""Three `bridge run` processes on one PostgreSQL buffer, one of them now and then paused
(SIGSTOP) for up to twice its lease, then resumed (SIGCONT), while webhooks land on all
three (adv31): a paused process's batches are taken by the others once its leases expire,
and, resumed, it must neither post them again nor record them. Every acknowledged message
reaches the CRM once, each conversation in order, with bulk posts and without.
Long (about a minute each): `-m soak`."""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from tests.backends import NO_POSTGRES, POSTGRES
from tests.cluster import test_three_bridges as three
from tests.processes import SimulatorProcess, buffer_section, eventually
from tests.reliability.support import CrmCount, report, size

pytestmark = [pytest.mark.skipif(not POSTGRES, reason=NO_POSTGRES), pytest.mark.soak]


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_a_paused_process_resumed_posts_nothing_twice(tmp_path, monkeypatch, bulk):
    monkeypatch.setattr(three, "SINK", {**three.SINK, "lease": "4s", "deliver_timeout": "3s",
                                        "bulk": bulk, "bulk_rate_limit": "3/1s"})
    rnd = random.Random(size("CHATBRIDGE_PAUSE_SEED", 3))
    sim = SimulatorProcess()
    bridges, driver, pauses = [], None, 0
    try:
        leads = {n: sim.add_lead(FirstName=f"Paused{i}", Mobile=f"+91-{n[2:]}")
                 for i, n in enumerate(three.NUMBERS)}
        sim.configure(rate_limit="10/1s", latency=0.05)
        with buffer_section("postgresql", tmp_path) as buffer:
            bridges = three._bridges(tmp_path, sim, buffer)
            for bridge in bridges:
                bridge.start()
            driver = three.RoundRobin(bridges)
            driver.start()
            end = time.monotonic() + size("CHATBRIDGE_PAUSE_SECONDS", 40)
            while time.monotonic() < end:
                time.sleep(rnd.uniform(0.3, 2.5))
                paused = rnd.choice(bridges)
                os.kill(paused.proc.pid, signal.SIGSTOP)
                pauses += 1
                time.sleep(rnd.uniform(0.5, 8))  # up to twice the lease
                os.kill(paused.proc.pid, signal.SIGCONT)
            driver.stop.set()
            driver.join(15)
            acked = set(driver.acked)
            eventually(lambda: three._in_crm(sim, acked), timeout=120, every=0.5)
            time.sleep(5)  # a late second post would land by now
            activities = sim.activities()
            for bridge in bridges:
                bridge.stop()
        crm = CrmCount(activities, three.PATTERN)
        report(f"paused bridges ({'bulk' if bulk else 'single'}): {len(acked)} acknowledged, "
               f"{pauses} pauses, {len(activities)} activities, {crm.duplicates()} duplicates")
        crm.assert_each_once(acked)
        three._assert_in_order(activities, leads)
    finally:
        if driver is not None:
            driver.stop.set()
        for bridge in bridges:
            if bridge.proc is not None and bridge.proc.poll() is None:
                os.kill(bridge.proc.pid, signal.SIGCONT)
            bridge.kill()
        sim.stop()
