"""SIGKILL between a post and its bookkeeping, on a lead whose history is longer than a
page: the killed bridge's write lands, and the restart must find it by its key rather than
post it again, though the account serves 25 rows a read (switch paging=capped) and the
landed activity is not among the 25 newest (an older chat posted after newer ones, as a
backfill or a late retry does: history is ordered by ActivityDateTime)."""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from plugins.leadsquared.activity_type import FIELDS
from tests import oneshot
from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import _drained, key_of, post, write_config
from tests.leadsquared.test_owners_end_to_end import PRIYA_NUMBER, change
from tests.processes import BridgeProcess, eventually

ASHA = "919876543210"
WRITES = ("Add/ByLeadId", "ProspectActivity.svc/Create")
NEWER = 30  # chat activities newer than the killed one: more than a capped page


def writes(simulator, held: bool = False) -> int:
    """Write calls the simulator saw (held: only those whose whole body arrived and whose
    write it holds: a kill before then cuts the body off, and it never commits)."""
    return sum(c["path"].endswith(WRITES) and (c["held"] or not held)
               for c in simulator.admin("GET", "calls"))


def newer_chats(simulator, lead: str, event: int) -> None:
    """NEWER chat activities of the bridge's type on the lead, from an hour ago."""
    headers = {"x-LSQ-AccessKey": "e2e-access", "x-LSQ-SecretKey": "e2e-secret"}
    start = datetime.now(UTC) - timedelta(hours=1)
    for n in range(NEWER):
        when = (start + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S")
        body = {"RelatedProspectId": lead, "ActivityEvent": event, "ActivityNote": f"n{n}",
                "ActivityDateTime": when,
                "Fields": [{"SchemaName": FIELDS["key"], "Value": f"earlier-chat-{n}"}]}
        answer = oneshot.post(f"{simulator.url}/v2/ProspectActivity.svc/Create", json=body,
                              headers=headers, timeout=10)
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("bulk", [False, True], ids=["single", "bulk"])
def test_a_killed_post_of_an_older_chat_is_found_past_a_capped_page_not_posted_again(
        tmp_path, module_simulator, bulk):
    simulator = module_simulator.fresh()
    simulator.configure(paging="capped")
    lead = simulator.add_lead(FirstName="Asha", Mobile=ASHA)
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, opportunities=False, bulk=bulk)
    bridge = BridgeProcess(config, port).start()
    try:
        post(bridge, change(PRIYA_NUMBER, ASHA, "Asha", "wamid.first", "first-chat"))
        bridge.sync_now()
        (first,) = eventually(lambda: simulator.activities(lead), timeout=60)
        newer_chats(simulator, lead, int(first["ActivityEvent"]))
        held = writes(simulator, held=True)
        simulator.configure(write_hold=1.5)  # the account commits it after the kill
        old = change(PRIYA_NUMBER, ASHA, "Asha", "wamid.old", "old-chat")
        old["value"]["messages"][0]["timestamp"] = str(int(time.time()) - 2 * 86400)
        post(bridge, old)
        bridge.sync_now()
        eventually(lambda: writes(simulator, held=True) > held, timeout=60)
        bridge.kill()
        simulator.configure(write_hold=0.0)
        eventually(lambda: [a for a in simulator.activities(lead)
                            if "old-chat" in a["ActivityNote"]], timeout=30)
        time.sleep(2)  # the held write has committed
        bridge.start()
        bridge.sync_now()
        (sink,) = eventually(lambda: _drained(bridge), timeout=90)
    finally:
        bridge.stop()
    assert sink["dead_letters"] == 0
    activities = simulator.activities(lead)
    assert sum("old-chat" in a["ActivityNote"] for a in activities) == 1
    keys = Counter(key_of(a) for a in activities)
    assert max(keys.values()) == 1, keys.most_common(2)
