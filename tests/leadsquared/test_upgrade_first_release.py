"""Upgrading from the first release (649ef09) on the same buffer and the same account.

The fixtures were written by that release's own `bridge run` (tests/fixtures/upgrades): its
buffer as `.dump` gave it, and the notes it had posted on the lead when it was SIGKILLed.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import httpx

from tests.helpers import free_port
from tests.leadsquared.test_end_to_end import write_config
from tests.processes import BridgeProcess, eventually

FIXTURES = Path(__file__).parent.parent / "fixtures" / "upgrades"
LONG_TEXT = " ".join(f"F{i:04d}" for i in range(400))  # the message the fixture holds
TYPE_FIELDS = [{"SchemaName": f"mx_Custom_{n}", "DisplayName": f"Field {n}",
                "DataType": "String", "IsMandatory": False, "Sequence": n} for n in range(1, 6)]


def _api(sim, path: str, body: dict) -> dict:
    answer = httpx.post(f"{sim.url}/v2/{path}", json=body, timeout=10,
                        params={"accessKey": "e2e-access", "secretKey": "e2e-secret"})
    answer.raise_for_status()
    return answer.json()


def _account_as_the_old_bridge_left_it(sim, crm: dict) -> str:
    """The activity type, the lead, and the notes the old bridge had posted; the lead id."""
    event = _api(sim, "ProspectActivity.svc/CreateType", {
        "ActivityEventName": "WhatsApp Chats", "Score": 0, "Description": "", "Direction": 0,
        "AllowAttachments": 1, "Fields": TYPE_FIELDS})["Message"]["Id"]
    lead = sim.add_lead(Phone=crm["phone"], FirstName=crm["first_name"])
    for activity in crm["activities"]:
        _api(sim, "ProspectActivity.svc/Create", {
            "RelatedProspectId": lead, "ActivityEvent": event, **activity})
    return lead


def _text_on(sim, lead: str) -> str:
    """The message's text as the lead's notes hold it, pieces in order, markers removed."""
    bodies = [a["ActivityNote"].partition("\n")[2] for a in sim.activities(lead)]
    line = "".join(body.removeprefix("… ") if i else body for i, body in enumerate(bodies))
    return line[line.index("F0000"):]


def test_a_long_message_the_first_release_was_killed_posting_is_completed_exactly_once(
        tmp_path, simulator):
    """649ef09 cut a long message into pieces keyed by offsets into its line and was killed
    after three of four had landed (none in its ledger). The new bridge on that buffer
    posts the fourth, once. Was: the cut at the last key found ran to the line's end, so
    that (landed) piece was taken for the rest of the message: its last 508 characters
    never reached the lead, and the message counted as delivered."""
    crm = json.loads((FIXTURES / "first_release_long_message.json").read_text())
    lead = _account_as_the_old_bridge_left_it(simulator, crm)
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        db.executescript((FIXTURES / "first_release_long_message.sql").read_text())
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, simulator, port, note_limit=800, opportunities=False)
    bridge = BridgeProcess(config, port).start()
    try:
        eventually(lambda: [s for s in bridge.status()["sinks"]
                            if s["backlog"] == 0 and s["last_sync_at"]])
    finally:
        bridge.stop()
    assert _text_on(simulator, lead) == LONG_TEXT
    assert len(simulator.activities(lead)) == 4
