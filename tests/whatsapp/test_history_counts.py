"""Each rep's number's coexistence history counts its own new messages (source_syncs),
over real HTTP into a real buffer, whatever else the same signed webhook carries."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from bridge.app import BRIDGE
from plugins.whatsapp.signature import sign
from tests import oneshot
from tests.helpers import free_port
from tests.processes import BridgeProcess, wait_http
from tests.whatsapp import payloads as p
from tests.whatsapp.test_webhook import SECRET, bridge_url, post  # noqa: F401

PRIYA, ARJUN = ("110000000000001", "919800000001"), ("220000000000002", "919800000002")
ASHA = "919876543210"
ROOT = Path(__file__).resolve().parents[2]


def history(number: tuple[str, str], tag: str, count: int) -> dict:
    """A history chunk of `count` messages between Asha and the number."""
    thread = {"id": ASHA, "messages": [
        p.text_message(f"wamid.{tag}{n}", ASHA, f"{tag} {n}", ts=1739230000 + n,
                       history_context={"status": "READ"}) for n in range(count)]}
    chunk = {"metadata": {"phase": 0, "chunk_order": 1, "progress": 100}, "threads": [thread]}
    return {"field": "history", "value": {
        "messaging_product": "whatsapp", "history": [chunk],
        "metadata": {"display_phone_number": number[1], "phone_number_id": number[0]}}}


def live(number: tuple[str, str], mid: str) -> dict:
    return {"field": "messages", "value": {
        "messaging_product": "whatsapp", "contacts": [p.contact(ASHA, "Asha")],
        "metadata": {"display_phone_number": number[1], "phone_number_id": number[0]},
        "messages": [p.text_message(mid, ASHA, "live")]}}


async def send(url: str, *changes: dict) -> None:
    body = json.dumps(p.envelope(*changes)).encode()
    assert (await post(url, body, sign(body, SECRET)))[0] == 200


async def counted(app) -> dict[str, int]:
    syncs = await app[BRIDGE].buffer.source_syncs("whatsapp")
    return {s["account"]: s["messages"] for s in syncs}


async def test_two_numbers_history_in_one_webhook_each_counts_its_own_messages(
        bridge_url):  # noqa: F811
    """Was: every new message of the webhook counted for its first chunk's number, the
    other number showed `done, 0 new messages` (its history looked empty to a manager)."""
    url, app = bridge_url
    await send(url, history(PRIYA, "p", 5), history(ARJUN, "a", 3))
    assert await counted(app) == {PRIYA[0]: 5, ARJUN[0]: 3}
    await send(url, history(PRIYA, "p", 5), history(ARJUN, "a", 4))  # a retry, one more
    assert await counted(app) == {PRIYA[0]: 5, ARJUN[0]: 4}
    assert len(await app[BRIDGE].buffer.messages()) == 9


async def test_history_beside_a_live_message_counts_its_messages_and_not_the_live_one(
        bridge_url):  # noqa: F811
    """Was: a webhook holding history and a live message noted no count at all."""
    url, app = bridge_url
    await send(url, live(PRIYA, "wamid.live"), history(PRIYA, "p", 2))
    assert await counted(app) == {PRIYA[0]: 2}
    assert len(await app[BRIDGE].buffer.messages()) == 3


def test_a_sigkill_between_two_numbers_history_appends_keeps_the_first_number_s_count(
        tmp_path):
    """A webhook with Priya's and Arjun's history is stored in two appends. The bridge
    was killed (SIGKILL) after Priya's committed and before Arjun's; Meta's retry then
    found Priya's messages stored already, so her history showed `0 new messages` for
    good. Each number's count is now noted right after its own append."""
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text(json.dumps({
        "server": {"port": port}, "buffer": {"path": str(tmp_path / "bridge.db")},
        "plugins": {"whatsapp": {"verify_token": "t", "app_secret": SECRET}}}))
    body = json.dumps(p.envelope(history(PRIYA, "p", 5), history(ARJUN, "a", 3))).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": sign(body, SECRET)}
    url = f"http://127.0.0.1:{port}/webhooks/whatsapp"

    log = tmp_path / "stalled.log"
    with log.open("w") as err:
        child = subprocess.Popen([sys.executable, "-m", "tests.whatsapp.stalled_bridge",
                                  str(config), ARJUN[0]], cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=err, text=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", child, "bridge", err)
        sender = threading.Thread(target=lambda: _post_quietly(url, body, headers))
        sender.start()
        lines = iter(child.stdout.readline, "")
        assert "stalled\n" in lines  # Priya's append committed, Arjun's waits
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    sender.join()

    bridge = BridgeProcess(config, port).start()
    try:  # Meta's retry of the unanswered webhook
        assert oneshot.post(url, content=body, headers=headers, timeout=10).status_code == 200
        syncs = {s["account"]: s["messages"] for s in bridge.status()["source_syncs"]
                 if s["kind"] == "history"}
    finally:
        bridge.stop()
    assert syncs == {PRIYA[0]: 5, ARJUN[0]: 3}


def _post_quietly(url: str, body: bytes, headers: dict) -> None:
    """The first delivery: its connection dies with the killed bridge."""
    with contextlib.suppress(Exception):
        oneshot.post(url, content=body, headers=headers, timeout=30)
