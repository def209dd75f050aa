"""Coexistence end to end with real processes (issue 26, point 3): `bridge whatsapp
coexistence` asks the Graph stand-in for the history and contacts sync, the stand-in posts
the history webhooks (signed) to a running bridge, the command reports their progress, and
LeadSquared gets the rep's past chats, the history photo attached in its placeholder's place."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from plugins.whatsapp import history_script as script
from tests import oneshot
from tests.helpers import free_port
from tests.processes import BridgeProcess, GraphProcess, SimulatorProcess, eventually
from tests.whatsapp import payloads as p
from tests.whatsapp.test_media_e2e import GRAPH_TOKEN, SECRET, VERIFY, start_bridge


@pytest.fixture
def graph(module_graph):
    """The module's Graph stand-in, reset (POST /_sim/reset): each test starts clean."""
    return module_graph.fresh()



def coexistence(tmp_path: Path, *args: str, wait: str = "60") -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bridge", "whatsapp", "coexistence", "-c",
         str(tmp_path / "config.yaml"), "--wait", wait, *args],
        capture_output=True, text=True, timeout=120)


def start_quiet_bridge(tmp_path: Path, graph: GraphProcess, lsq: SimulatorProcess
                       ) -> BridgeProcess:
    """A bridge whose sink drains only when asked (sync-now): the whole history is in
    before the first drain, as it is when it comes faster than the sync interval."""
    port = free_port()
    config = {"server": {"port": port},
              "buffer": {"path": str(tmp_path / "bridge.db"), "media_retry_base": 0.2},
              "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                       "access_token": GRAPH_TOKEN, "graph_url": graph.url},
                          "leadsquared": {"host": lsq.url, "access_key": "e2e-access",
                                          "secret_key": "e2e-secret", "sync_interval": "1h"}}}
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    return BridgeProcess(path, port).start()


def sim(graph: GraphProcess, what: str, **body: object) -> dict:
    response = oneshot.post(f"{graph.url}/_sim/{what}", json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def stored(tmp_path: Path) -> dict[str, tuple]:
    """provider id -> (conversation, direction, kind of its body) from the buffer file."""
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        rows = db.execute("SELECT provider_id, conversation, direction, body FROM messages")
        return {r[0]: (r[1], r[2], json.loads(r[3]).get("kind")) for r in rows}


def media_states(tmp_path: Path) -> list[str]:
    with sqlite3.connect(tmp_path / "bridge.db") as db:
        return [r[0] for r in db.execute("SELECT state FROM media")]


def test_history_is_requested_followed_and_lands_with_its_media(tmp_path, graph, lsq):
    meera = lsq.add_lead(FirstName="Meera", LastName="Shah", Phone="+91-9988776655")
    lsq.add_lead(FirstName="Rahul", LastName="Jain", Mobile="+91-9812345670")
    bridge = start_quiet_bridge(tmp_path, graph, lsq)
    try:
        sim(graph, "webhook", url=f"{bridge.url}/webhooks/whatsapp", app_secret=SECRET)
        done = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID)
        assert done.returncode == 0, done.stderr
        out = done.stdout
        assert "24 hours" in out and "accept" in out  # the window, and the rep's prompt
        assert f"{p.PHONE_ID} history: arriving, 60 %" in out  # chunks out of order
        assert f"{p.PHONE_ID} history: done, 100 %" in out
        assert "History complete" in out
        requested = oneshot.get(f"{graph.url}/_sim/coexistence", timeout=10).json()["requested"]
        assert sorted(r["sync_type"] for r in requested) == ["history", "smb_app_state_sync"]

        rows = eventually(lambda: (r := stored(tmp_path)) and any(
            k.endswith("-prices#media") for k in r) and r)
        photo = next(k for k in rows if k.endswith("-photo"))
        assert rows[photo][2] == "media_placeholder" and rows[photo + "#media"][2] == "image"
        prices = next(k for k in rows if k.endswith("-prices#media"))
        assert rows[prices][:2] == ("+919988776655", "out")  # business media, in history
        username = [v[:2] for k, v in rows.items() if k.endswith(("-u1", "-u2"))]
        assert sorted(username) == [(script.USERNAME_USER, "in"),
                                    (script.USERNAME_USER, "out")]

        status = coexistence(tmp_path, "--status")
        assert status.returncode == 0, status.stderr
        assert f"{p.PHONE_ID} history: done, 100 %, phase 2 of 0-2, 3 chunks" in status.stdout
        syncs = {s["kind"]: s for s in bridge.status()["source_syncs"]}  # /status
        assert (syncs["history"]["state"], syncs["history"]["progress"]) == ("done", 100)
        assert syncs["contacts"]["state"] == "done"  # the rep's address book arrived

        eventually(lambda: all(s in ("fetched", "dead") for s in media_states(tmp_path)))
        bridge.sync_now()
        attached = eventually(lambda: [a for act in lsq.activities(meera)
                                       for a in lsq.attachments(act["Id"])] or None)
        assert {a["Data"] for a in attached} >= {script.PHOTO[2]}
        notes = " ".join(a["ActivityNote"] for a in lsq.activities(meera))
        assert "the old shelf" in notes and "Here is the shelf" in notes
        assert "not synced" not in notes
    finally:
        bridge.stop()


def test_refusals_and_a_declined_share_are_one_line_and_fail(tmp_path, graph):
    bridge = start_bridge(tmp_path, graph)
    try:
        sim(graph, "webhook", url=f"{bridge.url}/webhooks/whatsapp", app_secret=SECRET)
        sim(graph, "coexistence", onboarded_hours_ago=30)
        late = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID)
        assert late.returncode == 1
        (line,) = late.stderr.strip().splitlines()
        assert "Graph refused the contacts and history requests" in line
        assert "24 hours" in line

        sim(graph, "coexistence", onboarded_hours_ago=1, share_history="decline")
        declined = coexistence(tmp_path, "--phone-number-id", "222")
        assert declined.returncode == 1
        (line,) = declined.stderr.strip().splitlines()
        assert "declined sharing the chat history of 222" in line
        assert "222 history: declined" in coexistence(tmp_path, "--status").stdout

        again = coexistence(tmp_path, "--phone-number-id", "222", wait="0")
        assert again.returncode == 0 and "already requested" in again.stdout
    finally:
        bridge.stop()


def test_a_wrong_token_names_the_config_key(tmp_path, graph):
    config = {"server": {"port": 1}, "buffer": {"path": str(tmp_path / "bridge.db")},
              "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                       "access_token": "not-the-token",
                                       "graph_url": graph.url}}}
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    done = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID, wait="0")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "code 190" in line and "plugins.whatsapp.access_token" in line


def post(bridge: BridgeProcess, change: dict) -> None:
    from plugins.whatsapp.signature import sign

    body = json.dumps(p.envelope(change)).encode()
    response = oneshot.post(f"{bridge.url}/webhooks/whatsapp", content=body, timeout=10, headers={
        "Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)})
    assert response.status_code == 200, response.text


def test_standby_a_mexican_number_and_a_business_app_only_message_reach_the_lead(
        tmp_path, graph, lsq):
    import time

    lead = lsq.add_lead(FirstName="Lupita", LastName="Ramos", Mobile="+52-5512345678")
    bridge = start_bridge(tmp_path, graph, lsq)
    now = str(int(time.time()))
    mexican = "5215512345678"  # WhatsApp's id of a Mexican mobile: the old mobile 1 kept
    first = p.base("wamid.only-app", mexican, "unsupported", ts=now, errors=[{
        "code": 131060, "title": "Message only available in WhatsApp Business app"}])
    asked = p.text_message("wamid.sb1", mexican, "¿Tienen envío a Puebla?", ts=now)
    agent = p.echo("wamid.sb2", mexican, "Sí, en 3 días", timestamp=now)
    try:
        post(bridge, p.message_change([first], contacts=[p.contact(mexican, "Lupita")]))
        post(bridge, {"field": "standby", "value": p.value(
            messages=[asked], message_echoes=[agent], contacts=[p.contact(mexican, "Lupita")])})
        bridge.sync_now()
        notes = eventually(lambda: (n := " ".join(a["ActivityNote"]
                                                  for a in lsq.activities(lead)))
                           and "Sí, en 3 días" in n and n)
        assert "open the WhatsApp Business app to read it" in notes
        assert "¿Tienen envío a Puebla?" in notes
        assert "+525512345678" in notes  # the number, without WhatsApp's mobile 1
        held = [c for s in bridge.status()["sinks"] for c in s["conversations"]
                if c.get("held")]
        assert held == []
    finally:
        bridge.stop()


def test_a_sync_that_went_through_is_not_asked_for_again(tmp_path, graph):
    bridge = start_bridge(tmp_path, graph)
    try:  # someone asked for the history already (another tool): Graph refuses it
        response = oneshot.post(f"{graph.url}/v25.0/{p.PHONE_ID}/smb_app_data", json={
            "messaging_product": "whatsapp", "sync_type": "history"},
            headers={"Authorization": f"Bearer {GRAPH_TOKEN}"}, timeout=10)
        assert response.status_code == 200
        first = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID, wait="0")
        assert first.returncode == 1
        assert "Graph refused the history request for" in first.stderr
        second = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID, wait="0")
        assert second.returncode == 1
        assert "Graph refused the history request for" in second.stderr  # contacts: not again
        requested = oneshot.get(f"{graph.url}/_sim/coexistence", timeout=10).json()["requested"]
        assert sorted(r["sync_type"] for r in requested) == ["history", "smb_app_state_sync"]
        assert f"{p.PHONE_ID} contacts: requested" in coexistence(tmp_path, "--status").stdout
    finally:
        bridge.stop()


def test_a_number_the_bridge_would_drop_is_refused_before_asking(tmp_path, graph):
    config = {"buffer": {"path": str(tmp_path / "bridge.db")},
              "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                       "access_token": GRAPH_TOKEN, "graph_url": graph.url,
                                       "phone_number_ids": ["999"]}}}
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    done = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID, wait="0")
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()
    assert "plugins.whatsapp.phone_number_ids does not list" in line
    assert oneshot.get(f"{graph.url}/_sim/coexistence", timeout=10).json()["requested"] == []


def test_without_a_running_bridge_the_command_says_to_start_one(tmp_path, graph):
    sim(graph, "coexistence", share_history="pending")
    config = {"server": {"port": free_port()}, "buffer": {"path": str(tmp_path / "b.db")},
              "plugins": {"whatsapp": {"verify_token": VERIFY, "app_secret": SECRET,
                                       "access_token": GRAPH_TOKEN, "graph_url": graph.url}}}
    (tmp_path / "config.yaml").write_text(json.dumps(config))
    done = coexistence(tmp_path, "--phone-number-id", p.PHONE_ID, wait="1")
    assert done.returncode == 0, done.stderr
    assert "no bridge answers for this config yet" in done.stdout
    assert "Not complete yet" in done.stdout  # the rep has not answered: nothing came
