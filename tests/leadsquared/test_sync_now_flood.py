"""A flood of sync-nows on a real `bridge run`: the reps (owners) and the lead directory
are read again once per HURRY_GAP, not once per ask (adv45: 50 POST /sync-now in 0.08 s
made 17 Users.Get calls, every one spending the rate budget the chats need)."""

from __future__ import annotations

import collections
import time

from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import write_config
from tests.processes import BridgeProcess, eventually

USERS = "/v2/UserManagement.svc/Users.Get"


def _users_calls(simulator) -> int:
    return sum(1 for call in simulator.admin("GET", "calls") if call["path"] == USERS)


def test_fifty_sync_nows_read_the_reps_a_few_times(tmp_path, simulator):
    simulator.add_user("Priya", "priya@example.com", last="Rao")
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, sync_interval="1h",
                 owners={"+919800000001": "priya@example.com"},
                 rate_limit="100/1s", lease="20s", deliver_timeout="15s")
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
        before = _users_calls(simulator)
        started = time.monotonic()
        for _ in range(50):
            bridge.sync_now()
        # the first ask's read, then one a HURRY_GAP (1 s) while the asks keep coming
        allowed = 2 + int(time.monotonic() - started)
        eventually(lambda: _users_calls(simulator) - before >= 2)
        time.sleep(1.5)  # another read, were there one, would have come by now
        assert 2 <= _users_calls(simulator) - before <= allowed
        assert collections.Counter(c["status"] for c in simulator.admin("GET", "calls")) \
            .get(429, 0) == 0
    finally:
        bridge.stop()
