"""A bridge killed while a CRM write it sent is still in flight: the write commits after
the kill, and the retry must not look for it (and post it again) before it can land.

adv36's late commit after a crash: the simulator holds each write (write_hold) before it
reaches the account, `bridge run` is SIGKILLed while its activity post is held, and a
bridge takes the batch at once (SQLite: the same bridge restarted; PostgreSQL: another
process, once the killed one's lease expired). Its retry read the lead's keys before the
held write committed, found nothing and posted again: the chat twice on the lead. The
batch now waits until the write can no longer land (its lease's start + START_WITHIN +
deliver_timeout + the sink's write_settle, 3 x its call timeout), and the status says why.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter

import pytest

from bridge.contracts import SETTLING
from tests import oneshot
from tests.backends import needs_postgres
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import ASHA, key_of, post, write_config
from tests.processes import BridgeProcess, buffer_section, eventually
from tests.whatsapp import payloads as p

SINGLE = "ProspectActivity.svc/Create"
BULK = "Bulk/CustomActivity/Add/ByLeadId"
HOLD = 7.0  # seconds the account holds the first post before it commits
# the write may land until 3 x timeout (9 s) after its send, so a hold of 7 s is within
# what the sink allows, and 3 s past the lease (4 s): a retry that did not wait (a restart
# at once, or another process once the lease expired) would look before it lands. The
# retry waits until the lease's start + deliver_timeout + 9 s: 12 s (was 17 s at 5 s/4 s)
SETTINGS = {"timeout": "3s", "deliver_timeout": "3s", "lease": "4s", "sync_interval": "1s",
            "opportunities": False, "max_attempts": 20}


def _posts(simulator, path: str) -> list[dict]:
    return [c for c in simulator.admin("GET", "calls") if c["path"].endswith(path)]


def _kill_mid_post(bridge: BridgeProcess, simulator, path: str, wake: bool = True) -> float:
    """Post a chat, let the bridge send its activity (held by the account), kill it;
    when (time.monotonic()) the held write has surely committed."""
    simulator.configure(write_hold=HOLD)
    now = int(time.time())
    post(bridge, p.message_change([p.text_message(f"wamid.s{n}", ASHA, f"msg-{n:04d}",
                                                  ts=now - 30 + n) for n in range(2)],
                                  contacts=[p.contact(ASHA, "Asha Rao")]))
    if wake:
        bridge.sync_now()
    eventually(lambda: [c for c in _posts(simulator, path) if c["held"]], timeout=30)
    committed = time.monotonic() + HOLD + 1
    time.sleep(1.5)  # mid-post: sent, not answered
    bridge.kill()
    simulator.configure(write_hold=0)  # only the killed post is held; it still commits
    return committed


def _settled(bridge: BridgeProcess) -> dict | None:
    (sink,) = bridge.status()["sinks"]
    return sink if sink["backlog"] == 0 and not sink["settling"] else None


def _assert_once(simulator, lead: str, path: str, committed: float) -> None:
    time.sleep(max(0.0, committed - time.monotonic()))  # the held write is in
    activities = simulator.activities(lead)
    keys = Counter(key_of(a) for a in activities)
    assert len(activities) == 1 and max(keys.values()) == 1, keys
    assert "msg-0000" in activities[0]["ActivityNote"]
    assert "msg-0001" in activities[0]["ActivityNote"]
    assert len(_posts(simulator, path)) == 1  # the retry found it: never posted again


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_a_post_in_flight_when_the_bridge_is_killed_is_not_posted_again_on_restart(
        tmp_path, simulator, bulk):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    path = BULK if bulk else SINGLE
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, bulk=bulk, **SETTINGS)
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
        committed = _kill_mid_post(bridge, simulator, path)
        bridge.start()  # at once: the held write has not committed yet
        (sink,) = bridge.status()["sinks"]
        # it waits for the killed run's write, and says so; the sink is not failing
        assert sink["settling"] == 1 and sink["settling_until"], sink
        assert sink["health"]["state"] == "healthy", sink["health"]
        status = subprocess.run([sys.executable, "-m", "bridge", "status", "-c", str(config)],
                                capture_output=True, text=True, timeout=60)
        assert f"settling    1 batch(es): {SETTLING}, until" in status.stdout, status.stdout
        assert "FAILING" not in status.stdout
        page = oneshot.get(f"{bridge.url}/", timeout=10).text  # the status page (loopback)
        assert f"1 chat(s) {SETTLING}, until" in page
        sink = eventually(lambda: _settled(bridge), timeout=60)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    _assert_once(simulator, lead, path, committed)


@needs_postgres
def test_a_killed_processs_post_in_flight_is_not_posted_again_by_another_process(
        tmp_path, simulator):
    """Two bridges on one PostgreSQL buffer: the one posting is killed, the other takes
    its batch once the lease expires (seconds before the held write commits)."""
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    with buffer_section("postgresql", tmp_path) as buffer:
        bridges = []
        for name in ("a", "b"):
            port = free_port()
            config = tmp_path / f"{name}.yaml"
            write_config(config, simulator, port, buffer, bulk=False, **SETTINGS)
            bridges.append(BridgeProcess(config, port))
        first, second = bridges
        # the second drains only when asked, so the first takes the chat
        write_config(second.config, simulator, second.port, buffer, bulk=False,
                     **{**SETTINGS, "sync_interval": "1h"})
        try:
            first.start()
            eventually(lambda: first.status()["sinks"][0]["last_sync_at"])
            second.start()
            committed = _kill_mid_post(first, simulator, SINGLE, wake=False)  # a wake reaches both
            # the second drains each second: it takes the batch once the lease is out
            sink = eventually(lambda: second.sync_now() or _settled(second), timeout=90,
                              every=1.0)
        finally:
            for bridge in bridges:
                bridge.stop()
    assert sink["dead_letters"] == 0
    _assert_once(simulator, lead, SINGLE, committed)
