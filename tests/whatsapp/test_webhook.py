"""The webhook route over real HTTP into a real buffer: handshake, signatures, storage."""

from __future__ import annotations

import asyncio
import json
import logging
import sys

import aiohttp
import pytest

from bridge.app import BRIDGE, create_app
from bridge.plugins import load_config
from plugins.whatsapp.signature import sign

SECRET, OLD_SECRET, TOKEN = "app-secret-new", "app-secret-old", "verify-me"
PATH = "/webhooks/whatsapp"


def text_message(mid: str, sender: str = "919876543210", body: str = "hello") -> dict:
    return {"from": sender, "id": mid, "timestamp": "1739230955", "type": "text",
            "text": {"body": body}}


def change(messages=(), statuses=(), phone_id="106540352242922", contacts=None) -> dict:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881", "phone_number_id": phone_id}}
    if messages:
        value["messages"] = list(messages)
        value["contacts"] = contacts or [{"profile": {"name": "Asha Rao"},
                                          "wa_id": messages[0]["from"]}]
    if statuses:
        value["statuses"] = list(statuses)
    return {"field": "messages", "value": value}


def envelope(*entries) -> dict:
    return {"object": "whatsapp_business_account",
            "entry": [{"id": "WABA1", "changes": list(changes)} for changes in entries]}


@pytest.fixture
async def bridge_url(tmp_path, serve):
    config = tmp_path / "config.yaml"
    config.write_text(
        f"buffer: {{path: {tmp_path}/b.db}}\nplugins:\n  whatsapp:\n"
        f"    verify_token: {TOKEN}\n    app_secret: [{SECRET}, {OLD_SECRET}]\n")
    from bridge.plugins import get_plugin_manager

    pm = get_plugin_manager()
    app = create_app(load_config(config, pm), pm)
    url = await serve(app)
    return url, app


async def post(url: str, body: bytes, signature: str | None, content_type="application/json"):
    headers = {"Content-Type": content_type}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    async with aiohttp.ClientSession() as http, http.post(url + PATH, data=body,
                                                          headers=headers) as resp:
        return resp.status, await resp.text()


async def stored_ids(app) -> list[str]:
    return sorted(m.provider_id for m in await app[BRIDGE].buffer.messages())


async def test_handshake_echoes_the_challenge(bridge_url):
    url, _ = bridge_url
    params = {"hub.mode": "subscribe", "hub.verify_token": TOKEN, "hub.challenge": "1158201444"}
    async with aiohttp.ClientSession() as http, http.get(url + PATH, params=params) as resp:
        assert resp.status == 200
        assert resp.content_type == "text/plain"
        assert await resp.text() == "1158201444"


@pytest.mark.parametrize("params", [
    {"hub.mode": "subscribe", "hub.verify_token": "guess", "hub.challenge": "1"},
    {"hub.mode": "unsubscribe", "hub.verify_token": TOKEN, "hub.challenge": "1"},
    {"hub.verify_token": TOKEN, "hub.challenge": "1"},
])
async def test_handshake_refuses_anything_else_with_403(bridge_url, params):
    url, _ = bridge_url
    async with aiohttp.ClientSession() as http, http.get(url + PATH, params=params) as resp:
        assert resp.status == 403


async def test_signed_post_is_stored_before_200(bridge_url):
    url, app = bridge_url
    body = json.dumps(envelope([change([text_message("wamid.1")])])).encode()
    assert (await post(url, body, sign(body, SECRET)))[0] == 200
    (message,) = await app[BRIDGE].buffer.messages()
    assert (message.provider_id, message.conversation, message.contact_name, message.text) == (
        "wamid.1", "+919876543210", "Asha Rao", "hello")


async def test_rotated_second_secret_is_accepted(bridge_url):
    url, app = bridge_url
    body = json.dumps(envelope([change([text_message("wamid.old")])])).encode()
    assert (await post(url, body, sign(body, OLD_SECRET)))[0] == 200
    assert await stored_ids(app) == ["wamid.old"]


def _bad_signatures(body: bytes) -> dict[str, tuple[bytes, str | None]]:
    altered = bytearray(body)
    altered[body.index(b"hello")] ^= 0x01
    reserialised = json.dumps(json.loads(body), ensure_ascii=False).encode()
    return {
        "wrong secret": (body, sign(body, "not-the-secret")),
        "missing header": (body, None),
        "empty header": (body, ""),
        "sha1 prefix": (body, "sha1=" + sign(body, SECRET)[7:]),
        "short hex": (body, sign(body, SECRET)[:-2]),
        "one altered byte": (bytes(altered), sign(body, SECRET)),
        "re-serialised JSON": (body, sign(reserialised, SECRET)),
        "signature of another body": (body, sign(body + b" ", SECRET)),
    }


async def test_bad_signatures_get_401_and_store_nothing(bridge_url):
    url, app = bridge_url
    # Non-ASCII escaped as \uXXXX, the way Meta sends it: re-serialising changes the bytes.
    body = json.dumps(envelope([change([text_message("wamid.s", body="hello नमस्ते")])]),
                      ensure_ascii=True).encode()
    for case, (data, signature) in _bad_signatures(body).items():
        status, text = await post(url, data, signature)
        assert status == 401, case
        assert "X-Hub-Signature-256" in text
    assert await stored_ids(app) == []


async def test_one_post_with_several_entries_changes_messages_is_one_commit(bridge_url):
    url, app = bridge_url
    body = json.dumps(envelope(
        [change([text_message("a1"), text_message("a2")]),
         change([text_message("b1", "14155550100")], phone_id="999")],
        [change([text_message("c1", "447700900123")]),
         change(statuses=[{"id": "wamid.out", "status": "read", "timestamp": "1739230999",
                           "recipient_id": "919876543210"}])],
    )).encode()
    buffer = app[BRIDGE].buffer
    # The app's first prune was queued on the writer as the server started (the prune task
    # runs while the site starts listening); a heartbeat queued behind it returns once it
    # has committed, so no startup write lands between `before` and the POST.
    await buffer.heartbeat()
    before = buffer.stats["commits"]
    assert (await post(url, body, sign(body, SECRET)))[0] == 200
    assert buffer.stats["commits"] - before == 1
    assert await stored_ids(app) == ["a1", "a2", "b1", "c1"]
    assert (await buffer.status_of("whatsapp", "wamid.out"))["status"] == "read"


async def test_same_payload_three_times_is_stored_once(bridge_url):
    url, app = bridge_url
    body = json.dumps(envelope([change([text_message("r1"), text_message("r2")])])).encode()
    for _ in range(3):
        assert (await post(url, body, sign(body, SECRET)))[0] == 200
    assert await stored_ids(app) == ["r1", "r2"]
    assert await app[BRIDGE].buffer.count_messages() == 2


LOCATION = (b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":'
            b'"messages","value":{"metadata":{"phone_number_id":"1"},"messages":[{"from":'
            b'"919800000001","id":"wamid.nan","timestamp":"1700000000","type":"location",'
            b'"location":{"latitude":%s,"longitude":77.5}}]}}]}]}')


@pytest.mark.parametrize(("body", "status", "reason"), [
    (b"{not json", 400, "not valid JSON"),
    (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
    (b"[" * 100_000 + b"]" * 100_000, 400, ""),
    (json.dumps({"object": "page"}).encode(), 400, '"entry"'),
    (json.dumps({"entry": []}).encode(), 400, "whatsapp_business_account"),
    (json.dumps([1, 2]).encode(), 400, ""),
    # not JSON numbers (RFC 8259 §6): stored, they made the row unreadable to SQLite (503s)
    (LOCATION % b"NaN", 400, "not valid JSON"),
    (LOCATION % b"-Infinity", 400, "not valid JSON"),
    (LOCATION % b"1e400", 400, "not valid JSON"),
])
async def test_bad_bodies_get_400_with_a_reason(bridge_url, body, status, reason):
    url, app = bridge_url
    got, text = await post(url, body, sign(body, SECRET))
    assert got == status
    assert reason in text and "Traceback" not in text
    assert await stored_ids(app) == []


PAGE_FEED = {"object": "page", "entry": [{"id": "PAGE1", "time": 1739230955, "changes": [
    {"field": "feed", "value": {"item": "status", "verb": "add", "message": "secret words"}}]}]}


@pytest.mark.parametrize("payload", [
    PAGE_FEED,
    {"object": "instagram", "entry": [{"id": "IG1", "time": 1, "messaging": [{"x": 1}]}]},
    {"object": "permissions", "entry": []},
    # a change's field that is no string (Hypothesis found a list): a TypeError before
    {"object": "page", "entry": [{"id": "P2", "time": 1, "changes": [
        {"field": ["feed"], "value": {"item": "status"}}, {"field": {"a": 1}}]}]},
])
async def test_a_signed_webhook_of_another_meta_object_gets_200_stores_nothing_and_is_seen(
        bridge_url, payload, caplog):
    """Meta retries anything but a 200 for days and flags a callback that keeps failing,
    [whatsapp-webhooks.md §7, §12.3]: an app subscribed to more objects must not make
    the bridge's callback look broken. Acknowledged, not stored, logged without its body,
    counted and named in the bridge's health."""
    url, app = bridge_url
    body = json.dumps(payload).encode()
    assert (await post(url, body, sign(body, SECRET))) == (200, "OK")
    assert await stored_ids(app) == []
    warned = [r.getMessage() for r in caplog.records if r.name == "plugins.whatsapp.webhook"]
    assert any(repr(payload["object"]) in line for line in warned)
    assert not any("secret words" in line for line in warned)
    metrics = app[BRIDGE].metrics
    assert metrics.items_ignored.labels("whatsapp", f"object:{payload['object']}") \
        ._value.get() == 1
    assert metrics.webhooks.labels("whatsapp", "ignored")._value.get() == 1
    from bridge.status import bridge_health
    health = bridge_health(app[BRIDGE], [])
    assert f"object {payload['object']!r}" in health["reason"]
    assert health["state"] == "healthy"



async def test_another_objects_webhooks_warn_once_an_hour_not_each(bridge_url, caplog):
    """A page's feed may send thousands of webhooks: each is counted, but the log warns
    once an hour per object (the rest at DEBUG), so it does not drown the bridge's own."""
    url, app = bridge_url
    body = json.dumps(PAGE_FEED).encode()
    caplog.set_level(logging.DEBUG, logger="plugins.whatsapp.webhook")
    for _ in range(3):
        assert (await post(url, body, sign(body, SECRET))) == (200, "OK")
    said = [r.levelno for r in caplog.records if r.name == "plugins.whatsapp.webhook"
            and "'page'" in r.getMessage()]
    assert said == [logging.WARNING, logging.DEBUG, logging.DEBUG]
    metrics = app[BRIDGE].metrics
    assert metrics.items_ignored.labels("whatsapp", "object:page")._value.get() == 3

def waba_change(field: str, value: dict) -> dict:
    return {"field": field, "value": value}


@pytest.mark.parametrize("payload", [
    # another object's name, but a WhatsApp change inside: kept a 400 so Meta keeps it
    envelope([change([text_message("w1")])]) | {"object": "page"},
    envelope([waba_change("some_new_field", {"messages": [text_message("w2")]})])
    | {"object": "whatsapp_business_account_v2"},
    {"object": "WhatsApp_Business_Account", "entry": []},
    {"object": "page", "entry": [{"id": "1", "changes": [waba_change(
        "feed", {"metadata": {"phone_number_id": "1"}})]}]},
])
async def test_nothing_whatsapp_like_is_taken_for_another_object(bridge_url, payload):
    url, app = bridge_url
    body = json.dumps(payload).encode()
    status, text = await post(url, body, sign(body, SECRET))
    assert (status, "whatsapp_business_account" in text) == (400, True)
    assert app[BRIDGE].metrics.other_objects() == []


async def test_an_unknown_field_inside_a_whatsapp_entry_is_answered_as_before(bridge_url):
    """Only the envelope's object decides: a field the parser does not know, inside a
    whatsapp_business_account entry, is acknowledged and counted as it always was, and the
    messages of the entry's known fields beside it are stored."""
    url, app = bridge_url
    payload = envelope([waba_change("some_new_field", {"messages": [text_message("n1")]}),
                        change([text_message("n2")])])
    body = json.dumps(payload).encode()
    assert (await post(url, body, sign(body, SECRET)))[0] == 200
    assert await stored_ids(app) == ["n2"]
    metrics = app[BRIDGE].metrics
    assert metrics.items_ignored.labels("whatsapp", "field:some_new_field")._value.get() == 1
    assert metrics.other_objects() == []


async def test_wrong_content_type_gets_415_and_stores_nothing(bridge_url):
    url, app = bridge_url
    body = json.dumps(envelope([change([text_message("x")])])).encode()
    assert (await post(url, body, sign(body, SECRET), "text/plain"))[0] == 415
    assert await stored_ids(app) == []


async def test_body_over_4_mib_gets_413_and_stores_nothing(bridge_url):
    url, app = bridge_url
    payload = {**envelope([change([text_message("big")])]), "pad": "x" * (5 << 20)}
    body = json.dumps(payload).encode()  # a valid, signed message, only too large
    assert (await post(url, body, sign(body, SECRET)))[0] == 413
    assert await stored_ids(app) == []


async def test_store_failure_answers_503_and_a_retry_is_stored(bridge_url):
    url, app = bridge_url
    buffer = app[BRIDGE].buffer
    await buffer.limit_writes(size_cap=True)  # make SQLite report a full disk
    body = json.dumps(envelope([change([text_message("full", body="x" * 200_000)])])).encode()
    status, text = await post(url, body, sign(body, SECRET))
    assert (status, text) == (503, "could not store the webhook; retry later")
    assert await stored_ids(app) == []

    await buffer.limit_writes(size_cap=False)
    assert (await post(url, body, sign(body, SECRET)))[0] == 200  # Meta's retry
    assert await stored_ids(app) == ["full"]


async def test_send_test_command_posts_a_signed_message_the_bridge_stores(bridge_url, tmp_path):
    url, app = bridge_url
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "whatsapp", "send-test", "-c",
        str(tmp_path / "config.yaml"), "--url", url + PATH, "--text", "setup check",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "stored the test message (200)" in out.decode()
    (message,) = await app[BRIDGE].buffer.messages()
    assert (message.text, message.conversation) == ("setup check", "+919876543210")


async def test_send_test_with_a_wrong_secret_reports_the_401(bridge_url, tmp_path):
    url, _ = bridge_url
    other = tmp_path / "other.yaml"
    other.write_text(f"plugins:\n  whatsapp:\n    verify_token: {TOKEN}\n"
                     "    app_secret: not-the-secret\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "whatsapp", "send-test", "-c", str(other),
        "--url", url + PATH, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 1
    assert "answered 401" in err.decode()


async def test_a_batched_sender_without_contacts_entry_keeps_the_others_chat(bridge_url):
    """A text from one customer (with contacts[]) and a system message from another (system
    messages carry no contacts[], M-SYS) in one change: each stays in its own chat, and a
    later username-only message of the first (BSUID alone) joins the first's chat."""
    url, app = bridge_url
    first = envelope([change(
        [text_message("wamid.x1", "16505551234"),
         {"from": "919876543210", "id": "wamid.y1", "timestamp": "1739230955",
          "type": "system", "system": {"body": "security code changed",
                                       "type": "customer_identity_changed"}}],
        contacts=[{"profile": {"name": "Xavier"}, "wa_id": "16505551234",
                   "user_id": "US.111"}])])
    later = envelope([change(
        [{"from_user_id": "US.111", "id": "wamid.x2", "timestamp": "1739230956",
          "type": "text", "text": {"body": "again"}, "from": "16505551234"}],
        contacts=[{"profile": {"name": "Xavier"}, "user_id": "US.111"}])])
    for data in (first, later):
        body = json.dumps(data).encode()
        assert (await post(url, body, sign(body, SECRET)))[0] == 200
    stored = {m.provider_id: m for m in await app[BRIDGE].buffer.messages()}
    assert stored["wamid.y1"].conversation == "+919876543210"
    assert stored["wamid.y1"].contact_name is None
    assert stored["wamid.x1"].conversation == "+16505551234"
    assert stored["wamid.x2"].conversation == "+16505551234"
