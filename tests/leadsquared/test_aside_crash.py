"""`bridge run` SIGKILLed while the retry of an aside batch (its chat on the lead, its deal's
copy waiting out an opportunity outage) has the deal's copy in flight: the simulator holds
the write (write_hold) and commits it after the kill. The restarted bridge waits for that
write before the batch retries (it must not post the copy again), while the customer's next
chat, arriving meanwhile, passes the waiting batch and reaches the lead at once. In the
end each chat is on the lead and the deal exactly once. adv68: this held; the test pins it."""

from __future__ import annotations

import time
from collections import Counter

from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import ASHA, key_of, post, posts_on, write_config
from tests.processes import BridgeProcess, eventually
from tests.whatsapp import payloads as p

HOLD = 6.0  # the killed copy commits this long after it reached the account
SETTINGS = {"timeout": "3s", "deliver_timeout": "3s", "lease": "4s", "sync_interval": "1s",
            "bulk": False, "max_attempts": 50}


def _chat(bridge: BridgeProcess, n: int) -> None:
    post(bridge, p.message_change([p.text_message(f"wamid.a{n}", ASHA, f"msg-{n:04d}",
                                                  ts=int(time.time()) - 10 + n)],
                                  contacts=[p.contact(ASHA, "Asha Rao")]))


def _texts(activities: list[dict]) -> Counter:
    return Counter(t for a in activities for t in ("msg-0001", "msg-0002")
                   if t in a["ActivityNote"])


def _settled(bridge: BridgeProcess) -> dict | None:
    (sink,) = bridge.status()["sinks"]
    return sink if sink["backlog"] == 0 and not sink["settling"] else None


def test_a_kill_mid_retry_of_an_aside_batch_neither_holds_the_next_chat_nor_posts_twice(
        tmp_path, simulator):
    lead = simulator.add_lead(FirstName="Asha", Mobile="+91-9876543210")
    deal = simulator.add_opportunity(lead, "Deal")
    simulator.admin("POST", "refuse", json={"opportunity_id": deal, "reason": "down",
                                            "transient": True})
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, **SETTINGS)
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
        _chat(bridge, 1)
        eventually(lambda: _texts(simulator.activities(lead))["msg-0001"], timeout=30)
        eventually(lambda: len(posts_on(simulator, deal)) >= 2, timeout=30)  # it waits
        simulator.configure(write_hold=HOLD)
        simulator.admin("POST", "refuse", json={"opportunity_id": deal, "reason": ""})
        eventually(lambda: [c for c in posts_on(simulator, deal) if c["held"]], timeout=30)
        bridge.kill()  # the copy is in flight: it commits HOLD s after it arrived
        committed = time.monotonic() + HOLD + 1
        simulator.configure(write_hold=0)
        bridge.start()
        _chat(bridge, 2)
        # the next chat passes the batch that waits for its killed copy
        eventually(lambda: _texts(simulator.activities(lead))["msg-0002"], timeout=8)
        assert time.monotonic() < committed  # before the killed copy could have landed
        sink = eventually(lambda: _settled(bridge), timeout=60)
    finally:
        bridge.stop()
    time.sleep(max(0.0, committed - time.monotonic()))  # the held copy is in
    assert sink["dead_letters"] == 0 and sink["dead_targets"] == 0
    every = simulator.activities()
    keys = Counter(key_of(a) for a in every)
    assert max(keys.values()) == 1, keys
    on_lead = [a for a in every if not a.get("RelatedOpportunityId")]
    on_deal = [a for a in every if a.get("RelatedOpportunityId") == deal]
    assert _texts(on_lead) == {"msg-0001": 1, "msg-0002": 1}
    assert _texts(on_deal) == {"msg-0001": 1, "msg-0002": 1}
