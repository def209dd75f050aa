"""Each rep's number's coexistence history counts its own new messages (source_syncs),
over real HTTP into a real buffer, whatever else the same signed webhook carries."""

from __future__ import annotations

import json

from bridge.app import BRIDGE
from plugins.whatsapp.signature import sign
from tests.whatsapp import payloads as p
from tests.whatsapp.test_webhook import SECRET, bridge_url, post  # noqa: F401

PRIYA, ARJUN = ("110000000000001", "919800000001"), ("220000000000002", "919800000002")
ASHA = "919876543210"


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
