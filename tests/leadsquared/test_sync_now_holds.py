"""`bridge sync-now` (and the page's button, POST /sync-now) on a held chat, on a real
`bridge run`: a chat held for "no lead with this number" lands as soon as the lead is
created and a person asks for a sync, as README's quick start promises.

Found by adv42: the sink did not search a number that matched no lead again before
unknown_recheck (10 min), nor refresh its lead directory before lead_directory_refresh
(5 min), whoever asked: the chat stayed held after every `sync-now` until then.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import post, write_config
from tests.processes import BridgeProcess, eventually
from tests.whatsapp import payloads as p

NEW = "919333333333"


def _sync_now(config) -> None:
    done = subprocess.run([sys.executable, "-m", "bridge", "sync-now", "-c", str(config)],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


def _held(bridge: BridgeProcess) -> int:
    return bridge.status()["sinks"][0]["held"]


@pytest.mark.parametrize("directory", ["auto", "off"])
def test_a_chat_held_for_no_lead_lands_at_the_next_sync_now_once_the_lead_exists(
        tmp_path, simulator, directory):
    port = free_port()
    config = tmp_path / "config.yaml"
    # drained only when asked, with a budget and a delivery time the start's and the asked
    # refreshes' calls never run out (a delivery cut off would wait for the next ask)
    write_config(config, simulator, port, sync_interval="1h", lead_directory=directory,
                 rate_limit="100/1s", lease="20s", deliver_timeout="15s")
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: bridge.status()["sinks"][0]["last_sync_at"])
        post(bridge, p.message_change([p.text_message("wamid.n1", NEW, "hello?",
                                                      ts=int(time.time()))],
                                      contacts=[p.contact(NEW, "Nina")]))
        _sync_now(config)
        eventually(lambda: _held(bridge) == 1, timeout=60)
        lead = simulator.add_lead(FirstName="Nina", Mobile="+91-9333333333")
        _sync_now(config)
        eventually(lambda: simulator.activities(lead), timeout=60)
        # the activity is in the CRM before the bridge records its outcome
        eventually(lambda: _held(bridge) == 0, timeout=30)
    finally:
        bridge.stop()
